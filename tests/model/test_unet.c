/* test_unet.c: the Kandinsky 2.2 decoder UNet (src/model/unet.c, unet_attn.c, src/nn/resnet.c)
 * against diffusers on the fixtures of tools/reference/make_unet_fixtures.py, on the reference
 * and the fast CPU backend: the tiny model (`k22 init decoder --size tiny --seed 0`) at batch 2
 * 16x16 and batch 1 8x16, and a mid-size config (3 blocks, 2 layers each) at 16x16: the output,
 * dx_t and every parameter gradient (sampled, plus whole-tensor sums); the no-grad forward; a
 * canary.
 *
 * Also the fixture generator's helper: `test_unet --write-weights CONFIG_DIR SEED OUT_DIR` saves
 * the deterministic weights of CONFIG_DIR/config.json as a component folder. */
#include "model_fixture.h"

#include "k22/unet.h"

#include <stdio.h>

/* under MF_DIR (tests/fixtures/models) */
#define UNET_FIXTURE "../unet/unet.safetensors"

/* Outputs and gradients: f32 through ~10-20 layers of group norm, 3x3 convs, attention and
 * SiLU; torch and the backends sum in different orders (im2col GEMM blocks, double sums in the
 * reference), which moves each result by a few ulps of the magnitudes summed. 3e-5 of the
 * tensor's max plus 3e-5 relative: measured worst 8.9e-6 of the max (fast backend, tiny); the
 * errors are printed per tensor. */
#define TOL_ABS 3e-5
#define TOL_REL 3e-5
/* Whole-tensor sums (sum g, sum g^2, sum g*w): each carries the f32 noise of n terms; held to
 * TOL_SUM relative to the sum of the magnitudes of its terms (measured worst 4.5e-6). These
 * catch a tensor that is wrong as a whole (scaled, shifted, permuted), not one element. */
#define TOL_SUM 3e-5

/* A conv bias that feeds a group norm with one channel per group (tiny: 32 groups over 32
 * channels) is removed by the norm's mean: its exact gradient is 0 and both sides hold rounding
 * noise (~1e-6 of the gradients around it). Such a bias (torch's gradient below 1e-3 of the
 * same conv's weight gradient) is held to TOL_ABS of that weight gradient's sampled max, the
 * scale of the terms that cancel. Others: -1, meaning their own max|ref|. */
static double zero_grad_scale(const k22_st_file *f, const char *cs, const char *name,
                              const float *ref, int64_t n)
{
    double mx = 0;
    for (int64_t i = 0; i < n; i++) mx = fmax(mx, fabs((double)ref[i]));
    size_t len = strlen(name), suf = strlen(".bias");
    if (len < suf || strcmp(name + len - suf, ".bias")) return -1.0;
    char w[256];
    snprintf(w, sizeof w, "%s.gs.%.*s.weight", cs, (int)(len - suf), name);
    if (!k22_st_find(f, w)) return -1.0;
    int64_t cnt;
    float *g = mf_get(f, w, -1, &cnt);
    double wmx = 0;
    for (int64_t i = 0; i < cnt; i++) wmx = fmax(wmx, fabs((double)g[i]));
    free(g);
    return mx < 1e-3 * wmx ? wmx : -1.0;
}

/* The sample positions of make_unet_fixtures.py: all of a small tensor, else every stride-th. */
static int64_t sample_stride(int64_t n)
{
    return n <= 2048 ? 1 : (n + 1023) / 1024;
}

