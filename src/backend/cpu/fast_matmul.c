/* fast_matmul.c: matmul and linear on OpenBLAS sgemm, and the one sgemm call every fast op
 * uses (k22_cpu_sgemm: it rounds the operands under bf16/fp16, ops.h). sgemm is called outside OpenMP regions
 * (the pthread OpenBLAS threads itself; calling a single-threaded OpenBLAS from every OpenMP
 * thread was not faster here). The bias loops stay serial for the reason fast_conv.c gives. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_ops.h"

#include <cblas.h>
#undef I /* complex.h, pulled in by cblas.h, defines I; k22 uses it as a size */

/* Grows *buf to n floats (grow-only, as the scratch). */
static float *prec_buf(float **buf, size_t *have, size_t n)
{
    if (n <= *have) return *buf;
    size_t bytes;
    if (k22_mul_size(n, sizeof(float), &bytes)) K22_FATAL("cpu operand copy of %zu floats overflows", n);
    free(*buf);
    *buf = k22_xmalloc(bytes);
    *have = n;
    return *buf;
}

/* x rounded to bf16 or fp16 (to nearest even) and back: k22_precision_round's values, with the
 * common cases in a few integer operations (the emulation rounds every GEMM operand). */
static inline float round_operand(k22_precision p, float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    uint32_t ax = u & 0x7fffffffu;
    if (ax > 0x7f800000u) return x; /* NaN stays NaN */
    if (p == K22_PREC_BF16) {
        u += 0x7fffu + ((u >> 16) & 1); /* overflow carries into inf, as it should */
        u &= 0xffff0000u;
    } else {
        if (ax < 0x38800000u) return k22_precision_round(p, x); /* fp16 subnormal or 0: rare */
        if (ax >= 0x477ff000u) return (u >> 31) ? -INFINITY : INFINITY; /* >= 65520: inf */
        u += 0xfffu + ((u >> 13) & 1);
        u &= 0xffffe000u;
    }
    memcpy(&x, &u, 4);
    return x;
}

/* rows x cols of src (leading dimension ld) into a dense copy, each value rounded to p. */
static const float *prec_copy(k22_precision p, float **buf, size_t *have, const float *src,
                              int rows, int cols, int ld)
{
    float *dst = prec_buf(buf, have, (size_t)rows * (size_t)cols);
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++)
            dst[(int64_t)r * cols + c] = round_operand(p, src[(int64_t)r * ld + c]);
    return dst;
}

void k22_cpu_sgemm(void *ctx, int ta, int tb, int M, int N, int K, float alpha, const float *A,
                   int lda, const float *Bm, int ldb, float beta, float *C, int ldc)
{
    k22_cpu_ctx *c = ctx;
    if (c->precision != K22_PREC_FP32 && M > 0 && N > 0 && K > 0) {
        k22_precision p = (k22_precision)c->precision;
        /* A is stored (M, K), or (K, M) when ta; B (K, N), or (N, K) when tb. */
        A = prec_copy(p, &c->prec_a, &c->prec_a_floats, A, ta ? K : M, ta ? M : K, lda);
        Bm = prec_copy(p, &c->prec_b, &c->prec_b_floats, Bm, tb ? N : K, tb ? K : N, ldb);
        lda = ta ? M : K;
        ldb = tb ? K : N;
    }
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M,
                N, K, alpha, A, lda, Bm, ldb, beta, C, ldc);
}

void k22_fast_matmul(void *ctx, int ta, int tb, int M, int N, int K, float alpha, const float *A,
                     int64_t sA, const float *Bm, int64_t sB, float beta, float *C, int64_t sC,
                     int batch)
{
    if (M <= 0 || N <= 0) return;
    for (int b = 0; b < batch; b++) {
        float *c = C + b * sC;
        /* beta == 0 must ignore NaN in C; zero it first rather than trust the BLAS. */
        if (beta == 0.0f) memset(c, 0, sizeof(float) * (size_t)M * (size_t)N);
        if (K <= 0) {
            if (beta != 0.0f && beta != 1.0f)
                for (int64_t e = 0; e < (int64_t)M * N; e++) c[e] *= beta;
            continue;
        }
        k22_cpu_sgemm(ctx, ta, tb, M, N, K, alpha, A + b * sA, ta ? M : K, Bm + b * sB, tb ? K : N,
                      beta, c, N);
    }
}

void k22_fast_linear_fwd(void *ctx, float *y, const float *x, const float *w, const float *b, int N,
                         int I, int O)
{
    for (int n = 0; b && n < N; n++) memcpy(y + (int64_t)n * O, b, sizeof(float) * (size_t)O);
    k22_fast_matmul(ctx, 0, 1, N, O, I, 1.0f, x, 0, w, 0, b ? 1.0f : 0.0f, y, 0, 1);
}

void k22_fast_linear_bwd(void *ctx, float *dx, float *dw, float *db, const float *dy,
                         const float *x, const float *w, int N, int I, int O)
{
    if (dx) k22_fast_matmul(ctx, 0, 0, N, I, O, 1.0f, dy, 0, w, 0, 1.0f, dx, 0, 1);
    if (dw) k22_fast_matmul(ctx, 1, 0, O, I, N, 1.0f, dy, 0, x, 0, 1.0f, dw, 0, 1);
    if (db) { /* row by row: contiguous reads */
        for (int n = 0; n < N; n++)
            for (int o = 0; o < O; o++) db[o] += dy[(int64_t)n * O + o];
    }
}
