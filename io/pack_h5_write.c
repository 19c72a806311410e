/* pack_h5_write.c: the row-appending, restartable pack writer (commit protocol in
 * include/k22/pack.h). */
#include "pack_h5_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK_TARGET ((size_t)2 << 20) /* bytes per chunk of a row dataset: 1-4 MB reads */
#define CHUNK_MAX_ROWS 4096
#define REJ_CHUNK_ROWS 256

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

/* Bytes of one element of field f as stored. */
static size_t stored_elem_size(const k22_pack_meta *m, k22_pack_field f)
{
    if (f == K22_PACK_INPUT_IDS) return 4;
    if (f == K22_PACK_ATTENTION_MASK) return 1;
    if (k22_ph_is_float(f)) return m->dtype == K22_DTYPE_F16 ? 2 : 4;
    return 16; /* a variable-length string's heap reference */
}

/* The file type of field f (caller closes). */
static hid_t file_type(const k22_pack_meta *m, k22_pack_field f)
{
    if (k22_ph_is_string(f)) return k22_ph_vlstr_type();
    if (f == K22_PACK_INPUT_IDS) return H5Tcopy(H5T_STD_I32LE);
    if (f == K22_PACK_ATTENTION_MASK) return H5Tcopy(H5T_STD_U8LE);
    return m->dtype == K22_DTYPE_F16 ? k22_ph_half_type() : H5Tcopy(H5T_IEEE_F32LE);
}

