/* model_fixture.h (tests/model only): what the model tests share: reading the fixtures of
 * tools/reference/make_*_fixtures.py, making a model's deterministic weights (the ones `k22 init`
 * writes) on a backend or into a folder for the generators (--write-weights), comparisons that
 * print the error they found, and the canary that proves a comparison can fail. */
#ifndef K22_TEST_MODEL_FIXTURE_H
#define K22_TEST_MODEL_FIXTURE_H

#include "harness/harness.h"
#include "k22/config.h"
#include "k22/diffusers.h"
#include "k22/ops.h"
#include "k22/safetensors.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MF_DIR "tests/fixtures/models"

/* A fixture tensor as malloc'd f32 (caller frees); dies with a message when absent or when its
 * element count differs from n (n < 0: any). *count gets the count when non-NULL. */
static inline float *mf_get(const k22_st_file *f, const char *name, int64_t n, int64_t *count)
{
    const k22_st_tensor *t = k22_st_find(f, name);
    if (!t) K22_FATAL("fixture %s: no tensor '%s' (regenerate with make_model_fixtures.py)", k22_st_path(f), name);
    int64_t m = k22_shape_numel(t->ndim, t->shape);
    if (n >= 0 && m != n) K22_FATAL("fixture tensor '%s' has %lld values, the test expects %lld", name, (long long)m, (long long)n);
    float *x = k22_xmalloc((size_t)(m ? m : 1) * sizeof(float));
    k22_convert_to_f32(x, t->data, t->dtype, (size_t)m);
    if (count) *count = m;
    return x;
}

static inline k22_st_file *mf_open(const char *file)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", MF_DIR, file);
    k22_st_file *f = NULL;
    k22_err err;
    if (k22_st_open(path, &f, &err)) K22_FATAL("%s", err.msg);
    return f;
}

/* A model's table and host weights: "tiny" (k22_config_preset) or a folder with config.json;
 * weights from k22_params_init_random(seed), exactly what `k22 init` and --write-weights save. */
static inline void mf_model(k22_model_kind kind, const char *size_or_dir, uint64_t seed,
                     k22_model_config *cfg, k22_params *ps)
{
    k22_err err;
    k22_status st;
    if (!strcmp(size_or_dir, "tiny")) {
        st = k22_config_preset(kind, "tiny", cfg, &err);
    } else {
        char path[512];
        snprintf(path, sizeof path, "%s/config.json", size_or_dir);
        st = k22_config_read(path, cfg, &err);
    }
    if (!st && cfg->kind != kind) st = k22_err_set(&err, K22_ERR_ARG, "%s: wrong model kind", size_or_dir);
    k22_params_init(ps);
    if (!st) st = k22_params_build(cfg, ps, &err);
    if (st) K22_FATAL("%s", err.msg);
    k22_params_alloc(ps);
    k22_params_init_random(cfg, ps, seed);
}

/* `<prog> --write-weights CONFIG_DIR SEED OUT_DIR`, the generators' helper: saves the
 * deterministic weights of CONFIG_DIR/config.json as a component folder. Returns the exit code. */
static inline int mf_write_weights(const char *prog, const char *cfg_dir, const char *seed, const char *out)
{
    k22_model_config cfg;
    k22_params ps;
    char path[512];
    k22_err err;
    snprintf(path, sizeof path, "%s/config.json", cfg_dir);
    k22_status st = k22_config_read(path, &cfg, &err);
    k22_params_init(&ps);
    if (!st) st = k22_params_build(&cfg, &ps, &err);
    if (!st) {
        k22_params_alloc(&ps);
        k22_params_init_random(&cfg, &ps, strtoull(seed, NULL, 10));
        st = k22_component_save(out, &cfg, &ps, K22_SHARD_BYTES_DEFAULT, &err);
    }
    k22_params_free(&ps);
    if (st) fprintf(stderr, "%s --write-weights: %s\n", prog, err.msg);
    return st ? 1 : 0;
}

/* Seconds on the monotonic clock (the tests print their timings). */
static inline double mf_now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

/* Device copy of n host floats. */
static inline float *mf_upload(const k22_backend *be, const float *x, size_t n)
{
    float *d = be->alloc(be->ctx, n * sizeof(float) + 64);
    be->to_device(be->ctx, d, x, n * sizeof(float));
    return d;
}

