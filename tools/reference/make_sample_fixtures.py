"""Writes tests/fixtures/sample/sample.safetensors: diffusers' KandinskyV22PriorPipeline and
KandinskyV22Pipeline (0.42.1, float32, CPU) run on the tiny pipelines of `k22 init --size tiny
--seed 0`, with every random draw fed in, for tests/model/test_sample.c.

The initial latents go in through the pipelines' `latents=` argument; the per-step noise of
UnCLIPScheduler.step and DDPMScheduler.step is drawn here with torch.manual_seed(SEED) and handed
to the schedulers by replacing the randn_tensor their modules call (each call is checked to ask
for the shape stored). A step that adds no noise (timestep 0) never calls it; its slice is zero.

Cases (metadata X.* holds each case's settings and prompts):
  a  2 prompts, no negative prompt (negative image embeds = CLIP vision of a zero image),
     prior 4 steps at guidance 4, decoder 3 steps at guidance 4, 32 x 32
  b  the same 2 prompts with negative prompt "low quality, blurry" (diffusers: a list of it
     per prompt), prior 3 steps at guidance 4, decoder 2 steps at guidance 1 (no guidance:
     the variance channels come straight from the UNet), 30 x 36 requested -> 32 x 36
  c  the 2 prompts, 2 images each (the prior's num_images_per_prompt; the decoder gets the 4
     embeddings), prior 2 steps without guidance, decoder 2 steps at guidance 3, 16 x 16

Tensors per case X: X.prior_latents (P,E), X.prior_noise (Kp,P,E), X.decoder_latents (n,4,h,w),
X.decoder_noise (Kd,n,4,h,w), X.image_embeds (n,E), X.negative_embeds (n,E), X.latents (n,4,h,w)
the latents MoVQ decodes, X.pixels (n,H,W,3) output_type "np", X.prior_timesteps /
X.decoder_timesteps (I64).

Scheduler checks, independent of the models:
  ts.<name> (I64): set_timesteps of the configs in TIMESTEP_CASES;
  step.<name>.{model_out,sample,noise,prev} (F32) and .t/.prev_t (I64): one step() on random
  inputs for the configs and step indices in STEP_CASES.

Run: tools/reference/.venv/bin/python tools/reference/make_sample_fixtures.py --k22 build/k22 \
         --out tests/fixtures/sample
"""
import argparse
import os
import tempfile

import numpy as np
import torch

import diffusers
from diffusers import (DDPMScheduler, KandinskyV22Pipeline, KandinskyV22PriorPipeline,
                       UnCLIPScheduler)
from diffusers.schedulers import scheduling_ddpm, scheduling_unclip

from refutil import k22_init, np32, save_capped

SEED = 8022
INIT_SEED = 0
MAX_BYTES = 1 << 20
PROMPTS = ["a red cat on a blue sofa", "A lighthouse at night, oil painting"]

CASES = {
    "a": dict(negative=None, prior_steps=4, prior_guidance=4.0, decoder_steps=3, guidance=4.0,
              height=32, width=32),
    "b": dict(negative="low quality, blurry", prior_steps=3, prior_guidance=4.0, decoder_steps=2,
              guidance=1.0, height=30, width=36),
    "c": dict(negative=None, prior_steps=2, prior_guidance=1.0, decoder_steps=2, guidance=3.0,
              height=16, width=16, num_images=2),
}

DDPM_DECODER = dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=0.00085,
                    beta_end=0.012, prediction_type="epsilon", clip_sample=False, steps_offset=1,
                    variance_type="learned_range", timestep_spacing="leading")
UNCLIP_PRIOR = dict(variance_type="fixed_small_log", prediction_type="sample",
                    num_train_timesteps=1000, clip_sample=True, clip_sample_range=10.0)

# name: (class, config, steps); the C test holds the same table.
TIMESTEP_CASES = {
    "unclip_25": ("unclip", UNCLIP_PRIOR, 25),
    "unclip_7": ("unclip", UNCLIP_PRIOR, 7),
    "ddpm_leading_100": ("ddpm", DDPM_DECODER, 100),
    "ddpm_leading_3": ("ddpm", DDPM_DECODER, 3),
    "ddpm_linspace_7": ("ddpm", dict(DDPM_DECODER, timestep_spacing="linspace"), 7),
    "ddpm_trailing_3": ("ddpm", dict(DDPM_DECODER, timestep_spacing="trailing", steps_offset=0), 3),
    "ddpm_trailing_10": ("ddpm", dict(DDPM_DECODER, timestep_spacing="trailing", steps_offset=0), 10),
}

