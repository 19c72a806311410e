/* test_config.c: config.json / scheduler_config.json reading and writing against the files
 * diffusers 0.42.1 and transformers 5.23.0 wrote (tests/fixtures/configs, made by
 * tools/reference/make_param_fixtures.py): byte-equal writes, presets equal to the upstream
 * files, round trips, and an error naming file, key and value for every refused input. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness/harness.h"
#include "k22/config.h"
#include "k22/json.h"

static const char *const components[K22_MODEL_COUNT] = {
    [K22_MODEL_PRIOR] = "prior",
    [K22_MODEL_UNET] = "unet",
    [K22_MODEL_MOVQ] = "movq",
    [K22_MODEL_CLIP_TEXT] = "text_encoder",
    [K22_MODEL_CLIP_VISION] = "image_encoder",
};

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    size_t got = fread(s, 1, (size_t)n, f);
    s[got] = '\0';
    fclose(f);
    return s;
}

/* Every fixture reads, equals the preset of its size, and is written back byte for byte. */
static void test_fixtures(void)
{
    const char *sizes[2] = {"tiny", "full"};
    for (int s = 0; s < 2; s++) {
        for (int k = 0; k < K22_MODEL_COUNT; k++) {
            char path[256];
            snprintf(path, sizeof path, "tests/fixtures/configs/%s/%s/config.json", sizes[s], components[k]);
            k22_model_config cfg, preset, again;
            k22_err err = {0};
            k22_status st = k22_config_read(path, &cfg, &err);
            CHECK_MSG(st == K22_OK, "%s: %s", path, err.msg);
            if (st != K22_OK) continue;
            CHECK_MSG(cfg.kind == (k22_model_kind)k, "%s: kind %d", path, (int)cfg.kind);
            CHECK(k22_config_preset((k22_model_kind)k, sizes[s], &preset, &err) == K22_OK);
            CHECK_MSG(memcmp(&cfg, &preset, sizeof cfg) == 0, "%s differs from preset %s", path, sizes[s]);
            char *want = slurp(path);
            char *got = k22_config_dumps(&cfg);
            CHECK_MSG(want && got && strcmp(want, got) == 0, "%s: written text differs:\n%s\n--- expected\n%s",
                      path, got ? got : "(null)", want ? want : "(null)");
            CHECK(k22_config_parse(got, strlen(got), "again", &again, &err) == K22_OK);
            CHECK_MSG(memcmp(&cfg, &again, sizeof cfg) == 0, "%s: parse(write(cfg)) != cfg", path);
            free(want);
            free(got);
        }
    }
}

static void test_sched_fixtures(void)
{
    const char *names[4] = {"prior", "decoder", "decoder_ddim", "prior_train"};
    for (int i = 0; i < 4; i++) {
        char path[256];
        snprintf(path, sizeof path, "tests/fixtures/configs/scheduler/%s/scheduler_config.json", names[i]);
        k22_sched_config cfg, again;
        k22_err err = {0};
        k22_status st = k22_sched_config_read(path, &cfg, &err);
        CHECK_MSG(st == K22_OK, "%s: %s", path, err.msg);
        if (st != K22_OK) continue;
        char *want = slurp(path);
        char *got = k22_sched_config_dumps(&cfg);
        CHECK_MSG(want && got && strcmp(want, got) == 0, "%s: written text differs:\n%s\n--- expected\n%s",
                  path, got ? got : "(null)", want ? want : "(null)");
        CHECK(k22_sched_config_parse(got, strlen(got), "again", &again, &err) == K22_OK);
        CHECK_MSG(memcmp(&cfg, &again, sizeof cfg) == 0, "%s: parse(write(cfg)) != cfg", path);
        if (strcmp(names[i], "decoder_ddim") != 0) {
            k22_sched_config preset;
            CHECK(k22_sched_preset(names[i], &preset, &err) == K22_OK);
            CHECK_MSG(memcmp(&cfg, &preset, sizeof cfg) == 0, "scheduler preset %s differs from %s", names[i], path);
        }
        free(want);
        free(got);
    }
    k22_sched_config c;
    k22_err err = {0};
    CHECK(k22_sched_preset("decoder", &c, &err) == K22_OK);
    CHECK(c.kind == K22_SCHED_DDPM && c.beta_schedule == K22_BETAS_LINEAR && c.steps_offset == 1);
    CHECK(c.beta_start == 0.00085f && c.beta_end == 0.012f && c.prediction_type == K22_PRED_EPSILON);
    CHECK(strcmp(c.variance_type, "learned_range") == 0 && strcmp(c.timestep_spacing, "leading") == 0);
    CHECK(k22_sched_preset("prior", &c, &err) == K22_OK);
    CHECK(c.kind == K22_SCHED_UNCLIP && c.prediction_type == K22_PRED_SAMPLE && c.clip_sample == 1);
    CHECK(c.clip_sample_range == 10.0f && c.beta_schedule == K22_BETAS_SQUAREDCOS_CAP_V2);
    CHECK(k22_sched_preset("nope", &c, &err) == K22_ERR_ARG);
}

