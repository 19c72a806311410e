#!/usr/bin/env bash
# test_pack_ranks.sh: `k22 pack` over 1, 2 and 3 MPI ranks (mpirun --oversubscribe) writes
# packs whose datasets are identical (h5diff, bit for bit) to a run without mpirun, for the
# prior and decoder datasets (tiny prior, the 4-block MoVQ of tests/fixtures/pack/movq8) on a
# synth folder with a broken image among the records (so rank shares and rejects interleave).
# Needs K22_BIN, K22_SOURCE_DIR (CTest sets both) and mpirun.
set -u
K22=${K22_BIN:?K22_BIN must point at the k22 binary}
SRC=${K22_SOURCE_DIR:-.}
BIN=$(dirname "$K22")
# k22 pack starts MPI, whose own allocations LeakSanitizer would report: not ours to chase.
export ASAN_OPTIONS=detect_leaks=0
tmp=$(mktemp -d /tmp/k22-test-pack-ranks-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
fails=0
checks=0
ok() { checks=$((checks + 1)); }
fail() { checks=$((checks + 1)); fails=$((fails + 1)); echo "FAIL: $*" >&2; }

"$K22" init prior --size tiny --seed 0 --out "$tmp/prior" >/dev/null 2>&1 || fail "init prior"
"$K22" init decoder --size tiny --seed 0 --out "$tmp/dec" >/dev/null 2>&1 || fail "init decoder"
rm -rf "$tmp/dec/movq"
"$BIN/model_test_movq" --write-weights "$SRC/tests/fixtures/pack/movq8" 0 "$tmp/dec/movq" >/dev/null || fail "movq8 weights"
"$K22" synth --n 9 --seed 11 --min_size 64 --max_size 160 --out "$tmp/img" 2>/dev/null || fail "synth"
: >"$tmp/img/zero.png"
printf '{"file_name": "zero.png", "text": "a drawing of a zero"}\n' >>"$tmp/img/metadata.jsonl"
ARGS=(pack --train_data_dir "$tmp/img" --prior "$tmp/prior" --decoder "$tmp/dec" --resolution 64 --batch 2
      --chunk_kib 16 --quiet)

"$K22" "${ARGS[@]}" --out "$tmp/single.h5" 2>"$tmp/err" || fail "single process: $(tail -c 600 "$tmp/err")"
for n in 1 2 3; do
    if mpirun --oversubscribe -n "$n" "$K22" "${ARGS[@]}" --out "$tmp/r$n.h5" >"$tmp/out" 2>"$tmp/err"; then
        ok
    else
        fail "mpirun -n $n: $(tail -c 600 "$tmp/err")"
        continue
    fi
    for d in caption source input_ids attention_mask text_embeds text_hidden image_embeds latents \
             rejected_source rejected_reason; do
        if h5diff -q "$tmp/single.h5" "$tmp/r$n.h5" "/$d" "/$d" >/dev/null 2>&1; then ok; else
            fail "$n ranks: dataset $d differs from the single-process pack"
        fi
    done
done
rows=$("$K22" inspect "$tmp/r3.h5" 2>/dev/null | head -1)
case "$rows" in *"9 rows, 1 rejected"*) ok ;; *) fail "3 ranks: '$rows', want 9 rows, 1 rejected" ;; esac

echo "test_pack_ranks.sh: $checks checks, $fails failed"
[ "$fails" -eq 0 ]
