/* test_preprocess.c: the resamplers and the transform geometry.
 *  - 48 random resizes (sizes 1..63 -> 1..47, each axis up or down on its own, noise and smooth
 *    content) equal byte for byte to Pillow's Image.resize(BICUBIC) with reducing_gap None, 1 and
 *    2.5, and to torchvision's uint8 antialiased bicubic (tests/fixtures/images/resample.safetensors);
 *  - the CLIP resize-size rule (int truncation) and the decoder crop box (round half to even);
 *  - a canary: the Pillow rounding checked against torch's outputs must fail somewhere. */
#include "harness/harness.h"
#include "k22/preprocess.h"
#include "k22/safetensors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const k22_st_tensor *get(k22_st_file *f, int i, const char *what)
{
    char key[64];
    snprintf(key, sizeof key, "r%d.%s", i, what);
    const k22_st_tensor *t = k22_st_find(f, key);
    CHECK_MSG(t != NULL, "missing %s", key);
    return t;
}

static size_t count_diff(const uint8_t *a, const uint8_t *b, size_t n)
{
    size_t d = 0;
    for (size_t i = 0; i < n; i++) d += a[i] != b[i];
    return d;
}

static void check_random_resizes(void)
{
    k22_st_file *f = NULL;
    k22_err err = {0};
    CHECK_MSG(k22_st_open("tests/fixtures/images/resample.safetensors", &f, &err) == K22_OK, "%s",
              err.msg);
    if (!f) return;
    size_t canary = 0;
    int cases = 0;
    for (int i = 0;; i++) {
        char key[64];
        snprintf(key, sizeof key, "r%d.src", i);
        const k22_st_tensor *src = k22_st_find(f, key);
        if (!src) break;
        cases++;
        int sh = (int)src->shape[0], sw = (int)src->shape[1];
        const k22_st_tensor *pil = get(f, i, "pil"), *g1 = get(f, i, "pil_gap1"),
                            *g25 = get(f, i, "pil_gap2_5"), *tor = get(f, i, "torch");
        if (!pil || !g1 || !g25 || !tor) continue;
        int dh = (int)pil->shape[0], dw = (int)pil->shape[1];
        uint8_t *out = k22_xmalloc(pil->nbytes);
        const double box[4] = {0, 0, sw, sh};
        k22_resample_bicubic(src->data, sw, sh, box, out, dw, dh, K22_RESAMPLE_PIL);
        CHECK_MSG(!count_diff(out, pil->data, pil->nbytes), "r%d %dx%d->%dx%d PIL: %zu bytes differ",
                  i, sw, sh, dw, dh, count_diff(out, pil->data, pil->nbytes));
        canary += count_diff(out, tor->data, tor->nbytes);
        k22_resize_pil_bicubic(src->data, sw, sh, out, dw, dh, 1.0);
        CHECK_MSG(!count_diff(out, g1->data, g1->nbytes), "r%d %dx%d->%dx%d reducing_gap=1: %zu differ",
                  i, sw, sh, dw, dh, count_diff(out, g1->data, g1->nbytes));
        k22_resize_pil_bicubic(src->data, sw, sh, out, dw, dh, 2.5);
        CHECK_MSG(!count_diff(out, g25->data, g25->nbytes), "r%d %dx%d->%dx%d reducing_gap=2.5: %zu differ",
                  i, sw, sh, dw, dh, count_diff(out, g25->data, g25->nbytes));
        k22_resample_bicubic(src->data, sw, sh, box, out, dw, dh, K22_RESAMPLE_TORCH);
        CHECK_MSG(!count_diff(out, tor->data, tor->nbytes), "r%d %dx%d->%dx%d torch: %zu differ",
                  i, sw, sh, dw, dh, count_diff(out, tor->data, tor->nbytes));
        free(out);
    }
    CHECK_MSG(cases == 48, "%d resize cases", cases);
    /* Canary: the two roundings are different, so Pillow's must miss torch's somewhere. */
    CHECK_MSG(canary > 0, "PIL rounding matched torch everywhere: the torch test cannot fail");
    k22_st_close(f);
}

static void check_geometry(void)
{
    const int cases[][4] = {{37, 53, 224, 320},   {640, 480, 298, 224}, {224, 224, 224, 224},
                            {1000, 250, 896, 224}, {300, 200, 336, 224}, {1, 5000, 224, 1120000}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        int nw, nh;
        k22_clip_resize_size(cases[i][0], cases[i][1], 224, &nw, &nh);
        CHECK_MSG(nw == cases[i][2] && nh == cases[i][3], "%dx%d -> %dx%d, expected %dx%d",
                  cases[i][0], cases[i][1], nw, nh, cases[i][2], cases[i][3]);
    }
    /* Decoder crop of 301x200: box (50.5, 0, 250.5, 200) rounds half to even to (50, 0, 250, 200),
     * so the crop is 200x200 starting at column 50. A 1-pixel-wide column marks column 50. */
    k22_image im = {.width = 301, .height = 200};
    im.rgb = k22_xcalloc((size_t)301 * 200 * 3, 1);
    for (int y = 0; y < 200; y++) memset(im.rgb + ((size_t)y * 301 + 50) * 3, 255, 3);
    uint8_t out[200 * 200 * 3];
    k22_err err = {0};
    CHECK(k22_preprocess_decoder_u8(&im, 200, out, &err) == K22_OK);
    CHECK(out[0] == 255 && out[3] == 0 && out[(199 * 200) * 3] == 255);
    CHECK(k22_preprocess_decoder_u8(&im, 0, out, &err) == K22_ERR_ARG);
    k22_image empty = {0};
    CHECK(k22_preprocess_decoder_u8(&empty, 64, out, &err) == K22_ERR_ARG);
    k22_image_free(&im);
}

int main(void)
{
    check_random_resizes();
    check_geometry();
    return k22_test_finish("test_preprocess");
}
