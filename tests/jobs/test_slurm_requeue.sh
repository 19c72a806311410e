#!/usr/bin/env bash
# test_slurm_requeue: preemption on a real single-node Slurm. Submits jobs/train-prior.sbatch,
# waits for its first checkpoint, sends the preemption signal to the batch shell (as
# --signal=B:USR1@T would), and checks that the workload checkpoints and exits 99, that the job
# requeues itself (Restarts=1), resumes from that checkpoint and ends COMPLETED.
# The workload is `k22 train-prior` on a tiny model when the binary has it (K22_JOBS_FAKE=1 forces
# the stand-in), else tests/jobs/fake_train.sh, which behaves the same way towards Slurm.
TEST_NAME=test_slurm_requeue
source "$(dirname "${BASH_SOURCE[0]}")/slurm_common.sh"

OUT=$WORK/out
if [ "${K22_JOBS_FAKE:-0}" != 1 ] && "$K22_BIN" train-prior --help >/dev/null 2>&1 \
    && "$K22_BIN" pack --help >/dev/null 2>&1; then
  MODE=real
  tlog "workload: $K22_BIN train-prior (tiny prior, CPU)"
  "$K22_BIN" synth --out "$WORK/data" --n 8 --seed 0 --min_size 64 --max_size 96 >"$WORK/setup.log" 2>&1
  "$K22_BIN" init prior --size tiny --seed 0 --out "$WORK/prior" >>"$WORK/setup.log" 2>&1
  "$K22_BIN" pack --train_data_dir "$WORK/data" --prior "$WORK/prior" --for prior \
    --out "$WORK/pack.h5" --quiet >>"$WORK/setup.log" 2>&1
  COMMON="--train_batch_size 2 --lr_warmup_steps 0 --seed 0"
  # calibrate: size the run so that its steps last about 20 s, whatever this machine's speed
  # (the job can run faster than the calibration did; the signal must still find it running).
  # The step time is metrics.jsonl's time_s (the training loop's own clock): timing the whole
  # command counted its start-up as steps, and on a loaded machine the job then ran in 1 s and
  # ended before the preemption signal reached it.
  # shellcheck disable=SC2086
  "$K22_BIN" train-prior --pack "$WORK/pack.h5" --pretrained "$WORK/prior" \
    --output_dir "$WORK/calib" --max_train_steps 40 --checkpointing_steps 1000 $COMMON \
    >>"$WORK/setup.log" 2>&1
  per_step=$(awk -F'"time_s": ' 'NF > 1 { t = $2 + 0 } END { printf "%.4f", (t > 0 ? t : 0.4) / 40 }' \
    "$WORK/calib/metrics.jsonl")
  STEPS=$(awk -v p="$per_step" 'BEGIN { s = int(20 / p); if (s < 20) s = 20; if (s > 100000) s = 100000; print s }')
  EVERY=$((STEPS / 10))
  tlog "calibrated: $per_step s per step -> --max_train_steps $STEPS --checkpointing_steps $EVERY"
  export K22=$K22_BIN PACK=$WORK/pack.h5 PRETRAINED=$WORK/prior
  export K22_ARGS="--max_train_steps $STEPS --checkpointing_steps $EVERY $COMMON"
else
  MODE=fake
  STEPS=40
  [ -x "$SRC/tests/jobs/fake_train.sh" ] || { fail "tests/jobs/fake_train.sh is not executable (git mode 755)"; finish; }
  tlog "workload: tests/jobs/fake_train.sh (k22 train-prior not in $K22_BIN)"
  export K22=$SRC/tests/jobs/fake_train.sh PACK=$WORK/pack.h5 PRETRAINED=$WORK/prior
  export K22_ARGS="--max_train_steps $STEPS --checkpointing_steps 5" FAKE_STEP_SECONDS=0.2
fi
export OUTPUT_DIR=$OUT

# newest_ckpt: the largest N of a complete (renamed) $OUT/checkpoint-N, or nothing
newest_ckpt() {
  find "$OUT" -maxdepth 1 -type d -name 'checkpoint-*' 2>/dev/null | sed -n 's/.*checkpoint-\([0-9]*\)$/\1/p' \
    | sort -n | tail -n 1
}
have_ckpt() { [ -n "$(newest_ckpt)" ]; }
# ckpt_or_ended: a checkpoint exists, or the job is no longer pending/running (so stop waiting)
ckpt_or_ended() { have_ckpt || ! [[ "$(job_field "$JOB" JobState)" =~ ^(PENDING|CONFIGURING|RUNNING)$ ]]; }

JOB=$(submit --chdir="$WORK" --output="$WORK/train.log" -J k22-test-requeue "$SRC/jobs/train-prior.sbatch")
tlog "submitted job $JOB"
wait_for 120 ckpt_or_ended || true
if ! have_ckpt; then
  fail "no checkpoint in $OUT within 120 s (job state $(job_field "$JOB" JobState))"
  finish
fi
PRE=$(newest_ckpt)
tlog "first checkpoint: checkpoint-$PRE; job state $(job_field "$JOB" JobState)"
check "job is RUNNING when preempted" [ "$(job_field "$JOB" JobState)" = RUNNING ]
scancel --signal=USR1 --batch "$JOB"
tlog "sent SIGUSR1 to the batch shell (scancel --signal=USR1 --batch $JOB)"

STATE=$(wait_job_done "$JOB" 180)
tlog "job ended: $STATE, Restarts=$(job_field "$JOB" Restarts), ExitCode=$(job_field "$JOB" ExitCode)"
LOG=$WORK/train.log
check "job COMPLETED" [ "$STATE" = COMPLETED ]
check "job was requeued exactly once (Restarts=1)" [ "$(job_field "$JOB" Restarts)" = 1 ]
check "exit code 0:0" [ "$(job_field "$JOB" ExitCode)" = 0:0 ]
check "the batch shell forwarded SIGUSR1" grep -q 'got SIGUSR1: forwarding' "$LOG"
check "workload exited 99 and the job requeued itself" \
  grep -q 'checkpointed after SIGUSR1 (exit 99): scontrol requeue' "$LOG"
check "second run started with SLURM_RESTART_COUNT=1" grep -q 'restart 1\] start: srun' "$LOG"
check "second run finished" grep -q 'restart 1\] finished (exit 0)' "$LOG"
check "newest checkpoint after the run ($(newest_ckpt)) is past the preempted one ($PRE)" [ "$(newest_ckpt)" -gt "$PRE" ]
if [ "$MODE" = fake ]; then
  check "second run resumed from its checkpoint" grep -q 'resumed from checkpoint-' "$LOG"
  RESUMED=$(sed -n 's/^start \([0-9]*\) 1$/\1/p' "$OUT/runs.txt")
  check "resume step ($RESUMED) is after the first checkpoint ($PRE)" [ "${RESUMED:-0}" -gt "$PRE" ]
  check "ran to step $STEPS" [ "$(cat "$OUT/DONE" 2>/dev/null)" = "$STEPS" ]
else
  RESUMED=$(sed -n 's/.*resuming from .*checkpoint-\([0-9]*\) at step.*/\1/p' "$LOG" | head -n 1)
  check "second run resumed from checkpoint-${RESUMED:-none}, not before the first one ($PRE)" \
    [ "${RESUMED:-0}" -ge "$PRE" ]
  check "output_dir is a complete pipeline (model_index.json)" [ -f "$OUT/model_index.json" ]
fi
tlog "mode $MODE; total $(elapsed) s"
finish
