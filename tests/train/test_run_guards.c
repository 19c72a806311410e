/* test_run_guards.c: what protects a training run, end to end on the tiny prior.
 * (1) Non-finite gradients: a pack whose last rows hold NaN image embeddings; the steps that draw
 *     them are skipped (metrics.jsonl says so), the others train, the run completes with finite
 *     weights. (2) A pack that is all NaN: --max_skipped_steps 3 stops the run with exit 3 and
 *     a checkpoint of the untouched weights. (3) --validation_split: the held-out loss appears
 *     at each checkpoint and at the end, is the same in a rerun, falls as the model trains on the
 *     other rows, and a split that leaves no training rows is refused (exit 2).
 * (4) --gradient_checkpointing gives the same losses as a run without it; on the tiny decoder
 *     also with --checkpoint_levels 1 (only the full-resolution blocks re-run), whose set-up line
 *     lists each choice's memory and re-run share; --checkpoint_levels auto picks by the free
 *     memory (K22_MEM_FREE_MIB): none, 1 level or every block, the same losses each time;
 *     --checkpoint_levels is refused (exit 2) without --gradient_checkpointing, by train-prior
 *     and for a value that is neither auto nor 0..16. */
#include "train/train_fixture.h"
#include "k22/diffusers.h"

#include <math.h>

static char dir[] = "/tmp/k22_guards_test_XXXXXX";

#define DEC "train-decoder --pack %s/dec.h5 --pretrained %s/decoder --train_batch_size 2 --learning_rate 1e-3 " \
            "--seed 5 --log_every 100 --max_train_steps 2"
#define BASE "--pretrained %s/prior --train_batch_size 2 --learning_rate 1e-3 --seed 5 --log_every 100"



static void nonfinite_some(void)
{
    int rc = tf_sh("%s train-prior --pack %s/half.h5 " BASE " --max_train_steps 8 --output_dir %s/half >%s/half.log 2>&1",
                   tf_bin(), dir, dir, dir, dir);
    CHECK_MSG(rc == 0, "a run with some NaN rows exited %d", rc);
    char p[4096];
    snprintf(p, sizeof p, "%s/half/metrics.jsonl", dir);
    int skipped = tf_count_lines(p, "\"skipped\": true"), good = tf_count_lines(p, "\"skipped\": false");
    printf("NaN in 4 of 16 rows: %d optimizer steps skipped, %d taken\n", skipped, good);
    CHECK_MSG(skipped >= 1 && good == 8, "%d skipped and %d good steps (want >= 1 and 8)", skipped, good);
    snprintf(p, sizeof p, "%s/half/prior", dir);
    CHECK_MSG(tf_weights_finite(p), "the final weights are not all finite");
    CHECK(tf_sh("grep -q 'is not finite; update skipped' %s/half.log", dir) == 0);
}

static void nonfinite_all(void)
{
    int rc = tf_sh("%s train-prior --pack %s/nan.h5 " BASE " --max_train_steps 8 --max_skipped_steps 3 "
                   "--output_dir %s/nan >%s/nan.log 2>&1", tf_bin(), dir, dir, dir, dir);
    CHECK_MSG(rc == 3, "an all-NaN run exited %d, want 3", rc);
    CHECK(tf_sh("grep -q '3 optimizer steps in a row had a non-finite gradient' %s/nan.log", dir) == 0);
    char a[4096], b[4096];
    snprintf(a, sizeof a, "%s/nan/checkpoint-0/k22_complete", dir);
    CHECK_MSG(k22_fs_is_file(a), "no checkpoint-0 of the last good (initial) weights");
    snprintf(a, sizeof a, "%s/nan/checkpoint-0/prior", dir);
    CHECK(tf_weights_finite(a));
    snprintf(a, sizeof a, "%s/nan/checkpoint-0/prior/diffusion_pytorch_model.safetensors", dir);
    snprintf(b, sizeof b, "%s/prior/prior/diffusion_pytorch_model.safetensors", dir);
    CHECK_MSG(tf_same_file(a, b), "checkpoint-0 should hold the initial weights unchanged");
}

