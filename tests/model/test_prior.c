/* test_prior.c: PriorTransformer forward and backward (src/model/prior.c) against diffusers on
 * the fixtures of tools/reference/make_model_fixtures.py, on the reference and the fast CPU
 * backend: the tiny model (`k22 init --size tiny --seed 0`, 1 block) and a mid-size config (2
 * blocks, 4 heads), each with the output, every parameter gradient and the three input
 * gradients; the no-grad forward; a canary. */
#include "model_fixture.h"

#include "k22/prior.h"

#include <stdio.h>

/* Outputs: f32 through norms, attention and GELU; backends and torch sum in different orders
 * (blocked GEMMs), a few ulps of the summed magnitudes: 1e-5 of the tensor's max + 1e-5 rel.
 * Gradients: the same bound; they are sums over the batch and tokens of such products, and the
 * per-tensor-max term covers entries that cancel to near 0. */
#define TOL_ABS 1e-5
#define TOL_REL 1e-5
/* time_embedding.linear_1.weight's gradient is dth^T @ time_proj(t): sin/cos of t * freq at
 * t up to 999 rad, where one f32 ulp of the argument is 6e-5. torch's own f32 embedding is off
 * from exact by up to 2.8e-5 at dim 64 (measured against float64), and k22's op rounds
 * differently, so this one tensor carries ~1e-5 of its max (measured 1.2e-5 on mid): 1e-4. */
#define TOL_ABS_TPROJ 1e-4

typedef struct {
    int B, E, EP, L, CE;
    float *x, *t, *proj, *ehs, *ref_out;
    uint8_t *mask;
} prior_inputs;

static void load_inputs(const k22_st_file *f, const char *size, const k22_prior_config *c, int B,
                        prior_inputs *in)
{
    char n[128];
    in->B = B;
    in->E = c->embedding_dim;
    in->EP = c->embedding_proj_dim;
    in->L = c->num_embeddings;
    in->CE = c->clip_embed_dim;
    snprintf(n, sizeof n, "%s.hidden_states", size);
    in->x = mf_get(f, n, (int64_t)B * in->E, NULL);
    snprintf(n, sizeof n, "%s.timestep", size);
    in->t = mf_get(f, n, B, NULL);
    snprintf(n, sizeof n, "%s.proj_embedding", size);
    in->proj = mf_get(f, n, (int64_t)B * in->EP, NULL);
    snprintf(n, sizeof n, "%s.encoder_hidden_states", size);
    in->ehs = mf_get(f, n, (int64_t)B * in->L * in->E, NULL);
    snprintf(n, sizeof n, "%s.predicted_image_embedding", size);
    in->ref_out = mf_get(f, n, (int64_t)B * in->CE, NULL);
    snprintf(n, sizeof n, "%s.attention_mask", size);
    const k22_st_tensor *tm = k22_st_find(f, n);
    K22_REQUIRE(tm && tm->dtype == K22_DTYPE_U8 && tm->nbytes == (size_t)B * in->L);
    in->mask = k22_xmalloc(tm->nbytes);
    memcpy(in->mask, tm->data, tm->nbytes);
}

static void free_inputs(prior_inputs *in)
{
    free(in->x), free(in->t), free(in->proj), free(in->ehs), free(in->ref_out), free(in->mask);
}

/* The key projection's bias adds q.b_k to every logit of a query row, which softmax ignores:
 * its exact gradient is 0 and both sides hold rounding noise (~1e-8 to 1e-7). It is held to
 * TOL_ABS of the largest gradient of the same projection's weight, the scale of the terms
 * that cancel. Other tensors: -1, meaning their own max|ref|. */
static double zero_grad_scale(const k22_st_file *f, const char *size, const char *name)
{
    size_t n = strlen(name), suf = strlen("to_k.bias");
    if (n < suf || strcmp(name + n - suf, "to_k.bias")) return -1.0;
    char w[256];
    snprintf(w, sizeof w, "%s.grad.%.*s.weight", size, (int)(n - 5), name);
    int64_t cnt;
    float *g = mf_get(f, w, -1, &cnt);
    double mx = 0;
    for (int64_t i = 0; i < cnt; i++) mx = fmax(mx, fabs((double)g[i]));
    free(g);
    return mx;
}

/* Every trainable parameter's gradient against the fixture's <size>.grad.<key>; clip_mean/std
 * must have none there and stay 0 here. */
static void check_param_grads(const k22_backend *be, const k22_st_file *f, const char *size,
                              const k22_params *ps, const float *G)
{
    float *g = mf_download(be, G, ps->total);
    int compared = 0, in_file = 0;
    char prefix[64];
    snprintf(prefix, sizeof prefix, "%s.grad.", size);
    for (int i = 0; i < ps->count; i++) {
        const k22_param *p = &ps->items[i];
        char n[256];
        snprintf(n, sizeof n, "%s%s", prefix, p->name);
        if (!p->trainable) {
            CHECK_MSG(k22_st_find(f, n) == NULL, "%s has a gradient in torch", p->name);
            int zero = 1;
            for (size_t k = 0; k < p->numel; k++) zero &= g[p->offset + k] == 0.0f;
            CHECK_MSG(zero, "%s %s got a gradient", be->name, p->name);
            continue;
        }
        float *ref = mf_get(f, n, (int64_t)p->numel, NULL);
        double scale = zero_grad_scale(f, size, p->name);
        double atol = strcmp(p->name, "time_embedding.linear_1.weight") ? TOL_ABS : TOL_ABS_TPROJ;
        snprintf(n, sizeof n, "prior %s grad %s", size, p->name);
        mf_check_scaled(be->name, n, g + p->offset, ref, (int64_t)p->numel, atol, TOL_REL, scale);
        compared++;
        free(ref);
    }
    for (int i = 0; i < k22_st_count(f); i++)
        in_file += !strncmp(k22_st_at(f, i)->name, prefix, strlen(prefix));
    CHECK_MSG(compared == in_file, "compared %d gradients, the fixture has %d", compared, in_file);
    free(g);
}

