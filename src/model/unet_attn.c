/* unet_attn.c: diffusers Attention with added K/V (AttnAddedKVProcessor2_0) as the SimpleCrossAttn
 * blocks use it: keys and values are the projected image tokens followed by the projected pixels
 * (only_cross_attention false), no mask, residual added, rescale factor 1 (see unet.h). */
#include "k22/unet.h"

#include <math.h>
#include <string.h>

void k22_unet_attn_bind(k22_unet_attn *a, const k22_params *ps, const char *name, const float *P,
                        float *G, int head_dim, int groups, float eps)
{
    char k[256];
    if (!P) { /* shapes only (see k22_unet_init): the width from to_q, what the sizes read */
        const k22_param *q = k22_params_find(ps, k22_param_key(k, sizeof k, name, "to_q.weight"));
        if (!q || q->ndim != 2) K22_FATAL("attention '%s': no 2-d to_q.weight", name);
        memset(a, 0, sizeof *a);
        a->q.in = a->q.out = (int)q->shape[1];
        a->gn.G = groups;
    } else {
        memset(&a->qkv, 0, sizeof a->qkv);
        k22_groupnorm_bind(&a->gn, ps, k22_param_key(k, sizeof k, name, "group_norm"), P, G, groups,
                           eps);
        k22_linear_bind(&a->q, ps, k22_param_key(k, sizeof k, name, "to_q"), P, G);
        k22_linear_bind(&a->k, ps, k22_param_key(k, sizeof k, name, "to_k"), P, G);
        k22_linear_bind(&a->v, ps, k22_param_key(k, sizeof k, name, "to_v"), P, G);
        k22_linear_bind(&a->ak, ps, k22_param_key(k, sizeof k, name, "add_k_proj"), P, G);
        k22_linear_bind(&a->av, ps, k22_param_key(k, sizeof k, name, "add_v_proj"), P, G);
        k22_linear_bind(&a->o, ps, k22_param_key(k, sizeof k, name, "to_out.0"), P, G);
    }
    char qkv[3][256];
    const char *const parts[3] = {"to_q", "to_k", "to_v"};
    for (int i = 0; i < 3; i++) k22_param_key(qkv[i], sizeof qkv[i], name, parts[i]);
    const char *const stack[3] = {qkv[0], qkv[1], qkv[2]};
    a->stacked = k22_qkv_stack_env() && k22_linear_bind_stack(&a->qkv, ps, stack, 3, P, G);
    a->C = a->q.in;
    a->hd = head_dim;
    if (head_dim <= 0 || a->C % head_dim || a->q.out != a->C)
        K22_FATAL("attention '%s': width %d, head size %d", name, a->C, head_dim);
    a->heads = a->C / head_dim;
}

size_t k22_unet_attn_cache_floats(const k22_unet_attn *a, int B, int S, int L)
{
    size_t nS = (size_t)B * S * a->C, nT = (size_t)B * (L + S) * a->C;
    size_t BSC = k22_arena_round(nS), BTC = k22_arena_round(nT),
           g = k22_arena_round((size_t)B * a->gn.G);
    /* tok, q4, ocat (S rows) and k4, v4 (L+S rows): floats, or 16 bits with act16 */
    size_t hS = a->act16 ? k22_arena_round_halves(nS) : BSC,
           hT = a->act16 ? k22_arena_round_halves(nT) : BTC;
    return BSC + 3 * hS + 2 * hT + 2 * g + k22_arena_round((size_t)B * a->heads * S);
}

size_t k22_unet_attn_fwd_floats(const k22_unet_attn *a, int B, int S, int L)
{
    size_t BSC = k22_arena_round((size_t)B * S * a->C),
           BTC = k22_arena_round((size_t)B * (L + S) * a->C);
    size_t BLC = k22_arena_round((size_t)B * L * a->C),
           S3 = k22_arena_round((size_t)3 * B * S * a->C);
    /* stacked: lin and heads (3 BSC each), the added projection and its heads; with act16 k4 and
     * v4 pass through a float copy before they are rounded */
    if (a->stacked) return 2 * S3 + 2 * BLC + (a->act16 ? BTC : 0);
    return 2 * BSC + (a->act16 ? 2 : 1) * BTC + BLC;
}

