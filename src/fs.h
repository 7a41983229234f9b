/* Small file-system helpers shared inside libbraid (not public API). */
#ifndef BR_FS_H
#define BR_FS_H

#include <stddef.h>
#include <sys/types.h>

/* Creates dir and its missing parents (like mkdir -p). Returns 0, or -1 with
 * errno set. An existing directory is fine. */
int br__mkdirs(const char *dir, mode_t mode);

/* Syncs an open directory, so the names just made or removed in it survive
 * a crash; a file system that cannot sync directories (EINVAL, EROFS) is
 * not an error. Returns 0, or -1 with errno set. */
int br__fsync_dirfd(int dirfd);

/* Syncs the directory that holds path (after a rename into it, say), so the
 * new name survives a crash. Returns 0, or -1 with errno set. */
int br__fsync_parent(const char *path);

/* The whole file at path, NUL-terminated (the caller frees), its length in
 * *len (may be NULL; NUL bytes in the file count). NULL with errno set when
 * it cannot be read. */
char *br__read_file(const char *path, size_t *len);

/* Writes all len bytes (again after a short write or EINTR). Returns 0, or
 * -1 with errno set. */
int br__write_all(int fd, const void *data, size_t len);

/* Appends len bytes of line and a newline to the file at path (created
 * with mode when missing), as a line of its own: when the file's last line
 * has no newline (edited by hand), one is written first. Synced before it
 * returns. Returns 0, or -1 with errno set. */
int br__append_line(const char *path, const char *line, size_t len, mode_t mode);

/* Who holds a store's lock, to write beside it: "pid N on host H (since
 * YYYY-MM-DD HH:MM:SS)", this process, local time. */
void br__holder(char *buf, size_t size);

#endif
