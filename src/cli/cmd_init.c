/* cmd_init.c: `k22 init prior|decoder`: writes a complete diffusers pipeline folder with
 * deterministic random weights (tiny for tests and the demo, full size for benchmarks). */
#include "k22/cli.h"
#include "k22/config.h"
#include "k22/diffusers.h"
#include "k22/fsutil.h"
#include "k22/opts.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    const char *name;    /* subfolder */
    k22_model_kind kind;
} init_model;

static const init_model k22_prior_models[] = {
    {"prior", K22_MODEL_PRIOR},
    {"text_encoder", K22_MODEL_CLIP_TEXT},
    {"image_encoder", K22_MODEL_CLIP_VISION},
};
static const init_model k22_decoder_models[] = {
    {"unet", K22_MODEL_UNET},
    {"movq", K22_MODEL_MOVQ},
};

static k22_status init_one(const char *root, const init_model *m, const char *size, uint64_t seed,
                           k22_err *err)
{
    char dir[4096];
    k22_model_config cfg;
    k22_params ps;
    k22_params_init(&ps);
    k22_status st = k22_fs_join(dir, sizeof dir, root, m->name, err);
    if (!st) st = k22_config_preset(m->kind, size, &cfg, err);
    if (!st) st = k22_params_build(&cfg, &ps, err);
    if (st) goto out;
    size_t n = k22_params_numel(&ps);
    fprintf(stderr, "k22 init: %-14s %-30s %12zu parameters (%.1f MB) ...", m->name,
            k22_model_class_name(m->kind), n, (double)n * 4.0 / 1e6);
    fflush(stderr);
    k22_params_alloc(&ps);
    k22_params_init_random(&cfg, &ps, seed);
    st = k22_component_save(dir, &cfg, &ps, (size_t)K22_SHARD_BYTES_DEFAULT, err);
    fprintf(stderr, st ? " failed\n" : " written\n");
out:
    k22_params_free(&ps);
    return st;
}

static k22_status init_scheduler(const char *root, const char *pipeline, char *sched_class,
                                 size_t n, k22_err *err)
{
    char dir[4096], path[4096];
    k22_sched_config sc;
    k22_status st = k22_sched_preset(pipeline, &sc, err);
    if (!st) st = k22_fs_join(dir, sizeof dir, root, "scheduler", err);
    if (!st) st = k22_fs_mkdir_p(dir, err);
    if (!st) st = k22_fs_join(path, sizeof path, dir, "scheduler_config.json", err);
    if (!st) st = k22_sched_config_write(path, &sc, err);
    if (!st) snprintf(sched_class, n, "%s", k22_sched_class_name(sc.kind));
    return st;
}

static k22_status init_pipeline(const char *root, int prior, const char *size, uint64_t seed,
                                k22_err *err)
{
    const init_model *models = prior ? k22_prior_models : k22_decoder_models;
    int nmodels = prior ? 3 : 2;
    char path[4096], sched_class[64];
    k22_status st = K22_OK;
    for (int i = 0; i < nmodels && !st; i++) st = init_one(root, &models[i], size, seed, err);
    if (!st) st = init_scheduler(root, prior ? "prior" : "decoder", sched_class, sizeof sched_class, err);
    if (!st && prior) {
        if (!st) st = k22_fs_join(path, sizeof path, root, "tokenizer", err);
        if (!st) st = k22_tokenizer_write(path, err);
        if (!st) st = k22_fs_join(path, sizeof path, root, "image_processor", err);
        if (!st) st = k22_image_processor_write(path, err);
    }
    if (st) return st;
    k22_model_index mi;
    k22_model_index_for(prior ? K22_PIPE_PRIOR : K22_PIPE_DECODER, sched_class, &mi);
    st = k22_fs_join(path, sizeof path, root, "model_index.json", err);
    if (!st) st = k22_model_index_write(path, &mi, err);
    if (!st) st = k22_fs_fsync_path(root, err);
    return st;
}

