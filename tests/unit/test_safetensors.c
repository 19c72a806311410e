/* test_safetensors.c: the safetensors reader and writer. Round trips for every dtype (0-d and
 * zero-size included), byte-identical output across writes and against files the PyTorch
 * safetensors library and diffusers' save_pretrained wrote (tests/fixtures/safetensors, made by
 * tools/reference/make_safetensors_fixtures.py), and one malformed input per check the reader
 * makes, each expected to fail with a message naming the problem.
 * With K22_ST_KEEP=DIR the files k22 writes are left in DIR for the script's --check mode. */
#include "harness/harness.h"
#include "k22/safetensors.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FIX "tests/fixtures/safetensors"

static char g_tmp[64];

/* ---- the reference set; must match reference_tensors() in the fixture script ---- */

static float value(int i) { return (float)((i * 7) % 23 - 11) / 8.0f; }

static const uint16_t f16_special[11] = {0x0000, 0x8000, 0x0001, 0x03FF, 0x0400, 0x3C00,
                                         0x7BFF, 0x7C00, 0xFC00, 0x7E00, 0xC000};
static const uint16_t bf16_special[11] = {0x0000, 0x8000, 0x0001, 0x007F, 0x0080, 0x3F80,
                                          0x7F7F, 0x7F80, 0xFF80, 0x7FC0, 0xC000};

typedef struct {
    float f32[6];
    uint16_t f16[6], bf16[5];
    int64_t i64[4];
    int32_t i32[4];
    uint8_t u8[7], b[5];
    float scalar;
} ref_data;

static void ref_fill(ref_data *r)
{
    for (int i = 0; i < 6; i++) {
        r->f32[i] = value(i);
        r->f16[i] = k22_f32_to_f16(value(i));
    }
    for (int i = 0; i < 5; i++) r->bf16[i] = k22_f32_to_bf16(value(i));
    for (int i = 0; i < 4; i++) {
        r->i64[i] = (int64_t)(i * 37 - 50) * (1LL << 40);
        r->i32[i] = (i * 37 - 50) * 65536;
    }
    for (int i = 0; i < 7; i++) r->u8[i] = (uint8_t)((i * 37) % 256);
    for (int i = 0; i < 5; i++) r->b[i] = i % 3 == 0;
    r->scalar = 1.5f;
}

static void ref_add(k22_st_writer *w, const ref_data *r)
{
    int64_t s23[2] = {2, 3}, s32[2] = {3, 2}, s5[1] = {5}, s22[2] = {2, 2}, s4[1] = {4}, s7[1] = {7};
    int64_t s03[2] = {0, 3}, s11[1] = {11};
    k22_st_writer_add(w, "w.f32", K22_DTYPE_F32, 2, s23, r->f32);
    k22_st_writer_add(w, "w.f16", K22_DTYPE_F16, 2, s32, r->f16);
    k22_st_writer_add(w, "w.bf16", K22_DTYPE_BF16, 1, s5, r->bf16);
    k22_st_writer_add(w, "w.i64", K22_DTYPE_I64, 2, s22, r->i64);
    k22_st_writer_add(w, "w.i32", K22_DTYPE_I32, 1, s4, r->i32);
    k22_st_writer_add(w, "w.u8", K22_DTYPE_U8, 1, s7, r->u8);
    k22_st_writer_add(w, "w.bool", K22_DTYPE_BOOL, 1, s5, r->b);
    k22_st_writer_add(w, "scalar", K22_DTYPE_F32, 0, NULL, &r->scalar);
    k22_st_writer_add(w, "empty", K22_DTYPE_F32, 2, s03, NULL);
    k22_st_writer_add(w, "f16.special", K22_DTYPE_F16, 1, s11, f16_special);
    k22_st_writer_add(w, "bf16.special", K22_DTYPE_BF16, 1, s11, bf16_special);
}

