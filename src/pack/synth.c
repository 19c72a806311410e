/* synth.c: draws the `k22 synth` figures and writes the image folder. Every random choice of
 * item i is a Philox draw of (seed, stream K22_SYNTH_STREAM + i), so items can be made in any
 * order, on any number of threads, and come out the same. */
#include "k22/synth.h"

#include "k22/fsutil.h"
#include "k22/image_out.h"
#include "k22/rng.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define K22_SYNTH_STREAM 0x73796e7400000000ull /* "synt" in the high word */
#define K22_SYNTH_JPEG_QUALITY 92
#define K22_SYNTH_PNG_LEVEL 1 /* fast; noisy pixels barely compress at higher levels anyway */

typedef struct {
    const char *name;
    uint8_t rgb[3];
} synth_color;

static const synth_color k22_synth_palette[] = {
    {"red", {205, 40, 40}},    {"pink", {240, 130, 185}}, {"blue", {40, 80, 205}},
    {"black", {25, 25, 30}},   {"yellow", {240, 205, 50}}, {"white", {245, 245, 245}},
    {"brown", {120, 72, 36}},  {"green", {45, 150, 60}},  {"orange", {245, 135, 25}},
    {"purple", {130, 55, 175}}, {"grey", {128, 128, 128}},
};
#define K22_SYNTH_NCOLORS ((int)(sizeof k22_synth_palette / sizeof k22_synth_palette[0]))

static const char *const k22_synth_subjects[] = {"man", "woman", "boy", "girl"};
static const char *const k22_synth_bg_phrase[] = {
    "on a white background", "in front of a blue sky", "standing in a green field",
    "on a dark background", "in front of a sunset"};

int k22_synth_ncolors(void) { return K22_SYNTH_NCOLORS; }
const char *k22_synth_color_name(int i) { return k22_synth_palette[i].name; }
void k22_synth_color_rgb(int i, uint8_t rgb[3]) { memcpy(rgb, k22_synth_palette[i].rgb, 3); }
const char *k22_synth_subject_name(int i) { return k22_synth_subjects[i]; }

static uint32_t synth_u32(uint64_t seed, int64_t index, uint64_t i)
{
    return k22_rng_u32(seed, K22_SYNTH_STREAM + (uint64_t)index, i);
}

/* Uniform integer in [lo, hi] from draw i (the modulo bias is irrelevant here). */
static int synth_range(uint64_t seed, int64_t index, uint64_t i, int lo, int hi)
{
    return lo + (int)(synth_u32(seed, index, i) % (uint32_t)(hi - lo + 1));
}

/* BLIP-style captions; each names the subject and the hair colour, some the jacket colour and
 * the background. */
static void synth_caption(k22_synth_item *it)
{
    const char *s = k22_synth_subjects[it->subject];
    const char *h = k22_synth_palette[it->hair_color].name;
    const char *j = k22_synth_palette[it->jacket_color].name;
    const char *b = k22_synth_bg_phrase[it->background];
    char *c = it->caption;
    size_t n = sizeof it->caption;
    switch (it->template_id) {
    case 0: snprintf(c, n, "a drawing of a %s with %s hair and a %s jacket", s, h, j); break;
    case 1: snprintf(c, n, "a cartoon of a %s with %s hair", s, h); break;
    case 2: snprintf(c, n, "a %s with %s hair and a %s jacket %s", s, h, j, b); break;
    case 3: snprintf(c, n, "an anime %s with %s hair %s", s, h, b); break;
    default: snprintf(c, n, "a cartoon character with %s hair wearing a %s jacket", h, j); break;
    }
}

