"""Writes tests/fixtures/ops/<case>.safetensors: for each op of include/k22/ops.h, the inputs, the
outputs, a fixed upstream gradient and every input gradient, as computed by the pinned torch
(float32, CPU, one thread, deterministic algorithms, a fixed seed per case). Tensors are stored in
the exact layouts ops.h takes, so tests/ref/test_ops_torch.c can feed them to the k22 backends
unchanged. Each file's __metadata__ holds the op, its scalar arguments, the seed and the versions.

Tensor names: inputs by their ops.h argument name (x, w, b, q, k, v, ...), outputs (y, out, lse,
loss, ...), the upstream gradient d<output>, input gradients d<input>.

Run: tools/reference/.venv/bin/python tools/reference/make_op_fixtures.py --out tests/fixtures/ops
"""
import argparse
import json
import math
import os
import sys
import zlib

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import save_file

import diffusers
from diffusers.models.embeddings import get_timestep_embedding

SEED_BASE = 22022
MAX_TOTAL_BYTES = 2 * 1024 * 1024

CASES = {}


def case(name):
    def reg(fn):
        CASES[name] = fn
        return fn

    return reg


def seed_for(name):
    """A per-case seed that does not move when cases are added or reordered."""
    return SEED_BASE + zlib.crc32(name.encode()) % 100000


def rnd(*shape, scale=1.0, shift=0.0, grad=True):
    t = torch.randn(*shape, dtype=torch.float32) * scale + shift
    return t.requires_grad_(grad)


def np32(t):
    return t.detach().to(torch.float32).contiguous().numpy().copy()


def grads_of(out, dout, inputs):
    """Backprops dout through out and returns {name: grad} for the named leaf inputs."""
    names = list(inputs)
    gs = torch.autograd.grad(out, [inputs[n] for n in names], dout, allow_unused=True)
    return {"d" + n: g for n, g in zip(names, gs)}


# ---------------------------------------------------------------- linear, matmul


def linear_case(bias):
    N, I, O = 6, 70, 17
    x, w = rnd(N, I), rnd(O, I, scale=0.1)
    b = rnd(O) if bias else None
    y = F.linear(x, w, b)
    dy = rnd(N, O, grad=False)
    ins = {"x": x, "w": w}
    if bias:
        ins["b"] = b
    t = dict(ins, y=y, dy=dy, **grads_of(y, dy, ins))
    return t, {"op": "linear", "N": N, "I": I, "O": O, "bias": int(bias)}


case("linear_bias")(lambda: linear_case(True))
case("linear_nobias")(lambda: linear_case(False))


def bmm_case(ta, tb, alpha, beta):
    batch, M, N, K = 3, 5, 6, 19
    A = rnd(batch, K, M) if ta else rnd(batch, M, K)
    Bm = rnd(batch, N, K) if tb else rnd(batch, K, N)
    opA = A.transpose(1, 2) if ta else A
    opB = Bm.transpose(1, 2) if tb else Bm
    y = alpha * torch.bmm(opA, opB)
    ins = {"A": A, "B": Bm}
    if beta != 0:
        C0 = rnd(batch, M, N)
        y = y + beta * C0
        ins["C0"] = C0
    dy = rnd(batch, M, N, grad=False)
    t = dict(ins, C=y, dC=dy, **grads_of(y, dy, ins))
    meta = {"op": "matmul", "ta": ta, "tb": tb, "batch": batch, "M": M, "N": N, "K": K,
            "alpha": repr(alpha), "beta": repr(beta)}
    return t, meta


case("bmm_nn")(lambda: bmm_case(0, 0, 1.0, 0.0))
case("bmm_tn")(lambda: bmm_case(1, 0, 0.5, 1.0))
case("bmm_nt")(lambda: bmm_case(0, 1, 0.125, 0.0))
case("bmm_tt")(lambda: bmm_case(1, 1, 1.0, 0.5))


# ---------------------------------------------------------------- conv2d


