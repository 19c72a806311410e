/* allreduce.c: the gradient exchanges over the flat buffer: the all-reduce, and ZeRO-1's
 * reduce-scatter and all-gather; MPI over host memory, or NCCL over device memory (nccl.c) on GPU
 * ranks. */
#include "k22/dist.h"

#include <limits.h>
#include <mpi.h>
#include <stdlib.h>

/* d->host, grown to n floats. */
static float *host_staging(k22_dist *d, int64_t n)
{
    if ((size_t)n > d->host_floats) {
        free(d->host);
        d->host = k22_xmalloc((size_t)n * sizeof(float));
        d->host_floats = (size_t)n;
    }
    return d->host;
}

void k22_dist_allreduce_mean_f32(const k22_dist *d, float *buf, int64_t n)
{
    if (d->world == 1 || n <= 0) return;
    /* MPI counts are int: go in chunks for buffers past 2^31 floats. */
    for (int64_t off = 0; off < n;) {
        int64_t c = n - off < INT_MAX / 2 ? n - off : INT_MAX / 2;
        int rc = MPI_Allreduce(MPI_IN_PLACE, buf + off, (int)c, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) K22_FATAL("MPI_Allreduce of %lld gradient floats failed (MPI error %d)",
                                         (long long)c, rc);
        off += c;
    }
    k22_dist_sum_to_mean_f32(d, buf, n);
}

void k22_dist_sum_to_mean_f32(const k22_dist *d, float *h, int64_t n)
{
    /* DDP averages: the sum divided by the world size, a float division as torch's div_. */
    const float w = (float)d->world;
    for (int64_t i = 0; i < n; i++) h[i] /= w;
}

void k22_dist_sum_to_mean_backend(const k22_dist *d, const k22_backend *be, float *buf, int64_t n)
{
    be->scale(be->ctx, buf, buf, 1.0f / (float)d->world, n);
}

void k22_dist_allreduce_mean_backend(k22_dist *d, const k22_backend *be, float *buf, int64_t n)
{
    if (d->world == 1 || n <= 0) return;
    if (k22_dist_nccl_allreduce_sum(d, be, buf, n)) {
        k22_dist_sum_to_mean_backend(d, be, buf, n);
        return;
    }
    float *h = host_staging(d, n);
    be->to_host(be->ctx, h, buf, (size_t)n * sizeof(float));
    k22_dist_allreduce_mean_f32(d, h, n);
    be->to_device(be->ctx, buf, h, (size_t)n * sizeof(float));
}

/* The MPI paths below take one block as one MPI count. */
static void check_block(int64_t n, const char *what)
{
    if (n > INT_MAX)
        K22_FATAL("%s: a shard of %lld floats is past MPI's int count (%d): use more ranks", what, (long long)n,
                  INT_MAX);
}

void k22_dist_reduce_scatter_mean_backend(k22_dist *d, const k22_backend *be, const float *buf, float *out,
                                          int64_t n)
{
    if (n <= 0) return;
    if (d->world == 1) {
        be->copy(be->ctx, out, buf, (size_t)n * sizeof(float));
        return;
    }
    if (k22_dist_nccl_reduce_scatter_sum(d, be, buf, out, n)) {
        k22_dist_sum_to_mean_backend(d, be, out, n);
        return;
    }
    check_block(n, "MPI_Reduce_scatter_block");
    size_t all = (size_t)n * (size_t)d->world;
    float *h = host_staging(d, (int64_t)all);
    be->to_host(be->ctx, h, buf, all * sizeof(float));
    /* In place: the input is the whole of h, this rank's summed block lands at h[0, n). */
    int rc = MPI_Reduce_scatter_block(MPI_IN_PLACE, h, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS)
        K22_FATAL("MPI_Reduce_scatter_block of %lld gradient floats per rank failed (MPI error %d)", (long long)n, rc);
    k22_dist_sum_to_mean_f32(d, h, n);
    be->to_device(be->ctx, out, h, (size_t)n * sizeof(float));
}

void k22_dist_allgather_backend(k22_dist *d, const k22_backend *be, float *buf, int64_t n)
{
    if (d->world == 1 || n <= 0) return;
    if (k22_dist_nccl_allgather(d, be, buf, n)) return;
    check_block(n, "MPI_Allgather");
    size_t all = (size_t)n * (size_t)d->world, mine = (size_t)n * (size_t)d->rank;
    float *h = host_staging(d, (int64_t)all);
    be->to_host(be->ctx, h + mine, buf + mine, (size_t)n * sizeof(float));
    int rc = MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, h, (int)n, MPI_FLOAT, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS)
        K22_FATAL("MPI_Allgather of %lld weight floats per rank failed (MPI error %d)", (long long)n, rc);
    be->to_device(be->ctx, buf, h, all * sizeof(float));
}
