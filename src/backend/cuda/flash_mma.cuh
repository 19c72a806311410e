/* flash_mma.cuh: warp tiles over mma.sync m16n8k16 (warp_mma.cuh) for the fused attention
 * kernels of flash_mma.cu (forward) and flash_mma_bwd.cu (backward).
 *
 * A warp computes 16 rows. Its A operand is either 16 rows of a 16-bit tile in shared memory,
 * held as fragments (k22_fam_afrag), or fp32 values the warp holds in accumulator layout, rounded
 * to 16 bits on the way in (k22_fam_pb: the accumulators of two neighbouring 8-column products
 * are the A fragment over those 16 columns). B comes from a 16-bit tile, through ldmatrix
 * (warp_mma.cuh): with B's columns along the tile's rows for A B^T (k22_fam_abt), or with B's k
 * along them for P B (k22_fam_pb, transposed by ldmatrix.trans), so each tile is in shared
 * memory once, as loaded (by cp.async, k22_fam_fetch, a tile ahead: k22_fam_walk). Lane l holds,
 * of each 8-column product, rows g and g + 8 and columns c and c + 1 (g = l / 4, c = 2 (l % 4)).
 * Tile rows are 16-byte aligned: LD a multiple of 8. */
#ifndef K22_FLASH_MMA_CUH
#define K22_FLASH_MMA_CUH

#include "async_copy.cuh"
#include "flash_attention.cuh"
#include "warp_mma.cuh"

/* Head bh's rows of a 16-bit copy (k22_fa_args' q16 ...): T rows of DP values per head. */
__device__ __forceinline__ const uint4 *k22_fam_head(const void *p, int64_t bh, int T, int DP)
{
    return (const uint4 *)p + bh * T * (DP / 8);
}

/* Rows r0 .. r0 + R of a head's 16-bit (n, DP) rows into a tile by cp.async (async_copy.cuh),
 * 16 bytes (8 values) a copy, zero past row n; issued only: the caller commits and waits. The
 * values are the fp32 ones already rounded (k22_fam_stage), as the wmma kernels round them on load. */
template <class T, int R, int DP>
__device__ __forceinline__ void k22_fam_fetch(T (*dst)[DP + K22_FA_PAD], const uint4 *src, int r0, int n)
{
    for (int e = threadIdx.x; e < R * DP / 8; e += K22_FA_THREADS) {
        const int r = e / (DP / 8), w = e % (DP / 8), in = r0 + r < n;
        k22_cp16(&dst[r][w * 8], in ? src + (int64_t)(r0 + r) * (DP / 8) + w : src, in);
    }
}

/* The walk over the other side's tiles x0, x0 + R, .. below end. PIPE 1, double-buffered: the
 * fetch of tile x + R into buffer 1 - b (fetch(x + R, 1 - b): cp.async issues, and any plain
 * stores into that buffer) runs before body(x, b) computes on tile x in buffer b, so the copies
 * fly while the warps compute. PIPE 0: each tile fetched into buffer 0 and waited for before its
 * body (the same kernel without the overlap, to measure it). Barriers: after the wait (tile x is
 * in for every thread) and after the body (the buffer is free for the next fetch into it). */
template <int R, int PIPE, class Fetch, class Body>
__device__ __forceinline__ void k22_fam_walk(int x0, int end, Fetch fetch, Body body)
{
    if (x0 >= end) return;
    if (PIPE) {
        fetch(x0, 0);
        k22_cp_commit();
    }
    for (int b = 0; x0 < end; x0 += R, b ^= PIPE) {
        if (!PIPE) {
            fetch(x0, 0);
            k22_cp_commit();
            k22_cp_wait<0>();
        } else if (x0 + R < end) {
            fetch(x0 + R, b ^ 1);
            k22_cp_commit();
            k22_cp_wait<1>();
        } else {
            k22_cp_wait<0>();
        }
        __syncthreads();
        body(x0, b);
        __syncthreads();
    }
}

/* Rows r0 .. r0 + 15, columns 0 .. KD of a tile with rows of LD, as A fragments: per 16 columns
 * one ldmatrix of the quarters (rows 0-7, cols 0-7), (8-15, 0-7), (0-7, 8-15), (8-15, 8-15),
 * which are a[0] .. a[3]. */
