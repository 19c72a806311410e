/* cmd_inspect.c: `k22 inspect PATH`: describes a pipeline folder, a component folder, a
 * .safetensors file, a sharded index.json (classes, parameter counts, dtypes, file sizes,
 * SHA-256), an HDF5 training pack (k22_pack_describe) or a training checkpoint (its state and
 * AdamW moments checked against the trained component), loading component folders strictly
 * so that it doubles as a validator. With
 * --tensors it lists every tensor with checksums of its values as f32, which
 * tools/reference/conformance.py compares with PyTorch. */
#include "k22/ckpt.h"
#include "k22/cli.h"
#include "k22/config.h"
#include "k22/diffusers.h"
#include "k22/fsutil.h"
#include "k22/opts.h"
#include "k22/pack.h"
#include "k22/safetensors.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define K22_INDEX_MAX_BYTES ((size_t)64 << 20)

static int ends_with(const char *s, const char *suf)
{
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && !strcmp(s + n - m, suf);
}

static k22_status print_file(const char *path, k22_err *err)
{
    char hex[65];
    k22_status st = k22_fs_sha256(path, hex, err);
    if (st) return st;
    printf("  file %s  %lld bytes  sha256 %s\n", path, (long long)k22_fs_size(path), hex);
    return K22_OK;
}

