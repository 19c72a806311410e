/* captions_internal.h: helpers shared by the caption readers (captions*.c, webdataset.c). */
#ifndef K22_CAPTIONS_INTERNAL_H
#define K22_CAPTIONS_INTERNAL_H

#include "k22/captions.h"

/* A set of strings (open addressing, owned copies), for duplicate names and keys. */
typedef struct {
    char **keys;
    size_t *vals; /* what the first occurrence was (a line or member number) */
    size_t cap, n;
} k22_strset;

void k22_strset_init(k22_strset *s);
void k22_strset_free(k22_strset *s);
/* Inserts key with val; returns 1 when new, 0 when present (then *first = its stored val). */
int k22_strset_add(k22_strset *s, const char *key, size_t val, size_t *first);

/* Moves *r into s (s owns it afterwards; *r is zeroed). */
void k22_caption_set_push(k22_caption_set *s, k22_caption_rec *r);
void k22_caption_set_push_reject(k22_caption_set *s, k22_caption_reject *r);
/* A malloc'd printf result. */
char *k22_strfmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Copies [s, s+len) into a new NUL-terminated string. */
char *k22_strndup0(const char *s, size_t len);
/* Trims ASCII whitespace at both ends of [*s, *s+*len). */
void k22_trim(const char **s, size_t *len);

/* The sidecar layout of k22_captions_read_dir (captions_walk.c). */
k22_status k22_captions_read_sidecar(const char *dir, const k22_captions_opts *o,
                                     k22_caption_set *s, k22_err *err);

#endif
