/* movq.c: MoVQ (diffusers VQModel, norm_type "spatial"): binding by state-dict key, the encoder
 * and decoder walks, their arena sizes. Layers are in movq_blocks.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "movq_internal.h"

#define MV_EPS 1e-6f     /* every norm of the encoder and decoder */
#define MV_SN_GROUPS 32  /* SpatialNorm's GroupNorm has 32 groups whatever the config says */

k22_status k22_movq_config_check(const k22_movq_config *c, k22_err *err)
{
    if (c->nblocks < 1 || c->nblocks > K22_MAX_BLOCKS)
        return k22_err_set(err, K22_ERR_ARG, "movq: %d blocks (expected 1..%d)", c->nblocks, K22_MAX_BLOCKS);
    if (c->vq_embed_dim != c->latent_channels)
        return k22_err_set(err, K22_ERR_ARG, "movq: vq_embed_dim %d differs from latent_channels %d "
                           "(the spatial norms read the latents)", c->vq_embed_dim, c->latent_channels);
    for (int i = 0; i < c->nblocks; i++) {
        int ch = c->block_out_channels[i];
        if (ch <= 0 || ch % MV_SN_GROUPS || ch % c->norm_num_groups)
            return k22_err_set(err, K22_ERR_ARG, "movq: block_out_channels[%d] = %d is not a multiple "
                               "of SpatialNorm's %d groups and of norm_num_groups %d", i, ch,
                               MV_SN_GROUPS, c->norm_num_groups);
    }
    return K22_OK;
}

int k22_movq_factor(const k22_movq *m)
{
    return 1 << (m->cfg.nblocks - 1);
}

/* ---------------------------------------------------------------- binding */

typedef struct {
    const k22_params *ps;
    const float *P;
    int groups; /* the config's norm_num_groups */
} mv_bind;

static void bind_norm(const mv_bind *b, k22_movq_norm *n, const char *p, const char *name,
                      int spatial)
{
    char k[192];
    n->spatial = spatial;
    if (!spatial) {
        k22_groupnorm_bind(&n->gn, b->ps, k22_param_key(k, sizeof k, p, name), b->P, NULL, b->groups, MV_EPS);
        return;
    }
    char q[192];
    snprintf(q, sizeof q, "%s.%s", p, name);
    k22_groupnorm_bind(&n->sn.gn, b->ps, k22_param_key(k, sizeof k, q, "norm_layer"), b->P, NULL, MV_SN_GROUPS, MV_EPS);
    k22_conv_bind(&n->sn.y, b->ps, k22_param_key(k, sizeof k, q, "conv_y"), b->P, NULL, 1, 0);
    k22_conv_bind(&n->sn.b, b->ps, k22_param_key(k, sizeof k, q, "conv_b"), b->P, NULL, 1, 0);
}

static void bind_resnet(const mv_bind *b, k22_movq_resnet *r, const char *p, int spatial)
{
    char k[192];
    bind_norm(b, &r->n1, p, "norm1", spatial);
    bind_norm(b, &r->n2, p, "norm2", spatial);
    k22_conv_bind(&r->conv1, b->ps, k22_param_key(k, sizeof k, p, "conv1"), b->P, NULL, 1, 1);
    k22_conv_bind(&r->conv2, b->ps, k22_param_key(k, sizeof k, p, "conv2"), b->P, NULL, 1, 1);
    r->in = r->conv1.C;
    r->out = r->conv1.O;
    r->has_shortcut = k22_params_find(b->ps, k22_param_key(k, sizeof k, p, "conv_shortcut.weight")) != NULL;
    if (r->has_shortcut) k22_conv_bind(&r->shortcut, b->ps, k22_param_key(k, sizeof k, p, "conv_shortcut"), b->P, NULL, 1, 0);
}

