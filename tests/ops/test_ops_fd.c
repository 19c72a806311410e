/* test_ops_fd.c: every backward of the reference backend against central finite differences.
 * For a random upstream gradient dy the loss is L = sum(dy * y), summed in double; each input
 * element is perturbed by +-h and (L+ - L-) / (x+ - x-) is compared with the analytic gradient
 * with |g - fd| <= tol * max|fd| + tol * |fd|. A canary corrupts one gradient by 1% and checks
 * that the comparator reports it. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "harness/harness.h"
#include "k22/ops.h"

static k22_backend *be;

typedef struct fd_case fd_case;
struct fd_case {
    const char *name;
    int nin;
    float *x[4];
    int64_t nx[4];
    const char *xname[4];
    float *y, *dy;
    int64_t ny;
    void (*fwd)(fd_case *c);
    void (*bwd)(fd_case *c, float **g); /* accumulates into g[k] */
    double h, tol;
    const void *p; /* op parameters */
};

static float *fvec(int64_t n, uint64_t seed, float lo, float hi)
{
    float *v = calloc((size_t)(n ? n : 1), sizeof(float));
    if (seed) k22_test_fill(v, n, seed, lo, hi);
    return v;
}

static double fd_loss(fd_case *c)
{
    c->fwd(c);
    double L = 0;
    for (int64_t i = 0; i < c->ny; i++) L += (double)c->dy[i] * c->y[i];
    return L;
}

/* Returns the number of inputs whose gradient failed; corrupt scales input 1's gradient by 1.01. */
static int fd_run(fd_case *c, int corrupt)
{
    float *g[4] = {0};
    int bad = 0;
    c->dy = fvec(c->ny, 0x5eed + (uint64_t)c->ny, -1, 1);
    for (int k = 0; k < c->nin; k++) g[k] = fvec(c->nx[k], 0, 0, 0);
    c->fwd(c);
    c->bwd(c, g);
    if (corrupt)
        for (int64_t i = 0; i < c->nx[1]; i++) g[1][i] *= 1.01f;
    for (int k = 0; k < c->nin; k++) {
        float *fd = fvec(c->nx[k], 0, 0, 0);
        double maxfd = 0;
        for (int64_t i = 0; i < c->nx[k]; i++) {
            float orig = c->x[k][i];
            float xp = (float)(orig + c->h), xm = (float)(orig - c->h);
            c->x[k][i] = xp;
            double Lp = fd_loss(c);
            c->x[k][i] = xm;
            double Lm = fd_loss(c);
            c->x[k][i] = orig;
            fd[i] = (float)((Lp - Lm) / ((double)xp - (double)xm));
            maxfd = fmax(maxfd, fabs(fd[i]));
        }
        char what[160];
        snprintf(what, sizeof what, "fd %s d%s", c->name, c->xname[k]);
        if (!k22_check_close(what, g[k], fd, c->nx[k], c->tol * fmax(maxfd, 1e-4), c->tol)) bad++;
        free(fd);
    }
    c->fwd(c);
    for (int k = 0; k < c->nin; k++) free(g[k]);
    free(c->dy);
    return bad;
}

static void fd_free(fd_case *c)
{
    for (int k = 0; k < c->nin; k++) free(c->x[k]);
    free(c->y);
}

/* ---- linear ---- */
typedef struct {
    int N, I, O;
} lin_p;
static void lin_fwd(fd_case *c)
{
    const lin_p *p = c->p;
    be->linear_fwd(be->ctx, c->y, c->x[0], c->x[1], c->x[2], p->N, p->I, p->O);
}
static void lin_bwd(fd_case *c, float **g)
{
    const lin_p *p = c->p;
    be->linear_bwd(be->ctx, g[0], g[1], g[2], c->dy, c->x[0], c->x[1], p->N, p->I, p->O);
}
static fd_case lin_case(const lin_p *p)
{
    fd_case c = {.name = "linear",
                 .nin = 3,
                 .p = p,
                 .fwd = lin_fwd,
                 .bwd = lin_bwd,
                 .h = 1e-2,
                 .tol =
                     2e-4, /* bilinear: FD exact but for float rounding of y / 2h (seen 6e-6 rel) */
                 .xname = {"x", "w", "b"}};
    c.nx[0] = (int64_t)p->N * p->I;
    c.nx[1] = (int64_t)p->O * p->I;
    c.nx[2] = p->O;
    for (int k = 0; k < 3; k++) c.x[k] = fvec(c.nx[k], 11 + k, -1, 1);
    c.ny = (int64_t)p->N * p->O;
    c.y = fvec(c.ny, 0, 0, 0);
    return c;
}

