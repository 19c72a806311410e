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
    float *Gs;               /* ZeRO-1: this rank's shard of the mean (shard floats), else NULL */
    int64_t shard, base, own; /* ZeRO-1: shard floats, this rank's first float, its floats below total */
    int armed, add_acc, nccl;
    int64_t next;            /* the highest bucket not yet sent; -1: all sent */
    float *host;             /* MPI path: staging of the whole of G */
    float *host_gs;          /* MPI path under ZeRO-1: the shard's sums */
    MPI_Request *req;        /* MPI path: one per piece sent (nreq so far), MPI_REQUEST_NULL when done */
    int64_t nreq, maxreq;
    int64_t exchanges, early;
};

k22_grad_overlap *k22_grad_overlap_new(k22_dist *d, const k22_backend *be, float *G, const float *acc,
                                       int64_t total, int64_t bucket_floats, float *Gs, int64_t shard)
{
    K22_REQUIRE(d && be && G && total > 0 && bucket_floats > 0 && (!Gs || shard > 0));
    k22_grad_overlap *o = k22_xcalloc(1, sizeof *o);
    o->d = d, o->be = be, o->G = G, o->acc = acc, o->total = total;
    /* 64-float multiples (256-byte aligned starts), and one MPI count each. */
    int64_t bf = (bucket_floats + 63) / 64 * 64;
    o->bf = bf > INT_MAX / 2 ? INT_MAX / 2 / 64 * 64 : bf;
    o->nb = (total + o->bf - 1) / o->bf;
    if (Gs) {
        o->Gs = Gs, o->shard = shard, o->base = shard * d->rank;
        o->own = total - o->base < 0 ? 0 : total - o->base < shard ? total - o->base : shard;
    }
    o->nccl = -1;
    o->next = -1;
    /* a bucket is cut where a shard ends: at most world - 1 cuts over the buffer */
    o->maxreq = o->nb + (Gs ? d->world : 0);
    o->req = k22_xmalloc((size_t)o->maxreq * sizeof *o->req);
    for (int64_t i = 0; i < o->maxreq; i++) o->req[i] = MPI_REQUEST_NULL;
    return o;
}

void k22_grad_overlap_free(k22_grad_overlap *o)
{
    if (!o) return;
    free(o->host);
    free(o->host_gs);
    free(o->req);
    free(o);
}

void k22_grad_overlap_arm(k22_grad_overlap *o, int add_acc)
{
    K22_REQUIRE(!o->armed && (!add_acc || o->acc));
    if (o->nccl < 0) o->nccl = k22_dist_nccl_serves(o->d, o->be); /* a collective: every rank arms */
    if (!o->nccl && !o->host) o->host = k22_xmalloc((size_t)o->total * sizeof(float));
    if (!o->nccl && o->Gs && !o->host_gs) o->host_gs = k22_xcalloc((size_t)o->shard, sizeof(float));
    o->armed = 1;
    o->nreq = 0;
    o->add_acc = add_acc;
    o->next = o->nb - 1;
}

int k22_grad_overlap_armed(const k22_grad_overlap *o)
{
    return o->armed;
}

/* The MPI request of the next piece sent. */
static MPI_Request *next_req(k22_grad_overlap *o)
{
    K22_REQUIRE(o->nreq < o->maxreq);
    return &o->req[o->nreq++];
}

/* ZeRO-1: the bucket's floats [lo, lo + n) are summed onto the rank that owns them (G's shards:
 * rank r owns [r shard, (r + 1) shard)), in one piece per owner, into Gs on that rank. */
static void reduce_to_owners(k22_grad_overlap *o, int64_t lo, int64_t n)
{
    const int me = o->d->rank;
    for (int64_t a = lo; a < lo + n;) {
        int r = (int)(a / o->shard);
        int64_t b = (r + 1) * o->shard < lo + n ? (r + 1) * o->shard : lo + n;
        if (o->nccl) {
            k22_dist_nccl_reduce_sum_queue(o->d, o->be, o->G + a, r == me ? o->Gs + (a - o->base) : NULL, b - a, r);
        } else {
            int rc = MPI_Ireduce(o->host + a, r == me ? o->host_gs + (a - o->base) : NULL, (int)(b - a), MPI_FLOAT,
                                 MPI_SUM, r, MPI_COMM_WORLD, next_req(o));
            if (rc != MPI_SUCCESS)
                K22_FATAL("MPI_Ireduce of gradient floats [%lld, %lld) to rank %d failed (MPI error %d)", (long long)a,
                          (long long)b, r, rc);
        }
        a = b;
    }
}

/* Sends bucket b: acc added first when asked, then NCCL's queue or staging + MPI; an all-reduce,
 * or under ZeRO-1 a sum onto the owners. */
static void send_bucket(k22_grad_overlap *o, int64_t b)
{
    const k22_backend *be = o->be;
    int64_t lo = b * o->bf, n = o->total - lo < o->bf ? o->total - lo : o->bf;
    float *g = o->G + lo;
    if (o->add_acc) be->add(be->ctx, g, o->acc + lo, g, n);
    if (!o->nccl) be->to_host(be->ctx, o->host + lo, g, (size_t)n * sizeof(float));
    if (o->Gs) {
        reduce_to_owners(o, lo, n);
        return;
    }
    if (o->nccl) {
        k22_dist_nccl_allreduce_sum_queue(o->d, be, g, n);
        return;
    }
    int rc = MPI_Iallreduce(MPI_IN_PLACE, o->host + lo, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, next_req(o));
    if (rc != MPI_SUCCESS)
        K22_FATAL("MPI_Iallreduce of gradient bucket %lld (%lld floats) failed (MPI error %d)", (long long)b,
                  (long long)n, rc);
}

/* Lets MPI move the buckets in flight (its non-blocking collectives progress inside MPI calls). */
static void progress(k22_grad_overlap *o)
{
    int done = 0;
    if (o->nccl || o->nreq == 0) return;
    int rc = MPI_Testall((int)o->nreq, o->req, &done, MPI_STATUSES_IGNORE);
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
    /* the mean: of the whole of G, or under ZeRO-1 of this rank's part of the shard (its padding
     * past total stays zero, as the reduce-scatter leaves it) */
    float *out = o->Gs ? o->Gs : o->G, *host = o->Gs ? o->host_gs : o->host;
    int64_t n = o->Gs ? o->own : o->total;
    if (o->nccl) {
        k22_dist_nccl_join(o->d, be);
        k22_dist_sum_to_mean_backend(o->d, be, out, n);
    } else {
        int rc = MPI_Waitall((int)o->nreq, o->req, MPI_STATUSES_IGNORE);
        if (rc != MPI_SUCCESS) K22_FATAL("MPI_Waitall over the gradient buckets failed (MPI error %d)", rc);
        k22_dist_sum_to_mean_f32(o->d, host, n);
        be->to_device(be->ctx, out, host, (size_t)n * sizeof(float));
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
