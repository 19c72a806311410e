/* fast_norm_act.c: fused group norm + per-(sample, channel) affine + activation (ops.h
 * group_norm_act) with OpenMP. The forward repeats the float expressions of fast_norm.c,
 * fast_pool_affine.c and fast_act.c in their order, so its y is bit-identical to that chain,
 * while reading x twice and writing y once instead of three full write/read round trips.
 * Backward recomputes the normalized and modulated values from x, mean, rstd (bit-equal to what
 * the forward rounded) and forms the float per-plane sums and products the unfused chain's
 * backward forms (act_bwd, chan_affine_bwd, group_norm_bwd of this mode), combined across
 * planes in the same order, so its gradients equal that chain's bit for bit too (the test
 * checks it): one parallel pass over planes for the sums, a small serial step for the segment
 * means and the parameter gradients, a second parallel pass for dx. The first pass keeps du in
 * the backend's scratch (host memory outside the arena; measured: without it the second exp per
 * element made the tiny UNet step 6% slower than the chain on one thread). */
#include <math.h>
#include <stdlib.h>

#include "cpu_ops.h"

static inline float fast_na_act(int act, float u)
{
    return act == K22_ACT_NONE ? u : u * (1.0f / (1.0f + expf(-u)));
}

static inline float fast_na_slope(int act, float u)
{
    if (act == K22_ACT_NONE) return 1.0f;
    float s = 1.0f / (1.0f + expf(-u));
    return s * (1.0f + u * (1.0f - s));
}

static void fast_na_check(int act)
{
    if (act != K22_ACT_SILU && act != K22_ACT_NONE)
        K22_FATAL("group_norm_act: activation %d is not SiLU or none", act);
}

void k22_fast_group_norm_act_fwd(void *ctx, int act, float *y, float *mean, float *rstd,
                                 const float *x, const float *gamma, const float *beta,
                                 const float *scale, const float *shift, int64_t ss_ld,
                                 float scale_offset, int B, int C, int S, int G, float eps)
{
    fast_na_check(act);
    int Cg = C / G;
#pragma omp parallel for
    for (int bg = 0; bg < B * G; bg++) {
        int b = bg / G, g = bg % G;
        int64_t off = ((int64_t)b * C + (int64_t)g * Cg) * S, len = (int64_t)Cg * S;
        /* statistics exactly as fast_norm.c's fast_seg_stats */
        double sum = 0, ss = 0;
        for (int64_t e = 0; e < len; e++) sum += x[off + e];
        double mud = sum / (double)len;
        for (int64_t e = 0; e < len; e++) {
            double t = x[off + e] - mud;
            ss += t * t;
        }
        float mu = (float)mud, r = (float)(1.0 / sqrt(ss / (double)len + eps));
        mean[bg] = mu;
        rstd[bg] = r;
        for (int cc = 0; cc < Cg; cc++) {
            int c = g * Cg + cc;
            int64_t at = (int64_t)b * ss_ld + c;
            float ga = gamma ? gamma[c] : 1.0f, be = beta ? beta[c] : 0.0f;
            float a = (scale ? scale[at] : 1.0f) + scale_offset, sh = shift ? shift[at] : 0.0f;
            const float *xc = x + off + (int64_t)cc * S;
            float *yc = y + off + (int64_t)cc * S;
            /* two loops over the channel (in cache): the first vectorizes, the exp does not */
            for (int s = 0; s < S; s++) {
                float n = (xc[s] - mu) * r * ga + be;
                yc[s] = n * a + sh;
            }
            if (act != K22_ACT_NONE)
                for (int s = 0; s < S; s++) yc[s] = fast_na_act(act, yc[s]);
        }
    }
}

/* The per-plane constants of the backward. */
typedef struct {
    float mu, r, ga, be, a, sh;
} fast_na_plane;

static fast_na_plane fast_na_plane_of(int64_t p, const float *mean, const float *rstd,
                                      const float *gamma, const float *beta, const float *scale,
                                      const float *shift, int64_t ss_ld, float off, int C, int G)
{
    int b = (int)(p / C), c = (int)(p % C), sg = b * G + c / (C / G);
    int64_t at = (int64_t)b * ss_ld + c;
    fast_na_plane q = {mean[sg], rstd[sg], gamma ? gamma[c] : 1.0f, beta ? beta[c] : 0.0f,
                       (scale ? scale[at] : 1.0f) + off, shift ? shift[at] : 0.0f};
    return q;
}

