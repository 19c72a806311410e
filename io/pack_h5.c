/* pack_h5.c: the HDF5 training pack (layout and commit protocol in include/k22/pack.h): the
 * row-appending, restartable writer, the checking reader, the compatibility check and the
 * description `k22 inspect` prints. HDF5's own error stack printing is switched off: every
 * failure comes back as a k22_err naming the file and dataset. */
#include "k22/pack.h"

#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define STR_CAP ((size_t)1 << 20)   /* longest caption/source/attribute string read back */
#define CHUNK_TARGET ((size_t)2 << 20) /* bytes per chunk of a row dataset: 1-4 MB reads */
#define CHUNK_MAX_ROWS 4096
#define REJ_CHUNK_ROWS 256
#define MAX_ROWS_LIMIT ((int64_t)1 << 40)

static const char *const field_names[K22_PACK_FIELD_COUNT] = {
    "caption", "source", "input_ids", "attention_mask",
    "text_embeds", "text_hidden", "image_embeds", "latents",
};

const char *k22_pack_field_name(k22_pack_field f)
{
    return (unsigned)f < K22_PACK_FIELD_COUNT ? field_names[f] : "?";
}

const char *k22_pack_for_name(k22_pack_for use)
{
    return use == K22_PACK_FOR_PRIOR ? "prior" : use == K22_PACK_FOR_DECODER ? "decoder"
                                             : use == K22_PACK_FOR_BOTH      ? "both"
                                                                             : "?";
}

int k22_pack_for_parse(const char *s, k22_pack_for *out)
{
    if (!strcmp(s, "prior")) *out = K22_PACK_FOR_PRIOR;
    else if (!strcmp(s, "decoder")) *out = K22_PACK_FOR_DECODER;
    else if (!strcmp(s, "both")) *out = K22_PACK_FOR_BOTH;
    else return -1;
    return 0;
}

int k22_pack_for_has(k22_pack_for use, k22_pack_field f)
{
    switch (f) {
    case K22_PACK_CAPTION:
    case K22_PACK_SOURCE:
    case K22_PACK_IMAGE_EMBEDS: return 1;
    case K22_PACK_INPUT_IDS:
    case K22_PACK_ATTENTION_MASK:
    case K22_PACK_TEXT_EMBEDS:
    case K22_PACK_TEXT_HIDDEN: return (use & K22_PACK_FOR_PRIOR) != 0;
    case K22_PACK_LATENTS: return (use & K22_PACK_FOR_DECODER) != 0;
    default: return 0;
    }
}

static int is_string_field(k22_pack_field f) { return f == K22_PACK_CAPTION || f == K22_PACK_SOURCE; }
static int is_float_field(k22_pack_field f) { return f >= K22_PACK_TEXT_EMBEDS && f < K22_PACK_FIELD_COUNT; }

/* dims after the row dimension; returns their count. */
static int row_dims(const k22_pack_meta *m, k22_pack_field f, hsize_t d[3])
{
    hsize_t s = (hsize_t)(m->resolution / 8);
    switch (f) {
    case K22_PACK_INPUT_IDS:
    case K22_PACK_ATTENTION_MASK: d[0] = K22_PACK_TOKENS; return 1;
    case K22_PACK_TEXT_EMBEDS:
    case K22_PACK_IMAGE_EMBEDS: d[0] = (hsize_t)m->embed_dim; return 1;
    case K22_PACK_TEXT_HIDDEN: d[0] = K22_PACK_TOKENS; d[1] = (hsize_t)m->embed_dim; return 2;
    case K22_PACK_LATENTS: d[0] = (hsize_t)m->latent_channels; d[1] = s; d[2] = s; return 3;
    default: return 0;
    }
}

int64_t k22_pack_row_numel(const k22_pack_meta *m, k22_pack_field f)
{
    hsize_t d[3];
    int nd = row_dims(m, f, d);
    int64_t n = 1;
    for (int i = 0; i < nd; i++) n *= (int64_t)d[i];
    return n;
}

/* Bytes of one element of field f as stored. */
static size_t stored_elem_size(const k22_pack_meta *m, k22_pack_field f)
{
    if (f == K22_PACK_INPUT_IDS) return 4;
    if (f == K22_PACK_ATTENTION_MASK) return 1;
    if (is_float_field(f)) return m->dtype == K22_DTYPE_F16 ? 2 : 4;
    return 16; /* a variable-length string's heap reference */
}

int k22_pack_is_hdf5(const char *path)
{
    static const unsigned char sig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
    unsigned char b[8];
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    size_t n = fread(b, 1, 8, f);
    fclose(f);
    return n == 8 && !memcmp(b, sig, 8);
}

static void h5_quiet(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

/* IEEE binary16, little-endian: the layout numpy's float16 and h5py use. */
static hid_t half_type(void)
{
    hid_t t = H5Tcopy(H5T_IEEE_F32LE);
    H5Tset_fields(t, 15, 10, 5, 0, 10);
    H5Tset_size(t, 2);
    H5Tset_ebias(t, 15);
    return t;
}

static hid_t vlstr_type(void)
{
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8);
    return t;
}

/* The file type of field f (caller closes). */
static hid_t file_type(const k22_pack_meta *m, k22_pack_field f)
{
    if (is_string_field(f)) return vlstr_type();
    if (f == K22_PACK_INPUT_IDS) return H5Tcopy(H5T_STD_I32LE);
    if (f == K22_PACK_ATTENTION_MASK) return H5Tcopy(H5T_STD_U8LE);
    return m->dtype == K22_DTYPE_F16 ? half_type() : H5Tcopy(H5T_IEEE_F32LE);
}

static void close_id(hid_t *id, herr_t (*fn)(hid_t))
{
    if (*id >= 0) fn(*id);
    *id = -1;
}

/* ------------------------------------------------------------------ attributes */

