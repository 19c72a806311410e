/* cuda_backend.cu: the CUDA backend's context (device, stream, cuBLASLt handle, workspace, the
 * convolution implementation), its memory entries, the grow-only op scratch, the fatal-error
 * checks, and the op table (include/k22/ops.h): every entry is filled. */
#include "common.cuh"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* 32 MiB: what NVIDIA suggests for cuBLASLt on Hopper; enough for every split-K algorithm. */
#define K22_CUDA_WORKSPACE_BYTES ((size_t)32 << 20)

void k22_cuda_die(const char *what, const char *why, const char *file, int line)
{
    int dev = -1;
    cudaGetDevice(&dev); /* best effort: the error may have broken the context */
    k22_fatal_at(file, line, "%s failed: %s (device %d)", what, why, dev);
}

void k22_cuda_check_at(cudaError_t e, const char *what, const char *file, int line)
{
    if (e == cudaSuccess) return;
    char why[256];
    snprintf(why, sizeof why, "%s (%s)", cudaGetErrorString(e), cudaGetErrorName(e));
    k22_cuda_die(what, why, file, line);
}

void k22_cublas_check_at(cublasStatus_t s, const char *what, const char *file, int line)
{
    if (s == CUBLAS_STATUS_SUCCESS) return;
    char why[256];
    snprintf(why, sizeof why, "cuBLAS status %d (%s)", (int)s, cublasLtGetStatusString(s));
    k22_cuda_die(what, why, file, line);
}

void k22_cudnn_check_at(cudnnStatus_t s, const char *what, const char *file, int line)
{
    if (s == CUDNN_STATUS_SUCCESS) return;
    char why[512], detail[256] = "";
    cudnnGetLastErrorString(detail, sizeof detail); /* cuDNN 9's account of the failure */
    snprintf(why, sizeof why, "cuDNN status %d (%s)%s%s", (int)s, cudnnGetErrorString(s),
             detail[0] ? ": " : "", detail);
    k22_cuda_die(what, why, file, line);
}

/* ---- memory ---- */

/* Zero-filled device memory, stream-ordered where the device allows it. Dies on failure; a
 * 0-byte request still returns a distinct pointer, so callers never mistake it for failure. */
static void *k22_cuda_alloc(void *vctx, size_t bytes)
{
    k22_cuda_ctx *ctx = K22_CUDA_CTX(vctx);
    size_t n = bytes ? bytes : 1;
    void *p = NULL;
    cudaError_t e = ctx->async_alloc ? cudaMallocAsync(&p, n, ctx->stream) : cudaMalloc(&p, n);
    if (e != cudaSuccess) {
        char what[96];
        snprintf(what, sizeof what, "cudaMalloc%s(%zu bytes)", ctx->async_alloc ? "Async" : "",
                 bytes);
        k22_cuda_check_at(e, what, __FILE__, __LINE__);
    }
    CUDA_CHECK(cudaMemsetAsync(p, 0, n, ctx->stream));
    return p;
}

void k22_cuda_dev_free(k22_cuda_ctx *ctx, void *p)
{
    if (!p) return;
    if (ctx->async_alloc) {
        CUDA_CHECK(cudaFreeAsync(p, ctx->stream));
    } else {
        /* cudaFree synchronizes the device, so work queued on p finishes first. */
        CUDA_CHECK(cudaFree(p));
    }
}

/* Freeing the registered parameter buffer forgets it: its address may come back in another
 * allocation, which the shadow must not stand for. */
static void k22_cuda_free(void *vctx, void *p)
{
    k22_cuda_ctx *ctx = K22_CUDA_CTX(vctx);
    if (p && p == ctx->shadow.base) k22_cuda_params_register(ctx, NULL, 0);
    k22_cuda_dev_free(ctx, p);
}

/* Grows the buffer *buf of *have bytes to at least `bytes` (stream-ordered: work queued on the
 * old buffer finishes before it is freed) and returns it. `what` names it in the fatal error. */
static void *k22_cuda_grow(k22_cuda_ctx *ctx, void **buf, size_t *have, size_t bytes,
                           const char *what)
{
    if (bytes <= *have) return *buf;
    /* Grow by at least half again, so a run whose sizes creep up reallocates only a few times. */
    size_t want = *have + *have / 2;
    if (want < bytes) want = bytes;
    k22_cuda_dev_free(ctx, *buf);
    *buf = NULL;
    *have = 0;
    void *p = NULL;
    cudaError_t e =
        ctx->async_alloc ? cudaMallocAsync(&p, want, ctx->stream) : cudaMalloc(&p, want);
    if (e != cudaSuccess) {
        char msg[96];
        snprintf(msg, sizeof msg, "cudaMalloc(%s of %zu bytes)", what, want);
        k22_cuda_check_at(e, msg, __FILE__, __LINE__);
    }
    *buf = p;
    *have = want;
    return p;
}

