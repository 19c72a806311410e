/* main.c: the k22 dispatcher. Every subcommand lives in src/cli/cmd_<name>.c. */
#include "k22/cli.h"
#include "k22/k22.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const k22_cmd k22_cmds[] = {
    {"version", k22_cmd_version, "print the k22 version and build features"},
    {"init", k22_cmd_init, "write a tiny or full-size random prior or decoder pipeline folder"},
    {"inspect", k22_cmd_inspect, "describe and strictly check a pipeline, component or weights file"},
    {"tokenize", k22_cmd_tokenize, "CLIP-tokenize captions from stdin into JSON lines (77 ids + mask)"},
    {"synth", k22_cmd_synth, "write a deterministic captioned image folder (a local Naruto-captions stand-in)"},
    {"pack", k22_cmd_pack, "encode captioned images once into the HDF5 training pack (MPI ranks, --resume)"},
    {"train-prior", k22_cmd_train_prior, "train the prior on a pack (MPI ranks; exit 99 = checkpointed after a signal, requeue)"},
    {"train-decoder", k22_cmd_train_decoder, "train the decoder UNet on a pack (MPI ranks; exit 99 = checkpointed after a signal, requeue)"},
    {"sample", k22_cmd_sample, "text to image with a prior and a decoder pipeline folder, one PNG grid"},
};
static const int k22_ncmds = (int)(sizeof k22_cmds / sizeof k22_cmds[0]);

static void usage(FILE *out)
{
    fprintf(out, "k22 %s: a distributed trainer for Kandinsky 2.2 (prior and decoder)\n\n"
                 "usage: k22 <command> [options]    (k22 <command> --help for its options)\n\n"
                 "commands:\n", K22_VERSION);
    for (int i = 0; i < k22_ncmds; i++)
        fprintf(out, "  %-14s %s\n", k22_cmds[i].name, k22_cmds[i].summary);
}

/* libgomp reads OMP_WAIT_POLICY once, when it loads, so it cannot be set from here for this
 * process. Its default keeps an OpenMP team spinning after each parallel loop, which takes the
 * cores OpenBLAS's own threads need for the GEMMs in between: on 2 cores the tiny prior's step
 * took 235 ms instead of 12, the tiny UNet's 1030 ms instead of 400 (bench_prior_step,
 * bench_decoder_step). So k22 runs itself again once with PASSIVE, unless the user chose a
 * policy; if the exec fails it goes on, slower but correct. Before MPI_Init: the pid and the
 * launcher's environment stay. */
static void passive_openmp(char **argv)
{
    if (getenv("OMP_WAIT_POLICY")) return;
    if (setenv("OMP_WAIT_POLICY", "PASSIVE", 1)) return;
    execv("/proc/self/exe", argv);
}

int main(int argc, char **argv)
{
    passive_openmp(argv);
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version")) return k22_cmd_version(argc - 1, argv + 1);
    for (int i = 0; i < k22_ncmds; i++)
        if (!strcmp(argv[1], k22_cmds[i].name)) return k22_cmds[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "k22: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
