/* loop_log.c: what rank 0 shows and records of a training run: OUT/metrics.jsonl (every
 * optimizer step, held-out losses, skipped steps) and the progress line (rewritten in place on
 * a terminal, plain lines every --log_every steps in a batch log). */
#include "loop_internal.h"

#include "k22/fsutil.h"
#include "k22/json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

double k22_now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Keeps the lines of path whose "step" is at most last (a resumed run writes the later steps
 * again); a line without a readable step is dropped. Writes through a temporary file. */
static k22_status keep_steps_upto(const char *path, int64_t last, k22_err *err)
{
    FILE *in = fopen(path, "r");
    if (!in) return K22_OK; /* none yet */
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) {
        fclose(in);
        return k22_err_set(err, K22_ERR_ARG, "%s: path too long", path);
    }
    FILE *out = fopen(tmp, "w");
    if (!out) {
        fclose(in);
        return k22_err_set(err, K22_ERR_IO, "%s: cannot write", tmp);
    }
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, in) > 0) {
        long long step;
        if (sscanf(line, "{\"step\": %lld", &step) == 1 && step <= last) fputs(line, out);
    }
    free(line);
    fclose(in);
    if (fclose(out)) return k22_err_set(err, K22_ERR_IO, "%s: write failed", tmp);
    return k22_fs_rename(tmp, path, err);
}

k22_status k22_log_open(k22_run *r, k22_log *lg, k22_err *err)
{
    memset(lg, 0, sizeof *lg);
    lg->t0 = k22_now_s();
    lg->first_step = k22_run_global_step(r);
    if (r->d->rank) return K22_OK;
    /* Open MPI hands ranks a pseudo-terminal even when mpirun writes to a file, so a launcher
     * means a log; K22_PROGRESS=plain|line overrides. */
    const char *pr = getenv("K22_PROGRESS");
    int launched = getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_SIZE") || getenv("SLURM_JOB_ID");
    lg->tty = pr ? !strcmp(pr, "line") : isatty(STDOUT_FILENO) && !launched;
    char p[4096];
    k22_status st = k22_fs_join(p, sizeof p, r->o->output_dir, "metrics.jsonl", err);
    if (!st) st = keep_steps_upto(p, lg->first_step, err);
    if (st) return st;
    lg->jsonl = fopen(p, "a");
    if (!lg->jsonl) return k22_err_set(err, K22_ERR_IO, "%s: cannot open for appending", p);
    return K22_OK;
}

void k22_log_close(k22_log *lg)
{
    if (lg->tty && lg->open_line) putchar('\n');
    if (lg->jsonl) fclose(lg->jsonl);
    lg->jsonl = NULL;
}

void k22_log_step(const k22_run *r, k22_log *lg, const k22_train_step_log *l, int64_t epoch,
                  int64_t skipped_total)
{
    if (r->d->rank) return;
    int scaled = k22_run_core_c(r)->scaler.on;
    if (lg->jsonl) {
        /* A skipped step is logged under the step it would have been. */
        char norm[32], loss[40];
        k22_json_format_real((double)l->grad_norm, K22_JSON_F32, norm, sizeof norm);
        k22_json_format_real(l->loss, 0, loss, sizeof loss);
        fprintf(lg->jsonl, "{\"step\": %lld, \"epoch\": %lld, \"loss\": %s, \"lr\": %.17g, \"grad_norm\": %s, "
                "\"skipped\": %s, ", (long long)(l->step + l->skipped), (long long)epoch, loss, l->lr, norm,
                l->skipped ? "true" : "false");
        if (scaled) fprintf(lg->jsonl, "\"loss_scale\": %.17g, ", l->loss_scale);
        fprintf(lg->jsonl, "\"time_s\": %.3f}\n", k22_now_s() - lg->t0);
        fflush(lg->jsonl);
    }
    if (l->overflow) { /* routine under fp16: GradScaler's search for a scale that fits */
        printf("%sk22: step %lld: fp16 gradients overflowed at loss scale %g; update skipped, scale now %g\n",
               lg->open_line ? "\n" : "", (long long)l->step + 1, l->loss_scale, l->loss_scale / 2);
        lg->open_line = 0;
        fflush(stdout);
        return;
    }
    if (l->skipped) {
        printf("%sk22: step %lld: gradient norm %g (loss %g) is not finite; update skipped (%lld skipped so far)\n",
               lg->open_line ? "\n" : "", (long long)l->step + 1, (double)l->grad_norm, l->loss,
               (long long)skipped_total);
        lg->open_line = 0;
        fflush(stdout);
        return;
    }
    int plain = l->step % r->o->log_every == 0 || l->step == r->max_steps;
    if (!plain && !lg->tty) return;
    double el = k22_now_s() - lg->t0;
    int64_t done = l->step - lg->first_step;
    double sps = el > 0 ? (double)done * r->d->world * r->B * r->A / el : 0;
    double eta = done > 0 ? el / (double)done * (double)(r->max_steps - l->step) : 0;
    /* On a terminal every step rewrites one line; the --log_every steps stay. */
    printf("%sstep %lld/%lld epoch %lld loss %.6f lr %.3e grad_norm %.4f samples/s %.1f eta %02d:%02d:%02d%s",
           lg->tty ? "\r\033[K" : "", (long long)l->step, (long long)r->max_steps, (long long)epoch, l->loss,
           l->lr, (double)l->grad_norm, sps, (int)(eta / 3600), (int)(eta / 60) % 60, (int)eta % 60,
           plain || !lg->tty ? "\n" : "");
    lg->open_line = lg->tty && !plain;
    fflush(stdout);
}

void k22_log_val(const k22_run *r, k22_log *lg, int64_t step, double loss, int64_t n)
{
    if (r->d->rank) return;
    if (lg->jsonl) {
        char v[40];
        k22_json_format_real(loss, 0, v, sizeof v);
        fprintf(lg->jsonl, "{\"step\": %lld, \"val_loss\": %s, \"val_samples\": %lld}\n", (long long)step, v,
                (long long)n);
        fflush(lg->jsonl);
    }
    printf("%sk22: step %lld: held-out loss %.6f over %lld samples\n", lg->open_line ? "\n" : "",
           (long long)step, loss, (long long)n);
    lg->open_line = 0;
    fflush(stdout);
}
