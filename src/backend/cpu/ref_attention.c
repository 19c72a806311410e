/* ref_attention.c: plain-loop scaled-dot-product attention (see k22_attn_desc in ops.h).
 * Forward saves the log-sum-exp per query row; backward recomputes the probabilities from it
 * (P = exp(logit - lse)) and uses D_i = sum_c dout[i,c] out[i,c], flash-attention style.
 * Every sum is in double. */
#include <math.h>
#include <stdlib.h>

#include "cpu_ops.h"

/* logits[j] of query row i of head (b, h): scale q.k + mask, -inf where excluded. */
static void ref_attn_logits(double *lg, const float *qi, const float *kh, int b, int i,
                            const k22_attn_desc *d)
{
    for (int j = 0; j < d->TK; j++) {
        if ((d->causal && j > i) || (d->key_keep && !d->key_keep[(int64_t)b * d->TK + j])) {
            lg[j] = -INFINITY;
            continue;
        }
        double s = 0;
        for (int c = 0; c < d->D; c++) s += (double)qi[c] * kh[(int64_t)j * d->D + c];
        s *= d->scale;
        if (d->mask) s += d->mask[b * d->mask_bstride + (int64_t)i * d->TK + j];
        lg[j] = s;
    }
}

void k22_ref_attention_fwd(void *ctx, float *out, float *lse, const float *q, const float *k,
                           const float *v, const k22_attn_desc *d)
{
    double *lg = malloc(sizeof(double) * (size_t)(d->TK ? d->TK : 1));
    double *acc = malloc(sizeof(double) * (size_t)(d->DV ? d->DV : 1));
    K22_REQUIRE(lg && acc);
    for (int b = 0; b < d->B; b++)
        for (int h = 0; h < d->NH; h++) {
            int64_t bh = (int64_t)b * d->NH + h;
            const float *kh = k + bh * d->TK * d->D, *vh = v + bh * d->TK * d->DV;
            for (int i = 0; i < d->TQ; i++) {
                ref_attn_logits(lg, q + (bh * d->TQ + i) * d->D, kh, b, i, d);
                float *oi = out + (bh * d->TQ + i) * d->DV;
                double m = -INFINITY, s = 0;
                for (int j = 0; j < d->TK; j++) m = lg[j] > m ? lg[j] : m;
                if (m == -INFINITY) { /* every key excluded */
                    for (int c = 0; c < d->DV; c++) oi[c] = 0.0f;
                    lse[bh * d->TQ + i] = -INFINITY;
                    continue;
                }
                for (int c = 0; c < d->DV; c++) acc[c] = 0;
                for (int j = 0; j < d->TK; j++) {
                    double p = exp(lg[j] - m);
                    s += p;
                    for (int c = 0; c < d->DV; c++) acc[c] += p * vh[(int64_t)j * d->DV + c];
                }
                for (int c = 0; c < d->DV; c++) oi[c] = (float)(acc[c] / s);
                lse[bh * d->TQ + i] = (float)(m + log(s));
            }
        }
    free(lg);
    free(acc);
}

/* One head's backward; dk, dv accumulate in the double arrays dkh (TK, D), dvh (TK, DV). */
static void ref_attn_head_bwd(float *dq, double *dkh, double *dvh, const float *dout,
                              const float *q, const float *kh, const float *vh, const float *out,
                              const float *lse, int b, int64_t bh, double *lg, double *dqi,
                              const k22_attn_desc *d)
{
    for (int i = 0; i < d->TQ; i++) {
        int64_t row = bh * d->TQ + i;
        if (lse[row] == -INFINITY) continue; /* fully masked: no gradient */
        const float *qi = q + row * d->D, *doi = dout + row * d->DV, *oi = out + row * d->DV;
        ref_attn_logits(lg, qi, kh, b, i, d);
        double Di = 0;
        for (int c = 0; c < d->DV; c++) Di += (double)doi[c] * oi[c];
        for (int c = 0; c < d->D; c++) dqi[c] = 0;
        for (int j = 0; j < d->TK; j++) {
            if (lg[j] == -INFINITY) continue;
            double p = exp(lg[j] - lse[row]), dp = 0;
            for (int c = 0; c < d->DV; c++) {
                dp += (double)doi[c] * vh[(int64_t)j * d->DV + c];
                dvh[(int64_t)j * d->DV + c] += p * doi[c];
            }
            double ds = p * (dp - Di) * d->scale;
            for (int c = 0; c < d->D; c++) {
                dqi[c] += ds * kh[(int64_t)j * d->D + c];
                dkh[(int64_t)j * d->D + c] += ds * qi[c];
            }
        }
        for (int c = 0; dq && c < d->D; c++) dq[row * d->D + c] += (float)dqi[c];
    }
}

void k22_ref_attention_bwd(void *ctx, float *dq, float *dk, float *dv, const float *dout,
                           const float *q, const float *k, const float *v, const float *out,
                           const float *lse, const k22_attn_desc *d)
{
    size_t nk = (size_t)d->TK * d->D, nv = (size_t)d->TK * d->DV;
    double *lg = malloc(sizeof(double) * (size_t)(d->TK ? d->TK : 1));
    double *dqi = malloc(sizeof(double) * (size_t)(d->D ? d->D : 1));
    double *dkh = malloc(sizeof(double) * (nk ? nk : 1)),
           *dvh = malloc(sizeof(double) * (nv ? nv : 1));
    K22_REQUIRE(lg && dqi && dkh && dvh);
    for (int b = 0; b < d->B; b++)
        for (int h = 0; h < d->NH; h++) {
            int64_t bh = (int64_t)b * d->NH + h;
            for (size_t e = 0; e < nk; e++) dkh[e] = 0;
            for (size_t e = 0; e < nv; e++) dvh[e] = 0;
            ref_attn_head_bwd(dq, dkh, dvh, dout, q, k + bh * (int64_t)nk, v + bh * (int64_t)nv,
                              out, lse, b, bh, lg, dqi, d);
            for (size_t e = 0; dk && e < nk; e++) dk[bh * (int64_t)nk + e] += (float)dkh[e];
            for (size_t e = 0; dv && e < nv; e++) dv[bh * (int64_t)nv + e] += (float)dvh[e];
        }
    free(lg);
    free(dqi);
    free(dkh);
    free(dvh);
}
