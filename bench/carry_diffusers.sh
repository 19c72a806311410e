#!/usr/bin/env bash
# carry_diffusers.sh: the GPU machine has torch, transformers and huggingface_hub but no diffusers
# and no network (/work/shared/notes/gpu-machine.md, the device tool's KINDS.md). This packs the
# pinned diffusers 0.42.1 (pure Python) into build-pydeps/pydeps.tar.xz (git-ignored, about 3 MB;
# carry it with the run), in two layers: first/ holds diffusers (and importlib_metadata, which it
# lists and that machine lacks); fallback/ holds a huggingface_hub, used by bench/bench_lib.sh only
# when diffusers does not import with the machine's own (diffusers 0.42.1 wants >= 1.32).
# Source: the reference venv when it exists (make fixtures), else wheels from the package index
# (pip download: no torch needed here).
#   bench/carry_diffusers.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out=build-pydeps
rm -rf "$out/stage" && mkdir -p "$out/stage/first" "$out/stage/fallback"
if [ -x tools/reference/.venv/bin/python ]; then
    site=$(tools/reference/.venv/bin/python -c 'import diffusers, os; print(os.path.dirname(os.path.dirname(diffusers.__file__)))')
    cp -r "$site/diffusers" "$out/stage/first/"
    cp -r "$site/huggingface_hub" "$out/stage/fallback/"
    [ ! -d "$site/importlib_metadata" ] || cp -r "$site/importlib_metadata" "$out/stage/first/"
else
    whl=$out/stage/whl
    mkdir -p "$whl"
    get() { python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp -d "$whl" "$1"; }
    get diffusers==0.42.1
    get importlib_metadata
    get 'huggingface-hub>=1.32,<2'
    for w in "$whl"/diffusers-*.whl "$whl"/importlib_metadata-*.whl; do
        python3 -m zipfile -e "$w" "$out/stage/first"
    done
    python3 -m zipfile -e "$whl"/huggingface_hub-*.whl "$out/stage/fallback"
    rm -rf "$whl" "$out"/stage/*/*.dist-info
fi
find "$out/stage" -name __pycache__ -prune -exec rm -rf {} +
tar -C "$out/stage" -cJf "$out/pydeps.tar.xz" first fallback
rm -rf "$out/stage"
echo "carry_diffusers.sh: $(du -h "$out/pydeps.tar.xz" | cut -f1) in $out/pydeps.tar.xz (carry build-pydeps)"
