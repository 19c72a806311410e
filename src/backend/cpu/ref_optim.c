/* ref_optim.c: AdamW step (torch.optim.AdamW, single-tensor path) and the sum of squares that
 * gradient clipping reduces. The per-element update is float math in torch's order, with the
 * two fused multiply-adds torch 2.15's CPU kernels compile to (lerp is an explicit fmadd; the
 * addcmul a + s*t1*t2 is contracted): with them k22 matches torch.optim.AdamW bit for bit over
 * 10 steps of 1003 values (checked against the pinned reference). The scalars are prepared
 * once by k22_adamw_scalars_of, which every backend uses. */
#include <math.h>

#include "cpu_ops.h"

k22_adamw_scalars k22_adamw_scalars_of(const k22_adamw_hparams *h)
{
    double lr = h->lr, b1 = h->beta1, b2 = h->beta2, wd = h->weight_decay, eps = h->eps;
    double bc1 = 1.0 - pow(b1, (double)h->step), bc2 = 1.0 - pow(b2, (double)h->step);
    k22_adamw_scalars s;
    s.decay = (float)(1.0 - lr * wd);
    s.one_m_b1 = (float)(1.0 - b1);
    s.b2 = (float)b2;
    s.one_m_b2 = (float)(1.0 - b2);
    s.bc2_sqrt = (float)pow(bc2, 0.5); /* Python's bc2 ** 0.5 */
    s.eps = (float)eps;
    s.neg_step = (float)(-(lr / bc1));
    s.gscale = h->grad_scale;
    return s;
}

void k22_ref_adamw_step(void *ctx, float *p, const float *g, float *m, float *v, int64_t n,
                        const k22_adamw_hparams *h)
{
    k22_adamw_scalars s = k22_adamw_scalars_of(h);
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

void k22_ref_sumsq(void *ctx, double *out, const float *g, int64_t n)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)g[i] * g[i];
    out[0] += s;
}
