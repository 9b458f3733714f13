"""HTTP endpoints: health, readiness, stats, metrics, and the back-end publish API."""
import json
import re
import subprocess

from conftest import run, BIN


def test_health_ready_stats_metrics(node):
    assert node.get("/healthz") == (200, '{"status":"ok"}\n')
    assert node.get("/readyz")[0] == 200
    node.post("/api/publish", {"channel": "s", "data": 1})
    st = node.stats()
    for key in ("node", "version", "uptime_s", "connections", "subscriptions", "channels",
                "events", "bytes", "store", "cluster"):
        assert key in st, key
    assert st["events"]["in"] == 1
    assert st["store"]["events_appended"] == 1
    assert st["store"]["commits"] >= 1
    origins = st["store"]["origins"]
    assert origins[0]["origin"] == st["node"] and origins[0]["last_seq"] == 1
    assert st["cluster"]["members"][0]["origin"] == st["node"]
    assert st["cluster"]["members"][0]["state"] == "self"

    status, text = node.get("/metrics")
    assert status == 200
    names = set(re.findall(r"^(tidewire_[a-z_]+)", text, re.M))
    for name in ("tidewire_connections", "tidewire_events_in_total", "tidewire_events_out_total",
                 "tidewire_store_size_bytes", "tidewire_store_commit_seconds_bucket"):
        assert name in names, name
    # every sample line is NAME{labels} VALUE with a numeric value
    for line in text.splitlines():
        if line and not line.startswith("#"):
            assert re.match(r'^tidewire_[a-z_]+(\{[^}]*\})? -?[0-9.e+]+(Inf)?$', line), line
    assert re.search(r"^tidewire_events_in_total 1$", text, re.M)


def test_publish_validation(node):
    assert node.post("/api/publish", b"not json")[0] == 400
    assert node.post("/api/publish", {"channel": "a"})[0] == 400
    assert node.post("/api/publish", {"data": 1})[0] == 400
    assert node.post("/api/publish", {"channel": "", "data": 1})[0] == 400
    assert node.post("/api/publish", b'{"channel":"a","data":"\xff"}')[0] == 400
    status, body = node.post("/api/publish", {"channel": "a", "data": None})
    assert status == 200 and json.loads(body)["pos"].endswith(":1")
    assert node.get("/api/publish")[0] == 405
    assert node.get("/nope")[0] == 404


def test_http_publish_keeps_data_exactly(node):
    """Numbers reach subscribers exactly as the back end wrote them (no float rounding)."""
    import asyncio
    from conftest import Client, run

    async def go():
        c = await Client.connect(node.url)
        await c.request("subscribe", channel="exact")
        body = b'{"channel":"exact","data":{"big":9007199254740993,"f":0.30000000000000004,"s":"\\u00e9"}}'
        status, resp = node.post("/api/publish", body)
        assert status == 200, resp
        raw = await asyncio.wait_for(c.ws.recv(), 10)
        assert '"big":9007199254740993,"f":0.30000000000000004,' in raw, raw
        assert json.loads(raw)["data"]["s"] == "\u00e9"
    run(go())


def test_api_key_required_when_configured(node_factory):
    node = node_factory("--api-key", "s3cret-key").start()
    assert node.post("/api/publish", {"channel": "a", "data": 1})[0] == 401
    assert node.post("/api/publish", {"channel": "a", "data": 1},
                     {"Authorization": "Bearer wrong"})[0] == 401
    status, body = node.post("/api/publish", {"channel": "a", "data": 1},
                             {"Authorization": "Bearer s3cret-key"})
    assert status == 200, body
    assert "s3cret-key" not in node.read_log()


def test_keep_alive_serves_several_requests(node):
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", node.port, timeout=10)
    for i in range(5):
        c.request("POST", "/api/publish", body=json.dumps({"channel": "k", "data": i}),
                  headers={"Content-Type": "application/json"})
        r = c.getresponse()
        assert r.status == 200
        assert json.loads(r.read())["pos"].endswith(f":{i + 1}")
    c.request("GET", "/healthz")
    assert c.getresponse().status == 200
    c.close()


def test_help_lists_settings_and_bad_flag_fails():
    p = subprocess.run([BIN, "--help"], capture_output=True, text=True, timeout=10)
    assert p.returncode == 0
    for flag in ("--node-id", "--listen", "--data", "--durability", "--api-key", "--config"):
        assert flag in p.stdout
    p = subprocess.run([BIN, "--bogus"], capture_output=True, text=True, timeout=10)
    assert p.returncode == 2 and "--bogus" in p.stderr
