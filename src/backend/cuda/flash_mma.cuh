/* flash_mma.cuh: warp tiles over mma.sync m16n8k16 (warp_mma.cuh) for the fused attention
 * kernels of flash_mma.cu (forward) and flash_mma_bwd.cu (backward).
 *
 * A warp computes 16 rows. Its A operand is either 16 rows of a 16-bit tile in shared memory,
 * held as fragments (k22_fam_afrag), or fp32 values the warp holds in accumulator layout, rounded
 * to 16 bits on the way in (k22_fam_pb: the accumulators of two neighbouring 8-column products
 * are the A fragment over those 16 columns). B always comes from a 16-bit tile whose rows are B's
 * columns, B[k][n] = tile[n][k], so each B register is one aligned 32-bit load; a product that
 * needs the other orientation reads a transposed copy of the tile (k22_fam_load_t). Lane l holds,
 * of each 8-column product, rows g and g + 8 and columns c and c + 1 (g = l / 4, c = 2 (l % 4)). */
#ifndef K22_FLASH_MMA_CUH
#define K22_FLASH_MMA_CUH

#include "flash_attention.cuh"
#include "warp_mma.cuh"

/* The 32-bit register holding tile[r][c], tile[r][c + 1] of a tile with rows of LD (c and LD
 * even: 4-byte aligned). */
template <int LD, class T> __device__ __forceinline__ uint32_t k22_fam_word(const T *tile, int r, int c)
{
    return *(const uint32_t *)(tile + r * LD + c);
}

/* Rows r0 .. r0 + 15, columns 0 .. KD of a tile with rows of LD, as A fragments. */
template <class T, int KD, int LD>
__device__ __forceinline__ void k22_fam_afrag(uint32_t (&a)[KD / 16][4], const T *tile, int r0)
{
    const int lane = threadIdx.x % 32, g = lane / 4, c = 2 * (lane % 4);
    #pragma unroll
    for (int kk = 0; kk < KD / 16; kk++) {
        a[kk][0] = k22_fam_word<LD>(tile, r0 + g, kk * 16 + c);
        a[kk][1] = k22_fam_word<LD>(tile, r0 + g + 8, kk * 16 + c);
        a[kk][2] = k22_fam_word<LD>(tile, r0 + g, kk * 16 + c + 8);
        a[kk][3] = k22_fam_word<LD>(tile, r0 + g + 8, kk * 16 + c + 8);
    }
}

/* acc = A B^T for A in fragments over KD and B the first N rows of a tile with rows of LD:
 * acc[n] is the 8-column product n. */
template <class T, int N, int KD, int LD>
__device__ __forceinline__ void k22_fam_abt(float (&acc)[N / 8][4], const uint32_t (&a)[KD / 16][4], const T *tile)
{
    const int lane = threadIdx.x % 32, g = lane / 4, c = 2 * (lane % 4);
    #pragma unroll
    for (int n = 0; n < N / 8; n++) {
        acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
        #pragma unroll
        for (int kk = 0; kk < KD / 16; kk++) {
            const uint32_t b[2] = {k22_fam_word<LD>(tile, n * 8 + g, kk * 16 + c),
                                   k22_fam_word<LD>(tile, n * 8 + g, kk * 16 + c + 8)};
            k22_mma16816<T>(acc[n], a[kk], b);
        }
    }
}

/* acc += P B with P the warp's 16 x K values in accumulator layout, rounded to 16 bits, and
 * B[k][n] = tile[n][k] over the tile's first NO rows (rows of LD). */
template <class T, int K, int NO, int LD>
__device__ __forceinline__ void k22_fam_pb(float (&acc)[NO / 8][4], const float (&p)[K / 8][4], const T *tile)
{
    const int lane = threadIdx.x % 32, g = lane / 4, c = 2 * (lane % 4);
    #pragma unroll
    for (int kk = 0; kk < K / 16; kk++) {
        const uint32_t pa[4] = {k22_fa_pack2<T>(p[2 * kk][0], p[2 * kk][1]), k22_fa_pack2<T>(p[2 * kk][2], p[2 * kk][3]),
                                k22_fa_pack2<T>(p[2 * kk + 1][0], p[2 * kk + 1][1]),
                                k22_fa_pack2<T>(p[2 * kk + 1][2], p[2 * kk + 1][3])};
        #pragma unroll
        for (int n = 0; n < NO / 8; n++) {
            const uint32_t b[2] = {k22_fam_word<LD>(tile, n * 8 + g, kk * 16 + c),
                                   k22_fam_word<LD>(tile, n * 8 + g, kk * 16 + c + 8)};
            k22_mma16816<T>(acc[n], pa, b);
        }
    }
}

/* Rows r0 .. r0 + R of an (n, cols) fp32 matrix transposed into dst[col][r], rounded, zero
 * beyond (k22_fa_load's transpose). */
template <class T, int R, int DP>
__device__ __forceinline__ void k22_fam_load_t(T (*dst)[R + K22_FA_PAD], const float *src, int r0, int n, int cols)
{
    for (int e = threadIdx.x; e < R * DP; e += K22_FA_THREADS) {
        int r = e / DP, c = e % DP;
        float v = r0 + r < n && c < cols ? src[(int64_t)(r0 + r) * cols + c] : 0.0f;
        dst[c][r] = k22_fa_round<T>(v);
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
