/* test_unet_ckpt.c: gradient checkpointing of the decoder UNet (src/model/unet.c). On the fixture
 * inputs of test_unet.c (tiny at batch 2 16x16, mid at batch 1 16x16) and on the reference and
 * fast CPU backends: the output, dx_t and every parameter gradient with checkpointing equal those
 * without bit for bit (the same ops run in the same order on the same values), also when the
 * flag flips between forward and backward (tiny); the activations kept between forward and
 * backward equal k22_unet_saved_floats and are fewer; the arena peak is lower and equals the
 * size function's arena size; on the fast backend under bf16 and fp16, 16-bit GEMM inputs
 * (the resnets' conv inputs, the attention blocks' tokens, q, k, v and merged heads) change no
 * bit and take less. Prints the figures, and the size functions' figures for the full-size UNet
 * at batch 1, 96x96 latents (a shapes-only model: computed, not run). */
#include "grad_watch.h"
#include "model_fixture.h"

#include "k22/flops.h"
#include "k22/train_decoder.h"
#include "k22/unet.h"

#include <stdint.h>
#include <stdio.h>

/* under MF_DIR (tests/fixtures/models) */
#define UNET_FIXTURE "../unet/unet.safetensors"

/* The output against torch, only to show the case runs the real model (test_unet.c holds the
 * full comparison, with these bounds). */
#define TOL_ABS 3e-5
#define TOL_REL 3e-5

typedef struct {
    const char *cs, *dir;
    uint64_t seed;
    int B, H, W, flip;
} unet_case;

typedef struct {
    size_t nx, no, ne;
    float *x, *t, *img, *dout, *ref_out;
} case_inputs;

static float *fixture(const k22_st_file *f, const char *cs, const char *what, size_t n)
{
    char name[128];
    snprintf(name, sizeof name, "%s.%s", cs, what);
    return mf_get(f, name, (int64_t)n, NULL);
}

static void load_case(const k22_st_file *f, const unet_case *uc, const k22_unet_config *c,
                      case_inputs *in)
{
    size_t S = (size_t)uc->H * uc->W;
    in->nx = (size_t)uc->B * c->in_channels * S;
    in->no = (size_t)uc->B * c->out_channels * S;
    in->ne = (size_t)uc->B * c->encoder_hid_dim;
    in->x = fixture(f, uc->cs, "sample", in->nx);
    in->t = fixture(f, uc->cs, "timestep", (size_t)uc->B);
    in->img = fixture(f, uc->cs, "image_embeds", in->ne);
    in->dout = fixture(f, uc->cs, "dout", in->no);
    in->ref_out = fixture(f, uc->cs, "out", in->no);
}

static void free_case(case_inputs *in)
{
    free(in->x), free(in->t), free(in->img), free(in->dout), free(in->ref_out);
}

/* What one forward + backward leaves: host copies of the results, and the arena figures. */
typedef struct {
    float *out, *G, *dx;
    size_t kept, peak, cap;
    int64_t open_at_end; /* G floats not yet final when the last keyed layer's backward was done */
} run_result;

static void free_result(run_result *r)
{
    free(r->out), free(r->G), free(r->dx);
}

/* One training forward and backward from zeroed gradients with `ckpt` levels checkpointed (0
 * none, K22_UNET_CKPT_ALL every block); `flip` changes the setting between forward and backward
 * (to none, or to every block from none). The arena is sized for the forward's mode. */
static int act16_on; /* run_once's models keep 16-bit GEMM inputs (act16_case) */

