/* safetensors_write.c: the deterministic safetensors writer and the sharded (index.json) writer.
 *
 * Layout is the one the reference Rust writer (safetensors.torch.save_file) produces, byte for
 * byte when there is at most one metadata key: tensors ordered by dtype rank (I64, F32, I32, BF16,
 * F16, U8, BOOL: widest first, so every tensor stays aligned to its element size without gaps)
 * then by name; header JSON without spaces, keys in data order, each entry spelled
 * {"dtype":..,"shape":[..],"data_offsets":[b,e]}, __metadata__ first with keys sorted (the
 * reference's order there is a hash map's); header padded with spaces to a multiple of 8. Files
 * are written atomically: path.tmp, fsync, rename, fsync of the folder. */
#include "k22/safetensors.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    char *name;
    k22_dtype dtype;
    int ndim;
    int64_t shape[K22_MAX_DIMS];
    const void *data;
    size_t nbytes;
    int bad; /* 1: dtype or shape invalid, reported at write time */
} st_entry;

typedef struct {
    char *key, *val;
} st_kv;

struct k22_st_writer {
    st_entry *e;
    int n, cap;
    st_kv *meta;
    int nmeta, mcap;
};

/* A growing byte string. */
typedef struct {
    char *p;
    size_t n, cap;
} st_buf;

static void buf_put(st_buf *b, const char *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) K22_FATAL("out of memory growing a buffer to %zu bytes", cap);
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static void buf_puts(st_buf *b, const char *s) { buf_put(b, s, strlen(s)); }

static void buf_printf(st_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void buf_printf(st_buf *b, const char *fmt, ...)
{
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    buf_put(b, tmp, (size_t)n);
}

/* Length of the valid UTF-8 sequence at s (RFC 3629: no overlongs, surrogates or > U+10FFFF),
 * 0 when invalid; *cp gets the code point. */
static int utf8_seq(const unsigned char *s, uint32_t *cp)
{
    unsigned c = s[0];
    int n;
    uint32_t v, min;
    if (c < 0x80) {
        *cp = c;
        return 1;
    } else if ((c & 0xe0) == 0xc0) {
        n = 2, v = c & 0x1f, min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
        n = 3, v = c & 0x0f, min = 0x800;
    } else if ((c & 0xf8) == 0xf0) {
        n = 4, v = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    for (int i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
        v = (v << 6) | (s[i] & 0x3f);
    }
    if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff)) return 0;
    *cp = v;
    return n;
}

static int utf8_valid(const char *s)
{
    uint32_t cp;
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        int n = utf8_seq(p, &cp);
        if (!n) return 0;
        p += n;
    }
    return 1;
}

/* Appends s as a JSON string. ascii=0 spells it as serde_json does (UTF-8 kept), ascii=1 as
 * Python's json.dumps does (non-ASCII as \uXXXX, surrogate pairs above U+FFFF). s is valid UTF-8. */
static void buf_json_string(st_buf *b, const char *s, int ascii)
{
    buf_puts(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        uint32_t cp;
        int n = utf8_seq(p, &cp);
        if (n == 0) n = 1, cp = *p; /* unreachable for validated input */
        if (cp == '"') buf_puts(b, "\\\"");
        else if (cp == '\\') buf_puts(b, "\\\\");
        else if (cp == '\n') buf_puts(b, "\\n");
        else if (cp == '\r') buf_puts(b, "\\r");
        else if (cp == '\t') buf_puts(b, "\\t");
        else if (cp == '\b') buf_puts(b, "\\b");
        else if (cp == '\f') buf_puts(b, "\\f");
        else if (cp < 0x20) buf_printf(b, "\\u%04x", cp);
        else if (ascii && cp >= 0x10000)
            buf_printf(b, "\\u%04x\\u%04x", 0xd800 + ((cp - 0x10000) >> 10), 0xdc00 + ((cp - 0x10000) & 0x3ff));
        else if (ascii && cp >= 0x80) buf_printf(b, "\\u%04x", cp);
        else buf_put(b, (const char *)p, (size_t)n);
        p += n;
    }
    buf_puts(b, "\"");
}

