/* train_core.c: the optimizer side both stage trainers share (include/k22/train_core.h). */
#include "k22/train_core.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void k22_train_hparams_default(k22_train_hparams *hp)
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
    hp->micro_batch = 1;
}

k22_status k22_train_core_init(k22_train_core *c, const char *stage, const k22_backend *be,
                               const k22_model_config *cfg, k22_params *ps,
                               const k22_train_hparams *hp, int max_micro_batch, k22_err *err)
{
    memset(c, 0, sizeof *c);
    c->ps = *ps;
    memset(ps, 0, sizeof *ps); /* taken over whatever happens next */
    k22_optim_flags f = {hp->adam_beta1, hp->adam_beta2, hp->adam_epsilon, hp->adam_weight_decay,
                         hp->max_grad_norm, hp->snr_gamma, hp->gradient_accumulation_steps,
                         hp->micro_batch, max_micro_batch};
    k22_status st = k22_optim_flags_check(&f, err);
    if (!st && (hp->zero_stage < 0 || hp->zero_stage > 1))
        st = k22_err_set(err, K22_ERR_ARG, "--zero_stage must be 0 or 1, got %d", hp->zero_stage);
    if (!st && !c->ps.data)
        st = k22_err_set(err, K22_ERR_ARG, "%s: the %s has no loaded weights", stage,
                         k22_model_class_name(cfg->kind));
    if (!st)
        st = k22_lr_schedule_init(&c->lr, hp->lr_scheduler, hp->learning_rate, hp->lr_warmup_steps,
                                  hp->max_train_steps, hp->gradient_accumulation_steps, hp->world_size,
                                  err);
    if (st) {
        k22_params_free(&c->ps);
        memset(c, 0, sizeof *c);
        return st;
    }
    c->be = be;
    c->hp = *hp;
    c->scaler.on = hp->precision == K22_PREC_FP16;
    c->scaler.scale = c->scaler.on ? K22_LOSS_SCALE_INIT : 1.0;
    c->cfg = *cfg;
    k22_optim_init(&c->opt, be, &c->ps, hp->use_ema, hp->dist, hp->zero_stage);
    if (hp->gradient_accumulation_steps > 1) {
        size_t bytes = (size_t)c->opt.padded * sizeof(float);
        c->Gacc = be->alloc(be->ctx, bytes);
        be->zero(be->ctx, c->Gacc, bytes);
    }
    if (hp->bucket_floats > 0 && hp->dist && hp->dist->world > 1) {
        c->overlap = k22_grad_overlap_new(hp->dist, be, c->opt.G, c->Gacc, c->opt.total, hp->bucket_floats,
                                          c->opt.zero ? c->opt.Gs : NULL, c->opt.shard);
        c->grad_hook = (k22_grad_hook){k22_grad_overlap_ready, c->overlap};
    }
    return K22_OK;
}

const k22_grad_hook *k22_train_core_grad_hook(const k22_train_core *c)
{
    return c->overlap ? &c->grad_hook : NULL;
}

void k22_train_core_free(k22_train_core *c)
{
    if (c->be) k22_optim_free(&c->opt);
    if (c->Gacc) c->be->free(c->be->ctx, c->Gacc);
    k22_grad_overlap_free(c->overlap);
    k22_params_free(&c->ps);
    memset(c, 0, sizeof *c);
}

void k22_train_core_begin_micro(k22_train_core *c, int B)
{
    K22_REQUIRE(B >= 1 && B <= c->hp.micro_batch && c->micro < c->hp.gradient_accumulation_steps);
    /* The last micro-step of a full accumulation sends its buckets during its backward (a sync
     * after fewer micro-steps, at an epoch's end, exchanges the whole buffer as before). */
    if (c->overlap && c->micro == c->hp.gradient_accumulation_steps - 1)
        k22_grad_overlap_arm(c->overlap, c->Gacc != NULL);
}

float k22_train_core_dloss(const k22_train_core *c)
{
    /* accelerate divides the loss by A, then GradScaler multiplies it by the scale. */
    return (float)(c->scaler.scale / c->hp.gradient_accumulation_steps);
}

