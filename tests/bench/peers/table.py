"""Turns tests/bench/peers/run.sh results (JSON lines) into the Markdown tables of
docs/benchmarks.md ("Against the peers"): medians with min-max over the repeats.

    table.py RESULTS WORKDIR [DOCS_MD]

Prints the tables; writes WORKDIR/sweep.dat for latency.gp; with DOCS_MD, replaces the text
between <!-- bench-peers:begin --> and <!-- bench-peers:end --> there (appending both
markers at the end the first time)."""
import json
import os
import re
import statistics
import sys
from collections import OrderedDict

results, work = sys.argv[1], sys.argv[2]
docs = sys.argv[3] if len(sys.argv) > 3 else None

machine = {}
cases = OrderedDict()  # case -> system -> [result]
skipped = []
for line in open(results):
    rec = json.loads(line)
    if rec["case"] == "machine":
        machine = rec["result"]
        continue
    r = rec["result"]
    if r is not None and "skipped" in r:
        skipped.append(f"{rec['case']}: skipped ({r['skipped']})")
        continue
    cases.setdefault(rec["case"], OrderedDict()).setdefault(rec["system"], []).append(r)

NAMES = {"tidewire": "tidewire", "tidewire-nofsync": "tidewire, fsync off (eatmydata)",
         "nats": "nats-server (WS)", "socketio": "Socket.IO"}


def ok(runs):
    return [r for r in runs if r is not None and "aborted" not in r]


def med(values):
    return statistics.median(values) if values else None


def fmt(values, unit="", digits=0):
    if not values:
        return "—"
    f = (lambda v: f"{v:,.{digits}f}")
    m = med(values)
    if len(values) == 1:
        return f"{f(m)}{unit}"
    return f"{f(m)}{unit} ({f(min(values))}–{f(max(values))})"


def failures(runs):
    bad = len([r for r in runs if r is None or "aborted" in r])
    return f" [{bad} of {len(runs)} runs failed]" if bad else ""


out = []
p = out.append
if machine:
    p(f"Machine: {machine.get('cores')} cores, {machine.get('mem_gib')} GiB, Linux "
      f"{machine.get('kernel')}; load average at the start {machine.get('load')}; "
      f"{machine.get('date')}. nats-server {machine.get('nats')}, Node {machine.get('node')}, "
      f"socket.io {machine.get('socketio')}; tidewire tree {machine.get('tree', '?')}. "
      f"{machine.get('repeats')} repeats of "
      f"{machine.get('secs')} s per case; each server pinned to CPU 0, the generator to CPU 1.")
    p("")

fan = [c for c in cases if c.startswith("fanout")]
if fan:
    p("**Fan-out**, 100-byte payloads, one channel/subject/room; `max` = as fast as the "
      "generator's window allows (1,024 events not yet delivered to every subscriber).")
    p("")
    p("| case | system | deliveries/s | p50 | p99 | max | server CPU per delivery | server CPU | generator CPU | loss |")
    p("|---|---|---|---|---|---|---|---|---|---|")
    for c in fan:
        for sys_, runs in cases[c].items():
            g = ok(runs)
            lat = [r["latency_ms"] for r in g]
            p(f"| {c} | {NAMES.get(sys_, sys_)} | {fmt([r['deliveries_per_s'] for r in g])} | "
              f"{fmt([l['p50'] for l in lat], ' ms', 2)} | {fmt([l['p99'] for l in lat], ' ms', 2)} | "
              f"{fmt([l['max'] for l in lat], ' ms', 1)} | "
              f"{fmt([r.get('server_cpu_ns_per_delivery', 0) for r in g], ' ns')} | "
              f"{fmt([r.get('server_cpu_pct', 0) for r in g], '%')} | "
              f"{fmt([r.get('generator_cpu_pct', 0) for r in g], '%')} | "
              f"{sum(r['loss'] + r['out_of_order'] for r in g)}{failures(runs)} |")
    p("")

pub = [c for c in cases if c.startswith("publish")]
if pub:
    p("**Durable acknowledged publishes**, 100-byte payloads (64 in flight: 8 connections × 8).")
    p("")
    p("| case | system | acks/s | p50 | p99 | server CPU per ack | errors |")
    p("|---|---|---|---|---|---|---|")
    for c in pub:
        for sys_, runs in cases[c].items():
            g = ok(runs)
            lat = [r["latency_ms"] for r in g]
            p(f"| {c} | {NAMES.get(sys_, sys_)} | {fmt([r['acks_per_s'] for r in g])} | "
              f"{fmt([l['p50'] for l in lat], ' ms', 2)} | {fmt([l['p99'] for l in lat], ' ms', 2)} | "
              f"{fmt([r.get('server_cpu_us_per_ack', 0) for r in g], ' µs', 1)} | "
              f"{sum(r['errors'] for r in g)}{failures(runs)} |")
    p("")

rep = [c for c in cases if c.startswith("replay")]
if rep:
    p("**Resume**: 100,000 events of 100 bytes stored while nobody listened, then one client "
      "asks for all of them (tidewire: `subscribe` with `since: {}`; NATS: a JetStream push "
      "consumer, deliver all, no acks): from the request to the last event.")
    p("")
    p("| case | system | events/s | seconds |")
    p("|---|---|---|---|")
    for c in rep:
        for sys_, runs in cases[c].items():
            g = ok(runs)
            p(f"| {c} | {NAMES.get(sys_, sys_)} | {fmt([r['events_per_s'] for r in g])} | "
              f"{fmt([r['duration_s'] for r in g], ' s', 3)}{failures(runs)} |")
    p("")

