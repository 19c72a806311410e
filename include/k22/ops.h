/* ops.h: the op interface every model is written against (DESIGN.md 2.1).
 *
 * A backend is a table of function pointers plus an opaque context. Pointers are host memory
 * for the CPU backend and device memory for CUDA. All tensors are f32, contiguous, row-major;
 * shapes are given in comments as (dims) and as explicit int arguments.
 *
 * Conventions every backend keeps (tests/ops checks them):
 *  - Forward ops overwrite their outputs. Outputs never alias inputs unless the op says so.
 *  - Backward ops ACCUMULATE (+=) into every gradient they produce, so residual branches and
 *    gradient accumulation across micro-batches need no extra adds; callers zero gradients
 *    once. A NULL gradient pointer means "not needed" and is skipped.
 *  - Ops are asynchronous on the backend's stream; the host sees results only after
 *    k22_backend.to_host (or sync).
 *  - A NULL entry means the backend lacks the op; k22_ops_* wrappers in backend.c then fall back
 *    to the CPU reference when the memory is host memory, and die otherwise.
 */
#ifndef K22_OPS_H
#define K22_OPS_H

#include "k22/tensor.h"

/* The most dims a permute takes: the stacked q, k, v split (B, T, 3, H, D) -> (3, B, H, T, D). */
#define K22_PERMUTE_DIMS 5

/* conv2d geometry: input (B, C, H, W), weight (O, C, KH, KW), output (B, O, OH, OW) with
 * OH = (H + PT + PB - KH) / SH + 1, OW = (W + PL + PR - KW) / SW + 1. Padding may be asymmetric
 * (diffusers pads (0,1,0,1) before some stride-2 convs). Groups and dilation are 1. */
typedef struct {
    int B, C, H, W;
    int O, KH, KW;
    int SH, SW;
    int PT, PB, PL, PR; /* padding top, bottom, left, right */
} k22_conv2d_desc;
int k22_conv2d_out_h(const k22_conv2d_desc *d);
int k22_conv2d_out_w(const k22_conv2d_desc *d);

/* Scaled-dot-product attention geometry.
 * q: (B, NH, TQ, D), k: (B, NH, TK, D), v: (B, NH, TK, DV), out: (B, NH, TQ, DV),
 * lse: (B, NH, TQ) log-sum-exp of the masked, scaled logits per query row (saved for backward).
 * logits[b,h,i,j] = scale * q.k + mask[b*mask_bstride + i*TK + j] (when mask != NULL; a
 * mask_bstride of 0 broadcasts one (TQ, TK) mask over the batch; heads always share it),
 * minus infinity where causal && j > i, and minus infinity where key_keep != NULL &&
 * key_keep[b*TK + j] == 0 (padding). A row whose every key is excluded gives out = 0 and
 * lse = -inf, and no gradient. */
typedef struct {
    int B, NH, TQ, TK, D, DV;
    float scale;
    const float *mask;     /* additive, (B or 1, TQ, TK), may be NULL */
    int64_t mask_bstride;  /* TQ*TK, or 0 to broadcast */
    int causal;
    const uint8_t *key_keep; /* (B, TK), 1 = attend, 0 = padding; may be NULL */
} k22_attn_desc;

/* AdamW hyper-parameters for one step, torch.optim.AdamW semantics (single-tensor path):
 *   g = g * grad_scale (one fp32 rounding: what clip_grad_norm_'s in-place multiply leaves in
 *       g; the clip coefficient is applied here instead of in a pass of its own; g in memory is
 *       not changed; 1 without clipping, since x * 1 is x exactly);
 *   p *= 1 - lr*wd;  m = lerp(m, g, 1-b1);  v = b2*v + (1-b2)*g*g;
 *   bc1 = 1 - b1^step;  bc2 = 1 - b2^step;
 *   p -= (lr/bc1) * m / (sqrt(v)/sqrt(bc2) + eps)
 * step counts from 1. Hyper-parameters are doubles, as torch's Python floats are: the scalars
 * (1 - lr*wd, 1 - b1, the bias corrections) are formed in double on the host, then rounded. */
