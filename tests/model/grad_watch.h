/* grad_watch.h (tests/model only): a k22_grad_hook that holds a model's backward to its word
 * (grad_marks.h). At each "G[lo, total) is final" it keeps a copy of that part of G; once the
 * backward is over, every copy must equal the final G bit for bit (nothing wrote there after it
 * was called final), and lo must never rise. */
#ifndef K22_TEST_GRAD_WATCH_H
#define K22_TEST_GRAD_WATCH_H

#include "harness/harness.h"
#include "k22/grad_marks.h"
#include "k22/ops.h"

#include <stdlib.h>
#include <string.h>

#define GW_MAX 256

typedef struct {
    const k22_backend *be;
    const float *G;
    int64_t total;
    int n;
    int64_t lo[GW_MAX];
    float *copy[GW_MAX];
    k22_grad_hook hook;
} grad_watch;

static inline void gw_ready(void *ctx, int64_t lo)
{
    grad_watch *w = ctx;
    K22_REQUIRE(w->n < GW_MAX && lo >= 0 && lo <= w->total);
    w->lo[w->n] = lo;
    size_t n = (size_t)(w->total - lo);
    w->copy[w->n] = k22_xmalloc((n ? n : 1) * sizeof(float));
    if (n) w->be->to_host(w->be->ctx, w->copy[w->n], w->G + lo, n * sizeof(float));
    w->n++;
}

static inline const k22_grad_hook *gw_start(grad_watch *w, const k22_backend *be, const float *G, int64_t total)
{
    memset(w, 0, sizeof *w);
    w->be = be, w->G = G, w->total = total;
    w->hook = (k22_grad_hook){gw_ready, w};
    return &w->hook;
}

/* After the backward: checks the copies against G and frees them. Returns the last lo (the part
 * of G still open when the backward's last keyed layer was done), total when none was called. */
static inline int64_t gw_check(grad_watch *w, const char *label)
{
    float *G = k22_xmalloc((size_t)(w->total ? w->total : 1) * sizeof(float));
    w->be->to_host(w->be->ctx, G, w->G, (size_t)w->total * sizeof(float));
    int64_t last = w->total;
    for (int i = 0; i < w->n; i++) {
        CHECK_MSG(w->lo[i] <= last, "%s: mark %d is %lld, above the one before (%lld)", label, i,
                  (long long)w->lo[i], (long long)last);
        int64_t bad = -1;
        for (int64_t j = w->lo[i]; j < w->total && bad < 0; j++)
            if (memcmp(&G[j], &w->copy[i][j - w->lo[i]], sizeof(float))) bad = j;
        CHECK_MSG(bad < 0, "%s: G[%lld] changed after mark %d called G[%lld, %lld) final", label,
                  (long long)bad, i, (long long)w->lo[i], (long long)w->total);
        last = w->lo[i];
        free(w->copy[i]);
    }
    CHECK_MSG(w->n > 0, "%s: the backward never called its gradient hook", label);
    free(G);
    w->n = 0;
    return last;
}

/* The backward with and without checkpointing leaves the same part open (the marks do not depend
 * on it), and some of G is final before the end: what the all-reduce can overlap. */
static inline void grad_watch_report(const char *label, int64_t open_plain, int64_t open_ckpt, int64_t total)
{
    CHECK_MSG(open_plain == open_ckpt && open_plain < total, "%s: %lld (%lld checkpointed) of %lld gradient "
              "floats still open after the last keyed layer", label, (long long)open_plain,
              (long long)open_ckpt, (long long)total);
    printf("%s: %.1f%% of the gradient buffer final before the input layers' backward (%lld of %lld floats "
           "open)\n", label, 100.0 * (double)(total - open_plain) / (double)total, (long long)open_plain,
           (long long)total);
}

/* A full-size model's marks (from its table; no run): the part of G still open once every keyed
 * layer's backward is done, mark[0]. */
static inline void grad_marks_report(const char *label, const k22_grad_marks *gm, int64_t total)
{
    CHECK_MSG(gm->nkeys > 0 && gm->mark[0] < total, "%s: %lld of %lld gradient floats open after the last keyed "
              "layer", label, gm->nkeys > 0 ? (long long)gm->mark[0] : -1LL, (long long)total);
    if (gm->nkeys > 0)
        printf("%s: %.1f%% of the gradient buffer final before the input layers' backward (%lld of %lld floats "
               "open; %d keys)\n", label, 100.0 * (double)(total - gm->mark[0]) / (double)total,
               (long long)gm->mark[0], (long long)total, gm->nkeys);
}

#endif
