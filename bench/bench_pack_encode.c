/* bench_pack_encode.c: the frozen-encoder pass of `k22 pack` (src/pack/pack.c), timed per
 * encoder on random images: CLIP text on fixed captions (tokenize + forward), CLIP vision
 * (CLIPImageProcessor-equivalent preprocess + forward), MoVQ encode (the decoder script's
 * crop/resize + encode), each with its host<->device copies as pack makes them. Prints one
 * "k22_bench" line of key=value pairs per encoder and one for the total, which
 * bench/pack_vs_torch.sh reads beside bench/bench_pack_encode_torch.py's (same keys). Prints,
 * never asserts. No image files: decoding is not part of the encoder pass.
 *
 *   bench_pack_encode [--size tiny|full] [--device cpu|cpu-ref|cuda[:N]] [--batch B]
 *                     [--resolution R] [--images N] [--warmup W] [--prior DIR] [--decoder DIR]
 *                     [--seed S]
 *
 * Weights: the size's presets initialized as `k22 init` does (in memory), or the folders --prior
 * (text_encoder/, image_encoder/, tokenizer/) and --decoder (movq/). Source images are
 * (5/4 max(R, 224)) high and 4/3 as wide, so both resizes really resample. Timing: W warm-up
 * batches, then ceil(N / B) timed batches, each encoder synchronized on its own; figures are
 * medians over batches (min and max of the total are printed too). Peak memory: on CUDA the
 * device memory this process added (driver-reported use with the stream-ordered pool's high
 * mark), on the CPU max RSS; all three models are loaded at once, as in pack, so every line
 * carries the same process peak. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "k22/arena.h"
#include "k22/clip.h"
#include "k22/diffusers.h"
#include "k22/image.h"
#include "k22/movq.h"
#include "k22/preprocess.h"
#include "k22/tokenizer.h"

#include "k22/opts.h"

#include "bench_util.h"

#ifdef K22_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

#define T_TEXT 77 /* the prior script's max_length */
#define CLIP_PX (3 * 224 * 224)

typedef struct {
    const char *size, *device, *prior, *decoder, *precision;
    int B, res, images, warmup;
    uint64_t seed;
} pe_args;

/* -1 to go on, else the exit code (0 after --help, 2 for a bad option). Resolution defaults by
 * size: 64 (tiny MoVQ, factor 2: 32x32 latents as the tiny UNet bench) or 768 (Kandinsky 2.2's
 * decoder). */
static int parse(int argc, char **argv, pe_args *a)
{
    int64_t B, res, images, warmup, seed;
    const k22_opt opts[] = {
        {"size", K22_OPT_CHOICE, &a->size, "tiny", "model shapes", NULL, "tiny|full", 0},
        {"device", K22_OPT_STR, &a->device, "cpu", "cpu, cpu-ref, cuda or cuda:N", NULL, NULL, 0},
        {"mixed_precision", K22_OPT_CHOICE, &a->precision, "no",
         "GEMM operand precision (ops.h k22_precision; emulated, slower, on cpu)", NULL, "no|bf16|fp16", 0},
        {"batch", K22_OPT_INT, &B, "16", "images per encoder batch (1..4096)", NULL, NULL, 0},
        {"resolution", K22_OPT_INT, &res, "0", "decoder image side, a multiple of 8 (0: 64 tiny, 768 full)", NULL, NULL, 0},
        {"images", K22_OPT_INT, &images, "0", "images timed (0: 4 x batch)", NULL, NULL, 0},
        {"warmup", K22_OPT_INT, &warmup, "1", "untimed batches first (0..4096)", NULL, NULL, 0},
        {"prior", K22_OPT_STR, &a->prior, NULL, "prior pipeline folder (else random weights)", NULL, NULL, 0},
        {"decoder", K22_OPT_STR, &a->decoder, NULL, "decoder pipeline folder (else random weights)", NULL, NULL, 0},
        {"seed", K22_OPT_INT, &seed, "0", "random weights' seed", NULL, NULL, 0},
    };
    k22_cmd_spec spec = {.usage = "bench_pack_encode [options]",
                         .summary = "Times the frozen encoders of k22 pack on random images; one k22_bench line each.",
                         .opts = opts, .nopts = (int)(sizeof opts / sizeof opts[0])};
    int rc = k22_opts_parse_cli(&spec, argc, argv, "bench_pack_encode");
    if (rc >= 0) return rc;
    const char *bad = B < 1 || B > 4096 || res < 0 || res > 4096 || images < 0 || images > 4096 ||
                      warmup < 0 || warmup > 4096 || seed < 0
                          ? "--batch, --resolution, --images need 1..4096, --warmup 0..4096"
                      : res % 8 ? "--resolution must be a multiple of 8 (k22 pack's rule)" : NULL;
    if (bad) {
        fprintf(stderr, "bench_pack_encode: %s\n", bad);
        return 2;
    }
    a->B = (int)B, a->res = (int)res, a->images = (int)images, a->warmup = (int)warmup, a->seed = (uint64_t)seed;
    if (!a->res) a->res = strcmp(a->size, "full") ? 64 : 768;
    if (!a->images) a->images = 4 * a->B;
    return -1;
}

