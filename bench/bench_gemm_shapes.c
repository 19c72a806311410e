/* bench_gemm_shapes.c: what one GEMM over stacked q, k, v weights would save against three, on
 * the projections of the full-size models: the prior's blocks (batch 32 x 81 tokens, width 2048)
 * and the UNet's attention blocks (batch 8 at 96x96 latents: 48x48 tokens of 768 channels, 24x24
 * of 1152, 12x12 of 1536). For each, the backend's linear forward and backward (dx, dw, db) as
 * the models run them (three calls of O = C) and as one call of O = 3C on the same rows, weights
 * registered as the trainer registers its parameters (the CUDA weight shadow reads them), the
 * 16-bit input entries under bf16/fp16. Prints a k22_bench_gemm line per case and direction;
 * never asserts. On the CPU, --scale divides rows and widths (a quick run, not the GPU's shapes). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "k22/ops.h"
#include "k22/opts.h"

#include "bench_util.h"

typedef struct {
    const char *name;
    int rows, width;
} gemm_case;

static const gemm_case cases[] = {
    {"prior-qkv", 32 * 81, 2048},
    {"unet-attn-48", 8 * 48 * 48, 768},
    {"unet-attn-24", 8 * 24 * 24, 1152},
    {"unet-attn-12", 8 * 12 * 12, 1536},
};

typedef struct {
    k22_backend *be;
    int x16; /* the 16-bit input entries */
    int N, I, O;
    float *x, *w, *b, *y, *dy, *dx, *dw, *db;
    uint16_t *h;
} gemm_bufs;

static float *dev_floats(k22_backend *be, size_t n, uint64_t stream)
{
    float *d = be->alloc(be->ctx, n * sizeof(float)), *h = bench_fill(n, stream);
    be->to_device(be->ctx, d, h, n * sizeof(float));
    free(h);
    return d;
}

/* Calls `calls` linears of O / calls outputs each (1: the stacked one), forward or backward. */
static void run_once(const gemm_bufs *g, int calls, int backward)
{
    int o = g->O / calls;
    void *c = g->be->ctx;
    for (int i = 0; i < calls; i++) {
        size_t wo = (size_t)i * o * g->I, yo = (size_t)i * g->N * o;
        if (!backward && g->x16)
            g->be->linear_fwd_x16(c, g->y + yo, g->h, g->w + wo, g->b + (size_t)i * o, g->N, g->I, o);
        else if (!backward)
            g->be->linear_fwd(c, g->y + yo, g->x, g->w + wo, g->b + (size_t)i * o, g->N, g->I, o);
        else if (g->x16)
            g->be->linear_bwd_x16(c, g->dx, g->dw + wo, g->db + (size_t)i * o, g->dy + yo, g->h,
                                  g->w + wo, g->N, g->I, o);
        else
            g->be->linear_bwd(c, g->dx, g->dw + wo, g->db + (size_t)i * o, g->dy + yo, g->x,
                              g->w + wo, g->N, g->I, o);
    }
}

/* Milliseconds per round of run_once, the median of `reps` rounds after `warmup`. */
static double time_ms(const gemm_bufs *g, int calls, int backward, int warmup, int reps)
{
    double *t = k22_xmalloc((size_t)reps * sizeof *t);
    for (int r = 0; r < warmup; r++) run_once(g, calls, backward);
    for (int r = 0; r < reps; r++) {
        g->be->sync(g->be->ctx);
        double t0 = bench_wall_s();
        run_once(g, calls, backward);
        g->be->sync(g->be->ctx);
        t[r] = 1e3 * (bench_wall_s() - t0);
    }
    double m = bench_median(t, reps, NULL, NULL);
    free(t);
    return m;
}

