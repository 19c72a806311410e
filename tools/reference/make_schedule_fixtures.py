"""Writes tests/fixtures/schedule/*.safetensors: the model-independent numbers of one training step
as the pinned diffusers/torch compute them (float32, CPU), for tests/train/test_{schedule,lr,ema,
loss_prep}.c.

  noise.safetensors  betas, alphas_cumprod of the three beta schedules, torch's sqrt(alphas_cumprod)
                     and sqrt(1 - alphas_cumprod) (MKL's float sqrt: within 1 ulp of the
                     correctly rounded one, not equal to it in ~20% of values); add_noise on random inputs
                     (t includes 0 and 999); compute_snr and the Min-SNR weights (gamma 5) of the
                     scripts for prediction types sample / epsilon / v_prediction at every t;
                     the prior's x0 normalization and the decoder's x_t.
  lr.safetensors     the learning rate each optimizer step uses, for every schedule the scripts
                     offer, with lr_warmup_steps 3, max_train_steps 12, gradient accumulation 1 and
                     2, world size 1 and 2. Driven through accelerate 1.15.0's Accelerator exactly
                     as the scripts drive it (2 processes over gloo for world size 2). Stored as
                     the bit patterns of the float64 lrs (I64 tensors), as safetensors in k22 has
                     no F64.
  ema.safetensors    diffusers EMAModel (defaults) over 5 steps: parameters given to each step and
                     the shadow after it; one trainable and one frozen tensor.

accelerate (pinned in requirements.txt) drives the LR runs; --accelerate DIR puts another
unpacked copy first on the path.

Run: tools/reference/.venv/bin/python tools/reference/make_schedule_fixtures.py \
         --out tests/fixtures/schedule [--accelerate /tmp/accelerate-1.15.0]
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
from safetensors.numpy import save_file

import diffusers
from diffusers import DDPMScheduler
from diffusers.training_utils import EMAModel, compute_snr

SEED = 22044
GAMMA = 5.0
LR_BASE = 1e-4
LR_WARMUP = 3
LR_MAX_STEPS = 12
LR_SCHEDULES = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts",
                "polynomial")

SCHEDULES = {
    # name: DDPMScheduler kwargs (the prior script's own, the decoder's config, an SD-like one)
    "cos": dict(beta_schedule="squaredcos_cap_v2", prediction_type="sample"),
    "linear": dict(beta_schedule="linear", beta_start=0.00085, beta_end=0.012),
    "scaled": dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
}
T_ADD = [0, 999, 1, 500, 998, 37]
# Betas and alphas_cumprod only: diffusers' default linear range, odd lengths (linspace's halfway
# split), and a cosine schedule of another length.
EXTRA = {
    "lin_default": dict(beta_schedule="linear"),
    "lin37": dict(beta_schedule="linear", num_train_timesteps=37, beta_start=0.1, beta_end=0.3),
    "scaled_odd": dict(beta_schedule="scaled_linear", num_train_timesteps=1001, beta_start=0.0001,
                       beta_end=0.02),
    "cos50": dict(beta_schedule="squaredcos_cap_v2", num_train_timesteps=50),
}


def np32(t):
    return t.detach().to(torch.float32).contiguous().numpy().copy()


def min_snr_weights(sched, timesteps, pred):
    """The scripts' Min-SNR block, verbatim in effect."""
    snr = compute_snr(sched, timesteps)
    w = torch.stack([snr, GAMMA * torch.ones_like(timesteps)], dim=1).min(dim=1)[0]
    if pred == "epsilon":
        w = w / snr
    elif pred == "v_prediction":
        w = w / (snr + 1)
    return snr, w


