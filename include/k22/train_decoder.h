/* train_decoder.h: the decoder's training step, model side, as train_text_to_image_decoder.py
 * computes it (reference-math.md section 2; tools/reference/decoder_train_ref.py runs the script's
 * loop and tests/train/test_decoder_step.c holds this file to it).
 *
 * Per micro-batch (the frozen encoders' outputs, the noise and the timesteps come in):
 *   x_t = add_noise(latents, noise, t) with the decoder folder's scheduler config;
 *   pred = unet(x_t, t, image_embeds)[:, :4] (out_channels 8: the variance channels get a zero
 *   gradient, as in the script); target = noise whatever the prediction type (the script), or,
 *   with correct_v_target under v_prediction, get_velocity(latents, noise, t) (a k22 option, off
 *   by default); loss = MSE(pred, target), or under snr_gamma mean_b(mse_b * w_b) with
 *   w = min(snr, gamma) / snr (epsilon), / (snr + 1) (v_prediction), as the script;
 *   backward of loss / A (accelerate's scaling under gradient accumulation).
 * At a sync step (every A micro-steps, or early at an epoch's end): clip_grad_norm_ over all UNet
 * parameters, AdamW at the lr of this optimizer step, zero the gradients, EMA (optim.h).
 * The logged loss of a step is the script's train_loss: the sum over its micro-steps of loss / A
 * in double. With several ranks the all-reduce and the loss gather belong between the micro-steps
 * and the sync (src/dist, not here). */
#ifndef K22_TRAIN_DECODER_H
#define K22_TRAIN_DECODER_H

#include "k22/arena.h"
#include "k22/loss.h"
#include "k22/train_core.h"
#include "k22/unet.h"

/* The shared flags and what the decoder adds. */
typedef struct {
    k22_train_hparams base;
    int correct_v_target;             /* 0: target = noise always (the script); 1: the velocity
                                         under a v_prediction scheduler (k22 option) */
    int latent_h, latent_w;           /* the latents' size every micro-step uses */
} k22_decoder_train_hparams;

/* The script's defaults; max_train_steps 1, micro_batch 1 and 64x64 latents (512 px) until the
 * caller sets them. */
void k22_decoder_train_hparams_default(k22_decoder_train_hparams *hp);

/* One micro-batch, host memory (E = encoder_hid_dim, h x w = latent_h x latent_w). The trainer
 * copies it to the backend; nothing is kept after the call. */
typedef struct {
    int B;
    const float *latents;      /* (B, 4, h, w) the MoVQ encoder's output (no scaling) */
    const float *image_embeds; /* (B, E) CLIP image_embeds */
    const float *noise;        /* (B, 4, h, w) */
    const int64_t *timesteps;  /* (B) in [0, T) */
} k22_decoder_batch;

/* What --checkpoint_levels auto saw and chose at set-up, after the weights, gradients, optimizer
 * state and step buffers were allocated and before the arena: the fewest checkpointed levels
 * whose arena fits in the backend's free memory less a reserve for what the backend allocates
 * later (step_decoder.c says what). on 0 when the levels were given. */
typedef struct {
    int on;
    size_t free_bytes;    /* k22_backend_mem_free (K22_MEM_FREE_MIB replaces it) */
    size_t reserve_bytes; /* kept back from it */
    int levels;           /* k22_unet_ckpt_levels_fit's answer (K22_UNET_CKPT_ALL: every block) */
    int fits;             /* 0: not even the smallest arena fits; the run may run out of memory */
} k22_ckpt_auto;
/* The reserve, in bytes, on the safe side: the backend's grow-only op scratch (cuDNN's workspace,
 * up to 256 MiB; the 16-bit copies of a convolution's operands; attention's score chunks) scales
 * with the largest activation of a micro-batch of B at H x W latents, 8 bytes for each of its
 * floats; 768 MiB for the libraries (NCCL's buffers, cuBLASLt, a context's growth); under
 * bf16/fp16 the 16-bit weight shadow, 2 bytes for each of nparams, and 4 bytes more per float for
 * the im2col fallback's float copy of a 16-bit conv input (a resnet input of up to twice the
 * largest activation's channels, less the 16-bit copy cuDNN would have made). */
size_t k22_decoder_ckpt_reserve(const k22_unet_config *c, int B, int H, int W, k22_precision prec,
                                int64_t nparams);

typedef struct {
    k22_train_core core;       /* shared hyper-parameters, weights, optimizer, step counters */
    int latent_h, latent_w;    /* the decoder's additions to core.hp */
    k22_unet model;
    k22_arena arena;
    k22_ckpt_auto ckpt_auto;
    k22_noise_schedule sched;
    int v_target;              /* correct_v_target under a v_prediction schedule */
    /* step buffers, backend: */
    float *lat, *img, *noise, *target; /* (Bmax, 4, h, w), (Bmax, E), (Bmax, 4, h, w) x2 */
    float *x_t, *out, *dout;   /* (Bmax, 4, h, w), (Bmax, 8, h, w) x2 */
    float *pred, *dpred;       /* (Bmax, 4, h, w) each: the first 4 output channels */
    float *t, *w, *loss, *tmp; /* (Bmax), (Bmax), (1), (4 h w) */
    float *w_host, *t_host;    /* (Bmax) host */
} k22_decoder_trainer;

/* Loads unet_dir (a UNet2DConditionModel folder) and sets the trainer up on be with the noise
 * schedule of sched (the decoder folder's scheduler/scheduler_config.json). K22_ERR_ARG for
 * hyper-parameters out of range (naming the flag) or a latent size the UNet cannot take,
 * K22_ERR_UNSUPPORTED for a UNet whose in_channels is not 4 or out_channels below 4; the
 * loader's and the schedule's errors otherwise. On failure tr is left empty
 * (k22_decoder_trainer_free is still fine). */
k22_status k22_decoder_trainer_init(k22_decoder_trainer *tr, const k22_backend *be,
                                    const char *unet_dir, const k22_sched_config *sched,
                                    const k22_decoder_train_hparams *hp, k22_err *err);
/* The same from a built table with host weights (k22_component_load's output). Takes ps over,
 * on success and on failure: the caller's struct is emptied. */
k22_status k22_decoder_trainer_init_loaded(k22_decoder_trainer *tr, const k22_backend *be,
                                           const k22_model_config *cfg, k22_params *ps,
                                           const k22_sched_config *sched,
                                           const k22_decoder_train_hparams *hp, k22_err *err);
void k22_decoder_trainer_free(k22_decoder_trainer *tr);

/* One micro-batch: forward, loss, backward (gradients add up). Returns the micro-batch's loss
 * (unscaled, the script's `loss`). b->B must be 1..micro_batch, at most A micro-steps may run
 * between syncs, and the timesteps must lie in the schedule (program invariants). */
float k22_decoder_trainer_micro_step(k22_decoder_trainer *tr, const k22_decoder_batch *b);
/* The same loss without backward (held-out data): no gradient or counter changes. */
float k22_decoder_trainer_eval(k22_decoder_trainer *tr, const k22_decoder_batch *b);
/* The sync step, the step log and saving are the core's (train_core.h) on &tr->core. */

/* diffusers get_velocity: v = sqrt_a[t_b] * noise - sqrt_1ma[t_b] * latents per sample, each
 * product rounded, then the difference, as torch's float kernels do. latents, noise, v: (B, N)
 * backend, v distinct from both; t: (B) host; tmp: (N) backend scratch. */
void k22_decoder_velocity(const k22_backend *be, const k22_noise_schedule *s, float *v,
                          const float *latents, const float *noise, const int64_t *t, int B,
                          int64_t N, float *tmp);

#endif
