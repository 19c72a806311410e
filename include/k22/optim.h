/* optim.h: the optimizer side of a training step over one flat parameter buffer, shared by the
 * stage trainers: the weights, gradients, AdamW moments and EMA shadow on the backend, and the
 * sync step the scripts run through accelerate: clip_grad_norm_ over the trainable parameters,
 * AdamW, zero the gradients, then EMAModel.step (trained values follow the EMA rule, the others
 * are copied). Trainable parameters are walked as runs of consecutive table entries: the
 * alignment padding inside a run has zero weights and gradients, which every update keeps zero. */
#ifndef K22_OPTIM_H
#define K22_OPTIM_H

#include "k22/config.h"
#include "k22/dist.h"
#include "k22/ema.h"
#include "k22/params.h"

/* ZeRO-1 (--zero_stage 1 on more than one rank). The flat buffer of `total` floats is cut at
 * float granularity (a tensor may straddle two ranks) into world shards of one length,
 * k22_optim_shard_len: ceil(total / world) rounded up to a multiple of K22_OPTIM_SHARD_ALIGN
 * floats, so every shard starts 256-byte aligned for the GPU kernels; P and G are allocated at
 * world * shard floats, the padding past `total` staying zero. Rank r owns [r shard, (r+1) shard):
 * the gradients are reduce-scattered into Gs (its shard, the mean over ranks), the global norm is
 * the sum over ranks of the shards' sums of squares, AdamW and the EMA run on the shard (M, V, S
 * hold the shard only), and the updated weights are all-gathered into every rank's full P. */
#define K22_OPTIM_SHARD_ALIGN 64

typedef struct {
    const k22_backend *be;
    k22_dist *dist;            /* NULL: one process, nothing exchanged */
    int zero;                  /* 1: the ZeRO-1 sharding above is on */
    int64_t total;             /* floats of the table */
    int64_t padded;            /* floats of P and G: total, or world * shard under ZeRO-1 */
    int64_t base, shard;       /* M, V, S (and Gs) hold P's floats [base, base + shard) */
    float *P, *G;              /* backend (padded) each: weights, gradients (all-reduced in place) */
    float *Gs;                 /* backend (shard): the reduced gradient shard; G itself without ZeRO */
    float *M, *V;              /* backend (shard) each: AdamW moments */
    float *S;                  /* backend (shard) EMA shadow, NULL without EMA */
    float *ema_scratch;        /* backend (n_ema_scratch) */
    int64_t n_ema_scratch;
    int nspans;                /* runs of trainable parameters inside [base, base + shard) */
    int64_t *span_off, *span_len;   /* offsets into P */
    int nfrozen;               /* parameters without gradient (copied by the EMA step), clipped alike */
    int64_t *frozen_off, *frozen_len;
    k22_ema ema;
} k22_optim;

/* The shard length of the rule above for world ranks. */
int64_t k22_optim_shard_len(int64_t total, int world);

/* Sets o up for the table ps with its host weights ps->data (copied to the backend; the EMA
 * shadow, with use_ema, starts as a copy of them, as EMAModel does). Moments start at zero.
 * d: the job's ranks, whose gradients k22_optim_step averages (NULL: none); zero_stage 1 turns
 * the sharding on when d has more than one rank (on one rank it would change nothing). */
void k22_optim_init(k22_optim *o, const k22_backend *be, const k22_params *ps, int use_ema, k22_dist *d,
                    int zero_stage);
void k22_optim_free(k22_optim *o);

/* The optimizer settings of a sync step; step is AdamW's 1-based step count. */
typedef struct {
    double lr, beta1, beta2, eps, weight_decay, max_grad_norm;
    int64_t step;
    double loss_scale; /* > 0 and not 1: the gradients are divided by it before the norm (fp16) */
    int reduced;       /* 1: G (ZeRO-1: Gs) is the mean over ranks already (grad_overlap.h): no exchange */
} k22_optim_step_args;

/* Every rank calls it: the gradient mean over ranks (all-reduce, or reduce-scatter under
 * ZeRO-1), clip (torch clip_grad_norm_ over the trainable runs, the global norm), AdamW, zero
 * every gradient, EMA step when enabled, then (ZeRO-1) the all-gather of the weights. Returns the
 * gradient norm before clipping, the same on every rank. A non-finite norm (an inf or NaN
 * gradient on any rank) skips the update on every rank: the gradients are zeroed and weights,
 * moments and EMA kept. */
float k22_optim_step(k22_optim *o, const k22_optim_step_args *a);

/* Bytes of optimizer state (M, V and S) one rank holds: as set up (sharded != 0) or as it would
 * be unsharded. */
int64_t k22_optim_state_bytes(const k22_optim *o, int sharded);

/* Every rank calls it (a collective under ZeRO-1): the whole of buf (o->M, o->V or o->S: total
 * floats) into host memory dst on each rank that passes one (rank 0 when writing; NULL
 * elsewhere). Gathers through G, which is free between optimizer steps. */
void k22_optim_gather(k22_optim *o, const float *buf, float *dst);
/* The same into backend memory: returns the whole of buf, which is G under ZeRO-1 until
 * k22_optim_gather_end (every rank; before the next micro-step) zeroes it again. */
const float *k22_optim_gather_begin(k22_optim *o, const float *buf);
void k22_optim_gather_end(k22_optim *o);
/* The reverse of k22_optim_gather with the whole (total floats, host) on every rank: each keeps
 * its shard of it in buf (o->M, o->V or o->S). No communication. */
void k22_optim_scatter(k22_optim *o, float *buf, const float *src);

/* Copies the weights (ema != 0: the EMA shadow) into ps->data and writes cfg + ps as a diffusers
 * component folder dir. K22_ERR_ARG naming dir when ema is asked for without an EMA shadow, or
 * with a sharded one (write k22_optim_gather's copy with k22_optim_save_host then). */
k22_status k22_optim_save(const k22_optim *o, int ema, const char *dir, const k22_model_config *cfg,
                          k22_params *ps, k22_err *err);
/* Writes the host weights w (total floats) into ps->data and as the component folder dir. */
k22_status k22_optim_save_host(const float *w, const char *dir, const k22_model_config *cfg, k22_params *ps,
                               k22_err *err);

/* The step flags every stage trainer takes (names follow the scripts' flags), for one check. */
typedef struct {
    double adam_beta1, adam_beta2, adam_epsilon, adam_weight_decay, max_grad_norm, snr_gamma;
    int gradient_accumulation_steps;
    int micro_batch, micro_batch_max; /* the trainer's largest B, and its cap on it */
} k22_optim_flags;

/* K22_ERR_ARG naming the flag that is out of range. */
k22_status k22_optim_flags_check(const k22_optim_flags *f, k22_err *err);

#endif
