/* File-system helpers shared inside libbraid (see fs.h). */
#include "fs.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

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