static k22_status attr_write(hid_t loc, const char *name, hid_t type, hid_t space, const void *buf,
                             const char *path, k22_err *err)
{
    if (H5Aexists(loc, name) > 0 && H5Adelete(loc, name) < 0)
        return k22_err_set(err, K22_ERR_IO, "%s: cannot replace attribute '%s'", path, name);
    hid_t a = H5Acreate2(loc, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = a < 0 ? -1 : H5Awrite(a, type, buf);
    if (a >= 0) H5Aclose(a);
    if (rc < 0) return k22_err_set(err, K22_ERR_IO, "%s: cannot write attribute '%s'", path, name);
    return K22_OK;
}

static k22_status attr_write_i64(hid_t loc, const char *name, int64_t v, const char *path, k22_err *err)
{
    hid_t s = H5Screate(H5S_SCALAR);
    k22_status st = attr_write(loc, name, H5T_NATIVE_INT64, s, &v, path, err);
    H5Sclose(s);
    return st;
}

/* Rewrites an existing scalar int64 attribute in place (the commit step: no delete/create, so a
 * kill leaves either the old or the new value). */
static k22_status attr_update_i64(hid_t loc, const char *name, int64_t v, const char *path, k22_err *err)
{
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    herr_t rc = a < 0 ? -1 : H5Awrite(a, H5T_NATIVE_INT64, &v);
    if (a >= 0) H5Aclose(a);
    if (rc < 0) return k22_err_set(err, K22_ERR_IO, "%s: cannot update attribute '%s'", path, name);
    return K22_OK;
}

static k22_status attr_write_str(hid_t loc, const char *name, const char *v, const char *path, k22_err *err)
{
    hid_t s = H5Screate(H5S_SCALAR), t = vlstr_type();
    k22_status st = attr_write(loc, name, t, s, &v, path, err);
    H5Tclose(t);
    H5Sclose(s);
    return st;
}

static k22_status attr_write_strs(hid_t loc, const char *name, const char **v, int n, const char *path,
                                  k22_err *err)
{
    hsize_t d = (hsize_t)n;
    hid_t s = H5Screate_simple(1, &d, NULL), t = vlstr_type();
    k22_status st = attr_write(loc, name, t, s, v, path, err);
    H5Tclose(t);
    H5Sclose(s);
    return st;
}

static k22_status attr_read_i64(hid_t loc, const char *name, int64_t *v, const char *path, k22_err *err)
{
    k22_status st = K22_OK;
    hid_t a = H5Aexists(loc, name) > 0 ? H5Aopen(loc, name, H5P_DEFAULT) : -1;
    if (a < 0) return k22_err_set(err, K22_ERR_FORMAT, "%s: attribute '%s' missing", path, name);
    hid_t t = H5Aget_type(a), s = H5Aget_space(a);
    if (H5Tget_class(t) != H5T_INTEGER || H5Sget_simple_extent_npoints(s) != 1)
        st = k22_err_set(err, K22_ERR_FORMAT, "%s: attribute '%s' is not a single integer", path, name);
    else if (H5Aread(a, H5T_NATIVE_INT64, v) < 0)
        st = k22_err_set(err, K22_ERR_FORMAT, "%s: attribute '%s' cannot be read", path, name);
    H5Tclose(t);
    H5Sclose(s);
    H5Aclose(a);
    return st;
}

static k22_status attr_read_int(hid_t loc, const char *name, int lo, int hi, int *v, const char *path,
                                k22_err *err)
{
    int64_t x = 0;
    k22_status st = attr_read_i64(loc, name, &x, path, err);
    if (st) return st;
    if (x < lo || x > hi)
        return k22_err_set(err, K22_ERR_FORMAT, "%s: attribute '%s' is %lld, expected %d..%d", path, name,
                           (long long)x, lo, hi);
    *v = (int)x;
    return K22_OK;
}

/* Reads string element i of attribute or dataset contents already loaded: handles variable and
 * fixed-length strings. Reads attribute `name` (scalar or 1-D) into n malloc'd strings. */
static k22_status attr_read_strs(hid_t loc, const char *name, int max_n, char **out, int *n_out,
                                 const char *path, k22_err *err)
{
    k22_status st = K22_OK;
    *n_out = 0;
    hid_t a = H5Aexists(loc, name) > 0 ? H5Aopen(loc, name, H5P_DEFAULT) : -1;
    if (a < 0) return k22_err_set(err, K22_ERR_FORMAT, "%s: attribute '%s' missing", path, name);
    hid_t t = H5Aget_type(a), s = H5Aget_space(a), mt = -1;
    hssize_t n = H5Sget_simple_extent_npoints(s);
    char **vl = NULL, *fixed = NULL;
    if (H5Tget_class(t) != H5T_STRING || n < 0 || n > max_n) {
        st = k22_err_set(err, K22_ERR_FORMAT, "%s: attribute '%s' is not a string (or more than %d of them)",
                         path, name, max_n);
        goto out;
    }
    if (H5Tis_variable_str(t) > 0) {
        mt = vlstr_type();
        vl = calloc((size_t)n + 1, sizeof *vl);
        if (!vl || H5Aread(a, mt, vl) < 0) {
            st = k22_err_set(err, K22_ERR_FORMAT, "%s: attribute '%s' cannot be read", path, name);
            goto out;
        }
        for (hssize_t i = 0; i < n; i++) {
            size_t len = vl[i] ? strnlen(vl[i], STR_CAP + 1) : 0;
            if (len > STR_CAP) {
                st = k22_err_set(err, K22_ERR_FORMAT, "%s: attribute '%s' longer than %zu bytes", path, name, STR_CAP);
                break;
            }
            out[i] = k22_xstrdup(vl[i] ? vl[i] : "");
            (*n_out)++;
        }
        H5Dvlen_reclaim(mt, s, H5P_DEFAULT, vl);
    } else {
        size_t sz = H5Tget_size(t);
        if (sz == 0 || sz > STR_CAP) {
            st = k22_err_set(err, K22_ERR_FORMAT, "%s: attribute '%s' has strings of %zu bytes", path, name, sz);
            goto out;
        }
        mt = H5Tcopy(t);
        fixed = calloc((size_t)n + 1, sz);
        if (!fixed || H5Aread(a, mt, fixed) < 0) {
            st = k22_err_set(err, K22_ERR_FORMAT, "%s: attribute '%s' cannot be read", path, name);
            goto out;
        }
        for (hssize_t i = 0; i < n; i++) {
            out[i] = k22_xcalloc(1, sz + 1);
            memcpy(out[i], fixed + (size_t)i * sz, sz);
            (*n_out)++;
        }
    }
out:
    if (st)
        for (int i = 0; i < *n_out; i++) free(out[i]);
    if (st) *n_out = 0;
    free(vl);
    free(fixed);
    if (mt >= 0) H5Tclose(mt);
    H5Tclose(t);
    H5Sclose(s);
    H5Aclose(a);
    return st;
}

/* A single string attribute into dst (truncated to n bytes is an error). */
static k22_status attr_read_str(hid_t loc, const char *name, char *dst, size_t cap, const char *path,
                                k22_err *err)
{
    char *v[1] = {NULL};
    int n = 0;
    k22_status st = attr_read_strs(loc, name, 1, v, &n, path, err);
    if (st) return st;
    if (n != 1) st = k22_err_set(err, K22_ERR_FORMAT, "%s: attribute '%s' holds no string", path, name);
    else if (strlen(v[0]) >= cap)
        st = k22_err_set(err, K22_ERR_FORMAT, "%s: attribute '%s' is %zu bytes, at most %zu allowed", path,
                         name, strlen(v[0]), cap - 1);
    else snprintf(dst, cap, "%s", v[0]);
    for (int i = 0; i < n; i++) free(v[i]);
    return st;
}

static k22_status meta_write(hid_t f, const k22_pack_meta *m, const char *path, k22_err *err)
{
    char created[64];
    time_t now = time(NULL);
    struct tm tmv;
    gmtime_r(&now, &tmv);
    strftime(created, sizeof created, "%Y-%m-%dT%H:%M:%SZ", &tmv);
    const char *names[K22_PACK_MAX_MODELS], *paths[K22_PACK_MAX_MODELS], *shas[K22_PACK_MAX_MODELS];
    for (int i = 0; i < m->n_models; i++) {
        names[i] = m->models[i].name;
        paths[i] = m->models[i].path;
        shas[i] = m->models[i].sha256;
    }
    k22_status st = attr_write_i64(f, "format_version", K22_PACK_FORMAT_VERSION, path, err);
    if (!st) st = attr_write_str(f, "k22_version", K22_VERSION, path, err);
    if (!st) st = attr_write_str(f, "for", k22_pack_for_name(m->use), path, err);
    if (!st) st = attr_write_str(f, "dtype", k22_dtype_name(m->dtype), path, err);
    if (!st) st = attr_write_i64(f, "embed_dim", m->embed_dim, path, err);
    if (!st) st = attr_write_i64(f, "tokens", K22_PACK_TOKENS, path, err);
    if (!st) st = attr_write_i64(f, "resolution", m->resolution, path, err);
    if (!st) st = attr_write_i64(f, "latent_channels", m->latent_channels, path, err);
    if (!st) st = attr_write_i64(f, "latent_size", m->resolution / 8, path, err);
    if (!st) st = attr_write_str(f, "preprocessing", m->preprocessing, path, err);
    if (!st) st = attr_write_str(f, "created", created, path, err);
    if (!st) st = attr_write_strs(f, "model_names", names, m->n_models, path, err);
    if (!st) st = attr_write_strs(f, "model_paths", paths, m->n_models, path, err);
    if (!st) st = attr_write_strs(f, "model_sha256", shas, m->n_models, path, err);
    if (!st) st = attr_write_i64(f, "rows_committed", 0, path, err);
    if (!st) st = attr_write_i64(f, "rejected_committed", 0, path, err);
    if (!st) st = attr_write_i64(f, "inputs_committed", 0, path, err);
    return st;
}

static k22_status meta_read_models(hid_t f, k22_pack_meta *m, const char *path, k22_err *err)
{
    static const char *const keys[3] = {"model_names", "model_paths", "model_sha256"};
    char *v[3][K22_PACK_MAX_MODELS];
    int n[3] = {0, 0, 0};
    k22_status st = K22_OK;
    for (int k = 0; k < 3 && !st; k++) st = attr_read_strs(f, keys[k], K22_PACK_MAX_MODELS, v[k], &n[k], path, err);
    if (!st && (n[0] != n[1] || n[0] != n[2]))
        st = k22_err_set(err, K22_ERR_FORMAT, "%s: model_names, model_paths and model_sha256 hold %d, %d and %d entries",
                         path, n[0], n[1], n[2]);
    for (int i = 0; i < n[0] && !st; i++) {
        if (strlen(v[0][i]) >= sizeof m->models[i].name || strlen(v[1][i]) >= sizeof m->models[i].path ||
            strlen(v[2][i]) >= sizeof m->models[i].sha256) {
            st = k22_err_set(err, K22_ERR_FORMAT, "%s: source model %d: name, path or sha256 too long", path, i);
            break;
        }
        snprintf(m->models[i].name, sizeof m->models[i].name, "%s", v[0][i]);
        snprintf(m->models[i].path, sizeof m->models[i].path, "%s", v[1][i]);
        snprintf(m->models[i].sha256, sizeof m->models[i].sha256, "%s", v[2][i]);
    }
    if (!st) m->n_models = n[0];
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < n[k]; i++) free(v[k][i]);
    return st;
}

