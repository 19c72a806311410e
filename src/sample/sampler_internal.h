/* sampler_internal.h (src/sample only): the loaded pipelines behind k22_sampler. */
#ifndef K22_SAMPLER_INTERNAL_H
#define K22_SAMPLER_INTERNAL_H

#include "k22/arena.h"
#include "k22/clip.h"
#include "k22/movq.h"
#include "k22/prior.h"
#include "k22/sample.h"
#include "k22/tokenizer.h"
#include "k22/unet.h"

struct k22_sampler {
    const k22_backend *be;
    k22_backend *own_be;          /* be when the sampler made it, else NULL */
    /* prior pipeline */
    k22_tokenizer *tok;
    k22_model_config tcfg, vcfg, pcfg;
    k22_params tps, vps, pps;     /* tables; host data dropped after upload */
    float *tP, *vP, *pP;          /* device weights */
    k22_clip_text text;
    k22_clip_vision vision;
    k22_prior prior;              /* bound lazily: its mask scratch is sized by the batch */
    const float *prior_P;         /* the weights the prior runs with: pP or the caller's */
    int prior_bound, prior_max_batch;
    k22_infer_sched psched;
    float *clip_mean, *clip_std;  /* (E) host */
    float *zero_embed;            /* (E) host: CLIP vision of a zero image, made on first use */
    int have_prior;
    /* decoder pipeline */
    k22_model_config ucfg, mcfg;
    k22_params ups, mps;
    float *uP, *mP;
    k22_unet unet;                /* bound to uP or the caller's weights */
    k22_movq movq;
    k22_infer_sched dsched;
    int have_decoder;
};

#endif
