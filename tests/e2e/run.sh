#!/usr/bin/env bash
# End-to-end tests of `deltaserve serve` through the official OpenAI Node.js SDK, LangChain JS, the
# Vercel AI SDK, fetch and curl.
# Usage: tests/e2e/run.sh <path-to-deltaserve>
# Starts three servers on the tiny model on free loopback ports (the OS picks them: --port 0, read
# back from the log): "main" (API key, max-model-len 512, 64 sequences), "small" (one sequence, a
# queue of one: for 429 and the SIGTERM drain test; --strict-request-fields) and "structured" (API
# key, max-model-len 2048: the structured-output, Responses and framework tests); runs the Node test
# files one after the other; stops the servers. Logs are kept under $E2E_LOG_DIR (default: a temp dir, printed on failure).
set -euo pipefail
BIN=$(realpath "${1:?usage: run.sh <path-to-deltaserve>}")
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
cd "$ROOT"
LOG_DIR=${E2E_LOG_DIR:-$(mktemp -d /tmp/deltaserve-e2e.XXXXXX)}
mkdir -p "$LOG_DIR"

if ! node "$HERE/deps_ok.cjs"; then
  (cd "$HERE" && npm ci --no-audit --no-fund --silent)
fi

PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

MODEL=tests/fixtures/tiny/model
TOKENIZER=tests/fixtures/tiny/tokenizer
KEY=e2e-secret-key

# start NAME ARGS...: starts a server, waits until /health answers; sets PORT_<NAME>, PID_<NAME>.
start() {
  local name=$1; shift
  local log="$LOG_DIR/$name.log"
  : >"$log"  # exists before the poll below reads it (the server's redirect may come later)
  "$BIN" serve --model "$MODEL" --tokenizer "$TOKENIZER" --served-model-name kimi-linear-tiny \
    --host 127.0.0.1 --port 0 --threads 1 --log-level debug "$@" >"$log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  local port=""
  for _ in $(seq 1 600); do
    port=$(sed -n 's/.*on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log" | head -1)
    [[ -n "$port" ]] && curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "e2e: server '$name' exited during startup:" >&2; cat "$log" >&2; exit 1
    fi
    sleep 0.1
  done
  [[ -n "$port" ]] || { echo "e2e: server '$name' did not come up:" >&2; cat "$log" >&2; exit 1; }
  printf -v "PORT_$name" '%s' "$port"
  printf -v "PID_$name" '%s' "$pid"
  echo "e2e: $name server pid $pid on port $port (log $log)"
}

start main --api-key "$KEY" --max-model-len 512 --max-num-seqs 64 --max-num-batched-tokens 1024 \
  --max-request-bytes 1000000
start small --max-model-len 512 --max-num-seqs 1 --max-queue 1 --strict-request-fields
start structured --api-key "$KEY" --max-model-len 2048 --max-num-seqs 16

export DS_E2E_URL="http://127.0.0.1:$PORT_main" DS_E2E_KEY="$KEY" DS_E2E_MODEL=kimi-linear-tiny
export DS_E2E_SMALL_URL="http://127.0.0.1:$PORT_small" DS_E2E_SMALL_PID="$PID_small"
export DS_E2E_STRUCT_URL="http://127.0.0.1:$PORT_structured" DS_E2E_STRUCT_LOG="$LOG_DIR/structured.log"
export DS_E2E_BIN="$BIN" DS_E2E_MODEL_DIR="$MODEL" DS_E2E_TOKENIZER_DIR="$TOKENIZER" DS_E2E_LOG_DIR="$LOG_DIR"

status=0
node --test --test-concurrency=1 --test-timeout="${E2E_TEST_TIMEOUT_MS:-300000}" \
  "$HERE/basics.test.mjs" "$HERE/completions.test.mjs" "$HERE/chat.test.mjs" "$HERE/concurrency.test.mjs" \
  "$HERE/errors.test.mjs" "$HERE/structured.test.mjs" "$HERE/responses.test.mjs" "$HERE/frameworks.test.mjs" \
  "$HERE/prefix_cache.test.mjs" "$HERE/run_batch.test.mjs" "$HERE/cli_clients.test.mjs" "$HERE/shutdown.test.mjs" || status=$?

# The main server stops cleanly on SIGTERM too.
kill -TERM "$PID_main"
main_rc=0
wait "$PID_main" || main_rc=$?
if [[ $main_rc -ne 0 ]] || ! grep -q "stopped" "$LOG_DIR/main.log"; then
  echo "e2e: the main server did not stop cleanly on SIGTERM (exit $main_rc)" >&2
  status=1
fi
if [[ $status -ne 0 ]]; then
  echo "e2e: FAILED; server logs in $LOG_DIR:" >&2
  tail -n 40 "$LOG_DIR"/*.log >&2
fi
exit $status
