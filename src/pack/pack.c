/* pack.c: `k22 pack` (packer.h): records -> decode -> preprocess -> frozen encoders -> HDF5
 * rows, chunk by chunk over MPI ranks, rank 0 writing in input order. */
#include "k22/packer.h"

#include "k22/arena.h"
#include "k22/captions.h"
#include "k22/clip.h"
#include "k22/diffusers.h"
#include "k22/fsutil.h"
#include "k22/image.h"
#include "k22/movq.h"
#include "k22/preprocess.h"
#include "k22/tokenizer.h"

#include <mpi.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define REASON_BYTES 512

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* The frozen models of one rank, on one backend. */
typedef struct {
    k22_backend *be;
    k22_tokenizer *tok;
    k22_model_config tcfg, vcfg, mcfg;
    k22_params tps, vps, mps;
    float *tP, *vP, *mP; /* device weights */
    k22_clip_text text;
    k22_clip_vision vision;
    k22_movq movq;
    int have_text, have_vision, have_movq;
    k22_arena ar;
} models;

/* One slot of the gather buffer: an input's result, fixed size so ranks gather with one call. */
typedef struct {
    size_t off_ids, off_mask, off_te, off_th, off_ie, off_lat, bytes;
    int64_t E, L; /* embed dim, latent floats */
} slot_layout;

static void layout_init(slot_layout *s, int64_t E, int64_t L)
{
    size_t o = 8 + REASON_BYTES; /* int32 ok + pad, reason */
    s->E = E, s->L = L;
    s->off_ids = o, o += 77 * 4;
    s->off_mask = o, o += 80;
    s->off_te = o, o += (size_t)E * 4;
    s->off_th = o, o += (size_t)(77 * E) * 4;
    s->off_ie = o, o += (size_t)E * 4;
    s->off_lat = o, o += (size_t)L * 4;
    s->bytes = (o + 63) & ~(size_t)63;
}

static k22_status load_component(models *m, const k22_backend *be, const char *dir, const char *sub,
                                 k22_model_kind want, k22_model_config *cfg, k22_params *ps,
                                 float **P, k22_pack_meta *meta, k22_err *err)
{
    char path[1100], wpath[1100];
    snprintf(path, sizeof path, "%s/%s", dir, sub);
    k22_status st = k22_component_load(path, cfg, ps, err);
    if (st) return st;
    if (cfg->kind != want)
        return k22_err_set(err, K22_ERR_FORMAT, "%s: config.json is a %s, expected %s", path,
                           k22_model_class_name(cfg->kind), k22_model_class_name(want));
    st = k22_component_weights_path(path, want, wpath, sizeof wpath, err);
    if (st) return st;
    if (meta->n_models >= K22_PACK_MAX_MODELS) return k22_err_set(err, K22_ERR_INTERNAL, "too many models");
    k22_pack_model *pm = &meta->models[meta->n_models];
    snprintf(pm->name, sizeof pm->name, "%s", sub);
    if (strlen(wpath) >= sizeof pm->path)
        return k22_err_set(err, K22_ERR_ARG, "%.200s...: path over %zu bytes", wpath, sizeof pm->path - 1);
    memcpy(pm->path, wpath, strlen(wpath) + 1);
    st = k22_fs_sha256(wpath, pm->sha256, err);
    if (st) return st;
    meta->n_models++;
    *P = be->alloc(be->ctx, ps->total * sizeof(float));
    be->to_device(be->ctx, *P, ps->data, ps->total * sizeof(float));
    (void)m;
    return K22_OK;
}

static void models_free(models *m)
{
    const k22_backend *be = m->be;
    if (!be) return;
    if (m->have_text) k22_clip_text_free(&m->text);
    if (m->have_vision) k22_clip_vision_free(&m->vision);
    if (m->have_movq) k22_movq_free(&m->movq);
    if (m->tP) be->free(be->ctx, m->tP);
    if (m->vP) be->free(be->ctx, m->vP);
    if (m->mP) be->free(be->ctx, m->mP);
    k22_params_free(&m->tps), k22_params_free(&m->vps), k22_params_free(&m->mps);
    if (m->ar.base) k22_arena_free(&m->ar);
    k22_tokenizer_free(m->tok);
    k22_backend_free(m->be);
    memset(m, 0, sizeof *m);
}

