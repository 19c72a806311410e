/* bench_mem.h: peak memory of a benchmark run, shared by the bench programs: on a CUDA device
 * the bytes in use above what was in use at the start (the memory pool's reserved bytes replaced
 * by its high mark), on the CPU the process's max RSS. Header-only: each bench is one file. */
#ifndef K22_BENCH_MEM_H
#define K22_BENCH_MEM_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#ifdef K22_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif


typedef struct {
    int cuda, dev;
    size_t base, peak; /* bytes in use before the model, and the largest seen above it */
} bench_mem;

#ifdef K22_HAVE_CUDA
static inline size_t cuda_used(void)
{
    size_t fr = 0, tot = 0;
    return cudaMemGetInfo(&fr, &tot) == cudaSuccess ? tot - fr : 0;
}
static inline uint64_t cuda_pool(int dev, enum cudaMemPoolAttr attr)
{
    cudaMemPool_t p;
    uint64_t v = 0;
    if (cudaDeviceGetDefaultMemPool(&p, dev) == cudaSuccess) cudaMemPoolGetAttribute(p, attr, &v);
    return v;
}
#endif

static inline void bench_mem_start(bench_mem *m, const char *device)
{
    memset(m, 0, sizeof *m);
    m->cuda = !strncmp(device, "cuda", 4);
#ifdef K22_HAVE_CUDA
    if (m->cuda) {
        m->dev = device[4] == ':' ? atoi(device + 5) : 0;
        if (cudaSetDevice(m->dev) == cudaSuccess) cudaFree(0); /* the context, outside the count */
        m->base = cuda_used();
    }
#endif
}

/* After a synchronized step: device use now, with the pool's reserved memory replaced by its
 * high mark (the pool keeps what it reserved, but a peak inside a step is gone by now). */
static inline void bench_mem_sample(bench_mem *m)
{
#ifdef K22_HAVE_CUDA
    if (m->cuda) {
        size_t used = cuda_used();
        uint64_t cur = cuda_pool(m->dev, cudaMemPoolAttrReservedMemCurrent);
        uint64_t high = cuda_pool(m->dev, cudaMemPoolAttrReservedMemHigh);
        size_t p = used - cur + high > m->base ? used - cur + high - m->base : 0;
        if (p > m->peak) m->peak = p;
    }
#endif
    (void)m;
}

static inline double bench_mem_peak_mib(const bench_mem *m)
{
    if (m->cuda) return m->peak / 1048576.0;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024.0; /* KiB on Linux */
}

#endif
