/* test_clip.c: the CLIP text and vision encoders (src/model/clip_*.c) against transformers on
 * the fixtures of tools/reference/make_model_fixtures.py, on the reference and the fast CPU
 * backend, tiny (`k22 init --size tiny --seed 0`) and mid-size configs; plus a canary.
 *
 * Also the fixture generator's helper: `test_clip --write-weights CONFIG_DIR SEED OUT_DIR` saves
 * the deterministic weights of CONFIG_DIR/config.json as a component folder. */
#include "model_fixture.h"

#include "k22/clip.h"

#include <stdio.h>

/* Forward outputs pass through ~5 pre-norm layers in f32; summation order differs between the
 * backends and torch (blocked GEMMs), which moves results by a few ulps of the magnitudes
 * summed. Held to 1e-5 of the tensor's largest value plus 1e-5 relative. */
#define TOL_ABS 1e-5
#define TOL_REL 1e-5

static void text_case(const k22_backend *be, const k22_st_file *f, const char *size,
                      const char *dir, uint64_t seed, int B)
{
    k22_model_config cfg;
    k22_params ps;
    mf_model(K22_MODEL_CLIP_TEXT, dir, seed, &cfg, &ps);
    const k22_clip_text_config *c = &cfg.u.clip_text;
    int T = 77, C = c->hidden_size, P = c->projection_dim;
    char name[128];
    snprintf(name, sizeof name, "%s.input_ids", size);
    const k22_st_tensor *ti = k22_st_find(f, name);
    K22_REQUIRE(ti && ti->dtype == K22_DTYPE_I32 && ti->nbytes == (size_t)B * T * 4);
    int32_t *ids = k22_xmalloc(ti->nbytes);
    memcpy(ids, ti->data, ti->nbytes);
    float *P_dev = mf_upload(be, ps.data, ps.total);
    k22_clip_text m;
    k22_clip_text_init(&m, c, &ps, P_dev);
    k22_arena ar;
    k22_arena_init(&ar, be, k22_clip_text_arena_floats(&m, B, T));
    float *hid = be->alloc(be->ctx, (size_t)B * T * C * sizeof(float));
    float *emb = be->alloc(be->ctx, (size_t)B * P * sizeof(float));
    k22_err err;
    CHECK(k22_clip_text_forward(be, &m, &ar, ids, B, T, hid, emb, &err) == K22_OK);
    CHECK(ar.used == 0);
    float *got_h = mf_download(be, hid, (size_t)B * T * C), *got_e = mf_download(be, emb, (size_t)B * P);
    snprintf(name, sizeof name, "%s.last_hidden_state", size);
    float *ref_h = mf_get(f, name, (int64_t)B * T * C, NULL);
    snprintf(name, sizeof name, "%s.text_embeds", size);
    float *ref_e = mf_get(f, name, (int64_t)B * P, NULL);
    snprintf(name, sizeof name, "clip_text %s last_hidden_state (%d,%d,%d)", size, B, T, C);
    mf_check(be->name, name, got_h, ref_h, (int64_t)B * T * C, TOL_ABS, TOL_REL);
    snprintf(name, sizeof name, "clip_text %s text_embeds (%d,%d)", size, B, P);
    mf_check(be->name, name, got_e, ref_e, (int64_t)B * P, TOL_ABS, TOL_REL);
    /* An id outside the vocabulary is refused, not read out of bounds. */
    ids[5] = c->vocab_size;
    CHECK(k22_clip_text_forward(be, &m, &ar, ids, B, T, hid, emb, &err) == K22_ERR_ARG);
    free(got_h), free(got_e), free(ref_h), free(ref_e), free(ids);
    be->free(be->ctx, hid), be->free(be->ctx, emb), be->free(be->ctx, P_dev);
    k22_arena_free(&ar);
    k22_clip_text_free(&m);
    k22_params_free(&ps);
}

static void vision_case(const k22_backend *be, const k22_st_file *f, const char *size,
                        const char *dir, uint64_t seed, int B)
{
    k22_model_config cfg;
    k22_params ps;
    mf_model(K22_MODEL_CLIP_VISION, dir, seed, &cfg, &ps);
    const k22_clip_vision_config *c = &cfg.u.clip_vision;
    int S = c->image_size, P = c->projection_dim;
    size_t npx = (size_t)B * c->num_channels * S * S;
    float *px = mf_get(f, "pixel_values", (int64_t)npx, NULL);
    float *px_dev = mf_upload(be, px, npx), *P_dev = mf_upload(be, ps.data, ps.total);
    k22_clip_vision m;
    k22_clip_vision_init(&m, c, &ps, P_dev);
    k22_arena ar;
    k22_arena_init(&ar, be, k22_clip_vision_arena_floats(&m, B));
    float *emb = be->alloc(be->ctx, (size_t)B * P * sizeof(float));
    k22_clip_vision_forward(be, &m, &ar, px_dev, B, emb);
    CHECK(ar.used == 0);
    float *got = mf_download(be, emb, (size_t)B * P);
    char name[128];
    snprintf(name, sizeof name, "%s.image_embeds", size);
    float *ref = mf_get(f, name, (int64_t)B * P, NULL);
    snprintf(name, sizeof name, "clip_vision %s image_embeds (%d,%d)", size, B, P);
    mf_check(be->name, name, got, ref, (int64_t)B * P, TOL_ABS, TOL_REL);
    free(got), free(ref), free(px);
    be->free(be->ctx, emb), be->free(be->ctx, px_dev), be->free(be->ctx, P_dev);
    k22_arena_free(&ar);
    k22_clip_vision_free(&m);
    k22_params_free(&ps);
}

/* The comparison must notice one reference value moved by 1e-3 relative. */
static void canary(const k22_st_file *f)
{
    int64_t n;
    float *ref = mf_get(f, "tiny.text_embeds", -1, &n);
    float *got = k22_xmalloc((size_t)n * sizeof(float));
    memcpy(got, ref, (size_t)n * sizeof(float));
    mf_stats s = mf_stats_of(got, ref, n, TOL_ABS, TOL_REL);
    CHECK_MSG(s.bad == 0, "canary: identical tensors compared unequal");
    got[n / 2] += 1e-3f * (fabsf(ref[n / 2]) + 1e-3f);
    s = mf_stats_of(got, ref, n, TOL_ABS, TOL_REL);
    CHECK_MSG(s.bad == 1, "canary: a value moved by 1e-3 went unnoticed (%lld bad)", (long long)s.bad);
    free(ref), free(got);
}

int main(int argc, char **argv)
{
    if (argc == 5 && !strcmp(argv[1], "--write-weights"))
        return mf_write_weights("test_clip", argv[2], argv[3], argv[4]);
    k22_st_file *ft = mf_open("clip_text.safetensors"), *fv = mf_open("clip_vision.safetensors");
    for (int ref = 1; ref >= 0; ref--) {
        k22_backend *be = k22_backend_cpu_new(ref);
        text_case(be, ft, "tiny", "tiny", 0, 3);
        text_case(be, ft, "mid", MF_DIR "/mid/text_encoder", 7, 2);
        vision_case(be, fv, "tiny", "tiny", 0, 2);
        vision_case(be, fv, "mid", MF_DIR "/mid/image_encoder", 7, 2);
        k22_backend_free(be);
    }
    canary(ft);
    k22_st_close(ft);
    k22_st_close(fv);
    return k22_test_finish("test_clip");
}
