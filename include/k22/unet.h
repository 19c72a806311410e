/* unet.h: diffusers UNet2DConditionModel as the Kandinsky 2.2 decoder uses it (image_proj tokens,
 * image addition embedding, scale_shift resnets that also do the down/upsampling, attention with
 * added K/V from the image tokens), forward and hand-written backward over the op interface.
 *
 * Layers: k22_resnet (ResnetBlock2D), k22_unet_attn (Attention + AttnAddedKVProcessor2_0), then
 * the model. Forward with train != 0 keeps every layer's cache in the arena; backward walks the
 * layers in reverse and must follow before the arena is reset. Backward ACCUMULATES.
 *
 * Gradient checkpointing (--gradient_checkpointing; off by default), per block as diffusers does
 * it (each down block, the mid block, each up block): a training forward keeps only each block's
 * input and the skip tensors the up blocks read; backward re-runs each block's forward (with
 * caches, in arena scratch) just before that block's backward. The ops and their order are the
 * same as without it, so the gradients are the same bit for bit on a deterministic backend.
 * --checkpoint_levels limits it to the blocks at the highest resolutions (k22_unet_set_checkpoint_levels). */
#ifndef K22_UNET_H
#define K22_UNET_H

#include "k22/config.h"
#include "k22/grad_marks.h"
#include "k22/nn2d.h"

/* ResnetBlock2D, time_embedding_norm "scale_shift", output_scale_factor 1:
 * y = shortcut(R(x)) + conv2(silu(norm2(conv1(R(silu(norm1(x))))) * (1 + s) + t))
 * with (s, t) = time_emb_proj(temb_act) and R the resampling (none, avg-pool 2x2, nearest 2x). */
enum { K22_RESAMPLE_NONE = 0, K22_RESAMPLE_DOWN, K22_RESAMPLE_UP };
typedef struct {
    k22_groupnorm norm1, norm2;
    k22_conv conv1, conv2, shortcut;
    int has_shortcut;
    k22_linear temb_proj;
    int cin, cout, resample;
    /* The conv inputs silu(norm(..)) kept as 16 bits (ops.h k22_backend_act16; set through
     * k22_unet_set_act16): a1 (or, resampling, a1r) and a2 then live in the a1_16 and a2_16 of
     * the cache, at half the bytes, and the sizes below follow. */
    int act16;
} k22_resnet;
typedef struct {
    const float *x;                 /* (B, cin, H, W) the input (owned by the caller) */
    /* The norms' outputs are not kept: the fused group_norm_act backward recomputes them from
     * the input and mean/rstd (ops.h). */
    float *mean1, *rstd1;           /* (B, G) each */
    float *a1, *a1r, *xr;           /* silu(norm1(x)) (B, cin, H, W), NULL when resampling (only
                                     * its resampled a1r is kept); x resampled (B, cin, H', W'),
                                     * kept for the shortcut (NULL resampling without one), x
                                     * itself when not resampling */
    float *h1, *ts;                 /* conv1 out (B, cout, H', W'); (B, 2 cout) scale | shift */
    float *mean2, *rstd2;           /* (B, G) each */
    float *a2;                      /* silu(norm2(h1) * (1 + s) + t) (B, cout, H', W') */
    uint16_t *a1_16, *a2_16;        /* with act16: a1 (a1r when resampling) and a2 as 16 bits,
                                     * the float pointers of those then NULL; else NULL */
} k22_resnet_cache;
void k22_resnet_bind(k22_resnet *r, const k22_params *ps, const char *name, const float *P,
                     float *G, int groups, float eps, int resample);
/* x: (B, cin, H, W) -> y: (B, cout, H', W'); temb_act: (B, TE) silu of the time embedding. */
void k22_resnet_forward(const k22_backend *be, const k22_resnet *r, k22_arena *ar, float *y,
                        const float *x, const float *temb_act, int B, int H, int W,
                        k22_resnet_cache *c);
/* dx (B, cin, H, W) +=, dtemb_act (B, TE) +=, parameter gradients +=. */
void k22_resnet_backward(const k22_backend *be, const k22_resnet *r, k22_arena *ar, float *dx,
                         float *dtemb_act, const float *dy, const float *temb_act, int B, int H,
                         int W, const k22_resnet_cache *c);
size_t k22_resnet_cache_floats(const k22_resnet *r, int B, int H, int W);
size_t k22_resnet_fwd_floats(const k22_resnet *r, int B, int H, int W);
size_t k22_resnet_bwd_floats(const k22_resnet *r, int B, int H, int W);

/* Attention with added K/V (SimpleCrossAttn blocks): group norm over x, q from the pixels, keys
 * and values [add_k/v_proj(ehs); to_k/v(pixels)], to_out, plus the residual x. */
