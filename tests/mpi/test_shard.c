/* test_shard.c: the rank-sharded pack reader. In this process: the split/padding rule equals
 * accelerate's BatchSamplerShard (table below, computed with accelerate 1.15 over an identity
 * order), and the permutation is a pure function of (seed, epoch). Then the binary re-runs itself
 * under `mpirun -np 1, 2, 3` on a pack of integer-valued rows: every rank reads its batches, each
 * value is checked against the row index it must hold, rank 0 gathers all rows read and checks
 * every row is read once per epoch plus the documented padding (the first L - R rows of the
 * epoch's order once more), that the gathered order is the permutation, and that epochs differ.
 * Every rank agrees on the verdict; the permutation hash must not depend on the rank count. */
#include "harness/harness.h"
#include "k22/pack.h"
#include "k22/shard.h"

#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define NROWS 23
#define E 4
#define BATCH 3
#define SEED 1234
#define EPOCHS 3

/* Value k of image_embeds / latents / input_ids for row i (exact in fp16). */
static float ie_val(int64_t i, int k) { return (float)(i * E + k); }
static float lat_val(int64_t i, int k) { return -(float)(i * 4 + k) - 0.5f; }
static int32_t id_val(int64_t i, int k) { return (int32_t)(i * 1000 + k); }

static uint64_t perm_hash(const int64_t *p, int64_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (int64_t i = 0; i < n; i++) h = (h ^ (uint64_t)p[i]) * 1099511628211ull;
    return h;
}

/* ------------------------------------------------------------------ the MPI child */

static int check_batch(k22_shard *s, k22_pack *p, int64_t step, int64_t *rows_out, k22_err *err)
{
    float ie[BATCH * E], lat[BATCH * 4];
    int32_t ids[BATCH * 77];
    int bad = 0;
    if (k22_shard_read(s, p, step, K22_PACK_IMAGE_EMBEDS, ie, err) || k22_shard_read(s, p, step, K22_PACK_LATENTS, lat, err) ||
        k22_shard_read(s, p, step, K22_PACK_INPUT_IDS, ids, err)) {
        fprintf(stderr, "rank %d: %s\n", s->rank, err->msg);
        return 1;
    }
    k22_shard_batch_rows(s, step, rows_out);
    for (int b = 0; b < BATCH; b++) {
        int64_t r = rows_out[b];
        for (int k = 0; k < E; k++) bad += ie[b * E + k] != ie_val(r, k);
        for (int k = 0; k < 4; k++) bad += lat[b * 4 + k] != lat_val(r, k);
        for (int k = 0; k < 77; k++) bad += ids[b * 77 + k] != id_val(r, k);
    }
    if (bad) fprintf(stderr, "rank %d step %lld: %d values differ from their rows\n", s->rank, (long long)step, bad);
    return bad != 0;
}

/* Rank 0's checks of one epoch's gathered rows (rank-major: rank r's steps in order). */
static int check_epoch(const int64_t *all, int world, int64_t steps, const int64_t *perm, int64_t epoch)
{
    int64_t L = steps * world * BATCH, fails = 0;
    int count[NROWS] = {0};
    for (int r = 0; r < world; r++)
        for (int64_t s = 0; s < steps; s++)
            for (int b = 0; b < BATCH; b++) {
                int64_t row = all[(r * steps + s) * BATCH + b];
                int64_t k = (s * world + r) * BATCH + b; /* position in the padded global order */
                if (row < 0 || row >= NROWS) {
                    fails++;
                    continue;
                }
                count[row]++;
                fails += row != perm[k % NROWS];
            }
    int64_t pad = L - NROWS;
    for (int64_t i = 0; i < NROWS; i++) {
        int expect = 1 + (i < pad);
        int64_t row = perm[i];
        if (count[row] != expect) {
            fprintf(stderr, "epoch %lld: row %lld read %d times, expected %d\n", (long long)epoch, (long long)row,
                    count[row], expect);
            fails++;
        }
    }
    printf("epoch %lld: world %d, %lld steps of %d, %lld rows read, %lld padded\n", (long long)epoch, world,
           (long long)steps, BATCH, (long long)L, (long long)pad);
    return fails != 0;
}

