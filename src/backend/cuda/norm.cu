/* norm.cu: group norm and layer norm, forward and backward, on the CUDA backend.
 *
 * Both normalize contiguous segments (one group of one sample: Cg*S values; one row: C values),
 * and element gi of the flat tensor belongs to channel (gi / S) % C (S = 1 for layer norm), so one
 * set of kernels serves both. Statistics and every reduction are in double, as in the CPU
 * reference (src/backend/cpu/ref_norm.c), so the two agree to float rounding:
 *  - a segment is cut into `nsplit` slices, one block each (long group-norm segments, e.g. MoVQ's
 *    4 x 768^2 values, would otherwise leave most of the GPU idle); a block forms its slice's
 *    count, mean and sum of squared deviations (two passes: no cancellation), and one thread per
 *    segment combines the slices in order (Chan et al.'s pairwise update): deterministic;
 *  - backward forms the per-segment sums of dxhat and dxhat*xhat the same way, then dx in one
 *    elementwise pass, and dgamma/dbeta per channel in a separate reduction.
 * layer_norm_fwd_y16 is layer_norm_fwd whose one apply pass stores each float rounded to 16 bits. */
#include "common.cuh"

/* Values per block slice: enough work per block to hide latency, enough blocks to fill the GPU. */
#define K22_NORM_SLICE 8192
#define K22_NORM_MAX_SPLIT 1024

typedef struct {
    int64_t nseg, len; /* segments and their length */
    int64_t S;         /* positions per channel inside a segment (1 for layer norm) */
    int C;             /* channels */
    int nsplit;        /* blocks per segment */
    int64_t chunk;     /* values per block: ceil(len / nsplit) */
} k22_norm_geom;

static k22_norm_geom k22_norm_geom_of(int64_t nseg, int64_t len, int64_t S, int C)
{
    k22_norm_geom g;
    g.nseg = nseg, g.len = len, g.S = S, g.C = C;
    int64_t ns = (len + K22_NORM_SLICE - 1) / K22_NORM_SLICE;
    g.nsplit = (int)(ns < 1 ? 1 : (ns > K22_NORM_MAX_SPLIT ? K22_NORM_MAX_SPLIT : ns));
    g.chunk = (len + g.nsplit - 1) / g.nsplit;
    return g;
}

/* ---- forward ---- */

/* Block (segment sg, slice k): part[(sg*nsplit + k)*3 + {0,1,2}] = count, mean, M2 of the slice. */
__global__ void k22_norm_stats_kernel(double *part, const float *x, k22_norm_geom g)
{
    __shared__ double sh[K22_CUDA_THREADS];
    int64_t sg = blockIdx.x / g.nsplit, k = blockIdx.x % g.nsplit;
    int64_t lo = k * g.chunk, hi = lo + g.chunk < g.len ? lo + g.chunk : g.len;
    const float *xs = x + sg * g.len;
    double s = 0;
    for (int64_t e = lo + threadIdx.x; e < hi; e += blockDim.x) s += xs[e];
    s = k22_cuda_block_sum(s, sh);
    double cnt = hi > lo ? (double)(hi - lo) : 0.0;
    double mu = cnt > 0 ? s / cnt : 0.0, ss = 0;
    for (int64_t e = lo + threadIdx.x; e < hi; e += blockDim.x) {
        double dv = xs[e] - mu;
        ss += dv * dv;
    }
    ss = k22_cuda_block_sum(ss, sh);
    if (threadIdx.x == 0) {
        double *p = part + (sg * g.nsplit + k) * 3;
        p[0] = cnt, p[1] = mu, p[2] = ss;
    }
}

/* One thread per segment: combine the slices in order; segstat[sg*2] = mean, [sg*2+1] = rstd. */
__global__ void k22_norm_finalize_kernel(double *segstat, float *mean, float *rstd,
                                         const double *part, k22_norm_geom g, float eps)
{
    K22_GRID_STRIDE(sg, g.nseg)
    {
        const double *p = part + sg * g.nsplit * 3;
        double n = 0, mu = 0, m2 = 0;
        for (int k = 0; k < g.nsplit; k++, p += 3) {
            if (p[0] == 0) continue;
            double nn = n + p[0], delta = p[1] - mu;
            mu += delta * p[0] / nn;
            m2 += p[2] + delta * delta * n * p[0] / nn;
            n = nn;
        }
        double r = 1.0 / sqrt(m2 / (double)g.len + (double)eps);
        segstat[sg * 2] = mu;
        segstat[sg * 2 + 1] = r;
        if (mean) mean[sg] = (float)mu;
        if (rstd) rstd[sg] = (float)r;
    }
}

