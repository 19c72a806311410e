/* common.cuh: what every CUDA backend file shares: the context, the fatal-error checks for CUDA,
 * cuBLAS and cuDNN calls, launch geometry, and the entry points each .cu file contributes to the
 * table built in cuda_backend.cu. */
#ifndef K22_CUDA_COMMON_CUH
#define K22_CUDA_COMMON_CUH

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cudnn.h>
#include <stdint.h>

/* k22's headers are C11: _Noreturn is not C++, and their symbols have C linkage. */
#define _Noreturn [[noreturn]]
extern "C" {
#include "k22/k22.h"
#include "k22/ops.h"
}
#undef _Noreturn

/* The 16-bit shadow of the registered parameter buffer (weight_shadow.cu). */
typedef enum { K22_SHADOW_OFF = 0, K22_SHADOW_ON, K22_SHADOW_STRICT } k22_shadow_mode;
typedef struct {
    k22_shadow_mode mode;    /* K22_CUDA_WEIGHT_SHADOW, read at creation */
    const float *base;       /* the registered buffer (params_register), NULL when none */
    int64_t n;               /* its floats */
    uint16_t *buf;           /* n 16-bit values, 256-byte aligned, allocated at the first read */
    size_t bytes;
    int prec;                /* the k22_precision buf holds; K22_PREC_FP32: stale (rebuilt at the
                              * next read) */
    const char *unannounced; /* strict: the entry that wrote into base since the last
                              * params_changed, else NULL */
    int64_t reads, refreshes, updates;
} k22_cuda_shadow;

/* One per k22_backend_cuda_new. Everything runs on `stream`; the host waits only in to_host,
 * sync and sumsq. The device is made current once, at creation (one device per rank). */
