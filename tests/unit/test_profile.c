/* test_profile.c: the per-op profiler (include/k22/profile.h, src/backend/profile.c) around the
 * cpu backend:
 *  1. every timed entry, called once through the wrapper, counts one call under its own name and
 *     nothing else, gives the wrapped backend's bits, and credits the FLOPs of profile.h's rule
 *     (hand counts); entries the wrapped backend leaves NULL stay NULL, the rest are wrapped;
 *     set_precision reaches the wrapped backend;
 *  2. the tiny prior (B = 4) and the tiny UNet (B = 2, 16x16 latents): two optimizer steps give
 *     the same bits with and without the wrapper (losses, gradient norms, weights, moments);
 *  3. the op counts of a training step and of a forward equal what the model code issues,
 *     counted from the model's own layer lists (a missing wrapper counts 0, a doubled one 2x);
 *  4. the summed op time of a step is > 0 and at most the wall time around it;
 *  5. the GEMM-class FLOPs of one forward equal flops.h's count for the model and batch, exactly
 *     (both are sums of the same integer products, far below 2^53);
 *  6. the GEMM-class calls by shape add up to their ops' calls, FLOPs and times, and name the
 *     shapes of the calls. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "harness/harness.h"
#include "k22/diffusers.h"
#include "k22/flops.h"
#include "k22/profile.h"
#include "k22/train_decoder.h"
#include "k22/train_prior.h"

/* ---- 1. each entry alone ---- */

/* The buffers every entry of the sequence reads and writes (host memory: the cpu backend). */
typedef struct {
    float x[64], y[64], z[64], w[64], g[64], m[64], v[64], o[64], r[16], lse[8], t[4], st[4];
    float at[24];   /* the 16-bit attention's out, lse, dq, dk, dv */
    uint16_t h[40]; /* 16-bit activations */
    double ss;
} bufs;

static void bufs_fill(bufs *b)
{
    memset(b, 0, sizeof *b);
    k22_test_fill(b->x, 64, 1, -1, 1);
    k22_test_fill(b->y, 64, 2, -1, 1);
    k22_test_fill(b->z, 64, 3, -1, 1);
    k22_test_fill(b->w, 64, 4, -1, 1);
    k22_test_fill(b->g, 64, 5, -1, 1);
    k22_test_fill(b->v, 64, 6, 0.1f, 1); /* second moments: positive */
    k22_test_fill(b->t, 4, 7, 0, 999);
}

/* After one call: op's count went up by one, nobody else's, and op's FLOPs by `flops`. */
typedef struct {
    const k22_prof *p; /* NULL: the plain backend's run, nothing to check */
    int64_t calls;     /* all calls before this one */
} tally;

static void one_call(tally *t, const char *op, double flops)
{
    if (!t->p) return;
    int i = k22_prof_find(op), n = k22_prof_nops();
    CHECK_MSG(i >= 0, "%s is not a profiled op", op);
    if (i < 0) return;
    int64_t all = 0;
    for (int k = 0; k < n; k++) all += k22_prof_at(t->p, k).calls;
    k22_prof_stat s = k22_prof_at(t->p, i);
    CHECK_MSG(s.calls == 1 && all == t->calls + 1, "%s: %lld calls of it, %lld in all after %lld",
              op, (long long)s.calls, (long long)all, (long long)t->calls);
    CHECK_MSG(s.flops == flops, "%s: %.0f FLOPs, want %.0f", op, s.flops, flops);
    CHECK_MSG(s.ms >= 0, "%s: %g ms", op, s.ms);
    t->calls = all;
}

/* Calls every timed entry once, in ops.h's order, on tiny shapes. FLOPs by hand: matmul
 * 2*2*2*2; linear 2*N2*I3*O2 = 24 (x2 with dx and dw); conv 1x3x3 -> 1x3x3 with a 3x3 kernel
 * 2*9*9 = 162 (x2); attention B1 NH1 TQ2 TK2 D2 DV2: 2*4*(2+2) = 32 forward, 2*4*(2+2+2+2+2) =
 * 80 backward (recomputed QK^T, dP, dV, dQ, dK). */
