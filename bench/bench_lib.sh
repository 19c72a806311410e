# bench_lib.sh: what bench/train_vs_torch.sh and bench/pack_vs_torch.sh share, sourced by both.

# bench_env: one OpenMP thread team over the cores, passive between loops (src/main.c says why);
# no MPI peers for the single-process benchmark binaries.
bench_env() {
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)} OMP_WAIT_POLICY=PASSIVE OMPI_MCA_ess_singleton_isolated=1
}

# bench_find_diffusers WHO PY LOG TMP: sets TORCH=1 when PY imports diffusers: the machine's, else
# the carried build-pydeps/pydeps.tar.xz (bench/carry_diffusers.sh), diffusers alone first, then
# with the carried huggingface_hub as well (exported through PYTHONPATH); TORCH=0 and a line
# saying why otherwise.
bench_find_diffusers() {
  local who=$1 py=$2 log=$3 tmp=$4 pp
  TORCH=1
  "$py" -c "import diffusers" 2>"$log/diffusers-import.txt" && return 0
  TORCH=0
  if [ -f build-pydeps/pydeps.tar.xz ]; then
    tar -C "$tmp" -xJf build-pydeps/pydeps.tar.xz
    for pp in "$tmp/first" "$tmp/first:$tmp/fallback"; do
      if PYTHONPATH="$pp${PYTHONPATH:+:$PYTHONPATH}" "$py" -c "import diffusers" 2>>"$log/diffusers-import.txt"; then
        export PYTHONPATH="$pp${PYTHONPATH:+:$PYTHONPATH}"
        TORCH=1
        echo "$who: diffusers from the carried build-pydeps ($pp)"
        return 0
      fi
    done
  fi
  echo "$who: $py cannot import diffusers ($log/diffusers-import.txt): the torch side is skipped (run bench/carry_diffusers.sh here and carry build-pydeps)"
}

# bench_setup WHO RESULTS_NAME: what both scripts do once their options are read: PY defaults to
# the reference venv's python (else python3), BIN must exist, TMP (removed at exit) and LOG (given,
# or TMP/log) are made, bench_env, bench_find_diffusers; RESULTS=LOG/RESULTS_NAME starts empty,
# RC=0. WHO names the script in messages (also bench_run's).
bench_setup() {
  BENCH_WHO=$1
  [ -n "$PY" ] || { [ -x tools/reference/.venv/bin/python ] && PY=tools/reference/.venv/bin/python || PY=python3; }
  [ -x "$BIN" ] || { echo "$BENCH_WHO: no $BIN: build first (make), or give --bin" >&2; exit 2; }
  TMP=$(mktemp -d)
  trap 'rm -rf "$TMP"' EXIT
  [ -n "$LOG" ] || LOG=$TMP/log
  mkdir -p "$LOG"
  bench_env
  bench_find_diffusers "$BENCH_WHO" "$PY" "$LOG" "$TMP"
  RC=0
  RESULTS=$LOG/$2
  : >"$RESULTS"
}

# run NAME CMD...: runs one benchmark, keeps its k22_bench lines in RESULTS; a failure is logged,
# not fatal (returns 1). BENCH_RUN_SECONDS (when set) caps each run, so one hang cannot take a
# GPU session's minutes.
run() {
  local name=$1
  shift
  if ${BENCH_RUN_SECONDS:+timeout "$BENCH_RUN_SECONDS"} "$@" >"$LOG/$name.log" 2>&1; then
    grep '^k22_bench ' "$LOG/$name.log" | tee -a "$RESULTS"
  else
    echo "$BENCH_WHO: $name failed (exit $?): $(tail -3 "$LOG/$name.log" | tr '\n' ' ')"
    return 1
  fi
}
