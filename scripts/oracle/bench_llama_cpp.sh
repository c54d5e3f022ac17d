#!/usr/bin/env bash
# llama.cpp's own speed on the default model, as the anchor for the reference host's numbers.
# Runs llama-bench (built by scripts/oracle/build_llama_cpp.sh) with 2 threads, llama.cpp's default
# settings otherwise (flash attention auto, F16 KV cache, n_batch 2048, n_ubatch 512, weight repack on):
#   prefill   pp1024, pp4096, pp8192                    (empty cache)
#   decode    tg64 at depth 1024, 4096, 8192            (64 tokens after a prefilled context of that depth)
# Prints a table and writes llama-bench's JSON records (both runs, one array) to OUT.json.
#
# Usage: scripts/oracle/bench_llama_cpp.sh OUT.json [model.gguf]
#   env THREADS (default 2), REPS (repetitions per test, default 3), KVTRIM_CACHE (default ~/.cache/kvtrim)
# Note: the depth-8192 decode test runs positions 8192..8255, just past the model's 8192 training context;
# it measures speed only.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 OUT.json [model.gguf]" >&2; exit 2; }
OUT="$1"
CACHE="${KVTRIM_CACHE:-$HOME/.cache/kvtrim}"
MODEL="${2:-$CACHE/SmolLM2-135M-Instruct.Q4_1.gguf}"
THREADS="${THREADS:-2}"
REPS="${REPS:-3}"
BENCH="$CACHE/llama.cpp-build/bin/llama-bench"
[ -x "$BENCH" ] || { echo "llama-bench not built: run scripts/oracle/build_llama_cpp.sh" >&2; exit 1; }
[ -f "$MODEL" ] || { echo "model not found: $MODEL (run scripts/fetch_model.sh)" >&2; exit 1; }
TMP="$(mktemp -d)"; trap 'rm -rf "$TMP"' EXIT

echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ)  $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores" >&2
echo "# load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
"$BENCH" -m "$MODEL" -t "$THREADS" -r "$REPS" -p 1024,4096,8192 -n 0 --progress -o json > "$TMP/pp.json"
"$BENCH" -m "$MODEL" -t "$THREADS" -r "$REPS" -p 0 -n 64 -d 1024,4096,8192 --progress -o json > "$TMP/tg.json"
echo "# load average after:  $(cut -d' ' -f1-3 /proc/loadavg)" >&2

python3 - "$TMP/pp.json" "$TMP/tg.json" "$OUT" <<'PY'
import json, os, sys
recs = json.load(open(sys.argv[1])) + json.load(open(sys.argv[2]))
out = sys.argv[3]
tmp = out + ".tmp"
with open(tmp, "w") as f:
    json.dump(recs, f, indent=1)
    f.write("\n")
os.replace(tmp, out)                      # whole or not at all
r0 = recs[0]
print("llama.cpp %s (build %s), %s, %s, threads %d, type_k/v %s/%s, flash_attn %s, n_batch %d, n_ubatch %d" % (
    r0["build_commit"], r0["build_number"], r0["model_type"], r0["cpu_info"], r0["n_threads"],
    r0["type_k"], r0["type_v"], {-1: "auto", 0: "off", 1: "on"}.get(r0["flash_attn"], r0["flash_attn"]),
    r0["n_batch"], r0["n_ubatch"]))
print("| test | depth | tokens/s | ± stddev | ms/token | runs |")
print("| --- | ---: | ---: | ---: | ---: | ---: |")
for r in recs:
    name = "pp%d" % r["n_prompt"] if r["n_prompt"] else "tg%d" % r["n_gen"]
    print("| %s | %d | %.2f | %.2f | %.2f | %d |" % (name, r["n_depth"], r["avg_ts"], r["stddev_ts"],
                                                  1000.0 / r["avg_ts"], len(r["samples_ts"])))
print("json: " + out)
PY
