"""wss:// and https:// (issue 5): a self-signed certificate made by the test, trusted by
Python's ssl as its CA; TLS 1.2+ only; large messages both ways; the handshake timeout; a
certificate reload on SIGHUP that keeps existing connections."""
import asyncio
import json
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
import warnings

import pytest
import websockets

from conftest import Client, free_port, run


def make_cert(directory, name, cn="localhost"):
    cert = os.path.join(directory, name + ".crt")
    key = os.path.join(directory, name + ".key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert, "-days", "1",
                    "-subj", "/CN=" + cn, "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True)
    return cert, key


@pytest.fixture
def tls_node(secure_node_factory, tmp_path, secrets):
    cert, key = make_cert(str(tmp_path), "a")
    with open(key) as f:
        secrets.add(f.read())
    port = free_port()
    node = secure_node_factory("--tls-listen", f"127.0.0.1:{port}", "--tls-cert", cert,
                               "--tls-key", key, "--handshake-timeout", "1s").start()
    node.tls_port = port
    node.cert, node.key = cert, key
    node.wss = f"wss://127.0.0.1:{port}/ws"
    return node


def client_ctx(cafile):
    return ssl.create_default_context(cafile=cafile)


def test_wss_and_https(tls_node):
    node = tls_node
    ctx = client_ctx(node.cert)
    with urllib.request.urlopen(f"https://127.0.0.1:{node.tls_port}/healthz", context=ctx,
                                timeout=10) as r:
        assert r.status == 200 and json.loads(r.read()) == {"status": "ok"}
    assert "wss://" in node.read_log()

    async def go():
        tls = await Client.connect(node.wss, ssl=ctx)
        plain = await Client.connect(node.url)  # the plain listener serves beside it
        assert (await tls.request("subscribe", channel="big"))["op"] == "subscribed"
        assert (await plain.request("subscribe", channel="big"))["op"] == "subscribed"
        blob = "x" * (900 * 1024)  # many TLS records each way
        assert (await tls.request("publish", channel="big", data=blob))["op"] == "ack"
        for c in (tls, plain):
            ev = (await c.events(1, "big"))[0]
            assert ev["data"] == blob
        m = await Client.connect(node.wss, codec="msgpack", ssl=ctx)
        assert (await m.request("ping"))["op"] == "pong"
        await tls.close()
    run(go())


def test_old_tls_versions_are_refused(tls_node):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_ciphers("DEFAULT@SECLEVEL=0")  # let the client offer TLS 1.1: the node must refuse
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    with socket.create_connection(("127.0.0.1", tls_node.tls_port), timeout=10) as s:
        with pytest.raises(ssl.SSLError) as e:
            ctx.wrap_socket(s)
    assert "PROTOCOL_VERSION" in str(e.value).upper()
    # TLS 1.2 is fine
    ctx = client_ctx(tls_node.cert)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection(("127.0.0.1", tls_node.tls_port), timeout=10) as s:
        with ctx.wrap_socket(s, server_hostname="localhost") as t:
            assert t.version() == "TLSv1.2"


def test_untrusted_and_garbage_and_slow_handshakes(tls_node):
    # a client that does not trust the certificate refuses it (the node is not a CA)
    with pytest.raises(ssl.SSLCertVerificationError):
        with socket.create_connection(("127.0.0.1", tls_node.tls_port), timeout=10) as s:
            ssl.create_default_context().wrap_socket(s, server_hostname="localhost")
    # plain HTTP on the TLS port: a handshake failure, the connection closes
    with socket.create_connection(("127.0.0.1", tls_node.tls_port), timeout=10) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        data = s.recv(4096)
        assert b"200 OK" not in data
    # silence after connecting: cut at the handshake timeout (1 s here)
    with socket.create_connection(("127.0.0.1", tls_node.tls_port), timeout=10) as s:
        t0 = time.monotonic()
        assert s.recv(1) == b""
        assert time.monotonic() - t0 < 5
    assert tls_node.get("/healthz")[0] == 200


def test_sighup_reloads_the_certificate_and_keeps_connections(tls_node, tmp_path, secrets):
    node = tls_node
    ctx_a = client_ctx(node.cert)

    async def go():
        c = await Client.connect(node.wss, ssl=ctx_a)
        await c.request("subscribe", channel="keep")
        # a new certificate under the same file names
        cert_b, key_b = make_cert(str(tmp_path), "b", cn="localhost-b")
        with open(key_b) as f:
            secrets.add(f.read())
        os.replace(cert_b, node.cert)
        os.replace(key_b, node.key)
        node.proc.send_signal(signal.SIGHUP)
        for _ in range(100):
            if "TLS certificate reloaded" in node.read_log():
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("no reload in the log")
        # new connections get the new certificate: the old CA no longer verifies them
        with pytest.raises(ssl.SSLCertVerificationError):
            await Client.connect(node.wss, ssl=ctx_a)
        d = await Client.connect(node.wss, ssl=client_ctx(node.cert))
        assert (await d.request("ping"))["op"] == "pong"
        # the old connection was not dropped
        assert (await c.request("publish", channel="keep", data=1))["op"] == "ack"
        assert node.post("/api/publish", {"channel": "keep", "data": 7})[0] == 200
        assert [e["data"] for e in await c.events(2, "keep")] == [1, 7]
    run(go())


def test_tls_settings_are_checked(secure_node_factory, tmp_path):
    node = secure_node_factory("--tls-listen", f"127.0.0.1:{free_port()}")
    with pytest.raises(RuntimeError) as e:
        node.start()
    assert "needs --tls-cert and --tls-key" in str(e.value)
    node.proc = None
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    node = secure_node_factory("--tls-listen", f"127.0.0.1:{free_port()}", "--tls-cert", str(bad),
                               "--tls-key", str(bad))
    with pytest.raises(RuntimeError) as e:
        node.start()
    assert "cannot load the certificate" in str(e.value)
    node.proc = None
