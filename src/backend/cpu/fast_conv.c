/* fast_conv.c: conv2d as im2col + sgemm per sample. Forward: y_b (O, P) = W (O, CKK) @ col
 * (CKK, P) with P = OH*OW; backward data: dcol = W^T @ dy_b, scattered back by col2im (+=);
 * backward filter: dW += dy_b @ col^T. A 1x1 stride-1 unpadded conv uses x as col directly.
 * The columns are built for a band of output rows at a time, so the scratch stays under
 * ctx->conv_col_floats (32 MiB) even for a 128-channel 768x768 MoVQ conv (whole: 2.7 GB).
 * The loops between GEMMs are deliberately serial: an OpenMP team spinning after its loop took
 * cores from OpenBLAS's threads (64-channel 3x3 conv forward: 13 GFLOP/s with OpenMP im2col,
 * about 2x that with serial im2col, on 2 cores), and the GEMMs dominate the work. */
#include <string.h>

#include "cpu_ops.h"


/* A band of output rows [oy0, oy0 + rows): np = rows * OW columns starting at p0 = oy0 * OW. */
typedef struct {
    int oy0, rows, np, p0;
} conv_band;

static int conv_is_pointwise(const k22_conv2d_desc *d)
{
    return d->KH == 1 && d->KW == 1 && d->SH == 1 && d->SW == 1 && !d->PT && !d->PB && !d->PL &&
           !d->PR;
}

/* Output rows per band: as many as fit the context's limit, at least one. */
static int conv_band_rows(const void *ctx, int CKK, int OH, int OW)
{
    int64_t per_row = (int64_t)CKK * OW;
    int64_t limit = (int64_t)((const k22_cpu_ctx *)ctx)->conv_col_floats;
    int64_t r = per_row > 0 ? limit / per_row : OH;
    return r < 1 ? 1 : (r > OH ? OH : (int)r);
}

static conv_band conv_band_at(int oy0, int band_rows, int OH, int OW)
{
    conv_band b = {oy0, OH - oy0 < band_rows ? OH - oy0 : band_rows, 0, oy0 * OW};
    b.np = b.rows * OW;
    return b;
}

/* col[(c*KH + ky)*KW + kx][(oy - oy0)*OW + ox] = x[c][oy*SH - PT + ky][ox*SW - PL + kx] or 0. */
static void conv_im2col(float *col, const float *xb, const k22_conv2d_desc *d, int OW, conv_band bd)
{
    int rows = d->C * d->KH * d->KW;
    for (int r = 0; r < rows; r++) {
        int kx = r % d->KW, ky = (r / d->KW) % d->KH, c = r / (d->KW * d->KH);
        const float *xc = xb + (int64_t)c * d->H * d->W;
        float *cr = col + (int64_t)r * bd.np;
        for (int oy = bd.oy0; oy < bd.oy0 + bd.rows; oy++) {
            int iy = oy * d->SH - d->PT + ky;
            float *dst = cr + (int64_t)(oy - bd.oy0) * OW;
            if (iy < 0 || iy >= d->H) {
                memset(dst, 0, sizeof(float) * (size_t)OW);
                continue;
            }
            for (int ox = 0; ox < OW; ox++) {
                int ix = ox * d->SW - d->PL + kx;
                dst[ox] = (ix >= 0 && ix < d->W) ? xc[(int64_t)iy * d->W + ix] : 0.0f;
            }
        }
    }
}

/* dx_b[c][iy][ix] += col[(c*KH + ky)*KW + kx][(oy - oy0)*OW + ox]: im2col's adjoint. */
static void conv_col2im(float *dxb, const float *col, const k22_conv2d_desc *d, int OW,
                        conv_band bd)
{
    for (int c = 0; c < d->C; c++) {
        float *dxc = dxb + (int64_t)c * d->H * d->W;
        for (int ky = 0; ky < d->KH; ky++)
            for (int kx = 0; kx < d->KW; kx++) {
                const float *cr = col + ((int64_t)(c * d->KH + ky) * d->KW + kx) * bd.np;
                for (int oy = bd.oy0; oy < bd.oy0 + bd.rows; oy++) {
                    int iy = oy * d->SH - d->PT + ky;
                    if (iy < 0 || iy >= d->H) continue;
                    const float *src = cr + (int64_t)(oy - bd.oy0) * OW;
                    for (int ox = 0; ox < OW; ox++) {
                        int ix = ox * d->SW - d->PL + kx;
                        if (ix >= 0 && ix < d->W) dxc[(int64_t)iy * d->W + ix] += src[ox];
                    }
                }
            }
    }
}

