"""Writes tests/fixtures/decoder_train/steps.safetensors: ten optimizer steps of the decoder training
loop of diffusers' examples/kandinsky2_2/text_to_image/train_text_to_image_decoder.py, run by the
pinned torch / diffusers / accelerate in float32 on the CPU, for tests/train/test_decoder_step.c.

The loop below is the script's (reference-math.md section 2) with the parts k22 does elsewhere
taken out: the frozen MoVQ encoder and CLIP image encoder are replaced by fixed random latents and
image_embeds (the encoders have their own tests), and the torch random draws by noise and
timesteps stored here, which the C test feeds in. Everything else is the script's own objects:
Accelerator(gradient_accumulation_steps) with accumulate(), backward() (dividing the loss by the
accumulation steps), clip_grad_norm_, the prepared AdamW and LR scheduler, DDPMScheduler from the
decoder folder's scheduler config, compute_snr and EMAModel. The UNet's output is cut to its first
4 channels and the target is always the noise, as in the script.

Model: the UNet of `k22 init decoder --size tiny --seed 0` (884,456 parameters) at 16x16 latents.

Configurations (10 optimizer steps each, micro-batch 2 drawn from 4 samples):
  a  defaults: lr 1e-4 constant, accumulation 1, max_grad_norm 1.0
  b  --snr_gamma 5 --gradient_accumulation_steps 2 --max_grad_norm 0.5 --lr_scheduler cosine
     --lr_warmup_steps 2
  c  --use_ema
  d  scheduler prediction_type v_prediction, --snr_gamma 5 (the script: target noise,
     weight min(snr, 5) / (snr + 1))
  e  as d with k22's correct_v_target (NOT the script): target get_velocity(latents, noise, t)

Weights are 3.5 MB a set, so the final weights (and the EMA shadow of c) are stored per tensor as
a sample (tensors of at most FULL_MAX values in full, larger ones at every ceil(n / SAMPLE_N)-th
value from 0) plus three float64 sums over the update u = final - initial of the whole tensor:
sum u, sum u^2 and sum u * ((i mod 7) - 3).

Tensors: data.latents (4,4,16,16), data.image_embeds (4,E); per configuration X: X.index (S*A,2)
I64 sample rows of each micro-batch, X.noise (S*A,2,4,16,16), X.timesteps (S*A,2) I64, X.loss (S)
the logged train_loss and X.lr (S) the lr each step used (float64 bit patterns in I64),
X.grad_norm (S) F32, X.final.<key> / X.usum.<key> (3) F64 bits in I64, c.ema.<key> /
c.emausum.<key>; velocity.t (4) I64, velocity.noise (4,4,16,16), velocity.v (4,4,16,16):
diffusers' get_velocity(data.latents, velocity.noise, velocity.t) under the v_prediction config,
with velocity.sqrt_a / velocity.sqrt_1ma (4) the square roots torch took (its CPU sqrt may differ
from sqrtf by 1 ulp; the C test substitutes them to check the rest bit for bit).

Run: tools/reference/.venv/bin/python tools/reference/decoder_train_ref.py --k22 build/k22 \
         --out tests/fixtures/decoder_train
"""
import argparse
import json
import math
import os
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

import accelerate
import diffusers
from accelerate import Accelerator
from diffusers import DDPMScheduler, UNet2DConditionModel
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel, compute_snr

from refutil import f64bits, k22_init, np32, save_capped

INIT_SEED = 0
DATA_SEED = 5151
N_SAMPLES = 4
BATCH = 2
STEPS = 10
H = W = 16
FULL_MAX = 64
SAMPLE_N = 64

CONFIGS = {
    "a": dict(snr_gamma=None, accum=1, max_grad_norm=1.0, lr_scheduler="constant", warmup=500,
              use_ema=False, pred="epsilon", v_target=False),
    "b": dict(snr_gamma=5.0, accum=2, max_grad_norm=0.5, lr_scheduler="cosine", warmup=2,
              use_ema=False, pred="epsilon", v_target=False),
    "c": dict(snr_gamma=None, accum=1, max_grad_norm=1.0, lr_scheduler="constant", warmup=500,
              use_ema=True, pred="epsilon", v_target=False),
    "d": dict(snr_gamma=5.0, accum=1, max_grad_norm=1.0, lr_scheduler="constant", warmup=500,
              use_ema=False, pred="v_prediction", v_target=False),
    "e": dict(snr_gamma=5.0, accum=1, max_grad_norm=1.0, lr_scheduler="constant", warmup=500,
              use_ema=False, pred="v_prediction", v_target=True),
}
LR, BETAS, WD, EPS = 1e-4, (0.9, 0.999), 0.0, 1e-8
MAX_BYTES = 2 * 1024 * 1024

