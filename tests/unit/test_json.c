/* test_json.c: the typed JSON layer. The writer must reproduce Python's json.dumps(indent=2,
 * sort_keys=True) byte for byte (expected texts below were printed by CPython 3.11), getters
 * must name file and key path in every error, and the loader must cap sizes and refuse
 * duplicate keys. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness/harness.h"
#include "k22/json.h"

static void test_format_real(void)
{
    /* repr() of each double, from CPython. */
    const double v[] = {0.0, -0.0, 1.0, 10.0, 0.1, 1e-05, 0.0001, 0.00085, 0.012, 0.18215, 1e16,
                        1e15, 123456789012345678.0, 1.5e-10, -2.5, 3.141592653589793, 1e300,
                        5e-324, 0.995, 100.0};
    const char *want[] = {"0.0", "-0.0", "1.0", "10.0", "0.1", "1e-05", "0.0001", "0.00085",
                          "0.012", "0.18215", "1e+16", "1000000000000000.0",
                          "1.2345678901234568e+17", "1.5e-10", "-2.5", "3.141592653589793",
                          "1e+300", "5e-324", "0.995", "100.0"};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        char buf[48];
        k22_json_format_real(v[i], 0, buf, sizeof buf);
        CHECK_MSG(strcmp(buf, want[i]) == 0, "repr(%.17g): got %s want %s", v[i], buf, want[i]);
    }
    /* As float32: the shortest text that reads back as the same float (what a user wrote). */
    const float f[] = {0.1f, 1e-5f, 0.00085f, 0.012f, 0.18215f, 10.0f, 1e-6f};
    const char *fw[] = {"0.1", "1e-05", "0.00085", "0.012", "0.18215", "10.0", "1e-06"};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        char buf[48];
        k22_json_format_real((double)f[i], K22_JSON_F32, buf, sizeof buf);
        CHECK_MSG(strcmp(buf, fw[i]) == 0, "f32 %.9g: got %s want %s", (double)f[i], buf, fw[i]);
    }
    /* Without the flag a float's double value is printed in full, as Python would. */
    char buf[48];
    k22_json_format_real((double)0.1f, 0, buf, sizeof buf);
    CHECK(strcmp(buf, "0.10000000149011612") == 0);
}

static void test_dumps(void)
{
    const char *src = "{\"e\": true, \"d\": null, \"c\": {}, \"b\": [1, 2.5, {\"x\": []}], "
                      "\"a\": \"h\\u00e9\\\"\\\\\\n\\t\\u0001\\ud83d\\ude00\"}";
    const char *want = "{\n  \"a\": \"h\\u00e9\\\"\\\\\\n\\t\\u0001\\ud83d\\ude00\",\n  \"b\": [\n"
                       "    1,\n    2.5,\n    {\n      \"x\": []\n    }\n  ],\n  \"c\": {},\n"
                       "  \"d\": null,\n  \"e\": true\n}\n";
    json_t *v = NULL;
    k22_err err = {0};
    CHECK(k22_json_load_buf(src, strlen(src), "src", &v, &err) == K22_OK);
    char *got = k22_json_dumps(v, 0);
    CHECK_MSG(got && strcmp(got, want) == 0, "got:\n%s\nwant:\n%s", got ? got : "", want);
    free(got);
    got = k22_json_dumps(v, K22_JSON_COMPACT);
    CHECK_MSG(strcmp(got, "{\"a\":\"h\\u00e9\\\"\\\\\\n\\t\\u0001\\ud83d\\ude00\",\"b\":[1,2.5,{\"x\":[]}],\"c\":{},\"d\":null,\"e\":true}") == 0,
              "compact: %s", got);
    free(got);
    char text[64];
    k22_json_value_text(json_object_get(v, "b"), text, sizeof text);
    CHECK(strcmp(text, "[1,2.5,{\"x\":[]}]") == 0);
    k22_json_value_text(json_object_get(v, "b"), text, 8);
    CHECK(strcmp(text, "[1,2...") == 0);
    json_decref(v);

    /* write_file writes exactly the dumps text. */
    char path[] = "/tmp/k22-test-json-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    json_t *o = json_pack("{s:i, s:f}", "b", 3, "a", 0.5);
    CHECK(k22_json_write_file(path, o, 0, &err) == K22_OK);
    FILE *f = fopen(path, "rb");
    char back[64] = {0};
    size_t n = f ? fread(back, 1, sizeof back - 1, f) : 0;
    if (f) fclose(f);
    CHECK_MSG(n == 25 && strcmp(back, "{\n  \"a\": 0.5,\n  \"b\": 3\n}\n") == 0, "file: %s", back);
    json_decref(o);
    unlink(path);
}

