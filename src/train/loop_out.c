/* loop_out.c: the training run's writes and reads of disk: checkpoints (ckpt.h), resuming from
 * one, and the final pipeline folder. Rank 0 writes; under --zero_stage 1 every rank first takes
 * part in gathering the sharded optimizer state, so the files are those of an unsharded run. */
#include "loop_internal.h"

#include "k22/fsutil.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct {
    k22_optim *opt;
    int64_t total;
    k22_ema *ema;
    int64_t *global_step;
    const char *comp, *comp_ema;
} bufs;

static bufs run_bufs(k22_run *r)
{
    k22_train_core *c = k22_run_core(r);
    k22_optim *o = &c->opt;
    return (bufs){o, o->total, &o->ema, &c->global_step, r->prior ? "prior" : "unet",
                  r->prior ? "prior_ema" : "unet_ema"};
}

/* The whole optimizer state in rank 0's host memory (total floats each; NULL on the other ranks,
 * and s without EMA). */
typedef struct {
    float *m, *v, *s;
} host_state;

/* Every rank calls it (collectives under ZeRO-1); moments: also M and V, else only the EMA. */
static void host_state_gather(k22_run *r, host_state *h, int moments)
{
    k22_optim *o = &k22_run_core(r)->opt;
    size_t bytes = (size_t)o->total * sizeof(float);
    int root = r->d->rank == 0;
    memset(h, 0, sizeof *h);
    if (root && moments) h->m = k22_xmalloc(bytes), h->v = k22_xmalloc(bytes);
    if (root && o->S) h->s = k22_xmalloc(bytes);
    if (moments) k22_optim_gather(o, o->M, h->m), k22_optim_gather(o, o->V, h->v);
    if (o->S) k22_optim_gather(o, o->S, h->s);
}

static void host_state_free(host_state *h)
{
    free(h->m);
    free(h->v);
    free(h->s);
}

/* The weights (w NULL: the trained ones, whole on every rank) or the host copy w. */
static k22_status save_component(k22_run *r, const char *dir, const float *w, k22_err *err)
{
    k22_train_core *c = k22_run_core(r);
    return w ? k22_optim_save_host(w, dir, &c->cfg, &c->ps, err) : k22_train_core_save(c, dir, 0, err);
}

static k22_status write_checkpoint(k22_run *r, const host_state *h, int64_t epoch, int64_t epoch_pos,
                                   char *final, size_t n, k22_err *err)
{
    const k22_train_opts *o = r->o;
    bufs b = run_bufs(r);
    char tmp[4096], p[4096];
    k22_status st = k22_ckpt_dir(o->output_dir, *b.global_step, final, n, err);
    if (!st && snprintf(tmp, sizeof tmp, "%s.tmp", final) >= (int)sizeof tmp)
        st = k22_err_set(err, K22_ERR_ARG, "%s: path too long", final);
    if (!st) st = k22_fs_rm_rf(tmp, err);
    if (!st) st = k22_ckpt_prune(o->output_dir, o->checkpoints_total_limit, err);
    if (!st) st = k22_fs_join(p, sizeof p, tmp, b.comp, err);
    if (!st) st = save_component(r, p, NULL, err);
    if (!st && h->s) st = k22_fs_join(p, sizeof p, tmp, b.comp_ema, err);
    if (!st && h->s) st = save_component(r, p, h->s, err);
    if (st) return st;
    k22_ckpt_state s = {0};
    snprintf(s.stage, sizeof s.stage, "%s", r->prior ? "prior" : "decoder");
    s.global_step = *b.global_step;
    s.epoch = epoch;
    s.epoch_pos = epoch_pos;
    s.seed = o->seed;
    s.world_size = r->d->world;
    s.train_batch_size = r->B;
    s.gradient_accumulation_steps = r->A;
    s.lr_sched_steps = k22_lr_sched_steps(&k22_run_core(r)->lr, *b.global_step);
    s.ema_step = b.ema->optimization_step;
    s.ema_decay = b.ema->cur_decay;
    if (k22_run_core(r)->scaler.on) {
        s.loss_scale = k22_run_core(r)->scaler.scale;
        s.loss_scale_good = k22_run_core(r)->scaler.good;
    }
    s.hparams = o->settings;
    st = k22_fs_join(p, sizeof p, tmp, "k22_state", err);
    if (!st) st = k22_ckpt_state_write(p, &s, h->m, h->v, b.total, err);
    if (!st) st = k22_ckpt_commit(tmp, final, err);
    return st;
}

