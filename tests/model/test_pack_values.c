/* test_pack_values.c: `k22 pack` stores what the PyTorch reference computes. Rebuilds the inputs
 * of tools/reference/pack_ref.py (tiny prior and decoder pipelines with the 4-block MoVQ of
 * tests/fixtures/pack/movq8, a `k22 synth --n 6 --seed 3` folder), packs them at resolution 64
 * on both CPU backends (fp32) and once as fp16, reads the packs back through pack.h and compares
 * every dataset with tests/fixtures/pack/expected.safetensors; plus a canary. */
#include "harness/harness.h"

#include "k22/pack.h"
#include "k22/safetensors.h"

#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXPECTED "tests/fixtures/pack/expected.safetensors"
/* f32 encoders whose summation order differs from torch's (blocked GEMMs): a few ulps of the
 * magnitudes summed, as in test_clip / test_movq: 1e-5 of the tensor's largest value plus 1e-5
 * relative. fp16 storage rounds each value to 11 significant bits: 2^-11 relative. */
#define TOL_REL 1e-5
#define TOL_ABS 1e-5
#define TOL_F16 (1.0 / 2048)

static int run(const char *cmd)
{
    int rc = system(cmd);
    CHECK_MSG(rc == 0, "command failed (%d): %s", rc, cmd);
    return rc;
}

static double maxabs(const float *x, int64_t n)
{
    double m = 0;
    for (int64_t i = 0; i < n; i++) m = fmax(m, fabs((double)x[i]));
    return m;
}

static void compare(const char *tag, k22_pack *p, const k22_st_file *ref, double rtol_extra)
{
    static const struct { k22_pack_field f; const char *name; } fields[] = {
        {K22_PACK_TEXT_HIDDEN, "text_hidden"}, {K22_PACK_TEXT_EMBEDS, "text_embeds"},
        {K22_PACK_IMAGE_EMBEDS, "image_embeds"}, {K22_PACK_LATENTS, "latents"},
    };
    k22_err err;
    int64_t n = k22_pack_rows(p);
    CHECK_MSG(n == 6, "%s: %lld rows, want 6", tag, (long long)n);
    if (n != 6) return;
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        const k22_st_tensor *t = k22_st_find(ref, fields[i].name);
        int64_t numel = k22_pack_row_numel(k22_pack_meta_of(p), fields[i].f) * n;
        CHECK_MSG(t && t->dtype == K22_DTYPE_F32 && t->nbytes == (size_t)numel * 4, "%s: %s shape", tag,
                  fields[i].name);
        if (!t || t->nbytes != (size_t)numel * 4) continue;
        float *got = malloc((size_t)numel * 4), *want = malloc((size_t)numel * 4);
        memcpy(want, t->data, t->nbytes);
        CHECK(k22_pack_read(p, fields[i].f, 0, n, got, &err) == K22_OK);
        char what[128];
        snprintf(what, sizeof what, "%s %s", tag, fields[i].name);
        double m = maxabs(want, numel);
        k22_check_close(what, got, want, numel, TOL_ABS * m + rtol_extra * m, TOL_REL + rtol_extra);
        free(got), free(want);
    }
    int32_t ids[6 * 77];
    uint8_t mask[6 * 77];
    CHECK(k22_pack_read(p, K22_PACK_INPUT_IDS, 0, 6, ids, &err) == K22_OK);
    CHECK(k22_pack_read(p, K22_PACK_ATTENTION_MASK, 0, 6, mask, &err) == K22_OK);
    const k22_st_tensor *ti = k22_st_find(ref, "input_ids"), *tm = k22_st_find(ref, "attention_mask");
    CHECK_MSG(ti && !memcmp(ids, ti->data, sizeof ids), "%s: input_ids differ from CLIPTokenizer's", tag);
    CHECK_MSG(tm && !memcmp(mask, tm->data, sizeof mask), "%s: attention_mask differs", tag);
}