/* The files behind a weights path: itself, or the distinct shards an index.json names. */
static k22_status print_files(const char *path, k22_err *err)
{
    if (!ends_with(path, ".index.json")) return print_file(path, err);
    char *text = NULL;
    size_t len = 0;
    k22_status st = k22_fs_read_all(path, K22_INDEX_MAX_BYTES, &text, &len, err);
    if (st) return st;
    json_error_t je;
    json_t *root = json_loadb(text, len, 0, &je);
    free(text);
    json_t *map = root ? json_object_get(root, "weight_map") : NULL;
    if (!json_is_object(map)) {
        json_decref(root);
        return k22_err_set(err, K22_ERR_FORMAT, "%s: no weight_map object", path);
    }
    char dir[4096], shard[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = '\0';
    else snprintf(dir, sizeof dir, ".");
    st = print_file(path, err);
    /* Shards are few; print each once, in order of first appearance in sorted keys. */
    json_t *seen = json_object();
    const char *key;
    json_t *v;
    json_object_foreach(map, key, v) {
        if (st) break;
        const char *f = json_string_value(v);
        if (!f || json_object_get(seen, f)) continue;
        json_object_set_new(seen, f, json_true());
        st = k22_fs_join(shard, sizeof shard, dir, f, err);
        if (!st) st = print_file(shard, err);
    }
    json_decref(seen);
    json_decref(root);
    return st;
}

static void print_tensor(const k22_st_tensor *t)
{
    int64_t n = k22_shape_numel(t->ndim, t->shape);
    float *x = k22_xmalloc((size_t)(n > 0 ? n : 1) * sizeof *x);
    k22_convert_to_f32(x, t->data, t->dtype, (size_t)n);
    double s1 = 0, s2 = 0;
    for (int64_t i = 0; i < n; i++) {
        s1 += x[i];
        s2 += (double)x[i] * x[i];
    }
    char hex[65];
    k22_sha256_hex(x, (size_t)n * sizeof *x, hex);
    printf("  tensor %s %s [", t->name, k22_dtype_name(t->dtype));
    for (int d = 0; d < t->ndim; d++) printf("%s%lld", d ? "," : "", (long long)t->shape[d]);
    printf("] sum=%.17g sumsq=%.17g sha256_f32=%s\n", s1, s2, hex);
    free(x);
}

static k22_status inspect_weights(const char *path, int tensors, k22_err *err)
{
    k22_st_set *set = NULL;
    k22_status st = k22_st_set_open(path, &set, err);
    if (st) return st;
    int n = k22_st_set_count(set);
    int64_t per_dtype[K22_DTYPE_COUNT] = {0}, numel = 0;
    for (int i = 0; i < n; i++) {
        const k22_st_tensor *t = k22_st_set_at(set, i);
        per_dtype[t->dtype]++;
        numel += k22_shape_numel(t->ndim, t->shape);
    }
    printf("weights %s: %d tensors, %lld values; dtypes:", path, n, (long long)numel);
    for (int d = 0; d < K22_DTYPE_COUNT; d++)
        if (per_dtype[d]) printf(" %s %lld", k22_dtype_name((k22_dtype)d), (long long)per_dtype[d]);
    printf("\n");
    st = print_files(path, err);
    for (int i = 0; i < n && !st && tensors; i++) print_tensor(k22_st_set_at(set, i));
    k22_st_set_close(set);
    return st;
}

static k22_status inspect_component(const char *dir, int tensors, k22_err *err)
{
    k22_model_config cfg;
    k22_params ps;
    char wpath[4096];
    k22_status st = k22_component_load(dir, &cfg, &ps, err);
    if (st) return st;
    printf("component %s: %s (%s), %zu parameters in %d tensors; strict load ok\n", dir,
           k22_model_class_name(cfg.kind), k22_model_library(cfg.kind), k22_params_numel(&ps),
           ps.count);
    k22_params_free(&ps);
    st = k22_component_weights_path(dir, cfg.kind, wpath, sizeof wpath, err);
    if (!st) st = inspect_weights(wpath, tensors, err);
    return st;
}

static k22_status inspect_scheduler(const char *dir, k22_err *err)
{
    char path[4096];
    k22_sched_config sc;
    k22_status st = k22_fs_join(path, sizeof path, dir, "scheduler_config.json", err);
    if (!st) st = k22_sched_config_read(path, &sc, err);
    if (!st)
        printf("scheduler %s: %s, %d train timesteps\n", dir, k22_sched_class_name(sc.kind),
               sc.num_train_timesteps);
    return st;
}

/* Folders that hold no weights: check that the files a loader needs are there and parse. */
static k22_status inspect_json_files(const char *dir, const char *what, const char *const *files,
                                     int nfiles, k22_err *err)
{
    char path[4096];
    for (int i = 0; i < nfiles; i++) {
        k22_status st = k22_fs_join(path, sizeof path, dir, files[i], err);
        if (st) return st;
        if (!k22_fs_is_file(path))
            return k22_err_set(err, K22_ERR_IO, "%s: missing %s (needed by the %s)", dir, files[i], what);
        if (!ends_with(files[i], ".json")) continue;
        json_error_t je;
        json_t *j = json_load_file(path, 0, &je);
        if (!j) return k22_err_set(err, K22_ERR_FORMAT, "%s: invalid JSON at line %d: %s", path, je.line, je.text);
        json_decref(j);
    }
    printf("%s %s: ok\n", what, dir);
    return K22_OK;
}

static k22_status inspect_tokenizer(const char *dir, k22_err *err)
{
    static const char *const bpe[] = {"vocab.json", "merges.txt", "tokenizer_config.json"};
    static const char *const fast[] = {"tokenizer.json", "tokenizer_config.json"};
    char path[4096];
    k22_status st = k22_fs_join(path, sizeof path, dir, "vocab.json", err);
    if (st) return st;
    return k22_fs_is_file(path) ? inspect_json_files(dir, "tokenizer", bpe, 3, err)
                                : inspect_json_files(dir, "tokenizer", fast, 2, err);
}

static k22_status inspect_pipeline(const char *dir, int tensors, k22_err *err)
{
    char path[4096], sub[4096];
    k22_model_index mi;
    k22_status st = k22_fs_join(path, sizeof path, dir, "model_index.json", err);
    if (!st) st = k22_model_index_read(path, &mi, err);
    if (st) return st;
    printf("pipeline %s: %s (diffusers %s), %d components\n", dir, mi.class_name,
           mi.version[0] ? mi.version : "?", mi.n);
    for (int i = 0; i < mi.n; i++) {
        const k22_pipe_component *c = &mi.comp[i];
        printf("  %-16s %s %s\n", c->name, c->library[0] ? c->library : "-", c->cls[0] ? c->cls : "(none)");
    }
    for (int i = 0; i < mi.n && !st; i++) {
        const k22_pipe_component *c = &mi.comp[i];
        if (!c->library[0]) continue;
        st = k22_fs_join(sub, sizeof sub, dir, c->name, err);
        if (st) break;
        if (!k22_fs_is_dir(sub)) {
            st = k22_err_set(err, K22_ERR_IO, "%s: component '%s' (%s) has no folder %s", path, c->name, c->cls, sub);
            break;
        }
        k22_fs_join(path, sizeof path, sub, "config.json", NULL);
        if (k22_fs_is_file(path)) st = inspect_component(sub, tensors, err);
        else if (strstr(c->cls, "Scheduler")) st = inspect_scheduler(sub, err);
        else if (strstr(c->cls, "Tokenizer")) st = inspect_tokenizer(sub, err);
        else if (strstr(c->cls, "ImageProcessor")) {
            static const char *const ip[] = {"preprocessor_config.json"};
            st = inspect_json_files(sub, "image processor", ip, 1, err);
        } else printf("%s: %s not checked\n", sub, c->cls);
    }
    return st;
}

/* OUT/checkpoint-N of k22 train: what --resume_from_checkpoint reads. The trained component
 * (and its EMA) load strictly, the loop's state parses, and the AdamW moments match the
 * component's parameters in this k22's layout or format 1's. */
static k22_status inspect_checkpoint(const char *dir, int tensors, k22_err *err)
{
    char p[4096], comp[4096], ema[4200];
    k22_fs_join(p, sizeof p, dir, "prior", NULL);
    const char *name = k22_fs_is_dir(p) ? "prior" : "unet";
    k22_status st = k22_fs_join(comp, sizeof comp, dir, name, err);
    if (!st) st = k22_fs_join(p, sizeof p, dir, K22_CKPT_MARKER, err);
    if (st) return st;
    if (!k22_fs_is_file(p))
        return k22_err_set(err, K22_ERR_FORMAT,
                           "%s: incomplete (no %s: written by a run that stopped mid-write); "
                           "--resume_from_checkpoint latest skips it", dir, K22_CKPT_MARKER);
    k22_model_config cfg;
    k22_params ps;
    k22_ckpt_state s;
    k22_params_init(&ps);
    st = k22_component_load(comp, &cfg, &ps, err);
    if (!st) st = k22_fs_join(p, sizeof p, dir, "k22_state", err);
    if (!st) st = k22_ckpt_state_read(p, &s, NULL, NULL, &ps, err);
    if (st) {
        k22_params_free(&ps);
        return st;
    }
    printf("checkpoint %s: complete, train-%s at step %lld (epoch %lld, %lld samples into it), "
           "checkpoint format %d%s\n", dir, s.stage, (long long)s.global_step, (long long)s.epoch,
           (long long)s.epoch_pos, s.format,
           s.format < K22_CKPT_FORMAT ? " (read into this k22's layout on resume)" : "");
    printf("  run: --seed %lld, %d rank(s) x --train_batch_size %d x --gradient_accumulation_steps "
           "%d; learning-rate scheduler at %lld steps", (long long)s.seed, s.world_size,
           s.train_batch_size, s.gradient_accumulation_steps, (long long)s.lr_sched_steps);
    if (s.ema_step > 0) printf("; EMA at step %lld, decay %g", (long long)s.ema_step, s.ema_decay);
    if (s.loss_scale > 0) printf("; fp16 loss scale %g", s.loss_scale);
    printf("\n  AdamW moments: 2 x %zu floats, the %s's %zu parameters as k22 lays them out, "
           "alignment padding included\n",
           s.format == 1 ? k22_params_table_order_total(&ps) : ps.total, name,
           k22_params_numel(&ps));
    k22_ckpt_state_free(&s);
    k22_params_free(&ps);
    st = inspect_component(comp, tensors, err);
    snprintf(ema, sizeof ema, "%s_ema", comp);
    if (!st && k22_fs_is_dir(ema)) st = inspect_component(ema, tensors, err);
    return st;
}

static k22_status inspect_path(const char *p, int tensors, k22_err *err)
{
    char path[4096];
    if (!k22_fs_exists(p)) return k22_err_set(err, K22_ERR_IO, "%s: no such file or folder", p);
    if (!k22_fs_is_dir(p)) {
        if (k22_pack_is_hdf5(p)) return k22_pack_describe(p, err);
        if (ends_with(p, ".safetensors") || ends_with(p, ".json")) return inspect_weights(p, tensors, err);
        return k22_err_set(err, K22_ERR_ARG, "%s: expected a folder, a .safetensors file, an index.json or an HDF5 pack", p);
    }
    k22_status st = k22_fs_join(path, sizeof path, p, "model_index.json", err);
    if (st) return st;
    if (k22_fs_is_file(path)) return inspect_pipeline(p, tensors, err);
    k22_fs_join(path, sizeof path, p, "k22_state", NULL);
    if (k22_fs_is_dir(path)) return inspect_checkpoint(p, tensors, err);
    k22_fs_join(path, sizeof path, p, "config.json", NULL);
    if (k22_fs_is_file(path)) return inspect_component(p, tensors, err);
    k22_fs_join(path, sizeof path, p, "scheduler_config.json", NULL);
    if (k22_fs_is_file(path)) return inspect_scheduler(p, err);
    return k22_err_set(err, K22_ERR_FORMAT,
                       "%s: not a diffusers folder (no model_index.json, config.json or scheduler_config.json)", p);
}

int k22_cmd_inspect(int argc, char **argv)
{
    int tensors = 0;
    const char *pos[1] = {NULL};
    const k22_opt opts[] = {
        {"tensors", K22_OPT_FLAG, &tensors, NULL, "list every tensor: name, dtype, shape, sum, sum of squares and SHA-256 of its values as f32", NULL, NULL, 0},
    };
    k22_cmd_spec spec = {
        .usage = "k22 inspect PATH [--tensors]",
        .summary = "Describes a pipeline folder, a component folder, a .safetensors file, an "
                   "index.json (classes, parameter counts, dtypes, file sizes and SHA-256), an "
                   "HDF5 pack (rows, datasets, provenance, rejected inputs) or a training "
                   "checkpoint (OUT/checkpoint-N: step, run, whether its state would resume). "
                   "Component folders are loaded strictly, so a bad folder exits non-zero.",
        .opts = opts, .nopts = (int)(sizeof opts / sizeof opts[0]),
        .pos = pos, .max_pos = 1, .min_pos = 1,
    };
    int rc = k22_opts_parse_cli(&spec, argc, argv, "inspect");
    if (rc >= 0) return rc;
    k22_err err;
    k22_err_clear(&err);
    k22_status st = inspect_path(pos[0], tensors, &err);
    fflush(stdout);
    if (st) {
        fprintf(stderr, "k22 inspect: %s\n", err.msg);
        return 1;
    }
    return 0;
}
