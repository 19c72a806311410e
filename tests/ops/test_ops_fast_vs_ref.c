/* test_ops_fast_vs_ref.c: every op of the fast CPU backend ("cpu": OpenBLAS + OpenMP) against
 * the plain-loop reference ("cpu-ref"), forward and backward, on moderately sized random inputs
 * with shapes that are not multiples of any GEMM tile (67x129x33). Gradients start from the
 * same nonzero contents in both, so accumulation (+=) is checked too. An element passes when
 * |fast - ref| <= tol * max|ref| + tol * |ref|: float vs double accumulation error grows with
 * the reduction length, so tolerances are stated per op with the reason. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "harness/harness.h"
#include "k22/ops.h"
#include "src/backend/cpu/cpu_ops.h" /* to shrink the im2col band limit */

static k22_backend *ref, *fast;

static float *fvec(int64_t n, uint64_t seed, float lo, float hi)
{
    float *v = calloc((size_t)(n ? n : 1), sizeof(float));
    if (seed) k22_test_fill(v, n, seed, lo, hi);
    return v;
}

static float *fdup(const float *x, int64_t n)
{
    float *v = fvec(n, 0, 0, 0);
    memcpy(v, x, sizeof(float) * (size_t)n);
    return v;
}

static void cmp(const char *what, const float *got, const float *want, int64_t n, double tol)
{
    double m = 0;
    for (int64_t i = 0; i < n; i++)
        if (isfinite(want[i])) m = fmax(m, fabs(want[i]));
    k22_check_close(what, got, want, n, tol * fmax(m, 1e-30), tol);
}

static void test_matmul(void)
{
    enum { M = 67, N = 129, K = 33, BATCH = 2 };
    float *A = fvec(BATCH * M * K, 1, -1, 1), *B = fvec(BATCH * K * N, 2, -1, 1);
    for (int t = 0; t < 8; t++) {
        int ta = t & 1, tb = (t >> 1) & 1, acc = t >> 2;
        float beta = acc ? 0.3f : 0.0f;
        float *Cr = fvec(BATCH * M * N, 3, -1, 1), *Cf;
        if (!acc)
            for (int i = 0; i < BATCH * M * N; i++) Cr[i] = NAN; /* beta 0 must ignore NaN */
        Cf = fdup(Cr, BATCH * M * N);
        ref->matmul(ref->ctx, ta, tb, M, N, K, 0.5f, A, M * K, B, K * N, beta, Cr, M * N, BATCH);
        fast->matmul(fast->ctx, ta, tb, M, N, K, 0.5f, A, M * K, B, K * N, beta, Cf, M * N, BATCH);
        char nm[80];
        snprintf(nm, sizeof nm, "matmul 67x129x33 ta=%d tb=%d beta=%g", ta, tb, beta);
        cmp(nm, Cf, Cr, BATCH * M * N, 1e-5); /* K = 33 float sums vs double */
        free(Cr);
        free(Cf);
    }
    free(A);
    free(B);
    /* a long reduction over several OpenBLAS K blocks */
    enum { M2 = 257, N2 = 191, K2 = 515 };
    float *A2 = fvec(M2 * K2, 4, -1, 1), *B2 = fvec(K2 * N2, 5, -1, 1);
    for (int t = 0; t < 2; t++) {
        float *Cr = fvec(M2 * N2, 0, 0, 0), *Cf = fvec(M2 * N2, 0, 0, 0);
        ref->matmul(ref->ctx, t, !t, M2, N2, K2, 1.0f, A2, 0, B2, 0, 0.0f, Cr, 0, 1);
        fast->matmul(fast->ctx, t, !t, M2, N2, K2, 1.0f, A2, 0, B2, 0, 0.0f, Cf, 0, 1);
        cmp(t ? "matmul 257x191x515 ta" : "matmul 257x191x515 tb", Cf, Cr, M2 * N2, 2e-5);
        free(Cr);
        free(Cf);
    }
    free(A2);
    free(B2);
}

