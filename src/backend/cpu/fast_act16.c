/* fast_act16.c: the 16-bit activation entries of ops.h on the cpu backend (group_norm_act_fwd_y16,
 * conv2d_fwd_x16, conv2d_bwd_x16), over the float ops through one float copy: they check the
 * model's 16-bit path on the host (the same bits as the float path by construction), not speed. */
#include "cpu_ops.h"

static k22_dtype act16_type(const k22_cpu_ctx *c, const char *op)
{
    if (c->precision == K22_PREC_BF16) return K22_DTYPE_BF16;
    if (c->precision == K22_PREC_FP16) return K22_DTYPE_F16;
    K22_FATAL("cpu %s: 16-bit activations need --mixed_precision bf16 or fp16", op);
}

void k22_fast_group_norm_act_fwd_y16(void *ctx, int act, uint16_t *y16, float *mean, float *rstd,
                                     const float *x, const float *gamma, const float *beta,
                                     const float *scale, const float *shift, int64_t ss_ld,
                                     float scale_offset, int B, int C, int S, int G, float eps)
{
    k22_dtype t = act16_type(ctx, "group_norm_act_fwd_y16");
    size_t n = (size_t)B * C * S;
    float *y = k22_cpu_wide(ctx, n);
    k22_fast_group_norm_act_fwd(ctx, act, y, mean, rstd, x, gamma, beta, scale, shift, ss_ld,
                                scale_offset, B, C, S, G, eps);
    k22_convert_from_f32(y16, t, y, n);
}

/* x16 of d's input widened into the float copy. */
static const float *widen_input(void *ctx, const uint16_t *x16, const k22_conv2d_desc *d,
                                const char *op)
{
    k22_dtype t = act16_type(ctx, op);
    size_t n = (size_t)d->B * d->C * d->H * d->W;
    float *x = k22_cpu_wide(ctx, n);
    k22_convert_to_f32(x, x16, t, n);
    return x;
}

void k22_fast_conv2d_fwd_x16(void *ctx, float *y, const uint16_t *x16, const float *w,
                             const float *bias, const k22_conv2d_desc *d)
{
    k22_fast_conv2d_fwd(ctx, y, widen_input(ctx, x16, d, "conv2d_fwd_x16"), w, bias, d);
}

void k22_fast_conv2d_bwd_x16(void *ctx, float *dx, float *dw, float *dbias, const float *dy,
                             const uint16_t *x16, const float *w, const k22_conv2d_desc *d)
{
    k22_fast_conv2d_bwd(ctx, dx, dw, dbias, dy, widen_input(ctx, x16, d, "conv2d_bwd_x16"), w, d);
}
