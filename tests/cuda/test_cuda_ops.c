/* test_cuda_ops.c: every op the CUDA backend implements, against the CPU reference (cpu-ref:
 * plain loops, sums in double) on random inputs, with a tolerance stated per case; and the
 * GEMM-class ops under bf16/fp16 (k22_precision) against cpu-ref on rounded operands and
 * against the cpu backend at the same precision (test_precision), with the 16-bit input entries
 * (conv2d_fwd_x16, conv2d_bwd_x16, linear_fwd_x16, linear_bwd_x16) bit-equal to the float ones
 * and act_fwd_y16 / layer_norm_fwd_y16 to act_fwd / layer_norm_fwd rounded, attention_fwd_x16 /
 * attention_bwd_x16 to the float entries on q, k, v widened. The convolutions
 * run on each implementation (the default, cuDNN where usable; im2col; im2col in bands), and each
 * case says which one ran each direction.
 *
 * Without a usable CUDA device (no GPU, or a build without CUDA) it says why and exits 0, unless
 * K22_REQUIRE_CUDA is set (to anything but "" or "0"): then it exits 1, so a GPU job that lost
 * its GPU cannot pass silently (nor one whose cuDNN fell back to im2col). Every entry of the
 * table must be filled (issue 9); each op is checked forward and backward on several shapes, odd
 * sizes included, with backward gradients starting non-zero (they must accumulate).
 * K22_TEST_VERBOSE=1 prints every case's max error. */
#include "cuda/cuda_backend_or_skip.h"
#include "harness/harness.h"
#include "k22/ops.h"
#include "k22/tensor.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static k22_backend *gpu, *ref;

/* ---- helpers: host buffers, device copies ---- */

static float *host_rand(int64_t n, uint64_t seed, float lo, float hi)
{
    float *p = k22_xmalloc((size_t)n * sizeof(float));
    k22_test_fill(p, n, seed, lo, hi);
    return p;
}

static float *host_dup(const float *h, int64_t n)
{
    float *p = k22_xmalloc((size_t)n * sizeof(float));
    memcpy(p, h, (size_t)n * sizeof(float));
    return p;
}

static float *dev_of(const float *h, int64_t n)
{
    float *d = gpu->alloc(gpu->ctx, (size_t)n * sizeof(float));
    gpu->to_device(gpu->ctx, d, h, (size_t)n * sizeof(float));
    return d;
}

/* Copies device d back and compares it with the reference r; frees d. */
static int check_dev(const char *what, float *d, const float *r, int64_t n, double atol,
                     double rtol)
{
    float *h = k22_xmalloc((size_t)n * sizeof(float));
    gpu->to_host(gpu->ctx, h, d, (size_t)n * sizeof(float));
    int ok = k22_check_close(what, h, r, n, atol, rtol);
    free(h);
    gpu->free(gpu->ctx, d);
    return ok;
}

/* ---- memory entries ---- */

static void test_memory(void)
{
    const int64_t n = 100003;
    float *h = host_rand(n, 1, -1, 1), *back = k22_xcalloc((size_t)n, sizeof(float));
    float *d = gpu->alloc(gpu->ctx, n * sizeof(float));
    gpu->to_host(gpu->ctx, back, d, n * sizeof(float));
    int zeros = 1;
    for (int64_t i = 0; i < n; i++) zeros &= back[i] == 0.0f;
    CHECK_MSG(zeros, "alloc must return zero-filled memory");

    gpu->to_device(gpu->ctx, d, h, n * sizeof(float));
    float *d2 = gpu->alloc(gpu->ctx, n * sizeof(float));
    gpu->copy(gpu->ctx, d2, d, n * sizeof(float));
    gpu->zero(gpu->ctx, d2 + 10, 5 * sizeof(float)); /* a slice, at an odd offset */
    gpu->sync(gpu->ctx);
    gpu->to_host(gpu->ctx, back, d2, n * sizeof(float));
    float *want = host_dup(h, n);
    memset(want + 10, 0, 5 * sizeof(float));
    k22_check_close("to_device + copy + zero (exact)", back, want, n, 0, 0);

    float *tiny = gpu->alloc(gpu->ctx, 0);
    CHECK_MSG(tiny != NULL, "alloc(0) returns a pointer, not NULL");
    gpu->free(gpu->ctx, tiny);
    gpu->free(gpu->ctx, NULL);
    gpu->free(gpu->ctx, d);
    gpu->free(gpu->ctx, d2);
    free(h);
    free(back);
    free(want);
}

/* k22_backend_mem_free (--checkpoint_levels auto): a 64 MiB block takes 64 MiB of the free figure
 * (the stream-ordered pool's reservation rounds up, its unused part counts as free), freeing it
 * gives it back (the pool keeps it, but as free), on the emulator K22_EMU_MEM_MIB sets the
 * device's size, and K22_MEM_FREE_MIB replaces the figure. */
static void test_mem_free(void)
{
    const size_t mib = 1048576, n = 64 * mib;
    char *saved = getenv("K22_MEM_FREE_MIB") ? k22_xstrdup(getenv("K22_MEM_FREE_MIB")) : NULL;
    unsetenv("K22_MEM_FREE_MIB");
    size_t total = 0, f0 = k22_backend_mem_free(gpu, &total);
    float *d = gpu->alloc(gpu->ctx, n);
    gpu->sync(gpu->ctx);
    size_t f1 = k22_backend_mem_free(gpu, NULL);
    gpu->free(gpu->ctx, d);
    gpu->sync(gpu->ctx);
    size_t f2 = k22_backend_mem_free(gpu, NULL);
    printf("test_cuda_ops: device memory %.1f MiB, free %.1f; with a 64 MiB block %.1f; freed %.1f\n",
           (double)total / mib, (double)f0 / mib, (double)f1 / mib, (double)f2 / mib);
    CHECK_MSG(total > n && f0 <= total, "free %zu of %zu bytes", f0, total);
    CHECK_MSG(f1 + n <= f0 + 2 * mib && f1 + n + 2 * mib >= f0, "a 64 MiB block: free %zu -> %zu bytes", f0, f1);
    CHECK_MSG(f2 + 2 * mib >= f0 && f2 <= f0 + 2 * mib, "freed again: free %zu -> %zu bytes", f0, f2);
    if (getenv("K22_CUDA_EMU")) { /* the emulator's device size (cuda_runtime.h) */
        setenv("K22_EMU_MEM_MIB", "1000", 1);
        size_t small = k22_backend_mem_free(gpu, &total);
        unsetenv("K22_EMU_MEM_MIB");
        size_t live = 81559 * mib - f0; /* what the default size left free above */
        CHECK_MSG(total == 1000 * mib && small == total - live, "K22_EMU_MEM_MIB=1000: %zu of %zu bytes free, "
                  "want %zu", small, total, total - live);
    }
    setenv("K22_MEM_FREE_MIB", "123.5", 1);
    CHECK_MSG(k22_backend_mem_free(gpu, &total) == (size_t)(123.5 * mib) && total >= (size_t)(123.5 * mib),
              "K22_MEM_FREE_MIB=123.5 gives 123.5 MiB");
    if (saved) setenv("K22_MEM_FREE_MIB", saved, 1);
    else unsetenv("K22_MEM_FREE_MIB");
    free(saved);
}

/* ---- matmul ---- */

typedef struct {
    const char *name;
    int ta, tb, M, N, K;
    float alpha, beta;
    int batch;
    int64_t padA, padB, padC; /* batch stride = matrix size + pad; -1 gives stride 0 (broadcast) */
    int off;                  /* float offset of every operand: misaligns it for cuBLASLt */
    double atol, rtol;
} mm_case;

static void test_matmul_case(const mm_case *c)
{
    int64_t szA = (int64_t)c->M * c->K, szB = (int64_t)c->K * c->N, szC = (int64_t)c->M * c->N;
    int64_t sA = c->padA < 0 ? 0 : szA + c->padA, sB = c->padB < 0 ? 0 : szB + c->padB;
    int64_t sC = szC + c->padC;
    int64_t nA = c->off + (c->batch - 1) * sA + szA, nB = c->off + (c->batch - 1) * sB + szB;
    int64_t nC = c->off + (c->batch - 1) * sC + szC;
    nA++, nB++; /* one spare float: K = 0 leaves A and B empty */
    float *A = host_rand(nA, 11, -1, 1), *B = host_rand(nB, 12, -1, 1);
    float *C = host_rand(nC, 13, -1, 1);
    float *Cref = host_dup(C, nC);
    float *dA = dev_of(A, nA), *dB = dev_of(B, nB), *dC;
    if (c->beta == 0.0f) { /* beta = 0 must ignore C, NaN included */
        float *nan = host_dup(C, nC);
        for (int64_t b = 0; b < c->batch; b++)
            for (int64_t i = 0; i < szC; i++) nan[c->off + b * sC + i] = NAN;
        dC = dev_of(nan, nC);
        free(nan);
    } else {
        dC = dev_of(C, nC);
    }
    ref->matmul(ref->ctx, c->ta, c->tb, c->M, c->N, c->K, c->alpha, A + c->off, sA, B + c->off,
                sB, c->beta, Cref + c->off, sC, c->batch);
    gpu->matmul(gpu->ctx, c->ta, c->tb, c->M, c->N, c->K, c->alpha, dA + c->off, sA, dB + c->off,
                sB, c->beta, dC + c->off, sC, c->batch);
    char what[160];
    snprintf(what, sizeof what, "matmul %s (ta=%d tb=%d M=%d N=%d K=%d batch=%d)", c->name, c->ta,
             c->tb, c->M, c->N, c->K, c->batch);
    /* The whole buffer: gaps between batch items and before the offset must stay unchanged. */
    check_dev(what, dC, Cref, nC, c->atol, c->rtol);
    gpu->free(gpu->ctx, dA);
    gpu->free(gpu->ctx, dB);
    free(A);
    free(B);
    free(C);
    free(Cref);
}

static void test_matmul_per_item(k22_precision p);

static void test_matmul(void)
{
    /* Tolerances: inputs in [-1, 1]; fp32 accumulation error grows like sqrt(K) eps |C|.
     * 1e-5 holds for K <= 64 (|C| <= ~5). The K=1024 case (|C| ~ 10) gets 2e-4; TF32 would be
     * off by ~1e-2 there, so the case also proves TF32 is not used. */
    static const mm_case cases[] = {
        {"NN", 0, 0, 37, 19, 53, 0.75f, 0.0f, 1, 0, 0, 0, 0, 1e-5, 1e-5},
        {"NT", 0, 1, 37, 19, 53, 0.75f, 0.0f, 1, 0, 0, 0, 0, 1e-5, 1e-5},
        {"TN", 1, 0, 37, 19, 53, 0.75f, 0.0f, 1, 0, 0, 0, 0, 1e-5, 1e-5},
        {"TT", 1, 1, 37, 19, 53, 0.75f, 0.0f, 1, 0, 0, 0, 0, 1e-5, 1e-5},
        {"NN beta", 0, 0, 37, 19, 53, 1.0f, 1.5f, 1, 0, 0, 0, 0, 1e-5, 1e-5},
        {"TT beta", 1, 1, 16, 64, 32, -0.5f, 1.0f, 1, 0, 0, 0, 0, 1e-5, 1e-5},
        {"batched padded misaligned", 1, 0, 21, 13, 40, 1.0f, 0.5f, 3, 5, 3, 7, 1, 1e-5, 1e-5},
        {"batched broadcast B", 0, 1, 24, 40, 32, 1.0f, 0.0f, 4, 0, -1, 0, 0, 1e-5, 1e-5},
        {"batched aligned", 0, 0, 64, 64, 64, 1.0f, 0.0f, 8, 0, 0, 0, 0, 1e-5, 1e-5},
        {"K=0 beta", 0, 0, 5, 7, 0, 1.0f, 0.5f, 2, 0, 0, 0, 0, 0, 0},
        {"K=0 beta=0", 0, 0, 5, 7, 0, 1.0f, 0.0f, 1, 0, 0, 0, 0, 0, 0},
        {"large", 0, 1, 256, 192, 1024, 1.0f, 1.0f, 1, 0, 0, 0, 0, 2e-4, 1e-4},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) test_matmul_case(&cases[i]);
    test_matmul_per_item(K22_PREC_FP32);
}

/* ---- linear ---- */

static void test_linear_case(int N, int I, int O, int bias, double atol, double rtol)
{
    float *x = host_rand((int64_t)N * I, 21, -1, 1), *w = host_rand((int64_t)O * I, 22, -1, 1);
    float *b = host_rand(O, 23, -1, 1), *y = host_rand((int64_t)N * O, 24, -1, 1);
    float *dy = host_rand((int64_t)N * O, 25, -1, 1);
    /* Gradients start non-zero: backward must accumulate. */
    float *dx = host_rand((int64_t)N * I, 26, -1, 1), *dw = host_rand((int64_t)O * I, 27, -1, 1);
    float *db = host_rand(O, 28, -1, 1);
    float *gx = dev_of(x, (int64_t)N * I), *gw = dev_of(w, (int64_t)O * I), *gb = dev_of(b, O);
    float *gy = dev_of(y, (int64_t)N * O), *gdy = dev_of(dy, (int64_t)N * O);
    float *gdx = dev_of(dx, (int64_t)N * I), *gdw = dev_of(dw, (int64_t)O * I);
    float *gdb = dev_of(db, O);
    char what[128];

    ref->linear_fwd(ref->ctx, y, x, w, bias ? b : NULL, N, I, O);
    gpu->linear_fwd(gpu->ctx, gy, gx, gw, bias ? gb : NULL, N, I, O);
    snprintf(what, sizeof what, "linear_fwd N=%d I=%d O=%d bias=%d", N, I, O, bias);
    check_dev(what, gy, y, (int64_t)N * O, atol, rtol);

    ref->linear_bwd(ref->ctx, dx, dw, bias ? db : NULL, dy, x, w, N, I, O);
    gpu->linear_bwd(gpu->ctx, gdx, gdw, bias ? gdb : NULL, gdy, gx, gw, N, I, O);
    snprintf(what, sizeof what, "linear_bwd dx N=%d I=%d O=%d", N, I, O);
    check_dev(what, gdx, dx, (int64_t)N * I, atol, rtol);
    snprintf(what, sizeof what, "linear_bwd dw N=%d I=%d O=%d", N, I, O);
    check_dev(what, gdw, dw, (int64_t)O * I, atol, rtol);
    snprintf(what, sizeof what, "linear_bwd db N=%d O=%d bias=%d", N, O, bias);
    check_dev(what, gdb, db, O, atol, rtol);

    gpu->free(gpu->ctx, gx);
    gpu->free(gpu->ctx, gw);
    gpu->free(gpu->ctx, gb);
    gpu->free(gpu->ctx, gdy);
    free(x), free(w), free(b), free(y), free(dy), free(dx), free(dw), free(db);
}

/* Only dw requested: the NULL gradients must be skipped, not written. */
static void test_linear_null_grads(void)
{
    const int N = 9, I = 12, O = 5;
    float *x = host_rand(N * I, 31, -1, 1), *w = host_rand(O * I, 32, -1, 1);
    float *dy = host_rand(N * O, 33, -1, 1), *dw = host_rand(O * I, 34, -1, 1);
    float *gx = dev_of(x, N * I), *gw = dev_of(w, O * I), *gdy = dev_of(dy, N * O);
    float *gdw = dev_of(dw, O * I);
    ref->linear_bwd(ref->ctx, NULL, dw, NULL, dy, x, w, N, I, O);
    gpu->linear_bwd(gpu->ctx, NULL, gdw, NULL, gdy, gx, gw, N, I, O);
    check_dev("linear_bwd dw only", gdw, dw, O * I, 1e-5, 1e-5);
    gpu->free(gpu->ctx, gx);
    gpu->free(gpu->ctx, gw);
    gpu->free(gpu->ctx, gdy);
    free(x), free(w), free(dy), free(dw);
}

static void test_linear(void)
{
    /* Small sums (<= 65 terms of |v| <= 1): 1e-5. The N=3000 case sums 3000 rows into dw and
     * db (|dw| ~ 30): fp32 accumulation, 1e-3 absolute (still ~100x under a dropped row). */
    test_linear_case(33, 65, 47, 1, 1e-5, 1e-5);
    test_linear_case(33, 65, 47, 0, 1e-5, 1e-5);
    test_linear_case(1, 7, 3, 1, 1e-5, 1e-5);
    test_linear_case(3000, 16, 70, 1, 1e-3, 1e-4);
    test_linear_null_grads();
}

/* ---- activations ---- */

static void test_act(void)
{
    static const char *names[K22_ACT_COUNT] = {"silu", "gelu", "gelu_tanh", "quick_gelu"};
    const int64_t n = 100003;
    float *x = host_rand(n, 41, -8, 8), *dy = host_rand(n, 42, -1, 1);
    float *gx = dev_of(x, n), *gdy = dev_of(dy, n);
    char what[96];
    /* The reference works in double; the kernels in float with CUDA's libm (expf, erff, tanhf
     * within 2 ulp). 1e-6 absolute covers the cancellation in 1 + erf(x) for x << 0. */
    for (int act = 0; act < K22_ACT_COUNT; act++) {
        float *y = k22_xmalloc(n * sizeof(float));
        float *gy = gpu->alloc(gpu->ctx, n * sizeof(float));
        ref->act_fwd(ref->ctx, act, y, x, n);
        gpu->act_fwd(gpu->ctx, act, gy, gx, n);
        snprintf(what, sizeof what, "act_fwd %s", names[act]);
        check_dev(what, gy, y, n, 1e-6, 1e-5);

        float *inplace = dev_of(x, n); /* y aliases x */
        gpu->act_fwd(gpu->ctx, act, inplace, inplace, n);
        snprintf(what, sizeof what, "act_fwd %s in place", names[act]);
        check_dev(what, inplace, y, n, 1e-6, 1e-5);

        float *dx = host_rand(n, 43 + act, -1, 1);
        float *gdx = dev_of(dx, n);
        ref->act_bwd(ref->ctx, act, dx, dy, x, n);
        gpu->act_bwd(gpu->ctx, act, gdx, gdy, gx, n);
        snprintf(what, sizeof what, "act_bwd %s (accumulating)", names[act]);
        check_dev(what, gdx, dx, n, 2e-6, 2e-5);
        free(y);
        free(dx);
    }
    gpu->free(gpu->ctx, gx);
    gpu->free(gpu->ctx, gdy);
    free(x);
    free(dy);
}

/* ---- add, mul, scale and their backwards ---- */

static void test_binary(void)
{
    const int64_t n = 100003;
    const float s = -1.37f;
    float *a = host_rand(n, 51, -2, 2), *b = host_rand(n, 52, -2, 2), *dy = host_rand(n, 53, -1, 1);
    float *ga = dev_of(a, n), *gb = dev_of(b, n), *gdy = dev_of(dy, n);
    float *y = k22_xmalloc(n * sizeof(float));

    /* Forward: one rounding each, so they match exactly. */
    ref->add(ref->ctx, y, a, b, n);
    float *gy = gpu->alloc(gpu->ctx, n * sizeof(float));
    gpu->add(gpu->ctx, gy, ga, gb, n);
    check_dev("add (exact)", gy, y, n, 0, 0);
    ref->mul(ref->ctx, y, a, b, n);
    gy = dev_of(a, n);
    gpu->mul(gpu->ctx, gy, gy, gb, n); /* y aliases a */
    check_dev("mul in place (exact)", gy, y, n, 0, 0);
    ref->scale(ref->ctx, y, a, s, n);
    gy = gpu->alloc(gpu->ctx, n * sizeof(float));
    gpu->scale(gpu->ctx, gy, ga, s, n);
    check_dev("scale (exact)", gy, y, n, 0, 0);

    /* Backward accumulates into non-zero gradients. The kernels round each product before the
     * add, as the CPU does, so they should agree to the bit; 1e-6 (about 1 ulp of |da| <= 7)
     * only allows a host compiler that contracts the CPU side into FMAs. */
    float *da = host_rand(n, 54, -1, 1), *db = host_rand(n, 55, -1, 1);
    float *gda = dev_of(da, n), *gdb = dev_of(db, n);
    ref->add_bwd(ref->ctx, da, db, dy, n);
    gpu->add_bwd(gpu->ctx, gda, gdb, gdy, n);
    ref->add_bwd(ref->ctx, NULL, db, dy, n);
    gpu->add_bwd(gpu->ctx, NULL, gdb, gdy, n);
    ref->mul_bwd(ref->ctx, da, db, dy, a, b, n);
    gpu->mul_bwd(gpu->ctx, gda, gdb, gdy, ga, gb, n);
    ref->mul_bwd(ref->ctx, da, NULL, dy, a, b, n);
    gpu->mul_bwd(gpu->ctx, gda, NULL, gdy, ga, gb, n);
    ref->scale_bwd(ref->ctx, db, dy, s, n);
    gpu->scale_bwd(gpu->ctx, gdb, gdy, s, n);
    check_dev("add_bwd + mul_bwd da", gda, da, n, 1e-6, 1e-6);
    check_dev("add_bwd + mul_bwd + scale_bwd db", gdb, db, n, 1e-6, 1e-6);

    gpu->free(gpu->ctx, ga);
    gpu->free(gpu->ctx, gb);
    gpu->free(gpu->ctx, gdy);
    free(a), free(b), free(dy), free(y), free(da), free(db);
}

