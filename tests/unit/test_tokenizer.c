/* test_tokenizer.c: the CLIP tokenizer against transformers' CLIPTokenizer: every caption of
 * tests/fixtures/tokenizer/captions.txt must give exactly the ids and mask of expected.jsonl
 * (written by tools/reference/make_tokenizer_fixtures.py), from the embedded vocabulary, from
 * the folder copy, and with pad_token "!" from special_tokens_map.json; plus invalid UTF-8,
 * other lengths, malformed vocabulary files (errors name the file and line or key), the CLI,
 * and a canary that a corrupted expectation is caught. */
#include "harness/harness.h"
#include "k22/embedded.h"
#include "k22/k22.h"
#include "k22/tokenizer.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FIX "tests/fixtures/tokenizer/"

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    if (b) b[n] = 0, *len = (size_t)n;
    return b;
}

/* Splits buf on "\n" in place: line i is lines[i], of length lens[i]. Returns the count. */
static int split_lines(char *buf, size_t len, char ***lines, size_t **lens)
{
    int n = 0, cap = 0;
    *lines = NULL;
    *lens = NULL;
    for (size_t pos = 0; pos < len;) {
        char *nl = memchr(buf + pos, '\n', len - pos);
        size_t l = nl ? (size_t)(nl - (buf + pos)) : len - pos;
        if (n == cap) {
            cap = cap ? 2 * cap : 1024;
            *lines = realloc(*lines, (size_t)cap * sizeof **lines);
            *lens = realloc(*lens, (size_t)cap * sizeof **lens);
        }
        (*lines)[n] = buf + pos;
        (*lens)[n++] = l;
        pos += l + 1;
    }
    return n;
}

typedef struct {
    char *cap_buf, *exp_buf;
    char **caps, **exps;
    size_t *cap_lens, *exp_lens;
    int ncap, nexp;
} fixture;

static int fixture_load(fixture *fx, const char *expected)
{
    size_t a = 0, b = 0;
    memset(fx, 0, sizeof *fx);
    fx->cap_buf = slurp(FIX "captions.txt", &a);
    fx->exp_buf = slurp(expected, &b);
    if (!fx->cap_buf || !fx->exp_buf) return -1;
    fx->ncap = split_lines(fx->cap_buf, a, &fx->caps, &fx->cap_lens);
    fx->nexp = split_lines(fx->exp_buf, b, &fx->exps, &fx->exp_lens);
    return 0;
}

static void fixture_free(fixture *fx)
{
    free(fx->cap_buf);
    free(fx->exp_buf);
    free(fx->caps);
    free(fx->exps);
    free(fx->cap_lens);
    free(fx->exp_lens);
}

/* Parses one expected line into ids/mask[77]; returns 0 on success. */
static int parse_expected(const char *line, size_t len, int32_t *ids, uint8_t *mask)
{
    json_error_t je;
    json_t *o = json_loadb(line, len, 0, &je);
    json_t *a = json_object_get(o, "input_ids"), *m = json_object_get(o, "attention_mask");
    int ok = json_array_size(a) == K22_CLIP_MAX_LEN && json_array_size(m) == K22_CLIP_MAX_LEN;
    for (size_t i = 0; ok && i < K22_CLIP_MAX_LEN; i++) {
        ids[i] = (int32_t)json_integer_value(json_array_get(a, i));
        mask[i] = (uint8_t)json_integer_value(json_array_get(m, i));
    }
    json_decref(o);
    return ok ? 0 : -1;
}

/* Encodes captions [0, n) and compares with the expectations; corrupt >= 0 changes that
 * caption's expected id 1 first (the canary). Prints the first mismatches; returns their count. */
static int compare(k22_tokenizer *tok, const fixture *fx, int n, int corrupt, int quiet)
{
    int bad = 0;
    for (int i = 0; i < n; i++) {
        int32_t want[K22_CLIP_MAX_LEN], got[K22_CLIP_MAX_LEN];
        uint8_t wmask[K22_CLIP_MAX_LEN], gmask[K22_CLIP_MAX_LEN];
        if (parse_expected(fx->exps[i], fx->exp_lens[i], want, wmask)) {
            fprintf(stderr, "expected line %d does not parse\n", i + 1);
            bad++;
            continue;
        }
        if (i == corrupt) want[1] ^= 1;
        k22_tokenizer_encode(tok, fx->caps[i], fx->cap_lens[i], K22_CLIP_MAX_LEN, got, gmask);
        int j = 0;
        while (j < K22_CLIP_MAX_LEN && got[j] == want[j] && gmask[j] == wmask[j]) j++;
        if (j == K22_CLIP_MAX_LEN) continue;
        if (++bad <= 5 && !quiet)
            fprintf(stderr, "caption %d '%.*s': position %d: id %d mask %d, expected id %d mask %d\n",
                    i + 1, (int)(fx->cap_lens[i] > 120 ? 120 : fx->cap_lens[i]), fx->caps[i], j,
                    got[j], gmask[j], want[j], wmask[j]);
    }
    return bad;
}

