/* fast_act.c: activations and softmax, float math (erff, expf, tanhf as torch uses), OpenMP
 * over elements or rows. */
#include <math.h>

#include "cpu_ops.h"

static inline float fast_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

void k22_fast_act_fwd(void *ctx, int act, float *y, const float *x, int64_t n)
{
    const float k = 0.7978845608028654f; /* sqrt(2/pi) */
    switch (act) {
    case K22_ACT_SILU:
#pragma omp parallel for
        for (int64_t i = 0; i < n; i++) y[i] = x[i] * fast_sigmoid(x[i]);
        break;
    case K22_ACT_GELU:
#pragma omp parallel for
        for (int64_t i = 0; i < n; i++) y[i] = 0.5f * x[i] * (1.0f + erff(x[i] * (float)M_SQRT1_2));
        break;
    case K22_ACT_GELU_TANH:
#pragma omp parallel for
        for (int64_t i = 0; i < n; i++) {
            float v = x[i];
            y[i] = 0.5f * v * (1.0f + tanhf(k * (v + 0.044715f * v * v * v)));
        }
        break;
    case K22_ACT_QUICK_GELU:
#pragma omp parallel for
        for (int64_t i = 0; i < n; i++) y[i] = x[i] * fast_sigmoid(1.702f * x[i]);
        break;
    default:
        K22_FATAL("unknown activation %d", act);
    }
}

void k22_fast_act_bwd(void *ctx, int act, float *dx, const float *dy, const float *x, int64_t n)
{
    const float k = 0.7978845608028654f;            /* sqrt(2/pi) */
    const float inv_sqrt_2pi = 0.3989422804014327f; /* 1/sqrt(2 pi) */
    switch (act) {
    case K22_ACT_SILU:
#pragma omp parallel for
        for (int64_t i = 0; i < n; i++) {
            float s = fast_sigmoid(x[i]);
            dx[i] += dy[i] * (s * (1.0f + x[i] * (1.0f - s)));
        }
        break;
    case K22_ACT_GELU:
#pragma omp parallel for
        for (int64_t i = 0; i < n; i++) {
            float v = x[i];
            float d =
                0.5f * (1.0f + erff(v * (float)M_SQRT1_2)) + v * expf(-0.5f * v * v) * inv_sqrt_2pi;
            dx[i] += dy[i] * d;
        }
        break;
    case K22_ACT_GELU_TANH:
#pragma omp parallel for
        for (int64_t i = 0; i < n; i++) {
            float v = x[i];
            float t = tanhf(k * (v + 0.044715f * v * v * v));
            float d = 0.5f * (1.0f + t) +
                      0.5f * v * (1.0f - t * t) * k * (1.0f + 3.0f * 0.044715f * v * v);
            dx[i] += dy[i] * d;
        }
        break;
    case K22_ACT_QUICK_GELU:
#pragma omp parallel for
        for (int64_t i = 0; i < n; i++) {
            float s = fast_sigmoid(1.702f * x[i]);
            dx[i] += dy[i] * (s + 1.702f * x[i] * s * (1.0f - s));
        }
        break;
    default:
        K22_FATAL("unknown activation %d", act);
    }
}

void k22_fast_softmax_fwd(void *ctx, float *y, const float *x, int64_t rows, int cols)
{
#pragma omp parallel for
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * cols;
        float *yr = y + r * cols;
        float m = -INFINITY, s = 0;
        for (int j = 0; j < cols; j++) m = xr[j] > m ? xr[j] : m;
        for (int j = 0; j < cols; j++) {
            yr[j] = expf(xr[j] - m);
            s += yr[j];
        }
        float inv = 1.0f / s;
        for (int j = 0; j < cols; j++) yr[j] *= inv;
    }
}

void k22_fast_softmax_bwd(void *ctx, float *dx, const float *dy, const float *y, int64_t rows,
                          int cols)
{
#pragma omp parallel for
    for (int64_t r = 0; r < rows; r++) {
        const float *yr = y + r * cols, *dyr = dy + r * cols;
        float s = 0;
        for (int j = 0; j < cols; j++) s += dyr[j] * yr[j];
        for (int j = 0; j < cols; j++) dx[r * cols + j] += yr[j] * (dyr[j] - s);
    }
}
