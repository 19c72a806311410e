/* norm_act.cu: fused group norm + per-(sample, channel) affine + activation (ops.h
 * group_norm_act) on the CUDA backend.
 *
 * Forward: norm.cu's statistics, then one pass that forms each element's normalized value with
 * norm.cu's own k22_norm_value (explicitly rounded, so no contraction can make it differ) and
 * applies the affine and SiLU with exactly layout.cu's and elementwise.cu's float expressions:
 * y is bit-identical to group_norm_fwd -> chan_affine_fwd -> act_fwd. The intermediate n and m
 * are never stored; the traffic is 3 reads of x and 1 write of y instead of the chain's 7
 * passes. The y16 forward (bf16/fp16) is the same pass storing each float rounded to 16 bits.
 *
 * Backward recomputes u = n * a + shift (n = xhat * gamma + beta) from x, mean, rstd:
 *  1. one block per (sample, channel) plane: P = sum du, Q = sum du * xhat (du = dy * act'(u)),
 *     in double, block tree order (deterministic);
 *  2. one thread per plane, channel or segment: dshift += P, dscale += gamma Q + beta P,
 *     dgamma += sum_b a Q, dbeta += sum_b a P, the segment means of dxhat and dxhat * xhat;
 *  3. elementwise: dx += rstd (du a gamma - mean(dxhat) - xhat mean(dxhat xhat)).
 * The same sums as the CPU reference (src/backend/cpu/ref_norm_act.c), so they agree to float
 * rounding. */
#include "common.cuh"

__device__ __forceinline__ float k22_na_act(int act, float u)
{
    return act == K22_ACT_SILU ? u / (1.0f + expf(-u)) : u; /* elementwise.cu's SiLU */
}

__device__ __forceinline__ float k22_na_slope(int act, float u)
{
    if (act != K22_ACT_SILU) return 1.0f;
    float s = 1.0f / (1.0f + expf(-u));
    return s * (1.0f + u * (1.0f - s));
}

/* Shapes and the optional inputs' presence, passed by value to every kernel. */
typedef struct {
    int B, C, G, Cg, act;
    int64_t S, ld, planes, n;
    float off;
} k22_na_geom;

static k22_na_geom k22_na_geom_of(int act, int B, int C, int S, int G, int64_t ld, float off)
{
    k22_na_geom g;
    g.B = B, g.C = C, g.G = G, g.Cg = C / G, g.act = act;
    g.S = S, g.ld = ld, g.planes = (int64_t)B * C, g.n = g.planes * S;
    g.off = off;
    return g;
}

/* Index into scale/shift rows of plane p. */
__device__ __forceinline__ int64_t k22_na_at(int64_t p, const k22_na_geom &g)
{
    return (p / g.C) * g.ld + p % g.C;
}

/* Element i of the forward: group norm's float (norm.cu's k22_norm_value from the segment's
 * statistics st), then, when `apply`, act(v * (scale + off) + shift) as layout.cu's chan_affine
 * then the act: the same floats as group_norm_fwd -> chan_affine_fwd -> act_fwd. */
__device__ __forceinline__ float k22_na_fwd_value(int64_t i, const float *x, const double *st,
                                                  const float *gamma, const float *beta,
                                                  const float *scale, const float *shift,
                                                  const k22_na_geom &g, int apply)
{
    int64_t p = i / g.S;
    int c = (int)(p % g.C);
    float v = k22_norm_value(x[i], st + (p / g.C * g.G + c / g.Cg) * 2, gamma, beta, c);
    if (!apply) return v;
    int64_t at = k22_na_at(p, g);
    float a = __fadd_rn(scale ? scale[at] : 1.0f, g.off), b = shift ? shift[at] : 0.0f;
    return k22_na_act(g.act, __fadd_rn(__fmul_rn(v, a), b));
}

/* The forward's one pass over x after the statistics: y as floats, or rounded to bf16/fp16. */
template <class T>
__global__ void k22_na_fwd_kernel(T *y, const float *x, const double *st, const float *gamma,
                                  const float *beta, const float *scale, const float *shift,
                                  k22_na_geom g, int apply, int fp16)
{
    K22_GRID_STRIDE(i, g.n)
    k22_cuda_store(y + i, k22_na_fwd_value(i, x, st, gamma, beta, scale, shift, g, apply), fp16);
}

/* Per-plane constants of the backward. */
typedef struct {
    float mu, r, ga, be, a, sh;
} k22_na_plane;

__device__ __forceinline__ k22_na_plane k22_na_plane_of(int64_t p, const float *mean,
                                                        const float *rstd, const float *gamma,
                                                        const float *beta, const float *scale,
                                                        const float *shift, const k22_na_geom &g)
{
    int c = (int)(p % g.C);
    int64_t sg = (p / g.C) * g.G + c / g.Cg, at = k22_na_at(p, g);
    k22_na_plane q;
    q.mu = mean[sg], q.r = rstd[sg];
    q.ga = gamma ? gamma[c] : 1.0f, q.be = beta ? beta[c] : 0.0f;
    q.a = __fadd_rn(scale ? scale[at] : 1.0f, g.off), q.sh = shift ? shift[at] : 0.0f;
    return q;
}

