#!/usr/bin/env bash
# Stages what scripts/device_job.sh needs on the GPU machine, in two halves that each fit one
# device call's 64 MiB (the machine keeps ignored build*/ folders between calls while it is warm):
#   build-evalpack/a: the model's first 48,000,000 bytes, the stripped kvtrim binary, the C++
#                     runtime libraries it links (the device image lacks some);
#   build-evalpack/b: the rest of the model, libcrypto, the essays and the calibration files.
# Call 1 carries build-evalpack/a, call 2 build-evalpack/b, later calls nothing.
#   scripts/device_pack.sh [BUILD_DIR]   (default build; needs its bin/kvtrim)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build} P=build-evalpack
[[ $# -ge 1 && ( $1 == -h || $1 == --help ) ]] && { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0; }
[[ -x $build/bin/kvtrim ]] || { echo "device_pack: no $build/bin/kvtrim (build it first)" >&2; exit 2; }
model=$(scripts/fetch_model.sh)
data=${KVTRIM_DATA_DIR:-../shared/data}
rm -rf "$P/a" "$P/b"
mkdir -p "$P/a/lib" "$P/b/lib" "$P/b/data/leval"
head -c 48000000 "$model" > "$P/a/model.part0"
tail -c +48000001 "$model" > "$P/b/model.part1"
cp "$build/bin/kvtrim" "$P/a/kvtrim" && strip "$P/a/kvtrim"
lib() { ldconfig -p | awk -v l="$1" '$1 == l {print $NF; exit}'; }
for l in libgomp.so.1 libpcre2-8.so.0 libstdc++.so.6; do cp -L "$(lib $l)" "$P/a/lib/"; done
cp -L "$(lib libcrypto.so.3)" "$P/b/lib/"
cp -r "$data/pg_essays" "$P/b/data/"
cp "$data"/leval/{gov_report_summ,patent_summ,news_summ,financial_qa}.jsonl "$P/b/data/leval/"
sha256sum "$model" | cut -d' ' -f1 > "$P/b/model.sha256"
du -sh "$P/a" "$P/b" >&2