k22_st_writer *k22_st_writer_new(void) { return k22_xcalloc(1, sizeof(k22_st_writer)); }

void k22_st_writer_free(k22_st_writer *w)
{
    if (!w) return;
    for (int i = 0; i < w->n; i++) free(w->e[i].name);
    for (int i = 0; i < w->nmeta; i++) {
        free(w->meta[i].key);
        free(w->meta[i].val);
    }
    free(w->e);
    free(w->meta);
    free(w);
}

void k22_st_writer_add(k22_st_writer *w, const char *name, k22_dtype dtype, int ndim,
                       const int64_t *shape, const void *data)
{
    if (w->n == w->cap) {
        w->cap = w->cap ? 2 * w->cap : 16;
        st_entry *e = realloc(w->e, (size_t)w->cap * sizeof *e);
        if (!e) K22_FATAL("out of memory adding tensor %d", w->n);
        w->e = e;
    }
    st_entry *e = &w->e[w->n++];
    memset(e, 0, sizeof *e);
    e->name = k22_xstrdup(name ? name : "");
    e->dtype = dtype;
    e->data = data;
    e->bad = (unsigned)dtype >= K22_DTYPE_COUNT || ndim < 0 || ndim > K22_MAX_DIMS || (ndim > 0 && !shape);
    if (e->bad) return;
    e->ndim = ndim;
    size_t bytes = k22_dtype_size(dtype);
    for (int d = 0; d < ndim; d++) {
        e->shape[d] = shape[d];
        if (shape[d] < 0 || (uint64_t)shape[d] > SIZE_MAX || k22_mul_size(bytes, (size_t)shape[d], &bytes))
            e->bad = 1;
    }
    e->nbytes = e->bad ? 0 : bytes;
    if (e->nbytes && !data) e->bad = 1;
}

/* A repeated key replaces the earlier value. */
void k22_st_writer_meta(k22_st_writer *w, const char *key, const char *value)
{
    for (int i = 0; i < w->nmeta; i++) {
        if (strcmp(w->meta[i].key, key) == 0) {
            free(w->meta[i].val);
            w->meta[i].val = k22_xstrdup(value);
            return;
        }
    }
    if (w->nmeta == w->mcap) {
        w->mcap = w->mcap ? 2 * w->mcap : 8;
        st_kv *m = realloc(w->meta, (size_t)w->mcap * sizeof *m);
        if (!m) K22_FATAL("out of memory adding metadata %d", w->nmeta);
        w->meta = m;
    }
    w->meta[w->nmeta].key = k22_xstrdup(key);
    w->meta[w->nmeta].val = k22_xstrdup(value);
    w->nmeta++;
}

/* The reference writer orders by its Dtype enum, descending. */
static int dtype_rank(k22_dtype t)
{
    static const int rank[K22_DTYPE_COUNT] = {
        [K22_DTYPE_I64] = 6, [K22_DTYPE_F32] = 5, [K22_DTYPE_I32] = 4, [K22_DTYPE_BF16] = 3,
        [K22_DTYPE_F16] = 2, [K22_DTYPE_U8] = 1,  [K22_DTYPE_BOOL] = 0,
    };
    return rank[t];
}

static int cmp_data_order(const void *pa, const void *pb)
{
    const st_entry *a = *(st_entry *const *)pa, *b = *(st_entry *const *)pb;
    int ra = dtype_rank(a->dtype), rb = dtype_rank(b->dtype);
    if (ra != rb) return rb - ra;
    return strcmp(a->name, b->name);
}

static int cmp_name(const void *pa, const void *pb)
{
    return strcmp((*(st_entry *const *)pa)->name, (*(st_entry *const *)pb)->name);
}

