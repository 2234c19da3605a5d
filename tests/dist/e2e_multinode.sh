#!/usr/bin/env bash
# Two real processes as two nodes (docs/PARALLEL.md, "Several processes and nodes"), on --device cpu (CI), or
# with E2E_DEVICE=cuda on a host of two GPUs, one a node (CUDA_VISIBLE_DEVICES=0 and =1; fp32 activations; NCCL),
# or with E2E_DEVICE=cuda E2E_ONE_GPU=1 both on GPU 0, their layers' collectives through the host group
# (DELTASERVE_CUDA_TP_COMM=host: NCCL refuses two ranks on one GPU; a check of the wiring, against -tp 1):
#  - `serve -tp 2 --nnodes 2 --node-rank 1` (a worker: no engine, no API) and `--node-rank 0` (the engine and the
#    API) answer a greedy completion with the same text as one process at -tp 1 (cuda: -tp 2 on both GPUs);
#  - SIGTERM to node 0 drains it and stops node 1, both exiting 0;
#  - node 1 killed while idle: node 0 hears of it at once (its watcher), /health and new requests answer 503 with
#    the reason (a load balancer takes it out), node 0 stays up;
#  - node 0 killed: node 1 exits non-zero saying so;
#  - a worker started with other cache flags is refused by name on both sides.
# Usage: tests/dist/e2e_multinode.sh <path-to-deltaserve>
set -euo pipefail
BIN=$(realpath "${1:?usage: e2e_multinode.sh <path-to-deltaserve>}")
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
WORK=$(mktemp -d /tmp/deltaserve-multinode.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "e2e_multinode: FAIL: $*" >&2; tail -n 15 "$WORK"/*.log >&2 || true; exit 1; }
pass() { echo "e2e_multinode: ok: $*"; }
DEVICE=${E2E_DEVICE:-cpu}
MODEL=(tests/fixtures/tiny/model --tokenizer tests/fixtures/tiny/tokenizer --served-model-name tiny --device "$DEVICE"
       --threads 1 --max-model-len 256 --max-num-seqs 4)
REF=()                       # the one-process reference's flags
UTIL0=() UTIL1=()            # node 0's and node 1's --gpu-memory-utilization (one GPU)
ONE_GPU=${E2E_ONE_GPU:-0}
if [[ $DEVICE == cuda ]]; then
  MODEL+=(--dtype float32)
  export NCCL_NVLS_ENABLE=0  # never NVLink multicast on the shared hosts
  if [[ $ONE_GPU == 1 ]]; then
    export DELTASERVE_CUDA_TP_COMM=host
    # two processes share the GPU: node 0 sizes its cache first, node 1 (rank 0's geometry) within what is left
    UTIL0=(--gpu-memory-utilization 0.3)
    UTIL1=(--gpu-memory-utilization 0.65)
  else
    REF=(-tp 2)
  fi
fi
gpu_of() {  # the CUDA_VISIBLE_DEVICES of a process meant for GPU(s) $1
  if [[ $DEVICE != cuda ]]; then echo "${CUDA_VISIBLE_DEVICES-}"
  elif [[ $ONE_GPU == 1 ]]; then echo 0
  else echo "$1"; fi
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_api LOG GPUS ARGS...: a serving process (node 0 or a single one) on GPUS (cuda); sets PID and PORT once
# /health answers.
start_api() {
  local log=$1 gpus=$2; shift 2
  CUDA_VISIBLE_DEVICES=$(gpu_of "$gpus") "$BIN" serve "${MODEL[@]}" "${UTIL0[@]}" --host 127.0.0.1 --port 0 "$@" >"$log" 2>&1 &
  PID=$!
  PIDS+=("$PID")
  for _ in $(seq 1 600); do
    PORT=$(grep -o 'on http://127.0.0.1:[0-9]*' "$log" | head -1 | sed 's/.*://' || true)
    [[ -n "$PORT" ]] && curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && return 0
    kill -0 "$PID" 2>/dev/null || fail "$log: the server exited during start-up"
    sleep 0.1
  done
  fail "$log: the server did not come up"
}
# start_worker LOG ARGS...: node 1; sets WPID.
start_worker() {
  local log=$1; shift
  CUDA_VISIBLE_DEVICES=$(gpu_of 1) "$BIN" serve "${MODEL[@]}" "${UTIL1[@]}" --node-rank 1 --headless "$@" >"$log" 2>&1 &
  WPID=$!
  PIDS+=("$WPID")
}
# wait_exit PID SECONDS: its exit status in RC (fails when it is still running after SECONDS).
wait_exit() {
  for _ in $(seq 1 $(($2 * 10))); do
    if ! kill -0 "$1" 2>/dev/null || [[ $(ps -o stat= -p "$1" 2>/dev/null) == Z* ]]; then
      RC=0
      wait "$1" || RC=$?
      return 0
    fi
    sleep 0.1
  done
  fail "process $1 still running after $2 s"
}
# start_nodes NAME [node 1's extra flags]: a fresh group's NODES flags (a free master port), node 1 as WPID, and
# (unless node 1 has extra flags, when the caller starts node 0 itself) node 0 as PID on PORT.
start_nodes() {
  local name=$1; shift
  NODES=(-tp 2 --nnodes 2 --master-addr 127.0.0.1 --master-port "$(free_port)")
  start_worker "$WORK/node1$name.log" "${NODES[@]}" "$@"
  [[ $# -gt 0 ]] || start_api "$WORK/node0$name.log" 0 "${NODES[@]}" --node-rank 0
}
complete() {  # the greedy answer's text (or the HTTP error body)
  curl -s -m 120 "http://127.0.0.1:$PORT/v1/completions" -H 'Content-Type: application/json' \
    -d '{"model":"tiny","prompt":"The quick brown fox","max_tokens":16,"temperature":0,"ignore_eos":true}'
}
text_of() { python3 -c 'import json,sys; print(json.load(sys.stdin)["choices"][0]["text"])'; }

# one process: the reference answer
start_api "$WORK/single.log" 0,1 "${REF[@]}"
WANT=$(complete | text_of) || fail "the single-process completion failed"
kill -TERM "$PID"
wait_exit "$PID" 30
[[ $RC == 0 ]] || fail "the single process exited $RC"

# two processes: node 1 first (it waits for node 0), then node 0
start_nodes ""
grep -q "TP 2 over 2 nodes" "$WORK/node0.log" || fail "node 0 does not say TP 2 over 2 nodes"
GOT=$(complete | text_of) || fail "the two-node completion failed"
[[ "$GOT" == "$WANT" ]] || fail "two nodes answered '$GOT', one process '$WANT'"
pass "two processes at -tp 2 give the single process's greedy text (${#GOT} characters)"
kill -TERM "$PID"
wait_exit "$PID" 30
[[ $RC == 0 ]] || fail "node 0 exited $RC after SIGTERM"
wait_exit "$WPID" 30
[[ $RC == 0 ]] || fail "node 1 exited $RC when node 0 stopped"
grep -q "node 0 stopped the group" "$WORK/node1.log" || fail "node 1 did not log that node 0 stopped it"
pass "SIGTERM to node 0 stops both nodes (exit 0)"

# node 1 dies: node 0 hears of it while idle, answers 503 with the reason, and stays up
start_nodes b
kill -KILL "$WPID"
wait "$WPID" 2>/dev/null || true
# idle: node 0's watcher hears of it without a request (/health turns 503 within a few seconds)
code=0
for _ in $(seq 1 50); do
  code=$(curl -s -m 10 -o "$WORK/health.json" -w '%{http_code}' "http://127.0.0.1:$PORT/health")
  [[ $code == 503 ]] && break
  sleep 0.1
done
[[ $code == 503 ]] && grep -q "node 1" "$WORK/health.json" || fail "/health after node 1 died: $code $(cat "$WORK/health.json")"
pass "node 1 killed while idle: node 0's /health answers 503 naming it: $(head -c 200 "$WORK/health.json")"
code=$(curl -s -m 30 -o "$WORK/after.json" -w '%{http_code}' "http://127.0.0.1:$PORT/v1/completions" -H 'Content-Type: application/json' \
  -d '{"model":"tiny","prompt":"again","max_tokens":4}')
[[ $code == 503 ]] && grep -q "can run no more steps" "$WORK/after.json" && grep -q "node 1" "$WORK/after.json" ||
  fail "a request after the group failed: $code $(cat "$WORK/after.json")"
pass "node 0 stays up: new requests answer 503 naming the failure"
kill -TERM "$PID"
wait_exit "$PID" 30

# node 0 dies: node 1 exits non-zero, saying node 0 went away
start_nodes d
kill -KILL "$PID"
wait "$PID" 2>/dev/null || true
wait_exit "$WPID" 30
[[ $RC != 0 ]] || fail "node 1 exited 0 after node 0 was killed"
grep -q "rank 0 (node 0 at 127.0.0.1:${NODES[-1]}) closed the connection" "$WORK/node1d.log" || fail "node 1 does not say node 0 went away"
pass "node 0 killed: node 1 exits $RC saying rank 0 (node 0) closed the connection"

# a worker with another cache layout is refused by name on both sides
start_nodes c --block-size 32
CUDA_VISIBLE_DEVICES=$(gpu_of 0) "$BIN" serve "${MODEL[@]}" "${UTIL0[@]}" --host 127.0.0.1 --port 0 "${NODES[@]}" --node-rank 0 \
  >"$WORK/node0c.log" 2>&1 &
PID=$!
PIDS+=("$PID")
wait_exit "$PID" 60
[[ $RC != 0 ]] || fail "node 0 accepted a worker of another layout"
wait_exit "$WPID" 60
[[ $RC != 0 ]] || fail "the refused worker exited 0"
grep -q "rank 1 (node 1) refused: a different model or layout" "$WORK/node0c.log" || fail "node 0 does not say why"
grep -q "refused node 1: a different model or layout" "$WORK/node1c.log" || fail "node 1 does not say why"
pass "a worker of another layout is refused by name on both sides"