static void check_dev(const k22_backend *be, const char *size, const char *what, const float *dev,
                      const k22_st_file *f, size_t n)
{
    char name[128], label[128];
    snprintf(name, sizeof name, "%s.%s", size, what);
    snprintf(label, sizeof label, "prior %s %s", size, what);
    float *got = mf_download(be, dev, n), *ref = mf_get(f, name, (int64_t)n, NULL);
    mf_check(be->name, label, got, ref, (int64_t)n, TOL_ABS, TOL_REL);
    free(got), free(ref);
}

/* Forward with caches, backward with a fixed upstream gradient, then the no-grad forward. */
static void prior_case(const k22_backend *be, const k22_st_file *f, const char *size,
                       const char *dir, uint64_t seed, int B)
{
    k22_model_config cfg;
    k22_params ps;
    mf_model(K22_MODEL_PRIOR, dir, seed, &cfg, &ps);
    const k22_prior_config *c = &cfg.u.prior;
    prior_inputs in;
    load_inputs(f, size, c, B, &in);
    size_t nx = (size_t)B * in.E, np = (size_t)B * in.EP, ne = (size_t)B * in.L * in.E,
           no = (size_t)B * in.CE;
    char name[128];
    snprintf(name, sizeof name, "%s.dout", size);
    float *dout_h = mf_get(f, name, (int64_t)no, NULL);
    float *P = mf_upload(be, ps.data, ps.total), *G = be->alloc(be->ctx, ps.total * sizeof(float));
    float *x = mf_upload(be, in.x, nx), *t = mf_upload(be, in.t, (size_t)B);
    float *proj = mf_upload(be, in.proj, np), *ehs = mf_upload(be, in.ehs, ne);
    float *dout = mf_upload(be, dout_h, no);
    float *out = be->alloc(be->ctx, no * sizeof(float)), *out2 = be->alloc(be->ctx, no * sizeof(float));
    float *dx = be->alloc(be->ctx, nx * sizeof(float)), *dproj = be->alloc(be->ctx, np * sizeof(float));
    float *dehs = be->alloc(be->ctx, ne * sizeof(float));
    k22_prior m;
    k22_prior_init(&m, c, &ps, P, G, B);
    k22_arena ar;
    k22_arena_init(&ar, be, k22_prior_arena_floats(&m, B, 1));
    k22_prior_forward(be, &m, &ar, x, t, proj, ehs, in.mask, B, out, 1);
    float *got = mf_download(be, out, no);
    snprintf(name, sizeof name, "prior %s predicted_image_embedding (%d,%d)", size, B, in.CE);
    mf_check(be->name, name, got, in.ref_out, (int64_t)no, TOL_ABS, TOL_REL);
    k22_prior_backward(be, &m, &ar, dout, dx, dproj, dehs);
    printf("%-8s prior %s arena: %zu of %zu floats used at the peak\n", be->name, size, ar.peak, ar.cap);
    k22_arena_reset(&ar, 0);
    check_dev(be, size, "dhidden_states", dx, f, nx);
    check_dev(be, size, "dproj_embedding", dproj, f, np);
    check_dev(be, size, "dencoder_hidden_states", dehs, f, ne);
    check_param_grads(be, f, size, &ps, G);
    /* No-grad forward: the same numbers, and the arena back at its mark. */
    k22_prior_forward(be, &m, &ar, x, t, proj, ehs, in.mask, B, out2, 0);
    CHECK(ar.used == 0);
    float *got2 = mf_download(be, out2, no);
    CHECK_MSG(!memcmp(got, got2, no * sizeof(float)),
              "%s: no-grad forward differs from the training forward", be->name);
    free(got), free(got2), free(dout_h);
    float *bufs[] = {P, G, x, t, proj, ehs, dout, out, out2, dx, dproj, dehs};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) be->free(be->ctx, bufs[i]);
    k22_arena_free(&ar);
    k22_prior_free(&m);
    free_inputs(&in);
    k22_params_free(&ps);
}

int main(void)
{
    k22_st_file *f = mf_open("prior.safetensors");
    for (int ref = 1; ref >= 0; ref--) {
        k22_backend *be = k22_backend_cpu_new(ref);
        prior_case(be, f, "tiny", "tiny", 0, 3);
        prior_case(be, f, "mid", MF_DIR "/mid/prior", 7, 2);
        k22_backend_free(be);
    }
    mf_canary_max(f, "tiny.grad.transformer_blocks.0.attn1.to_q.weight", "a gradient", TOL_ABS, TOL_REL);
    k22_st_close(f);
    return k22_test_finish("test_prior");
}