/* du of one element; *xh gets its normalized value. */
__device__ __forceinline__ float k22_na_du(float *xh, float xv, float dyv, const k22_na_plane &q,
                                           int act)
{
    *xh = (xv - q.mu) * q.r;
    float u = (*xh * q.ga + q.be) * q.a + q.sh;
    return dyv * k22_na_slope(act, u);
}

/* 1. Block per plane: PQ[p*2] = sum du, PQ[p*2+1] = sum du * xhat. */
__global__ void k22_na_bwd_plane_kernel(double *PQ, const float *dy, const float *x,
                                        const float *mean, const float *rstd, const float *gamma,
                                        const float *beta, const float *scale, const float *shift,
                                        k22_na_geom g)
{
    __shared__ double sh[K22_CUDA_THREADS];
    for (int64_t p = blockIdx.x; p < g.planes; p += gridDim.x) {
        k22_na_plane q = k22_na_plane_of(p, mean, rstd, gamma, beta, scale, shift, g);
        double sp = 0, sq = 0;
        for (int64_t s = threadIdx.x; s < g.S; s += blockDim.x) {
            float xh, du = k22_na_du(&xh, x[p * g.S + s], dy[p * g.S + s], q, g.act);
            sp += du;
            sq += (double)du * xh;
        }
        sp = k22_cuda_block_sum(sp, sh);
        sq = k22_cuda_block_sum(sq, sh);
        if (threadIdx.x == 0) PQ[p * 2] = sp, PQ[p * 2 + 1] = sq;
    }
}

/* 2. Index j over [planes | C channels | B*G segments]. AB[sg*2 + {0,1}] = the segment means of
 * dxhat and dxhat * xhat. */
__global__ void k22_na_bwd_reduce_kernel(double *AB, float *dgamma, float *dbeta, float *dscale,
                                         float *dshift, const double *PQ, const float *gamma,
                                         const float *beta, const float *scale, k22_na_geom g)
{
    int64_t nseg = (int64_t)g.B * g.G;
    K22_GRID_STRIDE(j, g.planes + g.C + nseg)
    {
        if (j < g.planes) {
            int c = (int)(j % g.C);
            int64_t at = k22_na_at(j, g);
            double ga = gamma ? gamma[c] : 1.0f, be = beta ? beta[c] : 0.0f;
            if (dshift) dshift[at] += (float)PQ[j * 2];
            if (dscale) dscale[at] += (float)(ga * PQ[j * 2 + 1] + be * PQ[j * 2]);
        } else if (j < g.planes + g.C) {
            int c = (int)(j - g.planes);
            if (!dgamma && !dbeta) continue;
            double sgm = 0, sbt = 0;
            for (int b = 0; b < g.B; b++) {
                int64_t p = (int64_t)b * g.C + c;
                double a = __fadd_rn(scale ? scale[b * g.ld + c] : 1.0f, g.off);
                sgm += a * PQ[p * 2 + 1];
                sbt += a * PQ[p * 2];
            }
            if (dgamma) dgamma[c] += (float)sgm;
            if (dbeta) dbeta[c] += (float)sbt;
        } else {
            int64_t sg = j - g.planes - g.C, b = sg / g.G;
            int g0 = (int)(sg % g.G) * g.Cg;
            double sa = 0, sb = 0, len = (double)g.Cg * (double)g.S;
            for (int c = g0; c < g0 + g.Cg; c++) {
                int64_t p = b * g.C + c;
                double k = (double)__fadd_rn(scale ? scale[b * g.ld + c] : 1.0f, g.off) *
                           (gamma ? gamma[c] : 1.0f);
                sa += k * PQ[p * 2];
                sb += k * PQ[p * 2 + 1];
            }
            AB[sg * 2] = sa / len;
            AB[sg * 2 + 1] = sb / len;
        }
    }
}

/* 3. dx += rstd * (du * a * gamma - mean(dxhat) - xhat * mean(dxhat * xhat)). */
__global__ void k22_na_bwd_dx_kernel(float *dx, const float *dy, const float *x, const float *mean,
                                     const float *rstd, const float *gamma, const float *beta,
                                     const float *scale, const float *shift, const double *AB,
                                     k22_na_geom g)
{
    K22_GRID_STRIDE(i, g.n)
    {
        int64_t p = i / g.S, sg = (p / g.C) * g.G + (p % g.C) / g.Cg;
        k22_na_plane q = k22_na_plane_of(p, mean, rstd, gamma, beta, scale, shift, g);
        float xh, du = k22_na_du(&xh, x[i], dy[i], q, g.act);
        double v = (double)du * q.a * q.ga - AB[sg * 2] - (double)xh * AB[sg * 2 + 1];
        dx[i] += (float)((double)q.r * v);
    }
}

