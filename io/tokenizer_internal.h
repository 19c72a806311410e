/* tokenizer_internal.h: the tokenizer's state, shared by io/tokenizer.c (loading, normalizing,
 * splitting) and io/tokenizer_bpe.c (hash maps, BPE merges, the per-piece cache). */
#ifndef K22_IO_TOKENIZER_INTERNAL_H
#define K22_IO_TOKENIZER_INTERNAL_H

#include "k22/tokenizer.h"

#include <stddef.h>
#include <stdint.h>

/* Merge table: pair (left id, right id) -> (rank, merged id), open addressing. */
typedef struct {
    uint64_t *key; /* (left << 32 | right); UINT64_MAX = empty */
    int32_t *rank, *merged;
    size_t mask;
} k22_tok_pairs;

/* Cache of BPE results per piece (byte string -> ids); emptied whenever it fills. */
typedef struct {
    int32_t *slot; /* entry index or -1 */
    size_t nslot;
    struct k22_tok_entry { uint64_t hash; uint32_t key_off, key_len, ids_off, ids_n; } *ent;
    size_t nent, maxent;
    uint8_t *keys;
    size_t keys_used, keys_cap;
    int32_t *ids;
    size_t ids_used, ids_cap;
} k22_tok_cache;

/* BPE scratch for one piece. */
typedef struct k22_tok_sym { int32_t id, prev, next, len; } k22_tok_sym;
typedef struct k22_tok_merge { int32_t rank, pos, merged; } k22_tok_merge;

struct k22_tokenizer {
    char *pool;          /* every vocabulary string, NUL-terminated */
    const char **tok;    /* id -> string in pool, NULL for unused ids */
    uint32_t *tok_len;
    int32_t nvocab;      /* largest id + 1 */
    int32_t *vslot;      /* string -> id, open addressing over tok; -1 empty */
    size_t vmask;
    k22_tok_pairs pairs;
    int32_t byte_id[256], byte_end_id[256]; /* byte symbol, and with "</w>"; -1 = missing */
    int32_t bos, eos, unk, pad;
    int32_t added[4];    /* distinct special ids matched in raw text */
    int nadded;
    /* scratch, grown on demand */
    uint32_t *cp, *nf, *tmp;
    size_t cp_cap;
    uint8_t *bytes;
    size_t bytes_cap;
    int32_t *out;
    size_t out_cap;
    k22_tok_sym *sym;
    k22_tok_merge *heap;
    size_t sym_cap;
    k22_tok_cache cache;
};

uint64_t k22_tok_hash(const void *p, size_t n);
/* Vocabulary id of the n bytes at s, or -1. */
int32_t k22_tok_vocab_find(const k22_tokenizer *t, const char *s, size_t n);
/* Builds the string -> id index over t->tok (ids must be distinct strings). */
void k22_tok_vocab_index(k22_tokenizer *t);
void k22_tok_pairs_init(k22_tok_pairs *p, size_t n);
void k22_tok_pairs_free(k22_tok_pairs *p);
/* Sets (a, b) -> (rank, merged); a later line for the same pair replaces the earlier one. */
void k22_tok_pairs_put(k22_tok_pairs *p, int32_t a, int32_t b, int32_t rank, int32_t merged);
void k22_tok_cache_init(k22_tok_cache *c);
void k22_tok_cache_free(k22_tok_cache *c);
/* BPE of one byte-level piece (its raw bytes b[0..n), n >= 1): points *ids at the token ids
 * (valid until the next call) and returns their count. */
size_t k22_tok_bpe(k22_tokenizer *t, const uint8_t *b, size_t n, const int32_t **ids);

#endif
