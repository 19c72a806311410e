/* test_ops_torch.c: every op of include/k22/ops.h, forward and backward, on the CPU reference
 * backend (cpu-ref) and the fast one (cpu), against torch autograd fixtures written by
 * tools/reference/make_op_fixtures.py into tests/fixtures/ops/<case>.safetensors. Geometry and
 * scalar arguments come from each fixture's metadata; tensors are checked for presence, dtype
 * and element count before use. Backward ops accumulate, so every gradient buffer starts at 0.
 * A canary perturbs fixture values in memory and requires the comparison to notice. */
#include "harness/harness.h"
#include "k22/ops.h"
#include "k22/safetensors.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Relative to the source tree: ctest runs tests from the repository root; K22_SOURCE_DIR (the
 * environment, else the value CMake compiles in) lets the binary run from anywhere. */
#define FIXTURE_SUBDIR "tests/fixtures/ops"
static const char *source_dir(void)
{
    const char *e = getenv("K22_SOURCE_DIR");
    if (e && *e) return e;
#ifdef K22_SOURCE_DIR
    return K22_SOURCE_DIR;
#else
    return ".";
#endif
}

/* ---------------------------------------------------------------- tolerances */

typedef struct {
    double atol, rtol;
    const char *why;
} tol_t;

/* Same numbers for both backends: the reference sums in double, the fast one in float with
 * its own order, and torch in float with a third order. Measured worst errors (printed in the
 * table at the end) sit 8x or more below these bounds, except the activations (about 2x), where
 * torch's own fp32 cancellation in the negative tail is the larger error. */
static const tol_t TOL_GEMM = {1e-5, 1e-5, "fp32 dot products of up to 70 terms, summation order differs"};
static const tol_t TOL_NORM = {1e-5, 1e-5, "fp32 mean/variance over 12..96 values, order differs"};
static const tol_t TOL_ACT = {1e-6, 1e-5, "libm erf/exp vs torch's vectorized ones; torch's fp32 "
                                          "1+erf(u) cancels in the negative tail (~7e-7 at x=-12)"};
/* torch's gelu-tanh backward forms 1+tanh(u) and 1-tanh^2 in fp32: at x = -5.08 it returns -0
 * where the true derivative times dy is 1.9e-6. k22 is allowed to be that much more accurate. */
static const tol_t TOL_ACT_TANH = {5e-6, 1e-5, "torch's fp32 1+tanh(u) cancels for x < -4: its "
                                               "dx is 0 where the true value is ~2e-6"};
static const tol_t TOL_SOFTMAX = {1e-6, 1e-5, "exp and one row sum of 33 values"};
static const tol_t TOL_ATTN = {1e-5, 1e-5, "two chained fp32 GEMMs of <= 81 terms plus softmax"};
static const tol_t TOL_EXACT = {0, 0, "pure data movement (nearest upsample): exact"};
/* An argument t*freq of up to 999 has an ulp of 6e-5, so agreeing to 1e-6 requires rounding freq
 * and t*freq to fp32 exactly as torch does (exp of an fp32 exponent, then an fp32 product). */
static const tol_t TOL_TIME = {2e-6, 1e-5, "same fp32 argument as torch, then libm sin/cos"};
static const tol_t TOL_MSE = {1e-7, 1e-5, "fp32 mean of 100 squares"};
static const tol_t TOL_CLIP = {1e-7, 2e-6, "sum of squares of 24 values; float vs double sum"};

/* ---------------------------------------------------------------- fixture access */

typedef struct {
    const char *name;
    k22_st_file *f;
    int bad; /* a tensor or metadata key was missing or mis-shaped */
} fixture;

static int fixture_open(fixture *fx, const char *name)
{
    char path[512];
    k22_err err = {0};
    snprintf(path, sizeof path, "%s/%s/%s.safetensors", source_dir(), FIXTURE_SUBDIR, name);
    memset(fx, 0, sizeof *fx);
    fx->name = name;
    if (k22_st_open(path, &fx->f, &err) != K22_OK) {
        CHECK_MSG(0, "fixture %s: %s (rerun tools/reference/make_op_fixtures.py)", path, err.msg);
        return 0;
    }
    return 1;
}

/* The f32 tensor `tensor` of the fixture, required to hold exactly n values; NULL (and a test
 * failure naming the fixture and tensor) when missing or mis-shaped. */
static const float *fx_f32(fixture *fx, const char *tensor, int64_t n)
{
    const k22_st_tensor *t = k22_st_find(fx->f, tensor);
    if (!t) {
        CHECK_MSG(0, "fixture %s: tensor '%s' missing", fx->name, tensor);
        fx->bad = 1;
        return NULL;
    }
    int64_t got = k22_shape_numel(t->ndim, t->shape);
    if (t->dtype != K22_DTYPE_F32 || got != n) {
        CHECK_MSG(0, "fixture %s: tensor '%s' is %s with %lld values, expected F32 with %lld",
                  fx->name, tensor, k22_dtype_name(t->dtype), (long long)got, (long long)n);
        fx->bad = 1;
        return NULL;
    }
    return (const float *)t->data;
}

