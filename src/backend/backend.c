/* backend.c: choosing a backend by name, freeing it, conv2d output geometry, which convolution
 * a CUDA backend runs, and global gradient-norm clipping written once over the op table (torch
 * clip_grad_norm_ semantics).
 * Plain "cuda" takes the GPU of the rank's local rank (k22_dist_gpu_pick, src/dist/device.c). */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "k22/dist.h"
#include "k22/nn.h" /* k22_qkv_stack_read */
#include "k22/ops.h"
#include "k22/profile.h"
#include "cpu/cpu_ops.h"

int k22_conv2d_out_h(const k22_conv2d_desc *d)
{
    return (d->H + d->PT + d->PB - d->KH) / d->SH + 1;
}
int k22_conv2d_out_w(const k22_conv2d_desc *d)
{
    return (d->W + d->PL + d->PR - d->KW) / d->SW + 1;
}

#ifndef K22_HAVE_CUDA
k22_backend *k22_backend_cuda_new(int device, k22_err *err)
{
    k22_err_set(err, K22_ERR_UNSUPPORTED, "this k22 was built without CUDA; build with make cuda");
    return NULL;
}
#else
/* src/backend/cuda/cuda_backend.cu */
const char *k22_cuda_conv_impl(void *ctx, int64_t *n_cudnn, int64_t *n_im2col);
void k22_cuda_stats_of(void *ctx, k22_cuda_stats *st);
void *k22_cuda_stream_of(void *ctx);
size_t k22_cuda_mem_free_of(void *ctx, size_t *total);
#endif

void *k22_backend_cuda_stream(const k22_backend *be)
{
    be = k22_prof_inner(be);
#ifdef K22_HAVE_CUDA
    if (be && be->dev == K22_DEV_CUDA) return k22_cuda_stream_of(be->ctx);
#endif
    (void)be;
    return NULL;
}

size_t k22_backend_mem_free(const k22_backend *be, size_t *total)
{
    size_t all = 0, avail = 0;
    be = k22_prof_inner(be);
#ifdef K22_HAVE_CUDA
    if (be && be->dev == K22_DEV_CUDA) avail = k22_cuda_mem_free_of(be->ctx, &all);
    else
#endif
        avail = k22_host_mem_free(&all);
    const char *v = getenv("K22_MEM_FREE_MIB");
    if (v && *v) {
        char *end;
        errno = 0;
        double mib = strtod(v, &end);
        if (errno || *end || !(mib >= 0 && mib <= 1e12))
            K22_FATAL("K22_MEM_FREE_MIB='%s': expected a number of MiB, 0 to 1e12", v);
        avail = (size_t)(mib * 1048576.0);
        if (all < avail) all = avail;
    }
    if (total) *total = all;
    return avail;
}

const char *k22_backend_conv_impl(const k22_backend *be, int64_t *n_cudnn, int64_t *n_im2col)
{
    if (n_cudnn) *n_cudnn = 0;
    if (n_im2col) *n_im2col = 0;
    be = k22_prof_inner(be); /* a profiling wrapper's ctx is its own, not the cuda backend's */
#ifdef K22_HAVE_CUDA
    if (be && be->dev == K22_DEV_CUDA) return k22_cuda_conv_impl(be->ctx, n_cudnn, n_im2col);
#endif
    (void)be;
    return NULL;
}

int k22_backend_cuda_stats(const k22_backend *be, k22_cuda_stats *st)
{
    memset(st, 0, sizeof *st);
    be = k22_prof_inner(be);
#ifdef K22_HAVE_CUDA
    if (be && be->dev == K22_DEV_CUDA) {
        k22_cuda_stats_of(be->ctx, st);
        return 1;
    }
#endif
    (void)be;
    return 0;
}

/* The profiler forwards the ops it times, not these: they go to the backend it wraps. */
void k22_backend_params_register(const k22_backend *be, float *p, int64_t n)
{
    be = k22_prof_inner(be);
    if (be && be->params_register) be->params_register(be->ctx, p, n);
}

void k22_backend_params_changed(const k22_backend *be)
{
    be = k22_prof_inner(be);
    if (be && be->params_changed) be->params_changed(be->ctx);
}

/* "cuda" is -1 (the local rank's GPU, picked later); "cuda:N" needs N a plain non-negative
 * decimal integer. */
static int backend_cuda_index(const char *name, int *dev)
{
    if (strcmp(name, "cuda") == 0) {
        *dev = -1;
        return 0;
    }
    if (strncmp(name, "cuda:", 5) != 0) return -1;
    const char *s = name + 5;
    if (*s < '0' || *s > '9') return -1;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v > 4096) return -1;
    *dev = (int)v;
    return 0;
}

k22_status k22_backend_name_check(const char *name, k22_err *err)
{
    int dev;
    if (!name) name = "";
    if (strcmp(name, "cpu-ref") == 0 || strcmp(name, "cpu") == 0) return K22_OK;
    if (backend_cuda_index(name, &dev) != 0)
        return k22_err_set(err, K22_ERR_ARG, "unknown device '%s': expected %s", name,
                           K22_DEVICE_NAMES);
#ifndef K22_HAVE_CUDA
    return k22_err_set(err, K22_ERR_UNSUPPORTED,
                       "device %s: this k22 was built without CUDA; build with make cuda", name);
#else
    return K22_OK;
#endif
}

/* The entries of ops.h k22_backend_act16, listed once (X-macro) for the check and K22_ACT16=0. */
#define K22_ACT16_ENTRIES(X)                                                                       \
    X(group_norm_act_fwd_y16) X(conv2d_fwd_x16) X(conv2d_bwd_x16) X(layer_norm_fwd_y16)            \
    X(act_fwd_y16) X(linear_fwd_x16) X(linear_bwd_x16) X(attention_fwd_x16) X(attention_bwd_x16)

