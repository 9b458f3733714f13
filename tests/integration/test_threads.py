"""--threads: several event loops in one node, each accepting its own clients on the same
port (SO_REUSEPORT). Clients on different loops must see one node: every event in one commit
order, resumes, presence and join/leave, disconnect, limits and /stats across loops, and a
drain that closes every loop's clients."""
import asyncio
import json
import signal
import time

import websockets

from conftest import run, Client, expect_close, seq_of

LOOPS = 2
# With 16 connections the kernel's hash leaves a loop empty with probability 2 * 2^-16.
CLIENTS = 16
FAST_TICK = ("--ping-interval", "1s")  # loops publish their /stats figures every 200 ms
API = "api-key-" + "2" * 8 + "cafe"
BEARER = {"Authorization": "Bearer " + API}


def secure_node(secure_node_factory, keys, secrets, *more):
    secrets.add(API)
    return secure_node_factory(*keys.args(), "--api-key", API, "--threads", str(LOOPS),
                               *FAST_TICK, *more).start()


def loops_figures(node, want_sessions):
    """The per-loop figures once every loop has published its share of want_sessions."""
    deadline = time.time() + 10
    while True:
        st = node.stats()
        loops = st["loops"]
        if sum(lp["websocket_sessions"] for lp in loops) == want_sessions or time.time() > deadline:
            return st, loops
        time.sleep(0.05)


def assert_spread(node, sessions):
    st, loops = loops_figures(node, sessions)
    assert len(loops) == LOOPS
    assert sum(lp["websocket_sessions"] for lp in loops) == sessions, loops
    assert all(lp["websocket_sessions"] > 0 for lp in loops), f"one loop got no client: {loops}"
    assert st["connections"]["websocket_now"] == sessions
    return st


async def subscribers(node, channel, url_of=None, codec_of=None):
    """CLIENTS clients of the node, each subscribed to `channel` (url_of(i), codec_of(i):
    client i's URL and codec, by default the node's and JSON)."""
    clients = []
    for i in range(CLIENTS):
        c = await Client.connect(url_of(i) if url_of else node.url,
                                 codec=codec_of(i) if codec_of else "json")
        r = await c.request("subscribe", channel=channel)
        assert r["op"] == "subscribed", r
        clients.append(c)
    return clients


def test_every_loop_fans_out_every_event_in_one_order(node_factory):
    node = node_factory("--threads", str(LOOPS), *FAST_TICK).start()

    async def main():
        subs = await subscribers(node, "c", codec_of=lambda i: "msgpack" if i % 3 == 0 else "json")
        assert_spread(node, CLIENTS)
        # Publishers on every loop (the subscribers themselves) and the HTTP API.
        per, total = 40, 40 * CLIENTS + 20

        async def publish(c, k):
            for j in range(per):
                await c.send({"op": "publish", "id": 1000 + j, "channel": "c", "data": {"p": k, "j": j}})

        await asyncio.gather(*(publish(c, k) for k, c in enumerate(subs)))
        for j in range(20):
            status, body = node.post("/api/publish", {"channel": "c", "data": {"p": "http", "j": j}})
            assert status == 200, body
        orders = []
        for c in subs:
            events = await c.events(total, channel="c", timeout=30)
            acks = [m for m in c.pending if m.get("op") == "ack"]
            while len(acks) < per:
                acks.append(await c.wait(lambda m: m.get("op") == "ack"))
            assert len(acks) == per
            orders.append([e["pos"] for e in events])
        # One commit order for all, positions of one origin with no gap and no repeat.
        assert all(o == orders[0] for o in orders)
        seqs = [seq_of(p) for p in orders[0]]
        assert seqs == list(range(seqs[0], seqs[0] + total))
        # /stats counts the whole node: every loop's events, deliveries and channels, a
        # channel on several loops once, with all its subscribers.
        st = node.stats()
        assert st["events"]["in"] == total
        assert st["events"]["out"] == total * CLIENTS
        assert st["channels"] == 1 and st["subscriptions"] == CLIENTS
        top = st["channels_top"][0]
        assert (top["channel"], top["subscribers"], top["events"]) == ("c", CLIENTS, total)
        assert sum(lp["events_out"] for lp in st["loops"]) == total * CLIENTS
        metrics = node.get("/metrics")[1]
        assert f"tidewire_events_in_total {total}" in metrics
        assert metrics.count("tidewire_loop_connections{loop=") == LOOPS

    run(main())


def test_resume_and_history_from_clients_on_every_loop(node_factory):
    node = node_factory("--threads", str(LOOPS), *FAST_TICK).start()

    async def main():
        pub = await Client.connect(node.url)
        acks = []
        for i in range(100):
            acks.append(await pub.request("publish", channel="r", data=i))
        cursor = acks[49]["pos"].rsplit(":", 1)
        since = {cursor[0]: int(cursor[1])}
        clients = []
        for _ in range(CLIENTS):
            c = await Client.connect(node.url)
            r = await c.request("subscribe", channel="r", since=since)
            assert r["op"] == "subscribed" and r["recovered"] is True, r
            clients.append(c)
        assert_spread(node, CLIENTS + 1)
        for c in clients:
            got = await c.events(50, channel="r")
            assert [e["data"] for e in got] == list(range(50, 100))
        # Live after the replay, on every loop.
        await pub.request("publish", channel="r", data="live")
        for c in clients:
            (e,) = await c.events(1, channel="r")
            assert e["data"] == "live"

    run(main())


