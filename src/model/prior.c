/* prior.c: PriorTransformer forward and its hand-written backward (see prior.h). */
#include "k22/prior.h"

#include "params_util.h" /* K22_PARAM_STACK_ALIGN */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Whether the blocks run q, k, v as one GEMM: the table stacks them (params_prior.c) without
 * gaps when the width is a multiple of the stacking alignment, and K22_QKV_STACK allows it. */
static int prior_stacked(const k22_prior_config *c)
{
    int D = c->num_attention_heads * c->attention_head_dim;
    return D % K22_PARAM_STACK_ALIGN == 0 && k22_qkv_stack_env();
}

void k22_prior_init(k22_prior *m, const k22_prior_config *cfg, const k22_params *ps,
                    const float *P, float *G, int max_batch)
{
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    m->D = cfg->num_attention_heads * cfg->attention_head_dim;
    m->L = cfg->num_embeddings;
    m->T = cfg->num_embeddings + cfg->additional_embeddings;
    m->TE = cfg->time_embed_dim;
    /* The extra tokens are exactly proj, time, x_t and prd (added_emb_type "prd"). */
    if (cfg->additional_embeddings != 4)
        K22_FATAL("prior: additional_embeddings %d passed the config reader", cfg->additional_embeddings);
    m->pos = k22_param_ptr(ps, (float *)P, "positional_embedding");
    m->prd = k22_param_ptr(ps, (float *)P, "prd_embedding");
    m->dpos = k22_param_ptr(ps, G, "positional_embedding");
    m->dprd = k22_param_ptr(ps, G, "prd_embedding");
    k22_linear_bind(&m->time1, ps, "time_embedding.linear_1", P, G);
    k22_linear_bind(&m->time2, ps, "time_embedding.linear_2", P, G);
    k22_linear_bind(&m->proj_in, ps, "proj_in", P, G);
    k22_linear_bind(&m->emb_proj, ps, "embedding_proj", P, G);
    k22_linear_bind(&m->ehs_proj, ps, "encoder_hidden_states_proj", P, G);
    k22_linear_bind(&m->proj_out, ps, "proj_to_clip_embeddings", P, G);
    k22_layernorm_bind(&m->norm_out, ps, "norm_out", P, G, 1e-5f);
    int nl = cfg->num_layers;
    m->blocks = k22_xcalloc((size_t)nl + 1, sizeof *m->blocks);
    for (int l = 0; l < nl; l++) {
        char p[64];
        snprintf(p, sizeof p, "transformer_blocks.%d", l);
        k22_block_bind(&m->blocks[l], ps, p, &k22_block_names_basic, P, G,
                       cfg->num_attention_heads, K22_ACT_GELU, 1e-5f);
        if (m->blocks[l].attn.stacked != prior_stacked(cfg)) /* the sizes assume it */
            K22_FATAL("prior block %d: q, k, v stacked %d, expected %d", l,
                      m->blocks[l].attn.stacked, prior_stacked(cfg));
    }
    if (G) k22_prior_grad_marks(&m->marks, ps, nl);
    m->max_batch = max_batch;
    m->mask_host = k22_xmalloc((size_t)max_batch * m->T * m->T * sizeof(float));
    m->st.h = k22_xcalloc((size_t)nl + 1, sizeof *m->st.h);
    m->st.blk = k22_xcalloc((size_t)nl + 1, sizeof *m->st.blk);
}

void k22_prior_grad_marks(k22_grad_marks *gm, const k22_params *ps, int num_layers)
{
    k22_grad_marks_init(gm, ps);
    for (int l = 0; l < num_layers; l++) {
        char p[64];
        snprintf(p, sizeof p, "transformer_blocks.%d", l);
        k22_grad_marks_key(gm, ps, p, l);
    }
    /* the head's backward comes first; the embeddings' last (no key) */
    k22_grad_marks_key(gm, ps, "norm_out", num_layers);
    k22_grad_marks_key(gm, ps, "proj_to_clip_embeddings", num_layers);
    k22_grad_marks_finish(gm, ps);
}

