/* config_sched.c: scheduler/scheduler_config.json <-> k22_sched_config for DDPMScheduler,
 * DDIMScheduler and UnCLIPScheduler (keys and defaults of diffusers 0.42.1). Values k22 does not
 * implement (thresholding, trained betas, other schedules) are refused by name. */
#include "k22/config.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "config_table.h"
#include "k22/json.h"

static const char *const only_null[] = {"null", NULL};
static const char *const only_false[] = {"false", NULL};
static const char *const betas[] = {"linear", "scaled_linear", "squaredcos_cap_v2", NULL};
static const char *const cos_only[] = {"\"squaredcos_cap_v2\"", NULL};
static const char *const preds[] = {"epsilon", "sample", "v_prediction", NULL};
static const char *const unclip_preds[] = {"epsilon", "sample", NULL};
static const char *const spacings[] = {"leading", "trailing", "linspace", NULL};
static const char *const ddpm_vars[] = {"fixed_small", "fixed_small_log", "fixed_large",
                                        "learned", "learned_range", NULL};
static const char *const unclip_vars[] = {"fixed_small_log", "learned_range", NULL};
static const char *const ddpm_class[] = {"\"DDPMScheduler\"", NULL};
static const char *const ddim_class[] = {"\"DDIMScheduler\"", NULL};
static const char *const unclip_class[] = {"\"UnCLIPScheduler\"", NULL};

#define S k22_sched_config
/* Keys DDPM and DDIM share; thresholding is refused because k22 has no dynamic thresholding. */
#define SCHED_COMMON                                                                               \
    ANY_("_diffusers_version", "\"0.42.1\""), SKIP("_name_or_path"), SKIP("_use_default_values"),  \
        REAL("beta_end", S, beta_end, "0.02", 0),                                                  \
        ENUM("beta_schedule", S, beta_schedule, "\"linear\"", betas),                              \
        REAL("beta_start", S, beta_start, "0.0001", 0), BOOL("clip_sample", S, clip_sample, "true"), \
        REAL("clip_sample_range", S, clip_sample_range, "1.0", 0),                                 \
        ANY_("dynamic_thresholding_ratio", "0.995"),                                               \
        INT_("num_train_timesteps", S, num_train_timesteps, 1, 100000, "1000"),                    \
        ENUM("prediction_type", S, prediction_type, "\"epsilon\"", preds),                         \
        BOOL("rescale_betas_zero_snr", S, rescale_betas_zero_snr, "false"),                        \
        ANY_("sample_max_value", "1.0"), INT_("steps_offset", S, steps_offset, 0, 100000, "0"),    \
        FIXD("thresholding", "false", only_false),                                                 \
        STR_("timestep_spacing", S, timestep_spacing, "\"leading\"", spacings),                    \
        FIXD("trained_betas", "null", only_null)

static const ct_field ddpm_table[] = {
    FIXD("_class_name", "\"DDPMScheduler\"", ddpm_class),
    SCHED_COMMON,
    STR_("variance_type", S, variance_type, "\"fixed_small\"", ddpm_vars),
    SKIP("set_alpha_to_one"), SKIP("skip_prk_steps"), /* DDIM/PNDM keys DDPM ignores */
};

static const ct_field ddim_table[] = {
    FIXD("_class_name", "\"DDIMScheduler\"", ddim_class),
    SCHED_COMMON,
    BOOL("set_alpha_to_one", S, set_alpha_to_one, "true"),
    SKIP("skip_prk_steps"), SKIP("variance_type"), /* keys DDIM ignores */
};

static const ct_field unclip_table[] = {
    FIXD("_class_name", "\"UnCLIPScheduler\"", unclip_class),
    ANY_("_diffusers_version", "\"0.42.1\""), SKIP("_name_or_path"), SKIP("_use_default_values"),
    FIXD("beta_schedule", "\"squaredcos_cap_v2\"", cos_only),
    BOOL("clip_sample", S, clip_sample, "true"),
    REAL("clip_sample_range", S, clip_sample_range, "1.0", 0),
    INT_("num_train_timesteps", S, num_train_timesteps, 1, 100000, "1000"),
    ENUM("prediction_type", S, prediction_type, "\"epsilon\"", unclip_preds),
    STR_("variance_type", S, variance_type, "\"fixed_small_log\"", unclip_vars),
};
#undef S

