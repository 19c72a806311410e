/* err.c: the recoverable error record and the fatal path that ends the whole MPI job. */
#include "k22/k22.h"

#include <limits.h>
#include <mpi.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int g_rank = -1;

void k22_set_rank(int rank) { g_rank = rank; }
int k22_get_rank(void) { return g_rank; }

k22_status k22_err_set(k22_err *e, k22_status code, const char *fmt, ...)
{
    if (!e) return code;
    e->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return code;
}

k22_status k22_err_prefix(k22_err *e, const char *fmt, ...)
{
    if (!e) return K22_ERR_INTERNAL;
    char buf[2 * sizeof e->msg];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof e->msg, fmt, ap);
    va_end(ap);
    if (n < 0) n = 0;
    if ((size_t)n >= sizeof e->msg) n = (int)sizeof e->msg - 1;
    memcpy(buf + n, ": ", 2);
    memcpy(buf + n + 2, e->msg, sizeof e->msg);
    buf[sizeof e->msg - 1] = '\0';
    memcpy(e->msg, buf, sizeof e->msg);
    return e->code;
}

void k22_err_clear(k22_err *e)
{
    if (!e) return;
    e->code = K22_OK;
    e->msg[0] = '\0';
}

const char *k22_status_name(k22_status s)
{
    switch (s) {
    case K22_OK: return "ok";
    case K22_ERR_IO: return "io error";
    case K22_ERR_FORMAT: return "format error";
    case K22_ERR_KEY: return "key error";
    case K22_ERR_UNSUPPORTED: return "unsupported";
    case K22_ERR_ARG: return "bad argument";
    case K22_ERR_NOMEM: return "out of memory";
    case K22_ERR_INTERNAL: return "internal error";
    }
    return "unknown error";
}

_Noreturn void k22_fatal_at(const char *file, int line, const char *fmt, ...)
{
    char host[256] = "?";
    gethostname(host, sizeof host - 1);
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "k22: fatal [%s rank %d]: %s (%s:%d)\n", host, g_rank, msg, file, line);
    fflush(stderr);
    int init = 0, fin = 0;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    if (init && !fin) MPI_Abort(MPI_COMM_WORLD, 1);
    exit(1);
}

void *k22_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) K22_FATAL("out of memory allocating %zu bytes", n);
    return p;
}

void *k22_xcalloc(size_t count, size_t size)
{
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) K22_FATAL("out of memory allocating %zu x %zu bytes", count, size);
    return p;
}

void *k22_xgrow(void *p, int *cap, int first, size_t size, const char *what)
{
    if (*cap > INT_MAX / 2) K22_FATAL("%s: more than %d entries", what, INT_MAX / 2);
    int n = *cap ? 2 * *cap : first;
    void *q = realloc(p, (size_t)n * size);
    if (!q) K22_FATAL("out of memory growing %s to %d entries", what, n);
    *cap = n;
    return q;
}

char *k22_xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = k22_xmalloc(n);
    memcpy(p, s, n);
    return p;
}

int k22_mul_size(size_t a, size_t b, size_t *out)
{
    if (a && b > SIZE_MAX / a) return -1;
    *out = a * b;
    return 0;
}

int k22_add_size(size_t a, size_t b, size_t *out)
{
    if (b > SIZE_MAX - a) return -1;
    *out = a + b;
    return 0;
}
