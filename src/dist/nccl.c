/* nccl.c: the GPU gradient all-reduce: one NCCL communicator per job (rank 0's ncclUniqueId
 * broadcast over MPI), a sum over the flat gradient buffer in device memory (dist.h). Compiled
 * to stubs that always answer "use MPI" unless the build has CUDA and NCCL (K22_HAVE_NCCL). */
#include "k22/dist.h"

#if defined(K22_HAVE_CUDA) && defined(K22_HAVE_NCCL)

#include <cuda_runtime.h>
#include <mpi.h>
#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    ncclComm_t comm;
    cudaStream_t stream; /* NCCL's own, ordered against the backend's by the host or by events */
    cudaEvent_t after_be, after_nccl; /* the bucketed exchange's orderings (no timing) */
    int device;
} nccl_state;

static void nccl_check_at(ncclResult_t r, const char *what, int device, const char *file, int line)
{
    if (r != ncclSuccess)
        k22_fatal_at(file, line, "%s failed on CUDA device %d: %s (NCCL %d.%d, ncclResult %d)", what, device,
                     ncclGetErrorString(r), NCCL_MAJOR, NCCL_MINOR, (int)r);
}
static void cuda_check_at(cudaError_t e, const char *what, int device, const char *file, int line)
{
    if (e != cudaSuccess)
        k22_fatal_at(file, line, "%s failed on CUDA device %d: %s (%s)", what, device, cudaGetErrorString(e),
                     cudaGetErrorName(e));
}
#define NCCL_CHECK(call, dev) nccl_check_at((call), #call, (dev), __FILE__, __LINE__)
#define CUDA_CHECK(call, dev) cuda_check_at((call), #call, (dev), __FILE__, __LINE__)
#define MPI_CHECK(call)                                                                            \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        if (rc_ != MPI_SUCCESS) K22_FATAL("%s failed (MPI error %d)", #call, rc_);                 \
    } while (0)

/* Whether this job can use NCCL, the same answer on every rank from one gathered table of
 * (GPU UUID, K22_NCCL=0 here): not when any rank turned it off, nor when two ranks hold the same
 * GPU (by UUID, so across nodes too): NCCL refuses a communicator with a device twice, as when
 * tests oversubscribe one GPU. */
static int nccl_usable(const k22_dist *d, int device)
{
    struct cudaDeviceProp p;
    CUDA_CHECK(cudaGetDeviceProperties(&p, device), device);
    unsigned char mine[17], *all = k22_xmalloc((size_t)d->world * 17);
    const char *env = getenv("K22_NCCL");
    memcpy(mine, p.uuid.bytes, 16);
    mine[16] = env && !strcmp(env, "0");
    MPI_CHECK(MPI_Allgather(mine, 17, MPI_BYTE, all, 17, MPI_BYTE, MPI_COMM_WORLD));
    int off = 0, shared = 0;
    for (int i = 0; i < d->world; i++) {
        off |= all[17 * i + 16];
        for (int j = i + 1; j < d->world && !shared; j++) shared = !memcmp(all + 17 * i, all + 17 * j, 16);
    }
    free(all);
    if (shared && !off && d->rank == 0)
        fprintf(stderr, "k22: ranks share a GPU, which NCCL does not allow: gradients are all-reduced through "
                        "host memory and MPI\n");
    return !off && !shared;
}