/* The switches the models read, checked where every command's backend is made, so that a bad
 * value is an error there: K22_ACT16=0 keeps the activations only a GEMM reads as floats (ops.h
 * k22_backend_act16; 1 or unset: as 16 bits where they can); K22_QKV_STACK (nn.h). be is freed
 * on a bad value. */
static k22_backend *env_switches(k22_backend *be, int act16_entries, k22_err *err)
{
    int act16 = 1, stack = 1;
    if (!be) return NULL;
    if (k22_env_flag("K22_ACT16", 1, "the activations only a GEMM reads kept as floats",
                     "as 16 bits under bf16/fp16, the default", &act16, err) ||
        k22_qkv_stack_read(&stack, err)) {
        k22_backend_free(be);
        return NULL;
    }
    if (act16 || !act16_entries) return be;
#define K22_CLEAR(e) be->e = NULL;
    K22_ACT16_ENTRIES(K22_CLEAR)
#undef K22_CLEAR
    return be;
}

int k22_backend_act16(const k22_backend *be)
{
#define K22_HAS(e) && be->e
    return be->precision != K22_PREC_FP32 K22_ACT16_ENTRIES(K22_HAS);
#undef K22_HAS
}

void k22_backend_act16_require(const k22_backend *be, const char *what)
{
    if (!k22_backend_act16(be))
        K22_FATAL("%s as 16 bits on device %s at precision %s, which has none", what, be->name,
                  k22_precision_name((k22_precision)be->precision));
}

k22_backend *k22_backend_by_name(const char *name, k22_err *err)
{
    int dev;
    if (!name) name = "";
    if (strcmp(name, "cpu-ref") == 0) return env_switches(k22_backend_cpu_new(1), 0, err);
    if (strcmp(name, "cpu") == 0) return env_switches(k22_backend_cpu_new(0), 1, err);
    if (backend_cuda_index(name, &dev) == 0) {
        if (dev < 0 && k22_dist_gpu_pick(&dev, err)) {
            k22_err_prefix(err, "device %s", name);
            return NULL;
        }
        k22_backend *be = k22_backend_cuda_new(dev, err);
        if (!be) k22_err_prefix(err, "device %s", name);
        return env_switches(be, 1, err);
    }
    k22_err_set(err, K22_ERR_ARG, "unknown device '%s': expected %s", name, K22_DEVICE_NAMES);
    return NULL;
}

void k22_backend_free(k22_backend *be)
{
    if (be && be->destroy) be->destroy(be);
}

/* total = sqrt(sum g^2) over all buffers (double on the host), coef = max_norm / (total + 1e-6)
 * in float as torch, clamped to 1, and every buffer scaled by it even when coef is 1. */
float k22_clip_grad_norm(const k22_backend *be, float *const *bufs, const int64_t *lens, int nbufs,
                         float max_norm)
{
    double ss = 0;
    for (int i = 0; i < nbufs; i++)
        if (lens[i] > 0) be->sumsq(be->ctx, &ss, bufs[i], lens[i]);
    float total = (float)sqrt(ss);
    float coef = max_norm / (total + 1e-6f);
    if (coef > 1.0f) coef = 1.0f;
    for (int i = 0; i < nbufs; i++)
        if (lens[i] > 0) be->scale(be->ctx, bufs[i], bufs[i], coef, lens[i]);
    return total;
}

static const char *const k22_precision_names[K22_PREC_COUNT] = {"no", "bf16", "fp16"};

const char *k22_precision_name(k22_precision p)
{
    return (unsigned)p < K22_PREC_COUNT ? k22_precision_names[p] : "?";
}

k22_status k22_precision_parse(const char *name, k22_precision *p, k22_err *err)
{
    for (int i = 0; i < K22_PREC_COUNT; i++)
        if (name && !strcmp(name, k22_precision_names[i])) {
            *p = (k22_precision)i;
            return K22_OK;
        }
    return k22_err_set(err, K22_ERR_ARG, "unknown precision '%s': expected no, bf16 or fp16",
                       name ? name : "");
}

k22_backend *k22_backend_open(const char *name, const char *precision, k22_err *err)
{
    k22_precision p = K22_PREC_FP32;
    if (precision && k22_precision_parse(precision, &p, err)) return NULL;
    k22_backend *be = k22_backend_by_name(name, err);
    if (be && k22_backend_set_precision(be, p, err)) {
        err->code = K22_ERR_ARG;
        k22_backend_free(be);
        return NULL;
    }
    return be;
}

k22_status k22_backend_set_precision(k22_backend *be, k22_precision p, k22_err *err)
{
    if ((unsigned)p >= K22_PREC_COUNT)
        return k22_err_set(err, K22_ERR_ARG, "precision %d is not one of no, bf16, fp16", (int)p);
    if (p != K22_PREC_FP32 && !be->set_precision)
        return k22_err_set(err, K22_ERR_UNSUPPORTED, "device %s computes in fp32 only; "
                           "--mixed_precision %s needs cpu or cuda", be->name, k22_precision_name(p));
    if (be->set_precision) be->set_precision(be->ctx, (int)p);
    be->precision = (int)p;
    return K22_OK;
}

float k22_precision_round(k22_precision p, float x)
{
    if (p == K22_PREC_BF16) return k22_bf16_to_f32(k22_f32_to_bf16(x));
    if (p == K22_PREC_FP16) return k22_f16_to_f32(k22_f32_to_f16(x));
    return x;
}
