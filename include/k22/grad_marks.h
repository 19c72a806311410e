/* grad_marks.h: how far a model's backward has got through the flat gradient buffer, so that the
 * gradient exchange can start on the finished part while the rest of the backward runs (DDP's
 * bucketed all-reduce; dist.h, k22_grad_overlap).
 *
 * The model gives each parameter a key, its layer's position in the forward (a UNet step, a
 * prior block), and its backward finishes the keys in decreasing order. After every parameter of
 * key >= k is final, G[mark[k], total) holds only final gradients: mark[k] is the largest end of
 * a trainable parameter of key < k (parameters a model names no key for finish last). This holds
 * whatever the table's order is; how much it lets start early depends on it (the diffusers order
 * puts the late layers at the end of the buffer, so the marks fall as the backward goes). */
#ifndef K22_GRAD_MARKS_H
#define K22_GRAD_MARKS_H

#include "k22/params.h"

#include <stdint.h>

/* Receives "G[lo, total) is final" (lo falls over a backward; the trainer sets it on a model). */
typedef struct {
    void (*ready)(void *ctx, int64_t lo);
    void *ctx;
} k22_grad_hook;

typedef struct {
    int nkeys;       /* keys 0 .. nkeys-1 */
    int64_t *mark;   /* nkeys */
    int *key;        /* while building: per table entry, -1 (finishes last) until named */
} k22_grad_marks;

/* Starts the marks of table ps (every parameter finishing last). */
void k22_grad_marks_init(k22_grad_marks *gm, const k22_params *ps);
/* Gives key (>= 0) to every parameter named `prefix` or `prefix.*`; dies when none is. */
void k22_grad_marks_key(k22_grad_marks *gm, const k22_params *ps, const char *prefix, int key);
/* Computes the marks from the keys given. */
void k22_grad_marks_finish(k22_grad_marks *gm, const k22_params *ps);
void k22_grad_marks_free(k22_grad_marks *gm);
/* Called by a backward once every parameter of key >= key is final: tells hook (when not NULL). */
void k22_grad_marks_reached(const k22_grad_marks *gm, const k22_grad_hook *hook, int key);

#endif
