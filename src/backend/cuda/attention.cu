/* attention.cu: the softmax op and scaled-dot-product attention (k22_attn_desc in ops.h), forward
 * and backward, on the CUDA backend.
 *
 * Attention is computed in chunks of whole heads (or, for a head too large for the scratch, of
 * query rows): scores S = scale Q K^T by one batched cuBLASLt GEMM, a row kernel that adds the
 * mask, applies causal and padding exclusions and turns S into probabilities P in place (saving
 * the log-sum-exp), and out = P V by a second GEMM. Backward recomputes P from the saved lse, as
 * the CPU reference does, then dV += P^T dO, dP = dO V^T, dS = P (dP - D) scale with
 * D_i = sum_c dO[i,c] O[i,c], dQ += dS K, dK += dS^T Q: GEMMs with beta = 1 accumulate straight
 * into the gradients. Memory is bounded by the chunk (ctx->attn_chunk_floats per score buffer,
 * 256 MiB by default: a full-size UNet head at 48x48 latents, 2304^2 scores, is 21 MB, so chunks
 * hold many heads; MoVQ's single 9216-token head at 768 px, 340 MB, is cut into query rows),
 * never by TQ x TK x heads. Under bf16/fp16, heads up to 64 go to the fused kernels of
 * flash_attention.cu instead (K22_CUDA_ATTN=gemm keeps them here). */
#include "common.cuh"

/* Most row blocks launched at once; rows beyond are taken by the grid-stride loop. */
#define K22_ROW_GRID 65535

static unsigned k22_row_grid(int64_t rows)
{
    return (unsigned)(rows < K22_ROW_GRID ? (rows < 1 ? 1 : rows) : K22_ROW_GRID);
}

/* ---- softmax op ---- */

__global__ void k22_softmax_fwd_kernel(float *y, const float *x, int64_t rows, int cols)
{
    __shared__ float shm[K22_CUDA_THREADS];
    __shared__ double shs[K22_CUDA_THREADS];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const float *xr = x + r * cols;
        float *yr = y + r * cols;
        float m = -INFINITY;
        for (int j = threadIdx.x; j < cols; j += blockDim.x) m = fmaxf(m, xr[j]);
        m = k22_cuda_block_max(m, shm);
        double s = 0;
        for (int j = threadIdx.x; j < cols; j += blockDim.x) s += exp((double)xr[j] - m);
        s = k22_cuda_block_sum(s, shs);
        for (int j = threadIdx.x; j < cols; j += blockDim.x)
            yr[j] = (float)(exp((double)xr[j] - m) / s);
    }
}

/* dx += y * (dy - sum(dy * y)). */
__global__ void k22_softmax_bwd_kernel(float *dx, const float *dy, const float *y, int64_t rows,
                                       int cols)
{
    __shared__ double sh[K22_CUDA_THREADS];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const float *yr = y + r * cols, *dyr = dy + r * cols;
        double s = 0;
        for (int j = threadIdx.x; j < cols; j += blockDim.x) s += (double)dyr[j] * yr[j];
        s = k22_cuda_block_sum(s, sh);
        for (int j = threadIdx.x; j < cols; j += blockDim.x)
            dx[r * cols + j] += (float)(yr[j] * (dyr[j] - s));
    }
}

void k22_cuda_softmax_fwd(void *vctx, float *y, const float *x, int64_t rows, int cols)
{
    if (rows <= 0 || cols <= 0) return;
    k22_softmax_fwd_kernel<<<k22_row_grid(rows), K22_CUDA_THREADS, 0, K22_CUDA_CTX(vctx)->stream>>>(
        y, x, rows, cols);
    CUDA_CHECK_LAUNCH();
}

void k22_cuda_softmax_bwd(void *vctx, float *dx, const float *dy, const float *y, int64_t rows,
                          int cols)
{
    if (!dx || rows <= 0 || cols <= 0) return;
    k22_softmax_bwd_kernel<<<k22_row_grid(rows), K22_CUDA_THREADS, 0, K22_CUDA_CTX(vctx)->stream>>>(
        dx, dy, y, rows, cols);
    CUDA_CHECK_LAUNCH();
}

/* ---- attention ---- */

/* What the row kernels need of the descriptor and of the chunk. Row r of the chunk is query
 * i0 + r % nq of head bh0 + r / nq. */
