/* Depot garbage collection and snapshot removal.
 *
 * `rm` turns snapshots/NAME/vN.json into vN.deleted: the number is never
 * given again, and the chunks it alone named go at the next gc.
 *
 * `gc` marks every chunk a live snapshot names, then removes loose objects
 * nobody names, drops packs whose objects nobody names, and rewrites packs
 * that are mostly dead (their live objects move to a new pack first); packs
 * that no index entry names and older than an hour (a crash came between
 * their sync and their index commit) go too. It is safe beside a running
 * depot:
 * - it holds the depot's gc lock exclusively from mark to sweep, and a
 *   snapshot commit holds it (shared) from its check that every chunk exists
 *   to its link: a commit lands before the mark (its chunks are marked) or
 *   after the sweep (its check sees what is gone: 409, the client sends it
 *   again);
 * - nothing younger than the grace period (a day by default) is removed:
 *   the chunks of a push still uploading, not yet committed, stay. */
#include "xfer_int.h"
#include "../fs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int cmp_digest(const void *a, const void *b) {
  return br_xfer__digest_cmp(a, b);
}

static bool live(const br_xfer__dvec *d, const br_xfer_digest *x) {
  return d->n && bsearch(x, d->v, d->n, sizeof *d->v, cmp_digest) != NULL;
}

/* Calls visit for each live version (snapshots/NAME/vN.json) under dirfd,
 * a snapshots/ tree whose path below snapshots/ is rel, until one returns
 * non-zero. dirfd and file: where the version is; a version removed since
 * readdir may be gone when visit opens it (rm renames it to vN.deleted). */
