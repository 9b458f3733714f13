"""Retention through the real node: count and age limits, per-prefix rules, truthful
`recovered` on both sides of the edge, /stats figures, and GET /api/history paging."""
import json
import subprocess
import time
import urllib.parse

from conftest import run, Client, origin_of, seq_of


def publish(node, channel, data, headers=None):
    status, body = node.post("/api/publish", {"channel": channel, "data": data}, headers)
    assert status == 200, body
    return json.loads(body)["pos"]


def wait_trimmed(node, at_least, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        st = node.stats()["store"]
        if st["retention_trimmed"] >= at_least:
            return st
        time.sleep(0.05)
    raise AssertionError(f"retention trimmed {node.stats()['store']['retention_trimmed']} < {at_least}")


def history(node, channel, since=None, limit=None, headers=None):
    q = {"channel": channel}
    if since is not None:
        q["since"] = json.dumps(since)
    if limit is not None:
        q["limit"] = str(limit)
    status, body = node.get("/api/history?" + urllib.parse.urlencode(q), headers)
    return status, (json.loads(body) if body.startswith("{") else body)


def test_count_limit_and_the_recovered_edge(node_factory):
    node = node_factory("--retention-max-count", "10", "--retention-interval", "50ms").start()
    pos = [publish(node, "room:1", i) for i in range(25)]  # seqs 1..25; 1..15 trimmed
    publish(node, "room:2", "other")
    wait_trimmed(node, 15)
    origin = origin_of(pos[0])

    async def go():
        c = await Client.connect(node.url)
        # Saw seq 15 (the newest trimmed): nothing it missed is gone.
        r = await c.request("subscribe", channel="room:1", since={origin: seq_of(pos[14])})
        assert r["recovered"] is True
        assert [e["data"] for e in await c.events(10)] == list(range(15, 25))
        # Saw seq 14: seq 15 is gone -> recovered false, replay from the oldest kept.
        d = await Client.connect(node.url)
        r = await d.request("subscribe", channel="room:1", since={origin: seq_of(pos[13])})
        assert r["recovered"] is False
        assert [e["data"] for e in await d.events(10)] == list(range(15, 25))
        # Another channel lost nothing, whatever its cursor.
        e = await Client.connect(node.url)
        r = await e.request("subscribe", channel="room:2", since={origin: 0})
        assert r["recovered"] is True
    run(go())

    st = node.stats()
    assert st["resumes"]["recovered"] >= 2 and st["resumes"]["unrecovered"] >= 1
    store = st["store"]
    assert store["events_kept"] == 11 and store["retention_trimmed"] == 15
    assert store["origins"][0]["first_seq"] == 16 and store["origins"][0]["events_kept"] == 11
    metrics = node.get("/metrics")[1]
    assert "tidewire_store_retention_trimmed_total 15" in metrics
    assert f'tidewire_store_origin_events_kept{{origin="{origin}"}} 11' in metrics


def test_age_with_prefix_rules_survives_restart(node_factory):
    node = node_factory("--retention", "chat: max-age=1s", "--retention", "chat:keep: max-age=0",
                        "--retention-interval", "50ms").start()
    for i in range(5):
        publish(node, "chat:a", i)
        publish(node, "chat:keep:a", i)
        publish(node, "other", i)
    wait_trimmed(node, 5, timeout=15)
    time.sleep(0.3)
    st = node.stats()["store"]
    assert st["retention_trimmed"] == 5 and st["events_kept"] == 10
    assert node.stop() == 0
    node.start()
    assert node.stats()["store"]["events_kept"] == 10
    status, h = history(node, "chat:a", since={})
    assert status == 200 and h["events"] == [] and h["recovered"] is True
    status, h = history(node, "chat:keep:a")
    assert [e["data"] for e in h["events"]] == list(range(5))


def test_bad_retention_rule_refuses_to_start(tmp_path):
    from conftest import BIN, free_port
    p = subprocess.run([BIN, "--listen", f"127.0.0.1:{free_port()}", "--data", str(tmp_path / "d"),
                        "--retention", "chat: max-ages=1h"], capture_output=True, timeout=20)
    assert p.returncode != 0
    assert b"max-ages=1h" in p.stdout + p.stderr


def test_history_pages_with_cursor(node_factory):
    node = node_factory("--api-key", "k3y", "--retention-max-count", "30",
                        "--retention-interval", "50ms").start()
    auth = {"Authorization": "Bearer k3y"}
    pos = []
    for i in range(40):
        pos.append(publish(node, "h:1", {"i": i}, auth))
        publish(node, "h:2", i, auth)
    wait_trimmed(node, 20)
    origin = origin_of(pos[0])

    assert history(node, "h:1")[0] == 401
    assert history(node, "h:1", headers={"Authorization": "Bearer nope"})[0] == 401
    assert history(node, "", headers=auth)[0] == 400
    assert history(node, "h:1", limit=0, headers=auth)[0] == 400
    assert history(node, "h:1", limit=1001, headers=auth)[0] == 400
    assert history(node, "h:1", since="not a cursor", headers=auth)[0] == 400

    # From the oldest kept, pages of 7: 30 events, in order, each page's next the cursor.
    got, since, pages = [], {}, 0
    while True:
        status, h = history(node, "h:1", since=since, limit=7, headers=auth)
        assert status == 200, h
        assert h["recovered"] is True
        got += h["events"]
        since = h["next"]
        pages += 1
        if not h["more"]:
            break
    assert pages == 5
    assert [e["pos"] for e in got] == pos[10:]
    assert [e["data"]["i"] for e in got] == list(range(10, 40))
    assert all(e["channel"] == "h:1" for e in got)
    assert since == {origin: seq_of(pos[-1])}
    # At the head: nothing more, same cursor back.
    status, h = history(node, "h:1", since=since, headers=auth)
    assert h["events"] == [] and h["more"] is False and h["next"] == since

    # A cursor behind what is kept: recovered false, from the oldest kept.
    status, h = history(node, "h:1", since={origin: seq_of(pos[3])}, limit=2, headers=auth)
    assert h["recovered"] is False
    assert [e["pos"] for e in h["events"]] == pos[10:12] and h["more"] is True
    # Exactly at the edge: recovered.
    status, h = history(node, "h:1", since={origin: seq_of(pos[9])}, limit=1, headers=auth)
    assert h["recovered"] is True and h["events"][0]["pos"] == pos[10]
    # A position string works as a cursor too; an unknown channel is empty.
    status, h = history(node, "h:1", since=pos[37], headers=auth)
    assert [e["pos"] for e in h["events"]] == pos[38:]
    status, h = history(node, "nobody", headers=auth)
    assert status == 200 and h["events"] == [] and h["more"] is False


def test_history_carries_msgpack_data_as_json_clients_see_it(node):
    import base64
    blob = bytes(range(256))

    async def go():
        c = await Client.connect(node.url, codec="msgpack")
        r = await c.request("publish", channel="bin:1", data={"blob": blob, "n": 1})
        assert r["op"] == "ack", r
        return r["pos"]
    pos = run(go())
    status, h = history(node, "bin:1")
    assert status == 200
    assert h["events"] == [{"op": "event", "channel": "bin:1", "pos": pos,
                            "ts": h["events"][0]["ts"],
                            "data": {"blob": {"$base64": base64.b64encode(blob).decode()}, "n": 1}}]


def test_reader_that_falls_past_retention_is_closed_4208_and_told_unrecovered(node_factory):
    """A subscription catching up from the log whose unread events retention trims is not
    left to skip them silently: it gets the events before the hole, then close 4208; its
    resume from the last position it saw is told recovered: false."""
    import websockets
    node = node_factory("--retention-max-count", "200", "--retention-interval", "50ms",
                        "--outbound-high-water", "64KiB").start()
    big = "x" * 100_000
    first = [publish(node, "feed", {"i": i, "p": big}) for i in range(200)]  # 20 MB kept
    origin = origin_of(first[0])

    async def go():
        c = await Client.connect(node.url)
        # Subscribe from the oldest kept and stop reading: the socket buffers fill, the
        # subscription stays behind in the log with most of the 20 MB unread.
        r = await c.request("subscribe", channel="feed", since={})
        assert r["recovered"] is True
        c.ws.transport.pause_reading()
        time.sleep(0.5)
        for i in range(200, 400):  # retention now trims every event of the first 200
            publish(node, "feed", {"i": i, "p": big})
        wait_trimmed(node, 200)
        c.ws.transport.resume_reading()
        got = []
        try:
            while True:
                m = await c.wait(lambda m: m.get("op") == "event", timeout=30)
                got.append(m)
        except websockets.ConnectionClosed as e:
            assert e.rcvd is not None and e.rcvd.code == 4208, e.rcvd
        # What arrived has no hole: the events before it, in order, and nothing after it.
        idx = [m["data"]["i"] for m in got]
        assert idx == list(range(len(idx))) and 0 < len(idx) < 200, idx[-5:]
        # Its resume is the truth: events it never saw are gone.
        d = await Client.connect(node.url)
        r = await d.request("subscribe", channel="feed", since={origin: seq_of(got[-1]["pos"])})
        assert r["recovered"] is False
        assert (await d.events(1, timeout=30))[0]["data"]["i"] == 200

    run(go())
    assert node.stats()["slow_consumers"]["closed"] >= 1
