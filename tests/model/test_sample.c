/* test_sample.c: k22's sampling against diffusers' KandinskyV22PriorPipeline + KandinskyV22Pipeline
 * (tests/fixtures/sample, tools/reference/make_sample_fixtures.py): scheduler timesteps (exact),
 * single scheduler steps on random inputs, and both pipelines end to end on the tiny models of
 * `k22 init --size tiny --seed 0` with torch's noise fed in; then that an image does not depend
 * on the batch it was drawn in, and a canary. */
#include "model_fixture.h"

#include "k22/sample.h"

#include <libgen.h>
#include <unistd.h>

#define FIX "tests/fixtures/sample/sample.safetensors"

/* One scheduler step: float32 scalar arithmetic on both sides, but torch's CPU sqrt/log/exp may
 * differ from libm by an ulp, and the learned-range log/exp chain carries that along: 1e-6 of
 * the largest value plus 1e-5 relative. */
#define STEP_ATOL 1e-6
#define STEP_RTOL 1e-5

/* The pipelines: every model forward differs from torch's by a few ulps (summation order), and
 * guidance 4 multiplies differences of nearby values by 4 at every step, through 3-4 steps
 * per stage: embeddings and latents to 2e-4 of the tensor's largest value plus 2e-4 relative
 * (measured: embeddings 5e-7, latents 5e-5 of a largest value of 23). The MoVQ decode of the
 * random tiny model amplifies that: pixels (after the pipeline's clamp to [0, 1]) to 1e-3
 * absolute, a quarter of one 8-bit level (measured 1.4e-4); the 8-bit values may then differ
 * by one level where a value sits at a rounding edge. */
#define PIPE_ATOL 2e-4
#define PIPE_RTOL 2e-4
#define PIX_ATOL 1e-3

static const struct {
    const char *name;
    int unclip;
    const char *spacing;
    int steps_offset, steps;
} TS_CASES[] = {
    {"unclip_25", 1, NULL, 0, 25},
    {"unclip_7", 1, NULL, 0, 7},
    {"ddpm_leading_100", 0, "leading", 1, 100},
    {"ddpm_leading_3", 0, "leading", 1, 3},
    {"ddpm_linspace_7", 0, "linspace", 1, 7},
    {"ddpm_trailing_3", 0, "trailing", 0, 3},
    {"ddpm_trailing_10", 0, "trailing", 0, 10},
};

static void sched_cfg(int unclip, k22_sched_config *c)
{
    k22_err err;
    if (k22_sched_preset(unclip ? "prior" : "decoder", c, &err)) K22_FATAL("%s", err.msg);
}

static void test_timesteps(const k22_st_file *f)
{
    for (size_t i = 0; i < sizeof TS_CASES / sizeof TS_CASES[0]; i++) {
        k22_sched_config c;
        sched_cfg(TS_CASES[i].unclip, &c);
        if (TS_CASES[i].spacing) snprintf(c.timestep_spacing, sizeof c.timestep_spacing, "%s", TS_CASES[i].spacing);
        c.steps_offset = TS_CASES[i].steps_offset;
        k22_infer_sched s;
        k22_err err;
        CHECK(k22_infer_sched_init(&s, &c, &err) == K22_OK);
        CHECK(k22_infer_sched_set_timesteps(&s, TS_CASES[i].steps, &err) == K22_OK);
        char name[128];
        snprintf(name, sizeof name, "ts.%s", TS_CASES[i].name);
        const k22_st_tensor *t = k22_st_find(f, name);
        CHECK_MSG(t && t->dtype == K22_DTYPE_I64, "%s missing", name);
        if (t) {
            int64_t n = k22_shape_numel(t->ndim, t->shape);
            const int64_t *ref = t->data;
            int same = n == s.n;
            for (int64_t k = 0; same && k < n; k++) same = ref[k] == s.timesteps[k];
            CHECK_MSG(same, "%s: %d timesteps from %lld..%lld, diffusers has %lld from %lld..%lld", name, s.n,
                      (long long)s.timesteps[0], (long long)s.timesteps[s.n - 1], (long long)n,
                      (long long)ref[0], (long long)ref[n - 1]);
        }
        k22_infer_sched_free(&s);
    }
}