/* ---- sumsq and gradient clipping ---- */

static void test_sumsq(void)
{
    /* Squares are exact in double on both sides; only the summation order differs:
     * relative error <= n * 2^-53, far under 1e-10 for these n. */
    static const int64_t sizes[] = {1, 255, 257, 100003, (1 << 20) + 17};
    for (size_t t = 0; t < sizeof sizes / sizeof sizes[0]; t++) {
        int64_t n = sizes[t];
        float *g = host_rand(n, 61 + t, -1, 1);
        float *gg = dev_of(g, n);
        double want = 2.5, got = 2.5; /* sumsq adds to *out */
        ref->sumsq(ref->ctx, &want, g, n);
        gpu->sumsq(gpu->ctx, &got, gg, n);
        CHECK_MSG(fabs(got - want) <= 1e-10 * fabs(want), "sumsq n=%lld: got %.17g want %.17g",
                  (long long)n, got, want);
        double again = 2.5;
        gpu->sumsq(gpu->ctx, &again, gg, n);
        CHECK_MSG(again == got, "sumsq n=%lld is not deterministic: %.17g then %.17g",
                  (long long)n, got, again);
        gpu->free(gpu->ctx, gg);
        free(g);
    }

    /* k22_clip_grad_norm through the table: sumsq, then scale. */
    const int64_t len[2] = {1000, 3001};
    float *h0 = host_rand(len[0], 71, -1, 1), *h1 = host_rand(len[1], 72, -1, 1);
    float *g0 = dev_of(h0, len[0]), *g1 = dev_of(h1, len[1]);
    float *hb[2] = {h0, h1}, *gbufs[2] = {g0, g1};
    float want = k22_clip_grad_norm(ref, hb, len, 2, 1.0f);
    float got = k22_clip_grad_norm(gpu, gbufs, len, 2, 1.0f);
    CHECK_MSG(fabsf(got - want) <= 1e-6f * want, "clip_grad_norm total: got %.9g want %.9g", got,
              want);
    check_dev("clip_grad_norm buffer 0", g0, h0, len[0], 1e-7, 1e-6);
    check_dev("clip_grad_norm buffer 1", g1, h1, len[1], 1e-7, 1e-6);
    free(h0);
    free(h1);
}

/* ---- AdamW ---- */

static void test_adamw(void)
{
    /* The kernel follows the reference operation by operation with correctly rounded float ops
     * (no FMA), so results should agree to the bit; the tolerance (1e-6 relative) only allows
     * for a host compiler that contracts the CPU side. */
    const int64_t n = 10007;
    k22_adamw_hparams h = {.lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f,
                           .weight_decay = 1e-2f, .step = 0};
    float *p = host_rand(n, 81, -1, 1), *m = k22_xcalloc(n, sizeof(float));
    float *v = k22_xcalloc(n, sizeof(float));
    float *gp = dev_of(p, n), *gm = dev_of(m, n), *gv = dev_of(v, n);
    for (int s = 1; s <= 3; s++) {
        float *g = host_rand(n, 90 + s, -0.1f, 0.1f);
        float *gg = dev_of(g, n);
        h.step = s;
        h.grad_scale = s == 2 ? 1.0f : 0.61f; /* the clip coefficient, read with g */
        ref->adamw_step(ref->ctx, p, g, m, v, n, &h);
        gpu->adamw_step(gpu->ctx, gp, gg, gm, gv, n, &h);
        gpu->free(gpu->ctx, gg);
        free(g);
    }
    check_dev("adamw p after 3 steps", gp, p, n, 1e-7, 1e-6);
    check_dev("adamw m after 3 steps", gm, m, n, 1e-12, 1e-6);
    check_dev("adamw v after 3 steps", gv, v, n, 1e-15, 1e-6);
    free(p), free(m), free(v);
}

/* ---- shared helpers of the table-driven cases below ---- */

/* A random host buffer and its device copy; n may be 0. */
typedef struct {
    float *h, *d;
    int64_t n;
} pair;

static pair pair_rand(int64_t n, uint64_t seed, float lo, float hi)
{
    pair p = {host_rand(n > 0 ? n : 1, seed, lo, hi), NULL, n};
    p.d = dev_of(p.h, n > 0 ? n : 1);
    return p;
}

static void pair_free(pair *p)
{
    free(p->h);
    gpu->free(gpu->ctx, p->d);
    p->h = p->d = NULL;
}

/* Compares the device half with the host half (the reference) without freeing either. */
static int pair_check(const char *what, const pair *p, double atol, double rtol)
{
    float *h = k22_xmalloc((size_t)(p->n > 0 ? p->n : 1) * sizeof(float));
    gpu->to_host(gpu->ctx, h, p->d, (size_t)p->n * sizeof(float));
    int ok = k22_check_close(what, h, p->h, p->n, atol, rtol);
    free(h);
    return ok;
}

/* ---- conv2d ----
 * Every case runs on each convolution implementation of the CUDA backend (main: the default,
 * cuDNN where usable; K22_CUDA_CONV=im2col; im2col in bands) and prints which one ran each
 * direction: a cudnn backend still sends what cuDNN cannot take to im2col. */

typedef struct {
    k22_conv2d_desc d;
    int bias;
    double atol, rtol;
} conv_case;

/* The conv directions each implementation has run since the last call (k22_backend_conv_impl's
 * counts): "cudnn", "im2col", "cudnn+im2col" or "none". */
static const char *conv_ran(void)
{
    static int64_t last_c, last_i;
    int64_t c, i;
    k22_backend_conv_impl(gpu, &c, &i);
    if (c < last_c || i < last_i) last_c = last_i = 0; /* a new backend */
    int dc = c > last_c, di = i > last_i;
    last_c = c, last_i = i;
    return dc && di ? "cudnn+im2col" : dc ? "cudnn" : di ? "im2col" : "none";
}

static void test_conv_case(const conv_case *c, const char *tag)
{
    const k22_conv2d_desc *d = &c->d;
    int OH = k22_conv2d_out_h(d), OW = k22_conv2d_out_w(d);
    int64_t nx = (int64_t)d->B * d->C * d->H * d->W, nw = (int64_t)d->O * d->C * d->KH * d->KW;
    int64_t ny = (int64_t)d->B * d->O * OH * OW;
    pair x = pair_rand(nx, 101, -1, 1), w = pair_rand(nw, 102, -1, 1);
    pair b = pair_rand(d->O, 103, -1, 1);
    pair y = pair_rand(ny, 104, -1, 1), dy = pair_rand(ny, 105, -1, 1);
    pair dx = pair_rand(nx, 106, -1, 1), dw = pair_rand(nw, 107, -1, 1);
    pair db = pair_rand(d->O, 108, -1, 1);
    char what[200], geo[120], ran[3][16];
    snprintf(geo, sizeof geo, "B%d C%d %dx%d O%d k%dx%d s%d,%d p%d,%d,%d,%d%s", d->B, d->C, d->H,
             d->W, d->O, d->KH, d->KW, d->SH, d->SW, d->PT, d->PB, d->PL, d->PR, tag);
    conv_ran();
    ref->conv2d_fwd(ref->ctx, y.h, x.h, w.h, c->bias ? b.h : NULL, d);
    gpu->conv2d_fwd(gpu->ctx, y.d, x.d, w.d, c->bias ? b.d : NULL, d);
    snprintf(ran[0], sizeof ran[0], "%s", conv_ran());
    snprintf(what, sizeof what, "conv2d_fwd %s", geo);
    pair_check(what, &y, c->atol, c->rtol);
    ref->conv2d_bwd(ref->ctx, dx.h, dw.h, c->bias ? db.h : NULL, dy.h, x.h, w.h, d);
    gpu->conv2d_bwd(gpu->ctx, dx.d, dw.d, c->bias ? db.d : NULL, dy.d, x.d, w.d, d);
    snprintf(ran[1], sizeof ran[1], "%s", conv_ran());
    snprintf(what, sizeof what, "conv2d_bwd dx %s", geo);
    pair_check(what, &dx, c->atol, c->rtol);
    snprintf(what, sizeof what, "conv2d_bwd dw %s", geo);
    pair_check(what, &dw, c->atol, c->rtol);
    snprintf(what, sizeof what, "conv2d_bwd dbias %s", geo);
    pair_check(what, &db, c->atol, c->rtol);
    /* Only dx: the skipped gradients stay as they were. */
    ref->conv2d_bwd(ref->ctx, dx.h, NULL, NULL, dy.h, x.h, w.h, d);
    gpu->conv2d_bwd(gpu->ctx, dx.d, NULL, NULL, dy.d, x.d, w.d, d);
    snprintf(ran[2], sizeof ran[2], "%s", conv_ran());
    snprintf(what, sizeof what, "conv2d_bwd dx only %s", geo);
    pair_check(what, &dx, 2 * c->atol, c->rtol);
    pair_check("conv2d_bwd dw untouched by a dx-only call", &dw, c->atol, c->rtol);
    printf("conv2d %s: forward %s, backward %s, dx only %s\n", geo, ran[0], ran[1], ran[2]);
    pair_free(&x), pair_free(&w), pair_free(&b), pair_free(&y), pair_free(&dy);
    pair_free(&dx), pair_free(&dw), pair_free(&db);
}

/* Inputs in [-1, 1]. Every output is an fp32 sum of L products (L = C*KH*KW forward, O*KH*KW for
 * dx, B*OH*OW for dw and dbias; at most ~300 here) against the reference's double sum; its
 * error is about sqrt(L) * 2^-24 * max|partial sum| < 1e-5, so 5e-5 absolute and 1e-4
 * relative hold with margin while a wrong tap or a lost accumulation is off by ~0.1 or more.
 * The same on both implementations: cuDNN's fp32 runs FMA kernels, no TF32 (which would be off by
 * ~1e-3 here). cuDNN pads symmetrically: the (0,1,0,1) case on odd sizes is one it takes (the
 * extra row and column are never read), on even sizes and the uneven case it cannot (im2col). */
static const conv_case conv_cases[] = {
    {{2, 5, 9, 7, 6, 3, 3, 1, 1, 1, 1, 1, 1}, 1, 5e-5, 1e-4},  /* 3x3 same, odd sizes */
    {{2, 4, 8, 10, 3, 3, 3, 2, 2, 0, 1, 0, 1}, 1, 5e-5, 1e-4}, /* diffusers' (0,1,0,1) downsample */
    {{3, 7, 5, 6, 9, 1, 1, 1, 1, 0, 0, 0, 0}, 1, 5e-5, 1e-4},  /* 1x1: the GEMM-only path */
    {{1, 4, 7, 7, 5, 1, 1, 2, 2, 0, 0, 0, 0}, 0, 5e-5, 1e-4},  /* 1x1 strided: im2col path */
    {{1, 3, 11, 13, 4, 4, 4, 2, 2, 1, 1, 1, 1}, 0, 5e-5, 1e-4}, /* 4x4, stride 2 */
    {{2, 3, 6, 5, 2, 3, 1, 1, 2, 2, 0, 0, 1}, 1, 5e-5, 1e-4},  /* rectangular, uneven padding */
    {{1, 3, 9, 11, 4, 3, 3, 2, 2, 0, 1, 0, 1}, 1, 5e-5, 1e-4}, /* (0,1,0,1), odd: cuDNN takes it */
    {{2, 3, 7, 6, 4, 3, 3, 1, 1, 2, 2, 0, 0}, 1, 5e-5, 1e-4},  /* padding differs by axis */
};

static void test_conv2d(const char *tag)
{
    for (size_t i = 0; i < sizeof conv_cases / sizeof conv_cases[0]; i++)
        test_conv_case(&conv_cases[i], tag);
}

/* ---- group norm and layer norm ---- */

typedef struct {
    int B, C, S, G; /* layer norm: N = B, C = C, S and G unused (0) */
    int affine;
    float eps;
} norm_case;

/* Runs one norm (group when c->G > 0, else layer) forward and backward on both backends. The
 * backward of both is fed the reference's mean and rstd, so it is tested on its own. */
static void test_norm_case(const norm_case *c)
{
    int group = c->G > 0;
    int64_t n = group ? (int64_t)c->B * c->C * c->S : (int64_t)c->B * c->C;
    int64_t nstat = group ? (int64_t)c->B * c->G : c->B;
    pair x = pair_rand(n, 201, -2, 3), y = pair_rand(n, 202, -1, 1), dy = pair_rand(n, 203, -1, 1);
    pair ga = pair_rand(c->C, 204, 0.5f, 1.5f), be = pair_rand(c->C, 205, -1, 1);
    pair mean = pair_rand(nstat, 206, -1, 1), rstd = pair_rand(nstat, 207, -1, 1);
    pair dx = pair_rand(n, 208, -1, 1), dg = pair_rand(c->C, 209, -1, 1);
    pair dbt = pair_rand(c->C, 210, -1, 1);
    const float *gh = c->affine ? ga.h : NULL, *bh = c->affine ? be.h : NULL;
    const float *gd = c->affine ? ga.d : NULL, *bd = c->affine ? be.d : NULL;
    char what[160], geo[96];
    if (group) {
        snprintf(geo, sizeof geo, "B%d C%d S%d G%d affine=%d", c->B, c->C, c->S, c->G, c->affine);
        ref->group_norm_fwd(ref->ctx, y.h, mean.h, rstd.h, x.h, gh, bh, c->B, c->C, c->S, c->G,
                            c->eps);
        gpu->group_norm_fwd(gpu->ctx, y.d, mean.d, rstd.d, x.d, gd, bd, c->B, c->C, c->S, c->G,
                            c->eps);
    } else {
        snprintf(geo, sizeof geo, "N%d C%d affine=%d", c->B, c->C, c->affine);
        ref->layer_norm_fwd(ref->ctx, y.h, mean.h, rstd.h, x.h, gh, bh, c->B, c->C, c->eps);
        gpu->layer_norm_fwd(gpu->ctx, y.d, mean.d, rstd.d, x.d, gd, bd, c->B, c->C, c->eps);
    }
    /* Statistics in double on both sides; y differs by float rounding: 1e-5. */
    snprintf(what, sizeof what, "%s_fwd y %s", group ? "group_norm" : "layer_norm", geo);
    pair_check(what, &y, 1e-5, 1e-5);
    snprintf(what, sizeof what, "%s_fwd mean %s", group ? "group_norm" : "layer_norm", geo);
    pair_check(what, &mean, 1e-6, 1e-6);
    snprintf(what, sizeof what, "%s_fwd rstd %s", group ? "group_norm" : "layer_norm", geo);
    pair_check(what, &rstd, 1e-6, 1e-5);
    gpu->to_device(gpu->ctx, mean.d, mean.h, (size_t)nstat * sizeof(float));
    gpu->to_device(gpu->ctx, rstd.d, rstd.h, (size_t)nstat * sizeof(float));
    if (group) {
        ref->group_norm_bwd(ref->ctx, dx.h, c->affine ? dg.h : NULL, c->affine ? dbt.h : NULL, dy.h,
                            x.h, mean.h, rstd.h, gh, c->B, c->C, c->S, c->G);
        gpu->group_norm_bwd(gpu->ctx, dx.d, c->affine ? dg.d : NULL, c->affine ? dbt.d : NULL, dy.d,
                            x.d, mean.d, rstd.d, gd, c->B, c->C, c->S, c->G);
    } else {
        ref->layer_norm_bwd(ref->ctx, dx.h, c->affine ? dg.h : NULL, c->affine ? dbt.h : NULL, dy.h,
                            x.h, mean.h, rstd.h, gh, c->B, c->C);
        gpu->layer_norm_bwd(gpu->ctx, dx.d, c->affine ? dg.d : NULL, c->affine ? dbt.d : NULL, dy.d,
                            x.d, mean.d, rstd.d, gd, c->B, c->C);
    }
    /* Every sum in double on both sides: float rounding of the results only (a segment of
     * length 1 has rstd = 1/sqrt(eps) ~ 300: hence the relative part). */
    snprintf(what, sizeof what, "%s_bwd dx %s", group ? "group_norm" : "layer_norm", geo);
    pair_check(what, &dx, 1e-5, 1e-5);
    snprintf(what, sizeof what, "%s_bwd dgamma %s", group ? "group_norm" : "layer_norm", geo);
    pair_check(what, &dg, 1e-5, 1e-5);
    snprintf(what, sizeof what, "%s_bwd dbeta %s", group ? "group_norm" : "layer_norm", geo);
    pair_check(what, &dbt, 1e-5, 1e-5);
    pair_free(&x), pair_free(&y), pair_free(&dy), pair_free(&ga), pair_free(&be);
    pair_free(&mean), pair_free(&rstd), pair_free(&dx), pair_free(&dg), pair_free(&dbt);
}

static void test_norms(void)
{
    static const norm_case cases[] = {
        {2, 6, 35, 3, 1, 1e-5f},    /* group norm, odd spatial size */
        {3, 12, 17, 4, 0, 1e-6f},   /* no affine */
        {2, 8, 1, 8, 1, 1e-5f},     /* one value per group: variance 0 */
        {1, 4, 9001, 2, 1, 1e-5f},  /* 18002-value groups: several blocks per group */
        {7, 33, 0, 0, 1, 1e-5f},    /* layer norm */
        {1, 1280, 0, 0, 1, 1e-5f},  /* the prior's width */
        {2100, 20, 0, 0, 1, 1e-5f}, /* many rows: dgamma over several row slices */
        {3, 20001, 0, 0, 0, 1e-5f}, /* long rows: several blocks per row */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) test_norm_case(&cases[i]);
}

/* ---- softmax ---- */

static void test_softmax(void)
{
    static const struct {
        int64_t rows;
        int cols;
    } cases[] = {{7, 33}, {3, 1000}, {1, 1}, {70001, 3}};
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        int64_t n = cases[t].rows * cases[t].cols;
        pair x = pair_rand(n, 301 + t, -10, 10), y = pair_rand(n, 311, 0, 1);
        pair dy = pair_rand(n, 321, -1, 1), dx = pair_rand(n, 331, -1, 1);
        char what[96];
        ref->softmax_fwd(ref->ctx, y.h, x.h, cases[t].rows, cases[t].cols);
        gpu->softmax_fwd(gpu->ctx, y.d, x.d, cases[t].rows, cases[t].cols);
        /* Sums in double on both sides; exp in double on both: rounding only. */
        snprintf(what, sizeof what, "softmax_fwd %lldx%d", (long long)cases[t].rows, cases[t].cols);
        pair_check(what, &y, 1e-7, 1e-6);
        gpu->to_device(gpu->ctx, y.d, y.h, (size_t)n * sizeof(float));
        ref->softmax_bwd(ref->ctx, dx.h, dy.h, y.h, cases[t].rows, cases[t].cols);
        gpu->softmax_bwd(gpu->ctx, dx.d, dy.d, y.d, cases[t].rows, cases[t].cols);
        snprintf(what, sizeof what, "softmax_bwd %lldx%d", (long long)cases[t].rows, cases[t].cols);
        pair_check(what, &dx, 1e-6, 1e-6);
        pair_free(&x), pair_free(&y), pair_free(&dy), pair_free(&dx);
    }
}

/* ---- attention ---- */

typedef struct {
    int B, NH, TQ, TK, D, DV;
    int mask;   /* 0 none, 1 one (TQ, TK) mask broadcast over the batch, 2 one per batch item */
    int causal;
    int keep;   /* 0 none, 1 some keys padded, 2 as 1 and batch item 1 fully padded */
} attn_case;

/* -inf (fully masked rows) would make every difference NaN: both sides must agree on where
 * they are, and the rest is compared as numbers. */
static void check_lse(const char *what, const pair *lse)
{
    float *h = k22_xmalloc((size_t)lse->n * sizeof(float));
    float *r = host_dup(lse->h, lse->n);
    gpu->to_host(gpu->ctx, h, lse->d, (size_t)lse->n * sizeof(float));
    int64_t mismatched = 0;
    for (int64_t i = 0; i < lse->n; i++) {
        int hi = isinf(h[i]) && h[i] < 0, ri = isinf(r[i]) && r[i] < 0;
        mismatched += hi != ri;
        if (hi) h[i] = -1e30f;
        if (ri) r[i] = -1e30f;
    }
    CHECK_MSG(mismatched == 0, "%s: %lld rows disagree on being fully masked", what,
              (long long)mismatched);
    /* lse = max + log(sum) of fp32 GEMM logits: 2e-5 absolute for |lse| of a few units. */
    k22_check_close(what, h, r, lse->n, 2e-5, 1e-5);
    free(h);
    free(r);
}

