/* test_train_ranks.c: `k22 train-prior` on 2 MPI ranks x 1 accumulation step against 1 rank x 2
 * accumulation steps (same global batch, same samples per optimizer step, constant lr): the
 * logged losses and the final weights must agree to the rounding of the all-reduce (the sum of
 * the ranks' gradient buffers vs their accumulation in one buffer, in a different order). Then a
 * checkpoint written by the 1-rank run is resumed on 2 ranks (same global batch: allowed) and on
 * 2 ranks x 2 accumulation (different global batch: exit 2 naming it). */
#include "train/train_fixture.h"
#include "k22/safetensors.h"

#include <math.h>
#include <signal.h>
#include <unistd.h>

static char dir[] = "/tmp/k22_ranks_test_XXXXXX";

#define COMMON "--pack %s/data.h5 --pretrained %s/prior --train_batch_size 2 --learning_rate 1e-3 --seed 3 " \
               "--max_train_steps 6 --log_every 100 --validation_split 0.25"
#define COMMON12 "--pack %s/data12.h5 --pretrained %s/prior --train_batch_size 2 --learning_rate 1e-3 --seed 3 " \
                 "--max_train_steps 6 --log_every 100"
#define MPIRUN "timeout 60 mpirun --oversubscribe -np 2"

/* Largest |a - b| / (1e-6 + |b|) over the two prior weight files' tensors; -1 on a read error.
 * *max_abs: the largest |a - b| outside the attention key biases; *kbias_abs: inside them. The
 * key bias's true gradient is zero (adding a constant to every key shifts a query's scores by a
 * constant, which softmax ignores), so its gradient is rounding noise, which AdamW's m / sqrt(v)
 * turns into lr-sized steps of arbitrary sign: it can only be held to lr * steps. */
static long g_over, g_count; /* weights (outside key biases) differing by more than 1e-5, of all */

static double weights_diff(const char *a_dir, const char *b_dir, double *max_abs, double *kbias_abs)
{
    g_over = g_count = 0;
    *kbias_abs = 0;
    char a[4096], b[4096];
    snprintf(a, sizeof a, "%s/prior/diffusion_pytorch_model.safetensors", a_dir);
    snprintf(b, sizeof b, "%s/prior/diffusion_pytorch_model.safetensors", b_dir);
    k22_st_file *fa = NULL, *fb = NULL;
    double worst = -1;
    *max_abs = 0;
    if (!k22_st_open(a, &fa, NULL) && !k22_st_open(b, &fb, NULL) && k22_st_count(fa) == k22_st_count(fb)) {
        worst = 0;
        for (int i = 0; i < k22_st_count(fa); i++) {
            const k22_st_tensor *x = k22_st_at(fa, i), *y = k22_st_find(fb, x->name);
            if (!y || y->nbytes != x->nbytes) return -1;
            const float *p = x->data, *q = y->data;
            size_t nl = strlen(x->name);
            int kbias = nl > 9 && !strcmp(x->name + nl - 9, "to_k.bias");
            for (size_t k = 0; k < x->nbytes / 4; k++) {
                double d = fabs((double)p[k] - q[k]);
                if (kbias) {
                    if (d > *kbias_abs) *kbias_abs = d;
                    continue;
                }
                if (d > *max_abs) *max_abs = d;
                g_count++;
                g_over += d > 1e-5;
                if (d / (1e-6 + fabs(q[k])) > worst) worst = d / (1e-6 + fabs(q[k]));
            }
        }
    }
    k22_st_close(fa);
    k22_st_close(fb);
    return worst;
}

/* exact: the two runs must agree bit for bit (2 ranks vs 2 accumulation steps: a + b either
 * way); otherwise within the stated tolerances (3-way sums in another order). */
