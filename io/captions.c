/* captions.c: the caption set, caption checks, the metadata.jsonl parser and the image-folder
 * reader that checks metadata rows against the folder (captions_csv.c parses metadata.csv,
 * captions_walk.c walks sidecar folders, webdataset.c reads tar shards). */
#include "captions_internal.h"

#include "k22/fsutil.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void k22_captions_opts_default(k22_captions_opts *o)
{
    o->caption_column = "text";
    o->image_column = "file_name";
    o->max_caption_bytes = K22_CAPTION_MAX_BYTES_DEFAULT;
    o->max_member_bytes = K22_WDS_MAX_MEMBER_BYTES_DEFAULT;
}

/* ---- small string helpers ---- */

char *k22_strfmt(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) n = 0;
    char *p = k22_xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

char *k22_strndup0(const char *s, size_t len)
{
    char *p = k22_xmalloc(len + 1);
    if (len) memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

void k22_trim(const char **s, size_t *len)
{
    while (*len && is_space((*s)[0])) (*s)++, (*len)--;
    while (*len && is_space((*s)[*len - 1])) (*len)--;
}

/* ---- the set ---- */

void k22_caption_set_init(k22_caption_set *s) { memset(s, 0, sizeof *s); }

void k22_caption_rec_free(k22_caption_rec *r)
{
    if (!r) return;
    free(r->name);
    free(r->file);
    free(r->source);
    for (int i = 0; i < r->ncaptions; i++) free(r->captions[i]);
    free(r->captions);
    free(r->image);
    memset(r, 0, sizeof *r);
}

void k22_caption_reject_free(k22_caption_reject *r)
{
    if (!r) return;
    free(r->source);
    free(r->reason);
    memset(r, 0, sizeof *r);
}

void k22_caption_set_free(k22_caption_set *s)
{
    for (size_t i = 0; i < s->nrecs; i++) k22_caption_rec_free(&s->recs[i]);
    for (size_t i = 0; i < s->nrejects; i++) k22_caption_reject_free(&s->rejects[i]);
    free(s->recs);
    free(s->rejects);
    memset(s, 0, sizeof *s);
}

void k22_caption_set_push(k22_caption_set *s, k22_caption_rec *r)
{
    if (s->nrecs == s->cap_recs) {
        s->cap_recs = s->cap_recs ? 2 * s->cap_recs : 64;
        s->recs = realloc(s->recs, s->cap_recs * sizeof *s->recs);
        if (!s->recs) K22_FATAL("out of memory for %zu caption records", s->cap_recs);
    }
    s->recs[s->nrecs++] = *r;
    memset(r, 0, sizeof *r);
}

void k22_caption_set_push_reject(k22_caption_set *s, k22_caption_reject *r)
{
    if (s->nrejects == s->cap_rejects) {
        s->cap_rejects = s->cap_rejects ? 2 * s->cap_rejects : 16;
        s->rejects = realloc(s->rejects, s->cap_rejects * sizeof *s->rejects);
        if (!s->rejects) K22_FATAL("out of memory for %zu rejects", s->cap_rejects);
    }
    s->rejects[s->nrejects++] = *r;
    memset(r, 0, sizeof *r);
}

void k22_caption_set_reject(k22_caption_set *s, const char *source, const char *fmt, ...)
{
    char reason[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    k22_caption_reject r = {k22_xstrdup(source), k22_xstrdup(reason)};
    k22_caption_set_push_reject(s, &r);
}

/* ---- the string set ---- */

static uint64_t str_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

void k22_strset_init(k22_strset *s) { memset(s, 0, sizeof *s); }

void k22_strset_free(k22_strset *s)
{
    for (size_t i = 0; i < s->cap; i++) free(s->keys[i]);
    free(s->keys);
    free(s->vals);
    memset(s, 0, sizeof *s);
}

static void strset_grow(k22_strset *s)
{
    k22_strset t = {k22_xcalloc(s->cap ? 2 * s->cap : 64, sizeof(char *)),
                    k22_xcalloc(s->cap ? 2 * s->cap : 64, sizeof(size_t)),
                    s->cap ? 2 * s->cap : 64, s->n};
    for (size_t i = 0; i < s->cap; i++) {
        if (!s->keys[i]) continue;
        size_t j = str_hash(s->keys[i]) & (t.cap - 1);
        while (t.keys[j]) j = (j + 1) & (t.cap - 1);
        t.keys[j] = s->keys[i];
        t.vals[j] = s->vals[i];
    }
    free(s->keys);
    free(s->vals);
    *s = t;
}

int k22_strset_add(k22_strset *s, const char *key, size_t val, size_t *first)
{
    if (2 * (s->n + 1) > s->cap) strset_grow(s);
    size_t j = str_hash(key) & (s->cap - 1);
    while (s->keys[j]) {
        if (!strcmp(s->keys[j], key)) {
            if (first) *first = s->vals[j];
            return 0;
        }
        j = (j + 1) & (s->cap - 1);
    }
    s->keys[j] = k22_xstrdup(key);
    s->vals[j] = val;
    s->n++;
    return 1;
}

/* ---- caption checks ---- */

int k22_utf8_valid(const uint8_t *b, size_t len, size_t *bad)
{
    size_t i = 0;
    while (i < len) {
        uint8_t c = b[i];
        size_t n;
        uint32_t cp, min;
        if (c < 0x80) { i++; continue; }
        if ((c & 0xe0) == 0xc0) n = 2, cp = c & 0x1f, min = 0x80;
        else if ((c & 0xf0) == 0xe0) n = 3, cp = c & 0x0f, min = 0x800;
        else if ((c & 0xf8) == 0xf0) n = 4, cp = c & 0x07, min = 0x10000;
        else goto fail;
        if (len - i < n) goto fail;
        for (size_t k = 1; k < n; k++) {
            if ((b[i + k] & 0xc0) != 0x80) goto fail;
            cp = (cp << 6) | (b[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) goto fail;
        i += n;
    }
    return 1;
fail:
    if (bad) *bad = i;
    return 0;
}

int k22_caption_check(const char *s, size_t len, size_t max_bytes, char *why, size_t n)
{
    size_t bad;
    if (len > max_bytes) {
        snprintf(why, n, "caption is %zu bytes, over the %zu-byte cap", len, max_bytes);
        return 0;
    }
    if (!k22_utf8_valid((const uint8_t *)s, len, &bad)) {
        snprintf(why, n, "caption is not valid UTF-8 (bad byte 0x%02x at offset %zu)",
                 (uint8_t)s[bad], bad);
        return 0;
    }
    if (memchr(s, '\0', len)) {
        snprintf(why, n, "caption contains a NUL byte");
        return 0;
    }
    const char *t = s;
    size_t tl = len;
    k22_trim(&t, &tl);
    if (tl == 0) {
        snprintf(why, n, len ? "caption is only whitespace" : "caption is empty");
        return 0;
    }
    return 1;
}

/* ---- metadata.jsonl ---- */

/* Captions of one row: a string or a non-empty list of strings. Returns 1 and fills r, or 0
 * with why. */
static int jsonl_captions(const json_t *v, const k22_captions_opts *o, k22_caption_rec *r,
                          char *why, size_t n)
{
    const char *col = o->caption_column;
    if (!v) return snprintf(why, n, "no '%s' key", col), 0;
    size_t cnt = json_is_array(v) ? json_array_size(v) : 1;
    if (json_is_array(v) && (cnt == 0 || cnt > K22_CAPTION_MAX_LIST))
        return snprintf(why, n, "'%s' is a list of %zu captions (want 1..%d)", col, cnt,
                        K22_CAPTION_MAX_LIST), 0;
    r->captions = k22_xcalloc(cnt, sizeof(char *));
    for (size_t i = 0; i < cnt; i++) {
        const json_t *e = json_is_array(v) ? json_array_get(v, i) : v;
        if (!json_is_string(e)) {
            char at[32] = "";
            if (json_is_array(v)) snprintf(at, sizeof at, "[%zu]", i);
            return snprintf(why, n, "'%s'%s is %s, not a string", col, at,
                            json_is_null(e) ? "null" : json_is_number(e) ? "a number" : "not text"), 0;
        }
        const char *s = json_string_value(e);
        size_t len = json_string_length(e);
        char w[256];
        if (!k22_caption_check(s, len, o->max_caption_bytes, w, sizeof w)) {
            if (json_is_array(v)) return snprintf(why, n, "'%s'[%zu]: %s", col, i, w), 0;
            return snprintf(why, n, "%s", w), 0;
        }
        r->captions[i] = k22_strndup0(s, len);
        r->ncaptions = (int)i + 1;
    }
    return 1;
}

/* One JSON line into a record or a reject. */
static void jsonl_line(const char *line, size_t len, const char *src, const k22_captions_opts *o,
                       k22_caption_set *s)
{
    char why[512];
    size_t bad;
    json_error_t je;
    json_t *v = NULL;
    k22_caption_rec r = {0};
    if (len > K22_METADATA_MAX_LINE) {
        snprintf(why, sizeof why, "line is %zu bytes, over the %zu-byte cap", len, K22_METADATA_MAX_LINE);
        goto reject;
    }
    if (!k22_utf8_valid((const uint8_t *)line, len, &bad)) {
        snprintf(why, sizeof why, "not valid UTF-8 (bad byte 0x%02x at column %zu)", (uint8_t)line[bad], bad + 1);
        goto reject;
    }
    v = json_loadb(line, len, JSON_REJECT_DUPLICATES, &je);
    if (!v) {
        snprintf(why, sizeof why, "malformed JSON at column %d: %s", je.column, je.text);
        goto reject;
    }
    if (!json_is_object(v)) {
        snprintf(why, sizeof why, "line is not a JSON object");
        goto reject;
    }
    const json_t *fn = json_object_get(v, o->image_column);
    if (!json_is_string(fn) || json_string_length(fn) == 0 ||
        strlen(json_string_value(fn)) != json_string_length(fn)) {
        snprintf(why, sizeof why, fn ? "'%s' is not a non-empty string" : "no '%s' key", o->image_column);
        goto reject;
    }
    if (!jsonl_captions(json_object_get(v, o->caption_column), o, &r, why, sizeof why)) goto reject;
    r.name = k22_xstrdup(json_string_value(fn));
    r.source = k22_xstrdup(src);
    k22_caption_set_push(s, &r);
    json_decref(v);
    return;
reject:
    k22_caption_rec_free(&r);
    json_decref(v);
    k22_caption_set_reject(s, src, "%s", why);
}

k22_status k22_captions_parse_jsonl(const char *buf, size_t len, const char *name,
                                    const k22_captions_opts *o, k22_caption_set *s, k22_err *err)
{
    k22_captions_opts def;
    if (!o) k22_captions_opts_default(&def), o = &def;
    if (len > K22_METADATA_MAX_BYTES)
        return k22_err_set(err, K22_ERR_NOMEM, "%s: %zu bytes, over the %zu-byte cap", name, len,
                           K22_METADATA_MAX_BYTES);
    if (len >= 3 && !memcmp(buf, "\xef\xbb\xbf", 3)) buf += 3, len -= 3;
    size_t pos = 0, lineno = 0;
    while (pos < len) {
        const char *nl = memchr(buf + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - buf) : len;
        const char *line = buf + pos;
        size_t ll = end - pos;
        lineno++;
        pos = nl ? end + 1 : len;
        if (ll && line[ll - 1] == '\r') ll--;
        const char *t = line;
        size_t tl = ll;
        k22_trim(&t, &tl);
        if (tl == 0) continue; /* blank lines carry nothing */
        char src[4096 + 32];
        snprintf(src, sizeof src, "%s:%zu", name, lineno);
        jsonl_line(line, ll, src, o, s);
    }
    return K22_OK;
}

/* ---- checking metadata rows against the folder ---- */

/* Normalises a relative file name in place ("./a//b.jpg" -> "a/b.jpg"); returns NULL when fine
 * or why it is refused. */
static const char *name_normalise(char *p)
{
    if (p[0] == '/') return "is an absolute path";
    if (strchr(p, '\\')) return "contains a backslash";
    char *w = p;
    const char *r = p;
    while (*r) {
        const char *e = strchr(r, '/');
        size_t n = e ? (size_t)(e - r) : strlen(r);
        if (n == 2 && r[0] == '.' && r[1] == '.') return "has a '..' part (it would leave the folder)";
        if (n && !(n == 1 && r[0] == '.')) {
            if (w != p) *w++ = '/';
            memmove(w, r, n);
            w += n;
        }
        r += n;
        if (*r == '/') r++;
    }
    *w = '\0';
    return w == p ? "names the folder itself" : NULL;
}

/* Keeps the records of s whose names are safe, unique and regular files under dir; the others
 * become rejects (in row order). Sets each kept record's file. */
static void resolve_rows(const char *dir, k22_caption_set *s)
{
    k22_strset seen;
    k22_strset_init(&seen);
    char **why = k22_xcalloc(s->nrecs ? s->nrecs : 1, sizeof(char *));
    /* pass 1: names and duplicates, while every record is still at its row's index */
    for (size_t i = 0; i < s->nrecs; i++) {
        k22_caption_rec *r = &s->recs[i];
        size_t first = 0;
        char path[4096];
        const char *bad = name_normalise(r->name);
        if (bad)
            why[i] = k22_strfmt("file_name '%s' %s", r->name, bad);
        else if (!k22_strset_add(&seen, r->name, i, &first))
            why[i] = k22_strfmt("duplicate file_name '%s' (first at %s)", r->name, s->recs[first].source);
        else if (snprintf(path, sizeof path, "%s/%s", dir, r->name) >= (int)sizeof path)
            why[i] = k22_strfmt("file_name '%s': path too long", r->name);
        else if (!k22_fs_is_file(path))
            why[i] = k22_strfmt("file_name '%s': %s", r->name,
                                k22_fs_exists(path) ? "not a regular file" : "no such file");
        else
            r->file = k22_xstrdup(path);
    }
    /* pass 2: rejects out, kept records packed to the front */
    size_t keep = 0;
    for (size_t i = 0; i < s->nrecs; i++) {
        if (why[i]) {
            k22_caption_set_reject(s, s->recs[i].source, "%s", why[i]);
            free(why[i]);
            k22_caption_rec_free(&s->recs[i]);
            continue;
        }
        if (keep != i) {
            s->recs[keep] = s->recs[i];
            memset(&s->recs[i], 0, sizeof s->recs[i]);
        }
        keep++;
    }
    s->nrecs = keep;
    free(why);
    k22_strset_free(&seen);
}

static k22_status read_metadata(const char *dir, const char *path, int csv,
                                const k22_captions_opts *o, k22_caption_set *s, k22_err *err)
{
    char *buf = NULL;
    size_t len = 0;
    k22_caption_set rows;
    k22_caption_set_init(&rows);
    k22_status st = k22_fs_read_all(path, K22_METADATA_MAX_BYTES, &buf, &len, err);
    if (!st) st = csv ? k22_captions_parse_csv(buf, len, path, o, &rows, err)
                      : k22_captions_parse_jsonl(buf, len, path, o, &rows, err);
    free(buf);
    if (!st) resolve_rows(dir, &rows);
    if (!st) {
        for (size_t i = 0; i < rows.nrecs; i++) k22_caption_set_push(s, &rows.recs[i]);
        for (size_t i = 0; i < rows.nrejects; i++) k22_caption_set_push_reject(s, &rows.rejects[i]);
        rows.nrecs = rows.nrejects = 0;
    }
    k22_caption_set_free(&rows);
    return st;
}

k22_status k22_captions_read_dir(const char *dir, const k22_captions_opts *o, k22_caption_set *s,
                                 k22_err *err)
{
    k22_captions_opts def;
    if (!o) k22_captions_opts_default(&def), o = &def;
    if (!k22_fs_is_dir(dir)) return k22_err_set(err, K22_ERR_IO, "%s: not a folder", dir);
    char path[4096];
    k22_status st = k22_fs_join(path, sizeof path, dir, "metadata.jsonl", err);
    if (st) return st;
    if (k22_fs_exists(path)) return read_metadata(dir, path, 0, o, s, err);
    st = k22_fs_join(path, sizeof path, dir, "metadata.csv", err);
    if (st) return st;
    if (k22_fs_exists(path)) return read_metadata(dir, path, 1, o, s, err);
    return k22_captions_read_sidecar(dir, o, s, err);
}
