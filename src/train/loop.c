/* loop.c: the training run of `k22 train-prior` / `k22 train-decoder` (loop.h): set-up, the
 * epochs of micro-steps with one gradient all-reduce per optimizer step, logging, checkpoints,
 * the stop signals, and the final folder. */
#include "loop_internal.h"

#include "k22/fsutil.h"
#include "k22/profile.h"

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

static k22_status check_opts(const k22_train_opts *o, k22_err *err)
{
    if (o->train_batch_size < 1 || o->train_batch_size > 65536)
        return k22_err_set(err, K22_ERR_ARG, "--train_batch_size %lld: must be in 1..65536", (long long)o->train_batch_size);
    if (o->gradient_accumulation_steps < 1 || o->gradient_accumulation_steps > 65536)
        return k22_err_set(err, K22_ERR_ARG, "--gradient_accumulation_steps %lld: must be in 1..65536",
                           (long long)o->gradient_accumulation_steps);
    if (o->max_train_steps < 0 || o->num_train_epochs < 1 || o->checkpointing_steps < 1 || o->log_every < 1 ||
        o->stop_at_step < 0 || o->seed < 0 || o->lr_warmup_steps < 0 || o->max_skipped_steps < 1)
        return k22_err_set(err, K22_ERR_ARG, "--max_train_steps, --lr_warmup_steps, --seed and --stop_at_step must "
                           "be >= 0; --num_train_epochs, --checkpointing_steps, --log_every and "
                           "--max_skipped_steps >= 1");
    if (o->validation_epochs < 1 || o->validation_resolution < 0 || o->validation_resolution > 4096)
        return k22_err_set(err, K22_ERR_ARG, "--validation_epochs must be >= 1 and --validation_resolution in "
                           "0..4096");
    if (o->zero_stage < 0 || o->zero_stage > 1)
        return k22_err_set(err, K22_ERR_ARG, "--zero_stage %lld: must be 0 or 1", (long long)o->zero_stage);
    char lv[24];
    if (o->checkpoint_levels < K22_CKPT_LEVELS_AUTO || o->checkpoint_levels > K22_CKPT_LEVELS_MAX)
        return k22_err_set(err, K22_ERR_ARG, "--checkpoint_levels %s: must be auto or lie in 0..%d",
                           k22_ckpt_levels_name(o->checkpoint_levels, lv), K22_CKPT_LEVELS_MAX);
    if (o->checkpoint_levels && !o->gradient_checkpointing)
        return k22_err_set(err, K22_ERR_ARG, "--checkpoint_levels %s needs --gradient_checkpointing",
                           k22_ckpt_levels_name(o->checkpoint_levels, lv));
    if (!(o->bucket_cap_mb >= 0 && o->bucket_cap_mb <= 65536))
        return k22_err_set(err, K22_ERR_ARG, "--bucket_cap_mb %g: must lie in [0, 65536]", o->bucket_cap_mb);
    if (!(o->validation_split >= 0 && o->validation_split <= 0.5))
        return k22_err_set(err, K22_ERR_ARG, "--validation_split %g: must lie in [0, 0.5]", o->validation_split);
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
    int64_t rows = k22_pack_rows(r->pack);
    /* The held-out rows are the last ones: at least one when a split is asked for. */
    r->n_val = o->validation_split > 0 ? (int64_t)(o->validation_split * (double)rows + 0.5) : 0;
    if (o->validation_split > 0 && r->n_val < 1) r->n_val = 1;
    r->n_train = rows - r->n_val;
    if (!st && rows < 1) st = k22_err_set(err, K22_ERR_ARG, "%s: no committed rows", o->pack);
    else if (!st && r->n_train < 1)
        st = k22_err_set(err, K22_ERR_ARG, "%s: %lld rows leave none to train on with --validation_split %g", o->pack,
                         (long long)rows, o->validation_split);
    if (!st) st = k22_shard_init(&r->shard, r->n_train, r->d->world, r->d->rank, r->B, (uint64_t)o->seed, err);
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
        r->be = k22_backend_open(r->o->device, r->o->mixed_precision, err);
        if (!r->be) st = err->code ? err->code : K22_ERR_ARG;
        else if (r->o->profile) r->be = k22_prof_wrap(r->be);
    }
    if (!st) st = resolve_pretrained(r, err);
    if (!st) st = open_data(r, err);
    if (!st) st = resolve_resume(r, ckpt, sizeof ckpt, err);
    if (!st && ckpt[0]) st = k22_fs_join(r->comp_dir, sizeof r->comp_dir, ckpt, r->prior ? "prior" : "unet", err);
    if (!st) st = k22_run_stage_init(r, err);
    if (!st && ckpt[0]) st = k22_run_resume(r, ckpt, err);
    if (!st) {
        r->images_step = -1;
        r->val_size = r->o->validation_resolution ? (int)r->o->validation_resolution
                                                  : k22_pack_meta_of(r->pack)->resolution;
        st = k22_run_images_open(r, err);
    }
    if (!st && ckpt[0] && r->d->rank == 0)
        printf("k22: resuming from %s at step %lld (epoch %lld, micro-step %lld)\n", ckpt,
               (long long)k22_run_global_step(r), (long long)r->epoch, (long long)r->start_micro);
    if (!st && r->d->rank == 0) st = k22_fs_mkdir_p(r->o->output_dir, err);
    return st;
}

