/* test_ops_norm_act.c: the fused group_norm_act op (ops.h) on both CPU modes. Forward is
 * bit-equal to group_norm_fwd -> chan_affine_fwd -> act_fwd of the same backend; backward
 * matches that chain's backward (act_bwd -> chan_affine_bwd -> group_norm_bwd; bit for bit in
 * the fast mode, within a stated tolerance in the double-precision reference); the reference
 * backward matches central finite differences for x, gamma, beta, scale and shift; fast
 * matches reference; gradients accumulate (+=) and NULL ones are skipped; odd shapes
 * (C = G = 1, S = 1, odd C/G, scale/shift rows wider than C as the UNet's (B, 2C) rows); the
 * 16-bit outputs (group_norm_act_fwd_y16, layer_norm_fwd_y16, act_fwd_y16 with no activation)
 * are the float ones rounded. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "harness/harness.h"
#include "k22/ops.h"

typedef struct {
    const char *name;
    int B, C, S, G;
    int gamma, beta, scale, shift; /* which optional inputs are present */
    int64_t ld;                    /* scale/shift row stride (>= C) */
    float off;
    int act;
} na_case;

static const na_case cases[] = {
    {"unet norm2", 2, 8, 12, 4, 1, 1, 1, 1, 16, 1.0f, K22_ACT_SILU},
    {"unet norm1", 2, 6, 10, 3, 1, 1, 0, 0, 6, 0.0f, K22_ACT_SILU},
    {"C=G=1 S=1", 3, 1, 1, 1, 1, 1, 1, 1, 1, 1.0f, K22_ACT_SILU},
    {"S=1", 2, 6, 1, 2, 1, 1, 1, 1, 6, 1.0f, K22_ACT_SILU},
    {"C/G odd", 2, 9, 7, 3, 1, 1, 1, 0, 9, 0.5f, K22_ACT_SILU},
    {"no affine, scale only", 1, 4, 9, 2, 0, 0, 1, 0, 4, 1.0f, K22_ACT_SILU},
    {"act none", 2, 6, 5, 3, 1, 0, 1, 1, 12, 1.0f, K22_ACT_NONE},
};
enum { NCASES = sizeof cases / sizeof cases[0] };

/* Inputs of one case; absent optional inputs are NULL. */
typedef struct {
    float *x, *gamma, *beta, *scale, *shift, *dy;
    int64_t nx, nss;
} na_in;

static float *fvec(int64_t n, uint64_t seed, float lo, float hi)
{
    float *v = calloc(n > 0 ? (size_t)n : 1, sizeof(float));
    if (seed) k22_test_fill(v, n, seed, lo, hi);
    return v;
}

static na_in na_in_make(const na_case *c, uint64_t seed)
{
    na_in in = {0};
    in.nx = (int64_t)c->B * c->C * c->S;
    in.nss = (c->B - 1) * c->ld + c->C;
    in.x = fvec(in.nx, seed, -2.0f, 2.5f);
    in.dy = fvec(in.nx, seed + 1, -1.0f, 1.0f);
    if (c->gamma) in.gamma = fvec(c->C, seed + 2, 0.5f, 1.5f);
    if (c->beta) in.beta = fvec(c->C, seed + 3, -0.5f, 0.5f);
    if (c->scale) in.scale = fvec(in.nss, seed + 4, -0.6f, 0.6f);
    if (c->shift) in.shift = fvec(in.nss, seed + 5, -0.5f, 0.5f);
    return in;
}

static void na_in_free(na_in *in)
{
    free(in->x), free(in->gamma), free(in->beta), free(in->scale), free(in->shift), free(in->dy);
}

static void fused_fwd(const k22_backend *be, const na_case *c, const na_in *in, float *y,
                      float *mean, float *rstd)
{
    be->group_norm_act_fwd(be->ctx, c->act, y, mean, rstd, in->x, in->gamma, in->beta, in->scale,
                           in->shift, c->ld, c->off, c->B, c->C, c->S, c->G, 1e-5f);
}

