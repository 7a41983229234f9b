/* The depot's store: content-addressed objects and snapshots. Large chunks
 * are loose files named by their SHA-256 under objects/ab/; small ones live
 * in packs (pack.c); snapshots are snapshots/NAME/vN.json, and a removed
 * version leaves vN.deleted behind so its number is never given again.
 * Everything is written durably and atomically: a temporary file in tmp/
 * (same file system), fsync, rename (objects) or link (snapshots, which
 * fails if the version exists, so two commits at once take consecutive
 * versions even across processes), then fsync of the directory. */
#include "xfer_int.h"
#include "../fs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int br_xfer__depot_root_check(const char *root, br_error *err) {
  struct stat st;
  if (stat(root, &st) != 0 || !S_ISDIR(st.st_mode))
    return br_error_set(err, BR_ENOTFOUND, "%s is not a depot directory", root);
  static const char *const subs[] = {"objects", "snapshots"};
  for (int i = 0; i < 2; i++) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", root, subs[i]);
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
      return br_error_set(err, BR_ENOTFOUND,
                          "%s is not a depot: it has no %s/ folder (a depot's root has one "
                          "from its first start)",
                          root, subs[i]);
  }
  return BR_OK;
}

int br_xfer__store_open(br_xfer__store *s, const char *root, br_error *err) {
  memset(s, 0, sizeof *s);
  s->rootfd = -1;
  int rc = br_xfer__mkdirs(root, err);
  if (rc) return rc;
  char path[4200];
  static const char *subs[] = {"objects", "snapshots", "tmp"};
  for (int i = 0; i < 3; i++) {
    snprintf(path, sizeof path, "%s/%s", root, subs[i]);
    if (mkdir(path, 0755) != 0 && errno != EEXIST)
      return br_error_set(err, BR_EIO, "mkdir %s: %s", path, strerror(errno));
  }
  for (int i = 0; i < 256; i++) {
    snprintf(path, sizeof path, "%s/objects/%02x", root, i);
    if (mkdir(path, 0755) != 0 && errno != EEXIST)
      return br_error_set(err, BR_EIO, "mkdir %s: %s", path, strerror(errno));
  }
  s->root = strdup(root);
  s->rootfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (!s->root || s->rootfd < 0) {
    br_xfer__store_close(s);
    return br_error_set(err, BR_EIO, "open %s: %s", root, strerror(errno));
  }
  pthread_mutex_init(&s->commit_mu, NULL);
  pthread_mutex_init(&s->sync_mu, NULL);
  pthread_cond_init(&s->sync_cv, NULL);
  rc = br_xfer__index_open(s, err);
  if (rc) br_xfer__store_close(s);
  return rc;
}

void br_xfer__store_close(br_xfer__store *s) {
  br_xfer__index_close(s);
  if (s->rootfd >= 0) {
    close(s->rootfd);
    pthread_mutex_destroy(&s->commit_mu);
    pthread_mutex_destroy(&s->sync_mu);
    pthread_cond_destroy(&s->sync_cv);
  }
  free(s->root);
  s->root = NULL;
  s->rootfd = -1;
}

static void object_rel(const br_xfer_digest *d, char *out, size_t size) {
  char hex[BR_XFER_HEX_LEN + 1];
  br_xfer_digest_hex(d, hex);
  snprintf(out, size, "objects/%.2s/%s", hex, hex);
}

bool br_xfer__store_has(br_xfer__store *s, const br_xfer_digest *d) {
  if (br_xfer__index_has(s, d)) return true;
  char rel[128];
  object_rel(d, rel, sizeof rel);
  struct stat st;
  return fstatat(s->rootfd, rel, &st, 0) == 0 && S_ISREG(st.st_mode);
}

/* Writes data to a fresh file in tmp/; returns its fd (name in tmpname).
 * sync: fsync now; otherwise only start the write-back. room: the bytes
 * from data on that are the caller's to overwrite (>= len), so that data,
 * when aligned, is written as it is (see br_xfer__write_whole_buf). */
