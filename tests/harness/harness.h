/* harness.h: what every C test uses. A test binary exits non-zero when any check failed;
 * comparisons print the case, the worst element and the tolerance they were held to. */
#ifndef K22_TEST_HARNESS_H
#define K22_TEST_HARNESS_H

#include <stdint.h>
#include <stdio.h>

extern int k22_test_failures;
extern int k22_test_checks;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        k22_test_checks++;                                                                         \
        if (!(cond)) {                                                                             \
            k22_test_failures++;                                                                   \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);                        \
        }                                                                                          \
    } while (0)
#define CHECK_MSG(cond, ...)                                                                       \
    do {                                                                                           \
        k22_test_checks++;                                                                         \
        if (!(cond)) {                                                                             \
            k22_test_failures++;                                                                   \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                        \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

/* Element-wise closeness: |a-b| <= atol + rtol*|b| for every element (b is the reference).
 * Prints the case name, max abs error, the worst index and NMSE; counts one check. Returns 1
 * when close. */
int k22_check_close(const char *what, const float *got, const float *ref, int64_t n, double atol,
                    double rtol);
/* Normalized mean squared error sum((a-b)^2) / sum(b^2) (0 when both are all zero). */
double k22_nmse(const float *got, const float *ref, int64_t n);
/* Deterministic uniform floats in [lo, hi) from a seed (splitmix64). */
void k22_test_fill(float *x, int64_t n, uint64_t seed, float lo, float hi);
/* Prints "name: N checks, M failed" and returns the process exit code. */
int k22_test_finish(const char *name);

#endif
