/* test_rng.c: Philox4x32-10 against the Random123 known-answer vectors, the draw helpers
 * against the raw generator, and the moments of the normal draws. */
#include "harness/harness.h"
#include "k22/rng.h"

#include <math.h>
#include <stdlib.h>

static void test_kat(void)
{
    /* Random123 kat_vectors, "philox4x32 10": counter[4] key[2] -> output[4]. */
    static const uint32_t kat[3][10] = {
        {0, 0, 0, 0, 0, 0, 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
        {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0x408f276d,
         0x41c83b0e, 0xa20bc7c6, 0x6d5451fd},
        {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0, 0xd16cfe09,
         0x94fdcceb, 0x5001e420, 0x24126ea1},
    };
    for (int t = 0; t < 3; t++) {
        uint32_t out[4];
        k22_philox4x32_10(kat[t], kat[t] + 4, out);
        for (int j = 0; j < 4; j++)
            CHECK_MSG(out[j] == kat[t][6 + j], "kat %d word %d: got %08x want %08x", t, j, out[j],
                      kat[t][6 + j]);
    }
    /* The (seed, stream, i) mapping: key = {seed lo, seed hi}, counter = {i/4 lo, i/4 hi,
     * stream lo, stream hi}, draw = word i%4. */
    uint64_t seed = 0x299f31d0a4093822ull, stream = 0x0370734413198a2eull;
    const uint32_t key[2] = {0xa4093822, 0x299f31d0};
    const uint32_t ctr[4] = {0x3f6a8805, 0x0000d308, 0x13198a2e, 0x03707344};
    uint64_t block = 0x0000d3083f6a8805ull;
    uint32_t want[4];
    k22_philox4x32_10(ctr, key, want);
    for (int j = 0; j < 4; j++)
        CHECK(k22_rng_u32(seed, stream, block * 4 + (uint64_t)j) == want[j]);
    CHECK(k22_rng_u32(0, 0, 1) == 0xe169c58du);
}

static void test_fill_matches_pointwise(void)
{
    enum { N = 37 };
    float a[N], b[N];
    /* Odd start and length exercise partial blocks at both ends. */
    k22_rng_fill_uniform(7, 3, 5, a, N, -2.0f, 3.0f);
    int bad = 0;
    for (int k = 0; k < N; k++) {
        float u = k22_rng_uniform(7, 3, 5 + (uint64_t)k);
        if (a[k] != -2.0f + 5.0f * u || u < 0.0f || u >= 1.0f) bad++;
    }
    CHECK_MSG(bad == 0, "%d uniform fills differ from pointwise draws", bad);
    k22_rng_fill_normal(7, 4, 3, b, N, 1.0f, 2.0f);
    bad = 0;
    for (int k = 0; k < N; k++)
        if (b[k] != 1.0f + 2.0f * k22_rng_normal(7, 4, 3 + (uint64_t)k)) bad++;
    CHECK_MSG(bad == 0, "%d normal fills differ from pointwise draws", bad);
    /* Different seeds and streams give different values. */
    CHECK(k22_rng_u32(1, 0, 0) != k22_rng_u32(2, 0, 0));
    CHECK(k22_rng_u32(1, 0, 0) != k22_rng_u32(1, 1, 0));
}

static void test_normal_moments(void)
{
    /* n = 2^20 normals: the standard errors of mean, variance, skew and excess kurtosis are
     * about 1e-3, 1.4e-3, 2.4e-3 and 4.8e-3; the bounds are ~5 standard errors. */
    const size_t n = (size_t)1 << 20;
    float *x = malloc(n * sizeof *x);
    k22_rng_fill_normal(42, 9, 0, x, n, 0.0f, 1.0f);
    double s1 = 0, s2 = 0, s3 = 0, s4 = 0;
    for (size_t i = 0; i < n; i++) {
        double v = x[i];
        s1 += v;
        s2 += v * v;
        s3 += v * v * v;
        s4 += v * v * v * v;
    }
    double mean = s1 / n, var = s2 / n - mean * mean;
    double skew = s3 / n, kurt = s4 / n - 3.0;
    CHECK_MSG(fabs(mean) < 5e-3, "mean %g", mean);
    CHECK_MSG(fabs(var - 1.0) < 7e-3, "variance %g", var);
    CHECK_MSG(fabs(skew) < 1.2e-2, "skew %g", skew);
    CHECK_MSG(fabs(kurt) < 2.5e-2, "excess kurtosis %g", kurt);
    /* Uniform draws: mean 1/2 (se 2.8e-4), variance 1/12. */
    k22_rng_fill_uniform(42, 10, 0, x, n, 0.0f, 1.0f);
    s1 = s2 = 0;
    for (size_t i = 0; i < n; i++) {
        s1 += x[i];
        s2 += (double)x[i] * x[i];
    }
    mean = s1 / n;
    var = s2 / n - mean * mean;
    CHECK_MSG(fabs(mean - 0.5) < 1.5e-3, "uniform mean %g", mean);
    CHECK_MSG(fabs(var - 1.0 / 12) < 1e-3, "uniform variance %g", var);
    free(x);
}

/* Fills longer than rng.c's 1 Mi chunk run in parallel chunks: still the pointwise draws,
 * across chunk edges and with a start that is not a multiple of 4. */
static void test_long_fill_matches_pointwise(void)
{
    const size_t n = ((size_t)3 << 20) + 7;
    const uint64_t start = 6;
    float *u = malloc(n * sizeof *u), *z = malloc(n * sizeof *z);
    CHECK(u && z);
    if (!u || !z) goto out;
    k22_rng_fill_uniform(11, 5, start, u, n, -1.0f, 1.0f);
    k22_rng_fill_normal(11, 6, start, z, n, 0.0f, 1.0f);
    size_t bad = 0;
    for (size_t k = 0; k < n; k++) {
        bad += u[k] != -1.0f + 2.0f * k22_rng_uniform(11, 5, start + k);
        bad += z[k] != k22_rng_normal(11, 6, start + k);
    }
    CHECK_MSG(bad == 0, "%zu values of %zu-long fills differ from pointwise draws", bad, n);
out:
    free(u);
    free(z);
}

int main(void)
{
    test_kat();
    test_fill_matches_pointwise();
    test_long_fill_matches_pointwise();
    test_normal_moments();
    return k22_test_finish("rng");
}