static void write_file(const char *dir, const char *name, const void *data, size_t len)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fwrite(data, 1, len, f);
    fclose(f);
}

static void remove_dir(const char *dir)
{
    static const char *const names[] = {"vocab.json", "merges.txt", "special_tokens_map.json",
                                        "tokenizer_config.json"};
    char path[512];
    for (int i = 0; i < 4; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        unlink(path);
    }
    rmdir(dir);
}

static void test_fixtures(void)
{
    fixture fx;
    CHECK_MSG(fixture_load(&fx, FIX "expected.jsonl") == 0, "cannot read the fixtures in " FIX);
    if (!fx.caps) return;
    CHECK_MSG(fx.ncap >= 2000 && fx.ncap == fx.nexp, "%d captions, %d expectations", fx.ncap, fx.nexp);
    k22_err err = {0};
    k22_tokenizer *tok = NULL;
    CHECK_MSG(k22_tokenizer_load_embedded(&tok, &err) == K22_OK, "%s", err.msg);
    if (!tok) goto out;
    CHECK(k22_tokenizer_vocab_size(tok) == 49408);
    CHECK(k22_tokenizer_bos_id(tok) == 49406 && k22_tokenizer_eos_id(tok) == 49407);
    CHECK(k22_tokenizer_pad_id(tok) == 49407);
    int bad = compare(tok, &fx, fx.ncap, -1, 0);
    CHECK_MSG(bad == 0, "%d of %d captions differ from transformers (embedded vocabulary)", bad, fx.ncap);
    /* again: now every piece comes from the cache */
    bad = compare(tok, &fx, fx.ncap, -1, 0);
    CHECK_MSG(bad == 0, "%d captions differ on the second (cached) pass", bad);
    /* canary: a wrong expectation must be reported */
    CHECK_MSG(compare(tok, &fx, 10, 7, 1) == 1, "the corrupted expectation was not caught");
    k22_tokenizer_free(tok);
    tok = NULL;
    CHECK_MSG(k22_tokenizer_load_dir("data/clip-tokenizer", &tok, &err) == K22_OK, "%s", err.msg);
    if (tok) {
        bad = compare(tok, &fx, fx.ncap, -1, 0);
        CHECK_MSG(bad == 0, "%d captions differ (data/clip-tokenizer folder)", bad);
    }
out:
    k22_tokenizer_free(tok);
    fixture_free(&fx);
}

/* pad_token "!" from special_tokens_map.json: pads with 0, and "!" in the text is cut out as a
 * special token, as transformers does. */
static void test_pad_bang(void)
{
    char dir[] = "/tmp/k22_tok_XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK_MSG(0, "mkdtemp failed");
        return;
    }
    write_file(dir, "vocab.json", k22_clip_vocab_json,
               (size_t)(k22_clip_vocab_json_end - k22_clip_vocab_json));
    write_file(dir, "merges.txt", k22_clip_merges_txt,
               (size_t)(k22_clip_merges_txt_end - k22_clip_merges_txt));
    write_file(dir, "tokenizer_config.json", "{\"pad_token\": \"<|endoftext|>\"}", 30);
    write_file(dir, "special_tokens_map.json", "{\"pad_token\": \"!\"}", 18);
    fixture fx;
    k22_err err = {0};
    k22_tokenizer *tok = NULL;
    CHECK_MSG(fixture_load(&fx, FIX "expected_pad_bang.jsonl") == 0, "cannot read the fixtures");
    CHECK_MSG(k22_tokenizer_load_dir(dir, &tok, &err) == K22_OK, "%s", err.msg);
    if (tok && fx.caps) {
        CHECK(k22_tokenizer_pad_id(tok) == 0);
        int bad = compare(tok, &fx, fx.nexp, -1, 0);
        CHECK_MSG(bad == 0 && fx.nexp == 400, "%d of %d captions differ with pad_token '!'", bad, fx.nexp);
    }
    k22_tokenizer_free(tok);
    fixture_free(&fx);
    remove_dir(dir);
}

