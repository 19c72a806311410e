/* timer.cu: CUDA event marks on the backend's stream, for the profiler (cuda_timer.h). */
#define K22_CUDA_TIMER_IMPL
#include "common.cuh"
#include "cuda_timer.h"

#include <stdlib.h>

struct k22_cuda_timer {
    cudaStream_t stream;
    cudaEvent_t *ev; /* n events with timing enabled */
    int n;
};

extern "C" k22_cuda_timer *k22_cuda_timer_new(void *backend_ctx)
{
    k22_cuda_timer *t = (k22_cuda_timer *)k22_xcalloc(1, sizeof *t);
    t->stream = K22_CUDA_CTX(backend_ctx)->stream;
    return t;
}

/* Grows the pool to hold mark i: doubling, so a step of N ops creates events about log N times. */
static void k22_cuda_timer_grow(k22_cuda_timer *t, int i)
{
    int n = t->n ? 2 * t->n : 256;
    while (n <= i) n *= 2;
    cudaEvent_t *ev = (cudaEvent_t *)realloc(t->ev, (size_t)n * sizeof *ev);
    if (!ev) K22_FATAL("profiler: %d CUDA events: out of memory", n);
    for (int k = t->n; k < n; k++) CUDA_CHECK(cudaEventCreate(&ev[k]));
    t->ev = ev;
    t->n = n;
}

extern "C" void k22_cuda_timer_mark(k22_cuda_timer *t, int i)
{
    if (i >= t->n) k22_cuda_timer_grow(t, i);
    CUDA_CHECK(cudaEventRecord(t->ev[i], t->stream));
}

extern "C" float k22_cuda_timer_ms(k22_cuda_timer *t, int a, int b)
{
    K22_REQUIRE(a >= 0 && b >= 0 && a < t->n && b < t->n);
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, t->ev[a], t->ev[b]));
    return ms;
}

extern "C" void k22_cuda_timer_free(k22_cuda_timer *t)
{
    if (!t) return;
    for (int k = 0; k < t->n; k++) cudaEventDestroy(t->ev[k]);
    free(t->ev);
    free(t);
}