void k22_fast_conv2d_fwd(void *ctx, float *y, const float *x, const float *w, const float *bias,
                         const k22_conv2d_desc *d)
{
    int OH = k22_conv2d_out_h(d), OW = k22_conv2d_out_w(d), P = OH * OW;
    int CKK = d->C * d->KH * d->KW, direct = conv_is_pointwise(d);
    if (OH <= 0 || OW <= 0) return;
    int band_rows = direct ? OH : conv_band_rows(ctx, CKK, OH, OW);
    float *col = direct ? NULL : k22_cpu_scratch(ctx, (size_t)CKK * (size_t)band_rows * OW);
    for (int b = 0; b < d->B; b++) {
        const float *xb = x + (int64_t)b * d->C * d->H * d->W;
        float *yb = y + (int64_t)b * d->O * P;
        /* y starts as the bias (or 0) and the GEMM adds into it (beta 1). */
        for (int o = 0; o < d->O; o++)
            for (int p = 0; p < P; p++) yb[(int64_t)o * P + p] = bias ? bias[o] : 0.0f;
        for (int oy0 = 0; oy0 < OH; oy0 += band_rows) {
            conv_band bd = conv_band_at(oy0, band_rows, OH, OW);
            if (!direct) conv_im2col(col, xb, d, OW, bd);
            k22_cpu_sgemm(ctx, 0, 0, d->O, bd.np, CKK, 1.0f, w, CKK, direct ? xb + bd.p0 : col,
                          direct ? P : bd.np, 1.0f, yb + bd.p0, P);
        }
    }
}

/* One sample's dx and dw, band by band; dw's GEMM reads the columns before dx's overwrites. */
static void conv_bwd_sample(void *ctx, float *dxb, float *dw, const float *dyb, const float *xb,
                            const float *w, float *col, const k22_conv2d_desc *d, int OH, int OW,
                            int band_rows, int direct)
{
    int P = OH * OW, CKK = d->C * d->KH * d->KW;
    for (int oy0 = 0; oy0 < OH; oy0 += band_rows) {
        conv_band bd = conv_band_at(oy0, band_rows, OH, OW);
        if (dw) {
            if (!direct) conv_im2col(col, xb, d, OW, bd);
            k22_cpu_sgemm(ctx, 0, 1, d->O, CKK, bd.np, 1.0f, dyb + bd.p0, P,
                          direct ? xb + bd.p0 : col, direct ? P : bd.np, 1.0f, dw, CKK);
        }
        if (!dxb) continue;
        if (direct) {
            k22_cpu_sgemm(ctx, 1, 0, CKK, bd.np, d->O, 1.0f, w, CKK, dyb + bd.p0, P, 1.0f,
                          dxb + bd.p0, P);
        } else {
            k22_cpu_sgemm(ctx, 1, 0, CKK, bd.np, d->O, 1.0f, w, CKK, dyb + bd.p0, P, 0.0f, col,
                          bd.np);
            conv_col2im(dxb, col, d, OW, bd);
        }
    }
}

void k22_fast_conv2d_bwd(void *ctx, float *dx, float *dw, float *dbias, const float *dy,
                         const float *x, const float *w, const k22_conv2d_desc *d)
{
    int OH = k22_conv2d_out_h(d), OW = k22_conv2d_out_w(d), P = OH * OW;
    int CKK = d->C * d->KH * d->KW, direct = conv_is_pointwise(d);
    if (OH <= 0 || OW <= 0) return;
    int band_rows = direct ? OH : conv_band_rows(ctx, CKK, OH, OW);
    float *col = direct ? NULL : k22_cpu_scratch(ctx, (size_t)CKK * (size_t)band_rows * OW);
    for (int b = 0; (dx || dw) && b < d->B; b++)
        conv_bwd_sample(ctx, dx ? dx + (int64_t)b * d->C * d->H * d->W : NULL, dw,
                        dy + (int64_t)b * d->O * P, x + (int64_t)b * d->C * d->H * d->W, w, col, d,
                        OH, OW, band_rows, direct);
    for (int o = 0; dbias && o < d->O; o++) {
        double s = 0;
        for (int b = 0; b < d->B; b++) {
            const float *r = dy + ((int64_t)b * d->O + o) * P;
            float sb = 0;
            for (int p = 0; p < P; p++) sb += r[p];
            s += sb;
        }
        dbias[o] += (float)s;
    }
}
