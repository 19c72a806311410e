/* json.c: typed getters over jansson whose errors name file and key, a size-capped loader, and
 * a writer that reproduces Python's json.dumps(indent=2, sort_keys=True) byte for byte. */
#include "k22/json.h"
#include "k22/fsutil.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---------------------------------------------------------------- loading */

k22_status k22_json_load_buf(const char *buf, size_t len, const char *name, json_t **out,
                             k22_err *err)
{
    *out = NULL;
    json_error_t je;
    json_t *v = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
    if (!v)
        return k22_err_set(err, K22_ERR_FORMAT, "%s: invalid JSON at line %d column %d (byte %d): %s",
                           name, je.line, je.column, je.position, je.text);
    *out = v;
    return K22_OK;
}

k22_status k22_json_load_object(const char *buf, size_t len, const char *name, json_t **out,
                                k22_err *err)
{
    k22_status st = k22_json_load_buf(buf, len, name, out, err);
    if (st != K22_OK) return st;
    if (!json_is_object(*out)) {
        st = k22_err_set(err, K22_ERR_FORMAT, "%s: expected a JSON object at the top level, found %s",
                         name, k22_json_type_name(*out));
        json_decref(*out);
        *out = NULL;
    }
    return st;
}

k22_status k22_json_load_file(const char *path, size_t max_bytes, json_t **out, k22_err *err)
{
    *out = NULL;
    char *buf = NULL;
    size_t n = 0;
    k22_status st = k22_fs_read_all(path, max_bytes, &buf, &n, err);
    if (st == K22_OK) st = k22_json_load_buf(buf, n, path, out, err);
    free(buf);
    return st;
}

k22_status k22_json_load_object_file(const char *path, size_t max_bytes, json_t **out,
                                     k22_err *err)
{
    k22_status st = k22_json_load_file(path, max_bytes, out, err);
    if (st == K22_OK && !json_is_object(*out)) {
        st = k22_err_set(err, K22_ERR_FORMAT, "%s: expected a JSON object at the top level, found %s",
                         path, k22_json_type_name(*out));
        json_decref(*out);
        *out = NULL;
    }
    return st;
}

/* ---------------------------------------------------------------- messages */

const char *k22_json_type_name(const json_t *v)
{
    if (!v) return "nothing";
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a real number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "an unknown value";
}

void k22_json_value_text(const json_t *v, char *buf, size_t n)
{
    if (n == 0) return;
    buf[0] = '\0';
    if (!v) return;
    char *s = k22_json_dumps(v, K22_JSON_COMPACT);
    size_t len = strlen(s);
    if (len < n) {
        memcpy(buf, s, len + 1);
    } else if (n > 4) {
        memcpy(buf, s, n - 4);
        memcpy(buf + n - 4, "...", 4);
    } else {
        buf[0] = '\0';
    }
    free(s);
}

static k22_status type_error(k22_err *err, const char *file, const char *key, const char *want,
                             const json_t *v)
{
    return k22_err_set(err, K22_ERR_FORMAT, "%s: key '%s': expected %s, found %s", file, key, want,
                       k22_json_type_name(v));
}

static k22_status missing(k22_err *err, const char *file, const char *key)
{
    return k22_err_set(err, K22_ERR_KEY, "%s: missing key '%s'", file, key);
}

/* ---------------------------------------------------------------- scalar getters */

/* Checks one value as an integer in [lo, hi]; key is the full path for messages. */
static k22_status value_i64(const json_t *v, const char *file, const char *key, int64_t lo,
                            int64_t hi, int64_t *out, k22_err *err)
{
    if (!json_is_integer(v)) return type_error(err, file, key, "an integer", v);
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi)
        return k22_err_set(err, K22_ERR_FORMAT, "%s: key '%s' = %lld is out of range [%lld, %lld]",
                           file, key, (long long)x, (long long)lo, (long long)hi);
    *out = (int64_t)x;
    return K22_OK;
}