static void test_preset_values(void)
{
    k22_model_config c;
    k22_err err = {0};
    CHECK(k22_config_preset(K22_MODEL_PRIOR, "full", &c, &err) == K22_OK);
    CHECK(c.u.prior.embedding_dim == 1280 && c.u.prior.time_embed_dim == 2048);
    CHECK(c.u.prior.clip_embed_dim == 1280 && c.u.prior.embedding_proj_dim == 1280);
    CHECK(k22_config_preset(K22_MODEL_UNET, "full", &c, &err) == K22_OK);
    CHECK(c.u.unet.nblocks == 4 && c.u.unet.block_out_channels[3] == 1536);
    CHECK(c.u.unet.time_embedding_dim == 1536 && c.u.unet.encoder_hid_dim == 1280);
    CHECK(c.u.unet.sample_size == 64 && c.u.unet.flip_sin_to_cos == 1 && c.u.unet.freq_shift == 0.0f);
    CHECK(k22_config_preset(K22_MODEL_CLIP_TEXT, "tiny", &c, &err) == K22_OK);
    CHECK(c.u.clip_text.vocab_size == 49408 && c.u.clip_text.pad_token_id == 49407);
    CHECK(strcmp(c.u.clip_text.hidden_act, "quick_gelu") == 0 && c.u.clip_text.layer_norm_eps == 1e-5f);
    CHECK(k22_config_preset(K22_MODEL_MOVQ, "full", &c, &err) == K22_OK);
    CHECK(c.u.movq.num_vq_embeddings == 16384 && c.u.movq.norm_num_groups == 32);
    CHECK(c.u.movq.scaling_factor == 0.18215f && c.u.movq.mid_block_add_attention == 1);
    CHECK(k22_config_preset(K22_MODEL_MOVQ, "huge", &c, &err) == K22_ERR_ARG);
    CHECK(strstr(err.msg, "huge") != NULL);
}

/* Loads a fixture, sets (or with value NULL removes) one key, and parses it under `name`. */
static k22_status edited(const char *fixture, const char *key, const char *value, const char *name,
                         k22_err *err, int sched)
{
    json_t *o = json_load_file(fixture, 0, NULL);
    K22_REQUIRE(o != NULL);
    if (value) {
        json_t *v = json_loads(value, JSON_DECODE_ANY, NULL);
        K22_REQUIRE(v != NULL);
        json_object_set_new(o, key, v);
    } else {
        json_object_del(o, key);
    }
    char *text = json_dumps(o, 0);
    json_decref(o);
    k22_status st;
    if (sched) {
        k22_sched_config c;
        st = k22_sched_config_parse(text, strlen(text), name, &c, err);
    } else {
        k22_model_config c;
        st = k22_config_parse(text, strlen(text), name, &c, err);
    }
    free(text);
    return st;
}

