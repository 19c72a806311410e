/* test_ops_accumulate.c: the gradient conventions of ops.h on both CPU backends. Backward ops
 * add into their gradients (twice gives 2x; prior contents are kept), NULL gradients are
 * skipped, MSE over a batch equals the mean over micro-batches (the trainer's loss scaling),
 * AdamW equals a hand-written double-precision AdamW, and k22_clip_grad_norm follows torch. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "harness/harness.h"
#include "k22/ops.h"

enum { NBUF = 4096 };
static float X[4][NBUF], DY[NBUF]; /* shared random inputs; every op below reads a prefix */
static float MEAN[64], RSTD[64], OUT[NBUF], LSE[64]; /* saved by forwards */

typedef struct {
    const char *name;
    int ng;
    int64_t n[3];
    void (*bwd)(k22_backend *be, float **g);
} acc_op;

static const k22_conv2d_desc CONV = {2, 3, 5, 6, 4, 3, 3, 2, 1, 0, 1, 1, 1};
static const k22_attn_desc ATTN = {2, 2, 5, 6, 4, 3, 0.5f, NULL, 0, 1, NULL};
static const int64_t PSHAPE[4] = {2, 3, 4, 5};
static const int PERM[4] = {2, 0, 3, 1};

static void b_linear(k22_backend *be, float **g)
{
    be->linear_bwd(be->ctx, g[0], g[1], g[2], DY, X[0], X[1], 7, 9, 5);
}
static void b_conv(k22_backend *be, float **g)
{
    be->conv2d_bwd(be->ctx, g[0], g[1], g[2], DY, X[0], X[1], &CONV);
}
static void b_gn(k22_backend *be, float **g)
{
    be->group_norm_bwd(be->ctx, g[0], g[1], g[2], DY, X[0], MEAN, RSTD, X[1], 2, 6, 10, 3);
}
static void b_ln(k22_backend *be, float **g)
{
    be->layer_norm_bwd(be->ctx, g[0], g[1], g[2], DY, X[0], MEAN, RSTD, X[1], 6, 11);
}
static void b_act(k22_backend *be, float **g)
{
    be->act_bwd(be->ctx, K22_ACT_GELU, g[0], DY, X[0], 100);
}
static void b_softmax(k22_backend *be, float **g)
{
    be->softmax_bwd(be->ctx, g[0], DY, X[3], 4, 25);
}
static void b_attn(k22_backend *be, float **g)
{
    be->attention_bwd(be->ctx, g[0], g[1], g[2], DY, X[0], X[1], X[2], OUT, LSE, &ATTN);
}
static void b_add(k22_backend *be, float **g) { be->add_bwd(be->ctx, g[0], g[1], DY, 100); }
static void b_mul(k22_backend *be, float **g)
{
    be->mul_bwd(be->ctx, g[0], g[1], DY, X[0], X[1], 100);
}
static void b_scale(k22_backend *be, float **g) { be->scale_bwd(be->ctx, g[0], DY, 0.3f, 100); }
static void b_concat(k22_backend *be, float **g)
{
    be->concat_bwd(be->ctx, g[0], g[1], DY, 3, 2, 4, 5);
}
static void b_permute(k22_backend *be, float **g)
{
    be->permute_bwd(be->ctx, g[0], DY, 4, PSHAPE, PERM);
}
static void b_up(k22_backend *be, float **g) { be->upsample2x_bwd(be->ctx, g[0], DY, 2, 3, 4, 5); }
static void b_temb(k22_backend *be, float **g)
{
    be->timestep_embed_bwd(be->ctx, g[0], DY, X[0], 5, 16, 1, 1.0f, 1.0f, 10000.0f);
}
static void b_mse(k22_backend *be, float **g)
{
    be->mse_bwd(be->ctx, g[0], 0.7f, X[0], X[1], X[2], 4, 25);
}

static const acc_op OPS[] = {
    {"linear", 3, {7 * 9, 5 * 9, 5}, b_linear},
    {"conv2d", 3, {2 * 3 * 5 * 6, 4 * 3 * 3 * 3, 4}, b_conv},
    {"group_norm", 3, {120, 6, 6}, b_gn},
    {"layer_norm", 3, {66, 11, 11}, b_ln},
    {"gelu", 1, {100}, b_act},
    {"softmax", 1, {100}, b_softmax},
    {"attention", 3, {2 * 2 * 5 * 4, 2 * 2 * 6 * 4, 2 * 2 * 6 * 3}, b_attn},
    {"add", 2, {100, 100}, b_add},
    {"mul", 2, {100, 100}, b_mul},
    {"scale", 1, {100}, b_scale},
    {"concat", 2, {30, 60}, b_concat},
    {"permute", 1, {120}, b_permute},
    {"upsample2x", 1, {120}, b_up},
    {"timestep_embed", 1, {5}, b_temb},
    {"mse", 1, {100}, b_mse},
};

