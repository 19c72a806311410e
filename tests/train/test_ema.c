/* test_ema.c: k22_ema_step against diffusers EMAModel (defaults) over 5 steps
 * (tests/fixtures/schedule/ema.safetensors): 40 trained values, 10 frozen (copied) ones.
 * Exact on both CPU backends: the same three float roundings per value as torch's
 * s.sub_(omd * (s - p)), and the decay as the same Python double. */
#include <stdlib.h>
#include <string.h>

#include "harness/fixture.h"
#include "harness/harness.h"
#include "k22/ema.h"
#include "k22/safetensors.h"

/* a (40) then b (10) of the fixture's `prefix` into dst (50). */
static int load_ab(k22_st_file *f, const char *prefix, float *dst)
{
    char key[64];
    snprintf(key, sizeof key, "%s.a", prefix);
    const float *a = k22_fx_get(f, key, K22_DTYPE_F32, 40);
    snprintf(key, sizeof key, "%s.b", prefix);
    const float *b = k22_fx_get(f, key, K22_DTYPE_F32, 10);
    if (!a || !b) return 0;
    memcpy(dst, a, 40 * sizeof(float));
    memcpy(dst + 40, b, 10 * sizeof(float));
    return 1;
}

static void run(k22_st_file *f, const k22_backend *be, int64_t nscratch)
{
    float shadow[50], param[50], ref[50], scratch[64];
    char key[64], what[128];
    k22_ema e;
    k22_ema_init(&e);
    if (!load_ab(f, "init", shadow)) return;
    for (int k = 0; k < 5; k++) {
        snprintf(key, sizeof key, "step%d.param", k);
        if (!load_ab(f, key, param)) return;
        k22_ema_step(&e, be, shadow, param, 40, 50, scratch, nscratch);
        snprintf(key, sizeof key, "step%d.shadow", k);
        if (!load_ab(f, key, ref)) return;
        snprintf(what, sizeof what, "%s chunk %lld step %d shadow", be->name, (long long)nscratch,
                 k);
        k22_check_close(what, shadow, ref, 50, 0, 0);
        snprintf(key, sizeof key, "step%d.decay", k);
        const int64_t *d = k22_fx_get(f, key, K22_DTYPE_I64, 1);
        CHECK_MSG((d && memcmp(d, &e.cur_decay, 8) == 0), "%s: decay %.17g", key, e.cur_decay);
    }
    CHECK(e.optimization_step == 5);
    /* step 1 copies (decay 0) up to rounding; step 2 uses 2/11 */
    CHECK(k22_ema_decay(&e, 1) == 0.0);
    CHECK(k22_ema_decay(&e, 2) == 2.0 / 11.0);
    CHECK(k22_ema_decay(&e, 1000000) == 0.9999);
}

int main(void)
{
    char path[512];
    k22_err err = {0};
    k22_st_file *f = NULL;
    snprintf(path, sizeof path, "%s/tests/fixtures/schedule/ema.safetensors", k22_fx_source_dir());
    if (k22_st_open(path, &f, &err) != K22_OK)
        CHECK_MSG(0, "%s (rerun tools/reference/make_schedule_fixtures.py)", err.msg);
    k22_backend *bes[2] = {k22_backend_cpu_new(1), k22_backend_cpu_new(0)};
    for (int i = 0; f && i < 2; i++) {
        run(f, bes[i], 64);
        run(f, bes[i], 7); /* chunked: 40 = 5*7 + 5 */
    }
    k22_st_close(f);
    k22_backend_free(bes[0]);
    k22_backend_free(bes[1]);
    return k22_test_finish("test_ema");
}
