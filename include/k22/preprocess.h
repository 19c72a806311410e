/* preprocess.h: the two image transforms of the reference scripts, on 8-bit RGB images.
 *  - CLIP: CLIPImageProcessor as transformers 5 runs it (its torchvision backend): shortest edge
 *    to 224 with torch's uint8 antialiased bicubic, centre crop 224, then (x - 255 mean) /
 *    (255 std) in float32. Output (3, 224, 224).
 *  - decoder: the decoder script's transform: centre crop to the short side (PIL crop box
 *    rounding), PIL resize to res x res with BICUBIC and reducing_gap=1, x / 127.5 - 1.
 *    Output (3, res, res).
 * The resamplers underneath (resample.c) reproduce Pillow's and torch's fixed-point bicubic
 * filters bit for bit. */
#ifndef K22_PREPROCESS_H
#define K22_PREPROCESS_H

#include "k22/image.h"

/* Which fixed-point convention the bicubic filter rounds with: Pillow (Resample.c, 22
 * fractional bits) or torch's uint8 antialiased interpolate (int16 weights, as many fractional
 * bits as the largest weight allows). The float weights are the same. */
typedef enum { K22_RESAMPLE_PIL = 0, K22_RESAMPLE_TORCH } k22_resample_kind;

/* Bicubic (a = -0.5, support scaled by the downscale factor) resize of the region box
 * (x0, y0, x1, y1, in source pixels, fractions allowed; rounded to float as Pillow parses it)
 * of src (sh, sw, 3) into dst (dh, dw, 3): two passes, each rounded to uint8, in the order
 * the chosen library uses (torch: horizontal first; Pillow 13: vertical first when the height
 * shrinks by more than twice as many pixels as the width), a pass skipped when its size and
 * box are unchanged. */
void k22_resample_bicubic(const uint8_t *src, int sw, int sh, const double box[4], uint8_t *dst,
                          int dw, int dh, k22_resample_kind kind);
/* Pillow's Image.reduce((fx, fy), box): each output pixel is the rounded mean of an fx x fy
 * block of the integer box (x0, y0, x1, y1); the last column and row take partial blocks.
 * dst is (ceil((y1-y0)/fy), ceil((x1-x0)/fx), 3). */
void k22_resample_reduce(const uint8_t *src, int sw, int sh, const int box[4], int fx, int fy,
                         uint8_t *dst);
/* Pillow's Image.resize((dw, dh), BICUBIC, box=(0, 0, sw, sh), reducing_gap=gap) for an RGB
 * image; gap <= 0 means None (no reduce step). dst is (dh, dw, 3). */
void k22_resize_pil_bicubic(const uint8_t *src, int sw, int sh, uint8_t *dst, int dw, int dh,
                            double reducing_gap);

/* The image-processor settings k22 init writes (image_processor/preprocessor_config.json). */
typedef struct {
    int shortest_edge;      /* 224 */
    int crop_h, crop_w;     /* 224, 224 */
    double rescale_factor;  /* 1/255 */
    double mean[3], std[3]; /* OPENAI_CLIP_MEAN, OPENAI_CLIP_STD */
} k22_clip_image_cfg;

void k22_clip_image_cfg_default(k22_clip_image_cfg *c);

/* The size CLIPImageProcessor resizes a w x h image to (shortest edge rule, long side
 * truncated: int(edge * long / short)). */
void k22_clip_resize_size(int w, int h, int edge, int *nw, int *nh);

/* out: (3, crop_h, crop_w) float32. Errors: an empty image or bad settings (K22_ERR_ARG). */
k22_status k22_preprocess_clip(const k22_image *im, const k22_clip_image_cfg *cfg, float *out,
                               k22_err *err);
/* The same, stopping before normalization: rgb (crop_h, crop_w, 3) uint8. */
k22_status k22_preprocess_clip_u8(const k22_image *im, const k22_clip_image_cfg *cfg, uint8_t *rgb,
                                  k22_err *err);

/* out: (3, res, res) float32 in [-1, 1]. */
k22_status k22_preprocess_decoder(const k22_image *im, int res, float *out, k22_err *err);
/* The same before scaling: rgb (res, res, 3) uint8. */
k22_status k22_preprocess_decoder_u8(const k22_image *im, int res, uint8_t *rgb, k22_err *err);

#endif
