/* cmd_train.c: `k22 train-prior` and `k22 train-decoder`: the diffusers scripts' flags, parsed
 * into k22_train_opts, then the training loop (loop.h) on every MPI rank. */
#include "k22/cli.h"
#include "k22/loop.h"
#include "k22/ops.h"
#include "k22/opts.h"
#include "k22/train_core.h"

#include <stdio.h>
#include <string.h>

#define TRAIN_EXIT_HELP                                                                            \
    "Exit codes: 0 done (--output_dir is a complete pipeline folder); 99 stopped by SIGTERM or "  \
    "SIGUSR1 (or --stop_at_step) after writing a complete checkpoint at the next optimizer-step "   \
    "boundary: requeue the job with --resume_from_checkpoint latest; 2 bad option, pack or "       \
    "checkpoint; 3 too many non-finite steps in a row (checkpoint of the last good weights "       \
    "written); 1 I/O failure. A fatal error on any rank ends the whole MPI job (MPI_Abort). "   \
    "Launch with mpirun/srun for several ranks; --train_batch_size is per rank. Gradients are "   \
    "all-reduced (sum, then divided by the world size, as DDP) once per optimizer step over the " \
    "accumulated buffer. Resume continues mid-epoch at the exact sample; a different world size " \
    "is accepted only with the same global batch (ranks x batch x accumulation)."

/* The resolved options as JSON, saved in each checkpoint's state. */
static json_t *settings_json(const k22_opt *opts, int n)
{
    json_t *o = json_object();
    for (int i = 0; i < n; i++) {
        const k22_opt *p = &opts[i];
        json_t *v = NULL;
        switch (p->type) {
        case K22_OPT_STR:
        case K22_OPT_CHOICE: {
            const char *s = *(const char **)p->dst;
            v = s ? json_string(s) : json_null();
            break;
        }
        case K22_OPT_INT: v = json_integer(*(int64_t *)p->dst); break;
        case K22_OPT_FLOAT: v = json_real(*(double *)p->dst); break;
        case K22_OPT_FLAG: v = json_boolean(*(int *)p->dst); break;
        case K22_OPT_LIST: {
            const k22_strlist *l = p->dst;
            v = json_array();
            for (int k = 0; k < l->n; k++) json_array_append_new(v, json_string(l->v[k]));
            break;
        }
        }
        json_object_set_new(o, p->name, v ? v : json_null());
    }
    return o;
}