static const uint8_t *fx_u8(fixture *fx, const char *tensor, int64_t n)
{
    const k22_st_tensor *t = k22_st_find(fx->f, tensor);
    if (!t || t->dtype != K22_DTYPE_U8 || k22_shape_numel(t->ndim, t->shape) != n) {
        CHECK_MSG(0, "fixture %s: tensor '%s' missing or not U8 with %lld values", fx->name,
                  tensor, (long long)n);
        fx->bad = 1;
        return NULL;
    }
    return (const uint8_t *)t->data;
}

static double fx_num(fixture *fx, const char *key)
{
    const char *s = k22_st_metadata_get(fx->f, key);
    char *end = NULL;
    double v = s ? strtod(s, &end) : 0;
    if (!s || end == s || *end) {
        CHECK_MSG(0, "fixture %s: metadata '%s' missing or not a number", fx->name, key);
        fx->bad = 1;
        return 0;
    }
    return v;
}
static int fx_int(fixture *fx, const char *key) { return (int)fx_num(fx, key); }

/* ---------------------------------------------------------------- device buffers per case */

#define MAX_BUFS 64
typedef struct {
    const k22_backend *be;
    const k22_backend *ref; /* where a NULL entry of be falls back */
    void *dev[MAX_BUFS];
    int ndev;
    float *host[MAX_BUFS];
    int nhost;
    const char *cas;
} scope;

static void *sc_track(scope *s, void *p)
{
    K22_REQUIRE(s->ndev < MAX_BUFS);
    s->dev[s->ndev++] = p;
    return p;
}
static float *sc_zeros(scope *s, int64_t n)
{
    float *p = sc_track(s, s->be->alloc(s->be->ctx, (size_t)(n > 0 ? n : 1) * sizeof(float)));
    s->be->zero(s->be->ctx, p, (size_t)(n > 0 ? n : 1) * sizeof(float));
    return p;
}
/* Device copy of host values; NULL in gives NULL out (absent optional inputs). */
static float *sc_up(scope *s, const float *h, int64_t n)
{
    if (!h) return NULL;
    float *p = sc_zeros(s, n);
    s->be->to_device(s->be->ctx, p, h, (size_t)n * sizeof(float));
    return p;
}
static float *sc_down(scope *s, const float *d, int64_t n)
{
    K22_REQUIRE(s->nhost < MAX_BUFS);
    float *h = k22_xmalloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    s->be->to_host(s->be->ctx, h, d, (size_t)n * sizeof(float));
    s->host[s->nhost++] = h;
    return h;
}
static void sc_end(scope *s)
{
    for (int i = 0; i < s->ndev; i++) s->be->free(s->be->ctx, s->dev[i]);
    for (int i = 0; i < s->nhost; i++) free(s->host[i]);
    s->ndev = s->nhost = 0;
}

/* An entry of the backend under test, or the reference's when the backend leaves it NULL
 * (ops.h allows that for host backends; the reference itself must have every entry). */
#define OP(s, fn) ((s)->be->fn ? (s)->be->fn : op_fallback((s), #fn, (s)->ref->fn))
static int missing_entries;
static void *op_fallback_ptr(scope *s, const char *fn, int have)
{
    (void)s;
    if (!have) {
        CHECK_MSG(0, "%s: entry %s is NULL on the reference backend too", s->cas, fn);
        missing_entries++;
    } else {
        printf("  note: %s has no %s entry; using cpu-ref's\n", s->be->name, fn);
    }
    return NULL;
}
#define op_fallback(s, name, f) (op_fallback_ptr((s), (name), (f) != NULL), (f))

/* ---------------------------------------------------------------- comparison and report */

typedef struct {
    double max_abs, worst_ratio; /* worst |d| / (atol + rtol |ref|) */
    int64_t bad;
} stats;

static stats cmp_stats(const float *got, const float *ref, int64_t n, tol_t t)
{
    stats st = {0, 0, 0};
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]);
        double lim = t.atol + t.rtol * fabs((double)ref[i]);
        double r = lim > 0 ? d / lim : (d > 0 ? INFINITY : 0);
        if (isnan(d)) r = d = INFINITY;
        if (!(d <= lim)) st.bad++;
        if (d > st.max_abs) st.max_abs = d;
        if (r > st.worst_ratio) st.worst_ratio = r;
    }
    return st;
}

/* Per (case, backend): the worst error over every compared tensor, for the final table. */
typedef struct {
    char cas[48];
    char be[8];
    char worst_tensor[16];
    double max_abs, worst_ratio;
    tol_t tol;
} summary_row;
static summary_row summary[256];
static int nsummary;

static summary_row *summary_for(scope *s, tol_t t)
{
    if (nsummary && !strcmp(summary[nsummary - 1].cas, s->cas) &&
        !strcmp(summary[nsummary - 1].be, s->be->name))
        return &summary[nsummary - 1];
    K22_REQUIRE(nsummary < 256);
    summary_row *r = &summary[nsummary++];
    memset(r, 0, sizeof *r);
    snprintf(r->cas, sizeof r->cas, "%s", s->cas);
    snprintf(r->be, sizeof r->be, "%s", s->be->name);
    r->tol = t;
    return r;
}

