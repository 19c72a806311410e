/* resample.c: bicubic resizing and box reduction of 8-bit RGB images, bit-exact with Pillow
 * (Resample.c, Reduce.c) and with torch's uint8 antialiased bicubic interpolate (the path
 * CLIPImageProcessor's torchvision backend takes). Both compute the same float weights per
 * output pixel and differ only in how the weights are rounded to integers. */
#include "k22/preprocess.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PIL_PRECISION_BITS (32 - 8 - 2)

/* Keys' cubic with a = -0.5 (Pillow's and torch's antialiased bicubic). */
static double cubic_filter(double x)
{
    const double a = -0.5;
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
    if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
    return 0.0;
}

/* Fixed-point weights for one axis: out pixel i reads bounds[2i] .. bounds[2i] + bounds[2i+1]
 * - 1 of the input with weights k[i * ksize + j] (prec fractional bits). */
typedef struct {
    int ksize, prec;
    int *bounds;
    int32_t *k;
} resample_axis;

static void axis_free(resample_axis *a)
{
    free(a->bounds);
    free(a->k);
}

static void axis_init(resample_axis *a, int in_size, double in0, double in1, int out_size,
                      k22_resample_kind kind)
{
    double scale = (in1 - in0) / out_size, fscale = scale < 1.0 ? 1.0 : scale;
    double support = 2.0 * fscale;
    int ksize = (int)ceil(support) * 2 + 1;
    double *w = k22_xcalloc((size_t)out_size * ksize, sizeof *w);
    a->ksize = ksize;
    a->bounds = k22_xmalloc((size_t)out_size * 2 * sizeof *a->bounds);
    a->k = k22_xcalloc((size_t)out_size * ksize, sizeof *a->k);
    double wmax = 0.0;
    for (int i = 0; i < out_size; i++) {
        double center = in0 + (i + 0.5) * scale, ss = 1.0 / fscale, total = 0.0;
        int xmin = (int)(center - support + 0.5), xmax = (int)(center + support + 0.5);
        if (xmin < 0) xmin = 0;
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        if (xmax > ksize) xmax = ksize; /* cannot happen; keeps the row inside its slot */
        double *wi = w + (size_t)i * ksize;
        for (int j = 0; j < xmax; j++) {
            wi[j] = cubic_filter((j + xmin - center + 0.5) * ss);
            total += wi[j];
        }
        for (int j = 0; j < xmax; j++) {
            if (total != 0.0) wi[j] /= total;
            if (wi[j] > wmax) wmax = wi[j];
        }
        a->bounds[2 * i] = xmin;
        a->bounds[2 * i + 1] = xmax;
    }
    /* torch keeps weights in int16: the most fractional bits for which the largest weight,
     * doubled, stays below 2^15 (the Pillow-SIMD rule). Pillow uses 22 bits in int32. */
    int prec = PIL_PRECISION_BITS;
    if (kind == K22_RESAMPLE_TORCH)
        for (prec = 0; prec < PIL_PRECISION_BITS; prec++)
            if ((int)(0.5 + wmax * (double)(1 << (prec + 1))) >= (1 << 15)) break;
    a->prec = prec;
    for (size_t j = 0; j < (size_t)out_size * ksize; j++) {
        double v = w[j] * (double)(1 << prec);
        a->k[j] = (int32_t)(v < 0 ? v - 0.5 : v + 0.5);
    }
    free(w);
}

