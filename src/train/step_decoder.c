/* step_decoder.c: the decoder's micro-step (add_noise, UNet forward, loss on the first four
 * output channels, backward) and optimizer step (optim.h) (include/k22/train_decoder.h). */
#include "k22/train_decoder.h"

#include <stdlib.h>
#include <string.h>

#include "k22/diffusers.h"

#define LATENT_C 4 /* the MoVQ latent channels; the loss sees this many output channels */

void k22_decoder_train_hparams_default(k22_decoder_train_hparams *hp)
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
    hp->correct_v_target = 0;
    hp->micro_batch = 1;
    hp->latent_h = hp->latent_w = 64;
}

static k22_status check_hparams(const k22_decoder_train_hparams *hp, k22_err *err)
{
    k22_optim_flags f = {hp->adam_beta1, hp->adam_beta2, hp->adam_epsilon, hp->adam_weight_decay,
                         hp->max_grad_norm, hp->snr_gamma, hp->gradient_accumulation_steps,
                         hp->micro_batch, 1 << 16};
    return k22_optim_flags_check(&f, err);
}

/* The UNet halves the latents nblocks - 1 times and the skips must line up again. */
static k22_status check_model(const k22_model_config *cfg, const k22_decoder_train_hparams *hp, k22_err *err)
{
    if (cfg->kind != K22_MODEL_UNET)
        return k22_err_set(err, K22_ERR_ARG, "train-decoder: the model is a %s, not a UNet2DConditionModel",
                           k22_model_class_name(cfg->kind));
    const k22_unet_config *c = &cfg->u.unet;
    if (c->in_channels != LATENT_C || c->out_channels < LATENT_C)
        return k22_err_set(err, K22_ERR_UNSUPPORTED,
                           "train-decoder: the UNet takes %d channels and gives %d (the loss needs %d in and at "
                           "least %d out)", c->in_channels, c->out_channels, LATENT_C, LATENT_C);
    int m = 1 << (c->nblocks - 1);
    if (hp->latent_h < 1 || hp->latent_w < 1 || hp->latent_h > 4096 || hp->latent_w > 4096 ||
        hp->latent_h % m || hp->latent_w % m)
        return k22_err_set(err, K22_ERR_ARG, "train-decoder: latents %dx%d: the UNet needs sides in 1..4096 "
                           "divisible by %d (--resolution / 8)", hp->latent_h, hp->latent_w, m);
    return K22_OK;
}

static void alloc_buffers(k22_decoder_trainer *tr)
{
    const k22_backend *be = tr->be;
    const k22_unet_config *c = &tr->cfg.u.unet;
    size_t Bm = (size_t)tr->hp.micro_batch, f = sizeof(float);
    size_t hw = (size_t)tr->hp.latent_h * (size_t)tr->hp.latent_w, N = LATENT_C * hw;
    tr->lat = be->alloc(be->ctx, Bm * N * f);
    tr->img = be->alloc(be->ctx, Bm * (size_t)c->encoder_hid_dim * f);
    tr->noise = be->alloc(be->ctx, Bm * N * f);
    tr->target = be->alloc(be->ctx, Bm * N * f);
    tr->x_t = be->alloc(be->ctx, Bm * N * f);
    tr->out = be->alloc(be->ctx, Bm * (size_t)c->out_channels * hw * f);
    tr->dout = be->alloc(be->ctx, Bm * (size_t)c->out_channels * hw * f);
    tr->pred = be->alloc(be->ctx, Bm * N * f);
    tr->dpred = be->alloc(be->ctx, Bm * N * f);
    tr->t = be->alloc(be->ctx, Bm * f);
    tr->w = be->alloc(be->ctx, Bm * f);
    tr->loss = be->alloc(be->ctx, f);
    tr->tmp = be->alloc(be->ctx, N * f);
    tr->w_host = k22_xcalloc(Bm, sizeof(float));
    tr->t_host = k22_xcalloc(Bm, sizeof(float));
}

