/* Push: scan a tree, then a pipeline. Hashing threads hash what the hash
 * cache does not know and hand each file over as soon as it is hashed (a
 * file of several chunks, chunk by chunk: see hash_large); the
 * event loop asks the depot which of those chunks it lacks (many files to a
 * question, while the threads go on hashing) and sends them (small chunks
 * bundled many to a request, large ones one per request, several requests
 * in flight); at the end each manifest is committed as a new version. A
 * file's bytes are kept from its hashing until they are sent, within a
 * memory bound (a small file's whole, a larger one's chunk by chunk while
 * there is room), so it is read once; the bytes sent are the bytes hashed
 * (a new attempt reads them again, from a file still as it was hashed).
 * A file that changes while it is pushed is caught (its size, times or
 * inode differ from when it was hashed) and reported, never committed. When
 * the hash cache knew every file, the depot is asked about a sample of the
 * chunks, and if it has them the commit is tried first: a depot that has
 * every chunk takes it in one round trip more. Small files the hash cache
 * knew and the depot lacks (a push resumed, or to another depot) are read
 * by threads of their own while the loop sends. */
#include "client_int.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#define MISSING_BATCH 20000
#define MAX_BUNDLE_ENTRIES 4096
#define WAKE_EVERY 64 /* hashed files that wake the event loop */
#define ASK_MIN 1024 /* chunks per 'missing' question while hashing goes on */
#define ASK_WAIT 0.02 /* seconds: a question that waits no more goes as it is */
#define DEFER_MAX 16 /* small files per hashing thread whose reads are started */
#define PROBE_CHUNKS 256 /* chunks asked about before a commit is tried (see probe) */
#define MAX_THREADS 16 /* hashing threads, and reading threads (see threads_of) */

typedef struct cref {
  br_xfer_digest d;
  struct pfile *f;
  uint32_t chunk;
  bool need;
} cref;

typedef struct pfile {
  char *rel;
  int type;
  struct stat st;
  char *target;
  br_xfer_digest digest;
  br_xfer_digest *chunks;
  size_t nchunks;
  cref *refs;     /* its chunks, once hashed (event loop) */
  uint32_t job;
  int zstate;     /* zstd for this file: 0 undecided, 1 yes, -1 no */
  int unresolved; /* chunks not yet found in the depot or sent */
  bool moved;     /* some chunk of it was sent */
  uint8_t *data;  /* a small file's bytes, from its hashing until sent */
  uint8_t **kept; /* a larger file's chunks' bytes, the same (NULL: read when sent) */
  char *abs;      /* while waiting to be hashed: its path */
  bool hashed;
  size_t published; /* a large file's chunks hashed so far (under mu; see hash_large) */
  size_t taken;     /* of those, taken by the loop (take_chunks) */
  size_t lead;      /* a hard link of the job's files[lead - 1] (0: none), the
                     * first path of its inode: not hashed nor sent, it takes
                     * that file's digests */
  int64_t nlinks;   /* a lead: how many files are its links (done with it) */
} pfile;

typedef struct pjob {
  br_xfer_ref ref;
  char *dir;
  pfile *files;
  size_t n, cap;
  int64_t version, same_as; /* committed; the version before when it holds the same tree */
  bool conflict; /* its commit was refused: chunks went missing */
  int nrefused;  /* paths the scan refused; the first few said in refused */
  char refused[1300];
  const br_xfer_opts *o; /* the push's */
} pjob;

typedef struct push {
  br_xfer__engine eng;
  const br_xfer_opts *o;
  pjob *jobs;
  size_t njobs;
  br_xfer__hcache *hc;
  br_xfer_result *res;
  int64_t chunk_size;
  /* hashing threads (todo, next: theirs; the rest under mu) */
  pfile **todo;
  size_t ntodo;
  atomic_size_t next;
  pthread_mutex_t mu;
  pthread_cond_t mem_cv;
  pfile **ready; /* hashed, for the event loop */
  pfile *growing[MAX_THREADS]; /* large files being hashed (one a thread), first chunks ready */
  int ngrowing;
  pfile **taking; /* the loop's copy of ready */
  size_t nready;
  int64_t mem_used, mem_cap; /* small files' buffers in use (see buf_get) */
  int mem_waiting;           /* threads waiting for memory */
  int hashing;               /* threads still running */
  bool stop;
  int hash_rc;
  br_error hash_err;
  atomic_llong hashed_bytes;
  atomic_bool no_nowait; /* the file system refuses RWF_NOWAIT reads */
  atomic_llong read_ahead; /* small files deferred: see hash_worker */
  /* reading threads (see load_worker): small files the hash cache knew,
   * that the depot lacks. load, nload: queued by the loop; load_next: the
   * threads' next; loaded, nloaded: read, for the loop (all under mu) */
  pfile **load, **loaded, **taking_loaded;
  size_t nload, load_next, nloaded;
  pthread_cond_t load_cv;
  pthread_t loaders[MAX_THREADS];
  int nloaders;
  size_t loading; /* the loop's: files queued and not yet taken back */
  /* event loop: the chunks seen (one per digest), the chunks to ask
   * about, the chunks to send */
  cref **seen;
  size_t nseen, seen_cap;
  cref **ask;
  size_t nask, ask_cap;
  cref **sendq;
  size_t nsend, send_cap;
  int64_t send_small; /* bytes of small chunks in sendq */
  int asking;         /* 'missing' questions in flight */
  double ask_since;   /* when ask got its first chunk */
  int sending;        /* uploads in flight */
  int64_t bundle;     /* bytes of small chunks per upload */
  int64_t small_total;
  bool remembered;    /* the hashed files are in the hash cache (remember_hashed) */
  bool probe_lacks;   /* the depot lacks a chunk of the probe's sample */
  int z_misses;       /* one-chunk files in a row that did not compress (see z_try) */
  unsigned z_skips;   /* one-chunk files sent raw untried since */
} push;

/* ---- scanning ---- */

static int add_file(pjob *j, const char *rel, int type, const struct stat *st,
                    const char *target, br_error *err) {
  if (j->n == j->cap) {
    size_t cap = j->cap ? j->cap * 2 : 256;
    void *p = realloc(j->files, cap * sizeof *j->files);
    if (!p) return br_error_set(err, BR_ENOMEM, "out of memory");
    j->files = p;
    j->cap = cap;
  }
  pfile *f = &j->files[j->n];
  memset(f, 0, sizeof *f);
  f->rel = strdup(rel);
  f->type = type;
  f->st = *st;
  f->target = target ? strdup(target) : NULL;
  if (!f->rel || (target && !f->target)) return br_error_set(err, BR_ENOMEM, "out of memory");
  j->n++;
  return BR_OK;
}

/* A path push refuses (a name Windows or UTF-8 would not take, a link out of
 * the tree, a device): noted, and the scan goes on, so one push names them. */
static void refuse(pjob *j, br_error *err) {
  size_t w = strlen(j->refused);
  if (j->o->refused) j->o->refused(j->o->refused_ud, err->msg);
  if (j->nrefused++ < 4)
    snprintf(j->refused + w, sizeof j->refused - w, "%s%.300s", w ? "; " : "", err->msg);
  br_error_clear(err);
}

static int scan(pjob *j, const char *rel, br_error *err) {
  char *abs = NULL;
  if (asprintf(&abs, "%s%s%s", j->dir, *rel ? "/" : "", rel) < 0)
    return br_error_set(err, BR_ENOMEM, "out of memory");
  DIR *d = opendir(abs);
  if (!d) {
    int e = errno;
    free(abs);
    return br_error_set(err, BR_EIO, "cannot read directory %s%s%s: %s", j->dir,
                        *rel ? "/" : "", rel, strerror(e));
  }
  int rc = BR_OK;
  struct dirent *de;
  while (rc == BR_OK && (de = readdir(d))) {
    const char *nm = de->d_name;
    if (strcmp(nm, ".") == 0 || strcmp(nm, "..") == 0) continue;
    /* Left-overs of an interrupted pull are not part of the tree. */
    if (strncmp(nm, BR_XFER__PARTIAL_PREFIX, strlen(BR_XFER__PARTIAL_PREFIX)) == 0) continue;
    char *crel = NULL, *cabs = NULL;
    if (asprintf(&crel, "%s%s%s", rel, *rel ? "/" : "", nm) < 0 ||
        asprintf(&cabs, "%s/%s", abs, nm) < 0) {
      free(crel);
      rc = br_error_set(err, BR_ENOMEM, "out of memory");
      break;
    }
    struct stat st;
    json_t *utf8 = json_string(crel); /* NULL when the name is not UTF-8 */
    if (!utf8) {
      char shown[600];
      rc = br_error_set(err, BR_EINVAL, "'%s': the name is not valid UTF-8",
                        br_xfer__shown(cabs, true, shown, sizeof shown));
    } else if (lstat(cabs, &st) != 0) {
      rc = br_error_set(err, BR_EIO, "%s: %s", cabs, strerror(errno));
    } else if ((rc = br_xfer_path_check(crel, err)) != BR_OK) {
      /* the message names the path */
    } else if (S_ISREG(st.st_mode)) {
      rc = add_file(j, crel, BR_XFER_FILE, &st, NULL, err);
    } else if (S_ISDIR(st.st_mode)) {
      rc = add_file(j, crel, BR_XFER_DIR, &st, NULL, err);
      if (rc == BR_OK) rc = scan(j, crel, err);
    } else if (S_ISLNK(st.st_mode)) {
      char target[4097];
      ssize_t n = readlink(cabs, target, sizeof target - 1);
      if (n < 0) {
        rc = br_error_set(err, BR_EIO, "readlink %s: %s", cabs, strerror(errno));
      } else {
        target[n] = 0;
        rc = br_xfer_link_check(crel, target, err);
        if (rc == BR_OK) rc = add_file(j, crel, BR_XFER_SYMLINK, &st, target, err);
      }
    } else {
      rc = br_error_set(err, BR_EINVAL, "'%s': not a regular file, "
                        "directory or symlink (device, fifo or socket)", cabs);
    }
    if (rc == BR_EINVAL) { /* every refusal above; errors of the disk stop the scan */
      refuse(j, err);
      rc = BR_OK;
    }
    json_decref(utf8);
    free(crel);
    free(cabs);
  }
  closedir(d);
  free(abs);
  return rc;
}