k22_status k22_json_get_i64(const json_t *obj, const char *file, const char *key, int64_t lo,
                            int64_t hi, int64_t *out, k22_err *err)
{
    const json_t *v = json_object_get(obj, key);
    if (!v) return missing(err, file, key);
    return value_i64(v, file, key, lo, hi, out, err);
}

k22_status k22_json_opt_i64(const json_t *obj, const char *file, const char *key, int64_t lo,
                            int64_t hi, int64_t def, int64_t *out, k22_err *err)
{
    if (!json_object_get(obj, key)) {
        *out = def;
        return K22_OK;
    }
    return k22_json_get_i64(obj, file, key, lo, hi, out, err);
}

k22_status k22_json_get_int(const json_t *obj, const char *file, const char *key, int lo, int hi,
                            int *out, k22_err *err)
{
    int64_t x = 0;
    k22_status st = k22_json_get_i64(obj, file, key, lo, hi, &x, err);
    if (st == K22_OK) *out = (int)x;
    return st;
}

k22_status k22_json_opt_int(const json_t *obj, const char *file, const char *key, int lo, int hi,
                            int def, int *out, k22_err *err)
{
    if (!json_object_get(obj, key)) {
        *out = def;
        return K22_OK;
    }
    return k22_json_get_int(obj, file, key, lo, hi, out, err);
}

k22_status k22_json_get_float(const json_t *obj, const char *file, const char *key, double *out,
                              k22_err *err)
{
    const json_t *v = json_object_get(obj, key);
    if (!v) return missing(err, file, key);
    if (!json_is_number(v)) return type_error(err, file, key, "a number", v);
    *out = json_number_value(v);
    return K22_OK;
}

k22_status k22_json_opt_float(const json_t *obj, const char *file, const char *key, double def,
                              double *out, k22_err *err)
{
    if (!json_object_get(obj, key)) {
        *out = def;
        return K22_OK;
    }
    return k22_json_get_float(obj, file, key, out, err);
}

k22_status k22_json_get_bool(const json_t *obj, const char *file, const char *key, int *out,
                             k22_err *err)
{
    const json_t *v = json_object_get(obj, key);
    if (!v) return missing(err, file, key);
    if (!json_is_boolean(v)) return type_error(err, file, key, "a boolean", v);
    *out = json_is_true(v) ? 1 : 0;
    return K22_OK;
}

k22_status k22_json_opt_bool(const json_t *obj, const char *file, const char *key, int def,
                             int *out, k22_err *err)
{
    if (!json_object_get(obj, key)) {
        *out = def;
        return K22_OK;
    }
    return k22_json_get_bool(obj, file, key, out, err);
}

/* Checks one value as a string without embedded NUL bytes. */
static k22_status value_str(const json_t *v, const char *file, const char *key, const char **out,
                            k22_err *err)
{
    if (!json_is_string(v)) return type_error(err, file, key, "a string", v);
    const char *s = json_string_value(v);
    if (strlen(s) != json_string_length(v))
        return k22_err_set(err, K22_ERR_FORMAT, "%s: key '%s': string contains a NUL character",
                           file, key);
    *out = s;
    return K22_OK;
}

k22_status k22_json_get_str(const json_t *obj, const char *file, const char *key,
                            const char **out, k22_err *err)
{
    const json_t *v = json_object_get(obj, key);
    if (!v) return missing(err, file, key);
    return value_str(v, file, key, out, err);
}

k22_status k22_json_opt_str(const json_t *obj, const char *file, const char *key,
                            const char *def, const char **out, k22_err *err)
{
    if (!json_object_get(obj, key)) {
        *out = def;
        return K22_OK;
    }
    return k22_json_get_str(obj, file, key, out, err);
}

