/* loop_images.c: validation images during training (--validation_prompts): rank 0 runs the
 * prior and decoder pipelines (sample.h) with the weights being trained (their EMA under
 * --use_ema, as the scripts validate) and writes OUT/validation/step-N.png, one grid of the
 * prompts, and a metrics.jsonl line naming it and the prompts. train-prior takes the decoder
 * from --decoder_for_validation (without it, no images: the held-out loss of --validation_split
 * is the prior's measure); train-decoder takes the prior from --prior_for_validation. Under
 * --zero_stage 1 the EMA is sharded: every rank gathers it into the gradient buffer (whole and
 * free between optimizer steps) for the drawing, and zeroes that again after. */
#include "loop_internal.h"

#include "k22/fsutil.h"
#include "k22/sample.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

k22_status k22_run_images_open(k22_run *r, k22_err *err)
{
    const k22_train_opts *o = r->o;
    if (!o->validation_prompts.n) return K22_OK;
    const char *prior = r->prior ? r->pipe_dir : o->other_for_validation;
    const char *decoder = r->prior ? o->other_for_validation : r->pipe_dir;
    if (r->prior && !r->pipe_dir[0])
        return k22_err_set(err, K22_ERR_ARG, "--validation_prompts needs --pretrained to be a prior pipeline "
                           "folder (text encoder, tokenizer), not the bare prior %s", o->pretrained);
    if (!r->prior && !prior)
        return k22_err_set(err, K22_ERR_ARG, "--validation_prompts needs --prior_for_validation DIR (a prior "
                           "pipeline folder) to turn the prompts into image embeddings");
    if (!decoder || !decoder[0]) {
        if (r->d->rank == 0)
            printf("k22: no --decoder_for_validation: no validation images; --validation_split gives the "
                   "prior's held-out loss\n");
        return K22_OK;
    }
    if (r->d->rank) return K22_OK;
    k22_status st = k22_sampler_open_on(&r->sampler, prior, decoder, r->be, err);
    if (st) {
        k22_err_prefix(err, "validation images (--%s %s)", r->prior ? "decoder_for_validation" : "prior_for_validation",
                       o->other_for_validation);
        return st;
    }
    /* The trained component runs with the trainer's buffer: no copy, always current. */
    k22_train_core *c = k22_run_core(r);
    const float *w = !c->opt.S ? c->opt.P : c->opt.zero ? c->opt.G : c->opt.S;
    st = k22_sampler_use_weights(r->sampler, r->prior ? K22_MODEL_PRIOR : K22_MODEL_UNET, &c->ps, w, err);
    if (!st) {
        int lh, lw;
        st = k22_sampler_sizes(r->sampler, r->val_size, r->val_size, &lh, &lw, &r->val_h, &r->val_w, err);
    }
    return st;
}

void k22_run_images_close(k22_run *r)
{
    k22_sampler_free(r->sampler);
    r->sampler = NULL;
}

static void log_images(k22_run *r, k22_log *lg, int64_t step, const char *rel)
{
    if (!lg->jsonl) return;
    json_t *o = json_object(), *ps = json_array();
    for (int i = 0; i < r->o->validation_prompts.n; i++) json_array_append_new(ps, json_string(r->o->validation_prompts.v[i]));
    json_object_set_new(o, "step", json_integer(step));
    json_object_set_new(o, "validation_images", json_string(rel));
    json_object_set_new(o, "prompts", ps);
    char *s = json_dumps(o, JSON_PRESERVE_ORDER | JSON_COMPACT);
    if (s) fprintf(lg->jsonl, "%s\n", s), fflush(lg->jsonl);
    free(s);
    json_decref(o);
}

void k22_run_images(k22_run *r, k22_log *lg)
{
    int64_t step = k22_run_global_step(r);
    if (!r->o->validation_prompts.n || step == r->images_step) return;
    r->images_step = step;
    k22_optim *opt = &k22_run_core(r)->opt;
    const float *ema = opt->S && opt->zero ? k22_optim_gather_begin(opt, opt->S) : NULL;
    if (r->d->rank == 0 && r->sampler) {
        const k22_train_opts *o = r->o;
        double t0 = k22_now_s();
        k22_sample_opts so;
        k22_sample_opts_default(&so);
        so.seed = (uint64_t)o->seed;
        so.decoder_steps = 20; /* the scripts' validation pipeline call */
        so.height = so.width = r->val_size;
        k22_sample_result res;
        memset(&res, 0, sizeof res);
        char rel[64], dir[4096], path[4096];
        k22_err err;
        k22_err_clear(&err);
        snprintf(rel, sizeof rel, "validation/step-%lld.png", (long long)step);
        k22_status st = k22_sample_images(r->sampler, o->validation_prompts.v, o->validation_prompts.n, &so, &res, &err);
        if (!st) st = k22_fs_join(dir, sizeof dir, o->output_dir, "validation", &err);
        if (!st) st = k22_fs_mkdir_p(dir, &err);
        if (!st) st = k22_fs_join(path, sizeof path, o->output_dir, rel, &err);
        int cols = res.n < 4 ? res.n : 4;
        if (!st) st = k22_sample_grid_png(path, res.rgb, res.n, res.height, res.width, cols, &err);
        k22_sample_result_free(&res);
        /* Images are for people to look at: a failure is reported, training goes on. */
        if (st) {
            fprintf(stderr, "%sk22: validation images at step %lld failed: %s\n", lg->open_line ? "\n" : "",
                    (long long)step, err.msg);
        } else {
            printf("%sk22: step %lld: validation images %s (%d prompts, %.1f s)\n", lg->open_line ? "\n" : "",
                   (long long)step, path, o->validation_prompts.n, k22_now_s() - t0);
            log_images(r, lg, step, rel);
        }
        lg->open_line = 0;
        fflush(stdout);
    }
    if (ema) k22_optim_gather_end(opt);
    k22_dist_barrier(r->d);
}