#include "bench_mem.h" /* peak memory */

/* ---- the three encoders, loaded as pack loads them ---- */

typedef struct {
    k22_model_config tcfg, vcfg, mcfg;
    k22_params tps, vps, mps;
    float *tP, *vP, *mP; /* device weights */
    k22_clip_text text;
    k22_clip_vision vision;
    k22_movq movq;
    k22_tokenizer *tok;
    k22_arena ar;
    int E, f;   /* embed dim, MoVQ spatial factor */
    int bound;  /* the three models are bound (their block arrays need freeing) */
} pe_models;

/* One component: dir/sub when dir is given (k22_component_load), else the size's preset with
 * `k22 init`'s random weights; then a device copy of the weights. */
static k22_status load_one(const k22_backend *be, const pe_args *a, const char *dir, const char *sub,
                           k22_model_kind kind, k22_model_config *cfg, k22_params *ps, float **P,
                           k22_err *err)
{
    k22_status st;
    if (dir) {
        char path[1100];
        snprintf(path, sizeof path, "%s/%s", dir, sub);
        st = k22_component_load(path, cfg, ps, err);
        if (!st && cfg->kind != kind)
            st = k22_err_set(err, K22_ERR_FORMAT, "%s: config.json is a %s, expected %s", path,
                             k22_model_class_name(cfg->kind), k22_model_class_name(kind));
    } else {
        st = k22_config_preset(kind, a->size, cfg, err);
        if (!st) st = k22_params_build(cfg, ps, err);
        if (!st) {
            k22_params_alloc(ps);
            k22_params_init_random(cfg, ps, a->seed);
        }
    }
    if (st) return st;
    *P = be->alloc(be->ctx, ps->total * sizeof(float));
    be->to_device(be->ctx, *P, ps->data, ps->total * sizeof(float));
    return K22_OK;
}

/* Loads the three models and the tokenizer, checks what pack checks that this bench relies on,
 * and sizes the arena for the largest of the three forwards, as pack does. */
