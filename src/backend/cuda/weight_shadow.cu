/* weight_shadow.cu: a 16-bit copy of the parameter buffer (ops.h params_register), kept for the
 * GEMM-class ops under bf16/fp16.
 *
 * Under --mixed_precision every GEMM operand is rounded to 16 bits (matmul.cu's packing kernel,
 * conv_cudnn.cu's copies). The weights are read by the forward and the backward-data products of
 * every micro-step but change once per optimizer step, so rounding them per call moves 6 bytes a
 * parameter per read for nothing. The shadow holds them rounded once, with the packing kernel's
 * rounding (k22_cuda_round16), and an operand inside the registered buffer is read from it
 * (k22_cuda_shadow_read) with the bits a packed copy would have.
 *
 * Keeping it current: the AdamW kernel writes the rounding of each weight it updates
 * (k22_cuda_shadow_update: 2 bytes more than it writes anyway). Any other write this backend sees
 * into the buffer (to_device, copy, zero, add, mul, scale: k22_cuda_shadow_touch) marks it stale,
 * and so does params_changed, which the trainer calls after writes the backend cannot see (an
 * NCCL all-gather into the weights); a change of precision does too. A stale shadow is rebuilt in
 * one pass (4 bytes read, 2 written a parameter) at the next read.
 *
 * K22_CUDA_WEIGHT_SHADOW: 1 (the default) on; 0 off (every operand is packed, as before the
 * shadow: the A/B switch and safety valve); strict: on, and a write through a backend entry into
 * the buffer that no params_changed announced before the next read is fatal. The tests run strict:
 * on the emulator the all-gather goes through MPI and to_device, which the backend sees, so only
 * strict makes a trainer that forgets params_changed after it (which NCCL needs) fail there. */
#include "common.cuh"

#include <stdlib.h>
#include <string.h>

k22_status k22_cuda_shadow_init(k22_cuda_ctx *ctx, k22_err *err)
{
    const char *v = getenv("K22_CUDA_WEIGHT_SHADOW");
    memset(&ctx->shadow, 0, sizeof ctx->shadow);
    if (!v || !*v || !strcmp(v, "1")) ctx->shadow.mode = K22_SHADOW_ON;
    else if (!strcmp(v, "0")) ctx->shadow.mode = K22_SHADOW_OFF;
    else if (!strcmp(v, "strict")) ctx->shadow.mode = K22_SHADOW_STRICT;
    else return k22_err_set(err, K22_ERR_ARG, "K22_CUDA_WEIGHT_SHADOW='%s': expected 1, 0 or strict", v);
    return K22_OK;
}

void k22_cuda_shadow_release(k22_cuda_ctx *ctx)
{
    k22_cuda_shadow *s = &ctx->shadow;
    if (s->buf) cudaFree(s->buf);
    s->buf = NULL;
    s->bytes = 0;
    s->base = NULL;
    s->n = 0;
}

static int k22_shadow_lowp(int precision)
{
    return precision == K22_PREC_BF16 || precision == K22_PREC_FP16;
}

/* See ops.h. A new buffer's contents are unknown to the shadow: stale until the first read. */
void k22_cuda_params_register(void *vctx, float *p, int64_t n)
{
    k22_cuda_ctx *ctx = K22_CUDA_CTX(vctx);
    k22_cuda_shadow *s = &ctx->shadow;
    if (s->buf && (!p || (size_t)n * 2 > s->bytes)) { /* forgotten, or too small to keep */
        k22_cuda_dev_free(ctx, s->buf);
        s->buf = NULL;
        s->bytes = 0;
    }
    s->base = s->mode != K22_SHADOW_OFF && p && n > 0 ? p : NULL;
    s->n = s->base ? n : 0;
    s->prec = K22_PREC_FP32;
    s->unannounced = NULL;
}

void k22_cuda_params_changed(void *vctx)
{
    k22_cuda_shadow *s = &K22_CUDA_CTX(vctx)->shadow;
    s->prec = K22_PREC_FP32;
    s->unannounced = NULL;
}

/* Whether [p, p + bytes) overlaps the registered buffer. */
static int k22_shadow_overlaps(const k22_cuda_shadow *s, const void *p, size_t bytes)
{
    uintptr_t a = (uintptr_t)p, lo = (uintptr_t)s->base, hi = lo + (uintptr_t)s->n * sizeof(float);
    return s->base && bytes && a < hi && a + bytes > lo;
}

/* Whether the n floats at p lie inside it. */
static int k22_shadow_holds(const k22_cuda_shadow *s, const float *p, int64_t n)
{
    return s->base && p >= s->base && n >= 0 && n <= s->n - (p - s->base);
}

void k22_cuda_shadow_touch(k22_cuda_ctx *ctx, const void *p, size_t bytes, const char *what)
{
    k22_cuda_shadow *s = &ctx->shadow;
    if (!k22_shadow_overlaps(s, p, bytes)) return;
    s->prec = K22_PREC_FP32;
    if (s->mode == K22_SHADOW_STRICT && !s->unannounced) s->unannounced = what;
}

/* Rounds the whole buffer into the shadow at the current precision. */
static void k22_shadow_refresh(k22_cuda_ctx *ctx)
{
    k22_cuda_shadow *s = &ctx->shadow;
    s->buf = (uint16_t *)k22_cuda_shadow_buf(ctx, (size_t)s->n * 2);
    /* cudaMalloc's 256-byte alignment: a shadow pointer is as aligned as its offset says */
    K22_REQUIRE(((uintptr_t)s->buf & 255) == 0);
    k22_cuda_round_lowp(ctx, s->buf, s->base, s->n);
    s->prec = ctx->precision;
    s->refreshes++;
}

const uint16_t *k22_cuda_shadow_read(k22_cuda_ctx *ctx, const float *p, int64_t n, uint32_t align)
{
    k22_cuda_shadow *s = &ctx->shadow;
    if (!k22_shadow_lowp(ctx->precision) || !k22_shadow_holds(s, p, n)) return NULL;
    int64_t off = p - s->base;
    if (((uintptr_t)off * 2) & (align - 1)) return NULL;
    if (s->unannounced)
        K22_FATAL("K22_CUDA_WEIGHT_SHADOW=strict: %s wrote into the registered parameter buffer and "
                  "no params_changed followed before a GEMM read its 16-bit shadow (a trainer that "
                  "writes the weights outside the backend's AdamW must call "
                  "k22_backend_params_changed)", s->unannounced);
    if (s->prec != ctx->precision) k22_shadow_refresh(ctx);
    s->reads++;
    return s->buf + off;
}

uint16_t *k22_cuda_shadow_update(k22_cuda_ctx *ctx, const float *p, int64_t n)
{
    k22_cuda_shadow *s = &ctx->shadow;
    if (!k22_shadow_overlaps(s, p, (size_t)n * sizeof(float))) return NULL;
    if (s->prec == ctx->precision && k22_shadow_lowp(s->prec) && k22_shadow_holds(s, p, n)) {
        s->updates++;
        return s->buf + (p - s->base);
    }
    s->prec = K22_PREC_FP32; /* the update is not mirrored: rebuilt at the next read */
    return NULL;
}