static int cmp_pfile(const void *a, const void *b) {
  return strcmp(((const pfile *)a)->rel, ((const pfile *)b)->rel);
}

/* Paths compared as macOS and Windows compare names by default: ASCII
 * letters without case (other letters' cases are not folded here). */
static int cmp_folded(const void *a, const void *b) {
  const unsigned char *x = (const unsigned char *)(*(const pfile *const *)a)->rel;
  const unsigned char *y = (const unsigned char *)(*(const pfile *const *)b)->rel;
  for (;; x++, y++) {
    int cx = *x < 128 ? tolower(*x) : *x, cy = *y < 128 ? tolower(*y) : *y;
    if (cx != cy || !cx) return cx - cy;
  }
}

/* Two paths of the tree that differ only in case would be one file where
 * the tree is pulled on macOS or Windows: each such pair is refused. */
static int refuse_case_twins(pjob *j, br_error *err) {
  if (j->n < 2) return BR_OK;
  const pfile **v = malloc(j->n * sizeof *v);
  if (!v) return br_error_set(err, BR_ENOMEM, "out of memory");
  for (size_t i = 0; i < j->n; i++) v[i] = &j->files[i];
  qsort(v, j->n, sizeof *v, cmp_folded);
  for (size_t i = 1; i < j->n; i++)
    if (!cmp_folded(&v[i - 1], &v[i])) {
      br_error e;
      br_error_set(&e, BR_EINVAL, "unsafe path '%.300s': '%.300s' differs from it only in case "
                   "(macOS and Windows keep one of the two)", v[i]->rel, v[i - 1]->rel);
      refuse(j, &e);
    }
  free(v);
  return BR_OK;
}

static int cmp_inode(const void *a, const void *b) {
  const pfile *x = *(const pfile *const *)a, *y = *(const pfile *const *)b;
  if (x->st.st_dev != y->st.st_dev) return x->st.st_dev < y->st.st_dev ? -1 : 1;
  if (x->st.st_ino != y->st.st_ino) return x->st.st_ino < y->st.st_ino ? -1 : 1;
  return x < y ? -1 : x > y;
}

static bool linked(const pfile *f) { return f->type == BR_XFER_FILE && f->st.st_nlink > 1; }

/* Two names of one inode, seen as the same file: one that changed between
 * their stats is hashed and pushed under each name, as files of their own. */
static bool same_file(const pfile *a, const pfile *b) {
  return a->st.st_dev == b->st.st_dev && a->st.st_ino == b->st.st_ino &&
         a->st.st_size == b->st.st_size &&
         br_xfer__mtime_ns(&a->st) == br_xfer__mtime_ns(&b->st) &&
         br_xfer__ctime_ns(&a->st) == br_xfer__ctime_ns(&b->st);
}

/* Files of the tree that are one inode (hard links): each after the first
 * (in path order) is marked a link of it, and is read once, as it. */
static int find_links(pjob *j, br_error *err) {
  size_t k = 0;
  for (size_t i = 0; i < j->n; i++) k += linked(&j->files[i]);
  if (k < 2) return BR_OK;
  pfile **v = malloc(k * sizeof *v);
  if (!v) return br_error_set(err, BR_ENOMEM, "out of memory");
  k = 0;
  for (size_t i = 0; i < j->n; i++)
    if (linked(&j->files[i])) v[k++] = &j->files[i];
  qsort(v, k, sizeof *v, cmp_inode); /* by inode, then path order (files is sorted) */
  for (size_t i = 1, first = 0; i < k; i++) {
    if (same_file(v[i], v[first])) {
      v[i]->lead = (size_t)(v[first] - j->files) + 1;
      v[first]->nlinks++;
    } else {
      first = i;
    }
  }
  free(v);
  return BR_OK;
}

/* ---- hashing (threads) ---- */

static bool keeps_data(const push *p, const pfile *f) {
  return f->st.st_size > 0 && f->st.st_size <= p->o->small_file &&
         f->st.st_size <= p->chunk_size;
}

/* Small files' bytes are kept within mem_cap: a hashing thread waits while
 * the buffers in use would pass it (unless none is). The buffers come from
 * the shared pool and count with their capacity. */
static void buf_put(push *p, uint8_t *b, int64_t size) {
  size_t cap = br_xfer__mem_cap((size_t)size);
  br_xfer__mem_put(b, cap);
  pthread_mutex_lock(&p->mu);
  p->mem_used -= (int64_t)cap;
  pthread_cond_broadcast(&p->mem_cv);
  pthread_mutex_unlock(&p->mu);
}

/* wait: for room in the bound (none is needed while nothing is in use);
 * else NULL at once when there is none (or the push stops). */
static uint8_t *buf_get(push *p, int64_t size, bool wait) {
  int64_t cap = (int64_t)br_xfer__mem_cap((size_t)size);
  pthread_mutex_lock(&p->mu);
  while (wait && !p->stop && p->mem_used > 0 && p->mem_used + cap > p->mem_cap) {
    p->mem_waiting++;
    br_xfer__engine_wake(&p->eng); /* the loop sends what it holds */
    pthread_cond_wait(&p->mem_cv, &p->mu);
    p->mem_waiting--;
  }
  if (!wait && (p->stop || p->mem_used + cap > p->mem_cap)) {
    pthread_mutex_unlock(&p->mu);
    return NULL;
  }
  p->mem_used += cap;
  pthread_mutex_unlock(&p->mu);
  size_t got;
  uint8_t *b = br_xfer__mem_get((size_t)size, &got);
  if (!b) buf_put(p, NULL, size);
  return b;
}

#define NOT_CACHED 1 /* read_small, hash_small: not read, its bytes are not in memory */

/* Reads a small file whole: 0 or -errno; nowait: only if its bytes are all
 * in the page cache, else NOT_CACHED, told by a read with RWF_NOWAIT (for
 * where the page cache cannot be asked: that read starts one of what is
 * missing, and may find it done on a fast disk). Where the file system
 * refuses RWF_NOWAIT, it reads as without nowait, and so do later calls. */
static int read_small(push *p, int fd, uint8_t *buf, int64_t size, bool nowait) {
  if (nowait && !atomic_load(&p->no_nowait)) {
    struct iovec v = {buf, (size_t)size};
    ssize_t n = preadv2(fd, &v, 1, 0, RWF_NOWAIT);
    if (n == size) return 0;
    if (n >= 0 || errno == EAGAIN) return NOT_CACHED;
    if (errno == EOPNOTSUPP || errno == EINVAL || errno == ENOSYS)
      atomic_store(&p->no_nowait, true);
  }
  return br_xfer__pread_all(fd, buf, (size_t)size, 0);
}

/* A small file: read whole (its bytes are kept for the upload) and hashed.
 * nowait: only from the page cache, else NOT_CACHED. The page cache is
 * asked first (br_xfer__cached), before a buffer is taken: a file not in
 * memory neither holds one nor waits for the memory bound. */
static int hash_small(push *p, pfile *f, int fd, int64_t size, bool nowait, br_error *err) {
  int cached = nowait ? br_xfer__cached(fd, 0, size) : 1;
  if (cached == 0) return NOT_CACHED;
  uint8_t *buf = buf_get(p, size, true);
  br_xfer_digest *cs = calloc(1, sizeof *cs);
  int rc = BR_OK, e;
  unsigned int dl = 0;
  if (!buf || !cs)
    rc = br_error_set(err, BR_ENOMEM, "out of memory hashing a file");
  else if ((e = read_small(p, fd, buf, size, cached < 0)) == NOT_CACHED)
    rc = NOT_CACHED;
  else if (e)
    rc = br_error_set(err, BR_EIO, "read failed or file shrank (%s)", strerror(-e));
  else if (!EVP_Digest(buf, (size_t)size, cs[0].b, &dl, br_xfer__sha256_md(), NULL))
    rc = br_error_set(err, BR_EIO, "SHA-256 failed");
  if (rc) {
    buf_put(p, buf, size);
    free(cs);
    return rc;
  }
  br_xfer_file_digest(cs, 1, &f->digest);
  f->chunks = cs;
  f->nchunks = 1;
  f->data = buf;
  return BR_OK;
}