void *k22_cuda_scratch(k22_cuda_ctx *ctx, size_t bytes)
{
    return k22_cuda_grow(ctx, &ctx->scratch, &ctx->scratch_bytes, bytes, "op scratch");
}

void *k22_cuda_lowp(k22_cuda_ctx *ctx, size_t bytes)
{
    return k22_cuda_grow(ctx, &ctx->lowp, &ctx->lowp_bytes, bytes, "16-bit GEMM operands");
}

void *k22_cuda_wide(k22_cuda_ctx *ctx, size_t bytes)
{
    return k22_cuda_grow(ctx, &ctx->wide, &ctx->wide_bytes, bytes,
                         "float copy of a 16-bit activation");
}

void *k22_cuda_shadow_buf(k22_cuda_ctx *ctx, size_t bytes)
{
    return k22_cuda_grow(ctx, (void **)&ctx->shadow.buf, &ctx->shadow.bytes, bytes,
                         "16-bit weight shadow");
}

/* Returns when host_src may be reused or freed: CUDA only promises that for pageable memory
 * loosely, so wait for the copy. Uploads are rare (weights once, one batch per step). */
static void k22_cuda_to_device(void *vctx, void *dst, const void *host_src, size_t bytes)
{
    k22_cuda_ctx *ctx = K22_CUDA_CTX(vctx);
    if (!bytes) return;
    k22_cuda_shadow_touch(ctx, dst, bytes, "to_device");
    CUDA_CHECK(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, ctx->stream));
    CUDA_CHECK(cudaStreamSynchronize(ctx->stream));
}

static void k22_cuda_to_host(void *vctx, void *host_dst, const void *src, size_t bytes)
{
    k22_cuda_ctx *ctx = K22_CUDA_CTX(vctx);
    if (bytes)
        CUDA_CHECK(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, ctx->stream));
    CUDA_CHECK(cudaStreamSynchronize(ctx->stream));
}

static void k22_cuda_copy(void *vctx, void *dst, const void *src, size_t bytes)
{
    k22_cuda_ctx *ctx = K22_CUDA_CTX(vctx);
    if (!bytes || dst == src) return;
    k22_cuda_shadow_touch(ctx, dst, bytes, "copy");
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, ctx->stream));
}

static void k22_cuda_zero(void *vctx, void *p, size_t bytes)
{
    k22_cuda_ctx *ctx = K22_CUDA_CTX(vctx);
    if (!bytes) return;
    k22_cuda_shadow_touch(ctx, p, bytes, "zero");
    CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, ctx->stream));
}

static void k22_cuda_sync(void *vctx)
{
    CUDA_CHECK(cudaStreamSynchronize(K22_CUDA_CTX(vctx)->stream));
}

/* The GEMMs that follow round their operands to this k22_precision (matmul.cu). */
static void k22_cuda_set_precision(void *vctx, int precision)
{
    k22_cuda_ctx *ctx = K22_CUDA_CTX(vctx);
    if (precision != K22_PREC_FP32) k22_cuda_attn_ready(ctx); /* auto's self-test, first time only */
    ctx->precision = precision; /* a shadow of another precision reads as stale */
}

/* Releases what k22_cuda_ctx_init made; safe on a partly built context. */
static void k22_cuda_ctx_release(k22_cuda_ctx *ctx)
{
    if (ctx->stream) cudaStreamSynchronize(ctx->stream);
    if (ctx->scratch) cudaFree(ctx->scratch);
    if (ctx->lowp) cudaFree(ctx->lowp);
    if (ctx->wide) cudaFree(ctx->wide);
    if (ctx->partials) cudaFree(ctx->partials);
    if (ctx->workspace) cudaFree(ctx->workspace);
    k22_cuda_shadow_release(ctx);
    k22_lt_plans_release(ctx);
    k22_cudnn_release(ctx);
    if (ctx->lt) cublasLtDestroy(ctx->lt);
    if (ctx->stream) cudaStreamDestroy(ctx->stream);
    memset(ctx, 0, sizeof *ctx);
}

static void k22_cuda_destroy(k22_backend *self)
{
    if (!self) return;
    k22_cuda_ctx *ctx = K22_CUDA_CTX(self->ctx);
    /* Surface any asynchronous error of the last ops before tearing down. */
    CUDA_CHECK(cudaStreamSynchronize(ctx->stream));
    k22_cuda_ctx_release(ctx);
    free(ctx);
    free(self);
}

