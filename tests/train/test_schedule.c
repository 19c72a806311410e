/* test_schedule.c: the noise schedule, add_noise, SNR and Min-SNR weights against
 * tests/fixtures/schedule/noise.safetensors (tools/reference/make_schedule_fixtures.py).
 * Exact (tolerance 0): betas and alphas_cumprod; add_noise, SNR and the weights once torch's own
 * sqrt coefficients are substituted. With k22's correctly rounded sqrtf (torch-CPU uses MKL's,
 * 1 ulp off in ~20% of values) those hold to rtol 1e-6 instead (include/k22/schedule.h). */
#include <stdlib.h>
#include <string.h>

#include "harness/fixture.h"
#include "harness/harness.h"
#include "k22/safetensors.h"
#include "k22/schedule.h"

static k22_st_file *fixture_open(const char *name)
{
    char path[512];
    k22_err err = {0};
    k22_st_file *f = NULL;
    snprintf(path, sizeof path, "%s/tests/fixtures/schedule/%s", k22_fx_source_dir(), name);
    if (k22_st_open(path, &f, &err) != K22_OK) {
        CHECK_MSG(0, "%s (rerun tools/reference/make_schedule_fixtures.py)", err.msg);
        return NULL;
    }
    return f;
}

/* The tensor `name` of dtype dt with n values, or NULL and a failed check. */
typedef struct {
    const char *name;
    k22_beta_schedule betas;
    k22_pred_type pred;
} sched_case;

/* The fixture's DDPMScheduler arguments as a k22 config. */
static void config_of(const sched_case *c, k22_sched_config *cfg)
{
    k22_err err;
    if (c->betas == K22_BETAS_SQUAREDCOS_CAP_V2) {
        CHECK(k22_sched_preset("prior_train", cfg, &err) == K22_OK);
        return;
    }
    CHECK(k22_sched_preset("decoder", cfg, &err) == K22_OK); /* linear 0.00085 .. 0.012 */
    cfg->beta_schedule = c->betas;
}

static int mismatches(const float *a, const float *b, int n)
{
    int m = 0;
    for (int i = 0; i < n; i++) m += memcmp(&a[i], &b[i], sizeof(float)) != 0;
    return m;
}

/* add_noise on (6, 40) inputs (t = 0, 999, 1, 500, 998, 37), compute_snr and the three Min-SNR
 * weightings at every t (gamma 5), held to atol/rtol. */
static void check_downstream(k22_st_file *f, const sched_case *c, const k22_noise_schedule *s,
                             k22_backend *const *bes, int nbe, double atol, double rtol,
                             const char *tag)
{
    char key[96], what[200];
    const int64_t *t = k22_fx_get(f, "t_add", K22_DTYPE_I64, 6);
    snprintf(key, sizeof key, "%s.x0", c->name);
    const float *x0 = k22_fx_get(f, key, K22_DTYPE_F32, 240);
    snprintf(key, sizeof key, "%s.noise", c->name);
    const float *noise = k22_fx_get(f, key, K22_DTYPE_F32, 240);
    snprintf(key, sizeof key, "%s.x_t", c->name);
    const float *xt = k22_fx_get(f, key, K22_DTYPE_F32, 240);
    for (int k = 0; k < nbe && t && x0 && noise && xt; k++) {
        float y[240], tmp[40];
        k22_noise_add(bes[k], s, y, x0, noise, t, 6, 40, tmp);
        snprintf(what, sizeof what, "%s add_noise on %s (%s)", c->name, bes[k]->name, tag);
        k22_check_close(what, y, xt, 240, atol, rtol);
    }
    int64_t all[1000];
    float got[1000];
    for (int i = 0; i < 1000; i++) all[i] = i;
    snprintf(key, sizeof key, "%s.snr", c->name);
    const float *snr = k22_fx_get(f, key, K22_DTYPE_F32, 1000);
    if (snr) {
        for (int i = 0; i < 1000; i++) got[i] = k22_noise_snr(s, i);
        snprintf(what, sizeof what, "%s (%s)", key, tag);
        k22_check_close(what, got, snr, 1000, 0, rtol);
    }
    static const struct { const char *n; k22_pred_type p; } preds[] = {
        {"sample", K22_PRED_SAMPLE}, {"epsilon", K22_PRED_EPSILON}, {"v_prediction", K22_PRED_V}};
    for (int j = 0; j < 3; j++) {
        snprintf(key, sizeof key, "%s.w_%s", c->name, preds[j].n);
        const float *w = k22_fx_get(f, key, K22_DTYPE_F32, 1000);
        if (!w) continue;
        k22_min_snr_weights(s, all, 1000, 5.0, preds[j].p, got);
        snprintf(what, sizeof what, "%s (%s)", key, tag);
        k22_check_close(what, got, w, 1000, 0, rtol);
    }
}

