/* captions_csv.c: metadata.csv as RFC 4180 describes it (comma separated, optional double
 * quotes, "" for a quote inside quotes, line breaks allowed inside quotes, CRLF or LF records),
 * a header row naming the columns, and a UTF-8 BOM allowed in front. */
#include "captions_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define K22_CSV_MAX_FIELDS 4096

typedef struct {
    char **f;
    size_t *len;
    size_t n, cap;
} csv_row;

typedef struct {
    const char *buf;
    size_t len, pos;
    size_t line; /* line of buf[pos], 1-based */
} csv_in;

static void row_clear(csv_row *r)
{
    for (size_t i = 0; i < r->n; i++) free(r->f[i]);
    r->n = 0;
}

static void row_free(csv_row *r)
{
    row_clear(r);
    free(r->f);
    free(r->len);
}

static void row_add(csv_row *r, char *s, size_t len)
{
    if (r->n == r->cap) {
        r->cap = r->cap ? 2 * r->cap : 8;
        r->f = realloc(r->f, r->cap * sizeof *r->f);
        r->len = realloc(r->len, r->cap * sizeof *r->len);
        if (!r->f || !r->len) K22_FATAL("out of memory for a CSV row of %zu fields", r->cap);
    }
    r->f[r->n] = s;
    r->len[r->n++] = len;
}

/* 1 when the input is at a record end (LF, CRLF or the end of the buffer); consumes it. */
static int at_eol(csv_in *in)
{
    if (in->pos >= in->len) return 1;
    if (in->buf[in->pos] == '\n') return in->pos++, in->line++, 1;
    if (in->buf[in->pos] == '\r' && in->pos + 1 < in->len && in->buf[in->pos + 1] == '\n')
        return in->pos += 2, in->line++, 1;
    return 0;
}

/* Skips to the next record after a malformed one. */
static void skip_line(csv_in *in)
{
    while (in->pos < in->len && in->buf[in->pos] != '\n') in->pos++;
    if (in->pos < in->len) in->pos++, in->line++;
}

/* A quoted field starting after its opening quote. Returns 0, or 1 with why set. */
static int quoted_field(csv_in *in, csv_row *r, char *why, size_t n)
{
    size_t open_line = in->line, cap = 64, len = 0;
    char *out = k22_xmalloc(cap);
    for (;;) {
        if (in->pos >= in->len) {
            free(out);
            snprintf(why, n, "quoted field opened on line %zu is not closed", open_line);
            return 1;
        }
        char c = in->buf[in->pos++];
        if (c == '"') {
            if (in->pos < in->len && in->buf[in->pos] == '"') in->pos++; /* "" is one quote */
            else break;
        }
        if (c == '\n') in->line++;
        if (len + 1 >= cap) out = realloc(out, cap *= 2);
        if (!out) K22_FATAL("out of memory for a CSV field");
        out[len++] = c;
    }
    out[len] = '\0';
    row_add(r, out, len);
    if (in->pos < in->len && in->buf[in->pos] != ',' && in->buf[in->pos] != '\n' &&
        !(in->buf[in->pos] == '\r' && in->pos + 1 < in->len && in->buf[in->pos + 1] == '\n')) {
        snprintf(why, n, "text after a closing quote (byte 0x%02x)", (uint8_t)in->buf[in->pos]);
        return 1;
    }
    return 0;
}

/* Reads one record into r. Returns 0 when read, 1 malformed (why set, rest of line skipped). */
static int csv_record(csv_in *in, csv_row *r, char *why, size_t n)
{
    row_clear(r);
    for (;;) {
        if (r->n >= K22_CSV_MAX_FIELDS) {
            snprintf(why, n, "more than %d fields", K22_CSV_MAX_FIELDS);
            skip_line(in);
            return 1;
        }
        if (in->pos < in->len && in->buf[in->pos] == '"') {
            in->pos++;
            if (quoted_field(in, r, why, n)) {
                skip_line(in);
                return 1;
            }
        } else {
            size_t start = in->pos;
            while (in->pos < in->len && in->buf[in->pos] != ',' && in->buf[in->pos] != '\n' &&
                   !(in->buf[in->pos] == '\r' && in->pos + 1 < in->len && in->buf[in->pos + 1] == '\n'))
                in->pos++;
            row_add(r, k22_strndup0(in->buf + start, in->pos - start), in->pos - start);
        }
        if (at_eol(in)) return 0;
        in->pos++; /* the comma */
    }
}

