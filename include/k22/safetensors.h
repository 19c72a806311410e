/* safetensors.h: the safetensors format (an 8-byte little-endian header length, a JSON header
 * naming each tensor's dtype, shape and [begin, end) byte range in the data section, then the
 * data). The reader mmaps and checks every bound before any pointer is handed out; the writer is
 * deterministic (tensors laid out as the reference writer does: widest dtype first, then by name;
 * fixed JSON spelling; 8-byte aligned data) so writing the same tensors twice gives the same bytes,
 * equal to what the Python safetensors library writes. */
#ifndef K22_SAFETENSORS_H
#define K22_SAFETENSORS_H

#include "k22/tensor.h"

/* Caps applied before allocating anything a file asks for. */
#define K22_ST_MAX_HEADER (100u << 20) /* 100 MiB of JSON header */
#define K22_ST_MAX_TENSORS 1000000
#define K22_ST_MAX_NAME 1024

typedef struct {
    const char *name;  /* NUL-terminated, owned by the file object */
    k22_dtype dtype;
    int ndim;
    int64_t shape[K22_MAX_DIMS];
    const void *data;  /* into the mapping; valid until k22_st_close */
    size_t nbytes;
    size_t offset;     /* begin, relative to the data section */
} k22_st_tensor;

typedef struct k22_st_file k22_st_file;

/* Opens and validates path (header JSON, dtypes, shapes vs byte counts, offsets inside the
 * file, no overlaps, no gaps left unexplained). On failure returns NULL-equivalent status and
 * err names the file and problem, e.g. "x.safetensors: tensor 'a.weight' ends at byte 9044 but
 * the data section has 9000". */
k22_status k22_st_open(const char *path, k22_st_file **out, k22_err *err);
/* Same checks over a caller-owned buffer (fuzz targets, tests); buf must outlive the object.
 * name is used in messages. */
k22_status k22_st_open_buffer(const void *buf, size_t len, const char *name, k22_st_file **out,
                              k22_err *err);
void k22_st_close(k22_st_file *f); /* NULL is fine */

int k22_st_count(const k22_st_file *f);
const k22_st_tensor *k22_st_at(const k22_st_file *f, int i); /* sorted by name */
const k22_st_tensor *k22_st_find(const k22_st_file *f, const char *name); /* NULL if absent */
/* __metadata__: string-to-string map; NULL when absent. */
int k22_st_metadata_count(const k22_st_file *f);
const char *k22_st_metadata_key(const k22_st_file *f, int i);
const char *k22_st_metadata_get(const k22_st_file *f, const char *key);
const char *k22_st_path(const k22_st_file *f);

/* ---- writing ---- */
typedef struct k22_st_writer k22_st_writer;
k22_st_writer *k22_st_writer_new(void);
/* Adds a tensor; data is copied at write time, so it must stay valid until k22_st_write.
 * Duplicate names are an error at write time. */
void k22_st_writer_add(k22_st_writer *w, const char *name, k22_dtype dtype, int ndim,
                       const int64_t *shape, const void *data);
void k22_st_writer_meta(k22_st_writer *w, const char *key, const char *value);
/* Writes atomically: path.tmp, fsync, rename. */
k22_status k22_st_write(k22_st_writer *w, const char *path, k22_err *err);
/* Serializes into a malloc'd buffer (for fuzz round trips); caller frees *buf. */
k22_status k22_st_serialize(k22_st_writer *w, uint8_t **buf, size_t *len, k22_err *err);
void k22_st_writer_free(k22_st_writer *w);

/* ---- sharded checkpoints: NAME.safetensors.index.json ({"metadata": {...}, "weight_map":
 * {tensor: shard file}}) ---- */
typedef struct k22_st_set k22_st_set;
/* Opens either a single .safetensors file or an index.json and its shards (relative to the
 * index's folder; a shard name with '/' or ".." is refused). Every tensor named in the
 * weight_map must be in its shard, and every shard tensor must be in the weight_map. */
k22_status k22_st_set_open(const char *path, k22_st_set **out, k22_err *err);
void k22_st_set_close(k22_st_set *s);
int k22_st_set_count(const k22_st_set *s);
const k22_st_tensor *k22_st_set_at(const k22_st_set *s, int i); /* sorted by name */
const k22_st_tensor *k22_st_set_find(const k22_st_set *s, const char *name);
/* Writes tensors in shards of at most max_shard_bytes as BASE-0000k-of-0000n.safetensors plus
 * BASE.safetensors.index.json into dir (BASE e.g. "diffusion_pytorch_model"); a single file
 * BASE.safetensors when everything fits in one shard. */
k22_status k22_st_write_sharded(k22_st_writer *w, const char *dir, const char *base,
                                size_t max_shard_bytes, k22_err *err);

#endif
