/* params_movq.c: the VQModel state dict with norm_type "spatial" (MoVQ): the encoder uses
 * GroupNorm, the decoder SpatialNorm (GroupNorm modulated by 1x1 convs of the latent). Order:
 * encoder, quant_conv, codebook, post_quant_conv, decoder (up blocks before its mid block, as
 * diffusers registers them). */
#include <stdio.h>
#include <string.h>

#include "params_util.h"

/* SpatialNorm(c, zq): norm_layer (GroupNorm), conv_y and conv_b (1x1 from the latent). */
static void movq_spatial_norm(k22_pb *b, const char *p, const char *name, int64_t c, int64_t zq)
{
    char q[128];
    snprintf(q, sizeof q, "%s.%s", p, name);
    k22_pb_norm(b, q, "norm_layer", c);
    k22_pb_conv(b, q, "conv_y", c, zq, 1);
    k22_pb_conv(b, q, "conv_b", c, zq, 1);
}

/* Encoder ResnetBlock2D (no time embedding) or decoder ResnetBlockCondNorm2D (zq > 0). */
static void movq_resnet(k22_pb *b, const char *p, int64_t in, int64_t out, int64_t zq)
{
    if (zq) movq_spatial_norm(b, p, "norm1", in, zq);
    else k22_pb_norm(b, p, "norm1", in);
    k22_pb_conv(b, p, "conv1", out, in, 3);
    if (zq) movq_spatial_norm(b, p, "norm2", out, zq);
    else k22_pb_norm(b, p, "norm2", out);
    k22_pb_conv(b, p, "conv2", out, out, 3);
    if (in != out) k22_pb_conv(b, p, "conv_shortcut", out, in, 1);
}

/* Single-head self-attention over the c channels of every pixel. */
static void movq_attention(k22_pb *b, const char *p, int64_t c, int64_t zq)
{
    if (zq) movq_spatial_norm(b, p, "spatial_norm", c, zq);
    else k22_pb_norm(b, p, "group_norm", c);
    k22_pb_linear(b, p, "to_q", c, c, 1);
    k22_pb_linear(b, p, "to_k", c, c, 1);
    k22_pb_linear(b, p, "to_v", c, c, 1);
    k22_pb_linear(b, p, "to_out.0", c, c, 1);
}

static void movq_mid(const k22_movq_config *c, k22_pb *b, const char *p, int64_t ch, int64_t zq)
{
    char q[96];
    if (c->mid_block_add_attention) {
        snprintf(q, sizeof q, "%s.attentions.0", p);
        movq_attention(b, q, ch, zq);
    }
    for (int j = 0; j < 2; j++) {
        snprintf(q, sizeof q, "%s.resnets.%d", p, j);
        movq_resnet(b, q, ch, ch, zq);
    }
}

static void movq_encoder(const k22_movq_config *c, k22_pb *b)
{
    int n = c->nblocks;
    int64_t cl = c->block_out_channels[n - 1];
    k22_pb_conv(b, "encoder", "conv_in", c->block_out_channels[0], c->in_channels, 3);
    for (int i = 0; i < n && !b->too_big; i++) {
        int64_t in = i ? c->block_out_channels[i - 1] : c->block_out_channels[0];
        int64_t out = c->block_out_channels[i];
        int attn = strcmp(c->down_block_types[i], "AttnDownEncoderBlock2D") == 0;
        char p[96];
        for (int j = 0; attn && j < c->layers_per_block; j++) {
            snprintf(p, sizeof p, "encoder.down_blocks.%d.attentions.%d", i, j);
            movq_attention(b, p, out, 0);
        }
        for (int j = 0; j < c->layers_per_block; j++) {
            snprintf(p, sizeof p, "encoder.down_blocks.%d.resnets.%d", i, j);
            movq_resnet(b, p, j ? out : in, out, 0);
        }
        if (i == n - 1) continue;
        snprintf(p, sizeof p, "encoder.down_blocks.%d.downsamplers.0", i);
        k22_pb_conv(b, p, "conv", out, out, 3);
    }
    movq_mid(c, b, "encoder.mid_block", cl, 0);
    k22_pb_norm(b, "encoder", "conv_norm_out", cl);
    k22_pb_conv(b, "encoder", "conv_out", c->latent_channels, cl, 3);
}

static void movq_decoder(const k22_movq_config *c, k22_pb *b)
{
    int n = c->nblocks;
    int64_t zq = c->latent_channels, cl = c->block_out_channels[n - 1];
    k22_pb_conv(b, "decoder", "conv_in", cl, c->latent_channels, 3);
    int64_t prev = cl;
    for (int i = 0; i < n && !b->too_big; i++) {
        int64_t out = c->block_out_channels[n - 1 - i];
        int attn = strcmp(c->up_block_types[i], "AttnUpDecoderBlock2D") == 0;
        char p[96];
        for (int j = 0; attn && j <= c->layers_per_block; j++) {
            snprintf(p, sizeof p, "decoder.up_blocks.%d.attentions.%d", i, j);
            movq_attention(b, p, out, zq);
        }
        for (int j = 0; j <= c->layers_per_block; j++) {
            snprintf(p, sizeof p, "decoder.up_blocks.%d.resnets.%d", i, j);
            movq_resnet(b, p, j ? out : prev, out, zq);
        }
        prev = out;
        if (i == n - 1) continue;
        snprintf(p, sizeof p, "decoder.up_blocks.%d.upsamplers.0", i);
        k22_pb_conv(b, p, "conv", out, out, 3);
    }
    movq_mid(c, b, "decoder.mid_block", cl, zq);
    movq_spatial_norm(b, "decoder", "conv_norm_out", c->block_out_channels[0], zq);
    k22_pb_conv(b, "decoder", "conv_out", c->out_channels, c->block_out_channels[0], 3);
}

void k22_params_build_movq(const k22_movq_config *c, k22_pb *b)
{
    movq_encoder(c, b);
    k22_pb_conv(b, "", "quant_conv", c->vq_embed_dim, c->latent_channels, 1);
    k22_pb_raw(b, "quantize", "embedding.weight", 1, 2, c->num_vq_embeddings, c->vq_embed_dim, 0, 0);
    k22_pb_conv(b, "", "post_quant_conv", c->latent_channels, c->vq_embed_dim, 1);
    movq_decoder(c, b);
}
