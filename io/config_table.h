/* config_table.h (private to io/config*.c): one table per config class says, for every key the
 * upstream library knows, how k22 reads it (stored in a struct field, accepted and ignored, or
 * accepted only at the value k22 implements) and what k22 writes back. Reading and writing walk
 * the same table, so parse(write(cfg)) == cfg holds by construction. */
#ifndef K22_IO_CONFIG_TABLE_H
#define K22_IO_CONFIG_TABLE_H

#include <stddef.h>

#include "k22/json.h"
#include "k22/k22.h"

typedef enum {
    CT_INT,   /* int field */
    CT_REAL,  /* float field */
    CT_BOOL,  /* int field, 0/1 */
    CT_STR,   /* char[size] field; choices (if any) are the only values k22 implements */
    CT_ENUM,  /* int field = index of the value in choices */
    CT_INTS,  /* int[size] field + int count at off2 */
    CT_STRS,  /* char[size][40] field + int count at off2; each element limited to choices */
    CT_FIXED, /* not stored: the value must equal one of choices (JSON texts); writes choices[0] */
    CT_ANY,   /* not stored: any value is accepted (no effect on the computation) */
} ct_type;

enum {
    CT_NULLABLE = 1, /* null is accepted and stored as 0 (ints) */
    CT_NOWRITE = 2,  /* accepted on reading, never written (old-version or generic keys) */
    CT_INTW = 4,     /* a real the library writes as an integer when it is integral (freq_shift) */
};

typedef struct {
    const char *key;
    ct_type type;
    int flags;
    size_t off, off2; /* field offset in the config struct; count offset for arrays */
    int size;         /* string capacity, or array capacity */
    int lo, hi;       /* integer range (CT_INT, CT_INTS elements) */
    const char *def;  /* JSON text of the library's default (used when the key is absent;
                         NULL: the key is required); for CT_ANY the value written */
    const char *const *choices; /* CT_STR/CT_STRS/CT_ENUM: allowed strings; CT_FIXED: JSON texts */
} ct_field;

/* Table entries: S is the config struct, fld its field, def the library default as JSON text. */
#define CT_BIG (1 << 30)
#define INT_(k, S, fld, lo, hi, def) {k, CT_INT, 0, offsetof(S, fld), 0, 0, lo, hi, def, NULL}
#define NINT(k, S, fld, lo, hi) {k, CT_INT, CT_NULLABLE, offsetof(S, fld), 0, 0, lo, hi, "null", NULL}
#define REAL(k, S, fld, def, fl) {k, CT_REAL, fl, offsetof(S, fld), 0, 0, 0, 0, def, NULL}
#define BOOL(k, S, fld, def) {k, CT_BOOL, 0, offsetof(S, fld), 0, 0, 0, 0, def, NULL}
#define STR_(k, S, fld, def, ch) {k, CT_STR, 0, offsetof(S, fld), 0, (int)sizeof(((S *)0)->fld), 0, 0, def, ch}
#define INTS(k, S, fld, cnt, def) {k, CT_INTS, 0, offsetof(S, fld), offsetof(S, cnt), K22_MAX_BLOCKS, 1, CT_BIG, def, NULL}
#define STRS(k, S, fld, cnt, def, ch) {k, CT_STRS, 0, offsetof(S, fld), offsetof(S, cnt), K22_MAX_BLOCKS, 0, 0, def, ch}
#define ENUM(k, S, fld, def, ch) {k, CT_ENUM, 0, offsetof(S, fld), 0, 0, 0, 0, def, ch}
#define FIXD(k, def, ch) {k, CT_FIXED, 0, 0, 0, 0, 0, 0, def, ch}
#define ANY_(k, def) {k, CT_ANY, 0, 0, 0, 0, 0, 0, def, NULL}
#define SKIP(k) {k, CT_ANY, CT_NOWRITE, 0, 0, 0, 0, 0, "null", NULL}
#define N(t) (sizeof(t) / sizeof((t)[0]))

#define CT_STR_ELEM 40 /* element size of CT_STRS arrays (matches the config structs) */

/* Fills the struct at base from obj per table (missing keys take def), then refuses keys that
 * the table does not list. base must be zeroed by the caller. */
k22_status ct_parse(const json_t *obj, const char *file, const ct_field *t, size_t n, void *base,
                    k22_err *err);
/* Adds every written key of the table to obj from the struct at base; K22_ERR_ARG (and obj
 * partly filled) when a field holds a value k22 could not read back. */
k22_status ct_write(json_t *obj, const ct_field *t, size_t n, const void *base, k22_err *err);
/* The "not implemented" error in its one wording:
 * "<file>: key '<key>' = <value> is not implemented by k22 (only <allowed>)". */
k22_status ct_unsupported(k22_err *err, const char *file, const char *key, const json_t *value,
                          const char *allowed);
/* Loads a config text, checks it is an object. */
k22_status ct_load(const char *json, size_t len, const char *name, json_t **out, k22_err *err);

#endif
