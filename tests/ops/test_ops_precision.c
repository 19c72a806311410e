/* test_ops_precision.c: --mixed_precision's operand rounding on the cpu backend (ops.h,
 * k22_precision). Under bf16/fp16 every GEMM operand is rounded, products are summed in fp32, so
 * a GEMM-class op of the cpu backend in bf16 must equal the fp32 reference op fed the rounded
 * inputs (linear, conv: their operands are their inputs), up to fp32-vs-double summation. The
 * rounding itself is checked bit for bit against the dtype conversions (src/core/dtype.c), which
 * the safetensors tests hold to torch's. Attention also rounds its internal probabilities and
 * dS, so it is held to a bf16-sized tolerance instead, and shown to differ from fp32. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "harness/harness.h"
#include "k22/ops.h"
#include "k22/tensor.h"
#include "src/backend/cpu/cpu_ops.h" /* to shrink the im2col band limit */

static k22_backend *ref, *fast;

static float *fvec(int64_t n, uint64_t seed, float lo, float hi)
{
    float *v = calloc((size_t)(n ? n : 1), sizeof(float));
    if (seed) k22_test_fill(v, n, seed, lo, hi);
    return v;
}

static float *rounded(k22_precision p, const float *x, int64_t n)
{
    float *v = fvec(n, 0, 0, 0);
    for (int64_t i = 0; i < n; i++) v[i] = k22_precision_round(p, x[i]);
    return v;
}

/* |got - want| <= tol * max|want| everywhere; returns max|got - want| / max|want|. */
static double cmp(const char *what, const float *got, const float *want, int64_t n, double tol)
{
    double m = 0, e = 0;
    for (int64_t i = 0; i < n; i++) m = fmax(m, fabs(want[i]));
    for (int64_t i = 0; i < n; i++) e = fmax(e, fabs((double)got[i] - want[i]));
    k22_check_close(what, got, want, n, tol * fmax(m, 1e-30), 0);
    printf("%-70s max err / max|ref| %.3g (tolerance %.3g)\n", what, m > 0 ? e / m : e, tol);
    return m > 0 ? e / m : e;
}

static void set_prec(k22_backend *be, k22_precision p)
{
    k22_err err;
    k22_err_clear(&err);
    CHECK(k22_backend_set_precision(be, p, &err) == K22_OK);
}

static void test_names(void)
{
    k22_err err;
    k22_precision p;
    const char *names[] = {"no", "bf16", "fp16"};
    for (int i = 0; i < 3; i++) {
        k22_err_clear(&err);
        CHECK(k22_precision_parse(names[i], &p, &err) == K22_OK && (int)p == i);
        CHECK(!strcmp(k22_precision_name(p), names[i]));
    }
    k22_err_clear(&err);
    CHECK(k22_precision_parse("fp8", &p, &err) == K22_ERR_ARG && strstr(err.msg, "fp8"));
    /* the oracle computes in fp32 only, and says so */
    k22_err_clear(&err);
    CHECK(k22_backend_set_precision(ref, K22_PREC_BF16, &err) == K22_ERR_UNSUPPORTED);
    CHECK_MSG(strstr(err.msg, "cpu-ref") && strstr(err.msg, "bf16"), "%s", err.msg);
    k22_err_clear(&err);
    CHECK(k22_backend_set_precision(ref, K22_PREC_FP32, &err) == K22_OK);
}

