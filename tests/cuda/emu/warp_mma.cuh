/* warp_mma.cuh (emulator): src/backend/cuda/warp_mma.cuh's k22_mma16816 without the PTX. The
 * lanes of the warp exchange their fragments (k22_emu_warp_exchange), every lane rebuilds the
 * whole 16x16 A and 16x8 B tiles from them with the PTX ISA's layout for mma.m16n8k16 and
 * computes its own four accumulators: so a kernel that puts a value in the wrong register, or
 * reads a result as the wrong row or column, computes wrong numbers here as on a GPU. Products of
 * two 16-bit values are exact in fp32; they are summed in k order, one rounding each (the tensor
 * cores' order and width differ: tests allow fp32 summation differences).
 * K22_EMU_WMMA=wrong (mma.h's fault too) or wrong-mma (this one's alone) reads B's two k halves
 * swapped, a layout mistake the CUDA backend's self-test must catch.
 * k22_ldsm_x4 / k22_ldsm_x4_t (ldmatrix): the lanes exchange their row addresses, and each lane
 * gathers its four registers from the rows the ISA's layout assigns it, so a kernel naming the
 * wrong row reads wrong values here too; a row address off 16 bytes aborts (a GPU faults). */
#ifndef K22_EMU_WARP_MMA_CUH
#define K22_EMU_WARP_MMA_CUH

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_bf16.h"
#include "cuda_fp16.h"
#include "cuda_runtime.h"

static inline float k22_emu_16_to_float(uint16_t bits, __nv_bfloat16 *) {
    __nv_bfloat16 h;
    h.x = bits;
    return __bfloat162float(h);
}
static inline float k22_emu_16_to_float(uint16_t bits, __half *) {
    __half h;
    h.x = bits;
    return __half2float(h);
}

/* d += A B over one warp, A (16x16) and B (16x8) from every lane's a and b. */
template <class T>
static inline void k22_mma16816(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    uint32_t mine[6] = {a[0], a[1], a[2], a[3], b[0], b[1]}, all[32][K22_EMU_XWORDS];
    k22_emu_warp_exchange(mine, 6, all);
    float A[16][16], B[16][8];
    const int bw = k22_emu_wmma_wrong ? 5 : 4; /* the register of B's low k half */
    for (int l = 0; l < 32; l++) {
        const int g = l / 4, c = 2 * (l % 4);
        for (int h = 0; h < 2; h++) { /* low and high 16 bits: columns (k) c and c + 1 */
            A[g][c + h] = k22_emu_16_to_float((uint16_t)(all[l][0] >> (16 * h)), (T *)0);
            A[g + 8][c + h] = k22_emu_16_to_float((uint16_t)(all[l][1] >> (16 * h)), (T *)0);
            A[g][c + 8 + h] = k22_emu_16_to_float((uint16_t)(all[l][2] >> (16 * h)), (T *)0);
            A[g + 8][c + 8 + h] = k22_emu_16_to_float((uint16_t)(all[l][3] >> (16 * h)), (T *)0);
            B[c + h][g] = k22_emu_16_to_float((uint16_t)(all[l][bw] >> (16 * h)), (T *)0);
            B[c + 8 + h][g] = k22_emu_16_to_float((uint16_t)(all[l][9 - bw] >> (16 * h)), (T *)0);
        }
    }
    const int lane = k22_emu_lane(), g = lane / 4, c = 2 * (lane % 4);
    for (int e = 0; e < 4; e++) { /* d0, d1: row g; d2, d3: row g + 8; columns c, c + 1 */
        const int r = g + 8 * (e / 2), n = c + e % 2;
        float s = d[e];
        for (int k = 0; k < 16; k++) s += A[r][k] * B[k][n];
        d[e] = s;
    }
}

/* ldmatrix .x4 over the warp: row is this lane's row (row l % 8 of matrix l / 8); register i
 * gets matrix i's row g, columns c, c + 1, or with trans its column g, rows c, c + 1. */
static inline void k22_emu_ldsm(uint32_t (&r)[4], const void *row, int trans) {
    const int lane = k22_emu_lane(), g = lane / 4, c = 2 * (lane % 4);
    const uint64_t mine64 = (uint64_t)(uintptr_t)row;
    if (mine64 % 16) {
        fprintf(stderr, "emu: ldmatrix: lane %d's row address %p is not 16-byte aligned\n", lane, row);
        abort();
    }
    uint32_t mine[2] = {(uint32_t)mine64, (uint32_t)(mine64 >> 32)}, all[32][K22_EMU_XWORDS];
    k22_emu_warp_exchange(mine, 2, all);
    const uint16_t *rows[32];
    for (int l = 0; l < 32; l++)
        rows[l] = (const uint16_t *)(uintptr_t)((uint64_t)all[l][0] | (uint64_t)all[l][1] << 32);
    for (int i = 0; i < 4; i++) {
        const uint16_t lo = trans ? rows[8 * i + c][g] : rows[8 * i + g][c];
        const uint16_t hi = trans ? rows[8 * i + c + 1][g] : rows[8 * i + g][c + 1];
        r[i] = (uint32_t)lo | (uint32_t)hi << 16;
    }
}
static inline void k22_ldsm_x4(uint32_t (&r)[4], const void *row) {
    k22_emu_ldsm(r, row, 0);
}
static inline void k22_ldsm_x4_t(uint32_t (&r)[4], const void *row) {
    k22_emu_ldsm(r, row, 1);
}

#endif
