#!/usr/bin/env python3
"""bench_train_step_torch.py: the diffusers side of bench/bench_train_step.c: one training step of
PriorTransformer or UNet2DConditionModel the way train_text_to_image_prior.py /
train_text_to_image_decoder.py take it (add_noise, forward, MSE, backward, clip_grad_norm_ 1.0,
AdamW 1e-4, zero_grad), on the same config, batch and data, timed over --steps after --warmup;
prints one "k22_bench" line with the keys bench_train_step prints. Prints, never asserts.

  bench_train_step_torch.py --model prior|unet [--size tiny|full] [--device cpu|cuda[:N]]
      [--batch B] [--latent N] [--steps K] [--warmup W] [--grad_ckpt] [--from DIR]
      [--mixed_precision no|bf16|fp16]

The config is tests/fixtures/configs/<size>/<model>/config.json (written by diffusers; k22's
presets equal them, tests/unit/test_config.c) or --from DIR's. Weights are torch's own random
init (values do not change the speed) unless --from. Precision: bf16 autocast on CUDA (what
accelerate's --mixed_precision bf16 does; fp32 master weights) and fp32 on the CPU by default;
--mixed_precision no on CUDA turns TF32 off too, to match k22's true-fp32 GEMMs. Attention is
diffusers' default processor (torch SDPA). Inputs are bench_util.h's bench_fill values, so both
sides see the same numbers. FLOPs are counted with torch.utils.flop_counter on the meta device
(the same rule as k22's flops.h: 3 x forward per step).
"""
import argparse
import json
import os
import resource
import time

import numpy as np
import torch
from diffusers import DDPMScheduler, PriorTransformer, UNet2DConditionModel
from torch.utils.flop_counter import FlopCounterMode

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
H100_BF16_DENSE = 989e12
H100_GEMM_MEASURED = 798e12


def bench_fill(shape, stream):
    """bench_util.h's bench_fill: n values in [-0.5, 0.5] from a hash of the index."""
    n = int(np.prod(shape))
    i = np.arange(n, dtype=np.int64)
    x = 0.5 * (((i * 2654435761 + stream * 97) % 2001) / 1000.0 - 1.0)
    return torch.from_numpy(x.astype(np.float32).reshape(shape))


def args_parse():
    p = argparse.ArgumentParser()
    p.add_argument("--model", choices=("prior", "unet"), required=True)
    p.add_argument("--size", choices=("tiny", "full"), default="tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--latent", type=int, default=32)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--grad_ckpt", action="store_true")
    p.add_argument("--from", dest="src", default=None)
    p.add_argument("--mixed_precision", choices=("no", "bf16", "fp16"), default=None)
    a = p.parse_args()
    if a.mixed_precision is None:
        a.mixed_precision = "bf16" if a.device.startswith("cuda") else "no"
    return a


def config(a):
    path = os.path.join(a.src, "config.json") if a.src else os.path.join(
        ROOT, "tests", "fixtures", "configs", a.size, a.model, "config.json")
    with open(path) as f:
        return json.load(f)


def build(a, cfg, device):
    cls = PriorTransformer if a.model == "prior" else UNet2DConditionModel
    if a.src:
        return cls.from_pretrained(a.src).to(device)
    with torch.device(device):
        m = cls.from_config(cfg)
    if a.model == "prior":  # the checkpoint's normalization: mean 0, std 1 (k22 init's values)
        m.clip_std.data.fill_(1.0)
    return m


def batch(a, m, device):
    """The inputs bench_train_step.c builds, same streams and shapes."""
    B, c = a.batch, m.config
    t = torch.tensor([(b * 397 + 11) % 1000 for b in range(B)])
    if a.model == "prior":
        E, L = c.embedding_dim, c.num_embeddings
        EP = c.embedding_proj_dim or E
        mask = torch.tensor([[i <= (10 + 7 * b) % L for i in range(L)] for b in range(B)])
        d = dict(te=bench_fill((B, EP), 1), th=bench_fill((B, L, E), 2), ie=bench_fill((B, E), 3),
                 noise=bench_fill((B, E), 4), mask=mask, t=t)
    else:
        n = (B, 4, a.latent, a.latent)
        d = dict(lat=bench_fill(n, 1), noise=bench_fill(n, 2),
                 img=bench_fill((B, c.encoder_hid_dim), 3), t=t)
    return {k: v.to(device) for k, v in d.items()}


