/* ckpt.c: checkpoint folders: naming, the newest complete one, pruning, and k22_state/. */
#include "k22/ckpt.h"

#include "k22/fsutil.h"
#include "k22/json.h"
#include "k22/safetensors.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STATE_JSON "state.json"
#define STATE_ST "optimizer.safetensors"

void k22_ckpt_state_free(k22_ckpt_state *s)
{
    if (s->hparams) json_decref(s->hparams);
    s->hparams = NULL;
}

k22_status k22_ckpt_dir(const char *out_dir, int64_t step, char *buf, size_t n, k22_err *err)
{
    int w = snprintf(buf, n, "%s/checkpoint-%lld", out_dir, (long long)step);
    if (w < 0 || (size_t)w >= n) return k22_err_set(err, K22_ERR_ARG, "%s: path too long", out_dir);
    return K22_OK;
}

/* N of "checkpoint-N" (digits only, no sign, no ".tmp"), else -1. */
static int64_t ckpt_number(const char *name)
{
    const char *p = "checkpoint-";
    if (strncmp(name, p, strlen(p))) return -1;
    const char *d = name + strlen(p);
    if (!*d || strlen(d) > 18) return -1;
    int64_t v = 0;
    for (; *d; d++) {
        if (*d < '0' || *d > '9') return -1;
        v = v * 10 + (*d - '0');
    }
    return v;
}

static int is_complete(const char *out_dir, int64_t step)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/checkpoint-%lld/%s", out_dir, (long long)step, K22_CKPT_MARKER);
    return k22_fs_is_file(p);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* The numbers of the complete checkpoints, sorted ascending (caller frees *out). */
static k22_status list_complete(const char *out_dir, int64_t **out, int *count, k22_err *err)
{
    *out = NULL;
    *count = 0;
    DIR *dir = opendir(out_dir);
    if (!dir) return k22_fs_exists(out_dir) ? k22_err_set(err, K22_ERR_IO, "%s: cannot list", out_dir)
                                            : K22_OK;
    int cap = 0;
    struct dirent *e;
    while ((e = readdir(dir))) {
        int64_t n = ckpt_number(e->d_name);
        if (n < 0 || !is_complete(out_dir, n)) continue;
        if (*count == cap) *out = k22_xgrow(*out, &cap, 16, sizeof **out, "the checkpoint list");
        (*out)[(*count)++] = n;
    }
    closedir(dir);
    if (*count) qsort(*out, (size_t)*count, sizeof **out, cmp_i64);
    return K22_OK;
}

k22_status k22_ckpt_latest(const char *out_dir, int64_t *step, char *path, size_t n, k22_err *err)
{
    int64_t *l;
    int c;
    *step = -1;
    k22_status st = list_complete(out_dir, &l, &c, err);
    if (st) return st;
    if (c) {
        *step = l[c - 1];
        st = k22_ckpt_dir(out_dir, *step, path, n, err);
    }
    free(l);
    return st;
}

k22_status k22_ckpt_prune(const char *out_dir, int64_t limit, k22_err *err)
{
    if (limit <= 0) return K22_OK;
    int64_t *l;
    int c;
    k22_status st = list_complete(out_dir, &l, &c, err);
    for (int i = 0; !st && c >= limit && i <= c - limit; i++) {
        char p[4096];
        st = k22_ckpt_dir(out_dir, l[i], p, sizeof p, err);
        if (!st) {
            fprintf(stderr, "k22: removing %s (--checkpoints_total_limit %lld)\n", p, (long long)limit);
            st = k22_fs_rm_rf(p, err);
        }
    }
    free(l);
    return st;
}

