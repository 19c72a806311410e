/* webdataset.c: WebDataset tar shards, streamed with libarchive. Consecutive members sharing a
 * key (the path up to the first '.' of the base name) form one sample; a sample becomes a
 * record (image bytes in memory, the .txt caption) or a reject naming the shard and key. */
#include "captions_internal.h"

#include <archive.h>
#include <archive_entry.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The sample being gathered. */
typedef struct {
    char *key;
    size_t first_member; /* member number (1-based) of its first member */
    char *image_name;
    uint8_t *image;
    size_t image_len;
    char *caption; /* raw .txt bytes */
    size_t caption_len;
    char *bad; /* first reason the sample cannot be used */
} wds_sample;

struct k22_wds {
    struct archive *a;
    char *name;
    k22_captions_opts o;
    size_t member;   /* members read so far */
    wds_sample cur;  /* gathering */
    wds_sample done; /* complete, waiting to be handed out */
    int have_done, eof;
    char *broken;     /* why the shard broke, until reported */
    size_t broken_at; /* member number where it broke */
    k22_strset keys;
};

static void sample_free(wds_sample *s)
{
    free(s->key);
    free(s->image_name);
    free(s->image);
    free(s->caption);
    free(s->bad);
    memset(s, 0, sizeof *s);
}

static void sample_bad(wds_sample *s, char *why)
{
    if (s->bad) free(why);
    else s->bad = why;
}

static k22_status wds_open(k22_wds *w, const char *name, const k22_captions_opts *o, k22_wds **out)
{
    w->name = k22_xstrdup(name);
    if (o) w->o = *o;
    else k22_captions_opts_default(&w->o);
    k22_strset_init(&w->keys);
    *out = w;
    return K22_OK;
}

static struct archive *wds_new_archive(void)
{
    struct archive *a = archive_read_new();
    if (!a) K22_FATAL("libarchive: cannot create a reader");
    archive_read_support_format_tar(a);
    archive_read_support_filter_none(a);
    return a;
}

k22_status k22_wds_open_file(const char *path, const k22_captions_opts *o, k22_wds **out,
                             k22_err *err)
{
    *out = NULL;
    k22_wds *w = k22_xcalloc(1, sizeof *w);
    w->a = wds_new_archive();
    if (archive_read_open_filename(w->a, path, 1 << 16) != ARCHIVE_OK) {
        k22_status st = k22_err_set(err, K22_ERR_IO, "%s: cannot open as a tar shard: %s", path,
                                    archive_error_string(w->a));
        archive_read_free(w->a);
        free(w);
        return st;
    }
    return wds_open(w, path, o, out);
}

k22_status k22_wds_open_buf(const void *buf, size_t len, const char *name,
                            const k22_captions_opts *o, k22_wds **out, k22_err *err)
{
    *out = NULL;
    k22_wds *w = k22_xcalloc(1, sizeof *w);
    w->a = wds_new_archive();
    if (archive_read_open_memory(w->a, buf, len) != ARCHIVE_OK) {
        k22_status st = k22_err_set(err, K22_ERR_FORMAT, "%s: not a tar shard: %s", name,
                                    archive_error_string(w->a));
        archive_read_free(w->a);
        free(w);
        return st;
    }
    return wds_open(w, name, o, out);
}

void k22_wds_close(k22_wds *w)
{
    if (!w) return;
    archive_read_free(w->a);
    sample_free(&w->cur);
    sample_free(&w->done);
    k22_strset_free(&w->keys);
    free(w->broken);
    free(w->name);
    free(w);
}

/* Splits a member path into key and extension (after the first '.' of the base name). */
static void split_key(const char *path, char **key, const char **ext)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    const char *dot = strchr(base, '.');
    *key = k22_strndup0(path, dot ? (size_t)(dot - path) : strlen(path));
    *ext = dot ? dot + 1 : "";
}

static int ext_is_image(const char *ext)
{
    return !strcasecmp(ext, "jpg") || !strcasecmp(ext, "jpeg") || !strcasecmp(ext, "png") ||
           !strcasecmp(ext, "webp");
}

