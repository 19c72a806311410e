/* emu.cpp: the CPU emulator behind tests/cuda/emu/cuda_runtime.h and cublasLt.h (cuDNN's part is
 * emu_cudnn.cpp): fiber-per-thread kernel launches, host "device" memory filled with NaN so reads
 * of unwritten memory show, and a loop GEMM with cuBLASLt's column-major semantics. Every device
 * block is registered, so copies, memsets, GEMM operands and kernel pointer arguments must lie
 * inside one (else a report and abort: a host pointer or a wrong size); under AddressSanitizer
 * the blocks are also poisoned outside emulated device work (cuda_runtime.h). A test tool only
 * (tests/cuda/emu/run). */
#include "cublasLt.h"
#include "cuda_bf16.h"
#include "cuda_fp16.h"
#include "cuda_runtime.h"

#include <map>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#define EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EMU_ASAN 1
#endif
#endif
#ifdef EMU_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define EMU_POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define EMU_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define EMU_POISON(p, n) ((void)(p), (void)(n))
#define EMU_UNPOISON(p, n) ((void)(p), (void)(n))
#endif
/* Under ASan the fibers switch with GCC's __builtin_setjmp/__builtin_longjmp, which ASan does
 * not intercept: its longjmp interceptor makes two system calls and clears shadow memory on
 * every switch, which made the emulator about 20 times slower. */
#ifdef EMU_ASAN
/* ...and the functions that switch are not instrumented: ASan would call
 * __asan_handle_no_return (the same cost) before each __builtin_longjmp. */
#define EMU_SWITCHER __attribute__((no_sanitize_address, noinline))
typedef void *emu_jmp_buf[5];
#define EMU_SETJMP(b) __builtin_setjmp(b)
#define EMU_LONGJMP(b) __builtin_longjmp(b, 1)
#else
#define EMU_SWITCHER
typedef jmp_buf emu_jmp_buf;
#define EMU_SETJMP(b) _setjmp(b)
#define EMU_LONGJMP(b) _longjmp(b, 1)
#endif
/* ASan must be told of every stack switch between the scheduler and the fibers, or it takes the
 * jumps for stack overflows and may report false positives on the fiber stacks. */
#ifdef EMU_ASAN
#define EMU_SWITCH_START(save, bottom, size) __sanitizer_start_switch_fiber(save, bottom, size)
#define EMU_SWITCH_FINISH(save, bottom, size) __sanitizer_finish_switch_fiber(save, bottom, size)
#else
#define EMU_SWITCH_START(save, bottom, size) ((void)(save))
#define EMU_SWITCH_FINISH(save, bottom, size) ((void)(save))
#endif

uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;

/* ---- kernels ----
 * One fiber per thread of a block, created once and reused by every block and launch. Fibers
 * are started with makecontext/swapcontext and from then on switched with _setjmp/_longjmp,
 * which (unlike swapcontext) make no system call: a launch costs microseconds, not milliseconds. */

/* One 16-byte cp.async: what it writes, from where (bytes of it; the rest zero), and its group
 * (0: not yet committed). */
struct emu_copy {
    void *dst;
    const void *src;
    int bytes;
    unsigned long group;
};

#define EMU_STACK (128 * 1024)
#define EMU_MAX_THREADS 1024
struct emu_fiber {
    ucontext_t uc;
    emu_jmp_buf jb;
    int done;
    int wait;          /* what it yielded at: 0 __syncthreads, 1 a warp collective */
    unsigned long gen; /* warp collectives entered in this block */
    uint32_t x[K22_EMU_XWORDS]; /* its words of the collective it is in */
    uint3 idx;
    void *asan_fake; /* ASan's fake-stack handle while the fiber is switched out */
    std::vector<struct emu_copy> copies; /* its cp.async copies not yet done (k22_emu_cp_async) */
    unsigned long groups;                /* cp.async groups committed in this block */
};
static emu_fiber emu_fibers[EMU_MAX_THREADS];
static int emu_nfibers;
static ucontext_t emu_boot;
static emu_jmp_buf emu_sched;
static int emu_cur = -1;
static const std::function<void()> *emu_fn;
/* The scheduler's stack (the launching thread's), as ASan reports it on the first switch. */
[[maybe_unused]] static const void *emu_sched_bottom;
[[maybe_unused]] static size_t emu_sched_size;
static void *emu_sched_fake;

