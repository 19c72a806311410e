/* test_decoder_step.c: ten optimizer steps of the decoder trainer (src/train/step_decoder.c)
 * against the script's loop run by torch / diffusers / accelerate
 * (tools/reference/decoder_train_ref.py, tests/fixtures/decoder_train/steps.safetensors) on the
 * tiny UNet at 16x16 latents, in five configurations: a defaults, b Min-SNR + accumulation 2 +
 * clipping at 0.5 + cosine LR with warmup, c EMA, d v_prediction scheduler + Min-SNR (the
 * script: target noise, weight / (snr + 1)), e as d with correct_v_target (target
 * get_velocity). Compares per step the logged loss, lr and gradient norm, and at the end the
 * saved weights (sampled values, and three sums over each whole tensor's update). Also checks
 * k22_decoder_velocity against diffusers' get_velocity. The fast CPU backend runs every
 * configuration, the reference backend a (it is ~15x slower: 0.7 s a step); under ASan
 * (K22_TEST_QUICK set, or the sanitizer detected) the fast backend runs b, c and e and the
 * reference backend only the get_velocity and bad-input checks (under a minute). A canary
 * moves one weight and one timestep and expects the checks to catch both. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "k22/diffusers.h"
#include "k22/fsutil.h"
#include "k22/safetensors.h"
#include "k22/train_decoder.h"

#define SF_GENERATOR "decoder_train_ref.py"
#include "step_fixture.h"

#define FIXTURE "tests/fixtures/decoder_train/steps.safetensors"
#define STEPS 10
#define BATCH 2
#define NSAMP 4
#define HW 16
#define NLAT (4 * HW * HW)
#define E 32
#define FULL_MAX 64 /* the generator's sampling of weights */
#define SAMPLE_N 64

/* Tolerances (the 1e-5 relative in fp32; achieved figures are printed per run). */
#define TOL_LOSS_REL 1e-5
#define TOL_NORM_REL 1e-5
/* Sampled weights: |got - ref| <= TOL_W * max|sampled ref| + TOL_WU * max|sampled update|
 * (the update is final - init: biases start at zero, so their values are all update). */
#define TOL_W 1e-5
#define TOL_WU 5e-4
/* Update sums (u = final - init over the whole tensor): sum u^2 within TOL_U relative, sum u and
 * sum u * ((i mod 7) - 3) within TOL_U * sum |u| and TOL_U * 3 sum |u|. */
#define TOL_U 1e-4

#if defined(__SANITIZE_ADDRESS__)
#define K22_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define K22_ASAN 1
#endif
#endif
#ifndef K22_ASAN
#define K22_ASAN 0
#endif

static char g_root[64];

typedef struct {
    const char *name;
    double snr_gamma, max_grad_norm;
    int accum, use_ema, vpred, v_target;
    k22_lr_kind sched;
    int64_t warmup;
} cfg_case;

static const cfg_case CASES[] = {
    {"a", 0.0, 1.0, 1, 0, 0, 0, K22_LR_CONSTANT, 500},
    {"b", 5.0, 0.5, 2, 0, 0, 0, K22_LR_COSINE, 2},
    {"c", 0.0, 1.0, 1, 1, 0, 0, K22_LR_CONSTANT, 500},
    {"d", 5.0, 1.0, 1, 0, 1, 0, K22_LR_CONSTANT, 500},
    {"e", 5.0, 1.0, 1, 0, 1, 1, K22_LR_CONSTANT, 500},
};

typedef struct {
    const float *latents, *image_embeds;
} dataset;

/* The decoder folder's scheduler (what `k22 init decoder` writes), v_prediction when asked. */
static void sched_config(int vpred, k22_sched_config *sc)
{
    k22_err err;
    if (k22_sched_preset("decoder", sc, &err)) K22_FATAL("%s", err.msg);
    if (vpred) sc->prediction_type = K22_PRED_V;
}