/* Inputs some backward ops need: positive mse weights in X[2], softmax probabilities in X[3]. */
static void prepare_inputs(k22_backend *be)
{
    for (int i = 0; i < 100; i++) X[2][i] = fabsf(X[2][i]) + 0.1f;
    be->softmax_fwd(be->ctx, X[3], X[2], 4, 25);
}

static void test_accumulate(k22_backend *be)
{
    float *g1[3], *g2[3], *g3[3], *prior[3];
    for (size_t o = 0; o < sizeof OPS / sizeof OPS[0]; o++) {
        const acc_op *op = &OPS[o];
        /* the norms read mean/rstd of X[0] with their own shapes */
        if (op->bwd == b_gn)
            be->group_norm_fwd(be->ctx, OUT, MEAN, RSTD, X[0], X[1], NULL, 2, 6, 10, 3, 1e-5f);
        if (op->bwd == b_ln)
            be->layer_norm_fwd(be->ctx, OUT, MEAN, RSTD, X[0], X[1], NULL, 6, 11, 1e-5f);
        if (op->bwd == b_attn) be->attention_fwd(be->ctx, OUT, LSE, X[0], X[1], X[2], &ATTN);
        for (int k = 0; k < op->ng; k++) {
            g1[k] = calloc((size_t)op->n[k], sizeof(float));
            g2[k] = calloc((size_t)op->n[k], sizeof(float));
            g3[k] = calloc((size_t)op->n[k], sizeof(float));
            prior[k] = malloc(sizeof(float) * (size_t)op->n[k]);
            k22_test_fill(prior[k], op->n[k], 900 + k, -1, 1);
            memcpy(g3[k], prior[k], sizeof(float) * (size_t)op->n[k]);
        }
        op->bwd(be, g1);
        op->bwd(be, g2);
        op->bwd(be, g2);
        op->bwd(be, g3);
        char nm[96];
        for (int k = 0; k < op->ng; k++) {
            float *want = malloc(sizeof(float) * (size_t)op->n[k]);
            for (int64_t i = 0; i < op->n[k]; i++) want[i] = 2.0f * g1[k][i];
            /* 2x: exact but for GEMM K-blocking adding partial products into C one at a time */
            snprintf(nm, sizeof nm, "%s %s: backward twice = 2x (grad %d)", be->name, op->name, k);
            k22_check_close(nm, g2[k], want, op->n[k], 1e-6, 1e-6);
            for (int64_t i = 0; i < op->n[k]; i++) want[i] = prior[k][i] + g1[k][i];
            snprintf(nm, sizeof nm, "%s %s: adds to prior contents (grad %d)", be->name, op->name,
                     k);
            k22_check_close(nm, g3[k], want, op->n[k], 1e-6, 1e-6);
            free(want);
        }
        /* NULL gradients: each one alone given, the others NULL, must equal the full call */
        for (int k = 0; op->ng > 1 && k < op->ng; k++) {
            float *only[3] = {NULL, NULL, NULL};
            only[k] = calloc((size_t)op->n[k], sizeof(float));
            op->bwd(be, only);
            snprintf(nm, sizeof nm, "%s %s: only grad %d, others NULL", be->name, op->name, k);
            k22_check_close(nm, only[k], g1[k], op->n[k], 0, 0);
            free(only[k]);
        }
        for (int k = 0; k < op->ng; k++) {
            free(g1[k]);
            free(g2[k]);
            free(g3[k]);
            free(prior[k]);
        }
    }
}

/* The trainer divides the loss by the number of micro-batches: MSE over a batch of 4 equals
 * the mean of the losses of two micro-batches of 2, and so do the accumulated gradients. */