con = [c for c in cases if c.startswith("conns")]
if con or skipped:
    p("**Idle subscribed connections** from 4 source addresses (127.0.0.2–5): the server's "
      "RSS growth per connection, 3 s after the last one subscribed, and the connect rate "
      "(TCP + WebSocket upgrade + subscribe, 256 at a time).")
    p("")
    p("| case | system | connected | connects/s | server RSS per connection |")
    p("|---|---|---|---|---|")
    for c in con:
        for sys_, runs in cases[c].items():
            g = [r for r in runs if r is not None]
            p(f"| {c} | {NAMES.get(sys_, sys_)} | {fmt([r['connected'] for r in g])} | "
              f"{fmt([r['connects_per_s'] for r in g])} | "
              f"{fmt([r['bytes_per_conn'] / 1024 for r in g], ' KiB', 1)}{failures(runs)} |")
    p("")
    for s in skipped:
        p(f"- {s}")
    if skipped:
        p("")

# Ratios against the goals (medians).
def medof(case, sys_, key):
    g = ok(cases.get(case, {}).get(sys_, []))
    vals = [r[key] if not isinstance(key, tuple) else r[key[0]][key[1]] for r in g]
    return med(vals)


lines = []
for c in fan:
    if not c.endswith("max"):
        continue
    tw = medof(c, "tidewire", "deliveries_per_s")
    for peer, goal in (("nats", 3), ("socketio", 20)):
        v = medof(c, peer, "deliveries_per_s")
        if tw and v:
            cpu_tw = medof(c, "tidewire", "server_cpu_ns_per_delivery")
            cpu_p = medof(c, peer, "server_cpu_ns_per_delivery")
            extra = f"; server CPU per delivery {cpu_p / cpu_tw:.1f}× less" if cpu_tw and cpu_p else ""
            lines.append(f"- {c}: tidewire / {NAMES[peer]} = {tw / v:.2f}× deliveries/s "
                         f"(goal ≥ {goal}×){extra}")
for c in pub:
    tw = medof(c, "tidewire", "acks_per_s")
    js = medof(c, "nats", "acks_per_s")
    nf = medof(c, "tidewire-nofsync", "acks_per_s")
    if tw and js:
        lines.append(f"- {c}: tidewire (fsync) / JetStream (no fsync) = {tw / js:.2f}×"
                     + (f"; tidewire fsync off / JetStream = {nf / js:.2f}× (goal ≥ 2×)" if nf else ""))
if lines:
    p("Ratios of medians:")
    p("")
    out.extend(lines)
    p("")

text = "\n".join(out)
print(text)

# Latency against load: one data file per system and the gnuplot script (plot.gp) that
# draws p50 and p99 against deliveries/s, log-log, into the PNG named on its command line.
COLORS = {"tidewire": "#1f77b4", "tidewire-nofsync": "#9467bd", "nats": "#2ca02c", "socketio": "#d62728"}
plots = []
for sys_ in ("tidewire", "tidewire-nofsync", "nats", "socketio"):
    rows = []
    for c in cases:
        if not c.startswith("sweep") or sys_ not in cases[c]:
            continue
        g = ok(cases[c][sys_])
        if not g:
            continue
        offered = float(c.split()[1]) * g[0]["subs"]  # "sweep RATE": publish rate × subs
        rows.append((offered,
                     med([r["latency_ms"]["p50"] for r in g]),
                     med([r["latency_ms"]["p99"] for r in g]),
                     med([r["latency_ms"]["max"] for r in g])))
    if not rows:
        continue
    path = os.path.join(work, f"sweep-{sys_}.dat")
    with open(path, "w") as f:
        f.write("# offered deliveries/s, p50_ms p99_ms max_ms (medians)\n")
        for row in sorted(rows):
            f.write("%.0f %.4f %.4f %.4f\n" % row)
    col = COLORS[sys_]
    plots.append(f"'{path}' using 1:3 with linespoints lw 2 pt 7 lc rgb '{col}' "
                 f"title '{NAMES[sys_]} p99'")
    plots.append(f"'{path}' using 1:2 with linespoints lw 1 dt 2 pt 6 lc rgb '{col}' "
                 f"title '{NAMES[sys_]} p50'")
if plots:
    with open(os.path.join(work, "plot.gp"), "w") as f:
        f.write("set terminal pngcairo size 1100,560 font 'sans,10'\n"
                "set output outfile\n"
                "set title 'Fan-out to 100 subscribers, 100-byte events: publish→deliver latency "
                "against load (medians of the repeats)'\n"
                "set xlabel 'offered load: deliveries/s (publish rate × 100 subscribers)'\n"
                "set ylabel 'latency, ms'\n"
                "set logscale xy\nset grid\nset key outside right top\n"
                "plot " + ", \\\n     ".join(plots) + "\n")

if docs:
    body = open(docs).read()
    begin, end = "<!-- bench-peers:begin -->", "<!-- bench-peers:end -->"
    block = f"{begin}\n{text}\n{end}"
    if begin in body:
        body = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda m: block, body, flags=re.S)
    else:
        body = body.rstrip("\n") + "\n\n" + block + "\n"
    open(docs, "w").write(body)