static void compare(const char *what, const char *x, const char *y, int exact)
{
    char a[2048], b[2048];
    snprintf(a, sizeof a, "%s/%s", dir, x);
    snprintf(b, sizeof b, "%s/%s", dir, y);
    double la[8] = {0}, lb[8] = {0};
    CHECK_MSG(tf_read_losses(a, la, 7) == 6 && tf_read_losses(b, lb, 7) == 6, "%s: 6 logged steps each", what);
    double worst_loss = 0;
    for (int s = 1; s <= 6; s++) {
        double r = fabs(la[s] - lb[s]) / fabs(lb[s]);
        if (r > worst_loss) worst_loss = r;
    }
    double max_abs, kb, rel = weights_diff(a, b, &max_abs, &kb);
    printf("%s: losses agree to %.2e relative; weights to %.2e absolute, %.2e relative (key biases %.2e)\n",
           what, worst_loss, max_abs, rel, kb);
    if (exact) {
        char fa[4096], fb[4096];
        snprintf(fa, sizeof fa, "%s/prior/diffusion_pytorch_model.safetensors", a);
        snprintf(fb, sizeof fb, "%s/prior/diffusion_pytorch_model.safetensors", b);
        CHECK_MSG(worst_loss == 0 && tf_same_file(fa, fb), "%s: should be bit-identical (losses %.3e, weights %.3e)",
                  what, worst_loss, max_abs);
    }
    CHECK_MSG(kb <= 6e-3, "%s: key biases differ by %.3e, more than lr x steps", what, kb);
    CHECK_MSG(worst_loss < 1e-5, "%s: losses differ by %.3e relative (tolerance 1e-5)", what, worst_loss);
    if (exact || !strstr(what, "3 ranks")) {
        CHECK_MSG(rel >= 0 && max_abs < 1e-6, "%s: weights differ by %.3e (tolerance 1e-6 absolute)", what, max_abs);
    } else {
        /* Three gradients summed in another order differ in the last bit; AdamW's m / sqrt(v)
         * turns that into a different step for weights whose gradient is itself rounding noise
         * (as the key biases above): at most 1 in 500 weights may move apart, each by at most
         * 2 x lr x steps; every other weight within 1e-5. */
        printf("%s: %ld of %ld weights differ by more than 1e-5\n", what, g_over, g_count);
        CHECK_MSG(rel >= 0 && g_over * 500 <= g_count && max_abs <= 2 * 1e-3 * 6,
                  "%s: %ld of %ld weights differ by more than 1e-5, the largest by %.3e", what, g_over, g_count, max_abs);
    }
    /* The held-out loss (4 of the 16 rows) at the end: batches of 2 on one rank or split over
     * two, the same samples, noise and timesteps. */
    double va = tf_read_val_loss(a, 6), vb = tf_read_val_loss(b, 6);
    if (isnan(va) && isnan(vb)) return; /* a run without --validation_split */
    printf("%s: held-out loss %.9f vs %.9f\n", what, va, vb);
    CHECK_MSG(isfinite(va) && isfinite(vb) && fabs(va - vb) <= 1e-5 * fabs(vb), "%s: held-out loss %.9g vs %.9g",
              what, va, vb);
}

/* SIGUSR1 to mpirun (which forwards it to the ranks): both ranks agree at the next step
 * boundary, rank 0 writes the checkpoint, the job exits 99. SIGTERM: Open MPI's mpirun
 * terminates the ranks with it; they still checkpoint at the step boundary, but mpirun itself
 * reports a failure (the documented reason to send USR1 to mpirun). */