static void bind_attn(const mv_bind *b, k22_movq_attn *a, const char *p, int spatial)
{
    char k[192];
    bind_norm(b, &a->norm, p, spatial ? "spatial_norm" : "group_norm", spatial);
    k22_linear_bind(&a->q, b->ps, k22_param_key(k, sizeof k, p, "to_q"), b->P, NULL);
    k22_linear_bind(&a->k, b->ps, k22_param_key(k, sizeof k, p, "to_k"), b->P, NULL);
    k22_linear_bind(&a->v, b->ps, k22_param_key(k, sizeof k, p, "to_v"), b->P, NULL);
    k22_linear_bind(&a->o, b->ps, k22_param_key(k, sizeof k, p, "to_out.0"), b->P, NULL);
    a->C = a->q.out;
}

/* A block "<p>.resnets.j" / "<p>.attentions.j" with nres resnets and nattn attentions. */
static void bind_block(const mv_bind *b, k22_movq_block *blk, const char *p, int nres, int nattn,
                       int spatial)
{
    char q[192];
    blk->nres = nres;
    blk->nattn = nattn;
    blk->res = k22_xcalloc((size_t)nres, sizeof *blk->res);
    blk->attn = k22_xcalloc(nattn ? (size_t)nattn : 1, sizeof *blk->attn);
    for (int j = 0; j < nres; j++) {
        snprintf(q, sizeof q, "%s.resnets.%d", p, j);
        bind_resnet(b, &blk->res[j], q, spatial);
    }
    for (int j = 0; j < nattn; j++) {
        snprintf(q, sizeof q, "%s.attentions.%d", p, j);
        bind_attn(b, &blk->attn[j], q, spatial);
    }
}

static void bind_encoder(const mv_bind *b, k22_movq *m)
{
    const k22_movq_config *c = &m->cfg;
    char p[128], k[192];
    k22_conv_bind(&m->enc_in, b->ps, "encoder.conv_in", b->P, NULL, 1, 1);
    for (int i = 0; i < c->nblocks; i++) {
        k22_movq_block *blk = &m->enc[i];
        int attn = !strcmp(c->down_block_types[i], "AttnDownEncoderBlock2D");
        snprintf(p, sizeof p, "encoder.down_blocks.%d", i);
        bind_block(b, blk, p, c->layers_per_block, attn ? c->layers_per_block : 0, 0);
        if (i == c->nblocks - 1) continue;
        blk->resample = -1;
        snprintf(p, sizeof p, "encoder.down_blocks.%d.downsamplers.0", i);
        k22_conv_bind(&blk->rconv, b->ps, k22_param_key(k, sizeof k, p, "conv"), b->P, NULL, 2, 0);
        k22_conv_set_padding(&blk->rconv, 0, 1, 0, 1);
    }
    bind_block(b, &m->enc_mid, "encoder.mid_block", 2, c->mid_block_add_attention ? 1 : 0, 0);
    k22_groupnorm_bind(&m->enc_norm_out, b->ps, "encoder.conv_norm_out", b->P, NULL, b->groups, MV_EPS);
    k22_conv_bind(&m->enc_out, b->ps, "encoder.conv_out", b->P, NULL, 1, 1);
}

static void bind_decoder(const mv_bind *b, k22_movq *m)
{
    const k22_movq_config *c = &m->cfg;
    char p[128], k[192];
    k22_conv_bind(&m->dec_in, b->ps, "decoder.conv_in", b->P, NULL, 1, 1);
    bind_block(b, &m->dec_mid, "decoder.mid_block", 2, c->mid_block_add_attention ? 1 : 0, 1);
    for (int i = 0; i < c->nblocks; i++) {
        k22_movq_block *blk = &m->dec[i];
        int attn = !strcmp(c->up_block_types[i], "AttnUpDecoderBlock2D");
        int n = c->layers_per_block + 1;
        snprintf(p, sizeof p, "decoder.up_blocks.%d", i);
        bind_block(b, blk, p, n, attn ? n : 0, 1);
        if (i == c->nblocks - 1) continue;
        blk->resample = 1;
        snprintf(p, sizeof p, "decoder.up_blocks.%d.upsamplers.0", i);
        k22_conv_bind(&blk->rconv, b->ps, k22_param_key(k, sizeof k, p, "conv"), b->P, NULL, 1, 1);
    }
    bind_norm(b, &m->dec_norm_out, "decoder", "conv_norm_out", 1);
    k22_conv_bind(&m->dec_out, b->ps, "decoder.conv_out", b->P, NULL, 1, 1);
}