/* A fiber has just been switched to: tell ASan, learning the scheduler's stack. */
static void emu_fiber_entered(void) {
    EMU_SWITCH_FINISH(emu_fibers[emu_cur].asan_fake, &emu_sched_bottom, &emu_sched_size);
}

/* Back to the scheduler; returns when the scheduler resumes this fiber. */
EMU_SWITCHER static void emu_yield(void) {
    if (!EMU_SETJMP(emu_fibers[emu_cur].jb)) {
        EMU_SWITCH_START(&emu_fibers[emu_cur].asan_fake, emu_sched_bottom, emu_sched_size);
        EMU_LONGJMP(emu_sched);
    }
    emu_fiber_entered();
}

/* A fiber's life: park at creation, then run the kernel body once per block it is given. */
static void emu_fiber_main(void) {
    emu_fiber_entered();
    if (!EMU_SETJMP(emu_fibers[emu_cur].jb)) {
        EMU_SWITCH_START(&emu_fibers[emu_cur].asan_fake, emu_sched_bottom, emu_sched_size);
        swapcontext(&emu_fibers[emu_cur].uc, &emu_boot);
    }
    emu_fiber_entered();
    for (;;) {
        (*emu_fn)();
        if (!emu_fibers[emu_cur].copies.empty()) {
            fprintf(stderr, "emu: thread %d ended with %zu cp.async copies not waited for\n", emu_cur,
                    emu_fibers[emu_cur].copies.size());
            abort();
        }
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
        EMU_SWITCH_START(&emu_sched_fake, f.uc.uc_stack.ss_sp, EMU_STACK);
        swapcontext(&emu_boot, &f.uc); /* returns once the fiber has parked */
        EMU_SWITCH_FINISH(emu_sched_fake, NULL, NULL);
        emu_nfibers++;
    }
    emu_cur = -1;
}

/* Runs fiber t to its next barrier or its end. */
EMU_SWITCHER static void emu_resume(unsigned t) {
    emu_cur = (int)t;
    threadIdx = emu_fibers[t].idx;
    if (!EMU_SETJMP(emu_sched)) {
        EMU_SWITCH_START(&emu_sched_fake, emu_fibers[t].uc.uc_stack.ss_sp, EMU_STACK);
        EMU_LONGJMP(emu_fibers[t].jb);
    }
    EMU_SWITCH_FINISH(emu_sched_fake, NULL, NULL);
}

void __syncthreads(void) {
    if (emu_cur >= 0) {
        emu_fibers[emu_cur].wait = 0;
        emu_yield();
    }
}

/* Two rounds: every thread leaves its words and yields; in the next round each copies its warp's
 * words and yields again, so that no lane overwrites its words (at its next collective) before
 * every lane of the warp has read them. k22_emu_run runs a warp's lanes in rounds, each lane to
 * its next yield, so the warp moves in step (and checks that its lanes yield alike). */
void k22_emu_warp_exchange(const uint32_t *mine, int n, uint32_t (*all)[K22_EMU_XWORDS]) {
    if (emu_cur < 0 || n < 0 || n > K22_EMU_XWORDS) {
        fprintf(stderr, "emu: a warp collective outside a kernel or of %d words\n", n);
        abort();
    }
    emu_fiber &f = emu_fibers[emu_cur];
    memcpy(f.x, mine, (size_t)n * 4);
    f.gen++;
    f.wait = 1;
    emu_yield();
    const int first = emu_cur / 32 * 32, nt = (int)(blockDim.x * blockDim.y * blockDim.z);
    for (int l = 0; l < 32; l++) {
        const emu_fiber &o = emu_fibers[first + l];
        if (first + l >= nt || o.done || o.gen != f.gen) {
            fprintf(stderr, "emu: warp collective %lu of thread %d: lane %d is %s\n", f.gen, emu_cur, l,
                    first + l >= nt ? "past the block's threads" : o.done ? "done" : "at another collective");
            abort();
        }
        memcpy(all[l], o.x, (size_t)n * 4);
    }
    f.wait = 1;
    emu_yield();
}

int k22_emu_wmma_wrong;
static int emu_reverse; /* this launch's K22_EMU_ORDER */

/* cp.async (async_copy.cuh): a GPU may do the copy at any time between the issue and the wait
 * that covers it. The forward order does it at the wait, the latest moment, so a read of the
 * destination before the wait (or, by another thread, before the barrier after it) sees the old
 * contents; the reverse order does it at the issue, the earliest, so an issue into a buffer other
 * threads still read (no barrier between) overwrites what they read. */