static void every_entry(const k22_backend *be, bufs *b, tally *t)
{
    void *ctx = be->ctx;
    void *q = be->alloc(ctx, 64);
    one_call(t, "alloc", 0);
    be->free(ctx, q);
    one_call(t, "free", 0);
    be->to_device(ctx, b->o, b->x, 16);
    one_call(t, "to_device", 0);
    be->to_host(ctx, b->o + 4, b->y, 16);
    one_call(t, "to_host", 0);
    be->copy(ctx, b->o + 8, b->z, 16);
    one_call(t, "copy", 0);
    be->zero(ctx, b->o + 10, 8);
    one_call(t, "zero", 0);
    be->matmul(ctx, 0, 1, 2, 2, 2, 1.0f, b->x, 0, b->y, 0, 0.0f, b->o + 12, 0, 1);
    one_call(t, "matmul", 16);
    be->linear_fwd(ctx, b->o + 16, b->x, b->w, b->y, 2, 3, 2);
    one_call(t, "linear_fwd", 24);
    be->linear_bwd(ctx, b->g, b->m, b->o + 20, b->y, b->x, b->w, 2, 3, 2);
    one_call(t, "linear_bwd", 48);
    k22_backend_set_precision((k22_backend *)be, K22_PREC_BF16, NULL); /* the 16-bit entries' */
    be->linear_fwd_x16(ctx, b->z + 60, b->h, b->w, b->y, 2, 1, 2);
    one_call(t, "linear_fwd_x16", 8);
    be->linear_bwd_x16(ctx, b->g + 50, b->m + 52, b->o + 40, b->y, b->h, b->w, 2, 1, 2);
    one_call(t, "linear_bwd_x16", 16);
    k22_backend_set_precision((k22_backend *)be, K22_PREC_FP32, NULL);
    k22_conv2d_desc cd = {1, 1, 3, 3, 1, 3, 3, 1, 1, 1, 1, 1, 1};
    be->conv2d_fwd(ctx, b->o + 24, b->x, b->w, b->y, &cd);
    one_call(t, "conv2d_fwd", 162);
    be->conv2d_bwd(ctx, b->g + 8, b->m + 16, b->m + 30, b->y, b->x, b->w, &cd);
    one_call(t, "conv2d_bwd", 324);
    k22_backend_set_precision((k22_backend *)be, K22_PREC_BF16, NULL); /* the 16-bit entries' */
    be->conv2d_fwd_x16(ctx, b->z + 56, b->h, b->w, b->y, &cd);
    one_call(t, "conv2d_fwd_x16", 162);
    be->conv2d_bwd_x16(ctx, b->g + 40, b->m + 40, b->m + 50, b->y, b->h, b->w, &cd);
    one_call(t, "conv2d_bwd_x16", 324);
    k22_backend_set_precision((k22_backend *)be, K22_PREC_FP32, NULL);
    be->group_norm_fwd(ctx, b->o + 33, b->o + 37, b->o + 38, b->x, b->w, b->y, 1, 2, 2, 1, 1e-5f);
    one_call(t, "group_norm_fwd", 0);
    be->group_norm_bwd(ctx, b->g + 20, b->m + 32, b->m + 34, b->y, b->x, b->o + 37, b->o + 38, b->w,
                       1, 2, 2, 1);
    one_call(t, "group_norm_bwd", 0);
    be->layer_norm_fwd(ctx, b->o + 40, b->o + 44, b->o + 46, b->x, b->w, b->y, 2, 2, 1e-5f);
    one_call(t, "layer_norm_fwd", 0);
    k22_backend_set_precision((k22_backend *)be, K22_PREC_BF16, NULL);
    be->layer_norm_fwd_y16(ctx, b->h + 16, b->st, b->st + 2, b->x, b->w, b->y, 2, 2, 1e-5f);
    one_call(t, "layer_norm_fwd_y16", 0);
    k22_backend_set_precision((k22_backend *)be, K22_PREC_FP32, NULL);
    be->layer_norm_bwd(ctx, b->g + 24, b->m + 36, b->m + 38, b->y, b->x, b->o + 44, b->o + 46,
                       b->w, 2, 2);
    one_call(t, "layer_norm_bwd", 0);
    be->act_fwd(ctx, K22_ACT_SILU, b->z, b->x, 4);
    one_call(t, "act_fwd", 0);
    be->act_bwd(ctx, K22_ACT_GELU, b->g + 28, b->y, b->x, 4);
    one_call(t, "act_bwd", 0);
    k22_backend_set_precision((k22_backend *)be, K22_PREC_BF16, NULL);
    be->act_fwd_y16(ctx, K22_ACT_GELU, b->h + 12, b->x, 4);
    one_call(t, "act_fwd_y16", 0);
    k22_backend_set_precision((k22_backend *)be, K22_PREC_FP32, NULL);
    be->softmax_fwd(ctx, b->z + 4, b->x, 2, 2);
    one_call(t, "softmax_fwd", 0);
    be->softmax_bwd(ctx, b->g + 32, b->y, b->z + 4, 2, 2);
    one_call(t, "softmax_bwd", 0);
    k22_attn_desc ad = {.B = 1, .NH = 1, .TQ = 2, .TK = 2, .D = 2, .DV = 2, .scale = 0.5f};
    be->attention_fwd(ctx, b->z + 8, b->lse, b->x, b->y, b->w, &ad);
    one_call(t, "attention_fwd", 32);
    be->attention_bwd(ctx, b->g + 36, b->g + 40, b->g + 44, b->y, b->x, b->y, b->w, b->z + 8, b->lse,
                      &ad);
    one_call(t, "attention_bwd", 80);
    k22_backend_set_precision((k22_backend *)be, K22_PREC_BF16, NULL);
    be->attention_fwd_x16(ctx, b->at, b->at + 4, b->h + 20, b->h + 24, b->h + 28, &ad);
    one_call(t, "attention_fwd_x16", 32);
    be->attention_bwd_x16(ctx, b->at + 6, b->at + 10, b->at + 14, b->y, b->h + 20, b->h + 24, b->h + 28,
                          b->at, b->at + 4, &ad);
    one_call(t, "attention_bwd_x16", 80);
    k22_backend_set_precision((k22_backend *)be, K22_PREC_FP32, NULL);
    be->add(ctx, b->z + 12, b->x, b->y, 4);
    one_call(t, "add", 0);
    be->mul(ctx, b->z + 16, b->x, b->y, 4);
    one_call(t, "mul", 0);
    be->scale(ctx, b->z + 20, b->x, 0.5f, 4);
    one_call(t, "scale", 0);
    be->add_bwd(ctx, b->g + 48, b->g + 52, b->y, 4);
    one_call(t, "add_bwd", 0);
    be->mul_bwd(ctx, b->g + 56, b->g + 60, b->y, b->x, b->w, 4);
    one_call(t, "mul_bwd", 0);
    be->scale_bwd(ctx, b->m + 40, b->y, 0.25f, 4);
    one_call(t, "scale_bwd", 0);
    be->concat_fwd(ctx, b->z + 24, b->x, b->y, 1, 1, 1, 2);
    one_call(t, "concat_fwd", 0);
    be->concat_bwd(ctx, b->m + 44, b->m + 46, b->y, 1, 1, 1, 2);
    one_call(t, "concat_bwd", 0);
    const int64_t shape[2] = {2, 3};
    const int perm[2] = {1, 0};
    be->permute_fwd(ctx, b->z + 28, b->x, 2, shape, perm);
    one_call(t, "permute_fwd", 0);
    be->permute_bwd(ctx, b->m + 48, b->y, 2, shape, perm);
    one_call(t, "permute_bwd", 0);
    be->upsample2x_fwd(ctx, b->z + 34, b->x, 1, 1, 1, 2);
    one_call(t, "upsample2x_fwd", 0);
    be->upsample2x_bwd(ctx, b->m + 54, b->y, 1, 1, 1, 2);
    one_call(t, "upsample2x_bwd", 0);
    be->avgpool2x_fwd(ctx, b->z + 42, b->x, 1, 1, 2, 2);
    one_call(t, "avgpool2x_fwd", 0);
    be->avgpool2x_bwd(ctx, b->m + 56, b->y, 1, 1, 2, 2);
    one_call(t, "avgpool2x_bwd", 0);
    be->chan_affine_fwd(ctx, b->z + 44, b->x, b->w, b->y, 1.0f, 1, 2, 2);
    one_call(t, "chan_affine_fwd", 0);
    be->chan_affine_bwd(ctx, b->m + 60, b->o + 48, b->o + 50, b->y, b->x, b->w, 1.0f, 1, 2, 2);
    one_call(t, "chan_affine_bwd", 0);
    be->group_norm_act_fwd(ctx, K22_ACT_SILU, b->z + 48, b->o + 52, b->o + 53, b->x, b->w, b->y,
                           b->g, b->v, 2, 1.0f, 1, 2, 2, 1, 1e-5f);
    one_call(t, "group_norm_act_fwd", 0);
    be->group_norm_act_bwd(ctx, K22_ACT_SILU, b->o + 54, b->o + 58, b->o + 60, b->m + 62, b->o + 62,
                           b->y, b->x, b->o + 52, b->o + 53, b->w, b->y, b->g, b->v, 2, 1.0f, 1, 2,
                           2, 1);
    one_call(t, "group_norm_act_bwd", 0);
    k22_backend_set_precision((k22_backend *)be, K22_PREC_BF16, NULL);
    be->group_norm_act_fwd_y16(ctx, K22_ACT_SILU, b->h, b->o + 63, b->r + 15, b->x, b->w, b->y,
                               b->g, b->v, 2, 1.0f, 1, 2, 4, 1, 1e-5f);
    one_call(t, "group_norm_act_fwd_y16", 0);
    k22_backend_set_precision((k22_backend *)be, K22_PREC_FP32, NULL);
    be->resize_nearest_fwd(ctx, b->r, b->x, 1, 1, 2, 2, 3, 3);
    one_call(t, "resize_nearest_fwd", 0);
    be->timestep_embed_fwd(ctx, b->r + 9, b->t, 1, 4, 1, 0.0f, 1.0f, 10000.0f);
    one_call(t, "timestep_embed_fwd", 0);
    be->timestep_embed_bwd(ctx, b->lse + 4, b->y, b->t, 1, 4, 1, 0.0f, 1.0f, 10000.0f);
    one_call(t, "timestep_embed_bwd", 0);
    be->mse_fwd(ctx, b->lse + 6, b->lse + 7, b->x, b->y, NULL, 1, 4);
    one_call(t, "mse_fwd", 0);
    be->mse_bwd(ctx, b->z + 52, 0.5f, b->x, b->y, NULL, 1, 3);
    one_call(t, "mse_bwd", 0);
    k22_adamw_hparams h = {.lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .step = 1};
    be->adamw_step(ctx, b->w + 32, b->g, b->m, b->v, 8, &h);
    one_call(t, "adamw_step", 0);
    be->sumsq(ctx, &b->ss, b->x, 64);
    one_call(t, "sumsq", 0);
}

