#!/usr/bin/python3
"""At-least-once checker: publishers and subscribers against a 3-node tidewire cluster while
nodes are killed, restarted and paused and client connections are dropped.

Every subscriber reconnects to a random node and resumes from its cursor, dropping
duplicates exactly as the SDKs do (seq <= cursor[origin]). At the end it checks that every
acknowledged publish reached every subscriber, that each origin's events arrived in seq
order, and that nothing was delivered twice after de-duplication. It prints what it checked
and exits 1 on any loss.

    tests/chaos/checker.py --seconds 60 [--bin build/bin/tidewire] [--seed N]
"""
import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import websockets


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    def __init__(self, name, data, port, cport, peers, binary, extra):
        self.name, self.data, self.port, self.cport = name, data, port, cport
        self.peers, self.binary, self.extra = peers, binary, extra
        self.proc = None
        self.paused = False

    @property
    def url(self):
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self):
        log = open(self.data + ".log", "ab")
        self.proc = subprocess.Popen(
            [self.binary, "--node-id", self.name, "--listen", f"127.0.0.1:{self.port}",
             "--data", self.data, "--cluster-listen", f"tcp://127.0.0.1:{self.cport}",
             "--peers", self.peers, *self.extra], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.paused = False

    def alive(self):
        return self.proc is not None and self.proc.poll() is None and not self.paused

    def ready(self):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=1) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def kill9(self):
        if self.proc and self.proc.poll() is None:
            if self.paused:
                self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()

    def pause(self):
        if self.alive():
            self.proc.send_signal(signal.SIGSTOP)
            self.paused = True

    def resume(self):
        if self.proc and self.paused:
            self.proc.send_signal(signal.SIGCONT)
            self.paused = False

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.resume()
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return "hung"
        return self.proc.returncode if self.proc else None


class Subscriber:
    """Subscribes to every channel, reconnects to a random node, resumes exactly."""

    def __init__(self, idx, nodes, channels):
        self.idx, self.nodes, self.channels = idx, nodes, channels
        self.cursor = {ch: {} for ch in channels}
        self.got = {ch: [] for ch in channels}  # positions delivered after de-duplication
        self.order_errors = 0
        self.dups_dropped = 0
        self.reconnects = 0
        self.ws = None
        self.ready = asyncio.Event()

    async def run(self, stop):
        while not stop.is_set():
            node = random.choice([n for n in self.nodes if n.alive()] or self.nodes)
            try:
                async with websockets.connect(node.url, open_timeout=3, close_timeout=1,
                                              ping_interval=None, max_size=64 << 20) as ws:
                    self.ws = ws
                    for i, ch in enumerate(self.channels):
                        await ws.send(json.dumps({"op": "subscribe", "id": i, "channel": ch,
                                                  "since": self.cursor[ch]}))
                    subscribed = 0
                    while not stop.is_set():
                        try:
                            raw = await asyncio.wait_for(ws.recv(), 5)
                        except asyncio.TimeoutError:
                            break  # node paused: go elsewhere
                        m = json.loads(raw)
                        if m["op"] == "subscribed":
                            cur = self.cursor[m["channel"]]
                            for o, s in m["cursor"].items():
                                cur[o] = max(cur.get(o, 0), s)
                            subscribed += 1
                            if subscribed == len(self.channels):
                                self.ready.set()
                        elif m["op"] == "event":
                            self.deliver(m)
                        elif m["op"] == "error":
                            break
            except (OSError, websockets.WebSocketException, asyncio.TimeoutError):
                pass
            self.ws = None
            self.reconnects += 1
            await asyncio.sleep(random.uniform(0.05, 0.3))

    def deliver(self, m):
        origin, seq = m["pos"].rsplit(":", 1)
        seq = int(seq)
        cur = self.cursor[m["channel"]]
        last = cur.get(origin, 0)
        if seq <= last:
            self.dups_dropped += 1
            return
        # Per-origin order: a later seq may skip (other channels' seqs), never go back.
        self.got[m["channel"]].append(m["pos"])
        cur[origin] = seq

    def drop_connection(self):
        if self.ws is not None and self.ws.transport is not None:
            self.ws.transport.abort()


async def publisher(idx, nodes, channels, acked, stop, counts):
    """Publishes over the HTTP API to random nodes; records acknowledged positions."""
    loop = asyncio.get_running_loop()
    i = 0
    while not stop.is_set():
        node = random.choice([n for n in nodes if n.alive()] or nodes)
        ch = random.choice(channels)
        body = json.dumps({"channel": ch, "data": {"p": idx, "i": i}}).encode()

        def post():
            req = urllib.request.Request(f"http://127.0.0.1:{node.port}/api/publish", data=body,
                                         method="POST", headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=3) as r:
                    return json.loads(r.read())["pos"]
            except (urllib.error.URLError, OSError, ValueError):
                return None

        pos = await loop.run_in_executor(None, post)
        if pos:
            acked.append((ch, pos))
            counts["acked"] += 1
        else:
            counts["failed"] += 1  # not acknowledged: may or may not exist; never counted lost
        i += 1
        await asyncio.sleep(random.uniform(0, 0.01))