/* A file of several chunks is handed to the loop chunk by chunk as they
 * are hashed, so that its first chunks are asked about and sent while the
 * rest is hashed (a 2 GiB file took 1.3 s to hash before anything went). */
typedef struct growth {
  push *p;
  pfile *f;
  const struct stat *before;
  uint8_t **kept;   /* becomes f->kept with the first chunk */
  uint8_t *pending; /* the chunk being read into a buffer of the memory bound */
  size_t pending_len;
} growth;

/* A chunk's bytes are kept if the memory bound has room now: a hashing
 * thread never waits for it here (the chunk is read again when sent). */
static uint8_t *keep_chunk(void *ud, size_t c, size_t len) {
  growth *g = ud;
  (void)c;
  g->pending = buf_get(g->p, (int64_t)len, false);
  g->pending_len = len;
  return g->pending;
}

static void chunk_hashed(void *ud, br_xfer_digest *cs, size_t n, size_t done) {
  growth *g = ud;
  push *p = g->p;
  pfile *f = g->f;
  pthread_mutex_lock(&p->mu);
  if (done == 1) {
    /* what the loop reads of it from now on: set once, here */
    f->chunks = cs;
    f->nchunks = n;
    f->kept = g->kept;
    g->kept = NULL;
    f->st = *g->before;
    p->growing[p->ngrowing++] = f;
  }
  if (f->kept) f->kept[done - 1] = g->pending;
  g->pending = NULL;
  f->published = done;
  pthread_mutex_unlock(&p->mu);
  br_xfer__engine_wake(&p->eng);
}

static int hash_large(push *p, pfile *f, int fd, const struct stat *before, br_error *err) {
  growth g = {p, f, before, NULL, NULL, 0};
  int64_t n = (before->st_size + p->chunk_size - 1) / p->chunk_size;
  g.kept = calloc((size_t)n, sizeof *g.kept); /* none kept without it */
  br_xfer_digest *cs;
  size_t got;
  int rc = br_xfer__hash_fd_each(fd, before->st_size, p->chunk_size, &f->digest, &cs, &got,
                                 chunk_hashed, g.kept ? keep_chunk : NULL, &g, err);
  if (g.pending) buf_put(p, g.pending, (int64_t)g.pending_len); /* read, not handed over */
  free(g.kept); /* still here when no chunk was handed over */
  pthread_mutex_lock(&p->mu);
  for (int i = 0; i < p->ngrowing; i++)
    if (p->growing[i] == f) p->growing[i] = p->growing[--p->ngrowing];
  pthread_mutex_unlock(&p->mu);
  return rc;
}

/* Hashes f, open as fd and as before says; nowait: a small file whose
 * bytes are not all in memory gives NOT_CACHED. On an error, err names
 * the file. */
static int hash_open(push *p, pfile *f, int fd, const struct stat *before, bool nowait,
                     br_error *err) {
  const char *abs = f->abs;
  int rc;
  f->st.st_size = before->st_size; /* keeps_data looks at the size read */
  if (keeps_data(p, f))
    rc = hash_small(p, f, fd, before->st_size, nowait, err);
  else if (before->st_size > 0)
    rc = hash_large(p, f, fd, before, err);
  else
    rc = br_xfer__hash_fd(fd, before->st_size, p->chunk_size, &f->digest, &f->chunks,
                          &f->nchunks, err);
  if (rc == NOT_CACHED) return rc;
  /* A read that failed because the file was being rewritten (it shrank
   * under the reader) is told as the change it is. */
  struct stat after;
  if ((rc == BR_OK || rc == BR_EIO) &&
      (fstat(fd, &after) != 0 || after.st_size != before->st_size ||
       br_xfer__mtime_ns(&after) != br_xfer__mtime_ns(before)))
    rc = br_error_set(err, BR_EIO, "%s changed while it was hashed", abs);
  if (rc == BR_OK) {
    if (!f->published) f->st = *before; /* else set when its first chunk went */
    f->hashed = true;
    atomic_fetch_add(&p->hashed_bytes, (long long)before->st_size);
  } else if (err->msg[0] && !strstr(err->msg, abs)) {
    char m[1024];
    snprintf(m, sizeof m, "%s: %.900s", abs, err->msg);
    snprintf(err->msg, sizeof err->msg, "%s", m);
  }
  return rc;
}

/* A small file whose bytes were not in memory: its read is started
 * (POSIX_FADV_WILLNEED) and it waits in its thread's ring while the thread
 * hashes others, so a tree the page cache has lost is read with many reads
 * in flight, not one per thread. */
typedef struct deferred {
  pfile *f;
  int fd;
  struct stat before;
} deferred;

/* What was hashed goes into the hash cache, once (see hash_worker). */
static void remember_hashed(push *p) {
  if (p->remembered) return;
  p->remembered = true;
  br_xfer__hcache_begin(p->hc);
  for (size_t i = 0; i < p->ntodo; i++) {
    pfile *f = p->todo[i];
    if (f->hashed)
      br_xfer__hcache_put(p->hc, &f->st, p->chunk_size, &f->digest, f->chunks, f->nchunks);
  }
  br_xfer__hcache_commit(p->hc);
}

