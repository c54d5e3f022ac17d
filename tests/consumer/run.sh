#!/usr/bin/env bash
# Installs kvtrim into a temporary prefix, builds tests/consumer against it and runs it.
set -euo pipefail
cd "$(dirname "$0")/../.."
WORK="${1:-build-consumer}"
rm -rf "$WORK" && mkdir -p "$WORK"
PREFIX="$(cd "$WORK" && pwd)/prefix"
cmake -S . -B "$WORK/kvtrim" -DKVTRIM_BUILD_EXAMPLES=OFF -DKVTRIM_BUILD_TESTS=OFF -DCMAKE_INSTALL_PREFIX="$PREFIX" >/dev/null
cmake --install "$WORK/kvtrim" >/dev/null
cmake -S tests/consumer -B "$WORK/app" -DCMAKE_PREFIX_PATH="$PREFIX" >/dev/null
cmake --build "$WORK/app" >/dev/null
"$WORK/app/consumer"
