/* test_image.c: image decoding and preprocessing against the pinned reference
 * (tools/reference/make_image_fixtures.py -> tests/fixtures/images/).
 *  - decode: every fixture equals PIL's Image.open(f).convert("RGB") byte for byte;
 *  - CLIP and decoder transforms, run on the reference RGB (so they are tested apart from the
 *    decoders): uint8 stage equal byte for byte; float outputs equal exactly (atol 0: the same
 *    float32 operations in the same order);
 *  - EXIF orientation read from JPEG, PNG and WebP, and applied on request;
 *  - broken files are refused with a message naming the file; caps; every truncation of a
 *    small file of each format is refused or decoded without a crash (ASan run). */
#include "harness/harness.h"
#include "k22/image.h"
#include "k22/preprocess.h"
#include "k22/safetensors.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DIR_OK "tests/fixtures/images/ok"
#define DIR_BAD "tests/fixtures/images/bad"

static k22_st_file *expected;

static const k22_st_tensor *want(const char *name, const char *suffix)
{
    char key[300];
    snprintf(key, sizeof key, "%s%s", name, suffix);
    return k22_st_find(expected, key);
}

/* Counts differing bytes and the largest difference; prints a line when any differ. */
static int compare_u8(const char *what, const uint8_t *got, const uint8_t *ref, size_t n)
{
    size_t bad = 0;
    int maxd = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)got[i] - (int)ref[i]);
        if (d) bad++;
        if (d > maxd) maxd = d;
    }
    if (bad) fprintf(stderr, "%s: %zu of %zu bytes differ, max difference %d\n", what, bad, n, maxd);
    return bad == 0;
}

static void check_decode(const char *name, const char *path)
{
    k22_image im;
    k22_err err = {0};
    k22_status st = k22_image_load(path, NULL, &im, &err);
    CHECK_MSG(st == K22_OK, "%s: %s", name, err.msg);
    const k22_st_tensor *t = want(name, ".rgb");
    CHECK_MSG(t != NULL, "%s: no expected pixels", name);
    if (st || !t) return;
    CHECK_MSG(t->shape[0] == im.height && t->shape[1] == im.width, "%s: %dx%d, expected %lldx%lld",
              name, im.width, im.height, (long long)t->shape[1], (long long)t->shape[0]);
    if (t->shape[0] == im.height && t->shape[1] == im.width)
        CHECK_MSG(compare_u8(name, im.rgb, t->data, t->nbytes), "%s: decoded pixels differ from PIL", name);
    k22_image_free(&im);
}

/* The reference RGB as an image (a copy, so the preprocessors see an owned buffer). */
static k22_image ref_image(const k22_st_tensor *t)
{
    k22_image im = {0};
    im.height = (int)t->shape[0];
    im.width = (int)t->shape[1];
    im.rgb = k22_xmalloc(t->nbytes);
    memcpy(im.rgb, t->data, t->nbytes);
    return im;
}

static void check_preprocess(const char *name)
{
    const k22_st_tensor *t = want(name, ".rgb");
    if (!t) return;
    k22_image im = ref_image(t);
    k22_err err = {0};
    for (int res = 64; res <= 96; res += 32) {
        const k22_st_tensor *d = want(name, res == 64 ? ".dec64" : ".dec96");
        if (!d) continue;
        uint8_t *out = k22_xmalloc((size_t)res * res * 3);
        CHECK(k22_preprocess_decoder_u8(&im, res, out, &err) == K22_OK);
        char what[300];
        snprintf(what, sizeof what, "%s decoder transform at %d", name, res);
        CHECK_MSG(compare_u8(what, out, d->data, d->nbytes), "%s differs from PIL", what);
        free(out);
    }
    const k22_st_tensor *c = want(name, ".clip");
    if (c) {
        k22_clip_image_cfg cfg;
        k22_clip_image_cfg_default(&cfg);
        uint8_t *out = k22_xmalloc(224 * 224 * 3);
        CHECK(k22_preprocess_clip_u8(&im, &cfg, out, &err) == K22_OK);
        char what[300];
        snprintf(what, sizeof what, "%s CLIP resize+crop", name);
        CHECK_MSG(compare_u8(what, out, c->data, c->nbytes), "%s differs from transformers", what);
        free(out);
    }
    char key[300];
    snprintf(key, sizeof key, "clip_f32.%s", name);
    const k22_st_tensor *cf = k22_st_find(expected, key);
    if (cf) { /* (3, 8, 224): the first 8 rows of pixel_values */
        k22_clip_image_cfg cfg;
        k22_clip_image_cfg_default(&cfg);
        float *pv = k22_xmalloc(3 * 224 * 224 * sizeof *pv), rows[3 * 8 * 224];
        CHECK(k22_preprocess_clip(&im, &cfg, pv, &err) == K22_OK);
        for (int ch = 0; ch < 3; ch++) memcpy(rows + ch * 8 * 224, pv + ch * 224 * 224, 8 * 224 * sizeof *pv);
        k22_check_close(key, rows, cf->data, 3 * 8 * 224, 0.0, 0.0);
        free(pv);
    }
    snprintf(key, sizeof key, "dec_f32.%s", name);
    const k22_st_tensor *df = k22_st_find(expected, key);
    if (df) { /* (3, 8, 64) */
        float *x = k22_xmalloc(3 * 64 * 64 * sizeof *x), rows[3 * 8 * 64];
        CHECK(k22_preprocess_decoder(&im, 64, x, &err) == K22_OK);
        for (int ch = 0; ch < 3; ch++) memcpy(rows + ch * 8 * 64, x + ch * 64 * 64, 8 * 64 * sizeof *x);
        k22_check_close(key, rows, df->data, 3 * 8 * 64, 0.0, 0.0);
        free(x);
    }
    k22_image_free(&im);
}

