/* test_diffusers_dir.c: component folders: save -> load is bitwise, writing twice gives the
 * same bytes, the strict key check names missing / unexpected / mis-shaped keys, F16 and BF16
 * weights convert, bad dtypes and truncated files fail cleanly, shards round-trip, and the
 * pipeline files (model_index.json, tokenizer/) round-trip. */
#include "harness/harness.h"
#include "k22/diffusers.h"
#include "k22/embedded.h"
#include "k22/fsutil.h"
#include "k22/safetensors.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char g_root[256];

static void path_in(char *out, size_t n, const char *a, const char *b)
{
    int len = snprintf(out, n, "%s/%s", a, b);
    CHECK_MSG(len > 0 && (size_t)len < n, "path %s/%s too long", a, b);
}

/* Builds, allocates and randomly initializes the tiny preset of kind. */
static int make_model(k22_model_kind kind, uint64_t seed, k22_model_config *cfg, k22_params *ps)
{
    k22_err err;
    k22_params_init(ps);
    if (k22_config_preset(kind, "tiny", cfg, &err) || k22_params_build(cfg, ps, &err)) {
        CHECK_MSG(0, "tiny %s: %s", k22_model_class_name(kind), err.msg);
        return -1;
    }
    k22_params_alloc(ps);
    k22_params_init_random(cfg, ps, seed);
    return 0;
}

static int files_equal(const char *a, const char *b)
{
    char *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    int eq = !k22_fs_read_all(a, (size_t)1 << 30, &x, &nx, NULL) &&
             !k22_fs_read_all(b, (size_t)1 << 30, &y, &ny, NULL) && nx == ny && !memcmp(x, y, nx);
    free(x);
    free(y);
    return eq;
}

static void test_round_trip(k22_model_kind kind)
{
    k22_model_config cfg, cfg2;
    k22_params ps, ps2, back;
    if (make_model(kind, 1234, &cfg, &ps) || make_model(kind, 1234, &cfg2, &ps2)) return;
    const char *cls = k22_model_class_name(kind);
    CHECK_MSG(ps.total == ps2.total && !memcmp(ps.data, ps2.data, ps.total * sizeof(float)),
              "%s: the same seed gave different weights", cls);
    char a[512], b[512], fa[600], fb[600];
    snprintf(a, sizeof a, "%s/%s-a", g_root, cls);
    snprintf(b, sizeof b, "%s/%s-b", g_root, cls);
    k22_err err;
    CHECK_MSG(!k22_component_save(a, &cfg, &ps, K22_SHARD_BYTES_DEFAULT, &err), "%s", err.msg);
    CHECK_MSG(!k22_component_save(b, &cfg2, &ps2, K22_SHARD_BYTES_DEFAULT, &err), "%s", err.msg);
    path_in(fa, sizeof fa, a, k22_model_weights_file(kind));
    path_in(fb, sizeof fb, b, k22_model_weights_file(kind));
    CHECK_MSG(files_equal(fa, fb), "%s: two saves of the same seed differ", cls);
    path_in(fa, sizeof fa, a, "config.json");
    path_in(fb, sizeof fb, b, "config.json");
    CHECK_MSG(files_equal(fa, fb), "%s: config.json differs between saves", cls);
    k22_model_config lc;
    k22_status st = k22_component_load(a, &lc, &back, &err);
    CHECK_MSG(!st, "%s load: %s", cls, err.msg);
    if (!st) {
        CHECK(lc.kind == kind);
        CHECK(back.count == ps.count && back.total == ps.total);
        int bad = 0;
        for (int i = 0; i < ps.count && back.count == ps.count; i++)
            if (memcmp(ps.data + ps.items[i].offset, back.data + back.items[i].offset,
                       ps.items[i].numel * sizeof(float)))
                bad++;
        CHECK_MSG(bad == 0, "%s: %d tensors differ after save -> load", cls, bad);
        k22_params_free(&back);
    }
    /* Another seed gives other weights. */
    k22_params_init_random(&cfg2, &ps2, 1235);
    CHECK_MSG(memcmp(ps.data, ps2.data, ps.total * sizeof(float)) != 0, "%s: seed ignored", cls);
    k22_params_free(&ps);
    k22_params_free(&ps2);
}