int br_xfer__walk_versions(int dirfd, const char *rel, br_xfer__version_fn *visit, void *ud,
                           br_error *err) {
  int fd = dup(dirfd);
  DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
  if (!d) {
    if (fd >= 0) close(fd);
    return br_error_set(err, BR_EIO, "snapshots/%s: %s", rel, strerror(errno));
  }
  int rc = BR_OK;
  struct dirent *de;
  while (rc == BR_OK && (de = readdir(d))) {
    const char *nm = de->d_name;
    if (nm[0] == '.') continue;
    struct stat st;
    if (fstatat(dirfd, nm, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    if (S_ISDIR(st.st_mode)) {
      char sub[4096];
      int len = snprintf(sub, sizeof sub, "%s%s%s", rel, *rel ? "/" : "", nm);
      if (len < 0 || (size_t)len >= sizeof sub) {
        rc = br_error_set(err, BR_EIO, "snapshots/%s/%s: path too long", rel, nm);
        break;
      }
      int cfd = openat(dirfd, nm, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (cfd < 0) {
        rc = br_error_set(err, BR_EIO, "snapshots/%s: %s", sub, strerror(errno));
        break;
      }
      rc = br_xfer__walk_versions(cfd, sub, visit, ud, err);
      close(cfd);
      continue;
    }
    long long v;
    char tail[8] = {0};
    if (S_ISREG(st.st_mode) && sscanf(nm, "v%lld.%7s", &v, tail) == 2 &&
        strcmp(tail, "json") == 0)
      rc = visit(ud, dirfd, nm, rel, (int64_t)v, &st, err);
  }
  closedir(d);
  return rc;
}

/* A version's manifest, read and parsed: BR_OK and *m, 1 when it is gone
 * (removed since the walk saw it), or an error naming it. */
int br_xfer__read_version(int dirfd, const char *file, const char *name, const struct stat *st,
                          br_xfer_manifest **m, br_error *err) {
  *m = NULL;
  if (st->st_size > BR_XFER_MAX_MANIFEST_BYTES)
    return br_error_set(err, BR_EIO, "snapshots/%s/%s is too large to read", name, file);
  int vfd = openat(dirfd, file, O_RDONLY | O_CLOEXEC);
  if (vfd < 0 && errno == ENOENT) return 1;
  char *buf = vfd >= 0 ? malloc((size_t)st->st_size + 1) : NULL;
  int rc = BR_OK;
  if (!buf || br_xfer__pread_all(vfd, buf, (size_t)st->st_size, 0) != 0) {
    rc = br_error_set(err, BR_EIO, "snapshots/%s/%s unreadable", name, file);
  } else {
    br_error perr;
    br_error_clear(&perr);
    if (br_xfer_manifest_parse(buf, (size_t)st->st_size, m, &perr) != BR_OK)
      rc = br_error_set(err, BR_EIO, "snapshots/%s/%s: %s", name, file, perr.msg);
  }
  free(buf);
  if (vfd >= 0) close(vfd);
  return rc;
}

typedef struct marking {
  br_xfer__dvec *marks;
  int64_t *snapshots;
} marking;

/* Marks the chunks a live version names. A version that cannot be read
 * stops the gc: never remove what a snapshot might name. */
static int mark_version(void *ud, int dirfd, const char *file, const char *name, int64_t version,
                        const struct stat *st, br_error *err) {
  (void)version;
  marking *mk = ud;
  br_xfer_manifest *m;
  int rc = br_xfer__read_version(dirfd, file, name, st, &m, err);
  if (rc == 1) return BR_OK; /* gone: it names nothing */
  if (rc) {
    char msg[sizeof err->msg];
    snprintf(msg, sizeof msg, "%s", err->msg);
    return br_error_set(err, BR_EIO, "%s; nothing removed", msg);
  }
  (*mk->snapshots)++;
  for (size_t i = 0; i < m->nentries && rc == BR_OK; i++)
    for (size_t c = 0; c < m->entries[i].nchunks && rc == BR_OK; c++)
      if (br_xfer__dvec_add(mk->marks, &m->entries[i].chunks[c]))
        rc = br_error_set(err, BR_ENOMEM, "out of memory");
  br_xfer_manifest_free(m);
  return rc;
}

typedef struct pobj {
  int64_t pack;
  char name[48];
  br_xfer_digest d;
  int64_t off, len, raw;
} pobj;

typedef struct pvec {
  pobj *v;
  size_t n, cap;
} pvec;

static int take_obj(void *ud, int64_t pack, const char *name, const br_xfer_digest *d,
                    int64_t off, int64_t len, int64_t raw) {
  pvec *p = ud;
  if (p->n == p->cap) {
    size_t cap = p->cap ? p->cap * 2 : 4096;
    void *x = realloc(p->v, cap * sizeof *p->v);
    if (!x) return BR_ENOMEM;
    p->v = x;
    p->cap = cap;
  }
  pobj *o = &p->v[p->n++];
  o->pack = pack;
  snprintf(o->name, sizeof o->name, "%s", name ? name : "");
  o->d = *d;
  o->off = off;
  o->len = len;
  o->raw = raw;
  return BR_OK;
}

/* Moves the live objects of one pack (objs[0..n), all of it) to a new pack. */
static int repack(br_xfer__store *s, const pobj *objs, size_t n, const br_xfer__dvec *marks,
                  br_error *err) {
  char rel[80];
  snprintf(rel, sizeof rel, "packs/%s", objs[0].name);
  int fd = openat(s->rootfd, rel, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return br_error_set(err, BR_EIO, "%s/%s: %s", s->root, rel, strerror(errno));
  br_xfer__buf buf = {0};
  uint8_t *scratch = NULL; /* a compressed object's raw bytes, to check them */
  size_t scap = 0;
  br_xfer__packed *pk = calloc(n, sizeof *pk);
  size_t npk = 0;
  int rc = pk ? BR_OK : br_error_set(err, BR_ENOMEM, "out of memory");
  for (size_t i = 0; i < n && rc == BR_OK; i++) {
    if (!live(marks, &objs[i].d)) continue;
    if (br_xfer__buf_reserve(&buf, (size_t)objs[i].len)) {
      rc = br_error_set(err, BR_ENOMEM, "out of memory");
      break;
    }
    if (br_xfer__pread_all(fd, buf.data + buf.len, (size_t)objs[i].len, objs[i].off) != 0) {
      rc = br_error_set(err, BR_EIO, "%s/%s: cannot read an object", s->root, rel);
      break;
    }
    /* copied bytes are checked: a gc never spreads a corrupted object */
    if (!br_xfer__stored_matches(buf.data + buf.len, (size_t)objs[i].len, objs[i].raw,
                                 &objs[i].d, &scratch, &scap)) {
      rc = br_error_set(err, BR_EIO, "%s/%s at %lld: bytes do not match their digest", s->root,
                        rel, (long long)objs[i].off);
      break;
    }
    pk[npk].d = objs[i].d;
    pk[npk].off = (int64_t)buf.len;
    pk[npk].len = objs[i].len;
    pk[npk].raw = objs[i].raw;
    buf.len += (size_t)objs[i].len;
    npk++;
  }
  close(fd);
  if (rc == BR_OK) rc = br_xfer__pack_write_ex(s, &buf, pk, npk, true, NULL, err);
  br_xfer__buf_free(&buf);
  br_xfer__mem_put(scratch, scap);
  free(pk);
  return rc;
}

int br_depot_gc(const char *root, int64_t grace_s, bool dry_run, br_depot_gc_result *res,
                br_error *err) {
  br_depot_gc_result local;
  if (!res) res = &local;
  memset(res, 0, sizeof *res);
  if (br_xfer__depot_root_check(root, err)) return BR_ENOTFOUND;
  br_xfer__store s;
  int rc = br_xfer__store_open(&s, root, err);
  if (rc) return rc;
  int lock = br_xfer__store_lock(&s, true);
  if (lock < 0) {
    br_xfer__store_close(&s);
    return br_error_set(err, BR_EIO, "%s/gc.lock: %s", root, strerror(-lock));
  }
  time_t cutoff = time(NULL) - (time_t)grace_s;
  br_xfer__dvec marks = {0};
  pvec objs = {0};
  int64_t *dead = NULL;
  size_t ndead = 0;
  int sfd = openat(s.rootfd, "snapshots", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (sfd < 0) rc = br_error_set(err, BR_EIO, "%s/snapshots: %s", root, strerror(errno));
  else rc = br_xfer__walk_versions(sfd, "", mark_version, &(marking){&marks, &res->snapshots}, err);
  if (sfd >= 0) close(sfd);
  if (rc == BR_OK && marks.n) {
    qsort(marks.v, marks.n, sizeof *marks.v, cmp_digest);
    size_t u = 0;
    for (size_t i = 0; i < marks.n; i++)
      if (u == 0 || br_xfer__digest_cmp(&marks.v[u - 1], &marks.v[i]) != 0)
        marks.v[u++] = marks.v[i];
    marks.n = u;
  }
  res->live_chunks = (int64_t)marks.n;

  /* Loose objects nobody names, older than the grace. */
  for (int i = 0; i < 256 && rc == BR_OK; i++) {
    char dir[32];
    snprintf(dir, sizeof dir, "objects/%02x", i);
    int dfd = openat(s.rootfd, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
    if (!d) {
      if (dfd >= 0) close(dfd);
      continue;
    }
    bool removed = false;
    struct dirent *de;
    while ((de = readdir(d))) {
      br_xfer_digest dg;
      struct stat st;
      if (br_xfer_digest_parse(de->d_name, &dg) != BR_OK || live(&marks, &dg) ||
          fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode))
        continue;
      if (st.st_mtime > cutoff) {
        res->kept_young++;
        continue;
      }
      if (!dry_run && unlinkat(dfd, de->d_name, 0) != 0) continue;
      removed = true;
      res->objects_removed++;
      res->bytes_freed += st.st_size;
    }
    if (removed && !dry_run) br__fsync_dirfd(dfd);
    closedir(d);
  }

  /* Packs: dropped when nothing in them is named, rewritten when less than
   * half of their bytes is. */
  if (rc == BR_OK) rc = br_xfer__index_scan(&s, take_obj, &objs, err);
  if (rc == BR_OK) dead = calloc(objs.n ? objs.n : 1, sizeof *dead);
  if (rc == BR_OK && !dead) rc = br_error_set(err, BR_ENOMEM, "out of memory");
  for (size_t i = 0; i < objs.n && rc == BR_OK;) {
    size_t k = i;
    int64_t bytes = 0, live_bytes = 0, nlive = 0;
    while (k < objs.n && objs.v[k].pack == objs.v[i].pack) {
      bytes += objs.v[k].len;
      if (live(&marks, &objs.v[k].d)) live_bytes += objs.v[k].len, nlive++;
      k++;
    }
    char rel[80];
    snprintf(rel, sizeof rel, "packs/%s", objs.v[i].name);
    struct stat st;
    bool young = fstatat(s.rootfd, rel, &st, 0) == 0 && st.st_mtime > cutoff;
    if (young) {
      if (live_bytes < bytes) res->kept_young += (int64_t)(k - i) - nlive;
    } else if (nlive == 0) {
      dead[ndead++] = objs.v[i].pack;
      res->objects_removed += (int64_t)(k - i);
      res->bytes_freed += bytes;
    } else if (live_bytes * 2 < bytes) {
      if (!dry_run) rc = repack(&s, objs.v + i, k - i, &marks, err);
      if (rc == BR_OK) {
        dead[ndead++] = objs.v[i].pack;
        res->packs_rewritten++;
        res->objects_removed += (int64_t)(k - i) - nlive;
        res->bytes_freed += bytes - live_bytes;
      }
    }
    i = k;
  }
  /* The index forgets them (durably), then their files go. */
  if (rc == BR_OK && ndead && !dry_run) rc = br_xfer__index_drop_packs(&s, dead, ndead, err);
  if (rc == BR_OK && ndead) {
    for (size_t i = 0, k = 0; i < objs.n && k < ndead; i++) {
      if (objs.v[i].pack != dead[k]) continue;
      if (i + 1 < objs.n && objs.v[i + 1].pack == objs.v[i].pack) continue; /* once per pack */
      char rel[80];
      snprintf(rel, sizeof rel, "packs/%s", objs.v[i].name);
      if (!dry_run) unlinkat(s.rootfd, rel, 0);
      res->packs_removed++;
      k++;
    }
    if (!dry_run) {
      int dfd = openat(s.rootfd, "packs", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      if (dfd >= 0) {
        br__fsync_dirfd(dfd);
        close(dfd);
      }
    }
  }
  /* packs a crash cut off before their index commit (a depot only looks
   * when it starts) */
  if (rc == BR_OK) {
    int64_t bytes = 0;
    res->packs_removed += br_xfer__pack_clean(&s, dry_run, &bytes);
    res->bytes_freed += bytes;
  }
  free(dead);
  free(objs.v);
  free(marks.v);
  br_xfer__store_unlock(lock);
  br_xfer__store_close(&s);
  return rc;
}

typedef struct listing {
  br_depot_entry *v;
  size_t n, cap;
  bool detail;
} listing;

static int list_version(void *ud, int dirfd, const char *file, const char *name, int64_t version,
                        const struct stat *st, br_error *err) {
  listing *l = ud;
  if (!*name || version <= 0) return BR_OK; /* not a snapshot's */
  br_depot_entry e = {NULL, version, (int64_t)st->st_mtime, -1, -1};
  if (l->detail) {
    br_xfer_manifest *m;
    int rc = br_xfer__read_version(dirfd, file, name, st, &m, err);
    if (rc == 1) return BR_OK; /* removed meanwhile */
    if (rc) return rc;
    br_xfer__manifest_totals(m, &e.files, &e.bytes);
    br_xfer_manifest_free(m);
  }
  if (l->n == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 64;
    br_depot_entry *nv = realloc(l->v, cap * sizeof *nv);
    if (!nv) return br_error_set(err, BR_ENOMEM, "out of memory");
    l->v = nv;
    l->cap = cap;
  }
  if (!(e.name = strdup(name))) return br_error_set(err, BR_ENOMEM, "out of memory");
  l->v[l->n++] = e;
  return BR_OK;
}

static int cmp_entry(const void *a, const void *b) {
  const br_depot_entry *x = a, *y = b;
  int c = strcmp(x->name, y->name);
  return c ? c : (x->version > y->version) - (x->version < y->version);
}

void br_depot_list_free(br_depot_entry *v, size_t n) {
  for (size_t i = 0; i < n; i++) free(v[i].name);
  free(v);
}

int br_depot_list(const char *root, const char *name, bool detail, br_depot_entry **out,
                  size_t *n, br_error *err) {
  *out = NULL;
  *n = 0;
  if (br_xfer__depot_root_check(root, err)) return BR_ENOTFOUND;
  if (name && *name && br_xfer_name_check(name, err)) return BR_EINVAL;
  char path[4200];
  snprintf(path, sizeof path, "%s/snapshots%s%s", root, name && *name ? "/" : "",
           name && *name ? name : "");
  int dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0 && errno == ENOENT && name && *name) return BR_OK; /* no such name */
  if (dfd < 0) return br_error_set(err, BR_EIO, "%s: %s", path, strerror(errno));
  listing l = {.detail = detail};
  int rc = br_xfer__walk_versions(dfd, name && *name ? name : "", list_version, &l, err);
  close(dfd);
  if (rc) {
    br_depot_list_free(l.v, l.n);
    return rc;
  }
  if (l.n) qsort(l.v, l.n, sizeof *l.v, cmp_entry);
  *out = l.v;
  *n = l.n;
  return BR_OK;
}

int br_depot_rm(const char *root, const char *name, int64_t version, br_error *err) {
  if (br_xfer__depot_root_check(root, err)) return BR_ENOTFOUND;
  if (version <= 0) return br_error_set(err, BR_EINVAL, "give the version to remove: NAME@vN");
  br_xfer__store s;
  int rc = br_xfer__store_open(&s, root, err);
  if (rc) return rc;
  rc = br_xfer__store_rm(&s, name, version, err);
  br_xfer__store_close(&s);
  return rc;
}
