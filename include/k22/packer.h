/* packer.h: `k22 pack` as a library call: reads captioned images (captions.h), decodes and
 * preprocesses them (image.h, preprocess.h), runs the frozen encoders (CLIP text, CLIP vision,
 * MoVQ) in batches and appends the rows to an HDF5 pack (pack.h), committed once per chunk.
 *
 * Over MPI ranks a chunk is batch * world inputs: rank r encodes inputs [r*batch, (r+1)*batch)
 * of it and rank 0 gathers and writes them in input order, so the file's datasets do not depend
 * on the number of ranks. Input order is: the caption readers' rejects first (written with the
 * first chunk), then the records. The file is written as OUT.partial and renamed to OUT when
 * complete; --resume continues OUT.partial (or reopens a finished OUT) after the committed
 * inputs. Only the first caption of a caption list is packed (the prior script draws one at
 * random per step: a pack fixes it; noted in the provenance). */
#ifndef K22_PACKER_H
#define K22_PACKER_H

#include "k22/ops.h"
#include "k22/pack.h"

typedef struct {
    const char *train_data_dir; /* image folder (metadata.jsonl/csv or sidecar .txt), or NULL */
    const char *webdataset;     /* comma-separated tar shards, or NULL */
    const char *prior_dir;      /* prior pipeline: tokenizer, text_encoder, image_encoder */
    const char *decoder_dir;    /* decoder pipeline: movq (needed for decoder and both) */
    const char *out;
    int resolution;
    k22_pack_for use;
    k22_dtype dtype;            /* K22_DTYPE_F32 or K22_DTYPE_F16 */
    int batch;                  /* inputs per rank per chunk */
    int resume, strict;
    const char *caption_column, *image_column;
    const char *device;         /* backend name (k22_backend_by_name); NULL: "cpu" */
    k22_precision precision;    /* the encoders' GEMM precision (ops.h); recorded in the
                                 * preprocessing attribute, so a resume must use the same */
    int progress;               /* 1: rank 0 prints images/s and ETA to stderr */
    size_t chunk_bytes;         /* HDF5 chunk target (0: pack.h default) */
} k22_packer_opts;

/* Seconds per phase (largest over ranks for decode/preprocess/encode; rank 0 for write). */
typedef struct {
    double decode, preprocess, encode, write, total;
    int64_t rows, rejects, inputs, skipped_by_resume;
} k22_packer_stats;

/* Runs the whole pack on every rank of MPI_COMM_WORLD (MPI must be initialized). Returns K22_OK
 * on every rank, or an error (err set on the rank that found it; other ranks get a short
 * message). With strict, any reject is K22_ERR_FORMAT and no OUT nor OUT.partial is left. */
k22_status k22_packer_run(const k22_packer_opts *o, k22_packer_stats *stats, k22_err *err);

#endif
