/* unet.c: UNet2DConditionModel (Kandinsky 2.2 decoder) as a list of steps: conv_in, the down
 * blocks (pushing skips), the mid block, the up blocks (concatenating skips), norm/silu/conv_out;
 * plus the time and image embeddings. Backward walks the steps in reverse (see unet.h). */
#include "k22/unet.h"

#include <stdint.h>
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

/* Closes the block (checkpointing segment) that ends at the current step. */
static void end_segment(unet_builder *b)
{
    b->m->seg[++b->m->nsegs] = b->m->nsteps;
}

static void add_step(unet_builder *b, int kind, int layer, int cin, int cout)
{
    k22_unet *m = b->m;
    if (m->nsteps == b->cap_steps)
        m->steps = k22_xgrow(m->steps, &b->cap_steps, 64, sizeof *m->steps, "the unet's step list");
    m->steps[m->nsteps++] = (k22_unet_step){kind, layer, cin, cout, b->level};
}

static int add_res(unet_builder *b, const char *name, int resample)
{
    k22_unet *m = b->m;
    k22_resnet *r = &m->res[m->nres];
    k22_resnet_bind(r, b->ps, name, b->P, b->G, m->cfg.norm_num_groups, m->cfg.norm_eps, resample);
    k22_grad_marks_key(&m->marks, b->ps, name, m->nsteps); /* keyed by its step */
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
    k22_grad_marks_key(&m->marks, b->ps, name, m->nsteps);
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

/* A checkpointed forward keeps a step's output when a skip is pushed from it (the up blocks
 * read it) or when it ends a block (the next block's input, or conv_norm_out's). */
static void mark_kept(k22_unet *m)
{
    m->keep = k22_xcalloc((size_t)m->nsteps, 1);
    for (int g = 0; g < m->nsegs; g++)
        for (int i = m->seg[g]; i < m->seg[g + 1]; i++) {
            if (m->steps[i].kind == K22_USTEP_PUSH) continue;
            int last = 1; /* no compute step after i in its block */
            for (int j = i + 1; j < m->seg[g + 1]; j++) last &= m->steps[j].kind == K22_USTEP_PUSH;
            m->keep[i] = last || m->steps[i + 1].kind == K22_USTEP_PUSH;
        }
}

static void bind_outer(k22_unet *m, const k22_params *ps, const float *P, float *G)
{
    const k22_unet_config *cfg = &m->cfg;
    k22_conv_bind(&m->conv_in, ps, "conv_in", P, G, 1, 1);
    k22_conv_bind(&m->conv_out, ps, "conv_out", P, G, 1, 1);
    k22_linear_bind(&m->time1, ps, "time_embedding.linear_1", P, G);
    k22_linear_bind(&m->time2, ps, "time_embedding.linear_2", P, G);
    k22_linear_bind(&m->tok_proj, ps, "encoder_hid_proj.image_embeds", P, G);
    k22_layernorm_bind(&m->tok_norm, ps, "encoder_hid_proj.norm", P, G, 1e-5f);
    k22_linear_bind(&m->time_img_proj, ps, "add_embedding.image_proj", P, G);
    k22_layernorm_bind(&m->time_img_norm, ps, "add_embedding.image_norm", P, G, 1e-5f);
    k22_groupnorm_bind(&m->norm_out, ps, "conv_norm_out", P, G, cfg->norm_num_groups, cfg->norm_eps);
}

void k22_unet_init(k22_unet *m, const k22_unet_config *cfg, const k22_params *ps, const float *P,
                   float *G)
{
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    m->TE = cfg->time_embedding_dim;
    m->L = K22_UNET_TOKENS;
    m->c0 = cfg->block_out_channels[0];
    if (P) bind_outer(m, ps, P, G);
    int n = cfg->nblocks, lp = cfg->layers_per_block;
    m->res = k22_xcalloc((size_t)(2 * n * (lp + 2) + 2), sizeof *m->res);
    m->attn = k22_xcalloc((size_t)(2 * n * (lp + 1) + 1), sizeof *m->attn);
    m->seg = k22_xcalloc((size_t)(2 * n + 2), sizeof *m->seg);
    unet_builder b = {.m = m, .ps = ps, .P = P, .G = G};
    k22_grad_marks_init(&m->marks, ps);
    add_push(&b, m->c0); /* conv_in's output, kept anyway: it is the first block's input */
    for (int i = 0; i < n; i++) {
        build_down(&b, i);
        end_segment(&b);
    }
    int ch = cfg->block_out_channels[n - 1];
    add_res(&b, "mid_block.resnets.0", K22_RESAMPLE_NONE);
    add_attn(&b, "mid_block.attentions.0", ch);
    add_res(&b, "mid_block.resnets.1", K22_RESAMPLE_NONE);
    end_segment(&b);
    int pushed = b.skips;
    for (int i = 0; i < n; i++) {
        build_up(&b, i, &ch);
        end_segment(&b);
    }
    if (b.skips != 0 || b.level != 0) K22_FATAL("unet: %d skips left, level %d", b.skips, b.level);
    m->nskips = pushed;
    m->skip = k22_xcalloc((size_t)pushed, sizeof *m->skip);
    m->dskip = k22_xcalloc((size_t)pushed, sizeof *m->dskip);
    m->st = k22_xcalloc((size_t)m->nsteps, sizeof *m->st);
    m->seg_in = k22_xcalloc((size_t)m->nsegs, sizeof *m->seg_in);
    mark_kept(m);
    /* the head's backward comes first; conv_in and the embeddings' last (no key) */
    k22_grad_marks_key(&m->marks, ps, "conv_norm_out", m->nsteps);
    k22_grad_marks_key(&m->marks, ps, "conv_out", m->nsteps);
    k22_grad_marks_finish(&m->marks, ps);
}

void k22_unet_free(k22_unet *m)
{
    free(m->res);
    free(m->attn);
    free(m->steps);
    free(m->skip);
    free(m->dskip);
    free(m->st);
    free(m->seg);
    free(m->keep);
    free(m->seg_in);
    k22_grad_marks_free(&m->marks);
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

/* What a training forward allocates outside the steps (embeddings, h0, the head's gact and
 * statistics); all of it lives until backward. */
static size_t outer_floats(const k22_unet *m, int B, int H, int W)
{
    size_t BTE = k22_arena_round((size_t)B * m->TE), Bk = k22_arena_round((size_t)B);
    size_t tok = k22_arena_round((size_t)B * m->L * m->cfg.cross_attention_dim);
    size_t tokb = k22_arena_round((size_t)B * m->L), Bg = k22_arena_round((size_t)B * m->cfg.norm_num_groups);
    size_t img = act_floats(B, m->c0, H, W, 0);
    size_t gact = m->act16 ? k22_arena_round_halves((size_t)B * m->c0 * H * W) : img;
    size_t n = k22_arena_round((size_t)B * m->c0) + 7 * BTE + 2 * Bk + 2 * tok + 2 * tokb;
    return n + img + gact + 2 * Bg; /* h0, gact, mean, rstd */
}

/* Backward's own buffers besides the steps' scratch (skip gradients, two ping-pong gradients,
 * embedding gradients), and the larger of the head's and the embeddings' scratch. */
static size_t bwd_fixed_floats(const k22_unet *m, int B, int H, int W, size_t *head)
{
    size_t BTE = k22_arena_round((size_t)B * m->TE);
    size_t tok = k22_arena_round((size_t)B * m->L * m->cfg.cross_attention_dim);
    size_t skips = 0, maxact = k22_arena_round(max_act(m, B, H, W));
    for (int i = 0; i < m->nsteps; i++) {
        const k22_unet_step *s = &m->steps[i];
        if (s->kind == K22_USTEP_PUSH) skips += act_floats(B, s->cout, H, W, s->level);
    }
    *head = 2 * act_floats(B, m->c0, H, W, 0) + 6 * BTE + 2 * tok;
    return skips + 2 * maxact + BTE + tok;
}

int k22_unet_block_checkpointed(const k22_unet *m, int g, int levels)
{
    K22_REQUIRE(g >= 0 && g < m->nsegs);
    return levels > 0 && m->steps[m->seg[g]].level < levels;
}

size_t k22_unet_saved_floats(const k22_unet *m, int B, int H, int W, int ckpt)
{
    size_t n = outer_floats(m, B, H, W);
    for (int g = 0; g < m->nsegs; g++)
        for (int i = m->seg[g]; i < m->seg[g + 1]; i++) {
            size_t o, c, f, b;
            step_floats(m, &m->steps[i], B, H, W, &o, &c, &f, &b);
            /* a checkpointed block: its skips and output only; else every output and cache */
            n += k22_unet_block_checkpointed(m, g, ckpt) ? (m->keep[i] ? o : 0) : o + c;
        }
    return n;
}

/* Training: the forward peak is, in a checkpointed block, its dropped outputs so far plus the
 * running layer's cache and temporaries, elsewhere the running layer's temporaries (its cache is
 * counted as kept); backward's, per block, the largest layer's backward scratch, on top of the
 * re-run forward's outputs and caches in a checkpointed block. */
static size_t arena_train(const k22_unet *m, int B, int H, int W, int ckpt)
{
    size_t fwd = 0, blk = 0, head;
    size_t fixed = bwd_fixed_floats(m, B, H, W, &head);
    for (int g = 0; g < m->nsegs; g++) {
        int ck = k22_unet_block_checkpointed(m, g, ckpt);
        size_t dropped = 0, rerun = 0, rerun_pk = 0, bwd_pk = 0;
        for (int i = m->seg[g]; i < m->seg[g + 1]; i++) {
            size_t o, c, f, b;
            step_floats(m, &m->steps[i], B, H, W, &o, &c, &f, &b);
            bwd_pk = b > bwd_pk ? b : bwd_pk;
            if (!ck) {
                fwd = f > fwd ? f : fwd;
                continue;
            }
            if (!m->keep[i]) dropped += o, rerun += o;
            fwd = dropped + c + f > fwd ? dropped + c + f : fwd;
            rerun += c;
            rerun_pk = rerun + f > rerun_pk ? rerun + f : rerun_pk;
        }
        if (ck) bwd_pk = rerun + bwd_pk > rerun_pk ? rerun + bwd_pk : rerun_pk;
        blk = bwd_pk > blk ? bwd_pk : blk;
    }
    size_t bwd = fixed + (blk > head ? blk : head);
    return k22_unet_saved_floats(m, B, H, W, ckpt) + (bwd > fwd ? bwd : fwd);
}

size_t k22_unet_arena_floats_ckpt(const k22_unet *m, int B, int H, int W, int train, int ckpt)
{
    if (train) return arena_train(m, B, H, W, ckpt);
    size_t n = outer_floats(m, B, H, W), fwd_peak = 0;
    for (int i = 0; i < m->nsteps; i++) {
        size_t o, c, f, b;
        step_floats(m, &m->steps[i], B, H, W, &o, &c, &f, &b);
        n += o;
        /* without train a layer's cache lives only while it runs */
        fwd_peak = c + f > fwd_peak ? c + f : fwd_peak;
    }
    return n + fwd_peak;
}

size_t k22_unet_arena_floats(const k22_unet *m, int B, int H, int W, int train)
{
    return k22_unet_arena_floats_ckpt(m, B, H, W, train, m->grad_ckpt);
}

int k22_unet_ckpt_candidate(const k22_unet *m, int k)
{
    return k >= m->cfg.nblocks ? K22_UNET_CKPT_ALL : k;
}

int k22_unet_ckpt_levels_fit(const k22_unet *m, int B, int H, int W, size_t budget_floats, int *fits)
{
    int n = m->cfg.nblocks, best = K22_UNET_CKPT_ALL;
    size_t least = SIZE_MAX;
    if (fits) *fits = 1;
    for (int k = 0; k <= n; k++) { /* re-run compute grows */
        int levels = k22_unet_ckpt_candidate(m, k);
        size_t a = k22_unet_arena_floats_ckpt(m, B, H, W, 1, levels);
        if (a <= budget_floats) return levels;
        if (a < least) least = a, best = levels;
    }
    if (fits) *fits = 0;
    return best;
}

void k22_unet_set_gradient_checkpointing(k22_unet *m, int on)
{
    m->grad_ckpt = on ? K22_UNET_CKPT_ALL : 0;
}

void k22_unet_set_act16(k22_unet *m, int on)
{
    m->act16 = on != 0;
    for (int i = 0; i < m->nres; i++) m->res[i].act16 = m->act16;
    for (int i = 0; i < m->nattn; i++) m->attn[i].act16 = m->act16;
}

void k22_unet_set_checkpoint_levels(k22_unet *m, int levels)
{
    K22_REQUIRE(levels >= 0);
    m->grad_ckpt = levels;
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

/* Floats of step s's output (RES, ATTN, CAT; 0 for PUSH). */
static size_t step_out_n(const k22_unet *m, const k22_unet_step *s)
{
    if (s->kind == K22_USTEP_PUSH) return 0;
    int lo = s->level;
    if (s->kind == K22_USTEP_RES) {
        int rs = m->res[s->layer].resample;
        lo += (rs == K22_RESAMPLE_DOWN) - (rs == K22_RESAMPLE_UP);
    }
    return (size_t)m->B * s->cout * (size_t)(m->H >> lo) * (size_t)(m->W >> lo);
}

/* How run_range treats outputs and caches: CACHE keeps both (training); NOGRAD drops each
 * layer's cache as it returns; CKPT also expects the kept outputs allocated by the caller;
 * RERUN (checkpointed backward) keeps caches and rewrites the kept outputs in place, with the
 * same values, as nothing reads them any more once their readers' backward is done. */
enum { RUN_CACHE, RUN_NOGRAD, RUN_CKPT, RUN_RERUN };

/* Runs steps [i0, i1) on input h; returns the last step's output. */
static const float *run_range(const k22_backend *be, k22_unet *m, k22_arena *ar, int i0, int i1,
                              const float *h, int mode)
{
    int B = m->B;
    for (int i = i0; i < i1; i++) {
        const k22_unet_step *s = &m->steps[i];
        k22_unet_step_state *t = &m->st[i];
        int H = m->H >> s->level, W = m->W >> s->level;
        if (s->kind == K22_USTEP_PUSH) {
            m->skip[s->layer] = h;
            continue;
        }
        if (!m->keep[i] || (mode != RUN_CKPT && mode != RUN_RERUN))
            t->out = k22_arena_floats(ar, step_out_n(m, s)); // (B, cout, H', W')
        size_t mk = k22_arena_mark(ar);
        if (s->kind == K22_USTEP_CAT)
            be->concat_fwd(be->ctx, t->out, h, m->skip[s->layer], B, s->cin, s->cout - s->cin,
                           (int64_t)H * W);
        else if (s->kind == K22_USTEP_RES)
            k22_resnet_forward(be, &m->res[s->layer], ar, t->out, h, m->emb_act, B, H, W, &t->c.res);
        else
            k22_unet_attn_forward(be, &m->attn[s->layer], ar, t->out, h, m->ehs, B, H * W, m->L,
                                  &t->c.attn);
        if (mode == RUN_NOGRAD || mode == RUN_CKPT) k22_arena_reset(ar, mk); /* drop the cache */
        h = t->out;
    }
    return h;
}

/* Checkpointed: per checkpointed block, its kept outputs first, then the rest in scratch
 * released at the block's end; the other blocks keep everything. */
static const float *run_ckpt(const k22_backend *be, k22_unet *m, k22_arena *ar, const float *h)
{
    for (int g = 0; g < m->nsegs; g++) {
        m->seg_in[g] = h;
        if (!k22_unet_block_checkpointed(m, g, m->ckpt)) {
            h = run_range(be, m, ar, m->seg[g], m->seg[g + 1], h, RUN_CACHE);
            continue;
        }
        for (int i = m->seg[g]; i < m->seg[g + 1]; i++)
            if (m->keep[i]) m->st[i].out = k22_arena_floats(ar, step_out_n(m, &m->steps[i]));
        size_t mk = k22_arena_mark(ar);
        h = run_range(be, m, ar, m->seg[g], m->seg[g + 1], h, RUN_CKPT);
        k22_arena_reset(ar, mk);
    }
    return h;
}

static void run_steps(const k22_backend *be, k22_unet *m, k22_arena *ar)
{
    if (m->ckpt)
        m->head_in = run_ckpt(be, m, ar, m->h0);
    else
        m->head_in = run_range(be, m, ar, 0, m->nsteps, m->h0, m->train ? RUN_CACHE : RUN_NOGRAD);
}

void k22_unet_forward(const k22_backend *be, k22_unet *m, k22_arena *ar, const float *x_t,
                      const float *t, const float *image_embeds, int B, int H, int W, float *out,
                      int train)
{
    int f = 1 << (m->cfg.nblocks - 1);
    K22_REQUIRE(m->conv_in.w); /* not a shapes-only model */
    K22_REQUIRE(B >= 1 && H > 0 && W > 0 && H % f == 0 && W % f == 0);
    size_t top = k22_arena_mark(ar);
    m->B = B, m->H = H, m->W = W, m->train = train, m->x_t = x_t, m->img = image_embeds;
    m->ckpt = train ? m->grad_ckpt : 0;
    embed(be, m, ar, t);
    int64_t S = (int64_t)H * W, G = m->norm_out.G;
    m->h0 = k22_arena_floats(ar, (size_t)B * m->c0 * S); // h0: (B, c0, H, W)
    k22_conv_forward(be, &m->conv_in, m->h0, x_t, B, H, W);
    run_steps(be, m, ar);
    const float *last = m->head_in;
    m->gmean = k22_arena_floats(ar, (size_t)B * G);
    m->grstd = k22_arena_floats(ar, (size_t)B * G);
    size_t nact = (size_t)B * m->c0 * S; // gact: silu(conv_norm_out(last)), 16 bits with act16
    m->gact = m->act16 ? NULL : k22_arena_floats(ar, nact);
    m->gact16 = m->act16 ? k22_arena_halves(ar, nact) : NULL;
    k22_groupnorm_silu_forward_in(be, &m->norm_out, m->gact, m->gact16, m->gmean, m->grstd, last, NULL, B, S);
    k22_conv_forward_in(be, &m->conv_out, out, m->gact, m->gact16, B, H, W); // out: (B, out_channels, H, W)
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

/* Reverse walk of steps [i0, i1): *dh is the gradient at the last step's output, and becomes
 * the gradient at the first one's input (the two buffers swap as it goes); dskip[k] collects
 * what the up path's concats send to skip k. */
static void backward_range(const k22_backend *be, k22_unet *m, k22_arena *ar, int i0, int i1,
                           float **dhp, float **dh2p, float *demb_act, float *dehs)
{
    int B = m->B;
    float *dh = *dhp, *dh2 = *dh2p;
    for (int i = i1 - 1; i >= i0; i--) {
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
        k22_grad_marks_reached(&m->marks, m->grad_hook, i);
        float *sw = dh;
        dh = dh2;
        dh2 = sw;
    }
    *dhp = dh, *dh2p = dh2;
}

/* All steps in reverse, block by block; checkpointed, each block's forward is re-run with its
 * caches just before its backward, and its scratch released after. Returns d(h0)'s buffer. */
static float *backward_steps(const k22_backend *be, k22_unet *m, k22_arena *ar, float *dh,
                             float *dh2, float *demb_act, float *dehs)
{
    for (int g = m->nsegs - 1; g >= 0; g--) {
        size_t mk = k22_arena_mark(ar);
        if (k22_unet_block_checkpointed(m, g, m->ckpt)) run_range(be, m, ar, m->seg[g], m->seg[g + 1], m->seg_in[g], RUN_RERUN);
        backward_range(be, m, ar, m->seg[g], m->seg[g + 1], &dh, &dh2, demb_act, dehs);
        k22_arena_reset(ar, mk);
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
    float *dact = k22_arena_zeros(ar, (size_t)nc0);
    k22_conv_backward_in(be, &m->conv_out, dact, dout, m->gact, m->gact16, B, H, W);
    k22_groupnorm_silu_backward(be, &m->norm_out, dh, NULL, dact, m->head_in, m->gmean, m->grstd, NULL, B, S);
    k22_grad_marks_reached(&m->marks, m->grad_hook, m->nsteps);
    k22_arena_reset(ar, head);
    float *dh0 = backward_steps(be, m, ar, dh, dh2, demb_act, dehs);
    if (dx_t || m->conv_in.dw) k22_conv_backward(be, &m->conv_in, dx_t, dh0, m->x_t, B, H, W);
    backward_embed(be, m, ar, demb_act, dehs);
    k22_arena_reset(ar, top);
}
