#!/usr/bin/env bash
# End-to-end check of `deltaserve bench` and `deltaserve eval gsm8k` against a live server.
#
#   tests/bench/e2e_bench.sh path/to/deltaserve          # starts `deltaserve serve` on the tiny model
#   tests/bench/e2e_bench.sh path/to/deltaserve --mock   # uses tests/bench/mock_openai_server.py instead
#
# Runs every bench workload (random over completions and chat, jsonl, fixed, a ShareGPT file with vLLM's
# flags), checks each JSON result for internal consistency with python3, runs a 5-question GSM8K eval,
# checks that an unreachable server is a clear non-zero exit, and stops the server. Exit status 0 means every check passed.
set -euo pipefail

[[ $# -ge 1 ]] || { echo "usage: $0 path/to/deltaserve [--mock]" >&2; exit 2; }
BIN=$(realpath "$1")
MODE=${2:-serve}
cd "$(dirname "$0")/../.."
WORK=$(mktemp -d)
SERVER_PID=""
cleanup() {
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; [[ -f "$WORK/server.log" ]] && tail -20 "$WORK/server.log" >&2; exit 1; }
step() { echo "== $*"; }

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
URL="http://127.0.0.1:$PORT"
BENCH=("$BIN" bench --base-url "$URL" --no-progress)

step "unreachable server -> clear error, non-zero exit"
if "${BENCH[@]}" --num-prompts 1 >"$WORK/out.txt" 2>"$WORK/err.txt"; then fail "bench succeeded without a server"; fi
grep -q "cannot reach the server at $URL" "$WORK/err.txt" || fail "unclear error: $(cat "$WORK/err.txt")"

step "starting the server ($MODE) on port $PORT"
if [[ "$MODE" == "--mock" ]]; then
  python3 tests/bench/mock_openai_server.py --port "$PORT" >"$WORK/server.log" 2>&1 &
else
  "$BIN" serve --model tests/fixtures/tiny/model --tokenizer tests/fixtures/tiny/tokenizer \
    --host 127.0.0.1 --port "$PORT" >"$WORK/server.log" 2>&1 &
fi
SERVER_PID=$!
python3 - "$URL" "$SERVER_PID" <<'EOF' || fail "server did not come up"
import os, sys, time, urllib.request
url, pid = sys.argv[1], int(sys.argv[2])
for _ in range(600):
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit("server exited")
    try:
        with urllib.request.urlopen(url + "/v1/models", timeout=2) as r:
            if r.status == 200:
                sys.exit(0)
    except Exception:
        time.sleep(0.2)
sys.exit("timeout")
EOF

# check_json FILE NUM_PROMPTS [MAX_CONCURRENCY] [INPUT_LEN OUTPUT_LEN RATIO]: the result agrees with itself.
check_json() {
  python3 - "$@" <<'EOF' || fail "inconsistent JSON in $1"
import json, math, sys
path, n = sys.argv[1], int(sys.argv[2])
max_conc = int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[3] != "-" else 0
lens = [int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])] if len(sys.argv) > 6 else None
j = json.load(open(path))
def check(cond, what):
    if not cond:
        sys.exit(f"{path}: {what}")
for key in ["input_lens", "output_lens", "ttfts", "itls", "errors", "e2els", "start_times"]:
    check(len(j[key]) == n, f"{key} has {len(j[key])} entries, expected {n}")
check(j["completed"] + j["failed"] == n, "completed + failed != num_prompts")
check(j["failed"] == 0, f"{j['failed']} requests failed: {[e for e in j['errors'] if e][:1]}")
ok = [i for i in range(n) if not j["errors"][i]]
check(j["completed"] == len(ok), "completed disagrees with errors")
check(j["total_output_tokens"] == sum(j["output_lens"][i] for i in ok), "total_output_tokens != sum(output_lens)")
check(j["total_input_tokens"] == sum(j["input_lens"][i] for i in ok), "total_input_tokens != sum(input_lens)")
check(all(j["input_lens"][i] > 0 for i in ok), "an input length is 0 (no usage from the server?)")
d = j["duration"]
check(d > 0, "duration is not positive")
end = max(j["start_times"][i] + j["e2els"][i] for i in range(n))
check(d + 1e-6 >= end, f"duration {d} ends before the last response {end}")
def close(a, b):
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
check(close(j["request_throughput"], j["completed"] / d), "request_throughput")
check(close(j["output_throughput"], j["total_output_tokens"] / d), "output_throughput")
check(close(j["total_token_throughput"], (j["total_input_tokens"] + j["total_output_tokens"]) / d),
      "total_token_throughput")
for i in ok:
    out = j["output_lens"][i]
    check(out >= 1, f"request {i} produced no tokens")
    check(len(j["itls"][i]) <= out - 1, f"request {i}: more chunks than tokens")
    check(0 < j["ttfts"][i] <= j["e2els"][i], f"request {i}: ttft outside (0, e2el]")
    if lens:
        lo = max(1, math.floor(lens[0] * (1 - lens[2]))); hi = math.ceil(lens[0] * (1 + lens[2]))
        olo = max(1, math.floor(lens[1] * (1 - lens[2]))); ohi = math.ceil(lens[1] * (1 + lens[2]))
        if lens[0] > 0:
            check(lo <= j["input_lens"][i] <= hi, f"request {i}: input length {j['input_lens'][i]} not in [{lo}, {hi}]")
        check(olo <= out <= ohi, f"request {i}: output length {out} not in [{olo}, {ohi}] despite ignore_eos")
for m in ["ttft", "tpot", "itl", "e2el"]:
    check(j[f"median_{m}_ms"] <= j[f"p99_{m}_ms"] + 1e-9 <= j[f"max_{m}_ms"] + 2e-9, f"{m} percentiles out of order")
check(j["max_output_tokens_per_s"] > 0, "peak output throughput is 0")
check(1 <= j["max_concurrent_requests"] <= n, "peak concurrency out of range")
if max_conc:
    check(j["max_concurrent_requests"] <= max_conc, "peak concurrency above --max-concurrency")
    check(j["max_concurrency"] == max_conc, "max_concurrency not recorded")
print(f"  ok: {path.split('/')[-1]}: {j['completed']} requests, {j['total_input_tokens']} in, "
      f"{j['total_output_tokens']} out, {j['duration']:.2f} s, mean TTFT {j['mean_ttft_ms']:.1f} ms, "
      f"mean ITL {j['mean_itl_ms']:.2f} ms")
EOF
}

