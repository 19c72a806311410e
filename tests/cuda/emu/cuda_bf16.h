/* cuda_bf16.h (emulator): the bfloat16 type and the conversions the CUDA backend uses, written
 * from the format's definition (not from k22's own tensor.h conversions, so a shared mistake
 * cannot hide): float to bf16 rounds to nearest, ties to even; NaN stays NaN. */
#ifndef K22_EMU_CUDA_BF16_H
#define K22_EMU_CUDA_BF16_H

#include <stdint.h>
#include <string.h>

struct __nv_bfloat16 {
    uint16_t x;
};

static inline __nv_bfloat16 __float2bfloat16_rn(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    __nv_bfloat16 h;
    if ((u & 0x7fffffffu) > 0x7f800000u) { /* NaN: keep it quiet and a NaN */
        h.x = (uint16_t)((u >> 16) | 0x40u);
        return h;
    }
    /* Add just under half an ulp of the result, plus one when the kept lsb is odd: ties go
     * to even. Overflow carries into the exponent and gives inf, as it should. */
    u += 0x7fffu + ((u >> 16) & 1u);
    h.x = (uint16_t)(u >> 16);
    return h;
}

static inline float __bfloat162float(__nv_bfloat16 h) {
    uint32_t u = (uint32_t)h.x << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) {
    return h.x;
}

#endif