int main(int argc, char **argv)
{
    const char *device, *precision;
    int64_t scale, reps, warmup;
    const k22_opt opts[] = {
        {"device", K22_OPT_STR, &device, "cpu", "cpu, cpu-ref, cuda or cuda:N", NULL, NULL, 0},
        {"mixed_precision", K22_OPT_CHOICE, &precision, "bf16",
         "GEMM operand precision (emulated, slower, on cpu)", NULL, "no|bf16|fp16", 0},
        {"scale", K22_OPT_INT, &scale, "1", "divide rows and widths by this (1..64; the GPU: 1)", NULL, NULL, 0},
        {"reps", K22_OPT_INT, &reps, "20", "timed rounds, the median printed (1..1000)", NULL, NULL, 0},
        {"warmup", K22_OPT_INT, &warmup, "3", "untimed rounds first (0..1000)", NULL, NULL, 0},
    };
    k22_cmd_spec spec = {.usage = "bench_gemm_shapes [options]",
                         .summary = "Times the full-size models' q, k, v projections as three linears "
                                    "and as one over stacked weights; one k22_bench_gemm line each.",
                         .opts = opts, .nopts = (int)(sizeof opts / sizeof opts[0])};
    int rc = k22_opts_parse_cli(&spec, argc, argv, "bench_gemm_shapes");
    if (rc >= 0) return rc;
    if (scale < 1 || scale > 64 || reps < 1 || reps > 1000 || warmup < 0 || warmup > 1000) {
        fprintf(stderr, "bench_gemm_shapes: --scale 1..64, --reps 1..1000, --warmup 0..1000\n");
        return 2;
    }
    k22_err err;
    k22_err_clear(&err);
    k22_backend *be = k22_backend_open(device, precision, &err);
    if (!be) {
        fprintf(stderr, "bench_gemm_shapes: %s\n", err.msg);
        return 1;
    }
    int x16 = be->precision != K22_PREC_FP32 && be->linear_fwd_x16 && be->linear_bwd_x16 && be->act_fwd_y16;
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        int C = cases[k].width / (int)scale;
        gemm_bufs g = {.be = be, .x16 = x16, .N = cases[k].rows / (int)scale, .I = C, .O = 3 * C};
        size_t nx = (size_t)g.N * g.I, nw = (size_t)g.O * g.I, ny = (size_t)g.N * g.O;
        g.x = dev_floats(be, nx, 1), g.w = dev_floats(be, nw + g.O, 2), g.b = g.w + nw;
        g.y = dev_floats(be, ny, 3), g.dy = dev_floats(be, ny, 4), g.dx = dev_floats(be, nx, 5);
        g.dw = dev_floats(be, nw + g.O, 6), g.db = g.dw + nw;
        g.h = x16 ? be->alloc(be->ctx, nx * sizeof(uint16_t)) : NULL;
        if (x16) be->act_fwd_y16(be->ctx, K22_ACT_NONE, g.h, g.x, (int64_t)nx);
        k22_backend_params_register(be, g.w, (int64_t)(nw + g.O)); /* q, k, v weights, then biases */
        for (int bwd = 0; bwd < 2; bwd++) {
            double sep = time_ms(&g, 3, bwd, (int)warmup, (int)reps);
            double one = time_ms(&g, 1, bwd, (int)warmup, (int)reps);
            double flops = 2.0 * g.N * g.I * g.O * (bwd ? 2 : 1); /* backward: dx and dw */
            printf("k22_bench_gemm case=%s device=%s precision=%s dir=%s rows=%d in=%d out=3x%d "
                   "separate_ms=%.4f stacked_ms=%.4f speedup=%.3f separate_tflops=%.2f stacked_tflops=%.2f\n",
                   cases[k].name, be->name, k22_precision_name((k22_precision)be->precision),
                   bwd ? "backward" : "forward", g.N, g.I, g.O / 3, sep, one, one > 0 ? sep / one : 0,
                   sep > 0 ? flops / (sep * 1e9) : 0, one > 0 ? flops / (one * 1e9) : 0);
            fflush(stdout);
        }
        k22_backend_params_register(be, NULL, 0);
        float *bufs[] = {g.x, g.w, g.y, g.dy, g.dx, g.dw};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) be->free(be->ctx, bufs[i]);
        if (g.h) be->free(be->ctx, g.h);
    }
    k22_backend_free(be);
    return 0;
}
