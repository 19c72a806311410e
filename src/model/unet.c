/* unet.c: UNet2DConditionModel (Kandinsky 2.2 decoder) as a list of steps: conv_in, the down
 * blocks (pushing skips), the mid block, the up blocks (concatenating skips), norm/silu/conv_out;
 * plus the time and image embeddings. Backward walks the steps in reverse (see unet.h). */
#include "k22/unet.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* diffusers' ImageProjection default: one image embedding becomes 32 tokens. */
#define K22_UNET_TOKENS 32

typedef struct {
    k22_unet *m;
    const k22_params *ps;
    const float *P;
    float *G;
    int level, skips, cap_steps;
} unet_builder;

static void add_step(unet_builder *b, int kind, int layer, int cin, int cout)
{
    k22_unet *m = b->m;
    if (m->nsteps == b->cap_steps) {
        b->cap_steps = b->cap_steps ? 2 * b->cap_steps : 64;
        m->steps = realloc(m->steps, (size_t)b->cap_steps * sizeof *m->steps);
        if (!m->steps) K22_FATAL("unet: out of memory for the step list");
    }
    m->steps[m->nsteps++] = (k22_unet_step){kind, layer, cin, cout, b->level};
}

static int add_res(unet_builder *b, const char *name, int resample)
{
    k22_unet *m = b->m;
    k22_resnet *r = &m->res[m->nres];
    k22_resnet_bind(r, b->ps, name, b->P, b->G, m->cfg.norm_num_groups, m->cfg.norm_eps, resample);
    add_step(b, K22_USTEP_RES, m->nres++, r->cin, r->cout);
    if (resample == K22_RESAMPLE_DOWN) b->level++;
    if (resample == K22_RESAMPLE_UP) b->level--;
    return r->cout;
}

static void add_attn(unet_builder *b, const char *name, int c)
{
    k22_unet *m = b->m;
    k22_unet_attn_bind(&m->attn[m->nattn], b->ps, name, b->P, b->G, m->cfg.attention_head_dim,
                       m->cfg.norm_num_groups, 1e-5f);
    add_step(b, K22_USTEP_ATTN, m->nattn++, c, c);
}

static void add_push(unet_builder *b, int c) { add_step(b, K22_USTEP_PUSH, b->skips++, c, c); }

static int is_attn_block(const char *type)
{
    return !strncmp(type, "SimpleCrossAttn", 15);
}

static void build_down(unet_builder *b, int i)
{
    const k22_unet_config *c = &b->m->cfg;
    int attn = is_attn_block(c->down_block_types[i]), ch = 0;
    char p[96];
    for (int j = 0; j < c->layers_per_block; j++) {
        snprintf(p, sizeof p, "down_blocks.%d.resnets.%d", i, j);
        ch = add_res(b, p, K22_RESAMPLE_NONE);
        if (attn) {
            snprintf(p, sizeof p, "down_blocks.%d.attentions.%d", i, j);
            add_attn(b, p, ch);
        }
        add_push(b, ch);
    }
    if (i == c->nblocks - 1) return;
    snprintf(p, sizeof p, "down_blocks.%d.downsamplers.0", i);
    add_push(b, add_res(b, p, K22_RESAMPLE_DOWN));
}

static void build_up(unet_builder *b, int i, int *ch)
{
    const k22_unet_config *c = &b->m->cfg;
    int attn = is_attn_block(c->up_block_types[i]);
    char p[96];
    for (int j = 0; j <= c->layers_per_block; j++) {
        k22_unet_step *pushed = NULL;
        /* the skip popped is the last pushed one not yet consumed */
        int k = --b->skips;
        for (int s = 0; s < b->m->nsteps; s++)
            if (b->m->steps[s].kind == K22_USTEP_PUSH && b->m->steps[s].layer == k) pushed = &b->m->steps[s];
        int cs = pushed->cout;
        add_step(b, K22_USTEP_CAT, k, *ch, *ch + cs);
        snprintf(p, sizeof p, "up_blocks.%d.resnets.%d", i, j);
        *ch = add_res(b, p, K22_RESAMPLE_NONE);
        if (attn) {
            snprintf(p, sizeof p, "up_blocks.%d.attentions.%d", i, j);
            add_attn(b, p, *ch);
        }
    }
    if (i == c->nblocks - 1) return;
    snprintf(p, sizeof p, "up_blocks.%d.upsamplers.0", i);
    *ch = add_res(b, p, K22_RESAMPLE_UP);
}

