/* test_captions.c: the caption readers. metadata.jsonl and metadata.csv parsing (BOM, CRLF,
 * RFC 4180 quoting, caption lists, custom columns), every reject reason naming file and line,
 * the folder checks (missing file, '..', duplicates), the sidecar walk (symlink loop, missing
 * .txt, hidden files) and WebDataset shards (grouping by key, duplicates, caps, truncation).
 * All inputs are made here, in a temporary folder. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness/harness.h"
#include "k22/captions.h"
#include "k22/fsutil.h"

static char g_root[] = "/tmp/k22-test-captions-XXXXXX";

static void put_file(const char *rel, const void *data, size_t n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", g_root, rel);
    char *slash = strrchr(path, '/');
    *slash = '\0';
    k22_fs_mkdir_p(path, NULL);
    *slash = '/';
    FILE *f = fopen(path, "wb");
    CHECK_MSG(f != NULL, "cannot create %s", path);
    if (!f) return;
    fwrite(data, 1, n, f);
    fclose(f);
}
static void put_text(const char *rel, const char *s) { put_file(rel, s, strlen(s)); }

/* The reject whose source ends with suffix, or NULL. */
static const k22_caption_reject *find_reject(const k22_caption_set *s, const char *suffix)
{
    for (size_t i = 0; i < s->nrejects; i++) {
        size_t a = strlen(s->rejects[i].source), b = strlen(suffix);
        if (a >= b && !strcmp(s->rejects[i].source + a - b, suffix)) return &s->rejects[i];
    }
    return NULL;
}

static void expect_reject(const k22_caption_set *s, const char *suffix, const char *reason_part)
{
    const k22_caption_reject *r = find_reject(s, suffix);
    CHECK_MSG(r != NULL, "no reject from '%s'", suffix);
    if (r) CHECK_MSG(strstr(r->reason, reason_part) != NULL, "%s: reason '%s' lacks '%s'", r->source, r->reason, reason_part);
}

static const k22_caption_rec *find_rec(const k22_caption_set *s, const char *name)
{
    for (size_t i = 0; i < s->nrecs; i++)
        if (!strcmp(s->recs[i].name, name)) return &s->recs[i];
    return NULL;
}

static char *big_caption(size_t n)
{
    char *c = malloc(n + 1);
    for (size_t i = 0; i < n; i++) c[i] = (char)('a' + i % 26);
    c[n] = '\0';
    return c;
}

static void test_utf8(void)
{
    size_t bad = 99;
    CHECK(k22_utf8_valid((const uint8_t *)"caf\xc3\xa9 \xf0\x9f\x8d\x9c", 10, NULL));
    CHECK(!k22_utf8_valid((const uint8_t *)"ab\xff", 3, &bad) && bad == 2);
    CHECK(!k22_utf8_valid((const uint8_t *)"\xc0\xaf", 2, &bad) && bad == 0); /* overlong '/' */
    CHECK(!k22_utf8_valid((const uint8_t *)"x\xed\xa0\x80", 4, &bad) && bad == 1); /* surrogate */
    CHECK(!k22_utf8_valid((const uint8_t *)"\xf4\x90\x80\x80", 4, &bad)); /* past U+10FFFF */
    CHECK(!k22_utf8_valid((const uint8_t *)"a\xe3\x81", 3, &bad) && bad == 1); /* cut short */
    char why[256];
    CHECK(k22_caption_check("a cat", 5, 16, why, sizeof why));
    CHECK(!k22_caption_check("", 0, 16, why, sizeof why) && strstr(why, "empty"));
    CHECK(!k22_caption_check(" \t\n", 3, 16, why, sizeof why) && strstr(why, "whitespace"));
    CHECK(!k22_caption_check("a\0b", 3, 16, why, sizeof why) && strstr(why, "NUL"));
    CHECK(!k22_caption_check("0123456789abcdefg", 17, 16, why, sizeof why) && strstr(why, "17 bytes"));
}