size_t k22_unet_attn_bwd_floats(const k22_unet_attn *a, int B, int S, int L)
{
    size_t BSC = k22_arena_round((size_t)B * S * a->C),
           BTC = k22_arena_round((size_t)B * (L + S) * a->C);
    size_t BLC = k22_arena_round((size_t)B * L * a->C),
           S3 = k22_arena_round((size_t)3 * B * S * a->C);
    if (a->stacked) { /* dtmp, docat, do4, the heads' gradients, dk4, dv4; then the added
                       * projections' scratch, or dtok, dlin and dgn */
        size_t tail = 2 * BLC > S3 + 2 * BSC ? 2 * BLC : S3 + 2 * BSC;
        return 3 * BSC + S3 + 2 * BTC + tail;
    }
    return 9 * BSC + 4 * BTC + 2 * BLC;
}

/* (B, T, C) tokens -> (B, NH, T, D) heads, or back with bwd. */
static void heads_split(const k22_backend *be, const k22_unet_attn *a, float *y, const float *x,
                        int B, int T)
{
    int64_t shape[4] = {B, T, a->heads, a->hd};
    int perm[4] = {0, 2, 1, 3};
    be->permute_fwd(be->ctx, y, x, 4, shape, perm);
}

static void heads_split_bwd(const k22_backend *be, const k22_unet_attn *a, float *dx,
                            const float *dy, int B, int T)
{
    int64_t shape[4] = {B, T, a->heads, a->hd};
    int perm[4] = {0, 2, 1, 3};
    be->permute_bwd(be->ctx, dx, dy, 4, shape, perm);
}

/* (B, R, K) -> (B, K, R): channels-first maps to tokens and back. */
static void swap12(const k22_backend *be, float *y, const float *x, int B, int R, int K, int bwd)
{
    int64_t shape[3] = {B, R, K};
    int perm[3] = {0, 2, 1};
    if (bwd)
        be->permute_bwd(be->ctx, y, x, 3, shape, perm);
    else
        be->permute_fwd(be->ctx, y, x, 3, shape, perm);
}

static k22_attn_desc desc_of(const k22_unet_attn *a, int B, int S, int L)
{
    k22_attn_desc d = {0};
    d.B = B;
    d.NH = a->heads;
    d.TQ = S;
    d.TK = L + S;
    d.D = d.DV = a->hd;
    d.scale = 1.0f / sqrtf((float)a->hd);
    return d;
}

/* heads_split of x (B, T, C) into y (B, NH, T, D), or with act16 into y16 rounded, through tmp
 * (a float copy): only the attention reads them, and it rounds them so. */
static void heads_split_to(const k22_backend *be, const k22_unet_attn *a, float *y, uint16_t *y16,
                           float *tmp, const float *x, int B, int T)
{
    if (!y16) {
        heads_split(be, a, y, x, B, T);
        return;
    }
    heads_split(be, a, tmp, x, B, T);
    be->act_fwd_y16(be->ctx, K22_ACT_NONE, y16, tmp, (int64_t)B * T * a->C);
}

/* kv4 (B, NH, L+S, D) = heads of [proj_add(ehs) (B, L, C); proj_self(tok) (B, S, C)]; as kv16
 * with act16 (kv4 then the float copy). */
static void kv_forward(const k22_backend *be, const k22_unet_attn *a, float *kv4, uint16_t *kv16,
                       float *kcat, float *t_add, float *t_self, const k22_linear *padd,
                       const k22_linear *pself, const float *ehs, const k22_unet_attn_cache *c,
                       int B, int S, int L)
{
    k22_linear_forward(be, padd, t_add, ehs, B * L);
    k22_linear_forward_in(be, pself, t_self, c->tok, c->tok16, B * S);
    be->concat_fwd(be->ctx, kcat, t_add, t_self, B, L, S, a->C);
    heads_split_to(be, a, kv4, kv16, kv4, kcat, B, L + S);
}

/* The stacked split: (B, S, 3, NH, D) -> (3, B, NH, S, D), q, k, v heads one after the other. */
static void split3(const k22_backend *be, const k22_unet_attn *a, float *y, const float *x, int B,
                   int S, int bwd)
{
    const int64_t shape[5] = {B, S, 3, a->heads, a->hd};
    static const int perm[5] = {2, 0, 3, 1, 4};
    if (bwd)
        be->permute_bwd(be->ctx, y, x, 5, shape, perm);
    else
        be->permute_fwd(be->ctx, y, x, 5, shape, perm);
}

