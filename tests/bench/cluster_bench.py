#!/usr/bin/python3
"""Cluster figures for docs/benchmarks.md (make bench-cluster):

1. publish -> deliver latency, subscriber on the publisher's node vs on another node;
2. replication throughput: a node that was down catches up N events (events/s);
3. failover: kill -9 of the node C clients are on; time until every one of them has
   reconnected to another node and been resubscribed with its cursor.

Three nodes on loopback with the default cluster timings; prints one JSON line per figure.
Latency is measured by the client (publisher and subscriber in one process, one clock).
"""
import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request

import websockets

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    def __init__(self, name, work, peers, cport, binary):
        self.name, self.binary = name, binary
        self.port, self.cport = free_port(), cport
        self.data = os.path.join(work, name)
        self.peers = peers
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [self.binary, "--node-id", self.name, "--listen", f"127.0.0.1:{self.port}",
             "--data", self.data, "--cluster-listen", f"tcp://127.0.0.1:{self.cport}",
             "--peers", self.peers, "--log-level", "warn"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def ready(self):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def stats(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/stats", timeout=5) as r:
            return json.loads(r.read())

    @property
    def url(self):
        return f"ws://127.0.0.1:{self.port}/ws"


def wait(pred, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(p / 100 * len(v)))]


async def latency(pub_node, sub_node, rate, seconds):
    sub = await websockets.connect(sub_node.url, max_size=1 << 24, ping_interval=None)
    await sub.send(json.dumps({"op": "subscribe", "id": 1, "channel": "lat"}))
    await sub.recv()
    pub = await websockets.connect(pub_node.url, max_size=1 << 24, ping_interval=None)
    lat = []
    n = int(rate * seconds)

    async def reader():
        while len(lat) < n:
            m = json.loads(await sub.recv())
            if m.get("op") == "event":
                lat.append((time.monotonic_ns() - m["data"]["t"]) / 1e6)

    async def acks():
        for _ in range(n):
            await pub.recv()

    rt = asyncio.create_task(reader())
    at = asyncio.create_task(acks())
    t0 = time.monotonic()
    for i in range(n):
        await pub.send(json.dumps({"op": "publish", "channel": "lat",
                                   "data": {"t": time.monotonic_ns(), "pad": "x" * 60}}))
        delay = t0 + (i + 1) / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    await asyncio.wait_for(asyncio.gather(rt, at), 60)
    await sub.close()
    await pub.close()
    return {"count": len(lat), "p50_ms": round(statistics.median(lat), 3),
            "p99_ms": round(pct(lat, 99), 3), "max_ms": round(max(lat), 3)}


async def failover(nodes, clients):
    victim, others = nodes[0], nodes[1:]
    resubscribed = []
    ready = asyncio.Event()
    connected = 0

    async def client(i):
        nonlocal connected
        cursor = {}
        ws = await websockets.connect(victim.url, ping_interval=None)
        await ws.send(json.dumps({"op": "subscribe", "id": 1, "channel": f"f{i % 10}"}))
        r = json.loads(await ws.recv())
        cursor.update(r["cursor"])
        connected += 1
        if connected == clients:
            ready.set()
        try:
            while True:
                await ws.recv()
        except websockets.ConnectionClosed:
            pass
        # what the SDKs do on an abnormal close: reconnect at once, elsewhere, and resume
        target = others[i % len(others)]
        ws = await websockets.connect(target.url, ping_interval=None)
        await ws.send(json.dumps({"op": "subscribe", "id": 1, "channel": f"f{i % 10}",
                                  "since": cursor}))
        r = json.loads(await ws.recv())
        assert r["op"] == "subscribed", r
        resubscribed.append(time.monotonic())
        await ws.close()

    tasks = [asyncio.create_task(client(i)) for i in range(clients)]
    await asyncio.wait_for(ready.wait(), 60)
    t_kill = time.monotonic()
    victim.proc.send_signal(signal.SIGKILL)
    await asyncio.wait_for(asyncio.gather(*tasks), 60)
    victim.proc.wait()
    return {"clients": clients, "all_resumed_s": round(max(resubscribed) - t_kill, 3),
            "median_resumed_s": round(statistics.median(resubscribed) - t_kill, 3)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "build/bin/tidewire"))
    ap.add_argument("--cli", default=os.path.join(ROOT, "build/bin/tidewire-cli"))
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--catchup-seconds", type=float, default=10)
    ap.add_argument("--clients", type=int, default=1000)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="tw-cbench-")
    cports = [free_port() for _ in range(3)]
    peers = ",".join(f"tcp://127.0.0.1:{p}" for p in cports)
    nodes = [Node(f"n{i + 1}", work, peers, cports[i], args.bin) for i in range(3)]
    try:
        for n in nodes:
            n.start()
        assert wait(lambda: all(n.ready() for n in nodes)), "cluster not ready"
        same = asyncio.run(latency(nodes[0], nodes[0], args.rate, args.seconds))
        print(json.dumps({"figure": "latency_same_node", "rate": args.rate, **same}))
        cross = asyncio.run(latency(nodes[0], nodes[1], args.rate, args.seconds))
        print(json.dumps({"figure": "latency_cross_node", "rate": args.rate, **cross}))

        # Replication: n3 down while n1 takes publishes; then n3 catches up.
        nodes[2].proc.send_signal(signal.SIGKILL)
        nodes[2].proc.wait()
        subprocess.run([args.cli, "bench", "publish", "--url", nodes[0].url, "--inflight", "256",
                        "--conns", "8", "--size", "100", "--duration", str(args.catchup_seconds)],
                       capture_output=True, timeout=120)
        origin = nodes[0].stats()["node"]
        last = {o["origin"]: o["last_seq"] for o in nodes[0].stats()["store"]["origins"]}[origin]
        t0 = time.monotonic()
        nodes[2].start()
        assert wait(lambda: nodes[2].ready() and {o["origin"]: o["last_seq"] for o in
                    nodes[2].stats()["store"]["origins"]}.get(origin) == last, 300)
        took = time.monotonic() - t0
        print(json.dumps({"figure": "catch_up", "events": last, "seconds": round(took, 3),
                          "events_per_s": round(last / took)}))

        fo = asyncio.run(failover(nodes, args.clients))
        print(json.dumps({"figure": "failover_kill9", **fo}))
    finally:
        for n in nodes:
            if n.proc and n.proc.poll() is None:
                n.proc.send_signal(signal.SIGTERM)
                try:
                    n.proc.wait(30)
                except subprocess.TimeoutExpired:
                    n.proc.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
