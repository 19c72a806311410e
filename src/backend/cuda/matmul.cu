/* matmul.cu: the batched row-major GEMM of ops.h through cuBLASLt, and nn.Linear forward and
 * backward on top of it (GEMMs with the bias in cuBLASLt's epilogue, or a bias kernel; a
 * bias-gradient reduction).
 *
 * cuBLASLt is column-major. A row-major (R, C) matrix is the column-major (C, R) matrix with the
 * same bytes, so row-major C = op(A) op(B) is computed as column-major C^T = op(B)^T op(A)^T:
 * the roles of A and B swap and M and N swap; the transpose flags keep their meaning.
 * Compute is CUBLAS_COMPUTE_32F (true fp32, no TF32) so results stay close to the CPU reference.
 * Under bf16/fp16 (k22_precision, ops.h) the operands are first rounded to 16 bits by a packing
 * kernel and the GEMM reads them as CUDA_R_16BF/CUDA_R_16F, still accumulating in fp32 into fp32
 * C: every GEMM-class op (linear, conv, attention) comes through k22_cuda_gemm, so that is the
 * one place the precision acts. */
#include "common.cuh"

#include <stdio.h>

/* The largest power of two that divides a pointer, its leading dimension in bytes and, in a
 * batch, the batch stride in bytes (elements of `esize` bytes), up to 256 for fp32 operands and
 * 16 for 16-bit ones. cuBLASLt's heuristic assumes 256-byte aligned operands unless told
 * otherwise, and k22 passes views into arenas at any float offset. The 16-bit cap: no kernel needs
 * more than 16 bytes (128-bit and TMA loads), and it makes a weight read in place from the
 * 16-bit shadow (32-byte aligned) look to the heuristic exactly like its packed copy (256-byte
 * aligned), so both get the same algorithm and the same bits (k22_lowp_from_shadow). */
static uint32_t k22_cuda_align(const void *p, int64_t ld, int64_t stride, int batch, size_t esize)
{
    uintptr_t a = (uintptr_t)p | (uintptr_t)ld * esize;
    if (batch > 1) a |= (uintptr_t)stride * esize;
    uint32_t al = esize == 2 ? 16 : 256;
    while (al > esize && (a & (al - 1))) al >>= 1;
    return al;
}

/* One cuBLASLt call for `batch` products. A and B are of type ab (CUDA_R_32F, or CUDA_R_16BF /
 * CUDA_R_16F under reduced precision); leading dimensions and strides count their elements; C
 * is always fp32, and so are alpha, beta and the accumulation (CUBLAS_COMPUTE_32F with scale
 * type CUDA_R_32F: a combination cuBLASLt supports for all three A/B types). bias (fp32, one value
 * per column of our row-major C, batch 1) or NULL: added by cuBLASLt's BIAS epilogue where the
 * heuristic has an algorithm for it, else the plain product runs; *bias_done (may be NULL) says
 * which. The descriptors and
 * the algorithm come from the shape's plan (lt_plan.cu). Returns CUBLAS_STATUS_SUCCESS, or the
 * heuristic's refusal (NOT_SUPPORTED when it finds no algorithm; the caller then splits the batch
 * or dies); errors of the other calls are fatal here. */
