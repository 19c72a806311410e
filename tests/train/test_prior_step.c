/* test_prior_step.c: ten optimizer steps of the prior trainer (src/train/step_prior.c) against
 * the script's loop run by torch / diffusers / accelerate (tools/reference/prior_train_ref.py,
 * tests/fixtures/prior_train/steps.safetensors), on the reference and the fast CPU backends, in
 * three configurations: a defaults, b Min-SNR + accumulation 2 + clipping at 0.5 + cosine LR
 * with warmup, c EMA. Compares per step the logged loss, the lr and the gradient norm, and at
 * the end every weight (and the EMA weights) after a save / load round trip through a diffusers
 * folder. A canary moves one weight and one loss and expects the checks to catch it. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "k22/diffusers.h"
#include "k22/fsutil.h"
#include "k22/safetensors.h"
#include "k22/train_prior.h"

#define SF_GENERATOR "prior_train_ref.py"
#include "step_fixture.h"

#define FIXTURE "tests/fixtures/prior_train/steps.safetensors"
#define STEPS 10
#define BATCH 3
#define NSAMP 6

/* Tolerances: the 1e-5 relative in fp32. Measured on both CPU backends (the run prints
 * them): logged loss <= 1.8e-7 relative, gradient norm <= 2.3e-7, every weight within 1.9e-6 of
 * its tensor's max|ref| (3.7e-5 of the largest change ten steps made to it), EMA included. */
#define TOL_LOSS_REL 1e-5
#define TOL_NORM_REL 1e-5
/* Weights: |got - ref| <= TOL_W * max|ref of the tensor| + TOL_W * |ref|. */
#define TOL_W 1e-5

static char g_root[64];

typedef struct {
    const char *name;
    double snr_gamma, max_grad_norm;
    int accum, use_ema;
    k22_lr_kind sched;
    int64_t warmup;
} cfg_case;

static const cfg_case CASES[] = {
    {"a", 0.0, 1.0, 1, 0, K22_LR_CONSTANT, 500},
    {"b", 5.0, 0.5, 2, 0, K22_LR_COSINE, 2},
    {"c", 0.0, 1.0, 1, 1, K22_LR_CONSTANT, 500},
};

typedef struct {
    const float *text_embeds, *text_hidden, *image_embeds;
    const uint8_t *text_mask;
    int E, L;
} dataset;

/* The starting prior: `k22 init prior --size tiny --seed 0` with the fixture's clip_mean/std,
 * written to g_root/init as a diffusers folder (what the trainer loads). */
static int write_init(const k22_st_file *f, int E)
{
    k22_model_config cfg;
    k22_params ps;
    k22_err err;
    k22_params_init(&ps);
    if (k22_config_preset(K22_MODEL_PRIOR, "tiny", &cfg, &err) || k22_params_build(&cfg, &ps, &err))
        K22_FATAL("%s", err.msg);
    k22_params_alloc(&ps);
    k22_params_init_random(&cfg, &ps, 0);
    const float *mean = sf_get(f, "init.clip_mean", K22_DTYPE_F32, E);
    const float *sd = sf_get(f, "init.clip_std", K22_DTYPE_F32, E);
    int ok = mean && sd;
    if (ok) {
        memcpy(ps.data + k22_params_find(&ps, "clip_mean")->offset, mean, (size_t)E * sizeof(float));
        memcpy(ps.data + k22_params_find(&ps, "clip_std")->offset, sd, (size_t)E * sizeof(float));
        char dir[128];
        snprintf(dir, sizeof dir, "%s/init", g_root);
        ok = k22_component_save(dir, &cfg, &ps, K22_SHARD_BYTES_DEFAULT, &err) == K22_OK;
        CHECK_MSG(ok, "%s", err.msg);
    }
    k22_params_free(&ps);
    return ok;
}

typedef struct {
    double w_rel, w_upd;
    double zb_err, zb_bound; /* the to_k biases: max |got - ref| and the bound they are held to */
    int64_t w_bad;
} errs;

/* The to_k biases get an exactly-zero gradient (a per-row shift of the logits, which softmax
 * ignores), so both sides train them on rounding noise that Adam normalizes to steps of up to
 * ~lr: they are held only to the bound those steps allow, 2 * sum(lr) * 3.2 (Adam's largest
 * |m_hat / sqrt(v_hat)| over ten steps with these betas is below 3.2). */
static int is_zero_grad(const char *name)
{
    size_t n = strlen(name), s = strlen("to_k.bias");
    return n >= s && !strcmp(name + n - s, "to_k.bias");
}

/* Every parameter of the saved folder dir against <prefix>.<key>. init: the weights before
 * training (for the "share of the update" figure); lr_sum for the zero-gradient biases. */
