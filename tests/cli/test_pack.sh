#!/usr/bin/env bash
# test_pack.sh: `k22 pack` from the command line on hostile inputs and across a kill.
#  - a synth folder plus zero-byte, truncated, 100000x100000-header and not-an-image files, a PNG
#    named .jpg (packed: formats are detected from magic bytes, as PIL does), non-UTF-8, empty
#    and 50 kB captions, a row naming a missing file and a duplicate row: every bad one is
#    skipped, named on stderr and listed in the pack; the good ones are packed;
#  - --strict on the same folder exits non-zero and leaves neither OUT nor OUT.partial;
#  - a run SIGKILLed after its 2nd commit (K22_PACK_KILL_AFTER_COMMITS, the same signal as
#    kill -9) then --resume gives datasets equal (h5diff) to an uninterrupted run's, without
#    redoing the committed inputs; --resume of a finished pack does nothing;
#  - `k22 init decoder --size tiny` (MoVQ spatial factor 2) packs --for both: latents at
#    resolution / 2, and `k22 inspect` shows latent_factor 2 (a prior pack records 8).
# Needs K22_BIN and K22_SOURCE_DIR (set by CTest); h5diff from the HDF5 tools.
set -u
K22=${K22_BIN:?K22_BIN must point at the k22 binary}
SRC=${K22_SOURCE_DIR:-.}
FIX="$SRC/tests/fixtures/pack"
# k22 pack starts MPI, whose own allocations LeakSanitizer would report: not ours to chase.
export ASAN_OPTIONS=detect_leaks=0
tmp=$(mktemp -d /tmp/k22-test-pack-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
CLI_EXCERPT=tail
. "$(dirname "$0")/cli_lib.sh"
same_datasets() { # same_datasets A B DESCRIPTION: every dataset equal
    local d
    for d in caption source input_ids attention_mask text_embeds text_hidden image_embeds rejected_source rejected_reason; do
        if h5diff -q "$1" "$2" "/$d" "/$d" >/dev/null 2>&1; then ok; else fail "$3: dataset $d differs"; fi
    done
}

"$K22" init prior --size tiny --seed 0 --out "$tmp/prior" >/dev/null 2>&1 || fail "k22 init prior"
PACK=("$K22" pack --prior "$tmp/prior" --for prior --resolution 64 --batch 3 --chunk_kib 16)

# ---- hostile inputs ----
d="$tmp/bad"
"$K22" synth --n 6 --seed 3 --min_size 64 --max_size 160 --out "$d" 2>/dev/null || fail "synth"
jpg=$(cd "$d" && ls *.jpg | head -1)
png=$(cd "$d" && ls *.png | head -1)
: >"$d/zero.png"
head -c 300 "$d/$jpg" >"$d/trunc.jpg"
cp "$FIX/huge.png" "$d/huge.png"
cp "$FIX/huge.jpg" "$d/huge.jpg"
echo "not an image" >"$d/text.png"
cp "$d/$png" "$d/really_png.jpg"
cap50k=$(head -c 51200 /dev/zero | tr '\0' 'a')
{
    for f in zero.png trunc.jpg huge.png huge.jpg text.png really_png.jpg; do
        printf '{"file_name": "%s", "text": "a drawing of %s"}\n' "$f" "$f"
    done
    printf '{"file_name": "%s", "text": "bad \xff\xfe bytes"}\n' "$jpg"
    printf '{"file_name": "%s", "text": ""}\n' "$png"
    printf '{"file_name": "%s", "text": "%s"}\n' "$jpg" "$cap50k"
    printf '{"file_name": "missing.png", "text": "a drawing of nothing"}\n'
    head -1 "$d/metadata.jsonl"
} >>"$d/metadata.jsonl"
expect_rc 0 "pack hostile folder" "${PACK[@]}" --train_data_dir "$d" --out "$tmp/bad.h5"
cp "$tmp/err" "$tmp/bad.err"
for name in zero.png trunc.jpg huge.png huge.jpg text.png missing.png; do
    expect_in "$tmp/bad.err" "$name" "reject of $name reported"
done
n_skipped=$(grep -c '^k22 pack: skipped' "$tmp/bad.err")
# 5 bad images + non-UTF-8, empty and 50 kB captions + missing file + duplicate row = 10
[ "$n_skipped" -eq 10 ] && ok || fail "$n_skipped inputs skipped, want 10: $(grep skipped "$tmp/bad.err")"
expect_in "$tmp/bad.err" "7 rows, 10 rejected" "summary counts"
"$K22" inspect "$tmp/bad.h5" >"$tmp/inspect" 2>&1 || fail "inspect bad.h5"
expect_in "$tmp/inspect" "7 rows, 10 rejected" "inspect counts"
h5dump -d /source "$tmp/bad.h5" >"$tmp/sources" 2>&1
expect_in "$tmp/sources" '"really_png.jpg"' "the PNG named .jpg is packed"
for name in zero.png missing.png; do
    if grep -qF "$name" "$tmp/sources"; then fail "$name is among the packed rows"; else ok; fi
done
[ -e "$tmp/bad.h5.partial" ] && fail "a .partial was left after success" || ok

expect_rc 1 "--strict" "${PACK[@]}" --train_data_dir "$d" --out "$tmp/strict.h5" --strict
expect_in "$tmp/err" "--strict" "strict failure says so"
[ -e "$tmp/strict.h5" ] || [ -e "$tmp/strict.h5.partial" ] && fail "--strict left a file" || ok
# --strict on a clean folder succeeds
"$K22" synth --n 4 --seed 9 --min_size 64 --max_size 120 --out "$tmp/clean" 2>/dev/null
expect_rc 0 "--strict clean" "${PACK[@]}" --train_data_dir "$tmp/clean" --out "$tmp/clean.h5" --strict

# ---- kill + resume ----
"$K22" synth --n 14 --seed 4 --min_size 64 --max_size 160 --out "$tmp/r" 2>/dev/null
: >"$tmp/r/zero.png"
printf '{"file_name": "zero.png", "text": "a drawing of a zero"}\n' >>"$tmp/r/metadata.jsonl"
expect_rc 0 "uninterrupted" "${PACK[@]}" --train_data_dir "$tmp/r" --out "$tmp/full.h5"
K22_PACK_KILL_AFTER_COMMITS=2 "${PACK[@]}" --train_data_dir "$tmp/r" --out "$tmp/res.h5" >/dev/null 2>"$tmp/err"
rc=$?
[ "$rc" -eq 137 ] && ok || fail "killed run: exit $rc, want 137 (SIGKILL)"
[ -e "$tmp/res.h5.partial" ] && [ ! -e "$tmp/res.h5" ] && ok || fail "killed run: want only res.h5.partial"
expect_rc 0 "resume" "${PACK[@]}" --train_data_dir "$tmp/r" --out "$tmp/res.h5" --resume
expect_in "$tmp/err" "(6 done before --resume)" "resume skips the 2 committed chunks"
same_datasets "$tmp/full.h5" "$tmp/res.h5" "kill + resume"
expect_rc 0 "resume finished" "${PACK[@]}" --train_data_dir "$tmp/r" --out "$tmp/res.h5" --resume
expect_in "$tmp/err" "(15 done before --resume)" "resume of a finished pack"
same_datasets "$tmp/full.h5" "$tmp/res.h5" "second resume"

# --resume of a finished pack with other settings: refused, naming what differs; OUT stays
expect_rc 2 "resume other settings" "${PACK[@]}" --train_data_dir "$tmp/r" --out "$tmp/res.h5" --resume --pack_dtype fp16
expect_in "$tmp/err" "dtype" "the refusal names the attribute"
[ -f "$tmp/res.h5" ] && [ ! -e "$tmp/res.h5.partial" ] && ok || fail "refused resume moved the finished pack"
same_datasets "$tmp/full.h5" "$tmp/res.h5" "after a refused resume"

# --mixed_precision bf16: the encoders' GEMMs take bf16 operands; the pack says so, and resuming
# an fp32 pack with it is refused like any other change of settings
expect_rc 0 "bf16 encoders" "${PACK[@]}" --train_data_dir "$tmp/r" --out "$tmp/bf.h5" --mixed_precision bf16
"$K22" inspect "$tmp/bf.h5" >"$tmp/inspect" 2>&1 || fail "inspect bf.h5"
expect_in "$tmp/inspect" "encoders: bf16 GEMM operands, fp32 accumulation" "inspect shows the encoders' precision"
expect_rc 2 "resume with bf16" "${PACK[@]}" --train_data_dir "$tmp/r" --out "$tmp/res.h5" --resume --mixed_precision bf16
expect_in "$tmp/err" "preprocessing differs" "the bf16 refusal names the attribute"
expect_rc 2 "bf16 on cpu-ref" "${PACK[@]}" --train_data_dir "$tmp/r" --out "$tmp/x.h5" --mixed_precision bf16 --device cpu-ref

# ---- the tiny decoder: a 2-block MoVQ (spatial factor 2) packs, latents at resolution / 2 ----
"$K22" init decoder --size tiny --seed 0 --out "$tmp/decoder" >/dev/null 2>&1 || fail "k22 init decoder"
"$K22" synth --n 3 --seed 5 --min_size 48 --max_size 96 --out "$tmp/t" 2>/dev/null || fail "synth tiny"
expect_rc 0 "pack --for both, tiny decoder" "$K22" pack --prior "$tmp/prior" --decoder "$tmp/decoder" --for both \
    --resolution 32 --batch 2 --chunk_kib 16 --train_data_dir "$tmp/t" --out "$tmp/tiny.h5"
"$K22" inspect "$tmp/tiny.h5" >"$tmp/inspect" 2>&1 || fail "inspect tiny.h5"
expect_in "$tmp/inspect" "format_version 2" "inspect: format 2"
expect_in "$tmp/inspect" "resolution 32  latent_factor 2  latents 4x16x16" "inspect shows latent_factor 2"
expect_in "$tmp/inspect" "dataset latents          (3, 4, 16, 16)" "latents at resolution / 2"
h5dump -a latent_size "$tmp/tiny.h5" >"$tmp/lsize" 2>&1
expect_in "$tmp/lsize" "(0): 16" "latent_size attribute 32 / 2"
# a prior-only pack holds no latents and records Kandinsky 2.2's factor 8
"$K22" inspect "$tmp/clean.h5" >"$tmp/inspect" 2>&1 || fail "inspect clean.h5"
expect_in "$tmp/inspect" "latent_factor 8" "prior pack records latent_factor 8"

# ---- argument errors ----
expect_rc 2 "no input" "$K22" pack --prior "$tmp/prior" --out "$tmp/x.h5" --for prior
expect_rc 2 "bad resolution" "${PACK[@]}" --train_data_dir "$tmp/r" --out "$tmp/x.h5" --resolution 100
expect_rc 1 "decoder without movq" "$K22" pack --prior "$tmp/prior" --decoder "$tmp/prior" --train_data_dir "$tmp/r" --out "$tmp/x.h5" --resolution 64
# activations beyond the machine's memory: refused before any work, saying what to lower
expect_rc 2 "batch too large for memory" "$K22" pack --prior "$tmp/prior" --decoder "$tmp/decoder" --for both \
    --resolution 768 --batch 4000 --train_data_dir "$tmp/t" --out "$tmp/huge.h5"
expect_in "$tmp/err" "lower --batch" "the memory message says what to lower"
expect_rc 0 "help" "$K22" pack --help
expect_in "$tmp/out" "--resume" "help lists options"

echo "test_pack.sh: $checks checks, $fails failed"
[ "$fails" -eq 0 ]
