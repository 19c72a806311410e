/* fast_matmul.c: matmul and linear on OpenBLAS sgemm. sgemm is called outside OpenMP regions
 * (the pthread OpenBLAS threads itself; calling a single-threaded OpenBLAS from every OpenMP
 * thread was not faster here). The bias loops stay serial for the reason fast_conv.c gives. */
#include <string.h>

#include "cpu_ops.h"

#include <cblas.h>
#undef I /* complex.h, pulled in by cblas.h, defines I; k22 uses it as a size */

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
        cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                    M, N, K, alpha, A + b * sA, ta ? M : K, Bm + b * sB, tb ? K : N, beta, c, N);
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
