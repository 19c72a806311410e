#!/usr/bin/env bash
# prior_step.sh: one training step of the tiny prior, k22 (reference and fast CPU modes) beside
# PyTorch, in one run on this machine, same folder, same batch; prints both and the ratio.
# Usage: bench/prior_step.sh [BATCH] [STEPS]   (needs build/ and tools/reference/.venv for torch)
set -euo pipefail
cd "$(dirname "$0")/.."
B=${1:-8}
N=${2:-50}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
build/k22 init prior --size tiny --seed 0 --out "$tmp/p" >/dev/null 2>&1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} OMP_WAIT_POLICY=PASSIVE
k22_out=$(build/bench_prior_step "$tmp/p/prior" "$B" "$N")
echo "$k22_out"
if [ -x tools/reference/.venv/bin/python ]; then
  torch_out=$(tools/reference/.venv/bin/python bench/prior_step_torch.py "$tmp/p/prior" "$B" "$N")
  echo "$torch_out"
  k=$(echo "$k22_out" | awk '/k22 cpu /{print $5}')
  t=$(echo "$torch_out" | awk '{print $5}')
  awk -v k="$k" -v t="$t" 'BEGIN{printf "ratio (k22 cpu CPU time / torch CPU time): %.2f\n", k/t}'
else
  echo "prior_step.sh: no tools/reference/.venv: run make fixtures (or make conformance) once for the torch side"
fi