static void test_init_roles(void)
{
    k22_model_config cfg;
    k22_params ps;
    if (make_model(K22_MODEL_PRIOR, 7, &cfg, &ps)) return;
    const k22_param *mean = k22_params_find(&ps, "clip_mean"), *std = k22_params_find(&ps, "clip_std");
    CHECK(mean && std);
    int bad = 0;
    for (size_t k = 0; mean && std && k < mean->numel; k++)
        bad += ps.data[mean->offset + k] != 0.0f || ps.data[std->offset + k] != 1.0f;
    CHECK_MSG(bad == 0, "clip_mean must be 0 and clip_std 1 (%d wrong)", bad);
    for (int i = 0; i < ps.count; i++) {
        const k22_param *p = &ps.items[i];
        const float *x = ps.data + p->offset;
        size_t nl = strlen(p->name);
        if (nl > 5 && !strcmp(p->name + nl - 5, ".bias")) {
            for (size_t k = 0; k < p->numel; k++) bad += x[k] != 0.0f;
        } else if (p->ndim == 2 && strstr(p->name, "proj_in.weight")) {
            /* U(+-1/sqrt(fan_in)): every value inside, spread close to the bound. */
            float b = 1.0f / sqrtf((float)p->shape[1]), mx = 0;
            for (size_t k = 0; k < p->numel; k++) {
                bad += x[k] < -b || x[k] > b;
                if (fabsf(x[k]) > mx) mx = fabsf(x[k]);
            }
            CHECK_MSG(mx > 0.9f * b, "proj_in.weight max %g, bound %g", mx, b);
        }
    }
    CHECK_MSG(bad == 0, "%d values break the init rules", bad);
    k22_params_free(&ps);
}

/* Writes ps's tensors to path with one tensor dropped, one renamed and one mis-shaped. */
static void write_broken(const char *path, const k22_params *ps, k22_dtype dt, int drop,
                         int extra, int reshape)
{
    k22_st_writer *w = k22_st_writer_new();
    void **bufs = calloc((size_t)ps->count, sizeof *bufs);
    for (int i = 0; i < ps->count; i++) {
        const k22_param *p = &ps->items[i];
        if (i == drop) continue;
        bufs[i] = malloc(p->numel * k22_dtype_size(dt) + 1);
        k22_convert_from_f32(bufs[i], dt, ps->data + p->offset, p->numel);
        int64_t shape[K22_MAX_DIMS];
        memcpy(shape, p->shape, sizeof shape);
        int ndim = p->ndim;
        if (i == reshape) { /* same element count, other shape */
            shape[0] = (int64_t)p->numel;
            ndim = 1;
        }
        char name[300];
        snprintf(name, sizeof name, "%s%s", p->name, i == extra ? ".renamed" : "");
        k22_st_writer_add(w, name, dt, ndim, shape, bufs[i]);
    }
    k22_err err;
    CHECK_MSG(!k22_st_write(w, path, &err), "%s", err.msg);
    k22_st_writer_free(w);
    for (int i = 0; i < ps->count; i++) free(bufs[i]);
    free(bufs);
}