/* The generator's STEP_CASES. */
static const struct {
    const char *name;
    int unclip;
    const char *variance, *pred;
    int clip;
    float clip_range;
    int steps, i, oc, c;
} STEP_CASES[] = {
    {"unclip_first", 1, NULL, NULL, -1, 0, 5, 0, 16, 16},
    {"unclip_last", 1, NULL, NULL, -1, 0, 5, 4, 16, 16},
    {"unclip_eps", 1, NULL, "epsilon", 0, 0, 5, 2, 16, 16},
    {"ddpm_learned_range_first", 0, NULL, NULL, -1, 0, 4, 0, 8, 4},
    {"ddpm_learned_range_last", 0, NULL, NULL, -1, 0, 4, 3, 8, 4},
    {"ddpm_fixed_small", 0, "fixed_small", NULL, 1, 0, 4, 1, 4, 4},
    {"ddpm_v_fixed_large", 0, "fixed_large", "v_prediction", -1, 0, 4, 2, 4, 4},
    {"ddpm_sample_small_log", 0, "fixed_small_log", "sample", 1, 0.5f, 4, 1, 4, 4},
};

static void test_steps(const k22_st_file *f)
{
    for (size_t k = 0; k < sizeof STEP_CASES / sizeof STEP_CASES[0]; k++) {
        k22_sched_config c;
        sched_cfg(STEP_CASES[k].unclip, &c);
        if (STEP_CASES[k].variance) snprintf(c.variance_type, sizeof c.variance_type, "%s", STEP_CASES[k].variance);
        if (STEP_CASES[k].pred)
            c.prediction_type = !strcmp(STEP_CASES[k].pred, "epsilon") ? K22_PRED_EPSILON
                                : !strcmp(STEP_CASES[k].pred, "sample") ? K22_PRED_SAMPLE : K22_PRED_V;
        if (STEP_CASES[k].clip >= 0) c.clip_sample = STEP_CASES[k].clip;
        if (STEP_CASES[k].clip_range > 0) c.clip_sample_range = STEP_CASES[k].clip_range;
        k22_infer_sched s;
        k22_err err;
        CHECK(k22_infer_sched_init(&s, &c, &err) == K22_OK);
        CHECK(k22_infer_sched_set_timesteps(&s, STEP_CASES[k].steps, &err) == K22_OK);
        int B = STEP_CASES[k].unclip ? 3 : 2, C = STEP_CASES[k].c, OC = STEP_CASES[k].oc;
        /* the prior's (B, E) is E channels of one value */
        int64_t S = STEP_CASES[k].unclip ? 1 : 9, n = (int64_t)B * C * S;
        char name[160];
        snprintf(name, sizeof name, "step.%s.model_out", STEP_CASES[k].name);
        float *mo = mf_get(f, name, (int64_t)B * OC * S, NULL);
        snprintf(name, sizeof name, "step.%s.sample", STEP_CASES[k].name);
        float *x = mf_get(f, name, n, NULL);
        snprintf(name, sizeof name, "step.%s.noise", STEP_CASES[k].name);
        float *nz = mf_get(f, name, n, NULL);
        snprintf(name, sizeof name, "step.%s.prev", STEP_CASES[k].name);
        float *ref = mf_get(f, name, n, NULL);
        k22_infer_sched_step(&s, STEP_CASES[k].i, mo, OC, x, B, C, S, nz);
        snprintf(name, sizeof name, "step %s (t=%lld)", STEP_CASES[k].name, (long long)s.timesteps[STEP_CASES[k].i]);
        mf_check("host", name, x, ref, n, STEP_ATOL, STEP_RTOL);
        free(mo), free(x), free(nz), free(ref);
        k22_infer_sched_free(&s);
    }
}

static const char *meta(const k22_st_file *f, const char *c, const char *key)
{
    char k[128];
    snprintf(k, sizeof k, "%s.%s", c, key);
    return k22_st_metadata_get(f, k);
}

static int meta_int(const k22_st_file *f, const char *c, const char *key)
{
    const char *v = meta(f, c, key);
    if (!v) K22_FATAL("fixture: no metadata %s.%s", c, key);
    return atoi(v);
}

