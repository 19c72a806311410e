/* test_loss_prep.c: the prior's x0 normalization and x_t, and the decoder's x_t, against
 * tests/fixtures/schedule/noise.safetensors. Tolerances: x0 exact on host backends (the same
 * float subtraction and division as torch). x_t goes through sqrt(alphas_cumprod): k22's
 * correctly rounded sqrtf vs torch-CPU's MKL sqrt (1 ulp) gives rtol 1e-6; with torch's
 * coefficients substituted it is exact. The device path (add then multiply by 1/std, run here
 * on host memory) is held to 2 ulp (rtol 2.4e-7). */
#include <stdlib.h>
#include <string.h>

#include "harness/fixture.h"
#include "harness/harness.h"
#include "k22/loss.h"
#include "k22/safetensors.h"

static int schedule_of(const char *preset, k22_beta_schedule betas, k22_noise_schedule *s)
{
    k22_sched_config cfg;
    k22_err err;
    if (k22_sched_preset(preset, &cfg, &err) != K22_OK) return 0;
    cfg.beta_schedule = betas;
    int ok = k22_noise_schedule_init(s, &cfg, &err) == K22_OK;
    CHECK_MSG(ok, "%s", err.msg);
    return ok;
}

/* Replaces s's coefficients by torch's (fixture `name`.sqrt_a / .sqrt_1ma). */
static int use_torch_coefs(k22_st_file *f, const char *name, k22_noise_schedule *s)
{
    char key[64];
    snprintf(key, sizeof key, "%s.sqrt_a", name);
    const float *sa = k22_fx_get(f, key, K22_DTYPE_F32, 1000);
    snprintf(key, sizeof key, "%s.sqrt_1ma", name);
    const float *s1 = k22_fx_get(f, key, K22_DTYPE_F32, 1000);
    if (!sa || !s1) return 0;
    memcpy(s->sqrt_a, sa, 1000 * sizeof(float));
    memcpy(s->sqrt_1ma, s1, 1000 * sizeof(float));
    return 1;
}

static void test_prior(k22_st_file *f, k22_backend *be)
{
    enum { B = 4, E = 32 };
    const float *ie = k22_fx_get(f, "prior.image_embeds", K22_DTYPE_F32, B * E);
    const float *mean = k22_fx_get(f, "prior.clip_mean", K22_DTYPE_F32, E);
    const float *std = k22_fx_get(f, "prior.clip_std", K22_DTYPE_F32, E);
    const float *noise = k22_fx_get(f, "prior.noise", K22_DTYPE_F32, B * E);
    const int64_t *t = k22_fx_get(f, "prior.t", K22_DTYPE_I64, B);
    const float *rx0 = k22_fx_get(f, "prior.x0", K22_DTYPE_F32, B * E);
    const float *rxt = k22_fx_get(f, "prior.x_t", K22_DTYPE_F32, B * E);
    k22_noise_schedule s;
    if (!ie || !mean || !std || !noise || !t || !rx0 || !rxt) return;
    if (!schedule_of("prior_train", K22_BETAS_SQUAREDCOS_CAP_V2, &s)) return;
    char what[128];
    float x0[B * E], xt[B * E], tmp[E];
    k22_prior_norm pn;
    k22_prior_norm_init(&pn, be, mean, std, E);
    k22_prior_prepare(be, &pn, &s, x0, xt, ie, noise, t, B, tmp);
    snprintf(what, sizeof what, "prior x0 on %s (exact)", be->name);
    k22_check_close(what, x0, rx0, B * E, 0, 0);
    snprintf(what, sizeof what, "prior x_t on %s (own sqrt, rtol 1e-6)", be->name);
    k22_check_close(what, xt, rxt, B * E, 1e-7, 1e-6);
    if (use_torch_coefs(f, "cos", &s)) {
        k22_prior_prepare(be, &pn, &s, x0, xt, ie, noise, t, B, tmp);
        snprintf(what, sizeof what, "prior x_t on %s (torch sqrt, exact)", be->name);
        k22_check_close(what, xt, rxt, B * E, 0, 0);
    }
    k22_prior_norm_free(&pn, be);

    /* the device composition, exercised on host memory by relabelling the backend */
    k22_backend dev = *be;
    dev.dev = K22_DEV_CUDA;
    k22_prior_norm_init(&pn, &dev, mean, std, E);
    memcpy(x0, ie, sizeof x0);
    k22_prior_x0(&dev, &pn, x0, x0, B); /* in place */
    snprintf(what, sizeof what, "prior x0 via ops on %s (2 ulp: * 1/std)", be->name);
    k22_check_close(what, x0, rx0, B * E, 0, 2.4e-7);
    k22_prior_norm_free(&pn, &dev);
    k22_noise_schedule_free(&s);
}

static void test_decoder(k22_st_file *f, k22_backend *be)
{
    enum { B = 2, N = 64 };
    const float *lat = k22_fx_get(f, "decoder.latents", K22_DTYPE_F32, B * N);
    const float *noise = k22_fx_get(f, "decoder.noise", K22_DTYPE_F32, B * N);
    const int64_t *t = k22_fx_get(f, "decoder.t", K22_DTYPE_I64, B);
    const float *rxt = k22_fx_get(f, "decoder.x_t", K22_DTYPE_F32, B * N);
    k22_noise_schedule s;
    if (!lat || !noise || !t || !rxt) return;
    if (!schedule_of("decoder", K22_BETAS_LINEAR, &s)) return;
    char what[128];
    float xt[B * N], tmp[N];
    k22_decoder_prepare(be, &s, xt, lat, noise, t, B, N, tmp);
    snprintf(what, sizeof what, "decoder x_t on %s (own sqrt, rtol 1e-6)", be->name);
    k22_check_close(what, xt, rxt, B * N, 1e-7, 1e-6);
    if (use_torch_coefs(f, "linear", &s)) {
        k22_decoder_prepare(be, &s, xt, lat, noise, t, B, N, tmp);
        snprintf(what, sizeof what, "decoder x_t on %s (torch sqrt, exact)", be->name);
        k22_check_close(what, xt, rxt, B * N, 0, 0);
    }
    k22_noise_schedule_free(&s);
}

int main(void)
{
    char path[512];
    k22_err err = {0};
    k22_st_file *f = NULL;
    snprintf(path, sizeof path, "%s/tests/fixtures/schedule/noise.safetensors", k22_fx_source_dir());
    if (k22_st_open(path, &f, &err) != K22_OK)
        CHECK_MSG(0, "%s (rerun tools/reference/make_schedule_fixtures.py)", err.msg);
    k22_backend *bes[2] = {k22_backend_cpu_new(1), k22_backend_cpu_new(0)};
    for (int i = 0; f && i < 2; i++) {
        test_prior(f, bes[i]);
        test_decoder(f, bes[i]);
    }
    k22_st_close(f);
    k22_backend_free(bes[0]);
    k22_backend_free(bes[1]);
    return k22_test_finish("test_loss_prep");
}
