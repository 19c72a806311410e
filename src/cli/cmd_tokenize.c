/* cmd_tokenize.c: `k22 tokenize`: one caption per stdin line (split on "\n" only) -> one JSON
 * object per line, {"input_ids": [...], "attention_mask": [...]}, the text of Python's
 * json.dumps of what transformers' CLIPTokenizer returns for max_length=77,
 * padding="max_length", truncation=True. */
#include "k22/cli.h"
#include "k22/k22.h"
#include "k22/opts.h"
#include "k22/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define K22_TOKENIZE_MAX_LINE (1u << 20) /* a caption longer than this is refused */

static void print_row(FILE *out, const int32_t *ids, const uint8_t *mask, int n)
{
    fputs("{\"input_ids\": [", out);
    for (int i = 0; i < n; i++) fprintf(out, i ? ", %d" : "%d", ids[i]);
    fputs("], \"attention_mask\": [", out);
    for (int i = 0; i < n; i++) fputs(i ? (mask[i] ? ", 1" : ", 0") : (mask[i] ? "1" : "0"), out);
    fputs("]}\n", out);
}

/* Reads one line (without its "\n") into *buf; returns 1, 0 at end of input, -1 when the line
 * is over the cap. A last line without "\n" counts; an empty input has no lines. */
static int read_line(FILE *in, char **buf, size_t *cap, size_t *len)
{
    *len = 0;
    int c, any = 0;
    while ((c = getc_unlocked(in)) != EOF) {
        any = 1;
        if (c == '\n') return 1;
        if (*len >= K22_TOKENIZE_MAX_LINE) return -1;
        if (*len + 1 > *cap) {
            *cap = *cap ? *cap * 2 : 4096;
            char *nb = realloc(*buf, *cap);
            if (!nb) K22_FATAL("out of memory reading a caption of %zu bytes", *len);
            *buf = nb;
        }
        (*buf)[(*len)++] = (char)c;
    }
    return any ? 1 : 0;
}

int k22_cmd_tokenize(int argc, char **argv)
{
    const char *dir = NULL;
    int64_t max_length = 0;
    const k22_opt opts[] = {
        {"tokenizer", K22_OPT_STR, &dir, NULL,
         "folder with vocab.json and merges.txt (and optionally special_tokens_map.json); "
         "default: the CLIP vocabulary built into k22", "K22_TOKENIZER", NULL, 0},
        {"max_length", K22_OPT_INT, &max_length, "77", "ids per caption (bos + tokens + eos + pad)",
         NULL, NULL, 0},
    };
    k22_cmd_spec spec = {"k22 tokenize [--tokenizer DIR] < captions.txt",
                         "Tokenizes one caption per line of stdin with the CLIP BPE tokenizer and "
                         "writes one JSON object per line with input_ids and attention_mask.",
                         opts, (int)(sizeof opts / sizeof opts[0]), NULL, 0, 0, 0};
    int rc = k22_opts_parse_cli(&spec, argc, argv, "tokenize");
    if (rc >= 0) return rc;
    rc = 1;
    k22_err err = {0};
    k22_tokenizer *tok = NULL;
    char *line = NULL;
    if (max_length < 2 || max_length > 4096) {
        fprintf(stderr, "k22 tokenize: --max_length %lld is outside [2, 4096]\n", (long long)max_length);
        return 2;
    }
    k22_status st = dir ? k22_tokenizer_load_dir(dir, &tok, &err) : k22_tokenizer_load_embedded(&tok, &err);
    if (st) {
        fprintf(stderr, "k22 tokenize: %s\n", err.msg);
        return 1;
    }
    int32_t ids[4096];
    uint8_t mask[4096];
    size_t cap = 0, len = 0, lineno = 0;
    int r;
    while ((r = read_line(stdin, &line, &cap, &len)) == 1) {
        lineno++;
        k22_tokenizer_encode(tok, line ? line : "", len, (int)max_length, ids, mask);
        print_row(stdout, ids, mask, (int)max_length);
    }
    if (r < 0) {
        fprintf(stderr, "k22 tokenize: stdin: line %zu: longer than %u bytes\n", lineno + 1,
                K22_TOKENIZE_MAX_LINE);
        goto out;
    }
    if (ferror(stdin) || fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "k22 tokenize: read or write error\n");
        goto out;
    }
    rc = 0;
out:
    free(line);
    k22_tokenizer_free(tok);
    return rc;
}
