/* bench_train_step.c: one training step of the prior or the decoder UNet through k22's trainer
 * API (train_prior.h, train_decoder.h: micro-step + optimizer step, the scripts' defaults) on
 * fixed pseudo-random data, timed over K steps after W warm-up steps; prints one "k22_bench"
 * line of key=value pairs that bench/train_vs_torch.sh reads beside
 * bench/bench_train_step_torch.py's (same keys). Prints, never asserts.
 *
 *   bench_train_step --model prior|unet [--size tiny|full] [--device cpu|cpu-ref|cuda[:N]]
 *                    [--batch B] [--latent N] [--steps K] [--warmup W] [--grad_ckpt]
 *                    [--from DIR] [--seed S] [--mixed_precision no|bf16|fp16] [--profile]
 *
 * Weights: k22_params_init_random of the size's preset (what `k22 init --size S` writes), built
 * in memory, or a component folder (--from: the prior/ or unet/ folder). Model FLOPs are
 * flops.h's count (3 x forward per step); MFU is over 989 TFLOP/s (H100 SXM dense bf16) and
 * over the 798 TFLOP/s bf16 GEMM ceiling measured on the GPU machine. Peak memory: on CUDA the
 * device memory this process added (driver-reported use, plus the stream-ordered pool's high
 * mark for peaks between samples); on the CPU the process's max RSS.
 * --profile (or K22_PROFILE=1) wraps the backend in the per-op profiler (profile.h), reset after
 * the warm-up, and prints its table of the timed steps after the k22_bench line; the step times
 * then include the profiler's own cost (two clock reads, or two CUDA events, per op). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "k22/diffusers.h"
#include "k22/flops.h"
#include "k22/profile.h"
#include "k22/train_decoder.h"
#include "k22/train_prior.h"

#include "k22/opts.h"

#include "bench_util.h"

#ifdef K22_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

#define H100_BF16_DENSE 989e12 /* H100 SXM datasheet, dense bf16 */
#define H100_GEMM_MEASURED 798e12 /* 8192^3 bf16 through PyTorch on the GPU machine */

typedef struct {
    const char *model, *size, *device, *from, *precision, *impl;
    int B, latent, steps, warmup, ckpt, profile, levels;
    uint64_t seed;
} bench_args;

/* -1 to go on, else the exit code (0 after --help, 2 for a bad option). */
static int parse(int argc, char **argv, bench_args *a)
{
    int64_t B, latent, steps, warmup, seed, levels = 0;
    const char *levels_s;
    const k22_opt opts[] = {
        {"model", K22_OPT_CHOICE, &a->model, "prior", "the trained model", NULL, "prior|unet", 0},
        {"size", K22_OPT_STR, &a->size, "tiny", "tiny or full shapes", NULL, NULL, 0},
        {"device", K22_OPT_STR, &a->device, "cpu", "cpu, cpu-ref, cuda or cuda:N", NULL, NULL, 0},
        {"mixed_precision", K22_OPT_CHOICE, &a->precision, "no",
         "GEMM operand precision (k22 train's flag; emulated, slower, on cpu)", NULL, "no|bf16|fp16", 0},
        {"batch", K22_OPT_INT, &B, "8", "samples per step (1..100000)", NULL, NULL, 0},
        {"latent", K22_OPT_INT, &latent, "32", "UNet latent side (0..100000; the prior has none)", NULL, NULL, 0},
        {"steps", K22_OPT_INT, &steps, "20", "timed steps (1..100000)", NULL, NULL, 0},
        {"warmup", K22_OPT_INT, &warmup, "3", "untimed steps first (0..100000)", NULL, NULL, 0},
        {"grad_ckpt", K22_OPT_FLAG, &a->ckpt, NULL, "gradient checkpointing (unet)", NULL, NULL, 0},
        {"ckpt_levels", K22_OPT_STR, &levels_s, "0",
         "with --grad_ckpt, only the blocks at the N highest resolutions (k22 train's --checkpoint_levels; 0: every "
         "block; auto: the fewest that fit, ckpt_levels=-1 in the k22_bench line and a k22_bench_ckpt_auto line says which)",
         "K22_BENCH_CKPT_LEVELS", NULL, 0},
        {"from", K22_OPT_STR, &a->from, NULL, "a component folder (else random weights)", NULL, NULL, 0},
        {"seed", K22_OPT_INT, &seed, "0", "random weights' seed", NULL, NULL, 0},
        {"impl_tag", K22_OPT_STR, &a->impl, "k22", "the impl= name in the k22_bench line (a variant's label)", NULL, NULL, 0},
        {"profile", K22_OPT_FLAG, &a->profile, NULL,
         "time every backend op of the timed steps and print a per-op table", "K22_PROFILE", NULL, 0},
    };
    k22_cmd_spec spec = {.usage = "bench_train_step --model prior|unet [options]",
                         .summary = "Times k22's training step; one k22_bench line (ms, samples/s, TFLOP/s, MFU, memory).",
                         .opts = opts, .nopts = (int)(sizeof opts / sizeof opts[0])};
    int rc = k22_opts_parse_cli(&spec, argc, argv, "bench_train_step");
    if (rc >= 0) return rc;
    const int levels_ok = k22_ckpt_levels_parse(levels_s, &levels);
    char levels_msg[80];
    snprintf(levels_msg, sizeof levels_msg, "--ckpt_levels needs auto or 0..%d, and --grad_ckpt",
             K22_CKPT_LEVELS_MAX);
    /* --latent 0 is allowed for the prior, which has none (the unet's count refuses it) */
    const char *bad = B < 1 || B > 100000 || steps < 1 || steps > 100000 || latent < 0 || latent > 100000 ||
                      warmup < 0 || warmup > 100000 || seed < 0
                          ? "--batch and --steps need 1..100000, --latent and --warmup 0..100000"
                      : a->ckpt && !strcmp(a->model, "prior") ? "--grad_ckpt is a decoder option (the prior script has none)"
                      : !levels_ok || (levels && !a->ckpt) ? levels_msg
                      : !*a->impl || strpbrk(a->impl, " =\t\n") ? "--impl_tag needs a non-empty name without spaces or '='"
                                                              : NULL;
    if (bad) {
        fprintf(stderr, "bench_train_step: %s\n", bad);
        return 2;
    }
    a->B = (int)B, a->latent = (int)latent, a->steps = (int)steps, a->warmup = (int)warmup;
    a->seed = (uint64_t)seed, a->levels = (int)levels;
    return -1;
}

