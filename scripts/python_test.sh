#!/usr/bin/env bash
# Builds the Python package and passes its tests (python/tests), on a fresh Debian 12 machine:
#  1. Debian packages for the build (compiler, CMake, Eigen, Python headers and venv);
#  2. a venv (build-python/venv, or $KVTRIM_PY_VENV) with PyTorch (CPU import only: --no-deps + the libraries it
#     links, python/requirements-torch-cpu.txt), transformers, gguf, pytest
#     (python/requirements-test.txt); kept between runs, rebuilt when those files change;
#  3. `pip install .` of this repository into it, and a second, clean venv with nothing but the
#     built wheel, to show the package installs and imports on its own;
#  4. pytest python/tests (its summary line last). Exits non-zero on any failure.
# Usage: scripts/python_test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
PKGS="cmake g++ make libeigen3-dev libomp-dev python3-dev python3-venv python3-pip"
scripts/debian_packages.sh $PKGS
PY="${PYTHON:-python3}"
VENV="${KVTRIM_PY_VENV:-build-python/venv}"
STAMP="$VENV/.kvtrim-requirements"
want="$(cat python/requirements-test.txt python/requirements-torch-cpu.txt | sha256sum | cut -c1-16)"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  echo "python_test: creating $VENV" >&2
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip >&2
  torch_pin="$(grep -E '^torch==' python/requirements-torch-cpu.txt)"
  "$VENV/bin/pip" install -q --no-deps "$torch_pin" >&2
  grep -vE '^(torch==|#|$)' python/requirements-torch-cpu.txt > build-python/torch-deps.txt
  "$VENV/bin/pip" install -q -r build-python/torch-deps.txt -r python/requirements-test.txt >&2
  # shellcheck disable=SC2046
  "$VENV/bin/pip" install -q --no-deps $(sed -n 's/^# nodeps: //p' python/requirements-test.txt) >&2
  echo "$want" > "$STAMP"
fi
"$VENV/bin/python" -c "import torch; torch.nn.Linear(4, 2)(torch.ones(1, 4))" >&2
if "$VENV/bin/python" -c "import triton" 2>/dev/null; then echo "python_test: note: triton is installed (not needed)" >&2; fi

# The package: one wheel, built by `pip install .`'s own backend (scikit-build-core + nanobind).
rm -rf build-python/dist
"$VENV/bin/pip" wheel -q --no-deps -w build-python/dist . >&2
wheel="$(ls build-python/dist/kvtrim-*.whl)"
"$VENV/bin/pip" install -q --no-deps --force-reinstall "$wheel" >&2

# A clean venv with only the wheel (and numpy, its one requirement).
rm -rf build-python/clean
"$PY" -m venv build-python/clean
build-python/clean/bin/pip install -q "$wheel" >&2
(cd build-python && clean/bin/python -c "
import numpy as np, kvtrim
m = kvtrim.Method('snapkv', kvtrim.ModelShape(1, 4, 2, 8), budget=4, window=2)
k = np.arange(2 * 16 * 8, dtype=np.float32).reshape(2, 16, 8); v = k + 1
assert list(m.begin(16).compress_layer(0, k, v, np.ones((4, 2, 8), np.float32))) == [4, 4]
print('python_test: clean venv imports kvtrim', kvtrim.__version__, 'from', kvtrim.__file__)
")

# Tests run from outside the source tree so `import kvtrim` is the installed package.
PYBIN="$(cd "$VENV" && pwd)/bin/python"
cd build-python
exec "$PYBIN" -m pytest -c ../pyproject.toml --rootdir .. -p no:cacheprovider ../python/tests "$@"
