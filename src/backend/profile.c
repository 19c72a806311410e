/* profile.c: the profiling backend of profile.h: one forwarding entry per op of ops.h, each timed
 * (host clock, or a CUDA event pair on the cuda backend), counted, and credited with its FLOPs
 * when it is a GEMM-class op. The table printing is profile_report.c's. */
#include "k22/profile.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cuda/cuda_timer.h"
#include "profile_shapes.h"

enum {
#define X(n) OP_##n,
    K22_PROF_OPS(X)
#undef X
    OP_COUNT
};

static const char *const op_names[OP_COUNT] = {
#define X(n) #n,
    K22_PROF_OPS(X)
#undef X
};

/* A new entry in ops.h must be wrapped here too: the struct is its name, dev and ctx, then
 * OP_COUNT timed and 3 untimed function pointers and the precision int. */
_Static_assert(sizeof(k22_backend) ==
                   offsetof(k22_backend, alloc) + (OP_COUNT + 3) * sizeof(void (*)(void)) +
                       (offsetof(k22_backend, matmul) - offsetof(k22_backend, precision)),
               "ops.h's k22_backend changed: wrap the new entry in src/backend/profile.c");

struct k22_prof {
    k22_backend be;    /* the table handed out; be.ctx points back here */
    k22_backend *in;   /* the wrapped backend, owned */
    int64_t calls[OP_COUNT];
    double ms[OP_COUNT], flops[OP_COUNT];
    double t0;         /* host clock (s) at the last reset */
    /* Device timing (cuda): the op of each event pair recorded since the last collect; pair k is
     * marks 2k, 2k+1. The pool grows until the first collect after a reset, then is reused. */
    k22_cuda_timer *timer; /* NULL: host clock */
    int *pending;          /* op + OP_COUNT * (its shape's index + 1; 0: none) */
    int npending, cap, frozen;
    k22_prof_shapes shapes; /* the GEMM-class calls by shape */
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Room for one more pending pair: grown while the pool is young, drained (a wait for the stream,
 * which the step's collect would do anyway) once it has served a whole step. */
static void prof_room(k22_prof *p)
{
    if (p->frozen || p->cap >= (1 << 24)) {
        k22_prof_collect(p);
        return;
    }
    p->pending =
        k22_xgrow(p->pending, &p->cap, 256, sizeof *p->pending, "the profiler's pending ops");
}

/* Opens an op's bracket: its start mark on the stream, or the host clock. */
static double prof_open(k22_prof *p)
{
    if (!p->timer) return now_s();
    if (p->npending == p->cap) prof_room(p);
    k22_cuda_timer_mark(p->timer, 2 * p->npending);
    return 0;
}

/* A time of op, and of its shape's entry (shape >= 0). */
static void prof_add_ms(k22_prof *p, int op, int shape, double ms)
{
    p->ms[op] += ms;
    if (shape >= 0) p->shapes.v[shape].ms += ms;
}

static void prof_close(k22_prof *p, int op, int shape, double t0, double flops)
{
    p->calls[op]++;
    p->flops[op] += flops;
    if (shape >= 0) p->shapes.v[shape].calls++, p->shapes.v[shape].flops += flops;
    if (!p->timer) {
        prof_add_ms(p, op, shape, 1e3 * (now_s() - t0));
        return;
    }
    k22_cuda_timer_mark(p->timer, 2 * p->npending + 1);
    p->pending[p->npending++] = op + OP_COUNT * (shape + 1);
}

/* The index of the shape entry of op with the sizes k (n of them, at most K22_PROF_KEY - 1). */
static int prof_shape(void *ctx, int op, const int *k, int n)
{
    int key[K22_PROF_KEY] = {op};
    memcpy(key + 1, k, (size_t)n * sizeof *k);
    return k22_prof_shapes_slot(&((k22_prof *)ctx)->shapes, key);
}
#define SHAPE(op, ...)                                                                             \
    prof_shape(ctx, OP_##op, (const int[]){__VA_ARGS__},                                           \
               (int)(sizeof((const int[]){__VA_ARGS__}) / sizeof(int)))

/* The wrapped call between the bracket; flops is evaluated after it. FWD_AT also credits the
 * call to a shape entry (SHAPE's index). */
#define FWD_AT(op, shape, flops, ...)                                                              \
    do {                                                                                           \
        k22_prof *p_ = ctx;                                                                        \
        int s_ = (shape);                                                                          \
        double t_ = prof_open(p_);                                                                 \
        p_->in->op(p_->in->ctx, __VA_ARGS__);                                                      \
        prof_close(p_, OP_##op, s_, t_, (flops));                                                  \
    } while (0)
#define FWD(op, flops, ...) FWD_AT(op, -1, flops, __VA_ARGS__)

/* ---- FLOPs of the GEMM-class ops (profile.h) ---- */

static double conv_flops(const k22_conv2d_desc *d)
{
    return 2.0 * d->B * d->O * k22_conv2d_out_h(d) * k22_conv2d_out_w(d) * d->C * d->KH * d->KW;
}

/* One of attention's products over the (TQ, TK) grid with inner size n. */
static double attn_flops(const k22_attn_desc *d, int n)
{
    return 2.0 * d->B * d->NH * d->TQ * d->TK * n;
}

static double attn_bwd_flops(const k22_attn_desc *d, int dq, int dk, int dv)
{
    return attn_flops(d, d->D) + (dq || dk ? attn_flops(d, d->DV) : 0) +
           (dv ? attn_flops(d, d->DV) : 0) + (dq ? attn_flops(d, d->D) : 0) +
           (dk ? attn_flops(d, d->D) : 0);
}

/* ---- memory ---- */

static void *prof_alloc(void *ctx, size_t bytes)
{
    k22_prof *p = ctx;
    double t = prof_open(p);
    void *r = p->in->alloc(p->in->ctx, bytes);
    prof_close(p, OP_alloc, -1, t, 0);
    return r;
}
static void prof_free(void *ctx, void *ptr) { FWD(free, 0, ptr); }
static void prof_to_device(void *ctx, void *dst, const void *src, size_t bytes)
{
    FWD(to_device, 0, dst, src, bytes);
}
static void prof_to_host(void *ctx, void *dst, const void *src, size_t bytes)
{
    FWD(to_host, 0, dst, src, bytes);
}
static void prof_copy(void *ctx, void *dst, const void *src, size_t bytes)
{
    FWD(copy, 0, dst, src, bytes);
}
static void prof_zero(void *ctx, void *ptr, size_t bytes) { FWD(zero, 0, ptr, bytes); }

static void prof_sync(void *ctx)
{
    k22_prof *p = ctx;
    p->in->sync(p->in->ctx);
}

static void prof_set_precision(void *ctx, int precision)
{
    k22_prof *p = ctx;
    p->in->set_precision(p->in->ctx, precision);
    p->in->precision = precision;
}

static void prof_destroy(k22_backend *self)
{
    if (!self) return;
    k22_prof *p = self->ctx;
    k22_cuda_timer_free(p->timer); /* before the backend whose stream it marks */
    k22_backend_free(p->in);
    free(p->pending);
    k22_prof_shapes_free(&p->shapes);
    free(p);
}

/* ---- GEMM-class ---- */

/* Which of three outputs a backward call asks for, as bits 1, 2, 4 of a shape key. */
#define GRADS(a, b, c) (((a) != NULL) | ((b) != NULL) << 1 | ((c) != NULL) << 2)
/* A convolution's shape key: its sizes, stride, padding (a byte each side) and g (GRADS, or 0). */
#define CONV_SHAPE(op, d, g)                                                                       \
    SHAPE(op, (d)->B, (d)->C, (d)->H, (d)->W, (d)->O, (d)->KH, (d)->KW, (d)->SH, (d)->SW,          \
          (d)->PT | (d)->PB << 8 | (d)->PL << 16 | (d)->PR << 24, (g))
/* An attention's: batch, heads, query and key lengths, head sizes, g (GRADS, or 0). */
#define ATTN_SHAPE(op, d, g) SHAPE(op, (d)->B, (d)->NH, (d)->TQ, (d)->TK, (d)->D, (d)->DV, (g))

static void prof_matmul(void *ctx, int ta, int tb, int M, int N, int K, float alpha,
                        const float *A, int64_t sA, const float *Bm, int64_t sB, float beta,
                        float *C, int64_t sC, int batch)
{
    FWD_AT(matmul, SHAPE(matmul, M, N, K, batch, ta, tb), 2.0 * M * N * K * batch, ta, tb, M, N, K,
           alpha, A, sA, Bm, sB, beta, C, sC, batch);
}
static void prof_linear_fwd(void *ctx, float *y, const float *x, const float *w, const float *b,
                            int N, int I, int O)
{
    FWD_AT(linear_fwd, SHAPE(linear_fwd, N, I, O), 2.0 * N * I * O, y, x, w, b, N, I, O);
}
static void prof_linear_bwd(void *ctx, float *dx, float *dw, float *db, const float *dy,
                            const float *x, const float *w, int N, int I, int O)
{
    FWD_AT(linear_bwd, SHAPE(linear_bwd, N, I, O, GRADS(dx, dw, db)),
           2.0 * N * I * O * ((dx != NULL) + (dw != NULL)), dx, dw, db, dy, x, w, N, I, O);
}
static void prof_linear_fwd_x16(void *ctx, float *y, const uint16_t *x16, const float *w,
                                const float *b, int N, int I, int O)
{
    FWD_AT(linear_fwd_x16, SHAPE(linear_fwd_x16, N, I, O), 2.0 * N * I * O, y, x16, w, b, N, I, O);
}
static void prof_linear_bwd_x16(void *ctx, float *dx, float *dw, float *db, const float *dy,
                                const uint16_t *x16, const float *w, int N, int I, int O)
{
    FWD_AT(linear_bwd_x16, SHAPE(linear_bwd_x16, N, I, O, GRADS(dx, dw, db)),
           2.0 * N * I * O * ((dx != NULL) + (dw != NULL)), dx, dw, db, dy, x16, w, N, I, O);
}
static void prof_conv2d_fwd(void *ctx, float *y, const float *x, const float *w,
                            const float *bias, const k22_conv2d_desc *d)
{
    FWD_AT(conv2d_fwd, CONV_SHAPE(conv2d_fwd, d, 0), conv_flops(d), y, x, w, bias, d);
}
static void prof_conv2d_bwd(void *ctx, float *dx, float *dw, float *dbias, const float *dy,
                            const float *x, const float *w, const k22_conv2d_desc *d)
{
    FWD_AT(conv2d_bwd, CONV_SHAPE(conv2d_bwd, d, GRADS(dx, dw, dbias)),
           conv_flops(d) * ((dx != NULL) + (dw != NULL)), dx, dw, dbias, dy, x, w, d);
}
static void prof_conv2d_fwd_x16(void *ctx, float *y, const uint16_t *x16, const float *w,
                                const float *bias, const k22_conv2d_desc *d)
{
    FWD_AT(conv2d_fwd_x16, CONV_SHAPE(conv2d_fwd_x16, d, 0), conv_flops(d), y, x16, w, bias, d);
}
static void prof_conv2d_bwd_x16(void *ctx, float *dx, float *dw, float *dbias, const float *dy,
                                const uint16_t *x16, const float *w, const k22_conv2d_desc *d)
{
    FWD_AT(conv2d_bwd_x16, CONV_SHAPE(conv2d_bwd_x16, d, GRADS(dx, dw, dbias)),
           conv_flops(d) * ((dx != NULL) + (dw != NULL)), dx, dw, dbias, dy, x16, w, d);
}
static void prof_attention_fwd(void *ctx, float *out, float *lse, const float *q, const float *k,
                               const float *v, const k22_attn_desc *d)
{
    FWD_AT(attention_fwd, ATTN_SHAPE(attention_fwd, d, 0),
           attn_flops(d, d->D) + attn_flops(d, d->DV), out, lse, q, k, v, d);
}
static void prof_attention_bwd(void *ctx, float *dq, float *dk, float *dv, const float *dout,
                               const float *q, const float *k, const float *v, const float *out,
                               const float *lse, const k22_attn_desc *d)
{
    FWD_AT(attention_bwd, ATTN_SHAPE(attention_bwd, d, GRADS(dq, dk, dv)),
           attn_bwd_flops(d, dq != NULL, dk != NULL, dv != NULL), dq, dk, dv, dout, q, k, v, out,
           lse, d);
}

static void prof_attention_fwd_x16(void *ctx, float *out, float *lse, const uint16_t *q,
                                   const uint16_t *k, const uint16_t *v, const k22_attn_desc *d)
{
    FWD_AT(attention_fwd_x16, ATTN_SHAPE(attention_fwd_x16, d, 0),
           attn_flops(d, d->D) + attn_flops(d, d->DV), out, lse, q, k, v, d);
}
static void prof_attention_bwd_x16(void *ctx, float *dq, float *dk, float *dv, const float *dout,
                                   const uint16_t *q, const uint16_t *k, const uint16_t *v,
                                   const float *out, const float *lse, const k22_attn_desc *d)
{
    FWD_AT(attention_bwd_x16, ATTN_SHAPE(attention_bwd_x16, d, GRADS(dq, dk, dv)),
           attn_bwd_flops(d, dq != NULL, dk != NULL, dv != NULL), dq, dk, dv, dout, q, k, v, out,
           lse, d);
}

/* ---- norms, activations, softmax ---- */

static void prof_group_norm_fwd(void *ctx, float *y, float *mean, float *rstd, const float *x,
                                const float *gamma, const float *beta, int B, int C, int S, int G,
                                float eps)
{
    FWD(group_norm_fwd, 0, y, mean, rstd, x, gamma, beta, B, C, S, G, eps);
}
static void prof_group_norm_bwd(void *ctx, float *dx, float *dgamma, float *dbeta,
                                const float *dy, const float *x, const float *mean,
                                const float *rstd, const float *gamma, int B, int C, int S, int G)
{
    FWD(group_norm_bwd, 0, dx, dgamma, dbeta, dy, x, mean, rstd, gamma, B, C, S, G);
}
static void prof_layer_norm_fwd(void *ctx, float *y, float *mean, float *rstd, const float *x,
                                const float *gamma, const float *beta, int N, int C, float eps)
{
    FWD(layer_norm_fwd, 0, y, mean, rstd, x, gamma, beta, N, C, eps);
}
static void prof_layer_norm_fwd_y16(void *ctx, uint16_t *y16, float *mean, float *rstd,
                                    const float *x, const float *gamma, const float *beta, int N,
                                    int C, float eps)
{
    FWD(layer_norm_fwd_y16, 0, y16, mean, rstd, x, gamma, beta, N, C, eps);
}
static void prof_layer_norm_bwd(void *ctx, float *dx, float *dgamma, float *dbeta,
                                const float *dy, const float *x, const float *mean,
                                const float *rstd, const float *gamma, int N, int C)
{
    FWD(layer_norm_bwd, 0, dx, dgamma, dbeta, dy, x, mean, rstd, gamma, N, C);
}
static void prof_act_fwd(void *ctx, int act, float *y, const float *x, int64_t n)
{
    FWD(act_fwd, 0, act, y, x, n);
}
static void prof_act_bwd(void *ctx, int act, float *dx, const float *dy, const float *x,
                         int64_t n)
{
    FWD(act_bwd, 0, act, dx, dy, x, n);
}
static void prof_act_fwd_y16(void *ctx, int act, uint16_t *y16, const float *x, int64_t n)
{
    FWD(act_fwd_y16, 0, act, y16, x, n);
}
static void prof_softmax_fwd(void *ctx, float *y, const float *x, int64_t rows, int cols)
{
    FWD(softmax_fwd, 0, y, x, rows, cols);
}
static void prof_softmax_bwd(void *ctx, float *dx, const float *dy, const float *y, int64_t rows,
                             int cols)
{
    FWD(softmax_bwd, 0, dx, dy, y, rows, cols);
}

/* ---- elementwise ---- */

static void prof_add(void *ctx, float *y, const float *a, const float *b, int64_t n)
{
    FWD(add, 0, y, a, b, n);
}
static void prof_mul(void *ctx, float *y, const float *a, const float *b, int64_t n)
{
    FWD(mul, 0, y, a, b, n);
}
static void prof_scale(void *ctx, float *y, const float *a, float s, int64_t n)
{
    FWD(scale, 0, y, a, s, n);
}
static void prof_add_bwd(void *ctx, float *da, float *db, const float *dy, int64_t n)
{
    FWD(add_bwd, 0, da, db, dy, n);
}
static void prof_mul_bwd(void *ctx, float *da, float *db, const float *dy, const float *a,
                         const float *b, int64_t n)
{
    FWD(mul_bwd, 0, da, db, dy, a, b, n);
}
static void prof_scale_bwd(void *ctx, float *da, const float *dy, float s, int64_t n)
{
    FWD(scale_bwd, 0, da, dy, s, n);
}

/* ---- layout ---- */

static void prof_concat_fwd(void *ctx, float *y, const float *a, const float *b, int64_t outer,
                            int64_t na, int64_t nb, int64_t inner)
{
    FWD(concat_fwd, 0, y, a, b, outer, na, nb, inner);
}
static void prof_concat_bwd(void *ctx, float *da, float *db, const float *dy, int64_t outer,
                            int64_t na, int64_t nb, int64_t inner)
{
    FWD(concat_bwd, 0, da, db, dy, outer, na, nb, inner);
}
static void prof_permute_fwd(void *ctx, float *y, const float *x, int ndim,
                             const int64_t *in_shape, const int *perm)
{
    FWD(permute_fwd, 0, y, x, ndim, in_shape, perm);
}
static void prof_permute_bwd(void *ctx, float *dx, const float *dy, int ndim,
                             const int64_t *in_shape, const int *perm)
{
    FWD(permute_bwd, 0, dx, dy, ndim, in_shape, perm);
}
static void prof_upsample2x_fwd(void *ctx, float *y, const float *x, int B, int C, int H, int W)
{
    FWD(upsample2x_fwd, 0, y, x, B, C, H, W);
}
static void prof_upsample2x_bwd(void *ctx, float *dx, const float *dy, int B, int C, int H, int W)
{
    FWD(upsample2x_bwd, 0, dx, dy, B, C, H, W);
}
static void prof_avgpool2x_fwd(void *ctx, float *y, const float *x, int B, int C, int H, int W)
{
    FWD(avgpool2x_fwd, 0, y, x, B, C, H, W);
}
static void prof_avgpool2x_bwd(void *ctx, float *dx, const float *dy, int B, int C, int H, int W)
{
    FWD(avgpool2x_bwd, 0, dx, dy, B, C, H, W);
}
static void prof_resize_nearest_fwd(void *ctx, float *y, const float *x, int B, int C, int H,
                                    int W, int OH, int OW)
{
    FWD(resize_nearest_fwd, 0, y, x, B, C, H, W, OH, OW);
}

/* ---- fused and conditioning ops ---- */

static void prof_chan_affine_fwd(void *ctx, float *y, const float *x, const float *scale,
                                 const float *shift, float scale_offset, int B, int C, int64_t S)
{
    FWD(chan_affine_fwd, 0, y, x, scale, shift, scale_offset, B, C, S);
}
static void prof_chan_affine_bwd(void *ctx, float *dx, float *dscale, float *dshift,
                                 const float *dy, const float *x, const float *scale,
                                 float scale_offset, int B, int C, int64_t S)
{
    FWD(chan_affine_bwd, 0, dx, dscale, dshift, dy, x, scale, scale_offset, B, C, S);
}
static void prof_group_norm_act_fwd(void *ctx, int act, float *y, float *mean, float *rstd,
                                    const float *x, const float *gamma, const float *beta,
                                    const float *scale, const float *shift, int64_t ss_ld,
                                    float scale_offset, int B, int C, int S, int G, float eps)
{
    FWD(group_norm_act_fwd, 0, act, y, mean, rstd, x, gamma, beta, scale, shift, ss_ld,
        scale_offset, B, C, S, G, eps);
}
static void prof_group_norm_act_bwd(void *ctx, int act, float *dx, float *dgamma, float *dbeta,
                                    float *dscale, float *dshift, const float *dy, const float *x,
                                    const float *mean, const float *rstd, const float *gamma,
                                    const float *beta, const float *scale, const float *shift,
                                    int64_t ss_ld, float scale_offset, int B, int C, int S, int G)
{
    FWD(group_norm_act_bwd, 0, act, dx, dgamma, dbeta, dscale, dshift, dy, x, mean, rstd, gamma,
        beta, scale, shift, ss_ld, scale_offset, B, C, S, G);
}
static void prof_group_norm_act_fwd_y16(void *ctx, int act, uint16_t *y16, float *mean,
                                        float *rstd, const float *x, const float *gamma,
                                        const float *beta, const float *scale, const float *shift,
                                        int64_t ss_ld, float scale_offset, int B, int C, int S,
                                        int G, float eps)
{
    FWD(group_norm_act_fwd_y16, 0, act, y16, mean, rstd, x, gamma, beta, scale, shift, ss_ld,
        scale_offset, B, C, S, G, eps);
}
static void prof_timestep_embed_fwd(void *ctx, float *y, const float *t, int N, int dim,
                                    int flip_sin_to_cos, float shift, float scale,
                                    float max_period)
{
    FWD(timestep_embed_fwd, 0, y, t, N, dim, flip_sin_to_cos, shift, scale, max_period);
}
static void prof_timestep_embed_bwd(void *ctx, float *dt, const float *dy, const float *t, int N,
                                    int dim, int flip_sin_to_cos, float shift, float scale,
                                    float max_period)
{
    FWD(timestep_embed_bwd, 0, dt, dy, t, N, dim, flip_sin_to_cos, shift, scale, max_period);
}

/* ---- loss and optimizer ---- */

static void prof_mse_fwd(void *ctx, float *loss, float *per_sample, const float *pred,
                         const float *target, const float *w, int B, int64_t N)
{
    FWD(mse_fwd, 0, loss, per_sample, pred, target, w, B, N);
}
static void prof_mse_bwd(void *ctx, float *dpred, float dloss, const float *pred,
                         const float *target, const float *w, int B, int64_t N)
{
    FWD(mse_bwd, 0, dpred, dloss, pred, target, w, B, N);
}
static void prof_adamw_step(void *ctx, float *p, const float *g, float *m, float *v, int64_t n,
                            const k22_adamw_hparams *h)
{
    FWD(adamw_step, 0, p, g, m, v, n, h);
}
static void prof_sumsq(void *ctx, double *out, const float *g, int64_t n)
{
    FWD(sumsq, 0, out, g, n);
}

/* ---- the profiler ---- */

k22_backend *k22_prof_wrap(k22_backend *in)
{
    if (k22_prof_of(in)) return in;
    k22_prof *p = k22_xcalloc(1, sizeof *p);
    p->in = in;
    k22_backend *w = &p->be;
    w->name = in->name;
    w->dev = in->dev;
    w->ctx = p;
    w->precision = in->precision;
    w->destroy = prof_destroy;
    w->sync = in->sync ? prof_sync : NULL;
    w->set_precision = in->set_precision ? prof_set_precision : NULL;
#define X(n) w->n = in->n ? prof_##n : NULL;
    K22_PROF_OPS(X)
#undef X
    /* K22_DEV_CUDA memory is the cuda backend's alone, so its ctx is the one the timer reads. */
    if (in->dev == K22_DEV_CUDA) p->timer = k22_cuda_timer_new(in->ctx);
    p->t0 = now_s();
    return w;
}

k22_prof *k22_prof_of(const k22_backend *be)
{
    return be && be->destroy == prof_destroy ? be->ctx : NULL;
}

const k22_backend *k22_prof_inner(const k22_backend *be)
{
    const k22_prof *p = k22_prof_of(be);
    return p ? p->in : be;
}

void k22_prof_collect(k22_prof *p)
{
    if (p->in->sync) p->in->sync(p->in->ctx);
    for (int k = 0; k < p->npending; k++)
        prof_add_ms(p, p->pending[k] % OP_COUNT, p->pending[k] / OP_COUNT - 1,
                    k22_cuda_timer_ms(p->timer, 2 * k, 2 * k + 1));
    p->npending = 0;
    p->frozen = 1;
}

void k22_prof_reset(k22_prof *p)
{
    k22_prof_collect(p);
    memset(p->calls, 0, sizeof p->calls);
    memset(p->ms, 0, sizeof p->ms);
    memset(p->flops, 0, sizeof p->flops);
    k22_prof_shapes_clear(&p->shapes);
    p->frozen = 0; /* the next step may still grow the pool */
    p->t0 = now_s();
}

double k22_prof_wall_ms(const k22_prof *p)
{
    return 1e3 * (now_s() - p->t0);
}

int k22_prof_nops(void)
{
    return OP_COUNT;
}

int k22_prof_find(const char *op)
{
    for (int i = 0; op && i < OP_COUNT; i++)
        if (!strcmp(op_names[i], op)) return i;
    return -1;
}

/* The GEMM-class ops by the sizes they take (GEMM_NONE: not GEMM-class). */
enum { GEMM_NONE, GEMM_MATMUL, GEMM_LINEAR, GEMM_CONV, GEMM_ATTN };
static int gemm_kind(int op)
{
    switch (op) {
    case OP_matmul: return GEMM_MATMUL;
    case OP_linear_fwd: case OP_linear_bwd: case OP_linear_fwd_x16: case OP_linear_bwd_x16:
        return GEMM_LINEAR;
    case OP_conv2d_fwd: case OP_conv2d_bwd: case OP_conv2d_fwd_x16: case OP_conv2d_bwd_x16:
        return GEMM_CONV;
    case OP_attention_fwd: case OP_attention_bwd: case OP_attention_fwd_x16:
    case OP_attention_bwd_x16:
        return GEMM_ATTN;
    default: return GEMM_NONE;
    }
}

k22_prof_stat k22_prof_at(const k22_prof *p, int i)
{
    K22_REQUIRE(i >= 0 && i < OP_COUNT);
    k22_prof_stat s = {op_names[i], p->calls[i], p->ms[i], p->flops[i], 0};
    s.gemm = gemm_kind(i) != GEMM_NONE;
    return s;
}

int k22_prof_nshapes(const k22_prof *p)
{
    return p->shapes.n;
}

/* Appends to t (n bytes, holding w of them as snprintf counted) the outputs a backward asked
 * for (GRADS's bits) as ",dx,dw,db" with names n0, n1, n2; nothing where t is already full. */
static void grads_text(char *t, size_t n, int w, int g, const char *n0, const char *n1,
                       const char *n2)
{
    if (w < 0 || (size_t)w >= n) return;
    snprintf(t + w, n - (size_t)w, "%s%s%s%s%s%s", g & 1 ? "," : "", g & 1 ? n0 : "",
             g & 2 ? "," : "", g & 2 ? n1 : "", g & 4 ? "," : "", g & 4 ? n2 : "");
}

k22_prof_shape_stat k22_prof_shape_at(const k22_prof *p, int i)
{
    K22_REQUIRE(i >= 0 && i < p->shapes.n);
    const k22_prof_shape *e = &p->shapes.v[i];
    const int op = e->key[0], *k = e->key + 1;
    k22_prof_shape_stat s = {op_names[op], "", e->calls, e->ms, e->flops};
    char *t = s.shape;
    size_t n = sizeof s.shape;
    int w;
    int kind = gemm_kind(op);
    if (kind == GEMM_MATMUL) {
        snprintf(t, n, "M%d,N%d,K%d,x%d%s%s", k[0], k[1], k[2], k[3], k[4] ? ",ta" : "",
                 k[5] ? ",tb" : "");
    } else if (kind == GEMM_LINEAR) {
        w = snprintf(t, n, "N%d,I%d,O%d", k[0], k[1], k[2]);
        grads_text(t, n, w, k[3], "dx", "dw", "db");
    } else if (kind == GEMM_CONV) {
        w = snprintf(t, n, "B%d,C%d,%dx%d,O%d,k%dx%d,s%d,%d,p%d,%d,%d,%d", k[0], k[1], k[2], k[3],
                     k[4], k[5], k[6], k[7], k[8], k[9] & 255, k[9] >> 8 & 255, k[9] >> 16 & 255,
                     k[9] >> 24 & 255);
        grads_text(t, n, w, k[10], "dx", "dw", "db");
    } else {
        w = snprintf(t, n, "B%d,NH%d,TQ%d,TK%d,D%d,DV%d", k[0], k[1], k[2], k[3], k[4], k[5]);
        grads_text(t, n, w, k[6], "dq", "dk", "dv");
    }
    return s;
}

const char *k22_prof_timer_name(const k22_prof *p)
{
    return p->timer ? "cuda_events" : "host_clock";
}

const char *k22_prof_device(const k22_prof *p)
{
    return p->in->name;
}
