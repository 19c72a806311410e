/* flash_mma.cu: the fused attention forward of flash_attention.cu with the scores and
 * probabilities in registers (the default fused kernels, K22_CUDA_ATTN=auto or mma;
 * flash_mma_bwd.cu has the backward).
 *
 * flash_attention.cu's forward goes through shared memory at every step: the warp matrix
 * functions store each 16x16 score tile as fp32, threads read it back one row each to form the
 * probabilities, write them as 16 bits, and the product P V loads them again, with a block barrier
 * between each. Here a warp owns 16 query rows and keeps its 16 x 64 scores of a key tile in the
 * accumulators of mma.sync m16n8k16 (warp_mma.cuh), whose layout is documented: each lane knows
 * which row and column each of its values is, applies the mask and forms the probability in
 * place, and the rounded probabilities of two 8-column products are already the A fragment of
 * P V. Shared memory holds only the 16-bit Q, K and V tiles, as loaded (ldmatrix.trans gives V's
 * B fragments), copied by cp.async 16 bytes at a time from the 16-bit copies flash_attention.cu's
 * k22_fam_stage makes once per call, the next key tile while the warps compute on this one
 * (k22_fam_walk); the only barriers are around the tiles.
 *
 * The numbers are flash_attention.cu's: the same two passes (max and sum, then P normalized by
 * them and rounded to 16 bits, then P V), the same rounding points; a row's max and sum are kept
 * per lane over its own columns and merged over the four lanes of the row at the end (the
 * order of the fp32 sums differs, well within the tests' tolerances). */
#include "flash_mma.cuh"

#define K22_FAM_KT 64 /* keys per tile: 8 products of 8 columns per warp */

/* The scores of a tile (k22_fam_abt) turned into logits in place (k22_fa_logit: scale, mask,
 * causal, padded keys), -inf outside the matrix. */
__device__ __forceinline__ void k22_fam_logits(float (&s)[K22_FAM_KT / 8][4], const k22_fa_args &a, int64_t b,
                                               const int (&rows)[2], int j0, int c)
{
    #pragma unroll
    for (int n = 0; n < K22_FAM_KT / 8; n++)
        #pragma unroll
        for (int e = 0; e < 4; e++) {
            const int i = rows[e / 2], j = j0 + n * 8 + c + e % 2;
            s[n][e] = i < a.TQ && j < a.TK ? k22_fa_logit(a, b, i, j, s[n][e]) : -INFINITY;
        }
}

/* The logits of the warp's rows against key tile j0, held in sK, in s. */
template <class T, int DP>
__device__ __forceinline__ void k22_fam_scores(float (&s)[K22_FAM_KT / 8][4], const T *sK, const k22_fa_args &a,
                                               int64_t bh, const uint32_t (&qa)[DP / 16][4], const int (&rows)[2],
                                               int j0)
{
    k22_fam_abt<T, K22_FAM_KT, DP, DP + K22_FA_PAD>(s, qa, sK);
    k22_fam_logits(s, a, bh / a.NH, rows, j0, 2 * (threadIdx.x % 32 % 4));
}

/* The (max, sum) of two parts of a row merged: (m, l) keeps the larger max. */
__device__ __forceinline__ void k22_fam_merge(float &m, float &l, float m1, float l1)
{
    float mx = fmaxf(m, m1);
    if (mx == -INFINITY) return; /* both empty */
    l = (m == -INFINITY ? 0.0f : l * expf(m - mx)) + (m1 == -INFINITY ? 0.0f : l1 * expf(m1 - mx));
    m = mx;
}

/* grid (heads, query blocks of K22_FA_ROWS), K22_FA_THREADS threads: warp w owns rows 16w .. 16w+15
 * of the block; lane holds rows g and g + 8 of them, columns c and c + 1 of each 8-column product
 * (g = lane / 4, c = 2 (lane % 4)). */
/* Four blocks per SM: ptxas then keeps it in 127 registers without spilling (156 left alone,
 * three blocks). */