/* A (n, 1) @ (1, 1) of ones is each value rounded, times 1: the rounding seen through sgemm. */
static void test_rounding_bits(k22_precision p)
{
    enum { NS = 40, NR = 1 << 18 };
    static const uint32_t special[NS] = {
        0x00000000, 0x80000000, 0x00000001, 0x807fffff, 0x33800000, 0x33800001, 0x337fffff,
        0x38800000, 0x387fffff, 0x38801000, 0x38803000, 0x3f800000, 0x3f808000, 0x3f818000,
        0x3f800fff, 0x3f801000, 0x3f803000, 0x3f7fffff, 0x477fe000, 0x477fefff, 0x477ff000,
        0x477ff001, 0x47800000, 0x7f7fffff, 0xff7f8000, 0x7f7f7fff, 0x7f800000, 0xff800000,
        0x7fc00000, 0x7f800001, 0xffc12345, 0x3eaaaaab, 0xbf2aaaab, 0x40490fdb, 0x0080ffff,
        0x38000000, 0x37ffffff, 0x477fffff, 0xc77ff000, 0x3c000800};
    int64_t n = NS + NR;
    float *x = fvec(n, 0, 0, 0), *one = fvec(1, 0, 0, 0), *y = fvec(n, 0, 0, 0);
    one[0] = 1.0f;
    uint64_t s = 0x9e3779b97f4a7c15ull ^ (uint64_t)p;
    for (int64_t i = 0; i < n; i++) {
        uint32_t u;
        if (i < NS) u = special[i];
        else s = s * 6364136223846793005ull + 1442695040888963407ull, u = (uint32_t)(s >> 32);
        memcpy(&x[i], &u, 4);
    }
    set_prec(fast, p);
    fast->matmul(fast->ctx, 0, 0, (int)n, 1, 1, 1.0f, x, 0, one, 0, 0.0f, y, 0, 1);
    int64_t bad = 0, first = -1;
    for (int64_t i = 0; i < n; i++) {
        float want = k22_precision_round(p, x[i]);
        /* the GEMM adds to a zeroed C, so -0 comes back as +0: zeros compare by value */
        int same = isnan(want) ? isnan(y[i]) : want == 0 ? y[i] == 0 : memcmp(&want, &y[i], 4) == 0;
        if (!same && !bad++) first = i;
    }
    CHECK_MSG(bad == 0, "%s rounding: %lld of %lld values differ from the dtype conversion (first x=%a got %a)",
              k22_precision_name(p), (long long)bad, (long long)n, first >= 0 ? x[first] : 0.0, first >= 0 ? y[first] : 0.0);
    set_prec(fast, K22_PREC_FP32);
    free(x), free(one), free(y);
}

static void test_matmul(k22_precision p)
{
    enum { M = 37, N = 45, K = 29, BATCH = 3 };
    float *A = fvec(BATCH * M * K, 11, -1, 1), *B = fvec(BATCH * K * N, 12, -1, 1);
    float *Ar = rounded(p, A, BATCH * M * K), *Br = rounded(p, B, BATCH * K * N);
    for (int t = 0; t < 8; t++) {
        int ta = t & 1, tb = (t >> 1) & 1, bcast = t >> 2; /* bcast: B shared over the batch */
        int64_t sB = bcast ? 0 : K * N, nc = (int64_t)BATCH * M * N;
        float *Cw = fvec(nc, 13, -1, 1), *Cg = fvec(nc, 13, -1, 1), *C32 = fvec(nc, 13, -1, 1);
        ref->matmul(ref->ctx, ta, tb, M, N, K, 0.5f, Ar, M * K, Br, sB, 0.7f, Cw, M * N, BATCH);
        fast->matmul(fast->ctx, ta, tb, M, N, K, 0.5f, A, M * K, B, sB, 0.7f, C32, M * N, BATCH);
        set_prec(fast, p);
        fast->matmul(fast->ctx, ta, tb, M, N, K, 0.5f, A, M * K, B, sB, 0.7f, Cg, M * N, BATCH);
        set_prec(fast, K22_PREC_FP32);
        char nm[96];
        snprintf(nm, sizeof nm, "%s matmul ta=%d tb=%d %s vs fp32 of rounded operands", k22_precision_name(p),
                 ta, tb, bcast ? "broadcast B" : "batched");
        cmp(nm, Cg, Cw, nc, 2e-6); /* K = 29: fp32 vs double sums */
        /* and the rounding is really on: bf16 moves results by ~1e-3 of their scale */
        double d = 0;
        for (int64_t i = 0; i < nc; i++) d = fmax(d, fabs((double)Cg[i] - C32[i]));
        CHECK_MSG(d > (p == K22_PREC_BF16 ? 1e-3 : 1e-5), "%s: differs from fp32 by only %g", nm, d);
        free(Cw), free(Cg), free(C32);
    }
    free(A), free(B), free(Ar), free(Br);
}

