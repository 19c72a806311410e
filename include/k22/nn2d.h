/* nn2d.h: the image-shaped layers of the UNet and MoVQ (conv2d, group norm), bound by diffusers
 * key like the layers of nn.h, forward and backward over the op interface. */
#ifndef K22_NN2D_H
#define K22_NN2D_H

#include "k22/nn.h"

/* torch nn.Conv2d: w (O, C, KH, KW), b (O) or NULL; stride and padding fixed at bind time
 * (padding top/bottom/left/right; diffusers' asymmetric (0,1,0,1) pad before a stride-2 conv
 * with padding 0 is pt=0, pb=1, pl=0, pr=1). */
typedef struct {
    const float *w, *b;
    float *dw, *db;
    int O, C, KH, KW, SH, SW, PT, PB, PL, PR;
} k22_conv;
/* Binds "<name>.weight" and "<name>.bias" (when present) with a symmetric padding pad and
 * stride; see k22_conv_set_padding for the asymmetric case. */
void k22_conv_bind(k22_conv *c, const k22_params *ps, const char *name, const float *P, float *G,
                   int stride, int pad);
void k22_conv_set_padding(k22_conv *c, int pt, int pb, int pl, int pr);
/* The op geometry for an input (B, C, H, W). */
k22_conv2d_desc k22_conv_desc(const k22_conv *c, int B, int H, int W);
/* x: (B, C, H, W) -> y: (B, O, OH, OW). */
void k22_conv_forward(const k22_backend *be, const k22_conv *c, float *y, const float *x, int B,
                      int H, int W);
/* dx (may be NULL) += ..., dw, db += ... */
void k22_conv_backward(const k22_backend *be, const k22_conv *c, float *dx, const float *dy,
                       const float *x, int B, int H, int W);
/* The same with the input x, or x16 when it is not NULL: 16-bit values (ops.h conv2d_fwd_x16 /
 * conv2d_bwd_x16, under bf16/fp16). */
void k22_conv_forward_in(const k22_backend *be, const k22_conv *c, float *y, const float *x,
                         const uint16_t *x16, int B, int H, int W);
void k22_conv_backward_in(const k22_backend *be, const k22_conv *c, float *dx, const float *dy,
                          const float *x, const uint16_t *x16, int B, int H, int W);

/* torch nn.GroupNorm(G, C, eps, affine): gamma "<name>.weight", beta "<name>.bias" (absent =
 * no affine). */
typedef struct {
    const float *g, *b;
    float *dg, *db;
    int C, G;
    float eps;
} k22_groupnorm;
void k22_groupnorm_bind(k22_groupnorm *gn, const k22_params *ps, const char *name, const float *P,
                        float *G, int groups, float eps);
/* x, y: (B, C, S); mean, rstd: (B, G) saved for backward. */
void k22_groupnorm_forward(const k22_backend *be, const k22_groupnorm *gn, float *y, float *mean,
                           float *rstd, const float *x, int B, int64_t S);
void k22_groupnorm_backward(const k22_backend *be, const k22_groupnorm *gn, float *dx,
                            const float *dy, const float *x, const float *mean, const float *rstd,
                            int B, int64_t S);
/* y = silu(groupnorm(x) * (1 + scale) + shift) as one group_norm_act op (ops.h), the norm's
 * output never stored; ts: (B, 2C) rows of [scale | shift] (diffusers' scale_shift time
 * conditioning), or NULL for silu(groupnorm(x)). */
void k22_groupnorm_silu_forward(const k22_backend *be, const k22_groupnorm *gn, float *y, float *mean,
                                float *rstd, const float *x, const float *ts, int B, int64_t S);
/* The same into y, or into y16 when it is not NULL: 16-bit values (ops.h
 * group_norm_act_fwd_y16, under bf16/fp16). */
void k22_groupnorm_silu_forward_in(const k22_backend *be, const k22_groupnorm *gn, float *y,
                                   uint16_t *y16, float *mean, float *rstd, const float *x,
                                   const float *ts, int B, int64_t S);
/* Its backward: dx, the norm's parameter gradients and dts (when ts) +=; recomputes the norm
 * from x, mean and rstd. */
void k22_groupnorm_silu_backward(const k22_backend *be, const k22_groupnorm *gn, float *dx, float *dts,
                                 const float *dy, const float *x, const float *mean, const float *rstd,
                                 const float *ts, int B, int64_t S);

#endif
