/* pack_h5_describe.c: what `k22 inspect data.h5` prints about a pack. */
#include "pack_h5_internal.h"

#include <stdio.h>
#include <stdlib.h>

static void describe_dataset(hid_t ds, const char *name, const k22_pack_meta *m, k22_pack_field f)
{
    hsize_t d[H5S_MAX_RANK], ch[H5S_MAX_RANK];
    hid_t sp = H5Dget_space(ds), pl = H5Dget_create_plist(ds);
    int r = H5Sget_simple_extent_ndims(sp);
    H5Sget_simple_extent_dims(sp, d, NULL);
    int cr = H5Pget_layout(pl) == H5D_CHUNKED ? H5Pget_chunk(pl, H5S_MAX_RANK, ch) : 0;
    char shape[128], chunk[128];
    k22_ph_fmt_dims(shape, sizeof shape, r, d, 0);
    if (cr > 0) k22_ph_fmt_dims(chunk, sizeof chunk, cr, ch, 0);
    else snprintf(chunk, sizeof chunk, "none");
    const char *ty = k22_ph_is_string(f) ? "utf-8 string" : f == K22_PACK_INPUT_IDS ? "int32"
                   : f == K22_PACK_ATTENTION_MASK ? "uint8" : k22_dtype_name(m->dtype);
    printf("  dataset %-16s %-22s %-12s chunk %s\n", name, shape, ty, chunk);
    H5Pclose(pl);
    H5Sclose(sp);
}

k22_status k22_pack_describe(const char *path, k22_err *err)
{
    k22_pack *p = NULL;
    k22_status st = k22_pack_open(path, &p, err);
    if (st) return st;
    const k22_pack_meta *m = &p->m;
    printf("pack %s: %lld rows, %lld rejected, %lld inputs committed\n", path, (long long)p->counts[0],
           (long long)p->counts[1], (long long)p->counts[2]);
    printf("  format_version %d  k22_version %s  created %s\n", m->format_version, m->k22_version, m->created);
    printf("  for %s  dtype %s  embed_dim %d  tokens %d  resolution %d  latent_factor %d  latents %dx%dx%d\n",
           k22_pack_for_name(m->use), k22_dtype_name(m->dtype), m->embed_dim, K22_PACK_TOKENS, m->resolution,
           m->latent_factor, m->latent_channels, m->resolution / m->latent_factor, m->resolution / m->latent_factor);
    printf("  preprocessing: %s\n", m->preprocessing);
    for (int i = 0; i < m->n_models; i++)
        printf("  source model %-14s %s  sha256 %s\n", m->models[i].name, m->models[i].path, m->models[i].sha256);
    for (int f = 0; f < K22_PACK_FIELD_COUNT; f++)
        if (p->ds[f] >= 0) describe_dataset(p->ds[f], k22_ph_field_names[f], m, (k22_pack_field)f);
    describe_dataset(p->rej[0], "rejected_source", m, K22_PACK_SOURCE);
    describe_dataset(p->rej[1], "rejected_reason", m, K22_PACK_SOURCE);
    for (int64_t i = 0; i < p->counts[1] && !st; i++) {
        char *s = NULL, *r = NULL;
        st = k22_pack_read_rejected(p, i, &s, &r, err);
        if (!st) printf("  rejected %s: %s\n", s, r);
        free(s);
        free(r);
    }
    k22_pack_close(p);
    return st;
}
