/* ref_conv.c: plain-loop conv2d forward and backward with asymmetric padding and stride; every
 * output element is one sum in double (the backward data pass gathers rather than scatters). */
#include "cpu_ops.h"

/* y[b,o,oy,ox] = bias[o] + sum_{c,ky,kx} x[b,c,oy*SH-PT+ky, ox*SW-PL+kx] w[o,c,ky,kx]. */
void k22_ref_conv2d_fwd(void *ctx, float *y, const float *x, const float *w, const float *bias,
                        const k22_conv2d_desc *d)
{
    int OH = k22_conv2d_out_h(d), OW = k22_conv2d_out_w(d);
    for (int b = 0; b < d->B; b++)
        for (int o = 0; o < d->O; o++)
            for (int oy = 0; oy < OH; oy++)
                for (int ox = 0; ox < OW; ox++) {
                    double s = bias ? bias[o] : 0.0;
                    for (int c = 0; c < d->C; c++)
                        for (int ky = 0; ky < d->KH; ky++) {
                            int iy = oy * d->SH - d->PT + ky;
                            if (iy < 0 || iy >= d->H) continue;
                            for (int kx = 0; kx < d->KW; kx++) {
                                int ix = ox * d->SW - d->PL + kx;
                                if (ix < 0 || ix >= d->W) continue;
                                s += (double)x[(((int64_t)b * d->C + c) * d->H + iy) * d->W + ix] *
                                     w[(((int64_t)o * d->C + c) * d->KH + ky) * d->KW + kx];
                            }
                        }
                    y[(((int64_t)b * d->O + o) * OH + oy) * OW + ox] = (float)s;
                }
}

/* dx[b,c,iy,ix] = sum over (o,ky,kx) whose output position (iy+PT-ky)/SH is integral and in range.
 */
static void ref_conv2d_bwd_data(float *dx, const float *dy, const float *w,
                                const k22_conv2d_desc *d, int OH, int OW)
{
    for (int b = 0; b < d->B; b++)
        for (int c = 0; c < d->C; c++)
            for (int iy = 0; iy < d->H; iy++)
                for (int ix = 0; ix < d->W; ix++) {
                    double s = 0;
                    for (int o = 0; o < d->O; o++)
                        for (int ky = 0; ky < d->KH; ky++) {
                            int ty = iy + d->PT - ky;
                            if (ty < 0 || ty % d->SH) continue;
                            int oy = ty / d->SH;
                            if (oy >= OH) continue;
                            for (int kx = 0; kx < d->KW; kx++) {
                                int tx = ix + d->PL - kx;
                                if (tx < 0 || tx % d->SW) continue;
                                int ox = tx / d->SW;
                                if (ox >= OW) continue;
                                s += (double)dy[(((int64_t)b * d->O + o) * OH + oy) * OW + ox] *
                                     w[(((int64_t)o * d->C + c) * d->KH + ky) * d->KW + kx];
                            }
                        }
                    dx[(((int64_t)b * d->C + c) * d->H + iy) * d->W + ix] += (float)s;
                }
}

static void ref_conv2d_bwd_filter(float *dw, const float *dy, const float *x,
                                  const k22_conv2d_desc *d, int OH, int OW)
{
    for (int o = 0; o < d->O; o++)
        for (int c = 0; c < d->C; c++)
            for (int ky = 0; ky < d->KH; ky++)
                for (int kx = 0; kx < d->KW; kx++) {
                    double s = 0;
                    for (int b = 0; b < d->B; b++)
                        for (int oy = 0; oy < OH; oy++) {
                            int iy = oy * d->SH - d->PT + ky;
                            if (iy < 0 || iy >= d->H) continue;
                            for (int ox = 0; ox < OW; ox++) {
                                int ix = ox * d->SW - d->PL + kx;
                                if (ix < 0 || ix >= d->W) continue;
                                s += (double)dy[(((int64_t)b * d->O + o) * OH + oy) * OW + ox] *
                                     x[(((int64_t)b * d->C + c) * d->H + iy) * d->W + ix];
                            }
                        }
                    dw[(((int64_t)o * d->C + c) * d->KH + ky) * d->KW + kx] += (float)s;
                }
}

void k22_ref_conv2d_bwd(void *ctx, float *dx, float *dw, float *dbias, const float *dy,
                        const float *x, const float *w, const k22_conv2d_desc *d)
{
    int OH = k22_conv2d_out_h(d), OW = k22_conv2d_out_w(d);
    if (dx) ref_conv2d_bwd_data(dx, dy, w, d, OH, OW);
    if (dw) ref_conv2d_bwd_filter(dw, dy, x, d, OH, OW);
    if (dbias)
        for (int o = 0; o < d->O; o++) {
            double s = 0;
            for (int b = 0; b < d->B; b++)
                for (int64_t p = 0; p < (int64_t)OH * OW; p++)
                    s += dy[((int64_t)b * d->O + o) * OH * OW + p];
            dbias[o] += (float)s;
        }
}