/* The case's key_keep rows (host and device copies: every fifth key dropped, and with keep 2
 * the whole of sample 1) and its host and device descriptors. */
static void attn_descs(const attn_case *c, const pair *mask, uint8_t **keep, uint8_t **dkeep,
                       k22_attn_desc *dh, k22_attn_desc *dd)
{
    *keep = k22_xmalloc((size_t)c->B * c->TK);
    for (int b = 0; b < c->B; b++)
        for (int j = 0; j < c->TK; j++)
            (*keep)[b * c->TK + j] = c->keep == 2 && b == 1 ? 0 : (j % 5 != 3);
    *dkeep = gpu->alloc(gpu->ctx, (size_t)c->B * c->TK);
    gpu->to_device(gpu->ctx, *dkeep, *keep, (size_t)c->B * c->TK);
    k22_attn_desc h = {c->B, c->NH, c->TQ, c->TK, c->D, c->DV, 1.0f / sqrtf((float)c->D),
                       c->mask ? mask->h : NULL, c->mask == 2 ? (int64_t)c->TQ * c->TK : 0,
                       c->causal, c->keep ? *keep : NULL};
    *dh = *dd = h;
    dd->mask = c->mask ? mask->d : NULL;
    dd->key_keep = c->keep ? *dkeep : NULL;
}

static void test_attention_case(const attn_case *c, const char *tag)
{
    int64_t nq = (int64_t)c->B * c->NH * c->TQ * c->D, nk = (int64_t)c->B * c->NH * c->TK * c->D;
    int64_t nv = (int64_t)c->B * c->NH * c->TK * c->DV, no = (int64_t)c->B * c->NH * c->TQ * c->DV;
    int64_t nmask = (c->mask == 2 ? c->B : 1) * (int64_t)c->TQ * c->TK;
    pair q = pair_rand(nq, 401, -1, 1), k = pair_rand(nk, 402, -1, 1);
    pair v = pair_rand(nv, 403, -1, 1);
    pair out = pair_rand(no, 404, -1, 1);
    pair lse = pair_rand((int64_t)c->B * c->NH * c->TQ, 405, -1, 1);
    pair mask = pair_rand(nmask, 406, -2, 0), dout = pair_rand(no, 407, -1, 1);
    pair dq = pair_rand(nq, 408, -1, 1), dk = pair_rand(nk, 409, -1, 1);
    pair dv = pair_rand(nv, 410, -1, 1);
    uint8_t *keep, *dkeep;
    k22_attn_desc dh, dd;
    attn_descs(c, &mask, &keep, &dkeep, &dh, &dd);
    char what[200], geo[128];
    snprintf(geo, sizeof geo, "B%d NH%d TQ%d TK%d D%d DV%d mask%d causal%d keep%d%s", c->B, c->NH,
             c->TQ, c->TK, c->D, c->DV, c->mask, c->causal, c->keep, tag);

    ref->attention_fwd(ref->ctx, out.h, lse.h, q.h, k.h, v.h, &dh);
    gpu->attention_fwd(gpu->ctx, out.d, lse.d, q.d, k.d, v.d, &dd);
    /* out: fp32 GEMMs over D then TK terms against double sums; |out| <= 1: 2e-5 absolute. */
    snprintf(what, sizeof what, "attention_fwd out %s", geo);
    pair_check(what, &out, 2e-5, 1e-4);
    snprintf(what, sizeof what, "attention_fwd lse %s", geo);
    check_lse(what, &lse);

    /* Backward from the reference's out and lse, accumulating into random gradients. */
    gpu->to_device(gpu->ctx, out.d, out.h, (size_t)no * sizeof(float));
    gpu->to_device(gpu->ctx, lse.d, lse.h, (size_t)lse.n * sizeof(float));
    ref->attention_bwd(ref->ctx, dq.h, dk.h, dv.h, dout.h, q.h, k.h, v.h, out.h, lse.h, &dh);
    gpu->attention_bwd(gpu->ctx, dq.d, dk.d, dv.d, dout.d, q.d, k.d, v.d, out.d, lse.d, &dd);
    /* Sums of up to max(TQ, TK) fp32 products of magnitude <= ~1 each: 5e-5 absolute. */
    snprintf(what, sizeof what, "attention_bwd dq %s", geo);
    pair_check(what, &dq, 5e-5, 1e-4);
    snprintf(what, sizeof what, "attention_bwd dk %s", geo);
    pair_check(what, &dk, 5e-5, 1e-4);
    snprintf(what, sizeof what, "attention_bwd dv %s", geo);
    pair_check(what, &dv, 5e-5, 1e-4);
    /* dv alone: dq and dk are left alone. */
    ref->attention_bwd(ref->ctx, NULL, NULL, dv.h, dout.h, q.h, k.h, v.h, out.h, lse.h, &dh);
    gpu->attention_bwd(gpu->ctx, NULL, NULL, dv.d, dout.d, q.d, k.d, v.d, out.d, lse.d, &dd);
    snprintf(what, sizeof what, "attention_bwd dv only %s", geo);
    pair_check(what, &dv, 1e-4, 1e-4);
    pair_check("attention_bwd dq untouched by a dv-only call", &dq, 5e-5, 1e-4);
    pair_free(&q), pair_free(&k), pair_free(&v), pair_free(&out), pair_free(&lse);
    pair_free(&mask), pair_free(&dout), pair_free(&dq), pair_free(&dk), pair_free(&dv);
    gpu->free(gpu->ctx, dkeep);
    free(keep);
}

static const attn_case attn_cases[] = {
    {2, 3, 17, 17, 8, 8, 0, 0, 0},  /* plain self-attention */
    {2, 2, 9, 13, 16, 5, 2, 0, 1},  /* cross, per-batch mask, padded keys, DV != D */
    {1, 2, 12, 12, 8, 8, 1, 1, 0},  /* causal + broadcast mask (the prior) */
    {3, 1, 5, 7, 4, 4, 0, 0, 2},    /* batch item 1 fully padded: out 0, lse -inf */
    {2, 4, 77, 81, 64, 64, 1, 1, 1}, /* prior-sized heads */
    {1, 3, 130, 100, 32, 32, 0, 0, 1}, /* three query blocks, two key blocks of the fused kernels */
    {2, 1, 33, 40, 40, 36, 2, 0, 0},  /* D 40, DV 36: padded to 64 in the fused kernels */
    {1, 2, 20, 24, 80, 72, 0, 1, 0},  /* a head over 64: the GEMM path at every precision */
};

static void test_attention(const char *tag)
{
    for (size_t i = 0; i < sizeof attn_cases / sizeof attn_cases[0]; i++)
        test_attention_case(&attn_cases[i], tag);
}

/* ---- data movement: concat, permute, upsample, avgpool, resize (all exact) ---- */

static void test_concat(void)
{
    static const int64_t cases[][4] = {{3, 2, 5, 7}, {1, 0, 4, 3}, {4, 3, 3, 1}, {2, 6, 1, 129}};
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        int64_t o = cases[t][0], na = cases[t][1], nb = cases[t][2], in = cases[t][3];
        pair a = pair_rand(o * na * in, 501, -1, 1), b = pair_rand(o * nb * in, 502, -1, 1);
        pair y = pair_rand(o * (na + nb) * in, 503, -1, 1), dy = pair_rand(y.n, 504, -1, 1);
        pair da = pair_rand(a.n, 505, -1, 1), db = pair_rand(b.n, 506, -1, 1);
        char what[96];
        ref->concat_fwd(ref->ctx, y.h, a.h, b.h, o, na, nb, in);
        gpu->concat_fwd(gpu->ctx, y.d, a.d, b.d, o, na, nb, in);
        snprintf(what, sizeof what, "concat_fwd %lldx(%lld+%lld)x%lld (exact)", (long long)o,
                 (long long)na, (long long)nb, (long long)in);
        pair_check(what, &y, 0, 0);
        ref->concat_bwd(ref->ctx, da.h, db.h, dy.h, o, na, nb, in);
        gpu->concat_bwd(gpu->ctx, da.d, db.d, dy.d, o, na, nb, in);
        ref->concat_bwd(ref->ctx, NULL, db.h, dy.h, o, na, nb, in);
        gpu->concat_bwd(gpu->ctx, NULL, db.d, dy.d, o, na, nb, in);
        snprintf(what, sizeof what, "concat_bwd da (exact) case %zu", t);
        pair_check(what, &da, 0, 0);
        snprintf(what, sizeof what, "concat_bwd db twice (exact) case %zu", t);
        pair_check(what, &db, 0, 0);
        pair_free(&a), pair_free(&b), pair_free(&y), pair_free(&dy), pair_free(&da), pair_free(&db);
    }
}

static void test_permute(void)
{
    static const struct {
        int ndim;
        int64_t shape[K22_PERMUTE_DIMS];
        int perm[K22_PERMUTE_DIMS];
    } cases[] = {
        {5, {2, 7, 3, 3, 5}, {2, 0, 3, 1, 4}}, /* stacked q, k, v (B, T, 3, H, D) -> (3, B, H, T, D) */
        {5, {3, 1, 2, 5, 2}, {4, 3, 2, 1, 0}},
        {4, {2, 3, 4, 5}, {0, 2, 1, 3}}, /* (B, T, H, D) <-> (B, H, T, D) */
        {4, {2, 3, 4, 5}, {3, 1, 0, 2}},
        {3, {3, 5, 7}, {2, 0, 1}},
        {2, {6, 9}, {1, 0}},
        {1, {10}, {0}},
    };
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        int64_t n = 1;
        for (int i = 0; i < cases[t].ndim; i++) n *= cases[t].shape[i];
        pair x = pair_rand(n, 601, -1, 1), y = pair_rand(n, 602, -1, 1);
        pair dy = pair_rand(n, 603, -1, 1), dx = pair_rand(n, 604, -1, 1);
        char what[64];
        ref->permute_fwd(ref->ctx, y.h, x.h, cases[t].ndim, cases[t].shape, cases[t].perm);
        gpu->permute_fwd(gpu->ctx, y.d, x.d, cases[t].ndim, cases[t].shape, cases[t].perm);
        snprintf(what, sizeof what, "permute_fwd case %zu (exact)", t);
        pair_check(what, &y, 0, 0);
        ref->permute_bwd(ref->ctx, dx.h, dy.h, cases[t].ndim, cases[t].shape, cases[t].perm);
        gpu->permute_bwd(gpu->ctx, dx.d, dy.d, cases[t].ndim, cases[t].shape, cases[t].perm);
        snprintf(what, sizeof what, "permute_bwd case %zu (exact)", t);
        pair_check(what, &dx, 0, 0);
        pair_free(&x), pair_free(&y), pair_free(&dy), pair_free(&dx);
    }
}

/* Upsample backward sums four values in double on both sides, avgpool's quarter is exact: all
 * of these agree to the bit. */
static void test_resample(void)
{
    static const int cases[][4] = {{2, 3, 5, 7}, {1, 2, 6, 8}, {1, 1, 1, 1}, {2, 2, 7, 9}};
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        int B = cases[t][0], C = cases[t][1], H = cases[t][2], W = cases[t][3];
        int64_t n = (int64_t)B * C * H * W;
        pair x = pair_rand(n, 701, -1, 1), up = pair_rand(4 * n, 702, -1, 1);
        pair dup = pair_rand(4 * n, 703, -1, 1), dx = pair_rand(n, 704, -1, 1);
        pair pool = pair_rand((int64_t)B * C * (H / 2) * (W / 2), 705, -1, 1);
        pair dpool = pair_rand(pool.n, 706, -1, 1);
        char what[96];
        ref->upsample2x_fwd(ref->ctx, up.h, x.h, B, C, H, W);
        gpu->upsample2x_fwd(gpu->ctx, up.d, x.d, B, C, H, W);
        snprintf(what, sizeof what, "upsample2x_fwd %dx%dx%dx%d (exact)", B, C, H, W);
        pair_check(what, &up, 0, 0);
        ref->upsample2x_bwd(ref->ctx, dx.h, dup.h, B, C, H, W);
        gpu->upsample2x_bwd(gpu->ctx, dx.d, dup.d, B, C, H, W);
        snprintf(what, sizeof what, "upsample2x_bwd %dx%dx%dx%d (exact)", B, C, H, W);
        pair_check(what, &dx, 0, 0);
        ref->avgpool2x_fwd(ref->ctx, pool.h, x.h, B, C, H, W);
        gpu->avgpool2x_fwd(gpu->ctx, pool.d, x.d, B, C, H, W);
        snprintf(what, sizeof what, "avgpool2x_fwd %dx%dx%dx%d (exact)", B, C, H, W);
        pair_check(what, &pool, 0, 0);
        ref->avgpool2x_bwd(ref->ctx, dx.h, dpool.h, B, C, H, W);
        gpu->avgpool2x_bwd(gpu->ctx, dx.d, dpool.d, B, C, H, W);
        snprintf(what, sizeof what, "avgpool2x_bwd %dx%dx%dx%d (exact)", B, C, H, W);
        pair_check(what, &dx, 0, 0);
        pair_free(&x), pair_free(&up), pair_free(&dup), pair_free(&dx), pair_free(&pool),
            pair_free(&dpool);
    }
}

static void test_resize(void)
{
    static const int cases[][6] = {
        {1, 2, 6, 6, 74, 74}, /* where torch's float rule differs from integer division */
        {2, 3, 5, 7, 10, 14}, /* MoVQ's 2x */
        {1, 1, 8, 8, 3, 5},   /* down */
        {1, 2, 4, 4, 4, 4},   /* identity */
    };
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        int B = cases[t][0], C = cases[t][1], H = cases[t][2], W = cases[t][3];
        int OH = cases[t][4], OW = cases[t][5];
        pair x = pair_rand((int64_t)B * C * H * W, 801, -1, 1);
        pair y = pair_rand((int64_t)B * C * OH * OW, 802, -1, 1);
        char what[96];
        ref->resize_nearest_fwd(ref->ctx, y.h, x.h, B, C, H, W, OH, OW);
        gpu->resize_nearest_fwd(gpu->ctx, y.d, x.d, B, C, H, W, OH, OW);
        snprintf(what, sizeof what, "resize_nearest_fwd %dx%d -> %dx%d (exact)", H, W, OH, OW);
        pair_check(what, &y, 0, 0);
        pair_free(&x), pair_free(&y);
    }
}

/* ---- per-(sample, channel) affine ---- */

static void test_chan_affine(void)
{
    static const struct {
        int B, C;
        int64_t S;
        int scale, shift;
        float off;
    } cases[] = {{2, 3, 50, 1, 1, 1.0f}, {2, 3, 50, 1, 0, 0.0f}, {1, 4, 7, 0, 1, 0.0f},
                 {3, 2, 5000, 1, 1, 1.0f}, {1, 1, 1, 1, 1, 1.0f}};
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        int B = cases[t].B, C = cases[t].C;
        int64_t S = cases[t].S, n = (int64_t)B * C * S;
        pair x = pair_rand(n, 901, -2, 2), y = pair_rand(n, 902, -1, 1);
        pair dy = pair_rand(n, 903, -1, 1);
        pair sc = pair_rand((int64_t)B * C, 904, -1, 1), sh = pair_rand((int64_t)B * C, 905, -1, 1);
        pair dx = pair_rand(n, 906, -1, 1), dsc = pair_rand(sc.n, 907, -1, 1);
        pair dsh = pair_rand(sc.n, 908, -1, 1);
        float off = cases[t].off;
        char what[128];
        ref->chan_affine_fwd(ref->ctx, y.h, x.h, cases[t].scale ? sc.h : NULL,
                             cases[t].shift ? sh.h : NULL, off, B, C, S);
        gpu->chan_affine_fwd(gpu->ctx, y.d, x.d, cases[t].scale ? sc.d : NULL,
                             cases[t].shift ? sh.d : NULL, off, B, C, S);
        /* One multiply and one add, each rounded on both sides: exact. */
        snprintf(what, sizeof what, "chan_affine_fwd case %zu (exact)", t);
        pair_check(what, &y, 0, 0);
        ref->chan_affine_bwd(ref->ctx, dx.h, cases[t].scale ? dsc.h : NULL,
                             cases[t].shift ? dsh.h : NULL, dy.h, x.h, cases[t].scale ? sc.h : NULL,
                             off, B, C, S);
        gpu->chan_affine_bwd(gpu->ctx, dx.d, cases[t].scale ? dsc.d : NULL,
                             cases[t].shift ? dsh.d : NULL, dy.d, x.d, cases[t].scale ? sc.d : NULL,
                             off, B, C, S);
        snprintf(what, sizeof what, "chan_affine_bwd dx case %zu (exact)", t);
        pair_check(what, &dx, 0, 0);
        /* Sums in double on both sides, rounded once. */
        snprintf(what, sizeof what, "chan_affine_bwd dscale case %zu", t);
        pair_check(what, &dsc, 1e-6, 1e-6);
        snprintf(what, sizeof what, "chan_affine_bwd dshift case %zu", t);
        pair_check(what, &dsh, 1e-6, 1e-6);
        pair_free(&x), pair_free(&y), pair_free(&dy), pair_free(&sc), pair_free(&sh);
        pair_free(&dx), pair_free(&dsc), pair_free(&dsh);
    }
}

/* ---- timestep embedding ---- */

static void test_timestep_embed(void)
{
    static const struct {
        int N, dim, flip;
        float shift, scale, max_period;
    } cases[] = {{5, 32, 1, 1.0f, 1.0f, 10000.0f},  /* diffusers' UNet default shift 1 */
                 {3, 33, 0, 0.0f, 1.0f, 10000.0f},  /* odd dim: zero pad */
                 {4, 320, 1, 0.0f, 1.0f, 10000.0f}, /* UNet width */
                 {2, 2, 0, 0.0f, 2.0f, 100.0f}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int N = cases[c].N, dim = cases[c].dim;
        pair t = pair_rand(N, 1001, 0, 999), y = pair_rand((int64_t)N * dim, 1002, -1, 1);
        pair dy = pair_rand(y.n, 1003, -1, 1), dt = pair_rand(N, 1004, -1, 1);
        char what[96];
        ref->timestep_embed_fwd(ref->ctx, y.h, t.h, N, dim, cases[c].flip, cases[c].shift,
                                cases[c].scale, cases[c].max_period);
        gpu->timestep_embed_fwd(gpu->ctx, y.d, t.d, N, dim, cases[c].flip, cases[c].shift,
                                cases[c].scale, cases[c].max_period);
        /* The same float operations on both sides, with exp, sin and cos correctly rounded on
         * the GPU and within half an ulp or so in glibc: a frequency 1 ulp off moves an
         * argument near 1000 rad by 6e-5, the worst that can happen. */
        snprintf(what, sizeof what, "timestep_embed_fwd N%d dim%d flip%d", N, dim, cases[c].flip);
        pair_check(what, &y, 1e-4, 0);
        ref->timestep_embed_bwd(ref->ctx, dt.h, dy.h, t.h, N, dim, cases[c].flip, cases[c].shift,
                                cases[c].scale, cases[c].max_period);
        gpu->timestep_embed_bwd(gpu->ctx, dt.d, dy.d, t.d, N, dim, cases[c].flip, cases[c].shift,
                                cases[c].scale, cases[c].max_period);
        /* Up to 160 terms, each as above: 1e-3. */
        snprintf(what, sizeof what, "timestep_embed_bwd N%d dim%d flip%d", N, dim, cases[c].flip);
        pair_check(what, &dt, 1e-3, 1e-4);
        pair_free(&t), pair_free(&y), pair_free(&dy), pair_free(&dt);
    }
}

/* ---- weighted MSE ---- */

