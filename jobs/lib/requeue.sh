# requeue.sh: sourced by the jobs/*.sbatch scripts. Runs one srun step with the batch shell's
# preemption signals forwarded to it, and turns k22's exit code into a Slurm outcome:
#   0   the run finished                -> the job ends COMPLETED
#   99  k22 checkpointed after a signal  -> `scontrol requeue` (the job goes back to PENDING and,
#                                          started again, resumes with --resume_from_checkpoint latest)
#   other                                -> the job ends FAILED with that code (never requeued)
# Bash only (traps and `wait` semantics).

K22_EXIT_REQUEUE=99

# k22_job_log MSG...: one line on the job's stdout, with time and job id, so requeues show in the log
k22_job_log() {
  echo "[k22-job $(date -u +%FT%TZ) job ${SLURM_JOB_ID:-none} restart ${SLURM_RESTART_COUNT:-0}] $*"
}

# _k22_job_forward SIG PID: a trap handler; --signal=B:SIG@T reaches only the batch shell, so pass
# it on to srun, which forwards it to every task of the step.
_k22_job_forward() {
  K22_JOB_SIGNAL=$1
  k22_job_log "got SIG$1: forwarding it to the step (srun pid $2); k22 checkpoints at the next step boundary"
  kill -s "$1" "$2" 2>/dev/null || true
}

# k22_job_run CMD...: `srun CMD...` in the background, so that the shell's traps run while it waits
# (bash defers a trap until a foreground command returns). Returns the step's exit code.
k22_job_run() {
  local pid rc
  K22_JOB_SIGNAL=""
  # one OpenMP thread per CPU Slurm gave each task, unless the user chose
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}
  k22_job_log "start: srun ${K22_SRUN_ARGS:-} $* (OMP_NUM_THREADS=$OMP_NUM_THREADS)"
  # K22_SRUN_ARGS is split on purpose (e.g. "--mpi=pmix --cpu-bind=cores")
  # shellcheck disable=SC2086
  srun ${K22_SRUN_ARGS:-} "$@" &
  pid=$!
  trap '_k22_job_forward USR1 '"$pid" USR1
  trap '_k22_job_forward TERM '"$pid" TERM
  while :; do
    wait "$pid"
    rc=$?
    # wait returns early (status > 128) when a trap ran; the step is still alive then
    kill -0 "$pid" 2>/dev/null || break
  done
  trap - USR1 TERM
  return "$rc"
}

# _k22_job_state: the job's state as the controller sees it (RUNNING, CANCELLED, ...)
_k22_job_state() {
  squeue -h -j "$SLURM_JOB_ID" -o %T 2>/dev/null | head -n 1
}

# k22_job_finish RC [RESULT]: exits the batch script with the outcome RC calls for (see the
# header). RESULT, a file the finished workload must have written, guards against an srun that
# reports 0 although its step never ran (seen with step launch failures).
k22_job_finish() {
  local rc=$1 result=${2:-} state
  if [ "$rc" -eq 0 ]; then
    if [ -n "$result" ] && [ ! -e "$result" ]; then
      k22_job_log "the step exited 0 but $result is missing (did the step launch?): failing the job"
      exit 1
    fi
    k22_job_log "finished (exit 0)"
    exit 0
  fi
  if [ "$rc" -ne "$K22_EXIT_REQUEUE" ]; then
    k22_job_log "failed with exit code $rc: not requeued"
    exit "$rc"
  fi
  if [ -z "${SLURM_JOB_ID:-}" ]; then
    k22_job_log "checkpointed (exit $rc) outside Slurm: nothing to requeue"
    exit "$rc"
  fi
  # a job the user cancelled (scancel) also gets SIGTERM and checkpoints; it must stay cancelled
  state=$(_k22_job_state)
  if [ "$state" != "RUNNING" ]; then
    k22_job_log "checkpointed (exit $rc) but the job is ${state:-gone}: not requeued"
    exit "$rc"
  fi
  k22_job_log "checkpointed after SIG${K22_JOB_SIGNAL:-?} (exit $rc): scontrol requeue $SLURM_JOB_ID"
  if ! scontrol requeue "$SLURM_JOB_ID"; then
    k22_job_log "scontrol requeue failed (was the job submitted with --no-requeue?)"
    exit "$rc"
  fi
  # Slurm now ends this run of the job and puts it back in the queue; exit 0 meanwhile so the
  # run is not recorded as a failure.
  exit 0
}
