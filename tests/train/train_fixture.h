/* train_fixture.h: what the training tests share: a tiny prior pipeline (k22 init), a small
 * prior pack of random embeddings written through pack.h, running k22, and reading
 * metrics.jsonl back. */
#ifndef K22_TRAIN_FIXTURE_H
#define K22_TRAIN_FIXTURE_H

#include "harness/harness.h"
#include "k22/diffusers.h"
#include "k22/fsutil.h"
#include "k22/pack.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#define TF_E 32 /* the tiny prior's embedding_dim */

static inline const char *tf_bin(void)
{
    const char *b = getenv("K22_BIN");
    return b ? b : "build/k22";
}

/* The environment of tests that run k22 (which starts MPI) and mpirun: Open MPI's own
 * allocations are not ours to chase (no leak checks in the k22 processes under ASan), root may
 * run mpirun, one OpenMP thread per rank on this small machine. */
static inline void tf_mpi_env(void)
{
    setenv("ASAN_OPTIONS", "detect_leaks=0", 1);
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 0);
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 0);
    setenv("OMP_NUM_THREADS", "1", 1);
}

/* Runs a shell command line; returns its exit code (-1 when killed). */
static inline int tf_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline int tf_sh(const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int s = system(cmd);
    return WIFEXITED(s) ? WEXITSTATUS(s) : -1;
}

/* rows rows of random inputs (values in [-1, 1], image embeddings times ie_scale, masks of 3..77 tokens) for use (prior or
 * decoder); res is the image resolution (latents res/f square, f = 2 for a decoder pack, the
 * tiny decoder's MoVQ factor, else 8). Rows from nan_from on get NaN
 * image embeddings (rows: none); rows from copy_from on repeat rows 0, 1, ... (rows: none). */
static inline int tf_write_pack_full(const char *path, k22_pack_for use, int rows, int res, uint64_t seed,
                                     int nan_from, int copy_from, float ie_scale)
{
    k22_pack_meta m;
    memset(&m, 0, sizeof m);
    m.use = use;
    m.dtype = K22_DTYPE_F32;
    m.embed_dim = TF_E;
    m.resolution = res;
    m.latent_channels = 4;
    m.latent_factor = (use & K22_PACK_FOR_DECODER) ? 2 : 8;
    snprintf(m.preprocessing, sizeof m.preprocessing, "test: random embeddings");
    m.chunk_bytes = 1 << 16;
    m.n_models = 1;
    snprintf(m.models[0].name, 64, "prior");
    snprintf(m.models[0].path, 1024, "/test/prior");
    memset(m.models[0].sha256, 'a', 64);
    size_t n = (size_t)rows;
    float *te = malloc(n * TF_E * sizeof(float)), *th = malloc(n * 77 * TF_E * sizeof(float));
    float *ie = malloc(n * TF_E * sizeof(float));
    int32_t *ids = calloc(n * 77, sizeof(int32_t));
    uint8_t *mask = calloc(n * 77, 1);
    const char **cap = malloc(n * sizeof *cap);
    size_t nl = (size_t)4 * (size_t)(res / m.latent_factor) * (size_t)(res / m.latent_factor);
    float *lat = malloc(n * nl * sizeof(float));
    k22_test_fill(lat, (int64_t)(n * nl), seed + 3, -1, 1);
    k22_test_fill(te, (int64_t)(n * TF_E), seed, -1, 1);
    k22_test_fill(th, (int64_t)(n * 77 * TF_E), seed + 1, -1, 1);
    k22_test_fill(ie, (int64_t)(n * TF_E), seed + 2, -1, 1);
    for (size_t i = (size_t)copy_from; i < n; i++) {
        size_t j = i - (size_t)copy_from;
        memcpy(te + i * TF_E, te + j * TF_E, TF_E * sizeof(float));
        memcpy(th + i * 77 * TF_E, th + j * 77 * TF_E, 77 * TF_E * sizeof(float));
        memcpy(ie + i * TF_E, ie + j * TF_E, TF_E * sizeof(float));
        memcpy(lat + i * nl, lat + j * nl, nl * sizeof(float));
    }
    for (size_t i = 0; i < n * TF_E; i++) ie[i] *= ie_scale;
    for (size_t i = (size_t)nan_from * TF_E; i < n * TF_E; i++) ie[i] = NAN;
    for (size_t i = 0; i < n; i++) {
        cap[i] = "a caption";
        size_t src = i >= (size_t)copy_from ? i - (size_t)copy_from : i;
        for (size_t k = 0; k < 3 + (src * 7) % 75; k++) mask[i * 77 + k] = 1, ids[i * 77 + k] = (int32_t)k;
    }
    k22_pack_batch b = {.caption = cap, .source = cap, .input_ids = ids, .attention_mask = mask,
                        .text_embeds = te, .text_hidden = th, .image_embeds = ie, .latents = lat};
    k22_err err;
    k22_err_clear(&err);
    k22_pack_writer *w = NULL;
    k22_status st = k22_pack_writer_create(path, &m, &w, &err);
    if (!st) st = k22_pack_writer_append(w, &b, rows, &err);
    if (!st) st = k22_pack_writer_commit(w, rows, &err);
    if (w && !st) st = k22_pack_writer_close(w, &err);
    else if (w) k22_pack_writer_close(w, NULL);
    if (st) fprintf(stderr, "pack: %s\n", err.msg);
    free(te), free(th), free(ie), free(ids), free(mask), free(cap), free(lat);
    return st ? -1 : 0;
}

