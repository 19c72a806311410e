/* train_prior.h: the prior's training step, model side, as train_text_to_image_prior.py computes
 * it (reference-math.md section 1; tools/reference/prior_train_ref.py runs the script's loop and
 * tests/train/test_prior_step.c holds this file to it).
 *
 * Per micro-batch (the frozen encoders' outputs, the noise and the timesteps come in):
 *   x0 = (image_embeds - clip_mean) / clip_std;  x_t = add_noise(x0, noise, t) (DDPM,
 *   squaredcos_cap_v2, prediction "sample");  pred = prior(x_t, t, text_embeds, text_hidden,
 *   text_mask);  loss = MSE(pred, x0), or under snr_gamma mean_b(mse_b * min(snr_t, gamma));
 *   backward of loss / A (accelerate's scaling under gradient accumulation; gradients add up).
 * At a sync step (every A micro-steps, or early at the end of an epoch, as accelerate does):
 *   clip the global gradient norm to max_grad_norm (torch clip_grad_norm_ over the parameters
 *   that have gradients: clip_mean/std have none and are left out), AdamW with the lr of this
 *   optimizer step (lr_schedule.h), zero the gradients, then the EMA step when enabled (trained
 *   values follow EMAModel's rule, clip_mean/std are copied).
 * The logged loss of a step is the script's train_loss: the sum over its micro-steps of
 * loss / A in double. With several ranks the gradient all-reduce and the loss gather belong
 * between the micro-steps and the sync (src/dist, not here). */
#ifndef K22_TRAIN_PRIOR_H
#define K22_TRAIN_PRIOR_H

#include "k22/arena.h"
#include "k22/loss.h"
#include "k22/prior.h"
#include "k22/train_core.h"

/* One micro-batch, host memory (E = embedding_dim = clip_embed_dim, EP = embedding_proj_dim,
 * L = num_embeddings). The trainer copies it to the backend; nothing is kept after the call. */
typedef struct {
    int B;
    const float *text_embeds;  /* (B, EP) CLIP text_embeds */
    const float *text_hidden;  /* (B, L, E) CLIP last_hidden_state */
    const uint8_t *text_mask;  /* (B, L) 1 = token, 0 = padding */
    const float *image_embeds; /* (B, E) CLIP image_embeds, not normalized */
    const float *noise;        /* (B, E) */
    const int64_t *timesteps;  /* (B) in [0, 1000) */
} k22_prior_batch;

typedef struct {
    k22_train_core core;       /* hyper-parameters, weights, optimizer, step counters */
    k22_prior model;
    k22_arena arena;
    k22_prior_norm norm;       /* clip_mean/std as loaded, before any step */
    k22_noise_schedule sched;
    /* step buffers, backend: */
    float *proj, *ehs, *img, *noise; /* (Bmax, EP), (Bmax, L, E), (Bmax, E), (Bmax, E) */
    float *t, *w, *loss;       /* (Bmax) timesteps as floats, (Bmax) Min-SNR weights, (1) */
    float *x0, *x_t, *pred, *dpred; /* (Bmax, E) each */
    float *tmp;                /* (E) */
    float *w_host, *t_host;    /* (Bmax) host */
} k22_prior_trainer;

/* Loads dir (a prior component folder: config.json + weights) and sets the trainer up on be.
 * K22_ERR_ARG for hyper-parameters out of range (naming the flag; micro_batch at most 2^20), K22_ERR_UNSUPPORTED for a
 * prior whose embedding_dim differs from clip_embed_dim (the loss compares them); the loader's
 * errors otherwise. On failure tr is left empty (k22_prior_trainer_free is still fine). */
k22_status k22_prior_trainer_init(k22_prior_trainer *tr, const k22_backend *be, const char *dir,
                                  const k22_train_hparams *hp, k22_err *err);
/* The same from a built table with host weights (k22_component_load's output). Takes ps over,
 * on success and on failure: the caller's struct is emptied. */
k22_status k22_prior_trainer_init_loaded(k22_prior_trainer *tr, const k22_backend *be,
                                         const k22_model_config *cfg, k22_params *ps,
                                         const k22_train_hparams *hp, k22_err *err);
void k22_prior_trainer_free(k22_prior_trainer *tr);

/* One micro-batch: forward, loss, backward (gradients add into G). Returns the micro-batch's
 * loss (unscaled, as the script's `loss`). b->B must be 1..micro_batch, at most A micro-steps
 * may run between syncs, and the timesteps must lie in the schedule (program invariants). */
float k22_prior_trainer_micro_step(k22_prior_trainer *tr, const k22_prior_batch *b);
/* The same loss without backward (held-out data): no gradient or counter changes. */
float k22_prior_trainer_eval(k22_prior_trainer *tr, const k22_prior_batch *b);
/* The sync step, the step log and saving are the core's (train_core.h) on &tr->core. */

#endif