void k22_unet_init(k22_unet *m, const k22_unet_config *cfg, const k22_params *ps, const float *P,
                   float *G)
{
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    m->TE = cfg->time_embedding_dim;
    m->L = K22_UNET_TOKENS;
    m->c0 = cfg->block_out_channels[0];
    k22_conv_bind(&m->conv_in, ps, "conv_in", P, G, 1, 1);
    k22_conv_bind(&m->conv_out, ps, "conv_out", P, G, 1, 1);
    k22_linear_bind(&m->time1, ps, "time_embedding.linear_1", P, G);
    k22_linear_bind(&m->time2, ps, "time_embedding.linear_2", P, G);
    k22_linear_bind(&m->tok_proj, ps, "encoder_hid_proj.image_embeds", P, G);
    k22_layernorm_bind(&m->tok_norm, ps, "encoder_hid_proj.norm", P, G, 1e-5f);
    k22_linear_bind(&m->time_img_proj, ps, "add_embedding.image_proj", P, G);
    k22_layernorm_bind(&m->time_img_norm, ps, "add_embedding.image_norm", P, G, 1e-5f);
    k22_groupnorm_bind(&m->norm_out, ps, "conv_norm_out", P, G, cfg->norm_num_groups, cfg->norm_eps);
    int n = cfg->nblocks, lp = cfg->layers_per_block;
    m->res = k22_xcalloc((size_t)(2 * n * (lp + 2) + 2), sizeof *m->res);
    m->attn = k22_xcalloc((size_t)(2 * n * (lp + 1) + 1), sizeof *m->attn);
    unet_builder b = {.m = m, .ps = ps, .P = P, .G = G};
    add_push(&b, m->c0); /* conv_in's output */
    for (int i = 0; i < n; i++) build_down(&b, i);
    int ch = cfg->block_out_channels[n - 1];
    add_res(&b, "mid_block.resnets.0", K22_RESAMPLE_NONE);
    add_attn(&b, "mid_block.attentions.0", ch);
    add_res(&b, "mid_block.resnets.1", K22_RESAMPLE_NONE);
    int pushed = b.skips;
    for (int i = 0; i < n; i++) build_up(&b, i, &ch);
    if (b.skips != 0 || b.level != 0) K22_FATAL("unet: %d skips left, level %d", b.skips, b.level);
    m->nskips = pushed;
    m->skip = k22_xcalloc((size_t)pushed, sizeof *m->skip);
    m->dskip = k22_xcalloc((size_t)pushed, sizeof *m->dskip);
    m->st = k22_xcalloc((size_t)m->nsteps, sizeof *m->st);
}

void k22_unet_free(k22_unet *m)
{
    free(m->res);
    free(m->attn);
    free(m->steps);
    free(m->skip);
    free(m->dskip);
    free(m->st);
    memset(m, 0, sizeof *m);
}

static size_t act_floats(int B, int C, int H, int W, int level)
{
    return k22_arena_round((size_t)B * C * (size_t)(H >> level) * (size_t)(W >> level));
}