static cublasStatus_t k22_cuda_lt_gemm(k22_cuda_ctx *ctx, cudaDataType_t ab, int ta, int tb,
                                       int M, int N, int K, float alpha, const void *A,
                                       int64_t lda, int64_t sA, const void *Bm, int64_t ldb,
                                       int64_t sB, float beta, float *C, int64_t ldc, int64_t sC,
                                       int batch, const float *bias, int *bias_done)
{
    size_t esize = ab == CUDA_R_32F ? sizeof(float) : 2;
    k22_lt_key k;
    k22_lt_key_init(&k);
    k.ab = ab, k.ta = ta, k.tb = tb, k.M = M, k.N = N, k.K = K, k.batch = batch, k.bias = bias != NULL;
    k.lda = lda, k.ldb = ldb, k.ldc = ldc;
    if (batch > 1) k.sA = sA, k.sB = sB, k.sC = sC; /* unused otherwise: one plan for any */
    k.alA = k22_cuda_align(A, lda, sA, batch, esize);
    k.alB = k22_cuda_align(Bm, ldb, sB, batch, esize);
    k.alC = k22_cuda_align(C, ldc, sC, batch, sizeof(float));
    const struct k22_lt_plan *p = k22_lt_plan_get(ctx, &k);
    if (p->status != CUBLAS_STATUS_SUCCESS && bias) /* no algorithm with the epilogue: the caller adds it */
        return k22_cuda_lt_gemm(ctx, ab, ta, tb, M, N, K, alpha, A, lda, sA, Bm, ldb, sB, beta, C, ldc, sC, batch,
                                NULL, bias_done);
    if (bias_done) *bias_done = bias != NULL; /* past the retry a bias has its algorithm */
    if (bias) /* the plan's descriptor, this call's vector */
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
    if (p->status == CUBLAS_STATUS_SUCCESS)
        CUBLAS_CHECK(cublasLtMatmul(ctx->lt, p->op, &alpha, Bm, p->la, A, p->lb, &beta, C, p->lc, C,
                                    p->lc, &p->algo, ctx->workspace, ctx->workspace_bytes,
                                    ctx->stream));
    return p->status;
}

/* k22_cuda_lt_gemm, or where cuBLASLt has no batched algorithm for these strides (e.g. a
 * broadcast operand), one call per item (a bias comes with batch 1 only). */
static cublasStatus_t k22_cuda_lt_gemm_items(k22_cuda_ctx *ctx, cudaDataType_t ab, int ta, int tb, int M, int N,
                                             int K, float alpha, const void *A, int64_t lda, int64_t sA,
                                             const void *Bm, int64_t ldb, int64_t sB, float beta, float *C,
                                             int64_t ldc, int64_t sC, int batch, const float *bias, int *bias_done)
{
    cublasStatus_t s = k22_cuda_lt_gemm(ctx, ab, ta, tb, M, N, K, alpha, A, lda, sA, Bm, ldb, sB, beta, C, ldc,
                                        sC, batch, bias, bias_done);
    const int64_t esize = ab == CUDA_R_32F ? (int64_t)sizeof(float) : 2;
    if (s == CUBLAS_STATUS_SUCCESS || batch <= 1) return s;
    s = CUBLAS_STATUS_SUCCESS;
    for (int i = 0; i < batch && s == CUBLAS_STATUS_SUCCESS; i++)
        s = k22_cuda_lt_gemm(ctx, ab, ta, tb, M, N, K, alpha, (const char *)A + i * sA * esize, lda, 0,
                             (const char *)Bm + i * sB * esize, ldb, 0, beta, C + (int64_t)i * sC, ldc, 0, 1,
                             NULL, NULL);
    return s;
}

/* ---- reduced precision: operands rounded to 16 bits ---- */

/* What the packing kernel needs: nb matrices of (rows, cols) floats, row stride ld, matrix
 * stride s, written densely as 16-bit values with row stride pld (rows * pld per matrix). */
typedef struct {
    int64_t rows, cols, ld, s, pld;
    int fp16;  /* 1: IEEE half; 0: bfloat16 */
    int dense; /* source and destination are the same contiguous run: no index arithmetic */
} k22_lowp_pack;

/* k22_cuda_round16: to nearest even, as the CPU backend's k22_precision_round. */
__global__ void k22_cuda_pack_lowp_kernel(uint16_t *dst, const float *src, k22_lowp_pack g,
                                          int64_t n)
{
    int64_t per = g.rows * g.cols;
    K22_GRID_STRIDE(e, n)
    {
        int64_t from = e, to = e;
        if (!g.dense) { /* 64-bit divisions: only for strided or padded operands */
            int64_t b = e / per, r = (e % per) / g.cols, c = e % g.cols;
            from = b * g.s + r * g.ld + c;
            to = (b * g.rows + r) * g.pld + c;
        }
        dst[to] = k22_cuda_round16(src[from], g.fp16);
    }
}

/* An operand packed for the 16-bit GEMM: where, and its leading dimension and batch stride in
 * elements. The leading dimension is padded to 8 elements (16 bytes), the alignment tensor-core
 * kernels want, whatever the caller's ld was. */
typedef struct {
    const uint16_t *p;
    int64_t ld, stride;
} k22_lowp_operand;