static void check_weights(const k22_st_file *f, const char *dir, const char *prefix,
                          const k22_params *init, double lr_sum, errs *e, const char *label)
{
    k22_model_config cfg;
    k22_params ps;
    k22_err err;
    k22_params_init(&ps);
    if (k22_component_load(dir, &cfg, &ps, &err)) {
        CHECK_MSG(0, "reload %s: %s", dir, err.msg);
        return;
    }
    for (int i = 0; i < ps.count; i++) {
        const k22_param *p = &ps.items[i];
        char key[256];
        snprintf(key, sizeof key, "%s.%s", prefix, p->name);
        const float *ref = sf_get(f, key, K22_DTYPE_F32, (int64_t)p->numel);
        if (!ref) continue;
        const float *got = ps.data + p->offset, *w0 = init->data + p->offset;
        double rmax = 0, umax = 0, dmax = 0;
        for (size_t k = 0; k < p->numel; k++) {
            rmax = fmax(rmax, fabs(ref[k]));
            umax = fmax(umax, fabs((double)ref[k] - w0[k]));
        }
        int64_t bad = 0;
        for (size_t k = 0; k < p->numel; k++) {
            double d = fabs((double)got[k] - ref[k]);
            dmax = d > dmax || isnan(d) ? d : dmax;
            if (is_zero_grad(p->name)) {
                double bound = 2 * lr_sum * 3.2;
                bad += !(fabs(got[k]) <= bound && fabs(ref[k]) <= bound);
            } else {
                bad += !(d <= TOL_W * rmax + TOL_W * fabs(ref[k]));
            }
        }
        CHECK_MSG(bad == 0, "%s %s: %lld of %zu values off (max abs %.3g, max|ref| %.3g)", label,
                  key, (long long)bad, p->numel, dmax, rmax);
        e->w_bad += bad;
        if (is_zero_grad(p->name)) {
            e->zb_err = fmax(e->zb_err, dmax);
            e->zb_bound = 2 * lr_sum * 3.2;
            continue;
        }
        if (rmax > 0) e->w_rel = fmax(e->w_rel, dmax / rmax);
        if (umax > 0) e->w_upd = fmax(e->w_upd, dmax / umax);
    }
    k22_params_free(&ps);
}

/* A micro-batch of the fixture: rows idx of the data set. Buffers sized for BATCH. */
typedef struct {
    float proj[BATCH * 64], img[BATCH * 64], noise[BATCH * 64];
    float *hidden;
    uint8_t mask[BATCH * 77];
} batch_buf;

static void gather(const dataset *d, const int64_t *idx, const float *noise, batch_buf *bb)
{
    int E = d->E, L = d->L;
    for (int b = 0; b < BATCH; b++) {
        int64_t r = idx[b];
        K22_REQUIRE(r >= 0 && r < NSAMP);
        memcpy(bb->proj + b * E, d->text_embeds + r * E, (size_t)E * sizeof(float));
        memcpy(bb->img + b * E, d->image_embeds + r * E, (size_t)E * sizeof(float));
        memcpy(bb->hidden + (size_t)b * L * E, d->text_hidden + r * L * E, (size_t)L * E * sizeof(float));
        memcpy(bb->mask + b * L, d->text_mask + r * L, (size_t)L);
    }
    memcpy(bb->noise, noise, (size_t)BATCH * E * sizeof(float));
}

/* corrupt != 0 feeds timestep 1 instead of the fixture's 0 to the first sample of the first
 * micro-batch (the canary). Returns the number of failed checks. */
/* run_case with gradient checkpointing (the same numbers are expected: recomputation repeats the
 * same float operations), and the arena size each mode got. */
static int g_ckpt;
static int g_stacked = 1; /* q, k, v as one GEMM (the default), or 0: K22_QKV_STACK=0 */
static size_t g_arena_cap[2];

