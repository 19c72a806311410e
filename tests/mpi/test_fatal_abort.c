/* test_fatal_abort.c: a fatal error on one rank must end the whole MPI job (MPI_Abort), never
 * leave the other ranks hanging. The parent re-runs this binary under `mpirun -np 2`; in the
 * children rank 1 calls K22_FATAL while rank 0 waits in a barrier rank 1 never reaches. The
 * job must exit non-zero well inside the time limit, and stderr must carry the host/rank line. */
#include "harness/harness.h"
#include "k22/k22.h"

#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int child(void)
{
    MPI_Init(NULL, NULL);
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    k22_set_rank(rank);
    if (rank == 1) K22_FATAL("deliberate failure on rank %d", rank);
    MPI_Barrier(MPI_COMM_WORLD); /* rank 1 never arrives: only MPI_Abort ends this */
    MPI_Finalize();
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "--child")) return child();
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    CHECK(n > 0);
    if (n <= 0) return k22_test_finish("test_fatal_abort");
    self[n] = '\0';
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 0); /* CI runs as root */
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 0);
    char cmd[8192];
    /* timeout(1) is the safety net: without MPI_Abort the job would hang until it fires. */
    snprintf(cmd, sizeof cmd,
             "timeout 60 mpirun --oversubscribe -np 2 %s --child 2>&1", self);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    FILE *p = popen(cmd, "r");
    CHECK(p != NULL);
    if (!p) return k22_test_finish("test_fatal_abort");
    char out[65536];
    size_t len = fread(out, 1, sizeof out - 1, p);
    out[len] = '\0';
    int status = pclose(p);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    CHECK_MSG(code != 0, "the job exited 0 although rank 1 failed");
    CHECK_MSG(code != 124, "the job hung until timeout killed it (no MPI_Abort?)");
    CHECK_MSG(strstr(out, "k22: fatal [") && strstr(out, "rank 1]: deliberate failure on rank 1"),
              "stderr lacks the fatal line; got:\n%s", out);
    CHECK_MSG(strstr(out, "tests/mpi/test_fatal_abort.c:"), "the fatal line lacks file:line");
    printf("job ended with exit code %d after %.1f s\n", code, secs);
    return k22_test_finish("test_fatal_abort");
}
