/* config_table.c: the table walker behind every config reader and writer (see config_table.h). */
#include "config_table.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

k22_status ct_load(const char *json, size_t len, const char *name, json_t **out, k22_err *err)
{
    if (len > K22_JSON_MAX_CONFIG_BYTES)
        return k22_err_set(err, K22_ERR_NOMEM, "%s: %zu bytes, more than the %u allowed for a config",
                           name, len, K22_JSON_MAX_CONFIG_BYTES);
    return k22_json_load_object(json, len, name, out, err);
}

/* A table's JSON text (a default or an allowed value); a bad text is a table bug. */
static json_t *ct_text(const char *text)
{
    json_t *v = json_loads(text, JSON_DECODE_ANY, NULL);
    if (!v) K22_FATAL("config table: bad JSON text %s", text);
    return v;
}

k22_status ct_unsupported(k22_err *err, const char *file, const char *key, const json_t *value,
                          const char *allowed)
{
    char val[160];
    k22_json_value_text(value, val, sizeof val);
    return k22_err_set(err, K22_ERR_UNSUPPORTED, "%s: key '%s' = %s is not implemented by k22 (only %s)",
                       file, key, val, allowed);
}

/* The allowed values for a message: JSON texts as they are, strings quoted. */
static void ct_allowed(const ct_field *f, char *buf, size_t n)
{
    size_t k = 0;
    buf[0] = '\0';
    for (int i = 0; f->choices && f->choices[i] && k + 1 < n; i++) {
        int w = snprintf(buf + k, n - k, f->type == CT_FIXED ? "%s%s" : "%s\"%s\"",
                         i ? (f->choices[i + 1] ? ", " : " or ") : "", f->choices[i]);
        if (w < 0) break;
        k += (size_t)w;
    }
}

/* Rewords an error about a default value: the user never wrote it, so say it is missing. */
static k22_status ct_missing_default(k22_err *err, const char *file, const ct_field *f)
{
    char allowed[400];
    ct_allowed(f, allowed, sizeof allowed);
    return k22_err_set(err, K22_ERR_UNSUPPORTED,
                       "%s: key '%s' is missing and its default %s is not implemented by k22 (only %s)",
                       file, f->key, f->def, allowed);
}

static int ct_choice(const ct_field *f, const char *s)
{
    for (int i = 0; f->choices[i]; i++)
        if (strcmp(f->choices[i], s) == 0) return i;
    return -1;
}

static int ct_same(const json_t *a, const json_t *b)
{
    if (json_is_number(a) && json_is_number(b)) return json_number_value(a) == json_number_value(b);
    return json_equal((json_t *)a, (json_t *)b);
}

static k22_status ct_fixed(const json_t *v, const char *file, const ct_field *f, k22_err *err)
{
    for (int i = 0; f->choices[i]; i++) {
        json_t *ok = ct_text(f->choices[i]);
        int same = ct_same(v, ok);
        json_decref(ok);
        if (same) return K22_OK;
    }
    char allowed[400];
    ct_allowed(f, allowed, sizeof allowed);
    return ct_unsupported(err, file, f->key, v, allowed);
}

static k22_status ct_string(const json_t *holder, const char *file, const ct_field *f,
                            char *base, k22_err *err)
{
    const char *s = NULL;
    k22_status st = k22_json_get_str(holder, file, f->key, &s, err);
    if (st != K22_OK) return st;
    int idx = f->choices ? ct_choice(f, s) : 0;
    if (idx < 0) {
        char allowed[400];
        ct_allowed(f, allowed, sizeof allowed);
        return ct_unsupported(err, file, f->key, json_object_get(holder, f->key), allowed);
    }
    if (f->type == CT_ENUM) {
        *(int *)(base + f->off) = idx;
        return K22_OK;
    }
    return k22_json_get_strbuf(holder, file, f->key, base + f->off, (size_t)f->size, err);
}

static k22_status ct_strings(const json_t *holder, const char *file, const ct_field *f,
                             char *base, k22_err *err)
{
    char *arr = base + f->off;
    int *count = (int *)(base + f->off2);
    k22_status st = k22_json_get_str_array(holder, file, f->key, 1, f->size, arr, CT_STR_ELEM,
                                           count, err);
    if (st != K22_OK) return st;
    for (int i = 0; i < *count; i++) {
        if (ct_choice(f, arr + i * CT_STR_ELEM) >= 0) continue;
        char key[96], allowed[400];
        snprintf(key, sizeof key, "%s[%d]", f->key, i);
        ct_allowed(f, allowed, sizeof allowed);
        return ct_unsupported(err, file, key, json_array_get(json_object_get(holder, f->key), (size_t)i),
                              allowed);
    }
    return K22_OK;
}

static k22_status ct_real(const json_t *holder, const char *file, const ct_field *f, char *base,
                          k22_err *err)
{
    double x = 0;
    k22_status st = k22_json_get_float(holder, file, f->key, &x, err);
    if (st != K22_OK) return st;
    if (!isfinite(x) || fabs(x) > FLT_MAX)
        return k22_err_set(err, K22_ERR_FORMAT, "%s: key '%s' = %g does not fit a 32-bit float",
                           file, f->key, x);
    *(float *)(base + f->off) = (float)x;
    return K22_OK;
}

