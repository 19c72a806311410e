/* sample.h: text to image with a prior pipeline folder and a decoder pipeline folder, as
 * diffusers' KandinskyV22PriorPipeline followed by KandinskyV22Pipeline compute it (`k22 sample`,
 * and validation images during training).
 *
 *   prompts --CLIP text--> prior denoising loop (UnCLIPScheduler, guidance against the negative
 *   or empty prompt) --clip_std, clip_mean--> image_embeds --> UNet denoising loop
 *   (DDPMScheduler, guidance against the negative image embeds) --> MoVQ decode --> pixels
 *
 * The schedulers' steps run on the host (the latents are small next to a model forward); the
 * models run on any backend of ops.h. Random numbers come from k22's Philox keyed by (seed,
 * purpose, global image index), so an image does not depend on how prompts were batched, or
 * they are fed in by the caller (the parity test feeds torch's). */
#ifndef K22_SAMPLE_H
#define K22_SAMPLE_H

#include "k22/config.h"
#include "k22/schedule.h"

#include <stdint.h>

/* ---- inference schedulers (src/sample/sched_infer.c) ---- */

/* UnCLIPScheduler (prior) or DDPMScheduler (decoder) after set_timesteps. */
typedef struct {
    k22_sched_config cfg;
    k22_noise_schedule ns; /* betas, alphas, alphas_cumprod as training builds them */
    int n;                 /* inference steps (trailing spacing may give one more than asked) */
    int64_t *timesteps;    /* (n) descending, owned */
} k22_infer_sched;

/* Builds the training schedule of cfg. K22_ERR_UNSUPPORTED for DDIM (k22 samples with the
 * scheduler classes the Kandinsky 2.2 pipelines ship: UnCLIP for the prior, DDPM for the
 * decoder). The struct owns its arrays (k22_infer_sched_free; a zeroed struct is fine). */
k22_status k22_infer_sched_init(k22_infer_sched *s, const k22_sched_config *cfg, k22_err *err);
void k22_infer_sched_free(k22_infer_sched *s);
/* set_timesteps(steps): UnCLIP: round(i * (T-1)/(steps-1)) reversed (steps >= 2); DDPM:
 * "leading" (i * (T // steps) reversed + steps_offset), "trailing", "linspace" as diffusers
 * 0.42.1. K22_ERR_ARG for steps outside 1..T (2..T for UnCLIP). */
k22_status k22_infer_sched_set_timesteps(k22_infer_sched *s, int steps, k22_err *err);
/* Whether step i adds noise (its timestep is above 0): the caller draws noise only then. */
int k22_infer_sched_noisy(const k22_infer_sched *s, int i);
/* Step i of the loop, in place on the host:
 *   model_out: (B, out_ch, S) with out_ch = C, or 2C where the variance type is learned or
 *   learned_range (the second half is the predicted variance; ignored otherwise);
 *   x: (B, C, S) the sample at timesteps[i], replaced by the sample at the previous timestep;
 *   noise: (B, C, S) standard normal, read only when k22_infer_sched_noisy(s, i).
 * UnCLIP takes timesteps[i+1] as prev_timestep as the prior pipeline passes it (t-1 at the last
 * step); DDPM takes the next timestep of the list (-1 after the last). */
void k22_infer_sched_step(const k22_infer_sched *s, int i, const float *model_out, int out_ch,
                          float *x, int B, int C, int64_t S, const float *noise);

/* ---- pipelines (src/sample/sampler.c) ---- */

typedef struct k22_sampler k22_sampler;

/* Loads prior_dir (tokenizer/, text_encoder/, image_encoder/, prior/, scheduler/) and
 * decoder_dir (unet/, movq/, scheduler/) onto the backend named by device ("cpu", "cpu-ref",
 * "cuda", "cuda:N") with the GEMM precision of --mixed_precision (k22_backend_open; NULL: fp32),
 * checking that the parts fit together. decoder_dir may be NULL for a sampler that only
 * computes image embeddings. *out is owned by the caller (k22_sampler_free). */
k22_status k22_sampler_open(k22_sampler **out, const char *prior_dir, const char *decoder_dir,
                            const char *device, const char *precision, k22_err *err);
