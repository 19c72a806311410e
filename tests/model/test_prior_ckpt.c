/* test_prior_ckpt.c: gradient checkpointing of the PriorTransformer (src/model/prior.c). On the
 * fixture inputs of test_prior.c (tiny and mid, at the fixture batch and at batch 1) and on the
 * reference and fast CPU backends: the output, every parameter gradient and the three input
 * gradients with checkpointing equal those without bit for bit (the same ops run in the same
 * order on the same values); the activations kept between forward and backward and the arena
 * peak are lower, the kept count equals k22_prior_saved_floats_cfg and the arena sized by
 * k22_prior_arena_floats suffices; on the fast backend under bf16 and fp16, 16-bit MLP
 * activations change no bit and take less. Prints the figures, and the size functions' figures
 * for the full-size prior at batch 1 (computed, not run). */
#include "grad_watch.h"
#include "model_fixture.h"

#include "k22/prior.h"

#include <stdio.h>

/* The output against torch, only to show the case runs the real model (test_prior.c holds
 * the full comparison): test_prior.c's bound, 1e-5 of max|ref| + 1e-5 relative. */
#define TOL_ABS 1e-5
#define TOL_REL 1e-5

typedef struct {
    const char *size, *dir;
    uint64_t seed;
    int B_fixture;
} prior_case;

/* Host inputs of the first B samples of a fixture case (samples are independent rows). */
typedef struct {
    int B;
    size_t nx, np, ne, no;
    float *x, *t, *proj, *ehs, *dout, *ref_out;
    uint8_t *mask;
} case_inputs;

static float *first_rows(const k22_st_file *f, const char *size, const char *what, int Bf,
                         size_t per_sample)
{
    char n[128];
    snprintf(n, sizeof n, "%s.%s", size, what);
    return mf_get(f, n, (int64_t)(Bf * per_sample), NULL);
}

static void load_case(const k22_st_file *f, const prior_case *pc, const k22_prior_config *c,
                      int B, case_inputs *in)
{
    int Bf = pc->B_fixture, L = c->num_embeddings;
    in->B = B;
    in->nx = (size_t)B * c->embedding_dim;
    in->np = (size_t)B * c->embedding_proj_dim;
    in->ne = (size_t)B * L * c->embedding_dim;
    in->no = (size_t)B * c->clip_embed_dim;
    /* Whole fixture tensors are read (counts checked against the fixture batch); only the
     * first B rows are used. */
    in->x = first_rows(f, pc->size, "hidden_states", Bf, (size_t)c->embedding_dim);
    in->t = first_rows(f, pc->size, "timestep", Bf, 1);
    in->proj = first_rows(f, pc->size, "proj_embedding", Bf, (size_t)c->embedding_proj_dim);
    in->ehs = first_rows(f, pc->size, "encoder_hidden_states", Bf, (size_t)L * c->embedding_dim);
    in->dout = first_rows(f, pc->size, "dout", Bf, (size_t)c->clip_embed_dim);
    in->ref_out = first_rows(f, pc->size, "predicted_image_embedding", Bf, (size_t)c->clip_embed_dim);
    char n[128];
    snprintf(n, sizeof n, "%s.attention_mask", pc->size);
    const k22_st_tensor *tm = k22_st_find(f, n);
    K22_REQUIRE(tm && tm->dtype == K22_DTYPE_U8 && tm->nbytes == (size_t)Bf * L);
    in->mask = k22_xmalloc(tm->nbytes);
    memcpy(in->mask, tm->data, tm->nbytes);
}

static void free_case(case_inputs *in)
{
    free(in->x), free(in->t), free(in->proj), free(in->ehs), free(in->dout), free(in->ref_out);
    free(in->mask);
}

/* What one forward + backward leaves: host copies of every result, and the arena figures. */
typedef struct {
    float *out, *G, *dx, *dproj, *dehs;
    size_t kept, peak, cap;
    int64_t open_at_end; /* G floats not yet final when the last keyed layer's backward was done */
} run_result;

static void free_result(run_result *r)
{
    free(r->out), free(r->G), free(r->dx), free(r->dproj), free(r->dehs);
}

/* One training forward and backward from zeroed gradients with checkpointing `ckpt`; `flip`
 * turns the flag the other way between forward and backward (the pair must finish in the
 * mode its forward ran in). The arena is sized for the forward's mode. */
static int act16_on; /* run_once's models keep 16-bit GEMM inputs (act16_case) */