def noise_fixture(path):
    g = torch.Generator().manual_seed(SEED)
    out = {}
    tall = torch.arange(1000, dtype=torch.int64)
    tadd = torch.tensor(T_ADD, dtype=torch.int64)
    for name, kw in SCHEDULES.items():
        s = DDPMScheduler(**kw)
        out[f"{name}.betas"] = np32(s.betas)
        out[f"{name}.alphas_cumprod"] = np32(s.alphas_cumprod)
        # add_noise's and compute_snr's coefficients exactly as torch forms them: on the CPU,
        # torch's float sqrt (pow 0.5) goes through MKL VML and is not correctly rounded
        out[f"{name}.sqrt_a"] = np32(s.alphas_cumprod ** 0.5)
        out[f"{name}.sqrt_1ma"] = np32((1 - s.alphas_cumprod) ** 0.5)
        x0 = torch.randn(len(T_ADD), 40, generator=g)
        noise = torch.randn(len(T_ADD), 40, generator=g)
        out[f"{name}.x0"] = np32(x0)
        out[f"{name}.noise"] = np32(noise)
        out[f"{name}.x_t"] = np32(s.add_noise(x0, noise, tadd))
        for pred in ("sample", "epsilon", "v_prediction"):
            snr, w = min_snr_weights(s, tall, pred)
            out[f"{name}.snr"] = np32(snr)
            out[f"{name}.w_{pred}"] = np32(w)
    out["t_add"] = tadd.numpy().copy()
    for name, kw in EXTRA.items():
        s = DDPMScheduler(**kw)
        out[f"extra.{name}.betas"] = np32(s.betas)
        out[f"extra.{name}.alphas_cumprod"] = np32(s.alphas_cumprod)

    # Prior: x0 = (image_embeds - clip_mean) / clip_std, x_t = add_noise(x0, noise, t), target x0.
    s = DDPMScheduler(**SCHEDULES["cos"])
    ie = torch.randn(4, 32, generator=g) * 3
    mean = torch.randn(1, 32, generator=g)
    std = torch.rand(1, 32, generator=g) * 2 + 0.1
    noise = torch.randn(4, 32, generator=g)
    t = torch.tensor([0, 999, 250, 731], dtype=torch.int64)
    x0 = (ie - mean) / std
    out.update({"prior.image_embeds": np32(ie), "prior.clip_mean": np32(mean),
                "prior.clip_std": np32(std), "prior.noise": np32(noise), "prior.t": t.numpy().copy(),
                "prior.x0": np32(x0), "prior.x_t": np32(s.add_noise(x0, noise, t))})
    # Decoder: x_t = add_noise(latents, noise, t), target noise.
    s = DDPMScheduler(**SCHEDULES["linear"])
    lat = torch.randn(2, 4, 4, 4, generator=g)
    noise = torch.randn(2, 4, 4, 4, generator=g)
    t = torch.tensor([999, 3], dtype=torch.int64)
    out.update({"decoder.latents": np32(lat), "decoder.noise": np32(noise),
                "decoder.t": t.numpy().copy(), "decoder.x_t": np32(s.add_noise(lat, noise, t))})
    meta = {"seed": str(SEED), "gamma": str(GAMMA), "torch": torch.__version__,
            "diffusers": diffusers.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "schedules": json.dumps(SCHEDULES), "extra": json.dumps(EXTRA)}
    save_file(out, path, metadata=meta)


def ema_fixture(path):
    g = torch.Generator().manual_seed(SEED + 1)
    model = torch.nn.Module()
    model.a = torch.nn.Parameter(torch.randn(40, generator=g))
    model.b = torch.nn.Parameter(torch.randn(10, generator=g), requires_grad=False)
    ema = EMAModel(model.parameters())  # decay 0.9999, min_decay 0, update_after_step 0, no warmup
    out = {"init.a": np32(model.a), "init.b": np32(model.b)}
    for k in range(5):
        with torch.no_grad():
            model.a.add_(torch.randn(40, generator=g) * 0.5)
            model.b.add_(torch.randn(10, generator=g))
        ema.step(model.parameters())
        out[f"step{k}.param.a"] = np32(model.a)
        out[f"step{k}.param.b"] = np32(model.b)
        out[f"step{k}.shadow.a"] = np32(ema.shadow_params[0])
        out[f"step{k}.shadow.b"] = np32(ema.shadow_params[1])
        out[f"step{k}.decay"] = np.array([ema.cur_decay_value], dtype=np.float64).view(np.int64)
    save_file(out, path, metadata={"seed": str(SEED + 1), "torch": torch.__version__,
                                   "diffusers": diffusers.__version__})


