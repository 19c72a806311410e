/* test_cuda_train.c: training on the GPU against the CPU, through the k22 binary (K22_BIN), on
 * the tiny models of `k22 init --size tiny`:
 *  1. one optimizer step of train-prior and of train-decoder on cuda against cpu-ref: the
 *     logged loss and gradient norm, and the weights written;
 *  2. a checkpoint written on the GPU resumes on the CPU, and one written on the CPU resumes on
 *     the GPU; each ends near the run that stayed on the CPU;
 *  3. with mpirun: 2 ranks x 1 accumulation step on cuda against 1 rank x 2 (the same samples per
 *     optimizer step). Over NCCL when the build has it and the ranks have a GPU each (then also
 *     NCCL against K22_NCCL=0's MPI path); on one GPU NCCL refuses two ranks on the same device,
 *     so they all-reduce through MPI. The test prints which path it ran. Also the exchange in
 *     buckets sent during the backward (--bucket_cap_mb 0.01) against one bucket: equal bits on
 *     MPI, within 1e-6 on NCCL; and on NCCL ZeRO-1's buckets (ncclReduce onto the owners) against
 *     one reduce-scatter;
 *  4. --mixed_precision bf16 on cuda: the loss tracks the fp32 run's and agrees with the cpu
 *     backend's bf16 run, and the default run (attention on mma.sync) the wmma kernels' one;
 *     the decoder's cuDNN convolutions, which also round their outputs, are held to its im2col
 *     ones (tolerances at bf16_runs); 16-bit activations give the float ones' losses exactly;
 *  5. K22_PROFILE=1 on cuda: the per-op profiler over the cuda backend, timed by CUDA events
 *     (checks at profile_runs);
 *  6. the 16-bit weight shadow changes no bit of bf16 training (checks at shadow_runs);
 *  7. (with 1) --checkpoint_levels auto reads the device's free memory (checks at auto_levels).
 * Tolerances of 1-3 (fp32 everywhere; the CUDA GEMMs are true fp32, no TF32): the GPU and the CPU sum in
 * different orders, so losses and norms agree to rounding (stated per check). Weights after
 * AdamW: a gradient at the rounding level is noise of either sign on either device (the
 * attention key biases, whose true gradient is zero as softmax ignores a shift shared by every
 * key; in the tiny UNet mostly conv biases), and AdamW's step m / sqrt(v) turns noise into steps
 * of up to lr. Such weights may differ by up to 2 lr x steps; at most
 * 1 in 500 weights (and at least 16) may, the rest are held to 1e-5 absolute. Measured between
 * cpu and cpu-ref (the same test with cuda read as cpu), after one step: prior 12 of 13680
 * weights (exactly its to_k.bias) up to 6.7e-5, the rest within 7.6e-6; decoder 171 of 884456
 * (mostly conv biases) up to 2.7e-4, the rest within 9.6e-6.
 * Without a usable CUDA device it says why in one line and exits 0, unless K22_REQUIRE_CUDA is
 * set (not "" or "0"): then it fails, as test_cuda_ops does.
 * K22_CUDA_TRAIN_PARTS (a comma list of step, resume, ranks, bf16, shadow, profile; unset or
 * empty: all) runs only those parts, e.g. for the slow host emulator (tests/cuda/emu/run BUILD
 * train). */
#include "train/train_fixture.h"
#include "k22/ops.h"
#include "k22/safetensors.h"

#include <math.h>
#include <time.h>
#include <unistd.h>

#ifdef K22_HAVE_CUDA
#include <cuda_runtime.h>
#endif

static char dir[] = "/tmp/k22_cuda_train_XXXXXX";

#define LR 1e-3
#define PRIOR "--pack %s/prior.h5 --pretrained %s/prior --train_batch_size 2 --learning_rate 1e-3 --seed 3 " \
              "--log_every 100"
#define DEC "--pack %s/dec.h5 --pretrained %s/decoder --train_batch_size 2 --learning_rate 1e-3 --seed 5 " \
            "--log_every 100"

/* "grad_norm" of step (1-based) in OUT/metrics.jsonl; NAN when absent. */
static double read_grad_norm(const char *out, int step)
{
    return tf_read_metric(out, step, "grad_norm");
}

typedef struct {
    double max_abs;   /* largest |a - b| over the weights held to 1e-5 */
    double loose_abs; /* largest |a - b| over the weights allowed a flipped AdamW step */
    int64_t loose, n; /* how many weights needed the loose bound; all weights */
} wdiff;

/* Compares OUT_A/comp and OUT_B/comp's weights. 0 after a read error. */
static int weights_diff(const char *a_dir, const char *b_dir, const char *comp, wdiff *w)
{
    char a[8192], b[8192];
    snprintf(a, sizeof a, "%s/%s/diffusion_pytorch_model.safetensors", a_dir, comp);
    snprintf(b, sizeof b, "%s/%s/diffusion_pytorch_model.safetensors", b_dir, comp);
    memset(w, 0, sizeof *w);
    k22_st_file *fa = NULL, *fb = NULL;
    int ok = !k22_st_open(a, &fa, NULL) && !k22_st_open(b, &fb, NULL) && k22_st_count(fa) == k22_st_count(fb);
    for (int i = 0; ok && i < k22_st_count(fa); i++) {
        const k22_st_tensor *x = k22_st_at(fa, i), *y = k22_st_find(fb, x->name);
        if (!y || y->nbytes != x->nbytes || x->dtype != K22_DTYPE_F32) {
            ok = 0;
            break;
        }
        const float *p = x->data, *q = y->data;
        for (size_t k = 0; k < x->nbytes / 4; k++, w->n++) {
            double d = fabs((double)p[k] - q[k]);
            if (!(d <= 1e-5)) {
                w->loose++;
                if (!(d <= w->loose_abs)) w->loose_abs = d; /* NaN sticks */
            } else if (d > w->max_abs) {
                w->max_abs = d;
            }
        }
    }
    k22_st_close(fa);
    k22_st_close(fb);
    return ok;
}

/* The weights of two runs of `steps` optimizer steps: at most 1e-5 apart, except up to 1 in
 * 500 weights (at least 16) with a gradient at the rounding level: 2 lr x steps (file head). */
static void check_weights(const char *what, const char *a, const char *b, const char *comp, int steps)
{
    char pa[4096], pb[4096];
    snprintf(pa, sizeof pa, "%s/%s", dir, a);
    snprintf(pb, sizeof pb, "%s/%s", dir, b);
    wdiff w;
    int ok = weights_diff(pa, pb, comp, &w);
    CHECK_MSG(ok, "%s: could not read and pair the %s weights of %s and %s", what, comp, a, b);
    if (!ok) return;
    int64_t allowed = w.n / 500 > 16 ? w.n / 500 : 16;
    printf("%s: %lld weights: %lld within %.2e (max), %lld noise-gradient weights up to %.2e\n", what,
           (long long)w.n, (long long)(w.n - w.loose), w.max_abs, (long long)w.loose, w.loose_abs);
    CHECK_MSG(w.loose <= allowed, "%s: %lld weights differ by more than 1e-5 (allowed %lld)", what,
              (long long)w.loose, (long long)allowed);
    CHECK_MSG(w.loose_abs <= 2 * LR * steps + 1e-5, "%s: a weight differs by %.3e (bound 2 lr x %d steps)",
              what, w.loose_abs, steps);
}

