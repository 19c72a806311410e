/* step_prior.c: the prior's micro-step (forward, loss, backward) and optimizer step (optim.h)
 * (include/k22/train_prior.h). */
#include "k22/train_prior.h"

#include <stdlib.h>
#include <string.h>

#include "k22/diffusers.h"

void k22_prior_train_hparams_default(k22_prior_train_hparams *hp)
{
    memset(hp, 0, sizeof *hp);
    hp->learning_rate = 1e-4;
    hp->adam_beta1 = 0.9;
    hp->adam_beta2 = 0.999;
    hp->adam_weight_decay = 0.0;
    hp->adam_epsilon = 1e-8;
    hp->max_grad_norm = 1.0;
    hp->snr_gamma = 0.0;
    hp->gradient_accumulation_steps = 1;
    hp->lr_scheduler = K22_LR_CONSTANT;
    hp->lr_warmup_steps = 500;
    hp->max_train_steps = 1;
    hp->world_size = 1;
    hp->use_ema = 0;
    hp->micro_batch = 1;
}

static k22_status check_hparams(const k22_prior_train_hparams *hp, k22_err *err)
{
    k22_optim_flags f = {hp->adam_beta1, hp->adam_beta2, hp->adam_epsilon, hp->adam_weight_decay,
                         hp->max_grad_norm, hp->snr_gamma, hp->gradient_accumulation_steps,
                         hp->micro_batch, 1 << 20};
    return k22_optim_flags_check(&f, err);
}

static void alloc_buffers(k22_prior_trainer *tr)
{
    const k22_backend *be = tr->be;
    const k22_prior_config *c = &tr->cfg.u.prior;
    size_t Bm = (size_t)tr->hp.micro_batch, E = (size_t)c->embedding_dim, f = sizeof(float);
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
                                         const k22_prior_train_hparams *hp, k22_err *err)
{
    memset(tr, 0, sizeof *tr);
    tr->ps = *ps;
    memset(ps, 0, sizeof *ps); /* taken over whatever happens next */
    k22_status st = check_hparams(hp, err);
    if (st) goto out;
    if (cfg->kind != K22_MODEL_PRIOR) {
        st = k22_err_set(err, K22_ERR_ARG, "train-prior: the model is a %s, not a PriorTransformer",
                         k22_model_class_name(cfg->kind));
        goto out;
    }
    const k22_prior_config *c = &cfg->u.prior;
    if (c->embedding_dim != c->clip_embed_dim) {
        st = k22_err_set(err, K22_ERR_UNSUPPORTED,
                         "train-prior: embedding_dim %d differs from clip_embed_dim %d (the loss compares the "
                         "prediction with the normalized image embedding)", c->embedding_dim, c->clip_embed_dim);
        goto out;
    }
    const k22_param *mean = k22_params_find(&tr->ps, "clip_mean"), *sd = k22_params_find(&tr->ps, "clip_std");
    if (!tr->ps.data || !mean || !sd) {
        st = k22_err_set(err, K22_ERR_ARG, "train-prior: the prior has no loaded clip_mean/clip_std");
        goto out;
    }
    st = k22_lr_schedule_init(&tr->lr, hp->lr_scheduler, hp->learning_rate, hp->lr_warmup_steps,
                              hp->max_train_steps, hp->gradient_accumulation_steps, hp->world_size, err);
    if (st) goto out;
    k22_sched_config sc;
    st = k22_sched_preset("prior_train", &sc, err);
    if (!st) st = k22_noise_schedule_init(&tr->sched, &sc, err);
    if (st) goto out;
    tr->be = be;
    tr->hp = *hp;
    tr->cfg = *cfg;
    k22_optim_init(&tr->opt, be, &tr->ps, hp->use_ema);
    tr->P = tr->opt.P;
    tr->G = tr->opt.G;
    tr->M = tr->opt.M;
    tr->V = tr->opt.V;
    tr->S = tr->opt.S;
    alloc_buffers(tr);
    /* The script clones clip_mean/std before training; they never change afterwards anyway. */
    k22_prior_norm_init(&tr->norm, be, tr->P + mean->offset, tr->P + sd->offset, c->clip_embed_dim);
    k22_prior_init(&tr->model, c, &tr->ps, tr->P, tr->G, hp->micro_batch);
    k22_arena_init(&tr->arena, be, k22_prior_arena_floats(&tr->model, hp->micro_batch, 1));
out:
    if (st) {
        k22_noise_schedule_free(&tr->sched);
        k22_params_free(&tr->ps);
        memset(tr, 0, sizeof *tr);
    }
    return st;
}

