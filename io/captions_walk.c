/* captions_walk.c: a folder of images with sidecar captions (a.jpg + a.txt), walked
 * recursively in sorted order. Folders are identified by (device, inode), so a symlink that
 * loops back, or a second link to a folder already read, is reported instead of followed. */
#include "captions_internal.h"

#include "k22/fsutil.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

typedef struct {
    dev_t dev;
    ino_t ino;
    char *rel; /* the folder's path relative to the root ("." for the root) */
} walk_dir;

typedef struct {
    const k22_captions_opts *o;
    k22_caption_set *s;
    walk_dir *seen;
    size_t nseen, cap;
} walk_ctx;

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* 1 supported image, 2 an image type k22 does not decode, 0 anything else. */
static int image_kind(const char *name)
{
    const char *dot = strrchr(name, '.');
    if (!dot) return 0;
    static const char *const ok[] = {".jpg", ".jpeg", ".png", ".webp"};
    static const char *const no[] = {".gif", ".bmp", ".tif", ".tiff"};
    for (size_t i = 0; i < 4; i++)
        if (!strcasecmp(dot, ok[i])) return 1;
    for (size_t i = 0; i < 4; i++)
        if (!strcasecmp(dot, no[i])) return 2;
    return 0;
}

/* Sorted names of dir's entries, hidden ones left out. */
static k22_status list_dir(const char *dir, char ***names, size_t *n, k22_err *err)
{
    DIR *d = opendir(dir);
    *names = NULL;
    *n = 0;
    if (!d) return k22_err_set(err, K22_ERR_IO, "%s: cannot open folder: %s", dir, strerror(errno));
    size_t cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        if (*n == cap) {
            cap = cap ? 2 * cap : 64;
            *names = realloc(*names, cap * sizeof **names);
            if (!*names) K22_FATAL("out of memory listing %s", dir);
        }
        (*names)[(*n)++] = k22_xstrdup(e->d_name);
    }
    closedir(d);
    if (*n) qsort(*names, *n, sizeof **names, cmp_str);
    return K22_OK;
}

static void image_record(walk_ctx *c, const char *path, const char *rel)
{
    char txt[4096], why[512];
    const char *dot = strrchr(path, '.');
    snprintf(txt, sizeof txt, "%.*s.txt", (int)(dot - path), path);
    int64_t size = k22_fs_size(txt);
    if (size < 0) {
        k22_caption_set_reject(c->s, path, "no caption file %s", txt);
        return;
    }
    if ((uint64_t)size > c->o->max_caption_bytes) {
        k22_caption_set_reject(c->s, txt, "caption is %lld bytes, over the %zu-byte cap",
                               (long long)size, c->o->max_caption_bytes);
        return;
    }
    char *buf = NULL;
    size_t len = 0;
    k22_err e;
    if (k22_fs_read_all(txt, c->o->max_caption_bytes, &buf, &len, &e)) {
        k22_caption_set_reject(c->s, txt, "%s", e.msg);
        return;
    }
    const char *t = buf;
    size_t tl = len;
    k22_trim(&t, &tl);
    if (!k22_caption_check(t, tl, c->o->max_caption_bytes, why, sizeof why)) {
        k22_caption_set_reject(c->s, txt, "%s", why);
    } else {
        k22_caption_rec r = {0};
        r.name = k22_xstrdup(rel);
        r.file = k22_xstrdup(path);
        r.source = k22_xstrdup(txt);
        r.captions = k22_xmalloc(sizeof(char *));
        r.captions[0] = k22_strndup0(t, tl);
        r.ncaptions = 1;
        k22_caption_set_push(c->s, &r);
    }
    free(buf);
}

static k22_status walk(walk_ctx *c, const char *dir, const char *rel, int depth, k22_err *err);

static k22_status walk_entry(walk_ctx *c, const char *dir, const char *rel, const char *name,
                             int depth, k22_err *err)
{
    char path[4096], sub[4096];
    if (snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path ||
        snprintf(sub, sizeof sub, "%s%s%s", rel, *rel ? "/" : "", name) >= (int)sizeof sub) {
        k22_caption_set_reject(c->s, dir, "entry '%.100s': path too long", name);
        return K22_OK;
    }
    struct stat sb;
    if (stat(path, &sb) != 0) {
        k22_caption_set_reject(c->s, path, "cannot stat: %s", strerror(errno));
        return K22_OK;
    }
    if (S_ISDIR(sb.st_mode)) return walk(c, path, sub, depth + 1, err);
    if (!S_ISREG(sb.st_mode)) return K22_OK;
    int kind = image_kind(name);
    if (kind == 2) k22_caption_set_reject(c->s, path, "image type not supported (JPEG, PNG, WebP)");
    if (kind == 1) image_record(c, path, sub);
    return K22_OK;
}

/* Walks dir unless it was seen before (a loop when it is one of the folders being walked). */
static k22_status walk(walk_ctx *c, const char *dir, const char *rel, int depth, k22_err *err)
{
    struct stat sb;
    if (stat(dir, &sb) != 0)
        return k22_err_set(err, K22_ERR_IO, "%s: cannot stat: %s", dir, strerror(errno));
    for (size_t i = 0; i < c->nseen; i++) {
        if (c->seen[i].dev != sb.st_dev || c->seen[i].ino != sb.st_ino) continue;
        size_t l = strlen(c->seen[i].rel);
        int loop = !strcmp(c->seen[i].rel, ".") ||
                   (!strncmp(rel, c->seen[i].rel, l) && rel[l] == '/');
        k22_caption_set_reject(c->s, dir, "%s folder '%s'", loop ? "symlink loop back to" : "same as the already read",
                               c->seen[i].rel);
        return K22_OK;
    }
    if (depth > K22_CAPTIONS_MAX_DEPTH) {
        k22_caption_set_reject(c->s, dir, "more than %d folders deep", K22_CAPTIONS_MAX_DEPTH);
        return K22_OK;
    }
    if (c->nseen == c->cap) {
        c->cap = c->cap ? 2 * c->cap : 16;
        c->seen = realloc(c->seen, c->cap * sizeof *c->seen);
        if (!c->seen) K22_FATAL("out of memory walking %s", dir);
    }
    c->seen[c->nseen++] = (walk_dir){sb.st_dev, sb.st_ino, k22_xstrdup(*rel ? rel : ".")};
    char **names;
    size_t n;
    k22_status st = list_dir(dir, &names, &n, err);
    if (st) {
        if (depth == 0) return st;
        k22_caption_set_reject(c->s, dir, "%s", err->msg);
        return K22_OK;
    }
    for (size_t i = 0; i < n && !st; i++) st = walk_entry(c, dir, rel, names[i], depth, err);
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    return st;
}

k22_status k22_captions_read_sidecar(const char *dir, const k22_captions_opts *o,
                                     k22_caption_set *s, k22_err *err)
{
    walk_ctx c = {o, s, NULL, 0, 0};
    k22_err local;
    k22_status st = walk(&c, dir, "", 0, err ? err : &local);
    for (size_t i = 0; i < c.nseen; i++) free(c.seen[i].rel);
    free(c.seen);
    return st;
}
