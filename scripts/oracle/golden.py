#!/usr/bin/env python3
"""Produce the llama.cpp golden files the reference host is tested against.

Reads tests/golden/prompts.json, rebuilds every prompt (essay prompts from the shared data folder at
run time: essay text never enters the repository) and runs the oracle program (kvtrim-oracle, built
by scripts/oracle/build_llama_cpp.sh against the pinned llama.cpp) once per prompt and weight variant:

  native       the GGUF as shipped (Q4_1 / Q8_0 weights): llama.cpp quantises activations to Q8_1 / Q8_0
               inside every weight matmul, so an exact-float host is only close to it
  dequant_f32  the same weights dequantised to F32 by llama-quantize (bit-exact dequantisation): every
               matmul is float x float, so an exact-float host should match it tightly

Writes (whole or not at all):
  tests/golden/llamacpp_golden.json               schema kvtrim-golden-llamacpp/1 (docs/ORACLE.md)
  tests/golden/llamacpp_<id>_<variant>_logits.bin  49152 little-endian float32, last prompt position

  scripts/oracle/golden.py                   regenerate the golden files
  scripts/oracle/golden.py --verify          regenerate into a temp dir and compare with tests/golden
  scripts/oracle/golden.py --tokenize-only   print token counts (for sizing essay slices)
Standard library only.
"""
import argparse
import array
import datetime
import hashlib
import json
import math
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE = os.environ.get("KVTRIM_CACHE", os.path.expanduser("~/.cache/kvtrim"))
MODEL_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
DEQUANT_NAME = "SmolLM2-135M-Instruct.Q4_1.dequant-f32.gguf"
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
LLAMA_CPP_COMMIT = "0c1e57098bba43ac29e6e3b677cdceebdd22334f"  # vendor/llama.cpp of that sdist
LLAMA_SRC = os.path.join(CACHE, "llama.cpp-src", "llama_cpp_python-0.3.36", "vendor", "llama.cpp")
BUILD = os.path.join(CACHE, "llama.cpp-build")
SCHEMA = "kvtrim-golden-llamacpp/1"
GOLDEN_JSON = "llamacpp_golden.json"
VARIANTS = ("native", "dequant_f32")
FNV_OFFSET, FNV_PRIME = 0xCBF29CE484222325, 0x100000001B3


def die(msg):
    print("golden.py: " + msg, file=sys.stderr)
    sys.exit(1)