static void test_jsonl(void)
{
    k22_captions_opts o;
    k22_captions_opts_default(&o);
    CHECK(o.max_caption_bytes == 16384 && !strcmp(o.caption_column, "text") && !strcmp(o.image_column, "file_name"));
    char *big = big_caption(50 * 1024);
    size_t cap = 60 * 1024 + 4096;
    char *buf = malloc(cap);
    int n = snprintf(buf, cap,
        "\xef\xbb\xbf{\"file_name\": \"a.jpg\", \"text\": \"a drawing of a man with red hair\"}\r\n" /* 1 */
        "{\"file_name\": \"b.png\", \"text\": [\"first\", \"second \\u00e9\", \"third\"], \"extra\": 3}\n" /* 2 */
        "\n"                                                                  /* 3: blank */
        "{\"file_name\": \"c.jpg\", \"text\": \"bad \xff byte\"}\n"            /* 4 */
        "{\"file_name\": \"d.jpg\", \"text\": \"\"}\n"                         /* 5 */
        "{\"file_name\": \"e.jpg\", \"text\": \"%s\"}\n"                       /* 6 */
        "{\"file_name\": \"f.jpg\", \"text\": \"unterminated}\n"               /* 7 */
        "{\"file_name\": \"g.jpg\"}\n"                                         /* 8 */
        "{\"file_name\": \"h.jpg\", \"text\": 42}\n"                           /* 9 */
        "[\"i.jpg\", \"a list\"]\n"                                            /* 10 */
        "{\"file_name\": \"j.jpg\", \"text\": \"x\", \"text\": \"y\"}\n"       /* 11 */
        "{\"file_name\": \"k.jpg\", \"text\": []}\n"                           /* 12 */
        "{\"file_name\": \"l.jpg\", \"text\": [\"ok\", 7]}\n"                  /* 13 */
        "{\"text\": \"no file name\"}\n"                                       /* 14 */
        "{\"file_name\": \"m.jpg\", \"text\": \"last line, no newline\"}",     /* 15 */
        big);
    k22_caption_set s;
    k22_caption_set_init(&s);
    k22_err err;
    CHECK(k22_captions_parse_jsonl(buf, (size_t)n, "d/metadata.jsonl", &o, &s, &err) == K22_OK);
    CHECK_MSG(s.nrecs == 3, "records: %zu, want 3", s.nrecs);
    CHECK_MSG(s.nrejects == 11, "rejects: %zu, want 11", s.nrejects);
    const k22_caption_rec *a = find_rec(&s, "a.jpg"), *b = find_rec(&s, "b.png"), *m = find_rec(&s, "m.jpg");
    CHECK(a && a->ncaptions == 1 && !strcmp(a->captions[0], "a drawing of a man with red hair"));
    CHECK(a && !strcmp(a->source, "d/metadata.jsonl:1") && a->file == NULL);
    CHECK(b && b->ncaptions == 3 && !strcmp(b->captions[1], "second \xc3\xa9") && !strcmp(b->captions[2], "third"));
    CHECK(m && !strcmp(m->source, "d/metadata.jsonl:15"));
    expect_reject(&s, "metadata.jsonl:4", "not valid UTF-8");
    expect_reject(&s, "metadata.jsonl:5", "caption is empty");
    expect_reject(&s, "metadata.jsonl:6", "51200 bytes, over the 16384-byte cap");
    expect_reject(&s, "metadata.jsonl:7", "malformed JSON");
    expect_reject(&s, "metadata.jsonl:8", "no 'text' key");
    expect_reject(&s, "metadata.jsonl:9", "a number");
    expect_reject(&s, "metadata.jsonl:10", "not a JSON object");
    expect_reject(&s, "metadata.jsonl:11", "malformed JSON"); /* duplicate key */
    expect_reject(&s, "metadata.jsonl:12", "list of 0 captions");
    expect_reject(&s, "metadata.jsonl:13", "'text'[1] is a number, not a string");
    expect_reject(&s, "metadata.jsonl:14", "no 'file_name' key");
    k22_caption_set_free(&s);

    /* a higher cap admits the long caption; another column name is honoured */
    o.max_caption_bytes = 64 * 1024;
    o.caption_column = "caption";
    n = snprintf(buf, cap, "{\"file_name\": \"e.jpg\", \"caption\": \"%s\", \"text\": \"no\"}\n", big);
    CHECK(k22_captions_parse_jsonl(buf, (size_t)n, "m.jsonl", &o, &s, &err) == K22_OK);
    CHECK(s.nrecs == 1 && s.nrejects == 0 && strlen(s.recs[0].captions[0]) == 50 * 1024);
    k22_caption_set_free(&s);
    free(buf);
    free(big);
}