/* The largest relative difference between the losses of steps lo..hi (at most 15) of two runs;
 * NaN when either run logged fewer steps or a loss is NaN. */
static double loss_diff(const char *what, const char *a, const char *b, int lo, int hi)
{
    char pa[4096], pb[4096];
    snprintf(pa, sizeof pa, "%s/%s", dir, a);
    snprintf(pb, sizeof pb, "%s/%s", dir, b);
    double la[16] = {0}, lb[16] = {0};
    int na = tf_read_losses(pa, la, 15), nb = tf_read_losses(pb, lb, 15);
    CHECK_MSG(na >= hi && nb >= hi, "%s: %s logged %d steps, %s %d; want %d", what, a, na, b, nb, hi);
    double worst = na >= hi && nb >= hi ? 0 : NAN;
    for (int s = lo; s <= hi && s <= na && s <= nb; s++) {
        double r = fabs(la[s] - lb[s]) / fabs(lb[s]);
        if (!(r <= worst)) worst = r; /* NaN sticks */
    }
    printf("%s: losses of steps %d..%d agree to %.2e relative\n", what, lo, hi, worst);
    return worst;
}

/* Losses of steps lo..hi of two runs within rel_tol of each other. */
static void check_losses(const char *what, const char *a, const char *b, int lo, int hi, double rel_tol)
{
    double worst = loss_diff(what, a, b, lo, hi);
    CHECK_MSG(worst <= rel_tol, "%s: losses differ by %.3e relative (tolerance %.0e)", what, worst, rel_tol);
}

/* The common options of train-prior (PRIOR) or train-decoder (DEC) into buf. */
static const char *stage_args(const char *stage, char *buf, size_t n)
{
    if (!strcmp(stage, "train-decoder")) snprintf(buf, n, DEC, dir, dir);
    else snprintf(buf, n, PRIOR, dir, dir);
    return buf;
}

/* Runs `k22 STAGE <its options> --device DEV EXTRA --output_dir dir/OUT`, logging to OUT.log. */
static int run_k22(const char *stage, const char *dev, const char *extra, const char *out)
{
    char args[4096];
    return tf_sh("%s %s %s --device %s %s --output_dir %s/%s >>%s/%s.log 2>&1", tf_bin(), stage,
                 stage_args(stage, args, sizeof args), dev, extra, dir, out, dir, out);
}

/* run_k22 that must exit 0; a failure names the run (label: what the environment adds, or "")
 * and its log. Returns whether it did. */
static int run_k22_ok(const char *label, const char *stage, const char *dev, const char *extra, const char *out)
{
    int rc = run_k22(stage, dev, extra, out);
    CHECK_MSG(rc == 0, "%s%s --device %s %s: exit %d (see %s/%s.log)", label, stage, dev, extra, rc, dir, out);
    return rc == 0;
}

/* The numbers of `k22: cuda: weight shadow ...` (the run's last such line in dir/OUT.log):
 * reads, refreshes, AdamW writes, heuristic queries, set-ups, attention calls on the fused
 * kernels (of which on 16-bit q, k, v as given) and on the GEMM path, linear biases added in
 * cuBLASLt's epilogue and by a kernel, cuDNN's algorithm mode, choices, of which timed, of which
 * unlike the heuristics'; 1 when found. */
typedef struct {
    long long reads, refreshes, updates, heuristics, plans, attn_fused, attn_fused16, attn_gemm, bias_epilogue,
        bias_kernel, conv_choices, conv_timed, conv_changed;
    char conv_algo[16];
} cuda_line;

static int read_cuda_line(const char *out, cuda_line *c)
{
    char p[4096], line[1024];
    snprintf(p, sizeof p, "%s/%s.log", dir, out);
    FILE *f = fopen(p, "r");
    int found = 0;
    while (f && fgets(line, sizeof line, f))
        found |= sscanf(line, "k22: cuda: weight shadow %*s (K22_CUDA_WEIGHT_SHADOW): %lld operand reads, %lld "
                        "refreshes, %lld AdamW writes; cuBLASLt: %lld heuristic queries, %lld set-ups; "
                        "attention %*s (K22_CUDA_ATTN): %lld fused (%lld on 16-bit q, k, v as given), %lld "
                        "GEMM calls; linear biases (K22_CUDA_EPILOGUE): %lld in cuBLASLt's epilogue, %lld by a "
                        "kernel; cuDNN algorithms (K22_CUDNN_ALGO=%15[a-z]): %lld chosen, %lld by timing, %lld "
                        "of those", &c->reads, &c->refreshes, &c->updates, &c->heuristics, &c->plans,
                        &c->attn_fused, &c->attn_fused16, &c->attn_gemm, &c->bias_epilogue,
                        &c->bias_kernel, c->conv_algo, &c->conv_choices, &c->conv_timed,
                        &c->conv_changed) == 14;
    if (f) fclose(f);
    CHECK_MSG(found, "%s/%s.log has no 'k22: cuda: weight shadow' line", dir, out);
    return found;
}

/* 1. One optimizer step on the GPU against cpu-ref. */
static void one_step(const char *stage, const char *comp, const char *tag)
{
    char g[64], c[64], what[96];
    snprintf(g, sizeof g, "%s_gpu1", tag);
    snprintf(c, sizeof c, "%s_ref1", tag);
    run_k22_ok("", stage, "cuda", "--max_train_steps 1", g);
    run_k22_ok("", stage, "cpu-ref", "--max_train_steps 1", c);
    snprintf(what, sizeof what, "%s one step, cuda vs cpu-ref", stage);
    /* The step's loss is a forward over identical weights and inputs: only summation order. */
    check_losses(what, g, c, 1, 1, 1e-5);
    char pg[4096], pc[4096];
    snprintf(pg, sizeof pg, "%s/%s", dir, g);
    snprintf(pc, sizeof pc, "%s/%s", dir, c);
    double ng = read_grad_norm(pg, 1), nc = read_grad_norm(pc, 1);
    double rn = fabs(ng - nc) / nc;
    printf("%s: gradient norm %.9g vs %.9g (%.2e relative)\n", what, ng, nc, rn);
    /* Backward sums longer chains in another order than the forward: a looser 1e-4. */
    CHECK_MSG(isfinite(ng) && isfinite(nc) && rn <= 1e-4, "%s: gradient norm %.9g vs %.9g", what, ng, nc);
    check_weights(what, g, c, comp, 1);
}

/* --checkpoint_levels auto asks the device (cudaMemGetInfo and the pool, k22_backend_mem_free):
 * the set-up line gives a free figure between 1 MiB and the device's size (the emulator's:
 * K22_EMU_MEM_MIB, else 81559), and the tiny decoder fits without checkpointing, so the step
 * equals one_step's plain cuda step bit for bit. */