def test_presence_and_join_leave_across_loops(secure_node_factory, keys, secrets):
    node = secure_node(secure_node_factory, keys, secrets,
                       "--namespace", "room: subscribe=users presence=on join-leave=on")

    async def main():
        clients = await subscribers(node, "room:1",
                                    url_of=lambda i: node.url + "?token=" + keys.token(sub=f"u{i}"))
        assert_spread(node, CLIENTS)
        # The first member hears every later one join, wherever it connected.
        first = clients[0]
        joined = set()
        while len(joined) < CLIENTS - 1:
            m = await first.wait(lambda m: m.get("op") == "join")
            joined.add(m["user"])
        assert joined == {f"u{i}" for i in range(1, CLIENTS)}
        # Every loop lists every member, and so does the API.
        for c in clients:
            r = await c.request("presence", channel="room:1")
            assert sorted(m["user"] for m in r["members"]) == sorted(f"u{i}" for i in range(CLIENTS))
            assert len({m["conn"] for m in r["members"]}) == CLIENTS  # ids unique in the node
        status, body = node.get("/api/presence?channel=room:1", BEARER)
        assert status == 200, body
        assert len(json.loads(body)["members"]) == CLIENTS
        # A member leaves: every other one hears it, on every loop.
        await clients[-1].close()
        for c in clients[:-1]:
            m = await c.wait(lambda m: m.get("op") == "leave")
            assert m["user"] == f"u{CLIENTS - 1}"
        r = await clients[1].request("presence", channel="room:1")
        assert len(r["members"]) == CLIENTS - 1

    run(main())


def test_disconnect_reaches_every_loop(secure_node_factory, keys, secrets):
    node = secure_node(secure_node_factory, keys, secrets)

    async def main():
        bobs = [await Client.connect(node.url + "?token=" + keys.token(sub="bob")) for _ in range(CLIENTS)]
        alice = await Client.connect(node.url + "?token=" + keys.token(sub="alice"))
        assert (await alice.request("subscribe", channel="user:alice"))["op"] == "subscribed"
        for b in bobs:
            assert (await b.request("subscribe", channel="user:bob"))["op"] == "subscribed"
        assert_spread(node, CLIENTS + 1)
        status, body = node.post("/api/disconnect", {"user": "bob", "code": 4003}, BEARER)
        assert status == 200, body
        assert json.loads(body) == {"disconnected": CLIENTS}
        for b in bobs:
            await expect_close(b, 4003)
        r = await alice.request("presence", channel="user:alice")  # still served
        assert r["op"] in ("presence", "error"), r

    run(main())


def test_connection_limits_count_every_loop(node_factory):
    node = node_factory("--threads", str(LOOPS), *FAST_TICK, "--max-connections", "6").start()

    async def main():
        held = [await Client.connect(node.url) for _ in range(6)]
        refused = 0
        for _ in range(4):  # whichever loop takes them, the node is full
            try:
                c = await Client.connect(node.url)
                await c.request("subscribe", channel="x")
            except (websockets.InvalidHandshake, websockets.ConnectionClosed, OSError,
                    asyncio.TimeoutError, EOFError):
                refused += 1
        assert refused == 4
        # One goes: its place is free for a client of any loop once the close is done.
        await held[0].close()
        deadline = time.time() + 5
        while True:
            try:
                c = await Client.connect(node.url)
                assert (await c.request("subscribe", channel="x"))["op"] == "subscribed"
                break
            except (websockets.InvalidHandshake, websockets.ConnectionClosed, OSError, EOFError):
                assert time.time() < deadline, "the freed place was never given again"
                await asyncio.sleep(0.05)

    run(main())


def test_per_ip_limit_counts_every_loop(node_factory):
    node = node_factory("--threads", str(LOOPS), *FAST_TICK, "--max-connections-per-ip", "5").start()

    async def main():
        held = [await Client.connect(node.url) for _ in range(5)]
        for _ in range(3):
            try:
                c = await Client.connect(node.url)
                await c.request("subscribe", channel="x")
                raise AssertionError("a sixth connection from one address was served")
            except (websockets.InvalidHandshake, websockets.ConnectionClosed, OSError, EOFError):
                pass
        # /stats is a connection from the same address too: ask once the clients are gone.
        for c in held:
            await c.close()
        deadline = time.time() + 5
        while True:
            try:
                st = node.stats()
                if st["security"]["ip_refused"] >= 3 or time.time() > deadline:
                    break
            except OSError:
                pass
            await asyncio.sleep(0.1)
        assert st["security"]["ip_refused"] == 3
        again = [await Client.connect(node.url) for _ in range(5)]
        assert (await again[4].request("subscribe", channel="x"))["op"] == "subscribed"

    run(main())


