/* loop_stage.c: what differs between train-prior and train-decoder inside the loop: setting the
 * trainer up, reading a micro-batch from the pack with its noise and timesteps, and reaching the
 * trainer's buffers. */
#include "loop_internal.h"

#include "k22/flops.h"
#include "k22/fsutil.h"
#include "k22/rng.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int64_t k22_train_timestep(uint64_t seed, int64_t g, int T)
{
    /* 32 random bits scaled to [0, T): uniform up to T / 2^32. */
    uint64_t u = k22_rng_u32(seed, K22_TSTEP_STREAM, (uint64_t)g);
    return (int64_t)((u * (uint64_t)T) >> 32);
}

void k22_train_noise(uint64_t seed, int64_t g, float *out, int64_t n)
{
    k22_rng_fill_normal(seed, K22_NOISE_STREAM, (uint64_t)g * (uint64_t)n, out, (size_t)n, 0.0f, 1.0f);
}

/* The shared step flags from the command line and the run's shape. */
static k22_status hparams_of(const k22_run *r, k22_train_hparams *hp, k22_err *err)
{
    const k22_train_opts *o = r->o;
    k22_train_hparams_default(hp);
    hp->learning_rate = o->learning_rate;
    hp->adam_beta1 = o->adam_beta1;
    hp->adam_beta2 = o->adam_beta2;
    hp->adam_weight_decay = o->adam_weight_decay;
    hp->adam_epsilon = o->adam_epsilon;
    hp->max_grad_norm = o->max_grad_norm;
    hp->snr_gamma = o->snr_gamma;
    hp->gradient_accumulation_steps = r->A;
    hp->lr_warmup_steps = o->lr_warmup_steps;
    hp->max_train_steps = r->max_steps;
    hp->world_size = r->d->world;
    hp->use_ema = o->use_ema;
    hp->gradient_checkpointing = o->gradient_checkpointing;
    hp->checkpoint_levels = (int)o->checkpoint_levels;
    hp->micro_batch = r->B;
    hp->zero_stage = (int)o->zero_stage;
    hp->bucket_floats = (int64_t)ceil(o->bucket_cap_mb * 1048576.0 / sizeof(float));
    hp->dist = r->d;
    hp->precision = (k22_precision)r->be->precision; /* --mixed_precision, set on the backend */
    return k22_lr_kind_parse(o->lr_scheduler, &hp->lr_scheduler, err);
}

/* The set-up line of 16-bit activations (ops.h k22_backend_act16), on rank 0 when on. */
static void print_act16(const k22_run *r, int on, const char *what)
{
    if (on && r->d->rank == 0)
        printf("k22: %s kept in %s, as the GEMMs that read them take them (the same figures, half "
               "the memory for those; K22_ACT16=0 keeps them as floats)\n", what,
               k22_precision_name((k22_precision)r->be->precision));
}

static k22_status init_prior(k22_run *r, k22_err *err)
{
    const k22_train_opts *o = r->o;
    char lv[24];
    if (o->checkpoint_levels)
        return k22_err_set(err, K22_ERR_ARG, "--checkpoint_levels %s: train-decoder only (the prior's blocks "
                           "are all alike: --gradient_checkpointing re-runs each of them)",
                           k22_ckpt_levels_name(o->checkpoint_levels, lv));
    k22_train_hparams hp;
    k22_status st = hparams_of(r, &hp, err);
    if (!st) st = k22_prior_trainer_init(&r->pt, r->be, r->comp_dir, &hp, err);
    if (st) return st;
    const k22_prior_config *c = &r->pt.core.cfg.u.prior;
    const k22_pack_meta *m = k22_pack_meta_of(r->pack);
    if (c->embedding_proj_dim != c->clip_embed_dim || c->num_embeddings != K22_PACK_TOKENS ||
        m->embed_dim != c->clip_embed_dim)
        return k22_err_set(err, K22_ERR_ARG,
                           "%s: the pack holds %d-wide CLIP embeddings and 77 tokens, the prior takes "
                           "text_embeds of %d, hidden states of %d x %d and image embeddings of %d",
                           o->pack, m->embed_dim, c->embedding_proj_dim, c->num_embeddings,
                           c->clip_embed_dim, c->clip_embed_dim);
    print_act16(r, r->pt.model.act16, "the blocks' layer-norm outputs, attention q, k, v, merged heads and MLP "
                "activations");
    r->E = c->clip_embed_dim;
    r->EP = c->embedding_proj_dim;
    r->L = c->num_embeddings;
    r->T = (int)r->pt.sched.T;
    r->noise_n = r->E;
    size_t B = (size_t)r->B;
    r->text_embeds = k22_xcalloc(B * (size_t)r->EP, sizeof(float));
    r->text_hidden = k22_xcalloc(B * (size_t)(r->L * r->E), sizeof(float));
    r->image_embeds = k22_xcalloc(B * (size_t)r->E, sizeof(float));
    r->mask = k22_xcalloc(B * (size_t)r->L, 1);
    return K22_OK;
}