static k22_status pe_models_load(pe_models *m, const k22_backend *be, const pe_args *a, k22_err *err)
{
    memset(m, 0, sizeof *m);
    k22_params_init(&m->tps), k22_params_init(&m->vps), k22_params_init(&m->mps);
    k22_status st = load_one(be, a, a->prior, "text_encoder", K22_MODEL_CLIP_TEXT, &m->tcfg, &m->tps, &m->tP, err);
    if (!st) st = load_one(be, a, a->prior, "image_encoder", K22_MODEL_CLIP_VISION, &m->vcfg, &m->vps, &m->vP, err);
    if (!st) st = load_one(be, a, a->decoder, "movq", K22_MODEL_MOVQ, &m->mcfg, &m->mps, &m->mP, err);
    if (!st) st = k22_movq_config_check(&m->mcfg.u.movq, err);
    if (st) return st;
    if (a->prior) {
        char path[1100];
        snprintf(path, sizeof path, "%s/tokenizer", a->prior);
        st = k22_tokenizer_load_dir(path, &m->tok, err);
    } else {
        st = k22_tokenizer_load_embedded(&m->tok, err);
    }
    if (st) return st;
    k22_clip_text_init(&m->text, &m->tcfg.u.clip_text, &m->tps, m->tP);
    k22_clip_vision_init(&m->vision, &m->vcfg.u.clip_vision, &m->vps, m->vP);
    k22_movq_init(&m->movq, &m->mcfg.u.movq, &m->mps, m->mP);
    m->bound = 1;
    const k22_clip_vision_config *vc = &m->vcfg.u.clip_vision;
    m->E = vc->projection_dim;
    m->f = k22_movq_factor(&m->movq);
    if (vc->image_size != 224 || vc->num_channels != 3)
        return k22_err_set(err, K22_ERR_UNSUPPORTED, "image_encoder: image_size %d, num_channels %d; pack needs 3 x 224",
                           vc->image_size, vc->num_channels);
    if (m->tcfg.u.clip_text.hidden_size != m->E || m->tcfg.u.clip_text.projection_dim != m->E)
        return k22_err_set(err, K22_ERR_UNSUPPORTED, "text_encoder: hidden_size %d / projection_dim %d, image "
                           "projection_dim %d: pack needs them equal", m->tcfg.u.clip_text.hidden_size,
                           m->tcfg.u.clip_text.projection_dim, m->E);
    if (m->mcfg.u.movq.in_channels != 3 || a->res % m->f)
        return k22_err_set(err, K22_ERR_ARG, "movq: in_channels %d (need 3), factor %d must divide --resolution %d",
                           m->mcfg.u.movq.in_channels, m->f, a->res);
    size_t need = k22_clip_vision_arena_floats(&m->vision, a->B);
    size_t t = k22_clip_text_arena_floats(&m->text, a->B, T_TEXT);
    if (t > need) need = t;
    t = k22_movq_encode_arena_floats(&m->movq, a->B, a->res, a->res);
    if (t > need) need = t;
    k22_arena_init(&m->ar, be, need);
    return K22_OK;
}

static void pe_models_free(pe_models *m, const k22_backend *be)
{
    if (m->bound) {
        k22_clip_text_free(&m->text);
        k22_clip_vision_free(&m->vision);
        k22_movq_free(&m->movq);
    }
    if (m->ar.base) k22_arena_free(&m->ar);
    if (m->tP) be->free(be->ctx, m->tP);
    if (m->vP) be->free(be->ctx, m->vP);
    if (m->mP) be->free(be->ctx, m->mP);
    k22_params_free(&m->tps), k22_params_free(&m->vps), k22_params_free(&m->mps);
    k22_tokenizer_free(m->tok);
}

/* ---- inputs ---- */

/* Captions of several lengths, one of them past 77 tokens (truncation), the same list as
 * bench_pack_encode_torch.py's. */
static const char *const CAPTIONS[] = {
    "a photo of a cat",
    "a red bicycle leaning against a brick wall on a rainy street in the evening",
    "an oil painting of a lighthouse on a cliff above stormy seas, dramatic clouds, warm light "
    "from the lamp, seagulls circling, waves breaking on black rocks, in the style of the "
    "romantic painters of the nineteenth century, highly detailed, museum quality, large canvas",
    "two dogs playing in the snow",
    "close-up of a bowl of ramen with an egg, spring onions and chili oil",
    "a minimalist logo of a mountain",
    "an astronaut riding a horse on the moon, digital art",
    "a watercolor map of an imaginary island with rivers, forests and a small harbour town",
};
#define NCAP (sizeof CAPTIONS / sizeof CAPTIONS[0])

/* Image j's pixels: a fixed hash of the byte index (bench_pack_encode_torch.py makes the same
 * bytes), so both sides resize the same data. */
static void pe_image_fill(k22_image *im, int w, int h, int j)
{
    memset(im, 0, sizeof *im);
    im->width = w, im->height = h;
    size_t n = (size_t)w * h * 3;
    im->rgb = k22_xmalloc(n); // (h, w, 3)
    for (size_t i = 0; i < n; i++) im->rgb[i] = (uint8_t)((i * 2654435761ull + (uint64_t)j * 977u) % 251u);
}

/* ---- timing ---- */

enum { ENC_TEXT, ENC_VISION, ENC_MOVQ, ENC_N };
static const char *const ENC_NAME[ENC_N] = {"text", "vision", "movq"};

