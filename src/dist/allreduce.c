/* allreduce.c: the gradient all-reduce over the flat buffer: MPI over host memory, or NCCL over
 * device memory (nccl.c) on GPU ranks. */
#include "k22/dist.h"

#include <limits.h>
#include <mpi.h>
#include <stdlib.h>

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
    /* DDP averages: the sum divided by the world size, a float division as torch's div_. */
    const float w = (float)d->world;
    for (int64_t i = 0; i < n; i++) buf[i] /= w;
}

void k22_dist_allreduce_mean_backend(k22_dist *d, const k22_backend *be, float *buf, int64_t n)
{
    if (d->world == 1 || n <= 0) return;
    if (k22_dist_nccl_allreduce_sum(d, be, buf, n)) {
        /* The host path's sum-then-divide on the device: x * (1/w) is x / w exactly when w is a
         * power of two (1/w exact), within one rounding otherwise. */
        be->scale(be->ctx, buf, buf, 1.0f / (float)d->world, n);
        return;
    }
    if ((size_t)n > d->host_floats) {
        free(d->host);
        d->host = k22_xmalloc((size_t)n * sizeof(float));
        d->host_floats = (size_t)n;
    }
    be->to_host(be->ctx, d->host, buf, (size_t)n * sizeof(float));
    k22_dist_allreduce_mean_f32(d, d->host, n);
    be->to_device(be->ctx, buf, d->host, (size_t)n * sizeof(float));
}
