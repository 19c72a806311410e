/* bench_pack_read.c: prints (never asserts) the pack writer's and the sharded reader's speed at
 * the full sizes: 256 rows at resolution 768 (E = 1280, text_hidden 77x1280, latents 4x96x96),
 * `for both`, fp32 and fp16. One rank reads one shuffled epoch, batch 8, every numeric dataset
 * (floats delivered as f32): once after dropping the file from the page cache (cold, as far as
 * fadvise allows) and once warm. MB/s counts the bytes stored in the file that were read.
 * Usage: bench_pack_read [DIR] (default /tmp); the two packs are removed afterwards. */
#include "k22/fsutil.h"
#include "k22/pack.h"
#include "k22/shard.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { ROWS = 256, E = 1280, RES = 768, LS = RES / 8, APPEND = 16, BATCH = 8 };

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static void fill(float *x, size_t n, uint32_t seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        x[i] = (float)(seed >> 8) * (1.0f / 16777216.0f) - 0.5f;
    }
}

static void die(const k22_err *err)
{
    fprintf(stderr, "bench_pack_read: %s\n", err->msg);
    exit(1);
}

static double write_pack(const char *path, k22_dtype dt)
{
    k22_pack_meta m;
    memset(&m, 0, sizeof m);
    m.use = K22_PACK_FOR_BOTH;
    m.dtype = dt;
    m.embed_dim = E;
    m.resolution = RES;
    m.latent_channels = 4;
    snprintf(m.preprocessing, sizeof m.preprocessing, "bench: random rows");
    float *te = malloc((size_t)APPEND * E * 4), *ie = malloc((size_t)APPEND * E * 4);
    float *th = malloc((size_t)APPEND * 77 * E * 4), *lat = malloc((size_t)APPEND * 4 * LS * LS * 4);
    int32_t *ids = calloc((size_t)APPEND * 77, 4);
    uint8_t *mask = calloc((size_t)APPEND * 77, 1);
    const char *cap[APPEND];
    for (int i = 0; i < APPEND; i++) cap[i] = "a drawing of a man with red hair and a blue jacket";
    k22_pack_batch b = {cap, cap, ids, mask, te, th, ie, lat};
    k22_pack_writer *w = NULL;
    k22_err err;
    double t0 = now();
    if (k22_pack_writer_create(path, &m, &w, &err)) die(&err);
    for (int r = 0; r < ROWS; r += APPEND) {
        fill(te, (size_t)APPEND * E, r + 1);
        fill(ie, (size_t)APPEND * E, r + 2);
        fill(th, (size_t)APPEND * 77 * E, r + 3);
        fill(lat, (size_t)APPEND * 4 * LS * LS, r + 4);
        if (k22_pack_writer_append(w, &b, APPEND, &err) || k22_pack_writer_commit(w, r + APPEND, &err)) die(&err);
    }
    if (k22_pack_writer_close(w, &err)) die(&err);
    double t = now() - t0;
    free(te), free(ie), free(th), free(lat), free(ids), free(mask);
    return t;
}

static void drop_cache(const char *path)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0) return;
    fdatasync(fd);
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
}

/* One epoch of one rank; returns seconds, adds stored bytes read to *bytes. */
static double read_epoch(const char *path, double *bytes)
{
    static const k22_pack_field fields[] = {K22_PACK_INPUT_IDS, K22_PACK_ATTENTION_MASK, K22_PACK_TEXT_EMBEDS,
                                            K22_PACK_TEXT_HIDDEN, K22_PACK_IMAGE_EMBEDS, K22_PACK_LATENTS};
    k22_err err;
    k22_pack *p = NULL;
    k22_shard s;
    double t0 = now();
    if (k22_pack_open(path, &p, &err)) die(&err);
    if (k22_shard_init(&s, k22_pack_rows(p), 1, 0, BATCH, 42, &err)) die(&err);
    k22_shard_set_epoch(&s, 0);
    const k22_pack_meta *m = k22_pack_meta_of(p);
    size_t fsz = m->dtype == K22_DTYPE_F16 ? 2 : 4;
    float *buf = malloc((size_t)BATCH * 77 * E * 4);
    *bytes = 0;
    for (int64_t st = 0; st < k22_shard_steps(&s); st++)
        for (size_t f = 0; f < sizeof fields / sizeof fields[0]; f++) {
            if (k22_shard_read(&s, p, st, fields[f], buf, &err)) die(&err);
            size_t el = fields[f] == K22_PACK_ATTENTION_MASK ? 1 : fields[f] == K22_PACK_INPUT_IDS ? 4 : fsz;
            *bytes += (double)BATCH * (double)k22_pack_row_numel(m, fields[f]) * (double)el;
        }
    double t = now() - t0;
    free(buf);
    k22_shard_free(&s);
    k22_pack_close(p);
    return t;
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "/tmp";
    printf("pack: %d rows, resolution %d, E %d, for both, shuffled reads of batch %d on 1 rank\n", ROWS, RES, E, BATCH);
    printf("%-5s %10s %10s %12s %10s %12s %10s\n", "dtype", "file MB", "write s", "cold rows/s", "cold MB/s",
           "warm rows/s", "warm MB/s");
    k22_dtype dts[2] = {K22_DTYPE_F32, K22_DTYPE_F16};
    for (int d = 0; d < 2; d++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/k22_bench_pack_%s.h5", dir, k22_dtype_name(dts[d]));
        double tw = write_pack(path, dts[d]), bytes = 0;
        drop_cache(path);
        double tc = read_epoch(path, &bytes);
        double tr = read_epoch(path, &bytes);
        for (int rep = 0; rep < 2; rep++) {
            double t = read_epoch(path, &bytes);
            if (t < tr) tr = t;
        }
        printf("%-5s %10.1f %10.2f %12.0f %10.0f %12.0f %10.0f\n", k22_dtype_name(dts[d]),
               (double)k22_fs_size(path) / 1e6, tw, ROWS / tc, bytes / tc / 1e6, ROWS / tr, bytes / tr / 1e6);
        unlink(path);
    }
    return 0;
}
