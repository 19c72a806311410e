/* ref_pool_affine.c: plain-loop 2x2 average pooling and per-(sample, channel) affine with their
 * backward passes (the oracle the fast and CUDA versions are tested against; sums in double). */
#include "cpu_ops.h"

void k22_ref_avgpool2x_fwd(void *ctx, float *y, const float *x, int B, int C, int H, int W)
{
    int OH = H / 2, OW = W / 2;
    int64_t planes = (int64_t)B * C;
    for (int64_t p = 0; p < planes; p++)
        for (int i = 0; i < OH; i++)
            for (int j = 0; j < OW; j++) {
                const float *x0 = x + (p * H + 2 * i) * W + 2 * j;
                double s = (double)x0[0] + x0[1] + x0[W] + x0[W + 1];
                y[(p * OH + i) * OW + j] = (float)(s * 0.25);
            }
}

void k22_ref_avgpool2x_bwd(void *ctx, float *dx, const float *dy, int B, int C, int H, int W)
{
    int OH = H / 2, OW = W / 2;
    int64_t planes = (int64_t)B * C;
    for (int64_t p = 0; p < planes; p++)
        for (int i = 0; i < OH; i++)
            for (int j = 0; j < OW; j++) {
                float g = dy[(p * OH + i) * OW + j] * 0.25f;
                float *d0 = dx + (p * H + 2 * i) * W + 2 * j;
                d0[0] += g;
                d0[1] += g;
                d0[W] += g;
                d0[W + 1] += g;
            }
}

void k22_ref_chan_affine_fwd(void *ctx, float *y, const float *x, const float *scale,
                             const float *shift, float scale_offset, int B, int C, int64_t S)
{
    for (int64_t p = 0; p < (int64_t)B * C; p++) {
        float a = (scale ? scale[p] : 1.0f) + scale_offset, b = shift ? shift[p] : 0.0f;
        for (int64_t s = 0; s < S; s++) y[p * S + s] = x[p * S + s] * a + b;
    }
}

void k22_ref_chan_affine_bwd(void *ctx, float *dx, float *dscale, float *dshift, const float *dy,
                             const float *x, const float *scale, float scale_offset, int B, int C,
                             int64_t S)
{
    for (int64_t p = 0; p < (int64_t)B * C; p++) {
        float a = (scale ? scale[p] : 1.0f) + scale_offset;
        double ds = 0, db = 0;
        for (int64_t s = 0; s < S; s++) {
            float g = dy[p * S + s];
            if (dx) dx[p * S + s] += g * a;
            if (dscale) ds += (double)g * x[p * S + s];
            db += g;
        }
        if (dscale) dscale[p] += (float)ds;
        if (dshift) dshift[p] += (float)db;
    }
}