/* Loads what o->use needs and fills meta's dims and model list. */
static k22_status models_load(models *m, const k22_packer_opts *o, k22_pack_meta *meta, k22_err *err)
{
    memset(m, 0, sizeof *m);
    k22_params_init(&m->tps), k22_params_init(&m->vps), k22_params_init(&m->mps);
    m->be = k22_backend_open(o->device ? o->device : "cpu", k22_precision_name(o->precision), err);
    if (!m->be) return err->code ? err->code : K22_ERR_ARG;
    const k22_backend *be = m->be;
    char path[1100];
    k22_status st = K22_OK;
    if (o->use & K22_PACK_FOR_PRIOR) {
        snprintf(path, sizeof path, "%s/tokenizer", o->prior_dir);
        st = k22_tokenizer_load_dir(path, &m->tok, err);
        if (!st) st = load_component(m, be, o->prior_dir, "text_encoder", K22_MODEL_CLIP_TEXT, &m->tcfg,
                                     &m->tps, &m->tP, meta, err);
        if (st) return st;
        k22_clip_text_init(&m->text, &m->tcfg.u.clip_text, &m->tps, m->tP);
        m->have_text = 1;
        if (k22_tokenizer_vocab_size(m->tok) > m->tcfg.u.clip_text.vocab_size)
            return k22_err_set(err, K22_ERR_FORMAT, "%s: tokenizer has %d ids but the text encoder's vocab_size is %d",
                               path, (int)k22_tokenizer_vocab_size(m->tok), m->tcfg.u.clip_text.vocab_size);
        if (m->tcfg.u.clip_text.max_position_embeddings < 77)
            return k22_err_set(err, K22_ERR_FORMAT, "%s/text_encoder: max_position_embeddings %d < 77",
                               o->prior_dir, m->tcfg.u.clip_text.max_position_embeddings);
    }
    st = load_component(m, be, o->prior_dir, "image_encoder", K22_MODEL_CLIP_VISION, &m->vcfg, &m->vps,
                        &m->vP, meta, err);
    if (st) return st;
    k22_clip_vision_init(&m->vision, &m->vcfg.u.clip_vision, &m->vps, m->vP);
    m->have_vision = 1;
    const k22_clip_vision_config *vc = &m->vcfg.u.clip_vision;
    if (vc->image_size != 224 || vc->num_channels != 3)
        return k22_err_set(err, K22_ERR_UNSUPPORTED, "%s/image_encoder: image_size %d, num_channels %d; the CLIP image "
                           "processor makes 3 x 224 x 224", o->prior_dir, vc->image_size, vc->num_channels);
    meta->embed_dim = vc->projection_dim;
    if (m->have_text && m->tcfg.u.clip_text.projection_dim != vc->projection_dim)
        return k22_err_set(err, K22_ERR_FORMAT, "%s: text projection_dim %d != image projection_dim %d", o->prior_dir,
                           m->tcfg.u.clip_text.projection_dim, vc->projection_dim);
    if (m->have_text && m->tcfg.u.clip_text.hidden_size != vc->projection_dim)
        return k22_err_set(err, K22_ERR_UNSUPPORTED, "%s: text hidden_size %d != projection_dim %d: the pack format "
                           "stores text_hidden with the embed dim", o->prior_dir, m->tcfg.u.clip_text.hidden_size,
                           vc->projection_dim);
    meta->latent_channels = 4;
    meta->latent_factor = 8; /* a prior pack holds no latents: Kandinsky 2.2's factor is recorded */
    if (o->use & K22_PACK_FOR_DECODER) {
        st = load_component(m, be, o->decoder_dir, "movq", K22_MODEL_MOVQ, &m->mcfg, &m->mps, &m->mP, meta, err);
        if (!st) st = k22_movq_config_check(&m->mcfg.u.movq, err);
        if (st) return st;
        k22_movq_init(&m->movq, &m->mcfg.u.movq, &m->mps, m->mP);
        m->have_movq = 1;
        int f = k22_movq_factor(&m->movq);
        if (f < 1 || f > 64 || (f & (f - 1)))
            return k22_err_set(err, K22_ERR_UNSUPPORTED, "%s/movq: spatial factor %d; the pack stores a power of two "
                               "1..64", o->decoder_dir, f);
        if (o->resolution % f)
            return k22_err_set(err, K22_ERR_ARG, "--resolution %d is not a multiple of the MoVQ's spatial factor %d "
                               "(%s/movq has %d blocks)", o->resolution, f, o->decoder_dir,
                               m->mcfg.u.movq.nblocks);
        meta->latent_factor = f;
        meta->latent_channels = m->mcfg.u.movq.vq_embed_dim;
        if (m->mcfg.u.movq.in_channels != 3)
            return k22_err_set(err, K22_ERR_UNSUPPORTED, "%s/movq: in_channels %d, images have 3", o->decoder_dir,
                               m->mcfg.u.movq.in_channels);
    }
    size_t need = k22_clip_vision_arena_floats(&m->vision, o->batch);
    if (m->have_text) {
        size_t t = k22_clip_text_arena_floats(&m->text, o->batch, 77);
        if (t > need) need = t;
    }
    if (m->have_movq) {
        size_t t = k22_movq_encode_arena_floats(&m->movq, o->batch, o->resolution, o->resolution);
        if (t > need) need = t;
    }
    /* The MoVQ's mid-block attention grows with the square of the pixels: say what to lower
     * rather than die in the allocator. */
    double gib = (double)need * sizeof(float) / (1u << 30);
    long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    if (pages > 0 && psz > 0 && (double)need * sizeof(float) > (double)pages * (double)psz)
        return k22_err_set(err, K22_ERR_ARG, "encoding %d images of %dx%d at once needs %.1f GiB of activations, more "
                           "than this machine's %.1f GiB: lower --batch (or --resolution)", o->batch, o->resolution,
                           o->resolution, gib, (double)pages * (double)psz / (1u << 30));
    k22_arena_init(&m->ar, be, need);
    return K22_OK;
}

