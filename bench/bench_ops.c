/* bench_ops.c: prints (never asserts) the fast CPU backend's speed on three shapes: a 1024^3
 * sgemm, a 64-channel 64x64 3x3 conv and 8-head 1024-token attention (forward and backward).
 * Not a test: `make bench` builds and runs it (build/bench_ops). */
#include <stdio.h>
#include <stdlib.h>

#include "k22/ops.h"

#include "bench_util.h"

static float *randv(size_t n)
{
    float *v = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) v[i] = (float)((double)rand() / RAND_MAX - 0.5);
    return v;
}

int main(void)
{
    k22_backend *be = k22_backend_cpu_new(0);
    enum { N = 1024, REP = 5 };
    float *a = randv((size_t)N * N), *b = randv((size_t)N * N), *c = randv((size_t)N * N);
    be->matmul(be->ctx, 0, 0, N, N, N, 1.0f, a, 0, b, 0, 0.0f, c, 0, 1); /* warm-up */
    double t0 = bench_wall_s();
    for (int r = 0; r < REP; r++)
        be->matmul(be->ctx, 0, 0, N, N, N, 1.0f, a, 0, b, 0, 0.0f, c, 0, 1);
    double t = (bench_wall_s() - t0) / REP;
    printf("sgemm 1024^3: %.3f ms, %.1f GFLOP/s\n", 1e3 * t, 2.0 * N * N * N / t * 1e-9);

    k22_conv2d_desc d = {1, 64, 64, 64, 64, 3, 3, 1, 1, 1, 1, 1, 1};
    size_t nx = 64 * 64 * 64, nw = 64 * 64 * 9;
    float *x = randv(nx), *w = randv(nw), *bias = randv(64), *y = randv(nx), *dy = randv(nx);
    float *dx = calloc(nx, sizeof(float)), *dw = calloc(nw, sizeof(float)),
          *db = calloc(64, sizeof(float));
    double flops = 2.0 * 64 * 64 * 64 * 64 * 9;
    be->conv2d_fwd(be->ctx, y, x, w, bias, &d);
    t0 = bench_wall_s();
    for (int r = 0; r < REP; r++) be->conv2d_fwd(be->ctx, y, x, w, bias, &d);
    t = (bench_wall_s() - t0) / REP;
    printf("conv 64->64 64x64 3x3 fwd: %.3f ms, %.1f GFLOP/s\n", 1e3 * t, flops / t * 1e-9);
    t0 = bench_wall_s();
    for (int r = 0; r < REP; r++) be->conv2d_bwd(be->ctx, dx, dw, db, dy, x, w, &d);
    t = (bench_wall_s() - t0) / REP;
    printf("conv 64->64 64x64 3x3 bwd (data+filter): %.3f ms, %.1f GFLOP/s\n", 1e3 * t,
           2 * flops / t * 1e-9);

    /* attention: 8 heads x 1024 tokens x 64, as in a UNet mid-block at 32x32 */
    k22_attn_desc ad = {1, 8, 1024, 1024, 64, 64, 0.125f, NULL, 0, 0, NULL};
    size_t nq = (size_t)8 * 1024 * 64;
    float *q = randv(nq), *k = randv(nq), *v = randv(nq), *o = randv(nq), *lse = randv(8 * 1024);
    float *dq = calloc(nq, sizeof(float)), *dk = calloc(nq, sizeof(float)),
          *dv = calloc(nq, sizeof(float));
    double aflops = 4.0 * 8 * 1024 * 1024 * 64;
    be->attention_fwd(be->ctx, o, lse, q, k, v, &ad);
    t0 = bench_wall_s();
    for (int r = 0; r < REP; r++) be->attention_fwd(be->ctx, o, lse, q, k, v, &ad);
    t = (bench_wall_s() - t0) / REP;
    printf("attention 8x1024x1024x64 fwd: %.3f ms, %.1f GFLOP/s\n", 1e3 * t, aflops / t * 1e-9);
    t0 = bench_wall_s();
    for (int r = 0; r < REP; r++) be->attention_bwd(be->ctx, dq, dk, dv, o, q, k, v, o, lse, &ad);
    t = (bench_wall_s() - t0) / REP;
    printf("attention 8x1024x1024x64 bwd: %.3f ms, %.1f GFLOP/s\n", 1e3 * t,
           2.5 * aflops / t * 1e-9);
    free(q), free(k), free(v), free(o), free(lse), free(dq), free(dk), free(dv);
    k22_backend_free(be);
    free(a), free(b), free(c), free(x), free(w), free(bias), free(y), free(dy), free(dx), free(dw),
        free(db);
    return 0;
}
