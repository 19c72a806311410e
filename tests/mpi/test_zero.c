/* test_zero.c: --zero_stage 1 (ZeRO-1 optimizer state sharding, optim.h) against --zero_stage 0.
 * (1) Allocation, in process: the shards of a tiny prior's table on rank 0 and rank 1 of 2 cover
 *     its trainable runs once, and M, V and S are allocated at shard length, about half.
 * (2) 2 ranks, no clipping (--max_grad_norm 1e9), --use_ema: the reduce-scattered gradient shard
 *     is the all-reduced one bit for bit (a + b is commutative), AdamW and the EMA are per value,
 *     the all-gather copies: losses, checkpoint files (weights, EMA, moments) and the final folder
 *     must be byte-identical, in the same layout; the optimizer-state line gives the memory.
 * (3) 2 ranks with clipping (--max_grad_norm 1): the global norm is a sum in another order,
 *     within a rounding; the tolerance is stated below and the figures printed.
 * (4) Checkpoints across stages and rank counts: zero 1 -> zero 0 and zero 0 -> zero 1 on 2
 *     ranks (exact), zero 1 on 2 ranks -> zero 1 on 4 ranks and -> 1 rank x 2 accumulation
 *     (the gradient sums change order: test_train_ranks's tolerances).
 * (5) NaN rows on one rank: the same steps are skipped on every rank and the results equal.
 * (6) train-decoder with validation images drawn from the gathered EMA: the PNG and the final
 *     UNet equal zero 0's. And --zero_stage 2 is refused (exit 2). */
#include "train/train_fixture.h"
#include "k22/diffusers.h"
#include "k22/optim.h"
#include "k22/safetensors.h"

#include <math.h>

static char dir[] = "/tmp/k22_zero_test_XXXXXX";

#define COMMON "--pack %s/data.h5 --pretrained %s/prior --learning_rate 1e-3 --seed 3 --max_train_steps 6 " \
               "--checkpointing_steps 3 --use_ema --log_every 100"
#define MPI2 "timeout 120 mpirun --oversubscribe -np 2"
#define MPI4 "timeout 120 mpirun --oversubscribe -np 4"
#define NOCLIP "--max_grad_norm 1e9"

/* ---- (1) allocation sizes through a counting backend ---- */

static const k22_backend *real_be;
static struct {
    void *p;
    size_t n;
} allocs[64];
static int nallocs;

static void *count_alloc(void *ctx, size_t bytes)
{
    void *p = real_be->alloc(ctx, bytes);
    if (nallocs < 64) allocs[nallocs].p = p, allocs[nallocs++].n = bytes;
    return p;
}

static size_t alloc_size(const void *p)
{
    for (int i = 0; i < nallocs; i++)
        if (allocs[i].p == p) return allocs[i].n;
    return 0;
}

static int64_t spans_sum(const k22_optim *o)
{
    int64_t s = 0;
    for (int i = 0; i < o->nspans; i++) s += o->span_len[i];
    return s;
}

static void allocation(void)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/prior/prior", dir);
    k22_model_config cfg;
    k22_params ps;
    k22_params_init(&ps);
    k22_err err;
    CHECK_MSG(k22_component_load(p, &cfg, &ps, &err) == K22_OK, "%s", err.msg);
    k22_backend *cpu = k22_backend_cpu_new(0);
    real_be = cpu;
    k22_backend cb = *cpu;
    cb.alloc = count_alloc;
    /* k22_optim_init does not communicate: a rank of a 2-rank job needs no MPI here. */
    k22_optim whole, part[2];
    k22_optim_init(&whole, &cb, &ps, 1, NULL, 1);
    int64_t total = whole.total, shard = k22_optim_shard_len(total, 2), covered = 0;
    for (int r = 0; r < 2; r++) {
        k22_dist d = {.rank = r, .world = 2};
        k22_optim_init(&part[r], &cb, &ps, 1, &d, 1);
        covered += spans_sum(&part[r]);
        CHECK(part[r].zero == 1 && part[r].shard == shard && part[r].base == r * shard);
        CHECK(alloc_size(part[r].P) == (size_t)(2 * shard) * 4 && alloc_size(part[r].G) == (size_t)(2 * shard) * 4);
        size_t mv = alloc_size(part[r].M) + alloc_size(part[r].V) + alloc_size(part[r].S);
        size_t full = alloc_size(whole.M) + alloc_size(whole.V) + alloc_size(whole.S);
        printf("rank %d of 2: M + V + S allocated %zu bytes, unsharded %zu (ratio %.4f); trainable floats %lld of %lld\n",
               r, mv, full, (double)mv / (double)full, (long long)spans_sum(&part[r]), (long long)spans_sum(&whole));
        /* Half, plus at most the alignment padding of the rule (64 floats per buffer). */
        CHECK_MSG(2 * mv >= full && mv <= full / 2 + 3 * 4 * K22_OPTIM_SHARD_ALIGN, "rank %d: %zu bytes of %zu", r,
                  mv, full);
        CHECK(mv == (size_t)k22_optim_state_bytes(&part[r], 1) && full == (size_t)k22_optim_state_bytes(&whole, 0));
        part[r].dist = NULL; /* nothing to reach on free */
    }
    CHECK_MSG(covered == spans_sum(&whole), "the two shards cover %lld trainable floats of %lld", (long long)covered,
              (long long)spans_sum(&whole));
    CHECK(shard % K22_OPTIM_SHARD_ALIGN == 0 && 2 * shard >= total && 2 * shard < total + 2 * K22_OPTIM_SHARD_ALIGN);
    k22_optim_free(&part[0]);
    k22_optim_free(&part[1]);
    k22_optim_free(&whole);
    k22_backend_free(cpu);
    k22_params_free(&ps);
}

