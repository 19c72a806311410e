/* test_synth.c: `k22 synth` items. The same (seed, index) gives the same bytes whatever n is;
 * every image decodes (io/image.c) to its described size; the caption names what was drawn
 * (the nearest palette colour at the hair and jacket probes is the one the caption says); both
 * JPEG and PNG appear; the folder reads back through the caption reader with no rejects; and a
 * non-empty output folder is refused without force. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness/harness.h"
#include "k22/captions.h"
#include "k22/fsutil.h"
#include "k22/image.h"
#include "k22/synth.h"

static char g_root[] = "/tmp/k22-test-synth-XXXXXX";

/* Nearest palette entry to the mean of the 5x5 patch around (x, y). */
static int nearest_color(const k22_image *im, int x, int y)
{
    double m[3] = {0, 0, 0};
    int cnt = 0;
    for (int dy = -2; dy <= 2; dy++)
        for (int dx = -2; dx <= 2; dx++) {
            int xx = x + dx, yy = y + dy;
            if (xx < 0 || yy < 0 || xx >= im->width || yy >= im->height) continue;
            for (int k = 0; k < 3; k++) m[k] += im->rgb[((size_t)yy * im->width + xx) * 3 + k];
            cnt++;
        }
    int best = -1;
    double bd = 1e30;
    for (int i = 0; i < k22_synth_ncolors(); i++) {
        uint8_t c[3];
        k22_synth_color_rgb(i, c);
        double d = 0;
        for (int k = 0; k < 3; k++) d += (m[k] / cnt - c[k]) * (m[k] / cnt - c[k]);
        if (d < bd) bd = d, best = i;
    }
    return best;
}

static void test_items(void)
{
    const uint64_t seed = 1234;
    int njpeg = 0, npng = 0, subjects[4] = {0}, min_w = 1 << 30, max_w = 0;
    for (int64_t i = 0; i < 48; i++) {
        k22_synth_item it, it2;
        uint8_t *buf = NULL, *buf2 = NULL;
        size_t len = 0, len2 = 0;
        k22_err err;
        CHECK(k22_synth_make(seed, i, 128, 320, &it, &buf, &len, &err) == K22_OK);
        CHECK(k22_synth_make(seed, i, 128, 320, &it2, &buf2, &len2, &err) == K22_OK);
        CHECK_MSG(len == len2 && !memcmp(buf, buf2, len), "item %lld: two makes differ", (long long)i);
        CHECK(it.width >= 128 && it.width <= 320 && it.height >= 128 && it.height <= 320);
        k22_image im = {0};
        CHECK_MSG(k22_image_decode(buf, len, "synth", NULL, &im, &err) == K22_OK, "item %lld: %s", (long long)i, err.msg);
        CHECK(im.width == it.width && im.height == it.height);
        CHECK(im.format == (it.format == K22_SYNTH_PNG ? K22_IMAGE_PNG : K22_IMAGE_JPEG));
        if (im.rgb) {
            int hair = nearest_color(&im, it.hair_probe[0], it.hair_probe[1]);
            int jacket = nearest_color(&im, it.jacket_probe[0], it.jacket_probe[1]);
            CHECK_MSG(hair == it.hair_color, "item %lld: hair probe reads %s, caption says %s", (long long)i,
                      k22_synth_color_name(hair), k22_synth_color_name(it.hair_color));
            CHECK_MSG(jacket == it.jacket_color, "item %lld: jacket probe reads %s, caption says %s", (long long)i,
                      k22_synth_color_name(jacket), k22_synth_color_name(it.jacket_color));
        }
        /* the caption names the hair colour, the jacket when it mentions one, the subject
         * unless it says "cartoon character" */
        char want[64];
        snprintf(want, sizeof want, " %s hair", k22_synth_color_name(it.hair_color));
        CHECK_MSG(strstr(it.caption, want) != NULL, "'%s' lacks '%s'", it.caption, want);
        if (strstr(it.caption, "jacket")) {
            snprintf(want, sizeof want, " %s jacket", k22_synth_color_name(it.jacket_color));
            CHECK_MSG(strstr(it.caption, want) != NULL, "'%s' lacks '%s'", it.caption, want);
        }
        if (!strstr(it.caption, "cartoon character")) {
            snprintf(want, sizeof want, " %s with", k22_synth_subject_name(it.subject));
            CHECK_MSG(strstr(it.caption, want) != NULL, "'%s' lacks '%s'", it.caption, want);
        }
        CHECK(k22_caption_check(it.caption, strlen(it.caption), 16384, want, sizeof want));
        njpeg += it.format == K22_SYNTH_JPEG;
        npng += it.format == K22_SYNTH_PNG;
        subjects[it.subject]++;
        if (it.width < min_w) min_w = it.width;
        if (it.width > max_w) max_w = it.width;
        k22_image_free(&im);
        free(buf);
        free(buf2);
    }
    /* both formats among these 48 (this seed draws 4 PNGs) */
    CHECK_MSG(njpeg >= 20 && npng >= 3, "formats: %d JPEG, %d PNG", njpeg, npng);
    /* over many items: 30% PNG (binomial sd 1% at 2000 items; 5 sd allowed), every colour used */
    int png = 0, hair[16] = {0};
    for (int64_t i = 0; i < 2000; i++) {
        k22_synth_item it;
        k22_synth_describe(99, i, 256, 1024, &it);
        png += it.format == K22_SYNTH_PNG;
        hair[it.hair_color]++;
        CHECK(it.jacket_color != it.hair_color);
    }
    CHECK_MSG(png >= 500 && png <= 700, "PNG share %d of 2000", png);
    for (int c = 0; c < k22_synth_ncolors(); c++) CHECK_MSG(hair[c] > 100, "hair colour %d drawn %d times", c, hair[c]);
    CHECK(subjects[0] && subjects[1] && subjects[2] && subjects[3]);
    CHECK_MSG(max_w - min_w > 100, "widths span %d..%d", min_w, max_w);
    /* another seed gives other pictures */
    k22_synth_item a, b;
    k22_synth_describe(1, 0, 256, 1024, &a);
    k22_synth_describe(2, 0, 256, 1024, &b);
    CHECK(a.width != b.width || a.height != b.height || strcmp(a.caption, b.caption) != 0);
    uint8_t *buf;
    size_t len;
    k22_err err;
    CHECK(k22_synth_make(1, 0, 16, 64, &a, &buf, &len, &err) == K22_ERR_ARG);
    CHECK(k22_synth_make(1, 0, 300, 200, &a, &buf, &len, &err) == K22_ERR_ARG);
}