static inline int tf_write_pack_ex(const char *path, k22_pack_for use, int rows, int res, uint64_t seed,
                                   int nan_from, int copy_from)
{
    return tf_write_pack_full(path, use, rows, res, seed, nan_from, copy_from, 1.0f);
}

static inline int tf_write_pack(const char *path, k22_pack_for use, int rows, int res, uint64_t seed)
{
    return tf_write_pack_ex(path, use, rows, res, seed, rows, rows);
}

static inline int tf_write_prior_pack(const char *path, int rows, uint64_t seed)
{
    return tf_write_pack(path, K22_PACK_FOR_PRIOR, rows, 16, seed);
}

/* Fills loss[step] (1-based, up to max) from OUT/metrics.jsonl; a step logged twice (a run
 * resumed from an earlier checkpoint) keeps its last value. Returns the largest step seen. */
static inline int tf_read_losses(const char *out_dir, double *loss, int max)
{
    char p[8192], line[1024];
    snprintf(p, sizeof p, "%s/metrics.jsonl", out_dir);
    FILE *f = fopen(p, "r");
    if (!f) return 0;
    int top = 0;
    while (fgets(line, sizeof line, f)) {
        int step = 0;
        const char *l = strstr(line, "\"loss\": ");
        if (sscanf(line, "{\"step\": %d", &step) != 1 || !l || step < 1 || step > max) continue;
        loss[step] = strtod(l + 8, NULL);
        if (step > top) top = step;
    }
    fclose(f);
    return top;
}

/* The number OUT/metrics.jsonl gives under key ("val_loss", "grad_norm") for step, from the last
 * line that has both; NAN when there is none. */
static inline double tf_read_metric(const char *out_dir, int step, const char *key)
{
    char p[8192], line[1024], k[64];
    snprintf(p, sizeof p, "%s/metrics.jsonl", out_dir);
    snprintf(k, sizeof k, "\"%s\": ", key);
    FILE *f = fopen(p, "r");
    double v = NAN;
    if (!f) return v;
    while (fgets(line, sizeof line, f)) {
        int s = 0;
        const char *l = strstr(line, k);
        if (sscanf(line, "{\"step\": %d", &s) == 1 && l && s == step) v = strtod(l + strlen(k), NULL);
    }
    fclose(f);
    return v;
}

/* The held-out loss of step; NAN when there is none. */
static inline double tf_read_val_loss(const char *out_dir, int step)
{
    return tf_read_metric(out_dir, step, "val_loss");
}

/* 1 when the two files have the same bytes. */
static inline int tf_same_file(const char *a, const char *b)
{
    char *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    int same = !k22_fs_read_all(a, 1u << 28, &x, &nx, NULL) && !k22_fs_read_all(b, 1u << 28, &y, &ny, NULL) &&
               nx == ny && !memcmp(x, y, nx);
    free(x);
    free(y);
    return same;
}

/* 1 when the component folder loads and every weight is finite. */
static inline int tf_weights_finite(const char *comp)
{
    k22_model_config cfg;
    k22_params ps;
    k22_params_init(&ps);
    k22_err err;
    if (k22_component_load(comp, &cfg, &ps, &err)) {
        printf("%s\n", err.msg);
        return 0;
    }
    int ok = 1;
    for (size_t i = 0; i < ps.total && ok; i++) ok = isfinite(ps.data[i]);
    k22_params_free(&ps);
    return ok;
}

/* The first line of file holding needle, read from needle on with sscanf(fmt, ...): 1 when it
 * filled `want` fields, else 0 (no such line, or it did not parse). */
static inline int tf_scan_line(const char *file, const char *needle, int want, const char *fmt, ...)
    __attribute__((format(scanf, 4, 5)));
static inline int tf_scan_line(const char *file, const char *needle, int want, const char *fmt, ...)
{
    char line[2048];
    FILE *f = fopen(file, "r");
    int ok = 0;
    while (f && fgets(line, sizeof line, f)) {
        const char *s = strstr(line, needle);
        if (!s) continue;
        va_list ap;
        va_start(ap, fmt);
        ok = vsscanf(s, fmt, ap) == want;
        va_end(ap);
        break;
    }
    if (f) fclose(f);
    return ok;
}

/* Lines of file that contain needle (grep -c; at most 255). */
static inline int tf_count_lines(const char *file, const char *needle)
{
    return tf_sh("exit $(grep -c -- '%s' %s)", needle, file);
}

#endif
