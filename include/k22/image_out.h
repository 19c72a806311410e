/* image_out.h: writing 8-bit RGB images as PNG (libpng) and JPEG (libjpeg) into memory, with
 * fixed settings so the same pixels always give the same bytes (no timestamps, no text chunks).
 * Used by `k22 synth` and by tests that need image files. */
#ifndef K22_IMAGE_OUT_H
#define K22_IMAGE_OUT_H

#include "k22/k22.h"

#include <stdint.h>

/* Encodes rgb (H, W, 3) as PNG (8-bit RGB, non-interlaced, zlib level `level` 0..9, adaptive
 * filters). On success *out is a malloc'd buffer of *len bytes the caller frees. */
k22_status k22_png_encode(const uint8_t *rgb, int width, int height, int level, uint8_t **out,
                          size_t *len, k22_err *err);
/* Encodes rgb (H, W, 3) as a baseline JFIF JPEG at quality 1..100 with 4:2:0 chroma
 * subsampling. *out as above. */
k22_status k22_jpeg_encode(const uint8_t *rgb, int width, int height, int quality, uint8_t **out,
                           size_t *len, k22_err *err);

#endif