/* Output, cache, forward-temporary and backward-scratch floats of step s. */
static void step_floats(const k22_unet *m, const k22_unet_step *s, int B, int H, int W,
                        size_t *out, size_t *cache, size_t *fwd, size_t *bwd)
{
    int h = H >> s->level, w = W >> s->level;
    *out = *cache = *fwd = *bwd = 0;
    if (s->kind == K22_USTEP_RES) {
        const k22_resnet *r = &m->res[s->layer];
        int lo = s->level + (r->resample == K22_RESAMPLE_DOWN) - (r->resample == K22_RESAMPLE_UP);
        *out = act_floats(B, s->cout, H, W, lo);
        *cache = k22_resnet_cache_floats(r, B, h, w);
        *fwd = k22_resnet_fwd_floats(r, B, h, w);
        *bwd = k22_resnet_bwd_floats(r, B, h, w);
    } else if (s->kind == K22_USTEP_ATTN) {
        const k22_unet_attn *a = &m->attn[s->layer];
        *out = act_floats(B, s->cout, H, W, s->level);
        *cache = k22_unet_attn_cache_floats(a, B, h * w, m->L);
        *fwd = k22_unet_attn_fwd_floats(a, B, h * w, m->L);
        *bwd = k22_unet_attn_bwd_floats(a, B, h * w, m->L);
    } else if (s->kind == K22_USTEP_CAT) {
        *out = act_floats(B, s->cout, H, W, s->level);
    }
}

/* Floats of the largest activation any step reads or writes (the gradient ping-pong size). */
static size_t max_act(const k22_unet *m, int B, int H, int W)
{
    size_t mx = (size_t)B * m->c0 * H * W;
    for (int i = 0; i < m->nsteps; i++) {
        const k22_unet_step *s = &m->steps[i];
        int lo = s->level;
        if (s->kind == K22_USTEP_RES && m->res[s->layer].resample == K22_RESAMPLE_UP) lo--;
        size_t c = (size_t)(s->cin > s->cout ? s->cin : s->cout);
        size_t a = (size_t)B * c * (size_t)(H >> lo) * (size_t)(W >> lo);
        mx = a > mx ? a : mx;
    }
    return mx;
}

size_t k22_unet_arena_floats(const k22_unet *m, int B, int H, int W, int train)
{
    size_t BTE = k22_arena_round((size_t)B * m->TE), Bk = k22_arena_round((size_t)B);
    size_t tok = k22_arena_round((size_t)B * m->L * m->cfg.cross_attention_dim);
    size_t tokb = k22_arena_round((size_t)B * m->L), Bg = k22_arena_round((size_t)B * m->cfg.norm_num_groups);
    size_t img = act_floats(B, m->c0, H, W, 0);
    size_t n = k22_arena_round((size_t)B * m->c0) + 7 * BTE + 2 * Bk + 2 * tok + 2 * tokb;
    n += 3 * img + 2 * Bg; /* h0, gno, gact, mean, rstd */
    size_t fwd_peak = 0, bwd_peak = 0, skips = 0, caches = 0, maxact = k22_arena_round(max_act(m, B, H, W));
    for (int i = 0; i < m->nsteps; i++) {
        const k22_unet_step *s = &m->steps[i];
        size_t o, c, f, b;
        step_floats(m, s, B, H, W, &o, &c, &f, &b);
        n += o;
        caches += c;
        /* without train a layer's cache lives only while it runs */
        size_t live = train ? f : c + f;
        fwd_peak = live > fwd_peak ? live : fwd_peak;
        bwd_peak = b > bwd_peak ? b : bwd_peak;
        if (s->kind == K22_USTEP_PUSH) skips += act_floats(B, s->cout, H, W, s->level);
    }
    if (!train) return n + fwd_peak;
    n += caches;
    /* backward: skip gradients, two ping-pong gradients, embedding grads, head scratch */
    size_t head = 2 * img + 6 * BTE + 2 * tok;
    size_t bwd = skips + 2 * maxact + 2 * BTE + tok + (bwd_peak > head ? bwd_peak : head);
    return n + (bwd > fwd_peak ? bwd : fwd_peak);
}

/* emb_act (B, TE) = silu(time_embedding(time_proj(t)) + LN(image_proj(img))), and the image
 * tokens ehs (B, 32, cross) = LN(image_embeds(img)). */
