/* preprocess.c: the CLIP image-processor transform and the decoder script's transform, from a
 * decoded RGB image to the float tensors the frozen encoders and the decoder UNet take. */
#include "k22/preprocess.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void k22_clip_image_cfg_default(k22_clip_image_cfg *c)
{
    c->shortest_edge = 224;
    c->crop_h = c->crop_w = 224;
    c->rescale_factor = 0.00392156862745098;
    const double mean[3] = {0.48145466, 0.4578275, 0.40821073};
    const double std[3] = {0.26862954, 0.26130258, 0.27577711};
    memcpy(c->mean, mean, sizeof mean);
    memcpy(c->std, std, sizeof std);
}

void k22_clip_resize_size(int w, int h, int edge, int *nw, int *nh)
{
    int shrt = w <= h ? w : h, lng = w <= h ? h : w;
    int nl = (int)((double)edge * (double)lng / (double)shrt);
    *nw = w <= h ? edge : nl;
    *nh = w <= h ? nl : edge;
}

static k22_status check_image(const k22_image *im, k22_err *err)
{
    if (!im || !im->rgb || im->width <= 0 || im->height <= 0)
        return k22_err_set(err, K22_ERR_ARG, "preprocess: empty image");
    return K22_OK;
}

k22_status k22_preprocess_clip_u8(const k22_image *im, const k22_clip_image_cfg *cfg, uint8_t *rgb,
                                  k22_err *err)
{
    k22_status st = check_image(im, err);
    if (st) return st;
    if (cfg->shortest_edge <= 0 || cfg->crop_h <= 0 || cfg->crop_w <= 0)
        return k22_err_set(err, K22_ERR_ARG, "preprocess: bad CLIP sizes %d/%dx%d",
                           cfg->shortest_edge, cfg->crop_h, cfg->crop_w);
    int w = im->width, h = im->height, nw, nh;
    k22_clip_resize_size(w, h, cfg->shortest_edge, &nw, &nh);
    if (nw <= 0 || nh <= 0) return k22_err_set(err, K22_ERR_ARG, "preprocess: resize to %dx%d", nw, nh);
    const uint8_t *r = im->rgb;
    uint8_t *tmp = NULL;
    if (nw != w || nh != h) {
        double box[4] = {0, 0, w, h};
        tmp = k22_xmalloc((size_t)nw * nh * 3);
        k22_resample_bicubic(im->rgb, w, h, box, tmp, nw, nh, K22_RESAMPLE_TORCH);
        r = tmp;
    }
    /* Centre crop; a crop larger than the image is padded with zeros on both sides first. */
    int ch = cfg->crop_h, cw = cfg->crop_w;
    int oy = ch > nh ? -((ch - nh) / 2) : (nh - ch) / 2;
    int ox = cw > nw ? -((cw - nw) / 2) : (nw - cw) / 2;
    for (int y = 0; y < ch; y++)
        for (int x = 0; x < cw; x++) {
            int sy = y + oy, sx = x + ox;
            uint8_t *d = rgb + ((size_t)y * cw + x) * 3;
            if (sy < 0 || sy >= nh || sx < 0 || sx >= nw)
                memset(d, 0, 3);
            else
                memcpy(d, r + ((size_t)sy * nw + sx) * 3, 3);
        }
    free(tmp);
    return K22_OK;
}

k22_status k22_preprocess_clip(const k22_image *im, const k22_clip_image_cfg *cfg, float *out,
                               k22_err *err)
{
    size_t n = (size_t)cfg->crop_h * (cfg->crop_w > 0 ? cfg->crop_w : 0);
    uint8_t *rgb = k22_xmalloc(n * 3 + 1);
    k22_status st = k22_preprocess_clip_u8(im, cfg, rgb, err);
    if (st) goto out;
    /* transformers fuses rescale into normalize: mean and std are float32 tensors multiplied
     * by 1/rescale_factor (in float32), then (x - mean) / std per channel in float32. */
    float scale = (float)(1.0 / cfg->rescale_factor);
    for (int c = 0; c < 3; c++) {
        float m = (float)cfg->mean[c] * scale, s = (float)cfg->std[c] * scale;
        for (size_t i = 0; i < n; i++) {
            float x = (float)rgb[i * 3 + c] - m;
            out[(size_t)c * n + i] = x / s;
        }
    }
out:
    free(rgb);
    return st;
}

k22_status k22_preprocess_decoder_u8(const k22_image *im, int res, uint8_t *rgb, k22_err *err)
{
    k22_status st = check_image(im, err);
    if (st) return st;
    if (res <= 0 || res > 65536) return k22_err_set(err, K22_ERR_ARG, "preprocess: resolution %d", res);
    int w = im->width, h = im->height, s = w < h ? w : h;
    /* PIL crop box ((w-s)/2, (h-s)/2, (w+s)/2, (h+s)/2), each rounded half to even. */
    int x0 = (int)nearbyint((w - s) / 2.0), y0 = (int)nearbyint((h - s) / 2.0);
    int x1 = (int)nearbyint((w + s) / 2.0), y1 = (int)nearbyint((h + s) / 2.0);
    int cw = x1 - x0, ch = y1 - y0;
    uint8_t *crop = k22_xmalloc((size_t)cw * ch * 3);
    for (int y = 0; y < ch; y++)
        memcpy(crop + (size_t)y * cw * 3, im->rgb + ((size_t)(y0 + y) * w + x0) * 3, (size_t)cw * 3);
    k22_resize_pil_bicubic(crop, cw, ch, rgb, res, res, 1.0);
    free(crop);
    return K22_OK;
}

k22_status k22_preprocess_decoder(const k22_image *im, int res, float *out, k22_err *err)
{
    if (res <= 0 || res > 65536) return k22_err_set(err, K22_ERR_ARG, "preprocess: resolution %d", res);
    size_t n = (size_t)res * res;
    uint8_t *rgb = k22_xmalloc(n * 3);
    k22_status st = k22_preprocess_decoder_u8(im, res, rgb, err);
    if (!st)
        for (int c = 0; c < 3; c++)
            for (size_t i = 0; i < n; i++)
                out[(size_t)c * n + i] = (float)rgb[i * 3 + c] / 127.5f - 1.0f;
    free(rgb);
    return st;
}