static void test_linear(void)
{
    lin_p p = {3, 5, 4};
    fd_case c = lin_case(&p);
    CHECK(fd_run(&c, 0) == 0);
    fd_free(&c);
}

/* The canary: a 1% error in dw must be reported; the expected failure is then uncounted. */
static void test_canary(void)
{
    lin_p p = {3, 5, 4};
    fd_case c = lin_case(&p);
    int f0 = k22_test_failures, n0 = k22_test_checks;
    fprintf(stderr, "canary: the next FAIL line is expected\n");
    int bad = fd_run(&c, 1);
    k22_test_failures = f0;
    k22_test_checks = n0;
    CHECK_MSG(bad == 1, "canary: a 1%% corrupted dw gave %d failing inputs, expected 1", bad);
    fd_free(&c);
}

/* ---- matmul: forward with (ta, tb); backward through the same entry with transposed flags ---- */
typedef struct {
    int ta, tb, M, N, K, batch;
    float alpha;
    int64_t sA, sB, sC;
} mm_p;
static void mm_fwd(fd_case *c)
{
    const mm_p *p = c->p;
    be->matmul(be->ctx, p->ta, p->tb, p->M, p->N, p->K, p->alpha, c->x[0], p->sA, c->x[1], p->sB,
               0.0f, c->y, p->sC, p->batch);
}
static void mm_bwd(fd_case *c, float **g)
{
    const mm_p *p = c->p;
    const float *dC = c->dy, *A = c->x[0], *B = c->x[1];
    if (!p->ta) /* dA (M,K) = dC @ op(B)^T */
        be->matmul(be->ctx, 0, !p->tb, p->M, p->K, p->N, p->alpha, dC, p->sC, B, p->sB, 1.0f, g[0],
                   p->sA, p->batch);
    else /* dA stored (K,M) = op(B) @ dC^T */
        be->matmul(be->ctx, p->tb, 1, p->K, p->M, p->N, p->alpha, B, p->sB, dC, p->sC, 1.0f, g[0],
                   p->sA, p->batch);
    if (!p->tb) /* dB (K,N) = op(A)^T @ dC */
        be->matmul(be->ctx, !p->ta, 0, p->K, p->N, p->M, p->alpha, A, p->sA, dC, p->sC, 1.0f, g[1],
                   p->sB, p->batch);
    else /* dB stored (N,K) = dC^T @ op(A) */
        be->matmul(be->ctx, 1, p->ta, p->N, p->K, p->M, p->alpha, dC, p->sC, A, p->sA, 1.0f, g[1],
                   p->sB, p->batch);
}

static void test_matmul(void)
{
    for (int t = 0; t < 4; t++) {
        mm_p p = {t & 1, t >> 1, 3, 4, 5, 2, 0.7f, 15, 20, 12};
        fd_case c = {
            .name = "matmul",
            .nin = 2,
            .p = &p,
            .fwd = mm_fwd,
            .bwd = mm_bwd,
            .h = 1e-2,
            .tol = 2e-4,
            /* bilinear: FD exact but for float rounding (seen 6e-6) */ .xname = {"A", "B"}};
        char nm[64];
        snprintf(nm, sizeof nm, "matmul ta=%d tb=%d", p.ta, p.tb);
        c.name = nm;
        c.nx[0] = 30;
        c.nx[1] = 40;
        c.x[0] = fvec(30, 21 + t, -1, 1);
        c.x[1] = fvec(40, 31 + t, -1, 1);
        c.ny = 24;
        c.y = fvec(24, 0, 0, 0);
        CHECK(fd_run(&c, 0) == 0);
        fd_free(&c);
    }
}

