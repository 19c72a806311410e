#!/usr/bin/env bash
# test_sample.sh: `k22 sample` from the command line on the tiny pipelines of `k22 init`: a PNG
# of the rounded size (read from its IHDR chunk), the same seed gives the same bytes and another
# seed others, --num_images and --prompts FILE make grids of the right shape, and bad options
# (exit 2), a missing folder and an unwritable --out (exit 1) fail with a message naming the
# problem. Needs K22_BIN (set by CTest).
set -u
K22=${K22_BIN:?K22_BIN must point at the k22 binary}
tmp=$(mktemp -d /tmp/k22-test-sample-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/cli_lib.sh"

# png_size FILE -> "WIDTH HEIGHT" from the IHDR chunk, or "bad" when FILE is not a PNG
png_size() {
    local sig
    sig=$(od -An -tx1 -N8 "$1" 2>/dev/null | tr -d ' \n')
    if [ "$sig" != "89504e470d0a1a0a" ]; then echo bad; return; fi
    od -An -tu1 -j16 -N8 "$1" | awk '{ printf "%d %d\n", (($1*256+$2)*256+$3)*256+$4, (($5*256+$6)*256+$7)*256+$8 }'
}
expect_size() { # expect_size FILE "W H" DESCRIPTION
    local got
    got=$(png_size "$1")
    [ "$got" = "$2" ] && ok || fail "$3: $1 is '$got', want '$2'"
}

"$K22" init prior --size tiny --seed 0 --out "$tmp/prior" >/dev/null 2>&1 || fail "init prior"
"$K22" init decoder --size tiny --seed 0 --out "$tmp/decoder" >/dev/null 2>&1 || fail "init decoder"
S=("$K22" sample --prior "$tmp/prior" --decoder "$tmp/decoder" --steps 2 --prior_steps 2 --height 32 --width 32)

expect_rc 0 "one image" "${S[@]}" --prompt "a red cat" --out "$tmp/a.png"
expect_size "$tmp/a.png" "32 32" "one image"
expect_in "$tmp/err" "a.png: 1 image(s) of 32 x 32" "summary line"
expect_rc 0 "same seed" "${S[@]}" --prompt "a red cat" --out "$tmp/a2.png" --quiet
cmp -s "$tmp/a.png" "$tmp/a2.png" && ok || fail "the same seed gave different PNG bytes"
expect_rc 0 "other seed" "${S[@]}" --prompt "a red cat" --out "$tmp/b.png" --seed 1 --quiet
cmp -s "$tmp/a.png" "$tmp/b.png" && fail "seeds 0 and 1 gave the same PNG" || ok
expect_rc 0 "negative prompt" "${S[@]}" --prompt "a red cat" --negative_prompt "blurry" --out "$tmp/n.png" --quiet
expect_size "$tmp/n.png" "32 32" "negative prompt"
cmp -s "$tmp/a.png" "$tmp/n.png" && fail "--negative_prompt changed nothing" || ok
# bf16 operands (emulated on cpu): the same size, the same bytes each run; cpu-ref refuses
expect_rc 0 "bf16" "${S[@]}" --prompt "a red cat" --out "$tmp/h.png" --quiet --mixed_precision bf16
expect_size "$tmp/h.png" "32 32" "bf16"
expect_rc 0 "bf16 again" "${S[@]}" --prompt "a red cat" --out "$tmp/h2.png" --quiet --mixed_precision bf16
cmp -s "$tmp/h.png" "$tmp/h2.png" && ok || fail "bf16 runs with one seed gave different PNG bytes"
expect_rc 2 "bf16 on cpu-ref" "${S[@]}" --prompt x --out "$tmp/x.png" --device cpu-ref --mixed_precision bf16
expect_in "$tmp/err" "cpu-ref computes in fp32 only" "bf16 on cpu-ref message"

# sizes are rounded up as the pipeline does (tiny MoVQ factor 2: multiples of 4)
expect_rc 0 "rounded size" "${S[@]}" --prompt "x" --height 30 --width 37 --out "$tmp/r.png" --quiet
expect_size "$tmp/r.png" "40 32" "30 x 37 rounds to 32 x 40"

# grids: --num_images in a row; --prompts FILE a row per prompt, in batches
expect_rc 0 "num_images" "${S[@]}" --prompt "x" --num_images 3 --out "$tmp/g.png" --quiet
expect_size "$tmp/g.png" "96 32" "3 images in a row"
printf 'a red cat\n\nA lighthouse at night\r\ntwo birds\n' >"$tmp/prompts.txt"
expect_rc 0 "prompts file" "${S[@]}" --prompts "$tmp/prompts.txt" --num_images 2 --batch 2 --out "$tmp/p.png"
expect_size "$tmp/p.png" "64 96" "3 prompts x 2 images"
expect_in "$tmp/err" "prompts 3..3 of 3" "second batch"
expect_rc 0 "prompts file, one image each" "${S[@]}" --prompts "$tmp/prompts.txt" --out "$tmp/p1.png" --quiet
expect_size "$tmp/p1.png" "64 64" "3 prompts in a 2 x 2 grid"

# bad options: exit 2 with the option named
expect_rc 2 "unknown flag" "${S[@]}" --prompt x --out "$tmp/x.png" --bogus 1
expect_in "$tmp/err" "bogus" "unknown flag named"
expect_rc 2 "no prompt" "${S[@]}" --out "$tmp/x.png"
expect_in "$tmp/err" "--prompt" "missing prompt named"
expect_rc 2 "both prompt kinds" "${S[@]}" --prompt x --prompts "$tmp/prompts.txt" --out "$tmp/x.png"
expect_rc 2 "zero height" "${S[@]}" --prompt x --height 0 --out "$tmp/x.png"
expect_in "$tmp/err" "--height" "bad height named"
expect_rc 2 "one prior step" "${S[@]}" --prompt x --prior_steps 1 --out "$tmp/x.png"
expect_rc 2 "not a png name" "${S[@]}" --prompt x --out "$tmp/x.jpg"
expect_rc 2 "unknown device" "${S[@]}" --prompt x --out "$tmp/x.png" --device tpu
expect_rc 2 "grid over PNG's limit" "${S[@]}" --prompt x --num_images 64 --height 2048 --width 2048 --out "$tmp/x.png"
expect_in "$tmp/err" "65535" "grid limit named"
printf '\n  \n' >"$tmp/empty.txt"
expect_rc 2 "empty prompts file" "${S[@]}" --prompts "$tmp/empty.txt" --out "$tmp/x.png"
expect_in "$tmp/err" "no prompts" "empty prompts file named"

# I/O: exit 1 with the path named
expect_rc 1 "missing prior" "$K22" sample --prior "$tmp/nope" --decoder "$tmp/decoder" --prompt x --out "$tmp/x.png"
expect_in "$tmp/err" "$tmp/nope" "missing folder named"
expect_rc 1 "decoder is a prior" "$K22" sample --prior "$tmp/prior" --decoder "$tmp/prior" --prompt x --out "$tmp/x.png"
expect_in "$tmp/err" "unet" "missing unet named"
expect_rc 1 "out folder missing" "${S[@]}" --prompt x --out "$tmp/no/such/x.png"
expect_in "$tmp/err" "does not exist" "missing out folder"
expect_rc 1 "missing prompts file" "${S[@]}" --prompts "$tmp/none.txt" --out "$tmp/x.png"
[ -e "$tmp/x.png" ] && fail "a failed run left x.png" || ok

expect_rc 0 "help" "$K22" sample --help
expect_in "$tmp/out" "--negative_prompt" "help lists options"

echo "test_sample.sh: $checks checks, $fails failed"
[ "$fails" -eq 0 ]