static int run_case(const k22_backend *be, const k22_st_file *f, const dataset *d,
                    const k22_params *init, const cfg_case *c, int corrupt)
{
    int failures0 = k22_test_failures;
    char key[128], dir[128], label[64];
    int A = c->accum, nm = STEPS * A, E = d->E;
    snprintf(label, sizeof label, "%s config %s%s%s", be->name, c->name, g_ckpt ? " checkpointed" : "",
             g_stacked ? "" : " q,k,v unstacked");
    sf_run r;
    if (!sf_run_load(f, c->name, nm, BATCH, E, STEPS, &r)) return k22_test_failures - failures0;

    k22_train_hparams hp;
    k22_train_hparams_default(&hp);
    hp.snr_gamma = c->snr_gamma;
    hp.max_grad_norm = c->max_grad_norm;
    hp.gradient_accumulation_steps = A;
    hp.use_ema = c->use_ema;
    hp.lr_scheduler = c->sched;
    hp.lr_warmup_steps = c->warmup;
    hp.max_train_steps = STEPS;
    hp.micro_batch = BATCH;
    hp.gradient_checkpointing = g_ckpt;
    k22_prior_trainer tr;
    k22_err err;
    snprintf(dir, sizeof dir, "%s/init", g_root);
    if (k22_prior_trainer_init(&tr, be, dir, &hp, &err)) {
        CHECK_MSG(0, "%s: %s", label, err.msg);
        return k22_test_failures - failures0;
    }
    if (g_stacked) g_arena_cap[g_ckpt] = tr.arena.cap;
    CHECK(tr.model.grad_ckpt == g_ckpt);
    for (int l = 0; l < tr.model.cfg.num_layers; l++)
        CHECK_MSG(tr.model.blocks[l].attn.stacked == g_stacked, "%s: block %d stacked %d", label, l,
                  tr.model.blocks[l].attn.stacked);
    int64_t t_first[BATCH];
    memcpy(t_first, r.ts, sizeof t_first);
    if (corrupt) t_first[0] += 1;
    batch_buf bb;
    bb.hidden = k22_xmalloc((size_t)BATCH * d->L * E * sizeof(float));
    errs e = {0};
    sf_step_errs se = {0};
    for (int s = 0; s < STEPS; s++) {
        for (int k = 0; k < A; k++) {
            int m = s * A + k;
            CHECK(!k22_train_core_sync_due(&tr.core));
            gather(d, r.index + (size_t)m * BATCH, r.noise + (size_t)m * BATCH * E, &bb);
            k22_prior_batch b = {BATCH, bb.proj, bb.hidden, bb.mask, bb.img, bb.noise,
                                 m == 0 ? t_first : r.ts + (size_t)m * BATCH};
            k22_prior_trainer_micro_step(&tr, &b);
        }
        CHECK(k22_train_core_sync_due(&tr.core));
        k22_train_step_log log;
        k22_train_core_sync(&tr.core, &log);
        sf_check_step(label, &r, s, log.step, log.loss, log.lr, log.grad_norm, TOL_LOSS_REL,
                      TOL_NORM_REL, &se);
    }
    snprintf(dir, sizeof dir, "%s/out_%s_%s%d", g_root, be->name, c->name, g_ckpt);
    CHECK_MSG(k22_train_core_save(&tr.core, dir, 0, &err) == K22_OK, "%s", err.msg);
    snprintf(key, sizeof key, "%s.final", c->name);
    check_weights(f, dir, key, init, se.lr_sum, &e, label);
    if (c->use_ema) {
        snprintf(dir, sizeof dir, "%s/ema_%s_%s%d", g_root, be->name, c->name, g_ckpt);
        CHECK_MSG(k22_train_core_save(&tr.core, dir, 1, &err) == K22_OK, "%s", err.msg);
        snprintf(key, sizeof key, "%s.ema", c->name);
        check_weights(f, dir, key, init, se.lr_sum, &e, label);
    } else {
        CHECK(k22_train_core_save(&tr.core, dir, 1, &err) == K22_ERR_ARG);
    }
    printf("%-8s config %s%s: loss max rel %.2e, grad norm max rel %.2e, weights max |err|/max|ref| "
           "%.2e, max |err|/max|update| %.2e; to_k.bias max |err| %.2e (bound %.2e)\n", be->name,
           c->name, g_stacked ? "" : " (q, k, v unstacked)", se.loss_rel, se.norm_rel, e.w_rel, e.w_upd,
           e.zb_err, e.zb_bound);
    free(bb.hidden);
    k22_prior_trainer_free(&tr);
    return k22_test_failures - failures0;
}

/* Bad hyper-parameters are refused with the flag's name, and the trainer is left empty. */
static void test_bad_hparams(const k22_backend *be)
{
    k22_train_hparams hp;
    k22_train_hparams_default(&hp);
    hp.gradient_accumulation_steps = 0;
    k22_prior_trainer tr;
    k22_err err;
    char dir[128];
    snprintf(dir, sizeof dir, "%s/init", g_root);
    CHECK(k22_prior_trainer_init(&tr, be, dir, &hp, &err) == K22_ERR_ARG);
    CHECK(strstr(err.msg, "--gradient_accumulation_steps") != NULL);
    k22_prior_trainer_free(&tr);
    k22_train_hparams_default(&hp);
    hp.max_grad_norm = NAN;
    CHECK(k22_prior_trainer_init(&tr, be, dir, &hp, &err) == K22_ERR_ARG);
    k22_prior_trainer_free(&tr);
    snprintf(dir, sizeof dir, "%s/missing", g_root);
    k22_train_hparams_default(&hp);
    CHECK(k22_prior_trainer_init(&tr, be, dir, &hp, &err) != K22_OK);
    k22_prior_trainer_free(&tr);
}