static void test_mse(void)
{
    static const struct {
        int B;
        int64_t N;
        int weighted;
    } cases[] = {{4, 1000, 1}, {1, 7, 0}, {3, 36864, 1}, {5, 1280, 0}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int B = cases[c].B;
        int64_t N = cases[c].N, n = (int64_t)B * N;
        pair p = pair_rand(n, 1101, -1, 1), tg = pair_rand(n, 1102, -1, 1);
        pair w = pair_rand(B, 1103, 0, 5), loss = pair_rand(1, 1104, -1, 1);
        pair per = pair_rand(B, 1105, -1, 1), dp = pair_rand(n, 1106, -1, 1);
        const float *wh = cases[c].weighted ? w.h : NULL, *wd = cases[c].weighted ? w.d : NULL;
        char what[96];
        ref->mse_fwd(ref->ctx, loss.h, per.h, p.h, tg.h, wh, B, N);
        gpu->mse_fwd(gpu->ctx, loss.d, per.d, p.d, tg.d, wd, B, N);
        /* Double sums on both sides, rounded once. */
        snprintf(what, sizeof what, "mse_fwd loss B%d N%lld w%d", B, (long long)N,
                 cases[c].weighted);
        pair_check(what, &loss, 0, 1e-6);
        snprintf(what, sizeof what, "mse_fwd per_sample B%d N%lld", B, (long long)N);
        pair_check(what, &per, 0, 1e-6);
        gpu->mse_fwd(gpu->ctx, loss.d, NULL, p.d, tg.d, wd, B, N); /* per_sample may be NULL */
        pair_check("mse_fwd loss without per_sample", &loss, 0, 1e-6);
        ref->mse_bwd(ref->ctx, dp.h, 0.75f, p.h, tg.h, wh, B, N);
        gpu->mse_bwd(gpu->ctx, dp.d, 0.75f, p.d, tg.d, wd, B, N);
        /* The same double expression, rounded once, added once: exact up to the final add. */
        snprintf(what, sizeof what, "mse_bwd B%d N%lld", B, (long long)N);
        pair_check(what, &dp, 1e-9, 1e-6);
        pair_free(&p), pair_free(&tg), pair_free(&w), pair_free(&loss), pair_free(&per);
        pair_free(&dp);
    }
}

/* ---- bf16 / fp16 GEMMs (k22_precision, issue 10) ----
 * Under K22_PREC_BF16/FP16 every GEMM operand is rounded to 16 bits (nearest even) and the
 * products are summed in fp32. Two references:
 *  - cpu-ref (double sums) fed operands rounded on the host with k22_precision_round: the exact
 *    semantics for matmul, linear and conv (im2col only copies values). A product of two bf16
 *    (8-bit significands) or fp16 (11-bit) values is exact in fp32, so the GPU may differ from
 *    it only by fp32 accumulation, and the fp32 cases' tolerances apply unchanged.
 *  - the cpu backend ("cpu", OpenBLAS) set to the same precision, for every GEMM-class op,
 *    attention included: both sides round the same operands and sum in fp32 in different orders,
 *    so twice the fp32 tolerances. Attention has intermediates (P, dS) that the two backends
 *    compute in fp32 in different ways; see test_prec_attention_case for what that allows. */

static k22_backend *fast; /* the cpu backend, at the precision under test */

static const char *prec_tag(k22_precision p)
{
    return p == K22_PREC_BF16 ? "bf16" : p == K22_PREC_FP16 ? "fp16" : "fp32";
}

/* A host copy of h with every value rounded to p. */
static float *host_rounded(const float *h, int64_t n, k22_precision p)
{
    float *r = k22_xmalloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    for (int64_t i = 0; i < n; i++) r[i] = k22_precision_round(p, h[i]);
    return r;
}

/* The rounded copy of a pair's host half (what cpu-ref is fed). */
static float *pair_rounded(const pair *x, k22_precision p)
{
    return host_rounded(x->h, x->n, p);
}

static int prec_set(k22_precision p)
{
    k22_err err;
    k22_err_clear(&err);
    int ok = k22_backend_set_precision(gpu, p, &err) == K22_OK;
    CHECK_MSG(ok, "cuda set_precision %s: %s", prec_tag(p), err.msg);
    k22_err_clear(&err);
    int okc = k22_backend_set_precision(fast, p, &err) == K22_OK;
    CHECK_MSG(okc, "cpu set_precision %s: %s", prec_tag(p), err.msg);
    return ok && okc;
}

/* Copies device d to the host (caller frees). */
static float *dev_fetch(const float *d, int64_t n)
{
    float *h = k22_xmalloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    gpu->to_host(gpu->ctx, h, d, (size_t)n * sizeof(float));
    return h;
}

static void test_prec_matmul_case(const mm_case *c, k22_precision p)
{
    int64_t szA = (int64_t)c->M * c->K, szB = (int64_t)c->K * c->N, szC = (int64_t)c->M * c->N;
    int64_t sA = c->padA < 0 ? 0 : szA + c->padA, sB = c->padB < 0 ? 0 : szB + c->padB;
    int64_t sC = szC + c->padC;
    int64_t nA = c->off + (c->batch - 1) * sA + szA + 1;
    int64_t nB = c->off + (c->batch - 1) * sB + szB + 1;
    int64_t nC = c->off + (c->batch - 1) * sC + szC;
    float *A = host_rand(nA, 1211, -1, 1), *B = host_rand(nB, 1212, -1, 1);
    float *C = host_rand(nC, 1213, -1, 1);
    float *Ar = host_rounded(A, nA, p), *Br = host_rounded(B, nB, p);
    float *Cref = host_dup(C, nC), *Cfast = host_dup(C, nC);
    float *dA = dev_of(A, nA), *dB = dev_of(B, nB), *dC = dev_of(C, nC);
    ref->matmul(ref->ctx, c->ta, c->tb, c->M, c->N, c->K, c->alpha, Ar + c->off, sA,
                Br + c->off, sB, c->beta, Cref + c->off, sC, c->batch);
    fast->matmul(fast->ctx, c->ta, c->tb, c->M, c->N, c->K, c->alpha, A + c->off, sA,
                 B + c->off, sB, c->beta, Cfast + c->off, sC, c->batch);
    gpu->matmul(gpu->ctx, c->ta, c->tb, c->M, c->N, c->K, c->alpha, dA + c->off, sA,
                dB + c->off, sB, c->beta, dC + c->off, sC, c->batch);
    float *got = dev_fetch(dC, nC);
    char what[192];
    snprintf(what, sizeof what, "%s matmul %s (M=%d N=%d K=%d batch=%d) vs cpu-ref on rounded",
             prec_tag(p), c->name, c->M, c->N, c->K, c->batch);
    k22_check_close(what, got, Cref, nC, c->atol, c->rtol);
    snprintf(what, sizeof what, "%s matmul %s (M=%d N=%d K=%d batch=%d) vs cpu %s", prec_tag(p),
             c->name, c->M, c->N, c->K, c->batch, prec_tag(p));
    k22_check_close(what, got, Cfast, nC, 2 * c->atol, 2 * c->rtol);
    gpu->free(gpu->ctx, dA), gpu->free(gpu->ctx, dB), gpu->free(gpu->ctx, dC);
    free(A), free(B), free(C), free(Ar), free(Br), free(Cref), free(Cfast), free(got);
}

/* The rounding really happens, to nearest: against fp32 on the unrounded operands, every
 * element is within the rounding bound sum_k |a_ik b_kj| (2u + u^2) (u = 2^-9 bf16, 2^-12
 * fp16: half an ulp, relative) plus the fp32 summation tolerance, and the largest difference is
 * well above what fp32 alone gives (1e-5 here): > 1e-3 for bf16, > 1e-4 for fp16 (expected
 * ~1e-2 and ~1.5e-3 over 703 sums of 53 products of |v| <= 1). */
static void test_prec_differs(k22_precision p)
{
    const int M = 37, N = 19, K = 53;
    float *A = host_rand((int64_t)M * K, 1221, -1, 1), *B = host_rand((int64_t)K * N, 1222, -1, 1);
    float *C = k22_xcalloc((size_t)M * N, sizeof(float));
    float *dA = dev_of(A, (int64_t)M * K), *dB = dev_of(B, (int64_t)K * N);
    float *dC = dev_of(C, (int64_t)M * N);
    ref->matmul(ref->ctx, 0, 0, M, N, K, 1.0f, A, 0, B, 0, 0.0f, C, 0, 1);
    gpu->matmul(gpu->ctx, 0, 0, M, N, K, 1.0f, dA, 0, dB, 0, 0.0f, dC, 0, 1);
    float *got = dev_fetch(dC, (int64_t)M * N);
    double u = p == K22_PREC_BF16 ? 0x1p-9 : 0x1p-12, worst = 0;
    int64_t outside = 0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double bound = 1e-5, e = fabs((double)got[i * N + j] - C[i * N + j]);
            for (int k = 0; k < K; k++)
                bound += fabs((double)A[i * K + k] * B[k * N + j]) * (2 * u + u * u);
            outside += e > bound;
            worst = e > worst ? e : worst;
        }
    CHECK_MSG(outside == 0, "%s matmul: %lld elements beyond the rounding bound", prec_tag(p),
              (long long)outside);
    double floor_ = p == K22_PREC_BF16 ? 1e-3 : 1e-4;
    CHECK_MSG(worst > floor_, "%s matmul equals fp32 (max diff %.3g <= %.3g): not rounding?",
              prec_tag(p), worst, floor_);
    if (getenv("K22_TEST_VERBOSE"))
        printf("%s vs fp32 matmul: max diff %.3g\n", prec_tag(p), worst);
    gpu->free(gpu->ctx, dA), gpu->free(gpu->ctx, dB), gpu->free(gpu->ctx, dC);
    free(A), free(B), free(C), free(got);
}

/* fp16 overflows to inf past 65504: 65519 rounds down to 65504, 65520 (the tie) to even, which
 * is inf, -70000 to -inf; both backends. K = 1, B = 1: C is the rounded A. */
static void test_prec_fp16_overflow(void)
{
    const float a[3] = {65519.0f, 65520.0f, -70000.0f}, b[1] = {1.0f};
    const float want[3] = {65504.0f, INFINITY, -INFINITY};
    float c[3] = {0, 0, 0};
    float *dA = dev_of(a, 3), *dB = dev_of(b, 1), *dC = dev_of(c, 3);
    fast->matmul(fast->ctx, 0, 0, 3, 1, 1, 1.0f, a, 0, b, 0, 0.0f, c, 0, 1);
    gpu->matmul(gpu->ctx, 0, 0, 3, 1, 1, 1.0f, dA, 0, dB, 0, 0.0f, dC, 0, 1);
    float *got = dev_fetch(dC, 3);
    for (int i = 0; i < 3; i++) {
        CHECK_MSG(got[i] == want[i], "fp16 cuda: %.9g rounds to %.9g, want %.9g", a[i], got[i],
                  want[i]);
        CHECK_MSG(c[i] == want[i], "fp16 cpu: %.9g rounds to %.9g, want %.9g", a[i], c[i], want[i]);
    }
    gpu->free(gpu->ctx, dA), gpu->free(gpu->ctx, dB), gpu->free(gpu->ctx, dC);
    free(got);
}

/* Some cuBLASLt versions have no batched algorithm with a zero stride: matmul then makes one
 * call per item (matmul.cu's k22_cuda_lt_gemm_items; without it the op dies). The emulator
 * refuses such a batch under K22_EMU_NO_ZERO_STRIDE; the shapes are this test's own, since a
 * shape's plan is cached after its first heuristic query. */
static void test_matmul_per_item(k22_precision p)
{
    static const mm_case cases[] = {
        {"per item broadcast B", 0, 1, 23, 41, 33, 1.0f, 0.0f, 4, 0, -1, 0, 0, 1e-5, 1e-5},
        {"per item broadcast A", 1, 1, 10, 12, 14, 1.0f, 1.0f, 3, -1, 2, 1, 1, 1e-5, 1e-5},
    };
    if (!getenv("K22_CUDA_EMU")) return;
    setenv("K22_EMU_NO_ZERO_STRIDE", "1", 1);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (p == K22_PREC_FP32) test_matmul_case(&cases[i]);
        else test_prec_matmul_case(&cases[i], p);
    }
    unsetenv("K22_EMU_NO_ZERO_STRIDE");
}

static void test_prec_matmul(k22_precision p)
{
    /* Tolerances as test_matmul's (see the section comment); broadcast A and B (stride 0) go
     * through one packed copy reused by every batch item. */
    static const mm_case cases[] = {
        {"NN", 0, 0, 37, 19, 53, 0.75f, 0.0f, 1, 0, 0, 0, 0, 1e-5, 1e-5},
        {"NT", 0, 1, 37, 19, 53, 0.75f, 0.0f, 1, 0, 0, 0, 0, 1e-5, 1e-5},
        {"TN beta", 1, 0, 37, 19, 53, 1.0f, 1.5f, 1, 0, 0, 0, 0, 1e-5, 1e-5},
        {"TT beta", 1, 1, 16, 64, 32, -0.5f, 1.0f, 1, 0, 0, 0, 0, 1e-5, 1e-5},
        {"batched padded misaligned", 1, 0, 21, 13, 40, 1.0f, 0.5f, 3, 5, 3, 7, 1, 1e-5, 1e-5},
        {"batched broadcast B", 0, 1, 24, 40, 32, 1.0f, 0.0f, 4, 0, -1, 0, 0, 1e-5, 1e-5},
        {"batched broadcast A", 1, 1, 9, 11, 13, 1.0f, 1.0f, 3, -1, 2, 1, 1, 1e-5, 1e-5},
        {"K=0 beta", 0, 0, 5, 7, 0, 1.0f, 0.5f, 2, 0, 0, 0, 0, 0, 0},
        {"large", 0, 1, 256, 192, 1024, 1.0f, 1.0f, 1, 0, 0, 0, 0, 2e-4, 1e-4},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) test_prec_matmul_case(&cases[i], p);
    test_matmul_per_item(p);
    test_prec_differs(p);
}

static void test_prec_linear_case(int N, int I, int O, k22_precision p)
{
    pair x = pair_rand((int64_t)N * I, 1231, -1, 1), w = pair_rand((int64_t)O * I, 1232, -1, 1);
    pair b = pair_rand(O, 1233, -1, 1), y = pair_rand((int64_t)N * O, 1234, -1, 1);
    pair dy = pair_rand((int64_t)N * O, 1235, -1, 1), dx = pair_rand(x.n, 1236, -1, 1);
    pair dw = pair_rand(w.n, 1237, -1, 1), db = pair_rand(O, 1238, -1, 1);
    float *xr = pair_rounded(&x, p), *wr = pair_rounded(&w, p), *dyr = pair_rounded(&dy, p);
    float *yf = host_dup(y.h, y.n), *dxf = host_dup(dx.h, dx.n), *dwf = host_dup(dw.h, dw.n);
    float *dbf = host_dup(db.h, O);
    char what[160];
    /* Bias and its gradient are fp32 on every side (not GEMM operands): db from unrounded dy. */
    ref->linear_fwd(ref->ctx, y.h, xr, wr, b.h, N, I, O);
    fast->linear_fwd(fast->ctx, yf, x.h, w.h, b.h, N, I, O);
    gpu->linear_fwd(gpu->ctx, y.d, x.d, w.d, b.d, N, I, O);
    ref->linear_bwd(ref->ctx, dx.h, dw.h, NULL, dyr, xr, wr, N, I, O);
    ref->linear_bwd(ref->ctx, NULL, NULL, db.h, dy.h, x.h, w.h, N, I, O);
    fast->linear_bwd(fast->ctx, dxf, dwf, dbf, dy.h, x.h, w.h, N, I, O);
    gpu->linear_bwd(gpu->ctx, dx.d, dw.d, db.d, dy.d, x.d, w.d, N, I, O);
    /* Tolerances as test_linear's: 1e-5 for sums of <= 65 terms, 1e-3 for the 3000-row dw. */
    double tol = N > 1000 ? 1e-3 : 1e-5, rtol = N > 1000 ? 1e-4 : 1e-5;
    const pair *outs[4] = {&y, &dx, &dw, &db};
    const float *fasts[4] = {yf, dxf, dwf, dbf};
    const char *names[4] = {"linear_fwd y", "linear_bwd dx", "linear_bwd dw", "linear_bwd db"};
    for (int i = 0; i < 4; i++) {
        float *got = dev_fetch(outs[i]->d, outs[i]->n);
        snprintf(what, sizeof what, "%s %s N=%d I=%d O=%d vs cpu-ref on rounded", prec_tag(p),
                 names[i], N, I, O);
        k22_check_close(what, got, outs[i]->h, outs[i]->n, tol, rtol);
        snprintf(what, sizeof what, "%s %s N=%d I=%d O=%d vs cpu %s", prec_tag(p), names[i], N,
                 I, O, prec_tag(p));
        k22_check_close(what, got, fasts[i], outs[i]->n, 2 * tol, 2 * rtol);
        free(got);
    }
    pair_free(&x), pair_free(&w), pair_free(&b), pair_free(&y), pair_free(&dy);
    pair_free(&dx), pair_free(&dw), pair_free(&db);
    free(xr), free(wr), free(dyr), free(yf), free(dxf), free(dwf), free(dbf);
}

/* The unit roundoff of p's 16-bit type: the largest relative error of one rounding. */
static double prec_unit(k22_precision p)
{
    return p == K22_PREC_BF16 ? 0x1p-8 : 0x1p-11;
}

/* got against want, where want holds conv (the convolution's own result: the sum before the bias,
 * or what backward adds to the gradient) plus fp32 terms. Per element
 * |got - want| <= atol + rtol*|want| + u*|conv|: u = 0 where the result is an fp32 sum, the unit
 * roundoff where cuDNN rounded it once to 16 bits (conv NULL: no such term). Counts one check;
 * prints the worst element, as a fraction of its bound, on failure or under K22_TEST_VERBOSE. */
static int check_conv_out(const char *what, const float *got, const float *want, const float *conv,
                          int64_t n, double atol, double rtol, double u)
{
    double worst = 0, max_abs = 0;
    int64_t wi = 0, bad = 0;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - want[i]);
        double tol = atol + rtol * fabs((double)want[i]) + (conv ? u * fabs((double)conv[i]) : 0);
        double r = isnan(e) ? INFINITY : tol > 0 ? e / tol : e > 0 ? INFINITY : 0;
        if (!(e <= tol)) bad++;
        if (r > worst) worst = r, wi = i;
        if (e > max_abs) max_abs = e;
    }
    k22_test_checks++;
    if (bad) k22_test_failures++;
    if (bad || getenv("K22_TEST_VERBOSE"))
        fprintf(stderr, "%s %s: %lld of %lld elements outside atol %g rtol %g + %g |conv|; max "
                "abs err %g; worst [%lld] got %.9g want %.9g conv %.9g (%.3f of its bound)\n",
                bad ? "FAIL" : "ok", what, (long long)bad, (long long)n, atol, rtol, u, max_abs,
                (long long)wi, n ? (double)got[wi] : 0.0, n ? (double)want[wi] : 0.0,
                n && conv ? (double)conv[wi] : 0.0, worst);
    return !bad;
}

/* A conv case at precision p (tolerances: the fp32 case's, see conv_cases, as the section
 * comment says; plus, on the cudnn path, one rounding of each conv result to 16 bits: u|conv|
 * with u = 2^-8 bf16, 2^-11 fp16, which a wrong tap or a lost accumulation still exceeds by far).
 * The backward runs dx, then dw with dbias, so the test knows which implementation ran each. */
