#!/usr/bin/env bash
# The benchmarks of docs/benchmarks.md: starts a node pinned to CPU 0 and drives it with
# tidewire-cli bench pinned to CPU 1, repeats each run, and prints a Markdown table of
# medians (min-max) plus the raw JSON of every run.
#   tests/bench/run.sh [REPEATS] [SECONDS]      (make bench)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=$root/build/bin
repeats=${1:-3}
secs=${2:-5}
work=$(mktemp -d "${TMPDIR:-/tmp}/tw-bench-XXXXXX")
port=$((20000 + RANDOM % 10000))
url=ws://127.0.0.1:$port/ws
results=$work/results.jsonl
node_pid=

cleanup() {
    [[ -n $node_pid ]] && kill "$node_pid" 2>/dev/null && wait "$node_pid" 2>/dev/null
    rm -rf "$work/data"
}
trap cleanup EXIT

cpus=$(nproc)
pin_node=() pin_gen=()
if command -v taskset >/dev/null && ((cpus >= 2)); then
    pin_node=(taskset -c 0) pin_gen=(taskset -c 1)
fi

start_node() {
    rm -rf "$work/data"
    "${pin_node[@]}" "$bin/tidewire" --listen 127.0.0.1:$port --data "$work/data" \
        --log-level warn "$@" 2>>"$work/node.log" &
    node_pid=$!
    for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && return
        sleep 0.05
    done
    echo "node did not start" >&2; cat "$work/node.log" >&2; exit 1
}

stop_node() {
    kill "$node_pid"; wait "$node_pid" 2>/dev/null || true; node_pid=
}

# run NAME -- ARGS...: one bench invocation per repeat, each on a fresh node.
run() {
    local name=$1; shift
    for r in $(seq "$repeats"); do
        start_node
        local line
        line=$("${pin_gen[@]}" "$bin/tidewire-cli" bench "$@" --url "$url" --duration "$secs" \
               2>>"$work/bench.log" | tail -n 1)
        stop_node
        echo "{\"case\":\"$name\",\"run\":$r,\"result\":$line}" >>"$results"
        echo "  $name run $r: done" >&2
    done
}

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r)" >&2
echo "disk: $(df -h "$work" | awk 'NR==2 {print $1, $2}')" >&2

# The disk's own fsync rate: the ceiling for commits per second.
/usr/bin/python3 - "$work" >>"$results" <<'PY'
import os, sys, time, json
path = os.path.join(sys.argv[1], "fsync.probe")
fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
n, t0 = 0, time.monotonic()
while time.monotonic() - t0 < 3:
    os.pwrite(fd, b"x" * 4096, (n % 256) * 4096)
    os.fsync(fd)
    n += 1
os.close(fd); os.unlink(path)
print(json.dumps({"case": "fsync", "run": 1, "result": {"fsyncs_per_s": n / (time.monotonic() - t0)}}))
PY

run "fanout 100 subs @10k/s"   fanout --subs 100  --rate 10000 --size 100
run "fanout 100 subs max"      fanout --subs 100  --rate 0     --size 100
run "fanout 1000 subs @1k/s"   fanout --subs 1000 --rate 1000  --size 100
run "fanout 1000 subs max"     fanout --subs 1000 --rate 0     --size 100
run "publish 1 in flight"      publish --inflight 1  --conns 1 --size 100
run "publish 64 in flight"     publish --inflight 64 --conns 8 --size 100
# Issue 3: enough in flight for group commit to reach the disk's limit; 768 is the goal's
# case (300,000 acks/s with p99 under 5 ms).
run "publish 768 in flight"    publish --inflight 768 --conns 48 --size 100
run "publish 1024 in flight"   publish --inflight 1024 --conns 64 --size 100
run "publish 4096 in flight"   publish --inflight 4096 --conns 64 --size 100

# The log alone, no network (tests/bench/store_bench.c): K appends in flight against the
# writer thread, 100-byte events, fsync on; each resubmitted when its commit is reported.
store_run() {
    local name=$1; shift
    for r in $(seq "$repeats"); do
        rm -rf "$work/sdata"
        local line
        line=$("${pin_node[@]}" "$root/build/tests/store_bench" --dir "$work/sdata" "$@" \
               --duration "$secs" | tail -n 1)
        echo "{\"case\":\"$name\",\"run\":$r,\"result\":$line}" >>"$results"
        echo "  $name run $r: done" >&2
    done
    rm -rf "$work/sdata"
}
store_run "store 1 in flight"      --inflight 1    --size 100
store_run "store 64 in flight"     --inflight 64   --size 100
store_run "store 1024 in flight"   --inflight 1024 --size 100
store_run "store 4096 in flight"   --inflight 4096 --size 100
# Reads: replay of a 1 M-event channel, and a 1,000-event resume with 2 M other events in
# the log (its cost must not depend on them; store_bench --noise 10000000 for the 10 M case).
store_run "store replay, resume (empty log)"     --replay 1000000 --noise 0
store_run "store replay, resume (2 M other events)" --replay 1000 --noise 2000000

/usr/bin/python3 "$root/tests/bench/table.py" "$results"
echo "raw results: $results" >&2
trap - EXIT
cleanup
