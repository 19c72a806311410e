/* params_clip_text.c: the CLIPTextModelWithProjection state dict (transformers 5; the
 * non-persistent position_ids buffer is not part of it). */
#include <stdio.h>

#include "params_util.h"

void k22_params_build_clip_text(const k22_clip_text_config *c, k22_pb *b)
{
    int64_t h = c->hidden_size;
    k22_pb_raw(b, "text_model.embeddings", "token_embedding.weight", 1, 2, c->vocab_size, h, 0, 0);
    k22_pb_raw(b, "text_model.embeddings", "position_embedding.weight", 1, 2, c->max_position_embeddings, h, 0, 0);
    for (int l = 0; l < c->num_hidden_layers && !b->too_big; l++) {
        char p[64];
        snprintf(p, sizeof p, "text_model.encoder.layers.%d", l);
        k22_pb_clip_layer(b, p, h, c->intermediate_size);
    }
    k22_pb_norm(b, "text_model", "final_layer_norm", h);
    k22_pb_linear(b, "", "text_projection", c->projection_dim, h, 0);
}

