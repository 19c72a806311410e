/* png_out.c: PNG encoding into a growing memory buffer through libpng's write callbacks. */
#include "k22/image_out.h"

#include <png.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    uint8_t *buf;
    size_t len, cap;
    int oom;
} png_sink;

static void png_sink_write(png_structp png, png_bytep data, png_size_t n)
{
    png_sink *s = png_get_io_ptr(png);
    if (s->oom) return;
    if (s->len + n > s->cap) {
        size_t cap = s->cap ? s->cap : 65536;
        while (cap < s->len + n) cap *= 2;
        uint8_t *nb = realloc(s->buf, cap);
        if (!nb) {
            s->oom = 1;
            return;
        }
        s->buf = nb;
        s->cap = cap;
    }
    memcpy(s->buf + s->len, data, n);
    s->len += n;
}

static void png_sink_flush(png_structp png) { (void)png; }

k22_status k22_png_encode(const uint8_t *rgb, int width, int height, int level, uint8_t **out,
                          size_t *len, k22_err *err)
{
    *out = NULL;
    *len = 0;
    if (width <= 0 || height <= 0 || width > 65535 || height > 65535 || level < 0 || level > 9)
        return k22_err_set(err, K22_ERR_ARG, "png: bad size %dx%d or level %d", width, height,
                           level);
    png_sink sink = {0};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    k22_status st = K22_OK;
    if (!png || !info) {
        st = k22_err_set(err, K22_ERR_NOMEM, "png: cannot create the libpng writer");
        goto out;
    }
    if (setjmp(png_jmpbuf(png))) {
        st = k22_err_set(err, K22_ERR_INTERNAL, "png: libpng failed while encoding %dx%d", width,
                         height);
        goto out;
    }
    png_set_write_fn(png, &sink, png_sink_write, png_sink_flush);
    png_set_compression_level(png, level);
    png_set_IHDR(png, info, (png_uint_32)width, (png_uint_32)height, 8, PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < height; y++)
        png_write_row(png, (png_const_bytep)(rgb + (size_t)y * (size_t)width * 3));
    png_write_end(png, NULL);
    if (sink.oom) {
        st = k22_err_set(err, K22_ERR_NOMEM, "png: out of memory for %dx%d", width, height);
        goto out;
    }
    *out = sink.buf;
    *len = sink.len;
    sink.buf = NULL;
out:
    png_destroy_write_struct(png ? &png : NULL, info ? &info : NULL);
    free(sink.buf);
    return st;
}
