"""The C SDK end to end, through tidewire-cli against a real node: publish, subscribe,
cursor files, and auto-reconnect with exact resume across kill -9 and drains."""
import json
import os
import signal
import subprocess
import time

from conftest import CLI


def cli(node, *args, timeout=30):
    p = subprocess.run([CLI, *args, "--url", node.url], capture_output=True, text=True, timeout=timeout)
    return p


def pub(node, channel, data):
    p = cli(node, "pub", channel, json.dumps(data))
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


def lines(text):
    return [json.loads(l) for l in text.splitlines() if l.strip()]


def test_pub_and_sub_print_events(node):
    pos = [pub(node, "chat:1", {"msg": i}) for i in range(3)]
    assert all(p.startswith("n1.") for p in pos)
    p = cli(node, "sub", "chat:1", "--since", "{}", "--count", "3", "--timeout", "10")
    assert p.returncode == 0, p.stderr
    evs = lines(p.stdout)
    assert [e["pos"] for e in evs] == pos
    assert [e["data"] for e in evs] == [{"msg": 0}, {"msg": 1}, {"msg": 2}]
    p = cli(node, "sub", "chat:1", "--last", "2", "--count", "2", "--timeout", "10")
    assert p.returncode == 0, p.stderr
    assert [e["pos"] for e in lines(p.stdout)] == pos[1:]


def test_cursor_file_resumes_exactly(node, tmp_path):
    cur = str(tmp_path / "cursor")
    first = [pub(node, "c", i) for i in range(5)]
    p = cli(node, "sub", "c", "--since", "{}", "--cursor-file", cur, "--count", "2", "--timeout", "10")
    assert p.returncode == 0, p.stderr
    assert [e["pos"] for e in lines(p.stdout)] == first[:2]
    more = [pub(node, "c", i) for i in range(5, 8)]
    p = cli(node, "sub", "c", "--cursor-file", cur, "--count", "6", "--timeout", "10")
    assert p.returncode == 0, p.stderr
    assert [e["pos"] for e in lines(p.stdout)] == first[2:] + more


def test_usage_and_errors(node):
    p = subprocess.run([CLI, "pub"], capture_output=True, text=True, timeout=10)
    assert p.returncode == 2
    p = subprocess.run([CLI, "pub", "c", "{not json", "--url", node.url], capture_output=True, text=True, timeout=10)
    assert p.returncode != 0
    p = cli(node, "pub", "bad channel", "1")
    assert p.returncode == 1 and "400" in p.stderr + p.stdout
    p = subprocess.run([CLI, "stats", "--url", node.http], capture_output=True, text=True, timeout=10)
    assert p.returncode == 0 and json.loads(p.stdout)["node"].startswith("n1.")


def read_lines_until(proc, n, deadline):
    out = []
    while len(out) < n and time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        out.append(json.loads(line))
    return out


def test_subscriber_survives_kill9_and_drain_with_exact_resume(node_factory, tmp_path):
    """A subscriber keeps running while its node is killed with SIGKILL and later drained
    with SIGTERM and restarted: it prints every acknowledged event exactly once, in order."""
    node = node_factory("--ping-interval", "1s").start()
    cur = str(tmp_path / "cursor")
    sub = subprocess.Popen([CLI, "sub", "live", "--url", node.url, "--cursor-file", cur, "--since", "{}"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        acked = [pub(node, "live", i) for i in range(20)]
        got = read_lines_until(sub, 20, time.time() + 20)
        node.kill9()
        node.start()
        acked += [pub(node, "live", i) for i in range(20, 40)]
        got += read_lines_until(sub, 20, time.time() + 30)
        node.stop(signal.SIGTERM)  # drain: clients closed with 1012
        node.start()
        acked += [pub(node, "live", i) for i in range(40, 60)]
        got += read_lines_until(sub, 20, time.time() + 30)
        assert [e["pos"] for e in got] == acked
        assert [e["data"] for e in got] == list(range(60))
    finally:
        sub.send_signal(signal.SIGTERM)
        try:
            sub.wait(10)
        except subprocess.TimeoutExpired:
            sub.kill()
            sub.wait()
    saved = json.load(open(cur))
    assert saved == {acked[-1].rsplit(":", 1)[0]: int(acked[-1].rsplit(":", 1)[1])}


def test_bench_smoke(node):
    """The load generator runs and reports no loss (figures live in docs/benchmarks.md)."""
    p = subprocess.run([CLI, "bench", "fanout", "--url", node.url, "--subs", "20", "--rate", "500",
                        "--duration", "1", "--size", "100"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout.strip().splitlines()[-1])
    assert res["loss"] == 0 and res["received"] == res["expected"] > 0, res
    assert res["duplicates"] == 0 and res["out_of_order"] == 0, res
    p = subprocess.run([CLI, "bench", "publish", "--url", node.url, "--inflight", "16", "--duration", "1",
                        "--size", "100"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout.strip().splitlines()[-1])
    assert res["publish_errors"] == 0 and res["acked"] == res["published"] > 0, res