static void embed(const k22_backend *be, k22_unet *m, k22_arena *ar, const float *t)
{
    int B = m->B, TE = m->TE, L = m->L, X = m->cfg.cross_attention_dim;
    m->tproj = k22_arena_floats(ar, (size_t)B * m->c0); // tproj: (B, c0)
    be->timestep_embed_fwd(be->ctx, m->tproj, t, B, m->c0, m->cfg.flip_sin_to_cos,
                           m->cfg.freq_shift, 1.0f, 10000.0f);
    m->th = k22_arena_floats(ar, (size_t)B * TE);  // th: (B, TE)
    k22_linear_forward(be, &m->time1, m->th, m->tproj, B);
    m->tact = k22_arena_floats(ar, (size_t)B * TE);
    be->act_fwd(be->ctx, K22_ACT_SILU, m->tact, m->th, (int64_t)B * TE);
    m->temb = k22_arena_floats(ar, (size_t)B * TE);
    k22_linear_forward(be, &m->time2, m->temb, m->tact, B);
    m->ip = k22_arena_floats(ar, (size_t)B * TE);
    k22_linear_forward(be, &m->time_img_proj, m->ip, m->img, B);
    m->ipn = k22_arena_floats(ar, (size_t)B * TE);
    m->ipmean = k22_arena_floats(ar, (size_t)B);
    m->iprstd = k22_arena_floats(ar, (size_t)B);
    k22_layernorm_forward(be, &m->time_img_norm, m->ipn, m->ipmean, m->iprstd, m->ip, B);
    m->emb = k22_arena_floats(ar, (size_t)B * TE);
    be->add(be->ctx, m->emb, m->temb, m->ipn, (int64_t)B * TE);
    m->emb_act = k22_arena_floats(ar, (size_t)B * TE); // emb_act: (B, TE) every resnet's input
    be->act_fwd(be->ctx, K22_ACT_SILU, m->emb_act, m->emb, (int64_t)B * TE);
    m->tokraw = k22_arena_floats(ar, (size_t)B * L * X); // tokraw: (B, 32, cross)
    k22_linear_forward(be, &m->tok_proj, m->tokraw, m->img, B);
    m->ehs = k22_arena_floats(ar, (size_t)B * L * X);    // ehs: (B, 32, cross)
    m->tokmean = k22_arena_floats(ar, (size_t)B * L);
    m->tokrstd = k22_arena_floats(ar, (size_t)B * L);
    k22_layernorm_forward(be, &m->tok_norm, m->ehs, m->tokmean, m->tokrstd, m->tokraw, B * L);
}

static void run_steps(const k22_backend *be, k22_unet *m, k22_arena *ar)
{
    int B = m->B;
    const float *h = m->h0;
    for (int i = 0; i < m->nsteps; i++) {
        const k22_unet_step *s = &m->steps[i];
        k22_unet_step_state *t = &m->st[i];
        int H = m->H >> s->level, W = m->W >> s->level;
        if (s->kind == K22_USTEP_PUSH) {
            m->skip[s->layer] = h;
            continue;
        }
        if (s->kind == K22_USTEP_CAT) {
            t->out = k22_arena_floats(ar, (size_t)B * s->cout * H * W); // (B, cin + cskip, H, W)
            be->concat_fwd(be->ctx, t->out, h, m->skip[s->layer], B, s->cin, s->cout - s->cin,
                           (int64_t)H * W);
        } else if (s->kind == K22_USTEP_RES) {
            const k22_resnet *r = &m->res[s->layer];
            int f = r->resample == K22_RESAMPLE_DOWN ? -1 : r->resample == K22_RESAMPLE_UP ? 1 : 0;
            int OH = f < 0 ? H / 2 : f > 0 ? 2 * H : H, OW = f < 0 ? W / 2 : f > 0 ? 2 * W : W;
            t->out = k22_arena_floats(ar, (size_t)B * s->cout * OH * OW);
            size_t mk = k22_arena_mark(ar);
            k22_resnet_forward(be, r, ar, t->out, h, m->emb_act, B, H, W, &t->c.res);
            if (!m->train) k22_arena_reset(ar, mk); /* no backward: drop the cache */
        } else {
            t->out = k22_arena_floats(ar, (size_t)B * s->cout * H * W);
            size_t mk = k22_arena_mark(ar);
            k22_unet_attn_forward(be, &m->attn[s->layer], ar, t->out, h, m->ehs, B, H * W, m->L,
                                  &t->c.attn);
            if (!m->train) k22_arena_reset(ar, mk);
        }
        h = t->out;
    }
    m->head_in = h;
}

