/* image_internal.h: what the per-format decoders share with image.c. */
#ifndef K22_IMAGE_INTERNAL_H
#define K22_IMAGE_INTERNAL_H

#include "k22/image.h"

/* Each decoder fills out (rgb, size, src_*, exif_orientation, frames) or returns an error
 * whose message starts with name. exif_bad is set to a message when an EXIF block was present
 * but malformed (the caller decides whether that matters). */
typedef struct {
    const char *name;
    const k22_image_opts *opts;
    char exif_bad[200];
} k22_image_ctx;

k22_status k22_image_decode_jpeg(const uint8_t *buf, size_t len, k22_image_ctx *c, k22_image *out,
                                 k22_err *err);
k22_status k22_image_decode_png(const uint8_t *buf, size_t len, k22_image_ctx *c, k22_image *out,
                                k22_err *err);
k22_status k22_image_decode_webp(const uint8_t *buf, size_t len, k22_image_ctx *c, k22_image *out,
                                 k22_err *err);

/* Checks w x h against the cap and allocates the (H, W, 3) buffer into out; an error names the
 * file, the size and the cap. */
k22_status k22_image_alloc(k22_image_ctx *c, int64_t w, int64_t h, k22_image *out, k22_err *err);
/* Checks w x h against the cap without allocating. */
k22_status k22_image_check_size(k22_image_ctx *c, int64_t w, int64_t h, k22_err *err);
/* Records the orientation of an EXIF block in out (or the reason it could not be read). */
void k22_image_note_exif(k22_image_ctx *c, const uint8_t *exif, size_t len, k22_image *out);

#endif
