/* ref_matmul.c: plain-loop matmul and linear, dot products summed in double (the oracle). */
#include "cpu_ops.h"

void k22_ref_matmul(void *ctx, int ta, int tb, int M, int N, int K, float alpha, const float *A,
                    int64_t sA, const float *Bm, int64_t sB, float beta, float *C, int64_t sC,
                    int batch)
{
    for (int b = 0; b < batch; b++) {
        const float *a = A + b * sA, *bb = Bm + b * sB;
        float *c = C + b * sC;
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                double s = 0;
                for (int k = 0; k < K; k++) {
                    double av = ta ? a[(int64_t)k * M + i] : a[(int64_t)i * K + k];
                    double bv = tb ? bb[(int64_t)j * K + k] : bb[(int64_t)k * N + j];
                    s += av * bv;
                }
                float *cij = &c[(int64_t)i * N + j];
                /* beta == 0 must not read C: it may hold NaN. */
                *cij = (float)(alpha * s + (beta == 0.0f ? 0.0 : (double)beta * *cij));
            }
    }
}

/* y: (N, O) = x (N, I) @ w^T (I, O) + b. */
void k22_ref_linear_fwd(void *ctx, float *y, const float *x, const float *w, const float *b, int N,
                        int I, int O)
{
    for (int n = 0; n < N; n++)
        for (int o = 0; o < O; o++) {
            double s = b ? b[o] : 0.0;
            for (int i = 0; i < I; i++) s += (double)x[(int64_t)n * I + i] * w[(int64_t)o * I + i];
            y[(int64_t)n * O + o] = (float)s;
        }
}

void k22_ref_linear_bwd(void *ctx, float *dx, float *dw, float *db, const float *dy, const float *x,
                        const float *w, int N, int I, int O)
{
    if (dx)
        for (int n = 0; n < N; n++)
            for (int i = 0; i < I; i++) {
                double s = 0;
                for (int o = 0; o < O; o++)
                    s += (double)dy[(int64_t)n * O + o] * w[(int64_t)o * I + i];
                dx[(int64_t)n * I + i] += (float)s;
            }
    if (dw)
        for (int o = 0; o < O; o++)
            for (int i = 0; i < I; i++) {
                double s = 0;
                for (int n = 0; n < N; n++)
                    s += (double)dy[(int64_t)n * O + o] * x[(int64_t)n * I + i];
                dw[(int64_t)o * I + i] += (float)s;
            }
    if (db)
        for (int o = 0; o < O; o++) {
            double s = 0;
            for (int n = 0; n < N; n++) s += dy[(int64_t)n * O + o];
            db[o] += (float)s;
        }
}