/* The unfused chain; n (norm out) and m (affine out) kept for its backward. */
static void chain_fwd(const k22_backend *be, const na_case *c, const na_in *in, float *y,
                      float *n, float *m, float *mean, float *rstd)
{
    be->group_norm_fwd(be->ctx, n, mean, rstd, in->x, in->gamma, in->beta, c->B, c->C, c->S, c->G,
                       1e-5f);
    for (int b = 0; b < c->B; b++) {
        int64_t o = (int64_t)b * c->C * c->S;
        be->chan_affine_fwd(be->ctx, m + o, n + o, in->scale ? in->scale + b * c->ld : NULL,
                            in->shift ? in->shift + b * c->ld : NULL, c->off, 1, c->C, c->S);
    }
    if (c->act == K22_ACT_NONE)
        memcpy(y, m, (size_t)in->nx * sizeof(float));
    else
        be->act_fwd(be->ctx, c->act, y, m, in->nx);
}

/* Gradients: g[0] dx, g[1] dgamma, g[2] dbeta, g[3] dscale, g[4] dshift. */
typedef struct {
    float *g[5];
    int64_t n[5];
} na_grads;

static na_grads grads_make(const na_case *c, const na_in *in, float fill)
{
    na_grads G = {{0}, {in->nx, c->C, c->C, in->nss, in->nss}};
    for (int k = 0; k < 5; k++) {
        G.g[k] = fvec(G.n[k], 0, 0, 0);
        for (int64_t i = 0; i < G.n[k]; i++) G.g[k][i] = fill * (float)((i % 5) - 2);
    }
    return G;
}

static void grads_free(na_grads *G)
{
    for (int k = 0; k < 5; k++) free(G->g[k]);
}

/* mask bit k: gradient k requested (else NULL); absent inputs never get a gradient. */
static void fused_bwd(const k22_backend *be, const na_case *c, const na_in *in, na_grads *G,
                      const float *mean, const float *rstd, unsigned mask)
{
    float *g[5];
    const int present[5] = {1, c->gamma, c->beta, c->scale, c->shift};
    for (int k = 0; k < 5; k++) g[k] = (mask >> k & 1) && present[k] ? G->g[k] : NULL;
    be->group_norm_act_bwd(be->ctx, c->act, g[0], g[1], g[2], g[3], g[4], in->dy, in->x, mean,
                           rstd, in->gamma, in->beta, in->scale, in->shift, c->ld, c->off, c->B,
                           c->C, c->S, c->G);
}

static void chain_bwd(const k22_backend *be, const na_case *c, const na_in *in, na_grads *G,
                      const float *n, const float *m, const float *mean, const float *rstd)
{
    float *dm = fvec(in->nx, 0, 0, 0), *dn = fvec(in->nx, 0, 0, 0);
    if (c->act == K22_ACT_NONE)
        memcpy(dm, in->dy, (size_t)in->nx * sizeof(float));
    else
        be->act_bwd(be->ctx, c->act, dm, in->dy, m, in->nx);
    for (int b = 0; b < c->B; b++) {
        int64_t o = (int64_t)b * c->C * c->S;
        be->chan_affine_bwd(be->ctx, dn + o, c->scale ? G->g[3] + b * c->ld : NULL,
                            c->shift ? G->g[4] + b * c->ld : NULL, dm + o, n + o,
                            in->scale ? in->scale + b * c->ld : NULL, c->off, 1, c->C, c->S);
    }
    be->group_norm_bwd(be->ctx, G->g[0], c->gamma ? G->g[1] : NULL, c->beta ? G->g[2] : NULL, dn,
                       in->x, mean, rstd, in->gamma, c->B, c->C, c->S, c->G);
    free(dm);
    free(dn);
}

static double maxabs(const float *v, int64_t n)
{
    double m = 0;
    for (int64_t i = 0; i < n; i++) m = fmax(m, fabs(v[i]));
    return m;
}

static const char *gname[5] = {"dx", "dgamma", "dbeta", "dscale", "dshift"};

