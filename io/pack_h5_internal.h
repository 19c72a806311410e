/* pack_h5_internal.h: private to io/pack_h5_*.c, the HDF5 training pack (include/k22/pack.h):
 * the reader's struct and the helpers the writer, reader and describe share. Every helper that
 * takes path and err fills err naming the file and the attribute or dataset. */
#ifndef K22_PACK_H5_INTERNAL_H
#define K22_PACK_H5_INTERNAL_H

#include "k22/pack.h"

#include <hdf5.h>

#define STR_CAP ((size_t)1 << 20) /* longest caption/source/attribute string read back */
/* The spatial factor format 1 implies, and the writer's default when meta gives 0. */
#define K22_PH_FACTOR_V1 8

extern const char *const k22_ph_field_names[K22_PACK_FIELD_COUNT];

struct k22_pack {
    char path[4096];
    k22_pack_meta m;
    hid_t file, ds[K22_PACK_FIELD_COUNT], rej[2], half;
    int64_t counts[3]; /* committed rows, rejections, inputs */
    uint16_t *conv;    /* fp16 scratch */
    size_t conv_n;
};

/* ---- pack_h5_common.c ---- */
int k22_ph_is_string(k22_pack_field f);
int k22_ph_is_float(k22_pack_field f);
/* m->latent_factor, or K22_PH_FACTOR_V1 when it is 0 (callers that predate the field). */
int k22_ph_factor(const k22_pack_meta *m);
/* Dims of field f after the row dimension into d; returns their count. */
int k22_ph_row_dims(const k22_pack_meta *m, k22_pack_field f, hsize_t d[3]);
void k22_ph_quiet(void);           /* HDF5's own error printing off */
hid_t k22_ph_half_type(void);      /* caller closes */
hid_t k22_ph_vlstr_type(void);     /* caller closes */
void k22_ph_close_id(hid_t *id, herr_t (*fn)(hid_t)); /* closes if >= 0, sets -1 */
/* "(a, b, c)" into buf; row_free writes N for the first dim. */
void k22_ph_fmt_dims(char *buf, size_t n, int rank, const hsize_t *d, int row_free);
/* Selects rows [start, start+n) of ds; returns the file and memory spaces (caller closes). */
int k22_ph_select_rows(hid_t ds, int64_t start, int64_t n, hid_t *fs, hid_t *ms);
herr_t k22_ph_write_rows(hid_t ds, hid_t mtype, int64_t start, int64_t n, const void *buf); /* extends */
herr_t k22_ph_read_rows(hid_t ds, hid_t mtype, int64_t start, int64_t n, void *buf);
herr_t k22_ph_truncate_rows(hid_t ds, int64_t n);

/* ---- pack_h5_attr.c ---- */
k22_status k22_ph_attr_write_i64(hid_t loc, const char *name, int64_t v, const char *path, k22_err *err);
/* Rewrites an existing scalar int64 attribute in place (the commit step). */
k22_status k22_ph_attr_update_i64(hid_t loc, const char *name, int64_t v, const char *path, k22_err *err);
k22_status k22_ph_attr_write_str(hid_t loc, const char *name, const char *v, const char *path, k22_err *err);
k22_status k22_ph_attr_write_strs(hid_t loc, const char *name, const char **v, int n, const char *path,
                                  k22_err *err);
k22_status k22_ph_attr_read_i64(hid_t loc, const char *name, int64_t *v, const char *path, k22_err *err);
/* An integer attribute that must lie in lo..hi. */
k22_status k22_ph_attr_read_int(hid_t loc, const char *name, int lo, int hi, int *v, const char *path,
                                k22_err *err);
/* Attribute name (scalar or 1-D, at most max_n strings) into *n_out malloc'd strings. */
k22_status k22_ph_attr_read_strs(hid_t loc, const char *name, int max_n, char **out, int *n_out,
                                 const char *path, k22_err *err);
/* A single string attribute into dst (longer than cap - 1 bytes is an error). */
k22_status k22_ph_attr_read_str(hid_t loc, const char *name, char *dst, size_t cap, const char *path,
                                k22_err *err);

/* ---- pack_h5_schema.c ---- */
/* Writes every root attribute of format K22_PACK_FORMAT_VERSION, counts zero. */
k22_status k22_ph_meta_write(hid_t f, const k22_pack_meta *m, const char *path, k22_err *err);
/* Reads and range-checks every attribute (format 1 or 2) into m; counts = {rows, rejected,
 * inputs} committed. */
k22_status k22_ph_meta_read(hid_t f, k22_pack_meta *m, int64_t counts[3], const char *path, k22_err *err);
/* Opens and checks the datasets m->use holds (others stay -1) and the rejection lists. */
k22_status k22_ph_datasets_open(hid_t file, const k22_pack_meta *m, const int64_t counts[3],
                                hid_t ds[K22_PACK_FIELD_COUNT], hid_t rej[2], const char *path, k22_err *err);

#endif