/* Reads and range-checks every attribute; counts = {rows, rejected, inputs} committed. */
static k22_status meta_read(hid_t f, k22_pack_meta *m, int64_t counts[3], const char *path, k22_err *err)
{
    char s[64];
    int tokens = 0, lsize = 0;
    memset(m, 0, sizeof *m);
    k22_status st = attr_read_int(f, "format_version", 0, 1 << 30, &m->format_version, path, err);
    if (st) return st;
    if (m->format_version != K22_PACK_FORMAT_VERSION)
        return k22_err_set(err, K22_ERR_UNSUPPORTED, "%s: pack format version %d, this k22 reads %d", path,
                           m->format_version, K22_PACK_FORMAT_VERSION);
    st = attr_read_str(f, "for", s, sizeof s, path, err);
    if (!st && k22_pack_for_parse(s, &m->use))
        st = k22_err_set(err, K22_ERR_FORMAT, "%s: attribute 'for' is '%s', expected prior, decoder or both", path, s);
    if (!st) st = attr_read_str(f, "dtype", s, sizeof s, path, err);
    if (!st && (k22_dtype_parse(s, &m->dtype) || (m->dtype != K22_DTYPE_F32 && m->dtype != K22_DTYPE_F16)))
        st = k22_err_set(err, K22_ERR_FORMAT, "%s: attribute 'dtype' is '%s', expected F32 or F16", path, s);
    if (!st) st = attr_read_int(f, "embed_dim", 1, 1 << 16, &m->embed_dim, path, err);
    if (!st) st = attr_read_int(f, "tokens", K22_PACK_TOKENS, K22_PACK_TOKENS, &tokens, path, err);
    if (!st) st = attr_read_int(f, "resolution", 8, 1 << 15, &m->resolution, path, err);
    if (!st && m->resolution % 8)
        st = k22_err_set(err, K22_ERR_FORMAT, "%s: attribute 'resolution' is %d, not a multiple of 8", path, m->resolution);
    if (!st) st = attr_read_int(f, "latent_channels", 1, 64, &m->latent_channels, path, err);
    if (!st) st = attr_read_int(f, "latent_size", 1, 1 << 12, &lsize, path, err);
    if (!st && lsize != m->resolution / 8)
        st = k22_err_set(err, K22_ERR_FORMAT, "%s: attribute 'latent_size' is %d but resolution %d gives %d", path,
                         lsize, m->resolution, m->resolution / 8);
    if (!st) st = attr_read_str(f, "preprocessing", m->preprocessing, sizeof m->preprocessing, path, err);
    if (!st) st = attr_read_str(f, "k22_version", m->k22_version, sizeof m->k22_version, path, err);
    if (!st) st = attr_read_str(f, "created", m->created, sizeof m->created, path, err);
    if (!st) st = meta_read_models(f, m, path, err);
    static const char *const cnames[3] = {"rows_committed", "rejected_committed", "inputs_committed"};
    for (int i = 0; i < 3 && !st; i++) {
        st = attr_read_i64(f, cnames[i], &counts[i], path, err);
        if (!st && (counts[i] < 0 || counts[i] > MAX_ROWS_LIMIT))
            st = k22_err_set(err, K22_ERR_FORMAT, "%s: attribute '%s' is %lld", path, cnames[i], (long long)counts[i]);
    }
    if (!st && counts[2] < counts[0] + counts[1])
        st = k22_err_set(err, K22_ERR_FORMAT, "%s: inputs_committed %lld is less than rows %lld + rejected %lld",
                         path, (long long)counts[2], (long long)counts[0], (long long)counts[1]);
    return st;
}

/* ------------------------------------------------------------------ dataset checks */

static void fmt_dims(char *buf, size_t n, int rank, const hsize_t *d, int row_free)
{
    size_t k = (size_t)snprintf(buf, n, "(");
    for (int i = 0; i < rank && k < n; i++) {
        if (i == 0 && row_free) k += (size_t)snprintf(buf + k, n - k, "N");
        else k += (size_t)snprintf(buf + k, n - k, "%s%llu", i ? ", " : "", (unsigned long long)d[i]);
    }
    if (k < n) snprintf(buf + k, n - k, ")");
}

static int is_ieee_half_le(hid_t t)
{
    size_t spos, epos, esize, mpos, msize;
    if (H5Tget_fields(t, &spos, &epos, &esize, &mpos, &msize) < 0) return 0;
    return spos == 15 && epos == 10 && esize == 5 && mpos == 0 && msize == 10 && H5Tget_ebias(t) == 15 &&
           H5Tget_order(t) == H5T_ORDER_LE;
}

/* The stored type of field f matches what the attributes say; else names the difference. */
static k22_status check_type(hid_t ds, const char *name, const k22_pack_meta *m, k22_pack_field f, const char *path,
                             k22_err *err)
{
    hid_t t = H5Dget_type(ds);
    H5T_class_t c = H5Tget_class(t);
    size_t sz = H5Tget_size(t);
    const char *want = NULL;
    if (is_string_field(f)) {
        if (c != H5T_STRING || H5Tis_variable_str(t) <= 0) want = "variable-length strings";
    } else if (f == K22_PACK_INPUT_IDS) {
        if (c != H5T_INTEGER || sz != 4 || H5Tget_sign(t) != H5T_SGN_2) want = "int32";
    } else if (f == K22_PACK_ATTENTION_MASK) {
        if (c != H5T_INTEGER || sz != 1) want = "uint8";
    } else if (m->dtype == K22_DTYPE_F16) {
        if (c != H5T_FLOAT || sz != 2 || !is_ieee_half_le(t)) want = "IEEE fp16 (attribute dtype F16)";
    } else if (c != H5T_FLOAT || sz != 4) {
        want = "fp32 (attribute dtype F32)";
    }
    H5Tclose(t);
    if (!want) return K22_OK;
    return k22_err_set(err, K22_ERR_FORMAT, "%s: dataset '%s' stores %s of %zu bytes, expected %s", path, name,
                       c == H5T_FLOAT ? "floats" : c == H5T_INTEGER ? "integers" : c == H5T_STRING ? "strings" : "values",
                       sz, want);
}

