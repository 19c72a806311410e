/* harness.c: comparisons and reporting for the C tests. */
#include "harness/harness.h"

#include <math.h>
#include <stdlib.h>

static int getenv_verbose(void) { return getenv("K22_TEST_VERBOSE") != NULL; }

int k22_test_failures = 0;
int k22_test_checks = 0;

double k22_nmse(const float *got, const float *ref, int64_t n)
{
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)got[i] - ref[i];
        num += d * d;
        den += (double)ref[i] * ref[i];
    }
    if (den == 0) return num == 0 ? 0 : INFINITY;
    return num / den;
}

int k22_check_close(const char *what, const float *got, const float *ref, int64_t n, double atol,
                    double rtol)
{
    double worst = 0, max_abs = 0;
    int64_t wi = -1, bad = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]);
        double tol = atol + rtol * fabs((double)ref[i]);
        if (!(d <= tol)) { /* NaN counts as bad */
            bad++;
            if (wi < 0 || d / tol > worst || isnan(d)) {
                worst = isnan(d) ? INFINITY : d / tol;
                wi = i;
            }
        }
        if (d > max_abs || isnan(d)) max_abs = d;
    }
    k22_test_checks++;
    if (bad) {
        k22_test_failures++;
        fprintf(stderr,
                "FAIL %s: %lld of %lld elements outside atol %g rtol %g; max abs err %g; worst "
                "[%lld] got %.9g ref %.9g; nmse %.3g\n",
                what, (long long)bad, (long long)n, atol, rtol, max_abs, (long long)wi,
                (double)got[wi], (double)ref[wi], k22_nmse(got, ref, n));
        return 0;
    }
    if (getenv_verbose())
        fprintf(stderr, "ok %s: max abs err %g (atol %g rtol %g)\n", what, max_abs, atol, rtol);
    return 1;
}

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void k22_test_fill(float *x, int64_t n, uint64_t seed, float lo, float hi)
{
    uint64_t s = seed;
    for (int64_t i = 0; i < n; i++) {
        double u = (double)(splitmix(&s) >> 11) / 9007199254740992.0;
        x[i] = (float)(lo + (hi - lo) * u);
    }
}

int k22_test_finish(const char *name)
{
    printf("%s: %d checks, %d failed\n", name, k22_test_checks, k22_test_failures);
    return k22_test_failures ? 1 : 0;
}