static void test_linear(k22_precision p)
{
    enum { NR = 23, I = 31, O = 19 };
    float *x = fvec(NR * I, 21, -1, 1), *w = fvec(O * I, 22, -1, 1), *b = fvec(O, 23, -1, 1);
    float *dy = fvec(NR * O, 24, -1, 1);
    float *xr = rounded(p, x, NR * I), *wr = rounded(p, w, O * I), *dyr = rounded(p, dy, NR * O);
    float *yw = fvec(NR * O, 0, 0, 0), *yg = fvec(NR * O, 0, 0, 0);
    float *dxw = fvec(NR * I, 25, -1, 1), *dxg = fvec(NR * I, 25, -1, 1);
    float *dww = fvec(O * I, 26, -1, 1), *dwg = fvec(O * I, 26, -1, 1);
    float *dbw = fvec(O, 27, -1, 1), *dbg = fvec(O, 27, -1, 1);
    ref->linear_fwd(ref->ctx, yw, xr, wr, b, NR, I, O);
    ref->linear_bwd(ref->ctx, dxw, dww, dbw, dyr, xr, wr, NR, I, O);
    set_prec(fast, p);
    fast->linear_fwd(fast->ctx, yg, x, w, b, NR, I, O);
    fast->linear_bwd(fast->ctx, dxg, dwg, dbg, dy, x, w, NR, I, O);
    set_prec(fast, K22_PREC_FP32);
    char nm[64];
    snprintf(nm, sizeof nm, "%s linear y", k22_precision_name(p));
    cmp(nm, yg, yw, NR * O, 2e-6);
    snprintf(nm, sizeof nm, "%s linear dx", k22_precision_name(p));
    cmp(nm, dxg, dxw, NR * I, 2e-6);
    snprintf(nm, sizeof nm, "%s linear dw", k22_precision_name(p));
    cmp(nm, dwg, dww, O * I, 2e-6);
    /* the bias gradient is a plain fp32 sum of the unrounded dy: no GEMM */
    float *db32 = fvec(O, 27, -1, 1);
    ref->linear_bwd(ref->ctx, NULL, NULL, db32, dy, x, w, NR, I, O);
    snprintf(nm, sizeof nm, "%s linear db (fp32)", k22_precision_name(p));
    cmp(nm, dbg, db32, O, 2e-6);
    free(x), free(w), free(b), free(dy), free(xr), free(wr), free(dyr), free(yw), free(yg);
    free(dxw), free(dxg), free(dww), free(dwg), free(dbw), free(dbg), free(db32);
}

static void conv_case(k22_precision p, const char *name, k22_conv2d_desc d, size_t band_floats)
{
    int OH = k22_conv2d_out_h(&d), OW = k22_conv2d_out_w(&d);
    int64_t nx = (int64_t)d.B * d.C * d.H * d.W, nw = (int64_t)d.O * d.C * d.KH * d.KW;
    int64_t ny = (int64_t)d.B * d.O * OH * OW;
    float *x = fvec(nx, 31, -1, 1), *w = fvec(nw, 32, -0.5f, 0.5f), *b = fvec(d.O, 33, -1, 1);
    float *dy = fvec(ny, 34, -1, 1);
    float *xr = rounded(p, x, nx), *wr = rounded(p, w, nw), *dyr = rounded(p, dy, ny);
    float *yw = fvec(ny, 0, 0, 0), *yg = fvec(ny, 0, 0, 0);
    float *dxw = fvec(nx, 35, -1, 1), *dxg = fvec(nx, 35, -1, 1);
    float *dww = fvec(nw, 36, -1, 1), *dwg = fvec(nw, 36, -1, 1);
    ref->conv2d_fwd(ref->ctx, yw, xr, wr, b, &d);
    ref->conv2d_bwd(ref->ctx, dxw, dww, NULL, dyr, xr, wr, &d);
    k22_cpu_ctx *c = fast->ctx;
    size_t keep = c->conv_col_floats;
    if (band_floats) c->conv_col_floats = band_floats;
    set_prec(fast, p);
    fast->conv2d_fwd(fast->ctx, yg, x, w, b, &d);
    fast->conv2d_bwd(fast->ctx, dxg, dwg, NULL, dy, x, w, &d);
    /* x given as 16 bits (conv2d_fwd_x16 / _bwd_x16): the same bits, the GEMM rounds x anyway */
    float *yh = fvec(ny, 0, 0, 0), *dxh = fvec(nx, 35, -1, 1), *dwh = fvec(nw, 36, -1, 1);
    uint16_t *x16 = calloc((size_t)nx, sizeof *x16);
    k22_convert_from_f32(x16, p == K22_PREC_BF16 ? K22_DTYPE_BF16 : K22_DTYPE_F16, x, (size_t)nx);
    fast->conv2d_fwd_x16(fast->ctx, yh, x16, w, b, &d);
    fast->conv2d_bwd_x16(fast->ctx, dxh, dwh, NULL, dy, x16, w, &d);
    CHECK_MSG(!memcmp(yh, yg, (size_t)ny * 4) && !memcmp(dxh, dxg, (size_t)nx * 4) && !memcmp(dwh, dwg, (size_t)nw * 4),
              "%s conv %s: the 16-bit input entries give other bits than conv2d_fwd/bwd", k22_precision_name(p), name);
    free(yh), free(dxh), free(dwh), free(x16);
    set_prec(fast, K22_PREC_FP32);
    c->conv_col_floats = keep;
    char nm[96];
    snprintf(nm, sizeof nm, "%s conv %s y", k22_precision_name(p), name);
    cmp(nm, yg, yw, ny, 3e-6);
    snprintf(nm, sizeof nm, "%s conv %s dx", k22_precision_name(p), name);
    cmp(nm, dxg, dxw, nx, 3e-6);
    snprintf(nm, sizeof nm, "%s conv %s dw", k22_precision_name(p), name);
    cmp(nm, dwg, dww, nw, 3e-6); /* B*OH*OW up to 2*81 terms */
    free(x), free(w), free(b), free(dy), free(xr), free(wr), free(dyr), free(yw), free(yg);
    free(dxw), free(dxg), free(dww), free(dwg);
}