static void test_csv(void)
{
    k22_captions_opts o;
    k22_captions_opts_default(&o);
    const char *csv =
        "\xef\xbb\xbf" "file_name,text,extra\r\n"               /* 1 */
        "a.jpg,a plain caption,1\r\n"                           /* 2 */
        "b.jpg,\"quoted, with comma and \"\"quotes\"\"\",2\r\n" /* 3 */
        "c.jpg,\"two\r\nlines\",3\r\n"                          /* 4-5 */
        "\r\n"                                                  /* 6: blank */
        "d.jpg,too few\r\n"                                     /* 7 */
        "e.jpg,,5\r\n"                                          /* 8: empty caption */
        "f.jpg,\"closed\"junk,6\r\n"                            /* 9 */
        "g.jpg,after a bad row,7\n"                             /* 10 */
        "h.jpg,bad \xfe byte,8\n"                               /* 11 */
        "i.jpg,\"never closed,9\n";                             /* 12 */
    k22_caption_set s;
    k22_caption_set_init(&s);
    k22_err err;
    CHECK(k22_captions_parse_csv(csv, strlen(csv), "d/metadata.csv", &o, &s, &err) == K22_OK);
    CHECK_MSG(s.nrecs == 4, "records: %zu, want 4", s.nrecs);
    CHECK_MSG(s.nrejects == 5, "rejects: %zu, want 5", s.nrejects);
    const k22_caption_rec *b = find_rec(&s, "b.jpg"), *c = find_rec(&s, "c.jpg"), *g = find_rec(&s, "g.jpg");
    CHECK(find_rec(&s, "a.jpg") && !strcmp(find_rec(&s, "a.jpg")->captions[0], "a plain caption"));
    CHECK(b && !strcmp(b->captions[0], "quoted, with comma and \"quotes\""));
    CHECK(c && !strcmp(c->captions[0], "two\r\nlines") && !strcmp(c->source, "d/metadata.csv:4"));
    CHECK(g && !strcmp(g->source, "d/metadata.csv:10"));
    expect_reject(&s, "metadata.csv:7", "row has 2 fields, the header 3");
    expect_reject(&s, "metadata.csv:8", "caption is empty");
    expect_reject(&s, "metadata.csv:9", "text after a closing quote");
    expect_reject(&s, "metadata.csv:11", "not valid UTF-8");
    expect_reject(&s, "metadata.csv:12", "opened on line 12 is not closed");
    k22_caption_set_free(&s);

    const char *nocol = "image,caption\na.jpg,x\n";
    CHECK(k22_captions_parse_csv(nocol, strlen(nocol), "m.csv", &o, &s, &err) == K22_ERR_KEY);
    CHECK_MSG(strstr(err.msg, "m.csv: line 1") && strstr(err.msg, "'file_name'"), "%s", err.msg);
    o.image_column = "image";
    o.caption_column = "caption";
    CHECK(k22_captions_parse_csv(nocol, strlen(nocol), "m.csv", &o, &s, &err) == K22_OK);
    CHECK(s.nrecs == 1 && !strcmp(s.recs[0].name, "a.jpg") && !strcmp(s.recs[0].captions[0], "x"));
    k22_caption_set_free(&s);
    /* the header alone, and nothing at all */
    o.image_column = "file_name";
    o.caption_column = "text";
    CHECK(k22_captions_parse_csv("file_name,text", 14, "m.csv", &o, &s, &err) == K22_OK && s.nrecs == 0);
    CHECK(k22_captions_parse_csv("", 0, "m.csv", &o, &s, &err) == K22_ERR_KEY);
    k22_caption_set_free(&s);
}