/* The starting UNet: `k22 init decoder --size tiny --seed 0`, written to g_root/init. */
static void write_init(k22_params *init)
{
    k22_model_config cfg;
    k22_err err;
    k22_params_init(init);
    if (k22_config_preset(K22_MODEL_UNET, "tiny", &cfg, &err) || k22_params_build(&cfg, init, &err))
        K22_FATAL("%s", err.msg);
    k22_params_alloc(init);
    k22_params_init_random(&cfg, init, 0);
    char dir[128];
    snprintf(dir, sizeof dir, "%s/init", g_root);
    if (k22_component_save(dir, &cfg, init, K22_SHARD_BYTES_DEFAULT, &err)) K22_FATAL("%s", err.msg);
}

typedef struct {
    double w_rel, w_upd, u2_rel, u1_rel, zb_err, zb_bound;
    int64_t w_bad, u_bad;
} errs;

/* Biases with an exactly-zero gradient: a per-channel constant feeding a GroupNorm whose groups
 * are single channels (the tiny UNet's 32-channel level has 32 groups), which the normalization
 * removes. Both sides train them on rounding noise that Adam normalizes to steps of up to ~lr,
 * so they are held only to the bound those steps allow, 2 * sum(lr) * 3.2 (as the prior's
 * test does for its to_k biases). */
static int is_zero_grad(const char *name)
{
    static const char *const names[] = {
        "down_blocks.0.resnets.0.conv1.bias",         /* -> norm2 (32 channels) */
        "down_blocks.0.downsamplers.0.conv1.bias",    /* -> norm2 */
        "up_blocks.1.resnets.0.conv1.bias",           /* -> norm2 */
        "up_blocks.1.resnets.1.conv1.bias",           /* -> norm2 */
        "up_blocks.1.resnets.1.conv2.bias",           /* -> conv_norm_out (32 channels) */
        "up_blocks.1.resnets.1.conv_shortcut.bias",   /* -> conv_norm_out */
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcmp(name, names[i])) return 1;
    return 0;
}

/* One tensor's update sums against the fixture's (float64 bits). */
static int check_usum(const float *got, const float *w0, size_t n, const void *ref, errs *e)
{
    double s0 = 0, s1 = 0, s2 = 0, sabs = 0;
    for (size_t k = 0; k < n; k++) {
        double u = (double)got[k] - (double)w0[k];
        s0 += u;
        s1 += u * u;
        s2 += u * (double)((int)(k % 7) - 3);
        sabs += fabs(u);
    }
    double r0 = sf_f64_at(ref, 0), r1 = sf_f64_at(ref, 1), r2 = sf_f64_at(ref, 2);
    double d1 = fabs(s1 - r1), d0 = fmax(fabs(s0 - r0), fabs(s2 - r2) / 3);
    int ok = d1 <= TOL_U * r1 && d0 <= TOL_U * sabs;
    if (r1 > 0) e->u2_rel = fmax(e->u2_rel, d1 / r1);
    if (sabs > 0) e->u1_rel = fmax(e->u1_rel, d0 / sabs);
    if (!ok || isnan(s1)) {
        e->u_bad++;
        return 0;
    }
    return 1;
}

/* Every parameter of the saved folder dir against <prefix>.<key> (samples) and <sumprefix>.<key>
 * (update sums from init). */