static void print_plan(const k22_run *r)
{
    printf("k22 train-%s: %d rank(s) x %d samples x %d accumulation = global batch %lld; %lld rows "
           "(+ %lld held out), %lld micro-steps and %lld optimizer steps per epoch; %lld steps over %lld "
           "epoch(s)\n", r->prior ? "prior" : "decoder", r->d->world, r->B, r->A,
           (long long)r->d->world * r->B * r->A, (long long)r->n_train, (long long)r->n_val,
           (long long)r->steps_per_epoch, (long long)r->updates_per_epoch, (long long)r->max_steps,
           (long long)r->epochs);
    /* What ZeRO-1 saves; the activations, weights and gradients are the same either way. */
    const k22_train_core *core = k22_run_core_c(r);
    const k22_optim *op = &core->opt;
    printf("k22: optimizer state (AdamW moments%s) per rank: %lld bytes with --zero_stage 1, %lld bytes with "
           "--zero_stage 0 (this run: %lld)\n", op->S ? " + EMA" : "", (long long)k22_optim_state_bytes(op, 1),
           (long long)k22_optim_state_bytes(op, 0), (long long)k22_optim_state_bytes(op, op->zero));
    if (core->overlap) {
        k22_grad_overlap_stats gs;
        k22_grad_overlap_stats_of(core->overlap, &gs);
        printf("k22: gradients %s in %lld bucket%s of up to %.2f MiB, each sent as soon as the backward "
               "has finished it (--bucket_cap_mb)\n", op->zero ? "summed onto the ranks that own them (ZeRO-1)"
               : "all-reduced", (long long)gs.buckets, gs.buckets == 1 ? "" : "s", gs.bucket_floats * 4.0 / 1048576);
    } else if (r->d->world > 1) {
        printf("k22: gradients %s in one exchange after the backward (--bucket_cap_mb 0)\n",
               op->zero ? "reduce-scattered (ZeRO-1)" : "all-reduced");
    }
    const char *conv = k22_backend_conv_impl(r->be, NULL, NULL); /* NULL: not a CUDA backend */
    k22_cuda_stats cs;
    int cuda = k22_backend_cuda_stats(r->be, &cs);
    if (conv)
        printf("k22: convolutions on %s (K22_CUDA_CONV)%s\n", conv, strncmp(conv, "cudnn", 5) ? ""
               : strcmp(cs.conv_algo, "find") ? ", algorithms by cuDNN's heuristics (K22_CUDNN_ALGO)"
               : ", algorithms by cuDNN's timing of each (K22_CUDNN_ALGO=find)");
    if (cuda)
        printf("k22: attention on %s (K22_CUDA_ATTN)\n", !strcmp(cs.attn, "fused") ?
               "fused wmma kernels under bf16/fp16 for heads up to 64, GEMMs otherwise" :
               !strcmp(cs.attn, "fused-mma") ? "fused kernels on mma.sync under bf16/fp16 for heads up to 64, "
               "GEMMs otherwise" :
               !strcmp(cs.attn, "untested") ? "GEMMs (fp32)" : "GEMMs");
    fflush(stdout);
}