static void check_fixtures(void)
{
    DIR *d = opendir(DIR_OK);
    CHECK_MSG(d != NULL, "cannot open %s", DIR_OK);
    if (!d) return;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[600];
        snprintf(path, sizeof path, "%s/%s", DIR_OK, e->d_name);
        check_decode(e->d_name, path);
        check_preprocess(e->d_name);
        n++;
    }
    closedir(d);
    CHECK_MSG(n >= 25, "only %d fixtures", n);
}

static void check_exif(void)
{
    const struct {
        const char *file;
        int orientation;
    } cases[] = {{"jpeg_exif6_53x37.jpg", 6}, {"png_exif8_35x25.png", 8},
                 {"webp_exif3_112x112.webp", 3}, {"png_rgb_37x53.png", 0}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char path[300];
        snprintf(path, sizeof path, "%s/%s", DIR_OK, cases[i].file);
        k22_image plain, turned;
        k22_err err = {0};
        k22_image_opts o;
        k22_image_opts_default(&o);
        CHECK(k22_image_load(path, &o, &plain, &err) == K22_OK);
        CHECK_MSG(plain.exif_orientation == cases[i].orientation, "%s: orientation %d, expected %d",
                  cases[i].file, plain.exif_orientation, cases[i].orientation);
        o.exif_transpose = 1;
        CHECK(k22_image_load(path, &o, &turned, &err) == K22_OK);
        int swap = cases[i].orientation >= 5;
        CHECK(turned.width == (swap ? plain.height : plain.width));
        /* 6: rotate 90 clockwise, so the new top-left is the old bottom-left; 8: the old top-right;
         * 3: rotate 180, the old bottom-right. */
        int sx = 0, sy = 0;
        if (cases[i].orientation == 6) sy = plain.height - 1;
        if (cases[i].orientation == 8) sx = plain.width - 1;
        if (cases[i].orientation == 3) sx = plain.width - 1, sy = plain.height - 1;
        if (plain.rgb && turned.rgb)
            CHECK_MSG(!memcmp(turned.rgb, plain.rgb + ((size_t)sy * plain.width + sx) * 3, 3),
                      "%s: transposed corner", cases[i].file);
        k22_image_free(&plain);
        k22_image_free(&turned);
    }
    /* The parser itself: a valid big-endian block, and offsets outside the block. */
    const uint8_t mm[] = {'M', 'M', 0, 42, 0, 0, 0, 8, 0, 1, 0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 5, 0, 0};
    CHECK(k22_exif_orientation(mm, sizeof mm, NULL, 0) == 5);
    CHECK(k22_exif_orientation(mm, sizeof mm - 3, NULL, 0) == -1);
    const uint8_t far[] = {'I', 'I', 42, 0, 0xf0, 0xff, 0xff, 0xff, 0, 0};
    char msg[200];
    CHECK(k22_exif_orientation(far, sizeof far, msg, sizeof msg) == -1 && strstr(msg, "offset"));
}

