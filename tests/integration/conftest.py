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


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
        args = [BIN, "--listen", f"127.0.0.1:{self.port}", "--data", self.data, *self.extra, *more_args]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
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
