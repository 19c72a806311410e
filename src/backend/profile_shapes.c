/* profile_shapes.c: the profiler's table of GEMM-class calls by shape (profile_shapes.h). */
#include "profile_shapes.h"

#include <stdlib.h>
#include <string.h>

#include "k22/k22.h"

static uint32_t key_hash(const int *key)
{
    uint32_t h = 2166136261u; /* FNV-1a over the key's ints */
    for (int i = 0; i < K22_PROF_KEY; i++) {
        h ^= (uint32_t)key[i];
        h *= 16777619u;
    }
    return h;
}

/* The hash slot of key: its entry's, or the empty one where it would go. */
static int find_slot(const k22_prof_shapes *t, const int *key)
{
    uint32_t m = (uint32_t)t->icap - 1, h = key_hash(key) & m;
    while (t->idx[h] >= 0 && memcmp(t->v[t->idx[h]].key, key, sizeof t->v->key)) h = (h + 1) & m;
    return (int)h;
}

/* A hash index of twice the size (or 64 slots), every entry placed again. */
static void grow_index(k22_prof_shapes *t)
{
    int icap = t->icap ? 2 * t->icap : 64;
    int *idx = malloc((size_t)icap * sizeof *idx);
    if (!idx) K22_FATAL("profiler: a shape index of %d slots: out of memory", icap);
    free(t->idx);
    t->idx = idx;
    t->icap = icap;
    for (int i = 0; i < icap; i++) idx[i] = -1;
    for (int e = 0; e < t->n; e++) idx[find_slot(t, t->v[e].key)] = e;
}

int k22_prof_shapes_slot(k22_prof_shapes *t, const int *key)
{
    if (2 * (t->n + 1) > t->icap) grow_index(t);
    int h = find_slot(t, key);
    if (t->idx[h] >= 0) return t->idx[h];
    if (t->n == t->cap) t->v = k22_xgrow(t->v, &t->cap, 32, sizeof *t->v, "the profiler's shapes");
    k22_prof_shape *e = &t->v[t->n];
    memset(e, 0, sizeof *e);
    memcpy(e->key, key, sizeof e->key);
    t->idx[h] = t->n;
    return t->n++;
}

void k22_prof_shapes_clear(k22_prof_shapes *t)
{
    t->n = 0;
    for (int i = 0; i < t->icap; i++) t->idx[i] = -1;
}

void k22_prof_shapes_free(k22_prof_shapes *t)
{
    free(t->v);
    free(t->idx);
    memset(t, 0, sizeof *t);
}
