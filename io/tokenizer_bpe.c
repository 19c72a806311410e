/* tokenizer_bpe.c: the BPE half of the CLIP tokenizer: the vocabulary and merge hash maps, the
 * merge loop (lowest rank first, leftmost among equal ranks, as tokenizers' BPE model does it),
 * and a cache of results per piece, since captions repeat the same words. */
#include "io/tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>

enum { CACHE_SLOTS = 1 << 15, CACHE_KEY_MAX = 64, CACHE_KEY_BYTES = 1 << 20, CACHE_IDS = 1 << 18 };

uint64_t k22_tok_hash(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint64_t h = 1469598103934665603ull; /* FNV-1a, then a final mix for the low bits */
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ull;
    return h ^ (h >> 32);
}

int32_t k22_tok_vocab_find(const k22_tokenizer *t, const char *s, size_t n)
{
    for (size_t i = k22_tok_hash(s, n) & t->vmask;; i = (i + 1) & t->vmask) {
        int32_t id = t->vslot[i];
        if (id < 0) return -1;
        if (t->tok_len[id] == n && memcmp(t->tok[id], s, n) == 0) return id;
    }
}

void k22_tok_vocab_index(k22_tokenizer *t)
{
    size_t cap = 16;
    while (cap < 2 * (size_t)t->nvocab) cap *= 2;
    t->vslot = k22_xmalloc(cap * sizeof *t->vslot);
    memset(t->vslot, 0xff, cap * sizeof *t->vslot);
    t->vmask = cap - 1;
    for (int32_t id = 0; id < t->nvocab; id++) {
        if (!t->tok[id]) continue;
        size_t i = k22_tok_hash(t->tok[id], t->tok_len[id]) & t->vmask;
        while (t->vslot[i] >= 0) i = (i + 1) & t->vmask;
        t->vslot[i] = id;
    }
}

void k22_tok_pairs_init(k22_tok_pairs *p, size_t n)
{
    size_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    p->key = k22_xmalloc(cap * sizeof *p->key);
    memset(p->key, 0xff, cap * sizeof *p->key);
    p->rank = k22_xmalloc(cap * sizeof *p->rank);
    p->merged = k22_xmalloc(cap * sizeof *p->merged);
    p->mask = cap - 1;
}

void k22_tok_pairs_free(k22_tok_pairs *p)
{
    free(p->key);
    free(p->rank);
    free(p->merged);
    memset(p, 0, sizeof *p);
}

static size_t pair_slot(const k22_tok_pairs *p, uint64_t key)
{
    uint64_t h = key * 0x9e3779b97f4a7c15ull;
    size_t i = (size_t)(h ^ (h >> 31)) & p->mask;
    while (p->key[i] != UINT64_MAX && p->key[i] != key) i = (i + 1) & p->mask;
    return i;
}

void k22_tok_pairs_put(k22_tok_pairs *p, int32_t a, int32_t b, int32_t rank, int32_t merged)
{
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    size_t i = pair_slot(p, key);
    p->key[i] = key;
    p->rank[i] = rank;
    p->merged[i] = merged;
}

/* Returns 1 and the merge of (a, b) when there is one. */
static int pair_get(const k22_tok_pairs *p, int32_t a, int32_t b, int32_t *rank, int32_t *merged)
{
    size_t i = pair_slot(p, (uint64_t)(uint32_t)a << 32 | (uint32_t)b);
    if (p->key[i] == UINT64_MAX) return 0;
    *rank = p->rank[i];
    *merged = p->merged[i];
    return 1;
}

void k22_tok_cache_init(k22_tok_cache *c)
{
    c->nslot = CACHE_SLOTS;
    c->slot = k22_xmalloc(c->nslot * sizeof *c->slot);
    memset(c->slot, 0xff, c->nslot * sizeof *c->slot);
    c->maxent = CACHE_SLOTS / 2;
    c->ent = k22_xmalloc(c->maxent * sizeof *c->ent);
    c->nent = 0;
    c->keys_cap = CACHE_KEY_BYTES;
    c->keys = k22_xmalloc(c->keys_cap);
    c->keys_used = 0;
    c->ids_cap = CACHE_IDS;
    c->ids = k22_xmalloc(c->ids_cap * sizeof *c->ids);
    c->ids_used = 0;
}

void k22_tok_cache_free(k22_tok_cache *c)
{
    free(c->slot);
    free(c->ent);
    free(c->keys);
    free(c->ids);
    memset(c, 0, sizeof *c);
}

static void cache_clear(k22_tok_cache *c)
{
    memset(c->slot, 0xff, c->nslot * sizeof *c->slot);
    c->nent = c->keys_used = c->ids_used = 0;
}

/* ---- the merge loop: a binary min-heap of candidate merges keyed by (rank, position) ---- */

static int merge_less(const k22_tok_merge *a, const k22_tok_merge *b)
{
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void heap_push(k22_tok_merge *h, size_t *n, k22_tok_merge m)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t up = (i - 1) / 2;
        if (!merge_less(&m, &h[up])) break;
        h[i] = h[up];
        i = up;
    }
    h[i] = m;
}