static run_result run_once(const k22_backend *be, const unet_case *uc, const k22_unet_config *c,
                           const k22_params *ps, const float *P, const case_inputs *in, int ckpt,
                           int flip)
{
    int B = uc->B, H = uc->H, W = uc->W;
    run_result r = {0};
    float *G = be->alloc(be->ctx, ps->total * sizeof(float));
    be->zero(be->ctx, G, ps->total * sizeof(float));
    float *x = mf_upload(be, in->x, in->nx), *t = mf_upload(be, in->t, (size_t)B);
    float *img = mf_upload(be, in->img, in->ne), *dout = mf_upload(be, in->dout, in->no);
    float *out = be->alloc(be->ctx, in->no * sizeof(float)), *dx = be->alloc(be->ctx, in->nx * sizeof(float));
    be->zero(be->ctx, dx, in->nx * sizeof(float));
    k22_unet m;
    k22_unet_init(&m, c, ps, P, G);
    k22_unet_set_checkpoint_levels(&m, ckpt);
    k22_unet_set_act16(&m, act16_on);
    r.cap = k22_unet_arena_floats(&m, B, H, W, 1);
    CHECK(r.cap == k22_unet_arena_floats_ckpt(&m, B, H, W, 1, ckpt));
    k22_arena ar;
    k22_arena_init(&ar, be, r.cap);
    k22_unet_forward(be, &m, &ar, x, t, img, B, H, W, out, 1);
    r.kept = ar.used;
    if (flip) k22_unet_set_gradient_checkpointing(&m, !ckpt);
    grad_watch gw;
    m.grad_hook = gw_start(&gw, be, G, (int64_t)ps->total);
    k22_unet_backward(be, &m, &ar, dout, dx);
    r.open_at_end = gw_check(&gw, "unet backward");
    CHECK_MSG(ar.used == r.kept, "backward left %zu floats allocated, forward %zu", ar.used, r.kept);
    r.peak = ar.peak;
    r.out = mf_download(be, out, in->no);
    r.G = mf_download(be, G, ps->total);
    r.dx = mf_download(be, dx, in->nx);
    float *bufs[] = {G, x, t, img, dout, out, dx};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) be->free(be->ctx, bufs[i]);
    k22_arena_free(&ar);
    k22_unet_free(&m);
    return r;
}

/* Bit-for-bit equality; on a mismatch, how many values differ and by how much. */
static void check_same(const char *label, const char *what, const float *a, const float *b, size_t n)
{
    size_t diff = 0;
    double mx = 0;
    for (size_t i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], sizeof(float))) {
            diff++;
            mx = fmax(mx, fabs((double)a[i] - b[i]));
        }
    CHECK_MSG(diff == 0, "%s %s: %zu of %zu values differ with checkpointing (max abs %.3g)",
              label, what, diff, n, mx);
}

static void check_same_results(const char *label, const k22_params *ps, const case_inputs *in,
                               const run_result *a, const run_result *b)
{
    check_same(label, "out", a->out, b->out, in->no);
    check_same(label, "dsample", a->dx, b->dx, in->nx);
    /* one tensor at a time, so a mismatch names the tensor */
    for (int i = 0; i < ps->count; i++) {
        const k22_param *p = &ps->items[i];
        check_same(label, p->name, a->G + p->offset, b->G + p->offset, p->numel);
    }
}

/* What a run with `levels` checkpointed left against the size functions: the activations kept
 * exactly; the arena peak exactly too (at these sizes a block's backward makes it, and the size
 * function counts that exactly: its head and forward terms are upper bounds); a shapes-only
 * model sizes the same as the bound one. */
static void check_sizes(const char *label, const k22_unet *shapes, const unet_case *uc, const run_result *r,
                        int levels)
{
    size_t want = k22_unet_saved_floats(shapes, uc->B, uc->H, uc->W, levels);
    CHECK_MSG(r->kept == want, "%s levels=%d: forward kept %zu floats, the size function says %zu", label, levels,
              r->kept, want);
    CHECK_MSG(r->peak == r->cap, "%s levels=%d: peak %zu, the arena size function says %zu", label, levels, r->peak,
              r->cap);
    CHECK(r->cap == k22_unet_arena_floats_ckpt(shapes, uc->B, uc->H, uc->W, 1, levels));
}

/* Under bf16 and fp16 on the cpu backend, the resnets' 16-bit conv inputs and the attention
 * blocks' 16-bit tokens, q, k, v and merged heads (k22_unet_set_act16) give the float inputs'
 * output and gradients bit for bit, with and without checkpointing, and the arena peak and the
 * activations kept equal the size functions', which are smaller. */
