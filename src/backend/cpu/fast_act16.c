/* fast_act16.c: the 16-bit activation entries of ops.h on the cpu backend (group_norm_act_fwd_y16,
 * layer_norm_fwd_y16, act_fwd_y16, conv2d_fwd_x16, conv2d_bwd_x16, linear_fwd_x16, linear_bwd_x16,
 * attention_fwd_x16, attention_bwd_x16), over the float
 * ops through one float copy: they check the models' 16-bit paths on the host (the same bits as
 * the float path by construction), not speed. */
#include "cpu_ops.h"

static k22_dtype act16_type(const k22_cpu_ctx *c, const char *op)
{
    if (c->precision == K22_PREC_BF16) return K22_DTYPE_BF16;
    if (c->precision == K22_PREC_FP16) return K22_DTYPE_F16;
    K22_FATAL("cpu %s: 16-bit activations need --mixed_precision bf16 or fp16", op);
}

/* y (the float copy, n values) rounded into y16. */
static void round_out(void *ctx, uint16_t *y16, const float *y, size_t n, const char *op)
{
    k22_convert_from_f32(y16, act16_type(ctx, op), y, n);
}

/* x16 (n values) widened into the float copy. */
static const float *widen(void *ctx, const uint16_t *x16, size_t n, const char *op)
{
    k22_dtype t = act16_type(ctx, op);
    float *x = k22_cpu_wide(ctx, n);
    k22_convert_to_f32(x, x16, t, n);
    return x;
}

void k22_fast_group_norm_act_fwd_y16(void *ctx, int act, uint16_t *y16, float *mean, float *rstd,
                                     const float *x, const float *gamma, const float *beta,
                                     const float *scale, const float *shift, int64_t ss_ld,
                                     float scale_offset, int B, int C, int S, int G, float eps)
{
    size_t n = (size_t)B * C * S;
    float *y = k22_cpu_wide(ctx, n);
    k22_fast_group_norm_act_fwd(ctx, act, y, mean, rstd, x, gamma, beta, scale, shift, ss_ld,
                                scale_offset, B, C, S, G, eps);
    round_out(ctx, y16, y, n, "group_norm_act_fwd_y16");
}

void k22_fast_layer_norm_fwd_y16(void *ctx, uint16_t *y16, float *mean, float *rstd, const float *x,
                                 const float *gamma, const float *beta, int N, int C, float eps)
{
    size_t n = (size_t)N * C;
    float *y = k22_cpu_wide(ctx, n);
    k22_fast_layer_norm_fwd(ctx, y, mean, rstd, x, gamma, beta, N, C, eps);
    round_out(ctx, y16, y, n, "layer_norm_fwd_y16");
}

void k22_fast_act_fwd_y16(void *ctx, int act, uint16_t *y16, const float *x, int64_t n)
{
    if (act == K22_ACT_NONE) { /* x rounded */
        round_out(ctx, y16, x, (size_t)n, "act_fwd_y16");
        return;
    }
    float *y = k22_cpu_wide(ctx, (size_t)n);
    k22_fast_act_fwd(ctx, act, y, x, n);
    round_out(ctx, y16, y, (size_t)n, "act_fwd_y16");
}

void k22_fast_conv2d_fwd_x16(void *ctx, float *y, const uint16_t *x16, const float *w,
                             const float *bias, const k22_conv2d_desc *d)
{
    size_t nx = (size_t)d->B * d->C * d->H * d->W;
    k22_fast_conv2d_fwd(ctx, y, widen(ctx, x16, nx, "conv2d_fwd_x16"), w, bias, d);
}

void k22_fast_conv2d_bwd_x16(void *ctx, float *dx, float *dw, float *dbias, const float *dy,
                             const uint16_t *x16, const float *w, const k22_conv2d_desc *d)
{
    size_t nx = (size_t)d->B * d->C * d->H * d->W;
    k22_fast_conv2d_bwd(ctx, dx, dw, dbias, dy, widen(ctx, x16, nx, "conv2d_bwd_x16"), w, d);
}

void k22_fast_linear_fwd_x16(void *ctx, float *y, const uint16_t *x16, const float *w, const float *b,
                             int N, int I, int O)
{
    k22_fast_linear_fwd(ctx, y, widen(ctx, x16, (size_t)N * I, "linear_fwd_x16"), w, b, N, I, O);
}

void k22_fast_linear_bwd_x16(void *ctx, float *dx, float *dw, float *db, const float *dy,
                             const uint16_t *x16, const float *w, int N, int I, int O)
{
    k22_fast_linear_bwd(ctx, dx, dw, db, dy, widen(ctx, x16, (size_t)N * I, "linear_bwd_x16"), w, N, I,
                        O);
}

/* q16, k16 and v16 widened into one float copy. */
static void widen_qkv(void *ctx, const uint16_t *q16, const uint16_t *k16, const uint16_t *v16,
                      const k22_attn_desc *d, const float **q, const float **k, const float **v,
                      const char *op)
{
    k22_dtype t = act16_type(ctx, op);
    size_t h = (size_t)d->B * d->NH, nq = h * d->TQ * d->D, nk = h * d->TK * d->D, nv = h * d->TK * d->DV;
    float *w = k22_cpu_wide(ctx, nq + nk + nv);
    k22_convert_to_f32(w, q16, t, nq);
    k22_convert_to_f32(w + nq, k16, t, nk);
    k22_convert_to_f32(w + nq + nk, v16, t, nv);
    *q = w, *k = w + nq, *v = w + nq + nk;
}

void k22_fast_attention_fwd_x16(void *ctx, float *out, float *lse, const uint16_t *q16,
                                const uint16_t *k16, const uint16_t *v16, const k22_attn_desc *d)
{
    const float *q, *k, *v;
    widen_qkv(ctx, q16, k16, v16, d, &q, &k, &v, "attention_fwd_x16");
    k22_fast_attention_fwd(ctx, out, lse, q, k, v, d);
}

void k22_fast_attention_bwd_x16(void *ctx, float *dq, float *dk, float *dv, const float *dout,
                                const uint16_t *q16, const uint16_t *k16, const uint16_t *v16,
                                const float *out, const float *lse, const k22_attn_desc *d)
{
    const float *q, *k, *v;
    widen_qkv(ctx, q16, k16, v16, d, &q, &k, &v, "attention_bwd_x16");
    k22_fast_attention_bwd(ctx, dq, dk, dv, dout, q, k, v, out, lse, d);
}