static void validation(void)
{
    const char *k = tf_bin();
    int rc = tf_sh("%s train-prior --pack %s/data.h5 " BASE " --max_train_steps 12 --checkpointing_steps 4 "
                   "--validation_split 0.25 --output_dir %s/v1 >%s/v1.log 2>&1", k, dir, dir, dir, dir);
    CHECK_MSG(rc == 0, "run with --validation_split exited %d", rc);
    rc = tf_sh("%s train-prior --pack %s/data.h5 " BASE " --max_train_steps 12 --checkpointing_steps 6 "
               "--validation_split 0.25 --output_dir %s/v2 >%s/v2.log 2>&1", k, dir, dir, dir, dir);
    CHECK_MSG(rc == 0, "rerun exited %d", rc);
    char a[4096], b[4096];
    snprintf(a, sizeof a, "%s/v1", dir);
    snprintf(b, sizeof b, "%s/v2", dir);
    double v4 = tf_read_val_loss(a, 4), v8 = tf_read_val_loss(a, 8), v12 = tf_read_val_loss(a, 12);
    double w12 = tf_read_val_loss(b, 12), w6 = tf_read_val_loss(b, 6);
    printf("held-out loss (4 of 16 rows): step 4 %.6f, step 8 %.6f, step 12 %.6f; rerun step 6 %.6f, 12 %.6f\n", v4,
           v8, v12, w6, w12);
    CHECK_MSG(isfinite(v4) && isfinite(v8) && isfinite(v12) && isfinite(w6), "missing held-out losses");
    CHECK_MSG(v12 == w12, "the held-out loss of step 12 differs between two identical runs: %.17g vs %.17g", v12, w12);
    CHECK_MSG(v12 < v4, "the held-out loss did not fall: %.6f at step 4, %.6f at step 12", v4, v12);
    CHECK(tf_sh("grep -q '12 rows (+ 4 held out)' %s/v1.log", dir) == 0);
    rc = tf_sh("%s train-prior --pack %s/data.h5 " BASE " --validation_split 0.7 --output_dir %s/v3 >%s/v3.log 2>&1",
               k, dir, dir, dir, dir);
    CHECK_MSG(rc == 2, "--validation_split 0.7 exited %d, want 2", rc);
}

/* --checkpoint_levels auto on the tiny decoder, the free memory given by K22_MEM_FREE_MIB: plenty
 * keeps every activation (no block re-run); the reserve plus the 1-level arena (from the set-up
 * line of d2, 0.1 MiB apart from the arenas beside it) takes 1 level; nothing free takes every
 * block with a warning. Each run's losses equal the plain run's (l0). */
