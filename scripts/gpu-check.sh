#!/usr/bin/env bash
# The CUDA backend's check on a GPU machine, in one call: configure + build (all cores), run test_gpu,
# the kernel benchmarks (vs roofline) and the 48B dummy-model benchmark (load, memory, capacity,
# prefill, decode TPOT at batch 1, step time at batch 100), then print a short table.
# Logs go to $OUT (the device tool's output folder; default /tmp/gpu-check).
#   scripts/gpu-check.sh [--quick] [--no-tests] [--no-bench] [--no-model] [--serve] [--profile] [--profile-prefill]
#                        [--filter GTEST_FILTER] [--decode-at N] [--trace]
# --decode-at N: also the batch-1 decode step over N cached positions (bench_model --decode-at, bf16 and FP8
# latent caches: issue 13's "TPOT after 1M" without the 3-minute prefill; e.g. 1048000).
# --profile: Nsight Compute (ncu, when present) times every kernel of one batch-1 decode step of the 48B
# model (run eagerly: NVTX ranges do not reach kernels replayed from a graph), each alone (so no
# overlap between kernels), and prints the time per kernel name. --profile-prefill does the same for one
# 4 x 2048-token prefill step (eager).
# --trace: every kernel of the batch-1 decode step in its CUDA graph, as it runs (scripts/cupti_trace.cpp, an
# LD_PRELOAD CUPTI tracer built here with g++: the machine has no Nsight Systems), for bf16, fp8 and int4 weights,
# the batch-16 step for fp8 and int4, and the 4 x 2,048-token prefill step for bf16 and fp8 (bf16 only on a card
# of 100+ GB); scripts/step_timeline.py prints each kernel's share of the step's critical path.
# --serve also runs scripts/gpu-serve-bench.sh: `deltaserve serve --device cuda --load-format dummy` on the
# 48B config and `deltaserve bench` against it (TPOT at concurrency 1, throughput at concurrency 100,
# 1000 tokens in / 1000 out, device memory sampled). scripts/gpu-ab.sh compares against a baseline tree.
# COMMIT=<git rev> names the source revision in the logs when .git is not present.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-check}
BUILD=${BUILD_DIR:-build-gpu}
mkdir -p "$OUT"
QUICK=""; TESTS=1; BENCH=1; MODEL=1; SERVE=0; PROFILE=0; PROFILE_PREFILL=0; FILTER="*"; DECODE_AT=0; TRACE=0
while (($#)); do
  case $1 in
    --quick) QUICK=--quick ;;
    --no-tests) TESTS=0 ;;
    --no-bench) BENCH=0 ;;
    --no-model) MODEL=0 ;;
    --serve) SERVE=1 ;;
    --profile) PROFILE=1 ;;
    --profile-prefill) PROFILE_PREFILL=1 ;;
    --filter) FILTER=$2; shift ;;
    --decode-at) DECODE_AT=$2; shift ;;
    --trace) TRACE=1 ;;
  esac
  shift