def conv_case(B, C, H, W, O, KH, KW, S, pads, torch_pad, bias):
    """pads: (PT, PB, PL, PR) as ops.h takes them. torch_pad: either an int for conv2d's own
    symmetric padding, or a 4-tuple for an explicit F.pad (left, right, top, bottom) before a
    padding-0 conv, as diffusers' Downsample2D does."""
    x = rnd(B, C, H, W)
    w = rnd(O, C, KH, KW, scale=1.0 / math.sqrt(C * KH * KW))
    b = rnd(O) if bias else None
    if isinstance(torch_pad, tuple):
        y = F.conv2d(F.pad(x, torch_pad, mode="constant", value=0.0), w, b, stride=S, padding=0)
    else:
        y = F.conv2d(x, w, b, stride=S, padding=torch_pad)
    dy = rnd(*y.shape, grad=False)
    ins = {"x": x, "w": w}
    if bias:
        ins["bias"] = b
    t = dict(ins, y=y, dy=dy, **grads_of(y, dy, ins))
    PT, PB, PL, PR = pads
    meta = {"op": "conv2d", "B": B, "C": C, "H": H, "W": W, "O": O, "KH": KH, "KW": KW,
            "SH": S, "SW": S, "PT": PT, "PB": PB, "PL": PL, "PR": PR, "bias": int(bias),
            "OH": y.shape[2], "OW": y.shape[3]}
    return t, meta


case("conv3x3_p1")(lambda: conv_case(2, 5, 7, 6, 4, 3, 3, 1, (1, 1, 1, 1), 1, True))
# Downsample2D(padding=0): F.pad(x, (0, 1, 0, 1)) then a stride-2 3x3 conv; odd width.
case("conv3x3_s2_pad0101")(lambda: conv_case(2, 4, 8, 7, 3, 3, 3, 2, (0, 1, 0, 1), (0, 1, 0, 1), True))
case("conv1x1_nobias")(lambda: conv_case(2, 6, 5, 4, 3, 1, 1, 1, (0, 0, 0, 0), 0, False))
case("conv4x4_s2_odd")(lambda: conv_case(1, 3, 9, 7, 5, 4, 4, 2, (1, 1, 1, 1), 1, True))


# ---------------------------------------------------------------- norms


def group_norm_case(eps, affine):
    B, C, H, W, G = 2, 32, 3, 4, 8
    x = rnd(B, C, H, W, scale=2.0, shift=0.5)
    ins = {"x": x}
    gamma = beta = None
    if affine:
        gamma, beta = rnd(C, scale=0.5, shift=1.0), rnd(C, scale=0.5)
        ins.update(gamma=gamma, beta=beta)
    y = F.group_norm(x, G, gamma, beta, eps)
    dy = rnd(*y.shape, grad=False)
    xd = x.detach().double().reshape(B, G, -1)
    mean = xd.mean(-1)
    rstd = 1.0 / torch.sqrt(xd.var(-1, unbiased=False) + eps)
    t = dict(ins, y=y, mean=mean, rstd=rstd, dy=dy, **grads_of(y, dy, ins))
    meta = {"op": "group_norm", "B": B, "C": C, "S": H * W, "G": G, "eps": repr(eps),
            "affine": int(affine)}
    return t, meta


case("group_norm_eps1e-6")(lambda: group_norm_case(1e-6, True))
case("group_norm_eps1e-5")(lambda: group_norm_case(1e-5, True))
case("group_norm_noaffine")(lambda: group_norm_case(1e-6, False))


def layer_norm_case(eps, affine):
    N, C = 6, 40
    x = rnd(N, C, scale=1.5, shift=-0.3)
    ins = {"x": x}
    gamma = beta = None
    if affine:
        gamma, beta = rnd(C, scale=0.5, shift=1.0), rnd(C, scale=0.5)
        ins.update(gamma=gamma, beta=beta)
    y = F.layer_norm(x, (C,), gamma, beta, eps)
    dy = rnd(N, C, grad=False)
    xd = x.detach().double()
    mean = xd.mean(-1)
    rstd = 1.0 / torch.sqrt(xd.var(-1, unbiased=False) + eps)
    t = dict(ins, y=y, mean=mean, rstd=rstd, dy=dy, **grads_of(y, dy, ins))
    return t, {"op": "layer_norm", "N": N, "C": C, "eps": repr(eps), "affine": int(affine)}


case("layer_norm_affine")(lambda: layer_norm_case(1e-5, True))
case("layer_norm_noaffine")(lambda: layer_norm_case(1e-6, False))


# ---------------------------------------------------------------- activations, softmax

