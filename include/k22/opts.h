/* opts.h: one option table per subcommand; the parser and --help are generated from it, so
 * --help cannot drift from what is parsed. */
#ifndef K22_OPTS_H
#define K22_OPTS_H

#include "k22/k22.h"

#include <stdio.h>

typedef enum { K22_OPT_STR, K22_OPT_INT, K22_OPT_FLOAT, K22_OPT_FLAG, K22_OPT_CHOICE, K22_OPT_LIST } k22_opt_type;

/* K22_OPT_LIST: one or more values, as argparse's nargs="+": "--x a b c" takes the arguments up
 * to the next one that starts with "--"; "--x=a" takes one; repeating the option adds more. */
#define K22_OPT_LIST_MAX 64
typedef struct {
    const char *v[K22_OPT_LIST_MAX]; /* pointers into argv or the default */
    int n;
} k22_strlist;

typedef struct {
    const char *name;    /* long name without "--", e.g. "out" */
    k22_opt_type type;
    void *dst;           /* const char **, int64_t *, double *, int * (flag: 0/1), const char **,
                            k22_strlist * (list) */
    const char *def;     /* default as text, NULL = none (required when .required) */
    const char *help;
    const char *env;     /* environment variable consulted before the default, or NULL */
    const char *choices; /* K22_OPT_CHOICE: "a|b|c" */
    int required;
} k22_opt;

typedef struct {
    const char *usage;   /* "k22 init prior|decoder [options]" */
    const char *summary; /* one paragraph */
    const k22_opt *opts;
    int nopts;
    /* Positional arguments land here (pointers into argv); at most max_pos. */
    const char **pos;
    int max_pos;
    int min_pos;
    int npos;
} k22_cmd_spec;

/* Parses argv[1..argc) against spec. Fills defaults (env first), then the command line.
 * Returns K22_OK, or K22_ERR_ARG with err naming the bad option. When --help or -h is given,
 * prints help to stdout and sets *help_shown = 1 (returns K22_OK). */
k22_status k22_opts_parse(k22_cmd_spec *spec, int argc, char **argv, int *help_shown,
                          k22_err *err);
void k22_opts_help(const k22_cmd_spec *spec, FILE *out);
/* What every subcommand does first: parses, prints "k22 CMD: <error>" on a bad argument.
 * Returns -1 to go on, else the exit code to return at once (0 after --help, 2 on error). */
int k22_opts_parse_cli(k22_cmd_spec *spec, int argc, char **argv, const char *cmd);
/* Prints the resolved settings as a two-column table (rank 0 prints it at start). */
void k22_opts_print(const k22_cmd_spec *spec, FILE *out);

#endif
