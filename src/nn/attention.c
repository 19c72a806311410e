/* attention.c: multi-head self-attention (projections, head split by permute, the backend's
 * fused attention, head merge, output projection) forward and backward. */
#include "k22/nn.h"

#include <math.h>

/* (B, T, H, D) <-> (B, H, T, D): the same swap of axes 1 and 2 both ways. */
static const int k22_swap12[4] = {0, 2, 1, 3};
/* The stacked projections' output (B, T, 3, H, D) -> q, k, v one after the other
 * (3, B, H, T, D). */
static const int k22_split3[5] = {2, 0, 3, 1, 4};

k22_status k22_qkv_stack_read(int *on, k22_err *err)
{
    return k22_env_flag("K22_QKV_STACK", 1, "three GEMMs",
                        "q, k, v as one GEMM where their weights lie stacked, the default", on,
                        err);
}

int k22_qkv_stack_env(void)
{
    int on;
    k22_err err;
    if (k22_qkv_stack_read(&on, &err)) K22_FATAL("%s", err.msg);
    return on;
}

size_t k22_mha_proj_floats(int B, int T, int C, int act16, int stacked)
{
    size_t NC = (size_t)B * T * C;
    return stacked ? (act16 ? 2 : 1) * k22_arena_round(3 * NC) : k22_arena_round(NC);
}

static k22_attn_desc desc_for(const k22_mha *a, int B, int T, const k22_attn_desc *mask)
{
    k22_attn_desc d = {0};
    if (mask) d = *mask;
    d.B = B;
    d.NH = a->heads;
    d.TQ = d.TK = T;
    d.D = d.DV = a->head_dim;
    d.scale = 1.0f / sqrtf((float)a->head_dim);
    return d;
}

void k22_mha_forward(const k22_backend *be, const k22_mha *a, k22_arena *ar, float *y,
                     const float *x, const uint16_t *x16, int B, int T,
                     const k22_attn_desc *mask, k22_mha_cache *c)
{
    int H = a->heads, D = a->head_dim, C = H * D;
    size_t N = (size_t)B * T, NC = N * C;
    size_t top = k22_arena_mark(ar);
    k22_mha_cache tmp;
    if (!c) c = &tmp;
    int h16 = a->act16;
    if (a->stacked) { /* one after the other: the split's output */
        c->q = h16 ? NULL : k22_arena_floats(ar, 3 * NC); // q, k, v: (3, B, H, T, D)
        c->k = h16 ? NULL : c->q + NC;
        c->v = h16 ? NULL : c->q + 2 * NC;
        c->q16 = h16 ? k22_arena_halves(ar, 3 * NC) : NULL;
        c->k16 = h16 ? c->q16 + NC : NULL;
        c->v16 = h16 ? c->q16 + 2 * NC : NULL;
    } else {
        c->q = h16 ? NULL : k22_arena_floats(ar, NC); // q: (B, H, T, D)
        c->k = h16 ? NULL : k22_arena_floats(ar, NC); // k: (B, H, T, D)
        c->v = h16 ? NULL : k22_arena_floats(ar, NC); // v: (B, H, T, D)
        c->q16 = h16 ? k22_arena_halves(ar, NC) : NULL;
        c->k16 = h16 ? k22_arena_halves(ar, NC) : NULL;
        c->v16 = h16 ? k22_arena_halves(ar, NC) : NULL;
    }
    c->o = k22_arena_floats(ar, NC); // o: (B, H, T, D)
    c->lse = k22_arena_floats(ar, (size_t)B * H * T); // lse: (B, H, T)
    c->ocat = a->act16 ? NULL : k22_arena_floats(ar, NC); // ocat: (B, T, C)
    c->ocat16 = a->act16 ? k22_arena_halves(ar, NC) : NULL;
    size_t keep = k22_arena_mark(ar);
    const int64_t bthd[4] = {B, T, H, D}, bhtd[4] = {B, H, T, D};
    float *lin;
    if (a->stacked) {
        const int64_t bt3hd[5] = {B, T, 3, H, D};
        lin = k22_arena_floats(ar, 3 * NC); // lin: (B, T, 3, H, D) q, k, v side by side
        k22_linear_forward_in(be, &a->qkv, lin, x, x16, (int)N);
        if (h16) { /* split, then rounded: only the attention reads them */
            float *heads = k22_arena_floats(ar, 3 * NC); // heads: (3, B, H, T, D)
            be->permute_fwd(be->ctx, heads, lin, 5, bt3hd, k22_split3);
            be->act_fwd_y16(be->ctx, K22_ACT_NONE, c->q16, heads, (int64_t)(3 * NC));
        } else {
            be->permute_fwd(be->ctx, c->q, lin, 5, bt3hd, k22_split3);
        }
    } else {
        lin = k22_arena_floats(ar, NC); // lin: (B, T, H, D) one projection before the split
        const k22_linear *proj[3] = {&a->q, &a->k, &a->v};
        float *dst[3] = {c->q, c->k, c->v};
        uint16_t *dst16[3] = {c->q16, c->k16, c->v16};
        for (int i = 0; i < 3; i++) {
            k22_linear_forward_in(be, proj[i], lin, x, x16, (int)N);
            if (h16) { /* split in o (free until the attention), kept rounded: only it reads them */
                be->permute_fwd(be->ctx, c->o, lin, 4, bthd, k22_swap12);
                be->act_fwd_y16(be->ctx, K22_ACT_NONE, dst16[i], c->o, (int64_t)NC);
            } else {
                be->permute_fwd(be->ctx, dst[i], lin, 4, bthd, k22_swap12);
            }
        }
    }
    k22_attn_desc d = desc_for(a, B, T, mask);
    if (h16)
        be->attention_fwd_x16(be->ctx, c->o, c->lse, c->q16, c->k16, c->v16, &d);
    else
        be->attention_fwd(be->ctx, c->o, c->lse, c->q, c->k, c->v, &d);
    if (a->act16) { /* merged in lin (free again), kept rounded: only to_out reads it */
        be->permute_fwd(be->ctx, lin, c->o, 4, bhtd, k22_swap12);
        be->act_fwd_y16(be->ctx, K22_ACT_NONE, c->ocat16, lin, (int64_t)NC);
    } else {
        be->permute_fwd(be->ctx, c->ocat, c->o, 4, bhtd, k22_swap12);
    }
    k22_linear_forward_in(be, &a->o, y, c->ocat, c->ocat16, (int)N); // y: (B, T, C)
    k22_arena_reset(ar, c == &tmp ? top : keep);
}

