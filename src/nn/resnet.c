/* resnet.c: diffusers ResnetBlock2D with scale_shift time conditioning and the optional 2x
 * down (avg-pool) / up (nearest) resampling inside it, forward and backward (see unet.h).
 * norm1 + SiLU and norm2 + modulation + SiLU each run as one group_norm_act op (ops.h), whose
 * backward recomputes the normalized values from the block's input and statistics: the cache
 * keeps only the conv inputs (a1 or its resampled a1r, a2; as 16 bits with act16), h1, ts and
 * the statistics. */
#include "k22/unet.h"

#include <string.h>

/* dim d of parameter `name`.`part` in the table (shape-only binding, P == NULL). */
static int table_dim(const k22_params *ps, const char *name, const char *part, int d)
{
    char k[256];
    const k22_param *p = k22_params_find(ps, k22_param_key(k, sizeof k, name, part));
    if (!p || p->ndim <= d) K22_FATAL("resnet '%s': no parameter %s of rank > %d", name, k, d);
    return (int)p->shape[d];
}

void k22_resnet_bind(k22_resnet *r, const k22_params *ps, const char *name, const float *P,
                     float *G, int groups, float eps, int resample)
{
    char k[256];
    r->resample = resample;
    if (!P) { /* shapes only: what the size functions read */
        memset(r, 0, sizeof *r);
        r->resample = resample;
        r->cin = table_dim(ps, name, "conv1.weight", 1);
        r->cout = table_dim(ps, name, "conv1.weight", 0);
        r->conv1.C = r->cin, r->conv1.O = r->cout;
        r->norm1.G = r->norm2.G = groups;
        r->has_shortcut = r->cin != r->cout;
        return;
    }
    k22_groupnorm_bind(&r->norm1, ps, k22_param_key(k, sizeof k, name, "norm1"), P, G, groups, eps);
    k22_conv_bind(&r->conv1, ps, k22_param_key(k, sizeof k, name, "conv1"), P, G, 1, 1);
    k22_linear_bind(&r->temb_proj, ps, k22_param_key(k, sizeof k, name, "time_emb_proj"), P, G);
    k22_groupnorm_bind(&r->norm2, ps, k22_param_key(k, sizeof k, name, "norm2"), P, G, groups, eps);
    k22_conv_bind(&r->conv2, ps, k22_param_key(k, sizeof k, name, "conv2"), P, G, 1, 1);
    r->cin = r->conv1.C;
    r->cout = r->conv1.O;
    r->has_shortcut = r->cin != r->cout;
    if (r->has_shortcut)
        k22_conv_bind(&r->shortcut, ps, k22_param_key(k, sizeof k, name, "conv_shortcut"), P, G, 1, 0);
}

/* Arena floats of a conv input of n values: 16 bits each with act16. */
static size_t conv_in_floats(const k22_resnet *r, size_t n)
{
    return r->act16 ? k22_arena_round_halves(n) : k22_arena_round(n);
}

static void out_hw(const k22_resnet *r, int H, int W, int *oh, int *ow)
{
    *oh = r->resample == K22_RESAMPLE_DOWN ? H / 2 : r->resample == K22_RESAMPLE_UP ? 2 * H : H;
    *ow = r->resample == K22_RESAMPLE_DOWN ? W / 2 : r->resample == K22_RESAMPLE_UP ? 2 * W : W;
}

size_t k22_resnet_cache_floats(const k22_resnet *r, int B, int H, int W)
{
    int OH, OW;
    out_hw(r, H, W, &OH, &OW);
    size_t nout = (size_t)B * r->cout * OH * OW;
    size_t inr = k22_arena_round((size_t)B * r->cin * OH * OW);
    size_t g1 = k22_arena_round((size_t)B * r->norm1.G), g2 = k22_arena_round((size_t)B * r->norm2.G);
    /* a1 (or, resampling, a1r and, for the shortcut, xr), the statistics, h1, a2, ts */
    size_t n = 2 * g1 + 2 * g2 + k22_arena_round(nout) + conv_in_floats(r, nout) +
               k22_arena_round((size_t)B * 2 * r->cout);
    if (r->resample)
        return n + conv_in_floats(r, (size_t)B * r->cin * OH * OW) + (r->has_shortcut ? inr : 0);
    return n + conv_in_floats(r, (size_t)B * r->cin * H * W);
}

