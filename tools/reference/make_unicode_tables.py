"""Writes io/unicode_tables.c: the Unicode data the C CLIP tokenizer needs, taken from the pinned
`tokenizers` library itself wherever it can be asked directly (the regex classes \\p{L}, \\p{N}, \\s
of its Oniguruma engine, and its per-character lowercase), and from Python's unicodedata for the
NFC tables (decomposition, combining class, composition), which the script then checks against
tokenizers' own NFC normalizer on every code point and on combining-mark orderings. Any
disagreement stops the script: the real tokenizer is the judge, not this file.

Run: tools/reference/.venv/bin/python tools/reference/make_unicode_tables.py --out io/unicode_tables.c
"""
import argparse
import sys
import unicodedata

import tokenizers
from tokenizers import Regex, normalizers

MAX_CP = 0x110000


def scalar_values():
    return [c for c in range(MAX_CP) if not 0xD800 <= c < 0xE000]


def regex_class(pattern):
    """Code points matched by a one-character regex, asked of tokenizers' own engine: every code
    point becomes U+0001 when it matches and U+0000 when not, in one call over all of them."""
    cps = scalar_values()
    text = "".join(chr(c) for c in cps)
    norm = normalizers.Sequence([
        normalizers.Replace(Regex("[^" + pattern + "]"), "\x00"),
        normalizers.Replace(Regex(pattern), "\x01"),
    ])
    out = norm.normalize_str(text)
    if len(out) != len(cps):
        sys.exit("regex_class: length mismatch for %s" % pattern)
    return [c for c, f in zip(cps, out) if f == "\x01"]


def to_ranges(cps):
    ranges = []
    for c in sorted(cps):
        if ranges and ranges[-1][1] == c - 1:
            ranges[-1][1] = c
        else:
            ranges.append([c, c])
    return ranges


def lowercase_map():
    low = normalizers.Lowercase()
    single, multi = {}, {}
    for c in scalar_values():
        s = low.normalize_str(chr(c))
        if s == chr(c):
            continue
        if len(s) == 1:
            single[c] = ord(s)
        else:
            multi[c] = [ord(x) for x in s]
    return single, multi


def delta_runs(mapping):
    """Groups cp -> cp + delta into runs (start, count, stride, delta) with stride 1 or 2."""
    keys = sorted(mapping)
    runs, i = [], 0
    while i < len(keys):
        start, delta = keys[i], mapping[keys[i]] - keys[i]
        best = (1, 1)
        for stride in (1, 2):
            n = 1
            while (i + n < len(keys) and keys[i + n] == start + n * stride
                   and mapping[keys[i + n]] - keys[i + n] == delta):
                n += 1
            if n > best[0]:
                best = (n, stride)
        runs.append((start, best[0], best[1], delta))
        i += best[0]
    return runs


def nfc_tables():
    decomp, ccc = {}, {}
    for c in scalar_values():
        ch = chr(c)
        k = unicodedata.combining(ch)
        if k:
            ccc[c] = k
        d = unicodedata.decomposition(ch)
        if d and not d.startswith("<"):
            parts = [int(x, 16) for x in d.split()]
            if len(parts) > 2:
                sys.exit("canonical decomposition longer than 2 at %04X" % c)
            decomp[c] = parts
    # tokenizers' NFC comes from an older Unicode than Python's: drop the classes and
    # decompositions it does not know (both are stable once assigned, so only absence can differ)
    nfd = normalizers.NFD()
    for c in list(ccc):
        ch = chr(c)
        moves = nfd.normalize_str(ch + "\u0334") != ch + "\u0334" or \
            nfd.normalize_str("\u0301" + ch) != "\u0301" + ch
        if ccc[c] == 1:
            moves = nfd.normalize_str("\u0301" + ch) != "\u0301" + ch
        if not moves:
            del ccc[c]
    for c in list(decomp):
        got = nfd.normalize_str(chr(c))
        if got == chr(c):
            del decomp[c]
        elif got != unicodedata.normalize("NFD", chr(c)):
            sys.exit("NFD of %04X differs from unicodedata beyond absence" % c)
    comp = {}
    for c, parts in decomp.items():
        if len(parts) != 2:
            continue
        # Exclusions and non-starter decompositions never recompose: NFC(NFD(c)) != c exactly then.
        if unicodedata.normalize("NFC", unicodedata.normalize("NFD", chr(c))) == chr(c):
            comp[(parts[0], parts[1])] = c
    return decomp, ccc, comp