typedef struct {
    int device;
    cudaStream_t stream;
    cublasLtHandle_t lt;
    void *workspace; /* cuBLASLt workspace, workspace_bytes long */
    size_t workspace_bytes;
    int async_alloc;  /* device supports stream-ordered allocation (cudaMallocAsync) */
    double *partials; /* sumsq scratch: K22_CUDA_REDUCE_BLOCKS per-block sums, then the total */
    void *scratch;    /* grow-only op scratch (im2col columns, attention scores, norm partials) */
    size_t scratch_bytes;
    /* Work-chunk limits in floats: im2col columns per band, attention scores per chunk. Tests
     * lower both (environment K22_CUDA_CHUNK_FLOATS) to run the banded paths on small shapes. */
    int64_t conv_col_floats, attn_chunk_floats;
    /* Attention (K22_CUDA_ATTN, flash_attention.cu): attn_flash is K22_FA_ON when the fused
     * kernels run what they fit (bf16/fp16, heads up to 64), K22_FA_OFF when the GEMM path runs
     * everything (asked for, or the kernels failed their self-test: attn_why says how), and
     * K22_FA_UNTESTED under auto until the first switch to bf16/fp16 runs the self-test; how many
     * attention calls (forward and backward) each path ran. attn_mma: the fused kernels are
     * flash_mma.cu's and flash_mma_bwd.cu's (mma.sync, tiles in registers: auto's first choice,
     * K22_CUDA_ATTN=mma), else flash_attention.cu's wmma ones (K22_CUDA_ATTN=flash). attn_pipe:
     * the mma.sync kernels fetch the next tile while computing (1, the default) or one tile at a
     * time (K22_CUDA_ATTN_PIPE=0, for measuring what the double buffering gains). */
    int attn_flash, attn_mma, attn_pipe;
    char attn_why[256];
    int64_t attn_runs_flash, attn_runs_flash16, attn_runs_gemm;
    /* Linear biases (matmul.cu, K22_CUDA_EPILOGUE): bias_epilogue 1 offers them to cuBLASLt's
     * BIAS epilogue; bias_runs[1] counts the linear_fwd calls whose bias it added, [0] those a
     * kernel added (turned off, misaligned, or no algorithm with the epilogue). */
    int bias_epilogue;
    int64_t bias_runs[2];
    /* k22_precision of the GEMMs (set_precision). Under bf16/fp16 k22_cuda_gemm rounds the
     * operands into lowp, a grow-only buffer of its own: callers pass pointers into scratch. */
    int precision;
    void *lowp;
    size_t lowp_bytes;
    /* Float copy of a 16-bit activation, grow-only: the im2col convolutions' x widened from x16
     * (conv2d_fwd_x16 / conv2d_bwd_x16 where cuDNN does not take the convolution), a GEMM's
     * 16-bit operand that cuBLASLt cannot read in place (matmul.cu). */
    void *wide;
    size_t wide_bytes;
    /* Convolutions (conv_cudnn.cu): the cuDNN handle, bound to `stream`, or NULL when they all
     * run as im2col (K22_CUDA_CONV); the cache of cuDNN descriptors and algorithms by shape and
     * precision; how many conv directions each implementation ran (k22_backend_conv_impl). */
    cudnnHandle_t cudnn;
    struct k22_cudnn_plan *plans;
    int nplans, plan_next;
    int cudnn_probing; /* creation's self-test: a failed cuDNN call returns, not dies */
    int64_t conv_runs_cudnn, conv_runs_im2col;
    /* K22_CUDNN_ALGO=find: each direction's algorithm by cuDNN's timing (Find*Ex) instead of its
     * heuristics; choices made, of which by timing, of which unlike the heuristics' pick. */
    int cudnn_find;
    int cudnn_log; /* K22_CUDNN_LOG=1: a line on stderr per choice (conv_cudnn.cu) */
    int64_t conv_choices, conv_timed, conv_changed, conv_timing_failed;
    char conv_impl[32]; /* "cudnn 9.19.0" or "im2col" */
    char conv_why[256]; /* the failed call of the self-test */
    k22_cuda_shadow shadow;
    /* cuBLASLt set-ups by GEMM shape (lt_plan.cu): a fixed table, filled at first use; how many
     * heuristic queries and set-ups that took. */
    struct k22_lt_plan *lt_plans;
    uint8_t *lt_victim; /* per set: the way the next miss replaces */
    int64_t lt_heuristics, lt_builds;
    int lt_log; /* K22_LT_LOG=1: a line on stderr per set-up */
} k22_cuda_ctx;

/* Block size of the elementwise and reduction kernels, and the fixed block count of the sumsq
 * reduction (fixed so that its summation order, and thus its result, never changes). */
#define K22_CUDA_THREADS 256
#define K22_CUDA_REDUCE_BLOCKS 1024

/* Die (K22_FATAL: host, rank, file:line, then MPI_Abort) naming the failing statement, the
 * error and the device. */
[[noreturn]] void k22_cuda_die(const char *what, const char *why, const char *file, int line);
void k22_cuda_check_at(cudaError_t e, const char *what, const char *file, int line);
void k22_cublas_check_at(cublasStatus_t s, const char *what, const char *file, int line);
void k22_cudnn_check_at(cudnnStatus_t s, const char *what, const char *file, int line);
#define CUDA_CHECK(call) k22_cuda_check_at((call), #call, __FILE__, __LINE__)
#define CUBLAS_CHECK(call) k22_cublas_check_at((call), #call, __FILE__, __LINE__)
#define CUDNN_CHECK(call) k22_cudnn_check_at((call), #call, __FILE__, __LINE__)
/* After every kernel launch: catches bad launch configurations at the launch site. */
#define CUDA_CHECK_LAUNCH()                                                                        \
    k22_cuda_check_at(cudaGetLastError(), "kernel launch", __FILE__, __LINE__)

/* Blocks for a grid-stride loop over n elements: enough to fill the GPU, never more than n
 * needs. */
