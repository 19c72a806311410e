/* async_copy.cuh: cp.async (sm_80+), global to shared memory without a trip through registers,
 * so a kernel can fetch its next tile while it computes on the current one (flash_mma.cu).
 * k22_cp16 issues one 16-byte copy (both addresses 16-byte aligned), or fills the 16 bytes with
 * zeros when !valid (nothing is read then; src must still be a valid address). k22_cp_commit
 * closes the copies issued since the last commit into a group; k22_cp_wait<N> returns when at
 * most N of this thread's groups are still in flight. Other threads see the data only after a
 * barrier that follows their writers' waits. tests/cuda/emu has its own version of this header. */
#ifndef K22_ASYNC_COPY_CUH
#define K22_ASYNC_COPY_CUH

#include <stdint.h>

__device__ __forceinline__ void k22_cp16(void *dst, const void *src, int valid)
{
    const uint32_t d = (uint32_t)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(valid ? 16 : 0));
}

__device__ __forceinline__ void k22_cp_commit(void)
{
    asm volatile("cp.async.commit_group;\n" ::);
}

template <int N> __device__ __forceinline__ void k22_cp_wait(void)
{
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

#endif