static int child(const char *path)
{
    MPI_Init(NULL, NULL);
    int rank = 0, world = 1, fails = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    k22_set_rank(rank);
    k22_err err;
    k22_pack *p = NULL;
    k22_shard s;
    int64_t first[EPOCHS][8];
    memset(&s, 0, sizeof s);
    if (k22_pack_open(path, &p, &err) || k22_shard_init(&s, k22_pack_rows(p), world, rank, BATCH, SEED, &err)) {
        fprintf(stderr, "rank %d: %s\n", rank, err.msg);
        fails = 1;
        goto out;
    }
    int64_t steps = k22_shard_steps(&s), smin = 0, smax = 0;
    MPI_Allreduce(&steps, &smin, 1, MPI_INT64_T, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(&steps, &smax, 1, MPI_INT64_T, MPI_MAX, MPI_COMM_WORLD);
    fails += smin != smax;
    int64_t *mine = k22_xcalloc((size_t)(steps * BATCH), sizeof *mine);
    int64_t *all = rank == 0 ? k22_xcalloc((size_t)(steps * BATCH * world), sizeof *all) : NULL;
    for (int64_t e = 0; e < EPOCHS; e++) {
        k22_shard_set_epoch(&s, e);
        for (int64_t st = 0; st < steps; st++) fails += check_batch(&s, p, st, mine + st * BATCH, &err);
        MPI_Gather(mine, (int)(steps * BATCH), MPI_INT64_T, all, (int)(steps * BATCH), MPI_INT64_T, 0, MPI_COMM_WORLD);
        if (rank == 0) {
            fails += check_epoch(all, world, steps, s.perm, e);
            memcpy(first[e], s.perm, sizeof first[e]);
            printf("perm-hash epoch %lld: %016llx\n", (long long)e, (unsigned long long)perm_hash(s.perm, NROWS));
        }
    }
    if (rank == 0)
        for (int e = 1; e < EPOCHS; e++)
            if (!memcmp(first[e], first[e - 1], sizeof first[e])) {
                fprintf(stderr, "epochs %d and %d start in the same order\n", e - 1, e);
                fails++;
            }
    free(mine);
    free(all);
out:
    k22_shard_free(&s);
    k22_pack_close(p);
    int total = 0;
    MPI_Allreduce(&fails, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0) printf(total ? "shard FAILED np=%d\n" : "shard OK np=%d\n", world);
    MPI_Finalize();
    return total ? 1 : 0;
}

/* ------------------------------------------------------------------ the parent */

/* accelerate's BatchSamplerShard(SequentialSampler(range(R)), B, drop_last=False),
 * even_batches=True, per rank: R, B, N, then N*len rows (rank-major). */
static const int accel_table[] = {
    10, 2, 3, 0, 1, 6, 7, 2, 3, 8, 9, 4, 5, 0, 1,
    7, 2, 2, 0, 1, 4, 5, 2, 3, 6, 0,
    3, 2, 3, 0, 1, 2, 0, 1, 2,
    5, 4, 2, 0, 1, 2, 3, 4, 0, 1, 2,
    12, 2, 3, 0, 1, 6, 7, 2, 3, 8, 9, 4, 5, 10, 11,
    1, 3, 2, 0, 0, 0, 0, 0, 0,
};

static void test_accelerate_rule(void)
{
    size_t at = 0;
    while (at < sizeof accel_table / sizeof accel_table[0]) {
        int R = accel_table[at], B = accel_table[at + 1], N = accel_table[at + 2];
        at += 3;
        for (int r = 0; r < N; r++) {
            k22_shard s;
            k22_err err;
            CHECK(k22_shard_init(&s, R, N, r, B, 7, &err) == K22_OK);
            for (int i = 0; i < R; i++) s.perm[i] = i; /* identity order, as SequentialSampler */
            s.epoch = 0;
            int64_t steps = k22_shard_steps(&s), rows[8];
            int ok = 1;
            for (int64_t st = 0; st < steps; st++) {
                k22_shard_batch_rows(&s, st, rows);
                for (int b = 0; b < B; b++) ok &= rows[b] == accel_table[at + st * B + b];
            }
            CHECK_MSG(ok, "R=%d B=%d N=%d rank %d differs from accelerate", R, B, N, r);
            at += (size_t)(steps * B);
            k22_shard_free(&s);
        }
    }
}

static void test_permutation(void)
{
    int64_t a[1000], b[1000];
    int seen[1000] = {0}, ok = 1;
    k22_shard_permutation(1000, SEED, 0, a);
    for (int i = 0; i < 1000; i++) ok &= a[i] >= 0 && a[i] < 1000 && !seen[a[i]]++;
    CHECK_MSG(ok, "not a permutation");
    k22_shard_permutation(1000, SEED, 0, b);
    CHECK(!memcmp(a, b, sizeof a));
    k22_shard_permutation(1000, SEED, 1, b);
    CHECK(memcmp(a, b, sizeof a) != 0);
    k22_shard_permutation(1000, SEED + 1, 0, b);
    CHECK(memcmp(a, b, sizeof a) != 0);
    /* Uniformity, loosely: where row 0 lands over 4000 epochs of 4 rows, each slot ~1000 (5 sigma). */
    int slot[4] = {0};
    for (int e = 0; e < 4000; e++) {
        int64_t p4[4];
        k22_shard_permutation(4, SEED, e, p4);
        for (int i = 0; i < 4; i++) slot[i] += p4[i] == 0;
    }
    for (int i = 0; i < 4; i++) CHECK_MSG(slot[i] > 860 && slot[i] < 1140, "slot %d holds row 0 %d times of 4000", i, slot[i]);
    k22_shard s;
    k22_err err;
    CHECK(k22_shard_init(&s, 10, 2, 2, 4, 0, &err) == K22_ERR_ARG);
    CHECK(k22_shard_init(&s, 0, 1, 0, 4, 0, &err) == K22_ERR_ARG);
}

static int write_pack(const char *path)
{
    k22_pack_meta m;
    memset(&m, 0, sizeof m);
    m.use = K22_PACK_FOR_BOTH;
    m.dtype = K22_DTYPE_F16;
    m.embed_dim = E;
    m.resolution = 8;
    m.latent_channels = 4;
    snprintf(m.preprocessing, sizeof m.preprocessing, "test rows");
    static float te[NROWS * E], th[NROWS * 77 * E], ie[NROWS * E], lat[NROWS * 4];
    static int32_t ids[NROWS * 77];
    static uint8_t mask[NROWS * 77];
    const char *cap[NROWS];
    for (int i = 0; i < NROWS; i++) {
        cap[i] = "row";
        for (int k = 0; k < E; k++) ie[i * E + k] = ie_val(i, k);
        for (int k = 0; k < 4; k++) lat[i * 4 + k] = lat_val(i, k);
        for (int k = 0; k < 77; k++) ids[i * 77 + k] = id_val(i, k);
    }
    k22_pack_batch b = {cap, cap, ids, mask, te, th, ie, lat};
    k22_pack_writer *w = NULL;
    k22_err err;
    k22_status st = k22_pack_writer_create(path, &m, &w, &err);
    if (!st) st = k22_pack_writer_append(w, &b, 10, &err);
    if (!st) st = k22_pack_writer_commit(w, 10, &err);
    b = (k22_pack_batch){cap + 10, cap + 10, ids + 770, mask + 770, te + 10 * E, th + 770 * E, ie + 10 * E, lat + 40};
    if (!st) st = k22_pack_writer_append(w, &b, NROWS - 10, &err);
    if (!st) st = k22_pack_writer_commit(w, NROWS, &err);
    if (st) fprintf(stderr, "%s\n", err.msg);
    k22_pack_writer_close(w, &err);
    return st != K22_OK;
}

/* The "perm-hash" lines of a child's output, concatenated. */
static void perm_lines(const char *out, char *dst, size_t cap)
{
    size_t k = 0;
    dst[0] = '\0';
    for (const char *h = strstr(out, "perm-hash"); h; h = strstr(h + 1, "perm-hash")) {
        size_t len = strcspn(h, "\n");
        if (k + len + 1 < cap) {
            memcpy(dst + k, h, len);
            k += len;
            dst[k++] = ';';
            dst[k] = '\0';
        }
    }
}

int main(int argc, char **argv)
{
    if (argc > 2 && !strcmp(argv[1], "--child")) return child(argv[2]);
    test_accelerate_rule();
    test_permutation();
    char self[4096], dir[] = "/tmp/k22_shard_test_XXXXXX", path[256];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    CHECK(n > 0 && mkdtemp(dir) != NULL);
    if (n <= 0) return k22_test_finish("test_shard");
    self[n] = '\0';
    snprintf(path, sizeof path, "%s/rows.h5", dir);
    CHECK(write_pack(path) == 0);
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 0);
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 0);
    /* Open MPI's own allocations are not ours to chase: leak checks stay in this process only. */
    setenv("ASAN_OPTIONS", "detect_leaks=0", 1);
    char hash[3][256];
    for (int np = 1; np <= 3; np++) {
        char cmd[8192], out[65536];
        snprintf(cmd, sizeof cmd, "timeout 120 mpirun --oversubscribe -np %d %s --child %s 2>&1", np, self, path);
        FILE *p = popen(cmd, "r");
        CHECK(p != NULL);
        if (!p) break;
        size_t len = fread(out, 1, sizeof out - 1, p);
        out[len] = '\0';
        int status = pclose(p);
        char ok[64];
        snprintf(ok, sizeof ok, "shard OK np=%d", np);
        CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0 && strstr(out, ok), "np=%d failed:\n%s", np, out);
        perm_lines(out, hash[np - 1], sizeof hash[np - 1]);
        CHECK_MSG(strlen(hash[np - 1]) > 3 * 30, "np=%d printed no permutation hashes", np);
        if (np > 1) CHECK_MSG(!strcmp(hash[np - 1], hash[0]), "np=%d permutation differs from np=1", np);
        fputs(out, stdout);
    }
    snprintf(self, sizeof self, "rm -rf %s", dir);
    if (system(self)) fprintf(stderr, "could not remove %s\n", dir);
    return k22_test_finish("test_shard");
}
