#!/usr/bin/env bash
# train_vs_torch.sh: k22's training step (bench_train_step) beside diffusers' (bench_train_step_torch.py)
# for the prior and the decoder UNet, same config, batch and data, in one run on one machine;
# prints each "k22_bench" line, then a table, then the ratios last.
#
#   bench/train_vs_torch.sh                      # tiny models on the CPU (what `make bench` runs)
#   bench/train_vs_torch.sh --size full --device cuda    # the GPU machine (bench/NOTES.md)
#   bench/train_vs_torch.sh --size full --device cuda --max-batch   # largest decoder batch that fits
#   bench/train_vs_torch.sh --size full --device cuda --profile-only # per-op tables of k22's steps only
#
# Options: --size tiny|full, --device cpu|cuda[:N], --steps K, --warmup W, --bin PATH (the
# bench_train_step binary; default build/bench_train_step, or $K22_BENCH_BIN), --python PY
# (default tools/reference/.venv/bin/python when present, else python3), --log DIR (each run's
# output; default a temporary folder). Batches: PRIOR_BATCH, UNET_BATCH, LATENT in the
# environment (defaults: tiny 8, 4, 32; full 32, 8, 96); --max-batch: see max_batch() below.
# On cuda both run twice: bf16 (k22: bf16 GEMM operands, fp32 accumulation; torch: autocast +
# SDPA, the scripts' --mixed_precision bf16, the issue's baseline) and fp32 without TF32; the
# ratios pair the runs of one precision. The largest-batch probe runs k22 in bf16 on cuda.
# --profile: after each case's k22 runs, one more with bench_train_step --profile (bf16 on cuda),
# whose per-op table (include/k22/profile.h) is printed before the summary; the timed figures stay
# those of the unprofiled runs. --profile-only: just those profiled runs (no torch, no summary).
# Subsets, for a GPU session's few minutes: CASES (default "prior unet unet-ckpt"), PRECISIONS
# (cuda only; default "bf16 no"), IMPLS (default "k22 torch"); BENCH_RUN_SECONDS caps each run
# (bench_lib.sh). K22_CONV_IMPLS="cudnn im2col" adds a k22 run per CUDA convolution path
# (K22_CUDA_CONV) to the unet cases, tagged k22-<path> in the table. K22_NOSHADOW=1 adds a k22 run
# per case with the 16-bit weight shadow off (K22_CUDA_WEIGHT_SHADOW=0), tagged k22-noshadow;
# K22_GEMM_ATTN=1 one with attention on the GEMM path instead of the fused kernels
# (K22_CUDA_ATTN=gemm), tagged k22-gemmattn; K22_WMMA_ATTN=1 one with the fused wmma kernels
# (K22_CUDA_ATTN=flash, src/backend/cuda/flash_attention.cu) instead of the default ones on
# mma.sync, tagged k22-wmmaattn; K22_NOPIPE_ATTN=1 one with the mma.sync kernels fetching one tile
# at a time instead of the next while computing (K22_CUDA_ATTN_PIPE=0), tagged k22-nopipeattn;
# K22_NOACT16=1 one with the activations only a GEMM reads (the resnets' convolution inputs, the
# prior's MLP activations) kept as floats instead of 16 bits (K22_ACT16=0), tagged k22-noact16;
# K22_QKV3="prior unet" (or either) one per case of those models with the attention's q, k, v
# projections as three GEMMs instead of one over the stacked weights (K22_QKV_STACK=0), tagged
# k22-qkv3;
# K22_CUDNN_FIND=1 one per unet case with cuDNN's algorithms by its timing instead of its
# heuristics (K22_CUDNN_ALGO=find), tagged k22-cudnnfind, after the case's torch runs.
# K22_CKPT_LEVELS="1 2 auto" adds to the unet-ckpt case a k22 run per number of checkpointed
# levels (k22 train's --checkpoint_levels), tagged k22-lvN (k22-lvauto: the fewest levels that
# fit, its k22_bench_ckpt_auto line says which).
# Exit status: 1 when a k22 run failed; a torch side that cannot run (no diffusers) is reported
# and skipped.
set -uo pipefail
cd "$(dirname "$0")/.."
SIZE=tiny DEV=cpu STEPS= WARMUP=3 BIN=${K22_BENCH_BIN:-build/bench_train_step} PY= LOG= MAXB=0 PROF=no
while [ $# -gt 0 ]; do
  case $1 in
    --size) SIZE=$2; shift 2 ;;
    --device) DEV=$2; shift 2 ;;
    --steps) STEPS=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --bin) BIN=$2; shift 2 ;;
    --python) PY=$2; shift 2 ;;
    --log) LOG=$2; shift 2 ;;
    --max-batch) MAXB=1; shift ;;
    --profile) PROF=yes; shift ;;
    --profile-only) PROF=only; shift ;;
    *) echo "train_vs_torch.sh: unknown option $1 (see the head of this file)" >&2; exit 2 ;;
  esac
