/* test_attention_chunked.c: the fast CPU attention split into chunks of query rows (the scratch
 * cap attn_chunk_floats lowered so there are 2, 3, uneven and 1-row chunks) against the same
 * backend in one chunk, forward and backward, with each kind of mask; and a head whose whole
 * score matrix would be over 1 GB running in bounded scratch. */
#include <math.h>
#include <stdlib.h>

#include "harness/harness.h"
#include "k22/ops.h"
#include "src/backend/cpu/cpu_ops.h" /* to lower attn_chunk_floats and read scratch_floats */

enum { B = 2, NH = 2, TQ = 37, TK = 29, D = 8, DV = 12 };

static float *fvec(int64_t n, uint64_t seed, float lo, float hi)
{
    float *v = calloc((size_t)(n ? n : 1), sizeof(float));
    if (seed) k22_test_fill(v, n, seed, lo, hi);
    return v;
}

static void set_cap(k22_backend *be, size_t floats)
{
    ((k22_cpu_ctx *)be->ctx)->attn_chunk_floats = floats;
}

/* One forward + backward run; gradients start from the same nonzero values (+= is checked). */
typedef struct {
    float *o, *lse, *g[3];
} attn_run;

static const int64_t NQ = (int64_t)B * NH * TQ * D, NK = (int64_t)B * NH * TK * D;
static const int64_t NV = (int64_t)B * NH * TK * DV, NO = (int64_t)B * NH * TQ * DV;
static const int64_t NL = (int64_t)B * NH * TQ;

/* rows: query rows per chunk, in forward and in backward (which holds 1 resp. 2 rows of TK
 * scores per query row); 0: a cap just under one row of scores, which must still run. */
static attn_run attn_run_rows(k22_backend *be, int rows, const float *q, const float *k,
                              const float *v, const float *dout, const k22_attn_desc *d)
{
    attn_run r = {fvec(NO, 0, 0, 0), fvec(NL, 0, 0, 0),
                  {fvec(NQ, 61, -1, 1), fvec(NK, 62, -1, 1), fvec(NV, 63, -1, 1)}};
    set_cap(be, rows ? (size_t)rows * TK : TK - 1);
    be->attention_fwd(be->ctx, r.o, r.lse, q, k, v, d);
    set_cap(be, rows ? (size_t)rows * 2 * TK : 2 * TK - 1);
    be->attention_bwd(be->ctx, r.g[0], r.g[1], r.g[2], dout, q, k, v, r.o, r.lse, d);
    return r;
}

static void attn_run_free(attn_run *r)
{
    free(r->o);
    free(r->lse);
    for (int j = 0; j < 3; j++) free(r->g[j]);
}

/* Tolerances relative to the largest |ref|: rows are independent in forward and in dQ, so
 * those differ from one chunk only by the GEMM's blocking for another M (1e-6); dK and dV sum
 * over query rows chunk by chunk, a different float summation order over TQ = 37 (1e-5). */
static void cmp(const char *name, const char *what, const float *got, const float *want,
                int64_t n, double tol)
{
    double m = 0;
    for (int64_t i = 0; i < n; i++)
        if (isfinite(want[i])) m = fmax(m, fabs(want[i]));
    char nm[160];
    snprintf(nm, sizeof nm, "%s %s", name, what);
    k22_check_close(nm, got, want, n, tol * fmax(m, 1e-30), tol);
}

/* lse: -inf rows must agree exactly; then compares the finite ones. */
static void cmp_lse(const char *name, float *got, float *want)
{
    int agree = 1;
    for (int64_t i = 0; i < NL; i++) {
        if ((got[i] == -INFINITY) != (want[i] == -INFINITY)) agree = 0;
        if (got[i] == -INFINITY) got[i] = -1e30f;
        if (want[i] == -INFINITY) want[i] = -1e30f;
    }
    CHECK_MSG(agree, "%s: fully masked rows differ", name);
    cmp(name, "lse", got, want, NL, 1e-6);
}

static void chunk_case(k22_backend *be, const char *name, const float *mask, int64_t bs,
                       int causal, const uint8_t *keep, int want_empty_row)
{
    k22_attn_desc d = {B, NH, TQ, TK, D, DV, 0.35f, mask, bs, causal, keep};
    float *q = fvec(NQ, 51, -2, 2), *k = fvec(NK, 52, -2, 2), *v = fvec(NV, 53, -1, 1);
    float *dout = fvec(NO, 54, -1, 1);
    attn_run one = attn_run_rows(be, TQ, q, k, v, dout, &d);
    int empty = 0;
    for (int64_t i = 0; i < NL; i++) empty += one.lse[i] == -INFINITY;
    CHECK_MSG(!want_empty_row || empty > 0, "%s: expected a fully excluded row", name);
    /* 1 row a chunk; 19+18 (2 chunks); 13+13+11 (3, uneven); 12x3+1 and 36+1 (a last chunk of
     * 1 row); cap below one row (still 1 row a chunk) */
    const int rows[] = {1, 19, 13, 12, 36, 0};
    for (size_t c = 0; c < sizeof rows / sizeof rows[0]; c++) {
        attn_run r = attn_run_rows(be, rows[c], q, k, v, dout, &d);
        char nm[128];
        snprintf(nm, sizeof nm, "%s, %d rows a chunk", name, rows[c]);
        cmp(nm, "fwd out", r.o, one.o, NO, 1e-6);
        cmp_lse(nm, r.lse, one.lse);
        cmp(nm, "bwd dq", r.g[0], one.g[0], NQ, 1e-6);
        cmp(nm, "bwd dk", r.g[1], one.g[1], NK, 1e-5);
        cmp(nm, "bwd dv", r.g[2], one.g[2], NV, 1e-5);
        attn_run_free(&r);
        for (int64_t i = 0; i < NL; i++) /* cmp_lse wrote the sentinel into one.lse */
            if (one.lse[i] == -1e30f) one.lse[i] = -INFINITY;
    }
    attn_run_free(&one);
    free(q);
    free(k);
    free(v);
    free(dout);
}