/* y as floats, or rounded to bf16/fp16 (layer_norm_fwd_y16). */
template <class T>
__global__ void k22_norm_apply_kernel(T *y, const float *x, const double *segstat,
                                      const float *gamma, const float *beta, k22_norm_geom g,
                                      int fp16)
{
    K22_GRID_STRIDE(i, g.nseg * g.len)
    {
        k22_cuda_store(y + i,
                       k22_norm_value(x[i], segstat + i / g.len * 2, gamma, beta, (int)((i / g.S) % g.C)),
                       fp16);
    }
}

/* The statistics: the per-segment (mean, rstd) doubles in the op scratch; NULL when empty. */
static const double *k22_norm_stats(k22_cuda_ctx *ctx, float *mean, float *rstd, const float *x,
                                    k22_norm_geom g, float eps)
{
    if (g.nseg <= 0 || g.len <= 0) return NULL;
    size_t npart = (size_t)g.nseg * g.nsplit * 3, nstat = (size_t)g.nseg * 2;
    double *part = (double *)k22_cuda_scratch(ctx, (npart + nstat) * sizeof(double));
    double *segstat = part + npart;
    int64_t blocks = g.nseg * g.nsplit;
    K22_REQUIRE(blocks <= INT32_MAX);
    k22_norm_stats_kernel<<<(unsigned)blocks, K22_CUDA_THREADS, 0, ctx->stream>>>(part, x, g);
    CUDA_CHECK_LAUNCH();
    k22_norm_finalize_kernel<<<k22_cuda_blocks(g.nseg), K22_CUDA_THREADS, 0, ctx->stream>>>(
        segstat, mean, rstd, part, g, eps);
    CUDA_CHECK_LAUNCH();
    return segstat;
}

/* The statistics, then one pass writing y as T. */
template <class T>
static void k22_norm_fwd(void *vctx, T *y, float *mean, float *rstd, const float *x,
                         const float *gamma, const float *beta, k22_norm_geom g, float eps)
{
    k22_cuda_ctx *ctx = K22_CUDA_CTX(vctx);
    const double *segstat = k22_norm_stats(ctx, mean, rstd, x, g, eps);
    if (!segstat) return;
    K22_LAUNCH(k22_norm_apply_kernel<T>, g.nseg * g.len, y, x, segstat, gamma, beta, g,
               ctx->precision == K22_PREC_FP16);
}

/* ---- backward ---- */

/* xhat and dxhat of element i (segment sg, channel c), in double as the reference. */
__device__ __forceinline__ void k22_norm_hat(double *xh, double *dxh, int64_t i, int64_t sg, int c,
                                             const float *dy, const float *x, const float *mean,
                                             const float *rstd, const float *gamma)
{
    *xh = ((double)x[i] - (double)mean[sg]) * (double)rstd[sg];
    *dxh = (double)dy[i] * (double)(gamma ? gamma[c] : 1.0f);
}

/* Block (segment, slice): part[(sg*nsplit + k)*2 + {0,1}] = sum dxhat, sum dxhat*xhat. */
__global__ void k22_norm_bwd_sums_kernel(double *part, const float *dy, const float *x,
                                         const float *mean, const float *rstd, const float *gamma,
                                         k22_norm_geom g)
{
    __shared__ double sh[K22_CUDA_THREADS];
    int64_t sg = blockIdx.x / g.nsplit, k = blockIdx.x % g.nsplit;
    int64_t lo = k * g.chunk, hi = lo + g.chunk < g.len ? lo + g.chunk : g.len;
    double a = 0, b = 0;
    for (int64_t e = lo + threadIdx.x; e < hi; e += blockDim.x) {
        int64_t i = sg * g.len + e;
        double xh, dxh;
        k22_norm_hat(&xh, &dxh, i, sg, (int)((i / g.S) % g.C), dy, x, mean, rstd, gamma);
        a += dxh;
        b += dxh * xh;
    }
    a = k22_cuda_block_sum(a, sh);
    b = k22_cuda_block_sum(b, sh);
    if (threadIdx.x == 0) {
        part[(sg * g.nsplit + k) * 2] = a;
        part[(sg * g.nsplit + k) * 2 + 1] = b;
    }
}

/* segsum[sg*2 + {0,1}] = mean over the segment of dxhat and of dxhat*xhat. */
__global__ void k22_norm_bwd_finalize_kernel(double *segsum, const double *part, k22_norm_geom g)
{
    K22_GRID_STRIDE(sg, g.nseg)
    {
        double a = 0, b = 0;
        for (int k = 0; k < g.nsplit; k++) {
            a += part[(sg * g.nsplit + k) * 2];
            b += part[(sg * g.nsplit + k) * 2 + 1];
        }
        segsum[sg * 2] = a / (double)g.len;
        segsum[sg * 2 + 1] = b / (double)g.len;
    }
}

