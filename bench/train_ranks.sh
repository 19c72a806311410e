#!/usr/bin/env bash
# train_ranks.sh: training throughput of the tiny models on 1 and 2 MPI ranks with the same global
# batch (so the same optimizer steps), for train-prior and train-decoder; prints a table. Not a
# test. Each rank gets cores/ranks OpenMP threads, so both runs use the whole machine.
#   bench/train_ranks.sh [PRIOR_STEPS] [DECODER_STEPS]    K22_BIN overrides build/k22;
#   BENCH_GLOBAL_BATCH (8), BENCH_RESOLUTION (64), BENCH_RANKS ("1 2") also.
# "printed" is the samples/s of k22's last progress line (steps x global batch / time since the
# run's log opened, so it includes the first step's warm-up); "steady" is the same over the
# second half of the steps, from time_s in metrics.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
K22=${K22_BIN:-build/k22}
[ -x "$K22" ] || { echo "train_ranks.sh: $K22 not found; build first" >&2; exit 1; }
PRIOR_STEPS=${1:-1000}
DECODER_STEPS=${2:-40}
GB=${BENCH_GLOBAL_BATCH:-8}
RES=${BENCH_RESOLUTION:-64}
RANK_LIST=${BENCH_RANKS:-1 2}
CORES=$(nproc)
if [ "$(id -u)" -eq 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
export OMP_WAIT_POLICY=PASSIVE
tmp=$(mktemp -d /tmp/k22-bench-ranks-XXXXXX)
trap 'rm -rf "$tmp"' EXIT

"$K22" synth --out "$tmp/data" --n 64 --seed 0 --min_size 64 --max_size 160 >"$tmp/setup.log" 2>&1
"$K22" init prior --size tiny --seed 0 --out "$tmp/prior" >>"$tmp/setup.log" 2>&1
"$K22" init decoder --size tiny --seed 0 --out "$tmp/decoder" >>"$tmp/setup.log" 2>&1
OMP_NUM_THREADS=$CORES "$K22" pack --train_data_dir "$tmp/data" --prior "$tmp/prior" --decoder "$tmp/decoder" \
    --for both --resolution "$RES" --out "$tmp/pack.h5" --quiet >>"$tmp/setup.log" 2>&1 ||
    { cat "$tmp/setup.log" >&2; exit 1; }

# steady JSONL GB: samples/s over the second half of the logged steps (needs time_s), or "-"
steady() {
    [ -f "$1" ] || { echo "-"; return 0; }
    awk -v gb="$2" '
        match($0, /"step": *[0-9]+/) { s = substr($0, RSTART, RLENGTH); sub(/.*: */, "", s) }
        match($0, /"time_s": *[0-9.eE+-]+/) { t = substr($0, RSTART, RLENGTH); sub(/.*: */, "", t); n++; S[n] = s + 0; T[n] = t + 0 }
        END { h = int(n / 2); if (n < 4 || T[n] <= T[h]) { print "-"; exit }
              printf "%.1f", (S[n] - S[h]) * gb / (T[n] - T[h]) }' "$1"
}

printf '%-14s %5s %13s %11s %6s %15s %14s %8s\n' stage ranks threads/rank batch/rank steps "samples/s print" "samples/s stdy" "wall s"
for stage in prior decoder; do
    steps=$PRIOR_STEPS
    [ $stage = decoder ] && steps=$DECODER_STEPS
    for n in $RANK_LIST; do
        [ $((GB % n)) -eq 0 ] || { echo "train_ranks.sh: $n ranks do not divide global batch $GB" >&2; exit 1; }
        th=$((CORES / n > 0 ? CORES / n : 1))
        out=$tmp/out-$stage-$n
        cmd=("$K22" "train-$stage" --pack "$tmp/pack.h5" --pretrained "$tmp/$stage" --output_dir "$out"
             --train_batch_size $((GB / n)) --max_train_steps "$steps" --checkpointing_steps 100000
             --learning_rate 1e-3 --lr_warmup_steps 0 --seed 0 --log_every "$steps")
        [ "$n" -gt 1 ] && cmd=(mpirun --oversubscribe -np "$n" "${cmd[@]}")
        t0=$(date +%s.%N)
        OMP_NUM_THREADS=$th "${cmd[@]}" >"$tmp/$stage-$n.log" 2>&1 ||
            { tail -n 30 "$tmp/$stage-$n.log" >&2; echo "train_ranks.sh: train-$stage on $n rank(s) failed" >&2; exit 1; }
        wall=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
        printed=$(sed -n 's/.*samples\/s \([0-9.]*\).*/\1/p' "$tmp/$stage-$n.log" | tail -n 1)
        printf '%-14s %5d %13d %11d %6d %15s %14s %8s\n' "train-$stage" "$n" "$th" $((GB / n)) "$steps" \
            "${printed:--}" "$(steady "$out/metrics.jsonl" "$GB")" "$wall"
    done
done
echo "($(nproc) cores, $(uname -n), $("$K22" version | head -n 1), global batch $GB, ${RES}px pack, $(date -u +%F))"
