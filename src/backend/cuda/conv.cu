/* conv.cu: conv2d forward and backward (data, filter, bias) on the CUDA backend. Each direction
 * goes to cuDNN (conv_cudnn.cu) when the context has it and cuDNN takes the shape; otherwise,
 * and under K22_CUDA_CONV=im2col, it runs here as im2col + cuBLASLt GEMM (fp32 compute, no TF32),
 * following the CPU reference's semantics (src/backend/cpu/ref_conv.c): asymmetric padding, any
 * stride, backward accumulates. The bias and its gradient are this file's kernels on both paths.
 *
 * Per sample, the output rows are cut into bands whose column matrix (C*KH*KW, rows*OW) fits
 * ctx->conv_col_floats (128 MiB by default), so memory stays bounded for MoVQ at 768 px.
 * Backward data is the GEMM dcol = W^T dY followed by a gathering col2im (each input value sums
 * its own taps: no atomics, deterministic). 1x1 stride-1 unpadded convolutions skip im2col: the
 * input already is the column matrix.
 *
 * The x16 entries (bf16/fp16 only) take x as 16-bit values of ctx->precision: cuDNN reads them as
 * they are (in place of its rounded copy of x), im2col a float copy (k22_cuda_wide_copy), so both
 * give conv2d_fwd / conv2d_bwd's bits on x16 widened. */
#include "common.cuh"

typedef struct {
    int C, H, W, KH, KW, SH, SW, PT, PL;
    int OW;
    int oy0, P; /* first output row of the band, band positions (rows * OW) */
} k22_col_geom;

/* col[(c*KH + ky)*KW + kx][p] = x[c][oy*SH - PT + ky][ox*SW - PL + kx] (0 outside), with
 * (oy, ox) = (oy0 + p / OW, p % OW). */
__global__ void k22_im2col_kernel(float *col, const float *xb, k22_col_geom g, int64_t n)
{
    K22_GRID_STRIDE(e, n)
    {
        int64_t r = e / g.P;
        int p = (int)(e % g.P);
        int kx = (int)(r % g.KW), ky = (int)((r / g.KW) % g.KH);
        int c = (int)(r / ((int64_t)g.KW * g.KH));
        int oy = g.oy0 + p / g.OW, ox = p % g.OW;
        int iy = oy * g.SH - g.PT + ky, ix = ox * g.SW - g.PL + kx;
        col[e] = (iy >= 0 && iy < g.H && ix >= 0 && ix < g.W)
                     ? xb[((int64_t)c * g.H + iy) * g.W + ix]
                     : 0.0f;
    }
}

/* dx[c][iy][ix] += the taps of dcol that read it within this band: one thread per input value,
 * summing at most KH*KW terms. */
__global__ void k22_col2im_kernel(float *dxb, const float *dcol, k22_col_geom g, int64_t n)
{
    K22_GRID_STRIDE(e, n)
    {
        int ix = (int)(e % g.W), iy = (int)((e / g.W) % g.H);
        int64_t c = e / ((int64_t)g.W * g.H);
        int rows = g.P / g.OW;
        float s = 0.0f;
        for (int ky = 0; ky < g.KH; ky++) {
            int ty = iy + g.PT - ky;
            if (ty < 0 || ty % g.SH) continue;
            int oy = ty / g.SH - g.oy0;
            if (oy < 0 || oy >= rows) continue;
            for (int kx = 0; kx < g.KW; kx++) {
                int tx = ix + g.PL - kx;
                if (tx < 0 || tx % g.SW) continue;
                int ox = tx / g.SW;
                if (ox >= g.OW) continue;
                s += dcol[((c * g.KH + ky) * g.KW + kx) * g.P + (int64_t)oy * g.OW + ox];
            }
        }
        dxb[e] += s;
    }
}

/* y[b][o][p] += bias[o]. */
__global__ void k22_conv_bias_kernel(float *y, const float *bias, int64_t n, int O, int64_t P)
{
    K22_GRID_STRIDE(e, n) y[e] += bias[(e / P) % O];
}

/* One block per output channel: dbias[o] += sum over samples and positions of dy, in double. */
__global__ void k22_conv_dbias_kernel(float *dbias, const float *dy, int B, int O, int64_t P)
{
    __shared__ double sh[K22_CUDA_THREADS];
    int o = blockIdx.x;
    double s = 0;
    for (int64_t j = threadIdx.x; j < (int64_t)B * P; j += blockDim.x)
        s += dy[((j / P) * O + o) * P + j % P];
    s = k22_cuda_block_sum(s, sh);
    if (threadIdx.x == 0) dbias[o] += (float)s;
}

static int k22_conv_is_pointwise(const k22_conv2d_desc *d)
{
    return d->KH == 1 && d->KW == 1 && d->SH == 1 && d->SW == 1 && d->PT == 0 && d->PB == 0 &&
           d->PL == 0 && d->PR == 0;
}

/* Output rows per band. */
static int k22_conv_band_rows(const k22_cuda_ctx *ctx, const k22_conv2d_desc *d, int OH, int OW)
{
    int64_t ckk = (int64_t)d->C * d->KH * d->KW;
    int64_t rows = ctx->conv_col_floats / (ckk * OW > 0 ? ckk * OW : 1);
    if (rows < 1) rows = 1;
    return rows < OH ? (int)rows : OH;
}