/* ---- conv2d ---- */
static void conv_fwd(fd_case *c) { be->conv2d_fwd(be->ctx, c->y, c->x[0], c->x[1], c->x[2], c->p); }
static void conv_bwd(fd_case *c, float **g)
{
    be->conv2d_bwd(be->ctx, g[0], g[1], g[2], c->dy, c->x[0], c->x[1], c->p);
}

static void test_conv(void)
{
    static const k22_conv2d_desc geo[] = {
        {2, 3, 6, 5, 4, 3, 3, 1, 1, 1, 1, 1, 1}, /* 3x3 pad 1 */
        {1, 2, 7, 6, 3, 3, 3, 2, 2, 0, 1, 0, 1}, /* diffusers downsample: pad (0,1,0,1) stride 2 */
        {2, 3, 4, 4, 2, 1, 1, 1, 1, 0, 0, 0, 0}, /* 1x1 */
        {1, 2, 5, 5, 2, 3, 3, 2, 2, 1, 1, 1, 1}, /* 3x3 stride 2 pad 1 */
        {1, 2, 5, 6, 2, 2, 3, 2, 1, 1, 0, 2, 1}, /* odd kernel, mixed stride and padding */
    };
    for (size_t gi = 0; gi < sizeof geo / sizeof geo[0]; gi++) {
        const k22_conv2d_desc *d = &geo[gi];
        char nm[64];
        snprintf(nm, sizeof nm, "conv2d geometry %zu", gi);
        fd_case c = {.name = nm,
                     .nin = 3,
                     .p = d,
                     .fwd = conv_fwd,
                     .bwd = conv_bwd,
                     .h = 1e-2,
                     .tol = 2e-4,
                     /* bilinear: FD exact but for float rounding (seen 6e-6) */ .xname = {"x", "w",
                                                                                           "bias"}};
        c.nx[0] = (int64_t)d->B * d->C * d->H * d->W;
        c.nx[1] = (int64_t)d->O * d->C * d->KH * d->KW;
        c.nx[2] = d->O;
        for (int k = 0; k < 3; k++) c.x[k] = fvec(c.nx[k], 41 + k + 3 * gi, -1, 1);
        c.ny = (int64_t)d->B * d->O * k22_conv2d_out_h(d) * k22_conv2d_out_w(d);
        c.y = fvec(c.ny, 0, 0, 0);
        CHECK(fd_run(&c, 0) == 0);
        fd_free(&c);
    }
}

/* ---- group norm and layer norm (mean/rstd are saved outputs without an upstream gradient) ---- */
typedef struct {
    int B, C, S, G, affine;
    float aux[64];
} gn_p;
static void gn_fwd(fd_case *c)
{
    gn_p *p = (gn_p *)c->p;
    be->group_norm_fwd(be->ctx, c->y, p->aux, p->aux + 32, c->x[0], p->affine ? c->x[1] : NULL,
                       p->affine ? c->x[2] : NULL, p->B, p->C, p->S, p->G, 1e-5f);
}
static void gn_bwd(fd_case *c, float **g)
{
    gn_p *p = (gn_p *)c->p;
    be->group_norm_bwd(be->ctx, g[0], p->affine ? g[1] : NULL, p->affine ? g[2] : NULL, c->dy,
                       c->x[0], p->aux, p->aux + 32, p->affine ? c->x[1] : NULL, p->B, p->C, p->S,
                       p->G);
}
typedef struct {
    int N, C, affine;
    float aux[64];
} ln_p;
static void ln_fwd(fd_case *c)
{
    ln_p *p = (ln_p *)c->p;
    be->layer_norm_fwd(be->ctx, c->y, p->aux, p->aux + 32, c->x[0], p->affine ? c->x[1] : NULL,
                       p->affine ? c->x[2] : NULL, p->N, p->C, 1e-5f);
}
static void ln_bwd(fd_case *c, float **g)
{
    ln_p *p = (ln_p *)c->p;
    be->layer_norm_bwd(be->ctx, g[0], p->affine ? g[1] : NULL, p->affine ? g[2] : NULL, c->dy,
                       c->x[0], p->aux, p->aux + 32, p->affine ? c->x[1] : NULL, p->N, p->C);
}