static uint8_t clip8(int64_t v, int prec)
{
    v >>= prec;
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* dst (rows, dw, 3) from src rows y0 .. y0 + rows - 1 (sw wide), along x. */
static void pass_horizontal(const uint8_t *src, int sw, int y0, int rows, uint8_t *dst, int dw,
                            const resample_axis *a)
{
    for (int y = 0; y < rows; y++) {
        const uint8_t *s = src + (size_t)(y0 + y) * sw * 3;
        uint8_t *d = dst + (size_t)y * dw * 3;
        for (int x = 0; x < dw; x++) {
            int xmin = a->bounds[2 * x], xn = a->bounds[2 * x + 1];
            const int32_t *k = a->k + (size_t)x * a->ksize;
            for (int c = 0; c < 3; c++) {
                int64_t acc = (int64_t)1 << (a->prec - 1);
                for (int j = 0; j < xn; j++) acc += (int64_t)s[(xmin + j) * 3 + c] * k[j];
                d[x * 3 + c] = clip8(acc, a->prec);
            }
        }
    }
}

/* dst (dh, w, 3) from src (w wide); the axis bounds are relative to row y0 of src. */
static void pass_vertical(const uint8_t *src, int w, int y0, uint8_t *dst, int dh,
                          const resample_axis *a)
{
    size_t stride = (size_t)w * 3;
    for (int y = 0; y < dh; y++) {
        int ymin = a->bounds[2 * y] - y0, yn = a->bounds[2 * y + 1];
        const int32_t *k = a->k + (size_t)y * a->ksize;
        for (size_t i = 0; i < stride; i++) {
            int64_t acc = (int64_t)1 << (a->prec - 1);
            for (int j = 0; j < yn; j++) acc += (int64_t)src[(size_t)(ymin + j) * stride + i] * k[j];
            dst[(size_t)y * stride + i] = clip8(acc, a->prec);
        }
    }
}

void k22_resample_bicubic(const uint8_t *src, int sw, int sh, const double box_in[4], uint8_t *dst,
                          int dw, int dh, k22_resample_kind kind)
{
    /* Pillow takes the box as C floats: 224/3 becomes 74.66666412, which moves some weights. */
    double box[4];
    for (int i = 0; i < 4; i++) box[i] = (float)box_in[i];
    int need_h = dw != sw || box[0] != 0.0 || box[2] != (double)sw;
    int need_v = dh != sh || box[1] != 0.0 || box[3] != (double)sh;
    if (!need_h && !need_v) {
        memcpy(dst, src, (size_t)sw * sh * 3);
        return;
    }
    resample_axis ah = {0}, av = {0};
    uint8_t *tmp = NULL;
    axis_init(&av, sh, box[1], box[3], dh, kind);
    /* Pillow 13 runs the vertical pass first when the height shrinks, and by more than twice
     * the pixels the width shrinks (its ImagingResample: in_h > out_h and in_h - out_h >
     * 2 (in_w - out_w)); the order changes the uint8 rounding in between. torch never does. */
    if (kind == K22_RESAMPLE_PIL && need_h && need_v && sh > dh && sh - dh > 2 * (sw - dw)) {
        axis_init(&ah, sw, box[0], box[2], dw, kind);
        tmp = k22_xmalloc((size_t)dh * sw * 3);
        pass_vertical(src, sw, 0, tmp, dh, &av);
        pass_horizontal(tmp, sw, 0, dh, dst, dw, &ah);
        goto out;
    }
    /* Only the source rows the vertical pass reads go through the horizontal pass. */
    int y_first = av.bounds[0], y_last = av.bounds[2 * dh - 2] + av.bounds[2 * dh - 1];
    const uint8_t *cur = src;
    int cur_w = sw, cur_y0 = 0;
    if (need_h) {
        axis_init(&ah, sw, box[0], box[2], dw, kind);
        int rows = need_v ? y_last - y_first : dh;
        int first = need_v ? y_first : 0;
        uint8_t *target = need_v ? (tmp = k22_xmalloc((size_t)rows * dw * 3 + 1)) : dst;
        pass_horizontal(src, sw, first, rows, target, dw, &ah);
        cur = target;
        cur_w = dw;
        cur_y0 = first;
    }
    if (need_v) pass_vertical(cur, cur_w, cur_y0, dst, dh, &av);
out:
    free(tmp);
    axis_free(&ah);
    axis_free(&av);
}

/* Pillow's reciprocal for a block of n pixels: 2^32 / (256 n), computed in float. */
static uint32_t reduce_multiplier(int n)
{
    float max_int = (float)((1 << 30) * 4.0);
    return (uint32_t)(max_int / (float)((uint32_t)(1 << 8) * (uint32_t)n));
}

void k22_resample_reduce(const uint8_t *src, int sw, int sh, const int box[4], int fx, int fy,
                         uint8_t *dst)
{
    (void)sh;
    int bw = box[2] - box[0], bh = box[3] - box[1];
    int ow = (bw + fx - 1) / fx, oh = (bh + fy - 1) / fy;
    for (int oy = 0; oy < oh; oy++) {
        int y0 = box[1] + oy * fy, ny = fy;
        if (oy * fy + ny > bh) ny = bh - oy * fy;
        for (int ox = 0; ox < ow; ox++) {
            int x0 = box[0] + ox * fx, nx = fx;
            if (ox * fx + nx > bw) nx = bw - ox * fx;
            uint32_t mult = reduce_multiplier(nx * ny), amend = (uint32_t)(nx * ny) / 2;
            for (int c = 0; c < 3; c++) {
                uint32_t ss = 0;
                for (int y = 0; y < ny; y++)
                    for (int x = 0; x < nx; x++) ss += src[((size_t)(y0 + y) * sw + x0 + x) * 3 + c];
                dst[((size_t)oy * ow + ox) * 3 + c] =
                    (uint8_t)(((uint64_t)(ss + amend) * mult) >> 24);
            }
        }
    }
}

void k22_resize_pil_bicubic(const uint8_t *src, int sw, int sh, uint8_t *dst, int dw, int dh,
                            double reducing_gap)
{
    double box[4] = {0, 0, sw, sh};
    if (sw == dw && sh == dh) {
        memcpy(dst, src, (size_t)sw * sh * 3);
        return;
    }
    uint8_t *red = NULL;
    int fx = 1, fy = 1;
    if (reducing_gap > 0) {
        fx = (int)((double)sw / dw / reducing_gap);
        fy = (int)((double)sh / dh / reducing_gap);
        if (fx < 1) fx = 1;
        if (fy < 1) fy = 1;
    }
    if (fx > 1 || fy > 1) {
        /* Pillow widens the reduced region by the filter's reach (support 2 - 0.5, scaled). */
        double sx = 1.5 * ((double)sw / dw), sy = 1.5 * ((double)sh / dh);
        int rb[4] = {(int)(0 - sx), (int)(0 - sy), (int)ceil(sw + sx), (int)ceil(sh + sy)};
        if (rb[0] < 0) rb[0] = 0;
        if (rb[1] < 0) rb[1] = 0;
        if (rb[2] > sw) rb[2] = sw;
        if (rb[3] > sh) rb[3] = sh;
        int rw = (rb[2] - rb[0] + fx - 1) / fx, rh = (rb[3] - rb[1] + fy - 1) / fy;
        red = k22_xmalloc((size_t)rw * rh * 3);
        k22_resample_reduce(src, sw, sh, rb, fx, fy, red);
        box[0] = (0 - rb[0]) / (double)fx;
        box[1] = (0 - rb[1]) / (double)fy;
        box[2] = (sw - rb[0]) / (double)fx;
        box[3] = (sh - rb[1]) / (double)fy;
        src = red;
        sw = rw;
        sh = rh;
    }
    k22_resample_bicubic(src, sw, sh, box, dst, dw, dh, K22_RESAMPLE_PIL);
    free(red);
}