static k22_col_geom k22_col_geom_of(const k22_conv2d_desc *d, int OW, int oy0, int rows)
{
    k22_col_geom g;
    g.C = d->C, g.H = d->H, g.W = d->W, g.KH = d->KH, g.KW = d->KW;
    g.SH = d->SH, g.SW = d->SW, g.PT = d->PT, g.PL = d->PL;
    g.OW = OW, g.oy0 = oy0, g.P = rows * OW;
    return g;
}

static void k22_im2col(k22_cuda_ctx *ctx, float *col, const float *xb, const k22_col_geom *g)
{
    int64_t n = (int64_t)g->C * g->KH * g->KW * g->P;
    k22_im2col_kernel<<<k22_cuda_blocks(n), K22_CUDA_THREADS, 0, ctx->stream>>>(col, xb, *g, n);
    CUDA_CHECK_LAUNCH();
}

void k22_cuda_conv_bias_add(k22_cuda_ctx *ctx, float *y, const float *bias, int B, int O,
                            int64_t P)
{
    int64_t n = (int64_t)B * O * P;
    if (n <= 0) return;
    k22_conv_bias_kernel<<<k22_cuda_blocks(n), K22_CUDA_THREADS, 0, ctx->stream>>>(y, bias, n, O,
                                                                                  P);
    CUDA_CHECK_LAUNCH();
}

/* x16 widened to floats for the im2col path (the columns take the op scratch, the GEMM's 16-bit
 * operands lowp). */
static const float *k22_conv_widen_x(k22_cuda_ctx *ctx, const uint16_t *x16,
                                     const k22_conv2d_desc *d)
{
    return k22_cuda_wide_copy(ctx, x16, (int64_t)d->B * d->C * d->H * d->W);
}

/* conv2d_fwd on x, or on x16 when it is not NULL. */
static void k22_conv_fwd(k22_cuda_ctx *ctx, float *y, const float *x, const uint16_t *x16,
                         const float *w, const float *bias, const k22_conv2d_desc *d)
{
    int OH = k22_conv2d_out_h(d), OW = k22_conv2d_out_w(d);
    int64_t P = (int64_t)OH * OW, CHW = (int64_t)d->C * d->H * d->W;
    int CKK = d->C * d->KH * d->KW;
    if (d->B <= 0 || d->O <= 0 || P <= 0) return;
    K22_REQUIRE(P <= INT32_MAX);
    int done = 0;
    if (ctx->cudnn) k22_cudnn_conv_fwd(ctx, y, x, x16, w, bias, d, &done); /* failures are fatal */
    if (done) {
        ctx->conv_runs_cudnn++;
        return;
    }
    ctx->conv_runs_im2col++;
    if (x16) x = k22_conv_widen_x(ctx, x16, d);
    if (k22_conv_is_pointwise(d)) { /* y_b (O, P) = W (O, C) x_b (C, P), all samples at once */
        k22_cuda_gemm(ctx, 0, 0, d->O, (int)P, d->C, 1.0f, w, d->C, 0, x, P, CHW, 0.0f, y, P,
                      d->O * P, d->B);
    } else {
        int rows = k22_conv_band_rows(ctx, d, OH, OW);
        float *col = (float *)k22_cuda_scratch(ctx, (size_t)CKK * rows * OW * sizeof(float));
        for (int b = 0; b < d->B; b++)
            for (int oy0 = 0; oy0 < OH; oy0 += rows) {
                int nr = OH - oy0 < rows ? OH - oy0 : rows;
                k22_col_geom g = k22_col_geom_of(d, OW, oy0, nr);
                k22_im2col(ctx, col, x + b * CHW, &g);
                /* y_b[:, band] (O, nr*OW; row stride P) = W (O, CKK) col (CKK, nr*OW) */
                k22_cuda_gemm(ctx, 0, 0, d->O, g.P, CKK, 1.0f, w, CKK, 0, col, g.P, 0, 0.0f,
                              y + ((int64_t)b * d->O) * P + (int64_t)oy0 * OW, P, 0, 1);
            }
    }
    if (bias) k22_cuda_conv_bias_add(ctx, y, bias, d->B, d->O, P);
}

void k22_cuda_conv2d_fwd(void *vctx, float *y, const float *x, const float *w, const float *bias,
                         const k22_conv2d_desc *d)
{
    k22_conv_fwd(K22_CUDA_CTX(vctx), y, x, NULL, w, bias, d);
}

void k22_cuda_conv2d_fwd_x16(void *vctx, float *y, const uint16_t *x16, const float *w,
                             const float *bias, const k22_conv2d_desc *d)
{
    k22_cuda_ctx *ctx = K22_CUDA_CTX(vctx);
    K22_REQUIRE(ctx->precision != K22_PREC_FP32);
    k22_conv_fwd(ctx, y, NULL, x16, w, bias, d);
}

