#!/usr/bin/env bash
# /metrics of the real binary, as Prometheus and a vLLM dashboard read it:
#  - `promtool check metrics` (Debian's prometheus package) finds nothing to complain about;
#  - every vLLM metric docs/SERVER.md lists is there, with model_name, and the histograms counted the requests;
#  - /metrics is open while the API needs a key; --protect-metrics closes it; --metrics-prefix vllm renames
#    (promtool then objects only to the colon in vLLM's names);
#  - the logs: --log-format json gives one JSON object per line, --access-log a line per request, and the
#    periodic stats line appears while requests run.
# Usage: tests/server/e2e_metrics.sh <path-to-deltaserve>
set -euo pipefail
BIN=$(realpath "${1:?usage: e2e_metrics.sh <path-to-deltaserve>}")
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
if ! command -v promtool >/dev/null; then
  echo "e2e_metrics: FAIL: promtool not found: install Debian's prometheus package (bash scripts/install-deps.sh)" >&2
  exit 1
fi
WORK=$(mktemp -d /tmp/deltaserve-metrics.XXXXXX)
PID=""
cleanup() { [[ -n $PID ]] && { kill -TERM "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; }; rm -rf "$WORK"; }
trap cleanup EXIT
fail() { echo "e2e_metrics: FAIL: $*" >&2; tail -n 20 "$WORK"/*.log >&2 || true; exit 1; }
pass() { echo "e2e_metrics: ok: $*"; }
KEY=metrics-test-key

start() {  # start LOG ARGS...
  local log=$1; shift
  "$BIN" serve tests/fixtures/tiny/model --tokenizer tests/fixtures/tiny/tokenizer --served-model-name kimi-linear-tiny \
    --host 127.0.0.1 --port 0 --threads 1 --max-model-len 512 --api-key "$KEY" "$@" >"$log" 2>&1 &
  PID=$!
  for _ in $(seq 1 600); do
    PORT=$(grep -o 'on http://127.0.0.1:[0-9]*' "$log" | head -1 | sed 's/.*://' || true)
    [[ -n "$PORT" ]] && curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && return 0
    kill -0 "$PID" 2>/dev/null || fail "server exited during startup"
    sleep 0.1
  done
  fail "server did not come up"
}
stop() { kill -TERM "$PID"; wait "$PID" || true; PID=""; }
complete() {  # complete STREAM
  curl -sf "http://127.0.0.1:$PORT/v1/completions" -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
    -d "{\"model\":\"kimi-linear-tiny\",\"prompt\":\"Hello there\",\"max_tokens\":24,\"ignore_eos\":true,\"stream\":$1}" \
    >/dev/null || fail "completion failed"
}

start "$WORK/json.log" --log-format json --access-log --stats-interval 0.3
for i in 1 2 3; do complete true; complete false; done
sleep 0.5
code=$(curl -s -o "$WORK/metrics.txt" -w '%{http_code}' "http://127.0.0.1:$PORT/metrics")
[[ $code == 200 ]] || fail "/metrics without the key: HTTP $code (should be open, as in vLLM)"
[[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/v1/models") == 401 ]] || fail "/v1/models open"
pass "/metrics is open while the API needs a key"
promtool check metrics <"$WORK/metrics.txt" >"$WORK/promtool.log" 2>&1 || fail "promtool: $(cat "$WORK/promtool.log")"
pass "promtool check metrics is clean"
M='{model_name="kimi-linear-tiny"}'
for series in num_requests_running num_requests_waiting kv_cache_usage_perc gpu_cache_usage_perc num_preemptions_total \
    prompt_tokens_total generation_tokens_total; do
  grep -q "^deltaserve_$series$M " "$WORK/metrics.txt" || fail "no deltaserve_$series$M"
done
grep -q '^deltaserve_request_success_total{finished_reason="length",model_name="kimi-linear-tiny"} 6$' \
  "$WORK/metrics.txt" || fail "request_success_total"
for h in time_to_first_token_seconds time_per_output_token_seconds inter_token_latency_seconds \
    e2e_request_latency_seconds request_queue_time_seconds request_prefill_time_seconds request_decode_time_seconds \
    request_inference_time_seconds request_prompt_tokens request_generation_tokens; do
  grep -q "^# TYPE deltaserve_$h histogram$" "$WORK/metrics.txt" || fail "no histogram $h"
  grep -q "^deltaserve_${h}_bucket{model_name=\"kimi-linear-tiny\",le=\"+Inf\"} " "$WORK/metrics.txt" || fail "$h buckets"
done
for h in time_to_first_token_seconds e2e_request_latency_seconds request_queue_time_seconds \
    request_prefill_time_seconds request_decode_time_seconds request_generation_tokens; do
  grep -q "^deltaserve_${h}_count$M 6$" "$WORK/metrics.txt" || fail "$h counted $(grep "^deltaserve_${h}_count" "$WORK/metrics.txt")"
done
grep -q "^deltaserve_inter_token_latency_seconds_count$M 138$" "$WORK/metrics.txt" ||
  fail "ITL should count 23 gaps x 6 requests: $(grep '^deltaserve_inter_token_latency_seconds_count' "$WORK/metrics.txt")"
grep -q '^deltaserve_cache_config_info{block_size="16",.*num_gpu_blocks="[0-9]*".*model_name="kimi-linear-tiny"} 1$' \
  "$WORK/metrics.txt" || fail "cache_config_info"
for p in process_cpu_seconds_total process_resident_memory_bytes process_virtual_memory_bytes process_open_fds \
    process_max_fds process_start_time_seconds; do
  grep -q "^$p [0-9.e+]*$" "$WORK/metrics.txt" || fail "no $p"
done
start_time=$(sed -n 's/^process_start_time_seconds //p' "$WORK/metrics.txt")
python3 -c "import sys,time; t=float(sys.argv[1]); sys.exit(0 if abs(time.time()-t) < 600 else 1)" "$start_time" ||
  fail "process_start_time_seconds $start_time is not now"
pass "vLLM names, model_name, histograms, cache_config_info and process metrics present"
python3 - deploy/grafana/deltaserve-dashboard.json "$WORK/metrics.txt" <<'PY' || fail "the Grafana dashboard reads series the server does not export"
import json, re, sys
dash = json.dumps(json.load(open(sys.argv[1])))
exported = {l.split()[2] for l in open(sys.argv[2]) if l.startswith('# TYPE ')}
used = set(re.findall(r'(deltaserve_[a-z0-9_]+|process_[a-z0-9_]+)', dash))
base = lambda n: re.sub(r'_(bucket|sum|count)$', '', n)
missing = sorted(n for n in used if n not in exported and base(n) not in exported)
assert used and not missing, missing
print('e2e_metrics: the dashboard reads %d series, all exported' % len(used))
PY
python3 - "$WORK/json.log" <<'PY' || fail "log lines are not all JSON objects with time/level/message"
import json, sys
lines = [l for l in open(sys.argv[1]) if l.strip()]
objs = [json.loads(l) for l in lines]
assert all({'time', 'level', 'message'} <= o.keys() for o in objs)
msgs = [o['message'] for o in objs]
assert any(m.startswith('access: 127.0.0.1:') and '"POST /v1/completions" 200' in m for m in msgs), 'no access line'
assert any(m.startswith('stats: prompt throughput') and 'generation throughput' in m for m in msgs), 'no stats line'
PY
pass "--log-format json, --access-log and the stats line"
stop

start "$WORK/vllm.log" --metrics-prefix vllm --protect-metrics --disable-log-stats
complete false
[[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/metrics") == 401 ]] || fail "--protect-metrics"
curl -sf "http://127.0.0.1:$PORT/metrics" -H "Authorization: Bearer $KEY" >"$WORK/vllm.txt" || fail "/metrics with key"
grep -q '^vllm:time_to_first_token_seconds_count{model_name="kimi-linear-tiny"} 1$' "$WORK/vllm.txt" || fail "vllm: prefix"
! grep -q '^deltaserve_' "$WORK/vllm.txt" || fail "deltaserve_ names with --metrics-prefix vllm"
# vLLM's exact names have a colon, which promtool's lint rejects (as for vLLM's own endpoint): that must be
# its only complaint.
promtool check metrics <"$WORK/vllm.txt" >"$WORK/promtool.log" 2>&1 || true
grep -q "metric names should not contain ':'" "$WORK/promtool.log" || fail "promtool did not see the vllm: names"
! grep -v "metric names should not contain ':'" "$WORK/promtool.log" | grep -q . ||
  fail "promtool (vllm:) found more than the colon: $(grep -v "should not contain ':'" "$WORK/promtool.log")"
pass "--metrics-prefix vllm and --protect-metrics"
stop
echo "e2e_metrics: all passed"