size_t k22_resnet_fwd_floats(const k22_resnet *r, int B, int H, int W)
{
    int OH, OW;
    out_hw(r, H, W, &OH, &OW);
    /* the shortcut's output, or the resampled x the residual adds; before it, a1 when resampling
     * (only a1r is kept; with act16 a1r passes through a float copy before it is rounded) */
    size_t sc = r->has_shortcut || r->resample ? k22_arena_round((size_t)B * r->cout * OH * OW) : 0;
    size_t a1 = r->resample ? k22_arena_round((size_t)B * r->cin * H * W) : 0;
    if (r->resample && r->act16) a1 += k22_arena_round((size_t)B * r->cin * OH * OW);
    return sc > a1 ? sc : a1;
}

size_t k22_resnet_bwd_floats(const k22_resnet *r, int B, int H, int W)
{
    int OH, OW;
    out_hw(r, H, W, &OH, &OW);
    size_t in = k22_arena_round((size_t)B * r->cin * H * W);
    size_t inr = k22_arena_round((size_t)B * r->cin * OH * OW);
    size_t out = k22_arena_round((size_t)B * r->cout * OH * OW);
    /* da2, dh1, dts, da1r; resampling also dxr and da1 */
    size_t n = 2 * out + k22_arena_round((size_t)B * 2 * r->cout) + inr;
    if (r->resample) n += inr + in;
    return n;
}

static void resample_fwd(const k22_backend *be, int mode, float *y, const float *x, int B, int C,
                         int H, int W)
{
    if (mode == K22_RESAMPLE_DOWN)
        be->avgpool2x_fwd(be->ctx, y, x, B, C, H, W);
    else
        be->upsample2x_fwd(be->ctx, y, x, B, C, H, W);
}

static void resample_bwd(const k22_backend *be, int mode, float *dx, const float *dy, int B, int C,
                         int H, int W)
{
    if (mode == K22_RESAMPLE_DOWN)
        be->avgpool2x_bwd(be->ctx, dx, dy, B, C, H, W);
    else
        be->upsample2x_bwd(be->ctx, dx, dy, B, C, H, W);
}

void k22_resnet_forward(const k22_backend *be, const k22_resnet *r, k22_arena *ar, float *y,
                        const float *x, const float *temb_act, int B, int H, int W,
                        k22_resnet_cache *c)
{
    int OH, OW, ci = r->cin, co = r->cout;
    out_hw(r, H, W, &OH, &OW);
    int64_t S = (int64_t)H * W, So = (int64_t)OH * OW;
    if (r->act16) k22_backend_act16_require(be, "resnet: conv inputs");
    memset(c, 0, sizeof *c);
    c->x = x;
    c->mean1 = k22_arena_floats(ar, (size_t)B * r->norm1.G);
    c->rstd1 = k22_arena_floats(ar, (size_t)B * r->norm1.G);
    if (r->resample) {
        size_t nr = (size_t)B * ci * So;
        if (r->act16)
            c->a1_16 = k22_arena_halves(ar, nr); // a1r: (B, cin, OH, OW)
        else
            c->a1r = k22_arena_floats(ar, nr);
        /* xr: (B, cin, OH, OW), kept for the shortcut's backward; without a shortcut only the
         * residual reads it, resampled again at the end */
        c->xr = r->has_shortcut ? k22_arena_floats(ar, nr) : NULL;
        /* a1 is only the resampler's input here: a temporary above the cache; with act16 so is
         * the float a1r, rounded once into the 16 bits conv1 reads */
        size_t top = k22_arena_mark(ar);
        float *a1 = k22_arena_floats(ar, (size_t)B * ci * S); // a1: (B, cin, H, W)
        k22_groupnorm_silu_forward(be, &r->norm1, a1, c->mean1, c->rstd1, x, NULL, B, S);
        float *a1r = r->act16 ? k22_arena_floats(ar, nr) : c->a1r;
        resample_fwd(be, r->resample, a1r, a1, B, ci, H, W);
        if (r->act16) be->act_fwd_y16(be->ctx, K22_ACT_NONE, c->a1_16, a1r, (int64_t)nr);
        if (c->xr) resample_fwd(be, r->resample, c->xr, x, B, ci, H, W);
        k22_arena_reset(ar, top);
        c->a1 = NULL;
    } else {
        if (r->act16)
            c->a1_16 = k22_arena_halves(ar, (size_t)B * ci * S); // a1: (B, cin, H, W)
        else
            c->a1 = c->a1r = k22_arena_floats(ar, (size_t)B * ci * S);
        k22_groupnorm_silu_forward_in(be, &r->norm1, c->a1, c->a1_16, c->mean1, c->rstd1, x, NULL, B, S);
        c->xr = (float *)x;
    }
    c->h1 = k22_arena_floats(ar, (size_t)B * co * So); // h1: (B, cout, OH, OW)
    k22_conv_forward_in(be, &r->conv1, c->h1, c->a1r, c->a1_16, B, OH, OW);
    c->ts = k22_arena_floats(ar, (size_t)B * 2 * co); // ts: (B, 2 cout)
    k22_linear_forward(be, &r->temb_proj, c->ts, temb_act, B);
    c->mean2 = k22_arena_floats(ar, (size_t)B * r->norm2.G);
    c->rstd2 = k22_arena_floats(ar, (size_t)B * r->norm2.G);
    if (r->act16)
        c->a2_16 = k22_arena_halves(ar, (size_t)B * co * So); // a2: (B, cout, OH, OW)
    else
        c->a2 = k22_arena_floats(ar, (size_t)B * co * So);
    k22_groupnorm_silu_forward_in(be, &r->norm2, c->a2, c->a2_16, c->mean2, c->rstd2, c->h1, c->ts, B, So);
    k22_conv_forward_in(be, &r->conv2, y, c->a2, c->a2_16, B, OH, OW); // y: (B, cout, OH, OW)
    if (!r->has_shortcut) { /* cin == cout */
        size_t top = k22_arena_mark(ar);
        const float *xr = c->xr;
        if (r->resample) {
            float *t = k22_arena_floats(ar, (size_t)B * co * So); // xr: (B, cout, OH, OW)
            resample_fwd(be, r->resample, t, x, B, ci, H, W);
            xr = t;
        }
        be->add(be->ctx, y, y, xr, (int64_t)B * co * So);
        k22_arena_reset(ar, top);
        return;
    }
    size_t top = k22_arena_mark(ar);
    float *sc = k22_arena_floats(ar, (size_t)B * co * So); // sc: (B, cout, OH, OW)
    k22_conv_forward(be, &r->shortcut, sc, c->xr, B, OH, OW);
    be->add(be->ctx, y, y, sc, (int64_t)B * co * So);
    k22_arena_reset(ar, top);
}

