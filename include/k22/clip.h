/* clip.h: the frozen CLIP encoders the prior is trained against (transformers 5
 * CLIPTextModelWithProjection and CLIPVisionModelWithProjection), forward only, batched.
 * Both keep no caches: they run once per sample (k22 pack) or under no-grad. Weights are device
 * pointers into one parameter buffer laid out by the model's k22_params table. */
#ifndef K22_CLIP_H
#define K22_CLIP_H

#include "k22/config.h"
#include "k22/nn.h"

/* hidden_act of a CLIP config as a k22_act; -1 when k22 has no such activation. */
int k22_clip_act(const char *hidden_act);

typedef struct {
    k22_clip_text_config cfg;
    const float *tok_emb; /* (V, C) */
    const float *pos_emb; /* (max_position_embeddings, C) */
    k22_block *layers;    /* num_hidden_layers, owned */
    k22_layernorm final_ln;
    k22_linear proj;      /* text_projection, no bias */
} k22_clip_text;

/* Binds the model to P, a device copy of a buffer laid out by ps (k22_params_build of cfg). */
void k22_clip_text_init(k22_clip_text *m, const k22_clip_text_config *cfg, const k22_params *ps,
                        const float *P);
void k22_clip_text_free(k22_clip_text *m);
/* Arena floats one forward of B sequences of T tokens needs. */
size_t k22_clip_text_arena_floats(const k22_clip_text *m, int B, int T);
/* ids: host (B, T) token ids (T <= max_position_embeddings, each < vocab_size), called as the
 * prior script calls it: causal mask only, no attention mask.
 * hidden: device (B, T, C) last_hidden_state (after final_layer_norm), may be NULL;
 * embeds: device (B, projection_dim) text_embeds, may be NULL.
 * Returns K22_ERR_ARG (err set) for an id or length out of range. */
k22_status k22_clip_text_forward(const k22_backend *be, const k22_clip_text *m, k22_arena *ar,
                                 const int32_t *ids, int B, int T, float *hidden, float *embeds,
                                 k22_err *err);

typedef struct {
    k22_clip_vision_config cfg;
    const float *cls_emb;   /* (C) */
    const float *patch_w;   /* (C, channels, patch, patch), no bias */
    const float *pos_emb;   /* (1 + grid^2, C) */
    k22_layernorm pre_ln, post_ln;
    k22_block *layers;      /* owned */
    k22_linear proj;        /* visual_projection, no bias */
} k22_clip_vision;

void k22_clip_vision_init(k22_clip_vision *m, const k22_clip_vision_config *cfg,
                          const k22_params *ps, const float *P);
void k22_clip_vision_free(k22_clip_vision *m);
size_t k22_clip_vision_arena_floats(const k22_clip_vision *m, int B);
/* pixels: device (B, channels, image_size, image_size), already CLIP-normalized;
 * embeds: device (B, projection_dim) image_embeds. */
void k22_clip_vision_forward(const k22_backend *be, const k22_clip_vision *m, k22_arena *ar,
                             const float *pixels, int B, float *embeds);

#endif
