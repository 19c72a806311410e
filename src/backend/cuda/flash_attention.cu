/* flash_attention.cu: scaled-dot-product attention (k22_attn_desc, ops.h) under bf16/fp16 in
 * fused kernels, so that no score matrix ever reaches device memory (attention.cu's GEMM path
 * writes and reads TQ x TK scores, probabilities and their gradients in fp32, several passes per
 * head: at 48x48 latents and batch 8 that is about 2 GB per pass for one UNet attention layer).
 *
 * Same numbers as the GEMM path under k22_precision: q, k, v and dout are rounded to 16 bits,
 * every product is summed in fp32 on the tensor cores (warp matrix functions, 16x16x16 tiles),
 * and the probabilities P and the unscaled score gradients P (dP - D_i) are rounded to 16 bits
 * where the GEMM path's GEMMs round them. To keep P the normalized probability (as the GEMM path
 * rounds it, instead of an online-softmax running value), the forward makes two passes over the
 * keys: the first finds each row's max and sum (and so its lse), the second forms
 * P = exp(logit - max) / sum and accumulates P V. The backward recomputes P from lse and runs as two kernels, one over key
 * blocks (dK, dV) and one over query blocks (dQ), so that every gradient element is summed by
 * one block in a fixed order: no atomics, the same bits on every run.
 *
 * Shapes: D and DV up to 64 (zero-padded to 16, 32 or 64; the UNet's, the prior's and CLIP's
 * heads are 64), any TQ and TK, masks, causal and padded keys as in ops.h. Larger heads (MoVQ's
 * 512) and fp32 (whose contract is no TF32 and no tensor cores) take the GEMM path.
 *
 * Synchronization is by block barriers only (no warp shuffles), which the host emulator of
 * tests/cuda/emu runs as written.
 *
 * These are the wmma kernels (K22_CUDA_ATTN=flash, and auto's fallback): the default ones, with
 * the same numbers and their tiles in registers, are flash_mma.cu's and flash_mma_bwd.cu's. This
 * file also holds the host side of both sets: dispatch, self-test, K22_CUDA_ATTN. */
#include "flash_attention.cuh"

#include <math.h>
#include <mma.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

using namespace nvcuda;

#define K22_FA_TILE 32                        /* rows of the other side per step of the loop */
#define K22_FA_SLD (K22_FA_TILE + 4)          /* fp32 score tile row length */
#define K22_FA_PLD (K22_FA_TILE + K22_FA_PAD) /* 16-bit probability tile row length */

template <class T> __device__ __forceinline__ T k22_fa_round(float v);
template <> __device__ __forceinline__ __nv_bfloat16 k22_fa_round<__nv_bfloat16>(float v)
{
    return __float2bfloat16_rn(v);
}
template <> __device__ __forceinline__ __half k22_fa_round<__half>(float v)
{
    return __float2half_rn(v);
}

/* Rows r0 .. r0+R of an (n, cols) fp32 matrix into a 16-bit (R, DP) tile, zero beyond. */
template <class T, int R, int DP>
__device__ __forceinline__ void k22_fa_load(T (*dst)[DP + K22_FA_PAD], const float *src, int r0,
                                            int n, int cols)
{
    for (int e = threadIdx.x; e < R * DP; e += K22_FA_THREADS) {
        int r = e / DP, c = e % DP;
        float v = r0 + r < n && c < cols ? src[(int64_t)(r0 + r) * cols + c] : 0.0f;
        dst[r][c] = k22_fa_round<T>(v);
    }
}

template <class T> using k22_fa_afrag = wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major>;
template <class T> using k22_fa_bcol = wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major>;
template <class T> using k22_fa_brow = wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major>;
typedef wmma::fragment<wmma::accumulator, 16, 16, 16, float> k22_fa_acc;

/* The warp's 16 rows (held as a fragments over DP) times the tile's K22_FA_TILE rows,
 * transposed: dst[16][K22_FA_TILE] (row length K22_FA_SLD) = A B^T. */
template <class T, int DP>
__device__ __forceinline__ void k22_fa_abt(float *dst, const k22_fa_afrag<T> *a,
                                           const T (*b)[DP + K22_FA_PAD])
{
    for (int n = 0; n < K22_FA_TILE / 16; n++) {
        k22_fa_acc acc;
        wmma::fill_fragment(acc, 0.0f);
        for (int kk = 0; kk < DP / 16; kk++) {
            k22_fa_bcol<T> bf;
            wmma::load_matrix_sync(bf, &b[n * 16][kk * 16], DP + K22_FA_PAD);
            wmma::mma_sync(acc, a[kk], bf, acc);
        }
        wmma::store_matrix_sync(dst + n * 16, acc, K22_FA_SLD, wmma::mem_row_major);
    }
}

