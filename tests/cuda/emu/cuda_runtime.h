/* cuda_runtime.h (emulator): just enough of the CUDA runtime and of CUDA C++ to compile
 * the .cu files of src/backend/cuda with a host C++ compiler and run every kernel on the CPU, so
 * the CUDA backend's logic (indexing, masks, reductions, accumulation) is checked where no GPU
 * exists. tests/cuda/emu/run builds it; it is a test tool, never part of k22.
 *
 * Model: "device" memory is host memory; a kernel launch runs its blocks one after another, and
 * the threads of a block as cooperative fibers (ucontext) that switch at __syncthreads, so block
 * barriers and __shared__ arrays (function statics: one block lives at a time) behave as on a
 * GPU. Launches are synchronous. Warp collectives (__shfl_xor_sync here, mma.sync and
 * ldmatrix in warp_mma.cuh) are exchanges between the 32 fibers of a warp
 * (k22_emu_warp_exchange): the lanes of a warp must reach the same collectives in the same
 * order, as a GPU requires. Between two block barriers the warps run one after another, so they
 * are not in step with each other (emu.cpp), as on a GPU.
 *
 * The runtime calls are declared extern "C", as the real header does, so the C files of k22core
 * built with K22_HAVE_CUDA (src/dist/device.c, tests) can include this header and call them;
 * everything CUDA C++ (dim3, intrinsics, launches) is for C++ only. */
#ifndef K22_EMU_CUDA_RUNTIME_H
#define K22_EMU_CUDA_RUNTIME_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
#include <functional>
#include <type_traits>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))

struct uint3 {
    unsigned x, y, z;
};
/* 16-byte aligned as on a GPU, where a misaligned 16-byte access faults: UBSan's alignment
 * check (the sanitized emulator run) reports one here. */
struct __attribute__((aligned(16))) uint4 {
    unsigned x, y, z, w;
};
static inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) {
    uint4 v = {x, y, z, w};
    return v;
}
struct dim3 {
    unsigned x, y, z;
    dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
extern uint3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;
extern "C" {
#endif

typedef enum {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorInvalidDevice = 101,
    cudaErrorNoDevice = 100,
} cudaError_t;
typedef enum {
    cudaMemcpyHostToHost,
    cudaMemcpyHostToDevice,
    cudaMemcpyDeviceToHost,
    cudaMemcpyDeviceToDevice,
    cudaMemcpyDefault
} cudaMemcpyKind;
typedef enum { cudaDevAttrMemoryPoolsSupported = 115 } cudaDeviceAttr;
typedef enum {
    cudaMemPoolAttrReleaseThreshold = 4,
    cudaMemPoolAttrReservedMemCurrent = 5,
    cudaMemPoolAttrUsedMemCurrent = 7
} cudaMemPoolAttr;
typedef struct k22_emu_stream *cudaStream_t;
typedef struct k22_emu_pool *cudaMemPool_t;
#define cudaStreamNonBlocking 1

/* The device's identity (nccl.c tells ranks sharing a GPU by it): the same for every process,
 * unless K22_EMU_GPU_PER_RANK=1 gives each process a GPU of its own (then the emulated NCCL of
 * nccl.h serves the ranks). */
typedef struct { char bytes[16]; } cudaUUID_t;
struct cudaDeviceProp { char name[256]; cudaUUID_t uuid; };
cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *p, int d);
cudaError_t cudaGetDeviceCount(int *n);
cudaError_t cudaSetDevice(int d);
cudaError_t cudaGetDevice(int *d);
cudaError_t cudaDeviceGetAttribute(int *v, cudaDeviceAttr a, int d);
cudaError_t cudaDeviceGetDefaultMemPool(cudaMemPool_t *p, int d);
cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t p, cudaMemPoolAttr a, void *v);
/* 0 for every attribute read: the pool gives freed blocks back at once, so it holds none unused. */
cudaError_t cudaMemPoolGetAttribute(cudaMemPool_t p, cudaMemPoolAttr a, void *v);
/* total: K22_EMU_MEM_MIB (default 81559, an H100's 80 GB); free: total less the live blocks. */
cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaDeviceSynchronize(void);
cudaError_t cudaMalloc(void **p, size_t n);
cudaError_t cudaMallocAsync(void **p, size_t n, cudaStream_t s);
cudaError_t cudaFree(void *p);
cudaError_t cudaFreeAsync(void *p, cudaStream_t s);
cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t n, cudaMemcpyKind k, cudaStream_t st);
cudaError_t cudaMemcpy(void *d, const void *s, size_t n, cudaMemcpyKind k);
cudaError_t cudaMemcpy2DAsync(void *d, size_t dp, const void *s, size_t sp, size_t w, size_t h,
                              cudaMemcpyKind k, cudaStream_t st);
cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t s);
cudaError_t cudaGetLastError(void);
const char *cudaGetErrorString(cudaError_t e);
const char *cudaGetErrorName(cudaError_t e);

#ifdef __cplusplus
}