static void emu_copy_do(const emu_copy &c) {
    memset(c.dst, 0, 16);
    if (c.bytes) memcpy(c.dst, c.src, (size_t)c.bytes);
}

void k22_emu_cp_async(void *dst, const void *src, int bytes) {
    if (emu_cur < 0 || (uintptr_t)dst % 16 || (bytes && (uintptr_t)src % 16) || (bytes != 0 && bytes != 16)) {
        fprintf(stderr, "emu: cp.async of %d bytes to %p from %p: outside a kernel, misaligned or not 0/16 bytes\n",
                bytes, dst, src);
        abort();
    }
    emu_copy c = {dst, src, bytes, 0};
    if (emu_reverse) emu_copy_do(c);
    else emu_fibers[emu_cur].copies.push_back(c);
}

void k22_emu_cp_commit(void) {
    emu_fiber &f = emu_fibers[emu_cur];
    f.groups++;
    for (emu_copy &c : f.copies)
        if (!c.group) c.group = f.groups;
}

void k22_emu_cp_wait(int n) {
    emu_fiber &f = emu_fibers[emu_cur];
    std::vector<emu_copy> left;
    for (const emu_copy &c : f.copies) {
        if (c.group && c.group + (unsigned long)n <= f.groups) emu_copy_do(c);
        else left.push_back(c);
    }
    f.copies.swap(left);
}

/* K22_EMU_ORDER=reverse runs the blocks of a launch, the warps of a block between barriers and
 * the lanes of a warp in each round, last first, and does cp.async copies at their issue instead
 * of at their wait. A GPU runs them concurrently: a thread that reads what another
 * thread writes in the same interval (a missing __syncthreads), or a block that reads what
 * another block writes, sees one value in one order and another in the other, so the kernel
 * tests run in both orders catch such races, which one fixed order hides. Read at each launch. */
static int emu_order_reverse(void) {
    const char *v = getenv("K22_EMU_ORDER");
    if (!v || !*v || !strcmp(v, "forward"))
        return 0;
    if (!strcmp(v, "reverse"))
        return 1;
    fprintf(stderr, "emu: K22_EMU_ORDER='%s': expected forward or reverse\n", v);
    abort();
}

void k22_emu_run(dim3 grid, dim3 block, size_t shmem, const std::function<void()> &fn) {
    const char *wmma = getenv("K22_EMU_WMMA");
    k22_emu_wmma_wrong = !wmma ? 0 : !strcmp(wmma, "wrong") ? 1 : !strcmp(wmma, "wrong-mma") ? 2 : 0;
    const int rev = emu_order_reverse();
    emu_reverse = rev;
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
    const uint64_t nblocks = (uint64_t)grid.x * grid.y * grid.z;
    for (uint64_t n = 0; n < nblocks; n++) {
        uint64_t b = rev ? nblocks - 1 - n : n;
        blockIdx = {(unsigned)(b % grid.x), (unsigned)(b / grid.x % grid.y),
                    (unsigned)(b / ((uint64_t)grid.x * grid.y))};
        for (unsigned t = 0; t < nt; t++)
            emu_fibers[t].done = 0, emu_fibers[t].gen = 0, emu_fibers[t].groups = 0;
        /* Phases between block barriers: in each, the warps run one after another (last first
         * in the reverse order), each to its next __syncthreads (or its end), its lanes in
         * rounds from one warp collective to the next. Warps are not in step on a GPU either, so
         * a warp that reads shared memory another warp writes between the same two barriers
         * sees the write in one order and not in the other. Lanes of one warp stopping at
         * different kinds of barrier (a __syncthreads and a collective) diverge: that stops. */
        const unsigned nw = (nt + 31) / 32;
        for (unsigned left = nt; left;) {
            left = 0;
            for (unsigned wi = 0; wi < nw; wi++) {
                const unsigned w = rev ? nw - 1 - wi : wi, first = 32 * w, last = first + 32 < nt ? first + 32 : nt;
                for (int kinds = 2; kinds == 2;) { /* while every live lane stopped at a collective */
                    kinds = 0;
                    for (unsigned i = first; i < last; i++) {
                        unsigned t = rev ? last - 1 - (i - first) : i;
                        if (emu_fibers[t].done)
                            continue;
                        emu_resume(t);
                        if (!emu_fibers[t].done)
                            kinds |= 1 << emu_fibers[t].wait;
                    }
                    if (kinds == 3) {
                        fprintf(stderr, "emu: block (%u,%u,%u) warp %u: lanes at __syncthreads and at a warp "
                                        "collective in the same round\n", blockIdx.x, blockIdx.y, blockIdx.z, w);
                        abort();
                    }
                }
                for (unsigned t = first; t < last; t++)
                    left += !emu_fibers[t].done;
            }
        }
        emu_cur = -1;
    }
}

