#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_safetensors (tests/fuzz/corpus/safetensors/): small valid files
of every dtype laid out as the reference writer lays them out, and one file per malformed case the
reader checks. Plain Python (struct, json): no torch needed. Re-running rewrites the same files;
files named crash-* or repro-* (fuzzer findings kept as regressions) are left alone."""
import json
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "safetensors")
SIZES = {"I64": 8, "F32": 4, "I32": 4, "BF16": 2, "F16": 2, "U8": 1, "BOOL": 1}
RANK = {"I64": 6, "F32": 5, "I32": 4, "BF16": 3, "F16": 2, "U8": 1, "BOOL": 0}


def header_bytes(h, pad=True):
    s = h if isinstance(h, bytes) else json.dumps(h, separators=(",", ":"), ensure_ascii=False).encode()
    if pad:
        s += b" " * ((8 - len(s) % 8) % 8)
    return s


def st(h, data=b"", hlen=None, pad=True):
    s = header_bytes(h, pad)
    return struct.pack("<Q", len(s) if hlen is None else hlen) + s + data


def valid(tensors, meta=None):
    """tensors: {name: (dtype, shape)}; data bytes are a counter so values differ."""
    order = sorted(tensors, key=lambda n: (-RANK[tensors[n][0]], n))
    h, off = {}, 0
    if meta is not None:
        h["__metadata__"] = meta
    for n in order:
        dt, shape = tensors[n]
        nb = SIZES[dt]
        for d in shape:
            nb *= d
        h[n] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + nb]}
        off += nb
    data = bytes((i * 37 + 11) % 256 for i in range(off))
    if "BOOL" in [t[0] for t in tensors.values()]:
        data = bytes(b & 1 for b in data)  # bool bytes that torch would write
    return st(h, data)


def t1(dt="F32", shape=(2,), off=(0, 8)):
    return {"a": {"dtype": dt, "shape": list(shape), "data_offsets": list(off)}}


def cases():
    c = {}
    for dt in SIZES:
        c[f"valid-{dt.lower()}"] = valid({"x": (dt, [2, 3]), "y.0": (dt, [1])})
    c["valid-all-dtypes"] = valid({f"t.{dt.lower()}": (dt, [3]) for dt in SIZES}, {"format": "pt"})
    c["valid-scalar-and-empty"] = valid({"s": ("F32", []), "e": ("F16", [0, 4]), "z": ("I64", [0])})
    c["valid-metadata"] = valid({"w": ("BF16", [2, 2])}, {"format": "pt", "k": "v\n\"\u00e9", "": ""})
    c["valid-empty"] = st({})
    c["valid-unpadded"] = st(t1(), b"\0" * 8, pad=False)
    c["valid-escaped-name"] = st(b'{"a\\u00e9\\n\\/":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"\x07")
    c["valid-4d"] = valid({"conv.weight": ("F32", [2, 1, 3, 1]), "conv.bias": ("F32", [2])})
    c["bad-short"] = b"\x10\0\0"
    c["bad-zero-bytes"] = b""
    c["bad-hlen-past-end"] = struct.pack("<Q", 1000) + b"{}"
    c["bad-hlen-huge"] = struct.pack("<Q", 2**63) + b"{}"
    c["bad-truncated"] = valid({"x": ("F32", [4, 4])})[:-5]
    c["bad-not-json"] = st(b'{"a":')
    c["bad-trailing-nul"] = st(b"{}\0", pad=False)
    c["bad-not-object"] = st(b"[1,2,3]")
    c["bad-dtype"] = st(t1(dt="F33"), b"\0" * 8)
    c["bad-dtype-f64"] = st(t1(dt="F64", shape=(1,)), b"\0" * 8)
    c["bad-shape-negative"] = st(t1(shape=(-2,)), b"\0" * 8)
    c["bad-shape-float"] = st(b'{"a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}}', b"\0" * 8)
    c["bad-shape-bytes"] = st(t1(shape=(3,)), b"\0" * 8)
    c["bad-shape-overflow"] = st(t1(shape=(2**32, 2**32, 2**32)), b"\0" * 8)
    c["bad-shape-9d"] = st(t1(shape=(1,) * 9, off=(0, 4)), b"\0" * 4)
    c["bad-offsets-range"] = st(t1(shape=(3,), off=(0, 12)), b"\0" * 8)
    c["bad-offsets-reversed"] = st(t1(shape=(0,), off=(8, 0)), b"\0" * 8)
    c["bad-offsets-triple"] = st(t1(off=(0, 8, 8)), b"\0" * 8)
    two = lambda a, b: {"a": {"dtype": "F32", "shape": [(a[1] - a[0]) // 4], "data_offsets": list(a)},
                        "b": {"dtype": "F32", "shape": [(b[1] - b[0]) // 4], "data_offsets": list(b)}}
    c["bad-overlap"] = st(two((0, 8), (4, 8)), b"\0" * 8)
    c["bad-gap-middle"] = st(two((0, 4), (8, 12)), b"\0" * 12)
    c["bad-gap-start"] = st(t1(shape=(1,), off=(4, 8)), b"\0" * 8)
    c["bad-gap-end"] = st(t1(shape=(1,), off=(0, 4)), b"\0" * 8)
    c["bad-duplicate-key"] = st(b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
                                b'"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"\0")
    c["bad-extra-field"] = st({"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1], "x": 1}}, b"\0")
    c["bad-missing-field"] = st({"a": {"dtype": "U8", "shape": [1]}}, b"\0")
    c["bad-metadata-int"] = st({"__metadata__": {"k": 1}})
    c["bad-metadata-null"] = st({"__metadata__": None})
    c["bad-empty-name"] = st({"": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}, b"\0")
    c["bad-long-name"] = st({"n" * 1025: {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}, b"\0")
    c["bad-utf8"] = st(b'{"\xff":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"\0")
    return c


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, data in cases().items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
    print(f"wrote {len(cases())} files to {OUT}")


if __name__ == "__main__":
    main()