static k22_tok_merge heap_pop(k22_tok_merge *h, size_t *n)
{
    k22_tok_merge top = h[0], last = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, best = i;
        const k22_tok_merge *cur = &last;
        if (l < *n && merge_less(&h[l], cur)) best = l, cur = &h[l];
        if (l + 1 < *n && merge_less(&h[l + 1], cur)) best = l + 1;
        if (best == i) break;
        h[i] = h[best];
        i = best;
    }
    if (*n > 0) h[i] = last;
    return top;
}

static void push_pair(k22_tokenizer *t, size_t *nheap, int32_t pos, int32_t a, int32_t b)
{
    k22_tok_merge m = {0, pos, 0};
    if (pair_get(&t->pairs, a, b, &m.rank, &m.merged)) heap_push(t->heap, nheap, m);
}

static void grow_scratch(k22_tokenizer *t, size_t n)
{
    if (n <= t->sym_cap) return;
    size_t cap = t->sym_cap ? t->sym_cap : 64;
    while (cap < n) cap *= 2;
    free(t->sym);
    free(t->heap);
    size_t hbytes;
    K22_REQUIRE(k22_mul_size(cap, 3 * sizeof *t->heap, &hbytes) == 0);
    t->sym = k22_xmalloc(cap * sizeof *t->sym);
    t->heap = k22_xmalloc(hbytes); /* n-1 initial pairs + at most 2 per merge */
    if (n > t->out_cap) {
        free(t->out);
        t->out = k22_xmalloc(cap * sizeof *t->out);
        t->out_cap = cap;
    }
    t->sym_cap = cap;
}

/* Symbols: one per byte, the last with the end-of-word suffix; a byte missing from the
 * vocabulary becomes the unknown token (one per byte, as with fuse_unk off). */
static size_t bpe_run(k22_tokenizer *t, const uint8_t *b, size_t n)
{
    grow_scratch(t, n);
    k22_tok_sym *s = t->sym;
    for (size_t i = 0; i < n; i++) {
        int32_t id = i + 1 == n ? t->byte_end_id[b[i]] : t->byte_id[b[i]];
        s[i] = (k22_tok_sym){id < 0 ? t->unk : id, (int32_t)i - 1, i + 1 == n ? -1 : (int32_t)i + 1, 1};
    }
    size_t nheap = 0;
    for (size_t i = 0; i + 1 < n; i++) push_pair(t, &nheap, (int32_t)i, s[i].id, s[i + 1].id);
    while (nheap > 0) {
        k22_tok_merge m = heap_pop(t->heap, &nheap);
        k22_tok_sym *left = &s[m.pos];
        if (left->len == 0 || left->next < 0) continue; /* merged away, or now last */
        k22_tok_sym *right = &s[left->next];
        int32_t rank, merged;
        /* a stale entry: the pair here is no longer one that produces this token */
        if (!pair_get(&t->pairs, left->id, right->id, &rank, &merged) || merged != m.merged)
            continue;
        left->id = m.merged;
        left->len += right->len;
        left->next = right->next;
        right->len = 0;
        if (left->next >= 0) s[left->next].prev = m.pos;
        if (left->prev >= 0) push_pair(t, &nheap, left->prev, s[left->prev].id, left->id);
        if (left->next >= 0) push_pair(t, &nheap, m.pos, left->id, s[left->next].id);
    }
    size_t k = 0;
    for (int32_t i = 0; i >= 0; i = s[i].next) t->out[k++] = s[i].id;
    return k;
}

size_t k22_tok_bpe(k22_tokenizer *t, const uint8_t *b, size_t n, const int32_t **ids)
{
    k22_tok_cache *c = &t->cache;
    uint64_t h = 0;
    size_t i = 0;
    if (n <= CACHE_KEY_MAX) {
        h = k22_tok_hash(b, n);
        for (i = h & (c->nslot - 1); c->slot[i] >= 0; i = (i + 1) & (c->nslot - 1)) {
            const struct k22_tok_entry *e = &c->ent[c->slot[i]];
            if (e->hash == h && e->key_len == n && memcmp(c->keys + e->key_off, b, n) == 0) {
                *ids = c->ids + e->ids_off;
                return e->ids_n;
            }
        }
    }
    size_t k = bpe_run(t, b, n);
    *ids = t->out;
    if (n > CACHE_KEY_MAX) return k;
    if (c->nent == c->maxent || c->keys_used + n > c->keys_cap || c->ids_used + k > c->ids_cap) {
        cache_clear(c);
        for (i = h & (c->nslot - 1); c->slot[i] >= 0; i = (i + 1) & (c->nslot - 1)) {}
    }
    c->ent[c->nent] = (struct k22_tok_entry){h, (uint32_t)c->keys_used, (uint32_t)n,
                                             (uint32_t)c->ids_used, (uint32_t)k};
    memcpy(c->keys + c->keys_used, b, n);
    memcpy(c->ids + c->ids_used, t->out, k * sizeof *t->out);
    c->keys_used += n;
    c->ids_used += k;
    c->slot[i] = (int32_t)c->nent++;
    return k;
}
