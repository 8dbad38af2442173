#!/usr/bin/env python3
"""Median of per-round throughput ratios of tenet's scenarios to their OVS peers, from a
replay.sh results.csv: the figure tenet's goals are stated in.

  bench/ratios.py RESULTS.csv
"""
import csv
import statistics
import sys

rows = list(csv.DictReader(open(sys.argv[1])))
mpps = {}
cpp = {}
for r in rows:
    try:
        mpps[(r["round"], r["frame"], r["test"])] = float(r["mpps"])
    except ValueError:
        continue
    try:
        cpp.setdefault(r["test"], []).append(float(r["cycles_per_pkt"]))
    except (KeyError, ValueError):
        pass
scenarios = sorted({t.split(":", 1)[1] for (_, _, t) in mpps if t.startswith("custom:")})
print(f"{'scenario':<11} {'tenet/ovs (median)':>18}  {'per round':<32} {'cyc/pkt tenet/ovs':>18}")
for s in scenarios:
    ratios = []
    for (rnd, frame, test), v in mpps.items():
        peer = mpps.get((rnd, frame, f"ovs-{s}"))
        if test == f"custom:{s}" and peer:
            ratios.append(v / peer)
    if not ratios:
        continue
    c_t = statistics.median(cpp.get(f"custom:{s}", [0]) or [0])
    c_o = statistics.median(cpp.get(f"ovs-{s}", [0]) or [0])
    per = "/".join(f"{x:.2f}" for x in ratios)
    print(f"{s:<11} {statistics.median(ratios):>18.2f}  {per:<32} {c_t:>8.0f} / {c_o:<8.0f}")
