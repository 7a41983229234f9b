/* Small file-system helpers shared inside libbraid (not public API). */
#ifndef BR_FS_H
#define BR_FS_H

#include <sys/types.h>

/* Creates dir and its missing parents (like mkdir -p). Returns 0, or -1 with
 * errno set. An existing directory is fine. */
int br__mkdirs(const char *dir, mode_t mode);

/* Syncs the directory that holds path (after a rename into it, say), so the
 * new name survives a crash. Returns 0, or -1 with errno set. */
int br__fsync_parent(const char *path);

#endif
