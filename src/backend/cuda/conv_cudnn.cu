/* conv_cudnn.cu: conv2d through cuDNN 9's legacy convolution API (cudnnConvolutionForward,
 * cudnnConvolutionBackwardData, cudnnConvolutionBackwardFilter): the CUDA backend's default
 * convolution, with conv.cu's im2col path as the fallback. Semantics are ops.h's and
 * src/backend/cpu/ref_conv.c's: NCHW, weights (O, C, KH, KW), cross-correlation
 * (CUDNN_CROSS_CORRELATION: torch does not flip the filter), any stride, bias added, backward
 * accumulating into dx and dw (dbias stays with conv.cu).
 *
 * Precision. fp32 runs cuDNN's FLOAT config (x, w, y and the compute type FLOAT) with
 * CUDNN_FMA_MATH, which keeps cuDNN to FMA kernels: CUDNN_DEFAULT_MATH permits TF32 on Ampere
 * and later, and k22's fp32 contract is no TF32. y goes straight to its destination and dx is
 * blended into it with beta = 1 (dx = conv + dx in fp32); dw goes through scratch and one fp32
 * add (k22_cudnn_run says why).
 * bf16/fp16 round x, w and dy to 16 bits into scratch (matmul.cu's packing kernel; w is read from
 * the weight shadow instead when it lies in the registered parameter buffer, x where it lies when
 * it comes already rounded, x16 of conv.cu's conv2d_fwd_x16 / conv2d_bwd_x16) and run the
 * PSEUDO_BFLOAT16 / PSEUDO_HALF config (16-bit tensors, FLOAT compute type: fp32 accumulation)
 * with tensor-op math. cuDNN's legacy configurations give the output tensor the inputs' type
 * (only the INT8 ones widen), so there is no fp32 output for 16-bit inputs: the result is written
 * as 16 bits into scratch with beta = 0, and a kernel adds it to the fp32 destination (with the
 * bias, forward). On this path y, the dx contribution and the dw contribution are each rounded
 * once to 16 bits, as under torch autocast; the im2col path returns fp32 sums instead.
 *
 * Shapes. cuDNN pads symmetrically; an asymmetric padding is taken only where symmetric padding
 * gives the same convolution (k22_cudnn_pad), else the call runs as im2col, as do tensors of 2^31
 * elements or more (the legacy API's int sizes) and, in fp32, data pointers that are not 16-byte
 * aligned (the legacy heuristics never see the pointers and may rank vectorized kernels first;
 * the 16-bit path writes its own aligned copies and reads those, the shadow's 16-byte aligned
 * weights and x16, copied first where it is not 16-byte aligned).
 *
 * Algorithms. A plan per (shape, precision) holds the descriptors, built once, and per direction
 * the first algorithm of cuDNN's heuristic ranking (cudnnGet*Algorithm_v7) that succeeded, is
 * deterministic (the perf struct's determinism field, and never one cuDNN's header calls
 * non-deterministic), has an allowed math type and needs at most K22_CUDNN_WS_CAP bytes of
 * workspace. Heuristics, not timing, by default: the choice depends on shape, precision, GPU and
 * cuDNN version only, so reruns and ranks compute the same bits. K22_CUDNN_ALGO=find (torch's
 * cudnn.benchmark) takes instead the fastest such algorithm as cuDNN times them (Find*Ex, once per
 * plan and direction, on buffers allocated for it and freed); a timing may pick differently from
 * one run or rank to the next, so the bits may differ (every choice computes the same convolution,
 * within its rounding). No such algorithm: that direction of that shape runs as im2col (one line on
 * stderr). The workspace and the 16-bit copies come from the context's grow-only op scratch: after
 * the first step nothing allocates.
 *
 * Creation (k22_cudnn_init): cudnnCreate, cudnnSetStream and a self-test, every direction in every
 * precision on small integers whose sums are exact, against cpu-ref. Under K22_CUDA_CONV=auto a
 * failure there falls back to im2col with one line on stderr; after creation any cuDNN failure is
 * fatal (CUDNN_CHECK's message). */
#include "common.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The workspace one cuDNN call may take from the op scratch: twice im2col's column budget. */
#define K22_CUDNN_WS_CAP ((size_t)256 << 20)
/* Plans kept; a UNet has a few dozen conv shapes. Past this the oldest plan is replaced. */
#define K22_CUDNN_PLANS 128
/* The largest algorithm count of the three directions (forward has 8). */
#define K22_CUDNN_MAX_ALGOS 8
static_assert(CUDNN_CONVOLUTION_FWD_ALGO_COUNT <= K22_CUDNN_MAX_ALGOS &&
                  CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT <= K22_CUDNN_MAX_ALGOS &&
                  CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT <= K22_CUDNN_MAX_ALGOS,
              "a ranking holds every algorithm");

enum { K22_CONV_FWD, K22_CONV_BWD_DATA, K22_CONV_BWD_FILTER, K22_CONV_DIRS };
static const char *const k22_conv_dir_names[K22_CONV_DIRS] = {"forward", "backward data",
                                                              "backward filter"};

/* One direction's algorithm: state 0 not chosen yet, 1 chosen, -1 none usable (im2col). */
typedef struct {
    int state, algo;
    cudnnMathType_t math; /* set on the convolution descriptor before each call */
    size_t ws;            /* workspace bytes the call gets */
} k22_cudnn_choice;

struct k22_cudnn_plan {
    k22_conv2d_desc d;
    int precision;
    cudnnTensorDescriptor_t x, y; /* (B, C, H, W), (B, O, OH, OW) */
    cudnnFilterDescriptor_t w;    /* (O, C, KH, KW) */
    cudnnConvolutionDescriptor_t conv;
    k22_cudnn_choice dir[K22_CONV_DIRS];
};

/* A failed cuDNN call: fatal, except in the creation self-test, which keeps the statement and
 * status in ctx->conv_why and gets the status back, to fall back to im2col. */