typedef struct {
    k22_groupnorm gn;
    k22_linear q, k, v, ak, av, o;
    k22_linear qkv; /* with stacked: to_q, to_k and to_v as one linear of width 3C */
    int C, heads, hd;
    int act16; /* tok, q4, k4, v4 and ocat kept as 16 bits (tok16, q16, k16, v16, ocat16; ops.h
                * k22_backend_act16), see k22_unet_set_act16 */
    int stacked; /* q, k, v of the pixels as one GEMM over the stacked weights (nn.h
                  * k22_qkv_stack_env) and one head split; else three of each */
} k22_unet_attn;
typedef struct {
    const float *x;                  /* (B, C, S) the input (owned by the caller) */
    float *mean, *rstd;              /* (B, G), (B, G) */
    float *tok;                      /* (B, S, C) normed pixels as tokens (q/k/v's input); NULL
                                      * with act16 */
    uint16_t *tok16;                 /* (B, S, C) the same as 16 bits with act16, else NULL */
    float *q4, *k4, *v4, *o4, *lse;  /* (B, NH, S, D), (B, NH, L+S, D) x2, (B, NH, S, D), (B, NH, S);
                                      * q4, k4, v4 NULL with act16 */
    uint16_t *q16, *k16, *v16;       /* q4, k4, v4 as 16 bits with act16, else NULL */
    float *ocat;                     /* (B, S, C) heads merged (to_out's input); NULL with act16 */
    uint16_t *ocat16;                /* (B, S, C) the same as 16 bits with act16, else NULL */
} k22_unet_attn_cache;
void k22_unet_attn_bind(k22_unet_attn *a, const k22_params *ps, const char *name, const float *P,
                        float *G, int head_dim, int groups, float eps);
/* x, y: (B, C, S) distinct; ehs: (B, L, cross) image tokens. */
void k22_unet_attn_forward(const k22_backend *be, const k22_unet_attn *a, k22_arena *ar, float *y,
                           const float *x, const float *ehs, int B, int S, int L,
                           k22_unet_attn_cache *c);
/* dx (B, C, S) +=, dehs (B, L, cross) +=, parameter gradients +=. */
void k22_unet_attn_backward(const k22_backend *be, const k22_unet_attn *a, k22_arena *ar,
                            float *dx, float *dehs, const float *dy, const float *ehs, int B,
                            int S, int L, const k22_unet_attn_cache *c);
size_t k22_unet_attn_cache_floats(const k22_unet_attn *a, int B, int S, int L);
size_t k22_unet_attn_fwd_floats(const k22_unet_attn *a, int B, int S, int L);
size_t k22_unet_attn_bwd_floats(const k22_unet_attn *a, int B, int S, int L);

/* The model runs as a list of steps in execution order (built once at init), so backward is the
 * same list walked backwards. */
enum { K22_USTEP_RES = 0, K22_USTEP_ATTN, K22_USTEP_PUSH, K22_USTEP_CAT };
typedef struct {
    int kind, layer;    /* layer: index into res or attn; PUSH/CAT: skip index */
    int cin, cout, level; /* channels in/out; input resolution is (H, W) >> level */
} k22_unet_step;
typedef struct {
    float *out;         /* (B, cout, H', W') the step's output (RES, ATTN, CAT) */
    union { k22_resnet_cache res; k22_unet_attn_cache attn; } c;
} k22_unet_step_state;

typedef struct {
    k22_unet_config cfg;
    int TE, L, c0;      /* time-embedding width, image tokens (32), block_out_channels[0] */
    k22_conv conv_in, conv_out;
    k22_linear time1, time2, tok_proj, time_img_proj;
    k22_layernorm tok_norm, time_img_norm;
    k22_groupnorm norm_out;
    k22_resnet *res;
    k22_unet_attn *attn;
    k22_unet_step *steps;
    int nres, nattn, nsteps, nskips;
    /* forward state, read by backward */
    int B, H, W, train;
    const float *x_t, *img;
    float *tproj, *th, *tact, *temb, *ip, *ipn, *ipmean, *iprstd, *emb, *emb_act;
    float *tokraw, *ehs, *tokmean, *tokrstd, *h0, *gmean, *grstd, *gact;
    uint16_t *gact16;             /* gact as 16 bits with act16 (conv_out's input; gact NULL) */
    const float *head_in;         /* (B, c0, H, W) the last step's output, conv_norm_out's input */
    const float **skip;           /* nskips */
    float **dskip;                /* nskips, their gradients during backward */
    k22_unet_step_state *st;      /* nsteps */
    /* gradient checkpointing */
    int grad_ckpt;                /* checkpointed levels, see k22_unet_set_checkpoint_levels */
    int act16;                    /* 16-bit GEMM-only inputs, see k22_unet_set_act16 */
    int ckpt;                     /* ... as the last training forward ran (0: not checkpointed) */
    int nsegs, *seg;              /* nsegs + 1 step indices: block b is steps [seg[b], seg[b+1]) */
    unsigned char *keep;          /* nsteps: output kept by a checkpointed forward (skip or block out) */
    const float **seg_in;         /* nsegs: each block's input, kept by a checkpointed forward */
    /* The parameters keyed by step (the head's conv_norm_out and conv_out by nsteps; also in a
     * shapes-only model); backward tells grad_hook (NULL: nobody) as each step finishes
     * (grad_marks.h). */
    k22_grad_marks marks;
    const k22_grad_hook *grad_hook;
} k22_unet;

