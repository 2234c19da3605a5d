#!/usr/bin/env bash
# A/B on one GPU machine in one call: the working tree (B, "new") against a baseline source tree
# (A, "base", e.g. `git archive` of an earlier commit unpacked into an ignored folder).
#   scripts/gpu-ab.sh BASE_DIR [--build] [--model] [--serve] [--long N]
# --build   builds both (new: test_gpu bench_kernels bench_model deltaserve; base: bench_model deltaserve)
# --model   bench_model --quick, A B A B (batch-1 TPOT, batch-100 step, prefill)
# --serve   scripts/gpu-serve-bench.sh for both binaries (c=1 TPOT, c=100 throughput, memory; --long N adds
#           one N-token prompt to each)
# Logs under $OUT; the table of the figures is printed last.
set -uo pipefail
cd "$(dirname "$0")/.."
BASE=$1; shift
OUT=${OUT:-/tmp/gpu-check}; mkdir -p "$OUT"
DO_BUILD=0; DO_MODEL=0; DO_SERVE=0; LONG=0
while (($#)); do
  case $1 in
    --build) DO_BUILD=1 ;; --model) DO_MODEL=1 ;; --serve) DO_SERVE=1 ;; --long) LONG=$2; shift ;;
  esac
  shift
done
NEW=build-gpu; OLD=$BASE/build-gpu
GEN=(); command -v ninja >/dev/null && GEN=(-G Ninja)
if ((DO_BUILD)); then
  t0=$(date +%s)
  cfg() { cmake -S "$1" -B "$2" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a -DDS_CUDA=ON \
          -DDS_BUILD_TESTS="$3" "-DCMAKE_CXX_FLAGS=-include cstdint"; }
  { cfg . $NEW ON && cmake --build $NEW --target test_gpu bench_kernels bench_model deltaserve -j 10; } > "$OUT/build_new.log" 2>&1 &
  P1=$!
  { cfg "$BASE" $OLD OFF && cmake --build $OLD --target bench_model deltaserve -j 6; } > "$OUT/build_base.log" 2>&1 &
  P2=$!
  wait $P1; R1=$?; wait $P2; R2=$?
  echo "build: new rc=$R1, base rc=$R2, $(( $(date +%s) - t0 )) s"
  ((R1)) && grep -E "error|FAILED" "$OUT/build_new.log" | head -30
  ((R2)) && grep -E "error|FAILED" "$OUT/build_base.log" | head -30
fi
if ((DO_MODEL)); then
  for run in 1 2; do
    for side in base new; do
      B=$NEW; [[ $side == base ]] && B=$OLD
      timeout 240 "$B/bench/bench_model" --quick > "$OUT/bench_model_${side}_$run.log" 2>&1 || echo "bench_model $side failed"
      grep -E "^(prefill|decode)" "$OUT/bench_model_${side}_$run.log" | sed "s/^/$side#$run: /"
    done
  done
fi
if ((DO_SERVE)); then
  L=(); ((LONG > 0)) && L=(--long "$LONG")
  bash scripts/gpu-serve-bench.sh "$OLD/deltaserve" base "${L[@]}"
  bash scripts/gpu-serve-bench.sh "$NEW/deltaserve" new "${L[@]}"
fi