/* The GEMM-class calls by shape add up to their ops' figures: calls and FLOPs exactly (sums of
 * the same integers), times to rounding; only GEMM-class ops have shapes, each with a call. */
static void check_shapes(const char *what, const k22_prof *p)
{
    int nops = k22_prof_nops(), ns = k22_prof_nshapes(p);
    for (int i = 0; i < nops; i++) {
        k22_prof_stat s = k22_prof_at(p, i);
        int64_t calls = 0;
        double ms = 0, flops = 0;
        int entries = 0;
        for (int j = 0; j < ns; j++) {
            k22_prof_shape_stat e = k22_prof_shape_at(p, j);
            if (strcmp(e.op, s.op)) continue;
            entries++, calls += e.calls, ms += e.ms, flops += e.flops;
            CHECK_MSG(e.calls > 0 && strchr(e.shape, ' ') == NULL, "%s: %s shape '%s', %lld calls", what, e.op,
                      e.shape, (long long)e.calls);
        }
        CHECK_MSG(s.gemm ? calls == s.calls && flops == s.flops && fabs(ms - s.ms) <= 1e-9 * (1 + s.ms)
                         : entries == 0,
                  "%s: %s: %lld calls, %.0f FLOPs, %.6f ms; its %d shapes %lld, %.0f, %.6f", what, s.op,
                  (long long)s.calls, s.flops, s.ms, entries, (long long)calls, flops, ms);
    }
}