/* Per-plane float partial sums of the backward, each the one the unfused chain forms. */
enum { NA_DXH, NA_DXH_XH, NA_DN_XH, NA_DN, NA_DU_N, NA_DU, NA_NSUM };

void k22_fast_group_norm_act_bwd(void *ctx, int act, float *dx, float *dgamma, float *dbeta,
                                 float *dscale, float *dshift, const float *dy, const float *x,
                                 const float *mean, const float *rstd, const float *gamma,
                                 const float *beta, const float *scale, const float *shift,
                                 int64_t ss_ld, float scale_offset, int B, int C, int S, int G)
{
    fast_na_check(act);
    int Cg = C / G;
    int64_t planes = (int64_t)B * C, len = (int64_t)Cg * S, nseg = (int64_t)B * G;
    if (planes <= 0 || S <= 0) return;
    /* scratch: NA_NSUM sums per plane, the two segment means (A, Bq), then du (B, C, S): kept
     * from the first pass so the second needs no second exp per element */
    float *sums = k22_cpu_scratch(ctx, (size_t)(NA_NSUM * planes + 2 * nseg + planes * S));
    float *A = sums + NA_NSUM * planes, *Bq = A + nseg, *dus = Bq + nseg;
#pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < planes; p++) {
        fast_na_plane q = fast_na_plane_of(p, mean, rstd, gamma, beta, scale, shift, ss_ld,
                                           scale_offset, C, G);
        const float *xp = x + p * S, *dyp = dy + p * S;
        float t[NA_NSUM] = {0}, *dup = dus + p * S;
        for (int s = 0; s < S; s++) { /* u in dup first: this loop vectorizes */
            float xh = (xp[s] - q.mu) * q.r;
            dup[s] = (xh * q.ga + q.be) * q.a + q.sh;
        }
        if (act != K22_ACT_NONE)
            for (int s = 0; s < S; s++) dup[s] = dyp[s] * fast_na_slope(act, dup[s]);
        else
            for (int s = 0; s < S; s++) dup[s] = dyp[s] * 1.0f;
        for (int s = 0; s < S; s++) {
            float xh = (xp[s] - q.mu) * q.r, n = xh * q.ga + q.be;
            float du = dup[s], dn = du * q.a, dxh = dn * q.ga;
            t[NA_DXH] += dxh;
            t[NA_DXH_XH] += dxh * xh;
            t[NA_DN_XH] += dn * xh;
            t[NA_DN] += dn;
            t[NA_DU_N] += du * n;
            t[NA_DU] += du;
        }
        for (int k = 0; k < NA_NSUM; k++) sums[p * NA_NSUM + k] = t[k];
    }
    for (int64_t sg = 0; sg < nseg; sg++) {
        double sa = 0, sb = 0;
        for (int cc = 0; cc < Cg; cc++) {
            int64_t p = (sg / G) * C + (sg % G) * Cg + cc;
            sa += sums[p * NA_NSUM + NA_DXH];
            sb += sums[p * NA_NSUM + NA_DXH_XH];
        }
        A[sg] = (float)(sa / (double)len);
        Bq[sg] = (float)(sb / (double)len);
    }
    for (int64_t p = 0; p < planes && (dscale || dshift); p++) {
        int64_t at = (p / C) * ss_ld + p % C;
        if (dscale) dscale[at] += sums[p * NA_NSUM + NA_DU_N];
        if (dshift) dshift[at] += sums[p * NA_NSUM + NA_DU];
    }
    for (int c = 0; c < C && (dgamma || dbeta); c++) {
        double sgm = 0, sbt = 0;
        for (int b = 0; b < B; b++) {
            sgm += sums[((int64_t)b * C + c) * NA_NSUM + NA_DN_XH];
            sbt += sums[((int64_t)b * C + c) * NA_NSUM + NA_DN];
        }
        if (dgamma) dgamma[c] += (float)sgm;
        if (dbeta) dbeta[c] += (float)sbt;
    }
    if (!dx) return;
#pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < planes; p++) {
        fast_na_plane q = fast_na_plane_of(p, mean, rstd, gamma, beta, scale, shift, ss_ld,
                                           scale_offset, C, G);
        int64_t sg = (p / C) * G + (p % C) / Cg;
        float am = A[sg], bm = Bq[sg];
        const float *xp = x + p * S, *dup = dus + p * S;
        float *dxp = dx + p * S;
        for (int s = 0; s < S; s++) {
            float xh = (xp[s] - q.mu) * q.r;
            dxp[s] += q.r * ((dup[s] * q.a) * q.ga - am - xh * bm);
        }
    }
}
