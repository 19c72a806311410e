#!/usr/bin/env python3
"""bench_pack_encode_torch.py: the transformers/diffusers side of bench/bench_pack_encode.c: the
frozen-encoder pass that the Kandinsky 2.2 training scripts run on every step (and that
`k22 pack` runs once), timed per encoder on the same random images, captions, configs and batch:

  text:   CLIPTokenizer(max_length 77, padding max_length, truncation) + CLIPTextModelWithProjection
          (text_embeds and last_hidden_state brought to the host)
  vision: CLIPImageProcessor on PIL images + CLIPVisionModelWithProjection (image_embeds home)
  movq:   the decoder script's centre crop + PIL BICUBIC resize (reducing_gap 1), x/127.5-1, then
          VQModel.encode(x).latents home

Prints one "k22_bench" line per encoder and one for the total, with bench_pack_encode's keys.
Prints, never asserts.

  bench_pack_encode_torch.py [--size tiny|full] [--device cpu|cuda[:N]] [--batch B]
      [--resolution R] [--images N] [--warmup W] [--prior DIR] [--decoder DIR]
      [--mixed_precision no|bf16|bf16-weights]

Configs: tests/fixtures/configs/<size>/{text_encoder,image_encoder,movq}/config.json (k22's
presets equal them) with torch's own random init, or the folders --prior (text_encoder/,
image_encoder/, tokenizer/, image_processor/) and --decoder (movq/), e.g. from `k22 init`. The
tokenizer is otherwise data/clip-tokenizer (the vocabulary k22 compiles in). Precision: fp32 on
the CPU; on CUDA "no" is fp32 with TF32 off (k22's precision today), "bf16" is bf16 autocast
(the issue's baseline), "bf16-weights" casts the frozen models to bf16 as the scripts do with
weight_dtype under --mixed_precision bf16. Attention is SDPA (transformers' and diffusers'
defaults). Timing and memory as bench_pack_encode.c: W warm-up batches, ceil(N / B) timed
batches, medians (element n // 2); peak memory torch.cuda.max_memory_reserved on CUDA, max RSS
on the CPU (which includes some 700 MiB of Python and torch). gflop_per_image is torch's count of
one image's forward on the meta device; model_tflops is that over model_ms (copies and forward,
no host prep), and pack_vs_torch.sh applies the same count to k22's lines.
"""
import argparse
import json
import os
import resource
import time

import numpy as np
import torch
from diffusers import VQModel
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode
from transformers import (CLIPImageProcessor, CLIPTextConfig, CLIPTextModelWithProjection,
                          CLIPTokenizer, CLIPVisionConfig, CLIPVisionModelWithProjection)

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
T_TEXT = 77
ENCODERS = ("text", "vision", "movq")

# bench_pack_encode.c's CAPTIONS, in the same order
CAPTIONS = [
    "a photo of a cat",
    "a red bicycle leaning against a brick wall on a rainy street in the evening",
    "an oil painting of a lighthouse on a cliff above stormy seas, dramatic clouds, warm light "
    "from the lamp, seagulls circling, waves breaking on black rocks, in the style of the "
    "romantic painters of the nineteenth century, highly detailed, museum quality, large canvas",
    "two dogs playing in the snow",
    "close-up of a bowl of ramen with an egg, spring onions and chili oil",
    "a minimalist logo of a mountain",
    "an astronaut riding a horse on the moon, digital art",
    "a watercolor map of an imaginary island with rivers, forests and a small harbour town",
]


def args_parse():
    p = argparse.ArgumentParser()
    p.add_argument("--size", choices=("tiny", "full"), default="tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--resolution", type=int, default=0)
    p.add_argument("--images", type=int, default=0)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--prior", default=None)
    p.add_argument("--decoder", default=None)
    p.add_argument("--mixed_precision", choices=("no", "bf16", "bf16-weights"), default=None)
    a = p.parse_args()
    a.resolution = a.resolution or (768 if a.size == "full" else 64)
    a.images = a.images or 4 * a.batch
    if a.mixed_precision is None:
        a.mixed_precision = "bf16" if a.device.startswith("cuda") else "no"
    if a.batch < 1 or a.images < 1 or a.warmup < 0 or a.resolution % 8:
        p.error("--batch, --images >= 1, --warmup >= 0, --resolution a multiple of 8")
    return a


