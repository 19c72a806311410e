/* step_fixture.h (tests/train only): what test_prior_step.c and test_decoder_step.c share:
 * reading a training-step fixture of tools/reference/<stage>_train_ref.py (the tensors of one
 * configuration's run), holding each optimizer step's log to torch's, and the bracket around a
 * canary's expected failures. Define SF_GENERATOR (the script's file name) before including. */
#ifndef K22_TEST_STEP_FIXTURE_H
#define K22_TEST_STEP_FIXTURE_H

#include "harness/fixture.h"
#include "harness/harness.h"
#include "k22/safetensors.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#ifndef SF_GENERATOR
#error "define SF_GENERATOR (the fixture's generator script) before including step_fixture.h"
#endif

/* The fixture tensor `name` with n values of dtype dt, or NULL after a failed check. */
static inline const void *sf_get(const k22_st_file *f, const char *name, k22_dtype dt, int64_t n)
{
    return k22_fx_get_hint(f, name, dt, n, " (regenerate with tools/reference/" SF_GENERATOR ")");
}

/* Value i of a float64 tensor stored as its I64 bit patterns. */
static inline double sf_f64_at(const void *bits, int i)
{
    double d;
    memcpy(&d, (const char *)bits + 8 * (size_t)i, 8);
    return d;
}

/* One configuration's run: per micro-batch its sample rows, noise and timesteps; per optimizer
 * step torch's logged loss and lr (float64 bits) and gradient norm. */
typedef struct {
    const int64_t *index, *ts; /* (nm, batch) each */
    const float *noise;        /* (nm, batch, noise_row) */
    const void *losses, *lrs;  /* (steps) */
    const float *norms;        /* (steps) */
} sf_run;

/* <name>.index/.noise/.timesteps/.loss/.lr/.grad_norm; 0 after a failed check. */
static inline int sf_run_load(const k22_st_file *f, const char *name, int64_t nm, int64_t batch,
                              int64_t noise_row, int steps, sf_run *r)
{
    char key[128];
    snprintf(key, sizeof key, "%s.index", name);
    r->index = sf_get(f, key, K22_DTYPE_I64, nm * batch);
    snprintf(key, sizeof key, "%s.noise", name);
    r->noise = sf_get(f, key, K22_DTYPE_F32, nm * batch * noise_row);
    snprintf(key, sizeof key, "%s.timesteps", name);
    r->ts = sf_get(f, key, K22_DTYPE_I64, nm * batch);
    snprintf(key, sizeof key, "%s.loss", name);
    r->losses = sf_get(f, key, K22_DTYPE_I64, steps);
    snprintf(key, sizeof key, "%s.lr", name);
    r->lrs = sf_get(f, key, K22_DTYPE_I64, steps);
    snprintf(key, sizeof key, "%s.grad_norm", name);
    r->norms = sf_get(f, key, K22_DTYPE_F32, steps);
    return r->index && r->noise && r->ts && r->losses && r->lrs && r->norms;
}

/* The largest relative errors seen over a run's steps, and the sum of torch's lrs. */
typedef struct {
    double loss_rel, norm_rel, lr_sum;
} sf_step_errs;

/* Optimizer step s (0-based) of a run: the trainer's log (step count, loss, lr, gradient norm)
 * against torch's: loss and norm within the relative tolerances, the lr exactly. */
static inline void sf_check_step(const char *label, const sf_run *r, int s, int64_t step, double loss,
                                 double lr, float grad_norm, double tol_loss, double tol_norm,
                                 sf_step_errs *e)
{
    double rl = sf_f64_at(r->losses, s), rlr = sf_f64_at(r->lrs, s);
    double el = fabs(loss - rl) / fabs(rl), en = fabs((double)grad_norm - r->norms[s]) / r->norms[s];
    CHECK_MSG(step == s + 1, "%s: step %lld", label, (long long)step);
    CHECK_MSG(el <= tol_loss, "%s step %d: loss %.9g, torch %.9g (rel %.2e)", label, s, loss, rl, el);
    CHECK_MSG(en <= tol_norm, "%s step %d: grad norm %.9g, torch %.9g (rel %.2e)", label, s,
              (double)grad_norm, (double)r->norms[s], en);
    CHECK_MSG(lr == rlr, "%s step %d: lr %.17g, torch %.17g", label, s, lr, rlr);
    e->loss_rel = fmax(e->loss_rel, el);
    e->norm_rel = fmax(e->norm_rel, en);
    e->lr_sum += rlr;
}

/* A canary's checks must fail: sf_canary_begin notes the counts, sf_canary_end puts them back
 * (the failures between were the expected ones) and marks the end in the output. */
typedef struct {
    int failures, checks;
} sf_canary;

static inline sf_canary sf_canary_begin(void)
{
    printf("canary: the next FAIL lines are expected\n");
    fflush(stdout);
    sf_canary c = {k22_test_failures, k22_test_checks};
    return c;
}

static inline void sf_canary_end(sf_canary c)
{
    k22_test_failures = c.failures;
    k22_test_checks = c.checks;
    fflush(stderr);
    printf("canary: end of expected failures\n");
}

#endif
