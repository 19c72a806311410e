/* flops.h: model FLOPs of the two trained models counted from their configs (no profiler), for
 * the benchmarks' MFU figures (bench/bench_train_step.c).
 *
 * Counting rule (the one torch.utils.flop_counter.FlopCounterMode uses, so the two agree):
 *  - a multiply-add is 2 FLOPs; only matrix products are counted: linear layers (2 * rows *
 *    in * out), convolutions (2 * output elements * Cin * KH * KW) and attention's two
 *    products (2 * B * heads * Sq * Skv * d each, the full Sq x Skv grid whatever the mask);
 *  - biases, norms, activations, softmax, residual adds, pooling, upsampling, embeddings and
 *    the loss are not counted (each is O(elements), well under 1% of these models).
 * A training step is 3 forwards (backward = the input gradients + the weight gradients, one
 * forward each): the model FLOPs an MFU figure divides. Gradient checkpointing re-runs the
 * forward inside backward, so the hardware does 4 forwards; MFU still counts 3. */
#ifndef K22_FLOPS_H
#define K22_FLOPS_H

#include "k22/config.h"
#include "k22/unet.h"

/* One forward's FLOPs by kind; total = linear + conv + attn. Doubles: exact integers up to
 * 2^53 (9e15), beyond a full-size UNet forward at batch 64 and 96x96 latents. */
typedef struct {
    double linear, conv, attn, total;
} k22_flops;

/* PriorTransformer forward of B samples (T = num_embeddings + additional_embeddings tokens). */
k22_flops k22_flops_prior_forward(const k22_prior_config *c, int B);
/* UNet2DConditionModel (Kandinsky 2.2 decoder) forward of B latents of H x W. K22_ERR_ARG when
 * B < 1 or H, W are not positive multiples of 2^(nblocks-1); the table builder's errors for a
 * config k22 cannot build. */
k22_status k22_flops_unet_forward(const k22_unet_config *c, int B, int H, int W, k22_flops *out,
                                  k22_err *err);
/* The forward FLOPs a checkpointed backward re-runs with `levels` checkpointed
 * (k22_unet_set_checkpoint_levels) on model m (a shapes-only one will do): its checkpointed
 * blocks' (K22_UNET_CKPT_ALL: every block's, all but the embeddings, conv_in and the head). B, H, W
 * as k22_flops_unet_forward takes them. */
double k22_flops_unet_recompute(const k22_unet *m, int B, int H, int W, int levels);
/* Model FLOPs of one training step from one forward's: 3 x forward. */
double k22_flops_train(double forward);
/* What the hardware runs: 3 x forward, 4 x with gradient checkpointing (one more forward). */
double k22_flops_train_hw(double forward, int gradient_checkpointing);

#endif