/* Opens dataset name and checks its rank, trailing dims and that it holds >= rows rows. */
static k22_status open_checked(hid_t file, const char *name, int rank, const hsize_t *tail, int64_t rows,
                               hid_t *out, const char *path, k22_err *err)
{
    *out = -1;
    if (H5Lexists(file, name, H5P_DEFAULT) <= 0)
        return k22_err_set(err, K22_ERR_KEY, "%s: dataset '%s' missing", path, name);
    hid_t ds = H5Dopen2(file, name, H5P_DEFAULT);
    if (ds < 0) return k22_err_set(err, K22_ERR_FORMAT, "%s: '%s' is not a readable dataset", path, name);
    hid_t sp = H5Dget_space(ds);
    hsize_t d[H5S_MAX_RANK];
    int r = H5Sget_simple_extent_ndims(sp);
    if (r >= 0 && r <= H5S_MAX_RANK) H5Sget_simple_extent_dims(sp, d, NULL);
    H5Sclose(sp);
    int ok = r == rank;
    for (int i = 1; ok && i < rank; i++) ok = d[i] == tail[i - 1];
    char got[128], want[128];
    hsize_t wd[4] = {0, 0, 0, 0};
    for (int i = 1; i < rank; i++) wd[i] = tail[i - 1];
    if (!ok) {
        fmt_dims(want, sizeof want, rank, wd, 1);
        if (r < 0 || r > H5S_MAX_RANK) snprintf(got, sizeof got, "an unreadable shape");
        else fmt_dims(got, sizeof got, r, d, 0);
        H5Dclose(ds);
        return k22_err_set(err, K22_ERR_FORMAT, "%s: dataset '%s' has shape %s, the attributes say %s", path,
                           name, got, want);
    }
    if ((int64_t)d[0] < rows) {
        H5Dclose(ds);
        return k22_err_set(err, K22_ERR_FORMAT, "%s: dataset '%s' holds %llu rows but %lld are committed", path,
                           name, (unsigned long long)d[0], (long long)rows);
    }
    *out = ds;
    return K22_OK;
}

/* Opens and checks the datasets `use` holds (others stay -1) and the rejection lists. */
static k22_status datasets_open(hid_t file, const k22_pack_meta *m, const int64_t counts[3],
                                hid_t ds[K22_PACK_FIELD_COUNT], hid_t rej[2], const char *path, k22_err *err)
{
    k22_status st = K22_OK;
    for (int f = 0; f < K22_PACK_FIELD_COUNT && !st; f++) {
        if (!k22_pack_for_has(m->use, (k22_pack_field)f)) continue;
        hsize_t tail[3];
        int nd = row_dims(m, (k22_pack_field)f, tail);
        st = open_checked(file, field_names[f], nd + 1, tail, counts[0], &ds[f], path, err);
        if (!st) st = check_type(ds[f], field_names[f], m, (k22_pack_field)f, path, err);
        if (st == K22_ERR_KEY)
            st = k22_err_set(err, K22_ERR_FORMAT, "%s: dataset '%s' missing (a pack for %s holds it)", path,
                             field_names[f], k22_pack_for_name(m->use));
    }
    static const char *const rn[2] = {"rejected_source", "rejected_reason"};
    for (int i = 0; i < 2 && !st; i++) {
        st = open_checked(file, rn[i], 1, NULL, counts[1], &rej[i], path, err);
        if (!st) st = check_type(rej[i], rn[i], m, K22_PACK_SOURCE, path, err);
        if (st == K22_ERR_KEY) st = k22_err_set(err, K22_ERR_FORMAT, "%s: dataset '%s' missing", path, rn[i]);
    }
    return st;
}

/* ------------------------------------------------------------------ row I/O */

/* Selects rows [start, start+n) of ds; returns the file and memory spaces (caller closes). */
static int select_rows(hid_t ds, int64_t start, int64_t n, hid_t *fs, hid_t *ms)
{
    *fs = H5Dget_space(ds);
    hsize_t d[H5S_MAX_RANK], off[H5S_MAX_RANK] = {0}, cnt[H5S_MAX_RANK];
    int r = H5Sget_simple_extent_ndims(*fs);
    if (r < 1) return -1;
    H5Sget_simple_extent_dims(*fs, d, NULL);
    for (int i = 0; i < r; i++) cnt[i] = d[i];
    off[0] = (hsize_t)start;
    cnt[0] = (hsize_t)n;
    if (H5Sselect_hyperslab(*fs, H5S_SELECT_SET, off, NULL, cnt, NULL) < 0) return -1;
    *ms = H5Screate_simple(r, cnt, NULL);
    return *ms < 0 ? -1 : 0;
}

static herr_t write_rows(hid_t ds, hid_t mtype, int64_t start, int64_t n, const void *buf)
{
    hid_t fs = -1, ms = -1;
    hsize_t d[H5S_MAX_RANK];
    hid_t sp = H5Dget_space(ds);
    int r = H5Sget_simple_extent_ndims(sp);
    H5Sget_simple_extent_dims(sp, d, NULL);
    H5Sclose(sp);
    d[0] = (hsize_t)(start + n);
    herr_t rc = r < 1 ? -1 : H5Dset_extent(ds, d);
    if (rc >= 0) rc = select_rows(ds, start, n, &fs, &ms);
    if (rc >= 0) rc = H5Dwrite(ds, mtype, ms, fs, H5P_DEFAULT, buf);
    if (fs >= 0) H5Sclose(fs);
    if (ms >= 0) H5Sclose(ms);
    return rc;
}

static herr_t read_rows(hid_t ds, hid_t mtype, int64_t start, int64_t n, void *buf)
{
    hid_t fs = -1, ms = -1;
    herr_t rc = select_rows(ds, start, n, &fs, &ms);
    if (rc >= 0) rc = H5Dread(ds, mtype, ms, fs, H5P_DEFAULT, buf);
    if (fs >= 0) H5Sclose(fs);
    if (ms >= 0) H5Sclose(ms);
    return rc;
}

static herr_t truncate_rows(hid_t ds, int64_t n)
{
    hsize_t d[H5S_MAX_RANK];
    hid_t sp = H5Dget_space(ds);
    H5Sget_simple_extent_dims(sp, d, NULL);
    H5Sclose(sp);
    d[0] = (hsize_t)n;
    return H5Dset_extent(ds, d);
}

/* ------------------------------------------------------------------ writer */

struct k22_pack_writer {
    char path[4096];
    k22_pack_meta m;
    hid_t file, ds[K22_PACK_FIELD_COUNT], rej[2], half;
    int64_t rows;        /* written */
    int64_t rejected;    /* written to the rejection datasets */
    char **pend[2];      /* rejections waiting for the next commit: source, reason */
    int64_t npend, cap_pend;
    uint16_t *conv;      /* fp16 scratch */
    size_t conv_n;
};

