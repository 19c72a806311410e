/* cpu_ops.h: the CPU backend's op functions, shared between the two tables in cpu_backend.c.
 * ref_* are the plain-loop, single-threaded oracle (sums in double); fast_* use OpenBLAS and
 * OpenMP. Signatures are those of the entries in struct k22_backend (include/k22/ops.h). */
#ifndef K22_CPU_OPS_H
#define K22_CPU_OPS_H

#include "k22/ops.h"

/* The backend context: the mode and one grow-only scratch buffer for fast ops (im2col columns,
 * attention probabilities). Ops on one backend run one at a time, so one buffer suffices. */
typedef struct {
    int reference;
    float *scratch;
    size_t scratch_floats;
    size_t conv_col_floats; /* im2col band size limit (tests lower it to force many bands) */
    size_t attn_chunk_floats; /* attention score rows per chunk, in floats (tests lower it) */
    int precision;          /* k22_precision of the GEMMs (fast mode only; ops.h) */
    float *prec_a, *prec_b; /* grow-only copies of the two GEMM operands, rounded */
    float *wide;            /* grow-only float copy of a 16-bit activation (fast_act16.c) */
    size_t wide_floats;
    size_t prec_a_floats, prec_b_floats;
} k22_cpu_ctx;

/* Returns ctx's scratch, grown to at least n floats; valid until the next call. Dies on OOM. */
float *k22_cpu_scratch(void *ctx, size_t n);
/* ctx's float buffer for the 16-bit activation entries (fast_act16.c), grown to at least n
 * floats; separate from the scratch, which the float ops they call use. */
float *k22_cpu_wide(void *ctx, size_t n);
/* Row-major C = alpha op(A) op(B) + beta C on OpenBLAS (cblas_sgemm's arguments, ld in floats),
 * the operands rounded to ctx->precision first (ops.h, k22_precision): every fast GEMM goes
 * through here. Call it outside OpenMP regions. */
void k22_cpu_sgemm(void *ctx, int ta, int tb, int M, int N, int K, float alpha, const float *A,
                   int lda, const float *Bm, int ldb, float beta, float *C, int ldc);

/* The host memory still to be had, in bytes (host_mem.c: MemAvailable, capped by the cgroup's
 * room); *total (may be NULL) gets MemTotal or the cgroup's limit, the smaller. 0 where unknown. */
size_t k22_host_mem_free(size_t *total);

/* ---- reference ---- */
void k22_ref_matmul(void *ctx, int ta, int tb, int M, int N, int K, float alpha, const float *A,
                    int64_t sA, const float *Bm, int64_t sB, float beta, float *C, int64_t sC,
                    int batch);
void k22_ref_linear_fwd(void *ctx, float *y, const float *x, const float *w, const float *b, int N,
                        int I, int O);
void k22_ref_linear_bwd(void *ctx, float *dx, float *dw, float *db, const float *dy, const float *x,
                        const float *w, int N, int I, int O);
void k22_ref_conv2d_fwd(void *ctx, float *y, const float *x, const float *w, const float *bias,
                        const k22_conv2d_desc *d);
void k22_ref_conv2d_bwd(void *ctx, float *dx, float *dw, float *dbias, const float *dy,
                        const float *x, const float *w, const k22_conv2d_desc *d);
void k22_ref_group_norm_fwd(void *ctx, float *y, float *mean, float *rstd, const float *x,
                            const float *gamma, const float *beta, int B, int C, int S, int G,
                            float eps);
void k22_ref_group_norm_bwd(void *ctx, float *dx, float *dgamma, float *dbeta, const float *dy,
                            const float *x, const float *mean, const float *rstd,
                            const float *gamma, int B, int C, int S, int G);
void k22_ref_layer_norm_fwd(void *ctx, float *y, float *mean, float *rstd, const float *x,
                            const float *gamma, const float *beta, int N, int C, float eps);
void k22_ref_layer_norm_bwd(void *ctx, float *dx, float *dgamma, float *dbeta, const float *dy,
                            const float *x, const float *mean, const float *rstd,
                            const float *gamma, int N, int C);
