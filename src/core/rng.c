/* rng.c: Philox4x32-10 (Salmon et al., SC'11) and the uniform/normal draws built on it. */
#include "k22/rng.h"

#include <math.h>

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u /* golden ratio */
#define PHILOX_W1 0xBB67AE85u /* sqrt(3) - 1 */

static void philox_round(uint32_t c[4], const uint32_t k[2])
{
    uint64_t p0 = (uint64_t)PHILOX_M0 * c[0];
    uint64_t p1 = (uint64_t)PHILOX_M1 * c[2];
    uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
    uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
    uint32_t n0 = hi1 ^ c[1] ^ k[0];
    uint32_t n2 = hi0 ^ c[3] ^ k[1];
    c[0] = n0;
    c[1] = lo1;
    c[2] = n2;
    c[3] = lo0;
}

void k22_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4])
{
    uint32_t c[4] = {ctr[0], ctr[1], ctr[2], ctr[3]};
    uint32_t k[2] = {key[0], key[1]};
    for (int r = 0; r < 10; r++) {
        if (r > 0) {
            k[0] += PHILOX_W0;
            k[1] += PHILOX_W1;
        }
        philox_round(c, k);
    }
    for (int j = 0; j < 4; j++) out[j] = c[j];
}

static void rng_block(uint64_t seed, uint64_t stream, uint64_t block, uint32_t out[4])
{
    const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    const uint32_t ctr[4] = {(uint32_t)block, (uint32_t)(block >> 32), (uint32_t)stream,
                             (uint32_t)(stream >> 32)};
    k22_philox4x32_10(ctr, key, out);
}

uint32_t k22_rng_u32(uint64_t seed, uint64_t stream, uint64_t i)
{
    uint32_t w[4];
    rng_block(seed, stream, i / 4, w);
    return w[i % 4];
}

static float u32_to_unit(uint32_t w) { return (float)(w >> 8) * (1.0f / 16777216.0f); }

float k22_rng_uniform(uint64_t seed, uint64_t stream, uint64_t i)
{
    return u32_to_unit(k22_rng_u32(seed, stream, i));
}

/* Both normals of pair j from words 2j, 2j+1 (which share one Philox block). */
static void normal_pair(uint32_t a, uint32_t b, float *z0, float *z1)
{
    /* u1 in (0, 1) so log never sees 0; u2 in [0, 1). */
    double u1 = ((double)a + 0.5) * (1.0 / 4294967296.0);
    double u2 = (double)b * (1.0 / 4294967296.0);
    double r = sqrt(-2.0 * log(u1));
    double th = 6.283185307179586476925286766559 * u2;
    *z0 = (float)(r * cos(th));
    *z1 = (float)(r * sin(th));
}

float k22_rng_normal(uint64_t seed, uint64_t stream, uint64_t i)
{
    uint64_t j = i / 2;
    uint32_t w[4];
    rng_block(seed, stream, j / 2, w);
    int base = (int)(j % 2) * 2;
    float z0, z1;
    normal_pair(w[base], w[base + 1], &z0, &z1);
    return (i % 2) ? z1 : z0;
}

static void fill_uniform_run(uint64_t seed, uint64_t stream, uint64_t start, float *x, size_t n,
                             float lo, float hi)
{
    size_t k = 0;
    uint32_t w[4];
    while (k < n) {
        uint64_t i = start + k;
        rng_block(seed, stream, i / 4, w);
        for (unsigned q = (unsigned)(i % 4); q < 4 && k < n; q++, k++)
            x[k] = lo + (hi - lo) * u32_to_unit(w[q]);
    }
}

static void fill_normal_run(uint64_t seed, uint64_t stream, uint64_t start, float *x, size_t n,
                            float mean, float std)
{
    size_t k = 0;
    uint32_t w[4];
    while (k < n) {
        uint64_t i = start + k;
        uint64_t j = i / 2;
        rng_block(seed, stream, j / 2, w);
        float z[4];
        normal_pair(w[0], w[1], &z[0], &z[1]);
        normal_pair(w[2], w[3], &z[2], &z[3]);
        for (unsigned q = (unsigned)(i % 4); q < 4 && k < n; q++, k++)
            x[k] = mean + std * z[q];
    }
}

/* Long fills run in chunks over the OpenMP threads: every value is a pure function of its index,
 * so the result does not depend on the thread count. Initializing a full-size model (1-2 B
 * values) took 8-30 s on one core, once per benchmark run. */
#define RNG_CHUNK ((size_t)1 << 20)

static void fill_chunked(int normal, uint64_t seed, uint64_t stream, uint64_t start, float *x,
                         size_t n, float a, float b)
{
    long long nc = (long long)((n + RNG_CHUNK - 1) / RNG_CHUNK);
#pragma omp parallel for schedule(static) if (nc > 1)
    for (long long c = 0; c < nc; c++) {
        size_t s = (size_t)c * RNG_CHUNK, m = n - s < RNG_CHUNK ? n - s : RNG_CHUNK;
        if (normal)
            fill_normal_run(seed, stream, start + s, x + s, m, a, b);
        else
            fill_uniform_run(seed, stream, start + s, x + s, m, a, b);
    }
}

void k22_rng_fill_uniform(uint64_t seed, uint64_t stream, uint64_t start, float *x, size_t n,
                          float lo, float hi)
{
    fill_chunked(0, seed, stream, start, x, n, lo, hi);
}

void k22_rng_fill_normal(uint64_t seed, uint64_t stream, uint64_t start, float *x, size_t n,
                         float mean, float std)
{
    fill_chunked(1, seed, stream, start, x, n, mean, std);
}