/* ---- comparisons of runs ---- */

/* Largest |a - b| over two safetensors files' tensors (key biases apart, as test_train_ranks
 * explains: their true gradient is zero, AdamW turns rounding noise into lr-sized steps); -1 on
 * a read or layout error. */
static double st_diff(const char *a, const char *b, double *kbias)
{
    k22_st_file *fa = NULL, *fb = NULL;
    double worst = -1;
    *kbias = 0;
    if (!k22_st_open(a, &fa, NULL) && !k22_st_open(b, &fb, NULL) && k22_st_count(fa) == k22_st_count(fb)) {
        worst = 0;
        for (int i = 0; i < k22_st_count(fa) && worst >= 0; i++) {
            const k22_st_tensor *x = k22_st_at(fa, i), *y = k22_st_find(fb, x->name);
            if (!y || y->nbytes != x->nbytes) {
                worst = -1;
                break;
            }
            size_t nl = strlen(x->name);
            int kb = nl > 9 && !strcmp(x->name + nl - 9, "to_k.bias");
            const float *p = x->data, *q = y->data;
            for (size_t k = 0; k < x->nbytes / 4; k++) {
                double d = fabs((double)p[k] - q[k]);
                double *w = kb ? kbias : &worst;
                if (!(d <= *w)) *w = d; /* NaN counts as the worst */
            }
        }
    }
    k22_st_close(fa);
    k22_st_close(fb);
    return worst;
}

/* Largest relative loss difference over steps 1..n of two runs; -1 when a step is missing. */
static double loss_diff(const char *a, const char *b, int n)
{
    char x[4096], y[4096];
    snprintf(x, sizeof x, "%s/%s", dir, a);
    snprintf(y, sizeof y, "%s/%s", dir, b);
    double la[32] = {0}, lb[32] = {0};
    if (tf_read_losses(x, la, 31) != n || tf_read_losses(y, lb, 31) != n) return -1;
    double worst = 0;
    for (int s = 1; s <= n; s++) {
        double r = la[s] == lb[s] ? 0 : fabs(la[s] - lb[s]) / fabs(lb[s]);
        if (!(r <= worst)) worst = r;
    }
    return worst;
}

static int same(const char *a, const char *b, const char *rel)
{
    char x[4096], y[4096];
    snprintf(x, sizeof x, "%s/%s/%s", dir, a, rel);
    snprintf(y, sizeof y, "%s/%s/%s", dir, b, rel);
    return tf_same_file(x, y);
}

/* The same file names under two folders. */
static int same_layout(const char *a, const char *b)
{
    return tf_sh("cd %s/%s && find . | sort >%s/la && cd %s/%s && find . | sort >%s/lb && cmp -s %s/la %s/lb", dir, a,
                 dir, dir, b, dir, dir, dir) == 0;
}

#define W "prior/diffusion_pytorch_model.safetensors"
#define WE "prior_ema/diffusion_pytorch_model.safetensors"
#define OPT "k22_state/optimizer.safetensors"

/* Runs b equal run a bit for bit: every logged loss, and the files of checkpoint-6 and the final
 * folder (the EMA, with --use_ema). */
