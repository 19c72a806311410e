"""Writes tests/fixtures/prior_train/steps.safetensors: ten optimizer steps of the prior training
loop of diffusers' examples/kandinsky2_2/text_to_image/train_text_to_image_prior.py, run by the
pinned torch / diffusers / accelerate in float32 on the CPU, for tests/train/test_prior_step.c.

The loop below is the script's (reference-math.md section 1) with the parts k22 does elsewhere
taken out: the frozen CLIP encoders are replaced by a fixed set of random encoder outputs
(text_embeds, last_hidden_state, a padded text mask, image_embeds; the encoders have their own
tests), and the torch random draws by noise and timesteps stored here, which the C test feeds in.
Everything else is the script's own objects: accelerate's Accelerator(gradient_accumulation_steps)
with accumulate(), backward() (which divides the loss by the accumulation steps), clip_grad_norm_
and the prepared optimizer and scheduler (which skip non-sync micro-steps); torch.optim.AdamW over
prior.parameters() (clip_mean/std have no grad and are skipped); diffusers get_scheduler,
DDPMScheduler(squaredcos_cap_v2, sample), compute_snr and EMAModel.

Model: `k22 init prior --size tiny --seed 0` (13,680 parameters), with clip_mean / clip_std
replaced by random values (stored here), so the normalization is not the identity.

Configurations (10 optimizer steps each, micro-batch 3 drawn from 6 samples):
  a  defaults: lr 1e-4 constant, accumulation 1, max_grad_norm 1.0
  b  --snr_gamma 5 --gradient_accumulation_steps 2 --max_grad_norm 0.5 (clipping active)
     --lr_scheduler cosine --lr_warmup_steps 2
  c  --use_ema (otherwise defaults)

Tensors: data.{text_embeds (6,E), text_hidden (6,77,E), text_mask (6,77) U8, image_embeds (6,E)},
init.clip_mean (E), init.clip_std (E); per configuration X: X.index (S*A,3) I64 sample rows of
each micro-batch, X.noise (S*A,3,E), X.timesteps (S*A,3) I64, X.loss (S) the logged train_loss
and X.lr (S) the lr each step used (both float64 bit patterns in I64), X.grad_norm (S) F32 the
norm clip_grad_norm_ returned, X.final.<key> every parameter after the last step, and for c
X.ema.<key> the EMA shadow.

Run: tools/reference/.venv/bin/python tools/reference/prior_train_ref.py --k22 build/k22 \
         --out tests/fixtures/prior_train
"""
import argparse
import json
import os
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

import accelerate
import diffusers
from accelerate import Accelerator
from diffusers import DDPMScheduler, PriorTransformer
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel, compute_snr

from refutil import f64bits, k22_init, np32, save_capped

INIT_SEED = 0
DATA_SEED = 4242
N_SAMPLES = 6
BATCH = 3
STEPS = 10
TEXT_LEN = [77, 5, 12, 40, 1, 60]  # tokens per sample; the rest of the 77 is padding

CONFIGS = {
    "a": dict(snr_gamma=None, accum=1, max_grad_norm=1.0, lr_scheduler="constant", warmup=500,
              use_ema=False),
    "b": dict(snr_gamma=5.0, accum=2, max_grad_norm=0.5, lr_scheduler="cosine", warmup=2,
              use_ema=False),
    "c": dict(snr_gamma=None, accum=1, max_grad_norm=1.0, lr_scheduler="constant", warmup=500,
              use_ema=True),
}
LR, BETAS, WD, EPS = 1e-4, (0.9, 0.999), 0.0, 1e-8
MAX_BYTES = 512 * 1024

def make_data(E):
    g = torch.Generator().manual_seed(DATA_SEED)
    mask = torch.zeros(N_SAMPLES, 77, dtype=torch.bool)
    for i, n in enumerate(TEXT_LEN):
        mask[i, :n] = True
    return {
        "text_embeds": torch.randn(N_SAMPLES, E, generator=g),
        "text_hidden": torch.randn(N_SAMPLES, 77, E, generator=g),
        "text_mask": mask,
        "image_embeds": torch.randn(N_SAMPLES, E, generator=g) * 2 + 0.5,
        "clip_mean": torch.randn(E, generator=g) * 0.5,
        "clip_std": torch.rand(E, generator=g) + 0.5,
    }


def draws(name, E, accum):
    """The micro-batches' sample rows (a fresh permutation per epoch), noise and timesteps."""
    g = torch.Generator().manual_seed(DATA_SEED + 1 + ord(name))
    n = STEPS * accum
    rows = []
    while len(rows) < n * BATCH:
        rows += torch.randperm(N_SAMPLES, generator=g).tolist()
    index = torch.tensor(rows[:n * BATCH], dtype=torch.int64).view(n, BATCH)
    noise = torch.randn(n, BATCH, E, generator=g)
    t = torch.randint(0, 1000, (n, BATCH), generator=g, dtype=torch.int64)
    t[0] = torch.tensor([0, 999, 500])  # both ends of the schedule in the first micro-batch
    return index, noise, t


