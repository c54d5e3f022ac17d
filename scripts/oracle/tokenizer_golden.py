#!/usr/bin/env python3
"""Golden tokenizations for tests/host/tokenizer_test.cpp, made by Hugging Face `tokenizers` (the
oracle) on SmolLM2's tokenizer.json.

Writes tests/golden/tokenizer_cases.json (ids and decoded text of hand-written edge cases) and
tests/golden/tokenizer_essays.json (for the Paul Graham essays: per line and per whole file only
the token count and a 64-bit FNV-1a hash of the ids as little-endian int32, so that no essay text
or ids enter the repository).

Runs itself inside a venv at ~/.cache/kvtrim/venv (created on first use, never system-wide).
Usage: scripts/oracle/tokenizer_golden.py [--max-lines N]
"""
import argparse
import hashlib
import json
import pathlib
import struct
import sys

from oracle_venv import ensure_venv

TOKENIZERS_VERSION = "0.23.3"
REPO = pathlib.Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data"
TOKENIZER_JSON = DATA / "smollm2" / "tokenizer.json"
ESSAYS = DATA / "pg_essays"
GOLDEN = REPO / "tests" / "golden"



# (name, text, parse_special). parse_special=False means control tokens written in the text are
# tokenized as plain text (HF: encode_special_tokens=True).
CASES = [
    ("empty", "", False),
    ("hello", "Hello world", False),
    ("digits_run", "12345", False),
    ("pi", "3.14159", False),
    ("numbers_in_text", "1,000,000 and 2nd 3rd 42nd in 2024.", False),
    ("spaces_only", "   ", False),
    ("single_space", " ", False),
    ("single_newline", "\n", False),
    ("space_runs", "a  b   c    d     e", False),
    ("tabs", "\t\ttab\tseparated\t", False),
    ("newlines_crlf", "line1\nline2\r\nline3\r", False),
    ("three_newlines", "\n\n\n", False),
    ("leading_spaces", "  leading spaces", False),
    ("trailing_spaces", "trailing spaces   ", False),
    ("space_newline_mix", " \n \n ", False),
    ("mixed_ws_before_word", "     \t  \n  x", False),
    ("paragraphs", "First paragraph.\n\nSecond one, indented:\n    code here\n", False),
    ("accents", "café naïve résumé Ångström Dvořák", False),
    ("cjk", "日本語のテキストと中文，还有한국어", False),
    ("emoji", "emoji 😀👍🏽 👨‍👩‍👧‍👦 🇫🇷!", False),
    ("rtl", "שלום עולם مرحبا بالعالم", False),
    ("combining", "e\u0301 a\u0308 n\u0303 Z\u0351\u0352\u0353", False),
    ("indic_thai", "नमस्ते สวัสดี", False),
    ("math_alnum", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟙𝟚𝟛", False),
    ("fullwidth", "ａｂｃ １２３", False),
    ("unicode_numerics", "½ ² Ⅻ ٣٤٥ ３", False),
    ("contractions", "it's we're they've I'm we'll he'd she's", False),
    ("contractions_upper", "IT'S WE'RE THEY'LL I'M 'LL", False),
    ("quotes", "don't 'quoted' ''double'' \"dq\" ’curly’", False),
    ("code_python", "def f(x):\n    return x**2  # square\n\tpass\n", False),
    ("code_cpp", "int main() { std::vector<int> v{1, 2, 3}; return v[0] != 0; }", False),
    ("url", "https://example.com/path/to?q=1&r=%20x#frag", False),
    ("email", "user.name+tag@example.org", False),
    ("markdown", "**bold** _it_ `code` # Heading\n- item\n> quote", False),
    ("math", "x^2 + y^2 = z^2; ∑_{i=1}^n i = n(n+1)/2", False),
    ("currency", "$100.50 €20 £5 ¥1000", False),
    ("punct_runs", "!!!???...---~~~", False),
    ("camel_digits", "Mixed123Numbers456and7letters", False),
    ("long_word", "supercalifragilisticexpialidocious antidisestablishmentarianism", False),
    ("repeat_a", "a" * 300, False),
    ("repeat_space", " " * 200 + "x", False),
    ("unicode_whitespace", "a\u0085 b\u00a0 c\u3000d\u2028e\u180ef\u200bg\u2009h", False),
    ("control_chars", "\x1c\x1f\x7f bell\x07 nul\x00 end\x01", False),
    ("bytes_not_in_vocab", "a\x04b \x06c!\x16!\x13\x14 d\x1d", False),  # dropped by the oracle
    ("chatml_special", "<|im_start|>user\nhi<|im_end|>\n", True),
    ("chatml_plain", "<|im_start|>user\nhi<|im_end|>\n", False),
    ("eot_twice_special", "<|endoftext|><|endoftext|>", True),
    ("eot_twice_plain", "<|endoftext|><|endoftext|>", False),
    ("special_inside_word", "text<|im_end|>more", True),
    ("special_partial", "<|im_start <|im_end|", True),
    ("special_lookalikes", "<repo_name>x<reponame>y<filename>", True),
    ("special_with_spaces", " <|im_start|> assistant \n", True),
    ("hello_special_flag", "Hello world, 42 times!", True),
]


def fnv1a64(ids):
    h = 0xCBF29CE484222325
    for byte in b"".join(struct.pack("<i", i) for i in ids):
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def dump(path, header, sections):
    """JSON with one row per line, so that diffs of the golden files stay readable."""
    parts = [json.dumps(header, ensure_ascii=True)[1:-1]]
    for key, rows in sections.items():
        body = ",\n".join("  " + json.dumps(r, ensure_ascii=True) for r in rows)
        parts.append(f'"{key}": [\n{body}\n]')
    path.write_text("{" + ",\n".join(parts) + "}\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-lines", type=int, default=4000, help="essay lines hashed one by one")
    args = ap.parse_args()
    ensure_venv(f"tokenizers=={TOKENIZERS_VERSION}")
    import tokenizers

    plain = tokenizers.Tokenizer.from_file(str(TOKENIZER_JSON))
    plain.encode_special_tokens = True
    special = tokenizers.Tokenizer.from_file(str(TOKENIZER_JSON))

    def encode(text, parse_special):
        return (special if parse_special else plain).encode(text, add_special_tokens=False).ids

    header = {
        "oracle": f"tokenizers {tokenizers.__version__}",
        "tokenizer_json_sha256": hashlib.sha256(TOKENIZER_JSON.read_bytes()).hexdigest(),
    }
    GOLDEN.mkdir(parents=True, exist_ok=True)
    cases = []
    for name, text, parse_special in CASES:
        ids = encode(text, parse_special)
        decoded = special.decode(ids, skip_special_tokens=False)
        cases.append({"name": name, "text": text, "parse_special": parse_special, "ids": ids, "decoded": decoded})
    dump(GOLDEN / "tokenizer_cases.json", header, {"cases": cases})

    files = sorted(p for p in ESSAYS.glob("*.txt") if p.name != "REPO_LICENSE.txt")
    lines, whole = [], []
    for f in files:
        text = f.read_bytes().decode("utf-8")
        ids = encode(text, False)
        whole.append({"file": f.name, "n": len(ids), "fnv1a64": fnv1a64(ids)})
        for number, line in enumerate(text.split("\n"), start=1):
            if line and len(lines) < args.max_lines:
                ids = encode(line, False)
                lines.append([f.name, number, len(ids), fnv1a64(ids)])
    header["hash"] = "FNV-1a 64 over the ids as little-endian int32; lines split on \\n, empty ones skipped"
    dump(GOLDEN / "tokenizer_essays.json", header, {"files": whole, "lines": lines})
    print(f"{len(cases)} cases, {len(lines)} essay lines, {len(whole)} essay files, "
          f"{sum(w['n'] for w in whole)} essay tokens")


if __name__ == "__main__":
    main()
