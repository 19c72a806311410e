/* cmd_synth.c: `k22 synth`: writes the deterministic captioned image folder of synth.h. */
#include "k22/cli.h"
#include "k22/opts.h"
#include "k22/synth.h"

#include <stdio.h>
#include <time.h>

int k22_cmd_synth(int argc, char **argv)
{
    const char *out = NULL;
    int64_t n = 0, seed = 0, min_size = 0, max_size = 0;
    int force = 0;
    const k22_opt opts[] = {
        {"out", K22_OPT_STR, &out, NULL, "output image folder (written as OUT.tmp, then renamed)", NULL, NULL, 1},
        {"n", K22_OPT_INT, &n, "256", "number of images", NULL, NULL, 0},
        {"seed", K22_OPT_INT, &seed, "0", "random seed; the same seed gives identical bytes", NULL, NULL, 0},
        {"min_size", K22_OPT_INT, &min_size, "256", "smallest image side in pixels", NULL, NULL, 0},
        {"max_size", K22_OPT_INT, &max_size, "1024", "largest image side in pixels", NULL, NULL, 0},
        {"force", K22_OPT_FLAG, &force, NULL, "replace an existing non-empty OUT", NULL, NULL, 0},
    };
    k22_cmd_spec spec = {
        .usage = "k22 synth --out DIR [options]",
        .summary = "Writes a local stand-in for the Naruto BLIP-captions set: drawn figures of "
                   "varied size and aspect as DIR/NNNNNN.jpg or .png, with DIR/metadata.jsonl "
                   "({\"file_name\", \"text\"} per line), the image-folder layout the diffusers "
                   "scripts read with --train_data_dir.",
        .opts = opts,
        .nopts = (int)(sizeof opts / sizeof opts[0]),
    };
    int rc = k22_opts_parse_cli(&spec, argc, argv, "synth");
    if (rc >= 0) return rc;
    if (min_size < K22_SYNTH_MIN_SIZE || max_size > K22_SYNTH_MAX_SIZE || min_size > max_size) {
        fprintf(stderr, "k22 synth: need %d <= --min_size (%lld) <= --max_size (%lld) <= %d\n",
                K22_SYNTH_MIN_SIZE, (long long)min_size, (long long)max_size, K22_SYNTH_MAX_SIZE);
        return 2;
    }
    if (n < 1 || n > 10000000) {
        fprintf(stderr, "k22 synth: --n %lld outside 1..10000000\n", (long long)n);
        return 2;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    k22_err err;
    k22_status st = k22_synth_write_dir(out, n, (uint64_t)seed, (int)min_size, (int)max_size,
                                        force, &err);
    if (st) {
        fprintf(stderr, "k22 synth: %s\n", err.msg);
        return st == K22_ERR_ARG ? 2 : 1;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    fprintf(stderr, "k22 synth: wrote %lld images and metadata.jsonl to %s in %.2f s\n",
            (long long)n, out, s);
    return 0;
}