static k22_pack_writer *writer_new(const char *path, const k22_pack_meta *m)
{
    k22_pack_writer *w = k22_xcalloc(1, sizeof *w);
    snprintf(w->path, sizeof w->path, "%s", path);
    w->m = *m;
    w->file = w->half = w->rej[0] = w->rej[1] = -1;
    for (int f = 0; f < K22_PACK_FIELD_COUNT; f++) w->ds[f] = -1;
    w->half = half_type();
    return w;
}

static k22_status check_meta_arg(const k22_pack_meta *m, k22_err *err)
{
    if (m->use < K22_PACK_FOR_PRIOR || m->use > K22_PACK_FOR_BOTH)
        return k22_err_set(err, K22_ERR_ARG, "pack: `for` must be prior, decoder or both");
    if (m->dtype != K22_DTYPE_F32 && m->dtype != K22_DTYPE_F16)
        return k22_err_set(err, K22_ERR_ARG, "pack: dtype must be F32 or F16, got %s", k22_dtype_name(m->dtype));
    if (m->embed_dim < 1 || m->embed_dim > (1 << 16) || m->resolution < 8 || m->resolution > (1 << 15) ||
        m->resolution % 8 || m->latent_channels < 1 || m->latent_channels > 64)
        return k22_err_set(err, K22_ERR_ARG, "pack: embed_dim %d, resolution %d (multiple of 8) or latent_channels %d out of range",
                           m->embed_dim, m->resolution, m->latent_channels);
    if (m->n_models < 0 || m->n_models > K22_PACK_MAX_MODELS)
        return k22_err_set(err, K22_ERR_ARG, "pack: %d source models, at most %d", m->n_models, K22_PACK_MAX_MODELS);
    return K22_OK;
}

static hid_t create_rows_dataset(hid_t file, const char *name, hid_t type, int rank, const hsize_t *tail,
                                 hsize_t chunk_rows)
{
    hsize_t d[4] = {0}, maxd[4] = {H5S_UNLIMITED}, ch[4] = {chunk_rows};
    for (int i = 1; i < rank; i++) d[i] = maxd[i] = ch[i] = tail[i - 1];
    hid_t sp = H5Screate_simple(rank, d, maxd), pl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(pl, rank, ch);
    hid_t ds = H5Dcreate2(file, name, type, sp, H5P_DEFAULT, pl, H5P_DEFAULT);
    H5Pclose(pl);
    H5Sclose(sp);
    return ds;
}

static hsize_t chunk_rows_for(const k22_pack_meta *m, k22_pack_field f)
{
    size_t row = (size_t)k22_pack_row_numel(m, f) * stored_elem_size(m, f);
    size_t rows = (m->chunk_bytes ? m->chunk_bytes : CHUNK_TARGET) / (row ? row : 1);
    if (rows < 1) rows = 1;
    if (rows > CHUNK_MAX_ROWS) rows = CHUNK_MAX_ROWS;
    return (hsize_t)rows;
}

/* File access for the writer: the metadata cache never evicts, so dirty metadata reaches the
 * file only inside H5Fflush (at a commit). A kill between commits then leaves the metadata of
 * the last commit on disk; raw rows written since land in chunks the committed metadata does
 * not count. (A kill during the flush itself is not covered: HDF5 1.10 has no journal.) */
static hid_t writer_fapl(void)
{
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5AC_cache_config_t c;
    memset(&c, 0, sizeof c);
    c.version = H5AC__CURR_CACHE_CONFIG_VERSION;
    if (H5Pget_mdc_config(fapl, &c) >= 0) {
        c.evictions_enabled = 0;
        c.incr_mode = H5C_incr__off;
        c.flash_incr_mode = H5C_flash_incr__off;
        c.decr_mode = H5C_decr__off;
        H5Pset_mdc_config(fapl, &c);
    }
    return fapl;
}

k22_status k22_pack_writer_create(const char *path, const k22_pack_meta *m, k22_pack_writer **out,
                                  k22_err *err)
{
    *out = NULL;
    h5_quiet();
    k22_status st = check_meta_arg(m, err);
    if (st) return st;
    k22_pack_writer *w = writer_new(path, m);
    hid_t fapl = writer_fapl();
    w->file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (w->file < 0) {
        st = k22_err_set(err, K22_ERR_IO, "%s: cannot create HDF5 file", path);
        goto out;
    }
    st = meta_write(w->file, m, path, err);
    for (int f = 0; f < K22_PACK_FIELD_COUNT && !st; f++) {
        if (!k22_pack_for_has(m->use, (k22_pack_field)f)) continue;
        hsize_t tail[3];
        int nd = row_dims(m, (k22_pack_field)f, tail);
        hid_t t = file_type(m, (k22_pack_field)f);
        w->ds[f] = create_rows_dataset(w->file, field_names[f], t, nd + 1, tail, chunk_rows_for(m, (k22_pack_field)f));
        H5Tclose(t);
        if (w->ds[f] < 0) st = k22_err_set(err, K22_ERR_IO, "%s: cannot create dataset '%s'", path, field_names[f]);
    }
    static const char *const rn[2] = {"rejected_source", "rejected_reason"};
    for (int i = 0; i < 2 && !st; i++) {
        hid_t t = vlstr_type();
        w->rej[i] = create_rows_dataset(w->file, rn[i], t, 1, NULL, REJ_CHUNK_ROWS);
        H5Tclose(t);
        if (w->rej[i] < 0) st = k22_err_set(err, K22_ERR_IO, "%s: cannot create dataset '%s'", path, rn[i]);
    }
    if (!st && H5Fflush(w->file, H5F_SCOPE_GLOBAL) < 0) st = k22_err_set(err, K22_ERR_IO, "%s: flush failed", path);
out:
    if (st) k22_pack_writer_close(w, NULL);
    else *out = w;
    return st;
}

/* First difference between the pack's meta and the writer's, or K22_OK. */
static k22_status meta_compare(const k22_pack_meta *a, const k22_pack_meta *b, const char *path, k22_err *err)
{
#define K22_DIFF(cond, ...) if (cond) return k22_err_set(err, K22_ERR_ARG, __VA_ARGS__)
    K22_DIFF(a->use != b->use, "%s: the pack is for %s, this run packs for %s", path, k22_pack_for_name(a->use),
             k22_pack_for_name(b->use));
    K22_DIFF(a->dtype != b->dtype, "%s: the pack stores %s, this run %s", path, k22_dtype_name(a->dtype),
             k22_dtype_name(b->dtype));
    K22_DIFF(a->embed_dim != b->embed_dim, "%s: embed_dim %d in the pack, %d in this run", path, a->embed_dim, b->embed_dim);
    K22_DIFF(a->resolution != b->resolution, "%s: resolution %d in the pack, %d in this run", path, a->resolution,
             b->resolution);
    K22_DIFF(a->latent_channels != b->latent_channels, "%s: latent_channels %d in the pack, %d in this run", path,
             a->latent_channels, b->latent_channels);
    K22_DIFF(strcmp(a->preprocessing, b->preprocessing), "%s: preprocessing differs: pack '%s', this run '%s'", path,
             a->preprocessing, b->preprocessing);
    K22_DIFF(a->n_models != b->n_models, "%s: %d source models in the pack, %d in this run", path, a->n_models,
             b->n_models);
    for (int i = 0; i < a->n_models; i++) {
        const k22_pack_model *x = &a->models[i], *y = &b->models[i];
        K22_DIFF(strcmp(x->name, y->name) || strcmp(x->path, y->path) || strcmp(x->sha256, y->sha256),
                 "%s: source model %d differs: pack %s %s sha256 %s, this run %s %s sha256 %s", path, i, x->name,
                 x->path, x->sha256, y->name, y->path, y->sha256);
    }
#undef K22_DIFF
    return K22_OK;
}