def weight_summary(final, init):
    """(sample of final, the three float64 sums of final - init as I64 bits)."""
    flat = final.detach().to(torch.float64).reshape(-1)
    u = flat - init.detach().to(torch.float64).reshape(-1)
    n = flat.numel()
    idx = torch.arange(n, dtype=torch.float64)
    sums = [u.sum().item(), (u * u).sum().item(), (u * (torch.remainder(idx, 7) - 3)).sum().item()]
    part = flat if n <= FULL_MAX else flat[::math.ceil(n / SAMPLE_N)]
    return part.to(torch.float32).numpy().copy(), f64bits(sums)


def make_data(E):
    g = torch.Generator().manual_seed(DATA_SEED)
    return {"latents": torch.randn(N_SAMPLES, 4, H, W, generator=g) * 0.8 + 0.1,
            "image_embeds": torch.randn(N_SAMPLES, E, generator=g) * 2}


def draws(name, accum):
    """The micro-batches' sample rows (a fresh permutation per epoch), noise and timesteps."""
    g = torch.Generator().manual_seed(DATA_SEED + 1 + ord(name))
    n = STEPS * accum
    rows = []
    while len(rows) < n * BATCH:
        rows += torch.randperm(N_SAMPLES, generator=g).tolist()
    index = torch.tensor(rows[:n * BATCH], dtype=torch.int64).view(n, BATCH)
    noise = torch.randn(n, BATCH, 4, H, W, generator=g)
    t = torch.randint(0, 1000, (n, BATCH), generator=g, dtype=torch.int64)
    t[0] = torch.tensor([0, 999])  # both ends of the schedule in the first micro-batch
    return index, noise, t


def train(name, cfg, unet_dir, sched_config, data):
    """The script's loop (D:767-858) on the fixed draws. Returns the fixture tensors."""
    A = cfg["accum"]
    acc = Accelerator(gradient_accumulation_steps=A, cpu=True)
    noise_scheduler = DDPMScheduler.from_config(dict(sched_config, prediction_type=cfg["pred"]))
    unet = UNet2DConditionModel.from_pretrained(unet_dir)
    init = {k: v.detach().clone() for k, v in unet.state_dict().items()}
    ema_unet = None
    if cfg["use_ema"]:
        ema_unet = UNet2DConditionModel.from_pretrained(unet_dir)
        ema_unet = EMAModel(ema_unet.parameters(), model_cls=UNet2DConditionModel,
                            model_config=ema_unet.config)
    unet.train()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=LR, betas=BETAS, weight_decay=WD, eps=EPS)
    lr_scheduler = get_scheduler(cfg["lr_scheduler"], optimizer=optimizer,
                                 num_warmup_steps=cfg["warmup"] * A, num_training_steps=STEPS * A)
    unet, optimizer, lr_scheduler = acc.prepare(unet, optimizer, lr_scheduler)
    if ema_unet is not None:
        ema_unet.to(acc.device)
    index, noise_all, t_all = draws(name, A)
    losses, lrs, norms = [], [], []
    train_loss = 0.0
    for k in range(STEPS * A):
        with acc.accumulate(unet):
            rows = index[k]
            latents = data["latents"][rows]          # the MoVQ encoder's output
            image_embeds = data["image_embeds"][rows]  # the CLIP image encoder's
            noise = noise_all[k]
            timesteps = t_all[k]
            noisy_latents = noise_scheduler.add_noise(latents, noise, timesteps)
            target = noise
            if cfg["v_target"]:
                target = noise_scheduler.get_velocity(latents, noise, timesteps)
            added_cond_kwargs = {"image_embeds": image_embeds}
            model_pred = unet(noisy_latents, timesteps, None,
                              added_cond_kwargs=added_cond_kwargs).sample[:, :4]
            if cfg["snr_gamma"] is None:
                loss = F.mse_loss(model_pred.float(), target.float(), reduction="mean")
            else:
                snr = compute_snr(noise_scheduler, timesteps)
                mse_loss_weights = torch.stack(
                    [snr, cfg["snr_gamma"] * torch.ones_like(timesteps)], dim=1).min(dim=1)[0]
                if noise_scheduler.config.prediction_type == "epsilon":
                    mse_loss_weights = mse_loss_weights / snr
                elif noise_scheduler.config.prediction_type == "v_prediction":
                    mse_loss_weights = mse_loss_weights / (snr + 1)
                loss = F.mse_loss(model_pred.float(), target.float(), reduction="none")
                loss = loss.mean(dim=list(range(1, len(loss.shape)))) * mse_loss_weights
                loss = loss.mean()
            avg_loss = acc.gather(loss.repeat(BATCH)).mean()
            train_loss += avg_loss.item() / A
            acc.backward(loss)
            if acc.sync_gradients:
                lrs.append(optimizer.param_groups[0]["lr"])
                norms.append(float(acc.clip_grad_norm_(unet.parameters(), cfg["max_grad_norm"])))
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad()
        if acc.sync_gradients:
            if ema_unet is not None:
                ema_unet.step(unet.parameters())
            losses.append(train_loss)
            train_loss = 0.0
    assert len(losses) == STEPS
    out = {f"{name}.index": index.numpy().copy(), f"{name}.noise": np32(noise_all),
           f"{name}.timesteps": t_all.numpy().copy(), f"{name}.loss": f64bits(losses),
           f"{name}.lr": f64bits(lrs), f"{name}.grad_norm": np.array(norms, dtype=np.float32)}
    model = acc.unwrap_model(unet)
    for key, p in model.state_dict().items():
        out[f"{name}.final.{key}"], out[f"{name}.usum.{key}"] = weight_summary(p, init[key])
    if ema_unet is not None:
        ema_model = UNet2DConditionModel.from_config(model.config)
        ema_unet.copy_to(ema_model.parameters())
        for key, p in ema_model.state_dict().items():
            out[f"{name}.ema.{key}"], out[f"{name}.emausum.{key}"] = weight_summary(p, init[key])
    print(f"decoder_train_ref: {name}: losses {['%.6g' % x for x in losses]}")
    print(f"decoder_train_ref: {name}: grad norms {['%.4g' % x for x in norms]}")
    acc.free_memory()
    return out