/* acc[n] += A (the warp's 16 x K22_FA_TILE rows of a 16-bit tile) times B (K22_FA_TILE x DP). */
template <class T, int DP>
__device__ __forceinline__ void k22_fa_ab(k22_fa_acc *acc, const T *a, const T (*b)[DP + K22_FA_PAD])
{
    for (int kk = 0; kk < K22_FA_TILE / 16; kk++) {
        k22_fa_afrag<T> af;
        wmma::load_matrix_sync(af, a + kk * 16, K22_FA_PLD);
        for (int n = 0; n < DP / 16; n++) {
            k22_fa_brow<T> bf;
            wmma::load_matrix_sync(bf, &b[kk * 16][n * 16], DP + K22_FA_PAD);
            wmma::mma_sync(acc[n], af, bf, acc[n]);
        }
    }
}

/* dst[(r0 + r) * cols + c] = alpha acc + (accumulate ? dst : 0) for the block's K22_FA_ROWS
 * rows (warp w's fragments are rows 16w..16w+15), rows below n and columns below cols only.
 * stage: K22_FA_ROWS x K22_FA_SLD floats of shared memory, free for the call. */
template <int DP>
__device__ __forceinline__ void k22_fa_store(float *dst, const k22_fa_acc *acc, float *stage,
                                             int r0, int n, int cols, float alpha, int accumulate)
{
    const int warp = threadIdx.x / 32, row = threadIdx.x / 2, half = threadIdx.x % 2;
    for (int n0 = 0; n0 < DP / 16; n0 += 2) {
        for (int t = 0; t < 2 && n0 + t < DP / 16; t++)
            wmma::store_matrix_sync(stage + warp * 16 * K22_FA_SLD + t * 16, acc[n0 + t], K22_FA_SLD,
                                    wmma::mem_row_major);
        __syncthreads();
        for (int c = half * 16; c < half * 16 + 16; c++) {
            int col = n0 * 16 + c;
            if (r0 + row >= n || col >= cols) continue;
            float *p = dst + (int64_t)(r0 + row) * cols + col;
            float v = alpha * stage[row * K22_FA_SLD + c];
            *p = accumulate ? *p + v : v;
        }
        __syncthreads();
    }
}

/* ---- forward: grid (heads, query blocks of K22_FA_ROWS) ---- */
template <class T, int DP>
__global__ void __launch_bounds__(K22_FA_THREADS) k22_fa_fwd_kernel(float *out, float *lse, k22_fa_args a)
{
    __shared__ __align__(32) T sQ[K22_FA_ROWS][DP + K22_FA_PAD];
    __shared__ __align__(32) T sK[K22_FA_TILE][DP + K22_FA_PAD];
    __shared__ __align__(32) T sV[K22_FA_TILE][DP + K22_FA_PAD];
    __shared__ __align__(32) float sS[K22_FA_ROWS][K22_FA_SLD];
    __shared__ __align__(32) T sP[K22_FA_ROWS][K22_FA_PLD];
    __shared__ float sM[K22_FA_THREADS], sL[K22_FA_THREADS], sRowMax[K22_FA_ROWS], sRowInv[K22_FA_ROWS];
    const int64_t bh = blockIdx.x, b = bh / a.NH;
    const int i0 = blockIdx.y * K22_FA_ROWS, warp = threadIdx.x / 32;
    /* the row passes: each thread takes one row and half of the tile's columns */
    const int row = threadIdx.x / 2, half = threadIdx.x % 2, i = i0 + row;
    const float *k = a.k + bh * a.TK * a.D, *v = a.v + bh * a.TK * a.DV;
    /* under a causal mask no key past the block's last query counts */
    const int kend = a.causal && i0 + K22_FA_ROWS < a.TK ? i0 + K22_FA_ROWS : a.TK;

    k22_fa_load<T, K22_FA_ROWS, DP>(sQ, a.q + bh * a.TQ * a.D, i0, a.TQ, a.D);
    __syncthreads();
    k22_fa_afrag<T> qf[DP / 16];
    for (int kk = 0; kk < DP / 16; kk++)
        wmma::load_matrix_sync(qf[kk], &sQ[warp * 16][kk * 16], DP + K22_FA_PAD);

    /* pass 1: the row's max m and sum l of exp(logit - m), merged as the max moves */
    float m = -INFINITY, l = 0.0f;
    for (int j0 = 0; j0 < kend; j0 += K22_FA_TILE) {
        k22_fa_load<T, K22_FA_TILE, DP>(sK, k, j0, a.TK, a.D);
        __syncthreads();
        k22_fa_abt<T, DP>(&sS[warp * 16][0], qf, sK);
        __syncthreads();
        for (int c = half * 16; c < half * 16 + 16 && i < a.TQ; c++) {
            if (j0 + c >= a.TK) break;
            float x = k22_fa_logit(a, b, i, j0 + c, sS[row][c]);
            if (x == -INFINITY) continue;
            if (x > m) {
                l = l * expf(m - x) + 1.0f;
                m = x;
            } else {
                l += expf(x - m);
            }
        }
        __syncthreads(); /* sK and sS are written again by the next tile */
    }
    sM[threadIdx.x] = m;
    sL[threadIdx.x] = l;
    __syncthreads();
    if (half == 0) {
        float m1 = sM[threadIdx.x + 1], l1 = sL[threadIdx.x + 1], mx = fmaxf(m, m1);
        float ls = -INFINITY, inv = 0.0f; /* every key excluded: out = 0, lse = -inf */
        if (mx != -INFINITY) {
            float s = (m == -INFINITY ? 0.0f : l * expf(m - mx)) + (m1 == -INFINITY ? 0.0f : l1 * expf(m1 - mx));
            ls = mx + logf(s);
            inv = 1.0f / s;
        }
        sRowMax[row] = mx;
        sRowInv[row] = inv;
        if (i < a.TQ) lse[bh * a.TQ + i] = ls;
    }
    __syncthreads();

    /* pass 2: out = P V with P = exp(logit - max) / sum rounded to 16 bits (normalized by the
     * max and sum rather than through the fp32 lse, whose rounding would shift a whole row) */
    k22_fa_acc of[DP / 16];
    for (int n = 0; n < DP / 16; n++) wmma::fill_fragment(of[n], 0.0f);
    const float mi = sRowMax[row], inv = sRowInv[row];
    for (int j0 = 0; j0 < kend; j0 += K22_FA_TILE) {
        k22_fa_load<T, K22_FA_TILE, DP>(sK, k, j0, a.TK, a.D);
        k22_fa_load<T, K22_FA_TILE, DP>(sV, v, j0, a.TK, a.DV);
        __syncthreads();
        k22_fa_abt<T, DP>(&sS[warp * 16][0], qf, sK);
        __syncthreads();
        for (int c = half * 16; c < half * 16 + 16; c++) {
            int j = j0 + c;
            float x = i < a.TQ && j < a.TK && mi != -INFINITY ? k22_fa_logit(a, b, i, j, sS[row][c]) : -INFINITY;
            sP[row][c] = k22_fa_round<T>(x == -INFINITY ? 0.0f : expf(x - mi) * inv);
        }
        __syncthreads();
        k22_fa_ab<T, DP>(of, &sP[warp * 16][0], sV);
        __syncthreads();
    }
    k22_fa_store<DP>(out + bh * a.TQ * a.DV, of, &sS[0][0], i0, a.TQ, a.DV, 1.0f, 0);
}