static json_t *state_json(const k22_ckpt_state *s)
{
    json_t *o = json_object();
    json_object_set_new(o, "format", json_integer(K22_CKPT_FORMAT));
    json_object_set_new(o, "stage", json_string(s->stage));
    json_object_set_new(o, "global_step", json_integer(s->global_step));
    json_object_set_new(o, "epoch", json_integer(s->epoch));
    json_object_set_new(o, "epoch_pos", json_integer(s->epoch_pos));
    json_object_set_new(o, "seed", json_integer(s->seed));
    json_object_set_new(o, "world_size", json_integer(s->world_size));
    json_object_set_new(o, "train_batch_size", json_integer(s->train_batch_size));
    json_object_set_new(o, "gradient_accumulation_steps", json_integer(s->gradient_accumulation_steps));
    json_object_set_new(o, "lr_sched_steps", json_integer(s->lr_sched_steps));
    json_object_set_new(o, "ema_step", json_integer(s->ema_step));
    json_object_set_new(o, "ema_decay", json_real(s->ema_decay));
    if (s->loss_scale > 0) { /* an fp16 run's scaler */
        json_object_set_new(o, "loss_scale", json_real(s->loss_scale));
        json_object_set_new(o, "loss_scale_growth_tracker", json_integer(s->loss_scale_good));
    }
    json_object_set_new(o, "hparams", s->hparams ? json_incref(s->hparams) : json_object());
    return o;
}

k22_status k22_ckpt_state_write(const char *dir, const k22_ckpt_state *s, const float *m,
                                const float *v, int64_t n, k22_err *err)
{
    char p[4096];
    k22_status st = k22_fs_mkdir_p(dir, err);
    if (!st) st = k22_fs_join(p, sizeof p, dir, STATE_JSON, err);
    if (st) return st;
    json_t *o = state_json(s);
    char *text = k22_json_dumps(o, 0);
    json_decref(o);
    st = k22_fs_write_atomic(p, text, strlen(text), err);
    free(text);
    if (!st) st = k22_fs_join(p, sizeof p, dir, STATE_ST, err);
    if (st) return st;
    k22_st_writer *w = k22_st_writer_new();
    int64_t shape[1] = {n};
    k22_st_writer_add(w, "exp_avg", K22_DTYPE_F32, 1, shape, m);
    k22_st_writer_add(w, "exp_avg_sq", K22_DTYPE_F32, 1, shape, v);
    k22_st_writer_meta(w, "format", "k22 AdamW moments over the flat parameter buffer");
    st = k22_st_write(w, p, err);
    k22_st_writer_free(w);
    return st;
}

/* The moment `name` of n floats (in the mapping, maybe unaligned), or an error. */
static k22_status find_moment(const k22_st_file *f, const char *name, int64_t n, const char *path,
                              const void **data, k22_err *err)
{
    const k22_st_tensor *t = k22_st_find(f, name);
    if (!t || t->dtype != K22_DTYPE_F32 || t->ndim != 1 || t->shape[0] != n)
        return k22_err_set(err, K22_ERR_KEY,
                           "%s: tensor '%s' must be F32 of shape (%lld,) (the model's parameter count)",
                           path, name, (long long)n);
    *data = t->data;
    return K22_OK;
}