def test_sigterm_drains_every_loop(node_factory):
    node = node_factory("--threads", str(LOOPS), *FAST_TICK).start()

    async def main():
        clients = await subscribers(node, "d")
        assert_spread(node, CLIENTS)
        node.proc.send_signal(signal.SIGTERM)
        for c in clients:
            await expect_close(c, 1012)

    run(main())
    assert node.proc.wait(20) == 0


def test_a_cluster_of_nodes_with_several_loops(node_factory):
    """Three nodes of two loops each, quorum durability: publishes acknowledged from every
    loop once a majority has them, every event at every subscriber of every loop of every
    node, and presence listing the members of every loop of every node."""
    from test_cluster import make_cluster, wait_until, origins
    nodes = make_cluster(node_factory, durability="quorum",
                         extra=("--threads", str(LOOPS),
                                "--namespace", "room: presence=on join-leave=on"))

    async def main():
        subs = {nd: await subscribers(nd, "room:1") for nd in nodes}
        for nd in nodes:
            assert_spread(nd, CLIENTS)
        # Every member of every loop of every node is listed on every loop of every node.
        want = 3 * CLIENTS

        async def members_seen_by_all(n):
            for nd in nodes:
                for c in subs[nd]:
                    deadline = time.time() + 10
                    while True:
                        r = await c.request("presence", channel="room:1")
                        if len(r["members"]) == n:
                            break
                        assert time.time() < deadline, (nd.port, r)
                        await asyncio.sleep(0.05)

        await members_seen_by_all(want)
        # Each client publishes twice; every ack comes at quorum, whatever its loop.
        acks = []
        for nd in nodes:
            for c in subs[nd]:
                for j in range(2):
                    r = await c.request("publish", channel="room:1", data=f"{nd.port}-{j}")
                    assert r["op"] == "ack", r
                    acks.append(r["pos"])
        total = len(acks)
        for nd in nodes:
            for c in subs[nd]:
                got = await c.events(total, channel="room:1", timeout=30)
                assert sorted(e["pos"] for e in got) == sorted(acks)
        assert wait_until(lambda: origins(nodes[0]) == origins(nodes[1]) == origins(nodes[2]))
        # One member leaves: the members on every loop of the other nodes hear it.
        leaving = subs[nodes[0]].pop()
        await leaving.close()
        for nd in nodes:
            for c in subs[nd]:
                await c.wait(lambda m: m.get("op") == "leave")
        await members_seen_by_all(want - 1)

    run(main())


def test_retention_racing_the_loops_never_skips_silently(node_factory):
    """Keeping one event per channel and trimming every 10 ms while events pour in, a loop
    can find events gone before it read them: its subscribers then read the log, which
    delivers what is left or closes them with 4208. Either way no subscriber sees a hole
    in the positions it was sent without being closed."""
    node = node_factory("--threads", str(LOOPS), *FAST_TICK, "--retention-max-count", "1",
                        "--retention-interval", "10ms", "--log-level", "debug").start()
    total, npub = 12000, 8

    async def main():
        subs = await subscribers(node, "t")
        assert_spread(node, CLIENTS)
        pubs = [await Client.connect(node.url) for _ in range(npub)]

        async def publish(c, k):
            for j in range(total // npub):
                await c.send({"op": "publish", "id": j, "channel": "t", "data": k})
            for _ in range(total // npub):
                m = await c.wait(lambda m: m.get("op") in ("ack", "error"))
                assert m["op"] == "ack", m

        await asyncio.gather(*(publish(c, k) for k, c in enumerate(pubs)))
        last = (await pubs[0].request("publish", channel="t", data="last"))["pos"]
        closed = 0
        for c in subs:
            seqs = []
            try:
                while not seqs or seqs[-1] != seq_of(last):
                    m = await c.wait(lambda m: m.get("op") == "event", timeout=20)
                    seqs.append(seq_of(m["pos"]))
            except websockets.ConnectionClosed as e:
                assert e.rcvd and e.rcvd.code == 4208, e
                closed += 1
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs))) if seqs else True, \
                f"a subscriber was sent a hole: {[b for a, b in zip(seqs, seqs[1:]) if b != a + 1][:5]}"
        return closed

    closed = run(main())
    print(f"closed with 4208: {closed} of {CLIENTS}; bus gaps: {node.read_log().count('bus-gap')}")


def test_a_second_node_on_the_port_is_refused(node_factory):
    """SO_REUSEPORT would let a second process of the same user share the port and take
    half the clients; a node of several loops checks the port is free first."""
    first = node_factory("--threads", str(LOOPS)).start()
    for args in (("--threads", str(LOOPS)), ()):
        second = node_factory(*args)
        second.port = first.port
        second.start_async()
        assert second.proc.wait(20) != 0
        assert "cannot listen on" in second.read_log()
        second.proc = None  # its exit status was the point
    status, _ = first.get("/readyz")
    assert status == 200
