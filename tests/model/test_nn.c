/* test_nn.c: the transformer block of src/nn (layer norms, multi-head self-attention, MLP)
 * forward and backward against central finite differences, in both flavours the models use:
 * CLIP's encoder layer (causal mask, quick_gelu) and diffusers' BasicTransformerBlock
 * (additive mask, exact GELU), on the reference and fast CPU backends; and the arena
 * bookkeeping (mark/reset, block sizes = what the code allocates). */
#include "harness/harness.h"
#include "k22/nn.h"
#include "src/model/params_util.h" /* k22_pb_linear_stack, as the prior's table stacks q, k, v */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { B = 2, T = 5, C = 8, H = 2, F = 12 };

typedef struct {
    const k22_backend *be;
    k22_params ps;
    k22_block blk;
    k22_arena ar;
    k22_attn_desc mask;
    float *P, *G;   /* parameters and gradients (CPU backend: host memory) */
    float *x, *dx, *y, *w; /* (B, T, C) each; w weights the loss sum(w * y) */
} nn_case;

/* stacked: q, k, v laid out as the prior's table does (one GEMM), else one after the other */
static void add_names(k22_params *ps, const k22_block_names *nm, int stacked)
{
    char k[128];
    const char *lin[6] = {nm->q, nm->k, nm->v, nm->o, nm->fc1, nm->fc2};
    const int out[6] = {C, C, C, C, F, C}, in[6] = {C, C, C, C, C, F};
    const char *ln[2] = {nm->ln1, nm->ln2};
    for (int i = 0; i < 2; i++) {
        snprintf(k, sizeof k, "blk.%s.weight", ln[i]);
        k22_params_addv(ps, k, 1, 1, C);
        snprintf(k, sizeof k, "blk.%s.bias", ln[i]);
        k22_params_addv(ps, k, 1, 1, C);
    }
    if (stacked) {
        k22_pb b = {ps, 0};
        k22_pb_linear_stack(&b, "blk", lin, 3, C, C, 1);
    }
    for (int i = stacked ? 3 : 0; i < 6; i++) {
        snprintf(k, sizeof k, "blk.%s.weight", lin[i]);
        k22_params_addv(ps, k, 1, 2, out[i], in[i]);
        snprintf(k, sizeof k, "blk.%s.bias", lin[i]);
        k22_params_addv(ps, k, 1, 1, out[i]);
    }
}

/* loss = sum(w * block(x)) in double, from a fresh no-cache forward. */
static double loss(nn_case *c)
{
    k22_block_forward(c->be, &c->blk, &c->ar, c->y, c->x, B, T, &c->mask, NULL);
    double s = 0;
    for (int i = 0; i < B * T * C; i++) s += (double)c->w[i] * c->y[i];
    return s;
}

/* d loss / d v along a random direction, central differences, against <grad, dir>. */
static void check_dir(nn_case *c, const char *what, float *v, const float *g, size_t n,
                      uint64_t seed)
{
    float *dir = malloc(n * sizeof(float)), *v0 = malloc(n * sizeof(float));
    k22_test_fill(dir, (int64_t)n, seed, -1.0f, 1.0f);
    memcpy(v0, v, n * sizeof(float));
    const float eps = 2e-3f;
    for (size_t i = 0; i < n; i++) v[i] = v0[i] + eps * dir[i];
    double lp = loss(c);
    for (size_t i = 0; i < n; i++) v[i] = v0[i] - eps * dir[i];
    double lm = loss(c);
    memcpy(v, v0, n * sizeof(float));
    double fd = (lp - lm) / (2.0 * eps), an = 0, mag = 0;
    for (size_t i = 0; i < n; i++) {
        an += (double)g[i] * dir[i];
        mag += fabs((double)g[i] * dir[i]);
    }
    /* The f32 forward leaves ~1e-6 of |loss| (~10) of rounding in each loss, divided by eps:
     * up to ~3e-4 of noise (measured; the key bias, whose exact gradient is 0, shows it alone).
     * 1e-3 absolute plus 1e-3 of the sum of |terms| sits above it and far below the O(0.1)
     * that a wrong or missing term moves these directional derivatives. */
    double err = fabs(fd - an);
    CHECK_MSG(err <= 1e-3 * mag + 1e-3, "%s %s: finite difference %.6g, backward %.6g", c->be->name,
              what, fd, an);
    if (getenv("K22_TEST_VERBOSE"))
        printf("%s %-40s fd %.6g bwd %.6g err %.2g\n", c->be->name, what, fd, an, err);
    free(dir), free(v0);
}

