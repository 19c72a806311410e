#!/usr/bin/env bash
# test_slurm_outcomes: what jobs/lib/requeue.sh must NOT requeue, and pack.sbatch, on a real
# single-node Slurm:
#   - a workload that fails (exit 1) ends FAILED with Restarts=0;
#   - a job the user cancels (scancel: SIGTERM, the workload checkpoints and exits 99) stays
#     CANCELLED with Restarts=0;
#   - with a real k22, train-prior on a missing pack ends FAILED, not requeued;
#   - jobs/pack.sbatch completes and writes the pack (real `k22 pack` when the binary has it);
#   - jobs/train-decoder.sbatch runs its workload to completion (stand-in only).
TEST_NAME=test_slurm_outcomes
source "$(dirname "${BASH_SOURCE[0]}")/slurm_common.sh"

FAKE=$SRC/tests/jobs/fake_train.sh
[ -x "$FAKE" ] || { fail "$FAKE is not executable (git mode 755)"; finish; }
REAL=0
if [ "${K22_JOBS_FAKE:-0}" != 1 ] && "$K22_BIN" train-prior --help >/dev/null 2>&1 \
    && "$K22_BIN" pack --help >/dev/null 2>&1; then
  REAL=1
fi
mkdir -p "$WORK/fail" "$WORK/cancel"

# 1. a crash: exit 1 at step 3
JF=$(K22=$FAKE PACK=x PRETRAINED=x OUTPUT_DIR=$WORK/fail/out K22_ARGS="--max_train_steps 20" \
  FAKE_FAIL_AT=3 FAKE_STEP_SECONDS=0.1 \
  submit --chdir="$WORK/fail" --output="$WORK/fail.log" -J k22-test-fail "$SRC/jobs/train-prior.sbatch")
# 2. a user cancel while training
JC=$(K22=$FAKE PACK=x PRETRAINED=x OUTPUT_DIR=$WORK/cancel/out K22_ARGS="--max_train_steps 400" \
  FAKE_STEP_SECONDS=0.2 \
  submit --chdir="$WORK/cancel" --output="$WORK/cancel.log" -J k22-test-cancel "$SRC/jobs/train-prior.sbatch")
# 3. train-decoder.sbatch runs to the end (the requeue path is the one train-prior's test covers)
JD=$(K22=$FAKE PACK=x PRETRAINED=x OUTPUT_DIR=$WORK/dec/out K22_ARGS="--max_train_steps 5" \
  FAKE_STEP_SECONDS=0.1 \
  submit --chdir="$WORK" --output="$WORK/dec.log" -J k22-test-dec "$SRC/jobs/train-decoder.sbatch")
tlog "submitted $JF (fails at step 3), $JC (cancelled by the user), $JD (train-decoder)"

cancel_ready() { [ -f "$WORK/cancel/out/checkpoint-5/COMPLETE" ]; }
if wait_for 90 cancel_ready; then
  scancel "$JC"
  tlog "scancel $JC after its first checkpoint"
else
  fail "job $JC wrote no checkpoint within 90 s (state $(job_field "$JC" JobState))"
fi

S=$(wait_job_done "$JF" 30)
check "failing job ends FAILED (got $S)" [ "$S" = FAILED ]
check "failing job not requeued (Restarts=$(job_field "$JF" Restarts))" [ "$(job_field "$JF" Restarts)" = 0 ]
check "failing job exit code 1:0 (got $(job_field "$JF" ExitCode))" [ "$(job_field "$JF" ExitCode)" = 1:0 ]
check "log says not requeued" grep -q 'failed with exit code 1: not requeued' "$WORK/fail.log"

S=$(wait_job_done "$JC" 30)
# a requeue would show within the 5 s requeue delay + 1 s scheduling interval: wait that long
sleep 7
check "cancelled job ends CANCELLED (got $S)" [ "$S" = CANCELLED ]
check "and stays CANCELLED (now $(job_field "$JC" JobState))" [ "$(job_field "$JC" JobState)" = CANCELLED ]
check "cancelled job not requeued (Restarts=$(job_field "$JC" Restarts))" [ "$(job_field "$JC" Restarts)" = 0 ]
check "cancelled job never started again" [ "$(grep -c 'start: srun' "$WORK/cancel.log")" = 1 ]

S=$(wait_job_done "$JD" 30)
check "train-decoder job COMPLETED (got $S)" [ "$S" = COMPLETED ]
check "train-decoder workload ran as train-decoder to step 5" grep -q 'fake train-decoder .* finished at step 5' "$WORK/dec.log"

# 4. pack.sbatch
mkdir -p "$WORK/pack"
if [ "$REAL" = 1 ]; then
  tlog "pack workload: $K22_BIN pack (tiny prior, 6 images)"
  "$K22_BIN" synth --out "$WORK/pack/data" --n 6 --seed 0 --min_size 64 --max_size 96 >"$WORK/setup.log" 2>&1
  "$K22_BIN" init prior --size tiny --seed 0 --out "$WORK/pack/prior" >>"$WORK/setup.log" 2>&1
  PK=$K22_BIN
  # 5. a real k22 error (missing pack) is a failure, not a requeue
  JE=$(K22=$K22_BIN PACK=$WORK/no-such.h5 PRETRAINED=$WORK/pack/prior OUTPUT_DIR=$WORK/err/out \
    K22_ARGS="--max_train_steps 5" \
    submit --chdir="$WORK" --output="$WORK/err.log" -J k22-test-err "$SRC/jobs/train-prior.sbatch")
else
  tlog "pack workload: tests/jobs/fake_train.sh pack"
  PK=$FAKE
fi
JP=$(K22=$PK TRAIN_DATA_DIR=$WORK/pack/data PRIOR=$WORK/pack/prior PACK_FOR=prior PACK=$WORK/pack/p.h5 \
  K22_ARGS="" submit --chdir="$WORK/pack" --output="$WORK/pack.log" -J k22-test-pack "$SRC/jobs/pack.sbatch")
S=$(wait_job_done "$JP" 40)
check "pack job COMPLETED (got $S)" [ "$S" = COMPLETED ]
check "pack written" [ -s "$WORK/pack/p.h5" ]
if [ "$REAL" = 1 ]; then
  check "pack passes k22 inspect" "$K22_BIN" inspect "$WORK/pack/p.h5"
  S=$(wait_job_done "$JE" 30)
  check "k22 error (missing pack) ends FAILED (got $S)" [ "$S" = FAILED ]
  check "k22 error not requeued" [ "$(job_field "$JE" Restarts)" = 0 ]
fi
tlog "total $(elapsed) s"
finish
