/* params_util.h (private to src/model/params*.c): adders for the layer shapes the five models
 * repeat, so each params_<model>.c reads like the module tree it mirrors. Every name is
 * "<prefix>.<part>.weight" / ".bias" in the upstream state-dict spelling.
 *
 * Sizes come from config.json (outside input), so the adders refuse, rather than die on, a
 * table past the caps below: they set too_big and add nothing more; builders stop their loops
 * when it is set and k22_params_build turns it into an error. */
#ifndef K22_MODEL_PARAMS_UTIL_H
#define K22_MODEL_PARAMS_UTIL_H

#include "k22/config.h"
#include "k22/params.h"

#define K22_PARAMS_MAX_NUMEL ((size_t)1 << 35) /* 128 GiB of f32 over the whole model */
#define K22_PARAMS_MAX_COUNT 20000 /* tensors; the largest real model has 776, configs allow ~8200 */

typedef struct {
    k22_params *ps;
    int too_big;
} k22_pb;

/* A raw tensor "<prefix>.<name>" (or "<name>" when prefix is empty) of ndim <= 4 dims. */
void k22_pb_raw(k22_pb *b, const char *prefix, const char *name, int trainable, int ndim,
                int64_t d0, int64_t d1, int64_t d2, int64_t d3);
/* nn.Linear(in, out): weight (out, in), then bias (out) when bias is set. */
void k22_pb_linear(k22_pb *b, const char *prefix, const char *name, int64_t out, int64_t in,
                   int bias);
/* n nn.Linear(in, out) "<name_i>" that read the same input: in the table each one's weight then
 * bias in turn (the upstream order), in the buffer the n weights back to back, then the n biases,
 * so that one GEMM runs them as a Linear(in, n * out) (k22_linear_bind_stack: the attention's
 * q, k, v). Inside the group entries start K22_PARAM_STACK_ALIGN-aligned, so that sizes of a
 * multiple of it leave no gap; the group and its biases start K22_PARAM_ALIGN-aligned. */
#define K22_PARAM_STACK_ALIGN 8 /* 32 bytes: 16-byte aligned as floats and as 16-bit values */
void k22_pb_linear_stack(k22_pb *b, const char *prefix, const char *const *names, int n,
                         int64_t out, int64_t in, int bias);
/* LayerNorm / GroupNorm affine: weight (c), bias (c). */
void k22_pb_norm(k22_pb *b, const char *prefix, const char *name, int64_t c);
/* nn.Conv2d(in, out, k) with bias: weight (out, in, k, k), bias (out). */
void k22_pb_conv(k22_pb *b, const char *prefix, const char *name, int64_t out, int64_t in,
                 int64_t k);

/* One CLIPEncoderLayer of width h and MLP width inter under prefix p. */
void k22_pb_clip_layer(k22_pb *b, const char *p, int64_t h, int64_t inter);

/* The per-model builders (params.c dispatches on cfg->kind). */
void k22_params_build_prior(const k22_prior_config *c, k22_pb *b);
void k22_params_build_unet(const k22_unet_config *c, k22_pb *b);
void k22_params_build_movq(const k22_movq_config *c, k22_pb *b);
void k22_params_build_clip_text(const k22_clip_text_config *c, k22_pb *b);
void k22_params_build_clip_vision(const k22_clip_vision_config *c, k22_pb *b);

#endif
