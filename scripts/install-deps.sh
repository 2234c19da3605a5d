#!/usr/bin/env bash
# Installs every build and test dependency from Debian packages (idempotent; needs root or sudo).
set -euo pipefail
PKGS=(build-essential cmake ninja-build pkg-config git python3
      nlohmann-json3-dev libboost-dev libcli11-dev libspdlog-dev libfmt-dev libgtest-dev curl
      clang libclang-rt-dev   # clang + its sanitizer/libFuzzer runtimes: scripts/sanitize.sh, scripts/fuzz.sh
      libcurl4-openssl-dev    # optional at build time: Hugging Face downloads (serve ORG/NAME)
      prometheus)             # promtool (e2e_metrics) and the server scripts/prometheus-check.sh runs
# Node.js + npm run the end-to-end tests; take Debian's only when no node/npm is on the PATH
# (a NodeSource nodejs package bundles npm and conflicts with Debian's npm package).
command -v node >/dev/null || PKGS+=(nodejs)
command -v npm >/dev/null || PKGS+=(npm)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO=sudo
  echo "install-deps: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# The end-to-end tests' clients (tests/e2e/package.json, pinned in package-lock.json): the OpenAI
# Node.js SDK, LangChain JS (@langchain/openai, @langchain/core), the Vercel AI SDK (ai,
# @ai-sdk/openai), zod, and ajv (the JSON-schema validator that checks structured outputs).
if [[ -f tests/e2e/package.json ]] && ! node tests/e2e/deps_ok.cjs; then
  (cd tests/e2e && npm ci --no-audit --no-fund --silent)
fi
