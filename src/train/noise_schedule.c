/* noise_schedule.c: betas, alphas_cumprod, add_noise and Min-SNR weights of training, as
 * diffusers/torch compute them in float32 (facts and the sqrt caveat: include/k22/schedule.h). */
#include "k22/schedule.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define K22_SCHED_MAX_T 100000
#define K22_SCHED_PI 3.141592653589793 /* Python math.pi */

/* The Python double a config float came from: the shortest %g text that reads back as f. */
static double k22_sched_double_of(float f)
{
    char buf[48];
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)f);
        if (strtof(buf, NULL) == f) return strtod(buf, NULL);
    }
    return (double)f;
}

/* torch.linspace(start, end, n, dtype=float32) on the CPU (see schedule.h). */
static void k22_linspace_f32(float *y, double start, double end, int n)
{
    float a = (float)start, b = (float)end;
    if (n == 1) {
        y[0] = a;
        return;
    }
    float step = (b - a) / (float)(n - 1);
    int half = n / 2;
    for (int i = 0; i < n; i++)
        y[i] = i < half ? fmaf(step, (float)i, a) : fmaf(-step, (float)(n - 1 - i), b);
}

/* Glide's cosine alpha_bar, in the Python operation order. */
static double k22_alpha_bar_cos(double t)
{
    double c = cos((t + 0.008) / 1.008 * K22_SCHED_PI / 2);
    return pow(c, 2.0);
}

static void k22_betas_squaredcos(float *betas, int T)
{
    for (int i = 0; i < T; i++) {
        double t1 = (double)i / T, t2 = (double)(i + 1) / T;
        double b = 1 - k22_alpha_bar_cos(t2) / k22_alpha_bar_cos(t1);
        betas[i] = (float)(b < 0.999 ? b : 0.999);
    }
}

static k22_status k22_betas_fill(float *betas, const k22_sched_config *cfg, k22_err *err)
{
    int T = cfg->num_train_timesteps;
    double bs = k22_sched_double_of(cfg->beta_start), be = k22_sched_double_of(cfg->beta_end);
    if (cfg->beta_schedule != K22_BETAS_SQUAREDCOS_CAP_V2 &&
        !(bs > 0 && bs < 1 && be > 0 && be < 1))
        return k22_err_set(err, K22_ERR_ARG, "scheduler: beta_start %g / beta_end %g outside (0, 1)",
                           bs, be);
    switch (cfg->beta_schedule) {
    case K22_BETAS_LINEAR:
        k22_linspace_f32(betas, bs, be, T);
        return K22_OK;
    case K22_BETAS_SCALED_LINEAR:
        k22_linspace_f32(betas, pow(bs, 0.5), pow(be, 0.5), T);
        for (int i = 0; i < T; i++) betas[i] = betas[i] * betas[i];
        return K22_OK;
    case K22_BETAS_SQUAREDCOS_CAP_V2:
        k22_betas_squaredcos(betas, T);
        return K22_OK;
    }
    return k22_err_set(err, K22_ERR_UNSUPPORTED, "scheduler: beta_schedule %d not implemented",
                       (int)cfg->beta_schedule);
}

k22_status k22_noise_schedule_init(k22_noise_schedule *s, const k22_sched_config *cfg,
                                   k22_err *err)
{
    memset(s, 0, sizeof *s);
    int T = cfg->num_train_timesteps;
    if (T < 1 || T > K22_SCHED_MAX_T)
        return k22_err_set(err, K22_ERR_ARG, "scheduler: num_train_timesteps %d outside 1..%d", T,
                           K22_SCHED_MAX_T);
    if (cfg->rescale_betas_zero_snr)
        return k22_err_set(err, K22_ERR_UNSUPPORTED,
                           "scheduler: rescale_betas_zero_snr true is not implemented");
    s->T = T;
    s->pred = cfg->prediction_type;
    s->betas = k22_xmalloc((size_t)T * sizeof(float));
    s->alphas = k22_xmalloc((size_t)T * sizeof(float));
    s->alphas_cumprod = k22_xmalloc((size_t)T * sizeof(float));
    s->sqrt_a = k22_xmalloc((size_t)T * sizeof(float));
    s->sqrt_1ma = k22_xmalloc((size_t)T * sizeof(float));
    k22_status st = k22_betas_fill(s->betas, cfg, err);
    if (st != K22_OK) {
        k22_noise_schedule_free(s);
        return st;
    }
    double prod = 1.0; /* torch's CPU cumprod accumulates in double */
    for (int i = 0; i < T; i++) {
        s->alphas[i] = 1.0f - s->betas[i];
        prod *= (double)s->alphas[i];
        s->alphas_cumprod[i] = (float)prod;
        s->sqrt_a[i] = sqrtf(s->alphas_cumprod[i]);
        s->sqrt_1ma[i] = sqrtf(1.0f - s->alphas_cumprod[i]);
    }
    return K22_OK;
}

void k22_noise_schedule_free(k22_noise_schedule *s)
{
    free(s->betas);
    free(s->alphas);
    free(s->alphas_cumprod);
    free(s->sqrt_a);
    free(s->sqrt_1ma);
    memset(s, 0, sizeof *s);
}

void k22_noise_coefs(const k22_noise_schedule *s, int64_t t, float *sqrt_a, float *sqrt_1ma)
{
    K22_REQUIRE(t >= 0 && t < s->T);
    *sqrt_a = s->sqrt_a[t];
    *sqrt_1ma = s->sqrt_1ma[t];
}

void k22_noise_add(const k22_backend *be, const k22_noise_schedule *s, float *x_t,
                   const float *x0, const float *noise, const int64_t *t, int B, int64_t N,
                   float *tmp)
{
    for (int b = 0; b < B; b++) {
        float sa, s1;
        k22_noise_coefs(s, t[b], &sa, &s1);
        const float *x0b = x0 + (int64_t)b * N, *nb = noise + (int64_t)b * N;
        float *yb = x_t + (int64_t)b * N;
        be->scale(be->ctx, tmp, nb, s1, N); /* sqrt(1 - a) * noise */
        be->scale(be->ctx, yb, x0b, sa, N);  /* sqrt(a) * x0 */
        be->add(be->ctx, yb, yb, tmp, N);
    }
}

float k22_noise_snr(const k22_noise_schedule *s, int64_t t)
{
    float sa, s1;
    k22_noise_coefs(s, t, &sa, &s1);
    float r = sa / s1;
    return r * r;
}

void k22_min_snr_weights(const k22_noise_schedule *s, const int64_t *t, int B, double gamma,
                         k22_pred_type pred, float *w)
{
    float g = (float)gamma; /* gamma * ones_like(timesteps) is a float32 tensor */
    for (int b = 0; b < B; b++) {
        float snr = k22_noise_snr(s, t[b]);
        float m = snr < g ? snr : g;
        if (pred == K22_PRED_EPSILON) m = m / snr;
        else if (pred == K22_PRED_V) m = m / (snr + 1.0f);
        w[b] = m;
    }
}