typedef struct {
    int NH, TQ, TK, DV;
    const float *mask;
    int64_t mask_bstride;
    int causal;
    const uint8_t *key_keep;
    int64_t bh0, i0, nq, rows;
} k22_attn_rows;

/* Query i of batch item b excludes key j. */
__device__ __forceinline__ int k22_attn_excluded(const k22_attn_rows &a, int64_t b, int64_t i,
                                                 int j)
{
    return (a.causal && j > i) || (a.key_keep && !a.key_keep[b * a.TK + j]);
}

/* Forward: s holds scale q.k per row; adds the mask, excludes keys, and leaves the probabilities
 * in s and lse in lse (the global (B, NH, TQ) array). */
__global__ void k22_attn_fwd_rows_kernel(float *s, float *lse, k22_attn_rows a)
{
    __shared__ float shm[K22_CUDA_THREADS];
    __shared__ double shs[K22_CUDA_THREADS];
    for (int64_t r = blockIdx.x; r < a.rows; r += gridDim.x) {
        int64_t bh = a.bh0 + r / a.nq, i = a.i0 + r % a.nq, b = bh / a.NH;
        float *sr = s + r * a.TK;
        float m = -INFINITY;
        for (int j = threadIdx.x; j < a.TK; j += blockDim.x) {
            float l = -INFINITY;
            if (!k22_attn_excluded(a, b, i, j)) {
                l = sr[j];
                if (a.mask) l += a.mask[b * a.mask_bstride + i * a.TK + j];
            }
            sr[j] = l;
            m = fmaxf(m, l);
        }
        m = k22_cuda_block_max(m, shm);
        if (m == -INFINITY) { /* every key excluded: out = 0, lse = -inf, no gradient */
            for (int j = threadIdx.x; j < a.TK; j += blockDim.x) sr[j] = 0.0f;
            if (threadIdx.x == 0) lse[bh * a.TQ + i] = -INFINITY;
            continue;
        }
        double sum = 0;
        for (int j = threadIdx.x; j < a.TK; j += blockDim.x)
            if (sr[j] != -INFINITY) sum += exp((double)sr[j] - m);
        sum = k22_cuda_block_sum(sum, shs);
        for (int j = threadIdx.x; j < a.TK; j += blockDim.x)
            sr[j] = sr[j] == -INFINITY ? 0.0f : (float)(exp((double)sr[j] - m) / sum);
        if (threadIdx.x == 0) lse[bh * a.TQ + i] = (float)(m + log(sum));
    }
}

/* Backward: s holds scale q.k per row; leaves P = exp(logit - lse) (0 where excluded or the row
 * is fully masked) in s, and D_i = sum_c dout[i,c] out[i,c] in drow[r]. */
__global__ void k22_attn_bwd_rows_kernel(float *s, double *drow, const float *lse,
                                         const float *dout, const float *out, k22_attn_rows a)
{
    __shared__ double shs[K22_CUDA_THREADS];
    for (int64_t r = blockIdx.x; r < a.rows; r += gridDim.x) {
        int64_t bh = a.bh0 + r / a.nq, i = a.i0 + r % a.nq, b = bh / a.NH;
        int64_t row = bh * a.TQ + i;
        float *sr = s + r * a.TK;
        float l0 = lse[row];
        for (int j = threadIdx.x; j < a.TK; j += blockDim.x) {
            float p = 0.0f;
            if (l0 != -INFINITY && !k22_attn_excluded(a, b, i, j)) {
                float l = sr[j];
                if (a.mask) l += a.mask[b * a.mask_bstride + i * a.TK + j];
                p = (float)exp((double)l - l0);
            }
            sr[j] = p;
        }
        double d = 0;
        for (int c = threadIdx.x; c < a.DV; c += blockDim.x)
            d += (double)dout[row * a.DV + c] * out[row * a.DV + c];
        d = k22_cuda_block_sum(d, shs);
        if (threadIdx.x == 0) drow[r] = d;
    }
}

/* dS = P (dP - D_i) scale, in place over dP. */
__global__ void k22_attn_ds_kernel(float *dp, const float *p, const double *drow, int64_t n,
                                   int TK, float scale)
{
    K22_GRID_STRIDE(e, n)
    {
        float pe = p[e];
        dp[e] = pe == 0.0f ? 0.0f : (float)((double)pe * ((double)dp[e] - drow[e / TK]) * scale);
    }
}