/* Fixture case c against k22 with the same noise; prior_only: a sampler without a decoder, stopping at the embeddings. */
static void test_case(const k22_st_file *f, k22_sampler *s, const char *c, int prior_only)
{
    int np = meta_int(f, c, "n_prompts");
    const char *prompts[8];
    K22_REQUIRE(np >= 1 && np <= 8);
    for (int i = 0; i < np; i++) {
        char k[32];
        snprintf(k, sizeof k, "prompt.%d", i);
        prompts[i] = meta(f, c, k);
        K22_REQUIRE(prompts[i]);
    }
    k22_sample_opts o;
    k22_sample_opts_default(&o);
    o.negative_prompt = meta(f, c, "negative");
    o.num_images = meta_int(f, c, "num_images");
    o.prior_steps = meta_int(f, c, "prior_steps"), o.decoder_steps = meta_int(f, c, "decoder_steps");
    o.height = meta_int(f, c, "height"), o.width = meta_int(f, c, "width");
    o.prior_guidance_scale = atof(meta(f, c, "prior_guidance"));
    o.guidance_scale = atof(meta(f, c, "guidance"));
    char name[128];
#define GET(field, key)                                                                            \
    snprintf(name, sizeof name, "%s.%s", c, key);                                                  \
    float *field = mf_get(f, name, -1, NULL)
    GET(pl, "prior_latents");
    GET(pn, "prior_noise");
    GET(dl, "decoder_latents");
    GET(dn, "decoder_noise");
    GET(img, "image_embeds");
    GET(neg, "negative_embeds");
    GET(lat, "latents");
    GET(pix, "pixels");
#undef GET
    o.prior_latents = pl, o.prior_noise = pn, o.decoder_latents = dl, o.decoder_noise = dn;
    o.skip_decoder = prior_only;
    k22_sample_result r;
    k22_err err;
    double t0 = mf_now_s();
    k22_status st = k22_sample_images(s, prompts, np, &o, &r, &err);
    CHECK_MSG(st == K22_OK, "case %s: %s", c, err.msg);
    if (st == K22_OK && prior_only) {
        mf_check("cpu", "prior only: image_embeds", r.image_embeds, img, (int64_t)r.n * r.E, PIPE_ATOL, PIPE_RTOL);
        mf_check("cpu", "prior only: negative_embeds", r.negative_embeds, neg, (int64_t)r.n * r.E, PIPE_ATOL,
                 PIPE_RTOL);
        CHECK(r.latents == NULL && r.rgb == NULL);
        k22_sample_result_free(&r);
    } else if (st == K22_OK) {
        printf("case %s: %d images %d x %d (latents %d x %d) in %.2f s\n", c, r.n, r.width, r.height, r.lat_w,
               r.lat_h, mf_now_s() - t0);
        int64_t nl = (int64_t)r.n * 4 * r.lat_h * r.lat_w, np3 = (int64_t)r.n * r.height * r.width * 3;
        char what[96];
        snprintf(what, sizeof what, "%s image_embeds", c);
        mf_check("cpu", what, r.image_embeds, img, (int64_t)r.n * r.E, PIPE_ATOL, PIPE_RTOL);
        snprintf(what, sizeof what, "%s negative_embeds", c);
        mf_check("cpu", what, r.negative_embeds, neg, (int64_t)r.n * r.E, PIPE_ATOL, PIPE_RTOL);
        snprintf(what, sizeof what, "%s latents", c);
        mf_check("cpu", what, r.latents, lat, nl, PIPE_ATOL, PIPE_RTOL);
        snprintf(what, sizeof what, "%s pixels", c);
        mf_check_scaled("cpu", what, r.pixels, pix, np3, PIX_ATOL, 0.0, 1.0);
        /* the 8-bit image is round(pixels * 255): within one level everywhere, and equal but at
         * rounding edges (under 1%) */
        int64_t off = 0, far = 0;
        for (int64_t k = 0; k < np3; k++) {
            int d = abs((int)r.rgb[k] - (int)nearbyintf(pix[k] * 255.0f));
            off += d != 0, far += d > 1;
        }
        CHECK_MSG(far == 0 && off * 100 <= np3, "%s: %lld of %lld 8-bit values differ from round(diffusers * 255), "
                  "%lld by more than 1", c, (long long)off, (long long)np3, (long long)far);
        printf("%s: %lld of %lld 8-bit values differ by one level from round(diffusers pixels * 255)\n", c,
               (long long)off, (long long)np3);
        k22_sample_result_free(&r);
    }
    free(pl), free(pn), free(dl), free(dn), free(img), free(neg), free(lat), free(pix);
}