static void test_conv(k22_precision p)
{
    conv_case(p, "3x3 pad 1", (k22_conv2d_desc){2, 5, 9, 7, 6, 3, 3, 1, 1, 1, 1, 1, 1}, 0);
    conv_case(p, "3x3 stride 2 pad (0,1,0,1), bands of 1 row",
              (k22_conv2d_desc){2, 4, 9, 8, 3, 3, 3, 2, 2, 0, 1, 0, 1}, 4 * 9 * 4);
    conv_case(p, "1x1", (k22_conv2d_desc){2, 7, 5, 3, 4, 1, 1, 1, 1, 0, 0, 0, 0}, 0);
}

/* Attention rounds q, k, v and also P and dS inside: within a bf16-sized error of fp32 on the
 * rounded inputs, and not equal to it. */
static void test_attention(k22_precision p)
{
    k22_attn_desc d = {.B = 2, .NH = 2, .TQ = 13, .TK = 11, .D = 8, .DV = 6, .scale = 0.35f};
    int64_t nq = (int64_t)d.B * d.NH * d.TQ * d.D, nk = (int64_t)d.B * d.NH * d.TK * d.D;
    int64_t nv = (int64_t)d.B * d.NH * d.TK * d.DV, no = (int64_t)d.B * d.NH * d.TQ * d.DV;
    int64_t nl = (int64_t)d.B * d.NH * d.TQ;
    float *q = fvec(nq, 41, -2, 2), *k = fvec(nk, 42, -2, 2), *v = fvec(nv, 43, -1, 1);
    float *dout = fvec(no, 44, -1, 1);
    float *qr = rounded(p, q, nq), *kr = rounded(p, k, nk), *vr = rounded(p, v, nv), *dor = rounded(p, dout, no);
    float *ow = fvec(no, 0, 0, 0), *og = fvec(no, 0, 0, 0), *lw = fvec(nl, 0, 0, 0), *lg = fvec(nl, 0, 0, 0);
    float *dqw = fvec(nq, 0, 0, 0), *dqg = fvec(nq, 0, 0, 0), *dkw = fvec(nk, 0, 0, 0), *dkg = fvec(nk, 0, 0, 0);
    float *dvw = fvec(nv, 0, 0, 0), *dvg = fvec(nv, 0, 0, 0);
    fast->attention_fwd(fast->ctx, ow, lw, qr, kr, vr, &d);
    fast->attention_bwd(fast->ctx, dqw, dkw, dvw, dor, qr, kr, vr, ow, lw, &d);
    set_prec(fast, p);
    fast->attention_fwd(fast->ctx, og, lg, q, k, v, &d);
    fast->attention_bwd(fast->ctx, dqg, dkg, dvg, dout, q, k, v, og, lg, &d);
    /* q, k, v given as 16 bits (attention_fwd_x16 / _bwd_x16): the same bits, the attention
     * rounds them anyway */
    k22_dtype t = p == K22_PREC_BF16 ? K22_DTYPE_BF16 : K22_DTYPE_F16;
    uint16_t *h = calloc((size_t)(nq + nk + nv), sizeof *h);
    k22_convert_from_f32(h, t, q, (size_t)nq);
    k22_convert_from_f32(h + nq, t, k, (size_t)nk);
    k22_convert_from_f32(h + nq + nk, t, v, (size_t)nv);
    float *oh = fvec(no, 0, 0, 0), *lh = fvec(nl, 0, 0, 0), *g = fvec(nq + nk + nv, 0, 0, 0);
    fast->attention_fwd_x16(fast->ctx, oh, lh, h, h + nq, h + nq + nk, &d);
    fast->attention_bwd_x16(fast->ctx, g, g + nq, g + nq + nk, dout, h, h + nq, h + nq + nk, og, lg, &d);
    CHECK_MSG(!memcmp(oh, og, (size_t)no * 4) && !memcmp(lh, lg, (size_t)nl * 4) &&
                  !memcmp(g, dqg, (size_t)nq * 4) && !memcmp(g + nq, dkg, (size_t)nk * 4) &&
                  !memcmp(g + nq + nk, dvg, (size_t)nv * 4),
              "%s attention: the 16-bit q, k, v entries give other bits than attention_fwd/bwd",
              k22_precision_name(p));
    free(h), free(oh), free(lh), free(g);
    set_prec(fast, K22_PREC_FP32);
    /* bf16 keeps 8 bits: P rounded moves out by up to ~2^-9 per term; fp16 keeps 11 */
    double tol = p == K22_PREC_BF16 ? 2e-2 : 3e-3;
    const char *pn = k22_precision_name(p);
    char nm[64];
    snprintf(nm, sizeof nm, "%s attention out", pn);
    double e = cmp(nm, og, ow, no, tol);
    CHECK_MSG(e > 0, "%s: P is not rounded (equal to fp32 on rounded inputs)", nm);
    snprintf(nm, sizeof nm, "%s attention lse (fp32: scores' operands only)", pn);
    cmp(nm, lg, lw, nl, 2e-6);
    snprintf(nm, sizeof nm, "%s attention dq", pn);
    cmp(nm, dqg, dqw, nq, 2 * tol);
    snprintf(nm, sizeof nm, "%s attention dk", pn);
    cmp(nm, dkg, dkw, nk, 2 * tol);
    snprintf(nm, sizeof nm, "%s attention dv", pn);
    cmp(nm, dvg, dvw, nv, tol);
    free(q), free(k), free(v), free(dout), free(qr), free(kr), free(vr), free(dor), free(ow), free(og);
    free(lw), free(lg), free(dqw), free(dqg), free(dkw), free(dkg), free(dvw), free(dvg);
}