static int write_tmp_sync(br_xfer__store *s, const void *data, size_t len, size_t room,
                          char *tmpname, size_t size, bool sync, br_error *err) {
  static const char letters[] = "abcdefghijklmnopqrstuvwxyz";
  int fd = -1;
  bool direct = false;
  for (int attempt = 0; attempt < 100 && fd < 0; attempt++) {
    uint8_t r[12];
    br_xfer_digest d;
    char seed[64];
    snprintf(seed, sizeof seed, "%d-%p-%d-%f", (int)getpid(), (void *)&fd, attempt,
             br_xfer__now());
    br_xfer_sha256(seed, strlen(seed), &d);
    memcpy(r, d.b, sizeof r);
    char name[32];
    for (int i = 0; i < 12; i++) name[i] = letters[r[i] % 26];
    name[12] = 0;
    snprintf(tmpname, size, "tmp/%s", name);
    fd = br_xfer__open_new(s->rootfd, tmpname, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644,
                           &direct);
    if (fd < 0 && errno != EEXIST)
      return br_error_set(err, BR_EIO, "create %s/%s: %s", s->root, tmpname, strerror(errno));
  }
  if (fd < 0) return br_error_set(err, BR_EIO, "no temporary name in %s/tmp", s->root);
  /* written in place only where room holds the padding (never past len
   * when room is len): br_xfer__write_whole_buf copies otherwise */
  int w = br_xfer__write_whole_buf(fd, direct, (uint8_t *)data, len, room);
  if (w == 0 && sync && fsync(fd) != 0) w = -errno;
  if (w == 0 && !sync && !direct) sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
  if (w != 0) {
    close(fd);
    unlinkat(s->rootfd, tmpname, 0);
    return br_error_set(err, BR_EIO, "write %s/%s: %s", s->root, tmpname, strerror(-w));
  }
  return fd;
}

static int write_tmp(br_xfer__store *s, const void *data, size_t len, char *tmpname,
                     size_t size, br_error *err) {
  return write_tmp_sync(s, data, len, len, tmpname, size, true, err);
}

int br_xfer__store_stage(br_xfer__store *s, const br_xfer_digest *d, const void *data,
                         size_t len, size_t room, br_xfer__staged *out, br_error *err) {
  out->d = *d;
  out->fd = -1;
  out->tmp[0] = 0;
  if (br_xfer__store_has(s, d)) return BR_OK;
  int fd = write_tmp_sync(s, data, len, room, out->tmp, sizeof out->tmp, false, err);
  if (fd < 0) return fd;
  out->fd = fd;
  return BR_OK;
}

int br_xfer__store_sync(br_xfer__store *s) {
  pthread_mutex_lock(&s->sync_mu);
  /* what this thread wrote is covered by any sync that starts after now */
  uint64_t mine = ++s->sync_ticket;
  int e;
  while (s->sync_done < mine) {
    if (s->syncing) {
      pthread_cond_wait(&s->sync_cv, &s->sync_mu);
      continue;
    }
    s->syncing = true;
    uint64_t upto = s->sync_ticket;
    pthread_mutex_unlock(&s->sync_mu);
    int r = syncfs(s->rootfd) != 0 ? errno : 0;
    pthread_mutex_lock(&s->sync_mu);
    s->syncing = false;
    s->sync_done = upto;
    if (r) s->sync_err = r; /* sticky: a disk that lost writes is not trusted again */
    pthread_cond_broadcast(&s->sync_cv);
  }
  e = s->sync_err;
  pthread_mutex_unlock(&s->sync_mu);
  return e ? -e : 0;
}

int br_xfer__store_commit_staged(br_xfer__store *s, br_xfer__staged *st, size_t n,
                                 br_error *err) {
  int rc = BR_OK;
  size_t todo = 0;
  for (size_t i = 0; i < n; i++) todo += st[i].fd >= 0;
  /* the bytes on disk, then the names, then the names on disk */
  int e = todo ? br_xfer__store_sync(s) : 0;
  if (e) rc = br_error_set(err, BR_EIO, "sync %s: %s", s->root, strerror(-e));
  size_t renamed = 0;
  for (size_t i = 0; i < n; i++) {
    if (st[i].fd < 0) continue;
    char rel[128];
    object_rel(&st[i].d, rel, sizeof rel);
    close(st[i].fd);
    st[i].fd = -1;
    if (rc == BR_OK && renameat(s->rootfd, st[i].tmp, s->rootfd, rel) != 0)
      rc = br_error_set(err, BR_EIO, "rename to %s/%s: %s", s->root, rel, strerror(errno));
    if (rc != BR_OK) unlinkat(s->rootfd, st[i].tmp, 0);
    else renamed++;
  }
  if (renamed && (e = br_xfer__store_sync(s)) && rc == BR_OK)
    rc = br_error_set(err, BR_EIO, "sync %s: %s", s->root, strerror(-e));
  return rc;
}

