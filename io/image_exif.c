/* image_exif.c: the one EXIF fact k22 needs, the orientation tag (0x0112) of IFD0, read from a
 * TIFF-structured block with every offset checked against the block's length. */
#include "k22/image.h"

#include <stdio.h>
#include <string.h>

static unsigned exif_u16(const uint8_t *p, int big)
{
    return big ? (unsigned)p[0] << 8 | p[1] : (unsigned)p[1] << 8 | p[0];
}

static uint32_t exif_u32(const uint8_t *p, int big)
{
    return big ? (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]
               : (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

static int exif_bad(char *msg, size_t n, const char *what, size_t a, size_t b)
{
    if (msg && n) snprintf(msg, n, what, a, b);
    return -1;
}

int k22_exif_orientation(const uint8_t *exif, size_t len, char *msg, size_t n)
{
    if (len >= 6 && !memcmp(exif, "Exif\0\0", 6)) {
        exif += 6;
        len -= 6;
    }
    if (len < 8) return exif_bad(msg, n, "EXIF block has %zu bytes, need at least %zu", len, 8);
    int big;
    if (!memcmp(exif, "II*\0", 4))
        big = 0;
    else if (!memcmp(exif, "MM\0*", 4))
        big = 1;
    else
        return exif_bad(msg, n, "EXIF byte-order mark is not II*/MM* (at byte %zu of %zu)", 0, len);
    /* IFD0: a 2-byte entry count, then 12-byte entries (tag, type, count, value/offset). */
    size_t ifd = exif_u32(exif + 4, big);
    if (ifd > len || len - ifd < 2)
        return exif_bad(msg, n, "EXIF IFD0 offset %zu is outside the %zu-byte block", ifd, len);
    size_t count = exif_u16(exif + ifd, big);
    if (count > (len - ifd - 2) / 12)
        return exif_bad(msg, n, "EXIF IFD0 declares %zu entries but the block has room for %zu",
                        count, (len - ifd - 2) / 12);
    for (size_t i = 0; i < count; i++) {
        const uint8_t *e = exif + ifd + 2 + 12 * i;
        if (exif_u16(e, big) != 0x0112) continue;
        unsigned type = exif_u16(e + 2, big);
        uint32_t cnt = exif_u32(e + 4, big);
        if (type != 3 || cnt != 1)
            return exif_bad(msg, n, "EXIF orientation has type %zu count %zu, expected SHORT x 1",
                            type, cnt);
        unsigned v = exif_u16(e + 8, big);
        /* Values outside 1..8 are treated as absent, as PIL's exif_transpose does. */
        return v >= 1 && v <= 8 ? (int)v : 0;
    }
    return 0;
}
