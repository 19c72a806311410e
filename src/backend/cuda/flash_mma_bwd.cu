/* flash_mma_bwd.cu: the fused attention backward of flash_attention.cu (dK and dV per block of
 * keys, dQ per block of queries, P recomputed from lse, no atomics) with the scores, P, dP and
 * dS in registers (the default fused kernels, K22_CUDA_ATTN=auto or mma; flash_mma.cu has the
 * forward, flash_mma.cuh the warp tiles).
 *
 * A warp owns 16 rows (keys for dK/dV, queries for dQ) and walks the other side in tiles of 32:
 * the two products that form S and dP (S^T and dP^T for dK/dV) land in accumulators whose row
 * and column each lane knows, P and dS = P (dP - D_i) are formed there and go straight back in as
 * the A operand of dV += P^T dO, dK += dS^T Q or dQ += dS K, rounded to 16 bits where the wmma
 * kernels round them. Each tile is in shared memory once, as loaded: the products that need it
 * the other way round take their B fragments through ldmatrix.trans (flash_mma.cuh). The tiles of
 * the other side come by cp.async a tile ahead (k22_fam_walk). */
#include "flash_mma.cuh"

#define K22_FAM_QT 32 /* rows of the other side per tile */

/* Rows r0 .. r0 + K22_FA_ROWS of two heads' 16-bit rows x and y (n rows each), through the
 * staging tiles sx and sy (K22_FA_ROWS rows each: both buffers of a double-buffered tile), as the
 * A fragments of the warp's 16 rows each (xa, ya); sx and sy are free again on return. */
template <class T, int DP>
__device__ __forceinline__ void k22_fam_afrag2(T (*sx)[DP + K22_FA_PAD], T (*sy)[DP + K22_FA_PAD], const uint4 *x,
                                               const uint4 *y, int r0, int n, uint32_t (&xa)[DP / 16][4],
                                               uint32_t (&ya)[DP / 16][4])
{
    const int warp = threadIdx.x / 32;
    k22_fam_fetch<T, K22_FA_ROWS, DP>(sx, x, r0, n);
    k22_fam_fetch<T, K22_FA_ROWS, DP>(sy, y, r0, n);
    k22_cp_commit();
    k22_cp_wait<0>();
    __syncthreads();
    k22_fam_afrag<T, DP, DP + K22_FA_PAD>(xa, &sx[0][0], warp * 16);
    k22_fam_afrag<T, DP, DP + K22_FA_PAD>(ya, &sy[0][0], warp * 16);
    __syncthreads();
}

