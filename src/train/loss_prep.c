/* loss_prep.c: builds each stage's noisy input and target from the step's samples, noise and
 * timesteps (include/k22/loss.h). */
#include "k22/loss.h"

#include <stdlib.h>
#include <string.h>

void k22_prior_norm_init(k22_prior_norm *pn, const k22_backend *be, const float *clip_mean,
                         const float *clip_std, int64_t E)
{
    memset(pn, 0, sizeof *pn);
    size_t bytes = (size_t)E * sizeof(float);
    pn->E = E;
    pn->mean = k22_xmalloc(bytes);
    pn->std = k22_xmalloc(bytes);
    be->to_host(be->ctx, pn->mean, clip_mean, bytes);
    be->to_host(be->ctx, pn->std, clip_std, bytes);
    if (be->dev == K22_DEV_HOST) return;
    float *h = k22_xmalloc(bytes);
    pn->neg_mean = be->alloc(be->ctx, bytes);
    pn->inv_std = be->alloc(be->ctx, bytes);
    for (int64_t i = 0; i < E; i++) h[i] = -pn->mean[i];
    be->to_device(be->ctx, pn->neg_mean, h, bytes);
    for (int64_t i = 0; i < E; i++) h[i] = 1.0f / pn->std[i];
    be->to_device(be->ctx, pn->inv_std, h, bytes);
    free(h);
}

void k22_prior_norm_free(k22_prior_norm *pn, const k22_backend *be)
{
    free(pn->mean);
    free(pn->std);
    if (pn->neg_mean) be->free(be->ctx, pn->neg_mean);
    if (pn->inv_std) be->free(be->ctx, pn->inv_std);
    memset(pn, 0, sizeof *pn);
}

void k22_prior_x0(const k22_backend *be, const k22_prior_norm *pn, float *x0,
                  const float *image_embeds, int B)
{
    int64_t E = pn->E;
    if (be->dev == K22_DEV_HOST) {
        be->sync(be->ctx); /* the embeddings may come from queued host ops */
        for (int b = 0; b < B; b++) {
            const float *x = image_embeds + (int64_t)b * E;
            float *y = x0 + (int64_t)b * E;
            for (int64_t i = 0; i < E; i++) y[i] = (x[i] - pn->mean[i]) / pn->std[i];
        }
        return;
    }
    for (int b = 0; b < B; b++) {
        float *y = x0 + (int64_t)b * E;
        be->add(be->ctx, y, image_embeds + (int64_t)b * E, pn->neg_mean, E);
        be->mul(be->ctx, y, y, pn->inv_std, E);
    }
}

void k22_prior_prepare(const k22_backend *be, const k22_prior_norm *pn,
                       const k22_noise_schedule *s, float *x0, float *x_t,
                       const float *image_embeds, const float *noise, const int64_t *t, int B,
                       float *tmp)
{
    k22_prior_x0(be, pn, x0, image_embeds, B);
    k22_noise_add(be, s, x_t, x0, noise, t, B, pn->E, tmp);
}

void k22_decoder_prepare(const k22_backend *be, const k22_noise_schedule *s, float *x_t,
                         const float *latents, const float *noise, const int64_t *t, int B,
                         int64_t N, float *tmp)
{
    k22_noise_add(be, s, x_t, latents, noise, t, B, N, tmp);
}
