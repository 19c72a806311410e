/* test_dtype.c: dtype names and sizes, element counts, and the f16/bf16 <-> f32 conversions:
 * every one of the 65536 bit patterns of each, and f32 -> f16/bf16 rounding on tricky values
 * against numpy (f16) and torch (bf16). */
#include "harness/harness.h"
#include "k22/tensor.h"

#include <math.h>
#include <string.h>

static uint32_t bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void test_names(void)
{
    static const char *names[] = {"F32", "F16", "BF16", "I64", "I32", "U8", "BOOL"};
    static const size_t sizes[] = {4, 2, 2, 8, 4, 1, 1};
    for (int i = 0; i < K22_DTYPE_COUNT; i++) {
        k22_dtype t;
        CHECK(strcmp(k22_dtype_name((k22_dtype)i), names[i]) == 0);
        CHECK(k22_dtype_size((k22_dtype)i) == sizes[i]);
        CHECK(k22_dtype_parse(names[i], &t) == 0 && t == (k22_dtype)i);
    }
    k22_dtype t;
    CHECK(k22_dtype_parse("f32", &t) == -1);
    CHECK(k22_dtype_parse("F64", &t) == -1);
    CHECK(k22_dtype_parse("", &t) == -1);
    CHECK(k22_dtype_size(K22_DTYPE_COUNT) == 0);
    CHECK(strcmp(k22_dtype_name(K22_DTYPE_COUNT), "?") == 0);
}

static void test_numel(void)
{
    int64_t s[3] = {2, 3, 4};
    CHECK(k22_shape_numel(0, s) == 1);
    CHECK(k22_shape_numel(3, s) == 24);
    int64_t z[2] = {0, 5};
    CHECK(k22_shape_numel(2, z) == 0);
    int64_t neg[1] = {-1};
    CHECK(k22_shape_numel(1, neg) == -1);
    int64_t big[3] = {1LL << 32, 1LL << 32, 1LL << 32};
    CHECK(k22_shape_numel(3, big) == -1);
}

/* Every f16 pattern: to f32 and back is the identity (NaN stays NaN with sign), and to f32
 * matches the value computed from the definition. */
static void test_f16_all(void)
{
    int bad = 0, bad_value = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = k22_f16_to_f32((uint16_t)h);
        int e = (h >> 10) & 0x1f, m = h & 0x3ff;
        double want = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
        if (h & 0x8000) want = -want;
        if (e == 31 && m) {
            if (!isnan(f) || (signbit(f) != 0) != ((h & 0x8000) != 0)) bad_value++;
        } else if ((double)f != want || (signbit(f) != 0) != ((h & 0x8000) != 0)) {
            bad_value++;
        }
        uint16_t back = k22_f32_to_f16(f);
        if (e == 31 && m) {
            if ((back & 0x7c00) != 0x7c00 || !(back & 0x3ff) || (back & 0x8000) != (h & 0x8000)) bad++;
        } else if (back != h) {
            bad++;
        }
    }
    CHECK_MSG(bad == 0, "%d f16 patterns do not round-trip", bad);
    CHECK_MSG(bad_value == 0, "%d f16 patterns convert to the wrong f32", bad_value);
}

static void test_bf16_all(void)
{
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = k22_bf16_to_f32((uint16_t)h);
        if (bits(f) != h << 16) bad++;
        uint16_t back = k22_f32_to_bf16(f);
        int nan = (h & 0x7f80) == 0x7f80 && (h & 0x7f);
        if (nan ? !((back & 0x7f80) == 0x7f80 && (back & 0x7f) && (back & 0x8000) == (h & 0x8000)) : back != h)
            bad++;
    }
    CHECK_MSG(bad == 0, "%d bf16 patterns do not round-trip", bad);
}

/* Expected bits written from a one-off run of numpy 2.4.6 (np.float32 -> np.float16) and torch
 * 2.15.0 (float32 -> bfloat16) in the reference venv: ties, carries into the exponent, the
 * overflow threshold 65520, the subnormal range and its rounding to zero. */
