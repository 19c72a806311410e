/* fixture.h: what C tests use to read the committed fixtures: the source folder they live under,
 * and a tensor lookup that checks dtype and size and says which tensor failed. */
#ifndef K22_TEST_FIXTURE_H
#define K22_TEST_FIXTURE_H

#include <stdlib.h>

#include "harness/harness.h"
#include "k22/safetensors.h"

/* K22_SOURCE_DIR, else "." (CTest runs the tests from the source folder). */
static inline const char *k22_fx_source_dir(void)
{
    const char *e = getenv("K22_SOURCE_DIR");
    return e && *e ? e : ".";
}

/* The tensor `name` with n values of dtype dt, or NULL after a failed check; hint (or NULL) is
 * appended to the failure message (how to regenerate the fixture). */
static inline const void *k22_fx_get_hint(const k22_st_file *f, const char *name, k22_dtype dt, int64_t n,
                                          const char *hint)
{
    const k22_st_tensor *t = k22_st_find(f, name);
    int ok = t && t->dtype == dt && k22_shape_numel(t->ndim, t->shape) == n;
    CHECK_MSG(ok, "fixture tensor '%s' missing or not %s with %lld values%s", name, k22_dtype_name(dt),
              (long long)n, hint ? hint : "");
    return ok ? t->data : NULL;
}

static inline const void *k22_fx_get(const k22_st_file *f, const char *name, k22_dtype dt, int64_t n)
{
    return k22_fx_get_hint(f, name, dt, n, NULL);
}

#endif
