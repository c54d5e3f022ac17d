#!/usr/bin/env bash
# The kvtrim CLI as a user runs it: exact budgets as JSON, profile import of the published
# formats, and bad input -> one clear line and a non-zero exit. Usage: cli_test.sh KVTRIM SRC_DIR
set -uo pipefail
KVTRIM="$1"; SRC="$2"; FIX="$SRC/tests/fixtures"
TMP="$(mktemp -d)"; trap 'rm -rf "$TMP"' EXIT
pass=0; fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
# expect_json NAME PYTHON-EXPR ARGS... : runs kvtrim, parses stdout as JSON into j, checks EXPR
expect_json() {
  local name="$1" expr="$2"; shift 2
  local out
  if ! out="$("$KVTRIM" "$@" 2>"$TMP/err")"; then bad "$name: exit $? ($(cat "$TMP/err"))"; return; fi
  if python3 -c "import json,sys; j=json.loads(sys.argv[1]); sys.exit(0 if ($expr) else 1)" "$out"; then ok
  else bad "$name: $expr is false for $out"; fi
}
# expect_error NAME CODE PATTERN ARGS... : exit code CODE and a one-line message matching PATTERN
expect_error() {
  local name="$1" code="$2" pat="$3"; shift 3
  "$KVTRIM" "$@" >"$TMP/out" 2>"$TMP/err"; local rc=$?
  if [ "$rc" -ne "$code" ]; then bad "$name: exit $rc, expected $code ($(cat "$TMP/err"))"; return; fi
  if ! grep -qE -e "$pat" "$TMP/err"; then bad "$name: stderr '$(cat "$TMP/err")' lacks /$pat/"; return; fi
  if [ "$(wc -l <"$TMP/err")" -ne 1 ]; then bad "$name: more than one line on stderr"; return; fi
  ok
}

# --- budgets ----------------------------------------------------------------------------------
expect_json "snapkv uniform" 'j["layers"] == [64]*30 and j["heads"] == [[64]*3]*30' \
  budgets --method snapkv --budget 64 --layers 30 --q-heads 9 --kv-heads 3 --json
expect_json "pyramidkv decreasing, exact total" \
  'j["layers"] == sorted(j["layers"], reverse=True) and sum(sum(h) for h in j["heads"]) == 64*30*3 and j["layers"][0] > 64 > j["layers"][-1]' \
  budgets --method pyramidkv --budget 64 --layers 30 --q-heads 9 --kv-heads 3 --json
expect_json "ratio resolves against the prompt" 'j["budget"] == 100 and j["layers"] == [100]*4' \
  budgets --method snapkv --ratio 0.1 --prompt-len 1000 --layers 4 --q-heads 8 --kv-heads 2 --json
expect_json "budget >= prompt keeps the prompt" 'j["layers"] == [50]*4' \
  budgets --method snapkv --budget 64 --prompt-len 50 --layers 4 --q-heads 8 --kv-heads 2 --json

# --- profile import, then the methods that need it ---------------------------------------------
"$KVTRIM" profile import --compresskv-head-idx "$FIX/tiny_head_idx.json" \
  --compresskv-layer-score "$FIX/tiny_layer_score.jsonl" --headkv-scores "$FIX/tiny_retrieval_reasoning_heads.json" \
  --layers 3 --q-heads 4 --kv-heads 2 --model tiny --out "$TMP/p.json" >/dev/null 2>"$TMP/err" && ok || bad "profile import: $(cat "$TMP/err")"
python3 - "$TMP/p.json" <<'PY' && ok || bad "imported profile contents"
import json, sys
p = json.load(open(sys.argv[1]))
assert p["shape"] == {"layers": 3, "q_heads": 4, "kv_heads": 2}, p["shape"]
assert p["layer_error"] == [0.375, 0.25, 0.375], p["layer_error"]
assert p["semantic_retrieval"][0] == [3, 1, 4, 2], p["semantic_retrieval"]   # head 2 first, then 0, 3, 1
PY
# CompressKV, hand-worked: B_l = clip(32 + round(e_l * (3*64 - 3*32)), 32, 192) = 68, 56, 68
expect_json "compresskv error-aware budgets" 'j["layers"] == [68, 56, 68] and j["heads"] == [[68, 68], [56, 56], [68, 68]]' \
  budgets --profile "$TMP/p.json" --method compresskv --budget 64 --json
expect_json "headkv exact total" 'sum(sum(h) for h in j["heads"]) == 64*3*2' \
  budgets --profile "$TMP/p.json" --method headkv --budget 64 --json

