/* sample_run.c: one batch of text-to-image (k22_sample_images): the prior pipeline's loop,
 * then the decoder pipeline's loop and the MoVQ decode, as KandinskyV22PriorPipeline and
 * KandinskyV22Pipeline run them (sample.h). */
#include "sampler_internal.h"

#include "k22/rng.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Philox streams: purpose << 40 | global image index (sample.h: an image's noise does not
 * depend on the batch it ran in). */
enum { SP_PRIOR_INIT = 1, SP_PRIOR_STEP, SP_NEG_INIT, SP_NEG_STEP, SP_DEC_INIT, SP_DEC_STEP };
#define SAMPLE_STREAM(p, g) ((0x5341ull << 48) | ((uint64_t)(p) << 40) | (uint64_t)(g))
#define MAX_IMAGE_INDEX (1ll << 40)
#define MAX_IMAGES 4096
#define MAX_PROMPT_BYTES (1u << 20)

void k22_sample_opts_default(k22_sample_opts *o)
{
    memset(o, 0, sizeof *o);
    o->num_images = 1;
    o->prior_steps = 25;
    o->decoder_steps = 100;
    o->prior_guidance_scale = 4.0;
    o->guidance_scale = 4.0;
    o->height = o->width = 512;
}

void k22_sample_result_free(k22_sample_result *r)
{
    free(r->image_embeds);
    free(r->negative_embeds);
    free(r->latents);
    free(r->pixels);
    free(r->rgb);
    memset(r, 0, sizeof *r);
}

/* One batch's shapes. */
typedef struct {
    int np, m, n;      /* prompts, images per prompt, images */
    int P, Bp, U;      /* prior rows (n, or 2n with a negative prompt), rows with guidance, texts */
    int prior_cfg, dec_cfg;
    int E, EP, D;      /* clip_embed_dim, text embedding, text hidden width */
    int C, OC, lh, lw, H, W, Bd;
    int64_t S;         /* lh * lw */
} shapes;

/* Initial latents (step < 0) or the noise of step `step`, (rows, width), rows in the batch's
 * order; rows >= n belong to the negative prompt (prior only). */
static void draw(const k22_sample_opts *o, int prior, int step, int rows, int n, int64_t width, float *out)
{
    const float *fed = prior ? (step < 0 ? o->prior_latents : o->prior_noise)
                             : (step < 0 ? o->decoder_latents : o->decoder_noise);
    size_t sz = (size_t)rows * (size_t)width;
    if (fed) {
        memcpy(out, fed + (step < 0 ? 0 : (size_t)step * sz), sz * sizeof(float));
        return;
    }
    for (int r = 0; r < rows; r++) {
        int neg = r >= n, p;
        if (prior) p = step < 0 ? (neg ? SP_NEG_INIT : SP_PRIOR_INIT) : (neg ? SP_NEG_STEP : SP_PRIOR_STEP);
        else p = step < 0 ? SP_DEC_INIT : SP_DEC_STEP;
        uint64_t g = (uint64_t)(o->image_offset + r % n);
        uint64_t start = step < 0 ? 0 : (uint64_t)step * (uint64_t)width;
        k22_rng_fill_normal(o->seed, SAMPLE_STREAM(p, g), start, out + (size_t)r * (size_t)width,
                            (size_t)width, 0.0f, 1.0f);
    }
}

/* out = u + g * (c - u) over n values, each operation rounded to float as torch does. */
static void guide(float *out, const float *u, const float *c, float g, int64_t n)
{
    for (int64_t k = 0; k < n; k++) {
        float d = c[k] - u[k];
        float gd = g * d;
        out[k] = u[k] + gd;
    }
}