/* The shape entry of op whose text is shape: its calls, -1 when there is none. */
static int64_t shape_calls(const k22_prof *p, const char *op, const char *shape)
{
    for (int j = 0; j < k22_prof_nshapes(p); j++) {
        k22_prof_shape_stat e = k22_prof_shape_at(p, j);
        if (!strcmp(e.op, op) && !strcmp(e.shape, shape)) return e.calls;
    }
    return -1;
}

static void test_every_entry(void)
{
    k22_backend *plain = k22_backend_cpu_new(0), *in = k22_backend_cpu_new(0);
    k22_backend *w = k22_prof_wrap(in);
    k22_prof *p = k22_prof_of(w);
    CHECK(p && !k22_prof_of(plain) && k22_prof_wrap(w) == w);
    CHECK(!strcmp(w->name, "cpu") && w->dev == K22_DEV_HOST && !strcmp(k22_prof_device(p), "cpu"));
#define X(n) CHECK_MSG(w->n && w->n != in->n, "entry %s is not wrapped", #n);
    K22_PROF_OPS(X)
#undef X
    bufs a, b;
    bufs_fill(&a);
    bufs_fill(&b);
    tally none = {NULL, 0}, t = {p, 0};
    every_entry(plain, &a, &none);
    every_entry(w, &b, &t);
    CHECK_MSG(t.calls == k22_prof_nops(), "%lld calls of %d ops", (long long)t.calls, k22_prof_nops());
    CHECK_MSG(!memcmp(&a, &b, sizeof a), "the wrapped entries wrote other bits than the plain ones");
    /* one shape per GEMM-class entry, each named by its call's sizes */
    check_shapes("every entry", p);
    CHECK_MSG(k22_prof_nshapes(p) == 13, "%d shapes after one call of each entry", k22_prof_nshapes(p));
    static const char *const named[][2] = {
        {"matmul", "M2,N2,K2,x1,tb"},
        {"linear_fwd", "N2,I3,O2"},
        {"linear_bwd", "N2,I3,O2,dx,dw,db"},
        {"conv2d_bwd", "B1,C1,3x3,O1,k3x3,s1,1,p1,1,1,1,dx,dw,db"},
        {"conv2d_fwd_x16", "B1,C1,3x3,O1,k3x3,s1,1,p1,1,1,1"},
    };
    for (size_t i = 0; i < sizeof named / sizeof named[0]; i++)
        CHECK_MSG(shape_calls(p, named[i][0], named[i][1]) == 1, "%s: no shape %s", named[i][0], named[i][1]);
    for (int j = 0; j < k22_prof_nshapes(p); j++) {
        k22_prof_shape_stat e = k22_prof_shape_at(p, j);
        if (!strncmp(e.op, "attention", 9)) printf("every entry: %s shape %s\n", e.op, e.shape);
    }
    /* An entry taking or giving 16 bits (name_x16 / name_y16) is GEMM-class exactly when its
     * float twin is: under bf16 the models run the 16-bit ones in their place. */
    for (int i = 0; i < k22_prof_nops(); i++) {
        k22_prof_stat s16 = k22_prof_at(p, i);
        size_t n = strlen(s16.op);
        if (n < 5 || (strcmp(s16.op + n - 4, "_x16") && strcmp(s16.op + n - 4, "_y16"))) continue;
        char twin[64];
        snprintf(twin, sizeof twin, "%.*s", (int)(n - 4), s16.op);
        int k = k22_prof_find(twin);
        CHECK_MSG(k >= 0 && k22_prof_at(p, k).gemm == s16.gemm, "%s: GEMM-class %d, its twin %s %d", s16.op,
                  s16.gemm, twin, k >= 0 ? k22_prof_at(p, k).gemm : -1);
    }
    k22_prof_reset(p);
    CHECK(k22_prof_at(p, k22_prof_find("sumsq")).calls == 0 && k22_prof_nshapes(p) == 0);
    CHECK(k22_prof_find("sync") < 0 && k22_prof_find("nonsense") < 0);
    k22_backend_free(w);
    k22_backend_free(plain);
}