typedef struct {
    double lr, beta1, beta2, eps, weight_decay;
    int64_t step;
    float grad_scale; /* set it: 0 zeroes the gradients, as torch's multiply by 0 would */
} k22_adamw_hparams;

/* Compute precision of the GEMM-class ops: matmul, linear, conv2d and attention, forward and
 * backward (--mixed_precision). K22_PREC_FP32 computes in fp32. Under K22_PREC_BF16 and
 * K22_PREC_FP16 every GEMM operand (weights, activations, gradients, attention probabilities)
 * is rounded to that type (to nearest even; fp16 overflows to inf past 65504, which the fp16
 * loss scaler then sees) and the products are accumulated and returned in fp32, which is what
 * a bf16/fp16 GEMM with fp32 output does on tensor cores; bias, alpha and beta stay fp32.
 * One exception: conv2d on the CUDA backend's cuDNN path (k22_backend_conv_impl) also rounds
 * its result once to that type, as torch autocast does (cuDNN's legacy API has no 16-bit input
 * with fp32 output): y before the fp32 bias is added, and the dx and dw contributions before
 * they are accumulated in fp32; the im2col path and the cpu backend return the fp32 sums.
 * Every other op, the weights and the optimizer state stay fp32. The cpu backend emulates the
 * rounding (for checking a run's numerics, not for speed); cpu-ref computes in fp32 only. */
typedef enum { K22_PREC_FP32 = 0, K22_PREC_BF16, K22_PREC_FP16, K22_PREC_COUNT } k22_precision;

typedef struct k22_backend k22_backend;
struct k22_backend {
    const char *name; /* "cpu-ref", "cpu", "cuda" */
    k22_device dev;
    void *ctx;

    /* ---- memory ---- */
    void *(*alloc)(void *ctx, size_t bytes); /* dies on failure; zero-filled */
    void (*free)(void *ctx, void *p);
    void (*to_device)(void *ctx, void *dst, const void *host_src, size_t bytes);
    void (*to_host)(void *ctx, void *host_dst, const void *src, size_t bytes); /* synchronizes */
    void (*copy)(void *ctx, void *dst, const void *src, size_t bytes);        /* same device */
    void (*zero)(void *ctx, void *p, size_t bytes);
    void (*sync)(void *ctx);
    void (*destroy)(k22_backend *self);
    /* The GEMM precision of the ops that follow (k22_precision); NULL: fp32 only. Set through
     * k22_backend_set_precision, which also records it in `precision`. */
    void (*set_precision)(void *ctx, int precision);
    int precision;
    /* ---- the parameter buffer (optional: NULL where a backend keeps nothing per weight) ----
     * params_register: the n floats at p (backend memory) are the model's weights, which the
     * GEMM-class ops read as operands; p NULL forgets them (so does freeing p). The CUDA backend
     * keeps a 16-bit copy of them under bf16/fp16 (K22_CUDA_WEIGHT_SHADOW). It sees the writes
     * made through its own entries (adamw_step keeps the copy current; to_device, copy, zero,
     * add, mul and scale make it stale); params_changed must follow any other write into them
     * (a collective such as NCCL's all-gather of the weights) before the next op reads them.
     * Call them through k22_backend_params_register / _changed, which skip NULL entries. */
    void (*params_register)(void *ctx, float *p, int64_t n);
    void (*params_changed)(void *ctx);

    /* ---- matmul ----
     * For each b < batch: C_b = alpha * op(A_b) @ op(B_b) + beta * C_b, with op(A_b) (M, K),
     * op(B_b) (K, N), C_b (M, N); A_b = A + b*sA and so on. A_b is stored (M, K), or (K, M) when
     * ta; B_b is stored (K, N), or (N, K) when tb. beta = 0 ignores C's old contents (NaN too).
     * This one entry is its own backward: dA = dC @ B^T, dB = A^T @ dC with beta = 1. */
    void (*matmul)(void *ctx, int ta, int tb, int M, int N, int K, float alpha, const float *A,
                   int64_t sA, const float *Bm, int64_t sB, float beta, float *C, int64_t sC,
                   int batch);

