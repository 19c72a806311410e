"""Writes tests/fixtures/movq/: MoVQ (diffusers VQModel, norm_type "spatial") encode and decode
outputs computed by the pinned diffusers in float32 on the CPU, for tests/model/test_movq.c.

encode is VQModel.encode(x).latents (= quant_conv(encoder(x))); decode is what the Kandinsky 2.2
pipelines call, VQModel.decode(latents, force_not_quantize=True).sample: with
lookup_from_codebook false that bypasses the codebook, so the decoder sees the latents as given.

Weights are never stored here. Both sides make them with k22's deterministic init:
  tiny: `k22 init decoder --size tiny --seed 0` writes the pipeline this script loads (its movq/);
        the C test rebuilds the same tensors with k22_config_preset("tiny") +
        k22_params_init_random(seed 0).
  full: the published Kandinsky 2.2 MoVQ config (67.8M parameters), kept as
        tests/fixtures/movq/full/config.json (written here from diffusers' VQModel);
        `model_test_movq --write-weights CONFIG_DIR SEED OUT_DIR` (the C test binary) writes the
        weights this script loads, and the C test makes the same in memory.

movq.safetensors (tensor names; __metadata__ records seeds, versions, shapes):
  tiny.x (2,3,32,32) in [-1,1], tiny.latents (2,4,16,16), tiny.image (2,3,32,32)
  tall.x (1,3,48,32), tall.latents (1,4,24,16), tall.image (1,3,48,32)      non-square, tiny weights
  full.x (1,3,64,64), full.latents (1,4,8,8), full.image (1,3,64,64)        full config, seed 0

Run: tools/reference/.venv/bin/python tools/reference/make_movq_fixtures.py \
        --k22 build/k22 --movq-test build/model_test_movq --out tests/fixtures/movq
"""
import argparse
import os
import tempfile

import torch

import diffusers
from diffusers import VQModel

from refutil import k22_init, np32, run, save_capped

INIT_SEED_TINY = 0
INIT_SEED_FULL = 0
DATA_SEED = 5151
MAX_TOTAL_BYTES = 1024 * 1024

FULL_MOVQ = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
                 block_out_channels=[128, 256, 256, 512],
                 down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D",
                                   "DownEncoderBlock2D", "AttnDownEncoderBlock2D"],
                 up_block_types=["AttnUpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D",
                                 "UpDecoderBlock2D"],
                 norm_num_groups=32, norm_type="spatial", num_vq_embeddings=16384,
                 vq_embed_dim=4)


def case(model, prefix, shape, gen):
    x = torch.rand(shape, generator=gen) * 2 - 1  # images live in [-1, 1]
    with torch.no_grad():
        lat = model.encode(x).latents
        img = model.decode(lat, force_not_quantize=True).sample
    print(f"make_movq_fixtures: {prefix} x {tuple(x.shape)} latents {tuple(lat.shape)} "
          f"(max|.| {lat.abs().max():.3g}) image {tuple(img.shape)} (max|.| {img.abs().max():.3g})")
    return {prefix + ".x": np32(x), prefix + ".latents": np32(lat), prefix + ".image": np32(img)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--k22", required=True, help="path of the k22 binary")
    ap.add_argument("--movq-test", required=True, help="path of the model_test_movq binary")
    ap.add_argument("--out", default="tests/fixtures/movq")
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    full_cfg = os.path.join(a.out, "full")
    os.makedirs(full_cfg, exist_ok=True)
    VQModel(**FULL_MOVQ).save_config(full_cfg)
    gen = torch.Generator().manual_seed(DATA_SEED)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        tiny = os.path.join(tmp, "tiny")
        k22_init(a.k22, "decoder", INIT_SEED_TINY, tiny)
        m = VQModel.from_pretrained(os.path.join(tiny, "movq")).eval()
        out.update(case(m, "tiny", (2, 3, 32, 32), gen))
        out.update(case(m, "tall", (1, 3, 48, 32), gen))
        full = os.path.join(tmp, "full")
        run([a.movq_test, "--write-weights", full_cfg, str(INIT_SEED_FULL), full])
        m = VQModel.from_pretrained(full).eval()
        print(f"make_movq_fixtures: full movq {sum(p.numel() for p in m.parameters())} parameters")
        out.update(case(m, "full", (1, 3, 64, 64), gen))
    md = {"torch": torch.__version__, "diffusers": diffusers.__version__,
          "init_seed_tiny": str(INIT_SEED_TINY), "init_seed_full": str(INIT_SEED_FULL),
          "data_seed": str(DATA_SEED), "decode": "force_not_quantize=True",
          "generator": "tools/reference/make_movq_fixtures.py"}
    p = os.path.join(a.out, "movq.safetensors")
    save_capped(out, p, md, MAX_TOTAL_BYTES)


if __name__ == "__main__":
    main()
