"""PyTorch SDPA decode of one new token over an uncompressed bf16 cache (the baseline beside
kvtrim's ragged decode in scripts/gpu_check.sh). One JSON object per line."""
import json
import torch

def timed(fn, reps=20, warm=5):
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); fn(); b.record(); torch.cuda.synchronize()
        ts.append(a.elapsed_time(b))
    ts.sort()
    return ts[len(ts) // 2]

for shape, H, K, D, lens in (("llama31_8b", 32, 8, 128, (8192, 32768, 131072)), ("smollm2_135m", 9, 3, 64, (8192, 32768))):
    for n in lens:
        q = torch.randn(1, H, 1, D, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(1, K, n, D, device="cuda", dtype=torch.bfloat16)
        v = torch.randn_like(k)
        with torch.no_grad():
            ms = timed(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, enable_gqa=True))
        print(json.dumps({"what": "sdpa_decode", "shape": shape, "n": n, "ms": ms,
                          "TBps": 2 * k.numel() * 2 / ms / 1e9}), flush=True)
        del q, k, v
