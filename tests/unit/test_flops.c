/* test_flops.c: the model FLOPs counts of src/model/flops.c, against hand counts (the tiny prior
 * term by term; a one-level UNet with every layer kind) and against torch's FlopCounterMode on
 * the diffusers models for the tiny and full configs (tests/fixtures/flops/flops.json, written
 * by tools/reference/make_flops_fixtures.py). The counts are integers well under 2^53, so the
 * comparisons are exact up to double rounding of the sums (relative 1e-12). */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "harness/harness.h"
#include "k22/flops.h"

#define FIXTURES "tests/fixtures/flops/flops.json"
#define CONFIGS "tests/fixtures/configs"

static int same(double got, double want)
{
    return fabs(got - want) <= 1e-12 * fabs(want);
}

static void check_kinds(const char *what, const k22_flops *f, double lin, double conv, double attn)
{
    CHECK_MSG(same(f->linear, lin), "%s linear %.0f, want %.0f", what, f->linear, lin);
    CHECK_MSG(same(f->conv, conv), "%s conv %.0f, want %.0f", what, f->conv, conv);
    CHECK_MSG(same(f->attn, attn), "%s attn %.0f, want %.0f", what, f->attn, attn);
    CHECK_MSG(same(f->total, lin + conv + attn), "%s total %.0f", what, f->total);
}

/* The diffusers test dummy prior (D = 2 x 12 = 24, E = 32, T = 77 + 4, one layer) at B = 2:
 * time 2x(2*2*24*24), proj_in, embedding_proj and proj_to_clip 3x(2*2*32*24), the text tokens
 * 2*154*32*24; the layer's q,k,v,out 4x(2*162*24*24) and MLP 2x(2*162*24*96); attention
 * 2 products x 2*2*81*81*24. */
static void test_prior_hand(void)
{
    k22_model_config cfg;
    k22_err err;
    CHECK(k22_config_preset(K22_MODEL_PRIOR, "tiny", &cfg, &err) == K22_OK);
    double lin = 2 * 2304 + 3 * 3072 + 236544 + 4 * 186624 + 2 * 746496;
    k22_flops f = k22_flops_prior_forward(&cfg.u.prior, 2);
    check_kinds("prior tiny B=2 (hand)", &f, lin, 0, 2 * 629856);
    CHECK(same(lin, 2489856)); /* the same figure FlopCounterMode gives (printed by the script) */
}

/* A one-level UNet (SimpleCrossAttn down and up, the mid block), C = 32, TE = 128, image
 * tokens 32 x 32 wide, at B = 1 and 4x4 latents (S = 16 pixels, 32 + 16 keys):
 * convs: conv_in 2*32*16*4*9, conv_out 2*8*16*32*9, three 32->32 resnets 2x(2*32*16*32*9),
 *        two 64->32 resnets (the skips) 2*32*16*64*9 + 2*32*16*32*9 + 1x1 shortcut 2*32*16*64;
 * linears: time 32->128->128, image 32->128, image tokens 32->1024, five time_emb_proj
 *        128->64, four attentions with q,k,v,out 4x(2*16*32*32) and add_k/v 2x(2*32*32*32);
 * attention: four x 4*16*48*32. */
static void test_unet_hand(void)
{
    k22_model_config cfg;
    k22_err err;
    CHECK(k22_config_preset(K22_MODEL_UNET, "tiny", &cfg, &err) == K22_OK);
    k22_unet_config *u = &cfg.u.unet;
    u->nblocks = 1;
    u->block_out_channels[0] = 32;
    strcpy(u->down_block_types[0], "SimpleCrossAttnDownBlock2D");
    strcpy(u->up_block_types[0], "SimpleCrossAttnUpBlock2D");
    u->time_embedding_dim = 128;
    u->encoder_hid_dim = u->cross_attention_dim = 32;
    k22_flops f;
    k22_status st = k22_flops_unet_forward(u, 1, 4, 4, &f, &err);
    CHECK_MSG(st == K22_OK, "%s", err.msg);
    if (st) return;
    double conv = 36864 + 73728 + 3 * 589824 + 2 * (589824 + 294912 + 65536);
    double lin = 8192 + 32768 + 8192 + 65536 + 5 * 16384 + 4 * (4 * 32768 + 2 * 65536);
    check_kinds("unet one level B=1 4x4 (hand)", &f, lin, conv, 4 * 98304);
    /* batch and area scale the pixel terms linearly: 2 x (8x8) = 8x the pixels */
    k22_flops g;
    CHECK(k22_flops_unet_forward(u, 2, 8, 8, &g, &err) == K22_OK);
    CHECK_MSG(g.conv == 8 * f.conv, "conv %.0f vs 8 x %.0f", g.conv, f.conv);
}

static void test_errors_and_train(void)
{
    k22_model_config cfg;
    k22_err err;
    k22_flops f;
    CHECK(k22_config_preset(K22_MODEL_UNET, "tiny", &cfg, &err) == K22_OK);
    CHECK(k22_flops_unet_forward(&cfg.u.unet, 0, 16, 16, &f, &err) == K22_ERR_ARG);
    CHECK(k22_flops_unet_forward(&cfg.u.unet, 1, 15, 16, &f, &err) == K22_ERR_ARG);
    CHECK_MSG(strstr(err.msg, "15x16") != NULL, "message: %s", err.msg);
    CHECK(k22_flops_train(10) == 30);
    CHECK(k22_flops_train_hw(10, 0) == 30 && k22_flops_train_hw(10, 1) == 40);
}

static double num(json_t *o, const char *k) { return json_number_value(json_object_get(o, k)); }

/* Every case of the torch fixture, from the same config.json the script read. */
static void test_torch_fixture(void)
{
    json_error_t je;
    json_t *doc = json_load_file(FIXTURES, 0, &je);
    CHECK_MSG(doc != NULL, "%s: %s", FIXTURES, je.text);
    json_t *cases = doc ? json_object_get(doc, "cases") : NULL;
    CHECK(json_array_size(cases) >= 8);
    size_t i;
    json_t *c;
    json_array_foreach(cases, i, c) {
        const char *model = json_string_value(json_object_get(c, "model"));
        const char *size = json_string_value(json_object_get(c, "size"));
        int B = (int)num(c, "batch"), H = (int)num(c, "height"), W = (int)num(c, "width");
        char path[256], what[96];
        snprintf(path, sizeof path, CONFIGS "/%s/%s/config.json", size, model);
        snprintf(what, sizeof what, "%s %s B=%d %dx%d vs torch", model, size, B, H, W);
        k22_model_config cfg;
        k22_err err;
        k22_status st = k22_config_read(path, &cfg, &err);
        CHECK_MSG(st == K22_OK, "%s", err.msg);
        if (st) continue;
        k22_flops f = {0};
        if (!strcmp(model, "prior")) f = k22_flops_prior_forward(&cfg.u.prior, B);
        else CHECK(k22_flops_unet_forward(&cfg.u.unet, B, H, W, &f, &err) == K22_OK);
        check_kinds(what, &f, num(c, "linear"), num(c, "conv"), num(c, "attn"));
        printf("%-40s %14.0f FLOPs forward\n", what, f.total);
    }
    json_decref(doc);
}

int main(void)
{
    test_prior_hand();
    test_unet_hand();
    test_errors_and_train();
    test_torch_fixture();
    return k22_test_finish("test_flops");
}