static void test_dir_metadata(void)
{
    put_text("meta/a.jpg", "x");
    put_text("meta/sub/b.png", "x");
    put_text("meta/c.jpg", "x");
    mkdir("/tmp", 0755);
    char outside[4096];
    snprintf(outside, sizeof outside, "%s/outside.jpg", g_root);
    put_text("outside.jpg", "x");
    put_text("meta/metadata.jsonl",
             "{\"file_name\": \"a.jpg\", \"text\": \"one\"}\n"
             "{\"file_name\": \"sub/b.png\", \"text\": \"two\"}\n"
             "{\"file_name\": \"missing.jpg\", \"text\": \"three\"}\n"
             "{\"file_name\": \"../outside.jpg\", \"text\": \"four\"}\n"
             "{\"file_name\": \"/etc/passwd\", \"text\": \"five\"}\n"
             "{\"file_name\": \"./a.jpg\", \"text\": \"six\"}\n"
             "{\"file_name\": \"sub\", \"text\": \"seven\"}\n"
             "{\"file_name\": \"c.jpg\", \"text\": \"eight\"}\n");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/meta", g_root);
    k22_caption_set s;
    k22_caption_set_init(&s);
    k22_err err;
    CHECK(k22_captions_read_dir(dir, NULL, &s, &err) == K22_OK);
    CHECK_MSG(s.nrecs == 3 && s.nrejects == 5, "records %zu rejects %zu", s.nrecs, s.nrejects);
    CHECK(s.nrecs == 3 && !strcmp(s.recs[0].name, "a.jpg") && !strcmp(s.recs[1].name, "sub/b.png") &&
          !strcmp(s.recs[2].name, "c.jpg"));
    char want[8192];
    snprintf(want, sizeof want, "%s/sub/b.png", dir);
    CHECK(s.nrecs >= 2 && s.recs[1].file && !strcmp(s.recs[1].file, want));
    expect_reject(&s, "metadata.jsonl:3", "no such file");
    expect_reject(&s, "metadata.jsonl:4", "'..' part");
    expect_reject(&s, "metadata.jsonl:5", "absolute path");
    expect_reject(&s, "metadata.jsonl:6", "duplicate file_name 'a.jpg' (first at");
    expect_reject(&s, "metadata.jsonl:7", "not a regular file");
    k22_caption_set_free(&s);

    /* metadata.csv is read when there is no metadata.jsonl */
    put_text("metacsv/a.jpg", "x");
    put_text("metacsv/metadata.csv", "file_name,text\na.jpg,\"from, csv\"\nzz.jpg,gone\n");
    snprintf(dir, sizeof dir, "%s/metacsv", g_root);
    CHECK(k22_captions_read_dir(dir, NULL, &s, &err) == K22_OK);
    CHECK(s.nrecs == 1 && !strcmp(s.recs[0].captions[0], "from, csv") && s.nrejects == 1);
    expect_reject(&s, "metadata.csv:3", "no such file");
    k22_caption_set_free(&s);

    /* unreadable layouts are errors naming the path */
    CHECK(k22_captions_read_dir("/nonexistent-k22-dir", NULL, &s, &err) == K22_ERR_IO);
    CHECK(strstr(err.msg, "/nonexistent-k22-dir") != NULL);
    k22_caption_set_free(&s);
}

static void test_dir_sidecar(void)
{
    put_text("side/a.jpg", "x");
    put_text("side/a.txt", "  a cartoon of a girl with pink hair\n");
    put_text("side/b.png", "x"); /* no caption */
    put_text("side/c.webp", "x");
    put_text("side/c.txt", "bad \x80 byte");
    put_text("side/d.JPG", "x");
    put_text("side/d.txt", "\r\n");
    char *big = big_caption(50 * 1024);
    put_text("side/e.jpeg", "x");
    put_text("side/e.txt", big);
    free(big);
    put_text("side/f.gif", "x");
    put_text("side/.hidden.jpg", "x");
    put_text("side/notes.md", "ignored");
    put_text("side/deep/g.png", "x");
    put_text("side/deep/g.txt", "a man with a blue jacket");
    char dir[4096], link[4096];
    snprintf(dir, sizeof dir, "%s/side", g_root);
    snprintf(link, sizeof link, "%s/side/deep/loop", g_root);
    CHECK(symlink("..", link) == 0);
    snprintf(link, sizeof link, "%s/side/zdeep", g_root);
    CHECK(symlink("deep", link) == 0); /* a second way into deep/, not a loop */
    snprintf(link, sizeof link, "%s/side/dangling.jpg", g_root);
    CHECK(symlink("nowhere.jpg", link) == 0);
    k22_caption_set s;
    k22_caption_set_init(&s);
    k22_err err;
    CHECK(k22_captions_read_dir(dir, NULL, &s, &err) == K22_OK);
    CHECK_MSG(s.nrecs == 2, "records %zu, want 2", s.nrecs);
    CHECK_MSG(s.nrejects == 8, "rejects %zu, want 8", s.nrejects);
    CHECK(s.nrecs == 2 && !strcmp(s.recs[0].name, "a.jpg") && !strcmp(s.recs[0].captions[0], "a cartoon of a girl with pink hair"));
    CHECK(s.nrecs == 2 && !strcmp(s.recs[1].name, "deep/g.png") && !strcmp(s.recs[1].captions[0], "a man with a blue jacket"));
    expect_reject(&s, "side/b.png", "no caption file");
    expect_reject(&s, "side/c.txt", "not valid UTF-8");
    expect_reject(&s, "side/d.txt", "caption is empty"); /* .txt captions are trimmed first */
    expect_reject(&s, "side/e.txt", "51200 bytes, over the 16384-byte cap");
    expect_reject(&s, "side/f.gif", "not supported");
    expect_reject(&s, "side/deep/loop", "symlink loop back to folder '.'");
    expect_reject(&s, "side/zdeep", "same as the already read folder 'deep'");
    expect_reject(&s, "side/dangling.jpg", "cannot stat");
    for (size_t i = 0; i < s.nrejects; i++) fprintf(stderr, "  reject %s: %s\n", s.rejects[i].source, s.rejects[i].reason);
    k22_caption_set_free(&s);
}