k22_status k22_prior_trainer_init(k22_prior_trainer *tr, const k22_backend *be, const char *dir,
                                  const k22_prior_train_hparams *hp, k22_err *err)
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
    const k22_backend *be = tr->be;
    if (be) {
        float *bufs[] = {tr->proj, tr->ehs, tr->img, tr->noise, tr->t, tr->w, tr->loss, tr->x0,
                         tr->x_t, tr->pred, tr->dpred, tr->tmp};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
            if (bufs[i]) be->free(be->ctx, bufs[i]);
        k22_prior_norm_free(&tr->norm, be);
        k22_arena_free(&tr->arena);
        k22_prior_free(&tr->model);
        k22_optim_free(&tr->opt);
    }
    k22_noise_schedule_free(&tr->sched);
    k22_params_free(&tr->ps);
    free(tr->w_host);
    free(tr->t_host);
    memset(tr, 0, sizeof *tr);
}

static void upload_batch(k22_prior_trainer *tr, const k22_prior_batch *b)
{
    const k22_backend *be = tr->be;
    const k22_prior_config *c = &tr->cfg.u.prior;
    size_t B = (size_t)b->B, E = (size_t)c->embedding_dim, f = sizeof(float);
    be->to_device(be->ctx, tr->proj, b->text_embeds, B * (size_t)c->embedding_proj_dim * f);
    be->to_device(be->ctx, tr->ehs, b->text_hidden, B * (size_t)c->num_embeddings * E * f);
    be->to_device(be->ctx, tr->img, b->image_embeds, B * E * f);
    be->to_device(be->ctx, tr->noise, b->noise, B * E * f);
    /* The prior embeds float(t); integers below 2^24 are exact. */
    for (size_t i = 0; i < B; i++) tr->t_host[i] = (float)b->timesteps[i];
    be->to_device(be->ctx, tr->t, tr->t_host, B * f);
}

float k22_prior_trainer_micro_step(k22_prior_trainer *tr, const k22_prior_batch *b)
{
    const k22_backend *be = tr->be;
    int B = b->B, A = tr->hp.gradient_accumulation_steps;
    int64_t E = tr->cfg.u.prior.embedding_dim;
    K22_REQUIRE(B >= 1 && B <= tr->hp.micro_batch && tr->micro < A);
    for (int i = 0; i < B; i++) K22_REQUIRE(b->timesteps[i] >= 0 && b->timesteps[i] < tr->sched.T);
    upload_batch(tr, b);
    // x0, x_t: (B, E); the target is x0
    k22_prior_prepare(be, &tr->norm, &tr->sched, tr->x0, tr->x_t, tr->img, tr->noise, b->timesteps,
                      B, tr->tmp);
    // pred: (B, E)
    k22_prior_forward(be, &tr->model, &tr->arena, tr->x_t, tr->t, tr->proj, tr->ehs, b->text_mask,
                      B, tr->pred, 1);
    const float *w = NULL;
    if (tr->hp.snr_gamma > 0) {
        k22_min_snr_weights(&tr->sched, b->timesteps, B, tr->hp.snr_gamma, tr->sched.pred, tr->w_host);
        be->to_device(be->ctx, tr->w, tr->w_host, (size_t)B * sizeof(float));
        w = tr->w;
    }
    be->mse_fwd(be->ctx, tr->loss, NULL, tr->pred, tr->x0, w, B, E);
    /* accelerate's backward divides the loss by A; torch hands 1/A down as a float. */
    be->zero(be->ctx, tr->dpred, (size_t)B * (size_t)E * sizeof(float));
    be->mse_bwd(be->ctx, tr->dpred, (float)(1.0 / A), tr->pred, tr->x0, w, B, E);
    k22_prior_backward(be, &tr->model, &tr->arena, tr->dpred, NULL, NULL, NULL);
    k22_arena_reset(&tr->arena, 0);
    float loss;
    be->to_host(be->ctx, &loss, tr->loss, sizeof loss);
    tr->train_loss += (double)loss / A; /* the script's `train_loss += avg_loss.item() / A` */
    tr->micro++;
    return loss;
}

int k22_prior_trainer_sync_due(const k22_prior_trainer *tr)
{
    return tr->micro >= tr->hp.gradient_accumulation_steps;
}

void k22_prior_trainer_sync(k22_prior_trainer *tr, k22_prior_step_log *log)
{
    K22_REQUIRE(tr->micro >= 1);
    double lr = k22_lr_at(&tr->lr, tr->global_step);
    k22_optim_step_args a = {.lr = lr, .beta1 = tr->hp.adam_beta1, .beta2 = tr->hp.adam_beta2,
                             .eps = tr->hp.adam_epsilon, .weight_decay = tr->hp.adam_weight_decay,
                             .max_grad_norm = tr->hp.max_grad_norm, .step = tr->global_step + 1};
    float norm = k22_optim_step(&tr->opt, &a);
    tr->global_step++;
    if (log) {
        log->step = tr->global_step;
        log->loss = tr->train_loss;
        log->lr = lr;
        log->grad_norm = norm;
    }
    tr->train_loss = 0.0;
    tr->micro = 0;
}

k22_status k22_prior_trainer_save(k22_prior_trainer *tr, const char *dir, int ema, k22_err *err)
{
    return k22_optim_save(&tr->opt, ema, dir, &tr->cfg, &tr->ps, err);
}
