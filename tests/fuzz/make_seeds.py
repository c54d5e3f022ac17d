#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora (small, deterministic) into OUT/<target>/.

Usage: tests/fuzz/make_seeds.py OUT_DIR
gguf: a complete tiny llama model (every tensor F32, a 4-token gpt2 vocabulary), the same with
its tensors quantised (F16, BF16, Q4_0, Q4_1, Q8_0, Q6_K tensors to dequantise), and a model
missing attn_v; profile / import / eval_*: the fixtures plus a few edge cases.
"""
import json
import os
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)


def gstr(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def kv(key, typ, value, elem=None):
    out = gstr(key) + struct.pack("<I", typ)
    if typ == STR:
        return out + gstr(value)
    if typ == U32:
        return out + struct.pack("<I", value)
    if typ == F32:
        return out + struct.pack("<f", value)
    if typ == ARR:
        out += struct.pack("<IQ", elem, len(value))
        for v in value:
            out += gstr(v) if elem == STR else struct.pack("<i", v)
        return out
    raise ValueError(typ)


BLOCK = {0: (1, 4), 1: (1, 2), 30: (1, 2), 2: (32, 18), 3: (32, 20), 8: (32, 34), 14: (256, 210)}


def tensor_bytes(typ, n, seed):
    block, size = BLOCK[typ]
    if typ == 0:
        return b"".join(struct.pack("<f", ((i * 7 + seed) % 13 - 6) / 8.0) for i in range(n))
    return bytes(((i * 31 + seed) % 251) for i in range(n // block * size))


def gguf(meta, tensors, align=32):
    """tensors: [(name, dims, type)]"""
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(meta)) + b"".join(meta)
    info, data = b"", b""
    for i, (name, dims, typ) in enumerate(tensors):
        n = 1
        for d in dims:
            n *= d
        data += b"\0" * ((-len(data)) % align)
        info += gstr(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        info += struct.pack("<IQ", typ, len(data))
        data += tensor_bytes(typ, n, i)
    body = head + info
    body += b"\0" * ((-len(body)) % align)
    return body + data


def llama_meta(vocab=("a", "b", "ab", "<|im_end|>")):
    return [
        kv("general.architecture", STR, "llama"),
        kv("general.alignment", U32, 32),
        kv("llama.block_count", U32, 1),
        kv("llama.embedding_length", U32, 8),
        kv("llama.feed_forward_length", U32, 16),
        kv("llama.attention.head_count", U32, 2),
        kv("llama.attention.head_count_kv", U32, 1),
        kv("llama.context_length", U32, 64),
        kv("llama.rope.freq_base", F32, 10000.0),
        kv("llama.attention.layer_norm_rms_epsilon", F32, 1e-5),
        kv("tokenizer.ggml.model", STR, "gpt2"),
        kv("tokenizer.ggml.pre", STR, "smollm"),
        kv("tokenizer.ggml.tokens", ARR, list(vocab), STR),
        kv("tokenizer.ggml.token_type", ARR, [1] * (len(vocab) - 1) + [3], I32),
        kv("tokenizer.ggml.merges", ARR, ["a b"], STR),
        kv("tokenizer.ggml.eos_token_id", U32, len(vocab) - 1),
    ]


def llama_tensors(t=0, skip=()):
    E, F, V, KV = 8, 16, 4, 4
    ts = [("token_embd.weight", [E, V], t), ("output_norm.weight", [E], 0),
          ("blk.0.attn_norm.weight", [E], 0), ("blk.0.ffn_norm.weight", [E], 0),
          ("blk.0.attn_q.weight", [E, E], t), ("blk.0.attn_k.weight", [E, KV], t),
          ("blk.0.attn_v.weight", [E, KV], t), ("blk.0.attn_output.weight", [E, E], t),
          ("blk.0.ffn_gate.weight", [E, F], t), ("blk.0.ffn_up.weight", [E, F], t),
          ("blk.0.ffn_down.weight", [F, E], t)]
    return [x for x in ts if x[0] not in skip]


def write(out, target, name, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def fixture(name):
    with open(os.path.join(ROOT, "tests", "fixtures", name), "rb") as f:
        return f.read()


def main():
    out = sys.argv[1]
    # gguf
    write(out, "gguf", "tiny_llama_f32.gguf", gguf(llama_meta(), llama_tensors(0)))
    write(out, "gguf", "tiny_llama_f16.gguf", gguf(llama_meta(), llama_tensors(1)))
    write(out, "gguf", "no_attn_v.gguf", gguf(llama_meta(), llama_tensors(0, skip=("blk.0.attn_v.weight",))))
    write(out, "gguf", "quant_types.gguf", gguf([kv("general.architecture", STR, "llama")],
          [("f16", [32], 1), ("bf16", [32], 30), ("q4_0", [64], 2), ("q4_1", [32], 3), ("q8_0", [32], 8),
           ("q6_k", [256], 14), ("f32", [4, 2], 0)]))
    write(out, "gguf", "header_only.gguf", b"GGUF" + struct.pack("<IQQ", 3, 0, 0))
    # profile
    write(out, "profile", "profile_tiny.json", fixture("profile_tiny.json"))
    write(out, "profile", "minimal.json", json.dumps({"format": "kvtrim-profile", "version": 1, "model": "m",
          "shape": {"layers": 2, "q_heads": 2, "kv_heads": 1}, "layer_error": [0.5, 0.5],
          "semantic_retrieval": [[1, 0], [0, 1]], "provenance": {"tool": "fuzz"}}))
    write(out, "profile", "huge_shape.json", json.dumps({"format": "kvtrim-profile", "version": 1, "model": "m",
          "shape": {"layers": 1 << 20, "q_heads": 1 << 20, "kv_heads": 1 << 20}}))
    write(out, "profile", "inf_sum.json", json.dumps({"format": "kvtrim-profile", "version": 1, "model": "m",
          "shape": {"layers": 2, "q_heads": 1, "kv_heads": 1}, "layer_error": [1.5e308, 1.5e308]}))
    # import: byte 0 = importer (0 head_idx, 1 layer_score, 2 headkv), byte 1 = (q_heads-1)<<4 | (layers-1)
    write(out, "import", "head_idx", bytes([0, 0x32]) + fixture("tiny_head_idx.json"))
    write(out, "import", "layer_score", bytes([1, 0x02]) + fixture("tiny_layer_score.jsonl"))
    write(out, "import", "layer_score_raw", bytes([1, 0x02]) + fixture("tiny_layer_score_raw.jsonl"))
    write(out, "import", "headkv", bytes([2, 0x32]) + fixture("tiny_retrieval_reasoning_heads.json"))
    # tokenizer
    for i, t in enumerate(["Hello world 12345", "<|im_start|>user\nhi<|im_end|>", "caf\u00e9 \u00fc\u00df \u4e2d\u6587 \U0001F600",
                           "  tabs\tand\nnewlines\r\n", "don't I'll we've", "<tool>x</tool>"]):
        write(out, "tokenizer", "text%d" % i, t)
    # eval_jsonl
    write(out, "eval_jsonl", "ruler_tiny.jsonl", fixture("ruler_tiny.jsonl"))
    write(out, "eval_jsonl", "one.jsonl", json.dumps({"index": 3, "input": "The key is 42. " * 20 + "What is the key?",
          "outputs": ["42"], "answer_prefix": " The key is", "length": 100}) + "\n")
    # eval_records
    rec = {"task": "niah_classic", "id": "niah_classic-L1024-D50", "method": "snapkv", "budget": "64",
           "kv_percent_of_full": 6.25, "score": 100.0, "length": 1024, "depth": 0.5}
    fid = {"task": "fidelity", "id": "fidelity-L2048-P0", "method": "full", "budget": "full",
           "kv_percent_of_full": 100.0, "score": 100.0, "kl": 0.0, "ppl": 12.5}
    write(out, "eval_records", "samples.jsonl", "\n".join(json.dumps(r) for r in [rec, fid,
          dict(rec, method="compresskv"), dict(rec, method="full", budget="full", kv_percent_of_full=100.0)]) + "\n")
    write(out, "eval_records", "torn.jsonl", json.dumps(rec) + "\n" + json.dumps(fid)[:20])


if __name__ == "__main__":
    main()
