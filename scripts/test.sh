#!/usr/bin/env bash
# The test command: installs dependencies, builds, runs every CPU test (unit, golden, e2e).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh -DDS_WERROR=ON
cd "${BUILD_DIR:-build}"
rc=0
ctest -L cpu --output-on-failure -j "${TEST_JOBS:-2}" --timeout 1200 || rc=$?
if [[ $rc != 0 ]]; then
  # A failing suite's whole output is above; CI shows only the end of the log: the failures again, short.
  echo "---- what failed (from $(pwd)/Testing/Temporary/LastTest.log) ----"
  grep -E -A6 ': Failure$|^not ok ' Testing/Temporary/LastTest.log | grep -v -E '^\s*(duration_ms|---|\.\.\.)' | head -80 || true
  grep -E '^\[  FAILED  \] [A-Za-z]' Testing/Temporary/LastTest.log | sort -u | head -20 || true
  exit $rc
fi