void k22_run_checkpoint(k22_run *r, int64_t epoch, int64_t epoch_pos)
{
    host_state h;
    host_state_gather(r, &h, 1);
    if (r->d->rank == 0) {
        k22_err err;
        k22_err_clear(&err);
        char final[4096];
        /* The other ranks wait in the barrier below: a failed write must end them all. */
        if (write_checkpoint(r, &h, epoch, epoch_pos, final, sizeof final, &err))
            K22_FATAL("writing a checkpoint: %s", err.msg);
        printf("k22: saved %s\n", final);
        fflush(stdout);
    }
    host_state_free(&h);
    k22_dist_barrier(r->d);
}

static k22_status load_ema(k22_run *r, const char *ckpt, bufs *b, k22_err *err)
{
    char p[4096];
    k22_model_config cfg;
    k22_params ps;
    k22_params_init(&ps);
    k22_status st = k22_fs_join(p, sizeof p, ckpt, b->comp_ema, err);
    if (!st && !k22_fs_is_dir(p))
        st = k22_err_set(err, K22_ERR_ARG, "%s: missing; the checkpoint was written without --use_ema", p);
    if (!st) st = k22_component_load(p, &cfg, &ps, err);
    if (!st && (int64_t)ps.total != b->total)
        st = k22_err_set(err, K22_ERR_KEY, "%s: %zu parameters, the model has %lld", p, ps.total,
                         (long long)b->total);
    if (!st) k22_optim_scatter(b->opt, b->opt->S, ps.data);
    k22_params_free(&ps);
    return st;
}

