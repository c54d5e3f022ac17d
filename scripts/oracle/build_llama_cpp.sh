#!/usr/bin/env bash
# Build the independent oracle: llama.cpp as vendored in the PyPI sdist llama-cpp-python==0.3.36
# (ggml-org/llama.cpp@0c1e57098bba43ac29e6e3b677cdceebdd22334f), CPU only, Release, no curl/openssl.
# Builds only libllama (+ ggml), llama-bench, llama-quantize and our oracle program scripts/oracle/oracle.cpp.
# Idempotent: every step is skipped when its output is already there and current.
#
# Usage: scripts/oracle/build_llama_cpp.sh [cache-dir]      (default $KVTRIM_CACHE or ~/.cache/kvtrim)
#   env JOBS=N   parallel build jobs (default 2)
# Outputs (nothing is committed):
#   <cache>/llama_cpp_python-0.3.36.tar.gz        the pinned sdist (sha256 checked)
#   <cache>/llama.cpp-src/llama_cpp_python-0.3.36 unpacked source (vendor/llama.cpp inside)
#   <cache>/llama.cpp-build/bin/{llama-bench,kvtrim-oracle,lib*.so}
# Prints the build's bin directory on stdout.
set -euo pipefail
CACHE="${1:-${KVTRIM_CACHE:-$HOME/.cache/kvtrim}}"
JOBS="${JOBS:-2}"
VER=0.3.36
SDIST="llama_cpp_python-$VER.tar.gz"
SHA=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SRCROOT="$CACHE/llama.cpp-src/llama_cpp_python-$VER"
LLAMA="$SRCROOT/vendor/llama.cpp"
BUILD="$CACHE/llama.cpp-build"
log() { echo "[build_llama_cpp] $*" >&2; }
mkdir -p "$CACHE"

# 1. pinned sdist (whole or not at all)
if ! { [ -f "$CACHE/$SDIST" ] && echo "$SHA  $CACHE/$SDIST" | sha256sum -c --status; }; then
    log "downloading llama-cpp-python==$VER sdist from PyPI (76 MB)"
    TMP="$(mktemp -d)"; trap 'rm -rf "$TMP"' EXIT
    python3 -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$VER" -d "$TMP" >&2
    echo "$SHA  $TMP/$SDIST" | sha256sum -c --status || { echo "sha256 mismatch for $SDIST" >&2; exit 1; }
    mv "$TMP/$SDIST" "$CACHE/$SDIST.part" && mv "$CACHE/$SDIST.part" "$CACHE/$SDIST"
fi

# 2. unpack (marker file written last, so a half-unpacked tree is redone)
if [ ! -f "$SRCROOT/.unpacked-ok" ]; then
    log "unpacking $SDIST"
    rm -rf "$SRCROOT"; mkdir -p "$CACHE/llama.cpp-src"
    tar -xzf "$CACHE/$SDIST" -C "$CACHE/llama.cpp-src"
    touch "$SRCROOT/.unpacked-ok"
fi

# 3. configure + build libllama, llama-bench and llama-quantize (golden.py dequantises
#    the GGUF with it); cmake's build is incremental
if [ ! -f "$BUILD/CMakeCache.txt" ]; then
    log "configuring llama.cpp in $BUILD"
    cmake -S "$LLAMA" -B "$BUILD" \
        -DCMAKE_BUILD_TYPE=Release \
        -DBUILD_SHARED_LIBS=ON \
        -DGGML_NATIVE=ON \
        -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF -DGGML_OPENCL=OFF -DGGML_RPC=OFF \
        -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
        -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_COMMON=ON >&2
fi
log "building llama, llama-bench, llama-quantize with -j$JOBS"
cmake --build "$BUILD" --config Release -j"$JOBS" --target llama llama-bench llama-quantize >&2

# 4. our oracle program, compiled against llama.h of this exact source, rpath to the build
ORACLE_SRC="$HERE/oracle.cpp"
ORACLE_BIN="$BUILD/bin/kvtrim-oracle"
if [ ! -x "$ORACLE_BIN" ] || [ "$ORACLE_SRC" -nt "$ORACLE_BIN" ] || [ "$BUILD/bin/libllama.so" -nt "$ORACLE_BIN" ]; then
    log "compiling $ORACLE_BIN"
    "${CXX:-g++}" -std=c++17 -O2 -Wall -Wextra \
        -I"$LLAMA/include" -I"$LLAMA/ggml/include" \
        "$ORACLE_SRC" -o "$ORACLE_BIN.tmp" \
        -L"$BUILD/bin" -Wl,-rpath,"$BUILD/bin" -lllama -lggml -lggml-base -lpthread
    mv "$ORACLE_BIN.tmp" "$ORACLE_BIN"
fi
echo "$BUILD/bin"