static void auto_levels(void)
{
    run_k22_ok("", "train-decoder", "cuda", "--max_train_steps 1 --gradient_checkpointing --checkpoint_levels auto",
               "d_auto1");
    char log[4096];
    snprintf(log, sizeof log, "%s/d_auto1.log", dir);
    double free_mib = 0, reserve = 0;
    int found = tf_scan_line(log, "levels auto: ", 2, "levels auto: %lf MiB free after the weights, gradients and "
                             "optimizer state; %lf MiB kept back", &free_mib, &reserve);
    printf("train-decoder --checkpoint_levels auto on cuda: %.1f MiB free, %.1f kept back\n", free_mib, reserve);
    CHECK_MSG(found && free_mib >= 1 && free_mib <= 1048576 && reserve >= 768, "%s: free %.1f MiB, reserve %.1f",
              log, free_mib, reserve);
    CHECK_MSG(tf_count_lines(log, "this run: off (no block is re-run)") == 1, "%s: the tiny decoder re-runs blocks",
              log);
    check_losses("train-decoder auto checkpoint levels vs none, cuda", "d_auto1", "d_gpu1", 1, 1, 0);
}

/* 2. A 2-step checkpoint written on device FROM resumed on device TO for 2 more steps, against
 * 4 straight steps on the CPU. */
static void cross_resume(const char *from, const char *to, const char *out)
{
    int rc = run_k22("train-prior", from, "--max_train_steps 4 --stop_at_step 2", out);
    CHECK_MSG(rc == 99, "train-prior --device %s --stop_at_step 2: exit %d, want 99 (see %s/%s.log)", from, rc,
              dir, out);
    char p[4096];
    snprintf(p, sizeof p, "%s/%s/checkpoint-2/k22_complete", dir, out);
    CHECK_MSG(k22_fs_is_file(p), "no complete checkpoint-2 written on %s", from);
    rc = run_k22("train-prior", to, "--max_train_steps 4 --resume_from_checkpoint latest", out);
    CHECK_MSG(rc == 0, "resuming a %s checkpoint on %s: exit %d (see %s/%s.log)", from, to, rc, dir, out);
    char what[128];
    snprintf(what, sizeof what, "checkpoint written on %s, resumed on %s, vs 4 steps on cpu", from, to);
    /* Four steps of weights a few ulps apart: the loss moves by more than one step's rounding. */
    check_losses(what, out, "p_cpu4", 1, 4, 1e-4);
    check_weights(what, out, "p_cpu4", "prior", 4);
}

/* run_k22_ok with the environment variable var set to val for the run, then as it was. */
static void run_k22_with(const char *var, const char *val, const char *stage, const char *dev,
                         const char *extra, const char *out)
{
    const char *was = getenv(var);
    char *keep = was ? k22_xstrdup(was) : NULL, label[96];
    snprintf(label, sizeof label, "%s=%s ", var, val);
    setenv(var, val, 1);
    run_k22_ok(label, stage, dev, extra, out);
    if (keep) setenv(var, keep, 1);
    else unsetenv(var);
    free(keep);
}

/* 4. --mixed_precision bf16 (issue 10): `steps` optimizer steps of STAGE on cuda in fp32 and in
 * bf16, and on cpu in bf16 (the cpu backend rounds the same GEMM operands; ops.h k22_precision).
 *  - bf16 tracks fp32: the rounding (2^-9 relative per GEMM operand) moves the loss a little
 *    each step and the runs drift apart slowly. Measured on the cpu backend (bf16 against fp32,
 *    these options): prior 4.3e-4 relative at worst over 8 steps, tiny UNet 2.6e-3 over 4 steps.
 *    Tolerances 5e-3 and 2e-2 (about 10x): a broken bf16 path (wrong operand, stale buffer,
 *    truncation instead of rounding in every GEMM) moves the loss by far more.
 *  - bf16 is really on: the largest difference from fp32 exceeds 1e-5 (measured 4.3e-4 and
 *    2.6e-3 on the cpu; fp32 on one device is deterministic, so it would be 0).
 *  - cuda bf16 against cpu bf16: both round the same operands. Their fp32 sums differ in order
 *    (~1e-7 relative), which flips the rounding of a value lying that close to a midpoint: a
 *    fraction ~1e-7 / 2^-8 ~ 3e-5 of the activations per GEMM, each by one bf16 ulp. In fp32
 *    the order alone moves these losses very little (cpu against cpu-ref, same options: prior
 *    0 at step 1 and <= 7e-8 over 8 steps, UNet 0 at step 1 and <= 6.5e-6 over 4). Step 1
 *    (same weights): 1e-4 relative (the fp32 one-step check's 1e-5, x10 for the flips; bf16
 *    against fp32 is 3.7e-5 (prior) and 7.8e-4 (UNet) there). Later steps add AdamW's
 *    amplification of rounding-level gradients (file head): 1e-3 for the prior, as
 *    cross_resume's 1e-4 x10. The tiny UNet is deeper: a flip changes later values by far more
 *    than the sum order does, so flips cascade, and each step's AdamW turns the noisier bf16
 *    gradients into sign flips of lr. Measured on the host emulator (tests/cuda/emu/run), over 4
 *    steps: cuda against cpu 2.1e-3; the emulated cuda against itself with its GEMMs summed in
 *    float instead of double (K22_EMU_GEMM_FLOAT: the sum order alone) 4.4e-3, step 1 7.8e-5,
 *    while the prior stays within 1.1e-7. Hence 1e-2 for the UNet's later steps: only step 1
 *    and the bf16-vs-fp32 checks can tell a broken path there.
 *    Not yet run on a GPU: the figures come from the cpu backend and the emulator; the step-1
 *    tolerances are estimates. */