static inline unsigned k22_cuda_blocks(int64_t n)
{
    int64_t b = (n + K22_CUDA_THREADS - 1) / K22_CUDA_THREADS;
    const int64_t cap = 65536;
    return (unsigned)(b < 1 ? 1 : (b > cap ? cap : b));
}

#define K22_CUDA_CTX(p) ((k22_cuda_ctx *)(p))

/* Launches kernel over n elements on the context's stream (the op's context parameter is named
 * vctx) and checks the launch; returns from the op at once when n <= 0. */
#define K22_LAUNCH(kernel, n, ...)                                                                 \
    do {                                                                                           \
        if ((n) <= 0) return;                                                                      \
        kernel<<<k22_cuda_blocks(n), K22_CUDA_THREADS, 0, K22_CUDA_CTX(vctx)->stream>>>(           \
            __VA_ARGS__);                                                                          \
        CUDA_CHECK_LAUNCH();                                                                       \
    } while (0)

/* flash_attention.cu: K22_CUDA_ATTN (auto, the default: the fused kernels unless their
 * self-test against cpu-ref fails, then the GEMM path with one line on stderr; flash: a failed
 * self-test is an error at creation; gemm), read at creation once cuBLASLt is up. */
enum { K22_FA_OFF, K22_FA_ON, K22_FA_UNTESTED };
k22_status k22_cuda_attn_init(k22_cuda_ctx *ctx, k22_err *err);
void k22_cuda_attn_ready(k22_cuda_ctx *ctx); /* auto's self-test, once, before the first bf16/fp16 op */
/* flash_attention.cu: whether the fused kernels take this attention (K22_CUDA_ATTN, precision,
 * head sizes), and the kernels themselves (ops.h's attention_fwd / attention_bwd contract).
 * k22_cuda_flash_takes16: whether they also take q, k, v as the caller's 16-bit values (the
 * mma.sync kernels, which read such copies anyway, with rows of exactly their head size,
 * 16-byte aligned); then q16, k16, v16 go to k22_cuda_flash_fwd / _bwd in place of q, k, v
 * (which are NULL), else those are NULL. */
int k22_cuda_flash_fits(const k22_cuda_ctx *ctx, const k22_attn_desc *d);
int k22_cuda_flash_takes16(const k22_cuda_ctx *ctx, const k22_attn_desc *d, const uint16_t *q16,
                           const uint16_t *k16, const uint16_t *v16);
void k22_cuda_flash_fwd(k22_cuda_ctx *ctx, float *out, float *lse, const float *q, const float *k,
                        const float *v, const uint16_t *q16, const uint16_t *k16,
                        const uint16_t *v16, const k22_attn_desc *d);
void k22_cuda_flash_bwd(k22_cuda_ctx *ctx, float *dq, float *dk, float *dv, const float *dout,
                        const float *q, const float *k, const float *v, const uint16_t *q16,
                        const uint16_t *k16, const uint16_t *v16, const float *out,
                        const float *lse, const k22_attn_desc *d);

/* The creation self-tests' comparison (conv_cudnn.cu, flash_attention.cu): got against want
 * over nparts parts, part p being [start[p], start[p+1]); an element is off when not
 * |got - want| <= atol + rtol |want| (NaN is off). Returns 1 when none is, else 0 with why set
 * to "self-test in PREC: PART[i] is GOT where cpu-ref has WANT" for the first. */
int k22_cuda_selftest_match(char *why, size_t nwhy, const char *prec, const float *got,
                            const float *want, const char *const *parts, const int64_t *start,
                            int nparts, float atol, float rtol);

/* Returns ctx's scratch, grown (stream-ordered) to at least `bytes`; valid until the next call.
 * One op runs at a time on the stream, so one buffer serves every op. It grows during the first
 * step of a run and then stays. Dies when the device is out of memory. */
