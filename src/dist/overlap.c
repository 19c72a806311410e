/* overlap.c: the bucketed gradient all-reduce (include/k22/grad_overlap.h). */
#include "k22/grad_overlap.h"

#include <limits.h>
#include <mpi.h>
#include <stdlib.h>
#include <string.h>

struct k22_grad_overlap {
    k22_dist *d;
    const k22_backend *be;
    float *G;
    const float *acc;
    int64_t total, bf, nb;   /* floats, bucket floats, buckets */
    int armed, add_acc, nccl;
    int64_t next;            /* the highest bucket not yet sent; -1: all sent */
    float *host;             /* MPI path: staging of the whole of G */
    MPI_Request *req;        /* MPI path: nb, MPI_REQUEST_NULL when not in flight */
    int64_t exchanges, early;
};

k22_grad_overlap *k22_grad_overlap_new(k22_dist *d, const k22_backend *be, float *G, const float *acc,
                                       int64_t total, int64_t bucket_floats)
{
    K22_REQUIRE(d && be && G && total > 0 && bucket_floats > 0);
    k22_grad_overlap *o = k22_xcalloc(1, sizeof *o);
    o->d = d, o->be = be, o->G = G, o->acc = acc, o->total = total;
    /* 64-float multiples (256-byte aligned starts), and one MPI count each. */
    int64_t bf = (bucket_floats + 63) / 64 * 64;
    o->bf = bf > INT_MAX / 2 ? INT_MAX / 2 / 64 * 64 : bf;
    o->nb = (total + o->bf - 1) / o->bf;
    o->nccl = -1;
    o->next = -1;
    o->req = k22_xmalloc((size_t)o->nb * sizeof *o->req);
    for (int64_t i = 0; i < o->nb; i++) o->req[i] = MPI_REQUEST_NULL;
    return o;
}

void k22_grad_overlap_free(k22_grad_overlap *o)
{
    if (!o) return;
    free(o->host);
    free(o->req);
    free(o);
}

void k22_grad_overlap_arm(k22_grad_overlap *o, int add_acc)
{
    K22_REQUIRE(!o->armed && (!add_acc || o->acc));
    if (o->nccl < 0) o->nccl = k22_dist_nccl_serves(o->d, o->be); /* a collective: every rank arms */
    if (!o->nccl && !o->host) o->host = k22_xmalloc((size_t)o->total * sizeof(float));
    o->armed = 1;
    o->add_acc = add_acc;
    o->next = o->nb - 1;
}

int k22_grad_overlap_armed(const k22_grad_overlap *o)
{
    return o->armed;
}

/* Sends bucket b: acc added first when asked, then NCCL's queue or staging + MPI_Iallreduce. */
static void send_bucket(k22_grad_overlap *o, int64_t b)
{
    const k22_backend *be = o->be;
    int64_t lo = b * o->bf, n = o->total - lo < o->bf ? o->total - lo : o->bf;
    float *g = o->G + lo;
    if (o->add_acc) be->add(be->ctx, g, o->acc + lo, g, n);
    if (o->nccl) {
        k22_dist_nccl_allreduce_sum_queue(o->d, be, g, n);
        return;
    }
    be->to_host(be->ctx, o->host + lo, g, (size_t)n * sizeof(float));
    int rc = MPI_Iallreduce(MPI_IN_PLACE, o->host + lo, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &o->req[b]);
    if (rc != MPI_SUCCESS)
        K22_FATAL("MPI_Iallreduce of gradient bucket %lld (%lld floats) failed (MPI error %d)", (long long)b,
                  (long long)n, rc);
}

/* Lets MPI move the buckets in flight (its non-blocking collectives progress inside MPI calls). */
static void progress(k22_grad_overlap *o)
{
    int done = 0;
    int64_t first = o->next + 1; /* the buckets sent so far: [next + 1, nb) */
    if (o->nccl || first >= o->nb) return;
    int rc = MPI_Testall((int)(o->nb - first), o->req + first, &done, MPI_STATUSES_IGNORE);
    if (rc != MPI_SUCCESS) K22_FATAL("MPI_Testall over the gradient buckets failed (MPI error %d)", rc);
}

void k22_grad_overlap_ready(void *ctx, int64_t lo)
{
    k22_grad_overlap *o = ctx;
    if (!o->armed) return;
    while (o->next >= 0 && o->next * o->bf >= lo) {
        send_bucket(o, o->next--);
        o->early++;
    }
    progress(o);
}

void k22_grad_overlap_finish(k22_grad_overlap *o)
{
    K22_REQUIRE(o->armed);
    while (o->next >= 0) send_bucket(o, o->next--);
    const k22_backend *be = o->be;
    if (o->nccl) {
        k22_dist_nccl_join(o->d, be);
        k22_dist_sum_to_mean_backend(o->d, be, o->G, o->total);
    } else {
        int rc = MPI_Waitall((int)o->nb, o->req, MPI_STATUSES_IGNORE);
        if (rc != MPI_SUCCESS) K22_FATAL("MPI_Waitall over the gradient buckets failed (MPI error %d)", rc);
        k22_dist_sum_to_mean_f32(o->d, o->host, o->total);
        be->to_device(be->ctx, o->G, o->host, (size_t)o->total * sizeof(float));
    }
    o->armed = 0;
    o->exchanges++;
}

void k22_grad_overlap_stats_of(const k22_grad_overlap *o, k22_grad_overlap_stats *st)
{
    memset(st, 0, sizeof *st);
    st->buckets = o->nb;
    st->bucket_floats = o->bf;
    st->nccl = o->nccl;
    st->exchanges = o->exchanges;
    st->early = o->early;
}