/* Stacked q, k, v: one GEMM of the tokens into lin (B, S, 3C), one split into heads; q4 (or q16)
 * is the first third, k4 and v4 (or k16, v16) the added projection's heads of ehs followed by
 * the second and third. The scratch past lin is released on return. */
static void qkv_forward(const k22_backend *be, const k22_unet_attn *a, k22_arena *ar, float *lin,
                        const float *ehs, const k22_unet_attn_cache *c, int B, int S, int L)
{
    int C = a->C, h16 = a->act16;
    size_t BSC = (size_t)B * S * C, BLC = (size_t)B * L * C, BTC = (size_t)B * (L + S) * C;
    size_t top = k22_arena_mark(ar);
    float *heads = k22_arena_floats(ar, 3 * BSC); // heads: (3, B, NH, S, D)
    float *t_add = k22_arena_floats(ar, BLC); // t_add: (B, L, C) an added projection
    float *a4 = k22_arena_floats(ar, BLC);    // a4: (B, NH, L, D) its heads
    float *kvf = h16 ? k22_arena_floats(ar, BTC) : NULL; /* k4 / v4 before rounding */
    k22_linear_forward_in(be, &a->qkv, lin, c->tok, c->tok16, B * S);
    split3(be, a, heads, lin, B, S, 0);
    if (h16) /* rounded once: only the attention reads them */
        be->act_fwd_y16(be->ctx, K22_ACT_NONE, c->q16, heads, (int64_t)BSC);
    else
        be->copy(be->ctx, c->q4, heads, BSC * sizeof(float));
    const k22_linear *padd[2] = {&a->ak, &a->av};
    float *dst[2] = {c->k4, c->v4};
    uint16_t *dst16[2] = {c->k16, c->v16};
    for (int i = 0; i < 2; i++) {
        k22_linear_forward(be, padd[i], t_add, ehs, B * L);
        heads_split(be, a, a4, t_add, B, L);
        float *kv = h16 ? kvf : dst[i]; /* (B, NH, L+S, D): the image tokens' keys first */
        be->concat_fwd(be->ctx, kv, a4, heads + (size_t)(i + 1) * BSC, (int64_t)B * a->heads, L, S,
                       a->hd);
        if (h16) be->act_fwd_y16(be->ctx, K22_ACT_NONE, dst16[i], kvf, (int64_t)BTC);
    }
    k22_arena_reset(ar, top);
}