/* What --checkpoint_levels chooses, beside every other choice: the activations a micro-batch
 * keeps from forward to backward and the forward FLOPs backward re-runs (test_run_guards reads it). */
static void print_ckpt_levels(const k22_run *r)
{
    const k22_unet *m = &r->dt.model;
    const k22_unet_config *c = &m->cfg;
    int n = c->nblocks, H = r->latent_h, W = r->latent_w, B = r->B;
    k22_flops fwd;
    k22_err e;
    if (k22_flops_unet_forward(c, B, H, W, &fwd, &e)) return;
    printf("k22: gradient checkpointing, %dx%d latents, micro-batch %d: activations kept / arena (device memory "
           "beside the weights and optimizer state) / forward FLOPs re-run:", H, W, B);
    /* off, then --checkpoint_levels 1 .. n-1, then 0 (every block) */
    for (int k = 0; k <= n; k++) {
        int levels = k22_unet_ckpt_candidate(m, k);
        double re = k22_flops_unet_recompute(m, B, H, W, levels);
        size_t kept = k22_unet_saved_floats(m, B, H, W, levels);
        size_t arena = k22_unet_arena_floats_ckpt(m, B, H, W, 1, levels);
        if (k == 0) printf(" off");
        else if (k == n) printf("; --checkpoint_levels 0 (every block)");
        else printf("; %d", k);
        printf(" %.1f / %.1f MiB / %.0f%%", kept * 4.0 / 1048576, arena * 4.0 / 1048576, 100.0 * re / fwd.total);
    }
    char now[64];
    int g = m->grad_ckpt;
    if (g == 0) snprintf(now, sizeof now, "off (no block is re-run)");
    else if (g >= n) snprintf(now, sizeof now, "--checkpoint_levels 0 (every block)");
    else snprintf(now, sizeof now, "--checkpoint_levels %d", g);
    printf("; this run: %s\n", now);
    const k22_ckpt_auto *a = &r->dt.ckpt_auto;
    if (a->on)
        printf("k22: --checkpoint_levels auto: %.1f MiB free after the weights, gradients and optimizer state; "
               "%.1f MiB kept back for the backend's scratch and libraries%s; the fewest re-run levels that fit: "
               "%s%s\n", a->free_bytes / 1048576.0, a->reserve_bytes / 1048576.0,
               r->be->precision != K22_PREC_FP32 ? " and the 16-bit weights" : "", now, /* as the reserve counts */
               a->fits ? "" : " (none fits; this is the smallest: the run may run out of memory: a smaller "
                              "--train_batch_size with more --gradient_accumulation_steps keeps the global batch)");
}

static k22_status init_decoder(k22_run *r, k22_err *err)
{
    const k22_train_opts *o = r->o;
    if (!r->pipe_dir[0])
        return k22_err_set(err, K22_ERR_ARG, "--pretrained %s: train-decoder needs the decoder pipeline "
                           "folder (unet/, movq/, scheduler/, model_index.json)", o->pretrained);
    char path[4096];
    k22_sched_config sc;
    k22_status st = k22_fs_join(path, sizeof path, r->pipe_dir, "scheduler/scheduler_config.json", err);
    if (!st) st = k22_sched_config_read(path, &sc, err);
    if (st) return st;
    const k22_pack_meta *m = k22_pack_meta_of(r->pack);
    /* Latents packed by another MoVQ would train fine but decode to the wrong size. */
    k22_model_config mc;
    st = k22_fs_join(path, sizeof path, r->pipe_dir, "movq/config.json", err);
    if (!st) st = k22_config_read(path, &mc, err);
    if (!st && (mc.kind != K22_MODEL_MOVQ || (1 << (mc.u.movq.nblocks - 1)) != m->latent_factor))
        st = k22_err_set(err, K22_ERR_ARG, "%s: latents at resolution / %d, but %s encodes at / %d", o->pack,
                         m->latent_factor, path, mc.kind == K22_MODEL_MOVQ ? 1 << (mc.u.movq.nblocks - 1) : 0);
    if (st) return st;
    k22_decoder_train_hparams hp;
    k22_decoder_train_hparams_default(&hp);
    st = hparams_of(r, &hp.base, err);
    if (st) return st;
    hp.latent_h = hp.latent_w = m->resolution / m->latent_factor;
    st = k22_decoder_trainer_init(&r->dt, r->be, r->comp_dir, &sc, &hp, err);
    if (st) return st;
    if (m->embed_dim != r->dt.core.cfg.u.unet.encoder_hid_dim || m->latent_channels != 4)
        return k22_err_set(err, K22_ERR_ARG, "%s: the pack holds %d-wide image embeddings and %d latent "
                           "channels, the UNet takes %d and 4", o->pack, m->embed_dim,
                           m->latent_channels, r->dt.core.cfg.u.unet.encoder_hid_dim);
    r->E = m->embed_dim;
    r->latent_h = r->latent_w = m->resolution / m->latent_factor;
    r->T = (int)r->dt.sched.T;
    r->noise_n = 4 * (int64_t)r->latent_h * r->latent_w;
    r->image_embeds = k22_xcalloc((size_t)r->B * (size_t)r->E, sizeof(float));
    r->latents = k22_xcalloc((size_t)r->B * (size_t)r->noise_n, sizeof(float));
    print_act16(r, r->dt.model.act16, "the convolution inputs after a group norm (resnets, head) and the attention "
                "blocks' tokens, q, k, v and merged heads");
    if (o->gradient_checkpointing && r->d->rank == 0) print_ckpt_levels(r);
    return K22_OK;
}