static int encode_same(k22_tokenizer *tok, const char *a, size_t na, const char *b, size_t nb)
{
    int32_t x[K22_CLIP_MAX_LEN], y[K22_CLIP_MAX_LEN];
    uint8_t mx[K22_CLIP_MAX_LEN], my[K22_CLIP_MAX_LEN];
    int n1 = k22_tokenizer_encode(tok, a, na, K22_CLIP_MAX_LEN, x, mx);
    int n2 = k22_tokenizer_encode(tok, b, nb, K22_CLIP_MAX_LEN, y, my);
    return n1 == n2 && !memcmp(x, y, sizeof x) && !memcmp(mx, my, sizeof mx);
}

#define SAME(tok, a, b) encode_same(tok, a, sizeof(a) - 1, b, sizeof(b) - 1)

/* Invalid UTF-8 reads as U+FFFD per maximal invalid subpart (Rust's from_utf8_lossy). */
static void test_invalid_utf8(k22_tokenizer *tok)
{
    CHECK(SAME(tok, "\xff", "\xef\xbf\xbd"));
    CHECK(SAME(tok, "a\xe2\x82" "b", "a\xef\xbf\xbd" "b"));
    CHECK(SAME(tok, "\xf0\x80", "\xef\xbf\xbd\xef\xbf\xbd"));
    CHECK(SAME(tok, "\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"));
    CHECK(SAME(tok, "x\xc0\xafy", "x\xef\xbf\xbd\xef\xbf\xbdy"));
    CHECK(SAME(tok, "\xf4\x90\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"));
    CHECK(SAME(tok, "caf\xc3", "caf\xef\xbf\xbd"));
    CHECK(!SAME(tok, "\xff", "\xef\xbf\xbd\xef\xbf\xbd"));
}

static void test_lengths(k22_tokenizer *tok)
{
    int32_t ids[8];
    uint8_t mask[8];
    /* "a photo of a cat" is 320 1125 539 320 2368 in CLIP's vocabulary */
    int n = k22_tokenizer_encode(tok, "a photo of a cat", 16, 5, ids, mask);
    CHECK(n == 5 && ids[0] == 49406 && ids[1] == 320 && ids[2] == 1125 && ids[3] == 539 &&
          ids[4] == 49407 && mask[4] == 1);
    n = k22_tokenizer_encode(tok, "a photo of a cat", 16, 2, ids, mask);
    CHECK(n == 2 && ids[0] == 49406 && ids[1] == 49407);
    n = k22_tokenizer_encode(tok, "", 0, 8, ids, mask);
    CHECK(n == 2 && ids[2] == 49407 && mask[1] == 1 && mask[2] == 0 && mask[7] == 0);
}

/* Writes a folder with the given vocab.json and merges.txt and expects loading to fail with a
 * message holding every needle. */
static void expect_error(const char *vocab, const char *merges, const char *special,
                         const char *needle1, const char *needle2)
{
    char dir[] = "/tmp/k22_tok_XXXXXX";
    if (!mkdtemp(dir)) return;
    if (vocab) write_file(dir, "vocab.json", vocab, strlen(vocab));
    if (merges) write_file(dir, "merges.txt", merges, strlen(merges));
    if (special) write_file(dir, "special_tokens_map.json", special, strlen(special));
    k22_tokenizer *tok = NULL;
    k22_err err = {0};
    k22_status st = k22_tokenizer_load_dir(dir, &tok, &err);
    CHECK_MSG(st != K22_OK && tok == NULL && strstr(err.msg, needle1) && strstr(err.msg, needle2),
              "expected an error naming '%s' and '%s', got status %d: %s", needle1, needle2, st, err.msg);
    k22_tokenizer_free(tok);
    remove_dir(dir);
}

