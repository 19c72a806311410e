// emu_nccl.cpp: nccl.h over MPI_COMM_WORLD (the ranks nccl.c makes its communicator of), each
// collective queued on its stream and run when that stream is reached (below). With
// K22_EMU_NCCL_STATS=1 the process prints at exit how many collectives and floats it queued.
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

extern "C" void k22_emu_stream_reached(cudaStream_t s);

ncclResult_t ncclCommFinalize(ncclComm_t comm) {
    k22_emu_stream_reached(NULL); // flushes the communicator's work
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

// ---- the queue ----
// A collective runs only once its stream is reached (k22_emu_stream_reached: the host syncs that
// stream, or another stream waits on an event recorded there), as on a GPU where NCCL's stream
// runs apart from the backend's: code that reads a result before ordering itself after NCCL's
// stream reads the old values. Its input is copied when queued and must be unchanged when it
// runs: a write into a buffer in flight aborts with a message.
enum { EMU_ALLREDUCE, EMU_REDUCE_SCATTER, EMU_ALLGATHER, EMU_REDUCE };
struct emu_op {
    int kind;
    const void *send;
    void *recv;
    size_t count;       // floats of the input
    size_t recvcount;   // reduce-scatter's block / all-gather's block
    int root;           // reduce's
    cudaStream_t stream;
    std::vector<float> input;
};
static std::vector<emu_op> emu_queue;

static const char *const emu_names[] = {"ncclAllReduce", "ncclReduceScatter", "ncclAllGather", "ncclReduce"};

static void run_op(emu_op &op) {
    const char *name = emu_names[op.kind];
    int world = 1, me = 0;
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    MPI_Comm_rank(MPI_COMM_WORLD, &me);
    size_t in_bytes = op.count * sizeof(float);
    k22_emu_open_range(op.send, in_bytes, name);
    if (memcmp(op.send, op.input.data(), in_bytes)) {
        fprintf(stderr, "k22_emu_nccl: the input of a queued %s (%zu floats at %p) was written before the "
                        "collective ran: a write into a buffer in flight\n", name, op.count, op.send);
        abort();
    }
    int rc;
    if (op.kind == EMU_ALLREDUCE) {
        k22_emu_open_range(op.recv, in_bytes, name);
        rc = MPI_Allreduce(op.input.data(), op.recv, (int)op.count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    } else if (op.kind == EMU_REDUCE_SCATTER) {
        k22_emu_open_range(op.recv, op.recvcount * sizeof(float), name);
        rc = MPI_Reduce_scatter_block(op.input.data(), op.recv, (int)op.recvcount, MPI_FLOAT, MPI_SUM,
                                      MPI_COMM_WORLD);
    } else if (op.kind == EMU_REDUCE) { // recv is the root's alone
        if (me == op.root) k22_emu_open_range(op.recv, in_bytes, name);
        rc = MPI_Reduce(op.input.data(), me == op.root ? op.recv : NULL, (int)op.count, MPI_FLOAT, MPI_SUM, op.root,
                        MPI_COMM_WORLD);
    } else {
        k22_emu_open_range(op.recv, op.recvcount * sizeof(float) * (size_t)world, name);
        rc = MPI_Allgather(op.input.data(), (int)op.recvcount, MPI_FLOAT, op.recv, (int)op.recvcount, MPI_FLOAT,
                           MPI_COMM_WORLD);
    }
    k22_emu_close();
    if (rc != MPI_SUCCESS) {
        fprintf(stderr, "k22_emu_nccl: %s on rank %d: MPI error %d\n", name, me, rc);
        abort();
    }
}

extern "C" void k22_emu_stream_reached(cudaStream_t s) {
    std::vector<emu_op> keep;
    for (auto &op : emu_queue)
        if (!s || op.stream == s) run_op(op);
        else keep.push_back(op);
    emu_queue.swap(keep);
}

static ncclResult_t queue(int kind, const void *send, void *recv, size_t count, size_t recvcount,
                          cudaStream_t stream, int root = 0) {
    emu_op op{kind, send, recv, count, recvcount, root, stream, std::vector<float>(count)};
    k22_emu_open_range(send, count * sizeof(float), emu_names[kind]);
    memcpy(op.input.data(), send, count * sizeof(float));
    k22_emu_close();
    emu_queue.push_back(op);
    return ncclSuccess;
}

ncclResult_t ncclAllReduce(const void *send, void *recv, size_t count, ncclDataType_t type, ncclRedOp_t op,
                           ncclComm_t comm, cudaStream_t stream) {
    ncclResult_t r = check(comm, type, count);
    if (r != ncclSuccess || op != ncclSum) return r != ncclSuccess ? r : ncclInvalidArgument;
    k22_emu_open_range(recv, count * sizeof(float), "ncclAllReduce recvbuff"); // bounds, now
    k22_emu_close();
    return queue(EMU_ALLREDUCE, send, recv, count, count, stream);
}

ncclResult_t ncclReduce(const void *send, void *recv, size_t count, ncclDataType_t type, ncclRedOp_t op, int root,
                        ncclComm_t comm, cudaStream_t stream) {
    ncclResult_t r = check(comm, type, count);
    if (r != ncclSuccess || op != ncclSum || root < 0 || root >= comm->nranks)
        return r != ncclSuccess ? r : ncclInvalidArgument;
    if (comm->rank == root) { // bounds, now; elsewhere NCCL ignores recvbuff
        k22_emu_open_range(recv, count * sizeof(float), "ncclReduce recvbuff");
        k22_emu_close();
    }
    return queue(EMU_REDUCE, send, recv, count, count, stream, root);
}

ncclResult_t ncclReduceScatter(const void *send, void *recv, size_t recvcount, ncclDataType_t type,
                               ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream) {
    ncclResult_t r = check(comm, type, recvcount * (size_t)(comm ? comm->nranks : 1));
    if (r != ncclSuccess || op != ncclSum) return r != ncclSuccess ? r : ncclInvalidArgument;
    k22_emu_open_range(recv, recvcount * sizeof(float), "ncclReduceScatter recvbuff");
    k22_emu_close();
    return queue(EMU_REDUCE_SCATTER, send, recv, recvcount * (size_t)comm->nranks, recvcount, stream);
}

ncclResult_t ncclAllGather(const void *send, void *recv, size_t sendcount, ncclDataType_t type, ncclComm_t comm,
                           cudaStream_t stream) {
    ncclResult_t r = check(comm, type, sendcount * (size_t)(comm ? comm->nranks : 1));
    if (r != ncclSuccess) return r;
    k22_emu_open_range(recv, sendcount * sizeof(float) * (size_t)comm->nranks, "ncclAllGather recvbuff");
    k22_emu_close();
    return queue(EMU_ALLGATHER, send, recv, sendcount, sendcount, stream);
}
