#!/usr/bin/env bash
# gpu_bench.sh: bench/train_vs_torch.sh on the GPU machine, with the k22 binaries brought by
# scripts/gpu-bundle (that machine cannot build k22: no MPI, HDF5, OpenBLAS there) and diffusers
# brought by bench/carry_diffusers.sh. Run from the repository root there, carrying .gpu-bundle and
# build-pydeps; every argument goes to train_vs_torch.sh, logs go under $OUT/bench (or
# .gpu-bundle/logs/bench). bench/NOTES.md has the whole recipe.
#   bench/gpu_bench.sh --size full --device cuda
#   MAX_BATCH_IMPLS=k22 bench/gpu_bench.sh --size full --device cuda --max-batch
#   bench/gpu_bench.sh --pack --size full --device cuda   # bench/pack_vs_torch.sh instead (item 5)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=/tmp/k22-gpu-bundle
out=${OUT:-.gpu-bundle/logs}/bench
eval "$(K22_BUNDLE_DIR=$dir scripts/gpu-bundle env)" || exit 2 # unpacks; library path, Open MPI
[ -x "$dir/bin/bench_train_step" ] || { echo "gpu_bench.sh: the bundle has no bench_train_step (scripts/gpu-bundle pack must build and pack it)" >&2; exit 2; }
mkdir -p "$out"
{ nvidia-smi -L; nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit --format=csv; } >"$out/gpu.txt" 2>&1 || true
cat "$out/gpu.txt"
[ "${1:-}" != --pack ] || { shift; exec bench/pack_vs_torch.sh --bin "$dir/bin/bench_pack_encode" --python python3 --log "$out" "$@"; }
exec bench/train_vs_torch.sh --bin "$dir/bin/bench_train_step" --python python3 --log "$out" "$@"
