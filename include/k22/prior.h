/* prior.h: diffusers PriorTransformer (Kandinsky 2.2 prior), forward and hand-written backward.
 *
 * Tokens, in order: the projected text hidden states (num_embeddings), the projected text
 * embedding, the time embedding, the projected noisy image embedding x_t, the learned prd
 * token; plus the positional embedding. Blocks use the additive mask diffusers builds:
 * (1 - text_mask) * -10000 on the text keys, 0 on the four extra keys, plus -10000 above the
 * diagonal over every token. The prediction is proj_to_clip_embeddings(norm_out(h))[:, -1].
 *
 * One forward state lives in the model: forward with train != 0 keeps what backward needs in
 * the arena, and backward must follow before the arena is reset.
 *
 * Gradient checkpointing (--gradient_checkpointing; off by default): a training forward keeps
 * only each transformer block's input, and backward re-runs each block's forward (with its
 * cache, in arena scratch) just before that block's backward. The ops and their order are the
 * same as without it, so the gradients are the same bit for bit on a deterministic backend. */
#ifndef K22_PRIOR_H
#define K22_PRIOR_H

#include "k22/config.h"
#include "k22/grad_marks.h"
#include "k22/nn.h"

typedef struct {
    int B, train, masked;
    int ckpt;                        /* the forward ran checkpointed: blk[] is not filled */
    const float *x_t, *proj, *ehs_in;  /* the caller's inputs, read again by backward */
    float *mask;                     /* (B, T, T) additive attention mask, NULL when unmasked */
    float *tproj, *th, *tact, *temb; /* (B, D), (B, TE), (B, TE), (B, D) */
    float *pe, *ehs, *xin;           /* (B, D), (B, L, D), (B, D) */
    float **h;                       /* num_layers + 1 of (B, T, D): h[0] embeddings, h[l+1] out of block l */
    k22_block_cache *blk;            /* num_layers */
    float *last, *mean, *rstd, *normed; /* (B, D), (B), (B), (B, D) */
} k22_prior_state;

typedef struct {
    k22_prior_config cfg;
    int D, L, T, TE; /* inner width, text tokens, all tokens, time-embedding width */
    const float *pos, *prd;  /* (1, T, D), (1, 1, D) */
    float *dpos, *dprd;      /* their gradients, or NULL */
    k22_linear time1, time2, proj_in, emb_proj, ehs_proj, proj_out;
    k22_layernorm norm_out;
    k22_block *blocks;       /* num_layers, owned */
    int max_batch;
    int grad_ckpt;           /* gradient checkpointing, see k22_prior_set_gradient_checkpointing */
    int act16;               /* the blocks' GEMM inputs as 16 bits, see k22_prior_set_act16 */
    float *mask_host;        /* (max_batch, T, T) host scratch for the mask, owned */
    k22_prior_state st;
    /* Bound with G: k22_prior_grad_marks; backward tells grad_hook (NULL: nobody) as each block
     * finishes (grad_marks.h). */
    k22_grad_marks marks;
    const k22_grad_hook *grad_hook;
} k22_prior;

/* Binds the model to P (device copy of a buffer laid out by k22_params_build(cfg)) and G (the
 * gradient buffer of the same layout, or NULL for inference). max_batch bounds B. */
void k22_prior_init(k22_prior *m, const k22_prior_config *cfg, const k22_params *ps,
                    const float *P, float *G, int max_batch);
void k22_prior_free(k22_prior *m);
/* The gradient marks of table ps (grad_marks.h): block l's parameters keyed l, norm_out and
 * proj_to_clip_embeddings num_layers (their backward comes first), the embeddings none. */
void k22_prior_grad_marks(k22_grad_marks *gm, const k22_params *ps, int num_layers);
/* Arena floats for one forward (and, when train, the backward after it) of batch B, in the
 * model's current checkpointing mode. */
size_t k22_prior_arena_floats(const k22_prior *m, int B, int train);
/* on != 0: later training forwards are checkpointed (see the top of this file). Set it before
 * sizing the arena: a checkpointed arena is too small for a forward without. A forward/backward
 * pair already started finishes in the mode its forward ran in. */
void k22_prior_set_gradient_checkpointing(k22_prior *m, int on);
/* on != 0: the blocks keep what only their linears and attention read (the layer norms' outputs,
 * q, k, v, the merged heads, the MLP activation) as 16 bits (k22_block_set_act16), which the
 * backend running the model must then offer (ops.h k22_backend_act16: bf16/fp16): the same
 * figures as floats (those ops round their inputs anyway), less memory. Sizes follow the flag, so set it
 * before sizing the arena. */
void k22_prior_set_act16(k22_prior *m, int on);
/* The same sizes from the config alone (no weights, so a full-size model can be planned):
 * arena floats for one forward (+ backward when train) with checkpointing on or off, and the
 * floats a masked training forward leaves allocated for backward (activations kept); act16 as
 * k22_prior_set_act16's. */
size_t k22_prior_arena_floats_cfg(const k22_prior_config *cfg, int B, int train, int ckpt, int act16);
size_t k22_prior_saved_floats_cfg(const k22_prior_config *cfg, int B, int ckpt, int act16);
/* x_t: (B, embedding_dim) noisy (normalized) image embedding; t: (B) timesteps (float);
 * proj: (B, embedding_proj_dim) text_embeds; ehs: (B, num_embeddings, embedding_dim) text
 * hidden states (device pointers, kept valid until backward when train); text_mask: host
 * (B, num_embeddings) 1 = token, 0 = padding, or NULL for no mask at all (as diffusers);
 * out: device (B, clip_embed_dim). */
void k22_prior_forward(const k22_backend *be, k22_prior *m, k22_arena *ar, const float *x_t,
                       const float *t, const float *proj, const float *ehs,
                       const uint8_t *text_mask, int B, float *out, int train);
/* dout: (B, clip_embed_dim). Accumulates every parameter gradient (G) and, where non-NULL,
 * dx_t (B, E), dproj (B, Eproj), dehs (B, L, E). The timestep gets no gradient. */
void k22_prior_backward(const k22_backend *be, k22_prior *m, k22_arena *ar, const float *dout,
                        float *dx_t, float *dproj, float *dehs);

#endif