# name: (class, config, steps, step index, model_out channels, sample channels)
STEP_CASES = {
    "unclip_first": ("unclip", UNCLIP_PRIOR, 5, 0, 16, 16),
    "unclip_last": ("unclip", UNCLIP_PRIOR, 5, 4, 16, 16),
    "unclip_eps": ("unclip", dict(UNCLIP_PRIOR, prediction_type="epsilon", clip_sample=False), 5, 2, 16, 16),
    "ddpm_learned_range_first": ("ddpm", DDPM_DECODER, 4, 0, 8, 4),
    "ddpm_learned_range_last": ("ddpm", DDPM_DECODER, 4, 3, 8, 4),
    "ddpm_fixed_small": ("ddpm", dict(DDPM_DECODER, variance_type="fixed_small", clip_sample=True), 4, 1, 4, 4),
    "ddpm_v_fixed_large": ("ddpm", dict(DDPM_DECODER, variance_type="fixed_large",
                                        prediction_type="v_prediction"), 4, 2, 4, 4),
    "ddpm_sample_small_log": ("ddpm", dict(DDPM_DECODER, variance_type="fixed_small_log",
                                           prediction_type="sample", clip_sample=True,
                                           clip_sample_range=0.5), 4, 1, 4, 4),
}


def make_sched(kind, cfg):
    return UnCLIPScheduler(**cfg) if kind == "unclip" else DDPMScheduler(**cfg)


class FedNoise:
    """Stands in for randn_tensor in the scheduler modules: returns the stored noise of the
    next noisy step, checking the shape asked for."""

    def __init__(self):
        self.queue = []

    def __call__(self, shape, generator=None, device=None, dtype=None, layout=None):
        want = self.queue.pop(0)
        assert tuple(shape) == tuple(want.shape), (shape, want.shape)
        return want.clone().to(dtype=dtype or torch.float32)


FED = FedNoise()
scheduling_unclip.randn_tensor = FED
scheduling_ddpm.randn_tensor = FED


def step_noise(sched, steps, shape, gen):
    """(steps, *shape) noise; zero where the step's timestep is 0 (no draw). Queues the rest."""
    sched.set_timesteps(steps)
    ts = sched.timesteps.tolist()
    out = torch.zeros((len(ts),) + tuple(shape))
    for i, t in enumerate(ts):
        if t > 0:
            out[i] = torch.randn(shape, generator=gen)
            FED.queue.append(out[i])
    return out, torch.tensor(ts, dtype=torch.int64)