def fixture_config(size, name):
    with open(os.path.join(ROOT, "tests", "fixtures", "configs", size, name, "config.json")) as f:
        return json.load(f)


def models(a, device):
    """(tokenizer, image processor, text, vision, movq), eval mode, on device."""
    if a.prior:
        tok = CLIPTokenizer.from_pretrained(a.prior, subfolder="tokenizer")
        proc = CLIPImageProcessor.from_pretrained(a.prior, subfolder="image_processor")
        text = CLIPTextModelWithProjection.from_pretrained(a.prior, subfolder="text_encoder").to(device)
        vision = CLIPVisionModelWithProjection.from_pretrained(a.prior, subfolder="image_encoder").to(device)
    else:
        tok = CLIPTokenizer.from_pretrained(os.path.join(ROOT, "data", "clip-tokenizer"), pad_token="<|endoftext|>")
        proc = CLIPImageProcessor()  # its defaults are the pipeline's: 224, bicubic, OpenAI CLIP mean/std
        with torch.device(device):
            text = CLIPTextModelWithProjection(CLIPTextConfig(**fixture_config(a.size, "text_encoder")))
            vision = CLIPVisionModelWithProjection(CLIPVisionConfig(**fixture_config(a.size, "image_encoder")))
    if a.decoder:
        movq = VQModel.from_pretrained(a.decoder, subfolder="movq").to(device)
    else:
        with torch.device(device):
            movq = VQModel.from_config(fixture_config(a.size, "movq"))
    ms = (text, vision, movq)
    for m in ms:
        m.eval().requires_grad_(False)
        if a.mixed_precision == "bf16-weights":
            m.to(torch.bfloat16)
    return (tok, proc) + ms


def images(a):
    """bench_pack_encode.c's pe_image_fill: B images of (5/4 max(R, 224)) x 4/3 of that."""
    h = max(a.resolution, 224) * 5 // 4
    w = h * 4 // 3
    i = np.arange(h * w * 3, dtype=np.uint64)
    out = []
    for j in range(a.batch):
        px = ((i * np.uint64(2654435761) + np.uint64(j * 977)) % np.uint64(251)).astype(np.uint8)
        out.append(Image.fromarray(px.reshape(h, w, 3), "RGB"))
    return out, w, h


def gflop_per_image(a, text, vision, movq):
    """Each encoder's forward GFLOP for one image, counted by torch on the meta device (matrix
    products and convolutions at 2 FLOPs per multiply-add: flops.h's rule); k22 runs the same."""
    with torch.device("meta"):
        ms = (type(text)(text.config), type(vision)(vision.config), VQModel.from_config(movq.config))
        xs = (torch.zeros(1, T_TEXT, dtype=torch.long), torch.zeros(1, 3, 224, 224),
              torch.zeros(1, 3, a.resolution, a.resolution))
    out = {}
    for enc, m, x in zip(ENCODERS, ms, xs):
        fc = FlopCounterMode(display=False)
        with fc, torch.no_grad():
            m.encode(x) if enc == "movq" else m(x)
        out[enc] = fc.get_total_flops() / 1e9
    return out


def decoder_transform(img, res):
    """The decoder script's train transform: centre crop to the short side, resize, [-1, 1]."""
    w, h = img.size
    s = min(w, h)
    left, top = (w - s) / 2, (h - s) / 2
    img = img.crop((left, top, left + s, top + s))
    img = img.resize((res, res), resample=Image.BICUBIC, reducing_gap=1)
    x = np.array(img).astype(np.float32) / 127.5 - 1
    return torch.from_numpy(np.transpose(x, [2, 0, 1]))


