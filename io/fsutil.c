/* fsutil.c: folders, atomic writes, fsync, capped whole-file reads and SHA-256 of files. */
#include "k22/fsutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

k22_status k22_fs_join(char *dst, size_t n, const char *a, const char *b, k22_err *err)
{
    int len = snprintf(dst, n, "%s/%s", a, b);
    if (len < 0 || (size_t)len >= n)
        return k22_err_set(err, K22_ERR_ARG, "%s/%s: path longer than %zu bytes", a, b, n - 1);
    return K22_OK;
}

k22_status k22_fs_mkdir_p(const char *path, k22_err *err)
{
    size_t n = strlen(path);
    if (n == 0) return k22_err_set(err, K22_ERR_ARG, "mkdir: empty path");
    char *buf = k22_xstrdup(path);
    k22_status st = K22_OK;
    /* Create each prefix ending at a '/', then the whole path. */
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0') continue;
        char c = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
            st = k22_err_set(err, K22_ERR_IO, "%s: cannot create folder: %s", buf, strerror(errno));
            goto out;
        }
        buf[i] = c;
    }
    if (!k22_fs_is_dir(path))
        st = k22_err_set(err, K22_ERR_IO, "%s: exists and is not a folder", path);
out:
    free(buf);
    return st;
}

k22_status k22_fs_fsync_path(const char *path, k22_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return k22_err_set(err, K22_ERR_IO, "%s: cannot open to fsync: %s", path, strerror(errno));
    int rc = fsync(fd);
    int saved = errno;
    close(fd);
    /* Some file systems refuse fsync on folders (EINVAL); the data is as durable as they allow. */
    if (rc != 0 && saved != EINVAL)
        return k22_err_set(err, K22_ERR_IO, "%s: fsync failed: %s", path, strerror(saved));
    return K22_OK;
}

