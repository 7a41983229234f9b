/* File system helpers: durable writes (fsync of files and directories),
 * directory creation, and the no-follow walk that keeps writes inside a
 * destination tree even when someone planted symlinks in it. */
#include "xfer_int.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include "../fs.h"

int br_xfer__mkdirs(const char *path, br_error *err) {
  if (br__mkdirs(path, 0755) != 0) {
    if (errno == ENOMEM) return br_error_set(err, BR_ENOMEM, "out of memory");
    return br_error_set(err, BR_EIO, "mkdir %s: %s", path, strerror(errno));
  }
  struct stat st;
  if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
    return br_error_set(err, BR_EIO, "%s is not a directory", path);
  return BR_OK;
}

int br_xfer__open_parent(int rootfd, const char *root, const char *rel, bool create,
                         const char **base, br_error *err) {
  const char *r = root ? root : "", *sep = root ? "/" : "";
  int fd = dup(rootfd);
  if (fd < 0) return br_error_set(err, BR_EIO, "dup: %s", strerror(errno));
  const char *c = rel;
  for (;;) {
    const char *slash = strchr(c, '/');
    if (!slash) break;
    char comp[256];
    size_t len = (size_t)(slash - c);
    if (len == 0 || len >= sizeof comp) {
      close(fd);
      return br_error_set(err, BR_EINVAL, "bad path '%s'", rel);
    }
    memcpy(comp, c, len);
    comp[len] = 0;
    int next = openat(fd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (next < 0 && errno == ENOENT && create) {
      if (mkdirat(fd, comp, 0755) != 0 && errno != EEXIST) {
        int e = errno;
        close(fd);
        return br_error_set(err, BR_EIO, "mkdir %s%s%.*s: %s", r, sep, (int)(slash - rel), rel,
                            strerror(e));
      }
      next = openat(fd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    }
    if (next < 0) {
      int e = errno;
      close(fd);
      if (e == ELOOP || e == ENOTDIR)
        return br_error_set(err, BR_EINVAL,
                            "refusing %s%s%s: %s%s%.*s is not a directory (a symlink or a file)",
                            r, sep, rel, r, sep, (int)(slash - rel), rel);
      return br_error_set(err, e == ENOENT ? BR_ENOTFOUND : BR_EIO, "open %s%s%.*s: %s", r, sep,
                          (int)(slash - rel), rel, strerror(e));
    }
    close(fd);
    fd = next;
    c = slash + 1;
  }
  *base = c;
  return fd;
}

int br_xfer__pwrite_all(int fd, const void *buf, size_t len, int64_t off) {
  const uint8_t *p = buf;
  while (len) {
    ssize_t n = pwrite(fd, p, len, off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -errno;
    p += n;
    len -= (size_t)n;
    off += n;
  }
  return 0;
}

int br_xfer__pwrite_direct(int fd, const void *data, size_t len, int64_t off, uint8_t **buf,
                           size_t *cap) {
  size_t padded = (len + BR_XFER__DIO_ALIGN - 1) / BR_XFER__DIO_ALIGN * BR_XFER__DIO_ALIGN;
  if (off % BR_XFER__DIO_ALIGN) return -EINVAL;
  if (!padded) return 0;
  if (padded > *cap) {
    free(*buf);
    *buf = NULL;
    *cap = 0;
    void *p = NULL;
    if (posix_memalign(&p, BR_XFER__DIO_ALIGN, padded) != 0) return -ENOMEM;
    *buf = p;
    *cap = padded;
  }
  if (data != *buf) memcpy(*buf, data, len);
  memset(*buf + len, 0, padded - len);
  return br_xfer__pwrite_all(fd, *buf, padded, off);
}

int br_xfer__open_new(int dirfd, const char *name, int flags, mode_t mode, bool *direct) {
  int fd = openat(dirfd, name, flags | O_DIRECT, mode);
  *direct = fd >= 0;
  if (fd < 0 && errno == EINVAL) fd = openat(dirfd, name, flags, mode);
  return fd;
}

/* data's len bytes from offset 0 with direct I/O out of buf (aligned, cap
 * at least len padded; data is copied into it unless it is buf), the file
 * then truncated to len. A file system that refuses the direct write gets
 * a buffered one. 0 or -errno. */
static int write_direct(int fd, const void *data, size_t len, uint8_t *buf, size_t cap) {
  int w = br_xfer__pwrite_direct(fd, data, len, 0, &buf, &cap); /* cap suffices: buf stays */
  if (w == 0 && len % BR_XFER__DIO_ALIGN && ftruncate(fd, (off_t)len) != 0) w = -errno;
  if (w != -EINVAL) return w;
  if (br_xfer__direct_off(fd)) return -EINVAL;
  return br_xfer__pwrite_all(fd, data, len, 0);
}

int br_xfer__write_whole(int fd, bool direct, const void *data, size_t len) {
  if (!direct || !len) return br_xfer__pwrite_all(fd, data, len, 0);
  /* the aligned copy in a pooled buffer: a fresh one's pages would be
   * faulted in and cleared for every large object */
  size_t cap;
  uint8_t *buf = br_xfer__mem_get(len, &cap);
  if (!buf) return -ENOMEM;
  int w = write_direct(fd, data, len, buf, cap);
  br_xfer__mem_put(buf, cap);
  return w;
}

int br_xfer__write_whole_buf(int fd, bool direct, uint8_t *data, size_t len, size_t cap) {
  size_t padded = (len + BR_XFER__DIO_ALIGN - 1) / BR_XFER__DIO_ALIGN * BR_XFER__DIO_ALIGN;
  if (!direct || (uintptr_t)data % BR_XFER__DIO_ALIGN || cap < padded)
    return br_xfer__write_whole(fd, direct, data, len);
  return write_direct(fd, data, len, data, cap);
}

/* cachestat: the C library (glibc 2.36) has no wrapper and older kernel
 * headers no number. It is 451 in the common table; only where that is
 * the whole number (no offset, as MIPS and x32 have) is it named here. */
#if !defined(__NR_cachestat) && defined(__linux__) &&                                 \
    ((defined(__x86_64__) && !defined(__ILP32__)) || defined(__aarch64__) ||        \
     (defined(__riscv) && __riscv_xlen == 64))
#define __NR_cachestat 451
#endif

int br_xfer__page_stat(int fd, int64_t off, int64_t len, br_xfer__pages *out) {
#ifdef __NR_cachestat
  static atomic_bool missing; /* ENOSYS, or refused (a seccomp filter) once */
  if (atomic_load_explicit(&missing, memory_order_relaxed)) return -1;
  if (len <= 0) { /* (cachestat would read a length of 0 as "to the end") */
    *out = (br_xfer__pages){0, 0, 0};
    return 0;
  }
  long pg = sysconf(_SC_PAGESIZE);
  int64_t a = off & ~(int64_t)(pg - 1);
  uint64_t pages = (uint64_t)((off + len - a + pg - 1) / pg);
  struct {
    uint64_t off, len;
  } range = {(uint64_t)a, pages * (uint64_t)pg};
  struct {
    uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted;
  } cs;
  if (syscall(__NR_cachestat, fd, &range, &cs, 0) == 0) {
    *out = (br_xfer__pages){pages, cs.nr_cache, cs.nr_evicted};
    return 0;
  }
  if (errno == ENOSYS || errno == EPERM) atomic_store(&missing, true);
#else
  (void)fd, (void)off, (void)len, (void)out;
#endif
  return -1;
}

int br_xfer__cached(int fd, int64_t off, int64_t len) {
  br_xfer__pages ps;
  if (len <= 0) return 1;
  return br_xfer__page_stat(fd, off, len, &ps) ? -1 : ps.cached >= ps.pages;
}

int br_xfer__link_fd(int fd, int dirfd, const char *name) {
  static atomic_bool refused; /* AT_EMPTY_PATH once refused where /proc was not */
  if (!atomic_load_explicit(&refused, memory_order_relaxed)) {
    if (linkat(fd, "", dirfd, name, AT_EMPTY_PATH) == 0) return 0;
    if (errno != ENOENT && errno != EPERM && errno != EINVAL) return errno;
  }
  char path[64]; /* refused, or some other ENOENT: /proc tells which */
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  if (linkat(AT_FDCWD, path, dirfd, name, AT_SYMLINK_FOLLOW) == 0) {
    atomic_store_explicit(&refused, true, memory_order_relaxed);
    return 0;
  }
  return errno;
}

int br_xfer__direct_on(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_DIRECT) != 0) return -errno;
  return 0;
}

int br_xfer__direct_off(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_DIRECT) != 0) return -errno;
  return 0;
}