/* The weights came from ckpt/prior (unet) already; this restores the rest. */
k22_status k22_run_resume(k22_run *r, const char *ckpt, k22_err *err)
{
    const k22_train_opts *o = r->o;
    bufs b = run_bufs(r);
    char p[4096];
    k22_ckpt_state s;
    size_t bytes = (size_t)b.total * sizeof(float);
    float *m = k22_xmalloc(bytes), *v = k22_xmalloc(bytes);
    k22_status st = k22_fs_join(p, sizeof p, ckpt, "k22_state", err);
    if (!st) st = k22_ckpt_state_read(p, &s, m, v, &k22_run_core(r)->ps, err);
    if (st) goto out_nostate;
    int64_t gb_old = (int64_t)s.world_size * s.train_batch_size * s.gradient_accumulation_steps;
    int64_t gb_new = (int64_t)r->d->world * r->B * r->A;
    int64_t unit = (int64_t)r->d->world * r->B;
    if (strcmp(s.stage, r->prior ? "prior" : "decoder"))
        st = k22_err_set(err, K22_ERR_ARG, "%s: a %s checkpoint, this is train-%s", ckpt, s.stage,
                         r->prior ? "prior" : "decoder");
    else if (s.seed != o->seed)
        st = k22_err_set(err, K22_ERR_ARG, "%s: written with --seed %lld, this run has --seed %lld "
                         "(the data order and noise depend on it)", ckpt, (long long)s.seed, (long long)o->seed);
    else if (gb_old != gb_new || s.epoch_pos % unit)
        st = k22_err_set(err, K22_ERR_ARG,
                         "%s: written with a global batch of %lld (%d ranks x %d x %d accumulation), this run "
                         "has %lld (%d ranks x %lld x %d): resuming needs the same global batch",
                         ckpt, (long long)gb_old, s.world_size, s.train_batch_size,
                         s.gradient_accumulation_steps, (long long)gb_new, r->d->world, (long long)r->B, r->A);
    else if (b.opt->S == NULL && s.ema_step > 0)
        st = k22_err_set(err, K22_ERR_ARG, "%s: written with --use_ema; add --use_ema to resume", ckpt);
    if (!st && b.opt->S) st = load_ema(r, ckpt, &b, err);
    if (st) goto out;
    if (s.world_size != r->d->world && r->d->rank == 0)
        fprintf(stderr, "k22: note: resuming %d-rank training on %d ranks; the learning-rate scheduler goes "
                        "on from its %lld steps and takes %d per optimizer step from here on (as accelerate)\n",
                s.world_size, r->d->world, (long long)s.lr_sched_steps, r->d->world);
    /* accelerate restores the scheduler's step count, then steps it world-size times. */
    k22_run_core(r)->lr.resumed_at = s.global_step;
    k22_run_core(r)->lr.resumed_steps = s.lr_sched_steps;
    k22_optim_scatter(b.opt, b.opt->M, m);
    k22_optim_scatter(b.opt, b.opt->V, v);
    *b.global_step = s.global_step;
    b.ema->optimization_step = s.ema_step;
    b.ema->cur_decay = s.ema_decay;
    /* An fp16 run goes on with its scale; a checkpoint of another precision starts the scaler anew. */
    k22_loss_scaler *ls = &k22_run_core(r)->scaler;
    if (ls->on && s.loss_scale > 0) ls->scale = s.loss_scale, ls->good = s.loss_scale_good;
    r->epoch = s.epoch;
    r->start_micro = s.epoch_pos / unit;
    if (r->start_micro >= r->steps_per_epoch) r->epoch++, r->start_micro = 0;
out:
    k22_ckpt_state_free(&s);
out_nostate:
    free(m);
    free(v);
    return st;
}

/* Streams one file (weights may be gigabytes: no whole-file read). */
static k22_status copy_file(const char *from, const char *to, k22_err *err)
{
    FILE *in = fopen(from, "rb");
    if (!in) return k22_err_set(err, K22_ERR_IO, "%s: %s", from, strerror(errno));
    FILE *out = fopen(to, "wb");
    if (!out) {
        fclose(in);
        return k22_err_set(err, K22_ERR_IO, "%s: %s", to, strerror(errno));
    }
    char buf[1 << 16];
    size_t n;
    k22_status st = K22_OK;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        if (fwrite(buf, 1, n, out) != n) {
            st = k22_err_set(err, K22_ERR_IO, "%s: write failed: %s", to, strerror(errno));
            break;
        }
    if (!st && ferror(in)) st = k22_err_set(err, K22_ERR_IO, "%s: read failed", from);
    if (fclose(out) && !st) st = k22_err_set(err, K22_ERR_IO, "%s: %s", to, strerror(errno));
    fclose(in);
    return st;
}

static k22_status copy_tree(const char *from, const char *to, int depth, k22_err *err)
{
    if (depth > 8) return k22_err_set(err, K22_ERR_FORMAT, "%s: folders nested too deep", from);
    if (!k22_fs_is_dir(from)) return copy_file(from, to, err);
    k22_status st = k22_fs_mkdir_p(to, err);
    DIR *dir = st ? NULL : opendir(from);
    if (!st && !dir) st = k22_err_set(err, K22_ERR_IO, "%s: cannot list", from);
    struct dirent *e;
    while (!st && (e = readdir(dir))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char a[4096], b[4096];
        st = k22_fs_join(a, sizeof a, from, e->d_name, err);
        if (!st) st = k22_fs_join(b, sizeof b, to, e->d_name, err);
        if (!st) st = copy_tree(a, b, depth + 1, err);
    }
    if (dir) closedir(dir);
    return st;
}