void k22_movq_init(k22_movq *m, const k22_movq_config *cfg, const k22_params *ps, const float *P)
{
    k22_err err;
    if (k22_movq_config_check(cfg, &err)) K22_FATAL("%s", err.msg);
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    mv_bind b = {ps, P, cfg->norm_num_groups};
    bind_encoder(&b, m);
    k22_conv_bind(&m->quant, ps, "quant_conv", P, NULL, 1, 0);
    k22_conv_bind(&m->post_quant, ps, "post_quant_conv", P, NULL, 1, 0);
    bind_decoder(&b, m);
}

static void free_block(k22_movq_block *b)
{
    free(b->res);
    free(b->attn);
    b->res = NULL;
    b->attn = NULL;
}

void k22_movq_free(k22_movq *m)
{
    for (int i = 0; i < K22_MAX_BLOCKS; i++) free_block(&m->enc[i]), free_block(&m->dec[i]);
    free_block(&m->enc_mid);
    free_block(&m->dec_mid);
}

/* ---------------------------------------------------------------- the walks */

/* Runs a block from P[*cur], leaving its output in P[*cur]. Down/up blocks interleave resnet j
 * and attention j; the mid block is resnet 0, then each attention followed by the next resnet. */
static void walk_block(k22_mv_run *r, const k22_movq_block *b, float *const P[2], int *cur, int mid,
                       int *H, int *W)
{
    for (int j = 0; j < b->nres; j++) {
        if (mid && j > 0 && j - 1 < b->nattn) {
            k22_mv_attn(r, &b->attn[j - 1], P[!*cur], P[*cur], *H, *W);
            *cur = !*cur;
        }
        k22_mv_resnet(r, &b->res[j], P[!*cur], P[*cur], *H, *W);
        *cur = !*cur;
        if (!mid && j < b->nattn) {
            k22_mv_attn(r, &b->attn[j], P[!*cur], P[*cur], *H, *W);
            *cur = !*cur;
        }
    }
    if (b->resample) {
        k22_mv_resample(r, b, P[!*cur], P[*cur], H, W);
        *cur = !*cur;
    }
}

static void walk_encode(k22_mv_run *r, const k22_movq *m, float *const P[2], const float *x, int H,
                        int W, float *latents)
{
    int cur = 0;
    k22_mv_conv(r, &m->enc_in, P[0], x, H, W);
    for (int i = 0; i < m->cfg.nblocks; i++) walk_block(r, &m->enc[i], P, &cur, 0, &H, &W);
    walk_block(r, &m->enc_mid, P, &cur, 1, &H, &W);
    size_t mark = k22_mv_mark(r);
    int G = m->enc_norm_out.G, C = m->enc_norm_out.C;
    float *mean = k22_mv_alloc(r, (size_t)r->B * G), *rstd = k22_mv_alloc(r, (size_t)r->B * G);
    if (r->be) {
        k22_groupnorm_forward(r->be, &m->enc_norm_out, P[!cur], mean, rstd, P[cur], r->B, (int64_t)H * W);
        r->be->act_fwd(r->be->ctx, K22_ACT_SILU, P[!cur], P[!cur], (int64_t)r->B * C * H * W);
    }
    k22_mv_reset(r, mark);
    k22_mv_conv(r, &m->enc_out, P[cur], P[!cur], H, W); // (B, latent_channels, h, w)
    k22_mv_conv(r, &m->quant, latents, P[cur], H, W);   // (B, vq_embed_dim, h, w)
}

