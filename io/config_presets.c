/* config_presets.c: the configs `k22 init` writes. "tiny" is the diffusers test-suite dummies
 * (tests/pipelines/kandinsky2_2), except that the CLIP text model keeps the real CLIP vocabulary
 * and special tokens because k22 ships the real tokenizer; "full" is the Kandinsky 2.2 configs
 * as reconstructed in notes/reference-math.md section 3. Each preset is the JSON a user could
 * have written, run through the same parser as any config.json. */
#include "k22/config.h"

#include <string.h>

#define UNET_K22                                                                                   \
    "\"_class_name\": \"UNet2DConditionModel\", \"in_channels\": 4, \"out_channels\": 8, "         \
    "\"addition_embed_type\": \"image\", \"encoder_hid_dim_type\": \"image_proj\", "               \
    "\"mid_block_type\": \"UNetMidBlock2DSimpleCrossAttn\", "                                      \
    "\"resnet_time_scale_shift\": \"scale_shift\", \"class_embed_type\": null, "
#define CLIP_TOKENS                                                                                \
    "\"vocab_size\": 49408, \"max_position_embeddings\": 77, \"bos_token_id\": 49406, "            \
    "\"eos_token_id\": 49407, \"pad_token_id\": 49407, \"layer_norm_eps\": 1e-05, "

static const char *const tiny[K22_MODEL_COUNT] = {
    [K22_MODEL_PRIOR] = "{\"_class_name\": \"PriorTransformer\", \"num_attention_heads\": 2, "
                        "\"attention_head_dim\": 12, \"embedding_dim\": 32, \"num_layers\": 1}",
    [K22_MODEL_UNET] = "{" UNET_K22
                       "\"down_block_types\": [\"ResnetDownsampleBlock2D\", \"SimpleCrossAttnDownBlock2D\"], "
                       "\"up_block_types\": [\"SimpleCrossAttnUpBlock2D\", \"ResnetUpsampleBlock2D\"], "
                       "\"block_out_channels\": [32, 64], \"layers_per_block\": 1, "
                       "\"encoder_hid_dim\": 32, \"cross_attention_dim\": 32, \"attention_head_dim\": 4}",
    [K22_MODEL_MOVQ] = "{\"_class_name\": \"VQModel\", \"block_out_channels\": [32, 64], "
                       "\"down_block_types\": [\"DownEncoderBlock2D\", \"AttnDownEncoderBlock2D\"], "
                       "\"in_channels\": 3, \"latent_channels\": 4, \"layers_per_block\": 1, "
                       "\"norm_num_groups\": 8, \"norm_type\": \"spatial\", \"num_vq_embeddings\": 12, "
                       "\"out_channels\": 3, \"up_block_types\": [\"AttnUpDecoderBlock2D\", \"UpDecoderBlock2D\"], "
                       "\"vq_embed_dim\": 4}",
    [K22_MODEL_CLIP_TEXT] = "{\"architectures\": [\"CLIPTextModelWithProjection\"], " CLIP_TOKENS
                            "\"hidden_size\": 32, \"projection_dim\": 32, \"intermediate_size\": 37, "
                            "\"num_attention_heads\": 4, \"num_hidden_layers\": 5, \"hidden_act\": \"quick_gelu\"}",
    [K22_MODEL_CLIP_VISION] = "{\"architectures\": [\"CLIPVisionModelWithProjection\"], "
                              "\"hidden_size\": 32, \"image_size\": 224, \"projection_dim\": 32, "
                              "\"intermediate_size\": 37, \"num_attention_heads\": 4, \"num_channels\": 3, "
                              "\"num_hidden_layers\": 5, \"patch_size\": 14, \"hidden_act\": \"quick_gelu\"}",
};