    /* ---- linear (torch nn.Linear layout) ----
     * x: (N, I), w: (O, I), b: (O) or NULL, y: (N, O); y = x w^T + b. */
    void (*linear_fwd)(void *ctx, float *y, const float *x, const float *w, const float *b, int N,
                       int I, int O);
    void (*linear_bwd)(void *ctx, float *dx, float *dw, float *db, const float *dy, const float *x,
                       const float *w, int N, int I, int O);
    /* The same with x given as 16-bit values (x16) of the GEMM precision in force, bf16 or fp16
     * (act_fwd_y16's output): the results are those of linear_fwd / linear_bwd on x16 widened to
     * float, bit for bit. Only under bf16/fp16; NULL where a backend has no such path (cpu-ref). */
    void (*linear_fwd_x16)(void *ctx, float *y, const uint16_t *x16, const float *w, const float *b,
                           int N, int I, int O);
    void (*linear_bwd_x16)(void *ctx, float *dx, float *dw, float *db, const float *dy,
                           const uint16_t *x16, const float *w, int N, int I, int O);

    /* ---- conv2d ---- x: (B,C,H,W), w: (O,C,KH,KW), bias: (O) or NULL, y: (B,O,OH,OW). */
    void (*conv2d_fwd)(void *ctx, float *y, const float *x, const float *w, const float *bias,
                       const k22_conv2d_desc *d);
    void (*conv2d_bwd)(void *ctx, float *dx, float *dw, float *dbias, const float *dy,
                       const float *x, const float *w, const k22_conv2d_desc *d);
    /* The same with x given as 16-bit values (x16) of the GEMM precision in force, bf16 or fp16
     * (group_norm_act_fwd_y16's output): the results are those of conv2d_fwd / conv2d_bwd on x16
     * widened to float, bit for bit (the GEMM rounds its operands there anyway). Only under
     * bf16/fp16; NULL where a backend has no such path (cpu-ref). Call it through the model's
     * k22_backend_act16 check. */
    void (*conv2d_fwd_x16)(void *ctx, float *y, const uint16_t *x16, const float *w,
                           const float *bias, const k22_conv2d_desc *d);
    void (*conv2d_bwd_x16)(void *ctx, float *dx, float *dw, float *dbias, const float *dy,
                           const uint16_t *x16, const float *w, const k22_conv2d_desc *d);

    /* ---- group norm ---- x, y: (B, C, S) with S = spatial size; G groups (C % G == 0);
     * gamma, beta: (C) or NULL (no affine). mean, rstd: (B, G) saved for backward.
     * Variance is biased (divide by count), as torch. */
    void (*group_norm_fwd)(void *ctx, float *y, float *mean, float *rstd, const float *x,
                           const float *gamma, const float *beta, int B, int C, int S, int G,
                           float eps);
    void (*group_norm_bwd)(void *ctx, float *dx, float *dgamma, float *dbeta, const float *dy,
                           const float *x, const float *mean, const float *rstd,
                           const float *gamma, int B, int C, int S, int G);

    /* ---- layer norm over the last dim ---- x, y: (N, C); gamma, beta: (C) or NULL;
     * mean, rstd: (N). */
    void (*layer_norm_fwd)(void *ctx, float *y, float *mean, float *rstd, const float *x,
                           const float *gamma, const float *beta, int N, int C, float eps);
    /* layer_norm_fwd with y stored as 16-bit values (y16) of the GEMM precision in force, bf16 or
     * fp16, each layer_norm_fwd's float rounded to nearest even: an output read only by linears
     * (linear_fwd_x16 / linear_bwd_x16: a transformer block's q/k/v and fc1 inputs), which would
     * round it there anyway. Only under bf16/fp16; NULL where absent. */
    void (*layer_norm_fwd_y16)(void *ctx, uint16_t *y16, float *mean, float *rstd, const float *x,
                               const float *gamma, const float *beta, int N, int C, float eps);
    void (*layer_norm_bwd)(void *ctx, float *dx, float *dgamma, float *dbeta, const float *dy,
                           const float *x, const float *mean, const float *rstd,
                           const float *gamma, int N, int C);