static void act16_case(k22_backend *be, const unet_case *uc, const k22_unet_config *c,
                       const k22_params *ps, const float *P, const case_inputs *in)
{
    for (int prec = K22_PREC_BF16; prec <= K22_PREC_FP16; prec++) {
        CHECK(k22_backend_set_precision(be, (k22_precision)prec, NULL) == K22_OK && k22_backend_act16(be));
        k22_unet shapes;
        k22_unet_init(&shapes, c, ps, NULL, NULL);
        for (int ck = 0; ck <= K22_UNET_CKPT_ALL; ck += K22_UNET_CKPT_ALL) {
            char label[160];
            snprintf(label, sizeof label, "%s %s unet %s B=%d %dx%d ckpt=%d, 16-bit GEMM inputs", be->name,
                     k22_precision_name((k22_precision)prec), uc->cs, uc->B, uc->H, uc->W, ck);
            act16_on = 0;
            run_result fl = run_once(be, uc, c, ps, P, in, ck, 0);
            act16_on = 1;
            run_result h = run_once(be, uc, c, ps, P, in, ck, 0);
            act16_on = 0;
            check_same_results(label, ps, in, &fl, &h);
            k22_unet_set_act16(&shapes, 1);
            check_sizes(label, &shapes, uc, &h, ck);
            k22_unet_set_act16(&shapes, 0);
            /* checkpointing every block keeps only block inputs and skips, and the head's conv_out
             * input, which alone shrinks then */
            size_t nhead = (size_t)uc->B * c->block_out_channels[0] * uc->H * uc->W;
            size_t head_less = k22_arena_round(nhead) - k22_arena_round_halves(nhead);
            CHECK_MSG(h.cap < fl.cap && (ck ? fl.kept - h.kept == head_less : h.kept < fl.kept),
                      "%s: arena %zu, kept %zu; floats: %zu, %zu (checkpointed: %zu less expected)", label,
                      h.cap, h.kept, fl.cap, fl.kept, head_less);
            printf("%-8s unet %-4s B=%d %dx%d %s ckpt=%d: 16-bit GEMM inputs, the same bits; kept %zu -> %zu floats, "
                   "arena %zu -> %zu\n", be->name, uc->cs, uc->B, uc->H, uc->W, k22_precision_name((k22_precision)prec),
                   ck, fl.kept, h.kept, fl.cap, h.cap);
            free_result(&fl), free_result(&h);
        }
        k22_unet_free(&shapes);
    }
    k22_backend_set_precision(be, K22_PREC_FP32, NULL);
}

