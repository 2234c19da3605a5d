#!/usr/bin/env bash
# The CPU test suite under AddressSanitizer + UndefinedBehaviorSanitizer (clang). Builds
# ${BUILD_DIR:-build-asan} (RelWithDebInfo, DS_CUDA=OFF, DS_SANITIZE=address,undefined, DS_FUZZ=ON:
# the fuzz targets share this build, and `ctest -L cpu` replays their committed corpora) and runs
# `ctest -L cpu`. Any sanitizer report fails the test that hit it. `--configure` only configures
# (scripts/fuzz.sh uses it). SANITIZE_EXCLUDE=REGEX leaves out the tests whose names match (ctest -E;
# .ci/run's default job leaves out the slowest end-to-end suites). See docs/FUZZING.md.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build-asan}
GEN=(); command -v ninja >/dev/null && [[ ! -f "$BUILD_DIR/CMakeCache.txt" ]] && GEN=(-G Ninja)
CC=${CC:-clang} CXX=${CXX:-clang++} cmake -S . -B "$BUILD_DIR" "${GEN[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DDS_CUDA=OFF -DDS_SANITIZE=address,undefined -DDS_FUZZ=ON | grep -E "deltaserve:|Error|error" || true
[[ "${1:-}" == "--configure" ]] && exit 0
cmake --build "$BUILD_DIR" -j "${JOBS:-$(nproc)}"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
EXCLUDE=(); [[ -n "${SANITIZE_EXCLUDE:-}" ]] && EXCLUDE=(-E "$SANITIZE_EXCLUDE")
cd "$BUILD_DIR"
ctest -L cpu "${EXCLUDE[@]}" --output-on-failure -j "${TEST_JOBS:-2}" --timeout 1800
