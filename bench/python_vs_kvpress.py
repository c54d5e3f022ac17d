#!/usr/bin/env python3
"""kvtrim's Python package beside NVIDIA kvpress 0.5.5, on the same transformers model.

Same model object (SmolLM2-135M-Instruct loaded from its GGUF by transformers' GGUF loader, float32,
CPU), same needle prompts and token ids, same greedy decode; only the cache compression differs:

  kvtrim   kvtrim.transformers.KVTrimCache (per-KV-head ragged cache, compressed in place at the end
           of each layer's prefill, decode through kvtrim's C++ ragged kernel), budget B tokens/head
  kvpress  press(model) context manager on a DynamicCache, compression_ratio chosen so each head
           keeps the same B tokens (n_kept = int(n * (1 - ratio)) = B): equal bytes

Methods and each side's parameters:
  snapkv     kvtrim snapkv (w 8, max pool k 7)      kvpress SnapKVPress(window_size=8, kernel_size=7)
  streaming  kvtrim streaming (4 sinks + recent)    kvpress StreamingLLMPress(n_sink=4)
  pyramidkv  kvtrim pyramidkv (beta 20, w 8, k 7)   kvpress PyramidKVPress(window_size=8, kernel_size=7, beta=20)
  adakv      kvtrim adakv (alpha 0.2, w 8, k 7)     kvpress AdaKVPress(SnapKVPress(8, 7), alpha_safeguard=0.2)
  full       both: no compression (kvtrim 'full' vs plain DynamicCache)

Per run: greedy answer (and whether it contains the needle's answer), prefill time (the prompt's
forward, compression included), compression time (inside kvtrim's compress / kvpress's
press.compress), decode time per token, peak RSS above the loaded model (sampled every 2 ms) and
the K/V bytes the cache holds after the prefill. One thread (torch and OpenMP), repetitions
interleaved (rep -> prompt -> method -> side), medians. One JSON object per line on stdout, a
table on stderr; `--table OUT.jsonl` prints the markdown tables of docs/BENCHMARKS.md from it.

kvpress (Apache-2.0) and cachetools<6 are wheels without compiled code: install them with
`pip install --no-deps kvpress==0.5.5 "cachetools<6"` (or --target DIR on PYTHONPATH). kvpress imports
`datasets` and `fire` at its top level for presses not used here; empty stand-ins are put in
sys.modules, as in /work/shared/peers/kvpress_layer_bench.py.

  OMP_NUM_THREADS=1 python bench/python_vs_kvpress.py --lengths 2048 4096 --budget 64 --reps 3
"""
import argparse
import json
import os
import pathlib
import resource
import statistics
import sys
import threading
import time
import types

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

for _name in ("datasets", "fire"):  # imported at kvpress's top level by presses not used here
    _m = types.ModuleType(_name)
    _m.load_dataset = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("stub"))
    _m.Fire = lambda *a, **k: None
    sys.modules.setdefault(_name, _m)

import torch  # noqa: E402

torch.set_num_threads(1)

import transformers  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache  # noqa: E402

import kvtrim  # noqa: E402
import kvtrim.transformers as kt  # noqa: E402

NEEDLE = "The best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a sunny day."
QUESTION = "What is the best thing to do in San Francisco?"
ANSWER = "sandwich and sit in dolores park"
PREFIX = "The best thing to do in San Francisco is"
CACHE = "cache"  # the model's cache keyword (past_key_values before transformers 5.3)
LOGITS = {"logits_to_keep": 1}  # prefill logits of the last position only (--all-logits: every position)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


class PeakRSS:
    """Peak resident set size while the block runs, sampled every 2 ms, above the RSS at its start
    (after malloc_trim, so memory freed by the previous run does not hide this one's growth)."""

    def __enter__(self):
        try:
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:
            pass
        self.base = rss_bytes()
        self.peak = self.base
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop:
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.002)

    def __exit__(self, *exc):
        self._stop = True
        self._t.join()
        self.peak = max(self.peak, rss_bytes())


