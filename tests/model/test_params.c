/* test_params.c: every parameter table equals the upstream state dict. For each fixture under
 * tests/fixtures/configs/{tiny,full}/<component>/, config.json (written by diffusers /
 * transformers) goes through k22_config_read and k22_params_build, and the table's names,
 * shapes, order and element count are compared with keys.json (the state dict of the same
 * class instantiated by tools/reference/make_param_fixtures.py). Every mismatch is printed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness/harness.h"
#include "k22/config.h"
#include "k22/json.h"

static const char *const components[] = {"prior", "unet", "movq", "text_encoder", "image_encoder"};

/* Compares one table with keys.json; returns the number of mismatching entries. */
static int compare(const char *where, const k22_params *ps, const json_t *keys)
{
    int bad = 0;
    size_t n = json_array_size(keys);
    if ((size_t)ps->count != n) {
        fprintf(stderr, "%s: k22 has %d tensors, upstream %zu\n", where, ps->count, n);
        bad++;
    }
    for (size_t i = 0; i < n && i < (size_t)ps->count; i++) {
        const json_t *row = json_array_get(keys, i);
        const char *name = json_string_value(json_array_get(row, 0));
        const json_t *shape = json_array_get(row, 1);
        const k22_param *p = &ps->items[i];
        int same = name && strcmp(name, p->name) == 0 && json_array_size(shape) == (size_t)p->ndim;
        for (int d = 0; same && d < p->ndim; d++)
            same = json_integer_value(json_array_get(shape, (size_t)d)) == p->shape[d];
        if (same) continue;
        char up[160], mine[160];
        k22_json_value_text(shape, up, sizeof up);
        int k = snprintf(mine, sizeof mine, "[");
        for (int d = 0; d < p->ndim && k > 0 && (size_t)k < sizeof mine; d++)
            k += snprintf(mine + k, sizeof mine - (size_t)k, "%s%lld", d ? "," : "", (long long)p->shape[d]);
        if (k > 0 && (size_t)k < sizeof mine) snprintf(mine + k, sizeof mine - (size_t)k, "]");
        if (bad < 20)
            fprintf(stderr, "%s: #%zu upstream %s %s, k22 %s %s\n", where, i, name ? name : "?", up,
                    p->name, mine);
        bad++;
    }
    return bad;
}

static void check_fixture(const char *size, const char *comp)
{
    char cfg_path[256], keys_path[256], where[64];
    snprintf(cfg_path, sizeof cfg_path, "tests/fixtures/configs/%s/%s/config.json", size, comp);
    snprintf(keys_path, sizeof keys_path, "tests/fixtures/configs/%s/%s/keys.json", size, comp);
    snprintf(where, sizeof where, "%s/%s", size, comp);
    k22_model_config cfg;
    k22_params ps;
    k22_err err = {0};
    json_t *ref = NULL;
    k22_params_init(&ps);
    k22_status st = k22_config_read(cfg_path, &cfg, &err);
    CHECK_MSG(st == K22_OK, "%s", err.msg);
    if (st == K22_OK) st = k22_params_build(&cfg, &ps, &err);
    CHECK_MSG(st == K22_OK, "%s: %s", where, err.msg);
    if (st == K22_OK) st = k22_json_load_file(keys_path, 64u << 20, &ref, &err);
    CHECK_MSG(st == K22_OK, "%s", err.msg);
    if (st != K22_OK) goto out;
    int64_t numel = 0;
    CHECK(k22_json_get_i64(ref, keys_path, "numel", 0, INT64_MAX, &numel, &err) == K22_OK);
    int bad = compare(where, &ps, json_object_get(ref, "keys"));
    CHECK_MSG(bad == 0, "%s: %d tensors differ from the upstream state dict", where, bad);
    CHECK_MSG((int64_t)k22_params_numel(&ps) == numel, "%s: %zu elements, upstream %lld", where,
              k22_params_numel(&ps), (long long)numel);
    CHECK(ps.total >= k22_params_numel(&ps) && ps.total % 16 < 16);
    printf("%-20s %4d tensors %10.2fM parameters\n", where, ps.count, (double)k22_params_numel(&ps) / 1e6);
    /* Only the prior's clip_mean/std are frozen. */
    int frozen = 0;
    for (int i = 0; i < ps.count; i++) frozen += !ps.items[i].trainable;
    if (cfg.kind == K22_MODEL_PRIOR) {
        const k22_param *m = k22_params_find(&ps, "clip_mean"), *s = k22_params_find(&ps, "clip_std");
        CHECK(frozen == 2 && m && s && !m->trainable && !s->trainable);
    } else {
        CHECK_MSG(frozen == 0, "%s: %d frozen tensors", where, frozen);
    }
out:
    json_decref(ref);
    k22_params_free(&ps);
}

/* Full sizes must give the counts of reference-math.md's addendum (in millions, 2 decimals). */
static void check_full_counts(void)
{
    const double want[] = {1026.23, 1253.06, 67.83, 694.66, 1844.91};
    for (int k = 0; k < K22_MODEL_COUNT; k++) {
        k22_model_config cfg;
        k22_params ps;
        k22_err err = {0};
        CHECK(k22_config_preset((k22_model_kind)k, "full", &cfg, &err) == K22_OK);
        CHECK(k22_params_build(&cfg, &ps, &err) == K22_OK);
        double m = (double)k22_params_numel(&ps) / 1e6;
        CHECK_MSG(m > want[k] - 0.005 && m < want[k] + 0.005, "%s: %.4fM, want %.2fM",
                  k22_model_class_name((k22_model_kind)k), m, want[k]);
        k22_params_free(&ps);
    }
}

