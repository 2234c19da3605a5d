#!/usr/bin/env bash
# Prefix-caching measurements on the GPU (issue 14, docs/PREFIX_CACHE.md): one server with the cache on
# (the default) or off, then the workloads; run it once per setting and compare.
# Usage: scripts/gpu-prefix-bench.sh BIN on|off [GSM8K_DATA_DIR] [-- extra serve flags, e.g. --quantization fp8]
# ONLY="shared16x32 ..." runs only the named workloads. Needs the 48B dummy model directory /tmp/ds48
# (scripts/synthetic-48b.sh /tmp/ds48, which scripts/gpu-serve-bench.sh also runs).
# Results: $OUT (default /tmp/gpu-prefix)/{serve,bench}_<setting>.log, JSON per workload, /metrics after each.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=$1; MODE=$2; shift 2
GSM=""; [[ $# -gt 0 && $1 != -- ]] && { GSM=$1; shift; }
[[ ${1:-} == -- ]] && shift
EXTRA=("$@")
OUT=${OUT:-/tmp/gpu-prefix}
M=/tmp/ds48
[[ -f $M/config.json ]] || { echo "no $M: run scripts/gpu-serve-bench.sh once first"; exit 1; }
mkdir -p "$OUT"
FLAG=(); [[ $MODE == off ]] && FLAG=(--no-enable-prefix-caching)
PORT=$((8100 + RANDOM % 800))
"$BIN" serve --device cuda --load-format dummy --model $M --served-model-name kimi48 --max-num-seqs 128 \
  --max-num-batched-tokens 8192 --max-model-len 65536 --port $PORT "${FLAG[@]}" "${EXTRA[@]}" > "$OUT/serve_$MODE.log" 2>&1 &
SPID=$!
for _ in $(seq 1 300); do curl -sf http://127.0.0.1:$PORT/health > /dev/null 2>&1 && break; sleep 1; done
curl -sf http://127.0.0.1:$PORT/health > /dev/null || { tail -30 "$OUT/serve_$MODE.log"; kill $SPID; exit 1; }
B=("$BIN" bench --base-url http://127.0.0.1:$PORT --no-progress --warmup 0)
run() {  # NAME ARGS...: one workload, its JSON and the server's prefix-cache counters after it
  local name=$1; shift
  [[ -n ${ONLY:-} && " $ONLY " != *" $name "* ]] && return
  echo "== $name"
  timeout 900 "${B[@]}" "$@" --output-json "$OUT/${name}_$MODE.json"
  curl -s http://127.0.0.1:$PORT/metrics | grep -E "^deltaserve_(prefix_|prompt_tokens_total)"
}
{
  # the next turn of a 32,000-token conversation (+ a 200-token stand-in answer and a 200-token question):
  # TTFT of the second request (ttfts[1] in the JSON) against the cache-off run
  run multiturn32k --dataset multi-turn --multi-turn-conversations 1 --multi-turn-turns 2 \
    --multi-turn-first-len 32000 --multi-turn-question-len 200 --multi-turn-answer-len 200 --max-concurrency 1
  # a 4,000-token prefix reused: 8 requests one at a time (the first is cold)
  run prefix4000 --dataset shared-prefix --shared-prefix-groups 1 --shared-prefix-prompts 8 --shared-prefix-len 4000 \
    --shared-suffix-len 200 --shared-output-len 16 --max-concurrency 1
  # issue 14's throughput workload: 16 groups x 32 requests, 4,000 + 200 in, 200 out, concurrency 64
  run shared16x32 --dataset shared-prefix --shared-prefix-groups 16 --shared-prefix-prompts 32 \
    --shared-prefix-len 4000 --shared-suffix-len 200 --shared-output-len 200 --max-concurrency 64
  # 64 concurrent requests with one 2,000-token system prompt
  run system64 --dataset shared-prefix --shared-prefix-groups 1 --shared-prefix-prompts 64 --shared-prefix-len 2000 \
    --shared-suffix-len 100 --shared-output-len 200 --max-concurrency 64
  # multi-turn chat: 16 conversations x 6 turns
  run multiturn16x6 --dataset multi-turn --multi-turn-conversations 16 --multi-turn-turns 6 \
    --multi-turn-question-len 300 --multi-turn-answer-len 200 --max-concurrency 16
  if [[ -n $GSM ]]; then
    echo "== gsm8k 200 questions, 5 shots (prefill computed = queries - hits; cache off: prompt tokens)"
    timeout 900 "$BIN" eval gsm8k --base-url http://127.0.0.1:$PORT --data-dir "$GSM" --num-questions 200 --no-progress
    curl -s http://127.0.0.1:$PORT/metrics | grep -E "^deltaserve_(prefix_|prompt_tokens_total)"
  fi
} > "$OUT/bench_$MODE.log" 2>&1
kill $SPID 2>/dev/null; wait $SPID 2>/dev/null
grep -E "snapshot|prefix caching" "$OUT/serve_$MODE.log" | head -5 | sed "s/^/[$MODE] /"
grep -E "^==|^deltaserve_prefix_cache|Output token throughput|Median TTFT|Successful|Failed" "$OUT/bench_$MODE.log" \
  | sed "s/^/[$MODE] /"
for f in "$OUT"/multiturn32k_$MODE.json; do
  [[ -f $f ]] && python3 -c "import json,sys; j=json.load(open('$f')); print('[$MODE] 32K next-turn TTFT (s):', j['ttfts'][1])"
done
