/* dist.h: the ranks of a training job and what they exchange (DESIGN.md section 2).
 *
 * MPI starts the job (mpirun, srun, or a plain run: a singleton of one rank). CPU ranks
 * all-reduce the flat gradient buffer with MPI_Allreduce; NCCL on GPUs is a later backend of the
 * same calls. Gradients are exchanged once per optimizer step, on the buffer the micro-steps
 * accumulated into: the sum of the ranks' sums equals the sum of every rank's per-micro-step
 * all-reduce (DDP's no_sync under accumulation does the same), at 1/A the traffic. The sum is
 * then scaled by 1/world, DDP's averaging. A failure on any rank ends the whole job (K22_FATAL ->
 * MPI_Abort). */
#ifndef K22_DIST_H
#define K22_DIST_H

#include "k22/ops.h"

#include <stdint.h>

typedef struct {
    int rank, world;
    int owns_mpi;  /* this process called MPI_Init (and so calls MPI_Finalize) */
    float *host;   /* staging for device buffers, grown on demand */
    size_t host_floats;
} k22_dist;

/* Starts MPI if nobody did yet and names this rank (k22_set_rank for the fatal path). */
void k22_dist_init(k22_dist *d);
/* Frees the staging and finalizes MPI when k22_dist_init started it. */
void k22_dist_finalize(k22_dist *d);

/* In place over n host floats: buf = (sum over ranks of buf) * (1 / world). */
void k22_dist_allreduce_mean_f32(const k22_dist *d, float *buf, int64_t n);
/* The same over backend memory (copied through host staging on a device backend; the CPU
 * backends' buffers are host memory already, but the copy keeps one code path). */
void k22_dist_allreduce_mean_backend(k22_dist *d, const k22_backend *be, float *buf, int64_t n);
/* Sum over ranks of one double (held-out loss sums). */
double k22_dist_sum_f64(const k22_dist *d, double x);
/* Mean over ranks of one double (the logged loss). */
double k22_dist_mean_f64(const k22_dist *d, double x);
/* 1 on every rank when flag is non-zero on any rank (the signal flag, a rank-local error). */
int k22_dist_any(const k22_dist *d, int flag);
/* Largest value over ranks. */
int64_t k22_dist_max_i64(const k22_dist *d, int64_t x);
void k22_dist_barrier(const k22_dist *d);

#endif