done
COMMIT=${COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
# NCCL (multi-GPU collectives, loaded at run time): the loader's libnccl.so.2, else the nvidia-nccl wheel's
if [[ -z ${DELTASERVE_NCCL_LIBRARY:-} ]] && ! ldconfig -p 2>/dev/null | grep -q 'libnccl.so.2 '; then
  NCCL_WHEEL=$(python3 -c "import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], 'lib', 'libnccl.so.2'))" 2>/dev/null)
  [[ -f $NCCL_WHEEL ]] && export DELTASERVE_NCCL_LIBRARY=$NCCL_WHEEL
fi
SUMMARY=$OUT/summary.txt
{
  echo "commit: $COMMIT   date: $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv,noheader 2>&1
} | tee "$SUMMARY"

t0=$(date +%s)
GEN=(); command -v ninja >/dev/null && GEN=(-G Ninja)
if ! cmake -S . -B "$BUILD" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a \
     -DDS_CUDA=ON > "$OUT/build.log" 2>&1; then
  tail -30 "$OUT/build.log"; echo "CONFIGURE FAILED" | tee -a "$SUMMARY"; exit 1
fi
if ! cmake --build "$BUILD" --target test_gpu bench_kernels bench_model bench_comm -j "$(nproc)" >> "$OUT/build.log" 2>&1; then
  grep -E "error|FAILED" "$OUT/build.log" | head -30; echo "BUILD FAILED" | tee -a "$SUMMARY"; exit 1
fi
# the server binary is optional here (other modules may be mid-change)
if cmake --build "$BUILD" --target deltaserve -j "$(nproc)" >> "$OUT/build.log" 2>&1; then DS_OK=1; else DS_OK=0; fi
echo "build: $(( $(date +%s) - t0 )) s (deltaserve binary: $([[ $DS_OK == 1 ]] && echo built || echo FAILED))" | tee -a "$SUMMARY"

if [[ $TESTS == 1 ]]; then
  t1=$(date +%s)
  timeout 480 "$BUILD/tests/test_gpu" --gtest_filter="$FILTER" > "$OUT/test_gpu.log" 2>&1
  rc=$?
  grep -E "^\[  FAILED  \]|rel L2|greedy:" "$OUT/test_gpu.log" | sort -u | head -60
  echo "test_gpu: rc=$rc, $(grep -cE '^\[       OK \]' "$OUT/test_gpu.log") passed, $(grep -cE '^\[  FAILED  \] [A-Za-z]' "$OUT/test_gpu.log") failed, $(( $(date +%s) - t1 )) s" | tee -a "$SUMMARY"
fi
if [[ $BENCH == 1 ]]; then
  timeout 240 "$BUILD/bench/bench_kernels" $QUICK > "$OUT/bench_kernels.log" 2>&1 || echo "bench_kernels failed rc=$?" | tee -a "$SUMMARY"
  sed -n '/^Kernel timings/,$p' "$OUT/bench_kernels.log" | tee -a "$SUMMARY"
fi
# the tensor-parallel collectives at decode sizes, where there are several GPUs (issue 18)
if [[ $BENCH == 1 ]] && (( $(nvidia-smi -L 2>/dev/null | wc -l) >= 2 )); then
  timeout 120 "$BUILD/bench/bench_comm" > "$OUT/bench_comm.log" 2>&1 || echo "bench_comm failed rc=$?" | tee -a "$SUMMARY"
  sed -n '/^Collectives/,$p' "$OUT/bench_comm.log" | tee -a "$SUMMARY"
fi
if [[ $MODEL == 1 ]]; then
  timeout 420 "$BUILD/bench/bench_model" $QUICK > "$OUT/bench_model.log" 2>&1 || echo "bench_model failed rc=$?" | tee -a "$SUMMARY"
  grep -E "^(load|prefill|decode)|CUDA (memory|weights|backend)" "$OUT/bench_model.log" | tee -a "$SUMMARY"
  sed -n '/^| 48B/,$p' "$OUT/bench_model.log" | tee -a "$SUMMARY"
  # the same batch-1 decode without programmatic dependent launch, for comparison
  DELTASERVE_CUDA_PDL=0 timeout 120 "$BUILD/bench/bench_model" --quick --decode-only 2>&1 | grep -E "^decode batch 1 " | sed 's/^/PDL off: /' | tee -a "$SUMMARY"
fi
if [[ $MODEL == 1 && $DECODE_AT -gt 0 ]]; then
  for kv in auto fp8; do
    timeout 120 "$BUILD/bench/bench_model" --quick --decode-only --decode-at "$DECODE_AT" --kv-cache-dtype $kv 2>&1 \
      | grep -E "^decode batch 1 at" | tee -a "$SUMMARY"
  done
fi
if [[ $PROFILE == 1 ]]; then
  NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1 || true)
  if [[ -n "$NCU" ]]; then
    DELTASERVE_CUDA_GRAPHS=0 timeout 400 "$NCU" --clock-control none --nvtx --nvtx-include "decode_step/" --metrics gpu__time_duration.sum \
      --kernel-name-base function --csv --page raw "$BUILD/bench/bench_model" --quick --decode-only --profile-step > "$OUT/ncu.csv" 2> "$OUT/ncu.err"
    python3 scripts/ncu_summary.py "$OUT/ncu.csv" "one batch-1 decode step" | tee -a "$SUMMARY"
  else
    echo "profile: ncu not found" | tee -a "$SUMMARY"
  fi