static void test_case(k22_st_file *f, const sched_case *c, k22_backend *const *bes, int nbe)
{
    char key[96], what[160];
    k22_sched_config cfg;
    k22_noise_schedule s;
    k22_err err;
    config_of(c, &cfg);
    CHECK(cfg.num_train_timesteps == 1000);
    if (k22_noise_schedule_init(&s, &cfg, &err) != K22_OK) {
        CHECK_MSG(0, "%s: %s", c->name, err.msg);
        return;
    }
    snprintf(key, sizeof key, "%s.betas", c->name);
    const float *betas = k22_fx_get(f, key, K22_DTYPE_F32, 1000);
    if (betas) k22_check_close(key, s.betas, betas, 1000, 0, 0);
    snprintf(key, sizeof key, "%s.alphas_cumprod", c->name);
    const float *ac = k22_fx_get(f, key, K22_DTYPE_F32, 1000);
    if (ac) {
        k22_check_close(key, s.alphas_cumprod, ac, 1000, 0, 0);
        /* canary: a float running product (the wrong accumulator) must be caught */
        float run[1000], p = 1.0f;
        for (int i = 0; i < 1000; i++) run[i] = p = p * s.alphas[i];
        CHECK_MSG(mismatches(run, ac, 1000) > 100, "%s: float cumprod should differ", c->name);
    }

    /* torch's coefficients: MKL's float sqrt, within 1 ulp of k22's correctly rounded one */
    snprintf(key, sizeof key, "%s.sqrt_a", c->name);
    const float *sa = k22_fx_get(f, key, K22_DTYPE_F32, 1000);
    snprintf(key, sizeof key, "%s.sqrt_1ma", c->name);
    const float *s1 = k22_fx_get(f, key, K22_DTYPE_F32, 1000);
    if (!sa || !s1) goto out;
    snprintf(what, sizeof what, "%s sqrt(alphas_cumprod) vs torch-CPU (1 ulp: MKL sqrt)", c->name);
    k22_check_close(what, s.sqrt_a, sa, 1000, 0, 1.2e-7);
    snprintf(what, sizeof what, "%s sqrt(1 - alphas_cumprod) vs torch-CPU (1 ulp)", c->name);
    k22_check_close(what, s.sqrt_1ma, s1, 1000, 0, 1.2e-7);
    /* pass 0: k22's own coefficients, a few ulp of torch-CPU (two 1-ulp square roots feed each
     * value; snr squares a quotient of them: <= ~5e-7 relative);
     * pass 1: torch's coefficients substituted, then every later rounding must match: exact. */
    for (int pass = 0; pass < 2; pass++) {
        double rtol = pass ? 0 : 1e-6, atol = pass ? 0 : 1e-7;
        const char *tag = pass ? "torch coefs, exact" : "own coefs, rtol 1e-6";
        if (pass) {
            memcpy(s.sqrt_a, sa, sizeof(float) * 1000);
            memcpy(s.sqrt_1ma, s1, sizeof(float) * 1000);
        }
        check_downstream(f, c, &s, bes, nbe, atol, rtol, tag);
    }
out:
    k22_noise_schedule_free(&s);
}

