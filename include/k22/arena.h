/* arena.h: the activation arena. One device allocation made up front (sized by the model's
 * *_arena_floats functions), then bump allocation with mark/reset, so nothing allocates inside
 * a training step. Running out is a program bug (a size function that disagrees with the code
 * that allocates), so it is fatal with the sizes in the message. */
#ifndef K22_ARENA_H
#define K22_ARENA_H

#include "k22/ops.h"

/* Every allocation starts on a 64-byte boundary: 16 floats. */
#define K22_ARENA_ALIGN 16

typedef struct {
    const k22_backend *be;
    float *base;   /* device memory of cap floats, owned */
    size_t cap;    /* floats */
    size_t used;   /* floats handed out */
    size_t peak;   /* largest `used` seen, for sizing checks */
} k22_arena;

/* n floats rounded up to the allocation granule: size functions sum these. */
size_t k22_arena_round(size_t n);
/* Allocates cap floats on be (dies on failure, as be->alloc does). */
void k22_arena_init(k22_arena *a, const k22_backend *be, size_t cap_floats);
void k22_arena_free(k22_arena *a);
/* n floats of uninitialized (stale) memory; dies when the arena is full. */
float *k22_arena_floats(k22_arena *a, size_t n);
/* n 16-bit values (bf16/fp16 activations, ops.h k22_backend_act16) in ceil(n / 2) floats, and
 * what a size function counts for them. */
uint16_t *k22_arena_halves(k22_arena *a, size_t n);
size_t k22_arena_round_halves(size_t n);
/* n floats set to zero on the backend's stream (gradients, which backward ops accumulate). */
float *k22_arena_zeros(k22_arena *a, size_t n);
/* A mark to return to: everything allocated after it is released by reset. */
size_t k22_arena_mark(const k22_arena *a);
void k22_arena_reset(k22_arena *a, size_t mark);

#endif