    /* ---- activations, elementwise over n values; y may alias x in forward ----
     * act: one of k22_act. Backward takes the forward input x. */
    void (*act_fwd)(void *ctx, int act, float *y, const float *x, int64_t n);
    void (*act_bwd)(void *ctx, int act, float *dx, const float *dy, const float *x, int64_t n);
    /* act_fwd with y stored as 16-bit values of the GEMM precision in force (bf16 or fp16), each
     * act_fwd's float rounded to nearest even: an output read only by a linear (linear_fwd_x16 /
     * linear_bwd_x16; the MLP's hidden activation). act may be K22_ACT_NONE here: y16 is x
     * rounded (a float tensor only linears read, stored once as their 16-bit operand: the UNet
     * attention's tokens). Only under bf16/fp16; NULL where absent. */
    void (*act_fwd_y16)(void *ctx, int act, uint16_t *y16, const float *x, int64_t n);

    /* ---- softmax over the last dim ---- x, y: (rows, cols); backward uses y. */
    void (*softmax_fwd)(void *ctx, float *y, const float *x, int64_t rows, int cols);
    void (*softmax_bwd)(void *ctx, float *dx, const float *dy, const float *y, int64_t rows,
                        int cols);

    /* ---- attention ---- see k22_attn_desc. */
    void (*attention_fwd)(void *ctx, float *out, float *lse, const float *q, const float *k,
                          const float *v, const k22_attn_desc *d);
    void (*attention_bwd)(void *ctx, float *dq, float *dk, float *dv, const float *dout,
                          const float *q, const float *k, const float *v, const float *out,
                          const float *lse, const k22_attn_desc *d);
    /* attention_fwd / attention_bwd with q, k and v given as 16-bit values of the GEMM precision
     * in force (bf16 or fp16; a permute's output rounded once by act_fwd_y16): the results are
     * those of attention_fwd / attention_bwd on q16, k16, v16 widened, which round exactly these
     * operands anyway. Only under bf16/fp16; NULL where absent. */
    void (*attention_fwd_x16)(void *ctx, float *out, float *lse, const uint16_t *q16,
                              const uint16_t *k16, const uint16_t *v16, const k22_attn_desc *d);
    void (*attention_bwd_x16)(void *ctx, float *dq, float *dk, float *dv, const float *dout,
                              const uint16_t *q16, const uint16_t *k16, const uint16_t *v16,
                              const float *out, const float *lse, const k22_attn_desc *d);

    /* ---- elementwise binary, n values; y may alias a or b ----
     * y = a + b, y = a * b, y = s * a. Broadcast add of a per-row vector: see add_rows. */
    void (*add)(void *ctx, float *y, const float *a, const float *b, int64_t n);
    void (*mul)(void *ctx, float *y, const float *a, const float *b, int64_t n);
    void (*scale)(void *ctx, float *y, const float *a, float s, int64_t n);
    /* da += dy, db += dy (either may be NULL). */
    void (*add_bwd)(void *ctx, float *da, float *db, const float *dy, int64_t n);
    /* da += dy*b, db += dy*a. */
    void (*mul_bwd)(void *ctx, float *da, float *db, const float *dy, const float *a,
                    const float *b, int64_t n);
    /* da += s*dy. */
    void (*scale_bwd)(void *ctx, float *da, const float *dy, float s, int64_t n);

    /* ---- concat along one axis ----
     * Views: a (outer, na, inner), b (outer, nb, inner), y (outer, na+nb, inner).
     * Backward splits dy and accumulates into da, db. Split is this backward's forward. */
    void (*concat_fwd)(void *ctx, float *y, const float *a, const float *b, int64_t outer,
                       int64_t na, int64_t nb, int64_t inner);
    void (*concat_bwd)(void *ctx, float *da, float *db, const float *dy, int64_t outer,
                       int64_t na, int64_t nb, int64_t inner);