def fnv1a64_tokens(ids):
    """64-bit FNV-1a over the token ids as little-endian int32 bytes, as 16 lowercase hex digits."""
    h = FNV_OFFSET
    for b in struct.pack("<%di" % len(ids), *ids):
        h = ((h ^ b) * FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
    return "%016x" % h


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def f32(x):
    """Shortest decimal that reads back as the same float32."""
    return float("%.9g" % x)


def default_data_root():
    env = os.environ.get("KVTRIM_DATA")
    if env:
        return env
    return os.path.normpath(os.path.join(REPO, "..", "shared", "data"))


# ---------------------------------------------------------------------------------------------------
# prompt resolution (the host tests must do exactly the same; docs/ORACLE.md states the rules)

def chatml(messages):
    s = "".join("<|im_start|>%s\n%s<|im_end|>\n" % (m["role"], m["content"]) for m in messages)
    return s + "<|im_start|>assistant\n"


def resolve(p, data_root):
    """Returns (prompt_text, messages_or_None, source_kind)."""
    if "essay" in p:
        path = os.path.join(data_root, p["essay"])
        with open(path, "rb") as f:
            essay = f.read().decode("utf-8")
        start, n = p["start_char"], p["n_chars"]
        if start < 0 or n <= 0 or start + n > len(essay):
            die("%s: slice [%d, %d) outside %s (%d code points)" % (p["id"], start, start + n, path, len(essay)))
        content = p.get("prefix", "") + essay[start:start + n] + p.get("suffix", "")
        if p["chat"]:
            messages = ([{"role": "system", "content": p["system"]}] if "system" in p else []) + \
                       [{"role": "user", "content": content}]
            return chatml(messages), messages, "essay"
        return content, None, "essay"
    if p["chat"]:
        return chatml(p["messages"]), p["messages"], "inline"
    return p["text"], None, "inline"


# ---------------------------------------------------------------------------------------------------
# running the oracle

def ensure_dequant(model, quantize, dest):
    """The native GGUF with every tensor dequantised to F32 (llama-quantize --allow-requantize ... F32)."""
    if os.path.isfile(dest):
        return dest
    if not os.access(quantize, os.X_OK):
        die("llama-quantize not built: %s (run scripts/oracle/build_llama_cpp.sh)" % quantize)
    print("dequantising %s -> %s (540 MB)" % (model, dest), file=sys.stderr)
    part = dest + ".part"
    with open(dest + ".log", "wb") as lf:
        r = subprocess.run([quantize, "--allow-requantize", model, part, "F32"], stdout=lf, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        die("llama-quantize failed, see %s.log" % dest)
    os.replace(part, dest)
    return dest


def run_oracle(args, model, p, tag, text, messages, work):
    prefix = os.path.join(work, "%s.%s" % (p["id"], tag))
    cmd = [args.oracle, "-m", model, "-o", prefix, "-t", str(args.threads), "-n", str(args.n_predict),
           "--steps", str(args.steps)]
    if messages is not None:
        inp = prefix + ".chat"
        with open(inp, "wb") as f:
            f.write(b"\0".join(x for m in messages for x in (m["role"].encode(), m["content"].encode())))
        cmd += ["--chat", inp]
    else:
        inp = prefix + ".txt"
        with open(inp, "wb") as f:
            f.write(text.encode("utf-8"))
        cmd += ["--text", inp]
    if args.tokenize_only:
        cmd.append("--tokenize-only")
    log = prefix + ".log"
    with open(log, "wb") as lf:
        r = subprocess.run(cmd, stdout=lf, stderr=subprocess.STDOUT)
    with open(log, "rb") as lf:
        logtext = lf.read().decode("utf-8", "replace")
    if r.returncode != 0:
        die("oracle failed on %s/%s (rc %d):\n%s" % (p["id"], tag, r.returncode, logtext[-2000:]))
    with open(prefix + ".meta.json") as f:
        meta = json.load(f)
    meta["_log"] = logtext
    meta["_prefix"] = prefix
    return meta


def read_f32(path, count=None):
    a = array.array("f")
    with open(path, "rb") as f:
        a.frombytes(f.read())
    if sys.byteorder != "little":
        a.byteswap()
    if count is not None and len(a) != count:
        die("%s: %d floats, expected %d" % (path, len(a), count))
    return a


def le_bytes(v):
    a = array.array("f", v)
    if sys.byteorder != "little":
        a.byteswap()
    return a.tobytes()


def logsumexp(v):
    m = max(v)
    return m + math.log(sum(math.exp(x - m) for x in v))


def stats(v, k):
    order = sorted(range(len(v)), key=lambda i: (-v[i], i))[:k]
    return {
        "argmax": order[0],
        "max": f32(v[order[0]]),
        "logsumexp": f32(logsumexp(v)),
        "mean": f32(sum(v) / len(v)),
        "topk_ids": order,
        "topk_logits": [f32(v[i]) for i in order],
    }


def compare(a, b):
    """Distance between two logit vectors: raw, after centring (softmax is shift-invariant), log-probs, KL."""
    n = len(a)
    d = [x - y for x, y in zip(a, b)]
    mean_d = sum(d) / n
    la, lb = logsumexp(a), logsumexp(b)
    dl = [x - la - (y - lb) for x, y in zip(a, b)]
    kl = sum(math.exp(x - la) * ((x - la) - (y - lb)) for x, y in zip(a, b))
    return {
        "max_abs_logit_diff": f32(max(abs(x) for x in d)),
        "rms_logit_diff": f32(math.sqrt(sum(x * x for x in d) / n)),
        "mean_logit_diff": f32(mean_d),
        "max_abs_centred_diff": f32(max(abs(x - mean_d) for x in d)),
        "max_abs_logprob_diff": f32(max(abs(x) for x in dl)),
        "kl_a_b": f32(max(kl, 0.0)),
        "same_argmax": max(range(n), key=a.__getitem__) == max(range(n), key=b.__getitem__),
    }


def cmake_cache(keys):
    out = {}
    try:
        with open(os.path.join(BUILD, "CMakeCache.txt")) as f:
            for line in f:
                m = re.match(r"^([A-Za-z0-9_]+):[A-Z]+=(.*)$", line.strip())
                if m and m.group(1) in keys:
                    out[m.group(1)] = m.group(2)
    except OSError:
        pass
    return out


def llama_commit():
    try:
        c = subprocess.run(["git", "-C", LLAMA_SRC, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
        if re.fullmatch(r"[0-9a-f]{40}", c):
            return c
    except OSError:
        pass
    return LLAMA_CPP_COMMIT


def compiler_version():
    try:
        return subprocess.run([os.environ.get("CXX", "g++"), "--version"], capture_output=True,
                              text=True).stdout.splitlines()[0]
    except (OSError, IndexError):
        return "unknown"


def variant_result(args, meta, fname):
    """One variant's run on one prompt -> (json dict, prompt logits)."""
    n_vocab = meta["n_vocab"]
    logits = read_f32(meta["_prefix"] + ".prompt_logits.f32", n_vocab)
    step_logits = read_f32(meta["_prefix"] + ".step_logits.f32", args.steps * n_vocab)
    cont, n_tok = meta["continuation"], len(meta["tokens"])
    pl = stats(logits, 16)
    if pl["argmax"] != cont[0]:
        die("%s: argmax of dumped logits != first continuation token" % meta["_prefix"])
    steps = []
    for s in range(args.steps):
        st = stats(step_logits[s * n_vocab:(s + 1) * n_vocab], args.topk)
        if st["argmax"] != cont[s + 1]:
            die("%s: step %d argmax != continuation" % (meta["_prefix"], s + 1))
        steps.append(dict({"step": s + 1, "position": n_tok + s, "input_token": cont[s]}, **st))
    r = {
        "prompt_logits": {
            "file": fname, "dtype": "float32-le", "count": n_vocab, "position": n_tok - 1,
            "sha256": hashlib.sha256(le_bytes(logits)).hexdigest(),
            "argmax": pl["argmax"], "max": pl["max"], "logsumexp": pl["logsumexp"], "mean": pl["mean"],
            "top16_ids": pl["topk_ids"], "top16_logits": pl["topk_logits"],
        },
        "continuation": cont,
        "continuation_text": b"".join(bytes.fromhex(h) for h in meta["continuation_pieces_hex"]).decode("utf-8", "replace"),
        "continuation_is_eog": meta["continuation_is_eog"],
        "continuation_margins": [f32(x) for x in meta["continuation_margins"]],
        "steps": steps,
        "timing_ms": {"prefill": round(meta["prefill_ms"], 1),
                      "decode_%d_tokens" % (args.n_predict - 1): round(meta["decode_ms"], 1)},
    }
    return r, logits, step_logits


def generate(args, out_dir):
    with open(args.prompts, encoding="utf-8") as f:
        spec = json.load(f)
    prompts = spec["prompts"]
    if args.only:
        prompts = [p for p in prompts if p["id"] in args.only]
    if not os.path.isfile(args.model):
        die("model not found: %s (run scripts/fetch_model.sh)" % args.model)
    if not os.access(args.oracle, os.X_OK):
        die("oracle not built: %s (run scripts/oracle/build_llama_cpp.sh)" % args.oracle)
    model_sha = sha256_file(args.model)
    if model_sha != MODEL_SHA256:
        die("model sha256 %s != pinned %s" % (model_sha, MODEL_SHA256))
    models = {"native": args.model}
    if not args.tokenize_only:
        models["dequant_f32"] = ensure_dequant(args.model, os.path.join(BUILD, "bin", "llama-quantize"),
                                               os.path.join(CACHE, DEQUANT_NAME))

    work = tempfile.mkdtemp(prefix="kvtrim-golden-")
    try:
        entries, files, metas = [], {}, {}
        for p in prompts:
            if not re.fullmatch(r"[a-z0-9_]+", p["id"]):
                die("prompt id must match [a-z0-9_]+: %r" % p["id"])
            text, messages, kind = resolve(p, args.data_root)
            runs, logits, steps = {}, {}, {}
            for tag, model in models.items():
                meta = run_oracle(args, model, p, tag, text, messages, work)
                metas.setdefault(tag, meta)
                if bytes.fromhex(meta["text_hex"]).decode("utf-8") != text:
                    die("%s: llama.cpp's prompt text differs from the ChatML rule in prompts.json" % p["id"])
                if tag != "native" and meta["tokens"] != runs["native"]["_tokens"]:
                    die("%s: tokenisation differs between variants" % p["id"])
                if args.tokenize_only:
                    print("%-16s %6d tokens  %7d bytes" % (p["id"], len(meta["tokens"]), len(text.encode("utf-8"))))
                    break
                fname = "llamacpp_%s_%s_logits.bin" % (p["id"], tag)
                runs[tag], logits[tag], steps[tag] = variant_result(args, meta, fname)
                runs[tag]["_tokens"] = meta["tokens"]
                runs[tag]["_n"] = (meta["n_ctx"], meta["n_batch"], meta["n_ubatch"])
                files[fname] = logits[tag]
                print("%-16s %-11s %5d tokens  prefill %7.0f ms  %r" % (
                    p["id"], tag, len(meta["tokens"]), meta["prefill_ms"], runs[tag]["continuation_text"][:50]),
                    file=sys.stderr)
            if args.tokenize_only:
                continue
            toks = runs["native"].pop("_tokens")
            n_ctx, n_batch, n_ubatch = runs["native"].pop("_n")
            runs["dequant_f32"].pop("_tokens")
            runs["dequant_f32"].pop("_n")
            text_bytes = text.encode("utf-8")
            e = {
                "id": p["id"],
                "chat": bool(p["chat"]),
                "source": kind,
                "text_n_bytes": len(text_bytes),
                "text_sha256": hashlib.sha256(text_bytes).hexdigest(),
                "n_tokens": len(toks),
                "tokens_fnv1a64": fnv1a64_tokens(toks),
            }
            if kind == "inline":           # own text only: ids and text may be stored
                e["text"] = text
                e["tokens"] = toks
            e["n_ctx"], e["n_batch"], e["n_ubatch"] = n_ctx, n_batch, n_ubatch
            e["variants"] = runs
            # how far apart the two llama.cpp variants are: the yardstick for an exact-float host
            ca, cb = runs["dequant_f32"]["continuation"], runs["native"]["continuation"]
            first_div = next((i for i, (x, y) in enumerate(zip(ca, cb)) if x != y), None)
            n_vocab = len(logits["native"])
            e["native_vs_dequant_f32"] = {
                "prompt_logits": compare(logits["dequant_f32"], logits["native"]),
                "continuation_first_divergence": first_div,
            }
            if first_div is None or first_div > args.steps:   # same inputs at the first decode steps
                e["native_vs_dequant_f32"]["steps"] = [
                    compare(steps["dequant_f32"][s * n_vocab:(s + 1) * n_vocab], steps["native"][s * n_vocab:(s + 1) * n_vocab])
                    for s in range(args.steps)]
            entries.append(e)
        if args.tokenize_only:
            return None

        log = metas["native"]["_log"]
        types = {m.group(1): int(m.group(2)) for m in re.finditer(r"- type +([a-z0-9_]+): +(\d+) tensors", log)}
        dq_types = {m.group(1): int(m.group(2)) for m in
                    re.finditer(r"- type +([a-z0-9_]+): +(\d+) tensors", metas["dequant_f32"]["_log"])}
        cc = cmake_cache({"CMAKE_BUILD_TYPE", "GGML_NATIVE", "GGML_LLAMAFILE", "GGML_OPENMP", "BUILD_SHARED_LIBS",
                          "GGML_CPU_REPACK", "LLAMA_OPENSSL"})
        golden = {
            "schema": SCHEMA,
            "generator": "scripts/oracle/golden.py",
            "created_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "prompts_file": "tests/golden/prompts.json",
            "prompts_sha256": sha256_file(args.prompts),
            "model": {
                "file": MODEL_NAME,
                "sha256": model_sha,
                "desc": bytes.fromhex(metas["native"]["model_desc_hex"]).decode("utf-8", "replace"),
                "n_vocab": metas["native"]["n_vocab"],
                "n_ctx_train": metas["native"]["n_ctx_train"],
                "add_bos": metas["native"]["add_bos"],
                "tensor_types": types,
            },
            "variants": {
                "native": {
                    "model_file": MODEL_NAME, "model_sha256": model_sha, "tensor_types": types,
                    "about": "GGUF as shipped; llama.cpp's CPU backend quantises the activation operand of every "
                             "Q4_1 matmul to Q8_1 and of the Q8_0 output matmul to Q8_0 (docs/ORACLE.md)",
                },
                "dequant_f32": {
                    "model_file": DEQUANT_NAME, "model_sha256": sha256_file(models["dequant_f32"]),
                    "tensor_types": dq_types,
                    "made_by": "llama-quantize --allow-requantize %s %s F32" % (MODEL_NAME, DEQUANT_NAME),
                    "about": "same weights dequantised exactly to F32; all matmuls float x float: the tight "
                             "reference for an exact-float host",
                },
            },
            "llama_cpp": {
                "source": "PyPI sdist llama-cpp-python==0.3.36, vendor/llama.cpp",
                "sdist_sha256": SDIST_SHA256,
                "commit": llama_commit(),
                "api": "llama.h via scripts/oracle/oracle.cpp",
                "build": cc,
                "compiler": compiler_version(),
                "system_info": bytes.fromhex(metas["native"]["system_info_hex"]).decode("utf-8", "replace").strip(),
                "weight_repack": "none: %s" % (
                    "log says the Q4_1/Q8_0 tensors cannot use CPU_REPACK" if
                    "cannot be used with preferred buffer type CPU_REPACK" in log else "no repack message in log"),
            },
            "settings": {
                "threads": args.threads,
                "n_ctx": "n_tokens + n_predict, padded by llama.cpp to a multiple of 256 (per prompt: prompts[].n_ctx)",
                "n_batch_ubatch": "n_tokens + n_predict: the whole prompt is one llama_decode call and one ubatch",
                "flash_attn": False,
                "type_k": "f32",
                "type_v": "f32",
                "add_special": True,
                "parse_special": True,
                "sampling": "greedy argmax over raw logits, lowest id wins ties; no temperature, penalties or sampler",
                "n_predict": args.n_predict,
                "stop_at_eog": False,
                "decode": "one token per llama_decode call at position n_tokens + k",
                "n_steps": args.steps,
                "step_topk": args.topk,
            },
            "prompts": entries,
        }
        # write whole or not at all: everything into a temp dir beside the target, then rename
        stage = tempfile.mkdtemp(prefix=".golden-", dir=out_dir)
        try:
            for fname, v in files.items():
                with open(os.path.join(stage, fname), "wb") as f:
                    f.write(le_bytes(v))
            with open(os.path.join(stage, GOLDEN_JSON), "w", encoding="utf-8") as f:
                json.dump(golden, f, indent=1, ensure_ascii=False)
                f.write("\n")
            for fname in list(files) + [GOLDEN_JSON]:
                os.replace(os.path.join(stage, fname), os.path.join(out_dir, fname))
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        if not args.only:  # drop logits files of prompts that no longer exist
            for fname in os.listdir(out_dir):
                if re.fullmatch(r"llamacpp_[a-z0-9_]+_logits\.bin", fname) and fname not in files:
                    os.remove(os.path.join(out_dir, fname))
        return golden
    finally:
        if args.keep_work:
            print("oracle work dir kept: " + work, file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def verify(args):
    """Regenerate into a temp dir and compare with the files in tests/golden bit for bit."""
    ref_dir = args.out_dir
    with open(os.path.join(ref_dir, GOLDEN_JSON), encoding="utf-8") as f:
        ref = json.load(f)
    tmp = tempfile.mkdtemp(prefix="kvtrim-golden-verify-")
    try:
        new = generate(args, tmp)
        ok = True
        refp = {p["id"]: p for p in ref["prompts"]}
        for p in new["prompts"]:
            r = refp.get(p["id"])
            if r is None:
                print("NEW   %s (not in committed golden)" % p["id"])
                ok = False
                continue
            diffs = [k for k in ("n_tokens", "tokens_fnv1a64", "text_sha256") if p.get(k) != r.get(k)]
            for tag in VARIANTS:
                a, b = p["variants"][tag], r["variants"][tag]
                diffs += ["%s.%s" % (tag, k) for k in ("continuation", "steps") if a.get(k) != b.get(k)]
                x = read_f32(os.path.join(tmp, a["prompt_logits"]["file"]))
                y = read_f32(os.path.join(ref_dir, b["prompt_logits"]["file"]))
                md = max(abs(u - v) for u, v in zip(x, y)) if len(x) == len(y) else float("inf")
                if md != 0.0:
                    diffs.append("%s.prompt_logits (max |diff| %.3g)" % (tag, md))
            print("%s %s %s" % ("OK   " if not diffs else "DIFF ", p["id"], ", ".join(diffs)))
            ok = ok and not diffs
        return 0 if ok else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.path.join(CACHE, MODEL_NAME))
    ap.add_argument("--oracle", default=os.path.join(BUILD, "bin", "kvtrim-oracle"))
    ap.add_argument("--prompts", default=os.path.join(REPO, "tests", "golden", "prompts.json"))
    ap.add_argument("--data-root", default=default_data_root())
    ap.add_argument("--out-dir", default=os.path.join(REPO, "tests", "golden"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-predict", type=int, default=32)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--topk", type=int, default=128)
    ap.add_argument("--only", nargs="+", help="prompt ids (writes the JSON with only these prompts)")
    ap.add_argument("--tokenize-only", action="store_true")
    ap.add_argument("--verify", action="store_true")
    ap.add_argument("--keep-work", action="store_true")
    args = ap.parse_args()
    if args.threads < 1 or args.n_predict < 1 or not 0 <= args.steps < args.n_predict or args.topk < 1:
        die("bad --threads/--n-predict/--steps/--topk")
    if not os.path.isdir(args.data_root):
        die("data root not found: %s (set KVTRIM_DATA)" % args.data_root)
    if args.verify:
        sys.exit(verify(args))
    g = generate(args, args.out_dir)
    if g is not None:
        print("wrote %s and %d logits files to %s" % (GOLDEN_JSON, 2 * len(g["prompts"]), args.out_dir),
              file=sys.stderr)


if __name__ == "__main__":
    main()