/* Heads per chunk and query rows per chunk: whole heads when one fits the buffer. */
static void k22_attn_chunking(const k22_cuda_ctx *ctx, const k22_attn_desc *d, int64_t *nbh,
                              int64_t *nq)
{
    const int64_t cap = ctx->attn_chunk_floats;
    int64_t per_head = (int64_t)d->TQ * (d->TK > 0 ? d->TK : 1);
    int64_t heads = (int64_t)d->B * d->NH;
    if (per_head <= cap) {
        int64_t h = cap / per_head;
        *nbh = h < heads ? h : heads;
        *nq = d->TQ;
    } else {
        int64_t q = cap / (d->TK > 0 ? d->TK : 1);
        *nbh = 1;
        *nq = q < 1 ? 1 : q;
    }
    if (*nbh > INT32_MAX) *nbh = INT32_MAX; /* GEMM batch counts are int */
}

static k22_attn_rows k22_attn_rows_of(const k22_attn_desc *d, int64_t bh0, int64_t i0, int64_t nq,
                                      int64_t nbh)
{
    k22_attn_rows a;
    a.NH = d->NH, a.TQ = d->TQ, a.TK = d->TK, a.DV = d->DV;
    a.mask = d->mask, a.mask_bstride = d->mask_bstride, a.causal = d->causal;
    a.key_keep = d->key_keep;
    a.bh0 = bh0, a.i0 = i0, a.nq = nq, a.rows = nbh * nq;
    return a;
}

/* S = scale Q K^T for nbh heads from bh0, query rows i0 .. i0+nq. */
static void k22_attn_scores(k22_cuda_ctx *ctx, float *s, const float *q, const float *k,
                            const k22_attn_desc *d, int64_t bh0, int64_t i0, int64_t nq,
                            int64_t nbh)
{
    k22_cuda_gemm(ctx, 0, 1, (int)nq, d->TK, d->D, d->scale, q + (bh0 * d->TQ + i0) * d->D, d->D,
                  (int64_t)d->TQ * d->D, k + bh0 * d->TK * d->D, d->D, (int64_t)d->TK * d->D,
                  0.0f, s, d->TK, nq * d->TK, (int)nbh);
}

void k22_cuda_attention_fwd(void *vctx, float *out, float *lse, const float *q, const float *k,
                            const float *v, const k22_attn_desc *d)
{
    k22_cuda_ctx *ctx = K22_CUDA_CTX(vctx);
    int64_t heads = (int64_t)d->B * d->NH, nbh, nq;
    if (heads <= 0 || d->TQ <= 0) return;
    if (k22_cuda_flash_fits(ctx, d)) {
        ctx->attn_runs_flash++;
        k22_cuda_flash_fwd(ctx, out, lse, q, k, v, NULL, NULL, NULL, d);
        return;
    }
    ctx->attn_runs_gemm++;
    k22_attn_chunking(ctx, d, &nbh, &nq);
    size_t sz = (size_t)(nbh * nq * (d->TK > 0 ? d->TK : 1));
    float *s = (float *)k22_cuda_scratch(ctx, sz * sizeof(float));
    for (int64_t bh0 = 0; bh0 < heads; bh0 += nbh) {
        int64_t hb = heads - bh0 < nbh ? heads - bh0 : nbh;
        for (int64_t i0 = 0; i0 < d->TQ; i0 += nq) {
            int64_t qn = d->TQ - i0 < nq ? d->TQ - i0 : nq;
            k22_attn_scores(ctx, s, q, k, d, bh0, i0, qn, hb);
            k22_attn_rows a = k22_attn_rows_of(d, bh0, i0, qn, hb);
            k22_attn_fwd_rows_kernel<<<k22_row_grid(a.rows), K22_CUDA_THREADS, 0, ctx->stream>>>(
                s, lse, a);
            CUDA_CHECK_LAUNCH();
            /* out rows = P V */
            k22_cuda_gemm(ctx, 0, 0, (int)qn, d->DV, d->TK, 1.0f, s, d->TK, qn * d->TK,
                          v + bh0 * d->TK * d->DV, d->DV, (int64_t)d->TK * d->DV, 0.0f,
                          out + (bh0 * d->TQ + i0) * d->DV, d->DV, (int64_t)d->TQ * d->DV,
                          (int)hb);
        }
    }
}