/* Checks host values against reference values and folds the errors into the summary. */
static void record(scope *s, const char *tensor, const float *got, const float *ref, int64_t n,
                   tol_t t)
{
    char what[200];
    snprintf(what, sizeof what, "%s [%s] %s (atol %g rtol %g: %s)", s->cas, s->be->name, tensor,
             t.atol, t.rtol, t.why);
    k22_check_close(what, got, ref, n, t.atol, t.rtol);
    stats st = cmp_stats(got, ref, n, t);
    summary_row *r = summary_for(s, t);
    if (st.worst_ratio >= r->worst_ratio) {
        r->worst_ratio = st.worst_ratio;
        r->tol = t;
        snprintf(r->worst_tensor, sizeof r->worst_tensor, "%s", tensor);
    }
    if (st.max_abs > r->max_abs) r->max_abs = st.max_abs;
}

/* Downloads the device tensor `got_dev` and checks it against the fixture tensor `tensor`. */
static void compare(scope *s, fixture *fx, const char *tensor, const float *got_dev, int64_t n,
                    tol_t t)
{
    const float *ref = fx_f32(fx, tensor, n);
    if (!ref || !got_dev) return;
    record(s, tensor, sc_down(s, got_dev, n), ref, n, t);
}

/* ---------------------------------------------------------------- op cases */

static void run_linear(scope *s, fixture *fx)
{
    int N = fx_int(fx, "N"), I = fx_int(fx, "I"), O = fx_int(fx, "O"), bias = fx_int(fx, "bias");
    const float *x = fx_f32(fx, "x", (int64_t)N * I), *w = fx_f32(fx, "w", (int64_t)O * I);
    const float *b = bias ? fx_f32(fx, "b", O) : NULL, *dy = fx_f32(fx, "dy", (int64_t)N * O);
    if (fx->bad) return;
    float *dx_ = sc_up(s, x, (int64_t)N * I), *dw_ = sc_up(s, w, (int64_t)O * I);
    float *db_ = sc_up(s, b, O), *dy_ = sc_up(s, dy, (int64_t)N * O);
    float *y = sc_zeros(s, (int64_t)N * O);
    OP(s, linear_fwd)(s->be->ctx, y, dx_, dw_, db_, N, I, O);
    compare(s, fx, "y", y, (int64_t)N * O, TOL_GEMM);
    float *gx = sc_zeros(s, (int64_t)N * I), *gw = sc_zeros(s, (int64_t)O * I);
    float *gb = bias ? sc_zeros(s, O) : NULL;
    OP(s, linear_bwd)(s->be->ctx, gx, gw, gb, dy_, dx_, dw_, N, I, O);
    compare(s, fx, "dx", gx, (int64_t)N * I, TOL_GEMM);
    compare(s, fx, "dw", gw, (int64_t)O * I, TOL_GEMM);
    if (bias) compare(s, fx, "db", gb, O, TOL_GEMM);
}

/* C = alpha op(A) op(B) + beta C0, and its backward through the same matmul entry:
 * dop(A) = alpha dC op(B)^T, dop(B) = alpha op(A)^T dC, stored back in A's and B's layouts. */
static void run_matmul(scope *s, fixture *fx)
{
    int ta = fx_int(fx, "ta"), tb = fx_int(fx, "tb"), nb = fx_int(fx, "batch");
    int M = fx_int(fx, "M"), N = fx_int(fx, "N"), K = fx_int(fx, "K");
    float alpha = (float)fx_num(fx, "alpha"), beta = (float)fx_num(fx, "beta");
    int64_t sA = (int64_t)M * K, sB = (int64_t)K * N, sC = (int64_t)M * N;
    const float *A = fx_f32(fx, "A", nb * sA), *Bm = fx_f32(fx, "B", nb * sB);
    const float *C0 = beta != 0 ? fx_f32(fx, "C0", nb * sC) : NULL;
    const float *dC = fx_f32(fx, "dC", nb * sC);
    if (fx->bad) return;
    float *a = sc_up(s, A, nb * sA), *b = sc_up(s, Bm, nb * sB), *g = sc_up(s, dC, nb * sC);
    float *c = beta != 0 ? sc_up(s, C0, nb * sC) : sc_zeros(s, nb * sC);
    if (beta == 0) { /* beta = 0 must ignore C's contents, NaN included */
        float nan = NAN;
        for (int64_t i = 0; i < nb * sC; i += 7) s->be->to_device(s->be->ctx, c + i, &nan, 4);
    }
    void (*mm)(void *, int, int, int, int, int, float, const float *, int64_t, const float *,
               int64_t, float, float *, int64_t, int) = OP(s, matmul);
    mm(s->be->ctx, ta, tb, M, N, K, alpha, a, sA, b, sB, beta, c, sC, nb);
    compare(s, fx, "C", c, nb * sC, TOL_GEMM);
    float *da = sc_zeros(s, nb * sA), *db = sc_zeros(s, nb * sB);
    if (!ta) mm(s->be->ctx, 0, !tb, M, K, N, alpha, g, sC, b, sB, 1.0f, da, sA, nb);
    else mm(s->be->ctx, tb, 1, K, M, N, alpha, b, sB, g, sC, 1.0f, da, sA, nb);
    if (!tb) mm(s->be->ctx, !ta, 0, K, N, M, alpha, a, sA, g, sC, 1.0f, db, sB, nb);
    else mm(s->be->ctx, 1, ta, N, K, M, alpha, g, sC, a, sA, 1.0f, db, sB, nb);
    compare(s, fx, "dA", da, nb * sA, TOL_GEMM);
    compare(s, fx, "dB", db, nb * sB, TOL_GEMM);
    if (beta != 0) {
        float *dc0 = sc_zeros(s, nb * sC);
        OP(s, scale_bwd)(s->be->ctx, dc0, g, beta, nb * sC);
        compare(s, fx, "dC0", dc0, nb * sC, TOL_GEMM);
    }
}