static const uint32_t round_cases[][3] = {
    {0x00000000, 0x0000, 0x0000},
    {0x80000000, 0x8000, 0x8000},
    {0x3f800000, 0x3c00, 0x3f80},
    {0x3f801000, 0x3c00, 0x3f80},
    {0x3f802000, 0x3c01, 0x3f80},
    {0x3f803000, 0x3c02, 0x3f80},
    {0x3f801001, 0x3c01, 0x3f80},
    {0x3f802001, 0x3c01, 0x3f80},
    {0x3f800fff, 0x3c00, 0x3f80},
    {0x477fe000, 0x7bff, 0x4780},
    {0x477fefff, 0x7bff, 0x4780},
    {0x477ff000, 0x7c00, 0x4780},
    {0x477ff001, 0x7c00, 0x4780},
    {0x47800000, 0x7c00, 0x4780},
    {0x7f7fffff, 0x7c00, 0x7f80},
    {0x7f800000, 0x7c00, 0x7f80},
    {0xff800000, 0xfc00, 0xff80},
    {0x38800000, 0x0400, 0x3880},
    {0x387fffff, 0x0400, 0x3880},
    {0x38000000, 0x0200, 0x3800},
    {0x33800000, 0x0001, 0x3380},
    {0x33800001, 0x0001, 0x3380},
    {0x33000000, 0x0000, 0x3300},
    {0x33000001, 0x0001, 0x3300},
    {0x32ffffff, 0x0000, 0x3300},
    {0x33c00000, 0x0002, 0x33c0},
    {0x34200000, 0x0002, 0x3420},
    {0x34100000, 0x0002, 0x3410},
    {0x34300000, 0x0003, 0x3430},
    {0x387fc000, 0x03ff, 0x3880},
    {0x387fe000, 0x0400, 0x3880},
    {0x387ff000, 0x0400, 0x3880},
    {0x00000001, 0x0000, 0x0000},
    {0x807fffff, 0x8000, 0x8080},
    {0x3eaaaaab, 0x3555, 0x3eab},
    {0xc0490fdb, 0xc248, 0xc049},
    {0x3dcccccd, 0x2e66, 0x3dcd},
    {0x4b800001, 0x7c00, 0x4b80},
    {0x3f7fffff, 0x3c00, 0x3f80},
    {0xbf808000, 0xbc04, 0xbf80},
    {0xbf818000, 0xbc0c, 0xbf82},
    {0x3f808000, 0x3c04, 0x3f80},
    {0x3f818000, 0x3c0c, 0x3f82},
    {0x3f80c000, 0x3c06, 0x3f81},
    {0x7f7f8000, 0x7c00, 0x7f80},
    {0x7f7f7fff, 0x7c00, 0x7f7f},
    {0x7f7fc000, 0x7c00, 0x7f80},
    {0x33ffffff, 0x0002, 0x3400},
    {0x387ff001, 0x0400, 0x3880},
};

static void test_rounding(void)
{
    int n = (int)(sizeof round_cases / sizeof round_cases[0]);
    for (int i = 0; i < n; i++) {
        float f = from_bits(round_cases[i][0]);
        uint16_t h = k22_f32_to_f16(f), b = k22_f32_to_bf16(f);
        CHECK_MSG(h == round_cases[i][1], "f16(0x%08x) = 0x%04x, numpy 0x%04x", round_cases[i][0], h,
                  round_cases[i][1]);
        CHECK_MSG(b == round_cases[i][2], "bf16(0x%08x) = 0x%04x, torch 0x%04x", round_cases[i][0], b,
                  round_cases[i][2]);
    }
    /* NaN in f32 stays NaN in both. */
    float nan = from_bits(0x7fc00001u);
    CHECK(isnan(k22_f16_to_f32(k22_f32_to_f16(nan))));
    CHECK(isnan(k22_bf16_to_f32(k22_f32_to_bf16(nan))));
    CHECK(isnan(k22_bf16_to_f32(k22_f32_to_bf16(from_bits(0x7f800001u))))); /* signalling NaN */
}

/* Every dtype through k22_convert_from_f32 / k22_convert_to_f32, including unaligned buffers. */
static void test_convert(void)
{
    const float src[8] = {0.0f, 1.0f, -2.5f, 3.75f, 255.0f, -0.0f, 100.5f, 7.0f};
    for (int t = 0; t < K22_DTYPE_COUNT; t++) {
        uint8_t raw[8 * 8 + 1];
        float back[8];
        k22_convert_from_f32(raw + 1, (k22_dtype)t, src, 8); /* raw+1: misaligned on purpose */
        k22_convert_to_f32(back, raw + 1, (k22_dtype)t, 8);
        for (int i = 0; i < 8; i++) {
            float want = src[i];
            if (t == K22_DTYPE_I64 || t == K22_DTYPE_I32) want = truncf(src[i]);
            if (t == K22_DTYPE_U8) want = src[i] < 0 ? 0 : truncf(src[i]);
            if (t == K22_DTYPE_BOOL) want = src[i] != 0;
            CHECK_MSG(back[i] == want, "%s: %g -> %g, want %g", k22_dtype_name((k22_dtype)t), src[i], back[i], want);
        }
    }
    /* Saturation instead of undefined behaviour. */
    const float big[4] = {1e30f, -1e30f, NAN, 300.0f};
    int32_t i32[4];
    uint8_t u8[4];
    int64_t i64[4];
    k22_convert_from_f32(i32, K22_DTYPE_I32, big, 4);
    k22_convert_from_f32(u8, K22_DTYPE_U8, big, 4);
    k22_convert_from_f32(i64, K22_DTYPE_I64, big, 4);
    CHECK(i32[0] == INT32_MAX && i32[1] == INT32_MIN && i32[2] == 0 && i32[3] == 300);
    CHECK(u8[0] == 255 && u8[1] == 0 && u8[2] == 0 && u8[3] == 255);
    CHECK(i64[0] == INT64_MAX && i64[1] == INT64_MIN && i64[2] == 0 && i64[3] == 300);
    /* Large integers convert by value (rounded to the nearest f32). */
    int64_t iv = (1LL << 40) + 3;
    float fv;
    k22_convert_to_f32(&fv, &iv, K22_DTYPE_I64, 1);
    CHECK(fv == 1099511627776.0f);
}

int main(void)
{
    test_names();
    test_numel();
    test_f16_all();
    test_bf16_all();
    test_rounding();
    test_convert();
    return k22_test_finish("test_dtype");
}