static int find_col(const csv_row *h, const char *name)
{
    for (size_t i = 0; i < h->n; i++)
        if (h->len[i] == strlen(name) && !memcmp(h->f[i], name, h->len[i])) return (int)i;
    return -1;
}

static k22_status missing_col(const char *name, const csv_row *h, const char *col, k22_err *err)
{
    char cols[512] = "";
    size_t o = 0;
    for (size_t i = 0; i < h->n && o < sizeof cols; i++)
        o += (size_t)snprintf(cols + o, sizeof cols - o, "%s'%.40s'", i ? ", " : "", h->f[i]);
    return k22_err_set(err, K22_ERR_KEY, "%s: line 1: the header has no '%s' column (found %s)",
                       name, col, cols);
}

/* One data row into a record or a reject. */
static void csv_row_record(const csv_row *row, const csv_row *hdr, int fcol, int ccol,
                           const char *src, const k22_captions_opts *o, k22_caption_set *s)
{
    char why[512];
    if (row->n != hdr->n) {
        k22_caption_set_reject(s, src, "row has %zu fields, the header %zu", row->n, hdr->n);
        return;
    }
    const char *fn = row->f[fcol];
    size_t fl = row->len[fcol];
    if (fl == 0 || strlen(fn) != fl || !k22_utf8_valid((const uint8_t *)fn, fl, NULL)) {
        k22_caption_set_reject(s, src, "'%s' is empty or not UTF-8 text", o->image_column);
        return;
    }
    if (!k22_caption_check(row->f[ccol], row->len[ccol], o->max_caption_bytes, why, sizeof why)) {
        k22_caption_set_reject(s, src, "%s", why);
        return;
    }
    k22_caption_rec r = {0};
    r.name = k22_strndup0(fn, fl);
    r.source = k22_xstrdup(src);
    r.captions = k22_xmalloc(sizeof(char *));
    r.captions[0] = k22_strndup0(row->f[ccol], row->len[ccol]);
    r.ncaptions = 1;
    k22_caption_set_push(s, &r);
}

static int blank_row(const csv_row *r) { return r->n == 1 && r->len[0] == 0; }

k22_status k22_captions_parse_csv(const char *buf, size_t len, const char *name,
                                  const k22_captions_opts *o, k22_caption_set *s, k22_err *err)
{
    k22_captions_opts def;
    if (!o) k22_captions_opts_default(&def), o = &def;
    if (len > K22_METADATA_MAX_BYTES)
        return k22_err_set(err, K22_ERR_NOMEM, "%s: %zu bytes, over the %zu-byte cap", name, len,
                           K22_METADATA_MAX_BYTES);
    csv_in in = {buf, len, 0, 1};
    if (len >= 3 && !memcmp(buf, "\xef\xbb\xbf", 3)) in.pos = 3;
    csv_row hdr = {0}, row = {0};
    char why[512], src[4096 + 32];
    k22_status st = K22_OK;
    if (csv_record(&in, &hdr, why, sizeof why)) {
        st = k22_err_set(err, K22_ERR_FORMAT, "%s: line 1: bad header: %s", name, why);
        goto out;
    }
    int fcol = find_col(&hdr, o->image_column), ccol = find_col(&hdr, o->caption_column);
    if (fcol < 0 || ccol < 0) {
        st = missing_col(name, &hdr, fcol < 0 ? o->image_column : o->caption_column, err);
        goto out;
    }
    while (in.pos < in.len) {
        size_t line = in.line;
        snprintf(src, sizeof src, "%s:%zu", name, line);
        if (csv_record(&in, &row, why, sizeof why)) {
            k22_caption_set_reject(s, src, "%s", why);
            continue;
        }
        if (!blank_row(&row)) csv_row_record(&row, &hdr, fcol, ccol, src, o, s);
    }
out:
    row_free(&hdr);
    row_free(&row);
    return st;
}
