/* safetensors_read.c: opens a .safetensors file (mmap) or buffer and checks every byte the
 * header claims before handing out a pointer. The checks are those of the reference Rust reader
 * (tensors sorted by offset tile the data section exactly: no overlap, no gap, nothing after the
 * last) plus stricter ones: duplicate keys, unknown entry fields, empty or over-long names and a
 * null __metadata__ are refused. */
#include "k22/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

struct k22_st_file {
    char *path;
    void *map; /* owned mapping (k22_st_open) or NULL (buffer) */
    size_t map_len;
    int n;
    k22_st_tensor *t; /* sorted by name; names owned */
    int nmeta;
    struct st_meta {
        char *key, *val;
    } *meta; /* sorted by key */
};

/* Sets err to "name: <message>" and returns code. */
static k22_status st_fail(k22_err *err, k22_status code, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static k22_status st_fail(k22_err *err, k22_status code, const char *name, const char *fmt, ...)
{
    char msg[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return k22_err_set(err, code, "%s: %s", name, msg);
}

void k22_st_close(k22_st_file *f)
{
    if (!f) return;
    for (int i = 0; i < f->n; i++) free((char *)f->t[i].name);
    for (int i = 0; i < f->nmeta; i++) {
        free(f->meta[i].key);
        free(f->meta[i].val);
    }
    free(f->t);
    free(f->meta);
    if (f->map) munmap(f->map, f->map_len);
    free(f->path);
    free(f);
}

/* Reads a JSON integer that must be >= 0 into *out; -1 when it is not one. */
static int json_uint(const json_t *v, int64_t *out)
{
    if (!json_is_integer(v)) return -1;
    json_int_t x = json_integer_value(v);
    if (x < 0) return -1;
    *out = (int64_t)x;
    return 0;
}

static int cmp_meta(const void *a, const void *b)
{
    return strcmp(((const struct st_meta *)a)->key, ((const struct st_meta *)b)->key);
}

static k22_status parse_metadata(k22_st_file *f, json_t *meta, const char *name, k22_err *err)
{
    if (!json_is_object(meta))
        return st_fail(err, K22_ERR_FORMAT, name, "__metadata__ is not an object of strings");
    size_t n = json_object_size(meta);
    f->meta = k22_xcalloc(n, sizeof *f->meta);
    const char *k;
    json_t *v;
    json_object_foreach(meta, k, v) {
        if (!json_is_string(v))
            return st_fail(err, K22_ERR_FORMAT, name, "__metadata__ value of '%.200s' is not a string", k);
        f->meta[f->nmeta].key = k22_xstrdup(k);
        f->meta[f->nmeta].val = k22_xstrdup(json_string_value(v));
        f->nmeta++;
    }
    if (f->nmeta > 1) qsort(f->meta, (size_t)f->nmeta, sizeof *f->meta, cmp_meta);
    return K22_OK;
}

static k22_status parse_shape(k22_st_tensor *t, const json_t *shape, const char *name,
                              k22_err *err)
{
    if (!json_is_array(shape))
        return st_fail(err, K22_ERR_FORMAT, name, "tensor '%s': shape is not an array", t->name);
    size_t nd = json_array_size(shape);
    if (nd > K22_MAX_DIMS)
        return st_fail(err, K22_ERR_UNSUPPORTED, name, "tensor '%s' has %zu dimensions; k22 supports at most %d",
                       t->name, nd, K22_MAX_DIMS);
    t->ndim = (int)nd;
    for (size_t d = 0; d < nd; d++) {
        if (json_uint(json_array_get(shape, d), &t->shape[d]) != 0)
            return st_fail(err, K22_ERR_FORMAT, name, "tensor '%s': shape[%zu] is not a non-negative integer",
                           t->name, d);
    }
    /* Byte count, overflow-checked in size_t (numel alone may fit while numel*size does not). */
    size_t bytes = k22_dtype_size(t->dtype);
    for (int d = 0; d < t->ndim; d++) {
        if ((uint64_t)t->shape[d] > SIZE_MAX || k22_mul_size(bytes, (size_t)t->shape[d], &bytes) != 0)
            return st_fail(err, K22_ERR_FORMAT, name, "tensor '%s': the byte count of shape overflows", t->name);
    }
    t->nbytes = bytes;
    return K22_OK;
}

/* Fills t from one header entry; t->name is already set. data_len is the data section size. */
static k22_status parse_entry(k22_st_tensor *t, json_t *e, size_t data_len, const char *name,
                              k22_err *err)
{
    if (!json_is_object(e))
        return st_fail(err, K22_ERR_FORMAT, name, "tensor '%s': entry is not an object", t->name);
    json_t *dt = json_object_get(e, "dtype"), *shape = json_object_get(e, "shape");
    json_t *offs = json_object_get(e, "data_offsets");
    if (!dt || !shape || !offs || json_object_size(e) != 3)
        return st_fail(err, K22_ERR_FORMAT, name,
                       "tensor '%s': entry must have exactly the keys dtype, shape, data_offsets", t->name);
    if (!json_is_string(dt))
        return st_fail(err, K22_ERR_FORMAT, name, "tensor '%s': dtype is not a string", t->name);
    if (k22_dtype_parse(json_string_value(dt), &t->dtype) != 0)
        return st_fail(err, K22_ERR_UNSUPPORTED, name,
                       "tensor '%s' has dtype '%.40s'; k22 reads F32, F16, BF16, I64, I32, U8, BOOL",
                       t->name, json_string_value(dt));
    k22_status st = parse_shape(t, shape, name, err);
    if (st != K22_OK) return st;
    int64_t b, e2;
    if (!json_is_array(offs) || json_array_size(offs) != 2 || json_uint(json_array_get(offs, 0), &b) != 0 ||
        json_uint(json_array_get(offs, 1), &e2) != 0)
        return st_fail(err, K22_ERR_FORMAT, name,
                       "tensor '%s': data_offsets is not a pair of non-negative integers", t->name);
    if (b > e2)
        return st_fail(err, K22_ERR_FORMAT, name, "tensor '%s': data_offsets begin %lld is after end %lld",
                       t->name, (long long)b, (long long)e2);
    if ((uint64_t)e2 > data_len)
        return st_fail(err, K22_ERR_FORMAT, name, "tensor '%s' ends at byte %lld but the data section has %zu",
                       t->name, (long long)e2, data_len);
    if ((uint64_t)(e2 - b) != t->nbytes)
        return st_fail(err, K22_ERR_FORMAT, name,
                       "tensor '%s': shape and dtype %s need %zu bytes but data_offsets [%lld, %lld) hold %lld",
                       t->name, k22_dtype_name(t->dtype), t->nbytes, (long long)b, (long long)e2,
                       (long long)(e2 - b));
    t->offset = (size_t)b;
    return K22_OK;
}

static int cmp_by_offset(const void *pa, const void *pb)
{
    const k22_st_tensor *a = *(k22_st_tensor *const *)pa, *b = *(k22_st_tensor *const *)pb;
    if (a->offset != b->offset) return a->offset < b->offset ? -1 : 1;
    if (a->nbytes != b->nbytes) return a->nbytes < b->nbytes ? -1 : 1;
    return strcmp(a->name, b->name);
}

static int cmp_by_name(const void *pa, const void *pb)
{
    return strcmp(((const k22_st_tensor *)pa)->name, ((const k22_st_tensor *)pb)->name);
}

/* The tensors, sorted by [begin, end), must tile [0, data_len) exactly. */
static k22_status check_tiling(k22_st_file *f, size_t data_len, const char *name, k22_err *err)
{
    k22_st_tensor **by_off = k22_xcalloc((size_t)f->n, sizeof *by_off);
    for (int i = 0; i < f->n; i++) by_off[i] = &f->t[i];
    qsort(by_off, (size_t)f->n, sizeof *by_off, cmp_by_offset);
    k22_status st = K22_OK;
    size_t at = 0;
    const char *prev = NULL;
    for (int i = 0; i < f->n && st == K22_OK; i++) {
        const k22_st_tensor *t = by_off[i];
        if (t->offset < at)
            st = st_fail(err, K22_ERR_FORMAT, name, "tensor '%s' at bytes [%zu, %zu) overlaps tensor '%s' which ends at %zu",
                         t->name, t->offset, t->offset + t->nbytes, prev, at);
        else if (t->offset > at)
            st = st_fail(err, K22_ERR_FORMAT, name,
                         "gap in the data section: bytes [%zu, %zu) before tensor '%s' belong to no tensor", at,
                         t->offset, t->name);
        at = t->offset + t->nbytes;
        prev = t->name;
    }
    if (st == K22_OK && at != data_len)
        st = st_fail(err, K22_ERR_FORMAT, name,
                     "gap in the data section: bytes [%zu, %zu) after the last tensor belong to no tensor", at,
                     data_len);
    free(by_off);
    return st;
}

static k22_status parse_header(k22_st_file *f, json_t *root, const uint8_t *data, size_t data_len,
                               const char *name, k22_err *err)
{
    if (!json_is_object(root)) return st_fail(err, K22_ERR_FORMAT, name, "header is not a JSON object");
    size_t count = json_object_size(root);
    if (count > K22_ST_MAX_TENSORS)
        return st_fail(err, K22_ERR_FORMAT, name, "header has %zu entries, more than the cap %d", count,
                       K22_ST_MAX_TENSORS);
    f->t = k22_xcalloc(count, sizeof *f->t);
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        k22_status st;
        if (strcmp(key, "__metadata__") == 0) {
            if ((st = parse_metadata(f, v, name, err)) != K22_OK) return st;
            continue;
        }
        size_t kl = strlen(key);
        if (kl == 0) return st_fail(err, K22_ERR_FORMAT, name, "a tensor has an empty name");
        if (kl > K22_ST_MAX_NAME)
            return st_fail(err, K22_ERR_FORMAT, name, "tensor name '%.60s...' has %zu bytes, more than %d", key,
                           kl, K22_ST_MAX_NAME);
        k22_st_tensor *t = &f->t[f->n++];
        t->name = k22_xstrdup(key);
        if ((st = parse_entry(t, v, data_len, name, err)) != K22_OK) return st;
        t->data = data + t->offset;
    }
    k22_status st = check_tiling(f, data_len, name, err);
    if (st != K22_OK) return st;
    qsort(f->t, (size_t)f->n, sizeof *f->t, cmp_by_name);
    return K22_OK;
}

/* The checks shared by both open paths; f->path is set. */
static k22_status st_parse(k22_st_file *f, const uint8_t *buf, size_t len, k22_err *err)
{
    const char *name = f->path;
    if (len < 8)
        return st_fail(err, K22_ERR_FORMAT, name, "file has %zu bytes, shorter than the 8-byte header length", len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | buf[i];
    if (hlen > K22_ST_MAX_HEADER)
        return st_fail(err, K22_ERR_FORMAT, name, "header length %llu is more than the cap %u",
                       (unsigned long long)hlen, K22_ST_MAX_HEADER);
    if (hlen > len - 8)
        return st_fail(err, K22_ERR_FORMAT, name, "header length %llu runs past the end of the file (%zu bytes)",
                       (unsigned long long)hlen, len);
    json_error_t jerr;
    json_t *root = json_loadb((const char *)buf + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return st_fail(err, K22_ERR_FORMAT, name, "header is not valid JSON: %s (header byte %d)", jerr.text,
                       jerr.position);
    k22_status st = parse_header(f, root, buf + 8 + hlen, len - 8 - (size_t)hlen, name, err);
    json_decref(root);
    return st;
}

k22_status k22_st_open_buffer(const void *buf, size_t len, const char *name, k22_st_file **out,
                              k22_err *err)
{
    *out = NULL;
    k22_st_file *f = k22_xcalloc(1, sizeof *f);
    f->path = k22_xstrdup(name ? name : "(buffer)");
    k22_status st = st_parse(f, buf, len, err);
    if (st != K22_OK) {
        k22_st_close(f);
        return st;
    }
    *out = f;
    return K22_OK;
}

k22_status k22_st_open(const char *path, k22_st_file **out, k22_err *err)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return st_fail(err, K22_ERR_IO, path, "cannot open: %s", strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return st_fail(err, K22_ERR_IO, path, "not a regular file");
    }
    size_t len = (size_t)sb.st_size;
    if (len < 8) {
        close(fd);
        return st_fail(err, K22_ERR_FORMAT, path, "file has %zu bytes, shorter than the 8-byte header length",
                       len);
    }
    void *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    int mmap_errno = errno;
    close(fd);
    if (map == MAP_FAILED) return st_fail(err, K22_ERR_IO, path, "mmap failed: %s", strerror(mmap_errno));
    k22_st_file *f = k22_xcalloc(1, sizeof *f);
    f->path = k22_xstrdup(path);
    f->map = map;
    f->map_len = len;
    k22_status st = st_parse(f, map, len, err);
    if (st != K22_OK) {
        k22_st_close(f);
        return st;
    }
    *out = f;
    return K22_OK;
}

int k22_st_count(const k22_st_file *f) { return f->n; }

const k22_st_tensor *k22_st_at(const k22_st_file *f, int i)
{
    return i >= 0 && i < f->n ? &f->t[i] : NULL;
}

const k22_st_tensor *k22_st_find(const k22_st_file *f, const char *name)
{
    k22_st_tensor key = {.name = name};
    return bsearch(&key, f->t, (size_t)f->n, sizeof *f->t, cmp_by_name);
}

int k22_st_metadata_count(const k22_st_file *f) { return f->nmeta; }

const char *k22_st_metadata_key(const k22_st_file *f, int i)
{
    return i >= 0 && i < f->nmeta ? f->meta[i].key : NULL;
}

const char *k22_st_metadata_get(const k22_st_file *f, const char *key)
{
    if (f->nmeta == 0) return NULL;
    struct st_meta k = {.key = (char *)key};
    const struct st_meta *m = bsearch(&k, f->meta, (size_t)f->nmeta, sizeof *f->meta, cmp_meta);
    return m ? m->val : NULL;
}

const char *k22_st_path(const k22_st_file *f) { return f->path; }