/* Per timed batch and encoder: host prep ms, model ms (copies + forward), CPU ms. */
typedef struct {
    double *prep[ENC_N], *model[ENC_N], *cpu[ENC_N];
    double out_mean_abs[ENC_N];
    size_t nparams[ENC_N];
} pe_times;

/* Host and device buffers of one batch, allocated once (pack allocates per batch; the backends'
 * allocators make that cheap, and the arena holds the activations either way). */
typedef struct {
    int32_t *ids;  // (B, 77)
    uint8_t *mask; // (B, 77)
    float *clip, *dec; // (B, 3, 224, 224), (B, 3, R, R)
    float *h_hid, *h_emb, *h_lat; // (B, 77, E), (B, E), (B, 4, R/f, R/f)
    float *d_hid, *d_emb, *d_px, *d_x, *d_lat;
    size_t nlat; /* floats of one image's latents */
} pe_bufs;

static void pe_bufs_init(pe_bufs *b, const k22_backend *be, const pe_models *m, int B, int res)
{
    size_t E = (size_t)m->E, ndec = (size_t)3 * res * res, ls = (size_t)(res / m->f);
    b->nlat = (size_t)m->mcfg.u.movq.vq_embed_dim * ls * ls;
    b->ids = k22_xcalloc((size_t)B * T_TEXT, sizeof(int32_t));
    b->mask = k22_xcalloc((size_t)B * T_TEXT, 1);
    b->clip = k22_xmalloc((size_t)B * CLIP_PX * sizeof(float));
    b->dec = k22_xmalloc((size_t)B * ndec * sizeof(float));
    b->h_hid = k22_xmalloc((size_t)B * T_TEXT * E * sizeof(float));
    b->h_emb = k22_xmalloc((size_t)B * E * sizeof(float));
    b->h_lat = k22_xmalloc((size_t)B * b->nlat * sizeof(float));
    b->d_hid = be->alloc(be->ctx, (size_t)B * T_TEXT * E * sizeof(float));
    b->d_emb = be->alloc(be->ctx, (size_t)B * E * sizeof(float));
    b->d_px = be->alloc(be->ctx, (size_t)B * CLIP_PX * sizeof(float));
    b->d_x = be->alloc(be->ctx, (size_t)B * ndec * sizeof(float));
    b->d_lat = be->alloc(be->ctx, (size_t)B * b->nlat * sizeof(float));
}

static void pe_bufs_free(pe_bufs *b, const k22_backend *be)
{
    free(b->ids), free(b->mask), free(b->clip), free(b->dec);
    free(b->h_hid), free(b->h_emb), free(b->h_lat);
    be->free(be->ctx, b->d_hid), be->free(be->ctx, b->d_emb), be->free(be->ctx, b->d_px);
    be->free(be->ctx, b->d_x), be->free(be->ctx, b->d_lat);
}

static double mean_abs(const float *x, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++) s += fabs(x[i]);
    return n ? s / n : 0;
}

/* One batch of all three encoders; records into slot s of t (s < 0: warm-up, not recorded).
 * first is the index of the batch's first image (captions and images cycle). */