static void walk_decode(k22_mv_run *r, const k22_movq *m, float *const P[2], int h, int w,
                        float *image)
{
    int cur = 1, H = h, W = w;
    k22_mv_conv(r, &m->post_quant, P[0], r->z, H, W); // (B, latent_channels, h, w)
    k22_mv_conv(r, &m->dec_in, P[1], P[0], H, W);
    walk_block(r, &m->dec_mid, P, &cur, 1, &H, &W);
    for (int i = 0; i < m->cfg.nblocks; i++) walk_block(r, &m->dec[i], P, &cur, 0, &H, &W);
    k22_mv_norm(r, &m->dec_norm_out, P[!cur], P[cur], H, W);
    if (r->be)
        r->be->act_fwd(r->be->ctx, K22_ACT_SILU, P[!cur], P[!cur], (int64_t)r->B * m->dec_norm_out.sn.gn.C * H * W);
    k22_mv_conv(r, &m->dec_out, image, P[!cur], H, W);
}

/* Size pass: the largest feature map and the scratch peak above the two ping-pong buffers. */
static size_t encode_plan(const k22_movq *m, int B, int H, int W, size_t *maxact)
{
    float *const P[2] = {NULL, NULL};
    k22_mv_run r = {.B = B};
    walk_encode(&r, m, P, NULL, H, W, NULL);
    *maxact = r.maxact;
    return 2 * k22_arena_round(r.maxact) + r.peak;
}

static size_t decode_plan(const k22_movq *m, int B, int h, int w, size_t *maxact)
{
    float *const P[2] = {NULL, NULL};
    k22_mv_run r = {.B = B, .zc = m->cfg.latent_channels, .zh = h, .zw = w};
    walk_decode(&r, m, P, h, w, NULL);
    *maxact = r.maxact;
    return 2 * k22_arena_round(r.maxact) + r.peak;
}

size_t k22_movq_encode_arena_floats(const k22_movq *m, int B, int H, int W)
{
    size_t maxact;
    return encode_plan(m, B, H, W, &maxact);
}

size_t k22_movq_decode_arena_floats(const k22_movq *m, int B, int h, int w)
{
    size_t maxact;
    return decode_plan(m, B, h, w, &maxact);
}

void k22_movq_encode(const k22_backend *be, const k22_movq *m, k22_arena *ar, const float *x,
                     int B, int H, int W, float *latents)
{
    int f = k22_movq_factor(m);
    if (B < 1 || H < f || W < f || H % f || W % f)
        K22_FATAL("movq encode: image %dx%d (batch %d) is not a multiple of %d", H, W, B, f);
    size_t maxact, mark = k22_arena_mark(ar);
    encode_plan(m, B, H, W, &maxact);
    float *const P[2] = {k22_arena_floats(ar, maxact), k22_arena_floats(ar, maxact)};
    k22_mv_run r = {.be = be, .ar = ar, .B = B};
    walk_encode(&r, m, P, x, H, W, latents);
    k22_arena_reset(ar, mark);
}

void k22_movq_decode(const k22_backend *be, const k22_movq *m, k22_arena *ar, const float *z,
                     int B, int h, int w, float *image)
{
    if (B < 1 || h < 1 || w < 1) K22_FATAL("movq decode: latents %dx%d (batch %d)", h, w, B);
    if (!be->resize_nearest_fwd) K22_FATAL("movq decode: backend %s has no resize_nearest_fwd", be->name);
    size_t maxact, mark = k22_arena_mark(ar);
    decode_plan(m, B, h, w, &maxact);
    float *const P[2] = {k22_arena_floats(ar, maxact), k22_arena_floats(ar, maxact)};
    k22_mv_run r = {.be = be, .ar = ar, .B = B, .z = z, .zc = m->cfg.latent_channels, .zh = h, .zw = w};
    walk_decode(&r, m, P, h, w, image);
    k22_arena_reset(ar, mark);
}