static inline float *mf_download(const k22_backend *be, const float *d, size_t n)
{
    float *x = k22_xmalloc(n * sizeof(float) + 4);
    be->to_host(be->ctx, x, d, n * sizeof(float));
    return x;
}

typedef struct {
    int64_t bad;
    double max_abs, max_rel, ref_max;
} mf_stats;

/* |got - ref| <= atol_rel * max|ref| + rtol * |ref| per element: the absolute part scales with
 * the tensor, since sums of many terms leave errors relative to their inputs, not to a result
 * that cancels to near 0. max_rel is max |got-ref| / max(|ref|, max|ref|*1e-3). */
static inline mf_stats mf_stats_scaled(const float *got, const float *ref, int64_t n, double atol_rel,
                                double rtol, double scale)
{
    mf_stats s = {0};
    for (int64_t i = 0; i < n; i++) s.ref_max = fmax(s.ref_max, fabs((double)ref[i]));
    double atol = atol_rel * (scale >= 0 ? scale : s.ref_max);
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]), r = fabs((double)ref[i]);
        if (!(d <= atol + rtol * r)) s.bad++;
        if (d > s.max_abs || isnan(d)) s.max_abs = d;
        double rel = d / fmax(r, s.ref_max * 1e-3);
        if (rel > s.max_rel || isnan(rel)) s.max_rel = rel;
    }
    return s;
}

/* The usual case: the absolute part relative to max|ref|. */
static inline mf_stats mf_stats_of(const float *got, const float *ref, int64_t n, double atol_rel,
                            double rtol)
{
    return mf_stats_scaled(got, ref, n, atol_rel, rtol, -1.0);
}

/* One check; prints the measured error always (the report's figures come from this line). */
static inline void mf_check_scaled(const char *be_name, const char *what, const float *got,
                            const float *ref, int64_t n, double atol_rel, double rtol, double scale)
{
    mf_stats s = mf_stats_scaled(got, ref, n, atol_rel, rtol, scale);
    CHECK_MSG(s.bad == 0, "%s %s: %lld of %lld values outside tolerance (max abs %.3g, max|ref| %.3g)",
              be_name, what, (long long)s.bad, (long long)n, s.max_abs, s.ref_max);
    printf("%-8s %-60s n=%-7lld max_abs %.2e  max_rel %.2e  (max|ref| %.2e; tol %.0e*%s + %.0e*|ref|)\n",
           be_name, what, (long long)n, s.max_abs, s.max_rel, s.ref_max, atol_rel,
           scale >= 0 ? "scale" : "max|ref|", rtol);
}

static inline void mf_check(const char *be_name, const char *what, const float *got, const float *ref,
                     int64_t n, double atol_rel, double rtol)
{
    mf_check_scaled(be_name, what, got, ref, n, atol_rel, rtol, -1.0);
}

/* Bit-for-bit equality of two runs that must agree (with and without gradient checkpointing);
 * on a mismatch, how many values differ and by how much. */
static inline void mf_check_same(const char *label, const char *what, const float *a, const float *b,
                                 size_t n)
{
    size_t diff = 0;
    double mx = 0;
    for (size_t i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], sizeof(float))) {
            diff++;
            mx = fmax(mx, fabs((double)a[i] - b[i]));
        }
    CHECK_MSG(diff == 0, "%s %s: %zu of %zu values differ with checkpointing (max abs %.3g)",
              label, what, diff, n, mx);
}

/* Canary: fixture tensor `name` compared with itself must pass, and with its largest element
 * moved by 1e-3 relative must fail in exactly that element. what names the value in the message. */
static inline void mf_canary_max(const k22_st_file *f, const char *name, const char *what,
                                 double atol_rel, double rtol)
{
    int64_t n;
    float *ref = mf_get(f, name, -1, &n);
    float *got = k22_xmalloc((size_t)n * sizeof(float));
    memcpy(got, ref, (size_t)n * sizeof(float));
    CHECK_MSG(mf_stats_of(got, ref, n, atol_rel, rtol).bad == 0, "canary: equal tensors differ");
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++) if (fabsf(ref[i]) > fabsf(ref[k])) k = i;
    got[k] *= 1.001f;
    int64_t bad = mf_stats_of(got, ref, n, atol_rel, rtol).bad;
    CHECK_MSG(bad == 1, "canary: %s moved by 1e-3 went unnoticed (%lld bad)", what, (long long)bad);
    free(ref), free(got);
}

#endif
