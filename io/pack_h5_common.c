/* pack_h5_common.c: what every part of the HDF5 pack (io/pack_h5_*.c) shares: field names and
 * shapes, the HDF5 types of stored values, and row-range selection, writing and reading. */
#include "pack_h5_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const k22_ph_field_names[K22_PACK_FIELD_COUNT] = {
    "caption", "source", "input_ids", "attention_mask",
    "text_embeds", "text_hidden", "image_embeds", "latents",
};

const char *k22_pack_field_name(k22_pack_field f)
{
    return (unsigned)f < K22_PACK_FIELD_COUNT ? k22_ph_field_names[f] : "?";
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

int k22_ph_is_string(k22_pack_field f) { return f == K22_PACK_CAPTION || f == K22_PACK_SOURCE; }
int k22_ph_is_float(k22_pack_field f) { return f >= K22_PACK_TEXT_EMBEDS && f < K22_PACK_FIELD_COUNT; }

int k22_ph_factor(const k22_pack_meta *m)
{
    return m->latent_factor ? m->latent_factor : K22_PH_FACTOR_V1;
}

int k22_ph_row_dims(const k22_pack_meta *m, k22_pack_field f, hsize_t d[3])
{
    hsize_t s = (hsize_t)(m->resolution / k22_ph_factor(m)); // latents: (C, r/f, r/f)
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
    int nd = k22_ph_row_dims(m, f, d);
    int64_t n = 1;
    for (int i = 0; i < nd; i++) n *= (int64_t)d[i];
    return n;
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

void k22_ph_quiet(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

/* IEEE binary16, little-endian: the layout numpy's float16 and h5py use. */
hid_t k22_ph_half_type(void)
{
    hid_t t = H5Tcopy(H5T_IEEE_F32LE);
    H5Tset_fields(t, 15, 10, 5, 0, 10);
    H5Tset_size(t, 2);
    H5Tset_ebias(t, 15);
    return t;
}

hid_t k22_ph_vlstr_type(void)
{
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8);
    return t;
}

void k22_ph_close_id(hid_t *id, herr_t (*fn)(hid_t))
{
    if (*id >= 0) fn(*id);
    *id = -1;
}

void k22_ph_fmt_dims(char *buf, size_t n, int rank, const hsize_t *d, int row_free)
{
    size_t k = (size_t)snprintf(buf, n, "(");
    for (int i = 0; i < rank && k < n; i++) {
        if (i == 0 && row_free) k += (size_t)snprintf(buf + k, n - k, "N");
        else k += (size_t)snprintf(buf + k, n - k, "%s%llu", i ? ", " : "", (unsigned long long)d[i]);
    }
    if (k < n) snprintf(buf + k, n - k, ")");
}

int k22_ph_select_rows(hid_t ds, int64_t start, int64_t n, hid_t *fs, hid_t *ms)
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

herr_t k22_ph_write_rows(hid_t ds, hid_t mtype, int64_t start, int64_t n, const void *buf)
{
    hid_t fs = -1, ms = -1;
    hsize_t d[H5S_MAX_RANK];
    hid_t sp = H5Dget_space(ds);
    int r = H5Sget_simple_extent_ndims(sp);
    H5Sget_simple_extent_dims(sp, d, NULL);
    H5Sclose(sp);
    d[0] = (hsize_t)(start + n);
    herr_t rc = r < 1 ? -1 : H5Dset_extent(ds, d);
    if (rc >= 0) rc = k22_ph_select_rows(ds, start, n, &fs, &ms);
    if (rc >= 0) rc = H5Dwrite(ds, mtype, ms, fs, H5P_DEFAULT, buf);
    if (fs >= 0) H5Sclose(fs);
    if (ms >= 0) H5Sclose(ms);
    return rc;
}

herr_t k22_ph_read_rows(hid_t ds, hid_t mtype, int64_t start, int64_t n, void *buf)
{
    hid_t fs = -1, ms = -1;
    herr_t rc = k22_ph_select_rows(ds, start, n, &fs, &ms);
    if (rc >= 0) rc = H5Dread(ds, mtype, ms, fs, H5P_DEFAULT, buf);
    if (fs >= 0) H5Sclose(fs);
    if (ms >= 0) H5Sclose(ms);
    return rc;
}

herr_t k22_ph_truncate_rows(hid_t ds, int64_t n)
{
    hsize_t d[H5S_MAX_RANK];
    hid_t sp = H5Dget_space(ds);
    H5Sget_simple_extent_dims(sp, d, NULL);
    H5Sclose(sp);
    d[0] = (hsize_t)n;
    return H5Dset_extent(ds, d);
}
