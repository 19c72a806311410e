/* test_overlap.c: the gradient all-reduce in buckets sent during the backward (grad_overlap.h,
 * --bucket_cap_mb) against one exchange after it (--bucket_cap_mb 0), on 2 MPI ranks. Each value
 * is a + b, then / 2, either way, so the runs must agree bit for bit: logged losses, final
 * weights (prior and UNet), with accumulation (the buckets add the earlier micro-steps' sum
 * themselves), with gradient checkpointing, under fp16 with its loss scaler, and under ZeRO-1
 * (each bucket summed onto its owners against one reduce-scatter: a + b again). Each bucketed run's
 * closing line must show buckets sent during the backward (not all left for the end), and its
 * set-up line the bucket count. A negative --bucket_cap_mb is refused (exit 2) by name. */
#include "train/train_fixture.h"

#include <math.h>

static char dir[] = "/tmp/k22_overlap_test_XXXXXX";

#define MPI2 "timeout 120 mpirun --oversubscribe -np 2"
#define PRIOR "--pack %s/data.h5 --pretrained %s/prior --learning_rate 1e-3 --seed 3 --max_train_steps 4 --log_every 100"
#define DECODER "--pack %s/dec.h5 --pretrained %s/decoder --train_batch_size 2 --learning_rate 1e-3 --seed 4 " \
                "--max_train_steps 2 --log_every 100"

/* "k22: gradient buckets: E exchanges over T, K of N buckets sent during the backward" */
static int bucket_line(const char *out, long long *ex, long long *early, long long *all)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/%s.log", dir, out);
    return tf_scan_line(p, "k22: gradient buckets: ", 3,
                        "k22: gradient buckets: %lld exchanges over MPI, %lld of %lld buckets", ex, early, all);
}

/* Runs `cmd` (train-prior or train-decoder) with args twice on 2 ranks, bucketed with cap
 * `cap` MiB and with --bucket_cap_mb 0; compares losses and the component file `comp`. */
static void pair(const char *what, const char *cmd, const char *args, const char *cap, const char *comp, int steps)
{
    static int n;
    char a[64], b[64];
    snprintf(a, sizeof a, "b%d", n);
    snprintf(b, sizeof b, "m%d", n++);
    int ra = tf_sh(MPI2 " %s %s %s --bucket_cap_mb %s --output_dir %s/%s >%s/%s.log 2>&1", tf_bin(), cmd, args, cap,
                   dir, a, dir, a);
    int rb = tf_sh(MPI2 " %s %s %s --bucket_cap_mb 0 --output_dir %s/%s >%s/%s.log 2>&1", tf_bin(), cmd, args, dir,
                   b, dir, b);
    CHECK_MSG(ra == 0 && rb == 0, "%s: runs exited %d and %d (see %s/%s.log, %s.log)", what, ra, rb, dir, a, b);
    char pa[4096], pb[4096];
    snprintf(pa, sizeof pa, "%s/%s", dir, a);
    snprintf(pb, sizeof pb, "%s/%s", dir, b);
    double la[16] = {0}, lb[16] = {0};
    int na = tf_read_losses(pa, la, 15), nb = tf_read_losses(pb, lb, 15);
    int same_loss = na == steps && nb == steps;
    for (int s = 1; s <= steps && same_loss; s++) same_loss = memcmp(&la[s], &lb[s], sizeof la[s]) == 0;
    snprintf(pa, sizeof pa, "%s/%s/%s", dir, a, comp);
    snprintf(pb, sizeof pb, "%s/%s/%s", dir, b, comp);
    int same_w = tf_same_file(pa, pb);
    long long ex = 0, early = 0, all = 0;
    int line = bucket_line(a, &ex, &early, &all);
    printf("%s: losses of %d steps %s, %s %s; %lld exchanges, %lld of %lld buckets sent during the backward\n",
           what, na, same_loss ? "identical" : "DIFFER", comp, same_w ? "identical" : "DIFFERS", ex, early, all);
    CHECK_MSG(same_loss && same_w, "%s: bucketed and whole-buffer runs differ (losses %d, weights %d)", what,
              same_loss, same_w);
    CHECK_MSG(line && ex >= steps && all > ex && early > 0 && early < all,
              "%s: bucket line %d: %lld exchanges, %lld of %lld buckets early", what, line, ex, early, all);
    snprintf(pa, sizeof pa, "%s/%s.log", dir, a);
    CHECK_MSG(tf_count_lines(pa, "buckets of up to") == 1, "%s: no bucket set-up line in %s", what, pa);
    snprintf(pb, sizeof pb, "%s/%s.log", dir, b);
    CHECK_MSG(tf_count_lines(pb, "one exchange after the backward (--bucket_cap_mb 0)") == 1,
              "%s: no whole-buffer line in %s", what, pb);
}