#include "bench_mem.h" /* peak memory */

/* ---- the two models ---- */

/* Weights: the preset of a->size initialized as `k22 init` does, or the folder a->from. */
static k22_status load(const bench_args *a, k22_model_kind kind, k22_model_config *cfg,
                       k22_params *ps, k22_err *err)
{
    k22_params_init(ps);
    if (a->from) {
        k22_status st = k22_component_load(a->from, cfg, ps, err);
        if (!st && cfg->kind != kind)
            st = k22_err_set(err, K22_ERR_ARG, "%s: a %s folder, --model wants a %s", a->from,
                             k22_model_class_name(cfg->kind), k22_model_class_name(kind));
        return st;
    }
    k22_status st = k22_config_preset(kind, a->size, cfg, err);
    if (!st) st = k22_params_build(cfg, ps, err);
    if (st) return st;
    k22_params_alloc(ps);
    k22_params_init_random(cfg, ps, a->seed);
    return K22_OK;
}

/* A step: one micro-batch and the optimizer step (accumulation 1, the scripts' default). */
typedef struct {
    k22_prior_trainer *tr;
    const k22_prior_batch *b;
} prior_run;
typedef struct {
    k22_decoder_trainer *tr;
    const k22_decoder_batch *b;
} unet_run;

static void prior_step(void *p)
{
    prior_run *r = p;
    k22_prior_trainer_micro_step(r->tr, r->b);
    k22_train_core_sync(&r->tr->core, NULL);
}

static void unet_step(void *p)
{
    unet_run *r = p;
    k22_decoder_trainer_micro_step(r->tr, r->b);
    k22_train_core_sync(&r->tr->core, NULL);
}

/* Runs warm-up then timed steps (each synchronized, so a step's time is its own); fills the
 * sorted step times in ms and returns the process CPU ms per timed step (all threads: on a
 * shared CPU machine a steadier figure than the wall clock). A profiler behind be starts afresh
 * after the warm-up and reads each step's device times after the step's clock stops. */
static double time_steps(const k22_backend *be, void (*step)(void *), void *ctx,
                         const bench_args *a, bench_mem *mem, double *ms)
{
    k22_prof *prof = k22_prof_of(be);
    for (int s = 0; s < a->warmup; s++) {
        step(ctx);
        be->sync(be->ctx);
        bench_mem_sample(mem);
    }
    if (prof) k22_prof_reset(prof);
    double c0 = bench_cpu_s();
    for (int s = 0; s < a->steps; s++) {
        double t0 = bench_wall_s();
        step(ctx);
        be->sync(be->ctx);
        ms[s] = 1e3 * (bench_wall_s() - t0);
        if (prof) k22_prof_collect(prof);
        bench_mem_sample(mem);
    }
    double cpu_ms = 1e3 * (bench_cpu_s() - c0) / a->steps;
    qsort(ms, (size_t)a->steps, sizeof *ms, bench_cmp_double);
    return cpu_ms;
}

