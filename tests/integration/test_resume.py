"""Exact resume: a client that comes back with its cursor gets exactly what it missed, then
live events, with no gap and no duplicate — also while publishes keep arriving."""
import asyncio
import json
import threading
import time

from conftest import run, Client, origin_of, seq_of


def publish_http(node, channel, data):
    status, body = node.post("/api/publish", {"channel": channel, "data": data})
    assert status == 200, body
    return json.loads(body)["pos"]


def test_resume_after_disconnect_gets_missed_then_live(node):
    async def go():
        c = await Client.connect(node.url)
        sub = await c.request("subscribe", channel="vessel:42")
        cursor = dict(sub["cursor"])
        for i in range(5):
            publish_http(node, "vessel:42", {"i": i})
        seen = await c.events(5)
        for e in seen:
            cursor[origin_of(e["pos"])] = seq_of(e["pos"])
        await c.close()

        # Away: 30 events on our channel, others on another channel in between.
        missed = []
        for i in range(5, 35):
            missed.append(publish_http(node, "vessel:42", {"i": i}))
            publish_http(node, "vessel:7", {"noise": i})

        c = await Client.connect(node.url)
        r = await c.request("subscribe", channel="vessel:42", since=cursor)
        assert r["recovered"] is True and r["replayed"] is True
        assert r["cursor"] == cursor
        got = await c.events(30)
        assert [e["pos"] for e in got] == missed
        assert [e["data"]["i"] for e in got] == list(range(5, 35))
        # then live, nothing repeated
        live = publish_http(node, "vessel:42", {"i": 35})
        nxt = (await c.events(1))[0]
        assert nxt["pos"] == live
        st = node.stats()
        assert st["resumes"]["recovered"] >= 1
    run(go())


def test_resume_with_position_string_and_from_oldest(node):
    async def go():
        pos = [publish_http(node, "ch", i) for i in range(10)]
        c = await Client.connect(node.url)
        r = await c.request("subscribe", channel="ch", since=pos[3])
        assert r["recovered"] is True
        assert [e["data"] for e in await c.events(6)] == list(range(4, 10))
        d = await Client.connect(node.url)
        r = await d.request("subscribe", channel="ch", since={})
        assert r["recovered"] is True and r["replayed"] is True
        assert [e["data"] for e in await d.events(10)] == list(range(10))
        # a cursor already at the head replays nothing and says so
        e = await Client.connect(node.url)
        r = await e.request("subscribe", channel="ch", since=pos[-1])
        assert r["replayed"] is False
    run(go())


def test_last_n_bootstraps_a_view(node):
    async def go():
        for i in range(20):
            publish_http(node, "feed", i)
        c = await Client.connect(node.url)
        r = await c.request("subscribe", channel="feed", last=5)
        assert r["replayed"] is True
        # the cursor is where the replay starts: a client merging it keeps all five
        (origin, seq), = r["cursor"].items()
        assert seq == 15
        assert [e["data"] for e in await c.events(5)] == [15, 16, 17, 18, 19]
        publish_http(node, "feed", 20)
        assert (await c.events(1))[0]["data"] == 20
        # last larger than the channel: all of it
        d = await Client.connect(node.url)
        await d.request("subscribe", channel="feed", last=1000)
        assert [e["data"] for e in await d.events(21)] == list(range(21))
    run(go())


def test_unknown_origin_is_not_recovered(node):
    async def go():
        for i in range(3):
            publish_http(node, "ch", i)
        c = await Client.connect(node.url)
        r = await c.request("subscribe", channel="ch", since={"n9.deadbeef": 100})
        assert r["recovered"] is False
        # replays from the oldest kept: the app reloads state, but gets what is kept
        assert [e["data"] for e in await c.events(3)] == [0, 1, 2]
        assert node.stats()["resumes"]["unrecovered"] == 1
    run(go())


def test_replay_hands_over_to_live_under_concurrent_publishing(node):
    """Thousands of events missed, and a publisher never stops during the replay: every
    acknowledged event arrives exactly once, in order."""
    channel = "race"
    acked = []
    stop = threading.Event()

    async def publisher(n_first):
        p = await Client.connect(node.url)
        # pipelined publishes, acks collected in order
        for i in range(n_first):
            await p.send({"op": "publish", "id": i, "channel": channel, "data": i})
        for _ in range(n_first):
            m = await p.wait(lambda m: m.get("op") == "ack", timeout=30)
            acked.append(m["pos"])
        return p

    async def go():
        head = await Client.connect(node.url)
        cursor = (await head.request("subscribe", channel=channel))["cursor"]
        await head.close()
        p = await publisher(3000)  # missed while away

        async def keep_publishing():
            i = 3000
            while not stop.is_set() and i < 6000:
                await p.send({"op": "publish", "id": i, "channel": channel, "data": i})
                i += 1
                if i % 50 == 0:
                    await asyncio.sleep(0)
            return i

        c = await Client.connect(node.url)
        task = asyncio.create_task(keep_publishing())
        r = await c.request("subscribe", channel=channel, since=cursor)
        assert r["recovered"] is True
        sent = await task
        stop.set()
        # collect the acks of the concurrent phase
        for _ in range(sent - 3000):
            m = await p.wait(lambda m: m.get("op") == "ack", timeout=30)
            acked.append(m["pos"])
        got = await c.events(len(acked), timeout=60)
        positions = [e["pos"] for e in got]
        assert len(set(positions)) == len(positions), "duplicate delivery"
        assert positions == acked, "gap or reordering between replay and live"
        assert [e["data"] for e in got] == list(range(sent))
    run(go())


def test_slow_reader_is_fed_from_the_log_not_dropped(node_factory):
    """A client that does not read while 4 MiB of events pile up is moved to the log and
    later gets every event, in order, without being disconnected."""
    node = node_factory("--outbound-high-water", "64KiB").start()

    async def go():
        c = await Client.connect(node.url)
        await c.request("subscribe", channel="big")
        # Stop reading: pause the transport so the socket buffers fill.
        c.ws.transport.pause_reading()
        payload = "x" * 4000
        pub = await Client.connect(node.url)
        n = 1000
        for i in range(n):
            await pub.send({"op": "publish", "channel": "big", "data": {"i": i, "p": payload}})
        for _ in range(n):
            await pub.wait(lambda m: m.get("op") == "ack", timeout=30)
        time.sleep(0.5)
        st = node.stats()
        assert st["slow_consumers"]["fell_behind"] >= 1
        c.ws.transport.resume_reading()
        got = await c.events(n, timeout=60)
        assert [e["data"]["i"] for e in got] == list(range(n))
        assert node.stats()["events"]["replayed"] > 0
        assert node.stats()["slow_consumers"]["closed"] == 0
    run(go())
