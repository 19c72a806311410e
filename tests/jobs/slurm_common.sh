# slurm_common.sh: sourced by tests/jobs/test_*.sh. Starts a private single-node Slurm
# (scripts/slurm-local) in a temp folder, stops it and cancels leftover jobs on exit, and gives
# helpers to wait for and inspect jobs. A test that cannot start Slurm FAILS (exit 1) unless
# K22_SKIP_SLURM=1 is set explicitly.
set -euo pipefail

SRC=${K22_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
K22_BIN=${K22_BIN:-$SRC/build/k22}
T0=$(date +%s.%N)
# Under the ASan build, Open MPI and HDF5 leave allocations at exit that are not k22's (the same
# choice as tests/mpi/test_shard.c); these tests are about Slurm, the cli/ tests check k22's leaks.
export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0
FAILS=0

# elapsed: seconds since the test started (awk, not bc: bc is not in a minimal Debian)
elapsed() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
tlog() { printf '[%s %6ss] %s\n' "$TEST_NAME" "$(elapsed)" "$*"; }
fail() { tlog "FAIL: $*"; FAILS=$((FAILS + 1)); }
check() { local what=$1; shift; if "$@"; then tlog "ok: $what"; else fail "expected: $what"; fi; }

if [ "${K22_SKIP_SLURM:-0}" = 1 ]; then
  echo "$TEST_NAME: SKIPPED because K22_SKIP_SLURM=1"
  exit 0
fi

WORK=$(mktemp -d /tmp/k22-jobs-test.XXXXXX)
export K22_SLURM_DIR=$WORK/slurm

cleanup() {
  local rc=$?
  # the cluster is private to this test: cancel whatever is left and let the steps end before
  # the daemons stop (slurmstepd would outlive slurmd otherwise)
  if [ -n "${SLURM_CONF:-}" ] && [ -n "$(timeout 10 squeue -h -o %i 2>/dev/null)" ]; then
    timeout 10 squeue -h -o %i | xargs -r timeout 10 scancel 2>/dev/null || true
    for _ in $(seq 1 50); do [ -z "$(timeout 5 squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.2; done
  fi
  if [ "$rc" -ne 0 ] || [ "$FAILS" -ne 0 ]; then
    for f in "$WORK"/*.log; do [ -f "$f" ] && { echo "--- $f"; cat "$f"; }; done
    echo "--- slurmctld.log (tail)"; tail -n 20 "$K22_SLURM_DIR/slurmctld.log" 2>/dev/null || true
  fi
  bash "$SRC/scripts/slurm-local" stop >/dev/null 2>&1 || true
  if [ "${K22_JOBS_KEEP:-0}" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

if ! bash "$SRC/scripts/slurm-local" start >"$WORK/start.out" 2>&1; then
  cat "$WORK/start.out"
  echo "$TEST_NAME: FAIL: could not start the local Slurm cluster (scripts/slurm-local start, above)." >&2
  echo "  Needs root, slurm-wlm and munge (scripts/install-deps); set K22_SKIP_SLURM=1 to skip on purpose." >&2
  exit 1
fi
export SLURM_CONF=$K22_SLURM_DIR/slurm.conf
tlog "local Slurm up: $(sinfo -h -o '%P %a %D %T %N' | head -n 1)"

# job_field JOB KEY: KEY=value from `scontrol show job` (JobState, Restarts, ExitCode, ...)
# (bounded: a client call can hang for long if the controller died)
job_field() {
  timeout 10 scontrol show job -o "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n 1
}

# wait_job_done JOB SECONDS: until the job is COMPLETED/FAILED/CANCELLED/...; echoes the state
wait_job_done() {
  local s end=$(($(date +%s) + $2))
  while [ "$(date +%s)" -lt "$end" ]; do
    s=$(job_field "$1" JobState)
    case "$s" in COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|BOOT_FAIL|DEADLINE|PREEMPTED)
      echo "$s"; return 0 ;; esac
    sleep 0.2
  done
  echo "${s:-unknown}(timeout)"
}

# wait_for SECONDS CMD...: CMD succeeds within SECONDS
wait_for() {
  local end=$(($(date +%s) + $1))
  while [ "$(date +%s)" -lt "$end" ]; do "${@:2}" && return 0; sleep 0.2; done
  return 1
}

# submit ARGS...: sbatch --parsable; prints the job id (the cleanup cancels every job left)
submit() {
  sbatch --parsable "$@" || { echo "sbatch $* failed" >&2; return 1; }
}

finish() {
  if [ "$FAILS" -ne 0 ]; then tlog "$FAILS check(s) failed"; exit 1; fi
  tlog "all checks passed"
  exit 0
}
