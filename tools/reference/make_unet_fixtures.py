"""Writes tests/fixtures/unet/: forward output, input gradient and parameter gradients of the
Kandinsky 2.2 decoder UNet (diffusers UNet2DConditionModel, image_proj / image addition
embedding, scale_shift resnets, added-K/V attention), float32 on the CPU, for
tests/model/test_unet.c.

Weights are never stored. Both sides make them with k22's deterministic init:
  tiny: `k22 init decoder --size tiny --seed 0` (the diffusers test-suite dummy config);
  mid:  tests/fixtures/unet/mid/config.json (written here); `test_unet --write-weights CONFIG_DIR
        SEED OUT_DIR` saves the weights this script loads, and the C test makes the same in memory.

Parameter gradients would be megabytes, so each is stored as a sample: tensors of at most
FULL_MAX values in full, larger ones at every stride-th value (stride = ceil(n / SAMPLE_N),
starting at 0), plus three sums over the whole tensor taken in float64: sum g, sum g^2 and
sum g * ((i mod 7) - 3), so a wrong value anywhere moves something compared.

Files (unet.safetensors, tensor names):
  <case>.sample (B,4,H,W), <case>.timestep (B) f32, <case>.image_embeds (B,E), <case>.out (B,8,H,W),
  <case>.dout (B,8,H,W), <case>.dsample (B,4,H,W), <case>.gs.<key> (sampled gradient),
  <case>.gsum.<key> (3,) the sums above; cases: tiny (B 2, 16x16, t [3, 777]), tiny_wide (B 1,
  8x16), mid (B 1, 16x16; 3 blocks, 2 layers per block).

Run: tools/reference/.venv/bin/python tools/reference/make_unet_fixtures.py \
        --k22 build/k22 --unet-test build/test_unet --out tests/fixtures/unet
"""
import argparse
import json
import math
import os
import sys
import tempfile

import torch

import diffusers
from diffusers import UNet2DConditionModel

from make_model_fixtures import versions
from refutil import k22_init, np32, run, save_capped

INIT_SEED_TINY = 0
INIT_SEED_MID = 11
DATA_SEED = 5151
FULL_MAX = 2048
SAMPLE_N = 1024
MAX_TOTAL_BYTES = 4 * 1024 * 1024

MID_UNET = dict(in_channels=4, out_channels=8, addition_embed_type="image",
                down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D",
                                  "SimpleCrossAttnDownBlock2D"),
                up_block_types=("SimpleCrossAttnUpBlock2D", "SimpleCrossAttnUpBlock2D",
                                "ResnetUpsampleBlock2D"),
                mid_block_type="UNetMidBlock2DSimpleCrossAttn", block_out_channels=(64, 128, 192),
                layers_per_block=2, encoder_hid_dim=48, encoder_hid_dim_type="image_proj",
                cross_attention_dim=64, attention_head_dim=32, norm_num_groups=32,
                resnet_time_scale_shift="scale_shift", class_embed_type=None)


def sample_grad(g):
    flat = g.detach().to(torch.float64).reshape(-1)
    n = flat.numel()
    idx = torch.arange(n, dtype=torch.float64)
    sums = torch.stack([flat.sum(), (flat * flat).sum(), (flat * (torch.remainder(idx, 7) - 3)).sum()])
    if n <= FULL_MAX:
        part = flat
    else:
        part = flat[::math.ceil(n / SAMPLE_N)]
    return part.to(torch.float32).numpy().copy(), sums.to(torch.float32).numpy().copy()


def unet_case(model, prefix, B, H, W, t, seed):
    g = torch.Generator().manual_seed(seed)
    cin, E = model.config.in_channels, model.config.encoder_hid_dim
    x = torch.randn(B, cin, H, W, generator=g).requires_grad_(True)
    img = torch.randn(B, E, generator=g)
    tt = torch.tensor(t, dtype=torch.long)
    out = model(x, tt, None, added_cond_kwargs={"image_embeds": img}).sample
    dout = torch.randn(out.shape, generator=g)
    model.zero_grad()
    out.backward(dout)
    res = {prefix + "sample": np32(x), prefix + "timestep": tt.to(torch.float32).numpy(),
           prefix + "image_embeds": np32(img), prefix + "out": np32(out),
           prefix + "dout": np32(dout), prefix + "dsample": np32(x.grad)}
    for k, p in model.named_parameters():
        if p.grad is None:
            sys.exit(f"make_unet_fixtures: {k} got no gradient")
        part, sums = sample_grad(p.grad)
        res[prefix + "gs." + k] = part
        res[prefix + "gsum." + k] = sums
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--k22", required=True, help="path of the k22 binary")
    ap.add_argument("--unet-test", required=True, help="path of the test_unet binary")
    ap.add_argument("--out", default="tests/fixtures/unet")
    a = ap.parse_args()
    torch.manual_seed(DATA_SEED)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(a.out, exist_ok=True)
    mid_cfg = os.path.join(a.out, "mid")
    UNet2DConditionModel(**MID_UNET).save_config(mid_cfg)
    tensors = {}
    with tempfile.TemporaryDirectory() as tmp:
        tiny = os.path.join(tmp, "tiny")
        k22_init(a.k22, "decoder", INIT_SEED_TINY, tiny)
        m = UNet2DConditionModel.from_pretrained(os.path.join(tiny, "unet")).train()
        tensors.update(unet_case(m, "tiny.", 2, 16, 16, [3, 777], DATA_SEED + 1))
        tensors.update(unet_case(m, "tiny_wide.", 1, 8, 16, [500], DATA_SEED + 2))
        mid = os.path.join(tmp, "mid")
        run([a.unet_test, "--write-weights", mid_cfg, str(INIT_SEED_MID), mid])
        m = UNet2DConditionModel.from_pretrained(mid).train()
        tensors.update(unet_case(m, "mid.", 1, 16, 16, [999], DATA_SEED + 3))
    md = {k: str(v) for k, v in versions().items()}
    md.update(init_seed_tiny=str(INIT_SEED_TINY), init_seed_mid=str(INIT_SEED_MID),
              data_seed=str(DATA_SEED), full_max=str(FULL_MAX), sample_n=str(SAMPLE_N),
              mid_config=json.dumps(MID_UNET), generator="tools/reference/make_unet_fixtures.py")
    p = os.path.join(a.out, "unet.safetensors")
    save_capped(tensors, p, md, MAX_TOTAL_BYTES)


if __name__ == "__main__":
    main()
