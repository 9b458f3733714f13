"""Reader slots: a thousand clients replaying at once share the loop's one LMDB reader, so
they cannot exhaust the reader table; `mdb_stat -r` shows the table while they replay."""
import asyncio
import re
import subprocess

from conftest import run, Client

CLIENTS = 1000
EVENTS = 60


def reader_slots(data):
    """Live entries of the LMDB reader table (mdb_stat -r): pid lines under the header."""
    p = subprocess.run(["mdb_stat", "-r", data], capture_output=True, text=True, timeout=30)
    # mdb_stat -r exits 1 after printing the table (0.9.24 returns the printer's count).
    assert "Reader Table Status" in p.stdout, p.stdout + p.stderr
    return [l for l in p.stdout.splitlines() if re.match(r"^\s*\d+\s+[0-9a-f]+\s+(\d+|-)\s*$", l)]


def test_thousand_clients_replaying_share_one_reader(node_factory):
    # Small replay chunks: every client needs several reads, interleaved with the others'.
    node = node_factory("--replay-chunk-events", "7").start()
    pos = []
    for i in range(EVENTS):
        status, body = node.post("/api/publish", {"channel": "replay:1", "data": i})
        assert status == 200, body

    async def go():
        clients = []
        for i in range(0, CLIENTS, 100):  # connect in waves: the accept backlog is finite
            clients += await asyncio.gather(*(Client.connect(node.url) for _ in range(100)))
        replies = await asyncio.gather(*(c.request("subscribe", channel="replay:1", since={})
                                         for c in clients))
        assert all(r["op"] == "subscribed" and r["recovered"] is True for r in replies)
        slots_during = reader_slots(node.data)
        got = await asyncio.gather(*(c.events(EVENTS, timeout=60) for c in clients))
        for evs in got:
            assert [e["data"] for e in evs] == list(range(EVENTS))
        return slots_during

    slots = run(go())
    # This process holds at most the loop's reader (plus a slot LMDB may keep for a
    # finished txn); mdb_stat's own read is not listed once it exits.
    assert len(slots) <= 2, slots
    st = node.stats()
    assert st["events"]["replayed"] >= CLIENTS * EVENTS
    assert st["resumes"]["recovered"] >= CLIENTS
