/* bench_unet_full.c: full-size sanity of the decoder UNet on the fast CPU backend: one training
 * forward and backward of the published Kandinsky 2.2 UNet at batch 1, 96x96 latents (768 px
 * images), with gradient checkpointing or without; prints the times, the arena figures and the
 * process's peak RSS (weights + gradients + arena + scratch). Prints, never asserts; not part
 * of `make bench` (minutes and ~12-14 GB of memory). See bench/README.md.
 *   bench_unet_full ckpt|plain [UNET_DIR]
 * Without UNET_DIR the weights are k22_params_init_random's for the "full" preset. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "k22/diffusers.h"
#include "k22/unet.h"

static double wall(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* Peak resident set so far, GiB (ru_maxrss is in KiB on Linux). */
static double peak_rss_gib(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1048576.0;
}

static float *fill(size_t n, uint64_t k)
{
    float *x = k22_xmalloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++) x[i] = (float)((double)((i * 2654435761u + k * 97u) % 2001) / 1000.0 - 1.0);
    return x;
}

static int load(const char *dir, k22_model_config *cfg, k22_params *ps)
{
    k22_err err;
    k22_params_init(ps);
    k22_status st = dir ? k22_component_load(dir, cfg, ps, &err)
                        : k22_config_preset(K22_MODEL_UNET, "full", cfg, &err);
    if (!st && !dir) {
        st = k22_params_build(cfg, ps, &err);
        if (!st) {
            k22_params_alloc(ps);
            k22_params_init_random(cfg, ps, 0);
        }
    }
    if (st) fprintf(stderr, "bench_unet_full: %s\n", err.msg);
    return st ? 1 : 0;
}

int main(int argc, char **argv)
{
    if ((argc != 2 && argc != 3) || (strcmp(argv[1], "ckpt") && strcmp(argv[1], "plain"))) {
        fprintf(stderr, "usage: %s ckpt|plain [UNET_DIR]\n", argv[0]);
        return 2;
    }
    int ckpt = !strcmp(argv[1], "ckpt"), B = 1, H = 96, W = 96;
    k22_model_config cfg;
    k22_params ps;
    double t0 = wall();
    if (load(argc == 3 ? argv[2] : NULL, &cfg, &ps)) return 1;
    const k22_unet_config *c = &cfg.u.unet;
    printf("weights: %zu floats (%.2f GiB) in %.1f s\n", ps.total, ps.total * 4.0 / 1073741824,
           wall() - t0);
    k22_backend *be = k22_backend_cpu_new(0);
    /* The CPU backends share the host's address space: the table's buffer serves as P. */
    float *P = ps.data, *G = be->alloc(be->ctx, ps.total * sizeof(float));
    be->zero(be->ctx, G, ps.total * sizeof(float));
    size_t nx = (size_t)B * c->in_channels * H * W, no = (size_t)B * c->out_channels * H * W;
    float *x = fill(nx, 1), *img = fill((size_t)B * c->encoder_hid_dim, 2), *dout = fill(no, 3);
    float t = 500.0f, *out = k22_xmalloc(no * sizeof *out), *dx = k22_xcalloc(nx, sizeof *dx);
    k22_unet m;
    k22_unet_init(&m, c, &ps, P, G);
    k22_unet_set_gradient_checkpointing(&m, ckpt);
    size_t cap = k22_unet_arena_floats(&m, B, H, W, 1);
    k22_arena ar;
    k22_arena_init(&ar, be, cap);
    double f0 = wall();
    k22_unet_forward(be, &m, &ar, x, &t, img, B, H, W, out, 1);
    be->sync(be->ctx);
    double f1 = wall();
    size_t kept = ar.used;
    k22_unet_backward(be, &m, &ar, dout, dx);
    be->sync(be->ctx);
    double f2 = wall();
    double gs = 0, os = 0;
    for (size_t i = 0; i < ps.total; i += 4099) gs += G[i] * (double)G[i];
    for (size_t i = 0; i < no; i++) os += out[i] * (double)out[i];
    printf("unet full B=%d %dx%d, %s, backend %s: forward %.1f s, backward %.1f s\n", B, H, W,
           ckpt ? "gradient checkpointing" : "no checkpointing", be->name, f1 - f0, f2 - f1);
    printf("arena %.1f MiB (peak %.1f MiB), activations kept %.1f MiB; peak RSS %.2f GiB\n",
           cap * 4.0 / 1048576, ar.peak * 4.0 / 1048576, kept * 4.0 / 1048576, peak_rss_gib());
    printf("sum out^2 %.6g, sampled sum grad^2 %.6g (finite: %d)\n", os, gs, os == os && gs == gs);
    k22_arena_free(&ar);
    k22_unet_free(&m);
    be->free(be->ctx, G);
    k22_backend_free(be);
    free(x), free(img), free(dout), free(out), free(dx);
    k22_params_free(&ps);
    return 0;
}