static void bf16_runs(const char *stage, const char *tag, int steps, double track_tol, double multi_tol)
{
    char x[128], x16[160], g32[64], g16[64], g16i[64], c16[64], what[160];
    snprintf(x, sizeof x, "--max_train_steps %d", steps);
    snprintf(x16, sizeof x16, "%s --mixed_precision bf16", x);
    snprintf(g32, sizeof g32, "%s_bf_gpu32", tag);
    snprintf(g16, sizeof g16, "%s_bf_gpu16", tag);
    snprintf(g16i, sizeof g16i, "%s_bf_gpu16_im2col", tag);
    snprintf(c16, sizeof c16, "%s_bf_cpu16", tag);
    run_k22_ok("", stage, "cuda", x, g32);
    run_k22_ok("", stage, "cuda", x16, g16);
    run_k22_ok("", stage, "cpu", x16, c16);
    /* The tiny models' heads fit the fused attention kernels: bf16 runs there, fp32 never. */
    cuda_line c32, c16l;
    if (read_cuda_line(g32, &c32) && read_cuda_line(g16, &c16l)) {
        printf("%s: attention calls fp32 %lld fused, %lld GEMM; bf16 %lld fused, %lld GEMM\n", stage,
               c32.attn_fused, c32.attn_gemm, c16l.attn_fused, c16l.attn_gemm);
        CHECK_MSG(c32.attn_fused == 0 && c32.attn_gemm > 0 && c16l.attn_fused > 0 && c16l.attn_gemm == 0,
                  "%s: attention calls fp32 %lld fused, %lld GEMM; bf16 %lld fused, %lld GEMM", stage,
                  c32.attn_fused, c32.attn_gemm, c16l.attn_fused, c16l.attn_gemm);
        /* Linear biases in cuBLASLt's epilogue, fp32 and bf16 alike (the emulator has it for every
         * shape; a GPU's library may leave some to the kernel: printed) */
        printf("%s: linear biases fp32 %lld in the epilogue, %lld by a kernel; bf16 %lld, %lld\n", stage,
               c32.bias_epilogue, c32.bias_kernel, c16l.bias_epilogue, c16l.bias_kernel);
        CHECK_MSG(c32.bias_epilogue > 0 && c16l.bias_epilogue > 0 &&
                      (!getenv("K22_CUDA_EMU") || c32.bias_kernel + c16l.bias_kernel == 0),
                  "%s: linear biases fp32 %lld in the epilogue, %lld by a kernel; bf16 %lld, %lld", stage,
                  c32.bias_epilogue, c32.bias_kernel, c16l.bias_epilogue, c16l.bias_kernel);
    }

    /* The default fused attention (on mma.sync) against the wmma kernels (K22_CUDA_ATTN=flash):
     * the same roundings, only the order of fp32 sums differs (none on the emulator): step 1
     * within the sum order's 1e-5, later steps within the cpu comparison's tolerance. */
    char g16w[64];
    snprintf(g16w, sizeof g16w, "%s_bf_gpu16_wmma", tag);
    run_k22_with("K22_CUDA_ATTN", "flash", stage, "cuda", x16, g16w);
    CHECK_MSG(tf_sh("grep -q 'attention on fused kernels on mma.sync' %s/%s.log", dir, g16) == 0 &&
                  tf_sh("grep -q 'attention on fused wmma kernels' %s/%s.log", dir, g16w) == 0,
              "%s: attention not on the mma.sync kernels by default and the wmma ones with K22_CUDA_ATTN=flash "
              "(see %s/%s.log, %s.log)", stage, dir, g16, g16w);
    snprintf(what, sizeof what, "%s step 1, bf16 on cuda, attention on mma.sync vs wmma", stage);
    check_losses(what, g16, g16w, 1, 1, 1e-5);
    snprintf(what, sizeof what, "%s %d steps, bf16 on cuda, attention on mma.sync vs wmma", stage, steps);
    check_losses(what, g16, g16w, 1, steps, multi_tol);

    /* Both models keep the activations only GEMMs and the attention read (conv inputs, layer-norm
     * outputs, q, k, v, MLP activations...) as bf16 by default (ops.h k22_backend_act16): the
     * same losses, exactly, as with floats (K22_ACT16=0), since those ops round them anyway. */
    char g16f[64];
    snprintf(g16f, sizeof g16f, "%s_bf_gpu16_float", tag);
    run_k22_with("K22_ACT16", "0", stage, "cuda", x16, g16f);
    CHECK_MSG(tf_sh("grep -q 'kept in bf16, as the GEMMs' %s/%s.log", dir, g16) == 0 &&
                  tf_sh("! grep -q 'as the GEMMs that read them' %s/%s.log", dir, g16f) == 0,
              "%s: 16-bit activations not on by default, or not off with K22_ACT16=0 (see %s/%s.log, %s.log)",
              stage, dir, g16, g16f);
    snprintf(what, sizeof what, "%s %d steps, bf16 on cuda, 16-bit vs float activations", stage, steps);
    check_losses(what, g16, g16f, 1, steps, 0.0);

    snprintf(what, sizeof what, "%s %d steps, bf16 vs fp32 on cuda", stage, steps);
    double d = loss_diff(what, g16, g32, 1, steps);
    CHECK_MSG(d <= track_tol, "%s: losses differ by %.3e relative (tolerance %.0e)", what, d, track_tol);
    CHECK_MSG(d > 1e-5, "%s: losses differ by only %.3e relative: is bf16 rounding on?", what, d);

    /* The UNet's convolutions on cuDNN also round their outputs to bf16 once (ops.h,
     * k22_precision), which the cpu backend does not: on the emulator that alone moved the
     * step-1 loss 3.4e-4 from cpu bf16 (bf16 against fp32: 4.5e-4). So the checks against the
     * cpu below run on a bf16 run with K22_CUDA_CONV=im2col (the GPU's rounding of GEMM operands
     * alone), and the cuDNN run is held to that one at step 1: more than the sum order's 1e-5
     * (the output rounding is on), at most 2e-3 (6x the measured 3.4e-4; a wrong tap or a lost
     * accumulation moves the loss by far more). */
    const char *like_cpu = g16;
    if (!strcmp(stage, "train-decoder") &&
        tf_sh("grep -q '^k22: convolutions on cudnn' %s/%s.log", dir, g16) == 0) {
        run_k22_with("K22_CUDA_CONV", "im2col", stage, "cuda", x16, g16i);
        snprintf(what, sizeof what, "%s step 1, bf16 on cuda, cudnn vs im2col convolutions", stage);
        double dc = loss_diff(what, g16, g16i, 1, 1);
        CHECK_MSG(dc > 1e-5 && dc <= 2e-3, "%s: losses differ by %.3e relative (want 1e-5 .. 2e-3)", what, dc);
        like_cpu = g16i;
    }
    snprintf(what, sizeof what, "%s step 1, bf16 on cuda%s vs cpu", stage, like_cpu == g16 ? "" : " (im2col)");
    check_losses(what, like_cpu, c16, 1, 1, 1e-4);
    /* And closer to the cpu's bf16 than to fp32: the GPU follows k22_precision, not some other
     * rounding. Step 1 (same weights; no AdamW drift): the flips above move a mean over
     * thousands of values by far less than the rounding itself does. */
    double to_cpu = loss_diff(what, like_cpu, c16, 1, 1);
    char what32[160];
    snprintf(what32, sizeof what32, "%s step 1, bf16 vs fp32 on cuda", stage);
    double to_fp32 = loss_diff(what32, like_cpu, g32, 1, 1);
    CHECK_MSG(to_cpu < to_fp32 / 4, "%s: step-1 loss %.3e from cpu bf16, %.3e from fp32: want < 1/4",
              what, to_cpu, to_fp32);
    snprintf(what, sizeof what, "%s %d steps, bf16 on cuda%s vs cpu", stage, steps,
             like_cpu == g16 ? "" : " (im2col)");
    check_losses(what, like_cpu, c16, 1, steps, multi_tol);
}

/* One op's line of the profiler's table (profile.h): k22_prof op=NAME calls=N ms=X ... gflop=X. */
typedef struct {
    char op[32];
    long long calls;
    double ms, gflop;
} prof_line;

/* The k22_prof lines of dir/OUT.log into l (at most max; returns how many) and its k22_prof_total
 * line's ops_ms, wall_ms and timer; *ops_ms is -1 when that line is missing. */
