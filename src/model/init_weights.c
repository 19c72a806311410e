/* init_weights.c: deterministic random weights for `k22 init`, decided by each parameter's role
 * (read from its state-dict key and shape) and drawn with the counter-based RNG, so the same
 * seed gives bit-identical files on any machine and thread count. */
#include "k22/diffusers.h"
#include "k22/rng.h"

#include <math.h>
#include <string.h>

typedef enum {
    ROLE_ZERO,      /* biases, prior clip_mean */
    ROLE_ONE,       /* norm scales, prior clip_std */
    ROLE_EMBED,     /* token / position / class embeddings: N(0, 0.02) */
    ROLE_FANIN,     /* linear and conv weights: U(+-1/sqrt(fan_in)) */
    ROLE_CODEBOOK   /* MoVQ codebook: U(+-1/num_vq_embeddings) */
} init_role;

static int ends_with(const char *s, const char *suf)
{
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && !strcmp(s + n - m, suf);
}

/* The module name of a key: "a.b.token_embedding.weight" -> "token_embedding"; a key with no
 * ".weight" suffix is its own last segment ("prior: positional_embedding"). */
static void last_module(const char *name, char *out, size_t n)
{
    const char *end = name + strlen(name);
    if (ends_with(name, ".weight")) end -= 7;
    const char *start = end;
    while (start > name && start[-1] != '.') start--;
    size_t len = (size_t)(end - start);
    if (len >= n) len = n - 1;
    memcpy(out, start, len);
    out[len] = '\0';
}

static init_role param_role(const k22_model_config *cfg, const k22_param *p)
{
    char mod[128];
    last_module(p->name, mod, sizeof mod);
    if (cfg->kind == K22_MODEL_PRIOR && !strcmp(p->name, "clip_mean")) return ROLE_ZERO;
    if (cfg->kind == K22_MODEL_PRIOR && !strcmp(p->name, "clip_std")) return ROLE_ONE;
    if (cfg->kind == K22_MODEL_MOVQ && !strcmp(p->name, "quantize.embedding.weight"))
        return ROLE_CODEBOOK;
    if (ends_with(p->name, ".bias") || !strcmp(p->name, "bias")) return ROLE_ZERO;
    /* LayerNorm / GroupNorm / spatial-norm affine scales ("norm1", "layer_norm2",
     * "pre_layrnorm", "final_layer_norm", "norm_layer", "conv_norm_out", ...) are vectors. */
    if (p->ndim == 1 && strstr(mod, "norm")) return ROLE_ONE;
    /* Embedding tables and learned tokens; a conv patch embedding is a conv. */
    if ((ends_with(mod, "embedding") || ends_with(mod, "embeddings")) && p->ndim <= 3 &&
        !strstr(mod, "patch"))
        return ROLE_EMBED;
    if (p->ndim >= 2) return ROLE_FANIN;
    return ROLE_ZERO;
}

void k22_params_init_random(const k22_model_config *cfg, k22_params *ps, uint64_t seed)
{
    K22_REQUIRE(ps->data != NULL);
    for (int i = 0; i < ps->count; i++) {
        const k22_param *p = &ps->items[i];
        float *x = ps->data + p->offset;
        uint64_t stream = ((uint64_t)cfg->kind << 32) | (uint64_t)i;
        switch (param_role(cfg, p)) {
        case ROLE_ZERO:
            memset(x, 0, p->numel * sizeof *x);
            break;
        case ROLE_ONE:
            for (size_t k = 0; k < p->numel; k++) x[k] = 1.0f;
            break;
        case ROLE_EMBED:
            k22_rng_fill_normal(seed, stream, 0, x, p->numel, 0.0f, 0.02f);
            break;
        case ROLE_FANIN: {
            double fan_in = 1.0;
            for (int d = 1; d < p->ndim; d++) fan_in *= (double)p->shape[d];
            float b = (float)(1.0 / sqrt(fan_in));
            k22_rng_fill_uniform(seed, stream, 0, x, p->numel, -b, b);
            break;
        }
        case ROLE_CODEBOOK: {
            int ne = cfg->u.movq.num_vq_embeddings > 0 ? cfg->u.movq.num_vq_embeddings : 1;
            float b = 1.0f / (float)ne;
            k22_rng_fill_uniform(seed, stream, 0, x, p->numel, -b, b);
            break;
        }
        }
    }
}
