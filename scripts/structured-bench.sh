#!/usr/bin/env bash
# Issue 15's throughput check on the GPU machine: structured-output requests at concurrency 64 against the
# same requests unconstrained, 48B config with dummy bf16 weights (scripts/synthetic-48b.sh). Needs the
# server side of issue 15 (guided_grammar, response_format).
#   scripts/structured-bench.sh BINARY [PROMPTS]      (default 256 prompts, 64 in flight)
# Runs, on one server:
#   plain   : random 512-token prompts, 256 output tokens, --ignore-eos
#   grammar : the same with guided_grammar = JSON objects one per line, forever (root ::= (obj "\n")+): the
#             grammar never completes, so every request makes exactly 256 tokens, like plain
#   schema  : the same with response_format json_schema (a person record); requests end when the JSON does
#             (shorter outputs), so compare output tok/s only
# and prints each run's output token throughput and grammar/plain (the issue's bound: >= 0.90).
# Logs in $OUT (default /tmp/structured-bench).
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=$1
N=${2:-256}
OUT=${OUT:-/tmp/structured-bench}
mkdir -p "$OUT"
source scripts/serve-48b.sh
start_48b_server "$BIN" "$OUT/serve.log" || exit 1
GRAMMAR=$(python3 -c 'import json; print(json.dumps({"guided_grammar": "\n".join([
  "root ::= (obj \"\\n\")+",
  "obj ::= \"{\" pair (\", \" pair)* \"}\"",
  "pair ::= str \": \" val",
  "val ::= str | num | \"true\" | \"false\" | \"null\" | obj | \"[\" (val (\", \" val)*)? \"]\"",
  "str ::= \"\\\"\" [a-zA-Z0-9 _.,-]{0,24} \"\\\"\"",
  "num ::= \"-\"? [0-9]{1,6} (\".\" [0-9]{1,4})?"])}))')
SCHEMA='{"response_format":{"type":"json_schema","json_schema":{"name":"person","strict":true,"schema":{"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"},"email":{"type":"string","format":"email"},"tags":{"type":"array","items":{"type":"string"}},"address":{"type":"object","properties":{"city":{"type":"string"},"zip":{"type":"string"}},"required":["city","zip"]}},"required":["name","age","email","tags","address"]}}}}'
B=("$BIN" bench --base-url http://127.0.0.1:$PORT --dataset random --random-input-len 512 --random-output-len 256
   --num-prompts "$N" --max-concurrency 64 --ignore-eos --no-progress --seed 1 --warmup 8)
run() {  # label [--extra-body JSON]
  local label=$1; shift
  timeout 580 "${B[@]}" "$@" --output-json "$OUT/$label.json" > "$OUT/bench_$label.log" 2>&1
  local rc=$?
  local tput=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['output_throughput'])" "$OUT/$label.json" 2>/dev/null)
  echo "$label: rc $rc, output throughput ${tput:-?} tok/s"
  eval "TPUT_$label=${tput:-0}"
}
run plain
run grammar --extra-body "$GRAMMAR"
run schema --extra-body "$SCHEMA"
kill $SPID 2>/dev/null; wait $SPID 2>/dev/null
python3 -c "import sys; p,g=float(sys.argv[1]),float(sys.argv[2]); print('grammar / plain = %.3f (bound 0.90)' % (g/p if p else 0))" \
  "$TPUT_plain" "$TPUT_grammar"
grep -c "request.*error\|400" "$OUT/serve.log" > /dev/null && echo "(see $OUT/serve.log for request errors)"
