"""conformance.py: diffusers and transformers load k22's folders, and k22 reads theirs.

Run by `make conformance` as:  tools/reference/.venv/bin/python tools/reference/conformance.py --k22 build/k22

(a) `k22 init` writes the tiny prior and decoder pipelines; KandinskyV22PriorPipeline /
    KandinskyV22Pipeline.from_pretrained and every component class load them with no missing,
    unexpected or mis-shaped keys and no warnings about them, and every tensor they hold equals
    the safetensors file bit for bit.
(b) torch builds models from the config.json files k22 wrote and save_pretrained's them (fp32;
    fp16 for one component; a sharded save with a small max_shard_size); `k22 inspect --tensors`
    must load each strictly and report, per tensor, the dtype, shape and SHA-256 of the values as
    f32 that torch computes (bitwise), and the sum to within 1e-6 relative (summation order).
Prints one line per check and a PASS/FAIL summary; exits 1 on any failure."""
import argparse
import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import warnings

import numpy as np
import torch

RESULTS = []


def check(ok, what, detail=""):
    RESULTS.append((bool(ok), what))
    print(f"{'ok  ' if ok else 'FAIL'} {what}" + (f": {detail}" if detail and not ok else ""), flush=True)
    return ok


class Capture(logging.Handler):
    """Collects warning records from the diffusers and transformers loggers."""

    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


def f32_sha(t):
    a = t.detach().to(torch.float32).contiguous().cpu().numpy()
    return hashlib.sha256(a.tobytes()).hexdigest(), float(a.astype(np.float64).sum())


def file_tensors(folder, base):
    from safetensors.torch import load_file

    single = os.path.join(folder, base + ".safetensors")
    if os.path.exists(single):
        return load_file(single)
    index = json.load(open(single + ".index.json"))
    out = {}
    for shard in sorted(set(index["weight_map"].values())):
        out.update(load_file(os.path.join(folder, shard)))
    return out


MODEL_CLASSES = {
    "prior": ("diffusers", "PriorTransformer", "diffusion_pytorch_model"),
    "unet": ("diffusers", "UNet2DConditionModel", "diffusion_pytorch_model"),
    "movq": ("diffusers", "VQModel", "diffusion_pytorch_model"),
    "text_encoder": ("transformers", "CLIPTextModelWithProjection", "model"),
    "image_encoder": ("transformers", "CLIPVisionModelWithProjection", "model"),
}


def model_class(lib, name):
    import diffusers
    import transformers

    return getattr(diffusers if lib == "diffusers" else transformers, name)


def compare_state(module, folder, base, what):
    sd = module.state_dict()
    ft = file_tensors(folder, base)
    check(set(sd) == set(ft), f"{what}: state_dict keys == file keys",
          f"only in model: {sorted(set(sd) - set(ft))[:5]}, only in file: {sorted(set(ft) - set(sd))[:5]}")
    bad = [k for k in sd if k in ft and not (sd[k].dtype == ft[k].dtype and sd[k].shape == ft[k].shape
                                                 and torch.equal(sd[k].cpu(), ft[k]))]
    check(not bad, f"{what}: {len(sd)} loaded tensors equal the file bitwise", f"differ: {bad[:5]}")