/* NULL entries stay NULL; set_precision forwards, and its absence keeps the fp32-only refusal. */
static void test_optional_entries(void)
{
    k22_backend *in = k22_backend_cpu_new(1); /* cpu-ref: no set_precision */
    in->resize_nearest_fwd = NULL;
    in->mse_bwd = NULL;
    k22_backend *w = k22_prof_wrap(in);
    CHECK(!w->set_precision && !w->resize_nearest_fwd && !w->mse_bwd);
    CHECK(w->mse_fwd && w->sync && w->destroy);
    k22_err err;
    k22_err_clear(&err);
    CHECK(k22_backend_set_precision(w, K22_PREC_BF16, &err) == K22_ERR_UNSUPPORTED);
    CHECK_MSG(strstr(err.msg, "cpu-ref") != NULL, "refusal names %s", err.msg);
    k22_backend_free(w);

    /* bf16 through the wrapper: the wrapped backend rounds as the plain one does. */
    k22_backend *plain = k22_backend_cpu_new(0);
    in = k22_backend_cpu_new(0);
    w = k22_prof_wrap(in);
    CHECK(k22_backend_set_precision(w, K22_PREC_BF16, &err) == K22_OK);
    CHECK(k22_backend_set_precision(plain, K22_PREC_BF16, &err) == K22_OK);
    CHECK(w->precision == K22_PREC_BF16 && in->precision == K22_PREC_BF16);
    float x[12], y[12], c1[9], c2[9];
    k22_test_fill(x, 12, 11, -1, 1);
    k22_test_fill(y, 12, 12, -1, 1);
    plain->matmul(plain->ctx, 0, 0, 3, 3, 4, 1.0f, x, 0, y, 0, 0.0f, c1, 0, 1);
    w->matmul(w->ctx, 0, 0, 3, 3, 4, 1.0f, x, 0, y, 0, 0.0f, c2, 0, 1);
    CHECK_MSG(!memcmp(c1, c2, sizeof c1), "bf16 matmul differs through the wrapper");
    k22_backend_set_precision(plain, K22_PREC_FP32, &err);
    plain->matmul(plain->ctx, 0, 0, 3, 3, 4, 1.0f, x, 0, y, 0, 0.0f, c1, 0, 1);
    CHECK_MSG(memcmp(c1, c2, sizeof c1) != 0, "bf16 and fp32 agree: the check above is void");
    k22_backend_free(w);
    k22_backend_free(plain);
}

/* ---- 2-5. the two models ---- */

static int64_t calls_of(const k22_prof *p, const char *op)
{
    return k22_prof_at(p, k22_prof_find(op)).calls;
}

/* Summed ms and GEMM-class FLOPs of everything recorded. */
static void sums(const k22_prof *p, double *ms, double *gemm_flops)
{
    *ms = *gemm_flops = 0;
    for (int i = 0; i < k22_prof_nops(); i++) {
        k22_prof_stat s = k22_prof_at(p, i);
        *ms += s.ms;
        if (s.gemm) *gemm_flops += s.flops;
    }
}

/* Equal when bit for bit equal (NaN included). */
static int same_bits(const void *a, const void *b, size_t n)
{
    return !memcmp(a, b, n);
}

