/* optim.c: the gradient exchange, clip + AdamW + EMA over a flat parameter buffer (whole, or this
 * rank's shard under ZeRO-1), the step flags' check and the save (include/k22/optim.h). */
#include "k22/optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "k22/diffusers.h"

int64_t k22_optim_shard_len(int64_t total, int world)
{
    int64_t per = (total + world - 1) / world, a = K22_OPTIM_SHARD_ALIGN;
    return (per + a - 1) / a * a;
}

/* Keeps the part of run i (off, len) inside [lo, hi), compacting the arrays in place. */
static int clip_runs(int64_t *off, int64_t *len, int n, int64_t lo, int64_t hi)
{
    int k = 0;
    for (int i = 0; i < n; i++) {
        int64_t a = off[i] > lo ? off[i] : lo, b = off[i] + len[i] < hi ? off[i] + len[i] : hi;
        if (b > a) off[k] = a, len[k++] = b - a;
    }
    return k;
}

/* Runs of consecutive trainable parameters, and the frozen parameters one by one, inside this
 * rank's part of the buffer. */
static void find_spans(k22_optim *o, const k22_params *ps)
{
    size_t n1 = (size_t)ps->count + 1;
    o->span_off = k22_xcalloc(n1, sizeof *o->span_off);
    o->span_len = k22_xcalloc(n1, sizeof *o->span_len);
    o->frozen_off = k22_xcalloc(n1, sizeof *o->frozen_off);
    o->frozen_len = k22_xcalloc(n1, sizeof *o->frozen_len);
    int n = 0, nf = 0, open = 0;
    for (int i = 0; i < ps->count; i++) {
        const k22_param *p = &ps->items[i];
        if (!p->trainable) {
            o->frozen_off[nf] = (int64_t)p->offset;
            o->frozen_len[nf++] = (int64_t)p->numel;
            open = 0;
            continue;
        }
        if (!open) o->span_off[n++] = (int64_t)p->offset, o->span_len[n - 1] = 0;
        /* the furthest end: inside a stacked group the table order is not the buffer's */
        int64_t end = (int64_t)(p->offset + p->numel) - o->span_off[n - 1];
        if (end > o->span_len[n - 1]) o->span_len[n - 1] = end;
        open = 1;
    }
    int64_t hi = o->base + o->shard < o->total ? o->base + o->shard : o->total;
    o->nspans = clip_runs(o->span_off, o->span_len, n, o->base, hi);
    o->nfrozen = clip_runs(o->frozen_off, o->frozen_len, nf, o->base, hi);
}

void k22_optim_init(k22_optim *o, const k22_backend *be, const k22_params *ps, int use_ema, k22_dist *d,
                    int zero_stage)
{
    memset(o, 0, sizeof *o);
    o->be = be;
    o->dist = d;
    o->zero = zero_stage == 1 && d && d->world > 1;
    o->total = o->padded = o->shard = (int64_t)ps->total;
    if (o->zero) {
        o->shard = k22_optim_shard_len(o->total, d->world);
        o->padded = o->shard * d->world;
        o->base = o->shard * d->rank;
    }
    size_t pbytes = (size_t)o->padded * sizeof(float), sbytes = (size_t)o->shard * sizeof(float);
    o->P = be->alloc(be->ctx, pbytes);
    o->G = be->alloc(be->ctx, pbytes);
    o->Gs = o->zero ? be->alloc(be->ctx, sbytes) : o->G;
    o->M = be->alloc(be->ctx, sbytes);
    o->V = be->alloc(be->ctx, sbytes); /* zero-filled: G, M and V start at zero, and P's padding */
    be->to_device(be->ctx, o->P, ps->data, ps->total * sizeof(float));
    /* After the upload: the backend may keep a 16-bit copy of P (ops.h params_register). */
    k22_backend_params_register(be, o->P, o->padded);
    if (use_ema) {
        o->S = be->alloc(be->ctx, sbytes);
        be->copy(be->ctx, o->S, o->P + o->base, sbytes);
        o->n_ema_scratch = o->shard < 65536 ? o->shard : 65536;
        o->ema_scratch = be->alloc(be->ctx, (size_t)o->n_ema_scratch * sizeof(float));
    }
    find_spans(o, ps);
    k22_ema_init(&o->ema);
}