static void run_case(k22_backend *be, const k22_st_file *f, const unet_case *uc)
{
    k22_model_config cfg;
    k22_params ps;
    mf_model(K22_MODEL_UNET, uc->dir, uc->seed, &cfg, &ps);
    const k22_unet_config *c = &cfg.u.unet;
    case_inputs in;
    load_case(f, uc, c, &in);
    float *P = mf_upload(be, ps.data, ps.total);
    char label[96];
    snprintf(label, sizeof label, "%s unet %s B=%d %dx%d", be->name, uc->cs, uc->B, uc->H, uc->W);
    run_result plain = run_once(be, uc, c, &ps, P, &in, 0, 0);
    run_result ck = run_once(be, uc, c, &ps, P, &in, K22_UNET_CKPT_ALL, 0);
    char what[128];
    snprintf(what, sizeof what, "unet %s output, checkpointed", uc->cs);
    mf_check(be->name, what, ck.out, in.ref_out, (int64_t)in.no, TOL_ABS, TOL_REL);
    /* A gradient that were all zeros would pass the comparison: make sure it is not. */
    double gmax = 0, dxmax = 0;
    for (size_t i = 0; i < ps.total; i++) gmax = fmax(gmax, fabs((double)ck.G[i]));
    for (size_t i = 0; i < in.nx; i++) dxmax = fmax(dxmax, fabs((double)ck.dx[i]));
    CHECK_MSG(gmax > 0 && dxmax > 0, "%s: a gradient is all zeros", label);
    check_same_results(label, &ps, &in, &plain, &ck);
    if (uc->flip && !strcmp(be->name, "cpu")) act16_case(be, uc, c, &ps, P, &in); /* tiny only: time */
    /* Flipping the flag between forward and backward changes nothing either way (one case per
     * backend, to keep the test short). */
    if (uc->flip) {
        run_result fl0 = run_once(be, uc, c, &ps, P, &in, 0, 1),
                   fl1 = run_once(be, uc, c, &ps, P, &in, K22_UNET_CKPT_ALL, 1);
        check_same_results(label, &ps, &in, &plain, &fl0);
        check_same_results(label, &ps, &in, &plain, &fl1);
        free_result(&fl0), free_result(&fl1);
    }
    k22_unet shapes;
    k22_unet_init(&shapes, c, &ps, NULL, NULL);
    check_sizes(label, &shapes, uc, &plain, 0);
    check_sizes(label, &shapes, uc, &ck, K22_UNET_CKPT_ALL);
    /* Only the blocks at the `lv` highest resolutions re-run: the same bits again, and the
     * activations kept fall between none and all, level by level. */
    size_t prev = plain.kept;
    for (int lv = 1; lv < c->nblocks; lv++) {
        run_result pk = run_once(be, uc, c, &ps, P, &in, lv, 0);
        char l2[128];
        snprintf(l2, sizeof l2, "%s levels=%d", label, lv);
        check_same_results(l2, &ps, &in, &plain, &pk);
        check_sizes(l2, &shapes, uc, &pk, lv);
        CHECK_MSG(pk.kept < prev && pk.kept > ck.kept, "%s: kept %zu floats; one level fewer %zu, every block %zu",
                  l2, pk.kept, prev, ck.kept);
        printf("%-8s unet %-4s B=%d %dx%d --checkpoint_levels %d: activations kept %9zu floats, arena %9zu\n",
               be->name, uc->cs, uc->B, uc->H, uc->W, lv, pk.kept, pk.cap);
        prev = pk.kept;
        free_result(&pk);
    }
    k22_unet_free(&shapes);
    CHECK_MSG(ck.kept < plain.kept, "%s: checkpointing keeps %zu floats, without %zu", label,
              ck.kept, plain.kept);
    CHECK_MSG(ck.peak < plain.peak, "%s: peak %zu -> %zu", label, plain.peak, ck.peak);
    CHECK_MSG(ck.cap < plain.cap, "%s: arena size %zu -> %zu", label, plain.cap, ck.cap);
    printf("%-8s unet %-4s B=%d %dx%d activations kept %9zu -> %9zu floats (%.2fx), arena peak "
           "%9zu -> %9zu (%.2fx), arena size %9zu -> %9zu\n", be->name, uc->cs, uc->B, uc->H,
           uc->W, plain.kept, ck.kept, (double)plain.kept / ck.kept, plain.peak, ck.peak,
           (double)plain.peak / ck.peak, plain.cap, ck.cap);
    grad_watch_report(label, plain.open_at_end, ck.open_at_end, (int64_t)ps.total);
    free_result(&plain), free_result(&ck);
    be->free(be->ctx, P);
    free_case(&in);
    k22_params_free(&ps);
}

/* --checkpoint_levels auto's pick (k22_unet_ckpt_levels_fit) on the full UNet at 96x96: with a
 * budget of exactly one choice's arena it takes the first choice in re-run order (none, 1 ..
 * n-1, every block) whose arena fits, one float less moves it on, and with none it takes the
 * smallest arena. Then what auto picks on an 80 GB H100 (81559 MiB, less the CUDA context's
 * ~0.5 GiB, weights, gradients and AdamW moments at 16 bytes a parameter, the bf16 reserve). */
