/* nn.h: the layers the models are built from (linear, layer norm, multi-head self-attention,
 * MLP, pre-norm transformer block), written once against the op interface.
 *
 * A layer holds device pointers into the flat parameter buffer and, when it is trained, into the
 * gradient buffer at the same offsets (bound once by diffusers key at model build). Forward
 * fills a cache struct (pointers into the activation arena) that backward reads; with a NULL
 * cache forward keeps nothing and releases its temporaries (frozen encoders, no-grad).
 * Backward ACCUMULATES into parameter gradients and into dx, as the ops do: callers zero once. */
#ifndef K22_NN_H
#define K22_NN_H

#include "k22/arena.h"
#include "k22/params.h"

/* Device pointer of a parameter of the table: base + offset of `name`; dies if it is absent
 * (tables are built by k22 itself, so a miss is a program bug). NULL base gives NULL. */
float *k22_param_ptr(const k22_params *ps, float *base, const char *name);
/* "<name>.<suffix>" into buf (returns buf); names come from k22's own tables, so a name that
 * does not fit is a program bug and dies. */
const char *k22_param_key(char *buf, size_t n, const char *name, const char *suffix);

/* torch nn.Linear: w (out, in), b (out) or NULL. dw/db NULL when frozen. */
typedef struct {
    const float *w, *b;
    float *dw, *db;
    int in, out;
} k22_linear;
/* Binds "<name>.weight" and, when the table has it, "<name>.bias". P: parameter buffer,
 * G: gradient buffer or NULL. */
void k22_linear_bind(k22_linear *l, const k22_params *ps, const char *name, const float *P,
                     float *G);
/* One linear over the n linears "<names_i>" of the same shape whose weights lie back to back in
 * the buffer, and their biases too (params_util.h k22_pb_linear_stack): (in, n * out), outputs
 * side by side. Returns 0, leaving l alone, when the table does not lay them out so. P NULL:
 * the shapes alone (pointers NULL). */
int k22_linear_bind_stack(k22_linear *l, const k22_params *ps, const char *const *names, int n,
                          const float *P, float *G);
/* x: (N, in) -> y: (N, out). */
void k22_linear_forward(const k22_backend *be, const k22_linear *l, float *y, const float *x,
                        int N);
/* dx (N, in) += ..., dw, db += ...; dx may be NULL. */
void k22_linear_backward(const k22_backend *be, const k22_linear *l, float *dx, const float *dy,
                         const float *x, int N);
/* The same with the input x, or x16 when it is not NULL: 16-bit values (ops.h linear_fwd_x16 /
 * linear_bwd_x16, under bf16/fp16). */
void k22_linear_forward_in(const k22_backend *be, const k22_linear *l, float *y, const float *x,
                           const uint16_t *x16, int N);
void k22_linear_backward_in(const k22_backend *be, const k22_linear *l, float *dx, const float *dy,
                            const float *x, const uint16_t *x16, int N);

/* LayerNorm over the last dim with affine weight/bias. */
typedef struct {
    const float *g, *b;
    float *dg, *db;
    int c;
    float eps;
} k22_layernorm;
void k22_layernorm_bind(k22_layernorm *ln, const k22_params *ps, const char *name, const float *P,
                        float *G, float eps);
/* x, y: (N, c); mean, rstd: (N) saved for backward. */
void k22_layernorm_forward(const k22_backend *be, const k22_layernorm *ln, float *y, float *mean,
                           float *rstd, const float *x, int N);
void k22_layernorm_backward(const k22_backend *be, const k22_layernorm *ln, float *dx,
                            const float *dy, const float *x, const float *mean, const float *rstd,
                            int N);

/* Multi-head self-attention: q/k/v projections with bias, heads split with permute, the
 * backend's attention, output projection. Scale head_dim^-0.5. */
typedef struct {
    k22_linear q, k, v, o;
    k22_linear qkv; /* with stacked: q, k and v as one linear of width 3C */
    int heads, head_dim;
    int act16; /* q, k, v and ocat kept as 16 bits (q16, ...; ops.h k22_backend_act16) */
    int stacked; /* the projections run as one GEMM over the stacked weights (qkv), and the heads
                  * are split by one permute; else three of each */
} k22_mha;
/* K22_QKV_STACK: 1 (unset) runs q, k, v as one GEMM where the weights lie stacked, 0 as three
 * (to measure the difference); another value is refused: an error from _read (the commands
 * check it when they make their backend), fatal from _env (what the layers call). */
k22_status k22_qkv_stack_read(int *on, k22_err *err);
int k22_qkv_stack_env(void);
typedef struct {
    float *q, *k, *v; /* (B, H, T, D); NULL with act16; one after the other when stacked */
    uint16_t *q16, *k16, *v16; /* (B, H, T, D) the same as 16 bits with act16, else NULL */
    float *o;         /* (B, H, T, D) attention output */
    float *lse;       /* (B, H, T) */
    float *ocat;      /* (B, T, C) heads merged, input of the output projection; NULL with act16 */
    uint16_t *ocat16; /* (B, T, C) the same as 16 bits with act16, else NULL */
} k22_mha_cache;
/* mask: the mask fields of the desc (mask, mask_bstride, causal, key_keep); the geometry is
 * filled here. x, y: (B, T, C); x16: x as 16-bit values (k22_linear_forward_in's) in place of x,
 * else NULL. */