/* Checks that f holds exactly the reference set. */
static void ref_check(const k22_st_file *f, const ref_data *r, const char *what)
{
    struct {
        const char *name;
        k22_dtype dt;
        int ndim;
        int64_t shape[2];
        const void *data;
        size_t nbytes;
    } want[] = {
        {"w.f32", K22_DTYPE_F32, 2, {2, 3}, r->f32, 24},   {"w.f16", K22_DTYPE_F16, 2, {3, 2}, r->f16, 12},
        {"w.bf16", K22_DTYPE_BF16, 1, {5}, r->bf16, 10},   {"w.i64", K22_DTYPE_I64, 2, {2, 2}, r->i64, 32},
        {"w.i32", K22_DTYPE_I32, 1, {4}, r->i32, 16},      {"w.u8", K22_DTYPE_U8, 1, {7}, r->u8, 7},
        {"w.bool", K22_DTYPE_BOOL, 1, {5}, r->b, 5},       {"scalar", K22_DTYPE_F32, 0, {0}, &r->scalar, 4},
        {"empty", K22_DTYPE_F32, 2, {0, 3}, NULL, 0},      {"f16.special", K22_DTYPE_F16, 1, {11}, f16_special, 22},
        {"bf16.special", K22_DTYPE_BF16, 1, {11}, bf16_special, 22},
    };
    int n = (int)(sizeof want / sizeof want[0]);
    CHECK_MSG(k22_st_count(f) == n, "%s: %d tensors, want %d", what, k22_st_count(f), n);
    for (int i = 0; i < n; i++) {
        const k22_st_tensor *t = k22_st_find(f, want[i].name);
        CHECK_MSG(t != NULL, "%s: tensor %s missing", what, want[i].name);
        if (!t) continue;
        int ok = t->dtype == want[i].dt && t->ndim == want[i].ndim && t->nbytes == want[i].nbytes;
        for (int d = 0; ok && d < t->ndim; d++) ok = t->shape[d] == want[i].shape[d];
        if (ok && t->nbytes) ok = memcmp(t->data, want[i].data, t->nbytes) == 0;
        CHECK_MSG(ok, "%s: tensor %s differs in dtype, shape or bytes", what, want[i].name);
    }
    for (int i = 1; i < k22_st_count(f); i++)
        CHECK(strcmp(k22_st_at(f, i - 1)->name, k22_st_at(f, i)->name) < 0);
    /* Values read back through the conversion: the formula, exactly. */
    const k22_st_tensor *t = k22_st_find(f, "w.f16");
    if (t) {
        float v[6];
        k22_convert_to_f32(v, t->data, t->dtype, 6);
        for (int i = 0; i < 6; i++) CHECK(v[i] == value(i));
    }
}

/* ---- small file helpers ---- */

static char *tmp_path(const char *name)
{
    static char p[8][256];
    static int k;
    char *s = p[k++ % 8];
    snprintf(s, 256, "%s/%s", g_tmp, name);
    return s;
}

static uint8_t *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)n + 1);
    if (fread(b, 1, (size_t)n, f) != (size_t)n) n = -1;
    fclose(f);
    if (n < 0) {
        free(b);
        return NULL;
    }
    *len = (size_t)n;
    return b;
}

static void write_bytes(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fwrite(p, 1, n, f);
    fclose(f);
}

static int same_file(const char *a, const char *b)
{
    size_t na = 0, nb = 0;
    uint8_t *pa = read_all(a, &na), *pb = read_all(b, &nb);
    int same = pa && pb && na == nb && memcmp(pa, pb, na) == 0;
    free(pa);
    free(pb);
    return same;
}

static void rm_tree(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char p[512];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat sb;
        if (lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode)) rm_tree(p);
        else unlink(p);
    }
    if (d) closedir(d);
    rmdir(dir);
}

/* ---- round trips ---- */

