#!/usr/bin/env python3
"""Render the "Calibration of the shipped profile" section of docs/RESULTS.md from a calibration run.

Reads what `kvtrim calibrate --json --out PROFILE --resume-dir DIR` leaves behind: the summary JSON
(its stdout), the profile (its provenance gives the run's grid) and the per-trial records in the
resume directory (heads.jsonl, reasoning.jsonl, layers.jsonl, run.json). Prints the markdown
section on stdout and writes calibration-heads.svg and calibration-budgets.svg (plus PNGs when
rsvg-convert is installed) into --figures-dir. Per-layer budgets come from `kvtrim budgets`.
With --previous OLD.json it adds what changed from that profile (head rankings, layer errors, budgets).

    python3 scripts/calibration_report.py --summary summary.json --profile profile.json \\
        --resume-dir calib --kvtrim build/bin/kvtrim --figures-dir docs \\
        --command "kvtrim calibrate --out profiles/M.json ..." > section.md
"""
import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

# The issue's requested scale (the "issue asks" column); everything else comes from the run.
ISSUE_NEEDLES = 5
ISSUE_LENGTHS = 10
ISSUE_DEPTHS = 10
ISSUE_NEW_TOKENS = 50
BUDGETS = (32, 64, 128, 256)


class ReportError(Exception):
    pass


def load_json(path, what):
    if not os.path.exists(path):
        raise ReportError(f"{what} {path} does not exist (has the run finished?)")
    text = open(path, encoding="utf-8").read()
    if not text.strip():
        raise ReportError(f"{what} {path} is empty (has the run finished?)")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ReportError(f"{what} {path} is not JSON ({e})")