static void test_linear(void)
{
    enum { N = 67, I = 129, O = 33 };
    float *x = fvec(N * I, 11, -1, 1), *w = fvec(O * I, 12, -1, 1), *b = fvec(O, 13, -1, 1);
    float *dy = fvec(N * O, 14, -1, 1);
    for (int hb = 0; hb < 2; hb++) {
        float *yr = fvec(N * O, 0, 0, 0), *yf = fvec(N * O, 0, 0, 0);
        ref->linear_fwd(ref->ctx, yr, x, w, hb ? b : NULL, N, I, O);
        fast->linear_fwd(fast->ctx, yf, x, w, hb ? b : NULL, N, I, O);
        cmp(hb ? "linear fwd bias" : "linear fwd", yf, yr, N * O, 1e-5); /* I = 129 sums */
        free(yr);
        free(yf);
    }
    float *g[2][3];
    for (int m = 0; m < 2; m++) {
        g[m][0] = fvec(N * I, 15, -1, 1);
        g[m][1] = fvec(O * I, 16, -1, 1);
        g[m][2] = fvec(O, 17, -1, 1);
        k22_backend *be = m ? fast : ref;
        be->linear_bwd(be->ctx, g[m][0], g[m][1], g[m][2], dy, x, w, N, I, O);
    }
    cmp("linear bwd dx", g[1][0], g[0][0], N * I, 1e-5);
    cmp("linear bwd dw", g[1][1], g[0][1], O * I, 1e-5);
    cmp("linear bwd db", g[1][2], g[0][2], O, 1e-5);
    for (int m = 0; m < 2; m++)
        for (int k = 0; k < 3; k++) free(g[m][k]);
    free(x);
    free(w);
    free(b);
    free(dy);
}

static void test_conv(int banded)
{
    static const k22_conv2d_desc geo[] = {
        {2, 16, 17, 15, 24, 3, 3, 1, 1, 1, 1, 1, 1}, /* 3x3 pad 1 */
        {1, 8, 16, 16, 12, 3, 3, 2, 2, 0, 1, 0, 1},  /* stride 2, pad (0,1,0,1) */
        {2, 32, 9, 9, 16, 1, 1, 1, 1, 0, 0, 0, 0},   /* 1x1 (x used as the GEMM operand) */
        {1, 3, 12, 13, 8, 4, 3, 2, 1, 1, 2, 0, 1},   /* odd kernel, mixed stride and padding */
        {2, 32, 24, 24, 48, 3, 3, 1, 1, 1, 1, 1, 1}, /* CKK = 288, P = 576: several GEMM tiles */
    };
    for (size_t gi = 0; gi < sizeof geo / sizeof geo[0]; gi++) {
        const k22_conv2d_desc *d = &geo[gi];
        int64_t nx = (int64_t)d->B * d->C * d->H * d->W, nw = (int64_t)d->O * d->C * d->KH * d->KW;
        int64_t ny = (int64_t)d->B * d->O * k22_conv2d_out_h(d) * k22_conv2d_out_w(d);
        float *x = fvec(nx, 21 + gi, -1, 1), *w = fvec(nw, 22 + gi, -1, 1);
        float *b = fvec(d->O, 23 + gi, -1, 1), *dy = fvec(ny, 24 + gi, -1, 1);
        float *yr = fvec(ny, 0, 0, 0), *yf = fvec(ny, 0, 0, 0), *g[2][3];
        char nm[80];
        const char *mode = banded ? "banded " : "";
        ref->conv2d_fwd(ref->ctx, yr, x, w, b, d);
        fast->conv2d_fwd(fast->ctx, yf, x, w, b, d);
        snprintf(nm, sizeof nm, "conv2d %s%zu fwd", mode, gi);
        cmp(nm, yf, yr, ny, 2e-5); /* up to C*KH*KW = 288 float products */
        for (int m = 0; m < 2; m++) {
            k22_backend *be = m ? fast : ref;
            g[m][0] = fvec(nx, 25, -1, 1);
            g[m][1] = fvec(nw, 26, -1, 1);
            g[m][2] = fvec(d->O, 27, -1, 1);
            be->conv2d_bwd(be->ctx, g[m][0], g[m][1], g[m][2], dy, x, w, d);
        }
        snprintf(nm, sizeof nm, "conv2d %s%zu bwd dx", mode, gi);
        cmp(nm, g[1][0], g[0][0], nx, 2e-5);
        snprintf(nm, sizeof nm, "conv2d %s%zu bwd dw", mode, gi);
        cmp(nm, g[1][1], g[0][1], nw, 2e-5); /* sums over B*OH*OW <= 1152 terms */
        snprintf(nm, sizeof nm, "conv2d %s%zu bwd dbias", mode, gi);
        cmp(nm, g[1][2], g[0][2], d->O, 2e-5);
        for (int m = 0; m < 2; m++)
            for (int k = 0; k < 3; k++) free(g[m][k]);
        free(x);
        free(w);
        free(b);
        free(dy);
        free(yr);
        free(yf);
    }
}

