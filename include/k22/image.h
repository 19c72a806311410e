/* image.h: decoding JPEG, PNG and WebP files into 8-bit RGB exactly as the reference scripts see
 * them (PIL's Image.open(f).convert("RGB") in the pinned Pillow): alpha dropped without
 * compositing, palettes expanded, 16-bit samples reduced the way Pillow reduces them, CMYK
 * JPEG converted as Pillow converts it. The format is detected from the magic bytes, never
 * from the file name. The EXIF orientation tag is read and reported; applying it is an option,
 * off by default, because the diffusers scripts do not transpose. */
#ifndef K22_IMAGE_H
#define K22_IMAGE_H

#include "k22/k22.h"

#include <stdint.h>

/* Default cap on width * height, checked before any pixel buffer is allocated. */
#define K22_IMAGE_MAX_PIXELS_DEFAULT ((int64_t)64 * 1024 * 1024)
/* Files larger than this are refused by k22_image_load before reading them. */
#define K22_IMAGE_MAX_FILE_BYTES ((size_t)1 << 30)

typedef enum {
    K22_IMAGE_UNKNOWN = 0,
    K22_IMAGE_JPEG,
    K22_IMAGE_PNG,
    K22_IMAGE_WEBP
} k22_image_format;

typedef struct {
    int64_t max_pixels; /* refuse width * height above this (K22_IMAGE_MAX_PIXELS_DEFAULT) */
    int exif_transpose; /* 1: apply the EXIF orientation (PIL ImageOps.exif_transpose); 0: keep */
    int allow_animated; /* 1: an animated WebP gives its first frame; 0: refused */
} k22_image_opts;

/* An 8-bit RGB image; owns rgb. */
typedef struct {
    int width, height;
    uint8_t *rgb; /* (H, W, 3) row-major */
    k22_image_format format;
    int src_channels;     /* channels stored in the file (1 grey, 2 grey+alpha, 3, 4) */
    int src_bits;         /* bits per sample stored in the file (1..16) */
    int exif_orientation; /* 1..8 from the EXIF tag 0x0112; 0 when absent or unreadable */
    int frames;           /* 1, or the frame count of an animated WebP */
} k22_image;

void k22_image_opts_default(k22_image_opts *o);

/* Detects the format from the first bytes; K22_IMAGE_UNKNOWN when none matches. */
k22_image_format k22_image_detect(const void *buf, size_t len);
const char *k22_image_format_name(k22_image_format f);

/* Decodes buf (len bytes) into *out. name is used in every message ("cat.jpg: JPEG data ends
 * early"). o may be NULL for the defaults. On failure *out is empty and err says why. Corrupt
 * or hostile data never crashes and never allocates past the pixel cap. */
k22_status k22_image_decode(const void *buf, size_t len, const char *name, const k22_image_opts *o,
                            k22_image *out, k22_err *err);
/* Reads path (capped at K22_IMAGE_MAX_FILE_BYTES) and decodes it. */
k22_status k22_image_load(const char *path, const k22_image_opts *o, k22_image *out,
                          k22_err *err);
/* Frees the pixels and zeroes the struct; an already-empty image is fine. */
void k22_image_free(k22_image *im);

/* Applies an EXIF orientation (1..8) in place, as ImageOps.exif_transpose does (2: mirror,
 * 3: rotate 180, 4: flip, 5: transpose, 6: rotate 270, 7: transverse, 8: rotate 90); other
 * values are a no-op. */
void k22_image_orient(k22_image *im, int orientation);

/* Reads the orientation tag from a TIFF-structured EXIF block (starting at the "II"/"MM" byte
 * order mark, or at "Exif\0\0"). Returns 0 when absent; 1..8 when present and valid; -1 when the
 * block is malformed (an offset outside it, a bad byte-order mark); msg (may be NULL, n bytes)
 * then says what was wrong. */
int k22_exif_orientation(const uint8_t *exif, size_t len, char *msg, size_t n);

#endif
