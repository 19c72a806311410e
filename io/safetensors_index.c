/* safetensors_index.c: opens a sharded checkpoint (NAME.safetensors.index.json and its shards)
 * or a single .safetensors file as one set of tensors. The index is checked both ways: every
 * weight_map entry is in the shard it names, and every tensor of every shard is listed there
 * for that shard. Shard names must be plain file names in the index's folder. */
#include "k22/safetensors.h"
#include "k22/fsutil.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct k22_st_set {
    int nfiles;
    k22_st_file **files;
    char **file_names; /* shard names as in the weight_map, sorted; NULL for a single file */
    int n;
    const k22_st_tensor **t; /* sorted by name */
};

void k22_st_set_close(k22_st_set *s)
{
    if (!s) return;
    for (int i = 0; i < s->nfiles; i++) {
        k22_st_close(s->files[i]);
        if (s->file_names) free(s->file_names[i]);
    }
    free(s->files);
    free(s->file_names);
    free(s->t);
    free(s);
}

int k22_st_set_count(const k22_st_set *s) { return s->n; }

const k22_st_tensor *k22_st_set_at(const k22_st_set *s, int i)
{
    return i >= 0 && i < s->n ? s->t[i] : NULL;
}

static int cmp_tensor_ptr(const void *a, const void *b)
{
    return strcmp((*(const k22_st_tensor *const *)a)->name, (*(const k22_st_tensor *const *)b)->name);
}

