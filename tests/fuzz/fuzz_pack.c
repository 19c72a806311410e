/* fuzz_pack.c: libFuzzer target for the pack reader on an in-memory HDF5 image. Whatever the
 * checks accept must be readable in full (every numeric dataset, every string, every rejection)
 * without a crash, and the counts must agree with the meta; a refusal must name the buffer.
 * Violations abort, so the fuzzer and the corpus replay both report them. The corpus
 * (tests/fuzz/corpus/pack) holds small packs the writer made, for prior, decoder and both, fp32
 * and fp16, and damaged copies (missing datasets and attributes, wrong shapes and types,
 * truncations). Known limit: a libFuzzer run stops within a minute or two inside HDF5 1.10.8
 * itself (Debian's libhdf5): out-of-bounds reads in H5O__msg_iterate_real under H5Aexists and in
 * H5VM_memcpyvv under H5Dread, multi-GB allocations in H5T__conv_vlen, hangs in H5HG__protect,
 * leaks when H5Fopen/H5Dopen2 fail. So a pack is trusted input (one k22 wrote); k22's checks
 * catch a well-formed HDF5 file of the wrong shape, not hostile HDF5 metadata. */
#include "k22/pack.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ROW_CAP 64 /* rows read per dataset: enough to cross chunk borders, bounded time */

static void require(int ok, const char *what)
{
    if (ok) return;
    fprintf(stderr, "fuzz_pack: property violated: %s\n", what);
    abort();
}

static void read_all(k22_pack *p)
{
    const k22_pack_meta *m = k22_pack_meta_of(p);
    int64_t n = k22_pack_rows(p);
    if (n > ROW_CAP) n = ROW_CAP;
    k22_err err;
    for (int f = 0; f < K22_PACK_FIELD_COUNT; f++) {
        if (!k22_pack_for_has(m->use, (k22_pack_field)f)) {
            float x;
            require(k22_pack_read(p, (k22_pack_field)f, 0, 0, &x, &err) == K22_ERR_ARG, "absent field refused");
            continue;
        }
        if (f == K22_PACK_CAPTION || f == K22_PACK_SOURCE) {
            for (int64_t r = 0; r < n; r++) {
                char *s = NULL;
                if (k22_pack_read_strings(p, (k22_pack_field)f, r, 1, &s, &err) == K22_OK) {
                    require(s != NULL, "string read gives a string");
                    free(s);
                }
            }
            continue;
        }
        int64_t row = k22_pack_row_numel(m, (k22_pack_field)f);
        require(row > 0, "row size positive");
        size_t bytes = (size_t)row * 4 * (size_t)(n ? n : 1);
        if (bytes > ((size_t)64 << 20)) continue; /* legal but huge (fill-value chunks): skip */
        void *buf = malloc(bytes);
        require(buf != NULL, "allocation");
        k22_pack_read(p, (k22_pack_field)f, 0, n, buf, &err);
        free(buf);
    }
    int64_t nr = k22_pack_rejected(p);
    for (int64_t i = 0; i < nr && i < ROW_CAP; i++) {
        char *s = NULL, *why = NULL;
        if (k22_pack_read_rejected(p, i, &s, &why, &err) == K22_OK) require(s && why, "rejection read");
        free(s);
        free(why);
    }
    char *s = NULL;
    require(k22_pack_read_strings(p, K22_PACK_CAPTION, k22_pack_rows(p), 1, &s, &err) == K22_ERR_ARG,
            "a row past the committed ones is refused");
    k22_pack_want w = {m->use, m->embed_dim, m->resolution, m->latent_channels,
                       m->n_models ? m->models[0].sha256 : NULL, m->latent_factor};
    require(m->latent_factor >= 1 && m->latent_factor <= 64 && m->resolution % m->latent_factor == 0,
            "an accepted pack has a usable latent factor");
    require(k22_pack_check_compatible(p, &w, &err) == K22_OK, "a pack is compatible with its own meta");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    k22_pack *p = NULL;
    k22_err err;
    k22_err_clear(&err);
    k22_status st = k22_pack_open_mem("fuzz.h5", data, size, &p, &err);
    if (st) {
        require(p == NULL, "no handle on failure");
        require(strstr(err.msg, "fuzz.h5") != NULL, "error names the buffer");
        return 0;
    }
    read_all(p);
    k22_pack_close(p);
    return 0;
}