static void check_weights(const k22_st_file *f, const char *dir, const char *prefix,
                          const char *sumprefix, const k22_params *init, double lr_sum, errs *e,
                          const char *label)
{
    k22_model_config cfg;
    k22_params ps;
    k22_err err;
    k22_params_init(&ps);
    if (k22_component_load(dir, &cfg, &ps, &err)) {
        CHECK_MSG(0, "reload %s: %s", dir, err.msg);
        return;
    }
    CHECK(ps.count == init->count);
    for (int i = 0; i < ps.count && i < init->count; i++) {
        const k22_param *p = &ps.items[i];
        size_t n = p->numel, stride = n <= FULL_MAX ? 1 : (n + SAMPLE_N - 1) / SAMPLE_N;
        size_t ns = (n + stride - 1) / stride;
        char key[256];
        snprintf(key, sizeof key, "%s.%s", prefix, p->name);
        const float *ref = sf_get(f, key, K22_DTYPE_F32, (int64_t)ns);
        snprintf(key, sizeof key, "%s.%s", sumprefix, p->name);
        const void *usum = sf_get(f, key, K22_DTYPE_I64, 3);
        if (!ref || !usum) continue;
        const float *got = ps.data + p->offset, *w0 = init->data + init->items[i].offset;
        double rmax = 0, umax = 0, dmax = 0;
        for (size_t k = 0; k < ns; k++) {
            rmax = fmax(rmax, fabs(ref[k]));
            umax = fmax(umax, fabs((double)ref[k] - w0[k * stride]));
        }
        int zg = is_zero_grad(p->name);
        double bound = 2 * lr_sum * 3.2;
        int64_t bad = 0;
        for (size_t k = 0; k < ns; k++) {
            double d = fabs((double)got[k * stride] - ref[k]);
            dmax = d > dmax || isnan(d) ? d : dmax;
            if (zg)
                bad += !(fabs(got[k * stride] - w0[k * stride]) <= bound && fabs(ref[k] - w0[k * stride]) <= bound);
            else
                bad += !(d <= TOL_W * rmax + TOL_WU * umax);
        }
        CHECK_MSG(bad == 0, "%s %s.%s: %lld of %zu sampled values off (max abs %.3g, max|ref| %.3g, "
                  "max|update| %.3g)", label, prefix, p->name, (long long)bad, ns, dmax, rmax, umax);
        e->w_bad += bad;
        if (zg) {
            e->zb_err = fmax(e->zb_err, dmax);
            e->zb_bound = bound;
            continue;
        }
        if (rmax > 0) e->w_rel = fmax(e->w_rel, dmax / rmax);
        if (umax > 0) e->w_upd = fmax(e->w_upd, dmax / umax);
        CHECK_MSG(check_usum(got, w0, n, usum, e), "%s %s.%s: update sums differ", label,
                  sumprefix, p->name);
    }
    k22_params_free(&ps);
}

typedef struct {
    float lat[BATCH * NLAT], img[BATCH * E];
} batch_buf;