typedef struct {
    const char *component; /* fixture folder under tiny/ or scheduler/ */
    const char *key, *value; /* value NULL: the key is removed */
    k22_status want;
    const char *expect[3]; /* substrings of the message besides the file name */
} refusal;

static const refusal refusals[] = {
    {"prior", "norm_in_type", "\"layer\"", K22_ERR_UNSUPPORTED, {"'norm_in_type'", "\"layer\"", "only null"}},
    {"prior", "added_emb_type", "null", K22_ERR_UNSUPPORTED, {"'added_emb_type'", "= null", "\"prd\""}},
    {"prior", "embedding_proj_norm_type", "\"layer\"", K22_ERR_UNSUPPORTED, {"'embedding_proj_norm_type'", "\"layer\"", "not implemented"}},
    {"prior", "encoder_hid_proj_type", "null", K22_ERR_UNSUPPORTED, {"'encoder_hid_proj_type'", "null", "\"linear\""}},
    {"prior", "time_embed_act_fn", "\"gelu\"", K22_ERR_UNSUPPORTED, {"'time_embed_act_fn'", "\"gelu\"", "\"silu\""}},
    {"prior", "dropout", "0.1", K22_ERR_UNSUPPORTED, {"'dropout'", "0.1", "only 0.0"}},
    {"prior", "additional_embeddings", "3", K22_ERR_UNSUPPORTED, {"'additional_embeddings'", "= 3", "only 4"}},
    {"prior", "num_layers", "\"2\"", K22_ERR_FORMAT, {"'num_layers'", "expected an integer", "found a string"}},
    {"prior", "embedding_dim", "4294967296", K22_ERR_FORMAT, {"'embedding_dim'", "4294967296", "out of range"}},
    {"prior", "embedding_dim", "-5", K22_ERR_FORMAT, {"'embedding_dim'", "-5", "out of range"}},
    {"prior", "embedding_dim", "32.0", K22_ERR_FORMAT, {"'embedding_dim'", "expected an integer", "real"}},
    {"prior", "bogus_key", "1", K22_ERR_KEY, {"unknown key", "'bogus_key'", ""}},
    {"prior", "_class_name", "\"Transformer2DModel\"", K22_ERR_UNSUPPORTED, {"'Transformer2DModel'", "not implemented", ""}},
    {"prior", "_class_name", NULL, K22_ERR_KEY, {"_class_name", "which model", ""}},
    {"unet", "addition_embed_type", "\"text\"", K22_ERR_UNSUPPORTED, {"'addition_embed_type'", "\"text\"", "\"image\""}},
    {"unet", "addition_embed_type", NULL, K22_ERR_UNSUPPORTED, {"'addition_embed_type'", "missing", "default null"}},
    {"unet", "encoder_hid_dim_type", "\"text_image_proj\"", K22_ERR_UNSUPPORTED, {"'encoder_hid_dim_type'", "\"text_image_proj\"", "\"image_proj\""}},
    {"unet", "resnet_time_scale_shift", "\"default\"", K22_ERR_UNSUPPORTED, {"'resnet_time_scale_shift'", "\"default\"", "\"scale_shift\""}},
    {"unet", "down_block_types", "[\"CrossAttnDownBlock2D\", \"SimpleCrossAttnDownBlock2D\"]", K22_ERR_UNSUPPORTED, {"'down_block_types[0]'", "\"CrossAttnDownBlock2D\"", "\"ResnetDownsampleBlock2D\""}},
    {"unet", "up_block_types", "[\"SimpleCrossAttnUpBlock2D\", \"UpBlock2D\"]", K22_ERR_UNSUPPORTED, {"'up_block_types[1]'", "\"UpBlock2D\"", "not implemented"}},
    {"unet", "mid_block_type", "\"UNetMidBlock2DCrossAttn\"", K22_ERR_UNSUPPORTED, {"'mid_block_type'", "\"UNetMidBlock2DCrossAttn\"", "UNetMidBlock2DSimpleCrossAttn"}},
    {"unet", "class_embed_type", "\"timestep\"", K22_ERR_UNSUPPORTED, {"'class_embed_type'", "\"timestep\"", "only null"}},
    {"unet", "time_embedding_type", "\"fourier\"", K22_ERR_UNSUPPORTED, {"'time_embedding_type'", "\"fourier\"", "positional"}},
    {"unet", "act_fn", "\"gelu\"", K22_ERR_UNSUPPORTED, {"'act_fn'", "\"gelu\"", "silu"}},
    {"unet", "only_cross_attention", "true", K22_ERR_UNSUPPORTED, {"'only_cross_attention'", "true", "false"}},
    {"unet", "conv_in_kernel", "5", K22_ERR_UNSUPPORTED, {"'conv_in_kernel'", "5", "only 3"}},
    {"unet", "block_out_channels", "[32, 64, 128]", K22_ERR_FORMAT, {"'down_block_types'", "3", "block_out_channels"}},
    {"unet", "block_out_channels", "[32, \"64\"]", K22_ERR_FORMAT, {"'block_out_channels[1]'", "expected an integer", "found a string"}},
    {"unet", "block_out_channels", "[30, 64]", K22_ERR_FORMAT, {"block_out_channels[0]", "30", "norm_num_groups"}},
    {"unet", "attention_head_dim", "[4, 4]", K22_ERR_FORMAT, {"'attention_head_dim'", "expected an integer", "array"}},
    {"unet", "encoder_hid_dim", "null", K22_ERR_KEY, {"'encoder_hid_dim'", "image_proj", ""}},
    {"unet", "norm_eps", "\"small\"", K22_ERR_FORMAT, {"'norm_eps'", "expected a number", "string"}},
    {"unet", "norm_eps", "1e300", K22_ERR_FORMAT, {"'norm_eps'", "32-bit float", ""}},
    {"movq", "norm_type", "\"group\"", K22_ERR_UNSUPPORTED, {"'norm_type'", "\"group\"", "\"spatial\""}},
    {"movq", "norm_type", NULL, K22_ERR_UNSUPPORTED, {"'norm_type'", "missing", "\"group\""}},
    {"movq", "lookup_from_codebook", "true", K22_ERR_UNSUPPORTED, {"'lookup_from_codebook'", "true", "false"}},
    {"movq", "down_block_types", "[\"DownEncoderBlock2D\", \"DownBlock2D\"]", K22_ERR_UNSUPPORTED, {"'down_block_types[1]'", "\"DownBlock2D\"", "not implemented"}},
    {"movq", "mid_block_add_attention", "1", K22_ERR_FORMAT, {"'mid_block_add_attention'", "expected a boolean", "integer"}},
    {"text_encoder", "hidden_act", "\"relu\"", K22_ERR_UNSUPPORTED, {"'hidden_act'", "\"relu\"", "\"quick_gelu\""}},
    {"text_encoder", "attention_dropout", "0.1", K22_ERR_UNSUPPORTED, {"'attention_dropout'", "0.1", "0.0"}},
    {"text_encoder", "architectures", "[\"CLIPTextModel\"]", K22_ERR_UNSUPPORTED, {"'CLIPTextModel'", "not implemented", ""}},
    {"text_encoder", "model_type", "\"clip\"", K22_ERR_UNSUPPORTED, {"'model_type'", "\"clip\"", "clip_text_model"}},
    {"text_encoder", "eos_token_id", "49408", K22_ERR_FORMAT, {"'eos_token_id'", "49408", "vocab_size"}},
    {"text_encoder", "num_attention_heads", "5", K22_ERR_FORMAT, {"hidden_size", "num_attention_heads = 5", ""}},
    {"text_encoder", "pruned_heads", "{\"0\": [1]}", K22_ERR_UNSUPPORTED, {"'pruned_heads'", "{\"0\":[1]}", "{}"}},
    {"image_encoder", "patch_size", "15", K22_ERR_FORMAT, {"image_size", "patch_size = 15", ""}},
    {"image_encoder", "hidden_act", "\"gelu_new\"", K22_ERR_UNSUPPORTED, {"'hidden_act'", "\"gelu_new\"", "\"gelu\""}},
    {"image_encoder", "vision_extra", "0", K22_ERR_KEY, {"unknown key", "'vision_extra'", ""}},
};