void k22_prior_free(k22_prior *m)
{
    free(m->blocks);
    free(m->mask_host);
    free(m->st.h);
    free(m->st.blk);
    k22_grad_marks_free(&m->marks);
    memset(m, 0, sizeof *m);
}

void k22_prior_set_gradient_checkpointing(k22_prior *m, int on)
{
    m->grad_ckpt = on != 0;
}

void k22_prior_set_act16(k22_prior *m, int on)
{
    m->act16 = on != 0;
    for (int l = 0; l < m->cfg.num_layers; l++) k22_block_set_act16(&m->blocks[l], m->act16);
}

/* Arena sizes of one batch, each rounded to the allocation granule. */
typedef struct {
    size_t BD, BTD, BTE, BLD, mask, B1;
    size_t cache, nograd, bwd; /* one block: cache kept, no-grad forward peak, backward scratch */
    size_t proj;               /* one cached block's q, k, v projection scratch */
    int nl;
} prior_sizes;

static prior_sizes prior_sizes_of(const k22_prior_config *c, int B, int act16)
{
    prior_sizes z;
    int D = c->num_attention_heads * c->attention_head_dim, H = c->num_attention_heads;
    int T = c->num_embeddings + c->additional_embeddings, F = 4 * D;
    z.BD = k22_arena_round((size_t)B * D);
    z.BTD = k22_arena_round((size_t)B * T * D);
    z.BTE = k22_arena_round((size_t)B * c->time_embed_dim);
    z.BLD = k22_arena_round((size_t)B * c->num_embeddings * D);
    z.mask = k22_arena_round((size_t)B * T * T);
    z.B1 = k22_arena_round((size_t)B);
    int st = prior_stacked(c);
    z.cache = k22_block_cache_floats(B, T, D, F, H, act16, st);
    z.nograd = k22_block_nograd_floats(B, T, D, F, H, act16, st);
    z.bwd = k22_block_bwd_floats(B, T, D, F, H, st);
    z.proj = k22_mha_proj_floats(B, T, D, act16, st);
    z.nl = c->num_layers;
    return z;
}

/* What a forward allocates outside the blocks: the mask, the embeddings (tproj, temb, pe,
 * xin; th, tact; ehs) and last, normed, mean, rstd; all of it lives until backward. */
static size_t outer_floats(const prior_sizes *z)
{
    return 4 * z->BD + 2 * z->BTE + z->BLD + z->mask + 2 * z->BD + 2 * z->B1;
}

static size_t max_size(size_t a, size_t b)
{
    return a > b ? a : b;
}

size_t k22_prior_saved_floats_cfg(const k22_prior_config *cfg, int B, int ckpt, int act16)
{
    prior_sizes z = prior_sizes_of(cfg, B, act16);
    /* h[0..nl]: the embeddings and every block's output; without checkpointing every block's
     * cache too, which is what checkpointing drops. */
    size_t n = outer_floats(&z) + (size_t)(z.nl + 1) * z.BTD;
    return ckpt ? n : n + (size_t)z.nl * z.cache;
}

size_t k22_prior_arena_floats_cfg(const k22_prior_config *cfg, int B, int train, int ckpt, int act16)
{
    prior_sizes z = prior_sizes_of(cfg, B, act16);
    if (!train) return outer_floats(&z) + 2 * z.BTD + z.nograd;
    /* Forward peak over what is kept: a cached block's q/k/v projection scratch, or a
     * whole no-grad block when checkpointed. Backward: dnormed, dlast, dh, dh2, then per block
     * its scratch (and, checkpointed, the cache its recomputed forward fills), or the input
     * embeddings' backward. */
    size_t fwd = ckpt ? z.nograd : z.proj;
    size_t blk = ckpt ? z.cache + z.bwd : z.bwd, inputs = z.BLD + 3 * z.BD + 2 * z.BTE;
    size_t bwd = 2 * z.BD + 2 * z.BTD + max_size(blk, inputs);
    return k22_prior_saved_floats_cfg(cfg, B, ckpt, act16) + max_size(fwd, bwd);
}