static k22_status copy_str(const char *s, const char *file, const char *key, char *buf,
                           size_t cap, k22_err *err)
{
    size_t len = strlen(s);
    if (len >= cap)
        return k22_err_set(err, K22_ERR_FORMAT, "%s: key '%s': string of %zu bytes is longer than the %zu allowed",
                           file, key, len, cap ? cap - 1 : 0);
    memcpy(buf, s, len + 1);
    return K22_OK;
}

k22_status k22_json_get_strbuf(const json_t *obj, const char *file, const char *key, char *buf,
                               size_t cap, k22_err *err)
{
    const char *s = NULL;
    k22_status st = k22_json_get_str(obj, file, key, &s, err);
    if (st != K22_OK) return st;
    return copy_str(s, file, key, buf, cap, err);
}

/* ---------------------------------------------------------------- arrays */

static k22_status get_array(const json_t *obj, const char *file, const char *key, int min_len,
                            int max_len, const json_t **arr, k22_err *err)
{
    const json_t *v = json_object_get(obj, key);
    if (!v) return missing(err, file, key);
    if (!json_is_array(v)) return type_error(err, file, key, "an array", v);
    size_t n = json_array_size(v);
    if (n < (size_t)min_len || n > (size_t)max_len)
        return k22_err_set(err, K22_ERR_FORMAT, "%s: key '%s': array has %zu elements, expected %d to %d",
                           file, key, n, min_len, max_len);
    *arr = v;
    return K22_OK;
}

k22_status k22_json_get_int_array(const json_t *obj, const char *file, const char *key,
                                  int min_len, int max_len, int lo, int hi, int *out, int *len,
                                  k22_err *err)
{
    const json_t *arr = NULL;
    k22_status st = get_array(obj, file, key, min_len, max_len, &arr, err);
    if (st != K22_OK) return st;
    for (size_t i = 0; i < json_array_size(arr); i++) {
        char path[256];
        snprintf(path, sizeof path, "%s[%zu]", key, i);
        int64_t x = 0;
        st = value_i64(json_array_get(arr, i), file, path, lo, hi, &x, err);
        if (st != K22_OK) return st;
        out[i] = (int)x;
    }
    *len = (int)json_array_size(arr);
    return K22_OK;
}

k22_status k22_json_get_str_array(const json_t *obj, const char *file, const char *key,
                                  int min_len, int max_len, char *out, size_t elem_cap, int *len,
                                  k22_err *err)
{
    const json_t *arr = NULL;
    k22_status st = get_array(obj, file, key, min_len, max_len, &arr, err);
    if (st != K22_OK) return st;
    for (size_t i = 0; i < json_array_size(arr); i++) {
        char path[256];
        snprintf(path, sizeof path, "%s[%zu]", key, i);
        const char *s = NULL;
        st = value_str(json_array_get(arr, i), file, path, &s, err);
        if (st == K22_OK) st = copy_str(s, file, path, out + i * elem_cap, elem_cap, err);
        if (st != K22_OK) return st;
    }
    *len = (int)json_array_size(arr);
    return K22_OK;
}

/* ---------------------------------------------------------------- key sets */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

k22_status k22_json_check_keys(const json_t *obj, const char *file, const char *const *allowed,
                               size_t n, k22_err *err)
{
    const char *worst = NULL;
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)obj, key, v) {
        int found = 0;
        for (size_t i = 0; i < n && !found; i++) found = strcmp(allowed[i], key) == 0;
        if (!found && (!worst || strcmp(key, worst) < 0)) worst = key;
    }
    if (worst) return k22_err_set(err, K22_ERR_KEY, "%s: unknown key '%s'", file, worst);
    return K22_OK;
}

/* ---------------------------------------------------------------- writing */

/* Python's float repr from the shortest round-tripping digits: fixed notation when the decimal
 * exponent is in [-4, 16), else d.ddde+XX with at least two exponent digits. */
