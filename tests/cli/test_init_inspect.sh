#!/usr/bin/env bash
# test_init_inspect.sh: `k22 init` writes complete tiny pipeline folders, deterministically;
# `k22 inspect` accepts them and rejects corrupted ones naming the file; --help and bad flags
# behave. Needs K22_BIN (set by CTest).
set -u
K22=${K22_BIN:?K22_BIN must point at the k22 binary}
tmp=$(mktemp -d /tmp/k22-test-cli-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/cli_lib.sh"

expect_rc 0 "init prior" "$K22" init prior --size tiny --seed 3 --out "$tmp/prior"
expect_rc 0 "init decoder" "$K22" init decoder --size tiny --seed 3 --out "$tmp/decoder"
for f in model_index.json prior/config.json prior/diffusion_pytorch_model.safetensors \
    text_encoder/config.json text_encoder/model.safetensors image_encoder/model.safetensors \
    tokenizer/vocab.json tokenizer/merges.txt tokenizer/tokenizer_config.json \
    tokenizer/special_tokens_map.json image_processor/preprocessor_config.json \
    scheduler/scheduler_config.json; do
    if [ -s "$tmp/prior/$f" ]; then ok; else fail "prior/$f missing"; fi
done
for f in model_index.json unet/config.json unet/diffusion_pytorch_model.safetensors \
    movq/config.json movq/diffusion_pytorch_model.safetensors scheduler/scheduler_config.json; do
    if [ -s "$tmp/decoder/$f" ]; then ok; else fail "decoder/$f missing"; fi
done
if [ -e "$tmp/prior.tmp" ] || [ -e "$tmp/decoder.tmp" ]; then fail "a .tmp folder was left"; else ok; fi
expect_in "$tmp/prior/model_index.json" '"KandinskyV22PriorPipeline"' "prior model_index"
expect_in "$tmp/decoder/model_index.json" '"KandinskyV22Pipeline"' "decoder model_index"

# inspect: pipelines, a component, a weights file, --tensors.
expect_rc 0 "inspect prior" "$K22" inspect "$tmp/prior"
expect_in "$tmp/out" "PriorTransformer" "inspect prior"
expect_in "$tmp/out" "strict load ok" "inspect prior"
expect_in "$tmp/out" "sha256" "inspect prior"
expect_rc 0 "inspect decoder" "$K22" inspect "$tmp/decoder"
expect_in "$tmp/out" "VQModel" "inspect decoder"
expect_rc 0 "inspect --tensors" "$K22" inspect --tensors "$tmp/decoder/movq"
expect_in "$tmp/out" "tensor quantize.embedding.weight F32 [" "inspect --tensors"
expect_rc 0 "inspect file" "$K22" inspect "$tmp/decoder/unet/diffusion_pytorch_model.safetensors"

# The same seed gives the same bytes; another seed does not.
expect_rc 0 "init prior again" "$K22" init prior --size tiny --seed 3 --out "$tmp/prior2"
expect_rc 0 "init prior seed 4" "$K22" init prior --size tiny --seed 4 --out "$tmp/prior4"
for c in prior/diffusion_pytorch_model.safetensors text_encoder/model.safetensors image_encoder/model.safetensors; do
    if cmp -s "$tmp/prior/$c" "$tmp/prior2/$c"; then ok; else fail "$c differs for the same seed"; fi
done
if cmp -s "$tmp/prior/prior/diffusion_pytorch_model.safetensors" "$tmp/prior4/prior/diffusion_pytorch_model.safetensors"; then
    fail "seed 4 gave the same prior as seed 3"
else ok; fi

# Help, bad flags, bad positionals.
expect_rc 0 "init --help" "$K22" init --help
expect_in "$tmp/out" "--seed" "init --help"
expect_in "$tmp/out" "--force" "init --help"
expect_rc 0 "inspect --help" "$K22" inspect --help
expect_in "$tmp/out" "--tensors" "inspect --help"
expect_rc 2 "init --bogus" "$K22" init prior --bogus --out "$tmp/x"
expect_in "$tmp/err" "bogus" "init --bogus"
expect_rc 2 "init unet" "$K22" init unet --out "$tmp/x"
expect_in "$tmp/err" "unet" "init unet"
expect_rc 2 "init --size huge" "$K22" init prior --size huge --out "$tmp/x"
expect_rc 2 "init without --out" "$K22" init prior
expect_rc 2 "init --out ." "$K22" init decoder --out "$tmp/." --force
if [ -d "$tmp/prior" ]; then ok; else fail "--out . --force removed files"; fi

# A trailing slash still writes DIR.tmp beside DIR and renames it.
expect_rc 0 "init --out DIR/" "$K22" init decoder --out "$tmp/slash/"
if [ -s "$tmp/slash/unet/config.json" ] && [ ! -e "$tmp/slash.tmp" ]; then ok; else fail "--out DIR/ layout"; fi

# An existing non-empty folder is refused without --force and replaced with it.
expect_rc 1 "init over existing" "$K22" init decoder --out "$tmp/decoder"
expect_in "$tmp/err" "--force" "init over existing"
touch "$tmp/decoder/marker"
expect_rc 0 "init --force" "$K22" init decoder --seed 3 --out "$tmp/decoder" --force
if [ -e "$tmp/decoder/marker" ]; then fail "--force kept old files"; else ok; fi

# Corrupted files: inspect fails and names the file.
cp -r "$tmp/decoder" "$tmp/cut"
w="$tmp/cut/unet/diffusion_pytorch_model.safetensors"
truncate -s $(($(stat -c %s "$w") - 64)) "$w"
expect_rc 1 "inspect truncated" "$K22" inspect "$tmp/cut"
expect_in "$tmp/err" "diffusion_pytorch_model.safetensors" "inspect truncated"
cp -r "$tmp/decoder" "$tmp/hdr"
w="$tmp/hdr/movq/diffusion_pytorch_model.safetensors"
printf '\xff\xff\xff\xff\xff\xff\xff\x7f' | dd of="$w" bs=1 seek=0 count=8 conv=notrunc status=none
expect_rc 1 "inspect bad header" "$K22" inspect "$tmp/hdr/movq"
expect_in "$tmp/err" "diffusion_pytorch_model.safetensors" "inspect bad header"
cp -r "$tmp/decoder" "$tmp/cfg"
printf '{"_class_name": "VQModel", "in_channels": ' >"$tmp/cfg/movq/config.json"
expect_rc 1 "inspect bad config" "$K22" inspect "$tmp/cfg"
expect_in "$tmp/err" "config.json" "inspect bad config"
expect_rc 1 "inspect missing path" "$K22" inspect "$tmp/nothing-here"
expect_in "$tmp/err" "nothing-here" "inspect missing path"

echo "test_init_inspect: $checks checks, $fails failed"
[ "$fails" -eq 0 ]
