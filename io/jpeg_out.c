/* jpeg_out.c: baseline JPEG encoding into memory with libjpeg's jpeg_mem_dest. */
#include "k22/image_out.h"

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>

#include <jpeglib.h>

typedef struct {
    struct jpeg_error_mgr mgr;
    jmp_buf jb;
} jpeg_out_err;

static void jpeg_out_error_exit(j_common_ptr c)
{
    jpeg_out_err *e = (jpeg_out_err *)c->err;
    longjmp(e->jb, 1);
}

k22_status k22_jpeg_encode(const uint8_t *rgb, int width, int height, int quality, uint8_t **out,
                           size_t *len, k22_err *err)
{
    *out = NULL;
    *len = 0;
    if (width <= 0 || height <= 0 || width > 65500 || height > 65500 || quality < 1 ||
        quality > 100)
        return k22_err_set(err, K22_ERR_ARG, "jpeg: bad size %dx%d or quality %d", width, height,
                           quality);
    struct jpeg_compress_struct c;
    jpeg_out_err je;
    unsigned char *buf = NULL;
    unsigned long n = 0;
    c.err = jpeg_std_error(&je.mgr);
    je.mgr.error_exit = jpeg_out_error_exit;
    if (setjmp(je.jb)) {
        /* libjpeg only encodes from memory here, so this needs a library bug; the mem
         * destination's buffer is then libjpeg's to lose. */
        jpeg_destroy_compress(&c);
        return k22_err_set(err, K22_ERR_INTERNAL, "jpeg: libjpeg failed while encoding %dx%d",
                           width, height);
    }
    jpeg_create_compress(&c);
    jpeg_mem_dest(&c, &buf, &n);
    c.image_width = (JDIMENSION)width;
    c.image_height = (JDIMENSION)height;
    c.input_components = 3;
    c.in_color_space = JCS_RGB;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, quality, TRUE);
    jpeg_start_compress(&c, TRUE);
    while (c.next_scanline < c.image_height) {
        JSAMPROW row = (JSAMPROW)(rgb + (size_t)c.next_scanline * (size_t)width * 3);
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    *out = buf;
    *len = n;
    return K22_OK;
}