/* Group norm when N == 0, layer norm (rows N, channels C) otherwise. */
static void norm_case(const char *name, int ln, int B, int C, int S, int G, int affine)
{
    int64_t n = ln ? (int64_t)B * C : (int64_t)B * C * S, nst = ln ? B : B * G;
    float *x = fvec(n, 31, -2, 3), *gm = fvec(C, 32, 0.5f, 1.5f), *bt = fvec(C, 33, -1, 1);
    float *dy = fvec(n, 34, -1, 1), *y[2], *mean[2], *rstd[2], *g[2][3];
    if (!affine) gm = (free(gm), NULL), bt = (free(bt), NULL);
    for (int m = 0; m < 2; m++) {
        k22_backend *be = m ? fast : ref;
        y[m] = fvec(n, 0, 0, 0);
        mean[m] = fvec(nst, 0, 0, 0);
        rstd[m] = fvec(nst, 0, 0, 0);
        g[m][0] = fvec(n, 35, -1, 1);
        g[m][1] = fvec(C, 36, -1, 1);
        g[m][2] = fvec(C, 37, -1, 1);
        if (ln) {
            be->layer_norm_fwd(be->ctx, y[m], mean[m], rstd[m], x, gm, bt, B, C, 1e-5f);
            be->layer_norm_bwd(be->ctx, g[m][0], affine ? g[m][1] : NULL, affine ? g[m][2] : NULL,
                               dy, x, mean[0], rstd[0], gm, B, C);
        } else {
            be->group_norm_fwd(be->ctx, y[m], mean[m], rstd[m], x, gm, bt, B, C, S, G, 1e-5f);
            be->group_norm_bwd(be->ctx, g[m][0], affine ? g[m][1] : NULL, affine ? g[m][2] : NULL,
                               dy, x, mean[0], rstd[0], gm, B, C, S, G);
        }
    }
    char nm[96];
    /* statistics are double in both modes; the normalization itself is float in fast mode */
    snprintf(nm, sizeof nm, "%s fwd y", name);
    cmp(nm, y[1], y[0], n, 2e-6);
    snprintf(nm, sizeof nm, "%s fwd mean", name);
    cmp(nm, mean[1], mean[0], nst, 1e-6);
    snprintf(nm, sizeof nm, "%s fwd rstd", name);
    cmp(nm, rstd[1], rstd[0], nst, 1e-6);
    /* per-channel sums over up to 3200 float terms in fast mode */
    snprintf(nm, sizeof nm, "%s bwd dx", name);
    cmp(nm, g[1][0], g[0][0], n, 1e-5);
    snprintf(nm, sizeof nm, "%s bwd dgamma", name);
    cmp(nm, g[1][1], g[0][1], C, 2e-5);
    snprintf(nm, sizeof nm, "%s bwd dbeta", name);
    cmp(nm, g[1][2], g[0][2], C, 2e-5);
    for (int m = 0; m < 2; m++) {
        free(y[m]);
        free(mean[m]);
        free(rstd[m]);
        for (int k = 0; k < 3; k++) free(g[m][k]);
    }
    free(x);
    free(gm);
    free(bt);
    free(dy);
}