void k22_json_format_real(double v, int flags, char *buf, size_t n)
{
    if (isnan(v)) {
        snprintf(buf, n, "NaN");
        return;
    }
    if (isinf(v)) {
        snprintf(buf, n, v < 0 ? "-Infinity" : "Infinity");
        return;
    }
    const char *sign = signbit(v) ? "-" : "";
    double a = fabs(v);
    if (a == 0.0) {
        snprintf(buf, n, "%s0.0", sign);
        return;
    }
    char e[64];
    int maxp = (flags & K22_JSON_F32) ? 9 : 17;
    for (int p = 1; p <= maxp; p++) {
        snprintf(e, sizeof e, "%.*e", p - 1, a);
        int same = (flags & K22_JSON_F32) ? strtof(e, NULL) == (float)a : strtod(e, NULL) == a;
        if (same) break;
    }
    /* e = "d.ddde[+-]XX": collect the digits, drop trailing zeros, read the exponent. */
    char digits[32];
    int nd = 0;
    const char *p = e;
    for (; *p && *p != 'e'; p++)
        if (*p >= '0' && *p <= '9' && nd < 30) digits[nd++] = *p;
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    digits[nd] = '\0';
    int exp10 = (*p == 'e') ? atoi(p + 1) : 0;
    int decpt = exp10 + 1; /* value = 0.digits * 10^decpt */
    if (decpt > -4 && decpt <= 16) {
        char fx[64];
        size_t k = 0;
        if (decpt <= 0) {
            fx[k++] = '0';
            fx[k++] = '.';
            for (int i = 0; i < -decpt; i++) fx[k++] = '0';
            for (int i = 0; i < nd; i++) fx[k++] = digits[i];
        } else {
            for (int i = 0; i < decpt; i++) fx[k++] = i < nd ? digits[i] : '0';
            fx[k++] = '.';
            if (decpt >= nd) fx[k++] = '0';
            for (int i = decpt; i < nd; i++) fx[k++] = digits[i];
        }
        fx[k] = '\0';
        snprintf(buf, n, "%s%s", sign, fx);
    } else {
        snprintf(buf, n, "%s%c%s%.*s%s%c%02d", sign, digits[0], nd > 1 ? "." : "", nd - 1,
                 digits + 1, "e", exp10 < 0 ? '-' : '+', exp10 < 0 ? -exp10 : exp10);
    }
}

typedef struct {
    char *p;
    size_t len, cap;
} strbuf;

static void sb_put(strbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (b->len + n + 1 > cap) cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q) K22_FATAL("out of memory growing a JSON text to %zu bytes", cap);
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_puts(strbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_indent(strbuf *b, int depth, int flags)
{
    if (flags & K22_JSON_COMPACT) return;
    sb_puts(b, "\n");
    for (int i = 0; i < depth; i++) sb_puts(b, "  ");
}

/* Decodes one UTF-8 sequence (jansson guarantees valid UTF-8); returns bytes used. */
static int utf8_next(const unsigned char *s, size_t n, uint32_t *cp)
{
    unsigned c = s[0];
    int len = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    if ((size_t)len > n) len = 1;
    uint32_t v = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
    for (int i = 1; i < len; i++) v = (v << 6) | (s[i] & 0x3F);
    *cp = v;
    return len;
}

/* Python's ensure_ascii string encoding. */
static void sb_string(strbuf *b, const char *s, size_t n)
{
    sb_puts(b, "\"");
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        int used = utf8_next(u + i, n - i, &cp);
        i += (size_t)used;
        char tmp[16];
        switch (cp) {
        case '"': sb_puts(b, "\\\""); continue;
        case '\\': sb_puts(b, "\\\\"); continue;
        case '\n': sb_puts(b, "\\n"); continue;
        case '\r': sb_puts(b, "\\r"); continue;
        case '\t': sb_puts(b, "\\t"); continue;
        case '\b': sb_puts(b, "\\b"); continue;
        case '\f': sb_puts(b, "\\f"); continue;
        default: break;
        }
        if (cp >= 0x20 && cp < 0x7F) {
            tmp[0] = (char)cp;
            sb_put(b, tmp, 1);
        } else if (cp < 0x10000) {
            snprintf(tmp, sizeof tmp, "\\u%04x", (unsigned)cp);
            sb_puts(b, tmp);
        } else {
            uint32_t c = cp - 0x10000;
            snprintf(tmp, sizeof tmp, "\\u%04x\\u%04x", (unsigned)(0xD800 + (c >> 10)),
                     (unsigned)(0xDC00 + (c & 0x3FF)));
            sb_puts(b, tmp);
        }
    }
    sb_puts(b, "\"");
}