/* fp16 overflows to inf past 65504 (what the loss scaler must see); bf16 does not. */
static void test_fp16_overflow(void)
{
    float a[2] = {70000.0f, 65504.0f}, one = 1.0f, y[2];
    set_prec(fast, K22_PREC_FP16);
    fast->matmul(fast->ctx, 0, 0, 2, 1, 1, 1.0f, a, 0, &one, 0, 0.0f, y, 0, 1);
    CHECK_MSG(isinf(y[0]) && y[0] > 0 && y[1] == 65504.0f, "fp16: %g %g", y[0], y[1]);
    set_prec(fast, K22_PREC_BF16);
    fast->matmul(fast->ctx, 0, 0, 2, 1, 1, 1.0f, a, 0, &one, 0, 0.0f, y, 0, 1);
    CHECK_MSG(y[0] == 70144.0f && y[1] == 65536.0f, "bf16: %g %g", y[0], y[1]);
    set_prec(fast, K22_PREC_FP32);
    fast->matmul(fast->ctx, 0, 0, 2, 1, 1, 1.0f, a, 0, &one, 0, 0.0f, y, 0, 1);
    CHECK_MSG(y[0] == 70000.0f && y[1] == 65504.0f, "fp32 again: %g %g", y[0], y[1]);
}

int main(void)
{
    ref = k22_backend_cpu_new(1);
    fast = k22_backend_cpu_new(0);
    test_names();
    for (int p = K22_PREC_BF16; p <= K22_PREC_FP16; p++) {
        test_rounding_bits((k22_precision)p);
        test_matmul((k22_precision)p);
        test_linear((k22_precision)p);
        test_conv((k22_precision)p);
        test_attention((k22_precision)p);
    }
    test_fp16_overflow();
    k22_backend_free(ref);
    k22_backend_free(fast);
    return k22_test_finish("test_ops_precision");
}
