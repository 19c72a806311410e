/* sampler.c: loading the prior and decoder pipeline folders for sampling, and the checks that
 * their parts fit together (sample.h). The denoising loops are in sample_run.c. */
#include "sampler_internal.h"

#include "k22/diffusers.h"
#include "k22/fsutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Loads dir/sub, checks its class and copies the weights to the backend (the host copy is
 * dropped once every part is bound: drop_host_weights). */
static k22_status load_part(k22_sampler *s, const char *dir, const char *sub, k22_model_kind want,
                            k22_model_config *cfg, k22_params *ps, float **P, k22_err *err)
{
    char path[4096];
    k22_status st = k22_fs_join(path, sizeof path, dir, sub, err);
    if (st) return st;
    if (!k22_fs_is_dir(path))
        return k22_err_set(err, K22_ERR_IO, "%s: no such folder (a %s pipeline folder has %s/)", path,
                           want == K22_MODEL_UNET || want == K22_MODEL_MOVQ ? "decoder" : "prior", sub);
    st = k22_component_load(path, cfg, ps, err);
    if (st) return st;
    if (cfg->kind != want)
        return k22_err_set(err, K22_ERR_FORMAT, "%s/config.json: a %s, expected %s", path,
                           k22_model_class_name(cfg->kind), k22_model_class_name(want));
    const k22_backend *be = s->be;
    *P = be->alloc(be->ctx, ps->total * sizeof(float));
    be->to_device(be->ctx, *P, ps->data, ps->total * sizeof(float));
    return K22_OK;
}

static k22_status load_sched(const char *dir, k22_sched_kind want, k22_infer_sched *out, k22_err *err)
{
    char path[4096];
    k22_sched_config sc;
    k22_status st = k22_fs_join(path, sizeof path, dir, "scheduler/scheduler_config.json", err);
    if (!st) st = k22_sched_config_read(path, &sc, err);
    if (st) return st;
    if (sc.kind != want)
        return k22_err_set(err, K22_ERR_UNSUPPORTED, "%s: a %s; the %s pipeline samples with %s", path,
                           k22_sched_class_name(sc.kind), want == K22_SCHED_UNCLIP ? "prior" : "decoder",
                           k22_sched_class_name(want));
    st = k22_infer_sched_init(out, &sc, err);
    if (st) k22_err_prefix(err, "%s", path);
    return st;
}

static k22_status check_prior(const k22_sampler *s, const char *dir, k22_err *err)
{
    const k22_prior_config *p = &s->pcfg.u.prior;
    const k22_clip_text_config *t = &s->tcfg.u.clip_text;
    const k22_clip_vision_config *v = &s->vcfg.u.clip_vision;
    if (p->num_embeddings != K22_CLIP_MAX_LEN || t->max_position_embeddings < K22_CLIP_MAX_LEN)
        return k22_err_set(err, K22_ERR_FORMAT, "%s: the prior takes %d text tokens and the text encoder has %d "
                           "positions; the pipeline feeds %d", dir, p->num_embeddings,
                           t->max_position_embeddings, K22_CLIP_MAX_LEN);
    if (t->hidden_size != p->embedding_dim || t->projection_dim != p->embedding_proj_dim)
        return k22_err_set(err, K22_ERR_FORMAT, "%s: text encoder hidden_size %d / projection_dim %d, the prior "
                           "takes hidden states of %d and a text embedding of %d", dir, t->hidden_size,
                           t->projection_dim, p->embedding_dim, p->embedding_proj_dim);
    if (p->embedding_dim != p->clip_embed_dim || v->projection_dim != p->clip_embed_dim)
        return k22_err_set(err, K22_ERR_FORMAT, "%s: prior embedding_dim %d, clip_embed_dim %d and image encoder "
                           "projection_dim %d must agree", dir, p->embedding_dim, p->clip_embed_dim,
                           v->projection_dim);
    if (k22_tokenizer_vocab_size(s->tok) > t->vocab_size)
        return k22_err_set(err, K22_ERR_FORMAT, "%s: the tokenizer has %d ids, the text encoder's vocab_size is %d",
                           dir, (int)k22_tokenizer_vocab_size(s->tok), t->vocab_size);
    return K22_OK;
}