int br_xfer__store_open_object(br_xfer__store *s, const br_xfer_digest *d, int *fd,
                               int64_t *off, int64_t *size, int64_t *raw) {
  if (br_xfer__index_open_object(s, d, fd, off, size, raw) == BR_OK) return BR_OK;
  *off = 0;
  *raw = 0;
  char rel[128];
  object_rel(d, rel, sizeof rel);
  *fd = openat(s->rootfd, rel, O_RDONLY | O_CLOEXEC);
  if (*fd < 0) return errno == ENOENT ? BR_ENOTFOUND : BR_EIO;
  struct stat st;
  if (fstat(*fd, &st) != 0) {
    close(*fd);
    *fd = -1;
    return BR_EIO;
  }
  *size = st.st_size;
  return BR_OK;
}

/* Moves a damaged loose object to damaged/ (kept for a look, out of the
 * store's way), durably. */
static int set_aside_loose(br_xfer__store *s, const char *rel, const char *hex, br_error *err) {
  if (mkdirat(s->rootfd, "damaged", 0755) != 0 && errno != EEXIST)
    return br_error_set(err, BR_EIO, "mkdir %s/damaged: %s", s->root, strerror(errno));
  char to[128];
  snprintf(to, sizeof to, "damaged/%s", hex);
  if (renameat(s->rootfd, rel, s->rootfd, to) != 0)
    return errno == ENOENT ? BR_OK
                           : br_error_set(err, BR_EIO, "move %s/%s aside: %s", s->root, rel,
                                          strerror(errno));
  char dir[16];
  snprintf(dir, sizeof dir, "objects/%.2s", hex);
  int fd = openat(s->rootfd, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) br__fsync_dirfd(fd), close(fd);
  fd = openat(s->rootfd, "damaged", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) br__fsync_dirfd(fd), close(fd);
  return BR_OK;
}

/* A loose object's bytes against their digest: BR_OK, BR_ENOTFOUND, or
 * BR_EIO with what filled. */
static int check_loose(int dirfd, const char *name, const br_xfer_digest *want, char *what,
                       size_t size) {
  int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT) return BR_ENOTFOUND;
  struct stat st;
  br_xfer_digest got, *cs = NULL;
  size_t n = 0;
  int rc = BR_OK;
  /* one chunk as a whole: hashed with a chunk size larger than it */
  if (fd < 0 || fstat(fd, &st) != 0 || st.st_size > BR_XFER__MAX_CHUNK ||
      br_xfer__hash_fd(fd, st.st_size, st.st_size ? st.st_size : 1, &got, &cs, &n, NULL))
    rc = BR_EIO, snprintf(what, size, "cannot be read");
  else if (n == 1 ? br_xfer__digest_cmp(&cs[0], want) != 0 : st.st_size != 0)
    rc = BR_EIO, snprintf(what, size, "bytes do not match their digest");
  free(cs);
  if (fd >= 0) close(fd);
  return rc;
}

int br_xfer__store_verify(br_xfer__store *s, const br_xfer_digest *d, bool set_aside,
                          br_error *err) {
  char rel[128], what[64], hex[BR_XFER_HEX_LEN + 1];
  br_xfer_digest_hex(d, hex);
  int64_t off, len, raw;
  /* twice: a gc may move a packed object to a new pack meanwhile */
  for (int attempt = 0; attempt < 2; attempt++) {
    if (br_xfer__index_locate(s, d, rel, sizeof rel, &off, &len, &raw) != BR_OK) break;
    int fd = openat(s->rootfd, rel, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT && attempt == 0) continue;
    br_xfer__check_buf b = {NULL, NULL, 0, 0};
    int c = br_xfer__packed_check(fd, off, len, raw, d, &b);
    br_xfer__check_buf_free(&b);
    if (fd >= 0) close(fd);
    if (!c) return BR_OK;
    int rc = set_aside ? br_xfer__index_forget(s, d, rel, off, err) : BR_OK;
    if (rc) return rc;
    return br_error_set(err, BR_EIO, "object %s, %s at %lld: %s%s", hex, rel, (long long)off,
                        c == 2 ? "bytes do not match their digest" : "cannot be read",
                        set_aside ? " (set aside)" : "");
  }
  object_rel(d, rel, sizeof rel);
  int rc = check_loose(s->rootfd, rel, d, what, sizeof what);
  if (rc != BR_EIO) return rc;
  if (set_aside && (rc = set_aside_loose(s, rel, hex, err))) return rc;
  return br_error_set(err, BR_EIO, "object %s (%s): %s%s", hex, rel, what,
                      set_aside ? " (moved to damaged/)" : "");
}

