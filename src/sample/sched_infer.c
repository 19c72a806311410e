/* sched_infer.c: the inference side of UnCLIPScheduler and DDPMScheduler (diffusers 0.42.1):
 * set_timesteps and step, on the host, in float32 scalar arithmetic as torch does it with its
 * 0-d float tensors (sample.h). */
#include "k22/sample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

k22_status k22_infer_sched_init(k22_infer_sched *s, const k22_sched_config *cfg, k22_err *err)
{
    memset(s, 0, sizeof *s);
    if (cfg->kind == K22_SCHED_DDIM)
        return k22_err_set(err, K22_ERR_UNSUPPORTED, "DDIMScheduler: k22 samples with UnCLIPScheduler (prior) "
                           "and DDPMScheduler (decoder), the schedulers the Kandinsky 2.2 pipelines ship");
    s->cfg = *cfg;
    return k22_noise_schedule_init(&s->ns, cfg, err);
}

void k22_infer_sched_free(k22_infer_sched *s)
{
    k22_noise_schedule_free(&s->ns);
    free(s->timesteps);
    memset(s, 0, sizeof *s);
}

/* np.arange(n) * ratio, rounded half to even (numpy's round), reversed. */
static void unclip_timesteps(int64_t *ts, int n, int T)
{
    double ratio = (double)(T - 1) / (double)(n - 1);
    for (int i = 0; i < n; i++) ts[n - 1 - i] = (int64_t)nearbyint((double)i * ratio);
}

/* np.linspace(0, T-1, n).round()[::-1]: k * step, the last value exactly T-1. */
static void linspace_timesteps(int64_t *ts, int n, int T)
{
    double step = n > 1 ? (double)(T - 1) / (double)(n - 1) : 0.0;
    for (int k = 0; k < n; k++) {
        double v = k == n - 1 && n > 1 ? (double)(T - 1) : (double)k * step;
        ts[n - 1 - k] = (int64_t)nearbyint(v);
    }
}

/* np.round(np.arange(T, 0, -T/n)) - 1: numpy's float arange has ceil(T / ratio) values
 * start + i * delta, delta = (start + step) - start; the count can be n + 1 when T / n is
 * inexact, and diffusers then runs that many steps. Returns the count. */
static int trailing_count(int n, int T)
{
    double ratio = (double)T / (double)n;
    return (int)ceil((0.0 - (double)T) / -ratio);
}

static void trailing_timesteps(int64_t *ts, int count, int n, int T)
{
    double ratio = (double)T / (double)n, start = (double)T;
    double delta = (start + -ratio) - start;
    for (int i = 0; i < count; i++) ts[i] = (int64_t)nearbyint(start + (double)i * delta) - 1;
}

k22_status k22_infer_sched_set_timesteps(k22_infer_sched *s, int steps, k22_err *err)
{
    int T = s->ns.T, unclip = s->cfg.kind == K22_SCHED_UNCLIP;
    if (steps < (unclip ? 2 : 1) || steps > T)
        return k22_err_set(err, K22_ERR_ARG, "%s: %d inference steps; expected %d..%d",
                           k22_sched_class_name(s->cfg.kind), steps, unclip ? 2 : 1, T);
    const char *sp = s->cfg.timestep_spacing;
    int count = steps;
    if (!unclip && !strcmp(sp, "trailing")) count = trailing_count(steps, T);
    free(s->timesteps);
    s->timesteps = k22_xcalloc((size_t)count, sizeof(int64_t));
    s->n = count;
    if (unclip) {
        unclip_timesteps(s->timesteps, steps, T);
    } else if (!strcmp(sp, "linspace")) {
        linspace_timesteps(s->timesteps, steps, T);
    } else if (!strcmp(sp, "trailing")) {
        trailing_timesteps(s->timesteps, count, steps, T);
    } else { /* leading, the config default */
        int64_t ratio = T / steps;
        for (int i = 0; i < steps; i++)
            s->timesteps[steps - 1 - i] = (int64_t)i * ratio + s->cfg.steps_offset;
    }
    for (int i = 0; i < count; i++)
        if (s->timesteps[i] < 0 || s->timesteps[i] >= T)
            return k22_err_set(err, K22_ERR_ARG, "%s: timestep %lld of %d steps is outside 0..%d "
                               "(steps_offset %d)", k22_sched_class_name(s->cfg.kind),
                               (long long)s->timesteps[i], steps, T - 1, s->cfg.steps_offset);
    return K22_OK;
}

int k22_infer_sched_noisy(const k22_infer_sched *s, int i)
{
    return i >= 0 && i < s->n && s->timesteps[i] > 0;
}

