/* config.c: config.json <-> k22_model_config for the five model classes. Each class has one
 * table listing every key the upstream library knows (facts from diffusers 0.42.1 and
 * transformers 5.23.0): keys k22 stores, keys that do not change the computation, and keys
 * accepted only at the value k22 implements. Unknown keys are refused. */
#include "k22/config.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config_table.h"
#include "k22/json.h"

#define K22_DIFFUSERS_VERSION "0.42.1"
#define K22_TRANSFORMERS_VERSION "5.23.0"

/* ---------------------------------------------------------------- class names */

const char *k22_model_class_name(k22_model_kind k)
{
    switch (k) {
    case K22_MODEL_PRIOR: return "PriorTransformer";
    case K22_MODEL_UNET: return "UNet2DConditionModel";
    case K22_MODEL_MOVQ: return "VQModel";
    case K22_MODEL_CLIP_TEXT: return "CLIPTextModelWithProjection";
    case K22_MODEL_CLIP_VISION: return "CLIPVisionModelWithProjection";
    default: return "?";
    }
}

static int is_transformers(k22_model_kind k)
{
    return k == K22_MODEL_CLIP_TEXT || k == K22_MODEL_CLIP_VISION;
}

const char *k22_model_library(k22_model_kind k)
{
    return is_transformers(k) ? "transformers" : "diffusers";
}

const char *k22_model_weights_file(k22_model_kind k)
{
    return is_transformers(k) ? "model.safetensors" : "diffusion_pytorch_model.safetensors";
}

/* ---------------------------------------------------------------- table helpers */


static const char *const only_null[] = {"null", NULL};
static const char *const only_false[] = {"false", NULL};
static const char *const only_zero[] = {"0.0", NULL};
static const char *const only_one[] = {"1", NULL};
static const char *const only_three[] = {"3", NULL};
static const char *const only_silu[] = {"\"silu\"", NULL};
static const char *const null_or_false[] = {"null", "false", NULL};
static const char *const empty_object[] = {"{}", NULL};

/* ---------------------------------------------------------------- prior */

static const char *const prior_class[] = {"\"PriorTransformer\"", NULL};
static const char *const prior_linear[] = {"\"linear\"", NULL};
static const char *const prior_prd[] = {"\"prd\"", NULL};

#define P k22_prior_config
static const ct_field prior_table[] = {
    FIXD("_class_name", "\"PriorTransformer\"", prior_class),
    ANY_("_diffusers_version", "\"" K22_DIFFUSERS_VERSION "\""),
    SKIP("_name_or_path"),
    SKIP("_use_default_values"),
    FIXD("added_emb_type", "\"prd\"", prior_prd),
    INT_("additional_embeddings", P, additional_embeddings, 0, CT_BIG, "4"),
    INT_("attention_head_dim", P, attention_head_dim, 1, CT_BIG, "64"),
    NINT("clip_embed_dim", P, clip_embed_dim, 1, CT_BIG),
    FIXD("dropout", "0.0", only_zero),
    INT_("embedding_dim", P, embedding_dim, 1, CT_BIG, "768"),
    NINT("embedding_proj_dim", P, embedding_proj_dim, 1, CT_BIG),
    FIXD("embedding_proj_norm_type", "null", only_null),
    FIXD("encoder_hid_proj_type", "\"linear\"", prior_linear),
    FIXD("norm_in_type", "null", only_null),
    INT_("num_attention_heads", P, num_attention_heads, 1, CT_BIG, "32"),
    INT_("num_embeddings", P, num_embeddings, 1, CT_BIG, "77"),
    INT_("num_layers", P, num_layers, 0, 512, "20"),
    FIXD("time_embed_act_fn", "\"silu\"", only_silu),
    NINT("time_embed_dim", P, time_embed_dim, 1, CT_BIG),
};
#undef P

