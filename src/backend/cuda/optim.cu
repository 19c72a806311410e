/* optim.cu: the AdamW step and the sum of squares behind gradient-norm clipping.
 *
 * AdamW follows ops.h (torch.optim.AdamW, single-tensor path) operation by operation, with
 * explicit round-to-nearest intrinsics so nvcc cannot fuse a multiply and an add into an FMA:
 * the CPU reference rounds every step, and so must this kernel to match it to the last bit or
 * nearly. The sum of squares uses a fixed block count and a fixed reduction tree, so it is
 * deterministic run to run (no atomics). */
#include "common.cuh"

#include <math.h>

/* Per element, in ops.h's order:
 *   p *= decay;  m = lerp(m, g, w1);  v = b2*v + w2*g*g;
 *   p -= step_size * m / (sqrt(v)/bc2_sqrt + eps)
 * with decay = 1 - lr*wd, w1 = 1 - b1, w2 = 1 - b2, step_size = lr/bc1 (host, double, rounded). */
__global__ void k22_adamw_kernel(float *p, const float *g, float *m, float *v, int64_t n,
                                 float decay, float w1, float b2, float w2, float step_size,
                                 float bc2_sqrt, float eps)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        float gi = g[i];
        float pi = __fmul_rn(p[i], decay);
        float mi = m[i];
        /* torch's lerp: the form that is exact at its nearer end. */
        if (w1 < 0.5f)
            mi = __fadd_rn(mi, __fmul_rn(w1, __fsub_rn(gi, mi)));
        else
            mi = __fsub_rn(gi, __fmul_rn(__fsub_rn(gi, mi), __fsub_rn(1.0f, w1)));
        float vi = __fadd_rn(__fmul_rn(b2, v[i]), __fmul_rn(__fmul_rn(w2, gi), gi));
        float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), bc2_sqrt), eps);
        pi = __fsub_rn(pi, __fdiv_rn(__fmul_rn(step_size, mi), denom));
        p[i] = pi;
        m[i] = mi;
        v[i] = vi;
    }
}

void k22_cuda_adamw_step(void *vctx, float *p, const float *g, float *m, float *v, int64_t n,
                         const k22_adamw_hparams *h)
{
    k22_cuda_ctx *ctx = K22_CUDA_CTX(vctx);
    K22_REQUIRE(h->step >= 1);
    if (n <= 0) return;
    double bc1 = 1.0 - pow((double)h->beta1, (double)h->step);
    double bc2 = 1.0 - pow((double)h->beta2, (double)h->step);
    float decay = (float)(1.0 - (double)h->lr * (double)h->weight_decay);
    float w1 = (float)(1.0 - (double)h->beta1), w2 = (float)(1.0 - (double)h->beta2);
    float step_size = (float)((double)h->lr / bc1);
    float bc2_sqrt = (float)sqrt(bc2);
    k22_adamw_kernel<<<k22_cuda_blocks(n), K22_CUDA_THREADS, 0, ctx->stream>>>(
        p, g, m, v, n, decay, w1, h->beta2, w2, step_size, bc2_sqrt, h->eps);
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
