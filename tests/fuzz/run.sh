#!/usr/bin/env bash
# Runs one libFuzzer driver for a bounded time on a scratch copy of its seed corpus, so the
# corpus in the tree only changes when someone adds seeds on purpose.
# usage: run.sh DRIVER SEED_DIR WORK_DIR SECONDS
set -euo pipefail
driver=$1 seeds=$2 work=$3 secs=$4
mkdir -p "$work/corpus" "$work/artifacts"
cp -n "$seeds"/* "$work/corpus/" 2>/dev/null || true
exec "$driver" -max_total_time="$secs" -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$work/artifacts/" "$work/corpus"
