#!/usr/bin/env bash
# decoder_step.sh: one training step of the tiny decoder UNet, k22 (reference and fast CPU modes)
# beside PyTorch, in one run on this machine, same folder, same shapes: batch 2 at 16x16 latents
# and batch 4 at 32x32; prints each and the ratio of CPU times.
# Usage: bench/decoder_step.sh [STEPS] [BUILD_DIR]  (needs tools/reference/.venv for torch)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20}
BUILD=${2:-build}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$BUILD"/k22 init decoder --size tiny --seed 0 --out "$tmp/d" >/dev/null 2>&1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} OMP_WAIT_POLICY=PASSIVE
for shape in "2 16" "4 32"; do
  set -- $shape
  # the reference backend is slow: a quarter of the steps (at least 2)
  k22_out=$("$BUILD"/bench_decoder_step "$tmp/d/unet" "$1" "$2" "$N" $(( N / 4 > 2 ? N / 4 : 2 )))
  echo "$k22_out"
  if [ -x tools/reference/.venv/bin/python ]; then
    torch_out=$(tools/reference/.venv/bin/python bench/decoder_step_torch.py "$tmp/d/unet" "$1" "$2" "$N")
    echo "$torch_out"
    t=$(echo "$torch_out" | awk '{print $6}')
    for be in cpu-ref cpu; do
      k=$(echo "$k22_out" | awk -v be="$be" '$2 == be {print $6}')
      awk -v k="$k" -v t="$t" -v be="$be" 'BEGIN{printf "ratio (k22 %s CPU time / torch CPU time): %.2f\n", be, k/t}'
    done
  else
    echo "decoder_step.sh: no tools/reference/.venv: run make fixtures (or make conformance) once for the torch side"
  fi
done