static void sb_value(strbuf *b, const json_t *v, int flags, int depth);

static void sb_object(strbuf *b, const json_t *v, int flags, int depth)
{
    size_t n = json_object_size(v);
    if (n == 0) {
        sb_puts(b, "{}");
        return;
    }
    const char **keys = k22_xmalloc(n * sizeof *keys);
    size_t k = 0;
    const char *key;
    json_t *x;
    json_object_foreach((json_t *)v, key, x) keys[k++] = key;
    qsort(keys, n, sizeof *keys, cmp_str);
    sb_puts(b, "{");
    for (size_t i = 0; i < n; i++) {
        sb_indent(b, depth + 1, flags);
        sb_string(b, keys[i], strlen(keys[i]));
        sb_puts(b, (flags & K22_JSON_COMPACT) ? ":" : ": ");
        sb_value(b, json_object_get(v, keys[i]), flags, depth + 1);
        if (i + 1 < n) sb_puts(b, ",");
    }
    sb_indent(b, depth, flags);
    sb_puts(b, "}");
    free(keys);
}

static void sb_value(strbuf *b, const json_t *v, int flags, int depth)
{
    char tmp[48];
    switch (json_typeof(v)) {
    case JSON_OBJECT: sb_object(b, v, flags, depth); return;
    case JSON_ARRAY:
        if (json_array_size(v) == 0) {
            sb_puts(b, "[]");
            return;
        }
        sb_puts(b, "[");
        for (size_t i = 0; i < json_array_size(v); i++) {
            sb_indent(b, depth + 1, flags);
            sb_value(b, json_array_get(v, i), flags, depth + 1);
            if (i + 1 < json_array_size(v)) sb_puts(b, ",");
        }
        sb_indent(b, depth, flags);
        sb_puts(b, "]");
        return;
    case JSON_STRING: sb_string(b, json_string_value(v), json_string_length(v)); return;
    case JSON_INTEGER:
        snprintf(tmp, sizeof tmp, "%lld", (long long)json_integer_value(v));
        sb_puts(b, tmp);
        return;
    case JSON_REAL:
        k22_json_format_real(json_real_value(v), flags, tmp, sizeof tmp);
        sb_puts(b, tmp);
        return;
    case JSON_TRUE: sb_puts(b, "true"); return;
    case JSON_FALSE: sb_puts(b, "false"); return;
    case JSON_NULL: sb_puts(b, "null"); return;
    }
}

char *k22_json_dumps(const json_t *v, int flags)
{
    strbuf b = {0};
    sb_value(&b, v, flags, 0);
    sb_puts(&b, (flags & K22_JSON_COMPACT) ? "" : "\n");
    return b.p;
}

k22_status k22_json_write_file(const char *path, const json_t *v, int flags, k22_err *err)
{
    char *s = k22_json_dumps(v, flags);
    size_t n = strlen(s);
    k22_status st = K22_OK;
    FILE *f = fopen(path, "wb");
    if (!f) {
        st = k22_err_set(err, K22_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
        goto out;
    }
    if (fwrite(s, 1, n, f) != n) st = k22_err_set(err, K22_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    if (fclose(f) != 0 && st == K22_OK)
        st = k22_err_set(err, K22_ERR_IO, "%s: close failed: %s", path, strerror(errno));
out:
    free(s);
    return st;
}