/* Reads every input on this rank (cheap next to encoding, and the same on every rank). */
static k22_status read_inputs(const k22_packer_opts *o, k22_caption_set *s, k22_err *err)
{
    k22_captions_opts co;
    k22_captions_opts_default(&co);
    if (o->caption_column) co.caption_column = o->caption_column;
    if (o->image_column) co.image_column = o->image_column;
    if (o->train_data_dir) return k22_captions_read_dir(o->train_data_dir, &co, s, err);
    char *list = k22_xstrdup(o->webdataset), *save = NULL;
    k22_status st = K22_OK;
    for (char *t = strtok_r(list, ",", &save); t && !st; t = strtok_r(NULL, ",", &save))
        if (*t) st = k22_wds_read_file(t, &co, s, err);
    free(list);
    return st;
}

/* Decodes and preprocesses input rec into clip (3,224,224) and dec (3,r,r) (either may be NULL).
 * Returns 0, or -1 with why filled. */
static int prepare_one(const k22_caption_rec *rec, int res, float *clip, float *dec, char *why,
                       double *t_dec, double *t_pre)
{
    k22_image im = {0};
    k22_err e;
    double t0 = now_s();
    k22_status st = rec->file ? k22_image_load(rec->file, NULL, &im, &e)
                              : k22_image_decode(rec->image, rec->image_len, rec->name, NULL, &im, &e);
    double t1 = now_s();
    *t_dec += t1 - t0;
    if (!st) {
        k22_clip_image_cfg cc;
        k22_clip_image_cfg_default(&cc);
        if (clip) st = k22_preprocess_clip(&im, &cc, clip, &e);
        if (!st && dec) st = k22_preprocess_decoder(&im, res, dec, &e);
    }
    *t_pre += now_s() - t1;
    k22_image_free(&im);
    if (st) {
        snprintf(why, REASON_BYTES, "%.500s", e.msg);
        return -1;
    }
    return 0;
}

typedef struct {
    double decode, preprocess, encode;
} rank_times;