static run_result run_once(const k22_backend *be, const k22_prior_config *c, const k22_params *ps,
                           const float *P, const case_inputs *in, int ckpt, int flip)
{
    int B = in->B;
    run_result r = {0};
    float *G = be->alloc(be->ctx, ps->total * sizeof(float));
    be->zero(be->ctx, G, ps->total * sizeof(float));
    float *x = mf_upload(be, in->x, in->nx), *t = mf_upload(be, in->t, (size_t)B);
    float *proj = mf_upload(be, in->proj, in->np), *ehs = mf_upload(be, in->ehs, in->ne);
    float *dout = mf_upload(be, in->dout, in->no);
    float *out = be->alloc(be->ctx, in->no * sizeof(float));
    float *dx = be->alloc(be->ctx, in->nx * sizeof(float)), *dproj = be->alloc(be->ctx, in->np * sizeof(float));
    float *dehs = be->alloc(be->ctx, in->ne * sizeof(float));
    be->zero(be->ctx, dx, in->nx * sizeof(float));
    be->zero(be->ctx, dproj, in->np * sizeof(float));
    be->zero(be->ctx, dehs, in->ne * sizeof(float));
    k22_prior m;
    k22_prior_init(&m, c, ps, P, G, B);
    k22_prior_set_gradient_checkpointing(&m, ckpt);
    k22_prior_set_act16(&m, act16_on);
    k22_arena ar;
    r.cap = k22_prior_arena_floats(&m, B, 1);
    CHECK(r.cap == k22_prior_arena_floats_cfg(c, B, 1, ckpt, act16_on));
    k22_arena_init(&ar, be, r.cap);
    k22_prior_forward(be, &m, &ar, x, t, proj, ehs, in->mask, B, out, 1);
    r.kept = ar.used;
    if (flip) k22_prior_set_gradient_checkpointing(&m, !ckpt);
    grad_watch gw;
    m.grad_hook = gw_start(&gw, be, G, (int64_t)ps->total);
    k22_prior_backward(be, &m, &ar, dout, dx, dproj, dehs);
    r.open_at_end = gw_check(&gw, "prior backward");
    CHECK_MSG(ar.used == r.kept, "backward left %zu floats allocated, forward %zu", ar.used, r.kept);
    r.peak = ar.peak;
    r.out = mf_download(be, out, in->no);
    r.G = mf_download(be, G, ps->total);
    r.dx = mf_download(be, dx, in->nx);
    r.dproj = mf_download(be, dproj, in->np);
    r.dehs = mf_download(be, dehs, in->ne);
    float *bufs[] = {G, x, t, proj, ehs, dout, out, dx, dproj, dehs};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) be->free(be->ctx, bufs[i]);
    k22_arena_free(&ar);
    k22_prior_free(&m);
    return r;
}

/* The parameter gradients one tensor at a time, so a mismatch names the tensor. */
static void check_same_grads(const char *label, const k22_params *ps, const float *a, const float *b)
{
    for (int i = 0; i < ps->count; i++) {
        const k22_param *p = &ps->items[i];
        mf_check_same(label, p->name, a + p->offset, b + p->offset, p->numel);
    }
}

static void check_same_results(const char *label, const k22_params *ps, const case_inputs *in,
                               const run_result *a, const run_result *b)
{
    mf_check_same(label, "out", a->out, b->out, in->no);
    mf_check_same(label, "dhidden_states", a->dx, b->dx, in->nx);
    mf_check_same(label, "dproj_embedding", a->dproj, b->dproj, in->np);
    mf_check_same(label, "dencoder_hidden_states", a->dehs, b->dehs, in->ne);
    check_same_grads(label, ps, a->G, b->G);
}

/* Under bf16 and fp16 on the cpu backend, the blocks' 16-bit linear and attention inputs
 * (layer-norm outputs, q, k, v, merged heads, MLP activation: k22_prior_set_act16) give the
 * float ones' output and gradients bit for bit, with and without checkpointing; what forward
 * keeps and the arena peak equal the size functions', which are smaller. */
