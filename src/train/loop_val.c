/* loop_val.c: the held-out loss of --validation_split: the last rows of the pack, never
 * trained on, evaluated with the training loss (no backward) at each checkpoint and at the end.
 * Each sample's noise and timestep are fixed by its row and --seed (streams apart from the
 * training ones), so the figure is comparable across checkpoints and independent of the rank
 * count up to the order of the final float sums. */
#include "loop_internal.h"

#include "k22/rng.h"

#include <string.h>

#define VAL_NOISE_STREAM ((uint64_t)0x564e4f49ull << 32) /* "VNOI" */
#define VAL_TSTEP_STREAM ((uint64_t)0x56545350ull << 32) /* "VTSP" */

static k22_status read_rows(k22_run *r, int64_t start, int n, k22_err *err)
{
    k22_pack *p = r->pack;
    k22_status st;
    if (r->prior) {
        st = k22_pack_read(p, K22_PACK_TEXT_EMBEDS, start, n, r->text_embeds, err);
        if (!st) st = k22_pack_read(p, K22_PACK_TEXT_HIDDEN, start, n, r->text_hidden, err);
        if (!st) st = k22_pack_read(p, K22_PACK_ATTENTION_MASK, start, n, r->mask, err);
        if (!st) st = k22_pack_read(p, K22_PACK_IMAGE_EMBEDS, start, n, r->image_embeds, err);
    } else {
        st = k22_pack_read(p, K22_PACK_LATENTS, start, n, r->latents, err);
        if (!st) st = k22_pack_read(p, K22_PACK_IMAGE_EMBEDS, start, n, r->image_embeds, err);
    }
    if (st) return st;
    for (int i = 0; i < n; i++) {
        uint64_t row = (uint64_t)(start + i), seed = (uint64_t)r->o->seed;
        r->t[i] = (int64_t)(((uint64_t)k22_rng_u32(seed, VAL_TSTEP_STREAM, row) * (uint64_t)r->T) >> 32);
        k22_rng_fill_normal(seed, VAL_NOISE_STREAM, row * (uint64_t)r->noise_n, r->noise + (size_t)i * (size_t)r->noise_n,
                            (size_t)r->noise_n, 0.0f, 1.0f);
    }
    return K22_OK;
}

/* Rank k evaluates the held-out chunks k, k + world, ... of B rows; the sums meet by all-reduce. */
double k22_run_val_loss(k22_run *r, int64_t *n_out)
{
    int64_t n_val = r->n_val, first = r->n_train, chunks = (n_val + r->B - 1) / r->B;
    double sum = 0.0;
    for (int64_t c = r->d->rank; c < chunks; c += r->d->world) {
        int64_t start = first + c * r->B;
        int n = (int)(n_val - c * r->B < r->B ? n_val - c * r->B : r->B);
        k22_err err;
        if (read_rows(r, start, n, &err)) K22_FATAL("reading held-out rows of %s: %s", r->o->pack, err.msg);
        float loss;
        if (r->prior) {
            k22_prior_batch b = {.B = n, .text_embeds = r->text_embeds, .text_hidden = r->text_hidden,
                                 .text_mask = r->mask, .image_embeds = r->image_embeds, .noise = r->noise,
                                 .timesteps = r->t};
            loss = k22_prior_trainer_eval(&r->pt, &b);
        } else {
            k22_decoder_batch b = {.B = n, .latents = r->latents, .image_embeds = r->image_embeds,
                                   .noise = r->noise, .timesteps = r->t};
            loss = k22_decoder_trainer_eval(&r->dt, &b);
        }
        sum += (double)loss * n; /* the batch mean back to a sum over its samples */
    }
    *n_out = n_val;
    return k22_dist_sum_f64(r->d, sum) / (double)n_val;
}
