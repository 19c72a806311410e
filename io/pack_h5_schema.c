/* pack_h5_schema.c: the pack's schema (include/k22/pack.h): writing and reading the attributes
 * for each format version, and opening every dataset with its rank, dims and type checked
 * against them. */
#include "pack_h5_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_ROWS_LIMIT ((int64_t)1 << 40)

k22_status k22_ph_meta_write(hid_t f, const k22_pack_meta *m, const char *path, k22_err *err)
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
    k22_status st = k22_ph_attr_write_i64(f, "format_version", K22_PACK_FORMAT_VERSION, path, err);
    if (!st) st = k22_ph_attr_write_str(f, "k22_version", K22_VERSION, path, err);
    if (!st) st = k22_ph_attr_write_str(f, "for", k22_pack_for_name(m->use), path, err);
    if (!st) st = k22_ph_attr_write_str(f, "dtype", k22_dtype_name(m->dtype), path, err);
    if (!st) st = k22_ph_attr_write_i64(f, "embed_dim", m->embed_dim, path, err);
    if (!st) st = k22_ph_attr_write_i64(f, "tokens", K22_PACK_TOKENS, path, err);
    if (!st) st = k22_ph_attr_write_i64(f, "resolution", m->resolution, path, err);
    if (!st) st = k22_ph_attr_write_i64(f, "latent_channels", m->latent_channels, path, err);
    if (!st) st = k22_ph_attr_write_i64(f, "latent_factor", k22_ph_factor(m), path, err);
    if (!st) st = k22_ph_attr_write_i64(f, "latent_size", m->resolution / k22_ph_factor(m), path, err);
    if (!st) st = k22_ph_attr_write_str(f, "preprocessing", m->preprocessing, path, err);
    if (!st) st = k22_ph_attr_write_str(f, "created", created, path, err);
    if (!st) st = k22_ph_attr_write_strs(f, "model_names", names, m->n_models, path, err);
    if (!st) st = k22_ph_attr_write_strs(f, "model_paths", paths, m->n_models, path, err);
    if (!st) st = k22_ph_attr_write_strs(f, "model_sha256", shas, m->n_models, path, err);
    if (!st) st = k22_ph_attr_write_i64(f, "rows_committed", 0, path, err);
    if (!st) st = k22_ph_attr_write_i64(f, "rejected_committed", 0, path, err);
    if (!st) st = k22_ph_attr_write_i64(f, "inputs_committed", 0, path, err);
    return st;
}

