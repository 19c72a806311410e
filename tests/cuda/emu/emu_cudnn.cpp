/* emu_cudnn.cpp: the emulator's cuDNN (see cudnn.h): descriptors recorded and checked, the
 * three convolution directions as plain loops summing in double, results blended with alpha and
 * beta in fp32 and stored in the output's type. Data and workspace must lie inside registered
 * device blocks (emu.cpp). A test tool only (tests/cuda/emu/run). */
#include "cudnn.h"
#include "cuda_bf16.h"
#include "cuda_fp16.h"
#include "cuda_runtime.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vector>

#define EMU_MAGIC_HANDLE 0x6375646eu
#define EMU_MAGIC_TENSOR 0x74656e73u
#define EMU_MAGIC_FILTER 0x66696c74u
#define EMU_MAGIC_CONV 0x636f6e76u

struct k22_emu_cudnn {
    uint32_t magic;
    int stream_set;
};
/* A tensor or a filter descriptor (magic tells which): 4-d NCHW (a filter: K, C, H, W). */
struct k22_emu_tensor {
    uint32_t magic;
    int set;
    cudnnDataType_t type;
    int n, c, h, w;
};
struct k22_emu_convdesc {
    uint32_t magic;
    int set;
    int ph, pw, sh, sw, dh, dw;
    cudnnConvolutionMode_t mode;
    cudnnDataType_t compute;
    cudnnMathType_t math;
};

static char emu_last_error[256];

/* Records why a call is refused (cudnnGetLastErrorString) and returns s. */
static cudnnStatus_t emu_refuse(cudnnStatus_t s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(emu_last_error, sizeof emu_last_error, fmt, ap);
    va_end(ap);
    return s;
}

/* A broken k22 rule (not something cuDNN refuses): report and abort, as emu_bad does. */
[[noreturn]] static void emu_die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "emu: cuDNN: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

static int emu_fault(const char *what) {
    const char *f = getenv("K22_EMU_CUDNN");
    return f && !strcmp(f, what);
}

size_t cudnnGetVersion(void) {
    return 99900; /* 9.99.0: printed by k22 as the version, so logs show the emulator */
}

const char *cudnnGetErrorString(cudnnStatus_t s) {
    switch (s) {
    case CUDNN_STATUS_SUCCESS: return "CUDNN_STATUS_SUCCESS";
    case CUDNN_STATUS_NOT_INITIALIZED: return "CUDNN_STATUS_NOT_INITIALIZED";
    case CUDNN_STATUS_BAD_PARAM: return "CUDNN_STATUS_BAD_PARAM";
    case CUDNN_STATUS_BAD_PARAM_NULL_POINTER: return "CUDNN_STATUS_BAD_PARAM_NULL_POINTER";
    case CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER: return "CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER";
    case CUDNN_STATUS_NOT_SUPPORTED: return "CUDNN_STATUS_NOT_SUPPORTED";
    case CUDNN_STATUS_INTERNAL_ERROR: return "CUDNN_STATUS_INTERNAL_ERROR";
    case CUDNN_STATUS_EXECUTION_FAILED: return "CUDNN_STATUS_EXECUTION_FAILED";
    }
    return "CUDNN_STATUS_UNKNOWN";
}

void cudnnGetLastErrorString(char *message, size_t max_size) {
    if (max_size) snprintf(message, max_size, "%s", emu_last_error);
    emu_last_error[0] = 0;
}

/* ---- handle and descriptors ---- */