static int64_t k22_lowp_pld(int64_t cols)
{
    return (cols + 7) / 8 * 8;
}

/* Rounds one operand (stored as rows x cols, nb matrices) into dst. */
static k22_lowp_operand k22_lowp_pack_operand(k22_cuda_ctx *ctx, uint16_t *dst, const float *src,
                                              int64_t rows, int64_t cols, int64_t ld, int64_t s,
                                              int nb)
{
    k22_lowp_pack g = {rows, cols, ld, s, k22_lowp_pld(cols), ctx->precision == K22_PREC_FP16, 0};
    g.dense = g.pld == cols && ld == cols && (nb == 1 || s == rows * cols);
    int64_t n = rows * cols * nb;
    k22_cuda_pack_lowp_kernel<<<k22_cuda_blocks(n), K22_CUDA_THREADS, 0, ctx->stream>>>(
        dst, src, g, n);
    CUDA_CHECK_LAUNCH();
    k22_lowp_operand o = {dst, g.pld, nb > 1 ? rows * g.pld : 0};
    return o;
}

/* See common.cuh: the packing kernel on one dense run of n values. */
void k22_cuda_round_lowp(k22_cuda_ctx *ctx, uint16_t *dst, const float *src, int64_t n)
{
    if (n <= 0) return;
    k22_lowp_pack g = {1, n, n, 0, n, ctx->precision == K22_PREC_FP16, 1};
    k22_cuda_pack_lowp_kernel<<<k22_cuda_blocks(n), K22_CUDA_THREADS, 0, ctx->stream>>>(
        dst, src, g, n);
    CUDA_CHECK_LAUNCH();
}

void k22_cuda_round_lowp_rows(k22_cuda_ctx *ctx, uint16_t *dst, const float *src, int64_t rows, int64_t cols,
                              int64_t pld)
{
    if (rows <= 0 || cols <= 0) return;
    if (pld > cols) CUDA_CHECK(cudaMemsetAsync(dst, 0, (size_t)(rows * pld) * sizeof(uint16_t), ctx->stream));
    k22_lowp_pack g = {rows, cols, cols, 0, pld, ctx->precision == K22_PREC_FP16, pld == cols};
    int64_t n = rows * cols;
    k22_cuda_pack_lowp_kernel<<<k22_cuda_blocks(n), K22_CUDA_THREADS, 0, ctx->stream>>>(dst, src, g, n);
    CUDA_CHECK_LAUNCH();
}

/* An operand (stored as rows x cols, nb matrices) already rounded, at p16, read in place instead
 * of packed when cuBLASLt would be told about it exactly what it is told about its packed copy:
 * the same leading dimension (k22_lowp_pld's) and batch stride, and the same alignment
 * (k22_cuda_align's 16-byte cap, met by a 16-byte aligned p16). The heuristic then picks the same
 * algorithm for the same 16-bit values, so the product has the bits it has when packed. 0 (also
 * for p16 NULL): pack it. */
static int k22_lowp_in_place(const uint16_t *p16, int64_t rows, int64_t cols, int64_t ld, int64_t s,
                             int nb, k22_lowp_operand *o)
{
    int64_t pld = k22_lowp_pld(cols), ps = nb > 1 ? rows * pld : 0;
    if (!p16 || ld != pld || (nb > 1 && s != ps) || (uintptr_t)p16 % 16) return 0;
    o->p = p16, o->ld = pld, o->stride = ps;
    return 1;
}

/* The operand from the weight shadow, when it lies in the registered parameter buffer. */
static int k22_lowp_from_shadow(k22_cuda_ctx *ctx, const float *src, int64_t rows, int64_t cols,
                                int64_t ld, int64_t s, int nb, k22_lowp_operand *o)
{
    int64_t pld = k22_lowp_pld(cols), ps = nb > 1 ? rows * pld : 0;
    if (ld != pld || (nb > 1 && s != ps)) return 0;
    const uint16_t *sh = k22_cuda_shadow_read(ctx, src, (nb - 1) * ps + (rows - 1) * ld + cols, 16);
    return k22_lowp_in_place(sh, rows, cols, ld, s, nb, o);
}

