/* arena.c: bump allocation over one device buffer (see arena.h). */
#include "k22/arena.h"

size_t k22_arena_round(size_t n)
{
    return (n + K22_ARENA_ALIGN - 1) / K22_ARENA_ALIGN * K22_ARENA_ALIGN;
}

size_t k22_arena_round_halves(size_t n)
{
    return k22_arena_round((n + 1) / 2);
}

uint16_t *k22_arena_halves(k22_arena *a, size_t n)
{
    return (uint16_t *)(void *)k22_arena_floats(a, (n + 1) / 2);
}

void k22_arena_init(k22_arena *a, const k22_backend *be, size_t cap_floats)
{
    size_t bytes;
    cap_floats = k22_arena_round(cap_floats);
    if (k22_mul_size(cap_floats, sizeof(float), &bytes)) K22_FATAL("arena of %zu floats overflows", cap_floats);
    a->be = be;
    a->cap = cap_floats;
    a->used = 0;
    a->peak = 0;
    a->base = cap_floats ? be->alloc(be->ctx, bytes) : NULL;
}

void k22_arena_free(k22_arena *a)
{
    if (a->base) a->be->free(a->be->ctx, a->base);
    a->base = NULL;
    a->cap = a->used = 0;
}

float *k22_arena_floats(k22_arena *a, size_t n)
{
    size_t r = k22_arena_round(n);
    if (r > a->cap - a->used)
        K22_FATAL("activation arena full: %zu floats asked, %zu of %zu in use (a size function "
                  "is short)", n, a->used, a->cap);
    float *p = a->base + a->used;
    a->used += r;
    if (a->used > a->peak) a->peak = a->used;
    return p;
}

float *k22_arena_zeros(k22_arena *a, size_t n)
{
    float *p = k22_arena_floats(a, n);
    if (n) a->be->zero(a->be->ctx, p, n * sizeof(float));
    return p;
}

size_t k22_arena_mark(const k22_arena *a)
{
    return a->used;
}

void k22_arena_reset(k22_arena *a, size_t mark)
{
    K22_REQUIRE(mark <= a->used);
    a->used = mark;
}
