/* loop.c: the training run of `k22 train-prior` / `k22 train-decoder` (loop.h): set-up, the
 * epochs of micro-steps with one gradient all-reduce per optimizer step, logging, checkpoints,
 * the stop signals, and the final folder. */
#include "loop_internal.h"

#include "k22/fsutil.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static volatile sig_atomic_t k22_stop_requested;

static void on_stop_signal(int sig)
{
    (void)sig;
    k22_stop_requested = 1;
}

static void install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static k22_status check_opts(const k22_train_opts *o, k22_err *err)
{
    if (strcmp(o->mixed_precision, "no"))
        return k22_err_set(err, K22_ERR_UNSUPPORTED, "--mixed_precision %s needs the CUDA backend, which "
                           "train does not drive yet; on --device cpu|cpu-ref use --mixed_precision no",
                           o->mixed_precision);
    if (o->train_batch_size < 1 || o->train_batch_size > 65536)
        return k22_err_set(err, K22_ERR_ARG, "--train_batch_size %lld: must be in 1..65536", (long long)o->train_batch_size);
    if (o->gradient_accumulation_steps < 1 || o->gradient_accumulation_steps > 65536)
        return k22_err_set(err, K22_ERR_ARG, "--gradient_accumulation_steps %lld: must be in 1..65536",
                           (long long)o->gradient_accumulation_steps);
    if (o->max_train_steps < 0 || o->num_train_epochs < 1 || o->checkpointing_steps < 1 || o->log_every < 1 ||
        o->stop_at_step < 0 || o->seed < 0 || o->lr_warmup_steps < 0)
        return k22_err_set(err, K22_ERR_ARG, "--max_train_steps, --lr_warmup_steps, --seed and --stop_at_step must "
                           "be >= 0; --num_train_epochs, --checkpointing_steps and --log_every >= 1");
    return K22_OK;
}

/* --pretrained: a pipeline folder (model_index.json) or, for the prior, its component folder. */
static k22_status resolve_pretrained(k22_run *r, k22_err *err)
{
    const char *pre = r->o->pretrained, *comp = r->prior ? "prior" : "unet";
    char p[4096];
    k22_status st = k22_fs_join(p, sizeof p, pre, "model_index.json", err);
    if (st) return st;
    if (k22_fs_is_file(p)) {
        snprintf(r->pipe_dir, sizeof r->pipe_dir, "%s", pre);
        return k22_fs_join(r->comp_dir, sizeof r->comp_dir, pre, comp, err);
    }
    st = k22_fs_join(p, sizeof p, pre, "config.json", err);
    if (!st && r->prior && k22_fs_is_file(p)) {
        snprintf(r->comp_dir, sizeof r->comp_dir, "%s", pre);
        return K22_OK;
    }
    return st ? st : k22_err_set(err, K22_ERR_ARG, "--pretrained %s: no model_index.json%s", pre,
                                 r->prior ? " and no config.json (need a prior pipeline or prior folder)" : "");
}

/* --resume_from_checkpoint latest | PATH (a folder, or a checkpoint-N name under --output_dir).
 * *ckpt is "" when latest finds none (the run starts fresh, as the scripts do). */
static k22_status resolve_resume(k22_run *r, char *ckpt, size_t n, k22_err *err)
{
    const k22_train_opts *o = r->o;
    ckpt[0] = '\0';
    if (!o->resume_from_checkpoint || !o->resume_from_checkpoint[0]) return K22_OK;
    if (!strcmp(o->resume_from_checkpoint, "latest")) {
        int64_t step;
        k22_status st = k22_ckpt_latest(o->output_dir, &step, ckpt, n, err);
        if (!st && step < 0 && r->d->rank == 0)
            printf("k22: no complete checkpoint in %s; starting a new training run\n", o->output_dir);
        return st;
    }
    const char *a = o->resume_from_checkpoint;
    k22_status st = K22_OK;
    if (k22_fs_is_dir(a)) snprintf(ckpt, n, "%s", a);
    else st = k22_fs_join(ckpt, n, o->output_dir, a, err);
    char m[4096];
    if (!st) st = k22_fs_join(m, sizeof m, ckpt, K22_CKPT_MARKER, err);
    if (!st && !k22_fs_is_file(m))
        st = k22_err_set(err, K22_ERR_ARG, "--resume_from_checkpoint %s: %s is not a complete checkpoint "
                         "(no %s)", a, ckpt, K22_CKPT_MARKER);
    return st;
}