static k22_status check_opts(const k22_sampler *s, int np, const char *const *prompts, const k22_sample_opts *o,
                             k22_err *err)
{
    if (np < 1 || o->num_images < 1 || (int64_t)np * o->num_images > MAX_IMAGES)
        return k22_err_set(err, K22_ERR_ARG, "%d prompts x %d images: expected 1..%d images in one batch", np,
                           o->num_images, MAX_IMAGES);
    for (int i = 0; i < np; i++)
        if (!prompts[i] || strlen(prompts[i]) > MAX_PROMPT_BYTES)
            return k22_err_set(err, K22_ERR_ARG, "prompt %d is missing or over %u bytes", i + 1, MAX_PROMPT_BYTES);
    if (o->negative_prompt && strlen(o->negative_prompt) > MAX_PROMPT_BYTES)
        return k22_err_set(err, K22_ERR_ARG, "the negative prompt is over %u bytes", MAX_PROMPT_BYTES);
    if (o->image_offset < 0 || o->image_offset > MAX_IMAGE_INDEX - MAX_IMAGES)
        return k22_err_set(err, K22_ERR_ARG, "image_offset %lld outside 0..2^40", (long long)o->image_offset);
    if (!isfinite(o->prior_guidance_scale) || !isfinite(o->guidance_scale))
        return k22_err_set(err, K22_ERR_ARG, "guidance scales must be finite");
    if (!o->prior_latents != !o->prior_noise || !o->decoder_latents != !o->decoder_noise)
        return k22_err_set(err, K22_ERR_ARG, "fed noise comes as latents and step noise together");
    if (!o->skip_decoder && !s->have_decoder)
        return k22_err_set(err, K22_ERR_ARG, "images need a decoder pipeline (or skip_decoder)");
    return K22_OK;
}

static k22_status plan(k22_sampler *s, int np, const k22_sample_opts *o, shapes *z, k22_err *err)
{
    memset(z, 0, sizeof *z);
    const k22_prior_config *pc = &s->pcfg.u.prior;
    z->np = np, z->m = o->num_images, z->n = np * o->num_images;
    z->P = o->negative_prompt ? 2 * z->n : z->n;
    z->prior_cfg = o->prior_guidance_scale > 1.0;
    z->Bp = z->prior_cfg ? 2 * z->P : z->P;
    z->U = np + 1;
    z->E = pc->clip_embed_dim, z->EP = pc->embedding_proj_dim, z->D = pc->embedding_dim;
    k22_status st = k22_infer_sched_set_timesteps(&s->psched, o->prior_steps, err);
    if (st) return k22_err_prefix(err, "prior steps");
    if (o->skip_decoder) return K22_OK;
    st = k22_sampler_sizes(s, o->height, o->width, &z->lh, &z->lw, &z->H, &z->W, err);
    if (!st) st = k22_infer_sched_set_timesteps(&s->dsched, o->decoder_steps, err);
    if (st) return st;
    if (o->decoder_noise && s->dsched.n != o->decoder_steps)
        return k22_err_set(err, K22_ERR_ARG, "fed decoder noise: %d steps asked, the scheduler runs %d",
                           o->decoder_steps, s->dsched.n);
    z->C = s->ucfg.u.unet.in_channels, z->OC = s->ucfg.u.unet.out_channels;
    z->S = (int64_t)z->lh * z->lw;
    z->dec_cfg = o->guidance_scale > 1.0;
    z->Bd = z->dec_cfg ? 2 * z->n : z->n;
    return K22_OK;
}

static size_t max_sz(size_t a, size_t b)
{
    return a > b ? a : b;
}

/* The prior model keeps host scratch sized by its largest batch: rebind when a batch is larger. */
static void bind_prior(k22_sampler *s, int Bp)
{
    if (s->prior_bound && s->prior_max_batch >= Bp) return;
    if (s->prior_bound) k22_prior_free(&s->prior);
    k22_prior_init(&s->prior, &s->pcfg.u.prior, &s->pps, s->prior_P, NULL, Bp);
    s->prior_bound = 1, s->prior_max_batch = Bp;
}

static size_t arena_need(const k22_sampler *s, const shapes *z, int skip_decoder)
{
    size_t need = k22_clip_text_arena_floats(&s->text, z->U, K22_CLIP_MAX_LEN);
    need = max_sz(need, k22_prior_arena_floats(&s->prior, z->Bp, 0));
    need = max_sz(need, k22_clip_vision_arena_floats(&s->vision, 1));
    if (!skip_decoder) {
        need = max_sz(need, k22_unet_arena_floats(&s->unet, z->Bd, z->lh, z->lw, 0));
        need = max_sz(need, k22_movq_decode_arena_floats(&s->movq, 1, z->lh, z->lw));
    }
    return need;
}

/* get_zero_embed: the image encoder on an all-zero (1, 3, size, size) input, made once. */
static void zero_embed(k22_sampler *s, k22_arena *ar)
{
    if (s->zero_embed) return;
    const k22_backend *be = s->be;
    const k22_clip_vision_config *v = &s->vcfg.u.clip_vision;
    int E = v->projection_dim;
    size_t npix = (size_t)v->num_channels * (size_t)v->image_size * (size_t)v->image_size;
    float *px = be->alloc(be->ctx, npix * sizeof(float)); /* zero-filled */
    float *emb = be->alloc(be->ctx, (size_t)E * sizeof(float));
    size_t mark = k22_arena_mark(ar);
    k22_clip_vision_forward(be, &s->vision, ar, px, 1, emb);
    k22_arena_reset(ar, mark);
    s->zero_embed = k22_xmalloc((size_t)E * sizeof(float));
    be->to_host(be->ctx, s->zero_embed, emb, (size_t)E * sizeof(float));
    be->free(be->ctx, px);
    be->free(be->ctx, emb);
}

