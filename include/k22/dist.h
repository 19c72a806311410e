/* dist.h: the ranks of a training job and what they exchange (DESIGN.md section 2).
 *
 * MPI starts the job (mpirun, srun, or a plain run: a singleton of one rank). CPU ranks
 * all-reduce the flat gradient buffer with MPI_Allreduce; GPU ranks with NCCL (nccl.c, in builds
 * with CUDA and NCCL), or through host staging and MPI where NCCL cannot serve (no NCCL in the
 * build, ranks sharing one GPU, K22_NCCL=0). Gradients are exchanged once per optimizer step,
 * on the buffer the micro-steps accumulated into: the sum of the ranks' sums equals the sum of
 * every rank's per-micro-step all-reduce (DDP's no_sync under accumulation does the same), at 1/A
 * the traffic. The sum is then scaled by 1/world, DDP's averaging. By default the exchange runs
 * in buckets sent while the last micro-step's backward is still running (grad_overlap.h,
 * --bucket_cap_mb); the whole-buffer functions below serve --bucket_cap_mb 0, ZeRO-1 and a sync
 * after fewer than A micro-steps. A failure on any rank ends the whole job (K22_FATAL ->
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
    void *nccl;    /* the job's NCCL communicator (nccl.c), made at the first GPU all-reduce */
    int nccl_off;  /* 1 once NCCL was found unusable for this job: MPI staging from then on */
} k22_dist;

/* Starts MPI if nobody did yet and names this rank (k22_set_rank for the fatal path). */
void k22_dist_init(k22_dist *d);
/* Frees the staging and finalizes MPI when k22_dist_init started it. */
void k22_dist_finalize(k22_dist *d);

/* In place over n host floats: buf = (sum over ranks of buf) * (1 / world). */
void k22_dist_allreduce_mean_f32(const k22_dist *d, float *buf, int64_t n);
/* The same over backend memory. A CUDA backend goes through NCCL when it can (the sum in NCCL,
 * then be->scale by 1/world on the device: the same value as the division when world is a power
 * of two, else within one rounding); otherwise through host staging (to_host, the host path,
 * to_device; the CPU backends' buffers are host memory already, but the copy keeps one path). */
void k22_dist_allreduce_mean_backend(k22_dist *d, const k22_backend *be, float *buf, int64_t n);
/* ZeRO-1 (--zero_stage 1): a buffer of world * n floats is cut into world blocks of n, rank r
 * owning floats [r n, (r + 1) n). Backend memory; NCCL on GPU ranks where it serves (dist.h's
 * rule above), else host staging and MPI (MPI_Reduce_scatter_block, MPI_Allgather: n is an MPI
 * count, at most INT_MAX; past it the job ends with a message).
 * out (n floats) = (sum over ranks of this rank's block of buf) * (1 / world): the block the
 * all-reduce above would leave there, bit for bit on the MPI path with 2 ranks (a + b is
 * commutative; with more ranks MPI may add in another order). */
void k22_dist_reduce_scatter_mean_backend(k22_dist *d, const k22_backend *be, const float *buf, float *out,
                                          int64_t n);
/* In place over world * n floats: every rank's block ends up on every rank. */
void k22_dist_allgather_backend(k22_dist *d, const k22_backend *be, float *buf, int64_t n);
/* The GPU rule, in one place: "--device cuda" takes GPU (local rank mod visible devices), the
 * local rank being this process's index among the job's ranks on its node:
 * OMPI_COMM_WORLD_LOCAL_RANK (mpirun), MPI_LOCALRANKID (MPICH), SLURM_LOCALID (srun), else, when
 * MPI is running with several ranks, the rank in MPI_Comm_split_type(SHARED) -- a collective, so
 * every rank must pick its device at the same point, as pack, train and sample do -- else 0. */
int k22_dist_local_rank(void);
/* Turns summed gradients into the mean, the one rule for every exchange path: on the host a float
 * division by world (torch's div_); on the device (after an NCCL sum) a scale by 1/world, the same
 * value when world is a power of two, else within one rounding. */
void k22_dist_sum_to_mean_f32(const k22_dist *d, float *h, int64_t n);
void k22_dist_sum_to_mean_backend(const k22_dist *d, const k22_backend *be, float *buf, int64_t n);
/* Sets *device by that rule. K22_ERR_UNSUPPORTED with err set when no CUDA device is usable;
 * in a build without CUDA sets 0 (k22_backend_cuda_new then says CUDA is missing). */
k22_status k22_dist_gpu_pick(int *device, k22_err *err);

/* nccl.c. In place over n floats of a CUDA backend: buf = sum over ranks of buf (no scaling).
 * Returns 1 when done, 0 when the caller must use the MPI path instead (the same answer on every
 * rank): a build without NCCL, K22_NCCL=0, or ranks sharing a GPU (NCCL refuses that). The first
 * call makes the communicator: rank 0's ncclUniqueId broadcast over MPI_COMM_WORLD. */
int k22_dist_nccl_allreduce_sum(k22_dist *d, const k22_backend *be, float *buf, int64_t n);
/* The same answer for ZeRO-1: recv (n floats) = sum over ranks of this rank's block of send
 * (world * n floats); and the in-place all-gather of buf (world * n floats). */
int k22_dist_nccl_reduce_scatter_sum(k22_dist *d, const k22_backend *be, const float *send, float *recv,
                                     int64_t n);
int k22_dist_nccl_allgather(k22_dist *d, const k22_backend *be, float *buf, int64_t n);
/* For the bucketed exchange (k22_grad_overlap): whether NCCL serves this job (the rule above;
 * the first call makes the communicator: every rank calls it at the same point); queue an
 * in-place sum of n floats on NCCL's stream, ordered after the backend's work so far by an event
 * (the host does not wait); and order the backend's later work after all that was queued. */
int k22_dist_nccl_serves(k22_dist *d, const k22_backend *be);
void k22_dist_nccl_allreduce_sum_queue(k22_dist *d, const k22_backend *be, float *buf, int64_t n);
/* The same for ZeRO-1's buckets: recv (n floats, on rank root only) = sum over ranks of send. */
void k22_dist_nccl_reduce_sum_queue(k22_dist *d, const k22_backend *be, const float *send, float *recv,
                                    int64_t n, int root);
void k22_dist_nccl_join(k22_dist *d, const k22_backend *be);
/* Destroys the communicator (k22_dist_finalize calls it). */
void k22_dist_nccl_free(k22_dist *d);

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
