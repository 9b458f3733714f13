"""A full log through the real node: the map at its configured maximum, and a disk that is
itself full (a tmpfs of a few MiB mounted by the test). Publishes are refused with a clear
503, the node logs `store-full` and counts it, nothing acknowledged is lost, reads and
replays keep working, and publishing works again by itself once space returns."""
import json
import os
import subprocess
import tempfile
import time

import pytest

from conftest import run, Client, TMP, seq_of

BIG = "x" * 4000


def publish(node, channel, data):
    status, body = node.post("/api/publish", {"channel": channel, "data": data})
    return status, json.loads(body)


def fill_until_refused(node, channel, limit=20000):
    """Publishes until the first refusal; returns the acknowledged positions and it."""
    acked = []
    for _ in range(limit):
        status, body = publish(node, channel, BIG)
        if status != 200:
            return acked, status, body
        acked.append(body["pos"])
    raise AssertionError("the log never filled")


def all_positions(node, channel):
    async def go():
        c = await Client.connect(node.url)
        r = await c.request("subscribe", channel=channel, since={})
        assert r["recovered"] is True
        out = []
        while True:
            try:
                m = await c.wait(lambda m: m.get("op") == "event", timeout=0.7)
            except Exception:
                return out
            out.append(m["pos"])
    return run(go())


def wait_publish_ok(node, channel, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        status, body = publish(node, channel, "small")
        if status == 200:
            return body["pos"]
        time.sleep(0.2)
    raise AssertionError("publishing did not come back")


def test_map_at_its_maximum(node_factory):
    # 1 MiB maximum, starting at 256 KiB: the map grows twice, then refuses. Channels under
    # tmp: age out after 2 s: that is how space returns here, with no operator.
    node = node_factory("--store-map-initial", "256KiB", "--store-map-size", "1MiB",
                        "--retention", "tmp: max-age=2s", "--retention-interval", "200ms").start()
    keep = [publish(node, "keep:1", i)[1]["pos"] for i in range(20)]
    acked, status, body = fill_until_refused(node, "tmp:fill")
    assert status == 503 and "full" in body["error"]
    # WebSocket publishers get the same refusal, as an error reply on an open connection.
    async def ws_refused():
        c = await Client.connect(node.url)
        r = await c.request("publish", channel="tmp:fill", data=BIG)
        assert r["op"] == "error" and r["code"] == 503 and "full" in r["message"]
        pong = await c.request("ping")
        assert pong["op"] == "pong"
    run(ws_refused())

    st = node.stats()["store"]
    assert st["refused_full"] >= 2 and st["map_grows"] >= 2
    # Appends stop at 1 MiB less the 128 KiB kept for retention's deletions.
    assert (1 << 20) - (128 << 10) <= st["map_size_bytes"] <= 1 << 20
    assert "[store-full]" in node.read_log()
    assert "tidewire_store_refused_full_total" in node.get("/metrics")[1]

    # Reads and replays go on; every acknowledged event is there.
    assert all_positions(node, "keep:1") == keep
    got = all_positions(node, "tmp:fill")
    assert got[: len(acked)] == acked or len(got) < len(acked)  # may already be aging out
    # Space returns as tmp: ages out; publishing works again without a restart.
    pos = wait_publish_ok(node, "keep:1")
    assert seq_of(pos) > seq_of(acked[-1])
    assert all_positions(node, "keep:1") == keep + [pos]
    assert node.stop() == 0


@pytest.fixture
def small_fs():
    """A 6 MiB tmpfs mounted for the test (needs root and CAP_SYS_ADMIN)."""
    d = tempfile.mkdtemp(prefix="tw-fs-", dir=TMP if os.path.isdir(TMP) else None)
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", d],
                       capture_output=True, text=True)
    if p.returncode != 0:
        os.rmdir(d)
        pytest.skip(f"cannot mount a small tmpfs here ({p.stderr.strip() or 'mount failed'})")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", d], capture_output=True)
        os.rmdir(d)


def test_disk_itself_full(node_factory, small_fs):
    # The map (64 MiB) is far larger than the disk (6 MiB): the disk fills first.
    node = node_factory("--store-map-initial", "64MiB", "--store-map-size", "64MiB",
                        data=os.path.join(small_fs, "data")).start()
    keep = [publish(node, "keep:1", i)[1]["pos"] for i in range(20)]
    ballast = os.path.join(small_fs, "ballast")
    with open(ballast, "wb") as f:  # leave about 1.5 MiB free
        free = os.statvfs(small_fs)
        f.write(b"\0" * max(0, free.f_bavail * free.f_frsize - (3 << 19)))
    acked, status, body = fill_until_refused(node, "fill")
    assert status == 503 and "full" in body["error"], body
    assert node.stats()["store"]["refused_full"] >= 1
    assert "[store-full]" in node.read_log()
    # Reads work on a full disk; nothing acknowledged is missing.
    assert all_positions(node, "keep:1") == keep
    assert all_positions(node, "fill") == acked
    # The operator frees space: publishing resumes by itself.
    os.unlink(ballast)
    pos = wait_publish_ok(node, "fill")
    assert all_positions(node, "fill") == acked + [pos]
    assert node.stop() == 0
    # And the environment is sound after a restart.
    node.start()
    assert all_positions(node, "fill") == acked + [pos]
    p = subprocess.run(["mdb_stat", "-a", node.data], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