static void k22_na_check(int act, int C, int G)
{
    if (act != K22_ACT_SILU && act != K22_ACT_NONE)
        K22_FATAL("cuda group_norm_act: activation %d is not SiLU or none", act);
    K22_REQUIRE(G > 0 && C % G == 0);
}

/* Whether the affine and act are left out, y being group norm's output as it is (not x * 1 + 0,
 * which turns -0 into +0): both forwards must agree on it. */
static int k22_na_identity(int act, const float *scale, const float *shift, float scale_offset)
{
    return act == K22_ACT_NONE && !scale && !shift && scale_offset == 0.0f;
}

/* Both forwards: the statistics (norm.cu), then one pass writing y as T. */
template <class T>
static void k22_na_fwd(void *vctx, int act, T *y, float *mean, float *rstd, const float *x,
                       const float *gamma, const float *beta, const float *scale,
                       const float *shift, int64_t ss_ld, float scale_offset, int B, int C, int S,
                       int G, float eps)
{
    k22_cuda_ctx *ctx = K22_CUDA_CTX(vctx);
    k22_na_check(act, C, G);
    const double *st = k22_cuda_group_norm_stats(ctx, mean, rstd, x, B, C, S, G, eps);
    if (!st) return;
    k22_na_geom g = k22_na_geom_of(act, B, C, S, G, ss_ld, scale_offset);
    K22_LAUNCH(k22_na_fwd_kernel<T>, g.n, y, x, st, gamma, beta, scale, shift, g,
               !k22_na_identity(act, scale, shift, scale_offset), ctx->precision == K22_PREC_FP16);
}

void k22_cuda_group_norm_act_fwd(void *vctx, int act, float *y, float *mean, float *rstd,
                                 const float *x, const float *gamma, const float *beta,
                                 const float *scale, const float *shift, int64_t ss_ld,
                                 float scale_offset, int B, int C, int S, int G, float eps)
{
    k22_na_fwd(vctx, act, y, mean, rstd, x, gamma, beta, scale, shift, ss_ld, scale_offset, B, C,
               S, G, eps);
}

void k22_cuda_group_norm_act_fwd_y16(void *vctx, int act, uint16_t *y16, float *mean, float *rstd,
                                     const float *x, const float *gamma, const float *beta,
                                     const float *scale, const float *shift, int64_t ss_ld,
                                     float scale_offset, int B, int C, int S, int G, float eps)
{
    K22_REQUIRE(K22_CUDA_CTX(vctx)->precision != K22_PREC_FP32);
    k22_na_fwd(vctx, act, y16, mean, rstd, x, gamma, beta, scale, shift, ss_ld, scale_offset, B, C,
               S, G, eps);
}

void k22_cuda_group_norm_act_bwd(void *vctx, int act, float *dx, float *dgamma, float *dbeta,
                                 float *dscale, float *dshift, const float *dy, const float *x,
                                 const float *mean, const float *rstd, const float *gamma,
                                 const float *beta, const float *scale, const float *shift,
                                 int64_t ss_ld, float scale_offset, int B, int C, int S, int G)
{
    k22_cuda_ctx *ctx = K22_CUDA_CTX(vctx);
    k22_na_check(act, C, G);
    if (B <= 0 || C <= 0 || S <= 0) return;
    if (!dx && !dgamma && !dbeta && !dscale && !dshift) return;
    k22_na_geom g = k22_na_geom_of(act, B, C, S, G, ss_ld, scale_offset);
    int64_t nseg = (int64_t)B * G;
    double *PQ = (double *)k22_cuda_scratch(ctx, (size_t)(2 * g.planes + 2 * nseg) * sizeof(double));
    double *AB = PQ + 2 * g.planes;
    unsigned grid = (unsigned)(g.planes < 65535 ? g.planes : 65535);
    k22_na_bwd_plane_kernel<<<grid, K22_CUDA_THREADS, 0, ctx->stream>>>(
        PQ, dy, x, mean, rstd, gamma, beta, scale, shift, g);
    CUDA_CHECK_LAUNCH();
    int64_t nred = g.planes + C + nseg;
    k22_na_bwd_reduce_kernel<<<k22_cuda_blocks(nred), K22_CUDA_THREADS, 0, ctx->stream>>>(
        AB, dgamma, dbeta, dscale, dshift, PQ, gamma, beta, scale, g);
    CUDA_CHECK_LAUNCH();
    if (!dx) return;
    k22_na_bwd_dx_kernel<<<k22_cuda_blocks(g.n), K22_CUDA_THREADS, 0, ctx->stream>>>(
        dx, dy, x, mean, rstd, gamma, beta, scale, shift, AB, g);
    CUDA_CHECK_LAUNCH();
}
