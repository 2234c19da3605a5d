#!/usr/bin/env bash
# The GPU checks of what is written but not yet measured (the developer switches that are off until a
# measurement decides them; docs/PERF.md names them), in stages that each fit one device call:
#   scripts/gpu-pending.sh STAGE...     (OUT: the log folder, default /tmp/gpu-pending)
#   tests    build test_gpu, bench_model and deltaserve in build-gpu; the unmeasured kernels' tests; the tiny
#            models and the MoE kernels' tests with the switches on (as defaults would run them)
#   fp8      A/B of the staged MoE kernels, FP8 weights: batch-1 TPOT and the batch-16 step, 2 rounds
#   int4     the same with INT4 weights, and the INT4 dense projections
#   bf16     the staged kernels with bf16 weights (a card of 100+ GiB: the 48B bf16 model is 91.5 GiB)
#   peer     the one-GPU peer all-reduce tests (ranks sharing a GPU, which may hang: under a timeout)
# A switch that wins becomes the default in src/config/runtime_env.h; the tables go to docs/PERF.md with the
# commit and the device.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-pending}; mkdir -p "$OUT"
export OUT
B=build-gpu
DC=DELTASERVE_CUDA_DOWN_COMBINE_STAGED=1
GU=DELTASERVE_CUDA_GATE_UP_STAGED=1
I4D=DELTASERVE_CUDA_INT4_DENSE=1
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)   $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>&1 | head -1)"
gib=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits 2>/dev/null | head -1)
gib=$(( ${gib:-0} / 1024 ))

for stage in "$@"; do
  t0=$(date +%s)
  AB=(bash scripts/gpu-switch-ab.sh); [[ -x $B/bench/bench_model ]] || AB+=(--build)  # a fresh machine
  case $stage in
    tests)
      GEN=(); command -v ninja >/dev/null && GEN=(-G Ninja)
      { cmake -S . -B $B "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a -DDS_CUDA=ON &&
          cmake --build $B --target test_gpu bench_model deltaserve -j "$(nproc)"; } > "$OUT/build.log" 2>&1 ||
        { grep -E "error|FAILED" "$OUT/build.log" | head -30; echo "BUILD FAILED"; exit 1; }
      echo "build: $(( $(date +%s) - t0 )) s"
      F='GpuInt4.MoeDownCombine*:GpuInt4.StagedGateUp*:GpuFp8Staged.*:GpuOps.StagedGateUp*:GpuFp8Mma.DownCombine'
      F+=':GpuOps.MoeDownCombine*:GpuFp8.XSplit*:GpuInt4.GroupedWgmma*:GpuInt4Model.*'
      for run in "kernels::$F" "staged on:$DC $GU:TinyModel*:GpuFp8Model*:GpuInt4Model*:GpuFp8Mma.*:GpuInt4.*:GpuOps.Moe*"; do
        label=${run%%:*}; rest=${run#*:}; envs=${rest%%:*}; filter=${rest#*:}
        log="$OUT/test_${label//[^a-z]/_}.log"
        # shellcheck disable=SC2086
        env $envs timeout 280 $B/tests/test_gpu --gtest_filter="$filter" > "$log" 2>&1
        rc=$?
        grep -E "^\[  FAILED  \]|rel L2" "$log" | sort -u | head -30
        echo "test_gpu ($label): rc=$rc, $(grep -cE '^\[       OK \]' "$log") passed, $(grep -cE '^\[  FAILED  \] [A-Za-z]' "$log") failed"
      done ;;
    fp8)
      "${AB[@]}" --quantization fp8 --batch 16 --runs 2 -- base "dc:$DC" "gu:$GU" "both:$DC $GU" ;;
    int4)
      "${AB[@]}" --quantization int4 --batch 16 --runs 2 -- base "both:$DC $GU" "i4d:$I4D" \
        "all:$DC $GU $I4D" ;;
    bf16)
      if ((gib < 100)); then echo "bf16: skipped, the 48B bf16 model needs 100+ GiB ($gib GiB here)"; continue; fi
      "${AB[@]}" --batch 16 --runs 2 -- base "dc:$DC" "gu:$GU" "both:$DC $GU" ;;
    peer)
      for conn in 8 32; do
        CUDA_DEVICE_MAX_CONNECTIONS=$conn DS_TEST_PEER_SHARED_GPU=1 timeout 120 $B/tests/test_gpu \
          --gtest_filter='PeerAllReduce.*' > "$OUT/peer_$conn.log" 2>&1
        echo "peer tests, $conn connections: rc=$?, $(grep -cE '^\[       OK \]' "$OUT/peer_$conn.log") passed"
      done ;;
    *) echo "unknown stage $stage (tests, fp8, int4, bf16, peer)"; exit 2 ;;
  esac
  echo "[$stage: $(( $(date +%s) - t0 )) s]"
done
