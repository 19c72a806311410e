/* transformer_block.c: the MLP and the pre-norm transformer block shared by CLIP's encoder
 * layer and diffusers' BasicTransformerBlock (self-attention only), forward and backward,
 * and the arena sizes they need. */
#include "k22/nn.h"

#include <stdio.h>
#include <string.h>

const k22_block_names k22_block_names_clip = {
    "layer_norm1", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
    "self_attn.out_proj", "layer_norm2", "mlp.fc1", "mlp.fc2"};
const k22_block_names k22_block_names_basic = {
    "norm1", "attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "norm3",
    "ff.net.0.proj", "ff.net.2"};

void k22_mlp_forward(const k22_backend *be, const k22_mlp *m, k22_arena *ar, float *y,
                     const float *x, const uint16_t *x16, int N, k22_mlp_cache *c)
{
    size_t top = k22_arena_mark(ar), NF = (size_t)N * m->fc1.out;
    k22_mlp_cache tmp;
    if (!c) c = &tmp;
    c->h = k22_arena_floats(ar, NF); // h: (N, F)
    k22_linear_forward_in(be, &m->fc1, c->h, x, x16, N);
    if (m->act16) { // g: (N, F)
        c->g = NULL;
        c->g16 = k22_arena_halves(ar, NF);
        be->act_fwd_y16(be->ctx, m->act, c->g16, c->h, (int64_t)NF);
    } else {
        c->g = k22_arena_floats(ar, NF);
        c->g16 = NULL;
        be->act_fwd(be->ctx, m->act, c->g, c->h, (int64_t)NF);
    }
    k22_linear_forward_in(be, &m->fc2, y, c->g, c->g16, N); // y: (N, C)
    if (c == &tmp) k22_arena_reset(ar, top);
}

void k22_mlp_backward(const k22_backend *be, const k22_mlp *m, k22_arena *ar, float *dx,
                      const float *dy, const float *x, const uint16_t *x16, int N,
                      const k22_mlp_cache *c)
{
    size_t top = k22_arena_mark(ar), NF = (size_t)N * m->fc1.out;
    float *dg = k22_arena_zeros(ar, NF); // dg: (N, F)
    k22_linear_backward_in(be, &m->fc2, dg, dy, c->g, c->g16, N);
    float *dh = k22_arena_zeros(ar, NF); // dh: (N, F)
    be->act_bwd(be->ctx, m->act, dh, dg, c->h, (int64_t)NF);
    k22_linear_backward_in(be, &m->fc1, dx, dh, x, x16, N);
    k22_arena_reset(ar, top);
}

static void bind_part(char *buf, size_t n, const char *prefix, const char *part)
{
    int len = snprintf(buf, n, "%s.%s", prefix, part);
    K22_REQUIRE(len > 0 && (size_t)len < n);
}

void k22_block_bind(k22_block *blk, const k22_params *ps, const char *prefix,
                    const k22_block_names *nm, const float *P, float *G, int heads, int act,
                    float eps)
{
    char k[256];
    bind_part(k, sizeof k, prefix, nm->ln1);
    k22_layernorm_bind(&blk->ln1, ps, k, P, G, eps);
    bind_part(k, sizeof k, prefix, nm->ln2);
    k22_layernorm_bind(&blk->ln2, ps, k, P, G, eps);
    const char *parts[4] = {nm->q, nm->k, nm->v, nm->o};
    k22_linear *lin[4] = {&blk->attn.q, &blk->attn.k, &blk->attn.v, &blk->attn.o};
    char qkv[3][256];
    for (int i = 0; i < 4; i++) {
        bind_part(k, sizeof k, prefix, parts[i]);
        k22_linear_bind(lin[i], ps, k, P, G);
        if (i < 3) memcpy(qkv[i], k, sizeof k);
    }
    const char *const stack[3] = {qkv[0], qkv[1], qkv[2]};
    blk->attn.stacked =
        k22_qkv_stack_env() && k22_linear_bind_stack(&blk->attn.qkv, ps, stack, 3, P, G);
    bind_part(k, sizeof k, prefix, nm->fc1);
    k22_linear_bind(&blk->mlp.fc1, ps, k, P, G);
    bind_part(k, sizeof k, prefix, nm->fc2);
    k22_linear_bind(&blk->mlp.fc2, ps, k, P, G);
    blk->mlp.act = act;
    k22_block_set_act16(blk, 0);
    int C = blk->attn.q.out;
    if (heads <= 0 || C % heads) K22_FATAL("block '%s': width %d not divisible by %d heads", prefix, C, heads);
    blk->attn.heads = heads;
    blk->attn.head_dim = C / heads;
}

void k22_block_set_act16(k22_block *blk, int on)
{
    blk->act16 = blk->attn.act16 = blk->mlp.act16 = on != 0;
}