def fnv_hex(s):
    """The calibrator's FNV-1a 64 hash (trial keys name needle facts and head sets by it)."""
    h = 1469598103934665603
    for c in s.encode():
        h = ((h ^ c) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return "%016x" % h


def read_records(path):
    """A resume log: key -> record, the last complete line winning (as the calibrator reads it)."""
    recs = {}
    if not os.path.exists(path):
        return None
    for line in open(path, encoding="utf-8"):
        try:
            r = json.loads(line)
            recs[r["key"]] = r
        except (json.JSONDecodeError, KeyError, TypeError):
            pass  # a torn line from an interrupted write
    return recs


def need(prov, key):
    if key not in prov:
        raise ReportError(f"the profile's provenance has no '{key}'")
    return prov[key]


def parse_needles(text, reasoning):
    """'name: fact | name: fact Q: question' -> [(name, fact)]."""
    out = []
    for part in text.split(" | "):
        name, fact = part.split(": ", 1)
        if reasoning:
            fact = fact.split(" Q: ")[0]
        out.append((name, fact))
    return out


def parse_grid(settings, needles_text, reasoning):
    m = re.search(r"lengths ([0-9,]+); depths (\d+)", settings)
    n = re.search(r"max_new_tokens (\d+)", settings)
    s = re.search(r"seed (\d+)", settings)
    t = re.search(r"(\d+) trials, (\d+) kept", settings)
    k = re.search(r"keep: ([^;]+)", settings)
    if not (m and n and s):
        raise ReportError(f"cannot read lengths/depths/max_new_tokens/seed from provenance '{settings}'")
    return {
        "needles": parse_needles(needles_text, reasoning),
        "lengths": [int(x) for x in m.group(1).split(",")],
        "depths": int(m.group(2)),
        "new": int(n.group(1)),
        "seed": int(s.group(1)),
        "planned": int(t.group(1)) if t else None,
        "kept": int(t.group(2)) if t else None,
        "keep": k.group(1).strip() if k else "kept",
    }


def depth_pcts(d):
    return [50.0] if d == 1 else [100.0 * i / (d - 1) for i in range(d)]


def find_record(recs, key):
    """The record whose key is `key` or `key` followed by settings ("|span=...|first=...|start=...",
    "|pool=...|at=...|eps=...": docs/CALIBRATION.md, "Resume")."""
    if key in recs:
        return recs[key]
    hits = [r for k, r in recs.items() if k.startswith(key + "|")]
    return hits[0] if len(hits) == 1 else None


def grid_records(stage, g, recs, warn):
    """Records of the run's grid, by (needle, length) -> list of records (in depth order)."""
    cells = {}
    missing = 0
    for name, fact in g["needles"]:
        for length in g["lengths"]:
            row = []
            for i in range(g["depths"]):
                key = (f"{stage}|{name}|{fnv_hex(fact)}|len={length}|depth={i}/{g['depths']}"
                       f"|new={g['new']}|seed={g['seed']}")
                r = find_record(recs, key) if recs is not None else None
                if r is not None:
                    row.append(r)
                else:
                    missing += 1
            cells[(name, length)] = row
    if recs is not None and missing:
        warn(f"{stage}.jsonl lacks {missing} of the grid's trials")
    return cells


def fmt_s(x):
    return f"{x:.0f} s"


def kept_table(g, cells):
    lens = g["lengths"]
    out = ["| needle | " + " | ".join(f"{n} tok" for n in lens) + " |",
           "| --- |" + " --- |" * len(lens)]
    for name, _ in g["needles"]:
        out.append(f"| {name} | " + " | ".join(
            f"{sum(bool(r['kept']) for r in cells[(name, n)])}/{len(cells[(name, n)])}" for n in lens) + " |")
    means, ranges = [], []
    for n in lens:
        t = [r["seconds"] for name, _ in g["needles"] for r in cells[(name, n)]]
        means.append(fmt_s(sum(t) / len(t)) if t else "–")
        ranges.append(f"{min(t):.0f}–{max(t):.0f} s" if t else "–")
    out.append("| mean trial time | " + " | ".join(means) + " |")
    out.append("| trial time range | " + " | ".join(ranges) + " |")
    return "\n".join(out)


def top(m, k):
    return [sorted(range(len(r)), key=lambda h: (-r[h], h))[:k] for r in m]


def compare(a, b, k):
    L = len(a)
    overlap = sum(len(set(x) & set(y)) for x, y in zip(a, b)) / (k * L)
    first = sum(x[0] == y[0] for x, y in zip(a, b)) / L
    same = sum(set(x) == set(y) for x, y in zip(a, b))
    differ = [l for l, (x, y) in enumerate(zip(a, b)) if set(x) != set(y)]
    s = (f"top-{k} set overlap {overlap:.2f}, same best head in {first:.2f} of layers, "
         f"identical top-{k} set in {same} of {L} layers")
    if differ:
        s += "; the sets differ in layer" + ("s " if len(differ) > 1 else " ") + ", ".join(map(str, differ))
    return s


def heat_svg(m, k, title, path):
    cw, ch, ox, oy = 22, 14, 60, 40
    mx = max(max(r) for r in m) or 1
    W = ox + cw * len(m[0])
    s = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W + 120}" height="{oy + ch * len(m) + 40}" '
         f'font-family="sans-serif" font-size="10">',
         f'<rect width="100%" height="100%" fill="white"/>',
         f'<text x="{ox}" y="20" font-size="13">{title}</text>']
    tops = top(m, k)
    for l, r in enumerate(m):
        s.append(f'<text x="{ox - 8}" y="{oy + ch * l + 10}" text-anchor="end">{l}</text>')
        for h, v in enumerate(r):
            c = int(255 * (1 - v / mx))
            s.append(f'<rect x="{ox + cw * h}" y="{oy + ch * l}" width="{cw - 1}" height="{ch - 1}" '
                     f'fill="rgb(255,{c},{c})"/>')
            if h in tops[l]:
                s.append(f'<circle cx="{ox + cw * h + cw / 2 - 0.5}" cy="{oy + ch * l + ch / 2 - 0.5}" r="2" '
                         f'fill="black"/>')
    for h in range(len(m[0])):
        s.append(f'<text x="{ox + cw * h + cw / 2}" y="{oy - 4}" text-anchor="middle">{h}</text>')
    for i, t in enumerate(["rows: layers", "cols: query heads", f"dot: top-{k} of layer", f"max = {mx:.3g}"]):
        s.append(f'<text x="{W + 8}" y="{oy + 10 + 14 * i}">{t}</text>')
    s.append("</svg>")
    open(path, "w", encoding="utf-8").write("\n".join(s) + "\n")