template <class T, int DP, int PIPE>
__global__ void __launch_bounds__(K22_FA_THREADS, 4) k22_fam_fwd_kernel(float *out, float *lse, k22_fa_args a)
{
    static_assert(K22_FA_ROWS <= K22_FAM_KT, "the query tile is staged in a V buffer");
    __shared__ __align__(16) T sK[2][K22_FAM_KT][DP + K22_FA_PAD]; /* double-buffered (k22_fam_walk) */
    __shared__ __align__(16) T sV[2][K22_FAM_KT][DP + K22_FA_PAD];
    const int64_t bh = blockIdx.x;
    const int i0 = blockIdx.y * K22_FA_ROWS, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int wr = warp * 16 + lane / 4;
    const int rows[2] = {i0 + wr, i0 + wr + 8};
    /* under a causal mask no key past the block's last query counts */
    const int kend = a.causal && i0 + K22_FA_ROWS < a.TK ? i0 + K22_FA_ROWS : a.TK;
    const uint4 *kh = k22_fam_head(a.k16, bh, a.TK, DP), *vh = k22_fam_head(a.v16, bh, a.TK, DP);

    /* the block's queries, through sV[1] (untouched until pass 2 fetches its second tile, past
     * pass 1's barriers), as fragments */
    k22_fam_fetch<T, K22_FA_ROWS, DP>(sV[1], k22_fam_head(a.q16, bh, a.TQ, DP), i0, a.TQ);
    k22_cp_commit();
    k22_cp_wait<0>();
    __syncthreads();
    uint32_t qa[DP / 16][4];
    k22_fam_afrag<T, DP, DP + K22_FA_PAD>(qa, &sV[1][0][0], warp * 16);
    float s[K22_FAM_KT / 8][4];

    /* pass 1: per row, the max m and sum l of exp(logit - m) over this lane's columns, merged as
     * the max moves (flash_attention.cu's rule), then over the row's four lanes */
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
    k22_fam_walk<K22_FAM_KT, PIPE>(
        0, kend, [&](int j0, int b) { k22_fam_fetch<T, K22_FAM_KT, DP>(sK[b], kh, j0, a.TK); },
        [&](int j0, int b) {
            k22_fam_scores<T, DP>(s, &sK[b][0][0], a, bh, qa, rows, j0);
            #pragma unroll
            for (int n = 0; n < K22_FAM_KT / 8; n++)
                #pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int h = e / 2;
                    const float x = s[n][e];
                    if (x == -INFINITY) continue;
                    if (x > m[h]) {
                        l[h] = l[h] * expf(m[h] - x) + 1.0f;
                        m[h] = x;
                    } else {
                        l[h] += expf(x - m[h]);
                    }
                }
        });
    float inv[2];
    #pragma unroll
    for (int h = 0; h < 2; h++) {
        #pragma unroll
        for (int x = 1; x <= 2; x <<= 1) /* the four lanes of the row: the same result on each */
            k22_fam_merge(m[h], l[h], __shfl_xor_sync(0xffffffffu, m[h], x), __shfl_xor_sync(0xffffffffu, l[h], x));
        inv[h] = m[h] == -INFINITY ? 0.0f : 1.0f / l[h]; /* every key excluded: out = 0, lse = -inf */
        if (lane % 4 == 0 && rows[h] < a.TQ) lse[bh * a.TQ + rows[h]] = m[h] == -INFINITY ? -INFINITY : m[h] + logf(l[h]);
    }

    /* pass 2: out = P V, P = exp(logit - max) / sum rounded to 16 bits, straight from the score
     * registers into the A fragments of P V (keys 16 kk .. 16 kk + 15: products 2 kk, 2 kk + 1) */
    float o[DP / 8][4];
    #pragma unroll
    for (int n = 0; n < DP / 8; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    k22_fam_walk<K22_FAM_KT, PIPE>(
        0, kend,
        [&](int j0, int b) {
            k22_fam_fetch<T, K22_FAM_KT, DP>(sK[b], kh, j0, a.TK);
            k22_fam_fetch<T, K22_FAM_KT, DP>(sV[b], vh, j0, a.TK);
        },
        [&](int j0, int b) {
            k22_fam_scores<T, DP>(s, &sK[b][0][0], a, bh, qa, rows, j0);
            #pragma unroll
            for (int n = 0; n < K22_FAM_KT / 8; n++)
                #pragma unroll
                for (int e = 0; e < 4; e++) /* a row without keys has only -inf logits */
                    s[n][e] = s[n][e] == -INFINITY ? 0.0f : expf(s[n][e] - m[e / 2]) * inv[e / 2];
            k22_fam_pb<T, K22_FAM_KT, DP, DP + K22_FA_PAD>(o, s, &sV[b][0][0]);
        });
    k22_fam_store<DP>(out + bh * a.TQ * a.DV, o, rows, a.TQ, a.DV, 1.0f, 0);
}

template <class T, int PIPE> static k22_fa_fwd_fn k22_fam_fwd_pick(int dp)
{
    return dp == 16 ? k22_fam_fwd_kernel<T, 16, PIPE> : dp == 32 ? k22_fam_fwd_kernel<T, 32, PIPE>
                                                                 : k22_fam_fwd_kernel<T, 64, PIPE>;
}

k22_fa_fwd_fn k22_fam_fwd_of(int fp16, int dp, int pipe)
{
    if (fp16) return pipe ? k22_fam_fwd_pick<__half, 1>(dp) : k22_fam_fwd_pick<__half, 0>(dp);
    return pipe ? k22_fam_fwd_pick<__nv_bfloat16, 1>(dp) : k22_fam_fwd_pick<__nv_bfloat16, 0>(dp);
}