/* The comparison must notice one value moved by 1e-3 relative. */
static void canary(const k22_st_file *ref)
{
    const k22_st_tensor *t = k22_st_find(ref, "latents");
    if (!t) return;
    int64_t n = (int64_t)(t->nbytes / 4);
    /* safetensors data need not be 4-byte aligned: work on copies */
    float *got = malloc(t->nbytes), *want = malloc(t->nbytes);
    memcpy(got, t->data, t->nbytes);
    memcpy(want, t->data, t->nbytes);
    got[n / 3] += 1e-3f * (fabsf(got[n / 3]) + 1e-3f);
    double m = maxabs(want, n);
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++)
        bad += fabs((double)got[i] - want[i]) > TOL_ABS * m + TOL_REL * fabs(want[i]);
    CHECK_MSG(bad == 1, "canary: a latent moved by 1e-3 went unnoticed (%lld bad)", (long long)bad);
    free(got), free(want);
}

int main(void)
{
    const char *k22 = getenv("K22_BIN");
    if (!k22) {
        fprintf(stderr, "test_pack_values: K22_BIN is not set (run through ctest)\n");
        return 1;
    }
    char bindir[1024], tmp[] = "/tmp/k22-test-pack-values-XXXXXX", cmd[4096];
    snprintf(bindir, sizeof bindir, "%s", k22);
    dirname(bindir);
    CHECK(mkdtemp(tmp) != NULL);
    /* k22 pack starts MPI, whose own allocations LeakSanitizer would report: not ours to chase
     * (the packer's own frees were checked with leaks on: every reported stack is in MPI). */
    setenv("ASAN_OPTIONS", "detect_leaks=0", 1);
    snprintf(cmd, sizeof cmd,
             "set -e; K=%s; T=%s; $K init prior --size tiny --seed 0 --out $T/prior >/dev/null 2>&1; "
             "$K init decoder --size tiny --seed 0 --out $T/dec >/dev/null 2>&1; rm -rf $T/dec/movq; "
             "%s/model_test_movq --write-weights tests/fixtures/pack/movq8 0 $T/dec/movq >/dev/null; "
             "$K synth --n 6 --seed 3 --min_size 64 --max_size 200 --out $T/img 2>/dev/null",
             k22, tmp, bindir);
    if (run(cmd)) goto out;
    k22_st_file *ref = NULL;
    k22_err err;
    CHECK(k22_st_open(EXPECTED, &ref, &err) == K22_OK);
    if (!ref) goto out;
    const char *cases[][3] = {{"cpu", "fp32", "0"}, {"cpu-ref", "fp32", "0"}, {"cpu", "fp16", "1"}};
    for (int c = 0; c < 3; c++) {
        snprintf(cmd, sizeof cmd,
                 "%s pack --train_data_dir %s/img --prior %s/prior --decoder %s/dec --resolution 64 --out %s/p%d.h5 "
                 "--device %s --pack_dtype %s --batch 4 --chunk_kib 16 --quiet",
                 k22, tmp, tmp, tmp, tmp, c, cases[c][0], cases[c][1]);
        if (run(cmd)) continue;
        char path[1100], tag[64];
        snprintf(path, sizeof path, "%s/p%d.h5", tmp, c);
        snprintf(tag, sizeof tag, "%s %s", cases[c][0], cases[c][1]);
        k22_pack *p = NULL;
        CHECK_MSG(k22_pack_open(path, &p, &err) == K22_OK, "%s", err.msg);
        if (!p) continue;
        compare(tag, p, ref, cases[c][2][0] == '1' ? TOL_F16 : 0);
        k22_pack_close(p);
    }
    canary(ref);
    k22_st_close(ref);
out:
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    if (system(cmd)) fprintf(stderr, "test_pack_values: could not remove %s\n", tmp);
    return k22_test_finish("test_pack_values");
}