static k22_status check_decoder(const k22_sampler *s, const char *dir, k22_err *err)
{
    const k22_unet_config *u = &s->ucfg.u.unet;
    const k22_movq_config *m = &s->mcfg.u.movq;
    const char *vt = s->dsched.cfg.variance_type;
    int learned = !strcmp(vt, "learned") || !strcmp(vt, "learned_range");
    if (u->encoder_hid_dim != s->pcfg.u.prior.clip_embed_dim)
        return k22_err_set(err, K22_ERR_FORMAT, "%s/unet: encoder_hid_dim %d, the prior makes image embeddings "
                           "of %d", dir, u->encoder_hid_dim, s->pcfg.u.prior.clip_embed_dim);
    if (u->in_channels != m->latent_channels || m->vq_embed_dim != m->latent_channels)
        return k22_err_set(err, K22_ERR_FORMAT, "%s: unet in_channels %d, movq latent_channels %d", dir,
                           u->in_channels, m->latent_channels);
    if (u->out_channels != u->in_channels && u->out_channels != 2 * u->in_channels)
        return k22_err_set(err, K22_ERR_UNSUPPORTED, "%s/unet: out_channels %d is neither in_channels %d nor "
                           "twice it", dir, u->out_channels, u->in_channels);
    if (learned && u->out_channels != 2 * u->in_channels)
        return k22_err_set(err, K22_ERR_FORMAT, "%s/scheduler: variance_type %s needs a UNet with 2 x %d output "
                           "channels, it has %d", dir, vt, u->in_channels, u->out_channels);
    return k22_movq_config_check(m, err);
}

static k22_status open_prior(k22_sampler *s, const char *dir, k22_err *err)
{
    char path[4096];
    k22_status st = k22_fs_join(path, sizeof path, dir, "tokenizer", err);
    if (!st) st = k22_tokenizer_load_dir(path, &s->tok, err);
    if (!st) st = load_part(s, dir, "text_encoder", K22_MODEL_CLIP_TEXT, &s->tcfg, &s->tps, &s->tP, err);
    if (!st) st = load_part(s, dir, "image_encoder", K22_MODEL_CLIP_VISION, &s->vcfg, &s->vps, &s->vP, err);
    if (!st) st = load_part(s, dir, "prior", K22_MODEL_PRIOR, &s->pcfg, &s->pps, &s->pP, err);
    if (!st) st = load_sched(dir, K22_SCHED_UNCLIP, &s->psched, err);
    if (!st) st = check_prior(s, dir, err);
    if (st) return st;
    /* The prior's output is one embedding, never a mean and a variance. */
    if (strcmp(s->psched.cfg.variance_type, "fixed_small_log"))
        return k22_err_set(err, K22_ERR_UNSUPPORTED, "%s/scheduler: variance_type %s needs a learned variance the "
                           "prior does not predict (expected fixed_small_log)", dir, s->psched.cfg.variance_type);
    int E = s->pcfg.u.prior.clip_embed_dim;
    const k22_param *mean = k22_params_find(&s->pps, "clip_mean"), *sd = k22_params_find(&s->pps, "clip_std");
    if (!mean || !sd || (int64_t)mean->numel != E || (int64_t)sd->numel != E)
        return k22_err_set(err, K22_ERR_KEY, "%s/prior: no clip_mean/clip_std of %d values", dir, E);
    s->clip_mean = k22_xmalloc((size_t)E * sizeof(float));
    s->clip_std = k22_xmalloc((size_t)E * sizeof(float));
    memcpy(s->clip_mean, s->pps.data + mean->offset, (size_t)E * sizeof(float));
    memcpy(s->clip_std, s->pps.data + sd->offset, (size_t)E * sizeof(float));
    k22_clip_text_init(&s->text, &s->tcfg.u.clip_text, &s->tps, s->tP);
    k22_clip_vision_init(&s->vision, &s->vcfg.u.clip_vision, &s->vps, s->vP);
    s->prior_P = s->pP;
    s->have_prior = 1;
    return K22_OK;
}

