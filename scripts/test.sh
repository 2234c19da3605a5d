#!/usr/bin/env bash
# The test command: installs dependencies, builds, runs every CPU test (unit, golden, e2e).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh -DDS_WERROR=ON
cd "${BUILD_DIR:-build}"
ctest -L cpu --output-on-failure -j "${TEST_JOBS:-2}" --timeout 1200
