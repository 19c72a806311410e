/* params.c: the parameter table (upstream state-dict key, shape, offset into one flat buffer)
 * and k22_params_build, which hands each model kind to its params_<model>.c. */
#include "k22/params.h"

#include "k22/config.h"
#include "params_util.h"

#include <stdio.h>

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>


static size_t align_up(size_t at, size_t a)
{
    return (at + a - 1) / a * a;
}

void k22_params_init(k22_params *ps) { memset(ps, 0, sizeof *ps); }

void k22_params_free(k22_params *ps)
{
    if (!ps) return;
    for (int i = 0; i < ps->count; i++) free(ps->items[i].name);
    free(ps->items);
    free(ps->data);
    memset(ps, 0, sizeof *ps);
}

int k22_params_index(const k22_params *ps, const char *name)
{
    for (int i = 0; i < ps->count; i++)
        if (strcmp(ps->items[i].name, name) == 0) return i;
    return -1;
}

const k22_param *k22_params_find(const k22_params *ps, const char *name)
{
    int i = k22_params_index(ps, name);
    return i < 0 ? NULL : &ps->items[i];
}

int k22_params_add(k22_params *ps, const char *name, int trainable, int ndim, const int64_t *shape)
{
    K22_REQUIRE(ndim >= 0 && ndim <= K22_MAX_DIMS);
    K22_REQUIRE(ps->data == NULL);
    if (k22_params_index(ps, name) >= 0) K22_FATAL("parameter '%s' added twice", name);
    if (ps->count == ps->cap)
        ps->items = k22_xgrow(ps->items, &ps->cap, 64, sizeof *ps->items, "the parameter table");
    k22_param *p = &ps->items[ps->count];
    memset(p, 0, sizeof *p);
    p->name = k22_xstrdup(name);
    p->ndim = ndim;
    p->trainable = trainable;
    size_t numel = 1;
    for (int d = 0; d < ndim; d++) {
        K22_REQUIRE(shape[d] >= 0);
        p->shape[d] = shape[d];
        if (k22_mul_size(numel, (size_t)shape[d], &numel) != 0)
            K22_FATAL("parameter '%s' has too many elements", name);
    }
    p->numel = numel;
    size_t start = align_up(ps->total, K22_PARAM_ALIGN);
    p->offset = start;
    if (k22_add_size(start, numel, &ps->total) != 0)
        K22_FATAL("parameter buffer size overflows at '%s'", name);
    return ps->count++;
}

int k22_params_addv(k22_params *ps, const char *name, int trainable, int ndim, ...)
{
    int64_t shape[K22_MAX_DIMS] = {0};
    K22_REQUIRE(ndim >= 0 && ndim <= 4);
    va_list ap;
    va_start(ap, ndim);
    /* The header promises plain ints: reading int64_t here would be undefined for them. */
    for (int d = 0; d < ndim; d++) shape[d] = va_arg(ap, int);
    va_end(ap);
    return k22_params_add(ps, name, trainable, ndim, shape);
}

void k22_params_alloc(k22_params *ps)
{
    K22_REQUIRE(ps->data == NULL);
    ps->data = k22_xcalloc(ps->total ? ps->total : 1, sizeof(float));
}

size_t k22_params_numel(const k22_params *ps)
{
    size_t n = 0;
    for (int i = 0; i < ps->count; i++) n += ps->items[i].numel;
    return n;
}

size_t k22_params_table_order_total(const k22_params *ps)
{
    size_t at = 0;
    for (int i = 0; i < ps->count; i++) at = align_up(at, K22_PARAM_ALIGN) + ps->items[i].numel;
    return at;
}

void k22_params_from_table_order(const k22_params *ps, const void *old, float *buf)
{
    const char *src = old; /* bytes: a file mapping's floats need not be aligned */
    memset(buf, 0, ps->total * sizeof *buf); /* the padding, as a fresh buffer's */
    size_t at = 0;
    for (int i = 0; i < ps->count; i++) {
        const k22_param *p = &ps->items[i];
        at = align_up(at, K22_PARAM_ALIGN);
        memcpy(buf + p->offset, src + at * sizeof *buf, p->numel * sizeof *buf);
        at += p->numel;
    }
}

/* ---- builders' helpers (params_util.h) ---- */

void k22_pb_raw(k22_pb *b, const char *prefix, const char *name, int trainable, int ndim,
                int64_t d0, int64_t d1, int64_t d2, int64_t d3)
{
    if (b->too_big) return;
    int64_t shape[4] = {d0, d1, d2, d3};
    /* In double so a hostile config cannot overflow before the cap is checked. */
    double numel = 1;
    for (int d = 0; d < ndim; d++) numel *= (double)shape[d];
    if (numel > (double)K22_PARAMS_MAX_NUMEL ||
        (double)b->ps->total + numel > (double)K22_PARAMS_MAX_NUMEL ||
        b->ps->count >= K22_PARAMS_MAX_COUNT) {
        b->too_big = 1;
        return;
    }
    char full[256];
    if (prefix && prefix[0])
        snprintf(full, sizeof full, "%s.%s", prefix, name);
    else
        snprintf(full, sizeof full, "%s", name);
    k22_params_add(b->ps, full, trainable, ndim, shape);
}