    /* ---- permute of a tensor of ndim <= K22_PERMUTE_DIMS ----
     * x has shape in_shape[0..ndim); y[perm-indexed] so that y's dim i is x's dim perm[i].
     * Backward: dx += inverse permutation of dy. */
    void (*permute_fwd)(void *ctx, float *y, const float *x, int ndim, const int64_t *in_shape,
                        const int *perm);
    void (*permute_bwd)(void *ctx, float *dx, const float *dy, int ndim, const int64_t *in_shape,
                        const int *perm);

    /* ---- nearest 2x upsample ---- x: (B, C, H, W) -> y: (B, C, 2H, 2W). */
    void (*upsample2x_fwd)(void *ctx, float *y, const float *x, int B, int C, int H, int W);
    void (*upsample2x_bwd)(void *ctx, float *dx, const float *dy, int B, int C, int H, int W);

    /* ---- 2x2 average pooling, stride 2 (F.avg_pool2d(x, 2, 2)) ----
     * x: (B, C, H, W) with H, W even -> y: (B, C, H/2, W/2). */
    void (*avgpool2x_fwd)(void *ctx, float *y, const float *x, int B, int C, int H, int W);
    void (*avgpool2x_bwd)(void *ctx, float *dx, const float *dy, int B, int C, int H, int W);

    /* ---- per-(sample, channel) affine over positions ----
     * x, y: (B, C, S); scale, shift: (B, C) or NULL (NULL scale means a factor of 1, NULL shift
     * means 0). y = x * (scale + scale_offset) + shift: scale_offset 1 gives diffusers'
     * scale_shift time conditioning x * (1 + scale) + shift, 0 a plain broadcast multiply; shift
     * alone is a broadcast add of a (B, C) vector. y may alias x.
     * Backward: dx += dy * (scale + scale_offset); dscale += sum_s dy * x; dshift += sum_s dy. */
    void (*chan_affine_fwd)(void *ctx, float *y, const float *x, const float *scale,
                            const float *shift, float scale_offset, int B, int C, int64_t S);
    void (*chan_affine_bwd)(void *ctx, float *dx, float *dscale, float *dshift, const float *dy,
                            const float *x, const float *scale, float scale_offset, int B, int C,
                            int64_t S);

    /* ---- fused group norm + per-(sample, channel) affine + activation ----
     * x, y: (B, C, S); G groups (C % G == 0); gamma, beta: (C) or NULL as in group_norm;
     * scale, shift: rows of C values, row b at b*ss_ld (ss_ld >= C; C for a dense (B, C)), or
     * NULL as in chan_affine; act: K22_ACT_SILU or K22_ACT_NONE.
     *   y = act(group_norm(x; gamma, beta) * (scale + scale_offset) + shift)
     * Forward saves only mean, rstd: (B, G). Its y is bit-identical to this backend's
     * group_norm_fwd, then chan_affine_fwd, then act_fwd (same arithmetic in the same order, each
     * intermediate rounded to float as those ops store it), so a model keeps its figures; y may
     * not alias x. tests/ops/test_ops_norm_act.c checks both.
     * Backward recomputes the normalized and modulated values from x, mean, rstd (no stored
     * intermediate) and ACCUMULATES into dx (B, C, S), dgamma, dbeta (C), dscale, dshift (rows
     * at ss_ld as scale, shift); each may be NULL (skipped). It takes the forward's gamma, beta,
     * scale, shift and scale_offset. */
    void (*group_norm_act_fwd)(void *ctx, int act, float *y, float *mean, float *rstd,
                               const float *x, const float *gamma, const float *beta,
                               const float *scale, const float *shift, int64_t ss_ld,
                               float scale_offset, int B, int C, int S, int G, float eps);
    void (*group_norm_act_bwd)(void *ctx, int act, float *dx, float *dgamma, float *dbeta,
                               float *dscale, float *dshift, const float *dy, const float *x,
                               const float *mean, const float *rstd, const float *gamma,
                               const float *beta, const float *scale, const float *shift,
                               int64_t ss_ld, float scale_offset, int B, int C, int S, int G);
    /* group_norm_act_fwd with y stored as 16-bit values (y16) of the GEMM precision in force,
     * bf16 or fp16, each group_norm_act_fwd's float rounded to nearest even: an output read only
     * by a convolution (conv2d_fwd_x16 / conv2d_bwd_x16), which would round it there anyway, so
     * half the bytes are stored and the convolution's rounding pass goes. Only under bf16/fp16;
     * NULL where a backend has no such path. */
    void (*group_norm_act_fwd_y16)(void *ctx, int act, uint16_t *y16, float *mean, float *rstd,
                                   const float *x, const float *gamma, const float *beta,
                                   const float *scale, const float *shift, int64_t ss_ld,
                                   float scale_offset, int B, int C, int S, int G, float eps);