static void test_strict_keys(void)
{
    k22_model_config cfg;
    k22_params ps;
    if (make_model(K22_MODEL_PRIOR, 3, &cfg, &ps)) return;
    char path[512];
    path_in(path, sizeof path, g_root, "broken.safetensors");
    /* Pick a mis-shaped victim with ndim >= 2 so that flattening changes its shape. */
    int reshape = -1;
    for (int i = 0; i < ps.count && reshape < 0; i++)
        if (ps.items[i].ndim >= 2 && i != 1 && i != 2) reshape = i;
    write_broken(path, &ps, K22_DTYPE_F32, 1, 2, reshape);
    k22_err err;
    k22_status st = k22_weights_load(path, &ps, &err);
    CHECK(st == K22_ERR_KEY);
    char want[400];
    snprintf(want, sizeof want, "'%s'", ps.items[1].name);
    CHECK_MSG(strstr(err.msg, "missing") && strstr(err.msg, want), "missing key not named: %s", err.msg);
    snprintf(want, sizeof want, "'%s.renamed'", ps.items[2].name);
    CHECK_MSG(strstr(err.msg, "unexpected") && strstr(err.msg, want), "unexpected key not named: %s", err.msg);
    snprintf(want, sizeof want, "'%s'", ps.items[reshape].name);
    CHECK_MSG(strstr(err.msg, "mis-shaped") && strstr(err.msg, want), "mis-shaped key not named: %s", err.msg);
    CHECK_MSG(strstr(err.msg, "broken.safetensors") != NULL, "file not named: %s", err.msg);

    /* A file with a single tensor: the long missing list ends in "and N more". */
    k22_st_writer *w = k22_st_writer_new();
    const k22_param *p0 = &ps.items[0];
    k22_st_writer_add(w, p0->name, K22_DTYPE_F32, p0->ndim, p0->shape, ps.data + p0->offset);
    CHECK(!k22_st_write(w, path, &err));
    k22_st_writer_free(w);
    st = k22_weights_load(path, &ps, &err);
    char more[64];
    snprintf(more, sizeof more, "%d missing keys", ps.count - 1);
    CHECK_MSG(st == K22_ERR_KEY && strstr(err.msg, more) && strstr(err.msg, " more"),
              "expected '%s ... and N more': %s", more, err.msg);
    k22_params_free(&ps);
}

static void test_half_dtypes(void)
{
    k22_model_config cfg;
    k22_params ps, back;
    if (make_model(K22_MODEL_PRIOR, 11, &cfg, &ps)) return;
    char path[512];
    path_in(path, sizeof path, g_root, "half.safetensors");
    const k22_dtype dts[2] = {K22_DTYPE_F16, K22_DTYPE_BF16};
    for (int d = 0; d < 2; d++) {
        write_broken(path, &ps, dts[d], -1, -1, -1);
        k22_params_init(&back);
        k22_err err;
        k22_params_build(&cfg, &back, &err);
        k22_params_alloc(&back);
        k22_status st = k22_weights_load(path, &back, &err);
        CHECK_MSG(!st, "%s load: %s", k22_dtype_name(dts[d]), err.msg);
        /* Exact: the loaded value is the stored half value widened. */
        int bad = 0;
        for (int i = 0; i < ps.count && !st; i++)
            for (size_t k = 0; k < ps.items[i].numel; k++) {
                float x = ps.data[ps.items[i].offset + k];
                float want = dts[d] == K22_DTYPE_F16 ? k22_f16_to_f32(k22_f32_to_f16(x))
                                                     : k22_bf16_to_f32(k22_f32_to_bf16(x));
                bad += back.data[back.items[i].offset + k] != want;
            }
        CHECK_MSG(bad == 0, "%s: %d values differ from the rounded originals", k22_dtype_name(dts[d]), bad);
        k22_params_free(&back);
    }
    /* An integer dtype is refused, naming the tensor. */
    write_broken(path, &ps, K22_DTYPE_I32, -1, -1, -1);
    k22_err err;
    k22_status st = k22_weights_load(path, &ps, &err);
    CHECK_MSG(st != K22_OK && strstr(err.msg, ps.items[0].name) && strstr(err.msg, "I32"),
              "I32 weights: %s", err.msg);
    k22_params_free(&ps);
}

