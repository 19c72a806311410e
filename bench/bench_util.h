/* bench_util.h (bench/ only): what the benchmarks share: the process CPU clock and the wall
 * clock in seconds, fixed pseudo-random inputs (the same values on every run and machine,
 * so the C side and the PyTorch side time the same shapes on comparable data), and medians. */
#ifndef K22_BENCH_UTIL_H
#define K22_BENCH_UTIL_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
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

/* qsort's order of doubles, ascending. */
static inline int bench_cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

/* The median of n values (sorts a copy; the same pick as the torch side: element n / 2), and
 * their least (lo) and greatest (hi) where those are not NULL. */
static inline double bench_median(const double *v, int n, double *lo, double *hi)
{
    double *c = k22_xmalloc((size_t)n * sizeof *c);
    memcpy(c, v, (size_t)n * sizeof *c);
    qsort(c, (size_t)n, sizeof *c, bench_cmp_double);
    double m = c[n / 2];
    if (lo) *lo = c[0];
    if (hi) *hi = c[n - 1];
    free(c);
    return m;
}

#endif
