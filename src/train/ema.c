/* ema.c: diffusers EMAModel's update rule over flat backend buffers (include/k22/ema.h). */
#include "k22/ema.h"

void k22_ema_init(k22_ema *e)
{
    e->optimization_step = 0;
    e->max_decay = 0.9999;
    e->cur_decay = 0.0;
}

double k22_ema_decay(const k22_ema *e, int64_t optimization_step)
{
    int64_t step = optimization_step - 1 > 0 ? optimization_step - 1 : 0;
    if (step <= 0) return 0.0;
    double d = (double)(1 + step) / (double)(10 + step);
    if (e->max_decay < d) d = e->max_decay; /* min(d, decay) */
    return d > 0.0 ? d : 0.0;               /* max(d, min_decay = 0) */
}

float k22_ema_begin_step(k22_ema *e)
{
    e->optimization_step++;
    e->cur_decay = k22_ema_decay(e, e->optimization_step);
    return (float)(1 - e->cur_decay); /* torch rounds the Python scalar to the tensor's float */
}

void k22_ema_update(const k22_backend *be, float *shadow, const float *param, int64_t n,
                    float omd, float *scratch, int64_t nscratch)
{
    K22_REQUIRE(nscratch >= 1);
    for (int64_t off = 0; off < n; off += nscratch) {
        int64_t m = n - off < nscratch ? n - off : nscratch;
        float *s = shadow + off;
        /* negations are exact, so s + (-p) and s + (-(omd * d)) round as torch's subtractions */
        be->scale(be->ctx, scratch, param + off, -1.0f, m);
        be->add(be->ctx, scratch, s, scratch, m);      /* d = s - p */
        be->scale(be->ctx, scratch, scratch, -omd, m); /* -(omd * d) */
        be->add(be->ctx, s, s, scratch, m);            /* s - omd * d */
    }
}

void k22_ema_step(k22_ema *e, const k22_backend *be, float *shadow, const float *param,
                  int64_t n_trained, int64_t n, float *scratch, int64_t nscratch)
{
    K22_REQUIRE(n_trained >= 0 && n_trained <= n);
    float omd = k22_ema_begin_step(e);
    k22_ema_update(be, shadow, param, n_trained, omd, scratch, nscratch);
    if (n > n_trained)
        be->copy(be->ctx, shadow + n_trained, param + n_trained,
                 (size_t)(n - n_trained) * sizeof(float));
}
