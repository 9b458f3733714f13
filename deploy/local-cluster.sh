#!/usr/bin/env bash
# A local 3-node cluster behind haproxy, on loopback, for development and the cluster tests.
#   deploy/local-cluster.sh start [DIR]   nodes n1..n3 on :8081-8083 (cluster :9001-9003),
#                                         haproxy on :8080; data and pids under DIR
#   deploy/local-cluster.sh stop [DIR]    drain and stop them (SIGTERM), by recorded pid
#   deploy/local-cluster.sh restart-rolling [DIR]   restart n1, n2, n3 one at a time,
#                                         waiting for each to be ready again
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${TIDEWIRE_BIN:-$root/build/bin/tidewire}
cmd=${1:-start}
dir=${2:-$root/data/cluster}
peers=tcp://127.0.0.1:9001,tcp://127.0.0.1:9002,tcp://127.0.0.1:9003

start_node() {
    local i=$1
    mkdir -p "$dir"
    "$bin" --node-id "n$i" --listen "127.0.0.1:808$i" --data "$dir/n$i" \
        --cluster-listen "tcp://127.0.0.1:900$i" --peers "$peers" \
        >>"$dir/n$i.log" 2>&1 &
    echo $! >"$dir/n$i.pid"
}

wait_ready() {
    local i=$1
    for _ in $(seq 200); do
        curl -sf "http://127.0.0.1:808$i/readyz" >/dev/null && return 0
        sleep 0.1
    done
    echo "n$i did not become ready; see $dir/n$i.log" >&2
    return 1
}

stop_pid() {
    local f=$1
    [[ -f $f ]] || return 0
    local pid
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$f"
}

case $cmd in
start)
    command -v haproxy >/dev/null || { echo "haproxy is not installed (apt-get install haproxy)" >&2; exit 1; }
    for i in 1 2 3; do start_node "$i"; done
    for i in 1 2 3; do wait_ready "$i"; done
    # The shipped config's maxconn is for production: fit it to this shell's FD limit.
    local_max=$(( $(ulimit -n) / 2 - 100 ))
    ((local_max > 200000)) && local_max=200000
    sed "s/maxconn 200000/maxconn $local_max/" "$root/deploy/haproxy/haproxy.cfg" >"$dir/haproxy.cfg"
    haproxy -f "$dir/haproxy.cfg" -D -p "$dir/haproxy.pid"
    echo "cluster up: ws://127.0.0.1:8080/ws (nodes :8081-8083), data in $dir"
    ;;
stop)
    stop_pid "$dir/haproxy.pid"
    for i in 1 2 3; do stop_pid "$dir/n$i.pid"; done
    ;;
restart-rolling)
    for i in 1 2 3; do
        stop_pid "$dir/n$i.pid"
        start_node "$i"
        wait_ready "$i"
    done
    ;;
*)
    echo "usage: $0 start|stop|restart-rolling [DIR]" >&2
    exit 2
    ;;
esac
