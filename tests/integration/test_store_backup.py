"""Backup of a running node's log with `mdb_copy -c` (docs/operations.md, "Backup"): taken
while publishes keep arriving, the copy is consistent (mdb_stat checks it clean), holds every
event acknowledged before the copy began, and is a prefix of the live log with the same
positions; a node started on it serves it."""
import json
import os
import subprocess
import threading
import urllib.parse

from conftest import TMP


def read_log(node, channel):
    out, since = [], {}
    while True:
        q = urllib.parse.urlencode({"channel": channel, "since": json.dumps(since), "limit": 1000})
        status, body = node.get("/api/history?" + q)
        assert status == 200, body
        h = json.loads(body)
        out += [(e["pos"], e["data"]) for e in h["events"]]
        since = h["next"]
        if not h["more"]:
            return out


def test_mdb_copy_of_a_running_node(node_factory, tmp_path):
    live = node_factory().start()
    before = []
    for i in range(300):
        status, body = live.post("/api/publish", {"channel": "b:1", "data": i})
        assert status == 200, body
        before.append(json.loads(body)["pos"])

    stop = threading.Event()

    def keep_publishing():
        i = 300
        while not stop.is_set():
            live.post("/api/publish", {"channel": "b:1", "data": i})
            i += 1

    t = threading.Thread(target=keep_publishing)
    t.start()
    try:
        backup = str(tmp_path / "backup")
        os.mkdir(backup, 0o700)
        p = subprocess.run(["mdb_copy", "-c", live.data, backup], capture_output=True, text=True,
                           timeout=120)
        assert p.returncode == 0, p.stderr
    finally:
        stop.set()
        t.join()
    p = subprocess.run(["mdb_stat", "-a", backup], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr

    live_log = read_log(live, "b:1")
    assert live.stop() == 0
    copy = node_factory(data=backup).start()
    copied = read_log(copy, "b:1")
    assert [pos for pos, _ in copied[: len(before)]] == before
    assert copied == live_log[: len(copied)]
    assert copy.stats()["store"]["events_kept"] == len(copied)