void *k22_cuda_scratch(k22_cuda_ctx *ctx, size_t bytes);
/* The same for ctx->lowp, the 16-bit GEMM operand buffer of k22_cuda_gemm (matmul.cu). */
void *k22_cuda_lowp(k22_cuda_ctx *ctx, size_t bytes);
/* The same for ctx->wide, the float copy of a 16-bit activation (conv.cu, matmul.cu). */
void *k22_cuda_wide(k22_cuda_ctx *ctx, size_t bytes);

/* The same for the weight shadow's buffer (weight_shadow.cu). */
void *k22_cuda_shadow_buf(k22_cuda_ctx *ctx, size_t bytes);
/* Frees device memory of the context (stream-ordered where it allocates so). */
void k22_cuda_dev_free(k22_cuda_ctx *ctx, void *p);

/* Grid-stride loop over n elements. */
#define K22_GRID_STRIDE(i, n)                                                                      \
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n);                      \
         i += (int64_t)gridDim.x * blockDim.x)

/* The block-wide sum (or max) of v over K22_CUDA_THREADS threads in a fixed tree order, given to
 * every thread. sh: a __shared__ array of K22_CUDA_THREADS elements the caller owns; it may be
 * reused right after the call. Every thread of the block must call it. */
__device__ __forceinline__ double k22_cuda_block_sum(double v, double *sh)
{
    sh[threadIdx.x] = v;
    for (int k = K22_CUDA_THREADS / 2; k > 0; k >>= 1) {
        __syncthreads();
        if ((int)threadIdx.x < k) sh[threadIdx.x] += sh[threadIdx.x + k];
    }
    __syncthreads();
    double r = sh[0];
    __syncthreads();
    return r;
}
__device__ __forceinline__ float k22_cuda_block_max(float v, float *sh)
{
    sh[threadIdx.x] = v;
    for (int k = K22_CUDA_THREADS / 2; k > 0; k >>= 1) {
        __syncthreads();
        if ((int)threadIdx.x < k) sh[threadIdx.x] = fmaxf(sh[threadIdx.x], sh[threadIdx.x + k]);
    }
    __syncthreads();
    float r = sh[0];
    __syncthreads();
    return r;
}

/* x rounded to nearest even to fp16 (fp16 != 0; overflows to inf past 65504, NaN stays NaN) or
 * bfloat16, as its bits: the operand rounding of k22_precision. The GEMM packing kernel, the
 * weight shadow and the AdamW kernel's shadow write all call this one function, so a weight read
 * from the shadow has the bits the packing kernel would give it. */
__device__ __forceinline__ uint16_t k22_cuda_round16(float x, int fp16)
{
    return fp16 ? __half_as_ushort(__float2half_rn(x)) : __bfloat16_as_ushort(__float2bfloat16_rn(x));
}

/* An output element stored as a float, or rounded as k22_cuda_round16 (the _y16 entries): one
 * templated kernel writes either. */
__device__ __forceinline__ void k22_cuda_store(float *y, float v, int /* fp16 */) { *y = v; }
__device__ __forceinline__ void k22_cuda_store(uint16_t *y, float v, int fp16)
{
    *y = k22_cuda_round16(v, fp16);
}

/* matmul.cu. k22_cuda_gemm is the row-major GEMM of ops.h's matmul with explicit leading
 * dimensions (lda >= op-less row length of A as stored, and so on), for sub-blocks of larger
 * matrices. */
void k22_cuda_gemm(k22_cuda_ctx *ctx, int ta, int tb, int M, int N, int K, float alpha,
                   const float *A, int64_t lda, int64_t sA, const float *Bm, int64_t ldb,
                   int64_t sB, float beta, float *C, int64_t ldc, int64_t sC, int batch);
void k22_cuda_matmul(void *ctx, int ta, int tb, int M, int N, int K, float alpha, const float *A,
                     int64_t sA, const float *Bm, int64_t sB, float beta, float *C, int64_t sC,
                     int batch);
