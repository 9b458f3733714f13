"""Crash safety: SIGKILL the node in the middle of heavy publishing, many times in a row.

After each kill, before the restart, the environment must check clean (mdb_stat and a full
mdb_dump walk every page); after the restart every acknowledged event must be in the log at
the position its ack named, no event (acknowledged or not) may appear twice, and positions
must never repeat: the seqs of the log are exactly 1..N.

Cycles: SOAK_CYCLES (default 20, what `make test` runs); `make soak` runs 200.
"""
import asyncio
import json
import os
import random
import subprocess
import time
import urllib.parse

import websockets

from conftest import run, Client, origin_of, seq_of

CYCLES = int(os.environ.get("SOAK_CYCLES", "20"))
CONNS = 6
INFLIGHT = 32
CHANNELS = ("crash:a", "crash:b")


def env_checks_clean(data):
    for cmd in (["mdb_stat", "-a", data], ["mdb_dump", "-a", data]):
        p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                           timeout=120)
        assert p.returncode == 0, f"{' '.join(cmd)}: {p.stderr}"


def read_log(node, channel):
    """Every event of a channel through GET /api/history, page by page."""
    out, since = [], {}
    while True:
        q = urllib.parse.urlencode({"channel": channel, "since": json.dumps(since), "limit": 1000})
        status, body = node.get("/api/history?" + q)
        assert status == 200, body
        h = json.loads(body)
        out += h["events"]
        since = h["next"]
        if not h["more"]:
            return out


def quiet_snapshot(node):
    """Every channel's log and the store's /stats with no retention pass between them.
    After a restart the first passes trim what was published past the limit since the last
    one, so a log read a moment before /stats can hold more than /stats counts; a snapshot
    is taken again until the trim counters are the same before and after the reads."""
    for _ in range(50):
        before = node.stats()["store"]
        logs = {ch: read_log(node, ch) for ch in CHANNELS}
        after = node.stats()["store"]
        if (before["retention_trimmed"], before["events_kept"]) == \
                (after["retention_trimmed"], after["events_kept"]):
            return logs, after
        time.sleep(0.05)
    raise AssertionError("retention never left the log still long enough to read it")


async def publish_until_killed(node, cycle, acked, kill_after):
    """CONNS connections, INFLIGHT publishes each in flight; every ack is recorded as
    (unique data id -> pos). SIGKILL after kill_after seconds."""
    clients = [await Client.connect(node.url) for _ in range(CONNS)]

    async def one(k, c):
        i = 0
        try:
            sent = {}
            while True:
                while len(sent) < INFLIGHT:
                    uid = f"{cycle}-{k}-{i}"
                    await c.send({"op": "publish", "id": i, "channel": CHANNELS[i % 2], "data": uid})
                    sent[i] = uid
                    i += 1
                m = await c.wait(lambda m: m.get("op") in ("ack", "error"), timeout=10)
                uid = sent.pop(m["id"])
                assert m["op"] == "ack", m
                acked[uid] = m["pos"]
        except (websockets.ConnectionClosed, ConnectionError, asyncio.TimeoutError, OSError):
            return

    before = len(acked)
    tasks = [asyncio.create_task(one(k, c)) for k, c in enumerate(clients)]
    # Kill in the middle of publishing: once acks flow (a loaded machine may take a while
    # to get going), after a random delay.
    deadline = time.monotonic() + 20
    while len(acked) == before and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    await asyncio.sleep(kill_after)
    node.kill9()
    await asyncio.gather(*tasks)


