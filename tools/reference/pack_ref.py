"""pack_ref.py: what `k22 pack` must store, computed with the PyTorch reference, written to
tests/fixtures/pack/expected.safetensors for tests/cli/test_pack.sh.

The inputs are rebuilt from k22's deterministic generators (the shell test makes the same):
  k22 init prior --size tiny --seed 0           -> prior pipeline (tokenizer, CLIP text + vision)
  k22 init decoder --size tiny --seed 0         -> decoder pipeline, whose movq/ is replaced by
  model_test_movq --write-weights tests/fixtures/pack/movq8 0 movq
      (a 4-block MoVQ, spatial factor 8 as in Kandinsky 2.2; the fixture predates pack format 2,
      which also packs the tiny preset's 2-block MoVQ, factor 2: tests/cli/test_pack.sh checks
      that one's shapes, not its values)
  k22 synth --n 6 --seed 3 --min_size 64 --max_size 200
and each image goes through what the reference scripts do:
  prior script: CLIPTokenizer(max_length 77, padding max_length, truncation), the text encoder
    called without attention_mask -> last_hidden_state, text_embeds; CLIPImageProcessor ->
    CLIPVisionModelWithProjection -> image_embeds;
  decoder script: centre crop (PIL crop box), resize(res, BICUBIC, reducing_gap=1), /127.5 - 1,
    VQModel.encode(x).latents.

usage: python tools/reference/pack_ref.py BUILD_DIR   (holding k22 and model_test_movq)
"""
import json
import os
import sys
import tempfile

import numpy as np
import torch
from PIL import Image
from diffusers import VQModel
from transformers import (CLIPImageProcessor, CLIPTextModelWithProjection, CLIPTokenizer,
                          CLIPVisionModelWithProjection)

import refutil

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "pack", "expected.safetensors")
RES = 64


def decoder_pixels(im, res):
    w, h = im.size
    s = min(w, h)
    c = im.crop(((w - s) / 2, (h - s) / 2, (w + s) / 2, (h + s) / 2))
    c = c.resize((res, res), resample=Image.BICUBIC, reducing_gap=1)
    x = np.array(c).astype(np.float32) / 127.5 - 1
    return np.transpose(x, (2, 0, 1))


def main():
    build = sys.argv[1]
    k22 = os.path.join(build, "k22")
    tmp = tempfile.mkdtemp(prefix="k22-pack-ref-")
    prior, dec, img = (os.path.join(tmp, d) for d in ("prior", "dec", "img"))
    refutil.run([k22, "init", "prior", "--size", "tiny", "--seed", "0", "--out", prior])
    refutil.run([k22, "init", "decoder", "--size", "tiny", "--seed", "0", "--out", dec])
    refutil.run(["rm", "-rf", os.path.join(dec, "movq")])
    refutil.run([os.path.join(build, "model_test_movq"), "--write-weights",
                 os.path.join(ROOT, "tests", "fixtures", "pack", "movq8"), "0", os.path.join(dec, "movq")])
    refutil.run([k22, "synth", "--n", "6", "--seed", "3", "--min_size", "64", "--max_size", "200",
                 "--out", img])
    rows = [json.loads(l) for l in open(os.path.join(img, "metadata.jsonl"), encoding="utf-8")]
    tok = CLIPTokenizer.from_pretrained(os.path.join(prior, "tokenizer"))
    proc = CLIPImageProcessor.from_pretrained(os.path.join(prior, "image_processor"))
    text = CLIPTextModelWithProjection.from_pretrained(os.path.join(prior, "text_encoder")).eval()
    vision = CLIPVisionModelWithProjection.from_pretrained(os.path.join(prior, "image_encoder")).eval()
    movq = VQModel.from_pretrained(os.path.join(dec, "movq")).eval()
    images = [Image.open(os.path.join(img, r["file_name"])).convert("RGB") for r in rows]
    captions = [r["text"] for r in rows]
    with torch.no_grad():
        t = tok(captions, max_length=77, padding="max_length", truncation=True, return_tensors="pt")
        to = text(t.input_ids)
        px = proc(images, return_tensors="pt").pixel_values
        ie = vision(px).image_embeds
        x = torch.from_numpy(np.stack([decoder_pixels(im, RES) for im in images]))
        lat = movq.encode(x).latents
    out = {
        "input_ids": t.input_ids.to(torch.int32).numpy(),
        "attention_mask": t.attention_mask.to(torch.uint8).numpy(),
        "text_hidden": refutil.np32(to.last_hidden_state),
        "text_embeds": refutil.np32(to.text_embeds),
        "image_embeds": refutil.np32(ie),
        "latents": refutil.np32(lat),
    }
    meta = {"resolution": str(RES), "n": str(len(rows)),
            "made_by": "tools/reference/pack_ref.py (k22 init tiny seed 0, movq8 seed 0, synth n 6 seed 3)"}
    refutil.save_sorted(out, OUT, meta)
    refutil.run(["rm", "-rf", tmp])
    print(f"pack_ref: wrote {OUT}: " + ", ".join(f"{k} {v.shape}" for k, v in out.items()))


if __name__ == "__main__":
    main()