/* An operand given as 16-bit values (src16: the x16 of the _x16 entries) in place, or else
 * widened into ctx->wide, whose floats the caller packs as any other (the same 16-bit values
 * again). Returns 1 in place; 0 with *src set to the widened copy. */
static int k22_lowp_given(k22_cuda_ctx *ctx, const uint16_t *src16, const float **src, int64_t rows,
                          int64_t cols, int64_t ld, int64_t s, int nb, k22_lowp_operand *o)
{
    if (k22_lowp_in_place(src16, rows, cols, ld, s, nb, o)) return 1;
    *src = k22_cuda_wide_copy(ctx, src16, (nb - 1) * s + (rows - 1) * ld + cols);
    return 0;
}

/* k22_cuda_gemm under bf16/fp16 (ctx->precision): A and B, as far as the GEMM reads them, are
 * rounded into ctx->lowp (never the op scratch: A or B may live there), densely, one matrix per
 * batch item or one for a broadcast (stride 0) operand, unless they can be read from the weight
 * shadow, or come rounded already (A16 or B16, non-NULL in place of A or Bm; at most one); then
 * one 16-bit cuBLASLt call with fp32 C, alpha, beta and accumulation. */
static cublasStatus_t k22_cuda_gemm_lowp(k22_cuda_ctx *ctx, int ta, int tb, int M, int N, int K,
                                         float alpha, const float *A, const uint16_t *A16,
                                         int64_t lda, int64_t sA, const float *Bm,
                                         const uint16_t *B16, int64_t ldb, int64_t sB, float beta,
                                         float *C, int64_t ldc, int64_t sC, int batch, const float *bias,
                                         int *bias_done)
{
    int64_t ra = ta ? K : M, ca = ta ? M : K, rb = tb ? N : K, cb = tb ? K : N;
    int na = batch > 1 && sA != 0 ? batch : 1, nb = batch > 1 && sB != 0 ? batch : 1;
    k22_lowp_operand a, b;
    K22_REQUIRE(!(A16 && B16));
    int sha = A16 ? k22_lowp_given(ctx, A16, &A, ra, ca, lda, sA, na, &a)
                  : k22_lowp_from_shadow(ctx, A, ra, ca, lda, sA, na, &a);
    int shb = B16 ? k22_lowp_given(ctx, B16, &Bm, rb, cb, ldb, sB, nb, &b)
                  : k22_lowp_from_shadow(ctx, Bm, rb, cb, ldb, sB, nb, &b);
    /* What is packed goes to ctx->lowp; B's copy starts 256-byte aligned after A's. */
    size_t bytes_a = sha ? 0 : (size_t)(ra * k22_lowp_pld(ca) * na) * 2;
    size_t off_b = (bytes_a + 255) / 256 * 256;
    size_t bytes = off_b + (shb ? 0 : (size_t)(rb * k22_lowp_pld(cb) * nb) * 2);
    uint8_t *buf = bytes ? (uint8_t *)k22_cuda_lowp(ctx, bytes) : NULL;
    if (!sha) a = k22_lowp_pack_operand(ctx, (uint16_t *)buf, A, ra, ca, lda, sA, na);
    if (!shb) b = k22_lowp_pack_operand(ctx, (uint16_t *)(buf + off_b), Bm, rb, cb, ldb, sB, nb);
    cudaDataType_t t = ctx->precision == K22_PREC_FP16 ? CUDA_R_16F : CUDA_R_16BF;
    return k22_cuda_lt_gemm_items(ctx, t, ta, tb, M, N, K, alpha, a.p, a.ld, a.stride, b.p, b.ld, b.stride,
                                  beta, C, ldc, sC, batch, bias, bias_done);
}

/* Row-major GEMM with leading dimensions; see common.cuh. bias (batch 1) or NULL: offered to the
 * BIAS epilogue; returns 1 when it was added there, 0 when not (no bias, or no algorithm with the
 * epilogue for this shape: the plain GEMM ran, and the caller adds it). */
