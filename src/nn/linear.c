/* linear.c: parameter lookup by key, nn.Linear and LayerNorm over the op interface. */
#include "k22/nn.h"

#include <stdio.h>

float *k22_param_ptr(const k22_params *ps, float *base, const char *name)
{
    const k22_param *p = k22_params_find(ps, name);
    if (!p) K22_FATAL("parameter '%s' is not in the model's table", name);
    return base ? base + p->offset : NULL;
}

const char *k22_param_key(char *buf, size_t n, const char *name, const char *suffix)
{
    int len = snprintf(buf, n, "%s.%s", name, suffix);
    K22_REQUIRE(len > 0 && (size_t)len < n);
    return buf;
}

/* l over the weight w (out rows of n stacked linears) and bias b (or NULL); P NULL: shapes only. */
static void bind_at(k22_linear *l, const k22_param *w, const k22_param *b, int n, const float *P,
                    float *G)
{
    l->out = n * (int)w->shape[0];
    l->in = (int)w->shape[1];
    l->w = P ? P + w->offset : NULL;
    l->dw = G ? G + w->offset : NULL;
    l->b = b && P ? P + b->offset : NULL;
    l->db = b && G ? G + b->offset : NULL;
}

void k22_linear_bind(k22_linear *l, const k22_params *ps, const char *name, const float *P,
                     float *G)
{
    char k[256];
    const k22_param *w = k22_params_find(ps, k22_param_key(k, sizeof k, name, "weight"));
    if (!w || w->ndim != 2) K22_FATAL("linear '%s' has no 2-d weight in the table", name);
    bind_at(l, w, k22_params_find(ps, k22_param_key(k, sizeof k, name, "bias")), 1, P, G);
}

int k22_linear_bind_stack(k22_linear *l, const k22_params *ps, const char *const *names, int n,
                          const float *P, float *G)
{
    char k[256];
    const k22_param *w0 = NULL, *b0 = NULL;
    for (int i = 0; i < n; i++) {
        const k22_param *w = k22_params_find(ps, k22_param_key(k, sizeof k, names[i], "weight"));
        const k22_param *b = k22_params_find(ps, k22_param_key(k, sizeof k, names[i], "bias"));
        if (!w || w->ndim != 2) return 0;
        if (!i) w0 = w, b0 = b;
        /* same shape, each weight right after the one before, the biases likewise (or none) */
        int same = w->shape[0] == w0->shape[0] && w->shape[1] == w0->shape[1] && !b == !b0;
        if (!same || w->offset != w0->offset + (size_t)i * w0->numel) return 0;
        if (b && (b->numel != (size_t)w0->shape[0] ||
                  b->offset != b0->offset + (size_t)i * b0->numel))
            return 0;
    }
    if (!w0) return 0;
    bind_at(l, w0, b0, n, P, G);
    return 1;
}

void k22_linear_forward(const k22_backend *be, const k22_linear *l, float *y, const float *x,
                        int N)
{
    k22_linear_forward_in(be, l, y, x, NULL, N);
}

void k22_linear_backward(const k22_backend *be, const k22_linear *l, float *dx, const float *dy,
                         const float *x, int N)
{
    k22_linear_backward_in(be, l, dx, dy, x, NULL, N);
}

void k22_linear_forward_in(const k22_backend *be, const k22_linear *l, float *y, const float *x,
                           const uint16_t *x16, int N)
{
    if (x16)
        be->linear_fwd_x16(be->ctx, y, x16, l->w, l->b, N, l->in, l->out);
    else
        be->linear_fwd(be->ctx, y, x, l->w, l->b, N, l->in, l->out);
}

void k22_linear_backward_in(const k22_backend *be, const k22_linear *l, float *dx, const float *dy,
                            const float *x, const uint16_t *x16, int N)
{
    if (x16)
        be->linear_bwd_x16(be->ctx, dx, l->dw, l->db, dy, x16, l->w, N, l->in, l->out);
    else
        be->linear_bwd(be->ctx, dx, l->dw, l->db, dy, x, l->w, N, l->in, l->out);
}

void k22_layernorm_bind(k22_layernorm *ln, const k22_params *ps, const char *name, const float *P,
                        float *G, float eps)
{
    char k[256];
    const k22_param *g = k22_params_find(ps, k22_param_key(k, sizeof k, name, "weight"));
    const k22_param *b = k22_params_find(ps, k22_param_key(k, sizeof k, name, "bias"));
    if (!g || !b) K22_FATAL("layer norm '%s' lacks weight or bias in the table", name);
    ln->c = (int)g->numel;
    ln->eps = eps;
    ln->g = P + g->offset;
    ln->b = P + b->offset;
    ln->dg = G ? G + g->offset : NULL;
    ln->db = G ? G + b->offset : NULL;
}

void k22_layernorm_forward(const k22_backend *be, const k22_layernorm *ln, float *y, float *mean,
                           float *rstd, const float *x, int N)
{
    be->layer_norm_fwd(be->ctx, y, mean, rstd, x, ln->g, ln->b, N, ln->c, ln->eps);
}

void k22_layernorm_backward(const k22_backend *be, const k22_layernorm *ln, float *dx,
                            const float *dy, const float *x, const float *mean, const float *rstd,
                            int N)
{
    be->layer_norm_bwd(be->ctx, dx, ln->dg, ln->db, dy, x, mean, rstd, ln->g, N, ln->c);
}
