/* profile.h: a per-op profiler that wraps any backend (ops.h). k22_prof_wrap(be) returns a
 * backend whose every op entry forwards to be's and adds the call's time, a count and, for the
 * GEMM-class ops, its FLOPs under the entry's name ("conv2d_fwd", "linear_bwd", "to_host"...).
 * Model code runs on it unchanged; an entry be leaves NULL stays NULL, so the optional-op rules
 * of ops.h hold as on be. Without K22_PROFILE / --profile nothing wraps and nothing is spent.
 *
 * Timing. Host backends run each op to completion in the call: the monotonic clock around it.
 * The cuda backend queues ops on its stream: a pair of CUDA events is recorded around each call
 * (src/backend/cuda/timer.cu), from a pool that grows until the first k22_prof_collect after a
 * wrap or reset (the first step) and is reused after it (a later burst that outgrows it is
 * drained: sync, read, reuse), so nothing is allocated per op once a step has run. Times are read
 * at k22_prof_collect, after the step's own wait for the stream, so profiling adds no wait
 * between ops. A GPU time is the op's time on the stream; the step's wall time minus the sum is
 * host time and launch gaps (and NCCL, whose stream is not the backend's).
 * sync and set_precision are forwarded untimed: a sync is a wait, not work; set_precision sets
 * the wrapped backend's precision too.
 *
 * FLOPs per call, 2 per multiply-add (flops.h's rule), from the call's arguments:
 *   matmul 2 M N K batch;  linear_fwd 2 N I O;  conv2d_fwd 2 B O OH OW C KH KW;
 *   attention_fwd 2 B NH TQ TK (D + DV) (QK^T and PV over the full grid, whatever the mask);
 *   linear_bwd, conv2d_bwd: the forward's count once for dx and once for dw, each when asked;
 *   attention_bwd: the recomputed QK^T (D), dP = dO V^T (DV, when dq or dk is asked), dV (DV),
 *   dQ (D), dK (D), each gradient when asked (torch's FlopCounterMode counts the same five).
 * So one forward's GEMM-class FLOPs equal k22_flops_*_forward's count; a training step's are about
 * 3x that plus attention's recomputed QK^T, less the input gradients nobody asks for. */
#ifndef K22_PROFILE_H
#define K22_PROFILE_H

#include <stdio.h>

#include "k22/ops.h"

/* The timed entries of ops.h, in its order (an X-macro: X(name) per entry). sync, destroy and
 * set_precision are forwarded untimed (see above). */
#define K22_PROF_OPS(X)                                                                            \
    X(alloc) X(free) X(to_device) X(to_host) X(copy) X(zero) X(matmul) X(linear_fwd)               \
    X(linear_bwd) X(linear_fwd_x16) X(linear_bwd_x16) X(conv2d_fwd) X(conv2d_bwd)                  \
    X(conv2d_fwd_x16) X(conv2d_bwd_x16) X(group_norm_fwd) X(group_norm_bwd) X(layer_norm_fwd)      \
    X(layer_norm_fwd_y16) X(layer_norm_bwd) X(act_fwd) X(act_bwd) X(act_fwd_y16) X(softmax_fwd)    \
    X(softmax_bwd) X(attention_fwd) X(attention_bwd) X(attention_fwd_x16) X(attention_bwd_x16)     \
    X(add) X(mul) X(scale) X(add_bwd) X(mul_bwd) X(scale_bwd)                                      \
    X(concat_fwd) X(concat_bwd) X(permute_fwd) X(permute_bwd) X(upsample2x_fwd)                    \
    X(upsample2x_bwd) X(avgpool2x_fwd) X(avgpool2x_bwd) X(chan_affine_fwd) X(chan_affine_bwd)      \
    X(group_norm_act_fwd) X(group_norm_act_bwd) X(group_norm_act_fwd_y16) X(resize_nearest_fwd)    \
    X(timestep_embed_fwd) X(timestep_embed_bwd) X(mse_fwd) X(mse_bwd) X(adamw_step) X(sumsq)

typedef struct k22_prof k22_prof;