done
if [ "$SIZE" = full ]; then
  PB=${PRIOR_BATCH:-32} UB=${UNET_BATCH:-8} LAT=${LATENT:-96} STEPS=${STEPS:-10}
else
  PB=${PRIOR_BATCH:-8} UB=${UNET_BATCH:-4} LAT=${LATENT:-32} STEPS=${STEPS:-20}
fi
PRECS=${PRECISIONS:-bf16 no} IMPLS=${IMPLS:-k22 torch}
has() { case " $2 " in *" $1 "*) return 0 ;; esac; return 1; }
. bench/bench_lib.sh
bench_setup train_vs_torch.sh results.txt

# k22 and torch at one case: model batch latent ckpt
bench_case() {
  local model=$1 b=$2 lat=$3 ck=$4 flag=
  [ "$ck" = 1 ] && flag=--grad_ckpt
  local common=(--model "$model" --size "$SIZE" --batch "$b" --latent "$lat" --steps "$STEPS" --warmup "$WARMUP" $flag)
  local tag=$model-b$b-l$lat-c$ck
  local mp ci
  # k22_variant IMPL VAR=VALUE...: k22 at precision mp with that environment, named IMPL in the table
  k22_variant() {
    local impl=$1
    shift
    run "$impl-$mp-$tag" env "$@" "$BIN" "${common[@]}" --device "$DEV" --mixed_precision "$mp" --impl_tag "$impl" || RC=1
  }
  if [ "$PROF" = only ] || ! has k22 "$IMPLS"; then
    :
  elif [ "${DEV%%:*}" = cuda ]; then # each precision beside torch's of the same precision
    for mp in $PRECS; do
      if [ "$model" = unet ] && [ -n "${K22_CONV_IMPLS:-}" ]; then
        for ci in $K22_CONV_IMPLS; do k22_variant "k22-$ci" K22_CUDA_CONV="$ci"; done
      else
        k22_variant k22
      fi
      [ "${K22_NOSHADOW:-0}" != 1 ] || k22_variant k22-noshadow K22_CUDA_WEIGHT_SHADOW=0
      [ "${K22_GEMM_ATTN:-0}" != 1 ] || k22_variant k22-gemmattn K22_CUDA_ATTN=gemm
      [ "${K22_WMMA_ATTN:-0}" != 1 ] || k22_variant k22-wmmaattn K22_CUDA_ATTN=flash
      [ "${K22_NOPIPE_ATTN:-0}" != 1 ] || k22_variant k22-nopipeattn K22_CUDA_ATTN_PIPE=0
      [ "${K22_NOACT16:-0}" != 1 ] || [ "$mp" = no ] || k22_variant k22-noact16 K22_ACT16=0
      case " ${K22_QKV3:-} " in *" $model "*) k22_variant k22-qkv3 K22_QKV_STACK=0 ;; esac
      if [ "$model" = unet ] && [ "$ck" = 1 ]; then
        for lv in ${K22_CKPT_LEVELS:-}; do k22_variant "k22-lv$lv" K22_BENCH_CKPT_LEVELS="$lv"; done
      fi
    done
  else
    run "k22-$tag" "$BIN" "${common[@]}" --device "$DEV" || RC=1
  fi
  [ "$PROF" = no ] || profile_run "$tag" "${common[@]}" || RC=1
  if [ "$TORCH" = 1 ] && [ "$PROF" != only ] && has torch "$IMPLS"; then
    if [ "${DEV%%:*}" = cuda ]; then
      for mp in $PRECS; do
        run "torch-$mp-$tag" "$PY" bench/bench_train_step_torch.py "${common[@]}" --device "$DEV" --mixed_precision "$mp"
      done
    else
      run "torch-$tag" "$PY" bench/bench_train_step_torch.py "${common[@]}" --device "$DEV"
    fi
  fi
  # cuDNN's algorithms by timing last, after torch: its first step times every shape, so it is the
  # run a phase's deadline should cut, not torch's
  if [ "${K22_CUDNN_FIND:-0}" = 1 ] && [ "$model" = unet ] && [ "${DEV%%:*}" = cuda ] && [ "$PROF" != only ] &&
    has k22 "$IMPLS"; then
    for mp in $PRECS; do k22_variant k22-cudnnfind K22_CUDNN_ALGO=find; done
  fi
  return 0
}

