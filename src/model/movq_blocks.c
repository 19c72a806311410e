/* movq_blocks.c: MoVQ's layers (group or spatial norm, resnet, single-head pixel attention,
 * resamplers), forward only, written for the shared size/run walk of movq_internal.h. */
#include <math.h>

#include "movq_internal.h"

float *k22_mv_alloc(k22_mv_run *r, size_t n)
{
    if (r->be) return k22_arena_floats(r->ar, n);
    r->used += k22_arena_round(n);
    if (r->used > r->peak) r->peak = r->used;
    return NULL;
}

size_t k22_mv_mark(const k22_mv_run *r)
{
    return r->be ? k22_arena_mark(r->ar) : r->used;
}

void k22_mv_reset(k22_mv_run *r, size_t mark)
{
    if (r->be)
        k22_arena_reset(r->ar, mark);
    else
        r->used = mark;
}

void k22_mv_out(k22_mv_run *r, size_t n)
{
    if (n > r->maxact) r->maxact = n;
}

void k22_mv_conv(k22_mv_run *r, const k22_conv *c, float *y, const float *x, int H, int W)
{
    k22_conv2d_desc d = k22_conv_desc(c, r->B, H, W);
    k22_mv_out(r, (size_t)r->B * c->O * k22_conv2d_out_h(&d) * k22_conv2d_out_w(&d));
    if (r->be) k22_conv_forward(r->be, c, y, x, r->B, H, W);
}

/* SpatialNorm: y = GroupNorm(x) * conv_y(zq) + conv_b(zq), zq resized (nearest) to (H, W). */
static void mv_spatial_norm(k22_mv_run *r, const k22_movq_snorm *sn, float *y, const float *x,
                            int H, int W)
{
    size_t S = (size_t)H * W, n = (size_t)r->B * sn->gn.C * S;
    float *zr = k22_mv_alloc(r, (size_t)r->B * r->zc * S); // zr: (B, zc, H, W)
    float *t = k22_mv_alloc(r, n);                          // t: (B, C, H, W)
    float *mean = k22_mv_alloc(r, (size_t)r->B * sn->gn.G), *rstd = k22_mv_alloc(r, (size_t)r->B * sn->gn.G);
    if (!r->be) return;
    const k22_backend *be = r->be;
    be->resize_nearest_fwd(be->ctx, zr, r->z, r->B, r->zc, r->zh, r->zw, H, W);
    k22_groupnorm_forward(be, &sn->gn, y, mean, rstd, x, r->B, (int64_t)S);
    k22_conv_forward(be, &sn->y, t, zr, r->B, H, W);
    be->mul(be->ctx, y, y, t, (int64_t)n);
    k22_conv_forward(be, &sn->b, t, zr, r->B, H, W);
    be->add(be->ctx, y, y, t, (int64_t)n);
}

void k22_mv_norm(k22_mv_run *r, const k22_movq_norm *nm, float *y, const float *x, int H, int W)
{
    size_t mark = k22_mv_mark(r);
    if (nm->spatial) {
        mv_spatial_norm(r, &nm->sn, y, x, H, W);
    } else {
        float *mean = k22_mv_alloc(r, (size_t)r->B * nm->gn.G);
        float *rstd = k22_mv_alloc(r, (size_t)r->B * nm->gn.G);
        if (r->be) k22_groupnorm_forward(r->be, &nm->gn, y, mean, rstd, x, r->B, (int64_t)H * W);
    }
    k22_mv_reset(r, mark);
}

static void mv_silu(k22_mv_run *r, float *x, size_t n)
{
    if (r->be) r->be->act_fwd(r->be->ctx, K22_ACT_SILU, x, x, (int64_t)n);
}

/* y = silu(norm(x)) over (B, C, H, W): one fused group_norm_act op for a plain group norm (one
 * pass less over the activation, same bits as norm then SiLU), the two steps for a spatial one.
 * Allocates what k22_mv_norm does, so the sizing pass (r->be NULL) counts the same. */
static void mv_norm_silu(k22_mv_run *r, const k22_movq_norm *nm, float *y, const float *x, int C,
                         int H, int W)
{
    if (nm->spatial) {
        k22_mv_norm(r, nm, y, x, H, W);
        mv_silu(r, y, (size_t)r->B * C * H * W);
        return;
    }
    size_t mark = k22_mv_mark(r);
    float *mean = k22_mv_alloc(r, (size_t)r->B * nm->gn.G);
    float *rstd = k22_mv_alloc(r, (size_t)r->B * nm->gn.G);
    if (r->be)
        r->be->group_norm_act_fwd(r->be->ctx, K22_ACT_SILU, y, mean, rstd, x, nm->gn.g, nm->gn.b,
                                  NULL, NULL, C, 0.0f, r->B, nm->gn.C, H * W, nm->gn.G,
                                  nm->gn.eps);
    k22_mv_reset(r, mark);
}

