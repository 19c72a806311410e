/* params_prior.c: the PriorTransformer state dict (diffusers), in its order: the module's own
 * parameters first (positional and prd embeddings, clip_mean/std), then its submodules. */
#include <stdio.h>

#include "params_util.h"

void k22_params_build_prior(const k22_prior_config *c, k22_pb *b)
{
    int64_t d = (int64_t)c->num_attention_heads * c->attention_head_dim; /* inner width D */
    int64_t e = c->embedding_dim, ce = c->clip_embed_dim;
    k22_pb_raw(b, "", "positional_embedding", 1, 3, 1, c->num_embeddings + c->additional_embeddings, d, 0);
    k22_pb_raw(b, "", "prd_embedding", 1, 3, 1, 1, d, 0);
    /* clip_mean/std are Parameters that forward never uses: they never get a gradient. */
    k22_pb_raw(b, "", "clip_mean", 0, 2, 1, ce, 0, 0);
    k22_pb_raw(b, "", "clip_std", 0, 2, 1, ce, 0, 0);
    k22_pb_linear(b, "time_embedding", "linear_1", c->time_embed_dim, d, 1);
    k22_pb_linear(b, "time_embedding", "linear_2", d, c->time_embed_dim, 1);
    k22_pb_linear(b, "", "proj_in", d, e, 1);
    k22_pb_linear(b, "", "embedding_proj", d, c->embedding_proj_dim, 1);
    k22_pb_linear(b, "", "encoder_hidden_states_proj", d, e, 1);
    for (int l = 0; l < c->num_layers && !b->too_big; l++) {
        char p[64];
        snprintf(p, sizeof p, "transformer_blocks.%d", l);
        k22_pb_norm(b, p, "norm1", d);
        static const char *const qkv[3] = {"attn1.to_q", "attn1.to_k", "attn1.to_v"};
        k22_pb_linear_stack(b, p, qkv, 3, d, d, 1); /* one GEMM of width 3D (attention.c) */
        k22_pb_linear(b, p, "attn1.to_out.0", d, d, 1);
        k22_pb_norm(b, p, "norm3", d);
        k22_pb_linear(b, p, "ff.net.0.proj", 4 * d, d, 1); /* (B, 81, 4D) GELU */
        k22_pb_linear(b, p, "ff.net.2", d, 4 * d, 1);
    }
    k22_pb_norm(b, "", "norm_out", d);
    k22_pb_linear(b, "", "proj_to_clip_embeddings", ce, d, 1);
}