def velocity_case(sched_config, data):
    """diffusers get_velocity on all four samples at timesteps spanning the schedule."""
    s = DDPMScheduler.from_config(dict(sched_config, prediction_type="v_prediction"))
    g = torch.Generator().manual_seed(DATA_SEED + 99)
    noise = torch.randn(N_SAMPLES, 4, H, W, generator=g)
    t = torch.tensor([0, 1, 500, 999], dtype=torch.int64)
    v = s.get_velocity(data["latents"], noise, t)
    ac = s.alphas_cumprod[t]
    return {"velocity.t": t.numpy().copy(), "velocity.noise": np32(noise), "velocity.v": np32(v),
            "velocity.sqrt_a": np32(ac ** 0.5), "velocity.sqrt_1ma": np32((1 - ac) ** 0.5)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--k22", required=True, help="path of the k22 binary")
    ap.add_argument("--out", default="tests/fixtures/decoder_train")
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(a.out, exist_ok=True)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        pipe = os.path.join(tmp, "tiny")
        k22_init(a.k22, "decoder", INIT_SEED, pipe)
        unet_dir = os.path.join(pipe, "unet")
        # the script's DDPMScheduler.from_pretrained(decoder, subfolder="scheduler")
        sched_config = dict(DDPMScheduler.load_config(pipe, subfolder="scheduler"))
        assert sched_config["beta_schedule"] == "linear"
        E = UNet2DConditionModel.load_config(unet_dir)["encoder_hid_dim"]
        data = make_data(E)
        out.update({"data.latents": np32(data["latents"]),
                    "data.image_embeds": np32(data["image_embeds"])})
        out.update(velocity_case(sched_config, data))
        for name, cfg in CONFIGS.items():
            out.update(train(name, cfg, unet_dir, sched_config, data))
    meta = {"torch": torch.__version__, "diffusers": diffusers.__version__,
            "accelerate": accelerate.__version__, "init_seed": str(INIT_SEED),
            "data_seed": str(DATA_SEED), "steps": str(STEPS), "batch": str(BATCH),
            "latent_hw": json.dumps([H, W]), "configs": json.dumps(CONFIGS),
            "full_max": str(FULL_MAX), "sample_n": str(SAMPLE_N),
            "adamw": json.dumps(dict(lr=LR, betas=BETAS, weight_decay=WD, eps=EPS)),
            "generator": "tools/reference/decoder_train_ref.py"}
    path = os.path.join(a.out, "steps.safetensors")
    save_capped(out, path, meta, MAX_BYTES)


if __name__ == "__main__":
    main()