void k22_synth_describe(uint64_t seed, int64_t index, int min_size, int max_size,
                        k22_synth_item *it)
{
    memset(it, 0, sizeof *it);
    it->width = synth_range(seed, index, 0, min_size, max_size);
    it->height = synth_range(seed, index, 1, min_size, max_size);
    it->format = synth_u32(seed, index, 2) % 10 < 3 ? K22_SYNTH_PNG : K22_SYNTH_JPEG;
    it->subject = synth_range(seed, index, 3, 0, 3);
    it->hair_color = synth_range(seed, index, 4, 0, K22_SYNTH_NCOLORS - 1);
    /* The jacket takes one of the other colours so the two never blur together. */
    int j = synth_range(seed, index, 5, 0, K22_SYNTH_NCOLORS - 2);
    it->jacket_color = j >= it->hair_color ? j + 1 : j;
    it->background = synth_range(seed, index, 6, 0, 4);
    it->template_id = synth_range(seed, index, 7, 0, 4);
    int side = it->width < it->height ? it->width : it->height;
    int child = it->subject >= 2;
    it->head_r = (int)(side * (child ? 0.17 : 0.14));
    if (it->head_r < 4) it->head_r = 4;
    int shift = synth_range(seed, index, 8, -100, 100);
    it->head_cx = it->width / 2 + (int)((double)shift / 100.0 * 0.12 * it->width);
    it->head_cy = (int)(it->height * 0.36);
    it->hair_probe[0] = it->head_cx;
    it->hair_probe[1] = it->head_cy - (int)(it->head_r * 0.95);
    int shoulder = it->head_cy + (int)(it->head_r * 1.25);
    it->jacket_probe[0] = it->head_cx + (int)(it->head_r * 0.6);
    it->jacket_probe[1] = shoulder + (it->height - shoulder) / 2;
    synth_caption(it);
}

/* ---- drawing ---- */

typedef struct {
    uint8_t *rgb;
    int w, h;
} canvas;

static void put(canvas *cv, int x, int y, const uint8_t c[3])
{
    if (x < 0 || y < 0 || x >= cv->w || y >= cv->h) return;
    memcpy(cv->rgb + ((size_t)y * (size_t)cv->w + (size_t)x) * 3, c, 3);
}

/* Filled axis-aligned ellipse centred (cx, cy) with radii (rx, ry), rows y0..y1 only. */
static void fill_ellipse(canvas *cv, int cx, int cy, int rx, int ry, int y0, int y1,
                         const uint8_t c[3])
{
    if (rx < 1) rx = 1;
    if (ry < 1) ry = 1;
    for (int y = cy - ry; y <= cy + ry; y++) {
        if (y < y0 || y > y1) continue;
        double dy = (double)(y - cy) / ry;
        double half = rx * __builtin_sqrt(1.0 - dy * dy > 0 ? 1.0 - dy * dy : 0);
        for (int x = cx - (int)half; x <= cx + (int)half; x++) put(cv, x, y, c);
    }
}

/* Trapezoid between rows y0 and y1, centred on cx, half-width hw0 at y0 growing to hw1. */
static void fill_trapezoid(canvas *cv, int cx, int y0, int y1, int hw0, int hw1,
                           const uint8_t c[3])
{
    for (int y = y0; y <= y1; y++) {
        double t = y1 > y0 ? (double)(y - y0) / (y1 - y0) : 0;
        int hw = (int)(hw0 + t * (hw1 - hw0));
        for (int x = cx - hw; x <= cx + hw; x++) put(cv, x, y, c);
    }
}

static void draw_background(canvas *cv, int bg)
{
    static const uint8_t top[5][3] = {
        {250, 250, 250}, {110, 170, 235}, {120, 180, 240}, {30, 30, 45}, {250, 150, 70}};
    static const uint8_t bottom[5][3] = {
        {235, 235, 235}, {190, 220, 250}, {70, 160, 70}, {55, 50, 70}, {120, 60, 120}};
    int horizon = bg == 2 ? cv->h * 6 / 10 : cv->h;
    for (int y = 0; y < cv->h; y++) {
        uint8_t c[3];
        if (y >= horizon) {
            memcpy(c, bottom[bg], 3);
        } else {
            /* vertical gradient from top to bottom colour (to the horizon for the field) */
            const uint8_t *b = bg == 2 ? (const uint8_t[3]){200, 225, 250} : bottom[bg];
            double t = (double)y / (horizon > 1 ? horizon - 1 : 1);
            for (int k = 0; k < 3; k++) c[k] = (uint8_t)(top[bg][k] + t * (b[k] - top[bg][k]));
        }
        for (int x = 0; x < cv->w; x++) put(cv, x, y, c);
    }
}

