#!/usr/bin/env python3
"""Builds the golden fixtures of tests/test_tokenizer.c with HF `tokenizers` as the oracle.

    python3 scripts/make_tokenizer_fixture.py [--test-bin BUILD/tests/test_tokenizer]

With --test-bin it first rewrites tests/fixtures/tokenizer_corpus.txt (a deterministic synthetic
corpus, documents separated by 0x1E) and retrains tests/fixtures/tokenizer_golden.json with the C
trainer (`test_tokenizer --train CORPUS 1000 OUT`).  It then loads that tokenizer.json with HF
`tokenizers` (pinned in scripts/requirements-fixtures.txt), encodes a few thousand varied strings and
writes tests/fixtures/tokenizer_golden.bin:

    "SHTK", uint32 version = 1, uint32 n_cases, uint32 vocab_size, then per case
    uint32 flags, uint32 n_bytes, bytes, uint32 n_ids, int32 ids[n_ids]      (little-endian)

flags bit 0: special-token text is split out (HF default; off = `encode_special_tokens = True`);
flags bit 1: the bytes are not valid UTF-8.

HF's Python API takes str, so invalid UTF-8 cannot be fed to it.  Those cases are encoded with
the same pipeline assembled from parts: special tokens cut out leftmost-longest, the Split regex
applied to the raw bytes with Python's `re` (every class in the pattern is ASCII, so matching
bytes is what Oniguruma does on the characters), the GPT-2 byte-to-unicode map, and HF's own
BPE model (`tokenizer.model.tokenize`) for the merges.  That path is checked against the full HF
pipeline on every valid UTF-8 case before it is trusted with the invalid ones.

Everything is seeded, so re-running with the same tokenizer.json gives the same .bin.
"""
import argparse
import json
import os
import random
import re
import struct
import subprocess
import sys

import tokenizers
from tokenizers import Tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
CORPUS = os.path.join(FIXTURES, "tokenizer_corpus.txt")
TOKENIZER = os.path.join(FIXTURES, "tokenizer_golden.json")
GOLDEN = os.path.join(FIXTURES, "tokenizer_golden.bin")
VOCAB_SIZE = 1000
SPECIALS = ["<|pad|>", "<|bos|>", "<|eos|>"]

WORDS = """the of and to in is was for on that with as by at from it his an were are which this be
has or had not but first one their its new after who they have her she two been other when there
all during into school time may years more most only over city some world would where later up
such used many can state about national out known university united then made game team music
film series life people part season also between under while since through however being before
high well include number three both these second group war year work city house water light
search query result relevance judge model train data token score rank item user click page
download review price cheap best free online shop buy shoes running women men size color
don't can't won't it's I'm you're we'll they've she'd isn't aren't wasn't that's let's o'clock
Python JavaScript GitHub iPhone macOS COVID-19 NASA U.S.A. e-mail self-driving state-of-the-art
café naïve résumé Zürich über jalapeño façade São Paulo Москва Київ Ελλάδα 東京 日本語 北京
서울 한국어 Straße ǅemal ﬁnance Ωmega ½ ² ™ € £ ¥ — – … « » “ ” ‘ ’ · • → ∑ √ ∞ ≤ ≥
😀 🎉 👍🏽 ❤️ 🇺🇸 👨‍👩‍👧 🚀 ✨ 🙂""".split()

PUNCT = [".", ",", "!", "?", ";", ":", "...", " -", " (", ")", "\"", "'", "/", " &", " #", "%", "$"]
SPACES = [" ", " ", " ", " ", "  ", "   ", "\t", "\n", "\n\n", " \n", "\r\n", "    ", "\t\t", "\f", "\v"]


def sentence(rng):
    n = rng.randint(3, 18)
    out = []
    for i in range(n):
        r = rng.random()
        if r < 0.08:
            w = str(rng.choice([rng.randint(0, 99), rng.randint(1900, 2030), rng.randint(0, 10**7)]))
        elif r < 0.11:
            w = "%d.%02d" % (rng.randint(0, 999), rng.randint(0, 99))
        else:
            w = rng.choice(WORDS)
            if rng.random() < 0.15:
                w = w.capitalize()
            elif rng.random() < 0.03:
                w = w.upper()
        out.append(w)
        if i + 1 < n:
            out.append(rng.choice(PUNCT) + " " if rng.random() < 0.12 else rng.choice(SPACES))
    return "".join(out) + rng.choice([".", "!", "?", "", "\n"])


