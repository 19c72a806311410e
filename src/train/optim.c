/* optim.c: clip + AdamW + EMA over a flat parameter buffer (include/k22/optim.h). */
#include "k22/optim.h"

#include <stdlib.h>
#include <string.h>

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