static void test_mse_microbatch(k22_backend *be)
{
    enum { N = 50 };
    float *pred = X[0], *tgt = X[1], w[4] = {0.5f, 1.5f, 2.0f, 0.25f};
    for (int hw = 0; hw < 2; hw++) {
        const float *ww = hw ? w : NULL;
        float lfull, l0, l1, gfull[4 * N] = {0}, gmicro[4 * N] = {0};
        be->mse_fwd(be->ctx, &lfull, NULL, pred, tgt, ww, 4, N);
        be->mse_bwd(be->ctx, gfull, 1.0f, pred, tgt, ww, 4, N);
        be->mse_fwd(be->ctx, &l0, NULL, pred, tgt, ww, 2, N);
        be->mse_fwd(be->ctx, &l1, NULL, pred + 2 * N, tgt + 2 * N, ww ? ww + 2 : NULL, 2, N);
        be->mse_bwd(be->ctx, gmicro, 0.5f, pred, tgt, ww, 2, N);
        be->mse_bwd(be->ctx, gmicro + 2 * N, 0.5f, pred + 2 * N, tgt + 2 * N, ww ? ww + 2 : NULL, 2,
                    N);
        float lmean = 0.5f * (l0 + l1);
        char nm[96];
        snprintf(nm, sizeof nm, "%s mse%s: batch 4 loss = mean of 2 micro-batches", be->name,
                 hw ? " weighted" : "");
        k22_check_close(nm, &lmean, &lfull, 1, 0, 1e-6); /* float rounding of 3 losses */
        snprintf(nm, sizeof nm, "%s mse%s: batch 4 grad = accumulated micro-batch grads", be->name,
                 hw ? " weighted" : "");
        k22_check_close(nm, gmicro, gfull, 4 * N, 1e-9, 1e-6);
    }
}

static double adamw_maxabs(const float *x, int n)
{
    double m = 0;
    for (int i = 0; i < n; i++) m = fmax(m, fabs(x[i]));
    return m;
}

/* torch.optim.AdamW written out in double, three steps. */
static void test_adamw(k22_backend *be)
{
    enum { n = 257 };
    k22_adamw_hparams h = {2e-3, 0.9, 0.99, 1e-8, 0.05, 0, 1.0f};
    float p[n], m[n] = {0}, v[n] = {0}, g[3][n];
    double pd[n], md[n] = {0}, vd[n] = {0};
    k22_test_fill(p, n, 501, -1, 1);
    for (int s = 0; s < 3; s++) k22_test_fill(g[s], n, 502 + s, -0.5f, 0.5f);
    for (int i = 0; i < n; i++) pd[i] = p[i];
    for (int s = 1; s <= 3; s++) {
        h.step = s;
        be->adamw_step(be->ctx, p, g[s - 1], m, v, n, &h);
        double lr = h.lr, b1 = h.beta1, b2 = h.beta2;
        double bc1 = 1 - pow(b1, s), bc2 = 1 - pow(b2, s);
        for (int i = 0; i < n; i++) {
            double gi = g[s - 1][i];
            pd[i] *= 1 - lr * h.weight_decay;
            md[i] = b1 * md[i] + (1 - b1) * gi;
            vd[i] = b2 * vd[i] + (1 - b2) * gi * gi;
            pd[i] -= lr / bc1 * md[i] / (sqrt(vd[i]) / sqrt(bc2) + h.eps);
        }
    }
    float pf[n], mf[n], vf[n];
    for (int i = 0; i < n; i++) {
        pf[i] = (float)pd[i];
        mf[i] = (float)md[i];
        vf[i] = (float)vd[i];
    }
    char nm[64];
    /* float math per element in torch's order vs double: a few ulp of the largest term, so
     * rel 1e-6 of each value plus 1e-6 of the largest value (m cancels where g changes sign) */
    snprintf(nm, sizeof nm, "%s adamw 3 steps: p", be->name);
    k22_check_close(nm, p, pf, n, 1e-6 * adamw_maxabs(pf, n), 1e-6);
    snprintf(nm, sizeof nm, "%s adamw 3 steps: m", be->name);
    k22_check_close(nm, m, mf, n, 1e-6 * adamw_maxabs(mf, n), 1e-6);
    snprintf(nm, sizeof nm, "%s adamw 3 steps: v", be->name);
    k22_check_close(nm, v, vf, n, 1e-6 * adamw_maxabs(vf, n), 1e-6);
}

/* Bit-exactness against torch.optim.AdamW (torch 2.15.0 CPU, lr 1e-3, betas (0.9, 0.999),
 * eps 1e-8, weight_decay 1e-2, 3 steps): every 4th of 64 values, written by the pinned
 * reference venv. Exact because the kernel follows torch's operation order and FMAs. */