/* Resolves the null dimensions the way PriorTransformer.__init__ does and checks sizes. */
static k22_status prior_check(k22_prior_config *c, const char *file, k22_err *err)
{
    if (c->additional_embeddings != 4) {
        json_t *v = json_integer(c->additional_embeddings);
        k22_status st = ct_unsupported(err, file, "additional_embeddings", v,
                                       "4: the text tokens, text embedding, time, x_t and prd");
        json_decref(v);
        return st;
    }
    int64_t inner = (int64_t)c->num_attention_heads * c->attention_head_dim;
    if (inner > CT_BIG)
        return k22_err_set(err, K22_ERR_FORMAT, "%s: num_attention_heads * attention_head_dim = %lld is too large",
                           file, (long long)inner);
    if (!c->time_embed_dim) c->time_embed_dim = (int)inner;
    if (!c->embedding_proj_dim) c->embedding_proj_dim = c->embedding_dim;
    if (!c->clip_embed_dim) c->clip_embed_dim = c->embedding_dim;
    return K22_OK;
}

/* Writes null for a dimension equal to what null resolves to, as the library's default does. */
static void prior_unresolve(json_t *o, const k22_prior_config *c)
{
    int inner = c->num_attention_heads * c->attention_head_dim;
    if (c->time_embed_dim == inner) json_object_set_new(o, "time_embed_dim", json_null());
    if (c->embedding_proj_dim == c->embedding_dim)
        json_object_set_new(o, "embedding_proj_dim", json_null());
    if (c->clip_embed_dim == c->embedding_dim) json_object_set_new(o, "clip_embed_dim", json_null());
}

/* ---------------------------------------------------------------- unet */

static const char *const unet_class[] = {"\"UNet2DConditionModel\"", NULL};
static const char *const unet_image[] = {"\"image\"", NULL};
static const char *const unet_image_proj[] = {"\"image_proj\"", NULL};
static const char *const unet_scale_shift[] = {"\"scale_shift\"", NULL};
static const char *const unet_default[] = {"\"default\"", NULL};
static const char *const unet_positional[] = {"\"positional\"", NULL};
static const char *const unet_one_real[] = {"1.0", NULL};
static const char *const unet_down[] = {"ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D", NULL};
static const char *const unet_up[] = {"SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D", NULL};
static const char *const unet_mid[] = {"UNetMidBlock2DSimpleCrossAttn", NULL};

#define U k22_unet_config
static const ct_field unet_table[] = {
    FIXD("_class_name", "\"UNet2DConditionModel\"", unet_class),
    ANY_("_diffusers_version", "\"" K22_DIFFUSERS_VERSION "\""),
    SKIP("_name_or_path"),
    SKIP("_use_default_values"),
    FIXD("act_fn", "\"silu\"", only_silu),
    FIXD("addition_embed_type", "null", unet_image),
    ANY_("addition_embed_type_num_heads", "64"),  /* only for addition_embed_type "text" */
    ANY_("addition_time_embed_dim", "null"),      /* only for "text_time" */
    INT_("attention_head_dim", U, attention_head_dim, 1, CT_BIG, "8"),
    FIXD("attention_type", "\"default\"", unet_default),
    INTS("block_out_channels", U, block_out_channels, nblocks, "[320, 640, 1280, 1280]"),
    FIXD("center_input_sample", "false", only_false),
    FIXD("class_embed_type", "null", only_null),
    FIXD("class_embeddings_concat", "false", only_false),
    FIXD("conv_in_kernel", "3", only_three),
    FIXD("conv_out_kernel", "3", only_three),
    INT_("cross_attention_dim", U, cross_attention_dim, 1, CT_BIG, "1280"),
    FIXD("cross_attention_norm", "null", only_null),
    STRS("down_block_types", U, down_block_types, nblocks,
         "[\"CrossAttnDownBlock2D\", \"CrossAttnDownBlock2D\", \"CrossAttnDownBlock2D\", \"DownBlock2D\"]",
         unet_down),
    ANY_("downsample_padding", "1"),              /* resnet downsamplers have no padding option */
    FIXD("dropout", "0.0", only_zero),
    ANY_("dual_cross_attention", "false"),        /* only for transformer blocks */
    NINT("encoder_hid_dim", U, encoder_hid_dim, 1, CT_BIG),
    FIXD("encoder_hid_dim_type", "null", unet_image_proj),
    BOOL("flip_sin_to_cos", U, flip_sin_to_cos, "true"),
    REAL("freq_shift", U, freq_shift, "0", CT_INTW),
    INT_("in_channels", U, in_channels, 1, CT_BIG, "4"),
    INT_("layers_per_block", U, layers_per_block, 1, 16, "2"),
    FIXD("mid_block_only_cross_attention", "null", null_or_false),
    FIXD("mid_block_scale_factor", "1", only_one),
    STR_("mid_block_type", U, mid_block_type, "\"UNetMidBlock2DCrossAttn\"", unet_mid),
    REAL("norm_eps", U, norm_eps, "1e-05", 0),
    INT_("norm_num_groups", U, norm_num_groups, 1, CT_BIG, "32"),
    FIXD("num_attention_heads", "null", only_null),
    FIXD("num_class_embeds", "null", only_null),
    FIXD("only_cross_attention", "false", only_false),
    INT_("out_channels", U, out_channels, 1, CT_BIG, "4"),
    ANY_("projection_class_embeddings_input_dim", "null"), /* only with a class embedding */
    FIXD("resnet_out_scale_factor", "1.0", unet_one_real),
    FIXD("resnet_skip_time_act", "false", only_false),
    FIXD("resnet_time_scale_shift", "\"default\"", unet_scale_shift),
    ANY_("reverse_transformer_layers_per_block", "null"), /* only for transformer blocks */
    NINT("sample_size", U, sample_size, 1, CT_BIG),
    FIXD("time_cond_proj_dim", "null", only_null),
    FIXD("time_embedding_act_fn", "null", only_null),
    NINT("time_embedding_dim", U, time_embedding_dim, 1, CT_BIG),
    FIXD("time_embedding_type", "\"positional\"", unet_positional),
    FIXD("timestep_post_act", "null", only_null),
    ANY_("transformer_layers_per_block", "1"),    /* only for transformer blocks */
    STRS("up_block_types", U, up_block_types, nblocks,
         "[\"UpBlock2D\", \"CrossAttnUpBlock2D\", \"CrossAttnUpBlock2D\", \"CrossAttnUpBlock2D\"]",
         unet_up),
    ANY_("upcast_attention", "false"),            /* simple blocks always upcast the softmax */
    ANY_("use_linear_projection", "false"),       /* only for transformer blocks */
};
#undef U