void k22_unet_forward(const k22_backend *be, k22_unet *m, k22_arena *ar, const float *x_t,
                      const float *t, const float *image_embeds, int B, int H, int W, float *out,
                      int train)
{
    int f = 1 << (m->cfg.nblocks - 1);
    K22_REQUIRE(B >= 1 && H > 0 && W > 0 && H % f == 0 && W % f == 0);
    size_t top = k22_arena_mark(ar);
    m->B = B, m->H = H, m->W = W, m->train = train, m->x_t = x_t, m->img = image_embeds;
    embed(be, m, ar, t);
    int64_t S = (int64_t)H * W, G = m->norm_out.G;
    m->h0 = k22_arena_floats(ar, (size_t)B * m->c0 * S); // h0: (B, c0, H, W)
    k22_conv_forward(be, &m->conv_in, m->h0, x_t, B, H, W);
    run_steps(be, m, ar);
    const float *last = m->head_in;
    m->gno = k22_arena_floats(ar, (size_t)B * m->c0 * S); // gno: (B, c0, H, W)
    m->gmean = k22_arena_floats(ar, (size_t)B * G);
    m->grstd = k22_arena_floats(ar, (size_t)B * G);
    k22_groupnorm_forward(be, &m->norm_out, m->gno, m->gmean, m->grstd, last, B, S);
    m->gact = k22_arena_floats(ar, (size_t)B * m->c0 * S);
    be->act_fwd(be->ctx, K22_ACT_SILU, m->gact, m->gno, (int64_t)B * m->c0 * S);
    k22_conv_forward(be, &m->conv_out, out, m->gact, B, H, W); // out: (B, out_channels, H, W)
    if (!train) k22_arena_reset(ar, top);
}

/* The embeddings' backward from demb_act (B, TE) and dehs (B, 32, cross). */
static void backward_embed(const k22_backend *be, k22_unet *m, k22_arena *ar, const float *demb_act,
                           const float *dehs)
{
    int B = m->B, TE = m->TE, L = m->L, X = m->cfg.cross_attention_dim;
    size_t top = k22_arena_mark(ar);
    float *demb = k22_arena_zeros(ar, (size_t)B * TE);
    be->act_bwd(be->ctx, K22_ACT_SILU, demb, demb_act, m->emb, (int64_t)B * TE);
    float *dip = k22_arena_zeros(ar, (size_t)B * TE);
    k22_layernorm_backward(be, &m->time_img_norm, dip, demb, m->ip, m->ipmean, m->iprstd, B);
    k22_linear_backward(be, &m->time_img_proj, NULL, dip, m->img, B);
    float *dtact = k22_arena_zeros(ar, (size_t)B * TE);
    k22_linear_backward(be, &m->time2, dtact, demb, m->tact, B);
    float *dth = k22_arena_zeros(ar, (size_t)B * TE);
    be->act_bwd(be->ctx, K22_ACT_SILU, dth, dtact, m->th, (int64_t)B * TE);
    k22_linear_backward(be, &m->time1, NULL, dth, m->tproj, B);
    float *dtok = k22_arena_zeros(ar, (size_t)B * L * X);
    k22_layernorm_backward(be, &m->tok_norm, dtok, dehs, m->tokraw, m->tokmean, m->tokrstd, B * L);
    k22_linear_backward(be, &m->tok_proj, NULL, dtok, m->img, B);
    k22_arena_reset(ar, top);
}

