/* image_png.c: PNG through libpng, reduced to 8-bit RGB the way Pillow does it: palettes
 * expanded, alpha and tRNS dropped, 1/2/4-bit grey scaled to 0..255, 16-bit samples of RGB,
 * RGBA and grey+alpha cut to their high byte, and 16-bit grey (Pillow mode I;16) clipped to
 * 255. No gamma or colour-profile correction, as in Pillow. libpng errors come back through
 * setjmp; reads past the end of the buffer are errors. */
#include "image_internal.h"

#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const uint8_t *buf;
    size_t len, pos;
    const char *name;
    char msg[300];
} png_src;

static void png_on_read(png_structp png, png_bytep dst, size_t n)
{
    png_src *s = png_get_io_ptr(png);
    if (n > s->len - s->pos) {
        snprintf(s->msg, sizeof s->msg, "PNG data ends early (wanted %zu bytes at offset %zu, file has %zu)",
                 n, s->pos, s->len);
        png_error(png, "truncated");
    }
    memcpy(dst, s->buf + s->pos, n);
    s->pos += n;
}

static void png_on_error(png_structp png, png_const_charp msg)
{
    png_src *s = png_get_error_ptr(png);
    if (!s->msg[0]) snprintf(s->msg, sizeof s->msg, "PNG: %s", msg);
    png_longjmp(png, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg;
}

/* One decoded row (ch channels of bits 8 or 16) to RGB; grey16 says the file is 16-bit grey
 * without alpha (Pillow I;16, clipped), otherwise 16-bit samples keep their high byte. */
static void png_row_to_rgb(const uint8_t *src, int ch, int bits, int grey16, int w, uint8_t *dst)
{
    int bps = bits / 8;
    for (int x = 0; x < w; x++, dst += 3) {
        const uint8_t *s = src + (size_t)x * ch * bps;
        uint8_t v[3];
        int nc = ch >= 3 ? 3 : 1;
        for (int i = 0; i < nc; i++) {
            if (bps == 1)
                v[i] = s[i];
            else if (grey16) {
                unsigned u = (unsigned)s[2 * i] << 8 | s[2 * i + 1];
                v[i] = (uint8_t)(u > 255 ? 255 : u);
            } else
                v[i] = s[2 * i];
        }
        if (nc == 1) v[1] = v[2] = v[0];
        memcpy(dst, v, 3);
    }
}

static void png_find_exif(png_structp png, png_infop info, k22_image_ctx *c, k22_image *out)
{
    png_uint_32 n = 0;
    png_bytep exif = NULL;
    if (png_get_eXIf_1(png, info, &n, &exif) && exif && n > 0) k22_image_note_exif(c, exif, n, out);
}

k22_status k22_image_decode_png(const uint8_t *buf, size_t len, k22_image_ctx *c, k22_image *out,
                                k22_err *err)
{
    png_src src = {.buf = buf, .len = len, .name = c->name};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, png_on_error,
                                             png_on_warning);
    if (!png) return k22_err_set(err, K22_ERR_NOMEM, "%s: cannot create a PNG reader", c->name);
    png_infop info = png_create_info_struct(png);
    uint8_t *volatile rows = NULL;
    volatile k22_status st = K22_OK;
    if (!info) {
        st = k22_err_set(err, K22_ERR_NOMEM, "%s: cannot create a PNG reader", c->name);
        goto out;
    }
    if (setjmp(png_jmpbuf(png))) {
        st = k22_err_set(err, K22_ERR_FORMAT, "%s: %s", c->name,
                         src.msg[0] ? src.msg : "PNG: corrupt data");
        goto out;
    }
    png_set_read_fn(png, &src, png_on_read);
    png_set_user_limits(png, 0x7fffffff, 0x7fffffff); /* our own cap is checked below */
    png_read_info(png, info);
    png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    int color = png_get_color_type(png, info), bits = png_get_bit_depth(png, info);
    st = k22_image_check_size(c, w, h, err);
    if (st) goto out;
    out->src_bits = bits;
    out->src_channels = color == PNG_COLOR_TYPE_GRAY ? 1 : color == PNG_COLOR_TYPE_GRAY_ALPHA ? 2
                      : color == PNG_COLOR_TYPE_RGB_ALPHA ? 4 : 3;
    out->frames = 1;
    png_find_exif(png, info, c, out);
    if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (color == PNG_COLOR_TYPE_GRAY && bits < 8) png_set_expand_gray_1_2_4_to_8(png);
    int passes = png_set_interlace_handling(png);
    png_read_update_info(png, info);
    int ch = png_get_channels(png, info), obits = png_get_bit_depth(png, info);
    size_t rowbytes = png_get_rowbytes(png, info);
    if ((obits != 8 && obits != 16) || ch < 1 || ch > 4 ||
        rowbytes < (size_t)w * ch * (obits / 8)) {
        st = k22_err_set(err, K22_ERR_UNSUPPORTED, "%s: PNG layout %d channels x %d bits", c->name,
                         ch, obits);
        goto out;
    }
    st = k22_image_alloc(c, w, h, out, err);
    if (st) goto out;
    /* Interlaced files fill each row over several passes, so they need every row at once. */
    size_t nrows = passes > 1 ? h : 1, total;
    if (k22_mul_size(rowbytes, nrows, &total) || !(rows = malloc(total))) {
        st = k22_err_set(err, K22_ERR_NOMEM, "%s: cannot allocate PNG rows", c->name);
        goto out;
    }
    for (int p = 0; p < passes; p++)
        for (png_uint_32 y = 0; y < h; y++) {
            uint8_t *r = rows + (passes > 1 ? (size_t)y * rowbytes : 0);
            png_read_row(png, r, NULL);
            if (p == passes - 1)
                png_row_to_rgb(r, ch, obits, color == PNG_COLOR_TYPE_GRAY && bits == 16, (int)w,
                               out->rgb + (size_t)y * w * 3);
        }
out:
    png_destroy_read_struct(&png, info ? &info : NULL, NULL);
    free(rows);
    return st;
}
