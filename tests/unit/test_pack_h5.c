/* test_pack_h5.c: the HDF5 pack writer and reader: round trip in fp32 and fp16 (exact: stored
 * values are integers, or f16-rounded on both sides), a writer killed mid-run then resumed gives
 * the same contents as an uninterrupted run, malformed files are refused with the dataset named,
 * the model-compatibility check names what differs, and the latent factor: packs with MoVQ
 * factor 2 and 8 round-trip, a format 1 file (no latent_factor attribute, made here by editing
 * attributes with the HDF5 API) still opens as factor 8, inconsistent attributes are refused. */
#include "harness/harness.h"
#include "k22/pack.h"

#include <hdf5.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define E 8
#define RES 16
#define NIN 23 /* inputs; every 5th (i % 5 == 3) is rejected */

static char dir[] = "/tmp/k22_pack_test_XXXXXX";

static void meta_init(k22_pack_meta *m, k22_pack_for use, k22_dtype dt)
{
    memset(m, 0, sizeof *m);
    m->use = use;
    m->dtype = dt;
    m->embed_dim = E;
    m->resolution = RES;
    m->latent_channels = 4;
    snprintf(m->preprocessing, sizeof m->preprocessing, "decoder: resize %d, center crop, [-1,1]; clip: 224", RES);
    m->chunk_bytes = 4096; /* several chunks per dataset: reads cross chunk borders */
    m->n_models = 2;
    snprintf(m->models[0].name, 64, "prior");
    snprintf(m->models[0].path, 1024, "/models/prior/model.safetensors");
    memset(m->models[0].sha256, 'a', 64);
    snprintf(m->models[1].name, 64, "movq");
    snprintf(m->models[1].path, 1024, "/models/movq/model.safetensors");
    memset(m->models[1].sha256, 'b', 64);
}

/* Value k of field f for input i: integers in [-512, 512), exact in fp16. */
static float val(int64_t i, int f, int64_t k) { return (float)((i * 31 + f * 7 + k * 3) % 1024) - 512.0f; }

typedef struct {
    char cap[64], src[64];
    const char *capp[1], *srcp[1];
    int32_t ids[77];
    uint8_t mask[77];
    float te[E], th[77 * E], ie[E], lat[4 * (RES / 8) * (RES / 8)];
    k22_pack_batch b;
} one_row;

static void make_row(one_row *r, int64_t i)
{
    snprintf(r->cap, sizeof r->cap, "a drawing of figure %lld, caf\xc3\xa9", (long long)i);
    snprintf(r->src, sizeof r->src, "img_%04lld.png", (long long)i);
    r->capp[0] = r->cap;
    r->srcp[0] = r->src;
    for (int k = 0; k < 77; k++) {
        r->ids[k] = (int32_t)(49406 - i - k);
        r->mask[k] = (uint8_t)(k < 10 + i % 7);
    }
    for (int k = 0; k < E; k++) r->te[k] = val(i, 4, k), r->ie[k] = val(i, 6, k);
    for (int k = 0; k < 77 * E; k++) r->th[k] = val(i, 5, k);
    for (int k = 0; k < 4 * (RES / 8) * (RES / 8); k++) r->lat[k] = val(i, 7, k);
    r->b = (k22_pack_batch){r->capp, r->srcp, r->ids, r->mask, r->te, r->th, r->ie, r->lat};
}

/* Feeds inputs [from, to) to w, committing every `every` inputs; stops without committing the
 * tail when kill_after >= 0 inputs have been fed (then SIGKILLs itself). */
static int feed(k22_pack_writer *w, int64_t from, int64_t to, int every, int64_t kill_at)
{
    k22_err err;
    one_row r;
    for (int64_t i = from; i < to; i++) {
        if (i == kill_at) raise(SIGKILL);
        k22_status st;
        if (i % 5 == 3) {
            char s[64];
            snprintf(s, sizeof s, "img_%04lld.jpg", (long long)i);
            st = k22_pack_writer_reject(w, s, "truncated JPEG", &err);
        } else {
            make_row(&r, i);
            st = k22_pack_writer_append(w, &r.b, 1, &err);
        }
        if (!st && (i + 1) % every == 0) st = k22_pack_writer_commit(w, i + 1, &err);
        if (st) {
            fprintf(stderr, "feed: %s\n", err.msg);
            return 1;
        }
    }
    if (k22_pack_writer_commit(w, to, &err)) return 1;
    return 0;
}

