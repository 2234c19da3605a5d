#!/usr/bin/env bash
# Runs a real Prometheus server (Debian's `prometheus`) scraping a deltaserve /metrics endpoint every
# second, sends streaming requests, and answers histogram_quantile queries over TTFT and inter-token
# latency through Prometheus's HTTP API: proof that the exposition works end to end for a dashboard.
# Usage: scripts/prometheus-check.sh [BUILD_DIR]   (default build; starts the tiny model on a free port)
#        PROM_TARGET=host:port scripts/prometheus-check.sh   (scrape a running server instead; no load sent)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-${BUILD_DIR:-build}}
command -v prometheus >/dev/null || { echo "prometheus not found: bash scripts/install-deps.sh" >&2; exit 1; }
WORK=$(mktemp -d /tmp/deltaserve-prom.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

TARGET=${PROM_TARGET:-}
if [[ -z $TARGET ]]; then
  "$BUILD/deltaserve" serve tests/fixtures/tiny/model --tokenizer tests/fixtures/tiny/tokenizer \
    --served-model-name kimi-linear-tiny --host 127.0.0.1 --port 0 --threads 2 >"$WORK/serve.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 600); do
    port=$(grep -o 'on http://127.0.0.1:[0-9]*' "$WORK/serve.log" | head -1 | sed 's/.*://' || true)
    [[ -n $port ]] && curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
    sleep 0.1
  done
  [[ -n ${port:-} ]] || { cat "$WORK/serve.log"; exit 1; }
  TARGET=127.0.0.1:$port
fi
PROM_PORT=$(free_port)
cat >"$WORK/prometheus.yml" <<YML
global: {scrape_interval: 1s, evaluation_interval: 1s}
scrape_configs:
  - job_name: deltaserve
    static_configs: [{targets: ["$TARGET"]}]
YML
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/data" \
  --web.listen-address="127.0.0.1:$PROM_PORT" >"$WORK/prometheus.log" 2>&1 &
PIDS+=($!)
PROM=http://127.0.0.1:$PROM_PORT
for _ in $(seq 1 100); do curl -sf "$PROM/-/ready" >/dev/null && break; sleep 0.2; done
curl -sf "$PROM/-/ready" >/dev/null || { cat "$WORK/prometheus.log"; exit 1; }
echo "prometheus on $PROM scraping $TARGET"

if [[ -z ${PROM_TARGET:-} ]]; then  # load: a few streaming completions, spread over several scrapes
  for round in 1 2 3 4; do
    LOAD=()
    for i in 1 2 3; do
      curl -sf "http://$TARGET/v1/completions" -H 'Content-Type: application/json' \
        -d '{"model":"kimi-linear-tiny","prompt":"Once upon a time","max_tokens":32,"ignore_eos":true,"stream":true}' \
        >/dev/null &
      LOAD+=($!)
    done
    wait "${LOAD[@]}"  # these requests only (a bare wait would wait for the servers too)
    sleep 1
  done
fi
sleep 3  # let the last scrape land

query() {  # query PROMQL: prints the scalar value of the first series
  curl -sf --get "$PROM/api/v1/query" --data-urlencode "query=$1" |
    python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "none")'
}
status=0
for metric in time_to_first_token_seconds inter_token_latency_seconds; do
  for q in 0.5 0.9 0.99; do
    expr="histogram_quantile($q, sum by (le) (rate(deltaserve_${metric}_bucket[1m])))"
    v=$(query "$expr")
    printf '%-80s = %s s\n' "$expr" "$v"
    [[ $v != none && $v != NaN ]] || status=1
  done
done
up=$(query 'up{job="deltaserve"}')
echo "up{job=\"deltaserve\"} = $up"
[[ $up == 1 ]] || status=1
[[ $status == 0 ]] && echo "prometheus-check: OK" || echo "prometheus-check: FAILED (no data)" >&2
exit $status