static void test_adamw_torch(k22_backend *be)
{
    static const float torch_p[16] = {
        -0x1.e14c1ep+0, -0x1.a5629ap+0, -0x1.68d00ep+0, -0x1.2d7056p+0,
        -0x1.e292aap-1, -0x1.68748ep-1, -0x1.e18456p-2, -0x1.e21e2p-3,
        -0x1.c10e3p-10, 0x1.de3da8p-3,  0x1.e331dep-2,  0x1.69542ep-1,
        0x1.e17fcap-1,  0x1.2c9acap+0,  0x1.69ed88p+0,  0x1.a5ccdep+0};
    static const float torch_m[16] = {
        -0x1.57d622p-3, -0x1.1bfd48p-6, -0x1.8c66dap-4, 0x1.b88c2cp-5,
        -0x1.a39cc8p-5, -0x1.b900bp-4,  0x1.5f5884p-5,  -0x1.2b769p-5,
        0x1.d2f1aap-4,  0x1.26e96ap-7,  -0x1.84aa36p-5, 0x1.a657d8p-4,
        0x1.83c12ep-6,  0x1.64ceap-3,   -0x1.1a2b3ep-3, 0x1.a2b3c8p-7};
    static const float torch_v[16] = {
        0x1.316fd2p-9,  0x1.2fd336p-10, 0x1.9761a8p-10, 0x1.46a6a2p-10,
        0x1.4839b8p-9,  0x1.addbb2p-10, 0x1.3ccbd8p-10, 0x1.3ce4aep-10,
        0x1.ae263ap-10, 0x1.481898p-9,  0x1.466ffap-10, 0x1.975cb4p-10,
        0x1.2fffeep-10, 0x1.319f06p-9,  0x1.feaaa4p-10, 0x1.2c9c7ep-10};
    float p[64], g[3][64], m[64] = {0}, v[64] = {0}, got[3][16];
    for (int i = 0; i < 64; i++) {
        p[i] = (float)(i - 32) / 17.0f;
        for (int s = 0; s < 3; s++) g[s][i] = (float)((i * 7 + s * 13) % 23 - 11) / 9.0f;
    }
    k22_adamw_hparams h = {1e-3, 0.9, 0.999, 1e-8, 1e-2, 0, 1.0f};
    for (int s = 1; s <= 3; s++) {
        h.step = s;
        be->adamw_step(be->ctx, p, g[s - 1], m, v, 64, &h);
    }
    for (int i = 0; i < 16; i++) {
        got[0][i] = p[4 * i];
        got[1][i] = m[4 * i];
        got[2][i] = v[4 * i];
    }
    char nm[64];
    snprintf(nm, sizeof nm, "%s adamw = torch bit for bit: p", be->name);
    k22_check_close(nm, got[0], torch_p, 16, 0, 0);
    snprintf(nm, sizeof nm, "%s adamw = torch bit for bit: m", be->name);
    k22_check_close(nm, got[1], torch_m, 16, 0, 0);
    snprintf(nm, sizeof nm, "%s adamw = torch bit for bit: v", be->name);
    k22_check_close(nm, got[2], torch_v, 16, 0, 0);
}

static void test_clip(k22_backend *be)
{
    float a[100], b[37], a0[100], b0[37];
    k22_test_fill(a0, 100, 601, -1, 1);
    k22_test_fill(b0, 37, 602, -1, 1);
    double ss = 0;
    for (int i = 0; i < 100; i++) ss += (double)a0[i] * a0[i];
    for (int i = 0; i < 37; i++) ss += (double)b0[i] * b0[i];
    float total = (float)sqrt(ss);
    float *bufs[2] = {a, b};
    int64_t lens[2] = {100, 37};
    for (int above = 0; above < 2; above++) {
        float max_norm = above ? 0.5f * total : 2.0f * total;
        memcpy(a, a0, sizeof a);
        memcpy(b, b0, sizeof b);
        float got = k22_clip_grad_norm(be, bufs, lens, 2, max_norm);
        CHECK_MSG(fabsf(got - total) <= 1e-6f * total, "%s clip: total %g, want %g", be->name, got,
                  total);
        /* coef = max_norm / (total + 1e-6) clamped to 1 */
        float coef = above ? max_norm / (total + 1e-6f) : 1.0f;
        float wa[100], wb[37];
        for (int i = 0; i < 100; i++) wa[i] = a0[i] * coef;
        for (int i = 0; i < 37; i++) wb[i] = b0[i] * coef;
        char nm[80];
        snprintf(nm, sizeof nm, "%s clip_grad_norm %s max_norm", be->name,
                 above ? "above" : "below");
        k22_check_close(nm, a, wa, 100, 0, 1e-6);
        k22_check_close(nm, b, wb, 37, 0, 1e-6);
        if (above) { /* the clipped norm is max_norm */
            double s2 = 0;
            for (int i = 0; i < 100; i++) s2 += (double)a[i] * a[i];
            for (int i = 0; i < 37; i++) s2 += (double)b[i] * b[i];
            CHECK_MSG(fabs(sqrt(s2) - max_norm) <= 1e-5 * max_norm, "clipped norm %g, want %g",
                      sqrt(s2), (double)max_norm);
        }
    }
}