static void test_roundtrip(void)
{
    ref_data r;
    ref_fill(&r);
    k22_st_writer *w = k22_st_writer_new();
    ref_add(w, &r);
    k22_st_writer_meta(w, "format", "pt");
    k22_st_writer_meta(w, "zz", "last \"key\"\n");
    k22_st_writer_meta(w, "a", "first");
    k22_err err = {0};
    uint8_t *buf = NULL;
    size_t len = 0;
    CHECK(k22_st_serialize(w, &buf, &len, &err) == K22_OK);
    uint64_t hl = 0;
    memcpy(&hl, buf, 8);
    CHECK_MSG(hl % 8 == 0 && (buf[8 + hl - 1] == ' ' || buf[8 + hl - 1] == '}'), "header padded to 8: %llu",
              (unsigned long long)hl);
    k22_st_file *f = NULL;
    CHECK(k22_st_open_buffer(buf, len, "rt", &f, &err) == K22_OK);
    if (f) {
        ref_check(f, &r, "buffer round trip");
        CHECK(k22_st_metadata_count(f) == 3);
        CHECK(strcmp(k22_st_metadata_key(f, 0), "a") == 0);
        const char *v = k22_st_metadata_get(f, "zz");
        CHECK(v && strcmp(v, "last \"key\"\n") == 0);
        CHECK(k22_st_metadata_get(f, "nope") == NULL);
        /* Every tensor aligned to its element size inside the data section. */
        for (int i = 0; i < k22_st_count(f); i++)
            CHECK(k22_st_at(f, i)->offset % k22_dtype_size(k22_st_at(f, i)->dtype) == 0);
    }
    k22_st_close(f);

    /* Two writes give the same bytes, equal to the serialized buffer. */
    CHECK(k22_st_write(w, tmp_path("a.safetensors"), &err) == K22_OK);
    CHECK(k22_st_write(w, tmp_path("b.safetensors"), &err) == K22_OK);
    CHECK(same_file(tmp_path("a.safetensors"), tmp_path("b.safetensors")));
    size_t fl = 0;
    uint8_t *fb = read_all(tmp_path("a.safetensors"), &fl);
    CHECK(fb && fl == len && memcmp(fb, buf, len) == 0);
    CHECK(access(tmp_path("a.safetensors.tmp"), F_OK) != 0);
    free(fb);
    free(buf);
    CHECK(k22_st_open(tmp_path("a.safetensors"), &f, &err) == K22_OK);
    if (f) ref_check(f, &r, "file round trip");
    k22_st_close(f);
    k22_st_writer_free(w);

    /* An empty writer gives a valid file with no tensors. */
    w = k22_st_writer_new();
    CHECK(k22_st_serialize(w, &buf, &len, &err) == K22_OK);
    CHECK(len == 16 && memcmp(buf + 8, "{}      ", 8) == 0);
    CHECK(k22_st_open_buffer(buf, len, "empty", &f, &err) == K22_OK && k22_st_count(f) == 0);
    k22_st_close(f);
    free(buf);
    k22_st_writer_free(w);
}

/* Files from the reference writer: equal values, and k22 writes the same bytes. */
static void test_reference_files(void)
{
    ref_data r;
    ref_fill(&r);
    k22_err err = {0};
    k22_st_file *f = NULL;
    CHECK_MSG(k22_st_open(FIX "/all_dtypes.safetensors", &f, &err) == K22_OK, "%s", err.msg);
    if (f) {
        ref_check(f, &r, "all_dtypes.safetensors");
        CHECK(k22_st_metadata_count(f) == 1 && strcmp(k22_st_metadata_get(f, "format"), "pt") == 0);
    }
    k22_st_close(f);

    k22_st_writer *w = k22_st_writer_new();
    ref_add(w, &r);
    k22_st_writer_meta(w, "format", "pt");
    CHECK(k22_st_write(w, tmp_path("all_dtypes.safetensors"), &err) == K22_OK);
    CHECK_MSG(same_file(tmp_path("all_dtypes.safetensors"), FIX "/all_dtypes.safetensors"),
              "k22's bytes differ from safetensors.torch.save_file's");
    const char *keep = getenv("K22_ST_KEEP");
    if (keep) {
        char p[512];
        snprintf(p, sizeof p, "%s/k22_all_dtypes.safetensors", keep);
        CHECK(k22_st_write(w, p, &err) == K22_OK);
    }
    k22_st_writer_free(w);

    CHECK(k22_st_open(FIX "/empty.safetensors", &f, &err) == K22_OK && k22_st_count(f) == 0);
    k22_st_close(f);
    CHECK_MSG(k22_st_open(FIX "/meta.safetensors", &f, &err) == K22_OK, "%s", err.msg);
    if (f) {
        CHECK(k22_st_metadata_count(f) == 4);
        CHECK(strcmp(k22_st_metadata_key(f, 0), "") == 0);
        const char *v = k22_st_metadata_get(f, "note");
        CHECK(v && strcmp(v, "caf\xc3\xa9 \"quoted\"\n") == 0);
        const k22_st_tensor *t = k22_st_find(f, "x");
        float one[2];
        if (t) k22_convert_to_f32(one, t->data, t->dtype, 2);
        CHECK(t && t->nbytes == 8 && one[0] == 1.0f && one[1] == 1.0f);
    }
    k22_st_close(f);
}

/* The diffusers-sharded fixture: read as a set; re-sharded by k22 in the state-dict order
 * (order.txt) with the same cap, every file comes out byte-identical. */