static const refusal sched_refusals[] = {
    {"decoder", "thresholding", "true", K22_ERR_UNSUPPORTED, {"'thresholding'", "true", "false"}},
    {"decoder", "trained_betas", "[0.1, 0.2]", K22_ERR_UNSUPPORTED, {"'trained_betas'", "[0.1,0.2]", "null"}},
    {"decoder", "beta_schedule", "\"sigmoid\"", K22_ERR_UNSUPPORTED, {"'beta_schedule'", "\"sigmoid\"", "\"squaredcos_cap_v2\""}},
    {"decoder", "variance_type", "\"fixed_large_log\"", K22_ERR_UNSUPPORTED, {"'variance_type'", "\"fixed_large_log\"", "learned_range"}},
    {"decoder", "timestep_spacing", "\"random\"", K22_ERR_UNSUPPORTED, {"'timestep_spacing'", "\"random\"", "leading"}},
    {"decoder", "num_train_timesteps", "0", K22_ERR_FORMAT, {"'num_train_timesteps'", "0", "out of range"}},
    {"decoder", "prediction_type", "\"x0\"", K22_ERR_UNSUPPORTED, {"'prediction_type'", "\"x0\"", "v_prediction"}},
    {"decoder", "_class_name", "\"EulerDiscreteScheduler\"", K22_ERR_UNSUPPORTED, {"'EulerDiscreteScheduler'", "not implemented", ""}},
    {"decoder", "_class_name", NULL, K22_ERR_KEY, {"'_class_name'", "missing", ""}},
    {"decoder", "extra", "1", K22_ERR_KEY, {"unknown key", "'extra'", ""}},
    {"prior", "beta_schedule", "\"linear\"", K22_ERR_UNSUPPORTED, {"'beta_schedule'", "\"linear\"", "squaredcos_cap_v2"}},
    {"prior", "prediction_type", "\"v_prediction\"", K22_ERR_UNSUPPORTED, {"'prediction_type'", "\"v_prediction\"", "\"sample\""}},
    {"prior", "clip_sample", "\"yes\"", K22_ERR_FORMAT, {"'clip_sample'", "expected a boolean", "string"}},
    {"decoder_ddim", "set_alpha_to_one", "null", K22_ERR_FORMAT, {"'set_alpha_to_one'", "expected a boolean", "null"}},
};

