/* ref_act.c: plain-loop activations and softmax. Activations are evaluated in double (the
 * float rounding of the result is the only error); softmax sums in double. */
#include <math.h>

#include "cpu_ops.h"

static double ref_sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

static double ref_act_value(int act, double x)
{
    switch (act) {
    case K22_ACT_SILU:
        return x * ref_sigmoid(x);
    case K22_ACT_GELU:
        return 0.5 * x * (1.0 + erf(x * M_SQRT1_2));
    case K22_ACT_GELU_TANH: {
        double u = sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x);
        return 0.5 * x * (1.0 + tanh(u));
    }
    case K22_ACT_QUICK_GELU:
        return x * ref_sigmoid(1.702 * x);
    default:
        K22_FATAL("unknown activation %d", act);
    }
}

static double ref_act_deriv(int act, double x)
{
    switch (act) {
    case K22_ACT_SILU: {
        double s = ref_sigmoid(x);
        return s * (1.0 + x * (1.0 - s));
    }
    case K22_ACT_GELU:
        return 0.5 * (1.0 + erf(x * M_SQRT1_2)) + x * exp(-0.5 * x * x) / sqrt(2.0 * M_PI);
    case K22_ACT_GELU_TANH: {
        double k = sqrt(2.0 / M_PI);
        double t = tanh(k * (x + 0.044715 * x * x * x));
        return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * k * (1.0 + 3.0 * 0.044715 * x * x);
    }
    case K22_ACT_QUICK_GELU: {
        double s = ref_sigmoid(1.702 * x);
        return s + 1.702 * x * s * (1.0 - s);
    }
    default:
        K22_FATAL("unknown activation %d", act);
    }
}

void k22_ref_act_fwd(void *ctx, int act, float *y, const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++) y[i] = (float)ref_act_value(act, x[i]);
}

void k22_ref_act_bwd(void *ctx, int act, float *dx, const float *dy, const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++) dx[i] += (float)(dy[i] * ref_act_deriv(act, x[i]));
}

void k22_ref_softmax_fwd(void *ctx, float *y, const float *x, int64_t rows, int cols)
{
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * cols;
        float *yr = y + r * cols;
        double m = -INFINITY, s = 0;
        for (int j = 0; j < cols; j++) m = xr[j] > m ? xr[j] : m;
        for (int j = 0; j < cols; j++) s += exp(xr[j] - m);
        for (int j = 0; j < cols; j++) yr[j] = (float)(exp(xr[j] - m) / s);
    }
}

/* dx = y * (dy - sum(dy * y)). */
void k22_ref_softmax_bwd(void *ctx, float *dx, const float *dy, const float *y, int64_t rows,
                         int cols)
{
    for (int64_t r = 0; r < rows; r++) {
        const float *yr = y + r * cols, *dyr = dy + r * cols;
        double s = 0;
        for (int j = 0; j < cols; j++) s += (double)dyr[j] * yr[j];
        for (int j = 0; j < cols; j++) dx[r * cols + j] += (float)(yr[j] * (dyr[j] - s));
    }
}