/* The three block lists share one count field, so compare the lengths in the file itself (a
 * missing list has the library default's length). */
static k22_status count_check(const json_t *o, const char *file, int defaults, k22_err *err)
{
    const json_t *boc = json_object_get(o, "block_out_channels");
    size_t n = boc ? json_array_size(boc) : (size_t)defaults;
    const char *keys[2] = {"down_block_types", "up_block_types"};
    for (int i = 0; i < 2; i++) {
        const json_t *a = json_object_get(o, keys[i]);
        size_t m = a ? json_array_size(a) : (size_t)defaults;
        if (m != n)
            return k22_err_set(err, K22_ERR_FORMAT, "%s: key '%s' has %zu entries but 'block_out_channels' has %zu",
                               file, keys[i], m, n);
    }
    return K22_OK;
}

static k22_status groups_check(const char *file, int channels, int groups, const char *what,
                               k22_err *err)
{
    if (channels % groups != 0)
        return k22_err_set(err, K22_ERR_FORMAT, "%s: %s has %d channels, not a multiple of norm_num_groups = %d",
                           file, what, channels, groups);
    return K22_OK;
}

static k22_status unet_check(const json_t *o, k22_unet_config *c, const char *file, k22_err *err)
{
    k22_status st = count_check(o, file, 4, err);
    if (st != K22_OK) return st;
    if (!c->encoder_hid_dim)
        return k22_err_set(err, K22_ERR_KEY, "%s: key 'encoder_hid_dim' must be set for encoder_hid_dim_type \"image_proj\"",
                           file);
    for (int i = 0; i < c->nblocks && st == K22_OK; i++) {
        char what[48];
        snprintf(what, sizeof what, "block_out_channels[%d]", i);
        st = groups_check(file, c->block_out_channels[i], c->norm_num_groups, what, err);
        if (st == K22_OK && c->block_out_channels[i] % c->attention_head_dim != 0)
            st = k22_err_set(err, K22_ERR_UNSUPPORTED,
                             "%s: %s = %d is not a multiple of attention_head_dim = %d (k22 needs whole heads)",
                             file, what, c->block_out_channels[i], c->attention_head_dim);
    }
    if (st != K22_OK) return st;
    if (!c->time_embedding_dim) {
        if (c->block_out_channels[0] > CT_BIG / 4)
            return k22_err_set(err, K22_ERR_FORMAT, "%s: block_out_channels[0] is too large", file);
        c->time_embedding_dim = c->block_out_channels[0] * 4;
    }
    return K22_OK;
}

