/* pack.h: the HDF5 training pack (DESIGN.md section 3): a writer that appends rows of host
 * arrays in committed chunks (restartable), and a reader that checks every dataset's shape and
 * dtype against the file's attributes before it reads row ranges into host buffers.
 *
 * File layout (format version 2). Root attributes: format_version, k22_version, for
 * ("prior" | "decoder" | "both"), dtype ("F32" | "F16", the stored float type), embed_dim E,
 * tokens (77), resolution r, latent_channels C (4), latent_factor f (the MoVQ's spatial factor,
 * a power of two 1..64, r a multiple of f), latent_size (r/f), preprocessing, created (UTC,
 * ISO 8601), model_names / model_paths / model_sha256 (string arrays, one per source
 * safetensors file), rows_committed, rejected_committed, inputs_committed.
 * Format 1 is the same without latent_factor: f = 8 is implied (latent_size must be r/8). The
 * reader opens both; the writer creates format 2 (a resumed format 1 file stays format 1).
 * A pack without latents (for prior) still records f: the decoder's factor when `k22 pack` was
 * given one for a decoder pack, else 8 (Kandinsky 2.2's MoVQ).
 * Datasets, N rows each, chunked by row and extendible:
 *   caption, source                       (N,) variable-length UTF-8      always
 *   input_ids                             (N, 77) int32                   prior
 *   attention_mask                        (N, 77) uint8                   prior
 *   text_embeds                           (N, E) float                    prior
 *   text_hidden                           (N, 77, E) float                prior
 *   image_embeds                          (N, E) float                    prior and decoder
 *   latents                               (N, C, r/f, r/f) float          decoder
 *   rejected_source, rejected_reason      (M,) variable-length UTF-8      always
 * fp16 is stored as the IEEE half type h5py writes (numpy float16 reads it as is).
 *
 * Commit protocol: rows and rejections are written, the file is flushed, then the *_committed
 * attributes are rewritten and the file is flushed again. A killed writer leaves a file whose
 * first rows_committed rows are intact; readers ignore rows past rows_committed, and
 * k22_pack_writer_resume cuts them off before continuing. */
#ifndef K22_PACK_H
#define K22_PACK_H

#include "k22/k22.h"
#include "k22/tensor.h"

#include <stdint.h>

#define K22_PACK_FORMAT_VERSION 2
#define K22_PACK_TOKENS 77
#define K22_PACK_MAX_MODELS 8

typedef enum { K22_PACK_FOR_PRIOR = 1, K22_PACK_FOR_DECODER = 2, K22_PACK_FOR_BOTH = 3 } k22_pack_for;

typedef enum {
    K22_PACK_CAPTION = 0,   /* (N,) string */
    K22_PACK_SOURCE,        /* (N,) string */
    K22_PACK_INPUT_IDS,     /* (N, 77) int32 */
    K22_PACK_ATTENTION_MASK,/* (N, 77) uint8 */
    K22_PACK_TEXT_EMBEDS,   /* (N, E) */
    K22_PACK_TEXT_HIDDEN,   /* (N, 77, E) */
    K22_PACK_IMAGE_EMBEDS,  /* (N, E) */
    K22_PACK_LATENTS,       /* (N, C, r/f, r/f) */
    K22_PACK_FIELD_COUNT
} k22_pack_field;

/* One source weights file: a name for messages ("prior", "text_encoder"), its path and the
 * SHA-256 of its bytes (64 hex digits, k22_fs_sha256). */
typedef struct {
    char name[64];
    char path[1024];
    char sha256[65];
} k22_pack_model;

/* What a pack holds; the writer takes it, the reader fills it from the attributes. */
typedef struct {
    k22_pack_for use;
    k22_dtype dtype;        /* K22_DTYPE_F32 or K22_DTYPE_F16: stored float datasets */
    int embed_dim;          /* E */
    int resolution;         /* r, a multiple of 8 and of latent_factor */
    int latent_channels;    /* C, 4 for MoVQ */
    /* f: the MoVQ's spatial factor (k22_movq_factor; 8 for Kandinsky 2.2, 2 for `k22 init
     * decoder --size tiny`), a power of two 1..64; latents are (C, r/f, r/f). The reader always
     * fills it (8 for format 1); the writer takes 0 as 8. */
    int latent_factor;
    char preprocessing[1024];
    int n_models;
    k22_pack_model models[K22_PACK_MAX_MODELS];
    /* writer only, not stored: target bytes per chunk of a row dataset (0: 2 MiB). Every chunk
     * is allocated whole on disk, so tiny test packs ask for small ones. */
    size_t chunk_bytes;
    /* reader only */
    int format_version;
    char k22_version[64];
    char created[64];
} k22_pack_meta;

/* Host rows handed to the writer, n rows each, row-major; fields the pack's `for` does not
 * hold are ignored (may be NULL). Floats are f32 whatever the stored dtype. */
typedef struct {
    const char *const *caption;     /* n UTF-8 strings */
    const char *const *source;      /* n strings */
    const int32_t *input_ids;       /* (n, 77) */
    const uint8_t *attention_mask;  /* (n, 77) */
    const float *text_embeds;       /* (n, E) */
    const float *text_hidden;       /* (n, 77, E) */
    const float *image_embeds;      /* (n, E) */
    const float *latents;           /* (n, C, r/f, r/f) */
} k22_pack_batch;