    /* ---- nearest resize, F.interpolate(mode="nearest") ----
     * x: (B, C, H, W) -> y: (B, C, OH, OW); source row min(floorf(i * (float)H / OH), H - 1),
     * column likewise: torch's float rule, which differs from exact integer division for some
     * sizes (e.g. 6 -> 74). Forward only: MoVQ's spatial norm is frozen. */
    void (*resize_nearest_fwd)(void *ctx, float *y, const float *x, int B, int C, int H, int W,
                               int OH, int OW);

    /* ---- sinusoidal timestep embedding (diffusers get_timestep_embedding) ----
     * t: (N) float timesteps, y: (N, dim). half = dim/2;
     * exponent_i = -ln(max_period) * i / (half - shift); emb = t * exp(exponent_i) * scale;
     * y = [sin(emb), cos(emb)], swapped to [cos, sin] when flip_sin_to_cos; zero-padded when
     * dim is odd. Backward accumulates dt (N). */
    void (*timestep_embed_fwd)(void *ctx, float *y, const float *t, int N, int dim,
                               int flip_sin_to_cos, float shift, float scale, float max_period);
    void (*timestep_embed_bwd)(void *ctx, float *dt, const float *dy, const float *t, int N,
                               int dim, int flip_sin_to_cos, float shift, float scale,
                               float max_period);

    /* ---- per-sample weighted MSE ----
     * pred, target: (B, N); w: (B) or NULL (all 1).
     * per_sample[b] = mean_n (pred - target)^2 (may be NULL);
     * loss[0] = (1/B) * sum_b w[b] * per_sample[b].
     * Backward: dpred += dloss * w[b] * 2 (pred - target) / (B * N); dloss is a host scalar. */
    void (*mse_fwd)(void *ctx, float *loss, float *per_sample, const float *pred,
                    const float *target, const float *w, int B, int64_t N);
    void (*mse_bwd)(void *ctx, float *dpred, float dloss, const float *pred, const float *target,
                    const float *w, int B, int64_t N);

    /* ---- optimizer ----
     * One AdamW step over n values (see k22_adamw_hparams). */
    void (*adamw_step)(void *ctx, float *p, const float *g, float *m, float *v, int64_t n,
                       const k22_adamw_hparams *h);
    /* out[0] (host) += sum of g[i]^2, accumulated in double. */
    void (*sumsq)(void *ctx, double *out, const float *g, int64_t n);
};

/* Activation ids for act_fwd/act_bwd. */
typedef enum {
    K22_ACT_NONE = -1,  /* identity: group_norm_act and act_fwd_y16 only (act_fwd/act_bwd reject it) */
    K22_ACT_SILU = 0,   /* x * sigmoid(x) */
    K22_ACT_GELU,       /* exact: 0.5 x (1 + erf(x / sqrt 2)) */
    K22_ACT_GELU_TANH,  /* 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) */
    K22_ACT_QUICK_GELU, /* x * sigmoid(1.702 x) */
    K22_ACT_COUNT
} k22_act;

/* Global gradient-norm clipping over a list of buffers, torch clip_grad_norm_ semantics:
 * total = sqrt(sum over all values of g^2); coef = max_norm / (total + 1e-6), clamped to 1;
 * every buffer is multiplied by coef (always, as torch does). Returns total. */