static void test_chunks(void)
{
    k22_backend *be = k22_backend_cpu_new(0);
    float *mask = fvec((int64_t)B * TQ * TK, 71, -3, 1);
    uint8_t keep[B * TK];
    for (int j = 0; j < B * TK; j++) keep[j] = (j * 7) % 5 != 1; /* some keys of each batch */
    keep[TK] = 0; /* batch 1, key 0: with causal, that batch's query row 0 has no key left */
    chunk_case(be, "plain", NULL, 0, 0, NULL, 0);
    chunk_case(be, "mask per batch", mask, (int64_t)TQ * TK, 0, NULL, 0);
    chunk_case(be, "mask broadcast (bstride 0)", mask, 0, 0, NULL, 0);
    chunk_case(be, "causal", NULL, 0, 1, NULL, 0);
    chunk_case(be, "key_keep", NULL, 0, 0, keep, 0);
    chunk_case(be, "mask+causal+key_keep (a fully excluded row)", mask, (int64_t)TQ * TK, 1,
               keep, 1);
    free(mask);
    k22_backend_free(be);
}

/* q is row i of a (1, 1, TQ, D) head: the reference forward of that row alone (rows are
 * independent without causal or mask). */
static void ref_row(k22_backend *ref, float *o, float *lse, const float *qi, const float *k,
                    const float *v, int tk, int d_, int dv, float scale)
{
    k22_attn_desc d = {1, 1, 1, tk, d_, dv, scale, NULL, 0, 0, NULL};
    ref->attention_fwd(ref->ctx, o, lse, qi, k, v, &d);
}

/* 16384 x 16400 scores would be 1.07 GB; the scratch must stay within the cap (one buffer of
 * scores in forward, two in backward) and the result must match the reference on some rows. */
static void test_bounded(void)
{
    enum { BQ = 16384, BK = 16400, BD = 2, BDV = 2 };
    k22_backend *be = k22_backend_cpu_new(0), *ref = k22_backend_cpu_new(1);
    k22_cpu_ctx *c = be->ctx;
    size_t cap = (size_t)4 << 20; /* 16 MiB of scores */
    c->attn_chunk_floats = cap;
    k22_attn_desc d = {1, 1, BQ, BK, BD, BDV, 0.5f, NULL, 0, 0, NULL};
    float *q = fvec((int64_t)BQ * BD, 81, -2, 2), *k = fvec((int64_t)BK * BD, 82, -2, 2);
    float *v = fvec((int64_t)BK * BDV, 83, -1, 1), *o = fvec((int64_t)BQ * BDV, 0, 0, 0);
    float *lse = fvec(BQ, 0, 0, 0), *dout = fvec((int64_t)BQ * BDV, 84, -1, 1);
    float *dv = fvec((int64_t)BK * BDV, 0, 0, 0);
    be->attention_fwd(be->ctx, o, lse, q, k, v, &d);
    CHECK_MSG(c->scratch_floats <= cap, "forward scratch %zu floats > cap %zu", c->scratch_floats,
              cap);
    const int rows[] = {0, 255, BQ / 2 + 3, BQ - 1};
    for (int r = 0; r < 4; r++) {
        float ro[BDV], rl;
        ref_row(ref, ro, &rl, q + (int64_t)rows[r] * BD, k, v, BK, BD, BDV, 0.5f);
        char nm[80];
        snprintf(nm, sizeof nm, "bounded %dx%d row %d out", BQ, BK, rows[r]);
        k22_check_close(nm, o + (int64_t)rows[r] * BDV, ro, BDV, 1e-5, 1e-4); /* 16400-key sum */
        snprintf(nm, sizeof nm, "bounded %dx%d row %d lse", BQ, BK, rows[r]);
        k22_check_close(nm, lse + rows[r], &rl, 1, 1e-5, 1e-5);
    }
    /* dV only (dQ, dK NULL) to keep it quick; the chunked cases above check dQ and dK */
    be->attention_bwd(be->ctx, NULL, NULL, dv, dout, q, k, v, o, lse, &d);
    CHECK_MSG(c->scratch_floats <= cap, "backward scratch %zu floats > cap %zu",
              c->scratch_floats, cap);
    /* sum_i dv_i = sum_i P^T dO summed over keys: each P row sums to 1, so sum over all of dv
     * equals the sum of dout (per column) */
    for (int cc = 0; cc < BDV; cc++) {
        double sdv = 0, sdo = 0;
        for (int j = 0; j < BK; j++) sdv += dv[(int64_t)j * BDV + cc];
        for (int i = 0; i < BQ; i++) sdo += dout[(int64_t)i * BDV + cc];
        CHECK_MSG(fabs(sdv - sdo) <= 1e-3 * fmax(1.0, fabs(sdo)), "bounded dv column %d sums "
                  "to %g, dout to %g", cc, sdv, sdo);
    }
    float *bufs[] = {q, k, v, o, lse, dout, dv};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    k22_backend_free(be);
    k22_backend_free(ref);
}

int main(void)
{
    test_chunks();
    test_bounded();
    return k22_test_finish("attention_chunked");
}
