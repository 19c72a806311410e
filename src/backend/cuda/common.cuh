/* common.cuh: what every CUDA backend file shares: the context, the fatal-error checks for CUDA
 * and cuBLAS calls, launch geometry, and the entry points each .cu file contributes to the table
 * built in cuda_backend.cu. */
#ifndef K22_CUDA_COMMON_CUH
#define K22_CUDA_COMMON_CUH

#include <cublasLt.h>
#include <cuda_runtime.h>
#include <stdint.h>

/* k22's headers are C11: _Noreturn is not C++, and their symbols have C linkage. */
#define _Noreturn [[noreturn]]
extern "C" {
#include "k22/k22.h"
#include "k22/ops.h"
}
#undef _Noreturn

/* One per k22_backend_cuda_new. Everything runs on `stream`; the host waits only in to_host,
 * sync and sumsq. The device is made current once, at creation (one device per rank). */
typedef struct {
    int device;
    cudaStream_t stream;
    cublasLtHandle_t lt;
    void *workspace; /* cuBLASLt workspace, workspace_bytes long */
    size_t workspace_bytes;
    int async_alloc;  /* device supports stream-ordered allocation (cudaMallocAsync) */
    double *partials; /* sumsq scratch: K22_CUDA_REDUCE_BLOCKS per-block sums, then the total */
} k22_cuda_ctx;

/* Block size of the elementwise and reduction kernels, and the fixed block count of the sumsq
 * reduction (fixed so that its summation order, and thus its result, never changes). */
#define K22_CUDA_THREADS 256
#define K22_CUDA_REDUCE_BLOCKS 1024

/* Die (K22_FATAL: host, rank, file:line, then MPI_Abort) naming the failing statement, the
 * error and the device. */
[[noreturn]] void k22_cuda_die(const char *what, const char *why, const char *file, int line);
void k22_cuda_check_at(cudaError_t e, const char *what, const char *file, int line);
void k22_cublas_check_at(cublasStatus_t s, const char *what, const char *file, int line);
#define CUDA_CHECK(call) k22_cuda_check_at((call), #call, __FILE__, __LINE__)
#define CUBLAS_CHECK(call) k22_cublas_check_at((call), #call, __FILE__, __LINE__)
/* After every kernel launch: catches bad launch configurations at the launch site. */
#define CUDA_CHECK_LAUNCH()                                                                        \
    k22_cuda_check_at(cudaGetLastError(), "kernel launch", __FILE__, __LINE__)

/* Blocks for a grid-stride loop over n elements: enough to fill the GPU, never more than n
 * needs. */
static inline unsigned k22_cuda_blocks(int64_t n)
{
    int64_t b = (n + K22_CUDA_THREADS - 1) / K22_CUDA_THREADS;
    const int64_t cap = 65536;
    return (unsigned)(b < 1 ? 1 : (b > cap ? cap : b));
}

#define K22_CUDA_CTX(p) ((k22_cuda_ctx *)(p))

/* matmul.cu */
void k22_cuda_matmul(void *ctx, int ta, int tb, int M, int N, int K, float alpha, const float *A,
                     int64_t sA, const float *Bm, int64_t sB, float beta, float *C, int64_t sC,
                     int batch);
void k22_cuda_linear_fwd(void *ctx, float *y, const float *x, const float *w, const float *b,
                         int N, int I, int O);
void k22_cuda_linear_bwd(void *ctx, float *dx, float *dw, float *db, const float *dy,
                         const float *x, const float *w, int N, int I, int O);

/* elementwise.cu */
void k22_cuda_act_fwd(void *ctx, int act, float *y, const float *x, int64_t n);
void k22_cuda_act_bwd(void *ctx, int act, float *dx, const float *dy, const float *x, int64_t n);
void k22_cuda_add(void *ctx, float *y, const float *a, const float *b, int64_t n);
void k22_cuda_mul(void *ctx, float *y, const float *a, const float *b, int64_t n);
void k22_cuda_scale(void *ctx, float *y, const float *a, float s, int64_t n);
void k22_cuda_add_bwd(void *ctx, float *da, float *db, const float *dy, int64_t n);
void k22_cuda_mul_bwd(void *ctx, float *da, float *db, const float *dy, const float *a,
                      const float *b, int64_t n);
void k22_cuda_scale_bwd(void *ctx, float *da, const float *dy, float s, int64_t n);

/* optim.cu */
void k22_cuda_adamw_step(void *ctx, float *p, const float *g, float *m, float *v, int64_t n,
                         const k22_adamw_hparams *h);
void k22_cuda_sumsq(void *ctx, double *out, const float *g, int64_t n);

#endif
