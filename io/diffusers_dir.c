/* diffusers_dir.c: load and save one diffusers / transformers component folder (config.json +
 * safetensors weights) with a strict key check both ways. */
#include "k22/diffusers.h"
#include "k22/fsutil.h"
#include "k22/safetensors.h"

#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A bounded message builder: appends until its buffer is full, silently truncating. */
typedef struct {
    char *buf;
    size_t cap, len;
} msgbuf;

__attribute__((format(printf, 2, 3))) static void mb_add(msgbuf *m, const char *fmt, ...)
{
    if (m->len + 1 >= m->cap) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(m->buf + m->len, m->cap - m->len, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    m->len += (size_t)n;
    if (m->len >= m->cap) m->len = m->cap - 1;
}

static void shape_str(char *out, size_t n, int ndim, const int64_t *shape)
{
    size_t len = 0;
    len += (size_t)snprintf(out, n, "[");
    for (int d = 0; d < ndim && len < n; d++)
        len += (size_t)snprintf(out + len, n - len, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (len < n) snprintf(out + len, n - len, "]");
}

static int same_shape(const k22_param *p, const k22_st_tensor *t)
{
    if (p->ndim != t->ndim) return 0;
    for (int d = 0; d < p->ndim; d++)
        if (p->shape[d] != t->shape[d]) return 0;
    return 1;
}

/* One kind of mismatch: a count and the first few names (with detail), each list kept to a
 * share of the message so that all three kinds show. */
typedef struct {
    const char *what;
    int count;
    char list[280];
    size_t len;
    int listed, full;
} keylist;

static void keylist_add(keylist *k, const char *name, const char *detail)
{
    k->count++;
    if (k->full || k->listed >= K22_KEY_LIST_MAX) return;
    size_t room = sizeof k->list - k->len;
    int n = snprintf(k->list + k->len, room, "%s'%s'%s", k->listed ? ", " : "", name, detail);
    if (n < 0 || (size_t)n >= room) {
        k->list[k->len] = '\0';
        k->full = 1; /* the rest go into "and N more" */
        return;
    }
    k->len += (size_t)n;
    k->listed++;
}

static void keylist_emit(msgbuf *m, const keylist *k, int *first)
{
    if (!k->count) return;
    int listed = k->listed;
    mb_add(m, "%s%d %s key%s: %s", *first ? "" : "; ", k->count, k->what, k->count == 1 ? "" : "s",
           k->list);
    if (k->count > listed) mb_add(m, " and %d more", k->count - listed);
    *first = 0;
}

static k22_status check_keys(const char *path, const k22_st_set *set, const k22_params *ps,
                             k22_err *err)
{
    keylist miss = {.what = "missing"}, extra = {.what = "unexpected"}, shape = {.what = "mis-shaped"};
    for (int i = 0; i < ps->count; i++) {
        const k22_param *p = &ps->items[i];
        const k22_st_tensor *t = k22_st_set_find(set, p->name);
        if (!t) {
            keylist_add(&miss, p->name, "");
        } else if (!same_shape(p, t)) {
            char a[96], b[96], detail[220];
            shape_str(a, sizeof a, t->ndim, t->shape);
            shape_str(b, sizeof b, p->ndim, p->shape);
            snprintf(detail, sizeof detail, " (file %s, model %s)", a, b);
            keylist_add(&shape, p->name, detail);
        }
    }
    int nt = k22_st_set_count(set);
    for (int i = 0; i < nt; i++) {
        const k22_st_tensor *t = k22_st_set_at(set, i);
        if (k22_params_index(ps, t->name) < 0) keylist_add(&extra, t->name, "");
    }
    if (!miss.count && !extra.count && !shape.count) return K22_OK;
    char buf[sizeof err->msg];
    msgbuf m = {buf, sizeof buf, 0};
    buf[0] = '\0';
    int first = 1;
    mb_add(&m, "%s: weights do not match the config: ", path);
    keylist_emit(&m, &miss, &first);
    keylist_emit(&m, &extra, &first);
    keylist_emit(&m, &shape, &first);
    return k22_err_set(err, K22_ERR_KEY, "%s", buf);
}

static k22_status copy_weights(const char *path, const k22_st_set *set, k22_params *ps,
                               k22_err *err)
{
    for (int i = 0; i < ps->count; i++) {
        const k22_param *p = &ps->items[i];
        const k22_st_tensor *t = k22_st_set_find(set, p->name);
        if (t->dtype != K22_DTYPE_F32 && t->dtype != K22_DTYPE_F16 && t->dtype != K22_DTYPE_BF16)
            return k22_err_set(err, K22_ERR_UNSUPPORTED,
                               "%s: tensor '%s' has dtype %s; k22 loads F32, F16 and BF16 weights",
                               path, p->name, k22_dtype_name(t->dtype));
        size_t need;
        if (k22_mul_size(p->numel, k22_dtype_size(t->dtype), &need) || need != t->nbytes)
            return k22_err_set(err, K22_ERR_FORMAT, "%s: tensor '%s' holds %zu bytes, expected %zu",
                               path, p->name, t->nbytes, need);
    }
    for (int i = 0; i < ps->count; i++) {
        const k22_param *p = &ps->items[i];
        const k22_st_tensor *t = k22_st_set_find(set, p->name);
        float *dst = ps->data + p->offset;
        if (t->dtype == K22_DTYPE_F32) memcpy(dst, t->data, t->nbytes);
        else k22_convert_to_f32(dst, t->data, t->dtype, p->numel);
    }
    return K22_OK;
}

k22_status k22_weights_load(const char *path, k22_params *ps, k22_err *err)
{
    if (!ps->data) return k22_err_set(err, K22_ERR_INTERNAL, "%s: parameters not allocated", path);
    k22_st_set *set = NULL;
    k22_status st = k22_st_set_open(path, &set, err);
    if (st) return st;
    st = check_keys(path, set, ps, err);
    if (!st) st = copy_weights(path, set, ps, err);
    k22_st_set_close(set);
    return st;
}

k22_status k22_component_weights_path(const char *dir, k22_model_kind kind, char *out, size_t n,
                                      k22_err *err)
{
    const char *file = k22_model_weights_file(kind);
    k22_status st = k22_fs_join(out, n, dir, file, err);
    if (st) return st;
    if (k22_fs_is_file(out)) return K22_OK;
    char name[256];
    snprintf(name, sizeof name, "%s.index.json", file);
    st = k22_fs_join(out, n, dir, name, err);
    if (st) return st;
    if (k22_fs_is_file(out)) return K22_OK;
    return k22_err_set(err, K22_ERR_IO, "%s: no weights for %s: neither %s nor %s is there", dir,
                       k22_model_class_name(kind), file, name);
}

k22_status k22_component_load(const char *dir, k22_model_config *cfg, k22_params *ps,
                              k22_err *err)
{
    char cfgpath[4096], wpath[4096];
    k22_params_init(ps);
    k22_status st = k22_fs_join(cfgpath, sizeof cfgpath, dir, "config.json", err);
    if (!st) st = k22_config_read(cfgpath, cfg, err);
    if (!st) st = k22_component_weights_path(dir, cfg->kind, wpath, sizeof wpath, err);
    if (!st) st = k22_params_build(cfg, ps, err);
    if (st) goto out;
    k22_params_alloc(ps);
    st = k22_weights_load(wpath, ps, err);
out:
    if (st) {
        k22_params_free(ps);
        k22_params_init(ps);
    }
    return st;
}

/* Removes weight files of an earlier save (BASE.safetensors, BASE-*.safetensors and
 * BASE.safetensors.index.json) so a folder never mixes a single file with stale shards. */
static k22_status remove_old_weights(const char *dir, const char *base, k22_err *err)
{
    DIR *d = opendir(dir);
    if (!d) return k22_err_set(err, K22_ERR_IO, "%s: cannot list folder", dir);
    size_t bl = strlen(base);
    k22_status st = K22_OK;
    struct dirent *e;
    while (!st && (e = readdir(d)) != NULL) {
        const char *nm = e->d_name;
        size_t nl = strlen(nm);
        if (strncmp(nm, base, bl) != 0 || (nm[bl] != '.' && nm[bl] != '-')) continue;
        int is_st = nl > 12 && !strcmp(nm + nl - 12, ".safetensors");
        int is_idx = nl > 23 && !strcmp(nm + nl - 23, ".safetensors.index.json");
        if (!is_st && !is_idx) continue;
        char p[4096];
        st = k22_fs_join(p, sizeof p, dir, nm, err);
        if (!st && unlink(p) != 0) st = k22_err_set(err, K22_ERR_IO, "%s: cannot remove", p);
    }
    closedir(d);
    return st;
}

k22_status k22_component_save(const char *dir, const k22_model_config *cfg, const k22_params *ps,
                              size_t max_shard_bytes, k22_err *err)
{
    return k22_component_save_dtype(dir, cfg, ps, K22_DTYPE_F32, max_shard_bytes, err);
}

k22_status k22_component_save_dtype(const char *dir, const k22_model_config *cfg, const k22_params *ps,
                                    k22_dtype dtype, size_t max_shard_bytes, k22_err *err)
{
    if (!ps->data) return k22_err_set(err, K22_ERR_INTERNAL, "%s: parameters not allocated", dir);
    if (dtype != K22_DTYPE_F32 && dtype != K22_DTYPE_F16 && dtype != K22_DTYPE_BF16)
        return k22_err_set(err, K22_ERR_INTERNAL, "%s: weights are saved as F32, F16 or BF16", dir);
    char path[4096], base[256];
    const char *file = k22_model_weights_file(cfg->kind);
    size_t fl = strlen(file);
    if (fl <= 12 || fl - 12 >= sizeof base)
        return k22_err_set(err, K22_ERR_INTERNAL, "weights file name '%s'", file);
    memcpy(base, file, fl - 12); /* strip ".safetensors" */
    base[fl - 12] = '\0';
    k22_status st = k22_fs_mkdir_p(dir, err);
    if (!st) st = k22_fs_join(path, sizeof path, dir, "config.json", err);
    if (!st) st = k22_config_write(path, cfg, err);
    if (!st) st = remove_old_weights(dir, base, err);
    if (st) return st;
    uint16_t *half = NULL; /* the converted copy, laid out as ps->data */
    if (dtype != K22_DTYPE_F32) {
        half = k22_xmalloc(ps->total ? ps->total * sizeof *half : 1);
        k22_convert_from_f32(half, dtype, ps->data, ps->total);
    }
    k22_st_writer *w = k22_st_writer_new();
    k22_st_writer_meta(w, "format", "pt"); /* transformers refuses files without it */
    for (int i = 0; i < ps->count; i++) {
        const k22_param *p = &ps->items[i];
        const void *data = half ? (const void *)(half + p->offset) : (const void *)(ps->data + p->offset);
        k22_st_writer_add(w, p->name, dtype, p->ndim, p->shape, data);
    }
    st = k22_st_write_sharded(w, dir, base, max_shard_bytes, err);
    k22_st_writer_free(w);
    free(half);
    return st;
}