/* Decides, on every rank alike, whether this job uses NCCL; makes the communicator if so. */
static void nccl_open(k22_dist *d)
{
    int device = -1;
    CUDA_CHECK(cudaGetDevice(&device), -1); /* the backend made its device current at creation */
    if (!nccl_usable(d, device)) {
        d->nccl_off = 1;
        return;
    }
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    if (d->rank == 0) NCCL_CHECK(ncclGetUniqueId(&id), device);
    MPI_CHECK(MPI_Bcast(&id, (int)sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD));
    nccl_state *s = k22_xcalloc(1, sizeof *s);
    s->device = device;
    NCCL_CHECK(ncclCommInitRank(&s->comm, d->world, id, d->rank), device);
    CUDA_CHECK(cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking), device);
    CUDA_CHECK(cudaEventCreateWithFlags(&s->after_be, cudaEventDisableTiming), device);
    CUDA_CHECK(cudaEventCreateWithFlags(&s->after_nccl, cudaEventDisableTiming), device);
    d->nccl = s;
    if (d->rank == 0)
        fprintf(stderr, "k22: gradients are all-reduced with NCCL %d.%d over %d GPUs\n", NCCL_MAJOR, NCCL_MINOR,
                d->world);
}

/* The job's communicator (made at the first call), or NULL: use MPI. */
static nccl_state *nccl_comm(k22_dist *d, const k22_backend *be)
{
    if (be->dev != K22_DEV_CUDA || d->nccl_off) return NULL;
    if (!d->nccl) nccl_open(d);
    return d->nccl;
}

/* The same with the backend's work finished: the host waits, once per whole-buffer exchange
 * (the clipping's sumsq waits anyway). */
static nccl_state *nccl_ready(k22_dist *d, const k22_backend *be)
{
    nccl_state *s = nccl_comm(d, be);
    if (s) be->sync(be->ctx);
    return s;
}

int k22_dist_nccl_serves(k22_dist *d, const k22_backend *be)
{
    return nccl_comm(d, be) != NULL;
}

/* The communicator, with NCCL's stream ordered after the backend's work so far: NCCL starts
 * once the backend's stream has written the bucket; neither waits for the other beyond that, so
 * the backward goes on while the bucket travels. */
static nccl_state *nccl_after_backend(k22_dist *d, const k22_backend *be)
{
    nccl_state *s = nccl_comm(d, be);
    cudaStream_t bs = (cudaStream_t)k22_backend_cuda_stream(be);
    K22_REQUIRE(s && bs);
    CUDA_CHECK(cudaEventRecord(s->after_be, bs), s->device);
    CUDA_CHECK(cudaStreamWaitEvent(s->stream, s->after_be, 0), s->device);
    return s;
}

void k22_dist_nccl_allreduce_sum_queue(k22_dist *d, const k22_backend *be, float *buf, int64_t n)
{
    if (n <= 0) return;
    nccl_state *s = nccl_after_backend(d, be);
    NCCL_CHECK(ncclAllReduce(buf, buf, (size_t)n, ncclFloat32, ncclSum, s->comm, s->stream), s->device);
}

void k22_dist_nccl_reduce_sum_queue(k22_dist *d, const k22_backend *be, const float *send, float *recv,
                                    int64_t n, int root)
{
    if (n <= 0) return;
    nccl_state *s = nccl_after_backend(d, be);
    /* recv is the root's alone; the others pass their send buffer, which NCCL leaves unwritten */
    void *out = d->rank == root ? (void *)recv : (void *)send;
    NCCL_CHECK(ncclReduce(send, out, (size_t)n, ncclFloat32, ncclSum, root, s->comm, s->stream), s->device);
}

void k22_dist_nccl_join(k22_dist *d, const k22_backend *be)
{
    nccl_state *s = nccl_comm(d, be);
    cudaStream_t bs = (cudaStream_t)k22_backend_cuda_stream(be);
    K22_REQUIRE(s && bs);
    CUDA_CHECK(cudaEventRecord(s->after_nccl, s->stream), s->device);
    CUDA_CHECK(cudaStreamWaitEvent(bs, s->after_nccl, 0), s->device);
}

int k22_dist_nccl_allreduce_sum(k22_dist *d, const k22_backend *be, float *buf, int64_t n)
{
    nccl_state *s = nccl_ready(d, be);
    if (!s) return 0;
    if (n <= 0) return 1;
    NCCL_CHECK(ncclAllReduce(buf, buf, (size_t)n, ncclFloat32, ncclSum, s->comm, s->stream), s->device);
    CUDA_CHECK(cudaStreamSynchronize(s->stream), s->device);
    return 1;
}