def lr_worker(rank, world, accum, results):
    """One process of a run: the scripts' loop with a stand-in model; records, at each sync
    (optimizer) step, the lr the optimizer is about to use."""
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": "29533", "ACCELERATE_USE_CPU": "1"})
    from accelerate import Accelerator
    from diffusers.optimization import get_scheduler
    acc = Accelerator(gradient_accumulation_steps=accum, cpu=True)
    assert acc.num_processes == world
    res = {}
    for name in LR_SCHEDULES:
        model = torch.nn.Linear(1, 1)
        opt = torch.optim.AdamW(model.parameters(), lr=LR_BASE)
        # the scripts: warmup and total are multiplied by the accumulation steps only
        sched = get_scheduler(name, optimizer=opt, num_warmup_steps=LR_WARMUP * accum,
                              num_training_steps=LR_MAX_STEPS * accum)
        model, opt, sched = acc.prepare(model, opt, sched)
        lrs = []
        for _ in range(LR_MAX_STEPS * accum):
            with acc.accumulate(model):
                loss = model(torch.ones(1, 1)).sum()
                acc.backward(loss)
                if acc.sync_gradients:
                    lrs.append(opt.param_groups[0]["lr"])
                opt.step()
                sched.step()
                opt.zero_grad()
        res[name] = lrs
        acc.free_memory()
    if rank == 0:
        results.put(res)
    if world > 1:
        torch.distributed.destroy_process_group()


def lr_run(world, accum):
    import multiprocessing as mp
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    ps = [ctx.Process(target=lr_worker, args=(r, world, accum, q)) for r in range(world)]
    for p in ps:
        p.start()
    res = None
    while res is None:
        try:
            res = q.get(timeout=2)
        except Exception:
            if any(p.exitcode not in (None, 0) for p in ps):
                sys.exit("lr worker failed: " + str([p.exitcode for p in ps]))
    for p in ps:
        p.join(timeout=60)
        if p.exitcode != 0:
            sys.exit(f"lr worker failed with exit code {p.exitcode}")
    return res


def lr_fixture(path, acc_dir):
    if acc_dir:
        sys.path.insert(0, acc_dir)
        os.environ["PYTHONPATH"] = acc_dir + os.pathsep + os.environ.get("PYTHONPATH", "")
    import accelerate
    out = {}
    for world in (1, 2):
        for accum in (1, 2):
            res = lr_run(world, accum)
            for name, lrs in res.items():
                assert len(lrs) == LR_MAX_STEPS
                out[f"{name}.ws{world}.ga{accum}"] = np.array(lrs, dtype=np.float64).view(np.int64)
    save_file(out, path, metadata={"base_lr": repr(LR_BASE), "lr_warmup_steps": str(LR_WARMUP),
                                   "max_train_steps": str(LR_MAX_STEPS),
                                   "accelerate": accelerate.__version__,
                                   "diffusers": diffusers.__version__, "torch": torch.__version__})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "..", "tests",
                                                  "fixtures", "schedule"))
    ap.add_argument("--accelerate", default=None, help="folder with accelerate 1.15.0 importable")
    a = ap.parse_args()
    torch.set_num_threads(1)
    os.makedirs(a.out, exist_ok=True)
    noise_fixture(os.path.join(a.out, "noise.safetensors"))
    ema_fixture(os.path.join(a.out, "ema.safetensors"))
    lr_fixture(os.path.join(a.out, "lr.safetensors"), a.accelerate)


if __name__ == "__main__":
    main()