/* ---- device blocks ---- */

/* Every live cudaMalloc block by its start address, and the blocks open to device work now. */
static std::map<uintptr_t, size_t> emu_blocks;
static std::vector<std::pair<void *, size_t>> emu_opened;

/* Reports a device access outside every device block, with a stack under ASan, and aborts:
 * on a GPU this is an illegal address or a failed call. */
[[noreturn]] static void emu_bad(const char *what, const void *p, size_t n) {
    fprintf(stderr, "emu: %s: [%p, +%zu bytes) is not inside one device allocation\n", what, p, n);
#ifdef EMU_ASAN
    __sanitizer_print_stack_trace();
#endif
    abort();
}

/* The block holding [p, p + n) (n = 0: p may be its end); aborts naming `what` when none. */
static std::map<uintptr_t, size_t>::iterator emu_block_of(const void *p, size_t n, const char *what) {
    uintptr_t a = (uintptr_t)p;
    auto it = emu_blocks.upper_bound(a);
    if (it == emu_blocks.begin())
        emu_bad(what, p, n);
    --it;
    if (a - it->first > it->second || n > it->second - (a - it->first))
        emu_bad(what, p, n);
    return it;
}

static int emu_is_device(const void *p) {
    uintptr_t a = (uintptr_t)p;
    auto it = emu_blocks.upper_bound(a);
    if (it == emu_blocks.begin())
        return 0;
    --it;
    return a - it->first < it->second;
}

static void emu_open_block(std::map<uintptr_t, size_t>::iterator it) {
    EMU_UNPOISON((void *)it->first, it->second);
    emu_opened.push_back({(void *)it->first, it->second});
}

/* Opens the device range [p, p + n) to the emulated device work that follows (its whole block). */
static void emu_open(const void *p, size_t n, const char *what) {
    emu_open_block(emu_block_of(p, n, what));
}

void k22_emu_open_ptr(const void *p, const char *what) {
    if (p)
        emu_open(p, 0, what);
}

void k22_emu_open_range(const void *p, size_t n, const char *what) {
    emu_open(p, n, what);
}

void k22_emu_open_all(void) {
    for (auto it = emu_blocks.begin(); it != emu_blocks.end(); ++it)
        emu_open_block(it);
}

