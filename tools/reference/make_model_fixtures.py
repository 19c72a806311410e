"""Writes tests/fixtures/models/: forward outputs (and, for the prior, every gradient) of the three
models of the prior pipeline, computed by the pinned transformers / diffusers in float32 on the
CPU, for tests/model/test_clip.c and tests/model/test_prior.c.

Weights are never stored here. Both sides make them with k22's deterministic init:
  tiny: `k22 init prior --size tiny --seed 0` writes the pipeline this script loads; the C tests
        rebuild the same tensors with k22_config_preset("tiny") + k22_params_init_random(seed 0).
  mid:  larger configs kept in tests/fixtures/models/mid/<component>/config.json (written here from
        the upstream config classes); `test_clip --write-weights CONFIG_DIR SEED OUT_DIR` (the C test
        binary, which calls k22_params_init_random and k22_component_save) writes the weights this
        script loads, and the C tests call the same init in memory.

Files (tensor names; __metadata__ records seeds, versions and the sizes):
  clip_text.safetensors    tiny.input_ids (3,77) I32, tiny.last_hidden_state, tiny.text_embeds,
                           mid.input_ids (2,77), mid.last_hidden_state, mid.text_embeds
  clip_vision.safetensors  pixel_values (2,3,224,224) F16 (shared by both sizes; the reference ran on
                           the f16-rounded values in f32), tiny.image_embeds, mid.image_embeds
  prior.safetensors        tiny.{hidden_states, timestep, proj_embedding, encoder_hidden_states,
                           attention_mask U8, predicted_image_embedding, dout, dhidden_states,
                           dproj_embedding, dencoder_hidden_states, grad.<state-dict key>},
                           mid.{the same}: 2 layers, so backward crosses blocks

Run: tools/reference/.venv/bin/python tools/reference/make_model_fixtures.py \
        --k22 build/k22 --clip-test build/tests/model/test_clip --out tests/fixtures/models
"""
import argparse
import json
import os
import sys
import tempfile

import numpy as np
import torch

import diffusers
import transformers
from diffusers import PriorTransformer
from transformers import (CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer,
                          CLIPVisionConfig, CLIPVisionModelWithProjection)

from refutil import k22_init, np32, run, save_sorted

INIT_SEED_TINY = 0
INIT_SEED_MID = 7
DATA_SEED = 2222
MAX_TOTAL_BYTES = 3 * 1024 * 1024

CAPTIONS = [
    "a drawing of a green pokemon with red eyes",
    "a cat",  # padded: most of the 77 positions are padding
    ", ".join(["a very long caption about a small red robot walking through a huge city"] * 8),
]  # the last one is truncated to 77 tokens (no EOS-only padding)

MID_TEXT = dict(vocab_size=4096, hidden_size=256, intermediate_size=1024, projection_dim=128,
                num_hidden_layers=4, num_attention_heads=4, max_position_embeddings=77,
                hidden_act="gelu", layer_norm_eps=1e-5, bos_token_id=0, eos_token_id=2,
                pad_token_id=1)  # eos 2: the pre-#24773 argmax pooling path
MID_VISION = dict(hidden_size=128, intermediate_size=512, projection_dim=64, num_hidden_layers=2,
                  num_attention_heads=4, num_channels=3, image_size=224, patch_size=14,
                  hidden_act="gelu", layer_norm_eps=1e-5)
MID_PRIOR = dict(num_attention_heads=4, attention_head_dim=16, num_layers=2, embedding_dim=48,
                 num_embeddings=77, additional_embeddings=4)


def versions():
    return {"torch": torch.__version__, "diffusers": diffusers.__version__,
            "transformers": transformers.__version__, "numpy": np.__version__}


def meta(**kw):
    m = {k: str(v) for k, v in versions().items()}
    m.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in kw.items()})
    return m


