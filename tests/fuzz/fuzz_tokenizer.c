/* fuzz_tokenizer.c: libFuzzer target for the CLIP tokenizer. An input is a caption (any bytes:
 * not UTF-8, NULs, special tokens, endless marks) for the embedded vocabulary; an input that
 * starts with "FILES\n" is instead a vocab.json and a merges.txt separated by the first NUL,
 * loaded as a tokenizer that must then encode a few captions. Properties: max_len ids, bos
 * first, eos last of the masked part, every id in the vocabulary, the mask a prefix of ones, pad
 * ids after it, the same result a second time (from the BPE cache); a refused file comes with a
 * message naming it. Violations abort. */
#include "k22/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void require(int ok, const char *what)
{
    if (ok) return;
    fprintf(stderr, "fuzz_tokenizer: property violated: %s\n", what);
    abort();
}

static k22_tokenizer *embedded;

static void check(k22_tokenizer *tok, const uint8_t *data, size_t size, int max_len)
{
    int32_t ids[K22_CLIP_MAX_LEN], again[K22_CLIP_MAX_LEN];
    uint8_t mask[K22_CLIP_MAX_LEN], mask2[K22_CLIP_MAX_LEN];
    int n = k22_tokenizer_encode(tok, (const char *)data, size, max_len, ids, mask);
    require(n >= 2 && n <= max_len, "2 <= count <= max_len");
    require(ids[0] == k22_tokenizer_bos_id(tok), "bos first");
    require(ids[n - 1] == k22_tokenizer_eos_id(tok), "eos last");
    for (int i = 0; i < max_len; i++) {
        require(ids[i] >= 0 && ids[i] < k22_tokenizer_vocab_size(tok), "id in the vocabulary");
        require(mask[i] == (i < n), "mask is a prefix of ones");
        if (i >= n) require(ids[i] == k22_tokenizer_pad_id(tok), "pad after eos");
    }
    int n2 = k22_tokenizer_encode(tok, (const char *)data, size, max_len, again, mask2);
    require(n2 == n && !memcmp(ids, again, (size_t)max_len * sizeof *ids) &&
                !memcmp(mask, mask2, (size_t)max_len),
            "deterministic (cached pieces)");
}

static void fuzz_files(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, 0, size);
    size_t vlen = nul ? (size_t)(nul - data) : size;
    const char *merges = nul ? (const char *)nul + 1 : "";
    size_t mlen = nul ? size - vlen - 1 : 0;
    k22_tokenizer *tok = NULL;
    k22_err err = {0};
    if (k22_tokenizer_load_buf((const char *)data, vlen, "fuzz-vocab", merges, mlen, "fuzz-merges",
                               &tok, &err) != K22_OK) {
        require(tok == NULL, "no tokenizer on error");
        require(strstr(err.msg, "fuzz-vocab") || strstr(err.msg, "fuzz-merges"),
                "the error names the file");
        return;
    }
    static const char *const caps[] = {"a photo of a cat", "", "ab ba <|endoftext|> \xff\xfe!!",
                                       "e\xcc\x81\xcc\xa3 \xe6\x97\xa5 it's 123"};
    for (size_t i = 0; i < sizeof caps / sizeof caps[0]; i++) {
        check(tok, (const uint8_t *)caps[i], strlen(caps[i]), K22_CLIP_MAX_LEN);
        check(tok, data, vlen, 5);
    }
    k22_tokenizer_free(tok);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size >= 6 && memcmp(data, "FILES\n", 6) == 0) {
        fuzz_files(data + 6, size - 6);
        return 0;
    }
    if (!embedded) {
        k22_err err = {0};
        if (k22_tokenizer_load_embedded(&embedded, &err)) {
            fprintf(stderr, "fuzz_tokenizer: %s\n", err.msg);
            abort();
        }
    }
    check(embedded, data, size, K22_CLIP_MAX_LEN);
    check(embedded, data, size, 2 + (int)(size % 7));
    return 0;
}
