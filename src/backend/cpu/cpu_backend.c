/* cpu_backend.c: the CPU backend object: host memory entries and the two op tables, "cpu-ref"
 * (plain loops, the oracle) and "cpu" (OpenBLAS + OpenMP). */
#include <stdlib.h>
#include <string.h>

#include "cpu_ops.h"

/* *buf grown to at least n floats (old contents dropped). */
static float *cpu_grow(float **buf, size_t *have, size_t n, const char *what)
{
    if (n <= *have) return *buf;
    size_t bytes;
    if (k22_mul_size(n, sizeof(float), &bytes)) K22_FATAL("cpu %s of %zu floats overflows", what, n);
    free(*buf);
    *buf = k22_xmalloc(bytes);
    *have = n;
    return *buf;
}

float *k22_cpu_scratch(void *ctx, size_t n)
{
    k22_cpu_ctx *c = ctx;
    return cpu_grow(&c->scratch, &c->scratch_floats, n, "scratch");
}

float *k22_cpu_wide(void *ctx, size_t n)
{
    k22_cpu_ctx *c = ctx;
    return cpu_grow(&c->wide, &c->wide_floats, n, "16-bit activation copy");
}

static void *cpu_alloc(void *ctx, size_t bytes) { return k22_xcalloc(1, bytes); }
static void cpu_free(void *ctx, void *p) { free(p); }
static void cpu_copy(void *ctx, void *dst, const void *src, size_t bytes)
{
    if (bytes) memmove(dst, src, bytes);
}
static void cpu_zero(void *ctx, void *p, size_t bytes)
{
    if (bytes) memset(p, 0, bytes);
}
static void cpu_sync(void *ctx) {}

static void cpu_destroy(k22_backend *self)
{
    if (!self) return;
    k22_cpu_ctx *c = self->ctx;
    if (c) free(c->scratch), free(c->wide), free(c->prec_a), free(c->prec_b);
    free(c);
    free(self);
}

static void cpu_set_common(k22_backend *be)
{
    be->dev = K22_DEV_HOST;
    be->alloc = cpu_alloc;
    be->free = cpu_free;
    be->to_device = cpu_copy;
    be->to_host = cpu_copy;
    be->copy = cpu_copy;
    be->zero = cpu_zero;
    be->sync = cpu_sync;
    be->destroy = cpu_destroy;
    /* Pure data movement and tiny ops: one implementation serves both modes. */
    be->concat_fwd = k22_ref_concat_fwd;
    be->concat_bwd = k22_ref_concat_bwd;
    be->permute_fwd = k22_ref_permute_fwd;
    be->permute_bwd = k22_ref_permute_bwd;
    be->timestep_embed_fwd = k22_ref_timestep_embed_fwd;
    be->timestep_embed_bwd = k22_ref_timestep_embed_bwd;
}

static void cpu_set_ref(k22_backend *be)
{
    be->name = "cpu-ref";
    be->matmul = k22_ref_matmul;
    be->linear_fwd = k22_ref_linear_fwd;
    be->linear_bwd = k22_ref_linear_bwd;
    be->conv2d_fwd = k22_ref_conv2d_fwd;
    be->conv2d_bwd = k22_ref_conv2d_bwd;
    be->group_norm_fwd = k22_ref_group_norm_fwd;
    be->group_norm_bwd = k22_ref_group_norm_bwd;
    be->layer_norm_fwd = k22_ref_layer_norm_fwd;
    be->layer_norm_bwd = k22_ref_layer_norm_bwd;
    be->act_fwd = k22_ref_act_fwd;
    be->act_bwd = k22_ref_act_bwd;
    be->softmax_fwd = k22_ref_softmax_fwd;
    be->softmax_bwd = k22_ref_softmax_bwd;
    be->attention_fwd = k22_ref_attention_fwd;
    be->attention_bwd = k22_ref_attention_bwd;
    be->add = k22_ref_add;
    be->mul = k22_ref_mul;
    be->scale = k22_ref_scale;
    be->add_bwd = k22_ref_add_bwd;
    be->mul_bwd = k22_ref_mul_bwd;
    be->scale_bwd = k22_ref_scale_bwd;
    be->upsample2x_fwd = k22_ref_upsample2x_fwd;
    be->upsample2x_bwd = k22_ref_upsample2x_bwd;
    be->avgpool2x_fwd = k22_ref_avgpool2x_fwd;
    be->avgpool2x_bwd = k22_ref_avgpool2x_bwd;
    be->chan_affine_fwd = k22_ref_chan_affine_fwd;
    be->chan_affine_bwd = k22_ref_chan_affine_bwd;
    be->group_norm_act_fwd = k22_ref_group_norm_act_fwd;
    be->group_norm_act_bwd = k22_ref_group_norm_act_bwd;
    be->resize_nearest_fwd = k22_ref_resize_nearest_fwd;
    be->mse_fwd = k22_ref_mse_fwd;
    be->mse_bwd = k22_ref_mse_bwd;
    be->adamw_step = k22_ref_adamw_step;
    be->sumsq = k22_ref_sumsq;
}

