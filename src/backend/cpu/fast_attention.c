/* fast_attention.c: attention per (batch, head) on sgemm, in chunks of query rows so that the
 * scores held at once stay within ctx->attn_chunk_floats (at least one row): MoVQ's pixel
 * attention at 768 px has 147,456 tokens, whose whole (TQ, TK) matrix would be 87 GB.
 * Forward per chunk c: S = scale Q_c K^T, masked row softmax (saving lse), out_c = P V.
 * Backward per chunk recomputes P from lse, then dV += P^T dO_c, dP = dO_c V^T,
 * dS = P (dP - D) with D_i = dO_i . O_i, dQ_c += scale dS K, dK += scale dS^T Q_c. With one
 * chunk this is the unchunked arithmetic exactly; more chunks only split the dK and dV sums.
 * The row loops between the GEMMs are serial, as in fast_conv.c: with them in OpenMP, 8 heads
 * x 1024 x 1024 x 64 ran 1.3x (forward) to 1.9x (backward) slower on 2 cores, the OpenMP and
 * OpenBLAS threads spinning against each other. */
#include <math.h>

#include "cpu_ops.h"

/* Query rows per chunk when each row needs `bufs` score rows of TK floats: as many as fit
 * attn_chunk_floats, at least 1, at most TQ. */
static int attn_chunk_rows(const void *ctx, const k22_attn_desc *d, int bufs)
{
    const k22_cpu_ctx *c = ctx;
    size_t per_row = (size_t)bufs * (size_t)(d->TK > 0 ? d->TK : 1);
    size_t n = c->attn_chunk_floats / per_row;
    if (n < 1) n = 1;
    return n < (size_t)d->TQ ? (int)n : d->TQ;
}

static int attn_excluded(const k22_attn_desc *d, int b, int i, int j)
{
    return (d->causal && j > i) || (d->key_keep && !d->key_keep[(int64_t)b * d->TK + j]);
}

/* s: one row (query i of batch b) of scale q.k; adds the mask, marks excluded keys -inf. */
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

/* S: (n, TK) scores of query rows i0 .. i0+n of batch b, made probabilities in place;
 * lse: (n) of those rows. */
static void attn_softmax_rows(float *S, float *lse, const k22_attn_desc *d, int b, int i0, int n)
{
    int TK = d->TK;
    for (int r = 0; r < n; r++) {
        float *s = S + (int64_t)r * TK;
        attn_mask_row(s, d, b, i0 + r);
        float m = -INFINITY, sum = 0;
        for (int j = 0; j < TK; j++) m = s[j] > m ? s[j] : m;
        if (m == -INFINITY) { /* every key excluded: P row 0, so out row 0 */
            for (int j = 0; j < TK; j++) s[j] = 0.0f;
            lse[r] = -INFINITY;
            continue;
        }
        for (int j = 0; j < TK; j++) {
            s[j] = expf(s[j] - m);
            sum += s[j];
        }
        float inv = 1.0f / sum;
        for (int j = 0; j < TK; j++) s[j] *= inv;
        lse[r] = m + logf(sum);
    }
}

void k22_fast_attention_fwd(void *ctx, float *out, float *lse, const float *q, const float *k,
                            const float *v, const k22_attn_desc *d)
{
    int TQ = d->TQ, TK = d->TK, nq = attn_chunk_rows(ctx, d, 1);
    float *S = k22_cpu_scratch(ctx, (size_t)nq * (size_t)TK); /* S: (nq, TK) */
    for (int b = 0; b < d->B; b++)
        for (int h = 0; h < d->NH; h++) {
            int64_t bh = (int64_t)b * d->NH + h;
            const float *kh = k + bh * TK * d->D, *vh = v + bh * TK * d->DV;
            for (int i0 = 0; i0 < TQ; i0 += nq) {
                int n = TQ - i0 < nq ? TQ - i0 : nq;
                int64_t row = bh * TQ + i0;
                k22_fast_matmul(ctx, 0, 1, n, TK, d->D, d->scale, q + row * d->D, 0, kh, 0,
                                0.0f, S, 0, 1);
                attn_softmax_rows(S, lse + row, d, b, i0, n);
                k22_fast_matmul(ctx, 0, 0, n, d->DV, TK, 1.0f, S, 0, vh, 0, 0.0f,
                                out + row * d->DV, 0, 1);
            }
        }
}