def document(rng):
    kind = rng.random()
    if kind < 0.1:  # code-like
        name = rng.choice(WORDS[:40])
        return (f"def {name}(x, y=2):\n    # {sentence(rng)}\n    return x * {rng.randint(0, 99)} + y\n"
                f"\nif __name__ == '__main__':\n\tprint({name}(3))\n")
    if kind < 0.15:  # url / markup
        return (f"<a href=\"https://example.com/{rng.choice(WORDS[:80])}?q={rng.randint(0, 999)}&lang=en\">"
                f"{sentence(rng)}</a>")
    if kind < 0.2:  # a search log line with special tokens (cut out by training)
        return f"<|bos|>{sentence(rng)}<|eos|>"
    return " ".join(sentence(rng) for _ in range(rng.randint(1, 6)))


def write_corpus():
    rng = random.Random(20240601)
    docs = [document(rng) for _ in range(1200)]
    with open(CORPUS, "w", encoding="utf-8", newline="") as f:
        f.write("\x1e".join(docs))


# ---------------------------------------------------------------- test strings

SPECIAL_BITS = ["<|eos|>", "<|pad|>", "<|bos|>", "<|eos|", "<|", "|>", "<|eos|><|eos|>", "<<|bos|>>"]
INVALID = [b"\xff", b"\xfe", b"\xc3", b"\xe6\x97", b"\x80", b"\xbf\xbf", b"\xc0\xaf", b"\xed\xa0\x80",
           b"\xf4\x90\x80\x80", b"\xf0\x9f\x98", b"\xc3\x28", b"\xa0\xa1", b"\xe2\x82"]
CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'", "''", "''s", " 's", "x's",
                "'ll'", "'l", "'v", "'r", "' s", "don't", "y'all", "'tis", "rock'n'roll", "'\n"]
UNICODE_RANGES = [(0x80, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x6FF), (0x900, 0x97F),
                  (0x2000, 0x206F), (0x3000, 0x30FF), (0x4E00, 0x4E80), (0xAC00, 0xAC80),
                  (0xFE00, 0xFEFF), (0x1F300, 0x1F6FF), (0x1F900, 0x1F9FF), (0x10000, 0x1007F)]
UNICODE_SPACES = ["\u00a0", "\u0085", "\u1680", "\u2000", "\u2009", "\u200b", "\u2028", "\u2029",
                  "\u202f", "\u205f", "\u3000", "\ufeff", "\u001c", "\u001f"]


def random_unicode(rng, n):
    out = []
    for _ in range(n):
        lo, hi = rng.choice(UNICODE_RANGES)
        out.append(chr(rng.randint(lo, hi)))
    return "".join(out)


