/* embed_loss.cu: the sinusoidal timestep embedding and the per-sample weighted MSE loss on the
 * CUDA backend, forward and backward. Both are tiny next to a model, so they favour agreement
 * with the CPU reference (src/backend/cpu/ref_embed_loss.c) over speed: the frequencies and
 * sines are evaluated in double and rounded once (correctly rounded, as glibc's float functions
 * nearly always are), and every sum is in double, one block per sample in a fixed order. */
#include "common.cuh"

#include <math.h>

/* The reference's float frequency i: expf((nl * i) / den), nl = (float)-ln(max_period) and
 * den = (float)(half - shift) formed on the host. */
__device__ __forceinline__ float k22_temb_freq(int i, float nl, float den)
{
    return (float)exp((double)__fdiv_rn(__fmul_rn(nl, (float)i), den));
}

__global__ void k22_temb_fwd_kernel(float *y, const float *t, int N, int dim, int flip,
                                    float nl, float den, float scale)
{
    int half = dim / 2;
    K22_GRID_STRIDE(e, (int64_t)N * half)
    {
        int64_t n = e / half;
        int i = (int)(e % half);
        float emb = __fmul_rn(scale, __fmul_rn(t[n], k22_temb_freq(i, nl, den)));
        float s = (float)sin((double)emb), c = (float)cos((double)emb);
        float *yn = y + n * dim;
        yn[i] = flip ? c : s;
        yn[half + i] = flip ? s : c;
        if (i == 0 && dim % 2) yn[dim - 1] = 0.0f;
    }
}

/* One block per timestep n: dt[n] += sum_i scale freq_i (dsin cos(emb) - dcos sin(emb)). */
__global__ void k22_temb_bwd_kernel(float *dt, const float *dy, const float *t, int N, int dim,
                                    int flip, float nl, float den, float scale)
{
    __shared__ double sh[K22_CUDA_THREADS];
    int half = dim / 2;
    for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
        const float *dyn = dy + n * dim;
        double s = 0;
        for (int i = threadIdx.x; i < half; i += blockDim.x) {
            float fr = k22_temb_freq(i, nl, den);
            double f = (double)scale * fr;
            double emb = (double)__fmul_rn(scale, __fmul_rn(t[n], fr));
            double dsin = flip ? dyn[half + i] : dyn[i];
            double dcos = flip ? dyn[i] : dyn[half + i];
            s += f * (dsin * cos(emb) - dcos * sin(emb));
        }
        s = k22_cuda_block_sum(s, sh);
        if (threadIdx.x == 0) dt[n] += (float)s;
    }
}

static void k22_temb_consts(int dim, float shift, float max_period, float *nl, float *den)
{
    *nl = (float)(-log((double)max_period));
    *den = (float)((double)(dim / 2) - (double)shift);
}

void k22_cuda_timestep_embed_fwd(void *vctx, float *y, const float *t, int N, int dim,
                                 int flip_sin_to_cos, float shift, float scale, float max_period)
{
    k22_cuda_ctx *ctx = K22_CUDA_CTX(vctx);
    if (N <= 0 || dim <= 0) return;
    float nl, den;
    k22_temb_consts(dim, shift, max_period, &nl, &den);
    if (dim / 2 == 0) { /* dim 1: only the zero pad */
        CUDA_CHECK(cudaMemsetAsync(y, 0, (size_t)N * dim * sizeof(float), ctx->stream));
        return;
    }
    int64_t n = (int64_t)N * (dim / 2);
    k22_temb_fwd_kernel<<<k22_cuda_blocks(n), K22_CUDA_THREADS, 0, ctx->stream>>>(
        y, t, N, dim, flip_sin_to_cos, nl, den, scale);
    CUDA_CHECK_LAUNCH();
}

void k22_cuda_timestep_embed_bwd(void *vctx, float *dt, const float *dy, const float *t, int N,
                                 int dim, int flip_sin_to_cos, float shift, float scale,
                                 float max_period)
{
    k22_cuda_ctx *ctx = K22_CUDA_CTX(vctx);
    if (!dt || N <= 0 || dim < 2) return;
    float nl, den;
    k22_temb_consts(dim, shift, max_period, &nl, &den);
    unsigned grid = (unsigned)(N < 65535 ? N : 65535);
    k22_temb_bwd_kernel<<<grid, K22_CUDA_THREADS, 0, ctx->stream>>>(
        dt, dy, t, N, dim, flip_sin_to_cos, nl, den, scale);
    CUDA_CHECK_LAUNCH();
}

/* ---- weighted MSE ---- */

/* One block per sample: sums[b] = mean_n (pred - target)^2 in double; per_sample[b] its float. */
__global__ void k22_mse_rows_kernel(double *sums, float *per_sample, const float *pred,
                                    const float *target, int B, int64_t N)
{
    __shared__ double sh[K22_CUDA_THREADS];
    for (int64_t b = blockIdx.x; b < B; b += gridDim.x) {
        double s = 0;
        for (int64_t i = threadIdx.x; i < N; i += blockDim.x) {
            double e = (double)pred[b * N + i] - target[b * N + i];
            s += e * e;
        }
        s = k22_cuda_block_sum(s, sh);
        if (threadIdx.x == 0) {
            s /= (double)N;
            sums[b] = s;
            if (per_sample) per_sample[b] = (float)s;
        }
    }
}

/* loss[0] = (1/B) sum_b w[b] sums[b], in sample order (one thread: B is a batch size). */
__global__ void k22_mse_total_kernel(float *loss, const double *sums, const float *w, int B)
{
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    double total = 0;
    for (int b = 0; b < B; b++) total += (w ? (double)w[b] : 1.0) * sums[b];
    loss[0] = (float)(total / B);
}

__global__ void k22_mse_bwd_kernel(float *dpred, float dloss, const float *pred,
                                   const float *target, const float *w, int B, int64_t N)
{
    K22_GRID_STRIDE(e, (int64_t)B * N)
    {
        int64_t b = e / N;
        double c = (double)dloss * (w ? (double)w[b] : 1.0) * 2.0 / ((double)B * (double)N);
        dpred[e] += (float)(c * ((double)pred[e] - target[e]));
    }
}

void k22_cuda_mse_fwd(void *vctx, float *loss, float *per_sample, const float *pred,
                      const float *target, const float *w, int B, int64_t N)
{
    k22_cuda_ctx *ctx = K22_CUDA_CTX(vctx);
    K22_REQUIRE(B > 0 && N > 0);
    double *sums = (double *)k22_cuda_scratch(ctx, (size_t)B * sizeof(double));
    unsigned grid = (unsigned)(B < 65535 ? B : 65535);
    k22_mse_rows_kernel<<<grid, K22_CUDA_THREADS, 0, ctx->stream>>>(
        sums, per_sample, pred, target, B, N);
    CUDA_CHECK_LAUNCH();
    k22_mse_total_kernel<<<1, 1, 0, ctx->stream>>>(loss, sums, w, B);
    CUDA_CHECK_LAUNCH();
}

void k22_cuda_mse_bwd(void *vctx, float *dpred, float dloss, const float *pred,
                      const float *target, const float *w, int B, int64_t N)
{
    k22_cuda_ctx *ctx = K22_CUDA_CTX(vctx);
    if (!dpred || B <= 0 || N <= 0) return;
    int64_t n = (int64_t)B * N;
    k22_mse_bwd_kernel<<<k22_cuda_blocks(n), K22_CUDA_THREADS, 0, ctx->stream>>>(
        dpred, dloss, pred, target, w, B, N);
    CUDA_CHECK_LAUNCH();
}