/* Exact float intrinsics: the emulator is built with -ffp-contract=off. */
static inline float __fmul_rn(float a, float b) {
    return a * b;
}
static inline float __fadd_rn(float a, float b) {
    return a + b;
}
static inline float __fsub_rn(float a, float b) {
    return a - b;
}
static inline float __fdiv_rn(float a, float b) {
    return a / b;
}
static inline float __fsqrt_rn(float a) {
    return sqrtf(a);
}
static inline float __fmaf_rn(float a, float b, float c) {
    return fmaf(a, b, c);
}
static inline double __dmul_rn(double a, double b) {
    return a * b;
}
static inline double __dadd_rn(double a, double b) {
    return a + b;
}
static inline float __int_as_float(int i) {
    float f;
    memcpy(&f, &i, 4);
    return f;
}
static inline float __saturatef(float x) {
    return x < 0 ? 0 : (x > 1 ? 1 : x);
}
template <class T> static inline T min(T a, T b) {
    return a < b ? a : b;
}
template <class T> static inline T max(T a, T b) {
    return a > b ? a : b;
}
static inline float atomicAdd(float *p, float v) {
    float o = *p;
    *p = o + v;
    return o;
}
static inline double atomicAdd(double *p, double v) {
    double o = *p;
    *p = o + v;
    return o;
}

void __syncthreads(void);

/* The warp collective underneath: this thread's n (at most K22_EMU_XWORDS) words go in; once
 * every lane of its warp has given its own, all[l][0..n) holds lane l's. Aborts when a lane of the
 * warp is missing or at another collective (divergence, which a GPU does not allow either). */
#define K22_EMU_XWORDS 12
void k22_emu_warp_exchange(const uint32_t *mine, int n, uint32_t (*all)[K22_EMU_XWORDS]);
static inline int k22_emu_lane(void) {
    return (int)((threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)) % 32);
}
static inline float __shfl_xor_sync(unsigned mask, float v, int lane_mask) {
    uint32_t w, all[32][K22_EMU_XWORDS];
    memcpy(&w, &v, 4);
    (void)mask; /* every lane: k22_emu_warp_exchange checks they are all there */
    k22_emu_warp_exchange(&w, 1, all);
    memcpy(&v, &all[k22_emu_lane() ^ (lane_mask & 31)][0], 4);
    return v;
}

/* cp.async for async_copy.cuh (emu.cpp says when the copy happens): 16 bytes, of which the
 * first `bytes` (0 or 16) come from src and the rest are zero; groups as PTX's commit_group and
 * wait_group. A thread ending with copies not waited for aborts. */
void k22_emu_cp_async(void *dst, const void *src, int bytes);
void k22_emu_cp_commit(void);
void k22_emu_cp_wait(int n);

/* K22_EMU_WMMA, read by k22_emu_run at each launch: 1 for "wrong" (mma.h's and warp_mma.cuh's
 * fault), 2 for "wrong-mma" (warp_mma.cuh's alone), else 0. */
extern int k22_emu_wmma_wrong;

/* Runs fn for every thread of every block (see the header comment). */
void k22_emu_run(dim3 grid, dim3 block, size_t shmem, const std::function<void()> &fn);

/* Device memory is host memory here, so host code that touches it directly (a fault on a GPU)
 * would go unseen. In an AddressSanitizer build (emu.cpp) cudaMalloc'd blocks stay poisoned
 * except while emulated device work runs: a launch opens the blocks its pointer arguments lie in
 * (every block when an argument is a struct, which may hold pointers), runs, and closes them
 * again. A pointer argument outside every block (a host pointer) is reported and aborts. */
void k22_emu_open_ptr(const void *p, const char *what);
void k22_emu_open_all(void);
void k22_emu_close(void);
/* Library calls (cuBLASLt, cuDNN): opens [p, p + n), which must lie inside one device block
 * (else a report naming `what`, and abort); k22_emu_close closes it again. */
void k22_emu_open_range(const void *p, size_t n, const char *what);
template <class T> static inline void k22_emu_open_arg(const T &a) {
    if constexpr (std::is_pointer<T>::value)
        k22_emu_open_ptr((const void *)a, "kernel argument");
    else if constexpr (!std::is_arithmetic<T>::value && !std::is_enum<T>::value)
        k22_emu_open_all();
}

template <class... P> struct k22_emu_launcher {
    void (*k)(P...);
    dim3 g, b;
    size_t shm;
    template <class... A> void operator()(A... a) const {
        auto kk = k;
        std::function<void()> fn = [=]() { kk(static_cast<P>(a)...); };
        (k22_emu_open_arg(static_cast<P>(a)), ...);
        k22_emu_run(g, b, shm, fn);
        k22_emu_close();
    }
};
template <class... P>
k22_emu_launcher<P...> k22_emu_launch(void (*k)(P...), dim3 g, dim3 b, size_t shm = 0,
                                      cudaStream_t s = 0) {
    return k22_emu_launcher<P...>{k, g, b, shm};
}

#endif /* __cplusplus */

/* ---- events (the profiler's timer, src/backend/cuda/timer.cu) ----
 * Launches are synchronous here, so an event takes the host clock when it is recorded. */
#ifdef __cplusplus
extern "C" {
#endif
typedef struct k22_emu_event *cudaEvent_t;
cudaError_t cudaEventCreate(cudaEvent_t *e);
#define cudaEventDisableTiming 2
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned flags);
/* Work is done when launched here: a wait is only checked (the event must have been recorded). */
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned flags);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end);
cudaError_t cudaEventDestroy(cudaEvent_t e);
#ifdef __cplusplus
}
#endif
#endif
