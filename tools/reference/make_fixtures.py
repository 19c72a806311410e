"""Rebuilds tests/fixtures with the pinned PyTorch reference and writes tests/fixtures/MANIFEST.json.

`make fixtures` runs:
  tools/reference/.venv/bin/python tools/reference/make_fixtures.py --k22 build/k22 --out tests/fixtures

It runs every fixture generator of GENERATORS that exists in tools/reference (a missing one is
reported and skipped, a failing one stops the run), checks that the CLIP tokenizer files compiled
into k22 (data/clip-tokenizer) are exactly what make_tokenizer.py derives from open_clip, then
lists every file under --out with its sha256, size and generator, plus the versions of the
reference packages and the seeds. The manifest holds no timestamps, so rerunning with unchanged
fixtures gives an identical manifest. CI never runs this: it uses the committed fixtures.
"""
import argparse
import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
MAX_TOTAL_BYTES = 30 * 1024 * 1024
PACKAGES = ("torch", "diffusers", "transformers", "safetensors", "numpy", "pillow",
            "open_clip_torch", "accelerate")

# script, the sub-folder of --out it owns, whether it takes --out (the others write to the
# repository's tests/fixtures/<sub> themselves), and the seeds it uses when it has no seed file.
GENERATORS = [
    ("make_op_fixtures.py", "ops", True, None),
    ("make_param_fixtures.py", "configs", False,
     "none: models built on the meta device, configs and key lists only, no random values"),
    ("make_safetensors_fixtures.py", "safetensors", False,
     "none: tensor values are closed-form (value(i) in the script)"),
    ("make_tokenizer_fixtures.py", "tokenizer", False,
     "random.Random(22) picks the generated captions"),
    ("make_model_fixtures.py", "models", True, None),
    ("make_schedule_fixtures.py", "schedule", True, "SEED 22044 in the script"),
    ("make_image_fixtures.py", "images", False, "numpy default_rng seeds in the script"),
    ("make_movq_fixtures.py", "movq", True, None),
    ("prior_train_ref.py", "prior_train", True, None),
    ("make_unet_fixtures.py", "unet", True, None),
    ("decoder_train_ref.py", "decoder_train", True, None),
    ("pack_ref.py", "pack", False, "k22 synth --seed 3, k22 init --seed 0 (in the script)"),
    ("make_sample_fixtures.py", "sample", True, None),
    ("make_flops_fixtures.py", "flops", False, "none: models run on the meta device, no values"),
]


def extra_args(script, k22):
    """Arguments beyond --out that a generator needs: the model fixtures take their weights
    from k22's own deterministic init (k22 init, and model_test_clip --write-weights)."""
    if script == "make_model_fixtures.py":
        build = os.path.dirname(os.path.abspath(k22))
        return ["--k22", k22, "--clip-test", os.path.join(build, "model_test_clip")]
    if script == "make_unet_fixtures.py":
        build = os.path.dirname(os.path.abspath(k22))
        return ["--k22", k22, "--unet-test", os.path.join(build, "model_test_unet")]
    if script == "pack_ref.py":
        return [os.path.dirname(os.path.abspath(k22))]
    if script in ("prior_train_ref.py", "decoder_train_ref.py", "make_sample_fixtures.py"):
        return ["--k22", k22]
    if script == "make_movq_fixtures.py":
        build = os.path.dirname(os.path.abspath(k22))
        return ["--k22", k22, "--movq-test", os.path.join(build, "model_test_movq")]
    return []