static k22_status pe_batch(const k22_backend *be, pe_models *m, pe_bufs *b, const k22_image *imgs,
                           int nimg, const pe_args *a, int first, pe_times *t, int s, k22_err *err)
{
    int B = a->B, res = a->res;
    size_t ndec = (size_t)3 * res * res;
    double w[ENC_N][3], c[ENC_N][2]; /* wall: start, after prep, end; cpu: start, end */
    size_t mark = k22_arena_mark(&m->ar);

    /* CLIP text: tokenize (pack tokenizes per input while preparing), forward, both outputs home */
    w[ENC_TEXT][0] = bench_wall_s(), c[ENC_TEXT][0] = bench_cpu_s();
    for (int i = 0; i < B; i++) {
        const char *cap = CAPTIONS[(size_t)(first + i) % NCAP];
        k22_tokenizer_encode(m->tok, cap, strlen(cap), T_TEXT, b->ids + (size_t)i * T_TEXT, b->mask + (size_t)i * T_TEXT);
    }
    w[ENC_TEXT][1] = bench_wall_s();
    k22_status st = k22_clip_text_forward(be, &m->text, &m->ar, b->ids, B, T_TEXT, b->d_hid, b->d_emb, err);
    if (st) return st;
    be->to_host(be->ctx, b->h_hid, b->d_hid, (size_t)B * T_TEXT * m->E * sizeof(float));
    be->to_host(be->ctx, b->h_emb, b->d_emb, (size_t)B * m->E * sizeof(float));
    w[ENC_TEXT][2] = bench_wall_s(), c[ENC_TEXT][1] = bench_cpu_s();
    if (s >= 0) t->out_mean_abs[ENC_TEXT] = mean_abs(b->h_emb, (size_t)B * m->E);

    /* CLIP vision: the image processor's resize/crop/normalize, forward, embeds home */
    w[ENC_VISION][0] = bench_wall_s(), c[ENC_VISION][0] = bench_cpu_s();
    k22_clip_image_cfg cc;
    k22_clip_image_cfg_default(&cc);
    for (int i = 0; i < B && !st; i++)
        st = k22_preprocess_clip(&imgs[(first + i) % nimg], &cc, b->clip + (size_t)i * CLIP_PX, err);
    if (st) return st;
    w[ENC_VISION][1] = bench_wall_s();
    be->to_device(be->ctx, b->d_px, b->clip, (size_t)B * CLIP_PX * sizeof(float));
    k22_clip_vision_forward(be, &m->vision, &m->ar, b->d_px, B, b->d_emb);
    be->to_host(be->ctx, b->h_emb, b->d_emb, (size_t)B * m->E * sizeof(float));
    w[ENC_VISION][2] = bench_wall_s(), c[ENC_VISION][1] = bench_cpu_s();
    if (s >= 0) t->out_mean_abs[ENC_VISION] = mean_abs(b->h_emb, (size_t)B * m->E);

    /* MoVQ: the decoder script's crop + bicubic resize to R, encode, latents home */
    w[ENC_MOVQ][0] = bench_wall_s(), c[ENC_MOVQ][0] = bench_cpu_s();
    for (int i = 0; i < B && !st; i++)
        st = k22_preprocess_decoder(&imgs[(first + i) % nimg], res, b->dec + (size_t)i * ndec, err);
    if (st) return st;
    w[ENC_MOVQ][1] = bench_wall_s();
    be->to_device(be->ctx, b->d_x, b->dec, (size_t)B * ndec * sizeof(float));
    k22_movq_encode(be, &m->movq, &m->ar, b->d_x, B, res, res, b->d_lat);
    be->to_host(be->ctx, b->h_lat, b->d_lat, (size_t)B * b->nlat * sizeof(float));
    w[ENC_MOVQ][2] = bench_wall_s(), c[ENC_MOVQ][1] = bench_cpu_s();
    if (s >= 0) t->out_mean_abs[ENC_MOVQ] = mean_abs(b->h_lat, (size_t)B * b->nlat);

    k22_arena_reset(&m->ar, mark);
    if (s >= 0)
        for (int e = 0; e < ENC_N; e++) {
            t->prep[e][s] = 1e3 * (w[e][1] - w[e][0]);
            t->model[e][s] = 1e3 * (w[e][2] - w[e][1]);
            t->cpu[e][s] = 1e3 * (c[e][1] - c[e][0]);
        }
    return K22_OK;
}

static void report_line(const pe_args *a, const char *dev, const char *enc, int nb, double prep,
                        double model, double total, double lo, double hi, double cpu, size_t nparams,
                        double oma, const bench_mem *mem)
{
    int h = (a->res > 224 ? a->res : 224) * 5 / 4, w = h * 4 / 3;
    printf("k22_bench impl=k22 bench=pack_encode encoder=%s size=%s device=%s precision=%s batch=%d "
           "resolution=%d src=%dx%d images=%d batches=%d params=%zu ms_per_batch=%.3f ms_min=%.3f "
           "ms_max=%.3f prep_ms=%.3f model_ms=%.3f cpu_ms=%.3f images_per_s=%.3f peak_mem_mib=%.1f "
           "mem=%s out_mean_abs=%.6g\n",
           enc, a->size, dev, strcmp(a->precision, "no") ? a->precision : "fp32", a->B, a->res, w, h, nb * a->B, nb, nparams, total, lo, hi, prep, model,
           cpu, a->B / (total * 1e-3), bench_mem_peak_mib(mem), mem->cuda ? "device" : "max_rss", oma);
}

