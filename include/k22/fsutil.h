/* fsutil.h: file-system helpers for everything k22 writes (folders, atomic files, fsync) and
 * reads whole (capped), plus SHA-256 of files and buffers (OpenSSL libcrypto). */
#ifndef K22_FSUTIL_H
#define K22_FSUTIL_H

#include "k22/k22.h"

#include <stdint.h>

/* mkdir -p: creates path and its missing parents (mode 0755); an existing folder is fine. */
k22_status k22_fs_mkdir_p(const char *path, k22_err *err);
/* Writes n bytes to path atomically: path.tmp, fsync, rename over path, fsync the folder. */
k22_status k22_fs_write_atomic(const char *path, const void *data, size_t n, k22_err *err);
/* fsyncs a file or a folder (folders: so a rename inside it is durable). */
k22_status k22_fs_fsync_path(const char *path, k22_err *err);
/* Reads the whole file into a malloc'd buffer with a NUL byte after the data; refuses files
 * larger than cap bytes. Caller frees *out. */
k22_status k22_fs_read_all(const char *path, size_t cap, char **out, size_t *len, k22_err *err);
/* Removes path and everything under it (no symlinks followed); a missing path is fine. */
k22_status k22_fs_rm_rf(const char *path, k22_err *err);
/* rename(2) with an error naming both paths. */
k22_status k22_fs_rename(const char *from, const char *to, k22_err *err);

int k22_fs_exists(const char *path);   /* 1 when path exists (any type) */
int k22_fs_is_dir(const char *path);   /* 1 when path is a folder (symlinks followed) */
int k22_fs_is_file(const char *path);  /* 1 when path is a regular file */
/* 1 when path is a folder with no entries other than . and .. ; 0 otherwise. */
int k22_fs_dir_is_empty(const char *path);
/* Size of a regular file in bytes, or -1. */
int64_t k22_fs_size(const char *path);
/* dst = a "/" b, with an error when it does not fit in n bytes. */
k22_status k22_fs_join(char *dst, size_t n, const char *a, const char *b, k22_err *err);

/* SHA-256 as 64 lowercase hex digits and a NUL. */
void k22_sha256_hex(const void *data, size_t n, char hex[65]);
/* SHA-256 of a file's bytes, streamed. */
k22_status k22_fs_sha256(const char *path, char hex[65], k22_err *err);

#endif
