/* fuzz_safetensors.c: libFuzzer target for the safetensors reader, and a round-trip property:
 * whatever the reader accepts, the writer re-serializes, the reader accepts again with equal
 * tensors and metadata, and a second serialization gives the same bytes. A rejected input must
 * come with a message naming the buffer. Violations abort, so the fuzzer and the corpus replay
 * both report them. */
#include "k22/safetensors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void require(int ok, const char *what)
{
    if (ok) return;
    fprintf(stderr, "fuzz_safetensors: property violated: %s\n", what);
    abort();
}

/* Reads every byte the file object points at (ASan catches any that lie outside the input). */
static uint64_t touch(const k22_st_file *f)
{
    uint64_t acc = 0;
    for (int i = 0; i < k22_st_count(f); i++) {
        const k22_st_tensor *t = k22_st_at(f, i);
        acc += strlen(t->name) + (uint64_t)t->ndim;
        const uint8_t *p = t->data;
        for (size_t b = 0; b < t->nbytes; b++) acc = acc * 31 + p[b];
        size_t es = k22_dtype_size(t->dtype), n = t->nbytes / es;
        require(n * es == t->nbytes, "nbytes is a whole number of elements");
        int64_t numel = k22_shape_numel(t->ndim, t->shape);
        require(numel >= 0 && (uint64_t)numel == n, "numel matches nbytes");
        float tmp[64];
        for (size_t k = 0; k < n; k += 64) {
            size_t m = n - k < 64 ? n - k : 64;
            k22_convert_to_f32(tmp, p + k * es, t->dtype, m);
            acc += (uint64_t)(tmp[0] == tmp[0]);
        }
        require(k22_st_find(f, t->name) == t, "find returns the tensor");
    }
    for (int i = 0; i < k22_st_metadata_count(f); i++) {
        const char *k = k22_st_metadata_key(f, i);
        require(k22_st_metadata_get(f, k) != NULL, "metadata key found");
        acc += strlen(k) + strlen(k22_st_metadata_get(f, k));
    }
    return acc;
}

static k22_st_writer *to_writer(const k22_st_file *f)
{
    k22_st_writer *w = k22_st_writer_new();
    for (int i = 0; i < k22_st_count(f); i++) {
        const k22_st_tensor *t = k22_st_at(f, i);
        k22_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data);
    }
    for (int i = 0; i < k22_st_metadata_count(f); i++) {
        const char *k = k22_st_metadata_key(f, i);
        k22_st_writer_meta(w, k, k22_st_metadata_get(f, k));
    }
    return w;
}

static void check_equal(const k22_st_file *a, const k22_st_file *b)
{
    require(k22_st_count(a) == k22_st_count(b), "same tensor count");
    for (int i = 0; i < k22_st_count(a); i++) {
        const k22_st_tensor *x = k22_st_at(a, i), *y = k22_st_at(b, i);
        require(!strcmp(x->name, y->name) && x->dtype == y->dtype && x->ndim == y->ndim && x->nbytes == y->nbytes,
                "same name, dtype, rank and size");
        require(!memcmp(x->shape, y->shape, sizeof(int64_t) * (size_t)x->ndim), "same shape");
        require(x->nbytes == 0 || !memcmp(x->data, y->data, x->nbytes), "same bytes");
    }
    require(k22_st_metadata_count(a) == k22_st_metadata_count(b), "same metadata count");
    for (int i = 0; i < k22_st_metadata_count(a); i++) {
        const char *k = k22_st_metadata_key(a, i);
        require(!strcmp(k, k22_st_metadata_key(b, i)), "same metadata keys");
        require(!strcmp(k22_st_metadata_get(a, k), k22_st_metadata_get(b, k)), "same metadata values");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    k22_err err = {0};
    k22_st_file *f = NULL;
    if (k22_st_open_buffer(data, size, "fuzz.safetensors", &f, &err) != K22_OK) {
        require(f == NULL && err.code != K22_OK, "failure sets the error");
        require(!strncmp(err.msg, "fuzz.safetensors: ", 18), "message names the file");
        return 0;
    }
    volatile uint64_t sink = touch(f);
    (void)sink;
    k22_st_writer *w = to_writer(f);
    uint8_t *out = NULL, *again = NULL;
    size_t len = 0, len2 = 0;
    require(k22_st_serialize(w, &out, &len, &err) == K22_OK, "an accepted file re-serializes");
    k22_st_file *g = NULL;
    require(k22_st_open_buffer(out, len, "rt", &g, &err) == K22_OK, "the re-serialized file opens");
    check_equal(f, g);
    k22_st_writer *w2 = to_writer(g);
    require(k22_st_serialize(w2, &again, &len2, &err) == K22_OK, "second serialization");
    require(len == len2 && !memcmp(out, again, len), "serialization is deterministic");
    k22_st_writer_free(w2);
    k22_st_close(g);
    free(again);
    free(out);
    k22_st_writer_free(w);
    k22_st_close(f);
    return 0;
}