void k22_mha_forward(const k22_backend *be, const k22_mha *a, k22_arena *ar, float *y,
                     const float *x, const uint16_t *x16, int B, int T,
                     const k22_attn_desc *mask, k22_mha_cache *c);
void k22_mha_backward(const k22_backend *be, const k22_mha *a, k22_arena *ar, float *dx,
                      const float *dy, const float *x, const uint16_t *x16, int B, int T,
                      const k22_attn_desc *mask, const k22_mha_cache *c);

/* MLP fc1 -> act -> fc2. */
typedef struct {
    k22_linear fc1, fc2;
    int act;   /* k22_act */
    int act16; /* the activation's output kept as 16 bits (ops.h k22_backend_act16): g16 */
} k22_mlp;
typedef struct {
    float *h;      /* (N, F) fc1 output, the activation's input */
    float *g;      /* (N, F) activation output, fc2's input; NULL with act16 */
    uint16_t *g16; /* (N, F) the same as 16 bits with act16; else NULL */
} k22_mlp_cache;
/* x16: the input x as 16-bit values in place of x, or NULL (as k22_mha_forward's). */
void k22_mlp_forward(const k22_backend *be, const k22_mlp *m, k22_arena *ar, float *y,
                     const float *x, const uint16_t *x16, int N, k22_mlp_cache *c);
void k22_mlp_backward(const k22_backend *be, const k22_mlp *m, k22_arena *ar, float *dx,
                      const float *dy, const float *x, const uint16_t *x16, int N,
                      const k22_mlp_cache *c);

/* Pre-norm transformer block: x1 = x + attn(LN1(x)); y = x1 + mlp(LN2(x1)). */
typedef struct {
    k22_layernorm ln1, ln2;
    k22_mha attn;
    k22_mlp mlp;
    int act16; /* the layer norms' outputs kept as 16 bits (ln1_16, ln2_16), see k22_block_set_act16 */
} k22_block;
typedef struct {
    const float *x;           /* (B, T, C) the block input (owned by the caller) */
    float *ln1, *mean1, *rstd1; /* (B, T, C), (B, T), (B, T); ln1 NULL with act16 */
    uint16_t *ln1_16;         /* (B, T, C) ln1 as 16 bits with act16, else NULL */
    k22_mha_cache attn;
    float *x1;                /* (B, T, C) */
    float *ln2, *mean2, *rstd2; /* as ln1's */
    uint16_t *ln2_16;
    k22_mlp_cache mlp;
} k22_block_cache;

/* Sub-module names of a block inside the state dict. */
typedef struct {
    const char *ln1, *q, *k, *v, *o, *ln2, *fc1, *fc2;
} k22_block_names;
extern const k22_block_names k22_block_names_clip;  /* CLIPEncoderLayer */
extern const k22_block_names k22_block_names_basic; /* diffusers BasicTransformerBlock */

void k22_block_bind(k22_block *blk, const k22_params *ps, const char *prefix,
                    const k22_block_names *nm, const float *P, float *G, int heads, int act,
                    float eps);
/* on != 0: the block keeps what only its linears and attention read as 16 bits (ops.h
 * k22_backend_act16, which the backend running it must offer): the layer norms' outputs (q/k/v
 * and fc1 inputs), the attention's q, k, v, the merged heads (out_proj's input) and the MLP
 * activation (fc2's input). The same results: those ops round them so anyway. */
void k22_block_set_act16(k22_block *blk, int on);
/* x, y: (B, T, C), distinct. With a cache, its buffers stay allocated in the arena (and x must
 * stay valid) until backward; without, the arena is back where it was on return. */
void k22_block_forward(const k22_backend *be, const k22_block *blk, k22_arena *ar, float *y,
                       const float *x, int B, int T, const k22_attn_desc *mask,
                       k22_block_cache *c);
/* dx (B, T, C) += d(block)/dx^T dy; parameter gradients +=. Scratch is released on return. */
void k22_block_backward(const k22_backend *be, const k22_block *blk, k22_arena *ar, float *dx,
                        const float *dy, int B, int T, const k22_attn_desc *mask,
                        const k22_block_cache *c);

/* Arena floats one block needs for N = B*T tokens of width C, MLP width F and H heads:
 * kept by forward with a cache, peak of forward without one, peak of backward's scratch;
 * act16: the block's act16; stacked: its attention's stacked. */
size_t k22_block_cache_floats(int B, int T, int C, int F, int H, int act16, int stacked);
size_t k22_block_nograd_floats(int B, int T, int C, int F, int H, int act16, int stacked);
size_t k22_block_bwd_floats(int B, int T, int C, int F, int H, int stacked);
/* The scratch of a cached attention forward beyond its cache: the projections' output before
 * the head split (and with act16 and stacked, the split heads before they are rounded). */
size_t k22_mha_proj_floats(int B, int T, int C, int act16, int stacked);

#endif