static void report(const bench_args *a, const k22_backend *be, double fwd, size_t nparams,
                   const double *ms, double cpu_ms, const bench_mem *mem)
{
    double med = ms[a->steps / 2], model = k22_flops_train(fwd), rate = model / (med * 1e-3);
    printf("k22_bench impl=%s model=%s size=%s device=%s precision=%s batch=%d latent=%d "
           "grad_ckpt=%d params=%zu steps=%d step_ms=%.3f step_ms_min=%.3f step_ms_max=%.3f "
           "cpu_ms=%.3f samples_per_s=%.3f fwd_gflop=%.4f train_tflop=%.6f model_tflops=%.4f "
           "mfu_989=%.5f mfu_798=%.5f peak_mem_mib=%.1f mem=%s ckpt_levels=%d\n",
           a->impl, a->model, a->size, be->name, be->precision ? k22_precision_name((k22_precision)be->precision) : "fp32", a->B, strcmp(a->model, "unet") ? 0 : a->latent, a->ckpt,
           nparams, a->steps, med, ms[0], ms[a->steps - 1], cpu_ms, a->B / (med * 1e-3), fwd / 1e9,
           model / 1e12, rate / 1e12, rate / H100_BF16_DENSE, rate / H100_GEMM_MEASURED,
           bench_mem_peak_mib(mem), mem->cuda ? "device" : "max_rss", a->levels);
    int64_t nc = 0, ni = 0;
    const char *conv = k22_backend_conv_impl(be, &nc, &ni);
    if (conv) { /* which CUDA convolution path ran, and how many conv directions each took */
        char name[64];
        snprintf(name, sizeof name, "%s", conv);
        for (char *c = name; *c; c++)
            if (*c == ' ' || *c == '=') *c = '-';
        printf("k22_bench_conv impl=%s conv=%s conv_cudnn=%lld conv_im2col=%lld\n", a->impl, name, (long long)nc,
               (long long)ni);
    }
    k22_cuda_stats st;
    if (k22_backend_cuda_stats(be, &st)) /* the 16-bit weight shadow and the cuBLASLt plans */
        printf("k22_bench_cuda impl=%s weight_shadow=%s shadow_reads=%lld shadow_refreshes=%lld "
               "shadow_adamw_writes=%lld lt_heuristics=%lld lt_plans=%lld attn=%s attn_fused=%lld "
               "attn_fused16=%lld attn_gemm=%lld bias_epilogue=%lld bias_kernel=%lld conv_algo=%s conv_choices=%lld "
               "conv_timed=%lld conv_changed=%lld\n", a->impl, st.shadow,
               (long long)st.shadow_reads, (long long)st.shadow_refreshes, (long long)st.shadow_updates,
               (long long)st.gemm_heuristics, (long long)st.gemm_plans, st.attn, (long long)st.attn_flash,
               (long long)st.attn_flash16, (long long)st.attn_gemm, (long long)st.bias_epilogue, (long long)st.bias_kernel,
               st.conv_algo, (long long)st.conv_choices, (long long)st.conv_timed, (long long)st.conv_changed);
    k22_prof *prof = k22_prof_of(be);
    if (!prof) return;
    double wall = 0; /* the timed steps' clock, not the collects and memory samples between */
    for (int s = 0; s < a->steps; s++) wall += ms[s];
    k22_prof_report(prof, wall, a->steps, stdout);
}