int br_xfer__store_fsck(br_xfer__store *s, int64_t *checked, br_error *err) {
  int64_t damaged = 0;
  return br_xfer__store_fsck_ex(s, false, NULL, NULL, checked, &damaged, err);
}

int br_xfer__store_fsck_ex(br_xfer__store *s, bool set_aside, br_xfer__fsck_fn each, void *ud,
                           int64_t *checked, int64_t *damaged, br_error *err) {
  *checked = 0;
  *damaged = 0;
  br_xfer_digest *bad = NULL;
  size_t nbad = 0;
  char first[400];
  first[0] = 0;
  int rc = br_xfer__index_fsck(s, each, ud, checked, &bad, &nbad, err);
  for (size_t i = 0; rc == BR_OK && i < nbad; i++) {
    br_error e;
    br_error_clear(&e);
    /* read again where it is now, then set aside */
    int v = br_xfer__store_verify(s, &bad[i], set_aside, &e);
    if (v == BR_EIO && !first[0]) snprintf(first, sizeof first, "%.390s", e.msg);
    if (v == BR_EIO) (*damaged)++;
    if (v == BR_OK) (*checked)++;
  }
  free(bad);
  for (int i = 0; i < 256 && rc == BR_OK; i++) {
    char dir[32];
    snprintf(dir, sizeof dir, "objects/%02x", i);
    int dfd = openat(s->rootfd, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
    if (!d) {
      if (dfd >= 0) close(dfd);
      continue;
    }
    struct dirent *de;
    while ((de = readdir(d))) {
      br_xfer_digest want;
      if (br_xfer_digest_parse(de->d_name, &want) != BR_OK) continue;
      char what[64], full[400];
      int v = check_loose(dfd, de->d_name, &want, what, sizeof what);
      if (v == BR_OK) (*checked)++;
      if (v != BR_EIO) continue;
      (*damaged)++;
      snprintf(full, sizeof full, "%s/%s: %s", dir, de->d_name, what);
      if (each) each(ud, full);
      if (!first[0]) snprintf(first, sizeof first, "%s", full);
      if (set_aside) {
        char rel[300];
        snprintf(rel, sizeof rel, "%s/%s", dir, de->d_name);
        br_error e;
        br_error_clear(&e);
        set_aside_loose(s, rel, de->d_name, &e);
      }
    }
    closedir(d);
  }
  if (rc == BR_OK && *damaged)
    rc = br_error_set(err, BR_EIO, "%lld damaged object%s; the first: %s", (long long)*damaged,
                      *damaged == 1 ? "" : "s", first);
  return rc;
}

/* Highest version of a snapshot directory (0 if none): the live ones only,
 * or counting removed ones too (for the next number). */
static int64_t latest_version(int dirfd, bool with_removed) {
  int fd = dup(dirfd);
  if (fd < 0) return 0;
  DIR *d = fdopendir(fd);
  if (!d) {
    close(fd);
    return 0;
  }
  int64_t best = 0;
  struct dirent *de;
  while ((de = readdir(d))) {
    long long v = 0;
    char tail[8] = {0};
    if (sscanf(de->d_name, "v%lld.%7s", &v, tail) == 2 &&
        (strcmp(tail, "json") == 0 || (with_removed && strcmp(tail, "deleted") == 0)) &&
        v > best)
      best = v;
  }
  closedir(d);
  return best;
}

static int open_snapdir(br_xfer__store *s, const char *name, bool create, br_error *err) {
  char rel[300];
  snprintf(rel, sizeof rel, "snapshots/%s/x", name);
  const char *base;
  int fd = br_xfer__open_parent(s->rootfd, NULL, rel, create, &base, err);
  return fd;
}

int br_xfer__store_commit(br_xfer__store *s, const char *name, const char *json, size_t len,
                          int64_t *version, br_error *err) {
  int rc = br_xfer_name_check(name, err);
  if (rc) return rc;
  int dfd = open_snapdir(s, name, true, err);
  if (dfd < 0) return dfd;
  char tmp[64];
  int fd = write_tmp(s, json, len, tmp, sizeof tmp, err);
  if (fd < 0) {
    close(dfd);
    return fd;
  }
  close(fd);
  /* link() refuses an existing name: the first to link vN owns it. */
  int64_t v = latest_version(dfd, true) + 1;
  for (;; v++) {
    char vname[40], dname[40];
    snprintf(vname, sizeof vname, "v%lld.json", (long long)v);
    snprintf(dname, sizeof dname, "v%lld.deleted", (long long)v);
    struct stat st;
    if (fstatat(dfd, dname, &st, AT_SYMLINK_NOFOLLOW) == 0) continue; /* removed meanwhile */
    if (linkat(s->rootfd, tmp, dfd, vname, 0) == 0) break;
    if (errno != EEXIST) {
      rc = br_error_set(err, BR_EIO, "commit %s: %s", name, strerror(errno));
      break;
    }
  }
  unlinkat(s->rootfd, tmp, 0);
  if (rc == BR_OK) {
    br__fsync_dirfd(dfd);
    *version = v;
  }
  close(dfd);
  return rc;
}

int br_xfer__store_get(br_xfer__store *s, const char *name, int64_t version, char **json,
                       size_t *len, int64_t *found, br_error *err) {
  *json = NULL;
  int rc = br_xfer_name_check(name, err);
  if (rc) return rc;
  br_error e2;
  int dfd = open_snapdir(s, name, false, &e2);
  if (dfd < 0) return br_error_set(err, BR_ENOTFOUND, "no snapshot named '%s'", name);
  if (version <= 0) version = latest_version(dfd, false);
  if (version <= 0) {
    close(dfd);
    return br_error_set(err, BR_ENOTFOUND, "no snapshot named '%s'", name);
  }
  char vname[40], dname[40];
  snprintf(vname, sizeof vname, "v%lld.json", (long long)version);
  snprintf(dname, sizeof dname, "v%lld.deleted", (long long)version);
  int fd = openat(dfd, vname, O_RDONLY | O_CLOEXEC);
  struct stat dst;
  bool removed = fd < 0 && fstatat(dfd, dname, &dst, AT_SYMLINK_NOFOLLOW) == 0;
  close(dfd);
  if (fd < 0)
    return br_error_set(err, BR_ENOTFOUND, removed ? "version %lld of '%s' was removed"
                                                   : "no version %lld of '%s'",
                        (long long)version, name);
  struct stat st;
  if (fstat(fd, &st) != 0 || st.st_size > BR_XFER_MAX_MANIFEST_BYTES) {
    close(fd);
    return br_error_set(err, BR_EIO, "snapshot %s@v%lld unreadable", name, (long long)version);
  }
  char *buf = malloc((size_t)st.st_size + 1);
  if (!buf) {
    close(fd);
    return br_error_set(err, BR_ENOMEM, "out of memory");
  }
  int r = br_xfer__pread_all(fd, buf, (size_t)st.st_size, 0);
  close(fd);
  if (r) {
    free(buf);
    return br_error_set(err, BR_EIO, "read snapshot: %s", strerror(-r));
  }
  buf[st.st_size] = 0;
  *json = buf;
  *len = (size_t)st.st_size;
  *found = version;
  return BR_OK;
}

int br_xfer__store_rm(br_xfer__store *s, const char *name, int64_t version, br_error *err) {
  int rc = br_xfer_name_check(name, err);
  if (rc) return rc;
  br_error e2;
  int dfd = open_snapdir(s, name, false, &e2);
  if (dfd < 0) return br_error_set(err, BR_ENOTFOUND, "no snapshot named '%s'", name);
  char vname[40], dname[40];
  snprintf(vname, sizeof vname, "v%lld.json", (long long)version);
  snprintf(dname, sizeof dname, "v%lld.deleted", (long long)version);
  /* the tombstone keeps the number: a later commit never reuses it */
  if (renameat(dfd, vname, dfd, dname) != 0) {
    int e = errno;
    close(dfd);
    if (e == ENOENT)
      return br_error_set(err, BR_ENOTFOUND, "no version %lld of '%s'", (long long)version, name);
    return br_error_set(err, BR_EIO, "remove %s@v%lld: %s", name, (long long)version, strerror(e));
  }
  br__fsync_dirfd(dfd);
  close(dfd);
  return BR_OK;
}

int br_xfer__store_lock(br_xfer__store *s, bool exclusive) {
  /* one open file per holder: flock belongs to the open file, so threads
   * of one depot each take their own */
  int fd = openat(s->rootfd, "gc.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return -errno;
  while (flock(fd, exclusive ? LOCK_EX : LOCK_SH) != 0) {
    if (errno == EINTR) continue;
    int e = errno;
    close(fd);
    return -e;
  }
  return fd;
}

void br_xfer__store_unlock(int fd) {
  if (fd >= 0) close(fd);
}