def part_a(k22, tmp):
    from diffusers import KandinskyV22Pipeline, KandinskyV22PriorPipeline
    from transformers import CLIPImageProcessor, CLIPTokenizer

    root = os.path.join(tmp, "k22")
    for kind in ("prior", "decoder"):
        rc, out, err = run([k22, "init", kind, "--size", "tiny", "--seed", "7", "--out", os.path.join(root, kind)])
        if not check(rc == 0, f"k22 init {kind} --size tiny", err.strip()):
            return
        rc, out, err = run([k22, "inspect", os.path.join(root, kind)])
        check(rc == 0, f"k22 inspect {kind}", err.strip())

    cap = Capture()
    for name in ("diffusers", "transformers"):
        logging.getLogger(name).addHandler(cap)
    with warnings.catch_warnings(record=True) as wlist:
        warnings.simplefilter("always")
        pipes = {}
        for kind, cls in (("prior", KandinskyV22PriorPipeline), ("decoder", KandinskyV22Pipeline)):
            try:
                pipes[kind] = cls.from_pretrained(os.path.join(root, kind))
                check(True, f"{cls.__name__}.from_pretrained(k22 {kind})")
            except Exception as e:  # noqa: BLE001 - report any loader failure as a FAIL line
                check(False, f"{cls.__name__}.from_pretrained(k22 {kind})", repr(e))
    for name in ("diffusers", "transformers"):
        logging.getLogger(name).removeHandler(cap)
    keywords = ("missing", "unexpected", "not initialized", "newly initialized", "mismatch", "not used")
    noisy = [m for m in cap.messages + [str(w.message) for w in wlist] if any(k in m.lower() for k in keywords)]
    check(not noisy, "pipeline loads print no missing/unexpected/mismatched-key warnings", " | ".join(noisy)[:800])

    # Each component class on its own subfolder, with loading info.
    for kind, comps in (("prior", ("prior", "text_encoder", "image_encoder")), ("decoder", ("unet", "movq"))):
        folder = os.path.join(root, kind)
        for comp in comps:
            lib, clsname, base = MODEL_CLASSES[comp]
            try:
                model, info = model_class(lib, clsname).from_pretrained(folder, subfolder=comp, output_loading_info=True)
            except Exception as e:  # noqa: BLE001
                check(False, f"{clsname}.from_pretrained({kind}/{comp})", repr(e))
                continue
            probs = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs") and v}
            check(not probs, f"{clsname}.from_pretrained({kind}/{comp}): no missing/unexpected/mismatched keys", str(probs)[:800])
            compare_state(model, os.path.join(folder, comp), base, f"{kind}/{comp} ({clsname})")
            if kind in pipes:
                compare_state(getattr(pipes[kind], comp), os.path.join(folder, comp), base, f"pipeline {kind}.{comp}")
    prior_dir = os.path.join(root, "prior")
    try:
        tok = CLIPTokenizer.from_pretrained(prior_dir, subfolder="tokenizer")
        ids = tok("a man with a red hat", padding="max_length", max_length=tok.model_max_length, truncation=True).input_ids
        check(tok.model_max_length == 77 and len(tok) == 49408 and tok.pad_token == "<|endoftext|>"
              and ids[:8] == [49406, 320, 786, 593, 320, 736, 3801, 49407] and len(ids) == 77,
              "CLIPTokenizer loads k22 tokenizer/ (77 tokens, 49408 vocab, pad <|endoftext|>)", str(ids[:10]))
    except Exception as e:  # noqa: BLE001
        check(False, "CLIPTokenizer.from_pretrained(prior/tokenizer)", repr(e))
    try:
        ip = CLIPImageProcessor.from_pretrained(prior_dir, subfolder="image_processor")
        check(ip.size == {"shortest_edge": 224} and ip.crop_size == {"height": 224, "width": 224}
              and int(ip.resample) == 3 and list(ip.image_mean) == [0.48145466, 0.4578275, 0.40821073]
              and list(ip.image_std) == [0.26862954, 0.26130258, 0.27577711],
              "CLIPImageProcessor loads k22 image_processor/ (224, bicubic, CLIP mean/std)")
    except Exception as e:  # noqa: BLE001
        check(False, "CLIPImageProcessor.from_pretrained(prior/image_processor)", repr(e))
    # A short run of each pipeline: the tiny configs fit together.
    if "prior" in pipes and "decoder" in pipes:
        try:
            g = torch.Generator().manual_seed(0)
            emb = pipes["prior"]("a man with a red hat", num_inference_steps=2, generator=g)
            ok = emb.image_embeds.shape[0] == 1 and torch.isfinite(emb.image_embeds).all()
            check(ok, f"prior pipeline runs (image_embeds {tuple(emb.image_embeds.shape)})")
            img = pipes["decoder"](image_embeds=emb.image_embeds, negative_image_embeds=emb.negative_image_embeds,
                                   height=64, width=64, num_inference_steps=2, generator=g, output_type="np").images
            check(img.shape[-1] == 3 and np.isfinite(img).all(), f"decoder pipeline runs (image {img.shape})")
        except Exception as e:  # noqa: BLE001
            check(False, "pipelines run on the tiny k22 folders", repr(e)[:800])


def parse_inspect(text):
    tensors = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 7 and parts[0] == "tensor":
            shape = tuple(int(x) for x in parts[3].strip("[]").split(",") if x)
            tensors[parts[1]] = {
                "dtype": parts[2],
                "shape": shape,
                "sum": float(parts[4].split("=", 1)[1]),
                "sumsq": float(parts[5].split("=", 1)[1]),
                "sha": parts[6].split("=", 1)[1],
            }
    return tensors