static void test_norms(void)
{
    for (int affine = 0; affine < 2; affine++) {
        gn_p p = {2, 4, 5, 2, affine, {0}};
        fd_case c = {.name = affine ? "group_norm affine" : "group_norm plain",
                     .nin = affine ? 3 : 1,
                     .p = &p,
                     .fwd = gn_fwd,
                     .bwd = gn_bwd,
                     .h = 1e-2,
                     .tol = 1e-3, /* smooth nonlinear: O(h^2) truncation (seen 1e-5) */
                     .xname = {"x", "gamma", "beta"}};
        c.nx[0] = 40;
        c.nx[1] = c.nx[2] = 4;
        c.x[0] = fvec(40, 51, -2, 2);
        if (affine) {
            c.x[1] = fvec(4, 52, 0.5f, 1.5f);
            c.x[2] = fvec(4, 53, -1, 1);
        }
        c.ny = 40;
        c.y = fvec(40, 0, 0, 0);
        CHECK(fd_run(&c, 0) == 0);
        fd_free(&c);
    }
    for (int affine = 0; affine < 2; affine++) {
        ln_p p = {3, 6, affine, {0}};
        fd_case c = {.name = affine ? "layer_norm affine" : "layer_norm plain",
                     .nin = affine ? 3 : 1,
                     .p = &p,
                     .fwd = ln_fwd,
                     .bwd = ln_bwd,
                     .h = 1e-2,
                     .tol = 1e-3,
                     /* smooth nonlinear (seen 1e-5) */ .xname = {"x", "gamma", "beta"}};
        c.nx[0] = 18;
        c.nx[1] = c.nx[2] = 6;
        c.x[0] = fvec(18, 61, -2, 2);
        if (affine) {
            c.x[1] = fvec(6, 62, 0.5f, 1.5f);
            c.x[2] = fvec(6, 63, -1, 1);
        }
        c.ny = 18;
        c.y = fvec(18, 0, 0, 0);
        CHECK(fd_run(&c, 0) == 0);
        fd_free(&c);
    }
}

/* ---- activations and softmax ---- */
static void act_fwd(fd_case *c) { be->act_fwd(be->ctx, *(const int *)c->p, c->y, c->x[0], c->ny); }
static void act_bwd(fd_case *c, float **g)
{
    be->act_bwd(be->ctx, *(const int *)c->p, g[0], c->dy, c->x[0], c->ny);
}
static void sm_fwd(fd_case *c) { be->softmax_fwd(be->ctx, c->y, c->x[0], 3, 5); }
static void sm_bwd(fd_case *c, float **g) { be->softmax_bwd(be->ctx, g[0], c->dy, c->y, 3, 5); }

static void test_act_softmax(void)
{
    static const char *names[] = {"silu", "gelu", "gelu_tanh", "quick_gelu"};
    for (int a = 0; a < K22_ACT_COUNT; a++) {
        fd_case c = {
            .name = names[a],
            .nin = 1,
            .p = &a,
            .fwd = act_fwd,
            .bwd = act_bwd,
            .h = 1e-3,
            .tol = 5e-4, /* smooth; float y rounding / 2h with h = 1e-3 dominates (seen 5e-5) */
            .xname = {"x"}};
        c.nx[0] = c.ny = 24;
        c.x[0] = fvec(24, 71 + a, -4, 4);
        c.y = fvec(24, 0, 0, 0);
        CHECK(fd_run(&c, 0) == 0);
        fd_free(&c);
    }
    fd_case c = {.name = "softmax",
                 .nin = 1,
                 .fwd = sm_fwd,
                 .bwd = sm_bwd,
                 .h = 1e-2,
                 .tol = 5e-4,
                 /* smooth nonlinear (seen 5e-6) */ .xname = {"x"}};
    c.nx[0] = c.ny = 15;
    c.x[0] = fvec(15, 81, -3, 3);
    c.y = fvec(15, 0, 0, 0);
    CHECK(fd_run(&c, 0) == 0);
    fd_free(&c);
}