# make_*.py scripts that are not fixture generators: make_tokenizer.py is run as a check (below);
# make_unicode_tables.py writes C source (io/unicode_tables.c), not a fixture.
NOT_GENERATORS = {"make_fixtures.py", "make_tokenizer.py", "make_unicode_tables.py"}
TOKENIZER_SCRIPT = "make_tokenizer.py"
TOKENIZER_DIR = os.path.join("data", "clip-tokenizer")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def versions():
    v = {"python": platform.python_version()}
    for p in PACKAGES:
        try:
            v[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            v[p] = None
    return v


def run(argv, what):
    print(f"make_fixtures: {what}: {' '.join(argv)}", flush=True)
    r = subprocess.run(argv, cwd=ROOT)
    if r.returncode != 0:
        sys.exit(f"make_fixtures: {what} failed with exit code {r.returncode}")


def run_generators(out, seeds, k22):
    """Runs each generator that exists; returns {sub-folder: script} for the manifest."""
    known = {g[0] for g in GENERATORS} | NOT_GENERATORS
    for n in sorted(os.listdir(HERE)):
        if n.startswith("make_") and n.endswith(".py") and n not in known:
            print(f"make_fixtures: warning: {n} is not in GENERATORS and was not run; add it "
                  f"with the folder it writes", flush=True)
    owners = {}
    repo_out = os.path.join(ROOT, "tests", "fixtures")
    for script, sub, takes_out, fixed_seeds in GENERATORS:
        path = os.path.join(HERE, script)
        if not os.path.exists(path):
            print(f"make_fixtures: {script} not present; {sub}/ left as it is", flush=True)
            continue
        owners[sub] = "tools/reference/" + script
        argv = [sys.executable, path] + extra_args(script, k22)
        if takes_out:
            run(argv + ["--out", os.path.join(out, sub)], script)
            continue
        if os.path.realpath(out) != os.path.realpath(repo_out):
            sys.exit(f"make_fixtures: {script} writes only to {repo_out}/{sub}; "
                     f"run with --out tests/fixtures")
        run(argv, script)
        seeds[script] = fixed_seeds
    return owners


def st_metadata(path):
    """The __metadata__ map of a safetensors file (header JSON only; no tensor is read)."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if n > 100 << 20:
            raise ValueError(f"{path}: header length {n} is implausible")
        return json.loads(f.read(n)).get("__metadata__", {})


def op_seeds(out):
    """{case: seed} as recorded in each op fixture (make_op_fixtures.py seeds every case)."""
    d = os.path.join(out, "ops")
    if not os.path.isdir(d):
        return None
    seeds = {}
    for n in sorted(os.listdir(d)):
        if n.endswith(".safetensors"):
            md = st_metadata(os.path.join(d, n))
            seeds[md.get("case", n)] = int(md["seed"]) if "seed" in md else None
    return seeds


def embedded_entry(name, checked):
    path = os.path.join(ROOT, TOKENIZER_DIR, name)
    return {"path": f"{TOKENIZER_DIR}/{name}", "sha256": sha256(path),
            "size": os.path.getsize(path), "generator": "tools/reference/" + TOKENIZER_SCRIPT,
            "checked_against_generator": checked}


def check_tokenizer():
    """Re-derives the tokenizer files and requires them byte-equal to the embedded ones."""
    path = os.path.join(HERE, TOKENIZER_SCRIPT)
    if not os.path.exists(path):
        print(f"make_fixtures: {TOKENIZER_SCRIPT} not present; tokenizer not checked")
        return []
    entries = []
    with tempfile.TemporaryDirectory() as tmp:
        run([sys.executable, path, "--out", tmp], TOKENIZER_SCRIPT + " (check)")
        for name in ("vocab.json", "merges.txt"):
            made, committed = os.path.join(tmp, name), os.path.join(ROOT, TOKENIZER_DIR, name)
            if not os.path.exists(committed):
                sys.exit(f"make_fixtures: {committed} missing (k22 embeds it)")
            if sha256(made) != sha256(committed):
                sys.exit(f"make_fixtures: {TOKENIZER_DIR}/{name} differs from what "
                         f"{TOKENIZER_SCRIPT} derives from open_clip; rerun it with "
                         f"--out {TOKENIZER_DIR}")
            entries.append(embedded_entry(name, True))
    print("make_fixtures: embedded CLIP tokenizer files match make_tokenizer.py")
    return entries


def k22_version(k22):
    if not k22 or not os.access(k22, os.X_OK):
        return None
    r = subprocess.run([k22, "version"], capture_output=True, text=True)
    return r.stdout.strip().splitlines()[0] if r.returncode == 0 and r.stdout.strip() else None


def list_files(out, owners):
    files, total = [], 0
    for dirpath, dirnames, names in os.walk(out):
        dirnames.sort()
        for n in sorted(names):
            full = os.path.join(dirpath, n)
            rel = os.path.relpath(full, out).replace(os.sep, "/")
            if rel == "MANIFEST.json":
                continue
            size = os.path.getsize(full)
            total += size
            sub = rel.split("/", 1)[0]
            files.append({"path": rel, "sha256": sha256(full), "size": size,
                          "generator": owners.get(sub, "unknown (no generator owns this folder)")})
    return files, total


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--k22", default="build/k22", help="the k22 binary (its version is recorded)")
    ap.add_argument("--out", default="tests/fixtures")
    ap.add_argument("--manifest-only", action="store_true",
                    help="do not run the generators; only rewrite MANIFEST.json")
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)

    seeds = {}
    if args.manifest_only:
        owners = {sub: "tools/reference/" + s for s, sub, _, _ in GENERATORS
                  if os.path.exists(os.path.join(HERE, s))}
        for s, _, _, fixed in GENERATORS:
            if fixed and os.path.exists(os.path.join(HERE, s)):
                seeds[s] = fixed
        checked = [embedded_entry(n, False) for n in ("vocab.json", "merges.txt")
                   if os.path.exists(os.path.join(ROOT, TOKENIZER_DIR, n))]
    else:
        owners = run_generators(out, seeds, args.k22)
        checked = check_tokenizer()
    if "ops" in owners:
        seeds["make_op_fixtures.py"] = {"per_case": op_seeds(out),
                                        "rule": "SEED_BASE + crc32(case name) % 100000, "
                                                "torch.manual_seed before each case"}

    files, total = list_files(out, owners)
    manifest = {
        "about": "Fixtures written by the pinned PyTorch reference (tools/reference/README.md). "
                 "CI uses these committed files and never regenerates them.",
        "command": "tools/reference/.venv/bin/python tools/reference/make_fixtures.py "
                   "--k22 build/k22 --out tests/fixtures",
        "versions": versions(),
        "k22": k22_version(args.k22),
        "seeds": seeds,
        "total_size": total,
        "max_total_size": MAX_TOTAL_BYTES,
        "files": files,
        "checked_embedded": checked,
    }
    path = os.path.join(out, "MANIFEST.json")
    with open(path + ".tmp", "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(path + ".tmp", path)
    print(f"make_fixtures: {len(files)} files, {total} bytes -> {path}")
    if total > MAX_TOTAL_BYTES:
        sys.exit(f"make_fixtures: fixtures total {total} bytes, over the {MAX_TOTAL_BYTES}-byte "
                 f"limit; shrink the cases")


if __name__ == "__main__":
    main()
