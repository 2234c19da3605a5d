#!/usr/bin/env bash
# Serving benchmark of one deltaserve binary on the 48B config with dummy bf16 weights (GPU machine):
# `deltaserve serve --device cuda --load-format dummy` + `deltaserve bench`, 1000 tokens in / 1000 out at
# concurrency 1 (TPOT) and 100 (throughput), optionally one long prompt, while sampling the device memory
# in use every 0.5 s (nvidia-smi), so that "memory never rises after start-up" is measured, not assumed.
#   scripts/gpu-serve-bench.sh BINARY LABEL [--long N] [--c100-prompts N] [--c16-prompts N] [-- extra serve flags]
# (--c16-prompts N: also a concurrency-16 run of N prompts; e.g. `-- --quantization fp8` for FP8 weights)
# Writes $OUT/serve_LABEL.log, $OUT/bench_LABEL.log, $OUT/mem_LABEL.csv; prints a summary block.
# The real Kimi tokenizer is not in the repository: a synthetic 163,842-id tokenizer with the tiny
# fixture's special tokens stands in (prompts are random ids; it only affects detokenisation).
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=$1; LABEL=$2; shift 2
OUT=${OUT:-/tmp/gpu-check}
LONG=0; C100=100; C16=0; EXTRA=()
while (($#)); do
  case $1 in
    --long) LONG=$2; shift ;;
    --c100-prompts) C100=$2; shift ;;
    --c16-prompts) C16=$2; shift ;;
    --) shift; EXTRA=("$@"); break ;;
  esac
  shift
done
M=/tmp/ds48
if [[ ! -f $M/tiktoken.model ]]; then
  mkdir -p $M
  cp tests/fixtures/kimi-linear-48b-a3b.config.json $M/config.json
  python3 - "$M" tests/fixtures/tiny/tokenizer <<'PY'
import base64, json, os, sys
out, tiny = sys.argv[1], sys.argv[2]
n_base = 163584  # Kimi's base vocabulary; specials follow at 163584..163841 like the real tokenizer
with open(os.path.join(out, "tiktoken.model"), "w") as f:
    for i in range(256):
        f.write(f"{base64.b64encode(bytes([i])).decode()} {i}\n")
    for i in range(256, n_base):
        f.write(f"{base64.b64encode(('<t%d>' % i).encode()).decode()} {i}\n")
c = json.load(open(os.path.join(tiny, "tokenizer_config.json")))
shift = n_base - min(int(k) for k in c["added_tokens_decoder"])
dec = {}
for k, v in c["added_tokens_decoder"].items():
    v = dict(v)
    if v["content"].startswith("<|reserved_token_"):  # reserved names carry their id
        v["content"] = "<|reserved_token_%d|>" % (int(k) + shift)
    dec[str(int(k) + shift)] = v
c["added_tokens_decoder"] = dec
if "additional_special_tokens" in c:
    c["additional_special_tokens"] = [t for t in c["additional_special_tokens"] if not t.startswith("<|reserved_token_")]
json.dump(c, open(os.path.join(out, "tokenizer_config.json"), "w"))
PY
fi
PORT=$((8100 + RANDOM % 800))
"$BIN" serve --device cuda --load-format dummy --model $M --served-model-name kimi48 \
    --max-num-seqs 128 --max-num-batched-tokens 8192 --port $PORT "${EXTRA[@]}" > "$OUT/serve_$LABEL.log" 2>&1 &
SPID=$!
for i in $(seq 1 240); do
  curl -sf http://127.0.0.1:$PORT/health > /dev/null 2>&1 && break
  kill -0 $SPID 2>/dev/null || break
  sleep 1
done
if ! curl -sf http://127.0.0.1:$PORT/health > /dev/null 2>&1; then
  echo "[$LABEL] server did not come up"; tail -20 "$OUT/serve_$LABEL.log"; kill $SPID 2>/dev/null; exit 1
fi
mem() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1; }
MEM0=$(mem)
( while kill -0 $SPID 2>/dev/null; do echo "$(date +%s.%N),$(mem)"; sleep 0.5; done ) > "$OUT/mem_$LABEL.csv" &
MPID=$!
B=("$BIN" bench --base-url http://127.0.0.1:$PORT --dataset random --ignore-eos --no-progress)
{
  echo "== concurrency 1"
  timeout 200 "${B[@]}" --random-input-len 1000 --random-output-len 1000 --num-prompts 5 --max-concurrency 1
  if ((C16 > 0)); then
    echo "== concurrency 16"
    timeout 300 "${B[@]}" --random-input-len 1000 --random-output-len 1000 --num-prompts "$C16" --max-concurrency 16
  fi
  echo "== concurrency 100"
  timeout 300 "${B[@]}" --random-input-len 1000 --random-output-len 1000 --num-prompts "$C100" --max-concurrency 100
  if ((LONG > 0)); then
    echo "== one prompt of $LONG tokens"
    timeout 300 "${B[@]}" --random-input-len "$LONG" --random-output-len 32 --num-prompts 1 --max-concurrency 1
  fi
} > "$OUT/bench_$LABEL.log" 2>&1
kill $MPID 2>/dev/null; wait $MPID 2>/dev/null
MEMMAX=$(cut -d, -f2 "$OUT/mem_$LABEL.csv" | sort -n | tail -1)
kill $SPID 2>/dev/null; wait $SPID 2>/dev/null
echo "[$LABEL] device memory in use (MiB): after start-up $MEM0, highest while serving ${MEMMAX:-?}"
grep -E "memory|Memory plan|workspace" "$OUT/serve_$LABEL.log" | head -20 | sed "s/^/[$LABEL] /"
grep -iE "^==|output token throughput|TPOT|TTFT|successful|failed" "$OUT/bench_$LABEL.log" | grep -viE "p99 |p90 " | sed "s/^/[$LABEL] /"
