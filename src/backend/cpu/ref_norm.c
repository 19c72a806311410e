/* ref_norm.c: plain-loop group norm and layer norm. Both normalize contiguous segments (a group
 * of channels of one sample, or one row), so they share the segment helpers below; statistics
 * and every reduction are in double. Variance is biased, rstd = 1/sqrt(var + eps), as torch. */
#include <math.h>
#include <stdlib.h>

#include "cpu_ops.h"

/* One segment x[0..len) whose element e belongs to channel c0 + e/S. Writes y, *mean, *rstd. */
static void ref_norm_seg_fwd(float *y, float *mean, float *rstd, const float *x, int64_t len,
                             int c0, int64_t S, const float *gamma, const float *beta, float eps)
{
    double s = 0, ss = 0;
    for (int64_t e = 0; e < len; e++) s += x[e];
    double mu = s / (double)len;
    for (int64_t e = 0; e < len; e++) ss += (x[e] - mu) * (x[e] - mu);
    double r = 1.0 / sqrt(ss / (double)len + eps);
    for (int64_t e = 0; e < len; e++) {
        int c = c0 + (int)(e / S);
        double v = (x[e] - mu) * r;
        if (gamma) v *= gamma[c];
        if (beta) v += beta[c];
        y[e] = (float)v;
    }
    *mean = (float)mu;
    *rstd = (float)r;
}

/* dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), dxhat = dy * gamma;
 * dg, dbt (double, per channel) accumulate dgamma and dbeta. */
static void ref_norm_seg_bwd(float *dx, double *dg, double *dbt, const float *dy, const float *x,
                             int64_t len, int c0, int64_t S, float mean, float rstd,
                             const float *gamma)
{
    double a = 0, b = 0;
    for (int64_t e = 0; e < len; e++) {
        int c = c0 + (int)(e / S);
        double xh = ((double)x[e] - mean) * rstd;
        double dxh = (double)dy[e] * (gamma ? gamma[c] : 1.0f);
        a += dxh;
        b += dxh * xh;
        if (dg) dg[c] += (double)dy[e] * xh;
        if (dbt) dbt[c] += dy[e];
    }
    if (!dx) return;
    a /= (double)len;
    b /= (double)len;
    for (int64_t e = 0; e < len; e++) {
        int c = c0 + (int)(e / S);
        double xh = ((double)x[e] - mean) * rstd;
        double dxh = (double)dy[e] * (gamma ? gamma[c] : 1.0f);
        dx[e] += (float)(rstd * (dxh - a - xh * b));
    }
}

static void ref_norm_flush(float *dst, const double *src, int C)
{
    if (!dst) return;
    for (int c = 0; c < C; c++) dst[c] += (float)src[c];
}

void k22_ref_group_norm_fwd(void *ctx, float *y, float *mean, float *rstd, const float *x,
                            const float *gamma, const float *beta, int B, int C, int S, int G,
                            float eps)
{
    int Cg = C / G;
    int64_t len = (int64_t)Cg * S;
    for (int b = 0; b < B; b++)
        for (int g = 0; g < G; g++) {
            int64_t off = ((int64_t)b * C + (int64_t)g * Cg) * S;
            ref_norm_seg_fwd(y + off, &mean[b * G + g], &rstd[b * G + g], x + off, len, g * Cg, S,
                             gamma, beta, eps);
        }
}

void k22_ref_group_norm_bwd(void *ctx, float *dx, float *dgamma, float *dbeta, const float *dy,
                            const float *x, const float *mean, const float *rstd,
                            const float *gamma, int B, int C, int S, int G)
{
    int Cg = C / G;
    int64_t len = (int64_t)Cg * S;
    double *dg = calloc((size_t)C, sizeof(double)), *dbt = calloc((size_t)C, sizeof(double));
    K22_REQUIRE(dg && dbt);
    for (int b = 0; b < B; b++)
        for (int g = 0; g < G; g++) {
            int64_t off = ((int64_t)b * C + (int64_t)g * Cg) * S;
            ref_norm_seg_bwd(dx ? dx + off : NULL, dgamma ? dg : NULL, dbeta ? dbt : NULL, dy + off,
                             x + off, len, g * Cg, S, mean[b * G + g], rstd[b * G + g], gamma);
        }
    ref_norm_flush(dgamma, dg, C);
    ref_norm_flush(dbeta, dbt, C);
    free(dg);
    free(dbt);
}

void k22_ref_layer_norm_fwd(void *ctx, float *y, float *mean, float *rstd, const float *x,
                            const float *gamma, const float *beta, int N, int C, float eps)
{
    for (int n = 0; n < N; n++)
        ref_norm_seg_fwd(y + (int64_t)n * C, &mean[n], &rstd[n], x + (int64_t)n * C, C, 0, 1, gamma,
                         beta, eps);
}

void k22_ref_layer_norm_bwd(void *ctx, float *dx, float *dgamma, float *dbeta, const float *dy,
                            const float *x, const float *mean, const float *rstd,
                            const float *gamma, int N, int C)
{
    double *dg = calloc((size_t)C, sizeof(double)), *dbt = calloc((size_t)C, sizeof(double));
    K22_REQUIRE(dg && dbt);
    for (int n = 0; n < N; n++) {
        int64_t off = (int64_t)n * C;
        ref_norm_seg_bwd(dx ? dx + off : NULL, dgamma ? dg : NULL, dbeta ? dbt : NULL, dy + off,
                         x + off, C, 0, 1, mean[n], rstd[n], gamma);
    }
    ref_norm_flush(dgamma, dg, C);
    ref_norm_flush(dbeta, dbt, C);
    free(dg);
    free(dbt);
}