static void test_truncated_and_sharded(void)
{
    k22_model_config cfg, lc;
    k22_params ps, back;
    if (make_model(K22_MODEL_MOVQ, 5, &cfg, &ps)) return;
    char dir[512], file[600];
    k22_err err;
    /* Shards of at most 16 KiB: many files plus an index; loads back bitwise. */
    path_in(dir, sizeof dir, g_root, "movq-sharded");
    CHECK_MSG(!k22_component_save(dir, &cfg, &ps, 16384, &err), "%s", err.msg);
    path_in(file, sizeof file, dir, "diffusion_pytorch_model.safetensors.index.json");
    CHECK_MSG(k22_fs_is_file(file), "no index.json after a sharded save");
    k22_status st = k22_component_load(dir, &lc, &back, &err);
    CHECK_MSG(!st, "sharded load: %s", err.msg);
    if (!st) {
        CHECK(back.total == ps.total && !memcmp(back.data, ps.data, ps.total * sizeof(float)));
        k22_params_free(&back);
    }
    /* A single file cut short: the load fails and names the file. */
    path_in(dir, sizeof dir, g_root, "movq-cut");
    CHECK_MSG(!k22_component_save(dir, &cfg, &ps, K22_SHARD_BYTES_DEFAULT, &err), "%s", err.msg);
    path_in(file, sizeof file, dir, "diffusion_pytorch_model.safetensors");
    int64_t size = k22_fs_size(file);
    CHECK(size > 1000 && truncate(file, size - 100) == 0);
    st = k22_component_load(dir, &lc, &back, &err);
    CHECK_MSG(st != K22_OK && strstr(err.msg, "diffusion_pytorch_model.safetensors"),
              "truncated file: status %d: %s", st, err.msg);
    CHECK(back.count == 0 && back.data == NULL);
    k22_params_free(&ps);
}

static void test_pipeline_files(void)
{
    k22_model_index mi, rd;
    k22_model_index_for(K22_PIPE_PRIOR, "UnCLIPScheduler", &mi);
    char path[512];
    path_in(path, sizeof path, g_root, "model_index.json");
    k22_err err;
    CHECK_MSG(!k22_model_index_write(path, &mi, &err), "%s", err.msg);
    CHECK_MSG(!k22_model_index_read(path, &rd, &err), "%s", err.msg);
    CHECK(!strcmp(rd.class_name, "KandinskyV22PriorPipeline") && rd.n == 6);
    const k22_pipe_component *c = k22_model_index_find(&rd, "image_encoder");
    CHECK(c && !strcmp(c->library, "transformers") && !strcmp(c->cls, "CLIPVisionModelWithProjection"));
    c = k22_model_index_find(&rd, "scheduler");
    CHECK(c && !strcmp(c->cls, "UnCLIPScheduler"));
    /* A component that is not [library, class] is refused. */
    FILE *f = fopen(path, "w");
    fputs("{\"_class_name\": \"KandinskyV22Pipeline\", \"unet\": \"diffusers\"}", f);
    fclose(f);
    CHECK_MSG(k22_model_index_read(path, &rd, &err) == K22_ERR_FORMAT && strstr(err.msg, "unet"),
              "bad entry: %s", err.msg);
    char dir[512];
    path_in(dir, sizeof dir, g_root, "tokenizer");
    CHECK_MSG(!k22_tokenizer_write(dir, &err), "%s", err.msg);
    path_in(path, sizeof path, dir, "vocab.json");
    CHECK(k22_fs_size(path) == (int64_t)(k22_clip_vocab_json_end - k22_clip_vocab_json));
    path_in(path, sizeof path, dir, "merges.txt");
    CHECK(k22_fs_size(path) == (int64_t)(k22_clip_merges_txt_end - k22_clip_merges_txt));
}

int main(void)
{
    snprintf(g_root, sizeof g_root, "/tmp/k22-test-diffusers-XXXXXX");
    if (!mkdtemp(g_root)) return 1;
    for (int k = 0; k < K22_MODEL_COUNT; k++) test_round_trip((k22_model_kind)k);
    test_init_roles();
    test_strict_keys();
    test_half_dtypes();
    test_truncated_and_sharded();
    test_pipeline_files();
    k22_fs_rm_rf(g_root, NULL);
    return k22_test_finish("diffusers_dir");
}
