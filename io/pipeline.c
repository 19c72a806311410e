/* pipeline.c: the pipeline-level files of a diffusers folder: model_index.json, tokenizer/ and
 * image_processor/, written the way diffusers 0.42 / transformers 5 write them. */
#include "k22/diffusers.h"
#include "k22/embedded.h"
#include "k22/fsutil.h"
#include "k22/json.h"

#include <ctype.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define K22_DIFFUSERS_VERSION "0.42.1"
#define K22_MODEL_INDEX_MAX_BYTES ((size_t)1 << 20)

static int comp_cmp(const void *a, const void *b)
{
    return strcmp(((const k22_pipe_component *)a)->name, ((const k22_pipe_component *)b)->name);
}

static void add_comp(k22_model_index *mi, const char *name, const char *lib, const char *cls)
{
    K22_REQUIRE(mi->n < K22_PIPE_MAX_COMPONENTS);
    k22_pipe_component *c = &mi->comp[mi->n++];
    snprintf(c->name, sizeof c->name, "%s", name);
    snprintf(c->library, sizeof c->library, "%s", lib);
    snprintf(c->cls, sizeof c->cls, "%s", cls);
}

void k22_model_index_for(k22_pipe_kind kind, const char *sched_class, k22_model_index *mi)
{
    memset(mi, 0, sizeof *mi);
    snprintf(mi->version, sizeof mi->version, "%s", K22_DIFFUSERS_VERSION);
    if (kind == K22_PIPE_PRIOR) {
        snprintf(mi->class_name, sizeof mi->class_name, "KandinskyV22PriorPipeline");
        add_comp(mi, "prior", k22_model_library(K22_MODEL_PRIOR), k22_model_class_name(K22_MODEL_PRIOR));
        add_comp(mi, "image_encoder", k22_model_library(K22_MODEL_CLIP_VISION),
                 k22_model_class_name(K22_MODEL_CLIP_VISION));
        add_comp(mi, "text_encoder", k22_model_library(K22_MODEL_CLIP_TEXT),
                 k22_model_class_name(K22_MODEL_CLIP_TEXT));
        add_comp(mi, "tokenizer", "transformers", "CLIPTokenizer");
        add_comp(mi, "scheduler", "diffusers", sched_class);
        add_comp(mi, "image_processor", "transformers", "CLIPImageProcessor");
    } else {
        snprintf(mi->class_name, sizeof mi->class_name, "KandinskyV22Pipeline");
        add_comp(mi, "unet", k22_model_library(K22_MODEL_UNET), k22_model_class_name(K22_MODEL_UNET));
        add_comp(mi, "scheduler", "diffusers", sched_class);
        add_comp(mi, "movq", k22_model_library(K22_MODEL_MOVQ), k22_model_class_name(K22_MODEL_MOVQ));
    }
    qsort(mi->comp, (size_t)mi->n, sizeof mi->comp[0], comp_cmp);
}

const k22_pipe_component *k22_model_index_find(const k22_model_index *mi, const char *name)
{
    for (int i = 0; i < mi->n; i++)
        if (!strcmp(mi->comp[i].name, name)) return &mi->comp[i];
    return NULL;
}

static k22_status copy_str(const char *path, const char *key, json_t *v, char *dst, size_t n,
                           k22_err *err)
{
    if (!json_is_string(v))
        return k22_err_set(err, K22_ERR_FORMAT, "%s: '%s' must be a string", path, key);
    const char *s = json_string_value(v);
    if (strlen(s) >= n)
        return k22_err_set(err, K22_ERR_FORMAT, "%s: '%s' is longer than %zu bytes", path, key, n - 1);
    memcpy(dst, s, strlen(s) + 1);
    return K22_OK;
}

