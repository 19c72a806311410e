/* test_model_index.c: model_index.json: component names are plain identifiers (no way out of
 * the pipeline folder), any string survives write -> read (escaping), and a file without a
 * class is refused with a message naming it. */
#include "harness/harness.h"
#include "k22/diffusers.h"

#include <string.h>
#include <unistd.h>

static k22_status parse(const char *text, k22_model_index *mi, k22_err *err)
{
    return k22_model_index_parse(text, strlen(text), "t/model_index.json", mi, err);
}

int main(void)
{
    k22_model_index a, b;
    k22_err err;
    CHECK(parse("{\"_class_name\":\"P\",\"../up\":[\"diffusers\",\"UNet2DConditionModel\"]}", &a, &err) == K22_ERR_FORMAT);
    CHECK(strstr(err.msg, "t/model_index.json") && strstr(err.msg, "'../up'"));
    CHECK(parse("{\"_class_name\":\"P\",\"a/b\":[null,null]}", &a, &err) == K22_ERR_FORMAT);
    CHECK(parse("{\"prior\":[\"diffusers\",\"PriorTransformer\"]}", &a, &err) == K22_ERR_FORMAT);
    CHECK(strstr(err.msg, "_class_name") != NULL);

    CHECK(parse("{\"_class_name\":\"A\\rB\\u0001\",\"prior\":[\"diffusers\",\"X\\r\\\"y\"],"
                "\"safety\":[null,null]}", &a, &err) == K22_OK);
    char path[64];
    snprintf(path, sizeof path, "/tmp/k22-test-mi-%d.json", (int)getpid());
    CHECK(k22_model_index_write(path, &a, &err) == K22_OK);
    CHECK(k22_model_index_read(path, &b, &err) == K22_OK);
    unlink(path);
    CHECK(!strcmp(b.class_name, "A\rB\001") && b.n == 2);
    const k22_pipe_component *c = k22_model_index_find(&b, "prior");
    CHECK(c && !strcmp(c->cls, "X\r\"y") && !strcmp(c->library, "diffusers"));
    c = k22_model_index_find(&b, "safety");
    CHECK(c && c->library[0] == '\0');
    return k22_test_finish("test_model_index");
}
