/* grad_overlap.h: the gradient all-reduce in buckets, started while the backward still runs
 * (DDP's bucketed, overlapped all-reduce; DESIGN.md section 2).
 *
 * G (total floats, backend memory) is cut into buckets of bucket_floats at multiples of it. The
 * models' backward says as it goes which top part of G is final (grad_marks.h: k22_grad_hook,
 * whose ready() is k22_grad_overlap_ready); each bucket that lies wholly inside it is sent at
 * once, the top one first. k22_grad_overlap_finish sends what is left, waits and divides by the
 * world size: G then holds what k22_dist_allreduce_mean_backend would have left, bit for bit on
 * the MPI path with 2 ranks (each value is still a + b, then / 2; with more ranks MPI may sum a
 * bucket in another order than the whole buffer, as NCCL may on GPUs). Only the backward that
 * ends an optimizer step's accumulation sends (k22_grad_overlap_arm); with accumulation, each
 * bucket first gets the earlier micro-steps' sum added (acc + G, the order of train_core.c's
 * accumulation). Transport as dist.h says: NCCL on its own stream, ordered after the backend's
 * work by events (no host wait), or host staging and MPI_Iallreduce (progressed at each ready).
 * Under ZeRO-1 (optim.h: rank r owns G's floats [r shard, (r + 1) shard)) a bucket is summed onto
 * its owners instead (ncclReduce / MPI_Ireduce, one piece per owner; no rank needs the rest), and
 * finish leaves in Gs what k22_dist_reduce_scatter_mean_backend would have: bit for bit on both
 * paths with 2 ranks, as above. */
#ifndef K22_GRAD_OVERLAP_H
#define K22_GRAD_OVERLAP_H

#include "k22/dist.h"

typedef struct k22_grad_overlap k22_grad_overlap;

/* acc: the accumulation buffer (total floats, backend), NULL without accumulation. Gs: NULL for
 * the all-reduce; under ZeRO-1 this rank's shard of the mean (shard floats, backend). */
k22_grad_overlap *k22_grad_overlap_new(k22_dist *d, const k22_backend *be, float *G, const float *acc,
                                       int64_t total, int64_t bucket_floats, float *Gs, int64_t shard);
void k22_grad_overlap_free(k22_grad_overlap *o);
/* Every rank, before the backward that ends the accumulation; add_acc: add acc into each bucket
 * before it is sent. */
void k22_grad_overlap_arm(k22_grad_overlap *o, int add_acc);
int k22_grad_overlap_armed(const k22_grad_overlap *o);
/* k22_grad_hook's ready (ctx: the k22_grad_overlap): G[lo, total) is final. Nothing unless armed. */
void k22_grad_overlap_ready(void *ctx, int64_t lo);
/* Sends the rest, waits, G = the mean over ranks (ZeRO-1: Gs = this rank's shard of it); disarms. */
void k22_grad_overlap_finish(k22_grad_overlap *o);

typedef struct {
    int64_t buckets;         /* per armed backward */
    int64_t bucket_floats;
    int nccl;                /* 1: NCCL, 0: MPI (known after the first arm; -1 before) */
    int64_t exchanges;       /* armed backwards finished */
    int64_t early;           /* buckets sent before finish, over all exchanges */
} k22_grad_overlap_stats;
void k22_grad_overlap_stats_of(const k22_grad_overlap *o, k22_grad_overlap_stats *st);

#endif
