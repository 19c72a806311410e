/* opts.c: the table-driven option parser shared by every subcommand. */
#include "k22/opts.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static int choice_ok(const char *choices, const char *v)
{
    size_t n = strlen(v);
    const char *p = choices;
    while (p && *p) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && strncmp(p, v, n) == 0) return 1;
        p = bar ? bar + 1 : NULL;
    }
    return 0;
}

static k22_status set_value(const k22_opt *o, const char *v, const char *from, k22_err *err)
{
    char *end = NULL;
    switch (o->type) {
    case K22_OPT_STR:
        *(const char **)o->dst = v;
        return K22_OK;
    case K22_OPT_CHOICE:
        if (!choice_ok(o->choices, v))
            return k22_err_set(err, K22_ERR_ARG, "--%s: '%s' (from %s) is not one of %s", o->name,
                               v, from, o->choices);
        *(const char **)o->dst = v;
        return K22_OK;
    case K22_OPT_INT: {
        errno = 0;
        long long x = strtoll(v, &end, 10);
        if (errno || end == v || *end)
            return k22_err_set(err, K22_ERR_ARG, "--%s: '%s' (from %s) is not an integer",
                               o->name, v, from);
        *(int64_t *)o->dst = x;
        return K22_OK;
    }
    case K22_OPT_FLOAT: {
        errno = 0;
        double x = strtod(v, &end);
        if (errno || end == v || *end || !isfinite(x))
            return k22_err_set(err, K22_ERR_ARG, "--%s: '%s' (from %s) is not a finite number",
                               o->name, v, from);
        *(double *)o->dst = x;
        return K22_OK;
    }
    case K22_OPT_LIST: {
        k22_strlist *l = o->dst;
        if (l->n >= K22_OPT_LIST_MAX)
            return k22_err_set(err, K22_ERR_ARG, "--%s: more than %d values", o->name, K22_OPT_LIST_MAX);
        l->v[l->n++] = v;
        return K22_OK;
    }
    case K22_OPT_FLAG:
        if (!strcmp(v, "1") || !strcmp(v, "true") || !strcmp(v, "yes")) *(int *)o->dst = 1;
        else if (!strcmp(v, "0") || !strcmp(v, "false") || !strcmp(v, "no")) *(int *)o->dst = 0;
        else
            return k22_err_set(err, K22_ERR_ARG, "--%s: '%s' (from %s) is not true or false",
                               o->name, v, from);
        return K22_OK;
    }
    return k22_err_set(err, K22_ERR_INTERNAL, "--%s: unknown option type", o->name);
}

k22_status k22_opts_parse(k22_cmd_spec *spec, int argc, char **argv, int *help_shown,
                          k22_err *err)
{
    *help_shown = 0;
    int seen[256] = {0};
    if (spec->nopts > 256) return k22_err_set(err, K22_ERR_INTERNAL, "too many options");
    for (int i = 0; i < spec->nopts; i++) {
        const k22_opt *o = &spec->opts[i];
        const char *env = o->env ? getenv(o->env) : NULL;
        k22_status st = K22_OK;
        if (o->type == K22_OPT_FLAG) *(int *)o->dst = 0;
        if (o->type == K22_OPT_LIST) ((k22_strlist *)o->dst)->n = 0;
        if (env && *env) st = set_value(o, env, o->env, err);
        else if (o->def) st = set_value(o, o->def, "default", err);
        else if (o->type == K22_OPT_STR || o->type == K22_OPT_CHOICE) *(const char **)o->dst = NULL;
        if (st) return st;
        if (env && *env) seen[i] = 1;
    }
    spec->npos = 0;
    for (int a = 1; a < argc; a++) {
        const char *arg = argv[a];
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
            k22_opts_help(spec, stdout);
            *help_shown = 1;
            return K22_OK;
        }
        if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0') {
            if (spec->npos >= spec->max_pos)
                return k22_err_set(err, K22_ERR_ARG, "unexpected argument '%s' (see --help)", arg);
            spec->pos[spec->npos++] = arg;
            continue;
        }
        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        const k22_opt *o = NULL;
        int idx = -1;
        for (int i = 0; i < spec->nopts; i++)
            if (strlen(spec->opts[i].name) == nlen && !strncmp(spec->opts[i].name, name, nlen)) {
                o = &spec->opts[i];
                idx = i;
            }
        if (!o) return k22_err_set(err, K22_ERR_ARG, "unknown option '%.*s' (see --help)", (int)nlen + 2, arg);
        const char *v;
        if (eq) v = eq + 1;
        else if (o->type == K22_OPT_FLAG) v = "1";
        else if (a + 1 < argc) v = argv[++a];
        else return k22_err_set(err, K22_ERR_ARG, "--%s needs a value", o->name);
        k22_status st = set_value(o, v, "command line", err);
        /* nargs="+": the following arguments up to the next option belong to the list too. */
        while (!st && !eq && o->type == K22_OPT_LIST && a + 1 < argc && strncmp(argv[a + 1], "--", 2))
            st = set_value(o, argv[++a], "command line", err);
        if (st) return st;
        seen[idx] = 1;
    }
    for (int i = 0; i < spec->nopts; i++)
        if (spec->opts[i].required && !seen[i] && !spec->opts[i].def)
            return k22_err_set(err, K22_ERR_ARG, "--%s is required (see --help)", spec->opts[i].name);
    if (spec->npos < spec->min_pos)
        return k22_err_set(err, K22_ERR_ARG, "missing argument: usage: %s", spec->usage);
    return K22_OK;
}

