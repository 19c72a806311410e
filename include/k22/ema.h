/* ema.h: the EMA of the trained weights, diffusers EMAModel with the scripts' defaults
 * (decay 0.9999, min_decay 0, update_after_step 0, use_ema_warmup False, foreach False).
 *
 * Per optimizer step: optimization_step += 1; step = max(0, optimization_step - 1);
 * decay = 0 if step <= 0 else min((1 + step) / (10 + step), 0.9999) in double;
 * then, per parameter, shadow.sub_(float(1 - decay) * (shadow - param)) in float32 (three
 * roundings: the difference, the product, the subtraction) when it requires grad, and
 * shadow.copy_(param) otherwise. The first step therefore gives shadow - (shadow - param), which
 * is param only up to rounding. tests/train/test_ema.c holds it to EMAModel bit for bit. */
#ifndef K22_EMA_H
#define K22_EMA_H

#include "k22/ops.h"

typedef struct {
    int64_t optimization_step; /* EMAModel.optimization_step: steps taken so far (checkpointed) */
    double max_decay;          /* 0.9999 */
    double cur_decay;          /* the decay the last step used (EMAModel.cur_decay_value) */
} k22_ema;

/* A fresh EMA (step 0, decay 0.9999). The shadow buffer starts as a copy of the weights. */
void k22_ema_init(k22_ema *e);

/* The decay EMAModel.get_decay returns for an optimization_step (already incremented). */
double k22_ema_decay(const k22_ema *e, int64_t optimization_step);

/* Starts a step: increments the counter and returns the float one_minus_decay all updates of
 * this step use. */
float k22_ema_begin_step(k22_ema *e);

/* shadow -= omd * (shadow - param) over n values of backend memory, through the backend's
 * scale and add (four passes; a fused op would make it one). scratch: (nscratch) backend
 * floats, nscratch >= 1; the update is done in chunks of nscratch. */
void k22_ema_update(const k22_backend *be, float *shadow, const float *param, int64_t n,
                    float omd, float *scratch, int64_t nscratch);

/* One whole EMAModel.step over a flat buffer whose values [0, n_trained) require grad and whose
 * values [n_trained, n) are copied (frozen parameters placed after the trained ones). */
void k22_ema_step(k22_ema *e, const k22_backend *be, float *shadow, const float *param,
                  int64_t n_trained, int64_t n, float *scratch, int64_t nscratch);

#endif