k22_status k22_decoder_trainer_init_loaded(k22_decoder_trainer *tr, const k22_backend *be,
                                           const k22_model_config *cfg, k22_params *ps,
                                           const k22_sched_config *sched,
                                           const k22_decoder_train_hparams *hp, k22_err *err)
{
    memset(tr, 0, sizeof *tr);
    tr->ps = *ps;
    memset(ps, 0, sizeof *ps); /* taken over whatever happens next */
    k22_status st = check_hparams(hp, err);
    if (!st) st = check_model(cfg, hp, err);
    if (st) goto out;
    if (!tr->ps.data) {
        st = k22_err_set(err, K22_ERR_ARG, "train-decoder: the UNet has no loaded weights");
        goto out;
    }
    st = k22_lr_schedule_init(&tr->lr, hp->lr_scheduler, hp->learning_rate, hp->lr_warmup_steps,
                              hp->max_train_steps, hp->gradient_accumulation_steps, hp->world_size, err);
    if (!st) st = k22_noise_schedule_init(&tr->sched, sched, err);
    if (st) goto out;
    tr->be = be;
    tr->hp = *hp;
    tr->cfg = *cfg;
    tr->v_target = hp->correct_v_target && tr->sched.pred == K22_PRED_V;
    k22_optim_init(&tr->opt, be, &tr->ps, hp->use_ema);
    alloc_buffers(tr);
    k22_unet_init(&tr->model, &cfg->u.unet, &tr->ps, tr->opt.P, tr->opt.G);
    k22_arena_init(&tr->arena, be, k22_unet_arena_floats(&tr->model, hp->micro_batch, hp->latent_h,
                                                         hp->latent_w, 1));
out:
    if (st) {
        k22_noise_schedule_free(&tr->sched);
        k22_params_free(&tr->ps);
        memset(tr, 0, sizeof *tr);
    }
    return st;
}

k22_status k22_decoder_trainer_init(k22_decoder_trainer *tr, const k22_backend *be,
                                    const char *unet_dir, const k22_sched_config *sched,
                                    const k22_decoder_train_hparams *hp, k22_err *err)
{
    memset(tr, 0, sizeof *tr);
    k22_model_config cfg;
    k22_params ps;
    k22_params_init(&ps);
    k22_status st = k22_component_load(unet_dir, &cfg, &ps, err);
    if (st) return st;
    return k22_decoder_trainer_init_loaded(tr, be, &cfg, &ps, sched, hp, err);
}

void k22_decoder_trainer_free(k22_decoder_trainer *tr)
{
    const k22_backend *be = tr->be;
    if (be) {
        float *bufs[] = {tr->lat, tr->img, tr->noise, tr->target, tr->x_t, tr->out, tr->dout,
                         tr->pred, tr->dpred, tr->t, tr->w, tr->loss, tr->tmp};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
            if (bufs[i]) be->free(be->ctx, bufs[i]);
        k22_arena_free(&tr->arena);
        k22_unet_free(&tr->model);
        k22_optim_free(&tr->opt);
    }
    k22_noise_schedule_free(&tr->sched);
    k22_params_free(&tr->ps);
    free(tr->w_host);
    free(tr->t_host);
    memset(tr, 0, sizeof *tr);
}

static void upload_batch(k22_decoder_trainer *tr, const k22_decoder_batch *b, size_t N)
{
    const k22_backend *be = tr->be;
    size_t B = (size_t)b->B, f = sizeof(float);
    be->to_device(be->ctx, tr->lat, b->latents, B * N * f);
    be->to_device(be->ctx, tr->img, b->image_embeds, B * (size_t)tr->cfg.u.unet.encoder_hid_dim * f);
    be->to_device(be->ctx, tr->noise, b->noise, B * N * f);
    /* The time projection takes float(t); integers below 2^24 are exact. */
    for (size_t i = 0; i < B; i++) tr->t_host[i] = (float)b->timesteps[i];
    be->to_device(be->ctx, tr->t, tr->t_host, B * f);
}