static k22_status open_data(k22_run *r, k22_err *err)
{
    const k22_train_opts *o = r->o;
    k22_status st = k22_pack_open(o->pack, &r->pack, err);
    if (st) return st;
    k22_pack_want w = {.need = r->prior ? K22_PACK_FOR_PRIOR : K22_PACK_FOR_DECODER};
    st = k22_pack_check_compatible(r->pack, &w, err);
    if (!st && k22_pack_rows(r->pack) < 1) st = k22_err_set(err, K22_ERR_ARG, "%s: no committed rows", o->pack);
    if (!st) st = k22_shard_init(&r->shard, k22_pack_rows(r->pack), r->d->world, r->d->rank, r->B,
                                 (uint64_t)o->seed, err);
    if (st) return st;
    /* The scripts' arithmetic: updates per epoch = ceil(dataloader steps / A). */
    r->steps_per_epoch = k22_shard_steps(&r->shard);
    r->updates_per_epoch = (r->steps_per_epoch + r->A - 1) / r->A;
    r->max_steps = o->max_train_steps > 0 ? o->max_train_steps : o->num_train_epochs * r->updates_per_epoch;
    r->epochs = (r->max_steps + r->updates_per_epoch - 1) / r->updates_per_epoch;
    return K22_OK;
}

static k22_status setup(k22_run *r, k22_err *err)
{
    char ckpt[4096];
    k22_status st = check_opts(r->o, err);
    if (!st) {
        r->be = k22_backend_by_name(r->o->device, err);
        if (!r->be) st = err->code ? err->code : K22_ERR_ARG;
    }
    if (!st) st = resolve_pretrained(r, err);
    if (!st) st = open_data(r, err);
    if (!st) st = resolve_resume(r, ckpt, sizeof ckpt, err);
    if (!st && ckpt[0]) st = k22_fs_join(r->comp_dir, sizeof r->comp_dir, ckpt, r->prior ? "prior" : "unet", err);
    if (!st) st = k22_run_stage_init(r, err);
    if (!st && ckpt[0]) st = k22_run_resume(r, ckpt, err);
    if (!st && ckpt[0] && r->d->rank == 0)
        printf("k22: resuming from %s at step %lld (epoch %lld, micro-step %lld)\n", ckpt,
               (long long)k22_run_global_step(r), (long long)r->epoch, (long long)r->start_micro);
    if (!st && r->d->rank == 0) st = k22_fs_mkdir_p(r->o->output_dir, err);
    return st;
}

static void print_plan(const k22_run *r)
{
    printf("k22 train-%s: %d rank(s) x %d samples x %d accumulation = global batch %lld; %lld rows, "
           "%lld micro-steps and %lld optimizer steps per epoch; %lld steps over %lld epoch(s)\n",
           r->prior ? "prior" : "decoder", r->d->world, r->B, r->A,
           (long long)r->d->world * r->B * r->A, (long long)k22_pack_rows(r->pack),
           (long long)r->steps_per_epoch, (long long)r->updates_per_epoch, (long long)r->max_steps,
           (long long)r->epochs);
    fflush(stdout);
}

typedef struct {
    FILE *jsonl;
    double t0;
    int64_t first_step;
} k22_log;

static void log_step(const k22_run *r, k22_log *lg, int64_t step, int64_t epoch, double loss, double lr,
                     float gn)
{
    if (r->d->rank) return;
    if (lg->jsonl) {
        fprintf(lg->jsonl, "{\"step\": %lld, \"epoch\": %lld, \"loss\": %.17g, \"lr\": %.17g, \"grad_norm\": %.9g}\n",
                (long long)step, (long long)epoch, loss, lr, (double)gn);
        fflush(lg->jsonl);
    }
    if (step % r->o->log_every && step != r->max_steps) return;
    double el = now_s() - lg->t0;
    int64_t done = step - lg->first_step;
    double sps = el > 0 ? (double)done * r->d->world * r->B * r->A / el : 0;
    double eta = done > 0 ? el / (double)done * (double)(r->max_steps - step) : 0;
    printf("step %lld/%lld epoch %lld loss %.6f lr %.3e grad_norm %.4f samples/s %.1f eta %02d:%02d:%02d\n",
           (long long)step, (long long)r->max_steps, (long long)epoch, loss, lr, (double)gn, sps,
           (int)(eta / 3600), (int)(eta / 60) % 60, (int)eta % 60);
    fflush(stdout);
}