static void test_prec_conv_case(const conv_case *c, const char *tag, k22_precision p)
{
    const k22_conv2d_desc *d = &c->d;
    int OH = k22_conv2d_out_h(d), OW = k22_conv2d_out_w(d);
    int64_t nx = (int64_t)d->B * d->C * d->H * d->W, nw = (int64_t)d->O * d->C * d->KH * d->KW;
    int64_t ny = (int64_t)d->B * d->O * OH * OW;
    pair x = pair_rand(nx, 1241, -1, 1), w = pair_rand(nw, 1242, -1, 1);
    pair b = pair_rand(d->O, 1243, -1, 1), y = pair_rand(ny, 1244, -1, 1);
    pair dy = pair_rand(ny, 1245, -1, 1), dx = pair_rand(nx, 1246, -1, 1);
    pair dw = pair_rand(nw, 1247, -1, 1), db = pair_rand(d->O, 1248, -1, 1);
    float *xr = pair_rounded(&x, p), *wr = pair_rounded(&w, p), *dyr = pair_rounded(&dy, p);
    float *yf = host_dup(y.h, ny), *dxf = host_dup(dx.h, nx), *dwf = host_dup(dw.h, nw);
    float *dbf = host_dup(db.h, d->O);
    float *cy = k22_xcalloc((size_t)ny, sizeof(float)), *cdx = k22_xcalloc((size_t)nx, sizeof(float));
    float *cdw = k22_xcalloc((size_t)nw, sizeof(float));
    const float *bh = c->bias ? b.h : NULL;
    const char *ran[4];
    /* The convolutions' own results (what the cudnn path rounds): from zero, without bias. */
    ref->conv2d_fwd(ref->ctx, cy, xr, wr, NULL, d);
    ref->conv2d_bwd(ref->ctx, cdx, cdw, NULL, dyr, xr, wr, d);
    ref->conv2d_fwd(ref->ctx, y.h, xr, wr, bh, d);
    fast->conv2d_fwd(fast->ctx, yf, x.h, w.h, bh, d);
    conv_ran();
    gpu->conv2d_fwd(gpu->ctx, y.d, x.d, w.d, c->bias ? b.d : NULL, d);
    ran[0] = conv_ran();
    ref->conv2d_bwd(ref->ctx, dx.h, dw.h, NULL, dyr, xr, wr, d);
    if (c->bias) ref->conv2d_bwd(ref->ctx, NULL, NULL, db.h, dy.h, x.h, w.h, d);
    fast->conv2d_bwd(fast->ctx, dxf, dwf, c->bias ? dbf : NULL, dy.h, x.h, w.h, d);
    gpu->conv2d_bwd(gpu->ctx, dx.d, NULL, NULL, dy.d, x.d, w.d, d);
    ran[1] = conv_ran();
    gpu->conv2d_bwd(gpu->ctx, NULL, dw.d, c->bias ? db.d : NULL, dy.d, x.d, w.d, d);
    ran[2] = conv_ran();
    ran[3] = "fp32 kernel"; /* dbias: conv.cu's reduction on both paths, never rounded */
    const pair *outs[4] = {&y, &dx, &dw, &db};
    const float *fasts[4] = {yf, dxf, dwf, dbf}, *convs[4] = {cy, cdx, cdw, NULL};
    const char *names[4] = {"conv2d_fwd y", "conv2d_bwd dx", "conv2d_bwd dw", "conv2d_bwd dbias"};
    char what[260], geo[120];
    snprintf(geo, sizeof geo, "B%d C%d %dx%d O%d k%dx%d s%d,%d p%d,%d,%d,%d%s", d->B, d->C, d->H,
             d->W, d->O, d->KH, d->KW, d->SH, d->SW, d->PT, d->PB, d->PL, d->PR, tag);
    for (int i = 0; i < 4; i++) {
        float *got = dev_fetch(outs[i]->d, outs[i]->n);
        double u = strcmp(ran[i], "cudnn") == 0 ? prec_unit(p) : 0;
        snprintf(what, sizeof what, "%s %s %s on %s vs cpu-ref on rounded", prec_tag(p), names[i],
                 geo, ran[i]);
        check_conv_out(what, got, outs[i]->h, convs[i], outs[i]->n, c->atol, c->rtol, u);
        snprintf(what, sizeof what, "%s %s %s on %s vs cpu %s", prec_tag(p), names[i], geo,
                 ran[i], prec_tag(p));
        check_conv_out(what, got, fasts[i], convs[i], outs[i]->n, 2 * c->atol, 2 * c->rtol, u);
        free(got);
    }
    printf("%s conv2d %s: forward %s, backward data %s, backward filter %s\n", prec_tag(p), geo,
           ran[0], ran[1], ran[2]);
    pair_free(&x), pair_free(&w), pair_free(&b), pair_free(&y), pair_free(&dy);
    pair_free(&dx), pair_free(&dw), pair_free(&db);
    free(xr), free(wr), free(dyr), free(yf), free(dxf), free(dwf), free(dbf);
    free(cy), free(cdx), free(cdw);
}

/* ---- 16-bit convolution inputs (conv2d_fwd_x16, conv2d_bwd_x16) ---- */

static uint16_t round16(k22_precision p, float v)
{
    return p == K22_PREC_FP16 ? k22_f32_to_f16(v) : k22_f32_to_bf16(v);
}

static float widen16(k22_precision p, uint16_t h)
{
    return p == K22_PREC_FP16 ? k22_f16_to_f32(h) : k22_bf16_to_f32(h);
}

/* Device a against device b (n floats), bit for bit; counts one check. */
static int check_bits(const char *what, const float *a, const float *b, int64_t n)
{
    float *ha = dev_fetch(a, n), *hb = dev_fetch(b, n);
    int64_t at = -1;
    for (int64_t i = 0; i < n && at < 0; i++)
        if (memcmp(&ha[i], &hb[i], sizeof(float))) at = i;
    CHECK_MSG(at < 0, "%s: [%lld] is %.9g where the float path has %.9g (exact)", what,
              (long long)at, at < 0 ? 0.0 : ha[at], at < 0 ? 0.0 : hb[at]);
    free(ha), free(hb);
    return at < 0;
}

/* A conv case at precision p with x given as 16-bit values (x16): every output must be, bit for
 * bit (tolerance: none), this backend's conv2d_fwd / conv2d_bwd on x16 widened to float, run on
 * the same implementation; x16 at a 256-byte aligned address, then one element off 16-byte
 * alignment (cuDNN reads the first where it lies and a copy of the second). Backward: dx, dw and
 * dbias together from non-zero gradients, then dw alone onto them. */
static void test_prec_conv_x16_case(const conv_case *c, const char *tag, k22_precision p)
{
    const k22_conv2d_desc *d = &c->d;
    int64_t nx = (int64_t)d->B * d->C * d->H * d->W, nw = (int64_t)d->O * d->C * d->KH * d->KW;
    int64_t ny = (int64_t)d->B * d->O * k22_conv2d_out_h(d) * k22_conv2d_out_w(d);
    int64_t ng = nx + nw + d->O; /* the gradients dx | dw | dbias */
    float *xh = host_rand(nx, 1251, -1, 1), *g0 = host_rand(ng, 1255, -1, 1);
    uint16_t *x16h = k22_xmalloc((size_t)nx * sizeof(uint16_t));
    for (int64_t i = 0; i < nx; i++) x16h[i] = round16(p, xh[i]), xh[i] = widen16(p, x16h[i]);
    float *xw = dev_of(xh, nx);
    uint16_t *x16d = gpu->alloc(gpu->ctx, (size_t)(nx + 1) * sizeof(uint16_t));
    pair w = pair_rand(nw, 1252, -1, 1), b = pair_rand(d->O, 1253, -1, 1);
    pair dy = pair_rand(ny, 1254, -1, 1);
    const float *bias = c->bias ? b.d : NULL;
    float *y = gpu->alloc(gpu->ctx, (size_t)ny * sizeof(float));
    float *y16 = gpu->alloc(gpu->ctx, (size_t)ny * sizeof(float));
    float *g = dev_of(g0, ng), *g16 = dev_of(g0, ng);
    char geo[120], what[240];
    snprintf(geo, sizeof geo, "B%d C%d %dx%d O%d k%dx%d s%d,%d p%d,%d,%d,%d%s", d->B, d->C, d->H,
             d->W, d->O, d->KH, d->KW, d->SH, d->SW, d->PT, d->PB, d->PL, d->PR, tag);
    for (int off = 0; off < 2; off++) {
        uint16_t *x16 = x16d + off;
        const char *ran[3], *ran16[3];
        gpu->to_device(gpu->ctx, x16, x16h, (size_t)nx * sizeof(uint16_t));
        gpu->to_device(gpu->ctx, g, g0, (size_t)ng * sizeof(float));
        gpu->to_device(gpu->ctx, g16, g0, (size_t)ng * sizeof(float));
        const char *at = off ? "x16 one element off alignment" : "x16 aligned";
        conv_ran();
        gpu->conv2d_fwd(gpu->ctx, y, xw, w.d, bias, d);
        ran[0] = conv_ran();
        gpu->conv2d_fwd_x16(gpu->ctx, y16, x16, w.d, bias, d);
        ran16[0] = conv_ran();
        snprintf(what, sizeof what, "%s conv2d_fwd_x16 y %s, %s, on %s", prec_tag(p), geo, at,
                 ran16[0]);
        check_bits(what, y16, y, ny);
        gpu->conv2d_bwd(gpu->ctx, g, g + nx, bias ? g + nx + nw : NULL, dy.d, xw, w.d, d);
        ran[1] = conv_ran();
        gpu->conv2d_bwd_x16(gpu->ctx, g16, g16 + nx, bias ? g16 + nx + nw : NULL, dy.d, x16, w.d,
                            d);
        ran16[1] = conv_ran();
        snprintf(what, sizeof what, "%s conv2d_bwd_x16 dx, dw, dbias %s, %s, on %s", prec_tag(p),
                 geo, at, ran16[1]);
        check_bits(what, g16, g, ng);
        gpu->conv2d_bwd(gpu->ctx, NULL, g + nx, NULL, dy.d, xw, w.d, d);
        ran[2] = conv_ran();
        gpu->conv2d_bwd_x16(gpu->ctx, NULL, g16 + nx, NULL, dy.d, x16, w.d, d);
        ran16[2] = conv_ran();
        snprintf(what, sizeof what, "%s conv2d_bwd_x16 dw alone %s, %s, on %s", prec_tag(p), geo,
                 at, ran16[2]);
        check_bits(what, g16, g, ng);
        for (int i = 0; i < 3; i++)
            CHECK_MSG(strcmp(ran[i], ran16[i]) == 0, "%s conv2d %s, %s: call %d ran on %s, the "
                      "float path on %s", prec_tag(p), geo, at, i, ran16[i], ran[i]);
        printf("%s conv2d x16 %s, %s: forward %s, backward %s, dw alone %s\n", prec_tag(p), geo,
               at, ran16[0], ran16[1], ran16[2]);
    }
    pair_free(&w), pair_free(&b), pair_free(&dy);
    gpu->free(gpu->ctx, xw), gpu->free(gpu->ctx, x16d), gpu->free(gpu->ctx, y);
    gpu->free(gpu->ctx, y16), gpu->free(gpu->ctx, g), gpu->free(gpu->ctx, g16);
    free(xh), free(g0), free(x16h);
}

/* ---- 16-bit linear inputs (linear_fwd_x16, linear_bwd_x16), act_fwd_y16, layer_norm_fwd_y16 ---- */

/* A linear case at precision p with x given as 16-bit values: y, then dx, dw and db from non-zero
 * gradients, must be, bit for bit (tolerance: none), this backend's linear_fwd / linear_bwd on
 * x16 widened to float; x16 at an aligned address and one element off (cuBLASLt reads it in place
 * when aligned with rows of a multiple of 8 values, else a widened copy, packed as floats are).
 * Then act_fwd_y16 (GELU; none: x itself) and layer_norm_fwd_y16 (N rows of I) on the same x:
 * act_fwd's and layer_norm_fwd's floats rounded to p, bit for bit, and layer_norm_fwd's statistics. */
static void test_prec_linear_x16_case(int N, int I, int O, k22_precision p)
{
    int64_t nx = (int64_t)N * I, nw = (int64_t)O * I, ny = (int64_t)N * O, ng = nx + nw + O;
    float *xh = host_rand(nx, 1261, -1, 1), *g0 = host_rand(ng, 1265, -1, 1);
    uint16_t *x16h = k22_xmalloc((size_t)nx * sizeof(uint16_t));
    for (int64_t i = 0; i < nx; i++) x16h[i] = round16(p, xh[i]), xh[i] = widen16(p, x16h[i]);
    float *xw = dev_of(xh, nx);
    uint16_t *x16d = gpu->alloc(gpu->ctx, (size_t)(nx + 1) * sizeof(uint16_t));
    pair w = pair_rand(nw, 1262, -1, 1), b = pair_rand(O, 1263, -1, 1), dy = pair_rand(ny, 1264, -1, 1);
    float *y = gpu->alloc(gpu->ctx, (size_t)ny * sizeof(float));
    float *y16 = gpu->alloc(gpu->ctx, (size_t)ny * sizeof(float));
    float *g = dev_of(g0, ng), *g16 = dev_of(g0, ng);
    char what[200];
    for (int off = 0; off < 2; off++) {
        uint16_t *x16 = x16d + off;
        const char *at = off ? "x16 one element off alignment" : "x16 aligned";
        gpu->to_device(gpu->ctx, x16, x16h, (size_t)nx * sizeof(uint16_t));
        gpu->to_device(gpu->ctx, g, g0, (size_t)ng * sizeof(float));
        gpu->to_device(gpu->ctx, g16, g0, (size_t)ng * sizeof(float));
        gpu->linear_fwd(gpu->ctx, y, xw, w.d, b.d, N, I, O);
        gpu->linear_fwd_x16(gpu->ctx, y16, x16, w.d, b.d, N, I, O);
        snprintf(what, sizeof what, "%s linear_fwd_x16 y N=%d I=%d O=%d, %s", prec_tag(p), N, I, O, at);
        check_bits(what, y16, y, ny);
        gpu->linear_bwd(gpu->ctx, g, g + nx, g + nx + nw, dy.d, xw, w.d, N, I, O);
        gpu->linear_bwd_x16(gpu->ctx, g16, g16 + nx, g16 + nx + nw, dy.d, x16, w.d, N, I, O);
        snprintf(what, sizeof what, "%s linear_bwd_x16 dx, dw, db N=%d I=%d O=%d, %s", prec_tag(p), N, I, O, at);
        check_bits(what, g16, g, ng);
    }
    float *a = gpu->alloc(gpu->ctx, (size_t)nx * sizeof(float));
    uint16_t *a16 = gpu->alloc(gpu->ctx, (size_t)nx * sizeof(uint16_t));
    uint16_t *a16h = k22_xmalloc((size_t)nx * sizeof(uint16_t));
    gpu->act_fwd(gpu->ctx, K22_ACT_GELU, a, xw, nx);
    gpu->act_fwd_y16(gpu->ctx, K22_ACT_GELU, a16, xw, nx);
    float *ah = dev_fetch(a, nx);
    gpu->to_host(gpu->ctx, a16h, a16, (size_t)nx * sizeof(uint16_t));
    int64_t off = 0;
    for (int64_t i = 0; i < nx; i++) off += a16h[i] != round16(p, ah[i]);
    CHECK_MSG(off == 0, "%s act_fwd_y16 (gelu) on %lld values: %lld are not act_fwd's floats rounded (exact)",
              prec_tag(p), (long long)nx, (long long)off);
    gpu->act_fwd_y16(gpu->ctx, K22_ACT_NONE, a16, xw, nx); /* no activation: x rounded */
    gpu->to_host(gpu->ctx, a16h, a16, (size_t)nx * sizeof(uint16_t));
    off = 0;
    for (int64_t i = 0; i < nx; i++) off += a16h[i] != x16h[i];
    CHECK_MSG(off == 0, "%s act_fwd_y16 (none) on %lld values: %lld are not x rounded (exact)", prec_tag(p),
              (long long)nx, (long long)off);
    float *st = gpu->alloc(gpu->ctx, (size_t)4 * N * sizeof(float));
    /* gamma, beta: any I values (w's first two rows; O >= 2) */
    gpu->layer_norm_fwd(gpu->ctx, a, st, st + N, xw, w.d, w.d + I, N, I, 1e-5f);
    gpu->layer_norm_fwd_y16(gpu->ctx, a16, st + 2 * N, st + 3 * N, xw, w.d, w.d + I, N, I, 1e-5f);
    float *lh = dev_fetch(a, nx), *sth = dev_fetch(st, 4 * (int64_t)N);
    gpu->to_host(gpu->ctx, a16h, a16, (size_t)nx * sizeof(uint16_t));
    off = 0;
    for (int64_t i = 0; i < nx; i++) off += a16h[i] != round16(p, lh[i]);
    CHECK_MSG(off == 0 && !memcmp(sth, sth + 2 * N, (size_t)2 * N * sizeof(float)),
              "%s layer_norm_fwd_y16 %dx%d: %lld values are not layer_norm_fwd's floats rounded, or "
              "the statistics differ (exact)", prec_tag(p), N, I, (long long)off);
    gpu->free(gpu->ctx, st), free(lh), free(sth);
    pair_free(&w), pair_free(&b), pair_free(&dy);
    gpu->free(gpu->ctx, xw), gpu->free(gpu->ctx, x16d), gpu->free(gpu->ctx, y), gpu->free(gpu->ctx, y16);
    gpu->free(gpu->ctx, g), gpu->free(gpu->ctx, g16), gpu->free(gpu->ctx, a), gpu->free(gpu->ctx, a16);
    free(xh), free(g0), free(x16h), free(a16h), free(ah);
}

/* Attention at precision p against the cpu backend at p. Both round the same GEMM operands:
 * q, k (scores), P and v (out), dout, v, P (dV, dP), dS, k, q (dQ, dK; both round the unscaled
 * dS = P (dP - D) and apply the softmax scale as the GEMM's alpha). But P and dS are themselves
 * fp32 results the backends compute differently (exp in double on the GPU, expf on the CPU;
 * sums in other orders), a few fp32 ulps apart; where such a value lies within those ulps of a
 * rounding midpoint the two round it to neighbouring 16-bit values, one ulp (2^-7 relative at
 * most in bf16, 2^-10 in fp16) apart. That happens to about one value in 10^4 (bf16) or 10^3
 * (fp16), each moving one term of one sum. Hence two measures: the NMSE against the cpu
 * (prec_nmse: 1e-9 bf16, 2e-10 fp16: a few such terms among thousands; bf16 against fp32 is
 * ~1e-5; fp16 was 1e-10 until the 100-key case measured 1.21e-10 on both the GEMM path and the
 * fused kernels: averaging over more keys makes |out| smaller, so each flip weighs more) and a max-abs bound of a few such terms (prec_atol: 2e-3 bf16, 3e-4 fp16, for
 * |values| <= 1; fp32 rounding alone is 5e-5). lse is fp32 from fp32 logits: 2e-5 as in fp32. */
static void test_prec_attention_case(const attn_case *c, const char *tag, k22_precision p)
{
    int64_t nq = (int64_t)c->B * c->NH * c->TQ * c->D, nk = (int64_t)c->B * c->NH * c->TK * c->D;
    int64_t nv = (int64_t)c->B * c->NH * c->TK * c->DV, no = (int64_t)c->B * c->NH * c->TQ * c->DV;
    int64_t nl = (int64_t)c->B * c->NH * c->TQ;
    int64_t nmask = (c->mask == 2 ? c->B : 1) * (int64_t)c->TQ * c->TK;
    pair q = pair_rand(nq, 1251, -1, 1), k = pair_rand(nk, 1252, -1, 1);
    pair v = pair_rand(nv, 1253, -1, 1), out = pair_rand(no, 1254, -1, 1);
    pair lse = pair_rand(nl, 1255, -1, 1), mask = pair_rand(nmask, 1256, -2, 0);
    pair dout = pair_rand(no, 1257, -1, 1), dq = pair_rand(nq, 1258, -1, 1);
    pair dk = pair_rand(nk, 1259, -1, 1), dv = pair_rand(nv, 1260, -1, 1);
    uint8_t *keep, *dkeep;
    k22_attn_desc dh, dd;
    attn_descs(c, &mask, &keep, &dkeep, &dh, &dd);
    double atol = p == K22_PREC_BF16 ? 2e-3 : 3e-4, nmse_max = p == K22_PREC_BF16 ? 1e-9 : 2e-10;
    char what[240], geo[160];
    snprintf(geo, sizeof geo, "B%d NH%d TQ%d TK%d D%d DV%d mask%d causal%d keep%d%s", c->B, c->NH,
             c->TQ, c->TK, c->D, c->DV, c->mask, c->causal, c->keep, tag);

    fast->attention_fwd(fast->ctx, out.h, lse.h, q.h, k.h, v.h, &dh);
    gpu->attention_fwd(gpu->ctx, out.d, lse.d, q.d, k.d, v.d, &dd);
    snprintf(what, sizeof what, "%s attention_fwd lse %s vs cpu", prec_tag(p), geo);
    check_lse(what, &lse);
    /* Backward from the cpu's out and lse, so it is tested on its own. */
    float *o_gpu = dev_fetch(out.d, no);
    gpu->to_device(gpu->ctx, out.d, out.h, (size_t)no * sizeof(float));
    gpu->to_device(gpu->ctx, lse.d, lse.h, (size_t)nl * sizeof(float));
    fast->attention_bwd(fast->ctx, dq.h, dk.h, dv.h, dout.h, q.h, k.h, v.h, out.h, lse.h, &dh);
    gpu->attention_bwd(gpu->ctx, dq.d, dk.d, dv.d, dout.d, q.d, k.d, v.d, out.d, lse.d, &dd);
    const float *gots[4] = {o_gpu, NULL, NULL, NULL};
    const pair *refs[4] = {&out, &dq, &dk, &dv};
    const char *names[4] = {"attention_fwd out", "attention_bwd dq", "attention_bwd dk",
                            "attention_bwd dv"};
    for (int i = 0; i < 4; i++) {
        float *got = gots[i] ? (float *)gots[i] : dev_fetch(refs[i]->d, refs[i]->n);
        snprintf(what, sizeof what, "%s %s %s vs cpu %s", prec_tag(p), names[i], geo, prec_tag(p));
        k22_check_close(what, got, refs[i]->h, refs[i]->n, atol, 1e-3);
        double e = k22_nmse(got, refs[i]->h, refs[i]->n);
        CHECK_MSG(e <= nmse_max, "%s: nmse %.3g > %.3g", what, e, nmse_max);
        if (getenv("K22_TEST_VERBOSE")) printf("%s: nmse %.3g\n", what, e);
        free(got);
    }
    pair_free(&q), pair_free(&k), pair_free(&v), pair_free(&out), pair_free(&lse);
    pair_free(&mask), pair_free(&dout), pair_free(&dq), pair_free(&dk), pair_free(&dv);
    gpu->free(gpu->ctx, dkeep);
    free(keep);
}