static int cmp_kv(const void *a, const void *b)
{
    return strcmp(((const st_kv *)a)->key, ((const st_kv *)b)->key);
}

/* Checks every entry and metadata item; what: the output named in messages. */
static k22_status check_entries(k22_st_writer *w, st_entry **v, int n, const char *what, k22_err *err)
{
    for (int i = 0; i < n; i++) {
        size_t kl = strlen(v[i]->name);
        if (v[i]->bad)
            return k22_err_set(err, K22_ERR_ARG, "%s: tensor '%.200s' has an invalid dtype, shape or NULL data",
                               what, v[i]->name);
        if (kl == 0 || kl > K22_ST_MAX_NAME || !utf8_valid(v[i]->name) || !strcmp(v[i]->name, "__metadata__"))
            return k22_err_set(err, K22_ERR_ARG,
                               "%s: tensor name '%.200s' is empty, longer than %d bytes, not UTF-8 or reserved",
                               what, v[i]->name, K22_ST_MAX_NAME);
    }
    for (int i = 0; i < w->nmeta; i++)
        if (!utf8_valid(w->meta[i].key) || !utf8_valid(w->meta[i].val))
            return k22_err_set(err, K22_ERR_ARG, "%s: metadata key or value of '%.200s' is not UTF-8", what,
                               w->meta[i].key);
    st_entry **by_name = k22_xcalloc((size_t)n, sizeof *by_name);
    memcpy(by_name, v, (size_t)n * sizeof *v);
    qsort(by_name, (size_t)n, sizeof *by_name, cmp_name);
    k22_status st = K22_OK;
    for (int i = 1; i < n && st == K22_OK; i++)
        if (strcmp(by_name[i - 1]->name, by_name[i]->name) == 0)
            st = k22_err_set(err, K22_ERR_ARG, "%s: tensor '%.200s' was added twice", what, by_name[i]->name);
    free(by_name);
    return st;
}

/* Builds the 8-byte length plus padded header for entries v (re-ordered into data order) into
 * *hdr; *data_len gets the data section size. */
static k22_status build_header(k22_st_writer *w, st_entry **v, int n, const char *what, st_buf *hdr,
                               size_t *data_len, k22_err *err)
{
    k22_status st = check_entries(w, v, n, what, err);
    if (st != K22_OK) return st;
    qsort(v, (size_t)n, sizeof *v, cmp_data_order);
    if (w->nmeta > 1) qsort(w->meta, (size_t)w->nmeta, sizeof *w->meta, cmp_kv);
    st_buf b = {0};
    buf_put(&b, "\0\0\0\0\0\0\0\0", 8);
    buf_puts(&b, "{");
    if (w->nmeta) {
        buf_puts(&b, "\"__metadata__\":{");
        for (int i = 0; i < w->nmeta; i++) {
            if (i) buf_puts(&b, ",");
            buf_json_string(&b, w->meta[i].key, 0);
            buf_puts(&b, ":");
            buf_json_string(&b, w->meta[i].val, 0);
        }
        buf_puts(&b, "}");
    }
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        if (i || w->nmeta) buf_puts(&b, ",");
        buf_json_string(&b, v[i]->name, 0);
        buf_printf(&b, ":{\"dtype\":\"%s\",\"shape\":[", k22_dtype_name(v[i]->dtype));
        for (int d = 0; d < v[i]->ndim; d++) buf_printf(&b, "%s%lld", d ? "," : "", (long long)v[i]->shape[d]);
        size_t end;
        if (k22_add_size(off, v[i]->nbytes, &end)) {
            free(b.p);
            return k22_err_set(err, K22_ERR_ARG, "%s: total tensor bytes overflow", what);
        }
        buf_printf(&b, "],\"data_offsets\":[%zu,%zu]}", off, end);
        off = end;
    }
    buf_puts(&b, "}");
    while ((b.n - 8) % 8) buf_puts(&b, " ");
    uint64_t hl = b.n - 8;
    if (hl > K22_ST_MAX_HEADER || n + (w->nmeta > 0) > K22_ST_MAX_TENSORS) { /* readers would refuse it */
        free(b.p);
        return k22_err_set(err, K22_ERR_ARG, "%s: %d tensors with a %llu-byte header exceed the caps (%d, %u)",
                           what, n, (unsigned long long)hl, K22_ST_MAX_TENSORS, K22_ST_MAX_HEADER);
    }
    for (int i = 0; i < 8; i++) b.p[i] = (char)(hl >> (8 * i));
    *hdr = b;
    *data_len = off;
    return K22_OK;
}