/* Memory entries: alloc zero-fills; to_device, copy, to_host round-trip; zero clears. */
static void test_memory(k22_backend *be)
{
    enum { n = 1000 };
    float host[n], back[n];
    k22_test_fill(host, n, 700, -1, 1);
    float *d = be->alloc(be->ctx, n * sizeof(float)), *e = be->alloc(be->ctx, n * sizeof(float));
    be->to_host(be->ctx, back, d, n * sizeof(float));
    int zero = 1;
    for (int i = 0; i < n; i++) zero &= back[i] == 0.0f;
    CHECK_MSG(zero, "%s: alloc is not zero-filled", be->name);
    be->to_device(be->ctx, d, host, n * sizeof(float));
    be->copy(be->ctx, e, d, n * sizeof(float));
    be->sync(be->ctx);
    be->to_host(be->ctx, back, e, n * sizeof(float));
    CHECK_MSG(memcmp(back, host, sizeof back) == 0, "%s: to_device/copy/to_host changed data",
              be->name);
    be->zero(be->ctx, e, n * sizeof(float));
    be->to_host(be->ctx, back, e, n * sizeof(float));
    zero = 1;
    for (int i = 0; i < n; i++) zero &= back[i] == 0.0f;
    CHECK_MSG(zero, "%s: zero left data", be->name);
    be->free(be->ctx, d);
    be->free(be->ctx, e);
}

static void test_by_name(void)
{
    k22_err err;
    k22_backend *c = k22_backend_by_name("cpu", &err);
    CHECK(c && strcmp(c->name, "cpu") == 0 && c->dev == K22_DEV_HOST);
    k22_backend_free(c);
    c = k22_backend_by_name("cpu-ref", &err);
    CHECK(c && strcmp(c->name, "cpu-ref") == 0);
    k22_backend_free(c);
    k22_err_clear(&err);
    CHECK(k22_backend_by_name("tpu", &err) == NULL && err.code == K22_ERR_ARG);
    CHECK_MSG(strstr(err.msg, "tpu") != NULL, "message does not name the device: %s", err.msg);
    CHECK(k22_backend_by_name("cuda:x", &err) == NULL && err.code == K22_ERR_ARG);
    CHECK(k22_backend_by_name("cuda:1x", &err) == NULL && err.code == K22_ERR_ARG);
#ifndef K22_HAVE_CUDA
    CHECK(k22_backend_by_name("cuda:0", &err) == NULL && err.code == K22_ERR_UNSUPPORTED);
    CHECK_MSG(strstr(err.msg, "without CUDA") != NULL, "unexpected message: %s", err.msg);
#endif
    k22_backend_free(NULL); /* allowed, as free(NULL) */
}

int main(void)
{
    for (int k = 0; k < 4; k++) k22_test_fill(X[k], NBUF, 100 + k, -1, 1);
    k22_test_fill(DY, NBUF, 99, -1, 1);
    k22_backend *bes[2] = {k22_backend_cpu_new(1), k22_backend_cpu_new(0)};
    prepare_inputs(bes[0]);
    for (int m = 0; m < 2; m++) {
        test_accumulate(bes[m]);
        test_mse_microbatch(bes[m]);
        test_adamw(bes[m]);
        test_adamw_torch(bes[m]);
        test_clip(bes[m]);
        test_memory(bes[m]);
    }
    test_by_name();
    k22_backend_free(bes[0]);
    k22_backend_free(bes[1]);
    return k22_test_finish("ops_accumulate");
}
