#!/usr/bin/env python3
"""Golden ROUGE-L values for tests/host/eval_test.cpp, made by the `rouge` package 1.0.1 (the one
LongBench's metrics.py calls: Rouge().get_scores([pred], [gt], avg=True)["rouge-l"]["f"]).

Writes tests/fixtures/rouge_l_golden.json: hand-written edge cases plus seeded synthetic
summaries (random words from a small vocabulary, with full stops, commas and odd spacing), so no
dataset text enters the repository.

Runs itself inside the venv at ~/.cache/kvtrim/venv (created on first use, never system-wide).
Usage: scripts/oracle/rouge_golden.py
"""
import json
import pathlib
import random
import sys

from oracle_venv import ensure_venv

ROUGE_VERSION = "1.0.1"
REPO = pathlib.Path(__file__).resolve().parents[2]
OUT = REPO / "tests" / "fixtures" / "rouge_l_golden.json"



def longbench_rouge_l(pred, gt):
    from rouge import Rouge  # imported inside the venv only
    try:
        return Rouge().get_scores([pred], [gt], avg=True)["rouge-l"]["f"]
    except Exception:  # LongBench's bare except: a text with no sentence scores 0
        return 0.0


def synthetic(rng, words):
    vocab = ["the", "The", "city", "council", "voted", "on", "Monday", "to", "approve", "a", "new",
             "budget", "officials", "said", "police", "report", "court", "ruling,", "residents",
             "were", "told", "about", "plan", "\u00e9t\u00e9", "caf\u00e9", "U.S.", "2016", "said.", "it's"]
    out = []
    for _ in range(words):
        out.append(rng.choice(vocab))
        r = rng.random()
        out.append(". " if r < 0.12 else ("  " if r < 0.16 else ("\n" if r < 0.19 else " ")))
    return "".join(out)


def main():
    ensure_venv(f"rouge=={ROUGE_VERSION}")
    cases = [
        ("the cat sat on the mat", "The cat is on the mat."),
        ("a b", "a x b y"),
        ("", "a"),
        ("q", "a"),
        ("...", "a b."),
        ("a b. ", "a b."),
        ("a. b. c", "c. b. a"),
        ("w1 w2 w6 w7 w8. w1 w3 w8 w9 w5", "w1 w2 w3 w4 w5"),
        ("Hello, world. Hello again, world.", "hello world. Hello, again world"),
        ("tab\tseparated\nlines  and   spaces", "tab separated lines and spaces"),
        ("x x x x. y y", "x y x y. x"),
        ("nbsp\u00a0word and\u2003em space", "nbsp word and em space"),
        ("A B C D E F", "F E D C B A"),
    ]
    rng = random.Random(0)
    for _ in range(40):
        ref = synthetic(rng, rng.randint(5, 120))
        hyp = synthetic(rng, rng.randint(1, 160)) if rng.random() < 0.5 else ref[: rng.randint(0, len(ref))] + synthetic(rng, rng.randint(0, 30))
        cases.append((hyp, ref))
    out = [{"prediction": p, "reference": r, "rouge_l_f": longbench_rouge_l(p, r)} for p, r in cases]
    OUT.write_text(json.dumps({"generator": f"scripts/oracle/rouge_golden.py, rouge=={ROUGE_VERSION}", "cases": out},
                              ensure_ascii=False, indent=1) + "\n")
    print(f"wrote {len(out)} cases to {OUT}")


if __name__ == "__main__":
    main()
