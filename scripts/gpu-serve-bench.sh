#!/usr/bin/env bash
# Serving benchmark of one deltaserve binary on the 48B config with dummy bf16 weights (GPU machine):
# `deltaserve serve --device cuda --load-format dummy` + `deltaserve bench`, 1000 tokens in / 1000 out at
# concurrency 1 (TPOT) and 100 (throughput), optionally one long prompt, while sampling the device memory
# in use every 0.5 s (nvidia-smi), so that "memory never rises after start-up" is measured, not assumed.
#   scripts/gpu-serve-bench.sh BINARY LABEL [--long N] [--long-only] [--long-timeout S] [--c100-prompts N]
#                              [--c16-prompts N] [--c1-prompts N] [-- extra serve flags]
# --long-only skips the concurrency-1/16/100 runs; --long-timeout bounds the long prompt's bench (300 s; it
# runs with --warmup 0: the server's start-up warm-up has run every kernel, and a warm-up copy would double it);
# --c16-prompts N: also a concurrency-16 run of N prompts; --c100-prompts 0 skips the concurrency-100 run; --c1-prompts N: the concurrency-1 run's prompts (5);
# issue 17's counts are `--c1-prompts 10 --c16-prompts 80 --c100-prompts 500`; e.g. `-- --quantization fp8`.
# Writes $OUT/serve_LABEL.log, $OUT/bench_LABEL.log, $OUT/mem_LABEL.csv; prints a summary block.
# The real Kimi tokenizer is not in the repository: a synthetic 163,842-id tokenizer with the tiny
# fixture's special tokens stands in (prompts are random ids; it only affects detokenisation).
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=$1; LABEL=$2; shift 2
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"  # (a fresh folder: the server log goes there before anything else)
LONG=0; LONG_ONLY=0; LONG_TIMEOUT=300; C100=100; C16=0; C1=5; EXTRA=()
while (($#)); do
  case $1 in
    --long) LONG=$2; shift ;;
    --long-only) LONG_ONLY=1 ;;
    --long-timeout) LONG_TIMEOUT=$2; shift ;;
    --c100-prompts) C100=$2; shift ;;
    --c16-prompts) C16=$2; shift ;;
    --c1-prompts) C1=$2; shift ;;
    --) shift; EXTRA=("$@"); break ;;
  esac
  shift
done
source scripts/serve-48b.sh
start_48b_server "$BIN" "$OUT/serve_$LABEL.log" "${EXTRA[@]}" || { echo "[$LABEL] server did not come up"; exit 1; }
mem() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1; }
MEM0=$(mem)
( while kill -0 $SPID 2>/dev/null; do echo "$(date +%s.%N),$(mem)"; sleep 0.5; done ) > "$OUT/mem_$LABEL.csv" &
MPID=$!
B=("$BIN" bench --base-url http://127.0.0.1:$PORT --dataset random --ignore-eos --no-progress)
{
  if ((!LONG_ONLY)); then
    echo "== concurrency 1"
    timeout 200 "${B[@]}" --random-input-len 1000 --random-output-len 1000 --num-prompts "$C1" --max-concurrency 1
    if ((C16 > 0)); then
      echo "== concurrency 16"
      timeout 300 "${B[@]}" --random-input-len 1000 --random-output-len 1000 --num-prompts "$C16" --max-concurrency 16
    fi
    if ((C100 > 0)); then
      echo "== concurrency 100"
      timeout 400 "${B[@]}" --random-input-len 1000 --random-output-len 1000 --num-prompts "$C100" --max-concurrency 100
    fi
  fi
  if ((LONG > 0)); then
    echo "== one prompt of $LONG tokens"
    timeout "$LONG_TIMEOUT" "${B[@]}" --random-input-len "$LONG" --random-output-len 32 --num-prompts 1 --max-concurrency 1 \
      --warmup 0
  fi
} > "$OUT/bench_$LABEL.log" 2>&1
kill $MPID 2>/dev/null; wait $MPID 2>/dev/null
MEMMAX=$(cut -d, -f2 "$OUT/mem_$LABEL.csv" | sort -n | tail -1)
kill $SPID 2>/dev/null; wait $SPID 2>/dev/null
echo "[$LABEL] device memory in use (MiB): after start-up $MEM0, highest while serving ${MEMMAX:-?}"
grep -E "memory|Memory plan|workspace" "$OUT/serve_$LABEL.log" | head -20 | sed "s/^/[$LABEL] /"
grep -iE "^==|output token throughput|TPOT|TTFT|successful|failed" "$OUT/bench_$LABEL.log" | grep -viE "p99 |p90 " | sed "s/^/[$LABEL] /"
