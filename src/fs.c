/* File-system helpers shared inside libbraid (see fs.h). */
#include "fs.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int br__mkdirs(const char *dir, mode_t mode) {
  char *p = strdup(dir);
  if (!p) return -1;
  for (char *s = p + 1; *s; s++) {
    if (*s != '/') continue;
    *s = '\0';
    if (mkdir(p, mode) != 0 && errno != EEXIST) {
      int e = errno;
      free(p);
      errno = e;
      return -1;
    }
    *s = '/';
  }
  int rc = mkdir(p, mode);
  int e = errno;
  free(p);
  if (rc == 0 || e == EEXIST) return 0;
  errno = e;
  return -1;
}

int br__fsync_parent(const char *path) {
  char *copy = strdup(path);
  if (!copy) return -1;
  int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  int e = errno;
  free(copy);
  if (fd < 0) {
    errno = e;
    return -1;
  }
  int rc = fsync(fd) == 0 || errno == EINVAL || errno == EROFS ? 0 : -1;
  e = errno;
  close(fd);
  errno = e;
  return rc;
}
