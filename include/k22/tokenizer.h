/* tokenizer.h: the CLIP BPE tokenizer, equal to transformers 5.23.0's CLIPTokenizer (the
 * tokenizers-backed one) called as tokenizer(captions, max_length=77, padding="max_length",
 * truncation=True). The pipeline, each step as tokenizers 0.23.3 does it:
 *   special tokens (bos, eos, unk, pad contents) are cut out of the raw text first, case-
 *   sensitively, leftmost-longest, and become their ids;
 *   each other segment: NFC, every run of \s -> one space, lowercase (per code point);
 *   split on <|startoftext|>|<|endoftext|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+
 *   (whitespace dropped), then GPT-2's byte-level split of each piece, bytes -> BPE symbols with
 *   "</w>" on the last, merges by rank (leftmost first among equal ranks);
 *   truncation to max_len - 2 tokens, then bos ... eos, padded with the pad id (mask 0).
 * Bytes that are not UTF-8 become U+FFFD per maximal invalid subpart (what Rust's
 * String::from_utf8_lossy does; Python could not pass such text to transformers at all). */
#ifndef K22_TOKENIZER_H
#define K22_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "k22/k22.h"

#define K22_CLIP_MAX_LEN 77 /* CLIP's context: what the Kandinsky scripts pass as max_length */

/* Caps on the outside files (checked before allocating). */
#define K22_TOKENIZER_MAX_FILE_BYTES (64u << 20)
#define K22_TOKENIZER_MAX_VOCAB (1 << 20)     /* entries in vocab.json, and ids below this */
#define K22_TOKENIZER_MAX_MERGES (1 << 20)    /* lines in merges.txt */
#define K22_TOKENIZER_MAX_TOKEN_BYTES 1024    /* one vocabulary entry */

typedef struct k22_tokenizer k22_tokenizer;

/* Loads dir/vocab.json and dir/merges.txt. When present, dir/tokenizer_config.json and then
 * dir/special_tokens_map.json (which wins, as in transformers) may set bos_token, eos_token,
 * unk_token and pad_token as strings naming vocabulary entries; defaults are CLIPTokenizer's
 * (<|startoftext|>, <|endoftext|> for the other three). Errors name the file and the line or
 * key. *out is owned by the caller (k22_tokenizer_free). */
k22_status k22_tokenizer_load_dir(const char *dir, k22_tokenizer **out, k22_err *err);
/* The CLIP vocabulary compiled into the binary (data/clip-tokenizer), with the default
 * special tokens. */
k22_status k22_tokenizer_load_embedded(k22_tokenizer **out, k22_err *err);
/* From buffers (need not be NUL-terminated); the names are used in messages. */
k22_status k22_tokenizer_load_buf(const char *vocab, size_t vocab_len, const char *vocab_name,
                                  const char *merges, size_t merges_len, const char *merges_name,
                                  k22_tokenizer **out, k22_err *err);
void k22_tokenizer_free(k22_tokenizer *t);

/* Encodes text[0..len) (any bytes) into ids[max_len] and mask[max_len] (2 <= max_len <= 4096):
 * bos, at most max_len-2 tokens, eos, then pad ids with mask 0. Returns the number of mask
 * ones. The whole text is normalized first, so scratch memory grows to about 50 bytes per input
 * byte (kept in t until freed): callers cap caption sizes (k22 tokenize refuses lines over
 * 1 MiB). Not thread-safe: t holds a cache of BPE results (use one tokenizer per thread). */
int k22_tokenizer_encode(k22_tokenizer *t, const char *text, size_t len, int max_len,
                         int32_t *ids, uint8_t *mask);

int32_t k22_tokenizer_bos_id(const k22_tokenizer *t);
int32_t k22_tokenizer_eos_id(const k22_tokenizer *t);
int32_t k22_tokenizer_pad_id(const k22_tokenizer *t);
/* One more than the largest id. */
int32_t k22_tokenizer_vocab_size(const k22_tokenizer *t);
/* The vocabulary string of id (byte-level form, e.g. "cat</w>"), or NULL. */
const char *k22_tokenizer_token(const k22_tokenizer *t, int32_t id);

#endif