/* An attention case at precision p with q, k, v given as 16-bit values (attention_fwd_x16 /
 * attention_bwd_x16): out and lse, then dq, dk, dv accumulated onto non-zero values, must be, bit
 * for bit (tolerance: none), this backend's attention_fwd / attention_bwd on the 16-bit values
 * widened. Heads of 16, 32 and 64 with DV = D go to the mma.sync kernels as they are (counted:
 * attn_flash16), the others through a widened copy; with `off` q16 sits one element off 16-byte
 * alignment, which must take the widened copy too. */
static void test_prec_attention_x16_case(const attn_case *c, k22_precision p, int off)
{
    int64_t nq = (int64_t)c->B * c->NH * c->TQ * c->D, nk = (int64_t)c->B * c->NH * c->TK * c->D;
    int64_t nv = (int64_t)c->B * c->NH * c->TK * c->DV, no = (int64_t)c->B * c->NH * c->TQ * c->DV;
    int64_t nl = (int64_t)c->B * c->NH * c->TQ, n3 = nq + nk + nv;
    int64_t nmask = (c->mask == 2 ? c->B : 1) * (int64_t)c->TQ * c->TK;
    float *xh = host_rand(n3, 1281, -1, 1), *g0 = host_rand(n3, 1282, -1, 1);
    uint16_t *x16h = k22_xmalloc((size_t)n3 * sizeof(uint16_t));
    for (int64_t i = 0; i < n3; i++) x16h[i] = round16(p, xh[i]), xh[i] = widen16(p, x16h[i]);
    float *xw = dev_of(xh, n3), *g = dev_of(g0, n3), *g16 = dev_of(g0, n3);
    /* q16, k16, v16 each 256-byte aligned (separate blocks), q16 moved by off */
    uint16_t *q16b = gpu->alloc(gpu->ctx, (size_t)(nq + 1) * sizeof(uint16_t));
    uint16_t *k16 = gpu->alloc(gpu->ctx, (size_t)nk * sizeof(uint16_t));
    uint16_t *v16 = gpu->alloc(gpu->ctx, (size_t)nv * sizeof(uint16_t)), *q16 = q16b + off;
    gpu->to_device(gpu->ctx, q16, x16h, (size_t)nq * sizeof(uint16_t));
    gpu->to_device(gpu->ctx, k16, x16h + nq, (size_t)nk * sizeof(uint16_t));
    gpu->to_device(gpu->ctx, v16, x16h + nq + nk, (size_t)nv * sizeof(uint16_t));
    pair mask = pair_rand(nmask, 1283, -2, 0), dout = pair_rand(no, 1284, -1, 1);
    float *out = gpu->alloc(gpu->ctx, (size_t)(no + nl) * sizeof(float));
    float *out16 = gpu->alloc(gpu->ctx, (size_t)(no + nl) * sizeof(float));
    uint8_t *keep, *dkeep;
    k22_attn_desc dh, dd;
    attn_descs(c, &mask, &keep, &dkeep, &dh, &dd);
    k22_cuda_stats s0, s1;
    k22_backend_cuda_stats(gpu, &s0);
    gpu->attention_fwd(gpu->ctx, out, out + no, xw, xw + nq, xw + nq + nk, &dd);
    gpu->attention_fwd_x16(gpu->ctx, out16, out16 + no, q16, k16, v16, &dd);
    char what[240];
    snprintf(what, sizeof what, "%s attention_fwd_x16 out, lse B%d NH%d TQ%d TK%d D%d DV%d%s", prec_tag(p), c->B,
             c->NH, c->TQ, c->TK, c->D, c->DV, off ? ", q16 one element off alignment" : "");
    check_bits(what, out16, out, no + nl);
    gpu->attention_bwd(gpu->ctx, g, g + nq, g + nq + nk, dout.d, xw, xw + nq, xw + nq + nk, out, out + no, &dd);
    gpu->attention_bwd_x16(gpu->ctx, g16, g16 + nq, g16 + nq + nk, dout.d, q16, k16, v16, out, out + no, &dd);
    snprintf(what, sizeof what, "%s attention_bwd_x16 dq, dk, dv B%d NH%d TQ%d TK%d D%d DV%d%s", prec_tag(p), c->B,
             c->NH, c->TQ, c->TK, c->D, c->DV, off ? ", q16 one element off alignment" : "");
    check_bits(what, g16, g, n3);
    k22_backend_cuda_stats(gpu, &s1);
    int in_place = !off && c->D == c->DV && (c->D == 16 || c->D == 32 || c->D == 64) && !strcmp(s1.attn, "fused-mma");
    CHECK_MSG(s1.attn_flash16 - s0.attn_flash16 == (in_place ? 2 : 0),
              "%s: %lld calls read the 16-bit q, k, v as given, want %d", what,
              (long long)(s1.attn_flash16 - s0.attn_flash16), in_place ? 2 : 0);
    pair_free(&mask), pair_free(&dout);
    gpu->free(gpu->ctx, xw), gpu->free(gpu->ctx, g), gpu->free(gpu->ctx, g16), gpu->free(gpu->ctx, q16b);
    gpu->free(gpu->ctx, k16), gpu->free(gpu->ctx, v16), gpu->free(gpu->ctx, out), gpu->free(gpu->ctx, out16);
    gpu->free(gpu->ctx, dkeep);
    free(keep), free(xh), free(g0), free(x16h);
}

/* Every GEMM-class op at bf16 and fp16 (`parts`: PREC_GEMMS for matmul and linear, PREC_CONV,
 * PREC_ATTN, PREC_ATTN16 the 16-bit q, k, v entries; the other backends rerun only what differs
 * on them); then fp32 again, which must be bit for bit what it was before (a matmul checked
 * against a run made before any precision was set). */
enum { PREC_GEMMS = 1, PREC_CONV = 2, PREC_ATTN = 4, PREC_ATTN16 = 8 };
static void test_precision(const char *tag, int parts)
{
    const k22_precision precs[2] = {K22_PREC_BF16, K22_PREC_FP16};
    const int M = 37, N = 19, K = 53;
    float *A = host_rand((int64_t)M * K, 1271, -1, 1), *B = host_rand((int64_t)K * N, 1272, -1, 1);
    float *dA = dev_of(A, (int64_t)M * K), *dB = dev_of(B, (int64_t)K * N);
    float *dC = gpu->alloc(gpu->ctx, (size_t)M * N * sizeof(float));
    gpu->matmul(gpu->ctx, 0, 0, M, N, K, 1.0f, dA, 0, dB, 0, 0.0f, dC, 0, 1);
    float *before = dev_fetch(dC, (int64_t)M * N);
    for (int i = 0; i < 2; i++) {
        k22_precision p = precs[i];
        if (!prec_set(p)) continue;
        if (parts & PREC_GEMMS) {
            test_prec_matmul(p);
            test_prec_linear_case(33, 65, 47, p);
            test_prec_linear_case(3000, 16, 70, p);
            test_prec_linear_x16_case(33, 65, 47, p); /* rows of 65: widened, packed */
            test_prec_linear_x16_case(40, 64, 24, p); /* rows of 64: read in place when aligned */
            if (p == K22_PREC_FP16) test_prec_fp16_overflow();
        }
        for (size_t j = 0; (parts & PREC_CONV) && j < sizeof conv_cases / sizeof conv_cases[0]; j++) {
            test_prec_conv_case(&conv_cases[j], tag, p);
            test_prec_conv_x16_case(&conv_cases[j], tag, p);
        }
        for (size_t j = 0; (parts & PREC_ATTN) && j < sizeof attn_cases / sizeof attn_cases[0]; j++)
            test_prec_attention_case(&attn_cases[j], tag, p);
        for (size_t j = 0; (parts & PREC_ATTN16) && j < sizeof attn_cases / sizeof attn_cases[0]; j++)
            test_prec_attention_x16_case(&attn_cases[j], p, 0);
        if (parts & PREC_ATTN16) test_prec_attention_x16_case(&attn_cases[4], p, 1); /* heads of 64 */
    }
    prec_set(K22_PREC_FP32);
    gpu->matmul(gpu->ctx, 0, 0, M, N, K, 1.0f, dA, 0, dB, 0, 0.0f, dC, 0, 1);
    float *after = dev_fetch(dC, (int64_t)M * N);
    char what[96];
    snprintf(what, sizeof what, "fp32 matmul after bf16/fp16 unchanged (exact)%s", tag);
    k22_check_close(what, after, before, (int64_t)M * N, 0, 0);
    gpu->free(gpu->ctx, dA), gpu->free(gpu->ctx, dB), gpu->free(gpu->ctx, dC);
    free(A), free(B), free(before), free(after);
}

/* ---- cuBLASLt plans ----
 * The emulator's own count of heuristic queries (a weak symbol: absent on a GPU build) checks the
 * plan cache independently of the backend's count. */

long long k22_emu_lt_heuristic_calls(void) __attribute__((weak));

static k22_cuda_stats cuda_stats(void)
{
    k22_cuda_stats st;
    CHECK_MSG(k22_backend_cuda_stats(gpu, &st), "k22_backend_cuda_stats: not a cuda backend");
    return st;
}

/* stderr into a file between capture_start and capture_end, which counts the lines there that
 * begin with prefix (and, in *with_sub, those of them that also contain sub) and passes every
 * other line (the checks' FAIL and ok lines) on to stderr. */
typedef struct {
    int saved;
    FILE *log;
} capture;

static capture capture_start(void)
{
    capture c = {dup(2), tmpfile()};
    fflush(stderr);
    if (c.saved < 0 || !c.log || dup2(fileno(c.log), 2) < 0) CHECK_MSG(0, "cannot send stderr to a file");
    return c;
}

static int capture_end(capture c, const char *prefix, const char *sub, int *with_sub)
{
    char line[512];
    int n = 0;
    *with_sub = 0;
    fflush(stderr);
    if (c.saved >= 0) {
        dup2(c.saved, 2);
        close(c.saved);
    }
    if (!c.log) return 0;
    rewind(c.log);
    while (fgets(line, sizeof line, c.log)) {
        if (strncmp(line, prefix, strlen(prefix))) {
            fputs(line, stderr);
            continue;
        }
        n++;
        *with_sub += strstr(line, sub) != NULL;
    }
    fclose(c.log);
    return n;
}

/* A repeated GEMM shape queries cuBLASLt's heuristic once; a new alignment is a new shape. */
static void test_lt_plans(void)
{
    const int M = 13, N = 11, K = 16; /* lda 64 bytes: A one float off is a new alignment */
    float *A = host_rand((int64_t)M * K + 1, 1451, -1, 1), *B = host_rand((int64_t)K * N, 1452, -1, 1);
    float *dA = dev_of(A, (int64_t)M * K + 1), *dB = dev_of(B, (int64_t)K * N);
    float *dC = gpu->alloc(gpu->ctx, (size_t)M * N * sizeof(float));
    long long e[4] = {0, 0, 0, 0};
    int64_t h[4];
    for (int i = 0; i < 4; i++) { /* new, again, misaligned A (new), again */
        h[i] = cuda_stats().gemm_heuristics;
        if (k22_emu_lt_heuristic_calls) e[i] = k22_emu_lt_heuristic_calls();
        gpu->matmul(gpu->ctx, 0, 0, M, N, K, 1.0f, dA + (i >= 2), 0, dB, 0, 0.0f, dC, 0, 1);
    }
    int64_t hn = cuda_stats().gemm_heuristics;
    long long en = k22_emu_lt_heuristic_calls ? k22_emu_lt_heuristic_calls() : 0;
    const int64_t want[4] = {1, 0, 1, 0};
    for (int i = 0; i < 4; i++) {
        int64_t got = (i < 3 ? h[i + 1] : hn) - h[i];
        long long egot = (i < 3 ? e[i + 1] : en) - e[i];
        CHECK_MSG(got == want[i], "matmul call %d: %lld heuristic queries counted by the backend, want %lld", i,
                  (long long)got, (long long)want[i]);
        if (k22_emu_lt_heuristic_calls)
            CHECK_MSG(egot == want[i], "matmul call %d: the emulated cuBLASLt saw %lld heuristic queries, want %lld",
                      i, egot, (long long)want[i]);
    }
    printf("cuBLASLt plans: a repeated GEMM shape queried the heuristic once (%s)\n",
           k22_emu_lt_heuristic_calls ? "backend and emulator counts" : "backend count");
    gpu->free(gpu->ctx, dA), gpu->free(gpu->ctx, dB), gpu->free(gpu->ctx, dC);
    free(A), free(B);
}

/* K22_LT_LOG=1: one line per cuBLASLt set-up (lt_plan.cu), with the chosen algorithm's
 * configuration; a repeated shape adds none; a bad value is refused. */
static void test_lt_log(void)
{
    k22_backend *keep = gpu;
    k22_err err;
    k22_err_clear(&err);
    setenv("K22_LT_LOG", "yes", 1);
    gpu = k22_backend_by_name("cuda", &err);
    CHECK_MSG(!gpu && strstr(err.msg, "K22_LT_LOG='yes'"), "K22_LT_LOG=yes: %s", gpu ? "accepted" : err.msg);
    k22_backend_free(gpu);
    setenv("K22_LT_LOG", "1", 1);
    gpu = k22_backend_by_name("cuda", &err);
    unsetenv("K22_LT_LOG");
    CHECK_MSG(gpu != NULL, "K22_LT_LOG=1: %s", err.msg);
    if (gpu) {
        const int M = 13, N = 11, K = 16;
        float *dA = gpu->alloc(gpu->ctx, (size_t)M * K * sizeof(float));
        float *dB = gpu->alloc(gpu->ctx, (size_t)K * N * sizeof(float));
        float *dC = gpu->alloc(gpu->ctx, (size_t)M * N * sizeof(float));
        int64_t plans = cuda_stats().gemm_plans;
        capture c = capture_start();
        for (int i = 0; i < 3; i++) /* two shapes, one of them twice */
            gpu->matmul(gpu->ctx, 0, i == 1, M, N, K, 1.0f, dA, 0, dB, 0, 0.0f, dC, 0, 1);
        gpu->sync(gpu->ctx);
        int found, n = capture_end(c, "k22_lt shape=", " algo=", &found);
        plans = cuda_stats().gemm_plans - plans;
        CHECK_MSG(n == 2 && plans == 2 && found == 2, "K22_LT_LOG=1: %d lines (%d with the algorithm) for %lld "
                  "set-ups, want 2", n, found, (long long)plans);
        printf("K22_LT_LOG=1: %d lines for %lld cuBLASLt set-ups\n", n, (long long)plans);
        gpu->free(gpu->ctx, dA), gpu->free(gpu->ctx, dB), gpu->free(gpu->ctx, dC);
        k22_backend_free(gpu);
    }
    gpu = keep;
}

/* ---- the 16-bit weight shadow (ops.h params_register) ----
 * A weight inside the registered buffer is read from the shadow under bf16/fp16; the products
 * must have the bits of the same weight in an unregistered buffer (packed per call), and must see
 * every write into the buffer: an upload, a copy, a zero, an AdamW step, a params_changed. On the
 * emulator K22_EMU_GEMM_ALGO makes each product's sum order depend on everything cuBLASLt's
 * heuristic was told (layouts, alignments), as a GPU's choice of kernel does, so "the same bits"
 * also means "the heuristic saw the same inputs". */

/* The n floats at device a and b are equal bit for bit. */
static int dev_bits_equal(const char *what, const float *a, const float *b, int64_t n)
{
    float *ha = dev_fetch(a, n), *hb = dev_fetch(b, n);
    int ok = memcmp(ha, hb, (size_t)n * sizeof(float)) == 0;
    CHECK_MSG(ok, "%s: not bit-identical", what);
    free(ha);
    free(hb);
    return ok;
}

/* The registered buffer R (n floats at d, host copy h) and an unregistered twin U of it. */
typedef struct {
    float *h, *d, *u;
    int64_t n;
} shadow_region;

static void region_sync_twin(shadow_region *r)
{
    gpu->to_host(gpu->ctx, r->h, r->d, (size_t)r->n * sizeof(float));
    gpu->to_device(gpu->ctx, r->u, r->h, (size_t)r->n * sizeof(float));
}

/* y = x w^T and dx += dy w with w at float offset off of R and of U (O x I), forward and
 * backward data; want_reads: how many shadow reads the two calls on R must add (0: the weight is
 * packed, e.g. misaligned). Bits must agree either way. */
static void shadow_linear(const char *what, shadow_region *r, int64_t off, int N, int I, int O,
                          int want_reads)
{
    pair x = pair_rand((int64_t)N * I, 1401, -1, 1), dy = pair_rand((int64_t)N * O, 1402, -1, 1);
    float *y1 = gpu->alloc(gpu->ctx, (size_t)N * O * sizeof(float));
    float *y2 = gpu->alloc(gpu->ctx, (size_t)N * O * sizeof(float));
    float *dx1 = dev_of(x.h, x.n), *dx2 = dev_of(x.h, x.n);
    char w[160];
    gpu->linear_fwd(gpu->ctx, y1, x.d, r->u + off, NULL, N, I, O);
    gpu->linear_bwd(gpu->ctx, dx1, NULL, NULL, dy.d, x.d, r->u + off, N, I, O);
    k22_cuda_stats s0 = cuda_stats();
    gpu->linear_fwd(gpu->ctx, y2, x.d, r->d + off, NULL, N, I, O);
    gpu->linear_bwd(gpu->ctx, dx2, NULL, NULL, dy.d, x.d, r->d + off, N, I, O);
    k22_cuda_stats s1 = cuda_stats();
    snprintf(w, sizeof w, "%s: linear_fwd, weight registered vs not", what);
    dev_bits_equal(w, y2, y1, (int64_t)N * O);
    snprintf(w, sizeof w, "%s: linear_bwd dx, weight registered vs not", what);
    dev_bits_equal(w, dx2, dx1, x.n);
    CHECK_MSG(s1.shadow_reads - s0.shadow_reads == want_reads, "%s: %lld shadow reads, want %d", what,
              (long long)(s1.shadow_reads - s0.shadow_reads), want_reads);
    /* The shadow operand is described to cuBLASLt exactly as the packed one: the same plans. */
    CHECK_MSG(s1.gemm_heuristics == s0.gemm_heuristics, "%s: %lld heuristic queries for shapes "
              "already planned", what, (long long)(s1.gemm_heuristics - s0.gemm_heuristics));
    gpu->free(gpu->ctx, y1), gpu->free(gpu->ctx, y2), gpu->free(gpu->ctx, dx1), gpu->free(gpu->ctx, dx2);
    pair_free(&x), pair_free(&dy);
}

/* A batched matmul whose A (3 matrices M x K, packed stride) lies at off in R, against U. */
static void shadow_matmul_batched(const char *what, shadow_region *r, int64_t off)
{
    const int M = 16, N = 8, K = 24, batch = 3;
    pair b = pair_rand((int64_t)batch * K * N, 1411, -1, 1);
    float *c1 = gpu->alloc(gpu->ctx, (size_t)batch * M * N * sizeof(float));
    float *c2 = gpu->alloc(gpu->ctx, (size_t)batch * M * N * sizeof(float));
    gpu->matmul(gpu->ctx, 0, 0, M, N, K, 1.0f, r->u + off, (int64_t)M * K, b.d, (int64_t)K * N, 0.0f, c1,
                (int64_t)M * N, batch);
    int64_t reads = cuda_stats().shadow_reads;
    gpu->matmul(gpu->ctx, 0, 0, M, N, K, 1.0f, r->d + off, (int64_t)M * K, b.d, (int64_t)K * N, 0.0f, c2,
                (int64_t)M * N, batch);
    char w[160];
    snprintf(w, sizeof w, "%s: batched matmul, A registered vs not", what);
    dev_bits_equal(w, c2, c1, (int64_t)batch * M * N);
    CHECK_MSG(cuda_stats().shadow_reads == reads + 1, "%s: the batched A was not read from the shadow", what);
    gpu->free(gpu->ctx, c1), gpu->free(gpu->ctx, c2);
    pair_free(&b);
}

