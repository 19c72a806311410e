/* test_cuda_norm_act.c: the CUDA backend's fused group_norm_act (ops.h) against the CPU
 * reference (forward and backward, gradients starting non-zero so they must accumulate, NULL
 * gradients skipped) and its forward bit-equal to the CUDA chain group_norm_fwd ->
 * chan_affine_fwd -> act_fwd, on the UNet's shapes and odd ones; and group_norm_act_fwd_y16
 * under bf16 and fp16 (test_y16).
 *
 * Without a usable CUDA device it says why and exits 0, unless K22_REQUIRE_CUDA is set (to
 * anything but "" or "0"): then it exits 1, as test_cuda_ops.c does. */
#include "cuda/cuda_backend_or_skip.h"
#include "harness/harness.h"
#include "k22/ops.h"
#include "k22/tensor.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static k22_backend *gpu, *ref, *fast; /* fast: the cpu backend (y16 under bf16/fp16) */

typedef struct {
    const char *name;
    int B, C, S, G;
    int affine, scale, shift; /* gamma/beta, scale, shift present */
    int64_t ld;
    float off;
    int act;
} cn_case;

static const cn_case cases[] = {
    {"unet norm2 (B,2C) rows", 2, 32, 64, 8, 1, 1, 1, 64, 1.0f, K22_ACT_SILU},
    {"unet norm1", 2, 32, 64, 8, 1, 0, 0, 32, 0.0f, K22_ACT_SILU},
    {"C=G=1 S=1", 3, 1, 1, 1, 1, 1, 1, 1, 1.0f, K22_ACT_SILU},
    {"S=1", 2, 6, 1, 2, 1, 1, 1, 6, 1.0f, K22_ACT_SILU},
    {"C/G odd", 2, 9, 7, 3, 1, 1, 0, 9, 0.5f, K22_ACT_SILU},
    {"no affine", 1, 4, 9, 2, 0, 1, 0, 4, 1.0f, K22_ACT_SILU},
    {"act none", 2, 6, 5, 3, 1, 1, 1, 12, 1.0f, K22_ACT_NONE},
    {"group norm alone (act none, no scale or shift)", 2, 6, 5, 3, 1, 0, 0, 6, 0.0f, K22_ACT_NONE},
    {"long segments (several norm slices)", 2, 8, 9000, 2, 1, 1, 1, 16, 1.0f, K22_ACT_SILU},
};

static float *host_rand(int64_t n, uint64_t seed, float lo, float hi)
{
    float *p = k22_xmalloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    k22_test_fill(p, n, seed, lo, hi);
    return p;
}

static float *dev_of(const float *h, int64_t n)
{
    float *d = gpu->alloc(gpu->ctx, (size_t)(n > 0 ? n : 1) * sizeof(float));
    if (n > 0) gpu->to_device(gpu->ctx, d, h, (size_t)n * sizeof(float));
    return d;
}

static float *host_of(const float *d, int64_t n)
{
    float *h = k22_xmalloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    if (n > 0) gpu->to_host(gpu->ctx, h, d, (size_t)n * sizeof(float));
    return h;
}

static double maxabs(const float *v, int64_t n)
{
    double m = 0;
    for (int64_t i = 0; i < n; i++) m = fmax(m, fabs(v[i]));
    return m;
}

/* A case's inputs, on the host or the device; NULL where the case has none. */
typedef struct {
    const float *x, *gamma, *beta, *scale, *shift;
} cn_in;

static uint16_t round16(k22_precision p, float v)
{
    return p == K22_PREC_FP16 ? k22_f32_to_f16(v) : k22_f32_to_bf16(v);
}

static float widen16(k22_precision p, uint16_t h)
{
    return p == K22_PREC_FP16 ? k22_f16_to_f32(h) : k22_bf16_to_f32(h);
}

/* Index of the first element where a and b differ (bits), -1 when none. */
static int64_t first_diff(const void *a, const void *b, int64_t n, size_t size)
{
    for (int64_t i = 0; i < n; i++)
        if (memcmp((const char *)a + i * size, (const char *)b + i * size, size)) return i;
    return -1;
}

static int set_precision(k22_backend *be, k22_precision p)
{
    k22_err err;
    k22_err_clear(&err);
    int ok = k22_backend_set_precision(be, p, &err) == K22_OK;
    CHECK_MSG(ok, "%s set_precision %s: %s", be->name, k22_precision_name(p), err.msg);
    return ok;
}