static k22_status write_fd_all(int fd, const char *path, const void *data, size_t n, k22_err *err)
{
    const char *p = data;
    while (n > 0) {
        ssize_t w = write(fd, p, n > ((size_t)1 << 30) ? ((size_t)1 << 30) : n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return k22_err_set(err, K22_ERR_IO, "%s: write failed: %s", path, strerror(errno));
        p += w;
        n -= (size_t)w;
    }
    return K22_OK;
}

static void parent_of(const char *path, char *dir, size_t n)
{
    snprintf(dir, n, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash) snprintf(dir, n, ".");
    else if (slash == dir) dir[1] = '\0';
    else *slash = '\0';
}

k22_status k22_fs_write_atomic(const char *path, const void *data, size_t n, k22_err *err)
{
    char tmp[4096], dir[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        return k22_err_set(err, K22_ERR_ARG, "%s: path too long", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return k22_err_set(err, K22_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    k22_status st = write_fd_all(fd, tmp, data, n, err);
    if (!st && fsync(fd) != 0)
        st = k22_err_set(err, K22_ERR_IO, "%s: fsync failed: %s", tmp, strerror(errno));
    if (close(fd) != 0 && !st)
        st = k22_err_set(err, K22_ERR_IO, "%s: close failed: %s", tmp, strerror(errno));
    if (!st) st = k22_fs_rename(tmp, path, err);
    if (st) {
        unlink(tmp);
        return st;
    }
    parent_of(path, dir, sizeof dir);
    return k22_fs_fsync_path(dir, err);
}

k22_status k22_fs_read_all(const char *path, size_t cap, char **out, size_t *len, k22_err *err)
{
    *out = NULL;
    if (len) *len = 0;
    char *buf = NULL;
    k22_status st = K22_OK;
    FILE *f = fopen(path, "rb");
    if (!f) return k22_err_set(err, K22_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        st = k22_err_set(err, K22_ERR_IO, "%s: not a regular file", path);
        goto out;
    }
    if ((uint64_t)sb.st_size > cap) {
        st = k22_err_set(err, K22_ERR_NOMEM, "%s: file is %lld bytes, more than the %zu allowed",
                         path, (long long)sb.st_size, cap);
        goto out;
    }
    size_t n = (size_t)sb.st_size;
    buf = malloc(n + 1);
    if (!buf) {
        st = k22_err_set(err, K22_ERR_NOMEM, "%s: cannot allocate %zu bytes", path, n + 1);
        goto out;
    }
    if (n > 0 && fread(buf, 1, n, f) != n) {
        st = k22_err_set(err, K22_ERR_IO, "%s: short read (expected %zu bytes)", path, n);
        goto out;
    }
    buf[n] = '\0';
    *out = buf;
    buf = NULL;
    if (len) *len = n;
out:
    free(buf);
    fclose(f);
    return st;
}

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)ftw;
    return (flag == FTW_DP ? rmdir(p) : unlink(p)) != 0 ? -1 : 0;
}

k22_status k22_fs_rm_rf(const char *path, k22_err *err)
{
    struct stat sb;
    if (lstat(path, &sb) != 0) return K22_OK;
    if (!S_ISDIR(sb.st_mode)) {
        if (unlink(path) != 0)
            return k22_err_set(err, K22_ERR_IO, "%s: cannot remove: %s", path, strerror(errno));
        return K22_OK;
    }
    if (nftw(path, rm_one, 32, FTW_DEPTH | FTW_PHYS) != 0)
        return k22_err_set(err, K22_ERR_IO, "%s: cannot remove: %s", path, strerror(errno));
    return K22_OK;
}

k22_status k22_fs_rename(const char *from, const char *to, k22_err *err)
{
    if (rename(from, to) != 0)
        return k22_err_set(err, K22_ERR_IO, "cannot rename %s to %s: %s", from, to, strerror(errno));
    return K22_OK;
}

int k22_fs_exists(const char *path)
{
    struct stat sb;
    return lstat(path, &sb) == 0;
}

int k22_fs_is_dir(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

int k22_fs_is_file(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

int k22_fs_dir_is_empty(const char *path)
{
    DIR *d = opendir(path);
    if (!d) return 0;
    int empty = 1;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            empty = 0;
            break;
        }
    closedir(d);
    return empty;
}

int64_t k22_fs_size(const char *path)
{
    struct stat sb;
    if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) return -1;
    return (int64_t)sb.st_size;
}

static void to_hex(const unsigned char *md, char hex[65])
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        hex[2 * i] = digits[md[i] >> 4];
        hex[2 * i + 1] = digits[md[i] & 15];
    }
    hex[64] = '\0';
}

void k22_sha256_hex(const void *data, size_t n, char hex[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (!EVP_Digest(data, n, md, &mdlen, EVP_sha256(), NULL) || mdlen != 32)
        K22_FATAL("EVP_Digest(sha256) failed");
    to_hex(md, hex);
}

k22_status k22_fs_sha256(const char *path, char hex[65], k22_err *err)
{
    hex[0] = '\0';
    FILE *f = fopen(path, "rb");
    if (!f) return k22_err_set(err, K22_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx) K22_FATAL("EVP_MD_CTX_new failed");
    k22_status st = K22_OK;
    size_t cap = (size_t)1 << 20;
    unsigned char *buf = k22_xmalloc(cap);
    if (!EVP_DigestInit_ex(ctx, EVP_sha256(), NULL)) K22_FATAL("EVP_DigestInit_ex failed");
    size_t got;
    while ((got = fread(buf, 1, cap, f)) > 0)
        if (!EVP_DigestUpdate(ctx, buf, got)) K22_FATAL("EVP_DigestUpdate failed");
    if (ferror(f)) {
        st = k22_err_set(err, K22_ERR_IO, "%s: read failed while hashing", path);
        goto out;
    }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (!EVP_DigestFinal_ex(ctx, md, &mdlen) || mdlen != 32) K22_FATAL("EVP_DigestFinal_ex failed");
    to_hex(md, hex);
out:
    free(buf);
    EVP_MD_CTX_free(ctx);
    fclose(f);
    return st;
}