int br_xfer__pread_all(int fd, void *buf, size_t len, int64_t off) {
  struct iovec v = {buf, len};
  return len ? br_xfer__preadv_all(fd, &v, 1, off) : 0;
}

int br_xfer__preadv_all(int fd, struct iovec *iov, int cnt, int64_t off) {
  while (cnt > 0) {
    ssize_t n = preadv(fd, iov, cnt > IOV_MAX ? IOV_MAX : cnt, off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -errno;
    if (n == 0) return -ENODATA;
    off += n;
    while (cnt > 0 && (size_t)n >= iov->iov_len) {
      n -= (ssize_t)iov->iov_len;
      iov++;
      cnt--;
    }
    if (cnt > 0) {
      iov->iov_base = (uint8_t *)iov->iov_base + n;
      iov->iov_len -= (size_t)n;
    }
  }
  return 0;
}

void br_xfer__partial_name(const char *base, char *out, size_t size) {
  /* Letters a-p encode the nibbles of a digest of the name: deterministic
   * (a resume finds its partial) and free of digits (no frame pattern). */
  br_xfer_digest d;
  br_xfer_sha256(base, strlen(base), &d);
  char letters[17];
  for (int i = 0; i < 8; i++) {
    letters[2 * i] = (char)('a' + (d.b[i] >> 4));
    letters[2 * i + 1] = (char)('a' + (d.b[i] & 15));
  }
  letters[16] = 0;
  snprintf(out, size, "%s%s", BR_XFER__PARTIAL_PREFIX, letters);
}

/* Nanoseconds since 1970 in 64 bits: 1677-09-21 to 2262-04-11. A time
 * outside is held at the nearer end, never wrapped. */
static int64_t time_ns(const struct timespec *t) {
  if (t->tv_sec >= INT64_MAX / 1000000000) return INT64_MAX;
  if (t->tv_sec <= INT64_MIN / 1000000000) return INT64_MIN;
  return (int64_t)t->tv_sec * 1000000000 + t->tv_nsec;
}

int64_t br_xfer__mtime_ns(const struct stat *st) { return time_ns(&st->st_mtim); }

int64_t br_xfer__ctime_ns(const struct stat *st) { return time_ns(&st->st_ctim); }

double br_xfer__now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
