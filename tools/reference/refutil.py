"""refutil.py: what the fixture generators in tools/reference share: byte-stable safetensors
writing (sorted header), float conversions, and running k22 (its deterministic init) or a C test
binary (its --write-weights) to make the weights both sides load. Import it after putting this
folder on sys.path (the scripts run as `python tools/reference/<script>.py`, which does that)."""
import json
import os
import subprocess
import sys

import numpy as np
import torch
from safetensors.numpy import load_file

DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16", np.dtype(np.int32): "I32",
          np.dtype(np.int64): "I64", np.dtype(np.uint8): "U8"}


def tag():
    """The running script's name without .py, the prefix of its log lines."""
    return os.path.splitext(os.path.basename(sys.argv[0]))[0]


def np32(t):
    return t.detach().to(torch.float32).contiguous().numpy().copy()


def f64bits(xs):
    """float64 values as their bit patterns in int64 (the fixtures store F64 that way)."""
    return np.array(xs, dtype=np.float64).view(np.int64)


def save_sorted(tensors, path, metadata):
    """safetensors with a sorted header, so the same tensors give the same bytes (the library's
    save_file orders __metadata__ by a hash map, differently on every run)."""
    header, blobs, off = {"__metadata__": dict(sorted(metadata.items()))}, [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        raw = a.tobytes()
        header[name] = {"dtype": DTYPES[a.dtype], "shape": list(a.shape),
                        "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little") + h + b"".join(blobs))
    back = load_file(path)  # the library reads what was written, value for value
    assert sorted(back) == sorted(tensors)
    assert all(np.array_equal(back[k], tensors[k]) for k in tensors)


def save_capped(tensors, path, metadata, max_bytes):
    """save_sorted, then stop the run when the file is over max_bytes (fixtures live in git)."""
    save_sorted(tensors, path, metadata)
    size = os.path.getsize(path)
    print(f"{tag()}: {path}: {len(tensors)} tensors, {size} bytes")
    if size > max_bytes:
        sys.exit(f"{tag()}: {path} is {size} bytes, over {max_bytes}")
    return size


def run(argv):
    print(f"{tag()}: " + " ".join(argv), flush=True)
    subprocess.run(argv, check=True)


def k22_init(k22, pipeline, seed, out):
    """`k22 init <pipeline> --size tiny --seed <seed> --out <out>`: the tiny pipeline folder."""
    run([k22, "init", pipeline, "--size", "tiny", "--seed", str(seed), "--out", out])
