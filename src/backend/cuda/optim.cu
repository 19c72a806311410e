/* optim.cu: the AdamW step and the sum of squares behind gradient-norm clipping.
 *
 * AdamW follows the CPU reference operation by operation with explicit round-to-nearest
 * intrinsics (nvcc would otherwise contract other multiply-adds into FMAs), so the two backends
 * agree to the bit. The sum of squares uses a fixed block count and a fixed reduction tree, so it
 * is deterministic run to run (no atomics). */
#include "common.cuh"

#include <math.h>

/* k22_adamw_scalars_of: the step's scalars, formed once on the host for every backend. */
extern "C" {
#include "../cpu/cpu_ops.h"
}

/* Per element, the CPU reference's expression for expression (src/backend/cpu/ref_optim.c, which
 * matches torch 2.15's AdamW bit for bit): the lerp and the addcmul are the fused multiply-adds
 * torch's kernels compile to, every other operation is rounded on its own. With sh (the weight
 * shadow's elements for p, weight_shadow.cu) the new weight's 16-bit rounding goes there too:
 * the same k22_cuda_round16 as the GEMM packing, 2 bytes written instead of a later pass of 6. */
__global__ void k22_adamw_kernel(float *p, const float *g, float *m, float *v, int64_t n,
                                 k22_adamw_scalars s, uint16_t *sh, int fp16)
{
    K22_GRID_STRIDE(i, n)
    {
        float gi = __fmul_rn(g[i], s.gscale);
        float pi = __fmul_rn(p[i], s.decay);
        float mi = __fmaf_rn(s.one_m_b1, __fsub_rn(gi, m[i]), m[i]);
        float vi = __fmaf_rn(__fmul_rn(s.one_m_b2, gi), gi, __fmul_rn(v[i], s.b2));
        float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), s.bc2_sqrt), s.eps);
        float pn = __fadd_rn(pi, __fdiv_rn(__fmul_rn(s.neg_step, mi), denom));
        p[i] = pn;
        m[i] = mi;
        v[i] = vi;
        if (sh) sh[i] = k22_cuda_round16(pn, fp16);
    }
}

void k22_cuda_adamw_step(void *vctx, float *p, const float *g, float *m, float *v, int64_t n,
                         const k22_adamw_hparams *h)
{
    k22_cuda_ctx *ctx = K22_CUDA_CTX(vctx);
    K22_REQUIRE(h->step >= 1);
    if (n <= 0) return;
    k22_adamw_scalars s = k22_adamw_scalars_of(h); /* the same scalars as the CPU */
    uint16_t *sh = k22_cuda_shadow_update(ctx, p, n);
    k22_adamw_kernel<<<k22_cuda_blocks(n), K22_CUDA_THREADS, 0, ctx->stream>>>(
        p, g, m, v, n, s, sh, ctx->precision == K22_PREC_FP16);
    CUDA_CHECK_LAUNCH();
}

/* Sums the K22_CUDA_THREADS values of s[] into s[0] in a fixed tree order. */
__device__ void k22_block_sum(double *s)
{
    for (int k = K22_CUDA_THREADS / 2; k > 0; k >>= 1) {
        __syncthreads();
        if ((int)threadIdx.x < k) s[threadIdx.x] += s[threadIdx.x + k];
    }
    __syncthreads();
}

/* partials[block] = sum of g[i]^2 over the block's grid-stride share (squares in double: exact). */
__global__ void k22_sumsq_kernel(double *partials, const float *g, int64_t n)
{
    __shared__ double s[K22_CUDA_THREADS];
    double acc = 0.0;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        double x = g[i];
        acc += x * x;
    }
    s[threadIdx.x] = acc;
    k22_block_sum(s);
    if (threadIdx.x == 0) partials[blockIdx.x] = s[0];
}

/* out = sum of partials[0..nb), one block. */
__global__ void k22_sum_partials_kernel(double *out, const double *partials, int nb)
{
    __shared__ double s[K22_CUDA_THREADS];
    double acc = 0.0;
    for (int i = threadIdx.x; i < nb; i += blockDim.x) acc += partials[i];
    s[threadIdx.x] = acc;
    k22_block_sum(s);
    if (threadIdx.x == 0) *out = s[0];
}

/* out[0] (host) += sum g^2. Synchronizes: the caller needs the number on the host. */
void k22_cuda_sumsq(void *vctx, double *out, const float *g, int64_t n)
{
    k22_cuda_ctx *ctx = K22_CUDA_CTX(vctx);
    if (n <= 0) return;
    int64_t want = (n + K22_CUDA_THREADS - 1) / K22_CUDA_THREADS;
    int nb = (int)(want < K22_CUDA_REDUCE_BLOCKS ? want : K22_CUDA_REDUCE_BLOCKS);
    double *total = ctx->partials + K22_CUDA_REDUCE_BLOCKS;
    k22_sumsq_kernel<<<nb, K22_CUDA_THREADS, 0, ctx->stream>>>(ctx->partials, g, n);
    CUDA_CHECK_LAUNCH();
    k22_sum_partials_kernel<<<1, K22_CUDA_THREADS, 0, ctx->stream>>>(total, ctx->partials, nb);
    CUDA_CHECK_LAUNCH();
    double host = 0.0;
    CUDA_CHECK(cudaMemcpyAsync(&host, total, sizeof host, cudaMemcpyDeviceToHost, ctx->stream));
    CUDA_CHECK(cudaStreamSynchronize(ctx->stream));
    out[0] += host;
}
