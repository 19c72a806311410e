/* flash_attention.cuh: what the fused attention kernels share (flash_attention.cu's wmma kernels
 * and flash_mma.cu's and flash_mma_bwd.cu's on mma.sync): the arguments, the block geometry, the logit and
 * probability of one score as ops.h defines them, the rows' lse and D_i loader, the 16-bit packing
 * of two values, and the mma.sync kernels' entry points. */
#ifndef K22_FLASH_ATTENTION_CUH
#define K22_FLASH_ATTENTION_CUH

#include "common.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math.h>
#include <stdint.h>
#include <type_traits>

#define K22_FA_THREADS 128 /* four warps */
#define K22_FA_ROWS 64     /* rows a block owns: 16 per warp (queries, or keys for dK/dV) */
#define K22_FA_PAD 8       /* 16-bit tile row padding: keeps rows a multiple of 16 bytes */

typedef struct {
    const float *q, *k, *v, *dout;
    const float *lse;
    float *drow; /* backward: D_i = sum_c dout[i,c] out[i,c] per (head, query) */
    int NH, TQ, TK, D, DV;
    float scale;
    const float *mask;
    int64_t mask_bstride;
    int causal;
    const uint8_t *key_keep;
    /* The mma.sync kernels read q, k, v and dout as these copies instead: rounded to 16 bits, each
     * row padded with zeros to the kernel's head size DP (k22_cuda_round_lowp_rows), so that a
     * tile row is whole 16-byte words. */
    const void *q16, *k16, *v16, *do16;
} k22_fa_args;

/* The logit of query i and key j of batch item b from s = q.k, or -inf where it is excluded. */
__device__ __forceinline__ float k22_fa_logit(const k22_fa_args &a, int64_t b, int i, int j, float s)
{
    if ((a.causal && j > i) || (a.key_keep && !a.key_keep[b * a.TK + j])) return -INFINITY;
    float l = a.scale * s;
    if (a.mask) l += a.mask[b * a.mask_bstride + (int64_t)i * a.TK + j];
    return l;
}

/* P of query i, key j given the row's lse (0 where excluded, outside the matrix, or for a row
 * with every key excluded). */
__device__ __forceinline__ float k22_fa_prob(const k22_fa_args &a, int64_t b, int i, int j, float s,
                                             float lse)
{
    if (i >= a.TQ || j >= a.TK || lse == -INFINITY) return 0.0f;
    float x = k22_fa_logit(a, b, i, j, s);
    return x == -INFINITY ? 0.0f : expf(x - lse);
}

/* lse and D_i of queries i0 .. i0 + count (count <= K22_FA_THREADS) into shared memory: -inf and
 * 0 past TQ, which make P and dS zero there. */
__device__ __forceinline__ void k22_fa_load_rows(float *sLse, float *sD, const float *lse, const float *drow, int i0,
                                                 int TQ, int count)
{
    if ((int)threadIdx.x < count) {
        int i = i0 + threadIdx.x;
        sLse[threadIdx.x] = i < TQ ? lse[i] : -INFINITY;
        sD[threadIdx.x] = i < TQ ? drow[i] : 0.0f;
    }
}

/* Two values rounded to 16 bits (k22_cuda_round16, as every 16-bit write of the backend) in one
 * register, the first in the low half: the element of the lower column (or k index) of an
 * mma.sync fragment (warp_mma.cuh). */
template <class T> __device__ __forceinline__ uint32_t k22_fa_pack2(float lo, float hi)
{
    const int fp16 = std::is_same<T, __half>::value;
    return (uint32_t)k22_cuda_round16(lo, fp16) | (uint32_t)k22_cuda_round16(hi, fp16) << 16;
}

/* The kernels' signatures: forward (out, lse), dK/dV (dk, dv), dQ (dq). */
typedef void (*k22_fa_fwd_fn)(float *, float *, k22_fa_args);
typedef void (*k22_fa_dkdv_fn)(float *, float *, k22_fa_args);
typedef void (*k22_fa_dq_fn)(float *, k22_fa_args);
/* flash_mma.cu, flash_mma_bwd.cu: their kernels for bf16 (fp16 0) or fp16 (1) at padded head
 * size dp (16, 32 or 64), double-buffered (pipe 1) or not (0; k22_fam_walk). */
k22_fa_fwd_fn k22_fam_fwd_of(int fp16, int dp, int pipe);
void k22_fam_bwd_of(int fp16, int dp, int pipe, k22_fa_dkdv_fn *dkdv, k22_fa_dq_fn *dq);

#endif