size_t k22_prior_arena_floats(const k22_prior *m, int B, int train)
{
    return k22_prior_arena_floats_cfg(&m->cfg, B, train, m->grad_ckpt, m->act16);
}

/* The additive mask of diffusers' prior, (B, T, T): text padding and causal, heads shared. */
static void build_mask(const k22_prior *m, const uint8_t *text_mask, int B)
{
    int T = m->T, L = m->L;
    for (int b = 0; b < B; b++)
        for (int i = 0; i < T; i++) {
            float *row = m->mask_host + ((size_t)b * T + i) * T;
            for (int j = 0; j < T; j++) {
                float pad = j < L ? (1.0f - (float)(text_mask[(size_t)b * L + j] != 0)) * -10000.0f : 0.0f;
                row[j] = pad + (j > i ? -10000.0f : 0.0f);
            }
        }
}

/* h0 (B, T, D) = [ehs (L rows), pe, temb, xin, prd] + positional embedding. */
static void assemble_tokens(const k22_backend *be, const k22_prior *m, float *h0, int B)
{
    const k22_prior_state *s = &m->st;
    int D = m->D, L = m->L, T = m->T;
    size_t row = (size_t)D * sizeof(float);
    for (int b = 0; b < B; b++) {
        float *hb = h0 + (size_t)b * T * D;
        be->copy(be->ctx, hb, s->ehs + (size_t)b * L * D, (size_t)L * row);
        be->copy(be->ctx, hb + (size_t)L * D, s->pe + (size_t)b * D, row);
        be->copy(be->ctx, hb + (size_t)(L + 1) * D, s->temb + (size_t)b * D, row);
        be->copy(be->ctx, hb + (size_t)(L + 2) * D, s->xin + (size_t)b * D, row);
        be->copy(be->ctx, hb + (size_t)(L + 3) * D, m->prd, row);
        be->add(be->ctx, hb, hb, m->pos, (int64_t)T * D);
    }
}

static void embed_inputs(const k22_backend *be, k22_prior *m, k22_arena *ar, const float *t, int B)
{
    k22_prior_state *s = &m->st;
    int D = m->D, TE = m->TE;
    s->tproj = k22_arena_floats(ar, (size_t)B * D); // tproj: (B, D)
    be->timestep_embed_fwd(be->ctx, s->tproj, t, B, D, 1, 0.0f, 1.0f, 10000.0f);
    s->th = k22_arena_floats(ar, (size_t)B * TE);   // th: (B, TE)
    k22_linear_forward(be, &m->time1, s->th, s->tproj, B);
    s->tact = k22_arena_floats(ar, (size_t)B * TE); // tact: (B, TE)
    be->act_fwd(be->ctx, K22_ACT_SILU, s->tact, s->th, (int64_t)B * TE);
    s->temb = k22_arena_floats(ar, (size_t)B * D);  // temb: (B, D)
    k22_linear_forward(be, &m->time2, s->temb, s->tact, B);
    s->pe = k22_arena_floats(ar, (size_t)B * D);    // pe: (B, D)
    k22_linear_forward(be, &m->emb_proj, s->pe, s->proj, B);
    s->ehs = k22_arena_floats(ar, (size_t)B * m->L * D); // ehs: (B, L, D)
    k22_linear_forward(be, &m->ehs_proj, s->ehs, s->ehs_in, B * m->L);
    s->xin = k22_arena_floats(ar, (size_t)B * D);   // xin: (B, D)
    k22_linear_forward(be, &m->proj_in, s->xin, s->x_t, B);
}

static k22_attn_desc mask_desc(const k22_prior *m)
{
    k22_attn_desc d = {0};
    if (m->st.mask) {
        d.mask = m->st.mask;
        d.mask_bstride = (int64_t)m->T * m->T;
    }
    return d;
}