void k22_pb_linear(k22_pb *b, const char *prefix, const char *name, int64_t out, int64_t in,
                   int bias)
{
    char n[160];
    snprintf(n, sizeof n, "%s.weight", name);
    k22_pb_raw(b, prefix, n, 1, 2, out, in, 0, 0);
    if (!bias) return;
    snprintf(n, sizeof n, "%s.bias", name);
    k22_pb_raw(b, prefix, n, 1, 1, out, 0, 0, 0);
}

void k22_pb_linear_stack(k22_pb *b, const char *prefix, const char *const *names, int n,
                         int64_t out, int64_t in, int bias)
{
    k22_params *ps = b->ps;
    int first = ps->count, per = bias ? 2 : 1;
    for (int i = 0; i < n && !b->too_big; i++) k22_pb_linear(b, prefix, names[i], out, in, bias);
    if (b->too_big) return;
    /* Same entries and sizes, placed anew: the weights, then the biases. The group ends no later
     * than it did, so the buffer only shrinks by the padding saved. */
    size_t at = ps->items[first].offset;
    for (int part = 0; part < per; part++) {
        at = align_up(at, K22_PARAM_ALIGN);
        for (int i = 0; i < n; i++) {
            k22_param *p = &ps->items[first + i * per + part];
            p->offset = align_up(at, K22_PARAM_STACK_ALIGN);
            at = p->offset + p->numel;
        }
    }
    K22_REQUIRE(at <= ps->total);
    ps->total = at;
}

void k22_pb_norm(k22_pb *b, const char *prefix, const char *name, int64_t c)
{
    char n[160];
    snprintf(n, sizeof n, "%s.weight", name);
    k22_pb_raw(b, prefix, n, 1, 1, c, 0, 0, 0);
    snprintf(n, sizeof n, "%s.bias", name);
    k22_pb_raw(b, prefix, n, 1, 1, c, 0, 0, 0);
}

void k22_pb_conv(k22_pb *b, const char *prefix, const char *name, int64_t out, int64_t in,
                 int64_t k)
{
    char n[160];
    snprintf(n, sizeof n, "%s.weight", name);
    k22_pb_raw(b, prefix, n, 1, 4, out, in, k, k);
    snprintf(n, sizeof n, "%s.bias", name);
    k22_pb_raw(b, prefix, n, 1, 1, out, 0, 0, 0);
}

/* Shared by both CLIP towers. */
/* One CLIPEncoderLayer: attention (k, v, q, out: the order the module registers them), MLP. */
void k22_pb_clip_layer(k22_pb *b, const char *p, int64_t h, int64_t inter)
{
    k22_pb_linear(b, p, "self_attn.k_proj", h, h, 1);
    k22_pb_linear(b, p, "self_attn.v_proj", h, h, 1);
    k22_pb_linear(b, p, "self_attn.q_proj", h, h, 1);
    k22_pb_linear(b, p, "self_attn.out_proj", h, h, 1);
    k22_pb_norm(b, p, "layer_norm1", h);
    k22_pb_linear(b, p, "mlp.fc1", inter, h, 1);
    k22_pb_linear(b, p, "mlp.fc2", h, inter, 1);
    k22_pb_norm(b, p, "layer_norm2", h);
}

k22_status k22_params_build(const k22_model_config *cfg, k22_params *out, k22_err *err)
{
    k22_params_init(out);
    k22_pb b = {out, 0};
    switch (cfg->kind) {
    case K22_MODEL_PRIOR: k22_params_build_prior(&cfg->u.prior, &b); break;
    case K22_MODEL_UNET: k22_params_build_unet(&cfg->u.unet, &b); break;
    case K22_MODEL_MOVQ: k22_params_build_movq(&cfg->u.movq, &b); break;
    case K22_MODEL_CLIP_TEXT: k22_params_build_clip_text(&cfg->u.clip_text, &b); break;
    case K22_MODEL_CLIP_VISION: k22_params_build_clip_vision(&cfg->u.clip_vision, &b); break;
    default: return k22_err_set(err, K22_ERR_ARG, "unknown model kind %d", (int)cfg->kind);
    }
    if (b.too_big) {
        k22_params_free(out);
        return k22_err_set(err, K22_ERR_NOMEM, "%s: the config asks for more than %zu parameters or %d tensors",
                           k22_model_class_name(cfg->kind), K22_PARAMS_MAX_NUMEL, K22_PARAMS_MAX_COUNT);
    }
    return K22_OK;
}
