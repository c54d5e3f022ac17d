#!/usr/bin/env bash
# On the GPU machine's CPU cores (16 on the H200 host), resumable across device calls: finish the
# profile (calibrate shards seeded from committed records, then the finish), then run an eval grid
# with it. Staged by scripts/device_pack.sh; the state lives in build-evalpack/{cal,work}, which
# the machine keeps between calls while warm. Results come back as $OUT/ev.tgz.
#   DEADLINE=540 [SEED=bench/calibration/2026-12-02] [GRID=bench/accuracy/grid_2026-12-02.txt]
#   [PROFILE=P.json: skip calibration] [JOBS=16] bash scripts/device_job.sh
set -uo pipefail
[[ ${1:-} == -h || ${1:-} == --help ]] && { sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0; }
cd "$(dirname "$0")/.."
P=$PWD/build-evalpack
DEADLINE=${DEADLINE:-540} JOBS=${JOBS:-$(nproc)} GRID=${GRID:-bench/accuracy/grid_2026-12-02.txt}
SEED=${SEED:-bench/calibration/2026-12-02}
t0=$SECONDS
[[ -f $P/model.gguf ]] || cat "$P/a/model.part0" "$P/b/model.part1" > "$P/model.gguf"
[[ $(sha256sum < "$P/model.gguf" | cut -d' ' -f1) == $(cat "$P/b/model.sha256") ]] || { echo "model sha256 differs" >&2; exit 2; }
export LD_LIBRARY_PATH=$P/a/lib:$P/b/lib KVTRIM_BIN=$P/a/kvtrim
CAL=(--model "$P/model.gguf" --data-dir "$P/b/data" --stage all
     --needles lemon-cake,observatory,lighthouse,horse,clock --lengths 512,1024,1536,2048,3072,4096,5120,6144,7168,8100
     --depths 10 --max-new-tokens 50 --reasoning-needles collectors,bridges,captains
     --layer-prompts 8 --layer-prompt-tokens 4096 --layer-max-new-tokens 24 --seed 0)
profile=${PROFILE:-$P/cal/profile.json}
if [[ ! -f $profile ]]; then
  if [[ ! -d $P/cal/shards && -d $SEED ]]; then  # every shard and the finish start from the records
    for ((k = 0; k < JOBS; ++k)); do
      mkdir -p "$P/cal/shards/$k" && cp "$SEED/run.json" "$P/cal/shards/$k/"
      for f in heads reasoning; do [[ -f $SEED/$f.jsonl.gz ]] && gunzip -c "$SEED/$f.jsonl.gz" > "$P/cal/shards/$k/$f.jsonl"; done
    done
    mkdir -p "$P/cal/merged" && [[ -f $SEED/layers.jsonl.gz ]] && gunzip -c "$SEED/layers.jsonl.gz" > "$P/cal/merged/layers.jsonl"
  fi
  scripts/calibrate_parallel.sh "$P/cal" -j "$JOBS" --deadline "${SHARD_DEADLINE:-$((DEADLINE > 200 ? DEADLINE - 160 : 40))}" \
    -- "${CAL[@]}" >> "$P/cal-log.txt" 2>&1
  echo "calibrate_parallel rc=$? at $((SECONDS - t0)) s"
fi
left=$((DEADLINE - (SECONDS - t0)))
if [[ -f $profile && $left -gt 40 ]]; then
  scripts/eval_parallel.sh "$GRID" "$P/work" -j "$JOBS" --deadline "$left" --no-merge \
    -- --model "$P/model.gguf" --profile "$profile" --data-dir "$P/b/data" >> "$P/work-log.txt" 2>&1
  echo "eval_parallel rc=$? at $((SECONDS - t0)) s"
fi
tail -3 "$P/cal-log.txt" 2>/dev/null; tail -3 "$P/work-log.txt" 2>/dev/null
mkdir -p "${OUT:-/tmp/out}"
# Back: what is new (the shards' reasoning and logs, the finish, the eval shards); the heads
# records are the seed's and would pass the 16 MiB a returned file may have.
(cd "$P" && tar czf "${OUT:-/tmp/out}/ev.tgz" $(ls -d cal/profile.json cal/summary.json cal/logs cal/merged/reasoning.jsonl \
  cal/merged/layers.jsonl cal/shards/*/reasoning.jsonl work cal-log.txt work-log.txt 2>/dev/null))
ls -la "${OUT:-/tmp/out}"
