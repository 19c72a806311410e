/* bench_decoder_step.c: CPU time of one decoder training step (micro-step + optimizer step, the
 * script's defaults) on a UNet folder, printed as one line per backend (cpu-ref, cpu);
 * bench/decoder_step.sh runs it beside the PyTorch reference on the same shapes. Prints, never
 * asserts.
 *   bench_decoder_step UNET_DIR BATCH LATENT_SIDE STEPS [REF_STEPS] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "k22/train_decoder.h"

#include "bench_util.h"

static int bench(const char *name, const char *dir, int B, int side, int steps)
{
    k22_err err;
    k22_backend *be = k22_backend_by_name(name, &err);
    if (!be) {
        fprintf(stderr, "bench_decoder_step: %s\n", err.msg);
        return 1;
    }
    k22_decoder_train_hparams hp;
    k22_decoder_train_hparams_default(&hp);
    hp.base.micro_batch = B;
    hp.latent_h = hp.latent_w = side;
    hp.base.max_train_steps = steps + 2;
    k22_sched_config sc;
    k22_decoder_trainer tr;
    if (k22_sched_preset("decoder", &sc, &err) || k22_decoder_trainer_init(&tr, be, dir, &sc, &hp, &err)) {
        fprintf(stderr, "bench_decoder_step: %s\n", err.msg);
        k22_backend_free(be);
        return 1;
    }
    size_t n = (size_t)B * 4 * (size_t)side * (size_t)side;
    float *lat = bench_fill(n, 1), *nz = bench_fill(n, 2);
    float *img = bench_fill((size_t)B * tr.core.cfg.u.unet.encoder_hid_dim, 3);
    int64_t *t = k22_xmalloc((size_t)B * sizeof *t);
    for (int b = 0; b < B; b++) t[b] = (b * 397 + 11) % 1000;
    k22_decoder_batch batch = {B, lat, img, nz, t};
    for (int s = 0; s < 2; s++) { /* warm-up */
        k22_decoder_trainer_micro_step(&tr, &batch);
        k22_train_core_sync(&tr.core, NULL);
    }
    double c0 = bench_cpu_s(), w0 = bench_wall_s();
    for (int s = 0; s < steps; s++) {
        k22_decoder_trainer_micro_step(&tr, &batch);
        k22_train_core_sync(&tr.core, NULL);
    }
    be->sync(be->ctx);
    double c1 = bench_cpu_s(), w1 = bench_wall_s();
    printf("k22 %-8s batch %d %dx%d: %.3f ms CPU/step, %.3f ms wall/step (%d steps)\n", name, B, side,
           side, 1e3 * (c1 - c0) / steps, 1e3 * (w1 - w0) / steps, steps);
    free(lat), free(nz), free(img), free(t);
    k22_decoder_trainer_free(&tr);
    k22_backend_free(be);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 5 && argc != 6) {
        fprintf(stderr, "usage: %s UNET_DIR BATCH LATENT_SIDE STEPS [REF_STEPS]\n", argv[0]);
        return 2;
    }
    int B = atoi(argv[2]), side = atoi(argv[3]), steps = atoi(argv[4]);
    int ref_steps = argc == 6 ? atoi(argv[5]) : steps;
    if (B < 1 || side < 1 || steps < 1 || ref_steps < 1) {
        fprintf(stderr, "bench_decoder_step: BATCH, LATENT_SIDE and STEPS must be positive\n");
        return 2;
    }
    if (bench("cpu-ref", argv[1], B, side, ref_steps)) return 1;
    return bench("cpu", argv[1], B, side, steps);
}
