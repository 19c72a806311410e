/* tokenizer_unicode.c: lookups on the generated Unicode tables and NFC (UAX #15: full canonical
 * decomposition, canonical ordering, canonical composition) as the CLIP tokenizer's normalizer
 * applies it. */
#include "io/unicode_tables.h"

#include <string.h>

/* Binary search over inclusive {first, last} ranges (stride 2) or {first, last, x} rows (3). */
static int range_find(const uint32_t *t, int rows, int stride, uint32_t c)
{
    int lo = 0, hi = rows - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        if (c < t[mid * stride]) hi = mid - 1;
        else if (c > t[mid * stride + 1]) lo = mid + 1;
        else return mid;
    }
    return -1;
}

int k22_uni_is_letter(uint32_t c)
{
    if (c < 0x80) return (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
    return range_find(k22_uni_letter, k22_uni_letter_len, 2, c) >= 0;
}

int k22_uni_is_number(uint32_t c)
{
    if (c < 0x80) return c >= '0' && c <= '9';
    return range_find(k22_uni_number, k22_uni_number_len, 2, c) >= 0;
}

int k22_uni_is_space(uint32_t c)
{
    if (c < 0x80) return c == ' ' || (c >= 0x09 && c <= 0x0D);
    return range_find(k22_uni_space, k22_uni_space_len, 2, c) >= 0;
}

int k22_uni_lower_of(uint32_t c, uint32_t out[2])
{
    out[0] = c;
    if (c < 0x80) {
        if (c >= 'A' && c <= 'Z') out[0] = c + 32;
        return 1;
    }
    for (int i = 0; i < k22_uni_lower2_len; i++)
        if (k22_uni_lower2[3 * i] == c) {
            out[0] = k22_uni_lower2[3 * i + 1];
            out[1] = k22_uni_lower2[3 * i + 2];
            return 2;
        }
    /* the last run starting at or before c */
    int lo = 0, hi = k22_uni_lower_len - 1, found = -1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        if ((uint32_t)k22_uni_lower[4 * mid] <= c) {
            found = mid;
            lo = mid + 1;
        } else {
            hi = mid - 1;
        }
    }
    if (found < 0) return 1;
    const int32_t *r = &k22_uni_lower[4 * found];
    uint32_t off = c - (uint32_t)r[0];
    if (off % (uint32_t)r[2] == 0 && off / (uint32_t)r[2] < (uint32_t)r[1])
        out[0] = (uint32_t)((int32_t)c + r[3]);
    return 1;
}

int k22_uni_ccc_of(uint32_t c)
{
    if (c < 0x300) return 0;
    int i = range_find(k22_uni_ccc, k22_uni_ccc_len, 3, c);
    return i < 0 ? 0 : (int)k22_uni_ccc[3 * i + 2];
}

enum {
    HANGUL_S = 0xAC00, HANGUL_L = 0x1100, HANGUL_V = 0x1161, HANGUL_T = 0x11A7,
    HANGUL_LN = 19, HANGUL_VN = 21, HANGUL_TN = 28,
    HANGUL_NN = HANGUL_VN * HANGUL_TN, HANGUL_SN = HANGUL_LN * HANGUL_NN
};

static int decomp_find(uint32_t c)
{
    int lo = 0, hi = k22_uni_decomp_len - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        uint32_t k = k22_uni_decomp[3 * mid];
        if (k == c) return mid;
        if (k < c) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}

/* Appends the full canonical decomposition of c at out[n]; returns the new length. Table
 * entries decompose one level, so recurse (depth is bounded by the data: at most 4). */
