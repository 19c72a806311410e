/* device.c: which GPU a rank takes for "--device cuda": its local rank (its index among the
 * job's ranks on its node) modulo the devices it can see (dist.h). */
#include "k22/dist.h"

#include <errno.h>
#include <limits.h>
#include <mpi.h>
#include <stdlib.h>

#ifdef K22_HAVE_CUDA
#include <cuda_runtime.h>
#endif

/* A launcher's local-rank variable: a plain non-negative decimal integer, else -1. */
static int env_index(const char *name)
{
    const char *s = getenv(name);
    if (!s || *s < '0' || *s > '9') return -1;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    return errno || *end || v > INT_MAX ? -1 : (int)v;
}

int k22_dist_local_rank(void)
{
    /* Open MPI's first: under mpirun inside a Slurm allocation SLURM_LOCALID describes the batch
     * step (0 on every rank), not the ranks mpirun started. */
    static const char *const vars[] = {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        int v = env_index(vars[i]);
        if (v >= 0) return v;
    }
    int init = 0, fin = 0, world = 1;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    if (!init || fin) return 0;
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    if (world == 1) return 0;
    MPI_Comm node;
    int r = 0;
    if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node) != MPI_SUCCESS)
        K22_FATAL("MPI_Comm_split_type(MPI_COMM_TYPE_SHARED) failed: cannot tell this rank's local index");
    MPI_Comm_rank(node, &r);
    MPI_Comm_free(&node);
    return r;
}

k22_status k22_dist_gpu_pick(int *device, k22_err *err)
{
    *device = 0;
#ifdef K22_HAVE_CUDA
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess)
        return k22_err_set(err, K22_ERR_UNSUPPORTED, "no usable CUDA device: %s (%s)", cudaGetErrorString(e),
                           cudaGetErrorName(e));
    if (count < 1) return k22_err_set(err, K22_ERR_UNSUPPORTED, "no usable CUDA device: none is visible");
    *device = k22_dist_local_rank() % count;
#else
    (void)err;
#endif
    return K22_OK;
}