void k22_unet_attn_forward(const k22_backend *be, const k22_unet_attn *a, k22_arena *ar, float *y,
                           const float *x, const float *ehs, int B, int S, int L,
                           k22_unet_attn_cache *c)
{
    int C = a->C, T2 = L + S;
    size_t BSC = (size_t)B * S * C, BTC = (size_t)B * T2 * C;
    if (a->act16) k22_backend_act16_require(be, "unet attention: GEMM inputs");
    c->x = x;
    c->mean = k22_arena_floats(ar, (size_t)B * a->gn.G);
    c->rstd = k22_arena_floats(ar, (size_t)B * a->gn.G);
    c->tok = a->act16 ? NULL : k22_arena_floats(ar, BSC); // tok: (B, S, C)
    c->tok16 = a->act16 ? k22_arena_halves(ar, BSC) : NULL;
    int h16 = a->act16;
    c->q4 = h16 ? NULL : k22_arena_floats(ar, BSC);  // q4: (B, NH, S, D)
    c->k4 = h16 ? NULL : k22_arena_floats(ar, BTC);  // k4: (B, NH, L+S, D)
    c->v4 = h16 ? NULL : k22_arena_floats(ar, BTC);  // v4: (B, NH, L+S, D)
    c->q16 = h16 ? k22_arena_halves(ar, BSC) : NULL;
    c->k16 = h16 ? k22_arena_halves(ar, BTC) : NULL;
    c->v16 = h16 ? k22_arena_halves(ar, BTC) : NULL;
    c->o4 = k22_arena_floats(ar, BSC);  // o4: (B, NH, S, D)
    c->lse = k22_arena_floats(ar, (size_t)B * a->heads * S);
    c->ocat = a->act16 ? NULL : k22_arena_floats(ar, BSC); // ocat: (B, S, C)
    c->ocat16 = a->act16 ? k22_arena_halves(ar, BSC) : NULL;
    size_t top = k22_arena_mark(ar);
    /* The normed pixels as tokens; the group norm's output itself is not kept (backward reads
     * x, mean and rstd). With act16 the tokens are rounded once here, as q/k/v would round them. */
    float *gn = k22_arena_floats(ar, BSC); // gn: (B, C, S)
    k22_groupnorm_forward(be, &a->gn, gn, c->mean, c->rstd, x, B, S);
    if (a->act16) {
        float *tok = k22_arena_floats(ar, BSC);
        swap12(be, tok, gn, B, C, S, 0);
        be->act_fwd_y16(be->ctx, K22_ACT_NONE, c->tok16, tok, (int64_t)BSC);
    } else {
        swap12(be, c->tok, gn, B, C, S, 0);
    }
    k22_arena_reset(ar, top);
    float *tmp, *t_self; /* to_out's output and the merged heads before rounding, later */
    if (a->stacked) {
        float *lin = k22_arena_floats(ar, 3 * BSC); // lin: (B, S, 3, NH, D), then tmp, t_self
        qkv_forward(be, a, ar, lin, ehs, c, B, S, L);
        tmp = lin, t_self = lin + BSC;
    } else {
        tmp = k22_arena_floats(ar, BSC), t_self = k22_arena_floats(ar, BSC);
        float *kcat = k22_arena_floats(ar, BTC), *t_add = k22_arena_floats(ar, (size_t)B * L * C);
        float *kvf = h16 ? k22_arena_floats(ar, BTC) : NULL; /* k4 / v4 before rounding */
        k22_linear_forward_in(be, &a->q, tmp, c->tok, c->tok16, B * S);
        heads_split_to(be, a, c->q4, c->q16, c->o4, tmp, B, S); /* o4: free until the attention */
        kv_forward(be, a, h16 ? kvf : c->k4, c->k16, kcat, t_add, t_self, &a->ak, &a->k, ehs, c, B,
                   S, L);
        kv_forward(be, a, h16 ? kvf : c->v4, c->v16, kcat, t_add, t_self, &a->av, &a->v, ehs, c, B,
                   S, L);
    }
    k22_attn_desc d = desc_of(a, B, S, L);
    if (h16)
        be->attention_fwd_x16(be->ctx, c->o4, c->lse, c->q16, c->k16, c->v16, &d);
    else
        be->attention_fwd(be->ctx, c->o4, c->lse, c->q4, c->k4, c->v4, &d);
    int64_t shape[4] = {B, a->heads, S, a->hd};
    int perm[4] = {0, 2, 1, 3};
    if (a->act16) { /* merged in t_self (free again), kept rounded: only to_out reads it */
        be->permute_fwd(be->ctx, t_self, c->o4, 4, shape, perm);
        be->act_fwd_y16(be->ctx, K22_ACT_NONE, c->ocat16, t_self, (int64_t)BSC);
    } else {
        be->permute_fwd(be->ctx, c->ocat, c->o4, 4, shape, perm);
    }
    k22_linear_forward_in(be, &a->o, tmp, c->ocat, c->ocat16, B * S); // tmp: (B, S, C)
    swap12(be, y, tmp, B, S, C, 0);
    be->add(be->ctx, y, y, x, (int64_t)BSC);
    k22_arena_reset(ar, top);
}

/* Gradients of one of K / V: dkv4 (B, NH, L+S, D) back to the added projection (into dehs) and
 * the self projection (into dtok). */
static void kv_backward(const k22_backend *be, const k22_unet_attn *a, k22_arena *ar, float *dehs,
                        float *dtok, const float *dkv4, const k22_linear *padd,
                        const k22_linear *pself, const float *ehs, const k22_unet_attn_cache *c,
                        int B, int S, int L)
{
    int C = a->C;
    size_t top = k22_arena_mark(ar);
    float *dcat = k22_arena_zeros(ar, (size_t)B * (L + S) * C);
    heads_split_bwd(be, a, dcat, dkv4, B, L + S);
    float *dadd = k22_arena_zeros(ar, (size_t)B * L * C),
          *dself = k22_arena_zeros(ar, (size_t)B * S * C);
    be->concat_bwd(be->ctx, dadd, dself, dcat, B, L, S, C);
    k22_linear_backward(be, padd, dehs, dadd, ehs, B * L);
    k22_linear_backward_in(be, pself, dtok, dself, c->tok, c->tok16, B * S);
    k22_arena_reset(ar, top);
}

/* Stacked: dk4 and dv4 (B, NH, L+S, D) split into the added projections' part, taken back to
 * dehs here, and the pixels' part, added into dheads' second and third thirds. */