k22_status k22_run_stage_init(k22_run *r, k22_err *err)
{
    k22_status st = r->prior ? init_prior(r, err) : init_decoder(r, err);
    if (st) return st;
    r->noise = k22_xcalloc((size_t)r->B * (size_t)r->noise_n, sizeof(float));
    r->t = k22_xcalloc((size_t)r->B, sizeof(int64_t));
    return K22_OK;
}

void k22_run_stage_free(k22_run *r)
{
    k22_prior_trainer_free(&r->pt);
    k22_decoder_trainer_free(&r->dt);
    free(r->text_embeds);
    free(r->text_hidden);
    free(r->image_embeds);
    free(r->latents);
    free(r->noise);
    free(r->mask);
    free(r->t);
}

k22_status k22_run_read_batch(k22_run *r, int64_t step, k22_err *err)
{
    k22_shard *s = &r->shard;
    k22_status st;
    if (r->prior) {
        st = k22_shard_read(s, r->pack, step, K22_PACK_TEXT_EMBEDS, r->text_embeds, err);
        if (!st) st = k22_shard_read(s, r->pack, step, K22_PACK_TEXT_HIDDEN, r->text_hidden, err);
        if (!st) st = k22_shard_read(s, r->pack, step, K22_PACK_ATTENTION_MASK, r->mask, err);
        if (!st) st = k22_shard_read(s, r->pack, step, K22_PACK_IMAGE_EMBEDS, r->image_embeds, err);
    } else {
        st = k22_shard_read(s, r->pack, step, K22_PACK_LATENTS, r->latents, err);
        if (!st) st = k22_shard_read(s, r->pack, step, K22_PACK_IMAGE_EMBEDS, r->image_embeds, err);
    }
    if (st) return st;
    /* Global position: rank r's step s is global batch s * N + r of the epoch's padded order. */
    int64_t L = r->steps_per_epoch * r->d->world * r->B;
    int64_t base = r->epoch * L + (step * r->d->world + r->d->rank) * r->B;
    for (int i = 0; i < r->B; i++) {
        r->t[i] = k22_train_timestep((uint64_t)r->o->seed, base + i, r->T);
        k22_train_noise((uint64_t)r->o->seed, base + i, r->noise + (size_t)i * (size_t)r->noise_n, r->noise_n);
    }
    return K22_OK;
}

double k22_run_micro_step(k22_run *r)
{
    if (r->prior) {
        k22_prior_batch b = {.B = r->B, .text_embeds = r->text_embeds, .text_hidden = r->text_hidden,
                             .text_mask = r->mask, .image_embeds = r->image_embeds, .noise = r->noise,
                             .timesteps = r->t};
        return k22_prior_trainer_micro_step(&r->pt, &b);
    }
    k22_decoder_batch b = {.B = r->B, .latents = r->latents, .image_embeds = r->image_embeds,
                           .noise = r->noise, .timesteps = r->t};
    return k22_decoder_trainer_micro_step(&r->dt, &b);
}

k22_train_core *k22_run_core(k22_run *r)
{
    return r->prior ? &r->pt.core : &r->dt.core;
}

const k22_train_core *k22_run_core_c(const k22_run *r)
{
    return r->prior ? &r->pt.core : &r->dt.core;
}

void k22_run_sync(k22_run *r, k22_train_step_log *log)
{
    k22_train_core_sync(k22_run_core(r), log);
}

int64_t k22_run_global_step(const k22_run *r)
{
    return r->prior ? r->pt.core.global_step : r->dt.core.global_step;
}
