/* schedule.h: the DDPM noise schedule of training (betas, alphas_cumprod), add_noise, SNR and the
 * Min-SNR loss weights, bit for bit as diffusers 0.42.1 / torch 2.15.0 compute them in float32 on
 * the CPU (tests/train/test_schedule.c holds every value to the pinned reference with zero
 * tolerance).
 *
 * Facts this reproduces (checked against the pinned torch, tools/reference/make_schedule_fixtures.py):
 *  - linear betas: torch.linspace(start, end, T, dtype=float32) on the CPU computes
 *    step = (float(end) - float(start)) / (T - 1) in float, then fmaf(step, i, start) for
 *    i < T/2 and fmaf(-step, T-1-i, end) above (one rounding each: the compiled kernel contracts
 *    to FMA). Neither a double linspace nor an unfused float one matches.
 *  - scaled_linear: the same linspace of start**0.5, end**0.5 (Python pow in double), squared in
 *    float. squaredcos_cap_v2: Python doubles, min(1 - f(t2)/f(t1), 0.999), then rounded.
 *  - alphas_cumprod: torch's CPU cumprod of a float tensor keeps a double running product and
 *    rounds each output to float (a float running product differs at ~95% of positions).
 *  - add_noise / compute_snr take alphas_cumprod**0.5 and (1 - alphas_cumprod)**0.5 in float.
 *    k22 uses the correctly rounded sqrtf (as CUDA's sqrt is). torch's CPU build routes float
 *    sqrt through MKL VML, which is within 1 ulp but differs from sqrtf in ~20% of values, so
 *    values downstream of the two square roots match torch-on-CPU to about 1e-7 relative; given
 *    torch's coefficients (tests substitute them into sqrt_a/sqrt_1ma) everything after is exact.
 *  - Config values are floats in k22_sched_config but Python doubles in diffusers; the double is
 *    recovered as the shortest decimal that rounds to the float (what the JSON said). */
#ifndef K22_SCHEDULE_H
#define K22_SCHEDULE_H

#include "k22/config.h"
#include "k22/ops.h"

typedef struct {
    int T;                 /* num_train_timesteps */
    k22_pred_type pred;    /* the config's prediction_type (Min-SNR branch) */
    float *betas;          /* (T) */
    float *alphas;         /* (T) 1 - betas in float */
    float *alphas_cumprod; /* (T) */
    float *sqrt_a;         /* (T) sqrtf(alphas_cumprod) */
    float *sqrt_1ma;       /* (T) sqrtf(1 - alphas_cumprod) */
} k22_noise_schedule;

/* Builds the schedule of cfg (DDPM, DDIM and UnCLIP configs share the training math).
 * K22_ERR_UNSUPPORTED for rescale_betas_zero_snr, K22_ERR_ARG for T outside 1..100000 or
 * beta_start/end outside (0, 1). The arrays are owned by s; k22_noise_schedule_free releases
 * them (a zeroed struct is fine). */
k22_status k22_noise_schedule_init(k22_noise_schedule *s, const k22_sched_config *cfg,
                                   k22_err *err);
void k22_noise_schedule_free(k22_noise_schedule *s);

/* add_noise coefficients of timestep t (0 <= t < T, checked): s->sqrt_a[t], s->sqrt_1ma[t]. */
void k22_noise_coefs(const k22_noise_schedule *s, int64_t t, float *sqrt_a, float *sqrt_1ma);

/* x_t = sqrt_a[t_b] * x0 + sqrt_1ma[t_b] * noise per sample b, on the backend (three ops per
 * sample: two scales and an add, each rounding as torch's separate kernels do).
 * x0, noise, x_t: (B, N) backend memory; t: (B) host; tmp: (N) backend scratch.
 * x_t may alias x0 but not noise or tmp. */
void k22_noise_add(const k22_backend *be, const k22_noise_schedule *s, float *x_t,
                   const float *x0, const float *noise, const int64_t *t, int B, int64_t N,
                   float *tmp);

/* diffusers.training_utils.compute_snr at t: (sqrt_a / sqrt_1ma)**2 in float. */
float k22_noise_snr(const k22_noise_schedule *s, int64_t t);

/* The scripts' Min-SNR weight at t for gamma: w = min(snr, float(gamma)); then w / snr for
 * K22_PRED_EPSILON, w / (snr + 1) for K22_PRED_V, w for K22_PRED_SAMPLE. w: (B) host. */
void k22_min_snr_weights(const k22_noise_schedule *s, const int64_t *t, int B, double gamma,
                         k22_pred_type pred, float *w);

#endif
