"""Turns bench results (JSON lines) into the Markdown table of docs/benchmarks.md:
medians with min-max over the repeats."""
import json
import statistics
import sys
from collections import OrderedDict

cases = OrderedDict()
for line in open(sys.argv[1]):
    rec = json.loads(line)
    cases.setdefault(rec["case"], []).append(rec["result"])


def fmt(values, unit="", digits=0):
    med = statistics.median(values)
    f = (lambda v: f"{v:,.{digits}f}")
    if len(values) == 1:
        return f"{f(med)}{unit}"
    return f"{f(med)}{unit} ({f(min(values))}–{f(max(values))})"


print("| case | throughput | p50 | p99 | max | loss / errors |")
print("|---|---|---|---|---|---|")
for name, runs in cases.items():
    if name == "fsync":
        print(f"| disk fsync (4 KiB write + fsync, 1 thread) | {fmt([r['fsyncs_per_s'] for r in runs])} fsyncs/s | | | | |")
        continue
    if runs[0].get("bench") == "store-replay":
        res = [r["resume_1000_us"] for r in runs]
        print(f"| {name} | {fmt([r['replay_events_per_s'] for r in runs], ' replayed events/s')} | "
              f"resume {fmt([x['p50'] / 1000 for x in res], ' ms', 3)} | "
              f"{fmt([x['p99'] / 1000 for x in res], ' ms', 3)} | | 0 |")
        continue
    lat = [r["latency_ms"] for r in runs]
    if runs[0].get("bench") == "store":
        thr = fmt([r["events_per_s"] for r in runs], " events/s") + \
            f", {fmt([r['events_per_commit'] for r in runs], '', 0)} per commit"
        bad = sum(r["errors"] for r in runs)
    elif "deliveries_per_s" in runs[0]:
        thr = fmt([r["deliveries_per_s"] for r in runs], " deliveries/s")
        bad = sum(r["loss"] + r["duplicates"] + r["out_of_order"] for r in runs)
    else:
        thr = fmt([r["acks_per_s"] for r in runs], " acks/s")
        bad = sum(r["publish_errors"] for r in runs)
    print(f"| {name} | {thr} | {fmt([l['p50'] for l in lat], ' ms', 2)} | "
          f"{fmt([l['p99'] for l in lat], ' ms', 2)} | {fmt([l['max'] for l in lat], ' ms', 1)} | {bad} |")
