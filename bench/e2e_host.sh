#!/usr/bin/env bash
# End-to-end speed and memory of the reference host with the full cache and compressed caches,
# beside llama.cpp on the same GGUF and thread count. Writes JSON lines to OUT and prints a
# markdown table. Usage: bench/e2e_host.sh OUT.jsonl [lengths] [methods] [budgets] [reps]
#   defaults: lengths "1024 4096 8192", methods "snapkv compresskv", budgets "32 64 128", reps 3
# Needs: build/bin/kvtrim (scripts/setup.sh); for the llama.cpp rows, scripts/oracle/build_llama_cpp.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:?usage: bench/e2e_host.sh OUT.jsonl}"
LENGTHS="${2:-1024 4096 8192}"
METHODS="${3:-snapkv compresskv}"
BUDGETS="${4:-32 64 128}"
REPS="${5:-3}"
THREADS="${OMP_NUM_THREADS:-$(nproc)}"
export OMP_NUM_THREADS="$THREADS"
KV="${KVTRIM_BIN:-build/bin/kvtrim}"
NEW=32
: >"$OUT"
run() {  # run LEN METHOD BUDGET REP
  local extra=()
  [ "$2" != full ] && extra=(--budget "$3")
  echo "host n=$1 $2 B=$3 rep $4 ..." >&2
  local j
  j="$("$KV" generate --haystack-tokens "$1" --method "$2" "${extra[@]}" --max-new-tokens $NEW --ignore-stop --json)"
  python3 -c "import json,sys; j=json.loads(sys.argv[1]); j.update(engine='kvtrim-host', n=int(sys.argv[2]), rep=int(sys.argv[3]), threads=int(sys.argv[4])); print(json.dumps(j))" \
    "$j" "$1" "$4" "$THREADS" >>"$OUT"
}
for n in $LENGTHS; do
  for rep in $(seq "$REPS"); do
    run "$n" full 0 "$rep"
    for m in $METHODS; do for b in $BUDGETS; do run "$n" "$m" "$b" "$rep"; done; done
  done
done
LB="${KVTRIM_CACHE:-$HOME/.cache/kvtrim}/llama.cpp-build/bin/llama-bench"
MODEL="${KVTRIM_MODEL:-$HOME/.cache/kvtrim/SmolLM2-135M-Instruct.Q4_1.gguf}"
if [ -x "$LB" ]; then
  for n in $LENGTHS; do
    echo "llama.cpp n=$n ..." >&2
    # prefill of n tokens; decode of NEW tokens after an n-token prompt (depth n)
    { "$LB" -m "$MODEL" -t "$THREADS" -p "$n" -n 0 -r "$REPS" -o jsonl 2>/dev/null
      "$LB" -m "$MODEL" -t "$THREADS" -p 0 -n $NEW -d "$n" -r "$REPS" -o jsonl 2>/dev/null; } |
      python3 -c "
import json,sys
for line in sys.stdin:
    j=json.loads(line); j['engine']='llama.cpp'; j['n']=int(sys.argv[1]); print(json.dumps(j))" "$n" >>"$OUT" || echo "llama-bench failed for n=$n" >&2
  done
else
  echo "no llama-bench at $LB (scripts/oracle/build_llama_cpp.sh builds it); host rows only" >&2
fi
python3 bench/e2e_table.py "$OUT"
