/* image.c: format detection, the pixel cap, file loading, EXIF orientation and the dispatch to
 * the JPEG, PNG and WebP decoders (image_jpeg.c, image_png.c, image_webp.c). */
#include "image_internal.h"

#include "k22/fsutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void k22_image_opts_default(k22_image_opts *o)
{
    o->max_pixels = K22_IMAGE_MAX_PIXELS_DEFAULT;
    o->exif_transpose = 0;
    o->allow_animated = 1;
}

k22_image_format k22_image_detect(const void *buf, size_t len)
{
    const uint8_t *p = buf;
    if (len >= 3 && p[0] == 0xFF && p[1] == 0xD8 && p[2] == 0xFF) return K22_IMAGE_JPEG;
    if (len >= 8 && !memcmp(p, "\x89PNG\r\n\x1a\n", 8)) return K22_IMAGE_PNG;
    if (len >= 12 && !memcmp(p, "RIFF", 4) && !memcmp(p + 8, "WEBP", 4)) return K22_IMAGE_WEBP;
    return K22_IMAGE_UNKNOWN;
}

const char *k22_image_format_name(k22_image_format f)
{
    switch (f) {
    case K22_IMAGE_JPEG: return "JPEG";
    case K22_IMAGE_PNG: return "PNG";
    case K22_IMAGE_WEBP: return "WebP";
    default: return "unknown";
    }
}

void k22_image_free(k22_image *im)
{
    if (!im) return;
    free(im->rgb);
    memset(im, 0, sizeof *im);
}

k22_status k22_image_check_size(k22_image_ctx *c, int64_t w, int64_t h, k22_err *err)
{
    if (w <= 0 || h <= 0)
        return k22_err_set(err, K22_ERR_FORMAT, "%s: image size %lldx%lld is empty", c->name,
                           (long long)w, (long long)h);
    if (w > c->opts->max_pixels || h > c->opts->max_pixels / w)
        return k22_err_set(err, K22_ERR_UNSUPPORTED,
                           "%s: image is %lldx%lld pixels, above the cap of %lld pixels", c->name,
                           (long long)w, (long long)h, (long long)c->opts->max_pixels);
    return K22_OK;
}

k22_status k22_image_alloc(k22_image_ctx *c, int64_t w, int64_t h, k22_image *out, k22_err *err)
{
    k22_status st = k22_image_check_size(c, w, h, err);
    if (st) return st;
    size_t n;
    if (k22_mul_size((size_t)w * (size_t)h, 3, &n))
        return k22_err_set(err, K22_ERR_NOMEM, "%s: pixel buffer size overflows", c->name);
    out->rgb = malloc(n);
    if (!out->rgb)
        return k22_err_set(err, K22_ERR_NOMEM, "%s: cannot allocate %zu bytes of pixels", c->name,
                           n);
    out->width = (int)w;
    out->height = (int)h;
    return K22_OK;
}

void k22_image_note_exif(k22_image_ctx *c, const uint8_t *exif, size_t len, k22_image *out)
{
    char msg[160];
    int o = k22_exif_orientation(exif, len, msg, sizeof msg);
    if (o < 0) {
        if (!c->exif_bad[0]) snprintf(c->exif_bad, sizeof c->exif_bad, "%s", msg);
        return;
    }
    if (o > 0 && out->exif_orientation == 0) out->exif_orientation = o;
}

/* Copies the pixel at (x, y) of src (w x h) to position (u, v) of dst (dw wide). */
static void orient_put(uint8_t *dst, int dw, int u, int v, const uint8_t *src, int w, int x, int y)
{
    memcpy(dst + ((size_t)v * dw + u) * 3, src + ((size_t)y * w + x) * 3, 3);
}

void k22_image_orient(k22_image *im, int orientation)
{
    if (orientation < 2 || orientation > 8 || !im->rgb) return;
    int w = im->width, h = im->height;
    int swap = orientation >= 5;
    int dw = swap ? h : w, dh = swap ? w : h;
    uint8_t *dst = k22_xmalloc((size_t)w * h * 3);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            int u = x, v = y;
            switch (orientation) {
            case 2: u = w - 1 - x; break;                      /* mirror left-right */
            case 3: u = w - 1 - x; v = h - 1 - y; break;       /* rotate 180 */
            case 4: v = h - 1 - y; break;                      /* mirror top-bottom */
            case 5: u = y; v = x; break;                       /* transpose */
            case 6: u = h - 1 - y; v = x; break;               /* rotate 90 clockwise */
            case 7: u = h - 1 - y; v = w - 1 - x; break;       /* transverse */
            case 8: u = y; v = w - 1 - x; break;               /* rotate 90 counter-clockwise */
            }
            orient_put(dst, dw, u, v, im->rgb, w, x, y);
        }
    free(im->rgb);
    im->rgb = dst;
    im->width = dw;
    im->height = dh;
}

k22_status k22_image_decode(const void *buf, size_t len, const char *name, const k22_image_opts *o,
                            k22_image *out, k22_err *err)
{
    k22_image_opts defaults;
    if (!o) {
        k22_image_opts_default(&defaults);
        o = &defaults;
    }
    memset(out, 0, sizeof *out);
    k22_image_ctx c = {.name = name ? name : "(buffer)", .opts = o};
    if (len == 0) return k22_err_set(err, K22_ERR_FORMAT, "%s: file is empty", c.name);
    k22_image_format f = k22_image_detect(buf, len);
    k22_status st;
    switch (f) {
    case K22_IMAGE_JPEG: st = k22_image_decode_jpeg(buf, len, &c, out, err); break;
    case K22_IMAGE_PNG: st = k22_image_decode_png(buf, len, &c, out, err); break;
    case K22_IMAGE_WEBP: st = k22_image_decode_webp(buf, len, &c, out, err); break;
    default: {
        const uint8_t *p = buf;
        return k22_err_set(err, K22_ERR_FORMAT,
                           "%s: not a JPEG, PNG or WebP file (first bytes %02x %02x %02x %02x)",
                           c.name, p[0], len > 1 ? p[1] : 0, len > 2 ? p[2] : 0,
                           len > 3 ? p[3] : 0);
    }
    }
    if (st) {
        k22_image_free(out);
        return st;
    }
    out->format = f;
    if (o->exif_transpose) {
        /* Transposing needs a trustworthy orientation: a malformed EXIF block is an error. */
        if (c.exif_bad[0]) {
            k22_image_free(out);
            return k22_err_set(err, K22_ERR_FORMAT, "%s: %s", c.name, c.exif_bad);
        }
        k22_image_orient(out, out->exif_orientation);
    }
    return K22_OK;
}

k22_status k22_image_load(const char *path, const k22_image_opts *o, k22_image *out, k22_err *err)
{
    memset(out, 0, sizeof *out);
    char *buf = NULL;
    size_t len = 0;
    k22_status st = k22_fs_read_all(path, K22_IMAGE_MAX_FILE_BYTES, &buf, &len, err);
    if (st) return st;
    st = k22_image_decode(buf, len, path, o, out, err);
    free(buf);
    return st;
}
