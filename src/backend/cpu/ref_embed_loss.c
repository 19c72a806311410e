/* ref_embed_loss.c: the sinusoidal timestep embedding (diffusers get_timestep_embedding) and
 * the per-sample weighted MSE loss, plain loops. The embedding's forward follows torch's
 * float32 operation order exactly; the fast backend shares it (it is tiny). */
#include <math.h>

#include "cpu_ops.h"

/* Frequency i in torch's float order: exp((-ln(max_period) * i) / (half - shift)). */
static float ref_temb_freq(int i, int half, float shift, float max_period)
{
    float e = (float)(-log((double)max_period)) * (float)i;
    e = e / (float)((double)half - (double)shift);
    return expf(e);
}

void k22_ref_timestep_embed_fwd(void *ctx, float *y, const float *t, int N, int dim,
                                int flip_sin_to_cos, float shift, float scale, float max_period)
{
    int half = dim / 2;
    for (int n = 0; n < N; n++) {
        float *yn = y + (int64_t)n * dim;
        for (int i = 0; i < half; i++) {
            float emb = scale * (t[n] * ref_temb_freq(i, half, shift, max_period));
            float s = sinf(emb), c = cosf(emb);
            yn[i] = flip_sin_to_cos ? c : s;
            yn[half + i] = flip_sin_to_cos ? s : c;
        }
        if (dim % 2) yn[dim - 1] = 0.0f;
    }
}

/* d emb / dt = scale * freq; d sin = cos, d cos = -sin. */
void k22_ref_timestep_embed_bwd(void *ctx, float *dt, const float *dy, const float *t, int N,
                                int dim, int flip_sin_to_cos, float shift, float scale,
                                float max_period)
{
    int half = dim / 2;
    for (int n = 0; n < N; n++) {
        const float *dyn = dy + (int64_t)n * dim;
        double s = 0;
        for (int i = 0; i < half; i++) {
            double f = (double)scale * ref_temb_freq(i, half, shift, max_period);
            double emb = (double)(scale * (t[n] * ref_temb_freq(i, half, shift, max_period)));
            double dsin = flip_sin_to_cos ? dyn[half + i] : dyn[i];
            double dcos = flip_sin_to_cos ? dyn[i] : dyn[half + i];
            s += f * (dsin * cos(emb) - dcos * sin(emb));
        }
        dt[n] += (float)s;
    }
}

void k22_ref_mse_fwd(void *ctx, float *loss, float *per_sample, const float *pred,
                     const float *target, const float *w, int B, int64_t N)
{
    double total = 0;
    for (int b = 0; b < B; b++) {
        double s = 0;
        for (int64_t i = 0; i < N; i++) {
            double e = (double)pred[(int64_t)b * N + i] - target[(int64_t)b * N + i];
            s += e * e;
        }
        s /= (double)N;
        if (per_sample) per_sample[b] = (float)s;
        total += (w ? w[b] : 1.0) * s;
    }
    loss[0] = (float)(total / B);
}

void k22_ref_mse_bwd(void *ctx, float *dpred, float dloss, const float *pred, const float *target,
                     const float *w, int B, int64_t N)
{
    for (int b = 0; b < B; b++) {
        double c = (double)dloss * (w ? w[b] : 1.0) * 2.0 / ((double)B * (double)N);
        for (int64_t i = 0; i < N; i++) {
            int64_t e = (int64_t)b * N + i;
            dpred[e] += (float)(c * ((double)pred[e] - target[e]));
        }
    }
}
