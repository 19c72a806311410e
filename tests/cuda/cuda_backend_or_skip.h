/* cuda_backend_or_skip.h (tests/cuda only): the CUDA backend of a test, or the rule for when
 * there is none: a skip line and exit 0, unless K22_REQUIRE_CUDA is set (make test-cuda, the
 * GPU session), which makes it a failure. */
#ifndef K22_CUDA_BACKEND_OR_SKIP_H
#define K22_CUDA_BACKEND_OR_SKIP_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "k22/ops.h"

/* The "cuda" backend; NULL with *rc the test's exit code when there is none. */
static inline k22_backend *cuda_backend_or_skip(const char *test, int *rc)
{
    k22_err err;
    k22_err_clear(&err);
    k22_backend *gpu = k22_backend_by_name("cuda", &err);
    if (gpu) return gpu;
    const char *req = getenv("K22_REQUIRE_CUDA");
    int required = req && *req && strcmp(req, "0") != 0;
    printf("%s: no CUDA backend: %s\n", test, err.msg);
    if (required) {
        fprintf(stderr, "%s: FAIL: K22_REQUIRE_CUDA=%s but CUDA is unavailable\n", test, req);
        *rc = 1;
    } else {
        printf("%s: skipped (set K22_REQUIRE_CUDA=1 to make this a failure)\n", test);
        *rc = 0;
    }
    return NULL;
}

#endif