static void exact(const char *what, const char *a, const char *b)
{
    double l = loss_diff(a, b, 6);
    int w = same(a, b, "checkpoint-6/" W) && same(a, b, "checkpoint-6/" WE) && same(a, b, "checkpoint-6/" OPT) &&
            same(a, b, W);
    printf("%s: losses %s, checkpoint-6 weights, EMA, moments and final weights %s\n", what,
           l == 0 ? "identical" : "DIFFER", w ? "byte-identical" : "DIFFER");
    CHECK_MSG(l == 0, "%s: losses differ (%.3e relative)", what, l);
    CHECK_MSG(w, "%s: files differ", what);
}

/* Within the tolerances of a run whose sums go in another order. */
static void close_to(const char *what, const char *a, const char *b, double tol_loss, double tol_w)
{
    char x[4096], y[4096];
    double l = loss_diff(a, b, 6), kb, kbe, wmax = 0;
    const char *files[] = {"checkpoint-6/" W, "checkpoint-6/" WE, W};
    for (int i = 0; i < 3; i++) {
        snprintf(x, sizeof x, "%s/%s/%s", dir, a, files[i]);
        snprintf(y, sizeof y, "%s/%s/%s", dir, b, files[i]);
        double d = st_diff(x, y, i ? &kbe : &kb);
        if (d < 0 || !(d <= wmax)) wmax = d < 0 ? INFINITY : d;
    }
    printf("%s: losses within %.2e relative, weights within %.2e absolute (key biases %.2e)\n", what, l, wmax, kb);
    CHECK_MSG(l >= 0 && l <= tol_loss, "%s: losses differ by %.3e relative (tolerance %.0e)", what, l, tol_loss);
    CHECK_MSG(wmax <= tol_w, "%s: weights differ by %.3e (tolerance %.0e)", what, wmax, tol_w);
    CHECK_MSG(kb <= 6e-3, "%s: key biases differ by %.3e, more than lr x steps", what, kb);
}

/* The optimizer-state line of a log: sharded, unsharded and this run's bytes per rank. */
static int state_line(const char *log, long long *z1, long long *z0, long long *run)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, log);
    return tf_scan_line(p, "per rank: ", 3,
                        "per rank: %lld bytes with --zero_stage 1, %lld bytes with --zero_stage 0 (this run: %lld)", z1,
                        z0, run);
}

static void memory(const char *log, int world)
{
    long long z1 = 0, z0 = 0, run = 0;
    CHECK_MSG(state_line(log, &z1, &z0, &run), "%s: no optimizer-state line", log);
    printf("%d ranks: optimizer state per rank %lld bytes sharded, %lld unsharded (%.4f = 1/%.3f)\n", world, z1, z0,
           (double)z1 / (double)z0, (double)z0 / (double)z1);
    CHECK_MSG(run == z1 && world * z1 >= z0 && z1 <= z0 / world + 3 * 4 * K22_OPTIM_SHARD_ALIGN,
              "%s: %lld bytes per rank of %lld on %d ranks (this run %lld)", log, z1, z0, world, run);
}

static int train(const char *launch, const char *args, const char *out)
{
    return tf_sh("%s %s train-prior " COMMON " %s --output_dir %s/%s >%s/%s.log 2>&1", launch, tf_bin(), dir, dir,
                 args, dir, out, dir, out);
}

/* out resumes from checkpoint-3 of from (metrics up to there go along, as a requeue would). */
static int resume(const char *launch, const char *args, const char *from, const char *out)
{
    if (tf_sh("mkdir -p %s/%s && cp -r %s/%s/checkpoint-3 %s/%s/ && cp %s/%s/metrics.jsonl %s/%s/", dir, out, dir,
              from, dir, out, dir, from, dir, out))
        return -1;
    char a[1024];
    snprintf(a, sizeof a, "%s --resume_from_checkpoint latest", args);
    return train(launch, a, out);
}

/* Steps of a run whose logged gradient norm exceeds max. */
static int clipped_steps(const char *run, double max)
{
    char p[4096], line[1024];
    snprintf(p, sizeof p, "%s/%s/metrics.jsonl", dir, run);
    FILE *f = fopen(p, "r");
    int n = 0;
    while (f && fgets(line, sizeof line, f)) {
        const char *g = strstr(line, "\"grad_norm\": ");
        n += g && strtod(g + 13, NULL) > max;
    }
    if (f) fclose(f);
    return n;
}