/* Encodes this rank's inputs recs[0..n) into slots (n <= batch). */
static k22_status encode_share(models *m, const k22_packer_opts *o, const slot_layout *L,
                               const k22_caption_rec *recs, int n, uint8_t *slots, rank_times *t,
                               k22_err *err)
{
    const k22_backend *be = m->be;
    int res = o->resolution, E = (int)L->E;
    size_t nclip = 3 * 224 * 224, ndec = (size_t)3 * res * res;
    float *clip = k22_xmalloc((size_t)o->batch * nclip * sizeof(float));
    float *dec = m->have_movq ? k22_xmalloc((size_t)o->batch * ndec * sizeof(float)) : NULL;
    int32_t *ids = k22_xcalloc((size_t)o->batch * 77, sizeof(int32_t));
    uint8_t *mask = k22_xcalloc((size_t)o->batch * 77, 1);
    int *at = k22_xmalloc((size_t)o->batch * sizeof(int));
    int B = 0;
    k22_status st = K22_OK;
    memset(slots, 0, (size_t)n * L->bytes);
    for (int j = 0; j < n; j++) {
        uint8_t *s = slots + (size_t)j * L->bytes;
        char *why = (char *)s + 8;
        if (prepare_one(&recs[j], res, clip + (size_t)B * nclip, dec ? dec + (size_t)B * ndec : NULL, why,
                        &t->decode, &t->preprocess))
            continue;
        *(int32_t *)s = 1;
        if (m->have_text) {
            const char *c = recs[j].captions[0];
            k22_tokenizer_encode(m->tok, c, strlen(c), 77, ids + (size_t)B * 77, mask + (size_t)B * 77);
        }
        at[B++] = j;
    }
    if (B == 0) goto out;
    double t0 = now_s();
    size_t mark = k22_arena_mark(&m->ar);
    float *d_emb = be->alloc(be->ctx, (size_t)B * E * sizeof(float));
    float *h_emb = k22_xmalloc((size_t)B * E * sizeof(float));
    float *d_px = be->alloc(be->ctx, (size_t)B * nclip * sizeof(float));
    be->to_device(be->ctx, d_px, clip, (size_t)B * nclip * sizeof(float));
    k22_clip_vision_forward(be, &m->vision, &m->ar, d_px, B, d_emb);
    be->to_host(be->ctx, h_emb, d_emb, (size_t)B * E * sizeof(float));
    for (int b = 0; b < B; b++)
        memcpy(slots + (size_t)at[b] * L->bytes + L->off_ie, h_emb + (size_t)b * E, (size_t)E * 4);
    be->free(be->ctx, d_px);
    if (m->have_text) {
        float *d_h = be->alloc(be->ctx, (size_t)B * 77 * E * sizeof(float));
        float *h_h = k22_xmalloc((size_t)B * 77 * E * sizeof(float));
        st = k22_clip_text_forward(be, &m->text, &m->ar, ids, B, 77, d_h, d_emb, err);
        if (!st) {
            be->to_host(be->ctx, h_h, d_h, (size_t)B * 77 * E * sizeof(float));
            be->to_host(be->ctx, h_emb, d_emb, (size_t)B * E * sizeof(float));
            for (int b = 0; b < B; b++) {
                uint8_t *s = slots + (size_t)at[b] * L->bytes;
                memcpy(s + L->off_ids, ids + (size_t)b * 77, 77 * 4);
                memcpy(s + L->off_mask, mask + (size_t)b * 77, 77);
                memcpy(s + L->off_te, h_emb + (size_t)b * E, (size_t)E * 4);
                memcpy(s + L->off_th, h_h + (size_t)b * 77 * E, (size_t)77 * E * 4);
            }
        }
        be->free(be->ctx, d_h), free(h_h);
    }
    if (!st && m->have_movq) {
        float *d_x = be->alloc(be->ctx, (size_t)B * ndec * sizeof(float));
        float *d_z = be->alloc(be->ctx, (size_t)B * L->L * sizeof(float));
        float *h_z = k22_xmalloc((size_t)B * L->L * sizeof(float));
        be->to_device(be->ctx, d_x, dec, (size_t)B * ndec * sizeof(float));
        k22_movq_encode(be, &m->movq, &m->ar, d_x, B, res, res, d_z);
        be->to_host(be->ctx, h_z, d_z, (size_t)B * L->L * sizeof(float));
        for (int b = 0; b < B; b++)
            memcpy(slots + (size_t)at[b] * L->bytes + L->off_lat, h_z + (size_t)b * L->L, (size_t)L->L * 4);
        be->free(be->ctx, d_x), be->free(be->ctx, d_z), free(h_z);
    }
    be->free(be->ctx, d_emb), free(h_emb);
    k22_arena_reset(&m->ar, mark);
    t->encode += now_s() - t0;
out:
    free(clip), free(dec), free(ids), free(mask), free(at);
    return st;
}