def budgets_svg(budgets, title, path):
    W, Hh = 22, 120
    L = len(next(iter(budgets.values())))
    s = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{60 + W * L + 20}" '
         f'height="{len(budgets) * (Hh + 30) + 40}" font-family="sans-serif" font-size="10">',
         f'<rect width="100%" height="100%" fill="white"/>',
         f'<text x="60" y="16" font-size="13">{title}</text>']
    for i, (B, b) in enumerate(budgets.items()):
        mx = max(max(b), B)
        y0 = 30 + i * (Hh + 30) + Hh
        s.append(f'<text x="4" y="{y0 - Hh / 2}">B={B}</text>'
                 f'<text x="56" y="{y0 - Hh + 8}" text-anchor="end">{mx}</text>')
        for l, v in enumerate(b):
            h = Hh * v / mx
            s.append(f'<rect x="{60 + W * l}" y="{y0 - h}" width="{W - 3}" height="{h}" fill="steelblue"/>')
            if i == len(budgets) - 1:
                s.append(f'<text x="{60 + W * l + W / 2 - 1}" y="{y0 + 12}" text-anchor="middle">{l}</text>')
        y = y0 - Hh * B / mx
        s.append(f'<line x1="60" x2="{60 + W * L}" y1="{y}" y2="{y}" stroke="red" stroke-dasharray="3,2"/>')
    s.append("</svg>")
    open(path, "w", encoding="utf-8").write("\n".join(s) + "\n")


def to_png(svg):
    exe = shutil.which("rsvg-convert")
    if exe:
        subprocess.run([exe, "-o", svg[:-4] + ".png", svg], check=True)


