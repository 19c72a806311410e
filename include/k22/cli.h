/* cli.h: the subcommands; each takes the arguments after its name and returns the exit code. */
#ifndef K22_CLI_H
#define K22_CLI_H

typedef int (*k22_cmd_fn)(int argc, char **argv);

typedef struct {
    const char *name;
    k22_cmd_fn fn;
    const char *summary;
} k22_cmd;

int k22_cmd_version(int argc, char **argv);
int k22_cmd_init(int argc, char **argv);
int k22_cmd_inspect(int argc, char **argv);
int k22_cmd_tokenize(int argc, char **argv);
int k22_cmd_synth(int argc, char **argv);
int k22_cmd_pack(int argc, char **argv);
int k22_cmd_train_prior(int argc, char **argv);
int k22_cmd_train_decoder(int argc, char **argv);
int k22_cmd_sample(int argc, char **argv);

#endif