static void draw_figure(canvas *cv, const k22_synth_item *it)
{
    static const uint8_t skin[3] = {250, 215, 180}, dark[3] = {20, 20, 25};
    static const uint8_t mouth[3] = {180, 60, 60};
    const uint8_t *hair = k22_synth_palette[it->hair_color].rgb;
    const uint8_t *jacket = k22_synth_palette[it->jacket_color].rgb;
    int cx = it->head_cx, cy = it->head_cy, r = it->head_r;
    int female = it->subject == 1 || it->subject == 3;
    int shoulder = cy + (int)(r * 1.25);
    /* long hair falls behind the shoulders, so it is drawn first */
    if (female) fill_trapezoid(cv, cx, cy, cy + (int)(r * 1.9), (int)(r * 1.15), (int)(r * 1.3), hair);
    /* neck, then the jacket from the shoulders to the bottom edge */
    fill_trapezoid(cv, cx, cy + r / 2, shoulder + r / 4, r / 3, r / 3, skin);
    int body_hw = (int)(r * (female ? 1.25 : 1.5));
    fill_trapezoid(cv, cx, shoulder, cv->h - 1, body_hw, body_hw + r / 2, jacket);
    /* a collar line down the middle (kept away from the jacket probe) */
    fill_trapezoid(cv, cx, shoulder, cv->h - 1, r / 16, r / 16, dark);
    fill_ellipse(cv, cx, cy, r, (int)(r * 1.1), cy - 2 * r, cy + 2 * r, skin);
    /* the hair cap over the top of the head, with spikes for the short styles */
    fill_ellipse(cv, cx, cy - r / 10, (int)(r * 1.12), (int)(r * 1.2), cy - 2 * r, cy - r / 4, hair);
    if (!female)
        for (int k = -2; k <= 2; k++)
            fill_trapezoid(cv, cx + k * r / 3, cy - (int)(r * 1.6), cy - (int)(r * 1.1), 0, r / 6, hair);
    fill_ellipse(cv, cx - r * 35 / 100, cy + r / 10, r / 10, r / 7, cy - r, cy + r, dark);
    fill_ellipse(cv, cx + r * 35 / 100, cy + r / 10, r / 10, r / 7, cy - r, cy + r, dark);
    fill_trapezoid(cv, cx, cy + r / 2, cy + r / 2 + r / 20, r / 5, r / 5, mouth);
}

/* Light noise so the images are not flat: +-4 per sample from a per-item xorshift. */
static void add_noise(canvas *cv, uint64_t state)
{
    size_t n = (size_t)cv->w * (size_t)cv->h * 3;
    for (size_t i = 0; i < n; i++) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        int v = cv->rgb[i] + (int)(state % 9) - 4;
        cv->rgb[i] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
    }
}

void k22_synth_draw(const k22_synth_item *it, uint64_t seed, int64_t index, uint8_t *rgb)
{
    canvas cv = {rgb, it->width, it->height};
    draw_background(&cv, it->background);
    draw_figure(&cv, it);
    uint64_t state = ((uint64_t)synth_u32(seed, index, 9) << 32) | synth_u32(seed, index, 10);
    add_noise(&cv, state | 1);
}

k22_status k22_synth_make(uint64_t seed, int64_t index, int min_size, int max_size,
                          k22_synth_item *it, uint8_t **out, size_t *len, k22_err *err)
{
    *out = NULL;
    *len = 0;
    if (min_size < K22_SYNTH_MIN_SIZE || max_size > K22_SYNTH_MAX_SIZE || min_size > max_size)
        return k22_err_set(err, K22_ERR_ARG,
                           "synth: sizes must satisfy %d <= min_size (%d) <= max_size (%d) <= %d",
                           K22_SYNTH_MIN_SIZE, min_size, max_size, K22_SYNTH_MAX_SIZE);
    k22_synth_describe(seed, index, min_size, max_size, it);
    uint8_t *rgb = k22_xmalloc((size_t)it->width * (size_t)it->height * 3);
    k22_synth_draw(it, seed, index, rgb);
    k22_status st = it->format == K22_SYNTH_PNG
                        ? k22_png_encode(rgb, it->width, it->height, K22_SYNTH_PNG_LEVEL, out, len, err)
                        : k22_jpeg_encode(rgb, it->width, it->height, K22_SYNTH_JPEG_QUALITY, out, len, err);
    free(rgb);
    return st;
}

/* ---- the folder ---- */