static k22_status open_decoder(k22_sampler *s, const char *dir, k22_err *err)
{
    k22_status st = load_part(s, dir, "unet", K22_MODEL_UNET, &s->ucfg, &s->ups, &s->uP, err);
    if (!st) st = load_part(s, dir, "movq", K22_MODEL_MOVQ, &s->mcfg, &s->mps, &s->mP, err);
    if (!st) st = load_sched(dir, K22_SCHED_DDPM, &s->dsched, err);
    if (!st) st = check_decoder(s, dir, err);
    if (st) return st;
    k22_unet_init(&s->unet, &s->ucfg.u.unet, &s->ups, s->uP, NULL);
    k22_movq_init(&s->movq, &s->mcfg.u.movq, &s->mps, s->mP);
    s->have_decoder = 1;
    return K22_OK;
}

/* The host copies of the weights are not needed once the models are bound to the device copy. */
static void drop_host_weights(k22_sampler *s)
{
    k22_params *all[] = {&s->tps, &s->vps, &s->pps, &s->ups, &s->mps};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        free(all[i]->data);
        all[i]->data = NULL;
    }
}

/* Opens on s->be, which the caller has set. */
static k22_status open_dirs(k22_sampler *s, const char *prior_dir, const char *decoder_dir, k22_err *err)
{
    if (!prior_dir) return k22_err_set(err, K22_ERR_ARG, "sampling needs a prior pipeline folder");
    if (!k22_fs_is_dir(prior_dir)) return k22_err_set(err, K22_ERR_IO, "--prior %s: no such folder", prior_dir);
    if (decoder_dir && !k22_fs_is_dir(decoder_dir))
        return k22_err_set(err, K22_ERR_IO, "--decoder %s: no such folder", decoder_dir);
    k22_status st = open_prior(s, prior_dir, err);
    if (!st && decoder_dir) st = open_decoder(s, decoder_dir, err);
    if (!st) drop_host_weights(s);
    return st;
}

static k22_sampler *sampler_new(void)
{
    k22_sampler *s = k22_xcalloc(1, sizeof *s);
    k22_params *all[] = {&s->tps, &s->vps, &s->pps, &s->ups, &s->mps};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) k22_params_init(all[i]);
    return s;
}

k22_status k22_sampler_open_on(k22_sampler **out, const char *prior_dir, const char *decoder_dir,
                               const k22_backend *be, k22_err *err)
{
    k22_sampler *s = sampler_new();
    s->be = be;
    k22_status st = open_dirs(s, prior_dir, decoder_dir, err);
    if (st) k22_sampler_free(s), s = NULL;
    *out = s;
    return st;
}

k22_status k22_sampler_open(k22_sampler **out, const char *prior_dir, const char *decoder_dir,
                            const char *device, const char *precision, k22_err *err)
{
    *out = NULL;
    k22_sampler *s = sampler_new();
    k22_status st = K22_OK;
    s->own_be = k22_backend_open(device ? device : "cpu", precision, err);
    s->be = s->own_be;
    if (!s->be) st = err ? err->code : K22_ERR_ARG;
    if (!st) st = open_dirs(s, prior_dir, decoder_dir, err);
    if (st) k22_sampler_free(s), s = NULL;
    *out = s;
    return st;
}

/* Whether two parameter tables lay out the same tensors at the same offsets. */
static int same_table(const k22_params *a, const k22_params *b)
{
    if (a->count != b->count || a->total != b->total) return 0;
    for (int i = 0; i < a->count; i++) {
        const k22_param *x = &a->items[i], *y = &b->items[i];
        if (strcmp(x->name, y->name) || x->offset != y->offset || x->numel != y->numel || x->ndim != y->ndim ||
            memcmp(x->shape, y->shape, sizeof x->shape))
            return 0;
    }
    return 1;
}