/* Reads the current member's data (at most cap bytes). Returns 0 and the bytes, 1 when over
 * the cap (*why set), -1 when the archive broke (*why set). */
static int read_member(k22_wds *w, struct archive_entry *e, size_t cap, uint8_t **out,
                       size_t *len, char **why)
{
    *out = NULL;
    *len = 0;
    if (archive_entry_size_is_set(e) && archive_entry_size(e) > (la_int64_t)cap) {
        *why = k22_strfmt("member '%s' is %lld bytes, over the %zu-byte cap",
                          archive_entry_pathname(e), (long long)archive_entry_size(e), cap);
        return 1;
    }
    size_t bufcap = 4096, n = 0;
    uint8_t *buf = k22_xmalloc(bufcap);
    for (;;) {
        if (n == bufcap) {
            if (bufcap > cap) {
                free(buf);
                *why = k22_strfmt("member '%s' is over the %zu-byte cap", archive_entry_pathname(e), cap);
                return 1;
            }
            bufcap *= 2;
            buf = realloc(buf, bufcap);
            if (!buf) K22_FATAL("out of memory reading a tar member");
        }
        la_ssize_t r = archive_read_data(w->a, buf + n, bufcap - n);
        if (r == 0) break;
        if (r < 0) {
            free(buf);
            *why = k22_strfmt("member '%s': %s", archive_entry_pathname(e), archive_error_string(w->a));
            return -1;
        }
        n += (size_t)r;
    }
    if (n > cap) {
        free(buf);
        *why = k22_strfmt("member '%s' is %zu bytes, over the %zu-byte cap", archive_entry_pathname(e), n, cap);
        return 1;
    }
    *out = buf;
    *len = n;
    return 0;
}

/* Adds member e (extension ext) to the current sample. Returns -1 when the archive broke. */
static int add_member(k22_wds *w, struct archive_entry *e, const char *ext, char **broke)
{
    wds_sample *s = &w->cur;
    int img = ext_is_image(ext), txt = !strcasecmp(ext, "txt");
    if (!img && !txt) return 0; /* .json, .cls, ...: not needed */
    if ((img && s->image_name) || (txt && s->caption)) {
        sample_bad(s, k22_strfmt("more than one %s member ('%s')", img ? "image" : "caption",
                                 archive_entry_pathname(e)));
        return 0;
    }
    uint8_t *buf;
    size_t len;
    char *why = NULL;
    size_t cap = img ? w->o.max_member_bytes : w->o.max_caption_bytes;
    int r = read_member(w, e, cap, &buf, &len, &why);
    if (r < 0) {
        *broke = why;
        return -1;
    }
    if (r > 0) {
        sample_bad(s, why);
        return 0;
    }
    if (img) {
        s->image = buf, s->image_len = len;
        s->image_name = k22_xstrdup(archive_entry_pathname(e));
    } else {
        s->caption = (char *)buf, s->caption_len = len;
    }
    return 0;
}

/* Moves the gathered sample to done (when there is one). */
static void finish_sample(k22_wds *w)
{
    if (!w->cur.key) return;
    w->done = w->cur;
    memset(&w->cur, 0, sizeof w->cur);
    w->have_done = 1;
}

/* Starts a sample for key at the current member, checking the key is new to the shard. */
static void start_sample(k22_wds *w, char *key)
{
    size_t first;
    w->cur.key = key;
    w->cur.first_member = w->member;
    if (!k22_strset_add(&w->keys, key, w->member, &first))
        w->cur.bad = k22_strfmt("key '%s' appeared before (member %zu); samples must be "
                                "contiguous", key, first);
}

/* Reads members until a sample is complete or the shard ends. Returns -1 on a broken shard
 * (*broke set), else 0. */
