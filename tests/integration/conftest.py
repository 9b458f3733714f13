"""Shared fixtures: a real tidewire node on a scratch port and data directory, and a small
client over Debian's python3-websockets (a WebSocket implementation nobody here wrote).

Every process a test starts is stopped by pid when the test ends, whatever happens.
"""
import asyncio
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import msgpack
import pytest
import websockets

BIN = os.environ.get("TIDEWIRE_BIN", os.path.join(os.path.dirname(__file__), "../../build/bin/tidewire"))
CLI = os.environ.get("TIDEWIRE_CLI", os.path.join(os.path.dirname(__file__), "../../build/bin/tidewire-cli"))
TMP = os.environ.get("TW_TEST_TMP", tempfile.gettempdir())


_ports_given = set()


def free_port():
    """A port nothing listens on now, and never one given before in this run: a node's HTTP
    port and a cluster port picked a moment apart must not be the same one."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _ports_given:
            _ports_given.add(port)
            return port


class Node:
    """One tidewire process; restartable on the same data directory."""

    def __init__(self, data_dir, extra_args=()):
        self.data = data_dir
        self.port = free_port()
        self.extra = list(extra_args)
        self.proc = None
        self.log_path = os.path.join(data_dir + ".log")
        self.logs = []

    @property
    def url(self):
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self, *more_args):
        """Starts the node and returns once /readyz answers 200."""
        self.start_async(*more_args)
        return self.wait_ready()

    def start_async(self, *more_args):
        """Starts the node without waiting (a cluster's nodes start together)."""
        args = [BIN, "--listen", f"127.0.0.1:{self.port}", "--data", self.data, *self.extra, *more_args]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        return self

    def wait_ready(self):
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tidewire exited with {self.proc.returncode}:\n{self.read_log()}")
            try:
                with urllib.request.urlopen(self.http + "/readyz", timeout=1) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.05)
        raise RuntimeError("tidewire did not become ready:\n" + self.read_log())

    def read_log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def kill9(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, sig=signal.SIGTERM, timeout=20):
        """Stops the node; returns its exit status."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                raise
        return self.proc.returncode if self.proc else None

    def get(self, path, headers=None):
        req = urllib.request.Request(self.http + path, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def post(self, path, body, headers=None):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request(self.http + path, data=data, method="POST",
                                     headers={"Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def stats(self):
        status, body = self.get("/stats")
        assert status == 200, body
        return json.loads(body)


@pytest.fixture
def node_factory():
    nodes = []

    def make(*extra_args, data=None):
        d = data or tempfile.mkdtemp(prefix="tw-it-", dir=TMP if os.path.isdir(TMP) else None)
        n = Node(d, extra_args)
        nodes.append(n)
        return n

    yield make
    # Every node ends with a clean stop: exit status 0 and, on sanitizer builds, no report
    # (LeakSanitizer runs only at a clean exit).
    problems = []
    for n in nodes:
        try:
            rc = n.stop(signal.SIGTERM, timeout=30)
            if n.proc is not None and rc != 0 and rc != -signal.SIGKILL:
                problems.append(f"{n.data}: exit status {rc}")
        except Exception as e:  # a hung node fails the test and is killed
            problems.append(f"{n.data}: {e}")
        log = n.read_log()
        for marker in ("Sanitizer", "runtime error:"):
            if marker in log:
                problems.append(f"{n.data}: sanitizer report:\n{log[-4000:]}")
                break
    assert not problems, "\n".join(problems)


@pytest.fixture
def node(node_factory):
    return node_factory().start()


def run(coro):
    """Runs a test coroutine; drops the clients it left open (a clean close of a client
    that is not reading waits for websockets' 10 s close timeout)."""
    async def wrapper():
        try:
            return await coro
        finally:
            for c in Client.opened:
                t = c.ws.transport
                if t is not None and not t.is_closing():
                    t.abort()
            Client.opened.clear()
    return asyncio.run(wrapper())


class Client:
    """A JSON or msgpack protocol client with helpers to wait for specific messages."""
    opened = []

    def __init__(self, ws, codec="json"):
        self.ws = ws
        self.codec = codec
        self.next_id = 1
        self.pending = []  # messages received while waiting for something else

    @classmethod
    async def connect(cls, url, codec="json", **kw):
        proto = "tidewire.v1.msgpack" if codec == "msgpack" else "tidewire.v1.json"
        ws = await websockets.connect(url, subprotocols=[proto], max_size=64 << 20,
                                      ping_interval=None, open_timeout=10, **kw)
        c = cls(ws, codec)
        cls.opened.append(c)
        return c

    def encode(self, msg):
        if self.codec == "msgpack":
            return msgpack.packb(msg, use_bin_type=True)
        return json.dumps(msg)

    def decode(self, raw):
        if self.codec == "msgpack":
            assert isinstance(raw, bytes), "msgpack replies must come in binary frames"
            return msgpack.unpackb(raw, raw=False, strict_map_key=False)
        assert isinstance(raw, str), "JSON replies must come in text frames"
        return json.loads(raw)

    async def send(self, msg):
        await self.ws.send(self.encode(msg))

    async def request(self, op, **fields):
        rid = self.next_id
        self.next_id += 1
        await self.send({"op": op, "id": rid, **fields})
        return await self.wait(lambda m: m.get("id") == rid and m.get("op") != "event")

    async def recv(self, timeout=10):
        if self.pending:
            return self.pending.pop(0)
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        return self.decode(raw)

    async def wait(self, pred, timeout=10):
        """Returns the first message matching pred; keeps the others, in order."""
        kept = []
        deadline = time.monotonic() + timeout
        try:
            for i, m in enumerate(self.pending):
                if pred(m):
                    del self.pending[i]
                    return m
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise asyncio.TimeoutError()
                m = self.decode(await asyncio.wait_for(self.ws.recv(), left))
                if pred(m):
                    return m
                kept.append(m)
        finally:
            self.pending.extend(kept)

    async def events(self, n, channel=None, timeout=20):
        """Collects the next n events (of a channel, when given)."""
        out = []
        while len(out) < n:
            m = await self.wait(lambda m: m.get("op") == "event" and (channel is None or m["channel"] == channel),
                                timeout)
            out.append(m)
        return out

    async def close(self):
        await self.ws.close()


def seq_of(pos):
    return int(pos.rsplit(":", 1)[1])


def origin_of(pos):
    return pos.rsplit(":", 1)[0]


# ---- Security tests (issue 5): tokens, keys, and a check that no log line holds them ------

import base64
import hashlib
import hmac as _hmac


def b64url(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class Secrets:
    """Every token, key and marked payload a test hands to a node. Each node made by
    `secure_node_factory` is checked at teardown: its whole log must hold none of them (the
    node runs with --log-level debug, so every line it could write is in the log). The
    registry is also written to TW_TEST_TMP, so test_secrets.py can sweep every node log of
    the suite for every secret any test used."""

    def __init__(self):
        self.values = set()
        d = os.path.join(TMP if os.path.isdir(TMP) else tempfile.gettempdir(), "tw-secrets")
        os.makedirs(d, exist_ok=True)
        self.file = os.path.join(d, f"{os.getpid()}-{id(self)}.txt")

    def add(self, value):
        if isinstance(value, bytes):
            value = value.decode(errors="replace")
        value = value.strip()
        if len(value) >= 12:  # short strings would match innocent text
            self.values.add(value)
            with open(self.file, "a") as f:
                f.write(value.replace("\n", "\\n") + "\n")
        return value

    def leaks(self, text):
        found = []
        for v in self.values:
            # The whole value, and for long ones (tokens, keys) any 24-byte piece of it: a
            # log that printed half a token or one line of a PEM still leaked it.
            if v in text:
                found.append(v[:16] + "...")
                continue
            for line in v.split("\n"):
                for i in range(0, max(0, len(line) - 24) + 1, 12):
                    piece = line[i:i + 24]
                    if len(piece) == 24 and piece in text:
                        found.append(piece[:16] + "...")
                        break
        return found


class Keys:
    """Key files for a node (HS256 secret, RS256 PEM made with the openssl CLI) and tokens
    signed with them."""

    def __init__(self, secrets, directory):
        self.secrets = secrets
        self.dir = directory
        self.hs_secret = secrets.add(b64url(os.urandom(32)))
        self.hs_file = os.path.join(directory, "hs.secret")
        with open(self.hs_file, "w") as f:
            f.write(self.hs_secret + "\n")
        self._rsa = None

    def rsa(self):
        if self._rsa is None:
            priv = os.path.join(self.dir, "rsa.key")
            pub = os.path.join(self.dir, "rsa.pub")
            subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                            "rsa_keygen_bits:2048", "-out", priv], check=True, capture_output=True)
            subprocess.run(["openssl", "pkey", "-in", priv, "-pubout", "-out", pub], check=True,
                           capture_output=True)
            with open(priv) as f:
                self.secrets.add(f.read())
            self._rsa = (priv, pub)
        return self._rsa

    def args(self, rsa=False):
        a = ["--jwt-key", f"kid=hs alg=HS256 secret-file={self.hs_file}"]
        if rsa:
            a += ["--jwt-key", f"kid=rs alg=RS256 public-key-file={self.rsa()[1]}"]
        return a

    def token(self, sub="u1", ttl=300, alg="HS256", kid="hs", key=None, header=None, **claims):
        now = int(time.time())
        payload = {"sub": sub, "exp": now + ttl, **claims}
        if sub is None:
            del payload["sub"]
        h = header or {"alg": alg, "typ": "JWT", "kid": kid}
        signing = (b64url(json.dumps(h).encode()) + "." +
                   b64url(json.dumps(payload).encode())).encode()
        if alg == "HS256":
            sig = _hmac.new((key or self.hs_secret).encode(), signing, hashlib.sha256).digest()
        elif alg == "RS256":
            p = subprocess.run(["openssl", "dgst", "-sha256", "-sign", self.rsa()[0]],
                               input=signing, check=True, capture_output=True)
            sig = p.stdout
        else:
            sig = b""
        return self.secrets.add(signing.decode() + "." + b64url(sig))


@pytest.fixture
def secrets():
    return Secrets()


@pytest.fixture
def secure_node_factory(node_factory, secrets):
    """node_factory for security tests: debug logs, and at teardown (after the nodes have
    stopped) every node's log is checked for every secret the test used."""
    made = []

    def make(*extra_args, data=None):
        n = node_factory("--log-level", "debug", *extra_args, data=data)
        made.append(n)
        return n

    yield make
    for n in made:
        if n.proc and n.proc.poll() is None:
            n.stop()
        leaked = secrets.leaks(n.read_log())
        assert not leaked, f"{n.log_path} holds secrets: {leaked}"


@pytest.fixture
def keys(secrets):
    d = tempfile.mkdtemp(prefix="tw-keys-", dir=TMP if os.path.isdir(TMP) else None)
    return Keys(secrets, d)


async def expect_close(client, code, timeout=10):
    """Waits until the server closes the client; asserts the close code."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            await asyncio.wait_for(client.ws.recv(), deadline - time.monotonic())
    except websockets.ConnectionClosed as e:
        got = e.rcvd.code if e.rcvd else None
        assert got == code, f"closed with {got}, expected {code}"
        return e.rcvd.reason
    raise AssertionError(f"not closed within {timeout}s (expected {code})")