static void cpu_set_precision(void *ctx, int precision)
{
    ((k22_cpu_ctx *)ctx)->precision = precision;
}

static void cpu_set_fast(k22_backend *be)
{
    be->name = "cpu";
    be->set_precision = cpu_set_precision; /* emulated: cpu-ref stays fp32 */
    be->matmul = k22_fast_matmul;
    be->linear_fwd = k22_fast_linear_fwd;
    be->linear_bwd = k22_fast_linear_bwd;
    be->conv2d_fwd = k22_fast_conv2d_fwd;
    be->conv2d_bwd = k22_fast_conv2d_bwd;
    be->group_norm_fwd = k22_fast_group_norm_fwd;
    be->group_norm_bwd = k22_fast_group_norm_bwd;
    be->layer_norm_fwd = k22_fast_layer_norm_fwd;
    be->layer_norm_bwd = k22_fast_layer_norm_bwd;
    be->act_fwd = k22_fast_act_fwd;
    be->act_bwd = k22_fast_act_bwd;
    be->softmax_fwd = k22_fast_softmax_fwd;
    be->softmax_bwd = k22_fast_softmax_bwd;
    be->attention_fwd = k22_fast_attention_fwd;
    be->attention_bwd = k22_fast_attention_bwd;
    be->add = k22_fast_add;
    be->mul = k22_fast_mul;
    be->scale = k22_fast_scale;
    be->add_bwd = k22_fast_add_bwd;
    be->mul_bwd = k22_fast_mul_bwd;
    be->scale_bwd = k22_fast_scale_bwd;
    be->upsample2x_fwd = k22_fast_upsample2x_fwd;
    be->upsample2x_bwd = k22_fast_upsample2x_bwd;
    be->avgpool2x_fwd = k22_fast_avgpool2x_fwd;
    be->avgpool2x_bwd = k22_fast_avgpool2x_bwd;
    be->chan_affine_fwd = k22_fast_chan_affine_fwd;
    be->chan_affine_bwd = k22_fast_chan_affine_bwd;
    be->group_norm_act_fwd = k22_fast_group_norm_act_fwd;
    be->group_norm_act_bwd = k22_fast_group_norm_act_bwd;
    be->group_norm_act_fwd_y16 = k22_fast_group_norm_act_fwd_y16;
    be->conv2d_fwd_x16 = k22_fast_conv2d_fwd_x16;
    be->conv2d_bwd_x16 = k22_fast_conv2d_bwd_x16;
    be->act_fwd_y16 = k22_fast_act_fwd_y16;
    be->layer_norm_fwd_y16 = k22_fast_layer_norm_fwd_y16;
    be->attention_fwd_x16 = k22_fast_attention_fwd_x16;
    be->attention_bwd_x16 = k22_fast_attention_bwd_x16;
    be->linear_fwd_x16 = k22_fast_linear_fwd_x16;
    be->linear_bwd_x16 = k22_fast_linear_bwd_x16;
    be->resize_nearest_fwd = k22_ref_resize_nearest_fwd;
    be->mse_fwd = k22_fast_mse_fwd;
    be->mse_bwd = k22_fast_mse_bwd;
    be->adamw_step = k22_fast_adamw_step;
    be->sumsq = k22_fast_sumsq;
}

/* Returns a new backend owned by the caller (k22_backend_free); dies only on out of memory. */
k22_backend *k22_backend_cpu_new(int reference)
{
    k22_backend *be = k22_xcalloc(1, sizeof *be);
    k22_cpu_ctx *c = k22_xcalloc(1, sizeof *c);
    c->reference = reference != 0;
    c->conv_col_floats = (size_t)8 << 20; /* 32 MiB */
    c->attn_chunk_floats = (size_t)16 << 20; /* 64 MiB of scores */
    be->ctx = c;
    cpu_set_common(be);
    if (reference)
        cpu_set_ref(be);
    else
        cpu_set_fast(be);
    return be;
}