void k22_prior_forward(const k22_backend *be, k22_prior *m, k22_arena *ar, const float *x_t,
                       const float *t, const float *proj, const float *ehs,
                       const uint8_t *text_mask, int B, float *out, int train)
{
    K22_REQUIRE(B >= 1 && B <= m->max_batch);
    if (m->act16) k22_backend_act16_require(be, "prior: GEMM inputs");
    k22_prior_state *s = &m->st;
    int D = m->D, T = m->T, nl = m->cfg.num_layers;
    size_t BTD = (size_t)B * T * D, top = k22_arena_mark(ar);
    s->B = B;
    s->train = train;
    s->ckpt = train && m->grad_ckpt;
    s->x_t = x_t;
    s->proj = proj;
    s->ehs_in = ehs;
    s->mask = NULL;
    if (text_mask) {
        build_mask(m, text_mask, B);
        s->mask = k22_arena_floats(ar, (size_t)B * T * T); // mask: (B, T, T)
        be->to_device(be->ctx, s->mask, m->mask_host, (size_t)B * T * T * sizeof(float));
    }
    embed_inputs(be, m, ar, t, B);
    s->h[0] = k22_arena_floats(ar, BTD); // h[0]: (B, T, D)
    assemble_tokens(be, m, s->h[0], B);
    k22_attn_desc d = mask_desc(m);
    float *ping = s->h[0], *pong = train ? NULL : k22_arena_floats(ar, BTD);
    for (int l = 0; l < nl; l++) {
        if (train) {
            /* Checkpointed, only the block inputs h[] stay; backward rebuilds the caches. */
            s->h[l + 1] = k22_arena_floats(ar, BTD); // h[l+1]: (B, T, D)
            k22_block_forward(be, &m->blocks[l], ar, s->h[l + 1], s->h[l], B, T, &d,
                              s->ckpt ? NULL : &s->blk[l]);
            continue;
        }
        k22_block_forward(be, &m->blocks[l], ar, pong, ping, B, T, &d, NULL);
        float *sw = ping;
        ping = pong;
        pong = sw;
    }
    const float *hl = train ? s->h[nl] : ping;
    s->last = k22_arena_floats(ar, (size_t)B * D); // last: (B, D) the prd token
    for (int b = 0; b < B; b++)
        be->copy(be->ctx, s->last + (size_t)b * D, hl + ((size_t)b * T + T - 1) * D,
                 (size_t)D * sizeof(float));
    /* norm_out is per token, so only the prd token, the one read, is normalized. */
    s->mean = k22_arena_floats(ar, (size_t)B);
    s->rstd = k22_arena_floats(ar, (size_t)B);
    s->normed = k22_arena_floats(ar, (size_t)B * D); // normed: (B, D)
    k22_layernorm_forward(be, &m->norm_out, s->normed, s->mean, s->rstd, s->last, B);
    k22_linear_forward(be, &m->proj_out, out, s->normed, B); // out: (B, CE)
    if (!train) k22_arena_reset(ar, top);
}

/* Gradients of the token inputs from dh0 (B, T, D): positional and prd embeddings, then the
 * projections of text states, text embedding, x_t and the time embedding MLP. */