static void run_conv2d(scope *s, fixture *fx)
{
    k22_conv2d_desc d = {
        .B = fx_int(fx, "B"), .C = fx_int(fx, "C"), .H = fx_int(fx, "H"), .W = fx_int(fx, "W"),
        .O = fx_int(fx, "O"), .KH = fx_int(fx, "KH"), .KW = fx_int(fx, "KW"),
        .SH = fx_int(fx, "SH"), .SW = fx_int(fx, "SW"), .PT = fx_int(fx, "PT"),
        .PB = fx_int(fx, "PB"), .PL = fx_int(fx, "PL"), .PR = fx_int(fx, "PR")};
    int bias = fx_int(fx, "bias"), OH = fx_int(fx, "OH"), OW = fx_int(fx, "OW");
    if (fx->bad) return;
    CHECK_MSG(k22_conv2d_out_h(&d) == OH && k22_conv2d_out_w(&d) == OW,
              "%s: k22_conv2d_out_h/w give %dx%d, torch %dx%d", s->cas, k22_conv2d_out_h(&d),
              k22_conv2d_out_w(&d), OH, OW);
    int64_t nx = (int64_t)d.B * d.C * d.H * d.W, nw = (int64_t)d.O * d.C * d.KH * d.KW;
    int64_t ny = (int64_t)d.B * d.O * OH * OW;
    const float *x = fx_f32(fx, "x", nx), *w = fx_f32(fx, "w", nw);
    const float *b = bias ? fx_f32(fx, "bias", d.O) : NULL, *dy = fx_f32(fx, "dy", ny);
    if (fx->bad) return;
    float *x_ = sc_up(s, x, nx), *w_ = sc_up(s, w, nw), *b_ = sc_up(s, b, d.O);
    float *dy_ = sc_up(s, dy, ny), *y = sc_zeros(s, ny);
    OP(s, conv2d_fwd)(s->be->ctx, y, x_, w_, b_, &d);
    compare(s, fx, "y", y, ny, TOL_GEMM);
    float *gx = sc_zeros(s, nx), *gw = sc_zeros(s, nw), *gb = bias ? sc_zeros(s, d.O) : NULL;
    OP(s, conv2d_bwd)(s->be->ctx, gx, gw, gb, dy_, x_, w_, &d);
    compare(s, fx, "dx", gx, nx, TOL_GEMM);
    compare(s, fx, "dw", gw, nw, TOL_GEMM);
    if (bias) compare(s, fx, "dbias", gb, d.O, TOL_GEMM);
}

static void run_group_norm(scope *s, fixture *fx)
{
    int B = fx_int(fx, "B"), C = fx_int(fx, "C"), S = fx_int(fx, "S"), G = fx_int(fx, "G");
    int affine = fx_int(fx, "affine");
    float eps = (float)fx_num(fx, "eps");
    int64_t n = (int64_t)B * C * S;
    const float *x = fx_f32(fx, "x", n), *dy = fx_f32(fx, "dy", n);
    const float *ga = affine ? fx_f32(fx, "gamma", C) : NULL;
    const float *be = affine ? fx_f32(fx, "beta", C) : NULL;
    if (fx->bad) return;
    float *x_ = sc_up(s, x, n), *dy_ = sc_up(s, dy, n), *g_ = sc_up(s, ga, C), *b_ = sc_up(s, be, C);
    float *y = sc_zeros(s, n), *mean = sc_zeros(s, (int64_t)B * G), *rstd = sc_zeros(s, (int64_t)B * G);
    OP(s, group_norm_fwd)(s->be->ctx, y, mean, rstd, x_, g_, b_, B, C, S, G, eps);
    compare(s, fx, "y", y, n, TOL_NORM);
    compare(s, fx, "mean", mean, (int64_t)B * G, TOL_NORM);
    compare(s, fx, "rstd", rstd, (int64_t)B * G, TOL_NORM);
    float *gx = sc_zeros(s, n), *gg = affine ? sc_zeros(s, C) : NULL, *gb = affine ? sc_zeros(s, C) : NULL;
    OP(s, group_norm_bwd)(s->be->ctx, gx, gg, gb, dy_, x_, mean, rstd, g_, B, C, S, G);
    compare(s, fx, "dx", gx, n, TOL_NORM);
    if (affine) {
        compare(s, fx, "dgamma", gg, C, TOL_NORM);
        compare(s, fx, "dbeta", gb, C, TOL_NORM);
    }
}