const k22_st_tensor *k22_st_set_find(const k22_st_set *s, const char *name)
{
    if (s->n == 0) return NULL;
    k22_st_tensor key = {.name = name};
    const k22_st_tensor *kp = &key;
    const k22_st_tensor **hit = bsearch(&kp, s->t, (size_t)s->n, sizeof *s->t, cmp_tensor_ptr);
    return hit ? *hit : NULL;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static k22_status open_single(const char *path, k22_st_set *s, k22_err *err)
{
    s->files = k22_xcalloc(1, sizeof *s->files);
    k22_status st = k22_st_open(path, &s->files[0], err);
    if (st != K22_OK) return st;
    s->nfiles = 1;
    s->n = k22_st_count(s->files[0]);
    s->t = k22_xcalloc((size_t)s->n, sizeof *s->t);
    for (int i = 0; i < s->n; i++) s->t[i] = k22_st_at(s->files[0], i);
    return K22_OK;
}


/* A shard name must be a plain file name: no folders, no way out of the index's folder. */
static int shard_name_ok(const char *s)
{
    size_t n = strlen(s);
    return n > 0 && n <= 255 && !strchr(s, '/') && !strchr(s, '\\') && !strstr(s, "..");
}

/* Checks the weight_map's keys and values; collects the distinct shard names, sorted. */
static k22_status collect_shards(k22_st_set *s, json_t *wm, const char *path, k22_err *err)
{
    size_t n = json_object_size(wm);
    if (n > K22_ST_MAX_TENSORS)
        return k22_err_set(err, K22_ERR_FORMAT, "%s: weight_map has %zu entries, more than the cap %d", path, n,
                           K22_ST_MAX_TENSORS);
    char **names = k22_xcalloc(n, sizeof *names);
    int nn = 0;
    k22_status st = K22_OK;
    const char *key;
    json_t *v;
    json_object_foreach(wm, key, v) {
        size_t kl = strlen(key);
        if (kl == 0 || kl > K22_ST_MAX_NAME) {
            st = k22_err_set(err, K22_ERR_FORMAT, "%s: weight_map has a tensor name of %zu bytes (1..%d allowed)",
                             path, kl, K22_ST_MAX_NAME);
            goto out;
        }
        if (!json_is_string(v)) {
            st = k22_err_set(err, K22_ERR_FORMAT, "%s: weight_map entry '%.200s' is not a string", path, key);
            goto out;
        }
        if (!shard_name_ok(json_string_value(v))) {
            st = k22_err_set(err, K22_ERR_FORMAT,
                             "%s: weight_map names shard '%.200s' for tensor '%.200s'; a shard must be a file name "
                             "in the index's folder (no '/' or '..')",
                             path, json_string_value(v), key);
            goto out;
        }
        names[nn++] = (char *)json_string_value(v);
    }
    if (nn) qsort(names, (size_t)nn, sizeof *names, cmp_str);
    s->file_names = k22_xcalloc((size_t)nn, sizeof *s->file_names);
    s->files = k22_xcalloc((size_t)nn, sizeof *s->files);
    for (int i = 0; i < nn; i++)
        if (i == 0 || strcmp(names[i], names[i - 1]) != 0) s->file_names[s->nfiles++] = k22_xstrdup(names[i]);
out:
    free(names);
    return st;
}

static int shard_index(const k22_st_set *s, const char *name)
{
    char **hit = bsearch(&name, s->file_names, (size_t)s->nfiles, sizeof *s->file_names, cmp_str);
    return hit ? (int)(hit - s->file_names) : -1;
}

/* Opens every shard (file_names set, files not yet) relative to the index's folder. */
static k22_status open_shards(k22_st_set *s, const char *path, k22_err *err)
{
    const char *slash = strrchr(path, '/');
    size_t dl = slash ? (size_t)(slash - path) + 1 : 0;
    k22_status st = K22_OK;
    for (int i = 0; i < s->nfiles && st == K22_OK; i++) {
        size_t n = dl + strlen(s->file_names[i]) + 1;
        char *p = k22_xmalloc(n);
        snprintf(p, n, "%.*s%s", (int)dl, path, s->file_names[i]);
        st = k22_st_open(p, &s->files[i], err);
        if (st != K22_OK) k22_err_prefix(err, "%s: shard '%.200s' named in the weight_map", path, s->file_names[i]);
        free(p);
    }
    return st;
}

/* Both directions of the weight_map <-> shard contents check; fills s->t. */
static k22_status cross_check(k22_st_set *s, json_t *wm, const char *path, k22_err *err)
{
    s->t = k22_xcalloc(json_object_size(wm), sizeof *s->t);
    const char *key;
    json_t *v;
    json_object_foreach(wm, key, v) {
        const char *shard = json_string_value(v);
        const k22_st_tensor *t = k22_st_find(s->files[shard_index(s, shard)], key);
        if (!t)
            return k22_err_set(err, K22_ERR_KEY, "%s: weight_map puts tensor '%.200s' in shard '%.200s' but that shard does not hold it",
                               path, key, shard);
        s->t[s->n++] = t;
    }
    for (int i = 0; i < s->nfiles; i++) {
        for (int j = 0; j < k22_st_count(s->files[i]); j++) {
            const char *name = k22_st_at(s->files[i], j)->name;
            json_t *where = json_object_get(wm, name);
            if (!where)
                return k22_err_set(err, K22_ERR_KEY, "%s: shard '%.200s' holds tensor '%.200s' which the weight_map does not list",
                                   path, s->file_names[i], name);
            if (strcmp(json_string_value(where), s->file_names[i]) != 0)
                return k22_err_set(err, K22_ERR_KEY, "%s: shard '%.200s' holds tensor '%.200s' which the weight_map puts in '%.200s'",
                                   path, s->file_names[i], name, json_string_value(where));
        }
    }
    if (s->n > 1) qsort(s->t, (size_t)s->n, sizeof *s->t, cmp_tensor_ptr);
    return K22_OK;
}

static k22_status open_index(const char *path, k22_st_set *s, k22_err *err)
{
    char *buf = NULL;
    size_t len = 0;
    k22_status st = k22_fs_read_all(path, K22_ST_MAX_HEADER, &buf, &len, err);
    if (st != K22_OK) return st;
    json_error_t jerr;
    json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
    free(buf);
    if (!root)
        return k22_err_set(err, K22_ERR_FORMAT, "%s: not valid JSON: %s (line %d, column %d)", path, jerr.text,
                           jerr.line, jerr.column);
    json_t *wm = json_object_get(root, "weight_map"), *meta = json_object_get(root, "metadata");
    size_t want = 1 + (meta != NULL);
    if (!json_is_object(root) || !json_is_object(wm) || (meta && !json_is_object(meta)) ||
        json_object_size(root) != want)
        st = k22_err_set(err, K22_ERR_FORMAT,
                         "%s: index must be an object with a 'weight_map' object and an optional 'metadata' object, nothing else",
                         path);
    if (st == K22_OK) st = collect_shards(s, wm, path, err);
    if (st == K22_OK) st = open_shards(s, path, err);
    if (st == K22_OK) st = cross_check(s, wm, path, err);
    json_decref(root);
    return st;
}

k22_status k22_st_set_open(const char *path, k22_st_set **out, k22_err *err)
{
    *out = NULL;
    k22_st_set *s = k22_xcalloc(1, sizeof *s);
    k22_status st = ends_with(path, ".json") ? open_index(path, s, err) : open_single(path, s, err);
    if (st != K22_OK) {
        k22_st_set_close(s);
        return st;
    }
    *out = s;
    return K22_OK;
}
