/* test_opts.c: the table-driven option parser (opts.h): defaults, environment, each type, the
 * nargs="+" list, and the errors that name the option. */
#include "harness/harness.h"
#include "k22/opts.h"

#include <stdlib.h>
#include <string.h>

static const char *s_out, *s_dev;
static int64_t s_n;
static double s_x;
static int s_flag;
static k22_strlist s_list;

static const k22_opt OPTS[] = {
    {"out", K22_OPT_STR, &s_out, NULL, "output", NULL, NULL, 1},
    {"n", K22_OPT_INT, &s_n, "3", "count", NULL, NULL, 0},
    {"x", K22_OPT_FLOAT, &s_x, "0.5", "value", NULL, NULL, 0},
    {"flag", K22_OPT_FLAG, &s_flag, NULL, "switch", NULL, NULL, 0},
    {"device", K22_OPT_CHOICE, &s_dev, "cpu", "backend", "K22_TEST_OPTS_DEVICE", "cpu|cuda", 0},
    {"prompts", K22_OPT_LIST, &s_list, NULL, "prompts", NULL, NULL, 0},
};

static k22_status parse(int argc, const char **argv, k22_err *err)
{
    k22_cmd_spec spec = {.usage = "t [options]", .summary = "test", .opts = OPTS,
                         .nopts = (int)(sizeof OPTS / sizeof OPTS[0])};
    int help = 0;
    return k22_opts_parse(&spec, argc, (char **)argv, &help, err);
}

int main(void)
{
    k22_err err;
    unsetenv("K22_TEST_OPTS_DEVICE");
    const char *a1[] = {"t", "--out", "o", "--prompts", "a fox", "two words", "--n=7", "--flag"};
    CHECK_MSG(parse(8, a1, &err) == K22_OK, "%s", err.msg);
    CHECK(!strcmp(s_out, "o") && s_n == 7 && s_x == 0.5 && s_flag == 1 && !strcmp(s_dev, "cpu"));
    CHECK(s_list.n == 2 && !strcmp(s_list.v[0], "a fox") && !strcmp(s_list.v[1], "two words"));

    /* "=" takes one value; a repeat adds; the list ends at the next option; defaults reset. */
    const char *a2[] = {"t", "--prompts=x", "--out", "o", "--prompts", "y", "z"};
    CHECK_MSG(parse(7, a2, &err) == K22_OK, "%s", err.msg);
    CHECK(s_list.n == 3 && !strcmp(s_list.v[0], "x") && !strcmp(s_list.v[2], "z") && s_n == 3 && s_flag == 0);

    setenv("K22_TEST_OPTS_DEVICE", "cuda", 1);
    const char *a3[] = {"t", "--out", "o"};
    CHECK(parse(3, a3, &err) == K22_OK && !strcmp(s_dev, "cuda") && s_list.n == 0);
    setenv("K22_TEST_OPTS_DEVICE", "tpu", 1);
    CHECK(parse(3, a3, &err) == K22_ERR_ARG && strstr(err.msg, "--device") && strstr(err.msg, "K22_TEST_OPTS_DEVICE"));
    unsetenv("K22_TEST_OPTS_DEVICE");

    const char *bad[][4] = {{"t", "--out", "o", "--n=1x"}, {"t", "--out", "o", "--x=inf"},
                            {"t", "--out", "o", "--nope"}, {"t", "--out", "o", "--prompts"},
                            {"t", "--out", "o", "--flag=maybe"}};
    const char *names[] = {"--n", "--x", "--nope", "--prompts", "--flag"};
    for (int i = 0; i < 5; i++) {
        CHECK_MSG(parse(4, bad[i], &err) == K22_ERR_ARG && strstr(err.msg, names[i]), "case %d: %s", i, err.msg);
    }
    const char *missing[] = {"t", "--n", "2"};
    CHECK(parse(3, missing, &err) == K22_ERR_ARG && strstr(err.msg, "--out is required"));

    const char *many[K22_OPT_LIST_MAX + 4] = {"t", "--out", "o", "--prompts"};
    for (int i = 4; i < K22_OPT_LIST_MAX + 4; i++) many[i] = "p";
    CHECK(parse(K22_OPT_LIST_MAX + 4, many, &err) == K22_OK && s_list.n == K22_OPT_LIST_MAX);
    const char *toomany[K22_OPT_LIST_MAX + 5];
    memcpy(toomany, many, sizeof many);
    toomany[K22_OPT_LIST_MAX + 4] = "q";
    CHECK(parse(K22_OPT_LIST_MAX + 5, toomany, &err) == K22_ERR_ARG && strstr(err.msg, "more than"));
    return k22_test_finish("test_opts");
}