/* ---- construction ---- */

/* Chunk limits: 128 MiB of im2col columns, 256 MiB of attention scores; K22_CUDA_CHUNK_FLOATS (a
 * positive integer) lowers both, for the tests of the banded paths. */
static void k22_cuda_limits_init(k22_cuda_ctx *ctx)
{
    ctx->conv_col_floats = (int64_t)32 << 20;
    ctx->attn_chunk_floats = (int64_t)64 << 20;
    const char *s = getenv("K22_CUDA_CHUNK_FLOATS");
    if (!s || !*s) return;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (*end || v < 1) K22_FATAL("K22_CUDA_CHUNK_FLOATS='%s': expected a positive integer", s);
    if (v < ctx->conv_col_floats) ctx->conv_col_floats = v;
    if (v < ctx->attn_chunk_floats) ctx->attn_chunk_floats = v;
}

/* Recoverable: no driver, no device, or the device refuses the context are user-facing
 * conditions (the caller may fall back to the CPU), so they fill err instead of dying. */
static k22_status k22_cuda_ctx_init(k22_cuda_ctx *ctx, int device, k22_err *err)
{
    int count = 0, pools = 0;
    const char *step = "cudaSetDevice";
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess)
        return k22_err_set(err, K22_ERR_UNSUPPORTED, "no usable CUDA device: %s (%s)",
                           cudaGetErrorString(e), cudaGetErrorName(e));
    if (device < 0 || device >= count)
        return k22_err_set(err, K22_ERR_ARG, "CUDA device %d requested but %d device%s visible",
                           device, count, count == 1 ? " is" : "s are");
    ctx->device = device;
    k22_cuda_limits_init(ctx);
    {
        k22_status st = k22_cuda_shadow_init(ctx, err); /* K22_CUDA_WEIGHT_SHADOW */
        if (st != K22_OK) return st;
    }
    k22_lt_plans_init(ctx);
    if ((e = cudaSetDevice(device)) != cudaSuccess) goto cuda_fail;
    step = "cudaDeviceGetAttribute(cudaDevAttrMemoryPoolsSupported)";
    e = cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, device);
    if (e != cudaSuccess) goto cuda_fail;
    ctx->async_alloc = pools != 0;
    if (ctx->async_alloc) {
        /* Keep freed blocks in the pool instead of returning them to the driver at every sync. */
        cudaMemPool_t pool;
        uint64_t keep = UINT64_MAX;
        step = "cudaDeviceGetDefaultMemPool";
        if ((e = cudaDeviceGetDefaultMemPool(&pool, device)) != cudaSuccess) goto cuda_fail;
        step = "cudaMemPoolSetAttribute(cudaMemPoolAttrReleaseThreshold)";
        e = cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep);
        if (e != cudaSuccess) goto cuda_fail;
    }
    step = "cudaStreamCreateWithFlags";
    if ((e = cudaStreamCreateWithFlags(&ctx->stream, cudaStreamNonBlocking)) != cudaSuccess)
        goto cuda_fail;
    step = "cudaMalloc(workspace)";
    ctx->workspace_bytes = K22_CUDA_WORKSPACE_BYTES;
    if ((e = cudaMalloc(&ctx->workspace, ctx->workspace_bytes)) != cudaSuccess) goto cuda_fail;
    step = "cudaMalloc(reduction scratch)";
    if ((e = cudaMalloc((void **)&ctx->partials, (K22_CUDA_REDUCE_BLOCKS + 1) * sizeof(double))) !=
        cudaSuccess)
        goto cuda_fail;
    {
        cublasStatus_t s = cublasLtCreate(&ctx->lt);
        if (s != CUBLAS_STATUS_SUCCESS) {
            ctx->lt = NULL;
            k22_cuda_ctx_release(ctx);
            return k22_err_set(err, K22_ERR_UNSUPPORTED, "cublasLtCreate on CUDA device %d: %s",
                               device, cublasLtGetStatusString(s));
        }
    }
    {
        /* K22_CUDA_EPILOGUE: linear biases in cuBLASLt's epilogue or in a kernel (matmul.cu);
         * K22_LT_LOG: a line per GEMM set-up (lt_plan.cu) */
        k22_status st = k22_env_flag("K22_CUDA_EPILOGUE", 1, "linear biases added by a kernel",
                                     "in cuBLASLt's epilogue, the default", &ctx->bias_epilogue,
                                     err);
        if (st == K22_OK)
            st = k22_env_flag("K22_LT_LOG", 0, "quiet, the default",
                              "a line per cuBLASLt set-up on stderr", &ctx->lt_log, err);
        if (st == K22_OK) st = k22_cudnn_init(ctx, err); /* K22_CUDA_CONV; cuDNN or its fallback */
        if (st == K22_OK) st = k22_cuda_attn_init(ctx, err); /* K22_CUDA_ATTN */
        if (st != K22_OK) k22_cuda_ctx_release(ctx);
        return st;
    }
