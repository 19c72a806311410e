/* pack_h5_read.c: the checking pack reader: open (file or memory image), row-range reads of
 * numbers and strings, rejections, and the compatibility check a training run makes. */
#include "pack_h5_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void k22_pack_close(k22_pack *p)
{
    if (!p) return;
    for (int f = 0; f < K22_PACK_FIELD_COUNT; f++) k22_ph_close_id(&p->ds[f], H5Dclose);
    k22_ph_close_id(&p->rej[0], H5Dclose);
    k22_ph_close_id(&p->rej[1], H5Dclose);
    k22_ph_close_id(&p->half, H5Tclose);
    k22_ph_close_id(&p->file, H5Fclose);
    free(p->conv);
    free(p);
}

static k22_pack *pack_new(const char *path)
{
    k22_pack *p = k22_xcalloc(1, sizeof *p);
    snprintf(p->path, sizeof p->path, "%s", path);
    p->file = p->rej[0] = p->rej[1] = -1;
    for (int f = 0; f < K22_PACK_FIELD_COUNT; f++) p->ds[f] = -1;
    p->half = k22_ph_half_type();
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
    st = k22_ph_meta_read(p->file, &p->m, p->counts, path, err);
    if (!st) st = k22_ph_datasets_open(p->file, &p->m, p->counts, p->ds, p->rej, path, err);
out:
    if (st) k22_pack_close(p);
    else *out = p;
    return st;
}

k22_status k22_pack_open(const char *path, k22_pack **out, k22_err *err)
{
    *out = NULL;
    k22_ph_quiet();
    if (!k22_pack_is_hdf5(path))
        return k22_err_set(err, K22_ERR_FORMAT, "%s: not an HDF5 file (no HDF5 signature at byte 0)", path);
    return pack_open_fapl(path, H5P_DEFAULT, out, err);
}

k22_status k22_pack_open_mem(const char *name, const void *data, size_t n, k22_pack **out, k22_err *err)
{
    static const unsigned char sig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
    *out = NULL;
    k22_ph_quiet();
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
    int mf = m->latent_factor, wf = w->latent_factor ? w->latent_factor : mf;
    if (w->resolution && (w->need & K22_PACK_FOR_DECODER) && w->resolution != m->resolution)
        K22_ADD("; resolution %d in the pack (latents %dx%d), the run wants %d (latents %dx%d)", m->resolution,
                m->resolution / mf, m->resolution / mf, w->resolution, w->resolution / wf, w->resolution / wf);
    if (w->latent_factor && (w->need & K22_PACK_FOR_DECODER) && w->latent_factor != mf)
        K22_ADD("; latent_factor %d in the pack (latents at resolution / %d), the model's MoVQ has %d", mf, mf,
                w->latent_factor);
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
                           (long long)start, (long long)(start + n - 1), k22_ph_field_names[f], (long long)p->counts[0]);
    return K22_OK;
}

k22_status k22_pack_read(k22_pack *p, k22_pack_field f, int64_t start, int64_t n, void *dst, k22_err *err)
{
    k22_status st = check_range(p, f, start, n, err);
    if (st) return st;
    if (k22_ph_is_string(f)) return k22_err_set(err, K22_ERR_ARG, "%s: '%s' holds strings", p->path, k22_ph_field_names[f]);
    if (n == 0) return K22_OK;
    size_t count = (size_t)n * (size_t)k22_pack_row_numel(&p->m, f);
    herr_t rc;
    if (f == K22_PACK_INPUT_IDS) rc = k22_ph_read_rows(p->ds[f], H5T_NATIVE_INT32, start, n, dst);
    else if (f == K22_PACK_ATTENTION_MASK) rc = k22_ph_read_rows(p->ds[f], H5T_NATIVE_UINT8, start, n, dst);
    else if (p->m.dtype == K22_DTYPE_F32) rc = k22_ph_read_rows(p->ds[f], H5T_NATIVE_FLOAT, start, n, dst);
    else {
        /* fp16 is read as stored and widened here: HDF5's own soft conversion is far slower. */
        if (p->conv_n < count) {
            free(p->conv);
            p->conv = k22_xmalloc(count * sizeof *p->conv);
            p->conv_n = count;
        }
        rc = k22_ph_read_rows(p->ds[f], p->half, start, n, p->conv);
        if (rc >= 0) k22_convert_to_f32(dst, p->conv, K22_DTYPE_F16, count);
    }
    if (rc < 0)
        return k22_err_set(err, K22_ERR_IO, "%s: reading rows %lld..%lld of '%s' failed", p->path, (long long)start,
                           (long long)(start + n - 1), k22_ph_field_names[f]);
    return K22_OK;
}

/* n strings of the 1-D string dataset ds from row start into malloc'd copies. */
static k22_status read_vlstrs(hid_t ds, int64_t start, int64_t n, char **dst, const char *path, const char *name,
                              k22_err *err)
{
    k22_status st = K22_OK;
    if (n == 0) return K22_OK;
    char **vl = k22_xcalloc((size_t)n, sizeof *vl);
    hid_t t = k22_ph_vlstr_type(), fs = -1, ms = -1;
    herr_t rc = k22_ph_select_rows(ds, start, n, &fs, &ms);
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
    if (!k22_ph_is_string(f)) return k22_err_set(err, K22_ERR_ARG, "%s: '%s' is not a string field", p->path, k22_ph_field_names[f]);
    return read_vlstrs(p->ds[f], start, n, dst, p->path, k22_ph_field_names[f], err);
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