/* Moves the finished DIR.tmp over DIR (removing an old DIR only under --force). */
static k22_status commit_dir(const char *tmp, const char *out, k22_err *err)
{
    k22_status st = k22_fs_rm_rf(out, err);
    if (!st) st = k22_fs_rename(tmp, out, err);
    if (st) return st;
    char parent[4096];
    snprintf(parent, sizeof parent, "%s", out);
    char *slash = strrchr(parent, '/');
    if (!slash) snprintf(parent, sizeof parent, ".");
    else if (slash == parent) parent[1] = '\0';
    else *slash = '\0';
    return k22_fs_fsync_path(parent, err);
}

int k22_cmd_init(int argc, char **argv)
{
    const char *size = NULL, *out = NULL;
    int64_t seed = 0;
    int force = 0;
    const char *pos[1] = {NULL};
    const k22_opt opts[] = {
        {"size", K22_OPT_CHOICE, &size, "tiny", "model size: tiny (tests, demo) or full (the published shapes)", NULL, "tiny|full", 0},
        {"seed", K22_OPT_INT, &seed, "0", "random seed; the same seed gives bit-identical files", NULL, NULL, 0},
        {"out", K22_OPT_STR, &out, NULL, "output pipeline folder (written as OUT.tmp, then renamed)", NULL, NULL, 1},
        {"force", K22_OPT_FLAG, &force, NULL, "replace an existing non-empty OUT", NULL, NULL, 0},
    };
    k22_cmd_spec spec = {
        .usage = "k22 init prior|decoder --out DIR [options]",
        .summary = "Writes a diffusers pipeline folder with deterministic random weights: prior -> "
                   "prior, text_encoder, image_encoder, tokenizer, scheduler, image_processor; "
                   "decoder -> unet, movq, scheduler; each with model_index.json.",
        .opts = opts, .nopts = (int)(sizeof opts / sizeof opts[0]),
        .pos = pos, .max_pos = 1, .min_pos = 1,
    };
    int rc = k22_opts_parse_cli(&spec, argc, argv, "init");
    if (rc >= 0) return rc;
    k22_err err;
    k22_err_clear(&err);
    int prior = !strcmp(pos[0], "prior");
    if (!prior && strcmp(pos[0], "decoder")) {
        fprintf(stderr, "k22 init: '%s' is not prior or decoder (see --help)\n", pos[0]);
        return 2;
    }
    if (seed < 0) {
        fprintf(stderr, "k22 init: --seed must be >= 0\n");
        return 2;
    }
    /* "DIR/" must give DIR.tmp beside DIR, not DIR/.tmp inside it. */
    char outbuf[4096], tmp[4096];
    if (snprintf(outbuf, sizeof outbuf, "%s", out) >= (int)sizeof outbuf - 8) {
        fprintf(stderr, "k22 init: --out path too long\n");
        return 2;
    }
    for (size_t n = strlen(outbuf); n > 1 && outbuf[n - 1] == '/'; n--) outbuf[n - 1] = '\0';
    out = outbuf;
    /* --force removes OUT: never let that be ".", ".." or "/". */
    const char *last = strrchr(out, '/') ? strrchr(out, '/') + 1 : out;
    if (!*last || !strcmp(last, ".") || !strcmp(last, "..")) {
        fprintf(stderr, "k22 init: --out '%s' must name a folder of its own\n", out);
        return 2;
    }
    snprintf(tmp, sizeof tmp, "%s.tmp", out);
    if (k22_fs_exists(out) && !(k22_fs_is_dir(out) && k22_fs_dir_is_empty(out)) && !force) {
        fprintf(stderr, "k22 init: %s exists and is not empty; pass --force to replace it\n", out);
        return 1;
    }
    fprintf(stderr, "k22 init %s:\n", pos[0]);
    k22_opts_print(&spec, stderr);
    k22_status st = k22_fs_rm_rf(tmp, &err);
    if (!st) st = k22_fs_mkdir_p(tmp, &err);
    if (!st) st = init_pipeline(tmp, prior, size, (uint64_t)seed, &err);
    if (!st) st = commit_dir(tmp, out, &err);
    if (st) {
        fprintf(stderr, "k22 init: %s\n", err.msg);
        k22_fs_rm_rf(tmp, NULL); /* a half-written folder is of no use */
        return 1;
    }
    printf("k22 init: wrote %s pipeline (%s, seed %lld) to %s\n", pos[0], size, (long long)seed, out);
    return 0;
}
