#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, -fsanitize=fuzzer,address,undefined) and runs each one.
#   tests/fuzz/run.sh                 short run: each target for 100,000 executions or 20 s, whichever
#                                     comes first (the test command; at most 2 minutes after the build)
#   tests/fuzz/run.sh --long          the long campaign: 1,000,000 executions per target, no time cap
#   options: --runs N (executions per target), --max-time S (seconds per target, 0: none),
#            --jobs J (targets run side by side, default 1),
#            --build DIR (default build-fuzz), --no-build (use the binaries already in DIR/fuzz),
#            then optional target names (gguf profile import tokenizer eval_jsonl eval_records).
# Corpora grow in DIR/corpus/<target> (seeded by make_seeds.py); a finding (crash, leak,
# sanitizer report, timeout) is written to DIR/findings/<target>/ and makes the script fail.
# Per-target executions, coverage (cov: edges, ft: features) and corpus size go to
# DIR/fuzz-summary.txt. docs/FUZZING.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=build-fuzz RUNS=100000 MAX_TIME=20 JOBS=1 DO_BUILD=1 TARGETS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --long) RUNS=1000000 MAX_TIME=0 ;;
    --runs) RUNS="$2"; shift ;;
    --max-time) MAX_TIME="$2"; shift ;;
    --jobs) JOBS="$2"; shift ;;
    --build) BUILD="$2"; shift ;;
    --no-build) DO_BUILD=0 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    -*) echo "run.sh: unknown option $1" >&2; exit 2 ;;
    *) TARGETS+=("$1") ;;
  esac
  shift
done
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(gguf profile import tokenizer eval_jsonl eval_records)

if [ "$DO_BUILD" = 1 ]; then
  CXX_BIN="${KVTRIM_FUZZ_CXX:-$(command -v clang++ || command -v clang++-14 || true)}"
  [ -n "$CXX_BIN" ] || { echo "run.sh: clang++ not found (apt-get install clang)" >&2; exit 1; }
  # Debug (assertions on: Eigen's included) at -O1; no -march=native and no OpenMP, so the
  # binaries run anywhere and every execution is single-threaded and reproducible.
  cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_COMPILER="$CXX_BIN" \
    -DCMAKE_CXX_FLAGS_DEBUG="-O1 -gline-tables-only" -DKVTRIM_FUZZ=ON -DKVTRIM_BUILD_TESTS=OFF \
    -DKVTRIM_NATIVE=OFF -DKVTRIM_CUDA=OFF -DCMAKE_DISABLE_FIND_PACKAGE_OpenMP=ON >/dev/null
  cmake --build "$BUILD" -j"$(nproc)" --target kvtrim_fuzzers
fi

python3 tests/fuzz/make_seeds.py "$BUILD/seeds"
SUMMARY="$BUILD/fuzz-summary.txt"
: > "$SUMMARY.tmp"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:allocator_may_return_null=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

dict_of() {
  case "$1" in
    gguf) echo tests/fuzz/dict/gguf.dict ;;
    tokenizer) echo tests/fuzz/dict/tokenizer.dict ;;
    *) echo tests/fuzz/dict/json.dict ;;
  esac
}

run_one() {
  local t="$1" bin="$BUILD/fuzz/fuzz_$1" corpus="$BUILD/corpus/$1" out="$BUILD/findings/$1" log="$BUILD/logs/$1.log"
  mkdir -p "$corpus" "$out" "$BUILD/logs"
  local limit=()
  [ "$MAX_TIME" != 0 ] && limit=(-max_total_time="$MAX_TIME")
  local rc=0
  "$bin" "$corpus" "$BUILD/seeds/$t" -dict="$(dict_of "$t")" -runs="$RUNS" "${limit[@]}" -max_len=8192 \
    -rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$out/" > "$log" 2>&1 || rc=$?
  local done_line cov ft corp execs secs
  done_line="$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 || true)"
  [ -n "$done_line" ] || done_line="$(grep -E '^#[0-9]+[[:space:]]' "$log" | tail -1 || true)"
  cov="$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$done_line")"
  ft="$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$done_line")"
  corp="$(sed -n 's/.* corp: \([0-9]*\/[0-9A-Za-z]*\).*/\1/p' <<<"$done_line")"
  execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
  secs="$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)"
  local verdict="ok"
  [ "$rc" = 0 ] || verdict="FINDING (exit $rc; see $log and $out/)"
  printf '%-13s executions %9s  seconds %5s  cov %6s  ft %6s  corpus %-12s %s\n' \
    "$t" "${execs:-?}" "${secs:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$verdict" >> "$SUMMARY.tmp"
  return "$rc"
}

fail=0
pids=()
for t in "${TARGETS[@]}"; do
  [ -x "$BUILD/fuzz/fuzz_$t" ] || { echo "run.sh: no target fuzz_$t in $BUILD/fuzz" >&2; exit 2; }
  run_one "$t" &
  pids+=($!)
  if [ "${#pids[@]}" -ge "$JOBS" ]; then
    wait "${pids[0]}" || fail=1
    pids=("${pids[@]:1}")
  fi
done
for p in "${pids[@]}"; do wait "$p" || fail=1; done
sort "$SUMMARY.tmp" > "$SUMMARY" && rm -f "$SUMMARY.tmp"
cat "$SUMMARY"
if [ "$fail" != 0 ]; then
  echo "fuzzing found a problem (details above)" >&2
  exit 1
fi