static int k22_cuda_gemm_bias(k22_cuda_ctx *ctx, int ta, int tb, int M, int N, int K, float alpha,
                              const float *A, const uint16_t *A16, int64_t lda, int64_t sA,
                              const float *Bm, const uint16_t *B16, int64_t ldb, int64_t sB,
                              float beta, float *C, int64_t ldc, int64_t sC, int batch,
                              const float *bias)
{
    K22_REQUIRE(M >= 0 && N >= 0 && K >= 0 && batch >= 0 && (!bias || batch == 1));
    if (M == 0 || N == 0 || batch == 0) return 0;
    if (K == 0) { /* empty sum: C = beta * C, and beta = 0 must clear NaN too */
        if (beta == 1.0f) return 0;
        for (int b = 0; b < batch; b++)
            for (int r = 0; r < M; r++) {
                float *Cr = C + (int64_t)b * sC + (int64_t)r * ldc;
                if (beta == 0.0f)
                    CUDA_CHECK(cudaMemsetAsync(Cr, 0, (size_t)N * sizeof(float), ctx->stream));
                else
                    k22_cuda_scale(ctx, Cr, Cr, beta, N);
            }
        return 0;
    }
    cublasStatus_t s;
    int done = 0;
    if (ctx->precision == K22_PREC_BF16 || ctx->precision == K22_PREC_FP16) {
        s = k22_cuda_gemm_lowp(ctx, ta, tb, M, N, K, alpha, A, A16, lda, sA, Bm, B16, ldb, sB, beta,
                               C, ldc, sC, batch, bias, &done);
    } else {
        K22_REQUIRE(!A16 && !B16); /* 16-bit operands only under bf16/fp16 */
        s = k22_cuda_lt_gemm_items(ctx, CUDA_R_32F, ta, tb, M, N, K, alpha, A, lda, sA, Bm, ldb, sB, beta, C,
                                   ldc, sC, batch, bias, &done);
    }
    if (s == CUBLAS_STATUS_SUCCESS) return done;
    K22_FATAL("cuBLASLt has no algorithm for matmul ta=%d tb=%d M=%d N=%d K=%d batch=%d "
              "precision %s ld %lld/%lld/%lld strides %lld/%lld/%lld: %s (device %d)",
              ta, tb, M, N, K, batch, k22_precision_name((k22_precision)ctx->precision),
              (long long)lda, (long long)ldb, (long long)ldc, (long long)sA, (long long)sB,
              (long long)sC, cublasLtGetStatusString(s), ctx->device);
}

void k22_cuda_gemm(k22_cuda_ctx *ctx, int ta, int tb, int M, int N, int K, float alpha,
                   const float *A, int64_t lda, int64_t sA, const float *Bm, int64_t ldb,
                   int64_t sB, float beta, float *C, int64_t ldc, int64_t sC, int batch)
{
    k22_cuda_gemm_bias(ctx, ta, tb, M, N, K, alpha, A, NULL, lda, sA, Bm, NULL, ldb, sB, beta, C, ldc, sC,
                       batch, NULL);
}

/* See ops.h. Strides are in floats; a stride of 0 repeats one operand over the batch. */
void k22_cuda_matmul(void *vctx, int ta, int tb, int M, int N, int K, float alpha, const float *A,
                     int64_t sA, const float *Bm, int64_t sB, float beta, float *C, int64_t sC,
                     int batch)
{
    /* Dense operands: the leading dimension is the stored row length. */
    k22_cuda_gemm(K22_CUDA_CTX(vctx), ta, tb, M, N, K, alpha, A, ta ? M : K, sA, Bm, tb ? K : N,
                  sB, beta, C, N, sC, batch);
}

/* y (N, O) += b (O) broadcast over rows. */
__global__ void k22_cuda_bias_add_kernel(float *y, const float *b, int64_t rows, int O)
{
    int64_t n = rows * O;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        y[i] += b[i % O];
}

/* db (O) += column sums of dy (N, O). A block owns 32 columns (one warp reads 32 consecutive
 * floats of a row: coalesced) and BIAS_ROWS threads stride down the rows; the partial sums are
 * added in a fixed order, so the result is deterministic. */
#define BIAS_ROWS 16
__global__ void k22_cuda_bias_grad_kernel(float *db, const float *dy, int64_t N, int O)
{
    __shared__ float part[BIAS_ROWS][33];
    int c = blockIdx.x * 32 + threadIdx.x;
    float s = 0.0f;
    if (c < O)
        for (int64_t r = threadIdx.y; r < N; r += BIAS_ROWS) s += dy[r * O + c];
    part[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && c < O) {
        float t = 0.0f;
        for (int k = 0; k < BIAS_ROWS; k++) t += part[k][threadIdx.x];
        db[c] += t;
    }
}