/* dx += rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)). */
__global__ void k22_norm_bwd_dx_kernel(float *dx, const float *dy, const float *x,
                                       const float *mean, const float *rstd, const float *gamma,
                                       const double *segsum, k22_norm_geom g)
{
    K22_GRID_STRIDE(i, g.nseg * g.len)
    {
        int64_t sg = i / g.len;
        double xh, dxh;
        k22_norm_hat(&xh, &dxh, i, sg, (int)((i / g.S) % g.C), dy, x, mean, rstd, gamma);
        dx[i] += (float)((double)rstd[sg] * (dxh - segsum[sg * 2] - xh * segsum[sg * 2 + 1]));
    }
}

/* Group norm, one block per channel c: dgamma[c] += sum dy*xhat, dbeta[c] += sum dy over the
 * B samples and S positions of channel c (seg = b*G + c/Cg). */
__global__ void k22_gn_bwd_affine_kernel(float *dgamma, float *dbeta, const float *dy,
                                         const float *x, const float *mean, const float *rstd,
                                         int B, int C, int64_t S, int G)
{
    __shared__ double sh[K22_CUDA_THREADS];
    int c = blockIdx.x, Cg = C / G;
    double sg_ = 0, sb = 0;
    for (int64_t j = threadIdx.x; j < (int64_t)B * S; j += blockDim.x) {
        int64_t b = j / S, i = (b * C + c) * S + j % S, sg = b * G + c / Cg;
        double xh = ((double)x[i] - (double)mean[sg]) * (double)rstd[sg];
        sg_ += (double)dy[i] * xh;
        sb += dy[i];
    }
    if (dgamma) sg_ = k22_cuda_block_sum(sg_, sh);
    if (dbeta) sb = k22_cuda_block_sum(sb, sh);
    if (threadIdx.x == 0) {
        if (dgamma) dgamma[c] += (float)sg_;
        if (dbeta) dbeta[c] += (float)sb;
    }
}

/* Layer norm: columns of a (N, C) matrix. Block (32 columns, K22_LN_ROWS row threads) over the
 * row slice blockIdx.y; part[(slice*C + c)*2 + {0,1}] = the slice's sums of dy*xhat and dy. */
#define K22_LN_ROWS 8
#define K22_LN_SLICE 1024
__global__ void k22_ln_bwd_affine_kernel(double *part, const float *dy, const float *x,
                                         const float *mean, const float *rstd, int N, int C)
{
    __shared__ double sg_[K22_LN_ROWS][33], sb[K22_LN_ROWS][33];
    int c = blockIdx.x * 32 + threadIdx.x;
    int64_t lo = (int64_t)blockIdx.y * K22_LN_SLICE;
    int64_t hi = lo + K22_LN_SLICE < N ? lo + K22_LN_SLICE : N;
    double a = 0, b = 0;
    if (c < C)
        for (int64_t n = lo + threadIdx.y; n < hi; n += K22_LN_ROWS) {
            int64_t i = n * C + c;
            double xh = ((double)x[i] - (double)mean[n]) * (double)rstd[n];
            a += (double)dy[i] * xh;
            b += dy[i];
        }
    sg_[threadIdx.y][threadIdx.x] = a;
    sb[threadIdx.y][threadIdx.x] = b;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
        for (int r = 1; r < K22_LN_ROWS; r++) a += sg_[r][threadIdx.x], b += sb[r][threadIdx.x];
        part[((int64_t)blockIdx.y * C + c) * 2] = a;
        part[((int64_t)blockIdx.y * C + c) * 2 + 1] = b;
    }
}

__global__ void k22_ln_bwd_affine_finalize_kernel(float *dgamma, float *dbeta, const double *part,
                                                  int nslice, int C)
{
    K22_GRID_STRIDE(c, C)
    {
        double a = 0, b = 0;
        for (int s = 0; s < nslice; s++) {
            a += part[((int64_t)s * C + c) * 2];
            b += part[((int64_t)s * C + c) * 2 + 1];
        }
        if (dgamma) dgamma[c] += (float)a;
        if (dbeta) dbeta[c] += (float)b;
    }
}

/* dx for both norms; scratch: [slice partials | segment sums]. */
static void k22_norm_bwd_dx(k22_cuda_ctx *ctx, float *dx, const float *dy, const float *x,
                            const float *mean, const float *rstd, const float *gamma,
                            k22_norm_geom g)
{
    size_t npart = (size_t)g.nseg * g.nsplit * 2;
    double *part = (double *)k22_cuda_scratch(ctx, (npart + (size_t)g.nseg * 2) * sizeof(double));
    double *segsum = part + npart;
    int64_t blocks = g.nseg * g.nsplit;
    K22_REQUIRE(blocks <= INT32_MAX);
    k22_norm_bwd_sums_kernel<<<(unsigned)blocks, K22_CUDA_THREADS, 0, ctx->stream>>>(
        part, dy, x, mean, rstd, gamma, g);
    CUDA_CHECK_LAUNCH();
    k22_norm_bwd_finalize_kernel<<<k22_cuda_blocks(g.nseg), K22_CUDA_THREADS, 0, ctx->stream>>>(
        segsum, part, g);
    CUDA_CHECK_LAUNCH();
    k22_norm_bwd_dx_kernel<<<k22_cuda_blocks(g.nseg * g.len), K22_CUDA_THREADS, 0, ctx->stream>>>(
        dx, dy, x, mean, rstd, gamma, segsum, g);
    CUDA_CHECK_LAUNCH();
}