/* conv2d forward and backward (dx, dw) with w at off in R, against U. */
static void shadow_conv(const char *what, shadow_region *r, int64_t off, const k22_conv2d_desc *d)
{
    int64_t nx = (int64_t)d->B * d->C * d->H * d->W;
    int64_t ny = (int64_t)d->B * d->O * k22_conv2d_out_h(d) * k22_conv2d_out_w(d);
    pair x = pair_rand(nx, 1421, -1, 1), dy = pair_rand(ny, 1422, -1, 1);
    float *y1 = gpu->alloc(gpu->ctx, (size_t)ny * sizeof(float)), *y2 = gpu->alloc(gpu->ctx, (size_t)ny * sizeof(float));
    float *dx1 = dev_of(x.h, nx), *dx2 = dev_of(x.h, nx);
    int64_t nw = (int64_t)d->O * d->C * d->KH * d->KW;
    pair dw1 = pair_rand(nw, 1423, -1, 1);
    float *dw2 = dev_of(dw1.h, nw);
    gpu->conv2d_fwd(gpu->ctx, y1, x.d, r->u + off, NULL, d);
    gpu->conv2d_bwd(gpu->ctx, dx1, dw1.d, NULL, dy.d, x.d, r->u + off, d);
    int64_t reads = cuda_stats().shadow_reads;
    gpu->conv2d_fwd(gpu->ctx, y2, x.d, r->d + off, NULL, d);
    gpu->conv2d_bwd(gpu->ctx, dx2, dw2, NULL, dy.d, x.d, r->d + off, d);
    char w[192];
    snprintf(w, sizeof w, "%s: conv2d_fwd, weight registered vs not", what);
    dev_bits_equal(w, y2, y1, ny);
    snprintf(w, sizeof w, "%s: conv2d_bwd dx, weight registered vs not", what);
    dev_bits_equal(w, dx2, dx1, nx);
    snprintf(w, sizeof w, "%s: conv2d_bwd dw, weight registered vs not", what);
    dev_bits_equal(w, dw2, dw1.d, nw);
    CHECK_MSG(cuda_stats().shadow_reads > reads, "%s: the conv weight was never read from the shadow", what);
    gpu->free(gpu->ctx, y1), gpu->free(gpu->ctx, y2), gpu->free(gpu->ctx, dx1), gpu->free(gpu->ctx, dx2);
    gpu->free(gpu->ctx, dw2);
    pair_free(&x), pair_free(&dy), pair_free(&dw1);
}

/* One AdamW step on [off, off + n) of R and of U, with the same gradients and zero moments. */
static void shadow_adamw(shadow_region *r, int64_t off, int64_t n)
{
    pair g = pair_rand(n, 1431, -0.1f, 0.1f);
    float *m1 = gpu->alloc(gpu->ctx, (size_t)n * sizeof(float)), *v1 = gpu->alloc(gpu->ctx, (size_t)n * sizeof(float));
    float *m2 = gpu->alloc(gpu->ctx, (size_t)n * sizeof(float)), *v2 = gpu->alloc(gpu->ctx, (size_t)n * sizeof(float));
    k22_adamw_hparams h = {.lr = 1e-2, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.01,
                           .step = 1, .grad_scale = 1.0f};
    gpu->adamw_step(gpu->ctx, r->u + off, g.d, m1, v1, n, &h);
    gpu->adamw_step(gpu->ctx, r->d + off, g.d, m2, v2, n, &h);
    gpu->free(gpu->ctx, m1), gpu->free(gpu->ctx, v1), gpu->free(gpu->ctx, m2), gpu->free(gpu->ctx, v2);
    pair_free(&g);
}

/* The K22_EMU_GEMM_ALGO check is only worth something when the emulated sum order really follows
 * the heuristic's inputs: one GEMM on operands at 5 alignments must give more than one result. */
static void emu_algo_sensitive(void)
{
    const int M = 8, N = 8, K = 1000; /* lda 4000 bytes: the pointer decides the alignment */
    float *A = host_rand((int64_t)M * K + 8, 1441, -1, 1), *B = host_rand((int64_t)K * N + 8, 1442, -1, 1);
    float *dA = dev_of(A, (int64_t)M * K + 8), *dB = dev_of(B, (int64_t)K * N + 8);
    float *first = NULL;
    int differ = 0;
    for (int off = 0; off < 5; off++) {
        float *dAo = dev_of(A, (int64_t)M * K + 8), *dC = gpu->alloc(gpu->ctx, (size_t)M * N * sizeof(float));
        /* A's values at offset off of its buffer (moved), the same values every time */
        gpu->copy(gpu->ctx, dAo + off, dA, (size_t)M * K * sizeof(float));
        gpu->matmul(gpu->ctx, 0, 0, M, N, K, 1.0f, dAo + off, 0, dB, 0, 0.0f, dC, 0, 1);
        float *c = dev_fetch(dC, (int64_t)M * N);
        if (!first) first = c;
        else differ |= memcmp(c, first, (size_t)M * N * sizeof(float)) != 0, free(c);
        gpu->free(gpu->ctx, dAo), gpu->free(gpu->ctx, dC);
    }
    CHECK_MSG(differ, "K22_EMU_GEMM_ALGO: operands at 5 alignments gave the same bits; the bit-identity "
              "checks of the weight shadow would not see a changed heuristic input");
    free(first), free(A), free(B);
    gpu->free(gpu->ctx, dA), gpu->free(gpu->ctx, dB);
}

static void test_weight_shadow_prec(k22_precision p, const char *tag)
{
    char what[96];
    snprintf(what, sizeof what, "%s weight shadow%s", prec_tag(p), tag);
    shadow_region r = {NULL, NULL, NULL, 8192};
    r.h = host_rand(r.n, 1461, -1, 1);
    r.d = dev_of(r.h, r.n);
    r.u = dev_of(r.h, r.n);
    k22_backend_params_register(gpu, r.d, r.n);
    const k22_conv2d_desc c3 = {2, 8, 6, 5, 4, 3, 3, 1, 1, 1, 1, 1, 1}; /* CKK 72: a multiple of 8 */
    const k22_conv2d_desc c1 = {2, 16, 4, 4, 8, 1, 1, 1, 1, 0, 0, 0, 0}; /* pointwise */
    k22_cuda_stats s0 = cuda_stats();
    shadow_linear(what, &r, 64, 5, 40, 24, 2);
    CHECK_MSG(cuda_stats().shadow_refreshes == s0.shadow_refreshes + 1, "%s: the first read did not build "
              "the shadow once", what);
    shadow_linear(what, &r, 3, 5, 37, 24, 0); /* misaligned, ld 37: packed, and still the same bits */
    /* ld 256 bytes, the weight 32-byte aligned: only the pointer tells the shadow from a packed
     * copy (256-byte aligned), as for most weights of the full models */
    shadow_linear(what, &r, 2320, 5, 128, 8, 2);
    shadow_matmul_batched(what, &r, 1024);
    shadow_conv(what, &r, 4096, &c3);
    shadow_conv(what, &r, 6144, &c1);

    /* Writes into R: each must reach the next product. */
    float *h2 = host_rand(40 * 24, 1462, -1, 1);
    gpu->to_device(gpu->ctx, r.d + 64, h2, 40 * 24 * sizeof(float));
    region_sync_twin(&r);
    shadow_linear("after to_device", &r, 64, 5, 40, 24, 2);
    gpu->copy(gpu->ctx, r.d + 64, r.d + 1024, 40 * 24 * sizeof(float));
    region_sync_twin(&r);
    shadow_linear("after copy", &r, 64, 5, 40, 24, 2);
    gpu->zero(gpu->ctx, r.d + 100, 17 * sizeof(float));
    gpu->scale(gpu->ctx, r.d + 200, r.d + 200, 0.5f, 40);
    region_sync_twin(&r);
    shadow_linear("after zero and scale", &r, 64, 5, 40, 24, 2);
    int64_t refreshes = cuda_stats().shadow_refreshes, updates = cuda_stats().shadow_updates;
    shadow_adamw(&r, 64, 40 * 24);
    shadow_linear("after adamw", &r, 64, 5, 40, 24, 2);
    CHECK_MSG(cuda_stats().shadow_updates == updates + 1 && cuda_stats().shadow_refreshes == refreshes,
              "%s: AdamW did not update the shadow in place (updates +%lld, refreshes +%lld)", what,
              (long long)(cuda_stats().shadow_updates - updates),
              (long long)(cuda_stats().shadow_refreshes - refreshes));
    k22_backend_params_changed(gpu);
    shadow_linear("after params_changed", &r, 64, 5, 40, 24, 2);
    CHECK_MSG(cuda_stats().shadow_refreshes == refreshes + 1, "%s: params_changed did not rebuild the shadow",
              what);
    k22_backend_params_register(gpu, NULL, 0);
    shadow_linear("unregistered", &r, 64, 5, 40, 24, 0);
    k22_backend_params_register(gpu, r.d, r.n);
    region_sync_twin(&r);
    gpu->free(gpu->ctx, r.d); /* freeing the registered buffer forgets it */
    r.d = dev_of(r.h, r.n);
    shadow_linear("registered buffer freed", &r, 64, 5, 40, 24, 0);
    gpu->free(gpu->ctx, r.d), gpu->free(gpu->ctx, r.u);
    free(r.h), free(h2);
}

static void test_weight_shadow(const char *tag)
{
    const char *was = getenv("K22_EMU_GEMM_ALGO");
    if (getenv("K22_CUDA_EMU")) setenv("K22_EMU_GEMM_ALGO", "1", 1);
    if (getenv("K22_CUDA_EMU") && !*tag) emu_algo_sensitive();
    const k22_precision precs[2] = {K22_PREC_BF16, K22_PREC_FP16};
    for (int i = 0; i < 2; i++)
        if (prec_set(precs[i])) test_weight_shadow_prec(precs[i], tag);
    prec_set(K22_PREC_FP32);
    /* fp32: nothing is read from a registered buffer's shadow. */
    float *h = host_rand(40 * 24, 1471, -1, 1), *d = dev_of(h, 40 * 24);
    k22_backend_params_register(gpu, d, 40 * 24);
    shadow_region r = {h, d, dev_of(h, 40 * 24), 40 * 24};
    shadow_linear("fp32, registered", &r, 0, 5, 40, 24, 0);
    k22_backend_params_register(gpu, NULL, 0);
    gpu->free(gpu->ctx, d), gpu->free(gpu->ctx, r.u);
    free(h);
    if (!was) unsetenv("K22_EMU_GEMM_ALGO");
}

/* ---- conv2d: views, reruns, and the choice of implementation ---- */

/* Convolution on views one float off 16-byte alignment (fp32 on a cudnn backend then runs as
 * im2col: cuDNN's heuristics never see the pointers; bf16 reads aligned 16-bit copies), in fp32
 * and bf16, checked as conv_cases; then every direction again: reruns give the same bits. */
static void test_conv_views(const char *tag)
{
    const conv_case c = {{2, 5, 9, 7, 6, 3, 3, 1, 1, 1, 1, 1, 1}, 1, 5e-5, 1e-4};
    const k22_conv2d_desc *d = &c.d;
    int64_t nx = (int64_t)d->B * d->C * d->H * d->W, nw = (int64_t)d->O * d->C * d->KH * d->KW;
    int64_t ny = (int64_t)d->B * d->O * k22_conv2d_out_h(d) * k22_conv2d_out_w(d);
    const k22_precision precs[2] = {K22_PREC_FP32, K22_PREC_BF16};
    for (int pi = 0; pi < 2; pi++) {
        k22_precision p = precs[pi];
        if (!prec_set(p)) continue;
        pair x = pair_rand(nx + 1, 1301, -1, 1), w = pair_rand(nw + 1, 1302, -1, 1);
        pair b = pair_rand(d->O, 1303, -1, 1), dy = pair_rand(ny + 1, 1305, -1, 1);
        pair y = pair_rand(ny + 1, 1304, -1, 1), dx = pair_rand(nx + 1, 1306, -1, 1);
        pair dw = pair_rand(nw + 1, 1307, -1, 1);
        float *xr = pair_rounded(&x, p), *wr = pair_rounded(&w, p), *dyr = pair_rounded(&dy, p);
        float *cy = k22_xcalloc((size_t)ny, sizeof(float));
        float *cdx = k22_xcalloc((size_t)nx, sizeof(float));
        float *cdw = k22_xcalloc((size_t)nw, sizeof(float));
        float *dx0 = dev_fetch(dx.d, dx.n), *dw0 = dev_fetch(dw.d, dw.n);
        ref->conv2d_fwd(ref->ctx, cy, xr + 1, wr + 1, NULL, d);
        ref->conv2d_bwd(ref->ctx, cdx, cdw, NULL, dyr + 1, xr + 1, wr + 1, d);
        ref->conv2d_fwd(ref->ctx, y.h + 1, xr + 1, wr + 1, b.h, d);
        ref->conv2d_bwd(ref->ctx, dx.h + 1, dw.h + 1, NULL, dyr + 1, xr + 1, wr + 1, d);
        const char *ran[3];
        conv_ran();
        gpu->conv2d_fwd(gpu->ctx, y.d + 1, x.d + 1, w.d + 1, b.d, d);
        ran[0] = conv_ran();
        gpu->conv2d_bwd(gpu->ctx, dx.d + 1, NULL, NULL, dy.d + 1, x.d + 1, w.d + 1, d);
        ran[1] = conv_ran();
        gpu->conv2d_bwd(gpu->ctx, NULL, dw.d + 1, NULL, dy.d + 1, x.d + 1, w.d + 1, d);
        ran[2] = conv_ran();
        const pair *outs[3] = {&y, &dx, &dw};
        const float *convs[3] = {cy, cdx, cdw}, *firsts[3];
        const char *names[3] = {"y", "dx", "dw"};
        char what[200];
        for (int i = 0; i < 3; i++) {
            float *got = dev_fetch(outs[i]->d, outs[i]->n);
            double u = p != K22_PREC_FP32 && strcmp(ran[i], "cudnn") == 0 ? prec_unit(p) : 0;
            snprintf(what, sizeof what, "%s conv2d %s on views 4 bytes off alignment%s, on %s",
                     prec_tag(p), names[i], tag, ran[i]);
            check_conv_out(what, got + 1, outs[i]->h + 1, convs[i], outs[i]->n - 1, c.atol, c.rtol,
                           u);
            firsts[i] = got;
        }
        printf("%s conv2d on misaligned views%s: forward %s, backward data %s, backward filter "
               "%s\n", prec_tag(p), tag, ran[0], ran[1], ran[2]);
        /* Reruns: the same inputs and starting gradients give the same bits. */
        gpu->to_device(gpu->ctx, dx.d, dx0, (size_t)dx.n * sizeof(float));
        gpu->to_device(gpu->ctx, dw.d, dw0, (size_t)dw.n * sizeof(float));
        gpu->conv2d_fwd(gpu->ctx, y.d + 1, x.d + 1, w.d + 1, b.d, d);
        gpu->conv2d_bwd(gpu->ctx, dx.d + 1, NULL, NULL, dy.d + 1, x.d + 1, w.d + 1, d);
        gpu->conv2d_bwd(gpu->ctx, NULL, dw.d + 1, NULL, dy.d + 1, x.d + 1, w.d + 1, d);
        for (int i = 0; i < 3; i++) {
            float *again = dev_fetch(outs[i]->d, outs[i]->n);
            snprintf(what, sizeof what, "%s conv2d %s rerun is bit for bit the first run%s",
                     prec_tag(p), names[i], tag);
            CHECK_MSG(memcmp(again, firsts[i], (size_t)outs[i]->n * sizeof(float)) == 0, "%s",
                      what);
            free(again);
            free((float *)firsts[i]);
        }
        pair_free(&x), pair_free(&w), pair_free(&b), pair_free(&y), pair_free(&dy);
        pair_free(&dx), pair_free(&dw);
        free(xr), free(wr), free(dyr), free(cy), free(cdx), free(cdw), free(dx0), free(dw0);
    }
    prec_set(K22_PREC_FP32);
}

/* Gradient accumulation across micro-batches on cuDNN: dw (and dbias) from 0 over micro-batch 1
 * gives c1, over micro-batch 2 gives c2, and micro-batch 2 accumulated onto c1 must give exactly
 * c1 + c2 rounded once: what 2 ranks x 1 step add in their all-reduce, so 1 rank x 2 accumulation
 * steps matches them bit for bit (conv_cudnn.cu stages dw for that). In fp32 and bf16. The
 * im2col path accumulates each sample's GEMM into dw in turn, so it promises this only to the
 * sum order: skipped there. */
static void test_conv_accumulate(const char *tag)
{
    if (strncmp(k22_backend_conv_impl(gpu, NULL, NULL), "cudnn", 5) != 0) return;
    const k22_conv2d_desc *d = &conv_cases[0].d;
    int64_t nx = (int64_t)d->B * d->C * d->H * d->W, nw = (int64_t)d->O * d->C * d->KH * d->KW;
    int64_t ny = (int64_t)d->B * d->O * k22_conv2d_out_h(d) * k22_conv2d_out_w(d);
    const k22_precision precs[2] = {K22_PREC_FP32, K22_PREC_BF16};
    for (int pi = 0; pi < 2; pi++) {
        if (!prec_set(precs[pi])) continue;
        pair x1 = pair_rand(nx, 1401, -1, 1), x2 = pair_rand(nx, 1402, -1, 1);
        pair dy1 = pair_rand(ny, 1403, -1, 1), dy2 = pair_rand(ny, 1404, -1, 1);
        pair w = pair_rand(nw, 1405, -1, 1);
        float *zw = k22_xcalloc((size_t)nw + d->O, sizeof(float));
        float *g1 = dev_of(zw, nw + d->O), *g2 = dev_of(zw, nw + d->O);
        gpu->conv2d_bwd(gpu->ctx, NULL, g1, g1 + nw, dy1.d, x1.d, w.d, d);
        gpu->conv2d_bwd(gpu->ctx, NULL, g2, g2 + nw, dy2.d, x2.d, w.d, d);
        float *c1 = dev_fetch(g1, nw + d->O), *c2 = dev_fetch(g2, nw + d->O);
        gpu->conv2d_bwd(gpu->ctx, NULL, g1, g1 + nw, dy2.d, x2.d, w.d, d); /* onto c1 */
        float *acc = dev_fetch(g1, nw + d->O);
        int64_t bad = 0;
        for (int64_t i = 0; i < nw + d->O; i++) {
            float want = c1[i] + c2[i];
            bad += memcmp(&acc[i], &want, sizeof want) != 0;
        }
        CHECK_MSG(bad == 0, "%s conv2d dw, dbias accumulated over 2 micro-batches%s: %lld of %lld "
                  "values are not c1 + c2 bit for bit", prec_tag(precs[pi]), tag, (long long)bad,
                  (long long)(nw + d->O));
        pair_free(&x1), pair_free(&x2), pair_free(&dy1), pair_free(&dy2), pair_free(&w);
        gpu->free(gpu->ctx, g1), gpu->free(gpu->ctx, g2);
        free(zw), free(c1), free(c2), free(acc);
    }
    prec_set(K22_PREC_FP32);
}

/* A cuda backend made with VAR=val and the emulator's fault switch FAULT=fault in the
 * environment. With want_err: checks that it is refused with a message containing want_err and
 * returns NULL; else checks that it is made and returns it. */
static k22_backend *backend_with(const char *var, const char *val, const char *fault_var, const char *fault,
                                 const char *want_err)
{
    k22_err err;
    k22_err_clear(&err);
    setenv(var, val, 1);
    setenv(fault_var, fault, 1);
    k22_backend *be = k22_backend_by_name("cuda", &err);
    if (want_err) {
        CHECK_MSG(be == NULL && strstr(err.msg, want_err) != NULL,
                  "%s=%s %s=%s: want a refusal naming '%s', got %s '%s'", var, val, fault_var, fault, want_err,
                  be ? "a backend" : "", err.msg);
        printf("%s=%s %s=%s refused: %s\n", var, val, fault_var, fault, err.msg);
        k22_backend_free(be);
        return NULL;
    }
    CHECK_MSG(be != NULL, "%s=%s %s=%s: no backend: %s", var, val, fault_var, fault, err.msg);
    return be;
}

/* K22_CUDA_CONV and the fallback. A bad value is refused; under the emulator (K22_CUDA_EMU), whose
 * K22_EMU_CUDNN breaks its cuDNN on purpose (tests/cuda/emu/cudnn.h), a cuDNN that cannot be
 * created, fails a call or computes wrong numbers in the creation self-test makes auto fall back
 * to im2col (which must then compute right) and makes K22_CUDA_CONV=cudnn fail, naming why. */
