/* emu.cpp: the CPU emulator behind tests/cuda/emu/cuda_runtime.h and cublasLt.h: fiber-per-thread
 * kernel launches, host "device" memory filled with NaN so reads of unwritten memory show, and a
 * loop GEMM with cuBLASLt's column-major semantics. A test tool only (tests/cuda/emu/run). */
#include "cublasLt.h"
#include "cuda_runtime.h"

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <ucontext.h>

uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;

/* ---- kernels ----
 * One fiber per thread of a block, created once and reused by every block and launch. Fibers
 * are started with makecontext/swapcontext and from then on switched with _setjmp/_longjmp,
 * which (unlike swapcontext) make no system call: a launch costs microseconds, not milliseconds. */

#define EMU_STACK (128 * 1024)
#define EMU_MAX_THREADS 1024
struct emu_fiber {
    ucontext_t uc;
    jmp_buf jb;
    int done;
    uint3 idx;
};
static emu_fiber emu_fibers[EMU_MAX_THREADS];
static int emu_nfibers;
static ucontext_t emu_boot;
static jmp_buf emu_sched;
static int emu_cur = -1;
static const std::function<void()> *emu_fn;

/* Back to the scheduler; returns when the scheduler resumes this fiber. */
static void emu_yield(void) {
    if (!_setjmp(emu_fibers[emu_cur].jb))
        _longjmp(emu_sched, 1);
}

/* A fiber's life: park at creation, then run the kernel body once per block it is given. */
static void emu_fiber_main(void) {
    if (!_setjmp(emu_fibers[emu_cur].jb))
        swapcontext(&emu_fibers[emu_cur].uc, &emu_boot);
    for (;;) {
        (*emu_fn)();
        emu_fibers[emu_cur].done = 1;
        emu_yield();
    }
}

static void emu_fibers_ensure(unsigned nt) {
    while (emu_nfibers < (int)nt) {
        emu_fiber &f = emu_fibers[emu_nfibers];
        getcontext(&f.uc);
        f.uc.uc_stack.ss_sp = malloc(EMU_STACK);
        f.uc.uc_stack.ss_size = EMU_STACK;
        f.uc.uc_link = NULL;
        if (!f.uc.uc_stack.ss_sp)
            abort();
        makecontext(&f.uc, emu_fiber_main, 0);
        emu_cur = emu_nfibers;
        swapcontext(&emu_boot, &f.uc); /* returns once the fiber has parked */
        emu_nfibers++;
    }
    emu_cur = -1;
}

void __syncthreads(void) {
    if (emu_cur >= 0)
        emu_yield();
}

