/* warp_mma.cuh: the tensor cores' warp-wide product mma.sync.aligned.m16n8k16 (bf16 or fp16
 * operands, fp32 accumulators), d += A B with A 16x16 and B 16x8, for kernels that keep their
 * tiles in registers (flash_mma.cu). Fragments follow the PTX ISA's layout for m16n8k16; with
 * g = lane / 4 and c = 2 (lane % 4), each 32-bit register holds two 16-bit values, the lower
 * column (or k) in the low half:
 *   a[0]: A[g][c, c+1]    a[1]: A[g+8][c, c+1]    a[2]: A[g][c+8, c+9]    a[3]: A[g+8][c+8, c+9]
 *   b[0]: B[c, c+1][g]    b[1]: B[c+8, c+9][g]
 *   d[0], d[1]: D[g][c, c+1]      d[2], d[3]: D[g+8][c, c+1]
 * so the accumulators of two neighbouring 8-column products are, rounded to 16 bits, the A
 * fragment of the next product over those 16 columns. Every lane of the warp must call it (a
 * warp collective; tests/cuda/emu has its own version of this header, built on an exchange
 * between the emulated lanes). Needs sm_80 or newer.
 *
 * The fragments come from shared memory by ldmatrix (k22_ldsm_x4, k22_ldsm_x4_t): four 8x8
 * matrices of 16-bit values in one instruction, lane l naming row l % 8 of matrix l / 8 (16 bytes,
 * 16-byte aligned); register i of lane l then holds matrix i's row g, columns c and c + 1 (as a
 * or b above wants them), or with .trans its column g, rows c and c + 1: a B fragment read from a
 * tile stored with B's k along the rows, so no transposed copy of the tile is needed. */
#ifndef K22_WARP_MMA_CUH
#define K22_WARP_MMA_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

template <class T>
__device__ __forceinline__ void k22_mma16816(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]);

template <>
__device__ __forceinline__ void k22_mma16816<__nv_bfloat16>(float (&d)[4], const uint32_t (&a)[4],
                                                            const uint32_t (&b)[2])
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                 "{%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

template <>
__device__ __forceinline__ void k22_mma16816<__half>(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2])
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                 "{%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

/* The 32-bit shared-memory address of p, as ldmatrix takes it. */
__device__ __forceinline__ uint32_t k22_smem_addr(const void *p)
{
    return (uint32_t)__cvta_generic_to_shared(p);
}

/* Four 8x8 16-bit matrices; row is this lane's row (row l % 8 of matrix l / 8). */
__device__ __forceinline__ void k22_ldsm_x4(uint32_t (&r)[4], const void *row)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(k22_smem_addr(row)));
}

/* The same four matrices, each transposed on the way. */
__device__ __forceinline__ void k22_ldsm_x4_t(uint32_t (&r)[4], const void *row)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(k22_smem_addr(row)));
}

#endif
