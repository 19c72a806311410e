/* bench_prior_step.c: CPU time of one prior training step (micro-step + optimizer step, the
 * script's defaults) on a prior folder, printed as one line per backend; bench/prior_step.sh runs
 * it beside the PyTorch reference on the same inputs shape. Prints, never asserts.
 *   bench_prior_step PRIOR_DIR BATCH STEPS */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "k22/rng.h"
#include "k22/train_prior.h"

#include "bench_util.h"

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s PRIOR_DIR BATCH STEPS\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1];
    int B = atoi(argv[2]), steps = atoi(argv[3]);
    const char *names[2] = {"cpu-ref", "cpu"};
    for (int bi = 0; bi < 2; bi++) {
        k22_err err;
        k22_backend *be = k22_backend_by_name(names[bi], &err);
        k22_train_hparams hp;
        k22_train_hparams_default(&hp);
        hp.micro_batch = B;
        hp.max_train_steps = steps + 2;
        k22_prior_trainer tr;
        if (k22_prior_trainer_init(&tr, be, dir, &hp, &err)) {
            fprintf(stderr, "bench_prior_step: %s\n", err.msg);
            return 1;
        }
        int E = tr.core.cfg.u.prior.embedding_dim, EP = tr.core.cfg.u.prior.embedding_proj_dim;
        int L = tr.core.cfg.u.prior.num_embeddings;
        float *te = bench_fill((size_t)B * EP, 1), *th = bench_fill((size_t)B * L * E, 2);
        float *ie = bench_fill((size_t)B * E, 3), *nz = bench_fill((size_t)B * E, 4);
        uint8_t *mask = k22_xmalloc((size_t)B * L);
        int64_t *t = k22_xmalloc((size_t)B * sizeof *t);
        for (int b = 0; b < B; b++) {
            t[b] = (b * 397) % 1000;
            for (int i = 0; i < L; i++) mask[b * L + i] = i < 10 + 7 * b;
        }
        k22_prior_batch batch = {B, te, th, mask, ie, nz, t};
        for (int s = 0; s < 2; s++) { /* warm-up */
            k22_prior_trainer_micro_step(&tr, &batch);
            k22_train_core_sync(&tr.core, NULL);
        }
        double c0 = bench_cpu_s(), w0 = bench_wall_s();
        for (int s = 0; s < steps; s++) {
            k22_prior_trainer_micro_step(&tr, &batch);
            k22_train_core_sync(&tr.core, NULL);
        }
        be->sync(be->ctx);
        double c1 = bench_cpu_s(), w1 = bench_wall_s();
        printf("k22 %-8s batch %d: %.3f ms CPU/step, %.3f ms wall/step (%d steps)\n", names[bi], B,
               1e3 * (c1 - c0) / steps, 1e3 * (w1 - w0) / steps, steps);
        free(te), free(th), free(ie), free(nz), free(mask), free(t);
        k22_prior_trainer_free(&tr);
        k22_backend_free(be);
    }
    return 0;
}