static st_entry **all_entries(k22_st_writer *w)
{
    st_entry **v = k22_xcalloc((size_t)w->n, sizeof *v);
    for (int i = 0; i < w->n; i++) v[i] = &w->e[i];
    return v;
}

k22_status k22_st_serialize(k22_st_writer *w, uint8_t **buf, size_t *len, k22_err *err)
{
    *buf = NULL;
    *len = 0;
    st_entry **v = all_entries(w);
    st_buf hdr = {0};
    size_t dlen = 0, total = 0;
    k22_status st = build_header(w, v, w->n, "(buffer)", &hdr, &dlen, err);
    if (st != K22_OK) goto out;
    if (k22_add_size(hdr.n, dlen, &total)) {
        st = k22_err_set(err, K22_ERR_NOMEM, "(buffer): %zu data bytes do not fit in memory", dlen);
        goto out;
    }
    uint8_t *p = malloc(total);
    if (!p) {
        st = k22_err_set(err, K22_ERR_NOMEM, "(buffer): cannot allocate %zu bytes", total);
        goto out;
    }
    memcpy(p, hdr.p, hdr.n);
    size_t at = hdr.n;
    for (int i = 0; i < w->n; i++) {
        if (v[i]->nbytes) memcpy(p + at, v[i]->data, v[i]->nbytes);
        at += v[i]->nbytes;
    }
    *buf = p;
    *len = total;
out:
    free(hdr.p);
    free(v);
    return st;
}

/* ---- atomic file writing ---- */

static k22_status write_all(int fd, const void *p, size_t n, const char *path, k22_err *err)
{
    const char *c = p;
    while (n) {
        ssize_t k = write(fd, c, n > (1u << 30) ? (1u << 30) : n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return k22_err_set(err, K22_ERR_IO, "%s: write failed: %s", path, strerror(errno));
        c += k;
        n -= (size_t)k;
    }
    return K22_OK;
}

/* fsyncs the folder holding path so a rename into it survives a crash. */
static k22_status fsync_parent(const char *path, k22_err *err)
{
    char *dir = k22_xstrdup(path);
    char *slash = strrchr(dir, '/');
    if (slash == dir) slash[1] = '\0';
    else if (slash) *slash = '\0';
    else strcpy(dir, ".");
    k22_status st = K22_OK;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) != 0)
        st = k22_err_set(err, K22_ERR_IO, "%s: cannot fsync folder: %s", dir, strerror(errno));
    if (fd >= 0) close(fd);
    free(dir);
    return st;
}

/* Writes the parts (NULL-terminated arrays p/n with count parts) to path atomically. */
static k22_status write_atomic(const char *path, const void *const *p, const size_t *n, int parts,
                               k22_err *err)
{
    size_t tl = strlen(path) + 5;
    char *tmp = k22_xmalloc(tl);
    snprintf(tmp, tl, "%s.tmp", path);
    k22_status st = K22_OK;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        st = k22_err_set(err, K22_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
        goto out;
    }
    for (int i = 0; i < parts && st == K22_OK; i++)
        if (n[i]) st = write_all(fd, p[i], n[i], tmp, err);
    if (st == K22_OK && fsync(fd) != 0) st = k22_err_set(err, K22_ERR_IO, "%s: fsync failed: %s", tmp, strerror(errno));
    if (close(fd) != 0 && st == K22_OK)
        st = k22_err_set(err, K22_ERR_IO, "%s: close failed: %s", tmp, strerror(errno));
    if (st == K22_OK && rename(tmp, path) != 0)
        st = k22_err_set(err, K22_ERR_IO, "%s: cannot rename to %s: %s", tmp, path, strerror(errno));
    if (st != K22_OK) unlink(tmp);
    else st = fsync_parent(path, err);
out:
    free(tmp);
    return st;
}