def run_case(name, c, prior, decoder, gen):
    out = {}
    m = c.get("num_images", 1)
    prompt = list(PROMPTS)
    neg = [c["negative"]] * len(prompt) if c["negative"] is not None else None
    n = len(prompt) * m
    E = prior.prior.config.embedding_dim
    P = 2 * n if neg else n
    lat0 = torch.randn((P, E), generator=gen)
    pnoise, pts = step_noise(prior.scheduler, c["prior_steps"], (P, E), gen)
    res = prior(prompt=prompt, negative_prompt=neg, num_inference_steps=c["prior_steps"],
                num_images_per_prompt=m,
                guidance_scale=c["prior_guidance"], latents=lat0.clone(), output_type="pt")
    assert not FED.queue, "prior: unused noise"
    img, negemb = res.image_embeds, res.negative_image_embeds
    f = 2 ** (len(decoder.movq.config.block_out_channels) - 1)
    h = -(-c["height"] // (f * f)) * f
    w = -(-c["width"] // (f * f)) * f
    dlat0 = torch.randn((n, 4, h, w), generator=gen)
    dnoise, dts = step_noise(decoder.scheduler, c["decoder_steps"], (n, 4, h, w), gen)
    seen = {}
    orig = decoder.movq.decode

    def decode(z, *a, **k):
        seen["latents"] = z.detach().clone()
        return orig(z, *a, **k)

    decoder.movq.decode = decode
    pix = decoder(image_embeds=img, negative_image_embeds=negemb, height=c["height"],
                  width=c["width"], num_inference_steps=c["decoder_steps"],
                  guidance_scale=c["guidance"], latents=dlat0.clone(), output_type="np").images
    decoder.movq.decode = orig
    assert not FED.queue, "decoder: unused noise"
    out.update({f"{name}.prior_latents": np32(lat0), f"{name}.prior_noise": np32(pnoise),
                f"{name}.decoder_latents": np32(dlat0), f"{name}.decoder_noise": np32(dnoise),
                f"{name}.image_embeds": np32(img), f"{name}.negative_embeds": np32(negemb),
                f"{name}.latents": np32(seen["latents"]),
                f"{name}.pixels": np.ascontiguousarray(pix.astype(np.float32)),
                f"{name}.prior_timesteps": pts.numpy(), f"{name}.decoder_timesteps": dts.numpy()})
    meta = {f"{name}.prompt.{i}": p for i, p in enumerate(prompt)}
    meta[f"{name}.n_prompts"] = str(len(prompt))
    meta[f"{name}.num_images"] = str(m)
    if c["negative"] is not None:
        meta[f"{name}.negative"] = c["negative"]
    for k in ("prior_steps", "decoder_steps", "height", "width"):
        meta[f"{name}.{k}"] = str(c[k])
    for k in ("prior_guidance", "guidance"):
        meta[f"{name}.{k}"] = repr(c[k])
    return out, meta


def timestep_cases():
    out = {}
    for name, (kind, cfg, steps) in TIMESTEP_CASES.items():
        s = make_sched(kind, cfg)
        s.set_timesteps(steps)
        out[f"ts.{name}"] = s.timesteps.to(torch.int64).numpy().copy()
    return out


def step_cases(gen):
    out = {}
    for name, (kind, cfg, steps, i, oc, c) in STEP_CASES.items():
        s = make_sched(kind, cfg)
        s.set_timesteps(steps)
        ts = s.timesteps
        t = int(ts[i])
        shape = (2, c, 3, 3) if kind == "ddpm" else (3, c)
        mshape = (2, oc, 3, 3) if kind == "ddpm" else (3, oc)
        mo = torch.randn(mshape, generator=gen)
        if kind == "ddpm" and oc == 2 * c:  # predicted variance in [-1, 1] as a trained UNet's
            mo[:, c:] = torch.rand((2, c, 3, 3), generator=gen) * 2 - 1
        x = torch.randn(shape, generator=gen)
        nz = torch.randn(shape, generator=gen) if t > 0 else torch.zeros(shape)
        if t > 0:
            FED.queue.append(nz)
        if kind == "unclip":
            prev_t = int(ts[i + 1]) if i + 1 < len(ts) else None
            prev = s.step(mo, t, x, prev_timestep=None if prev_t is None else ts[i + 1]).prev_sample
        else:
            prev = s.step(mo, ts[i], x).prev_sample
        assert not FED.queue
        out.update({f"step.{name}.model_out": np32(mo), f"step.{name}.sample": np32(x),
                    f"step.{name}.noise": np32(nz), f"step.{name}.prev": np32(prev)})
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--k22", required=True, help="path of the k22 binary")
    ap.add_argument("--out", default="tests/fixtures/sample")
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(a.out, exist_ok=True)
    gen = torch.Generator().manual_seed(SEED)
    tensors, meta = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        k22_init(a.k22, "prior", INIT_SEED, os.path.join(tmp, "prior"))
        k22_init(a.k22, "decoder", INIT_SEED, os.path.join(tmp, "decoder"))
        prior = KandinskyV22PriorPipeline.from_pretrained(os.path.join(tmp, "prior"))
        decoder = KandinskyV22Pipeline.from_pretrained(os.path.join(tmp, "decoder"))
        prior.set_progress_bar_config(disable=True)
        decoder.set_progress_bar_config(disable=True)
        for name, c in CASES.items():
            t, m = run_case(name, c, prior, decoder, gen)
            tensors.update(t)
            meta.update(m)
    tensors.update(timestep_cases())
    tensors.update(step_cases(gen))
    meta.update({"torch": torch.__version__, "diffusers": diffusers.__version__,
                 "seed": str(SEED), "init_seed": str(INIT_SEED)})
    save_capped(tensors, os.path.join(a.out, "sample.safetensors"), meta, MAX_BYTES)


if __name__ == "__main__":
    main()
