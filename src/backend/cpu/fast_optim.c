/* fast_optim.c: OpenMP MSE loss, AdamW step and sum of squares. The AdamW element update is
 * the reference's float expression, so both modes give the same bits. */
#include <math.h>

#include "cpu_ops.h"

void k22_fast_mse_fwd(void *ctx, float *loss, float *per_sample, const float *pred,
                      const float *target, const float *w, int B, int64_t N)
{
    double total = 0;
    for (int b = 0; b < B; b++) {
        double s = 0;
        const float *pb = pred + (int64_t)b * N, *tb = target + (int64_t)b * N;
#pragma omp parallel for reduction(+ : s)
        for (int64_t i = 0; i < N; i++) {
            float e = pb[i] - tb[i];
            s += e * e;
        }
        s /= (double)N;
        if (per_sample) per_sample[b] = (float)s;
        total += (w ? w[b] : 1.0) * s;
    }
    loss[0] = (float)(total / B);
}

void k22_fast_mse_bwd(void *ctx, float *dpred, float dloss, const float *pred, const float *target,
                      const float *w, int B, int64_t N)
{
    for (int b = 0; b < B; b++) {
        float c = (float)((double)dloss * (w ? w[b] : 1.0) * 2.0 / ((double)B * (double)N));
        int64_t o = (int64_t)b * N;
#pragma omp parallel for
        for (int64_t i = 0; i < N; i++) dpred[o + i] += c * (pred[o + i] - target[o + i]);
    }
}

void k22_fast_adamw_step(void *ctx, float *p, const float *g, float *m, float *v, int64_t n,
                         const k22_adamw_hparams *h)
{
    k22_adamw_scalars s = k22_adamw_scalars_of(h);
#pragma omp parallel for
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i] * s.gscale;
        float pi = p[i] * s.decay;
        float mi = fmaf(s.one_m_b1, gi - m[i], m[i]);
        float vi = fmaf(s.one_m_b2 * gi, gi, v[i] * s.b2);
        float denom = sqrtf(vi) / s.bc2_sqrt + s.eps;
        p[i] = pi + (s.neg_step * mi) / denom;
        m[i] = mi;
        v[i] = vi;
    }
}

void k22_fast_sumsq(void *ctx, double *out, const float *g, int64_t n)
{
    double s = 0;
#pragma omp parallel for reduction(+ : s)
    for (int64_t i = 0; i < n; i++) s += (double)g[i] * g[i];
    out[0] += s;
}