def make_step(a, m, d, device):
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(a.mixed_precision)
    dev_type = torch.device(device).type
    if a.model == "prior":
        sched = DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="sample")
    else:
        sched = DDPMScheduler(beta_schedule="linear", beta_start=0.00085, beta_end=0.012)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4, betas=(0.9, 0.999), weight_decay=0.0, eps=1e-8)
    scaler = torch.amp.GradScaler(dev_type) if a.mixed_precision == "fp16" else None

    def forward_loss():
        with torch.autocast(dev_type, dtype=dtype, enabled=dtype is not None):
            if a.model == "prior":
                x0 = (d["ie"] - m.clip_mean) / m.clip_std
                xt = sched.add_noise(x0, d["noise"], d["t"])
                pred = m(xt, timestep=d["t"], proj_embedding=d["te"], encoder_hidden_states=d["th"],
                         attention_mask=d["mask"]).predicted_image_embedding
                target = x0
            else:
                xt = sched.add_noise(d["lat"], d["noise"], d["t"])
                pred = m(xt, d["t"], None, added_cond_kwargs={"image_embeds": d["img"]}).sample[:, :4]
                target = d["noise"]
        return torch.nn.functional.mse_loss(pred.float(), target.float(), reduction="mean")

    def step():
        loss = forward_loss()
        if scaler:
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
        else:
            loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        if scaler:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        opt.zero_grad()

    return step


def forward_flops(a, cfg):
    """One forward's FLOPs, counted by torch on the meta device (no memory, no time)."""
    m = build(argparse.Namespace(**{**vars(a), "src": None}), cfg, "meta")
    d = batch(a, m, "meta")
    fc = FlopCounterMode(display=False)
    with fc, torch.no_grad(), torch.device("meta"):
        if a.model == "prior":
            m(d["noise"], timestep=d["t"], proj_embedding=d["te"], encoder_hidden_states=d["th"],
              attention_mask=d["mask"])
        else:
            m(d["lat"], d["t"], None, added_cond_kwargs={"image_embeds": d["img"]})
    return fc.get_total_flops()


def peak_mib(device):
    if device.startswith("cuda"):
        return torch.cuda.max_memory_reserved(device) / 1048576.0, "device"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, "max_rss"


def main():
    a = args_parse()
    cfg = config(a)
    cuda = a.device.startswith("cuda")
    if cuda and a.mixed_precision == "no":  # true fp32, as k22's GEMMs (no TF32)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    fwd = forward_flops(a, cfg)
    m = build(a, cfg, a.device).train()
    if a.grad_ckpt:
        m.enable_gradient_checkpointing()
    d = batch(a, m, a.device)
    step = make_step(a, m, d, a.device)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for _ in range(a.warmup):
        step()
    sync()
    ms = []
    c0 = time.process_time()
    for _ in range(a.steps):
        t0 = time.perf_counter()
        step()
        sync()
        ms.append(1e3 * (time.perf_counter() - t0))
    cpu_ms = 1e3 * (time.process_time() - c0) / a.steps
    med = sorted(ms)[a.steps // 2]  # the same pick as bench_train_step.c
    model = 3.0 * fwd
    rate = model / (med * 1e-3)
    mem, kind = peak_mib(a.device)
    prec = {"no": "fp32", "bf16": "bf16-autocast", "fp16": "fp16-autocast"}[a.mixed_precision]
    nparams = sum(p.numel() for p in m.parameters())
    print(f"k22_bench impl=torch model={a.model} size={a.size} device={a.device} precision={prec} "
          f"batch={a.batch} latent={a.latent if a.model == 'unet' else 0} grad_ckpt={int(a.grad_ckpt)} "
          f"params={nparams} steps={a.steps} step_ms={med:.3f} step_ms_min={min(ms):.3f} "
          f"step_ms_max={max(ms):.3f} cpu_ms={cpu_ms:.3f} samples_per_s={a.batch / (med * 1e-3):.3f} "
          f"fwd_gflop={fwd / 1e9:.4f} train_tflop={model / 1e12:.6f} model_tflops={rate / 1e12:.4f} "
          f"mfu_989={rate / H100_BF16_DENSE:.5f} mfu_798={rate / H100_GEMM_MEASURED:.5f} "
          f"peak_mem_mib={mem:.1f} mem={kind} torch={torch.__version__} threads={torch.get_num_threads()}",
          flush=True)


if __name__ == "__main__":
    main()