run_bench() {  # run_bench NAME ARGS...: runs bench, keeps its output, checks the report is printed
  local name=$1; shift
  "${BENCH[@]}" --output-json "$WORK/$name.json" "$@" >"$WORK/$name.txt" 2>"$WORK/$name.err" ||
    fail "bench $name: $(tail -5 "$WORK/$name.err")"
  for row in "Successful requests:" "Benchmark duration (s):" "Output token throughput" "Mean TTFT (ms):" \
             "Median TPOT (ms):" "P99 ITL (ms):" "Max ITL (ms):" "Mean E2EL (ms):" "Peak concurrent requests:"; do
    grep -q "$row" "$WORK/$name.txt" || fail "bench $name: report lacks '$row'"
  done
}

step "bench: random prompts over /v1/completions (exact lengths, 4 in flight)"
run_bench random --dataset random --random-input-len 32 --random-output-len 8 --num-prompts 16 \
  --max-concurrency 4 --warmup 2 --seed 1
check_json "$WORK/random.json" 16 4 32 8 0

step "bench: random prompts over /v1/completions (range ratio 0.5, Poisson 20 req/s)"
run_bench random_ratio --dataset random --random-input-len 24 --random-output-len 8 --random-range-ratio 0.5 \
  --num-prompts 12 --request-rate 20 --seed 2
check_json "$WORK/random_ratio.json" 12 - 24 8 0.5

step "bench: random words over /v1/chat/completions"
run_bench chat --endpoint-type chat --dataset random --random-input-len 16 --random-output-len 6 \
  --num-prompts 8 --max-concurrency 8