static void unet_unresolve(json_t *o, const k22_unet_config *c)
{
    if (c->time_embedding_dim == c->block_out_channels[0] * 4)
        json_object_set_new(o, "time_embedding_dim", json_null());
}

/* ---------------------------------------------------------------- movq */

static const char *const movq_class[] = {"\"VQModel\"", NULL};
static const char *const movq_spatial[] = {"\"spatial\"", NULL};
static const char *const movq_down[] = {"DownEncoderBlock2D", "AttnDownEncoderBlock2D", NULL};
static const char *const movq_up[] = {"UpDecoderBlock2D", "AttnUpDecoderBlock2D", NULL};

#define M k22_movq_config
static const ct_field movq_table[] = {
    FIXD("_class_name", "\"VQModel\"", movq_class),
    ANY_("_diffusers_version", "\"" K22_DIFFUSERS_VERSION "\""),
    SKIP("_name_or_path"),
    SKIP("_use_default_values"),
    FIXD("act_fn", "\"silu\"", only_silu),
    INTS("block_out_channels", M, block_out_channels, nblocks, "[64]"),
    STRS("down_block_types", M, down_block_types, nblocks, "[\"DownEncoderBlock2D\"]", movq_down),
    ANY_("force_upcast", "false"),      /* fp16 VAE handling in pipelines */
    INT_("in_channels", M, in_channels, 1, CT_BIG, "3"),
    INT_("latent_channels", M, latent_channels, 1, CT_BIG, "3"),
    INT_("layers_per_block", M, layers_per_block, 1, 16, "1"),
    FIXD("lookup_from_codebook", "false", only_false),
    BOOL("mid_block_add_attention", M, mid_block_add_attention, "true"),
    INT_("norm_num_groups", M, norm_num_groups, 1, CT_BIG, "32"),
    FIXD("norm_type", "\"group\"", movq_spatial),
    INT_("num_vq_embeddings", M, num_vq_embeddings, 1, CT_BIG, "256"),
    INT_("out_channels", M, out_channels, 1, CT_BIG, "3"),
    ANY_("sample_size", "32"),          /* a pipeline default size, not an architecture */
    REAL("scaling_factor", M, scaling_factor, "0.18215", 0),
    STRS("up_block_types", M, up_block_types, nblocks, "[\"UpDecoderBlock2D\"]", movq_up),
    NINT("vq_embed_dim", M, vq_embed_dim, 1, CT_BIG),
};
#undef M

static k22_status movq_check(const json_t *o, k22_movq_config *c, const char *file, k22_err *err)
{
    k22_status st = count_check(o, file, 1, err);
    for (int i = 0; i < c->nblocks && st == K22_OK; i++) {
        char what[48];
        snprintf(what, sizeof what, "block_out_channels[%d]", i);
        st = groups_check(file, c->block_out_channels[i], c->norm_num_groups, what, err);
    }
    if (st != K22_OK) return st;
    if (!c->vq_embed_dim) c->vq_embed_dim = c->latent_channels;
    return K22_OK;
}

/* ---------------------------------------------------------------- CLIP (transformers) */

/* Keys of transformers' PretrainedConfig (4.x and 5.x) that old config.json files carry and that
 * do not change an encoder's forward: generation settings, labels, output flags, dtypes. */