static void run_refusals(const refusal *r, size_t n, int sched)
{
    for (size_t i = 0; i < n; i++) {
        char fixture[256], name[128];
        snprintf(fixture, sizeof fixture, "tests/fixtures/configs/%s/%s/%s", sched ? "scheduler" : "tiny",
                 r[i].component, sched ? "scheduler_config.json" : "config.json");
        snprintf(name, sizeof name, "%s/%s", r[i].component, sched ? "scheduler_config.json" : "config.json");
        k22_err err = {0};
        k22_status st = edited(fixture, r[i].key, r[i].value, name, &err, sched);
        CHECK_MSG(st == r[i].want, "%s %s=%s: status %s, want %s (%s)", name, r[i].key,
                  r[i].value ? r[i].value : "(removed)", k22_status_name(st), k22_status_name(r[i].want), err.msg);
        CHECK_MSG(strncmp(err.msg, name, strlen(name)) == 0, "message does not start with the file: %s", err.msg);
        for (int j = 0; j < 3; j++)
            if (r[i].expect[j] && r[i].expect[j][0])
                CHECK_MSG(strstr(err.msg, r[i].expect[j]) != NULL, "'%s' not in: %s", r[i].expect[j], err.msg);
    }
}

/* Inputs that are not configs at all. */
static void test_bad_inputs(void)
{
    const char *bad[] = {
        "", "{", "[1, 2]", "null", "{\"_class_name\": \"PriorTransformer\",}",
        "{\"_class_name\": \"PriorTransformer\", \"num_layers\": 1, \"num_layers\": 2}",
        "{\"_class_name\": \"PriorTransformer\", \"num_layers\": 99999999999999999999999}",
        "{\"_class_name\": 5}", "{\"_class_name\": \"Prior\\u0000Transformer\"}",
        "{\"model_type\": \"bert\"}", "{\"architectures\": []}",
    };
    const k22_status want[] = {
        K22_ERR_FORMAT, K22_ERR_FORMAT, K22_ERR_FORMAT, K22_ERR_FORMAT, K22_ERR_FORMAT,
        K22_ERR_FORMAT, K22_ERR_FORMAT, K22_ERR_FORMAT, K22_ERR_FORMAT, K22_ERR_UNSUPPORTED,
        K22_ERR_KEY,
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        k22_model_config c;
        k22_err err = {0};
        k22_status st = k22_config_parse(bad[i], strlen(bad[i]), "x/config.json", &c, &err);
        CHECK_MSG(st == want[i], "input %zu (%s): %s, want %s: %s", i, bad[i], k22_status_name(st),
                  k22_status_name(want[i]), err.msg);
        CHECK_MSG(strstr(err.msg, "x/config.json") != NULL, "no file name in: %s", err.msg);
        k22_sched_config s;
        CHECK(k22_sched_config_parse(bad[i], strlen(bad[i]), "x/scheduler_config.json", &s, &err) != K22_OK);
    }
    /* A NUL byte inside the buffer is not the end of the text. */
    const char nul[] = "{\"_class_name\": \"PriorTransformer\"}\0garbage";
    k22_model_config c;
    k22_err err = {0};
    CHECK(k22_config_parse(nul, sizeof nul - 1, "nul", &c, &err) == K22_ERR_FORMAT);
    CHECK(k22_config_parse(nul, strlen(nul), "nul", &c, &err) == K22_OK);
    CHECK(c.kind == K22_MODEL_PRIOR && c.u.prior.embedding_dim == 768); /* the library defaults */
    CHECK(k22_config_read("tests/fixtures/configs/no-such/config.json", &c, &err) == K22_ERR_IO);
    CHECK(strstr(err.msg, "no-such") != NULL);
    CHECK(k22_config_read("tests/fixtures/configs", &c, &err) != K22_OK);
}