/* ---- backward ---- */

/* D_i = sum_c dout[i,c] out[i,c], summed in double as the GEMM path does. A block takes 8 rows
 * at a time, 32 threads a row reading consecutive columns (coalesced), their partial sums added
 * in a fixed tree. */
#define K22_FA_DROW_ROWS 8
__global__ void __launch_bounds__(32 * K22_FA_DROW_ROWS)
k22_fa_drow_kernel(float *drow, const float *dout, const float *out, int64_t rows, int DV)
{
    __shared__ double sh[32 * K22_FA_DROW_ROWS];
    const int lane = threadIdx.x % 32, t = threadIdx.x;
    for (int64_t r0 = (int64_t)blockIdx.x * K22_FA_DROW_ROWS; r0 < rows;
         r0 += (int64_t)gridDim.x * K22_FA_DROW_ROWS) {
        const int64_t r = r0 + t / 32;
        double s = 0;
        if (r < rows)
            for (int c = lane; c < DV; c += 32) s += (double)dout[r * DV + c] * out[r * DV + c];
        sh[t] = s;
        for (int k = 16; k > 0; k >>= 1) {
            __syncthreads();
            if (lane < k) sh[t] += sh[t + k];
        }
        __syncthreads();
        if (lane == 0 && r < rows) drow[r] = (float)sh[t];
        __syncthreads(); /* sh is written again by the next rows */
    }
}

/* The staging buffer of the backward kernels: first two 16-bit (K22_FA_ROWS, DP) tiles, then,
 * once those are in fragments, two fp32 (K22_FA_ROWS, K22_FA_SLD) score tiles. */
#define K22_FA_BUF (2 * K22_FA_ROWS * K22_FA_SLD * sizeof(float))

/* Rows r0 .. r0+K22_FA_ROWS of two (n, xcols) and (n, ycols) matrices rounded into buf, then the
 * warp's 16 rows of each into a fragments over DP; buf is free again on return. */