/* The prior's conditioning rows, [uncond (P); cond (P)] with guidance, else [cond (P)]: text
 * embeddings (Bp, EP), hidden states (Bp, 77, D) on the device and the mask (Bp, 77) on the host.
 * Texts 0..np-1 are the prompts, text np the negative prompt (or ""): the uncond text of every
 * row and the cond text of the negative rows. */
typedef struct {
    float *proj, *ehs;
    uint8_t *mask;
} prior_cond;

static k22_status encode_text(k22_sampler *s, k22_arena *ar, const char *const *prompts, const k22_sample_opts *o,
                              const shapes *z, prior_cond *pc, k22_err *err)
{
    const k22_backend *be = s->be;
    const int L = K22_CLIP_MAX_LEN;
    int32_t *ids = k22_xcalloc((size_t)z->U * L, sizeof(int32_t));
    uint8_t *mask = k22_xcalloc((size_t)z->U * L, 1);
    for (int u = 0; u < z->U; u++) {
        const char *t = u < z->np ? prompts[u] : (o->negative_prompt ? o->negative_prompt : "");
        k22_tokenizer_encode(s->tok, t, strlen(t), L, ids + (size_t)u * L, mask + (size_t)u * L);
    }
    size_t fz = sizeof(float), rowp = (size_t)z->EP * fz, rowh = (size_t)L * z->D * fz;
    float *th = be->alloc(be->ctx, (size_t)z->U * rowh), *te = be->alloc(be->ctx, (size_t)z->U * rowp);
    size_t mark = k22_arena_mark(ar);
    k22_status st = k22_clip_text_forward(be, &s->text, ar, ids, z->U, L, th, te, err);
    k22_arena_reset(ar, mark);
    if (st) goto out;
    pc->proj = be->alloc(be->ctx, (size_t)z->Bp * rowp);
    pc->ehs = be->alloc(be->ctx, (size_t)z->Bp * rowh);
    pc->mask = k22_xmalloc((size_t)z->Bp * L);
    for (int r = 0; r < z->Bp; r++) {
        int cond = !z->prior_cfg || r >= z->P, row = z->prior_cfg ? r % z->P : r;
        int u = cond && row < z->n ? row / z->m : z->np;
        be->copy(be->ctx, (char *)pc->proj + (size_t)r * rowp, (char *)te + (size_t)u * rowp, rowp);
        be->copy(be->ctx, (char *)pc->ehs + (size_t)r * rowh, (char *)th + (size_t)u * rowh, rowh);
        memcpy(pc->mask + (size_t)r * L, mask + (size_t)u * L, (size_t)L);
    }
out:
    be->free(be->ctx, th);
    be->free(be->ctx, te);
    free(ids);
    free(mask);
    return st;
}