/* Field arrays of up to cap rows for one append. */
typedef struct {
    const char **caption, **source;
    int32_t *ids;
    uint8_t *mask;
    float *te, *th, *ie, *lat;
} rows_buf;

static void rows_alloc(rows_buf *r, const slot_layout *L, int cap)
{
    size_t c = (size_t)cap;
    r->caption = k22_xcalloc(c, sizeof(char *));
    r->source = k22_xcalloc(c, sizeof(char *));
    r->ids = k22_xmalloc(c * 77 * 4);
    r->mask = k22_xmalloc(c * 77);
    r->te = k22_xmalloc(c * (size_t)L->E * 4);
    r->th = k22_xmalloc(c * 77 * (size_t)L->E * 4);
    r->ie = k22_xmalloc(c * (size_t)L->E * 4);
    r->lat = k22_xmalloc(c * (size_t)(L->L ? L->L : 1) * 4);
}

static void rows_free(rows_buf *r)
{
    free(r->caption), free(r->source), free(r->ids), free(r->mask);
    free(r->te), free(r->th), free(r->ie), free(r->lat);
}

/* Rank 0: writes the gathered chunk (inputs recs[0..n), slots in input order) and commits. */
static k22_status write_chunk(k22_pack_writer *w, const slot_layout *L, const k22_caption_rec *recs, int n,
                              const uint8_t *slots, rows_buf *rb, int64_t inputs_after, int64_t *rows,
                              int64_t *rejects, int strict, k22_err *err)
{
    int64_t k = 0;
    k22_status st = K22_OK;
    for (int j = 0; j < n && !st; j++) {
        const uint8_t *s = slots + (size_t)j * L->bytes;
        if (!*(const int32_t *)s) {
            const char *why = (const char *)s + 8;
            if (strict)
                return k22_err_set(err, K22_ERR_FORMAT, "--strict: %s (%s): %s", recs[j].name, recs[j].source, why);
            fprintf(stderr, "k22 pack: skipped %s: %s\n", recs[j].source, why);
            st = k22_pack_writer_reject(w, recs[j].source, why, err);
            (*rejects)++;
            continue;
        }
        rb->caption[k] = recs[j].captions[0];
        rb->source[k] = recs[j].name;
        memcpy(rb->ids + k * 77, s + L->off_ids, 77 * 4);
        memcpy(rb->mask + k * 77, s + L->off_mask, 77);
        memcpy(rb->te + k * L->E, s + L->off_te, (size_t)L->E * 4);
        memcpy(rb->th + k * 77 * L->E, s + L->off_th, (size_t)(77 * L->E) * 4);
        memcpy(rb->ie + k * L->E, s + L->off_ie, (size_t)L->E * 4);
        if (L->L) memcpy(rb->lat + k * L->L, s + L->off_lat, (size_t)L->L * 4);
        k++;
    }
    if (st) return st;
    k22_pack_batch b = {rb->caption, rb->source, rb->ids, rb->mask, rb->te, rb->th, rb->ie, rb->lat};
    if (k) st = k22_pack_writer_append(w, &b, k, err);
    if (!st) st = k22_pack_writer_commit(w, inputs_after, err);
    *rows += k;
    return st;
}

static void describe_preprocessing(const k22_packer_opts *o, char *out, size_t n)
{
    char gemm[96] = "";
    if (o->precision != K22_PREC_FP32) /* fp32 packs keep the text they always had */
        snprintf(gemm, sizeof gemm, "; encoders: %s GEMM operands, fp32 accumulation", k22_precision_name(o->precision));
    snprintf(out, n,
             "images: PIL-equivalent decode to RGB (no EXIF transpose); clip: CLIPImageProcessor shortest_edge 224 "
             "(torch uint8 antialiased bicubic), center_crop 224, rescale 1/255, OpenAI CLIP mean/std; "
             "decoder: center crop to the short side, PIL BICUBIC resize to %d (reducing_gap 1), x/127.5-1, "
             "MoVQ encode (quant_conv output); text: CLIPTokenizer max_length 77 padding max_length truncation, "
             "text encoder without attention_mask; captions: the first of a caption list%s",
             o->resolution, gemm);
}