/* ---- tar shards, written by hand (ustar) ---- */

typedef struct {
    uint8_t *b;
    size_t n, cap;
} tarbuf;

static void tar_add(tarbuf *t, const char *name, const void *data, size_t len)
{
    size_t need = t->n + 512 + (len + 511) / 512 * 512 + 1024;
    if (need > t->cap) {
        t->cap = need * 2;
        t->b = realloc(t->b, t->cap);
    }
    uint8_t *h = t->b + t->n;
    memset(h, 0, 512);
    snprintf((char *)h, 100, "%s", name);
    snprintf((char *)h + 100, 8, "%07o", 0644);
    snprintf((char *)h + 108, 8, "%07o", 0);
    snprintf((char *)h + 116, 8, "%07o", 0);
    snprintf((char *)h + 124, 12, "%011o", (unsigned)len);
    snprintf((char *)h + 136, 12, "%011o", 0);
    h[156] = '0';
    memcpy(h + 257, "ustar", 6);
    memcpy(h + 263, "00", 2);
    memset(h + 148, ' ', 8);
    unsigned sum = 0;
    for (int i = 0; i < 512; i++) sum += h[i];
    snprintf((char *)h + 148, 8, "%06o", sum);
    t->n += 512;
    memset(t->b + t->n, 0, (len + 511) / 512 * 512);
    if (len) memcpy(t->b + t->n, data, len);
    t->n += (len + 511) / 512 * 512;
}

static void tar_end(tarbuf *t)
{
    memset(t->b + t->n, 0, 1024);
    t->n += 1024;
}