# --- the registry: README's table is generated, parameters are namespaced ----------------------
"$KVTRIM" methods --markdown >"$TMP/table.md" 2>"$TMP/err" || bad "methods --markdown: $(cat "$TMP/err")"
python3 - "$TMP/table.md" "$SRC/README.md" <<'PY' && ok || bad "README methods table differs from 'kvtrim methods --markdown'"
import sys
table = open(sys.argv[1]).read().strip()
assert table in open(sys.argv[2]).read(), table
PY
expect_json "methods --json lists every method with its parameters" \
  'len(j["methods"]) >= 12 and [m["name"] for m in j["methods"]][:3] == ["full", "random", "streaming"] and any(p["key"] == "beta" and p["default"] == "20" for m in j["methods"] if m["name"] == "pyramidkv" for p in m["params"])' \
  methods --json
expect_json "pyramidkv:beta changes pyramidkv only" 'j["layers"][0] < 100' \
  budgets --method pyramidkv --budget 64 --layers 30 --q-heads 9 --kv-heads 3 --param pyramidkv:beta=2 --json
expect_json "knorm is a registered method" 'j["layers"] == [64]*30' \
  budgets --method knorm --budget 64 --layers 30 --q-heads 9 --kv-heads 3 --json
expect_error "param of another method" 2 "names method 'headkv'" budgets --method pyramidkv --budget 64 --layers 2 --q-heads 2 --kv-heads 1 --param headkv:beta=2
expect_error "param not namespaced" 2 "is not METHOD:KEY=VALUE" budgets --method pyramidkv --budget 64 --layers 2 --q-heads 2 --kv-heads 1 --param beta=2
expect_error "unknown param key" 1 "has no parameter 'gamma'" budgets --method pyramidkv --budget 64 --layers 2 --q-heads 2 --kv-heads 1 --param pyramidkv:gamma=2
expect_error "param out of range" 1 "pyramidkv:beta = 0 outside" budgets --method pyramidkv --budget 64 --layers 2 --q-heads 2 --kv-heads 1 --param pyramidkv:beta=0

# --- bad input: one line, non-zero exit, nothing written ----------------------------------------
expect_json "M+rerotate: the same budgets as M" 'j["layers"] == [64]*30 and j["heads"] == [[64]*3]*30' \
  budgets --method snapkv+rerotate --budget 64 --layers 30 --q-heads 9 --kv-heads 3 --json
expect_json "M+rerotate takes M's params" 'j["layers"][0] > j["layers"][-1]' \
  budgets --method pyramidkv+rerotate --budget 64 --layers 30 --q-heads 9 --kv-heads 3 --param pyramidkv:beta=2 --json
expect_error "unknown method with +rerotate" 1 "unknown method 'nope'" budgets --method nope+rerotate --budget 64 --layers 2 --q-heads 2 --kv-heads 1
expect_error "unknown method" 1 "unknown method 'nope'" budgets --method nope --budget 64 --layers 2 --q-heads 2 --kv-heads 1
expect_error "budget 0" 1 "budget: 0 tokens must be > 0" budgets --method snapkv --budget 0 --layers 2 --q-heads 2 --kv-heads 1
expect_error "ratio out of range" 1 "ratio 1.5 must be in \(0, 1\]" budgets --method snapkv --ratio 1.5 --prompt-len 10 --layers 2 --q-heads 2 --kv-heads 1
expect_error "q heads not a multiple" 1 "q_heads = 5 must be a positive multiple of kv_heads = 2" budgets --method snapkv --budget 8 --layers 2 --q-heads 5 --kv-heads 2
expect_error "profile of another model" 1 "has layers = 3.*but the model has layers = 4" budgets --profile "$TMP/p.json" --layers 4 --method compresskv --budget 64
expect_error "compresskv without profile" 1 "needs a profile" budgets --method compresskv --budget 64 --layers 2 --q-heads 2 --kv-heads 1
expect_error "unknown option" 2 "unknown option --bogus" budgets --bogus
expect_error "missing --out" 2 "--out is required" profile import --compresskv-head-idx "$FIX/tiny_head_idx.json" --layers 3 --q-heads 4 --kv-heads 2
expect_error "head id out of range" 1 "head_idx" profile import --compresskv-head-idx "$FIX/tiny_head_idx.json" --layers 3 --q-heads 2 --kv-heads 1 --out "$TMP/x.json"
[ ! -e "$TMP/x.json" ] && ok || bad "a failed import left a file"
"$KVTRIM" frobnicate >/dev/null 2>"$TMP/err"; [ $? -eq 2 ] && grep -q "unknown command 'frobnicate'" "$TMP/err" && ok || bad "unknown command"
# Help text is captured before grep reads it: `kvtrim … --help | grep -q` fails under pipefail when
# grep exits at the first match and the rest of a long help meets a closed pipe (SIGPIPE).
for c in demo generate budgets "profile import"; do
  h=$($KVTRIM $c --help) && grep -q "usage: kvtrim" <<< "$h" && ok || bad "$c --help"