/* Writes entries v (any order; re-ordered here) as one safetensors file. */
static k22_status write_file(k22_st_writer *w, st_entry **v, int n, const char *path, k22_err *err)
{
    st_buf hdr = {0};
    size_t dlen;
    k22_status st = build_header(w, v, n, path, &hdr, &dlen, err);
    if (st != K22_OK) return st;
    const void **p = k22_xcalloc((size_t)n + 1, sizeof *p);
    size_t *len = k22_xcalloc((size_t)n + 1, sizeof *len);
    p[0] = hdr.p;
    len[0] = hdr.n;
    for (int i = 0; i < n; i++) {
        p[i + 1] = v[i]->data;
        len[i + 1] = v[i]->nbytes;
    }
    st = write_atomic(path, p, len, n + 1, err);
    free(p);
    free(len);
    free(hdr.p);
    return st;
}

k22_status k22_st_write(k22_st_writer *w, const char *path, k22_err *err)
{
    st_entry **v = all_entries(w);
    k22_status st = write_file(w, v, w->n, path, err);
    free(v);
    return st;
}

/* ---- sharded writing ---- */

/* Assigns shard numbers exactly as huggingface_hub's split_state_dict_into_shards does: tensors
 * in insertion order fill the current shard until the next would exceed the cap; a tensor bigger
 * than the cap gets a shard of its own at once while the current shard stays open (so shard
 * numbers follow the order shards are closed). Returns the shard count. */
static int assign_shards(const k22_st_writer *w, size_t max_bytes, int *shard_of)
{
    int nshards = 0, npend = 0;
    int *pend = k22_xcalloc((size_t)w->n, sizeof *pend);
    size_t cur = 0;
    for (int i = 0; i < w->n; i++) {
        size_t sz = w->e[i].nbytes;
        if (sz > max_bytes) {
            shard_of[i] = nshards++;
            continue;
        }
        if (sz > max_bytes - cur) {
            for (int j = 0; j < npend; j++) shard_of[pend[j]] = nshards;
            nshards++;
            npend = 0;
            cur = 0;
        }
        pend[npend++] = i;
        cur += sz;
    }
    for (int j = 0; j < npend; j++) shard_of[pend[j]] = nshards;
    if (npend) nshards++;
    free(pend);
    return nshards;
}

static char *path_join(const char *dir, const char *file)
{
    size_t n = strlen(dir) + strlen(file) + 2;
    char *p = k22_xmalloc(n);
    snprintf(p, n, "%s/%s", dir, file);
    return p;
}

static char *shard_name(const char *base, int k, int nshards)
{
    size_t n = strlen(base) + 64;
    char *p = k22_xmalloc(n);
    if (nshards == 1) snprintf(p, n, "%s.safetensors", base);
    else snprintf(p, n, "%s-%05d-of-%05d.safetensors", base, k + 1, nshards);
    return p;
}