static void run_layer_norm(scope *s, fixture *fx)
{
    int N = fx_int(fx, "N"), C = fx_int(fx, "C"), affine = fx_int(fx, "affine");
    float eps = (float)fx_num(fx, "eps");
    int64_t n = (int64_t)N * C;
    const float *x = fx_f32(fx, "x", n), *dy = fx_f32(fx, "dy", n);
    const float *ga = affine ? fx_f32(fx, "gamma", C) : NULL;
    const float *be = affine ? fx_f32(fx, "beta", C) : NULL;
    if (fx->bad) return;
    float *x_ = sc_up(s, x, n), *dy_ = sc_up(s, dy, n), *g_ = sc_up(s, ga, C), *b_ = sc_up(s, be, C);
    float *y = sc_zeros(s, n), *mean = sc_zeros(s, N), *rstd = sc_zeros(s, N);
    OP(s, layer_norm_fwd)(s->be->ctx, y, mean, rstd, x_, g_, b_, N, C, eps);
    compare(s, fx, "y", y, n, TOL_NORM);
    compare(s, fx, "mean", mean, N, TOL_NORM);
    compare(s, fx, "rstd", rstd, N, TOL_NORM);
    float *gx = sc_zeros(s, n), *gg = affine ? sc_zeros(s, C) : NULL, *gb = affine ? sc_zeros(s, C) : NULL;
    OP(s, layer_norm_bwd)(s->be->ctx, gx, gg, gb, dy_, x_, mean, rstd, g_, N, C);
    compare(s, fx, "dx", gx, n, TOL_NORM);
    if (affine) {
        compare(s, fx, "dgamma", gg, C, TOL_NORM);
        compare(s, fx, "dbeta", gb, C, TOL_NORM);
    }
}

static void run_act(scope *s, fixture *fx)
{
    int act = fx_int(fx, "act"), n = fx_int(fx, "n");
    tol_t tol = act == K22_ACT_GELU_TANH ? TOL_ACT_TANH : TOL_ACT;
    const float *x = fx_f32(fx, "x", n), *dy = fx_f32(fx, "dy", n);
    if (fx->bad) return;
    CHECK_MSG(act >= 0 && act < K22_ACT_COUNT, "%s: act id %d unknown", s->cas, act);
    float *x_ = sc_up(s, x, n), *dy_ = sc_up(s, dy, n), *y = sc_zeros(s, n), *gx = sc_zeros(s, n);
    OP(s, act_fwd)(s->be->ctx, act, y, x_, n);
    compare(s, fx, "y", y, n, tol);
    OP(s, act_bwd)(s->be->ctx, act, gx, dy_, x_, n);
    compare(s, fx, "dx", gx, n, tol);
    /* In place (ops.h allows y == x in forward). */
    OP(s, act_fwd)(s->be->ctx, act, x_, x_, n);
    compare(s, fx, "y", x_, n, tol);
}

static void run_softmax(scope *s, fixture *fx)
{
    int rows = fx_int(fx, "rows"), cols = fx_int(fx, "cols");
    int64_t n = (int64_t)rows * cols;
    const float *x = fx_f32(fx, "x", n), *dy = fx_f32(fx, "dy", n);
    if (fx->bad) return;
    float *x_ = sc_up(s, x, n), *dy_ = sc_up(s, dy, n), *y = sc_zeros(s, n), *gx = sc_zeros(s, n);
    OP(s, softmax_fwd)(s->be->ctx, y, x_, rows, cols);
    compare(s, fx, "y", y, n, TOL_SOFTMAX);
    OP(s, softmax_bwd)(s->be->ctx, gx, dy_, y, rows, cols);
    compare(s, fx, "dx", gx, n, TOL_SOFTMAX);
}

static void run_attention(scope *s, fixture *fx)
{
    k22_attn_desc d = {.B = fx_int(fx, "B"), .NH = fx_int(fx, "NH"), .TQ = fx_int(fx, "TQ"),
                       .TK = fx_int(fx, "TK"), .D = fx_int(fx, "D"), .DV = fx_int(fx, "DV"),
                       .scale = (float)fx_num(fx, "scale"), .causal = fx_int(fx, "causal")};
    int has_mask = fx_int(fx, "mask"), batched = fx_int(fx, "mask_batched");
    int has_keep = fx_int(fx, "key_keep");
    if (fx->bad) return;
    int64_t bh = (int64_t)d.B * d.NH;
    int64_t nq = bh * d.TQ * d.D, nk = bh * d.TK * d.D, nv = bh * d.TK * d.DV;
    int64_t no = bh * d.TQ * d.DV, nm = (batched ? d.B : 1) * (int64_t)d.TQ * d.TK;
    const float *q = fx_f32(fx, "q", nq), *k = fx_f32(fx, "k", nk), *v = fx_f32(fx, "v", nv);
    const float *dout = fx_f32(fx, "dout", no);
    const float *mask = has_mask ? fx_f32(fx, "mask", nm) : NULL;
    const uint8_t *keep = has_keep ? fx_u8(fx, "key_keep", (int64_t)d.B * d.TK) : NULL;
    if (fx->bad) return;
    float *q_ = sc_up(s, q, nq), *k_ = sc_up(s, k, nk), *v_ = sc_up(s, v, nv);
    float *do_ = sc_up(s, dout, no);
    d.mask = sc_up(s, mask, nm);
    d.mask_bstride = batched ? (int64_t)d.TQ * d.TK : 0;
    if (keep) {
        uint8_t *kd = sc_track(s, s->be->alloc(s->be->ctx, (size_t)d.B * d.TK));
        s->be->to_device(s->be->ctx, kd, keep, (size_t)d.B * d.TK);
        d.key_keep = kd;
    }
    float *out = sc_zeros(s, no), *lse = sc_zeros(s, bh * d.TQ);
    OP(s, attention_fwd)(s->be->ctx, out, lse, q_, k_, v_, &d);
    compare(s, fx, "out", out, no, TOL_ATTN);
    compare(s, fx, "lse", lse, bh * d.TQ, TOL_ATTN);
    float *dq = sc_zeros(s, nq), *dk = sc_zeros(s, nk), *dv = sc_zeros(s, nv);
    OP(s, attention_bwd)(s->be->ctx, dq, dk, dv, do_, q_, k_, v_, out, lse, &d);
    compare(s, fx, "dq", dq, nq, TOL_ATTN);
    compare(s, fx, "dk", dk, nk, TOL_ATTN);
    compare(s, fx, "dv", dv, nv, TOL_ATTN);
}

