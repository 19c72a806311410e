/* host_mem.c: the host memory the CPU backends' buffers can still take (k22_backend_mem_free).
 *
 * The kernel's MemAvailable (free pages plus what it can reclaim) is the node's figure; a job under
 * a batch system usually lives in a cgroup with a smaller limit (Slurm's ConstrainRAMSpace), where
 * going past the cgroup's limit gets the job killed long before the node runs short. So the answer
 * is the smaller of MemAvailable and the cgroup's room (v2 or v1), its limit less its usage. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "cpu_ops.h"

/* The value in kB of `key` in /proc/meminfo, in bytes; 0 when missing. */
static size_t meminfo_bytes(const char *key)
{
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return 0;
    char line[256];
    size_t klen = strlen(key), v = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long long kb;
        if (!strncmp(line, key, klen) && line[klen] == ':' && sscanf(line + klen + 1, "%llu", &kb) == 1) {
            v = (size_t)kb * 1024;
            break;
        }
    }
    fclose(f);
    return v;
}

/* One number from a file; 0 when missing, unreadable, "max" or past 2^62 (v1's "no limit" is
 * a page-rounded 2^63 - 1). */
static size_t file_value(const char *dir, const char *sub, const char *name)
{
    char path[8448];
    snprintf(path, sizeof path, "%s%s/%s", dir, sub, name);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    unsigned long long v = 0;
    if (fscanf(f, "%llu", &v) != 1 || v > (1ull << 62)) v = 0;
    fclose(f);
    return (size_t)v;
}

/* This process's cgroup under `key` in /proc/self/cgroup: "" for v2 ("0::/path"), "memory" for
 * v1 ("N:memory:/path"); 0 without one. The root "/" gives "". */
static int cgroup_path(const char *key, char *dir, size_t n)
{
    FILE *f = fopen("/proc/self/cgroup", "r");
    if (!f) return 0;
    char line[4096];
    int ok = 0;
    while (!ok && fgets(line, sizeof line, f)) {
        char *a = strchr(line, ':'), *b = a ? strchr(a + 1, ':') : NULL;
        if (!b || (size_t)(b - a - 1) != strlen(key) || strncmp(a + 1, key, strlen(key))) continue;
        b[strcspn(b, "\n")] = 0;
        ok = snprintf(dir, n, "%s", strcmp(b + 1, "/") ? b + 1 : "") < (int)n;
    }
    fclose(f);
    return ok;
}

/* The cgroup's limit (0: none found) and usage: v2's memory.max and memory.current, else v1's
 * memory.limit_in_bytes and memory.usage_in_bytes; each at the process's own cgroup path and,
 * where a container shows only its own cgroup at the mount point, there. */
static size_t cgroup_limit(size_t *used)
{
    static const struct { const char *key, *mount, *max, *cur; } kinds[] = {
        {"", "/sys/fs/cgroup", "memory.max", "memory.current"},
        {"memory", "/sys/fs/cgroup/memory", "memory.limit_in_bytes", "memory.usage_in_bytes"},
    };
    char dir[4096];
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        if (!cgroup_path(kinds[k].key, dir, sizeof dir)) continue;
        const char *subs[] = {dir, ""};
        for (int s = 0; s < 2; s++) {
            size_t max = file_value(kinds[k].mount, subs[s], kinds[k].max);
            if (max) {
                *used = file_value(kinds[k].mount, subs[s], kinds[k].cur);
                return max;
            }
        }
    }
    return 0;
}

size_t k22_host_mem_free(size_t *total)
{
    size_t avail = meminfo_bytes("MemAvailable"), all = meminfo_bytes("MemTotal"), used = 0;
    size_t max = cgroup_limit(&used);
    if (max) {
        size_t room = used < max ? max - used : 0;
        if (room < avail) avail = room;
        if (max < all) all = max;
    }
    if (total) *total = all;
    return avail;
}
