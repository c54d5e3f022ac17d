#!/usr/bin/env bash
# The CUDA backend on a GPU machine, in one call: configure + build the CUDA targets, run the
# CUDA tests under compute-sanitizer memcheck and then plain, run the benchmarks (kvtrim's, the
# kvpress peer's and PyTorch SDPA decode) and print one table (scripts/gpu_table.py).
#   scripts/gpu_check.sh [all|build|test|bench]        logs and JSON lines go to $OUT (or build-gpu/out)
#   GPU_TARGETS=kvtrim_cuda_bench scripts/gpu_check.sh build   builds only the named targets
# Without a system Eigen / GoogleTest it uses third_party/eigen3 and third_party/googletest when
# present; the kvpress peer runs when kvpress imports (its README: wheels on PYTHONPATH) and
# KVPRESS_BENCH (default ../shared/peers/kvpress_layer_bench.py or third_party/peers/) exists.
set -uo pipefail
cd "$(dirname "$0")/.."
WHAT="${1:-all}"
LOG="${OUT:-build-gpu/out}"
mkdir -p "$LOG" build-gpu
JOBS="$(nproc)"
status=0
step() { echo "== $*" >&2; }

if [ "$WHAT" = all ] || [ "$WHAT" = build ]; then
  EXTRA=()
  if [ ! -d /usr/include/eigen3 ] && [ -d third_party/eigen3 ]; then
    mkdir -p build-gpu/eigen-cmake
    printf 'add_library(Eigen3::Eigen INTERFACE IMPORTED)\nset_target_properties(Eigen3::Eigen PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "%s")\n' \
      "$PWD/third_party/eigen3" > build-gpu/eigen-cmake/Eigen3Config.cmake
    printf 'set(PACKAGE_VERSION 3.4.0)\nset(PACKAGE_VERSION_COMPATIBLE TRUE)\n' > build-gpu/eigen-cmake/Eigen3ConfigVersion.cmake
    EXTRA+=("-DEigen3_DIR=$PWD/build-gpu/eigen-cmake")
  fi
  [ -d third_party/googletest ] && EXTRA+=("-DKVTRIM_GTEST_SOURCE=$PWD/third_party/googletest")
  step "configure + build (nvcc $(nvcc --version | tail -1))"
  cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DKVTRIM_BUILD_EXAMPLES=OFF \
    -DKVTRIM_BUILD_TESTS=OFF -DKVTRIM_CUDA=ON "${EXTRA[@]}" > "$LOG/configure.log" 2>&1 || { tail -30 "$LOG/configure.log"; exit 1; }
  for t in ${GPU_TARGETS:-kvtrim_cuda_tests kvtrim_cuda_bench}; do
    cmake --build build-gpu -j"$JOBS" --target $t >> "$LOG/build.log" 2>&1 || { status=1; grep -E "error" "$LOG/build.log" | head -20; }
  done
fi
T=build-gpu/tests/cuda/kvtrim_cuda_tests
B=build-gpu/bench/cuda/kvtrim_cuda_bench
if [ "$WHAT" = all ] || [ "$WHAT" = test ]; then
  step "tests under compute-sanitizer memcheck (the 128k cases run plain only)"
  timeout 110 compute-sanitizer --tool memcheck --error-exitcode 9 "$T" --gtest_filter='-*Long*:CudaScores.WindowScoresMatchHostWithinF32Rounding:CudaSelect.TopKMatchesHostWithTiesEverywhere' > "$LOG/memcheck.log" 2>&1
  rc=$?; echo "memcheck exit $rc"; grep -E "ERROR SUMMARY|FAILED|PASSED|Invalid|error" "$LOG/memcheck.log" | head -20
  [ $rc -eq 0 ] || status=1
  step "tests, plain"
  timeout 120 "$T" > "$LOG/tests.log" 2>&1
  rc=$?; echo "tests exit $rc"; grep -E "^\[  (FAILED|PASSED) |^\[       OK|Failure|Expected|Which is|error" "$LOG/tests.log" | head -40
  [ $rc -eq 0 ] || status=1
fi
if [ "$WHAT" = all ] || [ "$WHAT" = bench ]; then
  step "kvtrim CUDA benchmark"
  timeout 100 "$B" > "$LOG/kvtrim_bench.jsonl" 2> "$LOG/kvtrim_bench.err" || { status=1; tail -5 "$LOG/kvtrim_bench.err"; }
  PEER="${KVPRESS_BENCH:-}"
  [ -z "$PEER" ] && for p in ../shared/peers/kvpress_layer_bench.py third_party/peers/kvpress_layer_bench.py; do [ -f "$p" ] && PEER="$p" && break; done
  if [ -n "$PEER" ] && python3 -c 'import importlib.util as u, sys; sys.exit(u.find_spec("kvpress") is None)'; then
    step "kvpress peer ($PEER)"
    PYTHONUNBUFFERED=1 timeout 130 python3 "$PEER" > "$LOG/kvpress.jsonl" 2> "$LOG/kvpress.err" || tail -5 "$LOG/kvpress.err"
  else
    echo "kvpress peer not run (no kvpress or no $PEER)"
  fi
  step "PyTorch SDPA decode over the uncompressed cache"
  timeout 40 python3 scripts/sdpa_decode_bench.py > "$LOG/sdpa_decode.jsonl" 2> "$LOG/sdpa_decode.err" || tail -5 "$LOG/sdpa_decode.err"
  python3 scripts/gpu_table.py "$LOG"/*.jsonl | tee "$LOG/table.md"
fi
exit $status