/* Checks one gradient against <cs>.gs.<key> and <cs>.gsum.<key>; returns 1 when it passed. */
/* report 0: count nothing, print nothing (the canary). */
static int check_one_grad(const char *be_name, const k22_st_file *f, const char *cs,
                          const k22_param *p, const float *g, double *worst, int *zeros,
                          int report)
{
    char n[256], label[256];
    snprintf(n, sizeof n, "%s.gs.%s", cs, p->name);
    int64_t cnt, st = sample_stride((int64_t)p->numel);
    float *ref = mf_get(f, n, -1, &cnt);
    K22_REQUIRE(cnt == ((int64_t)p->numel + st - 1) / st);
    float *got = k22_xmalloc((size_t)cnt * sizeof(float));
    for (int64_t i = 0; i < cnt; i++) got[i] = g[i * st];
    double scale = zero_grad_scale(f, cs, p->name, ref, cnt);
    mf_stats s = mf_stats_scaled(got, ref, cnt, TOL_ABS, TOL_REL, scale);
    snprintf(label, sizeof label, "unet %s grad %s", cs, p->name);
    if (report)
        CHECK_MSG(s.bad == 0, "%s %s: %lld of %lld sampled values outside tolerance (max abs %.3g, max|ref| %.3g)",
              be_name, label, (long long)s.bad, (long long)cnt, s.max_abs, s.ref_max);
    if (scale < 0) worst[0] = fmax(worst[0], s.max_abs / fmax(s.ref_max, 1e-30));
    else zeros[0]++;
    /* whole-tensor sums, in double as the generator took them */
    double sum[3] = {0}, mag[3] = {0};
    for (size_t i = 0; i < p->numel; i++) {
        double v = g[i], w = (double)((int64_t)(i % 7) - 3);
        sum[0] += v, sum[1] += v * v, sum[2] += v * w;
        mag[0] += fabs(v), mag[1] += v * v, mag[2] += fabs(v * w);
    }
    snprintf(n, sizeof n, "%s.gsum.%s", cs, p->name);
    float *rs = mf_get(f, n, 3, NULL);
    int ok = s.bad == 0;
    for (int k = 0; k < 3; k++) {
        double d = fabs(sum[k] - rs[k]), tol = TOL_SUM * mag[k] + 1e-30;
        if (scale >= 0) { /* a zero gradient: every term is noise of at most TOL_ABS * scale */
            double e = 2 * TOL_ABS * scale;
            tol = (double)p->numel * (k == 1 ? e * e : k == 2 ? 3 * e : e);
        }
        if (report)
            CHECK_MSG(d <= tol, "%s %s: sum %d is %.9g, torch %.9g (tol %.3g)", be_name, label, k,
                  sum[k], (double)rs[k], tol);
        ok &= d <= tol;
        if (scale < 0) worst[1] = fmax(worst[1], d / tol * TOL_SUM);
    }
    free(ref), free(got), free(rs);
    return ok;
}

static void check_param_grads(const k22_backend *be, const k22_st_file *f, const char *cs,
                              const k22_params *ps, const float *G)
{
    float *g = mf_download(be, G, ps->total);
    int compared = 0, passed = 0, in_file = 0, zeros = 0;
    double worst[2] = {0, 0};
    for (int i = 0; i < ps->count; i++) {
        const k22_param *p = &ps->items[i];
        passed += check_one_grad(be->name, f, cs, p, g + p->offset, worst, &zeros, 1);
        compared++;
    }
    char prefix[64];
    snprintf(prefix, sizeof prefix, "%s.gs.", cs);
    for (int i = 0; i < k22_st_count(f); i++)
        in_file += !strncmp(k22_st_at(f, i)->name, prefix, strlen(prefix));
    CHECK_MSG(compared == in_file, "compared %d gradients, the fixture has %d", compared, in_file);
    /* canary: one whole tensor scaled by 1 + 1e-3 must fail its check */
    const k22_param *q = k22_params_find(ps, "mid_block.resnets.0.conv1.weight");
    for (size_t i = 0; i < q->numel; i++) g[q->offset + i] *= 1.001f;
    double w2[2];
    int z2 = 0;
    CHECK_MSG(!check_one_grad(be->name, f, cs, q, g + q->offset, w2, &z2, 0),
              "canary: %s scaled by 1.001 went unnoticed", q->name);
    printf("%-8s unet %-9s %d parameter gradients, %d passed (%d exact zeros); worst sampled max_abs/max|ref| %.2e, worst sum err %.2e of its magnitude\n",
           be->name, cs, compared, passed, zeros, worst[0], worst[1]);
    free(g);
}

static void check_dev(const k22_backend *be, const k22_st_file *f, const char *cs, const char *what,
                      const float *dev, size_t n)
{
    char name[128], label[128];
    snprintf(name, sizeof name, "%s.%s", cs, what);
    snprintf(label, sizeof label, "unet %s %s", cs, what);
    float *got = mf_download(be, dev, n), *ref = mf_get(f, name, (int64_t)n, NULL);
    mf_check(be->name, label, got, ref, (int64_t)n, TOL_ABS, TOL_REL);
    free(got), free(ref);
}