template <class T, int DP>
__device__ __forceinline__ void k22_fa_frags2(unsigned char *buf, const float *x, int xcols,
                                              const float *y, int ycols, int r0, int n,
                                              k22_fa_afrag<T> *xf, k22_fa_afrag<T> *yf)
{
    static_assert(2 * K22_FA_ROWS * (DP + K22_FA_PAD) * sizeof(T) <= K22_FA_BUF, "two tiles");
    typedef T tile_t[DP + K22_FA_PAD];
    tile_t *sx = (tile_t *)buf, *sy = sx + K22_FA_ROWS;
    const int warp = threadIdx.x / 32;
    k22_fa_load<T, K22_FA_ROWS, DP>(sx, x, r0, n, xcols);
    k22_fa_load<T, K22_FA_ROWS, DP>(sy, y, r0, n, ycols);
    __syncthreads();
    for (int kk = 0; kk < DP / 16; kk++) {
        wmma::load_matrix_sync(xf[kk], &sx[warp * 16][kk * 16], DP + K22_FA_PAD);
        wmma::load_matrix_sync(yf[kk], &sy[warp * 16][kk * 16], DP + K22_FA_PAD);
    }
    __syncthreads();
}

/* dK and dV for a block of K22_FA_ROWS keys: grid (heads, key blocks). dS^T = P^T (dP^T - D)
 * per key row; dV += P^T dO, dK += scale dS^T Q, with P and dS rounded to 16 bits. */
template <class T, int DP>
__global__ void __launch_bounds__(K22_FA_THREADS) k22_fa_dkdv_kernel(float *dk, float *dv, k22_fa_args a)
{
    __shared__ __align__(32) unsigned char sBuf[K22_FA_BUF]; /* K and V, then S^T and dP^T */
    __shared__ __align__(32) T sQ[K22_FA_TILE][DP + K22_FA_PAD];
    __shared__ __align__(32) T sdO[K22_FA_TILE][DP + K22_FA_PAD];
    __shared__ __align__(32) T sPT[K22_FA_ROWS][K22_FA_PLD];
    __shared__ __align__(32) T sdST[K22_FA_ROWS][K22_FA_PLD];
    __shared__ float sLse[K22_FA_TILE], sD[K22_FA_TILE];
    float(*sST)[K22_FA_SLD] = (float(*)[K22_FA_SLD])sBuf, (*sdPT)[K22_FA_SLD] = sST + K22_FA_ROWS;
    const int64_t bh = blockIdx.x, b = bh / a.NH;
    const int j0 = blockIdx.y * K22_FA_ROWS, warp = threadIdx.x / 32;
    const int row = threadIdx.x / 2, half = threadIdx.x % 2, j = j0 + row;
    const float *q = a.q + bh * a.TQ * a.D, *dout = a.dout + bh * a.TQ * a.DV;
    const float *lse = a.lse + bh * a.TQ, *drow = a.drow + bh * a.TQ;
    const int want_dk = dk != NULL, want_dv = dv != NULL;
    k22_fa_afrag<T> kf[DP / 16], vf[DP / 16];
    k22_fa_frags2<T, DP>(sBuf, a.k + bh * a.TK * a.D, a.D, a.v + bh * a.TK * a.DV, a.DV, j0, a.TK, kf, vf);
    k22_fa_acc dkf[DP / 16], dvf[DP / 16];
    for (int n = 0; n < DP / 16; n++) wmma::fill_fragment(dkf[n], 0.0f), wmma::fill_fragment(dvf[n], 0.0f);
    /* under a causal mask no query before the block's first key sees it */
    const int qbeg = a.causal ? j0 / K22_FA_TILE * K22_FA_TILE : 0;
    for (int i0 = qbeg; i0 < a.TQ; i0 += K22_FA_TILE) {
        k22_fa_load<T, K22_FA_TILE, DP>(sQ, q, i0, a.TQ, a.D);
        k22_fa_load<T, K22_FA_TILE, DP>(sdO, dout, i0, a.TQ, a.DV);
        k22_fa_load_rows(sLse, sD, lse, drow, i0, a.TQ, K22_FA_TILE);
        __syncthreads();
        k22_fa_abt<T, DP>(&sST[warp * 16][0], kf, sQ);
        if (want_dk) k22_fa_abt<T, DP>(&sdPT[warp * 16][0], vf, sdO);
        __syncthreads();
        for (int c = half * 16; c < half * 16 + 16; c++) {
            float p = k22_fa_prob(a, b, i0 + c, j, sST[row][c], sLse[c]);
            sPT[row][c] = k22_fa_round<T>(p);
            if (want_dk) sdST[row][c] = k22_fa_round<T>(p == 0.0f ? 0.0f : p * (sdPT[row][c] - sD[c]));
        }
        __syncthreads();
        if (want_dv) k22_fa_ab<T, DP>(dvf, &sPT[warp * 16][0], sdO);
        if (want_dk) k22_fa_ab<T, DP>(dkf, &sdST[warp * 16][0], sQ);
        __syncthreads();
    }
    float *stage = &sST[0][0];
    if (want_dv) k22_fa_store<DP>(dv + bh * a.TK * a.DV, dvf, stage, j0, a.TK, a.DV, 1.0f, 1);
    if (want_dk) k22_fa_store<DP>(dk + bh * a.TK * a.D, dkf, stage, j0, a.TK, a.D, a.scale, 1);
}