/* Canaries: the weight check must catch one weight moved by 1e-3 relative, and a run fed
 * timestep 1 instead of 0 for one sample of its first micro-batch must fail. */
static void canary(const k22_st_file *f, const dataset *d, const k22_params *init)
{
    char src[128], dst[128];
    k22_model_config cfg;
    k22_params ps;
    k22_err err;
    k22_params_init(&ps);
    snprintf(src, sizeof src, "%s/out_cpu_a0", g_root);
    if (k22_component_load(src, &cfg, &ps, &err)) {
        CHECK_MSG(0, "canary: %s", err.msg);
        return;
    }
    const k22_param *p = k22_params_find(&ps, "transformer_blocks.0.ff.net.2.weight");
    ps.data[p->offset + 7] *= 1.001f;
    snprintf(dst, sizeof dst, "%s/canary", g_root);
    CHECK(k22_component_save(dst, &cfg, &ps, K22_SHARD_BYTES_DEFAULT, &err) == K22_OK);
    k22_params_free(&ps);
    sf_canary cn = sf_canary_begin();
    errs e = {0};
    check_weights(f, dst, "a.final", init, 1e-3, &e, "canary");
    int caught = k22_test_failures - cn.failures == 1 && e.w_bad == 1;
    k22_backend *be = k22_backend_cpu_new(0);
    int failed = run_case(be, f, d, init, &CASES[0], 1);
    k22_backend_free(be);
    sf_canary_end(cn);
    CHECK_MSG(caught, "canary: a weight moved by 1e-3 went unnoticed (%lld bad)", (long long)e.w_bad);
    CHECK_MSG(failed > 0, "canary: a run fed a wrong timestep passed");
}

int main(void)
{
    snprintf(g_root, sizeof g_root, "/tmp/k22-test-prior-step-XXXXXX");
    if (!mkdtemp(g_root)) return 1;
    k22_st_file *f = NULL;
    k22_err err;
    if (k22_st_open(FIXTURE, &f, &err)) K22_FATAL("%s", err.msg);
    dataset d = {0};
    d.E = 32;
    d.L = 77;
    d.text_embeds = sf_get(f, "data.text_embeds", K22_DTYPE_F32, NSAMP * d.E);
    d.text_hidden = sf_get(f, "data.text_hidden", K22_DTYPE_F32, NSAMP * d.L * d.E);
    d.text_mask = sf_get(f, "data.text_mask", K22_DTYPE_U8, NSAMP * d.L);
    d.image_embeds = sf_get(f, "data.image_embeds", K22_DTYPE_F32, NSAMP * d.E);
    if (d.text_embeds && d.text_hidden && d.text_mask && d.image_embeds && write_init(f, d.E)) {
        k22_model_config cfg;
        k22_params init;
        k22_params_init(&init);
        char dir[128];
        snprintf(dir, sizeof dir, "%s/init", g_root);
        if (k22_component_load(dir, &cfg, &init, &err)) K22_FATAL("%s", err.msg);
        CHECK(cfg.u.prior.embedding_dim == d.E && cfg.u.prior.num_embeddings == d.L);
        for (int ref = 1; ref >= 0; ref--) {
            k22_backend *be = k22_backend_cpu_new(ref);
            for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) run_case(be, f, &d, &init, &CASES[i], 0);
            if (!ref) {
                g_ckpt = 1;
                run_case(be, f, &d, &init, &CASES[0], 0);
                g_ckpt = 0;
                /* The fixture's prior is too shallow for checkpointing to shrink its arena. */
                CHECK_MSG(g_arena_cap[1] <= g_arena_cap[0], "checkpointed arena %zu floats, plain %zu",
                          g_arena_cap[1], g_arena_cap[0]);
                printf("arena floats: plain %zu, gradient checkpointing %zu\n", g_arena_cap[0], g_arena_cap[1]);
                /* the three-GEMM path (K22_QKV_STACK=0) over the same stacked table */
                setenv("K22_QKV_STACK", "0", 1);
                g_stacked = 0;
                run_case(be, f, &d, &init, &CASES[1], 0);
                g_stacked = 1;
                unsetenv("K22_QKV_STACK");
            }
            if (ref) test_bad_hparams(be);
            k22_backend_free(be);
        }
        canary(f, &d, &init);
        k22_params_free(&init);
    }
    k22_st_close(f);
    k22_fs_rm_rf(g_root, NULL);
    return k22_test_finish("test_prior_step");
}
