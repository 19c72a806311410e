/* optim.h: the optimizer side of a training step over one flat parameter buffer, shared by the
 * stage trainers: the weights, gradients, AdamW moments and EMA shadow on the backend, and the
 * sync step the scripts run through accelerate: clip_grad_norm_ over the trainable parameters,
 * AdamW, zero the gradients, then EMAModel.step (trained values follow the EMA rule, the others
 * are copied). Trainable parameters are walked as runs of consecutive table entries: the
 * alignment padding inside a run has zero weights and gradients, which every update keeps zero. */
#ifndef K22_OPTIM_H
#define K22_OPTIM_H

#include "k22/config.h"
#include "k22/ema.h"
#include "k22/params.h"

typedef struct {
    const k22_backend *be;
    int64_t total;             /* floats in each buffer (the table's total) */
    float *P, *G, *M, *V;      /* backend (total) each: weights, gradients, AdamW moments */
    float *S;                  /* backend (total) EMA shadow, NULL without EMA */
    float *ema_scratch;        /* backend (n_ema_scratch) */
    int64_t n_ema_scratch;
    int nspans;                /* runs of trainable parameters */
    int64_t *span_off, *span_len;
    int nfrozen;               /* parameters without gradient (copied by the EMA step) */
    int64_t *frozen_off, *frozen_len;
    k22_ema ema;
} k22_optim;

/* Sets o up for the table ps with its host weights ps->data (copied to the backend; the EMA
 * shadow, with use_ema, starts as a copy of them, as EMAModel does). Moments start at zero. */
void k22_optim_init(k22_optim *o, const k22_backend *be, const k22_params *ps, int use_ema);
void k22_optim_free(k22_optim *o);

/* The optimizer settings of a sync step; step is AdamW's 1-based step count. */
typedef struct {
    double lr, beta1, beta2, eps, weight_decay, max_grad_norm;
    int64_t step;
} k22_optim_step_args;

/* Clip (torch clip_grad_norm_ over the trainable runs), AdamW, zero every gradient, EMA step
 * when enabled. Returns the gradient norm before clipping. A non-finite norm (an inf or NaN
 * gradient) skips the update: the gradients are zeroed and weights, moments and EMA kept. */
float k22_optim_step(k22_optim *o, const k22_optim_step_args *a);

/* Copies the weights (ema != 0: the EMA shadow) into ps->data and writes cfg + ps as a diffusers
 * component folder dir. K22_ERR_ARG naming dir when ema is asked for without an EMA shadow. */
k22_status k22_optim_save(const k22_optim *o, int ema, const char *dir, const k22_model_config *cfg,
                          k22_params *ps, k22_err *err);

/* The step flags every stage trainer takes (names follow the scripts' flags), for one check. */
typedef struct {
    double adam_beta1, adam_beta2, adam_epsilon, adam_weight_decay, max_grad_norm, snr_gamma;
    int gradient_accumulation_steps;
    int micro_batch, micro_batch_max; /* the trainer's largest B, and its cap on it */
} k22_optim_flags;

/* K22_ERR_ARG naming the flag that is out of range. */
k22_status k22_optim_flags_check(const k22_optim_flags *f, k22_err *err);

#endif
