#!/usr/bin/env bash
# Issue 13, "beside a long prefill" (GPU machine, 48B config, dummy bf16 weights): one server with
# --max-model-len 1048576; the long prompt alone (N tokens in, 32 out: its TTFT), then the same prompt again
# with 8 chats (1000 in / 500 out, concurrency 8) started DELAY seconds after it, while it prefills: the
# chats' P99 ITL (target <= 250 ms) and the long prompt's TTFT against its alone time (target <= 1.15x).
# Device memory in use is sampled every 0.5 s (it must never rise above the start-up figure).
#   scripts/gpu-long-beside.sh BINARY [--long N] [--delay S] [--timeout S] [--alone-only | --beside-only]
#                              [-- extra serve flags]
# N defaults to 1048000, DELAY to 20 s, the timeout of each long request to 420 s. The two runs together
# take ~7-8 minutes with the server start (the H200, session 15: 177 s alone): --alone-only and
# --beside-only split them over two calls
# (pass --alone-ttft MS to --beside-only to get the ratio). Writes $OUT/long_beside_*.log and prints a summary.
# The three prompts use different seeds (prefix caching is on by default). Every bench runs with --warmup 0:
# a warm-up copy of the long prompt would be the one the chats run beside (session 15's run). With DELAY 20 the chats arrive at
# ~250K of context; the scheduler's model (docs/SCHEDULER.md, "Step cost") predicts chats' steps <= ~200 ms
# and the long TTFT x1.2 of alone, x1.1 with `-- --long-prefill-interval 2` (the alone run is unaffected).
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=$1; shift
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
LONG=1048000; DELAY=20; TIMEOUT=420; ALONE=1; BESIDE=1; ALONE_TTFT=""; EXTRA=()
while (($#)); do
  case $1 in
    --long) LONG=$2; shift ;;
    --delay) DELAY=$2; shift ;;
    --timeout) TIMEOUT=$2; shift ;;
    --alone-only) BESIDE=0 ;;
    --beside-only) ALONE=0 ;;
    --alone-ttft) ALONE_TTFT=$2; shift ;;
    --) shift; EXTRA=("$@"); break ;;
  esac
  shift
done
source scripts/serve-48b.sh
start_48b_server "$BIN" "$OUT/long_beside_serve.log" --max-model-len 1048576 "${EXTRA[@]}" \
  || { echo "[long-beside] server did not come up"; exit 1; }
mem() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1; }
MEM0=$(mem)
( while kill -0 $SPID 2>/dev/null; do echo "$(date +%s.%N),$(mem)"; sleep 0.5; done ) > "$OUT/long_beside_mem.csv" &
MPID=$!
B=("$BIN" bench --base-url http://127.0.0.1:$PORT --dataset random --ignore-eos --no-progress)
long_run() {  # $1: log, $2: seed (the runs' prompts differ: prefix caching is on by default)
  timeout "$TIMEOUT" "${B[@]}" --random-input-len "$LONG" --random-output-len 32 --num-prompts 1 \
    --max-concurrency 1 --seed "$2" --warmup 0 > "$1" 2>&1
}
field() { grep -E "^$2" "$1" | head -1 | awk '{print $NF}'; }  # $1: log, $2: row label
if ((ALONE)); then
  echo "[long-beside] alone: one prompt of $LONG tokens"
  long_run "$OUT/long_beside_alone.log" 11
  ALONE_TTFT=$(field "$OUT/long_beside_alone.log" "Mean TTFT")
  echo "[long-beside] alone: TTFT ${ALONE_TTFT:-?} ms ($(field "$OUT/long_beside_alone.log" "Successful requests") done)"
fi
if ((BESIDE)); then
  echo "[long-beside] beside: the same prompt, 8 chats (1000 in / 500 out) started after ${DELAY} s"
  long_run "$OUT/long_beside_long.log" 12 &
  LPID=$!
  sleep "$DELAY"
  timeout "$TIMEOUT" "${B[@]}" --random-input-len 1000 --random-output-len 500 --num-prompts 8 \
    --max-concurrency 8 --metric-percentiles 50,99 --seed 13 --warmup 0 > "$OUT/long_beside_chats.log" 2>&1
  wait $LPID
  TTFT=$(field "$OUT/long_beside_long.log" "Mean TTFT")
  echo "[long-beside] beside: long TTFT ${TTFT:-?} ms ($(field "$OUT/long_beside_long.log" "Successful requests") done)"
  echo "[long-beside] chats: P99 ITL $(field "$OUT/long_beside_chats.log" "P99 ITL") ms (target <= 250)," \
       "median ITL $(field "$OUT/long_beside_chats.log" "P50 ITL") ms, max ITL $(field "$OUT/long_beside_chats.log" "Max ITL") ms," \
       "mean TTFT $(field "$OUT/long_beside_chats.log" "Mean TTFT") ms, $(field "$OUT/long_beside_chats.log" "Successful requests") of 8 done"
  if [[ -n "$ALONE_TTFT" && -n "$TTFT" ]]; then
    echo "[long-beside] long TTFT beside / alone: $(awk -v a="$ALONE_TTFT" -v b="$TTFT" 'BEGIN{printf "%.3f", b/a}') (target <= 1.15)"
  fi
fi
kill $MPID 2>/dev/null; wait $MPID 2>/dev/null
MEMMAX=$(cut -d, -f2 "$OUT/long_beside_mem.csv" | sort -n | tail -1)
kill $SPID 2>/dev/null; wait $SPID 2>/dev/null
echo "[long-beside] device memory in use (MiB): after start-up $MEM0, highest while serving ${MEMMAX:-?}"
grep -E "step budget" "$OUT/long_beside_serve.log" | head -2 | sed "s/^/[long-beside] /"
