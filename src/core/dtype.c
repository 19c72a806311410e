/* dtype.c: element sizes and names of the stored dtypes, element counts, and exact conversions
 * between every stored dtype and f32 (f16/bf16 round to nearest even, keep subnormals, infinities
 * and NaN). Loads and stores go through memcpy because tensors inside a safetensors mapping need
 * not be aligned to their element size. */
#include "k22/tensor.h"

#include <math.h>
#include <string.h>

static const struct {
    const char *name;
    size_t size;
} k22_dtype_table[K22_DTYPE_COUNT] = {
    [K22_DTYPE_F32] = {"F32", 4}, [K22_DTYPE_F16] = {"F16", 2}, [K22_DTYPE_BF16] = {"BF16", 2},
    [K22_DTYPE_I64] = {"I64", 8}, [K22_DTYPE_I32] = {"I32", 4}, [K22_DTYPE_U8] = {"U8", 1},
    [K22_DTYPE_BOOL] = {"BOOL", 1},
};

/* 0 for a value outside the enum. */
size_t k22_dtype_size(k22_dtype t)
{
    if ((unsigned)t >= K22_DTYPE_COUNT) return 0;
    return k22_dtype_table[t].size;
}

/* "?" for a value outside the enum. */
const char *k22_dtype_name(k22_dtype t)
{
    if ((unsigned)t >= K22_DTYPE_COUNT) return "?";
    return k22_dtype_table[t].name;
}

int k22_dtype_parse(const char *s, k22_dtype *out)
{
    if (!s) return -1;
    for (int i = 0; i < K22_DTYPE_COUNT; i++) {
        if (strcmp(s, k22_dtype_table[i].name) == 0) {
            *out = (k22_dtype)i;
            return 0;
        }
    }
    return -1;
}

/* 1 for ndim 0; -1 when a dimension is negative, ndim is out of range or the product overflows
 * int64 (callers that read outside bytes check before they get here). */
int64_t k22_shape_numel(int ndim, const int64_t *shape)
{
    if (ndim < 0 || ndim > K22_MAX_DIMS) return -1;
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return -1;
        if (shape[i] != 0 && n > INT64_MAX / shape[i]) return -1;
        n *= shape[i];
    }
    return n;
}

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float k22_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    if (exp == 0x1f) return bits_f32(sign | 0x7f800000u | (man << 13)); /* inf, NaN (payload kept) */
    if (exp != 0) return bits_f32(sign | ((exp + 112) << 23) | (man << 13));
    if (man == 0) return bits_f32(sign);
    /* Subnormal: man * 2^-24; normalize so the leading one becomes the implicit bit. */
    int e = 113;
    while (!(man & 0x400)) {
        man <<= 1;
        e--;
    }
    return bits_f32(sign | ((uint32_t)e << 23) | ((man & 0x3ff) << 13));
}

/* Shifts m right by s (1..31), rounding to nearest, ties to even. */
static uint32_t shift_rne(uint32_t m, unsigned s)
{
    uint32_t q = m >> s, rem = m & ((1u << s) - 1), half = 1u << (s - 1);
    if (rem > half || (rem == half && (q & 1))) q++;
    return q;
}

uint16_t k22_f32_to_f16(float f)
{
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return sign | 0x7e00 | (uint16_t)((ax >> 13) & 0x3ff); /* quiet NaN */
    /* 65520 is the midpoint between 65504 (odd mantissa) and 2^16, so it and above go to inf. */
    if (ax >= 0x477ff000u) return sign | 0x7c00;
    if (ax >= 0x38800000u) { /* normal in f16 (>= 2^-14); a carry may bump the exponent */
        uint32_t h = (ax >> 13) - (112u << 10);
        uint32_t rem = ax & 0x1fff;
        if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;
        return sign | (uint16_t)h;
    }
    /* f16 subnormal or zero: the result is |f| / 2^-24 rounded. */
    uint32_t e = ax >> 23;
    uint32_t m = (ax & 0x7fffff) | (e ? 0x800000u : 0);
    unsigned s = e ? 126 - e : 125; /* >= 14 here */
    if (s > 25) return sign;        /* below 2^-25: rounds to zero */
    return sign | (uint16_t)shift_rne(m, s);
}