static void test_malformed(void)
{
    const char *v = "{\"a\": 0, \"b\": 1, \"ab\": 2, \"<|startoftext|>\": 3, \"<|endoftext|>\": 4}";
    const char *m = "#version: 0.2\na b\n";
    /* the good pair loads */
    char dir[] = "/tmp/k22_tok_XXXXXX";
    if (mkdtemp(dir)) {
        write_file(dir, "vocab.json", v, strlen(v));
        write_file(dir, "merges.txt", m, strlen(m));
        k22_tokenizer *tok = NULL;
        k22_err err = {0};
        CHECK_MSG(k22_tokenizer_load_dir(dir, &tok, &err) == K22_OK, "%s", err.msg);
        if (tok) {
            CHECK(k22_tokenizer_vocab_size(tok) == 5 && !strcmp(k22_tokenizer_token(tok, 2), "ab"));
            int32_t ids[6];
            uint8_t mask[6];
            /* "ab</w>"-less vocabulary: the last byte is unknown -> unk (<|endoftext|>) */
            int n = k22_tokenizer_encode(tok, "ab", 2, 6, ids, mask);
            CHECK(n == 4 && ids[0] == 3 && ids[1] == 0 && ids[2] == 4 && ids[3] == 4);
        }
        k22_tokenizer_free(tok);
        remove_dir(dir);
    }
    expect_error("{\"a\": 0,", m, NULL, "vocab.json", "invalid JSON");
    expect_error("[1, 2]", m, NULL, "vocab.json", "object");
    expect_error("{\"a\": \"x\", \"<|startoftext|>\": 3, \"<|endoftext|>\": 4}", m, NULL, "vocab.json", "'a'");
    expect_error("{\"a\": -1}", m, NULL, "vocab.json", "'a'");
    expect_error("{\"a\": 99999999}", m, NULL, "vocab.json", "'a'");
    expect_error("{\"a\": 0, \"b\": 0}", m, NULL, "vocab.json", "id 0");
    expect_error("{\"a\": 0, \"a\": 1}", m, NULL, "vocab.json", "duplicate");
    expect_error("{}", m, NULL, "vocab.json", "entries");
    expect_error(v, "#version: 0.2\na b\nb  a\n", NULL, "merges.txt", "line 3");
    expect_error(v, "#version: 0.2\na b c\n", NULL, "merges.txt", "line 2");
    expect_error(v, "a b\n\n", NULL, "merges.txt", "line 2");
    expect_error(v, "a b\r\n", NULL, "merges.txt", "line 1");
    expect_error(v, "#version: 0.2\nb a\n", NULL, "merges.txt", "merged token");
    expect_error(v, "a c\n", NULL, "merges.txt", "right token");
    expect_error(v, NULL, NULL, "merges.txt", "cannot open");
    expect_error(NULL, m, NULL, "vocab.json", "cannot open");
    expect_error(v, m, "{\"pad_token\": \"<pad>\"}", "special_tokens_map.json: pad_token", "<pad>");
    expect_error(v, m, "{\"bos_token\": 5}", "special_tokens_map.json", "bos_token");
    expect_error(v, m, "{\"unk_token\"", "special_tokens_map.json", "invalid JSON");
    expect_error("{\"a\": 0, \"<|startoftext|>\": 3}", "", NULL, "vocab.json: eos_token", "<|endoftext|>");
}

/* `k22 tokenize` over the fixture prints exactly expected.jsonl. */
static void test_cli(void)
{
    const char *bin = getenv("K22_BIN");
    if (!bin) {
        fprintf(stderr, "K22_BIN not set: skipping the CLI check\n");
        return;
    }
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s' tokenize < " FIX "captions.txt | cmp -s - " FIX "expected.jsonl", bin);
    CHECK_MSG(system(cmd) == 0, "k22 tokenize output differs from %sexpected.jsonl", FIX);
    snprintf(cmd, sizeof cmd, "printf 'a photo of a cat' | '%s' tokenize --max_length 4 | grep -qx "
             "'{\"input_ids\": \\[49406, 320, 1125, 49407\\], \"attention_mask\": \\[1, 1, 1, 1\\]}'", bin);
    CHECK_MSG(system(cmd) == 0, "k22 tokenize --max_length 4 on a last line without newline");
    snprintf(cmd, sizeof cmd, "'%s' tokenize --tokenizer /nonexistent < /dev/null 2>/dev/null", bin);
    CHECK_MSG(system(cmd) != 0, "a missing tokenizer folder must fail");
}

int main(void)
{
    test_fixtures();
    test_pad_bang();
    k22_err err = {0};
    k22_tokenizer *tok = NULL;
    CHECK_MSG(k22_tokenizer_load_embedded(&tok, &err) == K22_OK, "%s", err.msg);
    if (tok) {
        test_invalid_utf8(tok);
        test_lengths(tok);
    }
    k22_tokenizer_free(tok);
    test_malformed();
    test_cli();
    return k22_test_finish("tokenizer");
}
