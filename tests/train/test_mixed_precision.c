/* test_mixed_precision.c: --mixed_precision and --save_dtype end to end on the cpu backend,
 * whose bf16/fp16 is the operand rounding of ops.h (tests/ops/test_ops_precision checks the op
 * level). (1) The tiny prior and the tiny UNet trained in bf16 and in fp16: every step's loss
 * tracks the fp32 run's, and differs from it (the rounding is on). (2) fp16's dynamic loss
 * scaling on a pack whose image embeddings are 100 times larger: the first steps overflow at
 * the initial scale 65536, are skipped without counting toward --max_skipped_steps, the scale
 * halves until the gradients fit, then the run trains to the end with finite weights.
 * (3) The scale lives in the checkpoint: a run stopped and resumed gives the uninterrupted
 * run's losses exactly. (4) --save_dtype bf16/fp16 writes the final weights in that dtype,
 * equal to the fp32 checkpoint of the same step rounded; checkpoints stay fp32.
 * (5) cpu-ref refuses bf16 (exit 2). (6) The 16-bit activations (decoder conv inputs, prior MLP) change no bit. */
#include "train/train_fixture.h"
#include "k22/diffusers.h"
#include "k22/ops.h"
#include "k22/safetensors.h"

#include <math.h>

static char dir[] = "/tmp/k22_mixed_test_XXXXXX";

#define STEPS 10
#define PRIOR_ARGS "--pretrained %s/prior --train_batch_size 2 --learning_rate 1e-3 --seed 5 --log_every 100"
#define DEC_ARGS "--pretrained %s/decoder --train_batch_size 2 --learning_rate 1e-3 --seed 5 --log_every 100"

static double max_rel_dev(const double *a, const double *ref, int n)
{
    double m = 0;
    for (int s = 1; s <= n; s++) m = fmax(m, fabs(a[s] - ref[s]) / fabs(ref[s]));
    return m;
}

/* Trains STEPS steps in each precision; bf16 within tol_bf16 (relative, per step) of fp32. */
static void tracks(const char *stage, const char *args, const char *pack, double tol_bf16, double tol_fp16)
{
    const char *prec[3] = {"no", "bf16", "fp16"};
    double loss[3][STEPS + 2];
    char out[4096];
    for (int i = 0; i < 3; i++) {
        memset(loss[i], 0, sizeof loss[i]);
        snprintf(out, sizeof out, "%s/%s-%s", dir, stage, prec[i]);
        char a[512];
        snprintf(a, sizeof a, args, dir);
        int rc = tf_sh("%s train-%s --pack %s/%s %s --max_train_steps %d --mixed_precision %s --output_dir %s "
                       ">%s.log 2>&1", tf_bin(), stage, dir, pack, a, STEPS, prec[i], out, out);
        CHECK_MSG(rc == 0, "train-%s --mixed_precision %s exited %d (see %s.log)", stage, prec[i], rc, out);
        CHECK_MSG(tf_read_losses(out, loss[i], STEPS + 1) == STEPS, "%s: %d steps logged", out, STEPS);
    }
    double db = max_rel_dev(loss[1], loss[0], STEPS), dh = max_rel_dev(loss[2], loss[0], STEPS);
    printf("train-%s, %d steps: fp32 loss %.5f -> %.5f; largest per-step deviation from fp32: bf16 %.3g "
           "(tolerance %.3g), fp16 %.3g (tolerance %.3g)\n", stage, STEPS, loss[0][1], loss[0][STEPS], db, tol_bf16,
           dh, tol_fp16);
    CHECK_MSG(db <= tol_bf16 && dh <= tol_fp16, "train-%s: bf16 %.3g, fp16 %.3g from fp32", stage, db, dh);
    /* bf16 keeps 8 mantissa bits: the losses move, though little */
    CHECK_MSG(db > 1e-6, "train-%s: bf16 losses equal fp32's (%.3g): is the rounding on?", stage, db);
    CHECK_MSG(loss[1][STEPS] < loss[1][1], "train-%s: the bf16 loss did not fall", stage);
}