static const char *const full[K22_MODEL_COUNT] = {
    [K22_MODEL_PRIOR] = "{\"_class_name\": \"PriorTransformer\", \"num_attention_heads\": 32, "
                        "\"attention_head_dim\": 64, \"embedding_dim\": 1280, \"num_layers\": 20}",
    [K22_MODEL_UNET] = "{" UNET_K22 "\"sample_size\": 64, "
                       "\"down_block_types\": [\"ResnetDownsampleBlock2D\", \"SimpleCrossAttnDownBlock2D\", "
                       "\"SimpleCrossAttnDownBlock2D\", \"SimpleCrossAttnDownBlock2D\"], "
                       "\"up_block_types\": [\"SimpleCrossAttnUpBlock2D\", \"SimpleCrossAttnUpBlock2D\", "
                       "\"SimpleCrossAttnUpBlock2D\", \"ResnetUpsampleBlock2D\"], "
                       "\"block_out_channels\": [384, 768, 1152, 1536], \"layers_per_block\": 3, "
                       "\"encoder_hid_dim\": 1280, \"cross_attention_dim\": 768, \"attention_head_dim\": 64}",
    [K22_MODEL_MOVQ] = "{\"_class_name\": \"VQModel\", \"block_out_channels\": [128, 256, 256, 512], "
                       "\"down_block_types\": [\"DownEncoderBlock2D\", \"DownEncoderBlock2D\", "
                       "\"DownEncoderBlock2D\", \"AttnDownEncoderBlock2D\"], "
                       "\"in_channels\": 3, \"latent_channels\": 4, \"layers_per_block\": 2, "
                       "\"norm_type\": \"spatial\", \"num_vq_embeddings\": 16384, \"out_channels\": 3, "
                       "\"up_block_types\": [\"AttnUpDecoderBlock2D\", \"UpDecoderBlock2D\", "
                       "\"UpDecoderBlock2D\", \"UpDecoderBlock2D\"], \"vq_embed_dim\": 4}",
    [K22_MODEL_CLIP_TEXT] = "{\"architectures\": [\"CLIPTextModelWithProjection\"], " CLIP_TOKENS
                            "\"hidden_size\": 1280, \"projection_dim\": 1280, \"intermediate_size\": 5120, "
                            "\"num_attention_heads\": 20, \"num_hidden_layers\": 32, \"hidden_act\": \"gelu\"}",
    [K22_MODEL_CLIP_VISION] = "{\"architectures\": [\"CLIPVisionModelWithProjection\"], "
                              "\"hidden_size\": 1664, \"image_size\": 224, \"projection_dim\": 1280, "
                              "\"intermediate_size\": 8192, \"num_attention_heads\": 16, \"num_channels\": 3, "
                              "\"num_hidden_layers\": 48, \"patch_size\": 14, \"hidden_act\": \"gelu\", "
                              "\"layer_norm_eps\": 1e-05}",
};

k22_status k22_config_preset(k22_model_kind kind, const char *size, k22_model_config *cfg,
                             k22_err *err)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->kind = kind;
    if ((int)kind < 0 || kind >= K22_MODEL_COUNT)
        return k22_err_set(err, K22_ERR_ARG, "unknown model kind %d", (int)kind);
    const char *text = NULL;
    if (size && strcmp(size, "tiny") == 0) text = tiny[kind];
    if (size && strcmp(size, "full") == 0) text = full[kind];
    if (!text)
        return k22_err_set(err, K22_ERR_ARG, "unknown model size '%s' (expected tiny or full)",
                           size ? size : "(null)");
    k22_err e;
    if (k22_config_parse(text, strlen(text), "preset", cfg, &e) != K22_OK)
        K22_FATAL("preset %s %s does not parse: %s", size, k22_model_class_name(kind), e.msg);
    return K22_OK;
}

/* The prior pipeline's inference scheduler (the test dummy's values), the decoder's DDPM
 * (reference-math.md section 2), and the DDPM the prior training script builds in code. */
static const char prior_sched[] =
    "{\"_class_name\": \"UnCLIPScheduler\", \"variance_type\": \"fixed_small_log\", "
    "\"prediction_type\": \"sample\", \"num_train_timesteps\": 1000, \"clip_sample\": true, "
    "\"clip_sample_range\": 10.0}";
static const char decoder_sched[] =
    "{\"_class_name\": \"DDPMScheduler\", \"num_train_timesteps\": 1000, \"beta_schedule\": \"linear\", "
    "\"beta_start\": 0.00085, \"beta_end\": 0.012, \"prediction_type\": \"epsilon\", "
    "\"clip_sample\": false, \"steps_offset\": 1, \"thresholding\": false, "
    "\"variance_type\": \"learned_range\", \"timestep_spacing\": \"leading\"}";
static const char prior_train_sched[] =
    "{\"_class_name\": \"DDPMScheduler\", \"beta_schedule\": \"squaredcos_cap_v2\", "
    "\"prediction_type\": \"sample\"}";

k22_status k22_sched_preset(const char *pipeline, k22_sched_config *cfg, k22_err *err)
{
    memset(cfg, 0, sizeof *cfg);
    const char *text = NULL;
    if (pipeline && strcmp(pipeline, "prior") == 0) text = prior_sched;
    if (pipeline && strcmp(pipeline, "decoder") == 0) text = decoder_sched;
    if (pipeline && strcmp(pipeline, "prior_train") == 0) text = prior_train_sched;
    if (!text)
        return k22_err_set(err, K22_ERR_ARG, "unknown scheduler preset '%s' (expected prior, decoder or prior_train)",
                           pipeline ? pipeline : "(null)");
    k22_err e;
    if (k22_sched_config_parse(text, strlen(text), "preset", cfg, &e) != K22_OK)
        K22_FATAL("scheduler preset %s does not parse: %s", pipeline, e.msg);
    return K22_OK;
}
