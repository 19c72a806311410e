/* cuda_timer.h: the CUDA backend's event marks for the profiler (src/backend/profile.c; made in
 * timer.cu). C linkage, so the C side calls it; in a build without CUDA the calls are stubs and
 * the profiler falls back to the host clock.
 *
 * Mark i is one CUDA event; k22_cuda_timer_mark records it on the backend's stream, without
 * waiting. Marks are reused: a profiler records marks 0, 1, 2, ... during a step, reads them after
 * the step's sync, and starts again at 0. The pool of events grows when a mark past its end is
 * recorded (the first step), and never shrinks. */
#ifndef K22_CUDA_TIMER_H
#define K22_CUDA_TIMER_H

typedef struct k22_cuda_timer k22_cuda_timer;

/* timer.cu defines K22_CUDA_TIMER_IMPL: the .cu files do not see K22_HAVE_CUDA (k22core's). */
#if defined(K22_HAVE_CUDA) || defined(K22_CUDA_TIMER_IMPL)
#ifdef __cplusplus
extern "C" {
#endif
/* A timer on the stream of the cuda backend whose context is backend_ctx (k22_backend.ctx).
 * Owned by the caller (k22_cuda_timer_free), which must free it before the backend. */
k22_cuda_timer *k22_cuda_timer_new(void *backend_ctx);
/* Records mark i (>= 0) on the stream. Dies on a CUDA error. */
void k22_cuda_timer_mark(k22_cuda_timer *t, int i);
/* Milliseconds between marks a and b on the stream. Both must be recorded and, with everything
 * before them, finished: call after the backend's sync. */
float k22_cuda_timer_ms(k22_cuda_timer *t, int a, int b);
void k22_cuda_timer_free(k22_cuda_timer *t);
#ifdef __cplusplus
}
#endif
#else
static inline k22_cuda_timer *k22_cuda_timer_new(void *backend_ctx) { (void)backend_ctx; return 0; }
static inline void k22_cuda_timer_mark(k22_cuda_timer *t, int i) { (void)t, (void)i; }
static inline float k22_cuda_timer_ms(k22_cuda_timer *t, int a, int b) { (void)t, (void)a, (void)b; return 0; }
static inline void k22_cuda_timer_free(k22_cuda_timer *t) { (void)t; }
#endif

#endif
