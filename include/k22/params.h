/* params.h: a model's parameters as one flat f32 buffer plus a table {diffusers key, shape,
 * offset}. Gradients, AdamW moments and EMA mirror the same table, so all-reduce, clipping,
 * the optimizer step and checkpoint writes are each one pass over one buffer. */
#ifndef K22_PARAMS_H
#define K22_PARAMS_H

#include "k22/tensor.h"

/* Each parameter starts on a 16-float (64-byte) boundary so vector loads never straddle two;
 * inside a stacked group (q, k, v weights back to back) on an 8-float one (32 bytes: still
 * 16-byte aligned as floats and as 16-bit values, what cuBLASLt and the kernels ask for). */
#define K22_PARAM_ALIGN 16

typedef struct {
    char *name;          /* the diffusers / transformers state-dict key, owned */
    int ndim;
    int64_t shape[K22_MAX_DIMS];
    size_t offset;       /* in floats, from the start of the buffer */
    size_t numel;
    int trainable;       /* 0 for parameters that never get a gradient (prior clip_mean/std) */
} k22_param;

typedef struct {
    k22_param *items;    /* in the order the model builds them (the upstream state dict's); the
                          * offsets follow it, except inside a stacked group (params_util.h
                          * k22_pb_linear_stack: the weights, then the biases) */
    int count, cap;
    size_t total;        /* floats in the buffer */
    float *data;         /* host buffer of `total` floats once allocated, else NULL */
} k22_params;

void k22_params_init(k22_params *ps);
void k22_params_free(k22_params *ps); /* frees names, table and data */
/* Appends a parameter (at the end of the buffer; each starts 16-float aligned).
 * Returns its index. Dies on a duplicate name (a table bug, not outside input). */
int k22_params_add(k22_params *ps, const char *name, int trainable, int ndim,
                   const int64_t *shape);
/* Convenience: shape given as up to 4 trailing ints (ndim of them are read). */
int k22_params_addv(k22_params *ps, const char *name, int trainable, int ndim, ...);
const k22_param *k22_params_find(const k22_params *ps, const char *name);
int k22_params_index(const k22_params *ps, const char *name); /* -1 when absent */
/* Allocates (zeroed) host data for the table. */
void k22_params_alloc(k22_params *ps);
/* Number of elements over every parameter (not counting alignment padding). */
size_t k22_params_numel(const k22_params *ps);
/* The buffer as checkpoint format 1 laid it out (every entry K22_PARAM_ALIGN-aligned in table
 * order, no stacked groups): its size, and old (that many floats, any alignment) -> buf
 * (ps->total) in this table's layout, padding zeroed. */
size_t k22_params_table_order_total(const k22_params *ps);
void k22_params_from_table_order(const k22_params *ps, const void *old, float *buf);

#endif
