/* lt_plan.cu: cuBLASLt's set-up of one GEMM shape, made once and kept in the context: the matmul
 * descriptor, the three matrix layouts and the algorithm cublasLtMatmulAlgoGetHeuristic chose.
 *
 * The heuristic query is a host-side search over the library's kernels and the descriptors are
 * host allocations; made per call they cost several microseconds on each of the thousands of
 * GEMMs of a UNet step, which come from a few hundred shapes. The key (k22_lt_key) holds every
 * input the query gets from k22 (types, transposes, M, N, K, leading dimensions, batch count and
 * strides, the operand alignments; the workspace cap is the context's and never changes), and
 * the heuristic is deterministic for its inputs, so a kept algorithm is the one a new query would
 * return and the products keep their bits.
 *
 * The table is fixed (K22_LT_SETS sets of K22_LT_WAYS plans, allocated at creation): a key hashes
 * to a set, and a miss in a full set replaces its plans in turn. Past the first step of a run
 * every shape is in the table and nothing is allocated or queried. */
#include "common.cuh"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define K22_LT_SETS 256
#define K22_LT_WAYS 4

void k22_lt_key_init(k22_lt_key *k)
{
    memset(k, 0, sizeof *k); /* the table compares keys bytewise */
}

/* FNV-1a over the key's bytes. */
static uint32_t k22_lt_hash(const k22_lt_key *k)
{
    const unsigned char *b = (const unsigned char *)k;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < sizeof *k; i++) h = (h ^ b[i]) * 1099511628211ull;
    return (uint32_t)(h ^ (h >> 32));
}

static void k22_lt_layout(cublasLtMatrixLayout_t *l, cudaDataType_t type, uint64_t rows,
                          uint64_t cols, int64_t ld, int batch, int64_t stride)
{
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(l, type, rows, cols, ld));
    if (batch > 1) {
        int32_t count = batch;
        CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(*l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT,
                                                      &count, sizeof count));
        CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(
            *l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof stride));
    }
}

static void k22_lt_plan_clear(struct k22_lt_plan *p)
{
    if (p->lc) cublasLtMatrixLayoutDestroy(p->lc);
    if (p->lb) cublasLtMatrixLayoutDestroy(p->lb);
    if (p->la) cublasLtMatrixLayoutDestroy(p->la);
    if (p->op) cublasLtMatmulDescDestroy(p->op);
    memset(p, 0, sizeof *p);
}

/* One attribute of a chosen algorithm's configuration, as a number; -1 where cuBLASLt has none. */
static long long k22_lt_config(const cublasLtMatmulAlgo_t *algo,
                               cublasLtMatmulAlgoConfigAttributes_t a, size_t bytes)
{
    uint64_t v = 0; /* little-endian: the attribute's bytes from the low end */
    size_t written = 0;
    if (cublasLtMatmulAlgoConfigGetAttribute(algo, a, &v, bytes, &written) != CUBLAS_STATUS_SUCCESS)
        return -1;
    return bytes == 2 ? (long long)(uint16_t)v : (long long)(uint32_t)v;
}

/* K22_LT_LOG=1: one key=value line on stderr per set-up (the GPU session's logs keep them): the
 * shape, cuBLASLt's answer and, where it found one, its algorithm's id, tile, stages and cluster
 * shape ids (cublasLtMatmulTile_t, _Stages_t, cublasLtClusterShape_t), split-K count, workspace and
 * waves (thread blocks over the SMs' slots: 1.3 leaves most of a second wave idle). */
static void k22_lt_log(const k22_lt_key *k, const struct k22_lt_plan *p,
                       const cublasLtMatmulHeuristicResult_t *h)
{
    const char *type = k->ab == CUDA_R_16BF ? "bf16" : k->ab == CUDA_R_16F ? "fp16" : "fp32";
    char tail[200] = "";
    if (p->status == CUBLAS_STATUS_SUCCESS)
        snprintf(tail, sizeof tail, " algo=%lld tile=%lld stages=%lld cluster=%lld splitk=%lld "
                 "ws_kib=%.1f waves=%.3f", k22_lt_config(&h->algo, CUBLASLT_ALGO_CONFIG_ID, 4),
                 k22_lt_config(&h->algo, CUBLASLT_ALGO_CONFIG_TILE_ID, 4),
                 k22_lt_config(&h->algo, CUBLASLT_ALGO_CONFIG_STAGES_ID, 4),
                 k22_lt_config(&h->algo, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID, 2),
                 k22_lt_config(&h->algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, 4),
                 h->workspaceSize / 1024.0, h->wavesCount);
    fprintf(stderr, "k22_lt shape=M%d,N%d,K%d,x%d%s%s type=%s bias=%d status=%s%s\n", k->M, k->N,
            k->K, k->batch, k->ta ? ",ta" : "", k->tb ? ",tb" : "", type, k->bias,
            cublasLtGetStatusString(p->status), tail);
}

