/* ref_norm_act.c: plain-loop fused group norm + per-(sample, channel) affine + activation
 * (ops.h group_norm_act). The forward repeats, expression for expression, what ref_norm.c,
 * ref_pool_affine.c and ref_act.c compute one after the other (statistics in double, the norm
 * rounded to float, the affine in float, SiLU in double), so its y is bit-identical to that
 * chain. The backward is the oracle for the fast and CUDA versions: every value in double. */
#include <math.h>
#include <stdlib.h>

#include "cpu_ops.h"

static void ref_na_check(int act)
{
    if (act != K22_ACT_SILU && act != K22_ACT_NONE)
        K22_FATAL("group_norm_act: activation %d is not SiLU or none", act);
}

/* act(u) as ref_act.c evaluates it, rounded to float. */
static float ref_na_act(int act, float u)
{
    if (act == K22_ACT_NONE) return u;
    double v = u;
    return (float)(v * (1.0 / (1.0 + exp(-v))));
}

/* d act / du at u, in double. */
static double ref_na_slope(int act, double u)
{
    if (act == K22_ACT_NONE) return 1.0;
    double s = 1.0 / (1.0 + exp(-u));
    return s * (1.0 + u * (1.0 - s));
}

/* The affine factor and offset of plane (b, c), in float as chan_affine forms them. */
static float ref_na_factor(const float *scale, int64_t at, float off)
{
    return (scale ? scale[at] : 1.0f) + off;
}

void k22_ref_group_norm_act_fwd(void *ctx, int act, float *y, float *mean, float *rstd,
                                const float *x, const float *gamma, const float *beta,
                                const float *scale, const float *shift, int64_t ss_ld,
                                float scale_offset, int B, int C, int S, int G, float eps)
{
    ref_na_check(act);
    int Cg = C / G;
    int64_t len = (int64_t)Cg * S;
    for (int b = 0; b < B; b++)
        for (int g = 0; g < G; g++) {
            int64_t off = ((int64_t)b * C + (int64_t)g * Cg) * S;
            const float *xs = x + off;
            double s = 0, ss = 0;
            for (int64_t e = 0; e < len; e++) s += xs[e];
            double mu = s / (double)len;
            for (int64_t e = 0; e < len; e++) ss += (xs[e] - mu) * (xs[e] - mu);
            double r = 1.0 / sqrt(ss / (double)len + eps);
            for (int64_t e = 0; e < len; e++) {
                int c = g * Cg + (int)(e / S);
                int64_t at = (int64_t)b * ss_ld + c;
                double v = (xs[e] - mu) * r;
                if (gamma) v *= gamma[c];
                if (beta) v += beta[c];
                float n = (float)v;
                float u = n * ref_na_factor(scale, at, scale_offset) + (shift ? shift[at] : 0.0f);
                y[off + e] = ref_na_act(act, u);
            }
            mean[b * G + g] = (float)mu;
            rstd[b * G + g] = (float)r;
        }
}

/* Upstream gradient at the affine output u of element e of plane (b, c): dy * act'(u), with u
 * recomputed from x, mean, rstd; *xh gets the normalized value. */
static double ref_na_du(int act, double *xh, float xv, float dyv, float mean, float rstd,
                        double ga, double be, double a, double sh)
{
    *xh = ((double)xv - mean) * rstd;
    double u = (*xh * ga + be) * a + sh;
    return (double)dyv * ref_na_slope(act, u);
}

void k22_ref_group_norm_act_bwd(void *ctx, int act, float *dx, float *dgamma, float *dbeta,
                                float *dscale, float *dshift, const float *dy, const float *x,
                                const float *mean, const float *rstd, const float *gamma,
                                const float *beta, const float *scale, const float *shift,
                                int64_t ss_ld, float scale_offset, int B, int C, int S, int G)
{
    ref_na_check(act);
    int Cg = C / G;
    int64_t len = (int64_t)Cg * S, planes = (int64_t)B * C;
    /* per plane: P = sum du, Q = sum du * xhat; per segment: the means of dxhat, dxhat*xhat */
    double *P = calloc((size_t)planes + 1, sizeof(double)), *Q = calloc((size_t)planes + 1, sizeof(double));
    double *A = calloc((size_t)B * G + 1, sizeof(double)), *Bq = calloc((size_t)B * G + 1, sizeof(double));
    K22_REQUIRE(P && Q && A && Bq);
    for (int64_t p = 0; p < planes; p++) {
        int b = (int)(p / C), c = (int)(p % C), sg = b * G + c / Cg;
        int64_t at = (int64_t)b * ss_ld + c;
        double ga = gamma ? gamma[c] : 1.0, be = beta ? beta[c] : 0.0;
        double a = ref_na_factor(scale, at, scale_offset), sh = shift ? shift[at] : 0.0;
        for (int64_t s = 0; s < S; s++) {
            double xh, du = ref_na_du(act, &xh, x[p * S + s], dy[p * S + s], mean[sg], rstd[sg],
                                      ga, be, a, sh);
            P[p] += du;
            Q[p] += du * xh;
        }
        /* dn = du * a, dxhat = dn * gamma; dscale = sum du * n with n = xh * gamma + beta */
        A[sg] += a * ga * P[p] / (double)len;
        Bq[sg] += a * ga * Q[p] / (double)len;
        if (dshift) dshift[at] += (float)P[p];
        if (dscale) dscale[at] += (float)(ga * Q[p] + be * P[p]);
    }
    for (int c = 0; c < C && (dgamma || dbeta); c++) {
        double sgm = 0, sbt = 0;
        for (int b = 0; b < B; b++) {
            int64_t p = (int64_t)b * C + c;
            double a = ref_na_factor(scale, (int64_t)b * ss_ld + c, scale_offset);
            sgm += a * Q[p];
            sbt += a * P[p];
        }
        if (dgamma) dgamma[c] += (float)sgm;
        if (dbeta) dbeta[c] += (float)sbt;
    }
    for (int64_t p = 0; p < planes && dx; p++) {
        int b = (int)(p / C), c = (int)(p % C), sg = b * G + c / Cg;
        int64_t at = (int64_t)b * ss_ld + c;
        double ga = gamma ? gamma[c] : 1.0, be = beta ? beta[c] : 0.0;
        double a = ref_na_factor(scale, at, scale_offset), sh = shift ? shift[at] : 0.0;
        for (int64_t s = 0; s < S; s++) {
            double xh, du = ref_na_du(act, &xh, x[p * S + s], dy[p * S + s], mean[sg], rstd[sg],
                                      ga, be, a, sh);
            dx[p * S + s] += (float)((double)rstd[sg] * (du * a * ga - A[sg] - xh * Bq[sg]));
        }
    }
    free(P);
    free(Q);
    free(A);
    free(Bq);
}