/* The prior pipeline: image_embeds (n, E) and negative_embeds (n, E) on the host. */
static k22_status run_prior(k22_sampler *s, k22_arena *ar, const char *const *prompts, const k22_sample_opts *o,
                            const shapes *z, float *img, float *neg, k22_err *err)
{
    const k22_backend *be = s->be;
    const k22_infer_sched *sc = &s->psched;
    prior_cond pc = {0};
    k22_status st = encode_text(s, ar, prompts, o, z, &pc, err);
    if (st) return st;
    int E = z->E, P = z->P, Bp = z->Bp;
    size_t fz = sizeof(float), rows = (size_t)P * E;
    float *lat = k22_xmalloc(rows * fz), *noise = k22_xmalloc(rows * fz);
    float *out_h = k22_xmalloc((size_t)Bp * E * fz), *pred = k22_xmalloc(rows * fz);
    float *t_h = k22_xmalloc((size_t)Bp * fz);
    float *x_d = be->alloc(be->ctx, (size_t)Bp * E * fz), *t_d = be->alloc(be->ctx, (size_t)Bp * fz);
    float *out_d = be->alloc(be->ctx, (size_t)Bp * E * fz);
    draw(o, 1, -1, P, z->n, E, lat); /* times init_noise_sigma, which is 1 */
    for (int i = 0; i < sc->n; i++) {
        // x: (Bp, E) the latents, twice under guidance
        be->to_device(be->ctx, x_d, lat, rows * fz);
        if (z->prior_cfg) be->to_device(be->ctx, x_d + rows, lat, rows * fz);
        for (int b = 0; b < Bp; b++) t_h[b] = (float)sc->timesteps[i];
        be->to_device(be->ctx, t_d, t_h, (size_t)Bp * fz);
        size_t mark = k22_arena_mark(ar);
        k22_prior_forward(be, &s->prior, ar, x_d, t_d, pc.proj, pc.ehs, pc.mask, Bp, out_d, 0);
        k22_arena_reset(ar, mark);
        be->to_host(be->ctx, out_h, out_d, (size_t)Bp * E * fz);
        if (z->prior_cfg) guide(pred, out_h, out_h + rows, (float)o->prior_guidance_scale, (int64_t)rows);
        else memcpy(pred, out_h, rows * fz);
        if (k22_infer_sched_noisy(sc, i)) draw(o, 1, i, P, z->n, E, noise);
        k22_infer_sched_step(sc, i, pred, E, lat, P, E, 1, noise);
    }
    /* post_process_latents: latents * clip_std + clip_mean */
    for (int r = 0; r < P; r++)
        for (int k = 0; k < E; k++) {
            float v = lat[(size_t)r * E + k] * s->clip_std[k];
            lat[(size_t)r * E + k] = v + s->clip_mean[k];
        }
    memcpy(img, lat, (size_t)z->n * E * fz);
    if (o->negative_prompt) {
        memcpy(neg, lat + (size_t)z->n * E, (size_t)z->n * E * fz);
    } else {
        zero_embed(s, ar);
        for (int r = 0; r < z->n; r++) memcpy(neg + (size_t)r * E, s->zero_embed, (size_t)E * fz);
    }
    float *dev[] = {x_d, t_d, out_d, pc.proj, pc.ehs};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) be->free(be->ctx, dev[i]);
    free(pc.mask), free(lat), free(noise), free(out_h), free(pred), free(t_h);
    return K22_OK;
}

/* The decoder's guided output (n, OC, S): the first C channels guided, the variance channels
 * taken from the conditioned half, as the pipeline does. */
static void guide_unet(const shapes *z, const float *out, float g, float *dst)
{
    int64_t per = (int64_t)z->OC * z->S, cs = (int64_t)z->C * z->S;
    for (int b = 0; b < z->n; b++) {
        const float *u = out + (int64_t)b * per, *c = out + (int64_t)(z->n + b) * per;
        guide(dst + (int64_t)b * per, u, c, g, cs);
        memcpy(dst + (int64_t)b * per + cs, c + cs, (size_t)(per - cs) * sizeof(float));
    }
}

/* The decoder pipeline: final latents (n, C, lh, lw) on the host. */
static void run_decoder(k22_sampler *s, k22_arena *ar, const k22_sample_opts *o, const shapes *z,
                        const float *img, const float *neg, float *lat)
{
    const k22_backend *be = s->be;
    const k22_infer_sched *sc = &s->dsched;
    int n = z->n, Bd = z->Bd, E = z->E;
    size_t fz = sizeof(float), N = (size_t)z->C * (size_t)z->S, NO = (size_t)z->OC * (size_t)z->S;
    float *emb = be->alloc(be->ctx, (size_t)Bd * E * fz);
    // image_embeds: [negative (n); positive (n)] under guidance
    if (z->dec_cfg) be->to_device(be->ctx, emb, neg, (size_t)n * E * fz);
    be->to_device(be->ctx, emb + (z->dec_cfg ? (size_t)n * E : 0), img, (size_t)n * E * fz);
    float *x_d = be->alloc(be->ctx, (size_t)Bd * N * fz), *t_d = be->alloc(be->ctx, (size_t)Bd * fz);
    float *out_d = be->alloc(be->ctx, (size_t)Bd * NO * fz);
    float *out_h = k22_xmalloc((size_t)Bd * NO * fz), *pred = k22_xmalloc((size_t)n * NO * fz);
    float *noise = k22_xmalloc((size_t)n * N * fz), *t_h = k22_xmalloc((size_t)Bd * fz);
    draw(o, 0, -1, n, n, (int64_t)N, lat);
    for (int i = 0; i < sc->n; i++) {
        // x: (Bd, C, lh, lw)
        be->to_device(be->ctx, x_d, lat, (size_t)n * N * fz);
        if (z->dec_cfg) be->to_device(be->ctx, x_d + (size_t)n * N, lat, (size_t)n * N * fz);
        for (int b = 0; b < Bd; b++) t_h[b] = (float)sc->timesteps[i];
        be->to_device(be->ctx, t_d, t_h, (size_t)Bd * fz);
        size_t mark = k22_arena_mark(ar);
        k22_unet_forward(be, &s->unet, ar, x_d, t_d, emb, Bd, z->lh, z->lw, out_d, 0);
        k22_arena_reset(ar, mark);
        be->to_host(be->ctx, out_h, out_d, (size_t)Bd * NO * fz);
        if (z->dec_cfg) guide_unet(z, out_h, (float)o->guidance_scale, pred);
        else memcpy(pred, out_h, (size_t)n * NO * fz);
        if (k22_infer_sched_noisy(sc, i)) draw(o, 0, i, n, n, (int64_t)N, noise);
        k22_infer_sched_step(sc, i, pred, z->OC, lat, n, z->C, z->S, noise);
    }
    float *dev[] = {emb, x_d, t_d, out_d};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) be->free(be->ctx, dev[i]);
    free(out_h), free(pred), free(noise), free(t_h);
}

