/* cuda_fp16.h (emulator): the IEEE half type and the conversions the CUDA backend uses, written
 * from the format's definition: float to half rounds to nearest, ties to even, with subnormals
 * below 2^-14 and inf from 65520 up (the tie at 65520 goes to the even 65536, i.e. inf). */
#ifndef K22_EMU_CUDA_FP16_H
#define K22_EMU_CUDA_FP16_H

#include <math.h>
#include <stdint.h>

struct __half {
    uint16_t x;
};

/* Exact arithmetic on the float: scaling by powers of two and rint (the default rounding mode
 * is to nearest, ties to even) do the rounding; no bit tricks to get subtly wrong. */
static inline __half __float2half_rn(float f) {
    __half h;
    if (isnan(f)) {
        h.x = 0x7e00;
        return h;
    }
    uint16_t sign = signbit(f) ? 0x8000 : 0;
    double a = fabs((double)f);
    if (a >= 65520.0) {
        h.x = sign | 0x7c00;
        return h;
    }
    if (a < 0x1p-14) { /* subnormal: multiples of 2^-24 */
        h.x = sign | (uint16_t)rint(a * 0x1p24);
        return h;
    }
    int e;
    double m = frexp(a, &e); /* a = m 2^e, m in [0.5, 1) */
    double q = rint(m * 2048.0); /* 11 significant bits */
    if (q == 2048.0) {           /* rounded up to the next power of two */
        q = 1024.0;
        e++;
    }
    /* exponent field: a in [2^(e-1), 2^e) has biased exponent e - 1 + 15 */
    h.x = sign | (uint16_t)((e - 1 + 15) << 10) | (uint16_t)((int)q - 1024);
    return h;
}

static inline float __half2float(__half h) {
    int e = (h.x >> 10) & 0x1f, m = h.x & 0x3ff;
    double v;
    if (e == 0x1f)
        v = m ? NAN : INFINITY;
    else if (e == 0)
        v = ldexp((double)m, -24);
    else
        v = ldexp((double)(m + 1024), e - 25);
    return (float)((h.x & 0x8000) ? -v : v);
}

static inline unsigned short __half_as_ushort(__half h) {
    return h.x;
}

#endif