# ---- a Python mirror of the C algorithm (io/tokenizer.c), used to check the tables ----
SBASE, LBASE, VBASE, TBASE, LCOUNT, VCOUNT, TCOUNT = 0xAC00, 0x1100, 0x1161, 0x11A7, 19, 21, 28
NCOUNT, SCOUNT = VCOUNT * TCOUNT, LCOUNT * VCOUNT * TCOUNT


def mirror_nfc(s, decomp, ccc, comp):
    out = []

    def dec(c):
        if SBASE <= c < SBASE + SCOUNT:
            i = c - SBASE
            out.append(LBASE + i // NCOUNT)
            out.append(VBASE + (i % NCOUNT) // TCOUNT)
            if i % TCOUNT:
                out.append(TBASE + i % TCOUNT)
        elif c in decomp:
            for p in decomp[c]:
                dec(p)
        else:
            out.append(c)

    for ch in s:
        dec(ord(ch))
    # canonical ordering: stable sort of each run of non-starters by class
    i = 0
    while i < len(out):
        if ccc.get(out[i], 0) == 0:
            i += 1
            continue
        j = i
        while j < len(out) and ccc.get(out[j], 0) != 0:
            j += 1
        out[i:j] = sorted(out[i:j], key=lambda c: ccc[c])
        i = j
    # composition (UAX #15): a mark composes with the last starter unless blocked by a
    # character between them of class 0 or of a class not below its own
    if not out:
        return ""
    res = [out[0]]
    starter = 0
    last = 0 if ccc.get(out[0], 0) == 0 else 256
    for c in out[1:]:
        k = ccc.get(c, 0)
        m = mirror_compose(res[starter], c, comp)
        if m is not None and (last < k or last == 0):
            res[starter] = m
            continue
        if k == 0:
            starter = len(res)
        last = k
        res.append(c)
    return "".join(chr(c) for c in res)


def mirror_compose(a, b, comp):
    if LBASE <= a < LBASE + LCOUNT and VBASE <= b < VBASE + VCOUNT:
        return SBASE + ((a - LBASE) * VCOUNT + (b - VBASE)) * TCOUNT
    if SBASE <= a < SBASE + SCOUNT and (a - SBASE) % TCOUNT == 0 and TBASE < b < TBASE + TCOUNT:
        return a + (b - TBASE)
    return comp.get((a, b))


def check_nfc(decomp, ccc, comp):
    nfc = normalizers.NFC()
    checked = 0

    def same(s):
        got = mirror_nfc(s, decomp, ccc, comp)
        want = nfc.normalize_str(s)
        if got != want:
            sys.exit("NFC mismatch for %r: tables give %r, tokenizers %r" % (s, got, want))

    for c in scalar_values():
        same(chr(c))
        checked += 1
    marks = ["\u0334", "\u05b0", "\u0316", "\u0301", "\u0345", "\u0f71", "\u035c", "\u093c",
             "\u0300\u0323", "\u0b3e", "\u1161", "\u11a8"]
    bases = ["", "a", "e", "\u1100", "\uac00", "\u0915", "\u0b47", "\u03b1"]
    special = sorted(set(ccc) | set(decomp) | {b for (_, b) in comp} | {a for (a, _) in comp})
    for c in special:
        for base in bases:
            for m in marks:
                same(base + chr(c) + m)
                same(base + m + chr(c))
                same(base + chr(c) + m + chr(c))
                checked += 3
    for l in range(LBASE - 1, LBASE + LCOUNT + 1):
        for v in range(VBASE - 1, VBASE + VCOUNT + 1):
            for t in ("", chr(TBASE), chr(TBASE + 1), chr(TBASE + 27), chr(TBASE + 28)):
                same(chr(l) + chr(v) + t)
                checked += 1
    return checked


def c_array(name, ctype, rows, per_line):
    lines = ["const %s %s[] = {" % (ctype, name)]
    for i in range(0, len(rows), per_line):
        lines.append("    " + " ".join(rows[i:i + per_line]))
    lines.append("};")
    lines.append("const int %s_len = %d;" % (name, len(rows)))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    letters = to_ranges(regex_class(r"\p{L}"))
    numbers = to_ranges(regex_class(r"\p{N}"))
    spaces = to_ranges(regex_class(r"\s"))
    single, multi = lowercase_map()
    runs = delta_runs(single)
    for c, m in multi.items():
        if len(m) != 2:
            sys.exit("lowercase of %04X has %d code points; the C side handles 2" % (c, len(m)))
    decomp, ccc, comp = nfc_tables()
    checked = check_nfc(decomp, ccc, comp)
    ccc_runs = []
    for c in sorted(ccc):
        if ccc_runs and ccc_runs[-1][1] == c - 1 and ccc_runs[-1][2] == ccc[c]:
            ccc_runs[-1][1] = c
        else:
            ccc_runs.append([c, c, ccc[c]])

    parts = [
        "/* unicode_tables.c: GENERATED by tools/reference/make_unicode_tables.py; do not edit.",
        " * Character classes and lowercase as tokenizers %s (Oniguruma, Rust char::to_lowercase)"
        % tokenizers.__version__,
        " * sees them. NFC tables from Python's Unicode %s, less the combining classes and"
        % unicodedata.unidata_version,
        " * decompositions tokenizers' older NFC data lacks, checked against its NFC normalizer on"
        " %d strings." % checked,
        " * Ranges are sorted and inclusive: {first, last}. */",
        '#include "io/unicode_tables.h"',
        "",
        c_array("k22_uni_letter", "uint32_t", ["0x%X, 0x%X," % tuple(r) for r in letters], 4),
        c_array("k22_uni_number", "uint32_t", ["0x%X, 0x%X," % tuple(r) for r in numbers], 4),
        c_array("k22_uni_space", "uint32_t", ["0x%X, 0x%X," % tuple(r) for r in spaces], 4),
        "/* {first, count, stride, delta}: first + k*stride maps to itself + delta, k < count. */",
        c_array("k22_uni_lower", "int32_t", ["0x%X, %d, %d, %d," % r for r in runs], 3),
        "/* {from, to1, to2}: the lowercase forms of two code points. */",
        c_array("k22_uni_lower2", "uint32_t",
                ["0x%X, 0x%X, 0x%X," % (c, m[0], m[1]) for c, m in sorted(multi.items())], 3),
        "/* {first, last, class}: canonical combining classes (0 elsewhere). */",
        c_array("k22_uni_ccc", "uint32_t", ["0x%X, 0x%X, %d," % tuple(r) for r in ccc_runs], 4),
        "/* {cp, first, second (0: singleton)}: canonical decompositions, one level. */",
        c_array("k22_uni_decomp", "uint32_t",
                ["0x%X, 0x%X, 0x%X," % (c, d[0], d[1] if len(d) > 1 else 0)
                 for c, d in sorted(decomp.items())], 4),
        "/* {first, second, composite}: primary composites, sorted by (first, second). */",
        c_array("k22_uni_comp", "uint32_t",
                ["0x%X, 0x%X, 0x%X," % (a, b, c) for (a, b), c in sorted(comp.items())], 4),
        "",
    ]
    with open(args.out, "w", encoding="utf-8") as f:
        f.write("\n".join(parts))
    print("letters %d ranges, numbers %d, spaces %d, lower runs %d (+%d two-char), ccc runs %d, "
          "decompositions %d, compositions %d; NFC checked on %d strings"
          % (len(letters), len(numbers), len(spaces), len(runs), len(multi), len(ccc_runs),
             len(decomp), len(comp), checked))


if __name__ == "__main__":
    main()