static int bench_prior(const bench_args *a, const k22_backend *be, bench_mem *mem, double *ms)
{
    k22_err err;
    k22_model_config cfg;
    k22_params ps;
    k22_prior_trainer tr;
    k22_train_hparams hp;
    k22_train_hparams_default(&hp);
    hp.micro_batch = a->B;
    hp.max_train_steps = a->warmup + a->steps + 1;
    if (load(a, K22_MODEL_PRIOR, &cfg, &ps, &err) ||
        k22_prior_trainer_init_loaded(&tr, be, &cfg, &ps, &hp, &err)) {
        fprintf(stderr, "bench_train_step: %s\n", err.msg);
        k22_params_free(&ps);
        return 1;
    }
    const k22_prior_config *c = &tr.core.cfg.u.prior;
    int B = a->B, E = c->embedding_dim, EP = c->embedding_proj_dim, L = c->num_embeddings;
    float *te = bench_fill((size_t)B * EP, 1), *th = bench_fill((size_t)B * L * E, 2);
    float *ie = bench_fill((size_t)B * E, 3), *nz = bench_fill((size_t)B * E, 4);
    uint8_t *mask = k22_xmalloc((size_t)B * L);
    int64_t *t = k22_xmalloc((size_t)B * sizeof *t);
    for (int b = 0; b < B; b++) { /* captions of various lengths, timesteps spread over 0..999 */
        t[b] = (b * 397 + 11) % 1000;
        for (int i = 0; i < L; i++) mask[b * L + i] = i <= (10 + 7 * b) % L;
    }
    k22_prior_batch batch = {B, te, th, mask, ie, nz, t};
    prior_run run = {&tr, &batch};
    double cpu_ms = time_steps(be, prior_step, &run, a, mem, ms);
    report(a, be, k22_flops_prior_forward(c, B).total, k22_params_numel(&tr.core.ps), ms, cpu_ms,
           mem);
    free(te), free(th), free(ie), free(nz), free(mask), free(t);
    k22_prior_trainer_free(&tr);
    return 0;
}

static int bench_unet(const bench_args *a, const k22_backend *be, bench_mem *mem, double *ms)
{
    k22_err err;
    k22_model_config cfg;
    k22_params ps;
    k22_sched_config sc;
    k22_decoder_trainer tr;
    k22_decoder_train_hparams hp;
    k22_decoder_train_hparams_default(&hp);
    hp.base.micro_batch = a->B;
    hp.base.max_train_steps = a->warmup + a->steps + 1;
    hp.base.gradient_checkpointing = a->ckpt;
    hp.base.checkpoint_levels = a->levels;
    hp.latent_h = hp.latent_w = a->latent;
    k22_flops f;
    if (load(a, K22_MODEL_UNET, &cfg, &ps, &err) ||
        k22_flops_unet_forward(&cfg.u.unet, a->B, a->latent, a->latent, &f, &err) ||
        k22_sched_preset("decoder", &sc, &err) ||
        k22_decoder_trainer_init_loaded(&tr, be, &cfg, &ps, &sc, &hp, &err)) {
        fprintf(stderr, "bench_train_step: %s\n", err.msg);
        k22_params_free(&ps);
        return 1;
    }
    const k22_ckpt_auto *ca = &tr.ckpt_auto;
    if (ca->on) /* levels: 0 none, N, or 64 (K22_UNET_CKPT_ALL) every block */
        printf("k22_bench_ckpt_auto levels=%d free_mib=%.1f reserve_mib=%.1f fits=%d\n", ca->levels,
               ca->free_bytes / 1048576.0, ca->reserve_bytes / 1048576.0, ca->fits);
    int B = a->B;
    size_t n = (size_t)B * 4 * (size_t)a->latent * (size_t)a->latent;
    float *lat = bench_fill(n, 1), *nz = bench_fill(n, 2);
    float *img = bench_fill((size_t)B * tr.core.cfg.u.unet.encoder_hid_dim, 3);
    int64_t *t = k22_xmalloc((size_t)B * sizeof *t);
    for (int b = 0; b < B; b++) t[b] = (b * 397 + 11) % 1000;
    k22_decoder_batch batch = {B, lat, img, nz, t};
    unet_run run = {&tr, &batch};
    double cpu_ms = time_steps(be, unet_step, &run, a, mem, ms);
    report(a, be, f.total, k22_params_numel(&tr.core.ps), ms, cpu_ms, mem);
    free(lat), free(nz), free(img), free(t);
    k22_decoder_trainer_free(&tr);
    return 0;
}

int main(int argc, char **argv)
{
    bench_args a;
    int rc = parse(argc, argv, &a);
    if (rc >= 0) return rc;
    bench_mem mem;
    bench_mem_start(&mem, a.device);
    k22_err err;
    k22_backend *be = k22_backend_open(a.device, a.precision, &err);
    if (!be) {
        fprintf(stderr, "bench_train_step: %s\n", err.msg);
        return err.code == K22_ERR_ARG ? 2 : 1;
    }
    if (a.profile) be = k22_prof_wrap(be);
    double *ms = k22_xmalloc((size_t)a.steps * sizeof *ms);
    rc = !strcmp(a.model, "prior") ? bench_prior(&a, be, &mem, ms) : bench_unet(&a, be, &mem, ms);
    free(ms);
    k22_backend_free(be);
    return rc;
}