static k22_status parse_state(json_t *o, const char *p, k22_ckpt_state *s, k22_err *err)
{
    int fmt = 0;
    const char *stage = NULL;
    k22_status st = k22_json_get_int(o, p, "format", 1, 1000, &fmt, err);
    if (!st && fmt > K22_CKPT_FORMAT)
        st = k22_err_set(err, K22_ERR_UNSUPPORTED,
                         "%s: checkpoint format %d, this k22 reads 1 to %d", p, fmt,
                         K22_CKPT_FORMAT);
    s->format = fmt;
    if (!st) st = k22_json_get_str(o, p, "stage", &stage, err);
    if (!st) snprintf(s->stage, sizeof s->stage, "%s", stage);
    if (!st) st = k22_json_get_i64(o, p, "global_step", 0, INT64_MAX / 4, &s->global_step, err);
    if (!st) st = k22_json_get_i64(o, p, "epoch", 0, INT64_MAX / 4, &s->epoch, err);
    if (!st) st = k22_json_get_i64(o, p, "epoch_pos", 0, INT64_MAX / 4, &s->epoch_pos, err);
    if (!st) st = k22_json_get_i64(o, p, "seed", 0, INT64_MAX, &s->seed, err);
    if (!st) st = k22_json_get_int(o, p, "world_size", 1, 1 << 20, &s->world_size, err);
    if (!st) st = k22_json_get_int(o, p, "train_batch_size", 1, 1 << 20, &s->train_batch_size, err);
    if (!st) st = k22_json_get_int(o, p, "gradient_accumulation_steps", 1, 1 << 20,
                                   &s->gradient_accumulation_steps, err);
    if (!st) st = k22_json_get_i64(o, p, "lr_sched_steps", 0, INT64_MAX / 4, &s->lr_sched_steps, err);
    if (!st) st = k22_json_get_i64(o, p, "ema_step", 0, INT64_MAX / 4, &s->ema_step, err);
    if (!st) st = k22_json_get_float(o, p, "ema_decay", &s->ema_decay, err);
    if (!st) st = k22_json_opt_float(o, p, "loss_scale", 0.0, &s->loss_scale, err);
    if (!st && json_object_get(o, "loss_scale") && !(s->loss_scale > 0 && s->loss_scale < 1e30))
        st = k22_err_set(err, K22_ERR_FORMAT, "%s: loss_scale %g is not a positive finite scale", p, s->loss_scale);
    if (!st) st = k22_json_opt_i64(o, p, "loss_scale_growth_tracker", 0, INT64_MAX / 4, 0, &s->loss_scale_good, err);
    if (!st) {
        json_t *h = json_object_get(o, "hparams");
        s->hparams = h ? json_incref(h) : NULL;
    }
    return st;
}

/* Both moments into m, v in ps's layout: as they are (format 2 on), or from format 1's (every
 * entry in table order) moved entry by entry. */
static k22_status read_moments(const k22_st_file *f, int format, float *m, float *v,
                               const k22_params *ps, const char *path, k22_err *err)
{
    int64_t n = (int64_t)(format == 1 ? k22_params_table_order_total(ps) : ps->total);
    const char *names[2] = {"exp_avg", "exp_avg_sq"};
    float *dst[2] = {m, v};
    for (int i = 0; i < 2; i++) {
        const void *data = NULL;
        k22_status st = find_moment(f, names[i], n, path, &data, err);
        if (st) return st;
        if (!dst[i]) continue; /* a check only */
        if (format == 1)
            k22_params_from_table_order(ps, data, dst[i]);
        else
            memcpy(dst[i], data, (size_t)n * sizeof(float));
    }
    return K22_OK;
}

k22_status k22_ckpt_state_read(const char *dir, k22_ckpt_state *s, float *m, float *v,
                               const k22_params *ps, k22_err *err)
{
    memset(s, 0, sizeof *s);
    char p[4096];
    json_t *o = NULL;
    k22_st_file *f = NULL;
    k22_status st = k22_fs_join(p, sizeof p, dir, STATE_JSON, err);
    if (!st) st = k22_json_load_object_file(p, K22_JSON_MAX_CONFIG_BYTES, &o, err);
    if (!st) st = parse_state(o, p, s, err);
    if (!st) st = k22_fs_join(p, sizeof p, dir, STATE_ST, err);
    if (!st) st = k22_st_open(p, &f, err);
    if (!st) st = read_moments(f, s->format, m, v, ps, p, err);
    k22_st_close(f);
    if (o) json_decref(o);
    if (st) k22_ckpt_state_free(s);
    return st;
}

k22_status k22_ckpt_commit(const char *tmp, const char *final, k22_err *err)
{
    char parent[4096], marker[4096];
    snprintf(parent, sizeof parent, "%s", final);
    char *slash = strrchr(parent, '/');
    if (!slash) snprintf(parent, sizeof parent, ".");
    else if (slash == parent) parent[1] = '\0';
    else *slash = '\0';
    k22_status st = k22_fs_fsync_path(tmp, err);
    if (!st) st = k22_fs_rm_rf(final, err); /* an incomplete one left by a crash */
    if (!st) st = k22_fs_rename(tmp, final, err);
    if (!st) st = k22_fs_fsync_path(parent, err);
    if (!st) st = k22_fs_join(marker, sizeof marker, final, K22_CKPT_MARKER, err);
    if (!st) st = k22_fs_write_atomic(marker, "complete\n", 9, err);
    return st;
}