static size_t decompose(uint32_t c, uint32_t *out, size_t n, int depth)
{
    if (c >= HANGUL_S && c < HANGUL_S + HANGUL_SN) {
        uint32_t i = c - HANGUL_S;
        out[n++] = HANGUL_L + i / HANGUL_NN;
        out[n++] = HANGUL_V + (i % HANGUL_NN) / HANGUL_TN;
        if (i % HANGUL_TN) out[n++] = HANGUL_T + i % HANGUL_TN;
        return n;
    }
    int k = c < 0xC0 || depth > 4 ? -1 : decomp_find(c);
    if (k < 0) {
        out[n++] = c;
        return n;
    }
    n = decompose(k22_uni_decomp[3 * k + 1], out, n, depth + 1);
    if (k22_uni_decomp[3 * k + 2]) n = decompose(k22_uni_decomp[3 * k + 2], out, n, depth + 1);
    return n;
}

/* Stable sort of a run of non-starters by combining class. Short runs (the normal case) use
 * insertion sort; long adversarial runs use a counting pass so the cost stays linear. */
static void order_run(uint32_t *s, size_t n, uint32_t *tmp)
{
    if (n <= 16) {
        for (size_t i = 1; i < n; i++) {
            uint32_t c = s[i];
            int k = k22_uni_ccc_of(c);
            size_t j = i;
            while (j > 0 && k22_uni_ccc_of(s[j - 1]) > k) {
                s[j] = s[j - 1];
                j--;
            }
            s[j] = c;
        }
        return;
    }
    size_t start[257] = {0};
    for (size_t i = 0; i < n; i++) start[k22_uni_ccc_of(s[i]) + 1]++;
    for (int k = 1; k < 257; k++) start[k] += start[k - 1];
    for (size_t i = 0; i < n; i++) tmp[start[k22_uni_ccc_of(s[i])]++] = s[i];
    memcpy(s, tmp, n * sizeof *s);
}

static int compose_pair(uint32_t a, uint32_t b, uint32_t *out)
{
    if (a >= HANGUL_L && a < HANGUL_L + HANGUL_LN && b >= HANGUL_V && b < HANGUL_V + HANGUL_VN) {
        *out = HANGUL_S + ((a - HANGUL_L) * HANGUL_VN + (b - HANGUL_V)) * HANGUL_TN;
        return 1;
    }
    if (a >= HANGUL_S && a < HANGUL_S + HANGUL_SN && (a - HANGUL_S) % HANGUL_TN == 0 &&
        b > HANGUL_T && b < HANGUL_T + HANGUL_TN) {
        *out = a + (b - HANGUL_T);
        return 1;
    }
    int lo = 0, hi = k22_uni_comp_len - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        uint32_t x = k22_uni_comp[3 * mid], y = k22_uni_comp[3 * mid + 1];
        if (x == a && y == b) {
            *out = k22_uni_comp[3 * mid + 2];
            return 1;
        }
        if (x < a || (x == a && y < b)) lo = mid + 1;
        else hi = mid - 1;
    }
    return 0;
}

size_t k22_uni_nfc(const uint32_t *in, size_t n, uint32_t *out, uint32_t *tmp)
{
    size_t m = 0;
    for (size_t i = 0; i < n; i++) m = decompose(in[i], tmp, m, 0);
    for (size_t i = 0; i < m;) {
        if (k22_uni_ccc_of(tmp[i]) == 0) {
            i++;
            continue;
        }
        size_t j = i;
        while (j < m && k22_uni_ccc_of(tmp[j]) != 0) j++;
        order_run(tmp + i, j - i, out);
        i = j;
    }
    if (m == 0) return 0;
    /* composition: a character joins the last starter unless something between them has class
     * 0 or a class not below its own (last == 0 means it is adjacent to the starter) */
    size_t r = 1, starter = 0;
    out[0] = tmp[0];
    int last = k22_uni_ccc_of(tmp[0]) == 0 ? 0 : 256;
    for (size_t i = 1; i < m; i++) {
        uint32_t c = tmp[i], comp;
        int k = k22_uni_ccc_of(c);
        if ((last < k || last == 0) && compose_pair(out[starter], c, &comp)) {
            out[starter] = comp;
            continue;
        }
        if (k == 0) starter = r;
        last = k;
        out[r++] = c;
    }
    return r;
}