static void test_norms(void)
{
    norm_case("group_norm affine", 0, 2, 32, 100, 8, 1);
    norm_case("group_norm plain", 0, 3, 12, 37, 3, 0);
    norm_case("layer_norm affine", 1, 67, 200, 0, 0, 1);
    norm_case("layer_norm plain", 1, 5, 33, 0, 0, 0);
}

static void test_act_softmax(void)
{
    static const char *names[] = {"silu", "gelu", "gelu_tanh", "quick_gelu"};
    enum { n = 10001, R = 67, C = 129 };
    float *x = fvec(n, 41, -6, 6), *dy = fvec(n, 42, -1, 1);
    for (int a = 0; a < K22_ACT_COUNT; a++) {
        float *yr = fvec(n, 0, 0, 0), *yf = fvec(n, 0, 0, 0);
        float *gr = fvec(n, 43, -1, 1), *gf = fdup(gr, n);
        ref->act_fwd(ref->ctx, a, yr, x, n);
        fast->act_fwd(fast->ctx, a, yf, x, n);
        ref->act_bwd(ref->ctx, a, gr, dy, x, n);
        fast->act_bwd(fast->ctx, a, gf, dy, x, n);
        char nm[64];
        /* float libm (erff, expf, tanhf) vs double: a few ulp; near the zeros of the
         * derivative, cancellation leaves a few ulp of the largest term */
        snprintf(nm, sizeof nm, "%s fwd", names[a]);
        k22_check_close(nm, yf, yr, n, 2e-6, 2e-6); /* seen 6e-7 */
        snprintf(nm, sizeof nm, "%s bwd", names[a]);
        k22_check_close(nm, gf, gr, n, 2e-6, 2e-6);
        free(yr);
        free(yf);
        free(gr);
        free(gf);
    }
    float *yr = fvec(R * C, 0, 0, 0), *yf = fvec(R * C, 0, 0, 0);
    float *gr = fvec(R * C, 44, -1, 1), *gf = fdup(gr, R * C);
    ref->softmax_fwd(ref->ctx, yr, x, R, C);
    fast->softmax_fwd(fast->ctx, yf, x, R, C);
    ref->softmax_bwd(ref->ctx, gr, dy, yr, R, C);
    fast->softmax_bwd(fast->ctx, gf, dy, yr, R, C);
    cmp("softmax fwd", yf, yr, R * C, 1e-5); /* 129-term float sum of exponentials */
    cmp("softmax bwd", gf, gr, R * C, 1e-5);
    free(yr);
    free(yf);
    free(gr);
    free(gf);
    free(x);
    free(dy);
}

static void attn_case(const char *name, int TQ, int TK, const float *mask, int64_t bs, int causal,
                      const uint8_t *keep)
{
    enum { B = 2, NH = 3, D = 16, DV = 24 };
    k22_attn_desc d = {B, NH, TQ, TK, D, DV, 0.25f, mask, bs, causal, keep};
    int64_t nq = (int64_t)B * NH * TQ * D, nk = (int64_t)B * NH * TK * D;
    int64_t nv = (int64_t)B * NH * TK * DV, no = (int64_t)B * NH * TQ * DV, nl = B * NH * TQ;
    float *q = fvec(nq, 51, -2, 2), *k = fvec(nk, 52, -2, 2), *v = fvec(nv, 53, -1, 1);
    float *dout = fvec(no, 54, -1, 1), *o[2], *lse[2], *g[2][3];
    for (int m = 0; m < 2; m++) {
        k22_backend *be = m ? fast : ref;
        o[m] = fvec(no, 0, 0, 0);
        lse[m] = fvec(nl, 0, 0, 0);
        g[m][0] = fvec(nq, 55, -1, 1);
        g[m][1] = fvec(nk, 56, -1, 1);
        g[m][2] = fvec(nv, 57, -1, 1);
        be->attention_fwd(be->ctx, o[m], lse[m], q, k, v, &d);
        be->attention_bwd(be->ctx, g[m][0], g[m][1], g[m][2], dout, q, k, v, o[0], lse[0], &d);
    }
    char nm[128];
    /* sums over TK <= 45 keys and D = 16 in float vs double */
    snprintf(nm, sizeof nm, "%s fwd out", name);
    cmp(nm, o[1], o[0], no, 2e-5);
    /* fully masked rows must give -inf in both; compare those as a finite sentinel */
    for (int m = 0; m < 2; m++)
        for (int64_t i = 0; i < nl; i++)
            if (lse[m][i] == -INFINITY) lse[m][i] = -1e30f;
    snprintf(nm, sizeof nm, "%s fwd lse", name);
    k22_check_close(nm, lse[1], lse[0], nl, 1e-5, 1e-5);
    snprintf(nm, sizeof nm, "%s bwd dq", name);
    cmp(nm, g[1][0], g[0][0], nq, 5e-5);
    snprintf(nm, sizeof nm, "%s bwd dk", name);
    cmp(nm, g[1][1], g[0][1], nk, 5e-5);
    snprintf(nm, sizeof nm, "%s bwd dv", name);
    cmp(nm, g[1][2], g[0][2], nv, 5e-5);
    for (int m = 0; m < 2; m++) {
        free(o[m]);
        free(lse[m]);
        for (int j = 0; j < 3; j++) free(g[m][j]);
    }
    free(q);
    free(k);
    free(v);
    free(dout);
}

