#!/usr/bin/env bash
# The README's CPU commands, as written (only the port differs: the server takes a free one): the curl
# example answers, and the CPU benchmark example finishes within 5 minutes on the tiny model.
# Usage: tests/e2e/readme_cpu.sh <path-to-deltaserve>
set -euo pipefail
BIN=$(realpath "${1:?usage: readme_cpu.sh <path-to-deltaserve>}")
cd "$(dirname "$0")/../.."
WORK=$(mktemp -d /tmp/deltaserve-readme.XXXXXX)
PID=""
cleanup() { [[ -n $PID ]] && { kill -TERM "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; }; rm -rf "$WORK"; }
trap cleanup EXIT
fail() { echo "readme_cpu: FAIL: $*" >&2; tail -n 20 "$WORK/serve.log" >&2 || true; exit 1; }

# Code blocks of README.md that contain a marker, joined across "\" continuations, one command per line.
block() {
  python3 - "$1" <<'PY'
import re, sys
text = open('README.md').read()
for b in re.findall(r'```sh\n(.*?)```', text, re.S):
    if sys.argv[1] in b:
        print(b.replace('\\\n', ' '))
        break
else:
    sys.exit('no README block with ' + sys.argv[1])
PY
}
CURL=$(block 'curl -s http://127.0.0.1:8000/v1/chat/completions') || fail "no curl example in README.md"
BENCH=$(block 'deltaserve bench' | grep 'deltaserve bench') || fail "no bench example in README.md"

"$BIN" serve tests/fixtures/tiny/model --tokenizer tests/fixtures/tiny/tokenizer --served-model-name kimi-linear \
  --served-model-name kimi-linear-tiny --host 127.0.0.1 --port 0 >"$WORK/serve.log" 2>&1 &
PID=$!
for _ in $(seq 1 600); do
  PORT=$(grep -o 'on http://127.0.0.1:[0-9]*' "$WORK/serve.log" | head -1 | sed 's/.*://' || true)
  [[ -n $PORT ]] && curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break
  kill -0 "$PID" 2>/dev/null || fail "server exited"
  sleep 0.1
done
[[ -n $PORT ]] || fail "server did not come up"

out=$(bash -c "${CURL//8000/$PORT}") || fail "the README's curl example failed"
echo "$out" | python3 -c 'import json,sys; j=json.load(sys.stdin); assert j["choices"][0]["message"]["content"] is not None' ||
  fail "the curl example's answer: $out"
echo "readme_cpu: ok: the curl example answers"

cmd=${BENCH//build\/deltaserve/$BIN}
cmd=${cmd//8000/$PORT}
start=$(date +%s)
timeout 300 bash -c "$cmd" >"$WORK/bench.log" 2>&1 || fail "the README's bench example failed or ran past 5 minutes: $(tail -5 "$WORK/bench.log")"
grep -qi "throughput" "$WORK/bench.log" || fail "no throughput in the bench output: $(tail -5 "$WORK/bench.log")"
echo "readme_cpu: ok: the CPU bench example finished in $(( $(date +%s) - start )) s"
