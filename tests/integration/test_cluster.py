"""The cluster: three real nodes on loopback, replication, resume on any node, failures,
quorum durability, the nng#1518 listener repair, and a rolling restart behind haproxy."""
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from conftest import CLI, TMP, Client, free_port, origin_of, run, seq_of

FAST = ["--cluster-heartbeat", "100ms", "--cluster-suspect-timeout", "500ms",
        "--cluster-dead-timeout", "1s", "--ping-interval", "1s"]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make_cluster(node_factory, n=3, durability="local", extra=()):
    cports = [free_port() for _ in range(n)]
    peers = ",".join(f"tcp://127.0.0.1:{p}" for p in cports)
    nodes = []
    for i in range(n):
        nodes.append(node_factory("--node-id", f"n{i + 1}", "--cluster-listen",
                                  f"tcp://127.0.0.1:{cports[i]}", "--peers", peers,
                                  "--durability", durability, *FAST, *extra))
    for nd in nodes:  # start them all, then wait: each is ready once it has heard the rest
        nd.start_async()
    for nd in nodes:
        nd.wait_ready()
    for nd, cp in zip(nodes, cports):
        nd.cport = cp
    return nodes


def stats(node):
    return node.stats()


def wait_until(pred, timeout=20, step=0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(step)
    return False


def origins(node):
    """Each origin's last seq in the node's log (origins with events: a node lists its own
    origin at 0 before it has published anything, its peers do not list it)."""
    return {o["origin"]: o["last_seq"] for o in stats(node)["store"]["origins"] if o["last_seq"]}


def publish(node, channel, data):
    status, body = node.post("/api/publish", {"channel": channel, "data": data})
    assert status == 200, body
    return json.loads(body)["pos"]


def test_events_reach_every_node_and_cursors_span_origins(node_factory):
    n1, n2, n3 = make_cluster(node_factory)

    async def go():
        c = await Client.connect(n2.url)
        r = await c.request("subscribe", channel="vessel:42")
        assert r["cursor"] == {(await c.request("connect"))["node"]: 0}
        p1 = publish(n1, "vessel:42", {"from": 1})
        p3 = publish(n3, "vessel:42", {"from": 3})
        got = await c.events(2)
        assert sorted(e["pos"] for e in got) == sorted([p1, p3])
        # a resume from n2's view now spans three origins: ask with it on n1
        cur = dict(r["cursor"])
        for e in got:
            cur[origin_of(e["pos"])] = seq_of(e["pos"])
        e1 = await Client.connect(n1.url)
        rr = await e1.request("subscribe", channel="vessel:42", since=cur)
        assert rr["recovered"] is True  # even if n1 has not received n3's event yet
        # once replicated, a resume with that cursor has nothing new to replay
        assert wait_until(lambda: origins(n1).get(origin_of(p3)) == seq_of(p3))
        e2 = await Client.connect(n1.url)
        rr = await e2.request("subscribe", channel="vessel:42", since=cur)
        assert rr["recovered"] is True and rr["replayed"] is False
        assert {origin_of(p1), origin_of(p3)} == {origin_of(e["pos"]) for e in got}
        # a websocket publish on n2 reaches a subscriber on n3
        d = await Client.connect(n3.url)
        await d.request("subscribe", channel="vessel:42")
        ack = await c.request("publish", channel="vessel:42", data={"from": 2})
        assert (await d.events(1))[0]["pos"] == ack["pos"]
    run(go())
    assert wait_until(lambda: origins(n1) == origins(n2) == origins(n3))
    members = stats(n1)["cluster"]["members"]
    assert sorted(m["state"] for m in members) == ["alive", "alive", "self"]


def test_kill9_of_a_clients_node_resumes_on_another_with_nothing_missed(node_factory):
    n1, n2, n3 = make_cluster(node_factory, durability="quorum")

    async def go():
        c = await Client.connect(n1.url)
        cursor = (await c.request("subscribe", channel="orders"))["cursor"]
        acked = []
        for i in range(30):
            acked.append(publish([n1, n2, n3][i % 3], "orders", i))
        for e in await c.events(30):
            cursor[origin_of(e["pos"])] = seq_of(e["pos"])
        n1.kill9()  # the client's node dies; it resumes on n2
        more = [publish([n2, n3][i % 2], "orders", 30 + i) for i in range(20)]
        d = await Client.connect(n2.url)
        r = await d.request("subscribe", channel="orders", since=cursor)
        assert r["recovered"] is True
        got = await d.events(20)
        assert sorted(e["pos"] for e in got) == sorted(more)
        assert sorted(e["data"] for e in got) == list(range(30, 50))
    run(go())
    n1.start()


def test_restarted_node_catches_up_before_it_is_ready(node_factory):
    # Realistic failure detection: with 1 s a loaded machine can make the restarted node
    # judge its peers dead before it hears them, and a node alone is rightly ready.
    n1, n2, n3 = make_cluster(node_factory, extra=("--cluster-suspect-timeout", "3s",
                                                   "--cluster-dead-timeout", "8s"))
    n3.kill9()
    for i in range(300):
        publish(n1 if i % 2 else n2, f"c{i % 5}", i)
    n3.start()  # start() returns once /readyz says 200: joined and caught up
    assert origins(n3) == origins(n1) == origins(n2)

    async def go():
        c = await Client.connect(n3.url)
        await c.request("subscribe", channel="c0", since={})
        got = await c.events(60)
        assert sorted(e["data"] for e in got) == list(range(0, 300, 5))
    run(go())


def test_node_down_across_holes_left_by_count_retention_catches_up(node_factory):
    """Count retention cuts holes in an origin's seqs while a node is down; back, it
    fetches across them, becomes ready, holds exactly what the others kept, and tells a
    resume from before a hole that it is not recovered."""
    n1, n2, n3 = make_cluster(node_factory, extra=("--retention-max-count", "3",
                                                   "--retention-interval", "50ms",
                                                   "--cluster-suspect-timeout", "3s",
                                                   "--cluster-dead-timeout", "8s"))
    n3.kill9()
    pos = [publish(n1, f"c{i % 4}", i) for i in range(20)]
    pos += [publish(n1, "c0", 100 + i) for i in range(20)]
    origin = origin_of(pos[0])
    # Newest 3 per channel: 12 of the 40 events stay on n1 and n2.
    for nd in (n1, n2):
        assert wait_until(lambda: [o["events_kept"] for o in stats(nd)["store"]["origins"]
                                   if o["origin"] == origin] == [12], timeout=10)
    n3.start()  # returns once ready: it must get across the holes
    assert origins(n3)[origin] == seq_of(pos[-1])
    # The peers' push sockets kept a few batches for n3 while it was down (NNG queues them
    # for an absent peer) and hand them over when it is back: events the others trimmed
    # since, which n3's own retention then trims. The resumes below are checked once it has.
    assert wait_until(lambda: [o["events_kept"] for o in stats(n3)["store"]["origins"]
                               if o["origin"] == origin] == [12], timeout=10)

    async def go():
        c = await Client.connect(n3.url)
        r = await c.request("subscribe", channel="c1", since={origin: seq_of(pos[1])})
        assert r["recovered"] is False  # c1's events after it were trimmed before n3 saw them
        assert [e["data"] for e in await c.events(3)] == [9, 13, 17]
        d = await Client.connect(n3.url)
        r = await d.request("subscribe", channel="c0", since={origin: seq_of(pos[-4])})
        assert r["recovered"] is True  # nothing after it is missing
        assert [e["data"] for e in await d.events(3)] == [117, 118, 119]
        # c2 kept everything after seq 10, and n1 says so; n3 never learnt which channels
        # its holes held, so from before the last one it says not recovered (the safe side).
        for nd, want in ((n1, True), (n3, False)):
            e = await Client.connect(nd.url)
            r = await e.request("subscribe", channel="c2", since={origin: 10})
            assert r["recovered"] is want, nd
            assert [x["data"] for x in await e.events(3)] == [10, 14, 18]
    run(go())


def test_restarted_node_is_not_ready_on_heartbeats_queued_while_it_was_down(node_factory):
    """While a node is down its peers' push sockets keep their first heartbeats to it queued;
    if a pipe redials before the peer hears the node's HELLO, they arrive first, with
    digests from before what was published later. Readiness must wait for a heartbeat that
    knows the node's new life (gossip.c update_ready). The test opens that window (a
    trickle, then a bulk to catch up); it does not force NNG's redial to win the race."""
    n1, n2, n3 = make_cluster(node_factory, extra=("--cluster-suspect-timeout", "3s",
                                                   "--cluster-dead-timeout", "8s"))
    n3.kill9()
    for i in range(30):  # 3 s: longer than the 16 heartbeats (1.6 s) queued for n3
        publish(n1, "t", i)
        publish(n2, "t", i)
        time.sleep(0.1)
    big = "x" * 4000
    for i in range(600):  # then enough that catching up takes a while
        publish(n1 if i % 2 else n2, f"b{i % 7}", {"i": i, "p": big})
    n3.start()  # returns once /readyz says 200: joined and caught up
    assert origins(n3) == origins(n1) == origins(n2)


def test_paused_node_is_marked_dead_then_rejoins_and_converges(node_factory):
    n1, n2, n3 = make_cluster(node_factory)
    n3.proc.send_signal(signal.SIGSTOP)
    try:
        assert wait_until(lambda: any(m["node"] == "n3" and m["state"] == "dead"
                                      for m in stats(n1)["cluster"]["members"]))
        for i in range(100):
            publish(n1 if i % 2 else n2, "p", i)
    finally:
        n3.proc.send_signal(signal.SIGCONT)
    assert wait_until(lambda: any(m["node"] == "n3" and m["state"] == "alive"
                                  for m in stats(n1)["cluster"]["members"]))
    assert wait_until(lambda: origins(n1) == origins(n2) == origins(n3))


def test_quorum_publishes_refused_without_a_majority(node_factory):
    n1, n2, n3 = make_cluster(node_factory, durability="quorum")
    publish(n1, "q", "ok with three")
    n2.kill9()
    publish(n1, "q", "ok with two of three")
    n3.kill9()
    assert wait_until(lambda: sum(m["state"] in ("alive", "self")
                                  for m in stats(n1)["cluster"]["members"]) == 1)
    status, body = n1.post("/api/publish", {"channel": "q", "data": "alone"})
    assert status == 503 and "quorum" in body
    n2.start()
    assert wait_until(lambda: n1.post("/api/publish", {"channel": "q", "data": "back"})[0] == 200)


def test_two_nodes_with_one_name_report_the_conflict(node_factory):
    """A copy-pasted --node-id: each node logs the other's address and counts the
    conflict in /stats and /metrics, and neither lists the other as a member."""
    cports = [free_port(), free_port()]
    peers = ",".join(f"tcp://127.0.0.1:{p}" for p in cports)
    nodes = [node_factory("--node-id", "twin", "--cluster-listen", f"tcp://127.0.0.1:{p}",
                          "--peers", peers, *FAST) for p in cports]
    for nd in nodes:
        nd.start_async()
    for nd in nodes:
        nd.wait_ready()
    for nd, other in ((nodes[0], cports[1]), (nodes[1], cports[0])):
        assert wait_until(lambda: stats(nd)["cluster"]["name_conflicts"] > 0, timeout=10)
        assert wait_until(lambda: f"127.0.0.1:{other}" in nd.read_log(), timeout=5)
        line = [ln for ln in nd.read_log().splitlines() if "cluster-name" in ln]
        assert line and "twin" in line[0] and f"127.0.0.1:{other}" in line[0], line
        assert [m for m in stats(nd)["cluster"]["members"] if m["state"] == "alive"] == []
        status, body = nd.get("/metrics")
        assert status == 200
        assert re.search(r"^tidewire_cluster_name_conflicts_total [1-9]", body, re.M)


def test_garbage_on_the_cluster_port_does_not_stop_peers_joining(node_factory):
    """nng#1518: peers dropping mid-handshake must not stall the listener."""
    n1, n2, n3 = make_cluster(node_factory)
    header = b"\x00SP\x00\x00\x51\x00\x00"
    for i in range(200):
        s = socket.create_connection(("127.0.0.1", n1.cport), timeout=2)
        if i % 3 == 0:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.sendall(header[: i % 8])
        s.close()
    s = socket.create_connection(("127.0.0.1", n1.cport), timeout=2)
    s.sendall(os.urandom(4096))  # and plain garbage
    s.close()
    n3.kill9()
    n3.start()  # must rejoin through n1's listener (and the others')
    p = publish(n3, "g", "after the garbage")
    assert wait_until(lambda: origins(n1).get(origin_of(p)) == seq_of(p))
    assert stats(n1)["cluster"]["bad_messages"] >= 0


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_rolling_restart_behind_haproxy_loses_nothing(node_factory, tmp_path):
    """A subscriber (the C SDK through tidewire-cli) stays connected through haproxy while
    all three nodes restart one at a time; every acknowledged event is printed once."""
    nodes = make_cluster(node_factory)
    front = free_port()
    cfg = open(os.path.join(ROOT, "deploy/haproxy/haproxy.cfg")).read()
    cfg = cfg.replace("bind 127.0.0.1:8080", f"bind 127.0.0.1:{front}")
    for i, nd in enumerate(nodes):
        cfg = cfg.replace(f"127.0.0.1:808{i + 1} check", f"127.0.0.1:{nd.port} check")
    cfg = cfg.replace("log stdout format raw local0 notice", "")
    cfg = cfg.replace("maxconn 200000", "maxconn 2000")  # within this machine's FD limit
    cfg_path = tmp_path / "haproxy.cfg"
    cfg_path.write_text(cfg)
    hap = subprocess.Popen(["haproxy", "-f", str(cfg_path), "-db"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    sub = None
    try:
        url = f"ws://127.0.0.1:{front}/ws"
        http = f"http://127.0.0.1:{front}"
        assert wait_until(lambda: subprocess.run(["curl", "-sf", f"{http}/readyz"],
                                                 capture_output=True).returncode == 0)
        sub = subprocess.Popen([CLI, "sub", "roll", "--url", url, "--since", "{}"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        acked = []

        def pub_via_lb(i):
            for _ in range(100):  # retried until acknowledged, like a back end would
                p = subprocess.run(["curl", "-sf", "-XPOST", f"{http}/api/publish", "-d",
                                    json.dumps({"channel": "roll", "data": i})],
                                   capture_output=True, text=True)
                if p.returncode == 0:
                    return json.loads(p.stdout)["pos"]
                time.sleep(0.05)
            raise AssertionError("publish never acknowledged")

        n = 0
        for nd in nodes:
            for _ in range(15):
                acked.append(pub_via_lb(n))
                n += 1
            nd.stop(signal.SIGTERM)
            for _ in range(15):
                acked.append(pub_via_lb(n))
                n += 1
            nd.start()
        for _ in range(15):
            acked.append(pub_via_lb(n))
            n += 1
        got = []
        deadline = time.time() + 60
        while len(got) < len(acked) and time.time() < deadline:
            line = sub.stdout.readline()
            if not line:
                break
            got.append(json.loads(line))
        assert sorted(e["pos"] for e in got) == sorted(acked)
        assert len({e["pos"] for e in got}) == len(got)
    finally:
        if sub:
            sub.terminate()
            sub.wait(10)
        hap.terminate()
        hap.wait(10)


def test_chaos_short_run_loses_nothing():
    """The at-least-once checker, briefly: kills, pauses, drains and dropped clients."""
    env = dict(os.environ)
    p = subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "tests/chaos/checker.py"),
                        "--seconds", os.environ.get("TW_CHAOS_SECONDS", "30"), "--settle", "60",
                        "--seed", "7"], capture_output=True, text=True, timeout=600, env=env)
    print(p.stdout[-3000:], p.stderr[-3000:])
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    report = json.loads(p.stdout.strip().splitlines()[-1])
    assert report["losses"] == 0 and report["events_acked"] > 100 and report["faults"] > 3


def test_presence_is_cluster_wide_and_a_dead_nodes_members_go(node_factory):
    ns = ["--namespace", "room: presence=on join-leave=on"]
    n1, n2, n3 = make_cluster(node_factory, extra=ns)

    async def go():
        a = await Client.connect(n1.url)
        await a.request("subscribe", channel="room:1")
        b = await Client.connect(n2.url)
        await b.request("subscribe", channel="room:1")
        b_conn = (await b.request("connect"))["session"]
        j = await a.wait(lambda m: m.get("op") == "join", timeout=10)
        assert j["channel"] == "room:1" and j["node"] == "n2" and j["conn"] == b_conn

        def members_on(node):
            status, body = node.get("/api/presence?channel=room:1")
            assert status == 200, body
            return sorted(m["node"] for m in json.loads(body)["members"])

        assert wait_until(lambda: members_on(n3) == ["n1", "n2"])
        p = await a.request("presence", channel="room:1")
        assert sorted(m["node"] for m in p["members"]) == ["n1", "n2"]
        n2.kill9()  # within the failure-detection timeout its member goes, with a leave
        lv = await a.wait(lambda m: m.get("op") == "leave", timeout=10)
        assert lv["node"] == "n2" and lv["conn"] == b_conn
        # each node detects the death itself, within its failure-detection timeout
        assert wait_until(lambda: members_on(n1) == ["n1"] and members_on(n3) == ["n1"])
        await a.request("unsubscribe", channel="room:1")
        assert wait_until(lambda: members_on(n3) == [])
    run(go())
    n2.start()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl command not installed")
def test_nodes_replicate_over_mutual_tls(node_factory, tmp_path, monkeypatch):
    """tls+tcp:// between nodes with certificates from a cluster CA made here; a node whose
    certificate another CA signed never joins."""
    # On sanitizer builds: NNG 1.5.2's TLS transport leaks its own pipe state (only these
    # nodes get the suppressions; every other test checks leaks in full).
    monkeypatch.setenv("LSAN_OPTIONS", "suppressions=" + os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "lsan-nng-tls.supp"))
    def sh(*cmd):
        subprocess.run(cmd, check=True, capture_output=True, cwd=tmp_path)

    def make_ca(name):
        sh("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
           "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN={name}")

    def make_cert(name, ca):
        sh("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
           "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        sh("openssl", "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
           "-CAcreateserial", "-out", f"{name}.pem", "-days", "2")

    make_ca("ca")
    make_ca("rogue-ca")
    for n in ("n1", "n2"):
        make_cert(n, "ca")
    make_cert("n3", "rogue-ca")
    cports = [free_port() for _ in range(3)]
    peers = ",".join(f"tls+tcp://127.0.0.1:{p}" for p in cports[:2])

    def tls_node(i, ca):
        return node_factory("--node-id", f"n{i + 1}", "--cluster-listen", f"tls+tcp://127.0.0.1:{cports[i]}",
                            "--peers", peers, "--cluster-tls-cert", str(tmp_path / f"n{i + 1}.pem"),
                            "--cluster-tls-key", str(tmp_path / f"n{i + 1}.key"),
                            "--cluster-tls-ca", str(tmp_path / f"{ca}.pem"), *FAST)

    n1, n2 = tls_node(0, "ca"), tls_node(1, "ca")
    n1.start_async()
    n2.start_async()
    n1.wait_ready()
    n2.wait_ready()
    p = publish(n1, "secure", "over tls")
    assert wait_until(lambda: origins(n2).get(origin_of(p)) == seq_of(p))
    rogue = tls_node(2, "rogue-ca")
    rogue.start_async()
    time.sleep(3)
    names = [m["node"] for m in stats(n1)["cluster"]["members"] if m["state"] in ("alive", "self")]
    assert "n3" not in names