void k22_resnet_backward(const k22_backend *be, const k22_resnet *r, k22_arena *ar, float *dx,
                         float *dtemb_act, const float *dy, const float *temb_act, int B, int H,
                         int W, const k22_resnet_cache *c)
{
    int OH, OW, ci = r->cin, co = r->cout;
    out_hw(r, H, W, &OH, &OW);
    int64_t S = (int64_t)H * W, So = (int64_t)OH * OW, no = (int64_t)B * co * So;
    size_t top = k22_arena_mark(ar);
    /* gradient at the resampled input of the shortcut; x itself when nothing is resampled */
    float *dxr = r->resample ? k22_arena_zeros(ar, (size_t)B * ci * So) : dx;
    if (r->has_shortcut)
        k22_conv_backward(be, &r->shortcut, dxr, dy, c->xr, B, OH, OW);
    else
        be->add_bwd(be->ctx, dxr, NULL, dy, no);
    float *da2 = k22_arena_zeros(ar, (size_t)no);
    k22_conv_backward_in(be, &r->conv2, da2, dy, c->a2, c->a2_16, B, OH, OW);
    float *dts = k22_arena_zeros(ar, (size_t)B * 2 * co), *dh1 = k22_arena_zeros(ar, (size_t)no);
    k22_groupnorm_silu_backward(be, &r->norm2, dh1, dts, da2, c->h1, c->mean2, c->rstd2, c->ts, B, So);
    k22_linear_backward(be, &r->temb_proj, dtemb_act, dts, temb_act, B);
    float *da1r = k22_arena_zeros(ar, (size_t)B * ci * So);
    k22_conv_backward_in(be, &r->conv1, da1r, dh1, c->a1r, c->a1_16, B, OH, OW);
    float *da1 = da1r;
    if (r->resample) {
        da1 = k22_arena_zeros(ar, (size_t)B * ci * S);
        resample_bwd(be, r->resample, da1, da1r, B, ci, H, W);
    }
    k22_groupnorm_silu_backward(be, &r->norm1, dx, NULL, da1, c->x, c->mean1, c->rstd1, NULL, B, S);
    if (r->resample) resample_bwd(be, r->resample, dx, dxr, B, ci, H, W);
    k22_arena_reset(ar, top);
}
