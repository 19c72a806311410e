/* layout.cu: the data-movement ops and their backwards on the CUDA backend: concat, permute,
 * nearest 2x upsample, 2x2 average pooling, nearest resize, and the per-(sample, channel) affine.
 * One thread per output element, gathering (never scattering), so no two threads write one
 * value and no atomics are needed; the float expressions round exactly as the CPU reference's
 * (explicit _rn intrinsics where nvcc would otherwise fuse a multiply and an add). */
#include "common.cuh"

/* ---- concat ---- */

__global__ void k22_concat_fwd_kernel(float *y, const float *a, const float *b, int64_t n,
                                      int64_t ra, int64_t rb)
{
    K22_GRID_STRIDE(e, n)
    {
        int64_t o = e / (ra + rb), r = e % (ra + rb);
        y[e] = r < ra ? a[o * ra + r] : b[o * rb + (r - ra)];
    }
}

__global__ void k22_concat_bwd_kernel(float *da, float *db, const float *dy, int64_t n,
                                      int64_t ra, int64_t rb)
{
    K22_GRID_STRIDE(e, n)
    {
        int64_t o = e / (ra + rb), r = e % (ra + rb);
        if (r < ra) {
            if (da) da[o * ra + r] += dy[e];
        } else if (db) {
            db[o * rb + (r - ra)] += dy[e];
        }
    }
}

void k22_cuda_concat_fwd(void *vctx, float *y, const float *a, const float *b, int64_t outer,
                         int64_t na, int64_t nb, int64_t inner)
{
    int64_t ra = na * inner, rb = nb * inner;
    K22_LAUNCH(k22_concat_fwd_kernel, outer * (ra + rb), y, a, b, outer * (ra + rb), ra, rb);
}

void k22_cuda_concat_bwd(void *vctx, float *da, float *db, const float *dy, int64_t outer,
                         int64_t na, int64_t nb, int64_t inner)
{
    int64_t ra = na * inner, rb = nb * inner;
    if (!da && !db) return;
    K22_LAUNCH(k22_concat_bwd_kernel, outer * (ra + rb), da, db, dy, outer * (ra + rb), ra, rb);
}

/* ---- permute ---- */

/* Output shape os (padded to K22_PERMUTE_DIMS dims with leading 1s) and, per output dim, the
 * stride of the input dim it walks. */
typedef struct {
    int64_t os[K22_PERMUTE_DIMS], st[K22_PERMUTE_DIMS];
} k22_perm_geom;

static k22_perm_geom k22_perm_geom_of(int ndim, const int64_t *in_shape, const int *perm)
{
    k22_perm_geom g;
    int64_t is[K22_PERMUTE_DIMS], acc = 1;
    K22_REQUIRE(ndim >= 1 && ndim <= K22_PERMUTE_DIMS);
    for (int i = ndim - 1; i >= 0; i--) {
        is[i] = acc;
        acc *= in_shape[i];
    }
    int pad = K22_PERMUTE_DIMS - ndim;
    for (int i = 0; i < K22_PERMUTE_DIMS; i++) {
        if (i < pad) {
            g.os[i] = 1, g.st[i] = 0;
        } else {
            int p = perm[i - pad];
            K22_REQUIRE(p >= 0 && p < ndim);
            g.os[i] = in_shape[p], g.st[i] = is[p];
        }
    }
    return g;
}

static int64_t k22_perm_numel(const k22_perm_geom &g)
{
    int64_t n = 1;
    for (int i = 0; i < K22_PERMUTE_DIMS; i++) n *= g.os[i];
    return n;
}

/* The input index of output element o: its digits in the output shape, innermost first. */
__device__ __forceinline__ int64_t k22_perm_src(const k22_perm_geom &g, int64_t o)
{
    int64_t in = 0;
#pragma unroll
    for (int i = K22_PERMUTE_DIMS - 1; i > 0; i--) {
        in += (o % g.os[i]) * g.st[i];
        o /= g.os[i];
    }
    return in + o * g.st[0];
}

__global__ void k22_permute_fwd_kernel(float *y, const float *x, k22_perm_geom g, int64_t n)
{
    K22_GRID_STRIDE(o, n) y[o] = x[k22_perm_src(g, o)];
}

/* A permutation is a bijection: each dx element has exactly one writer. */
__global__ void k22_permute_bwd_kernel(float *dx, const float *dy, k22_perm_geom g, int64_t n)
{
    K22_GRID_STRIDE(o, n) dx[k22_perm_src(g, o)] += dy[o];
}