/* P: (n, TK) scores of rows i0 .. i0+n of batch b, made P = exp(logit - lse) in place. */
static void attn_probs_rows(float *P, const float *lse, const k22_attn_desc *d, int b, int i0,
                            int n)
{
    int TK = d->TK;
    for (int r = 0; r < n; r++) {
        float *p = P + (int64_t)r * TK;
        attn_mask_row(p, d, b, i0 + r);
        for (int j = 0; j < TK; j++)
            p[j] = (lse[r] == -INFINITY || p[j] == -INFINITY) ? 0.0f : expf(p[j] - lse[r]);
    }
}

/* dS: (n, TK) holding dP on entry, P (dP - D) on return; dout, out: (n, DV) of those rows. */
static void attn_ds_rows(float *dS, const float *P, const float *dout, const float *out,
                         const k22_attn_desc *d, int n)
{
    int TK = d->TK, DV = d->DV;
    for (int r = 0; r < n; r++) {
        float Di = 0;
        for (int c = 0; c < DV; c++) Di += dout[(int64_t)r * DV + c] * out[(int64_t)r * DV + c];
        float *ds = dS + (int64_t)r * TK;
        const float *p = P + (int64_t)r * TK;
        for (int j = 0; j < TK; j++) ds[j] = p[j] * (ds[j] - Di);
    }
}

void k22_fast_attention_bwd(void *ctx, float *dq, float *dk, float *dv, const float *dout,
                            const float *q, const float *k, const float *v, const float *out,
                            const float *lse, const k22_attn_desc *d)
{
    int TQ = d->TQ, TK = d->TK, nq = attn_chunk_rows(ctx, d, 2);
    size_t n1 = (size_t)nq * (size_t)TK;
    float *P = k22_cpu_scratch(ctx, 2 * n1), *dS = P + n1; /* P, dS: (nq, TK) */
    for (int b = 0; b < d->B; b++)
        for (int h = 0; h < d->NH; h++) {
            int64_t bh = (int64_t)b * d->NH + h;
            const float *kh = k + bh * TK * d->D, *vh = v + bh * TK * d->DV;
            for (int i0 = 0; i0 < TQ; i0 += nq) {
                int n = TQ - i0 < nq ? TQ - i0 : nq;
                int64_t row = bh * TQ + i0;
                const float *qc = q + row * d->D, *doc = dout + row * d->DV;
                k22_fast_matmul(ctx, 0, 1, n, TK, d->D, d->scale, qc, 0, kh, 0, 0.0f, P, 0, 1);
                attn_probs_rows(P, lse + row, d, b, i0, n);
                if (dv)
                    k22_fast_matmul(ctx, 1, 0, TK, d->DV, n, 1.0f, P, 0, doc, 0, 1.0f,
                                    dv + bh * TK * d->DV, 0, 1);
                if (!dq && !dk) continue;
                k22_fast_matmul(ctx, 0, 1, n, TK, d->DV, 1.0f, doc, 0, vh, 0, 0.0f, dS, 0, 1);
                attn_ds_rows(dS, P, doc, out + row * d->DV, d, n);
                if (dq)
                    k22_fast_matmul(ctx, 0, 0, n, d->D, TK, d->scale, dS, 0, kh, 0, 1.0f,
                                    dq + row * d->D, 0, 1);
                if (dk)
                    k22_fast_matmul(ctx, 1, 0, TK, d->D, n, d->scale, dS, 0, qc, 0, 1.0f,
                                    dk + bh * TK * d->D, 0, 1);
            }
        }
}