/* dQ for a block of K22_FA_ROWS queries: grid (heads, query blocks). dQ += scale dS K. */
template <class T, int DP>
__global__ void __launch_bounds__(K22_FA_THREADS) k22_fa_dq_kernel(float *dq, k22_fa_args a)
{
    __shared__ __align__(32) unsigned char sBuf[K22_FA_BUF]; /* Q and dO, then S and dP */
    __shared__ __align__(32) T sK[K22_FA_TILE][DP + K22_FA_PAD];
    __shared__ __align__(32) T sV[K22_FA_TILE][DP + K22_FA_PAD];
    __shared__ __align__(32) T sdS[K22_FA_ROWS][K22_FA_PLD];
    float(*sS)[K22_FA_SLD] = (float(*)[K22_FA_SLD])sBuf, (*sdP)[K22_FA_SLD] = sS + K22_FA_ROWS;
    const int64_t bh = blockIdx.x, b = bh / a.NH;
    const int i0 = blockIdx.y * K22_FA_ROWS, warp = threadIdx.x / 32;
    const int row = threadIdx.x / 2, half = threadIdx.x % 2, i = i0 + row;
    const float *k = a.k + bh * a.TK * a.D, *v = a.v + bh * a.TK * a.DV;
    const int kend = a.causal && i0 + K22_FA_ROWS < a.TK ? i0 + K22_FA_ROWS : a.TK;
    const float li = i < a.TQ ? a.lse[bh * a.TQ + i] : -INFINITY;
    const float di = i < a.TQ ? a.drow[bh * a.TQ + i] : 0.0f;
    k22_fa_afrag<T> qf[DP / 16], dof[DP / 16];
    k22_fa_frags2<T, DP>(sBuf, a.q + bh * a.TQ * a.D, a.D, a.dout + bh * a.TQ * a.DV, a.DV, i0, a.TQ, qf, dof);
    k22_fa_acc dqf[DP / 16];
    for (int n = 0; n < DP / 16; n++) wmma::fill_fragment(dqf[n], 0.0f);
    for (int j0 = 0; j0 < kend; j0 += K22_FA_TILE) {
        k22_fa_load<T, K22_FA_TILE, DP>(sK, k, j0, a.TK, a.D);
        k22_fa_load<T, K22_FA_TILE, DP>(sV, v, j0, a.TK, a.DV);
        __syncthreads();
        k22_fa_abt<T, DP>(&sS[warp * 16][0], qf, sK);
        k22_fa_abt<T, DP>(&sdP[warp * 16][0], dof, sV);
        __syncthreads();
        for (int c = half * 16; c < half * 16 + 16; c++) {
            float p = k22_fa_prob(a, b, i, j0 + c, sS[row][c], li);
            sdS[row][c] = k22_fa_round<T>(p == 0.0f ? 0.0f : p * (sdP[row][c] - di));
        }
        __syncthreads();
        k22_fa_ab<T, DP>(dqf, &sdS[warp * 16][0], sK);
        __syncthreads();
    }
    k22_fa_store<DP>(dq + bh * a.TQ * a.D, dqf, &sS[0][0], i0, a.TQ, a.D, a.scale, 1);
}

/* ---- host side ---- */

static k22_fa_args k22_fa_args_of(const k22_attn_desc *d)
{
    k22_fa_args a = {};
    a.NH = d->NH, a.TQ = d->TQ, a.TK = d->TK, a.D = d->D, a.DV = d->DV;
    a.scale = d->scale;
    a.mask = d->mask, a.mask_bstride = d->mask_bstride, a.causal = d->causal;
    a.key_keep = d->key_keep;
    return a;
}

/* The padded head size of the kernel that runs d: 16, 32 or 64 (one instantiation fewer than
 * every multiple of 16: heads of 33 to 48 are rare, and each instantiation is about 0.2 MB of
 * code per architecture). */
static int k22_fa_dp(const k22_attn_desc *d)
{
    int m = d->D > d->DV ? d->D : d->DV;
    return m <= 16 ? 16 : m <= 32 ? 32 : m <= 64 ? 64 : (m + 15) / 16 * 16;
}

int k22_cuda_flash_fits(const k22_cuda_ctx *ctx, const k22_attn_desc *d)
{
    return ctx->attn_flash == K22_FA_ON && ctx->precision != K22_PREC_FP32 && d->D >= 1 && d->DV >= 1 &&
           k22_fa_dp(d) <= 64 && d->TQ >= 1 && d->TK >= 1 &&
           (int64_t)d->B * d->NH <= INT32_MAX && (d->TQ + K22_FA_ROWS - 1) / K22_FA_ROWS <= 65535 &&
           (d->TK + K22_FA_ROWS - 1) / K22_FA_ROWS <= 65535;
}

