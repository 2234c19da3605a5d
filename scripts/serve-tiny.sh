#!/usr/bin/env bash
# The main job on a fresh machine: install dependencies, build, and serve the bundled tiny model
# on http://127.0.0.1:${PORT:-8000} (OpenAI API). Extra arguments go to `deltaserve serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh
exec "${BUILD_DIR:-build}/deltaserve" serve \
  --model tests/fixtures/tiny/model --tokenizer tests/fixtures/tiny/tokenizer \
  --served-model-name kimi-linear-tiny --host 127.0.0.1 --port "${PORT:-8000}" "$@"
