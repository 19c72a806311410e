#!/usr/bin/env bash
# test_validation.sh: validation images during training (--validation_prompts), end to end on
# tiny models: train-decoder with --prior_for_validation writes OUT/validation/step-N.png (a PNG
# grid of the prompts' size) and a metrics.jsonl line with the prompts; train-prior with
# --decoder_for_validation does the same; train-prior without a decoder says it draws no
# images; train-decoder without a prior is refused (exit 2).
set -u
K22=${K22_BIN:?K22_BIN must point at the k22 binary}
export ASAN_OPTIONS=detect_leaks=0 OMP_NUM_THREADS=1
tmp=$(mktemp -d /tmp/k22-test-validation-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/cli_lib.sh"

# png_size FILE: "W H" from the IHDR chunk (bytes 16..23, big-endian).
png_size() { od -An -tu1 -j16 -N8 "$1" | awk '{print $1*16777216+$2*65536+$3*256+$4, $5*16777216+$6*65536+$7*256+$8}'; }

"$K22" synth --out "$tmp/imgs" --n 4 --min_size 32 --max_size 48 >/dev/null 2>&1 || fail "synth"
"$K22" init prior --size tiny --out "$tmp/prior" >/dev/null 2>&1 || fail "init prior"
"$K22" init decoder --size tiny --out "$tmp/decoder" >/dev/null 2>&1 || fail "init decoder"
"$K22" pack --train_data_dir "$tmp/imgs" --prior "$tmp/prior" --decoder "$tmp/decoder" --resolution 16 \
    --out "$tmp/data.h5" --quiet >/dev/null 2>&1 || fail "pack"
T=(--pack "$tmp/data.h5" --max_train_steps 2 --train_batch_size 2 --log_every 1)

expect_rc 0 "train-decoder with validation images" "$K22" train-decoder "${T[@]}" --pretrained "$tmp/decoder" \
    --output_dir "$tmp/dec" --validation_prompts "a ninja with red hair" "a fox in the snow" \
    --prior_for_validation "$tmp/prior"
f="$tmp/dec/validation/step-2.png"
if [ -f "$f" ]; then ok; else fail "no $f: $(excerpt "$tmp/out")"; fi
# two 16x16 images side by side
if [ -f "$f" ] && [ "$(png_size "$f")" = "32 16" ]; then ok; else fail "grid size $(png_size "$f" 2>/dev/null), want 32 16"; fi
expect_in "$tmp/dec/metrics.jsonl" '"validation_images":"validation/step-2.png","prompts":["a ninja with red hair","a fox in the snow"]' \
    "metrics line of the images"
expect_in "$tmp/out" "validation images" "progress names the images"
expect_in "$tmp/out" "'a ninja with red hair', 'a fox in the snow'" "settings list both prompts"

expect_rc 2 "train-decoder without a prior" "$K22" train-decoder "${T[@]}" --pretrained "$tmp/decoder" \
    --output_dir "$tmp/dec2" --validation_prompts "a fox"
expect_in "$tmp/err" "--prior_for_validation" "the refusal names the flag"

expect_rc 0 "train-prior with validation images" "$K22" train-prior "${T[@]}" --pretrained "$tmp/prior" \
    --output_dir "$tmp/pri" --validation_prompts "a fox" --decoder_for_validation "$tmp/decoder"
f="$tmp/pri/validation/step-2.png"
if [ -f "$f" ] && [ "$(png_size "$f")" = "16 16" ]; then ok; else fail "prior validation image $f: $(png_size "$f" 2>/dev/null)"; fi

expect_rc 0 "train-prior without a decoder" "$K22" train-prior "${T[@]}" --pretrained "$tmp/prior" \
    --output_dir "$tmp/pri2" --validation_prompts "a fox"
expect_in "$tmp/out" "no --decoder_for_validation: no validation images" "the prior says it draws none"
if [ ! -e "$tmp/pri2/validation" ]; then ok; else fail "images written without a decoder"; fi

echo "test_validation: $checks checks, $fails failed"
[ "$fails" -eq 0 ]