float k22_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

uint16_t k22_f32_to_bf16(float f)
{
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40); /* quiet NaN */
    /* Adding 0x7fff plus the lsb of the kept half rounds ties to even; overflow reaches inf. */
    x += 0x7fffu + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

static float load_elem(const uint8_t *p, k22_dtype t)
{
    switch (t) {
    case K22_DTYPE_F32: {
        float v;
        memcpy(&v, p, 4);
        return v;
    }
    case K22_DTYPE_F16:
    case K22_DTYPE_BF16: {
        uint16_t h;
        memcpy(&h, p, 2);
        return t == K22_DTYPE_F16 ? k22_f16_to_f32(h) : k22_bf16_to_f32(h);
    }
    case K22_DTYPE_I64: {
        int64_t v;
        memcpy(&v, p, 8);
        return (float)v;
    }
    case K22_DTYPE_I32: {
        int32_t v;
        memcpy(&v, p, 4);
        return (float)v;
    }
    case K22_DTYPE_U8: return (float)p[0];
    case K22_DTYPE_BOOL: return p[0] ? 1.0f : 0.0f;
    default: return NAN;
    }
}

/* Float to integer without undefined behaviour: NaN gives 0, the value is truncated toward
 * zero and saturated to [lo, hi]. */
static int64_t f32_to_int_sat(float f, double lo, double hi)
{
    if (isnan(f)) return 0;
    double d = trunc((double)f);
    if (d <= lo) return (int64_t)lo;
    if (d >= hi) return (int64_t)hi;
    return (int64_t)d;
}

static void store_elem(uint8_t *p, k22_dtype t, float f)
{
    switch (t) {
    case K22_DTYPE_F32: memcpy(p, &f, 4); break;
    case K22_DTYPE_F16:
    case K22_DTYPE_BF16: {
        uint16_t h = t == K22_DTYPE_F16 ? k22_f32_to_f16(f) : k22_f32_to_bf16(f);
        memcpy(p, &h, 2);
        break;
    }
    case K22_DTYPE_I64: {
        /* +-2^63 are exact floats; 2^63 itself is not an int64, so it saturates. */
        int64_t v = isnan(f) ? 0 : f >= 0x1p63f ? INT64_MAX : f <= -0x1p63f ? INT64_MIN : (int64_t)f;
        memcpy(p, &v, 8);
        break;
    }
    case K22_DTYPE_I32: {
        int32_t v = (int32_t)f32_to_int_sat(f, -2147483648.0, 2147483647.0);
        memcpy(p, &v, 4);
        break;
    }
    case K22_DTYPE_U8: p[0] = (uint8_t)f32_to_int_sat(f, 0.0, 255.0); break;
    case K22_DTYPE_BOOL: p[0] = f != 0.0f; break; /* NaN is true, as in torch */
    default: break;
    }
}

void k22_convert_to_f32(float *dst, const void *src, k22_dtype src_type, size_t n)
{
    size_t es = k22_dtype_size(src_type);
    const uint8_t *s = src;
    if (src_type == K22_DTYPE_F32) {
        memmove(dst, src, n * 4);
        return;
    }
    for (size_t i = 0; i < n; i++) dst[i] = load_elem(s + i * es, src_type);
}

void k22_convert_from_f32(void *dst, k22_dtype dst_type, const float *src, size_t n)
{
    size_t es = k22_dtype_size(dst_type);
    uint8_t *d = dst;
    if (dst_type == K22_DTYPE_F32) {
        memmove(dst, src, n * 4);
        return;
    }
    for (size_t i = 0; i < n; i++) store_elem(d + i * es, dst_type, src[i]);
}