/* Reads one field from holder (the config object, or a one-key object holding the default). */
static k22_status ct_one(const json_t *holder, const char *file, const ct_field *f, char *base,
                         k22_err *err)
{
    const json_t *v = json_object_get(holder, f->key);
    switch (f->type) {
    case CT_INT:
        if ((f->flags & CT_NULLABLE) && json_is_null(v)) {
            *(int *)(base + f->off) = 0;
            return K22_OK;
        }
        return k22_json_get_int(holder, file, f->key, f->lo, f->hi, (int *)(base + f->off), err);
    case CT_REAL: return ct_real(holder, file, f, base, err);
    case CT_BOOL: return k22_json_get_bool(holder, file, f->key, (int *)(base + f->off), err);
    case CT_STR:
    case CT_ENUM: return ct_string(holder, file, f, base, err);
    case CT_INTS:
        return k22_json_get_int_array(holder, file, f->key, 1, f->size, f->lo, f->hi,
                                      (int *)(base + f->off), (int *)(base + f->off2), err);
    case CT_STRS: return ct_strings(holder, file, f, base, err);
    case CT_FIXED: return ct_fixed(v, file, f, err);
    case CT_ANY: return K22_OK;
    }
    return K22_ERR_INTERNAL;
}

k22_status ct_parse(const json_t *obj, const char *file, const ct_field *t, size_t n, void *base,
                    k22_err *err)
{
    const char *keys[160] = {0};
    K22_REQUIRE(n <= sizeof keys / sizeof keys[0]);
    for (size_t i = 0; i < n; i++) keys[i] = t[i].key;
    k22_status st = k22_json_check_keys(obj, file, keys, n, err);
    for (size_t i = 0; i < n && st == K22_OK; i++) {
        const ct_field *f = &t[i];
        if (json_object_get(obj, f->key)) {
            st = ct_one(obj, file, f, base, err);
            continue;
        }
        if (!f->def) {
            st = k22_err_set(err, K22_ERR_KEY, "%s: missing key '%s'", file, f->key);
            continue;
        }
        json_t *holder = json_object();
        json_object_set_new(holder, f->key, ct_text(f->def));
        st = ct_one(holder, file, f, base, err);
        json_decref(holder);
        if (st == K22_ERR_UNSUPPORTED) st = ct_missing_default(err, file, f);
    }
    return st;
}

static json_t *ct_value(const ct_field *f, const char *base)
{
    switch (f->type) {
    case CT_INT: {
        int x = *(const int *)(base + f->off);
        return ((f->flags & CT_NULLABLE) && x == 0) ? json_null() : json_integer(x);
    }
    case CT_REAL: {
        float x = *(const float *)(base + f->off);
        if ((f->flags & CT_INTW) && x == floorf(x) && fabsf(x) < 1e9f) return json_integer((json_int_t)x);
        return json_real((double)x);
    }
    case CT_BOOL: return json_boolean(*(const int *)(base + f->off));
    case CT_STR: return json_string(base + f->off);
    case CT_ENUM: return json_string(f->choices[*(const int *)(base + f->off)]);
    case CT_INTS: {
        json_t *a = json_array();
        for (int i = 0; i < *(const int *)(base + f->off2); i++)
            json_array_append_new(a, json_integer(((const int *)(base + f->off))[i]));
        return a;
    }
    case CT_STRS: {
        json_t *a = json_array();
        for (int i = 0; i < *(const int *)(base + f->off2); i++)
            json_array_append_new(a, json_string(base + f->off + (size_t)i * CT_STR_ELEM));
        return a;
    }
    case CT_FIXED: return ct_text(f->choices[0]);
    case CT_ANY: return f->def ? ct_text(f->def) : NULL;
    }
    return NULL;
}

static int ct_count(const char *const *choices)
{
    int n = 0;
    while (choices && choices[n]) n++;
    return n;
}

/* A struct filled by code (not by ct_parse) may hold a value the reader would refuse; writing
 * it would make a file k22 itself cannot read back, so refuse it here. */
static k22_status ct_writable(const ct_field *f, const char *base, k22_err *err)
{
    if (f->type == CT_ENUM) {
        int idx = *(const int *)(base + f->off);
        if (idx < 0 || idx >= ct_count(f->choices))
            return k22_err_set(err, K22_ERR_ARG, "config key '%s': value %d is not one k22 can write",
                               f->key, idx);
    }
    if (f->type == CT_STR && (!memchr(base + f->off, 0, (size_t)f->size) ||
                              (f->choices && ct_choice(f, base + f->off) < 0)))
        return k22_err_set(err, K22_ERR_ARG, "config key '%s': value \"%.40s\" is not implemented by k22",
                           f->key, base + f->off);
    if (f->type == CT_INTS || f->type == CT_STRS) {
        int cnt = *(const int *)(base + f->off2);
        if (cnt < 1 || cnt > f->size)
            return k22_err_set(err, K22_ERR_ARG, "config key '%s': %d entries (1 to %d allowed)",
                               f->key, cnt, f->size);
        for (int i = 0; f->type == CT_STRS && i < cnt; i++) {
            const char *s = base + f->off + (size_t)i * CT_STR_ELEM;
            if (!memchr(s, 0, CT_STR_ELEM) || ct_choice(f, s) < 0)
                return k22_err_set(err, K22_ERR_ARG, "config key '%s[%d]': value is not implemented by k22",
                                   f->key, i);
        }
    }
    return K22_OK;
}

k22_status ct_write(json_t *obj, const ct_field *t, size_t n, const void *base, k22_err *err)
{
    for (size_t i = 0; i < n; i++) {
        if (t[i].flags & CT_NOWRITE) continue;
        k22_status st = ct_writable(&t[i], base, err);
        if (st != K22_OK) return st;
        json_t *v = ct_value(&t[i], base);
        if (v) json_object_set_new(obj, t[i].key, v);
    }
    return K22_OK;
}