static void backward_inputs(const k22_backend *be, k22_prior *m, k22_arena *ar, const float *dh0,
                            float *dx_t, float *dproj, float *dehs)
{
    k22_prior_state *s = &m->st;
    int B = s->B, D = m->D, L = m->L, T = m->T, TE = m->TE;
    size_t top = k22_arena_mark(ar), row = (size_t)D * sizeof(float);
    float *dtok = k22_arena_floats(ar, (size_t)B * L * D); // dtok: (B, L, D)
    float *dpe = k22_arena_floats(ar, (size_t)B * D), *dtemb = k22_arena_floats(ar, (size_t)B * D),
          *dxin = k22_arena_floats(ar, (size_t)B * D); // (B, D) each
    for (int b = 0; b < B; b++) {
        const float *g = dh0 + (size_t)b * T * D;
        if (m->dpos) be->add_bwd(be->ctx, m->dpos, NULL, g, (int64_t)T * D);
        if (m->dprd) be->add_bwd(be->ctx, m->dprd, NULL, g + (size_t)(L + 3) * D, D);
        be->copy(be->ctx, dtok + (size_t)b * L * D, g, (size_t)L * row);
        be->copy(be->ctx, dpe + (size_t)b * D, g + (size_t)L * D, row);
        be->copy(be->ctx, dtemb + (size_t)b * D, g + (size_t)(L + 1) * D, row);
        be->copy(be->ctx, dxin + (size_t)b * D, g + (size_t)(L + 2) * D, row);
    }
    k22_linear_backward(be, &m->ehs_proj, dehs, dtok, s->ehs_in, B * L);
    k22_linear_backward(be, &m->emb_proj, dproj, dpe, s->proj, B);
    k22_linear_backward(be, &m->proj_in, dx_t, dxin, s->x_t, B);
    float *dtact = k22_arena_zeros(ar, (size_t)B * TE); // dtact: (B, TE)
    k22_linear_backward(be, &m->time2, dtact, dtemb, s->tact, B);
    float *dth = k22_arena_zeros(ar, (size_t)B * TE);   // dth: (B, TE)
    be->act_bwd(be->ctx, K22_ACT_SILU, dth, dtact, s->th, (int64_t)B * TE);
    k22_linear_backward(be, &m->time1, NULL, dth, s->tproj, B);
    k22_arena_reset(ar, top);
}

void k22_prior_backward(const k22_backend *be, k22_prior *m, k22_arena *ar, const float *dout,
                        float *dx_t, float *dproj, float *dehs)
{
    k22_prior_state *s = &m->st;
    K22_REQUIRE(s->train);
    int B = s->B, D = m->D, T = m->T, nl = m->cfg.num_layers;
    size_t BTD = (size_t)B * T * D, top = k22_arena_mark(ar);
    float *dnormed = k22_arena_zeros(ar, (size_t)B * D); // dnormed: (B, D)
    k22_linear_backward(be, &m->proj_out, dnormed, dout, s->normed, B);
    float *dlast = k22_arena_zeros(ar, (size_t)B * D);   // dlast: (B, D)
    k22_layernorm_backward(be, &m->norm_out, dlast, dnormed, s->last, s->mean, s->rstd, B);
    k22_grad_marks_reached(&m->marks, m->grad_hook, nl);
    float *dh = k22_arena_zeros(ar, BTD);  // dh: (B, T, D) gradient at a block's output
    float *dh2 = k22_arena_floats(ar, BTD); // dh2: (B, T, D) gradient at its input
    for (int b = 0; b < B; b++)
        be->add_bwd(be->ctx, dh + ((size_t)b * T + T - 1) * D, NULL, dlast + (size_t)b * D, D);
    k22_attn_desc d = mask_desc(m);
    for (int l = nl - 1; l >= 0; l--) {
        size_t blk_top = k22_arena_mark(ar);
        const k22_block_cache *c = &s->blk[l];
        k22_block_cache re;
        if (s->ckpt) {
            /* Re-run block l's forward for its cache. Its output h[l+1] is dead by now (block
             * l+1's backward is done, norm_out kept its own copy), so it is rewritten in place
             * with the same values rather than given scratch. */
            k22_block_forward(be, &m->blocks[l], ar, s->h[l + 1], s->h[l], B, T, &d, &re);
            c = &re;
        }
        be->zero(be->ctx, dh2, BTD * sizeof(float));
        k22_block_backward(be, &m->blocks[l], ar, dh2, dh, B, T, &d, c);
        k22_grad_marks_reached(&m->marks, m->grad_hook, l);
        k22_arena_reset(ar, blk_top);
        float *sw = dh;
        dh = dh2;
        dh2 = sw;
    }
    backward_inputs(be, m, ar, dh, dx_t, dproj, dehs);
    k22_arena_reset(ar, top);
}