static int same_file(const char *a, const char *b)
{
    char *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    int same = !k22_fs_read_all(a, 1 << 26, &x, &nx, NULL) && !k22_fs_read_all(b, 1 << 26, &y, &ny, NULL) &&
               nx == ny && !memcmp(x, y, nx);
    free(x);
    free(y);
    return same;
}

static void test_folder(void)
{
    char d1[4096], d2[4096], d3[4096], p1[8192], p2[8192];
    snprintf(d1, sizeof d1, "%s/one", g_root);
    snprintf(d2, sizeof d2, "%s/two", g_root);
    snprintf(d3, sizeof d3, "%s/three", g_root);
    k22_err err;
    CHECK(k22_synth_write_dir(d1, 12, 7, 64, 200, 0, &err) == K22_OK);
    CHECK(k22_synth_write_dir(d2, 12, 7, 64, 200, 0, &err) == K22_OK);
    CHECK(k22_synth_write_dir(d3, 5, 7, 64, 200, 0, &err) == K22_OK);
    snprintf(p1, sizeof p1, "%s.tmp", d1);
    CHECK(!k22_fs_exists(p1));
    k22_caption_set s;
    k22_caption_set_init(&s);
    CHECK(k22_captions_read_dir(d1, NULL, &s, &err) == K22_OK);
    CHECK_MSG(s.nrecs == 12 && s.nrejects == 0, "read back %zu records, %zu rejects", s.nrecs, s.nrejects);
    for (size_t i = 0; i < s.nrecs; i++) {
        k22_synth_item it;
        k22_synth_describe(7, (int64_t)i, 64, 200, &it);
        CHECK_MSG(!strcmp(s.recs[i].captions[0], it.caption), "row %zu: '%s' vs '%s'", i, s.recs[i].captions[0], it.caption);
        k22_image im = {0};
        CHECK_MSG(k22_image_load(s.recs[i].file, NULL, &im, &err) == K22_OK, "%s", err.msg);
        CHECK(im.width == it.width && im.height == it.height);
        k22_image_free(&im);
        snprintf(p1, sizeof p1, "%s/%s", d1, s.recs[i].name);
        snprintf(p2, sizeof p2, "%s/%s", d2, s.recs[i].name);
        CHECK_MSG(same_file(p1, p2), "%s differs between two runs", s.recs[i].name);
        if (i < 5) {
            snprintf(p2, sizeof p2, "%s/%s", d3, s.recs[i].name);
            CHECK_MSG(same_file(p1, p2), "%s depends on n", s.recs[i].name);
        }
    }
    snprintf(p1, sizeof p1, "%s/metadata.jsonl", d1);
    snprintf(p2, sizeof p2, "%s/metadata.jsonl", d2);
    CHECK(same_file(p1, p2));
    k22_caption_set_free(&s);
    /* a non-empty folder needs force; an empty one does not */
    CHECK(k22_synth_write_dir(d1, 3, 8, 64, 100, 0, &err) == K22_ERR_ARG && strstr(err.msg, "--force"));
    CHECK(k22_synth_write_dir(d1, 3, 8, 64, 100, 1, &err) == K22_OK);
    CHECK(k22_captions_read_dir(d1, NULL, &s, &err) == K22_OK && s.nrecs == 3);
    k22_caption_set_free(&s);
    snprintf(p1, sizeof p1, "%s/empty", g_root);
    CHECK(k22_fs_mkdir_p(p1, &err) == K22_OK);
    CHECK(k22_synth_write_dir(p1, 2, 8, 64, 100, 0, &err) == K22_OK);
}

int main(void)
{
    if (!mkdtemp(g_root)) return 1;
    test_items();
    test_folder();
    k22_fs_rm_rf(g_root, NULL);
    return k22_test_finish("test_synth");
}
