#!/usr/bin/env python3
"""make_param_fixtures.py: writes tests/fixtures/configs/<size>/<component>/{config.json,keys.json}.

config.json is written by the library itself (diffusers save_config / transformers
to_json_file with the fields save_pretrained adds), so k22's config reader is tested against the
real files. keys.json lists the state dict as [[key, [shape...]], ...] in state-dict order plus
the element count, so k22's parameter tables are checked for names, shapes and order. Models are
built on the meta device: no weights are made, and the full sizes take seconds.

Run from the repository root:  tools/reference/.venv/bin/python tools/reference/make_param_fixtures.py
"""
import json
import os
import sys
import tempfile

import torch
from diffusers import (DDIMScheduler, DDPMScheduler, PriorTransformer, UnCLIPScheduler,
                       UNet2DConditionModel, VQModel)
from transformers import (CLIPTextConfig, CLIPTextModelWithProjection, CLIPVisionConfig,
                          CLIPVisionModelWithProjection)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "configs")

UNET_BLOCKS = dict(
    addition_embed_type="image", encoder_hid_dim_type="image_proj",
    mid_block_type="UNetMidBlock2DSimpleCrossAttn", resnet_time_scale_shift="scale_shift",
    class_embed_type=None, in_channels=4, out_channels=8)


def prior(size):
    if size == "tiny":  # tests/pipelines/kandinsky2_2/test_kandinsky_prior.py
        return PriorTransformer(num_attention_heads=2, attention_head_dim=12, embedding_dim=32,
                                num_layers=1)
    return PriorTransformer(num_attention_heads=32, attention_head_dim=64, num_layers=20,
                            embedding_dim=1280)


def unet(size):
    if size == "tiny":  # tests/pipelines/kandinsky2_2/test_kandinsky.py
        return UNet2DConditionModel(
            down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
            up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
            block_out_channels=(32, 64), layers_per_block=1, encoder_hid_dim=32,
            cross_attention_dim=32, attention_head_dim=4, **UNET_BLOCKS)
    return UNet2DConditionModel(
        sample_size=64,
        down_block_types=("ResnetDownsampleBlock2D",) + ("SimpleCrossAttnDownBlock2D",) * 3,
        up_block_types=("SimpleCrossAttnUpBlock2D",) * 3 + ("ResnetUpsampleBlock2D",),
        block_out_channels=(384, 768, 1152, 1536), layers_per_block=3, encoder_hid_dim=1280,
        cross_attention_dim=768, attention_head_dim=64, **UNET_BLOCKS)


def movq(size):
    if size == "tiny":
        return VQModel(block_out_channels=[32, 64],
                       down_block_types=["DownEncoderBlock2D", "AttnDownEncoderBlock2D"],
                       in_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8,
                       norm_type="spatial", num_vq_embeddings=12, out_channels=3,
                       up_block_types=["AttnUpDecoderBlock2D", "UpDecoderBlock2D"], vq_embed_dim=4)
    return VQModel(block_out_channels=[128, 256, 256, 512],
                   down_block_types=["DownEncoderBlock2D"] * 3 + ["AttnDownEncoderBlock2D"],
                   in_channels=3, latent_channels=4, layers_per_block=2, norm_type="spatial",
                   num_vq_embeddings=16384, out_channels=3,
                   up_block_types=["AttnUpDecoderBlock2D"] + ["UpDecoderBlock2D"] * 3,
                   vq_embed_dim=4)


def clip_text(size):
    common = dict(vocab_size=49408, max_position_embeddings=77, bos_token_id=49406,
                  eos_token_id=49407, pad_token_id=49407, layer_norm_eps=1e-5)
    if size == "tiny":
        cfg = CLIPTextConfig(hidden_size=32, projection_dim=32, intermediate_size=37,
                             num_attention_heads=4, num_hidden_layers=5, hidden_act="quick_gelu",
                             **common)
    else:
        cfg = CLIPTextConfig(hidden_size=1280, projection_dim=1280, intermediate_size=5120,
                             num_attention_heads=20, num_hidden_layers=32, hidden_act="gelu",
                             **common)
    return CLIPTextModelWithProjection(cfg)


def clip_vision(size):
    if size == "tiny":
        cfg = CLIPVisionConfig(hidden_size=32, image_size=224, projection_dim=32,
                               intermediate_size=37, num_attention_heads=4, num_channels=3,
                               num_hidden_layers=5, patch_size=14, hidden_act="quick_gelu")
    else:
        cfg = CLIPVisionConfig(hidden_size=1664, image_size=224, projection_dim=1280,
                               intermediate_size=8192, num_attention_heads=16, num_channels=3,
                               num_hidden_layers=48, patch_size=14, hidden_act="gelu",
                               layer_norm_eps=1e-5)
    return CLIPVisionModelWithProjection(cfg)


MODELS = {"prior": prior, "unet": unet, "movq": movq, "text_encoder": clip_text,
          "image_encoder": clip_vision}


def write_config(model, folder):
    if hasattr(model, "save_config"):  # diffusers
        model.save_config(folder)
        return
    # What transformers' save_pretrained adds before writing the config.
    model.config.architectures = [model.__class__.__name__]
    model.config.dtype = torch.float32
    model.config.to_json_file(os.path.join(folder, "config.json"))


def write_keys(model, folder):
    sd = model.state_dict()
    keys = [[k, list(v.shape)] for k, v in sd.items()]
    total = sum(v.numel() for v in sd.values())
    nparams = sum(p.numel() for p in model.parameters())
    with open(os.path.join(folder, "keys.json"), "w") as f:
        json.dump({"class": model.__class__.__name__, "numel": total, "parameters": nparams,
                   "keys": keys}, f, indent=1)
        f.write("\n")
    return total


def check_transformers_layout(build, folder):
    """The tiny text model is small enough to save for real: its config must match ours."""
    model = build("tiny")
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        real = open(os.path.join(d, "config.json")).read()
    ours = open(os.path.join(folder, "config.json")).read()
    if real != ours:
        sys.exit(f"{folder}: config.json differs from what save_pretrained writes")


def main():
    for size in ("tiny", "full"):
        for name, build in MODELS.items():
            folder = os.path.join(OUT, size, name)
            os.makedirs(folder, exist_ok=True)
            with torch.device("meta"):
                model = build(size)
            write_config(model, folder)
            total = write_keys(model, folder)
            if size == "tiny" and name in ("text_encoder", "image_encoder"):
                check_transformers_layout(build, folder)
            print(f"{size}/{name}: {total / 1e6:.2f}M")
    scheds = {
        "prior": UnCLIPScheduler(variance_type="fixed_small_log", prediction_type="sample",
                                 num_train_timesteps=1000, clip_sample=True,
                                 clip_sample_range=10.0),
        "decoder_ddim": DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear",
                                      beta_start=0.00085, beta_end=0.012, clip_sample=False,
                                      set_alpha_to_one=False, steps_offset=1,
                                      prediction_type="epsilon", thresholding=False),
        "decoder": DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear",
                                 beta_start=0.00085, beta_end=0.012, prediction_type="epsilon",
                                 clip_sample=False, steps_offset=1, thresholding=False,
                                 variance_type="learned_range"),
        "prior_train": DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="sample"),
    }
    for name, s in scheds.items():
        folder = os.path.join(OUT, "scheduler", name)
        os.makedirs(folder, exist_ok=True)
        s.save_config(folder)


if __name__ == "__main__":
    main()
