/* image_webp.c: WebP (lossy, lossless, with alpha, animated) through libwebp's animation
 * decoder, the path Pillow takes for every WebP file: the first frame composed on the canvas
 * as RGBA, alpha then dropped without compositing. The EXIF chunk is read through the demuxer. */
#include "image_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <webp/decode.h>
#include <webp/demux.h>

static void webp_find_exif(const WebPData *data, k22_image_ctx *c, k22_image *out)
{
    WebPDemuxer *dmx = WebPDemux(data);
    if (!dmx) return;
    WebPChunkIterator it;
    if (WebPDemuxGetChunk(dmx, "EXIF", 1, &it)) {
        k22_image_note_exif(c, it.chunk.bytes, it.chunk.size, out);
        WebPDemuxReleaseChunkIterator(&it);
    }
    WebPDemuxDelete(dmx);
}

k22_status k22_image_decode_webp(const uint8_t *buf, size_t len, k22_image_ctx *c, k22_image *out,
                                 k22_err *err)
{
    WebPBitstreamFeatures feat;
    VP8StatusCode vs = WebPGetFeatures(buf, len, &feat);
    if (vs != VP8_STATUS_OK)
        return k22_err_set(err, K22_ERR_FORMAT, "%s: WebP header unreadable (libwebp status %d%s)",
                           c->name, (int)vs, vs == VP8_STATUS_NOT_ENOUGH_DATA ? ": file truncated" : "");
    k22_status st = k22_image_check_size(c, feat.width, feat.height, err);
    if (st) return st;
    WebPData data = {buf, len};
    WebPAnimDecoderOptions dopt;
    if (!WebPAnimDecoderOptionsInit(&dopt))
        return k22_err_set(err, K22_ERR_INTERNAL, "%s: libwebp version mismatch", c->name);
    dopt.color_mode = MODE_RGBA;
    dopt.use_threads = 0;
    WebPAnimDecoder *dec = WebPAnimDecoderNew(&data, &dopt);
    if (!dec)
        return k22_err_set(err, K22_ERR_FORMAT, "%s: WebP container is malformed or truncated",
                           c->name);
    WebPAnimInfo ai;
    uint8_t *rgba = NULL;
    int ts = 0;
    if (!WebPAnimDecoderGetInfo(dec, &ai)) {
        st = k22_err_set(err, K22_ERR_FORMAT, "%s: WebP info unreadable", c->name);
        goto out;
    }
    out->frames = (int)ai.frame_count;
    if (ai.frame_count > 1 && !c->opts->allow_animated) {
        st = k22_err_set(err, K22_ERR_UNSUPPORTED, "%s: animated WebP (%u frames) refused",
                         c->name, ai.frame_count);
        goto out;
    }
    st = k22_image_check_size(c, ai.canvas_width, ai.canvas_height, err);
    if (st) goto out;
    if (!WebPAnimDecoderGetNext(dec, &rgba, &ts) || !rgba) {
        st = k22_err_set(err, K22_ERR_FORMAT, "%s: WebP image data is corrupt or truncated",
                         c->name);
        goto out;
    }
    st = k22_image_alloc(c, ai.canvas_width, ai.canvas_height, out, err);
    if (st) goto out;
    size_t n = (size_t)out->width * out->height;
    for (size_t i = 0; i < n; i++) memcpy(out->rgb + 3 * i, rgba + 4 * i, 3);
    out->src_channels = feat.has_alpha ? 4 : 3;
    out->src_bits = 8;
    webp_find_exif(&data, c, out);
out:
    WebPAnimDecoderDelete(dec);
    return st;
}
