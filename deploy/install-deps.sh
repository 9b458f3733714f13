#!/usr/bin/env bash
# Installs the Debian 12 packages tidewire builds and tests with, only those missing.
# Idempotent and quiet when everything is present; needs root (or sudo) otherwise.
set -euo pipefail

build_pkgs=(build-essential cmake pkg-config
    libuv1-dev liblmdb-dev libmsgpack-dev libssl-dev libnng-dev libwslay-dev
    libhttp-parser-dev libcjson-dev)
test_pkgs=(libcmocka-dev python3 python3-websockets python3-pytest python3-msgpack lmdb-utils clang
    libclang-rt-14-dev curl)

want=("${build_pkgs[@]}")
[[ ${1:-} == --test ]] && want+=("${test_pkgs[@]}")

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