static int gather(k22_wds *w, char **broke)
{
    while (!w->have_done && !w->eof) {
        struct archive_entry *e;
        int r = archive_read_next_header(w->a, &e);
        if (r == ARCHIVE_EOF) {
            w->eof = 1;
            finish_sample(w);
            break;
        }
        if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
            *broke = k22_strfmt("tar data broken after member %zu: %s", w->member,
                                archive_error_string(w->a));
            return -1;
        }
        w->member++;
        if (archive_entry_filetype(e) != AE_IFREG || !archive_entry_pathname(e)) continue;
        char *key;
        const char *ext;
        split_key(archive_entry_pathname(e), &key, &ext);
        if (!w->cur.key || strcmp(w->cur.key, key) != 0) {
            finish_sample(w);
            start_sample(w, key);
        } else {
            free(key);
        }
        if (add_member(w, e, ext, broke) < 0) return -1;
    }
    return 0;
}

/* Turns the done sample into a record or a reject. */
static int emit(k22_wds *w, k22_caption_rec *rec, k22_caption_reject *rej)
{
    wds_sample *s = &w->done;
    char why[512];
    const char *t = s->caption;
    size_t tl = s->caption_len;
    char *source = k22_strfmt("%s:%s", w->name, s->key);
    char *bad = s->bad;
    s->bad = NULL;
    if (!bad && !s->image_name) bad = k22_strfmt("no image member (.jpg, .jpeg, .png, .webp)");
    if (!bad && !s->caption) bad = k22_strfmt("no .txt caption member");
    if (!bad) k22_trim(&t, &tl);
    if (!bad && !k22_caption_check(t, tl, w->o.max_caption_bytes, why, sizeof why))
        bad = k22_strfmt("%s", why);
    w->have_done = 0;
    if (bad) {
        rej->source = source;
        rej->reason = bad;
        sample_free(s);
        return 2;
    }
    rec->name = s->image_name;
    rec->source = source;
    rec->captions = k22_xmalloc(sizeof(char *));
    rec->captions[0] = k22_strndup0(t, tl);
    rec->ncaptions = 1;
    rec->image = s->image;
    rec->image_len = s->image_len;
    s->image_name = NULL;
    s->image = NULL;
    sample_free(s);
    return 1;
}

k22_status k22_wds_next(k22_wds *w, k22_caption_rec *rec, k22_caption_reject *rej, int *got,
                        k22_err *err)
{
    (void)err; /* a broken shard is a reject, not an error: the samples before it count */
    memset(rec, 0, sizeof *rec);
    memset(rej, 0, sizeof *rej);
    *got = 0;
    char *broke = NULL;
    if (!w->eof && gather(w, &broke) < 0) {
        /* nothing after the break can be trusted: the partial sample goes with it */
        w->eof = 1;
        if (w->cur.key) {
            char *b = k22_strfmt("%s (sample '%s' dropped with it)", broke, w->cur.key);
            free(broke);
            broke = b;
        }
        sample_free(&w->cur);
        w->broken = broke;
        w->broken_at = w->member + 1;
    }
    if (w->have_done) {
        *got = emit(w, rec, rej);
    } else if (w->broken) {
        rej->source = k22_strfmt("%s:member %zu", w->name, w->broken_at);
        rej->reason = w->broken;
        w->broken = NULL;
        *got = 2;
    }
    return K22_OK;
}

static k22_status wds_collect(k22_wds *w, k22_caption_set *s, k22_err *err)
{
    k22_status st = K22_OK;
    for (;;) {
        k22_caption_rec rec;
        k22_caption_reject rej;
        int got;
        st = k22_wds_next(w, &rec, &rej, &got, err);
        if (st || got == 0) break;
        if (got == 1) k22_caption_set_push(s, &rec);
        else k22_caption_set_push_reject(s, &rej);
    }
    k22_wds_close(w);
    return st;
}

k22_status k22_wds_read_file(const char *path, const k22_captions_opts *o, k22_caption_set *s,
                             k22_err *err)
{
    k22_wds *w;
    k22_status st = k22_wds_open_file(path, o, &w, err);
    return st ? st : wds_collect(w, s, err);
}

k22_status k22_wds_read_buf(const void *buf, size_t len, const char *name,
                            const k22_captions_opts *o, k22_caption_set *s, k22_err *err)
{
    k22_wds *w;
    k22_status st = k22_wds_open_buf(buf, len, name, o, &w, err);
    return st ? st : wds_collect(w, s, err);
}
