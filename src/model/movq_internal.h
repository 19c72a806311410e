/* movq_internal.h (src/model only): the layer walk shared by movq.c and movq_blocks.c. One walk
 * of the network serves both the size functions (be == NULL: allocations are only counted, no
 * op runs) and the forward passes, so the arena size cannot drift from the code that uses it. */
#ifndef K22_MOVQ_INTERNAL_H
#define K22_MOVQ_INTERNAL_H

#include "k22/movq.h"

typedef struct {
    const k22_backend *be; /* NULL: size only */
    k22_arena *ar;         /* run mode */
    size_t used, peak;     /* size mode: scratch floats counted as the arena would */
    size_t maxact;         /* size mode: largest feature map seen (floats) */
    int B;
    const float *z;        /* decoder: the latents every SpatialNorm reads, (B, zc, zh, zw) */
    int zc, zh, zw;
} k22_mv_run;

/* Scratch from the arena (run) or counted (size mode, returns NULL). */
float *k22_mv_alloc(k22_mv_run *r, size_t n);
size_t k22_mv_mark(const k22_mv_run *r);
void k22_mv_reset(k22_mv_run *r, size_t mark);
/* Records a feature map of n floats (the ping-pong buffers hold the largest). */
void k22_mv_out(k22_mv_run *r, size_t n);

/* Every layer below: x (B, C, H, W) -> y, distinct buffers; scratch released on return. */
void k22_mv_conv(k22_mv_run *r, const k22_conv *c, float *y, const float *x, int H, int W);
/* y = norm(x), C channels. */
void k22_mv_norm(k22_mv_run *r, const k22_movq_norm *n, float *y, const float *x, int H, int W);
/* y: (B, out, H, W). */
void k22_mv_resnet(k22_mv_run *r, const k22_movq_resnet *rs, float *y, const float *x, int H,
                   int W);
/* y: (B, C, H, W). */
void k22_mv_attn(k22_mv_run *r, const k22_movq_attn *a, float *y, const float *x, int H, int W);
/* The block's resampler, C channels: y (B, C, H/2, W/2) or (B, C, 2H, 2W); *H, *W updated. */
void k22_mv_resample(k22_mv_run *r, const k22_movq_block *b, float *y, const float *x, int *H,
                     int *W);

#endif
