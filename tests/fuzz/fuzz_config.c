/* fuzz_config.c: libFuzzer entry for the config.json and scheduler_config.json readers. Any
 * input must give OK or an error, never a crash or leak; an input that parses must survive
 * write -> parse unchanged, writing twice must give the same bytes, and a parsed model config
 * must give a parameter table (or a size error). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "k22/config.h"

static void check_model(const char *data, size_t size)
{
    k22_model_config a, b;
    k22_err err;
    if (k22_config_parse(data, size, "fuzz/config.json", &a, &err) != K22_OK) return;
    char *t1 = k22_config_dumps(&a);
    if (!t1) abort();
    if (k22_config_parse(t1, strlen(t1), "fuzz/again.json", &b, &err) != K22_OK) abort();
    if (memcmp(&a, &b, sizeof a) != 0) abort();
    char *t2 = k22_config_dumps(&b);
    if (!t2 || strcmp(t1, t2) != 0) abort();
    free(t1);
    free(t2);
    k22_params ps;
    k22_status st = k22_params_build(&a, &ps, &err);
    if (st != K22_OK && st != K22_ERR_NOMEM) abort();
    k22_params_free(&ps);
}

static void check_sched(const char *data, size_t size)
{
    k22_sched_config a, b;
    k22_err err;
    if (k22_sched_config_parse(data, size, "fuzz/scheduler_config.json", &a, &err) != K22_OK) return;
    char *t1 = k22_sched_config_dumps(&a);
    if (!t1) abort();
    if (k22_sched_config_parse(t1, strlen(t1), "fuzz/again.json", &b, &err) != K22_OK) abort();
    if (memcmp(&a, &b, sizeof a) != 0) abort();
    char *t2 = k22_sched_config_dumps(&b);
    if (!t2 || strcmp(t1, t2) != 0) abort();
    free(t1);
    free(t2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_model((const char *)data, size);
    check_sched((const char *)data, size);
    return 0;
}
