"""Writes the safetensors fixtures k22's tests read (tests/fixtures/safetensors/), using the
pinned PyTorch `safetensors` library and diffusers' save_pretrained, and checks files k22 wrote.

  python make_safetensors_fixtures.py            # (re)write the fixtures
  python make_safetensors_fixtures.py --check D  # load every k22-written file in D (written by
                                                 # tests/unit/test_safetensors with K22_ST_KEEP=D)
                                                 # with safetensors and compare values and bytes

Values follow formulas that the C test recomputes (see value() below and tests/unit/test_safetensors.c),
so the fixture needs no separate list of expected numbers.
"""
import json
import os
import struct
import sys

import torch
from safetensors.torch import load_file, save, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "..", "tests", "fixtures", "safetensors")

# Special bit patterns: +-0, smallest/largest subnormal, smallest normal, 1, max, +-inf, NaN.
F16_SPECIAL = [0x0000, 0x8000, 0x0001, 0x03FF, 0x0400, 0x3C00, 0x7BFF, 0x7C00, 0xFC00, 0x7E00, 0xC000]
BF16_SPECIAL = [0x0000, 0x8000, 0x0001, 0x007F, 0x0080, 0x3F80, 0x7F7F, 0x7F80, 0xFF80, 0x7FC0, 0xC000]


def value(i):
    """Exact in f16, bf16 and f32."""
    return ((i * 7) % 23 - 11) / 8.0


def reference_tensors():
    """Every k22 dtype, a 0-d and a zero-size tensor; the C test builds the same set."""
    idx = lambda n: torch.arange(n, dtype=torch.float64)
    t = {}
    t["w.f32"] = torch.tensor([value(i) for i in range(6)], dtype=torch.float32).reshape(2, 3)
    t["w.f16"] = torch.tensor([value(i) for i in range(6)], dtype=torch.float16).reshape(3, 2)
    t["w.bf16"] = torch.tensor([value(i) for i in range(5)], dtype=torch.bfloat16)
    t["w.i64"] = torch.tensor([(i * 37 - 50) * (1 << 40) for i in range(4)], dtype=torch.int64).reshape(2, 2)
    t["w.i32"] = torch.tensor([(i * 37 - 50) * 65536 for i in range(4)], dtype=torch.int32)
    t["w.u8"] = torch.tensor([(i * 37) % 256 for i in range(7)], dtype=torch.uint8)
    t["w.bool"] = torch.tensor([i % 3 == 0 for i in range(5)], dtype=torch.bool)
    t["scalar"] = torch.tensor(1.5, dtype=torch.float32)
    t["empty"] = torch.zeros((0, 3), dtype=torch.float32)
    t["f16.special"] = torch.tensor(F16_SPECIAL, dtype=torch.int32).to(torch.int16).view(torch.float16)
    t["bf16.special"] = torch.tensor(BF16_SPECIAL, dtype=torch.int32).to(torch.int16).view(torch.bfloat16)
    del idx
    return t


# One metadata key, so the reference writer's (hash-map) key order cannot vary and k22's output can
# be compared byte for byte; meta.safetensors carries several keys for the reader.
META = {"format": "pt"}
META_MANY = {"format": "pt", "k22": "fixture", "note": "caf\u00e9 \"quoted\"\n", "": "empty key"}


def write_fixtures():
    os.makedirs(OUT, exist_ok=True)
    save_file(reference_tensors(), os.path.join(OUT, "all_dtypes.safetensors"), metadata=META)
    save_file({}, os.path.join(OUT, "empty.safetensors"))
    save_file({"x": torch.ones(2)}, os.path.join(OUT, "meta.safetensors"), metadata=META_MANY)
    write_sharded()


def write_sharded():
    """A tiny PriorTransformer saved by diffusers with a small max_shard_size; order.txt keeps the
    state-dict order, which the index does not record, so k22 can re-shard the same way."""
    from diffusers import PriorTransformer

    torch.manual_seed(0)
    model = PriorTransformer(num_attention_heads=2, attention_head_dim=4, num_layers=1, embedding_dim=8,
                             num_embeddings=7, additional_embeddings=4)
    d = os.path.join(OUT, "sharded")
    model.save_pretrained(d, max_shard_size=600, safe_serialization=True)
    os.remove(os.path.join(d, "config.json"))
    with open(os.path.join(d, "order.txt"), "w") as f:
        f.write("".join(k + "\n" for k in model.state_dict().keys()))


def check(dirname):
    """Loads what k22 wrote: values equal to the reference set, and the same bytes as save()."""
    ref = reference_tensors()
    bad = 0
    for fn in sorted(os.listdir(dirname)):
        p = os.path.join(dirname, fn)
        if not fn.endswith(".safetensors"):
            continue
        got = load_file(p)
        with open(p, "rb") as f:
            raw = f.read()
        n = struct.unpack("<Q", raw[:8])[0]
        meta = json.loads(raw[8:8 + n]).get("__metadata__")
        for k, v in got.items():
            r = ref.get(k)
            if r is None or r.dtype != v.dtype or r.shape != v.shape or not torch.equal(
                    r.view(torch.uint8) if r.dim() else r.reshape(1).view(torch.uint8),
                    v.view(torch.uint8) if v.dim() else v.reshape(1).view(torch.uint8)):
                print(f"{fn}: tensor {k} differs from the reference")
                bad += 1
        same = save({k: ref[k] for k in got}, metadata=meta) == raw
        print(f"{fn}: {len(got)} tensors load in safetensors with equal values; bytes equal to save(): {same}")
        bad += not same
    return bad


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        sys.exit(1 if check(sys.argv[2]) else 0)
    write_fixtures()