void k22_emu_close(void) {
    for (auto &b : emu_opened)
        EMU_POISON(b.first, b.second);
    emu_opened.clear();
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
/* Kernels run when launched, but a library may queue work on a stream and run it only once the
 * host or another stream waits for that stream (emu_nccl.cpp does, so that reading a result too
 * early, or writing an input while it is in flight, shows). Weak: the ops test links no NCCL.
 * NULL: every stream. */
extern "C" void k22_emu_stream_reached(cudaStream_t s) __attribute__((weak));
static void emu_reached(cudaStream_t s) {
    if (k22_emu_stream_reached)
        k22_emu_stream_reached(s);
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned f) {
    *s = new k22_emu_stream();
    return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s) {
    emu_reached(s); /* its work still completes */
    delete s;
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
    emu_reached(s);
    return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize(void) {
    emu_reached(NULL);
    return cudaSuccess;
}
/* The emulated device's size (K22_EMU_MEM_MIB, default an H100's 80 GB) and the bytes of its
 * live blocks, for cudaMemGetInfo. */
static size_t emu_live_bytes;
static size_t emu_mem_total(void) {
    const char *v = getenv("K22_EMU_MEM_MIB");
    double mib = v && *v ? atof(v) : 81559.0;
    return (size_t)(mib * 1048576.0);
}
cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes) {
    size_t tot = emu_mem_total();
    *total_bytes = tot;
    *free_bytes = emu_live_bytes < tot ? tot - emu_live_bytes : 0;
    return cudaSuccess;
}
cudaError_t cudaMemPoolGetAttribute(cudaMemPool_t p, cudaMemPoolAttr a, void *v) {
    *(uint64_t *)v = 0; /* freed blocks go back at once: nothing reserved beyond what is used */
    return cudaSuccess;
}
cudaError_t cudaMalloc(void **p, size_t n) {
    /* 256-byte aligned, as cudaMalloc's blocks (alignment decides cuBLASLt's algorithms) */
    float *f = (float *)aligned_alloc(256, (n + 256) / 256 * 256);
    if (!f)
        return cudaErrorMemoryAllocation;
    memset(f, 0xff, n); /* NaN: a kernel reading memory nobody wrote shows up in the results */
    emu_blocks[(uintptr_t)f] = n ? n : 1;
    emu_live_bytes += n ? n : 1;
    EMU_POISON(f, n ? n : 1); /* host code may not touch it (cuda_runtime.h) */
    *p = f;
    return cudaSuccess;
}
cudaError_t cudaMallocAsync(void **p, size_t n, cudaStream_t s) {
    return cudaMalloc(p, n);
}
cudaError_t cudaFree(void *p) {
    if (!p)
        return cudaSuccess;
    auto it = emu_block_of(p, 0, "cudaFree");
    if (it->first != (uintptr_t)p)
        emu_bad("cudaFree of a pointer inside a block", p, 0);
    EMU_UNPOISON(p, it->second);
    emu_live_bytes -= it->second;
    emu_blocks.erase(it);
    free(p);
    return cudaSuccess;
}
cudaError_t cudaFreeAsync(void *p, cudaStream_t s) {
    return cudaFree(p);
}

/* Opens the device side(s) of a copy of n bytes, with rows (h > 1) of width w at pitches dp/sp:
 * a host side stays as it is, so a device pointer passed as the host one is caught by ASan. */
static void emu_open_copy(void *d, size_t dp, const void *s, size_t sp, size_t w, size_t h,
                          cudaMemcpyKind k, const char *what) {
    size_t dn = h ? (h - 1) * dp + w : 0, sn = h ? (h - 1) * sp + w : 0;
    int dd = k == cudaMemcpyHostToDevice || k == cudaMemcpyDeviceToDevice ||
             (k == cudaMemcpyDefault && emu_is_device(d));
    int sd = k == cudaMemcpyDeviceToHost || k == cudaMemcpyDeviceToDevice ||
             (k == cudaMemcpyDefault && emu_is_device(s));
    if (dd)
        emu_open(d, dn, what);
    if (sd)
        emu_open(s, sn, what);
}

cudaError_t cudaMemcpy2DAsync(void *d, size_t dp, const void *s, size_t sp, size_t w, size_t h,
                              cudaMemcpyKind k, cudaStream_t st) {
    if (w > dp || w > sp)
        return cudaErrorInvalidValue;
    if (!w || !h)
        return cudaSuccess;
    emu_open_copy(d, dp, s, sp, w, h, k, "cudaMemcpy2DAsync");
    for (size_t r = 0; r < h; r++)
        memmove((char *)d + r * dp, (const char *)s + r * sp, w);
    k22_emu_close();
    return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t n, cudaMemcpyKind k, cudaStream_t st) {
    if (!n)
        return cudaSuccess;
    emu_open_copy(d, n, s, n, n, 1, k, "cudaMemcpy");
    memmove(d, s, n);
    k22_emu_close();
    return cudaSuccess;
}
cudaError_t cudaMemcpy(void *d, const void *s, size_t n, cudaMemcpyKind k) {
    return cudaMemcpyAsync(d, s, n, k, 0);
}
cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t s) {
    if (!n)
        return cudaSuccess;
    emu_open(p, n, "cudaMemsetAsync");
    memset(p, v, n);
    k22_emu_close();
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
    cublasComputeType_t compute;
    cudaDataType_t scale;
    int epilogue;       /* cublasLtEpilogue_t */
    const void *bias;   /* CUBLASLT_EPILOGUE_BIAS's vector */
    int bias_type;      /* -1: D's type */
};
struct k22_emu_layout {
    cudaDataType_t type;
    uint64_t rows, cols;
    int64_t ld;
    int batch;
    int64_t stride;
};
struct k22_emu_pref {
    uint32_t align[4]; /* the minimum alignments of A, B, C and D the caller promises */
};

/* What the emulated library was asked (k22_emu_lt_heuristic_calls, k22_emu_lt_matmul_calls),
 * printed at exit under K22_EMU_LT_STATS. */
