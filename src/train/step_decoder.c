/* step_decoder.c: the decoder trainer's set-up and micro-step (add_noise, UNet forward, loss on
 * the first four output channels, backward) (include/k22/train_decoder.h); the optimizer step is
 * the shared core's (train_core.c). */
#include "k22/train_decoder.h"

#include <stdlib.h>
#include <string.h>

#include "k22/diffusers.h"

#define LATENT_C 4 /* the MoVQ latent channels; the loss sees this many output channels */

void k22_decoder_train_hparams_default(k22_decoder_train_hparams *hp)
{
    memset(hp, 0, sizeof *hp);
    k22_train_hparams_default(&hp->base);
    hp->latent_h = hp->latent_w = 64;
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
                           "divisible by %d (the pack's latent size)", hp->latent_h, hp->latent_w, m);
    return K22_OK;
}

static void alloc_buffers(k22_decoder_trainer *tr)
{
    const k22_backend *be = tr->core.be;
    const k22_unet_config *c = &tr->core.cfg.u.unet;
    size_t Bm = (size_t)tr->core.hp.micro_batch, f = sizeof(float);
    size_t hw = (size_t)tr->latent_h * (size_t)tr->latent_w, N = LATENT_C * hw;
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

size_t k22_decoder_ckpt_reserve(const k22_unet_config *c, int B, int H, int W, k22_precision prec,
                                int64_t nparams)
{
    size_t act = 0;
    for (int l = 0; l < c->nblocks; l++) {
        size_t a = (size_t)B * (size_t)c->block_out_channels[l] * (size_t)(H >> l) * (size_t)(W >> l);
        if (a > act) act = a;
    }
    size_t lowp = prec != K22_PREC_FP32 ? 4 * act + 2 * (size_t)nparams : 0;
    return ((size_t)768 << 20) + 8 * act + lowp;
}

/* --checkpoint_levels auto: the choice, from the backend's free memory less the reserve. */
static int auto_levels(k22_decoder_trainer *tr)
{
    const k22_train_hparams *b = &tr->core.hp;
    int B = b->micro_batch, H = tr->latent_h, W = tr->latent_w;
    k22_ckpt_auto *a = &tr->ckpt_auto;
    a->on = 1;
    a->free_bytes = k22_backend_mem_free(tr->core.be, NULL);
    /* the backend's precision: what its GEMMs will take (the bench sets it without hp) */
    a->reserve_bytes = k22_decoder_ckpt_reserve(&tr->core.cfg.u.unet, B, H, W,
                                                (k22_precision)tr->core.be->precision, tr->core.opt.total);
    size_t budget = a->free_bytes > a->reserve_bytes ? (a->free_bytes - a->reserve_bytes) / sizeof(float) : 0;
    a->levels = k22_unet_ckpt_levels_fit(&tr->model, B, H, W, budget, &a->fits);
    return a->levels;
}

k22_status k22_decoder_trainer_init_loaded(k22_decoder_trainer *tr, const k22_backend *be,
                                           const k22_model_config *cfg, k22_params *ps,
                                           const k22_sched_config *sched,
                                           const k22_decoder_train_hparams *hp, k22_err *err)
{
    memset(tr, 0, sizeof *tr);
    k22_status st = k22_train_core_init(&tr->core, "train-decoder", be, cfg, ps, &hp->base, 1 << 16, err);
    if (st) return st;
    st = check_model(cfg, hp, err);
    if (!st) st = k22_noise_schedule_init(&tr->sched, sched, err);
    if (st) {
        k22_decoder_trainer_free(tr);
        return st;
    }
    const k22_train_hparams *b = &hp->base;
    tr->latent_h = hp->latent_h;
    tr->latent_w = hp->latent_w;
    tr->v_target = hp->correct_v_target && tr->sched.pred == K22_PRED_V;
    alloc_buffers(tr);
    k22_unet_init(&tr->model, &cfg->u.unet, &tr->core.ps, tr->core.opt.P, tr->core.opt.G);
    tr->model.grad_hook = k22_train_core_grad_hook(&tr->core); /* buckets sent during backward */
    /* Set before sizing: the arena of a checkpointed forward is the smaller one, and so is
     * that of 16-bit conv inputs (bf16/fp16 on a backend that has them). */
    k22_unet_set_act16(&tr->model, k22_backend_act16(be));
    k22_unet_set_checkpoint_levels(&tr->model, !b->gradient_checkpointing ? 0
                                               : b->checkpoint_levels == K22_CKPT_LEVELS_AUTO ? auto_levels(tr)
                                               : b->checkpoint_levels > 0 ? b->checkpoint_levels
                                                                          : K22_UNET_CKPT_ALL);
    k22_arena_init(&tr->arena, be, k22_unet_arena_floats(&tr->model, b->micro_batch, hp->latent_h,
                                                         hp->latent_w, 1));
    return K22_OK;
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
    const k22_backend *be = tr->core.be;
    if (be) {
        float *bufs[] = {tr->lat, tr->img, tr->noise, tr->target, tr->x_t, tr->out, tr->dout,
                         tr->pred, tr->dpred, tr->t, tr->w, tr->loss, tr->tmp};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
            if (bufs[i]) be->free(be->ctx, bufs[i]);
        k22_arena_free(&tr->arena);
        k22_unet_free(&tr->model);
    }
    k22_train_core_free(&tr->core);
    k22_noise_schedule_free(&tr->sched);
    free(tr->w_host);
    free(tr->t_host);
    memset(tr, 0, sizeof *tr);
}

static void upload_batch(k22_decoder_trainer *tr, const k22_decoder_batch *b, size_t N)
{
    const k22_backend *be = tr->core.be;
    size_t B = (size_t)b->B, f = sizeof(float);
    be->to_device(be->ctx, tr->lat, b->latents, B * N * f);
    be->to_device(be->ctx, tr->img, b->image_embeds, B * (size_t)tr->core.cfg.u.unet.encoder_hid_dim * f);
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

/* Forward and the loss of b into tr->loss (device); train keeps what backward needs. Returns
 * the target the loss compared with; *w the Min-SNR weights or NULL. */
static const float *forward_loss(k22_decoder_trainer *tr, const k22_decoder_batch *b, int train,
                                 const float **w_out)
{
    const k22_backend *be = tr->core.be;
    int B = b->B, H = tr->latent_h, W = tr->latent_w;
    int CO = tr->core.cfg.u.unet.out_channels;
    int64_t N = (int64_t)LATENT_C * H * W, NO = (int64_t)CO * H * W;
    size_t f = sizeof(float);
    K22_REQUIRE(B >= 1 && B <= tr->core.hp.micro_batch);
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
    k22_unet_forward(be, &tr->model, &tr->arena, tr->x_t, tr->t, tr->img, B, H, W, tr->out, train);
    for (int i = 0; i < B; i++)
        be->copy(be->ctx, tr->pred + i * N, tr->out + i * NO, (size_t)N * f);
    const float *w = NULL;
    if (tr->core.hp.snr_gamma > 0) {
        k22_min_snr_weights(&tr->sched, b->timesteps, B, tr->core.hp.snr_gamma, tr->sched.pred, tr->w_host);
        be->to_device(be->ctx, tr->w, tr->w_host, (size_t)B * f);
        w = tr->w;
    }
    be->mse_fwd(be->ctx, tr->loss, NULL, tr->pred, target, w, B, N);
    *w_out = w;
    return target;
}

float k22_decoder_trainer_eval(k22_decoder_trainer *tr, const k22_decoder_batch *b)
{
    const float *w;
    forward_loss(tr, b, 0, &w);
    k22_arena_reset(&tr->arena, 0);
    return k22_train_core_loss(&tr->core, tr->loss);
}

float k22_decoder_trainer_micro_step(k22_decoder_trainer *tr, const k22_decoder_batch *b)
{
    const k22_backend *be = tr->core.be;
    int B = b->B, H = tr->latent_h, W = tr->latent_w;
    int CO = tr->core.cfg.u.unet.out_channels;
    int64_t N = (int64_t)LATENT_C * H * W, NO = (int64_t)CO * H * W;
    size_t f = sizeof(float);
    k22_train_core_begin_micro(&tr->core, B);
    const float *w;
    const float *target = forward_loss(tr, b, 1, &w);
    /* accelerate's backward divides the loss by A (and GradScaler multiplies it by its scale
     * under fp16); torch hands that down as a float. */
    be->zero(be->ctx, tr->dpred, (size_t)B * (size_t)N * f);
    be->mse_bwd(be->ctx, tr->dpred, k22_train_core_dloss(&tr->core), tr->pred, target, w, B, N);
    // dout: (B, CO, H, W), zero outside the first 4 channels
    be->zero(be->ctx, tr->dout, (size_t)B * (size_t)NO * f);
    for (int i = 0; i < B; i++)
        be->copy(be->ctx, tr->dout + i * NO, tr->dpred + i * N, (size_t)N * f);
    k22_unet_backward(be, &tr->model, &tr->arena, tr->dout, NULL);
    k22_arena_reset(&tr->arena, 0);
    float loss = k22_train_core_loss(&tr->core, tr->loss);
    k22_train_core_end_micro(&tr->core, loss);
    return loss;
}