static void act16_case(k22_backend *be, const k22_prior_config *c, const k22_params *ps, const float *P,
                       const case_inputs *in, const char *size)
{
    for (int prec = K22_PREC_BF16; prec <= K22_PREC_FP16; prec++) {
        CHECK(k22_backend_set_precision(be, (k22_precision)prec, NULL) == K22_OK && k22_backend_act16(be));
        for (int ck = 0; ck <= 1; ck++) {
            char label[160];
            snprintf(label, sizeof label, "%s %s prior %s B=%d ckpt=%d, 16-bit GEMM inputs", be->name,
                     k22_precision_name((k22_precision)prec), size, in->B, ck);
            act16_on = 0;
            run_result fl = run_once(be, c, ps, P, in, ck, 0);
            act16_on = 1;
            run_result h = run_once(be, c, ps, P, in, ck, 0);
            act16_on = 0;
            check_same_results(label, ps, in, &fl, &h);
            size_t want = k22_prior_saved_floats_cfg(c, in->B, ck, 1);
            CHECK_MSG(h.kept == want && h.peak == h.cap, "%s: kept %zu (size function %zu), peak %zu, arena %zu",
                      label, h.kept, want, h.peak, h.cap);
            /* checkpointing keeps no block cache: only the arena's recomputed block shrinks */
            CHECK_MSG(h.cap < fl.cap && (ck ? h.kept == fl.kept : h.kept < fl.kept),
                      "%s: arena %zu, kept %zu; floats: %zu, %zu", label, h.cap, h.kept, fl.cap, fl.kept);
            printf("%-8s prior %-4s B=%d %s ckpt=%d: 16-bit GEMM inputs, the same bits; kept %zu -> %zu "
                   "floats, arena %zu -> %zu\n", be->name, size, in->B, k22_precision_name((k22_precision)prec),
                   ck, fl.kept, h.kept, fl.cap, h.cap);
            free_result(&fl), free_result(&h);
        }
    }
    k22_backend_set_precision(be, K22_PREC_FP32, NULL);
}

static void one_batch(k22_backend *be, const k22_st_file *f, const prior_case *pc,
                      const k22_prior_config *c, const k22_params *ps, const float *P, int B)
{
    case_inputs in;
    load_case(f, pc, c, B, &in);
    char label[96];
    snprintf(label, sizeof label, "%s prior %s B=%d", be->name, pc->size, B);
    run_result plain = run_once(be, c, ps, P, &in, 0, 0);
    run_result ck = run_once(be, c, ps, P, &in, 1, 0);
    if (B == pc->B_fixture) {
        char what[128];
        snprintf(what, sizeof what, "prior %s output, checkpointed", pc->size);
        mf_check(be->name, what, ck.out, in.ref_out, (int64_t)in.no, TOL_ABS, TOL_REL);
    }
    /* A gradient that were all zeros would pass the comparison: make sure it is not. */
    double gmax = 0;
    for (size_t i = 0; i < ps->total; i++) gmax = fmax(gmax, fabs((double)ck.G[i]));
    CHECK_MSG(gmax > 0, "%s: every parameter gradient is zero", label);
    check_same_results(label, ps, &in, &plain, &ck);
    if (B == pc->B_fixture && !strcmp(be->name, "cpu")) act16_case(be, c, ps, P, &in, pc->size);
    /* Flipping the flag between forward and backward changes nothing either way. */
    run_result fl0 = run_once(be, c, ps, P, &in, 0, 1), fl1 = run_once(be, c, ps, P, &in, 1, 1);
    check_same_results(label, ps, &in, &plain, &fl0);
    check_same_results(label, ps, &in, &plain, &fl1);
    for (int k = 0; k < 2; k++) {
        const run_result *r = k ? &ck : &plain;
        size_t want = k22_prior_saved_floats_cfg(c, B, k, 0);
        CHECK_MSG(r->kept == want, "%s ckpt=%d: forward kept %zu floats, the size function says %zu",
                  label, k, r->kept, want);
        /* The backward's peak is what sizes the arena, and the size function counts it exactly. */
        CHECK_MSG(r->peak == r->cap, "%s ckpt=%d: peak %zu, the arena size function says %zu",
                  label, k, r->peak, r->cap);
    }
    CHECK_MSG(ck.kept < plain.kept, "%s: checkpointing keeps %zu floats, without %zu", label,
              ck.kept, plain.kept);
    /* With one block the peak cannot drop: its cache is rebuilt at the moment backward needs
     * it, as without checkpointing. From two blocks on, the other blocks' caches are gone. */
    if (c->num_layers == 1)
        CHECK_MSG(ck.peak == plain.peak, "%s: one block, peak %zu -> %zu", label, plain.peak, ck.peak);
    else
        CHECK_MSG(ck.peak < plain.peak, "%s: peak %zu -> %zu", label, plain.peak, ck.peak);
    printf("%-8s prior %-4s B=%d activations kept %9zu -> %9zu floats (%.2fx), arena peak %9zu -> "
           "%9zu (%.2fx), arena size %9zu -> %9zu\n", be->name, pc->size, B, plain.kept, ck.kept,
           (double)plain.kept / ck.kept, plain.peak, ck.peak, (double)plain.peak / ck.peak,
           plain.cap, ck.cap);
    grad_watch_report(label, plain.open_at_end, ck.open_at_end, (int64_t)ps->total);
    free_result(&plain), free_result(&ck), free_result(&fl0), free_result(&fl1);
    free_case(&in);
}