/* What one op did since the last reset (its times as of the last collect). */
typedef struct {
    const char *op;  /* the ops.h entry's name */
    int64_t calls;
    double ms;       /* summed time in milliseconds */
    double flops;    /* summed FLOPs; 0 unless gemm */
    int gemm;        /* matmul, linear, conv2d, attention */
} k22_prof_stat;

/* Takes be over and returns the profiling backend around it: same name, device and precision;
 * k22_backend_free of the result frees be too. A backend that already profiles is returned as it
 * is. Dies only on out of memory. */
k22_backend *k22_prof_wrap(k22_backend *be);
/* The profiler behind be, or NULL when be does not profile. */
k22_prof *k22_prof_of(const k22_backend *be);
/* The backend be wraps when it profiles, else be: for what reads a backend's own context
 * (k22_backend_conv_impl), which the wrapper's is not. */
const k22_backend *k22_prof_inner(const k22_backend *be);
/* Waits for the wrapped backend (its sync) and reads the device times queued since the last
 * collect. Cheap on host backends (nothing is pending there). */
void k22_prof_collect(k22_prof *p);
/* Collects, then drops everything recorded (after warm-up) and restarts the wall clock. */
void k22_prof_reset(k22_prof *p);
/* Host wall-clock milliseconds since the last reset (or the wrap). */
double k22_prof_wall_ms(const k22_prof *p);

/* The op table: k22_prof_nops() entries, in ops.h's order; k22_prof_find gives an op's index by
 * name, -1 when there is none. */
int k22_prof_nops(void);
int k22_prof_find(const char *op);
/* Op i's figures as of the last collect. */
k22_prof_stat k22_prof_at(const k22_prof *p, int i);
/* The GEMM-class calls by shape since the last reset, k22_prof_nshapes of them in first-call
 * order: each distinct op and sizes (and, for a backward, the outputs asked for) is one entry, with
 * its calls, time (as of the last collect) and FLOPs; over an op's entries they sum to its
 * k22_prof_at figures. shape names the sizes, without spaces: "N2592,I2048,O2048,dx,dw" (linear:
 * rows, in, out), "M64,N64,K32,x8,tb" (matmul: batch x8, B transposed),
 * "B8,C384,96x96,O384,k3x3,s1,1,p1,1,1,1" (conv2d), "B8,NH12,TQ2304,TK2314,D64,DV64" (attention),
 * then a backward's outputs. */
typedef struct {
    const char *op;
    char shape[112];
    int64_t calls;
    double ms, flops;
} k22_prof_shape_stat;
int k22_prof_nshapes(const k22_prof *p);
k22_prof_shape_stat k22_prof_shape_at(const k22_prof *p, int i);
/* "host_clock" or "cuda_events": how the times were taken. */
const char *k22_prof_timer_name(const k22_prof *p);
/* The wrapped backend's name ("cpu", "cuda"). */
const char *k22_prof_device(const k22_prof *p);

/* Collects, then prints the table of the ops that ran, by total time: calls, total ms, ms per
 * step, share of the summed op time, and for GEMM-class ops GFLOP per step and TFLOP/s; then the
 * sum of op times against wall_ms (the gap: host time, launch gaps). wall_ms <= 0 takes
 * k22_prof_wall_ms. steps (>= 1) divides the per-step columns. After the table, one line per op,
 * "k22_prof op=NAME calls=N ms=X ms_per_step=X share=X gflop=X tflops=X steps=N", and one
 * "k22_prof_total steps=N wall_ms=X ops_ms=X gap_ms=X gemm_ms=X gemm_gflop=X device=D timer=T"
 * for scripts to grep. Then the GEMM-class calls by shape: a table of the slowest
 * (K22_PROF_TOP_SHAPES of them), and a "k22_prof_shape op=NAME shape=S calls=N ms=X
 * ms_per_step=X gemm_share=X gflop=X tflops=X" line for each. */
#define K22_PROF_TOP_SHAPES 30
void k22_prof_report(k22_prof *p, double wall_ms, int64_t steps, FILE *out);

#endif