static void run_upsample(scope *s, fixture *fx)
{
    int B = fx_int(fx, "B"), C = fx_int(fx, "C"), H = fx_int(fx, "H"), W = fx_int(fx, "W");
    int64_t nx = (int64_t)B * C * H * W, ny = nx * 4;
    const float *x = fx_f32(fx, "x", nx), *dy = fx_f32(fx, "dy", ny);
    if (fx->bad) return;
    float *x_ = sc_up(s, x, nx), *dy_ = sc_up(s, dy, ny), *y = sc_zeros(s, ny), *gx = sc_zeros(s, nx);
    OP(s, upsample2x_fwd)(s->be->ctx, y, x_, B, C, H, W);
    compare(s, fx, "y", y, ny, TOL_EXACT);
    OP(s, upsample2x_bwd)(s->be->ctx, gx, dy_, B, C, H, W);
    /* dx sums 4 values: the order may differ from torch's by an ulp. */
    compare(s, fx, "dx", gx, nx, (tol_t){1e-6, 1e-6, "sum of 4 upstream values"});
}

static void run_timestep(scope *s, fixture *fx)
{
    int N = fx_int(fx, "N"), dim = fx_int(fx, "dim"), flip = fx_int(fx, "flip_sin_to_cos");
    float shift = (float)fx_num(fx, "shift"), scale = (float)fx_num(fx, "scale");
    float maxp = (float)fx_num(fx, "max_period");
    int64_t ny = (int64_t)N * dim;
    const float *t = fx_f32(fx, "t", N), *dy = fx_f32(fx, "dy", ny);
    if (fx->bad) return;
    float *t_ = sc_up(s, t, N), *dy_ = sc_up(s, dy, ny), *y = sc_zeros(s, ny), *dt = sc_zeros(s, N);
    OP(s, timestep_embed_fwd)(s->be->ctx, y, t_, N, dim, flip, shift, scale, maxp);
    compare(s, fx, "y", y, ny, TOL_TIME);
    OP(s, timestep_embed_bwd)(s->be->ctx, dt, dy_, t_, N, dim, flip, shift, scale, maxp);
    /* dt sums dim/2 terms of size up to 1 (freq <= 1): the argument error above, summed. */
    compare(s, fx, "dt", dt, N, (tol_t){1e-5, 1e-5, "sum over dim/2 of dy*freq*cos/sin terms"});
}

static void run_mse(scope *s, fixture *fx)
{
    int B = fx_int(fx, "B"), N = fx_int(fx, "N"), weighted = fx_int(fx, "weighted");
    int64_t n = (int64_t)B * N;
    const float *pred = fx_f32(fx, "pred", n), *tgt = fx_f32(fx, "target", n);
    const float *w = weighted ? fx_f32(fx, "w", B) : NULL, *dloss = fx_f32(fx, "dloss", 1);
    if (fx->bad) return;
    float *p_ = sc_up(s, pred, n), *t_ = sc_up(s, tgt, n), *w_ = sc_up(s, w, B);
    float *loss = sc_zeros(s, 1), *per = sc_zeros(s, B), *dp = sc_zeros(s, n);
    OP(s, mse_fwd)(s->be->ctx, loss, per, p_, t_, w_, B, N);
    compare(s, fx, "loss", loss, 1, TOL_MSE);
    compare(s, fx, "per_sample", per, B, TOL_MSE);
    OP(s, mse_bwd)(s->be->ctx, dp, dloss[0], p_, t_, w_, B, N);
    compare(s, fx, "dpred", dp, n, TOL_MSE);
}

/* Distance in units in the last place between two finite floats of any sign. */
static int64_t ulp_diff(float a, float b)
{
    int32_t ia, ib;
    memcpy(&ia, &a, 4);
    memcpy(&ib, &b, 4);
    int64_t la = ia < 0 ? (int64_t)INT32_MIN - ia : ia, lb = ib < 0 ? (int64_t)INT32_MIN - ib : ib;
    return la > lb ? la - lb : lb - la;
}

