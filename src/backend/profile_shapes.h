/* profile_shapes.h: the profiler's table of GEMM-class calls by shape (profile.c): one entry per
 * distinct key (the op and the call's sizes), found by hashing. Entries are appended and never
 * move, so an index stays valid while device times for it are pending; the hash index beside
 * them is rebuilt as it grows. Internal to src/backend. */
#ifndef K22_PROFILE_SHAPES_H
#define K22_PROFILE_SHAPES_H

#include <stdint.h>

/* key[0] the op's index, key[1..] its sizes and flags (0 where unused). */
#define K22_PROF_KEY 12

typedef struct {
    int key[K22_PROF_KEY];
    int64_t calls;
    double ms, flops;
} k22_prof_shape;

typedef struct {
    k22_prof_shape *v; /* entries, in first-call order */
    int n, cap;
    int *idx; /* hash slots: an index into v, or -1 */
    int icap; /* a power of two, at least 2 n */
} k22_prof_shapes;

/* The index of key's entry, added (zero counts) at its first call. Dies only on out of memory. */
int k22_prof_shapes_slot(k22_prof_shapes *t, const int *key);
/* Forgets every entry (the table keeps its memory). */
void k22_prof_shapes_clear(k22_prof_shapes *t);
void k22_prof_shapes_free(k22_prof_shapes *t);

#endif
