/* fuzz_webdataset.c: libFuzzer entry for the WebDataset tar reader over memory. Any input must
 * end in OK or an error, never a crash, leak or a member read past its cap; every record has
 * image bytes within the cap and a caption obeying the caption rules. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "k22/captions.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    k22_captions_opts o;
    k22_captions_opts_default(&o);
    o.max_member_bytes = 4096; /* small caps so the over-cap paths are reached */
    o.max_caption_bytes = 256;
    k22_caption_set s;
    k22_caption_set_init(&s);
    k22_err err;
    char why[256];
    if (k22_wds_read_buf(data, size, "fuzz.tar", &o, &s, &err) == K22_OK) {
        for (size_t i = 0; i < s.nrecs; i++) {
            const k22_caption_rec *r = &s.recs[i];
            if (!r->name || !r->source || r->ncaptions != 1 || r->image_len > o.max_member_bytes ||
                (r->image_len && !r->image))
                abort();
            if (!k22_caption_check(r->captions[0], strlen(r->captions[0]), o.max_caption_bytes, why, sizeof why))
                abort();
        }
        for (size_t i = 0; i < s.nrejects; i++)
            if (!s.rejects[i].source || !s.rejects[i].reason) abort();
    }
    k22_caption_set_free(&s);
    return 0;
}