static void test_webdataset(void)
{
    tarbuf t = {0};
    char *big = big_caption(50 * 1024);
    tar_add(&t, "000001.jpg", "JPEGBYTES", 9);
    tar_add(&t, "000001.txt", "a drawing of a man with red hair\n", 33);
    tar_add(&t, "000002.png", "PNG", 3); /* no caption */
    tar_add(&t, "000003.txt", "only a caption", 14); /* no image */
    tar_add(&t, "000004.webp", "WEBP", 4);
    tar_add(&t, "000004.txt", big, strlen(big));
    tar_add(&t, "000005.jpg", "J5", 2);
    tar_add(&t, "000005.json", "{}", 2);
    tar_add(&t, "000005.txt", "five", 4);
    tar_add(&t, "000001.txt", "again", 5); /* key seen before */
    tar_add(&t, "dir/000006.jpg", "J6", 2);
    tar_add(&t, "dir/000006.txt", "six", 3);
    tar_add(&t, "000007.jpg", "J7", 2);
    tar_add(&t, "000007.jpeg", "J7b", 3); /* two images in one sample */
    tar_add(&t, "000007.txt", "seven", 5);
    tar_add(&t, "000008.png", "0123456789abcdef0123", 20); /* over the member cap below */
    tar_add(&t, "000008.txt", "eight", 5);
    tar_add(&t, "000009.jpg", "J9", 2);
    tar_add(&t, "000009.txt", "bad \xc3 utf8", 10);
    tar_end(&t);
    free(big);
    k22_captions_opts o;
    k22_captions_opts_default(&o);
    o.max_member_bytes = 16;
    k22_caption_set s;
    k22_caption_set_init(&s);
    k22_err err;
    CHECK(k22_wds_read_buf(t.b, t.n, "shard-000.tar", &o, &s, &err) == K22_OK);
    CHECK_MSG(s.nrecs == 3, "records %zu, want 3", s.nrecs);
    CHECK_MSG(s.nrejects == 7, "rejects %zu, want 7", s.nrejects);
    const k22_caption_rec *r1 = find_rec(&s, "000001.jpg"), *r6 = find_rec(&s, "dir/000006.jpg");
    CHECK(r1 && r1->image_len == 9 && !memcmp(r1->image, "JPEGBYTES", 9) &&
          !strcmp(r1->captions[0], "a drawing of a man with red hair") && !strcmp(r1->source, "shard-000.tar:000001"));
    CHECK(find_rec(&s, "000005.jpg") && !strcmp(find_rec(&s, "000005.jpg")->captions[0], "five"));
    CHECK(r6 && !strcmp(r6->captions[0], "six") && r6->file == NULL);
    expect_reject(&s, "tar:000002", "no .txt caption");
    expect_reject(&s, "tar:000003", "no image member");
    expect_reject(&s, "tar:000004", "over the 16384-byte cap");
    expect_reject(&s, "tar:000007", "more than one image");
    expect_reject(&s, "tar:000008", "over the 16-byte cap");
    expect_reject(&s, "tar:000009", "not valid UTF-8");
    const k22_caption_reject *dup = NULL;
    for (size_t i = 0; i < s.nrejects; i++)
        if (strstr(s.rejects[i].reason, "appeared before")) dup = &s.rejects[i];
    CHECK(dup && !strcmp(dup->source, "shard-000.tar:000001") && strstr(dup->reason, "member 1"));
    k22_caption_set_free(&s);

    /* cut inside 000004.txt's data: the samples before are kept, the rest is one reject */
    size_t cut = 512 * 2 * 4 + 512 * 3 + 700;
    CHECK(k22_wds_read_buf(t.b, cut, "cut.tar", &o, &s, &err) == K22_OK);
    CHECK_MSG(s.nrecs == 1 && find_rec(&s, "000001.jpg"), "records after a cut: %zu", s.nrecs);
    int broken = 0;
    for (size_t i = 0; i < s.nrejects; i++) {
        fprintf(stderr, "  cut reject %s: %s\n", s.rejects[i].source, s.rejects[i].reason);
        if (strstr(s.rejects[i].source, "cut.tar:member")) broken++;
    }
    CHECK_MSG(broken == 1, "broken-shard rejects: %d", broken);
    k22_caption_set_free(&s);

    /* through a file, and garbage */
    put_file("shard.tar", t.b, t.n);
    char path[4096];
    snprintf(path, sizeof path, "%s/shard.tar", g_root);
    CHECK(k22_wds_read_file(path, &o, &s, &err) == K22_OK && s.nrecs == 3);
    k22_caption_set_free(&s);
    k22_status st = k22_wds_read_buf("not a tar file at all, just text", 32, "junk.tar", &o, &s, &err);
    CHECK(s.nrecs == 0 && (st != K22_OK || s.nrejects == 1));
    k22_caption_set_free(&s);
    CHECK(k22_wds_read_file("/nonexistent.tar", &o, &s, &err) == K22_ERR_IO && strstr(err.msg, "/nonexistent.tar"));
    k22_caption_set_free(&s);
    free(t.b);

    /* shards written by Python's tarfile (ustar, pax with long names, GNU), from the fuzz corpus */
    k22_captions_opts_default(&o);
    CHECK(k22_wds_read_file(K22_SOURCE_DIR "/tests/fuzz/corpus/webdataset/good.tar", &o, &s, &err) == K22_OK);
    CHECK_MSG(s.nrecs == 3 && s.nrejects == 0, "good.tar: %zu records, %zu rejects", s.nrecs, s.nrejects);
    CHECK(s.nrecs == 3 && !strcmp(s.recs[2].name, "000003.webp") && !strcmp(s.recs[2].captions[0], "three"));
    k22_caption_set_free(&s);
    CHECK(k22_wds_read_file(K22_SOURCE_DIR "/tests/fuzz/corpus/webdataset/pax.tar", &o, &s, &err) == K22_OK);
    CHECK(s.nrecs == 1 && strlen(s.recs[0].name) > 120 && !strcmp(s.recs[0].captions[0], "pax caption"));
    k22_caption_set_free(&s);
    CHECK(k22_wds_read_file(K22_SOURCE_DIR "/tests/fuzz/corpus/webdataset/gnu.tar", &o, &s, &err) == K22_OK);
    CHECK(s.nrecs == 1 && !strcmp(s.recs[0].captions[0], "gnu"));
    k22_caption_set_free(&s);
}

int main(void)
{
    if (!mkdtemp(g_root)) return 1;
    test_utf8();
    test_jsonl();
    test_csv();
    test_dir_metadata();
    test_dir_sidecar();
    test_webdataset();
    k22_fs_rm_rf(g_root, NULL);
    return k22_test_finish("test_captions");
}
