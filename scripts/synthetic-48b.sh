#!/usr/bin/env bash
# The 48B config with a synthetic 163,842-id Kimi-shaped tokenizer (the real one is not in the repository):
# 256 byte tokens, then "<tN>" tokens up to Kimi's 163,584 base ids, then the tiny fixture's special tokens
# shifted to 163,584.. like the real tokenizer. For `--load-format dummy` serving on the GPU machine.
#   scripts/synthetic-48b.sh DIR   (does nothing when DIR already holds it)
set -euo pipefail
cd "$(dirname "$0")/.."
M=$1
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