void k22_train_core_end_micro(k22_train_core *c, float loss)
{
    c->train_loss += (double)loss / c->hp.gradient_accumulation_steps; /* `train_loss += avg_loss.item() / A` */
    /* Armed, the buckets add Gacc into G themselves as they go (k22_grad_overlap_arm). */
    if (c->Gacc && !(c->overlap && k22_grad_overlap_armed(c->overlap))) {
        const k22_backend *be = c->be;
        size_t n = (size_t)c->opt.padded;
        /* the first gradient is copied, not added to zeros: 0 + g is g anyway, and cheaper */
        if (c->micro == 0) be->copy(be->ctx, c->Gacc, c->opt.G, n * sizeof(float));
        else be->add(be->ctx, c->Gacc, c->Gacc, c->opt.G, (int64_t)n);
        be->zero(be->ctx, c->opt.G, n * sizeof(float));
    }
    c->micro++;
}

float k22_train_core_loss(const k22_train_core *c, const float *dev)
{
    float loss;
    c->be->to_host(c->be->ctx, &loss, dev, sizeof loss);
    return loss;
}

int k22_train_core_sync_due(const k22_train_core *c)
{
    return c->micro >= c->hp.gradient_accumulation_steps;
}

void k22_train_core_sync(k22_train_core *c, k22_train_step_log *log)
{
    K22_REQUIRE(c->micro >= 1);
    int reduced = c->overlap && k22_grad_overlap_armed(c->overlap);
    if (reduced) /* the rest of the buckets, then G is the mean over ranks */
        k22_grad_overlap_finish(c->overlap);
    else if (c->Gacc) /* G is zero here; the optimizer step reads (and zeroes) G */
        c->be->copy(c->be->ctx, c->opt.G, c->Gacc, (size_t)c->opt.padded * sizeof(float));
    double lr = k22_lr_at(&c->lr, c->global_step);
    k22_optim_step_args a = {.lr = lr, .beta1 = c->hp.adam_beta1, .beta2 = c->hp.adam_beta2,
                             .eps = c->hp.adam_epsilon, .weight_decay = c->hp.adam_weight_decay,
                             .max_grad_norm = c->hp.max_grad_norm, .step = c->global_step + 1,
                             .loss_scale = c->scaler.scale, .reduced = reduced};
    float norm = k22_optim_step(&c->opt, &a);
    double loss = c->hp.dist ? k22_dist_mean_f64(c->hp.dist, c->train_loss) : c->train_loss;
    int skipped = !isfinite(norm);
    int overflow = skipped && c->scaler.on && isfinite(loss) && c->scaler.scale >= K22_LOSS_SCALE_MIN;
    double used_scale = c->scaler.scale;
    if (skipped) c->nonfinite_total++;
    if (skipped && !overflow) c->nonfinite_run++;
    if (!skipped) c->global_step++, c->nonfinite_run = 0;
    if (c->scaler.on) k22_loss_scaler_update(&c->scaler, !skipped);
    if (log) {
        log->step = c->global_step;
        log->loss = loss;
        log->lr = lr;
        log->grad_norm = norm;
        log->skipped = skipped;
        log->overflow = overflow;
        log->loss_scale = used_scale;
    }
    c->train_loss = 0.0;
    c->micro = 0;
}

void k22_loss_scaler_update(k22_loss_scaler *s, int finite)
{
    if (!finite) { /* GradScaler.update: backoff 0.5, tracker reset */
        s->scale *= 0.5;
        s->good = 0;
    } else if (++s->good == K22_LOSS_SCALE_GROWTH_INTERVAL) {
        s->scale *= 2.0;
        s->good = 0;
    }
}

k22_status k22_train_core_save(k22_train_core *c, const char *dir, int ema, k22_err *err)
{
    return k22_optim_save(&c->opt, ema, dir, &c->cfg, &c->ps, err);
}

int k22_ckpt_levels_parse(const char *s, int64_t *levels)
{
    if (!strcmp(s, "auto")) {
        *levels = K22_CKPT_LEVELS_AUTO;
        return 1;
    }
    char *end;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || v < 0 || v > K22_CKPT_LEVELS_MAX) return 0;
    *levels = v;
    return 1;
}

const char *k22_ckpt_levels_name(int64_t levels, char *buf)
{
    if (levels == K22_CKPT_LEVELS_AUTO) return "auto";
    snprintf(buf, 24, "%lld", (long long)levels);
    return buf;
}