/* ---- attention ---- */
typedef struct {
    k22_attn_desc d;
    float lse[64];
} at_p;
static void at_fwd(fd_case *c)
{
    at_p *p = (at_p *)c->p;
    be->attention_fwd(be->ctx, c->y, p->lse, c->x[0], c->x[1], c->x[2], &p->d);
}
static void at_bwd(fd_case *c, float **g)
{
    at_p *p = (at_p *)c->p;
    be->attention_bwd(be->ctx, g[0], g[1], g[2], c->dy, c->x[0], c->x[1], c->x[2], c->y, p->lse,
                      &p->d);
}

static void test_attention(void)
{
    enum { B = 2, NH = 2, T = 4, D = 3, DV = 2 };
    float mask[B * T * T];
    k22_test_fill(mask, B * T * T, 91, -2, 2);
    /* batch 0 keeps keys 0..2, batch 1 keeps none: its rows give out 0 and no gradient */
    static const uint8_t keep[B * T] = {1, 1, 1, 0, 0, 0, 0, 0};
    static const uint8_t keep_some[B * T] = {1, 0, 1, 1, 1, 1, 0, 1};
    struct {
        const char *name;
        const float *mask;
        int64_t bs;
        int causal;
        const uint8_t *keep;
    } v[] = {
        {"attention no mask", NULL, 0, 0, NULL},
        {"attention additive mask per batch", mask, T * T, 0, NULL},
        {"attention additive mask broadcast", mask, 0, 0, NULL},
        {"attention causal", NULL, 0, 1, NULL},
        {"attention key padding (one batch all padded)", NULL, 0, 0, keep},
        {"attention mask + causal + padding", mask, T * T, 1, keep_some},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        at_p p = {{B, NH, T, T, D, DV, 0.57735f, v[i].mask, v[i].bs, v[i].causal, v[i].keep}, {0}};
        fd_case c = {.name = v[i].name,
                     .nin = 3,
                     .p = &p,
                     .fwd = at_fwd,
                     .bwd = at_bwd,
                     .h = 1e-2,
                     .tol = 5e-4,
                     /* smooth nonlinear softmax (seen 1.2e-5) */ .xname = {"q", "k", "v"}};
        c.nx[0] = B * NH * T * D;
        c.nx[1] = B * NH * T * D;
        c.nx[2] = B * NH * T * DV;
        for (int k = 0; k < 3; k++) c.x[k] = fvec(c.nx[k], 101 + k + 3 * i, -1.5f, 1.5f);
        c.ny = B * NH * T * DV;
        c.y = fvec(c.ny, 0, 0, 0);
        CHECK(fd_run(&c, 0) == 0);
        fd_free(&c);
    }
}

/* ---- elementwise ---- */
static void add_fwd(fd_case *c) { be->add(be->ctx, c->y, c->x[0], c->x[1], c->ny); }
static void add_bwd(fd_case *c, float **g) { be->add_bwd(be->ctx, g[0], g[1], c->dy, c->ny); }
static void mul_fwd(fd_case *c) { be->mul(be->ctx, c->y, c->x[0], c->x[1], c->ny); }
static void mul_bwd(fd_case *c, float **g)
{
    be->mul_bwd(be->ctx, g[0], g[1], c->dy, c->x[0], c->x[1], c->ny);
}
static void scl_fwd(fd_case *c) { be->scale(be->ctx, c->y, c->x[0], -1.7f, c->ny); }
static void scl_bwd(fd_case *c, float **g) { be->scale_bwd(be->ctx, g[0], c->dy, -1.7f, c->ny); }

typedef struct {
    int64_t outer, na, nb, inner;
} cat_p;
static void cat_fwd(fd_case *c)
{
    const cat_p *p = c->p;
    be->concat_fwd(be->ctx, c->y, c->x[0], c->x[1], p->outer, p->na, p->nb, p->inner);
}
static void cat_bwd(fd_case *c, float **g)
{
    const cat_p *p = c->p;
    be->concat_bwd(be->ctx, g[0], g[1], c->dy, p->outer, p->na, p->nb, p->inner);
}