/* One optimizer step's end: all-reduce, sync, log. */
static void finish_step(k22_run *r, k22_log *lg)
{
    int64_t n;
    float *G = k22_run_grads(r, &n);
    k22_dist_allreduce_mean_backend(r->d, r->be, G, n);
    double loss, lr;
    float gn;
    k22_run_sync(r, &loss, &lr, &gn);
    loss = k22_dist_mean_f64(r->d, loss);
    log_step(r, lg, k22_run_global_step(r), r->epoch, loss, lr, gn);
}

/* The epochs; returns 0 at the end of training or K22_EXIT_REQUEUE after a stop. */
static int train(k22_run *r, k22_log *lg, k22_err *err)
{
    const k22_train_opts *o = r->o;
    int64_t unit = (int64_t)r->d->world * r->B;
    for (; r->epoch < r->epochs && k22_run_global_step(r) < r->max_steps; r->epoch++, r->start_micro = 0) {
        k22_shard_set_epoch(&r->shard, r->epoch);
        for (int64_t s = r->start_micro; s < r->steps_per_epoch; s++) {
            if (k22_run_read_batch(r, s, err)) K22_FATAL("reading the pack: %s", err->msg);
            k22_run_micro_step(r);
            int last = s + 1 == r->steps_per_epoch;
            int due = r->prior ? k22_prior_trainer_sync_due(&r->pt) : k22_decoder_trainer_sync_due(&r->dt);
            if (!due && !last) continue;
            finish_step(r, lg);
            int64_t gs = k22_run_global_step(r);
            int64_t ep = last ? r->epoch + 1 : r->epoch, pos = last ? 0 : (s + 1) * unit;
            int saved = 0;
            if (gs % o->checkpointing_steps == 0) k22_run_checkpoint(r, ep, pos), saved = 1;
            if (gs >= r->max_steps) return 0;
            int stop = k22_dist_any(r->d, k22_stop_requested) || gs == o->stop_at_step;
            if (stop) {
                if (!saved) k22_run_checkpoint(r, ep, pos);
                if (r->d->rank == 0)
                    printf("k22: stopped at step %lld with a checkpoint; exit %d (requeue and resume with "
                           "--resume_from_checkpoint latest)\n", (long long)gs, K22_EXIT_REQUEUE);
                return K22_EXIT_REQUEUE;
            }
        }
    }
    return 0;
}

int k22_train_run(const k22_train_opts *o, k22_dist *d)
{
    k22_run r;
    memset(&r, 0, sizeof r);
    r.o = o;
    r.d = d;
    r.prior = o->stage == K22_PIPE_PRIOR;
    r.B = (int)o->train_batch_size;
    r.A = (int)o->gradient_accumulation_steps;
    k22_err err;
    k22_err_clear(&err);
    /* Before the set-up: a signal that arrives while the model loads is honoured at step 1. */
    k22_stop_requested = 0;
    install_signals();
    k22_status st = setup(&r, &err);
    int rc = 0;
    if (st) fprintf(stderr, "k22 train-%s [rank %d]: %s\n", r.prior ? "prior" : "decoder", d->rank, err.msg);
    /* Every rank reads the same files, but a rank-local failure must not leave the others
     * waiting in the first all-reduce. */
    if (k22_dist_any(d, st != K22_OK)) {
        rc = (st == K22_ERR_IO) ? 1 : 2;
        goto out;
    }
    k22_log lg = {.t0 = now_s(), .first_step = k22_run_global_step(&r)};
    if (d->rank == 0) {
        char p[4096];
        print_plan(&r);
        if (!k22_fs_join(p, sizeof p, o->output_dir, "train_log.jsonl", &err)) lg.jsonl = fopen(p, "a");
    }
    rc = train(&r, &lg, &err);
    if (lg.jsonl) fclose(lg.jsonl);
    if (rc == 0 && d->rank == 0) {
        if (k22_run_save_final(&r, &err)) K22_FATAL("writing %s: %s", o->output_dir, err.msg);
        printf("k22: training done; pipeline written to %s\n", o->output_dir);
    }
    k22_dist_barrier(d);
out:
    k22_run_stage_free(&r);
    k22_shard_free(&r.shard);
    k22_pack_close(r.pack);
    if (r.be) k22_backend_free(r.be);
    return rc;
}
