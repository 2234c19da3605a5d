#!/usr/bin/env python3
"""Where a decode step's time goes, from a kernel trace: scripts/cupti_trace.cpp's CSV (start_ns,end_ns,name) or
Nsight Systems' `cuda_gpu_trace` CSV. Steps are cut at each launch of the step's first kernel (the embedding);
over the last K steps (medians), each kernel's *critical-path share*: how far its end moves the latest end so far.
Under programmatic dependent launch a kernel starts while its predecessor runs and waits inside (its duration
then counts the wait), so durations overlap and do not sum to the step; the end advances do.
  step_timeline.py TRACE.csv[.gz] [--steps K] [--order N]   (--order: the last step's first N kernels in order)"""
import argparse, collections, csv, gzip, statistics, subprocess

ap = argparse.ArgumentParser()
ap.add_argument('trace')
ap.add_argument('--steps', type=int, default=8)
ap.add_argument('--order', type=int, default=0)
ap.add_argument('--first', default='embedding_kernel')
a = ap.parse_args()
rows = []
with (gzip.open(a.trace, 'rt') if a.trace.endswith('.gz') else open(a.trace)) as f:
    for x in csv.DictReader(f):
        if 'start_ns' in x:
            s, e, n = int(x['start_ns']), int(x['end_ns']), x['name']
        else:
            s = int(float(x['Start (ns)'])); e = s + int(float(x['Duration (ns)'])); n = x['Name']
        if 'memcpy' in n.lower() or 'memset' in n.lower():
            continue
        rows.append((s, e, n))
names = sorted({n for _, _, n in rows})
dem = dict(zip(names, subprocess.run(['c++filt'], input='\n'.join(names), capture_output=True, text=True).stdout.split('\n')))


def short(n):
    d = dem.get(n, n).replace('(anonymous namespace)::', '').replace('void ', '').replace('__nv_bfloat16', 'bf16')
    d = d.replace('(ds::gpu::GemvEpilogue)', 'epi')
    base = d.split('(')[0]
    t = ''
    if '<' in base:
        t, base = base[base.index('<'):][:48], base[:base.index('<')]
    return base.split('::')[-1] + t


rows = sorted((s, e, short(n)) for s, e, n in rows)
idx = [i for i, r in enumerate(rows) if r[2].startswith(a.first)]
if len(idx) < a.steps + 2:
    raise SystemExit(f'too few steps: {len(idx)} launches of {a.first}')
adv = collections.defaultdict(list)
count, spans, order = {}, [], []
for j in range(len(idx) - a.steps - 1, len(idx) - 1):
    step = rows[idx[j]:idx[j + 1]]
    t0 = step[0][0]
    spans.append((rows[idx[j + 1]][0] - t0) / 1e3)
    per, c, latest = collections.defaultdict(float), collections.Counter(), t0
    for s, e, n in step:
        per[n] += max(0, e - latest) / 1e3
        c[n] += 1
        if j == len(idx) - 2 and len(order) < a.order:
            order.append((n, (s - t0) / 1e3, (e - t0) / 1e3, max(0, e - latest) / 1e3))
        latest = max(latest, e)
    for n in per:
        adv[n].append(per[n])
        count[n] = c[n]
med = statistics.median
print(f'step: {len(step)} kernels, span {med(spans):.1f} us (median of {a.steps})')
print('| kernel | launches | critical path us | us a launch |')
print('| --- | --- | --- | --- |')
for n, v in sorted(adv.items(), key=lambda kv: -med(kv[1])):
    print(f'| {n} | {count[n]} | {med(v):.1f} | {med(v) / count[n]:.2f} |')
for n, s, e, d in order:
    print(f'{n:48s} start {s:8.2f} end {e:8.2f} advance {d:6.2f}')
