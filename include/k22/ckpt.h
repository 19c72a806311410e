/* ckpt.h: training checkpoints on disk (DESIGN.md section 6).
 *
 * OUT/checkpoint-N/ (N = optimizer steps taken) holds
 *   prior/ or unet/            the trained weights, diffusers layout (k22_component_save)
 *   prior_ema/ or unet_ema/    the EMA shadow, with --use_ema
 *   k22_state/state.json       step, epoch, data cursor, seed, world size, batch sizes, EMA and
 *                              LR scheduler counters, hyper-parameters (k22_ckpt_state)
 *   k22_state/optimizer.safetensors   AdamW moments "exp_avg" and "exp_avg_sq", F32 (total,)
 *   k22_complete               the completion marker, written last
 * It is written as checkpoint-N.tmp/, fsynced, renamed to checkpoint-N, then marked complete;
 * a folder without the marker (a crash mid-write) is never resumed from. */
#ifndef K22_CKPT_H
#define K22_CKPT_H

#include "k22/k22.h"
#include "k22/params.h"

#include <jansson.h>
#include <stdint.h>

/* 2: the flat buffer with the attention's q, k, v stacked (params_util.h k22_pb_linear_stack);
 * 1: every entry in table order. Format 1 still reads: its moments are moved to the new layout. */
#define K22_CKPT_FORMAT 2
#define K22_CKPT_MARKER "k22_complete"

/* The training loop's position and counters; all that the weights and moments do not hold. */
typedef struct {
    int format;                /* of the files read (1 .. K22_CKPT_FORMAT); written as the latest */
    char stage[16];            /* "prior" | "decoder" */
    int64_t global_step;       /* optimizer steps taken */
    int64_t epoch;             /* the epoch the next sample comes from */
    int64_t epoch_pos;         /* samples of that epoch's padded order already consumed */
    int64_t seed;
    int world_size, train_batch_size, gradient_accumulation_steps;
    int64_t lr_sched_steps;    /* LambdaLR steps taken so far (world_size per optimizer step) */
    int64_t ema_step;          /* EMAModel.optimization_step */
    double ema_decay;          /* EMAModel.cur_decay_value */
    double loss_scale;         /* fp16 GradScaler's scale; 0: no scaler (not written; absent in
                                * files of runs without fp16) */
    int64_t loss_scale_good;   /* its growth tracker */
    json_t *hparams;           /* the resolved options as JSON (owned; NULL on write is fine) */
} k22_ckpt_state;

void k22_ckpt_state_free(k22_ckpt_state *s);

/* OUT/checkpoint-N into buf. */
k22_status k22_ckpt_dir(const char *out_dir, int64_t step, char *buf, size_t n, k22_err *err);
/* Newest complete checkpoint under out_dir: *step = N and its path, or *step = -1 when there is
 * none (out_dir missing is fine). */
k22_status k22_ckpt_latest(const char *out_dir, int64_t *step, char *path, size_t n, k22_err *err);
/* --checkpoints_total_limit as the scripts apply it before a save: when `limit` or more
 * checkpoints exist, the oldest are removed so that limit - 1 remain. limit <= 0: no limit. */
k22_status k22_ckpt_prune(const char *out_dir, int64_t limit, k22_err *err);

/* Writes dir/state.json and dir/optimizer.safetensors (m, v: host, n floats each). */
k22_status k22_ckpt_state_write(const char *dir, const k22_ckpt_state *s, const float *m,
                                const float *v, int64_t n, k22_err *err);
/* Reads them back into m, v (ps->total floats each, in ps's layout): the file's moments must have
 * exactly that many, or in format 1 k22_params_table_order_total(ps). m and v NULL: only checks
 * that they would read (k22 inspect). */
k22_status k22_ckpt_state_read(const char *dir, k22_ckpt_state *s, float *m, float *v,
                               const k22_params *ps, k22_err *err);
/* tmp -> final: fsync tmp, rename, fsync the parent, write the marker. */
k22_status k22_ckpt_commit(const char *tmp, const char *final, k22_err *err);

#endif