def defined_needles(kvtrim):
    """Retrieval needle names the binary defines, from `kvtrim calibrate --help` (None if unreadable)."""
    try:
        h = subprocess.run([kvtrim, "calibrate", "--help"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"default all:\s*([^)]*)\)", h)
    return [x.strip() for x in re.split(r",\s*", " ".join(m.group(1).split()))] if m else None


def command_options(cmd):
    try:
        words = shlex.split(cmd.replace("\\\n", " "))
    except ValueError:
        return {}
    opts = {}
    for i, w in enumerate(words):
        if w.startswith("--") and i + 1 < len(words) and not words[i + 1].startswith("--"):
            opts[w[2:]] = words[i + 1]
    return opts


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--summary", required=True, help="the JSON that `kvtrim calibrate --json` printed")
    ap.add_argument("--profile", required=True, help="the profile the run wrote (--out)")
    ap.add_argument("--resume-dir", required=True, help="the run's --resume-dir")
    ap.add_argument("--kvtrim", required=True, help="the kvtrim binary (for `kvtrim budgets`)")
    ap.add_argument("--figures-dir", required=True, help="where the SVG (and PNG) figures go")
    ap.add_argument("--command", required=True, help="the calibrate command line to print in the section")
    ap.add_argument("--context", type=int, default=8192, help="the model's context in tokens (default 8192)")
    ap.add_argument("--previous", help="the profile this run replaces: adds a section on what changed")
    a = ap.parse_args()
    warnings = []

    def warn(msg):
        warnings.append(msg)
        print(f"calibration_report: warning: {msg}", file=sys.stderr)

    summ = load_json(a.summary, "summary")
    prof = load_json(a.profile, "profile")
    if not summ.get("complete"):
        raise ReportError(f"summary {a.summary} says the run is not complete")
    if not os.path.isdir(a.resume_dir):
        raise ReportError(f"resume directory {a.resume_dir} does not exist")
    prov = prof.get("provenance", {})
    shape = prof["shape"]
    L, H, KV = shape["layers"], shape["q_heads"], shape["kv_heads"]
    G = H // KV
    stages = {s["stage"]: s for s in summ["stages"]}
    opts = command_options(a.command)
    name = opts.get("out", a.profile)
    k = len(summ["top_semantic_retrieval"][0]) if summ.get("top_semantic_retrieval") else 4

    run = load_json(os.path.join(a.resume_dir, "run.json"), "run record") \
        if os.path.exists(os.path.join(a.resume_dir, "run.json")) else None
    if run is None:
        warn(f"{a.resume_dir}/run.json is missing")
    elif run.get("date") != prov.get("date"):
        warn(f"{a.resume_dir}/run.json date {run.get('date')} differs from the profile's {prov.get('date')}")
    if run is not None and run.get("model_sha256") != prof.get("model_sha256"):
        warn(f"{a.resume_dir}/run.json is for model sha256 {run.get('model_sha256')}, not the profile's")

    # ---- grids, from the provenance, and their trials, from the resume directory
    grids, cells = {}, {}
    for stage, key, label in (("heads", "semantic_retrieval", False), ("reasoning", "retrieval_reasoning", True)):
        if f"{key}_settings" not in prov:
            continue
        g = parse_grid(prov[f"{key}_settings"], need(prov, f"{key}_needles"), label)
        grids[stage] = g
        if f"{key}_from" in prov:  # kept from an earlier profile: its trials are not in this directory
            cells[stage] = None
            continue
        recs = read_records(os.path.join(a.resume_dir, f"{stage}.jsonl"))
        if recs is None:
            warn(f"{a.resume_dir}/{stage}.jsonl is missing: no per-needle table for stage {stage}")
        grids[stage] = g
        cells[stage] = grid_records(stage, g, recs, warn) if recs is not None else None
        if cells[stage] is not None:
            n = sum(len(v) for v in cells[stage].values())
            kept = sum(bool(r["kept"]) for v in cells[stage].values() for r in v)
            for what, mine, theirs in (("trials", n, g["planned"]), ("kept", kept, g["kept"])):
                if theirs is not None and mine != theirs:
                    warn(f"stage {stage}: {mine} {what} in {stage}.jsonl, the provenance says {theirs}")
        for o, v in (("lengths" if stage == "heads" else "reasoning-lengths", ",".join(map(str, g["lengths"]))),
                     ("depths" if stage == "heads" else "reasoning-depths", str(g["depths"])),
                     ("max-new-tokens", str(g["new"])), ("seed", str(g["seed"]))):
            if o in opts and opts[o] != v:
                warn(f"--command has --{o} {opts[o]}, the profile's provenance says {v}")

    layer = None
    if "layer_error_settings" in prov:
        st = prov["layer_error_settings"]
        m = re.search(r"(\d+) prompts per dataset cut to (\d+) tokens", st)
        n = re.search(r"max_new_tokens (\d+)", st)
        t = re.search(r"(\d+) tokens per KV head, window (\d+), top-(\d+)", st)
        ds = re.findall(r"(\w+) \((\d+) samples?\)", prov.get("layer_error", ""))
        layer = {"prompts": int(m.group(1)) if m else None, "tokens": int(m.group(2)) if m else None,
                 "new": int(n.group(1)) if n else None, "datasets": [d for d, _ in ds]}
        recs = read_records(os.path.join(a.resume_dir, "layers.jsonl"))
        if recs is None:
            warn(f"{a.resume_dir}/layers.jsonl is missing")
        elif t and m and n and "semantic_retrieval" in prof:
            kk = int(t.group(3))
            sets = "".join(f"{l}:{h}," for l, r in enumerate(prof["semantic_retrieval"])
                           for h in sorted(top([r], kk)[0]))
            sfx = (f"|heads={fnv_hex(sets)}|B={t.group(1)}|w={t.group(2)}|max={m.group(2)}|new={n.group(1)}"
                   f"|seed={grids.get('heads', {}).get('seed', 0)}")
            layer["records"] = [r for key, r in recs.items() if key.endswith(sfx) or sfx + "|" in key]
            if "layers" in stages and len(layer["records"]) != stages["layers"]["planned"]:
                warn(f"layers.jsonl has {len(layer['records'])} trials with this profile's heads, "
                     f"the summary planned {stages['layers']['planned']}")

    # ---- section: header and scale
    out = []
    w = out.append
    w(f"## Calibration of the shipped profile (`{name}`)\n")
    w(f"Produced by `kvtrim calibrate` (docs/CALIBRATION.md): {prov.get('tool', 'kvtrim calibrate')}, "
      f"model file {prov.get('model_file', prof.get('model_sha256', '?'))}, run started {prov.get('date', '?')}.\n")
    w("```sh\n" + a.command.rstrip() + "\n```\n")
    w("### Scale used, and the issue's scale\n")
    w("| | issue asks | this profile |\n| --- | --- | --- |")
    short = []
    if "heads" in grids:
        g = grids["heads"]
        names = [nm for nm, _ in g["needles"]]
        defined = defined_needles(a.kvtrim)
        unused = [x for x in (defined or []) if x not in names]
        w(f"| retrieval needles | >= {ISSUE_NEEDLES} | {len(names)} ({', '.join(names)}"
          + (f"; defined but not run: {', '.join(unused)}" if unused else "") + ") |")
        lens = g["lengths"]
        w(f"| lengths | >= {ISSUE_LENGTHS}, up to the context ({a.context}) | {len(lens)}: "
          f"{', '.join(map(str, lens))} tokens (longest {100 * max(lens) / a.context:.0f} % of the context) |")
        w(f"| depths | {ISSUE_DEPTHS} | {g['depths']} ("
          + ", ".join(f"{p:.0f}" for p in depth_pcts(g["depths"])) + " %) |")
        w(f"| new tokens per trial | {ISSUE_NEW_TOKENS} | {g['new']} |")
        short += [f"{len(names)} retrieval needles (issue: >= {ISSUE_NEEDLES})"] if len(names) < ISSUE_NEEDLES else []
        short += [f"{len(lens)} lengths (issue: >= {ISSUE_LENGTHS})"] if len(lens) < ISSUE_LENGTHS else []
        short += [f"{g['depths']} depths (issue: {ISSUE_DEPTHS})"] if g["depths"] < ISSUE_DEPTHS else []
        short += [f"{g['new']} new tokens per trial (issue: {ISSUE_NEW_TOKENS})"] if g["new"] < ISSUE_NEW_TOKENS else []
    if "reasoning" in grids:
        r = grids["reasoning"]
        w(f"| reasoning needles x lengths x depths | same placement | {len(r['needles'])} "
          f"({', '.join(nm for nm, _ in r['needles'])}) x ({', '.join(map(str, r['lengths']))}) x {r['depths']} ("
          + ", ".join(f"{p:.0f}" for p in depth_pcts(r["depths"])) + " %)"
          + (f" — {prov['retrieval_reasoning_from']}" if "retrieval_reasoning_from" in prov else "") + " |")
        if "heads" in grids:
            h = grids["heads"]
            if set(r["lengths"]) != set(h["lengths"]) or r["depths"] != h["depths"]:
                short.append(f"reasoning grid {len(r['lengths'])} lengths x {r['depths']} depths, not the "
                             f"retrieval grid's {len(h['lengths'])} x {h['depths']} (issue: same placement)")
    if layer:
        w(f"| layer-error prompts | several task types | {layer['prompts']} per dataset x {len(layer['datasets'])} "
          f"datasets ({', '.join(layer['datasets'])}), {layer['tokens']} tokens, {layer['new']} new tokens |")
    w("")
    if short:
        w("Short of the issue's scale: " + "; ".join(short) + ".\n")
    else:
        w("The grid meets the issue's scale in every row above.\n")

    # ---- wall time and kept trials
    w("### Wall time and kept trials per stage\n")
    w("| stage | trials | kept | run by this process | reused from the resume directory | "
      "wall time (sum of trial times) |\n| --- | --- | --- | --- | --- | --- |")
    labels = {"heads": "heads (semantic retrieval)", "reasoning": "reasoning (retrieval-reasoning)",
              "layers": "layers (eviction error)"}
    for s in summ["stages"]:
        w(f"| {labels.get(s['stage'], s['stage'])} | {s['planned']} | {s['kept']} | {s['run']} | {s['reused']} | "
          f"{s['trial_seconds'] / 60:.1f} min |")
    w("")
    w("Trial times are those stored in the resume directory: a reused trial counts with the time it took in "
      "the process that ran it.\n")
    what = {"heads": "heads", "reasoning": "reasoning"}
    for stage in ("heads", "reasoning"):
        if stage in grids and cells.get(stage) is not None:
            w(f"Kept trials of stage {what[stage]} (keep: {grids[stage]['keep']}):\n")
            w(kept_table(grids[stage], cells[stage]) + "\n")
    counts = []
    for stage, score, key in (("heads", "semantic retrieval", "semantic_retrieval"),
                              ("reasoning", "R2", "retrieval_reasoning")):
        if stage in stages:
            counts.append(f"the {score} scores are the mean over {stages[stage]['kept']} kept trials "
                          f"of {stages[stage]['planned']}")
    if counts:
        w("In the profile, " + ", and ".join(counts) + " (HeadKV's budgets are built from R2; CompressKV uses "
          "the semantic retrieval scores and the layer errors).\n")

    # ---- heads
    sr = prof.get("semantic_retrieval")
    if sr:
        tops = {"semantic retrieval": top(sr, k)}
        if "span_mass" in summ:
            tops["span mass"] = top(summ["span_mass"], k)
            tops["copy score"] = top(summ["copy_score"], k)
        if "retrieval_reasoning" in prof:
            tops["R2"] = top(prof["retrieval_reasoning"], k)
        w("### Semantic retrieval heads per layer, and how they differ\n")
        w(f"Top-{k} query heads per layer (best first, ties to the lower head id; head h belongs to KV head "
          f"h // {G}) by\n")
        w("- **semantic retrieval** (the profile; CompressKV): span mass at steps whose token is in the needle;")
        if "span mass" in tops:
            w("- **span mass**: the head's attention mass over the needle span at every step, without the\n"
              "  token-match condition (\"plain retrieval heads\" by attention mass alone);")
            w("- **copy score**: Wu et al.'s retrieval score — steps at which the head's most attended position\n"
              "  is a needle token equal to the generated one;")
        if "R2" in tops:
            w("- **R2**: the retrieval-reasoning score (HeadKV), for comparison.")
        w("")
        w("| layer | " + " | ".join(f"{t} (top-{k})" for t in tops) + " |")
        w("| --- |" + " --- |" * len(tops))
        for l in range(L):
            w(f"| {l} | " + " | ".join(",".join(map(str, v[l])) for v in tops.values()) + " |")
        w("")
        sem = tops["semantic retrieval"]
        for t in tops:
            if t == "semantic retrieval":
                continue
            line = f"- Semantic retrieval vs {t}: {compare(sem, tops[t], k)}."
            if t == "copy score":
                zero = [l for l, r in enumerate(summ["copy_score"]) if max(r) == 0]
                if zero:
                    line += (f" In {len(zero)} of {L} layers every head's copy score is zero (no kept trial's most "
                             f"attended position was the generated needle token), so the heads listed there are a "
                             f"tie in head-id order, not a ranking.")
            w(line)
        kvc = [0] * KV
        for row in sem:
            for h in row:
                kvc[h // G] += 1
        w(f"- Semantic retrieval top-{k} heads per KV head, over all layers: "
          + ", ".join(f"KV head {i}: {c}" for i, c in enumerate(kvc)) + f" (of {k * L}).\n")
        w(f"Heat map of the scores (dots: each layer's top {k}): [calibration-heads.svg](calibration-heads.svg).\n")
        os.makedirs(a.figures_dir, exist_ok=True)
        heat = os.path.join(a.figures_dir, "calibration-heads.svg")
        model = prov.get("model_file", "").split(" ")[0].split(".")[0] or prof.get("model", "")
        heat_svg(sr, k, f"{model}: semantic retrieval head scores", heat)
        to_png(heat)

    # ---- layer errors and budgets
    le = prof.get("layer_error")
    if le:
        w("### Layer eviction errors and the budgets they give\n")
        order = sorted(range(L), key=lambda l: -le[l])
        mx, mn = order[0], order[-1]
        w(f"`layer_error` (weights summing to {sum(le):.4f}; uniform would be {1 / L:.4f} each): largest at layer "
          f"{mx} ({le[mx]:.4f}, {le[mx] * L:.2f} x uniform), smallest at layer {mn} ({le[mn]:.4f}, "
          f"{le[mn] * L:.2f} x uniform); the three largest are layers {', '.join(map(str, order[:3]))}, "
          f"the three smallest {', '.join(map(str, order[-3:][::-1]))}.")
        budgets = {}
        for B in BUDGETS:
            try:
                res = subprocess.run([a.kvtrim, "budgets", "--profile", a.profile, "--method", "compresskv",
                                      "--budget", str(B), "--json"], capture_output=True, text=True, check=True)
            except (OSError, subprocess.CalledProcessError) as e:
                raise ReportError(f"`{a.kvtrim} budgets ... --budget {B}` failed: "
                                  f"{getattr(e, 'stderr', '') or e}".strip())
            budgets[B] = json.loads(res.stdout)["layers"]
        w(f"`kvtrim budgets --profile {name} --method compresskv --budget B --json` "
          f"(tokens per KV head per layer, window included):\n")
        w(f"| B | per-layer budgets, layers 0..{L - 1} | min | max | sum | L x B |")
        w("| --- | --- | --- | --- | --- | --- |")
        for B, b in budgets.items():
            w(f"| {B} | {', '.join(map(str, b))} | {min(b)} | {max(b)} | {sum(b)} | {L * B} |")
        w("")
        notes = []
        flat = [B for B, b in budgets.items() if min(b) == max(b)]
        if flat:
            notes.append("every layer gets the same budget at B = " + ", ".join(map(str, flat)))
        off = [B for B, b in budgets.items() if sum(b) != L * B]
        notes.append("the sums equal L x B at every B" if not off else
                     "the sums differ from L x B at B = " + ", ".join(map(str, off)))
        w(notes[0][0].upper() + "; ".join(notes)[1:] + ". "
          "Bar chart: [calibration-budgets.svg](calibration-budgets.svg).")
        os.makedirs(a.figures_dir, exist_ok=True)
        bars = os.path.join(a.figures_dir, "calibration-budgets.svg")
        budgets_svg(budgets, f"compresskv per-layer budgets (tokens per KV head) from {os.path.basename(name)}",
                    bars)
        to_png(bars)
    if a.previous:
        w("")
        out.extend(changes_section(load_json(a.previous, "previous profile"), prof, a, k, budgets if le else {}))
    sys.stdout.write("\n".join(out) + "\n")
    return 0


def ranks(v):
    order = sorted(range(len(v)), key=lambda i: v[i])
    r = [0.0] * len(v)
    i = 0
    while i < len(order):  # ties share their mean rank
        j = i
        while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
            j += 1
        for t in range(i, j + 1):
            r[order[t]] = (i + j) / 2
        i = j + 1
    return r


def spearman(a, b):
    ra, rb = ranks(a), ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    num = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    den = (sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb)) ** 0.5
    return num / den if den else float("nan")


def changes_section(old, new, a, k, new_budgets):
    """What the new profile changes against the one it replaces, as markdown lines."""
    out = [f"### What changed from the previous profile (`{os.path.basename(a.previous)}`)\n"]
    for key, what in (("semantic_retrieval", "Semantic retrieval heads (CompressKV)"),
                      ("retrieval_reasoning", "Retrieval-reasoning heads (HeadKV)")):
        if old.get(key) and new.get(key):
            out.append(f"- {what}: new vs previous {compare(top(new[key], k), top(old[key], k), k)}.")
    if old.get("layer_error") and new.get("layer_error"):
        out.append(f"- Layer eviction errors: Spearman rank correlation {spearman(old['layer_error'], new['layer_error']):.3f}"
                   " between the two profiles' per-layer weights.")
        rows = []
        for B in (32, 64, 128):
            got = []
            for pth in (a.previous, a.profile):
                if pth == a.profile and B in new_budgets:  # the section above asked already
                    got.append(new_budgets[B])
                    continue
                res = subprocess.run([a.kvtrim, "budgets", "--profile", pth, "--method", "compresskv",
                                      "--budget", str(B), "--json"], capture_output=True, text=True, check=True)
                got.append(json.loads(res.stdout)["layers"])
            moved = [(l, x, y) for l, (x, y) in enumerate(zip(*got)) if x != y]
            big = sorted(moved, key=lambda t: -abs(t[2] - t[1]))[:6]
            rows.append(f"| {B} | {len(moved)} of {len(got[0])} | {max((abs(y - x) for _, x, y in moved), default=0)} | "
                        + ", ".join(f"L{l} {x}→{y}" for l, x, y in sorted(big)) + " |")
        out.append("")
        out.append("CompressKV per-layer budgets (`kvtrim budgets --method compresskv --budget B`), previous → new:\n")
        out.append("| B | layers whose budget moved | largest move (tokens) | largest moves |")
        out.append("| --- | --- | --- | --- |")
        out.extend(rows)
    return out


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ReportError as e:
        print(f"calibration_report: {e}", file=sys.stderr)
        sys.exit(1)