static void test_attention(void)
{
    enum { TQ = 37, TK = 45 };
    float *mask = fvec(2 * TQ * TK, 61, -3, 3);
    uint8_t keep[2 * TK];
    for (int j = 0; j < 2 * TK; j++) keep[j] = j < TK ? (j % 7 != 3) : 0; /* batch 1 all padding */
    attn_case("attention plain 37x45", TQ, TK, NULL, 0, 0, NULL);
    attn_case("attention mask per batch", TQ, TK, mask, TQ * TK, 0, NULL);
    attn_case("attention mask broadcast", TQ, TK, mask, 0, 0, NULL);
    attn_case("attention causal 37x37", TQ, TQ, NULL, 0, 1, NULL);
    attn_case("attention key padding", TQ, TK, NULL, 0, 0, keep);
    attn_case("attention mask+causal+padding", TQ, TK, mask, TQ * TK, 1, keep);
    free(mask);
}

static void test_elementwise(void)
{
    enum { n = 10001, B = 2, C = 3, H = 7, W = 9 };
    float *a = fvec(n, 71, -2, 2), *b = fvec(n, 72, -2, 2), *dy = fvec(n, 73, -1, 1);
    float *y[2], *ga[2], *gb[2];
    for (int m = 0; m < 2; m++) {
        k22_backend *be = m ? fast : ref;
        y[m] = fvec(3 * n, 0, 0, 0);
        ga[m] = fvec(n, 74, -1, 1);
        gb[m] = fvec(n, 75, -1, 1);
        be->add(be->ctx, y[m], a, b, n);
        be->mul(be->ctx, y[m] + n, a, b, n);
        be->scale(be->ctx, y[m] + 2 * n, a, 0.37f, n);
        be->add_bwd(be->ctx, ga[m], gb[m], dy, n);
        be->mul_bwd(be->ctx, ga[m], gb[m], dy, a, b, n);
        be->scale_bwd(be->ctx, ga[m], dy, -1.5f, n);
    }
    /* one float operation per element in both: identical */
    k22_check_close("add/mul/scale fwd", y[1], y[0], 3 * n, 0, 0);
    k22_check_close("add/mul/scale bwd da", ga[1], ga[0], n, 0, 0);
    k22_check_close("add/mul/scale bwd db", gb[1], gb[0], n, 0, 0);
    for (int m = 0; m < 2; m++) {
        free(y[m]);
        free(ga[m]);
        free(gb[m]);
    }
    int64_t nx = B * C * H * W;
    float *x = fvec(nx, 76, -1, 1), *dyu = fvec(4 * nx, 77, -1, 1);
    for (int m = 0; m < 2; m++) {
        k22_backend *be = m ? fast : ref;
        y[m] = fvec(4 * nx, 0, 0, 0);
        ga[m] = fvec(nx, 78, -1, 1);
        be->upsample2x_fwd(be->ctx, y[m], x, B, C, H, W);
        be->upsample2x_bwd(be->ctx, ga[m], dyu, B, C, H, W);
    }
    k22_check_close("upsample2x fwd", y[1], y[0], 4 * nx, 0, 0); /* a copy */
    cmp("upsample2x bwd", ga[1], ga[0], nx, 1e-6);               /* 4-term float sum */
    for (int m = 0; m < 2; m++) {
        free(y[m]);
        free(ga[m]);
    }
    free(x);
    free(dyu);
    free(a);
    free(b);
    free(dy);
}