k22_status k22_pack_writer_resume(const char *path, const k22_pack_meta *m, k22_pack_writer **out,
                                  int64_t *rows_committed, int64_t *inputs_committed, k22_err *err)
{
    *out = NULL;
    h5_quiet();
    k22_status st = check_meta_arg(m, err);
    if (st) return st;
    k22_pack_writer *w = writer_new(path, m);
    k22_pack_meta have;
    int64_t counts[3] = {0, 0, 0};
    hid_t fapl = writer_fapl();
    w->file = H5Fopen(path, H5F_ACC_RDWR, fapl);
    H5Pclose(fapl);
    if (w->file < 0) {
        st = k22_err_set(err, K22_ERR_IO, "%s: cannot open for resuming (not an HDF5 file, or unwritable)", path);
        goto out;
    }
    st = meta_read(w->file, &have, counts, path, err);
    if (!st) st = meta_compare(&have, m, path, err);
    if (!st) st = datasets_open(w->file, m, counts, w->ds, w->rej, path, err);
    /* Rows past the last commit were written by the killed run: cut them off so that this run
     * rewrites them and the file ends up as an uninterrupted run's. */
    for (int f = 0; f < K22_PACK_FIELD_COUNT && !st; f++)
        if (w->ds[f] >= 0 && truncate_rows(w->ds[f], counts[0]) < 0)
            st = k22_err_set(err, K22_ERR_IO, "%s: cannot cut dataset '%s' back to %lld rows", path, field_names[f],
                             (long long)counts[0]);
    for (int i = 0; i < 2 && !st; i++)
        if (truncate_rows(w->rej[i], counts[1]) < 0)
            st = k22_err_set(err, K22_ERR_IO, "%s: cannot cut the rejection list back", path);
    if (st) goto out;
    w->rows = counts[0];
    w->rejected = counts[1];
    *rows_committed = counts[0];
    *inputs_committed = counts[2];
out:
    if (st) k22_pack_writer_close(w, NULL);
    else *out = w;
    return st;
}

static const void *field_src(const k22_pack_batch *r, k22_pack_field f)
{
    switch (f) {
    case K22_PACK_INPUT_IDS: return r->input_ids;
    case K22_PACK_ATTENTION_MASK: return r->attention_mask;
    case K22_PACK_TEXT_EMBEDS: return r->text_embeds;
    case K22_PACK_TEXT_HIDDEN: return r->text_hidden;
    case K22_PACK_IMAGE_EMBEDS: return r->image_embeds;
    case K22_PACK_LATENTS: return r->latents;
    case K22_PACK_CAPTION: return r->caption;
    case K22_PACK_SOURCE: return r->source;
    default: return NULL;
    }
}

static k22_status append_field(k22_pack_writer *w, k22_pack_field f, const void *src, int64_t n, k22_err *err)
{
    hid_t mt = -1;
    const void *buf = src;
    size_t count = (size_t)n * (size_t)k22_pack_row_numel(&w->m, f);
    if (is_string_field(f)) {
        const char *const *s = src;
        for (int64_t i = 0; i < n; i++)
            if (!s[i]) return k22_err_set(err, K22_ERR_ARG, "%s: row %lld: %s is NULL", w->path,
                                          (long long)(w->rows + i), field_names[f]);
        mt = vlstr_type();
    } else if (f == K22_PACK_INPUT_IDS) mt = H5Tcopy(H5T_NATIVE_INT32);
    else if (f == K22_PACK_ATTENTION_MASK) mt = H5Tcopy(H5T_NATIVE_UINT8);
    else if (w->m.dtype == K22_DTYPE_F16) {
        if (w->conv_n < count) {
            free(w->conv);
            w->conv = k22_xmalloc(count * sizeof *w->conv);
            w->conv_n = count;
        }
        k22_convert_from_f32(w->conv, K22_DTYPE_F16, src, count);
        buf = w->conv;
        mt = H5Tcopy(w->half);
    } else mt = H5Tcopy(H5T_NATIVE_FLOAT);
    herr_t rc = write_rows(w->ds[f], mt, w->rows, n, buf);
    H5Tclose(mt);
    if (rc < 0)
        return k22_err_set(err, K22_ERR_IO, "%s: writing rows %lld..%lld of '%s' failed", w->path, (long long)w->rows,
                           (long long)(w->rows + n - 1), field_names[f]);
    return K22_OK;
}

k22_status k22_pack_writer_append(k22_pack_writer *w, const k22_pack_batch *r, int64_t n, k22_err *err)
{
    if (n < 0 || n > (1 << 24)) return k22_err_set(err, K22_ERR_ARG, "%s: append of %lld rows", w->path, (long long)n);
    if (n == 0) return K22_OK;
    for (int f = 0; f < K22_PACK_FIELD_COUNT; f++)
        if (w->ds[f] >= 0 && !field_src(r, (k22_pack_field)f))
            return k22_err_set(err, K22_ERR_ARG, "%s: append: no '%s' rows given (the pack is for %s)", w->path,
                               field_names[f], k22_pack_for_name(w->m.use));
    for (int f = 0; f < K22_PACK_FIELD_COUNT; f++) {
        if (w->ds[f] < 0) continue;
        k22_status st = append_field(w, (k22_pack_field)f, field_src(r, (k22_pack_field)f), n, err);
        if (st) return st;
    }
    w->rows += n;
    return K22_OK;
}

k22_status k22_pack_writer_reject(k22_pack_writer *w, const char *source, const char *reason, k22_err *err)
{
    if (w->npend == w->cap_pend) {
        int64_t cap = w->cap_pend ? 2 * w->cap_pend : 16;
        for (int i = 0; i < 2; i++) {
            char **p = realloc(w->pend[i], (size_t)cap * sizeof *p);
            if (!p) K22_FATAL("out of memory growing the rejection list");
            w->pend[i] = p;
        }
        w->cap_pend = cap;
    }
    w->pend[0][w->npend] = k22_xstrdup(source ? source : "");
    w->pend[1][w->npend] = k22_xstrdup(reason ? reason : "");
    w->npend++;
    return K22_OK;
}

static void pend_clear(k22_pack_writer *w)
{
    for (int64_t i = 0; i < w->npend; i++) {
        free(w->pend[0][i]);
        free(w->pend[1][i]);
    }
    w->npend = 0;
}

k22_status k22_pack_writer_commit(k22_pack_writer *w, int64_t inputs_consumed, k22_err *err)
{
    if (w->npend) {
        hid_t t = vlstr_type();
        herr_t rc = write_rows(w->rej[0], t, w->rejected, w->npend, w->pend[0]);
        if (rc >= 0) rc = write_rows(w->rej[1], t, w->rejected, w->npend, w->pend[1]);
        H5Tclose(t);
        if (rc < 0) return k22_err_set(err, K22_ERR_IO, "%s: writing the rejection list failed", w->path);
        w->rejected += w->npend;
        pend_clear(w);
    }
    if (inputs_consumed < w->rows + w->rejected)
        return k22_err_set(err, K22_ERR_ARG, "%s: commit: %lld inputs consumed but %lld rows + %lld rejections written",
                           w->path, (long long)inputs_consumed, (long long)w->rows, (long long)w->rejected);
    /* Data first, then the counts: a kill between the two flushes leaves the old counts, which
     * still describe intact rows. */
    if (H5Fflush(w->file, H5F_SCOPE_GLOBAL) < 0) return k22_err_set(err, K22_ERR_IO, "%s: flush failed", w->path);
    k22_status st = attr_update_i64(w->file, "rows_committed", w->rows, w->path, err);
    if (!st) st = attr_update_i64(w->file, "rejected_committed", w->rejected, w->path, err);
    if (!st) st = attr_update_i64(w->file, "inputs_committed", inputs_consumed, w->path, err);
    if (!st && H5Fflush(w->file, H5F_SCOPE_GLOBAL) < 0) st = k22_err_set(err, K22_ERR_IO, "%s: flush failed", w->path);
    return st;
}