static void qkv_backward(const k22_backend *be, const k22_unet_attn *a, k22_arena *ar, float *dehs,
                         float *dheads, const float *dk4, const float *dv4, const float *ehs, int B,
                         int S, int L)
{
    size_t BSC = (size_t)B * S * a->C, BLC = (size_t)B * L * a->C;
    const float *dkv[2] = {dk4, dv4};
    const k22_linear *padd[2] = {&a->ak, &a->av};
    for (int i = 0; i < 2; i++) {
        size_t top = k22_arena_mark(ar);
        float *da4 = k22_arena_zeros(ar, BLC), *dadd = k22_arena_zeros(ar, BLC);
        be->concat_bwd(be->ctx, da4, dheads + (size_t)(i + 1) * BSC, dkv[i], (int64_t)B * a->heads,
                       L, S, a->hd);
        heads_split_bwd(be, a, dadd, da4, B, L);
        k22_linear_backward(be, padd[i], dehs, dadd, ehs, B * L);
        k22_arena_reset(ar, top);
    }
}

void k22_unet_attn_backward(const k22_backend *be, const k22_unet_attn *a, k22_arena *ar,
                            float *dx, float *dehs, const float *dy, const float *ehs, int B,
                            int S, int L, const k22_unet_attn_cache *c)
{
    int C = a->C, T2 = L + S;
    size_t BSC = (size_t)B * S * C, BTC = (size_t)B * T2 * C, top = k22_arena_mark(ar);
    be->add_bwd(be->ctx, dx, NULL, dy, (int64_t)BSC); /* the residual */
    float *dtmp = k22_arena_zeros(ar, BSC);  // dtmp: (B, S, C) gradient of to_out's output
    swap12(be, dtmp, dy, B, S, C, 1);
    float *docat = k22_arena_zeros(ar, BSC);
    k22_linear_backward_in(be, &a->o, docat, dtmp, c->ocat, c->ocat16, B * S);
    float *do4 = k22_arena_zeros(ar, BSC);
    int64_t shape[4] = {B, a->heads, S, a->hd};
    int perm[4] = {0, 2, 1, 3};
    be->permute_bwd(be->ctx, do4, docat, 4, shape, perm);
    /* stacked: dq4 is the first third of the heads' gradients (3, B, NH, S, D) */
    float *dq4 = k22_arena_zeros(ar, a->stacked ? 3 * BSC : BSC), *dk4 = k22_arena_zeros(ar, BTC),
          *dv4 = k22_arena_zeros(ar, BTC);
    k22_attn_desc d = desc_of(a, B, S, L);
    if (a->act16)
        be->attention_bwd_x16(be->ctx, dq4, dk4, dv4, do4, c->q16, c->k16, c->v16, c->o4, c->lse,
                              &d);
    else
        be->attention_bwd(be->ctx, dq4, dk4, dv4, do4, c->q4, c->k4, c->v4, c->o4, c->lse, &d);
    float *dtok;
    if (a->stacked) {
        qkv_backward(be, a, ar, dehs, dq4, dk4, dv4, ehs, B, S, L);
        dtok = k22_arena_zeros(ar, BSC);
        float *dlin = k22_arena_zeros(ar, 3 * BSC); // dlin: (B, S, 3, NH, D)
        split3(be, a, dlin, dq4, B, S, 1);
        k22_linear_backward_in(be, &a->qkv, dtok, dlin, c->tok, c->tok16, B * S);
    } else {
        float *dq = k22_arena_zeros(ar, BSC);
        dtok = k22_arena_zeros(ar, BSC);
        heads_split_bwd(be, a, dq, dq4, B, S);
        k22_linear_backward_in(be, &a->q, dtok, dq, c->tok, c->tok16, B * S);
        kv_backward(be, a, ar, dehs, dtok, dk4, &a->ak, &a->k, ehs, c, B, S, L);
        kv_backward(be, a, ar, dehs, dtok, dv4, &a->av, &a->v, ehs, c, B, S, L);
    }
    float *dgn = k22_arena_zeros(ar, BSC); // dgn: (B, C, S)
    swap12(be, dgn, dtok, B, C, S, 1);
    k22_groupnorm_backward(be, &a->gn, dx, dgn, c->x, c->mean, c->rstd, B, S);
    k22_arena_reset(ar, top);
}
