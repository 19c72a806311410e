#!/usr/bin/env python3
"""make_flops_fixtures.py: writes tests/fixtures/flops/flops.json, torch's count of the forward
FLOPs of diffusers' PriorTransformer and UNet2DConditionModel for the tiny and full configs in
tests/fixtures/configs, at a few batch and latent sizes. tests/unit/test_flops.c holds k22's
count from the same config.json (src/model/flops.c) to these numbers.

torch.utils.flop_counter.FlopCounterMode counts 2 FLOPs per multiply-add of matrix products only
(addmm/mm: linear layers; convolution; bmm or the SDPA kernels: attention) and nothing else;
the models are built and run on the meta device, so no weights or values exist and the full
sizes take seconds. Each case records the count split by kind (linear, conv, attn).

Run from the repository root:  tools/reference/.venv/bin/python tools/reference/make_flops_fixtures.py
"""
import json
import os

import diffusers
import torch
from diffusers import PriorTransformer, UNet2DConditionModel
from torch.utils.flop_counter import FlopCounterMode

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
CONFIGS = os.path.join(ROOT, "tests", "fixtures", "configs")
OUT = os.path.join(ROOT, "tests", "fixtures", "flops")

# (model, size, batch, latent height, latent width); the prior has no latent size
CASES = [("prior", "tiny", 1, 0, 0), ("prior", "tiny", 3, 0, 0), ("prior", "full", 1, 0, 0),
         ("prior", "full", 8, 0, 0), ("unet", "tiny", 2, 16, 16), ("unet", "tiny", 1, 8, 12),
         ("unet", "full", 1, 96, 96), ("unet", "full", 2, 64, 32)]


def kind(op):
    name = str(op)
    if "convolution" in name:
        return "conv"
    if name in ("aten.addmm", "aten.mm"):
        return "linear"
    return "attn"  # bmm / baddbmm / the SDPA kernels: attention's two products


def build(model, size):
    with open(os.path.join(CONFIGS, size, model, "config.json")) as f:
        cfg = json.load(f)
    cls = PriorTransformer if model == "prior" else UNet2DConditionModel
    with torch.device("meta"):
        return cls.from_config(cfg).eval()


def forward(m, model, B, H, W):
    c = m.config
    with torch.device("meta"):
        t = torch.arange(B)
        if model == "prior":
            E, L = c.embedding_dim, c.num_embeddings
            m(hidden_states=torch.empty(B, E), timestep=t,
              proj_embedding=torch.empty(B, c.embedding_proj_dim or E),
              encoder_hidden_states=torch.empty(B, L, E),
              attention_mask=torch.ones(B, L, dtype=torch.bool))
        else:
            m(torch.empty(B, c.in_channels, H, W), t, None,
              added_cond_kwargs={"image_embeds": torch.empty(B, c.encoder_hid_dim)})


def count(model, size, B, H, W):
    m = build(model, size)
    fc = FlopCounterMode(display=False)
    with fc, torch.no_grad():
        forward(m, model, B, H, W)
    r = {"model": model, "size": size, "batch": B, "height": H, "width": W,
         "linear": 0, "conv": 0, "attn": 0}
    for op, n in fc.get_flop_counts()["Global"].items():
        r[kind(op)] += int(n)
    r["total"] = r["linear"] + r["conv"] + r["attn"]
    assert r["total"] == fc.get_total_flops()
    return r


def main():
    os.makedirs(OUT, exist_ok=True)
    doc = {"generator": "tools/reference/make_flops_fixtures.py", "torch": torch.__version__,
           "diffusers": diffusers.__version__,
           "rule": "FlopCounterMode: 2 per multiply-add of addmm/mm (linear), convolution (conv), "
                   "bmm/SDPA (attn); nothing else counted",
           "cases": [count(*c) for c in CASES]}
    with open(os.path.join(OUT, "flops.json"), "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    for c in doc["cases"]:
        print(f"{c['model']:5s} {c['size']:4s} B={c['batch']} {c['height']}x{c['width']}: "
              f"{c['total'] / 1e9:.3f} GFLOP forward")


if __name__ == "__main__":
    main()
