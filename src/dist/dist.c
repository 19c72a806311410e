/* dist.c: starting MPI, naming ranks, and the small collectives of the training loop. */
#include "k22/dist.h"

#include <mpi.h>
#include <stdlib.h>
#include <string.h>

static void check_mpi(int rc, const char *what)
{
    if (rc != MPI_SUCCESS) K22_FATAL("%s failed (MPI error %d)", what, rc);
}

void k22_dist_init(k22_dist *d)
{
    memset(d, 0, sizeof *d);
    int init = 0;
    MPI_Initialized(&init);
    if (!init) {
        check_mpi(MPI_Init(NULL, NULL), "MPI_Init");
        d->owns_mpi = 1;
    }
    check_mpi(MPI_Comm_rank(MPI_COMM_WORLD, &d->rank), "MPI_Comm_rank");
    check_mpi(MPI_Comm_size(MPI_COMM_WORLD, &d->world), "MPI_Comm_size");
    k22_set_rank(d->rank);
}

void k22_dist_finalize(k22_dist *d)
{
    k22_dist_nccl_free(d);
    free(d->host);
    if (d->owns_mpi) {
        int fin = 0;
        MPI_Finalized(&fin);
        if (!fin) MPI_Finalize();
    }
    memset(d, 0, sizeof *d);
}

double k22_dist_sum_f64(const k22_dist *d, double x)
{
    if (d->world == 1) return x;
    double s = 0;
    check_mpi(MPI_Allreduce(&x, &s, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD), "MPI_Allreduce (sum)");
    return s;
}

double k22_dist_mean_f64(const k22_dist *d, double x)
{
    return d->world == 1 ? x : k22_dist_sum_f64(d, x) / d->world;
}

int k22_dist_any(const k22_dist *d, int flag)
{
    if (d->world == 1) return flag != 0;
    int in = flag != 0, out = 0;
    check_mpi(MPI_Allreduce(&in, &out, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD), "MPI_Allreduce (flag)");
    return out;
}

int64_t k22_dist_max_i64(const k22_dist *d, int64_t x)
{
    if (d->world == 1) return x;
    int64_t out = 0;
    check_mpi(MPI_Allreduce(&x, &out, 1, MPI_INT64_T, MPI_MAX, MPI_COMM_WORLD), "MPI_Allreduce (max)");
    return out;
}

void k22_dist_barrier(const k22_dist *d)
{
    if (d->world > 1) check_mpi(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier");
}