/* Compares every gradient: |got - ref| <= tol * max|ref| + tol * |ref|. */
static void grads_close(const char *what, const na_grads *got, const na_grads *ref, double tol)
{
    for (int k = 0; k < 5; k++) {
        char w[200];
        snprintf(w, sizeof w, "%s %s", what, gname[k]);
        k22_check_close(w, got->g[k], ref->g[k], got->n[k],
                        tol * fmax(maxabs(ref->g[k], ref->n[k]), 1e-3), tol);
    }
}

/* Forward bit-equal to the chain, backward close to the chain's backward. */
static void vs_chain(const k22_backend *be, const na_case *c)
{
    na_in in = na_in_make(c, 0x4e41 + (uint64_t)c->C * 7 + (uint64_t)c->S);
    int64_t ng = (int64_t)c->B * c->G;
    float *y = fvec(in.nx, 0, 0, 0), *yc = fvec(in.nx, 0, 0, 0), *n = fvec(in.nx, 0, 0, 0),
          *m = fvec(in.nx, 0, 0, 0);
    float *mean = fvec(ng, 0, 0, 0), *rstd = fvec(ng, 0, 0, 0), *meanc = fvec(ng, 0, 0, 0),
          *rstdc = fvec(ng, 0, 0, 0);
    fused_fwd(be, c, &in, y, mean, rstd);
    chain_fwd(be, c, &in, yc, n, m, meanc, rstdc);
    CHECK_MSG(!memcmp(y, yc, (size_t)in.nx * sizeof(float)) &&
                  !memcmp(mean, meanc, (size_t)ng * sizeof(float)) &&
                  !memcmp(rstd, rstdc, (size_t)ng * sizeof(float)),
              "%s %s: forward not bit-equal to group_norm -> chan_affine -> act", be->name,
              c->name);
    na_grads gf = grads_make(c, &in, 0.25f), gc = grads_make(c, &in, 0.25f);
    fused_bwd(be, c, &in, &gf, mean, rstd, 31u);
    chain_bwd(be, c, &in, &gc, n, m, meanc, rstdc);
    char what[160];
    snprintf(what, sizeof what, "%s %s fused vs chain", be->name, c->name);
    /* the chain rounds n, m, dm, dn to float and the fused op recomputes from x: the difference
     * is float rounding carried through the norm backward (seen < 1e-6 relative) */
    grads_close(what, &gf, &gc, 2e-5);
    if (!strcmp(be->name, "cpu")) /* the fast mode forms the chain's own float sums */
        for (int k = 0; k < 5; k++)
            CHECK_MSG(!memcmp(gf.g[k], gc.g[k], (size_t)gf.n[k] * sizeof(float)),
                      "%s: %s not bit-equal to the chain's", what, gname[k]);
    grads_free(&gf), grads_free(&gc);
    free(y), free(yc), free(n), free(m), free(mean), free(rstd), free(meanc), free(rstdc);
    na_in_free(&in);
}

/* L = sum dy * y, in double. */
static double fd_loss(const k22_backend *be, const na_case *c, const na_in *in, float *y,
                      float *mean, float *rstd)
{
    fused_fwd(be, c, in, y, mean, rstd);
    double L = 0;
    for (int64_t i = 0; i < in->nx; i++) L += (double)in->dy[i] * y[i];
    return L;
}

/* The reference backward against central differences for every input; corrupt scales the
 * analytic dx by 1.01 (the canary). Returns the number of inputs that failed. */