/* The same on a backend the caller owns (the trainer's), which must outlive the sampler. */
k22_status k22_sampler_open_on(k22_sampler **out, const char *prior_dir, const char *decoder_dir,
                               const k22_backend *be, k22_err *err);
void k22_sampler_free(k22_sampler *s);
/* Runs the prior (kind K22_MODEL_PRIOR) or the UNet (K22_MODEL_UNET) with the weights at P
 * instead of the loaded ones: P is backend memory laid out by table, which must be the loaded
 * component's table (same keys, shapes and offsets: what the trainer builds from the same
 * config.json), for validation images with the weights being trained or their EMA. P stays
 * the caller's and must stay valid while used; P == NULL goes back to the loaded weights.
 * K22_ERR_ARG when the tables differ or the component is not loaded. */
k22_status k22_sampler_use_weights(k22_sampler *s, k22_model_kind kind, const k22_params *table,
                                   const float *P, k22_err *err);
/* The width of the image embeddings (clip_embed_dim). */
int k22_sampler_embed_dim(const k22_sampler *s);
/* The latent size and final image size for a requested height x width, rounded as the decoder
 * pipeline's downscale_height_and_width does with the MoVQ factor f: latent = ceil(H / f^2) * f,
 * image = latent * f. K22_ERR_ARG (naming the sizes) when outside 1..4096 or when the latent
 * size does not fit the UNet's downsampling. */
k22_status k22_sampler_sizes(const k22_sampler *s, int height, int width, int *lat_h, int *lat_w,
                             int *img_h, int *img_w, k22_err *err);

typedef struct {
    const char *negative_prompt; /* NULL: none (the prior pipeline then uses the CLIP vision
                                    embedding of a zero image as negative image embeds) */
    int num_images;              /* per prompt (the prior's num_images_per_prompt) */
    uint64_t seed;
    int64_t image_offset;        /* global index of this call's first image (Philox key) */
    int prior_steps, decoder_steps;
    double prior_guidance_scale, guidance_scale; /* guidance only when > 1, as diffusers */
    int height, width;           /* requested; rounded by k22_sampler_sizes */
    /* Noise fed in instead of Philox (all four, or none). With P = prior rows (n images, twice
     * that with a negative prompt: the prompts' rows, then the negative prompt's), E the embed
     * dim, n images of (4, h, w) latents:
     *   prior_latents (P, E), prior_noise (prior_steps, P, E),
     *   decoder_latents (n, 4, h, w), decoder_noise (decoder_steps, n, 4, h, w);
     * a step that adds no noise skips its slice. */
    const float *prior_latents, *prior_noise, *decoder_latents, *decoder_noise;
    int skip_decoder;            /* stop after the image embeddings */
} k22_sample_opts;

/* The pipelines' defaults: 1 image, seed 0, prior 25 steps at guidance 4.0, decoder 100 steps
 * at guidance 4.0, 512 x 512. */
void k22_sample_opts_default(k22_sample_opts *o);

/* What one call makes, all host memory owned by the struct (k22_sample_result_free). */
typedef struct {
    int n;                  /* images: prompts x num_images */
    int E, lat_h, lat_w, height, width;
    float *image_embeds;    /* (n, E) */
    float *negative_embeds; /* (n, E) */
    float *latents;         /* (n, 4, lat_h, lat_w) the final decoder latents */
    float *pixels;          /* (n, height, width, 3) in [0, 1], the pipeline's output_type "np" */
    uint8_t *rgb;           /* (n, height, width, 3) round(pixels * 255), as numpy_to_pil */
} k22_sample_result;
void k22_sample_result_free(k22_sample_result *r);

/* Runs both pipelines for prompts[0..n_prompts) (NUL-terminated UTF-8) in one batch; image j
 * is prompt j / num_images. K22_ERR_ARG for bad options (steps, sizes, counts). */
k22_status k22_sample_images(k22_sampler *s, const char *const *prompts, int n_prompts,
                             const k22_sample_opts *o, k22_sample_result *r, k22_err *err);

/* Tiles n images (each h x w RGB) into a grid of cols columns (rows as needed, unused cells
 * black) and writes it as PNG to path (atomically: path.tmp, then rename). */
k22_status k22_sample_grid_png(const char *path, const uint8_t *rgb, int n, int h, int w,
                               int cols, k22_err *err);

#endif