void k22_ref_act_fwd(void *ctx, int act, float *y, const float *x, int64_t n);
void k22_ref_act_bwd(void *ctx, int act, float *dx, const float *dy, const float *x, int64_t n);
void k22_ref_softmax_fwd(void *ctx, float *y, const float *x, int64_t rows, int cols);
void k22_ref_softmax_bwd(void *ctx, float *dx, const float *dy, const float *y, int64_t rows,
                         int cols);
void k22_ref_attention_fwd(void *ctx, float *out, float *lse, const float *q, const float *k,
                           const float *v, const k22_attn_desc *d);
void k22_ref_attention_bwd(void *ctx, float *dq, float *dk, float *dv, const float *dout,
                           const float *q, const float *k, const float *v, const float *out,
                           const float *lse, const k22_attn_desc *d);
void k22_ref_add(void *ctx, float *y, const float *a, const float *b, int64_t n);
void k22_ref_mul(void *ctx, float *y, const float *a, const float *b, int64_t n);
void k22_ref_scale(void *ctx, float *y, const float *a, float s, int64_t n);
void k22_ref_add_bwd(void *ctx, float *da, float *db, const float *dy, int64_t n);
void k22_ref_mul_bwd(void *ctx, float *da, float *db, const float *dy, const float *a,
                     const float *b, int64_t n);
void k22_ref_scale_bwd(void *ctx, float *da, const float *dy, float s, int64_t n);
void k22_ref_concat_fwd(void *ctx, float *y, const float *a, const float *b, int64_t outer,
                        int64_t na, int64_t nb, int64_t inner);
void k22_ref_concat_bwd(void *ctx, float *da, float *db, const float *dy, int64_t outer, int64_t na,
                        int64_t nb, int64_t inner);
void k22_ref_permute_fwd(void *ctx, float *y, const float *x, int ndim, const int64_t *in_shape,
                         const int *perm);
void k22_ref_permute_bwd(void *ctx, float *dx, const float *dy, int ndim, const int64_t *in_shape,
                         const int *perm);
void k22_ref_upsample2x_fwd(void *ctx, float *y, const float *x, int B, int C, int H, int W);
void k22_ref_upsample2x_bwd(void *ctx, float *dx, const float *dy, int B, int C, int H, int W);
void k22_ref_avgpool2x_fwd(void *ctx, float *y, const float *x, int B, int C, int H, int W);
void k22_ref_avgpool2x_bwd(void *ctx, float *dx, const float *dy, int B, int C, int H, int W);
void k22_ref_chan_affine_fwd(void *ctx, float *y, const float *x, const float *scale,
                             const float *shift, float scale_offset, int B, int C, int64_t S);
void k22_ref_chan_affine_bwd(void *ctx, float *dx, float *dscale, float *dshift, const float *dy,
                             const float *x, const float *scale, float scale_offset, int B, int C,
                             int64_t S);
void k22_ref_group_norm_act_fwd(void *ctx, int act, float *y, float *mean, float *rstd,
                                const float *x, const float *gamma, const float *beta,
                                const float *scale, const float *shift, int64_t ss_ld,
                                float scale_offset, int B, int C, int S, int G, float eps);
void k22_ref_group_norm_act_bwd(void *ctx, int act, float *dx, float *dgamma, float *dbeta,
                                float *dscale, float *dshift, const float *dy, const float *x,
                                const float *mean, const float *rstd, const float *gamma,
                                const float *beta, const float *scale, const float *shift,
                                int64_t ss_ld, float scale_offset, int B, int C, int S, int G);
/* Both modes use this one (ref_resize.c); k22_resize_nearest_src is torch's source index. */
void k22_ref_resize_nearest_fwd(void *ctx, float *y, const float *x, int B, int C, int H, int W,
                                int OH, int OW);
int k22_resize_nearest_src(int i, int in, int out);
void k22_ref_timestep_embed_fwd(void *ctx, float *y, const float *t, int N, int dim,
                                int flip_sin_to_cos, float shift, float scale, float max_period);
void k22_ref_timestep_embed_bwd(void *ctx, float *dt, const float *dy, const float *t, int N,
                                int dim, int flip_sin_to_cos, float shift, float scale,
                                float max_period);