static int fd_check(const k22_backend *be, const na_case *c, int corrupt)
{
    na_in in = na_in_make(c, 0xfd00 + (uint64_t)c->C + (uint64_t)c->S * 3);
    int64_t ng = (int64_t)c->B * c->G;
    float *y = fvec(in.nx, 0, 0, 0), *mean = fvec(ng, 0, 0, 0), *rstd = fvec(ng, 0, 0, 0);
    na_grads G = grads_make(c, &in, 0.0f);
    fused_fwd(be, c, &in, y, mean, rstd);
    fused_bwd(be, c, &in, &G, mean, rstd, 31u);
    if (corrupt)
        for (int64_t i = 0; i < in.nx; i++) G.g[0][i] *= 1.01f;
    float *inputs[5] = {in.x, in.gamma, in.beta, in.scale, in.shift};
    const double h = 1e-2, tol = 1e-3; /* smooth: O(h^2) truncation, float y rounding / 2h */
    int bad = 0;
    for (int k = 0; k < 5; k++) {
        if (!inputs[k]) continue;
        float *fd = fvec(G.n[k], 0, 0, 0);
        double maxfd = 0;
        for (int64_t i = 0; i < G.n[k]; i++) {
            if (k >= 3 && (i % c->ld) >= c->C) continue; /* row padding: not an input */
            float orig = inputs[k][i], xp = (float)(orig + h), xm = (float)(orig - h);
            inputs[k][i] = xp;
            double Lp = fd_loss(be, c, &in, y, mean, rstd);
            inputs[k][i] = xm;
            double Lm = fd_loss(be, c, &in, y, mean, rstd);
            inputs[k][i] = orig;
            fd[i] = (float)((Lp - Lm) / ((double)xp - (double)xm));
            maxfd = fmax(maxfd, fabs(fd[i]));
        }
        char what[200];
        snprintf(what, sizeof what, "fd %s %s %s%s", be->name, c->name, gname[k],
                 corrupt ? " (canary)" : "");
        if (corrupt) {
            /* the canary must fail: count without reporting it as a test failure */
            int ok = 1;
            for (int64_t i = 0; i < G.n[k]; i++)
                if (fabs(G.g[k][i] - fd[i]) > tol * fmax(maxfd, 1e-4) + tol * fabs(fd[i])) ok = 0;
            bad += !ok;
        } else if (!k22_check_close(what, G.g[k], fd, G.n[k], tol * fmax(maxfd, 1e-4), tol)) {
            bad++;
        }
        free(fd);
    }
    grads_free(&G);
    free(y), free(mean), free(rstd);
    na_in_free(&in);
    return bad;
}

/* fast against reference: forward close (different float arithmetic), backward close. */
static void fast_vs_ref(const k22_backend *ref, const k22_backend *fast, const na_case *c)
{
    na_in in = na_in_make(c, 0xfa57 + (uint64_t)c->C);
    int64_t ng = (int64_t)c->B * c->G;
    float *y0 = fvec(in.nx, 0, 0, 0), *y1 = fvec(in.nx, 0, 0, 0);
    float *m0 = fvec(ng, 0, 0, 0), *r0 = fvec(ng, 0, 0, 0), *m1 = fvec(ng, 0, 0, 0),
          *r1 = fvec(ng, 0, 0, 0);
    fused_fwd(ref, c, &in, y0, m0, r0);
    fused_fwd(fast, c, &in, y1, m1, r1);
    char what[200];
    snprintf(what, sizeof what, "fast vs ref %s y", c->name);
    k22_check_close(what, y1, y0, in.nx, 1e-5, 1e-5); /* float vs double math: a few ulps */
    snprintf(what, sizeof what, "fast vs ref %s rstd", c->name);
    k22_check_close(what, r1, r0, ng, 0, 1e-6);
    na_grads g0 = grads_make(c, &in, 0.5f), g1 = grads_make(c, &in, 0.5f);
    fused_bwd(ref, c, &in, &g0, m0, r0, 31u);
    fused_bwd(fast, c, &in, &g1, m0, r0, 31u);
    snprintf(what, sizeof what, "fast vs ref %s", c->name);
    grads_close(what, &g1, &g0, 2e-5);
    grads_free(&g0), grads_free(&g1);
    free(y0), free(y1), free(m0), free(r0), free(m1), free(r1);
    na_in_free(&in);
}

/* Accumulation: from a non-zero start g0, the result is g0 + (the gradient from zero), and a
 * NULL gradient is skipped without changing the others. */