ACTS = {
    "silu": (0, F.silu),
    "gelu": (1, lambda x: F.gelu(x, approximate="none")),
    "gelu_tanh": (2, lambda x: F.gelu(x, approximate="tanh")),
    "quick_gelu": (3, lambda x: x * torch.sigmoid(1.702 * x)),
}


def act_case(name):
    act_id, fn = ACTS[name]
    n = 301
    # Spread over the range where the curves bend, plus far tails, plus exact 0.
    x = torch.cat([torch.linspace(-12, 12, 41), torch.randn(n - 42) * 3, torch.zeros(1)])
    x = x.float().requires_grad_(True)
    y = fn(x)
    dy = rnd(n, grad=False)
    t = dict(x=x, y=y, dy=dy, **grads_of(y, dy, {"x": x}))
    return t, {"op": "act", "act": act_id, "act_name": name, "n": n}


for _a in ACTS:
    case("act_" + _a)(lambda _a=_a: act_case(_a))


@case("softmax")
def softmax_case():
    rows, cols = 7, 33
    x = rnd(rows, cols, scale=3.0)
    with torch.no_grad():
        x[2] += 60.0  # large logits: an implementation without max-subtraction overflows
        x[4, 5] = 80.0
    y = torch.softmax(x, dim=-1)
    dy = rnd(rows, cols, grad=False)
    t = dict(x=x, y=y, dy=dy, **grads_of(y, dy, {"x": x}))
    return t, {"op": "softmax", "rows": rows, "cols": cols}


# ---------------------------------------------------------------- attention


def attention_case(B, NH, TQ, TK, D, DV, kind):
    q, k, v = rnd(B, NH, TQ, D), rnd(B, NH, TK, D), rnd(B, NH, TK, DV)
    scale = 1.0 / math.sqrt(D)
    extra, meta = {}, {"mask": 0, "mask_batched": 0, "causal": 0, "key_keep": 0}
    logits = (q.detach().double() @ k.detach().double().transpose(-1, -2)) * scale
    if kind == "none":
        out = F.scaled_dot_product_attention(q, k, v)
    elif kind == "prior_mask":
        # diffusers PriorTransformer: text mask (B, 77) -> (1 - m) * -10000, padded with 4
        # zero columns for the embed/time/x/prd tokens, plus the causal -10000 triu(1) over
        # all 81 tokens; (B, 81, 81), repeated per head (heads share it).
        assert TQ == TK == 81
        text_len = [77, 40][:B] + [20] * max(0, B - 2)
        text_mask = torch.zeros(B, 77, dtype=torch.bool)
        for i, n in enumerate(text_len):
            text_mask[i, :n] = True
        m = (1 - text_mask.float()) * -10000.0
        m = F.pad(m, (0, 4), value=0.0)
        causal = torch.full((TQ, TK), -10000.0).triu_(1)
        mask = m[:, None, :] + causal[None]
        mask4 = mask.repeat_interleave(NH, dim=0).view(B, NH, TQ, TK)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask4)
        extra["mask"] = mask
        logits = logits + mask.double()[:, None]
        meta.update(mask=1, mask_batched=1)
    elif kind == "causal":
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        cm = torch.ones(TQ, TK, dtype=torch.bool).tril()
        logits = logits.masked_fill(~cm, float("-inf"))
        meta.update(causal=1)
    elif kind == "key_pad":
        keep = torch.ones(B, TK, dtype=torch.bool)
        keep[0, 3:5] = False
        keep[1, 1:] = False  # only key 0 stays for batch 1
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :])
        extra["key_keep"] = keep.to(torch.uint8)
        logits = logits.masked_fill(~keep[:, None, None, :], float("-inf"))
        meta.update(key_keep=1)
    else:
        raise ValueError(kind)
    lse = torch.logsumexp(logits, dim=-1)
    # The stored lse is only meaningful if these logits are the ones SDPA used: recompute the
    # output from them in double and require agreement with torch's float32 result.
    p64 = torch.exp(logits - lse[..., None]).nan_to_num(0.0)
    ref = p64 @ v.detach().double()
    err = (ref - out.detach().double()).abs().max().item()
    assert err < 1e-5, f"attention {kind}: SDPA and the stored mask disagree by {err}"
    dout = rnd(B, NH, TQ, DV, grad=False)
    ins = {"q": q, "k": k, "v": v}
    t = dict(ins, out=out, lse=lse, dout=dout, **extra, **grads_of(out, dout, ins))
    meta.update(op="attention", B=B, NH=NH, TQ=TQ, TK=TK, D=D, DV=DV, scale=repr(scale))
    return t, meta


