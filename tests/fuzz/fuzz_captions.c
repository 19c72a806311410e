/* fuzz_captions.c: libFuzzer entry for the metadata.jsonl and metadata.csv parsers. The first
 * input byte picks the caption cap and the columns, the rest is the file. Any input must give
 * OK or an error, never a crash or leak, and every record handed out must obey the caption
 * rules (valid UTF-8, within the cap, not blank) with a non-empty name and a source. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "k22/captions.h"

static void check_set(const k22_caption_set *s, const k22_captions_opts *o)
{
    char why[256];
    for (size_t i = 0; i < s->nrecs; i++) {
        const k22_caption_rec *r = &s->recs[i];
        if (!r->name || !r->name[0] || !r->source || r->ncaptions < 1) abort();
        for (int k = 0; k < r->ncaptions; k++)
            if (!k22_caption_check(r->captions[k], strlen(r->captions[k]), o->max_caption_bytes,
                                   why, sizeof why))
                abort();
    }
    for (size_t i = 0; i < s->nrejects; i++)
        if (!s->rejects[i].source || !s->rejects[i].reason || !s->rejects[i].reason[0]) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    k22_captions_opts o;
    k22_captions_opts_default(&o);
    o.max_caption_bytes = (data[0] & 1) ? 64 : K22_CAPTION_MAX_BYTES_DEFAULT;
    if (data[0] & 2) o.caption_column = "caption";
    const char *buf = (const char *)data + 1;
    size--;
    k22_caption_set s;
    k22_caption_set_init(&s);
    k22_err err;
    if (k22_captions_parse_jsonl(buf, size, "fuzz/metadata.jsonl", &o, &s, &err) == K22_OK) check_set(&s, &o);
    k22_caption_set_free(&s);
    if (k22_captions_parse_csv(buf, size, "fuzz/metadata.csv", &o, &s, &err) == K22_OK) check_set(&s, &o);
    k22_caption_set_free(&s);
    return 0;
}