static void accumulate(const k22_backend *be, const na_case *c)
{
    na_in in = na_in_make(c, 0xacc0 + (uint64_t)c->S);
    int64_t ng = (int64_t)c->B * c->G;
    float *y = fvec(in.nx, 0, 0, 0), *mean = fvec(ng, 0, 0, 0), *rstd = fvec(ng, 0, 0, 0);
    fused_fwd(be, c, &in, y, mean, rstd);
    na_grads z = grads_make(c, &in, 0.0f), a = grads_make(c, &in, 0.75f);
    fused_bwd(be, c, &in, &z, mean, rstd, 31u);
    fused_bwd(be, c, &in, &a, mean, rstd, 31u);
    int ok = 1;
    const int present[5] = {1, c->gamma, c->beta, c->scale, c->shift};
    for (int k = 0; k < 5; k++)
        for (int64_t i = 0; i < z.n[k]; i++) {
            float start = 0.75f * (float)((i % 5) - 2);
            int used = present[k] && (k < 3 || (i % c->ld) < c->C);
            float want = used ? start + z.g[k][i] : start;
            ok &= fabsf(a.g[k][i] - want) <= 1e-6f * (1.0f + fabsf(want));
        }
    CHECK_MSG(ok, "%s %s: backward does not accumulate onto the gradients (or writes padding)",
              be->name, c->name);
    /* one gradient at a time: each equals its value in the all-gradients call */
    for (int k = 0; k < 5; k++) {
        if (!present[k]) continue;
        na_grads one = grads_make(c, &in, 0.0f);
        fused_bwd(be, c, &in, &one, mean, rstd, 1u << k);
        int same = !memcmp(one.g[k], z.g[k], (size_t)z.n[k] * sizeof(float));
        for (int j = 0; j < 5; j++)
            if (j != k) same &= maxabs(one.g[j], one.n[j]) == 0;
        CHECK_MSG(same, "%s %s: %s alone differs from the full call, or a NULL one was written",
                  be->name, c->name, gname[k]);
        grads_free(&one);
    }
    grads_free(&z), grads_free(&a);
    free(y), free(mean), free(rstd);
    na_in_free(&in);
}

/* group_norm_act_fwd_y16 under bf16 and fp16: the float forward's y rounded to the precision's
 * 16 bits (to nearest even), bit for bit, and the same statistics. */
static void y16(k22_backend *be, const na_case *c)
{
    na_in in = na_in_make(c, 0x1600 + (uint64_t)c->S);
    int64_t ng = (int64_t)c->B * c->G;
    float *y = fvec(in.nx, 0, 0, 0), *mean = fvec(ng, 0, 0, 0), *rstd = fvec(ng, 0, 0, 0);
    float *mean16 = fvec(ng, 0, 0, 0), *rstd16 = fvec(ng, 0, 0, 0);
    uint16_t *h = calloc((size_t)in.nx, sizeof *h);
    fused_fwd(be, c, &in, y, mean, rstd);
    for (int p = K22_PREC_BF16; p <= K22_PREC_FP16; p++) {
        CHECK(k22_backend_set_precision(be, (k22_precision)p, NULL) == K22_OK && k22_backend_act16(be));
        be->group_norm_act_fwd_y16(be->ctx, c->act, h, mean16, rstd16, in.x, in.gamma, in.beta, in.scale,
                                   in.shift, c->ld, c->off, c->B, c->C, c->S, c->G, 1e-5f);
        int64_t off = 0;
        for (int64_t i = 0; i < in.nx; i++) {
            uint16_t want = p == K22_PREC_BF16 ? k22_f32_to_bf16(y[i]) : k22_f32_to_f16(y[i]);
            off += h[i] != want;
        }
        CHECK_MSG(off == 0 && !memcmp(mean, mean16, (size_t)ng * sizeof(float)) &&
                      !memcmp(rstd, rstd16, (size_t)ng * sizeof(float)),
                  "%s %s %s: %lld of %lld values are not y rounded, or the statistics differ", be->name, c->name,
                  k22_precision_name((k22_precision)p), (long long)off, (long long)in.nx);
    }
    k22_backend_set_precision(be, K22_PREC_FP32, NULL);
    free(y), free(mean), free(rstd), free(mean16), free(rstd16), free(h);
    na_in_free(&in);
}