typedef struct {
    k22_fa_fwd_fn fwd;
    k22_fa_dkdv_fn dkdv;
    k22_fa_dq_fn dq;
} k22_fa_kernels;

/* The kernels for the precision and padded head size (pointers, so that one launch line serves
 * every instantiation). */
template <class T>
static k22_fa_kernels k22_fa_pick(int dp)
{
    if (dp == 16) return {k22_fa_fwd_kernel<T, 16>, k22_fa_dkdv_kernel<T, 16>, k22_fa_dq_kernel<T, 16>};
    if (dp == 32) return {k22_fa_fwd_kernel<T, 32>, k22_fa_dkdv_kernel<T, 32>, k22_fa_dq_kernel<T, 32>};
    return {k22_fa_fwd_kernel<T, 64>, k22_fa_dkdv_kernel<T, 64>, k22_fa_dq_kernel<T, 64>};
}

/* This file's kernels, or with K22_CUDA_ATTN=mma flash_mma.cu's and flash_mma_bwd.cu's. */
static k22_fa_kernels k22_fa_kernels_of(const k22_cuda_ctx *ctx, const k22_attn_desc *d)
{
    const int fp16 = ctx->precision == K22_PREC_FP16, dp = k22_fa_dp(d);
    if (ctx->attn_mma) {
        k22_fa_kernels kn = {k22_fam_fwd_of(fp16, dp, ctx->attn_pipe), NULL, NULL};
        k22_fam_bwd_of(fp16, dp, ctx->attn_pipe, &kn.dkdv, &kn.dq);
        return kn;
    }
    return fp16 ? k22_fa_pick<__half>(dp) : k22_fa_pick<__nv_bfloat16>(dp);
}

/* The mma.sync kernels' 16-bit copies of q, k, v (unless the caller gave them: in16) and of
 * dout (when given) in ctx->lowp (no GEMM runs within the fused op), rows padded to the kernels'
 * head size: the tiles they load many times (once per block of the other side) then come as
 * whole 16-byte words, rounded once. */
static void k22_fam_stage(k22_cuda_ctx *ctx, k22_fa_args *a, const k22_attn_desc *d, int in16,
                          const float *dout)
{
    const int64_t dp = k22_fa_dp(d), heads = (int64_t)d->B * d->NH, nq = heads * d->TQ * dp, nk = heads * d->TK * dp;
    const int64_t nqkv = in16 ? 0 : nq + 2 * nk, n = nqkv + (dout ? nq : 0);
    if (n == 0) return;
    uint16_t *p = (uint16_t *)k22_cuda_lowp(ctx, (size_t)n * sizeof(uint16_t));
    if (!in16) {
        k22_cuda_round_lowp_rows(ctx, p, a->q, heads * d->TQ, d->D, dp);
        k22_cuda_round_lowp_rows(ctx, p + nq, a->k, heads * d->TK, d->D, dp);
        k22_cuda_round_lowp_rows(ctx, p + nq + nk, a->v, heads * d->TK, d->DV, dp);
        a->q16 = p, a->k16 = p + nq, a->v16 = p + nq + nk;
    }
    if (dout) {
        k22_cuda_round_lowp_rows(ctx, p + nqkv, dout, heads * d->TQ, d->DV, dp);
        a->do16 = p + nqkv;
    }
}

/* See common.cuh. */
int k22_cuda_flash_takes16(const k22_cuda_ctx *ctx, const k22_attn_desc *d, const uint16_t *q16,
                           const uint16_t *k16, const uint16_t *v16)
{
    return k22_cuda_flash_fits(ctx, d) && ctx->attn_mma && d->D == d->DV && k22_fa_dp(d) == d->D &&
           ((uintptr_t)q16 | (uintptr_t)k16 | (uintptr_t)v16) % 16 == 0;
}

/* The caller's 16-bit q, k, v (NULL for floats) in a; see k22_cuda_flash_takes16. */
static int k22_fa_take16(k22_fa_args *a, const uint16_t *q16, const uint16_t *k16, const uint16_t *v16)
{
    if (!q16) return 0;
    a->q16 = q16, a->k16 = k16, a->v16 = v16;
    return 1;
}

void k22_cuda_flash_fwd(k22_cuda_ctx *ctx, float *out, float *lse, const float *q, const float *k,
                        const float *v, const uint16_t *q16, const uint16_t *k16,
                        const uint16_t *v16, const k22_attn_desc *d)
{
    k22_fa_args a = k22_fa_args_of(d);
    a.q = q, a.k = k, a.v = v;
    int in16 = k22_fa_take16(&a, q16, k16, v16);
    if (ctx->attn_mma) k22_fam_stage(ctx, &a, d, in16, NULL);
    k22_fa_kernels kn = k22_fa_kernels_of(ctx, d);
    dim3 grid((unsigned)((int64_t)d->B * d->NH), (unsigned)((d->TQ + K22_FA_ROWS - 1) / K22_FA_ROWS));
    k22_fa_fwd_fn fwd = kn.fwd;
    fwd<<<grid, K22_FA_THREADS, 0, ctx->stream>>>(out, lse, a);
    CUDA_CHECK_LAUNCH();
}