# profile_run TAG ARGS...: k22's step once more under --profile (bf16 on cuda, the issue's
# precision), into LOG/prof-TAG.log; print_profiles shows the tables.
profile_run() {
  local tag=$1 prec=()
  shift
  [ "${DEV%%:*}" = cuda ] && prec=(--mixed_precision bf16)
  ${BENCH_RUN_SECONDS:+timeout "$BENCH_RUN_SECONDS"} "$BIN" "$@" --device "$DEV" "${prec[@]}" --profile >"$LOG/prof-$tag.log" 2>&1 && return 0
  echo "$BENCH_WHO: profiled $tag failed (exit $?): $(tail -3 "$LOG/prof-$tag.log" | tr '\n' ' ')"
  return 1
}

print_profiles() {
  local f
  for f in "$LOG"/prof-*.log; do
    [ -f "$f" ] || continue
    printf '\n== %s: ' "$(basename "$f" .log)"
    awk '/^k22_bench /{ for (i = 2; i <= NF; i++) if ($i ~ /^(model|precision|batch|latent|grad_ckpt|step_ms|model_tflops)=/) printf "%s ", $i; print "" }' "$f"
    sed -n '/^k22 profile:/,/^gap /p' "$f"
    sed -n '/^GEMM-class calls by shape/,/^k22_prof_shape /{/^k22_prof_shape /!p;}' "$f"
  done
  echo "(k22_prof lines for scripts: $LOG/prof-*.log)"
}

# The largest decoder batch whose step runs (doubling from MAX_BATCH_START, default 1, up to
# MAX_BATCH_LIMIT; one warm-up + one step each), per implementation in MAX_BATCH_IMPLS
# ("k22 torch-bf16") and checkpointing mode in MAX_BATCH_CKPT ("0 1"): on the GPU machine split
# them over several commands, each probe of the full UNet loads it anew.
max_batch() {
  local impl=$1 ck=$2 b=${MAX_BATCH_START:-1} best=0 flag=
  [ "$ck" = 1 ] && flag=--grad_ckpt
  while [ "$b" -le "${MAX_BATCH_LIMIT:-1024}" ]; do
    local cmd=("$BIN" --device "$DEV")
    [ "$impl" = k22 ] && [ "${DEV%%:*}" = cuda ] && cmd+=(--mixed_precision bf16)
    [ "$impl" = k22 ] || cmd=("$PY" bench/bench_train_step_torch.py --device "$DEV" --mixed_precision "${impl#torch-}")
    "${cmd[@]}" --model unet --size "$SIZE" --batch "$b" --latent "$LAT" --steps 1 --warmup 1 $flag \
      >"$LOG/maxb-$impl-c$ck-b$b.log" 2>&1 || break
    best=$b
    b=$((b * 2))
  done
  printf 'max decoder batch %-11s latents %dx%d grad_ckpt=%d: %d (power of 2; logs %s/maxb-*)\n' \
    "$impl" "$LAT" "$LAT" "$ck" "$best" "$LOG"
}