/* One "name": ["library", "Class"] entry ([null, null] marks an absent optional component). */
static k22_status read_comp(const char *path, const char *key, json_t *v, k22_model_index *mi,
                            k22_err *err)
{
    if (!json_is_array(v) || json_array_size(v) != 2)
        return k22_err_set(err, K22_ERR_FORMAT, "%s: '%s' must be [library, class]", path, key);
    if (mi->n >= K22_PIPE_MAX_COMPONENTS)
        return k22_err_set(err, K22_ERR_FORMAT, "%s: more than %d components", path,
                           K22_PIPE_MAX_COMPONENTS);
    k22_pipe_component *c = &mi->comp[mi->n];
    memset(c, 0, sizeof *c);
    if (strlen(key) >= sizeof c->name)
        return k22_err_set(err, K22_ERR_FORMAT, "%s: component name '%.40s...' is too long", path, key);
    /* The name is a subfolder of the pipeline: only a plain identifier, as diffusers' are, so
     * no name can lead outside the folder. */
    for (const char *p = key; *p; p++)
        if (!(isalnum((unsigned char)*p) || *p == '_'))
            return k22_err_set(err, K22_ERR_FORMAT,
                               "%s: component name '%.64s' is not a plain identifier [A-Za-z0-9_]",
                               path, key);
    if (!key[0]) return k22_err_set(err, K22_ERR_FORMAT, "%s: empty component name", path);
    memcpy(c->name, key, strlen(key) + 1);
    json_t *lib = json_array_get(v, 0), *cls = json_array_get(v, 1);
    if (!json_is_null(lib) || !json_is_null(cls)) {
        k22_status st = copy_str(path, key, lib, c->library, sizeof c->library, err);
        if (!st) st = copy_str(path, key, cls, c->cls, sizeof c->cls, err);
        if (st) return st;
        if (!c->library[0] || !c->cls[0])
            return k22_err_set(err, K22_ERR_FORMAT, "%s: '%s' has an empty library or class name",
                               path, key);
    }
    mi->n++;
    return K22_OK;
}

k22_status k22_model_index_parse(const char *json, size_t len, const char *path,
                                 k22_model_index *mi, k22_err *err)
{
    memset(mi, 0, sizeof *mi);
    if (len > K22_MODEL_INDEX_MAX_BYTES)
        return k22_err_set(err, K22_ERR_FORMAT, "%s: %zu bytes is more than the %zu allowed", path,
                           len, K22_MODEL_INDEX_MAX_BYTES);
    json_error_t je;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return k22_err_set(err, K22_ERR_FORMAT, "%s: invalid JSON at line %d: %s", path, je.line, je.text);
    k22_status st = K22_OK;
    if (!json_is_object(root)) {
        st = k22_err_set(err, K22_ERR_FORMAT, "%s: expected a JSON object", path);
        goto out;
    }
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (!strcmp(key, "_class_name")) st = copy_str(path, key, v, mi->class_name, sizeof mi->class_name, err);
        else if (!strcmp(key, "_diffusers_version")) st = copy_str(path, key, v, mi->version, sizeof mi->version, err);
        else if (key[0] == '_') continue; /* other private keys (_name_or_path) */
        else st = read_comp(path, key, v, mi, err);
        if (st) goto out;
    }
    if (!mi->class_name[0]) st = k22_err_set(err, K22_ERR_FORMAT, "%s: no '_class_name'", path);
    qsort(mi->comp, (size_t)mi->n, sizeof mi->comp[0], comp_cmp);
out:
    json_decref(root);
    return st;
}

k22_status k22_model_index_read(const char *path, k22_model_index *mi, k22_err *err)
{
    memset(mi, 0, sizeof *mi);
    char *text = NULL;
    size_t len = 0;
    k22_status st = k22_fs_read_all(path, K22_MODEL_INDEX_MAX_BYTES, &text, &len, err);
    if (st) return st;
    st = k22_model_index_parse(text, len, path, mi, err);
    free(text);
    return st;
}

k22_status k22_model_index_write(const char *path, const k22_model_index *mi, k22_err *err)
{
    /* diffusers writes json.dumps(indent=2, sort_keys=True) + "\n"; k22_json_dumps does the
     * same, escaping whatever a name holds. */
    json_t *o = json_object();
    json_object_set_new(o, "_class_name", json_string(mi->class_name));
    json_object_set_new(o, "_diffusers_version", json_string(mi->version));
    for (int i = 0; i < mi->n; i++) {
        const k22_pipe_component *c = &mi->comp[i];
        json_t *pair = c->library[0] ? json_pack("[ss]", c->library, c->cls) : json_pack("[nn]");
        json_object_set_new(o, c->name, pair);
    }
    char *text = k22_json_dumps(o, 0);
    json_decref(o);
    if (!text) return k22_err_set(err, K22_ERR_INTERNAL, "%s: cannot serialize the model index", path);
    k22_status st = k22_fs_write_atomic(path, text, strlen(text), err);
    free(text);
    return st;
}

