/* train_core.h: what the prior and decoder trainers share: the script flags that shape an
 * optimizer step, and the optimizer side of a trainer (weights and their table, AdamW, EMA, the
 * LR schedule, the step counters and the script's logged train_loss). The stage trainers
 * (train_prior.h, train_decoder.h) add their model, noise schedule and batch buffers. */
#ifndef K22_TRAIN_CORE_H
#define K22_TRAIN_CORE_H

#include "k22/grad_marks.h"
#include "k22/grad_overlap.h"
#include "k22/lr_schedule.h"
#include "k22/optim.h"

/* The scripts' flags that change a step (names follow the flags). */
typedef struct {
    double learning_rate;             /* 1e-4 */
    double adam_beta1, adam_beta2;    /* 0.9, 0.999 */
    double adam_weight_decay;         /* 0 */
    double adam_epsilon;              /* 1e-8 */
    double max_grad_norm;             /* 1.0 */
    double snr_gamma;                 /* 0: off (the script's None) */
    int gradient_accumulation_steps;  /* 1 */
    k22_lr_kind lr_scheduler;         /* constant */
    int64_t lr_warmup_steps;          /* 500 (ignored by constant) */
    int64_t max_train_steps;          /* the schedule's length in optimizer steps */
    int world_size;                   /* 1; scheduler steps per optimizer step */
    int use_ema;                      /* 0 */
    int gradient_checkpointing;       /* 0; the arena is sized for the mode chosen here */
    int checkpoint_levels;            /* the decoder under gradient_checkpointing: 0 every block;
                                       * N the blocks at the N highest resolutions (unet.h);
                                       * K22_CKPT_LEVELS_AUTO: the fewest that fit (train_decoder.h) */
    int micro_batch;                  /* the largest B a micro-step is given */
    int zero_stage;                   /* 0; 1: ZeRO-1 optimizer state sharding (optim.h) */
    int64_t bucket_floats;            /* > 0: the all-reduce in buckets of this many floats, sent
                                       * during the backward (grad_overlap.h); 0: one exchange after
                                       * it. Used with dist on several ranks (under ZeRO-1 each
                                       * bucket goes to the ranks that own it) */
    k22_precision precision;          /* --mixed_precision: the backend's GEMM precision (ops.h);
                                       * fp16 turns the dynamic loss scaler on */
    k22_dist *dist;                   /* NULL: one process; else the ranks the sync exchanges with */
} k22_train_hparams;
#define K22_CKPT_LEVELS_AUTO (-1)
#define K22_CKPT_LEVELS_MAX 16
/* --checkpoint_levels as text: "auto" (K22_CKPT_LEVELS_AUTO) or a whole number 0 ..
 * K22_CKPT_LEVELS_MAX into *levels; 0 (and *levels untouched) for anything else. */
int k22_ckpt_levels_parse(const char *s, int64_t *levels);
/* And back: "auto" or the number (buf holds at least 24 chars). */
const char *k22_ckpt_levels_name(int64_t levels, char *buf);

/* The scripts' defaults; max_train_steps 1 and micro_batch 1 until the caller sets them. */
void k22_train_hparams_default(k22_train_hparams *hp);

/* What one optimizer step reports. */
typedef struct {
    int64_t step;     /* global_step after the step (1 for the first) */
    double loss;      /* the script's logged train_loss */
    double lr;        /* the lr this step used */
    float grad_norm;  /* the norm before clipping (clip_grad_norm_'s return value) */
    int skipped;      /* 1: the gradient norm was not finite and nothing was updated */
    int overflow;     /* fp16: skipped with a finite loss: the loss scale was too large (halved) */
    double loss_scale; /* fp16: the scale this step's backward used; 1 otherwise */
} k22_train_step_log;

/* torch.amp.GradScaler as accelerate sets it up for --mixed_precision fp16: the loss is scaled
 * by `scale` before the backward, the gradients unscaled after the all-reduce; a non-finite
 * gradient skips the step and halves the scale, and every 2000 finite steps in a row double it. */
#define K22_LOSS_SCALE_INIT 65536.0
#define K22_LOSS_SCALE_GROWTH_INTERVAL 2000
/* Below this scale an overflow can no longer be the scale's doing: such skips count toward
 * --max_skipped_steps again (torch has no floor and would halve forever). */
