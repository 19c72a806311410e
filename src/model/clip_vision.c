/* clip_vision.c: CLIPVisionModelWithProjection forward (patch convolution, class token,
 * position embeddings, pre layer norm, encoder, post layer norm of the class token, visual
 * projection). */
#include "k22/clip.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void k22_clip_vision_init(k22_clip_vision *m, const k22_clip_vision_config *cfg,
                          const k22_params *ps, const float *P)
{
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    int act = k22_clip_act(cfg->hidden_act);
    if (act < 0) K22_FATAL("CLIP hidden_act '%s' passed the config reader", cfg->hidden_act);
    float *base = (float *)P;
    m->cls_emb = k22_param_ptr(ps, base, "vision_model.embeddings.class_embedding");
    m->patch_w = k22_param_ptr(ps, base, "vision_model.embeddings.patch_embedding.weight");
    m->pos_emb = k22_param_ptr(ps, base, "vision_model.embeddings.position_embedding.weight");
    k22_layernorm_bind(&m->pre_ln, ps, "vision_model.pre_layrnorm", P, NULL, cfg->layer_norm_eps);
    k22_layernorm_bind(&m->post_ln, ps, "vision_model.post_layernorm", P, NULL,
                       cfg->layer_norm_eps);
    m->layers = k22_xcalloc((size_t)cfg->num_hidden_layers + 1, sizeof *m->layers);
    for (int l = 0; l < cfg->num_hidden_layers; l++) {
        char p[64];
        snprintf(p, sizeof p, "vision_model.encoder.layers.%d", l);
        k22_block_bind(&m->layers[l], ps, p, &k22_block_names_clip, P, NULL,
                       cfg->num_attention_heads, act, cfg->layer_norm_eps);
    }
    k22_linear_bind(&m->proj, ps, "visual_projection", P, NULL);
}

void k22_clip_vision_free(k22_clip_vision *m)
{
    free(m->layers);
    m->layers = NULL;
}

size_t k22_clip_vision_arena_floats(const k22_clip_vision *m, int B)
{
    const k22_clip_vision_config *c = &m->cfg;
    int g = c->image_size / c->patch_size, T = g * g + 1;
    size_t NC = k22_arena_round((size_t)B * T * c->hidden_size);
    size_t emb = 2 * k22_arena_round((size_t)B * g * g * c->hidden_size);
    size_t blk = k22_block_nograd_floats(B, T, c->hidden_size, c->intermediate_size,
                                         c->num_attention_heads, 0, 0); /* not stacked */
    size_t tail = 2 * k22_arena_round((size_t)B * T) + 2 * k22_arena_round((size_t)B * c->hidden_size) +
                  2 * k22_arena_round((size_t)B);
    size_t mid = emb > blk ? emb : blk;
    return 2 * NC + (mid > tail ? mid : tail);
}

/* Class token then the patch tokens, plus position embeddings. x: (B, 1 + P, C). */
static void embed(const k22_backend *be, const k22_clip_vision *m, k22_arena *ar, float *x,
                  const float *pixels, int B)
{
    const k22_clip_vision_config *c = &m->cfg;
    int C = c->hidden_size, g = c->image_size / c->patch_size, P = g * g, T = P + 1;
    size_t top = k22_arena_mark(ar);
    k22_conv2d_desc d = {.B = B, .C = c->num_channels, .H = c->image_size, .W = c->image_size,
                         .O = C, .KH = c->patch_size, .KW = c->patch_size,
                         .SH = c->patch_size, .SW = c->patch_size};
    float *grid = k22_arena_floats(ar, (size_t)B * C * P); // grid: (B, C, g, g)
    be->conv2d_fwd(be->ctx, grid, pixels, m->patch_w, NULL, &d);
    float *tok = k22_arena_floats(ar, (size_t)B * P * C); // tok: (B, P, C)
    const int64_t shape[3] = {B, C, P};
    const int perm[3] = {0, 2, 1};
    be->permute_fwd(be->ctx, tok, grid, 3, shape, perm);
    for (int b = 0; b < B; b++) {
        float *xb = x + (size_t)b * T * C;
        be->copy(be->ctx, xb, m->cls_emb, (size_t)C * sizeof(float));
        be->copy(be->ctx, xb + C, tok + (size_t)b * P * C, (size_t)P * C * sizeof(float));
        be->add(be->ctx, xb, xb, m->pos_emb, (int64_t)T * C);
    }
    k22_arena_reset(ar, top);
}

void k22_clip_vision_forward(const k22_backend *be, const k22_clip_vision *m, k22_arena *ar,
                             const float *pixels, int B, float *embeds)
{
    const k22_clip_vision_config *c = &m->cfg;
    int C = c->hidden_size, g = c->image_size / c->patch_size, T = g * g + 1;
    size_t top = k22_arena_mark(ar), NC = (size_t)B * T * C;
    float *x = k22_arena_floats(ar, NC); // x: (B, T, C)
    float *y = k22_arena_floats(ar, NC); // y: (B, T, C)
    embed(be, m, ar, y, pixels, B);
    float *mean = k22_arena_floats(ar, (size_t)B * T), *rstd = k22_arena_floats(ar, (size_t)B * T);
    k22_layernorm_forward(be, &m->pre_ln, x, mean, rstd, y, B * T);
    k22_arena_reset(ar, top + 2 * k22_arena_round(NC));
    k22_attn_desc nomask = {0};
    for (int l = 0; l < c->num_hidden_layers; l++) {
        k22_block_forward(be, &m->layers[l], ar, y, x, B, T, &nomask, NULL);
        float *s = x;
        x = y;
        y = s;
    }
    float *cls = k22_arena_floats(ar, (size_t)B * C); // cls: (B, C) class token
    for (int b = 0; b < B; b++)
        be->copy(be->ctx, cls + (size_t)b * C, x + (size_t)b * T * C, (size_t)C * sizeof(float));
    float *pooled = k22_arena_floats(ar, (size_t)B * C); // pooled: (B, C)
    mean = k22_arena_floats(ar, (size_t)B);
    rstd = k22_arena_floats(ar, (size_t)B);
    k22_layernorm_forward(be, &m->post_ln, pooled, mean, rstd, cls, B);
    k22_linear_forward(be, &m->proj, embeds, pooled, B); // embeds: (B, P)
    k22_arena_reset(ar, top);
}