/* What the CUDA backend's caches did over the run (test_cuda_train reads this line). */
static void print_cuda_stats(const k22_run *r)
{
    k22_cuda_stats st;
    if (!k22_backend_cuda_stats(r->be, &st)) return;
    printf("k22: cuda: weight shadow %s (K22_CUDA_WEIGHT_SHADOW): %lld operand reads, %lld refreshes, %lld AdamW "
           "writes; cuBLASLt: %lld heuristic queries, %lld set-ups; attention %s (K22_CUDA_ATTN): %lld fused "
           "(%lld on 16-bit q, k, v as given), %lld GEMM calls; linear biases (K22_CUDA_EPILOGUE): %lld in "
           "cuBLASLt's epilogue, %lld by a kernel; cuDNN algorithms (K22_CUDNN_ALGO=%s): %lld chosen, %lld by "
           "timing, %lld of those unlike the heuristics' pick\n",
           st.shadow, (long long)st.shadow_reads, (long long)st.shadow_refreshes, (long long)st.shadow_updates,
           (long long)st.gemm_heuristics, (long long)st.gemm_plans, st.attn, (long long)st.attn_flash,
           (long long)st.attn_flash16, (long long)st.attn_gemm, (long long)st.bias_epilogue, (long long)st.bias_kernel,
           st.conv_algo, (long long)st.conv_choices, (long long)st.conv_timed, (long long)st.conv_changed);
    fflush(stdout);
}

/* What the bucketed exchange did (test_overlap reads this line). */
static void print_bucket_stats(k22_run *r)
{
    const k22_train_core *core = k22_run_core(r);
    if (!core->overlap) return;
    k22_grad_overlap_stats gs;
    k22_grad_overlap_stats_of(core->overlap, &gs);
    printf("k22: gradient buckets: %lld exchanges over %s, %lld of %lld buckets sent during the backward\n",
           (long long)gs.exchanges, gs.nccl > 0 ? "NCCL" : "MPI", (long long)gs.early,
           (long long)(gs.exchanges * gs.buckets));
    fflush(stdout);
}

/* One optimizer step's end: sync (the gradient exchange included), log. Returns 1 when the step
 * was skipped (a non-finite global gradient norm: the same on every rank). */
static int finish_step(k22_run *r, k22_log *lg)
{
    k22_train_step_log l;
    k22_run_sync(r, &l); /* l.loss: the mean over the ranks */
    k22_log_step(r, lg, &l, r->epoch, k22_run_core(r)->nonfinite_total);
    return l.skipped;
}

static void validate(k22_run *r, k22_log *lg)
{
    if (!r->n_val) return;
    int64_t n;
    double loss = k22_run_val_loss(r, &n);
    k22_log_val(r, lg, k22_run_global_step(r), loss, n);
}