/* x: (N, I), w: (O, I), b: (O) or NULL, y: (N, O); y = x w^T + b, x given as floats or, x16
 * non-NULL, as 16-bit values. The bias goes into cuBLASLt's BIAS epilogue (the same fp32 add,
 * without a pass over y) unless K22_CUDA_EPILOGUE=0, the vector is not 16-byte aligned, or
 * cuBLASLt has no such algorithm for the shape; then a kernel adds it. */
static void k22_linear_fwd(k22_cuda_ctx *ctx, float *y, const float *x, const uint16_t *x16,
                           const float *w, const float *b, int N, int I, int O)
{
    const float *eb = b && ctx->bias_epilogue && (uintptr_t)b % 16 == 0 ? b : NULL;
    int done = k22_cuda_gemm_bias(ctx, 0, 1, N, O, I, 1.0f, x, x16, I, 0, w, NULL, I, 0, 0.0f, y, O,
                                  0, 1, eb);
    if (b && N > 0 && O > 0) ctx->bias_runs[done]++;
    if (b && !done && N > 0 && O > 0) {
        int64_t n = (int64_t)N * O;
        unsigned blocks = k22_cuda_blocks(n);
        k22_cuda_bias_add_kernel<<<blocks, K22_CUDA_THREADS, 0, ctx->stream>>>(y, b, N, O);
        CUDA_CHECK_LAUNCH();
    }
}

/* Accumulates dx (N, I) += dy w, dw (O, I) += dy^T x (x or x16, as above), db (O) += sum_rows
 * dy; NULL skips. */
static void k22_linear_bwd(k22_cuda_ctx *ctx, float *dx, float *dw, float *db, const float *dy,
                           const float *x, const uint16_t *x16, const float *w, int N, int I, int O)
{
    if (dx) k22_cuda_matmul(ctx, 0, 0, N, I, O, 1.0f, dy, 0, w, 0, 1.0f, dx, 0, 1);
    if (dw) k22_cuda_gemm_bias(ctx, 1, 0, O, I, N, 1.0f, dy, NULL, O, 0, x, x16, I, 0, 1.0f, dw, I, 0, 1, NULL);
    if (db && O > 0 && N > 0) {
        dim3 block(32, BIAS_ROWS);
        dim3 grid((unsigned)((O + 31) / 32));
        k22_cuda_bias_grad_kernel<<<grid, block, 0, ctx->stream>>>(db, dy, N, O);
        CUDA_CHECK_LAUNCH();
    }
}

void k22_cuda_linear_fwd(void *vctx, float *y, const float *x, const float *w, const float *b,
                         int N, int I, int O)
{
    k22_linear_fwd(K22_CUDA_CTX(vctx), y, x, NULL, w, b, N, I, O);
}

void k22_cuda_linear_bwd(void *vctx, float *dx, float *dw, float *db, const float *dy,
                         const float *x, const float *w, int N, int I, int O)
{
    k22_linear_bwd(K22_CUDA_CTX(vctx), dx, dw, db, dy, x, NULL, w, N, I, O);
}

void k22_cuda_linear_fwd_x16(void *vctx, float *y, const uint16_t *x16, const float *w,
                             const float *b, int N, int I, int O)
{
    k22_cuda_ctx *ctx = K22_CUDA_CTX(vctx);
    K22_REQUIRE(ctx->precision != K22_PREC_FP32);
    k22_linear_fwd(ctx, y, NULL, x16, w, b, N, I, O);
}

void k22_cuda_linear_bwd_x16(void *vctx, float *dx, float *dw, float *db, const float *dy,
                             const uint16_t *x16, const float *w, int N, int I, int O)
{
    k22_cuda_ctx *ctx = K22_CUDA_CTX(vctx);
    K22_REQUIRE(ctx->precision != K22_PREC_FP32);
    k22_linear_bwd(ctx, dx, dw, db, dy, NULL, x16, w, N, I, O);
}