int main(void)
{
    tf_mpi_env();
    CHECK(mkdtemp(dir) != NULL);
    char p[4096], args[4096];
    snprintf(p, sizeof p, "%s/data.h5", dir);
    CHECK(tf_write_prior_pack(p, 16, 21) == 0);
    snprintf(p, sizeof p, "%s/dec.h5", dir);
    CHECK(tf_write_pack(p, K22_PACK_FOR_DECODER, 8, 32, 23) == 0);
    CHECK(tf_sh("%s init prior --size tiny --seed 2 --out %s/prior >/dev/null 2>&1", tf_bin(), dir) == 0);
    CHECK(tf_sh("%s init decoder --size tiny --seed 2 --out %s/decoder >/dev/null 2>&1", tf_bin(), dir) == 0);
    const char *pw = "prior/diffusion_pytorch_model.safetensors", *uw = "unet/diffusion_pytorch_model.safetensors";
    /* The tiny prior's 13.8 k gradient floats in buckets of 0.01 MiB (2624 floats): 6 buckets. */
    snprintf(args, sizeof args, PRIOR " --train_batch_size 2", dir, dir);
    pair("prior, 2 ranks, buckets of 0.01 MiB", "train-prior", args, "0.01", pw, 4);
    snprintf(args, sizeof args, PRIOR " --train_batch_size 1 --gradient_accumulation_steps 2", dir, dir);
    pair("prior, 2 ranks x 2 accumulation", "train-prior", args, "0.01", pw, 4);
    snprintf(args, sizeof args, PRIOR " --train_batch_size 2 --mixed_precision fp16 --gradient_checkpointing", dir, dir);
    pair("prior, fp16 + checkpointing", "train-prior", args, "0.01", pw, 4);
    /* ZeRO-1: each bucket summed onto the rank owning it (the prior's shards of ~6.9 k floats: one
     * bucket straddles the two, and is sent as two pieces) against one reduce-scatter. */
    snprintf(args, sizeof args, PRIOR " --train_batch_size 2 --zero_stage 1", dir, dir);
    pair("prior, ZeRO-1, 2 ranks", "train-prior", args, "0.01", pw, 4);
    snprintf(args, sizeof args, PRIOR " --train_batch_size 1 --gradient_accumulation_steps 2 --zero_stage 1", dir,
             dir);
    pair("prior, ZeRO-1, 2 ranks x 2 accumulation", "train-prior", args, "0.01", pw, 4);
    /* The tiny UNet's 884 k floats in buckets of 0.5 MiB: 7 buckets. */
    snprintf(args, sizeof args, DECODER, dir, dir);
    pair("decoder, 2 ranks, buckets of 0.5 MiB", "train-decoder", args, "0.5", uw, 2);
    snprintf(args, sizeof args, DECODER " --gradient_checkpointing --train_batch_size 1 --gradient_accumulation_steps 2",
             dir, dir);
    pair("decoder, checkpointing, 2 ranks x 2 accumulation", "train-decoder", args, "0.5", uw, 2);
    snprintf(args, sizeof args, DECODER " --zero_stage 1", dir, dir);
    pair("decoder, ZeRO-1, 2 ranks", "train-decoder", args, "0.5", uw, 2);
    int rc = tf_sh("%s train-prior --pack %s/data.h5 --pretrained %s/prior --output_dir %s/bad --bucket_cap_mb -1 "
                   ">%s/bad.log 2>&1", tf_bin(), dir, dir, dir, dir);
    snprintf(p, sizeof p, "%s/bad.log", dir);
    CHECK_MSG(rc == 2 && tf_count_lines(p, "--bucket_cap_mb -1") == 1, "--bucket_cap_mb -1: exit %d", rc);
    tf_sh("rm -rf %s", dir);
    return k22_test_finish("test_overlap");
}
