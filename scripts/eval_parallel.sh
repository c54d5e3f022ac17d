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
jobs=$(nproc) deadline=0 bin=${KVTRIM_BIN:-build/bin/kvtrim} merge_only=0 no_merge=0
while [[ $# -gt 0 ]]; do
  case $1 in
    -j) jobs=$2; shift 2 ;;
    --deadline) deadline=$2; shift 2 ;;
    --kvtrim) bin=$2; shift 2 ;;
    --merge-only) merge_only=1; shift ;;
    --no-merge) no_merge=1; shift ;;
    --) shift; break ;;
    *) echo "eval_parallel: unknown option $1" >&2; exit 2 ;;
  esac
done
[[ -f $grid || $merge_only == 1 ]] || { echo "eval_parallel: no grid file $grid" >&2; exit 2; }
[[ -x $bin ]] || { echo "eval_parallel: no kvtrim binary at $bin (--kvtrim)" >&2; exit 2; }
mkdir -p "$out/shards" "$out/logs" "$out/merged"
extra=("$@")

run_shard() {  # SECONDS NAME ARGS...: one shard, single-threaded, its wall time in its log's last line
  local limit=$1 name=$2
  shift 2
  local t0=$SECONDS rc=0 cmd=("$bin" eval "$@" "${extra[@]}" --out "$out/shards/$name" --quiet)
  (( limit > 0 )) && cmd=(timeout --signal=TERM "$limit" "${cmd[@]}")
  OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE "${cmd[@]}" > "$out/logs/$name.log" 2>&1 || rc=$?
  echo "shard $name rc=$rc wall_s=$((SECONDS - t0))" | tee -a "$out/logs/$name.log" >&2
}

start=$SECONDS
running=0
(( merge_only )) && grid=/dev/null
while IFS= read -r line; do
  line=${line%%#*}
  [[ $line == *'|'* ]] || continue
  name=$(echo "${line%%|*}" | xargs)
  read -r -a args <<< "${line#*|}"
  while (( running >= jobs )); do
    wait -n || true
    running=$((running - 1))
  done
  limit=0
  if (( deadline > 0 )); then
    limit=$((deadline - (SECONDS - start)))
    if (( limit <= 0 )); then
      echo "eval_parallel: deadline reached, $name not started" >&2
      continue
    fi
  fi
  run_shard "$limit" "$name" "${args[@]}" &
  running=$((running + 1))
  echo "eval_parallel: started $name ($running running, $((SECONDS - start)) s)" >&2
done < "$grid"
wait || true
(( merge_only )) || echo "eval_parallel: shards done in $((SECONDS - start)) s" >&2

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
  # sed: a shard cut off mid-line still ends in a newline, so its torn line stays its own (skipped)
  for d in ${kinds[$k]}; do sed -e '$a\' "$d/samples.jsonl" >> "$m/samples.jsonl"; done
  mkdir -p "$m/configs"
  for d in ${kinds[$k]}; do cp "$d/config.json" "$m/configs/$(basename "$d").json" 2>/dev/null || true; done
  first=(${kinds[$k]})
  "$bin" report "$m" --quiet > /dev/null
  echo "eval_parallel: merged/$k: $(wc -l < "$m/samples.jsonl") records from ${#first[@]} shards" >&2
done
