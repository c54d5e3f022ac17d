"""One markdown table from scripts/gpu_check.sh's JSON lines (kvtrim CUDA bench, kvpress peer,
SDPA decode). Usage: gpu_table.py FILE.jsonl..."""
import json, sys
rows = []
for path in sys.argv[1:]:
    for line in open(path):
        line = line.strip()
        if line.startswith("{"):
            try:
                rows.append(json.loads(line))
            except ValueError:
                pass
hbm = next((r for r in rows if r.get("what") == "hbm"), {})
pre = {(r["shape"], r["n"]): r["ms"] for r in rows if r.get("what") == "prefill_attention_layer"}
kvp = {(r["shape"], r["n"], r["budget"], r["press"]): r["ms"] for r in rows
       if r.get("what") == "kvpress_compress_layer" and "ms" in r}
print(f"GPU: {hbm.get('gpu', '?')}; HBM copy {hbm.get('copy_TBps', 0):.2f} TB/s (read+write), read {hbm.get('read_TBps', 0):.2f} TB/s\n")
print("| shape | n | B | method | kvtrim ms | x floor | kvpress ms (SnapKV / PyramidKV / AdaKV) | speed-up vs kvpress same method | % of prefill attention |")
print("|---|---|---|---|---|---|---|---|---|")
peer = {"snapkv": "snapkv_w8_k7", "pyramidkv": "pyramidkv", "adakv": "adakv(snapkv)"}
for r in rows:
    if r.get("what") != "kvtrim_cuda_compress_layer":
        continue
    key = (r["shape"], r["n"], r["budget"])
    trio = " / ".join(f"{kvp[key + (p,)]:.3f}" if key + (p,) in kvp else "-" for p in peer.values())
    same = kvp.get(key + (peer.get(r["method"], "snapkv_w8_k7"),))
    sp = f"{same / r['ms']:.1f}x" if same else "-"
    pct = f"{100 * r['ms'] / pre[(r['shape'], r['n'])]:.2f} %" if (r["shape"], r["n"]) in pre else "-"
    sync = " (1 host sync)" if r.get("host_sync") else ""
    print(f"| {r['shape']} | {r['n']} | {r['budget']} | {r['method']}{sync} | {r['ms']:.3f} | {r['x_floor']:.1f} | {trio} | {sp} | {pct} |")
print("\n| shape | n | kept rows / head | compaction ms | TB/s | of copy bandwidth |")
print("|---|---|---|---|---|---|")
for r in rows:
    if r.get("what") == "kvtrim_cuda_compact":
        print(f"| {r['shape']} | {r['n']} | {r['kept']} | {r['ms']:.4f} | {r['TBps']:.2f} | {100 * r['of_copy']:.0f} % |")
sd = {(r["shape"], r["n"]): r["ms"] for r in rows if r.get("what") == "sdpa_decode"}
print("\n| shape | n | rows / head | kvtrim decode ms | TB/s | of read bandwidth | SDPA decode ms (n rows) |")
print("|---|---|---|---|---|---|---|")
for r in rows:
    if r.get("what") == "kvtrim_cuda_decode":
        s = sd.get((r["shape"], r["n"]))
        print(f"| {r['shape']} | {r['n']} | {r['length']} | {r['ms']:.4f} | {r['TBps']:.2f} | {100 * r['of_read']:.0f} % | {f'{s:.4f}' if s else '-'} |")