static void gather(const dataset *d, const int64_t *idx, batch_buf *bb)
{
    for (int b = 0; b < BATCH; b++) {
        int64_t r = idx[b];
        K22_REQUIRE(r >= 0 && r < NSAMP);
        memcpy(bb->lat + b * NLAT, d->latents + r * NLAT, NLAT * sizeof(float));
        memcpy(bb->img + b * E, d->image_embeds + r * E, E * sizeof(float));
    }
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
    char key[128], dir[128], label[80], sp[32];
    int A = c->accum, nm = STEPS * A;
    snprintf(label, sizeof label, "%s config %s%s%s", be->name, c->name, g_ckpt ? " checkpointed" : "",
             g_stacked ? "" : " (q, k, v unstacked)");
    sf_run r;
    if (!sf_run_load(f, c->name, nm, BATCH, NLAT, STEPS, &r)) return k22_test_failures - failures0;

    k22_decoder_train_hparams hp;
    k22_decoder_train_hparams_default(&hp);
    hp.base.snr_gamma = c->snr_gamma;
    hp.base.max_grad_norm = c->max_grad_norm;
    hp.base.gradient_accumulation_steps = A;
    hp.base.use_ema = c->use_ema;
    hp.correct_v_target = c->v_target;
    hp.base.lr_scheduler = c->sched;
    hp.base.lr_warmup_steps = c->warmup;
    hp.base.max_train_steps = STEPS;
    hp.base.micro_batch = BATCH;
    hp.latent_h = hp.latent_w = HW;
    hp.base.gradient_checkpointing = g_ckpt;
    k22_sched_config sc;
    sched_config(c->vpred, &sc);
    k22_decoder_trainer tr;
    k22_err err;
    snprintf(dir, sizeof dir, "%s/init", g_root);
    if (k22_decoder_trainer_init(&tr, be, dir, &sc, &hp, &err)) {
        CHECK_MSG(0, "%s: %s", label, err.msg);
        return k22_test_failures - failures0;
    }
    if (g_stacked) g_arena_cap[g_ckpt] = tr.arena.cap;
    CHECK(tr.model.grad_ckpt == (g_ckpt ? K22_UNET_CKPT_ALL : 0)); /* every block */
    for (int i = 0; i < tr.model.nattn; i++)
        CHECK_MSG(tr.model.attn[i].stacked == g_stacked, "%s: attention %d stacked %d", label, i,
                  tr.model.attn[i].stacked);
    int64_t t_first[BATCH];
    memcpy(t_first, r.ts, sizeof t_first);
    if (corrupt) t_first[0] += 1;
    static batch_buf bb;
    errs e = {0};
    sf_step_errs se = {0};
    for (int s = 0; s < STEPS; s++) {
        for (int k = 0; k < A; k++) {
            int m = s * A + k;
            CHECK(!k22_train_core_sync_due(&tr.core));
            gather(d, r.index + (size_t)m * BATCH, &bb);
            k22_decoder_batch b = {BATCH, bb.lat, bb.img, r.noise + (size_t)m * BATCH * NLAT,
                                   m == 0 ? t_first : r.ts + (size_t)m * BATCH};
            k22_decoder_trainer_micro_step(&tr, &b);
        }
        CHECK(k22_train_core_sync_due(&tr.core));
        k22_train_step_log log;
        k22_train_core_sync(&tr.core, &log);
        sf_check_step(label, &r, s, log.step, log.loss, log.lr, log.grad_norm, TOL_LOSS_REL,
                      TOL_NORM_REL, &se);
    }
    if (corrupt) { /* the canary needs only the per-step checks to fail */
        k22_decoder_trainer_free(&tr);
        return k22_test_failures - failures0;
    }
    snprintf(dir, sizeof dir, "%s/out_%s_%s%d%d", g_root, be->name, c->name, g_ckpt, g_stacked);
    CHECK_MSG(k22_train_core_save(&tr.core, dir, 0, &err) == K22_OK, "%s", err.msg);
    snprintf(key, sizeof key, "%s.final", c->name);
    snprintf(sp, sizeof sp, "%s.usum", c->name);
    check_weights(f, dir, key, sp, init, se.lr_sum, &e, label);
    if (c->use_ema) {
        snprintf(dir, sizeof dir, "%s/ema_%s_%s%d%d", g_root, be->name, c->name, g_ckpt, g_stacked);
        CHECK_MSG(k22_train_core_save(&tr.core, dir, 1, &err) == K22_OK, "%s", err.msg);
        snprintf(key, sizeof key, "%s.ema", c->name);
        snprintf(sp, sizeof sp, "%s.emausum", c->name);
        check_weights(f, dir, key, sp, init, se.lr_sum, &e, label);
    } else {
        CHECK(k22_train_core_save(&tr.core, dir, 1, &err) == K22_ERR_ARG);
    }
    printf("%-8s config %s%s: loss max rel %.2e, grad norm max rel %.2e, sampled weights max "
           "|err|/max|ref| %.2e, |err|/max|update| %.2e; update sums: u^2 max rel %.2e, u and u*k "
           "max |err|/sum|u| %.2e; zero-grad biases max |err| %.2e (bound %.2e)\n", be->name,
           c->name, g_stacked ? "" : " (q, k, v unstacked)", se.loss_rel, se.norm_rel, e.w_rel, e.w_upd, e.u2_rel, e.u1_rel, e.zb_err,
           e.zb_bound);
    k22_decoder_trainer_free(&tr);
    return k22_test_failures - failures0;
}

/* k22_decoder_velocity of the fixture's inputs on be into got ((NSAMP, NLAT) host). */
static void velocity_run(const k22_backend *be, const k22_noise_schedule *s, const float *latents,
                         const float *noise, const int64_t *t, float *got)
{
    size_t bytes = NSAMP * NLAT * sizeof(float);
    float *lat = be->alloc(be->ctx, bytes), *nz = be->alloc(be->ctx, bytes), *v = be->alloc(be->ctx, bytes);
    float *tmp = be->alloc(be->ctx, NLAT * sizeof(float));
    be->to_device(be->ctx, lat, latents, bytes);
    be->to_device(be->ctx, nz, noise, bytes);
    k22_decoder_velocity(be, s, v, lat, nz, t, NSAMP, NLAT, tmp);
    be->to_host(be->ctx, got, v, bytes);
    float *bufs[] = {lat, nz, v, tmp};
    for (int i = 0; i < 4; i++) be->free(be->ctx, bufs[i]);
}

