/* nccl.h (emulator): the part of NCCL that src/dist/nccl.c calls, over MPI on the emulator's
 * device memory (host memory, opened for the call under ASan). A collective is queued on its
 * stream and runs only when that stream is reached: the host synchronizes it, or another stream
 * waits on an event recorded on it (emu_nccl.cpp). So, as on a GPU, a result read before that
 * ordering is the old value, and an input written while queued aborts with a message. Serves
 * ranks that each see a GPU of their own (K22_EMU_GPU_PER_RANK=1, cuda_runtime.h). */
#ifndef K22_EMU_NCCL_H
#define K22_EMU_NCCL_H

#include "cuda_runtime.h"

#include <stddef.h>

#define NCCL_MAJOR 0 /* the emulator's */
#define NCCL_MINOR 0

#ifdef __cplusplus
extern "C" {
#endif

typedef struct k22_emu_nccl *ncclComm_t;
typedef struct { char internal[128]; } ncclUniqueId;
typedef enum { ncclSuccess = 0, ncclInvalidArgument = 4, ncclInvalidUsage = 5 } ncclResult_t;
typedef enum { ncclFloat32 = 7 } ncclDataType_t;
typedef enum { ncclSum = 0 } ncclRedOp_t;

const char *ncclGetErrorString(ncclResult_t r);
ncclResult_t ncclGetUniqueId(ncclUniqueId *id);
ncclResult_t ncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank);
ncclResult_t ncclCommFinalize(ncclComm_t comm);
ncclResult_t ncclCommDestroy(ncclComm_t comm);
ncclResult_t ncclAllReduce(const void *send, void *recv, size_t count, ncclDataType_t type, ncclRedOp_t op,
                           ncclComm_t comm, cudaStream_t stream);
ncclResult_t ncclReduce(const void *send, void *recv, size_t count, ncclDataType_t type, ncclRedOp_t op, int root,
                        ncclComm_t comm, cudaStream_t stream);
ncclResult_t ncclReduceScatter(const void *send, void *recv, size_t recvcount, ncclDataType_t type,
                               ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream);
ncclResult_t ncclAllGather(const void *send, void *recv, size_t sendcount, ncclDataType_t type, ncclComm_t comm,
                           cudaStream_t stream);

#ifdef __cplusplus
}
#endif
#endif
