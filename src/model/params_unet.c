/* params_unet.c: the UNet2DConditionModel state dict, Kandinsky 2.2 decoder flavour (image_proj
 * encoder projection, image addition embedding, resnet down/upsamplers, SimpleCrossAttn blocks
 * with added K/V), in the order diffusers registers the modules: conv_in, time and condition
 * embeddings, down blocks, up blocks, mid block, output. */
#include <stdio.h>
#include <string.h>

#include "params_util.h"

/* diffusers' ImageProjection makes this many tokens from one image embedding (its default). */
#define K22_UNET_IMAGE_TOKENS 32

/* ResnetBlock2D with "scale_shift": time_emb_proj gives a scale and a shift per channel. */
static void unet_resnet(k22_pb *b, const char *p, int64_t in, int64_t out, int64_t temb)
{
    k22_pb_norm(b, p, "norm1", in);
    k22_pb_conv(b, p, "conv1", out, in, 3);
    k22_pb_linear(b, p, "time_emb_proj", 2 * out, temb, 1);
    k22_pb_norm(b, p, "norm2", out);
    k22_pb_conv(b, p, "conv2", out, out, 3);
    if (in != out) k22_pb_conv(b, p, "conv_shortcut", out, in, 1);
}

/* Attention with added K/V from the image tokens (AttnAddedKVProcessor): c channels, heads of
 * attention_head_dim, so the inner width is c. */
static void unet_attention(k22_pb *b, const char *p, int64_t c, int64_t cross)
{
    static const char *const qkv[3] = {"to_q", "to_k", "to_v"};
    k22_pb_norm(b, p, "group_norm", c);
    k22_pb_linear_stack(b, p, qkv, 3, c, c, 1); /* one GEMM of width 3c (unet_attn.c) */
    k22_pb_linear(b, p, "add_k_proj", c, cross, 1);
    k22_pb_linear(b, p, "add_v_proj", c, cross, 1);
    k22_pb_linear(b, p, "to_out.0", c, c, 1);
}

static void unet_down(const k22_unet_config *c, k22_pb *b, int i, int64_t temb)
{
    int64_t in = i ? c->block_out_channels[i - 1] : c->block_out_channels[0];
    int64_t out = c->block_out_channels[i];
    int attn = strcmp(c->down_block_types[i], "SimpleCrossAttnDownBlock2D") == 0;
    char p[96];
    for (int j = 0; attn && j < c->layers_per_block; j++) {
        snprintf(p, sizeof p, "down_blocks.%d.attentions.%d", i, j);
        unet_attention(b, p, out, c->cross_attention_dim);
    }
    for (int j = 0; j < c->layers_per_block; j++) {
        snprintf(p, sizeof p, "down_blocks.%d.resnets.%d", i, j);
        unet_resnet(b, p, j ? out : in, out, temb);
    }
    if (i == c->nblocks - 1) return;
    snprintf(p, sizeof p, "down_blocks.%d.downsamplers.0", i); /* a resnet with down=True */
    unet_resnet(b, p, out, out, temb);
}

/* Up block i works on the reversed channel list; resnet j takes the previous output (or the
 * block's own width) plus one skip connection from the down path. */
static void unet_up(const k22_unet_config *c, k22_pb *b, int i, int64_t prev, int64_t temb)
{
    int n = c->nblocks;
    int64_t out = c->block_out_channels[n - 1 - i];
    int64_t skip_in = c->block_out_channels[n - 1 - (i + 1 < n ? i + 1 : n - 1)];
    int attn = strcmp(c->up_block_types[i], "SimpleCrossAttnUpBlock2D") == 0;
    int layers = c->layers_per_block + 1;
    char p[96];
    for (int j = 0; attn && j < layers; j++) {
        snprintf(p, sizeof p, "up_blocks.%d.attentions.%d", i, j);
        unet_attention(b, p, out, c->cross_attention_dim);
    }
    for (int j = 0; j < layers; j++) {
        int64_t skip = j == layers - 1 ? skip_in : out;
        snprintf(p, sizeof p, "up_blocks.%d.resnets.%d", i, j);
        unet_resnet(b, p, (j ? out : prev) + skip, out, temb);
    }
    if (i == n - 1) return;
    snprintf(p, sizeof p, "up_blocks.%d.upsamplers.0", i); /* a resnet with up=True */
    unet_resnet(b, p, out, out, temb);
}

void k22_params_build_unet(const k22_unet_config *c, k22_pb *b)
{
    int64_t c0 = c->block_out_channels[0], cl = c->block_out_channels[c->nblocks - 1];
    int64_t temb = c->time_embedding_dim, cross = c->cross_attention_dim;
    k22_pb_conv(b, "", "conv_in", c0, c->in_channels, 3);
    k22_pb_linear(b, "time_embedding", "linear_1", temb, c0, 1);
    k22_pb_linear(b, "time_embedding", "linear_2", temb, temb, 1);
    /* image_embeds (B, E) -> (B, 32, cross) tokens, then LayerNorm(cross) */
    k22_pb_linear(b, "encoder_hid_proj", "image_embeds", K22_UNET_IMAGE_TOKENS * cross, c->encoder_hid_dim, 1);
    k22_pb_norm(b, "encoder_hid_proj", "norm", cross);
    k22_pb_linear(b, "add_embedding", "image_proj", temb, c->encoder_hid_dim, 1);
    k22_pb_norm(b, "add_embedding", "image_norm", temb);
    for (int i = 0; i < c->nblocks && !b->too_big; i++) unet_down(c, b, i, temb);
    int64_t prev = cl;
    for (int i = 0; i < c->nblocks && !b->too_big; i++) {
        unet_up(c, b, i, prev, temb);
        prev = c->block_out_channels[c->nblocks - 1 - i];
    }
    unet_attention(b, "mid_block.attentions.0", cl, cross);
    unet_resnet(b, "mid_block.resnets.0", cl, cl, temb);
    unet_resnet(b, "mid_block.resnets.1", cl, cl, temb);
    k22_pb_norm(b, "", "conv_norm_out", c0);
    k22_pb_conv(b, "", "conv_out", c->out_channels, c0, 3);
}
