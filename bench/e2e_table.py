#!/usr/bin/env python3
"""Markdown table from bench/e2e_host.sh's JSON lines: medians over repetitions, kvtrim's share of
prefill, and each decode rate against its floor (bytes read per token / measured bandwidth).
Usage: e2e_table.py OUT.jsonl [--bandwidth GBPS] [--weights-bytes N]"""
import argparse, json, statistics as st
from collections import defaultdict

ap = argparse.ArgumentParser()
ap.add_argument("jsonl")
ap.add_argument("--bandwidth", type=float, default=0.0, help="measured read bandwidth, GB/s (bench: BM_memory_read)")
ap.add_argument("--weights-bytes", type=float, default=0.0, help="bytes of weights read per decode step")
a = ap.parse_args()
rows = [json.loads(l) for l in open(a.jsonl) if l.strip()]
host = defaultdict(list)
llama = {}
for r in rows:
    if r.get("engine") == "kvtrim-host":
        host[(r["n"], r["method"], r["budget"])].append(r)
    elif r.get("engine") == "llama.cpp":
        key = "pp" if r.get("n_prompt", 0) > 0 else "tg"
        llama[(r["n"], key)] = r.get("avg_ts")
med = lambda rs, k: st.median(x[k] for x in rs)
print("| n | method | B | KV MiB | % of full | prefill s | kvtrim s | kvtrim % of prefill | decode tok/s | floor tok/s | of floor | peak RSS MiB |")
print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for (n, m, b), rs in sorted(host.items(), key=lambda kv: (kv[0][0], kv[0][1] != "full", kv[0][1], kv[0][2])):
    pre, kt, dec = med(rs, "prefill_s"), med(rs, "kvtrim_s"), med(rs, "decode_tokens_per_s")
    kvb = med(rs, "kv_bytes")
    floor = ""
    frac = ""
    if a.bandwidth > 0 and a.weights_bytes > 0:
        f = a.bandwidth * 1e9 / (a.weights_bytes + kvb)
        floor, frac = f"{f:.1f}", f"{dec / f:.0%}"
    print(f"| {n} | {m} | {b if m != 'full' else n} | {kvb / 2**20:.2f} | {med(rs, 'kv_percent_of_full'):.2f} | {pre:.2f} | {kt:.3f} | "
          f"{100 * kt / pre:.2f}% | {dec:.1f} | {floor} | {frac} | {med(rs, 'peak_rss_bytes') / 2**20:.0f} |")
for n in sorted({k[0] for k in llama}):
    pp, tg = llama.get((n, "pp")), llama.get((n, "tg"))
    print(f"| {n} | llama.cpp (Q4_1, F16 KV) | full | | 100 | {n / pp if pp else float('nan'):.2f} | | | {tg or float('nan'):.1f} | | | |")
