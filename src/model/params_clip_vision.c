/* params_clip_vision.c: the CLIPVisionModelWithProjection state dict (transformers 5). */
#include <stdio.h>

#include "params_util.h"

void k22_params_build_clip_vision(const k22_clip_vision_config *c, k22_pb *b)
{
    int64_t h = c->hidden_size;
    int64_t grid = c->image_size / c->patch_size;
    k22_pb_raw(b, "vision_model.embeddings", "class_embedding", 1, 1, h, 0, 0, 0);
    k22_pb_raw(b, "vision_model.embeddings", "patch_embedding.weight", 1, 4, h, c->num_channels,
               c->patch_size, c->patch_size); /* no bias */
    k22_pb_raw(b, "vision_model.embeddings", "position_embedding.weight", 1, 2, grid * grid + 1, h, 0, 0);
    k22_pb_norm(b, "vision_model", "pre_layrnorm", h); /* sic: the upstream spelling */
    for (int l = 0; l < c->num_hidden_layers && !b->too_big; l++) {
        char p[64];
        snprintf(p, sizeof p, "vision_model.encoder.layers.%d", l);
        k22_pb_clip_layer(b, p, h, c->intermediate_size);
    }
    k22_pb_norm(b, "vision_model", "post_layernorm", h);
    k22_pb_linear(b, "", "visual_projection", c->projection_dim, h, 0);
}
