/* File-system helpers shared inside libbraid (see fs.h). */
#include "fs.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>
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

int br__fsync_dirfd(int dirfd) {
  return fsync(dirfd) == 0 || errno == EINVAL || errno == EROFS ? 0 : -1;
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
  int rc = br__fsync_dirfd(fd);
  e = errno;
  close(fd);
  errno = e;
  return rc;
}

char *br__read_file(const char *path, size_t *len) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return NULL;
  char *buf = NULL;
  size_t n = 0, cap = 0;
  for (;;) {
    if (n + 1 >= cap) {
      char *grown = realloc(buf, cap = cap ? 2 * cap : 65536);
      if (!grown) {
        errno = ENOMEM;
        break;
      }
      buf = grown;
    }
    ssize_t got = read(fd, buf + n, cap - n - 1);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      if (got == 0) {
        buf[n] = 0;
        close(fd);
        if (len) *len = n;
        return buf;
      }
      break;
    }
    n += (size_t)got;
  }
  int e = errno;
  free(buf);
  close(fd);
  errno = e;
  return NULL;
}

int br__write_all(int fd, const void *data, size_t len) {
  const char *buf = data;
  while (len) {
    ssize_t w = write(fd, buf, len);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return -1;
    if (w == 0) {
      errno = EIO;
      return -1;
    }
    buf += w;
    len -= (size_t)w;
  }
  return 0;
}

int br__append_line(const char *path, const char *line, size_t len, mode_t mode) {
  int fd = open(path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, mode);
  if (fd < 0) return -1;
  struct stat st;
  char last = '\n';
  int rc = fstat(fd, &st);
  if (rc == 0 && st.st_size > 0 && pread(fd, &last, 1, st.st_size - 1) != 1) rc = -1;
  if (rc == 0 && last != '\n') rc = br__write_all(fd, "\n", 1);
  if (rc == 0) rc = br__write_all(fd, line, len);
  if (rc == 0) rc = br__write_all(fd, "\n", 1);
  if (rc == 0) rc = fsync(fd);
  int e = errno;
  close(fd);
  errno = e;
  return rc == 0 ? 0 : -1;
}

void br__holder(char *buf, size_t size) {
  char host[256] = "?", when[32];
  gethostname(host, sizeof host - 1);
  time_t now = time(NULL);
  struct tm tm;
  strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", localtime_r(&now, &tm));
  snprintf(buf, size, "pid %ld on host %s (since %s)", (long)getpid(), host, when);
}