/* dst (n values) = src rounded to ctx->precision's 16-bit type (bf16 or fp16, nearest even):
 * the operand rounding of the 16-bit GEMMs, for the other 16-bit library calls (cuDNN). */
void k22_cuda_round_lowp(k22_cuda_ctx *ctx, uint16_t *dst, const float *src, int64_t n);
/* The same for a dense (rows, cols) matrix written in rows of pld >= cols values, zero in
 * [cols, pld): 16-bit copies laid out for a kernel's tiles (the mma.sync attention's). */
void k22_cuda_round_lowp_rows(k22_cuda_ctx *ctx, uint16_t *dst, const float *src, int64_t rows, int64_t cols,
                              int64_t pld);
void k22_cuda_linear_fwd(void *ctx, float *y, const float *x, const float *w, const float *b,
                         int N, int I, int O);
void k22_cuda_linear_bwd(void *ctx, float *dx, float *dw, float *db, const float *dy,
                         const float *x, const float *w, int N, int I, int O);
void k22_cuda_linear_fwd_x16(void *ctx, float *y, const uint16_t *x16, const float *w,
                             const float *b, int N, int I, int O);
void k22_cuda_linear_bwd_x16(void *ctx, float *dx, float *dw, float *db, const float *dy,
                             const uint16_t *x16, const float *w, int N, int I, int O);

/* elementwise.cu */
void k22_cuda_act_fwd(void *ctx, int act, float *y, const float *x, int64_t n);
void k22_cuda_act_bwd(void *ctx, int act, float *dx, const float *dy, const float *x, int64_t n);
void k22_cuda_act_fwd_y16(void *ctx, int act, uint16_t *y16, const float *x, int64_t n);
void k22_cuda_add(void *ctx, float *y, const float *a, const float *b, int64_t n);
void k22_cuda_mul(void *ctx, float *y, const float *a, const float *b, int64_t n);
void k22_cuda_scale(void *ctx, float *y, const float *a, float s, int64_t n);
void k22_cuda_add_bwd(void *ctx, float *da, float *db, const float *dy, int64_t n);
void k22_cuda_mul_bwd(void *ctx, float *da, float *db, const float *dy, const float *a,
                      const float *b, int64_t n);
void k22_cuda_scale_bwd(void *ctx, float *da, const float *dy, float s, int64_t n);

/* optim.cu */
void k22_cuda_adamw_step(void *ctx, float *p, const float *g, float *m, float *v, int64_t n,
                         const k22_adamw_hparams *h);
void k22_cuda_sumsq(void *ctx, double *out, const float *g, int64_t n);

/* conv.cu: the ops, through cuDNN when the context has it and it takes the shape, else im2col.
 * k22_cuda_conv_bias_add: y (B, O, P) += bias[o], as both implementations add it. */
void k22_cuda_conv2d_fwd(void *ctx, float *y, const float *x, const float *w, const float *bias,
                         const k22_conv2d_desc *d);
void k22_cuda_conv2d_bwd(void *ctx, float *dx, float *dw, float *dbias, const float *dy,
                         const float *x, const float *w, const k22_conv2d_desc *d);
void k22_cuda_conv2d_fwd_x16(void *ctx, float *y, const uint16_t *x16, const float *w,
                             const float *bias, const k22_conv2d_desc *d);
void k22_cuda_conv2d_bwd_x16(void *ctx, float *dx, float *dw, float *dbias, const float *dy,
                             const uint16_t *x16, const float *w, const k22_conv2d_desc *d);
void k22_cuda_conv_bias_add(k22_cuda_ctx *ctx, float *y, const float *bias, int B, int O,
                            int64_t P);