static int read_prof(const char *out, prof_line *l, int max, double *ops_ms, double *wall_ms, char timer[32])
{
    char p[4096], line[1024];
    snprintf(p, sizeof p, "%s/%s.log", dir, out);
    FILE *f = fopen(p, "r");
    int n = 0;
    *ops_ms = -1;
    *wall_ms = 0;
    timer[0] = '\0';
    while (f && fgets(line, sizeof line, f)) {
        if (n < max && sscanf(line, "k22_prof op=%31s calls=%lld ms=%lf ms_per_step=%*f share=%*f gflop=%lf",
                              l[n].op, &l[n].calls, &l[n].ms, &l[n].gflop) == 4)
            n++;
        sscanf(line, "k22_prof_total steps=%*d wall_ms=%lf ops_ms=%lf gap_ms=%*f gemm_ms=%*f gemm_gflop=%*f "
               "device=%*s timer=%31s", wall_ms, ops_ms, timer);
    }
    if (f) fclose(f);
    return n;
}

static const prof_line *prof_find(const prof_line *l, int n, const char *op)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(l[i].op, op)) return &l[i];
    return NULL;
}

/* 5. `steps` optimizer steps of STAGE on cuda with and without K22_PROFILE=1, and on cpu with it:
 *  - the profiled cuda run's losses equal the plain one's bit for bit (same ops in the same order);
 *  - its table was timed by CUDA events, its summed op time is > 0 and at most the loop's wall
 *    time, and each GEMM-class op took time; its calls by shape add up to the GEMM-class time and
 *    name the same shapes, as often, as the cpu run's;
 *  - every op ran as often on cuda as on cpu, with the same GEMM-class FLOPs (the same model code),
 *    except add and mul: on a device the prior's x0 = (e - mean) / std runs as ops, on the host in
 *    a loop (src/train/loss_prep.c), and the memory entries, whose use differs by device. */
static void profile_runs(const char *stage, const char *tag, int steps)
{
    char x[64], g[64], gp[64], cp[64], what[128];
    snprintf(x, sizeof x, "--max_train_steps %d", steps);
    snprintf(g, sizeof g, "%s_pf_gpu", tag);
    snprintf(gp, sizeof gp, "%s_pf_gpu_prof", tag);
    snprintf(cp, sizeof cp, "%s_pf_cpu_prof", tag);
    run_k22_ok("", stage, "cuda", x, g);
    setenv("K22_PROFILE", "1", 1);
    run_k22_ok("K22_PROFILE=1 ", stage, "cuda", x, gp);
    run_k22_ok("K22_PROFILE=1 ", stage, "cpu", x, cp);
    unsetenv("K22_PROFILE");
    snprintf(what, sizeof what, "%s %d steps on cuda, profiled vs not", stage, steps);
    check_losses(what, gp, g, 1, steps, 0);
    /* the plan's convolution line reads the cuda backend's own context through the wrapper */
    CHECK_MSG(tf_sh("a=$(grep '^k22: convolutions on' %s/%s.log); b=$(grep '^k22: convolutions on' %s/%s.log); "
                    "[ -n \"$b\" ] && [ \"$a\" = \"$b\" ]", dir, g, dir, gp) == 0,
              "%s: the profiled run names another convolution path than the plain one (see %s/%s.log)", stage,
              dir, gp);

    prof_line lg[64], lc[64];
    double gops, gwall, cops, cwall;
    char gtimer[32], ctimer[32];
    int ng = read_prof(gp, lg, 64, &gops, &gwall, gtimer), nc = read_prof(cp, lc, 64, &cops, &cwall, ctimer);
    printf("%s profiled: cuda %d ops, %.3f of %.3f ms (%s); cpu %d ops, %.3f of %.3f ms (%s)\n", stage, ng, gops,
           gwall, gtimer, nc, cops, cwall, ctimer);
    CHECK_MSG(ng > 10 && nc > 10, "%s: %d profiled ops on cuda, %d on cpu (see %s/%s.log)", stage, ng, nc, dir, gp);
    CHECK_MSG(!strcmp(gtimer, "cuda_events") && !strcmp(ctimer, "host_clock"), "%s: timers %s and %s", stage,
              gtimer, ctimer);
    CHECK_MSG(gops > 0 && gops <= gwall, "%s on cuda: ops %.4f ms, wall %.4f ms", stage, gops, gwall);
    /* the GEMM-class calls by shape: their times (from the CUDA events) sum to the GEMM-class
     * time, and both devices saw the same shapes as often */
    CHECK_MSG(tf_sh("awk '/^k22_prof_shape / { n++; split($5, m, \"=\"); s += m[2] } /^k22_prof_total / { "
                    "split($6, g, \"=\"); t = g[2] } END { d = s - t; if (d < 0) d = -d; exit !(n > 0 && "
                    "d <= 1e-3 * t + 1e-3) }' %s/%s.log", dir, gp) == 0,
              "%s on cuda: the k22_prof_shape times do not add up to gemm_ms (see %s/%s.log)", stage, dir, gp);
    CHECK_MSG(tf_sh("cd %s && [ \"$(grep '^k22_prof_shape ' %s.log | cut -d' ' -f2-4 | sort)\" = "
                    "\"$(grep '^k22_prof_shape ' %s.log | cut -d' ' -f2-4 | sort)\" ]", dir, gp, cp) == 0,
              "%s: the GEMM-class shapes and calls differ between cuda and cpu (see %s/%s.log, %s.log)", stage,
              dir, gp, cp);
    static const char *const skip[] = {"add", "mul", "alloc", "free", "to_device", "to_host", "copy", "zero"};
    for (int i = 0; i < ng + nc; i++) {
        const prof_line *a = i < ng ? &lg[i] : &lc[i - ng];
        const prof_line *gl = prof_find(lg, ng, a->op), *cl = prof_find(lc, nc, a->op);
        int skipped = 0;
        for (size_t k = 0; k < sizeof skip / sizeof skip[0]; k++) skipped |= !strcmp(a->op, skip[k]);
        if (skipped || (i >= ng && gl)) continue; /* each op once */
        CHECK_MSG(gl && cl && gl->calls == cl->calls && gl->gflop == cl->gflop,
                  "%s: %s ran %lld times (%.6f GFLOP) on cuda, %lld (%.6f) on cpu", stage, a->op,
                  gl ? gl->calls : 0, gl ? gl->gflop : 0, cl ? cl->calls : 0, cl ? cl->gflop : 0);
        if (gl && gl->gflop > 0) CHECK_MSG(gl->ms > 0, "%s: %s took %.4f ms on cuda", stage, a->op, gl->ms);
    }
}

/* The number of CUDA devices this process sees (0 in a build without CUDA). */
static int gpu_count(void)
{
    int n = 0;
#ifdef K22_HAVE_CUDA
    if (cudaGetDeviceCount(&n) != cudaSuccess) n = 0;
#endif
    return n;
}

static void check_same_weights(const char *what, const char *a, const char *b, const char *sub);

