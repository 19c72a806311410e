/* grad_marks.c: see include/k22/grad_marks.h. */
#include "k22/grad_marks.h"

#include <stdlib.h>
#include <string.h>

void k22_grad_marks_init(k22_grad_marks *gm, const k22_params *ps)
{
    memset(gm, 0, sizeof *gm);
    gm->key = k22_xmalloc((size_t)(ps->count > 0 ? ps->count : 1) * sizeof *gm->key);
    for (int i = 0; i < ps->count; i++) gm->key[i] = -1;
}

void k22_grad_marks_key(k22_grad_marks *gm, const k22_params *ps, const char *prefix, int key)
{
    K22_REQUIRE(gm->key && key >= 0);
    size_t n = strlen(prefix);
    int hits = 0;
    for (int i = 0; i < ps->count; i++) {
        const char *name = ps->items[i].name;
        if (strncmp(name, prefix, n) || (name[n] && name[n] != '.')) continue;
        gm->key[i] = key;
        hits++;
    }
    if (!hits) K22_FATAL("grad marks: no parameter is named %s", prefix); /* a model bug */
    if (key >= gm->nkeys) gm->nkeys = key + 1;
}

void k22_grad_marks_finish(k22_grad_marks *gm, const k22_params *ps)
{
    gm->mark = k22_xcalloc((size_t)(gm->nkeys > 0 ? gm->nkeys : 1), sizeof *gm->mark);
    /* mark[k] = max end over trainable keys < k: a running maximum over the keys in order. */
    int64_t *end_of_key = k22_xcalloc((size_t)gm->nkeys + 1, sizeof *end_of_key); /* [key + 1] */
    for (int i = 0; i < ps->count; i++) {
        const k22_param *p = &ps->items[i];
        if (!p->trainable) continue;
        /* its alignment padding too, up to the next start, should a kernel ever write past numel
         * into it */
        int64_t end = (int64_t)((p->offset + p->numel + K22_PARAM_ALIGN - 1) / K22_PARAM_ALIGN * K22_PARAM_ALIGN);
        if (end > (int64_t)ps->total) end = (int64_t)ps->total;
        if (end > end_of_key[gm->key[i] + 1]) end_of_key[gm->key[i] + 1] = end;
    }
    int64_t run = 0;
    for (int k = 0; k < gm->nkeys; k++) {
        if (end_of_key[k] > run) run = end_of_key[k]; /* keys -1 .. k-1 */
        gm->mark[k] = run;
    }
    free(end_of_key);
    free(gm->key);
    gm->key = NULL;
}

void k22_grad_marks_free(k22_grad_marks *gm)
{
    free(gm->mark);
    free(gm->key);
    memset(gm, 0, sizeof *gm);
}

void k22_grad_marks_reached(const k22_grad_marks *gm, const k22_grad_hook *hook, int key)
{
    if (!hook || !gm->mark) return;
    K22_REQUIRE(key >= 0 && key < gm->nkeys);
    hook->ready(hook->ctx, gm->mark[key]);
}