cuda_fail:
    k22_cuda_ctx_release(ctx);
    return k22_err_set(err, K22_ERR_UNSUPPORTED, "%s on CUDA device %d: %s (%s)", step, device,
                       cudaGetErrorString(e), cudaGetErrorName(e));
}

static void k22_cuda_table_fill(k22_backend *be)
{
    be->alloc = k22_cuda_alloc;
    be->free = k22_cuda_free;
    be->to_device = k22_cuda_to_device;
    be->to_host = k22_cuda_to_host;
    be->copy = k22_cuda_copy;
    be->zero = k22_cuda_zero;
    be->sync = k22_cuda_sync;
    be->destroy = k22_cuda_destroy;
    be->set_precision = k22_cuda_set_precision;
    be->params_register = k22_cuda_params_register;
    be->params_changed = k22_cuda_params_changed;

    be->matmul = k22_cuda_matmul;
    be->linear_fwd = k22_cuda_linear_fwd;
    be->linear_bwd = k22_cuda_linear_bwd;

    be->act_fwd = k22_cuda_act_fwd;
    be->act_bwd = k22_cuda_act_bwd;
    be->add = k22_cuda_add;
    be->mul = k22_cuda_mul;
    be->scale = k22_cuda_scale;
    be->add_bwd = k22_cuda_add_bwd;
    be->mul_bwd = k22_cuda_mul_bwd;
    be->scale_bwd = k22_cuda_scale_bwd;

    be->conv2d_fwd = k22_cuda_conv2d_fwd;
    be->conv2d_bwd = k22_cuda_conv2d_bwd;
    be->linear_fwd_x16 = k22_cuda_linear_fwd_x16;
    be->linear_bwd_x16 = k22_cuda_linear_bwd_x16;
    be->conv2d_fwd_x16 = k22_cuda_conv2d_fwd_x16;
    be->conv2d_bwd_x16 = k22_cuda_conv2d_bwd_x16;

    be->group_norm_fwd = k22_cuda_group_norm_fwd;
    be->group_norm_bwd = k22_cuda_group_norm_bwd;
    be->layer_norm_fwd = k22_cuda_layer_norm_fwd;
    be->layer_norm_fwd_y16 = k22_cuda_layer_norm_fwd_y16;
    be->layer_norm_bwd = k22_cuda_layer_norm_bwd;

    be->softmax_fwd = k22_cuda_softmax_fwd;
    be->softmax_bwd = k22_cuda_softmax_bwd;
    be->attention_fwd = k22_cuda_attention_fwd;
    be->attention_bwd = k22_cuda_attention_bwd;
    be->attention_fwd_x16 = k22_cuda_attention_fwd_x16;
    be->attention_bwd_x16 = k22_cuda_attention_bwd_x16;

    be->concat_fwd = k22_cuda_concat_fwd;
    be->concat_bwd = k22_cuda_concat_bwd;
    be->permute_fwd = k22_cuda_permute_fwd;
    be->permute_bwd = k22_cuda_permute_bwd;
    be->upsample2x_fwd = k22_cuda_upsample2x_fwd;
    be->upsample2x_bwd = k22_cuda_upsample2x_bwd;
    be->avgpool2x_fwd = k22_cuda_avgpool2x_fwd;
    be->avgpool2x_bwd = k22_cuda_avgpool2x_bwd;
    be->resize_nearest_fwd = k22_cuda_resize_nearest_fwd;
    be->chan_affine_fwd = k22_cuda_chan_affine_fwd;
    be->chan_affine_bwd = k22_cuda_chan_affine_bwd;
    be->group_norm_act_fwd = k22_cuda_group_norm_act_fwd;
    be->group_norm_act_bwd = k22_cuda_group_norm_act_bwd;
    be->group_norm_act_fwd_y16 = k22_cuda_group_norm_act_fwd_y16;
    be->act_fwd_y16 = k22_cuda_act_fwd_y16;

    be->timestep_embed_fwd = k22_cuda_timestep_embed_fwd;
    be->timestep_embed_bwd = k22_cuda_timestep_embed_bwd;
    be->mse_fwd = k22_cuda_mse_fwd;
    be->mse_bwd = k22_cuda_mse_bwd;

    be->adamw_step = k22_cuda_adamw_step;
    be->sumsq = k22_cuda_sumsq;
}

