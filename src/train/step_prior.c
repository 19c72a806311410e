/* step_prior.c: the prior trainer's set-up and micro-step (forward, loss, backward)
 * (include/k22/train_prior.h); the optimizer step is the shared core's (train_core.c). */
#include "k22/train_prior.h"

#include <stdlib.h>
#include <string.h>

#include "k22/diffusers.h"

static void alloc_buffers(k22_prior_trainer *tr)
{
    const k22_backend *be = tr->core.be;
    const k22_prior_config *c = &tr->core.cfg.u.prior;
    size_t Bm = (size_t)tr->core.hp.micro_batch, E = (size_t)c->embedding_dim, f = sizeof(float);
    tr->proj = be->alloc(be->ctx, Bm * (size_t)c->embedding_proj_dim * f);
    tr->ehs = be->alloc(be->ctx, Bm * (size_t)c->num_embeddings * E * f);
    tr->img = be->alloc(be->ctx, Bm * E * f);
    tr->noise = be->alloc(be->ctx, Bm * E * f);
    tr->t = be->alloc(be->ctx, Bm * f);
    tr->w = be->alloc(be->ctx, Bm * f);
    tr->loss = be->alloc(be->ctx, f);
    tr->x0 = be->alloc(be->ctx, Bm * E * f);
    tr->x_t = be->alloc(be->ctx, Bm * E * f);
    tr->pred = be->alloc(be->ctx, Bm * E * f);
    tr->dpred = be->alloc(be->ctx, Bm * E * f);
    tr->tmp = be->alloc(be->ctx, E * f);
    tr->w_host = k22_xcalloc(Bm, sizeof(float));
    tr->t_host = k22_xcalloc(Bm, sizeof(float));
}

k22_status k22_prior_trainer_init_loaded(k22_prior_trainer *tr, const k22_backend *be,
                                         const k22_model_config *cfg, k22_params *ps,
                                         const k22_train_hparams *hp, k22_err *err)
{
    memset(tr, 0, sizeof *tr);
    k22_status st = k22_train_core_init(&tr->core, "train-prior", be, cfg, ps, hp, 1 << 20, err);
    if (st) return st;
    k22_train_core *co = &tr->core;
    const k22_prior_config *c = &cfg->u.prior;
    const k22_param *mean = k22_params_find(&co->ps, "clip_mean"), *sd = k22_params_find(&co->ps, "clip_std");
    if (cfg->kind != K22_MODEL_PRIOR)
        st = k22_err_set(err, K22_ERR_ARG, "train-prior: the model is a %s, not a PriorTransformer",
                         k22_model_class_name(cfg->kind));
    else if (c->embedding_dim != c->clip_embed_dim)
        st = k22_err_set(err, K22_ERR_UNSUPPORTED,
                         "train-prior: embedding_dim %d differs from clip_embed_dim %d (the loss compares the "
                         "prediction with the normalized image embedding)", c->embedding_dim, c->clip_embed_dim);
    else if (!mean || !sd)
        st = k22_err_set(err, K22_ERR_ARG, "train-prior: the prior has no loaded clip_mean/clip_std");
    if (!st) {
        k22_sched_config sc;
        st = k22_sched_preset("prior_train", &sc, err);
        if (!st) st = k22_noise_schedule_init(&tr->sched, &sc, err);
    }
    if (st) {
        k22_prior_trainer_free(tr);
        return st;
    }
    alloc_buffers(tr);
    /* The script clones clip_mean/std before training; they never change afterwards anyway. */
    k22_prior_norm_init(&tr->norm, be, co->opt.P + mean->offset, co->opt.P + sd->offset, c->clip_embed_dim);
    k22_prior_init(&tr->model, c, &co->ps, co->opt.P, co->opt.G, hp->micro_batch);
    tr->model.grad_hook = k22_train_core_grad_hook(co); /* buckets sent during backward */
    /* Set before sizing: the arena of a checkpointed forward is the smaller one. */
    k22_prior_set_gradient_checkpointing(&tr->model, hp->gradient_checkpointing);
    k22_prior_set_act16(&tr->model, k22_backend_act16(be)); /* before sizing */
    k22_arena_init(&tr->arena, be, k22_prior_arena_floats(&tr->model, hp->micro_batch, 1));
    return K22_OK;
}

k22_status k22_prior_trainer_init(k22_prior_trainer *tr, const k22_backend *be, const char *dir,
                                  const k22_train_hparams *hp, k22_err *err)
{
    memset(tr, 0, sizeof *tr);
    k22_model_config cfg;
    k22_params ps;
    k22_params_init(&ps);
    k22_status st = k22_component_load(dir, &cfg, &ps, err);
    if (st) return st;
    return k22_prior_trainer_init_loaded(tr, be, &cfg, &ps, hp, err);
}

