/* test_lr.c: k22_lr_at against the learning rates diffusers' get_scheduler gives each optimizer
 * step when accelerate 1.15.0 drives it as the scripts do (tests/fixtures/schedule/lr.safetensors:
 * warmup 3, 12 optimizer steps, accumulation 1 and 2, world size 1 and 2, base lr 1e-4).
 * Exact: the lrs are Python doubles and k22 evaluates the same expressions in the same order. */
#include <stdlib.h>
#include <string.h>

#include "harness/fixture.h"
#include "harness/harness.h"
#include "k22/lr_schedule.h"
#include "k22/safetensors.h"

static void check_case(k22_st_file *f, k22_lr_kind kind, int ws, int ga)
{
    char key[96];
    snprintf(key, sizeof key, "%s.ws%d.ga%d", k22_lr_kind_name(kind), ws, ga);
    const k22_st_tensor *t = k22_st_find(f, key);
    int ok = t && t->dtype == K22_DTYPE_I64 && k22_shape_numel(t->ndim, t->shape) == 12;
    CHECK_MSG(ok, "fixture tensor '%s' missing or not 12 I64 values", key);
    if (!ok) return;
    k22_lr_schedule s;
    k22_err err;
    CHECK(k22_lr_schedule_init(&s, kind, 1e-4, 3, 12, ga, ws, &err) == K22_OK);
    int bad = 0;
    for (int k = 0; k < 12; k++) {
        double ref, got = k22_lr_at(&s, k);
        memcpy(&ref, (const char *)t->data + 8 * k, 8); /* float64 bits stored as I64 */
        if (memcmp(&got, &ref, 8) != 0) {
            if (!bad++) fprintf(stderr, "%s: step %d: lr %.17g, diffusers %.17g\n", key, k, got, ref);
        }
    }
    CHECK_MSG(bad == 0, "%s: %d of 12 lrs differ", key, bad);
}

static void test_parse(void)
{
    k22_lr_kind k;
    k22_err err;
    for (int i = 0; i < K22_LR_COUNT; i++) {
        CHECK(k22_lr_kind_parse(k22_lr_kind_name((k22_lr_kind)i), &k, &err) == K22_OK);
        CHECK(k == (k22_lr_kind)i);
    }
    CHECK(k22_lr_kind_parse("piecewise_constant", &k, &err) == K22_ERR_ARG);
    CHECK(strstr(err.msg, "piecewise_constant") != NULL);
    k22_lr_schedule s;
    CHECK(k22_lr_schedule_init(&s, K22_LR_LINEAR, 1e-4, 3, 12, 0, 1, &err) == K22_ERR_ARG);
    CHECK(k22_lr_schedule_init(&s, K22_LR_LINEAR, 1e-4, INT64_MAX / 2, 12, 4, 1, &err) ==
          K22_ERR_ARG);
    CHECK(k22_lr_schedule_init(&s, K22_LR_POLYNOMIAL, 1e-8, 3, 12, 1, 1, &err) == K22_ERR_ARG);
    /* the documented consequence: 2 ranks x 1 accumulation != 1 rank x 2 during warmup */
    k22_lr_schedule a, b;
    CHECK(k22_lr_schedule_init(&a, K22_LR_CONSTANT_WITH_WARMUP, 1.0, 3, 12, 1, 2, &err) == K22_OK);
    CHECK(k22_lr_schedule_init(&b, K22_LR_CONSTANT_WITH_WARMUP, 1.0, 3, 12, 2, 1, &err) == K22_OK);
    CHECK(k22_lr_at(&a, 1) == 2.0 / 3.0 && k22_lr_at(&b, 1) == 1.0 / 6.0);
    /* 3 optimizer steps on 1 rank, resumed on 2: the scheduler goes on from 3, two per step */
    CHECK(k22_lr_schedule_init(&a, K22_LR_COSINE, 1.0, 2, 12, 1, 2, &err) == K22_OK);
    a.resumed_at = 3;
    a.resumed_steps = 3;
    CHECK(k22_lr_sched_steps(&a, 5) == 7 && k22_lr_at(&a, 5) == k22_lr_lambda(&a, 7));
    CHECK(k22_lr_sched_steps(&a, 3) == 3);
}

int main(void)
{
    char path[512];
    k22_err err = {0};
    k22_st_file *f = NULL;
    snprintf(path, sizeof path, "%s/tests/fixtures/schedule/lr.safetensors", k22_fx_source_dir());
    if (k22_st_open(path, &f, &err) != K22_OK)
        CHECK_MSG(0, "%s (rerun tools/reference/make_schedule_fixtures.py --accelerate DIR)",
                  err.msg);
    for (int kind = 0; f && kind < K22_LR_COUNT; kind++)
        for (int ws = 1; ws <= 2; ws++)
            for (int ga = 1; ga <= 2; ga++) check_case(f, (k22_lr_kind)kind, ws, ga);
    test_parse();
    k22_st_close(f);
    return k22_test_finish("test_lr");
}
