/* tokenizer.c: the CLIP tokenizer's loading (vocab.json, merges.txt, the optional special-token
 * files, or the embedded copy) and the text half of encoding: UTF-8 decoding, special-token
 * cutting, normalization and the pre-tokenizer split. BPE is in tokenizer_bpe.c. */
#include "k22/tokenizer.h"

#include "io/tokenizer_internal.h"
#include "io/unicode_tables.h"
#include "k22/embedded.h"
#include "k22/fsutil.h"
#include "k22/json.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *const START_TEXT = "<|startoftext|>", *const END_TEXT = "<|endoftext|>";

/* ---------------------------------------------------------------- loading */

/* The byte-level alphabet (GPT-2's): printable Latin-1 bytes stand for themselves, the other
 * 68 bytes map in order to U+0100 and up. Writes the UTF-8 of byte b's symbol; returns length. */
static int byte_symbol(int b, char out[3])
{
    int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    int cp = b;
    if (!printable) {
        int n = 0;
        for (int x = 0; x < b; x++)
            if (!((x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE && x <= 0xFF))) n++;
        cp = 256 + n;
    }
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    out[0] = (char)(0xC0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
}

static k22_status load_vocab(k22_tokenizer *t, const char *buf, size_t len, const char *name,
                             k22_err *err)
{
    json_t *root = NULL;
    k22_status st = k22_json_load_object(buf, len, name, &root, err);
    if (st) return st;
    size_t n = json_object_size(root), pool_bytes = 0;
    if (n == 0 || n > K22_TOKENIZER_MAX_VOCAB) {
        st = k22_err_set(err, K22_ERR_FORMAT, "%s: %zu entries, expected 1 to %d", name, n,
                         K22_TOKENIZER_MAX_VOCAB);
        goto out;
    }
    const char *key;
    json_t *v;
    int32_t maxid = -1;
    json_object_foreach(root, key, v) {
        size_t kl = strlen(key);
        if (kl == 0 || kl > K22_TOKENIZER_MAX_TOKEN_BYTES) {
            st = k22_err_set(err, K22_ERR_FORMAT, "%s: key '%.64s': length %zu, expected 1 to %d bytes",
                             name, key, kl, K22_TOKENIZER_MAX_TOKEN_BYTES);
            goto out;
        }
        json_int_t id = json_is_integer(v) ? json_integer_value(v) : -1;
        if (id < 0 || id >= K22_TOKENIZER_MAX_VOCAB) {
            char found[64];
            k22_json_value_text(v, found, sizeof found);
            st = k22_err_set(err, K22_ERR_FORMAT, "%s: key '%.64s': expected an integer id in [0, %d), found %s",
                             name, key, K22_TOKENIZER_MAX_VOCAB, found);
            goto out;
        }
        if (id > maxid) maxid = (int32_t)id;
        pool_bytes += kl + 1; /* at most 1M keys of 1 KiB: no overflow */
    }
    t->nvocab = maxid + 1;
    t->tok = k22_xcalloc((size_t)t->nvocab, sizeof *t->tok);
    t->tok_len = k22_xcalloc((size_t)t->nvocab, sizeof *t->tok_len);
    t->pool = k22_xmalloc(pool_bytes);
    size_t used = 0;
    json_object_foreach(root, key, v) {
        int32_t id = (int32_t)json_integer_value(v);
        size_t kl = strlen(key);
        if (t->tok[id]) {
            st = k22_err_set(err, K22_ERR_FORMAT, "%s: keys '%.64s' and '%.64s' both have id %d", name,
                             t->tok[id], key, id);
            goto out;
        }
        memcpy(t->pool + used, key, kl + 1);
        t->tok[id] = t->pool + used;
        t->tok_len[id] = (uint32_t)kl;
        used += kl + 1;
    }
    k22_tok_vocab_index(t);
out:
    json_decref(root);
    return st;
}

/* merges.txt: an optional "#version" first line, then one "left right" pair per line, both
 * vocabulary entries whose concatenation is one too. The rank is the line's place. */
static k22_status load_merges(k22_tokenizer *t, const char *buf, size_t len, const char *name,
                              k22_err *err)
{
    size_t lines = 0;
    for (size_t i = 0; i < len; i++) lines += buf[i] == '\n';
    if (lines + 1 > K22_TOKENIZER_MAX_MERGES)
        return k22_err_set(err, K22_ERR_FORMAT, "%s: %zu lines, more than the %d allowed", name,
                           lines + 1, K22_TOKENIZER_MAX_MERGES);
    k22_tok_pairs_init(&t->pairs, lines + 1);
    char joined[2 * K22_TOKENIZER_MAX_TOKEN_BYTES + 1];
    int32_t rank = 0;
    size_t pos = 0, lineno = 0;
    while (pos < len) {
        const char *line = buf + pos;
        const char *nl = memchr(line, '\n', len - pos);
        size_t ll = nl ? (size_t)(nl - line) : len - pos;
        pos += ll + (nl ? 1 : 0);
        lineno++;
        if (lineno == 1 && ll >= 8 && memcmp(line, "#version", 8) == 0) continue;
        const char *sp = memchr(line, ' ', ll);
        size_t la = sp ? (size_t)(sp - line) : 0, lb = sp ? ll - la - 1 : 0;
        if (!sp || la == 0 || lb == 0 || memchr(sp + 1, ' ', lb) || memchr(line, '\r', ll) ||
            memchr(line, '\0', ll))
            return k22_err_set(err, K22_ERR_FORMAT,
                               "%s: line %zu: expected two tokens separated by one space, found '%.*s'",
                               name, lineno, (int)(ll > 80 ? 80 : ll), line);
        int32_t a = k22_tok_vocab_find(t, line, la), b = k22_tok_vocab_find(t, sp + 1, lb);
        int32_t m = -1;
        if (a >= 0 && b >= 0 && la + lb <= 2 * K22_TOKENIZER_MAX_TOKEN_BYTES) {
            memcpy(joined, line, la);
            memcpy(joined + la, sp + 1, lb);
            m = k22_tok_vocab_find(t, joined, la + lb);
        }
        if (a < 0 || b < 0 || m < 0)
            return k22_err_set(err, K22_ERR_KEY, "%s: line %zu: '%.*s': %s is not in the vocabulary",
                               name, lineno, (int)(ll > 80 ? 80 : ll), line,
                               a < 0 ? "the left token" : b < 0 ? "the right token" : "the merged token");
        k22_tok_pairs_put(&t->pairs, a, b, rank++, m);
    }
    return K22_OK;
}

/* Looks up the special tokens and the byte symbols once the vocabulary is in. */
static k22_status finish(k22_tokenizer *t, const char *const special[4],
                         const char *const from[4], k22_err *err)
{
    static const char *const what[4] = {"bos_token", "eos_token", "unk_token", "pad_token"};
    int32_t *dst[4] = {&t->bos, &t->eos, &t->unk, &t->pad};
    for (int i = 0; i < 4; i++) {
        *dst[i] = k22_tok_vocab_find(t, special[i], strlen(special[i]));
        if (*dst[i] < 0)
            return k22_err_set(err, K22_ERR_KEY, "%s: %s '%.64s' is not in the vocabulary", from[i],
                               what[i], special[i]);
        int seen = 0;
        for (int k = 0; k < t->nadded; k++) seen |= t->added[k] == *dst[i];
        if (!seen) t->added[t->nadded++] = *dst[i];
    }
    for (int b = 0; b < 256; b++) {
        char s[3 + 4];
        int n = byte_symbol(b, s);
        t->byte_id[b] = k22_tok_vocab_find(t, s, (size_t)n);
        memcpy(s + n, "</w>", 4);
        t->byte_end_id[b] = k22_tok_vocab_find(t, s, (size_t)n + 4);
    }
    k22_tok_cache_init(&t->cache);
    return K22_OK;
}

static k22_status load_all(const char *vocab, size_t vocab_len, const char *vocab_name,
                           const char *merges, size_t merges_len, const char *merges_name,
                           const char *const special[4], const char *const from[4],
                           k22_tokenizer **out, k22_err *err)
{
    *out = NULL;
    k22_tokenizer *t = k22_xcalloc(1, sizeof *t);
    k22_status st = load_vocab(t, vocab, vocab_len, vocab_name, err);
    if (!st) st = load_merges(t, merges, merges_len, merges_name, err);
    if (!st) st = finish(t, special, from, err);
    if (st) {
        k22_tokenizer_free(t);
        return st;
    }
    *out = t;
    return K22_OK;
}

static const char *const DEFAULT_SPECIAL[4] = {"<|startoftext|>", "<|endoftext|>",
                                                "<|endoftext|>", "<|endoftext|>"};

k22_status k22_tokenizer_load_buf(const char *vocab, size_t vocab_len, const char *vocab_name,
                                  const char *merges, size_t merges_len, const char *merges_name,
                                  k22_tokenizer **out, k22_err *err)
{
    const char *const from[4] = {vocab_name, vocab_name, vocab_name, vocab_name};
    return load_all(vocab, vocab_len, vocab_name, merges, merges_len, merges_name,
                    DEFAULT_SPECIAL, from, out, err);
}

k22_status k22_tokenizer_load_embedded(k22_tokenizer **out, k22_err *err)
{
    return k22_tokenizer_load_buf(
        (const char *)k22_clip_vocab_json, (size_t)(k22_clip_vocab_json_end - k22_clip_vocab_json),
        "embedded vocab.json", (const char *)k22_clip_merges_txt,
        (size_t)(k22_clip_merges_txt_end - k22_clip_merges_txt), "embedded merges.txt", out, err);
}

static k22_status read_file(const char *path, char **buf, size_t *len, k22_err *err)
{
    return k22_fs_read_all(path, K22_TOKENIZER_MAX_FILE_BYTES, buf, len, err);
}

/* Reads the special-token names of an optional JSON file into names[4] (copies into store).
 * A value is a string, an object with a string "content", or null (ignored). */
static k22_status read_special(const char *path, char store[4][K22_TOKENIZER_MAX_TOKEN_BYTES + 1],
                               const char *names[4], const char *from[4], k22_err *err)
{
    static const char *const keys[4] = {"bos_token", "eos_token", "unk_token", "pad_token"};
    struct stat sb;
    if (stat(path, &sb) != 0) return K22_OK; /* optional */
    json_t *root = NULL;
    k22_status st = k22_json_load_object_file(path, K22_JSON_MAX_CONFIG_BYTES, &root, err);
    if (st) return st;
    for (int i = 0; i < 4; i++) {
        json_t *v = json_object_get(root, keys[i]);
        if (!v || json_is_null(v)) continue;
        if (json_is_object(v)) v = json_object_get(v, "content");
        const char *s = json_is_string(v) ? json_string_value(v) : NULL;
        if (!s || !*s || strlen(s) > K22_TOKENIZER_MAX_TOKEN_BYTES) {
            st = k22_err_set(err, K22_ERR_FORMAT, "%s: key '%s': expected a token string", path,
                             keys[i]);
            goto out;
        }
        strcpy(store[i], s);
        names[i] = store[i];
        from[i] = path;
    }
out:
    json_decref(root);
    return st;
}

k22_status k22_tokenizer_load_dir(const char *dir, k22_tokenizer **out, k22_err *err)
{
    *out = NULL;
    char vpath[4096], mpath[4096], cpath[4096], spath[4096];
    if (snprintf(vpath, sizeof vpath, "%s/vocab.json", dir) >= (int)sizeof vpath ||
        snprintf(mpath, sizeof mpath, "%s/merges.txt", dir) >= (int)sizeof mpath ||
        snprintf(cpath, sizeof cpath, "%s/tokenizer_config.json", dir) >= (int)sizeof cpath ||
        snprintf(spath, sizeof spath, "%s/special_tokens_map.json", dir) >= (int)sizeof spath)
        return k22_err_set(err, K22_ERR_ARG, "%s: path too long", dir);
    char store[4][K22_TOKENIZER_MAX_TOKEN_BYTES + 1];
    const char *names[4] = {DEFAULT_SPECIAL[0], DEFAULT_SPECIAL[1], DEFAULT_SPECIAL[2],
                            DEFAULT_SPECIAL[3]};
    char *vbuf = NULL, *mbuf = NULL;
    size_t vlen = 0, mlen = 0;
    /* special_tokens_map.json wins over tokenizer_config.json, as in transformers */
    const char *from[4] = {vpath, vpath, vpath, vpath};
    k22_status st = read_special(cpath, store, names, from, err);
    if (!st) st = read_special(spath, store, names, from, err);
    if (!st) st = read_file(vpath, &vbuf, &vlen, err);
    if (!st) st = read_file(mpath, &mbuf, &mlen, err);
    if (!st) st = load_all(vbuf, vlen, vpath, mbuf, mlen, mpath, names, from, out, err);
    free(vbuf);
    free(mbuf);
    return st;
}

void k22_tokenizer_free(k22_tokenizer *t)
{
    if (!t) return;
    free(t->pool);
    free(t->tok);
    free(t->tok_len);
    free(t->vslot);
    k22_tok_pairs_free(&t->pairs);
    k22_tok_cache_free(&t->cache);
    free(t->cp);
    free(t->nf);
    free(t->tmp);
    free(t->bytes);
    free(t->out);
    free(t->sym);
    free(t->heap);
    free(t);
}

int32_t k22_tokenizer_bos_id(const k22_tokenizer *t) { return t->bos; }
int32_t k22_tokenizer_eos_id(const k22_tokenizer *t) { return t->eos; }
int32_t k22_tokenizer_pad_id(const k22_tokenizer *t) { return t->pad; }
int32_t k22_tokenizer_vocab_size(const k22_tokenizer *t) { return t->nvocab; }

const char *k22_tokenizer_token(const k22_tokenizer *t, int32_t id)
{
    return id >= 0 && id < t->nvocab ? t->tok[id] : NULL;
}

/* ---------------------------------------------------------------- encoding */

/* Decodes s[0..n) into out (capacity n), each maximal invalid subpart -> U+FFFD. */
static size_t utf8_decode_lossy(const uint8_t *s, size_t n, uint32_t *out)
{
    size_t i = 0, m = 0;
    while (i < n) {
        uint8_t b = s[i];
        if (b < 0x80) {
            out[m++] = b;
            i++;
            continue;
        }
        int need;
        uint8_t lo = 0x80, hi = 0xBF;
        uint32_t cp;
        if (b >= 0xC2 && b <= 0xDF) need = 1, cp = b & 0x1F;
        else if (b >= 0xE0 && b <= 0xEF) need = 2, cp = b & 0x0F, lo = b == 0xE0 ? 0xA0 : 0x80,
                                            hi = b == 0xED ? 0x9F : 0xBF;
        else if (b >= 0xF0 && b <= 0xF4) need = 3, cp = b & 0x07, lo = b == 0xF0 ? 0x90 : 0x80,
                                            hi = b == 0xF4 ? 0x8F : 0xBF;
        else need = 0, cp = 0;
        size_t j = i + 1;
        int ok = need > 0;
        for (int k = 0; k < need && ok; k++, j++) {
            if (j >= n || s[j] < lo || s[j] > hi) {
                ok = 0;
                break;
            }
            cp = cp << 6 | (s[j] & 0x3F);
            lo = 0x80, hi = 0xBF;
        }
        out[m++] = ok ? cp : 0xFFFD;
        i = ok ? j : (j > i + 1 ? j : i + 1);
    }
    return m;
}

static size_t utf8_encode(uint32_t c, uint8_t *o)
{
    if (c < 0x80) return o[0] = (uint8_t)c, 1;
    if (c < 0x800) return o[0] = (uint8_t)(0xC0 | c >> 6), o[1] = (uint8_t)(0x80 | (c & 0x3F)), 2;
    if (c < 0x10000) {
        o[0] = (uint8_t)(0xE0 | c >> 12);
        o[1] = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
        o[2] = (uint8_t)(0x80 | (c & 0x3F));
        return 3;
    }
    o[0] = (uint8_t)(0xF0 | c >> 18);
    o[1] = (uint8_t)(0x80 | ((c >> 12) & 0x3F));
    o[2] = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
    o[3] = (uint8_t)(0x80 | (c & 0x3F));
    return 4;
}

static void grow_text(k22_tokenizer *t, size_t n)
{
    if (n <= t->cp_cap) return;
    size_t b4, b8;
    K22_REQUIRE(k22_mul_size(n, 4 * sizeof(uint32_t), &b4) == 0 && k22_mul_size(b4, 2, &b8) == 0);
    free(t->cp);
    free(t->nf);
    free(t->tmp);
    t->cp = k22_xmalloc(n * sizeof(uint32_t));
    t->nf = k22_xmalloc(b4); /* NFC: 4 code points per input code point at most */
    t->tmp = k22_xmalloc(b8); /* lowercase may double that */
    t->cp_cap = n;
}

/* NFC, then every run of \s -> one space, then lowercase; result in t->tmp. */
static size_t normalize(k22_tokenizer *t, size_t m)
{
    const uint32_t *src = t->cp;
    size_t n = m;
    int ascii = 1;
    for (size_t i = 0; i < m && ascii; i++) ascii = t->cp[i] < 0x80;
    if (!ascii) {
        n = k22_uni_nfc(t->cp, m, t->nf, t->tmp);
        src = t->nf;
    }
    size_t r = 0;
    for (size_t i = 0; i < n;) {
        if (k22_uni_is_space(src[i])) {
            while (i < n && k22_uni_is_space(src[i])) i++;
            t->tmp[r++] = ' ';
            continue;
        }
        uint32_t low[2];
        int k = k22_uni_lower_of(src[i++], low);
        for (int x = 0; x < k; x++) t->tmp[r++] = low[x];
    }
    return r;
}

static int is_other(uint32_t c)
{
    return !k22_uni_is_space(c) && !k22_uni_is_letter(c) && !k22_uni_is_number(c);
}

static size_t match_ascii(const uint32_t *s, size_t n, const char *lit)
{
    size_t k = 0;
    for (; lit[k]; k++)
        if (k >= n || s[k] != (uint8_t)lit[k]) return 0;
    return k;
}

/* 's 't 're 've 'm 'll 'd (the text is lowercase already). */
static size_t match_contraction(const uint32_t *s, size_t n)
{
    static const char *const forms[7] = {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
    if (s[0] != '\'') return 0;
    for (int i = 0; i < 7; i++) {
        size_t k = match_ascii(s, n, forms[i]);
        if (k) return k;
    }
    return 0;
}

/* Length of the run at s[0] of code points in one class: letters, numbers, or other. */
static size_t class_run(const uint32_t *s, size_t n, int (*in)(uint32_t))
{
    size_t k = 0;
    while (k < n && in(s[k])) k++;
    return k;
}

/* The pre-tokenizer's split: length of the piece at s[0] (s[0] is not a space). */
static size_t split_piece(const uint32_t *s, size_t n)
{
    size_t k = match_ascii(s, n, START_TEXT);
    if (!k) k = match_ascii(s, n, END_TEXT);
    if (!k) k = match_contraction(s, n);
    if (!k && k22_uni_is_letter(s[0])) k = class_run(s, n, k22_uni_is_letter);
    if (!k && k22_uni_is_number(s[0])) k = 1;
    if (!k) k = class_run(s, n, is_other);
    return k;
}

/* GPT-2's byte-level split inside a piece (which holds no spaces). */
static size_t byte_level_piece(const uint32_t *s, size_t n)
{
    size_t k = match_contraction(s, n);
    if (k) return k;
    if (k22_uni_is_letter(s[0])) return class_run(s, n, k22_uni_is_letter);
    if (k22_uni_is_number(s[0])) return class_run(s, n, k22_uni_is_number);
    return class_run(s, n, is_other);
}

/* Appends the BPE ids of s[0..n) to ids[*count..limit). */
static void emit_piece(k22_tokenizer *t, const uint32_t *s, size_t n, int32_t *ids, int *count,
                       int limit)
{
    size_t nb = 0;
    for (size_t i = 0; i < n; i++) nb += utf8_encode(s[i], t->bytes + nb);
    const int32_t *out;
    size_t k = k22_tok_bpe(t, t->bytes, nb, &out);
    for (size_t i = 0; i < k && *count < limit; i++) ids[(*count)++] = out[i];
}

static void encode_segment(k22_tokenizer *t, const uint8_t *s, size_t len, int32_t *ids,
                           int *count, int limit)
{
    if (len == 0) return;
    grow_text(t, len);
    size_t n = normalize(t, utf8_decode_lossy(s, len, t->cp));
    const uint32_t *c = t->tmp;
    size_t need;
    K22_REQUIRE(k22_mul_size(n, 4, &need) == 0);
    if (need > t->bytes_cap) {
        free(t->bytes);
        t->bytes = k22_xmalloc(need);
        t->bytes_cap = need;
    }
    for (size_t i = 0; i < n && *count < limit;) {
        if (c[i] == ' ') {
            i++;
            continue;
        }
        size_t p = split_piece(c + i, n - i);
        for (size_t j = 0; j < p && *count < limit;) {
            size_t q = byte_level_piece(c + i + j, p - j);
            emit_piece(t, c + i + j, q, ids, count, limit);
            j += q;
        }
        i += p;
    }
}

/* The leftmost-longest occurrence of a special token in s[from..n): its start, or n. */
static size_t find_special(const k22_tokenizer *t, const uint8_t *s, size_t n, size_t from,
                           int32_t *id, size_t *len)
{
    for (size_t p = from; p < n; p++) {
        size_t best = 0;
        for (int k = 0; k < t->nadded; k++) {
            uint32_t l = t->tok_len[t->added[k]];
            if (l > best && l <= n - p && memcmp(s + p, t->tok[t->added[k]], l) == 0) {
                best = l;
                *id = t->added[k];
            }
        }
        if (best) {
            *len = best;
            return p;
        }
    }
    return n;
}

int k22_tokenizer_encode(k22_tokenizer *t, const char *text, size_t len, int max_len,
                         int32_t *ids, uint8_t *mask)
{
    K22_REQUIRE(max_len >= 2 && max_len <= 4096);
    const uint8_t *s = (const uint8_t *)text;
    int limit = max_len - 2, count = 0;
    size_t pos = 0;
    while (pos < len && count < limit) {
        int32_t id = -1;
        size_t slen = 0, at = find_special(t, s, len, pos, &id, &slen);
        encode_segment(t, s + pos, at - pos, ids + 1, &count, limit);
        if (at < len && count < limit) ids[1 + count++] = id;
        pos = at < len ? at + slen : len;
    }
    ids[0] = t->bos;
    ids[count + 1] = t->eos;
    for (int i = 0; i < max_len; i++) {
        if (i >= count + 2) ids[i] = t->pad;
        mask[i] = i < count + 2;
    }
    return count + 2;
}
