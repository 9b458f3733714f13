#!/usr/bin/env bash
# tidewire against its peers (issue 6; make bench-peers): nats-server from Debian (WebSocket
# listener, JetStream with file storage) and a Socket.IO 4 server on Node (socketio/), each
# started here on loopback, pinned to CPU 0, and driven by the one generator
# (`tidewire-cli bench --protocol tidewire|nats-ws|socketio`) pinned to CPU 1. Every run
# gets a fresh server and data directory; each case is repeated; the table of medians
# (min-max) goes into docs/benchmarks.md between its markers, the latency plot next to it.
#
#   tests/bench/peers/run.sh [REPEATS] [SECONDS]            (make bench-peers: 3 5)
#
# Environment (for partial runs while developing):
#   TW_BUILD        build directory holding bin/ (default: build)
#   PEERS           systems (default: "tidewire nats socketio")
#   PEERS_CASES     groups (default: "fanout sweep publish replay conns")
#   PEERS_CONNS     idle connection counts (default: "10000 19000"; see below)
#   PEERS_DOCS=0    print the tables only, leave docs/ alone
#
# Idle connections: every process here may hold at most `ulimit -Hn` files (20,000 on the
# machine of docs/benchmarks.md, and root cannot raise it there), so server and generator
# cap the idle-connection case below that; counts above the limit are skipped, and said so.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
build=${TW_BUILD:-$root/build}
[[ $build = /* ]] || build=$root/$build
bin=$build/bin
repeats=${1:-3}
secs=${2:-5}
systems=${PEERS:-tidewire nats socketio}
groups=${PEERS_CASES:-fanout sweep publish replay conns}
conn_counts=${PEERS_CONNS:-10000 19000}
work=$(mktemp -d "${TMPDIR:-/tmp}/tw-peers-XXXXXX")
base=$((25000 + (RANDOM % 90) * 10)) # this run's ports: base .. base+9
results=$work/results.jsonl
server_pid=

cleanup() {
    if [[ -n $server_pid ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work/data"
}
trap cleanup EXIT

for tool in taskset curl nats-server node npm gnuplot eatmydata; do
    command -v $tool >/dev/null || { echo "run.sh: $tool missing (deploy/install-deps.sh --bench)" >&2; exit 1; }
done
[[ -x $bin/tidewire && -x $bin/tidewire-cli ]] || { echo "run.sh: build $build first" >&2; exit 1; }
if [[ ! -d $here/socketio/node_modules/socket.io ]]; then
    (cd "$here/socketio" && npm ci --no-audit --no-fund --loglevel=error)
fi
ulimit -n "$(ulimit -Hn)"
nofile=$(ulimit -n)
pin_srv=(taskset -c 0) pin_gen=(taskset -c 1)

# start_server SYSTEM: a fresh server; sets server_pid, url, proto.
start_server() {
    rm -rf "$work/data"
    mkdir -p "$work/data"
    local ready
    case $1 in
    tidewire | tidewire-nofsync)
        local pre=()
        [[ $1 == tidewire-nofsync ]] && pre=(eatmydata) # fsync() a no-op, as JetStream 2.9's policy
        "${pin_srv[@]}" "${pre[@]}" "$bin/tidewire" --listen 127.0.0.1:$base --data "$work/data" \
            --log-level warn 2>>"$work/server.log" &
        server_pid=$! url=ws://127.0.0.1:$base/ws proto=tidewire
        ready=http://127.0.0.1:$base/readyz
        ;;
    nats)
        cat >"$work/data/nats.conf" <<EOF
listen: 127.0.0.1:$((base + 1))
http: 127.0.0.1:$((base + 3))
max_connections: 1000000
jetstream { store_dir: "$work/data/js" }
websocket { listen: "127.0.0.1:$((base + 2))", no_tls: true, compression: false }
EOF
        "${pin_srv[@]}" nats-server -c "$work/data/nats.conf" 2>>"$work/server.log" &
        server_pid=$! url=ws://127.0.0.1:$((base + 2))/ proto=nats-ws
        ready=http://127.0.0.1:$((base + 3))/healthz
        ;;
    socketio)
        "${pin_srv[@]}" node "$here/socketio/server.js" $((base + 4)) 2>>"$work/server.log" &
        server_pid=$! url=ws://127.0.0.1:$((base + 4))/ proto=socketio
        ready=http://127.0.0.1:$((base + 4))/readyz
        ;;
    esac
    for _ in $(seq 200); do
        curl -sf "$ready" >/dev/null 2>&1 && return
        sleep 0.05
    done
    echo "run.sh: $1 did not start" >&2
    tail -20 "$work/server.log" >&2
    exit 1
}

stop_server() {
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=
}

# run CASE SYSTEM -- bench args: one generator run per repeat, each on a fresh server.
run() {
    local name=$1 sys=$2
    shift 2
    for r in $(seq "$repeats"); do
        start_server "$sys"
        local line
        line=$("${pin_gen[@]}" "$bin/tidewire-cli" bench "$@" --protocol "$proto" --url "$url" \
            --server-pid "$server_pid" 2>>"$work/bench.log" | tail -n 1) || true
        stop_server
        [[ $line == '{'* ]] || line=null
        echo "{\"case\":\"$name\",\"system\":\"$sys\",\"run\":$r,\"result\":$line}" >>"$results"
        echo "  $name / $sys run $r: $(echo "$line" | cut -c1-120)..." >&2
    done
}

has() { [[ " $1 " == *" $2 "* ]]; }

load=$(cut -d' ' -f1-3 /proc/loadavg)
# The tree measured: HEAD, and how many files under broker/ and store/ differ from it.
tree=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git -C "$root" status --porcelain -- broker store 2>/dev/null | wc -l)
((dirty > 0)) && tree="$tree + $dirty uncommitted files in broker/ and store/"
echo "{\"case\":\"machine\",\"system\":\"\",\"run\":0,\"result\":{\"cores\":$(nproc),\"mem_gib\":$(awk '/MemTotal/ {printf "%.0f", $2/1048576}' /proc/meminfo),\"kernel\":\"$(uname -r)\",\"load\":\"$load\",\"date\":\"$(date -u +%FT%TZ)\",\"nats\":\"$(nats-server --version | awk '{print $NF}')\",\"node\":\"$(node --version)\",\"socketio\":\"$(node -p "require('$here/socketio/node_modules/socket.io/package.json').version")\",\"repeats\":$repeats,\"secs\":$secs,\"nofile\":$nofile,\"tree\":\"$tree\"}}" >>"$results"
echo "bench-peers: $(uptime)" >&2

if has "$groups" fanout; then
    for sys in $systems; do
        run "fanout 100 subs @10k/s" "$sys" fanout --subs 100 --rate 10000 --duration "$secs"
        run "fanout 100 subs max" "$sys" fanout --subs 100 --rate 0 --inflight 1024 --duration "$secs"
        run "fanout 1000 subs @1k/s" "$sys" fanout --subs 1000 --rate 1000 --duration "$secs"
        run "fanout 1000 subs max" "$sys" fanout --subs 1000 --rate 0 --inflight 1024 --duration "$secs"
    done
    # How much of tidewire's latency is the fsync before delivery (the log's commit)?
    if has "$systems" tidewire; then
        run "fanout 100 subs @10k/s" tidewire-nofsync fanout --subs 100 --rate 10000 --duration "$secs"
    fi
fi

# Latency against load (the plot): 100 subscribers, rising publish rates, 3 s each. Socket.IO
# stops lower: beyond its limit a run only measures its queue growing.
if has "$groups" sweep; then
    for sys in $systems $(has "$systems" tidewire && echo tidewire-nofsync); do
        rates="500 1000 2000 5000 10000 15000 20000"
        [[ $sys == socketio ]] && rates="250 500 1000 1500 2000"
        for rate in $rates; do
            run "sweep $rate" "$sys" fanout --subs 100 --rate "$rate" --duration 3
        done
    done
fi

# Durable acknowledged publishes. tidewire: fsync per group commit (its only mode);
# tidewire-nofsync: the same under eatmydata (fsync a no-op), i.e. JetStream 2.9's policy:
# nats-server 2.9 (Debian 12) writes each message to the OS and fsyncs every 2 minutes,
# and has no sync_interval setting (2.10 added `sync_interval: always`).
# Socket.IO keeps nothing: no durable publish to compare.
if has "$groups" publish; then
    for sys in $systems; do
        [[ $sys == socketio ]] && continue
        for s in $sys $([[ $sys == tidewire ]] && echo tidewire-nofsync); do
            run "publish 1 in flight" "$s" publish --inflight 1 --conns 1 --duration "$secs"
            run "publish 64 in flight" "$s" publish --inflight 64 --conns 8 --duration "$secs"
        done
    done
fi

# Resume: 100,000 events stored with nobody listening, then one client asks for them all.
if has "$groups" replay; then
    for sys in $systems; do
        [[ $sys == socketio ]] && continue # no log to replay from
        run "replay 100k" "$sys" replay --events 100000
    done
fi

# Idle subscribed connections from 4 source addresses (127.0.0.2-5): connect rate and the
# server's RSS per connection.
if has "$groups" conns; then
    for n in $conn_counts; do
        if ((n + 100 > nofile)); then
            echo "run.sh: $n connections skipped: open files limited to $nofile" >&2
            echo "{\"case\":\"conns $n\",\"system\":\"\",\"run\":0,\"result\":{\"skipped\":\"RLIMIT_NOFILE $nofile\"}}" >>"$results"
            continue
        fi
        for sys in $systems; do
            run "conns $n" "$sys" conns --conns "$n" --sources 4 --settle 3
        done
    done
fi

cp "$results" "$root/tests/bench/peers/last-results.jsonl"
docs=1
[[ ${PEERS_DOCS:-1} == 0 ]] && docs=0
/usr/bin/python3 "$here/table.py" "$results" "$work" $([[ $docs == 1 ]] && echo "$root/docs/benchmarks.md")
if [[ -s $work/plot.gp ]]; then
    out=$work/latency.png
    [[ $docs == 1 ]] && out=$root/docs/benchmarks-peers-latency.png
    gnuplot -e "outfile='$out'" "$work/plot.gp"
    echo "plot: $out" >&2
fi
echo "raw results: $results (copied to tests/bench/peers/last-results.jsonl)" >&2
