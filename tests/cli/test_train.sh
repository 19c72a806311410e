#!/usr/bin/env bash
# test_train.sh: `k22 train-prior` / `k22 train-decoder` argument handling from the command
# line: --help (exit 0, documents exit code 99 and the per-rank batch), a wrong flag, refused
# values (exit 2 with a message naming them), a missing pack or pretrained folder (exit 2), and
# --resume_from_checkpoint latest on an empty --output_dir (starts fresh; here it then fails on
# the pack). Training itself: tests/train/test_ckpt.c and tests/mpi/test_train_ranks.c.
set -u
K22=${K22_BIN:?K22_BIN must point at the k22 binary}
# k22 train starts MPI, whose own allocations LeakSanitizer would report: not ours to chase.
export ASAN_OPTIONS=detect_leaks=0
tmp=$(mktemp -d /tmp/k22-test-train-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/cli_lib.sh"

for cmd in train-prior train-decoder; do
    expect_rc 0 "$cmd --help" "$K22" $cmd --help
    expect_in "$tmp/out" "99 stopped by SIGTERM or SIGUSR1" "$cmd --help exit codes"
    expect_in "$tmp/out" "--train_batch_size N" "$cmd --help flags"
    expect_in "$tmp/out" "PER RANK" "$cmd --help per-rank batch"
    expect_in "$tmp/out" "--resume_from_checkpoint" "$cmd --help resume"
    expect_rc 2 "$cmd wrong flag" "$K22" $cmd --pack x --pretrained y --output_dir z --learning_rat 1
    expect_in "$tmp/err" "learning_rat" "$cmd wrong flag message"
    expect_rc 2 "$cmd missing required" "$K22" $cmd --pack x
done
"$K22" init prior --size tiny --out "$tmp/prior" >/dev/null 2>&1 || fail "k22 init prior"
P=(--pack "$tmp/none.h5" --pretrained "$tmp/prior" --output_dir "$tmp/out1")
expect_rc 2 "fp16 on cpu-ref" "$K22" train-prior "${P[@]}" --mixed_precision fp16 --device cpu-ref
expect_in "$tmp/err" "device cpu-ref computes in fp32 only" "fp16 on cpu-ref message"
expect_rc 2 "fp8" "$K22" train-prior "${P[@]}" --mixed_precision fp8
expect_in "$tmp/err" "fp8" "fp8 message"
expect_rc 2 "unknown device" "$K22" train-prior "${P[@]}" --device tpu
expect_in "$tmp/err" "unknown device 'tpu'" "unknown device message"
# the models' switches from the environment: a bad value is an error naming both meanings
K22_QKV_STACK=2 expect_rc 2 "bad K22_QKV_STACK" "$K22" train-prior "${P[@]}"
expect_in "$tmp/err" "K22_QKV_STACK='2': expected 0 (three GEMMs) or 1" "bad K22_QKV_STACK message"
K22_ACT16=yes expect_rc 2 "bad K22_ACT16" "$K22" train-prior "${P[@]}" --device cpu-ref
expect_in "$tmp/err" "K22_ACT16='yes': expected 0" "bad K22_ACT16 message"
expect_rc 2 "bad batch" "$K22" train-prior "${P[@]}" --train_batch_size 0
expect_in "$tmp/err" "--train_batch_size 0" "bad batch message"
expect_rc 2 "bad scheduler" "$K22" train-prior "${P[@]}" --lr_scheduler warm
expect_rc 2 "missing pack" "$K22" train-prior "${P[@]}"
expect_in "$tmp/err" "none.h5" "missing pack message"
expect_rc 2 "bad pretrained" "$K22" train-prior --pack x --pretrained "$tmp" --output_dir "$tmp/out1"
expect_in "$tmp/err" "no model_index.json" "bad pretrained message"
expect_rc 2 "decoder from a component" "$K22" train-decoder --pack x --pretrained "$tmp/prior/prior" --output_dir "$tmp/o"
expect_rc 2 "resume latest, nothing there" "$K22" train-prior "${P[@]}" --resume_from_checkpoint latest

echo "test_train.sh: $checks checks, $fails failed"
[ "$fails" -eq 0 ]