float k22_clip_grad_norm(const k22_backend *be, float *const *bufs, const int64_t *lens, int nbufs,
                         float max_norm);

/* CPU backend. reference != 0 gives the plain-loop oracle ("cpu-ref"); 0 gives the fast mode
 * ("cpu": OpenBLAS GEMM, OpenMP loops). */
k22_backend *k22_backend_cpu_new(int reference);

/* CUDA backend (src/backend/cuda); NULL with a message in err when built without CUDA or no
 * device is usable. */
k22_backend *k22_backend_cuda_new(int device, k22_err *err);
/* The convolution implementation of a CUDA backend, chosen at its creation by the environment
 * variable K22_CUDA_CONV (auto, the default: cuDNN when usable, else im2col with one line on
 * stderr; cudnn; im2col): "cudnn <version>" or "im2col"; NULL for other backends. *n_cudnn and
 * *n_im2col (either may be NULL) get how many conv directions (forward, backward data, backward
 * filter) each implementation has run since creation: a cudnn backend still runs as im2col what
 * cuDNN cannot take (padding it cannot express, tensors of 2^31 elements, misaligned fp32
 * pointers, no deterministic algorithm). K22_CUDNN_ALGO (heuristic, the default, or find) says
 * how cuDNN's algorithms are chosen: k22_cuda_stats. */
const char *k22_backend_conv_impl(const k22_backend *be, int64_t *n_cudnn, int64_t *n_im2col);
/* A CUDA backend's stream (a cudaStream_t; its work runs there in order), NULL for others: for
 * the gradient exchange, which orders NCCL's stream after it with events (src/dist/nccl.c). */
void *k22_backend_cuda_stream(const k22_backend *be);

/* The memory be's buffers can still take, in bytes, and (total, may be NULL) all it has: for a
 * CUDA backend its device's (cudaMemGetInfo, plus what the stream-ordered pool holds unused), for
 * the CPU backends the host's (MemAvailable, capped by the job's cgroup limit, as Slurm sets it).
 * K22_MEM_FREE_MIB (a number of MiB) replaces the measured free figure: a GPU or node shared with
 * another job, or a test. 0 (and *total 0) where unknown. */
size_t k22_backend_mem_free(const k22_backend *be, size_t *total);

/* ops.h's params_register and params_changed on be, or on the backend a profiler wraps; nothing
 * where the backend has no such entry. */
void k22_backend_params_register(const k22_backend *be, float *p, int64_t n);
void k22_backend_params_changed(const k22_backend *be);

/* What a CUDA backend's caches did since its creation. */
typedef struct {
    const char *shadow;       /* the weight shadow's K22_CUDA_WEIGHT_SHADOW mode: "on", "off", "strict" */
    int64_t shadow_reads;     /* GEMM and convolution operands read from the shadow */
    int64_t shadow_refreshes; /* passes that rounded the whole parameter buffer into it */
    int64_t shadow_updates;   /* adamw_step calls that wrote it */
    int64_t gemm_heuristics;  /* cublasLtMatmulAlgoGetHeuristic queries */
    int64_t gemm_plans;       /* cuBLASLt set-ups made (GEMM shapes, and any made again) */
    const char *attn;         /* "fused-mma" (bf16/fp16 attention with heads up to 64 on the fused
                               * kernels on mma.sync; "fused": on the wmma ones), "gemm"
                               * (K22_CUDA_ATTN=gemm, or their self-test failed)
                               * or "untested" (auto before the first bf16/fp16 precision) */
    int64_t attn_flash;       /* attention calls (forward or backward) run by the fused kernels */
    int64_t attn_flash16;     /* ... of which read the caller's 16-bit q, k, v as they are
                               * (attention_fwd_x16 / _bwd_x16 on the mma.sync kernels) */
    int64_t attn_gemm;        /* ... and by the GEMM path */
    int64_t bias_epilogue;    /* linear_fwd biases added in cuBLASLt's epilogue (K22_CUDA_EPILOGUE) */
    int64_t bias_kernel;      /* ... and by a kernel after the GEMM */
    const char *conv_algo;    /* how cuDNN's algorithms are chosen (K22_CUDNN_ALGO): "heuristic"
                               * (its ranking, the default) or "find" (its timing) */
    int64_t conv_choices;     /* cuDNN algorithm choices made (per shape, precision, direction) */
    int64_t conv_timed;       /* ... of which by timing */
    int64_t conv_changed;     /* ... of which unlike the heuristics' pick */
} k22_cuda_stats;
/* Fills st and returns 1 for a CUDA backend (or a profiler over one); 0 otherwise. */
int k22_backend_cuda_stats(const k22_backend *be, k22_cuda_stats *st);