#define CLIP_GENERIC                                                                               \
    SKIP("_name_or_path"), SKIP("torch_dtype"), SKIP("add_cross_attention"),                       \
        SKIP("bad_words_ids"), SKIP("begin_suppress_tokens"), SKIP("chunk_size_feed_forward"),     \
        SKIP("cross_attention_hidden_size"), SKIP("decoder_start_token_id"),                       \
        SKIP("diversity_penalty"), SKIP("do_sample"), SKIP("early_stopping"),                      \
        SKIP("encoder_no_repeat_ngram_size"), SKIP("exponential_decay_length_penalty"),            \
        SKIP("finetuning_task"), SKIP("forced_bos_token_id"), SKIP("forced_eos_token_id"),         \
        SKIP("id2label"), SKIP("is_decoder"), SKIP("is_encoder_decoder"), SKIP("label2id"),        \
        SKIP("length_penalty"), SKIP("max_length"), SKIP("min_length"),                            \
        SKIP("no_repeat_ngram_size"), SKIP("num_beam_groups"), SKIP("num_beams"),                  \
        SKIP("num_return_sequences"), SKIP("output_attentions"), SKIP("output_hidden_states"),     \
        SKIP("output_scores"), SKIP("prefix"), SKIP("problem_type"), SKIP("remove_invalid_values"), \
        SKIP("repetition_penalty"), SKIP("return_dict"), SKIP("return_dict_in_generate"),          \
        SKIP("sep_token_id"), SKIP("suppress_tokens"), SKIP("task_specific_params"),               \
        SKIP("temperature"), SKIP("tf_legacy_loss"), SKIP("tie_encoder_decoder"),                  \
        SKIP("tie_word_embeddings"), SKIP("tokenizer_class"), SKIP("top_k"), SKIP("top_p"),        \
        SKIP("torchscript"), SKIP("typical_p"), SKIP("use_bfloat16"), SKIP("use_return_dict"),     \
        SKIP("gradient_checkpointing"), SKIP("use_cache"),                                          \
        {"pruned_heads", CT_FIXED, CT_NOWRITE, 0, 0, 0, 0, 0, "{}", empty_object},                \
        {"dropout", CT_FIXED, CT_NOWRITE, 0, 0, 0, 0, 0, "0.0", only_zero}

static const char *const clip_acts[] = {"quick_gelu", "gelu", NULL};
static const char *const text_arch[] = {"[\"CLIPTextModelWithProjection\"]", NULL};
static const char *const text_type[] = {"\"clip_text_model\"", NULL};
static const char *const vision_arch[] = {"[\"CLIPVisionModelWithProjection\"]", NULL};
static const char *const vision_type[] = {"\"clip_vision_model\"", NULL};

#define T k22_clip_text_config
static const ct_field text_table[] = {
    FIXD("architectures", "[\"CLIPTextModelWithProjection\"]", text_arch),
    FIXD("attention_dropout", "0.0", only_zero),
    INT_("bos_token_id", T, bos_token_id, 0, CT_BIG, "49406"),
    ANY_("dtype", "\"float32\""),
    INT_("eos_token_id", T, eos_token_id, 0, CT_BIG, "49407"),
    STR_("hidden_act", T, hidden_act, "\"quick_gelu\"", clip_acts),
    INT_("hidden_size", T, hidden_size, 1, CT_BIG, "512"),
    ANY_("initializer_factor", "1.0"),
    ANY_("initializer_range", "0.02"),
    INT_("intermediate_size", T, intermediate_size, 1, CT_BIG, "2048"),
    REAL("layer_norm_eps", T, layer_norm_eps, "1e-05", 0),
    INT_("max_position_embeddings", T, max_position_embeddings, 1, CT_BIG, "77"),
    FIXD("model_type", "\"clip_text_model\"", text_type),
    INT_("num_attention_heads", T, num_attention_heads, 1, CT_BIG, "8"),
    INT_("num_hidden_layers", T, num_hidden_layers, 0, 512, "12"),
    INT_("pad_token_id", T, pad_token_id, 0, CT_BIG, "1"),
    INT_("projection_dim", T, projection_dim, 1, CT_BIG, "512"),
    ANY_("transformers_version", "\"" K22_TRANSFORMERS_VERSION "\""),
    INT_("vocab_size", T, vocab_size, 1, CT_BIG, "49408"),
    CLIP_GENERIC,
};
#undef T

