/* diffusers.h: diffusers / transformers folders on disk.
 *
 * A component folder is config.json plus the weights (diffusion_pytorch_model.safetensors for
 * diffusers classes, model.safetensors for transformers classes, or a sharded
 * NAME.safetensors.index.json). Loading is strict both ways: every key of the parameter table
 * must be in the file with the table's shape, and the file may hold no other key; F32, F16 and
 * BF16 tensors convert to f32. A pipeline folder adds model_index.json and the non-model
 * folders (scheduler/, tokenizer/, image_processor/). */
#ifndef K22_DIFFUSERS_H
#define K22_DIFFUSERS_H

#include "k22/config.h"
#include "k22/params.h"

/* diffusers' default max_shard_size ("10GB", decimal). */
#define K22_SHARD_BYTES_DEFAULT 10000000000ull
/* Key mismatches listed per kind before "and N more". */
#define K22_KEY_LIST_MAX 10

/* Finds the weights of a component folder: the kind's single file, else its index.json.
 * Writes the path into out. */
k22_status k22_component_weights_path(const char *dir, k22_model_kind kind, char *out, size_t n,
                                      k22_err *err);
/* Loads weights (a .safetensors file or an index.json) into ps, whose table is built and whose
 * data is allocated (k22_params_alloc). Strict: missing, unexpected and mis-shaped keys are one
 * K22_ERR_KEY error listing each kind; dtypes other than F32/F16/BF16 are an error naming the
 * tensor. */
k22_status k22_weights_load(const char *path, k22_params *ps, k22_err *err);
/* Reads dir/config.json, builds the table, allocates host data and loads the weights.
 * On success the caller owns ps (k22_params_free); on failure ps is left empty. */
k22_status k22_component_load(const char *dir, k22_model_config *cfg, k22_params *ps,
                              k22_err *err);
/* Writes dir/config.json and the weights (F32; one file, or shards of at most max_shard_bytes
 * with an index.json) into dir, which is created if missing. Deterministic: the same
 * parameters give the same bytes. */
k22_status k22_component_save(const char *dir, const k22_model_config *cfg, const k22_params *ps,
                              size_t max_shard_bytes, k22_err *err);
/* The same with the weights stored as dtype: F32, or F16 / BF16 (rounded to nearest even, as
 * torch's .to(dtype); F16 overflows to inf past 65504, so the caller checks the range first when
 * that matters). The in-memory parameters are not changed. */
k22_status k22_component_save_dtype(const char *dir, const k22_model_config *cfg, const k22_params *ps,
                                    k22_dtype dtype, size_t max_shard_bytes, k22_err *err);

/* Deterministic random init of a built, allocated table (src/model/init_weights.c): element k
 * of parameter p is draw k of stream (kind << 32 | p) under seed. Biases 0, norm weights 1,
 * embeddings N(0, 0.02), linear/conv weights U(+-1/sqrt(fan_in)), prior clip_mean 0 and
 * clip_std 1, MoVQ codebook U(+-1/num_vq_embeddings). */
void k22_params_init_random(const k22_model_config *cfg, k22_params *ps, uint64_t seed);

/* ---- pipelines (io/pipeline.c) ---- */
typedef enum { K22_PIPE_PRIOR = 0, K22_PIPE_DECODER } k22_pipe_kind;

#define K22_PIPE_MAX_COMPONENTS 16
typedef struct {
    char name[64];     /* subfolder, e.g. "prior" */
    char library[64];  /* "diffusers" or "transformers"; empty for a null entry */
    char cls[64];      /* e.g. "PriorTransformer" */
} k22_pipe_component;

typedef struct {
    char class_name[64]; /* "KandinskyV22PriorPipeline" */
    char version[32];    /* "_diffusers_version" */
    int n;
    k22_pipe_component comp[K22_PIPE_MAX_COMPONENTS]; /* sorted by name */
} k22_model_index;

/* model_index.json of a pipeline whose scheduler has class sched_class
 * (k22_sched_class_name in config.h). */
void k22_model_index_for(k22_pipe_kind kind, const char *sched_class, k22_model_index *mi);
k22_status k22_model_index_read(const char *path, k22_model_index *mi, k22_err *err);
/* Same over a buffer of len bytes (need not be NUL-terminated; fuzz targets); path names it in
 * messages. */
k22_status k22_model_index_parse(const char *json, size_t len, const char *path,
                                 k22_model_index *mi, k22_err *err);
/* Writes the file as diffusers' save_pretrained does (sorted keys, 2-space indent). */
k22_status k22_model_index_write(const char *path, const k22_model_index *mi, k22_err *err);
const k22_pipe_component *k22_model_index_find(const k22_model_index *mi, const char *name);

/* tokenizer/: vocab.json and merges.txt (the embedded CLIP BPE files), tokenizer_config.json
 * and special_tokens_map.json (model_max_length 77, pad "<|endoftext|>"). */
k22_status k22_tokenizer_write(const char *dir, k22_err *err);
/* image_processor/preprocessor_config.json: CLIP 224, bicubic, OpenAI CLIP mean/std. */
k22_status k22_image_processor_write(const char *dir, k22_err *err);

#endif