static void ckpt_auto(const double *l0)
{
    const char *k = tf_bin();
    char a[4096];
    double kept0, arena0, re0, kept1, arena1, free_mib = 0, reserve = 0;
    snprintf(a, sizeof a, "%s/d2.log", dir);
    CHECK_MSG(tf_scan_line(a, " off ", 5, " off %lf / %lf MiB / %lf%%; 1 %lf / %lf MiB", &kept0, &arena0, &re0, &kept1,
                           &arena1), "no arenas in %s", a);
    CHECK_MSG(arena0 - arena1 >= 0.35, "the tiny decoder's arenas: off %.1f MiB, 1 level %.1f MiB", arena0, arena1);
    const struct { const char *name, *free, *now; int warned; } runs[] = {
        {"a0", "100000", "this run: off (no block is re-run)", 0},
        {"a1", NULL, "this run: --checkpoint_levels 1", 0},
        {"a2", "0", "this run: --checkpoint_levels 0 (every block)", 1},
    };
    for (int i = 0; i < 3; i++) {
        char mib[64];
        /* 0.2 MiB past the 1-level arena: the printed figures are within 0.05 of the true ones */
        if (runs[i].free) snprintf(mib, sizeof mib, "%s", runs[i].free);
        else snprintf(mib, sizeof mib, "%.2f", reserve + arena1 + 0.2);
        int rc = tf_sh("K22_MEM_FREE_MIB=%s %s " DEC " --gradient_checkpointing --checkpoint_levels auto "
                       "--output_dir %s/%s >%s/%s.log 2>&1", mib, k, dir, dir, dir, runs[i].name, dir, runs[i].name);
        snprintf(a, sizeof a, "%s/%s.log", dir, runs[i].name);
        CHECK_MSG(rc == 0, "--checkpoint_levels auto with %s MiB free: exit %d (%s)", mib, rc, a);
        CHECK_MSG(tf_count_lines(a, runs[i].now) == 1, "%s MiB free: no '%s' in %s", mib, runs[i].now, a);
        CHECK_MSG(tf_scan_line(a, "levels auto: ", 2, "levels auto: %lf MiB free after the weights, gradients and "
                               "optimizer state; %lf MiB kept back", &free_mib, &reserve) &&
                      fabs(free_mib - atof(mib)) < 0.06 && reserve >= 768,
                  "%s: the auto line says %.1f MiB free, %.1f kept back", a, free_mib, reserve);
        CHECK_MSG(tf_count_lines(a, "none fits") == runs[i].warned, "%s: the warning", a);
        double l[4] = {0};
        snprintf(a, sizeof a, "%s/%s", dir, runs[i].name);
        CHECK(tf_read_losses(a, l, 3) == 2);
        for (int s = 1; s <= 2; s++)
            CHECK_MSG(l[s] == l0[s], "auto with %s MiB free, step %d: %.17g vs %.17g", mib, s, l[s], l0[s]);
    }
    tf_sh("grep -h 'levels auto' %s/a1.log", dir);
    int rc = tf_sh("%s " DEC " --gradient_checkpointing --checkpoint_levels automatic --output_dir %s/a3 >%s/a3.log "
                   "2>&1", k, dir, dir, dir, dir);
    snprintf(a, sizeof a, "%s/a3.log", dir);
    CHECK_MSG(rc == 2 && tf_count_lines(a, "expected auto or a whole number") == 1,
              "--checkpoint_levels automatic: exit %d", rc);
}