/* Rank 0: opens OUT.partial (create or resume). Returns the inputs already committed. */
static k22_status open_writer(const k22_packer_opts *o, const k22_pack_meta *meta, const char *part,
                              k22_pack_writer **w, int64_t *inputs_done, int64_t *rows_done, k22_err *err)
{
    *inputs_done = 0, *rows_done = 0;
    int moved = 0;
    if (o->resume && !k22_fs_exists(part) && k22_fs_is_file(o->out)) {
        k22_status st = k22_fs_rename(o->out, part, err);
        if (st) return st;
        moved = 1;
    }
    if (!o->resume || !k22_fs_exists(part)) return k22_pack_writer_create(part, meta, w, err);
    k22_status st = k22_pack_writer_resume(part, meta, w, rows_done, inputs_done, err);
    if (st && moved) { /* a finished pack that does not match: leave it where it was */
        k22_err e2;
        if (k22_fs_rename(part, o->out, &e2)) k22_err_prefix(err, "%s; also", e2.msg);
    }
    return st;
}

/* Agrees on a status across ranks: the worst (largest) wins. */
static k22_status agree(k22_status st)
{
    int v = (int)st, all = 0;
    MPI_Allreduce(&v, &all, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    return (k22_status)all;
}

static void progress(int64_t done, int64_t total, int64_t start, double t0)
{
    double dt = now_s() - t0, rate = dt > 0 ? (double)(done - start) / dt : 0;
    double eta = rate > 0 ? (double)(total - done) / rate : 0;
    fprintf(stderr, "k22 pack: %lld/%lld inputs, %.2f images/s, ETA %.0f s\n", (long long)done, (long long)total,
            rate, eta);
}

k22_status k22_packer_run(const k22_packer_opts *o, k22_packer_stats *stats, k22_err *err)
{
    int rank = 0, world = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    memset(stats, 0, sizeof *stats);
    k22_err_clear(err);
    double t_start = now_s();
    k22_caption_set set;
    k22_caption_set_init(&set);
    models m = {0};
    k22_pack_meta meta;
    memset(&meta, 0, sizeof meta);
    k22_pack_writer *w = NULL;
    uint8_t *send = NULL, *recv = NULL;
    rows_buf rb = {0};
    char part[1100];
    snprintf(part, sizeof part, "%s.partial", o->out);
    k22_status st = K22_OK;
    if (o->batch < 1 || o->resolution < 8 || o->resolution % 8 || o->resolution > 4096 ||
        (!o->train_data_dir == !o->webdataset) || !o->prior_dir ||
        ((o->use & K22_PACK_FOR_DECODER) && !o->decoder_dir))
        st = k22_err_set(err, K22_ERR_ARG, "need one of --train_data_dir / --webdataset, --prior, --decoder for the "
                         "decoder, --batch >= 1 and --resolution a multiple of 8 in 8..4096");
    if (!st) st = read_inputs(o, &set, err);
    if (!st && o->strict && set.nrejects)
        st = k22_err_set(err, K22_ERR_FORMAT, "--strict: %zu input(s) rejected, first %s: %s", set.nrejects,
                         set.rejects[0].source, set.rejects[0].reason);
    meta.use = o->use, meta.dtype = o->dtype, meta.resolution = o->resolution, meta.chunk_bytes = o->chunk_bytes;
    describe_preprocessing(o, meta.preprocessing, sizeof meta.preprocessing);
    if (!st) st = models_load(&m, o, &meta, err);
    if ((st = agree(st)) != K22_OK) {
        if (!err->msg[0]) k22_err_set(err, st, "another rank failed to start (see its message)");
        goto out;
    }
    slot_layout L;
    int64_t ls = o->resolution / meta.latent_factor; // latents: (C, r/f, r/f)
    int64_t lat = (o->use & K22_PACK_FOR_DECODER) ? (int64_t)meta.latent_channels * ls * ls : 0;
    layout_init(&L, meta.embed_dim, lat);
    if ((double)L.bytes * o->batch > 2e9) {
        st = k22_err_set(err, K22_ERR_ARG, "--batch %d: %zu bytes per input make a gather over 2 GB", o->batch,
                         L.bytes);
        goto out;
    }
    int64_t nrej0 = (int64_t)set.nrejects, nrec = (int64_t)set.nrecs, done_inputs = 0, rows_done = 0;
    if (rank == 0) {
        st = open_writer(o, &meta, part, &w, &done_inputs, &rows_done, err);
        if (!st && done_inputs == 0)
            for (size_t i = 0; i < set.nrejects && !st; i++) {
                fprintf(stderr, "k22 pack: skipped %s: %s\n", set.rejects[i].source, set.rejects[i].reason);
                st = k22_pack_writer_reject(w, set.rejects[i].source, set.rejects[i].reason, err);
            }
        if (!st && done_inputs > 0 && (done_inputs < nrej0 || done_inputs > nrej0 + nrec))
            st = k22_err_set(err, K22_ERR_FORMAT, "%s: %lld inputs committed, but the inputs are %lld rejects + %lld "
                             "records: not the same input set", part, (long long)done_inputs, (long long)nrej0,
                             (long long)nrec);
        stats->rejects = done_inputs ? done_inputs - rows_done : nrej0;
        stats->rows = rows_done;
    }
    int64_t first = done_inputs ? done_inputs - nrej0 : 0;
    MPI_Bcast(&first, 1, MPI_INT64_T, 0, MPI_COMM_WORLD);
    if ((st = agree(st)) != K22_OK) goto out;
    stats->skipped_by_resume = first;
    stats->inputs = nrej0 + nrec;
    send = k22_xmalloc((size_t)o->batch * L.bytes);
    if (rank == 0) {
        recv = k22_xmalloc((size_t)o->batch * world * L.bytes);
        rows_alloc(&rb, &L, o->batch * world);
    }
    rank_times rt = {0, 0, 0};
    double t_loop = now_s(), t_last = 0;
    int64_t chunk = (int64_t)o->batch * world;
    /* Fault injection for the resume test: SIGKILL rank 0 right after its N-th commit. */
    const char *ka = getenv("K22_PACK_KILL_AFTER_COMMITS");
    long kill_after = ka ? strtol(ka, NULL, 10) : 0, commits = 0;
    if (rank == 0 && first == nrec && done_inputs == 0) /* no records at all: commit the rejects */
        st = k22_pack_writer_commit(w, nrej0, err);
    for (int64_t c0 = first; c0 < nrec; c0 += chunk) {
        int64_t lo = c0 + (int64_t)rank * o->batch, hi = lo + o->batch;
        if (lo > nrec) lo = nrec;
        if (hi > nrec) hi = nrec;
        k22_status est = encode_share(&m, o, &L, set.recs + lo, (int)(hi - lo), send, &rt, err);
        if ((st = agree(est)) != K22_OK) break;
        MPI_Gather(send, (int)((size_t)o->batch * L.bytes), MPI_BYTE, recv, (int)((size_t)o->batch * L.bytes),
                   MPI_BYTE, 0, MPI_COMM_WORLD);
        if (rank == 0) {
            double tw = now_s();
            int64_t end = c0 + chunk < nrec ? c0 + chunk : nrec;
            /* rank r's share lands at slot r * batch: recv is already in input order */
            est = write_chunk(w, &L, set.recs + c0, (int)(end - c0), recv, &rb, nrej0 + end, &stats->rows,
                              &stats->rejects, o->strict, err);
            stats->write += now_s() - tw;
            if (!est && kill_after > 0 && ++commits == kill_after) raise(SIGKILL); /* tests: a kill */
            if (o->progress && (now_s() - t_last > 2 || end == nrec)) {
                progress(end, nrec, first, t_loop);
                t_last = now_s();
            }
        }
        if ((st = agree(est)) != K22_OK) break;
    }
    if (st && !err->msg[0]) k22_err_set(err, st, "another rank failed (see its message)");
    double mine[3] = {rt.decode, rt.preprocess, rt.encode}, mx[3];
    MPI_Reduce(mine, mx, 3, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
    stats->decode = mx[0], stats->preprocess = mx[1], stats->encode = mx[2];
out:
    if (w) {
        k22_err e2;
        k22_status cst = k22_pack_writer_close(w, &e2);
        if (!st && cst) st = cst, *err = e2;
        if (!st) st = k22_fs_rename(part, o->out, err);
        else if (o->strict) unlink(part);
    }
    MPI_Bcast(&st, 1, MPI_INT, 0, MPI_COMM_WORLD);
    free(send), free(recv);
    if (rank == 0) rows_free(&rb);
    models_free(&m);
    k22_caption_set_free(&set);
    stats->total = now_s() - t_start;
    return st;
}