check_json "$WORK/chat.json" 8 8 0 6 0

step "bench: jsonl prompts (text, token ids, per-line max_tokens)"
cat >"$WORK/prompts.jsonl" <<'EOF'
{"prompt": "The quick brown fox", "max_tokens": 6}
{"prompt": [100, 200, 300, 400, 500], "max_tokens": 4}
{"prompt": "Once upon a time"}
EOF
run_bench jsonl --dataset jsonl --dataset-path "$WORK/prompts.jsonl" --output-len 5 --num-prompts 6 --ignore-eos
check_json "$WORK/jsonl.json" 6

step "bench: fixed prompt, one at a time"
run_bench fixed --dataset fixed --prompt "Hello, my name is" --output-len 8 --num-prompts 5 --max-concurrency 1 \
  --ignore-eos
check_json "$WORK/fixed.json" 5 1 0 8 0

step "bench: ShareGPT file with vLLM's flags (--dataset-name, --save-result, --result-dir)"
python3 - "$WORK/sharegpt.json" <<'EOF'
import json, sys
conv = lambda q, a: {"conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]}
data = [conv(f"Question {i}: tell me a short story about the river number {i}, please.",
             "Once upon a time a river ran to the sea. " * (1 + i % 3)) for i in range(10)]
data.append({"conversations": [{"from": "human", "value": "one turn only"}]})
json.dump(data, open(sys.argv[1], "w"))
EOF
# The python mock has no /tokenize: count with the tiny tokenizer there, through the server otherwise.
COUNT=()
[[ "$MODE" == "--mock" ]] && COUNT=(--tokenizer tests/fixtures/tiny/tokenizer)
"$BIN" bench --base-url "$URL" --disable-tqdm --dataset-name sharegpt --dataset-path "$WORK/sharegpt.json" \
  --num-prompts 6 --sharegpt-output-len 8 --ignore-eos --seed 3 --save-result --result-dir "$WORK/results" \
  "${COUNT[@]}" >"$WORK/sharegpt.txt" 2>"$WORK/sharegpt.err" || fail "bench sharegpt: $(tail -5 "$WORK/sharegpt.err")"
RESULT=$(ls "$WORK"/results/openai-infqps-*.json 2>/dev/null | head -1)
[[ -n "$RESULT" ]] || fail "bench sharegpt: no result file in $WORK/results: $(ls "$WORK/results" 2>&1)"
check_json "$RESULT" 6 - 0 8 0

step "eval gsm8k: 5 questions"
"$BIN" eval gsm8k --base-url "$URL" --num-questions 5 --num-shots 2 --max-tokens 32 --parallel 5 --no-progress \
  --output "$WORK/gsm8k.jsonl" >"$WORK/gsm8k.txt" 2>"$WORK/gsm8k.err" || fail "eval gsm8k: $(tail -5 "$WORK/gsm8k.err")"
python3 - "$WORK/gsm8k.jsonl" "$WORK/gsm8k.txt" <<'EOF' || fail "inconsistent gsm8k results"
import json, re, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
if len(rows) != 5: sys.exit(f"{len(rows)} result lines, expected 5")
if any(r["error"] for r in rows): sys.exit(f"failed requests: {[r['error'] for r in rows if r['error']]}")
for r in rows:
    if r["correct"] != (r["extracted"] is not None and r["extracted"] == r["reference"]):
        sys.exit(f"question {r['index']}: 'correct' disagrees with extracted/reference")
    if r["invalid"] != (r["extracted"] is None): sys.exit(f"question {r['index']}: 'invalid' is wrong")
text = open(sys.argv[2]).read()
correct = sum(r["correct"] for r in rows)
m = re.search(r"Accuracy:\s+([0-9.]+)", text)
if not m or abs(float(m.group(1)) - correct / 5) > 1e-4: sys.exit(f"printed accuracy disagrees with {correct}/5")
print(f"  ok: gsm8k: {correct}/5 correct, {sum(r['invalid'] for r in rows)} without a number")
EOF

echo "PASS: bench and eval against $MODE"