/* See common.cuh. */
int k22_cuda_selftest_match(char *why, size_t nwhy, const char *prec, const float *got,
                            const float *want, const char *const *parts, const int64_t *start,
                            int nparts, float atol, float rtol)
{
    for (int p = 0; p < nparts; p++)
        for (int64_t i = start[p]; i < start[p + 1]; i++)
            if (!(fabsf(got[i] - want[i]) <= atol + rtol * fabsf(want[i]))) {
                snprintf(why, nwhy, "self-test in %s: %s[%lld] is %g where cpu-ref has %g", prec, parts[p],
                         (long long)(i - start[p]), got[i], want[i]);
                return 0;
            }
    return 1;
}

/* backend.c's k22_backend_cuda_stream. */
extern "C" void *k22_cuda_stream_of(void *vctx)
{
    return (void *)K22_CUDA_CTX(vctx)->stream;
}

/* backend.c's k22_backend_mem_free: the driver's free memory plus what the stream-ordered pool
 * holds reserved but unused (it keeps freed blocks: the release threshold set at creation). */
extern "C" size_t k22_cuda_mem_free_of(void *vctx, size_t *total)
{
    k22_cuda_ctx *ctx = K22_CUDA_CTX(vctx);
    size_t fr = 0, tot = 0;
    CUDA_CHECK(cudaSetDevice(ctx->device));
    CUDA_CHECK(cudaMemGetInfo(&fr, &tot));
    if (ctx->async_alloc) {
        cudaMemPool_t pool;
        uint64_t reserved = 0, used = 0;
        CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, ctx->device));
        CUDA_CHECK(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemCurrent, &reserved));
        CUDA_CHECK(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemCurrent, &used));
        if (reserved > used) fr += (size_t)(reserved - used);
    }
    *total = tot;
    return fr;
}

/* backend.c's k22_backend_conv_impl for a CUDA backend's context. */
extern "C" const char *k22_cuda_conv_impl(void *vctx, int64_t *n_cudnn, int64_t *n_im2col)
{
    k22_cuda_ctx *ctx = K22_CUDA_CTX(vctx);
    if (n_cudnn) *n_cudnn = ctx->conv_runs_cudnn;
    if (n_im2col) *n_im2col = ctx->conv_runs_im2col;
    return ctx->conv_impl;
}

/* backend.c's k22_backend_cuda_stats for a CUDA backend's context. */
extern "C" void k22_cuda_stats_of(void *vctx, k22_cuda_stats *st)
{
    k22_cuda_ctx *ctx = K22_CUDA_CTX(vctx);
    static const char *const modes[] = {"off", "on", "strict"};
    st->shadow = modes[ctx->shadow.mode];
    st->shadow_reads = ctx->shadow.reads;
    st->shadow_refreshes = ctx->shadow.refreshes;
    st->shadow_updates = ctx->shadow.updates;
    st->gemm_heuristics = ctx->lt_heuristics;
    st->gemm_plans = ctx->lt_builds;
    st->attn = ctx->attn_flash == K22_FA_ON ? (ctx->attn_mma ? "fused-mma" : "fused")
               : ctx->attn_flash == K22_FA_OFF ? "gemm" : "untested";
    st->attn_flash = ctx->attn_runs_flash;
    st->attn_flash16 = ctx->attn_runs_flash16;
    st->attn_gemm = ctx->attn_runs_gemm;
    st->bias_epilogue = ctx->bias_runs[1];
    st->bias_kernel = ctx->bias_runs[0];
    st->conv_algo = ctx->cudnn_find ? "find" : "heuristic";
    st->conv_choices = ctx->conv_choices;
    st->conv_timed = ctx->conv_timed;
    st->conv_changed = ctx->conv_changed;
}

/* Returns a backend on `device` (owned by the caller; release with k22_backend_free), or NULL
 * with err filled when no CUDA device can be used. */
extern "C" k22_backend *k22_backend_cuda_new(int device, k22_err *err)
{
    k22_cuda_ctx *ctx = (k22_cuda_ctx *)k22_xcalloc(1, sizeof *ctx);
    if (k22_cuda_ctx_init(ctx, device, err) != K22_OK) {
        free(ctx);
        return NULL;
    }
    k22_backend *be = (k22_backend *)k22_xcalloc(1, sizeof *be);
    be->name = "cuda";
    be->dev = K22_DEV_CUDA;
    be->ctx = ctx;
    k22_cuda_table_fill(be);
    return be;
}
