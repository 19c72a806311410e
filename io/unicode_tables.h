/* unicode_tables.h: the generated Unicode tables (io/unicode_tables.c, written by
 * tools/reference/make_unicode_tables.py) and the lookups the CLIP tokenizer makes on them. Each
 * *_len counts rows, not elements. */
#ifndef K22_IO_UNICODE_TABLES_H
#define K22_IO_UNICODE_TABLES_H

#include <stddef.h>
#include <stdint.h>

extern const uint32_t k22_uni_letter[], k22_uni_number[], k22_uni_space[];
extern const int k22_uni_letter_len, k22_uni_number_len, k22_uni_space_len;
extern const int32_t k22_uni_lower[];
extern const int k22_uni_lower_len;
extern const uint32_t k22_uni_lower2[], k22_uni_ccc[], k22_uni_decomp[], k22_uni_comp[];
extern const int k22_uni_lower2_len, k22_uni_ccc_len, k22_uni_decomp_len, k22_uni_comp_len;

/* Classes of the tokenizer's regexes: \p{L}, \p{N}, \s. */
int k22_uni_is_letter(uint32_t c);
int k22_uni_is_number(uint32_t c);
int k22_uni_is_space(uint32_t c);
/* Writes the lowercase form of c to out[0..2) and returns its length (1 or 2). */
int k22_uni_lower_of(uint32_t c, uint32_t out[2]);
/* Canonical combining class (0 for starters). */
int k22_uni_ccc_of(uint32_t c);
/* NFC of in[0..n) into out; out and tmp (scratch) need capacity 4*n, as a code point decomposes
 * into at most four. Returns the output length. */
size_t k22_uni_nfc(const uint32_t *in, size_t n, uint32_t *out, uint32_t *tmp);

#endif