static double adamw_max_ulp;
static void run_adamw(scope *s, fixture *fx)
{
    int n = fx_int(fx, "n"), steps = fx_int(fx, "steps");
    k22_adamw_hparams h = {.lr = fx_num(fx, "lr"), .beta1 = fx_num(fx, "beta1"),
                           .beta2 = fx_num(fx, "beta2"), .eps = fx_num(fx, "eps"),
                           .weight_decay = fx_num(fx, "weight_decay"), .grad_scale = 1.0f};
    int64_t all = (int64_t)n * steps;
    const float *p0 = fx_f32(fx, "p0", n), *g = fx_f32(fx, "g", all);
    const float *pr = fx_f32(fx, "p", all), *mr = fx_f32(fx, "m", all), *vr = fx_f32(fx, "v", all);
    if (fx->bad) return;
    float *p = sc_up(s, p0, n), *gd = sc_up(s, g, all), *m = sc_zeros(s, n), *v = sc_zeros(s, n);
    int64_t worst[3] = {0, 0, 0};
    for (int st = 0; st < steps; st++) {
        h.step = st + 1;
        OP(s, adamw_step)(s->be->ctx, p, gd + (int64_t)st * n, m, v, n, &h);
        const float *got[3] = {sc_down(s, p, n), sc_down(s, m, n), sc_down(s, v, n)};
        const float *ref[3] = {pr + (int64_t)st * n, mr + (int64_t)st * n, vr + (int64_t)st * n};
        for (int t = 0; t < 3; t++)
            for (int i = 0; i < n; i++) {
                int64_t u = ulp_diff(got[t][i], ref[t][i]);
                if (isnan(got[t][i])) u = INT64_MAX;
                if (u > worst[t]) worst[t] = u;
            }
    }
    /* torch's single-tensor AdamW is a fixed sequence of fp32 roundings, so the same sequence
     * gives the same bits. Reproduced bit for bit in numpy from these fixtures (0 ulp in p, m,
     * v over 5 steps) with every scalar computed in double from the double hyper-parameters,
     * then rounded to fp32:  p *= f(1 - lr wd);  m = fmaf(f(1 - b1), g - m, m)  (lerp, weight
     * < 0.5);  v = fmaf(f(1 - b2) * g, g, v * f(b2))  (addcmul);  d = sqrt(v) / f(sqrt(bc2))
     * + f(eps);  p += f(-lr / bc1) * (m / d). With 1 - b1 formed from an fp32 b1 instead, m
     * drifts by tens of ulp and v by hundreds. Allowed: 1 ulp. */
    const char *names[3] = {"p", "m", "v"};
    for (int t = 0; t < 3; t++) {
        CHECK_MSG(worst[t] <= 1, "%s [%s] %s after %d steps: %lld ulp from torch (allowed 1)",
                  s->cas, s->be->name, names[t], steps, (long long)worst[t]);
        printf("  %-28s %-7s %-10s max %lld ulp over %d steps\n", s->cas, s->be->name, names[t],
               (long long)worst[t], steps);
        if (worst[t] > adamw_max_ulp) adamw_max_ulp = (double)worst[t];
    }
    /* The last step once more as a relative bound, for the summary table. */
    const tol_t ulp2 = {0, 2.4e-7, "2 ulp relative"};
    int64_t last = (int64_t)(steps - 1) * n;
    record(s, "p", sc_down(s, p, n), pr + last, n, ulp2);
    record(s, "m", sc_down(s, m, n), mr + last, n, ulp2);
    record(s, "v", sc_down(s, v, n), vr + last, n, ulp2);
}

static void run_clip(scope *s, fixture *fx)
{
    int nb = fx_int(fx, "nbufs");
    float max_norm = (float)fx_num(fx, "max_norm");
    if (fx->bad) return;
    if (nb < 1 || nb > 8) {
        CHECK_MSG(0, "fixture %s: nbufs %d out of range 1..8", fx->name, nb);
        return;
    }
    float *bufs[8];
    int64_t lens[8];
    char name[32];
    for (int i = 0; i < nb; i++) {
        snprintf(name, sizeof name, "g%d", i);
        const k22_st_tensor *t = k22_st_find(fx->f, name);
        if (!t) {
            CHECK_MSG(0, "fixture %s: tensor '%s' missing", fx->name, name);
            return;
        }
        lens[i] = k22_shape_numel(t->ndim, t->shape);
        const float *g = fx_f32(fx, name, lens[i]);
        if (!g) return;
        bufs[i] = sc_up(s, g, lens[i]);
    }
    const float *tot_ref = fx_f32(fx, "total_norm", 1);
    if (!tot_ref) return;
    float total = k22_clip_grad_norm(s->be, bufs, lens, nb, max_norm);
    float *tot_dev = sc_up(s, &total, 1);
    compare(s, fx, "total_norm", tot_dev, 1, TOL_CLIP);
    for (int i = 0; i < nb; i++) {
        snprintf(name, sizeof name, "g%d_clipped", i);
        compare(s, fx, name, bufs[i], lens[i], TOL_CLIP);
    }
}

/* ---------------------------------------------------------------- the case table */

typedef struct {
    const char *op; /* metadata "op" */
    void (*run)(scope *, fixture *);
} op_runner;

static const op_runner RUNNERS[] = {
    {"linear", run_linear},         {"matmul", run_matmul},   {"conv2d", run_conv2d},
    {"group_norm", run_group_norm}, {"layer_norm", run_layer_norm}, {"act", run_act},
    {"softmax", run_softmax},       {"attention", run_attention}, {"upsample2x", run_upsample},
    {"timestep_embed", run_timestep}, {"mse", run_mse},     {"adamw", run_adamw},
    {"clip_grad_norm", run_clip},
};

