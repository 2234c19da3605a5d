#!/usr/bin/env bash
# One call on the GPU machine for the KDA/MLA attention kernels: build (bench/kda_build.sh), run their
# GPU tests, the kernel benchmark and (when .peers/fla is present) fla's Triton kernels on the same GPU.
# Logs go to $OUT (the device tool's output folder) or /tmp/kda_out. Usage:
#   bench/kda_gpu_run.sh [--quick] [--no-fla] [--no-bench]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/kda_out}
mkdir -p "$OUT"
QUICK=""; FLA=1; BENCH=1
for a in "$@"; do
  case $a in --quick) QUICK=--quick ;; --no-fla) FLA=0 ;; --no-bench) BENCH=0 ;; esac
done
{ nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv
  if [[ -d .git ]]; then git rev-parse HEAD; else echo "commit: ${DS_COMMIT:-unknown (no git metadata here; pass DS_COMMIT)}"; fi
} | tee "$OUT/gpu.txt"
start=$(date +%s)
if ! OUT_DIR=build-kda bash bench/kda_build.sh "$(nproc)" > "$OUT/build.log" 2>&1; then
  tail -40 "$OUT/build.log"; echo "BUILD FAILED"; exit 1
fi
cp build-kda/ptxas.txt "$OUT/ptxas.txt"
echo "build: $(( $(date +%s) - start )) s"
timeout 400 build-kda/test_attn --gtest_color=no > "$OUT/test.log" 2>&1; trc=$?
echo "tests: rc=$trc, $(( $(date +%s) - start )) s"
if (( BENCH )); then
  timeout 300 build-kda/kda_bench $QUICK > "$OUT/bench.log" 2>&1; echo "bench: rc=$?, $(( $(date +%s) - start )) s"
fi
if (( FLA )) && [[ -d .peers/fla ]]; then
  PYTHONPATH=.peers/fla${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 timeout 300 python3 bench/kda_fla_bench.py $QUICK \
    > "$OUT/fla.log" 2>&1; echo "fla: rc=$?, $(( $(date +%s) - start )) s"
fi
echo "==== failures"; grep -E "Failure|FAILED|error|Expected|Which is|actual" "$OUT/test.log" | head -60
echo "==== errors"; grep -E "^\[(kda|mla)" "$OUT/test.log"
grep -E "^\[  (PASSED|FAILED) " "$OUT/test.log"
[[ -f "$OUT/bench.log" ]] && { echo "==== bench"; sed -n '/^| kernel/,$p' "$OUT/bench.log"; grep -iE "error|fail" "$OUT/bench.log" | head; }
[[ -f "$OUT/fla.log" ]] && { echo "==== fla"; sed -n '/^| kernel/,$p' "$OUT/fla.log"; grep -iE "error|skipped" "$OUT/fla.log" | tail -3; }
exit $trc