void k22_ref_mse_fwd(void *ctx, float *loss, float *per_sample, const float *pred,
                     const float *target, const float *w, int B, int64_t N);
void k22_ref_mse_bwd(void *ctx, float *dpred, float dloss, const float *pred, const float *target,
                     const float *w, int B, int64_t N);
void k22_ref_adamw_step(void *ctx, float *p, const float *g, float *m, float *v, int64_t n,
                        const k22_adamw_hparams *h);
void k22_ref_sumsq(void *ctx, double *out, const float *g, int64_t n);

/* The scalar part of one AdamW step, shared by every backend's kernel: the float constants the
 * per-element update uses, in torch's order (bias corrections in double). */
typedef struct {
    float decay;    /* 1 - lr*wd */
    float one_m_b1; /* lerp weight 1 - beta1 */
    float b2;       /* beta2 */
    float one_m_b2; /* 1 - beta2 */
    float bc2_sqrt; /* sqrt(1 - beta2^step) */
    float eps;
    float neg_step; /* -(lr / (1 - beta1^step)) */
    float gscale;   /* grad_scale */
} k22_adamw_scalars;
k22_adamw_scalars k22_adamw_scalars_of(const k22_adamw_hparams *h);

/* ---- fast ---- */
void k22_fast_matmul(void *ctx, int ta, int tb, int M, int N, int K, float alpha, const float *A,
                     int64_t sA, const float *Bm, int64_t sB, float beta, float *C, int64_t sC,
                     int batch);
void k22_fast_linear_fwd(void *ctx, float *y, const float *x, const float *w, const float *b, int N,
                         int I, int O);
void k22_fast_linear_bwd(void *ctx, float *dx, float *dw, float *db, const float *dy,
                         const float *x, const float *w, int N, int I, int O);
void k22_fast_conv2d_fwd(void *ctx, float *y, const float *x, const float *w, const float *bias,
                         const k22_conv2d_desc *d);
void k22_fast_conv2d_bwd(void *ctx, float *dx, float *dw, float *dbias, const float *dy,
                         const float *x, const float *w, const k22_conv2d_desc *d);
void k22_fast_group_norm_fwd(void *ctx, float *y, float *mean, float *rstd, const float *x,
                             const float *gamma, const float *beta, int B, int C, int S, int G,
                             float eps);
void k22_fast_group_norm_bwd(void *ctx, float *dx, float *dgamma, float *dbeta, const float *dy,
                             const float *x, const float *mean, const float *rstd,
                             const float *gamma, int B, int C, int S, int G);
void k22_fast_layer_norm_fwd(void *ctx, float *y, float *mean, float *rstd, const float *x,
                             const float *gamma, const float *beta, int N, int C, float eps);
void k22_fast_layer_norm_bwd(void *ctx, float *dx, float *dgamma, float *dbeta, const float *dy,
                             const float *x, const float *mean, const float *rstd,
                             const float *gamma, int N, int C);
void k22_fast_act_fwd(void *ctx, int act, float *y, const float *x, int64_t n);
void k22_fast_act_bwd(void *ctx, int act, float *dx, const float *dy, const float *x, int64_t n);
void k22_fast_softmax_fwd(void *ctx, float *y, const float *x, int64_t rows, int cols);
void k22_fast_softmax_bwd(void *ctx, float *dx, const float *dy, const float *y, int64_t rows,
                          int cols);
void k22_fast_attention_fwd(void *ctx, float *out, float *lse, const float *q, const float *k,
                            const float *v, const k22_attn_desc *d);
void k22_fast_attention_bwd(void *ctx, float *dq, float *dk, float *dv, const float *dout,
                            const float *q, const float *k, const float *v, const float *out,
                            const float *lse, const k22_attn_desc *d);
void k22_fast_add(void *ctx, float *y, const float *a, const float *b, int64_t n);
void k22_fast_mul(void *ctx, float *y, const float *a, const float *b, int64_t n);
void k22_fast_scale(void *ctx, float *y, const float *a, float s, int64_t n);
void k22_fast_add_bwd(void *ctx, float *da, float *db, const float *dy, int64_t n);
void k22_fast_mul_bwd(void *ctx, float *da, float *db, const float *dy, const float *a,
                      const float *b, int64_t n);