done

# --- decode-time compression (issue 14): options listed, bad values and refused methods rejected before the model loads
h=$("$KVTRIM" generate --help) && grep -q -- "--decode-budget T" <<< "$h" && grep -q -- "--decode-interval K" <<< "$h" && ok || bad "generate --help lists --decode-budget / --decode-interval"
expect_error "decode budget 0" 2 "--decode-budget 0 must be in \[1, 2147483647\]" generate --model /nonexistent.gguf --method snapkv --budget 64 --prompt hi --decode-budget 0
expect_error "decode interval 0" 2 "--decode-interval 0 must be in \[1, 1048576\]" generate --model /nonexistent.gguf --method snapkv --budget 64 --prompt hi --decode-budget 64 --decode-interval 0
expect_error "decode interval alone" 2 "--decode-interval needs --decode-budget" generate --model /nonexistent.gguf --method snapkv --budget 64 --prompt hi --decode-interval 8
expect_error "decode with h2o" 1 "decode-time compression: method 'h2o' scores with the attention sums" generate --model /nonexistent.gguf --method h2o --budget 64 --prompt hi --decode-budget 64
expect_error "decode with cake" 1 "method 'cake' cascades" generate --model /nonexistent.gguf --method cake --budget 64 --prompt hi --decode-budget 64

# --- issue 15: bad input never crashes, never loses work (fuzzing campaign regressions) ----------
# CLI numbers: strict (whole value, no overflow, range-checked before narrowing).
expect_error "layers narrowing" 2 "--layers 4294967326 must be in \[1, 1048576\]" budgets --method snapkv --budget 8 --layers 4294967326 --q-heads 2 --kv-heads 1
expect_error "integer overflow" 2 "--layers: '99999999999999999999' is not an integer" budgets --method snapkv --budget 8 --layers 99999999999999999999 --q-heads 2 --kv-heads 1
expect_error "budget overflow" 2 "--budget 9223372036854775807 must be in \[0, 2147483647\]" budgets --method snapkv --budget 9223372036854775807 --layers 2 --q-heads 2 --kv-heads 1
expect_error "trailing garbage" 2 "--ratio: '0.5x' is not a finite number" budgets --method snapkv --ratio 0.5x --prompt-len 10 --layers 2 --q-heads 2 --kv-heads 1
expect_error "non-finite number" 2 "--ratio: 'inf' is not a finite number" budgets --method snapkv --ratio inf --prompt-len 10 --layers 2 --q-heads 2 --kv-heads 1
expect_error "eval --ratios garbage" 2 "--ratios: '0.5x' is not a finite number" eval jsonl --out "$TMP/ev" --ratios 0.5x --data /nonexistent
expect_error "eval --haystacks negative" 2 "--haystacks: rotation -1 outside \[0, 1000000\]" eval niah --out "$TMP/ev" --haystacks -1 --lengths 300 --quiet
expect_error "eval --variants unknown" 2 "--variants: 'needles' is not classic, passkey or heldout" eval niah --out "$TMP/ev" --variants classic,needles --lengths 300 --quiet
expect_error "integer with a space" 2 "--prompt-len: ' 10' is not an integer" budgets --method snapkv --budget 8 --prompt-len " 10" --layers 2 --q-heads 2 --kv-heads 1
# Shapes: the product of the dimensions is bounded before anything is allocated.
expect_error "budgets: layers x heads" 1 "layers x q_heads = 100000 x 100000 exceeds 1048576" budgets --method snapkv --budget 8 --layers 100000 --q-heads 100000 --kv-heads 1
python3 - "$TMP/huge.json" <<'PY'
import json, sys
json.dump({"format": "kvtrim-profile", "version": 1, "model": "m",
           "shape": {"layers": 1 << 20, "q_heads": 1 << 20, "kv_heads": 1 << 20}}, open(sys.argv[1], "w"))