case("attn_nomask")(lambda: attention_case(2, 3, 5, 7, 8, 6, "none"))
case("attn_prior_mask")(lambda: attention_case(2, 2, 81, 81, 8, 8, "prior_mask"))
case("attn_causal")(lambda: attention_case(2, 2, 9, 9, 8, 8, "causal"))
case("attn_key_pad")(lambda: attention_case(2, 2, 6, 7, 8, 8, "key_pad"))


# ---------------------------------------------------------------- upsample, timestep embedding


@case("upsample2x")
def upsample_case():
    B, C, H, W = 2, 3, 4, 5
    x = rnd(B, C, H, W)
    y = F.interpolate(x, scale_factor=2.0, mode="nearest")
    dy = rnd(*y.shape, grad=False)
    t = dict(x=x, y=y, dy=dy, **grads_of(y, dy, {"x": x}))
    return t, {"op": "upsample2x", "B": B, "C": C, "H": H, "W": W}


def timestep_case(dim, flip, shift):
    t_in = torch.tensor([0.0, 1.0, 17.5, 261.0, 999.0], requires_grad=True)
    y = get_timestep_embedding(t_in, dim, flip_sin_to_cos=bool(flip), downscale_freq_shift=shift,
                               scale=1, max_period=10000)
    dy = rnd(*y.shape, grad=False)
    t = dict(t=t_in, y=y, dy=dy, **grads_of(y, dy, {"t": t_in}))
    meta = {"op": "timestep_embed", "N": t_in.shape[0], "dim": dim, "flip_sin_to_cos": flip,
            "shift": repr(float(shift)), "scale": "1.0", "max_period": "10000.0"}
    return t, meta


case("timestep_flip1_shift0")(lambda: timestep_case(32, 1, 0))
case("timestep_flip0_shift1")(lambda: timestep_case(32, 0, 1))
case("timestep_flip1_shift1_odd")(lambda: timestep_case(17, 1, 1))
case("timestep_flip0_shift0_odd")(lambda: timestep_case(17, 0, 0))


# ---------------------------------------------------------------- loss, optimizer, clipping


def mse_case(weighted):
    B, C, H, W = 3, 4, 5, 5
    pred, target = rnd(B, C, H, W), rnd(B, C, H, W, grad=False)
    w = torch.tensor([0.25, 1.0, 3.5]) if weighted else torch.ones(B)
    # The diffusers training scripts: per-element MSE, mean over non-batch dims, times the
    # per-sample (Min-SNR) weight, mean over the batch.
    per = F.mse_loss(pred.float(), target.float(), reduction="none")
    per = per.mean(dim=list(range(1, per.ndim)))
    loss = (per * w).mean()
    dloss = torch.tensor(0.75)
    t = dict(pred=pred, target=target, per_sample=per, loss=loss.reshape(1),
             dloss=dloss.reshape(1), **grads_of(loss, dloss, {"pred": pred}))
    if weighted:
        t["w"] = w
    return t, {"op": "mse", "B": B, "N": C * H * W, "weighted": int(weighted)}


case("mse_weighted")(lambda: mse_case(True))
case("mse_unweighted")(lambda: mse_case(False))


def adamw_case(wd):
    n, steps = 37, 5
    lr, b1, b2, eps = 1e-3, 0.9, 0.999, 1e-8
    p = torch.nn.Parameter(torch.randn(n))
    p0 = p.detach().clone()
    grads = torch.randn(steps, n) * torch.tensor([1.0, 0.1, 3.0, 1e-3, 0.5])[:, None]
    grads[:, :3] *= 1e-6  # tiny gradients: eps matters in the denominator
    # foreach=False is the path torch takes for CPU tensors anyway (the single-tensor loop whose
    # formulas ops.h states); fused=False likewise.
    opt = torch.optim.AdamW([p], lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd,
                            foreach=False, fused=False)
    ps, ms, vs = [], [], []
    for s in range(steps):
        p.grad = grads[s].clone()
        opt.step()
        st = opt.state[p]
        ps.append(p.detach().clone())
        ms.append(st["exp_avg"].clone())
        vs.append(st["exp_avg_sq"].clone())
    t = {"p0": p0, "g": grads, "p": torch.stack(ps), "m": torch.stack(ms), "v": torch.stack(vs)}
    meta = {"op": "adamw", "n": n, "steps": steps, "lr": repr(lr), "beta1": repr(b1),
            "beta2": repr(b2), "eps": repr(eps), "weight_decay": repr(wd)}
    return t, meta


