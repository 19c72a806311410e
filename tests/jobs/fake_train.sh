#!/usr/bin/env bash
# fake_train.sh: a stand-in for `k22 train-prior|train-decoder|pack` that behaves like them towards
# Slurm, so the jobs/ machinery is tested without the real trainer: it takes the same flags, writes
# --output_dir/checkpoint-N/ (marked complete by a file written last) every --checkpointing_steps
# steps, resumes from the newest complete one with --resume_from_checkpoint latest, and on SIGUSR1
# or SIGTERM checkpoints at the next step boundary and exits 99. Normal completion exits 0.
# FAKE_STEP_SECONDS (0.2) is the time per step; FAKE_FAIL_AT=N exits 1 at step N (a crash).
set -u
SIG=""
trap 'SIG=USR1' USR1
trap 'SIG=TERM' TERM

cmd=${1:-}; shift || true
out="" ; max=20 ; every=5 ; resume="" ; packout=""
while [ $# -gt 0 ]; do
  case "$1" in
    --help) echo "fake_train.sh: stand-in for k22 train-prior/train-decoder/pack"; exit 0 ;;
    --output_dir) out=$2; shift ;;
    --max_train_steps) max=$2; shift ;;
    --checkpointing_steps) every=$2; shift ;;
    --resume_from_checkpoint) resume=$2; shift ;;
    --out) packout=$2; shift ;;
    --*) [ $# -gt 1 ] && [ "${2#--}" = "$2" ] && shift ;;   # any other flag and its value
  esac
  shift
done
host=$(hostname -s)
say() { echo "[fake $cmd pid $$ on $host] $*"; }

# one step: sleep in the background so the traps run as soon as a signal arrives
step_sleep() { sleep "${FAKE_STEP_SECONDS:-0.2}" & wait $! 2>/dev/null || wait $! 2>/dev/null; }

if [ "$cmd" = pack ]; then
  [ -n "$packout" ] || { echo "fake pack: --out is required" >&2; exit 2; }
  for _ in 1 2 3; do step_sleep; done
  echo "fake pack" >"$packout"
  say "wrote $packout"
  exit 0
fi
case "$cmd" in train-prior|train-decoder) ;; *) echo "fake: unknown command '$cmd'" >&2; exit 2 ;; esac
[ -n "$out" ] || { echo "fake $cmd: --output_dir is required" >&2; exit 2; }
mkdir -p "$out"

ckpt_write() {
  rm -rf "$out/checkpoint-$1.tmp"
  mkdir -p "$out/checkpoint-$1.tmp"
  echo "$1" >"$out/checkpoint-$1.tmp/step"
  mv "$out/checkpoint-$1.tmp" "$out/checkpoint-$1"
  : >"$out/checkpoint-$1/COMPLETE"
  say "wrote checkpoint-$1"
}

step=0
if [ "$resume" = latest ]; then
  for d in "$out"/checkpoint-*/COMPLETE; do
    [ -f "$d" ] || continue
    n=$(cat "$(dirname "$d")/step")
    [ "$n" -gt "$step" ] && step=$n
  done
  [ "$step" -gt 0 ] && say "resumed from checkpoint-$step"
fi
echo "start $step ${SLURM_RESTART_COUNT:-0}" >>"$out/runs.txt"

while [ "$step" -lt "$max" ]; do
  step_sleep
  step=$((step + 1))
  if [ -n "${FAKE_FAIL_AT:-}" ] && [ "$step" -ge "$FAKE_FAIL_AT" ]; then
    say "simulated crash at step $step"
    exit 1
  fi
  if [ -n "$SIG" ]; then
    ckpt_write "$step"
    say "SIG$SIG: checkpointed at step $step, exiting 99 (requeue me)"
    exit 99
  fi
  [ $((step % every)) -eq 0 ] && ckpt_write "$step"
done
echo "$step" >"$out/DONE"
echo '{"_class_name": "fake"}' >"$out/model_index.json"   # k22 ends with a complete pipeline
say "finished at step $step"
exit 0