typedef struct {
    int ndim;
    int64_t shape[K22_PERMUTE_DIMS];
    int perm[K22_PERMUTE_DIMS];
} perm_p;
static void perm_fwd(fd_case *c)
{
    const perm_p *p = c->p;
    be->permute_fwd(be->ctx, c->y, c->x[0], p->ndim, p->shape, p->perm);
}
static void perm_bwd(fd_case *c, float **g)
{
    const perm_p *p = c->p;
    be->permute_bwd(be->ctx, g[0], c->dy, p->ndim, p->shape, p->perm);
}
static void up_fwd(fd_case *c) { be->upsample2x_fwd(be->ctx, c->y, c->x[0], 1, 2, 2, 3); }
static void up_bwd(fd_case *c, float **g) { be->upsample2x_bwd(be->ctx, g[0], c->dy, 1, 2, 2, 3); }

static void run_simple(const char *name, int nin, int64_t nx0, int64_t nx1, int64_t ny,
                       void (*fwd)(fd_case *), void (*bwd)(fd_case *, float **), const void *p,
                       uint64_t seed)
{
    fd_case c = {.name = name,
                 .nin = nin,
                 .p = p,
                 .fwd = fwd,
                 .bwd = bwd,
                 .h = 1e-2,
                 .tol = 2e-4,
                 /* linear or bilinear: float rounding only (seen 2e-6) */ .xname = {"a", "b"}};
    c.nx[0] = nx0;
    c.nx[1] = nx1;
    for (int k = 0; k < nin; k++) c.x[k] = fvec(c.nx[k], seed + k, -1, 1);
    c.ny = ny;
    c.y = fvec(ny, 0, 0, 0);
    CHECK(fd_run(&c, 0) == 0);
    fd_free(&c);
}

/* The 5-d permute that splits stacked q, k, v, (B, T, 3, H, D) -> (3, B, H, T, D), against its
 * index formula: finite differences only show that backward matches forward. */
static void test_permute_split(void)
{
    enum { B = 2, T = 3, H = 2, D = 4, n = B * T * 3 * H * D };
    const int64_t shape[5] = {B, T, 3, H, D};
    const int perm[5] = {2, 0, 3, 1, 4};
    float *x = fvec(n, 231, -1, 1), *y = fvec(n, 0, 0, 0), *dx = fvec(n, 0, 0, 0);
    be->permute_fwd(be->ctx, y, x, 5, shape, perm);
    be->permute_bwd(be->ctx, dx, y, 5, shape, perm);
    int bad = 0;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int i = 0; i < 3; i++)
                for (int h = 0; h < H; h++)
                    for (int d = 0; d < D; d++) {
                        float in = x[(((b * T + t) * 3 + i) * H + h) * D + d];
                        bad += y[(((i * B + b) * H + h) * T + t) * D + d] != in;
                    }
    CHECK_MSG(bad == 0, "permute (B, T, 3, H, D) -> (3, B, H, T, D): %d elements misplaced", bad);
    k22_check_close("permute 5-d backward of the forward gives the input back", dx, x, n, 0, 0);
    free(x), free(y), free(dx);
}

static void test_elementwise(void)
{
    run_simple("add", 2, 6, 6, 6, add_fwd, add_bwd, NULL, 201);
    run_simple("mul", 2, 6, 6, 6, mul_fwd, mul_bwd, NULL, 203);
    run_simple("scale", 1, 6, 0, 6, scl_fwd, scl_bwd, NULL, 205);
    cat_p cp = {2, 2, 3, 3};
    run_simple("concat", 2, 12, 18, 30, cat_fwd, cat_bwd, &cp, 207);
    perm_p pp[] = {{4, {2, 3, 4, 2}, {0, 2, 1, 3}},
                   {4, {2, 3, 4, 2}, {3, 1, 0, 2}},
                   {3, {3, 2, 4, 0}, {2, 0, 1, 0}},
                   {2, {5, 3, 0, 0}, {1, 0, 0, 0}},
                   {5, {2, 3, 3, 2, 2}, {2, 0, 3, 1, 4}}}; /* the stacked q, k, v split */
    for (int i = 0; i < 5; i++) {
        int64_t n = k22_shape_numel(pp[i].ndim, pp[i].shape);
        char nm[64];
        snprintf(nm, sizeof nm, "permute case %d", i);
        run_simple(nm, 1, n, 0, n, perm_fwd, perm_bwd, &pp[i], 211 + i);
    }
    run_simple("upsample2x", 1, 12, 0, 48, up_fwd, up_bwd, NULL, 221);
}