static void prior_runs(void)
{
    int rc;
    rc = train(MPI2, "--train_batch_size 2 " NOCLIP " --zero_stage 0", "e0");
    CHECK_MSG(rc == 0, "2 ranks zero 0 exited %d", rc);
    rc = train(MPI2, "--train_batch_size 2 " NOCLIP " --zero_stage 1", "e1");
    CHECK_MSG(rc == 0, "2 ranks zero 1 exited %d", rc);
    exact("2 ranks, zero 1 vs zero 0, no clipping", "e1", "e0");
    CHECK_MSG(same_layout("e0", "e1"), "the output folders differ in layout");
    CHECK_MSG(same_layout("e0/checkpoint-3", "e1/checkpoint-3"), "checkpoint-3 differs in layout");
    CHECK(same("e0", "e1", "checkpoint-3/" OPT) && same("e0", "e1", "checkpoint-3/" WE));
    memory("e1.log", 2);

    rc = train(MPI2, "--train_batch_size 2 --max_grad_norm 0.3 --zero_stage 0", "c0");
    CHECK_MSG(rc == 0, "clipped zero 0 exited %d", rc);
    rc = train(MPI2, "--train_batch_size 2 --max_grad_norm 0.3 --zero_stage 1", "c1");
    CHECK_MSG(rc == 0, "clipped zero 1 exited %d", rc);
    int clipped = clipped_steps("c1", 0.3);
    printf("clipped runs: %d of 6 steps had a gradient norm above 0.3\n", clipped);
    CHECK_MSG(clipped == 6, "every step should clip, %d did", clipped);
    /* The norm's double sum in another grouping: one float rounding of the clip coefficient at
     * most, 6e-8 relative on every gradient, which AdamW's m / sqrt(v) nearly cancels. */
    close_to("2 ranks, zero 1 vs zero 0, clipped", "c1", "c0", 1e-6, 1e-6);

    rc = resume(MPI2, "--train_batch_size 2 " NOCLIP " --zero_stage 0", "e1", "r10");
    CHECK_MSG(rc == 0, "zero 1 checkpoint resumed under zero 0 exited %d", rc);
    exact("zero 1 checkpoint-3 resumed under zero 0 (2 ranks)", "r10", "e0");
    rc = resume(MPI2, "--train_batch_size 2 " NOCLIP " --zero_stage 1", "e0", "r01");
    CHECK_MSG(rc == 0, "zero 0 checkpoint resumed under zero 1 exited %d", rc);
    exact("zero 0 checkpoint-3 resumed under zero 1 (2 ranks)", "r01", "e0");
    rc = resume(MPI4, "--train_batch_size 1 " NOCLIP " --zero_stage 1", "e1", "r14");
    CHECK_MSG(rc == 0, "zero 1 checkpoint resumed on 4 ranks exited %d", rc);
    close_to("zero 1 checkpoint-3 (2 ranks) resumed under zero 1 on 4 ranks", "r14", "e0", 1e-5, 1e-6);
    memory("r14.log", 4);
    rc = resume("", "--train_batch_size 2 --gradient_accumulation_steps 2 " NOCLIP " --zero_stage 1", "e1", "r11");
    CHECK_MSG(rc == 0, "zero 1 checkpoint resumed on 1 rank exited %d", rc);
    close_to("zero 1 checkpoint-3 (2 ranks) resumed on 1 rank x 2 accumulation", "r11", "e0", 1e-5, 1e-6);
}

