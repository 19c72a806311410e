/* mma.h (emulator): the warp matrix functions (nvcuda::wmma) that flash_attention.cu uses, for
 * 16x16x16 tiles of bf16 or fp16 with fp32 accumulators.
 *
 * On a GPU a fragment is spread over the 32 lanes of a warp in an unspecified way and every
 * lane calls each function with the same arguments. Here every thread (fiber) holds the whole
 * tile, in row-major order, and does the whole operation: the lanes of a warp then compute the
 * same values, and a store writes the same bits once per lane. Code that only fills, loads,
 * multiplies and stores fragments, or scales every element alike, behaves the same both ways;
 * code that reads x[i] as a particular row or column would not, and must not be written.
 *
 * The documented preconditions are checked, as a GPU would fault or compute garbage on them:
 * the matrix pointer 256-bit (32-byte) aligned, ldm a multiple of 16 bytes. The products of two
 * 16-bit values are exact in fp32; they are summed in k order, one fp32 rounding each (the
 * tensor cores' order and internal width differ: tests allow for fp32 summation differences).
 *
 * K22_EMU_WMMA=wrong (read at each kernel launch) makes mma_sync read b transposed, the kind of
 * layout mistake a kernel could make: the CUDA backend's self-test must then refuse the fused
 * attention kernels (tests/cuda/test_cuda_ops.c). */
#ifndef K22_EMU_MMA_H
#define K22_EMU_MMA_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <type_traits>

#include "cuda_bf16.h"
#include "cuda_runtime.h"
#include "cuda_fp16.h"

namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

static inline float k22_emu_wmma_to_float(float v) { return v; }
static inline float k22_emu_wmma_to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
static inline float k22_emu_wmma_to_float(__half v) { return __half2float(v); }

static inline void k22_emu_wmma_check(const void *p, unsigned ldm, size_t elem, const char *fn)
{
    if (((uintptr_t)p % 32) != 0 || (ldm * elem) % 16 != 0) {
        fprintf(stderr, "emu: wmma::%s: pointer %p not 32-byte aligned or ldm %u (x %zu bytes) "
                        "not a multiple of 16 bytes\n", fn, p, ldm, elem);
        abort();
    }
}

/* R x C values, row-major, the whole tile. Rows and columns by use: matrix_a M x K,
 * matrix_b K x N, accumulator M x N. */
template <class Use, int M, int N, int K, class T, class Layout = void> struct fragment {
    static const int rows = std::is_same<Use, matrix_b>::value ? K : M;
    static const int cols = std::is_same<Use, matrix_a>::value ? K : N;
    static const int num_elements = rows * cols;
    float x[rows * cols];
};

template <class Use, int M, int N, int K, class T, class L, class V>
static inline void fill_fragment(fragment<Use, M, N, K, T, L> &f, const V &v)
{
    for (int i = 0; i < f.num_elements; i++) f.x[i] = k22_emu_wmma_to_float(v);
}

/* matrix_a / matrix_b: the layout is the fragment's type. Element (r, c) of the tile is
 * p[r * ldm + c] when row-major, p[c * ldm + r] when column-major. */
template <class Use, int M, int N, int K, class T, class L, class P>
static inline void load_matrix_sync(fragment<Use, M, N, K, T, L> &f, const P *p, unsigned ldm)
{
    static_assert(!std::is_same<Use, accumulator>::value, "accumulators take a layout_t");
    k22_emu_wmma_check(p, ldm, sizeof(P), "load_matrix_sync");
    const bool row = std::is_same<L, row_major>::value;
    for (int r = 0; r < f.rows; r++)
        for (int c = 0; c < f.cols; c++)
            f.x[r * f.cols + c] = k22_emu_wmma_to_float(row ? p[r * ldm + c] : p[c * ldm + r]);
}

template <int M, int N, int K>
static inline void load_matrix_sync(fragment<accumulator, M, N, K, float> &f, const float *p,
                                    unsigned ldm, layout_t l)
{
    k22_emu_wmma_check(p, ldm, sizeof(float), "load_matrix_sync");
    for (int r = 0; r < M; r++)
        for (int c = 0; c < N; c++) f.x[r * N + c] = l == mem_row_major ? p[r * ldm + c] : p[c * ldm + r];
}

template <int M, int N, int K>
static inline void store_matrix_sync(float *p, const fragment<accumulator, M, N, K, float> &f,
                                     unsigned ldm, layout_t l)
{
    k22_emu_wmma_check(p, ldm, sizeof(float), "store_matrix_sync");
    for (int r = 0; r < M; r++)
        for (int c = 0; c < N; c++) (l == mem_row_major ? p[r * ldm + c] : p[c * ldm + r]) = f.x[r * N + c];
}

/* d = a b + c (d may be c). Each element is summed in k order; the loops run i, k, j so the
 * compiler can vectorize over j (the emulator runs this once per lane: it is most of the
 * emulated attention's time), which keeps that order. */
template <int M, int N, int K, class T, class LA, class LB>
__attribute__((optimize("O3"))) static inline void
mma_sync(fragment<accumulator, M, N, K, float> &d, const fragment<matrix_a, M, N, K, T, LA> &a,
         const fragment<matrix_b, M, N, K, T, LB> &b, const fragment<accumulator, M, N, K, float> &c)
{
    float bt[K * N];
    for (int k = 0; k < K; k++) /* K22_EMU_WMMA=wrong: b transposed */
        for (int j = 0; j < N; j++) bt[k * N + j] = k22_emu_wmma_wrong == 1 ? b.x[j * N + k] : b.x[k * N + j];
    float out[M * N];
    for (int e = 0; e < M * N; e++) out[e] = c.x[e];
    for (int i = 0; i < M; i++)
        for (int k = 0; k < K; k++) {
            const float aik = a.x[i * K + k];
            for (int j = 0; j < N; j++) out[i * N + j] += aik * bt[k * N + j];
        }
    for (int e = 0; e < M * N; e++) d.x[e] = out[e];
}

} // namespace wmma
} // namespace nvcuda

#endif