/* Reverse walk of the steps: dh is the gradient at the current step's output, and becomes the
 * gradient at its input; dskip[k] collects what the up path's concats send to skip k. Returns
 * the buffer holding d(h0). */
static float *backward_steps(const k22_backend *be, k22_unet *m, k22_arena *ar, float *dh,
                             float *dh2, float *demb_act, float *dehs)
{
    int B = m->B;
    for (int i = m->nsteps - 1; i >= 0; i--) {
        const k22_unet_step *s = &m->steps[i];
        const k22_unet_step_state *t = &m->st[i];
        int H = m->H >> s->level, W = m->W >> s->level;
        size_t nin = (size_t)B * s->cin * H * W;
        if (s->kind == K22_USTEP_PUSH) {
            be->add(be->ctx, dh, dh, m->dskip[s->layer], (int64_t)nin);
            continue;
        }
        be->zero(be->ctx, dh2, nin * sizeof(float));
        if (s->kind == K22_USTEP_CAT)
            be->concat_bwd(be->ctx, dh2, m->dskip[s->layer], dh, B, s->cin, s->cout - s->cin,
                           (int64_t)H * W);
        else if (s->kind == K22_USTEP_RES)
            k22_resnet_backward(be, &m->res[s->layer], ar, dh2, demb_act, dh, m->emb_act, B, H, W,
                                &t->c.res);
        else
            k22_unet_attn_backward(be, &m->attn[s->layer], ar, dh2, dehs, dh, m->ehs, B, H * W,
                                   m->L, &t->c.attn);
        float *sw = dh;
        dh = dh2;
        dh2 = sw;
    }
    return dh;
}

void k22_unet_backward(const k22_backend *be, k22_unet *m, k22_arena *ar, const float *dout,
                       float *dx_t)
{
    K22_REQUIRE(m->train);
    int B = m->B, H = m->H, W = m->W, L = m->L, X = m->cfg.cross_attention_dim;
    int64_t S = (int64_t)H * W, nc0 = (int64_t)B * m->c0 * S;
    size_t top = k22_arena_mark(ar), maxact = max_act(m, B, H, W);
    for (int i = 0; i < m->nsteps; i++) {
        const k22_unet_step *s = &m->steps[i];
        if (s->kind != K22_USTEP_PUSH) continue;
        m->dskip[s->layer] = k22_arena_zeros(ar, (size_t)B * s->cout * (size_t)(H >> s->level) *
                                                  (size_t)(W >> s->level));
    }
    float *dh = k22_arena_zeros(ar, maxact), *dh2 = k22_arena_floats(ar, maxact);
    float *demb_act = k22_arena_zeros(ar, (size_t)B * m->TE);
    float *dehs = k22_arena_zeros(ar, (size_t)B * L * X);
    size_t head = k22_arena_mark(ar);
    float *dact = k22_arena_zeros(ar, (size_t)nc0), *dgno = k22_arena_zeros(ar, (size_t)nc0);
    k22_conv_backward(be, &m->conv_out, dact, dout, m->gact, B, H, W);
    be->act_bwd(be->ctx, K22_ACT_SILU, dgno, dact, m->gno, nc0);
    k22_groupnorm_backward(be, &m->norm_out, dh, dgno, m->head_in, m->gmean, m->grstd, B, S);
    k22_arena_reset(ar, head);
    float *dh0 = backward_steps(be, m, ar, dh, dh2, demb_act, dehs);
    if (dx_t || m->conv_in.dw) k22_conv_backward(be, &m->conv_in, dx_t, dh0, m->x_t, B, H, W);
    backward_embed(be, m, ar, demb_act, dehs);
    k22_arena_reset(ar, top);
}
