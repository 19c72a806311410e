/* movq.h: diffusers VQModel with norm_type "spatial" (MoVQ, the Kandinsky 2.2 image autoencoder),
 * forward only: the model is frozen in training and at inference.
 *
 *   encode: latents = quant_conv(encoder(x))           x: (B, 3, H, W) in [-1, 1]
 *   decode: image = decoder(post_quant_conv(z), zq = z) z: (B, 4, H/f, W/f), f = 2^(nblocks-1)
 *
 * decode is VQModel.decode(z, force_not_quantize=True), the call of the Kandinsky 2.2 pipelines:
 * with lookup_from_codebook false (the only value k22 accepts) that skips the codebook, so
 * quantize.embedding.weight is loaded but never read. The decoder's SpatialNorms scale and shift
 * a 32-group GroupNorm by 1x1 convs of z, resized (nearest) to each feature map.
 *
 * Activations live in the arena: two ping-pong buffers of the largest feature map, plus each
 * layer's scratch, released when the layer returns; the arena is back at its mark on return. */
#ifndef K22_MOVQ_H
#define K22_MOVQ_H

#include "k22/config.h"
#include "k22/nn2d.h"

/* SpatialNorm(f_channels, zq_channels): GroupNorm(32, eps 1e-6) * conv_y(zq) + conv_b(zq). */
typedef struct {
    k22_groupnorm gn;
    k22_conv y, b;
} k22_movq_snorm;

/* A group norm (encoder) or a spatial norm (decoder), whichever the block uses. */
typedef struct {
    int spatial;
    k22_groupnorm gn;
    k22_movq_snorm sn;
} k22_movq_norm;

/* ResnetBlock2D without time embedding (encoder) or ResnetBlockCondNorm2D "spatial" (decoder):
 * y = shortcut(x) + conv2(silu(norm2(conv1(silu(norm1(x)))))). */
typedef struct {
    k22_movq_norm n1, n2;
    k22_conv conv1, conv2, shortcut;
    int in, out, has_shortcut;
} k22_movq_resnet;

/* diffusers Attention over the pixels, one head of all C channels, with residual:
 * y = x + to_out(attn(norm(x))). */
typedef struct {
    k22_movq_norm norm;
    k22_linear q, k, v, o;
    int C;
} k22_movq_attn;

/* A down/up block (resnet j then attention j, then the resampler) or the mid block (resnet 0,
 * then attention, resnet 1). */
typedef struct {
    int nres, nattn;
    k22_movq_resnet *res; /* nres, owned */
    k22_movq_attn *attn;  /* nattn, owned */
    int resample; /* 0 none, -1 Downsample2D (pad (0,1,0,1), 3x3 stride 2), +1 Upsample2D */
    k22_conv rconv;
} k22_movq_block;

typedef struct {
    k22_movq_config cfg;
    k22_conv enc_in, enc_out, quant, post_quant, dec_in, dec_out;
    k22_movq_block enc[K22_MAX_BLOCKS], dec[K22_MAX_BLOCKS], enc_mid, dec_mid;
    k22_groupnorm enc_norm_out;
    k22_movq_norm dec_norm_out;
} k22_movq;

/* K22_ERR_ARG when the config is one k22_movq_init cannot build (a channel count the fixed
 * 32-group SpatialNorm cannot split, vq_embed_dim != latent_channels: diffusers would fail at
 * its first forward on either). */
k22_status k22_movq_config_check(const k22_movq_config *cfg, k22_err *err);
/* Binds the model to P (device copy of a buffer laid out by k22_params_build(cfg)); cfg must
 * pass k22_movq_config_check (dies otherwise). The model owns its block arrays (k22_movq_free),
 * not the weights. */
void k22_movq_init(k22_movq *m, const k22_movq_config *cfg, const k22_params *ps, const float *P);
void k22_movq_free(k22_movq *m);
/* Spatial reduction f = 2^(nblocks-1): latents are (H/f, W/f) for H, W multiples of f. */
int k22_movq_factor(const k22_movq *m);
/* Arena floats encode of (B, 3, H, W) / decode of latents (B, 4, h, w) needs. */
size_t k22_movq_encode_arena_floats(const k22_movq *m, int B, int H, int W);
size_t k22_movq_decode_arena_floats(const k22_movq *m, int B, int h, int w);
/* x: (B, in_channels, H, W) device; latents: (B, vq_embed_dim, H/f, W/f) device, written.
 * H and W must be multiples of f (dies otherwise: callers check image sizes first). */
void k22_movq_encode(const k22_backend *be, const k22_movq *m, k22_arena *ar, const float *x,
                     int B, int H, int W, float *latents);
/* z: (B, latent_channels, h, w) device; image: (B, out_channels, h*f, w*f) device, written. */
void k22_movq_decode(const k22_backend *be, const k22_movq *m, k22_arena *ar, const float *z,
                     int B, int h, int w, float *image);

#endif