/* dK and dV for a block of K22_FA_ROWS keys: grid (heads, key blocks). Lane rows: keys. */
template <class T, int DP, int PIPE>
__global__ void __launch_bounds__(K22_FA_THREADS) k22_fam_dkdv_kernel(float *dk, float *dv, k22_fa_args a)
{
    static_assert(2 * K22_FAM_QT == K22_FA_ROWS, "a block's keys are staged in both buffers of a tile");
    /* double-buffered query tiles (k22_fam_walk: buffer t is rows t QT ..); first the block's K and V */
    __shared__ __align__(16) T sQ[2 * K22_FAM_QT][DP + K22_FA_PAD];
    __shared__ __align__(16) T sdO[2 * K22_FAM_QT][DP + K22_FA_PAD];
    __shared__ float sLse[2][K22_FAM_QT], sD[2][K22_FAM_QT];
    const int64_t bh = blockIdx.x, b = bh / a.NH;
    const int j0 = blockIdx.y * K22_FA_ROWS, warp = threadIdx.x / 32, c = 2 * (threadIdx.x % 32 % 4);
    const int wr = warp * 16 + threadIdx.x % 32 / 4, rows[2] = {j0 + wr, j0 + wr + 8};
    const uint4 *q = k22_fam_head(a.q16, bh, a.TQ, DP), *dout = k22_fam_head(a.do16, bh, a.TQ, DP);
    const float *lse = a.lse + bh * a.TQ, *drow = a.drow + bh * a.TQ;
    const int want_dk = dk != NULL, want_dv = dv != NULL;
    uint32_t ka[DP / 16][4], va[DP / 16][4];
    k22_fam_afrag2<T, DP>(sQ, sdO, k22_fam_head(a.k16, bh, a.TK, DP), k22_fam_head(a.v16, bh, a.TK, DP), j0,
                          a.TK, ka, va);
    float dka[DP / 8][4], dva[DP / 8][4], pt[K22_FAM_QT / 8][4], dpt[K22_FAM_QT / 8][4];
    #pragma unroll
    for (int n = 0; n < DP / 8; n++)
        #pragma unroll
        for (int e = 0; e < 4; e++) dka[n][e] = dva[n][e] = 0.0f;
    /* under a causal mask no query before the block's first key sees it */
    const int qbeg = a.causal ? j0 / K22_FAM_QT * K22_FAM_QT : 0;
    k22_fam_walk<K22_FAM_QT, PIPE>(
        qbeg, a.TQ,
        [&](int i0, int t) {
            k22_fam_fetch<T, K22_FAM_QT, DP>(sQ + t * K22_FAM_QT, q, i0, a.TQ);
            k22_fam_fetch<T, K22_FAM_QT, DP>(sdO + t * K22_FAM_QT, dout, i0, a.TQ);
            k22_fa_load_rows(sLse[t], sD[t], lse, drow, i0, a.TQ, K22_FAM_QT);
        },
        [&](int i0, int t) {
            k22_fam_abt<T, K22_FAM_QT, DP, DP + K22_FA_PAD>(pt, ka, &sQ[t * K22_FAM_QT][0]); /* S^T */
            if (want_dk) k22_fam_abt<T, K22_FAM_QT, DP, DP + K22_FA_PAD>(dpt, va, &sdO[t * K22_FAM_QT][0]); /* dP^T */
            #pragma unroll
            for (int n = 0; n < K22_FAM_QT / 8; n++)
                #pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int col = n * 8 + c + e % 2;
                    float p = k22_fa_prob(a, b, i0 + col, rows[e / 2], pt[n][e], sLse[t][col]);
                    pt[n][e] = p;
                    if (want_dk) dpt[n][e] = p == 0.0f ? 0.0f : p * (dpt[n][e] - sD[t][col]);
                }
            if (want_dv) k22_fam_pb<T, K22_FAM_QT, DP, DP + K22_FA_PAD>(dva, pt, &sdO[t * K22_FAM_QT][0]);
            if (want_dk) k22_fam_pb<T, K22_FAM_QT, DP, DP + K22_FA_PAD>(dka, dpt, &sQ[t * K22_FAM_QT][0]);
        });
    if (want_dv) k22_fam_store<DP>(dv + bh * a.TK * a.DV, dva, rows, a.TK, a.DV, 1.0f, 1);
    if (want_dk) k22_fam_store<DP>(dk + bh * a.TK * a.D, dka, rows, a.TK, a.D, a.scale, 1);
}