PY
expect_error "profile of a huge shape" 1 "huge.json: shape layers x q_heads = 1048576 x 1048576 exceeds" budgets --profile "$TMP/huge.json" --method snapkv --budget 8
expect_error "import: huge shape first" 1 "layers x q_heads = 100000 x 100000 exceeds" profile import --compresskv-head-idx "$FIX/tiny_head_idx.json" --layers 100000 --q-heads 100000 --kv-heads 1 --out "$TMP/x.json"
# A profile whose weights each are finite but sum to infinity: rejected at load, naming the file.
python3 - "$TMP/inf.json" <<'PY'
import json, sys
json.dump({"format": "kvtrim-profile", "version": 1, "model": "m", "shape": {"layers": 2, "q_heads": 1, "kv_heads": 1},
           "layer_error": [1.5e308, 1.5e308]}, open(sys.argv[1], "w"))
PY
expect_error "layer_error sums to infinity" 1 "inf.json: profile: layer_error sums to infinity" budgets --profile "$TMP/inf.json" --method compresskv --budget 8
printf '{"avg_score": [1.5e308, 1.5e308, 1.5e308]}\n' > "$TMP/inf_layer_score.jsonl"
expect_error "import: avg_score sums to infinity" 1 "avg_score sums to infinity" profile import --compresskv-layer-score "$TMP/inf_layer_score.jsonl" --layers 3 --q-heads 4 --kv-heads 2 --out "$TMP/x.json"
[ ! -e "$TMP/x.json" ] && ok || bad "a failed import left a file"
# calibrate: every output path is checked before the model loads (fails in well under a second).
expect_error "calibrate --out in a missing folder" 1 "--out $TMP/missing/p.json: the directory $TMP/missing does not exist" calibrate --out "$TMP/missing/p.json" --model /nonexistent.gguf
expect_error "calibrate --out a folder" 1 "--out $TMP is a directory" calibrate --out "$TMP" --model /nonexistent.gguf
touch "$TMP/plainfile"
expect_error "calibrate --resume-dir under a file" 1 "--resume-dir: cannot create the directory" calibrate --out "$TMP/p2.json" --resume-dir "$TMP/plainfile/r" --model /nonexistent.gguf
expect_error "calibrate --shard without N" 2 "--shard '3' is not K/N" calibrate --out "$TMP/p3.json" --shard 3 --model /nonexistent.gguf
expect_error "calibrate --shard K >= N" 2 "--shard" calibrate --out "$TMP/p3.json" --shard 4/4 --model /nonexistent.gguf
# scripts/*_parallel.sh: bad options are refused before anything runs.
for s in calibrate_parallel eval_parallel; do
  help=$("$SRC/scripts/$s.sh" --help) && [[ $help == Runs* ]] && ok || bad "$s.sh --help"
done
"$SRC/scripts/calibrate_parallel.sh" "$TMP/cp" -j 0 --kvtrim "$KVTRIM" 2>"$TMP/err"; [ $? -eq 2 ] && grep -q "not a positive count" "$TMP/err" && ok || bad "calibrate_parallel -j 0"
"$SRC/scripts/eval_parallel.sh" /nonexistent.txt "$TMP/ep" --kvtrim "$KVTRIM" 2>"$TMP/err"; [ $? -eq 2 ] && grep -q "no grid file" "$TMP/err" && ok || bad "eval_parallel without a grid"
# report: a record that is valid JSON but lacks fields gives the file and line, never a crash.
mkdir -p "$TMP/rep"
printf '{"task":"x","method":"full","budget":"full","kv_percent_of_full":100,"score":50}\n{"task":"x"}\n' > "$TMP/rep/samples.jsonl"
expect_error "report: record without method" 1 "samples.jsonl:2: record lacks \"method\"" report "$TMP/rep"
printf '{"task":"x","method":"full","budget":"full","kv_percent_of_full":100,"score":"high"}\n' > "$TMP/rep/samples.jsonl"
expect_error "report: score of the wrong type" 1 "samples.jsonl:1: record lacks \"score\" \(a number\)" report "$TMP/rep"
# A torn last line (an interrupted append) is skipped: the report still renders.
printf '{"task":"x","method":"full","budget":"full","kv_percent_of_full":100,"score":50}\n{"task":"x","meth' > "$TMP/rep/samples.jsonl"
"$KVTRIM" report "$TMP/rep" >/dev/null 2>"$TMP/err" && ok || bad "report with a torn last line: $(cat "$TMP/err")"
ls "$TMP/rep" | grep -q '\.tmp' && bad "report left a temp file" || ok

echo "cli: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