/* A config asking for an absurd model is refused with an error, not a crash. */
static void check_caps(void)
{
    k22_model_config cfg;
    k22_params ps;
    k22_err err = {0};
    CHECK(k22_config_preset(K22_MODEL_CLIP_TEXT, "tiny", &cfg, &err) == K22_OK);
    cfg.u.clip_text.vocab_size = 1 << 30;
    cfg.u.clip_text.hidden_size = 1 << 30;
    CHECK(k22_params_build(&cfg, &ps, &err) == K22_ERR_NOMEM);
    CHECK(ps.count == 0 && ps.items == NULL);
    CHECK(k22_config_preset(K22_MODEL_PRIOR, "tiny", &cfg, &err) == K22_OK);
    cfg.u.prior.num_layers = 1 << 30; /* and a (2^20)^2 attention matrix: stops at once */
    cfg.u.prior.num_attention_heads = 1 << 6;
    cfg.u.prior.attention_head_dim = 1 << 14;
    CHECK(k22_params_build(&cfg, &ps, &err) == K22_ERR_NOMEM);
    CHECK(strstr(err.msg, "PriorTransformer") != NULL);
}

static int by_offset(const void *a, const void *b)
{
    size_t x = ((const k22_param *)a)->offset, y = ((const k22_param *)b)->offset;
    return x < y ? -1 : x > y;
}

static int ends_with(const char *s, const char *suf)
{
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && !strcmp(s + n - m, suf);
}

/* Offsets: not overlapping, inside the buffer, 16-float aligned but for the stacked attention
 * projections (8-float aligned, each q, k, v weight right after the one before, the biases
 * likewise); the table in the upstream order all the same. */
static void check_layout(k22_model_kind kind, const char *q)
{
    k22_model_config cfg;
    k22_params ps;
    k22_err err = {0};
    CHECK(k22_config_preset(kind, "tiny", &cfg, &err) == K22_OK);
    CHECK(k22_params_build(&cfg, &ps, &err) == K22_OK);
    int groups = 0;
    for (int i = 0; i < ps.count; i++) {
        const k22_param *p = &ps.items[i];
        int member = strstr(p->name, "to_q.") || strstr(p->name, "to_k.") || strstr(p->name, "to_v.");
        CHECK_MSG(p->offset % (member ? 8 : 16) == 0, "%s at %zu", p->name, p->offset);
        CHECK(k22_params_index(&ps, p->name) == i);
        if (!ends_with(p->name, q) || i + 5 >= ps.count) continue;
        /* q.weight, q.bias, k.weight, k.bias, v.weight, v.bias in the table */
        const k22_param *g = p;
        CHECK_MSG(g[2].offset == g[0].offset + g[0].numel && g[4].offset == g[2].offset + g[2].numel &&
                      g[3].offset == g[1].offset + g[1].numel && g[5].offset == g[3].offset + g[3].numel &&
                      g[1].offset >= g[4].offset + g[4].numel,
                  "%s: q, k, v not stacked", p->name);
        groups++;
    }
    CHECK_MSG(groups > 0, "%s: no stacked q, k, v", k22_model_class_name(kind));
    k22_param *s = malloc((size_t)ps.count * sizeof *s);
    memcpy(s, ps.items, (size_t)ps.count * sizeof *s);
    qsort(s, (size_t)ps.count, sizeof *s, by_offset);
    for (int i = 1; i < ps.count; i++) CHECK(s[i].offset >= s[i - 1].offset + s[i - 1].numel);
    CHECK(s[ps.count - 1].offset + s[ps.count - 1].numel == ps.total);
    free(s);
    /* stacking only saves padding (the tiny prior's width, 24, pads its biases in table order) */
    size_t t1 = k22_params_table_order_total(&ps);
    CHECK_MSG(kind == K22_MODEL_PRIOR ? t1 > ps.total : t1 >= ps.total, "%zu floats, %zu in table order",
              ps.total, t1);
    CHECK(k22_params_find(&ps, "no.such.key") == NULL);
    k22_params_alloc(&ps);
    CHECK(ps.data != NULL && ps.data[ps.total - 1] == 0.0f);
    k22_params_free(&ps);
}

/* Canary: a table built from a different config must not pass the comparison. */
static void check_canary(void)
{
    k22_model_config cfg;
    k22_params ps;
    k22_err err = {0};
    json_t *ref = NULL;
    CHECK(k22_config_preset(K22_MODEL_UNET, "tiny", &cfg, &err) == K22_OK);
    cfg.u.unet.layers_per_block = 2;
    CHECK(k22_params_build(&cfg, &ps, &err) == K22_OK);
    CHECK(k22_json_load_file("tests/fixtures/configs/tiny/unet/keys.json", 64u << 20, &ref, &err) == K22_OK);
    fprintf(stderr, "canary (expected mismatches follow):\n");
    CHECK(compare("canary", &ps, json_object_get(ref, "keys")) > 0);
    json_decref(ref);
    k22_params_free(&ps);
}

int main(void)
{
    const char *sizes[2] = {"tiny", "full"};
    for (int s = 0; s < 2; s++)
        for (int c = 0; c < 5; c++) check_fixture(sizes[s], components[c]);
    check_full_counts();
    check_caps();
    check_layout(K22_MODEL_UNET, "to_q.weight");
    check_layout(K22_MODEL_PRIOR, "attn1.to_q.weight");
    check_canary();
    return k22_test_finish("test_params");
}