/* Philox noise keyed by the image's global index: two prompts in one batch give the images that
 * each prompt gives alone (image_offset 1 for the second); plain loops on both runs, so the
 * only difference is the batch size (the values are expected equal; 1e-6 allows for nothing
 * more than summation order). */
static void test_batch_independent(k22_sampler *s)
{
    const char *p[2] = {"a small house", "two birds"};
    k22_sample_opts o;
    k22_sample_opts_default(&o);
    o.seed = 7, o.prior_steps = 3, o.decoder_steps = 2, o.height = o.width = 16;
    k22_sample_result both, one, two;
    k22_err err;
    CHECK(k22_sample_images(s, p, 2, &o, &both, &err) == K22_OK);
    CHECK(k22_sample_images(s, p, 1, &o, &one, &err) == K22_OK);
    o.image_offset = 1;
    CHECK(k22_sample_images(s, p + 1, 1, &o, &two, &err) == K22_OK);
    int64_t per = (int64_t)16 * 16 * 3;
    mf_check("cpu-ref", "batch of 2 vs alone: image 0", both.pixels, one.pixels, per, 1e-6, 1e-6);
    mf_check("cpu-ref", "batch of 2 vs alone: image 1", both.pixels + per, two.pixels, per, 1e-6, 1e-6);
    /* and another seed gives another image */
    o.seed = 8, o.image_offset = 0;
    k22_sample_result other;
    CHECK(k22_sample_images(s, p, 1, &o, &other, &err) == K22_OK);
    CHECK_MSG(k22_nmse(other.pixels, one.pixels, per) > 1e-4, "seed 8 gave seed 7's image");
    k22_sample_result_free(&both), k22_sample_result_free(&one), k22_sample_result_free(&two);
    k22_sample_result_free(&other);
}

/* Validation during training runs the sampler with the trainer's weights: the loaded UNet's
 * and prior's values in another buffer give the same images bit for bit, changed values change
 * them, NULL goes back, and a table of another model is refused. */
static void test_use_weights(k22_sampler *s, const char *root)
{
    const char *p[1] = {"a small house"};
    k22_sample_opts o;
    k22_sample_opts_default(&o);
    o.seed = 3, o.prior_steps = 2, o.decoder_steps = 2, o.height = o.width = 16;
    int64_t npx = 16 * 16 * 3;
    k22_err err;
    k22_sample_result base, r;
    CHECK(k22_sample_images(s, p, 1, &o, &base, &err) == K22_OK);
    const char *sub[2] = {"decoder/unet", "prior/prior"};
    k22_model_kind kinds[2] = {K22_MODEL_UNET, K22_MODEL_PRIOR};
    for (int k = 0; k < 2; k++) {
        char dir[600];
        snprintf(dir, sizeof dir, "%s/%s", root, sub[k]);
        k22_model_config cfg;
        k22_params ps;
        k22_params_init(&ps);
        CHECK(k22_component_load(dir, &cfg, &ps, &err) == K22_OK);
        /* the sampler runs on the CPU: host memory is backend memory */
        CHECK(k22_sampler_use_weights(s, kinds[k], &ps, ps.data, &err) == K22_OK);
        CHECK(k22_sample_images(s, p, 1, &o, &r, &err) == K22_OK);
        mf_check_same(sub[k], "the loaded weights in the caller's buffer", r.pixels, base.pixels, (size_t)npx);
        k22_sample_result_free(&r);
        for (size_t i = 0; i < ps.total; i++) ps.data[i] *= 1.1f;
        CHECK(k22_sample_images(s, p, 1, &o, &r, &err) == K22_OK);
        CHECK_MSG(k22_nmse(r.pixels, base.pixels, npx) > 1e-6, "%s: weights x 1.1 changed nothing", sub[k]);
        k22_sample_result_free(&r);
        CHECK(k22_sampler_use_weights(s, kinds[k], NULL, NULL, &err) == K22_OK);
        CHECK(k22_sampler_use_weights(s, kinds[1 - k], &ps, ps.data, &err) == K22_ERR_ARG);
        CHECK(k22_sample_images(s, p, 1, &o, &r, &err) == K22_OK);
        mf_check_same(sub[k], "back to the loaded weights", r.pixels, base.pixels, (size_t)npx);
        k22_sample_result_free(&r);
        k22_params_free(&ps);
    }
    k22_sample_result_free(&base);
}