static cudnnStatus_t k22_cudnn_fail(k22_cuda_ctx *ctx, cudnnStatus_t s, const char *what,
                                    const char *file, int line)
{
    if (!ctx->cudnn_probing) k22_cudnn_check_at(s, what, file, line);
    snprintf(ctx->conv_why, sizeof ctx->conv_why, "%s: %s", what, cudnnGetErrorString(s));
    return s;
}
/* In a function with `ctx` that returns cudnnStatus_t. */
#define K22_CUDNN_TRY(call)                                                                        \
    do {                                                                                           \
        cudnnStatus_t s_ = (call);                                                                 \
        if (s_ != CUDNN_STATUS_SUCCESS) return k22_cudnn_fail(ctx, s_, #call, __FILE__, __LINE__); \
    } while (0)

/* "fp32", "bf16", "fp16" for messages (k22_precision_name says "no" for fp32). */
static const char *k22_cudnn_prec(int precision)
{
    return precision == K22_PREC_FP32 ? "fp32" : k22_precision_name((k22_precision)precision);
}

static int k22_cudnn_lowp(int precision)
{
    return precision == K22_PREC_BF16 || precision == K22_PREC_FP16;
}

static cudnnDataType_t k22_cudnn_type(int precision)
{
    return precision == K22_PREC_BF16   ? CUDNN_DATA_BFLOAT16
           : precision == K22_PREC_FP16 ? CUDNN_DATA_HALF
                                        : CUDNN_DATA_FLOAT;
}

/* cuDNN's symmetric padding for one dimension of n input values, kernel k, stride s and k22's
 * padding lo (before) and hi (after); 0 when none is equivalent. Output row i reads input rows
 * i*s - lo + t whatever hi is: hi only sets how many output rows there are. So (lo, lo) is the
 * same convolution as (lo, hi) whenever both give the same output size. */
static int k22_cudnn_pad(int n, int k, int s, int lo, int hi, int *pad)
{
    *pad = lo;
    return n + 2 * lo - k >= 0 && (n + 2 * lo - k) / s + 1 == (n + lo + hi - k) / s + 1;
}

/* The element counts of x, w and y. */
static void k22_cudnn_counts(const k22_conv2d_desc *d, int64_t *nx, int64_t *nw, int64_t *ny)
{
    *nx = (int64_t)d->B * d->C * d->H * d->W;
    *nw = (int64_t)d->O * d->C * d->KH * d->KW;
    *ny = (int64_t)d->B * d->O * k22_conv2d_out_h(d) * k22_conv2d_out_w(d);
}

/* Whether cuDNN may take d at all: symmetric-equivalent padding, int-sized tensors. */
static int k22_cudnn_takes(const k22_conv2d_desc *d, int *ph, int *pw)
{
    int64_t nx, nw, ny;
    k22_cudnn_counts(d, &nx, &nw, &ny);
    if (d->C < 1 || nx > INT32_MAX || ny > INT32_MAX || nw > INT32_MAX) return 0;
    return k22_cudnn_pad(d->H, d->KH, d->SH, d->PT, d->PB, ph) &&
           k22_cudnn_pad(d->W, d->KW, d->SW, d->PL, d->PR, pw);
}

/* NULL (unused) or 16-byte aligned. */
static int k22_cudnn_al16(const void *p)
{
    return ((uintptr_t)p & 15) == 0;
}

/* ---- plans ---- */

static void k22_cudnn_plan_clear(struct k22_cudnn_plan *p)
{
    if (p->x) cudnnDestroyTensorDescriptor(p->x);
    if (p->y) cudnnDestroyTensorDescriptor(p->y);
    if (p->w) cudnnDestroyFilterDescriptor(p->w);
    if (p->conv) cudnnDestroyConvolutionDescriptor(p->conv);
    memset(p, 0, sizeof *p);
}

/* The descriptors of d at ctx->precision, with cuDNN padding (ph, pw). */
static cudnnStatus_t k22_cudnn_plan_build(k22_cuda_ctx *ctx, struct k22_cudnn_plan *p,
                                          const k22_conv2d_desc *d, int ph, int pw)
{
    cudnnDataType_t t = k22_cudnn_type(ctx->precision);
    int OH = k22_conv2d_out_h(d), OW = k22_conv2d_out_w(d), n, c, h, w;
    p->d = *d;
    p->precision = ctx->precision;
    K22_CUDNN_TRY(cudnnCreateTensorDescriptor(&p->x));
    K22_CUDNN_TRY(cudnnCreateTensorDescriptor(&p->y));
    K22_CUDNN_TRY(cudnnCreateFilterDescriptor(&p->w));
    K22_CUDNN_TRY(cudnnCreateConvolutionDescriptor(&p->conv));
    K22_CUDNN_TRY(cudnnSetTensor4dDescriptor(p->x, CUDNN_TENSOR_NCHW, t, d->B, d->C, d->H, d->W));
    K22_CUDNN_TRY(cudnnSetFilter4dDescriptor(p->w, t, CUDNN_TENSOR_NCHW, d->O, d->C, d->KH, d->KW));
    K22_CUDNN_TRY(cudnnSetConvolution2dDescriptor(p->conv, ph, pw, d->SH, d->SW, 1, 1,
                                                  CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    K22_CUDNN_TRY(cudnnGetConvolution2dForwardOutputDim(p->conv, p->x, p->w, &n, &c, &h, &w));
    if (n != d->B || c != d->O || h != OH || w != OW)
        K22_FATAL("cuDNN gives conv B%d C%d %dx%d O%d k%dx%d s%d,%d p%d,%d,%d,%d an output of "
                  "(%d, %d, %d, %d), not (%d, %d, %d, %d) (k22_cudnn_pad is wrong)",
                  d->B, d->C, d->H, d->W, d->O, d->KH, d->KW, d->SH, d->SW, d->PT, d->PB, d->PL,
                  d->PR, n, c, h, w, d->B, d->O, OH, OW);
    K22_CUDNN_TRY(cudnnSetTensor4dDescriptor(p->y, CUDNN_TENSOR_NCHW, t, d->B, d->O, OH, OW));
    return CUDNN_STATUS_SUCCESS;
}

/* The plan of d at ctx->precision, built at its first use. */
static cudnnStatus_t k22_cudnn_plan_get(k22_cuda_ctx *ctx, const k22_conv2d_desc *d, int ph,
                                        int pw, struct k22_cudnn_plan **out)
{
    for (int i = 0; i < ctx->nplans; i++) {
        struct k22_cudnn_plan *p = &ctx->plans[i];
        if (p->precision == ctx->precision && !memcmp(&p->d, d, sizeof *d)) {
            *out = p;
            return CUDNN_STATUS_SUCCESS;
        }
    }
    struct k22_cudnn_plan fresh;
    memset(&fresh, 0, sizeof fresh);
    cudnnStatus_t s = k22_cudnn_plan_build(ctx, &fresh, d, ph, pw);
    if (s != CUDNN_STATUS_SUCCESS) {
        k22_cudnn_plan_clear(&fresh);
        return s;
    }
    struct k22_cudnn_plan *slot;
    if (ctx->nplans < K22_CUDNN_PLANS) {
        slot = &ctx->plans[ctx->nplans++];
    } else {
        slot = &ctx->plans[ctx->plan_next];
        ctx->plan_next = (ctx->plan_next + 1) % K22_CUDNN_PLANS;
        k22_cudnn_plan_clear(slot);
    }
    *slot = fresh;
    *out = slot;
    return CUDNN_STATUS_SUCCESS;
}

/* ---- algorithm choice ---- */

/* Sizes of the parts of a scratch buffer: 256-byte multiples, so every part is aligned. */
static size_t k22_cudnn_align(size_t n)
{
    return (n + 255) / 256 * 256;
}

/* One entry of a ranking (heuristics' or timing's), whatever the direction's perf struct. */
typedef struct {
    int algo;
    cudnnStatus_t status;
    size_t memory;
    cudnnDeterminism_t determinism;
    cudnnMathType_t math;
    float time; /* ms, a timing's (Find*Ex); nothing in the heuristics' */
} k22_cudnn_cand;

/* Copies the n (at most `cap`, what was asked for) entries of p into c. */
template <class Perf> static void k22_cudnn_cands(k22_cudnn_cand *c, const Perf *p, int *n, int cap)
{
    if (*n > cap) *n = cap;
    if (*n < 0) *n = 0;
    for (int i = 0; i < *n; i++)
        c[i] = {(int)p[i].algo,   p[i].status,   p[i].memory,
                p[i].determinism, p[i].mathType, p[i].time};
}

/* cuDNN's heuristic ranking of dir's algorithms for p (best first) into c, *n of them. */
static cudnnStatus_t k22_cudnn_rank(k22_cuda_ctx *ctx, const struct k22_cudnn_plan *p, int dir,
                                    k22_cudnn_cand *c, int *n)
{
    *n = 0;
    if (dir == K22_CONV_FWD) {
        cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
        K22_CUDNN_TRY(cudnnGetConvolutionForwardAlgorithm_v7(
            ctx->cudnn, p->x, p->w, p->conv, p->y, CUDNN_CONVOLUTION_FWD_ALGO_COUNT, n, perf));
        k22_cudnn_cands(c, perf, n, CUDNN_CONVOLUTION_FWD_ALGO_COUNT);
    } else if (dir == K22_CONV_BWD_DATA) {
        cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
        K22_CUDNN_TRY(cudnnGetConvolutionBackwardDataAlgorithm_v7(
            ctx->cudnn, p->w, p->y, p->conv, p->x, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, n,
            perf));
        k22_cudnn_cands(c, perf, n, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT);
    } else {
        cudnnConvolutionBwdFilterAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
        K22_CUDNN_TRY(cudnnGetConvolutionBackwardFilterAlgorithm_v7(
            ctx->cudnn, p->x, p->y, p->conv, p->w, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, n,
            perf));
        k22_cudnn_cands(c, perf, n, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT);
    }
    return CUDNN_STATUS_SUCCESS;
}

/* The workspace algo needs in dir under the descriptor's current math type. Not fatal: a
 * refusal only rules the algorithm out. */
static cudnnStatus_t k22_cudnn_ws_size(k22_cuda_ctx *ctx, const struct k22_cudnn_plan *p,
                                       int dir, int algo, size_t *bytes)
{
    if (dir == K22_CONV_FWD)
        return cudnnGetConvolutionForwardWorkspaceSize(ctx->cudnn, p->x, p->w, p->conv, p->y,
                                                       (cudnnConvolutionFwdAlgo_t)algo, bytes);
    if (dir == K22_CONV_BWD_DATA)
        return cudnnGetConvolutionBackwardDataWorkspaceSize(
            ctx->cudnn, p->w, p->y, p->conv, p->x, (cudnnConvolutionBwdDataAlgo_t)algo, bytes);
    return cudnnGetConvolutionBackwardFilterWorkspaceSize(
        ctx->cudnn, p->x, p->y, p->conv, p->w, (cudnnConvolutionBwdFilterAlgo_t)algo, bytes);
}

/* The algorithms cudnn_ops.h marks non-deterministic (atomics), whatever a ranking says. */
static int k22_cudnn_nondeterministic(int dir, int algo)
{
    if (dir == K22_CONV_BWD_DATA) return algo == CUDNN_CONVOLUTION_BWD_DATA_ALGO_0;
    if (dir == K22_CONV_BWD_FILTER)
        return algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0 ||
               algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3;
    return 0;
}

/* fp32 always runs under CUDNN_FMA_MATH, so an entry ranked for tensor cores (TF32) is not the
 * kernel that would run: skipped. 16-bit runs the entry's own math type, but never one allowing
 * down-conversion. */
static int k22_cudnn_math_ok(int lowp, cudnnMathType_t m)
{
    if (m == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION) return 0;
    return lowp || m != CUDNN_TENSOR_OP_MATH;
}

/* Whether ranking entry c can run dir of p: it succeeded, is deterministic, has an allowed math
 * type and needs at most K22_CUDNN_WS_CAP bytes of workspace (*ws, under math *m). Leaves that
 * math type set on p->conv. */
static int k22_cudnn_usable(k22_cuda_ctx *ctx, struct k22_cudnn_plan *p, int dir,
                            const k22_cudnn_cand *c, cudnnMathType_t *m, size_t *ws)
{
    int lowp = k22_cudnn_lowp(p->precision);
    *m = lowp ? c->math : CUDNN_FMA_MATH;
    *ws = 0;
    if (c->status != CUDNN_STATUS_SUCCESS || c->determinism != CUDNN_DETERMINISTIC ||
        k22_cudnn_nondeterministic(dir, c->algo) || !k22_cudnn_math_ok(lowp, c->math) ||
        c->memory > K22_CUDNN_WS_CAP)
        return 0;
    if (cudnnSetConvolutionMathType(p->conv, *m) != CUDNN_STATUS_SUCCESS ||
        k22_cudnn_ws_size(ctx, p, dir, c->algo, ws) != CUDNN_STATUS_SUCCESS)
        return 0;
    if (*ws < c->memory) *ws = c->memory;
    return *ws <= K22_CUDNN_WS_CAP;
}

/* The first usable entry of a ranking c (n entries, best first) into *ch (state 1): its index,
 * -1 (*ch untouched) if none. */
static int k22_cudnn_first(k22_cuda_ctx *ctx, struct k22_cudnn_plan *p, int dir,
                           const k22_cudnn_cand *c, int n, k22_cudnn_choice *ch)
{
    for (int i = 0; i < n; i++) {
        cudnnMathType_t m;
        size_t ws;
        if (!k22_cudnn_usable(ctx, p, dir, &c[i], &m, &ws)) continue;
        ch->state = 1, ch->algo = c[i].algo, ch->math = m, ch->ws = ws;
        return i;
    }
    return -1;
}

/* cuDNN's timing of dir's algorithms for p (fastest first) into c, *n of them (at most cap), each
 * run on zeroed buffers of p's shapes and ws bytes of workspace, allocated here and freed: Find
 * writes its output, so no live tensor may be passed. Synchronous, once per plan and direction
 * (the first step). 0 with why filled when the buffers cannot be had or cuDNN refuses. */
static int k22_cudnn_time(k22_cuda_ctx *ctx, struct k22_cudnn_plan *p, int dir, size_t ws,
                          k22_cudnn_cand *c, int *n, int cap, char *why, size_t whyn)
{
    int64_t nx, nw, ny;
    k22_cudnn_counts(&p->d, &nx, &nw, &ny);
    size_t es = k22_cudnn_lowp(p->precision) ? 2 : 4;
    /* [workspace | a | b | out]: fwd x, w -> y; bwd data w, dy -> dx; bwd filter x, dy -> dw */
    int64_t na = dir == K22_CONV_BWD_DATA ? nw : nx, nb = dir == K22_CONV_FWD ? nw : ny;
    int64_t no = dir == K22_CONV_FWD ? ny : dir == K22_CONV_BWD_DATA ? nx : nw;
    size_t off_a = k22_cudnn_align(ws), off_b = off_a + k22_cudnn_align((size_t)na * es);
    size_t off_o = off_b + k22_cudnn_align((size_t)nb * es), bytes = off_o + (size_t)no * es;
    uint8_t *buf = NULL;
    cudaError_t e = cudaMalloc((void **)&buf, bytes);
    if (e != cudaSuccess) {
        (void)cudaGetLastError(); /* not sticky: the run goes on with the heuristics' pick */
        snprintf(why, whyn, "cudaMalloc of %.1f MiB: %s", bytes / 1048576.0, cudaGetErrorString(e));
        return 0;
    }
    CUDA_CHECK(cudaMemsetAsync(buf + off_a, 0, off_o - off_a, ctx->stream));
    void *w = ws ? buf : NULL, *a = buf + off_a, *b = buf + off_b, *o = buf + off_o;
    cudnnStatus_t s;
    *n = 0;
    if (dir == K22_CONV_FWD) {
        cudnnConvolutionFwdAlgoPerf_t perf[2 * K22_CUDNN_MAX_ALGOS];
        s = cudnnFindConvolutionForwardAlgorithmEx(ctx->cudnn, p->x, a, p->w, b, p->conv, p->y, o,
                                                   cap, n, perf, w, ws);
        if (s == CUDNN_STATUS_SUCCESS) k22_cudnn_cands(c, perf, n, cap);
    } else if (dir == K22_CONV_BWD_DATA) {
        cudnnConvolutionBwdDataAlgoPerf_t perf[2 * K22_CUDNN_MAX_ALGOS];
        s = cudnnFindConvolutionBackwardDataAlgorithmEx(ctx->cudnn, p->w, a, p->y, b, p->conv, p->x,
                                                        o, cap, n, perf, w, ws);
        if (s == CUDNN_STATUS_SUCCESS) k22_cudnn_cands(c, perf, n, cap);
    } else {
        cudnnConvolutionBwdFilterAlgoPerf_t perf[2 * K22_CUDNN_MAX_ALGOS];
        s = cudnnFindConvolutionBackwardFilterAlgorithmEx(ctx->cudnn, p->x, a, p->y, b, p->conv,
                                                          p->w, o, cap, n, perf, w, ws);
        if (s == CUDNN_STATUS_SUCCESS) k22_cudnn_cands(c, perf, n, cap);
    }
    CUDA_CHECK(cudaFree(buf));
    if (s != CUDNN_STATUS_SUCCESS) snprintf(why, whyn, "%s", cudnnGetErrorString(s));
    return s == CUDNN_STATUS_SUCCESS;
}

/* Under K22_CUDNN_ALGO=find, replaces *ch (the heuristics' pick from ranking c of n entries) by
 * the fastest usable algorithm cuDNN times, with as much workspace as the most any usable ranked
 * algorithm asks; *ms gets its time and *heur_ms the heuristics' pick's (-1 where not timed).
 * Where timing fails (one line on stderr, the first time) or finds nothing usable, the
 * heuristics' pick stays. */
static cudnnStatus_t k22_cudnn_retime(k22_cuda_ctx *ctx, struct k22_cudnn_plan *p, int dir,
                                      const k22_cudnn_cand *c, int n, k22_cudnn_choice *ch,
                                      float *ms, float *heur_ms)
{
    *ms = *heur_ms = -1.0f;
    size_t most = 0;
    for (int i = 0; i < n; i++) {
        cudnnMathType_t m;
        size_t ws;
        if (k22_cudnn_usable(ctx, p, dir, &c[i], &m, &ws) && ws > most) most = ws;
    }
    k22_cudnn_cand t[2 * K22_CUDNN_MAX_ALGOS];
    k22_cudnn_choice got = {0, 0, CUDNN_DEFAULT_MATH, 0};
    int nt = 0;
    char why[160];
    K22_CUDNN_TRY(cudnnSetConvolutionMathType(
        p->conv, k22_cudnn_lowp(p->precision) ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH));
    if (!k22_cudnn_time(ctx, p, dir, most, t, &nt, 2 * K22_CUDNN_MAX_ALGOS, why, sizeof why)) {
        if (!ctx->cudnn_probing && !ctx->conv_timing_failed++) /* once, and not for the self-test */
            fprintf(stderr, "k22: cuDNN could not time the %s algorithms of conv B%d C%d %dx%d "
                    "O%d k%dx%d (%s): %s; such convolutions keep the heuristics' pick "
                    "(K22_CUDNN_ALGO=find)\n", k22_conv_dir_names[dir], p->d.B, p->d.C, p->d.H,
                    p->d.W, p->d.O, p->d.KH, p->d.KW, k22_cudnn_prec(p->precision), why);
        return CUDNN_STATUS_SUCCESS;
    }
    int i = k22_cudnn_first(ctx, p, dir, t, nt, &got);
    if (i < 0) return CUDNN_STATUS_SUCCESS;
    int lowp = k22_cudnn_lowp(p->precision); /* fp32 runs every algorithm under FMA math */
    for (int j = 0; j < nt && ch->state == 1; j++)
        if (t[j].status == CUDNN_STATUS_SUCCESS && t[j].algo == ch->algo &&
            k22_cudnn_math_ok(lowp, t[j].math) && (!lowp || t[j].math == ch->math)) {
            *heur_ms = t[j].time;
            break;
        }
    *ms = t[i].time;
    ctx->conv_timed++;
    if (ch->state != 1 || got.algo != ch->algo || got.math != ch->math) ctx->conv_changed++;
    *ch = got;
    return CUDNN_STATUS_SUCCESS;
}

/* Names for the log: cudnnConvolution{Fwd,BwdData,BwdFilter}Algo_t's values, cudnnMathType_t's. */
static const char *k22_cudnn_algo_name(int dir, int algo)
{
    static const char *const fwd[] = {"implicit_gemm", "implicit_precomp_gemm", "gemm", "direct",
                                      "fft", "fft_tiling", "winograd", "winograd_nonfused"};
    static const char *const bwd_data[] = {"algo_0", "algo_1", "fft", "fft_tiling", "winograd",
                                           "winograd_nonfused"};
    static const char *const bwd_filter[] = {"algo_0", "algo_1", "fft", "algo_3", "winograd",
                                             "winograd_nonfused", "fft_tiling"};
    const char *const *names = dir == K22_CONV_FWD ? fwd : dir == K22_CONV_BWD_DATA ? bwd_data
                                                                                  : bwd_filter;
    int n = dir == K22_CONV_FWD ? 8 : dir == K22_CONV_BWD_DATA ? 6 : 7;
    return algo >= 0 && algo < n ? names[algo] : "unknown";
}

static const char *k22_cudnn_math_name(cudnnMathType_t m)
{
    return m == CUDNN_TENSOR_OP_MATH ? "tensor_op" : m == CUDNN_FMA_MATH ? "fma"
           : m == CUDNN_DEFAULT_MATH ? "default" : "tensor_op_allow_conversion";
}

/* K22_CUDNN_LOG=1: one key=value line on stderr per choice (the GPU session's logs keep them):
 * the shape, the algorithm taken (im2col where none), its math and workspace, and under
 * K22_CUDNN_ALGO=find its time beside that of the heuristics' pick (heur), in ms a call. */
static void k22_cudnn_log(const struct k22_cudnn_plan *p, int dir, const k22_cudnn_choice *ch,
                          const k22_cudnn_choice *heur, float ms, float heur_ms)
{
    const k22_conv2d_desc *d = &p->d;
    static const char *const dirs[K22_CONV_DIRS] = {"forward", "backward_data", "backward_filter"};
    char tail[160] = "";
    if (ms >= 0)
        snprintf(tail, sizeof tail, " ms=%.4f heuristic=%s heuristic_ms=%.4f", ms,
                 heur->state == 1 ? k22_cudnn_algo_name(dir, heur->algo) : "none", heur_ms);
    fprintf(stderr,
            "k22_cudnn shape=B%d,C%d,H%d,W%d,O%d,k%dx%d,s%dx%d,p%d,%d,%d,%d prec=%s dir=%s algo=%s "
            "math=%s ws_mib=%.2f by=%s%s\n",
            d->B, d->C, d->H, d->W, d->O, d->KH, d->KW, d->SH, d->SW, d->PT, d->PB, d->PL, d->PR,
            k22_cudnn_prec(p->precision), dirs[dir],
            ch->state == 1 ? k22_cudnn_algo_name(dir, ch->algo) : "im2col",
            ch->state == 1 ? k22_cudnn_math_name(ch->math) : "-",
            ch->state == 1 ? ch->ws / 1048576.0 : 0.0, ms >= 0 ? "timing" : "heuristic", tail);
}

/* Fills p->dir[dir] once (see the file comment). */
static cudnnStatus_t k22_cudnn_choose(k22_cuda_ctx *ctx, struct k22_cudnn_plan *p, int dir)
{
    k22_cudnn_choice *ch = &p->dir[dir];
    if (ch->state) return CUDNN_STATUS_SUCCESS;
    int lowp = k22_cudnn_lowp(p->precision), n;
    k22_cudnn_cand c[K22_CUDNN_MAX_ALGOS];
    K22_CUDNN_TRY(
        cudnnSetConvolutionMathType(p->conv, lowp ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH));
    cudnnStatus_t s = k22_cudnn_rank(ctx, p, dir, c, &n);
    if (s != CUDNN_STATUS_SUCCESS) return s;
    k22_cudnn_first(ctx, p, dir, c, n, ch);
    k22_cudnn_choice heur = *ch;
    float ms = -1.0f, heur_ms = -1.0f;
    if (ctx->cudnn_find &&
        (s = k22_cudnn_retime(ctx, p, dir, c, n, ch, &ms, &heur_ms)) != CUDNN_STATUS_SUCCESS)
        return s;
    if (ch->state != 1) ch->state = -1;
    if (ctx->cudnn_log && !ctx->cudnn_probing) k22_cudnn_log(p, dir, ch, &heur, ms, heur_ms);
    if (ch->state == 1) {
        ctx->conv_choices++;
        return CUDNN_STATUS_SUCCESS;
    }
    const k22_conv2d_desc *d = &p->d;
    char what[200];
    snprintf(what, sizeof what,
             "no deterministic %s algorithm within %zu MiB of workspace among %d ranked for conv "
             "B%d C%d %dx%d O%d k%dx%d s%d,%d (%s)",
             k22_conv_dir_names[dir], K22_CUDNN_WS_CAP >> 20, n, d->B, d->C, d->H, d->W, d->O,
             d->KH, d->KW, d->SH, d->SW, k22_cudnn_prec(p->precision));
    if (ctx->cudnn_probing) { /* the self-test's shape must run on cuDNN */
        snprintf(ctx->conv_why, sizeof ctx->conv_why, "cuDNN has %s", what);
        return CUDNN_STATUS_NOT_SUPPORTED;
    }
    fprintf(stderr, "k22: cuDNN has %s; it runs as im2col\n", what);
    return CUDNN_STATUS_SUCCESS;
}

/* ---- running ---- */

/* dst[i] = (accumulate ? dst[i] : 0) + src[i] widened (+ bias[(i / P) % O] with a bias): a 16-bit
 * cuDNN result into its fp32 destination, in the order the im2col path adds (sum, then bias; old
 * gradient plus contribution). */
__global__ void k22_cudnn_widen_kernel(float *dst, const uint16_t *src, int fp16, int accumulate,
                                       const float *bias, int O, int64_t P, int64_t n)
{
    K22_GRID_STRIDE(i, n)
    {
        float v = fp16 ? __half2float(((const __half *)src)[i])
                       : __bfloat162float(((const __nv_bfloat16 *)src)[i]);
        if (bias) v += bias[(i / P) % O];
        dst[i] = accumulate ? dst[i] + v : v;
    }
}

static void k22_cudnn_widen(k22_cuda_ctx *ctx, float *dst, const uint16_t *src, int accumulate,
                            const float *bias, int O, int64_t P, int64_t n)
{
    if (n <= 0) return;
    k22_cudnn_widen_kernel<<<k22_cuda_blocks(n), K22_CUDA_THREADS, 0, ctx->stream>>>(
        dst, src, ctx->precision == K22_PREC_FP16, accumulate, bias, O, P, n);
    CUDA_CHECK_LAUNCH();
}

/* See common.cuh. */
void k22_cuda_widen_lowp(k22_cuda_ctx *ctx, float *dst, const uint16_t *src, int64_t n)
{
    k22_cudnn_widen(ctx, dst, src, 0, NULL, 1, 1, n);
}

/* See common.cuh. */
const float *k22_cuda_wide_copy(k22_cuda_ctx *ctx, const uint16_t *src, int64_t n)
{
    float *w = (float *)k22_cuda_wide(ctx, (size_t)n * sizeof(float));
    k22_cuda_widen_lowp(ctx, w, src, n);
    return w;
}

/* The op scratch for one conv op. bf16/fp16: [workspace (ws bytes) | b16 | a16 | o16] (nb, na, no
 * 16-bit values, each part 256-byte aligned); fp32: [workspace | o32] (nw32 floats: the weight
 * gradient's staging, k22_cudnn_run). Parts not used are NULL. */
typedef struct {
    uint8_t *ws;
    uint16_t *b16, *a16, *o16;
    float *o32;
} k22_cudnn_bufs;

static k22_cudnn_bufs k22_cudnn_scratch(k22_cuda_ctx *ctx, size_t ws, int64_t nb, int64_t na,
                                        int64_t no, int64_t nw32)
{
    k22_cudnn_bufs u = {NULL, NULL, NULL, NULL, NULL};
    int lowp = k22_cudnn_lowp(ctx->precision);
    size_t off_b = k22_cudnn_align(ws), off_a = off_b + k22_cudnn_align(nb * 2);
    size_t off_o = off_a + k22_cudnn_align(na * 2);
    size_t bytes = lowp ? off_o + no * 2 : off_b + nw32 * sizeof(float);
    if (!bytes) return u;
    uint8_t *s = (uint8_t *)k22_cuda_scratch(ctx, bytes);
    u.ws = ws ? s : NULL;
    if (!lowp) {
        u.o32 = nw32 ? (float *)(s + off_b) : NULL;
        return u;
    }
    u.b16 = (uint16_t *)(s + off_b), u.a16 = (uint16_t *)(s + off_a);
    u.o16 = (uint16_t *)(s + off_o);
    return u;
}

/* One cuDNN call of direction dir under its chosen algorithm: reads a and b (forward x and w,
 * backward data w and dy, backward filter x and dy), writes out (y, dx, dw) blended with beta. */
static cudnnStatus_t k22_cudnn_call(k22_cuda_ctx *ctx, const struct k22_cudnn_plan *p, int dir,
                                    const void *a, const void *b, float beta, void *out, void *ws)
{
    const k22_cudnn_choice *ch = &p->dir[dir];
    const float one = 1.0f;
    K22_CUDNN_TRY(cudnnSetConvolutionMathType(p->conv, ch->math));
    if (dir == K22_CONV_FWD)
        K22_CUDNN_TRY(cudnnConvolutionForward(ctx->cudnn, &one, p->x, a, p->w, b, p->conv,
                                              (cudnnConvolutionFwdAlgo_t)ch->algo, ws, ch->ws,
                                              &beta, p->y, out));
    else if (dir == K22_CONV_BWD_DATA)
        K22_CUDNN_TRY(cudnnConvolutionBackwardData(ctx->cudnn, &one, p->w, a, p->y, b, p->conv,
                                                   (cudnnConvolutionBwdDataAlgo_t)ch->algo, ws,
                                                   ch->ws, &beta, p->x, out));
    else
        K22_CUDNN_TRY(cudnnConvolutionBackwardFilter(ctx->cudnn, &one, p->x, a, p->y, b, p->conv,
                                                     (cudnnConvolutionBwdFilterAlgo_t)ch->algo,
                                                     ws, ch->ws, &beta, p->w, out));
    return CUDNN_STATUS_SUCCESS;
}

/* Direction dir into its fp32 destination dst (nout values): forward overwrites (and adds the
 * bias), backward accumulates. fp32: cuDNN reads a and b and blends into dst (beta 0 forward, 1
 * backward data), except the weight gradient, which cuDNN writes to u->o32 (beta 0) and one
 * fp32 add puts into dw, as the 16-bit path and dbias do: a micro-batch then adds exactly one
 * rounded sum to a weight gradient whatever order cuDNN blends in, so 1 rank x 2 accumulation
 * steps gives the bits of 2 ranks x 1, whose all-reduce adds the same two sums. 16-bit: b16 is b
 * rounded; a16 is a rounded (the weight shadow's), or NULL: a (na values) is rounded into u->a16;
 * the result goes to u->o16 with beta 0 and is widened into dst. */
static cudnnStatus_t k22_cudnn_run(k22_cuda_ctx *ctx, const struct k22_cudnn_plan *p, int dir,
                                   const float *a, int64_t na, const uint16_t *a16,
                                   const float *b, const uint16_t *b16, float *dst, int64_t nout,
                                   const float *bias, const k22_cudnn_bufs *u)
{
    const k22_conv2d_desc *d = &p->d;
    int64_t P = (int64_t)k22_conv2d_out_h(d) * k22_conv2d_out_w(d);
    int acc = dir != K22_CONV_FWD;
    cudnnStatus_t s;
    if (!k22_cudnn_lowp(ctx->precision) && dir == K22_CONV_BWD_FILTER) {
        s = k22_cudnn_call(ctx, p, dir, a, b, 0.0f, u->o32, u->ws);
        if (s == CUDNN_STATUS_SUCCESS) k22_cuda_add(ctx, dst, dst, u->o32, nout);
        return s;
    }
    if (!k22_cudnn_lowp(ctx->precision)) {
        s = k22_cudnn_call(ctx, p, dir, a, b, acc ? 1.0f : 0.0f, dst, u->ws);
        if (s == CUDNN_STATUS_SUCCESS && bias)
            k22_cuda_conv_bias_add(ctx, dst, bias, d->B, d->O, P);
        return s;
    }
    if (!a16) {
        k22_cuda_round_lowp(ctx, u->a16, a, na);
        a16 = u->a16;
    }
    s = k22_cudnn_call(ctx, p, dir, a16, b16, 0.0f, u->o16, u->ws);
    if (s == CUDNN_STATUS_SUCCESS) k22_cudnn_widen(ctx, dst, u->o16, acc, bias, d->O, P, nout);
    return s;
}

/* The weights w (nw values) as 16-bit values from the weight shadow, when it holds them at a
 * 16-byte aligned address (cuDNN's legacy heuristics never see pointers, and the packed copies
 * are 256-byte aligned); NULL under fp32 or when they must be rounded here. */
static const uint16_t *k22_cudnn_w16(k22_cuda_ctx *ctx, const float *w, int64_t nw)
{
    return k22_cudnn_lowp(ctx->precision) ? k22_cuda_shadow_read(ctx, w, nw, 16) : NULL;
}

/* The 16-bit values of x (nx) that go into the scratch's a16 part: all of them when x is rounded
 * there (x16 NULL) or x16 is not 16-byte aligned (copied there: the heuristics may have picked a
 * kernel that reads 16-byte vectors), none when cuDNN reads x16 where it lies. */
static int64_t k22_cudnn_x_staged(const uint16_t *x16, int64_t nx)
{
    return x16 && k22_cudnn_al16(x16) ? 0 : nx;
}

/* Where cuDNN reads x16: where it lies, or its copy in a16 when it is not 16-byte aligned; NULL
 * stays NULL (k22_cudnn_run rounds x into a16). */
static const uint16_t *k22_cudnn_x16_at(k22_cuda_ctx *ctx, const uint16_t *x16, uint16_t *a16,
                                        int64_t nx)
{
    if (!x16 || k22_cudnn_al16(x16)) return x16;
    CUDA_CHECK(cudaMemcpyAsync(a16, x16, (size_t)nx * sizeof(uint16_t), cudaMemcpyDeviceToDevice,
                               ctx->stream));
    return a16;
}

/* See common.cuh. */
cudnnStatus_t k22_cudnn_conv_fwd(k22_cuda_ctx *ctx, float *y, const float *x, const uint16_t *x16,
                                 const float *w, const float *bias, const k22_conv2d_desc *d,
                                 int *done)
{
    struct k22_cudnn_plan *p;
    int ph, pw, lowp = k22_cudnn_lowp(ctx->precision);
    *done = 0;
    if (!k22_cudnn_takes(d, &ph, &pw)) return CUDNN_STATUS_SUCCESS;
    if (!lowp && !(k22_cudnn_al16(x) && k22_cudnn_al16(w) && k22_cudnn_al16(y)))
        return CUDNN_STATUS_SUCCESS;
    cudnnStatus_t s = k22_cudnn_plan_get(ctx, d, ph, pw, &p);
    if (s == CUDNN_STATUS_SUCCESS) s = k22_cudnn_choose(ctx, p, K22_CONV_FWD);
    if (s != CUDNN_STATUS_SUCCESS || p->dir[K22_CONV_FWD].state < 0) return s;
    int64_t nx, nw, ny;
    k22_cudnn_counts(d, &nx, &nw, &ny);
    const uint16_t *w16 = k22_cudnn_w16(ctx, w, nw);
    k22_cudnn_bufs u = k22_cudnn_scratch(ctx, p->dir[K22_CONV_FWD].ws, w16 ? 0 : nw,
                                         k22_cudnn_x_staged(x16, nx), ny, 0);
    if (lowp && !w16) {
        k22_cuda_round_lowp(ctx, u.b16, w, nw);
        w16 = u.b16;
    }
    x16 = k22_cudnn_x16_at(ctx, x16, u.a16, nx);
    s = k22_cudnn_run(ctx, p, K22_CONV_FWD, x, nx, x16, w, w16, y, ny, bias, &u);
    *done = s == CUDNN_STATUS_SUCCESS;
    return s;
}

/* See common.cuh. The two directions run one after the other and share the scratch; dy is
 * rounded once for both. */
cudnnStatus_t k22_cudnn_conv_bwd(k22_cuda_ctx *ctx, float *dx, float *dw, const float *dy,
                                 const float *x, const uint16_t *x16, const float *w,
                                 const k22_conv2d_desc *d, int *done_dx, int *done_dw)
{
    struct k22_cudnn_plan *p;
    int ph, pw, lowp = k22_cudnn_lowp(ctx->precision);
    *done_dx = *done_dw = 0;
    if (!k22_cudnn_takes(d, &ph, &pw)) return CUDNN_STATUS_SUCCESS;
    if (!lowp && !(k22_cudnn_al16(dy) && k22_cudnn_al16(dx) && k22_cudnn_al16(dx ? w : NULL) &&
                   k22_cudnn_al16(dw) && k22_cudnn_al16(dw ? x : NULL)))
        return CUDNN_STATUS_SUCCESS;
    cudnnStatus_t s = k22_cudnn_plan_get(ctx, d, ph, pw, &p);
    if (s == CUDNN_STATUS_SUCCESS && dx) s = k22_cudnn_choose(ctx, p, K22_CONV_BWD_DATA);
    if (s == CUDNN_STATUS_SUCCESS && dw) s = k22_cudnn_choose(ctx, p, K22_CONV_BWD_FILTER);
    if (s != CUDNN_STATUS_SUCCESS) return s;
    const k22_cudnn_choice *cd = &p->dir[K22_CONV_BWD_DATA], *cf = &p->dir[K22_CONV_BWD_FILTER];
    int want_dx = dx && cd->state > 0, want_dw = dw && cf->state > 0;
    if (!want_dx && !want_dw) return CUDNN_STATUS_SUCCESS;
    int64_t nx, nw, ny, na = 0, no = 0; /* the larger 16-bit operand and result of the two */
    k22_cudnn_counts(d, &nx, &nw, &ny);
    const uint16_t *w16 = want_dx ? k22_cudnn_w16(ctx, w, nw) : NULL;
    int64_t nxs = k22_cudnn_x_staged(x16, nx);
    size_t ws = 0;
    if (want_dx) ws = cd->ws, na = w16 ? 0 : nw, no = nx;
    if (want_dw) ws = cf->ws > ws ? cf->ws : ws, na = nxs > na ? nxs : na, no = nw > no ? nw : no;
    k22_cudnn_bufs u = k22_cudnn_scratch(ctx, ws, ny, na, no, want_dw ? nw : 0);
    if (lowp) k22_cuda_round_lowp(ctx, u.b16, dy, ny);
    if (want_dx) {
        s = k22_cudnn_run(ctx, p, K22_CONV_BWD_DATA, w, nw, w16, dy, u.b16, dx, nx, NULL, &u);
        if (s != CUDNN_STATUS_SUCCESS) return s;
        *done_dx = 1;
    }
    if (want_dw) { /* after the data direction: a16 may have held its rounded w */
        x16 = k22_cudnn_x16_at(ctx, x16, u.a16, nx);
        s = k22_cudnn_run(ctx, p, K22_CONV_BWD_FILTER, x, nx, x16, dy, u.b16, dw, nw, NULL, &u);
        if (s != CUDNN_STATUS_SUCCESS) return s;
        *done_dw = 1;
    }
    return CUDNN_STATUS_SUCCESS;
}

/* ---- creation ---- */

/* The self-test: one convolution with every dimension different (B2 C3 6x5 O2 k3x2 s2,1 p1,0),
 * all three directions in fp32, bf16 and fp16, on integers of at most 2 in magnitude: every sum
 * (at most 72) and the 0.5 biases are exact in all three types and any order, so the results must
 * equal cpu-ref's exactly. Backward starts from gradients of 1 (they must accumulate). 1 when all
 * agree; 0 with ctx->conv_why set otherwise. */
static int k22_cudnn_probe(k22_cuda_ctx *ctx)
{
    const k22_conv2d_desc d = {2, 3, 6, 5, 2, 3, 2, 2, 1, 1, 1, 0, 0};
    int64_t nx, nw, ny;
    k22_cudnn_counts(&d, &nx, &nw, &ny);
    const int64_t nb = d.O, n = 2 * nx + 2 * nw + 2 * ny + nb; /* x w y dy dx dw b */
    float *h = (float *)k22_xcalloc((size_t)n * 2, sizeof(float)), *got = h + n;
    float *hx = h, *hw = hx + nx, *hy = hw + nw, *hdy = hy + ny, *hdx = hdy + ny;
    float *hdw = hdx + nx, *hb = hdw + nw;
    for (int64_t i = 0; i < nx; i++) hx[i] = (float)((i * 7) % 5 - 2);
    for (int64_t i = 0; i < nw; i++) hw[i] = (float)((i * 5) % 3 - 1);
    for (int64_t i = 0; i < ny; i++) hdy[i] = (float)((i * 3) % 5 - 2);
    for (int64_t i = 0; i < nx + nw; i++) hdx[i] = 1.0f; /* dx and dw */
    for (int64_t i = 0; i < nb; i++) hb[i] = i % 2 ? -0.5f : 0.5f;
    k22_backend *ref = k22_backend_cpu_new(1);
    float *want = (float *)k22_xmalloc((size_t)n * sizeof(float));
    memcpy(want, h, (size_t)n * sizeof(float));
    ref->conv2d_fwd(ref->ctx, want + (hy - h), hx, hw, hb, &d);
    ref->conv2d_bwd(ref->ctx, want + (hdx - h), want + (hdw - h), NULL, hdy, hx, hw, &d);
    k22_backend_free(ref);

    float *dev = NULL;
    CUDA_CHECK(cudaMalloc((void **)&dev, (size_t)n * sizeof(float)));
    int saved = ctx->precision, ok = 1;
    const int precs[3] = {K22_PREC_FP32, K22_PREC_BF16, K22_PREC_FP16};
    for (int pi = 0; pi < 3 && ok; pi++) {
        float *x = dev, *w = x + nx, *y = w + nw, *dy = y + ny, *dx = dy + ny, *dw = dx + nx;
        float *b = dw + nw;
        int done = 0, done_dx = 0, done_dw = 0;
        ctx->precision = precs[pi];
        CUDA_CHECK(cudaMemcpyAsync(dev, h, (size_t)n * sizeof(float), cudaMemcpyHostToDevice,
                                   ctx->stream));
        ok = k22_cudnn_conv_fwd(ctx, y, x, NULL, w, b, &d, &done) == CUDNN_STATUS_SUCCESS &&
             k22_cudnn_conv_bwd(ctx, dx, dw, dy, x, NULL, w, &d, &done_dx, &done_dw) ==
                 CUDNN_STATUS_SUCCESS;
        if (ok && !(done && done_dx && done_dw)) {
            snprintf(ctx->conv_why, sizeof ctx->conv_why, "the self-test's convolution did not "
                     "run on cuDNN in %s", k22_cudnn_prec(precs[pi]));
            ok = 0;
        }
        if (!ok) break;
        CUDA_CHECK(cudaMemcpyAsync(got, dev, (size_t)n * sizeof(float), cudaMemcpyDeviceToHost,
                                   ctx->stream));
        CUDA_CHECK(cudaStreamSynchronize(ctx->stream));
        static const char *const part[7] = {"x", "w", "y", "dy", "dx", "dw", "bias"};
        const int64_t start[8] = {0, hw - h, hy - h, hdy - h, hdx - h, hdw - h, hb - h, n};
        ok = k22_cuda_selftest_match(ctx->conv_why, sizeof ctx->conv_why, k22_cudnn_prec(precs[pi]),
                                     got, want, part, start, 7, 0.0f, 0.0f);
    }
    ctx->precision = saved;
    CUDA_CHECK(cudaFree(dev));
    free(h);
    free(want);
    return ok;
}

/* See common.cuh. */
k22_status k22_cudnn_init(k22_cuda_ctx *ctx, k22_err *err)
{
    const char *v = getenv("K22_CUDA_CONV"), *a = getenv("K22_CUDNN_ALGO");
    int by_name = 0;
    if (a && *a && strcmp(a, "heuristic") && strcmp(a, "find"))
        return k22_err_set(err, K22_ERR_ARG, "K22_CUDNN_ALGO='%s': expected heuristic or find", a);
    ctx->cudnn_find = a && !strcmp(a, "find");
    k22_status st = k22_env_flag("K22_CUDNN_LOG", 0, "quiet, the default",
                                 "a line per convolution algorithm choice on stderr",
                                 &ctx->cudnn_log, err);
    if (st) return st;
    snprintf(ctx->conv_impl, sizeof ctx->conv_impl, "im2col");
    if (v && !strcmp(v, "im2col")) return K22_OK;
    if (v && !strcmp(v, "cudnn")) by_name = 1;
    else if (v && *v && strcmp(v, "auto"))
        return k22_err_set(err, K22_ERR_ARG, "K22_CUDA_CONV='%s': expected auto, cudnn or im2col",
                           v);
    ctx->plans = (struct k22_cudnn_plan *)k22_xcalloc(K22_CUDNN_PLANS, sizeof *ctx->plans);
    ctx->cudnn_probing = 1;
    cudnnStatus_t s = cudnnCreate(&ctx->cudnn);
    if (s != CUDNN_STATUS_SUCCESS) {
        ctx->cudnn = NULL;
        snprintf(ctx->conv_why, sizeof ctx->conv_why, "cudnnCreate: %s", cudnnGetErrorString(s));
    } else if ((s = cudnnSetStream(ctx->cudnn, ctx->stream)) != CUDNN_STATUS_SUCCESS) {
        snprintf(ctx->conv_why, sizeof ctx->conv_why, "cudnnSetStream: %s",
                 cudnnGetErrorString(s));
    } else if (!k22_cudnn_probe(ctx)) {
        s = CUDNN_STATUS_INTERNAL_ERROR;
    }
    ctx->cudnn_probing = 0;
    ctx->conv_runs_cudnn = ctx->conv_runs_im2col = 0; /* the counts are the run's */
    ctx->conv_choices = ctx->conv_timed = ctx->conv_changed = ctx->conv_timing_failed = 0;
    if (s == CUDNN_STATUS_SUCCESS) {
        size_t ver = cudnnGetVersion();
        snprintf(ctx->conv_impl, sizeof ctx->conv_impl, "cudnn %zu.%zu.%zu", ver / 10000,
                 ver / 100 % 100, ver % 100);
        return K22_OK;
    }
    k22_cudnn_release(ctx);
    if (by_name)
        return k22_err_set(err, K22_ERR_UNSUPPORTED,
                           "K22_CUDA_CONV=cudnn, but cuDNN is unusable on CUDA device %d: %s",
                           ctx->device, ctx->conv_why);
    fprintf(stderr, "k22: cuDNN is unusable on CUDA device %d (%s); convolutions run as im2col + "
            "cuBLASLt\n", ctx->device, ctx->conv_why);
    return K22_OK;
}

void k22_cudnn_release(k22_cuda_ctx *ctx)
{
    for (int i = 0; i < ctx->nplans; i++) k22_cudnn_plan_clear(&ctx->plans[i]);
    free(ctx->plans);
    ctx->plans = NULL;
    ctx->nplans = ctx->plan_next = 0;
    if (ctx->cudnn) cudnnDestroy(ctx->cudnn);
    ctx->cudnn = NULL;
}