/* One chunk's backward, given P in p, dP scratch in dp and D_i in drow. */
static void k22_attn_bwd_chunk(k22_cuda_ctx *ctx, float *dq, float *dk, float *dv,
                               const float *dout, const float *q, const float *k, const float *v,
                               float *p, float *dp, const double *drow, const k22_attn_desc *d,
                               int64_t bh0, int64_t i0, int64_t qn, int64_t hb)
{
    const float *dout_c = dout + (bh0 * d->TQ + i0) * d->DV, *q_c = q + (bh0 * d->TQ + i0) * d->D;
    int64_t sO = (int64_t)d->TQ * d->DV, sQ = (int64_t)d->TQ * d->D, sP = qn * d->TK;
    int64_t sK = (int64_t)d->TK * d->D, sV = (int64_t)d->TK * d->DV;
    if (dv) /* dV (TK, DV) += P^T dO */
        k22_cuda_gemm(ctx, 1, 0, d->TK, d->DV, (int)qn, 1.0f, p, d->TK, sP, dout_c, d->DV, sO,
                      1.0f, dv + bh0 * sV, d->DV, sV, (int)hb);
    if (!dq && !dk) return;
    /* dP (qn, TK) = dO V^T, then dS in place */
    k22_cuda_gemm(ctx, 0, 1, (int)qn, d->TK, d->DV, 1.0f, dout_c, d->DV, sO, v + bh0 * sV, d->DV,
                  sV, 0.0f, dp, d->TK, sP, (int)hb);
    int64_t n = hb * sP;
    /* In fp32 the scale is folded into dS. Under bf16/fp16 the GEMMs round dS, and k22_precision
     * (as the CPU backend) rounds the unscaled P (dP - D): the scale goes into alpha instead. */
    int lowp = ctx->precision != K22_PREC_FP32;
    float ds_scale = lowp ? 1.0f : d->scale, g_alpha = lowp ? d->scale : 1.0f;
    k22_attn_ds_kernel<<<k22_cuda_blocks(n), K22_CUDA_THREADS, 0, ctx->stream>>>(
        dp, p, drow, n, d->TK, ds_scale);
    CUDA_CHECK_LAUNCH();
    if (dq) /* dQ (qn, D) += dS K */
        k22_cuda_gemm(ctx, 0, 0, (int)qn, d->D, d->TK, g_alpha, dp, d->TK, sP, k + bh0 * sK, d->D,
                      sK, 1.0f, dq + (bh0 * d->TQ + i0) * d->D, d->D, sQ, (int)hb);
    if (dk) /* dK (TK, D) += dS^T Q */
        k22_cuda_gemm(ctx, 1, 0, d->TK, d->D, (int)qn, g_alpha, dp, d->TK, sP, q_c, d->D, sQ,
                      1.0f, dk + bh0 * sK, d->D, sK, (int)hb);
}

void k22_cuda_attention_bwd(void *vctx, float *dq, float *dk, float *dv, const float *dout,
                            const float *q, const float *k, const float *v, const float *out,
                            const float *lse, const k22_attn_desc *d)
{
    k22_cuda_ctx *ctx = K22_CUDA_CTX(vctx);
    int64_t heads = (int64_t)d->B * d->NH, nbh, nq;
    if (heads <= 0 || d->TQ <= 0 || d->TK <= 0 || (!dq && !dk && !dv)) return;
    if (k22_cuda_flash_fits(ctx, d)) {
        ctx->attn_runs_flash++;
        k22_cuda_flash_bwd(ctx, dq, dk, dv, dout, q, k, v, NULL, NULL, NULL, out, lse, d);
        return;
    }
    ctx->attn_runs_gemm++;
    k22_attn_chunking(ctx, d, &nbh, &nq);
    size_t sz = (size_t)(nbh * nq * d->TK);
    /* [P | dP | D_i]: 2*sz floats keep the doubles 8-byte aligned. */
    float *p = (float *)k22_cuda_scratch(ctx, 2 * sz * sizeof(float) +
                                                  (size_t)(nbh * nq) * sizeof(double));
    float *dp = p + sz;
    double *drow = (double *)(p + 2 * sz);
    for (int64_t bh0 = 0; bh0 < heads; bh0 += nbh) {
        int64_t hb = heads - bh0 < nbh ? heads - bh0 : nbh;
        for (int64_t i0 = 0; i0 < d->TQ; i0 += nq) {
            int64_t qn = d->TQ - i0 < nq ? d->TQ - i0 : nq;
            k22_attn_scores(ctx, p, q, k, d, bh0, i0, qn, hb);
            k22_attn_rows a = k22_attn_rows_of(d, bh0, i0, qn, hb);
            k22_attn_bwd_rows_kernel<<<k22_row_grid(a.rows), K22_CUDA_THREADS, 0, ctx->stream>>>(
                p, drow, lse, dout, out, a);
            CUDA_CHECK_LAUNCH();
            k22_attn_bwd_chunk(ctx, dq, dk, dv, dout, q, k, v, p, dp, drow, d, bh0, i0, qn, hb);
        }
    }
}