def haystack_text() -> str:
    d = pathlib.Path.home() / ".cache/kvtrim/pg_essays"
    files = sorted(d.glob("*.txt"))
    if not files:
        sys.exit(f"no essays in {d} (scripts/fetch_haystack.sh)")
    return "\n\n".join(f.read_text(errors="replace") for f in files)


def needle_prompt(tok, hay: str, target: int, depth: float):
    """The host's needle prompt (examples/host/haystack.cpp): ChatML user turn with the document and
    question, the assistant's turn primed with the answer prefix; `target` tokens in all."""
    def wrap(doc):
        user = ("Read the document and answer the question.\n\n<document>\n" + doc + "\n</document>\n\nQuestion: "
                + QUESTION + " Answer with the sentence from the document.")
        return tok.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                       add_generation_prompt=True) + PREFIX
    overhead = len(tok(wrap(NEEDLE), add_special_tokens=False).input_ids)
    ids = tok(hay[: target * 8], add_special_tokens=False).input_ids[: target - overhead]
    doc = tok.decode(ids)
    at = int(depth * len(doc))
    while at > 0 and doc[at - 1] not in ".\n":
        at -= 1
    doc = doc[:at] + (" " if at and doc[at - 1] != "\n" else "") + NEEDLE + " " + doc[at:]
    return tok(wrap(doc), add_special_tokens=False, return_tensors="pt").input_ids


def cache_bytes_dynamic(cache) -> int:
    total = 0
    for layer in cache.layers:
        for t in (layer.keys, layer.values):
            if t is not None:
                total += t.numel() * t.element_size()
    return total


def greedy(model, ids, cache, new_tokens, compress_timer):
    """Prefill (timed), then greedy decode of new_tokens - 1 steps (timed), on `cache`."""
    with torch.no_grad():
        compress_timer[0] = 0.0
        t0 = time.perf_counter()
        out = model(input_ids=ids, use_cache=True, **LOGITS, **{CACHE: cache})
        t1 = time.perf_counter()
        held = cache.bytes_held() if hasattr(cache, "bytes_held") else cache_bytes_dynamic(cache)
        tok = out.logits[:, -1].argmax(-1, keepdim=True)
        answer = [int(tok)]
        t2 = time.perf_counter()
        pos = ids.shape[1]
        for _ in range(new_tokens - 1):
            out = model(input_ids=tok, use_cache=True, position_ids=torch.tensor([[pos]]), **{CACHE: cache})
            pos += 1
            tok = out.logits[:, -1].argmax(-1, keepdim=True)
            answer.append(int(tok))
        t3 = time.perf_counter()
    return answer, t1 - t0, (t3 - t2) / max(1, new_tokens - 1), held