template <class T, int KD, int LD>
__device__ __forceinline__ void k22_fam_afrag(uint32_t (&a)[KD / 16][4], const T *tile, int r0)
{
    static_assert(LD % 8 == 0, "ldmatrix rows are 16-byte aligned");
    const int lane = threadIdx.x % 32, m = lane / 8;
    const T *row = tile + (r0 + m % 2 * 8 + lane % 8) * LD + m / 2 * 8;
    #pragma unroll
    for (int kk = 0; kk < KD / 16; kk++) k22_ldsm_x4(a[kk], row + kk * 16);
}

/* acc = A B^T for A in fragments over KD and B the first N rows of a tile with rows of LD:
 * acc[n] is the 8-column product n. One ldmatrix gives the B fragments of products n and n + 1
 * (their rows, k halves 0-7 and 8-15). */
template <class T, int N, int KD, int LD>
__device__ __forceinline__ void k22_fam_abt(float (&acc)[N / 8][4], const uint32_t (&a)[KD / 16][4], const T *tile)
{
    static_assert(N % 16 == 0 && LD % 8 == 0, "products go in pairs; rows 16-byte aligned");
    const int lane = threadIdx.x % 32, m = lane / 8;
    const T *row = tile + (m / 2 * 8 + lane % 8) * LD + m % 2 * 8;
    #pragma unroll
    for (int n = 0; n < N / 8; n += 2) {
        #pragma unroll
        for (int e = 0; e < 4; e++) acc[n][e] = acc[n + 1][e] = 0.0f;
        #pragma unroll
        for (int kk = 0; kk < KD / 16; kk++) {
            uint32_t r[4];
            k22_ldsm_x4(r, row + n * 8 * LD + kk * 16);
            const uint32_t b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
            k22_mma16816<T>(acc[n], a[kk], b0);
            k22_mma16816<T>(acc[n + 1], a[kk], b1);
        }
    }
}

/* acc += P B with P the warp's 16 x K values in accumulator layout, rounded to 16 bits, and B
 * the tile's first K rows (rows of LD, B[k][n] = tile[k][n], n < NO). B's fragments are the
 * tile's 8x8 blocks transposed by ldmatrix.trans: one gives products n and n + 1. */
template <class T, int K, int NO, int LD>
__device__ __forceinline__ void k22_fam_pb(float (&acc)[NO / 8][4], const float (&p)[K / 8][4], const T *tile)
{
    static_assert(NO % 16 == 0 && K % 16 == 0 && LD % 8 == 0, "products go in pairs; rows 16-byte aligned");
    const int lane = threadIdx.x % 32, m = lane / 8;
    const T *row = tile + (m % 2 * 8 + lane % 8) * LD + m / 2 * 8;
    #pragma unroll
    for (int kk = 0; kk < K / 16; kk++) {
        const uint32_t pa[4] = {k22_fa_pack2<T>(p[2 * kk][0], p[2 * kk][1]), k22_fa_pack2<T>(p[2 * kk][2], p[2 * kk][3]),
                                k22_fa_pack2<T>(p[2 * kk + 1][0], p[2 * kk + 1][1]),
                                k22_fa_pack2<T>(p[2 * kk + 1][2], p[2 * kk + 1][3])};
        #pragma unroll
        for (int n = 0; n < NO / 8; n += 2) {
            uint32_t r[4];
            k22_ldsm_x4_t(r, row + kk * 16 * LD + n * 8);
            const uint32_t b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
            k22_mma16816<T>(acc[n], pa, b0);
            k22_mma16816<T>(acc[n + 1], pa, b1);
        }
    }
}

/* dst[i * cols + col] = alpha acc + (accumulate ? dst : 0) for the lane's rows i = rows[0],
 * rows[1] (below n) and its columns below cols. */
template <int NO>
__device__ __forceinline__ void k22_fam_store(float *dst, const float (&acc)[NO / 8][4], const int (&rows)[2], int n,
                                              int cols, float alpha, int accumulate)
{
    const int c = 2 * (threadIdx.x % 32 % 4);
    #pragma unroll
    for (int m = 0; m < NO / 8; m++)
        #pragma unroll
        for (int e = 0; e < 4; e++) {
            const int i = rows[e / 2], col = m * 8 + c + e % 2;
            if (i >= n || col >= cols) continue;
            float *p = dst + (int64_t)i * cols + col;
            const float v = alpha * acc[m][e];
            *p = accumulate ? *p + v : v;
        }
}

#endif