/* conv_cudnn.cu. k22_cudnn_init picks the implementation at creation (K22_CUDA_CONV=auto, cudnn
 * or im2col; auto falls back to im2col with one line on stderr when cuDNN cannot be created or
 * fails its self-test) and fills err only for a bad K22_CUDA_CONV or an unusable cuDNN that was
 * asked for by name. The conv entries return CUDNN_STATUS_SUCCESS (a failure is fatal except
 * during the self-test) and set *done (per direction) to 1 when cuDNN computed it, 0 when the
 * caller must run im2col (a shape or pointer cuDNN's legacy API cannot take, or no deterministic
 * algorithm within the workspace cap). Forward adds the bias; backward leaves dbias to conv.cu.
 * x16, under bf16/fp16 only: x given as 16-bit values of ctx->precision (x is then unused), the
 * operand cuDNN reads as it is; NULL: x is rounded to 16 bits first (bf16/fp16) or read as it is
 * (fp32). */
k22_status k22_cudnn_init(k22_cuda_ctx *ctx, k22_err *err);
void k22_cudnn_release(k22_cuda_ctx *ctx);
cudnnStatus_t k22_cudnn_conv_fwd(k22_cuda_ctx *ctx, float *y, const float *x, const uint16_t *x16,
                                 const float *w, const float *bias, const k22_conv2d_desc *d,
                                 int *done);
cudnnStatus_t k22_cudnn_conv_bwd(k22_cuda_ctx *ctx, float *dx, float *dw, const float *dy,
                                 const float *x, const uint16_t *x16, const float *w,
                                 const k22_conv2d_desc *d, int *done_dx, int *done_dw);
/* dst (n floats) = src's 16-bit values of ctx->precision (bf16 or fp16) widened, exactly. */
void k22_cuda_widen_lowp(k22_cuda_ctx *ctx, float *dst, const uint16_t *src, int64_t n);
/* src (n 16-bit values) widened into ctx->wide (k22_cuda_wide), which it returns: the float copy
 * of a 16-bit activation for a path that reads floats (im2col, a GEMM operand packed anew). */
const float *k22_cuda_wide_copy(k22_cuda_ctx *ctx, const uint16_t *src, int64_t n);

/* weight_shadow.cu: the 16-bit shadow of the parameter buffer (see its head).
 * k22_cuda_shadow_init reads K22_CUDA_WEIGHT_SHADOW (K22_ERR_ARG for a bad value);
 * k22_cuda_shadow_release frees the buffer. The ops entries params_register, params_changed.
 * k22_cuda_shadow_touch: a backend entry `what` wrote [p, p + bytes): when that overlaps the
 * registered buffer the shadow goes stale (strict: and the write must be announced).
 * k22_cuda_shadow_read: the shadow of the n floats at p, current, when they lie inside the
 * registered buffer, the precision is bf16/fp16, the shadow is on and the returned pointer is
 * `align`-byte aligned (a power of two <= 256); else NULL (the caller rounds p itself).
 * k22_cuda_shadow_update: for the AdamW kernel about to rewrite the n floats at p: where to write
 * their rounding (the shadow is current and holds them), else NULL, having marked the shadow
 * stale when the floats overlap the buffer. */
k22_status k22_cuda_shadow_init(k22_cuda_ctx *ctx, k22_err *err);
void k22_cuda_shadow_release(k22_cuda_ctx *ctx);
void k22_cuda_params_register(void *ctx, float *p, int64_t n);
void k22_cuda_params_changed(void *ctx);
void k22_cuda_shadow_touch(k22_cuda_ctx *ctx, const void *p, size_t bytes, const char *what);
const uint16_t *k22_cuda_shadow_read(k22_cuda_ctx *ctx, const float *p, int64_t n, uint32_t align);
uint16_t *k22_cuda_shadow_update(k22_cuda_ctx *ctx, const float *p, int64_t n);

/* lt_plan.cu: cuBLASLt's descriptors and chosen algorithm per GEMM shape (see its head). The
 * key holds every input of the heuristic query; build it with k22_lt_key_init (it zeroes the
 * padding the table compares). */