static void test_getters(void)
{
    const char *src = "{\"i\": 7, \"big\": 5000000000, \"r\": 0.25, \"b\": false, \"s\": \"abc\", "
                      "\"n\": null, \"ints\": [1, 2, \"3\"], \"ok\": [4, 5], \"strs\": [\"x\", \"yy\"]}";
    json_t *o = NULL;
    k22_err err = {0};
    CHECK(k22_json_load_object(src, strlen(src), "cfg.json", &o, &err) == K22_OK);
    /* The loader refuses \u0000; a NUL can only come from code, and getters refuse it too. */
    json_object_set_new(o, "nul", json_stringn("a\0b", 3));
    int i = 0, bv = 1, arr[4], len = 0;
    int64_t w = 0;
    double r = 0;
    const char *s = NULL;
    CHECK(k22_json_get_int(o, "cfg.json", "i", 0, 10, &i, &err) == K22_OK && i == 7);
    CHECK(k22_json_get_int(o, "cfg.json", "i", 8, 10, &i, &err) == K22_ERR_FORMAT);
    CHECK(strstr(err.msg, "cfg.json: key 'i' = 7 is out of range [8, 10]") != NULL);
    CHECK(k22_json_get_int(o, "cfg.json", "big", 0, 1 << 30, &i, &err) == K22_ERR_FORMAT);
    CHECK(strstr(err.msg, "5000000000") != NULL);
    CHECK(k22_json_get_i64(o, "cfg.json", "big", 0, INT64_MAX, &w, &err) == K22_OK && w == 5000000000LL);
    CHECK(k22_json_get_int(o, "cfg.json", "s", 0, 10, &i, &err) == K22_ERR_FORMAT);
    CHECK(strcmp(err.msg, "cfg.json: key 's': expected an integer, found a string") == 0);
    CHECK(k22_json_get_int(o, "cfg.json", "missing", 0, 10, &i, &err) == K22_ERR_KEY);
    CHECK(strcmp(err.msg, "cfg.json: missing key 'missing'") == 0);
    CHECK(k22_json_opt_int(o, "cfg.json", "missing", 0, 10, 3, &i, &err) == K22_OK && i == 3);
    CHECK(k22_json_opt_int(o, "cfg.json", "n", 0, 10, 3, &i, &err) == K22_ERR_FORMAT);
    CHECK(strstr(err.msg, "found null") != NULL);
    CHECK(k22_json_get_float(o, "cfg.json", "r", &r, &err) == K22_OK && r == 0.25);
    CHECK(k22_json_get_float(o, "cfg.json", "i", &r, &err) == K22_OK && r == 7.0);
    CHECK(k22_json_get_float(o, "cfg.json", "b", &r, &err) == K22_ERR_FORMAT);
    CHECK(k22_json_opt_float(o, "cfg.json", "zz", 1.5, &r, &err) == K22_OK && r == 1.5);
    CHECK(k22_json_get_bool(o, "cfg.json", "b", &bv, &err) == K22_OK && bv == 0);
    CHECK(k22_json_get_bool(o, "cfg.json", "i", &bv, &err) == K22_ERR_FORMAT);
    CHECK(k22_json_opt_bool(o, "cfg.json", "zz", 1, &bv, &err) == K22_OK && bv == 1);
    CHECK(k22_json_get_str(o, "cfg.json", "s", &s, &err) == K22_OK && strcmp(s, "abc") == 0);
    CHECK(k22_json_get_str(o, "cfg.json", "nul", &s, &err) == K22_ERR_FORMAT);
    CHECK(strstr(err.msg, "NUL") != NULL);
    CHECK(k22_json_opt_str(o, "cfg.json", "zz", "d", &s, &err) == K22_OK && strcmp(s, "d") == 0);
    char sb[3];
    CHECK(k22_json_get_strbuf(o, "cfg.json", "s", sb, sizeof sb, &err) == K22_ERR_FORMAT);
    CHECK(strstr(err.msg, "3 bytes is longer than the 2 allowed") != NULL);
    CHECK(k22_json_get_int_array(o, "cfg.json", "ints", 1, 4, 0, 9, arr, &len, &err) == K22_ERR_FORMAT);
    CHECK(strcmp(err.msg, "cfg.json: key 'ints[2]': expected an integer, found a string") == 0);
    CHECK(k22_json_get_int_array(o, "cfg.json", "ok", 1, 4, 0, 9, arr, &len, &err) == K22_OK);
    CHECK(len == 2 && arr[0] == 4 && arr[1] == 5);
    CHECK(k22_json_get_int_array(o, "cfg.json", "ok", 3, 4, 0, 9, arr, &len, &err) == K22_ERR_FORMAT);
    CHECK(strstr(err.msg, "array has 2 elements, expected 3 to 4") != NULL);
    CHECK(k22_json_get_int_array(o, "cfg.json", "ok", 1, 4, 0, 4, arr, &len, &err) == K22_ERR_FORMAT);
    CHECK(strstr(err.msg, "'ok[1]' = 5") != NULL);
    CHECK(k22_json_get_int_array(o, "cfg.json", "i", 1, 4, 0, 9, arr, &len, &err) == K22_ERR_FORMAT);
    char strs[2][2];
    CHECK(k22_json_get_str_array(o, "cfg.json", "strs", 1, 2, &strs[0][0], 2, &len, &err) == K22_ERR_FORMAT);
    CHECK(strstr(err.msg, "'strs[1]'") != NULL);
    char strs3[2][3];
    CHECK(k22_json_get_str_array(o, "cfg.json", "strs", 1, 2, &strs3[0][0], 3, &len, &err) == K22_OK);
    CHECK(len == 2 && strcmp(strs3[1], "yy") == 0);

    const char *allowed[] = {"i", "big", "r", "b", "s", "n", "ints", "ok", "strs"};
    CHECK(k22_json_check_keys(o, "cfg.json", allowed, 9, &err) == K22_ERR_KEY);
    CHECK(strcmp(err.msg, "cfg.json: unknown key 'nul'") == 0);
    const char *all[] = {"i", "big", "r", "b", "s", "n", "ints", "ok", "strs", "nul"};
    CHECK(k22_json_check_keys(o, "cfg.json", all, 10, &err) == K22_OK);
    json_decref(o);
}