/* The epochs; returns 0 at the end of training or K22_EXIT_REQUEUE after a stop. */
static int train(k22_run *r, k22_log *lg, k22_err *err)
{
    const k22_train_opts *o = r->o;
    int64_t unit = (int64_t)r->d->world * r->B;
    k22_prof *prof = k22_prof_of(r->be);
    /* Until max_steps: skipped (non-finite) steps can make the run go past its planned epochs. */
    for (; k22_run_global_step(r) < r->max_steps; r->epoch++, r->start_micro = 0) {
        k22_shard_set_epoch(&r->shard, r->epoch);
        for (int64_t s = r->start_micro; s < r->steps_per_epoch; s++) {
            if (k22_run_read_batch(r, s, err)) K22_FATAL("reading the pack: %s", err->msg);
            k22_run_micro_step(r);
            int last = s + 1 == r->steps_per_epoch;
            int due = k22_train_core_sync_due(k22_run_core(r));
            if (!due && !last) continue;
            int skipped = finish_step(r, lg);
            if (prof) k22_prof_collect(prof); /* the step's device times, after its own sync */
            int64_t gs = k22_run_global_step(r);
            int64_t ep = last ? r->epoch + 1 : r->epoch, pos = last ? 0 : (s + 1) * unit;
            int saved = 0;
            if (skipped && k22_run_core(r)->nonfinite_run >= o->max_skipped_steps) {
                /* The weights are those of step gs, the last good one. */
                k22_run_checkpoint(r, ep, pos);
                if (r->d->rank == 0)
                    fprintf(stderr, "k22: %lld optimizer steps in a row had a non-finite gradient (check the "
                            "learning rate and the pack's values); stopped with a checkpoint of step %lld; exit %d\n",
                            (long long)k22_run_core(r)->nonfinite_run, (long long)gs, K22_EXIT_NONFINITE);
                return K22_EXIT_NONFINITE;
            }
            if (!skipped && gs % o->checkpointing_steps == 0) {
                k22_run_checkpoint(r, ep, pos), saved = 1;
                if (gs < r->max_steps) validate(r, lg);
            }
            if (gs >= r->max_steps) return 0;
            int stop = k22_dist_any(r->d, k22_stop_requested) || (o->stop_at_step > 0 && gs == o->stop_at_step);
            if (stop) {
                if (!saved) k22_run_checkpoint(r, ep, pos);
                if (r->d->rank == 0)
                    printf("k22: stopped at step %lld with a checkpoint; exit %d (requeue and resume with "
                           "--resume_from_checkpoint latest)\n", (long long)gs, K22_EXIT_REQUEUE);
                return K22_EXIT_REQUEUE;
            }
        }
        if (r->epoch % o->validation_epochs == 0) k22_run_images(r, lg); /* as the scripts: epoch % N */
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
    k22_log lg;
    if (d->rank == 0) print_plan(&r);
    st = k22_log_open(&r, &lg, &err);
    if (st) fprintf(stderr, "k22 train-%s: %s\n", r.prior ? "prior" : "decoder", err.msg);
    if (k22_dist_any(d, st != K22_OK)) {
        k22_log_close(&lg);
        rc = 1;
        goto out;
    }
    /* The profile covers the loop (steps, checkpoints, validation inside it), not the set-up. */
    k22_prof *prof = k22_prof_of(r.be);
    int64_t step0 = k22_run_global_step(&r);
    if (prof) k22_prof_reset(prof);
    rc = train(&r, &lg, &err);
    if (prof && d->rank == 0) k22_prof_report(prof, 0, k22_run_global_step(&r) - step0, stdout);
    if (rc == 0) validate(&r, &lg), k22_run_images(&r, &lg);
    if (d->rank == 0) print_cuda_stats(&r), print_bucket_stats(&r);
    k22_log_close(&lg);
    if (rc == 0) {
        if (k22_run_save_final(&r, &err)) K22_FATAL("writing %s: %s", o->output_dir, err.msg);
        if (d->rank == 0) printf("k22: training done; pipeline written to %s\n", o->output_dir);
    }
    k22_dist_barrier(d);
out:
    k22_run_images_close(&r);
    k22_run_stage_free(&r);
    k22_shard_free(&r.shard);
    k22_pack_close(r.pack);
    if (r.be) k22_backend_free(r.be);
    return rc;
}