/* ---- entries ---- */

void k22_cuda_group_norm_fwd(void *vctx, float *y, float *mean, float *rstd, const float *x,
                             const float *gamma, const float *beta, int B, int C, int S, int G,
                             float eps)
{
    K22_REQUIRE(G > 0 && C % G == 0);
    k22_norm_geom g = k22_norm_geom_of((int64_t)B * G, (int64_t)(C / G) * S, S, C);
    k22_norm_fwd(vctx, y, mean, rstd, x, gamma, beta, g, eps);
}

/* See common.cuh. */
const double *k22_cuda_group_norm_stats(k22_cuda_ctx *ctx, float *mean, float *rstd,
                                        const float *x, int B, int C, int S, int G, float eps)
{
    K22_REQUIRE(G > 0 && C % G == 0);
    return k22_norm_stats(ctx, mean, rstd, x, k22_norm_geom_of((int64_t)B * G, (int64_t)(C / G) * S, S, C),
                          eps);
}

void k22_cuda_group_norm_bwd(void *vctx, float *dx, float *dgamma, float *dbeta, const float *dy,
                             const float *x, const float *mean, const float *rstd,
                             const float *gamma, int B, int C, int S, int G)
{
    k22_cuda_ctx *ctx = K22_CUDA_CTX(vctx);
    K22_REQUIRE(G > 0 && C % G == 0);
    if (B <= 0 || C <= 0 || S <= 0) return;
    k22_norm_geom g = k22_norm_geom_of((int64_t)B * G, (int64_t)(C / G) * S, S, C);
    if (dx) k22_norm_bwd_dx(ctx, dx, dy, x, mean, rstd, gamma, g);
    if (dgamma || dbeta) {
        k22_gn_bwd_affine_kernel<<<C, K22_CUDA_THREADS, 0, ctx->stream>>>(
            dgamma, dbeta, dy, x, mean, rstd, B, C, S, G);
        CUDA_CHECK_LAUNCH();
    }
}

void k22_cuda_layer_norm_fwd(void *vctx, float *y, float *mean, float *rstd, const float *x,
                             const float *gamma, const float *beta, int N, int C, float eps)
{
    k22_norm_geom g = k22_norm_geom_of(N, C, 1, C);
    k22_norm_fwd(vctx, y, mean, rstd, x, gamma, beta, g, eps);
}

void k22_cuda_layer_norm_fwd_y16(void *vctx, uint16_t *y16, float *mean, float *rstd,
                                 const float *x, const float *gamma, const float *beta, int N,
                                 int C, float eps)
{
    K22_REQUIRE(K22_CUDA_CTX(vctx)->precision != K22_PREC_FP32);
    k22_norm_fwd(vctx, y16, mean, rstd, x, gamma, beta, k22_norm_geom_of(N, C, 1, C), eps);
}

void k22_cuda_layer_norm_bwd(void *vctx, float *dx, float *dgamma, float *dbeta, const float *dy,
                             const float *x, const float *mean, const float *rstd,
                             const float *gamma, int N, int C)
{
    k22_cuda_ctx *ctx = K22_CUDA_CTX(vctx);
    if (N <= 0 || C <= 0) return;
    k22_norm_geom g = k22_norm_geom_of(N, C, 1, C);
    if (dx) k22_norm_bwd_dx(ctx, dx, dy, x, mean, rstd, gamma, g);
    if (dgamma || dbeta) {
        int nslice = (N + K22_LN_SLICE - 1) / K22_LN_SLICE;
        K22_REQUIRE(nslice <= 65535);
        double *part = (double *)k22_cuda_scratch(ctx, (size_t)nslice * C * 2 * sizeof(double));
        dim3 grid((unsigned)((C + 31) / 32), (unsigned)nslice), block(32, K22_LN_ROWS);
        k22_ln_bwd_affine_kernel<<<grid, block, 0, ctx->stream>>>(part, dy, x, mean, rstd, N, C);
        CUDA_CHECK_LAUNCH();
        k22_ln_bwd_affine_finalize_kernel<<<k22_cuda_blocks(C), K22_CUDA_THREADS, 0, ctx->stream>>>(
            dgamma, dbeta, part, nslice, C);
        CUDA_CHECK_LAUNCH();
    }
}
