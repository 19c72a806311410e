/* loss.h: the model-independent part of each stage's training step: the noisy input and the
 * target the loss compares against (reference-math.md sections 1 and 2; DESIGN.md section 4).
 *
 *   prior:   x0 = (image_embeds - clip_mean) / clip_std   (float subtraction, then division)
 *            x_t = add_noise(x0, noise, t), target = x0
 *   decoder: x_t = add_noise(latents, noise, t), target = noise (whatever the prediction type)
 * The Min-SNR weights are k22_min_snr_weights (schedule.h): the prior uses its own DDPM
 * (squaredcos_cap_v2, prediction "sample": w = min(snr, gamma)); the decoder uses its config's
 * prediction type. */
#ifndef K22_LOSS_H
#define K22_LOSS_H

#include "k22/schedule.h"

/* clip_mean / clip_std captured once before training, as the script clones them before
 * accelerator.prepare (they are parameters but never change the normalization afterwards). */
typedef struct {
    int64_t E;
    float *mean, *std;          /* host copies (E) */
    float *neg_mean, *inv_std;  /* backend memory (E), only for a non-host backend */
} k22_prior_norm;

/* Copies clip_mean, clip_std ((E) each, backend memory) into pn. Free with k22_prior_norm_free. */
void k22_prior_norm_init(k22_prior_norm *pn, const k22_backend *be, const float *clip_mean,
                         const float *clip_std, int64_t E);
void k22_prior_norm_free(k22_prior_norm *pn, const k22_backend *be);

/* x0 = (image_embeds - clip_mean) / clip_std. image_embeds, x0: (B, E) backend memory; x0 may
 * alias image_embeds. Bit-exact with torch on a host backend (a plain loop: the op interface
 * has no division). On a device backend it is x + (-mean) then * (1/std) through the ops,
 * within 1.5 ulp of the division: a `div` op in ops.h would make it exact. */
void k22_prior_x0(const k22_backend *be, const k22_prior_norm *pn, float *x0,
                  const float *image_embeds, int B);

/* The prior's step inputs: x0 (the target, (B, E)) and x_t ((B, E)) from image_embeds,
 * noise ((B, E)) and t ((B) host). tmp: (E) backend scratch. */
void k22_prior_prepare(const k22_backend *be, const k22_prior_norm *pn,
                       const k22_noise_schedule *s, float *x0, float *x_t,
                       const float *image_embeds, const float *noise, const int64_t *t, int B,
                       float *tmp);

/* The decoder's: x_t ((B, N), N = 4*h*w) from latents and noise; the target is `noise` itself.
 * tmp: (N) backend scratch. */
void k22_decoder_prepare(const k22_backend *be, const k22_noise_schedule *s, float *x_t,
                         const float *latents, const float *noise, const int64_t *t, int B,
                         int64_t N, float *tmp);

#endif