/* The difference is added as the negated product: the same float as a subtraction. */
void k22_decoder_velocity(const k22_backend *be, const k22_noise_schedule *s, float *v,
                          const float *latents, const float *noise, const int64_t *t, int B,
                          int64_t N, float *tmp)
{
    for (int b = 0; b < B; b++) {
        float sa, s1;
        k22_noise_coefs(s, t[b], &sa, &s1);
        float *vb = v + (int64_t)b * N;
        be->scale(be->ctx, vb, noise + (int64_t)b * N, sa, N);
        be->scale(be->ctx, tmp, latents + (int64_t)b * N, -s1, N);
        be->add(be->ctx, vb, vb, tmp, N);
    }
}

float k22_decoder_trainer_micro_step(k22_decoder_trainer *tr, const k22_decoder_batch *b)
{
    const k22_backend *be = tr->be;
    int B = b->B, A = tr->hp.gradient_accumulation_steps, H = tr->hp.latent_h, W = tr->hp.latent_w;
    int CO = tr->cfg.u.unet.out_channels;
    int64_t N = (int64_t)LATENT_C * H * W, NO = (int64_t)CO * H * W;
    size_t f = sizeof(float);
    K22_REQUIRE(B >= 1 && B <= tr->hp.micro_batch && tr->micro < A);
    for (int i = 0; i < B; i++) K22_REQUIRE(b->timesteps[i] >= 0 && b->timesteps[i] < tr->sched.T);
    upload_batch(tr, b, (size_t)N);
    // x_t: (B, 4, H, W)
    k22_decoder_prepare(be, &tr->sched, tr->x_t, tr->lat, tr->noise, b->timesteps, B, N, tr->tmp);
    const float *target = tr->noise;
    if (tr->v_target) {
        k22_decoder_velocity(be, &tr->sched, tr->target, tr->lat, tr->noise, b->timesteps, B, N, tr->tmp);
        target = tr->target;
    }
    // out: (B, CO, H, W); pred = out[:, :4]
    k22_unet_forward(be, &tr->model, &tr->arena, tr->x_t, tr->t, tr->img, B, H, W, tr->out, 1);
    for (int i = 0; i < B; i++)
        be->copy(be->ctx, tr->pred + i * N, tr->out + i * NO, (size_t)N * f);
    const float *w = NULL;
    if (tr->hp.snr_gamma > 0) {
        k22_min_snr_weights(&tr->sched, b->timesteps, B, tr->hp.snr_gamma, tr->sched.pred, tr->w_host);
        be->to_device(be->ctx, tr->w, tr->w_host, (size_t)B * f);
        w = tr->w;
    }
    be->mse_fwd(be->ctx, tr->loss, NULL, tr->pred, target, w, B, N);
    /* accelerate's backward divides the loss by A; torch hands 1/A down as a float. */
    be->zero(be->ctx, tr->dpred, (size_t)B * (size_t)N * f);
    be->mse_bwd(be->ctx, tr->dpred, (float)(1.0 / A), tr->pred, target, w, B, N);
    // dout: (B, CO, H, W), zero outside the first 4 channels
    be->zero(be->ctx, tr->dout, (size_t)B * (size_t)NO * f);
    for (int i = 0; i < B; i++)
        be->copy(be->ctx, tr->dout + i * NO, tr->dpred + i * N, (size_t)N * f);
    k22_unet_backward(be, &tr->model, &tr->arena, tr->dout, NULL);
    k22_arena_reset(&tr->arena, 0);
    float loss;
    be->to_host(be->ctx, &loss, tr->loss, sizeof loss);
    tr->train_loss += (double)loss / A; /* the script's `train_loss += avg_loss.item() / A` */
    tr->micro++;
    return loss;
}

int k22_decoder_trainer_sync_due(const k22_decoder_trainer *tr)
{
    return tr->micro >= tr->hp.gradient_accumulation_steps;
}

void k22_decoder_trainer_sync(k22_decoder_trainer *tr, k22_decoder_step_log *log)
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

k22_status k22_decoder_trainer_save(k22_decoder_trainer *tr, const char *dir, int ema, k22_err *err)
{
    return k22_optim_save(&tr->opt, ema, dir, &tr->cfg, &tr->ps, err);
}