/* dw and dx through im2col bands, one sample at a time. */
static void k22_conv_bwd_banded(k22_cuda_ctx *ctx, float *dx, float *dw, const float *dy,
                                const float *x, const float *w, const k22_conv2d_desc *d, int OH,
                                int OW)
{
    int64_t P = (int64_t)OH * OW, CHW = (int64_t)d->C * d->H * d->W;
    int CKK = d->C * d->KH * d->KW;
    int rows = k22_conv_band_rows(ctx, d, OH, OW);
    float *col = (float *)k22_cuda_scratch(ctx, (size_t)CKK * rows * OW * sizeof(float));
    for (int b = 0; b < d->B; b++)
        for (int oy0 = 0; oy0 < OH; oy0 += rows) {
            int nr = OH - oy0 < rows ? OH - oy0 : rows;
            k22_col_geom g = k22_col_geom_of(d, OW, oy0, nr);
            /* dY_band: (O, g.P) with row stride P */
            const float *dyb = dy + ((int64_t)b * d->O) * P + (int64_t)oy0 * OW;
            if (dw) { /* dW (O, CKK) += dY_band (O, P') col^T (P', CKK) */
                k22_im2col(ctx, col, x + b * CHW, &g);
                k22_cuda_gemm(ctx, 0, 1, d->O, CKK, g.P, 1.0f, dyb, P, 0, col, g.P, 0, 1.0f, dw,
                              CKK, 0, 1);
            }
            if (dx) { /* dcol (CKK, P') = W^T (CKK, O) dY_band (O, P'), then scatter by gathering */
                k22_cuda_gemm(ctx, 1, 0, CKK, g.P, d->O, 1.0f, w, CKK, 0, dyb, P, 0, 0.0f, col,
                              g.P, 0, 1);
                k22_col2im_kernel<<<k22_cuda_blocks(CHW), K22_CUDA_THREADS, 0, ctx->stream>>>(
                    dx + b * CHW, col, g, CHW);
                CUDA_CHECK_LAUNCH();
            }
        }
}

/* conv2d_bwd on x, or on x16 when it is not NULL (read only for dw). */
static void k22_conv_bwd(k22_cuda_ctx *ctx, float *dx, float *dw, float *dbias, const float *dy,
                         const float *x, const uint16_t *x16, const float *w,
                         const k22_conv2d_desc *d)
{
    int OH = k22_conv2d_out_h(d), OW = k22_conv2d_out_w(d);
    int64_t P = (int64_t)OH * OW, CHW = (int64_t)d->C * d->H * d->W;
    if (d->B <= 0 || d->O <= 0 || P <= 0) return;
    K22_REQUIRE(P <= INT32_MAX);
    if (dbias) {
        k22_conv_dbias_kernel<<<d->O, K22_CUDA_THREADS, 0, ctx->stream>>>(dbias, dy, d->B, d->O, P);
        CUDA_CHECK_LAUNCH();
    }
    if (!dx && !dw) return;
    int done_dx = 0, done_dw = 0;
    if (ctx->cudnn) k22_cudnn_conv_bwd(ctx, dx, dw, dy, x, x16, w, d, &done_dx, &done_dw);
    if (dx && done_dx) dx = NULL, ctx->conv_runs_cudnn++;
    if (dw && done_dw) dw = NULL, ctx->conv_runs_cudnn++;
    ctx->conv_runs_im2col += (dx != NULL) + (dw != NULL);
    if (!dx && !dw) return;
    if (dw && x16) x = k22_conv_widen_x(ctx, x16, d);
    if (!k22_conv_is_pointwise(d)) {
        k22_conv_bwd_banded(ctx, dx, dw, dy, x, w, d, OH, OW);
        return;
    }
    if (dx) /* dx_b (C, P) += W^T (C, O) dy_b (O, P), all samples at once */
        k22_cuda_gemm(ctx, 1, 0, d->C, (int)P, d->O, 1.0f, w, d->C, 0, dy, P, d->O * P, 1.0f, dx,
                      P, CHW, d->B);
    if (dw) /* dW (O, C) += dy_b (O, P) x_b^T (P, C), sample after sample */
        for (int b = 0; b < d->B; b++)
            k22_cuda_gemm(ctx, 0, 1, d->O, d->C, (int)P, 1.0f, dy + (int64_t)b * d->O * P, P, 0,
                          x + b * CHW, P, 0, 1.0f, dw, d->C, 0, 1);
}

void k22_cuda_conv2d_bwd(void *vctx, float *dx, float *dw, float *dbias, const float *dy,
                         const float *x, const float *w, const k22_conv2d_desc *d)
{
    k22_conv_bwd(K22_CUDA_CTX(vctx), dx, dw, dbias, dy, x, NULL, w, d);
}

void k22_cuda_conv2d_bwd_x16(void *vctx, float *dx, float *dw, float *dbias, const float *dy,
                             const uint16_t *x16, const float *w, const k22_conv2d_desc *d)
{
    k22_cuda_ctx *ctx = K22_CUDA_CTX(vctx);
    K22_REQUIRE(ctx->precision != K22_PREC_FP32);
    k22_conv_bwd(ctx, dx, dw, dbias, dy, NULL, x16, w, d);
}