/* write -> read through a real file, for every preset. */
static void test_write_read(void)
{
    char dir[] = "/tmp/k22-test-config-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[128];
    snprintf(path, sizeof path, "%s/config.json", dir);
    const char *sizes[2] = {"tiny", "full"};
    for (int s = 0; s < 2; s++) {
        for (int k = 0; k < K22_MODEL_COUNT; k++) {
            k22_model_config a, b;
            k22_err err = {0};
            CHECK(k22_config_preset((k22_model_kind)k, sizes[s], &a, &err) == K22_OK);
            CHECK_MSG(k22_config_write(path, &a, &err) == K22_OK, "%s", err.msg);
            CHECK_MSG(k22_config_read(path, &b, &err) == K22_OK, "%s", err.msg);
            CHECK_MSG(memcmp(&a, &b, sizeof a) == 0, "%s %s: read(write(preset)) differs", sizes[s],
                      k22_model_class_name((k22_model_kind)k));
        }
    }
    k22_sched_config a, b;
    k22_err err = {0};
    CHECK(k22_sched_preset("decoder", &a, &err) == K22_OK);
    CHECK(k22_sched_config_write(path, &a, &err) == K22_OK);
    CHECK(k22_sched_config_read(path, &b, &err) == K22_OK);
    CHECK(memcmp(&a, &b, sizeof a) == 0);
    unlink(path);
    rmdir(dir);
    k22_model_config c;
    CHECK(k22_config_preset(K22_MODEL_PRIOR, "tiny", &c, &err) == K22_OK);
    CHECK(k22_config_write("/nonexistent-dir/config.json", &c, &err) == K22_ERR_IO);
    CHECK(strstr(err.msg, "/nonexistent-dir/config.json") != NULL);
}