static void nan_runs(void)
{
    /* Row 15 of 16 NaN: once per epoch a step draws it, with a NaN gradient on one rank. */
    const char *args = "--pack %s/nan.h5 --pretrained %s/prior --train_batch_size 2 --learning_rate 1e-3 --seed 5 "
                       "--max_train_steps 8 --log_every 100 " NOCLIP;
    char a[1024];
    snprintf(a, sizeof a, args, dir, dir);
    int r0 = tf_sh(MPI2 " %s train-prior %s --zero_stage 0 --output_dir %s/n0 >%s/n0.log 2>&1", tf_bin(), a, dir, dir);
    int r1 = tf_sh(MPI2 " %s train-prior %s --zero_stage 1 --output_dir %s/n1 >%s/n1.log 2>&1", tf_bin(), a, dir, dir);
    CHECK_MSG(r0 == 0 && r1 == 0, "NaN runs exited %d and %d", r0, r1);
    int s0 = tf_sh("exit $(grep -c '\"skipped\": true' %s/n0/metrics.jsonl)", dir);
    int s1 = tf_sh("exit $(grep -c '\"skipped\": true' %s/n1/metrics.jsonl)", dir);
    /* step, epoch, loss and skipped of each line (the norm may differ in its last digit, and the time) */
    int sk = tf_sh("cd %s && for r in n0 n1; do sed 's/, \"lr.*\"skipped\"/ \"skipped\"/; s/, \"time_s.*//' $r/metrics.jsonl "
                   ">$r.steps; done && cmp -s n0.steps n1.steps", dir) == 0;
    printf("NaN rows on one rank: %d and %d steps skipped (zero 0, zero 1); metrics lines equal: %s; final weights "
           "equal: %s\n", s0, s1, sk ? "yes" : "NO", same("n0", "n1", W) ? "yes" : "NO");
    CHECK_MSG(s0 >= 1 && s0 == s1 && sk, "skipped steps: %d (zero 0) vs %d (zero 1)", s0, s1);
    CHECK_MSG(same("n0", "n1", W), "final weights differ after skipped steps");
}

static void decoder_runs(void)
{
    const char *args = "--pack %s/dec.h5 --pretrained %s/decoder --train_batch_size 2 --learning_rate 1e-3 --seed 4 "
                       "--max_train_steps 4 --use_ema --log_every 100 " NOCLIP " --validation_prompts 'a fox' "
                       "--prior_for_validation %s/prior --validation_epochs 1";
    char a[1024];
    snprintf(a, sizeof a, args, dir, dir, dir);
    int r0 = tf_sh(MPI2 " %s train-decoder %s --zero_stage 0 --output_dir %s/d0 >%s/d0.log 2>&1", tf_bin(), a, dir, dir);
    int r1 = tf_sh(MPI2 " %s train-decoder %s --zero_stage 1 --output_dir %s/d1 >%s/d1.log 2>&1", tf_bin(), a, dir, dir);
    CHECK_MSG(r0 == 0 && r1 == 0, "decoder runs exited %d and %d", r0, r1);
    int pngs = tf_sh("exit $(ls %s/d1/validation | wc -l)", dir);
    int img = tf_sh("cd %s && for f in d0/validation/*.png; do cmp -s $f d1/${f#d0/} || exit 1; done", dir) == 0;
    int w = same("d0", "d1", "unet/diffusion_pytorch_model.safetensors");
    printf("train-decoder, 2 ranks, EMA: %d validation grids identical under zero 1: %s; final UNet identical: %s\n",
           pngs, img ? "yes" : "NO", w ? "yes" : "NO");
    CHECK_MSG(pngs >= 2 && img, "validation images differ (%d grids)", pngs);
    CHECK_MSG(w, "final UNet (EMA) differs");
}

int main(void)
{
    tf_mpi_env();
    CHECK(mkdtemp(dir) != NULL);
    char p[4096];
    snprintf(p, sizeof p, "%s/data.h5", dir);
    CHECK(tf_write_prior_pack(p, 16, 21) == 0);
    snprintf(p, sizeof p, "%s/nan.h5", dir);
    CHECK(tf_write_pack_ex(p, K22_PACK_FOR_PRIOR, 16, 16, 22, 15, 16) == 0);
    snprintf(p, sizeof p, "%s/dec.h5", dir);
    CHECK(tf_write_pack(p, K22_PACK_FOR_DECODER, 8, 32, 23) == 0);
    CHECK(tf_sh("%s init prior --size tiny --seed 2 --out %s/prior >/dev/null 2>&1", tf_bin(), dir) == 0);
    CHECK(tf_sh("%s init decoder --size tiny --seed 2 --out %s/decoder >/dev/null 2>&1", tf_bin(), dir) == 0);
    allocation();
    int rc = tf_sh("%s train-prior --pack %s/data.h5 --pretrained %s/prior --zero_stage 2 --output_dir %s/bad "
                   ">%s/bad.log 2>&1", tf_bin(), dir, dir, dir, dir);
    CHECK_MSG(rc == 2 && tf_sh("grep -q -- '--zero_stage 2: must be 0 or 1' %s/bad.log", dir) == 0,
              "--zero_stage 2: exit %d, want 2 with a message", rc);
    prior_runs();
    nan_runs();
    decoder_runs();
    if (k22_test_failures == 0) tf_sh("rm -rf %s", dir);
    else printf("kept %s for inspection\n", dir);
    return k22_test_finish("test_zero");
}