case("adamw_wd1e-2")(lambda: adamw_case(1e-2))
case("adamw_wd0")(lambda: adamw_case(0.0))


def clip_case(scale):
    sizes = (5, 12, 7)
    ps = [torch.nn.Parameter(torch.zeros(s)) for s in sizes]
    gs = [torch.randn(s) * scale for s in sizes]
    for p, g in zip(ps, gs):
        p.grad = g.clone()
    total = torch.nn.utils.clip_grad_norm_(ps, max_norm=1.0)
    t = {}
    for i, (p, g) in enumerate(zip(ps, gs)):
        t[f"g{i}"] = g
        t[f"g{i}_clipped"] = p.grad
    t["total_norm"] = total.reshape(1)
    return t, {"op": "clip_grad_norm", "nbufs": len(sizes), "max_norm": "1.0"}


case("clip_grad_norm_above")(lambda: clip_case(1.0))   # total norm ~ 4.8: scaled down
case("clip_grad_norm_below")(lambda: clip_case(0.08))  # total norm ~ 0.4: coef clamps to 1


# ---------------------------------------------------------------- driver


def versions():
    import safetensors

    return {"python": sys.version.split()[0], "torch": torch.__version__,
            "diffusers": diffusers.__version__, "safetensors": safetensors.__version__,
            "numpy": np.__version__}


def canonical_header(path):
    """safetensors (the Rust writer) emits the header from a hash map, so key order, and with
    it the file's bytes, change from run to run. Rewrite the header JSON with sorted keys (the
    data section and its offsets are untouched) so reruns give identical files and MANIFEST
    hashes are stable."""
    with open(path, "rb") as f:
        raw = f.read()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # keep the data section 8-byte aligned
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text + raw[8 + n :])


def write_case(name, fn, out_dir, vers):
    seed = seed_for(name)
    torch.manual_seed(seed)
    tensors, meta = fn()
    arrays = {}
    for k, t in tensors.items():
        if t is None:
            raise RuntimeError(f"{name}: tensor {k} is None (no gradient reached it)")
        a = t.detach().contiguous().numpy().copy()
        arrays[k] = a if a.dtype == np.uint8 else a.astype(np.float32)
    md = {k: str(v) for k, v in meta.items()}
    md.update(case=name, seed=str(seed), generator="tools/reference/make_op_fixtures.py",
              dtype="float32", device="cpu", deterministic="1", threads="1")
    md.update({"version_" + k: v for k, v in vers.items()})
    path = os.path.join(out_dir, name + ".safetensors")
    save_file(arrays, path, metadata=md)
    canonical_header(path)
    os.chmod(path, 0o644)
    return path, seed


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="tests/fixtures/ops")
    ap.add_argument("--seeds-json", help="also write {case: seed} here (for MANIFEST.json)")
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)  # fixed reduction order, same bytes on any machine
    os.makedirs(args.out, exist_ok=True)
    vers = versions()
    for old in os.listdir(args.out):
        if old.endswith(".safetensors") and old[: -len(".safetensors")] not in CASES:
            os.remove(os.path.join(args.out, old))
    seeds, total = {}, 0
    for name, fn in CASES.items():
        path, seeds[name] = write_case(name, fn, args.out, vers)
        total += os.path.getsize(path)
    if total > MAX_TOTAL_BYTES:
        sys.exit(f"make_op_fixtures: {total} bytes written, over the {MAX_TOTAL_BYTES} budget")
    if args.seeds_json:
        with open(args.seeds_json, "w") as f:
            json.dump({"seed_base": SEED_BASE, "cases": seeds}, f, indent=1, sort_keys=True)
    print(f"make_op_fixtures: {len(CASES)} cases, {total} bytes in {args.out} "
          f"(torch {torch.__version__}, diffusers {diffusers.__version__})")


if __name__ == "__main__":
    main()