static k22_status write_file(const char *path, const void *data, size_t n, k22_err *err)
{
    FILE *f = fopen(path, "wb");
    if (!f) return k22_err_set(err, K22_ERR_IO, "%s: cannot create", path);
    size_t w = fwrite(data, 1, n, f);
    int bad = fclose(f) != 0 || w != n;
    return bad ? k22_err_set(err, K22_ERR_IO, "%s: write failed", path) : K22_OK;
}

static const char *synth_ext(k22_synth_format f) { return f == K22_SYNTH_PNG ? "png" : "jpg"; }

/* Makes and writes item i into tmp; appends its metadata line to *line (lcap bytes). */
static k22_status write_item(const char *tmp, int64_t i, uint64_t seed, int min_size,
                             int max_size, char *line, size_t lcap, k22_err *err)
{
    k22_synth_item it;
    uint8_t *buf = NULL;
    size_t len = 0;
    char name[32], path[4096];
    k22_status st = k22_synth_make(seed, i, min_size, max_size, &it, &buf, &len, err);
    if (st) return st;
    snprintf(name, sizeof name, "%06lld.%s", (long long)i, synth_ext(it.format));
    st = k22_fs_join(path, sizeof path, tmp, name, err);
    if (!st) st = write_file(path, buf, len, err);
    free(buf);
    /* captions are plain ASCII without quotes or backslashes: no escaping needed */
    snprintf(line, lcap, "{\"file_name\": \"%s\", \"text\": \"%s\"}\n", name, it.caption);
    return st;
}

static k22_status synth_check_out(const char *dir, int force, k22_err *err)
{
    if (!k22_fs_exists(dir)) return K22_OK;
    if (!k22_fs_is_dir(dir))
        return k22_err_set(err, K22_ERR_ARG, "%s: exists and is not a folder", dir);
    if (!force && !k22_fs_dir_is_empty(dir))
        return k22_err_set(err, K22_ERR_ARG, "%s: folder is not empty (use --force to replace it)",
                           dir);
    return K22_OK;
}

k22_status k22_synth_write_dir(const char *dir, int64_t n, uint64_t seed, int min_size,
                               int max_size, int force, k22_err *err)
{
    enum { LINE = 320 };
    char tmp[4096], path[4096];
    char *lines = NULL;
    size_t nbytes;
    if (n < 1 || n > 10000000)
        return k22_err_set(err, K22_ERR_ARG, "synth: --n %lld outside 1..10000000", (long long)n);
    k22_status st = synth_check_out(dir, force, err);
    if (st) return st;
    if (snprintf(tmp, sizeof tmp, "%s.tmp", dir) >= (int)sizeof tmp)
        return k22_err_set(err, K22_ERR_ARG, "%s: path too long", dir);
    st = k22_fs_rm_rf(tmp, err);
    if (!st) st = k22_fs_mkdir_p(tmp, err);
    if (st) return st;
    lines = k22_xcalloc((size_t)n, LINE);
    volatile int failed = 0;
    k22_err first = {0};
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t i = 0; i < n; i++) {
        if (failed) continue;
        k22_err e;
        if (write_item(tmp, i, seed, min_size, max_size, lines + (size_t)i * LINE, LINE, &e)) {
#pragma omp critical(k22_synth_err)
            if (!failed) {
                failed = 1;
                first = e;
            }
        }
    }
    if (failed) {
        if (err) *err = first;
        st = first.code;
        goto out;
    }
    /* the metadata, in index order */
    nbytes = 0;
    for (int64_t i = 0; i < n; i++) {
        size_t l = strlen(lines + (size_t)i * LINE);
        memmove(lines + nbytes, lines + (size_t)i * LINE, l);
        nbytes += l;
    }
    st = k22_fs_join(path, sizeof path, tmp, "metadata.jsonl", err);
    if (!st) st = k22_fs_write_atomic(path, lines, nbytes, err);
    if (!st) st = k22_fs_fsync_path(tmp, err);
    if (!st) st = k22_fs_rm_rf(dir, err);
    if (!st) st = k22_fs_rename(tmp, dir, err);
out:
    free(lines);
    if (st) {
        k22_err ignore;
        k22_fs_rm_rf(tmp, &ignore);
    }
    return st;
}