#define V k22_clip_vision_config
static const ct_field vision_table[] = {
    FIXD("architectures", "[\"CLIPVisionModelWithProjection\"]", vision_arch),
    FIXD("attention_dropout", "0.0", only_zero),
    ANY_("dtype", "\"float32\""),
    STR_("hidden_act", V, hidden_act, "\"quick_gelu\"", clip_acts),
    INT_("hidden_size", V, hidden_size, 1, CT_BIG, "768"),
    INT_("image_size", V, image_size, 1, 65536, "224"),
    ANY_("initializer_factor", "1.0"),
    ANY_("initializer_range", "0.02"),
    INT_("intermediate_size", V, intermediate_size, 1, CT_BIG, "3072"),
    REAL("layer_norm_eps", V, layer_norm_eps, "1e-05", 0),
    FIXD("model_type", "\"clip_vision_model\"", vision_type),
    INT_("num_attention_heads", V, num_attention_heads, 1, CT_BIG, "12"),
    INT_("num_channels", V, num_channels, 1, 64, "3"),
    INT_("num_hidden_layers", V, num_hidden_layers, 0, 512, "12"),
    INT_("patch_size", V, patch_size, 1, 65536, "32"),
    INT_("projection_dim", V, projection_dim, 1, CT_BIG, "512"),
    ANY_("transformers_version", "\"" K22_TRANSFORMERS_VERSION "\""),
    CLIP_GENERIC,
    SKIP("bos_token_id"), SKIP("eos_token_id"), SKIP("pad_token_id"), /* 4.x wrote them */
};
#undef V

static k22_status heads_check(const char *file, int hidden, int heads, k22_err *err)
{
    if (hidden % heads != 0)
        return k22_err_set(err, K22_ERR_FORMAT, "%s: hidden_size = %d is not a multiple of num_attention_heads = %d",
                           file, hidden, heads);
    return K22_OK;
}

static k22_status text_check(k22_clip_text_config *c, const char *file, k22_err *err)
{
    k22_status st = heads_check(file, c->hidden_size, c->num_attention_heads, err);
    if (st != K22_OK) return st;
    const char *names[3] = {"bos_token_id", "eos_token_id", "pad_token_id"};
    int ids[3] = {c->bos_token_id, c->eos_token_id, c->pad_token_id};
    for (int i = 0; i < 3; i++)
        if (ids[i] >= c->vocab_size)
            return k22_err_set(err, K22_ERR_FORMAT, "%s: key '%s' = %d is not below vocab_size = %d",
                               file, names[i], ids[i], c->vocab_size);
    return K22_OK;
}

static k22_status vision_check(k22_clip_vision_config *c, const char *file, k22_err *err)
{
    k22_status st = heads_check(file, c->hidden_size, c->num_attention_heads, err);
    if (st != K22_OK) return st;
    if (c->image_size % c->patch_size != 0)
        return k22_err_set(err, K22_ERR_FORMAT, "%s: image_size = %d is not a multiple of patch_size = %d",
                           file, c->image_size, c->patch_size);
    return K22_OK;
}

/* ---------------------------------------------------------------- dispatch */

typedef struct {
    const ct_field *table;
    size_t n;
} kind_table;

static kind_table table_of(k22_model_kind k)
{
    switch (k) {
    case K22_MODEL_PRIOR: return (kind_table){prior_table, N(prior_table)};
    case K22_MODEL_UNET: return (kind_table){unet_table, N(unet_table)};
    case K22_MODEL_MOVQ: return (kind_table){movq_table, N(movq_table)};
    case K22_MODEL_CLIP_TEXT: return (kind_table){text_table, N(text_table)};
    case K22_MODEL_CLIP_VISION: return (kind_table){vision_table, N(vision_table)};
    default: return (kind_table){NULL, 0};
    }
}

/* The class named by the file: "_class_name" (diffusers), else architectures[0], else
 * model_type (transformers). */
static k22_status kind_of(const json_t *o, const char *file, k22_model_kind *out, k22_err *err)
{
    const char *name = NULL;
    const json_t *v = json_object_get(o, "_class_name");
    const json_t *arch = json_object_get(o, "architectures");
    const json_t *mt = json_object_get(o, "model_type");
    if (v) {
        k22_status st = k22_json_get_str(o, file, "_class_name", &name, err);
        if (st != K22_OK) return st;
    } else if (json_is_array(arch) && json_array_size(arch) > 0 &&
               json_is_string(json_array_get(arch, 0))) {
        name = json_string_value(json_array_get(arch, 0));
    } else if (json_is_string(mt)) {
        const char *t = json_string_value(mt);
        name = strcmp(t, "clip_text_model") == 0     ? "CLIPTextModelWithProjection"
               : strcmp(t, "clip_vision_model") == 0 ? "CLIPVisionModelWithProjection"
                                                     : t;
    } else {
        return k22_err_set(err, K22_ERR_KEY, "%s: no '_class_name', 'architectures' or 'model_type' says which model this is",
                           file);
    }
    for (int k = 0; k < K22_MODEL_COUNT; k++) {
        if (strcmp(name, k22_model_class_name((k22_model_kind)k)) == 0) {
            *out = (k22_model_kind)k;
            return K22_OK;
        }
    }
    return k22_err_set(err, K22_ERR_UNSUPPORTED,
                       "%s: class '%.100s' is not implemented by k22 (only PriorTransformer, UNet2DConditionModel, VQModel, CLIPTextModelWithProjection, CLIPVisionModelWithProjection)",
                       file, name);
}

