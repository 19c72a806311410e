/* async_copy.cuh (emulator): src/backend/cuda/async_copy.cuh's cp.async over emu.cpp's copy
 * queue, which does each copy at the latest legal moment in the forward order and at the
 * earliest in the reverse one, so that a kernel reading a tile before its wait and barrier, or
 * refilling a buffer other threads still read, computes wrong numbers in one of the orders. */
#ifndef K22_EMU_ASYNC_COPY_CUH
#define K22_EMU_ASYNC_COPY_CUH

#include "cuda_runtime.h"

static inline void k22_cp16(void *dst, const void *src, int valid) {
    k22_emu_cp_async(dst, src, valid ? 16 : 0);
}
static inline void k22_cp_commit(void) {
    k22_emu_cp_commit();
}
template <int N> static inline void k22_cp_wait(void) {
    k22_emu_cp_wait(N);
}

#endif
