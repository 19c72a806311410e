#!/usr/bin/env bash
# pack_vs_torch.sh: the frozen-encoder pass of `k22 pack` (bench_pack_encode: CLIP text, CLIP
# vision, MoVQ encode) beside transformers/diffusers' (bench_pack_encode_torch.py), same configs,
# batch, captions and images, in one run on one machine; prints each "k22_bench" line, then a
# table, then the ratios last (issue 10, item 5).
#
#   bench/pack_vs_torch.sh                               # tiny models on the CPU (`make bench`)
#   bench/pack_vs_torch.sh --size full --device cuda     # the GPU machine (bench/NOTES.md)
#
# Options: --size tiny|full, --device cpu|cuda[:N], --batch B, --resolution R, --images N,
# --warmup W, --prior DIR / --decoder DIR (weights from folders, e.g. `k22 init`, given to both
# sides), --bin PATH (bench_pack_encode; default build/bench_pack_encode, or $K22_PACK_BENCH_BIN),
# --python PY (default tools/reference/.venv/bin/python when present, else python3), --log DIR.
# Defaults: tiny: batch 4, resolution 64, 32 images, 2 warm-up batches; full: batch 16 (k22
# pack's default), resolution 768, 64 images, 1 warm-up batch. On cuda torch runs three times:
# bf16 autocast (the issue's baseline), fp32 without TF32 (k22's precision today) and bf16
# weights (what the scripts do to their frozen encoders). Exit status 1 when the k22 run failed;
# a torch side that cannot run (no diffusers) is reported and skipped.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
SIZE=tiny DEV=cpu B= RES= N= WARMUP= BIN=${K22_PACK_BENCH_BIN:-build/bench_pack_encode} PY= LOG= FROM=()
while [ $# -gt 0 ]; do
  case $1 in
    --size) SIZE=$2; shift 2 ;;
    --device) DEV=$2; shift 2 ;;
    --batch) B=$2; shift 2 ;;
    --resolution) RES=$2; shift 2 ;;
    --images) N=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --prior|--decoder) FROM+=("$1" "$2"); shift 2 ;;
    --bin) BIN=$2; shift 2 ;;
    --python) PY=$2; shift 2 ;;
    --log) LOG=$2; shift 2 ;;
    *) echo "pack_vs_torch.sh: unknown option $1 (see the head of this file)" >&2; exit 2 ;;
  esac
done
if [ "$SIZE" = full ]; then
  B=${B:-16} RES=${RES:-768} N=${N:-64} WARMUP=${WARMUP:-1}
else
  B=${B:-4} RES=${RES:-64} N=${N:-32} WARMUP=${WARMUP:-2}
fi
. bench/bench_lib.sh
bench_setup pack_vs_torch.sh pack-results.txt

common=(--size "$SIZE" --batch "$B" --resolution "$RES" --images "$N" --warmup "$WARMUP" "${FROM[@]}")
if [ "${DEV%%:*}" = cuda ]; then # k22 in both precisions; ratios pair equal precisions
  run k22-pack-bf16 "$BIN" "${common[@]}" --device "$DEV" --mixed_precision bf16 || RC=1
  run k22-pack-fp32 "$BIN" "${common[@]}" --device "$DEV" --mixed_precision no || RC=1
else
  run k22-pack "$BIN" "${common[@]}" --device "$DEV" || RC=1
fi
if [ "$TORCH" = 1 ]; then
  if [ "${DEV%%:*}" = cuda ]; then
    for mp in bf16 no bf16-weights; do
      run "torch-pack-$mp" "$PY" bench/bench_pack_encode_torch.py "${common[@]}" --device "$DEV" --mixed_precision "$mp"
    done
  else
    run torch-pack "$PY" bench/bench_pack_encode_torch.py "${common[@]}" --device "$DEV"
  fi
fi

# The table (TFLOP/s from torch's FLOP count of each encoder over model_ms, for both sides),
# then the ratios (k22 over each torch run, per encoder) last.
awk '
function kv(line, a,   i, n, f, p) { n = split(line, f, " "); for (i = 2; i <= n; i++) { p = index(f[i], "="); a[substr(f[i], 1, p - 1)] = substr(f[i], p + 1) } }
{ line[NR] = $0; delete r; kv($0, r); if (r["gflop_per_image"] != "") gf[r["encoder"]] = r["gflop_per_image"] }
# the ratio key: encoder and precision family (k22 bf16 with torch bf16-autocast and bf16-weights)
function pkey(r,   p) { p = r["precision"]; sub(/-.*$/, "", p); return r["encoder"] " " p }
END {
  printf "\n%-7s %-4s %-6s %5s %5s %6s %-6s %-13s %10s %9s %9s %9s %10s %8s %10s\n", "encoder", "size", "device", "batch", "res", "images", "impl", "precision", "ms/batch", "prep_ms", "model_ms", "cpu_ms", "images/s", "TFLOP/s", "peak_MiB"
  for (j = 1; j <= NR; j++) { delete r; kv(line[j], r); key = pkey(r); enc = r["encoder"]
    tf = (enc in gf) && r["model_ms"] > 0 ? sprintf("%8.3f", gf[enc] * r["batch"] / r["model_ms"]) : sprintf("%8s", "-")
    printf "%-7s %-4s %-6s %5d %5d %6d %-6s %-13s %10.2f %9.2f %9.2f %9.2f %10.2f %s %10.1f\n", r["encoder"], r["size"], r["device"], r["batch"], r["resolution"], r["images"], r["impl"], r["precision"], r["ms_per_batch"], r["prep_ms"], r["model_ms"], r["cpu_ms"], r["images_per_s"], tf, r["peak_mem_mib"]
    if (r["impl"] == "k22") { ks[key] = r["images_per_s"]; kc[key] = r["cpu_ms"]; km[key] = r["peak_mem_mib"]; ko[key] = r["out_mean_abs"]; kd[key] = r["model_ms"]; order[++n] = key }
    else { m = ++tn[key]; ts[key, m] = r["images_per_s"]; tc[key, m] = r["cpu_ms"]; tm[key, m] = r["peak_mem_mib"]; tp[key, m] = r["precision"]; to[key, m] = r["out_mean_abs"]; td[key, m] = r["model_ms"] } }
  print ""; print "ratios k22 / torch (images/s > 1: k22 faster; model: the same without host prep, torch model_ms / k22 model_ms;"
  print "cpu_ms < 1: k22 uses less CPU; memory < 1: k22 smaller):"
  for (i = 1; i <= n; i++) { key = order[i]
    if (!tn[key]) { printf "  %-12s no torch run\n", key; continue }
    for (m = 1; m <= tn[key]; m++) {
      printf "  %-12s vs torch %-13s images/s %6.2fx  model %6.2fx  cpu_ms %6.2fx  peak memory %6.2fx", key, tp[key, m], ks[key] / ts[key, m], (kd[key] > 0 ? td[key, m] / kd[key] : 0), kc[key] / tc[key, m], km[key] / tm[key, m]
      # same weights on both sides (--prior/--decoder): the mean |output| should agree
      if (same && key !~ /^total/ && to[key, m] > 0) printf "  mean|out| %.5fx", ko[key] / to[key, m]
      printf "\n" } } }
' same=$((${#FROM[@]} > 0)) "$RESULTS"
exit $RC