static long long emu_lt_heuristics, emu_lt_matmuls;
extern "C" long long k22_emu_lt_heuristic_calls(void) {
    return emu_lt_heuristics;
}
extern "C" long long k22_emu_lt_matmul_calls(void) {
    return emu_lt_matmuls;
}
static void emu_lt_stats_print(void) {
    fprintf(stderr, "k22_emu_lt heuristic_calls=%lld matmuls=%lld\n", emu_lt_heuristics, emu_lt_matmuls);
}

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
    *d = new k22_emu_desc{0, 0, c, t, CUBLASLT_EPILOGUE_DEFAULT, NULL, -1};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d) {
    delete d;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d,
                                              cublasLtMatmulDescAttributes_t a, const void *v,
                                              size_t n) {
    if (a == CUBLASLT_MATMUL_DESC_BIAS_POINTER) {
        if (n != sizeof(void *))
            return CUBLAS_STATUS_INVALID_VALUE;
        d->bias = *(const void *const *)v;
        return CUBLAS_STATUS_SUCCESS;
    }
    if (n != sizeof(int32_t))
        return CUBLAS_STATUS_INVALID_VALUE;
    int op = *(const int32_t *)v;
    if (a == CUBLASLT_MATMUL_DESC_TRANSA)
        d->ta = op;
    else if (a == CUBLASLT_MATMUL_DESC_TRANSB)
        d->tb = op;
    else if (a == CUBLASLT_MATMUL_DESC_EPILOGUE) {
        if (op != CUBLASLT_EPILOGUE_DEFAULT && op != CUBLASLT_EPILOGUE_BIAS)
            return CUBLAS_STATUS_NOT_SUPPORTED;
        d->epilogue = op;
    } else if (a == CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE)
        d->bias_type = op;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *l, cudaDataType_t t,
                                          uint64_t rows, uint64_t cols, int64_t ld) {
    if (ld < (int64_t)rows || ld < 1)
        return CUBLAS_STATUS_INVALID_VALUE;
    if (t != CUDA_R_32F && t != CUDA_R_16F && t != CUDA_R_16BF)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    *l = new k22_emu_layout{t, rows, cols, ld, 1, 0};
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
    *p = new k22_emu_pref{{256, 256, 256, 256}}; /* cuBLASLt's default: 256-byte aligned */
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p) {
    delete p;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t p,
                                                    cublasLtMatmulPreferenceAttributes_t a,
                                                    const void *v, size_t n) {
    if (a >= CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES && a <= CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES)
        p->align[a - CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES] = *(const uint32_t *)v;
    return CUBLAS_STATUS_SUCCESS;
}

/* The emulated algorithm: a hash of everything the heuristic was given (transposes, the three
 * layouts, the four alignments), as a real heuristic's pick depends on all of it. algo.data[0]
 * holds it, data[1..4] the alignments. cublasLtMatmul refuses an algorithm made for other layouts
 * or alignments than its operands have (a cache keyed on too little), and under
 * K22_EMU_GEMM_ALGO sums in an order the algorithm sets (emu_sum_split), so two calls whose
 * heuristic inputs differ in anything get different bits, as different kernels would. */