/* The descriptors of row-major C = op(A) op(B) as the column-major C^T = op(B)^T op(A)^T
 * (matmul.cu's head): cuBLASLt's operand A is our B, column-major (N, K) as stored or (K, N)
 * when tb; its B is our A, (K, M) or (M, K) when ta; C^T is (N, M). Then the heuristic's pick. */
static void k22_lt_plan_build(k22_cuda_ctx *ctx, struct k22_lt_plan *p, const k22_lt_key *k)
{
    cudaDataType_t ab = (cudaDataType_t)k->ab;
    cublasOperation_t opa = k->tb ? CUBLAS_OP_T : CUBLAS_OP_N, opb = k->ta ? CUBLAS_OP_T : CUBLAS_OP_N;
    p->key = *k;
    p->used = 1;
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb));
    if (k->bias) { /* the pointer is set per call (k22_cuda_lt_gemm) */
        int32_t epi = CUBLASLT_EPILOGUE_BIAS, bt = CUDA_R_32F;
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt));
    }
    if (k->tb)
        k22_lt_layout(&p->la, ab, k->K, k->N, k->ldb, k->batch, k->sB);
    else
        k22_lt_layout(&p->la, ab, k->N, k->K, k->ldb, k->batch, k->sB);
    if (k->ta)
        k22_lt_layout(&p->lb, ab, k->M, k->K, k->lda, k->batch, k->sA);
    else
        k22_lt_layout(&p->lb, ab, k->K, k->M, k->lda, k->batch, k->sA);
    k22_lt_layout(&p->lc, CUDA_R_32F, k->N, k->M, k->ldc, k->batch, k->sC);

    cublasLtMatmulPreference_t pref = NULL;
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ctx->workspace_bytes,
        sizeof ctx->workspace_bytes));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &k->alB, sizeof k->alB));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &k->alA, sizeof k->alA));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &k->alC, sizeof k->alC));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &k->alC, sizeof k->alC));
    cublasLtMatmulHeuristicResult_t heur;
    int found = 0;
    memset(&heur, 0, sizeof heur);
    p->status = cublasLtMatmulAlgoGetHeuristic(ctx->lt, p->op, p->la, p->lb, p->lc, p->lc, pref, 1,
                                               &heur, &found);
    if (p->status == CUBLAS_STATUS_SUCCESS && found < 1) p->status = CUBLAS_STATUS_NOT_SUPPORTED;
    if (p->status == CUBLAS_STATUS_SUCCESS) p->algo = heur.algo;
    if (ctx->lt_log) k22_lt_log(k, p, &heur);
    cublasLtMatmulPreferenceDestroy(pref);
    ctx->lt_heuristics++;
    ctx->lt_builds++;
}

const struct k22_lt_plan *k22_lt_plan_get(k22_cuda_ctx *ctx, const k22_lt_key *key)
{
    uint32_t set = k22_lt_hash(key) % K22_LT_SETS;
    struct k22_lt_plan *ways = ctx->lt_plans + (size_t)set * K22_LT_WAYS;
    for (int w = 0; w < K22_LT_WAYS; w++)
        if (ways[w].used && !memcmp(&ways[w].key, key, sizeof *key)) return &ways[w];
    int w = 0;
    while (w < K22_LT_WAYS && ways[w].used) w++;
    if (w == K22_LT_WAYS) { /* full: replace in turn */
        w = ctx->lt_victim[set];
        ctx->lt_victim[set] = (uint8_t)((w + 1) % K22_LT_WAYS);
        k22_lt_plan_clear(&ways[w]);
    }
    k22_lt_plan_build(ctx, &ways[w], key);
    return &ways[w];
}

void k22_lt_plans_init(k22_cuda_ctx *ctx)
{
    ctx->lt_plans = (struct k22_lt_plan *)k22_xcalloc((size_t)K22_LT_SETS * K22_LT_WAYS,
                                                      sizeof *ctx->lt_plans);
    ctx->lt_victim = (uint8_t *)k22_xcalloc(K22_LT_SETS, 1);
}

void k22_lt_plans_release(k22_cuda_ctx *ctx)
{
    if (ctx->lt_plans)
        for (int i = 0; i < K22_LT_SETS * K22_LT_WAYS; i++) k22_lt_plan_clear(&ctx->lt_plans[i]);
    free(ctx->lt_plans);
    free(ctx->lt_victim);
    ctx->lt_plans = NULL;
    ctx->lt_victim = NULL;
}