def test_sigkill_during_heavy_publishing(node_factory):
    node = node_factory().start()
    rng = random.Random(int(os.environ.get("SOAK_SEED", "3")))
    acked = {}  # data id -> pos
    for cycle in range(CYCLES):
        before = len(acked)
        run(publish_until_killed(node, cycle, acked, rng.uniform(0.15, 0.5)))
        assert len(acked) > before, f"cycle {cycle}: nothing was acknowledged"
        env_checks_clean(node.data)
        node.start()

        seen_ids, seqs, origin = {}, [], None
        for ch in CHANNELS:
            for e in read_log(node, ch):
                assert e["data"] not in seen_ids, f"cycle {cycle}: {e['data']} appears twice"
                seen_ids[e["data"]] = e["pos"]
                seqs.append(seq_of(e["pos"]))
                origin = origin or origin_of(e["pos"])
        missing = [uid for uid, pos in acked.items() if seen_ids.get(uid) != pos]
        assert not missing, f"cycle {cycle}: acknowledged but lost or moved: {missing[:5]}"
        seqs.sort()
        assert seqs == list(range(1, len(seqs) + 1)), f"cycle {cycle}: positions repeat or skip"
        assert {origin_of(p) for p in seen_ids.values()} == {origin}
        st = node.stats()["store"]
        assert st["events_kept"] == len(seqs)
        assert st["origins"][0]["last_seq"] == len(seqs)
    assert node.stop() == 0
    env_checks_clean(node.data)


def test_sigkill_while_retention_trims(node_factory):
    """The same kills with retention trimming all along (count 300 per channel, passes every
    20 ms): what is kept is exactly each channel's newest events, with no duplicate and no
    repeated position, and the kept counts, the oldest kept seq and the trimmed marks,
    written in the same transactions as the deletions, agree with the log after every
    restart."""
    keep = 300
    node = node_factory("--retention-max-count", str(keep), "--retention-interval", "20ms").start()
    rng = random.Random(int(os.environ.get("SOAK_SEED", "3")) + 1)
    acked = {}
    for cycle in range(max(4, CYCLES // 3)):
        run(publish_until_killed(node, cycle, acked, rng.uniform(0.15, 0.5)))
        env_checks_clean(node.data)
        node.start()
        logs, st = quiet_snapshot(node)
        ids, seqs = set(), []
        for ch, events in logs.items():
            for e in events:
                assert e["data"] not in ids, f"cycle {cycle}: {e['data']} appears twice"
                ids.add(e["data"])
                seqs.append(seq_of(e["pos"]))
            # The channel's newest events are kept, acknowledged ones at their positions.
            got = [seq_of(e["pos"]) for e in events]
            assert got == sorted(got)
        assert len(seqs) == len(set(seqs)), f"cycle {cycle}: a position repeats"
        # Every acknowledged event at or after its channel's oldest kept one is there, at
        # the position its ack named: trimming took only the oldest.
        for uid, pos in acked.items():
            ch = CHANNELS[int(uid.rsplit("-", 1)[1]) % 2]
            kept = logs[ch]
            if kept and seq_of(pos) >= seq_of(kept[0]["pos"]):
                assert uid in ids, f"cycle {cycle}: acknowledged {uid} at {pos} lost"
        where = {e["data"]: e["pos"] for events in logs.values() for e in events}
        assert all(where[uid] == pos for uid, pos in acked.items() if uid in where), \
            f"cycle {cycle}: an event moved"
        assert st["events_kept"] == len(seqs), (st["events_kept"], len(seqs))
        assert st["origins"][0]["events_kept"] == len(seqs)
        assert st["origins"][0]["first_seq"] == min(seqs)
        # Resumes are told the truth on both sides: a cursor that saw nothing of a trimmed
        # channel is not recovered, one at its newest kept event is.
        for ch, events in logs.items():
            published = sum(1 for uid in acked if CHANNELS[int(uid.rsplit("-", 1)[1]) % 2] == ch)
            if published <= keep or not events:
                continue
            origin = origin_of(events[0]["pos"])
            for cur, want in ((0, False), (seq_of(events[-1]["pos"]), True)):
                q = urllib.parse.urlencode({"channel": ch, "limit": 1,
                                            "since": json.dumps({origin: cur})})
                h = json.loads(node.get("/api/history?" + q)[1])
                assert h["recovered"] is want, (ch, cur, h)
    assert node.stop() == 0
    env_checks_clean(node.data)