/* By name: "cpu-ref", "cpu", "cuda", "cuda:N". NULL with err set when unknown/unavailable.
 * Plain "cuda" is the GPU of the rank's local rank (dist.h, k22_dist_gpu_pick). */
k22_backend *k22_backend_by_name(const char *name, k22_err *err);
/* The names this build accepts, without touching a device (for option checks before any work):
 * K22_ERR_ARG for an unknown name, K22_ERR_UNSUPPORTED for cuda in a build without CUDA. */
k22_status k22_backend_name_check(const char *name, k22_err *err);
/* --device help text that tells the truth about this build. */
#ifdef K22_HAVE_CUDA
#define K22_DEVICE_NAMES "cpu, cpu-ref, cuda or cuda:N"
#define K22_DEVICE_HELP                                                                            \
    "cpu (OpenBLAS + OpenMP), cpu-ref (plain loops), cuda (the GPU of this rank's local rank, "   \
    "modulo the GPUs visible) or cuda:N"
#else
#define K22_DEVICE_NAMES "cpu or cpu-ref (this k22 was built without CUDA)"
#define K22_DEVICE_HELP "cpu (OpenBLAS + OpenMP) or cpu-ref (plain loops); cuda needs a k22 built with CUDA (make cuda)"
#endif
void k22_backend_free(k22_backend *be);

/* k22_backend_by_name with its GEMM precision set from a --mixed_precision value ("no", "bf16",
 * "fp16"; NULL: "no"). NULL with err set on failure; an unknown value or a backend that computes
 * in fp32 only is K22_ERR_ARG (a bad combination of flags). */
k22_backend *k22_backend_open(const char *name, const char *precision, k22_err *err);
/* Sets the GEMM precision of be (see k22_precision). K22_ERR_UNSUPPORTED, naming the backend,
 * when it computes in fp32 only. */
k22_status k22_backend_set_precision(k22_backend *be, k22_precision p, k22_err *err);
/* "no", "bf16", "fp16": the names of --mixed_precision. */
const char *k22_precision_name(k22_precision p);
/* The inverse of k22_precision_name; K22_ERR_ARG naming the value otherwise. */
k22_status k22_precision_parse(const char *name, k22_precision *p, k22_err *err);
/* x rounded to the precision's type and back (identity for fp32): the operand rounding of
 * k22_precision, on the host. */
float k22_precision_round(k22_precision p, float x);
/* Whether a model may keep the GEMM inputs that only a GEMM reads as 16 bits (the UNet's
 * group_norm_act -> conv inputs, the prior blocks' layer-norm outputs and MLP activation, both
 * models' attention q, k, v: group_norm_act_fwd_y16, conv2d_fwd_x16, conv2d_bwd_x16,
 * layer_norm_fwd_y16, act_fwd_y16, linear_fwd_x16, linear_bwd_x16, attention_fwd_x16,
 * attention_bwd_x16): be computes in bf16 or fp16 and has all nine entries. K22_ACT16=0 in the
 * environment, read when a backend is made, takes them away (the float path, the same figures:
 * for comparing the two). */
int k22_backend_act16(const k22_backend *be);
/* Dies naming what (a model part) when be lacks k22_backend_act16: a model set to keep 16-bit
 * activations run on a backend that cannot. */
void k22_backend_act16_require(const k22_backend *be, const char *what);

#endif