void k22_fast_scale_bwd(void *ctx, float *da, const float *dy, float s, int64_t n);
void k22_fast_upsample2x_fwd(void *ctx, float *y, const float *x, int B, int C, int H, int W);
void k22_fast_upsample2x_bwd(void *ctx, float *dx, const float *dy, int B, int C, int H, int W);
void k22_fast_avgpool2x_fwd(void *ctx, float *y, const float *x, int B, int C, int H, int W);
void k22_fast_avgpool2x_bwd(void *ctx, float *dx, const float *dy, int B, int C, int H, int W);
void k22_fast_chan_affine_fwd(void *ctx, float *y, const float *x, const float *scale,
                              const float *shift, float scale_offset, int B, int C, int64_t S);
void k22_fast_chan_affine_bwd(void *ctx, float *dx, float *dscale, float *dshift, const float *dy,
                              const float *x, const float *scale, float scale_offset, int B, int C,
                              int64_t S);
void k22_fast_group_norm_act_fwd(void *ctx, int act, float *y, float *mean, float *rstd,
                                 const float *x, const float *gamma, const float *beta,
                                 const float *scale, const float *shift, int64_t ss_ld,
                                 float scale_offset, int B, int C, int S, int G, float eps);
void k22_fast_group_norm_act_bwd(void *ctx, int act, float *dx, float *dgamma, float *dbeta,
                                 float *dscale, float *dshift, const float *dy, const float *x,
                                 const float *mean, const float *rstd, const float *gamma,
                                 const float *beta, const float *scale, const float *shift,
                                 int64_t ss_ld, float scale_offset, int B, int C, int S, int G);
void k22_fast_group_norm_act_fwd_y16(void *ctx, int act, uint16_t *y16, float *mean, float *rstd,
                                     const float *x, const float *gamma, const float *beta,
                                     const float *scale, const float *shift, int64_t ss_ld,
                                     float scale_offset, int B, int C, int S, int G, float eps);
void k22_fast_act_fwd_y16(void *ctx, int act, uint16_t *y16, const float *x, int64_t n);
void k22_fast_attention_fwd_x16(void *ctx, float *out, float *lse, const uint16_t *q16,
                                const uint16_t *k16, const uint16_t *v16, const k22_attn_desc *d);
void k22_fast_attention_bwd_x16(void *ctx, float *dq, float *dk, float *dv, const float *dout,
                                const uint16_t *q16, const uint16_t *k16, const uint16_t *v16,
                                const float *out, const float *lse, const k22_attn_desc *d);
void k22_fast_layer_norm_fwd_y16(void *ctx, uint16_t *y16, float *mean, float *rstd, const float *x,
                                 const float *gamma, const float *beta, int N, int C, float eps);
void k22_fast_linear_fwd_x16(void *ctx, float *y, const uint16_t *x16, const float *w, const float *b,
                             int N, int I, int O);
void k22_fast_linear_bwd_x16(void *ctx, float *dx, float *dw, float *db, const float *dy,
                             const uint16_t *x16, const float *w, int N, int I, int O);
void k22_fast_conv2d_fwd_x16(void *ctx, float *y, const uint16_t *x16, const float *w,
                             const float *bias, const k22_conv2d_desc *d);
void k22_fast_conv2d_bwd_x16(void *ctx, float *dx, float *dw, float *dbias, const float *dy,
                             const uint16_t *x16, const float *w, const k22_conv2d_desc *d);
void k22_fast_mse_fwd(void *ctx, float *loss, float *per_sample, const float *pred,
                      const float *target, const float *w, int B, int64_t N);
void k22_fast_mse_bwd(void *ctx, float *dpred, float dloss, const float *pred, const float *target,
                      const float *w, int B, int64_t N);
void k22_fast_adamw_step(void *ctx, float *p, const float *g, float *m, float *v, int64_t n,
                         const k22_adamw_hparams *h);
void k22_fast_sumsq(void *ctx, double *out, const float *g, int64_t n);

#endif