/* One line per encoder (medians of its prep, model and prep + model), then the total (median
 * over batches of the three encoders' sum). */
static void report(const pe_args *a, const k22_backend *be, const pe_times *t, int nb, const bench_mem *mem)
{
    double *sum = k22_xcalloc((size_t)nb, sizeof *sum), *one = k22_xmalloc((size_t)nb * sizeof *one);
    double sp = 0, sm = 0, sc = 0, lo, hi;
    size_t np = 0;
    for (int e = 0; e < ENC_N; e++) {
        for (int s = 0; s < nb; s++) one[s] = t->prep[e][s] + t->model[e][s], sum[s] += one[s];
        double p = bench_median(t->prep[e], nb, NULL, NULL);
        double md = bench_median(t->model[e], nb, NULL, NULL);
        double c = bench_median(t->cpu[e], nb, NULL, NULL), tot = bench_median(one, nb, &lo, &hi);
        report_line(a, be->name, ENC_NAME[e], nb, p, md, tot, lo, hi, c, t->nparams[e], t->out_mean_abs[e], mem);
        sp += p, sm += md, sc += c, np += t->nparams[e];
    }
    double tot = bench_median(sum, nb, &lo, &hi);
    report_line(a, be->name, "total", nb, sp, sm, tot, lo, hi, sc, np, 0, mem);
    free(sum), free(one);
}

static int pe_run(const pe_args *a, const k22_backend *be, bench_mem *mem)
{
    k22_err err;
    pe_models m;
    pe_bufs b = {0};
    pe_times t = {0};
    int rc = 1, nb = (a->images + a->B - 1) / a->B, nimg = a->B;
    int h = (a->res > 224 ? a->res : 224) * 5 / 4, w = h * 4 / 3;
    k22_image *imgs = k22_xcalloc((size_t)nimg, sizeof *imgs);
    for (int j = 0; j < nimg; j++) pe_image_fill(&imgs[j], w, h, j);
    for (int e = 0; e < ENC_N; e++) {
        t.prep[e] = k22_xcalloc((size_t)nb, sizeof(double));
        t.model[e] = k22_xcalloc((size_t)nb, sizeof(double));
        t.cpu[e] = k22_xcalloc((size_t)nb, sizeof(double));
    }
    k22_status st = pe_models_load(&m, be, a, &err);
    if (st) goto out;
    t.nparams[ENC_TEXT] = k22_params_numel(&m.tps);
    t.nparams[ENC_VISION] = k22_params_numel(&m.vps);
    t.nparams[ENC_MOVQ] = k22_params_numel(&m.mps);
    pe_bufs_init(&b, be, &m, a->B, a->res);
    for (int s = -a->warmup; s < nb && !st; s++) {
        st = pe_batch(be, &m, &b, imgs, nimg, a, (s + a->warmup) * a->B, &t, s, &err);
        bench_mem_sample(mem);
    }
    if (st) goto out;
    report(a, be, &t, nb, mem);
    rc = 0;
out:
    if (st) fprintf(stderr, "bench_pack_encode: %s\n", err.msg);
    if (b.ids) pe_bufs_free(&b, be);
    pe_models_free(&m, be);
    for (int j = 0; j < nimg; j++) k22_image_free(&imgs[j]);
    free(imgs);
    for (int e = 0; e < ENC_N; e++) free(t.prep[e]), free(t.model[e]), free(t.cpu[e]);
    return rc;
}

int main(int argc, char **argv)
{
    pe_args a;
    int rc = parse(argc, argv, &a);
    if (rc >= 0) return rc;
    bench_mem mem;
    bench_mem_start(&mem, a.device);
    k22_err err;
    k22_backend *be = k22_backend_open(a.device, a.precision, &err);
    if (!be) {
        fprintf(stderr, "bench_pack_encode: %s\n", err.msg);
        return err.code == K22_ERR_ARG ? 2 : 1;
    }
    rc = pe_run(&a, be, &mem);
    k22_backend_free(be);
    return rc;
}
