/* test_ops_resize.c: resize_nearest_fwd (F.interpolate mode="nearest") on both CPU modes:
 * every output value against the rule written out here (source floor(i * f32(in/out)) in f32,
 * clamped), plus index tables that torch 2.15 printed for ratios where the f32 rule and the
 * exact integer rule disagree (6 -> 74 rows, 14 -> 46 columns), and MoVQ's power-of-2 ratios. */
#include "harness/harness.h"
#include "k22/k22.h"
#include "k22/ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* torch.nn.functional.interpolate(arange(H*W).view(1,1,H,W), size=(OH,OW), mode="nearest"):
 * the source row of each output row and the source column of each output column. */
static const int torch_rows_6_74[74] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 5, 5,
    5, 5, 5, 5, 5, 5, 5, 5, 5, 5};
static const int torch_cols_14_46[46] = {
    0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 8, 8, 8, 9,
    9, 9, 10, 10, 10, 10, 11, 11, 11, 12, 12, 12, 13, 13, 13};
static const int torch_rows_5_3[3] = {0, 1, 3};
static const int torch_cols_3_7[7] = {0, 0, 0, 1, 1, 2, 2};

/* The rule, written independently of the backend: float math as torch's nearest_idx. */
static int src_of(int i, int in, int out)
{
    if (in == out) return i;
    float s = (float)in / (float)out;
    int k = (int)floorf((float)i * s);
    return k < in - 1 ? k : in - 1;
}

/* Runs the op on (B, C, H, W) distinct values and counts the y that differ from x at (rows[i],
 * cols[j]) (or the rule above when rows/cols are NULL). Values are distinct integers, exact in
 * f32, so equality is the test. */
static int64_t resize_wrong(const k22_backend *be, int B, int C, int H, int W, int OH, int OW,
                        const int *rows, const int *cols)
{
    size_t nx = (size_t)B * C * H * W, ny = (size_t)B * C * OH * OW;
    float *xh = k22_xmalloc(nx * sizeof(float)), *yh = k22_xmalloc(ny * sizeof(float));
    for (size_t i = 0; i < nx; i++) xh[i] = (float)i;
    float *x = be->alloc(be->ctx, nx * sizeof(float)), *y = be->alloc(be->ctx, ny * sizeof(float));
    be->to_device(be->ctx, x, xh, nx * sizeof(float));
    be->resize_nearest_fwd(be->ctx, y, x, B, C, H, W, OH, OW);
    be->to_host(be->ctx, yh, y, ny * sizeof(float));
    int64_t bad = 0;
    for (int p = 0; p < B * C; p++)
        for (int i = 0; i < OH; i++)
            for (int j = 0; j < OW; j++) {
                int r = rows ? rows[i] : src_of(i, H, OH), c = cols ? cols[j] : src_of(j, W, OW);
                float want = xh[((size_t)p * H + r) * W + c];
                bad += yh[((size_t)p * OH + i) * OW + j] != want;
            }
    printf("%-8s resize (%d,%d,%d,%d) -> (%d,%d)%s: %lld wrong of %zu\n", be->name, B, C, H, W,
           OH, OW, rows ? " vs torch table" : "", (long long)bad, ny);
    be->free(be->ctx, x), be->free(be->ctx, y);
    free(xh), free(yh);
    return bad;
}

static void resize_case(const k22_backend *be, int B, int C, int H, int W, int OH, int OW,
                        const int *rows, const int *cols)
{
    int64_t bad = resize_wrong(be, B, C, H, W, OH, OW, rows, cols);
    CHECK_MSG(bad == 0, "%s resize (%d,%d,%d,%d) -> (%d,%d): %lld wrong values", be->name, B, C,
              H, W, OH, OW, (long long)bad);
}

int main(void)
{
    /* The rule itself against torch's table and against the exact rule it must differ from. */
    int diff = 0;
    for (int i = 0; i < 74; i++) {
        CHECK(src_of(i, 6, 74) == torch_rows_6_74[i]);
        diff += (i * 6) / 74 != torch_rows_6_74[i];
    }
    for (int j = 0; j < 46; j++) CHECK(src_of(j, 14, 46) == torch_cols_14_46[j]);
    CHECK_MSG(diff == 1, "6 -> 74 should differ from the exact rule at one row, %d", diff);
    for (int ref = 1; ref >= 0; ref--) {
        k22_backend *be = k22_backend_cpu_new(ref);
        CHECK(be->resize_nearest_fwd != NULL);
        resize_case(be, 2, 3, 6, 14, 74, 46, torch_rows_6_74, torch_cols_14_46);
        resize_case(be, 1, 2, 5, 3, 3, 7, torch_rows_5_3, torch_cols_3_7);
        resize_case(be, 2, 4, 4, 4, 32, 32, NULL, NULL);  /* MoVQ: latent to 8x */
        resize_case(be, 2, 4, 3, 5, 12, 20, NULL, NULL);  /* non-square 4x */
        resize_case(be, 1, 3, 7, 5, 7, 5, NULL, NULL);    /* identity */
        resize_case(be, 1, 1, 9, 8, 4, 3, NULL, NULL);    /* downsampling, non-integer */
        k22_backend_free(be);
    }
    /* Canary: a table with one wrong source row must be caught. */
    int rows[3] = {0, 1, 2};
    k22_backend *be = k22_backend_cpu_new(1);
    CHECK_MSG(resize_wrong(be, 1, 2, 5, 3, 3, 7, rows, torch_cols_3_7) > 0,
              "canary: a wrong source row went unnoticed");
    k22_backend_free(be);
    return k22_test_finish("test_ops_resize");
}