/* Binds to P (a buffer laid out by k22_params_build(cfg)) and G (gradients of the same layout,
 * or NULL). Dies on a config k22 does not implement (the config reader refuses those).
 * P == NULL (with G NULL): shapes only, from the table alone, so the arena size functions can
 * plan a full-size model without its weights; such a model must not be run. */
void k22_unet_init(k22_unet *m, const k22_unet_config *cfg, const k22_params *ps, const float *P,
                   float *G);
void k22_unet_free(k22_unet *m);
/* Arena floats for a forward (and, with train, the backward after it) of B x (H, W) latents.
 * Without train the layer caches are dropped as each layer returns: every step's output (the
 * skips among them) is kept until the end, which is simple and costs a fraction of the caches. */
size_t k22_unet_arena_floats(const k22_unet *m, int B, int H, int W, int train);
/* on != 0: later training forwards are checkpointed, every block (see the top of this file);
 * sizes from k22_unet_arena_floats follow the flag, so set it before sizing the arena. A
 * forward/backward pair already started finishes in the mode its forward ran in. */
void k22_unet_set_gradient_checkpointing(k22_unet *m, int on);
/* on != 0: the resnets keep their convolution inputs (k22_resnet.act16) and the attention blocks
 * their normed tokens, q, k, v and merged heads (k22_unet_attn.act16), as 16 bits, which the
 * backend running the model must then offer (ops.h k22_backend_act16: bf16/fp16): the same
 * figures as floats (the GEMMs and the attention round there anyway), about a third less memory
 * in each resnet's cache. Sizes follow the flag, so set it before sizing the arena. */
void k22_unet_set_act16(k22_unet *m, int on);
/* Checkpointing by resolution: only the blocks whose input lies at one of the `levels` highest
 * resolutions (level < levels, level 0 being the latents' own; a down block i is at level i, an
 * up block i at nblocks-1-i, the mid block at nblocks-1) are re-run in backward; the others keep
 * their caches. A block's activations grow with its pixels times channels and its compute with
 * pixels times channels squared, so the high-resolution blocks free the most memory for the least
 * recomputation. 0: none; K22_UNET_CKPT_ALL (or any value >= nblocks): every block, as
 * k22_unet_set_gradient_checkpointing(m, 1). The gradients are the same bit for bit either way. */
#define K22_UNET_CKPT_ALL 64
void k22_unet_set_checkpoint_levels(k22_unet *m, int levels);
/* Whether block g (steps [seg[g], seg[g+1])) is re-run in backward with `levels` checkpointed. */
int k22_unet_block_checkpointed(const k22_unet *m, int g, int levels);
/* The arena floats with the checkpointed levels given explicitly (train 0 ignores ckpt), and the
 * floats a training forward leaves allocated for backward (the activations kept). */
size_t k22_unet_arena_floats_ckpt(const k22_unet *m, int B, int H, int W, int train, int ckpt);
size_t k22_unet_saved_floats(const k22_unet *m, int B, int H, int W, int ckpt);
/* The settings in the order of the forward compute backward re-runs, k = 0 .. nblocks: 0 (none),
 * 1 .. nblocks-1 levels, then K22_UNET_CKPT_ALL (every block) at k = nblocks. */
int k22_unet_ckpt_candidate(const k22_unet *m, int k);
/* --checkpoint_levels auto: the fewest checkpointed levels (0, 1 .. nblocks-1, then
 * K22_UNET_CKPT_ALL: the order of the forward compute backward re-runs) whose training arena
 * takes at most budget_floats; where none does, the one with the smallest arena. *fits (may be
 * NULL) says which. */
int k22_unet_ckpt_levels_fit(const k22_unet *m, int B, int H, int W, size_t budget_floats, int *fits);
/* x_t: (B, in_channels, H, W) with H, W divisible by 2^(nblocks-1); t: (B) timesteps (float);
 * image_embeds: (B, encoder_hid_dim); out: (B, out_channels, H, W). With train, x_t and
 * image_embeds must stay valid until backward. */
void k22_unet_forward(const k22_backend *be, k22_unet *m, k22_arena *ar, const float *x_t,
                      const float *t, const float *image_embeds, int B, int H, int W, float *out,
                      int train);
/* dout: (B, out_channels, H, W). Accumulates every parameter gradient and, when non-NULL,
 * dx_t (B, in_channels, H, W). The timestep and image_embeds get none. */
void k22_unet_backward(const k22_backend *be, k22_unet *m, k22_arena *ar, const float *dout,
                       float *dx_t);

#endif