/* A struct filled by code with a value the reader refuses is not written. */
static void test_unwritable(void)
{
    k22_model_config c;
    k22_sched_config s;
    k22_err err = {0};
    CHECK(k22_config_preset(K22_MODEL_CLIP_TEXT, "tiny", &c, &err) == K22_OK);
    snprintf(c.u.clip_text.hidden_act, sizeof c.u.clip_text.hidden_act, "relu");
    CHECK(k22_config_dumps(&c) == NULL);
    CHECK(k22_config_write("/tmp/k22-unwritable.json", &c, &err) == K22_ERR_ARG);
    CHECK(strstr(err.msg, "hidden_act") != NULL && strstr(err.msg, "relu") != NULL);
    CHECK(access("/tmp/k22-unwritable.json", F_OK) != 0);
    CHECK(k22_config_preset(K22_MODEL_UNET, "tiny", &c, &err) == K22_OK);
    c.u.unet.nblocks = 9;
    CHECK(k22_config_dumps(&c) == NULL);
    CHECK(k22_config_preset(K22_MODEL_UNET, "tiny", &c, &err) == K22_OK);
    snprintf(c.u.unet.down_block_types[1], 40, "DownBlock2D");
    CHECK(k22_config_dumps(&c) == NULL);
    CHECK(k22_sched_preset("prior", &s, &err) == K22_OK);
    s.prediction_type = K22_PRED_V; /* UnCLIP has no v-prediction */
    CHECK(k22_sched_config_dumps(&s) == NULL);
    CHECK(k22_sched_config_write("/tmp/k22-unwritable.json", &s, &err) == K22_ERR_ARG);
    CHECK(strstr(err.msg, "prediction_type") != NULL);
    c.kind = K22_MODEL_COUNT;
    CHECK(k22_config_dumps(&c) == NULL);
}

/* Old-style files carry keys that do not change the computation: they are accepted. */
static void test_accepted_extras(void)
{
    k22_err err = {0};
    CHECK(edited("tests/fixtures/configs/tiny/text_encoder/config.json", "torch_dtype", "\"float16\"",
                 "t", &err, 0) == K22_OK);
    CHECK(edited("tests/fixtures/configs/tiny/text_encoder/config.json", "_name_or_path", "\"x/y\"",
                 "t", &err, 0) == K22_OK);
    CHECK(edited("tests/fixtures/configs/tiny/image_encoder/config.json", "initializer_range", "0.5",
                 "t", &err, 0) == K22_OK);
    CHECK(edited("tests/fixtures/configs/tiny/unet/config.json", "_diffusers_version", "\"0.18.0.dev0\"",
                 "u", &err, 0) == K22_OK);
    CHECK(edited("tests/fixtures/configs/tiny/unet/config.json", "mid_block_only_cross_attention", "false",
                 "u", &err, 0) == K22_OK);
    CHECK(edited("tests/fixtures/configs/tiny/unet/config.json", "mid_block_scale_factor", "1.0",
                 "u", &err, 0) == K22_OK);
    CHECK(edited("tests/fixtures/configs/tiny/movq/config.json", "force_upcast", "true",
                 "m", &err, 0) == K22_OK);
    CHECK_MSG(edited("tests/fixtures/configs/scheduler/decoder/scheduler_config.json", "set_alpha_to_one",
                     "false", "s", &err, 1) == K22_OK, "%s", err.msg);
}

int main(void)
{
    test_fixtures();
    test_sched_fixtures();
    test_preset_values();
    run_refusals(refusals, sizeof refusals / sizeof refusals[0], 0);
    run_refusals(sched_refusals, sizeof sched_refusals / sizeof sched_refusals[0], 1);
    test_bad_inputs();
    test_write_read();
    test_accepted_extras();
    test_unwritable();
    return k22_test_finish("test_config");
}