int k22_opts_parse_cli(k22_cmd_spec *spec, int argc, char **argv, const char *cmd)
{
    k22_err err;
    k22_err_clear(&err);
    int help = 0;
    if (k22_opts_parse(spec, argc, argv, &help, &err)) {
        fprintf(stderr, "k22 %s: %s\n", cmd, err.msg);
        return 2;
    }
    return help ? 0 : -1;
}

static const char *type_hint(const k22_opt *o)
{
    switch (o->type) {
    case K22_OPT_STR: return "STR";
    case K22_OPT_INT: return "N";
    case K22_OPT_FLOAT: return "X";
    case K22_OPT_FLAG: return "";
    case K22_OPT_CHOICE: return o->choices;
    case K22_OPT_LIST: return "STR...";
    }
    return "";
}

void k22_opts_help(const k22_cmd_spec *spec, FILE *out)
{
    fprintf(out, "usage: %s\n\n%s\n\noptions:\n", spec->usage, spec->summary);
    for (int i = 0; i < spec->nopts; i++) {
        const k22_opt *o = &spec->opts[i];
        char left[128];
        snprintf(left, sizeof left, "--%s %s", o->name, type_hint(o));
        fprintf(out, "  %-32s %s", left, o->help);
        if (o->required) fprintf(out, " (required)");
        else if (o->def && o->type != K22_OPT_FLAG) fprintf(out, " [default: %s]", o->def);
        if (o->env) fprintf(out, " [env: %s]", o->env);
        fputc('\n', out);
    }
    fprintf(out, "  %-32s %s\n", "--help", "show this help and exit");
}

void k22_opts_print(const k22_cmd_spec *spec, FILE *out)
{
    for (int i = 0; i < spec->nopts; i++) {
        const k22_opt *o = &spec->opts[i];
        fprintf(out, "  %-28s ", o->name);
        switch (o->type) {
        case K22_OPT_STR:
        case K22_OPT_CHOICE: {
            const char *s = *(const char **)o->dst;
            fprintf(out, "%s\n", s ? s : "(none)");
            break;
        }
        case K22_OPT_LIST: {
            const k22_strlist *l = o->dst;
            if (!l->n) fprintf(out, "(none)");
            for (int k = 0; k < l->n; k++) fprintf(out, "%s'%s'", k ? ", " : "", l->v[k]);
            fputc('\n', out);
            break;
        }
        case K22_OPT_INT: fprintf(out, "%lld\n", (long long)*(int64_t *)o->dst); break;
        case K22_OPT_FLOAT: fprintf(out, "%g\n", *(double *)o->dst); break;
        case K22_OPT_FLAG: fprintf(out, "%s\n", *(int *)o->dst ? "true" : "false"); break;
        }
    }
}