k22_status k22_sampler_use_weights(k22_sampler *s, k22_model_kind kind, const k22_params *table,
                                   const float *P, k22_err *err)
{
    int prior = kind == K22_MODEL_PRIOR;
    if ((!prior && kind != K22_MODEL_UNET) || (prior && !s->have_prior) || (!prior && !s->have_decoder))
        return k22_err_set(err, K22_ERR_ARG, "use_weights: no loaded %s", k22_model_class_name(kind));
    const k22_params *mine = prior ? &s->pps : &s->ups;
    if (P && (!table || !same_table(table, mine)))
        return k22_err_set(err, K22_ERR_ARG, "use_weights: the %s weights given are laid out differently from "
                           "the loaded model's (%d tensors, %zu floats)", k22_model_class_name(kind), mine->count,
                           mine->total);
    if (prior) {
        /* rebound at the next batch */
        if (s->prior_bound) k22_prior_free(&s->prior);
        s->prior_bound = 0;
        s->prior_P = P ? P : s->pP;
    } else {
        k22_unet_free(&s->unet);
        k22_unet_init(&s->unet, &s->ucfg.u.unet, &s->ups, P ? P : s->uP, NULL);
    }
    return K22_OK;
}

/* The models and the device weights (nothing is on a device before the backend exists). */
static void free_models(k22_sampler *s)
{
    const k22_backend *be = s->be;
    if (s->have_prior) {
        k22_clip_text_free(&s->text);
        k22_clip_vision_free(&s->vision);
    }
    if (s->prior_bound) k22_prior_free(&s->prior);
    if (s->have_decoder) {
        k22_unet_free(&s->unet);
        k22_movq_free(&s->movq);
    }
    float *dev[] = {s->tP, s->vP, s->pP, s->uP, s->mP};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
        if (dev[i]) be->free(be->ctx, dev[i]);
}

void k22_sampler_free(k22_sampler *s)
{
    if (!s) return;
    if (s->be) free_models(s);
    k22_params *all[] = {&s->tps, &s->vps, &s->pps, &s->ups, &s->mps};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) k22_params_free(all[i]);
    k22_infer_sched_free(&s->psched);
    k22_infer_sched_free(&s->dsched);
    k22_tokenizer_free(s->tok);
    free(s->clip_mean);
    free(s->clip_std);
    free(s->zero_embed);
    if (s->own_be) k22_backend_free(s->own_be);
    free(s);
}

int k22_sampler_embed_dim(const k22_sampler *s)
{
    return s->pcfg.u.prior.clip_embed_dim;
}

/* Largest image side k22 samples; bounds every buffer size computed from it. */
#define MAX_SIDE 4096

k22_status k22_sampler_sizes(const k22_sampler *s, int height, int width, int *lat_h, int *lat_w,
                             int *img_h, int *img_w, k22_err *err)
{
    if (!s->have_decoder) return k22_err_set(err, K22_ERR_ARG, "no decoder pipeline loaded");
    if (height < 1 || height > MAX_SIDE || width < 1 || width > MAX_SIDE)
        return k22_err_set(err, K22_ERR_ARG, "image size %d x %d: height and width must be 1..%d", height,
                           width, MAX_SIDE);
    int f = k22_movq_factor(&s->movq), f2 = f * f;
    /* downscale_height_and_width: ceil(H / f^2) * f latents, so the image is a multiple of f^2. */
    int lh = (height + f2 - 1) / f2 * f, lw = (width + f2 - 1) / f2 * f;
    int ud = 1 << (s->ucfg.u.unet.nblocks - 1);
    if (lh % ud || lw % ud)
        return k22_err_set(err, K22_ERR_ARG, "image size %d x %d gives %d x %d latents (MoVQ factor %d), which "
                           "the UNet's %d down-sampling steps cannot halve evenly", height, width, lh, lw, f,
                           s->ucfg.u.unet.nblocks - 1);
    if (lh * f > MAX_SIDE || lw * f > MAX_SIDE)
        return k22_err_set(err, K22_ERR_ARG, "image size %d x %d rounds up to %d x %d, over %d", height, width,
                           lh * f, lw * f, MAX_SIDE);
    *lat_h = lh, *lat_w = lw, *img_h = lh * f, *img_w = lw * f;
    return K22_OK;
}