static int run_train(int argc, char **argv, k22_pipe_kind stage)
{
    const char *cmd = stage == K22_PIPE_PRIOR ? "train-prior" : "train-decoder";
    k22_train_opts t;
    memset(&t, 0, sizeof t);
    const char *levels = NULL; /* --checkpoint_levels: N or auto (t.checkpoint_levels, K22_CKPT_LEVELS_AUTO) */
    t.stage = stage;
    const k22_opt opts[] = {
        {"pack", K22_OPT_STR, &t.pack, NULL, "HDF5 training pack (k22 pack)", NULL, NULL, 1},
        {"pretrained", K22_OPT_STR, &t.pretrained, NULL,
         stage == K22_PIPE_PRIOR ? "prior pipeline folder (model_index.json) or prior component folder"
                                 : "decoder pipeline folder (unet/, movq/, scheduler/)", NULL, NULL, 1},
        {"output_dir", K22_OPT_STR, &t.output_dir, NULL, "checkpoints, metrics.jsonl and the final pipeline", NULL, NULL, 1},
        {"learning_rate", K22_OPT_FLOAT, &t.learning_rate, "1e-4", "base learning rate", NULL, NULL, 0},
        {"train_batch_size", K22_OPT_INT, &t.train_batch_size, "1", "samples per micro-step PER RANK", NULL, NULL, 0},
        {"gradient_accumulation_steps", K22_OPT_INT, &t.gradient_accumulation_steps, "1", "micro-steps per optimizer step", NULL, NULL, 0},
        {"max_train_steps", K22_OPT_INT, &t.max_train_steps, "0", "optimizer steps; 0: num_train_epochs epochs", NULL, NULL, 0},
        {"num_train_epochs", K22_OPT_INT, &t.num_train_epochs, "100", "epochs when --max_train_steps is 0", NULL, NULL, 0},
        {"checkpointing_steps", K22_OPT_INT, &t.checkpointing_steps, "500", "checkpoint every N optimizer steps", NULL, NULL, 0},
        {"checkpoints_total_limit", K22_OPT_INT, &t.checkpoints_total_limit, "0", "keep at most N checkpoints (0: all)", NULL, NULL, 0},
        {"resume_from_checkpoint", K22_OPT_STR, &t.resume_from_checkpoint, NULL,
         "latest (newest complete checkpoint in --output_dir; none: start fresh) or a checkpoint folder", NULL, NULL, 0},
        {"snr_gamma", K22_OPT_FLOAT, &t.snr_gamma, "0", "Min-SNR gamma (0: off)", NULL, NULL, 0},
        {"use_ema", K22_OPT_FLAG, &t.use_ema, NULL, "keep an EMA of the weights (saved as the final model)", NULL, NULL, 0},
        {"lr_scheduler", K22_OPT_CHOICE, &t.lr_scheduler, "constant", "learning-rate schedule (stepped world-size times per optimizer step, as accelerate)",
         NULL, "constant|constant_with_warmup|linear|cosine|cosine_with_restarts|polynomial", 0},
        {"lr_warmup_steps", K22_OPT_INT, &t.lr_warmup_steps, "500", "warmup optimizer steps", NULL, NULL, 0},
        {"max_grad_norm", K22_OPT_FLOAT, &t.max_grad_norm, "1.0", "gradient clipping norm", NULL, NULL, 0},
        {"adam_beta1", K22_OPT_FLOAT, &t.adam_beta1, "0.9", "AdamW beta1", NULL, NULL, 0},
        {"adam_beta2", K22_OPT_FLOAT, &t.adam_beta2, "0.999", "AdamW beta2", NULL, NULL, 0},
        {"adam_weight_decay", K22_OPT_FLOAT, &t.adam_weight_decay, "0.0",
         "AdamW weight decay", NULL, NULL, 0},
        {"adam_epsilon", K22_OPT_FLOAT, &t.adam_epsilon, "1e-8", "AdamW epsilon", NULL, NULL, 0},
        {"seed", K22_OPT_INT, &t.seed, "0", "data order, noise and timesteps (never the rank count)", NULL, NULL, 0},
        {"gradient_checkpointing", K22_OPT_FLAG, &t.gradient_checkpointing, NULL, "recompute activations in backward", NULL, NULL, 0},
        {"checkpoint_levels", K22_OPT_STR, &levels, "0",
         stage == K22_PIPE_PRIOR
             ? "k22: train-decoder only (the prior's blocks are all alike); must stay 0 here"
             : "k22: with --gradient_checkpointing, recompute only the blocks at the N highest resolutions, which "
               "hold the most activations for the least compute (1: the latents' own size; the set-up line says "
               "what each N keeps and recomputes); 0: every block, as diffusers; auto: the fewest levels (none "
               "at all if it fits) whose activations fit in the device's free memory at start, less a reserve "
               "the set-up line states (K22_MEM_FREE_MIB=N says N MiB are free instead of asking the device)",
         NULL, NULL, 0},
        {"mixed_precision", K22_OPT_CHOICE, &t.mixed_precision, "no",
         "bf16/fp16: matmuls, convolutions and attention take bf16/fp16 operands and accumulate in fp32; "
         "weights, AdamW state and the other ops stay fp32 (the activations only a GEMM reads, the decoder's "
         "convolution inputs, the prior's layer-norm outputs and MLP activations, both models' attention "
         "q, k, v and linear inputs, are kept as bf16/fp16, which the GEMMs take anyway: "
         "less memory, the same figures; K22_ACT16=0 keeps floats); fp16 adds dynamic loss scaling. Emulated on "
         "cpu (to check a run's numerics; slower than no), not available on cpu-ref", NULL, "no|fp16|bf16", 0},
        {"save_dtype", K22_OPT_CHOICE, &t.save_dtype, "fp32",
         "dtype of the final model's weights (checkpoints keep fp32 so resuming is exact)", NULL, "fp32|fp16|bf16", 0},
        {"device", K22_OPT_STR, &t.device, "cpu", K22_DEVICE_HELP, "K22_DEVICE", NULL, 0},
        {"log_every", K22_OPT_INT, &t.log_every, "10", "progress line every N steps (metrics.jsonl gets every step)", NULL, NULL, 0},
        {"validation_split", K22_OPT_FLOAT, &t.validation_split, "0",
         "hold out this fraction of the pack (its last rows) and report their loss at each checkpoint (0: off)", NULL, NULL, 0},
        {"max_skipped_steps", K22_OPT_INT, &t.max_skipped_steps, "10",
         "stop (checkpoint, exit 3) after N optimizer steps in a row with a non-finite gradient, each skipped (fp16 overflows with a finite loss, which the loss scaler handles, do not count)", NULL, NULL, 0},
        {"validation_prompts", K22_OPT_LIST, &t.validation_prompts, NULL,
         stage == K22_PIPE_PRIOR ? "prompts of the validation image grid (needs --decoder_for_validation)"
                                 : "prompts of the validation image grid (needs --prior_for_validation)", NULL, NULL, 0},
        {"validation_epochs", K22_OPT_INT, &t.validation_epochs, "5",
         "validation images after epochs 0, N, 2N, ... and at the end", NULL, NULL, 0},
        {stage == K22_PIPE_PRIOR ? "decoder_for_validation" : "prior_for_validation", K22_OPT_STR,
         &t.other_for_validation, NULL,
         stage == K22_PIPE_PRIOR ? "decoder pipeline folder that draws the validation images"
                                 : "prior pipeline folder that turns the validation prompts into image embeddings",
         NULL, NULL, 0},
        {"validation_resolution", K22_OPT_INT, &t.validation_resolution, "0",
         "side of the validation images (0: the pack's resolution)", NULL, NULL, 0},
        {"zero_stage", K22_OPT_INT, &t.zero_stage, "0",
         "k22: 1 shards the AdamW moments and the EMA over the ranks (ZeRO-1: gradients reduce-scattered, weights "
         "all-gathered; same results and checkpoints); 0 keeps them whole on every rank", NULL, NULL, 0},
        {"bucket_cap_mb", K22_OPT_FLOAT, &t.bucket_cap_mb, "25",
         "k22: on several ranks, all-reduce the gradients in buckets of this many MiB, each sent as soon as the "
         "backward has finished it (DDP's bucket_cap_mb; same results; under --zero_stage 1 each bucket is summed "
         "onto the ranks that own it); 0: one exchange after the backward", NULL, NULL, 0},
        {"stop_at_step", K22_OPT_INT, &t.stop_at_step, "0", "k22: checkpoint and exit 99 after step N, as after a signal (0: off)", NULL, NULL, 0},
        {"profile", K22_OPT_FLAG, &t.profile, NULL,
         "time every backend op of the training loop and print a per-op table at the end on rank 0 (GPU "
         "times from CUDA events; the run gets a little slower)", "K22_PROFILE", NULL, 0},
    };
    k22_cmd_spec spec = {
        .usage = stage == K22_PIPE_PRIOR ? "k22 train-prior --pack DATA.h5 --pretrained DIR --output_dir OUT [options]"
                                         : "k22 train-decoder --pack DATA.h5 --pretrained DIR --output_dir OUT [options]",
        .summary = stage == K22_PIPE_PRIOR
                       ? "Trains the Kandinsky 2.2 prior as train_text_to_image_prior.py does. " TRAIN_EXIT_HELP
                       : "Trains the Kandinsky 2.2 decoder UNet as train_text_to_image_decoder.py does. " TRAIN_EXIT_HELP,
        .opts = opts, .nopts = (int)(sizeof opts / sizeof opts[0]),
    };
    int rc = k22_opts_parse_cli(&spec, argc, argv, cmd);
    if (rc >= 0) return rc;
    if (!k22_ckpt_levels_parse(levels, &t.checkpoint_levels)) {
        fprintf(stderr, "k22 %s: --checkpoint_levels '%s': expected auto or a whole number 0..%d\n", cmd, levels,
                K22_CKPT_LEVELS_MAX);
        return 2;
    }
    k22_err derr;
    if (k22_backend_name_check(t.device, &derr)) {
        fprintf(stderr, "k22 %s: --device: %s\n", cmd, derr.msg);
        return 2;
    }
    k22_dist d;
    k22_dist_init(&d);
    if (d.rank == 0) {
        k22_opts_print(&spec, stdout);
        fflush(stdout);
    }
    t.settings = settings_json(opts, spec.nopts);
    rc = k22_train_run(&t, &d);
    json_decref(t.settings);
    k22_dist_finalize(&d);
    return rc;
}

int k22_cmd_train_prior(int argc, char **argv)
{
    return run_train(argc, argv, K22_PIPE_PRIOR);
}

int k22_cmd_train_decoder(int argc, char **argv)
{
    return run_train(argc, argv, K22_PIPE_DECODER);
}