def main():
    a = args_parse()
    cuda = a.device.startswith("cuda")
    if cuda and a.mixed_precision == "no":  # true fp32, as k22's GEMMs (no TF32)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    tok, proc, text, vision, movq = models(a, a.device)
    gflop = gflop_per_image(a, text, vision, movq)
    imgs, sw, sh = images(a)
    dev_type = torch.device(a.device).type
    in_dtype = torch.bfloat16 if a.mixed_precision == "bf16-weights" else torch.float32
    autocast = torch.autocast(dev_type, dtype=torch.bfloat16, enabled=a.mixed_precision == "bf16")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    B, nb = a.batch, (a.images + a.batch - 1) // a.batch
    rec = {e: {"prep": [], "model": [], "cpu": []} for e in ENCODERS}
    oma = {}

    def run(enc, first, keep, prep, model):
        t0, c0 = time.perf_counter(), time.process_time()
        x = prep(first)
        t1 = time.perf_counter()
        with torch.no_grad(), autocast:
            out = model(x)
        sync()
        t2, c1 = time.perf_counter(), time.process_time()
        if keep:
            rec[enc]["prep"].append(1e3 * (t1 - t0))
            rec[enc]["model"].append(1e3 * (t2 - t1))
            rec[enc]["cpu"].append(1e3 * (c1 - c0))
            oma[enc] = out.abs().mean().item()

    def text_prep(first):
        caps = [CAPTIONS[(first + i) % len(CAPTIONS)] for i in range(B)]
        return tok(caps, max_length=T_TEXT, padding="max_length", truncation=True, return_tensors="pt").input_ids

    def text_model(ids):
        o = text(ids.to(a.device))
        o.last_hidden_state.float().cpu()  # pack keeps both outputs
        return o.text_embeds.float().cpu()

    def vision_prep(first):
        return proc([imgs[(first + i) % B] for i in range(B)], return_tensors="pt").pixel_values

    def vision_model(px):
        return vision(px.to(a.device, in_dtype)).image_embeds.float().cpu()

    def movq_prep(first):
        return torch.stack([decoder_transform(imgs[(first + i) % B], a.resolution) for i in range(B)])

    def movq_model(x):
        return movq.encode(x.to(a.device, in_dtype)).latents.float().cpu()

    steps = {"text": (text_prep, text_model), "vision": (vision_prep, vision_model),
             "movq": (movq_prep, movq_model)}
    for s in range(-a.warmup, nb):
        first = (s + a.warmup) * B
        for enc in ENCODERS:
            run(enc, first, s >= 0, *steps[enc])

    if cuda:
        mem, kind = torch.cuda.max_memory_reserved(a.device) / 1048576.0, "device"
    else:
        mem, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, "max_rss"
    prec = {"no": "fp32", "bf16": "bf16-autocast", "bf16-weights": "bf16-weights"}[a.mixed_precision]
    nparams = {e: sum(p.numel() for p in m.parameters()) for e, m in zip(ENCODERS, (text, vision, movq))}

    def med(v):
        return sorted(v)[len(v) // 2]  # bench_pack_encode.c's pick

    def line(enc, prep, model, tot, lo, hi, cpu, npar, om, gf):
        print(f"k22_bench impl=torch bench=pack_encode encoder={enc} size={a.size} device={a.device} "
              f"precision={prec} batch={B} resolution={a.resolution} src={sw}x{sh} images={nb * B} "
              f"batches={nb} params={npar} ms_per_batch={tot:.3f} ms_min={lo:.3f} ms_max={hi:.3f} "
              f"prep_ms={prep:.3f} model_ms={model:.3f} cpu_ms={cpu:.3f} images_per_s={B / (tot * 1e-3):.3f} "
              f"peak_mem_mib={mem:.1f} mem={kind} out_mean_abs={om:.6g} gflop_per_image={gf:.4f} "
              f"model_tflops={gf * B / (model * 1e-3) / 1e3:.4f} torch={torch.__version__} "
              f"threads={torch.get_num_threads()}", flush=True)

    sums = [0.0] * nb
    tp = tm = tc = 0.0
    for enc in ENCODERS:
        r = rec[enc]
        one = [p + m for p, m in zip(r["prep"], r["model"])]
        sums = [s + o for s, o in zip(sums, one)]
        p, m, c = med(r["prep"]), med(r["model"]), med(r["cpu"])
        line(enc, p, m, med(one), min(one), max(one), c, nparams[enc], oma[enc], gflop[enc])
        tp, tm, tc = tp + p, tm + m, tc + c
    line("total", tp, tm, med(sums), min(sums), max(sums), tc, sum(nparams.values()), 0,
         sum(gflop.values()))


if __name__ == "__main__":
    main()