/* 16-bit activations (ops.h k22_backend_act16: the decoder's conv inputs, the prior's MLP
 * activations), on by default under bf16/fp16: tracks() trained with them; the same runs with
 * K22_ACT16=0 (floats) log the same losses and write the same weights, bit for bit, since the
 * GEMMs round those inputs there anyway. */
static void act16_same(const char *stage, const char *args, const char *pack, const char *weights,
                       const char *prec)
{
    char on[4096], off[4096];
    snprintf(on, sizeof on, "%s/%s-%s", dir, stage, prec);
    snprintf(off, sizeof off, "%s/%s-%s-float", dir, stage, prec);
    char a[512];
    snprintf(a, sizeof a, args, dir);
    int rc = tf_sh("K22_ACT16=0 %s train-%s --pack %s/%s %s --max_train_steps %d --mixed_precision %s "
                   "--output_dir %s >%s.log 2>&1", tf_bin(), stage, dir, pack, a, STEPS, prec, off, off);
    CHECK_MSG(rc == 0, "K22_ACT16=0 train-%s --mixed_precision %s exited %d (see %s.log)", stage, prec, rc, off);
    CHECK_MSG(tf_sh("grep -q 'kept in %s, as the GEMMs' %s.log", prec, on) == 0,
              "%s.log: the 16-bit activations were not on", on);
    CHECK_MSG(tf_sh("! grep -q 'as the GEMMs that read them' %s.log", off) == 0,
              "%s.log: K22_ACT16=0 left the 16-bit activations on", off);
    double lon[STEPS + 2] = {0}, loff[STEPS + 2] = {0};
    CHECK(tf_read_losses(on, lon, STEPS + 1) == STEPS && tf_read_losses(off, loff, STEPS + 1) == STEPS);
    CHECK_MSG(!memcmp(lon, loff, sizeof lon), "train-%s %s: the losses with 16-bit activations differ from floats'",
              stage, prec);
    CHECK_MSG(tf_sh("cmp -s %s/%s %s/%s", on, weights, off, weights) == 0,
              "train-%s %s: the final weights differ between 16-bit and float activations", stage, prec);
}

/* Large targets: fp16 gradients overflow at 65536 and the scaler finds a smaller scale. */
static void fp16_scaling(void)
{
    char a[512], p[4096];
    snprintf(a, sizeof a, PRIOR_ARGS, dir);
    int rc = tf_sh("%s train-prior --pack %s/big.h5 %s --max_train_steps 12 --mixed_precision fp16 "
                   "--max_skipped_steps 2 --checkpointing_steps 6 --output_dir %s/scale >%s/scale.log 2>&1",
                   tf_bin(), dir, a, dir, dir);
    CHECK_MSG(rc == 0, "fp16 run on large targets exited %d (see %s/scale.log)", rc, dir);
    snprintf(p, sizeof p, "%s/scale/metrics.jsonl", dir);
    int skipped = tf_count_lines(p, "\"skipped\": true"), good = tf_count_lines(p, "\"skipped\": false");
    snprintf(p, sizeof p, "%s/scale.log", dir);
    int said = tf_count_lines(p, "fp16 gradients overflowed");
    printf("fp16, targets x100: %d overflow steps skipped (%d reported), %d taken; --max_skipped_steps 2 not hit\n",
           skipped, said, good);
    CHECK_MSG(skipped >= 3 && said == skipped && good == 12, "%d skipped, %d reported, %d taken", skipped, said, good);
    snprintf(p, sizeof p, "%s/scale", dir);
    double s1 = tf_read_metric(p, 12, "loss_scale");
    CHECK_MSG(s1 == 65536.0 / (1 << skipped), "final loss scale %g, want 65536 / 2^%d", s1, skipped);
    snprintf(p, sizeof p, "%s/scale/prior", dir);
    CHECK_MSG(tf_weights_finite(p), "the fp16 run's final weights are not all finite");
    /* the scale is in the checkpoint */
    CHECK(tf_sh("grep -q '\"loss_scale\": %.1f' %s/scale/checkpoint-12/k22_state/state.json", s1, dir) == 0);
}

