"""Commit before ack: every acknowledged publish survives kill -9; a clean stop drains."""
import asyncio
import signal
import subprocess

import websockets

from conftest import run, Client, origin_of, seq_of


def test_kill9_keeps_every_acknowledged_publish(node_factory):
    node = node_factory().start()
    acked = []

    async def publish_until_killed():
        clients = [await Client.connect(node.url) for _ in range(4)]

        async def one(c, k):
            i = 0
            try:
                while True:
                    # 16 in flight per connection; record acks as they come
                    for j in range(16):
                        await c.send({"op": "publish", "id": i + j, "channel": f"k{k % 2}", "data": {"c": k, "i": i + j}})
                    for _ in range(16):
                        m = await c.wait(lambda m: m.get("op") == "ack", timeout=10)
                        acked.append((f"k{k % 2}", m["pos"]))
                    i += 16
            except (websockets.ConnectionClosed, ConnectionError, asyncio.TimeoutError, OSError):
                return

        tasks = [asyncio.create_task(one(c, k)) for k, c in enumerate(clients)]
        while len(acked) < 4000:
            await asyncio.sleep(0.01)
        node.kill9()
        await asyncio.gather(*tasks)

    run(publish_until_killed())
    assert len(acked) >= 4000
    node.start()

    async def check():
        c = await Client.connect(node.url)
        found = {}
        for ch in ("k0", "k1"):
            await c.request("subscribe", channel=ch, since={})
        want = {}
        for ch, pos in acked:
            want.setdefault(ch, set()).add(pos)
        # every acknowledged event is there; nothing repeats
        got = {"k0": [], "k1": []}
        total_needed = len(acked)
        while sum(len(v) for v in got.values()) < total_needed:
            e = await c.wait(lambda m: m.get("op") == "event", timeout=30)
            got[e["channel"]].append(e["pos"])
        # drain whatever else was committed but not acked before the kill
        try:
            while True:
                e = await c.wait(lambda m: m.get("op") == "event", timeout=1)
                got[e["channel"]].append(e["pos"])
        except asyncio.TimeoutError:
            pass
        for ch in ("k0", "k1"):
            assert len(set(got[ch])) == len(got[ch]), "an event appears twice"
            missing = want[ch] - set(got[ch])
            assert not missing, f"{len(missing)} acknowledged events lost"
        # seqs never repeat: a new publish continues after the highest one
        all_seqs = [seq_of(p) for v in got.values() for p in v]
        ack = await c.request("publish", channel="k0", data="after")
        assert seq_of(ack["pos"]) > max(all_seqs)
        assert origin_of(ack["pos"]) == origin_of(acked[0][1])
    run(check())


def test_sigterm_drains_with_1012_and_exits_zero(node):
    async def go():
        c = await Client.connect(node.url)
        await c.request("subscribe", channel="x")
        ack = await c.request("publish", channel="x", data=1)
        assert ack["op"] == "ack"
        node.proc.send_signal(signal.SIGTERM)
        try:
            while True:
                await c.recv(timeout=10)
        except websockets.ConnectionClosed as e:
            assert e.rcvd is not None and e.rcvd.code == 1012
    run(go())
    assert node.proc.wait(20) == 0
    log = node.read_log()
    assert "drain" in log and "node stopped" in log
    # restart on the same data: the origin is the same, the event is kept
    node.start()
    status, body = node.get("/stats")
    assert status == 200
    assert '"last_seq":1' in body.replace(" ", "")


def test_origin_is_stable_and_name_mismatch_refused(node_factory):
    n = node_factory().start()

    async def origin():
        c = await Client.connect(n.url)
        return (await c.request("connect"))["node"]

    first = run(origin())
    n.stop()
    n.start()
    assert run(origin()) == first
    n.stop()
    p = subprocess.run([n.proc.args[0], "--data", n.data, "--node-id", "other", "--listen", "127.0.0.1:0"],
                       capture_output=True, timeout=20)
    assert p.returncode != 0
    assert b"another node" in p.stderr or b"node name" in p.stderr


def test_full_log_refuses_publishes_and_keeps_serving(node_factory):
    """At the map's limit a publish gets 503 and a log line; everything acknowledged before
    stays readable, and the node keeps serving."""
    node = node_factory("--store-map-size", "1MiB").start()

    async def go():
        c = await Client.connect(node.url)
        acked, refused = [], None
        blob = "x" * 8000
        for i in range(400):
            m = await c.request("publish", channel="fill", data={"i": i, "b": blob})
            if m["op"] == "error":
                refused = m
                break
            acked.append(m["pos"])
        assert refused is not None, "the log never filled"
        assert refused["code"] == 503 and "full" in refused["message"]
        assert len(acked) > 10
        # HTTP publishes are refused the same way
        status, body = node.post("/api/publish", {"channel": "fill", "data": blob})
        assert status == 503, body
        # reads and replays still work, and every acknowledged event is there
        r = await Client.connect(node.url)
        await r.request("subscribe", channel="fill", since={})
        got = await r.events(len(acked))
        assert [e["pos"] for e in got] == acked
        assert (await c.request("ping"))["op"] == "pong"
        assert node.stats()["events"]["publishes_refused"] >= 2
    run(go())
    assert "store-full" in node.read_log()