async def chaos(nodes, subs, stop, faults, rng):
    while not stop.is_set():
        await asyncio.sleep(rng.uniform(1.0, 3.0))
        if stop.is_set():
            break
        kind = rng.choice(["kill", "pause", "drop", "drain"])
        n = rng.choice(nodes)
        if kind == "kill":
            n.kill9()
            faults.append(f"kill -9 {n.name}")
            await asyncio.sleep(rng.uniform(0.2, 1.5))
            n.start()
        elif kind == "pause":
            n.pause()
            faults.append(f"SIGSTOP {n.name}")
            await asyncio.sleep(rng.uniform(0.5, 4.0))
            n.resume()
        elif kind == "drain":
            rc = n.stop()
            faults.append(f"SIGTERM {n.name} (exit {rc})")
            n.start()
        else:
            s = rng.choice(subs)
            s.drop_connection()
            faults.append(f"drop subscriber {s.idx}")


async def main_async(args):
    rng = random.Random(args.seed)
    random.seed(args.seed)
    work = tempfile.mkdtemp(prefix="tw-chaos-", dir=args.tmp)
    ports = [(free_port(), free_port()) for _ in range(3)]
    peers = ",".join(f"tcp://127.0.0.1:{c}" for _, c in ports)
    extra = ["--durability", args.durability, "--log-level", "warn"]
    nodes = [Node(f"n{i + 1}", os.path.join(work, f"n{i + 1}"), p, c, peers, args.bin, extra)
             for i, (p, c) in enumerate(ports)]
    for n in nodes:
        n.start()
    deadline = time.time() + 30
    while not all(n.ready() for n in nodes):
        if time.time() > deadline:
            raise SystemExit("cluster did not become ready")
        await asyncio.sleep(0.1)

    channels = [f"chaos:{i}" for i in range(args.channels)]
    stop = asyncio.Event()
    subs = [Subscriber(i, nodes, channels) for i in range(args.subscribers)]
    sub_tasks = [asyncio.create_task(s.run(stop)) for s in subs]
    await asyncio.wait_for(asyncio.gather(*(s.ready.wait() for s in subs)), 30)

    acked, counts, faults = [], {"acked": 0, "failed": 0}, []
    pub_stop = asyncio.Event()
    pubs = [asyncio.create_task(publisher(i, nodes, channels, acked, pub_stop, counts))
            for i in range(args.publishers)]
    chaos_task = asyncio.create_task(chaos(nodes, subs, pub_stop, faults, rng))
    await asyncio.sleep(args.seconds)
    pub_stop.set()
    await asyncio.gather(*pubs, chaos_task)
    for n in nodes:  # heal everything and let the cluster converge
        n.resume()
        if n.proc.poll() is not None:
            n.start()
    want = {}
    for ch, pos in acked:
        want.setdefault(ch, set()).add(pos)

    def missing():
        return sum(len(want.get(ch, set()) - set(s.got[ch])) for s in subs for ch in channels)

    settle = time.time() + args.settle
    while time.time() < settle and missing():
        await asyncio.sleep(0.5)
    stop.set()
    for s in subs:
        s.drop_connection()
    await asyncio.gather(*sub_tasks, return_exceptions=True)

    lost = missing()
    dups = 0
    order = 0
    for s in subs:
        for ch in channels:
            seen = s.got[ch]
            dups += len(seen) - len(set(seen))
            last = {}
            for pos in seen:
                o, q = pos.rsplit(":", 1)
                if int(q) <= last.get(o, 0):
                    order += 1
                last[o] = int(q)
    deliveries = sum(len(s.got[ch]) for s in subs for ch in channels)
    statuses = [n.stop() for n in nodes]
    report = {
        "seconds": args.seconds, "seed": args.seed, "durability": args.durability,
        "events_acked": counts["acked"], "publishes_failed": counts["failed"],
        "subscribers": len(subs), "deliveries": deliveries,
        "duplicates_dropped_by_client": sum(s.dups_dropped for s in subs),
        "reconnects": sum(s.reconnects for s in subs), "faults": len(faults),
        "losses": lost, "duplicates": dups, "order_errors": order,
        "node_exit": statuses,
    }
    print("faults injected:", "; ".join(faults) or "none")
    print(json.dumps(report))
    ok = lost == 0 and dups == 0 and order == 0 and counts["acked"] > 0
    if ok and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"logs and data kept in {work}", file=sys.stderr)
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap.add_argument("--bin", default=os.environ.get("TIDEWIRE_BIN", os.path.join(root, "build/bin/tidewire")))
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--settle", type=float, default=60, help="time allowed to converge after the faults stop")
    ap.add_argument("--publishers", type=int, default=4)
    ap.add_argument("--subscribers", type=int, default=4)
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--durability", default="quorum", choices=["local", "quorum"])
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--tmp", default=os.environ.get("TW_TEST_TMP") or None)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    sys.exit(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
