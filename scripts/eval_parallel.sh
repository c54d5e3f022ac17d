#!/usr/bin/env bash
# Runs a grid of `kvtrim eval` shards on every core, one single-threaded process per core, then
# merges the shards by task kind and renders each merged folder with `kvtrim report`.
#
#   scripts/eval_parallel.sh GRID OUTDIR [-j N] [--deadline SECONDS] [--kvtrim BIN] [--merge-only]
#                            [--no-merge] [-- EVAL ARGS...]
#
# GRID: lines "NAME | TASK ARGS" (bench/accuracy/grid_*.txt; '#' starts a comment). Shard NAME
# writes OUTDIR/shards/NAME (reused folders resume: finished records are skipped), its log
# OUTDIR/logs/NAME.log. EVAL ARGS (--model, --profile, --data-dir, ...) go to every shard.
# --deadline stops the shards still running after that many seconds (a second call resumes them).
# Shards whose NAME starts alike up to the first '-L' merge into OUTDIR/merged/<that prefix>
# (niah-heldout-L8000-H1 -> merged/niah-heldout): their samples.jsonl concatenated, ids being
# distinct per shard (lengths, rotations -H<r>, seeds -S<s>), each shard's config.json kept as
# configs/NAME.json. --merge-only: only merge and render what OUTDIR/shards holds; --no-merge:
# only run the shards.
set -euo pipefail

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; }
[[ $# -ge 1 && ( $1 == -h || $1 == --help ) ]] && { usage; exit 0; }
[[ $# -ge 2 ]] || { usage >&2; exit 2; }
grid=$1 out=$2
shift 2
source "$(dirname "$0")/lib/parallel.sh"
par_options eval_parallel "$@"
[[ -f $grid || $merge_only == 1 ]] || { echo "eval_parallel: no grid file $grid" >&2; exit 2; }
mkdir -p "$out/shards" "$out/logs" "$out/merged"
extra=("${par_rest[@]}")

par_start "$jobs" "$deadline"
(( merge_only )) && grid=/dev/null
while IFS= read -r line; do
  line=${line%%#*}
  [[ $line == *'|'* ]] || continue
  name=$(echo "${line%%|*}" | xargs)
  read -r -a args <<< "${line#*|}"
  par_launch "shard $name" "$out/logs/$name.log" "$bin" eval "${args[@]}" "${extra[@]}" --out "$out/shards/$name" --quiet
done < "$grid"
par_wait
(( merge_only )) || echo "eval_parallel: shards done in $((SECONDS - par_t0)) s" >&2

(( no_merge )) && exit 0
# Merge by task kind and render.
declare -A kinds=()
for d in "$out"/shards/*/; do
  [[ -f $d/samples.jsonl ]] || continue
  n=$(basename "$d")
  kinds[${n%%-L*}]+="$d "
done
for k in "${!kinds[@]}"; do
  m=$out/merged/$k
  rm -rf "$m"
  mkdir -p "$m"
  for d in ${kinds[$k]}; do par_append "$d/samples.jsonl" "$m/samples.jsonl"; done
  mkdir -p "$m/configs"
  for d in ${kinds[$k]}; do cp "$d/config.json" "$m/configs/$(basename "$d").json" 2>/dev/null || true; done
  first=(${kinds[$k]})
  "$bin" report "$m" --quiet > /dev/null
  echo "eval_parallel: merged/$k: $(wc -l < "$m/samples.jsonl") records from ${#first[@]} shards" >&2
done