static void signal_mpi(int sig)
{
    char out[1024];
    snprintf(out, sizeof out, "%s/sig%d", dir, sig);
    pid_t pid = fork();
    if (pid == 0) {
        char cmd[8192];
        snprintf(cmd, sizeof cmd, "exec mpirun --oversubscribe -np 2 %s train-prior --pack %s/data.h5 --pretrained "
                 "%s/prior --train_batch_size 2 --max_train_steps 100000 --checkpointing_steps 100000 --log_every 1000 "
                 "--output_dir %s >%s.log 2>&1", tf_bin(), dir, dir, out, out);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    double l[4096];
    int n = 0;
    for (int i = 0; i < 3000 && n < 3; i++, usleep(10000)) n = tf_read_losses(out, l, 4095);
    CHECK_MSG(n >= 3, "the 2-rank job logged %d steps", n);
    kill(pid, sig);
    int status = 0;
    waitpid(pid, &status, 0);
    int rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    n = tf_read_losses(out, l, 4095);
    char p[4096];
    snprintf(p, sizeof p, "%s/checkpoint-%d/k22_complete", out, n);
    CHECK_MSG((sig == SIGTERM || rc == 99) && k22_fs_is_file(p), "%s to mpirun: exit %d, checkpoint-%d %s",
              strsignal(sig), rc, n, k22_fs_is_file(p) ? "complete" : "missing");
    printf("%s to mpirun -np 2 after step %d: exit %d, checkpoint-%d\n", strsignal(sig), n, rc, n);
}

int main(void)
{
    /* Open MPI's own allocations (k22 starts MPI) are not ours to chase: no leak checks in the
     * k22 processes under ASan; this process and the in-process checks keep them. */
    tf_mpi_env();
    CHECK(mkdtemp(dir) != NULL);
    char p[4096];
    snprintf(p, sizeof p, "%s/data.h5", dir);
    CHECK(tf_write_prior_pack(p, 16, 21) == 0);
    CHECK(tf_sh("%s init prior --size tiny --seed 2 --out %s/prior >/dev/null 2>&1", tf_bin(), dir) == 0);
    const char *k = tf_bin();
    int rc = tf_sh(MPIRUN " %s train-prior " COMMON " --gradient_accumulation_steps 1 --output_dir %s/w2 >%s/w2.log 2>&1",
                   k, dir, dir, dir, dir);
    CHECK_MSG(rc == 0, "2-rank run exited %d", rc);
    rc = tf_sh("%s train-prior " COMMON " --gradient_accumulation_steps 2 --checkpointing_steps 3 --output_dir %s/w1 "
               ">%s/w1.log 2>&1", k, dir, dir, dir, dir);
    CHECK_MSG(rc == 0, "1-rank run exited %d", rc);
    compare("2 ranks x 1 vs 1 rank x 2", "w2", "w1", 1);
    /* fp16 with its loss scaler. Without overflows, 2 ranks x 1 equal 1 rank x 2 as above (each
     * micro-step's loss is scaled by scale / A, A = 1 or 2: a power of two, exact in fp16 away
     * from its range's ends). Where gradients overflow, they do so at the same scale on every
     * rank (one skip decision from the all-reduced norm), but a micro-step of 1 rank x 2
     * carries half the scale of a rank's, so the two set-ups overflow at different steps, as
     * torch's would; there the check is that the ranks agree, with ZeRO-1 (which unscales the
     * gradient shards) against without. */
#define FP16 " --mixed_precision fp16 --pack %s/%s.h5"
    rc = tf_sh(MPIRUN " %s train-prior " COMMON FP16 " --gradient_accumulation_steps 1 --output_dir %s/f2 >%s/f2.log 2>&1",
               k, dir, dir, dir, "data", dir, dir);
    rc |= tf_sh("%s train-prior " COMMON FP16 " --gradient_accumulation_steps 2 --output_dir %s/f1 >%s/f1.log 2>&1", k,
                dir, dir, dir, "data", dir, dir);
    CHECK_MSG(rc == 0, "fp16 runs failed (see %s/f*.log)", dir);
    compare("fp16: 2 ranks x 1 vs 1 rank x 2", "f2", "f1", 1);
    snprintf(p, sizeof p, "%s/big.h5", dir);
    CHECK(tf_write_pack_full(p, K22_PACK_FOR_PRIOR, 16, 16, 23, 16, 16, 100.0f) == 0);
    rc = tf_sh(MPIRUN " %s train-prior " COMMON FP16 " --gradient_accumulation_steps 1 --output_dir %s/h2 >%s/h2.log 2>&1",
               k, dir, dir, dir, "big", dir, dir);
    rc |= tf_sh(MPIRUN " %s train-prior " COMMON FP16 " --gradient_accumulation_steps 1 --zero_stage 1 --output_dir %s/hz "
                ">%s/hz.log 2>&1", k, dir, dir, dir, "big", dir, dir);
    CHECK_MSG(rc == 0, "fp16 runs on large targets failed (see %s/h*.log)", dir);
    snprintf(p, sizeof p, "%s/h2.log", dir);
    int over = tf_count_lines(p, "fp16 gradients overflowed");
    printf("fp16 on 2 ranks, targets x100: %d overflow steps skipped\n", over);
    CHECK_MSG(over >= 1, "the fp16 runs on large targets should start with overflowing steps");
    compare("fp16 with overflows: 2 ranks x 1 with --zero_stage 1 vs without", "hz", "h2", 0);
    /* 3 ranks x 1 vs 1 rank x 3 on 12 rows (2 optimizer steps per epoch either way, no padding):
     * the all-reduce adds three gradients in its own order, so rounding only. */
    snprintf(p, sizeof p, "%s/data12.h5", dir);
    CHECK(tf_write_prior_pack(p, 12, 22) == 0);
    rc = tf_sh("timeout 60 mpirun --oversubscribe -np 3 %s train-prior " COMMON12 " --gradient_accumulation_steps 1 "
               "--output_dir %s/t3 >%s/t3.log 2>&1", k, dir, dir, dir, dir);
    CHECK_MSG(rc == 0, "3-rank run exited %d", rc);
    rc = tf_sh("%s train-prior " COMMON12 " --gradient_accumulation_steps 3 --output_dir %s/t1 >%s/t1.log 2>&1", k, dir,
               dir, dir, dir);
    CHECK_MSG(rc == 0, "1-rank x 3 run exited %d", rc);
    compare("3 ranks x 1 vs 1 rank x 3", "t3", "t1", 0);
    /* w1's checkpoint-3 resumed on 2 ranks x 1: the same global batch of 4. */
    /* w1's metrics go along: the resume must keep steps 1..3 and replace 4..6. */
    CHECK(tf_sh("cp -r %s/w1/checkpoint-3 %s/ck3 && mkdir -p %s/r2 && cp -r %s/ck3 %s/r2/checkpoint-3 && "
                "cp %s/w1/metrics.jsonl %s/r2/", dir, dir, dir, dir, dir, dir, dir) == 0);
    rc = tf_sh(MPIRUN " %s train-prior " COMMON " --gradient_accumulation_steps 1 --resume_from_checkpoint latest "
               "--output_dir %s/r2 >%s/r2.log 2>&1", k, dir, dir, dir, dir);
    CHECK_MSG(rc == 0, "2-rank resume of a 1-rank checkpoint exited %d", rc);
    CHECK_MSG(tf_sh("test $(grep -c '\"epoch\"' %s/r2/metrics.jsonl) -eq 6", dir) == 0,
              "the resumed run's metrics.jsonl should hold steps 1..6 once each");
    compare("1 rank x 2 then resumed on 2 ranks x 1", "r2", "w1", 1);
    rc = tf_sh(MPIRUN " %s train-prior " COMMON " --gradient_accumulation_steps 2 --resume_from_checkpoint %s/ck3 "
               "--output_dir %s/bad >%s/bad.log 2>&1", k, dir, dir, dir, dir, dir);
    CHECK_MSG(rc == 2, "resume with another global batch exited %d, want 2", rc);
    CHECK(tf_sh("grep -q 'resuming needs the same global batch' %s/bad.log", dir) == 0);
    signal_mpi(SIGUSR1);
    signal_mpi(SIGTERM);
    if (k22_test_failures == 0) tf_sh("rm -rf %s", dir);
    else printf("kept %s for inspection\n", dir);
    return k22_test_finish("test_train_ranks");
}