void k22_cuda_permute_fwd(void *vctx, float *y, const float *x, int ndim, const int64_t *in_shape,
                          const int *perm)
{
    k22_perm_geom g = k22_perm_geom_of(ndim, in_shape, perm);
    int64_t n = k22_perm_numel(g);
    K22_LAUNCH(k22_permute_fwd_kernel, n, y, x, g, n);
}

void k22_cuda_permute_bwd(void *vctx, float *dx, const float *dy, int ndim,
                          const int64_t *in_shape, const int *perm)
{
    k22_perm_geom g = k22_perm_geom_of(ndim, in_shape, perm);
    int64_t n = k22_perm_numel(g);
    if (!dx) return;
    K22_LAUNCH(k22_permute_bwd_kernel, n, dx, dy, g, n);
}

/* ---- nearest 2x upsample ---- */

__global__ void k22_upsample2x_fwd_kernel(float *y, const float *x, int64_t n, int H, int W)
{
    K22_GRID_STRIDE(e, n)
    {
        int64_t j = e % (2 * W), r = e / (2 * W);
        int64_t i = r % (2 * H), p = r / (2 * H);
        y[e] = x[(p * H + i / 2) * W + j / 2];
    }
}

/* dx gathers its four dy values, summed in double in the reference's order. */
__global__ void k22_upsample2x_bwd_kernel(float *dx, const float *dy, int64_t n, int H, int W)
{
    K22_GRID_STRIDE(e, n)
    {
        int64_t j = e % W, r = e / W;
        int64_t i = r % H, p = r / H;
        const float *d0 = dy + (p * 2 * H + 2 * i) * 2 * W + 2 * j;
        dx[e] += (float)((double)d0[0] + d0[1] + d0[2 * W] + d0[2 * W + 1]);
    }
}

void k22_cuda_upsample2x_fwd(void *vctx, float *y, const float *x, int B, int C, int H, int W)
{
    int64_t n = (int64_t)B * C * 4 * H * W;
    K22_LAUNCH(k22_upsample2x_fwd_kernel, n, y, x, n, H, W);
}

void k22_cuda_upsample2x_bwd(void *vctx, float *dx, const float *dy, int B, int C, int H, int W)
{
    int64_t n = (int64_t)B * C * H * W;
    if (!dx) return;
    K22_LAUNCH(k22_upsample2x_bwd_kernel, n, dx, dy, n, H, W);
}

/* ---- 2x2 average pooling ---- */

__global__ void k22_avgpool2x_fwd_kernel(float *y, const float *x, int64_t n, int H, int W)
{
    int OH = H / 2, OW = W / 2;
    K22_GRID_STRIDE(e, n)
    {
        int64_t j = e % OW, r = e / OW;
        int64_t i = r % OH, p = r / OH;
        const float *x0 = x + (p * H + 2 * i) * W + 2 * j;
        double s = (double)x0[0] + x0[1] + x0[W] + x0[W + 1];
        y[e] = (float)(s * 0.25);
    }
}

/* Each dx element takes a quarter of the one dy its window produced (none past an odd edge). */
__global__ void k22_avgpool2x_bwd_kernel(float *dx, const float *dy, int64_t n, int H, int W)
{
    int OH = H / 2, OW = W / 2;
    K22_GRID_STRIDE(e, n)
    {
        int64_t ix = e % W, r = e / W;
        int64_t iy = r % H, p = r / H;
        if (iy / 2 >= OH || ix / 2 >= OW) continue;
        dx[e] += __fmul_rn(dy[(p * OH + iy / 2) * OW + ix / 2], 0.25f);
    }
}

void k22_cuda_avgpool2x_fwd(void *vctx, float *y, const float *x, int B, int C, int H, int W)
{
    int64_t n = (int64_t)B * C * (H / 2) * (W / 2);
    K22_LAUNCH(k22_avgpool2x_fwd_kernel, n, y, x, n, H, W);
}

void k22_cuda_avgpool2x_bwd(void *vctx, float *dx, const float *dy, int B, int C, int H, int W)
{
    int64_t n = (int64_t)B * C * H * W;
    if (!dx) return;
    K22_LAUNCH(k22_avgpool2x_bwd_kernel, n, dx, dy, n, H, W);
}

/* ---- nearest resize ---- */

/* torch's source index (see k22_resize_nearest_src in src/backend/cpu/ref_resize.c): a float
 * product, floored, clamped. __fmul_rn keeps it the one rounding the CPU does. */