def make_cases():
    """(flags, bytes) pairs: about 3500 varied strings, each with special splitting on, and a
    share also with it off."""
    rng = random.Random(7)
    texts = []
    # hand-picked edge cases
    texts += ["", " ", "  ", "\t", "\n", "a", " a", "a ", "a  b", "a   b", "a\n\nb", "a \n b",
              "  leading", "trailing  ", "\t\tx", "x\t\t", " \t \n", "123", " 123", "1 2  3",
              "3.14159", "1,000,000", "hello world", "Hello World!", "HELLO", "hello!!!", "?!",
              "... ...", "a.b.c", "e-mail", "x_y_z", "__init__", "(parens)", "[]{}", "@#$%^&*",
              "\u00a0x", "x\u3000y", "\u2028", "caf\u00e9", "\u00e9t\u00e9", "na\u00efve", "\U0001F600",
              "\U0001F468\u200d\U0001F469\u200d\U0001F467", "\u0000", "\u007f", "a\u0000b", "\r\n\r\n",
              "\f\v", "x\fy\vz"]
    texts += CONTRACTIONS + [" " + c for c in CONTRACTIONS] + ["a" + c for c in CONTRACTIONS]
    texts += SPECIAL_BITS + ["x" + s + "y" for s in SPECIAL_BITS] + [" " + s + " " for s in SPECIAL_BITS]
    # corpus-like sentences (exercise learned merges)
    crng = random.Random(99)
    texts += [sentence(crng) for _ in range(700)]
    texts += [document(crng) for _ in range(20)]
    # random ASCII
    printable = [chr(c) for c in range(32, 127)]
    for _ in range(400):
        texts.append("".join(rng.choice(printable) for _ in range(rng.randint(1, 40))))
    # whitespace-heavy
    alphabet = [" ", " ", "\t", "\n", "\r", "\v", "\f", "a", "Z", "1", ".", "'", "s"]
    for _ in range(400):
        texts.append("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 30))))
    # unicode
    for _ in range(300):
        parts = [random_unicode(rng, rng.randint(1, 5)), rng.choice(WORDS), rng.choice(SPACES),
                 rng.choice(UNICODE_SPACES), rng.choice(PUNCT), str(rng.randint(0, 999))]
        rng.shuffle(parts)
        texts.append("".join(parts[: rng.randint(2, 6)]))
    # special tokens embedded
    for _ in range(200):
        parts = [sentence(rng)[:20], rng.choice(SPECIAL_BITS), rng.choice(SPACES), rng.choice(SPECIAL_BITS)]
        rng.shuffle(parts)
        texts.append("".join(parts))
    cases = []
    for t in texts:
        b = t.encode("utf-8")
        cases.append((1, b))
        if any(s in t for s in ("<|", "|>")) or rng.random() < 0.1:
            cases.append((0, b))
    # invalid UTF-8
    for _ in range(500):
        parts = [rng.choice(INVALID), rng.choice(WORDS).encode(), rng.choice(SPACES).encode(),
                 bytes(rng.randint(0, 255) for _ in range(rng.randint(1, 6))),
                 rng.choice(SPECIAL_BITS).encode(), rng.choice(CONTRACTIONS).encode()]
        rng.shuffle(parts)
        b = b"".join(parts[: rng.randint(1, 6)])
        if not is_utf8(b):
            cases.append((1 | 2, b))
            if rng.random() < 0.3:
                cases.append((2, b))
    for _ in range(200):
        b = bytes(rng.randint(0, 255) for _ in range(rng.randint(1, 48)))
        if not is_utf8(b):
            cases.append((1 | 2, b))
    return cases


def is_utf8(b):
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


# ---------------------------------------------------------------- the oracle

def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


class Oracle:
    def __init__(self, path):
        self.tok = Tokenizer.from_file(path)
        cfg = json.load(open(path, encoding="utf-8"))
        split = cfg["pre_tokenizer"]["pretokenizers"][0]
        self.regex = re.compile(split["pattern"]["Regex"].encode("ascii"))
        self.specials = sorted(((t["content"].encode(), t["id"]) for t in cfg["added_tokens"]),
                               key=lambda x: -len(x[0]))
        self.b2u = bytes_to_unicode()

    def hf(self, flags, b):
        """The full HF pipeline (valid UTF-8 only)."""
        self.tok.encode_special_tokens = not (flags & 1)
        return self.tok.encode(b.decode("utf-8"), add_special_tokens=False).ids

    def parts(self, flags, b):
        """The same pipeline assembled from parts, for any bytes."""
        ids, pos = [], 0
        while pos <= len(b):
            at, sid, slen = len(b), None, 0
            if flags & 1:
                for i in range(pos, len(b)):
                    for s, id_ in self.specials:  # longest first
                        if b.startswith(s, i):
                            at, sid, slen = i, id_, len(s)
                            break
                    if sid is not None:
                        break
            seg = b[pos:at]
            covered = 0
            for m in self.regex.finditer(seg):
                assert m.start() == covered, "regex left a gap"
                covered = m.end()
                word = "".join(self.b2u[c] for c in m.group(0))
                ids += [t.id for t in self.tok.model.tokenize(word)]
            assert covered == len(seg)
            if sid is None:
                break
            ids.append(sid)
            pos = at + slen
        return ids


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--test-bin", help="test_tokenizer executable: regenerate corpus and tokenizer.json first")
    args = ap.parse_args()
    if args.test_bin:
        write_corpus()
        subprocess.run([args.test_bin, "--train", CORPUS, str(VOCAB_SIZE), TOKENIZER], check=True)
    oracle = Oracle(TOKENIZER)
    vocab_size = oracle.tok.get_vocab_size(with_added_tokens=True)
    cases = make_cases()
    out = [b"SHTK", struct.pack("<III", 1, len(cases), vocab_size)]
    n_invalid = 0
    for flags, b in cases:
        if flags & 2:
            ids = oracle.parts(flags, b)
            n_invalid += 1
        else:
            ids = oracle.hf(flags, b)
            alt = oracle.parts(flags, b)
            if alt != ids:
                sys.exit(f"assembled pipeline disagrees with HF on {b!r}: {alt} vs {ids}")
            text = b.decode("utf-8")
            back = oracle.tok.decode(ids, skip_special_tokens=False)
            if back != text:
                sys.exit(f"HF decode does not round-trip {text!r}: {back!r}")
        out.append(struct.pack("<II", flags, len(b)) + b + struct.pack("<I", len(ids)))
        out.append(struct.pack(f"<{len(ids)}i", *ids))
    with open(GOLDEN, "wb") as f:
        f.write(b"".join(out))
    print(f"{GOLDEN}: {len(cases)} cases ({n_invalid} invalid UTF-8), vocab {vocab_size}, "
          f"tokenizers {tokenizers.__version__}")


if __name__ == "__main__":
    main()