/* MoVQ decode, one image at a time (bounded memory), then image * 0.5 + 0.5 clamped to [0, 1]
 * as (H, W, 3), and numpy_to_pil's round(x * 255). */
static void decode_images(k22_sampler *s, k22_arena *ar, const shapes *z, const float *lat, float *pix,
                          uint8_t *rgb)
{
    const k22_backend *be = s->be;
    size_t N = (size_t)z->C * (size_t)z->S, HW = (size_t)z->H * (size_t)z->W, fz = sizeof(float);
    float *z_d = be->alloc(be->ctx, N * fz), *im_d = be->alloc(be->ctx, 3 * HW * fz);
    float *im = k22_xmalloc(3 * HW * fz);
    for (int b = 0; b < z->n; b++) {
        be->to_device(be->ctx, z_d, lat + (size_t)b * N, N * fz);
        size_t mark = k22_arena_mark(ar);
        k22_movq_decode(be, &s->movq, ar, z_d, 1, z->lh, z->lw, im_d);
        k22_arena_reset(ar, mark);
        be->to_host(be->ctx, im, im_d, 3 * HW * fz);
        for (int c = 0; c < 3; c++)
            for (size_t k = 0; k < HW; k++) {
                float v = im[(size_t)c * HW + k] * 0.5f;
                v = v + 0.5f;
                v = v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
                size_t at = ((size_t)b * HW + k) * 3 + (size_t)c;
                pix[at] = v;
                rgb[at] = (uint8_t)nearbyintf(v * 255.0f);
            }
    }
    be->free(be->ctx, z_d);
    be->free(be->ctx, im_d);
    free(im);
}

k22_status k22_sample_images(k22_sampler *s, const char *const *prompts, int n_prompts,
                             const k22_sample_opts *o, k22_sample_result *r, k22_err *err)
{
    memset(r, 0, sizeof *r);
    shapes z;
    k22_status st = check_opts(s, n_prompts, prompts, o, err);
    if (!st) st = plan(s, n_prompts, o, &z, err);
    if (st) return st;
    bind_prior(s, z.Bp);
    k22_arena ar;
    k22_arena_init(&ar, s->be, arena_need(s, &z, o->skip_decoder));
    r->n = z.n, r->E = z.E;
    r->image_embeds = k22_xmalloc((size_t)z.n * z.E * sizeof(float));
    r->negative_embeds = k22_xmalloc((size_t)z.n * z.E * sizeof(float));
    st = run_prior(s, &ar, prompts, o, &z, r->image_embeds, r->negative_embeds, err);
    if (st || o->skip_decoder) goto out;
    r->lat_h = z.lh, r->lat_w = z.lw, r->height = z.H, r->width = z.W;
    size_t N = (size_t)z.C * (size_t)z.S, px = (size_t)z.n * (size_t)z.H * (size_t)z.W * 3;
    r->latents = k22_xmalloc((size_t)z.n * N * sizeof(float));
    r->pixels = k22_xmalloc(px * sizeof(float));
    r->rgb = k22_xmalloc(px);
    run_decoder(s, &ar, o, &z, r->image_embeds, r->negative_embeds, r->latents);
    decode_images(s, &ar, &z, r->latents, r->pixels, r->rgb);
out:
    k22_arena_free(&ar);
    if (st) k22_sample_result_free(r);
    return st;
}