def train(name, cfg, prior_dir, data):
    """The script's loop (P:782-858) on the fixed draws. Returns the fixture tensors."""
    A = cfg["accum"]
    acc = Accelerator(gradient_accumulation_steps=A, cpu=True)
    noise_scheduler = DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="sample")
    prior = PriorTransformer.from_pretrained(prior_dir)
    ema_prior = None
    if cfg["use_ema"]:
        ema_prior = PriorTransformer.from_pretrained(prior_dir)
        ema_prior = EMAModel(ema_prior.parameters(), model_cls=PriorTransformer,
                             model_config=ema_prior.config)
    prior.train()
    optimizer = torch.optim.AdamW(prior.parameters(), lr=LR, betas=BETAS, weight_decay=WD,
                                  eps=EPS)
    lr_scheduler = get_scheduler(cfg["lr_scheduler"], optimizer=optimizer,
                                 num_warmup_steps=cfg["warmup"] * A,
                                 num_training_steps=STEPS * A)
    clip_mean = prior.clip_mean.clone()
    clip_std = prior.clip_std.clone()
    prior, optimizer, lr_scheduler = acc.prepare(prior, optimizer, lr_scheduler)
    if ema_prior is not None:
        ema_prior.to(acc.device)
    E = prior.config.embedding_dim
    index, noise_all, t_all = draws(name, E, A)
    losses, lrs, norms = [], [], []
    train_loss = 0.0
    for k in range(STEPS * A):
        with acc.accumulate(prior):
            rows = index[k]
            text_mask = data["text_mask"][rows]
            with torch.no_grad():  # the script's block: encoders, draws, normalization, add_noise
                text_embeds = data["text_embeds"][rows]
                hidden = data["text_hidden"][rows]
                image_embeds = data["image_embeds"][rows]
                noise = noise_all[k]
                timesteps = t_all[k]
                # clip_mean/std are clones of Parameters: outside no_grad they would carry grads
                image_embeds = (image_embeds - clip_mean) / clip_std
                noisy_latents = noise_scheduler.add_noise(image_embeds, noise, timesteps)
                target = image_embeds
            model_pred = prior(noisy_latents, timestep=timesteps, proj_embedding=text_embeds,
                               encoder_hidden_states=hidden,
                               attention_mask=text_mask).predicted_image_embedding
            if cfg["snr_gamma"] is None:
                loss = F.mse_loss(model_pred.float(), target.float(), reduction="mean")
            else:
                snr = compute_snr(noise_scheduler, timesteps)
                mse_loss_weights = torch.stack(
                    [snr, cfg["snr_gamma"] * torch.ones_like(timesteps)], dim=1).min(dim=1)[0]
                # prediction_type "sample": no division by snr
                loss = F.mse_loss(model_pred.float(), target.float(), reduction="none")
                loss = loss.mean(dim=list(range(1, len(loss.shape)))) * mse_loss_weights
                loss = loss.mean()
            avg_loss = acc.gather(loss.repeat(BATCH)).mean()
            train_loss += avg_loss.item() / A
            acc.backward(loss)
            if acc.sync_gradients:
                lrs.append(optimizer.param_groups[0]["lr"])
                norms.append(float(acc.clip_grad_norm_(prior.parameters(), cfg["max_grad_norm"])))
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad()
        if acc.sync_gradients:
            if ema_prior is not None:
                ema_prior.step(prior.parameters())
            losses.append(train_loss)
            train_loss = 0.0
    assert len(losses) == STEPS
    out = {f"{name}.index": index.numpy().copy(), f"{name}.noise": np32(noise_all),
           f"{name}.timesteps": t_all.numpy().copy(), f"{name}.loss": f64bits(losses),
           f"{name}.lr": f64bits(lrs), f"{name}.grad_norm": np.array(norms, dtype=np.float32)}
    model = acc.unwrap_model(prior)
    for key, p in model.state_dict().items():
        out[f"{name}.final.{key}"] = np32(p)
    if ema_prior is not None:
        ema_model = PriorTransformer.from_config(model.config)
        ema_prior.copy_to(ema_model.parameters())
        for key, p in ema_model.state_dict().items():
            out[f"{name}.ema.{key}"] = np32(p)
    print(f"prior_train_ref: {name}: losses {['%.6g' % x for x in losses]}")
    print(f"prior_train_ref: {name}: grad norms {['%.4g' % x for x in norms]}")
    acc.free_memory()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--k22", required=True, help="path of the k22 binary")
    ap.add_argument("--out", default="tests/fixtures/prior_train")
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(a.out, exist_ok=True)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        pipe = os.path.join(tmp, "tiny")
        k22_init(a.k22, "prior", INIT_SEED, pipe)
        prior = PriorTransformer.from_pretrained(os.path.join(pipe, "prior"))
        E = prior.config.embedding_dim
        data = make_data(E)
        with torch.no_grad():
            prior.clip_mean.copy_(data["clip_mean"].view(1, E))
            prior.clip_std.copy_(data["clip_std"].view(1, E))
        prior_dir = os.path.join(tmp, "prior_init")
        prior.save_pretrained(prior_dir)
        out.update({"data.text_embeds": np32(data["text_embeds"]),
                    "data.text_hidden": np32(data["text_hidden"]),
                    "data.text_mask": data["text_mask"].to(torch.uint8).numpy().copy(),
                    "data.image_embeds": np32(data["image_embeds"]),
                    "init.clip_mean": np32(data["clip_mean"]),
                    "init.clip_std": np32(data["clip_std"])})
        for name, cfg in CONFIGS.items():
            out.update(train(name, cfg, prior_dir, data))
    meta = {"torch": torch.__version__, "diffusers": diffusers.__version__,
            "accelerate": accelerate.__version__, "init_seed": str(INIT_SEED),
            "data_seed": str(DATA_SEED), "steps": str(STEPS), "batch": str(BATCH),
            "text_len": json.dumps(TEXT_LEN), "configs": json.dumps(CONFIGS),
            "adamw": json.dumps(dict(lr=LR, betas=BETAS, weight_decay=WD, eps=EPS)),
            "generator": "tools/reference/prior_train_ref.py"}
    path = os.path.join(a.out, "steps.safetensors")
    save_capped(out, path, meta, MAX_BYTES)


if __name__ == "__main__":
    main()
