/* bench_util.h (bench/ only): what the benchmarks share: the process CPU clock and the wall
 * clock in seconds, and fixed pseudo-random inputs (the same values on every run and machine,
 * so the C side and the PyTorch side time the same shapes on comparable data). */
#ifndef K22_BENCH_UTIL_H
#define K22_BENCH_UTIL_H

#include <stdint.h>
#include <time.h>

#include "k22/k22.h"

/* CPU seconds of the whole process (all threads). */
static inline double bench_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static inline double bench_wall_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* n values in [-0.5, 0.5] from a multiplicative hash of the index; stream picks another set. */
static inline float *bench_fill(size_t n, uint64_t stream)
{
    float *x = k22_xmalloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(0.5 * ((double)((i * 2654435761u + stream * 97u) % 2001) / 1000.0 - 1.0));
    return x;
}

#endif
