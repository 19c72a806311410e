/* ref_resize.c: nearest resize (F.interpolate mode="nearest"), shared by both CPU modes: pure
 * data movement, one pass over the output, so a separate fast version would gain nothing. */
#include <math.h>

#include "cpu_ops.h"

/* torch's source index: floor(i * scale) in f32 with scale = in / out also in f32, clamped to
 * in - 1. That f32 rounding differs from the exact floor(i * in / out) for some ratios (6 -> 74
 * picks row 2 at i = 37 where the exact rule picks 3); it agrees for the integer upsampling
 * ratios MoVQ uses, and matching torch everywhere costs nothing. */
int k22_resize_nearest_src(int i, int in, int out)
{
    if (in == out) return i;
    float scale = (float)in / (float)out;
    int s = (int)floorf((float)i * scale);
    return s < in - 1 ? s : in - 1;
}

void k22_ref_resize_nearest_fwd(void *ctx, float *y, const float *x, int B, int C, int H, int W,
                                int OH, int OW)
{
    (void)ctx;
    int64_t planes = (int64_t)B * C;
    for (int64_t p = 0; p < planes; p++) {
        const float *xp = x + p * H * W;
        float *yp = y + p * OH * OW;
        for (int i = 0; i < OH; i++) {
            const float *row = xp + (int64_t)k22_resize_nearest_src(i, H, OH) * W;
            for (int j = 0; j < OW; j++) yp[(int64_t)i * OW + j] = row[k22_resize_nearest_src(j, W, OW)];
        }
    }
}