/* k22_decoder_velocity against diffusers' get_velocity (t = 0, 1, 500, 999): within 1e-6 with
 * k22's sqrtf coefficients (torch's CPU sqrt may be 1 ulp off, schedule.h), and bit for bit once
 * torch's square roots are substituted into the schedule. */
static void test_velocity(const k22_backend *be, const k22_st_file *f, const dataset *d)
{
    const int64_t *t = sf_get(f, "velocity.t", K22_DTYPE_I64, NSAMP);
    const float *noise = sf_get(f, "velocity.noise", K22_DTYPE_F32, NSAMP * NLAT);
    const float *ref = sf_get(f, "velocity.v", K22_DTYPE_F32, NSAMP * NLAT);
    const float *sa = sf_get(f, "velocity.sqrt_a", K22_DTYPE_F32, NSAMP);
    const float *s1 = sf_get(f, "velocity.sqrt_1ma", K22_DTYPE_F32, NSAMP);
    if (!t || !noise || !ref || !sa || !s1) return;
    k22_sched_config sc;
    sched_config(1, &sc);
    k22_noise_schedule s;
    k22_err err;
    if (k22_noise_schedule_init(&s, &sc, &err)) K22_FATAL("%s", err.msg);
    float *got = k22_xmalloc(NSAMP * NLAT * sizeof(float));
    velocity_run(be, &s, d->latents, noise, t, got);
    char name[64];
    snprintf(name, sizeof name, "%s get_velocity", be->name);
    k22_check_close(name, got, ref, NSAMP * NLAT, 1e-6, 1e-6);
    double dmax = 0;
    int exact = 0;
    for (int i = 0; i < NSAMP * NLAT; i++) {
        dmax = fmax(dmax, fabs((double)got[i] - ref[i]));
        exact += got[i] == ref[i];
    }
    for (int i = 0; i < NSAMP; i++) {
        K22_REQUIRE(t[i] >= 0 && t[i] < s.T);
        s.sqrt_a[t[i]] = sa[i];
        s.sqrt_1ma[t[i]] = s1[i];
    }
    velocity_run(be, &s, d->latents, noise, t, got);
    snprintf(name, sizeof name, "%s get_velocity (torch's square roots)", be->name);
    k22_check_close(name, got, ref, NSAMP * NLAT, 0, 0);
    printf("%s get_velocity: max |err| %.2e (%d of %d values bit-exact); with torch's square roots "
           "bit-exact\n", be->name, dmax, exact, NSAMP * NLAT);
    free(got);
    k22_noise_schedule_free(&s);
}

/* Bad hyper-parameters and models are refused with the reason, and the trainer left empty. */
static void test_bad_init(const k22_backend *be)
{
    k22_decoder_train_hparams hp;
    k22_decoder_train_hparams_default(&hp);
    hp.base.gradient_accumulation_steps = 0;
    k22_decoder_trainer tr;
    k22_err err;
    k22_sched_config sc;
    sched_config(0, &sc);
    char dir[128];
    snprintf(dir, sizeof dir, "%s/init", g_root);
    CHECK(k22_decoder_trainer_init(&tr, be, dir, &sc, &hp, &err) == K22_ERR_ARG);
    CHECK(strstr(err.msg, "--gradient_accumulation_steps") != NULL);
    k22_decoder_trainer_free(&tr);
    k22_decoder_train_hparams_default(&hp);
    hp.latent_h = 15; /* the tiny UNet halves once */
    CHECK(k22_decoder_trainer_init(&tr, be, dir, &sc, &hp, &err) == K22_ERR_ARG);
    CHECK(strstr(err.msg, "divisible by 2") != NULL);
    k22_decoder_trainer_free(&tr);
    k22_decoder_train_hparams_default(&hp);
    sc.rescale_betas_zero_snr = 1;
    CHECK(k22_decoder_trainer_init(&tr, be, dir, &sc, &hp, &err) == K22_ERR_UNSUPPORTED);
    k22_decoder_trainer_free(&tr);
    sched_config(0, &sc);
    snprintf(dir, sizeof dir, "%s/missing", g_root);
    CHECK(k22_decoder_trainer_init(&tr, be, dir, &sc, &hp, &err) != K22_OK);
    k22_decoder_trainer_free(&tr);
}

