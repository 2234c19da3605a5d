#!/usr/bin/env bash
# Runs every libFuzzer target (fuzz/fuzz_*.cpp) for FUZZ_SECONDS (default 60) each under ASan/UBSan,
# or, with FUZZ_RUNS=N, for exactly N inputs from the fixed seed FUZZ_SEED (default 1): a run that is the
# same on every machine, which CI uses so that its verdict on a commit is reproducible (a time-limited
# run explores differently each time; that is what developers run to find new bugs),
# FUZZ_JOBS (default: the core count) targets at a time, starting from the committed corpus
# fuzz/corpus/<target>/ and its dictionary fuzz/dict/<target>.dict. New inputs go to
# ${BUILD_DIR}/fuzz-corpus/<target>/ (not committed); a crash, leak, sanitizer report, timeout or
# out-of-memory is written to ${BUILD_DIR}/fuzz-findings/ and fails the script.
# FUZZ_TARGETS="request jinja" limits the targets. Builds in ${BUILD_DIR:-build-asan} (scripts/sanitize.sh).
# A longer run, reproducing a finding and adding a regression input: docs/FUZZING.md.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build-asan}
SECONDS_EACH=${FUZZ_SECONDS:-60}
JOBS=${FUZZ_JOBS:-$(nproc)}
TARGETS=${FUZZ_TARGETS:-$(cd fuzz && ls fuzz_*.cpp | sed 's/^fuzz_//; s/\.cpp$//')}
bash scripts/sanitize.sh --configure
mapfile -t BINS < <(for t in $TARGETS; do echo "fuzz_$t"; done)
cmake --build "$BUILD_DIR" -j "${BUILD_JOBS:-$(nproc)}" --target "${BINS[@]}"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
mkdir -p "$BUILD_DIR/fuzz-findings" "$BUILD_DIR/fuzz-logs"

run_one() {
  local t=$1 work="$BUILD_DIR/fuzz-corpus/$1" dict=()
  mkdir -p "$work"
  [[ -f fuzz/dict/$t.dict ]] && dict=(-dict="fuzz/dict/$t.dict")
  local limit=(-max_total_time="$SECONDS_EACH") pre=()
  if [[ -n "${FUZZ_RUNS:-}" ]]; then
    # Reproducible: from the committed corpus only, into an empty folder, no reloading on a timer, and
    # without address randomization (pointer-keyed hash tables cover different branches at different
    # addresses, which steers the fuzzer differently).
    limit=(-runs="$FUZZ_RUNS" -seed="${FUZZ_SEED:-1}" -reload=0)
    work="$BUILD_DIR/fuzz-corpus-fixed/$t"
    rm -rf "$work" && mkdir -p "$work"
    setarch "$(uname -m)" -R true 2>/dev/null && pre=(setarch "$(uname -m)" -R)
  fi
  "${pre[@]}" "$BUILD_DIR/fuzz/fuzz_$t" "${limit[@]}" -timeout="${FUZZ_TIMEOUT:-10}" -rss_limit_mb=2048 \
    -print_final_stats=1 "${dict[@]}" -artifact_prefix="$BUILD_DIR/fuzz-findings/$t-" \
    "$work" "fuzz/corpus/$t" >"$BUILD_DIR/fuzz-logs/$t.log" 2>&1
}

declare -A pid_of
failed=()
for t in $TARGETS; do
  while (( $(jobs -rp | wc -l) >= JOBS )); do wait -n || true; done
  run_one "$t" & pid_of[$t]=$!
done
for t in $TARGETS; do
  if ! wait "${pid_of[$t]}"; then failed+=("$t"); fi
  log="$BUILD_DIR/fuzz-logs/$t.log"
  execs=$(grep -oE 'stat::number_of_executed_units: [0-9]+' "$log" | grep -oE '[0-9]+$' || echo "?")
  rate=$(grep -oE 'exec/s: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+$' || echo "?")
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+$' || echo "?")
  printf 'fuzz %-18s %8s runs  %6s exec/s  cov %6s\n' "$t" "$execs" "$rate" "$cov"
done
if ((${#failed[@]})); then
  for t in "${failed[@]}"; do
    echo "=== fuzz_$t FAILED; last lines of $BUILD_DIR/fuzz-logs/$t.log:"
    tail -n 60 "$BUILD_DIR/fuzz-logs/$t.log"
  done
  echo "fuzz: findings in ${failed[*]} (inputs under $BUILD_DIR/fuzz-findings/; see docs/FUZZING.md)"
  exit 1
fi
echo "fuzz: no findings"