/* One mpirun -np 2 of train-prior on cuda: the common options, x, extra, into dir/OUT (log
 * OUT.log); the environment variables the tests set travel with -x. */
static int mpirun2(const char *x, const char *extra, const char *out)
{
    char args[4096];
    stage_args("train-prior", args, sizeof args);
    return tf_sh("timeout 300 mpirun --oversubscribe -x K22_NCCL -x K22_EMU_GPU_PER_RANK -np 2 %s train-prior %s "
                 "--device cuda %s %s --output_dir %s/%s >%s/%s.log 2>&1", tf_bin(), args, x, extra, dir, out, dir,
                 out);
}

/* 3. 2 ranks x 1 accumulation vs 1 rank x 2, on cuda (run names start with `pre`). own_gpus:
 * the emulator gives each rank a GPU of its own, so its emulated NCCL must serve them. */
static void two_ranks_on(const char *pre, int own_gpus)
{
    const char *x = "--max_train_steps 4 --gradient_accumulation_steps 1";
    char r2[32], r1[32], r2b[32], r2mpi[32], r2z[32], what[160];
    snprintf(r2, sizeof r2, "%s2", pre), snprintf(r1, sizeof r1, "%s1", pre), snprintf(r2b, sizeof r2b, "%s2b", pre);
    snprintf(r2mpi, sizeof r2mpi, "%s2mpi", pre), snprintf(r2z, sizeof r2z, "%s2z", pre);
    if (own_gpus) setenv("K22_EMU_GPU_PER_RANK", "1", 1);
    int rc = mpirun2(x, "", r2);
    CHECK_MSG(rc == 0, "mpirun -np 2 train-prior --device cuda: exit %d (see %s/%s.log)", rc, dir, r2);
    run_k22_ok("", "train-prior", "cuda", "--max_train_steps 4 --gradient_accumulation_steps 2", r1);
    int nccl = tf_sh("grep -q 'all-reduced with NCCL' %s/%s.log", dir, r2) == 0;
    int shared = tf_sh("grep -q 'ranks share a GPU' %s/%s.log", dir, r2) == 0;
    printf("two ranks on cuda%s: %d GPU(s); the gradient all-reduce went through %s\n",
           own_gpus ? " (the emulator's GPU per rank)" : "", gpu_count(),
           nccl ? "NCCL" : shared ? "MPI (the ranks share a GPU, which NCCL refuses)" : "MPI (no NCCL in this build)");
    if (own_gpus) CHECK_MSG(nccl, "emulated GPU per rank: NCCL should serve (see %s/%s.log)", dir, r2);
    /* As tests/mpi/test_train_ranks.c: only the order of the gradient sums differs. */
    snprintf(what, sizeof what, "2 ranks x 1 vs 1 rank x 2 on cuda%s", nccl ? " (NCCL)" : "");
    check_losses(what, r2, r1, 1, 4, 1e-5);
    check_weights(what, r2, r1, "prior", 4);
    /* The exchange in 6 buckets of 0.01 MiB sent during the backward (grad_overlap.h: NCCL's
     * stream ordered by events, or staging + MPI_Iallreduce) against r2's one bucket (the default
     * 25 MiB holds the tiny prior whole, so it leaves only at the end): the same sums. */
    rc = mpirun2(x, "--bucket_cap_mb 0.01", r2b);
    CHECK_MSG(rc == 0, "mpirun -np 2 train-prior --device cuda --bucket_cap_mb 0.01: exit %d (see %s/%s.log)", rc, dir,
              r2b);
    CHECK_MSG(tf_sh("grep -Eq 'gradient buckets: 4 exchanges over (NCCL|MPI), [1-9][0-9]* of 24 buckets sent during' "
                    "%s/%s.log", dir, r2b) == 0, "%s: buckets not sent during the backward (see %s/%s.log)", r2b, dir, r2b);
    snprintf(what, sizeof what, "2 ranks%s: buckets of 0.01 MiB during the backward vs one", nccl ? " (NCCL)" : "");
    check_losses(what, r2b, r2, 1, 4, nccl ? 1e-6 : 0);
    if (nccl) check_weights(what, r2b, r2, "prior", 4);
    else check_same_weights(what, r2b, r2, "prior");
    if (nccl) {
        /* NCCL against the MPI path on the same GPUs: the same sums of two buffers; and ZeRO-1's
         * reduce-scatter and all-gather through NCCL against the all-reduce. */
        setenv("K22_NCCL", "0", 1);
        rc = mpirun2(x, "", r2mpi);
        unsetenv("K22_NCCL");
        CHECK_MSG(rc == 0, "mpirun -np 2 with K22_NCCL=0: exit %d (see %s/%s.log)", rc, dir, r2mpi);
        check_losses("2 ranks: NCCL vs MPI all-reduce", r2, r2mpi, 1, 4, 1e-6);
        check_weights("2 ranks: NCCL vs MPI all-reduce", r2, r2mpi, "prior", 4);
        rc = mpirun2(x, "--zero_stage 1", r2z);
        CHECK_MSG(rc == 0, "mpirun -np 2 --zero_stage 1 over NCCL: exit %d (see %s/%s.log)", rc, dir, r2z);
        check_losses("2 ranks over NCCL: ZeRO-1 vs all-reduce", r2z, r2, 1, 4, 1e-6);
        check_weights("2 ranks over NCCL: ZeRO-1 vs all-reduce", r2z, r2, "prior", 4);
        /* ZeRO-1's buckets, each summed onto its owners by ncclReduce during the backward (one
         * straddles the shards: two pieces), against one ncclReduceScatter after it */
        char r2zb[40], r2z0[40];
        snprintf(r2zb, sizeof r2zb, "%s2zb", pre), snprintf(r2z0, sizeof r2z0, "%s2z0", pre);
        rc = mpirun2(x, "--zero_stage 1 --bucket_cap_mb 0.01", r2zb);
        rc |= mpirun2(x, "--zero_stage 1 --bucket_cap_mb 0", r2z0);
        CHECK_MSG(rc == 0, "mpirun -np 2 --zero_stage 1, buckets of 0.01 MiB and none: exit %d (see %s/%s.log)", rc,
                  dir, r2zb);
        CHECK_MSG(tf_sh("grep -Eq 'gradient buckets: 4 exchanges over NCCL, [1-9][0-9]* of 24 buckets sent during' "
                        "%s/%s.log", dir, r2zb) == 0, "%s: ZeRO-1 buckets not sent during the backward", r2zb);
        check_losses("2 ranks over NCCL, ZeRO-1: buckets of 0.01 MiB vs one reduce-scatter", r2zb, r2z0, 1, 4, 1e-6);
        check_weights("2 ranks over NCCL, ZeRO-1: buckets of 0.01 MiB vs one reduce-scatter", r2zb, r2z0, "prior", 4);
    }
    unsetenv("K22_EMU_GPU_PER_RANK");
}

