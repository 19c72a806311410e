/* loop_internal.h: the training run's state, shared by loop.c (the epochs), loop_stage.c (the
 * prior/decoder specifics) and loop_out.c (checkpoints and the final folder). */
#ifndef K22_LOOP_INTERNAL_H
#define K22_LOOP_INTERNAL_H

#include "k22/ckpt.h"
#include "k22/loop.h"
#include "k22/pack.h"
#include "k22/sample.h"
#include "k22/shard.h"
#include "k22/train_decoder.h"
#include "k22/train_prior.h"

#include <stdio.h>

typedef struct {
    const k22_train_opts *o;
    k22_dist *d;
    k22_backend *be;
    int prior;                  /* 1: train-prior, 0: train-decoder */
    char comp_dir[4096];        /* the component to load: pretrained (or the checkpoint's) */
    char pipe_dir[4096];        /* the pretrained pipeline folder, "" for a bare component */
    k22_pack *pack;
    k22_shard shard;
    k22_prior_trainer pt;
    k22_decoder_trainer dt;
    int B, A, T;                /* per-rank micro-batch, accumulation, train timesteps */
    int64_t E, EP, L;           /* embed dims, tokens (prior) */
    int64_t noise_n;            /* noise values per sample */
    int latent_h, latent_w;
    /* host batch */
    float *text_embeds, *text_hidden, *image_embeds, *latents, *noise;
    uint8_t *mask;
    int64_t *t;
    /* schedule of the run */
    int64_t steps_per_epoch;    /* micro-steps per rank per epoch */
    int64_t updates_per_epoch;  /* optimizer steps per epoch */
    int64_t max_steps, epochs;
    int64_t epoch, start_micro; /* where the run starts (resume) */
    int64_t n_train, n_val;     /* pack rows trained on (the first) and held out (the rest) */
    /* validation images (rank 0) */
    k22_sampler *sampler;       /* NULL: no images */
    int64_t images_step;        /* the step of the last grid (-1: none yet) */
    int val_size, val_h, val_w; /* requested side, the image size the pipelines give */
} k22_run;

/* Rank 0's record of the run (loop_log.c). */
typedef struct {
    FILE *jsonl;                /* OUT/metrics.jsonl */
    double t0;
    int64_t first_step;
    int tty, open_line;         /* stdout is a terminal; a progress line awaits its newline */
} k22_log;

/* loop_stage.c */
k22_status k22_run_stage_init(k22_run *r, k22_err *err);
k22_status k22_run_read_batch(k22_run *r, int64_t step, k22_err *err);
double k22_run_micro_step(k22_run *r);
void k22_run_sync(k22_run *r, k22_train_step_log *log);
k22_train_core *k22_run_core(k22_run *r); /* the trainer's shared part (pt or dt) */
const k22_train_core *k22_run_core_c(const k22_run *r); /* the same, read-only */
int64_t k22_run_global_step(const k22_run *r);
void k22_run_stage_free(k22_run *r);

/* loop_log.c: rank 0 writes, the other ranks return at once. k22_log_open keeps the lines of
 * an earlier metrics.jsonl up to the step the run starts at. */
double k22_now_s(void);
k22_status k22_log_open(k22_run *r, k22_log *lg, k22_err *err);
void k22_log_close(k22_log *lg);
void k22_log_step(const k22_run *r, k22_log *lg, const k22_train_step_log *l, int64_t epoch,
                  int64_t skipped_total);
void k22_log_val(const k22_run *r, k22_log *lg, int64_t step, double loss, int64_t n);

/* loop_val.c: the mean held-out loss over all ranks (every rank calls it); *n the samples. */
double k22_run_val_loss(k22_run *r, int64_t *n);

/* loop_images.c: k22_run_images_open on every rank (rank 0 loads the pipelines); k22_run_images
 * at a validation point on every rank (rank 0 draws, the others wait). */
k22_status k22_run_images_open(k22_run *r, k22_err *err);
void k22_run_images(k22_run *r, k22_log *lg);
void k22_run_images_close(k22_run *r);

/* loop_out.c. k22_run_checkpoint: every rank, between optimizer steps (it gathers the state). */
void k22_run_checkpoint(k22_run *r, int64_t epoch, int64_t epoch_pos);
k22_status k22_run_resume(k22_run *r, const char *ckpt, k22_err *err);
/* Every rank calls it (the EMA may be sharded); rank 0 writes the final folder. */
k22_status k22_run_save_final(k22_run *r, k22_err *err);

#endif