static int write_full(const char *path, k22_pack_for use, k22_dtype dt)
{
    k22_pack_meta m;
    meta_init(&m, use, dt);
    k22_pack_writer *w = NULL;
    k22_err err;
    if (k22_pack_writer_create(path, &m, &w, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    int rc = feed(w, 0, NIN, 4, -1);
    if (k22_pack_writer_close(w, &err)) rc = 1;
    return rc;
}

/* Checks every row of a pack against make_row (exact). */
static void check_contents(const char *path, k22_pack_for use, const char *what)
{
    k22_pack *p = NULL;
    k22_err err;
    k22_status st = k22_pack_open(path, &p, &err);
    CHECK_MSG(st == K22_OK, "%s: open: %s", what, err.msg);
    if (st) return;
    int64_t n = k22_pack_rows(p);
    CHECK_MSG(n == NIN - NIN / 5 - (NIN % 5 > 3), "%s: %lld rows", what, (long long)n);
    CHECK(k22_pack_rejected(p) == (NIN + 1) / 5);
    int64_t row = 0, bad = 0;
    one_row r;
    for (int64_t i = 0; i < NIN; i++) {
        if (i % 5 == 3) continue;
        make_row(&r, i);
        float f[77 * E];
        int32_t ids[77];
        uint8_t mask[77];
        char *cap = NULL, *src = NULL;
        if (k22_pack_for_has(use, K22_PACK_TEXT_HIDDEN)) {
            bad += k22_pack_read(p, K22_PACK_TEXT_HIDDEN, row, 1, f, &err) || memcmp(f, r.th, sizeof r.th);
            bad += k22_pack_read(p, K22_PACK_TEXT_EMBEDS, row, 1, f, &err) || memcmp(f, r.te, sizeof r.te);
            bad += k22_pack_read(p, K22_PACK_INPUT_IDS, row, 1, ids, &err) || memcmp(ids, r.ids, sizeof ids);
            bad += k22_pack_read(p, K22_PACK_ATTENTION_MASK, row, 1, mask, &err) || memcmp(mask, r.mask, sizeof mask);
        }
        if (k22_pack_for_has(use, K22_PACK_LATENTS))
            bad += k22_pack_read(p, K22_PACK_LATENTS, row, 1, f, &err) || memcmp(f, r.lat, sizeof r.lat);
        bad += k22_pack_read(p, K22_PACK_IMAGE_EMBEDS, row, 1, f, &err) || memcmp(f, r.ie, sizeof r.ie);
        bad += k22_pack_read_strings(p, K22_PACK_CAPTION, row, 1, &cap, &err) || strcmp(cap, r.cap);
        bad += k22_pack_read_strings(p, K22_PACK_SOURCE, row, 1, &src, &err) || strcmp(src, r.src);
        free(cap);
        free(src);
        row++;
    }
    CHECK_MSG(bad == 0, "%s: %lld mismatching row reads", what, (long long)bad);
    for (int64_t i = 0; i < k22_pack_rejected(p); i++) {
        char *s = NULL, *why = NULL, want[64];
        snprintf(want, sizeof want, "img_%04lld.jpg", (long long)(5 * i + 3));
        CHECK(k22_pack_read_rejected(p, i, &s, &why, &err) == K22_OK && !strcmp(s, want) &&
              !strcmp(why, "truncated JPEG"));
        free(s);
        free(why);
    }
    /* A multi-row read equals the single-row reads (rows 2..6). */
    float *multi = malloc(5 * 77 * E * sizeof *multi);
    if (k22_pack_for_has(use, K22_PACK_TEXT_HIDDEN)) {
        CHECK(k22_pack_read(p, K22_PACK_TEXT_HIDDEN, 2, 5, multi, &err) == K22_OK);
        float one[77 * E];
        k22_pack_read(p, K22_PACK_TEXT_HIDDEN, 5, 1, one, &err);
        CHECK(!memcmp(one, multi + 3 * 77 * E, sizeof one));
    }
    free(multi);
    CHECK(k22_pack_read(p, K22_PACK_IMAGE_EMBEDS, n - 1, 2, r.ie, &err) == K22_ERR_ARG);
    k22_pack_close(p);
}

/* Dataset contents of two packs are equal (every dataset, as stored), counts included. */
static void check_same(const char *a, const char *b)
{
    k22_pack *p = NULL, *q = NULL;
    k22_err err;
    CHECK(k22_pack_open(a, &p, &err) == K22_OK);
    CHECK(k22_pack_open(b, &q, &err) == K22_OK);
    if (!p || !q) goto out;
    CHECK(k22_pack_rows(p) == k22_pack_rows(q) && k22_pack_rejected(p) == k22_pack_rejected(q));
    int64_t n = k22_pack_rows(p), bad = 0;
    for (int f = K22_PACK_INPUT_IDS; f < K22_PACK_FIELD_COUNT; f++) {
        size_t bytes = (size_t)(n * k22_pack_row_numel(k22_pack_meta_of(p), (k22_pack_field)f)) * 4;
        void *x = calloc(1, bytes), *y = calloc(1, bytes);
        k22_pack_read(p, (k22_pack_field)f, 0, n, x, &err);
        k22_pack_read(q, (k22_pack_field)f, 0, n, y, &err);
        bad += memcmp(x, y, bytes) != 0;
        free(x);
        free(y);
    }
    CHECK_MSG(bad == 0, "%lld datasets differ between the resumed and the uninterrupted pack", (long long)bad);
out:
    k22_pack_close(p);
    k22_pack_close(q);
}

static void test_kill_resume(const char *ref, const char *path)
{
    k22_pack_meta m;
    meta_init(&m, K22_PACK_FOR_BOTH, K22_DTYPE_F16);
    pid_t pid = fork();
    if (pid == 0) {
        k22_pack_writer *w = NULL;
        k22_err err;
        if (k22_pack_writer_create(path, &m, &w, &err)) _exit(3);
        feed(w, 0, NIN, 4, 14); /* commits at 4, 8, 12; inputs 12, 13 written, then killed */
        _exit(4);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK_MSG(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "the writer child was not killed (status %d)", status);
    /* The killed file is readable and holds the committed rows. */
    k22_pack *p = NULL;
    k22_err err;
    CHECK_MSG(k22_pack_open(path, &p, &err) == K22_OK, "killed pack: %s", err.msg);
    if (p) CHECK_MSG(k22_pack_rows(p) == 10 && k22_pack_rejected(p) == 2, "killed pack: %lld rows %lld rejected",
                     (long long)k22_pack_rows(p), (long long)k22_pack_rejected(p));
    if (p && k22_pack_rows(p) == 10) {
        static float th[10 * 77 * E], lat[10 * 16];
        one_row r;
        int bad = k22_pack_read(p, K22_PACK_TEXT_HIDDEN, 0, 10, th, &err) || k22_pack_read(p, K22_PACK_LATENTS, 0, 10, lat, &err);
        for (int64_t i = 0, row = 0; i < 12 && !bad; i++) {
            if (i % 5 == 3) continue;
            make_row(&r, i);
            bad |= memcmp(th + row * 77 * E, r.th, sizeof r.th) || memcmp(lat + row * 16, r.lat, sizeof r.lat);
            row++;
        }
        CHECK_MSG(!bad, "killed pack: committed rows differ from what was written");
    }
    k22_pack_close(p);
    /* A resume with other settings is refused, naming the difference. */
    k22_pack_meta other = m;
    other.resolution = 32;
    k22_pack_writer *w = NULL;
    int64_t rows = -1, inputs = -1;
    CHECK(k22_pack_writer_resume(path, &other, &w, &rows, &inputs, &err) == K22_ERR_ARG && strstr(err.msg, "resolution 16"));
    other = m;
    other.models[1].sha256[3] = 'c';
    CHECK(k22_pack_writer_resume(path, &other, &w, &rows, &inputs, &err) == K22_ERR_ARG && strstr(err.msg, "movq"));
    k22_status st = k22_pack_writer_resume(path, &m, &w, &rows, &inputs, &err);
    CHECK_MSG(st == K22_OK, "resume: %s", err.msg);
    if (st) return;
    CHECK_MSG(rows == 10 && inputs == 12, "resume at rows %lld inputs %lld, expected 10, 12", (long long)rows, (long long)inputs);
    CHECK(feed(w, inputs, NIN, 4, -1) == 0);
    CHECK(k22_pack_writer_close(w, &err) == K22_OK);
    check_contents(path, K22_PACK_FOR_BOTH, "resumed f16");
    check_same(ref, path);
}

/* ---- malformed files: each edit of a good pack must be refused with `want` in the message */

typedef void (*edit_fn)(hid_t f);
static void e_del_latents(hid_t f) { H5Ldelete(f, "latents", H5P_DEFAULT); }
static void e_del_attr(hid_t f) { H5Adelete(f, "embed_dim"); }
static void set_i64(hid_t f, const char *name, int64_t v)
{
    hid_t a = H5Aopen(f, name, H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_INT64, &v);
    H5Aclose(a);
}
static void e_rows_too_many(hid_t f) { set_i64(f, "rows_committed", 1000); set_i64(f, "inputs_committed", 2000); }
static void e_version(hid_t f) { set_i64(f, "format_version", 3); }
static void e_neg(hid_t f) { set_i64(f, "rejected_committed", -5); }
static void replace(hid_t f, const char *name, hid_t type, int rank, const hsize_t *d)
{
    H5Ldelete(f, name, H5P_DEFAULT);
    hid_t s = H5Screate_simple(rank, d, NULL);
    hid_t ds = H5Dcreate2(f, name, type, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dclose(ds);
    H5Sclose(s);
}
static void e_shape(hid_t f)
{
    hsize_t d[3] = {19, 77, E + 1};
    replace(f, "text_hidden", H5T_IEEE_F32LE, 3, d);
}
static void e_rank(hid_t f)
{
    hsize_t d[2] = {19, 4 * 2 * 2};
    replace(f, "latents", H5T_IEEE_F32LE, 2, d);
}
static void e_dtype(hid_t f)
{
    hsize_t d[2] = {19, E};
    replace(f, "image_embeds", H5T_IEEE_F64LE, 2, d);
}
static void e_ids(hid_t f)
{
    hsize_t d[2] = {19, 77};
    replace(f, "input_ids", H5T_STD_I64LE, 2, d);
}
static void e_caption(hid_t f)
{
    hsize_t d[1] = {19};
    replace(f, "caption", H5T_STD_I32LE, 1, d);
}

static void check_refused(const char *good, const char *path, edit_fn fn, const char *want)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "cp %s %s", good, path);
    CHECK(system(cmd) == 0);
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    fn(f);
    H5Fclose(f);
    k22_pack *p = NULL;
    k22_err err;
    k22_err_clear(&err);
    k22_status st = k22_pack_open(path, &p, &err);
    CHECK_MSG(st != K22_OK && strstr(err.msg, want), "edit expecting '%s': status %d, message '%s'", want, st, err.msg);
    k22_pack_close(p);
}

static void write_bytes(const char *path, const void *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (n) fwrite(b, 1, n, f);
    fclose(f);
}

static void test_malformed(const char *good)
{
    char path[256];
    snprintf(path, sizeof path, "%s/bad.h5", dir);
    check_refused(good, path, e_del_latents, "dataset 'latents' missing");
    check_refused(good, path, e_del_attr, "attribute 'embed_dim' missing");
    check_refused(good, path, e_rows_too_many, "holds 19 rows but 1000 are committed");
    check_refused(good, path, e_version, "pack format version 3, this k22 reads 1..2");
    check_refused(good, path, e_neg, "'rejected_committed' is -5");
    check_refused(good, path, e_shape, "dataset 'text_hidden' has shape (19, 77, 9), the attributes say (N, 77, 8)");
    check_refused(good, path, e_rank, "dataset 'latents' has shape (19, 16), the attributes say (N, 4, 2, 2)");
    check_refused(good, path, e_dtype, "dataset 'image_embeds' stores floats of 8 bytes, expected IEEE fp16");
    check_refused(good, path, e_ids, "dataset 'input_ids' stores integers of 8 bytes, expected int32");
    check_refused(good, path, e_caption, "dataset 'caption' stores integers");
    /* Truncations of the good file at several points, an empty file and a non-HDF5 file. */
    size_t len = 0;
    char *bytes = NULL;
    FILE *f = fopen(good, "rb");
    if (f) {
        fseek(f, 0, SEEK_END);
        len = (size_t)ftell(f);
        fseek(f, 0, SEEK_SET);
        bytes = malloc(len);
        len = fread(bytes, 1, len, f);
        fclose(f);
    }
    int refused = 0, tried = 0;
    for (size_t cut = 8; bytes && cut < len; cut = cut * 3 / 2 + 100) {
        write_bytes(path, bytes, cut);
        k22_pack *p = NULL;
        k22_err err;
        tried++;
        k22_status st = k22_pack_open(path, &p, &err);
        /* A cut past the metadata may still open: then reads must fail cleanly, not crash. */
        if (st) refused++;
        else {
            float x[77 * E];
            for (int64_t r = 0; r < k22_pack_rows(p); r++) k22_pack_read(p, K22_PACK_TEXT_HIDDEN, r, 1, x, &err);
        }
        k22_pack_close(p);
    }
    printf("truncations: %d of %d refused at open\n", refused, tried);
    CHECK(tried > 5 && refused > 0);
    free(bytes);
    k22_pack *p = NULL;
    k22_err err;
    write_bytes(path, "", 0);
    CHECK(k22_pack_open(path, &p, &err) == K22_ERR_FORMAT && strstr(err.msg, "not an HDF5 file"));
    write_bytes(path, "{\"not\": \"hdf5\"}", 15);
    CHECK(k22_pack_open(path, &p, &err) == K22_ERR_FORMAT && strstr(err.msg, "not an HDF5 file"));
    CHECK(k22_pack_open("/nonexistent/x.h5", &p, &err) != K22_OK);
}

static void test_compat(const char *path)
{
    k22_pack *p = NULL;
    k22_err err;
    if (k22_pack_open(path, &p, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        return;
    }
    char sha[65];
    memset(sha, 'b', 64);
    sha[64] = 0;
    k22_pack_want ok = {K22_PACK_FOR_DECODER, E, RES, 4, sha, 8};
    CHECK(k22_pack_check_compatible(p, &ok, &err) == K22_OK);
    k22_pack_want bad = {K22_PACK_FOR_DECODER, 1280, 768, 4, "0123", 0};
    CHECK(k22_pack_check_compatible(p, &bad, &err) == K22_ERR_ARG && strstr(err.msg, "embedding dim 8 in the pack, the model has 1280") &&
          strstr(err.msg, "resolution 16 in the pack (latents 2x2), the run wants 768 (latents 96x96)") &&
          strstr(err.msg, "sha256 0123"));
    k22_pack_close(p);
    char dpath[256];
    snprintf(dpath, sizeof dpath, "%s/dec.h5", dir);
    CHECK(write_full(dpath, K22_PACK_FOR_DECODER, K22_DTYPE_F32) == 0);
    check_contents(dpath, K22_PACK_FOR_DECODER, "decoder-only f32");
    CHECK(k22_pack_open(dpath, &p, &err) == K22_OK);
    k22_pack_want prior = {K22_PACK_FOR_PRIOR, E, 0, 0, NULL, 0};
    CHECK(p && k22_pack_check_compatible(p, &prior, &err) == K22_ERR_ARG &&
          strstr(err.msg, "the pack is for decoder but this stage needs prior"));
    float x[E];
    CHECK(p && k22_pack_read(p, K22_PACK_TEXT_EMBEDS, 0, 1, x, &err) == K22_ERR_ARG);
    k22_pack_close(p);
}

static void test_f16_rounding(void)
{
    char path[256];
    snprintf(path, sizeof path, "%s/round.h5", dir);
    k22_pack_meta m;
    meta_init(&m, K22_PACK_FOR_DECODER, K22_DTYPE_F16);
    m.n_models = 0;
    enum { N = 3 };
    float ie[N * E], lat[N * 16], got[N * 16], want[N * 16];
    k22_test_fill(ie, N * E, 1, -3, 3);
    k22_test_fill(lat, N * 16, 2, -70000, 70000); /* includes values past fp16's max: inf */
    lat[0] = 1e-6f; /* subnormal in fp16 */
    const char *caps[N] = {"", "x", "y"}, *srcs[N] = {"a", "b", "c"};
    k22_pack_batch b = {caps, srcs, NULL, NULL, NULL, NULL, ie, lat};
    k22_pack_writer *w = NULL;
    k22_err err;
    CHECK(k22_pack_writer_create(path, &m, &w, &err) == K22_OK);
    k22_pack_meta badm = m;
    k22_pack_writer *w2 = NULL;
    badm.resolution = 20;
    CHECK(k22_pack_writer_create(path, &badm, &w2, &err) == K22_ERR_ARG && w2 == NULL);
    CHECK(k22_pack_writer_create("/nonexistent/dir/p.h5", &m, &w2, &err) == K22_ERR_IO && w2 == NULL);
    k22_pack_batch nolat = b;
    nolat.latents = NULL;
    CHECK(k22_pack_writer_append(w, &nolat, N, &err) == K22_ERR_ARG && strstr(err.msg, "no 'latents' rows"));
    CHECK(k22_pack_writer_append(w, &b, N, &err) == K22_OK);
    CHECK(k22_pack_writer_commit(w, N - 1, &err) == K22_ERR_ARG); /* fewer inputs than rows */
    CHECK(k22_pack_writer_commit(w, N, &err) == K22_OK);
    k22_pack_writer_close(w, &err);
    k22_pack *p = NULL;
    CHECK(k22_pack_open(path, &p, &err) == K22_OK);
    if (!p) return;
    CHECK(k22_pack_read(p, K22_PACK_LATENTS, 0, N, got, &err) == K22_OK);
    for (int i = 0; i < N * 16; i++) want[i] = k22_f16_to_f32(k22_f32_to_f16(lat[i]));
    /* bitwise: the stored half is the round-to-nearest-even of the input, widened exactly */
    CHECK_MSG(!memcmp(got, want, sizeof got), "fp16 latents differ from k22's own f16 rounding");
    char *c[N] = {0};
    CHECK(k22_pack_read_strings(p, K22_PACK_CAPTION, 0, N, c, &err) == K22_OK && c[0] && !strcmp(c[0], "") && !strcmp(c[2], "y"));
    for (int i = 0; i < N; i++) free(c[i]);
    k22_pack_close(p);
}

/* `k22 inspect PACK` (K22_BIN, set by CTest) prints the description and exits 0; a damaged
 * pack exits 1 naming the dataset. */
static void test_inspect_cli(const char *path)
{
    const char *bin = getenv("K22_BIN");
    if (!bin) {
        printf("K22_BIN unset: k22 inspect not checked\n");
        return;
    }
    char cmd[1024], out[16384];
    snprintf(cmd, sizeof cmd, "%s inspect %s 2>&1", bin, path);
    FILE *p = popen(cmd, "r");
    size_t n = p ? fread(out, 1, sizeof out - 1, p) : 0;
    out[n] = '\0';
    int status = p ? pclose(p) : -1;
    CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0 && strstr(out, ": 19 rows, 4 rejected") &&
                  strstr(out, "dataset text_hidden      (19, 77, 8)") && strstr(out, "rejected img_0018.jpg: truncated JPEG") &&
                  strstr(out, "source model movq") && strstr(out, "dtype F16") &&
                  strstr(out, "format_version 2") && strstr(out, "latent_factor 8  latents 4x2x2"),
              "k22 inspect output:\n%s", out);
    char bad[256];
    snprintf(bad, sizeof bad, "%s/bad.h5", dir);
    check_refused(path, bad, e_shape, "text_hidden");
    snprintf(cmd, sizeof cmd, "%s inspect %s 2>&1", bin, bad);
    p = popen(cmd, "r");
    n = p ? fread(out, 1, sizeof out - 1, p) : 0;
    out[n] = '\0';
    status = p ? pclose(p) : -1;
    CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 1 && strstr(out, "dataset 'text_hidden' has shape"),
              "k22 inspect of a damaged pack:\n%s", out);
}

/* ---- latent factor (format 2) and format 1 ---- */

enum { FN = 5 }; /* rows of the factor packs */

/* A decoder-only f32 pack of FN rows at RES with MoVQ factor f (0: the writer's default). */
static int write_factor(const char *path, int f)
{
    k22_pack_meta m;
    meta_init(&m, K22_PACK_FOR_DECODER, K22_DTYPE_F32);
    m.latent_factor = f;
    int64_t L = k22_pack_row_numel(&m, K22_PACK_LATENTS);
    float *lat = malloc((size_t)(FN * L) * sizeof *lat), ie[FN * E];
    const char *caps[FN] = {"a", "b", "c", "d", "e"}, *srcs[FN] = {"1", "2", "3", "4", "5"};
    for (int64_t k = 0; k < FN * L; k++) lat[k] = val(k / L, 7, k % L);
    for (int k = 0; k < FN * E; k++) ie[k] = val(k / E, 6, k % E);
    k22_pack_batch b = {caps, srcs, NULL, NULL, NULL, NULL, ie, lat};
    k22_pack_writer *w = NULL;
    k22_err err;
    int rc = k22_pack_writer_create(path, &m, &w, &err) || k22_pack_writer_append(w, &b, FN, &err) ||
             k22_pack_writer_commit(w, FN, &err) || k22_pack_writer_close(w, &err);
    if (rc) fprintf(stderr, "write_factor %d: %s\n", f, err.msg);
    free(lat);
    return rc;
}

static int64_t attr_i64(const char *path, const char *name)
{
    int64_t v = -1;
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t a = H5Aexists(f, name) > 0 ? H5Aopen(f, name, H5P_DEFAULT) : -1;
    if (a >= 0) H5Aread(a, H5T_NATIVE_INT64, &v), H5Aclose(a);
    H5Fclose(f);
    return v;
}

/* Opens path, expects factor f, format version fv and latents (FN, 4, RES/f, RES/f) equal to
 * what write_factor wrote (exact: integers in fp32). */
static void check_factor(const char *path, int f, int fv, const char *what)
{
    k22_pack *p = NULL;
    k22_err err;
    if (k22_pack_open(path, &p, &err)) {
        CHECK_MSG(0, "%s: %s", what, err.msg);
        return;
    }
    const k22_pack_meta *m = k22_pack_meta_of(p);
    int64_t s = RES / f, L = 4 * s * s;
    CHECK_MSG(m->latent_factor == f && m->format_version == fv && k22_pack_row_numel(m, K22_PACK_LATENTS) == L,
              "%s: latent_factor %d format %d numel %lld, want %d %d %lld", what, m->latent_factor, m->format_version,
              (long long)k22_pack_row_numel(m, K22_PACK_LATENTS), f, fv, (long long)L);
    float *got = calloc((size_t)(FN * L), sizeof *got);
    CHECK(k22_pack_read(p, K22_PACK_LATENTS, 0, FN, got, &err) == K22_OK);
    int bad = 0;
    for (int64_t k = 0; k < FN * L; k++) bad += got[k] != val(k / L, 7, k % L);
    CHECK_MSG(bad == 0, "%s: %d latent values differ", what, bad);
    free(got);
    k22_pack_close(p);
    /* the file itself: latents dataset (FN, 4, s, s), latent_size s */
    hid_t fl = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT), ds = H5Dopen2(fl, "latents", H5P_DEFAULT);
    hid_t sp = H5Dget_space(ds);
    hsize_t d[4] = {0};
    CHECK(H5Sget_simple_extent_ndims(sp) == 4);
    H5Sget_simple_extent_dims(sp, d, NULL);
    CHECK_MSG(d[0] == FN && d[1] == 4 && d[2] == (hsize_t)s && d[3] == (hsize_t)s, "%s: latents (%llu, %llu, %llu, %llu)",
              what, (unsigned long long)d[0], (unsigned long long)d[1], (unsigned long long)d[2], (unsigned long long)d[3]);
    H5Sclose(sp), H5Dclose(ds), H5Fclose(fl);
    CHECK(attr_i64(path, "latent_size") == s);
}