void k22_cuda_flash_bwd(k22_cuda_ctx *ctx, float *dq, float *dk, float *dv, const float *dout,
                        const float *q, const float *k, const float *v, const uint16_t *q16,
                        const uint16_t *k16, const uint16_t *v16, const float *out,
                        const float *lse, const k22_attn_desc *d)
{
    int64_t heads = (int64_t)d->B * d->NH, rows = heads * d->TQ;
    k22_fa_args a = k22_fa_args_of(d);
    a.q = q, a.k = k, a.v = v, a.dout = dout, a.lse = lse;
    int in16 = k22_fa_take16(&a, q16, k16, v16);
    a.drow = (float *)k22_cuda_scratch(ctx, (size_t)rows * sizeof(float));
    int64_t drow_blocks = (rows + K22_FA_DROW_ROWS - 1) / K22_FA_DROW_ROWS;
    k22_fa_drow_kernel<<<(unsigned)(drow_blocks < 65536 ? drow_blocks : 65536), 32 * K22_FA_DROW_ROWS, 0,
                         ctx->stream>>>(a.drow, dout, out, rows, d->DV);
    CUDA_CHECK_LAUNCH();
    if (ctx->attn_mma) k22_fam_stage(ctx, &a, d, in16, dout);
    k22_fa_kernels kn = k22_fa_kernels_of(ctx, d);
    if (dk || dv) {
        dim3 grid((unsigned)heads, (unsigned)((d->TK + K22_FA_ROWS - 1) / K22_FA_ROWS));
        k22_fa_dkdv_fn dkdv = kn.dkdv;
        dkdv<<<grid, K22_FA_THREADS, 0, ctx->stream>>>(dk, dv, a);
        CUDA_CHECK_LAUNCH();
    }
    if (dq) {
        dim3 grid((unsigned)heads, (unsigned)((d->TQ + K22_FA_ROWS - 1) / K22_FA_ROWS));
        k22_fa_dq_fn dqk = kn.dq;
        dqk<<<grid, K22_FA_THREADS, 0, ctx->stream>>>(dq, a);
        CUDA_CHECK_LAUNCH();
    }
}

/* ---- the self-test (k22_cuda_attn_init, k22_cuda_attn_ready) ----
 * The fused kernels on one small case (one head of 64, 40 queries, 72 keys: padded query and
 * key rows, and at least two tiles of the other side in every kernel of both sets) in bf16 and
 * fp16 against cpu-ref in fp32. The inputs are multiples of 1/8 in
 * [-1, 1], exact in both 16-bit types, so the only differences are the roundings of P and dS
 * and fp32 sums: a few 1e-3 at most. A kernel that misreads a tile (layout, transposition,
 * padding) or a broken toolchain or driver is off by the size of the values. */