/* Every broken fixture is refused, and the message names the file. */
static void check_bad(void)
{
    const struct {
        const char *file;
        k22_status code;
        const char *says;
        int transpose;
    } cases[] = {
        {"truncated.jpg", K22_ERR_FORMAT, "JPEG", 0},
        {"truncated_header.jpg", K22_ERR_FORMAT, "JPEG", 0},
        {"truncated.png", K22_ERR_FORMAT, "PNG", 0},
        {"truncated.webp", K22_ERR_FORMAT, "WebP", 0},
        {"wrong_magic.png", K22_ERR_FORMAT, "not a JPEG, PNG or WebP", 0},
        {"empty.jpg", K22_ERR_FORMAT, "empty", 0},
        {"text.webp", K22_ERR_FORMAT, "not a JPEG", 0},
        {"huge.png", K22_ERR_UNSUPPORTED, "cap", 0},
        {"huge.jpg", K22_ERR_UNSUPPORTED, "cap", 0},
        {"corrupt_idat.png", K22_ERR_FORMAT, "PNG", 0},
        {"bad_exif_offset.jpg", K22_ERR_FORMAT, "EXIF IFD0 offset", 1},
        {"bad_exif_count.jpg", K22_ERR_FORMAT, "entries", 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char path[300];
        snprintf(path, sizeof path, "%s/%s", DIR_BAD, cases[i].file);
        k22_image_opts o;
        k22_image_opts_default(&o);
        o.exif_transpose = cases[i].transpose;
        k22_image im;
        k22_err err = {0};
        k22_status st = k22_image_load(path, &o, &im, &err);
        CHECK_MSG(st == cases[i].code, "%s: status %s, expected %s (%s)", cases[i].file,
                  k22_status_name(st), k22_status_name(cases[i].code), err.msg);
        CHECK_MSG(strstr(err.msg, cases[i].file) && strstr(err.msg, cases[i].says),
                  "%s: message '%s' should name the file and say '%s'", cases[i].file, err.msg,
                  cases[i].says);
        CHECK(im.rgb == NULL);
        if (cases[i].transpose) { /* the reference ignores EXIF: without transposing it decodes */
            o.exif_transpose = 0;
            CHECK_MSG(k22_image_load(path, &o, &im, &err) == K22_OK, "%s: %s", cases[i].file, err.msg);
            CHECK(im.exif_orientation == 0);
            k22_image_free(&im);
        }
    }
}

static void check_caps(void)
{
    k22_image_opts o;
    k22_image_opts_default(&o);
    o.max_pixels = 37 * 53 - 1;
    k22_image im;
    k22_err err = {0};
    CHECK(k22_image_load(DIR_OK "/png_rgb_37x53.png", &o, &im, &err) == K22_ERR_UNSUPPORTED);
    CHECK(strstr(err.msg, "37x53") != NULL);
    o.max_pixels = 37 * 53;
    CHECK(k22_image_load(DIR_OK "/png_rgb_37x53.png", &o, &im, &err) == K22_OK);
    k22_image_free(&im);
    o.max_pixels = K22_IMAGE_MAX_PIXELS_DEFAULT;
    o.allow_animated = 0;
    CHECK(k22_image_load(DIR_OK "/webp_animated_80x60.webp", &o, &im, &err) == K22_ERR_UNSUPPORTED);
    o.allow_animated = 1;
    CHECK(k22_image_load(DIR_OK "/webp_animated_80x60.webp", &o, &im, &err) == K22_OK);
    CHECK(im.frames == 3);
    k22_image_free(&im);
}

/* Every prefix (step 7 bytes) of a small file of each format: refused with the name, or decoded. */
static void check_truncations(void)
{
    const char *files[] = {"jpeg_rgb444_37x53.jpg", "png_interlaced_61x47.png",
                           "webp_lossy_alpha_90x70.webp", "png_palette4_33x21.png"};
    for (size_t f = 0; f < sizeof files / sizeof *files; f++) {
        char path[300];
        snprintf(path, sizeof path, "%s/%s", DIR_OK, files[f]);
        FILE *fp = fopen(path, "rb");
        CHECK(fp != NULL);
        if (!fp) continue;
        uint8_t buf[1 << 16];
        size_t n = fread(buf, 1, sizeof buf, fp);
        fclose(fp);
        int refused = 0, named = 0;
        for (size_t len = 0; len < n; len += 7) {
            k22_image im;
            k22_err err = {0};
            if (k22_image_decode(buf, len, files[f], NULL, &im, &err) != K22_OK) {
                refused++;
                named += strstr(err.msg, files[f]) != NULL;
            }
            k22_image_free(&im);
        }
        CHECK_MSG(refused > 0 && named == refused, "%s: %d truncations refused, %d named", files[f],
                  refused, named);
    }
}

/* Canary: a decoded image with one byte changed must fail the comparison the tests rely on. */
static void check_canary(void)
{
    k22_image im;
    k22_err err = {0};
    const k22_st_tensor *t = want("png_rgb_37x53.png", ".rgb");
    CHECK(t && k22_image_load(DIR_OK "/png_rgb_37x53.png", NULL, &im, &err) == K22_OK);
    if (!t || !im.rgb) return;
    im.rgb[1000] ^= 1;
    fprintf(stderr, "(canary, a difference is expected) ");
    CHECK(!compare_u8("canary", im.rgb, t->data, t->nbytes));
    k22_image_free(&im);
}

int main(void)
{
    k22_err err = {0};
    if (k22_st_open("tests/fixtures/images/expected.safetensors", &expected, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    check_fixtures();
    check_exif();
    check_bad();
    check_caps();
    check_truncations();
    check_canary();
    k22_st_close(expected);
    return k22_test_finish("test_image");
}