static void e_to_v1(hid_t f) { set_i64(f, "format_version", 1); H5Adelete(f, "latent_factor"); }
static void e_del_factor(hid_t f) { H5Adelete(f, "latent_factor"); }
static void e_lsize(hid_t f) { set_i64(f, "latent_size", 5); }
static void e_factor3(hid_t f) { set_i64(f, "latent_factor", 3); }
static void e_factor32(hid_t f) { set_i64(f, "latent_factor", 32); set_i64(f, "latent_size", 0); }

static void copy_edit(const char *from, const char *to, edit_fn fn)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "cp %s %s", from, to);
    CHECK(system(cmd) == 0);
    hid_t f = H5Fopen(to, H5F_ACC_RDWR, H5P_DEFAULT);
    fn(f);
    H5Fclose(f);
}

static void test_factor(void)
{
    char p2[256], p8[256], p0[256], v1[256], bad[256];
    snprintf(p2, sizeof p2, "%s/f2.h5", dir);
    snprintf(p8, sizeof p8, "%s/f8.h5", dir);
    snprintf(p0, sizeof p0, "%s/f0.h5", dir);
    snprintf(v1, sizeof v1, "%s/v1.h5", dir);
    snprintf(bad, sizeof bad, "%s/fbad.h5", dir);
    CHECK(write_factor(p2, 2) == 0 && write_factor(p8, 8) == 0 && write_factor(p0, 0) == 0);
    check_factor(p2, 2, 2, "factor 2");
    check_factor(p8, 8, 2, "factor 8");
    check_factor(p0, 8, 2, "factor 0 (writer default 8)");
    CHECK(attr_i64(p2, "latent_factor") == 2 && attr_i64(p0, "latent_factor") == 8 && attr_i64(p2, "format_version") == 2);
    /* format 1: the same bytes without latent_factor open as factor 8 */
    copy_edit(p8, v1, e_to_v1);
    CHECK(attr_i64(v1, "latent_factor") == -1 && attr_i64(v1, "format_version") == 1);
    check_factor(v1, 8, 1, "format 1");
    /* a format 1 file whose latents are not at r/8 */
    check_refused(p2, bad, e_to_v1, "attribute 'latent_size' is 8 but resolution 16 / latent_factor 8 (implied by "
                                    "format 1) gives 2");
    check_refused(p2, bad, e_del_factor, "attribute 'latent_factor' missing");
    check_refused(p2, bad, e_lsize, "attribute 'latent_size' is 5 but resolution 16 / latent_factor 2 gives 8");
    check_refused(p2, bad, e_factor3, "attribute 'latent_factor' is 3, not a power of two");
    check_refused(p2, bad, e_factor32, "attribute 'resolution' is 16, not a multiple of latent_factor 32");
    /* writer arguments */
    k22_pack_meta m;
    meta_init(&m, K22_PACK_FOR_DECODER, K22_DTYPE_F32);
    k22_pack_writer *w = NULL;
    k22_err err;
    m.latent_factor = 3;
    CHECK(k22_pack_writer_create(bad, &m, &w, &err) == K22_ERR_ARG && !w && strstr(err.msg, "latent_factor 3"));
    m.latent_factor = 32;
    CHECK(k22_pack_writer_create(bad, &m, &w, &err) == K22_ERR_ARG && !w &&
          strstr(err.msg, "resolution 16 is not a multiple of latent_factor 32"));
    /* resume with another factor names both */
    int64_t rows = 0, inputs = 0;
    m.latent_factor = 8;
    CHECK(k22_pack_writer_resume(p2, &m, &w, &rows, &inputs, &err) == K22_ERR_ARG && !w &&
          strstr(err.msg, "latent_factor 2 in the pack, 8 in this run"));
    m.latent_factor = 2;
    CHECK(k22_pack_writer_resume(p2, &m, &w, &rows, &inputs, &err) == K22_OK && rows == FN && inputs == FN);
    CHECK(k22_pack_writer_close(w, &err) == K22_OK);
    /* compatibility: the factor is checked for the decoder, named with both values */
    k22_pack *p = NULL;
    CHECK(k22_pack_open(p2, &p, &err) == K22_OK);
    if (!p) return;
    k22_pack_want ok = {.need = K22_PACK_FOR_DECODER, .resolution = RES, .latent_factor = 2};
    CHECK(k22_pack_check_compatible(p, &ok, &err) == K22_OK);
    k22_pack_want other = {.need = K22_PACK_FOR_DECODER, .resolution = 32, .latent_factor = 8};
    CHECK_MSG(k22_pack_check_compatible(p, &other, &err) == K22_ERR_ARG &&
                  strstr(err.msg, "latent_factor 2 in the pack (latents at resolution / 2), the model's MoVQ has 8") &&
                  strstr(err.msg, "resolution 16 in the pack (latents 8x8), the run wants 32 (latents 4x4)"),
              "compat message: %s", err.msg);
    k22_pack_want unchecked = {.need = K22_PACK_FOR_DECODER};
    CHECK(k22_pack_check_compatible(p, &unchecked, &err) == K22_OK);
    k22_pack_close(p);
}

int main(void)
{
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    char ref[256], ref16[256], res[256];
    snprintf(ref, sizeof ref, "%s/ref32.h5", dir);
    snprintf(ref16, sizeof ref16, "%s/ref16.h5", dir);
    snprintf(res, sizeof res, "%s/resumed16.h5", dir);
    CHECK(write_full(ref, K22_PACK_FOR_BOTH, K22_DTYPE_F32) == 0);
    CHECK(write_full(ref16, K22_PACK_FOR_BOTH, K22_DTYPE_F16) == 0);
    check_contents(ref, K22_PACK_FOR_BOTH, "f32");
    check_contents(ref16, K22_PACK_FOR_BOTH, "f16");
    CHECK(k22_pack_describe(ref16, NULL) == K22_OK);
    test_kill_resume(ref16, res);
    test_malformed(ref16);
    test_inspect_cli(ref16);
    test_compat(ref16);
    test_f16_rounding();
    test_factor();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", dir);
    H5close();
    return k22_test_finish("test_pack_h5");
}