/* Forward with caches, backward with the fixture's upstream gradient, then the no-grad forward. */
static void unet_case(const k22_backend *be, const k22_st_file *f, const char *cs,
                      const char *dir, uint64_t seed, int B, int H, int W)
{
    k22_model_config cfg;
    k22_params ps;
    mf_model(K22_MODEL_UNET, dir, seed, &cfg, &ps);
    const k22_unet_config *c = &cfg.u.unet;
    size_t nx = (size_t)B * c->in_channels * H * W, no = (size_t)B * c->out_channels * H * W;
    size_t ne = (size_t)B * c->encoder_hid_dim;
    char n[128];
    snprintf(n, sizeof n, "%s.sample", cs);
    float *x_h = mf_get(f, n, (int64_t)nx, NULL);
    snprintf(n, sizeof n, "%s.timestep", cs);
    float *t_h = mf_get(f, n, B, NULL);
    snprintf(n, sizeof n, "%s.image_embeds", cs);
    float *img_h = mf_get(f, n, (int64_t)ne, NULL);
    snprintf(n, sizeof n, "%s.dout", cs);
    float *dout_h = mf_get(f, n, (int64_t)no, NULL);
    float *P = mf_upload(be, ps.data, ps.total), *G = be->alloc(be->ctx, ps.total * sizeof(float));
    float *x = mf_upload(be, x_h, nx), *t = mf_upload(be, t_h, (size_t)B);
    float *img = mf_upload(be, img_h, ne), *dout = mf_upload(be, dout_h, no);
    float *out = be->alloc(be->ctx, no * sizeof(float)), *out2 = be->alloc(be->ctx, no * sizeof(float));
    float *dx = be->alloc(be->ctx, nx * sizeof(float));
    k22_unet m;
    k22_unet_init(&m, c, &ps, P, G);
    k22_arena ar;
    k22_arena_init(&ar, be, k22_unet_arena_floats(&m, B, H, W, 1));
    double t0 = mf_now_s();
    k22_unet_forward(be, &m, &ar, x, t, img, B, H, W, out, 1);
    double t1 = mf_now_s();
    k22_unet_backward(be, &m, &ar, dout, dx);
    double t2 = mf_now_s();
    printf("%-8s unet %s (%d,%d,%d,%d): forward %.3f s, backward %.3f s; arena %zu of %zu floats at the peak\n",
           be->name, cs, B, c->in_channels, H, W, t1 - t0, t2 - t1, ar.peak, ar.cap);
    k22_arena_reset(&ar, 0);
    check_dev(be, f, cs, "out", out, no);
    check_dev(be, f, cs, "dsample", dx, nx);
    check_param_grads(be, f, cs, &ps, G);
    /* No-grad forward in an arena of the no-grad size: the same numbers, the arena back at 0. */
    k22_arena ar0;
    k22_arena_init(&ar0, be, k22_unet_arena_floats(&m, B, H, W, 0));
    k22_unet_forward(be, &m, &ar0, x, t, img, B, H, W, out2, 0);
    CHECK(ar0.used == 0);
    printf("%-8s unet %s no-grad forward: arena %zu of %zu floats at the peak\n", be->name, cs,
           ar0.peak, ar0.cap);
    k22_arena_free(&ar0);
    float *o1 = mf_download(be, out, no), *o2 = mf_download(be, out2, no);
    CHECK_MSG(!memcmp(o1, o2, no * sizeof(float)), "%s: no-grad forward differs from the training forward", be->name);
    free(o1), free(o2), free(x_h), free(t_h), free(img_h), free(dout_h);
    float *bufs[] = {P, G, x, t, img, dout, out, out2, dx};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) be->free(be->ctx, bufs[i]);
    k22_arena_free(&ar);
    k22_unet_free(&m);
    k22_params_free(&ps);
}

int main(int argc, char **argv)
{
    if (argc == 5 && !strcmp(argv[1], "--write-weights"))
        return mf_write_weights("test_unet", argv[2], argv[3], argv[4]);
    k22_st_file *f = mf_open(UNET_FIXTURE);
    for (int ref = 1; ref >= 0; ref--) {
        k22_backend *be = k22_backend_cpu_new(ref);
        unet_case(be, f, "tiny", "tiny", 0, 2, 16, 16);
        unet_case(be, f, "tiny_wide", "tiny", 0, 1, 8, 16);
        unet_case(be, f, "mid", "tests/fixtures/unet/mid", 11, 1, 16, 16);
        k22_backend_free(be);
    }
    mf_canary_max(f, "tiny.gs.down_blocks.1.attentions.0.to_q.weight", "a gradient", TOL_ABS, TOL_REL);
    k22_st_close(f);
    return k22_test_finish("test_unet");
}