static void two_ranks(void)
{
    if (tf_sh("command -v mpirun >/dev/null 2>&1") != 0) {
        printf("two ranks on cuda: skipped (no mpirun on PATH)\n");
        return;
    }
    two_ranks_on("r", 0);
    if (getenv("K22_CUDA_EMU")) two_ranks_on("n", 1); /* the emulated NCCL */
}

/* The weights file of OUT/SUB/COMP is the same in runs a and b, byte for byte. */
static void check_same_weights(const char *what, const char *a, const char *b, const char *sub)
{
    char pa[4096], pb[4096];
    snprintf(pa, sizeof pa, "%s/%s/%s/diffusion_pytorch_model.safetensors", dir, a, sub);
    snprintf(pb, sizeof pb, "%s/%s/%s/diffusion_pytorch_model.safetensors", dir, b, sub);
    CHECK_MSG(tf_same_file(pa, pb), "%s: %s differs between %s and %s", what, sub, a, b);
}

/* The logged losses and gradient norms of steps 1..steps are equal in runs a and b. */
static void check_same_metrics(const char *what, const char *a, const char *b, int steps)
{
    check_losses(what, a, b, 1, steps, 0);
    char pa[4096], pb[4096];
    snprintf(pa, sizeof pa, "%s/%s", dir, a);
    snprintf(pb, sizeof pb, "%s/%s", dir, b);
    for (int s = 1; s <= steps; s++) {
        double na = read_grad_norm(pa, s), nb = read_grad_norm(pb, s);
        CHECK_MSG(na == nb, "%s: step %d gradient norm %.9g vs %.9g", what, s, na, nb);
    }
}

/* Runs `k22 STAGE` as run_k22 does with K22_CUDA_WEIGHT_SHADOW=mode; np > 1 under mpirun. */
static int run_shadow(const char *stage, const char *mode, int np, const char *extra, const char *out)
{
    setenv("K22_CUDA_WEIGHT_SHADOW", mode, 1);
    int rc;
    if (np > 1) {
        char args[4096];
        rc = tf_sh("timeout 300 mpirun --oversubscribe -x K22_CUDA_WEIGHT_SHADOW -x K22_EMU_GEMM_ALGO -np %d %s %s "
                   "%s --device cuda %s --output_dir %s/%s >>%s/%s.log 2>&1", np, tf_bin(), stage,
                   stage_args(stage, args, sizeof args), extra, dir, out, dir, out);
    } else {
        rc = run_k22(stage, "cuda", extra, out);
    }
    unsetenv("K22_CUDA_WEIGHT_SHADOW");
    CHECK_MSG(rc == 0, "K22_CUDA_WEIGHT_SHADOW=%s %s %s: exit %d (see %s/%s.log)", mode, stage, extra, rc, dir, out);
    return rc;
}

/* Two runs of 2 + 2 steps with a checkpoint and resume between, the shadow strict and off. */
static int run_shadow_resumed(const char *mode, const char *extra, const char *out)
{
    char x[512];
    snprintf(x, sizeof x, "%s --max_train_steps 4 --stop_at_step 2", extra);
    setenv("K22_CUDA_WEIGHT_SHADOW", mode, 1);
    int rc = run_k22("train-prior", "cuda", x, out);
    unsetenv("K22_CUDA_WEIGHT_SHADOW");
    CHECK_MSG(rc == 99, "K22_CUDA_WEIGHT_SHADOW=%s train-prior --stop_at_step 2: exit %d, want 99 (see %s/%s.log)",
              mode, rc, dir, out);
    snprintf(x, sizeof x, "%s --max_train_steps 4 --resume_from_checkpoint latest", extra);
    return run_shadow("train-prior", mode, 1, x, out);
}

/* 6. The 16-bit weight shadow (K22_CUDA_WEIGHT_SHADOW; src/backend/cuda/weight_shadow.cu) changes
 * no bit of a bf16 run: the same losses, gradient norms and weights, byte for byte, with it
 * strict (a write into the weights that the trainer did not announce is fatal) and off, for
 *  - the prior with --use_ema over 4 steps, checkpointed at 2 and resumed;
 *  - the decoder UNet over 2 steps (its convolutions read the shadow too);
 *  - the prior on 2 ranks with --zero_stage 1 over 3 steps (the all-gather rewrites the weights
 *    each step: params_changed).
 * On the emulator K22_EMU_GEMM_ALGO makes every GEMM's sum order depend on what cuBLASLt's
 * heuristic was told, so the equal bits also say the shadow's operands were described to it
 * exactly as the packed ones. The runs' `k22: cuda:` lines show the shadow at work: read (the
 * trainer registered the weights), built once per process and then kept current by AdamW (under
 * ZeRO-1 rebuilt after each all-gather instead), and no heuristic query after the first step
 * (the cuBLASLt plans: 2 decoder steps query as often as 1). */