static void grad_ckpt(void)
{
    const char *k = tf_bin();
    int rc = tf_sh("%s train-prior --pack %s/data.h5 " BASE " --max_train_steps 4 --output_dir %s/g0 >%s/g0.log 2>&1",
                   k, dir, dir, dir, dir);
    rc |= tf_sh("%s train-prior --pack %s/data.h5 " BASE " --max_train_steps 4 --gradient_checkpointing "
                "--output_dir %s/g1 >%s/g1.log 2>&1", k, dir, dir, dir, dir);
    CHECK_MSG(rc == 0, "gradient checkpointing runs failed");
    char a[4096], b[4096];
    double la[8] = {0}, lb[8] = {0};
    snprintf(a, sizeof a, "%s/g0", dir);
    snprintf(b, sizeof b, "%s/g1", dir);
    CHECK(tf_read_losses(a, la, 7) == 4 && tf_read_losses(b, lb, 7) == 4);
    for (int s = 1; s <= 4; s++) CHECK_MSG(la[s] == lb[s], "step %d: %.17g vs %.17g with checkpointing", s, la[s], lb[s]);
    /* the decoder, every block and only the first level checkpointed */
    rc = tf_sh("%s " DEC " --output_dir %s/d0 >%s/d0.log 2>&1", k, dir, dir, dir, dir);
    rc |= tf_sh("%s " DEC " --gradient_checkpointing --output_dir %s/d1 >%s/d1.log 2>&1", k, dir, dir, dir, dir);
    rc |= tf_sh("%s " DEC " --gradient_checkpointing --checkpoint_levels 1 --output_dir %s/d2 >%s/d2.log 2>&1", k, dir,
                dir, dir, dir);
    CHECK_MSG(rc == 0, "decoder checkpointing runs failed (see %s/d*.log)", dir);
    double l0[4] = {0}, l1[4] = {0}, l2[4] = {0};
    snprintf(a, sizeof a, "%s/d0", dir);
    int n0 = tf_read_losses(a, l0, 3);
    snprintf(a, sizeof a, "%s/d1", dir);
    int n1 = tf_read_losses(a, l1, 3);
    snprintf(a, sizeof a, "%s/d2", dir);
    int n2 = tf_read_losses(a, l2, 3);
    CHECK(n0 == 2 && n1 == 2 && n2 == 2);
    for (int s = 1; s <= 2; s++)
        CHECK_MSG(l0[s] == l1[s] && l0[s] == l2[s], "decoder step %d: %.17g, checkpointed %.17g, 1 level %.17g", s,
                  l0[s], l1[s], l2[s]);
    snprintf(a, sizeof a, "%s/d2.log", dir);
    CHECK_MSG(tf_count_lines(a, "re-run: off ") == 1 && tf_count_lines(a, "this run: --checkpoint_levels 1") == 1,
              "no checkpointing set-up line in %s", a);
    tf_sh("grep -h 'gradient checkpointing,' %s/d2.log", dir);
    ckpt_auto(l0);
    rc = tf_sh("%s " DEC " --checkpoint_levels 1 --output_dir %s/d3 >%s/d3.log 2>&1", k, dir, dir, dir, dir);
    snprintf(a, sizeof a, "%s/d3.log", dir);
    CHECK_MSG(rc == 2 && tf_count_lines(a, "needs --gradient_checkpointing") == 1,
              "--checkpoint_levels without --gradient_checkpointing: exit %d", rc);
    rc = tf_sh("%s train-prior --pack %s/data.h5 " BASE " --gradient_checkpointing --checkpoint_levels 1 "
               "--output_dir %s/g3 >%s/g3.log 2>&1", k, dir, dir, dir, dir);
    snprintf(a, sizeof a, "%s/g3.log", dir);
    CHECK_MSG(rc == 2 && tf_count_lines(a, "train-decoder only") == 1, "train-prior --checkpoint_levels 1: exit %d", rc);
}

int main(void)
{
    tf_mpi_env();
    CHECK(mkdtemp(dir) != NULL);
    char p[4096];
    /* The held-out rows 12..15 repeat rows 0..3 (with other noise and timesteps): training
     * on them must lower the held-out loss, which random rows could not show. */
    snprintf(p, sizeof p, "%s/data.h5", dir);
    CHECK(tf_write_pack_ex(p, K22_PACK_FOR_PRIOR, 16, 16, 31, 16, 12) == 0);
    snprintf(p, sizeof p, "%s/half.h5", dir);
    CHECK(tf_write_pack_ex(p, K22_PACK_FOR_PRIOR, 16, 16, 32, 12, 16) == 0);
    snprintf(p, sizeof p, "%s/nan.h5", dir);
    CHECK(tf_write_pack_ex(p, K22_PACK_FOR_PRIOR, 8, 16, 33, 0, 8) == 0);
    CHECK(tf_sh("%s init prior --size tiny --seed 4 --out %s/prior >/dev/null 2>&1", tf_bin(), dir) == 0);
    snprintf(p, sizeof p, "%s/dec.h5", dir);
    CHECK(tf_write_pack(p, K22_PACK_FOR_DECODER, 8, 32, 34) == 0);
    CHECK(tf_sh("%s init decoder --size tiny --seed 4 --out %s/decoder >/dev/null 2>&1", tf_bin(), dir) == 0);
    nonfinite_some();
    nonfinite_all();
    validation();
    grad_ckpt();
    if (k22_test_failures == 0) tf_sh("rm -rf %s", dir);
    else printf("kept %s for inspection\n", dir);
    return k22_test_finish("test_run_guards");
}
