#!/usr/bin/env bash
# carry_diffusers.sh: the GPU machine has torch and transformers but no diffusers and no network
# (/work/shared/notes/gpu-machine.md). This packs the reference venv's diffusers (pure Python,
# the pinned 0.42.1) into build-pydeps/pydeps.tar.xz (git-ignored, about 2.5 MB; carry it with
# the run), in two layers: first/ holds diffusers alone; fallback/ holds the venv's
# huggingface_hub, used by bench/train_vs_torch.sh only when diffusers does not import with the
# machine's own (diffusers 0.42.1 wants huggingface-hub >= 1.32; transformers 5.17 brings one).
# Unverified on the GPU machine until a session runs it: the first one must check the import.
#   bench/carry_diffusers.sh        # here, after tools/reference/.venv exists (make fixtures)
set -euo pipefail
cd "$(dirname "$0")/.."
site=$(tools/reference/.venv/bin/python -c 'import diffusers, os; print(os.path.dirname(os.path.dirname(diffusers.__file__)))')
out=build-pydeps
rm -rf "$out/stage" && mkdir -p "$out/stage/first" "$out/stage/fallback"
cp -r "$site/diffusers" "$out/stage/first/"
cp -r "$site/huggingface_hub" "$out/stage/fallback/"
find "$out/stage" -name __pycache__ -prune -exec rm -rf {} +
tar -C "$out/stage" -cJf "$out/pydeps.tar.xz" first fallback
rm -rf "$out/stage"
echo "carry_diffusers.sh: $(du -h "$out/pydeps.tar.xz" | cut -f1) in $out/pydeps.tar.xz (carry build-pydeps)"
