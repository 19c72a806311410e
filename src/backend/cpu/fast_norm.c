/* fast_norm.c: group norm and layer norm with OpenMP over segments (one group of one sample, or
 * one row). Segment statistics are summed in double (cheap next to the memory traffic, and it
 * keeps long segments such as 32 channels x 96x96 accurate); per-channel gamma/beta gradients
 * are reduced over the batch in a second parallel pass over channels, so no atomics. */
#include <math.h>

#include "cpu_ops.h"

static void fast_seg_stats(const float *x, int64_t len, float eps, float *mean, float *rstd)
{
    double s = 0, ss = 0;
    for (int64_t e = 0; e < len; e++) s += x[e];
    double mu = s / (double)len;
    for (int64_t e = 0; e < len; e++) {
        double t = x[e] - mu;
        ss += t * t;
    }
    *mean = (float)mu;
    *rstd = (float)(1.0 / sqrt(ss / (double)len + eps));
}

/* dx for one segment of nc channels of S values each, channels c0.. of gamma. */
static void fast_seg_dx(float *dx, const float *dy, const float *x, int nc, int64_t S, int c0,
                        float mean, float rstd, const float *gamma)
{
    double a = 0, b = 0;
    for (int cc = 0; cc < nc; cc++) {
        float g = gamma ? gamma[c0 + cc] : 1.0f, pa = 0, pb = 0;
        const float *dyc = dy + cc * S, *xc = x + cc * S;
        for (int64_t s = 0; s < S; s++) {
            float dxh = dyc[s] * g;
            pa += dxh;
            pb += dxh * ((xc[s] - mean) * rstd);
        }
        a += pa;
        b += pb;
    }
    int64_t len = (int64_t)nc * S;
    float am = (float)(a / (double)len), bm = (float)(b / (double)len);
    for (int cc = 0; cc < nc; cc++) {
        float g = gamma ? gamma[c0 + cc] : 1.0f;
        const float *dyc = dy + cc * S, *xc = x + cc * S;
        float *dxc = dx + cc * S;
        for (int64_t s = 0; s < S; s++)
            dxc[s] += rstd * (dyc[s] * g - am - ((xc[s] - mean) * rstd) * bm);
    }
}

void k22_fast_group_norm_fwd(void *ctx, float *y, float *mean, float *rstd, const float *x,
                             const float *gamma, const float *beta, int B, int C, int S, int G,
                             float eps)
{
    int Cg = C / G;
#pragma omp parallel for
    for (int bg = 0; bg < B * G; bg++) {
        int b = bg / G, g = bg % G;
        int64_t off = ((int64_t)b * C + (int64_t)g * Cg) * S;
        float mu, r;
        fast_seg_stats(x + off, (int64_t)Cg * S, eps, &mu, &r);
        mean[bg] = mu;
        rstd[bg] = r;
        for (int cc = 0; cc < Cg; cc++) {
            int c = g * Cg + cc;
            float ga = gamma ? gamma[c] : 1.0f, be = beta ? beta[c] : 0.0f;
            const float *xc = x + off + (int64_t)cc * S;
            float *yc = y + off + (int64_t)cc * S;
            for (int s = 0; s < S; s++) yc[s] = (xc[s] - mu) * r * ga + be;
        }
    }
}

void k22_fast_group_norm_bwd(void *ctx, float *dx, float *dgamma, float *dbeta, const float *dy,
                             const float *x, const float *mean, const float *rstd,
                             const float *gamma, int B, int C, int S, int G)
{
    int Cg = C / G;
    if (dx) {
#pragma omp parallel for
        for (int bg = 0; bg < B * G; bg++) {
            int b = bg / G, g = bg % G;
            int64_t off = ((int64_t)b * C + (int64_t)g * Cg) * S;
            fast_seg_dx(dx + off, dy + off, x + off, Cg, S, g * Cg, mean[bg], rstd[bg], gamma);
        }
    }
    if (!dgamma && !dbeta) return;
#pragma omp parallel for
    for (int c = 0; c < C; c++) {
        double sg = 0, sb = 0;
        for (int b = 0; b < B; b++) {
            int bg = b * G + c / Cg;
            const float *xc = x + ((int64_t)b * C + c) * S, *dyc = dy + ((int64_t)b * C + c) * S;
            float pg = 0, pb = 0;
            for (int s = 0; s < S; s++) {
                pg += dyc[s] * ((xc[s] - mean[bg]) * rstd[bg]);
                pb += dyc[s];
            }
            sg += pg;
            sb += pb;
        }
        if (dgamma) dgamma[c] += (float)sg;
        if (dbeta) dbeta[c] += (float)sb;
    }
}

void k22_fast_layer_norm_fwd(void *ctx, float *y, float *mean, float *rstd, const float *x,
                             const float *gamma, const float *beta, int N, int C, float eps)
{
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const float *xr = x + (int64_t)n * C;
        float *yr = y + (int64_t)n * C;
        float mu, r;
        fast_seg_stats(xr, C, eps, &mu, &r);
        mean[n] = mu;
        rstd[n] = r;
        for (int c = 0; c < C; c++)
            yr[c] = (xr[c] - mu) * r * (gamma ? gamma[c] : 1.0f) + (beta ? beta[c] : 0.0f);
    }
}

enum { LN_CBLOCK = 64 };

void k22_fast_layer_norm_bwd(void *ctx, float *dx, float *dgamma, float *dbeta, const float *dy,
                             const float *x, const float *mean, const float *rstd,
                             const float *gamma, int N, int C)
{
    if (dx) {
#pragma omp parallel for
        for (int n = 0; n < N; n++)
            fast_seg_dx(dx + (int64_t)n * C, dy + (int64_t)n * C, x + (int64_t)n * C, C, 1, 0,
                        mean[n], rstd[n], gamma);
    }
    if (!dgamma && !dbeta) return;
    int nblk = (C + LN_CBLOCK - 1) / LN_CBLOCK;
#pragma omp parallel for
    for (int blk = 0; blk < nblk; blk++) {
        int c0 = blk * LN_CBLOCK, c1 = c0 + LN_CBLOCK < C ? c0 + LN_CBLOCK : C;
        double sg[LN_CBLOCK] = {0}, sb[LN_CBLOCK] = {0};
        for (int n = 0; n < N; n++) {
            const float *xr = x + (int64_t)n * C, *dyr = dy + (int64_t)n * C;
            for (int c = c0; c < c1; c++) {
                sg[c - c0] += dyr[c] * ((xr[c] - mean[n]) * rstd[n]);
                sb[c - c0] += dyr[c];
            }
        }
        for (int c = c0; c < c1; c++) {
            if (dgamma) dgamma[c] += (float)sg[c - c0];
            if (dbeta) dbeta[c] += (float)sb[c - c0];
        }
    }
}