static void mv_add(k22_mv_run *r, float *y, const float *x, size_t n)
{
    if (r->be) r->be->add(r->be->ctx, y, y, x, (int64_t)n);
}

void k22_mv_resnet(k22_mv_run *r, const k22_movq_resnet *rs, float *y, const float *x, int H,
                   int W)
{
    size_t S = (size_t)H * W, mark = k22_mv_mark(r);
    int wide = rs->in > rs->out ? rs->in : rs->out;
    float *t1 = k22_mv_alloc(r, (size_t)r->B * wide * S);   // t1: (B, max(in, out), H, W)
    float *t2 = k22_mv_alloc(r, (size_t)r->B * rs->out * S); // t2: (B, out, H, W)
    mv_norm_silu(r, &rs->n1, t1, x, rs->in, H, W);
    k22_mv_conv(r, &rs->conv1, t2, t1, H, W);
    mv_norm_silu(r, &rs->n2, t1, t2, rs->out, H, W);
    k22_mv_conv(r, &rs->conv2, y, t1, H, W); // dropout is the identity in eval
    if (rs->has_shortcut) {
        k22_mv_conv(r, &rs->shortcut, t2, x, H, W);
        mv_add(r, y, t2, (size_t)r->B * rs->out * S);
    } else {
        mv_add(r, y, x, (size_t)r->B * rs->out * S);
    }
    k22_mv_reset(r, mark); // output_scale_factor is 1 in every MoVQ block
}

/* Pixels as tokens: (B, C, T) <-> (B, T, C). */
static void mv_transpose(k22_mv_run *r, float *y, const float *x, int64_t d1, int64_t d2)
{
    static const int swap[3] = {0, 2, 1};
    int64_t shape[3] = {r->B, d1, d2};
    if (r->be) r->be->permute_fwd(r->be->ctx, y, x, 3, shape, swap);
}

void k22_mv_attn(k22_mv_run *r, const k22_movq_attn *a, float *y, const float *x, int H, int W)
{
    size_t mark = k22_mv_mark(r);
    int C = a->C, T = H * W;
    size_t n = (size_t)r->B * C * T;
    float *t1 = k22_mv_alloc(r, n); // t1: (B, C, T) normed, then q (B, T, C)
    k22_mv_norm(r, &a->norm, t1, x, H, W);
    float *xt = k22_mv_alloc(r, n); // xt: (B, T, C), later the output projection
    float *k = k22_mv_alloc(r, n), *v = k22_mv_alloc(r, n), *o = k22_mv_alloc(r, n);
    float *lse = k22_mv_alloc(r, (size_t)r->B * T); // lse: (B, 1, T)
    if (r->be) {
        const k22_backend *be = r->be;
        int N = r->B * T;
        mv_transpose(r, xt, t1, C, T);
        k22_linear_forward(be, &a->q, t1, xt, N);
        k22_linear_forward(be, &a->k, k, xt, N);
        k22_linear_forward(be, &a->v, v, xt, N);
        /* heads = C / attention_head_dim = 1 in every MoVQ attention: (B, T, C) is (B, 1, T, C). */
        k22_attn_desc d = {.B = r->B, .NH = 1, .TQ = T, .TK = T, .D = C, .DV = C,
                           .scale = 1.0f / sqrtf((float)C)};
        be->attention_fwd(be->ctx, o, lse, t1, k, v, &d);
        k22_linear_forward(be, &a->o, xt, o, N);
        mv_transpose(r, y, xt, T, C);
        be->add(be->ctx, y, y, x, (int64_t)n); // residual; rescale_output_factor 1
    }
    k22_mv_out(r, n);
    k22_mv_reset(r, mark);
}

void k22_mv_resample(k22_mv_run *r, const k22_movq_block *b, float *y, const float *x, int *H,
                     int *W)
{
    if (b->resample < 0) {
        k22_conv2d_desc d = k22_conv_desc(&b->rconv, r->B, *H, *W);
        k22_mv_conv(r, &b->rconv, y, x, *H, *W);
        *H = k22_conv2d_out_h(&d);
        *W = k22_conv2d_out_w(&d);
        return;
    }
    size_t mark = k22_mv_mark(r);
    int C = b->rconv.C;
    float *up = k22_mv_alloc(r, (size_t)r->B * C * 4 * *H * *W); // up: (B, C, 2H, 2W)
    if (r->be) r->be->upsample2x_fwd(r->be->ctx, up, x, r->B, C, *H, *W);
    *H *= 2;
    *W *= 2;
    k22_mv_conv(r, &b->rconv, y, up, *H, *W);
    k22_mv_reset(r, mark);
}
