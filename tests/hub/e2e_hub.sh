#!/usr/bin/env bash
# End-to-end: `deltaserve serve ORG/NAME` against a local mock of the Hugging Face Hub
# (tests/hub/mock_hub.py; CI has no internet). Checks, with the vLLM guide's command line:
#  - a download killed halfway leaves a .incomplete file, and the next run resumes it (a Range request);
#  - only the needed files are fetched (not README.md, *.bin, *.py), with a progress bar, through the
#    CDN redirect, checked against their SHA-256, into the standard cache layout (refs/main, snapshots/);
#  - the server then answers a completion; `-tp 4 --device cuda` with no GPU is a clear error;
#  - HF_HUB_OFFLINE=1 with a warm cache starts with the mock stopped; with a cold cache it is a clear error;
#  - a bad token, a missing repo, a repo without tiktoken.model and a corrupted download are clear errors.
# Usage: tests/hub/e2e_hub.sh <path-to-deltaserve>
set -euo pipefail
BIN=$(realpath "${1:?usage: e2e_hub.sh <path-to-deltaserve>}")
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
WORK=$(mktemp -d /tmp/deltaserve-hub.XXXXXX)
REPO_ID=moonshotai/Kimi-Linear-48B-A3B-Instruct
TOKEN=hf_mock_good_token
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [[ ${KEEP:-0} == 0 ]]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT
fail() { echo "e2e_hub: FAIL: $*" >&2; for f in "$WORK"/*.log; do echo "--- $f" >&2; tail -n 30 "$f" >&2; done; exit 1; }
pass() { echo "e2e_hub: ok: $*"; }

# A repo: the tiny model + its tokenizer files + files deltaserve must not fetch.
mkdir -p "$WORK/repo" "$WORK/repo-notok"
cp "$ROOT"/tests/fixtures/tiny/model/* "$WORK/repo/"
cp "$ROOT"/tests/fixtures/tiny/tokenizer/{tiktoken.model,tokenizer_config.json,chat_template.jinja} "$WORK/repo/"
echo "# Kimi-Linear (mock)" >"$WORK/repo/README.md"
head -c 300000 /dev/urandom >"$WORK/repo/pytorch_model.bin"
echo "class KimiLinear: pass" >"$WORK/repo/modeling_kimi.py"
cp "$WORK"/repo/{config.json,model.safetensors.index.json,model-0000*.safetensors,tokenizer_config.json} "$WORK/repo-notok/"

MOCK_PID=""
start_mock() {  # start_mock ARGS...: sets HUB (the endpoint) and MOCK_PID
  local out="$WORK/mock.out"
  : >"$out"
  python3 "$HERE/mock_hub.py" --repo "$REPO_ID=$WORK/repo" --repo "moonshotai/no-tokenizer=$WORK/repo-notok" \
    --token "$TOKEN" --log "$WORK/requests.jsonl" "$@" >"$out" 2>"$WORK/mock.log" &
  MOCK_PID=$!
  PIDS+=("$MOCK_PID")
  for _ in $(seq 1 100); do grep -q '^PORT ' "$out" && break; sleep 0.1; done
  HUB="http://127.0.0.1:$(sed -n 's/^PORT //p' "$out")"
}
stop_mock() { kill -TERM "$MOCK_PID" 2>/dev/null || true; wait "$MOCK_PID" 2>/dev/null || true; }

# serve_bg LOG ARGS...: starts `deltaserve serve` (environment from the caller); sets SERVE_PID.
serve_bg() {
  local log=$1; shift
  : >"$log"
  "$BIN" serve "$@" --host 127.0.0.1 --port 0 --threads 1 >"$log" 2>&1 &
  SERVE_PID=$!
  PIDS+=("$SERVE_PID")
}
wait_ready() {  # wait_ready LOG: waits for /health; sets PORT
  local log=$1
  PORT=""
  for _ in $(seq 1 900); do
    PORT=$(sed -n 's/.*on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log" | head -1)
    [[ -n "$PORT" ]] && curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && return 0
    kill -0 "$SERVE_PID" 2>/dev/null || fail "the server exited during startup ($log)"
    sleep 0.1
  done
  fail "the server did not come up ($log)"
}
stop_serve() { kill -TERM "$SERVE_PID" 2>/dev/null || true; wait "$SERVE_PID" 2>/dev/null || true; }

export HF_HOME="$WORK/hf-home"
unset HF_HUB_CACHE HF_HUB_OFFLINE TRANSFORMERS_OFFLINE HUGGING_FACE_HUB_TOKEN || true
CACHE="$HF_HOME/hub/models--moonshotai--Kimi-Linear-48B-A3B-Instruct"
BIG=model-00001-of-00002.safetensors
BIG_SHA=$(sha256sum "$WORK/repo/$BIG" | cut -d' ' -f1)
# The vLLM guide's command line, with one GPU's worth of parallelism (-tp 4 is checked below) and a context the
# CPU's default cache holds: 128K = 131,072 tokens (the guide's 1048576 does not fit it, and a --max-model-len
# the cache cannot hold is refused at start-up, as vLLM does).
GUIDE=(--tensor-parallel-size 1 --max-model-len 128K --trust-remote-code)

# 1. A download killed halfway leaves a partial file.
start_mock --throttle 1500000
HF_ENDPOINT=$HUB HF_TOKEN=$TOKEN serve_bg "$WORK/killed.log" "$REPO_ID" "${GUIDE[@]}"
part="$CACHE/blobs/$BIG_SHA.incomplete"
for _ in $(seq 1 300); do
  [[ -f "$part" ]] && (( $(stat -c %s "$part") > 3000000 )) && break
  kill -0 "$SERVE_PID" 2>/dev/null || fail "the server exited during the first download"
  sleep 0.1
done
[[ -f "$part" ]] || fail "no partial file $part"
kill -KILL "$SERVE_PID"; wait "$SERVE_PID" 2>/dev/null || true
half=$(stat -c %s "$part")
(( half > 3000000 && half < $(stat -c %s "$WORK/repo/$BIG") )) || fail "partial file has $half bytes"
[[ ! -e "$CACHE/blobs/$BIG_SHA" ]] || fail "the killed download is marked complete"
pass "killed download left $half bytes in $part"
stop_mock

# 2. The guide's command resumes it, fetches only the needed files, and serves.
: >"$WORK/requests.jsonl"
start_mock --throttle 20000000
HF_ENDPOINT=$HUB HF_TOKEN=$TOKEN serve_bg "$WORK/serve.log" "$REPO_ID" "${GUIDE[@]}"
wait_ready "$WORK/serve.log"
grep -q "resuming a partial download" "$WORK/serve.log" || fail "no resume message"
grep -q "\"path\": \"/$REPO_ID/resolve/[0-9a-f]*/$BIG\"" "$WORK/requests.jsonl" || fail "$BIG not requested"
python3 - "$WORK/requests.jsonl" "$half" <<'PY' || fail "the resumed download did not ask for the rest (Range)"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
ok = any(r['path'].startswith('/cdn/') and r['range'] == 'bytes=%s-' % sys.argv[2] for r in rows)
sys.exit(0 if ok else 1)
PY
pass "resumed with Range: bytes=$half-"
for f in README.md pytorch_model.bin modeling_kimi.py; do
  ! grep -q "/$f\"" "$WORK/requests.jsonl" || fail "$f was downloaded (not needed)"
done
pass "only the needed files were fetched"
grep -q "downloading $BIG .*100%" "$WORK/serve.log" || fail "no progress bar for $BIG"
grep -q "downloading tiktoken.model .*100%" "$WORK/serve.log" || fail "no progress bar for tiktoken.model"
pass "progress bars shown"
grep -q "ignoring vLLM flag --trust-remote-code" "$WORK/serve.log" || fail "--trust-remote-code not logged as ignored"
commit=$(cat "$CACHE/refs/main")
snap="$CACHE/snapshots/$commit"
for f in config.json tiktoken.model tokenizer_config.json chat_template.jinja model.safetensors.index.json $BIG \
         model-00002-of-00002.safetensors; do
  [[ -L "$snap/$f" ]] || fail "$snap/$f is not a link into blobs/"
  cmp -s "$snap/$f" "$WORK/repo/$f" || fail "$f differs from the repo's"
done
pass "cache layout: refs/main -> $commit, snapshot links into blobs/, contents identical"
body='{"model":"'$REPO_ID'","prompt":"Hello","max_tokens":4,"ignore_eos":true}'
out=$(curl -sf "http://127.0.0.1:$PORT/v1/completions" -H 'Content-Type: application/json' -d "$body") ||
  fail "completion request failed"
echo "$out" | python3 -c 'import json,sys; j=json.load(sys.stdin); assert j["usage"]["completion_tokens"]==4' ||
  fail "unexpected completion: $out"
pass "serves $REPO_ID by its repo id"
stop_serve

# 3. -tp 4 (the guide's value) on the GPU with no GPU visible is a clear error (one rank per GPU; on the CPU -tp
#    runs rank threads: tests/dist).
if CUDA_VISIBLE_DEVICES= HF_ENDPOINT=$HUB HF_TOKEN=$TOKEN "$BIN" serve "$REPO_ID" -tp 4 --device cuda >"$WORK/tp.log" 2>&1; then
  fail "-tp 4 was accepted"
fi
grep -q "tensor-parallel-size 4: only 0 GPU(s) visible" "$WORK/tp.log" || fail "unclear -tp error: $(cat "$WORK/tp.log")"
pass "-tp 4 refused: $(tail -1 "$WORK/tp.log")"

# 4. Errors: bad token, missing repo, missing tokenizer file, corrupted download.
expect_error() {  # expect_error NAME PATTERN ENV... -- ARGS...
  local name=$1 pattern=$2; shift 2
  local envs=()
  while [[ $1 != -- ]]; do envs+=("$1"); shift; done
  shift
  if env "${envs[@]}" "$BIN" serve "$@" --port 0 >"$WORK/$name.log" 2>&1; then fail "$name: the server started"; fi
  grep -q "$pattern" "$WORK/$name.log" || fail "$name: expected '$pattern', got: $(tail -3 "$WORK/$name.log")"
  pass "$name: $(grep -m1 "$pattern" "$WORK/$name.log")"
}
expect_error bad_token "refused HF_TOKEN" HF_ENDPOINT="$HUB" HF_TOKEN=hf_wrong HF_HOME="$WORK/cold" -- "$REPO_ID"
expect_error no_token "set HF_TOKEN" HF_ENDPOINT="$HUB" HF_TOKEN= HF_HOME="$WORK/cold" -- "$REPO_ID"
expect_error missing_repo "repository not found" HF_ENDPOINT="$HUB" HF_TOKEN=$TOKEN HF_HOME="$WORK/cold" -- moonshotai/no-such-model
expect_error missing_file "has no tiktoken.model" HF_ENDPOINT="$HUB" HF_TOKEN=$TOKEN HF_HOME="$WORK/cold" -- moonshotai/no-tokenizer
expect_error bad_revision "revision not found" HF_ENDPOINT="$HUB" HF_TOKEN=$TOKEN HF_HOME="$WORK/cold" -- "$REPO_ID" --revision v9
stop_mock
start_mock --corrupt model-00002-of-00002.safetensors
expect_error checksum "checksum mismatch" HF_ENDPOINT="$HUB" HF_TOKEN=$TOKEN HF_HOME="$WORK/corrupt" -- "$REPO_ID"
stop_mock
expect_error unreachable "is http://127.0.0.1:9 reachable" HF_ENDPOINT=http://127.0.0.1:9 HF_TOKEN=$TOKEN HF_HOME="$WORK/cold" -- "$REPO_ID"

# 5. The Hub unreachable (not offline) with a warm cache: a warning, then the cached snapshot serves.
HF_ENDPOINT=http://127.0.0.1:9 serve_bg "$WORK/unreachable_warm.log" "$REPO_ID" --max-model-len 4096
wait_ready "$WORK/unreachable_warm.log"
grep -q "could not update from the Hub.*using the cached snapshot" "$WORK/unreachable_warm.log" || fail "no fallback warning"
pass "Hub unreachable, warm cache: serves the cached snapshot with a warning"
stop_serve

# 6. Offline: the mock is down; a warm cache serves, a cold one is a clear error.
HF_HUB_OFFLINE=1 HF_ENDPOINT=http://127.0.0.1:9 serve_bg "$WORK/offline.log" "$REPO_ID" --max-model-len 4096
wait_ready "$WORK/offline.log"
grep -q "offline, using the cached snapshot" "$WORK/offline.log" || fail "offline start did not say it used the cache"
pass "HF_HUB_OFFLINE=1 with a warm cache serves with no Hub"
stop_serve
expect_error offline_cold "HF_HUB_OFFLINE is set" HF_HUB_OFFLINE=1 HF_HOME="$WORK/cold2" -- "$REPO_ID"
# --download-dir is the cache folder: the same layout under it.
start_mock
HF_ENDPOINT=$HUB HF_TOKEN=$TOKEN serve_bg "$WORK/dldir.log" "$REPO_ID" --download-dir "$WORK/dl" --max-model-len 4096
wait_ready "$WORK/dldir.log"
[[ -f "$WORK/dl/models--moonshotai--Kimi-Linear-48B-A3B-Instruct/refs/main" ]] || fail "--download-dir not used"
pass "--download-dir holds the cache"
stop_serve
echo "e2e_hub: all passed"