static void ckpt_auto(k22_unet *m, int64_t nparams)
{
    int n = m->cfg.nblocks, H = 96, W = 96, B = 8;
    int order[K22_MAX_BLOCKS + 1];
    size_t cap[K22_MAX_BLOCKS + 1], least = SIZE_MAX;
    int smallest = 0;
    for (int k = 0; k <= n; k++) {
        order[k] = k22_unet_ckpt_candidate(m, k);
        CHECK(order[k] == (k < n ? k : K22_UNET_CKPT_ALL)); /* none, 1 .. n-1 levels, every block */
        cap[k] = k22_unet_arena_floats_ckpt(m, B, H, W, 1, order[k]);
        if (cap[k] < least) least = cap[k], smallest = order[k];
    }
    for (int k = 0; k <= n; k++)
        for (int d = 0; d <= 1; d++) {
            size_t budget = cap[k] - (size_t)d;
            int want = smallest, want_fits = 0;
            for (int j = 0; j <= n && !want_fits; j++)
                if (cap[j] <= budget) want = order[j], want_fits = 1;
            int fits = -1, got = k22_unet_ckpt_levels_fit(m, B, H, W, budget, &fits);
            CHECK_MSG(got == want && fits == want_fits, "auto with the arena of choice %d less %d floats: %d (fits "
                      "%d), expected %d (%d)", order[k], d, got, fits, want, want_fits);
        }
    int fits0 = -1;
    CHECK(k22_unet_ckpt_levels_fit(m, B, H, W, 0, &fits0) == smallest && fits0 == 0);
    const double total = 81559.0 * 1048576, context = 512.0 * 1048576;
    k22_unet_set_act16(m, 1); /* the cuda backend's, under bf16 */
    for (int b = 8; b <= 64; b *= 2) {
        size_t reserve = k22_decoder_ckpt_reserve(&m->cfg, b, H, W, K22_PREC_BF16, nparams);
        double left = total - context - 16.0 * (double)nparams - (double)reserve;
        size_t budget = left > 0 ? (size_t)(left / 4) : 0;
        int fits;
        int lv = k22_unet_ckpt_levels_fit(m, b, H, W, budget, &fits);
        size_t a = k22_unet_arena_floats_ckpt(m, b, H, W, 1, lv);
        char pick[48];
        if (lv == 0) snprintf(pick, sizeof pick, "no checkpointing");
        else if (lv >= n) snprintf(pick, sizeof pick, "every block");
        else snprintf(pick, sizeof pick, "%d level%s", lv, lv == 1 ? "" : "s");
        printf("size fn  unet full B=%d 96x96 bf16 on an 80 GB H100: reserve %.2f GiB, %.1f GiB left for the arena; "
               "auto picks %s (arena %.1f GiB%s)\n", b, reserve / 1073741824.0, left / 1073741824.0, pick,
               a * 4.0 / 1073741824.0, fits ? "" : ", does not fit");
    }
    k22_unet_set_act16(m, 0);
}

