/* fast_elementwise.c: OpenMP versions of add, mul, scale and nearest 2x upsample with their
 * backward passes (concat and permute share the reference: pure copies). */
#include "cpu_ops.h"

void k22_fast_add(void *ctx, float *y, const float *a, const float *b, int64_t n)
{
#pragma omp parallel for
    for (int64_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}

void k22_fast_mul(void *ctx, float *y, const float *a, const float *b, int64_t n)
{
#pragma omp parallel for
    for (int64_t i = 0; i < n; i++) y[i] = a[i] * b[i];
}

void k22_fast_scale(void *ctx, float *y, const float *a, float s, int64_t n)
{
#pragma omp parallel for
    for (int64_t i = 0; i < n; i++) y[i] = s * a[i];
}

void k22_fast_add_bwd(void *ctx, float *da, float *db, const float *dy, int64_t n)
{
    if (da) {
#pragma omp parallel for
        for (int64_t i = 0; i < n; i++) da[i] += dy[i];
    }
    if (db) {
#pragma omp parallel for
        for (int64_t i = 0; i < n; i++) db[i] += dy[i];
    }
}

void k22_fast_mul_bwd(void *ctx, float *da, float *db, const float *dy, const float *a,
                      const float *b, int64_t n)
{
    if (da) {
#pragma omp parallel for
        for (int64_t i = 0; i < n; i++) da[i] += dy[i] * b[i];
    }
    if (db) {
#pragma omp parallel for
        for (int64_t i = 0; i < n; i++) db[i] += dy[i] * a[i];
    }
}

void k22_fast_scale_bwd(void *ctx, float *da, const float *dy, float s, int64_t n)
{
#pragma omp parallel for
    for (int64_t i = 0; i < n; i++) da[i] += s * dy[i];
}

void k22_fast_upsample2x_fwd(void *ctx, float *y, const float *x, int B, int C, int H, int W)
{
    int64_t rows = (int64_t)B * C * H;
#pragma omp parallel for
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * W;
        float *y0 = y + r * 4 * W, *y1 = y0 + 2 * W;
        for (int j = 0; j < W; j++) y0[2 * j] = y0[2 * j + 1] = y1[2 * j] = y1[2 * j + 1] = xr[j];
    }
}

void k22_fast_upsample2x_bwd(void *ctx, float *dx, const float *dy, int B, int C, int H, int W)
{
    int64_t rows = (int64_t)B * C * H;
#pragma omp parallel for
    for (int64_t r = 0; r < rows; r++) {
        const float *d0 = dy + r * 4 * W, *d1 = d0 + 2 * W;
        for (int j = 0; j < W; j++)
            dx[r * W + j] += (d0[2 * j] + d0[2 * j + 1]) + (d1[2 * j] + d1[2 * j + 1]);
    }
}