/* The optimizer state of two trainers, bit for bit. */
static void check_same_state(const char *what, const k22_optim *a, const k22_optim *b)
{
    size_t n = (size_t)a->padded * sizeof(float), m = (size_t)a->shard * sizeof(float);
    CHECK_MSG(a->padded == b->padded && same_bits(a->P, b->P, n), "%s: weights differ", what);
    CHECK_MSG(same_bits(a->M, b->M, m) && same_bits(a->V, b->V, m), "%s: moments differ", what);
}

/* One step's summed op time is positive and within the wall time around it. */
static void check_times(const char *what, const k22_prof *p)
{
    double ms, fl, wall = k22_prof_wall_ms(p);
    sums(p, &ms, &fl);
    printf("%s: ops %.3f ms of %.3f ms wall (%.1f%%)\n", what, ms, wall, 100 * ms / wall);
    CHECK_MSG(ms > 0 && ms <= wall, "%s: ops %.6f ms, wall %.6f ms", what, ms, wall);
}

static int spans_with_values(const k22_optim *o)
{
    int n = 0;
    for (int s = 0; s < o->nspans; s++) n += o->span_len[s] > 0;
    return n;
}

#define PRIOR_B 4
#define STEPS 2

static void prior_setup(k22_prior_trainer *tr, const k22_backend *be)
{
    k22_model_config cfg;
    k22_params ps;
    k22_err err;
    k22_train_hparams hp;
    k22_train_hparams_default(&hp);
    hp.micro_batch = PRIOR_B;
    hp.max_train_steps = 10;
    k22_params_init(&ps);
    if (k22_config_preset(K22_MODEL_PRIOR, "tiny", &cfg, &err) || k22_params_build(&cfg, &ps, &err))
        K22_FATAL("%s", err.msg);
    k22_params_alloc(&ps);
    k22_params_init_random(&cfg, &ps, 0);
    if (k22_prior_trainer_init_loaded(tr, be, &cfg, &ps, &hp, &err)) K22_FATAL("%s", err.msg);
}

typedef struct {
    float te[PRIOR_B * 64], th[PRIOR_B * 77 * 64], ie[PRIOR_B * 64], nz[PRIOR_B * 64];
    uint8_t mask[PRIOR_B * 77];
    int64_t t[PRIOR_B];
} prior_data;

static k22_prior_batch prior_batch(prior_data *d, const k22_prior_config *c)
{
    int B = PRIOR_B, E = c->embedding_dim, EP = c->embedding_proj_dim, L = c->num_embeddings;
    K22_REQUIRE(E <= 64 && EP <= 64 && L <= 77);
    k22_test_fill(d->te, (int64_t)B * EP, 21, -1, 1);
    k22_test_fill(d->th, (int64_t)B * L * E, 22, -1, 1);
    k22_test_fill(d->ie, (int64_t)B * E, 23, -1, 1);
    k22_test_fill(d->nz, (int64_t)B * E, 24, -1, 1);
    for (int b = 0; b < B; b++) {
        d->t[b] = (b * 397 + 11) % 1000;
        for (int i = 0; i < L; i++) d->mask[b * L + i] = i <= (3 + 5 * b) % L;
    }
    k22_prior_batch batch = {B, d->te, d->th, d->mask, d->ie, d->nz, d->t};
    return batch;
}

