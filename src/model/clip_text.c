/* clip_text.c: CLIPTextModelWithProjection forward (token + position embeddings, causal
 * pre-norm encoder, final layer norm, EOS pooling, text projection). */
#include "k22/clip.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int k22_clip_act(const char *hidden_act)
{
    if (!strcmp(hidden_act, "quick_gelu")) return K22_ACT_QUICK_GELU;
    if (!strcmp(hidden_act, "gelu")) return K22_ACT_GELU;
    if (!strcmp(hidden_act, "gelu_new") || !strcmp(hidden_act, "gelu_pytorch_tanh"))
        return K22_ACT_GELU_TANH;
    return -1;
}

void k22_clip_text_init(k22_clip_text *m, const k22_clip_text_config *cfg, const k22_params *ps,
                        const float *P)
{
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    int act = k22_clip_act(cfg->hidden_act);
    if (act < 0) K22_FATAL("CLIP hidden_act '%s' passed the config reader", cfg->hidden_act);
    float *base = (float *)P;
    m->tok_emb = k22_param_ptr(ps, base, "text_model.embeddings.token_embedding.weight");
    m->pos_emb = k22_param_ptr(ps, base, "text_model.embeddings.position_embedding.weight");
    m->layers = k22_xcalloc((size_t)cfg->num_hidden_layers + 1, sizeof *m->layers);
    for (int l = 0; l < cfg->num_hidden_layers; l++) {
        char p[64];
        snprintf(p, sizeof p, "text_model.encoder.layers.%d", l);
        k22_block_bind(&m->layers[l], ps, p, &k22_block_names_clip, P, NULL,
                       cfg->num_attention_heads, act, cfg->layer_norm_eps);
    }
    k22_layernorm_bind(&m->final_ln, ps, "text_model.final_layer_norm", P, NULL,
                       cfg->layer_norm_eps);
    k22_linear_bind(&m->proj, ps, "text_projection", P, NULL);
}

void k22_clip_text_free(k22_clip_text *m)
{
    free(m->layers);
    m->layers = NULL;
}

size_t k22_clip_text_arena_floats(const k22_clip_text *m, int B, int T)
{
    const k22_clip_text_config *c = &m->cfg;
    size_t NC = k22_arena_round((size_t)B * T * c->hidden_size);
    size_t blk = k22_block_nograd_floats(B, T, c->hidden_size, c->intermediate_size,
                                         c->num_attention_heads, 0, 0); /* not stacked */
    size_t tail = 2 * k22_arena_round((size_t)B * T) + k22_arena_round((size_t)B * c->hidden_size);
    return 2 * NC + (blk > tail ? blk : tail);
}

/* Position of the token whose hidden state is pooled. Before transformers PR #24773 configs
 * said eos_token_id 2, and the pooled token is the largest id (EOS has the largest id in
 * CLIP's vocabulary); else the first EOS. A row without EOS pools position 0, as argmax of an
 * all-false row does. */
static int eos_position(const int32_t *ids, int T, int eos)
{
    int best = 0;
    for (int t = 0; t < T; t++) {
        if (eos == 2 ? ids[t] > ids[best] : ids[t] == eos) {
            best = t;
            if (eos != 2) break;
        }
    }
    return best;
}

k22_status k22_clip_text_forward(const k22_backend *be, const k22_clip_text *m, k22_arena *ar,
                                 const int32_t *ids, int B, int T, float *hidden, float *embeds,
                                 k22_err *err)
{
    const k22_clip_text_config *c = &m->cfg;
    int C = c->hidden_size;
    if (T < 1 || T > c->max_position_embeddings)
        return k22_err_set(err, K22_ERR_ARG, "CLIP text: %d tokens, the model takes 1..%d", T,
                           c->max_position_embeddings);
    for (int64_t i = 0; i < (int64_t)B * T; i++)
        if (ids[i] < 0 || ids[i] >= c->vocab_size)
            return k22_err_set(err, K22_ERR_ARG, "CLIP text: token id %d at row %d position %d "
                               "is outside the vocabulary of %d", (int)ids[i], (int)(i / T),
                               (int)(i % T), c->vocab_size);
    size_t top = k22_arena_mark(ar), NC = (size_t)B * T * C, row = (size_t)C * sizeof(float);
    float *x = k22_arena_floats(ar, NC); // x: (B, T, C)
    float *y = k22_arena_floats(ar, NC); // y: (B, T, C)
    for (int64_t i = 0; i < (int64_t)B * T; i++)
        be->copy(be->ctx, x + i * C, m->tok_emb + (size_t)ids[i] * C, row);
    for (int b = 0; b < B; b++)
        be->add(be->ctx, x + (size_t)b * T * C, x + (size_t)b * T * C, m->pos_emb, (int64_t)T * C);
    k22_attn_desc mask = {0};
    mask.causal = 1;
    for (int l = 0; l < c->num_hidden_layers; l++) {
        k22_block_forward(be, &m->layers[l], ar, y, x, B, T, &mask, NULL);
        float *s = x;
        x = y;
        y = s;
    }
    float *mean = k22_arena_floats(ar, (size_t)B * T), *rstd = k22_arena_floats(ar, (size_t)B * T);
    k22_layernorm_forward(be, &m->final_ln, y, mean, rstd, x, B * T); // y: (B, T, C) last_hidden_state
    if (hidden) be->copy(be->ctx, hidden, y, NC * sizeof(float));
    if (embeds) {
        float *pooled = k22_arena_floats(ar, (size_t)B * C); // pooled: (B, C)
        for (int b = 0; b < B; b++) {
            int t = eos_position(ids + (size_t)b * T, T, c->eos_token_id);
            be->copy(be->ctx, pooled + (size_t)b * C, y + ((size_t)b * T + t) * C, row);
        }
        k22_linear_forward(be, &m->proj, embeds, pooled, B); // embeds: (B, P)
    }
    k22_arena_reset(ar, top);
    return K22_OK;
}
