#!/usr/bin/env bash
# One 1,000-subscriber max-rate fan-out against nats-server or tidewire, the server started
# as tests/bench/peers/run.sh starts it and pinned to CPU 0, the generator on CPU 1 for
# 15 s, and the server recorded for part of the steady state (docs/benchmarks.md, "Profile
# of nats-server's fan-out"):
#
#   tests/bench/peers/nats-profile/run.sh nats|tidewire OUTDIR [perf|writev|none]
#
# perf (default): `perf record -e cpu-clock -F 2000 -g` of the server for 10 s from t=4 s;
# group the samples with `perf script -i OUTDIR/perf.data -F comm,tid,period,ip,sym,dso |
# classify.py nats|tidewire`. writev: the writev syscalls for 3 s (iovecs and bytes per
# call). Debian's nats-server is stripped: gosyms/ lists its functions from .gopclntab so
# that perf can name them (see the section for the objcopy step).
set -uo pipefail
sys=$1 out=$2 mode=${3:-perf}
root=$(cd "$(dirname "$0")/../../../.." && pwd)
bin=${TW_BUILD:-$root/build}/bin
mkdir -p "$out"
work=$(mktemp -d "${TMPDIR:-/tmp}/tw-natsprof-XXXXXX")
base=$((26000 + (RANDOM % 90) * 10))
ulimit -n "$(ulimit -Hn)"
srv=
cleanup() { [[ -n $srv ]] && { kill "$srv" 2>/dev/null; wait "$srv" 2>/dev/null; }; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$work/data"
case $sys in
tidewire)
    taskset -c 0 "$bin/tidewire" --listen 127.0.0.1:$base --data "$work/data" --log-level warn 2>>"$out/server.log" &
    srv=$! url=ws://127.0.0.1:$base/ws proto=tidewire ready=http://127.0.0.1:$base/readyz ;;
nats)
    cat >"$work/data/nats.conf" <<EOC
listen: 127.0.0.1:$((base + 1))
http: 127.0.0.1:$((base + 3))
max_connections: 1000000
jetstream { store_dir: "$work/data/js" }
websocket { listen: "127.0.0.1:$((base + 2))", no_tls: true, compression: false }
EOC
    taskset -c 0 nats-server -c "$work/data/nats.conf" 2>>"$out/server.log" &
    srv=$! url=ws://127.0.0.1:$((base + 2))/ proto=nats-ws ready=http://127.0.0.1:$((base + 3))/healthz ;;
*) echo "usage: $0 nats|tidewire OUTDIR [perf|writev|none]" >&2; exit 2 ;;
esac
for _ in $(seq 200); do curl -sf "$ready" >/dev/null 2>&1 && break; sleep 0.05; done
timeout 90 taskset -c 1 "$bin/tidewire-cli" bench fanout --protocol "$proto" --url "$url" --subs 1000 \
    --rate 0 --inflight 1024 --duration 15 --server-pid "$srv" >"$out/bench.json" 2>"$out/bench.log" &
gen=$!
case $mode in
perf)
    sleep 4
    timeout 30 perf record -o "$out/perf.data" -e cpu-clock -F 2000 -g -p "$srv" -- sleep 10 \
        >"$out/perf-record.log" 2>&1 ;;
writev)
    sleep 4
    timeout 30 perf record -o "$out/perf-writev.data" -e syscalls:sys_enter_writev \
        -e syscalls:sys_exit_writev -p "$srv" -- sleep 3 >"$out/perf-record.log" 2>&1 ;;
esac
wait $gen
grep -o '"deliveries_per_s":[0-9.]*\|"server_cpu_ns_per_delivery":[0-9.]*\|"lost":[0-9]*' "$out/bench.json" | tr '\n' ' '; echo
