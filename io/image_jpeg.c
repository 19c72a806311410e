/* image_jpeg.c: JPEG through libjpeg(-turbo) with the settings Pillow decodes with (accurate
 * integer IDCT, fancy upsampling, no scaling): grey, YCbCr/RGB and CMYK/YCCK files, CMYK
 * converted to RGB with Pillow's formula. libjpeg errors come back through setjmp; a file that
 * ends early is an error, as it is for Pillow. */
#include "image_internal.h"

#include <setjmp.h>
#include <stdio.h>

#include <jerror.h>
#include <jpeglib.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    int truncated;
} jpeg_guard;

static void jpeg_on_error(j_common_ptr ci)
{
    jpeg_guard *g = (jpeg_guard *)ci->err;
    longjmp(g->jump, 1);
}

static void jpeg_on_message(j_common_ptr ci, int level)
{
    jpeg_guard *g = (jpeg_guard *)ci->err;
    /* Premature end of data: libjpeg pads with grey, Pillow refuses the file ("image file is
     * truncated"); other warnings are ignored by both. */
    if (level < 0 && g->pub.msg_code == JWRN_JPEG_EOF) g->truncated = 1;
}

/* Pillow's MULDIV255: a * b / 255 rounded, in integers. */
static unsigned muldiv255(unsigned a, unsigned b)
{
    unsigned t = a * b + 128;
    return (t + (t >> 8)) >> 8;
}

/* One decoded row (ncomp samples per pixel) to RGB. Adobe CMYK files store inverted samples. */
static void jpeg_row_to_rgb(const uint8_t *src, int ncomp, int inverted, int w, uint8_t *dst)
{
    for (int x = 0; x < w; x++, dst += 3) {
        const uint8_t *s = src + (size_t)x * ncomp;
        if (ncomp == 1) {
            dst[0] = dst[1] = dst[2] = s[0];
        } else if (ncomp == 3) {
            memcpy(dst, s, 3);
        } else {
            unsigned c[4];
            for (int i = 0; i < 4; i++) c[i] = inverted ? 255u - s[i] : s[i];
            unsigned nk = 255u - c[3];
            for (int i = 0; i < 3; i++) dst[i] = (uint8_t)(nk - muldiv255(c[i], nk));
        }
    }
}

static void jpeg_find_exif(struct jpeg_decompress_struct *ci, k22_image_ctx *c, k22_image *out)
{
    for (jpeg_saved_marker_ptr m = ci->marker_list; m; m = m->next)
        if (m->marker == JPEG_APP0 + 1 && m->data_length >= 6 && !memcmp(m->data, "Exif\0\0", 6)) {
            k22_image_note_exif(c, m->data, m->data_length, out);
            return;
        }
}

k22_status k22_image_decode_jpeg(const uint8_t *buf, size_t len, k22_image_ctx *c, k22_image *out,
                                 k22_err *err)
{
    struct jpeg_decompress_struct ci;
    jpeg_guard g;
    /* Everything a longjmp may observe after the jump is volatile or set before setjmp. */
    uint8_t *volatile row = NULL;
    volatile k22_status st = K22_OK;
    memset(&ci, 0, sizeof ci);
    ci.err = jpeg_std_error(&g.pub);
    g.pub.error_exit = jpeg_on_error;
    g.pub.emit_message = jpeg_on_message;
    g.truncated = 0;
    if (setjmp(g.jump)) {
        char msg[JMSG_LENGTH_MAX];
        g.pub.format_message((j_common_ptr)&ci, msg);
        st = k22_err_set(err, K22_ERR_FORMAT, "%s: JPEG: %s", c->name, msg);
        goto out;
    }
    jpeg_create_decompress(&ci);
    if (len > (unsigned long)-1) {
        st = k22_err_set(err, K22_ERR_FORMAT, "%s: JPEG file too large", c->name);
        goto out;
    }
    jpeg_mem_src(&ci, buf, (unsigned long)len);
    jpeg_save_markers(&ci, JPEG_APP0 + 1, 0xFFFF);
    jpeg_read_header(&ci, TRUE);
    st = k22_image_check_size(c, ci.image_width, ci.image_height, err);
    if (st) goto out;
    int inverted = 0;
    switch (ci.jpeg_color_space) {
    case JCS_GRAYSCALE: ci.out_color_space = JCS_GRAYSCALE; break;
    case JCS_CMYK:
    case JCS_YCCK:
        ci.out_color_space = JCS_CMYK;
        inverted = ci.saw_Adobe_marker;
        break;
    default: ci.out_color_space = JCS_RGB; break;
    }
    ci.dct_method = JDCT_ISLOW;
    ci.do_fancy_upsampling = TRUE;
    out->src_channels = ci.num_components;
    out->src_bits = 8;
    out->frames = 1;
    jpeg_find_exif(&ci, c, out);
    jpeg_start_decompress(&ci);
    int w = (int)ci.output_width, ncomp = ci.output_components;
    if (ncomp != 1 && ncomp != 3 && ncomp != 4) {
        st = k22_err_set(err, K22_ERR_UNSUPPORTED, "%s: JPEG with %d output components", c->name,
                         ncomp);
        goto out;
    }
    st = k22_image_alloc(c, ci.output_width, ci.output_height, out, err);
    if (st) goto out;
    row = malloc((size_t)w * ncomp);
    if (!row) {
        st = k22_err_set(err, K22_ERR_NOMEM, "%s: cannot allocate a JPEG row", c->name);
        goto out;
    }
    while (ci.output_scanline < ci.output_height) {
        JSAMPROW rows[1] = {row};
        unsigned y = ci.output_scanline;
        if (jpeg_read_scanlines(&ci, rows, 1) != 1) break;
        jpeg_row_to_rgb(row, ncomp, inverted, w, out->rgb + (size_t)y * w * 3);
    }
    if (g.truncated) {
        st = k22_err_set(err, K22_ERR_FORMAT, "%s: JPEG data ends early (file truncated)",
                         c->name);
        goto out;
    }
    jpeg_finish_decompress(&ci);
out:
    jpeg_destroy_decompress(&ci);
    free(row);
    return st;
}