static void test_sharded_reference(void)
{
    k22_err err = {0};
    k22_st_set *s = NULL;
    CHECK_MSG(k22_st_set_open(FIX "/sharded/diffusion_pytorch_model.safetensors.index.json", &s, &err) == K22_OK,
              "%s", err.msg);
    if (!s) return;
    size_t ol = 0;
    char *order = (char *)read_all(FIX "/sharded/order.txt", &ol);
    CHECK(order != NULL);
    if (!order) goto out;
    order[ol] = '\0';
    k22_st_writer *w = k22_st_writer_new();
    k22_st_writer_meta(w, "format", "pt");
    int n = 0;
    for (char *line = strtok(order, "\n"); line; line = strtok(NULL, "\n"), n++) {
        const k22_st_tensor *t = k22_st_set_find(s, line);
        CHECK_MSG(t != NULL, "tensor %s missing from the set", line);
        if (t) k22_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data);
    }
    CHECK_MSG(n == k22_st_set_count(s), "%d tensors in order.txt, %d in the set", n, k22_st_set_count(s));
    CHECK(k22_st_set_find(s, "no.such.tensor") == NULL);
    const char *dir = tmp_path("sharded");
    mkdir(dir, 0755);
    write_bytes(tmp_path("sharded/diffusion_pytorch_model-00011-of-00011.safetensors"), "stale", 5);
    CHECK_MSG(k22_st_write_sharded(w, dir, "diffusion_pytorch_model", 600, &err) == K22_OK, "%s", err.msg);
    CHECK_MSG(access(tmp_path("sharded/diffusion_pytorch_model-00011-of-00011.safetensors"), F_OK) != 0,
              "stale shard left behind");
    DIR *d = opendir(FIX "/sharded");
    struct dirent *e;
    int files = 0;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.' || !strcmp(e->d_name, "order.txt")) continue;
        char a[512], b[512];
        snprintf(a, sizeof a, FIX "/sharded/%s", e->d_name);
        snprintf(b, sizeof b, "%s/%s", dir, e->d_name);
        CHECK_MSG(same_file(a, b), "%s: k22's bytes differ from diffusers'", e->d_name);
        files++;
    }
    if (d) closedir(d);
    CHECK(files >= 3);
    /* The same tensors with a cap nothing exceeds: one file, no index. */
    CHECK(k22_st_write_sharded(w, dir, "diffusion_pytorch_model", (size_t)1 << 30, &err) == K22_OK);
    CHECK(access(tmp_path("sharded/diffusion_pytorch_model.safetensors.index.json"), F_OK) != 0);
    CHECK(access(tmp_path("sharded/diffusion_pytorch_model-00001-of-00009.safetensors"), F_OK) != 0);
    k22_st_set *one = NULL;
    CHECK(k22_st_set_open(tmp_path("sharded/diffusion_pytorch_model.safetensors"), &one, &err) == K22_OK);
    if (one) {
        CHECK(k22_st_set_count(one) == k22_st_set_count(s));
        for (int i = 0; i < k22_st_set_count(s); i++) {
            const k22_st_tensor *a = k22_st_set_at(s, i), *b = k22_st_set_at(one, i);
            CHECK(b && !strcmp(a->name, b->name) && a->nbytes == b->nbytes && !memcmp(a->data, b->data, a->nbytes));
        }
    }
    k22_st_set_close(one);
    k22_st_writer_free(w);
out:
    free(order);
    k22_st_set_close(s);
}

/* The shard split rule of huggingface_hub: an oversized tensor gets its own shard at once. */
static void test_shard_split(void)
{
    float a[2] = {1, 2}, big[5] = {0}, c[1] = {3};
    int64_t s2 = 2, s5 = 5, s1 = 1;
    k22_st_writer *w = k22_st_writer_new();
    k22_st_writer_add(w, "a", K22_DTYPE_F32, 1, &s2, a);
    k22_st_writer_add(w, "big", K22_DTYPE_F32, 1, &s5, big);
    k22_st_writer_add(w, "c", K22_DTYPE_F32, 1, &s1, c);
    k22_err err = {0};
    const char *dir = tmp_path("split");
    mkdir(dir, 0755);
    CHECK(k22_st_write_sharded(w, dir, "model", 12, &err) == K22_OK);
    size_t n = 0;
    char *idx = (char *)read_all(tmp_path("split/model.safetensors.index.json"), &n);
    const char *want = "{\n  \"metadata\": {\n    \"total_size\": 32\n  },\n  \"weight_map\": {\n"
                       "    \"a\": \"model-00002-of-00002.safetensors\",\n"
                       "    \"big\": \"model-00001-of-00002.safetensors\",\n"
                       "    \"c\": \"model-00002-of-00002.safetensors\"\n  }\n}\n";
    CHECK_MSG(idx && n == strlen(want) && !memcmp(idx, want, n), "index:\n%s", idx ? idx : "(none)");
    free(idx);
    k22_st_set *s = NULL;
    CHECK(k22_st_set_open(tmp_path("split/model.safetensors.index.json"), &s, &err) == K22_OK);
    CHECK(s && k22_st_set_count(s) == 3 && k22_st_set_find(s, "c") && ((const float *)k22_st_set_find(s, "c")->data)[0] == 3);
    k22_st_set_close(s);
    k22_st_writer_free(w);
}

