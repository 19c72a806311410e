/* optim.c: clip + AdamW + EMA over a flat parameter buffer, the step flags' check and the save
 * (include/k22/optim.h). */
#include "k22/optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "k22/diffusers.h"

/* Runs of consecutive trainable parameters, and the frozen parameters one by one. */
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
        if (!open) o->span_off[n++] = (int64_t)p->offset;
        o->span_len[n - 1] = (int64_t)(p->offset + p->numel) - o->span_off[n - 1];
        open = 1;
    }
    o->nspans = n;
    o->nfrozen = nf;
}

void k22_optim_init(k22_optim *o, const k22_backend *be, const k22_params *ps, int use_ema)
{
    memset(o, 0, sizeof *o);
    o->be = be;
    o->total = (int64_t)ps->total;
    size_t bytes = ps->total * sizeof(float);
    o->P = be->alloc(be->ctx, bytes);
    o->G = be->alloc(be->ctx, bytes);
    o->M = be->alloc(be->ctx, bytes);
    o->V = be->alloc(be->ctx, bytes); /* zero-filled: G, M and V start at zero */
    be->to_device(be->ctx, o->P, ps->data, bytes);
    if (use_ema) {
        o->S = be->alloc(be->ctx, bytes);
        be->copy(be->ctx, o->S, o->P, bytes);
        o->n_ema_scratch = o->total < 65536 ? o->total : 65536;
        o->ema_scratch = be->alloc(be->ctx, (size_t)o->n_ema_scratch * sizeof(float));
    }
    find_spans(o, ps);
    k22_ema_init(&o->ema);
}

void k22_optim_free(k22_optim *o)
{
    const k22_backend *be = o->be;
    if (be) {
        float *bufs[] = {o->P, o->G, o->M, o->V, o->S, o->ema_scratch};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
            if (bufs[i]) be->free(be->ctx, bufs[i]);
    }
    free(o->span_off);
    free(o->span_len);
    free(o->frozen_off);
    free(o->frozen_len);
    memset(o, 0, sizeof *o);
}

static void ema_step(k22_optim *o)
{
    const k22_backend *be = o->be;
    float omd = k22_ema_begin_step(&o->ema);
    for (int s = 0; s < o->nspans; s++)
        k22_ema_update(be, o->S + o->span_off[s], o->P + o->span_off[s], o->span_len[s], omd,
                       o->ema_scratch, o->n_ema_scratch);
    for (int i = 0; i < o->nfrozen; i++) /* EMAModel copies what does not require grad */
        be->copy(be->ctx, o->S + o->frozen_off[i], o->P + o->frozen_off[i],
                 (size_t)o->frozen_len[i] * sizeof(float));
}

float k22_optim_step(k22_optim *o, const k22_optim_step_args *a)
{
    const k22_backend *be = o->be;
    float *gbufs[64] = {0}, **gp = o->nspans <= 64 ? gbufs : k22_xcalloc((size_t)o->nspans, sizeof *gp);
    for (int s = 0; s < o->nspans; s++) gp[s] = o->G + o->span_off[s];
    float norm = k22_clip_grad_norm(be, gp, o->span_len, o->nspans, (float)a->max_grad_norm);
    if (gp != gbufs) free(gp);
    if (!isfinite(norm)) {
        /* torch would step with the poisoned gradients and ruin every weight; k22 skips. */
        be->zero(be->ctx, o->G, (size_t)o->total * sizeof(float));
        return norm;
    }
    k22_adamw_hparams h = {.lr = a->lr, .beta1 = a->beta1, .beta2 = a->beta2, .eps = a->eps,
                           .weight_decay = a->weight_decay, .step = a->step};
    for (int s = 0; s < o->nspans; s++) {
        int64_t off = o->span_off[s];
        be->adamw_step(be->ctx, o->P + off, o->G + off, o->M + off, o->V + off, o->span_len[s], &h);
    }
    be->zero(be->ctx, o->G, (size_t)o->total * sizeof(float));
    if (o->S) ema_step(o);
    return norm;
}

k22_status k22_optim_save(const k22_optim *o, int ema, const char *dir, const k22_model_config *cfg,
                          k22_params *ps, k22_err *err)
{
    if (ema && !o->S)
        return k22_err_set(err, K22_ERR_ARG, "%s: no EMA weights to save (training ran without --use_ema)", dir);
    o->be->to_host(o->be->ctx, ps->data, ema ? o->S : o->P, ps->total * sizeof(float));
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