/* Stopped at step 4 and resumed: the same 12 losses as the uninterrupted run. */
static void fp16_resume(void)
{
    char a[512], p[4096], q[4096];
    snprintf(a, sizeof a, PRIOR_ARGS, dir);
    int rc = tf_sh("%s train-prior --pack %s/big.h5 %s --max_train_steps 12 --mixed_precision fp16 --stop_at_step 4 "
                   "--checkpointing_steps 100 --output_dir %s/res >%s/res1.log 2>&1", tf_bin(), dir, a, dir, dir);
    CHECK_MSG(rc == 99, "fp16 run with --stop_at_step 4 exited %d, want 99", rc);
    rc = tf_sh("%s train-prior --pack %s/big.h5 %s --max_train_steps 12 --mixed_precision fp16 "
               "--checkpointing_steps 100 --resume_from_checkpoint latest --output_dir %s/res >%s/res2.log 2>&1",
               tf_bin(), dir, a, dir, dir);
    CHECK_MSG(rc == 0, "resumed fp16 run exited %d", rc);
    double la[16] = {0}, lb[16] = {0};
    snprintf(p, sizeof p, "%s/scale", dir);
    snprintf(q, sizeof q, "%s/res", dir);
    CHECK(tf_read_losses(p, la, 15) == 12 && tf_read_losses(q, lb, 15) == 12);
    int same = 1;
    for (int s = 1; s <= 12; s++) same &= la[s] == lb[s];
    CHECK_MSG(same, "a resumed fp16 run's losses differ from the uninterrupted run's");
    CHECK_MSG(tf_read_metric(p, 12, "loss_scale") == tf_read_metric(q, 12, "loss_scale"), "loss scales differ");
}

