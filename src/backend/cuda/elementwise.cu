/* elementwise.cu: activations (SiLU, exact GELU, tanh GELU, QuickGELU) forward and backward,
 * and add/mul/scale with their backwards. All are grid-stride loops over n floats; outputs may
 * alias inputs because each element is read before it is written by the same thread. Backward
 * ops accumulate (+=), as ops.h requires. */
#include "common.cuh"

/* sqrt(2/pi), 1/sqrt(2), 1/sqrt(2 pi), and the constants of the two GELU approximations. */
#define K22_SQRT_2_OVER_PI 0.7978845608028654f
#define K22_SQRT1_2 0.70710678118654752f
#define K22_INV_SQRT_2PI 0.3989422804014327f
#define K22_GELU_TANH_C 0.044715f
#define K22_QUICK_GELU_C 1.702f

__device__ __forceinline__ float k22_sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

__device__ __forceinline__ float k22_act_value(int act, float x)
{
    switch (act) {
    case K22_ACT_NONE: return x; /* act_fwd_y16 only */
    case K22_ACT_SILU: return x / (1.0f + expf(-x));
    case K22_ACT_GELU: return 0.5f * x * (1.0f + erff(x * K22_SQRT1_2));
    case K22_ACT_GELU_TANH: {
        float u = K22_SQRT_2_OVER_PI * (x + K22_GELU_TANH_C * x * x * x);
        return 0.5f * x * (1.0f + tanhf(u));
    }
    default: return x * k22_sigmoidf(K22_QUICK_GELU_C * x); /* K22_ACT_QUICK_GELU */
    }
}

/* d act(x) / dx. */
__device__ __forceinline__ float k22_act_slope(int act, float x)
{
    switch (act) {
    case K22_ACT_SILU: {
        float s = k22_sigmoidf(x);
        return s * (1.0f + x * (1.0f - s));
    }
    case K22_ACT_GELU: {
        float cdf = 0.5f * (1.0f + erff(x * K22_SQRT1_2));
        float pdf = expf(-0.5f * x * x) * K22_INV_SQRT_2PI;
        return cdf + x * pdf;
    }
    case K22_ACT_GELU_TANH: {
        float x2 = x * x;
        float t = tanhf(K22_SQRT_2_OVER_PI * (x + K22_GELU_TANH_C * x2 * x));
        float du = K22_SQRT_2_OVER_PI * (1.0f + 3.0f * K22_GELU_TANH_C * x2);
        return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * du;
    }
    default: { /* K22_ACT_QUICK_GELU */
        float s = k22_sigmoidf(K22_QUICK_GELU_C * x);
        return s + K22_QUICK_GELU_C * x * s * (1.0f - s);
    }
    }
}

__global__ void k22_act_fwd_kernel(int act, float *y, const float *x, int64_t n)
{
    K22_GRID_STRIDE(i, n) y[i] = k22_act_value(act, x[i]);
}

__global__ void k22_act_bwd_kernel(int act, float *dx, const float *dy, const float *x, int64_t n)
{
    K22_GRID_STRIDE(i, n) dx[i] += dy[i] * k22_act_slope(act, x[i]);
}

/* act_fwd's floats rounded to bf16 (fp16 0) or fp16 (1). */
__global__ void k22_act_fwd16_kernel(int act, uint16_t *y16, const float *x, int64_t n, int fp16)
{
    K22_GRID_STRIDE(i, n) y16[i] = k22_cuda_round16(k22_act_value(act, x[i]), fp16);
}

static void k22_act_check(int act)
{
    if (act < 0 || act >= K22_ACT_COUNT) K22_FATAL("cuda: unknown activation id %d", act);
}

void k22_cuda_act_fwd(void *vctx, int act, float *y, const float *x, int64_t n)
{
    k22_act_check(act);
    K22_LAUNCH(k22_act_fwd_kernel, n, act, y, x, n);
}