const char *k22_sched_class_name(k22_sched_kind k)
{
    switch (k) {
    case K22_SCHED_DDPM: return "DDPMScheduler";
    case K22_SCHED_DDIM: return "DDIMScheduler";
    case K22_SCHED_UNCLIP: return "UnCLIPScheduler";
    }
    return "?";
}

static const ct_field *sched_table(k22_sched_kind k, size_t *n)
{
    switch (k) {
    case K22_SCHED_DDPM: *n = N(ddpm_table); return ddpm_table;
    case K22_SCHED_DDIM: *n = N(ddim_table); return ddim_table;
    case K22_SCHED_UNCLIP: *n = N(unclip_table); return unclip_table;
    }
    *n = 0;
    return NULL;
}

static k22_status sched_from_json(const json_t *o, const char *name, k22_sched_config *cfg,
                                  k22_err *err)
{
    memset(cfg, 0, sizeof *cfg);
    const char *cls = NULL;
    k22_status st = k22_json_get_str(o, name, "_class_name", &cls, err);
    if (st != K22_OK) return st;
    int kind = -1;
    for (int k = 0; k <= K22_SCHED_UNCLIP; k++)
        if (strcmp(cls, k22_sched_class_name((k22_sched_kind)k)) == 0) kind = k;
    if (kind < 0)
        return k22_err_set(err, K22_ERR_UNSUPPORTED,
                           "%s: scheduler class '%.100s' is not implemented by k22 (only DDPMScheduler, DDIMScheduler, UnCLIPScheduler)",
                           name, cls);
    cfg->kind = (k22_sched_kind)kind;
    size_t n = 0;
    const ct_field *t = sched_table(cfg->kind, &n);
    st = ct_parse(o, name, t, n, cfg, err);
    /* UnCLIP builds its betas from the cosine schedule and has no beta_start/end. */
    if (st == K22_OK && cfg->kind == K22_SCHED_UNCLIP) cfg->beta_schedule = K22_BETAS_SQUAREDCOS_CAP_V2;
    if (st != K22_OK) {
        memset(cfg, 0, sizeof *cfg);
        cfg->kind = (k22_sched_kind)kind;
    }
    return st;
}

k22_status k22_sched_config_parse(const char *json, size_t len, const char *name,
                                  k22_sched_config *cfg, k22_err *err)
{
    memset(cfg, 0, sizeof *cfg);
    json_t *o = NULL;
    k22_status st = ct_load(json, len, name, &o, err);
    if (st == K22_OK) st = sched_from_json(o, name, cfg, err);
    json_decref(o);
    return st;
}

k22_status k22_sched_config_read(const char *path, k22_sched_config *cfg, k22_err *err)
{
    memset(cfg, 0, sizeof *cfg);
    json_t *o = NULL;
    k22_status st = k22_json_load_object_file(path, K22_JSON_MAX_CONFIG_BYTES, &o, err);
    if (st == K22_OK) st = sched_from_json(o, path, cfg, err);
    json_decref(o);
    return st;
}

static json_t *sched_to_json(const k22_sched_config *cfg, k22_err *err)
{
    size_t n = 0;
    const ct_field *t = sched_table(cfg->kind, &n);
    if (!t) {
        k22_err_set(err, K22_ERR_ARG, "unknown scheduler kind %d", (int)cfg->kind);
        return NULL;
    }
    json_t *o = json_object();
    if (ct_write(o, t, n, cfg, err) != K22_OK) {
        json_decref(o);
        return NULL;
    }
    return o;
}

char *k22_sched_config_dumps(const k22_sched_config *cfg)
{
    k22_err err;
    json_t *o = sched_to_json(cfg, &err);
    if (!o) return NULL;
    char *s = k22_json_dumps(o, K22_JSON_F32);
    json_decref(o);
    return s;
}

k22_status k22_sched_config_write(const char *path, const k22_sched_config *cfg, k22_err *err)
{
    json_t *o = sched_to_json(cfg, err);
    if (!o) return k22_err_prefix(err, "%s", path);
    k22_status st = k22_json_write_file(path, o, K22_JSON_F32, err);
    json_decref(o);
    return st;
}
