#!/usr/bin/env bash
# Runs `kvtrim calibrate` as N single-threaded shards on every core, merges their resume logs and
# finishes the profile (stage layers, which needs the merged heads, and the write) in one process.
#
#   scripts/calibrate_parallel.sh OUTDIR [-j N] [--deadline SECONDS] [--kvtrim BIN] [--merge-only]
#                                 [-- CALIBRATE ARGS...]
#
# Shard K (0 <= K < N) runs `calibrate ARGS --shard K/N --resume-dir OUTDIR/shards/K`, its log in
# OUTDIR/logs/K.log; a second call with the same OUTDIR, N and ARGS resumes every shard. Then
# OUTDIR/merged gets every shard's heads/reasoning .jsonl appended, OUTDIR/shards/0's
# run.json, and `calibrate ARGS --resume-dir OUTDIR/merged --out OUTDIR/profile.json --json`
# (N threads) reuses the shards' trials, runs what is missing and writes the profile and
# OUTDIR/summary.json. --deadline stops the shards (not the finish) after that many seconds;
# unfinished shards skip the finish. --merge-only: only the merge and the finish.
set -euo pipefail

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; }
[[ $# -ge 1 && ( $1 == -h || $1 == --help ) ]] && { usage; exit 0; }
[[ $# -ge 1 ]] || { usage >&2; exit 2; }
out=$1
shift
source "$(dirname "$0")/lib/parallel.sh"
par_options calibrate_parallel "$@"
(( no_merge )) && { echo "calibrate_parallel: --no-merge is eval_parallel's; stop with --deadline instead" >&2; exit 2; }
set -- "${par_rest[@]}"
mkdir -p "$out/shards" "$out/logs"

if (( ! merge_only )); then
  par_start "$jobs" "$deadline"
  for ((k = 0; k < jobs; ++k)); do
    mkdir -p "$out/shards/$k"
    par_launch "shard $k/$jobs" "$out/logs/$k.log" "$bin" calibrate "$@" --shard "$k/$jobs" \
      --resume-dir "$out/shards/$k" --out "$out/shards/$k/unused.json" --quiet
  done
  par_wait
  echo "calibrate_parallel: shards done in $((SECONDS - par_t0)) s" >&2
  unfinished=$(grep -L 'rc=0 ' "$out"/logs/*.log || true)
  if [[ -n $unfinished ]]; then
    echo "calibrate_parallel: unfinished shards (rerun to resume):" $unfinished >&2
    exit 3
  fi
fi

# Shards run only the needle stages: merged/layers.jsonl holds the finish's own samples and is
# kept, so an interrupted finish resumes too.
m=$out/merged
mkdir -p "$m"
cp "$out/shards/0/run.json" "$m/run.json"
for f in heads reasoning; do
  rm -f "$m/$f.jsonl"
  for d in "$out"/shards/*/; do par_append "$d/$f.jsonl" "$m/$f.jsonl"; done
  # Shards seeded with the same records hold the same lines: keep one of each.
  [[ -f $m/$f.jsonl ]] && awk '!seen[$0]++' "$m/$f.jsonl" > "$m/$f.jsonl.tmp" && mv "$m/$f.jsonl.tmp" "$m/$f.jsonl"
done
echo "calibrate_parallel: merged $(cat "$m"/*.jsonl 2>/dev/null | wc -l) trial records; finishing" >&2
OMP_NUM_THREADS=$jobs "$bin" calibrate "$@" --resume-dir "$m" --out "$out/profile.json" --json > "$out/summary.json"
echo "calibrate_parallel: wrote $out/profile.json and $out/summary.json" >&2