/* Every fixture make_op_fixtures.py writes; a missing file is a failure, not a skip. */
static const char *CASES[] = {
    "linear_bias", "linear_nobias", "bmm_nn", "bmm_tn", "bmm_nt", "bmm_tt",
    "conv3x3_p1", "conv3x3_s2_pad0101", "conv1x1_nobias", "conv4x4_s2_odd",
    "group_norm_eps1e-6", "group_norm_eps1e-5", "group_norm_noaffine",
    "layer_norm_affine", "layer_norm_noaffine",
    "act_silu", "act_gelu", "act_gelu_tanh", "act_quick_gelu", "softmax",
    "attn_nomask", "attn_prior_mask", "attn_causal", "attn_key_pad", "upsample2x",
    "timestep_flip1_shift0", "timestep_flip0_shift1", "timestep_flip1_shift1_odd",
    "timestep_flip0_shift0_odd", "mse_weighted", "mse_unweighted", "adamw_wd1e-2", "adamw_wd0",
    "clip_grad_norm_above", "clip_grad_norm_below",
};

static void run_case(const char *cas, k22_backend *be, k22_backend *ref)
{
    fixture fx;
    if (!fixture_open(&fx, cas)) return;
    const char *op = k22_st_metadata_get(fx.f, "op");
    const op_runner *r = NULL;
    for (size_t i = 0; op && i < sizeof RUNNERS / sizeof RUNNERS[0]; i++)
        if (!strcmp(RUNNERS[i].op, op)) r = &RUNNERS[i];
    CHECK_MSG(r != NULL, "fixture %s: metadata op '%s' has no runner", cas, op ? op : "(none)");
    if (r) {
        scope s = {.be = be, .ref = ref, .cas = cas};
        r->run(&s, &fx);
        sc_end(&s);
    }
    k22_st_close(fx.f);
}

/* ---------------------------------------------------------------- canary */

/* The comparison has to notice a wrong value: (1) one reference output value moved by a few
 * tolerances, (2) one input value moved before the op runs. Both must be outside tolerance. */
static void canary(k22_backend *be)
{
    fixture fx;
    if (!fixture_open(&fx, "linear_bias")) return;
    int N = fx_int(&fx, "N"), I = fx_int(&fx, "I"), O = fx_int(&fx, "O");
    const float *x = fx_f32(&fx, "x", (int64_t)N * I), *w = fx_f32(&fx, "w", (int64_t)O * I);
    const float *b = fx_f32(&fx, "b", O), *yref = fx_f32(&fx, "y", (int64_t)N * O);
    if (!fx.bad) {
        int64_t nx = (int64_t)N * I, ny = (int64_t)N * O;
        float *xc = k22_xmalloc((size_t)nx * 4), *yc = k22_xmalloc((size_t)ny * 4);
        float *y = k22_xmalloc((size_t)ny * 4);
        memcpy(xc, x, (size_t)nx * 4);
        memcpy(yc, yref, (size_t)ny * 4);
        be->linear_fwd(be->ctx, y, x, w, b, N, I, O);
        stats clean = cmp_stats(y, yref, ny, TOL_GEMM);
        CHECK_MSG(clean.bad == 0, "canary: the unperturbed linear output should match");
        yc[ny / 2] += 1e-3f; /* ~50 tolerances at |y| ~ 1 */
        stats st1 = cmp_stats(y, yc, ny, TOL_GEMM);
        CHECK_MSG(st1.bad == 1, "canary: a reference value moved by 1e-3 went unnoticed (%lld bad)",
                  (long long)st1.bad);
        xc[3] += 0.01f;
        be->linear_fwd(be->ctx, y, xc, w, b, N, I, O);
        stats st2 = cmp_stats(y, yref, ny, TOL_GEMM);
        CHECK_MSG(st2.bad > 0, "canary: an input moved by 0.01 went unnoticed");
        printf("canary: moved y[%lld] by 1e-3 -> %lld value(s) flagged (ratio %.0f); moved x[3] "
               "by 0.01 -> %lld of %lld outputs flagged\n",
               (long long)(ny / 2), (long long)st1.bad, st1.worst_ratio, (long long)st2.bad,
               (long long)ny);
        free(xc);
        free(yc);
        free(y);
    }
    k22_st_close(fx.f);
}

int main(void)
{
    k22_backend *ref = k22_backend_cpu_new(1), *fast = k22_backend_cpu_new(0);
    CHECK_MSG(ref && fast, "k22_backend_cpu_new failed");
    if (!ref || !fast) return k22_test_finish("test_ops_torch");
    canary(ref);
    k22_backend *bes[2] = {ref, fast};
    for (size_t c = 0; c < sizeof CASES / sizeof CASES[0]; c++)
        for (int b = 0; b < 2; b++) run_case(CASES[c], bes[b], ref);

    printf("\n%-28s %-7s %-11s %-10s %-10s %s\n", "case", "backend", "worst", "max_abs",
           "err/tol", "tolerance");
    for (int i = 0; i < nsummary; i++) {
        summary_row *r = &summary[i];
        printf("%-28s %-7s %-11s %-10.3g %-10.3g atol %g rtol %g\n", r->cas, r->be,
               r->worst_tensor, r->max_abs, r->worst_ratio, r->tol.atol, r->tol.rtol);
    }
    printf("adamw: max %g ulp from torch over all steps, tensors and backends\n", adamw_max_ulp);
    k22_backend_free(fast);
    k22_backend_free(ref);
    return k22_test_finish("test_ops_torch");
}
