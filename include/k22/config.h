/* config.h: the config.json of each model k22 reads and writes, as C structs.
 *
 * Reading refuses any key whose value k22 does not implement, naming the file, key and value;
 * keys that do not change the computation (versions, initializer ranges, ...) are accepted.
 * Writing produces a config.json that diffusers / transformers load unchanged. */
#ifndef K22_CONFIG_H
#define K22_CONFIG_H

#include "k22/params.h"

typedef enum {
    K22_MODEL_PRIOR = 0,   /* diffusers PriorTransformer */
    K22_MODEL_UNET,        /* diffusers UNet2DConditionModel, Kandinsky 2.2 decoder flavour */
    K22_MODEL_MOVQ,        /* diffusers VQModel, norm_type "spatial" */
    K22_MODEL_CLIP_TEXT,   /* transformers CLIPTextModelWithProjection */
    K22_MODEL_CLIP_VISION, /* transformers CLIPVisionModelWithProjection */
    K22_MODEL_COUNT
} k22_model_kind;

/* Class name as it appears in config.json ("_class_name" for diffusers, "architectures[0]" for
 * transformers) and in model_index.json. */
const char *k22_model_class_name(k22_model_kind k);
/* Library name for model_index.json: "diffusers" or "transformers". */
const char *k22_model_library(k22_model_kind k);
/* Weights file name: "diffusion_pytorch_model.safetensors" or "model.safetensors". */
const char *k22_model_weights_file(k22_model_kind k);

#define K22_MAX_BLOCKS 8

typedef struct {
    int num_attention_heads, attention_head_dim, num_layers, embedding_dim;
    int num_embeddings, additional_embeddings;
    int time_embed_dim, embedding_proj_dim, clip_embed_dim; /* resolved (null -> derived) */
} k22_prior_config;

typedef struct {
    int in_channels, out_channels, sample_size;
    int nblocks;
    int block_out_channels[K22_MAX_BLOCKS];
    char down_block_types[K22_MAX_BLOCKS][40];
    char up_block_types[K22_MAX_BLOCKS][40];
    char mid_block_type[40];
    int layers_per_block;
    int attention_head_dim;  /* head size in channels (diffusers' naming) */
    int cross_attention_dim;
    int encoder_hid_dim;
    int norm_num_groups;
    float norm_eps;
    int flip_sin_to_cos;
    float freq_shift;
    int time_embedding_dim;  /* resolved: block_out_channels[0] * 4 when null */
} k22_unet_config;

typedef struct {
    int in_channels, out_channels, latent_channels;
    int nblocks;
    int block_out_channels[K22_MAX_BLOCKS];
    char down_block_types[K22_MAX_BLOCKS][40];
    char up_block_types[K22_MAX_BLOCKS][40];
    int layers_per_block;
    int norm_num_groups;
    int num_vq_embeddings, vq_embed_dim;
    int mid_block_add_attention;
    float scaling_factor;
} k22_movq_config;

typedef struct {
    int vocab_size, hidden_size, intermediate_size, projection_dim;
    int num_hidden_layers, num_attention_heads, max_position_embeddings;
    int bos_token_id, eos_token_id, pad_token_id;
    char hidden_act[24];
    float layer_norm_eps;
} k22_clip_text_config;

typedef struct {
    int hidden_size, intermediate_size, projection_dim;
    int num_hidden_layers, num_attention_heads;
    int num_channels, image_size, patch_size;
    char hidden_act[24];
    float layer_norm_eps;
} k22_clip_vision_config;

typedef struct {
    k22_model_kind kind;
    union {
        k22_prior_config prior;
        k22_unet_config unet;
        k22_movq_config movq;
        k22_clip_text_config clip_text;
        k22_clip_vision_config clip_vision;
    } u;
} k22_model_config;

/* Reads a config.json; the kind is taken from the file's class name. */
k22_status k22_config_read(const char *path, k22_model_config *cfg, k22_err *err);
/* Same over a NUL-terminated JSON text (fuzz targets); name is used in messages. */
k22_status k22_config_parse(const char *json, size_t len, const char *name, k22_model_config *cfg,
                            k22_err *err);
/* Writes config.json for cfg in the format the upstream library writes. K22_ERR_ARG when cfg
 * holds a value the reader would refuse (a struct filled by hand), so k22 never writes a file
 * it cannot read back. */
k22_status k22_config_write(const char *path, const k22_model_config *cfg, k22_err *err);
/* The text k22_config_write writes, malloc'd (caller frees); NULL where write would fail. */
char *k22_config_dumps(const k22_model_config *cfg);
/* The configs `k22 init` uses: size "tiny" (tests; the diffusers test-suite dummies) or "full"
 * (the published Kandinsky 2.2 configs). Returns K22_ERR_ARG for an unknown size. */
k22_status k22_config_preset(k22_model_kind kind, const char *size, k22_model_config *cfg,
                             k22_err *err);
/* The parameter table of a model: names equal the upstream state-dict keys, shapes equal. */
k22_status k22_params_build(const k22_model_config *cfg, k22_params *out, k22_err *err);

/* ---- schedulers (scheduler/scheduler_config.json) ---- */
typedef enum { K22_SCHED_DDPM = 0, K22_SCHED_DDIM, K22_SCHED_UNCLIP } k22_sched_kind;
typedef enum { K22_BETAS_LINEAR = 0, K22_BETAS_SCALED_LINEAR, K22_BETAS_SQUAREDCOS_CAP_V2 } k22_beta_schedule;
typedef enum { K22_PRED_EPSILON = 0, K22_PRED_SAMPLE, K22_PRED_V } k22_pred_type;
typedef struct {
    k22_sched_kind kind;
    int num_train_timesteps;
    k22_beta_schedule beta_schedule;
    float beta_start, beta_end;
    k22_pred_type prediction_type;
    int clip_sample;
    float clip_sample_range;
    int set_alpha_to_one, steps_offset;
    char variance_type[32];
    int rescale_betas_zero_snr, thresholding;
    char timestep_spacing[24];
} k22_sched_config;
k22_status k22_sched_config_read(const char *path, k22_sched_config *cfg, k22_err *err);
k22_status k22_sched_config_parse(const char *json, size_t len, const char *name,
                                  k22_sched_config *cfg, k22_err *err);
k22_status k22_sched_config_write(const char *path, const k22_sched_config *cfg, k22_err *err);
/* The text k22_sched_config_write writes, malloc'd (caller frees); NULL where write would fail. */
char *k22_sched_config_dumps(const k22_sched_config *cfg);
/* "DDPMScheduler", "DDIMScheduler", "UnCLIPScheduler". */
const char *k22_sched_class_name(k22_sched_kind k);
/* The scheduler each pipeline ships: "prior" (UnCLIPScheduler) or "decoder" (DDPMScheduler for
 * training; the decoder pipeline's own config). */
k22_status k22_sched_preset(const char *pipeline, k22_sched_config *cfg, k22_err *err);

#endif
