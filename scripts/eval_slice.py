#!/usr/bin/env python3
"""Mean score per method x budget over a slice of an eval directory's samples.jsonl.

`kvtrim report` tabulates whole tasks; this answers questions about a subset, e.g. the needle
score at 8k tokens only, or as a percentage of the full cache's score on the same prompts:

  scripts/eval_slice.py results/niah --task niah_classic --where length=8000 [--percent-of-full] [--field kl]

--where FIELD=VALUE (repeatable) keeps records whose FIELD (a top-level key of the record, e.g.
length, depth, task) equals VALUE; --field picks the number to average (default score).
Prints a markdown table (methods down, budgets across, n per cell in the last column).
"""
import argparse
import json
import pathlib
import subprocess
import sys
from collections import defaultdict

ROOT = pathlib.Path(__file__).resolve().parent.parent


def registry_order(kvtrim):
    """Method names in registry order, from `kvtrim methods --json` (the one list of methods)."""
    out = subprocess.run([kvtrim, "methods", "--json"], check=True, capture_output=True, text=True).stdout
    return [m["name"] for m in json.loads(out)["methods"]]


def budget_key(b):
    return (2, 0.0) if b == "full" else ((1, float(b[1:])) if b.startswith("r") else (0, float(b)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", nargs="+", help="eval directories (their samples.jsonl are pooled)")
    ap.add_argument("--kvtrim", default=str(ROOT / "build" / "bin" / "kvtrim"), help="the kvtrim binary (its registry orders the methods)")
    ap.add_argument("--task", help="keep records of this task (prefix match: 'ruler_' pools RULER tasks)")
    ap.add_argument("--where", action="append", default=[], metavar="FIELD=VALUE")
    ap.add_argument("--field", default="score")
    ap.add_argument("--percent-of-full", action="store_true",
                    help="divide each mean by the full cache's mean on the same slice (x100)")
    a = ap.parse_args()
    conds = [w.split("=", 1) for w in a.where]
    if any(len(c) != 2 for c in conds):
        sys.exit("eval_slice: --where wants FIELD=VALUE")
    sums = defaultdict(float)
    counts = defaultdict(int)
    for d in a.dir:
        path = pathlib.Path(d) / "samples.jsonl"
        if not path.exists():
            sys.exit(f"eval_slice: {path} does not exist")
        for line in path.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue  # an interrupted append
            if a.task and not r.get("task", "").startswith(a.task):
                continue
            if any(str(r.get(f)) != v for f, v in conds):
                continue
            if a.field not in r:
                continue
            k = (r["method"], r["budget"])
            sums[k] += float(r[a.field])
            counts[k] += 1
    if not counts:
        sys.exit("eval_slice: no record matches")
    means = {k: sums[k] / counts[k] for k in counts}
    full = means.get(("full", "full"))
    if a.percent_of_full and not full:
        sys.exit("eval_slice: --percent-of-full needs full-cache records with a non-zero mean in the slice")
    budgets = sorted({b for _, b in counts if b != "full"}, key=budget_key)
    order = registry_order(a.kvtrim)
    methods = sorted({m for m, _ in counts}, key=lambda m: order.index(m) if m in order else len(order))
    print("| method | " + " | ".join(f"B={b}" for b in budgets) + " | full | n |")
    print("|---|" + "---|" * (len(budgets) + 2))
    for m in methods:
        cells = []
        for b in budgets + ["full"]:
            v = means.get((m, b))
            cells.append("" if v is None else (f"{100 * v / full:.0f}%" if a.percent_of_full else f"{v:.4g}"))
        n = max(counts[(m, b)] for b in budgets + ["full"] if (m, b) in counts)
        print(f"| {m} | " + " | ".join(cells) + f" | {n} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