void k22_optim_free(k22_optim *o)
{
    const k22_backend *be = o->be;
    if (be) {
        k22_backend_params_register(be, NULL, 0);
        float *bufs[] = {o->P, o->G, o->Gs != o->G ? o->Gs : NULL, o->M, o->V, o->S, o->ema_scratch};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
            if (bufs[i]) be->free(be->ctx, bufs[i]);
    }
    free(o->span_off);
    free(o->span_len);
    free(o->frozen_off);
    free(o->frozen_len);
    memset(o, 0, sizeof *o);
}

int64_t k22_optim_state_bytes(const k22_optim *o, int sharded)
{
    int world = o->dist ? o->dist->world : 1;
    int64_t n = sharded && world > 1 ? k22_optim_shard_len(o->total, world) : o->total;
    return (o->S ? 3 : 2) * n * (int64_t)sizeof(float);
}

/* torch clip_grad_norm_'s norm and coefficient (*coef), over this rank's gradient runs: under
 * ZeRO-1 the norm is the sum of the ranks' sums of squares (a different order of the same
 * double additions, so within a rounding of the double before its cast to float). The AdamW
 * step multiplies the gradients by *coef as it reads them (k22_adamw_hparams.grad_scale): the
 * same bits as torch's in-place multiply, without a pass of its own over the gradients (a
 * read and a write of 4.8 GB per step for the full UNet). */
static float clip(k22_optim *o, float max_norm, float *coef)
{
    const k22_backend *be = o->be;
    double ss = 0;
    for (int s = 0; s < o->nspans; s++)
        if (o->span_len[s] > 0) be->sumsq(be->ctx, &ss, o->Gs + (o->span_off[s] - o->base), o->span_len[s]);
    if (o->zero) ss = k22_dist_sum_f64(o->dist, ss); /* inf or NaN anywhere: on every rank */
    float total = (float)sqrt(ss);
    *coef = max_norm / (total + 1e-6f);
    if (*coef > 1.0f) *coef = 1.0f;
    return total;
}

static void ema_step(k22_optim *o)
{
    const k22_backend *be = o->be;
    float omd = k22_ema_begin_step(&o->ema);
    for (int s = 0; s < o->nspans; s++)
        k22_ema_update(be, o->S + (o->span_off[s] - o->base), o->P + o->span_off[s], o->span_len[s], omd,
                       o->ema_scratch, o->n_ema_scratch);
    for (int i = 0; i < o->nfrozen; i++) /* EMAModel copies what does not require grad */
        be->copy(be->ctx, o->S + (o->frozen_off[i] - o->base), o->P + o->frozen_off[i],
                 (size_t)o->frozen_len[i] * sizeof(float));
}

float k22_optim_step(k22_optim *o, const k22_optim_step_args *a)
{
    const k22_backend *be = o->be;
    size_t gbytes = (size_t)o->padded * sizeof(float);
    if (o->zero) {
        if (!a->reduced) k22_dist_reduce_scatter_mean_backend(o->dist, be, o->G, o->Gs, o->shard);
        be->zero(be->ctx, o->G, gbytes); /* the next micro-steps accumulate into it */
    } else if (o->dist && !a->reduced) {
        k22_dist_allreduce_mean_backend(o->dist, be, o->G, o->total);
    }
    if (a->loss_scale > 0 && a->loss_scale != 1) /* GradScaler.unscale_: times (float)(1/scale) */
        for (int s = 0; s < o->nspans; s++) {
            float *g = o->Gs + (o->span_off[s] - o->base);
            if (o->span_len[s] > 0) be->scale(be->ctx, g, g, (float)(1.0 / a->loss_scale), o->span_len[s]);
        }
    float coef;
    float norm = clip(o, (float)a->max_grad_norm, &coef);
    if (!isfinite(norm)) {
        /* torch would step with the poisoned gradients and ruin every weight; k22 skips. */
        if (!o->zero) be->zero(be->ctx, o->G, gbytes);
        return norm;
    }
    k22_adamw_hparams h = {.lr = a->lr, .beta1 = a->beta1, .beta2 = a->beta2, .eps = a->eps,
                           .weight_decay = a->weight_decay, .step = a->step, .grad_scale = coef};
    for (int s = 0; s < o->nspans; s++) {
        int64_t off = o->span_off[s], l = off - o->base;
        be->adamw_step(be->ctx, o->P + off, o->Gs + l, o->M + l, o->V + l, o->span_len[s], &h);
    }
    if (!o->zero) be->zero(be->ctx, o->G, gbytes);
    if (o->S) ema_step(o);
    if (o->zero) {
        k22_dist_allgather_backend(o->dist, be, o->P, o->shard);
        k22_backend_params_changed(be); /* NCCL wrote P behind the backend's back */
    }
    return norm;
}