/* Canaries: the weight check must catch one sampled weight moved by 1e-3 relative, and a run fed
 * timestep 1 instead of 0 for one sample of its first micro-batch must fail. */
static void canary(const k22_st_file *f, const dataset *d, const k22_params *init)
{
    char src[128], dst[128];
    k22_model_config cfg;
    k22_params ps;
    k22_err err;
    k22_params_init(&ps);
    snprintf(src, sizeof src, "%s/out_cpu_b01", g_root); /* b runs in every mode (stacked) */
    if (k22_component_load(src, &cfg, &ps, &err)) {
        CHECK_MSG(0, "canary: %s", err.msg);
        return;
    }
    const k22_param *p = k22_params_find(&ps, "down_blocks.1.attentions.0.to_q.weight");
    K22_REQUIRE(p && p->numel > FULL_MAX);
    ps.data[p->offset] *= 1.001f; /* index 0 is always sampled */
    snprintf(dst, sizeof dst, "%s/canary", g_root);
    CHECK(k22_component_save(dst, &cfg, &ps, K22_SHARD_BYTES_DEFAULT, &err) == K22_OK);
    k22_params_free(&ps);
    sf_canary cn = sf_canary_begin();
    errs e = {0};
    check_weights(f, dst, "b.final", "b.usum", init, 1e-3, &e, "canary");
    int caught = e.w_bad == 1;
    k22_backend *be = k22_backend_cpu_new(0);
    int failed = run_case(be, f, d, init, &CASES[0], 1);
    k22_backend_free(be);
    sf_canary_end(cn);
    CHECK_MSG(caught, "canary: a weight moved by 1e-3 went unnoticed (%lld bad)", (long long)e.w_bad);
    CHECK_MSG(failed > 0, "canary: a run fed a wrong timestep passed");
}

int main(void)
{
    snprintf(g_root, sizeof g_root, "/tmp/k22-test-decoder-step-XXXXXX");
    if (!mkdtemp(g_root)) return 1;
    int quick = K22_ASAN || getenv("K22_TEST_QUICK") != NULL;
    k22_st_file *f = NULL;
    k22_err err;
    if (k22_st_open(FIXTURE, &f, &err)) K22_FATAL("%s", err.msg);
    dataset d = {0};
    d.latents = sf_get(f, "data.latents", K22_DTYPE_F32, NSAMP * NLAT);
    d.image_embeds = sf_get(f, "data.image_embeds", K22_DTYPE_F32, NSAMP * E);
    if (d.latents && d.image_embeds) {
        k22_params init;
        write_init(&init);
        k22_backend *be = k22_backend_cpu_new(0);
        for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
            /* quick: a runs (fed a wrong timestep) in the canary; d is e with another target */
            if (quick && (i == 0 || i == 3)) continue;
            run_case(be, f, &d, &init, &CASES[i], 0);
        }
        g_ckpt = 1;
        run_case(be, f, &d, &init, &CASES[1], 0);
        g_ckpt = 0;
        CHECK_MSG(g_arena_cap[1] < g_arena_cap[0], "checkpointed arena %zu floats, plain %zu",
                  g_arena_cap[1], g_arena_cap[0]);
        printf("arena floats: plain %zu, gradient checkpointing %zu\n", g_arena_cap[0], g_arena_cap[1]);
        /* the three-GEMM path (K22_QKV_STACK=0) over the same stacked table */
        setenv("K22_QKV_STACK", "0", 1);
        g_stacked = 0;
        run_case(be, f, &d, &init, &CASES[1], 0);
        g_stacked = 1;
        unsetenv("K22_QKV_STACK");
        test_velocity(be, f, &d);
        k22_backend_free(be);
        be = k22_backend_cpu_new(1);
        if (quick) {
            printf("quick run (sanitizer or K22_TEST_QUICK): configurations a (but in the canary) and "
                   "d skipped, the reference backend runs no training configuration\n");
        } else {
            run_case(be, f, &d, &init, &CASES[0], 0);
        }
        test_velocity(be, f, &d);
        test_bad_init(be);
        k22_backend_free(be);
        canary(f, &d, &init);
        k22_params_free(&init);
    }
    k22_st_close(f);
    k22_fs_rm_rf(g_root, NULL);
    return k22_test_finish("test_decoder_step");
}