TORCH_DTYPE_NAMES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}


def inspect_matches(k22, folder, model, what):
    rc, out, err = run([k22, "inspect", "--tensors", folder])
    if not check(rc == 0, f"k22 inspect --tensors {what} (strict load of a torch save)", err.strip()[:800]):
        return
    got = parse_inspect(out)
    sd = model.state_dict()
    check(set(got) == set(sd), f"{what}: k22 lists the keys torch saved",
          f"only k22: {sorted(set(got) - set(sd))[:5]}, only torch: {sorted(set(sd) - set(got))[:5]}")
    bad = []
    for k, t in sd.items():
        g = got.get(k)
        if g is None:
            bad.append(k)
            continue
        sha, s = f32_sha(t)
        if (g["dtype"] != TORCH_DTYPE_NAMES.get(t.dtype) or g["shape"] != tuple(t.shape) or g["sha"] != sha
                or abs(g["sum"] - s) > 1e-6 * max(1.0, float(t.detach().double().abs().sum()))):
            bad.append(k)
    check(not bad, f"{what}: {len(sd)} tensors: dtype, shape, sha256(f32) equal torch's bitwise; sums agree", f"differ: {bad[:5]}")


def part_b(k22, tmp):
    root = os.path.join(tmp, "k22")
    saves = os.path.join(tmp, "torch")
    sources = {"prior": "prior", "text_encoder": "prior", "image_encoder": "prior", "unet": "decoder", "movq": "decoder"}
    for comp, kind in sources.items():
        lib, clsname, _ = MODEL_CLASSES[comp]
        cfg_dir = os.path.join(root, kind, comp)
        if not os.path.exists(os.path.join(cfg_dir, "config.json")):
            check(False, f"{comp}: config.json from k22 init", "missing (part a failed?)")
            continue
        torch.manual_seed(0)
        cls = model_class(lib, clsname)
        if lib == "diffusers":
            model = cls.from_config(cls.load_config(cfg_dir))
        else:
            import transformers

            conf = getattr(transformers, clsname.replace("ModelWithProjection", "Config"))
            model = cls(conf.from_pretrained(cfg_dir))
        with torch.no_grad():  # non-trivial values everywhere (torch's init leaves some zeros/ones)
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.01)
        model.eval()
        out = os.path.join(saves, comp + "-fp32")
        model.save_pretrained(out)
        inspect_matches(k22, out, model, f"torch {clsname} fp32")
        # Half-precision saves, variant-less: from_pretrained(torch_dtype=...) then save_pretrained.
        for half_comp, dt, tag in (("prior", torch.float16, "fp16"), ("text_encoder", torch.bfloat16, "bf16")):
            if comp != half_comp:
                continue
            half = cls.from_pretrained(os.path.join(saves, comp + "-fp32"), torch_dtype=dt)
            out = os.path.join(saves, f"{comp}-{tag}")
            half.save_pretrained(out)
            inspect_matches(k22, out, half, f"torch {clsname} {tag}")
        if comp == "unet":
            out = os.path.join(saves, comp + "-sharded")
            model.save_pretrained(out, max_shard_size="200KB")
            nshards = len([f for f in os.listdir(out) if f.endswith(".safetensors")])
            check(nshards > 1 and os.path.exists(os.path.join(out, "diffusion_pytorch_model.safetensors.index.json")),
                  f"torch sharded save has several shards ({nshards})")
            inspect_matches(k22, out, model, f"torch {clsname} sharded")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--k22", default="build/k22", help="path of the k22 binary")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args()
    k22 = os.path.abspath(args.k22)
    if not os.access(k22, os.X_OK):
        print(f"conformance: {k22} is not an executable; run make first", file=sys.stderr)
        return 2
    torch.set_num_threads(2)
    tmp = tempfile.mkdtemp(prefix="k22-conformance-")
    try:
        print("== (a) diffusers / transformers load k22 init folders")
        part_a(k22, tmp)
        print("== (b) k22 inspect reads torch saves (fp32, fp16, bf16, sharded)")
        part_b(k22, tmp)
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            subprocess.run(["rm", "-rf", tmp])
    failed = [w for ok, w in RESULTS if not ok]
    print(f"conformance: {'PASS' if not failed else 'FAIL'}: {len(RESULTS) - len(failed)} of {len(RESULTS)} checks passed")
    for w in failed:
        print(f"  failed: {w}")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