int k22_dist_nccl_reduce_scatter_sum(k22_dist *d, const k22_backend *be, const float *send, float *recv,
                                     int64_t n)
{
    nccl_state *s = nccl_ready(d, be);
    if (!s) return 0;
    if (n <= 0) return 1;
    NCCL_CHECK(ncclReduceScatter(send, recv, (size_t)n, ncclFloat32, ncclSum, s->comm, s->stream), s->device);
    CUDA_CHECK(cudaStreamSynchronize(s->stream), s->device);
    return 1;
}

int k22_dist_nccl_allgather(k22_dist *d, const k22_backend *be, float *buf, int64_t n)
{
    nccl_state *s = nccl_ready(d, be);
    if (!s) return 0;
    if (n <= 0) return 1;
    /* In place: NCCL takes send == recv + rank * n as the in-place form. */
    const float *mine = buf + (size_t)n * (size_t)d->rank;
    NCCL_CHECK(ncclAllGather(mine, buf, (size_t)n, ncclFloat32, s->comm, s->stream), s->device);
    CUDA_CHECK(cudaStreamSynchronize(s->stream), s->device);
    return 1;
}

void k22_dist_nccl_free(k22_dist *d)
{
    nccl_state *s = d->nccl;
    if (!s) return;
    /* Finalize first: it flushes the communicator's work, so the destroy cannot hang on it. */
    NCCL_CHECK(ncclCommFinalize(s->comm), s->device);
    NCCL_CHECK(ncclCommDestroy(s->comm), s->device);
    cudaEventDestroy(s->after_be);
    cudaEventDestroy(s->after_nccl);
    cudaStreamDestroy(s->stream);
    free(s);
    d->nccl = NULL;
}

#else

#include <stdio.h>

int k22_dist_nccl_allreduce_sum(k22_dist *d, const k22_backend *be, float *buf, int64_t n)
{
    (void)buf, (void)n;
    if (be->dev == K22_DEV_CUDA && !d->nccl_off && d->rank == 0)
        fprintf(stderr, "k22: this k22 was built without NCCL: gradients are exchanged through host memory "
                        "and MPI\n");
    d->nccl_off = 1;
    return 0;
}

int k22_dist_nccl_reduce_scatter_sum(k22_dist *d, const k22_backend *be, const float *send, float *recv,
                                     int64_t n)
{
    (void)send;
    return k22_dist_nccl_allreduce_sum(d, be, recv, n);
}

int k22_dist_nccl_allgather(k22_dist *d, const k22_backend *be, float *buf, int64_t n)
{
    return k22_dist_nccl_allreduce_sum(d, be, buf, n);
}

int k22_dist_nccl_serves(k22_dist *d, const k22_backend *be)
{
    return k22_dist_nccl_allreduce_sum(d, be, NULL, 0);
}

void k22_dist_nccl_allreduce_sum_queue(k22_dist *d, const k22_backend *be, float *buf, int64_t n)
{
    (void)d, (void)be, (void)buf, (void)n;
    K22_FATAL("k22_dist_nccl_allreduce_sum_queue without NCCL"); /* callers ask k22_dist_nccl_serves */
}

void k22_dist_nccl_reduce_sum_queue(k22_dist *d, const k22_backend *be, const float *send, float *recv,
                                    int64_t n, int root)
{
    (void)d, (void)be, (void)send, (void)recv, (void)n, (void)root;
    K22_FATAL("k22_dist_nccl_reduce_sum_queue without NCCL");
}

void k22_dist_nccl_join(k22_dist *d, const k22_backend *be)
{
    (void)d, (void)be;
    K22_FATAL("k22_dist_nccl_join without NCCL");
}

void k22_dist_nccl_free(k22_dist *d)
{
    d->nccl = NULL;
}

#endif