/* A layer norm's output in the cache: floats, or 16 bits with act16 (*y NULL then). */
static void block_norm(const k22_backend *be, const k22_block *blk, const k22_layernorm *ln,
                       k22_arena *ar, float **y, uint16_t **y16, float *mean, float *rstd,
                       const float *x, int N)
{
    size_t NC = (size_t)N * ln->c;
    if (blk->act16) {
        *y = NULL;
        *y16 = k22_arena_halves(ar, NC);
        be->layer_norm_fwd_y16(be->ctx, *y16, mean, rstd, x, ln->g, ln->b, N, ln->c, ln->eps);
    } else {
        *y = k22_arena_floats(ar, NC);
        *y16 = NULL;
        k22_layernorm_forward(be, ln, *y, mean, rstd, x, N);
    }
}

void k22_block_forward(const k22_backend *be, const k22_block *blk, k22_arena *ar, float *y,
                       const float *x, int B, int T, const k22_attn_desc *mask,
                       k22_block_cache *c)
{
    int N = B * T, C = blk->ln1.c;
    size_t NC = (size_t)N * C, top = k22_arena_mark(ar);
    k22_block_cache tmp;
    int keep = c != NULL;
    if (!c) c = &tmp;
    c->x = x;
    c->mean1 = k22_arena_floats(ar, (size_t)N); // mean1: (B, T)
    c->rstd1 = k22_arena_floats(ar, (size_t)N); // rstd1: (B, T)
    block_norm(be, blk, &blk->ln1, ar, &c->ln1, &c->ln1_16, c->mean1, c->rstd1, x, N); // (B, T, C)
    k22_mha_forward(be, &blk->attn, ar, y, c->ln1, c->ln1_16, B, T, mask, keep ? &c->attn : NULL);
    c->x1 = k22_arena_floats(ar, NC); // x1: (B, T, C)
    be->add(be->ctx, c->x1, x, y, (int64_t)NC);
    c->mean2 = k22_arena_floats(ar, (size_t)N);
    c->rstd2 = k22_arena_floats(ar, (size_t)N);
    block_norm(be, blk, &blk->ln2, ar, &c->ln2, &c->ln2_16, c->mean2, c->rstd2, c->x1, N);
    k22_mlp_forward(be, &blk->mlp, ar, y, c->ln2, c->ln2_16, N, keep ? &c->mlp : NULL);
    be->add(be->ctx, y, c->x1, y, (int64_t)NC); // y: (B, T, C)
    if (!keep) k22_arena_reset(ar, top);
}

void k22_block_backward(const k22_backend *be, const k22_block *blk, k22_arena *ar, float *dx,
                        const float *dy, int B, int T, const k22_attn_desc *mask,
                        const k22_block_cache *c)
{
    int N = B * T, C = blk->ln1.c;
    size_t NC = (size_t)N * C, top = k22_arena_mark(ar);
    float *dx1 = k22_arena_zeros(ar, NC); // dx1: (B, T, C) gradient at the residual x1
    be->add_bwd(be->ctx, dx1, NULL, dy, (int64_t)NC);
    float *dln = k22_arena_zeros(ar, NC); // dln: (B, T, C), LN2's then LN1's output gradient
    k22_mlp_backward(be, &blk->mlp, ar, dln, dy, c->ln2, c->ln2_16, N, &c->mlp);
    k22_layernorm_backward(be, &blk->ln2, dx1, dln, c->x1, c->mean2, c->rstd2, N);
    be->add_bwd(be->ctx, dx, NULL, dx1, (int64_t)NC);
    be->zero(be->ctx, dln, NC * sizeof(float));
    k22_mha_backward(be, &blk->attn, ar, dln, dx1, c->ln1, c->ln1_16, B, T, mask, &c->attn);
    k22_layernorm_backward(be, &blk->ln1, dx, dln, c->x, c->mean1, c->rstd1, N);
    k22_arena_reset(ar, top);
}

size_t k22_block_cache_floats(int B, int T, int C, int F, int H, int act16, int stacked)
{
    size_t N = (size_t)B * T, NC = k22_arena_round(N * C), n = k22_arena_round(N), NF = N * F;
    size_t g = act16 ? k22_arena_round_halves(NF) : k22_arena_round(NF);
    size_t h = act16 ? k22_arena_round_halves(N * C) : NC; // ln1, ln2, (q, k, v,) ocat
    size_t h3 = act16 ? k22_arena_round_halves(3 * N * C) : k22_arena_round(3 * N * C);
    size_t qkv = stacked ? h3 : 3 * h; // one allocation when stacked
    return 2 * NC + 3 * h + qkv + 4 * n + k22_arena_round(N * H) + k22_arena_round(NF) + g;
}

size_t k22_block_nograd_floats(int B, int T, int C, int F, int H, int act16, int stacked)
{
    return k22_block_cache_floats(B, T, C, F, H, act16, stacked) +
           k22_mha_proj_floats(B, T, C, act16, stacked);
}

size_t k22_block_bwd_floats(int B, int T, int C, int F, int H, int stacked)
{
    (void)H;
    size_t N = (size_t)B * T, NC = k22_arena_round(N * C), NF = k22_arena_round(N * F);
    /* attention: docat, dout, then dq, dk, dv and the projections' gradient (3 NC stacked) */
    size_t mlp = 2 * NF, attn = stacked ? 2 * NC + 2 * k22_arena_round(3 * N * C) : 6 * NC;
    return 2 * NC + (mlp > attn ? mlp : attn);
}
