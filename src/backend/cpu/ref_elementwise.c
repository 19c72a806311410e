/* ref_elementwise.c: plain-loop add, mul, scale, concat, permute and nearest 2x upsample with
 * their backward passes. Fast mode shares concat and permute (pure data movement). */
#include <string.h>

#include "cpu_ops.h"

void k22_ref_add(void *ctx, float *y, const float *a, const float *b, int64_t n)
{
    for (int64_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}

void k22_ref_mul(void *ctx, float *y, const float *a, const float *b, int64_t n)
{
    for (int64_t i = 0; i < n; i++) y[i] = a[i] * b[i];
}

void k22_ref_scale(void *ctx, float *y, const float *a, float s, int64_t n)
{
    for (int64_t i = 0; i < n; i++) y[i] = s * a[i];
}

void k22_ref_add_bwd(void *ctx, float *da, float *db, const float *dy, int64_t n)
{
    for (int64_t i = 0; da && i < n; i++) da[i] += dy[i];
    for (int64_t i = 0; db && i < n; i++) db[i] += dy[i];
}

void k22_ref_mul_bwd(void *ctx, float *da, float *db, const float *dy, const float *a,
                     const float *b, int64_t n)
{
    for (int64_t i = 0; da && i < n; i++) da[i] += dy[i] * b[i];
    for (int64_t i = 0; db && i < n; i++) db[i] += dy[i] * a[i];
}

void k22_ref_scale_bwd(void *ctx, float *da, const float *dy, float s, int64_t n)
{
    for (int64_t i = 0; i < n; i++) da[i] += s * dy[i];
}

void k22_ref_concat_fwd(void *ctx, float *y, const float *a, const float *b, int64_t outer,
                        int64_t na, int64_t nb, int64_t inner)
{
    int64_t ra = na * inner, rb = nb * inner;
    for (int64_t o = 0; o < outer; o++) {
        if (ra) memcpy(y + o * (ra + rb), a + o * ra, sizeof(float) * (size_t)ra);
        if (rb) memcpy(y + o * (ra + rb) + ra, b + o * rb, sizeof(float) * (size_t)rb);
    }
}

void k22_ref_concat_bwd(void *ctx, float *da, float *db, const float *dy, int64_t outer, int64_t na,
                        int64_t nb, int64_t inner)
{
    int64_t ra = na * inner, rb = nb * inner;
    for (int64_t o = 0; o < outer; o++) {
        const float *dyo = dy + o * (ra + rb);
        for (int64_t e = 0; da && e < ra; e++) da[o * ra + e] += dyo[e];
        for (int64_t e = 0; db && e < rb; e++) db[o * rb + e] += dyo[ra + e];
    }
}

/* Output shape os and, per output dim, the stride of the input dim it walks; padded with leading
 * size-1 dims to K22_PERMUTE_DIMS. */
static void ref_permute_geom(int ndim, const int64_t *in_shape, const int *perm,
                             int64_t os[K22_PERMUTE_DIMS], int64_t st[K22_PERMUTE_DIMS])
{
    int64_t is[K22_PERMUTE_DIMS], acc = 1;
    K22_REQUIRE(ndim >= 1 && ndim <= K22_PERMUTE_DIMS);
    for (int i = ndim - 1; i >= 0; i--) {
        is[i] = acc;
        acc *= in_shape[i];
    }
    int pad = K22_PERMUTE_DIMS - ndim;
    for (int i = 0; i < K22_PERMUTE_DIMS; i++) {
        if (i < pad) {
            os[i] = 1;
            st[i] = 0;
        } else {
            int p = perm[i - pad];
            K22_REQUIRE(p >= 0 && p < ndim);
            os[i] = in_shape[p];
            st[i] = is[p];
        }
    }
}

/* bwd = 0: y[out] = x[in]; bwd = 1: x[in] += y[out] (x is dx, y is dy). */
static void ref_permute_walk(float *x, float *y, int ndim, const int64_t *in_shape, const int *perm,
                             int bwd)
{
    int64_t os[K22_PERMUTE_DIMS], st[K22_PERMUTE_DIMS], o = 0;
    ref_permute_geom(ndim, in_shape, perm, os, st);
    for (int64_t i0 = 0; i0 < os[0]; i0++)
        for (int64_t i1 = 0; i1 < os[1]; i1++)
            for (int64_t i2 = 0; i2 < os[2]; i2++)
                for (int64_t i3 = 0; i3 < os[3]; i3++)
                    for (int64_t i4 = 0; i4 < os[4]; i4++, o++) {
                        int64_t in = i0 * st[0] + i1 * st[1] + i2 * st[2] + i3 * st[3] + i4 * st[4];
                        if (bwd)
                            x[in] += y[o];
                        else
                            y[o] = x[in];
                    }
}

void k22_ref_permute_fwd(void *ctx, float *y, const float *x, int ndim, const int64_t *in_shape,
                         const int *perm)
{
    ref_permute_walk((float *)x, y, ndim, in_shape, perm, 0); /* x is only read */
}

void k22_ref_permute_bwd(void *ctx, float *dx, const float *dy, int ndim, const int64_t *in_shape,
                         const int *perm)
{
    ref_permute_walk(dx, (float *)dy, ndim, in_shape, perm, 1); /* dy is only read */
}

void k22_ref_upsample2x_fwd(void *ctx, float *y, const float *x, int B, int C, int H, int W)
{
    int64_t planes = (int64_t)B * C;
    for (int64_t p = 0; p < planes; p++)
        for (int i = 0; i < 2 * H; i++)
            for (int j = 0; j < 2 * W; j++)
                y[(p * 2 * H + i) * 2 * W + j] = x[(p * H + i / 2) * W + j / 2];
}

void k22_ref_upsample2x_bwd(void *ctx, float *dx, const float *dy, int B, int C, int H, int W)
{
    int64_t planes = (int64_t)B * C;
    for (int64_t p = 0; p < planes; p++)
        for (int i = 0; i < H; i++)
            for (int j = 0; j < W; j++) {
                const float *d0 = dy + (p * 2 * H + 2 * i) * 2 * W + 2 * j;
                dx[(p * H + i) * W + j] +=
                    (float)((double)d0[0] + d0[1] + d0[2 * W] + d0[2 * W + 1]);
            }
}