typedef struct {
    int32_t ab, ta, tb, M, N, K, batch; /* ab: cudaDataType_t of A and B */
    int32_t bias;                       /* 1: CUBLASLT_EPILOGUE_BIAS (fp32, a vector of our N) */
    uint32_t alA, alB, alC;             /* byte alignments of our A, B and C the heuristic is told */
    int64_t lda, ldb, ldc, sA, sB, sC;  /* strides are 0 unless batch > 1 */
} k22_lt_key;
struct k22_lt_plan {
    k22_lt_key key;
    int used;
    cublasStatus_t status; /* the heuristic's answer: SUCCESS, or its refusal (NOT_SUPPORTED) */
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatmulAlgo_t algo;
};
void k22_lt_key_init(k22_lt_key *k);
/* The plan of key, made at its first use: its status is the heuristic's (a refusal is kept too,
 * so a shape cuBLASLt cannot run batched is not asked again). Dies when the table cannot be made
 * or a descriptor call fails. */
const struct k22_lt_plan *k22_lt_plan_get(k22_cuda_ctx *ctx, const k22_lt_key *key);
void k22_lt_plans_init(k22_cuda_ctx *ctx);
void k22_lt_plans_release(k22_cuda_ctx *ctx);

/* norm.cu. k22_norm_value is the normalized value of one element, in double with each step
 * rounded explicitly (no contraction), so every kernel that forms it gets the same float:
 * ((x - mean) * rstd) * gamma + beta, st pointing at its segment's double mean and rstd.
 * k22_cuda_group_norm_stats runs group_norm_fwd's statistics alone: mean and rstd as floats (each
 * may be NULL) and, returned, the (mean, rstd) doubles per segment (B * G of them, segment
 * i / (C / G * S) for element i) in the op scratch, for the caller's own apply kernel. */
__device__ __forceinline__ float k22_norm_value(float x, const double *st, const float *gamma,
                                                const float *beta, int c)
{
    double v = __dmul_rn(__dadd_rn((double)x, -st[0]), st[1]);
    if (gamma) v = __dmul_rn(v, (double)gamma[c]);
    if (beta) v = __dadd_rn(v, (double)beta[c]);
    return (float)v;
}
const double *k22_cuda_group_norm_stats(k22_cuda_ctx *ctx, float *mean, float *rstd,
                                        const float *x, int B, int C, int S, int G, float eps);
void k22_cuda_group_norm_fwd(void *ctx, float *y, float *mean, float *rstd, const float *x,
                             const float *gamma, const float *beta, int B, int C, int S, int G,
                             float eps);
void k22_cuda_group_norm_bwd(void *ctx, float *dx, float *dgamma, float *dbeta, const float *dy,
                             const float *x, const float *mean, const float *rstd,
                             const float *gamma, int B, int C, int S, int G);
void k22_cuda_layer_norm_fwd(void *ctx, float *y, float *mean, float *rstd, const float *x,
                             const float *gamma, const float *beta, int N, int C, float eps);
void k22_cuda_layer_norm_fwd_y16(void *ctx, uint16_t *y16, float *mean, float *rstd,
                                 const float *x, const float *gamma, const float *beta, int N,
                                 int C, float eps);
void k22_cuda_layer_norm_bwd(void *ctx, float *dx, float *dgamma, float *dbeta, const float *dy,
                             const float *x, const float *mean, const float *rstd,
                             const float *gamma, int N, int C);

/* norm_act.cu */
void k22_cuda_group_norm_act_fwd(void *ctx, int act, float *y, float *mean, float *rstd,
                                 const float *x, const float *gamma, const float *beta,
                                 const float *scale, const float *shift, int64_t ss_ld,
                                 float scale_offset, int B, int C, int S, int G, float eps);
void k22_cuda_group_norm_act_fwd_y16(void *ctx, int act, uint16_t *y16, float *mean, float *rstd,
                                     const float *x, const float *gamma, const float *beta,
                                     const float *scale, const float *shift, int64_t ss_ld,
                                     float scale_offset, int B, int C, int S, int G, float eps);