static k22_status meta_read_models(hid_t f, k22_pack_meta *m, const char *path, k22_err *err)
{
    static const char *const keys[3] = {"model_names", "model_paths", "model_sha256"};
    char *v[3][K22_PACK_MAX_MODELS];
    int n[3] = {0, 0, 0};
    k22_status st = K22_OK;
    for (int k = 0; k < 3 && !st; k++) st = k22_ph_attr_read_strs(f, keys[k], K22_PACK_MAX_MODELS, v[k], &n[k], path, err);
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

/* resolution, latent_channels, latent_factor and latent_size: format 1 implies factor 8,
 * format 2 stores it; either way latent_size must be resolution / factor. */
static k22_status meta_read_latent(hid_t f, k22_pack_meta *m, const char *path, k22_err *err)
{
    int lsize = 0;
    k22_status st = k22_ph_attr_read_int(f, "resolution", 8, 1 << 15, &m->resolution, path, err);
    if (!st && m->resolution % 8)
        st = k22_err_set(err, K22_ERR_FORMAT, "%s: attribute 'resolution' is %d, not a multiple of 8", path, m->resolution);
    if (!st) st = k22_ph_attr_read_int(f, "latent_channels", 1, 64, &m->latent_channels, path, err);
    if (st) return st;
    m->latent_factor = K22_PH_FACTOR_V1;
    if (m->format_version >= 2) {
        st = k22_ph_attr_read_int(f, "latent_factor", 1, 64, &m->latent_factor, path, err);
        if (!st && (m->latent_factor & (m->latent_factor - 1)))
            st = k22_err_set(err, K22_ERR_FORMAT, "%s: attribute 'latent_factor' is %d, not a power of two", path,
                             m->latent_factor);
        if (!st && m->resolution % m->latent_factor)
            st = k22_err_set(err, K22_ERR_FORMAT, "%s: attribute 'resolution' is %d, not a multiple of latent_factor %d",
                             path, m->resolution, m->latent_factor);
        if (st) return st;
    }
    st = k22_ph_attr_read_int(f, "latent_size", 1, 1 << 15, &lsize, path, err);
    if (!st && lsize != m->resolution / m->latent_factor)
        st = k22_err_set(err, K22_ERR_FORMAT, "%s: attribute 'latent_size' is %d but resolution %d / latent_factor %d%s "
                         "gives %d", path, lsize, m->resolution, m->latent_factor,
                         m->format_version < 2 ? " (implied by format 1)" : "", m->resolution / m->latent_factor);
    return st;
}

/* Reads and range-checks every attribute; counts = {rows, rejected, inputs} committed. */
k22_status k22_ph_meta_read(hid_t f, k22_pack_meta *m, int64_t counts[3], const char *path, k22_err *err)
{
    char s[64];
    int tokens = 0;
    memset(m, 0, sizeof *m);
    k22_status st = k22_ph_attr_read_int(f, "format_version", 0, 1 << 30, &m->format_version, path, err);
    if (st) return st;
    if (m->format_version < 1 || m->format_version > K22_PACK_FORMAT_VERSION)
        return k22_err_set(err, K22_ERR_UNSUPPORTED, "%s: pack format version %d, this k22 reads 1..%d", path,
                           m->format_version, K22_PACK_FORMAT_VERSION);
    st = k22_ph_attr_read_str(f, "for", s, sizeof s, path, err);
    if (!st && k22_pack_for_parse(s, &m->use))
        st = k22_err_set(err, K22_ERR_FORMAT, "%s: attribute 'for' is '%s', expected prior, decoder or both", path, s);
    if (!st) st = k22_ph_attr_read_str(f, "dtype", s, sizeof s, path, err);
    if (!st && (k22_dtype_parse(s, &m->dtype) || (m->dtype != K22_DTYPE_F32 && m->dtype != K22_DTYPE_F16)))
        st = k22_err_set(err, K22_ERR_FORMAT, "%s: attribute 'dtype' is '%s', expected F32 or F16", path, s);
    if (!st) st = k22_ph_attr_read_int(f, "embed_dim", 1, 1 << 16, &m->embed_dim, path, err);
    if (!st) st = k22_ph_attr_read_int(f, "tokens", K22_PACK_TOKENS, K22_PACK_TOKENS, &tokens, path, err);
    if (!st) st = meta_read_latent(f, m, path, err);
    if (!st) st = k22_ph_attr_read_str(f, "preprocessing", m->preprocessing, sizeof m->preprocessing, path, err);
    if (!st) st = k22_ph_attr_read_str(f, "k22_version", m->k22_version, sizeof m->k22_version, path, err);
    if (!st) st = k22_ph_attr_read_str(f, "created", m->created, sizeof m->created, path, err);
    if (!st) st = meta_read_models(f, m, path, err);
    static const char *const cnames[3] = {"rows_committed", "rejected_committed", "inputs_committed"};
    for (int i = 0; i < 3 && !st; i++) {
        st = k22_ph_attr_read_i64(f, cnames[i], &counts[i], path, err);
        if (!st && (counts[i] < 0 || counts[i] > MAX_ROWS_LIMIT))
            st = k22_err_set(err, K22_ERR_FORMAT, "%s: attribute '%s' is %lld", path, cnames[i], (long long)counts[i]);
    }
    if (!st && counts[2] < counts[0] + counts[1])
        st = k22_err_set(err, K22_ERR_FORMAT, "%s: inputs_committed %lld is less than rows %lld + rejected %lld",
                         path, (long long)counts[2], (long long)counts[0], (long long)counts[1]);
    return st;
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
    if (k22_ph_is_string(f)) {
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
        k22_ph_fmt_dims(want, sizeof want, rank, wd, 1);
        if (r < 0 || r > H5S_MAX_RANK) snprintf(got, sizeof got, "an unreadable shape");
        else k22_ph_fmt_dims(got, sizeof got, r, d, 0);
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
k22_status k22_ph_datasets_open(hid_t file, const k22_pack_meta *m, const int64_t counts[3],
                                hid_t ds[K22_PACK_FIELD_COUNT], hid_t rej[2], const char *path, k22_err *err)
{
    k22_status st = K22_OK;
    for (int f = 0; f < K22_PACK_FIELD_COUNT && !st; f++) {
        if (!k22_pack_for_has(m->use, (k22_pack_field)f)) continue;
        hsize_t tail[3];
        int nd = k22_ph_row_dims(m, (k22_pack_field)f, tail);
        st = open_checked(file, k22_ph_field_names[f], nd + 1, tail, counts[0], &ds[f], path, err);
        if (!st) st = check_type(ds[f], k22_ph_field_names[f], m, (k22_pack_field)f, path, err);
        if (st == K22_ERR_KEY)
            st = k22_err_set(err, K22_ERR_FORMAT, "%s: dataset '%s' missing (a pack for %s holds it)", path,
                             k22_ph_field_names[f], k22_pack_for_name(m->use));
    }
    static const char *const rn[2] = {"rejected_source", "rejected_reason"};
    for (int i = 0; i < 2 && !st; i++) {
        st = open_checked(file, rn[i], 1, NULL, counts[1], &rej[i], path, err);
        if (!st) st = check_type(rej[i], rn[i], m, K22_PACK_SOURCE, path, err);
        if (st == K22_ERR_KEY) st = k22_err_set(err, K22_ERR_FORMAT, "%s: dataset '%s' missing", path, rn[i]);
    }
    return st;
}