cudnnStatus_t cudnnCreate(cudnnHandle_t *h) {
    if (!h) return emu_refuse(CUDNN_STATUS_BAD_PARAM_NULL_POINTER, "cudnnCreate: NULL handle");
    if (emu_fault("create"))
        return emu_refuse(CUDNN_STATUS_NOT_INITIALIZED, "K22_EMU_CUDNN=create: no cuDNN here");
    *h = new k22_emu_cudnn{EMU_MAGIC_HANDLE, 0};
    return CUDNN_STATUS_SUCCESS;
}
static int emu_handle_ok(cudnnHandle_t h) {
    return h && h->magic == EMU_MAGIC_HANDLE;
}
cudnnStatus_t cudnnDestroy(cudnnHandle_t h) {
    if (!emu_handle_ok(h)) return emu_refuse(CUDNN_STATUS_BAD_PARAM, "cudnnDestroy: bad handle");
    h->magic = 0;
    delete h;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetStream(cudnnHandle_t h, cudaStream_t s) {
    if (!emu_handle_ok(h)) return emu_refuse(CUDNN_STATUS_BAD_PARAM, "cudnnSetStream: bad handle");
    h->stream_set = s != NULL;
    return CUDNN_STATUS_SUCCESS;
}

static cudnnStatus_t emu_create(k22_emu_tensor **d, uint32_t magic) {
    if (!d) return emu_refuse(CUDNN_STATUS_BAD_PARAM_NULL_POINTER, "NULL descriptor pointer");
    *d = new k22_emu_tensor{magic, 0, CUDNN_DATA_FLOAT, 0, 0, 0, 0};
    return CUDNN_STATUS_SUCCESS;
}
static cudnnStatus_t emu_destroy(k22_emu_tensor *d, uint32_t magic) {
    if (!d) return CUDNN_STATUS_SUCCESS;
    if (d->magic != magic) return emu_refuse(CUDNN_STATUS_BAD_PARAM, "destroying a bad descriptor");
    d->magic = 0;
    delete d;
    return CUDNN_STATUS_SUCCESS;
}
static size_t emu_esize(cudnnDataType_t t) {
    return t == CUDNN_DATA_FLOAT ? 4 : 2;
}
/* What cudnnSet{Tensor,Filter}4dDescriptor check. The emulator knows NCHW and the three types
 * k22 uses; cuDNN itself limits a tensor to 2^31 - 1 elements. */
static cudnnStatus_t emu_set4d(k22_emu_tensor *d, uint32_t magic, cudnnTensorFormat_t f,
                               cudnnDataType_t t, int n, int c, int h, int w, const char *what) {
    if (!d || d->magic != magic) return emu_refuse(CUDNN_STATUS_BAD_PARAM, "%s: bad descriptor", what);
    if (n <= 0 || c <= 0 || h <= 0 || w <= 0)
        return emu_refuse(CUDNN_STATUS_BAD_PARAM, "%s: dimension <= 0 (%d, %d, %d, %d)", what, n, c, h, w);
    if (f != CUDNN_TENSOR_NCHW)
        return emu_refuse(CUDNN_STATUS_NOT_SUPPORTED, "%s: the emulator knows NCHW only", what);
    if (t != CUDNN_DATA_FLOAT && t != CUDNN_DATA_HALF && t != CUDNN_DATA_BFLOAT16)
        return emu_refuse(CUDNN_STATUS_NOT_SUPPORTED, "%s: data type %d not emulated", what, (int)t);
    if ((int64_t)n * c * h * w > INT32_MAX)
        return emu_refuse(CUDNN_STATUS_NOT_SUPPORTED, "%s: more than 2^31 - 1 elements", what);
    d->set = 1, d->type = t, d->n = n, d->c = c, d->h = h, d->w = w;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnCreateTensorDescriptor(cudnnTensorDescriptor_t *d) {
    return emu_create(d, EMU_MAGIC_TENSOR);
}
cudnnStatus_t cudnnDestroyTensorDescriptor(cudnnTensorDescriptor_t d) {
    return emu_destroy(d, EMU_MAGIC_TENSOR);
}
cudnnStatus_t cudnnSetTensor4dDescriptor(cudnnTensorDescriptor_t d, cudnnTensorFormat_t f,
                                         cudnnDataType_t t, int n, int c, int h, int w) {
    return emu_set4d(d, EMU_MAGIC_TENSOR, f, t, n, c, h, w, "cudnnSetTensor4dDescriptor");
}
cudnnStatus_t cudnnCreateFilterDescriptor(cudnnFilterDescriptor_t *d) {
    return emu_create(d, EMU_MAGIC_FILTER);
}
cudnnStatus_t cudnnDestroyFilterDescriptor(cudnnFilterDescriptor_t d) {
    return emu_destroy(d, EMU_MAGIC_FILTER);
}
cudnnStatus_t cudnnSetFilter4dDescriptor(cudnnFilterDescriptor_t d, cudnnDataType_t t,
                                         cudnnTensorFormat_t f, int k, int c, int h, int w) {
    return emu_set4d(d, EMU_MAGIC_FILTER, f, t, k, c, h, w, "cudnnSetFilter4dDescriptor");
}

cudnnStatus_t cudnnCreateConvolutionDescriptor(cudnnConvolutionDescriptor_t *d) {
    if (!d) return emu_refuse(CUDNN_STATUS_BAD_PARAM_NULL_POINTER, "NULL descriptor pointer");
    *d = new k22_emu_convdesc{EMU_MAGIC_CONV, 0, 0, 0, 1, 1, 1, 1, CUDNN_CONVOLUTION,
                              CUDNN_DATA_FLOAT, CUDNN_DEFAULT_MATH};
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroyConvolutionDescriptor(cudnnConvolutionDescriptor_t d) {
    if (!d) return CUDNN_STATUS_SUCCESS;
    if (d->magic != EMU_MAGIC_CONV) return emu_refuse(CUDNN_STATUS_BAD_PARAM, "bad convolution descriptor");
    d->magic = 0;
    delete d;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetConvolutionMathType(cudnnConvolutionDescriptor_t d, cudnnMathType_t m) {
    if (!d || d->magic != EMU_MAGIC_CONV)
        return emu_refuse(CUDNN_STATUS_BAD_PARAM, "cudnnSetConvolutionMathType: bad descriptor");
    if ((int)m < CUDNN_DEFAULT_MATH || (int)m > CUDNN_FMA_MATH)
        return emu_refuse(CUDNN_STATUS_BAD_PARAM, "cudnnSetConvolutionMathType: math type %d", (int)m);
    d->math = m;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetConvolution2dDescriptor(cudnnConvolutionDescriptor_t d, int ph, int pw,
                                              int u, int v, int dh, int dw,
                                              cudnnConvolutionMode_t mode, cudnnDataType_t ct) {
    if (!d || d->magic != EMU_MAGIC_CONV)
        return emu_refuse(CUDNN_STATUS_BAD_PARAM, "cudnnSetConvolution2dDescriptor: bad descriptor");
    if (ph < 0 || pw < 0 || u <= 0 || v <= 0 || dh <= 0 || dw <= 0)
        return emu_refuse(CUDNN_STATUS_BAD_PARAM, "cudnnSetConvolution2dDescriptor: pad %d,%d "
                          "stride %d,%d dilation %d,%d", ph, pw, u, v, dh, dw);
    if (mode != CUDNN_CONVOLUTION && mode != CUDNN_CROSS_CORRELATION)
        return emu_refuse(CUDNN_STATUS_BAD_PARAM, "cudnnSetConvolution2dDescriptor: mode %d", (int)mode);
    d->set = 1, d->ph = ph, d->pw = pw, d->sh = u, d->sw = v, d->dh = dh, d->dw = dw;
    d->mode = mode, d->compute = ct;
    return CUDNN_STATUS_SUCCESS;
}

/* The output size of one dimension, or -1 when the dilated kernel exceeds the padded input. */
static int emu_out_dim(int n, int k, int pad, int stride, int dil) {
    int span = n + 2 * pad - ((k - 1) * dil + 1);
    return span < 0 ? -1 : span / stride + 1;
}

cudnnStatus_t cudnnGetConvolution2dForwardOutputDim(const cudnnConvolutionDescriptor_t cv,
                                                    const cudnnTensorDescriptor_t x,
                                                    const cudnnFilterDescriptor_t w, int *n,
                                                    int *c, int *h, int *wo) {
    if (!cv || cv->magic != EMU_MAGIC_CONV || !cv->set || !x || x->magic != EMU_MAGIC_TENSOR ||
        !x->set || !w || w->magic != EMU_MAGIC_FILTER || !w->set)
        return emu_refuse(CUDNN_STATUS_BAD_PARAM, "cudnnGetConvolution2dForwardOutputDim: a "
                          "descriptor is bad or unset");
    if (x->c != w->c)
        return emu_refuse(CUDNN_STATUS_BAD_PARAM, "input has %d channels, the filter %d", x->c, w->c);
    int oh = emu_out_dim(x->h, w->h, cv->ph, cv->sh, cv->dh);
    int ow = emu_out_dim(x->w, w->w, cv->pw, cv->sw, cv->dw);
    if (oh < 1 || ow < 1)
        return emu_refuse(CUDNN_STATUS_BAD_PARAM, "the filter is larger than the padded input");
    *n = x->n, *c = w->n, *h = oh, *wo = ow;
    return CUDNN_STATUS_SUCCESS;
}

/* ---- a convolution's geometry, types and emulated algorithms ---- */

enum { EMU_FWD, EMU_BWD_DATA, EMU_BWD_FILTER };

/* The checks every query and run of the three directions share: handle, set descriptors of the
 * right kinds, matching sizes (y as cuDNN computes it), and a supported type configuration:
 * FLOAT_CONFIG, PSEUDO/TRUE_HALF_CONFIG or PSEUDO_BFLOAT16_CONFIG (x, w and y of one type; FLOAT
 * compute, or HALF for half data). */
static cudnnStatus_t emu_check(cudnnHandle_t h, k22_emu_tensor *x, k22_emu_tensor *w,
                               k22_emu_convdesc *cv, k22_emu_tensor *y,
                               const char *what) {
    int n, c, oh, ow;
    if (!emu_handle_ok(h)) return emu_refuse(CUDNN_STATUS_BAD_PARAM, "%s: bad handle", what);
    if (!x || x->magic != EMU_MAGIC_TENSOR || !y || y->magic != EMU_MAGIC_TENSOR || !x->set || !y->set)
        return emu_refuse(CUDNN_STATUS_BAD_PARAM, "%s: bad or unset tensor descriptor", what);
    cudnnStatus_t s = cudnnGetConvolution2dForwardOutputDim(cv, x, w, &n, &c, &oh, &ow);
    if (s != CUDNN_STATUS_SUCCESS) return s;
    if (y->n != n || y->c != c || y->h != oh || y->w != ow)
        return emu_refuse(CUDNN_STATUS_BAD_PARAM, "%s: output (%d, %d, %d, %d) where the convolution "
                          "gives (%d, %d, %d, %d)", what, y->n, y->c, y->h, y->w, n, c, oh, ow);
    if (x->type != w->type || x->type != y->type)
        return emu_refuse(CUDNN_STATUS_BAD_PARAM, "%s: data types x %d, w %d, y %d differ (no "
                          "configuration mixes them)", what, (int)x->type, (int)w->type, (int)y->type);
    int ok = cv->compute == CUDNN_DATA_FLOAT ||
             (cv->compute == CUDNN_DATA_HALF && x->type == CUDNN_DATA_HALF);
    if (!ok)
        return emu_refuse(CUDNN_STATUS_NOT_SUPPORTED, "%s: data type %d with compute type %d is no "
                          "supported configuration", what, (int)x->type, (int)cv->compute);
    return CUDNN_STATUS_SUCCESS;
}

/* An emulated algorithm: its status for every shape, determinism, workspace (0: none; 1: one
 * float per output element, where it builds the result before storing it; 2: 1 TiB, more than
 * any caller may give) and whether it needs 16-byte aligned data, as vectorized kernels do. */
struct emu_algo {
    int algo;
    cudnnStatus_t status;
    int deterministic, ws_kind, align16;
};
/* Rankings, best first (see cudnn.h). */
static const emu_algo emu_fwd_algos[] = {
    {CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING, CUDNN_STATUS_SUCCESS, 0, 0, 0},
    {CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD, CUDNN_STATUS_NOT_SUPPORTED, 1, 0, 0},
    {CUDNN_CONVOLUTION_FWD_ALGO_FFT, CUDNN_STATUS_SUCCESS, 1, 2, 0},
    {CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM, CUDNN_STATUS_SUCCESS, 1, 1, 1},
    {CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, CUDNN_STATUS_SUCCESS, 1, 0, 0},
};
static const emu_algo emu_bwd_data_algos[] = {
    {CUDNN_CONVOLUTION_BWD_DATA_ALGO_0, CUDNN_STATUS_SUCCESS, 0, 0, 0},
    {CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD, CUDNN_STATUS_NOT_SUPPORTED, 1, 0, 0},
    {CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT, CUDNN_STATUS_SUCCESS, 1, 2, 0},
    {CUDNN_CONVOLUTION_BWD_DATA_ALGO_1, CUDNN_STATUS_SUCCESS, 1, 1, 1},
    {CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD_NONFUSED, CUDNN_STATUS_SUCCESS, 1, 0, 0},
};
static const emu_algo emu_bwd_filter_algos[] = {
    {CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0, CUDNN_STATUS_SUCCESS, 0, 0, 0},
    {CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3, CUDNN_STATUS_SUCCESS, 0, 0, 0},
    {CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD, CUDNN_STATUS_NOT_SUPPORTED, 1, 0, 0},
    {CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT, CUDNN_STATUS_SUCCESS, 1, 2, 0},
    {CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1, CUDNN_STATUS_SUCCESS, 1, 1, 1},
    {CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD_NONFUSED, CUDNN_STATUS_SUCCESS, 1, 0, 0},
};

static const emu_algo *emu_algos(int dir, int *n) {
    if (dir == EMU_FWD) {
        *n = sizeof emu_fwd_algos / sizeof emu_fwd_algos[0];
        return emu_fwd_algos;
    }
    if (dir == EMU_BWD_DATA) {
        *n = sizeof emu_bwd_data_algos / sizeof emu_bwd_data_algos[0];
        return emu_bwd_data_algos;
    }
    *n = sizeof emu_bwd_filter_algos / sizeof emu_bwd_filter_algos[0];
    return emu_bwd_filter_algos;
}

static const emu_algo *emu_find(int dir, int algo) {
    int n;
    const emu_algo *a = emu_algos(dir, &n);
    for (int i = 0; i < n; i++)
        if (a[i].algo == algo) return &a[i];
    return NULL;
}

static int64_t emu_count(k22_emu_tensor *t) {
    return (int64_t)t->n * t->c * t->h * t->w;
}

/* The tensor a direction writes: y forward, dx (x's shape) backward data, dw backward filter. */
static k22_emu_tensor *emu_out(int dir, k22_emu_tensor *x, k22_emu_tensor *w,
                                     k22_emu_tensor *y) {
    return dir == EMU_FWD ? y : dir == EMU_BWD_DATA ? x : w;
}

static size_t emu_ws_bytes(const emu_algo *a, int dir, k22_emu_tensor *x,
                           k22_emu_tensor *w, k22_emu_tensor *y) {
    if (a->ws_kind == 2) return (size_t)1 << 40;
    return a->ws_kind == 1 ? (size_t)emu_count(emu_out(dir, x, w, y)) * sizeof(float) : 0;
}

/* The ranking as cudnnGet*Algorithm_v7 returns it, into one perf struct type or another. */
template <class Perf>
static cudnnStatus_t emu_rank(int dir, cudnnHandle_t h, k22_emu_tensor *x,
                              k22_emu_tensor *w, k22_emu_convdesc *cv,
                              k22_emu_tensor *y, int req, int *ret, Perf *perf,
                              const char *what) {
    cudnnStatus_t s = emu_check(h, x, w, cv, y, what);
    if (s != CUDNN_STATUS_SUCCESS) return s;
    if (req < 1 || !ret || !perf)
        return emu_refuse(CUDNN_STATUS_BAD_PARAM, "%s: requested %d algorithms into %p", what, req,
                          (void *)perf);
    int n;
    const emu_algo *a = emu_algos(dir, &n);
    *ret = n < req ? n : req;
    for (int i = 0; i < *ret; i++) {
        memset(&perf[i], 0, sizeof perf[i]);
        perf[i].algo = (decltype(perf[i].algo))a[i].algo;
        perf[i].status = a[i].status;
        perf[i].time = (float)(i + 1);
        perf[i].memory = a[i].status == CUDNN_STATUS_SUCCESS ? emu_ws_bytes(&a[i], dir, x, w, y) : 0;
        perf[i].determinism = a[i].deterministic ? CUDNN_DETERMINISTIC : CUDNN_NON_DETERMINISTIC;
        perf[i].mathType = cv->math;
    }
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolutionForwardAlgorithm_v7(cudnnHandle_t h, const cudnnTensorDescriptor_t x,
                                                     const cudnnFilterDescriptor_t w,
                                                     const cudnnConvolutionDescriptor_t cv,
                                                     const cudnnTensorDescriptor_t y, const int req,
                                                     int *ret, cudnnConvolutionFwdAlgoPerf_t *perf) {
    return emu_rank(EMU_FWD, h, x, w, cv, y, req, ret, perf, "cudnnGetConvolutionForwardAlgorithm_v7");
}
cudnnStatus_t cudnnGetConvolutionBackwardDataAlgorithm_v7(
    cudnnHandle_t h, const cudnnFilterDescriptor_t w, const cudnnTensorDescriptor_t dy,
    const cudnnConvolutionDescriptor_t cv, const cudnnTensorDescriptor_t dx, const int req,
    int *ret, cudnnConvolutionBwdDataAlgoPerf_t *perf) {
    return emu_rank(EMU_BWD_DATA, h, dx, w, cv, dy, req, ret, perf,
                    "cudnnGetConvolutionBackwardDataAlgorithm_v7");
}
cudnnStatus_t cudnnGetConvolutionBackwardFilterAlgorithm_v7(
    cudnnHandle_t h, const cudnnTensorDescriptor_t x, const cudnnTensorDescriptor_t dy,
    const cudnnConvolutionDescriptor_t cv, const cudnnFilterDescriptor_t dw, const int req,
    int *ret, cudnnConvolutionBwdFilterAlgoPerf_t *perf) {
    return emu_rank(EMU_BWD_FILTER, h, x, dw, cv, dy, req, ret, perf,
                    "cudnnGetConvolutionBackwardFilterAlgorithm_v7");
}

/* Whether byte ranges [a, a + an) and [b, b + bn) meet. */
static int emu_overlap(const void *a, size_t an, const void *b, size_t bn) {
    uintptr_t pa = (uintptr_t)a, pb = (uintptr_t)b;
    return an && bn && pa < pb + bn && pb < pa + an;
}

/* cudnnFind*AlgorithmEx: "times" every algorithm by running it on the caller's buffers with the
 * workspace given, fastest first. Here the ranking is the heuristics' reversed (so a caller that
 * takes the timing picks other algorithms than the heuristics would), an algorithm needing more
 * workspace than given reports CUDNN_STATUS_NOT_SUPPORTED, and the output is overwritten with NaN
 * (bytes 0xff), as the real runs leave it with whatever the last algorithm wrote: a caller that
 * passes a live tensor sees it. K22_EMU_CUDNN=find makes it fail. */
template <class Perf>
static cudnnStatus_t emu_time(int dir, cudnnHandle_t h, k22_emu_tensor *x, k22_emu_tensor *w,
                              k22_emu_convdesc *cv, k22_emu_tensor *y, const void *in1,
                              const void *in2, void *out, int req, int *ret, Perf *perf, void *ws,
                              size_t wsn, const char *what) {
    cudnnStatus_t s = emu_check(h, x, w, cv, y, what);
    if (s != CUDNN_STATUS_SUCCESS) return s;
    if (req < 1 || !ret || !perf || !in1 || !in2 || !out || (wsn && !ws))
        return emu_refuse(CUDNN_STATUS_BAD_PARAM_NULL_POINTER, "%s: NULL data, workspace or results",
                          what);
    if (!h->stream_set)
        emu_die("%s on the legacy default stream: k22's stream is non-blocking (cudnnSetStream "
                "missing)", what);
    if (emu_fault("find"))
        return emu_refuse(CUDNN_STATUS_INTERNAL_ERROR, "K22_EMU_CUDNN=find: %s fails", what);
    size_t es = emu_esize(x->type);
    k22_emu_tensor *o = emu_out(dir, x, w, y);
    k22_emu_tensor *t1 = dir == EMU_BWD_DATA ? w : x, *t2 = dir == EMU_FWD ? w : y;
    size_t n1 = emu_count(t1) * es, n2 = emu_count(t2) * es, no = emu_count(o) * es;
    if (emu_overlap(out, no, in1, n1) || emu_overlap(out, no, in2, n2) ||
        emu_overlap(ws, wsn, in1, n1) || emu_overlap(ws, wsn, in2, n2) || emu_overlap(ws, wsn, out, no))
        emu_die("%s: output, inputs and workspace overlap", what);
    k22_emu_open_range(in1, n1, what);
    k22_emu_open_range(in2, n2, what);
    k22_emu_open_range(out, no, what);
    if (wsn) k22_emu_open_range(ws, wsn, what);
    memset(out, 0xff, no);
    k22_emu_close();
    int n;
    const emu_algo *a = emu_algos(dir, &n);
    *ret = n < req ? n : req;
    for (int i = 0; i < *ret; i++) {
        const emu_algo *e = &a[n - 1 - i];
        size_t need = e->status == CUDNN_STATUS_SUCCESS ? emu_ws_bytes(e, dir, x, w, y) : 0;
        memset(&perf[i], 0, sizeof perf[i]);
        perf[i].algo = (decltype(perf[i].algo))e->algo;
        perf[i].status = e->status != CUDNN_STATUS_SUCCESS ? e->status
                         : need > wsn ? CUDNN_STATUS_NOT_SUPPORTED : CUDNN_STATUS_SUCCESS;
        perf[i].time = perf[i].status == CUDNN_STATUS_SUCCESS ? (float)(i + 1) : -1.0f;
        perf[i].memory = need;
        perf[i].determinism = e->deterministic ? CUDNN_DETERMINISTIC : CUDNN_NON_DETERMINISTIC;
        perf[i].mathType = cv->math;
    }
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnFindConvolutionForwardAlgorithmEx(
    cudnnHandle_t h, const cudnnTensorDescriptor_t x, const void *xd, const cudnnFilterDescriptor_t w,
    const void *wd, const cudnnConvolutionDescriptor_t cv, const cudnnTensorDescriptor_t y, void *yd,
    const int req, int *ret, cudnnConvolutionFwdAlgoPerf_t *perf, void *ws, size_t wsn) {
    return emu_time(EMU_FWD, h, x, w, cv, y, xd, wd, yd, req, ret, perf, ws, wsn,
                    "cudnnFindConvolutionForwardAlgorithmEx");
}
cudnnStatus_t cudnnFindConvolutionBackwardDataAlgorithmEx(
    cudnnHandle_t h, const cudnnFilterDescriptor_t w, const void *wd, const cudnnTensorDescriptor_t dy,
    const void *dyd, const cudnnConvolutionDescriptor_t cv, const cudnnTensorDescriptor_t dx, void *dxd,
    const int req, int *ret, cudnnConvolutionBwdDataAlgoPerf_t *perf, void *ws, size_t wsn) {
    return emu_time(EMU_BWD_DATA, h, dx, w, cv, dy, wd, dyd, dxd, req, ret, perf, ws, wsn,
                    "cudnnFindConvolutionBackwardDataAlgorithmEx");
}
cudnnStatus_t cudnnFindConvolutionBackwardFilterAlgorithmEx(
    cudnnHandle_t h, const cudnnTensorDescriptor_t x, const void *xd, const cudnnTensorDescriptor_t dy,
    const void *dyd, const cudnnConvolutionDescriptor_t cv, const cudnnFilterDescriptor_t dw, void *dwd,
    const int req, int *ret, cudnnConvolutionBwdFilterAlgoPerf_t *perf, void *ws, size_t wsn) {
    return emu_time(EMU_BWD_FILTER, h, x, dw, cv, dy, xd, dyd, dwd, req, ret, perf, ws, wsn,
                    "cudnnFindConvolutionBackwardFilterAlgorithmEx");
}

static cudnnStatus_t emu_ws_query(int dir, cudnnHandle_t h, k22_emu_tensor *x,
                                  k22_emu_tensor *w, k22_emu_convdesc *cv,
                                  k22_emu_tensor *y, int algo, size_t *bytes,
                                  const char *what) {
    cudnnStatus_t s = emu_check(h, x, w, cv, y, what);
    if (s != CUDNN_STATUS_SUCCESS) return s;
    if (!bytes) return emu_refuse(CUDNN_STATUS_BAD_PARAM_NULL_POINTER, "%s: NULL size", what);
    const emu_algo *a = emu_find(dir, algo);
    if (!a || a->status != CUDNN_STATUS_SUCCESS)
        return emu_refuse(CUDNN_STATUS_NOT_SUPPORTED, "%s: algorithm %d not supported here", what, algo);
    *bytes = emu_ws_bytes(a, dir, x, w, y);
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolutionForwardWorkspaceSize(cudnnHandle_t h, const cudnnTensorDescriptor_t x,
                                                      const cudnnFilterDescriptor_t w,
                                                      const cudnnConvolutionDescriptor_t cv,
                                                      const cudnnTensorDescriptor_t y,
                                                      cudnnConvolutionFwdAlgo_t algo, size_t *bytes) {
    return emu_ws_query(EMU_FWD, h, x, w, cv, y, algo, bytes, "cudnnGetConvolutionForwardWorkspaceSize");
}
cudnnStatus_t cudnnGetConvolutionBackwardDataWorkspaceSize(
    cudnnHandle_t h, const cudnnFilterDescriptor_t w, const cudnnTensorDescriptor_t dy,
    const cudnnConvolutionDescriptor_t cv, const cudnnTensorDescriptor_t dx,
    cudnnConvolutionBwdDataAlgo_t algo, size_t *bytes) {
    return emu_ws_query(EMU_BWD_DATA, h, dx, w, cv, dy, algo, bytes,
                        "cudnnGetConvolutionBackwardDataWorkspaceSize");
}
cudnnStatus_t cudnnGetConvolutionBackwardFilterWorkspaceSize(
    cudnnHandle_t h, const cudnnTensorDescriptor_t x, const cudnnTensorDescriptor_t dy,
    const cudnnConvolutionDescriptor_t cv, const cudnnFilterDescriptor_t dw,
    cudnnConvolutionBwdFilterAlgo_t algo, size_t *bytes) {
    return emu_ws_query(EMU_BWD_FILTER, h, x, dw, cv, dy, algo, bytes,
                        "cudnnGetConvolutionBackwardFilterWorkspaceSize");
}

/* ---- running ---- */

/* TF32 as tensor cores read an fp32 operand: 10 explicit significand bits, rounded to nearest
 * (ties away from zero). */
static float emu_tf32(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7f800000u) == 0x7f800000u) return f; /* inf, NaN */
    u = (u + 0x1000u) & 0xffffe000u;
    memcpy(&f, &u, 4);
    return f;
}

/* n elements of type t at p, as floats (TF32-rounded when tf32). */
static std::vector<float> emu_read(const void *p, cudnnDataType_t t, int64_t n, int tf32) {
    std::vector<float> v((size_t)n);
    for (int64_t i = 0; i < n; i++) {
        float f = t == CUDNN_DATA_HALF ? __half2float(((const __half *)p)[i])
                  : t == CUDNN_DATA_BFLOAT16 ? __bfloat162float(((const __nv_bfloat16 *)p)[i])
                                             : ((const float *)p)[i];
        v[(size_t)i] = tf32 ? emu_tf32(f) : f;
    }
    return v;
}

static float emu_load(const void *p, cudnnDataType_t t, int64_t i) {
    return t == CUDNN_DATA_HALF ? __half2float(((const __half *)p)[i])
           : t == CUDNN_DATA_BFLOAT16 ? __bfloat162float(((const __nv_bfloat16 *)p)[i])
                                      : ((const float *)p)[i];
}

static void emu_store(void *p, cudnnDataType_t t, int64_t i, float v) {
    if (t == CUDNN_DATA_HALF)
        ((__half *)p)[i] = __float2half_rn(v);
    else if (t == CUDNN_DATA_BFLOAT16)
        ((__nv_bfloat16 *)p)[i] = __float2bfloat16_rn(v);
    else
        ((float *)p)[i] = v;
}

/* One direction: x (B, C, H, W), w (O, C, KH, KW), y (B, O, OH, OW) descriptors; in1 and in2 the
 * two tensors read (forward x and w, backward data w and dy, backward filter x and dy), out the
 * one written (y, dx, dw). */
static cudnnStatus_t emu_run(int dir, cudnnHandle_t h, const void *alpha, k22_emu_tensor *x,
                             k22_emu_tensor *w, k22_emu_convdesc *cv,
                             k22_emu_tensor *y, const void *in1, const void *in2, int algo,
                             void *ws, size_t wsn, const void *beta, void *out, const char *what) {
    cudnnStatus_t s = emu_check(h, x, w, cv, y, what);
    if (s != CUDNN_STATUS_SUCCESS) return s;
    if (!alpha || !beta || !in1 || !in2 || !out)
        return emu_refuse(CUDNN_STATUS_BAD_PARAM_NULL_POINTER, "%s: NULL alpha, beta or data", what);
    const emu_algo *a = emu_find(dir, algo);
    if (!a || a->status != CUDNN_STATUS_SUCCESS)
        return emu_refuse(CUDNN_STATUS_NOT_SUPPORTED, "%s: algorithm %d not supported here", what, algo);
    if (!h->stream_set)
        emu_die("%s on the legacy default stream: k22's stream is non-blocking, so the "
                "convolution would race with it (cudnnSetStream missing)", what);
    if (!a->deterministic)
        emu_die("%s: algorithm %d is non-deterministic; k22 promises reproducible runs", what, algo);
    if (emu_fault("run"))
        return emu_refuse(CUDNN_STATUS_EXECUTION_FAILED, "K22_EMU_CUDNN=run: %s fails", what);
    size_t need = emu_ws_bytes(a, dir, x, w, y);
    if (wsn < need || (need && !ws))
        return emu_refuse(CUDNN_STATUS_BAD_PARAM, "%s: algorithm %d needs %zu bytes of workspace, "
                          "given %zu at %p", what, algo, need, wsn, ws);
    cudnnDataType_t t = x->type;
    size_t es = emu_esize(t);
    k22_emu_tensor *o = emu_out(dir, x, w, y);
    k22_emu_tensor *t1 = dir == EMU_BWD_DATA ? w : x, *t2 = dir == EMU_FWD ? w : y;
    size_t n1 = emu_count(t1) * es, n2 = emu_count(t2) * es, no = emu_count(o) * es;
    const void *ptrs[3] = {in1, in2, out};
    for (int i = 0; i < 3; i++) {
        if ((uintptr_t)ptrs[i] % es)
            return emu_refuse(CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER, "%s: data at %p is not "
                              "aligned to its %zu-byte elements", what, ptrs[i], es);
        if (a->align16 && (uintptr_t)ptrs[i] % 16)
            return emu_refuse(CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER, "%s: algorithm %d reads "
                              "16-byte vectors; data at %p", what, algo, ptrs[i]);
    }
    if (emu_overlap(out, no, in1, n1) || emu_overlap(out, no, in2, n2) ||
        emu_overlap(ws, need, in1, n1) || emu_overlap(ws, need, in2, n2) ||
        emu_overlap(ws, need, out, no))
        emu_die("%s: output, inputs and workspace overlap", what);
    k22_emu_open_range(in1, n1, what);
    k22_emu_open_range(in2, n2, what);
    k22_emu_open_range(out, no, what);
    if (need) k22_emu_open_range(ws, need, what);

    /* fp32 under any math type but FMA may use TF32 tensor cores on Ampere and later. */
    int tf32 = t == CUDNN_DATA_FLOAT && cv->math != CUDNN_FMA_MATH;
    std::vector<float> v1 = emu_read(in1, t, emu_count(t1), tf32);
    std::vector<float> v2 = emu_read(in2, t, emu_count(t2), tf32);
    const std::vector<float> &X = v1;                        /* unused in backward data */
    const std::vector<float> &Wt = dir == EMU_FWD ? v2 : v1; /* unused in backward filter */
    const std::vector<float> &Y = v2;                        /* dy; unused in forward */
    std::vector<double> acc((size_t)emu_count(o), 0.0);
    int B = x->n, C = x->c, H = x->h, W = x->w, O = w->n, KH = w->h, KW = w->w, OH = y->h, OW = y->w;
    for (int b = 0; b < B; b++)
        for (int oc = 0; oc < O; oc++)
            for (int oy = 0; oy < OH; oy++)
                for (int ox = 0; ox < OW; ox++) {
                    int64_t yi = (((int64_t)b * O + oc) * OH + oy) * OW + ox;
                    for (int c = 0; c < C; c++)
                        for (int ky = 0; ky < KH; ky++) {
                            int iy = oy * cv->sh - cv->ph + ky * cv->dh;
                            if (iy < 0 || iy >= H) continue;
                            for (int kx = 0; kx < KW; kx++) {
                                int ix = ox * cv->sw - cv->pw + kx * cv->dw;
                                if (ix < 0 || ix >= W) continue;
                                /* CUDNN_CONVOLUTION flips the filter; cross-correlation not */
                                int fy = cv->mode == CUDNN_CONVOLUTION ? KH - 1 - ky : ky;
                                int fx = cv->mode == CUDNN_CONVOLUTION ? KW - 1 - kx : kx;
                                int64_t xi = (((int64_t)b * C + c) * H + iy) * W + ix;
                                int64_t wi = (((int64_t)oc * C + c) * KH + fy) * KW + fx;
                                if (dir == EMU_FWD)
                                    acc[(size_t)yi] += (double)X[(size_t)xi] * Wt[(size_t)wi];
                                else if (dir == EMU_BWD_DATA)
                                    acc[(size_t)xi] += (double)Y[(size_t)yi] * Wt[(size_t)wi];
                                else
                                    acc[(size_t)wi] += (double)Y[(size_t)yi] * X[(size_t)xi];
                            }
                        }
                }
    /* dst = alpha * result + beta * dst in fp32, stored once in the output's type; beta = 0 never
     * reads dst (it may hold NaN). The workspace algorithm builds the result there first. */
    float al = *(const float *)alpha, be = *(const float *)beta;
    float *stage = a->ws_kind == 1 ? (float *)ws : NULL;
    int wrong = emu_fault("wrong");
    for (size_t i = 0; i < acc.size(); i++) {
        float r = be == 0.0f ? (float)(al * acc[i])
                             : (float)(al * acc[i] + (double)be * emu_load(out, t, (int64_t)i));
        if (wrong) r += 1.0f;
        if (stage)
            stage[i] = r;
        else
            emu_store(out, t, (int64_t)i, r);
    }
    if (stage)
        for (size_t i = 0; i < acc.size(); i++) emu_store(out, t, (int64_t)i, stage[i]);
    k22_emu_close();
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnConvolutionForward(cudnnHandle_t h, const void *alpha,
                                      const cudnnTensorDescriptor_t xd, const void *x,
                                      const cudnnFilterDescriptor_t wd, const void *w,
                                      const cudnnConvolutionDescriptor_t cv,
                                      cudnnConvolutionFwdAlgo_t algo, void *ws, size_t wsn,
                                      const void *beta, const cudnnTensorDescriptor_t yd, void *y) {
    return emu_run(EMU_FWD, h, alpha, xd, wd, cv, yd, x, w, algo, ws, wsn, beta, y,
                   "cudnnConvolutionForward");
}
cudnnStatus_t cudnnConvolutionBackwardData(cudnnHandle_t h, const void *alpha,
                                           const cudnnFilterDescriptor_t wd, const void *w,
                                           const cudnnTensorDescriptor_t dyd, const void *dy,
                                           const cudnnConvolutionDescriptor_t cv,
                                           cudnnConvolutionBwdDataAlgo_t algo, void *ws,
                                           size_t wsn, const void *beta,
                                           const cudnnTensorDescriptor_t dxd, void *dx) {
    return emu_run(EMU_BWD_DATA, h, alpha, dxd, wd, cv, dyd, w, dy, algo, ws, wsn, beta, dx,
                   "cudnnConvolutionBackwardData");
}
cudnnStatus_t cudnnConvolutionBackwardFilter(cudnnHandle_t h, const void *alpha,
                                             const cudnnTensorDescriptor_t xd, const void *x,
                                             const cudnnTensorDescriptor_t dyd, const void *dy,
                                             const cudnnConvolutionDescriptor_t cv,
                                             cudnnConvolutionBwdFilterAlgo_t algo, void *ws,
                                             size_t wsn, const void *beta,
                                             const cudnnFilterDescriptor_t dwd, void *dw) {
    return emu_run(EMU_BWD_FILTER, h, alpha, xd, dwd, cv, dyd, x, dy, algo, ws, wsn, beta, dw,
                   "cudnnConvolutionBackwardFilter");
}
