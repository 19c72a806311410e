/* fast_pool_affine.c: OpenMP versions of 2x2 average pooling and the per-(sample, channel)
 * affine (one plane per iteration; planes are independent, so no reduction crosses threads). */
#include "cpu_ops.h"

void k22_fast_avgpool2x_fwd(void *ctx, float *y, const float *x, int B, int C, int H, int W)
{
    int OH = H / 2, OW = W / 2;
    int64_t planes = (int64_t)B * C;
#pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < planes; p++)
        for (int i = 0; i < OH; i++) {
            const float *r0 = x + (p * H + 2 * i) * W, *r1 = r0 + W;
            float *yo = y + (p * OH + i) * OW;
            for (int j = 0; j < OW; j++)
                yo[j] = ((r0[2 * j] + r0[2 * j + 1]) + (r1[2 * j] + r1[2 * j + 1])) * 0.25f;
        }
}

void k22_fast_avgpool2x_bwd(void *ctx, float *dx, const float *dy, int B, int C, int H, int W)
{
    int OH = H / 2, OW = W / 2;
    int64_t planes = (int64_t)B * C;
#pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < planes; p++)
        for (int i = 0; i < OH; i++) {
            float *r0 = dx + (p * H + 2 * i) * W, *r1 = r0 + W;
            const float *g = dy + (p * OH + i) * OW;
            for (int j = 0; j < OW; j++) {
                float v = g[j] * 0.25f;
                r0[2 * j] += v;
                r0[2 * j + 1] += v;
                r1[2 * j] += v;
                r1[2 * j + 1] += v;
            }
        }
}

void k22_fast_chan_affine_fwd(void *ctx, float *y, const float *x, const float *scale,
                              const float *shift, float scale_offset, int B, int C, int64_t S)
{
    int64_t planes = (int64_t)B * C;
#pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < planes; p++) {
        float a = (scale ? scale[p] : 1.0f) + scale_offset, b = shift ? shift[p] : 0.0f;
        const float *xp = x + p * S;
        float *yp = y + p * S;
        for (int64_t s = 0; s < S; s++) yp[s] = xp[s] * a + b;
    }
}

void k22_fast_chan_affine_bwd(void *ctx, float *dx, float *dscale, float *dshift, const float *dy,
                              const float *x, const float *scale, float scale_offset, int B, int C,
                              int64_t S)
{
    int64_t planes = (int64_t)B * C;
#pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < planes; p++) {
        float a = (scale ? scale[p] : 1.0f) + scale_offset;
        const float *g = dy + p * S, *xp = x + p * S;
        float ds = 0.0f, db = 0.0f;
        if (dx)
            for (int64_t s = 0; s < S; s++) dx[p * S + s] += g[s] * a;
        if (dscale)
            for (int64_t s = 0; s < S; s++) ds += g[s] * xp[s];
        if (dshift)
            for (int64_t s = 0; s < S; s++) db += g[s];
        if (dscale) dscale[p] += ds;
        if (dshift) dshift[p] += db;
    }
}
