#!/usr/bin/env bash
# Installs the Debian 12 packages tidewire builds and tests with, only those missing.
# Idempotent and quiet when everything is present; needs root (or sudo) otherwise.
set -euo pipefail

build_pkgs=(build-essential cmake pkg-config
    libuv1-dev liblmdb-dev libmsgpack-dev libssl-dev libnng-dev libwslay-dev
    libhttp-parser-dev libcjson-dev)
test_pkgs=(libcmocka-dev python3 python3-websockets python3-pytest python3-msgpack lmdb-utils clang haproxy
    libclang-rt-14-dev curl)
# make bench-peers only (tests/bench/peers): the peers tidewire is measured against, the plot,
# and eatmydata (tidewire with fsync off, JetStream 2.9's policy); Node.js for Socket.IO below.
bench_pkgs=(nats-server gnuplot-nox eatmydata curl util-linux)

want=("${build_pkgs[@]}")
[[ ${1:-} == --test ]] && want+=("${test_pkgs[@]}")
[[ ${1:-} == --bench ]] && want+=("${bench_pkgs[@]}")

# The JavaScript client's tests (client-sdk/js: Node's test runner, Playwright driving
# Debian's Chromium). Node.js 18 or later with npm: Debian's nodejs + npm unless a Node.js
# with npm is already installed (NodeSource's nodejs carries its own npm and conflicts with
# Debian's npm package, so it is left alone).
if [[ ${1:-} == --test || ${1:-} == --bench ]]; then
    [[ ${1:-} == --test ]] && want+=(chromium)
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        want+=(nodejs npm)
    fi
fi

missing=()
for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

echo "install-deps: installing ${missing[*]}"
sudo=""
[[ $(id -u) -ne 0 ]] && sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