void k22_prior_trainer_free(k22_prior_trainer *tr)
{
    const k22_backend *be = tr->core.be;
    if (be) {
        float *bufs[] = {tr->proj, tr->ehs, tr->img, tr->noise, tr->t, tr->w, tr->loss, tr->x0,
                         tr->x_t, tr->pred, tr->dpred, tr->tmp};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
            if (bufs[i]) be->free(be->ctx, bufs[i]);
        k22_prior_norm_free(&tr->norm, be);
        k22_arena_free(&tr->arena);
        k22_prior_free(&tr->model);
    }
    k22_train_core_free(&tr->core);
    k22_noise_schedule_free(&tr->sched);
    free(tr->w_host);
    free(tr->t_host);
    memset(tr, 0, sizeof *tr);
}

static void upload_batch(k22_prior_trainer *tr, const k22_prior_batch *b)
{
    const k22_backend *be = tr->core.be;
    const k22_prior_config *c = &tr->core.cfg.u.prior;
    size_t B = (size_t)b->B, E = (size_t)c->embedding_dim, f = sizeof(float);
    be->to_device(be->ctx, tr->proj, b->text_embeds, B * (size_t)c->embedding_proj_dim * f);
    be->to_device(be->ctx, tr->ehs, b->text_hidden, B * (size_t)c->num_embeddings * E * f);
    be->to_device(be->ctx, tr->img, b->image_embeds, B * E * f);
    be->to_device(be->ctx, tr->noise, b->noise, B * E * f);
    /* The prior embeds float(t); integers below 2^24 are exact. */
    for (size_t i = 0; i < B; i++) tr->t_host[i] = (float)b->timesteps[i];
    be->to_device(be->ctx, tr->t, tr->t_host, B * f);
}

/* Forward and the loss of b into tr->loss (device); train keeps what backward needs. */
static const float *forward_loss(k22_prior_trainer *tr, const k22_prior_batch *b, int train)
{
    const k22_backend *be = tr->core.be;
    int B = b->B;
    int64_t E = tr->core.cfg.u.prior.embedding_dim;
    K22_REQUIRE(B >= 1 && B <= tr->core.hp.micro_batch);
    for (int i = 0; i < B; i++) K22_REQUIRE(b->timesteps[i] >= 0 && b->timesteps[i] < tr->sched.T);
    upload_batch(tr, b);
    // x0, x_t: (B, E); the target is x0
    k22_prior_prepare(be, &tr->norm, &tr->sched, tr->x0, tr->x_t, tr->img, tr->noise, b->timesteps,
                      B, tr->tmp);
    // pred: (B, E)
    k22_prior_forward(be, &tr->model, &tr->arena, tr->x_t, tr->t, tr->proj, tr->ehs, b->text_mask,
                      B, tr->pred, train);
    const float *w = NULL;
    if (tr->core.hp.snr_gamma > 0) {
        k22_min_snr_weights(&tr->sched, b->timesteps, B, tr->core.hp.snr_gamma, tr->sched.pred, tr->w_host);
        be->to_device(be->ctx, tr->w, tr->w_host, (size_t)B * sizeof(float));
        w = tr->w;
    }
    be->mse_fwd(be->ctx, tr->loss, NULL, tr->pred, tr->x0, w, B, E);
    return w;
}

float k22_prior_trainer_eval(k22_prior_trainer *tr, const k22_prior_batch *b)
{
    forward_loss(tr, b, 0);
    k22_arena_reset(&tr->arena, 0);
    return k22_train_core_loss(&tr->core, tr->loss);
}

float k22_prior_trainer_micro_step(k22_prior_trainer *tr, const k22_prior_batch *b)
{
    const k22_backend *be = tr->core.be;
    int B = b->B;
    int64_t E = tr->core.cfg.u.prior.embedding_dim;
    k22_train_core_begin_micro(&tr->core, B);
    const float *w = forward_loss(tr, b, 1);
    /* accelerate's backward divides the loss by A (and GradScaler multiplies it by its scale
     * under fp16); torch hands that down as a float. */
    be->zero(be->ctx, tr->dpred, (size_t)B * (size_t)E * sizeof(float));
    be->mse_bwd(be->ctx, tr->dpred, k22_train_core_dloss(&tr->core), tr->pred, tr->x0, w, B, E);
    k22_prior_backward(be, &tr->model, &tr->arena, tr->dpred, NULL, NULL, NULL);
    k22_arena_reset(&tr->arena, 0);
    float loss = k22_train_core_loss(&tr->core, tr->loss);
    k22_train_core_end_micro(&tr->core, loss);
    return loss;
}