/* group_norm_act_fwd_y16 under bf16 and fp16. Exact: y16 is this backend's own float y
 * (group_norm_act_fwd at the same precision) rounded on the host to nearest even, bit for bit,
 * and its mean, rstd are the float call's bits. Against the cpu backend's y16: within one 16-bit
 * ulp (2^-7 of the value in bf16, 2^-10 in fp16) on top of the float forward's 1e-5 tolerance:
 * the two float ys differ by a few float ulps, so one lying that close to a rounding midpoint may
 * round the other way. */
static void test_y16(const cn_case *c, const cn_in *h, const cn_in *d)
{
    const k22_precision precs[2] = {K22_PREC_BF16, K22_PREC_FP16};
    int64_t n = (int64_t)c->B * c->C * c->S, ng = (int64_t)c->B * c->G;
    uint16_t *d_y16 = gpu->alloc(gpu->ctx, (size_t)n * 2);
    float *d_y = gpu->alloc(gpu->ctx, (size_t)n * 4), *d_st = gpu->alloc(gpu->ctx, (size_t)ng * 16);
    uint16_t *g16 = k22_xmalloc((size_t)n * 2), *want = k22_xmalloc((size_t)n * 2);
    uint16_t *c16 = k22_xmalloc((size_t)n * 2);
    float *gw = k22_xmalloc((size_t)n * 4), *cw = k22_xmalloc((size_t)n * 4);
    float *cst = k22_xmalloc((size_t)ng * 8);
    char what[200];
    for (int k = 0; k < 2; k++) {
        k22_precision p = precs[k];
        const char *pn = k22_precision_name(p);
        if (!set_precision(gpu, p) || !set_precision(fast, p)) continue;
        gpu->group_norm_act_fwd(gpu->ctx, c->act, d_y, d_st, d_st + ng, d->x, d->gamma, d->beta,
                                d->scale, d->shift, c->ld, c->off, c->B, c->C, c->S, c->G, 1e-5f);
        gpu->group_norm_act_fwd_y16(gpu->ctx, c->act, d_y16, d_st + 2 * ng, d_st + 3 * ng, d->x,
                                    d->gamma, d->beta, d->scale, d->shift, c->ld, c->off, c->B,
                                    c->C, c->S, c->G, 1e-5f);
        fast->group_norm_act_fwd_y16(fast->ctx, c->act, c16, cst, cst + ng, h->x, h->gamma,
                                     h->beta, h->scale, h->shift, c->ld, c->off, c->B, c->C, c->S,
                                     c->G, 1e-5f);
        float *gy = host_of(d_y, n), *st = host_of(d_st, 4 * ng);
        gpu->to_host(gpu->ctx, g16, d_y16, (size_t)n * 2);
        for (int64_t i = 0; i < n; i++) want[i] = round16(p, gy[i]);
        int64_t at = first_diff(g16, want, n, 2);
        CHECK_MSG(at < 0, "%s %s: y16[%lld] is 0x%04x, y %.9g rounded is 0x%04x", c->name, pn,
                  (long long)at, at < 0 ? 0 : g16[at], at < 0 ? 0.0 : gy[at],
                  at < 0 ? 0 : want[at]);
        CHECK_MSG(first_diff(st, st + 2 * ng, 2 * ng, 4) < 0,
                  "%s %s: y16's mean, rstd not bit-equal to the float forward's", c->name, pn);
        for (int64_t i = 0; i < n; i++) gw[i] = widen16(p, g16[i]), cw[i] = widen16(p, c16[i]);
        snprintf(what, sizeof what, "%s: %s y16 vs the cpu backend's", c->name, pn);
        k22_check_close(what, gw, cw, n, 1e-5, (p == K22_PREC_FP16 ? 0x1p-10 : 0x1p-7) + 1e-5);
        free(gy), free(st);
    }
    set_precision(gpu, K22_PREC_FP32);
    set_precision(fast, K22_PREC_FP32);
    gpu->free(gpu->ctx, d_y16), gpu->free(gpu->ctx, d_y), gpu->free(gpu->ctx, d_st);
    free(g16), free(want), free(c16), free(gw), free(cw), free(cst);
}

