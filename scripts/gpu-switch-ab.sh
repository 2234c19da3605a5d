#!/usr/bin/env bash
# A/B of developer switches (src/config/runtime_env.h) on the GPU machine in one call: bench_model once per
# setting, one process each (the switches are read once per process), settings interleaved over --runs
# rounds, then a table of batch-1 TPOT, the batch-B step, prefill throughput and the logits check.
#   scripts/gpu-switch-ab.sh [--build] [--quantization fp8|int4] [--batch B] [--prefill] [--runs N] \
#                            -- 'LABEL' 'LABEL:VAR=V VAR2=V' ...
# A setting is a label, then optionally ':' and the environment it runs with (none: the defaults).
# --build configures and builds bench_model in build-gpu first; --prefill adds the prefill measurements
# (4 x 2,048 tokens in one step, and a 1,000-token TTFT). Logs: $OUT (default /tmp/gpu-switch-ab).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-switch-ab}; mkdir -p "$OUT"
BUILD=0; Q=(); BATCH=16; PREFILL=--no-prefill; RUNS=1
while (($#)); do
  case $1 in
    --build) BUILD=1 ;;
    --quantization) Q=(--quantization "$2"); shift ;;
    --batch) BATCH=$2; shift ;;
    --prefill) PREFILL="" ;;
    --runs) RUNS=$2; shift ;;
    --) shift; break ;;
  esac
  shift
done
(($#)) || { echo "no settings given (after --)"; exit 2; }
B=build-gpu
if ((BUILD)); then
  GEN=(); command -v ninja >/dev/null && GEN=(-G Ninja)
  cmake -S . -B $B "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a -DDS_CUDA=ON > "$OUT/build.log" 2>&1 &&
    cmake --build $B --target bench_model -j "$(nproc)" >> "$OUT/build.log" 2>&1 ||
    { grep -E "error|FAILED" "$OUT/build.log" | head -20; exit 1; }
fi
declare -A TP STEP PRE CHECK
for ((run = 1; run <= RUNS; ++run)); do
  for setting in "$@"; do
    label=${setting%%:*}; envs=""; [[ $setting == *:* ]] && envs=${setting#*:}
    log="$OUT/${label//[^A-Za-z0-9_.-]/_}_$run.log"
    # shellcheck disable=SC2086
    env $envs timeout 240 $B/bench/bench_model --quick $PREFILL --batch "$BATCH" "${Q[@]}" > "$log" 2>&1 ||
      echo "[$label #$run] bench_model failed: $(grep -m1 -iE "error|what" "$log")"
    TP[$label]+="$(sed -nE 's/^decode batch 1 .*TPOT ([0-9.]+) ms.*/\1/p' "$log") "
    STEP[$label]+="$(sed -nE "s/^decode batch $BATCH .*step ([0-9.]+) ms.*/\1/p" "$log") "
    PRE[$label]+="$(sed -nE 's/^prefill: ([0-9]+) tokens\/s.*/\1/p' "$log") "
    CHECK[$label]="$(sed -nE 's/^logits check \(batch [0-9]+\): ([0-9]+) non-finite.*; ([0-9]+) distinct argmax/\1 non-finite, \2 distinct/p' "$log")"
  done
done
echo "| setting | TPOT b1 ms | step b$BATCH ms | prefill tok/s | logits check |"
echo "| --- | --- | --- | --- | --- |"
for setting in "$@"; do
  label=${setting%%:*}
  echo "| $setting | ${TP[$label]} | ${STEP[$label]} | ${PRE[$label]:-} | ${CHECK[$label]} |"
done