void k22_mha_backward(const k22_backend *be, const k22_mha *a, k22_arena *ar, float *dx,
                      const float *dy, const float *x, const uint16_t *x16, int B, int T,
                      const k22_attn_desc *mask, const k22_mha_cache *c)
{
    int H = a->heads, D = a->head_dim, C = H * D;
    size_t N = (size_t)B * T, NC = N * C;
    size_t top = k22_arena_mark(ar);
    const int64_t bthd[4] = {B, T, H, D}, bhtd[4] = {B, H, T, D};
    float *docat = k22_arena_zeros(ar, NC); // docat: (B, T, C)
    k22_linear_backward_in(be, &a->o, docat, dy, c->ocat, c->ocat16, (int)N);
    float *dout = k22_arena_zeros(ar, NC); // dout: (B, H, T, D)
    be->permute_bwd(be->ctx, dout, docat, 4, bhtd, k22_swap12);
    float *dq, *dk, *dv; // (B, H, T, D) each; one after the other when stacked
    if (a->stacked) {
        dq = k22_arena_zeros(ar, 3 * NC);
        dk = dq + NC, dv = dq + 2 * NC;
    } else {
        dq = k22_arena_zeros(ar, NC), dk = k22_arena_zeros(ar, NC), dv = k22_arena_zeros(ar, NC);
    }
    k22_attn_desc d = desc_for(a, B, T, mask);
    if (a->act16)
        be->attention_bwd_x16(be->ctx, dq, dk, dv, dout, c->q16, c->k16, c->v16, c->o, c->lse, &d);
    else
        be->attention_bwd(be->ctx, dq, dk, dv, dout, c->q, c->k, c->v, c->o, c->lse, &d);
    if (a->stacked) { /* one GEMM per gradient over the three projections */
        const int64_t bt3hd[5] = {B, T, 3, H, D};
        float *dlin = k22_arena_zeros(ar, 3 * NC); // dlin: (B, T, 3, H, D)
        be->permute_bwd(be->ctx, dlin, dq, 5, bt3hd, k22_split3);
        k22_linear_backward_in(be, &a->qkv, dx, dlin, x, x16, (int)N);
        k22_arena_reset(ar, top);
        return;
    }
    float *dlin = k22_arena_floats(ar, NC); // dlin: (B, T, H, D)
    const k22_linear *proj[3] = {&a->q, &a->k, &a->v};
    const float *src[3] = {dq, dk, dv};
    for (int i = 0; i < 3; i++) {
        be->zero(be->ctx, dlin, NC * sizeof(float));
        be->permute_bwd(be->ctx, dlin, src[i], 4, bthd, k22_swap12);
        k22_linear_backward_in(be, proj[i], dx, dlin, x, x16, (int)N);
    }
    k22_arena_reset(ar, top);
}