static void test_case(const cn_case *c)
{
    int64_t n = (int64_t)c->B * c->C * c->S, nss = (int64_t)(c->B - 1) * c->ld + c->C;
    int64_t ng = (int64_t)c->B * c->G;
    float *x = host_rand(n, 1, -2.0f, 2.5f), *dy = host_rand(n, 2, -1, 1);
    float *ga = host_rand(c->C, 3, 0.5f, 1.5f), *be = host_rand(c->C, 4, -0.5f, 0.5f);
    float *sc = host_rand(nss, 5, -0.6f, 0.6f), *sh = host_rand(nss, 6, -0.5f, 0.5f);
    const float *hga = c->affine ? ga : NULL, *hbe = c->affine ? be : NULL;
    const float *hsc = c->scale ? sc : NULL, *hsh = c->shift ? sh : NULL;
    float *d_x = dev_of(x, n), *d_dy = dev_of(dy, n);
    float *d_ga = dev_of(ga, c->C), *d_be = dev_of(be, c->C), *d_sc = dev_of(sc, nss),
          *d_sh = dev_of(sh, nss);
    const float *pga = c->affine ? d_ga : NULL, *pbe = c->affine ? d_be : NULL;
    const float *psc = c->scale ? d_sc : NULL, *psh = c->shift ? d_sh : NULL;
    char what[200];

    /* forward: cuda vs cpu-ref */
    float *y = k22_xmalloc((size_t)n * sizeof(float)), *mean = k22_xmalloc((size_t)ng * 4),
          *rstd = k22_xmalloc((size_t)ng * 4);
    ref->group_norm_act_fwd(ref->ctx, c->act, y, mean, rstd, x, hga, hbe, hsc, hsh, c->ld, c->off,
                            c->B, c->C, c->S, c->G, 1e-5f);
    float *d_y = gpu->alloc(gpu->ctx, (size_t)n * 4), *d_mean = gpu->alloc(gpu->ctx, (size_t)ng * 4),
          *d_rstd = gpu->alloc(gpu->ctx, (size_t)ng * 4);
    gpu->group_norm_act_fwd(gpu->ctx, c->act, d_y, d_mean, d_rstd, d_x, pga, pbe, psc, psh, c->ld,
                            c->off, c->B, c->C, c->S, c->G, 1e-5f);
    float *gy = host_of(d_y, n), *gmean = host_of(d_mean, ng), *grstd = host_of(d_rstd, ng);
    snprintf(what, sizeof what, "%s: y vs cpu-ref", c->name);
    k22_check_close(what, gy, y, n, 1e-5, 1e-5); /* float expf/affine vs double: a few ulps */
    snprintf(what, sizeof what, "%s: rstd vs cpu-ref", c->name);
    k22_check_close(what, grstd, rstd, ng, 0, 1e-6);

    /* forward: bit-equal to the cuda chain */
    float *d_n = gpu->alloc(gpu->ctx, (size_t)n * 4), *d_m = gpu->alloc(gpu->ctx, (size_t)n * 4);
    gpu->group_norm_fwd(gpu->ctx, d_n, d_mean, d_rstd, d_x, pga, pbe, c->B, c->C, c->S, c->G,
                        1e-5f);
    for (int b = 0; b < c->B; b++) {
        int64_t o = (int64_t)b * c->C * c->S;
        gpu->chan_affine_fwd(gpu->ctx, d_m + o, d_n + o, psc ? psc + b * c->ld : NULL,
                             psh ? psh + b * c->ld : NULL, c->off, 1, c->C, c->S);
    }
    if (c->act != K22_ACT_NONE) gpu->act_fwd(gpu->ctx, c->act, d_m, d_m, n);
    float *cy = host_of(d_m, n);
    CHECK_MSG(!memcmp(cy, gy, (size_t)n * sizeof(float)),
              "%s: cuda forward not bit-equal to group_norm -> chan_affine -> act", c->name);

    const cn_in hin = {x, hga, hbe, hsc, hsh}, din = {d_x, pga, pbe, psc, psh};
    test_y16(c, &hin, &din);

    /* backward: every gradient starts non-zero (accumulation), vs cpu-ref */
    const int present[5] = {1, c->affine, c->affine, c->scale, c->shift};
    const int64_t len[5] = {n, c->C, c->C, nss, nss};
    const char *gname[5] = {"dx", "dgamma", "dbeta", "dscale", "dshift"};
    float *hg[5], *dg[5], *dgo[5];
    for (int k = 0; k < 5; k++) {
        hg[k] = host_rand(len[k], 10 + (uint64_t)k, -0.5f, 0.5f);
        dg[k] = dev_of(hg[k], len[k]);
        dgo[k] = dev_of(hg[k], len[k]);
    }
    ref->group_norm_act_bwd(ref->ctx, c->act, hg[0], present[1] ? hg[1] : NULL,
                            present[2] ? hg[2] : NULL, present[3] ? hg[3] : NULL,
                            present[4] ? hg[4] : NULL, dy, x, mean, rstd, hga, hbe, hsc, hsh,
                            c->ld, c->off, c->B, c->C, c->S, c->G);
    gpu->group_norm_act_bwd(gpu->ctx, c->act, dg[0], present[1] ? dg[1] : NULL,
                            present[2] ? dg[2] : NULL, present[3] ? dg[3] : NULL,
                            present[4] ? dg[4] : NULL, d_dy, d_x, d_mean, d_rstd, pga, pbe, psc,
                            psh, c->ld, c->off, c->B, c->C, c->S, c->G);
    for (int k = 0; k < 5; k++) {
        float *got = host_of(dg[k], len[k]);
        snprintf(what, sizeof what, "%s: %s vs cpu-ref", c->name, gname[k]);
        /* double sums on both sides; float recompute of u and act' differs by ulps */
        k22_check_close(what, got, hg[k], len[k], 2e-5 * fmax(maxabs(hg[k], len[k]), 1e-3), 2e-5);
        free(got);
    }
    /* only dx requested: the other gradients stay as they were */
    gpu->group_norm_act_bwd(gpu->ctx, c->act, dgo[0], NULL, NULL, NULL, NULL, d_dy, d_x, d_mean,
                            d_rstd, pga, pbe, psc, psh, c->ld, c->off, c->B, c->C, c->S, c->G);
    float *dx_only = host_of(dgo[0], n), *dx_all = host_of(dg[0], n);
    CHECK_MSG(!memcmp(dx_only, dx_all, (size_t)n * sizeof(float)),
              "%s: dx alone differs from dx with every gradient", c->name);
    for (int k = 1; k < 5; k++) {
        float *h = host_of(dgo[k], len[k]), *h0 = host_rand(len[k], 10 + (uint64_t)k, -0.5f, 0.5f);
        CHECK_MSG(!memcmp(h, h0, (size_t)len[k] * sizeof(float)), "%s: NULL %s was written",
                  c->name, gname[k]);
        free(h), free(h0);
    }
    free(dx_only), free(dx_all);
    for (int k = 0; k < 5; k++) {
        free(hg[k]);
        gpu->free(gpu->ctx, dg[k]);
        gpu->free(gpu->ctx, dgo[k]);
    }
    float *bufs[] = {d_x, d_dy, d_ga, d_be, d_sc, d_sh, d_y, d_mean, d_rstd, d_n, d_m};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) gpu->free(gpu->ctx, bufs[i]);
    free(x), free(dy), free(ga), free(be), free(sc), free(sh), free(y), free(mean), free(rstd);
    free(gy), free(gmean), free(grstd), free(cy);
}

int main(void)
{
    int rc;
    gpu = cuda_backend_or_skip("test_cuda_norm_act", &rc);
    if (!gpu) return rc;
    ref = k22_backend_cpu_new(1);
    fast = k22_backend_cpu_new(0);
    CHECK_MSG(gpu->group_norm_act_fwd && gpu->group_norm_act_bwd && gpu->group_norm_act_fwd_y16,
              "cuda backend lacks group_norm_act");
    CHECK_MSG(fast->group_norm_act_fwd_y16, "cpu backend lacks group_norm_act_fwd_y16");
    if (gpu->group_norm_act_fwd && gpu->group_norm_act_bwd && gpu->group_norm_act_fwd_y16 &&
        fast->group_norm_act_fwd_y16)
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) test_case(&cases[i]);
    k22_backend_free(gpu);
    k22_backend_free(ref);
    k22_backend_free(fast);
    return k22_test_finish("cuda/norm_act");
}
