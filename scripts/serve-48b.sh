# Sourced by the GPU serving scripts: start_48b_server BINARY LOG [extra serve flags...] prepares the 48B
# config with the synthetic tokenizer (scripts/synthetic-48b.sh, in /tmp/ds48), starts `deltaserve serve
# --device cuda --load-format dummy` on a random port and waits for /health (--max-num-seqs 128 and
# --max-num-batched-tokens 8192 unless the extra flags give them). Sets SPID and PORT; returns 1
# (with the log's tail printed) when the server does not come up.
start_48b_server() {
  local bin=$1 log=$2
  shift 2
  local m=/tmp/ds48
  bash scripts/synthetic-48b.sh $m
  PORT=$((8100 + RANDOM % 800))
  local defaults=()  # the scripts' defaults, unless the caller gives its own (a flag may appear once)
  [[ " $* " == *" --max-num-seqs "* ]] || defaults+=(--max-num-seqs 128)
  [[ " $* " == *" --max-num-batched-tokens "* ]] || defaults+=(--max-num-batched-tokens 8192)
  "$bin" serve --device cuda --load-format dummy --model $m --served-model-name kimi48 \
      "${defaults[@]}" --port $PORT "$@" > "$log" 2>&1 &
  SPID=$!
  for i in $(seq 1 240); do
    curl -sf http://127.0.0.1:$PORT/health > /dev/null 2>&1 && break
    kill -0 $SPID 2>/dev/null || break
    sleep 1
  done
  if ! curl -sf http://127.0.0.1:$PORT/health > /dev/null 2>&1; then
    echo "server did not come up ($log)"; tail -20 "$log"; kill $SPID 2>/dev/null; return 1
  fi
}
