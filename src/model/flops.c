/* flops.c: forward FLOPs of the prior and the decoder UNet from their configs (see flops.h for
 * the counting rule). The UNet's layer list comes from k22_unet_init's shapes-only mode, so the
 * count walks the same steps the model runs; tests/unit/test_flops.c holds both counts to hand
 * counts and to torch's FlopCounterMode on the diffusers models. */
#include "k22/flops.h"

#include "k22/unet.h"

/* 2 * rows * in * out: one linear layer's matrix product. */
static double lin(double rows, double in, double out) { return 2.0 * rows * in * out; }

/* Both attention products, QK^T and PV: 2 * B * Sq * Skv * width each (width = heads * d). */
static double att(double B, double sq, double skv, double width) { return 4.0 * B * sq * skv * width; }

static void flops_sum(k22_flops *f) { f->total = f->linear + f->conv + f->attn; }

k22_flops k22_flops_prior_forward(const k22_prior_config *c, int B)
{
    k22_flops f = {0};
    double D = (double)c->num_attention_heads * c->attention_head_dim, L = c->num_embeddings;
    double T = L + c->additional_embeddings, E = c->embedding_dim, TE = c->time_embed_dim;
    /* per sample: time embedding D -> TE -> D, proj_in (x_t), embedding_proj (text_embeds),
     * the last token's proj_to_clip_embeddings; per text token: encoder_hidden_states_proj */
    f.linear = lin(B, D, TE) + lin(B, TE, D) + lin(B, E, D) + lin(B, c->embedding_proj_dim, D) +
               lin(B, D, c->clip_embed_dim) + lin((double)B * L, E, D);
    /* per layer over all T tokens: q, k, v, out (D x D each) and the 4D GELU MLP */
    double rows = (double)B * T;
    f.linear += c->num_layers * (4 * lin(rows, D, D) + 2 * lin(rows, D, 4 * D));
    f.attn = c->num_layers * att(B, T, T, D);
    flops_sum(&f);
    return f;
}

/* 3x3 convolution, stride 1, output (B, O, h, w). */
static double conv3(double B, double C, double O, double h, double w) { return 2.0 * B * O * h * w * C * 9; }

static void unet_res(const k22_unet *m, const k22_unet_step *s, int B, int H, int W, k22_flops *f)
{
    const k22_resnet *r = &m->res[s->layer];
    double h = H >> s->level, w = W >> s->level;
    /* conv1 runs after the resampling, at the block's output size */
    if (r->resample == K22_RESAMPLE_DOWN) h /= 2, w /= 2;
    if (r->resample == K22_RESAMPLE_UP) h *= 2, w *= 2;
    f->conv += conv3(B, r->cin, r->cout, h, w) + conv3(B, r->cout, r->cout, h, w);
    if (r->cin != r->cout) f->conv += 2.0 * B * r->cout * h * w * r->cin; /* 1x1 shortcut */
    f->linear += lin(B, m->TE, 2.0 * r->cout);                          /* scale | shift */
}

static void unet_attn(const k22_unet *m, const k22_unet_step *s, int B, int H, int W, k22_flops *f)
{
    double C = m->attn[s->layer].C, S = (double)(H >> s->level) * (W >> s->level), L = m->L;
    double X = m->cfg.cross_attention_dim;
    /* q, k, v, out over the pixels; add_k/add_v over the image tokens; keys = L + S */
    f->linear += 4 * lin((double)B * S, C, C) + 2 * lin((double)B * L, X, C);
    f->attn += att(B, S, L + S, C);
}

/* The resnets' and attentions' FLOPs of steps [i0, i1) into f. */
static void unet_steps(const k22_unet *m, int i0, int i1, int B, int H, int W, k22_flops *f)
{
    for (int i = i0; i < i1; i++) {
        if (m->steps[i].kind == K22_USTEP_RES) unet_res(m, &m->steps[i], B, H, W, f);
        if (m->steps[i].kind == K22_USTEP_ATTN) unet_attn(m, &m->steps[i], B, H, W, f);
    }
}

k22_status k22_flops_unet_forward(const k22_unet_config *c, int B, int H, int W, k22_flops *out,
                                  k22_err *err)
{
    int q = 1 << (c->nblocks > 0 ? c->nblocks - 1 : 0);
    if (B < 1 || H < 1 || W < 1 || H % q || W % q)
        return k22_err_set(err, K22_ERR_ARG, "flops: batch %d, latents %dx%d: need B >= 1 and "
                           "sides that are positive multiples of %d", B, H, W, q);
    k22_model_config cfg = {.kind = K22_MODEL_UNET, .u.unet = *c};
    k22_params ps;
    k22_params_init(&ps);
    k22_status st = k22_params_build(&cfg, &ps, err);
    if (st) goto out;
    k22_unet m;
    k22_unet_init(&m, c, &ps, NULL, NULL); /* shapes only: no weights */
    k22_flops f = {0};
    double TE = m.TE, E = c->encoder_hid_dim;
    /* time embedding c0 -> TE -> TE, image addition embedding E -> TE, image tokens E -> L x cross */
    f.linear = lin(B, m.c0, TE) + lin(B, TE, TE) + lin(B, E, TE) +
               lin(B, E, (double)m.L * c->cross_attention_dim);
    f.conv = conv3(B, c->in_channels, m.c0, H, W) + conv3(B, m.c0, c->out_channels, H, W);
    unet_steps(&m, 0, m.nsteps, B, H, W, &f);
    flops_sum(&f);
    *out = f;
    k22_unet_free(&m);
out:
    k22_params_free(&ps);
    return st;
}

double k22_flops_unet_recompute(const k22_unet *m, int B, int H, int W, int levels)
{
    k22_flops f = {0};
    for (int g = 0; g < m->nsegs; g++)
        if (k22_unet_block_checkpointed(m, g, levels)) unet_steps(m, m->seg[g], m->seg[g + 1], B, H, W, &f);
    flops_sum(&f);
    return f.total;
}

double k22_flops_train(double forward) { return 3.0 * forward; }

double k22_flops_train_hw(double forward, int gradient_checkpointing)
{
    return (gradient_checkpointing ? 4.0 : 3.0) * forward;
}