/* Copies each model_index.json component but the trained one, then model_index.json itself. */
static k22_status copy_pipeline(k22_run *r, const char *skip, k22_err *err)
{
    char p[4096], q[4096];
    k22_model_index mi;
    k22_status st = k22_fs_join(p, sizeof p, r->pipe_dir, "model_index.json", err);
    if (!st) st = k22_model_index_read(p, &mi, err);
    for (int i = 0; !st && i < mi.n; i++) {
        if (!strcmp(mi.comp[i].name, skip) || !mi.comp[i].library[0]) continue;
        st = k22_fs_join(p, sizeof p, r->pipe_dir, mi.comp[i].name, err);
        if (!st) st = k22_fs_join(q, sizeof q, r->o->output_dir, mi.comp[i].name, err);
        if (!st && k22_fs_exists(p)) st = k22_fs_rm_rf(q, err);
        if (!st && k22_fs_exists(p)) st = copy_tree(p, q, 0, err);
    }
    if (!st) st = k22_fs_join(p, sizeof p, r->pipe_dir, "model_index.json", err);
    if (!st) st = k22_fs_join(q, sizeof q, r->o->output_dir, "model_index.json", err);
    if (!st) st = copy_file(p, q, err);
    return st;
}

/* The final weights (w NULL: the trained ones) as --save_dtype. */
static k22_status save_final_component(k22_run *r, const char *dir, const float *w, k22_err *err)
{
    k22_train_core *c = k22_run_core(r);
    const char *sd = r->o->save_dtype ? r->o->save_dtype : "fp32";
    k22_dtype t = !strcmp(sd, "fp16") ? K22_DTYPE_F16 : !strcmp(sd, "bf16") ? K22_DTYPE_BF16 : K22_DTYPE_F32;
    if (w) memcpy(c->ps.data, w, c->ps.total * sizeof(float));
    else c->be->to_host(c->be->ctx, c->ps.data, c->opt.P, c->ps.total * sizeof(float));
    size_t over = 0;
    for (size_t i = 0; t == K22_DTYPE_F16 && i < c->ps.total; i++) over += fabsf(c->ps.data[i]) >= 65520.0f; /* rounds to inf */
    if (over)
        fprintf(stderr, "k22: warning: %zu weights lie outside fp16's range and are saved as inf (--save_dtype fp16); "
                        "the checkpoints keep them in fp32\n", over);
    return k22_component_save_dtype(dir, &c->cfg, &c->ps, t, K22_SHARD_BYTES_DEFAULT, err);
}

/* As the scripts: the EMA weights (with --use_ema) become the saved model. */
static k22_status save_final(k22_run *r, const float *ema, k22_err *err)
{
    bufs b = run_bufs(r);
    char dir[4096], tmp[4096];
    k22_status st = k22_fs_join(dir, sizeof dir, r->o->output_dir, b.comp, err);
    if (!st && snprintf(tmp, sizeof tmp, "%s.tmp", dir) >= (int)sizeof tmp)
        st = k22_err_set(err, K22_ERR_ARG, "%s: path too long", dir);
    if (!st) st = k22_fs_rm_rf(tmp, err);
    if (!st) st = save_final_component(r, tmp, ema, err);
    if (!st) st = k22_fs_rm_rf(dir, err);
    if (!st) st = k22_fs_rename(tmp, dir, err);
    if (!st && r->pipe_dir[0]) st = copy_pipeline(r, b.comp, err);
    if (!st) st = k22_fs_fsync_path(r->o->output_dir, err);
    return st;
}

k22_status k22_run_save_final(k22_run *r, k22_err *err)
{
    host_state h;
    host_state_gather(r, &h, 0);
    k22_status st = r->d->rank == 0 ? save_final(r, h.s, err) : K22_OK;
    host_state_free(&h);
    return st;
}