static void *hash_worker(void *arg) {
  push *p = arg;
  deferred ring[DEFER_MAX];
  size_t head = 0, nring = 0;
  for (;;) {
    if (br_xfer__cancelled(&p->eng)) break;
    pthread_mutex_lock(&p->mu);
    bool stop = p->hash_rc != 0 || p->stop;
    pthread_mutex_unlock(&p->mu);
    if (stop) break;
    /* the next file, or the oldest deferred one when the ring is full or
     * no file is left */
    size_t i = nring == DEFER_MAX ? p->ntodo : atomic_fetch_add(&p->next, 1);
    pfile *f;
    int fd;
    struct stat before;
    bool nowait = false;
    br_error err;
    br_error_clear(&err);
    int rc = BR_OK;
    if (i >= p->ntodo) {
      if (!nring) break;
      deferred *d = &ring[head];
      head = (head + 1) % DEFER_MAX;
      nring--;
      f = d->f, fd = d->fd, before = d->before;
    } else {
      f = p->todo[i];
      nowait = true;
      fd = open(f->abs, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
      if (fd < 0)
        rc = br_error_set(&err, BR_EIO, "open %s: %s", f->abs, strerror(errno));
      else if (fstat(fd, &before) != 0)
        rc = br_error_set(&err, BR_EIO, "stat %s: %s", f->abs, strerror(errno));
    }
    if (rc == BR_OK) rc = hash_open(p, f, fd, &before, nowait, &err);
    if (rc == NOT_CACHED) {
      posix_fadvise(fd, 0, before.st_size, POSIX_FADV_WILLNEED);
      atomic_fetch_add(&p->read_ahead, 1);
      ring[(head + nring++) % DEFER_MAX] = (deferred){f, fd, before};
      continue;
    }
    if (fd >= 0) close(fd);
    pthread_mutex_lock(&p->mu);
    if (rc) {
      if (!p->hash_rc) {
        p->hash_rc = rc;
        p->hash_err = err;
      }
    } else {
      p->ready[p->nready++] = f;
    }
    /* the loop is woken for a handful of files, not for each (it also
     * looks on its own every 100 ms) */
    bool wake = rc || p->nready == WAKE_EVERY;
    pthread_mutex_unlock(&p->mu);
    if (wake) br_xfer__engine_wake(&p->eng);
  }
  for (; nring; nring--, head = (head + 1) % DEFER_MAX) close(ring[head].fd);
  pthread_mutex_lock(&p->mu);
  p->hashing--;
  bool last = p->hashing == 0 && !p->hash_rc && !p->stop;
  pthread_mutex_unlock(&p->mu);
  br_xfer__engine_wake(&p->eng);
  /* The last thread to end remembers what was hashed now, while the event
   * loop only waits for the depot to take the last uploads, rather than
   * after them. Nothing else uses the hash cache until the threads are
   * joined, and the digests of every file are final now. */
  if (last && !br_xfer__cancelled(&p->eng)) remember_hashed(p);
  return NULL;
}

/* Threads that hash, or read, files: hash_threads, else one per CPU; 1 to
 * MAX_THREADS. */
static int threads_of(const push *p) {
  int nt = p->o->hash_threads > 0 ? p->o->hash_threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
  return nt < 1 ? 1 : nt > MAX_THREADS ? MAX_THREADS : nt;
}

/* Whether st is f as it was when its digest was taken: the identity the
 * hash cache trusts (size, times, inode). */
static bool same_as_hashed(const pfile *f, const struct stat *st) {
  return st->st_size == f->st.st_size && br_xfer__mtime_ns(st) == br_xfer__mtime_ns(&f->st) &&
         br_xfer__ctime_ns(st) == br_xfer__ctime_ns(&f->st) && st->st_ino == f->st.st_ino;
}

/* Opens f to read what was hashed of it (*fd; fd NULL: only looks at it,
 * its bytes being kept), if it is still as it was hashed. Else an error
 * that names it, and nothing open. */
static int open_as_hashed(const push *p, const pfile *f, int *fd, br_error *err) {
  const pjob *j = &p->jobs[f->job];
  char *abs = NULL;
  if (asprintf(&abs, "%s/%s", j->dir, f->rel) < 0)
    return br_error_set(err, BR_ENOMEM, "out of memory");
  int rc = BR_OK, got = -1;
  struct stat st;
  if (fd) got = *fd = open(abs, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd && got < 0)
    rc = br_error_set(err, BR_EIO, "open %s: %s", abs, strerror(errno));
  else if ((fd ? fstat(got, &st) : lstat(abs, &st)) != 0 || !same_as_hashed(f, &st))
    rc = br_error_set(err, BR_EIO, "%s changed while it was pushed; push again", abs);
  free(abs);
  if (rc && got >= 0) close(got), *fd = -1;
  return rc;
}

/* Reads small files that the hash cache knew (so nothing read them) and
 * the depot lacks: the threads read them while the loop sends, rather
 * than the loop reading each file as it builds a bundle. */
static int load_small(push *p, pfile *f, br_error *err) {
  const pjob *j = &p->jobs[f->job];
  int fd, e, rc = open_as_hashed(p, f, &fd, err);
  if (rc) return rc;
  uint8_t *buf = buf_get(p, f->st.st_size, true);
  if (!buf)
    rc = br_error_set(err, BR_ENOMEM, "out of memory reading %s/%s", j->dir, f->rel);
  else if ((e = read_small(p, fd, buf, f->st.st_size, false)))
    rc = br_error_set(err, BR_EIO, "%s/%s: read failed or file shrank (%s); push again", j->dir,
                      f->rel, strerror(-e));
  close(fd);
  if (rc && buf) buf_put(p, buf, f->st.st_size);
  else if (!rc) f->data = buf;
  return rc;
}

static void *load_worker(void *arg) {
  push *p = arg;
  for (;;) {
    pthread_mutex_lock(&p->mu);
    while (!p->stop && !p->hash_rc && p->load_next == p->nload)
      pthread_cond_wait(&p->load_cv, &p->mu);
    if (p->stop || p->hash_rc || br_xfer__cancelled(&p->eng)) {
      pthread_mutex_unlock(&p->mu);
      return NULL;
    }
    pfile *f = p->load[p->load_next++];
    pthread_mutex_unlock(&p->mu);
    br_error err;
    br_error_clear(&err);
    int rc = load_small(p, f, &err);
    pthread_mutex_lock(&p->mu);
    if (rc && !p->hash_rc) p->hash_rc = rc, p->hash_err = err;
    if (!rc) p->loaded[p->nloaded++] = f;
    bool wake = rc || p->nloaded == WAKE_EVERY || p->load_next == p->nload;
    pthread_mutex_unlock(&p->mu);
    if (wake) br_xfer__engine_wake(&p->eng);
  }
}

/* Queues a small file to be read by the loading threads, started with
 * the first. */
static int queue_load(push *p, pfile *f) {
  if (!p->nloaders) {
    int nt = threads_of(p);
    if (nt < 2) nt = 2; /* one file read from disk does not hold up the others */
    for (int i = 0; i < nt; i++)
      if (pthread_create(&p->loaders[p->nloaders], NULL, load_worker, p) == 0) p->nloaders++;
    if (!p->nloaders) return BR_ENOMEM;
  }
  pthread_mutex_lock(&p->mu);
  p->load[p->nload++] = f;
  pthread_cond_signal(&p->load_cv);
  pthread_mutex_unlock(&p->mu);
  p->loading++;
  return BR_OK;
}

/* ---- the event loop's side ---- */

/* The chunks seen so far, one per digest: open addressing on the digest. */
static cref **seen_slot(push *p, const br_xfer_digest *d) {
  uint64_t h;
  memcpy(&h, d->b, sizeof h);
  size_t mask = p->seen_cap - 1;
  for (size_t i = (size_t)h & mask;; i = (i + 1) & mask)
    if (!p->seen[i] || br_xfer__digest_cmp(&p->seen[i]->d, d) == 0) return &p->seen[i];
}

/* Adds c unless a chunk with its digest was seen: false then. */
static int seen_add(push *p, cref *c, bool *added) {
  if ((p->nseen + 1) * 2 > p->seen_cap) {
    size_t cap = p->seen_cap ? p->seen_cap * 2 : 1024;
    cref **old = p->seen;
    size_t ocap = p->seen_cap;
    p->seen = calloc(cap, sizeof *p->seen);
    if (!p->seen) {
      p->seen = old;
      return BR_ENOMEM;
    }
    p->seen_cap = cap;
    for (size_t i = 0; i < ocap; i++)
      if (old[i]) *seen_slot(p, &old[i]->d) = old[i];
    free(old);
  }
  cref **s = seen_slot(p, &c->d);
  *added = !*s;
  if (!*s) *s = c, p->nseen++;
  return BR_OK;
}

static int append(cref ***list, size_t *n, size_t *cap, cref *c) {
  if (*n == *cap) {
    size_t nc = *cap ? *cap * 2 : 1024;
    void *q = realloc(*list, nc * sizeof **list);
    if (!q) return BR_ENOMEM;
    *list = q;
    *cap = nc;
  }
  (*list)[(*n)++] = c;
  return BR_OK;
}

static int64_t chunk_len(const pfile *f, uint32_t c, int64_t cs) {
  int64_t off = (int64_t)c * cs;
  return f->st.st_size - off < cs ? f->st.st_size - off : cs;
}

static void drop_data(push *p, pfile *f) {
  if (!f->data) return; /* a large file, or bytes dropped once sent */
  buf_put(p, f->data, f->st.st_size);
  f->data = NULL;
}

/* The bytes kept of a chunk (a small file's, or a chunk of a larger one),
 * or NULL: they are read when sent. */
static uint8_t *kept_bytes(const pfile *f, uint32_t c) {
  return f->data ? f->data : f->kept ? f->kept[c] : NULL;
}

/* A chunk's kept bytes are not needed any more (sent, or in the depot). */
static void drop_chunk(push *p, pfile *f, uint32_t c) {
  drop_data(p, f);
  if (!f->kept || !f->kept[c]) return;
  buf_put(p, f->kept[c], chunk_len(f, c, p->chunk_size));
  f->kept[c] = NULL;
}

/* A file is in the depot, and so are its hard links (see find_links). */
static void file_done(push *p, const pfile *f) {
  p->eng.prog.files_done += 1 + f->nlinks;
  p->eng.prog.bytes_done += f->nlinks * f->st.st_size;
}

/* A chunk is in the depot now (sent, or found there). */
static void resolved(push *p, cref *c, bool sent) {
  pfile *f = c->f;
  p->eng.prog.bytes_done += chunk_len(f, c->chunk, p->chunk_size);
  if (sent) f->moved = true, p->res->chunks_moved++;
  else p->res->chunks_skipped++;
  if (f->kept) drop_chunk(p, f, c->chunk);
  if (--f->unresolved == 0) {
    drop_data(p, f);
    file_done(p, f);
    if (f->moved) p->res->files_moved++;
  }
}

/* A file's chunks up to upto enter the loop (all at once, or a large one's
 * as they are hashed): they go to the next question, but a digest seen
 * before is already taken care of. */
static int take_chunks(push *p, pfile *f, size_t upto) {
  if (upto <= f->taken) return BR_OK;
  if (!f->taken) {
    f->unresolved = (int)f->nchunks;
    f->moved = false;
    free(f->refs);
    f->refs = calloc(f->nchunks, sizeof *f->refs);
    if (!f->refs) return BR_ENOMEM;
  }
  size_t from = f->taken;
  f->taken = upto;
  for (size_t c = from; c < upto; c++) {
    cref *r = &f->refs[c];
    r->d = f->chunks[c];
    r->f = f;
    r->chunk = (uint32_t)c;
    bool added;
    if (seen_add(p, r, &added)) return BR_ENOMEM;
    if (!added) resolved(p, r, false); /* another file has the same bytes */
    else if (append(&p->ask, &p->nask, &p->ask_cap, r)) return BR_ENOMEM;
  }
  return BR_OK;
}

/* A hashed file enters the loop (what of it did not already). */
static int take_file(push *p, pfile *f) {
  if (f->type != BR_XFER_FILE) return BR_OK;
  if (f->lead) return BR_OK; /* done with its lead */
  if (f->nchunks == 0) {
    f->unresolved = 0;
    file_done(p, f);
    return BR_OK;
  }
  return take_chunks(p, f, f->nchunks);
}

typedef struct batch {
  push *p;
  cref **refs; /* missing: the chunks asked about; upload: those sent */
  size_t nrefs;
  size_t job;  /* commit: the job */
} batch;

static void batch_destroy(br_xfer__req *r) { free(((batch *)r->ctx)->refs), free(r->ctx); }

static br_xfer__req *new_req(push *p, const char *base, const char *path, batch **bout) {
  br_xfer__req *r = br_xfer__req_new(base, path);
  batch *b = calloc(1, sizeof *b);
  if (!r || !b) {
    free(b);
    br_xfer__req_free(r);
    return NULL;
  }
  b->p = p;
  r->ctx = b;
  r->destroy = batch_destroy;
  r->post = true;
  *bout = b;
  return r;
}

static int cmp_cref_digest(const void *a, const void *b) {
  return br_xfer__digest_cmp(&(*(cref *const *)a)->d, &(*(cref *const *)b)->d);
}

static int missing_build(br_xfer__req *r, br_xfer__buf *body, br_error *err) {
  batch *b = r->ctx;
  char hex[BR_XFER_HEX_LEN + 1];
  if (br_xfer__buf_append(body, "{\"chunks\":[", 11)) goto oom;
  for (size_t i = 0; i < b->nrefs; i++) {
    br_xfer_digest_hex(&b->refs[i]->d, hex);
    if (br_xfer__buf_append(body, i ? ",\"" : "\"", i ? 2 : 1) ||
        br_xfer__buf_append(body, hex, BR_XFER_HEX_LEN) || br_xfer__buf_append(body, "\"", 1))
      goto oom;
  }
  if (br_xfer__buf_append(body, "]}", 2)) goto oom;
  return BR_OK;
oom:
  return br_error_set(err, BR_ENOMEM, "out of memory");
}

/* The digests a depot's answer to 'missing' lists (at most the nrefs
 * asked about); a malformed answer is asked again. */
static int missing_parse(br_xfer__req *r, br_xfer_digest **list, size_t *n, br_error *err) {
  batch *b = r->ctx;
  br_error perr;
  br_error_clear(&perr);
  if (br_xfer__digest_list_parse((const char *)r->resp.data, r->resp.len, "missing", b->nrefs,
                                 list, n, NULL, NULL, &perr)) {
    br_error_set(err, BR_ENET, "depot: malformed answer to 'missing': %s", perr.msg);
    return BR_XFER__RETRY;
  }
  return BR_OK;
}

static int missing_done(br_xfer__req *r, br_error *err) {
  batch *b = r->ctx;
  push *p = b->p;
  br_xfer_digest *list = NULL;
  size_t n = 0;
  int rc = missing_parse(r, &list, &n, err);
  if (rc) return rc;
  qsort(b->refs, b->nrefs, sizeof *b->refs, cmp_cref_digest);
  for (size_t i = 0; i < b->nrefs; i++) b->refs[i]->need = false;
  for (size_t i = 0; i < n; i++) {
    cref key;
    cref *kp = &key;
    key.d = list[i];
    cref **hit = bsearch(&kp, b->refs, b->nrefs, sizeof *b->refs, cmp_cref_digest);
    if (hit) (*hit)->need = true;
  }
  free(list);
  p->asking--;
  for (size_t i = 0; i < b->nrefs; i++) {
    cref *c = b->refs[i];
    if (!c->need) {
      resolved(p, c, false);
      continue;
    }
    if (!c->f->data && keeps_data(p, c->f)) { /* read by the loading threads first */
      if (queue_load(p, c->f)) return br_error_set(err, BR_ENOMEM, "out of memory");
      continue;
    }
    if (append(&p->sendq, &p->nsend, &p->send_cap, c))
      return br_error_set(err, BR_ENOMEM, "out of memory");
    int64_t l = chunk_len(c->f, c->chunk, p->chunk_size);
    if (l <= p->o->small_file) p->send_small += l;
  }
  return BR_OK;
}

/* ---- sending ---- */

/* Files of one chunk that do not compress mostly come in runs (a cache's
 * frames are all alike): after Z_GUESS_AFTER of them in a row, only every
 * Z_GUESS_EVERY-th is tried, and the others go raw untried, until one
 * tried compresses. A file of more chunks is decided by its first chunk. */
#define Z_GUESS_AFTER 16
#define Z_GUESS_EVERY 16

static bool z_try(push *p, const pfile *f) {
  if (!p->o->compress || f->zstate < 0) return false;
  if (f->zstate > 0 || f->nchunks > 1 || p->z_misses < Z_GUESS_AFTER) return true;
  return ++p->z_skips % Z_GUESS_EVERY == 0;
}

/* After a chunk went into a body: what it says of its file and of the
 * run of one-chunk files. */
static void z_learn(push *p, pfile *f, uint32_t chunk, bool tried, bool saved) {
  if (chunk != 0 || f->zstate != 0 || !p->o->compress) return;
  f->zstate = saved ? 1 : -1; /* untried: sent raw, as a file found not to compress */
  if (f->nchunks != 1 || !tried) return;
  p->z_misses = saved ? 0 : p->z_misses + 1;
  if (saved) p->z_skips = 0;
}

static int upload_build(br_xfer__req *r, br_xfer__buf *body, br_error *err) {
  batch *b = r->ctx;
  push *p = b->p;
  size_t bytes = 0; /* read into the body; kept bytes go by reference */
  for (size_t i = 0; i < b->nrefs; i++)
    if (!kept_bytes(b->refs[i]->f, b->refs[i]->chunk))
      bytes += (size_t)chunk_len(b->refs[i]->f, b->refs[i]->chunk, p->chunk_size);
  if (br_xfer__bundle_begin(body) || br_xfer__bundle_reserve(body, b->nrefs, bytes))
    return br_error_set(err, BR_ENOMEM, "out of memory");
  int fd = -1;
  const pfile *open_f = NULL;
  int rc = BR_OK;
  for (size_t i = 0; i < b->nrefs && rc == BR_OK; i++) {
    cref *c = b->refs[i];
    pfile *f = c->f;
    pjob *j = &p->jobs[f->job];
    size_t len = (size_t)chunk_len(f, c->chunk, p->chunk_size);
    bool try_z = z_try(p, f);
    bool saved = false;
    uint8_t *data = kept_bytes(f, c->chunk);
    /* A larger file's chunks kept from its hashing: the file is looked at
     * again as they go (as when they are read), so a cache still being
     * written when it was hashed is caught, not pushed cut short. */
    if (data && !f->data && f != open_f) {
      if (fd >= 0) close(fd), fd = -1;
      open_f = f;
      if ((rc = open_as_hashed(p, f, NULL, err))) break;
    }
    if (data) { /* the bytes hashed, kept until they are sent */
      bool by_ref;
      if (br_xfer__bundle_put_ref(body, &c->d, data, len, try_z, &saved, &by_ref) ||
          (by_ref && br_xfer__req_ref(r, data, len))) {
        rc = br_error_set(err, BR_ENOMEM, "out of memory");
        break;
      }
      z_learn(p, f, c->chunk, try_z, saved);
      continue;
    }
    uint8_t *slot = br_xfer__bundle_slot(body, len);
    if (!slot) {
      rc = br_error_set(err, BR_ENOMEM, "out of memory");
      break;
    }
    if (f != open_f || fd < 0) { /* fd < 0: only looked at, for a kept chunk */
      if (fd >= 0) close(fd);
      open_f = f;
      if ((rc = open_as_hashed(p, f, &fd, err))) break;
    }
    int e = br_xfer__pread_all(fd, slot, len, (int64_t)c->chunk * p->chunk_size);
    if (e) {
      rc = br_error_set(err, BR_EIO, "%s/%s: read failed or file shrank (%s); push again",
                        j->dir, f->rel, strerror(-e));
      break;
    }
    if (br_xfer__bundle_put(body, &c->d, len, try_z, &saved)) {
      rc = br_error_set(err, BR_ENOMEM, "out of memory");
      break;
    }
    /* The first chunk decides: a file that does not compress is sent raw. */
    z_learn(p, f, c->chunk, try_z, saved);
  }
  if (fd >= 0) close(fd);
  return rc;
}

/* The body is with curl: the kept bytes it took go back to the memory
 * bound now, not when the depot answers (after its sync and commit), so
 * hashing does not wait for the depot's disk. A new attempt reads the
 * files again, if they are as they were hashed (upload_build). */
static void upload_sent(br_xfer__req *r) {
  batch *b = r->ctx;
  for (size_t i = 0; i < b->nrefs; i++) drop_chunk(b->p, b->refs[i]->f, b->refs[i]->chunk);
}

static int upload_done(br_xfer__req *r, br_error *err) {
  batch *b = r->ctx;
  b->p->sending--;
  for (size_t i = 0; i < b->nrefs; i++) resolved(b->p, b->refs[i], true);
  return BR_OK;
}

static int cmp_cref_order(const void *a, const void *b) {
  const cref *x = *(cref *const *)a, *y = *(cref *const *)b;
  if (x->f->job != y->f->job) return x->f->job < y->f->job ? -1 : 1;
  if (x->f != y->f) return x->f < y->f ? -1 : 1; /* files are in order in their job */
  return x->chunk < y->chunk ? -1 : x->chunk > y->chunk;
}

/* Files are still being hashed, or hashed and not taken yet. */
static bool files_coming(push *p) {
  pthread_mutex_lock(&p->mu);
  bool more = p->hashing > 0 || p->nready > 0;
  pthread_mutex_unlock(&p->mu);
  return more;
}

/* Nothing more will be asked about: no file left to hash or to take, no
 * question waiting or in flight. */
static bool all_asked(push *p) {
  return !files_coming(p) && p->nask == 0 && p->asking == 0;
}

static int submit_upload(push *p, size_t from, size_t to) {
  batch *b;
  /* With compression on, every plain entry is one that was found not to
   * compress (or whose file's first chunk was not): the depot keeps that,
   * and does not try again for each pull that asks for zstd. A depot that
   * does not know the argument ignores it. */
  const char *path = p->o->compress ? "/v1/chunks?plain=incompressible" : "/v1/chunks";
  br_xfer__req *r = new_req(p, p->jobs[0].ref.base, path, &b);
  if (r) b->refs = malloc((to - from) * sizeof *b->refs);
  if (!r || !b->refs) {
    if (r) br_xfer__engine_submit(&p->eng, r); /* freed by the engine */
    return BR_ENOMEM;
  }
  memcpy(b->refs, p->sendq + from, (to - from) * sizeof *b->refs);
  b->nrefs = to - from;
  r->content_type = "application/octet-stream";
  r->build = upload_build;
  r->body_sent = upload_sent;
  r->done = upload_done;
  br_xfer__engine_submit(&p->eng, r);
  p->sending++;
  br_xfer__engine_phase(&p->eng, "send");
  return BR_OK;
}

/* Sends what is queued: large chunks one per request, small ones in
 * bundles of p->bundle bytes; a last short bundle waits for more unless
 * nothing more can come, or hashing threads wait for the memory it holds,
 * or nothing is being sent. */
static int flush_sends(push *p) {
  if (!p->nsend) return BR_OK;
  pthread_mutex_lock(&p->mu);
  bool starved = p->mem_waiting > 0;
  pthread_mutex_unlock(&p->mu);
  bool all = starved || p->sending == 0 || (all_asked(p) && p->loading == 0);
  if (!all && p->send_small < p->bundle) {
    /* only large chunks go now */
    bool large = false;
    for (size_t i = 0; i < p->nsend && !large; i++)
      large = chunk_len(p->sendq[i]->f, p->sendq[i]->chunk, p->chunk_size) > p->o->small_file;
    if (!large) return BR_OK;
  }
  qsort(p->sendq, p->nsend, sizeof *p->sendq, cmp_cref_order);
  size_t keep = 0; /* small chunks left for a later bundle */
  for (size_t i = 0; i < p->nsend;) {
    int64_t first = chunk_len(p->sendq[i]->f, p->sendq[i]->chunk, p->chunk_size);
    size_t k = i + 1;
    if (first <= p->o->small_file) {
      int64_t bytes = first, room = BR_XFER__BUNDLE_ROOM(p->bundle);
      while (k < p->nsend && k - i < MAX_BUNDLE_ENTRIES) {
        int64_t l = chunk_len(p->sendq[k]->f, p->sendq[k]->chunk, p->chunk_size);
        if (l > p->o->small_file || BR_XFER__BUNDLE_BODY(k - i + 1, bytes + l) > room) break;
        bytes += l;
        k++;
      }
      if (!all && BR_XFER__BUNDLE_BODY(k - i, bytes) < room && k == p->nsend) {
        /* a short bundle at the end: kept for more */
        memmove(p->sendq, p->sendq + i, (k - i) * sizeof *p->sendq);
        keep = k - i;
        break;
      }
      p->send_small -= bytes;
    }
    if (submit_upload(p, i, k)) return BR_ENOMEM;
    i = k;
  }
  p->nsend = keep;
  return BR_OK;
}

static int submit_question(push *p) {
  size_t n = p->nask < MISSING_BATCH ? p->nask : MISSING_BATCH;
  batch *b;
  br_xfer__req *r = new_req(p, p->jobs[0].ref.base, "/v1/missing", &b);
  if (r) b->refs = malloc(n * sizeof *b->refs);
  if (!r || !b->refs) {
    if (r) br_xfer__engine_submit(&p->eng, r);
    return BR_ENOMEM;
  }
  memcpy(b->refs, p->ask, n * sizeof *b->refs);
  b->nrefs = n;
  memmove(p->ask, p->ask + n, (p->nask - n) * sizeof *p->ask);
  p->nask -= n;
  r->content_type = "application/json";
  r->build = missing_build;
  r->done = missing_done;
  br_xfer__engine_submit(&p->eng, r);
  p->asking++;
  return BR_OK;
}

static void pipeline_tick(br_xfer__engine *e, void *ud) {
  push *p = ud;
  br_error err;
  br_error_clear(&err);
  pthread_mutex_lock(&p->mu);
  int hrc = p->hash_rc;
  if (hrc) err = p->hash_err;
  size_t n = p->nready, nl = p->nloaded;
  pfile *grown[MAX_THREADS];
  size_t upto[MAX_THREADS];
  int ng = p->ngrowing;
  for (int i = 0; i < ng; i++) grown[i] = p->growing[i], upto[i] = p->growing[i]->published;
  memcpy(p->taking, p->ready, n * sizeof *p->ready);
  memcpy(p->taking_loaded, p->loaded, nl * sizeof *p->loaded);
  p->nready = p->nloaded = 0;
  pthread_mutex_unlock(&p->mu);
  if (hrc) {
    br_xfer__engine_fail(e, &err);
    return;
  }
  for (int i = 0; i < ng; i++)
    if (take_chunks(p, grown[i], upto[i])) goto oom;
  for (size_t i = 0; i < n; i++)
    if (take_file(p, p->taking[i])) goto oom;
  for (size_t i = 0; i < nl; i++) { /* read now: its one chunk goes */
    pfile *f = p->taking_loaded[i];
    p->loading--;
    if (append(&p->sendq, &p->nsend, &p->send_cap, &f->refs[0])) goto oom;
    p->send_small += f->st.st_size;
  }
  /* A question goes when it is big enough, or when it is the last, or
   * when none is in flight and its first chunk waited ASK_WAIT, or at
   * once when the hashing threads wait for the memory its files hold: the
   * answers come while the threads hash, and the depot is not asked about
   * a few chunks at a time. */
  bool hashing = files_coming(p);
  double now = br_xfer__now();
  if (!p->nask) p->ask_since = now;
  pthread_mutex_lock(&p->mu);
  bool starved = p->mem_waiting > 0; /* hashing waits for what is held here */
  pthread_mutex_unlock(&p->mu);
  bool waited = p->asking == 0 && (starved || now - p->ask_since >= ASK_WAIT);
  while (p->nask && (p->nask >= ASK_MIN || !hashing || waited))
    if (submit_question(p)) goto oom;
  if (flush_sends(p)) goto oom;
  return;
oom:
  br_error_set(&err, BR_ENOMEM, "out of memory");
  br_xfer__engine_fail(e, &err);
}

static bool pipeline_more(br_xfer__engine *e, void *ud) {
  push *p = ud;
  return !all_asked(p) || p->nsend > 0 || p->loading > 0;
}

/* Runs the pipeline over every file: those in p->todo are hashed by
 * threads first, the others (digests known) are taken at once. */
static int run_pipeline(push *p, br_error *err) {
  size_t total = 0;
  for (size_t j = 0; j < p->njobs; j++) total += p->jobs[j].n;
  free(p->ready);
  free(p->taking);
  free(p->load);
  free(p->loaded);
  free(p->taking_loaded);
  p->ready = calloc(total ? total : 1, sizeof *p->ready);
  p->taking = calloc(total ? total : 1, sizeof *p->taking);
  p->load = calloc(total ? total : 1, sizeof *p->load);
  p->loaded = calloc(total ? total : 1, sizeof *p->loaded);
  p->taking_loaded = calloc(total ? total : 1, sizeof *p->taking_loaded);
  if (!p->ready || !p->taking || !p->load || !p->loaded || !p->taking_loaded)
    return br_error_set(err, BR_ENOMEM, "out of memory");
  p->nready = p->nload = p->load_next = p->nloaded = p->loading = 0;
  p->ngrowing = 0;
  for (size_t j = 0; j < p->njobs; j++)
    for (size_t i = 0; i < p->jobs[j].n; i++) p->jobs[j].files[i].taken = 0;
  if (p->seen) memset(p->seen, 0, p->seen_cap * sizeof *p->seen);
  p->nseen = p->nask = p->nsend = 0;
  p->send_small = 0;
  p->asking = p->sending = 0;
  p->stop = false;
  int64_t bundle = br_xfer__engine_bundle_bytes(&p->eng, p->small_total);
  p->bundle = bundle;
  int64_t mem = p->o->max_memory > 0 ? p->o->max_memory : 256 * 1024 * 1024;
  p->mem_cap = mem / 2 > bundle * 2 ? mem / 2 : bundle * 2;
  br_xfer__engine_phase(&p->eng, p->ntodo ? "hash" : "compare");

  int rc = BR_OK;
  for (size_t j = 0; j < p->njobs && !rc; j++)
    for (size_t i = 0; i < p->jobs[j].n && !rc; i++) {
      pfile *f = &p->jobs[j].files[i];
      if (f->type == BR_XFER_FILE && !f->abs) rc = take_file(p, f);
    }
  if (rc) return br_error_set(err, BR_ENOMEM, "out of memory");

  int nt = threads_of(p);
  if ((size_t)nt > p->ntodo) nt = (int)p->ntodo;
  pthread_t th[MAX_THREADS];
  int started = 0;
  atomic_store(&p->next, 0);
  p->hashing = nt; /* each thread takes itself off as it ends */
  for (int i = 0; i < nt; i++) {
    if (pthread_create(&th[i], NULL, hash_worker, p) == 0) {
      th[started++] = th[i];
      continue;
    }
    pthread_mutex_lock(&p->mu);
    p->hashing--;
    pthread_mutex_unlock(&p->mu);
  }
  if (p->ntodo && !started) return br_error_set(err, BR_ENOMEM, "no hashing threads");
  p->eng.tick = pipeline_tick;
  p->eng.more = pipeline_more;
  p->eng.tick_ud = p;
  rc = br_xfer__engine_run(&p->eng, err);
  pthread_mutex_lock(&p->mu);
  p->stop = true; /* on an error: threads waiting for memory go */
  pthread_cond_broadcast(&p->mem_cv);
  pthread_cond_broadcast(&p->load_cv);
  pthread_mutex_unlock(&p->mu);
  for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
  for (int i = 0; i < p->nloaders; i++) pthread_join(p->loaders[i], NULL);
  p->nloaders = 0;
  p->eng.tick = NULL;
  p->eng.more = NULL;

  /* What was hashed is remembered, even when the push failed: a second
   * attempt does not hash it again. */
  p->res->hashed_bytes = atomic_load(&p->hashed_bytes);
  p->res->files_read_ahead = atomic_load(&p->read_ahead);
  remember_hashed(p);
  for (size_t i = 0; i < p->ntodo; i++) {
    free(p->todo[i]->abs);
    p->todo[i]->abs = NULL;
  }
  p->ntodo = 0; /* a round after a refused commit hashes nothing */
  if (rc) return rc;
  if (br_xfer__cancelled(&p->eng)) return br_error_set(err, BR_ECANCEL, "cancelled");
  if (p->hash_rc) {
    *err = p->hash_err;
    return p->hash_rc;
  }
  return BR_OK;
}

/* ---- committing ---- */

static int commit_build(br_xfer__req *r, br_xfer__buf *body, br_error *err) {
  batch *b = r->ctx;
  pjob *j = &b->p->jobs[b->job];
  br_xfer_manifest *m = br_xfer_manifest_new();
  if (!m) return br_error_set(err, BR_ENOMEM, "out of memory");
  m->chunk_size = b->p->chunk_size;
  m->name = strdup(j->ref.name);
  int rc = BR_OK;
  for (size_t i = 0; i < j->n && rc == BR_OK; i++) {
    pfile *f = &j->files[i];
    br_xfer_entry e = {0};
    e.path = f->rel;
    e.type = f->type;
    e.mode = f->st.st_mode & 07777;
    if (f->type == BR_XFER_DIR) e.mtime_ns = br_xfer__mtime_ns(&f->st);
    if (f->type == BR_XFER_FILE) {
      e.size = f->st.st_size;
      e.mtime_ns = br_xfer__mtime_ns(&f->st);
      e.digest = f->digest;
      e.chunks = f->chunks;
      e.nchunks = f->nchunks;
      const pfile *l = f->lead ? &j->files[f->lead - 1] : NULL;
      if (l) { /* one inode: its lead's bytes, read once (and stat'ed after) */
        e.mode = l->st.st_mode & 07777;
        e.size = l->st.st_size;
        e.mtime_ns = br_xfer__mtime_ns(&l->st);
        e.digest = l->digest;
        e.chunks = l->chunks;
        e.nchunks = l->nchunks;
        e.same_as = l->rel;
      }
    }
    e.target = f->target;
    rc = br_xfer_manifest_add(m, &e, err);
  }
  char *s = rc ? NULL : br_xfer_manifest_dump(m);
  br_xfer_manifest_free(m);
  if (rc) return rc;
  if (!s) return br_error_set(err, BR_ENOMEM, "out of memory");
  rc = br_xfer__buf_append(body, s, strlen(s));
  free(s);
  return rc ? br_error_set(err, BR_ENOMEM, "out of memory") : BR_OK;
}

static int commit_refused(br_xfer__req *r, long status, br_error *err) {
  batch *b = r->ctx;
  if (status != 409) return BR_EINVAL; /* the usual error */
  b->p->jobs[b->job].conflict = true;
  return BR_OK;
}

static int commit_done(br_xfer__req *r, br_error *err) {
  batch *b = r->ctx;
  json_t *o = json_loadb((const char *)r->resp.data, r->resp.len, 0, NULL);
  json_t *v = o ? json_object_get(o, "version") : NULL;
  if (!json_is_integer(v)) {
    json_decref(o);
    return br_error_set(err, BR_ENET, "depot: malformed answer to a commit");
  }
  b->p->jobs[b->job].version = json_integer_value(v);
  b->p->jobs[b->job].same_as = json_integer_value(json_object_get(o, "same_as"));
  json_decref(o);
  return BR_OK;
}

/* ---- the whole push ---- */

static int probe_done(br_xfer__req *r, br_error *err) {
  batch *b = r->ctx;
  br_xfer_digest *list = NULL;
  size_t n = 0;
  int rc = missing_parse(r, &list, &n, err);
  if (rc) return rc;
  free(list);
  b->p->probe_lacks = n > 0;
  return BR_OK;
}

/* The hash cache knew every file, so the tree was most likely pushed
 * before and a commit may go first. The depot is asked about a sample of
 * the chunks (PROBE_CHUNKS, spread over the files) before: a tree it
 * lacks in part (a push cut short and resumed, a push to another depot)
 * then skips a commit of the whole manifest bound to be refused. */
static int probe(push *p, br_error *err) {
  size_t total = 0;
  for (size_t j = 0; j < p->njobs; j++)
    for (size_t i = 0; i < p->jobs[j].n; i++) total += p->jobs[j].files[i].nchunks;
  p->probe_lacks = false;
  if (total == 0) return BR_OK;
  size_t step = total / PROBE_CHUNKS + 1, k = 0, at = 0;
  cref *sample = calloc(total / step + 1, sizeof *sample);
  batch *b;
  br_xfer__req *r = sample ? new_req(p, p->jobs[0].ref.base, "/v1/missing", &b) : NULL;
  if (r) b->refs = malloc((total / step + 1) * sizeof *b->refs);
  if (!r || !b->refs) {
    if (r) br_xfer__engine_submit(&p->eng, r); /* freed by the engine */
    free(sample);
    return br_error_set(err, BR_ENOMEM, "out of memory");
  }
  for (size_t j = 0; j < p->njobs; j++)
    for (size_t i = 0; i < p->jobs[j].n; i++) {
      pfile *f = &p->jobs[j].files[i];
      for (size_t c = 0; c < f->nchunks; c++, at++)
        if (at % step == 0) {
          sample[k].d = f->chunks[c];
          b->refs[k] = &sample[k];
          k++;
        }
    }
  b->nrefs = k;
  r->content_type = "application/json";
  r->build = missing_build;
  r->done = probe_done;
  br_xfer__engine_submit(&p->eng, r);
  int rc = br_xfer__engine_run(&p->eng, err);
  free(sample);
  return rc;
}

/* Looks every file up in the hash cache; those it does not know go to
 * p->todo for the hashing threads. */
static int plan_hashing(push *p, br_error *err) {
  size_t total = 0;
  for (size_t j = 0; j < p->njobs; j++) total += p->jobs[j].n;
  p->todo = calloc(total ? total : 1, sizeof *p->todo);
  if (!p->todo) return br_error_set(err, BR_ENOMEM, "out of memory");
  br_xfer__hcache_begin(p->hc); /* one read transaction for all lookups */
  int rc = BR_OK;
  for (size_t j = 0; j < p->njobs && !rc; j++)
    for (size_t i = 0; i < p->jobs[j].n && !rc; i++) {
      pfile *f = &p->jobs[j].files[i];
      f->job = (uint32_t)j;
      if (f->type != BR_XFER_FILE) continue;
      if (f->lead) continue; /* read as its lead */
      if (f->st.st_size <= p->o->small_file) p->small_total += f->st.st_size;
      if (br_xfer__hcache_get(p->hc, &f->st, p->chunk_size, &f->digest, &f->chunks,
                              &f->nchunks))
        continue;
      if (asprintf(&f->abs, "%s/%s", p->jobs[j].dir, f->rel) < 0) {
        f->abs = NULL;
        rc = br_error_set(err, BR_ENOMEM, "out of memory");
      } else {
        p->todo[p->ntodo++] = f;
      }
    }
  br_xfer__hcache_commit(p->hc);
  return rc;
}

static int commit_jobs(push *p, bool again, br_error *err);

static int run_push(push *p, const char *const *dirs, const char *const *targets,
                    br_error *err) {
  int rc;
  br_xfer__engine_phase(&p->eng, "scan");
  for (size_t j = 0; j < p->njobs; j++) {
    pjob *jb = &p->jobs[j];
    jb->o = p->o;
    if ((rc = br_xfer_ref_parse(targets[j], &jb->ref, err))) return rc;
    /* One push talks to one depot (its chunk questions and uploads are shared). */
    if (j > 0 && strcmp(jb->ref.base, p->jobs[0].ref.base) != 0)
      return br_error_set(err, BR_EINVAL,
                          "one push goes to one depot: %s and %s differ; push to each "
                          "separately", p->jobs[0].ref.base, jb->ref.base);
    struct stat st;
    if (stat(dirs[j], &st) != 0)
      return br_error_set(err, BR_EINVAL, "%s: %s", dirs[j],
                          errno == ENOENT ? "does not exist" : strerror(errno));
    if (!S_ISDIR(st.st_mode))
      return br_error_set(err, BR_EINVAL, "%s is not a directory", dirs[j]);
    jb->dir = strdup(dirs[j]);
    if (!jb->dir) return br_error_set(err, BR_ENOMEM, "out of memory");
    size_t dl = strlen(jb->dir);
    while (dl > 1 && jb->dir[dl - 1] == '/') jb->dir[--dl] = 0;
    if ((rc = scan(jb, "", err))) return rc;
    if (jb->n) qsort(jb->files, jb->n, sizeof *jb->files, cmp_pfile);
    if ((rc = refuse_case_twins(jb, err))) return rc;
    if ((rc = find_links(jb, err))) return rc;
    for (size_t i = 0; i < jb->n; i++)
      if (jb->files[i].type == BR_XFER_FILE) {
        p->eng.prog.files_total++;
        p->eng.prog.bytes_total += jb->files[i].st.st_size;
      }
  }
  /* every tree scanned, so that one push names every path it refuses */
  for (size_t j = 0; j < p->njobs; j++) {
    pjob *jb = &p->jobs[j];
    if (!jb->nrefused) continue;
    if (p->o->refused)
      return br_error_set(err, BR_EINVAL, "refusing to push %s: %d path%s cannot be pushed "
                          "(each named above)", jb->dir, jb->nrefused, jb->nrefused > 1 ? "s" : "");
    return br_error_set(err, BR_EINVAL, "refusing to push %s: %d path%s cannot be pushed: %s%s",
                        jb->dir, jb->nrefused, jb->nrefused > 1 ? "s" : "", jb->refused,
                        jb->nrefused > 4 ? "; and more" : "");
  }
  if ((rc = plan_hashing(p, err))) return rc;

  /* Every digest known from the cache: most likely pushed before, so the
   * commit goes first; the depot refuses it if it lacks a chunk. */
  bool try_commit = p->ntodo == 0;
  if (try_commit && (rc = probe(p, err))) return rc;
  try_commit = try_commit && !p->probe_lacks;
  if (try_commit) {
    if ((rc = commit_jobs(p, false, err))) return rc;
    bool refused = false;
    for (size_t j = 0; j < p->njobs; j++) refused = refused || p->jobs[j].conflict;
    if (!refused) {
      for (size_t j = 0; j < p->njobs; j++)
        for (size_t i = 0; i < p->jobs[j].n; i++) p->res->chunks_skipped += p->jobs[j].files[i].nchunks;
      p->eng.prog.files_done = p->eng.prog.files_total;
      p->eng.prog.bytes_done = p->eng.prog.bytes_total;
      return BR_OK;
    }
  }
  /* A commit refused for chunks the depot does not have (not pushed yet,
   * or a gc ran since it said it had them): ask and send, then commit
   * those again. */
  for (int round = 0;; round++) {
    if (round > 0 || try_commit) {
      p->res->chunks_skipped = p->res->files_moved = 0; /* counted again */
      p->eng.prog.files_done = p->eng.prog.bytes_done = 0;
    }
    if ((rc = run_pipeline(p, err))) return rc;
    if ((rc = commit_jobs(p, round > 0 || try_commit, err))) return rc;
    bool again = false;
    for (size_t j = 0; j < p->njobs; j++) again = again || p->jobs[j].conflict;
    if (!again) return BR_OK;
    if (round == 3)
      return br_error_set(err, BR_ENET, "the depot kept losing chunks of this push before its "
                          "commit (is a depot gc running with a short grace period?)");
  }
}

/* Commits every job (again: only those whose commit was refused). */
static int commit_jobs(push *p, bool again, br_error *err) {
  br_xfer__engine_phase(&p->eng, "commit");
  for (size_t j = 0; j < p->njobs; j++) {
    if (again && !p->jobs[j].conflict) continue;
    p->jobs[j].conflict = false;
    char *path = NULL;
    if (asprintf(&path, "/v1/snapshot?name=%s", p->jobs[j].ref.name) < 0)
      return br_error_set(err, BR_ENOMEM, "out of memory");
    batch *b;
    br_xfer__req *r = new_req(p, p->jobs[j].ref.base, path, &b);
    free(path);
    if (!r) return br_error_set(err, BR_ENOMEM, "out of memory");
    b->job = j;
    r->content_type = "application/json";
    r->build = commit_build;
    r->done = commit_done;
    r->refused = commit_refused;
    br_xfer__engine_submit(&p->eng, r);
  }
  return br_xfer__engine_run(&p->eng, err);
}

int br_xfer_push_many(const char *const *dirs, const char *const *targets, size_t n,
                      const br_xfer_opts *opts, br_xfer_pair *pairs, br_xfer_result *res,
                      br_error *err) {
  br_xfer_opts defaults;
  if (!opts) {
    br_xfer_opts_init(&defaults);
    opts = &defaults;
  }
  br_xfer_result local;
  if (!res) res = &local;
  memset(res, 0, sizeof *res);
  if (n == 0) return br_error_set(err, BR_EINVAL, "nothing to push");
  push p;
  memset(&p, 0, sizeof p);
  p.o = opts;
  p.res = res;
  p.njobs = n;
  p.chunk_size = opts->chunk_size > 0 ? opts->chunk_size : BR_XFER_CHUNK_SIZE;
  if (p.chunk_size < 65536 || p.chunk_size > BR_XFER__MAX_CHUNK)
    return br_error_set(err, BR_EINVAL, "chunk size must be 64 KiB .. 64 MiB");
  pthread_mutex_init(&p.mu, NULL);
  pthread_cond_init(&p.mem_cv, NULL);
  pthread_cond_init(&p.load_cv, NULL);
  double t0 = br_xfer__now();
  int64_t per = opts->bundle_bytes > p.chunk_size ? opts->bundle_bytes : p.chunk_size;
  int rc = br_xfer__engine_init(&p.eng, opts, per * 2, BR_XFER_PUSH_PARALLEL, err);
  p.eng.sent_is_done = true; /* bytes sent show before their bundle's answer */
  p.jobs = rc ? NULL : calloc(n, sizeof *p.jobs);
  if (!rc && !p.jobs) rc = br_error_set(err, BR_ENOMEM, "out of memory");
  if (!rc)
    rc = br_xfer__hcache_open(opts->cache_path, &p.hc, res->warning, sizeof res->warning, err);
  if (!rc) rc = run_push(&p, dirs, targets, err);
  p.eng.prog.phase = rc ? "failed" : "done";
  res->retries = p.eng.prog.retries;
  res->bytes_moved = p.eng.prog.bytes_moved;
  res->seconds = br_xfer__now() - t0;
  br_xfer__engine_progress(&p.eng, true);
  for (size_t j = 0; p.jobs && j < n; j++) {
    pjob *jb = &p.jobs[j];
    if (pairs) pairs[j] = (br_xfer_pair){jb->version, jb->same_as};
    if (j == 0) res->version = jb->version, res->same_as = jb->same_as;
    for (size_t i = 0; i < jb->n; i++) {
      pfile *f = &jb->files[i];
      if (f->type == BR_XFER_FILE) res->files++, res->bytes += f->st.st_size;
      free(f->rel);
      free(f->abs);
      free(f->target);
      free(f->chunks);
      free(f->refs);
      for (size_t c = 0; f->kept && c < f->nchunks; c++) drop_chunk(&p, f, (uint32_t)c);
      free(f->kept);
      drop_data(&p, f);
    }
    free(jb->files);
    free(jb->dir);
    br_xfer_ref_free(&jb->ref);
  }
  free(p.jobs);
  free(p.todo);
  free(p.ready);
  free(p.taking);
  free(p.load);
  free(p.loaded);
  free(p.taking_loaded);
  free(p.seen);
  free(p.ask);
  free(p.sendq);
  br_xfer__hcache_close(p.hc);
  br_xfer__engine_free(&p.eng);
  pthread_mutex_destroy(&p.mu);
  pthread_cond_destroy(&p.mem_cv);
  pthread_cond_destroy(&p.load_cv);
  return rc;
}

int br_xfer_push(const char *dir, const char *target, const br_xfer_opts *opts,
                 br_xfer_result *res, br_error *err) {
  return br_xfer_push_many(&dir, &target, 1, opts, NULL, res, err);
}
