/* fuzz_image.c: libFuzzer target for the image decoders. An input is any bytes, decoded under a
 * 4 Mpx cap; a refused input must come with a message naming it and leave no pixels; a decoded
 * one must have a sane size and then go through both preprocessing transforms (CLIP and the
 * decoder transform at 32 px) and the EXIF transpose. Violations abort. */
#include "k22/image.h"
#include "k22/preprocess.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void require(int ok, const char *what)
{
    if (ok) return;
    fprintf(stderr, "fuzz_image: property violated: %s\n", what);
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    k22_image_opts o;
    k22_image_opts_default(&o);
    o.max_pixels = 4 << 20;
    o.exif_transpose = size > 0 && (data[size - 1] & 1);
    k22_image im;
    k22_err err = {0};
    k22_status st = k22_image_decode(data, size, "fuzz.img", &o, &im, &err);
    if (st != K22_OK) {
        require(strstr(err.msg, "fuzz.img") != NULL, "error names the input");
        require(im.rgb == NULL, "no pixels after an error");
        return 0;
    }
    require(im.width > 0 && im.height > 0 && (int64_t)im.width * im.height <= o.max_pixels,
            "size within the cap");
    require(im.exif_orientation >= 0 && im.exif_orientation <= 8, "orientation 0..8");
    /* Keep the preprocessing cheap: only for images up to 256 Kpx. */
    if ((int64_t)im.width * im.height <= (1 << 18)) {
        k22_clip_image_cfg cfg;
        k22_clip_image_cfg_default(&cfg);
        float *clip = malloc(sizeof(float) * 3 * 224 * 224);
        float dec[3 * 32 * 32];
        require(clip && k22_preprocess_clip(&im, &cfg, clip, &err) == K22_OK, "CLIP transform");
        require(k22_preprocess_decoder(&im, 32, dec, &err) == K22_OK, "decoder transform");
        for (int i = 0; i < 3 * 32 * 32; i++) require(dec[i] >= -1.0f && dec[i] <= 1.0f, "range");
        free(clip);
        k22_image_orient(&im, 6);
    }
    k22_image_free(&im);
    return 0;
}