static uint64_t emu_mix(uint64_t h, uint64_t v) {
    return (h ^ v) * 1099511628211ull;
}
static uint64_t emu_layout_hash(uint64_t h, const k22_emu_layout *l) {
    h = emu_mix(h, (uint64_t)l->type);
    h = emu_mix(h, l->rows);
    h = emu_mix(h, l->cols);
    h = emu_mix(h, (uint64_t)l->ld);
    h = emu_mix(h, (uint64_t)l->batch);
    return emu_mix(h, l->batch > 1 ? (uint64_t)l->stride : 0);
}
static uint64_t emu_algo_hash(const k22_emu_desc *d, const k22_emu_layout *a,
                              const k22_emu_layout *b, const k22_emu_layout *c,
                              const uint64_t align[4]) {
    uint64_t h = 1469598103934665603ull;
    h = emu_mix(emu_mix(emu_mix(h, (uint64_t)d->ta), (uint64_t)d->tb), (uint64_t)d->epilogue);
    h = emu_layout_hash(emu_layout_hash(emu_layout_hash(h, a), b), c);
    for (int i = 0; i < 4; i++)
        h = emu_mix(h, align[i]);
    return h;
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
    /* fp32 compute and scale; A and B of one type; C and D fp32 */
    if (d->compute != CUBLAS_COMPUTE_32F || d->scale != CUDA_R_32F || a->type != b->type ||
        c->type != CUDA_R_32F)
        return 0;
    *m = am, *n = bn, *k = ak;
    return 1;
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t h, cublasLtMatmulDesc_t d,
                                              cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                              cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t dd,
                                              cublasLtMatmulPreference_t p, int req,
                                              cublasLtMatmulHeuristicResult_t *r, int *found) {
    static int stats = getenv("K22_EMU_LT_STATS") && atexit(emu_lt_stats_print) == 0;
    (void)stats;
    emu_lt_heuristics++;
    uint64_t m, n, k;
    if (!emu_shapes(d, a, b, c, &m, &n, &k))
        return CUBLAS_STATUS_INVALID_VALUE;
    /* Like some cuBLASLt versions: no batched algorithm with a zero stride. */
    if (c->batch > 1 && (a->stride == 0 || b->stride == 0) && getenv("K22_EMU_NO_ZERO_STRIDE")) {
        *found = 0;
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    if (d->epilogue != CUBLASLT_EPILOGUE_DEFAULT) {
        const char *e = getenv("K22_EMU_LT_EPILOGUE");
        /* fp32 bias only (D's type), as k22 asks for it */
        if ((e && !strcmp(e, "unsupported")) || (d->bias_type != -1 && d->bias_type != CUDA_R_32F)) {
            *found = 0;
            return CUBLAS_STATUS_NOT_SUPPORTED;
        }
    }
    memset(r, 0, sizeof *r);
    for (int i = 0; i < 4; i++)
        r->algo.data[1 + i] = p->align[i];
    r->algo.data[0] = emu_algo_hash(d, a, b, c, r->algo.data + 1);
    r->wavesCount = 1.0f;
    *found = 1;
    return CUBLAS_STATUS_SUCCESS;
}

/* An emulated algorithm's configuration: its id from the hash, one tile, stage and cluster
 * shape, no split-K; a size other than cuBLASLt's for the attribute is refused, as there. */
cublasStatus_t cublasLtMatmulAlgoConfigGetAttribute(const cublasLtMatmulAlgo_t *algo,
                                                    cublasLtMatmulAlgoConfigAttributes_t attr,
                                                    void *buf, size_t size, size_t *written) {
    size_t want = attr == CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID ? 2 : 4;
    if (!algo || !buf || size != want)
        return CUBLAS_STATUS_INVALID_VALUE;
    uint32_t v = attr == CUBLASLT_ALGO_CONFIG_ID ? (uint32_t)(algo->data[0] & 0xffff) : 1;
    if (want == 2) {
        uint16_t h = (uint16_t)v;
        memcpy(buf, &h, 2);
    } else {
        memcpy(buf, &v, 4);
    }
    if (written)
        *written = want;
    return CUBLAS_STATUS_SUCCESS;
}

/* Element e of a matrix of the given type, as float (16-bit values are widened exactly). */
static float emu_elem(const void *p, cudaDataType_t t, int64_t e) {
    if (t == CUDA_R_16BF)
        return __bfloat162float(((const __nv_bfloat16 *)p)[e]);
    if (t == CUDA_R_16F)
        return __half2float(((const __half *)p)[e]);
    return ((const float *)p)[e];
}

/* Bytes from a matrix's start to the end of its last element over all batches. */
static size_t emu_extent(const k22_emu_layout *l) {
    if (!l->rows || !l->cols)
        return 0;
    size_t es = l->type == CUDA_R_32F ? 4 : 2;
    uint64_t last = (l->rows - 1) + (l->cols - 1) * (uint64_t)l->ld;
    if (l->batch > 1)
        last += (uint64_t)(l->batch - 1) * (uint64_t)l->stride; /* stride >= 0 in k22 */
    return (size_t)(last + 1) * es;
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
    emu_lt_matmuls++;
    if (algo->data[0] != emu_algo_hash(d, la, lb, lc, algo->data + 1)) {
        fprintf(stderr, "emu: cublasLtMatmul: the algorithm was chosen for other layouts or alignments\n");
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    const void *ops[4] = {A, B, C, D};
    for (int i = 0; i < 4; i++)
        if ((uintptr_t)ops[i] % algo->data[1 + i]) {
            fprintf(stderr, "emu: cublasLtMatmul: operand %c at %p is not %llu-byte aligned as the "
                    "heuristic was told\n", "ABCD"[i], ops[i], (unsigned long long)algo->data[1 + i]);
            return CUBLAS_STATUS_INVALID_VALUE;
        }
    const float *bias = (const float *)d->bias;
    if (d->epilogue == CUBLASLT_EPILOGUE_BIAS && (!bias || (uintptr_t)bias % 4)) {
        fprintf(stderr, "emu: cublasLtMatmul: CUBLASLT_EPILOGUE_BIAS without an aligned bias pointer (%p)\n", d->bias);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    if (d->epilogue != CUBLASLT_EPILOGUE_BIAS)
        bias = NULL;
    /* Every element the product reads or writes lies in the operand's device block. */
    if (bias)
        emu_open(bias, m * sizeof(float), "cublasLtMatmul bias");
    emu_open(A, emu_extent(la), "cublasLtMatmul A");
    emu_open(B, emu_extent(lb), "cublasLtMatmul B");
    emu_open(D, emu_extent(ldd), "cublasLtMatmul C/D");
    float al = *(const float *)alpha, be = *(const float *)beta;
    /* K22_EMU_GEMM_FLOAT: sum in float (another rounding of the same products, as another GPU
     * algorithm would), to measure how far sum-order noise alone moves a run. K22_EMU_GEMM_ALGO:
     * in float too, in 1 to 3 runs of K set by the algorithm, added in turn. */
    static const int fsum = getenv("K22_EMU_GEMM_FLOAT") != NULL;
    const int split = getenv("K22_EMU_GEMM_ALGO") ? 1 + (int)(algo->data[0] % 3) : 0;
    for (int bt = 0; bt < lc->batch; bt++) {
        int64_t oa = bt * la->stride, ob = bt * lb->stride;
        float *Db = (float *)D + bt * lc->stride;
        for (uint64_t i = 0; i < m; i++)
            for (uint64_t j = 0; j < n; j++) {
                double acc = 0;
                float facc = 0, part = 0;
                for (uint64_t q = 0; q < k; q++) {
                    int64_t ea = d->ta ? q + i * la->ld : i + q * la->ld;
                    int64_t eb = d->tb ? j + q * lb->ld : q + j * lb->ld;
                    float av = emu_elem(A, la->type, oa + ea), bv = emu_elem(B, lb->type, ob + eb);
                    if (split) {
                        part += av * bv;
                        if ((q + 1) * split / k != q * split / k || q + 1 == k)
                            facc += part, part = 0;
                    } else if (fsum) {
                        facc += av * bv;
                    } else {
                        acc += (double)av * bv;
                    }
                }
                if (fsum || split)
                    acc = facc;
                float *dv = &Db[i + j * lc->ld];
                *dv = be == 0.0f ? (float)(al * acc) : (float)(al * acc + (double)be * *dv);
                if (bias) /* in fp32, after the product: a separate bias add's rounding */
                    *dv = *dv + bias[i];
            }
    }
    k22_emu_close();
    return CUBLAS_STATUS_SUCCESS;
}

/* ---- device identity (cuda_runtime.h) ---- */
#include <unistd.h>
cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *p, int d) {
    memset(p, 0, sizeof *p);
    const char *own = getenv("K22_EMU_GPU_PER_RANK");
    snprintf(p->name, sizeof p->name, "k22 emulated GPU %d", d);
    long id = own && !strcmp(own, "1") ? (long)getpid() : 0;
    char u[64];
    snprintf(u, sizeof u, "emu%d-%ld", d, id);
    memcpy(p->uuid.bytes, u, strlen(u) < sizeof p->uuid.bytes ? strlen(u) : sizeof p->uuid.bytes);
    return cudaSuccess;
}

/* ---- events (cuda_runtime.h): the host clock at record; unrecorded events are an error, as on a
 * GPU ---- */
#include <time.h>
struct k22_emu_event {
    double t;
    int recorded;
    cudaStream_t stream; /* where it was recorded: waiting on it reaches that stream */
};
cudaError_t cudaEventCreate(cudaEvent_t *e) {
    *e = new k22_emu_event{0, 0, NULL};
    return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    e->t = (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
    e->recorded = 1;
    e->stream = s;
    return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
    if (e->recorded)
        emu_reached(e->stream);
    return e->recorded ? cudaSuccess : cudaErrorInvalidValue;
}
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end) {
    if (!start->recorded || !end->recorded)
        return cudaErrorInvalidValue;
    *ms = (float)(1e3 * (end->t - start->t));
    return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned flags) {
    return cudaEventCreate(e);
}
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned flags) {
    if (!e || !e->recorded)
        return cudaErrorInvalidValue;
    emu_reached(e->stream); /* s goes on only after e's stream got there */
    return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
    delete e;
    return cudaSuccess;
}
