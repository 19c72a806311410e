/* captions.h: the captioned-image inputs `k22 pack` reads, as (image, captions) records plus a
 * list of rejected inputs {source, reason}. Three layouts:
 *  - an image folder with metadata.jsonl or metadata.csv (diffusers' imagefolder layout: the
 *    file_name column is required and relative to the folder; the caption column is "text"
 *    unless --caption_column says otherwise; a JSON list of strings keeps every entry, since the
 *    scripts take random.choice of a list in training);
 *  - a folder of images with sidecar captions (a.jpg + a.txt, walked recursively);
 *  - WebDataset tar shards (000001.jpg + 000001.txt; .png and .webp too), streamed with
 *    libarchive, image bytes handed out in memory.
 * Bad input is never fatal to the run: a record that cannot be used becomes a reject whose
 * source names the file and line (or tar member) and whose reason says what was wrong. Only a
 * layout that cannot be read at all (no such folder, a metadata file over its cap, a CSV header
 * without the required columns) is an error. `--strict` turns rejects into errors (the caller's
 * choice).
 *
 * Caption rules (all layouts): valid UTF-8 (no overlongs, surrogates or code points past
 * U+10FFFF), no NUL byte, at most max_caption_bytes bytes (default 16 KiB: CLIP reads 77 tokens,
 * so anything longer is a broken file, not a caption), and not empty or only whitespace.
 * Captions from metadata are kept byte for byte as the reference scripts see them; sidecar and
 * tar .txt captions lose surrounding whitespace (the trailing newline is a file artefact). */
#ifndef K22_CAPTIONS_H
#define K22_CAPTIONS_H

#include "k22/k22.h"

#include <stdint.h>

#define K22_CAPTION_MAX_BYTES_DEFAULT ((size_t)16 * 1024)
#define K22_CAPTION_MAX_LIST 64                          /* entries of one caption list */
#define K22_METADATA_MAX_BYTES ((size_t)256 << 20)       /* metadata.jsonl / .csv files */
#define K22_METADATA_MAX_LINE ((size_t)1 << 20)          /* one JSON line */
#define K22_WDS_MAX_MEMBER_BYTES_DEFAULT ((size_t)64 << 20) /* one tar member */
#define K22_CAPTIONS_MAX_DEPTH 64                        /* folder walk depth */

typedef struct {
    const char *caption_column; /* metadata column holding the caption ("text") */
    const char *image_column;   /* metadata column holding the file name ("file_name") */
    size_t max_caption_bytes;   /* K22_CAPTION_MAX_BYTES_DEFAULT */
    size_t max_member_bytes;    /* cap on one tar member (K22_WDS_MAX_MEMBER_BYTES_DEFAULT) */
} k22_captions_opts;

/* One usable input. Every string is owned by the record. */
typedef struct {
    char *name;      /* file_name as given (metadata), the path relative to the folder (sidecar),
                        or the tar member name of the image (WebDataset) */
    char *file;      /* the image's path on disk; NULL for tar members */
    char *source;    /* where it came from: "d/metadata.jsonl:12", "d/a.txt", "s.tar:000012" */
    char **captions; /* ncaptions >= 1 checked captions (NUL-terminated) */
    int ncaptions;
    uint8_t *image;  /* tar members: the image bytes (image_len); NULL otherwise */
    size_t image_len;
} k22_caption_rec;

typedef struct {
    char *source; /* file and line, or shard and member */
    char *reason;
} k22_caption_reject;

typedef struct {
    k22_caption_rec *recs;
    size_t nrecs, cap_recs;
    k22_caption_reject *rejects;
    size_t nrejects, cap_rejects;
} k22_caption_set;

void k22_captions_opts_default(k22_captions_opts *o);
void k22_caption_set_init(k22_caption_set *s);
/* Frees every record and reject; the set is empty (and reusable) afterwards. */
void k22_caption_set_free(k22_caption_set *s);
void k22_caption_rec_free(k22_caption_rec *r);
void k22_caption_reject_free(k22_caption_reject *r);
/* Appends a reject with a printf-formatted reason. */
void k22_caption_set_reject(k22_caption_set *s, const char *source, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* 1 when buf[0..len) is valid UTF-8; else 0 and *bad (may be NULL) is the first bad offset. */
int k22_utf8_valid(const uint8_t *buf, size_t len, size_t *bad);
/* Checks one caption against the rules above. Returns 1 when fine; else 0 with why filled. */
int k22_caption_check(const char *s, size_t len, size_t max_bytes, char *why, size_t n);

/* Parsers over metadata bytes (no file system): each row becomes a record with name set and
 * file NULL; bad rows become rejects. name is the file name used in sources ("d/metadata.jsonl").
 * A UTF-8 BOM and CRLF line ends are accepted. CSV follows RFC 4180 (quoted fields may hold
 * commas, doubled quotes and line breaks). Errors: K22_ERR_NOMEM over K22_METADATA_MAX_BYTES;
 * CSV: K22_ERR_KEY when the header lacks the image or caption column. */
k22_status k22_captions_parse_jsonl(const char *buf, size_t len, const char *name,
                                    const k22_captions_opts *o, k22_caption_set *s, k22_err *err);
k22_status k22_captions_parse_csv(const char *buf, size_t len, const char *name,
                                  const k22_captions_opts *o, k22_caption_set *s, k22_err *err);

/* Reads an image folder: dir/metadata.jsonl if present, else dir/metadata.csv, else sidecar
 * .txt captions. Metadata rows are then checked against the folder: a file_name that is
 * absolute or has a ".." part, names no regular file, or repeats an earlier one is rejected.
 * The sidecar walk is sorted (so the order does not depend on the file system), skips hidden
 * entries, rejects an image without its .txt and a folder that loops back (symlink loop). */
k22_status k22_captions_read_dir(const char *dir, const k22_captions_opts *o, k22_caption_set *s,
                                 k22_err *err);

/* ---- WebDataset shards ----
 * Members are grouped into samples by key (the member path up to the first '.' of its base
 * name), consecutive members sharing a key forming one sample, as WebDataset does. A sample
 * needs one image (.jpg/.jpeg/.png/.webp) and one .txt caption; other members (.json, .cls)
 * are ignored. Rejected: a sample without image or caption, a member over max_member_bytes, a
 * key seen earlier in the shard, a member twice in one sample, a bad caption, and the rest of a
 * truncated or corrupt shard (the samples before it are kept). */
typedef struct k22_wds k22_wds;

k22_status k22_wds_open_file(const char *path, const k22_captions_opts *o, k22_wds **out,
                             k22_err *err);
/* buf must stay valid until k22_wds_close; name is used in sources. */
k22_status k22_wds_open_buf(const void *buf, size_t len, const char *name,
                            const k22_captions_opts *o, k22_wds **out, k22_err *err);
/* Next sample: *got = 1 and *rec filled (the caller frees it), 2 and *rej filled (the caller
 * frees it), or 0 at the end of the shard. */
k22_status k22_wds_next(k22_wds *w, k22_caption_rec *rec, k22_caption_reject *rej, int *got,
                        k22_err *err);
void k22_wds_close(k22_wds *w);
/* Reads a whole shard into s (records with their image bytes). */
k22_status k22_wds_read_file(const char *path, const k22_captions_opts *o, k22_caption_set *s,
                             k22_err *err);
k22_status k22_wds_read_buf(const void *buf, size_t len, const char *name,
                            const k22_captions_opts *o, k22_caption_set *s, k22_err *err);

#endif