/* Betas and alphas_cumprod of other lengths and ranges (fixture "extra.*"): exact. */
static void test_extra(k22_st_file *f)
{
    static const struct {
        const char *name;
        k22_beta_schedule betas;
        int T;
        float start, end;
    } ex[] = {
        {"lin_default", K22_BETAS_LINEAR, 1000, 0.0001f, 0.02f},
        {"lin37", K22_BETAS_LINEAR, 37, 0.1f, 0.3f},
        {"scaled_odd", K22_BETAS_SCALED_LINEAR, 1001, 0.0001f, 0.02f},
        {"cos50", K22_BETAS_SQUAREDCOS_CAP_V2, 50, 0.0001f, 0.02f},
    };
    for (size_t i = 0; i < sizeof ex / sizeof ex[0]; i++) {
        k22_sched_config cfg;
        k22_noise_schedule s;
        k22_err err;
        char key[96];
        CHECK(k22_sched_preset("decoder", &cfg, &err) == K22_OK);
        cfg.beta_schedule = ex[i].betas;
        cfg.num_train_timesteps = ex[i].T;
        cfg.beta_start = ex[i].start;
        cfg.beta_end = ex[i].end;
        if (k22_noise_schedule_init(&s, &cfg, &err) != K22_OK) {
            CHECK_MSG(0, "%s: %s", ex[i].name, err.msg);
            continue;
        }
        snprintf(key, sizeof key, "extra.%s.betas", ex[i].name);
        const float *b = k22_fx_get(f, key, K22_DTYPE_F32, ex[i].T);
        if (b) k22_check_close(key, s.betas, b, ex[i].T, 0, 0);
        snprintf(key, sizeof key, "extra.%s.alphas_cumprod", ex[i].name);
        const float *ac = k22_fx_get(f, key, K22_DTYPE_F32, ex[i].T);
        if (ac) k22_check_close(key, s.alphas_cumprod, ac, ex[i].T, 0, 0);
        k22_noise_schedule_free(&s);
    }
}

static void test_errors(void)
{
    k22_sched_config cfg;
    k22_noise_schedule s;
    k22_err err;
    CHECK(k22_sched_preset("decoder", &cfg, &err) == K22_OK);
    cfg.num_train_timesteps = 0;
    CHECK(k22_noise_schedule_init(&s, &cfg, &err) == K22_ERR_ARG);
    cfg.num_train_timesteps = 1000;
    cfg.rescale_betas_zero_snr = 1;
    CHECK(k22_noise_schedule_init(&s, &cfg, &err) == K22_ERR_UNSUPPORTED);
    CHECK(strstr(err.msg, "rescale_betas_zero_snr") != NULL);
    cfg.rescale_betas_zero_snr = 0;
    cfg.beta_end = 1.5f;
    CHECK(k22_noise_schedule_init(&s, &cfg, &err) == K22_ERR_ARG);
    /* one timestep: linspace of one value is its start */
    cfg.beta_end = 0.012f;
    cfg.num_train_timesteps = 1;
    CHECK(k22_noise_schedule_init(&s, &cfg, &err) == K22_OK);
    CHECK(s.betas[0] == 0.00085f && s.alphas_cumprod[0] == 1.0f - 0.00085f);
    k22_noise_schedule_free(&s);
}

int main(void)
{
    static const sched_case cases[] = {
        {"cos", K22_BETAS_SQUAREDCOS_CAP_V2, K22_PRED_SAMPLE},
        {"linear", K22_BETAS_LINEAR, K22_PRED_EPSILON},
        {"scaled", K22_BETAS_SCALED_LINEAR, K22_PRED_EPSILON},
    };
    k22_backend *bes[2] = {k22_backend_cpu_new(1), k22_backend_cpu_new(0)};
    k22_st_file *f = fixture_open("noise.safetensors");
    for (int i = 0; f && i < 3; i++) test_case(f, &cases[i], bes, 2);
    if (f) test_extra(f);
    test_errors();
    k22_st_close(f);
    k22_backend_free(bes[0]);
    k22_backend_free(bes[1]);
    return k22_test_finish("test_schedule");
}
