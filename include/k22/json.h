/* json.h: a thin typed layer over jansson for the JSON files k22 reads and writes (config.json,
 * scheduler_config.json, model_index.json, k22 state). Every error names the file and the key
 * path, e.g. "unet/config.json: key 'block_out_channels[2]': expected an integer, found a
 * string". Writing follows Python's json.dumps(indent=2, sort_keys=True) + "\n", the layout
 * diffusers' and transformers' save_pretrained produce, so k22 writes the same bytes they do. */
#ifndef K22_JSON_H
#define K22_JSON_H

#include <jansson.h>
#include <stdint.h>

#include "k22/k22.h"

/* Cap for config-sized files (config.json, model_index.json, scheduler configs). */
#define K22_JSON_MAX_CONFIG_BYTES (1u << 20)

/* Reads path (a regular file of at most max_bytes) and parses it, rejecting duplicate keys.
 * On success *out is a new reference the caller json_decref()s. Errors: K22_ERR_IO (open/read),
 * K22_ERR_NOMEM (over the cap), K22_ERR_FORMAT (not JSON, with line/column). */
k22_status k22_json_load_file(const char *path, size_t max_bytes, json_t **out, k22_err *err);
/* load_file that also requires the top level to be an object. */
k22_status k22_json_load_object_file(const char *path, size_t max_bytes, json_t **out,
                                     k22_err *err);
/* Same over a buffer of len bytes (need not be NUL-terminated); name is used in messages. */
k22_status k22_json_load_buf(const char *buf, size_t len, const char *name, json_t **out,
                             k22_err *err);
/* Like load_buf, and also requires the top level to be an object. */
k22_status k22_json_load_object(const char *buf, size_t len, const char *name, json_t **out,
                                k22_err *err);

/* "an integer", "a real number", "a string", "a boolean", "null", "an object", "an array",
 * "nothing" (NULL). For messages. */
const char *k22_json_type_name(const json_t *v);
/* Compact JSON text of v into buf (truncated with "..." when longer than n-1). */
void k22_json_value_text(const json_t *v, char *buf, size_t n);

/* ---- getters: obj must be an object; file and key name the place in messages ----
 * get_*: the key is required (K22_ERR_KEY "missing key" when absent).
 * opt_*: an absent key gives def; a present key must have the right type (null is an error).
 * Type mismatches are K22_ERR_FORMAT; values outside [lo, hi] are K22_ERR_FORMAT too. */
k22_status k22_json_get_int(const json_t *obj, const char *file, const char *key, int lo, int hi,
                            int *out, k22_err *err);
k22_status k22_json_opt_int(const json_t *obj, const char *file, const char *key, int lo, int hi,
                            int def, int *out, k22_err *err);
k22_status k22_json_get_i64(const json_t *obj, const char *file, const char *key, int64_t lo,
                            int64_t hi, int64_t *out, k22_err *err);
k22_status k22_json_opt_i64(const json_t *obj, const char *file, const char *key, int64_t lo,
                            int64_t hi, int64_t def, int64_t *out, k22_err *err);
/* Reals: an integer is accepted too (Python writes 0 for a float default of int type). */
k22_status k22_json_get_float(const json_t *obj, const char *file, const char *key, double *out,
                              k22_err *err);
k22_status k22_json_opt_float(const json_t *obj, const char *file, const char *key, double def,
                              double *out, k22_err *err);
k22_status k22_json_get_bool(const json_t *obj, const char *file, const char *key, int *out,
                             k22_err *err);
k22_status k22_json_opt_bool(const json_t *obj, const char *file, const char *key, int def,
                             int *out, k22_err *err);
/* Strings are borrowed: *out lives as long as obj. Embedded NUL bytes are refused. */
k22_status k22_json_get_str(const json_t *obj, const char *file, const char *key,
                            const char **out, k22_err *err);
k22_status k22_json_opt_str(const json_t *obj, const char *file, const char *key,
                            const char *def, const char **out, k22_err *err);
/* Copies a string into buf (cap bytes with the NUL); longer strings are K22_ERR_FORMAT. */
k22_status k22_json_get_strbuf(const json_t *obj, const char *file, const char *key, char *buf,
                               size_t cap, k22_err *err);
/* An array of integers in [lo, hi] with min_len..max_len elements into out[max_len]; *len is
 * set to the element count. Errors name the element: "key 'x[2]'". */
k22_status k22_json_get_int_array(const json_t *obj, const char *file, const char *key,
                                  int min_len, int max_len, int lo, int hi, int *out, int *len,
                                  k22_err *err);
/* An array of strings, each copied into out + i*elem_cap (elem_cap bytes with the NUL). */
k22_status k22_json_get_str_array(const json_t *obj, const char *file, const char *key,
                                  int min_len, int max_len, char *out, size_t elem_cap, int *len,
                                  k22_err *err);

/* K22_ERR_KEY "file: unknown key 'k'" for the first key of obj (in sorted order, so the
 * message does not depend on hash order) that is not in allowed[0..n). */
k22_status k22_json_check_keys(const json_t *obj, const char *file, const char *const *allowed,
                               size_t n, k22_err *err);

/* ---- writing ---- */
enum {
    /* Reals are float32 values: print the shortest text that reads back as the same float
     * (1e-05, not 9.999999747378752e-06). Without it, the shortest text for the double. */
    K22_JSON_F32 = 1,
    /* One line, no spaces, no final newline (values quoted in messages). */
    K22_JSON_COMPACT = 2,
};
/* The Python json.dumps(v, indent=2, sort_keys=True) text plus "\n": keys sorted, 2-space
 * indent, ", "-free line ends, non-ASCII escaped as \uXXXX, reals as Python's repr (10.0,
 * 1e-05). Returns a malloc'd NUL-terminated string. */
char *k22_json_dumps(const json_t *v, int flags);
/* Writes k22_json_dumps(v) to path (truncating). K22_ERR_IO names the path on failure. */
k22_status k22_json_write_file(const char *path, const json_t *v, int flags, k22_err *err);
/* Python's repr of a double (or, with K22_JSON_F32, of the float), e.g. "0.00085", "10.0",
 * "1e-05", "1e+16", "-0.0", "inf"; buf should hold 32 bytes. */
void k22_json_format_real(double v, int flags, char *buf, size_t n);

#endif
