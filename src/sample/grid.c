/* grid.c: tiling sampled images into one PNG (k22 sample, validation grids). */
#include "k22/sample.h"

#include "k22/fsutil.h"
#include "k22/image_out.h"

#include <stdlib.h>
#include <string.h>

k22_status k22_sample_grid_png(const char *path, const uint8_t *rgb, int n, int h, int w, int cols,
                               k22_err *err)
{
    if (n < 1 || h < 1 || w < 1 || cols < 1)
        return k22_err_set(err, K22_ERR_ARG, "%s: grid of %d images of %d x %d in %d columns", path, n, h, w, cols);
    if (cols > n) cols = n;
    int rows = (n + cols - 1) / cols;
    size_t gw, gh, bytes;
    if (k22_mul_size((size_t)cols, (size_t)w, &gw) || k22_mul_size((size_t)rows, (size_t)h, &gh) ||
        gw > 65535 || gh > 65535 || k22_mul_size(gw * gh, 3, &bytes))
        return k22_err_set(err, K22_ERR_ARG, "%s: a grid of %d x %d images of %d x %d is over 65535 pixels a side",
                           path, rows, cols, h, w);
    uint8_t *grid = k22_xcalloc(bytes, 1), *png = NULL;
    size_t row_bytes = (size_t)w * 3, len = 0;
    for (int i = 0; i < n; i++) {
        size_t x0 = (size_t)(i % cols) * (size_t)w, y0 = (size_t)(i / cols) * (size_t)h;
        const uint8_t *src = rgb + (size_t)i * (size_t)h * row_bytes;
        for (int y = 0; y < h; y++)
            memcpy(grid + ((y0 + (size_t)y) * gw + x0) * 3, src + (size_t)y * row_bytes, row_bytes);
    }
    k22_status st = k22_png_encode(grid, (int)gw, (int)gh, 6, &png, &len, err);
    if (!st) st = k22_fs_write_atomic(path, png, len, err);
    free(grid);
    free(png);
    return st;
}
