#!/usr/bin/env bash
# Where a tidewire node spends its CPU under the fan-out workload of run.sh (docs/benchmarks.md,
# "Profile of the fan-out"): a node pinned to CPU 0, the generator on CPU 1, and
# `perf record` (software cpu-clock sampling: this machine's VM exposes no hardware
# counters; DWARF call graphs) of the node for the middle of the run.
#
#   tests/bench/peers/profile.sh [SUBS] [RATE] [SECONDS]     (default: 100 0 8; RATE 0 = max)
#   tests/bench/peers/profile.sh replay [EVENTS] [ROUNDS]    (default: 500000 10)
#
# The replay profile stores EVENTS in one channel first (the node under eatmydata, so that
# the fill is quick: reads do not fsync), then records the node while one client replays
# the whole channel ROUNDS times in a row (`bench replay --no-fill`).
#
# Prints the flat profile (self time by symbol, top 45) and the loop thread's share, and
# leaves perf.data and the reports in the printed directory. TW_BUILD as for run.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
build=${TW_BUILD:-$root/build}
[[ $build = /* ]] || build=$root/$build
mode=fanout
if [[ ${1:-} == replay ]]; then
    mode=replay
    shift
    events=${1:-500000}
    rounds=${2:-10}
else
    subs=${1:-100}
    rate=${2:-0}
    secs=${3:-8}
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/tw-profile-XXXXXX")
port=$((25910 + RANDOM % 80))
node_pid= gen_pid=
cleanup() {
    [[ -n $gen_pid ]] && kill "$gen_pid" 2>/dev/null
    if [[ -n $node_pid ]]; then
        kill "$node_pid" 2>/dev/null || true
        wait "$node_pid" 2>/dev/null || true
    fi
    rm -rf "$work/data"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"

pre=()
[[ $mode == replay ]] && pre=(eatmydata)
taskset -c 0 "${pre[@]}" "$build/bin/tidewire" --listen 127.0.0.1:$port --data "$work/data" --log-level warn \
    2>"$work/node.log" &
node_pid=$!
for _ in $(seq 100); do
    curl -sf http://127.0.0.1:$port/readyz >/dev/null && break
    sleep 0.05
done
if [[ $mode == replay ]]; then
    cli=(taskset -c 1 "$build/bin/tidewire-cli" bench replay --protocol tidewire
        --url ws://127.0.0.1:$port/ws --channel profile-replay --events "$events")
    "${cli[@]}" >"$work/bench.json" 2>"$work/bench.log"
    perf record -o "$work/perf.data" -e cpu-clock -F 2000 --call-graph dwarf,16384 \
        -p "$node_pid" -- bash -c 'for _ in $(seq '"$rounds"'); do "$@" --no-fill; done' _ \
        "${cli[@]}" 2>"$work/perf-record.log" >>"$work/bench.json" || true
else
    taskset -c 1 "$build/bin/tidewire-cli" bench fanout --protocol tidewire \
        --url ws://127.0.0.1:$port/ws --subs "$subs" --rate "$rate" --inflight 1024 \
        --duration "$secs" --server-pid "$node_pid" >"$work/bench.json" 2>"$work/bench.log" &
    gen_pid=$!
    # Skip the connection set-up, then sample the steady state.
    sleep $((subs >= 1000 ? 4 : 2))
    perf record -o "$work/perf.data" -e cpu-clock -F 2000 --call-graph dwarf,16384 \
        -p "$node_pid" -- sleep $((secs - 3)) 2>"$work/perf-record.log" >/dev/null || true
    wait "$gen_pid" || true
    gen_pid=
fi
perf report -i "$work/perf.data" --no-children --sort symbol --stdio --percent-limit 0.5 \
    -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -45 | tee "$work/flat.txt"
echo "--- by thread" | tee -a "$work/flat.txt"
perf report -i "$work/perf.data" --no-children --sort comm --stdio -g none 2>/dev/null |
    grep -v '^#' | grep -v '^$' | head -5 | tee -a "$work/flat.txt"
perf report -i "$work/perf.data" --children --sort symbol --stdio --percent-limit 3 -g none \
    2>/dev/null | grep -v '^$' | head -60 >"$work/children.txt"
echo "--- generator: $(tail -n 1 "$work/bench.json" | cut -c1-400)"
echo "profile files: $work (perf.data, flat.txt, children.txt)" >&2