/* The scalars of one step: torch computes each as a float32 0-d tensor op. */
typedef struct {
    float a_t, b_t, b_prev; /* alpha_prod_t, beta_prod_t, beta_prod_t_prev */
    float sa_t, sb_t;       /* alpha_prod_t ** 0.5, beta_prod_t ** 0.5 */
    float beta;             /* the step's beta (current_beta_t) */
    float c_x0, c_x;        /* pred_original_sample_coeff, current_sample_coeff */
    float var;              /* (b_prev / b_t) * beta before clamping / logs */
} step_coefs;

static void coefs(const k22_infer_sched *s, int64_t t, int64_t prev, step_coefs *c)
{
    const float *ac = s->ns.alphas_cumprod;
    float a_prev = prev >= 0 ? ac[prev] : 1.0f, alpha;
    c->a_t = ac[t];
    c->b_t = 1.0f - c->a_t;
    c->b_prev = 1.0f - a_prev;
    if (s->cfg.kind == K22_SCHED_UNCLIP && prev == t - 1) {
        c->beta = s->ns.betas[t];
        alpha = s->ns.alphas[t];
    } else if (s->cfg.kind == K22_SCHED_UNCLIP) {
        c->beta = 1.0f - c->a_t / a_prev;
        alpha = 1.0f - c->beta;
    } else { /* DDPM: current_alpha_t = a_t / a_prev, current_beta_t = 1 - it */
        alpha = c->a_t / a_prev;
        c->beta = 1.0f - alpha;
    }
    c->sa_t = sqrtf(c->a_t);
    c->sb_t = sqrtf(c->b_t);
    c->c_x0 = (sqrtf(a_prev) * c->beta) / c->b_t;
    c->c_x = sqrtf(alpha) * c->b_prev / c->b_t;
    c->var = c->b_prev / c->b_t * c->beta;
}

static float pred_x0(const k22_infer_sched *s, const step_coefs *c, float x, float out)
{
    float x0;
    switch (s->cfg.prediction_type) {
    case K22_PRED_SAMPLE: x0 = out; break;
    case K22_PRED_V: x0 = c->sa_t * x - c->sb_t * out; break;
    default: x0 = (x - c->sb_t * out) / c->sa_t; break;
    }
    if (s->cfg.clip_sample) {
        float r = s->cfg.clip_sample_range;
        x0 = x0 < -r ? -r : x0 > r ? r : x0;
    }
    return x0;
}

/* The standard deviation the step multiplies its noise by; pv is the predicted variance of
 * the element (learned types only). */
static float noise_std(const k22_infer_sched *s, const step_coefs *c, float pv)
{
    const char *vt = s->cfg.variance_type;
    int unclip = s->cfg.kind == K22_SCHED_UNCLIP;
    /* DDPM clamps the variance before every type; UnCLIP only before fixed_small_log's log. */
    float v = unclip ? c->var : fmaxf(c->var, 1e-20f);
    if (!strcmp(vt, "fixed_small_log")) return expf(0.5f * logf(fmaxf(v, 1e-20f)));
    if (!strcmp(vt, "learned_range")) {
        float min_log = logf(v), max_log = logf(c->beta), frac = (pv + 1.0f) / 2.0f;
        return expf(0.5f * (frac * max_log + (1.0f - frac) * min_log));
    }
    if (!strcmp(vt, "fixed_large")) return sqrtf(c->beta);
    if (!strcmp(vt, "learned")) return sqrtf(pv);
    return sqrtf(v); /* fixed_small */
}

void k22_infer_sched_step(const k22_infer_sched *s, int i, const float *model_out, int out_ch,
                          float *x, int B, int C, int64_t S, const float *noise)
{
    K22_REQUIRE(i >= 0 && i < s->n && (out_ch == C || out_ch == 2 * C));
    const char *vt = s->cfg.variance_type;
    int learned = !strcmp(vt, "learned_range") || (s->cfg.kind == K22_SCHED_DDPM && !strcmp(vt, "learned"));
    K22_REQUIRE(!learned || out_ch == 2 * C);
    int64_t t = s->timesteps[i];
    int64_t prev = i + 1 < s->n ? s->timesteps[i + 1] : (s->cfg.kind == K22_SCHED_UNCLIP ? t - 1 : -1);
    step_coefs c;
    coefs(s, t, prev, &c);
    int noisy = t > 0;
    K22_REQUIRE(!noisy || noise);
    for (int b = 0; b < B; b++)
        for (int ch = 0; ch < C; ch++) {
            const float *mo = model_out + ((int64_t)b * out_ch + ch) * S;
            const float *pv = learned ? mo + (int64_t)C * S : NULL;
            float *xs = x + ((int64_t)b * C + ch) * S;
            const float *nz = noisy ? noise + ((int64_t)b * C + ch) * S : NULL;
            for (int64_t k = 0; k < S; k++) {
                float x0 = pred_x0(s, &c, xs[k], mo[k]);
                float prevx = c.c_x0 * x0 + c.c_x * xs[k];
                if (noisy) prevx = prevx + noise_std(s, &c, pv ? pv[k] : 0.0f) * nz[k];
                xs[k] = prevx;
            }
        }
}
