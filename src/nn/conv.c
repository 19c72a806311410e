/* conv.c: nn.Conv2d and nn.GroupNorm bound by diffusers key, over the op interface. */
#include "k22/nn2d.h"

void k22_conv_bind(k22_conv *c, const k22_params *ps, const char *name, const float *P, float *G,
                   int stride, int pad)
{
    char k[256];
    const k22_param *w = k22_params_find(ps, k22_param_key(k, sizeof k, name, "weight"));
    if (!w || w->ndim != 4) K22_FATAL("conv '%s' has no 4-d weight in the table", name);
    c->O = (int)w->shape[0];
    c->C = (int)w->shape[1];
    c->KH = (int)w->shape[2];
    c->KW = (int)w->shape[3];
    c->w = P + w->offset;
    c->dw = G ? G + w->offset : NULL;
    const k22_param *b = k22_params_find(ps, k22_param_key(k, sizeof k, name, "bias"));
    c->b = b ? P + b->offset : NULL;
    c->db = b && G ? G + b->offset : NULL;
    c->SH = c->SW = stride;
    k22_conv_set_padding(c, pad, pad, pad, pad);
}

void k22_conv_set_padding(k22_conv *c, int pt, int pb, int pl, int pr)
{
    c->PT = pt;
    c->PB = pb;
    c->PL = pl;
    c->PR = pr;
}

k22_conv2d_desc k22_conv_desc(const k22_conv *c, int B, int H, int W)
{
    k22_conv2d_desc d = {.B = B, .C = c->C, .H = H, .W = W, .O = c->O, .KH = c->KH, .KW = c->KW,
                         .SH = c->SH, .SW = c->SW, .PT = c->PT, .PB = c->PB, .PL = c->PL,
                         .PR = c->PR};
    return d;
}

void k22_conv_forward(const k22_backend *be, const k22_conv *c, float *y, const float *x, int B,
                      int H, int W)
{
    k22_conv_forward_in(be, c, y, x, NULL, B, H, W);
}

void k22_conv_backward(const k22_backend *be, const k22_conv *c, float *dx, const float *dy,
                       const float *x, int B, int H, int W)
{
    k22_conv_backward_in(be, c, dx, dy, x, NULL, B, H, W);
}

void k22_conv_forward_in(const k22_backend *be, const k22_conv *c, float *y, const float *x,
                         const uint16_t *x16, int B, int H, int W)
{
    k22_conv2d_desc d = k22_conv_desc(c, B, H, W);
    if (x16)
        be->conv2d_fwd_x16(be->ctx, y, x16, c->w, c->b, &d);
    else
        be->conv2d_fwd(be->ctx, y, x, c->w, c->b, &d);
}

void k22_conv_backward_in(const k22_backend *be, const k22_conv *c, float *dx, const float *dy,
                          const float *x, const uint16_t *x16, int B, int H, int W)
{
    k22_conv2d_desc d = k22_conv_desc(c, B, H, W);
    if (x16)
        be->conv2d_bwd_x16(be->ctx, dx, c->dw, c->db, dy, x16, c->w, &d);
    else
        be->conv2d_bwd(be->ctx, dx, c->dw, c->db, dy, x, c->w, &d);
}

void k22_groupnorm_bind(k22_groupnorm *gn, const k22_params *ps, const char *name, const float *P,
                        float *G, int groups, float eps)
{
    char k[256];
    const k22_param *g = k22_params_find(ps, k22_param_key(k, sizeof k, name, "weight"));
    const k22_param *b = k22_params_find(ps, k22_param_key(k, sizeof k, name, "bias"));
    if (!g || g->ndim != 1) K22_FATAL("group norm '%s' has no 1-d weight in the table", name);
    gn->C = (int)g->shape[0];
    gn->G = groups;
    if (groups <= 0 || gn->C % groups) K22_FATAL("group norm '%s': %d channels in %d groups", name, gn->C, groups);
    gn->eps = eps;
    gn->g = P + g->offset;
    gn->dg = G ? G + g->offset : NULL;
    gn->b = b ? P + b->offset : NULL;
    gn->db = b && G ? G + b->offset : NULL;
}

void k22_groupnorm_forward(const k22_backend *be, const k22_groupnorm *gn, float *y, float *mean,
                           float *rstd, const float *x, int B, int64_t S)
{
    be->group_norm_fwd(be->ctx, y, mean, rstd, x, gn->g, gn->b, B, gn->C, (int)S, gn->G, gn->eps);
}

void k22_groupnorm_backward(const k22_backend *be, const k22_groupnorm *gn, float *dx,
                            const float *dy, const float *x, const float *mean, const float *rstd,
                            int B, int64_t S)
{
    be->group_norm_bwd(be->ctx, dx, gn->dg, gn->db, dy, x, mean, rstd, gn->g, B, gn->C, (int)S,
                       gn->G);
}

void k22_groupnorm_silu_forward(const k22_backend *be, const k22_groupnorm *gn, float *y, float *mean,
                                float *rstd, const float *x, const float *ts, int B, int64_t S)
{
    k22_groupnorm_silu_forward_in(be, gn, y, NULL, mean, rstd, x, ts, B, S);
}

void k22_groupnorm_silu_forward_in(const k22_backend *be, const k22_groupnorm *gn, float *y,
                                   uint16_t *y16, float *mean, float *rstd, const float *x,
                                   const float *ts, int B, int64_t S)
{
    int C = gn->C;
    const float *scale = ts, *shift = ts ? ts + C : NULL;
    float off = ts ? 1.0f : 0.0f;
    if (y16)
        be->group_norm_act_fwd_y16(be->ctx, K22_ACT_SILU, y16, mean, rstd, x, gn->g, gn->b, scale,
                                   shift, 2 * (int64_t)C, off, B, C, (int)S, gn->G, gn->eps);
    else
        be->group_norm_act_fwd(be->ctx, K22_ACT_SILU, y, mean, rstd, x, gn->g, gn->b, scale, shift,
                               2 * (int64_t)C, off, B, C, (int)S, gn->G, gn->eps);
}

void k22_groupnorm_silu_backward(const k22_backend *be, const k22_groupnorm *gn, float *dx, float *dts,
                                 const float *dy, const float *x, const float *mean, const float *rstd,
                                 const float *ts, int B, int64_t S)
{
    int C = gn->C;
    be->group_norm_act_bwd(be->ctx, K22_ACT_SILU, dx, gn->dg, gn->db, dts, dts ? dts + C : NULL, dy, x, mean,
                           rstd, gn->g, gn->b, ts, ts ? ts + C : NULL, 2 * (int64_t)C, ts ? 1.0f : 0.0f, B, C,
                           (int)S, gn->G);
}