def write_mid_configs(out):
    d = os.path.join(out, "mid")
    CLIPTextConfig(**MID_TEXT).save_pretrained(os.path.join(d, "text_encoder"))
    CLIPVisionConfig(**MID_VISION).save_pretrained(os.path.join(d, "image_encoder"))
    PriorTransformer(**MID_PRIOR).save_config(os.path.join(d, "prior"))
    for name in ("text_encoder", "image_encoder"):  # architectures names the class k22 reads
        p = os.path.join(d, name, "config.json")
        cfg = json.load(open(p))
        cfg["architectures"] = ["CLIPTextModelWithProjection" if name == "text_encoder"
                                else "CLIPVisionModelWithProjection"]
        with open(p, "w") as f:
            f.write(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    return d


def clip_text(tiny_dir, mid_dir):
    tok = CLIPTokenizer.from_pretrained(os.path.join(tiny_dir, "tokenizer"))
    enc = tok(CAPTIONS, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    ids, mask = enc.input_ids, enc.attention_mask
    out = {}
    with torch.no_grad():
        m = CLIPTextModelWithProjection.from_pretrained(os.path.join(tiny_dir, "text_encoder")).eval()
        r = m(input_ids=ids)  # as the prior script calls it: no attention_mask
        out.update({"tiny.input_ids": ids.to(torch.int32).numpy(),
                    "tiny.last_hidden_state": np32(r.last_hidden_state),
                    "tiny.text_embeds": np32(r.text_embeds)})
        g = torch.Generator().manual_seed(DATA_SEED)
        mid_ids = torch.stack([torch.randperm(MID_TEXT["vocab_size"], generator=g)[:77]
                               for _ in range(2)])  # distinct ids: argmax has no ties
        m = CLIPTextModelWithProjection.from_pretrained(mid_dir).eval()
        r = m(input_ids=mid_ids)
        out.update({"mid.input_ids": mid_ids.to(torch.int32).numpy(),
                    "mid.last_hidden_state": np32(r.last_hidden_state),
                    "mid.text_embeds": np32(r.text_embeds)})
    return out, ids, mask


def clip_vision(tiny_dir, mid_dir):
    g = torch.Generator().manual_seed(DATA_SEED + 1)
    px = torch.randn(2, 3, 224, 224, generator=g).to(torch.float16)
    out = {"pixel_values": px.numpy()}
    with torch.no_grad():
        for name, d in (("tiny", os.path.join(tiny_dir, "image_encoder")), ("mid", mid_dir)):
            m = CLIPVisionModelWithProjection.from_pretrained(d).eval()
            out[name + ".image_embeds"] = np32(m(pixel_values=px.float()).image_embeds)
    return out


def prior_case(model, prefix, B, ehs, proj, mask, seed, grads):
    g = torch.Generator().manual_seed(seed)
    E = model.config.embedding_dim
    x = torch.randn(B, E, generator=g).requires_grad_(grads)
    t = torch.tensor([0, 500, 999][:B] if B <= 3 else list(range(B)), dtype=torch.long)
    proj = proj.detach().clone().requires_grad_(grads)
    ehs = ehs.detach().clone().requires_grad_(grads)
    pred = model(x, t, proj_embedding=proj, encoder_hidden_states=ehs,
                 attention_mask=mask).predicted_image_embedding
    out = {prefix + "hidden_states": np32(x), prefix + "timestep": t.to(torch.float32).numpy(),
           prefix + "proj_embedding": np32(proj), prefix + "encoder_hidden_states": np32(ehs),
           prefix + "attention_mask": mask.to(torch.uint8).numpy(),
           prefix + "predicted_image_embedding": np32(pred)}
    if not grads:
        return out
    dout = torch.randn(pred.shape, generator=g)
    model.zero_grad()
    pred.backward(dout)
    out[prefix + "dout"] = np32(dout)
    out[prefix + "dhidden_states"] = np32(x.grad)
    out[prefix + "dproj_embedding"] = np32(proj.grad)
    out[prefix + "dencoder_hidden_states"] = np32(ehs.grad)
    for k, p in model.named_parameters():
        if p.grad is not None:
            out[prefix + "grad." + k] = np32(p.grad)
    return out


def prior(tiny_dir, mid_dir, text, ids, mask):
    out = {}
    m = PriorTransformer.from_pretrained(os.path.join(tiny_dir, "prior")).eval()
    out.update(prior_case(m, "tiny.", 3, torch.from_numpy(text["tiny.last_hidden_state"]),
                          torch.from_numpy(text["tiny.text_embeds"]), mask.bool(), DATA_SEED + 2,
                          True))
    m = PriorTransformer.from_pretrained(mid_dir).eval()
    g = torch.Generator().manual_seed(DATA_SEED + 3)
    E = MID_PRIOR["embedding_dim"]
    ehs = torch.randn(2, 77, E, generator=g)
    proj = torch.randn(2, E, generator=g)
    mmask = torch.ones(2, 77, dtype=torch.bool)
    mmask[1, 20:] = False
    out.update(prior_case(m, "mid.", 2, ehs, proj, mmask, DATA_SEED + 4, True))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--k22", required=True, help="path of the k22 binary")
    ap.add_argument("--clip-test", required=True, help="path of the test_clip binary")
    ap.add_argument("--out", default="tests/fixtures/models")
    a = ap.parse_args()
    torch.manual_seed(DATA_SEED)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(a.out, exist_ok=True)
    mid_cfg = write_mid_configs(a.out)
    with tempfile.TemporaryDirectory() as tmp:
        tiny = os.path.join(tmp, "tiny")
        k22_init(a.k22, "prior", INIT_SEED_TINY, tiny)
        mids = {}
        for c in ("text_encoder", "image_encoder", "prior"):
            mids[c] = os.path.join(tmp, "mid", c)
            run([a.clip_test, "--write-weights", os.path.join(mid_cfg, c), str(INIT_SEED_MID),
                 mids[c]])
        text, ids, mask = clip_text(tiny, mids["text_encoder"])
        vision = clip_vision(tiny, mids["image_encoder"])
        pr = prior(tiny, mids["prior"], text, ids, mask)
    common = dict(init_seed_tiny=str(INIT_SEED_TINY), init_seed_mid=str(INIT_SEED_MID),
                  data_seed=str(DATA_SEED), generator="tools/reference/make_model_fixtures.py")
    files = {
        "clip_text.safetensors": (text, meta(**common, captions=CAPTIONS, mid_config=MID_TEXT)),
        "clip_vision.safetensors": (vision, meta(**common, mid_config=MID_VISION)),
        "prior.safetensors": (pr, meta(**common, mid_config=MID_PRIOR,
                                       tiny_timesteps=[0, 500, 999])),
    }
    total = 0
    for name, (tensors, md) in files.items():
        p = os.path.join(a.out, name)
        save_sorted(tensors, p, md)
        total += os.path.getsize(p)
        print(f"make_model_fixtures: {p}: {len(tensors)} tensors, {os.path.getsize(p)} bytes")
    if total > MAX_TOTAL_BYTES:
        sys.exit(f"make_model_fixtures: fixtures total {total} bytes, over {MAX_TOTAL_BYTES}")


if __name__ == "__main__":
    main()