static void run_case(const k22_backend *be, const k22_block_names *nm, int act, int additive,
                     int stacked)
{
    nn_case c;
    memset(&c, 0, sizeof c);
    c.be = be;
    k22_params_init(&c.ps);
    add_names(&c.ps, nm, stacked);
    k22_params_alloc(&c.ps);
    for (int i = 0; i < c.ps.count; i++) {
        const k22_param *p = &c.ps.items[i];
        int ln = p->ndim == 1 && strstr(p->name, "norm") && strstr(p->name, "weight");
        k22_test_fill(c.ps.data + p->offset, (int64_t)p->numel, 100 + i, ln ? 0.8f : -0.4f,
                      ln ? 1.2f : 0.4f);
    }
    c.P = c.ps.data;
    c.G = calloc(c.ps.total, sizeof(float));
    k22_block_bind(&c.blk, &c.ps, "blk", nm, c.P, c.G, H, act, 1e-5f);
    CHECK_MSG(c.blk.attn.stacked == stacked, "%s: attention stacked %d, table stacked %d", nm->q,
              c.blk.attn.stacked, stacked);
    size_t n = (size_t)B * T * C;
    c.x = malloc(n * 4), c.dx = calloc(n, 4), c.y = malloc(n * 4), c.w = malloc(n * 4);
    k22_test_fill(c.x, (int64_t)n, 7, -1.5f, 1.5f);
    k22_test_fill(c.w, (int64_t)n, 8, -1.0f, 1.0f);
    float *mask = NULL;
    if (additive) { /* the prior's kind: causal -10000 plus -10000 on padded keys of row 1 */
        mask = malloc((size_t)B * T * T * 4);
        for (int b = 0; b < B; b++)
            for (int i = 0; i < T; i++)
                for (int j = 0; j < T; j++)
                    mask[(b * T + i) * T + j] = (j > i ? -10000.0f : 0.0f) + (b == 1 && j == 1 ? -10000.0f : 0.0f);
        c.mask.mask = mask;
        c.mask.mask_bstride = T * T;
    } else {
        c.mask.causal = 1;
    }
    size_t cache = k22_block_cache_floats(B, T, C, F, H, 0, stacked);
    size_t bwd = k22_block_bwd_floats(B, T, C, F, H, stacked);
    size_t proj = k22_mha_proj_floats(B, T, C, 0, stacked);
    k22_arena_init(&c.ar, be, cache + (bwd > proj ? bwd : proj));
    k22_block_cache bc;
    k22_block_forward(be, &c.blk, &c.ar, c.y, c.x, B, T, &c.mask, &bc);
    CHECK_MSG(c.ar.used == cache, "block cache: %zu floats used, size function says %zu", c.ar.used, cache);
    k22_block_backward(be, &c.blk, &c.ar, c.dx, c.w, B, T, &c.mask, &bc);
    CHECK_MSG(c.ar.used == cache, "backward left %zu floats allocated", c.ar.used - cache);
    CHECK_MSG(c.ar.peak == c.ar.cap, "block peak %zu floats, sizes say %zu", c.ar.peak, c.ar.cap);
    k22_arena_reset(&c.ar, 0);
    char what[160];
    snprintf(what, sizeof what, "%s input x", nm->ln1);
    check_dir(&c, what, c.x, c.dx, n, 1);
    for (int i = 0; i < c.ps.count; i++) {
        const k22_param *p = &c.ps.items[i];
        check_dir(&c, p->name, c.P + p->offset, c.G + p->offset, p->numel, 200 + i);
    }
    CHECK(c.ar.used == 0);
    k22_arena_free(&c.ar);
    free(mask), free(c.G), free(c.x), free(c.dx), free(c.y), free(c.w);
    k22_params_free(&c.ps);
}

int main(void)
{
    for (int ref = 1; ref >= 0; ref--) {
        k22_backend *be = k22_backend_cpu_new(ref);
        run_case(be, &k22_block_names_clip, K22_ACT_QUICK_GELU, 0, 0);
        run_case(be, &k22_block_names_basic, K22_ACT_GELU, 1, 0);
        run_case(be, &k22_block_names_basic, K22_ACT_GELU, 1, 1); /* the prior's stacked q, k, v */
        k22_backend_free(be);
    }
    return k22_test_finish("test_nn");
}