__device__ __forceinline__ int k22_resize_src(int i, int in, int out)
{
    if (in == out) return i;
    float scale = __fdiv_rn((float)in, (float)out);
    int s = (int)floorf(__fmul_rn((float)i, scale));
    return s < in - 1 ? s : in - 1;
}

__global__ void k22_resize_nearest_kernel(float *y, const float *x, int64_t n, int H, int W,
                                          int OH, int OW)
{
    K22_GRID_STRIDE(e, n)
    {
        int j = (int)(e % OW);
        int64_t r = e / OW;
        int i = (int)(r % OH);
        int64_t p = r / OH;
        y[e] = x[(p * H + k22_resize_src(i, H, OH)) * W + k22_resize_src(j, W, OW)];
    }
}

void k22_cuda_resize_nearest_fwd(void *vctx, float *y, const float *x, int B, int C, int H, int W,
                                 int OH, int OW)
{
    int64_t n = (int64_t)B * C * OH * OW;
    K22_LAUNCH(k22_resize_nearest_kernel, n, y, x, n, H, W, OH, OW);
}

/* ---- per-(sample, channel) affine ---- */

__device__ __forceinline__ float k22_affine_factor(const float *scale, int64_t p, float off)
{
    return __fadd_rn(scale ? scale[p] : 1.0f, off);
}

__global__ void k22_chan_affine_fwd_kernel(float *y, const float *x, const float *scale,
                                           const float *shift, float off, int64_t n, int64_t S)
{
    K22_GRID_STRIDE(e, n)
    {
        int64_t p = e / S;
        float a = k22_affine_factor(scale, p, off), b = shift ? shift[p] : 0.0f;
        y[e] = __fadd_rn(__fmul_rn(x[e], a), b);
    }
}

__global__ void k22_chan_affine_dx_kernel(float *dx, const float *dy, const float *scale,
                                          float off, int64_t n, int64_t S)
{
    K22_GRID_STRIDE(e, n)
    dx[e] = __fadd_rn(dx[e], __fmul_rn(dy[e], k22_affine_factor(scale, e / S, off)));
}

/* One block per (sample, channel) plane: dscale += sum dy*x, dshift += sum dy, in double. */
__global__ void k22_chan_affine_dparam_kernel(float *dscale, float *dshift, const float *dy,
                                              const float *x, int64_t planes, int64_t S)
{
    __shared__ double sh[K22_CUDA_THREADS];
    for (int64_t p = blockIdx.x; p < planes; p += gridDim.x) {
        double ds = 0, db = 0;
        for (int64_t s = threadIdx.x; s < S; s += blockDim.x) {
            float g = dy[p * S + s];
            if (dscale) ds += (double)g * x[p * S + s];
            db += g;
        }
        if (dscale) {
            ds = k22_cuda_block_sum(ds, sh);
            if (threadIdx.x == 0) dscale[p] += (float)ds;
        }
        if (dshift) {
            db = k22_cuda_block_sum(db, sh);
            if (threadIdx.x == 0) dshift[p] += (float)db;
        }
    }
}

void k22_cuda_chan_affine_fwd(void *vctx, float *y, const float *x, const float *scale,
                              const float *shift, float scale_offset, int B, int C, int64_t S)
{
    int64_t n = (int64_t)B * C * S;
    K22_LAUNCH(k22_chan_affine_fwd_kernel, n, y, x, scale, shift, scale_offset, n, S);
}

void k22_cuda_chan_affine_bwd(void *vctx, float *dx, float *dscale, float *dshift,
                              const float *dy, const float *x, const float *scale,
                              float scale_offset, int B, int C, int64_t S)
{
    k22_cuda_ctx *ctx = K22_CUDA_CTX(vctx);
    int64_t planes = (int64_t)B * C, n = planes * S;
    if (n <= 0) return;
    if (dx) {
        k22_chan_affine_dx_kernel<<<k22_cuda_blocks(n), K22_CUDA_THREADS, 0, ctx->stream>>>(
            dx, dy, scale, scale_offset, n, S);
        CUDA_CHECK_LAUNCH();
    }
    if (dscale || dshift) {
        unsigned grid = (unsigned)(planes < 65535 ? planes : 65535);
        k22_chan_affine_dparam_kernel<<<grid, K22_CUDA_THREADS, 0, ctx->stream>>>(
            dscale, dshift, dy, x, planes, S);
        CUDA_CHECK_LAUNCH();
    }
}