void k22_cuda_act_fwd_y16(void *vctx, int act, uint16_t *y16, const float *x, int64_t n)
{
    k22_cuda_ctx *ctx = K22_CUDA_CTX(vctx);
    K22_REQUIRE(ctx->precision != K22_PREC_FP32);
    if (act != K22_ACT_NONE) k22_act_check(act);
    K22_LAUNCH(k22_act_fwd16_kernel, n, act, y16, x, n, ctx->precision == K22_PREC_FP16);
}

void k22_cuda_act_bwd(void *vctx, int act, float *dx, const float *dy, const float *x, int64_t n)
{
    k22_act_check(act);
    if (!dx) return;
    K22_LAUNCH(k22_act_bwd_kernel, n, act, dx, dy, x, n);
}

__global__ void k22_add_kernel(float *y, const float *a, const float *b, int64_t n)
{
    K22_GRID_STRIDE(i, n) y[i] = a[i] + b[i];
}

__global__ void k22_mul_kernel(float *y, const float *a, const float *b, int64_t n)
{
    K22_GRID_STRIDE(i, n) y[i] = a[i] * b[i];
}

__global__ void k22_scale_kernel(float *y, const float *a, float s, int64_t n)
{
    K22_GRID_STRIDE(i, n) y[i] = s * a[i];
}

/* da or db may be NULL, or the same buffer (y = a + a): one thread does both updates. */
__global__ void k22_add_bwd_kernel(float *da, float *db, const float *dy, int64_t n)
{
    K22_GRID_STRIDE(i, n)
    {
        float g = dy[i];
        if (da) da[i] += g;
        if (db) db[i] += g;
    }
}

/* Both products are formed before either gradient is written, so da may alias a or b. The
 * products are rounded before the add (__fmul_rn: no FMA), as the CPU reference does, so the
 * two backends agree to the bit. */
__global__ void k22_mul_bwd_kernel(float *da, float *db, const float *dy, const float *a,
                                   const float *b, int64_t n)
{
    K22_GRID_STRIDE(i, n)
    {
        float g = dy[i];
        float ga = da ? __fmul_rn(g, b[i]) : 0.0f;
        float gb = db ? __fmul_rn(g, a[i]) : 0.0f;
        if (da) da[i] += ga;
        if (db) db[i] += gb;
    }
}

__global__ void k22_scale_bwd_kernel(float *da, const float *dy, float s, int64_t n)
{
    K22_GRID_STRIDE(i, n) da[i] += __fmul_rn(s, dy[i]);
}

/* y may be the weights (an update outside AdamW): the shadow is told (weight_shadow.cu). */
void k22_cuda_add(void *vctx, float *y, const float *a, const float *b, int64_t n)
{
    if (n > 0) k22_cuda_shadow_touch(K22_CUDA_CTX(vctx), y, (size_t)n * sizeof(float), "add");
    K22_LAUNCH(k22_add_kernel, n, y, a, b, n);
}

void k22_cuda_mul(void *vctx, float *y, const float *a, const float *b, int64_t n)
{
    if (n > 0) k22_cuda_shadow_touch(K22_CUDA_CTX(vctx), y, (size_t)n * sizeof(float), "mul");
    K22_LAUNCH(k22_mul_kernel, n, y, a, b, n);
}

void k22_cuda_scale(void *vctx, float *y, const float *a, float s, int64_t n)
{
    if (n > 0) k22_cuda_shadow_touch(K22_CUDA_CTX(vctx), y, (size_t)n * sizeof(float), "scale");
    K22_LAUNCH(k22_scale_kernel, n, y, a, s, n);
}

void k22_cuda_add_bwd(void *vctx, float *da, float *db, const float *dy, int64_t n)
{
    if (!da && !db) return;
    K22_LAUNCH(k22_add_bwd_kernel, n, da, db, dy, n);
}

void k22_cuda_mul_bwd(void *vctx, float *da, float *db, const float *dy, const float *a,
                      const float *b, int64_t n)
{
    if (!da && !db) return;
    K22_LAUNCH(k22_mul_bwd_kernel, n, da, db, dy, a, b, n);
}

void k22_cuda_scale_bwd(void *vctx, float *da, const float *dy, float s, int64_t n)
{
    if (!da) return;
    K22_LAUNCH(k22_scale_bwd_kernel, n, da, dy, s, n);
}