void k22_emu_run(dim3 grid, dim3 block, size_t shmem, const std::function<void()> &fn) {
    unsigned nt = block.x * block.y * block.z;
    if (nt == 0 || nt > EMU_MAX_THREADS || grid.x == 0 || grid.y == 0 || grid.z == 0 ||
        grid.y > 65535 || grid.z > 65535 || shmem > 0) {
        fprintf(stderr, "emu: bad launch grid (%u,%u,%u) block (%u,%u,%u) shmem %zu\n", grid.x,
                grid.y, grid.z, block.x, block.y, block.z, shmem);
        abort();
    }
    emu_fibers_ensure(nt);
    gridDim = grid;
    blockDim = block;
    emu_fn = &fn;
    for (unsigned t = 0; t < nt; t++)
        emu_fibers[t].idx = {t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
    for (unsigned bz = 0; bz < grid.z; bz++)
        for (unsigned by = 0; by < grid.y; by++)
            for (unsigned bx = 0; bx < grid.x; bx++) {
                blockIdx = {bx, by, bz};
                for (unsigned t = 0; t < nt; t++)
                    emu_fibers[t].done = 0;
                /* Rounds: every live thread runs to its next barrier (or its end). */
                for (unsigned left = nt; left;) {
                    left = 0;
                    for (unsigned t = 0; t < nt; t++) {
                        if (emu_fibers[t].done)
                            continue;
                        emu_cur = (int)t;
                        threadIdx = emu_fibers[t].idx;
                        if (!_setjmp(emu_sched))
                            _longjmp(emu_fibers[t].jb, 1);
                        if (!emu_fibers[t].done)
                            left++;
                    }
                }
                emu_cur = -1;
            }
}

/* ---- runtime ---- */

static cudaError_t emu_last = cudaSuccess;
struct k22_emu_stream {
    int x;
};
struct k22_emu_pool {
    int x;
};
static k22_emu_pool emu_pool;

cudaError_t cudaGetDeviceCount(int *n) {
    *n = 1;
    return cudaSuccess;
}
cudaError_t cudaSetDevice(int d) {
    return d == 0 ? cudaSuccess : cudaErrorInvalidDevice;
}
cudaError_t cudaGetDevice(int *d) {
    *d = 0;
    return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int *v, cudaDeviceAttr a, int d) {
    *v = getenv("K22_EMU_NO_POOLS") ? 0 : 1;
    return cudaSuccess;
}
cudaError_t cudaDeviceGetDefaultMemPool(cudaMemPool_t *p, int d) {
    *p = &emu_pool;
    return cudaSuccess;
}
cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t p, cudaMemPoolAttr a, void *v) {
    return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned f) {
    *s = new k22_emu_stream();
    return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s) {
    delete s;
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
    return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize(void) {
    return cudaSuccess;
}
cudaError_t cudaMalloc(void **p, size_t n) {
    float *f = (float *)malloc(n ? n : 1);
    if (!f)
        return cudaErrorMemoryAllocation;
    memset(f, 0xff, n); /* NaN: a kernel reading memory nobody wrote shows up in the results */
    *p = f;
    return cudaSuccess;
}
cudaError_t cudaMallocAsync(void **p, size_t n, cudaStream_t s) {
    return cudaMalloc(p, n);
}
cudaError_t cudaFree(void *p) {
    free(p);
    return cudaSuccess;
}
cudaError_t cudaFreeAsync(void *p, cudaStream_t s) {
    free(p);
    return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t n, cudaMemcpyKind k, cudaStream_t st) {
    memmove(d, s, n);
    return cudaSuccess;
}
cudaError_t cudaMemcpy(void *d, const void *s, size_t n, cudaMemcpyKind k) {
    memmove(d, s, n);
    return cudaSuccess;
}
cudaError_t cudaMemcpy2DAsync(void *d, size_t dp, const void *s, size_t sp, size_t w, size_t h,
                              cudaMemcpyKind k, cudaStream_t st) {
    if (w > dp || w > sp)
        return cudaErrorInvalidValue;
    for (size_t r = 0; r < h; r++)
        memmove((char *)d + r * dp, (const char *)s + r * sp, w);
    return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t s) {
    memset(p, v, n);
    return cudaSuccess;
}
cudaError_t cudaGetLastError(void) {
    cudaError_t e = emu_last;
    emu_last = cudaSuccess;
    return e;
}
const char *cudaGetErrorString(cudaError_t e) {
    return e ? "emulated error" : "no error";
}
const char *cudaGetErrorName(cudaError_t e) {
    return e ? "cudaErrorEmulated" : "cudaSuccess";
}

/* ---- cuBLASLt ---- */

struct k22_emu_lt {
    int x;
};
struct k22_emu_desc {
    int ta, tb;
};
struct k22_emu_layout {
    uint64_t rows, cols;
    int64_t ld;
    int batch;
    int64_t stride;
};
struct k22_emu_pref {
    int x;
};

cublasStatus_t cublasLtCreate(cublasLtHandle_t *h) {
    *h = new k22_emu_lt();
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtDestroy(cublasLtHandle_t h) {
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}
const char *cublasLtGetStatusString(cublasStatus_t s) {
    return s ? "emulated cuBLASLt error" : "success";
}
cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *d, cublasComputeType_t c,
                                        cudaDataType_t t) {
    *d = new k22_emu_desc{0, 0};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d) {
    delete d;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d,
                                              cublasLtMatmulDescAttributes_t a, const void *v,
                                              size_t n) {
    int op = *(const int *)v;
    if (a == CUBLASLT_MATMUL_DESC_TRANSA)
        d->ta = op;
    else if (a == CUBLASLT_MATMUL_DESC_TRANSB)
        d->tb = op;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *l, cudaDataType_t t,
                                          uint64_t rows, uint64_t cols, int64_t ld) {
    if (ld < (int64_t)rows || ld < 1)
        return CUBLAS_STATUS_INVALID_VALUE;
    *l = new k22_emu_layout{rows, cols, ld, 1, 0};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l) {
    delete l;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t l,
                                                cublasLtMatrixLayoutAttribute_t a, const void *v,
                                                size_t n) {
    if (a == CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT)
        l->batch = *(const int32_t *)v;
    else if (a == CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET)
        l->stride = *(const int64_t *)v;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *p) {
    *p = new k22_emu_pref();
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p) {
    delete p;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t p,
                                                    cublasLtMatmulPreferenceAttributes_t a,
                                                    const void *v, size_t n) {
    return CUBLAS_STATUS_SUCCESS;
}

/* The shapes cuBLASLt checks: op(A) (m, k), op(B) (k, n), C and D (m, n), equal batch counts. */
static int emu_shapes(const k22_emu_desc *d, const k22_emu_layout *a, const k22_emu_layout *b,
                      const k22_emu_layout *c, uint64_t *m, uint64_t *n, uint64_t *k) {
    uint64_t am = d->ta ? a->cols : a->rows, ak = d->ta ? a->rows : a->cols;
    uint64_t bk = d->tb ? b->cols : b->rows, bn = d->tb ? b->rows : b->cols;
    if (ak != bk || c->rows != am || c->cols != bn)
        return 0;
    if (a->batch != c->batch || b->batch != c->batch)
        return 0;
    *m = am, *n = bn, *k = ak;
    return 1;
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t h, cublasLtMatmulDesc_t d,
                                              cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                              cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t dd,
                                              cublasLtMatmulPreference_t p, int req,
                                              cublasLtMatmulHeuristicResult_t *r, int *found) {
    uint64_t m, n, k;
    if (!emu_shapes(d, a, b, c, &m, &n, &k))
        return CUBLAS_STATUS_INVALID_VALUE;
    /* Like some cuBLASLt versions: no batched algorithm with a zero stride. */
    if (c->batch > 1 && (a->stride == 0 || b->stride == 0) && getenv("K22_EMU_NO_ZERO_STRIDE")) {
        *found = 0;
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    memset(r, 0, sizeof *r);
    *found = 1;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t h, cublasLtMatmulDesc_t d, const void *alpha,
                              const void *A, cublasLtMatrixLayout_t la, const void *B,
                              cublasLtMatrixLayout_t lb, const void *beta, const void *C,
                              cublasLtMatrixLayout_t lc, void *D, cublasLtMatrixLayout_t ldd,
                              const cublasLtMatmulAlgo_t *algo, void *ws, size_t wsn,
                              cudaStream_t s) {
    uint64_t m, n, k;
    if (!emu_shapes(d, la, lb, lc, &m, &n, &k))
        return CUBLAS_STATUS_INVALID_VALUE;
    if (C != D || lc->ld != ldd->ld)
        return CUBLAS_STATUS_NOT_SUPPORTED; /* k22 always has C == D */
    float al = *(const float *)alpha, be = *(const float *)beta;
    for (int bt = 0; bt < lc->batch; bt++) {
        const float *Ab = (const float *)A + bt * la->stride,
                    *Bb = (const float *)B + bt * lb->stride;
        float *Db = (float *)D + bt * lc->stride;
        for (uint64_t i = 0; i < m; i++)
            for (uint64_t j = 0; j < n; j++) {
                double acc = 0;
                for (uint64_t q = 0; q < k; q++) {
                    float av = d->ta ? Ab[q + i * la->ld] : Ab[i + q * la->ld];
                    float bv = d->tb ? Bb[j + q * lb->ld] : Bb[q + j * lb->ld];
                    acc += (double)av * bv;
                }
                float *dv = &Db[i + j * lc->ld];
                *dv = be == 0.0f ? (float)(al * acc) : (float)(al * acc + (double)be * *dv);
            }
    }
    return CUBLAS_STATUS_SUCCESS;
}