/* transformers 5 CLIPTokenizer.save_pretrained writes this tokenizer_config.json (it also
 * writes tokenizer.json, which it does not need to load: vocab.json + merges.txt suffice). */
static const char k22_tokenizer_config[] =
    "{\n"
    "  \"backend\": \"tokenizers\",\n"
    "  \"bos_token\": \"<|startoftext|>\",\n"
    "  \"eos_token\": \"<|endoftext|>\",\n"
    "  \"model_max_length\": 77,\n"
    "  \"pad_token\": \"<|endoftext|>\",\n"
    "  \"tokenizer_class\": \"CLIPTokenizer\",\n"
    "  \"unk_token\": \"<|endoftext|>\"\n"
    "}\n";

/* transformers 4 wrote this file; older loaders and other tools read it. */
static const char k22_special_tokens_map[] =
    "{\n"
    "  \"bos_token\": \"<|startoftext|>\",\n"
    "  \"eos_token\": \"<|endoftext|>\",\n"
    "  \"pad_token\": \"<|endoftext|>\",\n"
    "  \"unk_token\": \"<|endoftext|>\"\n"
    "}\n";

/* CLIPImageProcessor(size=224, crop_size=224, resample=3, CLIP mean/std).save_pretrained. */
static const char k22_preprocessor_config[] =
    "{\n"
    "  \"crop_size\": {\n"
    "    \"height\": 224,\n"
    "    \"width\": 224\n"
    "  },\n"
    "  \"do_center_crop\": true,\n"
    "  \"do_convert_rgb\": true,\n"
    "  \"do_normalize\": true,\n"
    "  \"do_rescale\": true,\n"
    "  \"do_resize\": true,\n"
    "  \"image_mean\": [\n"
    "    0.48145466,\n"
    "    0.4578275,\n"
    "    0.40821073\n"
    "  ],\n"
    "  \"image_processor_type\": \"CLIPImageProcessor\",\n"
    "  \"image_std\": [\n"
    "    0.26862954,\n"
    "    0.26130258,\n"
    "    0.27577711\n"
    "  ],\n"
    "  \"resample\": 3,\n"
    "  \"rescale_factor\": 0.00392156862745098,\n"
    "  \"size\": {\n"
    "    \"shortest_edge\": 224\n"
    "  }\n"
    "}\n";

static k22_status write_in(const char *dir, const char *name, const void *data, size_t n,
                           k22_err *err)
{
    char path[4096];
    k22_status st = k22_fs_join(path, sizeof path, dir, name, err);
    if (!st) st = k22_fs_write_atomic(path, data, n, err);
    return st;
}

k22_status k22_tokenizer_write(const char *dir, k22_err *err)
{
    k22_status st = k22_fs_mkdir_p(dir, err);
    if (!st)
        st = write_in(dir, "vocab.json", k22_clip_vocab_json,
                      (size_t)(k22_clip_vocab_json_end - k22_clip_vocab_json), err);
    if (!st)
        st = write_in(dir, "merges.txt", k22_clip_merges_txt,
                      (size_t)(k22_clip_merges_txt_end - k22_clip_merges_txt), err);
    if (!st)
        st = write_in(dir, "tokenizer_config.json", k22_tokenizer_config,
                      sizeof k22_tokenizer_config - 1, err);
    if (!st)
        st = write_in(dir, "special_tokens_map.json", k22_special_tokens_map,
                      sizeof k22_special_tokens_map - 1, err);
    return st;
}

k22_status k22_image_processor_write(const char *dir, k22_err *err)
{
    k22_status st = k22_fs_mkdir_p(dir, err);
    if (!st)
        st = write_in(dir, "preprocessor_config.json", k22_preprocessor_config,
                      sizeof k22_preprocessor_config - 1, err);
    return st;
}