/* The index as diffusers writes it: json.dumps(index, indent=2, sort_keys=True) + "\n". */
static void build_index(const k22_st_writer *w, char **names, const int *shard_of, st_buf *b)
{
    size_t total = 0;
    st_entry **v = k22_xcalloc((size_t)w->n, sizeof *v);
    for (int i = 0; i < w->n; i++) {
        v[i] = &w->e[i];
        total += w->e[i].nbytes; /* cannot overflow: checked by build_header per shard and below */
    }
    qsort(v, (size_t)w->n, sizeof *v, cmp_name);
    buf_printf(b, "{\n  \"metadata\": {\n    \"total_size\": %zu\n  },\n  \"weight_map\": {", total);
    for (int i = 0; i < w->n; i++) {
        buf_puts(b, i ? ",\n    " : "\n    ");
        buf_json_string(b, v[i]->name, 1);
        buf_puts(b, ": ");
        buf_json_string(b, names[shard_of[v[i] - w->e]], 1);
    }
    buf_puts(b, w->n ? "\n  }\n}\n" : "}\n}\n");
    free(v);
}

/* Removes BASE-NNNNN-of-NNNNN.safetensors files a previous write left that this one did not
 * write, so the folder never mixes two checkpoints. Best effort. */
static void remove_stale_shards(const char *dir, const char *base, char **names, int nshards)
{
    DIR *d = opendir(dir);
    if (!d) return;
    size_t bl = strlen(base);
    struct dirent *de;
    while ((de = readdir(d))) {
        const char *f = de->d_name;
        unsigned a, b;
        char tail[32];
        if (strncmp(f, base, bl) != 0 || strlen(f) != bl + 27) continue;
        if (sscanf(f + bl, "-%5u-of-%5u%20s", &a, &b, tail) != 3 || strcmp(tail, ".safetensors") != 0) continue;
        int keep = 0;
        for (int k = 0; k < nshards; k++) keep |= strcmp(names[k], f) == 0;
        if (!keep) {
            char *p = path_join(dir, f);
            unlink(p);
            free(p);
        }
    }
    closedir(d);
}

k22_status k22_st_write_sharded(k22_st_writer *w, const char *dir, const char *base,
                                size_t max_shard_bytes, k22_err *err)
{
    int *shard_of = k22_xcalloc((size_t)w->n, sizeof *shard_of);
    int nshards = assign_shards(w, max_shard_bytes, shard_of);
    if (nshards == 0) nshards = 1; /* no tensors: one empty file */
    char **names = k22_xcalloc((size_t)nshards, sizeof *names);
    st_entry **v = k22_xcalloc((size_t)w->n, sizeof *v);
    char *index_name = k22_xmalloc(strlen(base) + 32);
    sprintf(index_name, "%s.safetensors.index.json", base);
    char *index_path = path_join(dir, index_name);
    size_t total = 0;
    k22_status st = K22_OK;
    for (int i = 0; i < w->n; i++)
        if (k22_add_size(total, w->e[i].nbytes, &total)) st = k22_err_set(err, K22_ERR_ARG, "%s: total size overflows", dir);
    for (int k = 0; k < nshards; k++) names[k] = shard_name(base, k, nshards);
    for (int k = 0; k < nshards && st == K22_OK; k++) {
        int n = 0;
        for (int i = 0; i < w->n; i++)
            if (shard_of[i] == k) v[n++] = &w->e[i];
        char *path = path_join(dir, names[k]);
        st = write_file(w, v, n, path, err);
        free(path);
    }
    if (st == K22_OK && nshards > 1) {
        st_buf b = {0};
        build_index(w, names, shard_of, &b);
        const void *p[1] = {b.p};
        size_t n[1] = {b.n};
        st = write_atomic(index_path, p, n, 1, err);
        free(b.p);
    }
    if (st == K22_OK) {
        remove_stale_shards(dir, base, names, nshards);
        if (nshards == 1) unlink(index_path); /* a stale index would shadow the single file */
        else {
            char *sname = shard_name(base, 0, 1), *single = path_join(dir, sname);
            unlink(single);
            free(single);
            free(sname);
        }
    }
    for (int k = 0; k < nshards; k++) free(names[k]);
    free(names);
    free(v);
    free(shard_of);
    free(index_name);
    free(index_path);
    return st;
}