def table(path: str) -> None:
    """Markdown table of medians (and kvpress / kvtrim ratios) from this script's JSON lines."""
    runs = [json.loads(l) for l in open(path) if '"what": "run"' in l]
    groups = {}
    for r in runs:
        groups.setdefault((r["n"], r["method"], r["side"]), []).append(r)
    full = {}
    print("| n | method | side | reps | prefill s | compress ms | decode ms/token | peak RSS above model MiB | "
          "KV held after prefill MiB | % of full | answer (greedy, 16 tokens) |")
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    med = {}
    for (n, method, side), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] != "full", kv[0][1], kv[0][2])):
        m = {k: statistics.median(r[k] for r in rs) for k in ("prefill_s", "compress_s", "decode_s_per_token",
                                                              "peak_rss_above_model", "held_bytes")}
        med[(n, method, side)] = m
        if method == "full":
            full[n] = m["held_bytes"]
        ans = " ".join(rs[-1]["answer"].split("<|im_end|>")[0].split()).replace("|", "\\|")
        print(f"| {n} | {method} | {side} | {len(rs)} | {m['prefill_s']:.2f} | {1e3 * m['compress_s']:.1f} | "
              f"{1e3 * m['decode_s_per_token']:.1f} | {m['peak_rss_above_model'] / 2**20:.0f} | "
              f"{m['held_bytes'] / 2**20:.2f} | {100 * m['held_bytes'] / full.get(n, m['held_bytes']):.1f} | {ans} |")
    print()
    print("| n | method | prefill | compress | decode | peak RSS | KV held | same answer |")
    print("|---:|---|---:|---:|---:|---:|---:|---|")
    for (n, method, side), m in sorted(med.items()):
        if side != "kvtrim" or (n, method, "kvpress") not in med:
            continue
        p = med[(n, method, "kvpress")]
        def ratio(k):
            return f"{p[k] / m[k]:.2f}x" if m[k] else "-"
        same = groups[(n, method, "kvtrim")][-1]["answer"] == groups[(n, method, "kvpress")][-1]["answer"]
        print(f"| {n} | {method} | {ratio('prefill_s')} | {ratio('compress_s')} | {ratio('decode_s_per_token')} | "
              f"{ratio('peak_rss_above_model')} | {ratio('held_bytes')} | {'yes' if same else 'no'} |")


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--table":
        return table(sys.argv[2])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(pathlib.Path.home() / ".cache/kvtrim/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--lengths", type=int, nargs="+", default=[2048, 4096])
    ap.add_argument("--depths", type=float, nargs="+", default=[0.25, 0.75])
    ap.add_argument("--budget", type=int, default=64)
    ap.add_argument("--methods", nargs="+", default=["full", "snapkv", "streaming", "pyramidkv", "adakv"])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--all-logits", action="store_true",
                    help="compute the prefill's logits at every position (n x vocab floats; the peak RSS then "
                         "shows them, as in the 2026-12-01 run)")
    args = ap.parse_args()

    import kvpress
    from kvpress import AdaKVPress, PyramidKVPress, SnapKVPress, StreamingLLMPress

    torch.set_num_threads(args.threads)
    if args.all_logits:
        LOGITS.clear()
    transformers.utils.logging.disable_progress_bar()
    gguf = pathlib.Path(args.model)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32).eval()
    model.set_attn_implementation("sdpa")
    global CACHE
    CACHE = kt.cache_kwarg(model)
    shape = kt.model_shape(model)
    hay = haystack_text()
    prompts = [(n, d, needle_prompt(tok, hay, n, d)) for n in args.lengths for d in args.depths]
    print(json.dumps({"what": "setup", "torch": torch.__version__, "transformers": transformers.__version__,
                      "kvpress": getattr(kvpress, "__version__", "0.5.5"), "kvtrim": kvtrim.__version__,
                      "model": gguf.name, "shape": [shape.layers, shape.q_heads, shape.kv_heads, shape.head_dim],
                      "budget": args.budget, "threads": torch.get_num_threads(),
                      "prompts": [[n, d, int(p.shape[1])] for n, d, p in prompts]}), flush=True)

    timer = [0.0]

    # time spent inside each side's compression: kvtrim's whole per-layer step (score, select,
    # in-place compaction, copy of the kept rows into the ragged storage), kvpress's press.compress
    orig_compress = kt.KVTrimLayer._compress

    def press_of(method, n):
        ratio = 1.0 - (args.budget + 0.5) / n  # int(n * (1 - ratio)) == budget
        if method == "snapkv":
            return SnapKVPress(compression_ratio=ratio, window_size=8, kernel_size=7)
        if method == "streaming":
            return StreamingLLMPress(compression_ratio=ratio, n_sink=4)
        if method == "pyramidkv":
            return PyramidKVPress(compression_ratio=ratio, window_size=8, kernel_size=7, beta=20)
        if method == "adakv":
            return AdaKVPress(SnapKVPress(compression_ratio=ratio, window_size=8, kernel_size=7), alpha_safeguard=0.2)
        return None

    def timed_press(press):
        inner = press.press if isinstance(press, AdaKVPress) else press
        cls_compress = type(press).compress

        def compress(*a, **k):
            t = time.perf_counter()
            r = cls_compress(press, *a, **k)
            timer[0] += time.perf_counter() - t
            return r
        press.compress = compress
        del inner
        return press

    def run(side, method, ids):
        n = ids.shape[1]
        if side == "kvtrim":
            cache = kt.KVTrimCache(model, method=method, budget=args.budget)
            with kt.attention(model), PeakRSS() as mem:
                answer, pre, dec, held = greedy(model, ids, cache, args.new_tokens, timer)
        else:
            cache = DynamicCache()
            press = press_of(method, n)
            with PeakRSS() as mem:
                if press is None:
                    answer, pre, dec, held = greedy(model, ids, cache, args.new_tokens, timer)
                else:
                    with timed_press(press)(model):
                        answer, pre, dec, held = greedy(model, ids, cache, args.new_tokens, timer)
        return answer, pre, dec, mem.peak - mem.base, cache, held

    def kvtrim_compress(self, *a, **k):
        t = time.perf_counter()
        r = orig_compress(self, *a, **k)
        timer[0] += time.perf_counter() - t
        return r
    kt.KVTrimLayer._compress = kvtrim_compress

    # warm-up (discarded): first calls pay for lazy initialisation on both sides
    for side in ("kvtrim", "kvpress"):
        run(side, "snapkv", prompts[0][2][:, -256:])

    rows = {}
    for rep in range(args.reps):
        for n, depth, ids in prompts:
            for method in args.methods:
                for side in ("kvtrim", "kvpress"):
                    answer, pre, dec, peak, _, held = run(side, method, ids)
                    text = tok.decode(answer)
                    key = (n, depth, method, side)
                    r = rows.setdefault(key, {"prefill_s": [], "compress_s": [], "decode_s_per_token": [], "peak_rss": []})
                    r["prefill_s"].append(pre)
                    r["compress_s"].append(timer[0])
                    r["decode_s_per_token"].append(dec)
                    r["peak_rss"].append(peak)
                    r["answer"] = text
                    r["held_bytes"] = held
                    r["found"] = ANSWER in text.lower()
                    print(json.dumps({"what": "run", "rep": rep, "n": int(ids.shape[1]), "target": n, "depth": depth,
                                      "method": method, "side": side, "prefill_s": pre, "compress_s": timer[0],
                                      "decode_s_per_token": dec, "peak_rss_above_model": peak, "held_bytes": held,
                                      "answer": text}), flush=True)
    full_bytes = {n: 2 * shape.layers * shape.kv_heads * shape.head_dim * 4 * int(p.shape[1])
                  for n, _, p in prompts}
    med = {k: {m: statistics.median(v[m]) for m in ("prefill_s", "compress_s", "decode_s_per_token", "peak_rss")}
           | {"held_bytes": v["held_bytes"], "found": v["found"], "answer": v["answer"]} for k, v in rows.items()}
    print(f"{'n':>5} {'depth':>5} {'method':>10} {'side':>7} {'prefill s':>9} {'compress ms':>11} {'decode ms/tok':>13} "
          f"{'peak MiB':>8} {'held MiB':>8} {'found':>5}", file=sys.stderr)
    for (n, depth, method, side), r in sorted(med.items()):
        print(json.dumps({"what": "median", "target": n, "depth": depth, "method": method, "side": side, **r,
                          "full_cache_bytes": full_bytes[n]}), flush=True)
        print(f"{n:>5} {depth:>5} {method:>10} {side:>7} {r['prefill_s']:9.3f} {1e3 * r['compress_s']:11.2f} "
              f"{1e3 * r['decode_s_per_token']:13.2f} {r['peak_rss'] / 2**20:8.1f} {r['held_bytes'] / 2**20:8.2f} "
              f"{str(r['found']):>5}", file=sys.stderr)
    for (n, depth, method, side), r in sorted(med.items()):
        if side != "kvtrim":
            continue
        p = med[(n, depth, method, "kvpress")]
        ratio = {m: (p[m] / r[m] if r[m] else None) for m in ("prefill_s", "compress_s", "decode_s_per_token", "peak_rss", "held_bytes")}
        print(json.dumps({"what": "ratio_kvpress_over_kvtrim", "target": n, "depth": depth, "method": method, **ratio,
                          "same_answer": p["answer"] == r["answer"]}), flush=True)


if __name__ == "__main__":
    main()