/* The final weights as bf16 / fp16: the fp32 checkpoint of the last step, rounded. */
static void save_dtype(const char *dt, k22_dtype want, k22_precision round)
{
    char a[512], p[4096], q[4096];
    snprintf(a, sizeof a, PRIOR_ARGS, dir);
    int rc = tf_sh("%s train-prior --pack %s/data.h5 %s --max_train_steps 3 --checkpointing_steps 3 --save_dtype %s "
                   "--output_dir %s/save-%s >%s/save-%s.log 2>&1", tf_bin(), dir, a, dt, dir, dt, dir, dt);
    CHECK_MSG(rc == 0, "--save_dtype %s exited %d", dt, rc);
    snprintf(p, sizeof p, "%s/save-%s/prior/diffusion_pytorch_model.safetensors", dir, dt);
    snprintf(q, sizeof q, "%s/save-%s/checkpoint-3/prior/diffusion_pytorch_model.safetensors", dir, dt);
    k22_st_file *f = NULL, *c = NULL;
    k22_err err;
    k22_err_clear(&err);
    if (k22_st_open(p, &f, &err) || k22_st_open(q, &c, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        if (f) k22_st_close(f);
        return;
    }
    int n = k22_st_count(f), dtypes = 1, values = 1;
    for (int i = 0; i < n; i++) {
        const k22_st_tensor *t = k22_st_at(f, i), *u = k22_st_find(c, t->name);
        dtypes &= t->dtype == want && u && u->dtype == K22_DTYPE_F32;
        if (!u || u->dtype != K22_DTYPE_F32) continue;
        int64_t m = k22_shape_numel(t->ndim, t->shape);
        float *got = malloc((size_t)(m ? m : 1) * sizeof(float));
        k22_convert_to_f32(got, t->data, t->dtype, (size_t)m);
        const float *ref = u->data;
        for (int64_t j = 0; j < m; j++) values &= got[j] == k22_precision_round(round, ref[j]);
        free(got);
    }
    printf("--save_dtype %s: %d tensors stored as %s, each the fp32 checkpoint's value rounded: %s\n", dt, n, dt,
           values && dtypes ? "yes" : "NO");
    CHECK_MSG(n > 10 && dtypes && values, "--save_dtype %s: dtypes %d values %d", dt, dtypes, values);
    k22_st_close(f);
    k22_st_close(c);
    snprintf(p, sizeof p, "%s/save-%s/prior", dir, dt);
    CHECK_MSG(tf_weights_finite(p), "the %s folder does not load", dt);
}

static void refusals(void)
{
    char a[512];
    snprintf(a, sizeof a, PRIOR_ARGS, dir);
    int rc = tf_sh("%s train-prior --pack %s/data.h5 %s --max_train_steps 2 --mixed_precision bf16 --device cpu-ref "
                   "--output_dir %s/ref >%s/ref.log 2>&1", tf_bin(), dir, a, dir, dir);
    CHECK_MSG(rc == 2, "bf16 on cpu-ref exited %d, want 2", rc);
    CHECK(tf_sh("grep -q 'cpu-ref computes in fp32 only' %s/ref.log", dir) == 0);
    rc = tf_sh("%s train-prior --pack %s/data.h5 %s --mixed_precision fp8 --output_dir %s/fp8 >%s/fp8.log 2>&1",
               tf_bin(), dir, a, dir, dir);
    CHECK_MSG(rc == 2, "--mixed_precision fp8 exited %d, want 2", rc);
}

int main(void)
{
    tf_mpi_env();
    CHECK(mkdtemp(dir) != NULL);
    char p[4096];
    snprintf(p, sizeof p, "%s/data.h5", dir);
    CHECK(tf_write_pack(p, K22_PACK_FOR_PRIOR, 16, 16, 41) == 0);
    snprintf(p, sizeof p, "%s/big.h5", dir);
    CHECK(tf_write_pack_full(p, K22_PACK_FOR_PRIOR, 16, 16, 42, 16, 16, 100.0f) == 0);
    snprintf(p, sizeof p, "%s/dec.h5", dir);
    CHECK(tf_write_pack(p, K22_PACK_FOR_DECODER, 8, 16, 43) == 0);
    CHECK(tf_sh("%s init prior --size tiny --seed 4 --out %s/prior >/dev/null 2>&1", tf_bin(), dir) == 0);
    CHECK(tf_sh("%s init decoder --size tiny --seed 4 --out %s/decoder >/dev/null 2>&1", tf_bin(), dir) == 0);
    /* Tolerances: a loss is a mean of squares of values that moved by about the operand
     * precision through a few layers: bf16 (2^-9 relative rounding) stays within 1%, fp16
     * (2^-12) within 0.2%; measured figures are printed. */
    tracks("prior", PRIOR_ARGS, "data.h5", 1e-2, 2e-3);
    tracks("decoder", DEC_ARGS, "dec.h5", 1e-2, 2e-3);
    act16_same("prior", PRIOR_ARGS, "data.h5", "prior/diffusion_pytorch_model.safetensors", "bf16");
    act16_same("decoder", DEC_ARGS, "dec.h5", "unet/diffusion_pytorch_model.safetensors", "bf16");
    act16_same("decoder", DEC_ARGS, "dec.h5", "unet/diffusion_pytorch_model.safetensors", "fp16");
    fp16_scaling();
    fp16_resume();
    save_dtype("bf16", K22_DTYPE_BF16, K22_PREC_BF16);
    save_dtype("fp16", K22_DTYPE_F16, K22_PREC_FP16);
    refusals();
    if (k22_test_failures == 0) tf_sh("rm -rf %s", dir);
    return k22_test_finish("test_mixed_precision");
}