/* concat, permute and the timestep embedding share one implementation in both modes; run
 * them through both tables anyway so a future fast version is covered. */
static void test_shared(void)
{
    enum { n = 2 * 3 * 4 * 5 };
    float *a = fvec(n, 91, -1, 1), *b = fvec(n, 92, -1, 1), *dy = fvec(2 * n, 93, -1, 1);
    float *t = fvec(7, 94, 0, 999), *y[2], *g[2][2];
    const int64_t shape[4] = {2, 3, 4, 5};
    const int perm[4] = {3, 1, 0, 2};
    for (int m = 0; m < 2; m++) {
        k22_backend *be = m ? fast : ref;
        y[m] = fvec(2 * n + n + 7 * 33, 0, 0, 0);
        g[m][0] = fvec(n, 95, -1, 1);
        g[m][1] = fvec(n, 96, -1, 1);
        be->concat_fwd(be->ctx, y[m], a, b, 6, 4, 4, 5);
        be->concat_bwd(be->ctx, g[m][0], g[m][1], dy, 6, 4, 4, 5);
        be->permute_fwd(be->ctx, y[m] + 2 * n, a, 4, shape, perm);
        be->permute_bwd(be->ctx, g[m][0], dy, 4, shape, perm);
        be->timestep_embed_fwd(be->ctx, y[m] + 3 * n, t, 7, 33, 1, 1.0f, 1.0f, 10000.0f);
        be->timestep_embed_bwd(be->ctx, g[m][1], dy, t, 7, 33, 0, 0.0f, 1.0f, 10000.0f);
    }
    k22_check_close("concat/permute/timestep_embed fwd", y[1], y[0], 3 * n + 7 * 33, 0, 0);
    k22_check_close("concat/permute bwd", g[1][0], g[0][0], n, 0, 0);
    k22_check_close("concat/timestep_embed bwd", g[1][1], g[0][1], n, 0, 0);
    for (int m = 0; m < 2; m++) {
        free(y[m]);
        free(g[m][0]);
        free(g[m][1]);
    }
    free(a);
    free(b);
    free(dy);
    free(t);
}