/* ---- malformed inputs ---- */

/* 8-byte length + header + ndata zero bytes; hl_override replaces the length when nonzero. */
static uint8_t *mk(const char *hdr, size_t ndata, uint64_t hl_override, size_t *len)
{
    size_t hl = strlen(hdr);
    *len = 8 + hl + ndata;
    uint8_t *b = calloc(1, *len);
    uint64_t l = hl_override ? hl_override : hl;
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(l >> (8 * i));
    memcpy(b + 8, hdr, hl);
    return b;
}

static void expect_fail(const char *what, const uint8_t *b, size_t len, const char *substr)
{
    k22_err err = {0};
    k22_st_file *f = NULL;
    k22_status st = k22_st_open_buffer(b, len, "bad.safetensors", &f, &err);
    CHECK_MSG(st != K22_OK && f == NULL, "%s: accepted", what);
    CHECK_MSG(strstr(err.msg, substr) && !strncmp(err.msg, "bad.safetensors: ", 17), "%s: message '%s' lacks '%s'",
              what, err.msg, substr);
    k22_st_close(f);
}

#define T1(dt, shape, off) "{\"a\":{\"dtype\":\"" dt "\",\"shape\":" shape ",\"data_offsets\":" off "}}"

static void test_malformed(void)
{
    static const struct {
        const char *what, *hdr;
        size_t ndata;
        uint64_t hl;
        const char *msg;
    } cases[] = {
        {"header length past end", "{}", 0, 1000, "runs past the end of the file"},
        {"header length over cap", "{}", 0, (uint64_t)K22_ST_MAX_HEADER + 1, "more than the cap"},
        {"header not JSON", "{\"a\":", 0, 0, "not valid JSON"},
        {"empty header", "", 0, 0, "not valid JSON"},
        {"trailing NUL", "{}", 1, 3, "not valid JSON"},
        {"not an object", "[1,2]", 0, 0, "not a JSON object"},
        {"entry not an object", "{\"a\":3}", 0, 0, "tensor 'a': entry is not an object"},
        {"bad dtype", T1("F33", "[2]", "[0,8]"), 8, 0, "tensor 'a' has dtype 'F33'"},
        {"dtype not a string", "{\"a\":{\"dtype\":1,\"shape\":[2],\"data_offsets\":[0,8]}}", 8, 0, "dtype is not a string"},
        {"negative shape", T1("F32", "[-2]", "[0,8]"), 8, 0, "shape[0] is not a non-negative integer"},
        {"float shape", T1("F32", "[2.0]", "[0,8]"), 8, 0, "shape[0] is not a non-negative integer"},
        {"shape not array", T1("F32", "2", "[0,8]"), 8, 0, "shape is not an array"},
        {"too many dims", T1("F32", "[1,1,1,1,1,1,1,1,1]", "[0,4]"), 4, 0, "9 dimensions"},
        {"shape disagrees", T1("F32", "[3]", "[0,8]"), 8, 0, "need 12 bytes but data_offsets [0, 8) hold 8"},
        {"overflowing shape", T1("F32", "[4294967296,4294967296,4294967296]", "[0,8]"), 8, 0, "overflows"},
        {"huge shape int", T1("F32", "[99999999999999999999]", "[0,8]"), 8, 0, "not valid JSON"},
        {"offsets out of range", T1("F32", "[3]", "[0,12]"), 8, 0, "tensor 'a' ends at byte 12 but the data section has 8"},
        {"begin after end", T1("F32", "[0]", "[8,0]"), 8, 0, "begin 8 is after end 0"},
        {"negative offset", T1("F32", "[2]", "[-8,0]"), 8, 0, "data_offsets is not a pair"},
        {"offsets not a pair", T1("F32", "[2]", "[0,8,9]"), 8, 0, "data_offsets is not a pair"},
        {"missing key", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, 0, "exactly the keys"},
        {"extra key", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"x\":1}}", 8, 0,
         "exactly the keys"},
        {"overlap",
         "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
         8, 0, "tensor 'b' at bytes [4, 8) overlaps tensor 'a'"},
        {"gap between",
         "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
         12, 0, "gap in the data section: bytes [4, 8) before tensor 'b'"},
        {"gap at start", T1("F32", "[1]", "[4,8]"), 8, 0, "bytes [0, 4) before tensor 'a'"},
        {"gap at end", T1("F32", "[1]", "[0,4]"), 8, 0, "bytes [4, 8) after the last tensor"},
        {"data without tensors", "{}", 8, 0, "bytes [0, 8) after the last tensor"},
        {"duplicate keys",
         "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
         "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
         4, 0, "duplicate object key"},
        {"metadata non-string", "{\"__metadata__\":{\"k\":1}}", 0, 0, "__metadata__ value of 'k' is not a string"},
        {"metadata not object", "{\"__metadata__\":[\"k\"]}", 0, 0, "__metadata__ is not an object"},
        {"metadata null", "{\"__metadata__\":null}", 0, 0, "__metadata__ is not an object"},
        {"empty name", "{\"\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, 0, "empty name"},
        {"bad UTF-8", "{\"\xff\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, 0, "not valid JSON"},
        {"NUL in name", "{\"a\\u0000b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, 0,
         "not valid JSON"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t len;
        uint8_t *b = mk(cases[i].hdr, cases[i].ndata, cases[i].hl, &len);
        expect_fail(cases[i].what, b, len, cases[i].msg);
        free(b);
    }
    /* Names longer than the cap. */
    char hdr[K22_ST_MAX_NAME + 200];
    char name[K22_ST_MAX_NAME + 2];
    memset(name, 'n', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    snprintf(hdr, sizeof hdr, "{\"%s\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", name);
    size_t len;
    uint8_t *b = mk(hdr, 4, 0, &len);
    expect_fail("long name", b, len, "more than 1024");
    free(b);
    /* Shorter than the 8-byte length. */
    expect_fail("short", (const uint8_t *)"\x02\0\0", 3, "shorter than the 8-byte header length");
    expect_fail("zero bytes", (const uint8_t *)"", 0, "shorter than the 8-byte header length");
}

/* The same checks through files: truncation, short files, missing files. */
static void test_malformed_files(void)
{
    ref_data r;
    ref_fill(&r);
    k22_st_writer *w = k22_st_writer_new();
    ref_add(w, &r);
    k22_err err = {0};
    uint8_t *buf = NULL;
    size_t len = 0;
    CHECK(k22_st_serialize(w, &buf, &len, &err) == K22_OK);
    k22_st_writer_free(w);
    const char *p = tmp_path("trunc.safetensors");
    write_bytes(p, buf, len - 3);
    k22_st_file *f = NULL;
    CHECK(k22_st_open(p, &f, &err) != K22_OK && f == NULL);
    char want[256];
    snprintf(want, sizeof want, "%s: tensor 'w.bool' ends at byte %zu but the data section has %zu", p,
             len - (size_t)(buf[0] | buf[1] << 8) - 8, len - (size_t)(buf[0] | buf[1] << 8) - 8 - 3);
    CHECK_MSG(strstr(err.msg, want) != NULL, "'%s' lacks '%s'", err.msg, want);
    free(buf);
    write_bytes(p, "abc", 3);
    CHECK(k22_st_open(p, &f, &err) != K22_OK && strstr(err.msg, "shorter than the 8-byte") && strstr(err.msg, p));
    CHECK(k22_st_open(tmp_path("missing.safetensors"), &f, &err) == K22_ERR_IO && strstr(err.msg, "cannot open"));
    CHECK(k22_st_open(g_tmp, &f, &err) == K22_ERR_IO && strstr(err.msg, "not a regular file"));
}

/* Writes a two-shard set into dir "bad" plus an index with the given weight_map body. */
static void expect_index_fail(const char *what, const char *weight_map, const char *substr)
{
    char idx[1024];
    snprintf(idx, sizeof idx, "{\"metadata\":{\"total_size\":8},\"weight_map\":{%s}}", weight_map);
    write_bytes(tmp_path("bad/m.safetensors.index.json"), idx, strlen(idx));
    k22_err err = {0};
    k22_st_set *s = NULL;
    CHECK_MSG(k22_st_set_open(tmp_path("bad/m.safetensors.index.json"), &s, &err) != K22_OK && s == NULL,
              "%s: accepted", what);
    CHECK_MSG(strstr(err.msg, substr) && strstr(err.msg, "m.safetensors.index.json"), "%s: '%s' lacks '%s'", what,
              err.msg, substr);
    k22_st_set_close(s);
}

static void test_malformed_index(void)
{
    mkdir(tmp_path("bad"), 0755);
    float x[1] = {1}, y[1] = {2};
    int64_t s1 = 1;
    k22_err err = {0};
    k22_st_writer *w = k22_st_writer_new();
    k22_st_writer_add(w, "x", K22_DTYPE_F32, 1, &s1, x);
    CHECK(k22_st_write(w, tmp_path("bad/s1.safetensors"), &err) == K22_OK);
    k22_st_writer_free(w);
    w = k22_st_writer_new();
    k22_st_writer_add(w, "y", K22_DTYPE_F32, 1, &s1, y);
    CHECK(k22_st_write(w, tmp_path("bad/s2.safetensors"), &err) == K22_OK);
    k22_st_writer_free(w);

    /* The good one first, so the failures below are the index's fault. */
    char idx[] = "{\"weight_map\":{\"x\":\"s1.safetensors\",\"y\":\"s2.safetensors\"}}";
    write_bytes(tmp_path("bad/ok.safetensors.index.json"), idx, strlen(idx));
    k22_st_set *s = NULL;
    CHECK_MSG(k22_st_set_open(tmp_path("bad/ok.safetensors.index.json"), &s, &err) == K22_OK, "%s", err.msg);
    CHECK(s && k22_st_set_count(s) == 2 && !strcmp(k22_st_set_at(s, 1)->name, "y"));
    k22_st_set_close(s);

    expect_index_fail("missing shard", "\"x\":\"s1.safetensors\",\"y\":\"s3.safetensors\"",
                      "shard 's3.safetensors' named in the weight_map");
    expect_index_fail("tensor missing from shard", "\"x\":\"s1.safetensors\",\"y\":\"s2.safetensors\",\"z\":\"s2.safetensors\"",
                      "puts tensor 'z' in shard 's2.safetensors' but that shard does not hold it");
    expect_index_fail("tensor in wrong shard", "\"x\":\"s2.safetensors\",\"y\":\"s2.safetensors\"",
                      "puts tensor 'x' in shard 's2.safetensors' but");
    expect_index_fail("unlisted tensor named", "\"y\":\"s2.safetensors\",\"x\":\"s1.safetensors\",\"q\":\"s1.safetensors\"",
                      "tensor 'q'");
    expect_index_fail("dot-dot", "\"x\":\"../bad/s1.safetensors\"", "no '/' or '..'");
    expect_index_fail("dot-dot alone", "\"x\":\"..\"", "no '/' or '..'");
    expect_index_fail("slash", "\"x\":\"/etc/passwd\"", "no '/' or '..'");
    expect_index_fail("non-string", "\"x\":1", "is not a string");
    expect_index_fail("duplicate", "\"x\":\"s1.safetensors\",\"x\":\"s1.safetensors\"", "duplicate object key");

    /* A shard holding a tensor the weight_map leaves out. */
    char only_y[] = "{\"weight_map\":{\"y\":\"s2.safetensors\"}}";
    write_bytes(tmp_path("bad/m2.safetensors.index.json"), only_y, strlen(only_y));
    CHECK(k22_st_set_open(tmp_path("bad/m2.safetensors.index.json"), &s, &err) == K22_OK); /* s1 is not a shard */
    k22_st_set_close(s);
    char both[] = "{\"weight_map\":{\"x\":\"s1.safetensors\"},\"metadata\":{}}";
    write_bytes(tmp_path("bad/m3.safetensors.index.json"), both, strlen(both));
    w = k22_st_writer_new();
    k22_st_writer_add(w, "x", K22_DTYPE_F32, 1, &s1, x);
    k22_st_writer_add(w, "extra", K22_DTYPE_F32, 1, &s1, y);
    CHECK(k22_st_write(w, tmp_path("bad/s1.safetensors"), &err) == K22_OK);
    k22_st_writer_free(w);
    CHECK(k22_st_set_open(tmp_path("bad/m3.safetensors.index.json"), &s, &err) != K22_OK);
    CHECK_MSG(strstr(err.msg, "holds tensor 'extra' which the weight_map does not list"), "%s", err.msg);
    char extra_top[] = "{\"weight_map\":{},\"other\":1}";
    write_bytes(tmp_path("bad/m4.safetensors.index.json"), extra_top, strlen(extra_top));
    CHECK(k22_st_set_open(tmp_path("bad/m4.safetensors.index.json"), &s, &err) != K22_OK &&
          strstr(err.msg, "nothing else"));
    write_bytes(tmp_path("bad/m5.safetensors.index.json"), "{\"weight_map\":", 14);
    CHECK(k22_st_set_open(tmp_path("bad/m5.safetensors.index.json"), &s, &err) != K22_OK &&
          strstr(err.msg, "not valid JSON"));
}

/* The fuzz seed corpus doubles as a table: valid-* files open, bad-* files are refused. */
static void test_corpus(void)
{
    const char *dir = "tests/fuzz/corpus/safetensors";
    DIR *d = opendir(dir);
    CHECK_MSG(d != NULL, "%s missing", dir);
    struct dirent *e;
    int valid = 0, bad = 0;
    while (d && (e = readdir(d))) {
        int want_ok = !strncmp(e->d_name, "valid-", 6);
        if (!want_ok && strncmp(e->d_name, "bad-", 4)) continue;
        char p[512];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        k22_err err = {0};
        k22_st_file *f = NULL;
        k22_status st = k22_st_open(p, &f, &err);
        CHECK_MSG((st == K22_OK) == want_ok, "%s: status %s (%s)", e->d_name, k22_status_name(st), err.msg);
        CHECK_MSG(want_ok || strstr(err.msg, p) == err.msg, "%s: message '%s' does not start with the path",
                  e->d_name, err.msg);
        k22_st_close(f);
        valid += want_ok;
        bad += !want_ok;
    }
    if (d) closedir(d);
    CHECK_MSG(valid >= 10 && bad >= 25, "corpus has %d valid and %d bad files", valid, bad);
}

static void test_writer_errors(void)
{
    float x[2] = {1, 2};
    int64_t s2 = 2, neg = -1;
    k22_err err = {0};
    uint8_t *buf = NULL;
    size_t len = 0;
    struct {
        const char *what, *name;
        int64_t *shape;
        int ndim, dup;
        const char *msg;
    } cases[] = {
        {"duplicate", "x", &s2, 1, 1, "tensor 'x' was added twice"},
        {"empty name", "", &s2, 1, 0, "is empty"},
        {"reserved name", "__metadata__", &s2, 1, 0, "reserved"},
        {"bad UTF-8", "\xc3\x28", &s2, 1, 0, "not UTF-8"},
        {"negative dim", "n", &neg, 1, 0, "invalid dtype, shape"},
        {"too many dims", "d", &s2, K22_MAX_DIMS + 1, 0, "invalid dtype, shape"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        k22_st_writer *w = k22_st_writer_new();
        k22_st_writer_add(w, cases[i].name, K22_DTYPE_F32, cases[i].ndim, cases[i].shape, x);
        if (cases[i].dup) k22_st_writer_add(w, cases[i].name, K22_DTYPE_F16, 1, &s2, x);
        CHECK_MSG(k22_st_serialize(w, &buf, &len, &err) != K22_OK && buf == NULL, "%s accepted", cases[i].what);
        CHECK_MSG(strstr(err.msg, cases[i].msg), "%s: '%s' lacks '%s'", cases[i].what, err.msg, cases[i].msg);
        CHECK(k22_st_write(w, tmp_path("never.safetensors"), &err) != K22_OK);
        CHECK(access(tmp_path("never.safetensors"), F_OK) != 0 && access(tmp_path("never.safetensors.tmp"), F_OK) != 0);
        k22_st_writer_free(w);
    }
    /* A write into a missing folder fails with the path in the message. */
    k22_st_writer *w = k22_st_writer_new();
    CHECK(k22_st_write(w, tmp_path("no/such/dir/x.safetensors"), &err) == K22_ERR_IO && strstr(err.msg, "no/such/dir"));
    k22_st_writer_free(w);
}

int main(void)
{
    snprintf(g_tmp, sizeof g_tmp, "/tmp/k22-st-XXXXXX");
    if (!mkdtemp(g_tmp)) {
        perror("mkdtemp");
        return 1;
    }
    test_roundtrip();
    test_reference_files();
    test_sharded_reference();
    test_shard_split();
    test_malformed();
    test_malformed_files();
    test_malformed_index();
    test_writer_errors();
    test_corpus();
    rm_tree(g_tmp);
    return k22_test_finish("test_safetensors");
}