static void test_conv_select(void)
{
    static const struct {
        const char *conv, *fault, *impl, *err;
    } cases[] = {
        {"bogus", "", NULL, "K22_CUDA_CONV='bogus'"},
        {"im2col", "create", "im2col", NULL}, /* never touches cuDNN */
        {"auto", "create", "im2col", NULL},
        {"cudnn", "create", NULL, "cudnnCreate"},
        {"auto", "run", "im2col", NULL},
        {"cudnn", "run", NULL, "cudnnConvolutionForward"},
        {"auto", "wrong", "im2col", NULL},
        {"cudnn", "wrong", NULL, "self-test in fp32: y[0]"},
    };
    int emu = getenv("K22_CUDA_EMU") != NULL;
    k22_backend *keep = gpu;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (cases[i].fault[0] && !emu) continue;
        gpu = backend_with("K22_CUDA_CONV", cases[i].conv, "K22_EMU_CUDNN", cases[i].fault, cases[i].err);
        if (gpu) {
            const char *impl = k22_backend_conv_impl(gpu, NULL, NULL);
            CHECK_MSG(strcmp(impl, cases[i].impl) == 0, "K22_CUDA_CONV=%s K22_EMU_CUDNN=%s: want %s, got %s",
                      cases[i].conv, cases[i].fault, cases[i].impl, impl);
            test_conv_case(&conv_cases[0], " (fallback)");
        }
        k22_backend_free(gpu);
    }
    if (!emu) printf("conv implementation fallback: skipped (needs the emulator's faults)\n");
    unsetenv("K22_EMU_CUDNN");
    unsetenv("K22_CUDA_CONV");
    gpu = keep;
}

/* Runs the convolution cases (fp32, then bf16 and fp16) with stderr captured; returns the number
 * of K22_CUDNN_LOG lines: all, and (*timed) those of choices made by timing. */
static int conv_cases_logged(const char *tag, int *timed)
{
    capture c = capture_start();
    test_conv2d(tag);
    test_precision(tag, PREC_CONV);
    return capture_end(c, "k22_cudnn shape=", " by=timing ms=", timed);
}

/* K22_CUDNN_ALGO. A bad value is refused; `heuristic` (the default) takes cuDNN's ranking and
 * times nothing; `find` has cuDNN time each direction's algorithms (the emulator ranks them in the
 * reverse of its heuristics, so there every timed pick differs) and the convolutions, fp32, bf16
 * and fp16, agree with cpu-ref as on the heuristics' picks; a timing that fails (the emulator's
 * K22_EMU_CUDNN=find) leaves the heuristics' picks. K22_CUDNN_LOG=1 writes a line per choice
 * (a bad value is refused). */
static void test_conv_find(void)
{
    static const struct {
        const char *algo, *fault, *tag;
    } cases[] = {
        {"heuristic", "", " (cuDNN heuristics)"},
        {"find", "", " (cuDNN timing)"},
        {"find", "find", " (cuDNN timing failing)"},
    };
    int emu = getenv("K22_CUDA_EMU") != NULL;
    k22_backend *keep = gpu;
    gpu = backend_with("K22_CUDNN_ALGO", "bogus", "K22_EMU_CUDNN", "", "K22_CUDNN_ALGO='bogus'");
    gpu = backend_with("K22_CUDNN_LOG", "yes", "K22_CUDNN_ALGO", "find", "K22_CUDNN_LOG='yes'");
    setenv("K22_CUDNN_LOG", "1", 1);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (cases[i].fault[0] && !emu) continue;
        gpu = backend_with("K22_CUDNN_ALGO", cases[i].algo, "K22_EMU_CUDNN", cases[i].fault, NULL);
        if (!gpu) continue;
        const char *impl = k22_backend_conv_impl(gpu, NULL, NULL);
        if (strncmp(impl, "cudnn", 5)) {
            printf("K22_CUDNN_ALGO=%s: skipped, the convolutions are on %s\n", cases[i].algo, impl);
            k22_backend_free(gpu);
            continue;
        }
        int logged_timed, logged = conv_cases_logged(cases[i].tag, &logged_timed);
        k22_cuda_stats st;
        CHECK(k22_backend_cuda_stats(gpu, &st));
        int find = !strcmp(cases[i].algo, "find"), timed = find && !cases[i].fault[0];
        CHECK_MSG(!strcmp(st.conv_algo, cases[i].algo), "K22_CUDNN_ALGO=%s: stats say %s", cases[i].algo,
                  st.conv_algo);
        CHECK_MSG(st.conv_choices > 0, "K22_CUDNN_ALGO=%s%s: no algorithm chosen", cases[i].algo, cases[i].tag);
        if (!timed || emu) /* a real cuDNN may find nothing usable to time for a shape */
            CHECK_MSG(st.conv_timed == (timed ? st.conv_choices : 0) &&
                          st.conv_changed == (timed && emu ? st.conv_timed : 0),
                      "K22_CUDNN_ALGO=%s%s: %lld choices, %lld timed, %lld changed", cases[i].algo,
                      cases[i].tag, (long long)st.conv_choices, (long long)st.conv_timed, (long long)st.conv_changed);
        else
            CHECK_MSG(st.conv_timed > 0, "K22_CUDNN_ALGO=find: nothing timed among %lld choices",
                      (long long)st.conv_choices);
        /* a line per choice, and one per direction cuDNN cannot take (algo=im2col) */
        CHECK_MSG(logged >= st.conv_choices && logged_timed == st.conv_timed,
                  "K22_CUDNN_LOG=1%s: %d lines (%d timed) for %lld choices (%lld timed)", cases[i].tag, logged,
                  logged_timed, (long long)st.conv_choices, (long long)st.conv_timed);
        printf("K22_CUDNN_ALGO=%s%s: %lld algorithm choices, %lld by timing, %lld unlike the heuristics' pick; "
               "K22_CUDNN_LOG: %d lines\n", cases[i].algo, cases[i].tag, (long long)st.conv_choices,
               (long long)st.conv_timed, (long long)st.conv_changed, logged);
        k22_backend_free(gpu);
    }
    unsetenv("K22_EMU_CUDNN");
    unsetenv("K22_CUDNN_ALGO");
    unsetenv("K22_CUDNN_LOG");
    gpu = keep;
}

/* Which attention path ran: fp32 and heads over 64 always on the GEMMs; bf16/fp16 with heads up
 * to 64 on the fused kernels unless K22_CUDA_ATTN=gemm (`fused`: whether they should have). */
static void attn_paths_check(const char *tag, int fused)
{
    k22_cuda_stats st;
    if (!k22_backend_cuda_stats(gpu, &st)) {
        CHECK_MSG(0, "cuda stats%s: not a cuda backend", tag);
        return;
    }
    printf("attention%s (%s): %lld fused, %lld GEMM calls\n", tag, st.attn,
           (long long)st.attn_flash, (long long)st.attn_gemm);
    CHECK_MSG(st.attn_gemm > 0 && (fused ? st.attn_flash > 0 : st.attn_flash == 0),
              "attention%s: %lld fused, %lld GEMM calls", tag, (long long)st.attn_flash,
              (long long)st.attn_gemm);
}

/* Every bf16/fp16 attention case on a backend made under K22_CUDA_ATTN=attn (and
 * K22_CUDA_ATTN_PIPE=pipe unless NULL), which must run them fused; leaves gpu NULL. */
static void attn_rerun(const char *attn, const char *pipe, const char *tag)
{
    k22_err err;
    k22_err_clear(&err);
    setenv("K22_CUDA_ATTN", attn, 1);
    if (pipe) setenv("K22_CUDA_ATTN_PIPE", pipe, 1);
    gpu = k22_backend_by_name("cuda", &err);
    CHECK_MSG(gpu != NULL, "%s: no cuda backend: %s", tag, err.msg);
    if (gpu) {
        test_precision(tag, PREC_ATTN);
        attn_paths_check(tag, 1);
        k22_backend_free(gpu);
    }
    gpu = NULL;
    unsetenv("K22_CUDA_ATTN_PIPE");
    unsetenv("K22_CUDA_ATTN");
}

/* K22_CUDA_ATTN: auto, mma and flash run fused kernels (auto and mma those on mma.sync, flash the
 * wmma ones), gemm the GEMM path, anything else is refused by name. mma and flash run their
 * self-test at creation, auto at the first switch to bf16/fp16 (`before`: what the stats say until
 * then). Under the emulator, K22_EMU_WMMA=wrong-mma breaks the mma.sync products
 * (tests/cuda/emu/warp_mma.cuh) and =wrong the wmma ones too (mma.h): the self-tests must then
 * send auto to the wmma kernels, or to the GEMM path, and make mma (or flash) an error naming the
 * self-test; flash does not use mma.sync. */
static void test_attn_select(void)
{
    static const struct {
        const char *attn, *fault, *before, *path, *err;
    } cases[] = {
        {"flash2", "", NULL, NULL, "K22_CUDA_ATTN='flash2'"},
        {"auto", "", "untested", "fused-mma", NULL},
        {"flash", "", "fused", "fused", NULL},
        {"mma", "", "fused-mma", "fused-mma", NULL},
        {"gemm", "", "gemm", "gemm", NULL},
        {"auto", "wrong-mma", "untested", "fused", NULL},
        {"auto", "wrong", "untested", "gemm", NULL},
        {"flash", "wrong", NULL, NULL, "self-test in bf16"},
        {"flash", "wrong-mma", "fused", "fused", NULL},
        {"mma", "wrong-mma", NULL, NULL, "self-test in bf16"},
    };
    int emu = getenv("K22_CUDA_EMU") != NULL;
    k22_backend *keep = gpu;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (cases[i].fault[0] && !emu) continue;
        gpu = backend_with("K22_CUDA_ATTN", cases[i].attn, "K22_EMU_WMMA", cases[i].fault, cases[i].err);
        if (!gpu) continue;
        k22_err err;
        k22_err_clear(&err);
        k22_cuda_stats before, after;
        k22_backend_cuda_stats(gpu, &before);
        CHECK_MSG(k22_backend_set_precision(gpu, K22_PREC_BF16, &err) == K22_OK, "bf16: %s", err.msg);
        k22_backend_cuda_stats(gpu, &after);
        k22_backend_set_precision(gpu, K22_PREC_FP32, &err);
        CHECK_MSG(before.attn && after.attn && strcmp(before.attn, cases[i].before) == 0 &&
                      strcmp(after.attn, cases[i].path) == 0,
                  "K22_CUDA_ATTN=%s K22_EMU_WMMA=%s: want %s then %s under bf16, got %s then %s",
                  cases[i].attn, cases[i].fault, cases[i].before, cases[i].path,
                  before.attn ? before.attn : "(no stats)", after.attn ? after.attn : "(no stats)");
        k22_backend_free(gpu);
    }
    if (!emu) printf("fused attention self-test fallback: skipped (needs the emulator's faults)\n");
    unsetenv("K22_EMU_WMMA");
    unsetenv("K22_CUDA_ATTN");
    gpu = keep;
}

/* The bias of linear_fwd: in cuBLASLt's BIAS epilogue by default (K22_CUDA_EPILOGUE=1), in a
 * kernel with K22_CUDA_EPILOGUE=0 or where the heuristic has no algorithm with the epilogue (the
 * emulator's K22_EMU_LT_EPILOGUE=unsupported, on a shape not planned yet); the results are
 * test_linear's either way; another value is refused by name. On a GPU the default case says
 * which path the library took (the emulator must take the epilogue). */
static void test_linear_epilogue(void)
{
    int emu = getenv("K22_CUDA_EMU") != NULL;
    k22_backend *keep = gpu;
    static const struct {
        const char *on, *fault, *err;
        int N, want_epilogue;
    } cases[] = {
        {"1", "", NULL, 21, 1},
        {"1", "unsupported", NULL, 22, 0},
        {"0", "", NULL, 23, 0},
        {"2", "", "K22_CUDA_EPILOGUE='2'", 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (cases[i].fault[0] && !emu) continue;
        gpu = backend_with("K22_CUDA_EPILOGUE", cases[i].on, "K22_EMU_LT_EPILOGUE", cases[i].fault, cases[i].err);
        if (!gpu) continue;
        k22_cuda_stats st;
        test_linear_case(cases[i].N, 13, 9, 1, 1e-5, 1e-5);
        k22_backend_cuda_stats(gpu, &st);
        printf("linear bias, K22_CUDA_EPILOGUE=%s K22_EMU_LT_EPILOGUE=%s: %lld in the epilogue, %lld by a kernel\n",
               cases[i].on, cases[i].fault, (long long)st.bias_epilogue, (long long)st.bias_kernel);
        CHECK_MSG(st.bias_epilogue + st.bias_kernel == 1 &&
                      (emu || !cases[i].want_epilogue ? st.bias_epilogue == cases[i].want_epilogue : 1),
                  "K22_CUDA_EPILOGUE=%s K22_EMU_LT_EPILOGUE=%s: %lld biases in the epilogue, %lld by a kernel",
                  cases[i].on, cases[i].fault, (long long)st.bias_epilogue, (long long)st.bias_kernel);
        k22_backend_free(gpu);
    }
    unsetenv("K22_EMU_LT_EPILOGUE");
    unsetenv("K22_CUDA_EPILOGUE");
    gpu = keep;
}

/* ---- the table itself ---- */

static void test_errors(void)
{
    k22_err err;
    k22_err_clear(&err);
    k22_backend *none = k22_backend_by_name("cuda:4000", &err);
    CHECK_MSG(none == NULL, "cuda:4000 must not exist");
    CHECK_MSG(strstr(err.msg, "4000") != NULL, "the error names the device: '%s'", err.msg);
    k22_backend_free(none);
}

/* Issue 9: the CUDA backend has every op; a NULL entry would fall back to nothing on device
 * memory and kill the program mid-training. */
static void test_table_complete(void)
{
    const struct {
        const char *name;
        const void *fn;
    } e[] = {
#define ENTRY(f) {#f, (const void *)gpu->f}
        ENTRY(matmul),         ENTRY(linear_fwd),         ENTRY(linear_bwd),
        ENTRY(conv2d_fwd),     ENTRY(conv2d_bwd),         ENTRY(group_norm_fwd),
        ENTRY(linear_fwd_x16), ENTRY(linear_bwd_x16),     ENTRY(act_fwd_y16),
        ENTRY(conv2d_fwd_x16), ENTRY(conv2d_bwd_x16),     ENTRY(group_norm_act_fwd_y16),
        ENTRY(group_norm_act_fwd), ENTRY(group_norm_act_bwd), ENTRY(set_precision),
        ENTRY(group_norm_bwd), ENTRY(layer_norm_fwd),     ENTRY(layer_norm_bwd),
        ENTRY(layer_norm_fwd_y16), ENTRY(attention_fwd_x16), ENTRY(attention_bwd_x16),
        ENTRY(act_fwd),        ENTRY(act_bwd),            ENTRY(softmax_fwd),
        ENTRY(softmax_bwd),    ENTRY(attention_fwd),      ENTRY(attention_bwd),
        ENTRY(add),            ENTRY(mul),                ENTRY(scale),
        ENTRY(add_bwd),        ENTRY(mul_bwd),            ENTRY(scale_bwd),
        ENTRY(concat_fwd),     ENTRY(concat_bwd),         ENTRY(permute_fwd),
        ENTRY(permute_bwd),    ENTRY(upsample2x_fwd),     ENTRY(upsample2x_bwd),
        ENTRY(avgpool2x_fwd),  ENTRY(avgpool2x_bwd),      ENTRY(chan_affine_fwd),
        ENTRY(chan_affine_bwd), ENTRY(resize_nearest_fwd), ENTRY(timestep_embed_fwd),
        ENTRY(timestep_embed_bwd), ENTRY(mse_fwd),        ENTRY(mse_bwd),
        ENTRY(adamw_step),     ENTRY(sumsq),              ENTRY(params_register),
        ENTRY(params_changed),
#undef ENTRY
    };
    for (size_t i = 0; i < sizeof e / sizeof e[0]; i++)
        CHECK_MSG(e[i].fn != NULL, "cuda backend lacks %s", e[i].name);
}

int main(void)
{
    int rc;
    setvbuf(stdout, NULL, _IOLBF, 0); /* case lines in order with the failures on stderr */
    gpu = cuda_backend_or_skip("test_cuda_ops", &rc);
    if (!gpu) return rc;
    ref = k22_backend_cpu_new(1);
    fast = k22_backend_cpu_new(0);
    test_memory();
    test_mem_free();
    test_matmul();
    test_linear();
    test_act();
    test_binary();
    test_sumsq();
    test_adamw();
    test_table_complete();
    /* Convolutions first on the default implementation (cuDNN where usable). */
    char *conv_env = getenv("K22_CUDA_CONV") ? k22_xstrdup(getenv("K22_CUDA_CONV")) : NULL;
    char tag[48];
    snprintf(tag, sizeof tag, " [%s]", k22_backend_conv_impl(gpu, NULL, NULL));
    printf("test_cuda_ops: convolutions on%s (K22_CUDA_CONV=%s)\n", tag,
           conv_env ? conv_env : "unset: auto");
    /* On the GPU machine and on the emulator cuDNN must work: a fallback there (its self-test
     * failed) would leave the cudnn path untested while every check passes on im2col. */
    if (!conv_env && (getenv("K22_REQUIRE_CUDA") || getenv("K22_CUDA_EMU")))
        CHECK_MSG(strncmp(tag, " [cudnn", 7) == 0, "the default convolutions are%s", tag);
    test_conv2d(tag);
    test_conv_views(tag);
    test_conv_accumulate(tag);
    test_norms();
    test_softmax();
    test_attention("");
    test_concat();
    test_permute();
    test_resample();
    test_resize();
    test_chan_affine();
    test_timestep_embed();
    test_mse();
    test_errors();
    test_precision(tag, PREC_GEMMS | PREC_CONV | PREC_ATTN | PREC_ATTN16);
    attn_paths_check("", 1);
    test_lt_plans();
    test_weight_shadow("");
    k22_backend_free(gpu);
    /* The convolutions again on im2col, then on a backend with tiny work chunks: im2col in bands
     * of output rows, attention in chunks of query rows, the paths full-size models take. */
    setenv("K22_CUDA_CONV", "im2col", 1);
    k22_err err;
    k22_err_clear(&err);
    gpu = k22_backend_by_name("cuda", &err);
    CHECK_MSG(gpu != NULL, "im2col cuda backend: %s", err.msg);
    if (gpu) {
        test_conv2d(" [im2col]");
        test_conv_views(" [im2col]");
        test_precision(" [im2col]", PREC_CONV);
        test_weight_shadow(" [im2col]");
        k22_backend_free(gpu);
    }
    /* ... with attention on the GEMM path (K22_CUDA_ATTN=gemm: the fused kernels would take
     * every bf16/fp16 case above) */
    setenv("K22_CUDA_CHUNK_FLOATS", "600", 1);
    setenv("K22_CUDA_ATTN", "gemm", 1);
    gpu = k22_backend_by_name("cuda", &err);
    CHECK_MSG(gpu != NULL, "banded cuda backend: %s", err.msg);
    if (gpu) {
        test_conv2d(" [im2col] (banded)");
        test_attention(" (row chunks)");
        test_precision(" [im2col] (banded, row chunks)", PREC_CONV | PREC_ATTN);
        attn_paths_check(" (row chunks)", 0);
        k22_backend_free(gpu);
    }
    unsetenv("K22_CUDA_CHUNK_FLOATS");
    /* ... with the fused attention on the wmma kernels (K22_CUDA_ATTN=flash,
     * flash_attention.cu; the default is mma.sync's), then on the mma.sync kernels one tile at a
     * time (K22_CUDA_ATTN_PIPE=0: their walk differs from the default double-buffered one): every
     * bf16/fp16 attention case again; a bad K22_CUDA_ATTN_PIPE is refused */
    attn_rerun("flash", NULL, " (attention on wmma)");
    attn_rerun("mma", "0", " (attention on mma.sync, single-buffered)");
    setenv("K22_CUDA_ATTN_PIPE", "2", 1);
    k22_err_clear(&err);
    gpu = k22_backend_by_name("cuda", &err);
    CHECK_MSG(!gpu && strstr(err.msg, "K22_CUDA_ATTN_PIPE='2'"), "K22_CUDA_ATTN_PIPE=2 refused: %s", err.msg);
    k22_backend_free(gpu);
    unsetenv("K22_CUDA_ATTN_PIPE");
    gpu = NULL;
    test_conv_select();
    test_conv_find();
    test_lt_log();
    test_attn_select();
    test_linear_epilogue();
    if (conv_env) setenv("K22_CUDA_CONV", conv_env, 1);
    free(conv_env);
    k22_backend_free(ref);
    k22_backend_free(fast);
    return k22_test_finish("test_cuda_ops");
}
