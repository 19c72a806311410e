// emu_nccl.cpp: nccl.h over MPI_COMM_WORLD (the ranks nccl.c makes its communicator of). The
// communicator counts its calls, so that k22_emu_nccl_stats (printed at exit with
// K22_EMU_NCCL_STATS=1) can say what ran.
#define OMPI_SKIP_MPICXX 1
#include "nccl.h"

#include <limits.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vector>

struct k22_emu_nccl {
    int nranks, rank;
    long calls;
};

static long emu_nccl_calls, emu_nccl_floats;

static void report(void) {
    fprintf(stderr, "k22_emu_nccl: %ld collectives, %ld floats\n", emu_nccl_calls, emu_nccl_floats);
}

const char *ncclGetErrorString(ncclResult_t r) {
    return r == ncclSuccess ? "no error" : r == ncclInvalidArgument ? "invalid argument" : "invalid usage";
}

ncclResult_t ncclGetUniqueId(ncclUniqueId *id) {
    memset(id, 0, sizeof *id);
    snprintf(id->internal, sizeof id->internal, "k22-emu-nccl");
    return ncclSuccess;
}

ncclResult_t ncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank) {
    int world = 0, me = -1;
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    MPI_Comm_rank(MPI_COMM_WORLD, &me);
    if (strcmp(id.internal, "k22-emu-nccl") || nranks != world || rank != me) return ncclInvalidArgument;
    *comm = new k22_emu_nccl{nranks, rank, 0};
    const char *s = getenv("K22_EMU_NCCL_STATS");
    if (s && !strcmp(s, "1")) atexit(report);
    return ncclSuccess;
}

ncclResult_t ncclCommFinalize(ncclComm_t comm) {
    return comm ? ncclSuccess : ncclInvalidUsage;
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
    delete comm;
    return ncclSuccess;
}

static ncclResult_t check(ncclComm_t comm, ncclDataType_t type, size_t count) {
    if (!comm || type != ncclFloat32 || count > (size_t)INT_MAX) return ncclInvalidArgument;
    comm->calls++, emu_nccl_calls++, emu_nccl_floats += (long)count;
    return ncclSuccess;
}

ncclResult_t ncclAllReduce(const void *send, void *recv, size_t count, ncclDataType_t type, ncclRedOp_t op,
                           ncclComm_t comm, cudaStream_t stream) {
    ncclResult_t r = check(comm, type, count);
    if (r != ncclSuccess || op != ncclSum) return r != ncclSuccess ? r : ncclInvalidArgument;
    size_t bytes = count * sizeof(float);
    k22_emu_open_range(recv, bytes, "ncclAllReduce recvbuff");
    if (send != recv) k22_emu_open_range(send, bytes, "ncclAllReduce sendbuff");
    int rc = MPI_Allreduce(send == recv ? MPI_IN_PLACE : send, recv, (int)count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    k22_emu_close();
    return rc == MPI_SUCCESS ? ncclSuccess : ncclInvalidUsage;
}

ncclResult_t ncclReduceScatter(const void *send, void *recv, size_t recvcount, ncclDataType_t type,
                               ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream) {
    ncclResult_t r = check(comm, type, recvcount * (size_t)(comm ? comm->nranks : 1));
    if (r != ncclSuccess || op != ncclSum) return r != ncclSuccess ? r : ncclInvalidArgument;
    size_t bytes = recvcount * sizeof(float);
    k22_emu_open_range(send, bytes * (size_t)comm->nranks, "ncclReduceScatter sendbuff");
    k22_emu_open_range(recv, bytes, "ncclReduceScatter recvbuff");
    // NCCL's in-place form (recv = send + rank * recvcount) overlaps: go through a copy.
    std::vector<float> in((const float *)send, (const float *)send + recvcount * (size_t)comm->nranks);
    int rc = MPI_Reduce_scatter_block(in.data(), recv, (int)recvcount, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    k22_emu_close();
    return rc == MPI_SUCCESS ? ncclSuccess : ncclInvalidUsage;
}

ncclResult_t ncclAllGather(const void *send, void *recv, size_t sendcount, ncclDataType_t type, ncclComm_t comm,
                           cudaStream_t stream) {
    ncclResult_t r = check(comm, type, sendcount * (size_t)(comm ? comm->nranks : 1));
    if (r != ncclSuccess) return r;
    size_t bytes = sendcount * sizeof(float);
    k22_emu_open_range(recv, bytes * (size_t)comm->nranks, "ncclAllGather recvbuff");
    const float *mine = (const float *)recv + sendcount * (size_t)comm->rank;
    int rc;
    if (send == mine) {
        rc = MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, recv, (int)sendcount, MPI_FLOAT, MPI_COMM_WORLD);
    } else {
        k22_emu_open_range(send, bytes, "ncclAllGather sendbuff");
        rc = MPI_Allgather(send, (int)sendcount, MPI_FLOAT, recv, (int)sendcount, MPI_FLOAT, MPI_COMM_WORLD);
    }
    k22_emu_close();
    return rc == MPI_SUCCESS ? ncclSuccess : ncclInvalidUsage;
}