#define K22_LOSS_SCALE_MIN (1.0 / 65536.0)
typedef struct {
    int on;            /* fp16 only */
    double scale;      /* 1 when off */
    int64_t good;      /* finite steps since the scale last changed (GradScaler's growth tracker) */
} k22_loss_scaler;

typedef struct {
    const k22_backend *be;
    k22_train_hparams hp;
    k22_model_config cfg;
    k22_params ps;             /* the table; ps.data is host staging for loads and saves */
    k22_optim opt;             /* weights, gradients, moments, EMA (owns the buffers) */
    k22_lr_schedule lr;
    int64_t global_step;       /* optimizer steps taken */
    int micro;                 /* micro-steps since the last sync */
    double train_loss;         /* the script's accumulator, reset at each sync */
    /* Under gradient accumulation (A > 1) each micro-step's gradient is computed into a zeroed G
     * and then added here, as torch's AccumulateGrad adds a fresh gradient to .grad: so A
     * micro-steps sum exactly as A ranks' gradients do in the all-reduce (2 ranks x 1 equal
     * 1 rank x 2 bit for bit). Backend (opt.padded floats), NULL when A is 1. */
    float *Gacc;
    int64_t nonfinite_run;     /* skipped syncs in a row (0 after a good one); fp16 overflows
                                * with a finite loss are the scaler's business and not counted
                                * (while its scale is at least K22_LOSS_SCALE_MIN) */
    int64_t nonfinite_total;   /* skipped syncs in this process (overflows included) */
    k22_loss_scaler scaler;
    /* The bucketed exchange (hp.bucket_floats), NULL when off; grad_hook is what the trainer
     * gives its model (k22_train_core_grad_hook). */
    k22_grad_overlap *overlap;
    k22_grad_hook grad_hook;
} k22_train_core;

/* Checks hp (K22_ERR_ARG naming the flag; micro_batch at most max_micro_batch) and that ps holds
 * loaded weights, then sets the LR schedule and the optimizer up on be. Takes ps over on success
 * and on failure (the caller's struct is emptied); on failure c is left empty. stage names the
 * command in messages ("train-prior"). */
k22_status k22_train_core_init(k22_train_core *c, const char *stage, const k22_backend *be,
                               const k22_model_config *cfg, k22_params *ps,
                               const k22_train_hparams *hp, int max_micro_batch, k22_err *err);
void k22_train_core_free(k22_train_core *c);

/* The hook the trainer sets on its model (the bucketed exchange's), NULL when that is off. */
const k22_grad_hook *k22_train_core_grad_hook(const k22_train_core *c);
/* Starts a micro-step of B samples: checks 1 <= B <= micro_batch and fewer than A micro-steps
 * since the last sync; on the A-th, arms the bucketed exchange (every rank does: a collective
 * the first time). */
void k22_train_core_begin_micro(k22_train_core *c, int B);
/* The dloss a micro-step's backward starts from: loss_scale / A (1 / A without fp16). */
float k22_train_core_dloss(const k22_train_core *c);
/* Ends a micro-step with its unscaled loss: train_loss += loss / A (the script's accumulation). */
void k22_train_core_end_micro(k22_train_core *c, float loss);
/* The loss the step left at dev (backend memory, one float), on the host. */
float k22_train_core_loss(const k22_train_core *c, const float *dev);
/* 1 when A micro-steps have run since the last sync. */
int k22_train_core_sync_due(const k22_train_core *c);
/* The optimizer step after 1..A micro-steps (every rank of hp.dist calls it): the gradient mean
 * over the ranks, unscale (fp16), clip, AdamW at this step's lr, zero the gradients, EMA
 * (k22_optim_step). Fills log when non-NULL; log->loss is the mean over the ranks. A non-finite
 * gradient norm skips the update (optim.h): the step is not counted (global_step stays, so the
 * LR schedule does not advance either, as accelerate's scheduler after a skipped fp16 step),
 * nonfinite_total goes up, log->skipped is 1, and nonfinite_run goes up unless it was an fp16
 * overflow (finite mean loss: the scaler halves its scale and the step is retried with it). */
void k22_train_core_sync(k22_train_core *c, k22_train_step_log *log);
/* GradScaler.update after a step whose gradients were finite (1) or not (0). */
void k22_loss_scaler_update(k22_loss_scaler *s, int finite);
/* Writes the trained weights (ema != 0: the EMA shadow, which needs use_ema) as a diffusers
 * component folder into dir. */
k22_status k22_train_core_save(k22_train_core *c, const char *dir, int ema, k22_err *err);

#endif
