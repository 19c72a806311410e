/* cmd_pack.c: `k22 pack`: captioned images -> the HDF5 training pack (packer.h), on one
 * process or over MPI ranks (mpirun -n N k22 pack ...). */
#include "k22/cli.h"
#include "k22/ops.h"
#include "k22/opts.h"
#include "k22/packer.h"

#include <mpi.h>
#include <stdio.h>
#include <string.h>

static void print_summary(const k22_packer_opts *po, const k22_packer_stats *s, int world)
{
    double busy = s->decode + s->preprocess + s->encode + s->write;
    int64_t done = s->inputs - s->skipped_by_resume;
    fprintf(stderr,
            "k22 pack: %s: %lld rows, %lld rejected, %lld inputs (%lld done before --resume) in %.2f s on %d "
            "rank(s): %.2f images/s\n"
            "k22 pack: time (max over ranks) decode %.2f s, preprocess %.2f s, encode %.2f s; write (rank 0) "
            "%.2f s; other %.2f s\n",
            po->out, (long long)s->rows, (long long)s->rejects, (long long)s->inputs,
            (long long)s->skipped_by_resume, s->total, world, s->total > 0 ? (double)done / s->total : 0.0,
            s->decode, s->preprocess, s->encode, s->write, s->total > busy ? s->total - busy : 0.0);
}

int k22_cmd_pack(int argc, char **argv)
{
    const char *dir = NULL, *wds = NULL, *prior = NULL, *decoder = NULL, *out = NULL, *use = NULL;
    const char *dtype = NULL, *device = NULL, *capcol = NULL, *imgcol = NULL, *mp = NULL;
    int64_t res = 0, batch = 0, chunk_kib = 0;
    int resume = 0, strict = 0, quiet = 0;
    const k22_opt opts[] = {
        {"train_data_dir", K22_OPT_STR, &dir, NULL, "image folder with metadata.jsonl/.csv or sidecar .txt captions", NULL, NULL, 0},
        {"webdataset", K22_OPT_STR, &wds, NULL, "comma-separated WebDataset tar shards (instead of --train_data_dir)", NULL, NULL, 0},
        {"prior", K22_OPT_STR, &prior, NULL, "prior pipeline folder (tokenizer, text_encoder, image_encoder)", NULL, NULL, 1},
        {"decoder", K22_OPT_STR, &decoder, NULL, "decoder pipeline folder (movq); needed for --for decoder|both", NULL, NULL, 0},
        {"resolution", K22_OPT_INT, &res, "512", "decoder image size (multiple of 8 and of the MoVQ factor f); latents are resolution/f", NULL, NULL, 0},
        {"out", K22_OPT_STR, &out, NULL, "the pack (written as OUT.partial, renamed when complete)", NULL, NULL, 1},
        {"for", K22_OPT_CHOICE, &use, "both", "which stage's datasets to write", NULL, "prior|decoder|both", 0},
        {"pack_dtype", K22_OPT_CHOICE, &dtype, "fp32", "stored float type", NULL, "fp32|fp16", 0},
        {"batch", K22_OPT_INT, &batch, "16", "images per encoder batch per rank (a chunk is batch x ranks)", NULL, NULL, 0},
        {"resume", K22_OPT_FLAG, &resume, NULL, "continue OUT.partial (or OUT) after its committed inputs", NULL, NULL, 0},
        {"strict", K22_OPT_FLAG, &strict, NULL, "any rejected input is an error (nothing is left written)", NULL, NULL, 0},
        {"caption_column", K22_OPT_STR, &capcol, "text", "metadata column holding the caption", NULL, NULL, 0},
        {"image_column", K22_OPT_STR, &imgcol, "file_name", "metadata column holding the image file name", NULL, NULL, 0},
        {"device", K22_OPT_STR, &device, "cpu", "backend for the encoders: " K22_DEVICE_HELP, "K22_DEVICE", NULL, 0},
        {"mixed_precision", K22_OPT_CHOICE, &mp, "no",
         "bf16/fp16 operands for the encoders' matmuls, convolutions and attention, fp32 accumulation (as the "
         "scripts' encoders under --mixed_precision; recorded in the pack; emulated on cpu, not on cpu-ref)",
         NULL, "no|fp16|bf16", 0},
        {"chunk_kib", K22_OPT_INT, &chunk_kib, "0", "HDF5 chunk size target in KiB (0: 2 MiB)", NULL, NULL, 0},
        {"quiet", K22_OPT_FLAG, &quiet, NULL, "no settings table or progress lines", NULL, NULL, 0},
    };
    k22_cmd_spec spec = {
        .usage = "k22 pack --train_data_dir DIR | --webdataset A.tar,B.tar --prior DIR --decoder DIR --out data.h5 [options]",
        .summary = "Decodes every captioned image once, runs the frozen encoders (CLIP text and vision of the prior "
                   "pipeline, MoVQ of the decoder pipeline) and writes the HDF5 pack training reads. Broken inputs "
                   "are skipped and listed; rows are committed per chunk so --resume continues after a kill. Runs "
                   "over MPI ranks (rank 0 writes; the file equals a one-rank run's).",
        .opts = opts,
        .nopts = (int)(sizeof opts / sizeof opts[0]),
    };
    int rc = k22_opts_parse_cli(&spec, argc, argv, "pack");
    if (rc >= 0) return rc;
    k22_err derr;
    if (k22_backend_name_check(device, &derr)) {
        fprintf(stderr, "k22 pack: --device: %s\n", derr.msg);
        return 2;
    }
    k22_precision prec = K22_PREC_FP32;
    k22_precision_parse(mp, &prec, &derr); /* a choice the parser checked */
    int inited = 0, rank = 0, world = 1;
    MPI_Initialized(&inited);
    if (!inited) MPI_Init(NULL, NULL);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    k22_set_rank(rank);
    k22_packer_opts po = {
        .train_data_dir = dir, .webdataset = wds, .prior_dir = prior, .decoder_dir = decoder, .out = out,
        .resolution = (int)res, .dtype = !strcmp(dtype, "fp16") ? K22_DTYPE_F16 : K22_DTYPE_F32,
        .batch = batch > 0 && batch <= 4096 ? (int)batch : 0, .resume = resume, .strict = strict,
        .caption_column = capcol, .image_column = imgcol, .device = device, .precision = prec,
        .progress = !quiet, .chunk_bytes = chunk_kib > 0 && chunk_kib < (1 << 20) ? (size_t)chunk_kib << 10 : 0,
    };
    if (res < 8 || res > 4096) po.resolution = 0;
    k22_pack_for_parse(use, &po.use);
    if (rank == 0 && !quiet) k22_opts_print(&spec, stderr);
    k22_packer_stats stats;
    k22_err err;
    k22_status st = k22_packer_run(&po, &stats, &err);
    if (st) {
        fprintf(stderr, "k22 pack [rank %d]: %s\n", rank, err.msg);
        rc = st == K22_ERR_ARG ? 2 : 1;
    } else {
        if (rank == 0) print_summary(&po, &stats, world);
        rc = 0;
    }
    if (!inited) MPI_Finalize();
    return rc;
}