/* 1 when the pack's `use` holds field f. */
int k22_pack_for_has(k22_pack_for use, k22_pack_field f);
const char *k22_pack_field_name(k22_pack_field f);
const char *k22_pack_for_name(k22_pack_for use);
/* Parses "prior" | "decoder" | "both"; 0 on success, -1 otherwise. */
int k22_pack_for_parse(const char *s, k22_pack_for *out);
/* Values per row of field f under meta m (77 for input_ids, E for text_embeds, C*(r/f)^2 for
 * latents with f = 8 where m->latent_factor is 0; 1 for the string fields). */
int64_t k22_pack_row_numel(const k22_pack_meta *m, k22_pack_field f);
/* 1 when path begins with the HDF5 signature (\x89HDF\r\n\x1a\n). */
int k22_pack_is_hdf5(const char *path);

/* ---- writer ---- */
typedef struct k22_pack_writer k22_pack_writer;

/* Creates (truncates) path with m's attributes and empty datasets. *out owned by the caller,
 * released by k22_pack_writer_close. */
k22_status k22_pack_writer_create(const char *path, const k22_pack_meta *m, k22_pack_writer **out,
                                  k22_err *err);
/* Reopens a pack made with the same meta (every attribute but created/k22_version/
 * format_version must match: the error names the first that differs), cuts off uncommitted
 * rows and rejections, and returns the committed counts: the caller skips *inputs_committed
 * inputs and goes on. */
k22_status k22_pack_writer_resume(const char *path, const k22_pack_meta *m, k22_pack_writer **out,
                                  int64_t *rows_committed, int64_t *inputs_committed, k22_err *err);
/* Writes n rows after the last written row (not yet committed). */
k22_status k22_pack_writer_append(k22_pack_writer *w, const k22_pack_batch *r, int64_t n, k22_err *err);
/* Records an input skipped for reason (written at the next commit). */
k22_status k22_pack_writer_reject(k22_pack_writer *w, const char *source, const char *reason,
                                  k22_err *err);
/* Commits everything written so far; inputs_consumed is how many inputs (rows + rejections,
 * in the caller's input order) these rows cover, saved for resume. */
k22_status k22_pack_writer_commit(k22_pack_writer *w, int64_t inputs_consumed, k22_err *err);
int64_t k22_pack_writer_rows(const k22_pack_writer *w); /* rows written (committed or not) */
/* Closes the file WITHOUT committing pending rows (commit first); frees w; NULL is fine. */
k22_status k22_pack_writer_close(k22_pack_writer *w, k22_err *err);

/* ---- reader ---- */
typedef struct k22_pack k22_pack;

/* Opens path read-only and checks the attributes and every dataset's rank, dims and dtype
 * (errors name the dataset and what differs). *out is released by k22_pack_close. */
k22_status k22_pack_open(const char *path, k22_pack **out, k22_err *err);
/* The same on an in-memory file image (copied; name is used in messages only): fuzzing. */
k22_status k22_pack_open_mem(const char *name, const void *data, size_t n, k22_pack **out, k22_err *err);
void k22_pack_close(k22_pack *p);
const k22_pack_meta *k22_pack_meta_of(const k22_pack *p);
int64_t k22_pack_rows(const k22_pack *p);     /* committed rows */
int64_t k22_pack_rejected(const k22_pack *p); /* committed rejections */

/* What a model needs from a pack; 0 / NULL members are not checked. resolution,
 * latent_channels and latent_factor are checked only when need includes the decoder. */
typedef struct {
    k22_pack_for need;      /* the datasets the stage reads */
    int embed_dim;
    int resolution;
    int latent_channels;
    const char *model_sha256; /* must equal the sha256 of one of the pack's source models */
    int latent_factor;      /* the MoVQ's spatial factor (last, so older initializers keep it 0) */
} k22_pack_want;
/* K22_OK, or K22_ERR_ARG with a message naming every difference. */
k22_status k22_pack_check_compatible(const k22_pack *p, const k22_pack_want *w, k22_err *err);

/* Reads rows [start, start + n) of numeric field f into dst: float fields as f32 (fp16
 * converted), input_ids as int32, attention_mask as uint8. */
k22_status k22_pack_read(k22_pack *p, k22_pack_field f, int64_t start, int64_t n, void *dst,
                         k22_err *err);
/* Reads rows [start, start + n) of a string field (caption, source) into n malloc'd strings
 * (caller frees each; strings longer than 1 MiB are refused). */
k22_status k22_pack_read_strings(k22_pack *p, k22_pack_field f, int64_t start, int64_t n, char **dst,
                                 k22_err *err);
/* Reads committed rejection i: malloc'd source and reason (caller frees). */
k22_status k22_pack_read_rejected(k22_pack *p, int64_t i, char **source, char **reason, k22_err *err);

/* `k22 inspect data.h5`: prints rows, datasets (shape, stored dtype, chunk), provenance
 * attributes and the rejected inputs to stdout. */
k22_status k22_pack_describe(const char *path, k22_err *err);

#endif