/* dQ for a block of K22_FA_ROWS queries: grid (heads, query blocks). Lane rows: queries. */
template <class T, int DP, int PIPE>
__global__ void __launch_bounds__(K22_FA_THREADS) k22_fam_dq_kernel(float *dq, k22_fa_args a)
{
    static_assert(2 * K22_FAM_QT == K22_FA_ROWS, "a block's queries are staged in both buffers of a tile");
    /* double-buffered key tiles (k22_fam_walk: buffer t is rows t QT ..); first the block's Q and dO */
    __shared__ __align__(16) T sK[2 * K22_FAM_QT][DP + K22_FA_PAD];
    __shared__ __align__(16) T sV[2 * K22_FAM_QT][DP + K22_FA_PAD];
    const int64_t bh = blockIdx.x, b = bh / a.NH;
    const int i0 = blockIdx.y * K22_FA_ROWS, warp = threadIdx.x / 32, c = 2 * (threadIdx.x % 32 % 4);
    const int wr = warp * 16 + threadIdx.x % 32 / 4, rows[2] = {i0 + wr, i0 + wr + 8};
    const uint4 *k = k22_fam_head(a.k16, bh, a.TK, DP), *v = k22_fam_head(a.v16, bh, a.TK, DP);
    const int kend = a.causal && i0 + K22_FA_ROWS < a.TK ? i0 + K22_FA_ROWS : a.TK;
    float li[2], di[2];
    #pragma unroll
    for (int h = 0; h < 2; h++) {
        li[h] = rows[h] < a.TQ ? a.lse[bh * a.TQ + rows[h]] : -INFINITY;
        di[h] = rows[h] < a.TQ ? a.drow[bh * a.TQ + rows[h]] : 0.0f;
    }
    uint32_t qa[DP / 16][4], doa[DP / 16][4];
    k22_fam_afrag2<T, DP>(sK, sV, k22_fam_head(a.q16, bh, a.TQ, DP), k22_fam_head(a.do16, bh, a.TQ, DP), i0,
                          a.TQ, qa, doa);
    float dqa[DP / 8][4], s[K22_FAM_QT / 8][4], dp[K22_FAM_QT / 8][4];
    #pragma unroll
    for (int n = 0; n < DP / 8; n++) dqa[n][0] = dqa[n][1] = dqa[n][2] = dqa[n][3] = 0.0f;
    k22_fam_walk<K22_FAM_QT, PIPE>(
        0, kend,
        [&](int j0, int t) {
            k22_fam_fetch<T, K22_FAM_QT, DP>(sK + t * K22_FAM_QT, k, j0, a.TK);
            k22_fam_fetch<T, K22_FAM_QT, DP>(sV + t * K22_FAM_QT, v, j0, a.TK);
        },
        [&](int j0, int t) {
            k22_fam_abt<T, K22_FAM_QT, DP, DP + K22_FA_PAD>(s, qa, &sK[t * K22_FAM_QT][0]);   /* S */
            k22_fam_abt<T, K22_FAM_QT, DP, DP + K22_FA_PAD>(dp, doa, &sV[t * K22_FAM_QT][0]); /* dP */
            #pragma unroll
            for (int n = 0; n < K22_FAM_QT / 8; n++)
                #pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int h = e / 2;
                    float p = k22_fa_prob(a, b, rows[h], j0 + n * 8 + c + e % 2, s[n][e], li[h]);
                    s[n][e] = p == 0.0f ? 0.0f : p * (dp[n][e] - di[h]); /* dS */
                }
            k22_fam_pb<T, K22_FAM_QT, DP, DP + K22_FA_PAD>(dqa, s, &sK[t * K22_FAM_QT][0]);
        });
    k22_fam_store<DP>(dq + bh * a.TQ * a.D, dqa, rows, a.TQ, a.D, a.scale, 1);
}

template <class T, int PIPE> static void k22_fam_bwd_pick(int dp, k22_fa_dkdv_fn *dkdv, k22_fa_dq_fn *dq)
{
    *dkdv = dp == 16 ? k22_fam_dkdv_kernel<T, 16, PIPE> : dp == 32 ? k22_fam_dkdv_kernel<T, 32, PIPE>
                                                                   : k22_fam_dkdv_kernel<T, 64, PIPE>;
    *dq = dp == 16 ? k22_fam_dq_kernel<T, 16, PIPE> : dp == 32 ? k22_fam_dq_kernel<T, 32, PIPE>
                                                               : k22_fam_dq_kernel<T, 64, PIPE>;
}

void k22_fam_bwd_of(int fp16, int dp, int pipe, k22_fa_dkdv_fn *dkdv, k22_fa_dq_fn *dq)
{
    if (fp16) return pipe ? k22_fam_bwd_pick<__half, 1>(dp, dkdv, dq) : k22_fam_bwd_pick<__half, 0>(dp, dkdv, dq);
    return pipe ? k22_fam_bwd_pick<__nv_bfloat16, 1>(dp, dkdv, dq) : k22_fam_bwd_pick<__nv_bfloat16, 0>(dp, dkdv, dq);
}
