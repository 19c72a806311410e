/* k22.h: status codes, the recoverable error record, and the fatal path.
 *
 * Two tiers (STYLE.md): code that reads outside bytes or user input returns a k22_status and
 * fills a k22_err naming the file, key and what was expected against what was found; failures
 * the program cannot recover from (CUDA, NCCL, MPI, out of memory) go through K22_FATAL, which
 * prints host, rank and file:line and ends the whole MPI job. */
#ifndef K22_K22_H
#define K22_K22_H

#include <stddef.h>
#include <stdint.h>

#define K22_VERSION "0.1.0"

typedef enum {
    K22_OK = 0,
    K22_ERR_IO,          /* open/read/write/mmap failed */
    K22_ERR_FORMAT,      /* outside bytes are malformed */
    K22_ERR_KEY,         /* missing, unexpected or mis-shaped key/tensor */
    K22_ERR_UNSUPPORTED, /* a valid value k22 does not implement */
    K22_ERR_ARG,         /* bad command-line argument or API misuse by the caller */
    K22_ERR_NOMEM,       /* allocation refused (size capped or malloc failed) */
    K22_ERR_INTERNAL
} k22_status;

/* The recoverable error: one message, already formatted for a user. */
typedef struct {
    k22_status code;
    char msg[1024];
} k22_err;

/* Sets e (if non-NULL) to code and the printf-formatted message; returns code. */
k22_status k22_err_set(k22_err *e, k22_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prefixes the existing message with "prefix: " (e.g. a file name); returns e->code. */
k22_status k22_err_prefix(k22_err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void k22_err_clear(k22_err *e);
const char *k22_status_name(k22_status s);

/* Unrecoverable: prints "k22: fatal [host rank R]: msg (file:line)" to stderr, then MPI_Abort
 * when MPI is initialized (so no rank is left hanging), else exit(1). Never returns. */
_Noreturn void k22_fatal_at(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#define K22_FATAL(...) k22_fatal_at(__FILE__, __LINE__, __VA_ARGS__)
/* For invariants the program controls and for resources (allocation): never for outside bytes. */
#define K22_REQUIRE(cond)                                                                          \
    do {                                                                                           \
        if (!(cond)) K22_FATAL("internal check failed: %s", #cond);                                \
    } while (0)

/* malloc/calloc that die with K22_FATAL on failure (for sizes the program computed itself). */
void *k22_xmalloc(size_t n);
void *k22_xcalloc(size_t count, size_t size);
char *k22_xstrdup(const char *s);
/* The array p of *cap elements of `size` bytes grown to twice as many (first when empty), *cap
 * updated; dies naming `what` when memory runs out. */
void *k22_xgrow(void *p, int *cap, int first, size_t size, const char *what);

/* Overflow-checked arithmetic: return 0 and set *out on success, -1 on overflow. */
int k22_mul_size(size_t a, size_t b, size_t *out);
int k22_add_size(size_t a, size_t b, size_t *out);

/* A 0/1 switch from the environment: unset or empty gives def, "0" and "1" themselves; another
 * value is refused ("NAME='v': expected 0 (off) or 1 (on)", off and on saying what each does). */
k22_status k22_env_flag(const char *name, int def, const char *off, const char *on, int *out,
                        k22_err *err);

/* The rank the fatal path prints, set by dist once MPI is up; -1 before. */
void k22_set_rank(int rank);
int k22_get_rank(void);

#endif
