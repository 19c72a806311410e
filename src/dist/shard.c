/* shard.c: the per-(seed, epoch) shuffle, the accelerate-style split over ranks with padding by
 * recycling (rule in include/k22/shard.h) and batch reads merged into runs of consecutive rows. */
#include "k22/shard.h"
#include "k22/rng.h"

#include <stdlib.h>
#include <string.h>

void k22_shard_permutation(int64_t n_rows, uint64_t seed, int64_t epoch, int64_t *out)
{
    uint64_t stream = K22_SHARD_STREAM + (uint64_t)epoch;
    for (int64_t i = 0; i < n_rows; i++) out[i] = i;
    for (int64_t i = n_rows - 1, k = 0; i > 0; i--, k++) {
        uint64_t r = ((uint64_t)k22_rng_u32(seed, stream, 2 * (uint64_t)k) << 32) |
                     k22_rng_u32(seed, stream, 2 * (uint64_t)k + 1);
        int64_t j = (int64_t)(r % (uint64_t)(i + 1));
        int64_t t = out[i];
        out[i] = out[j];
        out[j] = t;
    }
}

k22_status k22_shard_init(k22_shard *s, int64_t n_rows, int world, int rank, int batch, uint64_t seed, k22_err *err)
{
    memset(s, 0, sizeof *s);
    if (n_rows < 1 || world < 1 || rank < 0 || rank >= world || batch < 1 || batch > (1 << 20) ||
        n_rows > ((int64_t)1 << 40))
        return k22_err_set(err, K22_ERR_ARG, "shard: %lld rows, %d ranks, rank %d, batch %d: need rows >= 1, "
                           "0 <= rank < ranks, batch >= 1", (long long)n_rows, world, rank, batch);
    s->n_rows = n_rows;
    s->world = world;
    s->rank = rank;
    s->batch = batch;
    s->seed = seed;
    s->epoch = -1;
    s->perm = k22_xmalloc((size_t)n_rows * sizeof *s->perm);
    s->sorted = k22_xmalloc(2 * (size_t)batch * sizeof *s->sorted);
    s->pos = k22_xmalloc((size_t)batch * sizeof *s->pos);
    return K22_OK;
}

void k22_shard_free(k22_shard *s)
{
    free(s->perm);
    free(s->sorted);
    free(s->pos);
    free(s->scratch);
    memset(s, 0, sizeof *s);
}

void k22_shard_set_epoch(k22_shard *s, int64_t epoch)
{
    if (s->epoch == epoch) return;
    k22_shard_permutation(s->n_rows, s->seed, epoch, s->perm);
    s->epoch = epoch;
}

int64_t k22_shard_steps(const k22_shard *s)
{
    int64_t per_step = (int64_t)s->world * s->batch;
    return (s->n_rows + per_step - 1) / per_step;
}

void k22_shard_batch_rows(const k22_shard *s, int64_t step, int64_t *rows)
{
    K22_REQUIRE(s->epoch >= 0 && step >= 0 && step < k22_shard_steps(s));
    int64_t first = (step * s->world + s->rank) * (int64_t)s->batch; /* global batch g = step*N + rank */
    for (int b = 0; b < s->batch; b++) rows[b] = s->perm[(first + b) % s->n_rows];
}

static int cmp_pair(const void *a, const void *b)
{
    const int64_t *x = a, *y = b;
    return x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : (x[1] > y[1]) - (x[1] < y[1]);
}

static size_t field_elem_size(k22_pack_field f)
{
    return f == K22_PACK_ATTENTION_MASK ? 1 : 4;
}

k22_status k22_shard_read(k22_shard *s, k22_pack *p, int64_t step, k22_pack_field f, void *dst, k22_err *err)
{
    /* Fewer shard rows is fine: the rest may be held out (the last rows). */
    if (k22_pack_rows(p) < s->n_rows)
        return k22_err_set(err, K22_ERR_ARG, "shard: set up for %lld rows but the pack has %lld",
                           (long long)s->n_rows, (long long)k22_pack_rows(p));
    if (f == K22_PACK_CAPTION || f == K22_PACK_SOURCE || (unsigned)f >= K22_PACK_FIELD_COUNT)
        return k22_err_set(err, K22_ERR_ARG, "shard: '%s' is not a numeric field", k22_pack_field_name(f));
    size_t row_bytes = (size_t)k22_pack_row_numel(k22_pack_meta_of(p), f) * field_elem_size(f);
    k22_shard_batch_rows(s, step, s->pos);
    for (int b = 0; b < s->batch; b++) {
        s->sorted[2 * b] = s->pos[b];
        s->sorted[2 * b + 1] = b;
    }
    qsort(s->sorted, (size_t)s->batch, 2 * sizeof *s->sorted, cmp_pair);
    size_t need = row_bytes * (size_t)s->batch;
    if (s->scratch_bytes < need) {
        free(s->scratch);
        s->scratch = k22_xmalloc(need);
        s->scratch_bytes = need;
    }
    unsigned char *out = dst, *tmp = s->scratch;
    for (int b = 0; b < s->batch;) {
        int e = b + 1;
        while (e < s->batch && s->sorted[2 * e] == s->sorted[2 * (e - 1)] + 1) e++;
        k22_status st = k22_pack_read(p, f, s->sorted[2 * b], e - b, tmp, err);
        if (st) return st;
        for (int k = b; k < e; k++)
            memcpy(out + (size_t)s->sorted[2 * k + 1] * row_bytes, tmp + (size_t)(k - b) * row_bytes, row_bytes);
        b = e;
    }
    return K22_OK;
}