/* The published Kandinsky 2.2 decoder UNet: sizes only, from the table (no weights). */
static void full_size(void)
{
    k22_model_config cfg;
    k22_params ps;
    k22_err err;
    k22_params_init(&ps);
    if (k22_config_preset(K22_MODEL_UNET, "full", &cfg, &err) || k22_params_build(&cfg, &ps, &err))
        K22_FATAL("%s", err.msg);
    k22_unet m;
    k22_unet_init(&m, &cfg.u.unet, &ps, NULL, NULL);
    int B = 1, H = 96, W = 96;
    size_t kept0 = k22_unet_saved_floats(&m, B, H, W, 0);
    size_t kept1 = k22_unet_saved_floats(&m, B, H, W, K22_UNET_CKPT_ALL);
    size_t cap0 = k22_unet_arena_floats_ckpt(&m, B, H, W, 1, 0);
    size_t cap1 = k22_unet_arena_floats_ckpt(&m, B, H, W, 1, K22_UNET_CKPT_ALL);
    size_t cap_ng = k22_unet_arena_floats_ckpt(&m, B, H, W, 0, 0);
    CHECK(kept1 < kept0 && cap1 < cap0 && cap_ng < cap1);
    printf("size fn  unet full B=1 96x96 (%zu params, %d steps in %d blocks) activations kept %zu -> "
           "%zu floats (%.1f -> %.1f MiB, %.2fx), arena %zu -> %zu floats (%.1f -> %.1f MiB, "
           "%.2fx); no-grad forward %.1f MiB\n", ps.total, m.nsteps, m.nsegs, kept0, kept1,
           kept0 * 4.0 / 1048576, kept1 * 4.0 / 1048576, (double)kept0 / kept1, cap0, cap1,
           cap0 * 4.0 / 1048576, cap1 * 4.0 / 1048576, (double)cap0 / cap1, cap_ng * 4.0 / 1048576);
    grad_marks_report("table    unet full", &m.marks, (int64_t)ps.total);
    /* 16-bit GEMM inputs (bf16/fp16): a1, a2 and the attention's inputs at half the bytes */
    k22_unet_set_act16(&m, 1);
    size_t h0 = k22_unet_arena_floats_ckpt(&m, B, H, W, 1, 0), h1 = k22_unet_arena_floats_ckpt(&m, B, H, W, 1, K22_UNET_CKPT_ALL);
    size_t hk0 = k22_unet_saved_floats(&m, B, H, W, 0);
    k22_unet_set_act16(&m, 0);
    CHECK(h0 < cap0 && h1 < cap1 && hk0 < kept0);
    printf("size fn  unet full B=1 96x96 with 16-bit GEMM inputs: activations kept %.1f -> %.1f MiB (%.1f%% less), arena "
           "%.1f -> %.1f MiB (%.1f%% less); checkpointed, arena %.1f -> %.1f MiB (%.1f%% less)\n", kept0 * 4.0 / 1048576,
           hk0 * 4.0 / 1048576, 100.0 * (1.0 - (double)hk0 / kept0), cap0 * 4.0 / 1048576, h0 * 4.0 / 1048576,
           100.0 * (1.0 - (double)h0 / cap0), cap1 * 4.0 / 1048576, h1 * 4.0 / 1048576, 100.0 * (1.0 - (double)h1 / cap1));
    /* By level at batch 8 (the bench's): the memory each choice keeps and the forward FLOPs it
     * re-runs; each level keeps less than the one before and re-runs more, and the first level
     * (96x96) frees the most memory per FLOP re-run. */
    k22_flops fwd;
    if (k22_flops_unet_forward(&cfg.u.unet, 8, H, W, &fwd, &err)) K22_FATAL("%s", err.msg);
    size_t last_kept = k22_unet_saved_floats(&m, 8, H, W, 0);
    double last_re = 0, first_rate = 0;
    for (int lv = 1; lv <= cfg.u.unet.nblocks; lv++) {
        double re = k22_flops_unet_recompute(&m, 8, H, W, lv);
        size_t kept = k22_unet_saved_floats(&m, 8, H, W, lv);
        size_t cap = k22_unet_arena_floats_ckpt(&m, 8, H, W, 1, lv);
        double rate = (double)(last_kept - kept) / (re - last_re); /* floats freed per FLOP re-run */
        CHECK_MSG(kept < last_kept && re > last_re && (lv == 1 || rate < first_rate),
                  "full UNet B=8 levels %d: kept %zu (before %zu), re-run %.3g (before %.3g)", lv, kept, last_kept, re,
                  last_re);
        if (lv == 1) first_rate = rate;
        printf("size fn  unet full B=8 96x96 checkpointing %d of %d levels: activations kept %.2f GiB, arena %.2f "
               "GiB, forward re-run %.0f%% (%.1f TFLOP)\n", lv, cfg.u.unet.nblocks, kept * 4.0 / 1073741824.0,
               cap * 4.0 / 1073741824.0, 100.0 * re / fwd.total, re / 1e12);
        last_kept = kept, last_re = re;
    }
    ckpt_auto(&m, (int64_t)ps.total);
    k22_unet_free(&m);
    k22_params_free(&ps);
}

int main(void)
{
    k22_st_file *f = mf_open(UNET_FIXTURE);
    const unet_case cases[] = {{"tiny", "tiny", 0, 2, 16, 16, 1},
                               {"mid", "tests/fixtures/unet/mid", 11, 1, 16, 16, 0}};
    for (int ref = 1; ref >= 0; ref--) {
        k22_backend *be = k22_backend_cpu_new(ref);
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(be, f, &cases[i]);
        k22_backend_free(be);
    }
    full_size();
    k22_st_close(f);
    return k22_test_finish("test_unet_ckpt");
}