static k22_pack_writer *writer_new(const char *path, const k22_pack_meta *m)
{
    k22_pack_writer *w = k22_xcalloc(1, sizeof *w);
    snprintf(w->path, sizeof w->path, "%s", path);
    w->m = *m;
    w->m.latent_factor = k22_ph_factor(m); /* 0 means 8: stored and compared as 8 */
    w->file = w->half = w->rej[0] = w->rej[1] = -1;
    for (int f = 0; f < K22_PACK_FIELD_COUNT; f++) w->ds[f] = -1;
    w->half = k22_ph_half_type();
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
    int f = k22_ph_factor(m);
    if (f < 1 || f > 64 || (f & (f - 1)))
        return k22_err_set(err, K22_ERR_ARG, "pack: latent_factor %d, expected a power of two 1..64", f);
    if (m->resolution % f)
        return k22_err_set(err, K22_ERR_ARG, "pack: resolution %d is not a multiple of latent_factor %d", m->resolution, f);
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
    k22_ph_quiet();
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
    st = k22_ph_meta_write(w->file, m, path, err);
    for (int f = 0; f < K22_PACK_FIELD_COUNT && !st; f++) {
        if (!k22_pack_for_has(m->use, (k22_pack_field)f)) continue;
        hsize_t tail[3];
        int nd = k22_ph_row_dims(m, (k22_pack_field)f, tail);
        hid_t t = file_type(m, (k22_pack_field)f);
        w->ds[f] = create_rows_dataset(w->file, k22_ph_field_names[f], t, nd + 1, tail, chunk_rows_for(m, (k22_pack_field)f));
        H5Tclose(t);
        if (w->ds[f] < 0) st = k22_err_set(err, K22_ERR_IO, "%s: cannot create dataset '%s'", path, k22_ph_field_names[f]);
    }
    static const char *const rn[2] = {"rejected_source", "rejected_reason"};
    for (int i = 0; i < 2 && !st; i++) {
        hid_t t = k22_ph_vlstr_type();
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
    K22_DIFF(a->latent_factor != b->latent_factor, "%s: latent_factor %d in the pack, %d in this run", path,
             a->latent_factor, b->latent_factor);
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
    k22_ph_quiet();
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
    st = k22_ph_meta_read(w->file, &have, counts, path, err);
    if (!st) st = meta_compare(&have, &w->m, path, err);
    if (!st) st = k22_ph_datasets_open(w->file, &w->m, counts, w->ds, w->rej, path, err);
    /* Rows past the last commit were written by the killed run: cut them off so that this run
     * rewrites them and the file ends up as an uninterrupted run's. */
    for (int f = 0; f < K22_PACK_FIELD_COUNT && !st; f++)
        if (w->ds[f] >= 0 && k22_ph_truncate_rows(w->ds[f], counts[0]) < 0)
            st = k22_err_set(err, K22_ERR_IO, "%s: cannot cut dataset '%s' back to %lld rows", path, k22_ph_field_names[f],
                             (long long)counts[0]);
    for (int i = 0; i < 2 && !st; i++)
        if (k22_ph_truncate_rows(w->rej[i], counts[1]) < 0)
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
    if (k22_ph_is_string(f)) {
        const char *const *s = src;
        for (int64_t i = 0; i < n; i++)
            if (!s[i]) return k22_err_set(err, K22_ERR_ARG, "%s: row %lld: %s is NULL", w->path,
                                          (long long)(w->rows + i), k22_ph_field_names[f]);
        mt = k22_ph_vlstr_type();
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
    herr_t rc = k22_ph_write_rows(w->ds[f], mt, w->rows, n, buf);
    H5Tclose(mt);
    if (rc < 0)
        return k22_err_set(err, K22_ERR_IO, "%s: writing rows %lld..%lld of '%s' failed", w->path, (long long)w->rows,
                           (long long)(w->rows + n - 1), k22_ph_field_names[f]);
    return K22_OK;
}

k22_status k22_pack_writer_append(k22_pack_writer *w, const k22_pack_batch *r, int64_t n, k22_err *err)
{
    if (n < 0 || n > (1 << 24)) return k22_err_set(err, K22_ERR_ARG, "%s: append of %lld rows", w->path, (long long)n);
    if (n == 0) return K22_OK;
    for (int f = 0; f < K22_PACK_FIELD_COUNT; f++)
        if (w->ds[f] >= 0 && !field_src(r, (k22_pack_field)f))
            return k22_err_set(err, K22_ERR_ARG, "%s: append: no '%s' rows given (the pack is for %s)", w->path,
                               k22_ph_field_names[f], k22_pack_for_name(w->m.use));
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
        hid_t t = k22_ph_vlstr_type();
        herr_t rc = k22_ph_write_rows(w->rej[0], t, w->rejected, w->npend, w->pend[0]);
        if (rc >= 0) rc = k22_ph_write_rows(w->rej[1], t, w->rejected, w->npend, w->pend[1]);
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
    k22_status st = k22_ph_attr_update_i64(w->file, "rows_committed", w->rows, w->path, err);
    if (!st) st = k22_ph_attr_update_i64(w->file, "rejected_committed", w->rejected, w->path, err);
    if (!st) st = k22_ph_attr_update_i64(w->file, "inputs_committed", inputs_consumed, w->path, err);
    if (!st && H5Fflush(w->file, H5F_SCOPE_GLOBAL) < 0) st = k22_err_set(err, K22_ERR_IO, "%s: flush failed", w->path);
    return st;
}

int64_t k22_pack_writer_rows(const k22_pack_writer *w) { return w->rows; }

k22_status k22_pack_writer_close(k22_pack_writer *w, k22_err *err)
{
    if (!w) return K22_OK;
    for (int f = 0; f < K22_PACK_FIELD_COUNT; f++) k22_ph_close_id(&w->ds[f], H5Dclose);
    k22_ph_close_id(&w->rej[0], H5Dclose);
    k22_ph_close_id(&w->rej[1], H5Dclose);
    k22_ph_close_id(&w->half, H5Tclose);
    herr_t rc = w->file >= 0 ? H5Fclose(w->file) : 0;
    k22_status st = rc < 0 ? k22_err_set(err, K22_ERR_IO, "%s: closing the pack failed", w->path) : K22_OK;
    pend_clear(w);
    free(w->pend[0]);
    free(w->pend[1]);
    free(w->conv);
    free(w);
    return st;
}