int64_t k22_pack_writer_rows(const k22_pack_writer *w) { return w->rows; }

k22_status k22_pack_writer_close(k22_pack_writer *w, k22_err *err)
{
    if (!w) return K22_OK;
    for (int f = 0; f < K22_PACK_FIELD_COUNT; f++) close_id(&w->ds[f], H5Dclose);
    close_id(&w->rej[0], H5Dclose);
    close_id(&w->rej[1], H5Dclose);
    close_id(&w->half, H5Tclose);
    herr_t rc = w->file >= 0 ? H5Fclose(w->file) : 0;
    k22_status st = rc < 0 ? k22_err_set(err, K22_ERR_IO, "%s: closing the pack failed", w->path) : K22_OK;
    pend_clear(w);
    free(w->pend[0]);
    free(w->pend[1]);
    free(w->conv);
    free(w);
    return st;
}

/* ------------------------------------------------------------------ reader */

struct k22_pack {
    char path[4096];
    k22_pack_meta m;
    hid_t file, ds[K22_PACK_FIELD_COUNT], rej[2], half;
    int64_t counts[3];
    uint16_t *conv;
    size_t conv_n;
};

void k22_pack_close(k22_pack *p)
{
    if (!p) return;
    for (int f = 0; f < K22_PACK_FIELD_COUNT; f++) close_id(&p->ds[f], H5Dclose);
    close_id(&p->rej[0], H5Dclose);
    close_id(&p->rej[1], H5Dclose);
    close_id(&p->half, H5Tclose);
    close_id(&p->file, H5Fclose);
    free(p->conv);
    free(p);
}

static k22_pack *pack_new(const char *path)
{
    k22_pack *p = k22_xcalloc(1, sizeof *p);
    snprintf(p->path, sizeof p->path, "%s", path);
    p->file = p->rej[0] = p->rej[1] = -1;
    for (int f = 0; f < K22_PACK_FIELD_COUNT; f++) p->ds[f] = -1;
    p->half = half_type();
    return p;
}

/* Opens path with file access list fapl and runs every check. */
static k22_status pack_open_fapl(const char *path, hid_t fapl, k22_pack **out, k22_err *err)
{
    k22_pack *p = pack_new(path);
    k22_status st = K22_OK;
    p->file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    if (p->file < 0) {
        st = k22_err_set(err, K22_ERR_FORMAT, "%s: the HDF5 library cannot open it (truncated or damaged)", path);
        goto out;
    }
    st = meta_read(p->file, &p->m, p->counts, path, err);
    if (!st) st = datasets_open(p->file, &p->m, p->counts, p->ds, p->rej, path, err);
out:
    if (st) k22_pack_close(p);
    else *out = p;
    return st;
}

k22_status k22_pack_open(const char *path, k22_pack **out, k22_err *err)
{
    *out = NULL;
    h5_quiet();
    if (!k22_pack_is_hdf5(path))
        return k22_err_set(err, K22_ERR_FORMAT, "%s: not an HDF5 file (no HDF5 signature at byte 0)", path);
    return pack_open_fapl(path, H5P_DEFAULT, out, err);
}

k22_status k22_pack_open_mem(const char *name, const void *data, size_t n, k22_pack **out, k22_err *err)
{
    static const unsigned char sig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
    *out = NULL;
    h5_quiet();
    if (n < 8 || memcmp(data, sig, 8))
        return k22_err_set(err, K22_ERR_FORMAT, "%s: not an HDF5 file (no HDF5 signature at byte 0)", name);
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    k22_status st = K22_OK;
    if (H5Pset_fapl_core(fapl, 1 << 16, 0) < 0 || H5Pset_file_image(fapl, (void *)data, n) < 0)
        st = k22_err_set(err, K22_ERR_INTERNAL, "%s: cannot set up an in-memory HDF5 file", name);
    if (!st) st = pack_open_fapl(name, fapl, out, err);
    H5Pclose(fapl);
    return st;
}

const k22_pack_meta *k22_pack_meta_of(const k22_pack *p) { return &p->m; }
int64_t k22_pack_rows(const k22_pack *p) { return p->counts[0]; }
int64_t k22_pack_rejected(const k22_pack *p) { return p->counts[1]; }

k22_status k22_pack_check_compatible(const k22_pack *p, const k22_pack_want *w, k22_err *err)
{
    char msg[900] = "";
    size_t k = 0;
    const k22_pack_meta *m = &p->m;
#define K22_ADD(...) if (k < sizeof msg) k += (size_t)snprintf(msg + k, sizeof msg - k, __VA_ARGS__)
    if ((m->use & w->need) != w->need)
        K22_ADD("; the pack is for %s but this stage needs %s", k22_pack_for_name(m->use), k22_pack_for_name(w->need));
    if (w->embed_dim && w->embed_dim != m->embed_dim)
        K22_ADD("; embedding dim %d in the pack, the model has %d", m->embed_dim, w->embed_dim);
    if (w->resolution && (w->need & K22_PACK_FOR_DECODER) && w->resolution != m->resolution)
        K22_ADD("; resolution %d in the pack (latents %dx%d), the run wants %d (latents %dx%d)", m->resolution,
                m->resolution / 8, m->resolution / 8, w->resolution, w->resolution / 8, w->resolution / 8);
    if (w->latent_channels && (w->need & K22_PACK_FOR_DECODER) && w->latent_channels != m->latent_channels)
        K22_ADD("; %d latent channels in the pack, the model has %d", m->latent_channels, w->latent_channels);
    if (w->model_sha256 && w->model_sha256[0]) {
        int found = 0;
        for (int i = 0; i < m->n_models; i++) found |= !strcmp(m->models[i].sha256, w->model_sha256);
        if (!found) {
            K22_ADD("; source model sha256 %.16s... is not among the pack's %d source models (", w->model_sha256, m->n_models);
            for (int i = 0; i < m->n_models; i++) K22_ADD("%s%s %.16s...", i ? ", " : "", m->models[i].name, m->models[i].sha256);
            K22_ADD(")");
        }
    }
#undef K22_ADD
    if (!msg[0]) return K22_OK;
    return k22_err_set(err, K22_ERR_ARG, "%s: pack made for other models or settings: %s", p->path, msg + 2);
}

static k22_status check_range(const k22_pack *p, k22_pack_field f, int64_t start, int64_t n, k22_err *err)
{
    if ((unsigned)f >= K22_PACK_FIELD_COUNT || p->ds[f] < 0)
        return k22_err_set(err, K22_ERR_ARG, "%s: the pack (for %s) holds no '%s'", p->path, k22_pack_for_name(p->m.use),
                           k22_pack_field_name(f));
    if (start < 0 || n < 0 || start > p->counts[0] || n > p->counts[0] - start)
        return k22_err_set(err, K22_ERR_ARG, "%s: rows %lld..%lld of '%s' asked, the pack has %lld", p->path,
                           (long long)start, (long long)(start + n - 1), field_names[f], (long long)p->counts[0]);
    return K22_OK;
}