static void run_case(k22_backend *be, const k22_st_file *f, const prior_case *pc)
{
    k22_model_config cfg;
    k22_params ps;
    mf_model(K22_MODEL_PRIOR, pc->dir, pc->seed, &cfg, &ps);
    float *P = mf_upload(be, ps.data, ps.total);
    one_batch(be, f, pc, &cfg.u.prior, &ps, P, pc->B_fixture);
    one_batch(be, f, pc, &cfg.u.prior, &ps, P, 1);
    be->free(be->ctx, P);
    k22_params_free(&ps);
}

/* The published Kandinsky 2.2 prior: sizes only (a run needs GBs and minutes). */
static void full_size(void)
{
    k22_model_config cfg;
    k22_err err;
    if (k22_config_preset(K22_MODEL_PRIOR, "full", &cfg, &err)) K22_FATAL("%s", err.msg);
    const k22_prior_config *c = &cfg.u.prior;
    size_t kept0 = k22_prior_saved_floats_cfg(c, 1, 0, 0), kept1 = k22_prior_saved_floats_cfg(c, 1, 1, 0);
    size_t cap0 = k22_prior_arena_floats_cfg(c, 1, 1, 0, 0), cap1 = k22_prior_arena_floats_cfg(c, 1, 1, 1, 0);
    CHECK(kept1 < kept0 && cap1 < cap0);
    /* What checkpointing drops is exactly every block's cache. */
    int D = c->num_attention_heads * c->attention_head_dim;
    size_t cache = k22_block_cache_floats(1, c->num_embeddings + c->additional_embeddings, D,
                                          4 * D, c->num_attention_heads, 0, 1); /* stacked q, k, v */
    CHECK(kept0 - kept1 == (size_t)c->num_layers * cache);
    printf("size fn  prior full B=1 (%d layers, %d x %d) activations kept %zu -> %zu floats "
           "(%.1f -> %.1f MiB, %.2fx), arena %zu -> %zu floats (%.1f -> %.1f MiB, %.2fx)\n",
           c->num_layers, c->num_attention_heads, c->attention_head_dim, kept0, kept1,
           kept0 * 4.0 / 1048576, kept1 * 4.0 / 1048576, (double)kept0 / kept1, cap0, cap1,
           cap0 * 4.0 / 1048576, cap1 * 4.0 / 1048576, (double)cap0 / cap1);
    /* 16-bit GEMM inputs (bf16/fp16), at the bench's batch of 32 */
    size_t k32 = k22_prior_saved_floats_cfg(c, 32, 0, 0), h32 = k22_prior_saved_floats_cfg(c, 32, 0, 1);
    size_t a32 = k22_prior_arena_floats_cfg(c, 32, 1, 0, 0), ha32 = k22_prior_arena_floats_cfg(c, 32, 1, 0, 1);
    CHECK(h32 < k32 && ha32 < a32);
    printf("size fn  prior full B=32 with 16-bit GEMM inputs: activations kept %.2f -> %.2f GiB (%.1f%% less), "
           "arena %.2f -> %.2f GiB (%.1f%% less)\n", k32 * 4.0 / 1073741824, h32 * 4.0 / 1073741824,
           100.0 * (1.0 - (double)h32 / k32), a32 * 4.0 / 1073741824, ha32 * 4.0 / 1073741824,
           100.0 * (1.0 - (double)ha32 / a32));
    k22_params ps;
    k22_params_init(&ps);
    if (k22_params_build(&cfg, &ps, &err)) K22_FATAL("%s", err.msg);
    k22_grad_marks gm;
    k22_prior_grad_marks(&gm, &ps, c->num_layers);
    grad_marks_report("table    prior full", &gm, (int64_t)ps.total);
    k22_grad_marks_free(&gm);
    k22_params_free(&ps);
}

int main(void)
{
    k22_st_file *f = mf_open("prior.safetensors");
    const prior_case cases[] = {{"tiny", "tiny", 0, 3}, {"mid", MF_DIR "/mid/prior", 7, 2}};
    for (int ref = 1; ref >= 0; ref--) {
        k22_backend *be = k22_backend_cpu_new(ref);
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(be, f, &cases[i]);
        k22_backend_free(be);
    }
    full_size();
    k22_st_close(f);
    return k22_test_finish("test_prior_ckpt");
}