void k22_cuda_group_norm_act_bwd(void *ctx, int act, float *dx, float *dgamma, float *dbeta,
                                 float *dscale, float *dshift, const float *dy, const float *x,
                                 const float *mean, const float *rstd, const float *gamma,
                                 const float *beta, const float *scale, const float *shift,
                                 int64_t ss_ld, float scale_offset, int B, int C, int S, int G);

/* attention.cu */
void k22_cuda_softmax_fwd(void *ctx, float *y, const float *x, int64_t rows, int cols);
void k22_cuda_softmax_bwd(void *ctx, float *dx, const float *dy, const float *y, int64_t rows,
                          int cols);
void k22_cuda_attention_fwd(void *ctx, float *out, float *lse, const float *q, const float *k,
                            const float *v, const k22_attn_desc *d);
void k22_cuda_attention_bwd(void *ctx, float *dq, float *dk, float *dv, const float *dout,
                            const float *q, const float *k, const float *v, const float *out,
                            const float *lse, const k22_attn_desc *d);
void k22_cuda_attention_fwd_x16(void *ctx, float *out, float *lse, const uint16_t *q16,
                                const uint16_t *k16, const uint16_t *v16, const k22_attn_desc *d);
void k22_cuda_attention_bwd_x16(void *ctx, float *dq, float *dk, float *dv, const float *dout,
                                const uint16_t *q16, const uint16_t *k16, const uint16_t *v16,
                                const float *out, const float *lse, const k22_attn_desc *d);

/* layout.cu */
void k22_cuda_concat_fwd(void *ctx, float *y, const float *a, const float *b, int64_t outer,
                         int64_t na, int64_t nb, int64_t inner);
void k22_cuda_concat_bwd(void *ctx, float *da, float *db, const float *dy, int64_t outer,
                         int64_t na, int64_t nb, int64_t inner);
void k22_cuda_permute_fwd(void *ctx, float *y, const float *x, int ndim, const int64_t *in_shape,
                          const int *perm);
void k22_cuda_permute_bwd(void *ctx, float *dx, const float *dy, int ndim,
                          const int64_t *in_shape, const int *perm);
void k22_cuda_upsample2x_fwd(void *ctx, float *y, const float *x, int B, int C, int H, int W);
void k22_cuda_upsample2x_bwd(void *ctx, float *dx, const float *dy, int B, int C, int H, int W);
void k22_cuda_avgpool2x_fwd(void *ctx, float *y, const float *x, int B, int C, int H, int W);
void k22_cuda_avgpool2x_bwd(void *ctx, float *dx, const float *dy, int B, int C, int H, int W);
void k22_cuda_resize_nearest_fwd(void *ctx, float *y, const float *x, int B, int C, int H, int W,
                                 int OH, int OW);
void k22_cuda_chan_affine_fwd(void *ctx, float *y, const float *x, const float *scale,
                              const float *shift, float scale_offset, int B, int C, int64_t S);
void k22_cuda_chan_affine_bwd(void *ctx, float *dx, float *dscale, float *dshift,
                              const float *dy, const float *x, const float *scale,
                              float scale_offset, int B, int C, int64_t S);

/* embed_loss.cu */
void k22_cuda_timestep_embed_fwd(void *ctx, float *y, const float *t, int N, int dim,
                                 int flip_sin_to_cos, float shift, float scale, float max_period);
void k22_cuda_timestep_embed_bwd(void *ctx, float *dt, const float *dy, const float *t, int N,
                                 int dim, int flip_sin_to_cos, float shift, float scale,
                                 float max_period);
void k22_cuda_mse_fwd(void *ctx, float *loss, float *per_sample, const float *pred,
                      const float *target, const float *w, int B, int64_t N);
void k22_cuda_mse_bwd(void *ctx, float *dpred, float dloss, const float *pred,
                      const float *target, const float *w, int B, int64_t N);

#endif
