/* cmd_version.c: `k22 version`: the version and which optional parts this binary has. */
#include "k22/cli.h"
#include "k22/k22.h"

#include <stdio.h>
#include <stdlib.h>

int k22_cmd_version(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    printf("k22 %s\n", K22_VERSION);
#ifdef K22_HAVE_CUDA
    printf("cuda: yes\n");
#else
    printf("cuda: no (build with `make cuda`)\n");
#endif
    /* what the OpenMP runtime runs with (main.c sets PASSIVE unless the user chose) */
    const char *w = getenv("OMP_WAIT_POLICY");
    printf("openmp wait policy: %s\n", w ? w : "(libgomp default)");
    return 0;
}
