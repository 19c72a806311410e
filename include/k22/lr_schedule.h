/* lr_schedule.h: the learning rate of each optimizer step, as diffusers.optimization.get_scheduler
 * builds it in train_text_to_image_{prior,decoder}.py and accelerate 1.15.0 steps it.
 *
 * What the scripts do (checked by running them through accelerate, see
 * tools/reference/make_schedule_fixtures.py and tests/fixtures/schedule/lr.safetensors):
 *  - get_scheduler(name, num_warmup_steps = lr_warmup_steps * A,
 *    num_training_steps = max_train_steps * A), A = gradient_accumulation_steps. The world size
 *    W is NOT in these products.
 *  - lr_scheduler.step() runs every micro-step, but accelerate's AcceleratedScheduler ignores it
 *    when gradients are not synced (it only bumps _step_count, which no lr depends on) and, on a
 *    sync step, calls the wrapped LambdaLR step() W times (split_batches is False in the scripts).
 *    A skipped optimizer step (fp16 overflow) steps it 0 times.
 *  - So optimizer step k (0-based) uses lr_k = base_lr * lambda(W * k), with lambda over the
 *    warmup/total above. Accumulation stretches the warmup/decay A times in optimizer steps; world
 *    size shrinks it W times. Hence 2 ranks x 1 accumulation step do NOT get the learning rates of
 *    1 rank x 2 accumulation steps (the gradients are the same, the lrs are not): with warmup 3,
 *    constant_with_warmup gives 0, 2/3, 1, ... on W=2,A=1 and 0, 1/6, 1/3, ... on W=1,A=2.
 *    W=2,A=2 gives exactly the lrs of W=1,A=1.
 *  - lambda is evaluated in Python doubles; the lr is a double (k22_adamw_hparams.lr).
 * Past num_training_steps the formulas run on as in diffusers (cosine rises again, linear and
 * cosine_with_restarts give 0, polynomial gives lr_end). */
#ifndef K22_LR_SCHEDULE_H
#define K22_LR_SCHEDULE_H

#include <stdint.h>

#include "k22/k22.h"

typedef enum {
    K22_LR_CONSTANT = 0,
    K22_LR_CONSTANT_WITH_WARMUP,
    K22_LR_LINEAR,
    K22_LR_COSINE,               /* num_cycles 0.5 */
    K22_LR_COSINE_WITH_RESTARTS, /* num_cycles 1 (get_scheduler's default) */
    K22_LR_POLYNOMIAL,           /* lr_end 1e-7, power 1.0 */
    K22_LR_COUNT
} k22_lr_kind;

typedef struct {
    k22_lr_kind kind;
    double base_lr;
    int64_t warmup;    /* in scheduler steps: lr_warmup_steps * A */
    int64_t total;     /* in scheduler steps: max_train_steps * A */
    int world_size;    /* scheduler steps per optimizer step */
    double num_cycles; /* cosine 0.5, cosine_with_restarts 1 */
    double lr_end, power;
    /* A run resumed at optimizer step resumed_at whose scheduler had taken resumed_steps steps
     * (accelerate restores the count, then steps the new world size per optimizer step): both
     * 0 for a fresh run. */
    int64_t resumed_at, resumed_steps;
} k22_lr_schedule;

/* The --lr_scheduler names ("constant", "constant_with_warmup", "linear", "cosine",
 * "cosine_with_restarts", "polynomial"). K22_ERR_ARG naming the value otherwise. */
k22_status k22_lr_kind_parse(const char *name, k22_lr_kind *out, k22_err *err);
const char *k22_lr_kind_name(k22_lr_kind k);

/* Fills s for the scripts' call. K22_ERR_ARG for a non-positive base_lr, accumulation or world
 * size, negative warmup/steps, a product that overflows, or polynomial with base_lr <= lr_end
 * (diffusers refuses that too). */
k22_status k22_lr_schedule_init(k22_lr_schedule *s, k22_lr_kind kind, double base_lr,
                                int64_t lr_warmup_steps, int64_t max_train_steps, int grad_accum,
                                int world_size, k22_err *err);

/* diffusers' lr_lambda at a scheduler step (LambdaLR's last_epoch). */
double k22_lr_lambda(const k22_lr_schedule *s, int64_t sched_step);

/* The scheduler steps taken before optimizer step k (0-based): resumed_steps + (k - resumed_at)
 * * world_size. */
int64_t k22_lr_sched_steps(const k22_lr_schedule *s, int64_t opt_step);
/* The lr optimizer step k (0-based; the checkpoint's global_step before the step) uses. */
double k22_lr_at(const k22_lr_schedule *s, int64_t opt_step);

#endif
