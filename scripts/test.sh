#!/usr/bin/env bash
# Builds everything and passes the tests (the README's second command; CI runs exactly this):
#  1. set-up (packages, model) and the Release build with -Werror;
#  2. a consumer project that installs kvtrim into a temporary prefix and builds against it;
#  3. the library's unit tests under AddressSanitizer + UndefinedBehaviorSanitizer;
#  4. every GoogleTest suite of the Release build (library, host on the real model, tools); the
#     CUDA tests and benchmarks are compiled by that build when nvcc is found (run on a GPU by
#     scripts/gpu_check.sh);
#  5. the Python package: built by `pip install .` into a venv and its pytest suite
#     (scripts/python_test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS="$(nproc)"
scripts/setup.sh build
tests/consumer/run.sh build-consumer

cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DKVTRIM_SANITIZE=ON -DKVTRIM_BUILD_EXAMPLES=OFF >/dev/null
cmake --build build-asan -j"$JOBS" --target kvtrim_unit_tests
ctest --test-dir build-asan --output-on-failure -j"$JOBS"


ctest --test-dir build --output-on-failure -j"$JOBS"

scripts/python_test.sh