fi
if [[ $PROFILE_PREFILL == 1 ]]; then
  NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1 || true)
  if [[ -n "$NCU" ]]; then
    timeout 400 "$NCU" --clock-control none --nvtx --nvtx-include "prefill_step/" --metrics gpu__time_duration.sum \
      --kernel-name-base function --csv --page raw "$BUILD/bench/bench_model" --quick --profile-prefill > "$OUT/ncu_prefill.csv" 2> "$OUT/ncu_prefill.err"
    python3 scripts/ncu_summary.py "$OUT/ncu_prefill.csv" "one 4 x 2048-token prefill step" | tee -a "$SUMMARY"
  else
    echo "profile: ncu not found" | tee -a "$SUMMARY"
  fi
fi
if [[ $TRACE == 1 ]]; then
  CUDA_ROOT=$(dirname "$(dirname "$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)")")
  CUPTI_H=$(find "$CUDA_ROOT"/ /usr/local/cuda*/ -name cupti.h 2>/dev/null | head -1)
  CUPTI_SO=$(find "$CUDA_ROOT"/ /usr/local/cuda*/ -name 'libcupti.so*' 2>/dev/null | head -1)
  if [[ -n $CUPTI_H && -n $CUPTI_SO ]] && g++ -std=c++17 -O2 -shared -fPIC -I"$(dirname "$CUPTI_H")" \
       -I"$CUDA_ROOT/include" scripts/cupti_trace.cpp -o "$OUT/cupti_trace.so" "$CUPTI_SO" \
       -Wl,-rpath,"$(dirname "$CUPTI_SO")" -lpthread; then
    # batch 1 (--decode-only), then for the quantized formats batch 16 (--no-prefill --batch 16: its steps come
    # after the batch-1 ones, so the last steps the summary reads are batch 16's), then issue 13's 4 x 2,048-token
    # prefill step (--profile-prefill: the prefill steps alone, then bench_model exits; the last 2 are timed ones)
    for run in none:1 fp8:1 int4:1 fp8:16 int4:16 none:prefill fp8:prefill; do
      q=${run%%:*} b=${run##*:}
      QF=(); [[ $q != none ]] && QF=(--quantization $q)
      BF=(--decode-only); STEPS=8
      if [[ $b == prefill ]]; then BF=(--profile-prefill); STEPS=2; elif [[ $b != 1 ]]; then BF=(--no-prefill --batch $b); fi
      [[ $q == none ]] && (( $(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1) < 100000 )) &&
        { echo "trace: bf16 skipped (the 48B bf16 model needs ~92 GiB)" | tee -a "$SUMMARY"; continue; }
      tag=${q}_b$b
      CUPTI_TRACE_OUT="$OUT/trace_$tag.csv" LD_PRELOAD="$OUT/cupti_trace.so" timeout 200 "$BUILD/bench/bench_model" --quick \
        "${BF[@]}" "${QF[@]}" > "$OUT/trace_$tag.log" 2>&1 || echo "trace $tag: bench_model failed" | tee -a "$SUMMARY"
      case $b in
        1) want='TPOT batch 1' ;;
        prefill) want='prefill step: wall' ;;
        *) want="decode step batch $b" ;;
      esac
      echo "step, weights $q, batch $b: $(grep -m1 -E "$want" "$OUT/trace_$tag.log")" | tee -a "$SUMMARY"
      python3 scripts/step_timeline.py "$OUT/trace_$tag.csv" --steps $STEPS | head -24 | tee -a "$SUMMARY"
      gzip -f "$OUT/trace_$tag.csv"
    done
  else
    echo "trace: CUPTI not found or the tracer did not build" | tee -a "$SUMMARY"
  fi
fi
if [[ $SERVE == 1 && $DS_OK == 1 ]]; then
  OUT=$OUT bash scripts/gpu-serve-bench.sh "$BUILD/deltaserve" serve | tee -a "$SUMMARY"
fi
echo "total: $(( $(date +%s) - t0 )) s" | tee -a "$SUMMARY"