static int k22_fa_probe(k22_cuda_ctx *ctx)
{
    const k22_attn_desc d = {1, 1, 40, 72, 64, 64, 0.125f, NULL, 0, 0, NULL};
    const int64_t nq = 40 * 64, nk = 72 * 64, nl = 40;
    /* q k v dout | out lse dq dk dv */
    const int64_t n = 2 * nq + 2 * nk + nq + nl + nq + 2 * nk;
    float *h = (float *)k22_xcalloc((size_t)n * 2, sizeof(float)), *got = h + n;
    float *hq = h, *hk = hq + nq, *hv = hk + nk, *hdo = hv + nk, *hout = hdo + nq, *hlse = hout + nq;
    float *hdq = hlse + nl, *hdk = hdq + nq, *hdv = hdk + nk;
    for (int64_t i = 0; i < nq; i++) hq[i] = (float)((i * 7 + 3) % 17 - 8) / 8.0f;
    for (int64_t i = 0; i < nk; i++) hk[i] = (float)((i * 5 + 1) % 17 - 8) / 8.0f;
    for (int64_t i = 0; i < nk; i++) hv[i] = (float)((i * 3 + 2) % 17 - 8) / 8.0f;
    for (int64_t i = 0; i < nq; i++) hdo[i] = (float)((i * 11 + 5) % 17 - 8) / 8.0f;
    float *want = (float *)k22_xmalloc((size_t)n * sizeof(float));
    memcpy(want, h, (size_t)n * sizeof(float));
    k22_backend *ref = k22_backend_cpu_new(1);
    float *w = want;
    ref->attention_fwd(ref->ctx, w + (hout - h), w + (hlse - h), hq, hk, hv, &d);
    ref->attention_bwd(ref->ctx, w + (hdq - h), w + (hdk - h), w + (hdv - h), hdo, hq, hk, hv,
                       w + (hout - h), w + (hlse - h), &d);
    k22_backend_free(ref);

    float *dev = NULL;
    CUDA_CHECK(cudaMalloc((void **)&dev, (size_t)n * sizeof(float)));
    float *q = dev, *k = q + nq, *v = k + nk, *dout = v + nk, *out = dout + nq, *lse = out + nq;
    float *dq = lse + nl, *dk = dq + nq, *dv = dk + nk;
    const int saved = ctx->precision, precs[2] = {K22_PREC_BF16, K22_PREC_FP16};
    int ok = 1;
    for (int pi = 0; pi < 2 && ok; pi++) {
        ctx->precision = precs[pi];
        CUDA_CHECK(cudaMemcpyAsync(dev, h, (size_t)n * sizeof(float), cudaMemcpyHostToDevice, ctx->stream));
        k22_cuda_flash_fwd(ctx, out, lse, q, k, v, NULL, NULL, NULL, &d);
        k22_cuda_flash_bwd(ctx, dq, dk, dv, dout, q, k, v, NULL, NULL, NULL, out, lse, &d);
        CUDA_CHECK(cudaMemcpyAsync(got, dev, (size_t)n * sizeof(float), cudaMemcpyDeviceToHost, ctx->stream));
        CUDA_CHECK(cudaStreamSynchronize(ctx->stream));
        static const char *const part[5] = {"out", "lse", "dq", "dk", "dv"};
        const int64_t start[6] = {hout - h, hlse - h, hdq - h, hdk - h, hdv - h, n};
        ok = k22_cuda_selftest_match(ctx->attn_why, sizeof ctx->attn_why, pi ? "fp16" : "bf16", got, want,
                                     part, start, 5, 0.02f, 0.02f);
    }
    ctx->precision = saved;
    CUDA_CHECK(cudaFree(dev));
    free(h);
    free(want);
    return ok;
}

/* K22_CUDA_ATTN: gemm turns the kernels off; flash (this file's wmma kernels) and mma
 * (flash_mma.cu's and flash_mma_bwd.cu's, on mma.sync) run their self-test here, at creation, and
 * refuse a device where it fails; auto leaves the test for k22_cuda_attn_ready, at the first
 * switch to bf16/fp16, so that fp32 runs (which never use the kernels) do not pay for it. */
k22_status k22_cuda_attn_init(k22_cuda_ctx *ctx, k22_err *err)
{
    const char *v = getenv("K22_CUDA_ATTN");
    ctx->attn_flash = K22_FA_OFF;
    ctx->attn_mma = 0;
    ctx->attn_why[0] = 0;
    k22_status st = k22_env_flag("K22_CUDA_ATTN_PIPE", 1, "one tile fetched at a time",
                                 "the next tile fetched while computing, the default",
                                 &ctx->attn_pipe, err);
    if (st) return st;
    if (v && !strcmp(v, "gemm")) return K22_OK;
    if (v && *v && strcmp(v, "flash") && strcmp(v, "mma") && strcmp(v, "auto"))
        return k22_err_set(err, K22_ERR_ARG, "K22_CUDA_ATTN='%s': expected auto, mma, flash or gemm", v);
    if (!v || !*v || !strcmp(v, "auto")) {
        ctx->attn_flash = K22_FA_UNTESTED;
        return K22_OK;
    }
    ctx->attn_mma = !strcmp(v, "mma");
    if (!k22_fa_probe(ctx))
        return k22_err_set(err, K22_ERR_UNSUPPORTED, "K22_CUDA_ATTN=%s, but the fused attention "
                           "kernels fail on CUDA device %d: %s", v, ctx->device, ctx->attn_why);
    ctx->attn_flash = K22_FA_ON;
    return K22_OK;
}

/* auto: the mma.sync kernels where they pass the self-test, else the wmma ones, else the GEMMs,
 * each step down said on stderr. */
void k22_cuda_attn_ready(k22_cuda_ctx *ctx)
{
    if (ctx->attn_flash != K22_FA_UNTESTED) return;
    ctx->attn_mma = 1;
    ctx->attn_flash = K22_FA_ON;
    if (k22_fa_probe(ctx)) return;
    char why[sizeof ctx->attn_why];
    snprintf(why, sizeof why, "%s", ctx->attn_why);
    ctx->attn_mma = 0;
    if (k22_fa_probe(ctx)) {
        fprintf(stderr, "k22: the mma.sync attention kernels fail on CUDA device %d (%s); attention runs on "
                "the wmma kernels\n", ctx->device, why);
        return;
    }
    ctx->attn_flash = K22_FA_OFF;
    fprintf(stderr, "k22: the fused attention kernels fail on CUDA device %d (mma.sync: %s; wmma: %s); attention "
            "runs as GEMMs\n", ctx->device, why, ctx->attn_why);
}
