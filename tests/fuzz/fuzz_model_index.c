/* fuzz_model_index.c: libFuzzer entry for the model_index.json reader. Any input gives OK or an
 * error naming the file, never a crash; an index that parses must survive write -> read
 * unchanged. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "k22/diffusers.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    k22_model_index a, b;
    k22_err err;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    if (k22_model_index_parse((const char *)data, size, "fuzz/model_index.json", &a, &err) != K22_OK) {
        if (!strstr(err.msg, "fuzz/model_index.json")) abort(); /* errors name the file */
        return 0;
    }
    char path[64];
    snprintf(path, sizeof path, "/tmp/k22-fuzz-mi-%d.json", (int)getpid());
    if (k22_model_index_write(path, &a, &err) != K22_OK) abort();
    if (k22_model_index_read(path, &b, &err) != K22_OK) abort();
    unlink(path);
    if (strcmp(a.class_name, b.class_name) || a.n != b.n) abort();
    for (int i = 0; i < a.n; i++)
        if (strcmp(a.comp[i].name, b.comp[i].name) || strcmp(a.comp[i].library, b.comp[i].library) ||
            strcmp(a.comp[i].cls, b.comp[i].cls))
            abort();
    return 0;
}
