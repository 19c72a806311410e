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
