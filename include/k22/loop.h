/* loop.h: `k22 train-prior` and `k22 train-decoder` after argument parsing: epochs over the
 * rank-sharded pack, micro-steps, the per-step gradient all-reduce, logging, checkpoints, the
 * stop signals and the final pipeline folder.
 *
 * Exit codes (what the sbatch scripts act on):
 *   0   training finished; --output_dir is a complete pipeline folder
 *   99  K22_EXIT_REQUEUE: stopped after SIGTERM / SIGUSR1 (or --stop_at_step) with a complete
 *       checkpoint written at the step boundary: requeue with --resume_from_checkpoint latest
 *   2   a bad option, an incompatible pack or checkpoint (nothing trained)
 *   3   K22_EXIT_NONFINITE: --max_skipped_steps optimizer steps in a row had a non-finite
 *       gradient (each was skipped); a checkpoint of the last good weights was written
 *   1   a run-time failure that was reported (I/O); fatal errors end the whole MPI job through
 *       MPI_Abort, whose exit code mpirun/srun choose (non-zero).
 *
 * Randomness: the noise and the timestep of a sample come from Philox keyed by --seed at the
 * sample's global index in the run, epoch * L + position (L: the padded epoch length of
 * shard.h, position: its place in that order), never by rank; timesteps are uniform integers in
 * [0, num_train_timesteps).
 * Resume is exact and mid-epoch: the checkpoint records the epoch and how many samples of its
 * order were consumed, and the run goes on at that sample, so a stopped and resumed run gives the
 * losses and weights of an uninterrupted one bit for bit. The diffusers scripts do not: they set
 * first_epoch = N // updates_per_epoch and restart at the top of that epoch, training again on
 * its first batches (reference-math.md section 1).
 * --zero_stage 1 shards the AdamW moments and the EMA over the ranks (optim.h); checkpoints keep
 * the same format (rank 0 gathers the whole state before writing), so a run resumes under either
 * stage and on another rank count, and validation images draw with the gathered EMA.
 * Rank 0 appends every optimizer step to OUT/metrics.jsonl ({"step", "epoch", "loss", "lr",
 * "grad_norm", "skipped", "time_s"}, loss and lr with 17 digits) and, with --validation_split,
 * the held-out loss at each checkpoint and at the end ({"step", "val_loss", "val_samples"}).
 * A resumed run first drops the lines past the step it resumes at, so each step appears once. */
#ifndef K22_LOOP_H
#define K22_LOOP_H

#include "k22/diffusers.h"
#include "k22/dist.h"
#include "k22/opts.h"

#include <jansson.h>

#define K22_EXIT_REQUEUE 99
#define K22_EXIT_NONFINITE 3
#define K22_NOISE_STREAM ((uint64_t)0x4e4f4953ull << 32)  /* "NOIS" */
#define K22_TSTEP_STREAM ((uint64_t)0x54535450ull << 32)  /* "TSTP" */

typedef struct {
    k22_pipe_kind stage;
    const char *pack, *pretrained, *output_dir, *resume_from_checkpoint, *device;
    const char *lr_scheduler, *mixed_precision;
    const char *save_dtype;    /* fp32 | fp16 | bf16: the final model's weights (checkpoints stay fp32) */
    double learning_rate, adam_beta1, adam_beta2, adam_weight_decay, adam_epsilon;
    double max_grad_norm, snr_gamma;
    int64_t train_batch_size, gradient_accumulation_steps, max_train_steps, num_train_epochs;
    int64_t checkpointing_steps, checkpoints_total_limit, lr_warmup_steps, seed, log_every;
    int64_t stop_at_step;      /* 0: off */
    double validation_split;   /* fraction of the pack's rows held out (the last ones); 0: off */
    int64_t max_skipped_steps; /* non-finite optimizer steps in a row that stop the run */
    k22_strlist validation_prompts; /* validation images: one grid of these per validation */
    int64_t validation_epochs;      /* after epochs 0, N, 2N, ... and at the end */
    int64_t validation_resolution;  /* image side; 0: the pack's resolution */
    const char *other_for_validation; /* train-prior: the decoder pipeline; train-decoder: the prior */
    int use_ema, gradient_checkpointing;
    int64_t checkpoint_levels; /* train-decoder with gradient_checkpointing: 0 every block, N the
                                * blocks at the N highest resolutions */
    int64_t zero_stage;        /* 0 | 1: ZeRO-1 sharding of the optimizer state over the ranks (optim.h) */
    double bucket_cap_mb;      /* > 0: gradient all-reduce in buckets of this many MiB during the
                                * backward (grad_overlap.h); 0: one exchange after it */
    int profile;               /* time every backend op (profile.h); rank 0 prints the table at the end */
    json_t *settings;          /* the resolved options, saved in checkpoints (borrowed) */
} k22_train_opts;

/* Runs the whole training; returns the exit code above. Every rank calls it. */
int k22_train_run(const k22_train_opts *o, k22_dist *d);

/* Sample g's timestep in [0, T) and its n noise values (the rule above). */
int64_t k22_train_timestep(uint64_t seed, int64_t g, int T);
void k22_train_noise(uint64_t seed, int64_t g, float *out, int64_t n);

#endif