static void test_load(void)
{
    json_t *v = NULL;
    k22_err err = {0};
    const char *nul = "{\"a\": \"x\\u0000y\"}";
    CHECK(k22_json_load_buf(nul, strlen(nul), "n.json", &v, &err) == K22_ERR_FORMAT);
    const char *dup = "{\"a\": 1, \"a\": 2}";
    CHECK(k22_json_load_buf(dup, strlen(dup), "d.json", &v, &err) == K22_ERR_FORMAT);
    CHECK(strstr(err.msg, "d.json: invalid JSON at line 1") != NULL && strstr(err.msg, "duplicate") != NULL);
    CHECK(k22_json_load_buf("[1]", 3, "x", &v, &err) == K22_OK && json_is_array(v));
    json_decref(v);
    CHECK(k22_json_load_object("[1]", 3, "x", &v, &err) == K22_ERR_FORMAT && v == NULL);
    CHECK(strstr(err.msg, "found an array") != NULL);
    /* Deep nesting stops at jansson's depth limit with an error, not a stack overflow. */
    size_t depth = 100000;
    char *deep = malloc(depth + 1);
    memset(deep, '[', depth);
    deep[depth] = '\0';
    CHECK(k22_json_load_buf(deep, depth, "deep", &v, &err) == K22_ERR_FORMAT);
    free(deep);

    char path[] = "/tmp/k22-test-json-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    CHECK(write(fd, "{\"k\": [1, 2, 3]}", 16) == 16);
    close(fd);
    CHECK(k22_json_load_file(path, 16, &v, &err) == K22_OK);
    json_decref(v);
    CHECK(k22_json_load_file(path, 15, &v, &err) == K22_ERR_NOMEM);
    CHECK(strstr(err.msg, path) != NULL && strstr(err.msg, "16 bytes") != NULL);
    unlink(path);
    CHECK(k22_json_load_file(path, 100, &v, &err) == K22_ERR_IO);
    CHECK(k22_json_load_file("/tmp", 100, &v, &err) == K22_ERR_IO);
    CHECK(strstr(err.msg, "not a regular file") != NULL);
}

int main(void)
{
    test_format_real();
    test_dumps();
    test_getters();
    test_load();
    return k22_test_finish("test_json");
}