static k22_status model_check(const json_t *o, k22_model_config *cfg, const char *file, k22_err *err)
{
    switch (cfg->kind) {
    case K22_MODEL_PRIOR: return prior_check(&cfg->u.prior, file, err);
    case K22_MODEL_UNET: return unet_check(o, &cfg->u.unet, file, err);
    case K22_MODEL_MOVQ: return movq_check(o, &cfg->u.movq, file, err);
    case K22_MODEL_CLIP_TEXT: return text_check(&cfg->u.clip_text, file, err);
    case K22_MODEL_CLIP_VISION: return vision_check(&cfg->u.clip_vision, file, err);
    default: return K22_ERR_INTERNAL;
    }
}

/* Parses an already loaded object; cfg is zeroed (but for kind) on failure. */
static k22_status config_from_json(const json_t *o, const char *name, k22_model_config *cfg,
                                   k22_err *err)
{
    memset(cfg, 0, sizeof *cfg);
    k22_status st = kind_of(o, name, &cfg->kind, err);
    if (st == K22_OK) {
        kind_table t = table_of(cfg->kind);
        st = ct_parse(o, name, t.table, t.n, &cfg->u, err);
    }
    if (st == K22_OK) st = model_check(o, cfg, name, err);
    if (st != K22_OK) {
        k22_model_kind k = cfg->kind;
        memset(cfg, 0, sizeof *cfg);
        cfg->kind = k;
    }
    return st;
}

k22_status k22_config_parse(const char *json, size_t len, const char *name, k22_model_config *cfg,
                            k22_err *err)
{
    memset(cfg, 0, sizeof *cfg);
    json_t *o = NULL;
    k22_status st = ct_load(json, len, name, &o, err);
    if (st == K22_OK) st = config_from_json(o, name, cfg, err);
    json_decref(o);
    return st;
}

k22_status k22_config_read(const char *path, k22_model_config *cfg, k22_err *err)
{
    memset(cfg, 0, sizeof *cfg);
    json_t *o = NULL;
    k22_status st = k22_json_load_object_file(path, K22_JSON_MAX_CONFIG_BYTES, &o, err);
    if (st == K22_OK) st = config_from_json(o, path, cfg, err);
    json_decref(o);
    return st;
}

/* The config.json object for cfg, keys as the upstream library writes them; NULL with err
 * set for an unknown kind or a value k22 cannot write. */
static json_t *config_to_json(const k22_model_config *cfg, k22_err *err)
{
    kind_table t = table_of(cfg->kind);
    if (!t.table) {
        k22_err_set(err, K22_ERR_ARG, "unknown model kind %d", (int)cfg->kind);
        return NULL;
    }
    json_t *o = json_object();
    if (ct_write(o, t.table, t.n, &cfg->u, err) != K22_OK) {
        json_decref(o);
        return NULL;
    }
    if (cfg->kind == K22_MODEL_PRIOR) prior_unresolve(o, &cfg->u.prior);
    if (cfg->kind == K22_MODEL_UNET) unet_unresolve(o, &cfg->u.unet);
    return o;
}

k22_status k22_config_write(const char *path, const k22_model_config *cfg, k22_err *err)
{
    json_t *o = config_to_json(cfg, err);
    if (!o) return k22_err_prefix(err, "%s", path);
    k22_status st = k22_json_write_file(path, o, K22_JSON_F32, err);
    json_decref(o);
    return st;
}

char *k22_config_dumps(const k22_model_config *cfg)
{
    k22_err err;
    json_t *o = config_to_json(cfg, &err);
    if (!o) return NULL;
    char *s = k22_json_dumps(o, K22_JSON_F32);
    json_decref(o);
    return s;
}