static void test_prior(void)
{
    k22_backend *plain = k22_backend_cpu_new(0), *w = k22_prof_wrap(k22_backend_cpu_new(0));
    k22_prof *p = k22_prof_of(w);
    k22_prior_trainer a, b;
    prior_setup(&a, plain);
    prior_setup(&b, w);
    const k22_prior_config *c = &a.core.cfg.u.prior;
    static prior_data d;
    k22_prior_batch batch = prior_batch(&d, c);
    /* 2: the same bits */
    for (int s = 0; s < STEPS; s++) {
        k22_train_step_log la, lb;
        float xa = k22_prior_trainer_micro_step(&a, &batch);
        k22_train_core_sync(&a.core, &la);
        if (s == STEPS - 1) k22_prof_reset(p); /* 3, 4: the last step alone */
        float xb = k22_prior_trainer_micro_step(&b, &batch);
        k22_train_core_sync(&b.core, &lb);
        k22_prof_collect(p);
        CHECK_MSG(same_bits(&xa, &xb, sizeof xa) && same_bits(&la.loss, &lb.loss, sizeof la.loss) &&
                      same_bits(&la.grad_norm, &lb.grad_norm, sizeof la.grad_norm),
                  "prior step %d: loss %.9g / %.9g, norm %.9g / %.9g", s, la.loss, lb.loss,
                  (double)la.grad_norm, (double)lb.grad_norm);
    }
    check_same_state("prior", &a.core.opt, &b.core.opt);
    /* 3: per layer q, k, v as one (stacked), out and the MLP's two; outside the layers time1,
     * time2, proj_in, embedding_proj, encoder_hidden_states_proj and proj_to_clip_embeddings.
     * Each layer norms twice, norm_out once, splits and merges heads once. Every linear,
     * attention and norm has its backward. */
    int nl = c->num_layers, lin = 6 + 4 * nl, spans = spans_with_values(&b.core.opt);
    CHECK_MSG(calls_of(p, "linear_fwd") == lin && calls_of(p, "linear_bwd") == lin,
              "prior step: linear %lld / %lld, want %d", (long long)calls_of(p, "linear_fwd"),
              (long long)calls_of(p, "linear_bwd"), lin);
    CHECK(calls_of(p, "attention_fwd") == nl && calls_of(p, "attention_bwd") == nl);
    CHECK(calls_of(p, "layer_norm_fwd") == 2 * nl + 1 && calls_of(p, "layer_norm_bwd") == 2 * nl + 1);
    CHECK(calls_of(p, "permute_fwd") == 2 * nl && calls_of(p, "timestep_embed_fwd") == 1);
    CHECK(calls_of(p, "mse_fwd") == 1 && calls_of(p, "mse_bwd") == 1);
    CHECK_MSG(calls_of(p, "adamw_step") == spans && calls_of(p, "sumsq") == spans,
              "adamw %lld, sumsq %lld, spans %d", (long long)calls_of(p, "adamw_step"),
              (long long)calls_of(p, "sumsq"), spans);
    CHECK(calls_of(p, "conv2d_fwd") == 0 && calls_of(p, "matmul") == 0);
    /* 4 */
    check_times("prior step", p);
    check_shapes("prior step", p);
    /* the blocks' stacked q, k, v (out width 3D) and their out projection: a call a layer each */
    char qkv[64], qkv_bwd[80], out[64];
    int rows = PRIOR_B * (c->num_embeddings + c->additional_embeddings), dm = c->num_attention_heads * c->attention_head_dim;
    snprintf(qkv, sizeof qkv, "N%d,I%d,O%d", rows, dm, 3 * dm);
    snprintf(qkv_bwd, sizeof qkv_bwd, "%s,dx,dw,db", qkv);
    snprintf(out, sizeof out, "N%d,I%d,O%d", rows, dm, dm);
    CHECK_MSG(shape_calls(p, "linear_fwd", qkv) == nl && shape_calls(p, "linear_bwd", qkv_bwd) == nl,
              "prior: linear %s %lld / %lld calls, want %d", qkv, (long long)shape_calls(p, "linear_fwd", qkv),
              (long long)shape_calls(p, "linear_bwd", qkv_bwd), nl);
    CHECK_MSG(shape_calls(p, "linear_fwd", out) >= nl, "prior: linear_fwd %s %lld calls, want >= %d", out,
              (long long)shape_calls(p, "linear_fwd", out), nl);
    /* 5: one forward (the held-out loss: no backward) */
    k22_prof_reset(p);
    k22_prior_trainer_eval(&b, &batch);
    k22_prof_collect(p);
    double ms, fl, want = k22_flops_prior_forward(c, PRIOR_B).total;
    sums(p, &ms, &fl);
    printf("prior forward B=%d: %.0f GEMM FLOPs, flops.h %.0f\n", PRIOR_B, fl, want);
    CHECK_MSG(fl == want, "prior forward: %.0f FLOPs, flops.h %.0f", fl, want);
    CHECK(calls_of(p, "linear_fwd") == lin && calls_of(p, "linear_bwd") == 0);
    CHECK(calls_of(p, "attention_fwd") == nl && calls_of(p, "adamw_step") == 0);
    k22_prior_trainer_free(&a);
    k22_prior_trainer_free(&b);
    k22_backend_free(w);
    k22_backend_free(plain);
}

#define UNET_B 2
#define HW 16

static void unet_setup(k22_decoder_trainer *tr, const k22_backend *be)
{
    k22_model_config cfg;
    k22_params ps;
    k22_sched_config sc;
    k22_err err;
    k22_decoder_train_hparams hp;
    k22_decoder_train_hparams_default(&hp);
    hp.base.micro_batch = UNET_B;
    hp.base.max_train_steps = 10;
    hp.latent_h = hp.latent_w = HW;
    k22_params_init(&ps);
    if (k22_config_preset(K22_MODEL_UNET, "tiny", &cfg, &err) || k22_params_build(&cfg, &ps, &err))
        K22_FATAL("%s", err.msg);
    k22_params_alloc(&ps);
    k22_params_init_random(&cfg, &ps, 0);
    if (k22_sched_preset("decoder", &sc, &err) ||
        k22_decoder_trainer_init_loaded(tr, be, &cfg, &ps, &sc, &hp, &err))
        K22_FATAL("%s", err.msg);
}