/* ---- q, k, v as 16-bit values (ops.h attention_fwd_x16 / attention_bwd_x16) ----
 * The mma.sync kernels read them as they are, in place of the copies they would stage
 * (k22_cuda_flash_takes16); every other path gets them widened into ctx->wide, one float copy of
 * the three, and runs as on floats: the same operands rounded the same way, so the same bits. */
static void k22_attn_widen(k22_cuda_ctx *ctx, const uint16_t *q16, const uint16_t *k16,
                           const uint16_t *v16, const k22_attn_desc *d, const float **q,
                           const float **k, const float **v)
{
    int64_t h = (int64_t)d->B * d->NH, nq = h * d->TQ * d->D, nk = h * d->TK * d->D, nv = h * d->TK * d->DV;
    float *w = (float *)k22_cuda_wide(ctx, (size_t)(nq + nk + nv) * sizeof(float));
    k22_cuda_widen_lowp(ctx, w, q16, nq);
    k22_cuda_widen_lowp(ctx, w + nq, k16, nk);
    k22_cuda_widen_lowp(ctx, w + nq + nk, v16, nv);
    *q = w, *k = w + nq, *v = w + nq + nk;
}

void k22_cuda_attention_fwd_x16(void *vctx, float *out, float *lse, const uint16_t *q16,
                                const uint16_t *k16, const uint16_t *v16, const k22_attn_desc *d)
{
    k22_cuda_ctx *ctx = K22_CUDA_CTX(vctx);
    K22_REQUIRE(ctx->precision != K22_PREC_FP32);
    if ((int64_t)d->B * d->NH <= 0 || d->TQ <= 0) return;
    if (k22_cuda_flash_takes16(ctx, d, q16, k16, v16)) {
        ctx->attn_runs_flash++, ctx->attn_runs_flash16++;
        k22_cuda_flash_fwd(ctx, out, lse, NULL, NULL, NULL, q16, k16, v16, d);
        return;
    }
    const float *q, *k, *v;
    k22_attn_widen(ctx, q16, k16, v16, d, &q, &k, &v);
    k22_cuda_attention_fwd(vctx, out, lse, q, k, v, d);
}

void k22_cuda_attention_bwd_x16(void *vctx, float *dq, float *dk, float *dv, const float *dout,
                                const uint16_t *q16, const uint16_t *k16, const uint16_t *v16,
                                const float *out, const float *lse, const k22_attn_desc *d)
{
    k22_cuda_ctx *ctx = K22_CUDA_CTX(vctx);
    K22_REQUIRE(ctx->precision != K22_PREC_FP32);
    if ((int64_t)d->B * d->NH <= 0 || d->TQ <= 0 || d->TK <= 0 || (!dq && !dk && !dv)) return;
    if (k22_cuda_flash_takes16(ctx, d, q16, k16, v16)) {
        ctx->attn_runs_flash++, ctx->attn_runs_flash16++;
        k22_cuda_flash_bwd(ctx, dq, dk, dv, dout, NULL, NULL, NULL, q16, k16, v16, out, lse, d);
        return;
    }
    const float *q, *k, *v;
    k22_attn_widen(ctx, q16, k16, v16, d, &q, &k, &v);
    k22_cuda_attention_bwd(vctx, dq, dk, dv, dout, q, k, v, out, lse, d);
}
