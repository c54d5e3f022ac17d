#!/usr/bin/env bash
# The README's first command: set up everything (packages, model, essays, build) and run
# `kvtrim demo` on the default model. Extra arguments go to the demo (e.g. --seed 7 --json).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh build
exec build/bin/kvtrim demo "$@"
