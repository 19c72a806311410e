/* env.c: 0/1 switches read from the environment (k22.h k22_env_flag). */
#include "k22/k22.h"

#include <stdlib.h>
#include <string.h>

k22_status k22_env_flag(const char *name, int def, const char *off, const char *on, int *out,
                        k22_err *err)
{
    const char *v = getenv(name);
    *out = def;
    if (!v || !*v) return K22_OK;
    if (!strcmp(v, "0") || !strcmp(v, "1")) {
        *out = v[0] == '1';
        return K22_OK;
    }
    return k22_err_set(err, K22_ERR_ARG, "%s='%s': expected 0 (%s) or 1 (%s)", name, v, off, on);
}