static void test_unet(void)
{
    k22_backend *plain = k22_backend_cpu_new(0), *w = k22_prof_wrap(k22_backend_cpu_new(0));
    k22_prof *p = k22_prof_of(w);
    k22_decoder_trainer a, b;
    unet_setup(&a, plain);
    unet_setup(&b, w);
    const k22_unet *m = &b.model;
    int E = a.core.cfg.u.unet.encoder_hid_dim;
    static float lat[UNET_B * 4 * HW * HW], nz[UNET_B * 4 * HW * HW], img[UNET_B * 1024];
    K22_REQUIRE(E <= 1024);
    k22_test_fill(lat, UNET_B * 4 * HW * HW, 31, -1, 1);
    k22_test_fill(nz, UNET_B * 4 * HW * HW, 32, -1, 1);
    k22_test_fill(img, (int64_t)UNET_B * E, 33, -1, 1);
    int64_t t[UNET_B] = {11, 408};
    k22_decoder_batch batch = {UNET_B, lat, img, nz, t};
    for (int s = 0; s < STEPS; s++) {
        k22_train_step_log la, lb;
        k22_decoder_trainer_micro_step(&a, &batch);
        k22_train_core_sync(&a.core, &la);
        if (s == STEPS - 1) k22_prof_reset(p);
        k22_decoder_trainer_micro_step(&b, &batch);
        k22_train_core_sync(&b.core, &lb);
        k22_prof_collect(p);
        CHECK_MSG(same_bits(&la.loss, &lb.loss, sizeof la.loss) &&
                      same_bits(&la.grad_norm, &lb.grad_norm, sizeof la.grad_norm),
                  "unet step %d: loss %.9g / %.9g, norm %.9g / %.9g", s, la.loss, lb.loss,
                  (double)la.grad_norm, (double)lb.grad_norm);
    }
    check_same_state("unet", &a.core.opt, &b.core.opt);
    /* 3: from the step list: conv_in and conv_out, each resnet's conv1, conv2 and its 1x1
     * shortcut when the channels change; its norm1, norm2 fused with SiLU, and the head's; its
     * time_emb_proj; each attention's group norm, q, k, v (one stacked linear), add_k, add_v,
     * out; outside them the time MLP's two linears, the image embedding's and the image tokens'. */
    int conv = 2, res = 0, attn = 0;
    for (int i = 0; i < m->nsteps; i++) {
        if (m->steps[i].kind == K22_USTEP_RES) conv += 2 + m->res[m->steps[i].layer].has_shortcut, res++;
        if (m->steps[i].kind == K22_USTEP_ATTN) attn++;
    }
    int lin = 4 + res + 4 * attn;
    printf("unet: %d resnets, %d attentions: %d convs, %d linears per forward\n", res, attn, conv, lin);
    CHECK_MSG(calls_of(p, "conv2d_fwd") == conv && calls_of(p, "conv2d_bwd") == conv,
              "unet step: conv2d %lld / %lld, want %d", (long long)calls_of(p, "conv2d_fwd"),
              (long long)calls_of(p, "conv2d_bwd"), conv);
    CHECK(calls_of(p, "attention_fwd") == attn && calls_of(p, "attention_bwd") == attn);
    CHECK(calls_of(p, "group_norm_act_fwd") == 2 * res + 1 && calls_of(p, "group_norm_act_bwd") == 2 * res + 1);
    CHECK(calls_of(p, "group_norm_fwd") == attn && calls_of(p, "group_norm_bwd") == attn);
    CHECK_MSG(calls_of(p, "linear_fwd") == lin && calls_of(p, "linear_bwd") == lin,
              "unet step: linear %lld / %lld, want %d", (long long)calls_of(p, "linear_fwd"),
              (long long)calls_of(p, "linear_bwd"), lin);
    CHECK(calls_of(p, "adamw_step") == spans_with_values(&b.core.opt));
    check_times("unet step", p);
    check_shapes("unet step", p);
    /* 5 */
    k22_prof_reset(p);
    k22_decoder_trainer_eval(&b, &batch);
    k22_prof_collect(p);
    k22_flops f;
    k22_err err;
    CHECK(k22_flops_unet_forward(&a.core.cfg.u.unet, UNET_B, HW, HW, &f, &err) == K22_OK);
    double ms, fl;
    sums(p, &ms, &fl);
    printf("unet forward B=%d %dx%d: %.0f GEMM FLOPs, flops.h %.0f\n", UNET_B, HW, HW, fl, f.total);
    CHECK_MSG(fl == f.total, "unet forward: %.0f FLOPs, flops.h %.0f", fl, f.total);
    CHECK(calls_of(p, "conv2d_fwd") == conv && calls_of(p, "conv2d_bwd") == 0);
    k22_decoder_trainer_free(&a);
    k22_decoder_trainer_free(&b);
    k22_backend_free(w);
    k22_backend_free(plain);
}

int main(void)
{
    test_every_entry();
    test_optional_entries();
    test_prior();
    test_unet();
    return k22_test_finish("test_profile");
}