if [ "$MAXB" = 1 ]; then
  for impl in ${MAX_BATCH_IMPLS:-k22 torch-bf16}; do
    [ "$impl" = k22 ] || [ "$TORCH" = 1 ] || continue
    for ck in ${MAX_BATCH_CKPT:-0 1}; do max_batch "$impl" "$ck"; done
  done
  exit $RC
fi

for c in ${CASES:-prior unet unet-ckpt}; do
  case $c in
    prior) bench_case prior "$PB" 0 0 ;;
    unet) bench_case unet "$UB" "$LAT" 0 ;;
    unet-ckpt) bench_case unet "$UB" "$LAT" 1 ;;
    *) echo "train_vs_torch.sh: unknown case '$c' in CASES (prior, unet, unet-ckpt)" >&2; exit 2 ;;
  esac
done
[ "$PROF" = no ] || print_profiles
[ "$PROF" != only ] || exit $RC

# The table, then the ratios (each k22 run over each torch run of the same case and precision) last.
awk '
function kv(line, a,   i, n, f, p) { n = split(line, f, " "); for (i = 2; i <= n; i++) { p = index(f[i], "="); a[substr(f[i], 1, p - 1)] = substr(f[i], p + 1) } }
BEGIN { printf "\n%-5s %-4s %-6s %5s %4s %4s %-10s %-13s %10s %10s %10s %9s %7s %7s %10s\n", "model", "size", "device", "batch", "lat", "ckpt", "impl", "precision", "step_ms", "cpu_ms", "samples/s", "TFLOP/s", "MFU989", "MFU798", "peak_MiB" }
{ delete r; kv($0, r); key = r["model"] " b" r["batch"] " lat" r["latent"] " ckpt" r["grad_ckpt"]
  printf "%-5s %-4s %-6s %5d %4d %4d %-10s %-13s %10.2f %10.2f %10.2f %9.3f %6.2f%% %6.2f%% %10.1f\n", r["model"], r["size"], r["device"], r["batch"], r["latent"], r["grad_ckpt"], r["impl"], r["precision"], r["step_ms"], r["cpu_ms"], r["samples_per_s"], r["model_tflops"], 100 * r["mfu_989"], 100 * r["mfu_798"], r["peak_mem_mib"]
  p = r["precision"]; sub(/-autocast$/, "", p); key = key " " p  # k22 bf16 pairs with torch bf16-autocast
  if (r["impl"] ~ /^k22/) { k = key " " r["impl"]; base[k] = key; ks[k] = r["samples_per_s"]; kc[k] = r["cpu_ms"]; km[k] = r["peak_mem_mib"]; order[++n] = k }
  else { m = ++tn[key]; ts[key, m] = r["samples_per_s"]; tc[key, m] = r["cpu_ms"]; tm[key, m] = r["peak_mem_mib"]; tp[key, m] = r["precision"] } }
END { print ""; print "ratios k22 / torch (samples/s > 1: k22 faster; cpu_ms < 1: k22 uses less CPU; memory < 1: k22 smaller):"
  for (i = 1; i <= n; i++) { k = order[i]; key = base[k]
    if (!tn[key]) { printf "  %-42s no torch run\n", k; continue }
    for (m = 1; m <= tn[key]; m++)
      printf "  %-42s vs torch %-13s samples/s %6.2fx  cpu_ms %6.2fx  peak memory %6.2fx\n", k, tp[key, m], ks[k] / ts[key, m], kc[k] / tc[key, m], km[k] / tm[key, m] } }
' "$RESULTS"
exit $RC
