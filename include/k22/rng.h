/* rng.h: k22's counter-based random numbers (Philox4x32-10).
 *
 * Every value is a pure function of (seed, stream, counter): the i-th draw of a stream never
 * depends on thread count, rank, or what was drawn before, so a sample's noise or a weight's
 * initial value is fixed by its global index alone (DESIGN.md section 6). Convention: the
 * 64-bit seed is the Philox key; the counter block is {i/4 low, i/4 high, stream low, stream
 * high} and draw i is word i%4 of that block. Use one stream per purpose (uniform and normal
 * draws of the same stream share words). */
#ifndef K22_RNG_H
#define K22_RNG_H

#include <stddef.h>
#include <stdint.h>

/* The raw bijection: out = Philox4x32-10(ctr, key). */
void k22_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

/* Draw i of (seed, stream) as 32 random bits. */
uint32_t k22_rng_u32(uint64_t seed, uint64_t stream, uint64_t i);
/* Draw i as a float in [0, 1): the top 24 bits times 2^-24 (exact in f32). */
float k22_rng_uniform(uint64_t seed, uint64_t stream, uint64_t i);
/* Normal draw i (mean 0, std 1): Box-Muller over words 2*(i/2) and 2*(i/2)+1, computed in
 * double; even i takes the cosine branch, odd i the sine branch. */
float k22_rng_normal(uint64_t seed, uint64_t stream, uint64_t i);

/* x[k] = lo + (hi - lo) * uniform(start + k), k < n. Both fills split long runs over the OpenMP
 * threads; the values are the same for any thread count. */
void k22_rng_fill_uniform(uint64_t seed, uint64_t stream, uint64_t start, float *x, size_t n,
                          float lo, float hi);
/* x[k] = mean + std * normal(start + k), k < n. */
void k22_rng_fill_normal(uint64_t seed, uint64_t stream, uint64_t start, float *x, size_t n,
                         float mean, float std);

#endif