static void test_errors(k22_sampler *s, const char *root)
{
    k22_sample_opts o;
    k22_sample_opts_default(&o);
    const char *p[1] = {"x"};
    k22_sample_result r;
    k22_err err;
    o.prior_steps = 1; /* UnCLIP's step ratio divides by steps - 1 */
    CHECK(k22_sample_images(s, p, 1, &o, &r, &err) == K22_ERR_ARG);
    o.prior_steps = 2, o.height = 0;
    CHECK(k22_sample_images(s, p, 1, &o, &r, &err) == K22_ERR_ARG);
    o.height = 64, o.decoder_steps = 1001;
    CHECK(k22_sample_images(s, p, 1, &o, &r, &err) == K22_ERR_ARG);
    char path[600];
    k22_sampler *bad = NULL;
    snprintf(path, sizeof path, "%s/nowhere", root);
    CHECK(k22_sampler_open(&bad, path, NULL, "cpu", NULL, &err) == K22_ERR_IO && strstr(err.msg, "nowhere"));
    snprintf(path, sizeof path, "%s/prior", root);
    CHECK(k22_sampler_open(&bad, path, path, "cpu", NULL, &err) != K22_OK && strstr(err.msg, "unet"));
    CHECK(bad == NULL);
}

int main(void)
{
    const char *k22 = getenv("K22_BIN");
    if (!k22) {
        fprintf(stderr, "test_sample: K22_BIN is not set (run through ctest)\n");
        return 1;
    }
    k22_st_file *f = NULL;
    k22_err err;
    if (k22_st_open(FIX, &f, &err)) K22_FATAL("%s", err.msg);
    test_timesteps(f);
    test_steps(f);
    char tmp[] = "/tmp/k22-test-sample-XXXXXX", cmd[2048], pd[600], dd[600];
    CHECK(mkdtemp(tmp) != NULL);
    snprintf(cmd, sizeof cmd, "set -e; %s init prior --size tiny --seed 0 --out %s/prior >/dev/null 2>&1; "
             "%s init decoder --size tiny --seed 0 --out %s/decoder >/dev/null 2>&1", k22, tmp, k22, tmp);
    CHECK_MSG(system(cmd) == 0, "%s", cmd);
    snprintf(pd, sizeof pd, "%s/prior", tmp);
    snprintf(dd, sizeof dd, "%s/decoder", tmp);
    k22_sampler *s = NULL;
    k22_status st = k22_sampler_open(&s, pd, dd, "cpu", NULL, &err);
    CHECK_MSG(st == K22_OK, "%s", err.msg);
    if (s) {
        test_case(f, s, "a", 0);
        test_case(f, s, "b", 0);
        test_case(f, s, "c", 0);
        test_errors(s, tmp);
        k22_sampler_free(s);
    }
    s = NULL;
    st = k22_sampler_open(&s, pd, NULL, "cpu", NULL, &err);
    CHECK_MSG(st == K22_OK, "%s", err.msg);
    if (s) {
        test_case(f, s, "b", 1);
        k22_sample_opts o;
        k22_sample_opts_default(&o);
        k22_sample_result r;
        const char *p[1] = {"x"};
        CHECK(k22_sample_images(s, p, 1, &o, &r, &err) == K22_ERR_ARG && strstr(err.msg, "decoder"));
        k22_sampler_free(s);
    }
    s = NULL;
    st = k22_sampler_open(&s, pd, dd, "cpu-ref", NULL, &err);
    CHECK_MSG(st == K22_OK, "%s", err.msg);
    if (s) {
        test_batch_independent(s);
        test_use_weights(s, tmp);
        k22_sampler_free(s);
    }
    mf_canary_max(f, "a.image_embeds", "image_embeds", PIPE_ATOL, PIPE_RTOL);
    k22_st_close(f);
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    if (system(cmd)) fprintf(stderr, "test_sample: could not remove %s\n", tmp);
    return k22_test_finish("test_sample");
}
