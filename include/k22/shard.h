/* shard.h: which pack rows each of N ranks reads, per (seed, epoch), and the batched reads.
 *
 * Order: every rank computes the same permutation P of all R rows for (seed, epoch): Fisher-Yates
 * (i from R-1 down to 1 swaps i with j uniform in [0, i]), draw k of the Philox stream
 * K22_SHARD_STREAM + epoch keyed by seed picking j (64 random bits, reduced modulo i+1).
 *
 * Split and remainder: the rule of an accelerate-prepared DataLoader (the diffusers training
 * scripts: shuffle=True, drop_last=False, accelerate's BatchSamplerShard with split_batches=False
 * and even_batches=True). P is cut into batches of B; global batch g goes to rank g % N, as that
 * rank's step g / N. When R is not a multiple of N*B the sequence is padded by recycling rows from
 * the start of the epoch's order: position k of the padded sequence is P[k mod R], and its length
 * is L = ceil(R / (N*B)) * N*B. So every rank runs L / (N*B) steps of exactly B rows, every row is
 * read once per epoch, and the first L - R rows of P are read a second time. */
#ifndef K22_SHARD_H
#define K22_SHARD_H

#include "k22/k22.h"
#include "k22/pack.h"

#include <stdint.h>

#define K22_SHARD_STREAM ((uint64_t)0x53484152ull << 32) /* "SHAR": apart from other streams */

typedef struct {
    int64_t n_rows;     /* R */
    int world, rank;    /* N, this rank */
    int batch;          /* B, rows per rank per step */
    uint64_t seed;
    int64_t epoch;      /* the epoch perm holds; -1 before k22_shard_set_epoch */
    int64_t *perm;      /* P: (R,) */
    int64_t *sorted;    /* scratch: (B,) row, position pairs for run detection */
    int64_t *pos;       /* scratch: (B,) */
    void *scratch;      /* read scratch */
    size_t scratch_bytes;
} k22_shard;

/* Sets up rank's share of n_rows rows; K22_ERR_ARG on a bad world/rank/batch. */
k22_status k22_shard_init(k22_shard *s, int64_t n_rows, int world, int rank, int batch, uint64_t seed, k22_err *err);
void k22_shard_free(k22_shard *s);
/* Computes the epoch's permutation (all ranks get the same one). */
void k22_shard_set_epoch(k22_shard *s, int64_t epoch);
/* Steps per epoch: L / (N*B), the same on every rank. */
int64_t k22_shard_steps(const k22_shard *s);
/* The B global row indices of this rank's batch at step (in sampler order). */
void k22_shard_batch_rows(const k22_shard *s, int64_t step, int64_t *rows);
/* The whole-epoch permutation P into out (R,): a pure function of (n_rows, seed, epoch). */
void k22_shard_permutation(int64_t n_rows, uint64_t seed, int64_t epoch, int64_t *out);

/* Reads numeric field f of this rank's batch at step into dst, (B, row...) in sampler order
 * (f32 for float fields, int32 input_ids, uint8 attention_mask). The batch's rows are sorted and
 * each run of consecutive rows is one read. */
/* The shard covers the pack's first n_rows rows (the rest may be held out). */
k22_status k22_shard_read(k22_shard *s, k22_pack *p, int64_t step, k22_pack_field f, void *dst, k22_err *err);

#endif