static void shadow_runs(void)
{
    const char *algo = getenv("K22_EMU_GEMM_ALGO");
    setenv("K22_EMU_GEMM_ALGO", "1", 1);
    setenv("K22_EMU_LT_STATS", "1", 1); /* the emulated cuBLASLt's counts, at exit (emu.cpp) */
    cuda_line c, c1;
    memset(&c, 0, sizeof c);

    run_shadow_resumed("strict", "--mixed_precision bf16 --use_ema", "sh_p_on");
    run_shadow_resumed("0", "--mixed_precision bf16 --use_ema", "sh_p_off");
    check_same_metrics("prior bf16 + EMA, resumed: shadow strict vs off", "sh_p_on", "sh_p_off", 4);
    check_same_weights("prior bf16 + EMA, resumed: shadow strict vs off", "sh_p_on", "sh_p_off", "prior");
    check_same_weights("prior bf16 + EMA, resumed: shadow strict vs off", "sh_p_on", "sh_p_off",
                       "checkpoint-2/prior");
    check_same_weights("prior bf16 + EMA, resumed: shadow strict vs off", "sh_p_on", "sh_p_off",
                       "checkpoint-2/prior_ema");
    if (read_cuda_line("sh_p_on", &c)) /* the resumed process: 2 steps */
        CHECK_MSG(c.reads > 0 && c.refreshes == 1 && c.updates > 0,
                  "prior, shadow strict: %lld reads, %lld refreshes (want 1: AdamW keeps it), %lld AdamW writes",
                  c.reads, c.refreshes, c.updates);
    if (read_cuda_line("sh_p_off", &c))
        CHECK_MSG(c.reads == 0 && c.refreshes == 0, "prior, shadow off: %lld reads, %lld refreshes", c.reads,
                  c.refreshes);

    run_shadow("train-decoder", "strict", 1, "--max_train_steps 2 --mixed_precision bf16", "sh_d_on");
    run_shadow("train-decoder", "0", 1, "--max_train_steps 2 --mixed_precision bf16", "sh_d_off");
    run_shadow("train-decoder", "strict", 1, "--max_train_steps 1 --mixed_precision bf16", "sh_d_on1");
    check_same_metrics("decoder bf16: shadow strict vs off", "sh_d_on", "sh_d_off", 2);
    check_same_weights("decoder bf16: shadow strict vs off", "sh_d_on", "sh_d_off", "unet");
    if (read_cuda_line("sh_d_on", &c) && read_cuda_line("sh_d_on1", &c1)) {
        CHECK_MSG(c.reads > 0 && c.refreshes == 1 && c.updates > 0,
                  "decoder, shadow strict: %lld reads, %lld refreshes (want 1), %lld AdamW writes", c.reads,
                  c.refreshes, c.updates);
        CHECK_MSG(c.heuristics == c1.heuristics && c.heuristics > 0,
                  "decoder: %lld cuBLASLt heuristic queries in 2 steps, %lld in 1: want the same", c.heuristics,
                  c1.heuristics);
        printf("decoder bf16 on cuda: %lld weight operands read from the shadow in 2 steps; %lld cuBLASLt heuristic "
               "queries in 1 step and in 2\n", c.reads, c.heuristics);
        /* cuDNN's algorithms: chosen once per shape and direction (in the first step), by timing
         * only under K22_CUDNN_ALGO=find; none where the convolutions run as im2col */
        const char *ca = getenv("K22_CUDNN_ALGO");
        int find = ca && !strcmp(ca, "find");
        int im2col = tf_sh("grep -q '^k22: convolutions on cudnn' %s/sh_d_on.log", dir) != 0;
        CHECK_MSG(!strcmp(c.conv_algo, find ? "find" : "heuristic") && c.conv_choices == c1.conv_choices &&
                      (im2col ? c.conv_choices == 0 : c.conv_choices > 0) &&
                      (find ? c.conv_timed > 0 : c.conv_timed == 0),
                  "decoder: cuDNN algorithms (%s) %lld chosen in 2 steps, %lld in 1, %lld by timing", c.conv_algo,
                  c.conv_choices, c1.conv_choices, c.conv_timed);
        printf("decoder bf16 on cuda: cuDNN algorithms (K22_CUDNN_ALGO=%s): %lld chosen in 1 step and in 2, %lld by "
               "timing, %lld of those unlike the heuristics' pick\n", c.conv_algo, c.conv_choices, c.conv_timed,
               c.conv_changed);
    }
    /* On the emulator: its own counts of the 1- and 2-step runs (matmuls per step = the queries a
     * step made before the plans) */
    tf_sh("cd %s && grep -H '^k22_emu_lt' sh_d_on1.log sh_d_on.log sh_p_on.log 2>/dev/null", dir);
    unsetenv("K22_EMU_LT_STATS");

    if (tf_sh("command -v mpirun >/dev/null 2>&1") == 0) {
        const char *x = "--max_train_steps 3 --mixed_precision bf16 --zero_stage 1";
        run_shadow("train-prior", "strict", 2, x, "sh_z_on");
        run_shadow("train-prior", "0", 2, x, "sh_z_off");
        check_same_metrics("2 ranks, ZeRO-1, prior bf16: shadow strict vs off", "sh_z_on", "sh_z_off", 3);
        check_same_weights("2 ranks, ZeRO-1, prior bf16: shadow strict vs off", "sh_z_on", "sh_z_off", "prior");
        /* rank 0: built at the first read, rebuilt after each all-gather but the last (no read follows) */
        if (read_cuda_line("sh_z_on", &c))
            CHECK_MSG(c.reads > 0 && c.refreshes == 3, "ZeRO-1, shadow strict: %lld reads, %lld refreshes (want 3)",
                      c.reads, c.refreshes);
    } else {
        printf("shadow on 2 ranks: skipped (no mpirun on PATH)\n");
    }
    if (algo) setenv("K22_EMU_GEMM_ALGO", algo, 1);
    else unsetenv("K22_EMU_GEMM_ALGO");
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* The part that started last, and when: part_on prints how long it took once the next begins. */
static const char *part_name;
static double part_t0;

static void part_end(void)
{
    if (part_name) printf("test_cuda_train: part %s took %.1f s\n", part_name, now_s() - part_t0);
    part_name = NULL;
}

/* Whether part `name` of the file head runs (K22_CUDA_TRAIN_PARTS); says so when it does not. */
static int part_on(const char *name)
{
    part_end();
    const char *s = getenv("K22_CUDA_TRAIN_PARTS");
    size_t n = strlen(name);
    int on = !s || !*s;
    for (const char *p = s; !on && (p = strstr(p, name)) != NULL; p += n)
        on = (p == s || p[-1] == ',') && (p[n] == ',' || p[n] == '\0');
    if (!on) {
        printf("test_cuda_train: part %s skipped (K22_CUDA_TRAIN_PARTS=%s)\n", name, s);
        return 0;
    }
    part_name = name;
    part_t0 = now_s();
    return 1;
}

int main(void)
{
    k22_err err;
    k22_err_clear(&err);
    k22_backend *gpu = k22_backend_by_name("cuda", &err);
    if (!gpu) {
        const char *req = getenv("K22_REQUIRE_CUDA");
        int required = req && *req && strcmp(req, "0") != 0;
        printf("test_cuda_train: skipped: no CUDA backend: %s\n", err.msg);
        if (required) {
            fprintf(stderr, "test_cuda_train: FAIL: K22_REQUIRE_CUDA=%s but CUDA is unavailable\n", req);
            return 1;
        }
        return 0;
    }
    k22_backend_free(gpu);
    tf_mpi_env();
    CHECK(mkdtemp(dir) != NULL);
    char p[4096];
    snprintf(p, sizeof p, "%s/prior.h5", dir);
    CHECK(tf_write_prior_pack(p, 16, 21) == 0);
    snprintf(p, sizeof p, "%s/dec.h5", dir);
    CHECK(tf_write_pack(p, K22_PACK_FOR_DECODER, 8, 8, 4) == 0); /* 4x4 latents */
    CHECK(tf_sh("%s init prior --size tiny --seed 2 --out %s/prior >/dev/null 2>&1", tf_bin(), dir) == 0);
    CHECK(tf_sh("%s init decoder --size tiny --seed 1 --out %s/decoder >/dev/null 2>&1", tf_bin(), dir) == 0);

    if (part_on("step")) {
        one_step("train-prior", "prior", "p");
        one_step("train-decoder", "unet", "d");
        auto_levels();
    }
    if (part_on("resume")) {
        run_k22_ok("", "train-prior", "cpu", "--max_train_steps 4", "p_cpu4");
        cross_resume("cuda", "cpu", "g2c");
        cross_resume("cpu", "cuda", "c2g");
    }
    if (part_on("ranks")) two_ranks();
    if (part_on("bf16")) {
        bf16_runs("train-prior", "p", 8, 5e-3, 1e-3);
        bf16_runs("train-decoder", "d", 4, 2e-2, 1e-2);
    }
    if (part_on("shadow")) shadow_runs();
    if (part_on("profile")) {
        profile_runs("train-prior", "p", 2);
        profile_runs("train-decoder", "d", 1);
    }
    part_end();
    if (!k22_test_failures) tf_sh("rm -rf %s", dir);
    else printf("test_cuda_train: outputs kept in %s\n", dir);
    return k22_test_finish("test_cuda_train");
}
