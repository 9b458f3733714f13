"""Publish and subscribe through a real node with a third-party WebSocket client."""
import asyncio
import json

from conftest import run, Client, origin_of, seq_of


def test_connect_subscribe_publish_ack_and_deliver(node):
    async def go():
        sub = await Client.connect(node.url)
        pub = await Client.connect(node.url)
        conn = await sub.request("connect")
        assert conn["op"] == "connected"
        assert conn["node"].startswith("n1.")
        assert conn["ping_interval"] == 25
        r = await sub.request("subscribe", channel="vessel:42")
        assert r["op"] == "subscribed" and r["channel"] == "vessel:42"
        assert r["recovered"] is True and r["replayed"] is False
        assert isinstance(r["cursor"], dict)

        ack = await pub.request("publish", channel="vessel:42", data={"lat": 59.9, "name": "Ægir"})
        assert ack["op"] == "ack"
        assert origin_of(ack["pos"]) == conn["node"]
        ev = (await sub.events(1))[0]
        assert ev == {"op": "event", "channel": "vessel:42", "pos": ack["pos"], "ts": ev["ts"],
                      "data": {"lat": 59.9, "name": "Ægir"}}
        assert ev["ts"] > 1_600_000_000_000
        await sub.close()
        await pub.close()
    run(go())


def test_events_only_reach_their_channel_in_order(node):
    async def go():
        a = await Client.connect(node.url)
        b = await Client.connect(node.url)
        await a.request("subscribe", channel="a")
        await b.request("subscribe", channel="b")
        pub = await Client.connect(node.url)
        acks = []
        for i in range(50):
            acks.append((await pub.request("publish", channel="a" if i % 2 == 0 else "b", data=i))["pos"])
        ea = await a.events(25)
        eb = await b.events(25)
        assert [e["data"] for e in ea] == list(range(0, 50, 2))
        assert [e["data"] for e in eb] == list(range(1, 50, 2))
        assert all(e["channel"] == "a" for e in ea)
        seqs = [seq_of(e["pos"]) for e in ea]
        assert seqs == sorted(seqs)
        # nothing else arrives on a
        try:
            extra = await a.wait(lambda m: m.get("op") == "event", timeout=0.3)
            raise AssertionError(f"unexpected event {extra}")
        except asyncio.TimeoutError:
            pass
    run(go())


def test_fanout_to_many_subscribers(node):
    async def go():
        subs = [await Client.connect(node.url) for _ in range(50)]
        for s in subs:
            await s.request("subscribe", channel="room")
        pub = await Client.connect(node.url)
        for i in range(20):
            await pub.send({"op": "publish", "channel": "room", "data": {"i": i}})
        for s in subs:
            evs = await s.events(20)
            assert [e["data"]["i"] for e in evs] == list(range(20))
        st = node.stats()
        assert st["events"]["in"] == 20
        assert st["events"]["out"] >= 20 * 50
        assert st["subscriptions"] == 50
    run(go())


def test_http_publish_reaches_subscribers(node):
    async def go():
        sub = await Client.connect(node.url)
        await sub.request("subscribe", channel="user:7")
        status, body = node.post("/api/publish", {"channel": "user:7", "data": {"form": 12, "approved": True}})
        assert status == 200, body
        pos = json.loads(body)["pos"]
        ev = (await sub.events(1))[0]
        assert ev["pos"] == pos and ev["data"] == {"form": 12, "approved": True}
    run(go())


def test_unsubscribe_stops_delivery_and_resubscribe_works(node):
    async def go():
        c = await Client.connect(node.url)
        await c.request("subscribe", channel="x")
        dup = await c.request("subscribe", channel="x")
        assert dup["op"] == "error" and dup["code"] == 409
        r = await c.request("unsubscribe", channel="x")
        assert r == {"op": "unsubscribed", "id": r["id"], "channel": "x"}
        node.post("/api/publish", {"channel": "x", "data": 1})
        try:
            m = await c.wait(lambda m: m.get("op") == "event", timeout=0.5)
            raise AssertionError(f"event after unsubscribe: {m}")
        except asyncio.TimeoutError:
            pass
        r = await c.request("unsubscribe", channel="never")
        assert r["op"] == "unsubscribed"
        assert (await c.request("subscribe", channel="x"))["op"] == "subscribed"
    run(go())


def test_ping_pong_and_subscribe_without_connect(node):
    async def go():
        c = await Client.connect(node.url)
        assert (await c.request("ping"))["op"] == "pong"
        await c.send({"op": "ping"})
        assert await c.recv() == {"op": "pong"}
    run(go())


def test_connect_with_subs_replies_in_order(node):
    async def go():
        node.post("/api/publish", {"channel": "c1", "data": "old"})
        c = await Client.connect(node.url)
        await c.send({"op": "connect", "id": 1, "subs": {"c1": {}, "c2": None}})
        m1 = await c.recv()
        assert m1["op"] == "connected" and m1["id"] == 1
        m2 = await c.recv()
        assert m2["op"] == "subscribed" and m2["channel"] == "c1" and m2["replayed"] is True
        m3 = await c.recv()
        assert m3["op"] in ("subscribed", "event")
        got = [m2, m3] + [await c.recv()]
        kinds = {(m["op"], m.get("channel")) for m in got}
        assert ("subscribed", "c2") in kinds and ("event", "c1") in kinds
    run(go())