const float *k22_optim_gather_begin(k22_optim *o, const float *buf)
{
    if (!o->zero) return buf;
    /* G is zero between optimizer steps: this rank's block, then everybody's. */
    o->be->copy(o->be->ctx, o->G + o->base, buf, (size_t)o->shard * sizeof(float));
    k22_dist_allgather_backend(o->dist, o->be, o->G, o->shard);
    return o->G;
}

void k22_optim_gather_end(k22_optim *o)
{
    if (o->zero) o->be->zero(o->be->ctx, o->G, (size_t)o->padded * sizeof(float));
}

void k22_optim_gather(k22_optim *o, const float *buf, float *dst)
{
    const float *all = k22_optim_gather_begin(o, buf);
    if (dst) o->be->to_host(o->be->ctx, dst, all, (size_t)o->total * sizeof(float));
    k22_optim_gather_end(o);
}

void k22_optim_scatter(k22_optim *o, float *buf, const float *src)
{
    int64_t n = o->total - o->base;
    n = n < 0 ? 0 : n > o->shard ? o->shard : n;
    if (n > 0) o->be->to_device(o->be->ctx, buf, src + o->base, (size_t)n * sizeof(float));
    if (n < o->shard) o->be->zero(o->be->ctx, buf + n, (size_t)(o->shard - n) * sizeof(float));
}

k22_status k22_optim_save(const k22_optim *o, int ema, const char *dir, const k22_model_config *cfg,
                          k22_params *ps, k22_err *err)
{
    if (ema && !o->S)
        return k22_err_set(err, K22_ERR_ARG, "%s: no EMA weights to save (training ran without --use_ema)", dir);
    if (ema && o->zero)
        return k22_err_set(err, K22_ERR_ARG, "%s: the EMA weights are sharded over the ranks (--zero_stage 1): "
                           "gather them first (k22_optim_gather, k22_optim_save_host)", dir);
    o->be->to_host(o->be->ctx, ps->data, ema ? o->S : o->P, ps->total * sizeof(float));
    return k22_component_save(dir, cfg, ps, K22_SHARD_BYTES_DEFAULT, err);
}

k22_status k22_optim_save_host(const float *w, const char *dir, const k22_model_config *cfg, k22_params *ps,
                               k22_err *err)
{
    if (w != ps->data) memcpy(ps->data, w, ps->total * sizeof(float));
    return k22_component_save(dir, cfg, ps, K22_SHARD_BYTES_DEFAULT, err);
}

k22_status k22_optim_flags_check(const k22_optim_flags *f, k22_err *err)
{
    if (!(f->adam_beta1 >= 0 && f->adam_beta1 < 1) || !(f->adam_beta2 >= 0 && f->adam_beta2 < 1))
        return k22_err_set(err, K22_ERR_ARG, "--adam_beta1/--adam_beta2 must lie in [0, 1), got %g and %g",
                           f->adam_beta1, f->adam_beta2);
    if (!(f->adam_epsilon >= 0) || !(f->adam_weight_decay >= 0) || !isfinite(f->adam_weight_decay))
        return k22_err_set(err, K22_ERR_ARG, "--adam_epsilon and --adam_weight_decay must be >= 0, got %g and %g",
                           f->adam_epsilon, f->adam_weight_decay);
    if (!(f->max_grad_norm > 0) || !isfinite(f->max_grad_norm))
        return k22_err_set(err, K22_ERR_ARG, "--max_grad_norm must be a positive number, got %g", f->max_grad_norm);
    if (!(f->snr_gamma >= 0) || !isfinite(f->snr_gamma))
        return k22_err_set(err, K22_ERR_ARG, "--snr_gamma must be a positive number, got %g", f->snr_gamma);
    if (f->gradient_accumulation_steps < 1)
        return k22_err_set(err, K22_ERR_ARG, "--gradient_accumulation_steps must be >= 1, got %d",
                           f->gradient_accumulation_steps);
    if (f->micro_batch < 1 || f->micro_batch > f->micro_batch_max)
        return k22_err_set(err, K22_ERR_ARG, "micro batch %d is outside 1..%d", f->micro_batch,
                           f->micro_batch_max);
    return K22_OK;
}
