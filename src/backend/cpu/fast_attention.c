/* fast_attention.c: attention per (batch, head) on sgemm: S = scale Q K^T, masked row softmax
 * (serial over rows, saving lse), out = P V. Backward recomputes P from lse, then
 * dV += P^T dO, dP = dO V^T, dS = P (dP - D) with D_i = dO_i . O_i, dQ += scale dS K,
 * dK += scale dS^T Q. Scratch holds one head's (TQ, TK) matrices. The row loops between the
 * GEMMs are serial, as in fast_conv.c: with them in OpenMP, 8 heads x 1024 x 1024 x 64 ran
 * 1.3x (forward) to 1.9x (backward) slower on 2 cores, the OpenMP and OpenBLAS threads
 * spinning against each other. */
#include <math.h>

#include "cpu_ops.h"

static int attn_excluded(const k22_attn_desc *d, int b, int i, int j)
{
    return (d->causal && j > i) || (d->key_keep && !d->key_keep[(int64_t)b * d->TK + j]);
}

/* s: one row of scale q.k; adds the mask and marks excluded keys -inf. */
static void attn_mask_row(float *s, const k22_attn_desc *d, int b, int i)
{
    const float *mr = d->mask ? d->mask + b * d->mask_bstride + (int64_t)i * d->TK : NULL;
    for (int j = 0; j < d->TK; j++) {
        if (attn_excluded(d, b, i, j))
            s[j] = -INFINITY;
        else if (mr)
            s[j] += mr[j];
    }
}

void k22_fast_attention_fwd(void *ctx, float *out, float *lse, const float *q, const float *k,
                            const float *v, const k22_attn_desc *d)
{
    int TQ = d->TQ, TK = d->TK;
    float *S = k22_cpu_scratch(ctx, (size_t)TQ * (size_t)TK);
    for (int b = 0; b < d->B; b++)
        for (int h = 0; h < d->NH; h++) {
            int64_t bh = (int64_t)b * d->NH + h;
            const float *qh = q + bh * TQ * d->D, *kh = k + bh * TK * d->D;
            const float *vh = v + bh * TK * d->DV;
            k22_fast_matmul(ctx, 0, 1, TQ, TK, d->D, d->scale, qh, 0, kh, 0, 0.0f, S, 0, 1);
            for (int i = 0; i < TQ; i++) {
                float *s = S + (int64_t)i * TK;
                attn_mask_row(s, d, b, i);
                float m = -INFINITY, sum = 0;
                for (int j = 0; j < TK; j++) m = s[j] > m ? s[j] : m;
                if (m == -INFINITY) { /* every key excluded: P row 0, so out row 0 */
                    for (int j = 0; j < TK; j++) s[j] = 0.0f;
                    lse[bh * TQ + i] = -INFINITY;
                    continue;
                }
                for (int j = 0; j < TK; j++) {
                    s[j] = expf(s[j] - m);
                    sum += s[j];
                }
                float inv = 1.0f / sum;
                for (int j = 0; j < TK; j++) s[j] *= inv;
                lse[bh * TQ + i] = m + logf(sum);
            }
            k22_fast_matmul(ctx, 0, 0, TQ, d->DV, TK, 1.0f, S, 0, vh, 0, 0.0f,
                            out + bh * TQ * d->DV, 0, 1);
        }
}

void k22_fast_attention_bwd(void *ctx, float *dq, float *dk, float *dv, const float *dout,
                            const float *q, const float *k, const float *v, const float *out,
                            const float *lse, const k22_attn_desc *d)
{
    int TQ = d->TQ, TK = d->TK;
    size_t n = (size_t)TQ * (size_t)TK;
    float *P = k22_cpu_scratch(ctx, 2 * n), *dS = P + n;
    for (int b = 0; b < d->B; b++)
        for (int h = 0; h < d->NH; h++) {
            int64_t bh = (int64_t)b * d->NH + h;
            const float *qh = q + bh * TQ * d->D, *kh = k + bh * TK * d->D;
            const float *vh = v + bh * TK * d->DV, *doh = dout + bh * TQ * d->DV;
            const float *oh = out + bh * TQ * d->DV, *lh = lse + bh * TQ;
            k22_fast_matmul(ctx, 0, 1, TQ, TK, d->D, d->scale, qh, 0, kh, 0, 0.0f, P, 0, 1);
            for (int i = 0; i < TQ; i++) {
                float *p = P + (int64_t)i * TK;
                attn_mask_row(p, d, b, i);
                for (int j = 0; j < TK; j++)
                    p[j] = (lh[i] == -INFINITY || p[j] == -INFINITY) ? 0.0f : expf(p[j] - lh[i]);
            }
            if (dv)
                k22_fast_matmul(ctx, 1, 0, TK, d->DV, TQ, 1.0f, P, 0, doh, 0, 1.0f,
                                dv + bh * TK * d->DV, 0, 1);
            if (!dq && !dk) continue;
            k22_fast_matmul(ctx, 0, 1, TQ, TK, d->DV, 1.0f, doh, 0, vh, 0, 0.0f, dS, 0, 1);
            for (int i = 0; i < TQ; i++) {
                float Di = 0;
                for (int c = 0; c < d->DV; c++)
                    Di += doh[(int64_t)i * d->DV + c] * oh[(int64_t)i * d->DV + c];
                float *ds = dS + (int64_t)i * TK;
                const float *p = P + (int64_t)i * TK;
                for (int j = 0; j < TK; j++) ds[j] = p[j] * (ds[j] - Di);
            }
            if (dq)
                k22_fast_matmul(ctx, 0, 0, TQ, d->D, TK, d->scale, dS, 0, kh, 0, 1.0f,
                                dq + bh * TQ * d->D, 0, 1);
            if (dk)
                k22_fast_matmul(ctx, 1, 0, TK, d->D, TQ, d->scale, dS, 0, qh, 0, 1.0f,
                                dk + bh * TK * d->D, 0, 1);
        }
}