k22_status k22_pack_read(k22_pack *p, k22_pack_field f, int64_t start, int64_t n, void *dst, k22_err *err)
{
    k22_status st = check_range(p, f, start, n, err);
    if (st) return st;
    if (is_string_field(f)) return k22_err_set(err, K22_ERR_ARG, "%s: '%s' holds strings", p->path, field_names[f]);
    if (n == 0) return K22_OK;
    size_t count = (size_t)n * (size_t)k22_pack_row_numel(&p->m, f);
    herr_t rc;
    if (f == K22_PACK_INPUT_IDS) rc = read_rows(p->ds[f], H5T_NATIVE_INT32, start, n, dst);
    else if (f == K22_PACK_ATTENTION_MASK) rc = read_rows(p->ds[f], H5T_NATIVE_UINT8, start, n, dst);
    else if (p->m.dtype == K22_DTYPE_F32) rc = read_rows(p->ds[f], H5T_NATIVE_FLOAT, start, n, dst);
    else {
        /* fp16 is read as stored and widened here: HDF5's own soft conversion is far slower. */
        if (p->conv_n < count) {
            free(p->conv);
            p->conv = k22_xmalloc(count * sizeof *p->conv);
            p->conv_n = count;
        }
        rc = read_rows(p->ds[f], p->half, start, n, p->conv);
        if (rc >= 0) k22_convert_to_f32(dst, p->conv, K22_DTYPE_F16, count);
    }
    if (rc < 0)
        return k22_err_set(err, K22_ERR_IO, "%s: reading rows %lld..%lld of '%s' failed", p->path, (long long)start,
                           (long long)(start + n - 1), field_names[f]);
    return K22_OK;
}

/* n strings of the 1-D string dataset ds from row start into malloc'd copies. */
static k22_status read_vlstrs(hid_t ds, int64_t start, int64_t n, char **dst, const char *path, const char *name,
                              k22_err *err)
{
    k22_status st = K22_OK;
    if (n == 0) return K22_OK;
    char **vl = k22_xcalloc((size_t)n, sizeof *vl);
    hid_t t = vlstr_type(), fs = -1, ms = -1;
    herr_t rc = select_rows(ds, start, n, &fs, &ms);
    if (rc >= 0) rc = H5Dread(ds, t, ms, fs, H5P_DEFAULT, vl);
    if (rc < 0) st = k22_err_set(err, K22_ERR_IO, "%s: reading rows %lld..%lld of '%s' failed", path, (long long)start,
                                 (long long)(start + n - 1), name);
    int64_t done = 0;
    for (; !st && done < n; done++) {
        size_t len = vl[done] ? strnlen(vl[done], STR_CAP + 1) : 0;
        if (len > STR_CAP) {
            st = k22_err_set(err, K22_ERR_FORMAT, "%s: '%s' row %lld is longer than %zu bytes", path, name,
                             (long long)(start + done), STR_CAP);
            break;
        }
        dst[done] = k22_xstrdup(vl[done] ? vl[done] : "");
    }
    if (st)
        for (int64_t i = 0; i < done; i++) {
            free(dst[i]);
            dst[i] = NULL;
        }
    if (rc >= 0) H5Dvlen_reclaim(t, ms, H5P_DEFAULT, vl);
    if (fs >= 0) H5Sclose(fs);
    if (ms >= 0) H5Sclose(ms);
    H5Tclose(t);
    free(vl);
    return st;
}

k22_status k22_pack_read_strings(k22_pack *p, k22_pack_field f, int64_t start, int64_t n, char **dst, k22_err *err)
{
    k22_status st = check_range(p, f, start, n, err);
    if (st) return st;
    if (!is_string_field(f)) return k22_err_set(err, K22_ERR_ARG, "%s: '%s' is not a string field", p->path, field_names[f]);
    return read_vlstrs(p->ds[f], start, n, dst, p->path, field_names[f], err);
}

k22_status k22_pack_read_rejected(k22_pack *p, int64_t i, char **source, char **reason, k22_err *err)
{
    *source = *reason = NULL;
    if (i < 0 || i >= p->counts[1])
        return k22_err_set(err, K22_ERR_ARG, "%s: rejection %lld asked, the pack has %lld", p->path, (long long)i,
                           (long long)p->counts[1]);
    k22_status st = read_vlstrs(p->rej[0], i, 1, source, p->path, "rejected_source", err);
    if (!st) st = read_vlstrs(p->rej[1], i, 1, reason, p->path, "rejected_reason", err);
    if (st) {
        free(*source);
        *source = NULL;
    }
    return st;
}

/* ------------------------------------------------------------------ describe */

static void describe_dataset(hid_t ds, const char *name, const k22_pack_meta *m, k22_pack_field f)
{
    hsize_t d[H5S_MAX_RANK], ch[H5S_MAX_RANK];
    hid_t sp = H5Dget_space(ds), pl = H5Dget_create_plist(ds);
    int r = H5Sget_simple_extent_ndims(sp);
    H5Sget_simple_extent_dims(sp, d, NULL);
    int cr = H5Pget_layout(pl) == H5D_CHUNKED ? H5Pget_chunk(pl, H5S_MAX_RANK, ch) : 0;
    char shape[128], chunk[128];
    fmt_dims(shape, sizeof shape, r, d, 0);
    if (cr > 0) fmt_dims(chunk, sizeof chunk, cr, ch, 0);
    else snprintf(chunk, sizeof chunk, "none");
    const char *ty = is_string_field(f) ? "utf-8 string" : f == K22_PACK_INPUT_IDS ? "int32"
                   : f == K22_PACK_ATTENTION_MASK ? "uint8" : k22_dtype_name(m->dtype);
    printf("  dataset %-16s %-22s %-12s chunk %s\n", name, shape, ty, chunk);
    H5Pclose(pl);
    H5Sclose(sp);
}

k22_status k22_pack_describe(const char *path, k22_err *err)
{
    k22_pack *p = NULL;
    k22_status st = k22_pack_open(path, &p, err);
    if (st) return st;
    const k22_pack_meta *m = &p->m;
    printf("pack %s: %lld rows, %lld rejected, %lld inputs committed\n", path, (long long)p->counts[0],
           (long long)p->counts[1], (long long)p->counts[2]);
    printf("  format_version %d  k22_version %s  created %s\n", m->format_version, m->k22_version, m->created);
    printf("  for %s  dtype %s  embed_dim %d  tokens %d  resolution %d  latents %dx%dx%d\n", k22_pack_for_name(m->use),
           k22_dtype_name(m->dtype), m->embed_dim, K22_PACK_TOKENS, m->resolution, m->latent_channels,
           m->resolution / 8, m->resolution / 8);
    printf("  preprocessing: %s\n", m->preprocessing);
    for (int i = 0; i < m->n_models; i++)
        printf("  source model %-14s %s  sha256 %s\n", m->models[i].name, m->models[i].path, m->models[i].sha256);
    for (int f = 0; f < K22_PACK_FIELD_COUNT; f++)
        if (p->ds[f] >= 0) describe_dataset(p->ds[f], field_names[f], m, (k22_pack_field)f);
    describe_dataset(p->rej[0], "rejected_source", m, K22_PACK_SOURCE);
    describe_dataset(p->rej[1], "rejected_reason", m, K22_PACK_SOURCE);
    for (int64_t i = 0; i < p->counts[1] && !st; i++) {
        char *s = NULL, *r = NULL;
        st = k22_pack_read_rejected(p, i, &s, &r, err);
        if (!st) printf("  rejected %s: %s\n", s, r);
        free(s);
        free(r);
    }
    k22_pack_close(p);
    return st;
}