/* ---- timestep embedding (d/dt) and MSE ---- */
typedef struct {
    int N, dim, flip;
    float shift, scale, maxp;
} te_p;
static void te_fwd(fd_case *c)
{
    const te_p *p = c->p;
    be->timestep_embed_fwd(be->ctx, c->y, c->x[0], p->N, p->dim, p->flip, p->shift, p->scale,
                           p->maxp);
}
static void te_bwd(fd_case *c, float **g)
{
    const te_p *p = c->p;
    be->timestep_embed_bwd(be->ctx, g[0], c->dy, c->x[0], p->N, p->dim, p->flip, p->shift, p->scale,
                           p->maxp);
}
typedef struct {
    int B;
    int64_t N;
    const float *w;
} mse_p;
static void mse_fwd(fd_case *c)
{
    const mse_p *p = c->p;
    be->mse_fwd(be->ctx, c->y, NULL, c->x[0], c->x[1], p->w, p->B, p->N);
}
static void mse_bwd(fd_case *c, float **g)
{
    const mse_p *p = c->p;
    be->mse_bwd(be->ctx, g[0], c->dy[0], c->x[0], c->x[1], p->w, p->B, p->N);
}

static void test_embed_loss(void)
{
    te_p tp[] = {{3, 9, 1, 1.0f, 1.0f, 10000.0f}, {3, 8, 0, 0.0f, 2.0f, 10000.0f}};
    for (int i = 0; i < 2; i++) {
        fd_case c = {.name = i ? "timestep_embed sin-cos" : "timestep_embed flip odd dim",
                     .nin = 1,
                     .p = &tp[i],
                     .fwd = te_fwd,
                     .bwd = te_bwd,
                     .h = 1e-2,
                     .tol = 1e-3,
                     /* smooth; float rounding of t*freq (seen 7e-5) */ .xname = {"t"}};
        c.nx[0] = 3;
        c.x[0] = fvec(3, 231 + i, 0, 20);
        c.ny = (int64_t)tp[i].N * tp[i].dim;
        c.y = fvec(c.ny, 0, 0, 0);
        CHECK(fd_run(&c, 0) == 0);
        fd_free(&c);
    }
    float w[3] = {0.5f, 2.0f, 1.25f};
    for (int i = 0; i < 2; i++) {
        mse_p mp = {3, 4, i ? w : NULL};
        fd_case c = {.name = i ? "mse weighted" : "mse",
                     .nin = 1,
                     .p = &mp,
                     .fwd = mse_fwd,
                     .bwd = mse_bwd,
                     .h = 1e-2,
                     .tol = 2e-4, /* quadratic: FD exact but for rounding (seen 7e-6) */
                     .xname = {"pred"}};
        c.nx[0] = 12;
        c.x[0] = fvec(12, 241 + i, -1, 1);
        c.x[1] = fvec(12, 251 + i, -1, 1); /* target: held fixed (nin = 1), freed below */
        c.ny = 1;
        c.y = fvec(1, 0, 0, 0);
        CHECK(fd_run(&c, 0) == 0);
        free(c.x[1]);
        fd_free(&c);
    }
}

int main(void)
{
    be = k22_backend_cpu_new(1);
    test_canary();
    test_linear();
    test_matmul();
    test_conv();
    test_norms();
    test_act_softmax();
    test_attention();
    test_elementwise();
    test_permute_split();
    test_embed_loss();
    k22_backend_free(be);
    return k22_test_finish("ops_fd");
}