/* layer_norm_fwd_y16 under bf16 and fp16: layer_norm_fwd's y rounded to the precision's 16 bits,
 * bit for bit, and the same statistics (N rows of C; affine or not). */
static void ln_y16(k22_backend *be, int N, int C, int affine)
{
    int64_t n = (int64_t)N * C;
    float *x = fvec(n, 0x1700 + (uint64_t)C, -3.0f, 2.0f), *y = fvec(n, 0, 0, 0);
    float *g = affine ? fvec(C, 0x1701, 0.5f, 1.5f) : NULL, *b = affine ? fvec(C, 0x1702, -0.5f, 0.5f) : NULL;
    float *st = fvec(4 * (int64_t)N, 0, 0, 0);
    uint16_t *h = calloc((size_t)n, sizeof *h);
    be->layer_norm_fwd(be->ctx, y, st, st + N, x, g, b, N, C, 1e-5f);
    for (int p = K22_PREC_BF16; p <= K22_PREC_FP16; p++) {
        CHECK(k22_backend_set_precision(be, (k22_precision)p, NULL) == K22_OK && k22_backend_act16(be));
        be->layer_norm_fwd_y16(be->ctx, h, st + 2 * N, st + 3 * N, x, g, b, N, C, 1e-5f);
        int64_t off = 0;
        for (int64_t i = 0; i < n; i++)
            off += h[i] != (p == K22_PREC_BF16 ? k22_f32_to_bf16(y[i]) : k22_f32_to_f16(y[i]));
        CHECK_MSG(off == 0 && !memcmp(st, st + 2 * N, 2 * (size_t)N * sizeof(float)),
                  "%s layer_norm_fwd_y16 %dx%d %s: %lld of %lld values are not y rounded, or the "
                  "statistics differ", be->name, N, C, k22_precision_name((k22_precision)p),
                  (long long)off, (long long)n);
    }
    /* act_fwd_y16 with K22_ACT_NONE: x itself rounded (the UNet attention's tokens) */
    CHECK(k22_backend_set_precision(be, K22_PREC_BF16, NULL) == K22_OK);
    be->act_fwd_y16(be->ctx, K22_ACT_NONE, h, x, n);
    int64_t off = 0;
    for (int64_t i = 0; i < n; i++) off += h[i] != k22_f32_to_bf16(x[i]);
    CHECK_MSG(off == 0, "%s act_fwd_y16 (none) %lld values: %lld are not x rounded", be->name, (long long)n,
              (long long)off);
    k22_backend_set_precision(be, K22_PREC_FP32, NULL);
    free(x), free(y), free(g), free(b), free(st), free(h);
}

int main(void)
{
    k22_backend *ref = k22_backend_cpu_new(1), *fast = k22_backend_cpu_new(0);
    for (int i = 0; i < NCASES; i++) {
        vs_chain(ref, &cases[i]);
        vs_chain(fast, &cases[i]);
        fast_vs_ref(ref, fast, &cases[i]);
        accumulate(ref, &cases[i]);
        accumulate(fast, &cases[i]);
        y16(fast, &cases[i]);
        CHECK_MSG(fd_check(ref, &cases[i], 0) == 0, "fd %s", cases[i].name);
    }
    CHECK_MSG(fd_check(ref, &cases[0], 1) > 0, "fd canary: a 1%% error in dx went unnoticed");
    /* a longer segment (UNet-like group of 4 channels x 16x16) on the fast path */
    na_case big = {"long segments", 3, 32, 256, 8, 1, 1, 1, 1, 64, 1.0f, K22_ACT_SILU};
    vs_chain(fast, &big);
    vs_chain(ref, &big);
    fast_vs_ref(ref, fast, &big);
    ln_y16(fast, 5, 13, 1);
    ln_y16(fast, 3, 64, 0);
    ln_y16(fast, 1, 1, 1);
    k22_backend_free(ref);
    k22_backend_free(fast);
    return k22_test_finish("ops/norm_act");
}