static void test_loss_optim(void)
{
    enum { B = 4, N = 1000, n = 100003 };
    float *p = fvec(B * N, 81, -1, 1), *t = fvec(B * N, 82, -1, 1), w[B] = {0.5f, 1, 2, 0.25f};
    for (int hw = 0; hw < 2; hw++) {
        float loss[2], ps[2][B], *g[2];
        for (int m = 0; m < 2; m++) {
            k22_backend *be = m ? fast : ref;
            g[m] = fvec(B * N, 83, -1, 1);
            be->mse_fwd(be->ctx, &loss[m], ps[m], p, t, hw ? w : NULL, B, N);
            be->mse_bwd(be->ctx, g[m], 1.7f, p, t, hw ? w : NULL, B, N);
        }
        /* fast squares in float, sums in double: within a few float ulp */
        k22_check_close(hw ? "mse weighted loss" : "mse loss", &loss[1], &loss[0], 1, 0, 1e-6);
        k22_check_close("mse per_sample", ps[1], ps[0], B, 0, 1e-6);
        k22_check_close("mse bwd", g[1], g[0], B * N, 1e-7, 1e-6);
        free(g[0]);
        free(g[1]);
    }
    free(p);
    free(t);
    float *pa[2], *m1[2], *v1[2], *gr = fvec(n, 84, -1, 1);
    k22_adamw_hparams h = {1e-3, 0.9, 0.999, 1e-8, 0.01, 0, 0.37f};
    for (int m = 0; m < 2; m++) {
        k22_backend *be = m ? fast : ref;
        pa[m] = fvec(n, 85, -1, 1);
        m1[m] = fvec(n, 0, 0, 0);
        v1[m] = fvec(n, 0, 0, 0);
        for (h.step = 1; h.step <= 3; h.step++)
            be->adamw_step(be->ctx, pa[m], gr, m1[m], v1[m], n, &h);
    }
    /* the same float expression per element in both modes: bit-identical */
    k22_check_close("adamw p", pa[1], pa[0], n, 0, 0);
    k22_check_close("adamw m", m1[1], m1[0], n, 0, 0);
    k22_check_close("adamw v", v1[1], v1[0], n, 0, 0);
    /* grad_scale (the clip coefficient read with g) gives the bits of scaling g in place first
     * (torch's clip_grad_norm_), on each backend: the trainer relies on it */
    for (int m = 0; m < 2; m++) {
        k22_backend *be = m ? fast : ref;
        float *pb = fvec(n, 85, -1, 1), *mb = fvec(n, 0, 0, 0), *vb = fvec(n, 0, 0, 0);
        float *gs = fvec(n, 0, 0, 0);
        k22_adamw_hparams h1 = h;
        h1.grad_scale = 1.0f;
        for (h1.step = 1; h1.step <= 3; h1.step++) {
            be->scale(be->ctx, gs, gr, h.grad_scale, n);
            be->adamw_step(be->ctx, pb, gs, mb, vb, n, &h1);
        }
        k22_check_close(m ? "adamw grad_scale vs scale + adamw (fast)" : "adamw grad_scale vs scale + adamw (ref)",
                        pa[m], pb, n, 0, 0);
        k22_check_close("adamw grad_scale vs scale + adamw: v", v1[m], vb, n, 0, 0);
        /* and it is not ignored: unscaled gradients move the weights elsewhere */
        float *pc = fvec(n, 85, -1, 1), *mc = fvec(n, 0, 0, 0), *vc = fvec(n, 0, 0, 0);
        for (h1.step = 1; h1.step <= 3; h1.step++) be->adamw_step(be->ctx, pc, gr, mc, vc, n, &h1);
        CHECK_MSG(memcmp(pc, pa[m], sizeof(float) * (size_t)n) != 0, "adamw ignored grad_scale");
        free(pb), free(mb), free(vb), free(gs), free(pc), free(mc), free(vc);
    }
    double sr = 0, sf = 0;
    ref->sumsq(ref->ctx, &sr, gr, n);
    fast->sumsq(fast->ctx, &sf, gr, n);
    CHECK_MSG(fabs(sf - sr) <= 1e-12 * sr, "sumsq fast %.17g ref %.17g", sf, sr); /* double sums */
    for (int m = 0; m < 2; m++) {
        free(pa[m]);
        free(m1[m]);
        free(v1[m]);
    }
    free(gr);
}

int main(void)
{
    ref = k22_backend_cpu_new(1);
    fast = k22_backend_cpu_new(0);
    CHECK(strcmp(ref->name, "cpu-ref") == 0 && strcmp(fast->name, "cpu") == 0);
    test_matmul();
    test_linear();
    test_conv(0);
    /* im2col in bands of a few output rows (a partial last band included), as large images do */
    ((k22_cpu_ctx *)fast->ctx)->conv_col_floats = 3000;
    test_conv(1);
    ((k22_cpu_ctx *)fast->ctx)->conv_col_floats = (size_t)8 << 20;
    test_norms();
    test_act_softmax();
    test_attention();
    test_elementwise();
    test_shared();
    test_loss_optim();
    k22_backend_free(ref);
    k22_backend_free(fast);
    return k22_test_finish("ops_fast_vs_ref");
}
