#!/usr/bin/env python3
"""Sums an `ncu --csv --page raw --metrics gpu__time_duration.sum` report per kernel (name + grid), largest
first: `ncu_summary.py REPORT.csv [TITLE]`. Used by gpu-check.sh --profile and the session scripts."""
import collections
import csv
import sys

rows = [r for r in csv.reader(open(sys.argv[1])) if r]
title = sys.argv[2] if len(sys.argv) > 2 else "profiled range"
hdr = next((i for i, r in enumerate(rows) if "Kernel Name" in r), None)
if hdr is None:
    print("ncu: no kernel rows")
    sys.exit()
h = rows[hdr]
kn, td = h.index("Kernel Name"), h.index("gpu__time_duration.sum")
gs = h.index("Grid Size") if "Grid Size" in h else None
print("ncu duration unit:", rows[hdr + 1][td] if len(rows) > hdr + 1 else "?")
agg = collections.defaultdict(lambda: [0, 0.0])
total = 0.0
for r in rows[hdr + 1:]:
    try:
        v = float(r[td].replace(",", ""))  # nanoseconds (the unit row above)
    except ValueError:
        continue
    name = (r[kn] + (" grid " + r[gs] if gs is not None else ""))[-60:]
    agg[name][0] += 1
    agg[name][1] += v
    total += v
print(f"ncu, {title}: {sum(a[0] for a in agg.values())} kernels, {total / 1e3:.1f} us (each kernel alone)")
for name, (n, t) in sorted(agg.items(), key=lambda x: -x[1][1]):
    print(f"  {name:60s} {n:4d} x {t / n / 1e3:7.2f} us = {t / 1e3:8.1f} us")
