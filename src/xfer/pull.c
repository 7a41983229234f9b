/* Pull: fetch manifests, then for every file not already present with the
 * right digest, fetch its missing chunks into a hidden partial file beside
 * the destination (.braid-partial-<letters>: no digits, so no frame pattern
 * ever matches it), verify each chunk and then the whole file, set mode and
 * mtime, make it durable, rename it over the final name, and make the
 * rename durable (see "installing" below: in batches). A partial left by a
 * cut or a cancel is re-verified chunk by chunk on the next pull and only
 * what failed is fetched again. Small files come in bundles, many to a
 * request; large files as parallel ranged chunk GETs. A new small file's
 * partial has no name at all (O_TMPFILE, linked in after the sync). Files
 * are written with direct I/O where the file system allows: no page cache
 * to fill, and nothing left for the sync to write. */
#include "client_int.h"
#include "../fs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <jansson.h>
#include <stdatomic.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_BUNDLE_ENTRIES 4096

typedef struct ljob ljob;

/* Zero chunks (zero_chunk) are known from their digest: that of a run of
 * zeros of the chunk's length. Lengths other than the chunk size (files'
 * last chunks) start from the hash state after the longest run of whole
 * ZERO_STEPs below them: a new length costs under ZERO_STEP bytes hashed,
 * not its own length, however many files end differently. */
#define ZERO_STEP (16 * 1024)
#define ZERO_RECENT 4

typedef struct zlen {
  int64_t len; /* 0: none */
  br_xfer_digest d;
} zlen;

typedef struct lfile {
  ljob *job;
  br_xfer_entry *e;
  bool *ok;    /* per chunk: verified in the partial */
  size_t left; /* chunks still to fetch */
  int fd;      /* the partial, while chunks arrive */
  atomic_bool direct;  /* fd has O_DIRECT (cleared by a writer if refused) */
  atomic_int inflight; /* pieces handed to the writers, not yet written */
  bool done;
  bool fresh; /* neither the file nor a partial of it was there */
  bool copy;  /* small: the same bytes as another file's, copied from it (copy_chunks) */
  bool link;  /* a hard link of another file of its snapshot: made at the end (make_hardlink) */
  /* small file: times its bytes failed the writer's verification, and
   * the installer's list of files to fetch again */
  int corrupt;
  struct lfile *refetch_next;
} lfile;

struct ljob {
  br_xfer_ref ref;
  char *dir;
  int rootfd;
  br_xfer_manifest *m;
  int64_t version;
  lfile *files;
  bool *dup; /* per entry: the same entry of an earlier job writes it (NULL: none) */
};

/* A batch of written partials between the commit's two stages: synced by
 * the committer, then renamed or linked in by the linker, so the next
 * batch's sync (the disk's time) overlaps this batch's renames (the
 * directory's). */
typedef struct cbatch {
  struct cbatch *next;
  size_t n, taken; /* jobs to put in place; jobs taken from ready */
  int rc;          /* a write or sync failed: nothing is put in place */
  br_error err;
  struct install_job *v[];
} cbatch;

typedef struct installer {
  pthread_mutex_t mu;
  /* Writers, the committer and the linker each wait on a condition of
   * their own and are woken when they have work: a job for one writer
   * wakes one writer, not every thread. cv is for everyone else (room in
   * the queue, the end of a drain, pieces hashed or written). */
  pthread_cond_t cv, wcv, ccv, lcv;
  struct install_job *head, *tail; /* to write */
  struct install_job *ready;       /* written, to commit (newest first) */
  size_t nready;
  size_t committing; /* jobs in the committer's or the linker's hands */
  cbatch *synced, *synced_tail; /* synced, for the linker (oldest first) */
  bool draining;     /* someone waits for the end: commit at once */
  int queued, busy, stop, nth, cstop, lstop, has_committer, has_linker;
  int64_t queued_bytes;
  int64_t done;
  int rc;
  br_error err;
  pthread_t th[16], committer, linker;
  void *spare; /* piece buffers written and free again (a list through their first bytes) */
  int nspare;
  /* one directory fd per file system renamed into (synced at the end; past
   * eight file systems, a batch syncs its own directories) */
  int devfd[8];
  dev_t dev[8];
  int ndev;
  int anon, anon_max; /* unnamed partials open (each holds an fd), at most */
  lfile *refetch; /* small files whose bytes failed verification: fetched again */
  /* chunks whose bytes failed verification (the first few): a failed pull
   * asks their depots whether their own copies are sound */
  struct {
    br_xfer_digest d;
    const char *base; /* the depot's (its job's ref.base) */
  } corrupt[8];
  size_t ncorrupt;
} installer;

typedef struct pull {
  br_xfer__engine eng;
  installer inst;
  atomic_bool buffered; /* no direct I/O (asked, or the file system refused it) */
  atomic_bool named;    /* no unnamed partials (O_TMPFILE refused) */
  int umask;            /* the process's, or -1 when unknown */
  int64_t files_skipped;
  const br_xfer_opts *o;
  ljob *jobs;
  size_t njobs;
  br_xfer__hcache *hc;
  br_xfer_result *res;
  /* the loop thread's jobs not yet queued (stage_job) */
  struct install_job *stage, *stage_tail;
  size_t nstage;
  int64_t stage_bytes;
  /* chunks named more than once: where each is fetched or found first, and
   * the copies to make of it once the fetches are done (copy_chunks) */
  struct csrc *cmap;
  size_t cmap_cap, cmap_n;
  struct ccopy *copies;
  size_t ncopies, copies_cap;
  /* digests of runs of zeros (zero_digest): the chunk size's, a few
   * recent other lengths, and the hash states after each ZERO_STEP zeros */
  zlen zfull, zrecent[ZERO_RECENT];
  size_t znext;
  EVP_MD_CTX **zat; /* zat[k]: after k * ZERO_STEP zeros */
  size_t nzat;
} pull;

typedef struct fetch {
  pull *p;
  ljob *job;
  lfile **files; /* bundle: the files asked for; chunk: files[0] */
  size_t nfiles;
  lfile **sent;  /* bundle: those in the current attempt's body, in order */
  size_t nsent;
  size_t chunk;
  EVP_MD_CTX *md; /* chunk: digest of the bytes received so far */
  /* chunk, direct I/O: pieces handed to the writers in this attempt, and
   * how many of them the writers have hashed into md (in order: the loop
   * thread does not hash what it hands over) */
  int64_t pieces;
  atomic_llong hashed;
  /* chunk, direct I/O: bytes waiting to be written as one aligned piece at
   * file offset doff */
  uint8_t *dbuf;
  size_t dlen, dcap;
  int64_t doff;
} fetch;

/* Waits until the writers have hashed every piece of f handed to them. */
static void wait_hashed(fetch *f) {
  if (atomic_load(&f->hashed) == f->pieces) return;
  installer *in = &f->p->inst;
  pthread_mutex_lock(&in->mu);
  while (atomic_load(&f->hashed) != f->pieces) pthread_cond_wait(&in->cv, &in->mu);
  pthread_mutex_unlock(&in->mu);
}

static void fetch_destroy(br_xfer__req *r) {
  fetch *f = r->ctx;
  wait_hashed(f); /* no writer still hashes into f->md */
  free(f->files);
  free(f->sent);
  if (f->md) EVP_MD_CTX_free(f->md);
  free(f->dbuf);
  free(f);
}

static int fail_io(br_error *err, const char *what, const ljob *j, const char *path, int e) {
  if (e == ENOSPC || e == EDQUOT)
    return br_error_set(err, BR_EIO, "disk full writing %s/%s (nothing was left at the "
                        "final path; free space and pull again to resume)", j->dir, path);
  return br_error_set(err, BR_EIO, "%s %s/%s: %s", what, j->dir, path, strerror(e));
}

/* ---- installing: write, sync and rename off the event loop ----
 * Writers create and fill small files' partials, several at once (creating
 * files is most of the kernel's work for a tree of small files), and write
 * large files' pieces; a writer checks a small file's bytes against its
 * digest before it writes them. A committer takes every partial that is
 * complete and makes them all durable at once: one syncfs() of the
 * destination's file system for the batch (a lone file is fsync'ed), not
 * an fsync per file and per directory; a linker then renames them (or
 * links them in) while the committer syncs the next batch. A later syncfs
 * also makes a batch's renames durable; the last ones are synced when the
 * pull ends. The guarantee stays: no file appears under its final name
 * before its content is on disk, and a pull that reports success has
 * everything on disk. While the committer syncs, the writers fill the next
 * batch. */

/* A received bundle body, shared by the install jobs of its files. */
typedef struct blob {
  atomic_int refs;
  uint8_t *data;
  size_t cap;
} blob;

static void blob_release(blob *b) {
  if (b && atomic_fetch_sub(&b->refs, 1) == 1) {
    br_xfer__mem_put(b->data, b->cap);
    free(b);
  }
}

/* A destination directory, shared by the install jobs of its files: one
 * fd and one stat for them all. */
typedef struct pdir {
  atomic_int refs;
  int fd;
  dev_t dev;
  ino_t ino;
} pdir;

/* Takes fd (closed on failure): NULL and errno set if it cannot. */
static pdir *pdir_new(int fd) {
  struct stat st;
  pdir *d = fd >= 0 && fstat(fd, &st) == 0 ? malloc(sizeof *d) : NULL;
  if (!d) {
    int e = fd >= 0 ? errno : EBADF;
    if (fd >= 0) close(fd);
    errno = e ? e : ENOMEM;
    return NULL;
  }
  atomic_init(&d->refs, 1);
  d->fd = fd;
  d->dev = st.st_dev;
  d->ino = st.st_ino;
  return d;
}

static void pdir_release(pdir *d) {
  if (d && atomic_fetch_sub(&d->refs, 1) == 1) {
    close(d->fd);
    free(d);
  }
}

typedef struct install_job {
  struct install_job *next;
  pull *p;
  lfile *lf;
  pdir *dir;
  int dirfd, fd; /* dir's fd; fd < 0: the job writes data into a new partial first */
  char pn[64];
  char *base;
  const uint8_t *data; /* small file: its bytes, in blob or owned */
  size_t len;
  /* The writer checks data against the file's digest before it writes:
   * the loop thread only checks the bundle entry's header. A mismatch
   * writes nothing, and the file is fetched again. */
  bool verify, corrupt;
  blob *blob;
  uint8_t *owned;
  ino_t ino; /* the partial's inode, once written */
  /* A new small file's partial has no name (O_TMPFILE): nothing to clean
   * up after a cut, and linking it in is half a rename's directory work.
   * fd stays open until the link. */
  bool anon;
  int rc;    /* the write stage's result */
  br_error err;
  /* A piece of a large file (direct I/O): owned, aligned bytes to write at
   * off through fd (a dup of the partial's); no commit follows. The writer
   * also hashes it into its chunk's digest, as piece seq of hash_into. */
  bool piece;
  int64_t off;
  struct fetch *hash_into;
  int64_t seq;
} install_job;

/* With direct I/O a writer mostly waits for the disk: on a day the disk
 * answered slowly, 8 writers left 10-15% of the CPU idle in iowait during
 * a pull of 10,000 small files, and 16 pulled them 7% faster (medians of
 * 14 alternated pulls: 1.04 s against 1.12 s); on a fast day, no change. */
#define WRITERS 16
#define DIRECT_PIECE (1024 * 1024) /* direct writes of a large file's chunk, at most */
/* Jobs between the loop thread and the end of their commit, at most: each
 * holds a directory fd (and a large file its own), so this bounds the fds
 * too; a commit takes all that are written, up to this many. */
#define INSTALL_INFLIGHT 512
#define INSTALL_QUEUE_BYTES (64 * 1024 * 1024)
#define COMMIT_GATHER 128  /* files a commit waits for ... */
#define COMMIT_GATHER_MS 8 /* ... for at most this long, while writers are busy */

/* With mu held: records the pull's first failure (later ones are dropped)
 * and stops the committer's wait for a fuller batch. */
static void installer_fail(installer *in, const br_error *err) {
  if (in->rc) return;
  in->rc = err->code;
  in->err = *err;
  pthread_cond_signal(&in->ccv);
}

/* With mu held: wakes the committer when it has a reason to stop waiting
 * (the first written jobs, when there were none ready before; a full
 * batch; the writers idle; a failure wakes it in installer_fail). */
static void wake_committer(installer *in, size_t ready_before) {
  if (!ready_before || in->nready >= COMMIT_GATHER || (!in->queued && !in->busy))
    pthread_cond_signal(&in->ccv);
}

static char *content_path(const char *cache, const br_xfer_digest *d, bool mkdir_);

/* Links an installed file into the content cache (tmp name, then rename:
 * the cache never holds a partial name under a digest). Best effort. */
static void add_to_content_cache(install_job *j, const br_xfer_entry *e) {
  char *cp = content_path(j->p->o->content_cache, &e->digest, true);
  char *tmp = NULL;
  if (cp && asprintf(&tmp, "%s.tmp-%d-%p", cp, (int)getpid(), (void *)j) > 0) {
    struct stat st;
    if (stat(cp, &st) != 0 && linkat(j->dirfd, j->base, AT_FDCWD, tmp, 0) == 0 &&
        rename(tmp, cp) != 0)
      unlink(tmp);
  }
  free(tmp);
  free(cp);
}

/* The times to set for e: its mtime, the access time left as it is. */
static void entry_times(const br_xfer_entry *e, struct timespec ts[2]) {
  ts[0] = (struct timespec){0, UTIME_OMIT};
  /* before 1970 the remainder is negative: nanoseconds count up from a second */
  int64_t sec = e->mtime_ns / 1000000000, ns = e->mtime_ns % 1000000000;
  if (ns < 0) ns += 1000000000, sec--;
  ts[1] = (struct timespec){(time_t)sec, (long)ns};
}

static void set_times(int fd, const br_xfer_entry *e) {
  struct timespec ts[2];
  entry_times(e, ts);
  futimens(fd, ts);
}

/* Opens a partial for writing, with direct I/O unless the pull is
 * buffered; a file system that refuses O_DIRECT makes the pull buffered. */
static int open_partial(pull *p, int dirfd, const char *pn, int flags, mode_t mode,
                        bool *direct) {
  *direct = !atomic_load(&p->buffered);
  int fd = openat(dirfd, pn, flags | (*direct ? O_DIRECT : 0), mode);
  if (fd < 0 && *direct && errno == EINVAL) {
    atomic_store(&p->buffered, true);
    *direct = false;
    fd = openat(dirfd, pn, flags, mode);
  }
  return fd;
}

/* Writes at off through fd, directly when *direct (padded to the
 * alignment; buf is the caller's aligned buffer), else buffered. A direct
 * write the file system refuses turns fd buffered. 0 or -errno. */
static int write_at(pull *p, int fd, bool *direct, const void *data, size_t len, int64_t off,
                    uint8_t **buf, size_t *cap) {
  if (*direct) {
    int w = br_xfer__pwrite_direct(fd, data, len, off, buf, cap);
    if (w != -EINVAL) return w;
    atomic_store(&p->buffered, true);
    *direct = false;
    if (br_xfer__direct_off(fd)) return -EINVAL;
  }
  return br_xfer__pwrite_all(fd, data, len, off);
}

/* The umask, read without changing it (umask() would, for every thread):
 * -1 when /proc does not say. */
static int read_umask(void) {
  FILE *f = fopen("/proc/self/status", "re");
  if (!f) return -1;
  char line[256];
  int m = -1;
  while (fgets(line, sizeof line, f))
    if (strncmp(line, "Umask:", 6) == 0) {
      char *end;
      long v = strtol(line + 6, &end, 8);
      if (end != line + 6 && v >= 0 && v <= 0777) m = (int)v;
      break;
    }
  fclose(f);
  return m;
}

/* Whether a new small file's partial may be unnamed: the file system
 * allows it, and the fds such partials hold stay within their budget. */
static bool anon_begin(installer *in, pull *p) {
  if (atomic_load(&p->named)) return false;
  pthread_mutex_lock(&in->mu);
  bool ok = in->anon < in->anon_max;
  if (ok) in->anon++;
  pthread_mutex_unlock(&in->mu);
  return ok;
}

static void anon_end(installer *in, install_job *j) {
  if (!j->anon) return;
  j->anon = false;
  pthread_mutex_lock(&in->mu);
  in->anon--;
  pthread_mutex_unlock(&in->mu);
}

/* Puts an unnamed partial under its final name: linked by its fd (a
 * link cannot replace a name, so a file there now, put there by someone
 * else meanwhile, is replaced by a rename from the partial name). */
static int link_anon(install_job *j) {
  int e = br_xfer__link_fd(j->fd, j->dirfd, j->base);
  if (e != EEXIST) return e;
  unlinkat(j->dirfd, j->pn, 0);
  if ((e = br_xfer__link_fd(j->fd, j->dirfd, j->pn)) != 0) return e;
  return renameat(j->dirfd, j->pn, j->dirfd, j->base) != 0 ? errno : 0;
}

/* A small file's bytes (verified already) into a new partial. buf: the
 * writer's aligned buffer for direct I/O. */
static int write_partial(install_job *j, uint8_t **buf, size_t *cap, br_error *err) {
  const br_xfer_entry *e = j->lf->e;
  bool direct;
  j->fd = -1;
  mode_t mode = e->mode & 0777;
  if (j->anon) {
    j->fd = open_partial(j->p, j->dirfd, ".", O_WRONLY | O_TMPFILE | O_CLOEXEC, mode, &direct);
    if (j->fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL))
      atomic_store(&j->p->named, true); /* this file system cannot: named from now on */
    if (j->fd < 0) anon_end(&j->p->inst, j);
  }
  if (j->fd < 0)
    j->fd = open_partial(j->p, j->dirfd, j->pn, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC,
                         0600, &direct);
  if (j->fd < 0) return fail_io(err, "create", j->lf->job, e->path, errno);
  int w = write_at(j->p, j->fd, &direct, j->data, j->len, 0, buf, cap);
  /* a direct write is padded to the alignment */
  if (w == 0 && direct && j->len % BR_XFER__DIO_ALIGN && ftruncate(j->fd, (off_t)j->len) != 0)
    w = -errno;
  if (w) {
    if (!j->anon) unlinkat(j->dirfd, j->pn, 0);
    return fail_io(err, "write", j->lf->job, e->path, -w);
  }
  /* An unnamed partial has its mode from the start (nobody can open it):
   * no chmod when the umask left the mode as it is. */
  bool chmod_needed = !j->anon || j->p->umask < 0 || (mode & ~(mode_t)j->p->umask) != mode;
  if (chmod_needed && fchmod(j->fd, mode) != 0)
    return fail_io(err, "chmod", j->lf->job, e->path, errno);
  set_times(j->fd, e);
  /* buffered: start the write-back now, the batch's sync has less to do */
  if (!direct) sync_file_range(j->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
  return BR_OK;
}

static void job_free(install_job *j) {
  if (j->anon) anon_end(&j->p->inst, j);
  if (j->fd >= 0) close(j->fd);
  pdir_release(j->dir);
  free(j->base);
  free(j->owned);
  blob_release(j->blob);
  free(j);
}

/* A piece of a large file: written (unless the pull is stopping), then the
 * file has one piece less in flight. */
static void write_piece(installer *in, install_job *j, bool failed) {
  lfile *lf = j->lf;
  int w = 0;
  size_t cap = DIRECT_PIECE; /* write_at may only grow it (never for a piece) */
  if (!failed) {
    bool direct = atomic_load(&lf->direct);
    w = write_at(j->p, j->fd, &direct, j->owned, j->len, j->off, &j->owned, &cap);
    if (!direct) atomic_store(&lf->direct, false);
    /* the file's last piece was padded past its end: cut it back (finalize
     * may have truncated before this write) */
    if (w == 0 && direct && j->off + (int64_t)j->len == lf->e->size &&
        j->len % BR_XFER__DIO_ALIGN && ftruncate(j->fd, (off_t)lf->e->size) != 0)
      w = -errno;
  }
  br_error err;
  br_error_clear(&err);
  if (w) fail_io(&err, "write", lf->job, lf->e->path, -w);
  close(j->fd);
  size_t len = j->len;
  fetch *f = j->hash_into;
  if (f) { /* the chunk's pieces are hashed in their order: wait for this one's turn */
    pthread_mutex_lock(&in->mu);
    while (atomic_load(&f->hashed) != j->seq) pthread_cond_wait(&in->cv, &in->mu);
    pthread_mutex_unlock(&in->mu);
    if (!failed && !w) EVP_DigestUpdate(f->md, j->owned, len);
  }
  pthread_mutex_lock(&in->mu);
  if (f) atomic_store(&f->hashed, j->seq + 1);
  /* keep the buffer for the next piece: fresh memory costs a page fault a page */
  if (in->nspare < INSTALL_QUEUE_BYTES / DIRECT_PIECE && cap == DIRECT_PIECE) {
    *(void **)j->owned = in->spare;
    in->spare = j->owned;
    in->nspare++;
  } else {
    free(j->owned);
  }
  free(j);
  in->busy--;
  in->queued_bytes -= (int64_t)len;
  atomic_fetch_sub(&lf->inflight, 1);
  if (w) installer_fail(in, &err);
  wake_committer(in, in->nready);
  pthread_cond_broadcast(&in->cv);
  pthread_mutex_unlock(&in->mu);
}

/* A small file's job in a writer: its partial written (unless the pull
 * is stopping), its bytes let go of; then it waits for its commit. */
static void write_job(install_job *j, bool failed, uint8_t **buf, size_t *cap) {
  br_error_clear(&j->err);
  /* After a failure the pull is stopping: put nothing more in place (a
   * partial written already stays for the resume). */
  j->rc = failed ? BR_ECANCEL : BR_OK;
  if (j->rc == BR_OK && j->verify) {
    br_xfer_digest got;
    br_xfer_sha256(j->data, j->len, &got);
    j->corrupt = br_xfer__digest_cmp(&got, &j->lf->e->chunks[0]) != 0;
  }
  if (j->rc == BR_OK && j->fd < 0 && !j->corrupt) {
    j->rc = write_partial(j, buf, cap, &j->err);
    /* the bytes are in the file: let go of them (and of the fd) while
     * the job waits for its commit */
    struct stat st;
    if (j->rc == BR_OK && !j->anon) j->ino = fstat(j->fd, &st) == 0 ? st.st_ino : 0;
    if (j->fd >= 0 && !j->anon) {
      close(j->fd);
      j->fd = -1;
    }
    free(j->owned);
    j->owned = NULL;
    blob_release(j->blob);
    j->blob = NULL;
    j->data = NULL;
  } else if (j->rc == BR_OK) {
    struct stat st;
    j->ino = fstat(j->fd, &st) == 0 ? st.st_ino : 0;
  }
}

/* Jobs a writer takes at once, at most: while the queue is long, a few at
 * a time, for fewer turns of the lock; never more than its share. */
#define WRITER_TAKE 4

/* Writers: the write stage, then hand the jobs to the committer. */
static void *writer_main(void *arg) {
  installer *in = arg;
  uint8_t *buf = NULL; /* aligned, for direct writes */
  size_t cap = 0;
  for (;;) {
    pthread_mutex_lock(&in->mu);
    while (!in->head && !in->stop) pthread_cond_wait(&in->wcv, &in->mu);
    install_job *j = in->head;
    if (!j) {
      pthread_mutex_unlock(&in->mu);
      break;
    }
    /* a piece goes alone (pieces are hashed in order: see write_piece) */
    size_t want = j->piece ? 1 : (size_t)in->queued / WRITERS;
    if (want < 1) want = 1;
    if (want > WRITER_TAKE) want = WRITER_TAKE;
    install_job *last = j;
    size_t n = 1;
    while (n < want && last->next && !last->next->piece) last = last->next, n++;
    in->head = last->next;
    if (!in->head) in->tail = NULL;
    last->next = NULL;
    in->queued -= (int)n;
    in->busy += (int)n;
    pthread_cond_broadcast(&in->cv);
    bool failed = in->rc != 0;
    pthread_mutex_unlock(&in->mu);
    if (j->piece) {
      write_piece(in, j, failed);
      continue;
    }
    int64_t bytes = 0;
    for (install_job *x = j; x; x = x->next) {
      write_job(x, failed, &buf, &cap);
      bytes += (int64_t)x->len;
    }
    pthread_mutex_lock(&in->mu);
    in->busy -= (int)n;
    in->queued_bytes -= bytes;
    last->next = in->ready;
    in->ready = j;
    size_t before = in->nready;
    in->nready += n;
    wake_committer(in, before);
    pthread_cond_broadcast(&in->cv);
    pthread_mutex_unlock(&in->mu);
  }
  free(buf);
  return NULL;
}

/* Makes the batch's partials durable: 0 or an errno. */
static int sync_batch(install_job **v, size_t n, bool per_file) {
  if (per_file) { /* --sync files: nothing but these files is written back */
    for (size_t i = 0; i < n; i++) {
      int fd = v[i]->fd >= 0 ? v[i]->fd
                             : openat(v[i]->dirfd, v[i]->pn, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
      if (fd < 0) return errno;
      int e = fsync(fd) != 0 ? errno : 0;
      if (fd != v[i]->fd) close(fd);
      if (e) return e;
    }
    return 0;
  }
  if (n == 1 && v[0]->fd >= 0) return fsync(v[0]->fd) != 0 ? errno : 0;
  /* one syncfs per file system the batch writes to (a directory is on
   * its files' file system) */
  dev_t done[8];
  size_t ndone = 0;
  for (size_t i = 0; i < n; i++) {
    bool seen = false;
    for (size_t k = 0; k < ndone && !seen; k++) seen = done[k] == v[i]->dir->dev;
    if (seen) continue;
    if (ndone == sizeof done / sizeof done[0]) return syncfs(v[i]->dirfd) != 0 ? errno : 0;
    if (syncfs(v[i]->dirfd) != 0) return errno;
    done[ndone++] = v[i]->dir->dev;
  }
  return 0;
}

/* Notes a chunk whose bytes failed verification (under in->mu). */
static void note_corrupt(installer *in, const ljob *jb, const br_xfer_digest *d) {
  for (size_t i = 0; i < in->ncorrupt; i++)
    if (in->corrupt[i].base == jb->ref.base && !br_xfer__digest_cmp(&in->corrupt[i].d, d)) return;
  if (in->ncorrupt == sizeof in->corrupt / sizeof in->corrupt[0]) return;
  in->corrupt[in->ncorrupt].d = *d;
  in->corrupt[in->ncorrupt++].base = jb->ref.base;
}

/* A small file whose bytes failed verification goes back to the loop
 * thread to be fetched again (installer_tick), as a retry: past the
 * retries, the pull fails. */
static void refetch(installer *in, install_job *j) {
  pull *p = j->p;
  lfile *lf = j->lf;
  pthread_mutex_lock(&in->mu);
  note_corrupt(in, lf->job, &lf->e->chunks[0]);
  if (++lf->corrupt > br_xfer__engine_retries(&p->eng)) {
    br_error err;
    br_error_set(&err, BR_ENET, "%s: the bytes received failed verification %d times",
                 lf->e->path, lf->corrupt);
    installer_fail(in, &err);
  } else {
    lf->refetch_next = in->refetch;
    in->refetch = lf;
  }
  pthread_mutex_unlock(&in->mu);
  br_xfer__engine_wake(&p->eng);
}

/* The commit's first stage for a batch of written partials: failed writes
 * drop out, the rest is made durable; then the batch goes to the linker. */
static void sync_stage(installer *in, cbatch *b) {
  install_job **v = b->v;
  size_t n = b->n;
  pull *p = v[0]->p;
  pthread_mutex_lock(&in->mu);
  bool failed = in->rc != 0;
  pthread_mutex_unlock(&in->mu);
  int rc = BR_OK;
  br_error err;
  br_error_clear(&err);
  /* jobs whose write failed drop out; the first error is the pull's */
  size_t m = 0;
  for (size_t i = 0; i < n; i++) {
    if (v[i]->rc == BR_OK && v[i]->corrupt) {
      refetch(in, v[i]);
      job_free(v[i]);
    } else if (v[i]->rc != BR_OK) {
      if (rc == BR_OK && v[i]->rc != BR_ECANCEL) rc = v[i]->rc, err = v[i]->err;
      job_free(v[i]);
    } else {
      v[m++] = v[i];
    }
  }
  n = m;
  /* a large file's last pieces may still be with the writers */
  pthread_mutex_lock(&in->mu);
  for (size_t i = 0; i < n; i++)
    while (atomic_load(&v[i]->lf->inflight) > 0) pthread_cond_wait(&in->cv, &in->mu);
  failed = failed || in->rc != 0;
  pthread_mutex_unlock(&in->mu);
  if (failed && n) rc = rc ? rc : BR_ECANCEL;
  if (rc == BR_OK && n) {
    int e = sync_batch(v, n, p->o->sync_files);
    if (e) rc = fail_io(&err, "sync", v[0]->lf->job, v[0]->lf->e->path, e);
  }
  b->n = n;
  b->rc = rc;
  b->err = err;
  pthread_mutex_lock(&in->mu);
  if (in->synced_tail) in->synced_tail->next = b;
  else in->synced = b;
  in->synced_tail = b;
  pthread_cond_signal(&in->lcv);
  pthread_mutex_unlock(&in->mu);
}

/* The commit's second stage: a synced batch's partials under their names. */
static void link_stage(installer *in, cbatch *b) {
  install_job **v = b->v;
  size_t n = b->n;
  pull *p = n ? v[0]->p : NULL;
  int rc = b->rc;
  br_error err = b->err;
  bool per_file = p && p->o->sync_files;
  size_t renamed = 0;
  for (size_t i = 0; rc == BR_OK && i < n; i++) {
    int e = v[i]->anon ? link_anon(v[i])
                       : renameat(v[i]->dirfd, v[i]->pn, v[i]->dirfd, v[i]->base) != 0 ? errno : 0;
    if (e) {
      rc = fail_io(&err, "rename to", v[i]->lf->job, v[i]->lf->e->path, e);
      break;
    }
    renamed++;
  }
  /* The renames become durable: with --sync files now, one fsync per
   * directory renamed into; otherwise with a later batch's syncfs, or at
   * the end (installer_sync), so a directory on each file system is kept.
   * Each directory is looked at once per batch. */
  const pdir *dirs[INSTALL_INFLIGHT];
  size_t nd = 0;
  for (size_t i = 0; i < renamed; i++) {
    const pdir *d = v[i]->dir;
    bool seen = i > 0 && v[i - 1]->dir == d; /* files of a directory come together */
    for (size_t k = 0; k < nd && !seen; k++) seen = dirs[k]->dev == d->dev && dirs[k]->ino == d->ino;
    if (seen) continue;
    dirs[nd++] = d;
    if (per_file) {
      br__fsync_dirfd(v[i]->dirfd);
      continue;
    }
    bool known = false;
    for (int k = 0; k < in->ndev && !known; k++) known = in->dev[k] == d->dev;
    if (known) continue;
    int fd = in->ndev < 8 ? dup(v[i]->dirfd) : -1;
    if (fd < 0) { /* too many file systems: this one now */
      br__fsync_dirfd(v[i]->dirfd);
      continue;
    }
    in->devfd[in->ndev] = fd;
    in->dev[in->ndev++] = d->dev;
  }
  if (renamed) {
    br_xfer__hcache_begin(p->hc);
    for (size_t i = 0; i < renamed; i++) {
      const br_xfer_entry *e = v[i]->lf->e;
      struct stat st; /* after the rename or link: it changes the ctime */
      bool known = v[i]->anon ? fstat(v[i]->fd, &st) == 0
                              : fstatat(v[i]->dirfd, v[i]->base, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                                    st.st_ino == v[i]->ino;
      if (known && S_ISREG(st.st_mode))
        br_xfer__hcache_put(p->hc, &st, v[i]->lf->job->m->chunk_size, &e->digest, e->chunks,
                            e->nchunks);
    }
    br_xfer__hcache_commit(p->hc);
    for (size_t i = 0; i < renamed; i++)
      if (p->o->content_cache && v[i]->lf->e->size > 0) add_to_content_cache(v[i], v[i]->lf->e);
  }
  for (size_t i = 0; i < n; i++) job_free(v[i]);
  pthread_mutex_lock(&in->mu);
  in->done += (int64_t)renamed;
  if (rc != BR_OK && rc != BR_ECANCEL) installer_fail(in, &err);
  in->committing -= b->taken;
  pthread_cond_broadcast(&in->cv);
  pthread_mutex_unlock(&in->mu);
  free(b);
}

static void *linker_main(void *arg) {
  installer *in = arg;
  for (;;) {
    pthread_mutex_lock(&in->mu);
    while (!in->synced && !in->lstop) pthread_cond_wait(&in->lcv, &in->mu);
    cbatch *b = in->synced;
    if (b) {
      in->synced = b->next;
      if (!in->synced) in->synced_tail = NULL;
    }
    pthread_mutex_unlock(&in->mu);
    if (!b) break;
    link_stage(in, b);
  }
  return NULL;
}

static void *committer_main(void *arg) {
  installer *in = arg;
  for (;;) {
    pthread_mutex_lock(&in->mu);
    while (!in->ready && !in->cstop) pthread_cond_wait(&in->ccv, &in->mu);
    if (!in->ready) {
      pthread_mutex_unlock(&in->mu);
      break;
    }
    /* A sync costs about the same for 10 files or 200: while more are
     * being written, let the batch grow a little. */
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_nsec += COMMIT_GATHER_MS * 1000000L;
    if (until.tv_nsec >= 1000000000L) until.tv_sec++, until.tv_nsec -= 1000000000L;
    while (in->nready < COMMIT_GATHER && !in->draining && !in->cstop && !in->rc &&
           (in->queued || in->busy) && (size_t)in->queued + (size_t)in->busy + in->nready < INSTALL_INFLIGHT &&
           pthread_cond_timedwait(&in->ccv, &in->mu, &until) == 0) {
    }
    cbatch *b = malloc(sizeof *b + (in->nready < INSTALL_INFLIGHT ? in->nready : INSTALL_INFLIGHT) *
                                     sizeof(install_job *));
    if (!b) { /* try again once memory is back */
      pthread_mutex_unlock(&in->mu);
      usleep(1000);
      continue;
    }
    memset(b, 0, sizeof *b);
    install_job **v = b->v;
    /* the oldest first: the list is newest first */
    size_t n = 0;
    install_job *rest = NULL;
    for (install_job *j = in->ready, *next; j; j = next) {
      next = j->next;
      j->next = rest;
      rest = j;
    }
    while (rest && n < INSTALL_INFLIGHT) {
      v[n++] = rest;
      rest = rest->next;
    }
    install_job *back = NULL; /* what did not fit waits, newest first again */
    for (install_job *j = rest, *next; j; j = next) {
      next = j->next;
      j->next = back;
      back = j;
    }
    in->ready = back;
    in->nready -= n;
    in->committing += n;
    pthread_mutex_unlock(&in->mu);
    b->n = b->taken = n;
    sync_stage(in, b);
  }
  return NULL;
}

static int installer_start(installer *in) {
  memset(in, 0, sizeof *in);
  pthread_mutex_init(&in->mu, NULL);
  pthread_cond_init(&in->cv, NULL);
  pthread_cond_init(&in->wcv, NULL);
  pthread_cond_init(&in->ccv, NULL);
  pthread_cond_init(&in->lcv, NULL);
  /* An unnamed partial holds an fd until it is linked: as many as the fd
   * limit leaves room for, past a reserve (sockets, directories, the
   * large files' partials). */
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    rlim_t room = rl.rlim_cur > 512 ? rl.rlim_cur - 512 : 0;
    in->anon_max = room < INSTALL_INFLIGHT ? (int)room : INSTALL_INFLIGHT;
  }
  if (pthread_create(&in->linker, NULL, linker_main, in) != 0) return BR_ENOMEM;
  in->has_linker = 1;
  if (pthread_create(&in->committer, NULL, committer_main, in) != 0) return BR_ENOMEM;
  in->has_committer = 1;
  for (int i = 0; i < WRITERS; i++)
    if (pthread_create(&in->th[in->nth], NULL, writer_main, in) == 0) in->nth++;
  return in->nth ? BR_OK : BR_ENOMEM;
}

/* Waits until every queued install finished; its first error, if any. */
static int installer_drain(installer *in, br_error *err) {
  pthread_mutex_lock(&in->mu);
  in->draining = true;
  pthread_cond_signal(&in->ccv);
  while (in->queued || in->busy || in->ready || in->committing)
    pthread_cond_wait(&in->cv, &in->mu);
  in->draining = false;
  int rc = in->rc;
  if (rc && err) *err = in->err;
  pthread_mutex_unlock(&in->mu);
  return rc;
}

/* After a drain: the last renames made durable (one syncfs per file
 * system renamed into). 0 or an errno. */
static int installer_sync(installer *in) {
  int e = 0;
  for (int k = 0; k < in->ndev; k++) {
    if (syncfs(in->devfd[k]) != 0 && !e) e = errno;
    close(in->devfd[k]);
  }
  in->ndev = 0;
  return e;
}

static void installer_stop(installer *in) {
  if (!in->nth && !in->has_committer && !in->has_linker) return;
  if (in->nth) installer_drain(in, NULL);
  pthread_mutex_lock(&in->mu);
  in->stop = 1;
  pthread_cond_broadcast(&in->wcv);
  pthread_mutex_unlock(&in->mu);
  for (int i = 0; i < in->nth; i++) pthread_join(in->th[i], NULL);
  in->nth = 0;
  pthread_mutex_lock(&in->mu);
  in->cstop = 1;
  pthread_cond_signal(&in->ccv);
  pthread_mutex_unlock(&in->mu);
  if (in->has_committer) pthread_join(in->committer, NULL);
  in->has_committer = 0;
  pthread_mutex_lock(&in->mu);
  in->lstop = 1; /* after the committer: it hands the linker its last batch */
  pthread_cond_signal(&in->lcv);
  pthread_mutex_unlock(&in->mu);
  if (in->has_linker) pthread_join(in->linker, NULL);
  in->has_linker = 0;
  while (in->spare) {
    void *next = *(void **)in->spare;
    free(in->spare);
    in->spare = next;
  }
  for (int k = 0; k < in->ndev; k++) close(in->devfd[k]);
  in->ndev = 0;
  pthread_mutex_destroy(&in->mu);
  pthread_cond_destroy(&in->cv);
  pthread_cond_destroy(&in->wcv);
  pthread_cond_destroy(&in->ccv);
  pthread_cond_destroy(&in->lcv);
}

static size_t refetch_corrupt(pull *p);

/* Engine tick: progress from the installers, their errors, and the files
 * they found corrupt. */
static void installer_tick(br_xfer__engine *e, void *ud) {
  pull *p = ud;
  pthread_mutex_lock(&p->inst.mu);
  e->prog.files_done = p->files_skipped + p->inst.done;
  int rc = p->inst.rc;
  br_error err = p->inst.err;
  bool again = p->inst.refetch != NULL;
  pthread_mutex_unlock(&p->inst.mu);
  if (rc) br_xfer__engine_fail(e, &err);
  else if (again) refetch_corrupt(p);
}

/* Queues n jobs (a list from first to last) for the installers; waits
 * while the queue is full (it is bounded in jobs and in bytes held). */
static void enqueue_list(pull *p, install_job *first, install_job *last, size_t n, int64_t bytes) {
  installer *in = &p->inst;
  pthread_mutex_lock(&in->mu);
  while ((size_t)in->queued + (size_t)in->busy + in->nready + in->committing + n > INSTALL_INFLIGHT ||
         (in->queued && in->queued_bytes + bytes > INSTALL_QUEUE_BYTES))
    pthread_cond_wait(&in->cv, &in->mu);
  last->next = NULL;
  if (in->tail) in->tail->next = first;
  else in->head = first;
  in->tail = last;
  in->queued += (int)n;
  in->queued_bytes += bytes;
  if (n == 1) pthread_cond_signal(&in->wcv); /* one job: one writer */
  else pthread_cond_broadcast(&in->wcv);
  pthread_mutex_unlock(&in->mu);
}

/* The small files of a bundle go to the installers a few at a time: one
 * lock and one wake-up for the group, not for every file. */
#define STAGE_MAX 32

static void flush_stage(pull *p) {
  if (!p->nstage) return;
  enqueue_list(p, p->stage, p->stage_tail, p->nstage, p->stage_bytes);
  p->stage = p->stage_tail = NULL;
  p->nstage = 0;
  p->stage_bytes = 0;
}

static void stage_job(pull *p, install_job *j) {
  j->next = NULL;
  if (p->stage_tail) p->stage_tail->next = j;
  else p->stage = j;
  p->stage_tail = j;
  p->nstage++;
  p->stage_bytes += (int64_t)j->len;
  if (p->nstage >= STAGE_MAX) flush_stage(p);
}

static void enqueue(pull *p, install_job *j) {
  flush_stage(p);
  enqueue_list(p, j, j, 1, (int64_t)j->len);
}

static install_job *new_job(pull *p, lfile *lf, pdir *dir, const char *pn, const char *base,
                            br_error *err) {
  install_job *j = calloc(1, sizeof *j);
  if (!j) {
    br_error_set(err, BR_ENOMEM, "out of memory");
    return NULL;
  }
  j->p = p;
  j->lf = lf;
  j->fd = -1;
  j->base = strdup(base);
  snprintf(j->pn, sizeof j->pn, "%s", pn);
  if (!j->base) {
    free(j);
    fail_io(err, "install", lf->job, lf->e->path, ENOMEM);
    return NULL;
  }
  atomic_fetch_add(&dir->refs, 1);
  j->dir = dir;
  j->dirfd = dir->fd;
  return j;
}

/* A job whose directory is known by a plain fd (the caller's). */
static install_job *new_job_at(pull *p, lfile *lf, int dirfd, const char *pn, const char *base,
                               br_error *err) {
  pdir *d = pdir_new(dup(dirfd));
  if (!d) {
    fail_io(err, "install", lf->job, lf->e->path, errno);
    return NULL;
  }
  install_job *j = new_job(p, lf, d, pn, base, err);
  pdir_release(d);
  return j;
}

/* Sets mode and mtime, starts write-back, and hands the partial to an
 * installer that syncs it and renames it over the final name. dirfd and fd
 * stay the caller's. */
static int install(pull *p, lfile *lf, int dirfd, int fd, const char *pn, const char *base,
                   br_error *err) {
  const br_xfer_entry *e = lf->e;
  if (fchmod(fd, e->mode & 0777) != 0) return fail_io(err, "chmod", lf->job, e->path, errno);
  set_times(fd, e);
  sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
  install_job *j = new_job_at(p, lf, dirfd, pn, base, err);
  if (!j) return err->code ? err->code : BR_EIO;
  j->fd = dup(fd);
  if (j->fd < 0) {
    int e2 = errno;
    job_free(j);
    return fail_io(err, "install", lf->job, e->path, e2);
  }
  lf->done = true;
  enqueue(p, j);
  return BR_OK;
}

/* All chunks are in the partial: verify the whole file and install it. */
static int finalize(pull *p, lfile *lf, br_error *err) {
  const br_xfer_entry *e = lf->e;
  /* The file's last pieces may still be with the writers (the padded last
   * one grows the file until its writer cuts it back): wait for them
   * before the size is set and checked. */
  installer *in = &p->inst;
  pthread_mutex_lock(&in->mu);
  while (atomic_load(&lf->inflight) > 0) pthread_cond_wait(&in->cv, &in->mu);
  pthread_mutex_unlock(&in->mu);
  const char *base;
  int dirfd = br_xfer__open_parent(lf->job->rootfd, lf->job->dir, e->path, true, &base, err);
  if (dirfd < 0) return dirfd;
  char pn[64];
  br_xfer__partial_name(base, pn, sizeof pn);
  int fd = lf->fd;
  lf->fd = -1;
  if (fd < 0) fd = openat(dirfd, pn, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
  int rc = BR_OK;
  /* Every chunk was verified on its way in (or read back on a resume), and
   * the manifest's file digest was checked against the chunk list: the whole
   * file is verified once its length is right. */
  for (size_t c = 0; c < e->nchunks; c++)
    if (!lf->ok[c]) rc = br_error_set(err, BR_ESTATE, "%s: chunk %zu missing", e->path, c);
  struct stat st;
  if (rc == BR_OK && (fd < 0 || ftruncate(fd, e->size) != 0 || fstat(fd, &st) != 0))
    rc = fail_io(err, "write", lf->job, e->path, errno);
  else if (rc == BR_OK && st.st_size != e->size)
    rc = br_error_set(err, BR_EIO, "%s: partial has %lld bytes, expected %lld", e->path,
                      (long long)st.st_size, (long long)e->size);
  if (rc == BR_OK) rc = install(p, lf, dirfd, fd, pn, base, err);
  if (fd >= 0) close(fd);
  close(dirfd);
  return rc;
}

static int cmp_name(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static int64_t chunk_len(const br_xfer_entry *e, size_t c, int64_t cs) {
  int64_t off = (int64_t)c * cs;
  return e->size - off < cs ? e->size - off : cs;
}

/* True when the regular file name (under dirfd) holds e's content: the hash
 * cache answers for a known identity, otherwise the file is hashed. */
static bool file_matches(pull *p, int dirfd, const char *name, const br_xfer_entry *e,
                         int64_t cs) {
  struct stat st;
  if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode) ||
      st.st_size != e->size)
    return false;
  br_xfer_digest d, *cs_ = NULL;
  size_t n = 0;
  int have = br_xfer__hcache_get(p->hc, &st, cs, &d, &cs_, &n);
  if (!have) {
    int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0) {
      have = br_xfer__hash_fd(fd, e->size, cs, &d, &cs_, &n, NULL) == BR_OK;
      if (have) br_xfer__hcache_put(p->hc, &st, cs, &d, cs_, n);
      close(fd);
    }
  }
  free(cs_);
  return have && br_xfer__digest_cmp(&d, &e->digest) == 0;
}

/* The content cache's path for a file digest (malloc'd), its directory made. */
static char *content_path(const char *cache, const br_xfer_digest *d, bool mkdir_) {
  char hex[BR_XFER_HEX_LEN + 1], *path = NULL;
  br_xfer_digest_hex(d, hex);
  if (mkdir_) {
    char *dir = NULL;
    if (asprintf(&dir, "%s/%.2s", cache, hex) < 0) return NULL;
    br_xfer__mkdirs(dir, NULL);
    free(dir);
  }
  if (asprintf(&path, "%s/%.2s/%s", cache, hex, hex) < 0) return NULL;
  return path;
}

/* Copies the file at src into a new file name under dirfd (other file system). */
/* Whether a file's mode is e's, its mtime, both. */
static bool mode_matches(const struct stat *st, const br_xfer_entry *e) {
  return (st->st_mode & 07777) == (mode_t)(e->mode & 0777);
}

static bool time_matches(const struct stat *st, const br_xfer_entry *e) {
  struct timespec ts[2];
  entry_times(e, ts);
  return st->st_mtim.tv_sec == ts[1].tv_sec && st->st_mtim.tv_nsec == ts[1].tv_nsec;
}

static bool meta_matches(const struct stat *st, const br_xfer_entry *e) {
  return mode_matches(st, e) && time_matches(st, e);
}

static int copy_into(int sdirfd, const char *src, int dirfd, const char *name) {
  int in = openat(sdirfd, src, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (in < 0) return -1;
  int out = openat(dirfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
  int rc = out < 0 ? -1 : 0;
  /* in the kernel (a clone where the file system shares extents); where
   * it is not supported (EXDEV, EINVAL...), by hand from the start */
  ssize_t k = -1;
  if (rc == 0) {
    do k = copy_file_range(in, NULL, out, NULL, (size_t)1 << 30, 0);
    while (k > 0 || (k < 0 && errno == EINTR));
  }
  if (k == 0) {
    close(in);
    close(out);
    return 0;
  }
  if (rc == 0 && (lseek(in, 0, SEEK_SET) < 0 || ftruncate(out, 0) != 0 ||
                  lseek(out, 0, SEEK_SET) < 0))
    rc = -1;
  char buf[65536];
  while (rc == 0) {
    ssize_t n = read(in, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      rc = n < 0 ? -1 : 0;
      break;
    }
    if (write(out, buf, (size_t)n) != n) rc = -1;
  }
  close(in);
  if (out >= 0) close(out);
  return rc;
}

/* Takes the file from the content cache if it is there: 1 installed, 0 not. */
static int from_content_cache(pull *p, lfile *lf, int dirfd, const char *pn, const char *base,
                              br_error *err) {
  const br_xfer_entry *e = lf->e;
  char *cp = content_path(p->o->content_cache, &e->digest, false);
  int rc = 0;
  struct stat st;
  if (cp && file_matches(p, AT_FDCWD, cp, e, lf->job->m->chunk_size) && stat(cp, &st) == 0) {
    unlinkat(dirfd, pn, 0);
    /* a link shares the inode, its mode and its time: only when both are
     * this file's already, or setting them would change every other link's
     * (the cache's and other checkouts'); else a copy */
    if ((meta_matches(&st, e) && linkat(AT_FDCWD, cp, dirfd, pn, 0) == 0) ||
        copy_into(AT_FDCWD, cp, dirfd, pn) == 0) {
      int fd = openat(dirfd, pn, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
      if (fd >= 0) {
        rc = install(p, lf, dirfd, fd, pn, base, err);
        close(fd);
        if (rc == BR_OK) {
          rc = 1;
          p->res->files_reused++;
          p->res->chunks_skipped += (int64_t)e->nchunks;
          p->eng.prog.bytes_done += e->size;
        }
      }
    }
  }
  free(cp);
  return rc;
}

/* The names in one destination directory, read once: most files of a
 * fresh pull are neither there nor partial there, and then need no stat. */
typedef struct dirlist {
  ljob *job;
  char *rel; /* the directory, relative to the job's root ("" for it) */
  char **names; /* sorted */
  size_t n;
  bool known;   /* the listing worked */
} dirlist;

static void dirlist_clear(dirlist *dl) {
  for (size_t i = 0; i < dl->n; i++) free(dl->names[i]);
  free(dl->names);
  free(dl->rel);
  memset(dl, 0, sizeof *dl);
}

/* Lists the directory of e's path (made when missing); false when the
 * listing is not available (then every name must be looked at). */
static bool dirlist_for(dirlist *dl, ljob *j, const char *path) {
  const char *slash = strrchr(path, '/');
  size_t len = slash ? (size_t)(slash - path) : 0;
  if (dl->job == j && dl->rel && strlen(dl->rel) == len && strncmp(dl->rel, path, len) == 0)
    return dl->known;
  dirlist_clear(dl);
  dl->job = j;
  dl->rel = strndup(path, len);
  const char *base;
  int fd = dl->rel ? br_xfer__open_parent(j->rootfd, j->dir, path, true, &base, NULL) : -1;
  DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
  if (!d) {
    if (fd >= 0) close(fd);
    return false;
  }
  /* the root's fd is a dup of the job's, whose offset it shares: an
   * earlier listing of the root left it at the end */
  rewinddir(d);
  size_t cap = 0;
  struct dirent *de;
  dl->known = true;
  while ((de = readdir(d))) {
    if (dl->n == cap) {
      cap = cap ? cap * 2 : 256;
      char **g = realloc(dl->names, cap * sizeof *g);
      if (!g) {
        dl->known = false;
        break;
      }
      dl->names = g;
    }
    if (!(dl->names[dl->n] = strdup(de->d_name))) {
      dl->known = false;
      break;
    }
    dl->n++;
  }
  closedir(d);
  if (dl->n) qsort(dl->names, dl->n, sizeof *dl->names, cmp_name);
  return dl->known;
}

static bool dirlist_has(const dirlist *dl, const char *name) {
  return dl->n && bsearch(&name, dl->names, dl->n, sizeof *dl->names, cmp_name) != NULL;
}

/* Looks at what is on disk: the final file (skip it when its digest is
 * right) and a partial from an earlier attempt (keep its verified chunks). */
/* A file whose content is already the snapshot's gets its mode and mtime
 * too: pulling a version over a checkout of another leaves the version's
 * metadata, as a fresh pull would. A file linked from the content cache
 * (more than one link) whose mode or time differs is not changed in place,
 * which would change the cache's and every other checkout's: it is
 * replaced by a copy (1). */
static int fix_meta(pull *p, lfile *lf, int dirfd, const char *base, br_error *err) {
  const br_xfer_entry *e = lf->e;
  struct stat st;
  if (fstatat(dirfd, base, &st, AT_SYMLINK_NOFOLLOW) != 0)
    return fail_io(err, "stat", lf->job, e->path, errno);
  if (meta_matches(&st, e)) return BR_OK;
  if (st.st_nlink > 1 && p->o->content_cache) {
    char pn[64];
    br_xfer__partial_name(base, pn, sizeof pn);
    unlinkat(dirfd, pn, 0);
    if (copy_into(dirfd, base, dirfd, pn) != 0)
      return fail_io(err, "copy", lf->job, e->path, errno);
    int fd = openat(dirfd, pn, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return fail_io(err, "copy", lf->job, e->path, errno);
    int rc = install(p, lf, dirfd, fd, pn, base, err);
    close(fd);
    return rc ? rc : 1;
  }
  mode_t mode = (mode_t)(e->mode & 0777);
  if (!mode_matches(&st, e) && fchmodat(dirfd, base, mode, AT_SYMLINK_NOFOLLOW) != 0 &&
      (errno == EOPNOTSUPP || fchmodat(dirfd, base, mode, 0) != 0))
    return fail_io(err, "chmod", lf->job, e->path, errno);
  struct timespec ts[2];
  entry_times(e, ts);
  if (!time_matches(&st, e) && utimensat(dirfd, base, ts, AT_SYMLINK_NOFOLLOW) != 0)
    return fail_io(err, "set the time of", lf->job, e->path, errno);
  return BR_OK;
}

static int prepare_file(pull *p, lfile *lf, dirlist *dl, br_error *err) {
  const br_xfer_entry *e = lf->e;
  int64_t cs = lf->job->m->chunk_size;
  lf->fd = -1;
  lf->ok = calloc(e->nchunks ? e->nchunks : 1, sizeof *lf->ok);
  if (!lf->ok) return br_error_set(err, BR_ENOMEM, "out of memory");
  lf->left = e->nchunks;
  if (e->size > 0 && !p->o->content_cache && dirlist_for(dl, lf->job, e->path)) {
    /* neither the file nor a partial of it: nothing to look at */
    const char *slash = strrchr(e->path, '/');
    const char *name = slash ? slash + 1 : e->path;
    char pname[64];
    br_xfer__partial_name(name, pname, sizeof pname);
    if (!dirlist_has(dl, name) && !dirlist_has(dl, pname)) {
      lf->fresh = true;
      return BR_OK;
    }
  }
  const char *base;
  int dirfd = br_xfer__open_parent(lf->job->rootfd, lf->job->dir, e->path, true, &base, err);
  if (dirfd < 0) return dirfd;
  int rc = BR_OK;
  struct stat st;
  if (fstatat(dirfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode)) {
    close(dirfd);
    return br_error_set(err, BR_EINVAL, "%s/%s exists and is a directory", lf->job->dir,
                        e->path);
  }
  if (file_matches(p, dirfd, base, e, cs)) {
    if ((rc = fix_meta(p, lf, dirfd, base, err)) < 0) {
      close(dirfd);
      return rc;
    }
    p->res->chunks_skipped += (int64_t)e->nchunks;
    p->eng.prog.bytes_done += e->size;
    lf->done = true;
    p->files_skipped++;
    close(dirfd);
    return BR_OK;
  }
  char pn[64];
  br_xfer__partial_name(base, pn, sizeof pn);
  if (e->size == 0) {
    int fd = openat(dirfd, pn, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) rc = fail_io(err, "create", lf->job, e->path, errno);
    else rc = install(p, lf, dirfd, fd, pn, base, err);
    if (fd >= 0) close(fd);
    close(dirfd);
    return rc;
  }
  if (p->o->content_cache && (rc = from_content_cache(p, lf, dirfd, pn, base, err)) != 0) {
    close(dirfd);
    return rc < 0 ? rc : BR_OK;
  }
  int fd = openat(dirfd, pn, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
    uint8_t *buf = malloc((size_t)cs);
    for (size_t c = 0; buf && c < e->nchunks; c++) {
      int64_t len = chunk_len(e, c, cs), off = (int64_t)c * cs;
      if (off + len > st.st_size) break;
      br_xfer_digest d;
      if (br_xfer__pread_all(fd, buf, (size_t)len, off)) break;
      br_xfer_sha256(buf, (size_t)len, &d);
      if (br_xfer__digest_cmp(&d, &e->chunks[c]) == 0) {
        lf->ok[c] = true;
        lf->left--;
        p->res->chunks_skipped++;
        p->eng.prog.bytes_done += len;
      }
    }
    free(buf);
  }
  if (fd >= 0) close(fd);
  close(dirfd);
  if (lf->left == 0) rc = finalize(p, lf, err);
  return rc;
}

/* ---- bundles of small files ---- */

static int bundle_build(br_xfer__req *r, br_xfer__buf *body, br_error *err) {
  fetch *f = r->ctx;
  char hex[BR_XFER_HEX_LEN + 1];
  f->nsent = 0;
  br_xfer__buf_append(body, "{\"chunks\":[", 11);
  for (size_t i = 0; i < f->nfiles; i++) {
    if (f->files[i]->done) continue; /* written in an earlier attempt */
    br_xfer_digest_hex(&f->files[i]->e->chunks[0], hex);
    if (f->nsent) br_xfer__buf_append(body, ",", 1);
    br_xfer__buf_append(body, "\"", 1);
    br_xfer__buf_append(body, hex, BR_XFER_HEX_LEN);
    br_xfer__buf_append(body, "\"", 1);
    f->sent[f->nsent++] = f->files[i];
  }
  const char *tail = f->p->o->compress ? "],\"zstd\":true}" : "]}";
  if (br_xfer__buf_append(body, tail, strlen(tail)))
    return br_error_set(err, BR_ENOMEM, "out of memory");
  return BR_OK;
}

/* Hands a small file's verified bytes to an installer, which writes the
 * partial, syncs and renames it: the loop thread never waits on creating
 * files. The bytes stay in the bundle's blob, or are copied when they were
 * decompressed into the iterator's scratch. */
static int write_small(pull *p, lfile *lf, pdir *dir, const char *base, const uint8_t *data,
                       size_t len, blob *b, bool copy, br_error *err) {
  char pn[64];
  br_xfer__partial_name(base, pn, sizeof pn);
  install_job *j = new_job(p, lf, dir, pn, base, err);
  if (!j) return err->code ? err->code : BR_EIO;
  j->len = len;
  j->verify = true;
  j->anon = lf->fresh && anon_begin(&p->inst, p);
  if (copy) {
    j->owned = malloc(len ? len : 1);
    if (!j->owned) {
      job_free(j);
      return br_error_set(err, BR_ENOMEM, "out of memory");
    }
    memcpy(j->owned, data, len);
    j->data = j->owned;
  } else {
    atomic_fetch_add(&b->refs, 1);
    j->blob = b;
    j->data = data;
  }
  lf->done = true;
  stage_job(p, j);
  return BR_OK;
}

/* Installs every complete, verified entry of a (possibly cut) bundle. */
static int bundle_take(br_xfer__req *r, br_error *err) {
  fetch *f = r->ctx;
  pull *p = f->p;
  br_xfer__bundle_iter it;
  int rc = br_xfer__bundle_open(&it, r->resp.data, r->resp.len, err);
  if (rc) return BR_XFER__RETRY;
  /* The body becomes a blob the install jobs share; the request lets go. */
  blob *b = malloc(sizeof *b);
  if (!b) return br_error_set(err, BR_ENOMEM, "out of memory");
  atomic_init(&b->refs, 1);
  b->data = r->resp.data;
  b->cap = r->resp.cap;
  const uint8_t *body = r->resp.data, *body_end = r->resp.data + r->resp.len;
  memset(&r->resp, 0, sizeof r->resp);
  pdir *dir = NULL;
  char dirpath[4200] = "";
  size_t i = 0;
  int n = 0;
  br_xfer_digest d;
  const uint8_t *data;
  size_t len;
  while (i < f->nsent && (n = br_xfer__bundle_next(&it, &d, &data, &len, err)) == 1) {
    lfile *lf = f->sent[i++];
    const br_xfer_entry *e = lf->e;
    /* The entry is the one asked for; its bytes are verified by the
     * writer (write_job), off this thread. */
    if (br_xfer__digest_cmp(&d, &e->chunks[0]) != 0 || (int64_t)len != e->size) {
      br_error_set(err, BR_ENET, "bundle entry for %s is not the one asked for", e->path);
      n = -1;
      break;
    }
    if (lf->done) continue;
    /* Entries come in path order: keep the directory open while it lasts. */
    const char *slash = strrchr(e->path, '/');
    size_t dl = slash ? (size_t)(slash - e->path) : 0;
    if (!dir || strlen(dirpath) != dl || strncmp(dirpath, e->path, dl) != 0) {
      pdir_release(dir);
      dir = NULL;
      const char *base;
      int dirfd =
          br_xfer__open_parent(lf->job->rootfd, lf->job->dir, e->path, true, &base, err);
      if (dirfd < 0) {
        rc = dirfd;
        break;
      }
      if (!(dir = pdir_new(dirfd))) {
        rc = fail_io(err, "open the folder of", lf->job, e->path, errno);
        break;
      }
      snprintf(dirpath, sizeof dirpath, "%.*s", (int)dl, e->path);
    }
    uintptr_t at = (uintptr_t)data;
    bool in_body = at >= (uintptr_t)body && at + len <= (uintptr_t)body_end;
    rc = write_small(p, lf, dir, slash ? slash + 1 : e->path, data, len, b, !in_body, err);
    if (rc) break;
    lf->left = 0;
    p->res->chunks_moved++;
    p->eng.prog.bytes_done += e->size;
  }
  flush_stage(p);
  pdir_release(dir);
  br_xfer__bundle_close(&it);
  blob_release(b);
  if (rc < 0) return rc;
  if (n < 0 || i < f->nsent) {
    if (!err->msg[0]) br_error_set(err, BR_ENET, "bundle ended early");
    return BR_XFER__RETRY;
  }
  return BR_OK;
}

static void bundle_salvage(br_xfer__req *r) {
  br_error err;
  br_error_clear(&err);
  int rc = bundle_take(r, &err);
  if (rc < 0) br_xfer__engine_fail(r->eng, &err);
}

/* ---- chunks of large files ---- */

/* A chunk streams straight into the partial at its offset while its digest
 * is computed: no chunk-sized buffer, one pass. Bytes that fail verification
 * stay unmarked in the partial and are fetched again. */
static void chunk_restart(br_xfer__req *r) {
  fetch *f = r->ctx;
  lfile *lf = f->files[0];
  EVP_DigestInit_ex(f->md, br_xfer__sha256_md(), NULL);
  f->dlen = 0;
  f->doff = (int64_t)f->chunk * lf->job->m->chunk_size;
  /* Bytes of an earlier attempt may still be with the writers: they must
   * land before this attempt's bytes at the same offsets. */
  installer *in = &f->p->inst;
  pthread_mutex_lock(&in->mu);
  while (atomic_load(&lf->inflight) > 0) pthread_cond_wait(&in->cv, &in->mu);
  pthread_mutex_unlock(&in->mu);
  f->pieces = 0; /* every piece of the earlier attempt is written and hashed */
  atomic_store(&f->hashed, 0);
}

/* Hands what the chunk holds back for direct I/O to a writer as one piece
 * (at the chunk's end padded: only a file's last chunk ends unaligned, and
 * finalize truncates). A pull turned buffered writes it here. */
static int chunk_flush(fetch *f, br_error *err) {
  lfile *lf = f->files[0];
  if (!f->dlen) return 0;
  if (!atomic_load(&lf->direct)) { /* turned buffered: written and hashed here */
    wait_hashed(f);
    EVP_DigestUpdate(f->md, f->dbuf, f->dlen);
    int w = br_xfer__pwrite_all(lf->fd, f->dbuf, f->dlen, f->doff);
    if (w) return fail_io(err, "write", lf->job, lf->e->path, -w);
  } else {
    install_job *j = calloc(1, sizeof *j);
    int fd = j ? dup(lf->fd) : -1;
    if (fd < 0) {
      free(j);
      return fail_io(err, "write", lf->job, lf->e->path, j ? errno : ENOMEM);
    }
    j->p = f->p;
    j->lf = lf;
    j->piece = true;
    j->fd = fd;
    j->dirfd = -1;
    j->owned = f->dbuf; /* the writer frees it */
    j->len = f->dlen;
    j->off = f->doff;
    j->hash_into = f;
    j->seq = f->pieces++;
    f->dbuf = NULL;
    f->dcap = 0;
    atomic_fetch_add(&lf->inflight, 1);
    enqueue(f->p, j);
  }
  f->doff += (int64_t)f->dlen;
  f->dlen = 0;
  return 0;
}

static bool zero_chunk(pull *p, const lfile *lf, size_t c);

/* The partial of lf's file, opened (and reserved) at its first bytes.
 * holes: the file has chunks of zeros (zero_hole, on the pull's own thread,
 * before any of its chunks is fetched): only its other chunks are
 * reserved, so a sparse file needs the room of its data, not its size. */
static int partial_open(pull *p, lfile *lf, bool holes, br_error *err) {
  const br_xfer_entry *e = lf->e;
  int64_t cs = lf->job->m->chunk_size;
  if (lf->fd >= 0) return 0;
  const char *base;
  int dirfd = br_xfer__open_parent(lf->job->rootfd, lf->job->dir, e->path, true, &base, err);
  if (dirfd < 0) return dirfd;
  char pn[64];
  br_xfer__partial_name(base, pn, sizeof pn);
  bool direct = false;
  if (cs % BR_XFER__DIO_ALIGN == 0)
    lf->fd = open_partial(p, dirfd, pn, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600,
                          &direct);
  else
    lf->fd = openat(dirfd, pn, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
  atomic_store(&lf->direct, direct);
  int e2 = errno;
  close(dirfd);
  if (lf->fd < 0) return fail_io(err, "create", lf->job, e->path, e2);
  /* A new (empty) partial is reserved whole at once: chunks land in
   * parallel at scattered offsets, and a full disk shows now rather than
   * midway. Not one left by an earlier pull: its holes are zero chunks
   * verified on the resume (prepare_file reads them back as zeros), and
   * reserving would fill them, the file then whole but no longer sparse. */
  struct stat st;
  if (fstat(lf->fd, &st) != 0 || st.st_size != 0) return 0;
  if (!holes) {
    if (fallocate(lf->fd, 0, 0, e->size) != 0 && (errno == ENOSPC || errno == EDQUOT))
      return fail_io(err, "write", lf->job, e->path, errno);
    return 0;
  }
  if (ftruncate(lf->fd, (off_t)e->size) != 0) return fail_io(err, "write", lf->job, e->path, errno);
  for (size_t c = 0; c < e->nchunks;) {
    if (zero_chunk(p, lf, c)) {
      c++;
      continue;
    }
    size_t end = c + 1; /* a run of chunks of data, reserved at once */
    while (end < e->nchunks && !zero_chunk(p, lf, end)) end++;
    int64_t off = (int64_t)c * cs, len = (int64_t)end * cs < e->size ? (int64_t)(end - c) * cs
                                                                     : e->size - off;
    if (fallocate(lf->fd, 0, off, len) != 0 && (errno == ENOSPC || errno == EDQUOT))
      return fail_io(err, "write", lf->job, e->path, errno);
    c = end;
  }
  return 0;
}

/* len more bytes of f's chunk, at at bytes into it, into the partial. */
static int chunk_write(fetch *f, const uint8_t *data, size_t len, int64_t at, br_error *err) {
  lfile *lf = f->files[0];
  if (partial_open(f->p, lf, false, err)) return -1;
  if (!atomic_load(&lf->direct)) {
    if (f->dlen && chunk_flush(f, err)) return -1; /* it just turned buffered */
    wait_hashed(f); /* the pieces before these bytes */
    EVP_DigestUpdate(f->md, data, len);
    int64_t off = (int64_t)f->chunk * lf->job->m->chunk_size + at;
    int w = br_xfer__pwrite_all(lf->fd, data, len, off);
    return w ? fail_io(err, "write", lf->job, lf->e->path, -w) : 0;
  }
  /* Direct I/O: gathered into aligned pieces, each handed to a writer. */
  while (len) {
    if (!f->dbuf) {
      installer *in = &f->p->inst;
      void *b = NULL;
      pthread_mutex_lock(&in->mu);
      if (in->spare) {
        b = in->spare;
        in->spare = *(void **)b;
        in->nspare--;
      }
      pthread_mutex_unlock(&in->mu);
      if (!b && posix_memalign(&b, BR_XFER__DIO_ALIGN, DIRECT_PIECE) != 0)
        return br_error_set(err, BR_ENOMEM, "out of memory");
      f->dbuf = b;
      f->dcap = DIRECT_PIECE;
    }
    size_t take = f->dcap - f->dlen < len ? f->dcap - f->dlen : len;
    memcpy(f->dbuf + f->dlen, data, take);
    f->dlen += take;
    data += take;
    len -= take;
    if (f->dlen == f->dcap && chunk_flush(f, err)) return -1;
  }
  return 0;
}

static int chunk_sink(br_xfer__req *r, const uint8_t *data, size_t len) {
  return chunk_write(r->ctx, data, len, r->received, &r->sink_err);
}

/* A chunk that came as a zstd frame (r->resp): inflated into the partial
 * as a streamed one is written. The frame must give exactly len bytes;
 * their digest is checked after, as for any chunk. */
static int chunk_inflate(br_xfer__req *r, int64_t len, br_error *err) {
  fetch *f = r->ctx;
  size_t cap;
  uint8_t *raw = br_xfer__mem_get((size_t)len ? (size_t)len : 1, &cap);
  if (!raw) return br_error_set(err, BR_ENOMEM, "out of memory");
  int rc = 0;
  if (br_xfer__inflate(r->resp.data, r->resp.len, raw, (size_t)len) != 0) {
    br_error_set(err, BR_ENET, "chunk %zu of %s: its zstd frame does not give its %lld bytes",
                 f->chunk, f->files[0]->e->path, (long long)len);
    rc = BR_XFER__RETRY;
  } else if (chunk_write(f, raw, (size_t)len, 0, err)) {
    rc = err->code ? err->code : BR_EIO;
  }
  br_xfer__mem_put(raw, cap);
  return rc;
}

static int chunk_done(br_xfer__req *r, br_error *err) {
  fetch *f = r->ctx;
  pull *p = f->p;
  lfile *lf = f->files[0];
  const br_xfer_entry *e = lf->e;
  int64_t cs = lf->job->m->chunk_size, len = chunk_len(e, f->chunk, cs);
  br_xfer_digest got;
  if (r->zstd_body) {
    int zrc = chunk_inflate(r, len, err);
    if (zrc) return zrc;
  } else if (r->received != len) {
    br_error_set(err, BR_ENET, "chunk %zu of %s: %lld bytes, expected %lld", f->chunk,
                 e->path, (long long)r->received, (long long)len);
    return BR_XFER__RETRY;
  }
  int frc = chunk_flush(f, err);
  if (frc) return frc;
  wait_hashed(f);
  unsigned int dl = 0;
  EVP_DigestFinal_ex(f->md, got.b, &dl);
  if (br_xfer__digest_cmp(&got, &e->chunks[f->chunk]) != 0) {
    pthread_mutex_lock(&p->inst.mu);
    note_corrupt(&p->inst, lf->job, &e->chunks[f->chunk]);
    pthread_mutex_unlock(&p->inst.mu);
    br_error_set(err, BR_ENET, "chunk %zu of %s failed verification", f->chunk, e->path);
    return BR_XFER__RETRY;
  }
  if (lf->ok[f->chunk]) return BR_OK;
  /* Buffered: start the chunk's write-back now, the final sync has less left. */
  if (!atomic_load(&lf->direct))
    sync_file_range(lf->fd, (int64_t)f->chunk * cs, len, SYNC_FILE_RANGE_WRITE);
  lf->ok[f->chunk] = true;
  lf->left--;
  p->res->chunks_moved++;
  p->eng.prog.bytes_done += len;
  if (lf->left == 0) return finalize(p, lf, err);
  return BR_OK;
}

/* ---- manifests ---- */

static int manifest_done(br_xfer__req *r, br_error *err) {
  fetch *f = r->ctx;
  ljob *j = f->job;
  br_error perr;
  br_error_clear(&perr);
  if (br_xfer_manifest_parse((const char *)r->resp.data, r->resp.len, &j->m, &perr))
    return br_error_set(err, BR_EINVAL, "snapshot %s@v%lld refused: %s", j->ref.name,
                        (long long)r->braid_version, perr.msg);
  j->version = r->braid_version;
  return BR_OK;
}

static br_xfer__req *new_fetch(pull *p, ljob *j, const char *path, size_t nfiles) {
  br_xfer__req *r = br_xfer__req_new(j->ref.base, path);
  fetch *f = calloc(1, sizeof *f);
  if (f) {
    f->files = calloc(nfiles ? nfiles : 1, sizeof *f->files);
    f->sent = calloc(nfiles ? nfiles : 1, sizeof *f->sent);
  }
  if (!r || !f || !f->files || !f->sent) {
    if (f) free(f->files), free(f->sent);
    free(f);
    br_xfer__req_free(r);
    return NULL;
  }
  f->p = p;
  f->job = j;
  r->ctx = f;
  r->destroy = fetch_destroy;
  return r;
}

/* A bundle request for count small files of bytes in all (f->files is
 * the caller's to fill); limit: the bundle size they were cut by. */
static br_xfer__req *new_bundle(pull *p, ljob *jb, size_t count, int64_t bytes, int64_t limit) {
  br_xfer__req *r = new_fetch(p, jb, "/v1/fetch", count);
  if (!r) return NULL;
  r->post = true;
  r->content_type = "application/json";
  r->build = bundle_build;
  r->done = bundle_take;
  r->salvage = bundle_salvage;
  r->resp_limit = (size_t)(bytes > limit ? bytes : limit) + 64 * count + 1024 * 1024;
  r->resp_hint = (size_t)bytes + 48 * count + 64;
  return r;
}

/* On the loop thread: the small files the writers found corrupt are
 * fetched again, each in a bundle of its own. Returns how many. */
static size_t refetch_corrupt(pull *p) {
  installer *in = &p->inst;
  pthread_mutex_lock(&in->mu);
  lfile *list = in->refetch;
  in->refetch = NULL;
  pthread_mutex_unlock(&in->mu);
  size_t n = 0;
  for (lfile *lf = list, *next; lf; lf = next) {
    next = lf->refetch_next;
    lf->done = false;
    p->eng.prog.bytes_done -= lf->e->size;
    p->res->chunks_moved--;
    br_xfer__req *r = new_bundle(p, lf->job, 1, lf->e->size, lf->e->size);
    if (!r) {
      br_error err;
      br_error_set(&err, BR_ENOMEM, "out of memory");
      br_xfer__engine_fail(&p->eng, &err);
      continue;
    }
    fetch *f = r->ctx;
    f->files[f->nfiles++] = lf;
    br_xfer__engine_submit(&p->eng, r);
    n++;
  }
  return n;
}

static int make_symlink(ljob *j, const br_xfer_entry *e, br_error *err) {
  const char *base;
  int dirfd = br_xfer__open_parent(j->rootfd, j->dir, e->path, true, &base, err);
  if (dirfd < 0) return dirfd;
  /* the same link already there: nothing to write (a pull into a folder
   * it may not write finds its links in place) */
  char now[4097];
  ssize_t n = readlinkat(dirfd, base, now, sizeof now - 1);
  if (n >= 0 && (now[n] = 0, strcmp(now, e->target) == 0)) {
    close(dirfd);
    return BR_OK;
  }
  char pn[64];
  br_xfer__partial_name(base, pn, sizeof pn);
  unlinkat(dirfd, pn, 0);
  int rc = BR_OK;
  if (symlinkat(e->target, dirfd, pn) != 0) {
    rc = fail_io(err, "symlink", j, e->path, errno);
  } else if (renameat(dirfd, pn, dirfd, base) != 0) {
    int e2 = errno; /* a folder where the link goes: the link made aside goes too */
    unlinkat(dirfd, pn, 0);
    rc = e2 == EISDIR || e2 == ENOTEMPTY || e2 == EEXIST
             ? br_error_set(err, BR_EINVAL, "%s/%s exists and is a directory", j->dir, e->path)
             : fail_io(err, "symlink", j, e->path, e2);
  } else {
    br__fsync_dirfd(dirfd);
  }
  close(dirfd);
  return rc;
}

/* A file that is a hard link of another (e->same_as, in place by now): the
 * link is made beside its path and renamed over it, unless the path is that
 * link already. A file system without hard links (or an inode with too
 * many) gets a copy, synced before its rename; the final syncfs makes the
 * renames durable. */
static int make_hardlink(ljob *j, const br_xfer_entry *e, br_error *err) {
  const char *base, *lbase;
  int dirfd = br_xfer__open_parent(j->rootfd, j->dir, e->path, true, &base, err);
  if (dirfd < 0) return dirfd;
  int ldirfd = br_xfer__open_parent(j->rootfd, j->dir, e->same_as, false, &lbase, err);
  if (ldirfd < 0) {
    close(dirfd);
    return ldirfd;
  }
  struct stat st, lst;
  char pn[64];
  br_xfer__partial_name(base, pn, sizeof pn);
  int rc = BR_OK, fd = -1;
  if (fstatat(ldirfd, lbase, &lst, AT_SYMLINK_NOFOLLOW) != 0)
    rc = fail_io(err, "hard link to", j, e->same_as, errno);
  else if (!S_ISREG(lst.st_mode))
    rc = br_error_set(err, BR_EINVAL, "%s/%s changed during the pull: it is no longer a file "
                      "(%s is a hard link of it)", j->dir, e->same_as, e->path);
  else if (fstatat(dirfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_dev == lst.st_dev &&
           st.st_ino == lst.st_ino)
    goto out; /* in place */
  else if (unlinkat(dirfd, pn, 0), linkat(ldirfd, lbase, dirfd, pn, 0) == 0)
    rc = BR_OK;
  else if (errno != EPERM && errno != EMLINK && errno != ENOTSUP && errno != EXDEV)
    rc = fail_io(err, "hard link", j, e->path, errno);
  else if (copy_into(ldirfd, lbase, dirfd, pn) != 0 ||
           (fd = openat(dirfd, pn, O_RDWR | O_NOFOLLOW | O_CLOEXEC)) < 0 ||
           fchmod(fd, e->mode & 0777) != 0 || (set_times(fd, e), fsync(fd)) != 0)
    rc = fail_io(err, "copy", j, e->path, errno);
  if (fd >= 0) close(fd);
  if (rc == BR_OK && renameat(dirfd, pn, dirfd, base) != 0) {
    int e2 = errno;
    rc = e2 == EISDIR || e2 == ENOTEMPTY || e2 == EEXIST
             ? br_error_set(err, BR_EINVAL, "%s/%s exists and is a directory", j->dir, e->path)
             : fail_io(err, "hard link", j, e->path, e2);
  }
  if (rc) unlinkat(dirfd, pn, 0);
out:
  close(ldirfd);
  close(dirfd);
  return rc;
}

/* Two pulls into one destination at once would share partial names; the
 * second waits for the first (a lock on the directory, released when the
 * pull closes it, or dies), then finds its files in place. Several jobs of
 * this pull into one directory take the lock once. */
static int lock_destination(pull *p, size_t j, br_error *err) {
  struct stat st, other;
  if (fstat(p->jobs[j].rootfd, &st) != 0) return BR_OK;
  for (size_t k = 0; k < j; k++)
    if (fstat(p->jobs[k].rootfd, &other) == 0 && other.st_dev == st.st_dev &&
        other.st_ino == st.st_ino)
      return BR_OK;
  const char *phase = p->eng.prog.phase;
  while (flock(p->jobs[j].rootfd, LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK && errno != EINTR) return BR_OK; /* no locks here: go on */
    br_xfer__engine_phase(&p->eng, "waiting");
    br_xfer__engine_progress(&p->eng, false);
    if (br_xfer__cancelled(&p->eng)) return br_error_set(err, BR_ECANCEL, "cancelled");
    usleep(50000);
  }
  p->eng.prog.phase = phase;
  return BR_OK;
}

/* ---- chunks a pull needs more than once ----
 * A chunk named twice in the trees being pulled (a cache's runs of zeros,
 * a file that repeats another) is fetched once, and a chunk of a file
 * already in place is not fetched at all: the other places get a copy once
 * the fetches are done, read back from where the chunk landed and checked
 * against its digest (a copy whose source changed meanwhile is fetched
 * after all). A small file whose bytes another has is left out of the
 * bundles and copied the same way (its one chunk is the whole file). */
typedef struct csrc {
  const br_xfer_digest *d; /* NULL: a free slot */
  lfile *lf;
  size_t c;
} csrc;

typedef struct ccopy {
  lfile *src, *dst;
  size_t sc, dc;
} ccopy;

static size_t cmap_home(const pull *p, const br_xfer_digest *d) {
  uint64_t h;
  memcpy(&h, d->b, sizeof h);
  return (size_t)h & (p->cmap_cap - 1);
}

static csrc *cmap_find(pull *p, const br_xfer_digest *d) {
  for (size_t i = p->cmap_cap ? cmap_home(p, d) : 0; p->cmap_cap; i = (i + 1) & (p->cmap_cap - 1))
    if (!p->cmap[i].d) return NULL;
    else if (!br_xfer__digest_cmp(p->cmap[i].d, d)) return &p->cmap[i];
  return NULL;
}

/* Where chunk c of lf is (or will be): 0, or BR_ENOMEM. */
static int cmap_put(pull *p, lfile *lf, size_t c) {
  if (2 * (p->cmap_n + 1) > p->cmap_cap) {
    size_t cap = p->cmap_cap ? 2 * p->cmap_cap : 1024;
    csrc *old = p->cmap, *v = calloc(cap, sizeof *v);
    if (!v) return BR_ENOMEM;
    size_t ocap = p->cmap_cap;
    p->cmap = v;
    p->cmap_cap = cap;
    for (size_t i = 0; i < ocap; i++) {
      if (!old[i].d) continue;
      size_t k = cmap_home(p, old[i].d);
      while (v[k].d) k = (k + 1) & (cap - 1);
      v[k] = old[i];
    }
    free(old);
  }
  const br_xfer_digest *d = &lf->e->chunks[c];
  size_t k = cmap_home(p, d);
  while (p->cmap[k].d) k = (k + 1) & (p->cmap_cap - 1);
  p->cmap[k] = (csrc){d, lf, c};
  p->cmap_n++;
  return BR_OK;
}

/* Chunk c of lf, named before at s: a copy to make. 0, or BR_ENOMEM. */
static int add_copy(pull *p, const csrc *s, lfile *lf, size_t c) {
  if (p->ncopies == p->copies_cap) {
    size_t cap = p->copies_cap ? 2 * p->copies_cap : 64;
    ccopy *v = realloc(p->copies, cap * sizeof *v);
    if (!v) return BR_ENOMEM;
    p->copies = v;
    p->copies_cap = cap;
  }
  p->copies[p->ncopies++] = (ccopy){s->lf, lf, s->c, c};
  return BR_OK;
}

/* A file's final name (in place: done) or its partial, opened with flags. */
static int open_file_or_partial(lfile *lf, bool partial, int flags, br_error *err) {
  const char *base;
  int dirfd = br_xfer__open_parent(lf->job->rootfd, lf->job->dir, lf->e->path, true, &base, err);
  if (dirfd < 0) return -1;
  char pn[64];
  br_xfer__partial_name(base, pn, sizeof pn);
  int fd = openat(dirfd, partial ? pn : base, flags | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) fail_io(err, partial ? "create" : "open", lf->job, lf->e->path, errno);
  close(dirfd);
  return fd;
}

static int submit_chunk(pull *p, ljob *jb, lfile *lf, size_t c, br_error *err);

/* Makes the copies: each read from its source, checked, written into its
 * file's partial; a file then whole is installed. A source that no longer
 * holds the chunk makes it a fetch (in *refetched). */
static int copy_chunks(pull *p, size_t *refetched, br_error *err) {
  *refetched = 0;
  uint8_t *buf = NULL;
  size_t cap = 0;
  int rc = BR_OK;
  for (size_t k = 0; k < p->ncopies && rc == BR_OK; k++) {
    ccopy *cp = &p->copies[k];
    lfile *dst = cp->dst;
    int64_t cs = dst->job->m->chunk_size, len = chunk_len(dst->e, cp->dc, cs);
    int64_t scs = cp->src->job->m->chunk_size;
    if ((size_t)len > cap) {
      free(buf);
      cap = (size_t)len;
      if (!(buf = malloc(cap))) rc = br_error_set(err, BR_ENOMEM, "out of memory");
      if (!buf) break;
    }
    br_error e;
    br_error_clear(&e);
    int in = open_file_or_partial(cp->src, !cp->src->done, O_RDONLY, &e);
    br_xfer_digest got;
    bool ok = in >= 0 && br_xfer__pread_all(in, buf, (size_t)len, (int64_t)cp->sc * scs) == 0;
    if (in >= 0) close(in);
    if (ok) br_xfer_sha256(buf, (size_t)len, &got);
    if (!ok || br_xfer__digest_cmp(&got, &dst->e->chunks[cp->dc]) != 0) {
      (*refetched)++;
      rc = submit_chunk(p, dst->job, dst, cp->dc, err);
      continue;
    }
    int out = open_file_or_partial(dst, true, O_RDWR | O_CREAT, err);
    if (out < 0) {
      rc = err->code ? err->code : BR_EIO;
      break;
    }
    int w = br_xfer__pwrite_all(out, buf, (size_t)len, (int64_t)cp->dc * cs);
    close(out);
    if (w) {
      rc = fail_io(err, "write", dst->job, dst->e->path, -w);
      break;
    }
    dst->ok[cp->dc] = true;
    dst->left--;
    p->res->chunks_skipped++;
    p->eng.prog.bytes_done += len;
  }
  free(buf);
  /* whole now: installed (only now: a file may be the source of a copy) */
  for (size_t k = 0; k < p->ncopies && rc == BR_OK; k++) {
    lfile *dst = p->copies[k].dst;
    if (!dst->done && dst->left == 0) rc = finalize(p, dst, err);
  }
  p->ncopies = 0;
  return rc;
}

/* dir as an absolute path without links, though it need not exist yet:
 * the real path of its longest existing part, then the rest as written.
 * NULL: out of memory. */
static char *canon_dir(const char *dir) {
  char *r = realpath(*dir ? dir : ".", NULL);
  if (r) return r;
  char *copy = strdup(dir), *out = NULL;
  if (!copy) return NULL;
  size_t len = strlen(copy);
  while (len > 1 && copy[len - 1] == '/') copy[--len] = 0;
  char *slash = strrchr(copy, '/');
  const char *base = slash ? slash + 1 : copy;
  if (slash == copy) copy[1] = 0;
  else if (slash) *slash = 0;
  char *parent = canon_dir(slash ? copy : ".");
  if (parent && asprintf(&out, "%s%s%s", parent, strcmp(parent, "/") ? "/" : "", base) < 0)
    out = NULL;
  free(parent);
  free(copy);
  return out;
}

/* Whether the tree at b lies inside the one at a, or is it. */
static bool nested(const char *a, const char *b) {
  size_t n = strlen(a);
  return strncmp(a, b, n) == 0 && (b[n] == 0 || b[n] == '/' || (n == 1 && a[0] == '/'));
}

typedef struct spot {
  char *path; /* canonical root / entry path */
  size_t j, i;
} spot;

static int spot_cmp(const void *x, const void *y) {
  const spot *a = x, *b = y;
  int c = strcmp(a->path, b->path);
  return c ? c : a->j < b->j ? -1 : a->j > b->j;
}

static bool same_content(const ljob *ja, const br_xfer_entry *a, const ljob *jb,
                         const br_xfer_entry *b) {
  if (a->type != b->type) return false;
  if (a->type == BR_XFER_DIR) return true;
  if (a->type == BR_XFER_SYMLINK) return strcmp(a->target, b->target) == 0;
  return a->size == b->size && ja->m->chunk_size == jb->m->chunk_size &&
         memcmp(&a->digest, &b->digest, sizeof a->digest) == 0;
}

/* Snapshots pulled into one tree (the pull node's layout merge, or two
 * DEST arguments that are one folder or one inside the other) may name
 * the same path. The same content there is written once, by the first
 * snapshot that names it (with its mode and time); anything else refuses
 * the pull before a byte is written: one file would be installed over the
 * other, or half of each put together in a partial they share. */
static int check_overlaps(pull *p, br_error *err) {
  if (p->njobs < 2) return BR_OK;
  char **roots = calloc(p->njobs, sizeof *roots);
  if (!roots) return br_error_set(err, BR_ENOMEM, "out of memory");
  int rc = BR_OK;
  bool any = false;
  size_t total = 0;
  for (size_t j = 0; j < p->njobs && !rc; j++) {
    if (!(roots[j] = canon_dir(p->jobs[j].dir))) rc = br_error_set(err, BR_ENOMEM, "oom");
    for (size_t k = 0; k < j && !rc; k++)
      any = any || nested(roots[k], roots[j]) || nested(roots[j], roots[k]);
    total += p->jobs[j].m->nentries;
  }
  spot *sp = !rc && any ? calloc(total ? total : 1, sizeof *sp) : NULL;
  if (!rc && any && !sp) rc = br_error_set(err, BR_ENOMEM, "out of memory");
  size_t n = 0;
  for (size_t j = 0; sp && j < p->njobs && !rc; j++) {
    ljob *jb = &p->jobs[j];
    if (!(jb->dup = calloc(jb->m->nentries ? jb->m->nentries : 1, sizeof *jb->dup)))
      rc = br_error_set(err, BR_ENOMEM, "out of memory");
    for (size_t i = 0; i < jb->m->nentries && !rc; i++, n++) {
      sp[n] = (spot){NULL, j, i};
      if (asprintf(&sp[n].path, "%s%s%s", roots[j], strcmp(roots[j], "/") ? "/" : "",
                   jb->m->entries[i].path) < 0) {
        sp[n].path = NULL;
        rc = br_error_set(err, BR_ENOMEM, "out of memory");
      }
    }
  }
  if (!rc && sp) qsort(sp, n, sizeof *sp, spot_cmp);
  for (size_t k = 1, first = 0; !rc && sp && k < n; k++) {
    if (strcmp(sp[k].path, sp[first].path) != 0) {
      first = k;
      continue;
    }
    ljob *ja = &p->jobs[sp[first].j], *jb = &p->jobs[sp[k].j];
    const br_xfer_entry *a = &ja->m->entries[sp[first].i], *b = &jb->m->entries[sp[k].i];
    if (same_content(ja, a, jb, b)) {
      jb->dup[sp[k].i] = true;
      continue;
    }
    static const char *const kind[] = {[BR_XFER_FILE] = "a file", [BR_XFER_SYMLINK] = "a link",
                                       [BR_XFER_DIR] = "a folder"};
    char how[64];
    if (a->type == b->type) snprintf(how, sizeof how, "other contents");
    else snprintf(how, sizeof how, "%s and %s", kind[a->type], kind[b->type]);
    rc = br_error_set(err, BR_EINVAL,
                      "%s@v%lld has %s and %s@v%lld has %s, both for %s, as %s: pull them "
                      "into different folders",
                      ja->ref.name, (long long)ja->version, a->path, jb->ref.name,
                      (long long)jb->version, b->path, sp[k].path, how);
  }
  for (size_t k = 0; sp && k < n; k++) free(sp[k].path);
  free(sp);
  for (size_t j = 0; j < p->njobs; j++) free(roots[j]);
  free(roots);
  return rc;
}

/* A folder of the snapshot, made where it is missing. */
static int make_dir(ljob *jb, const br_xfer_entry *e, br_error *err) {
  const char *base;
  int fd = br_xfer__open_parent(jb->rootfd, jb->dir, e->path, true, &base, err);
  if (fd < 0) return fd;
  struct stat st;
  int rc = BR_OK;
  if (mkdirat(fd, base, 0755) != 0 && errno != EEXIST)
    rc = fail_io(err, "mkdir", jb, e->path, errno);
  else if (fstatat(fd, base, &st, AT_SYMLINK_NOFOLLOW) != 0)
    rc = fail_io(err, "stat", jb, e->path, errno);
  else if (!S_ISDIR(st.st_mode))
    rc = br_error_set(err, BR_EINVAL, "%s/%s exists and is %s, where the snapshot has a folder",
                      jb->dir, e->path,
                      S_ISLNK(st.st_mode) ? "a symlink (a pull never writes through one)"
                                          : "not a folder");
  /* a read-only folder (an earlier pull gave it the snapshot's 0555) is
   * opened for this pull; dir_meta gives it its mode back at the end */
  else if ((st.st_mode & S_IRWXU) != S_IRWXU &&
           fchmodat(fd, base, (st.st_mode & 07777) | S_IRWXU, 0) != 0)
    rc = fail_io(err, "chmod", jb, e->path, errno);
  close(fd);
  return rc;
}

/* A folder gets the snapshot's mode and mtime once everything in it is in
 * place (each name made there moved its mtime): called deepest first. A
 * set-group-id bit the folder took from its parent is kept. */
static int dir_meta(ljob *jb, const br_xfer_entry *e, br_error *err) {
  const char *base;
  int fd = br_xfer__open_parent(jb->rootfd, jb->dir, e->path, false, &base, err);
  if (fd < 0) return fd;
  struct stat st;
  int rc = BR_OK;
  struct timespec ts[2];
  entry_times(e, ts);
  if (fstatat(fd, base, &st, AT_SYMLINK_NOFOLLOW) != 0)
    rc = fail_io(err, "stat", jb, e->path, errno);
  else if (!S_ISDIR(st.st_mode))
    rc = BR_OK; /* make_dir said what it is, or it changed since: not ours */
  else if ((st.st_mode & 0777) != (e->mode & 0777) &&
           fchmodat(fd, base, (e->mode & 0777) | (st.st_mode & S_ISGID), 0) != 0)
    rc = fail_io(err, "chmod", jb, e->path, errno);
  else if (e->mtime_ns && !time_matches(&st, e) && utimensat(fd, base, ts, AT_SYMLINK_NOFOLLOW))
    rc = fail_io(err, "set the time of", jb, e->path, errno);
  close(fd);
  return rc;
}

/* The digest of len zero bytes (0 < len <= BR_XFER__MAX_CHUNK) into out,
 * from the hash state after the whole ZERO_STEPs below len (those states
 * made as needed, each from the one before). false: out of memory. */
static bool zero_hash(pull *p, int64_t len, br_xfer_digest *out) {
  static const uint8_t z[ZERO_STEP];
  size_t k = (size_t)(len / ZERO_STEP);
  if (k >= p->nzat) {
    EVP_MD_CTX **v = realloc(p->zat, (k + 1) * sizeof *v);
    if (!v) return false;
    p->zat = v;
    while (p->nzat <= k) {
      EVP_MD_CTX *c = EVP_MD_CTX_new();
      bool ok = c && (p->nzat ? EVP_MD_CTX_copy_ex(c, v[p->nzat - 1]) &&
                                    EVP_DigestUpdate(c, z, ZERO_STEP)
                              : EVP_DigestInit_ex(c, br_xfer__sha256_md(), NULL));
      if (!ok) {
        EVP_MD_CTX_free(c);
        return false;
      }
      v[p->nzat++] = c;
    }
  }
  EVP_MD_CTX *c = EVP_MD_CTX_new();
  unsigned int dl = 0;
  bool ok = c && EVP_MD_CTX_copy_ex(c, p->zat[k]) &&
            EVP_DigestUpdate(c, z, (size_t)(len % ZERO_STEP)) && EVP_DigestFinal_ex(c, out->b, &dl);
  EVP_MD_CTX_free(c);
  return ok;
}

/* The digest of len zero bytes, kept: the chunk size's (asked for every
 * chunk of a large file) apart, other lengths among the few recent ones
 * (frames of one size end alike). NULL: out of memory. */
static const br_xfer_digest *zero_digest(pull *p, int64_t len, bool full) {
  zlen *slot = &p->zfull;
  if (!full) {
    for (size_t i = 0; i < ZERO_RECENT; i++)
      if (p->zrecent[i].len == len) return &p->zrecent[i].d;
    slot = &p->zrecent[p->znext];
    p->znext = (p->znext + 1) % ZERO_RECENT;
  } else if (slot->len == len) {
    return &slot->d;
  }
  slot->len = zero_hash(p, len, &slot->d) ? len : 0;
  return slot->len ? &slot->d : NULL;
}

/* Whether chunk c of lf is all zeros, from its digest alone: a chunk of
 * the snapshot's chunk size, or a file's last, shorter one. Asked only of
 * files fetched chunk by chunk (a bundled small file comes as it is). */
static bool zero_chunk(pull *p, const lfile *lf, size_t c) {
  int64_t cs = lf->job->m->chunk_size, len = chunk_len(lf->e, c, cs);
  if (len <= 0 || cs > BR_XFER__MAX_CHUNK) return false;
  const br_xfer_digest *z = zero_digest(p, len, len == cs);
  return z && br_xfer__digest_cmp(z, &lf->e->chunks[c]) == 0;
}

/* Chunk c of lf, all zeros, made a hole in the partial: nothing fetched,
 * nothing written (a sparse file stays sparse). Zeros are written where
 * the file system cannot punch holes: on a direct fd padded to the
 * alignment and cut back, as write_piece does (only a file's last chunk
 * ends unaligned). */
static int zero_hole(pull *p, lfile *lf, size_t c, br_error *err) {
  int rc = partial_open(p, lf, true, err);
  if (rc) return rc;
  int64_t cs = lf->job->m->chunk_size, off = (int64_t)c * cs, len = chunk_len(lf->e, c, cs);
  if (fallocate(lf->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len) != 0) {
    if (errno != EOPNOTSUPP && errno != ENOSYS)
      return fail_io(err, "write", lf->job, lf->e->path, errno);
    size_t cap = ((size_t)len + BR_XFER__DIO_ALIGN - 1) / BR_XFER__DIO_ALIGN * BR_XFER__DIO_ALIGN;
    void *z = NULL; /* aligned: the partial may be open for direct I/O */
    if (posix_memalign(&z, BR_XFER__DIO_ALIGN, cap) != 0)
      return br_error_set(err, BR_ENOMEM, "out of memory");
    memset(z, 0, cap);
    uint8_t *buf = z; /* write_at pads in it: it is big enough, and stays */
    bool direct = atomic_load(&lf->direct);
    int w = write_at(p, lf->fd, &direct, buf, (size_t)len, off, &buf, &cap);
    if (!direct) atomic_store(&lf->direct, false);
    if (w == 0 && direct && len % BR_XFER__DIO_ALIGN && ftruncate(lf->fd, (off_t)lf->e->size) != 0)
      w = -errno;
    free(buf);
    if (w) return fail_io(err, "write", lf->job, lf->e->path, -w);
  }
  lf->ok[c] = true;
  lf->left--;
  p->eng.prog.bytes_done += len;
  return lf->left == 0 ? finalize(p, lf, err) : BR_OK;
}

/* A ranged GET of chunk c of lf, submitted. */
static int submit_chunk(pull *p, ljob *jb, lfile *lf, size_t c, br_error *err) {
  char hex[BR_XFER_HEX_LEN + 1], path[100];
  br_xfer_digest_hex(&lf->e->chunks[c], hex);
  snprintf(path, sizeof path, "/v1/chunk/%s", hex);
  br_xfer__req *r = new_fetch(p, jb, path, 1);
  if (!r) return br_error_set(err, BR_ENOMEM, "out of memory");
  fetch *f = r->ctx;
  f->files[0] = lf;
  f->nfiles = 1;
  f->chunk = c;
  int64_t len = chunk_len(lf->e, c, jb->m->chunk_size);
  r->range_from = 0;
  r->range_to = len - 1;
  r->range_total = len;
  r->resp_limit = (size_t)len; /* a frame is kept only where it is smaller */
  r->accept_zstd = p->o->compress != 0;
  f->md = EVP_MD_CTX_new();
  if (!f->md) {
    br_xfer__engine_submit(&p->eng, r); /* freed by the engine */
    return br_error_set(err, BR_ENOMEM, "out of memory");
  }
  r->sink = chunk_sink;
  r->restart = chunk_restart;
  r->done = chunk_done;
  br_xfer__engine_submit(&p->eng, r);
  return BR_OK;
}

static bool jb_dup(const ljob *jb, size_t i) { return jb->dup && jb->dup[i]; }

static int run_pull(pull *p, const char *const *sources, const char *const *dirs,
                    br_error *err) {
  const br_xfer_opts *o = p->o;
  int rc;
  br_xfer__engine_phase(&p->eng, "manifest");
  for (size_t j = 0; j < p->njobs; j++) {
    ljob *jb = &p->jobs[j];
    if ((rc = br_xfer_ref_parse(sources[j], &jb->ref, err))) return rc;
    jb->dir = strdup(dirs[j]);
    if (!jb->dir) return br_error_set(err, BR_ENOMEM, "out of memory");
    char *path = NULL;
    if (jb->ref.version > 0) {
      if (asprintf(&path, "/v1/snapshot?name=%s&version=%lld", jb->ref.name,
                   (long long)jb->ref.version) < 0)
        path = NULL;
    } else if (asprintf(&path, "/v1/snapshot?name=%s", jb->ref.name) < 0) {
      path = NULL;
    }
    br_xfer__req *r = path ? new_fetch(p, jb, path, 0) : NULL;
    free(path);
    if (!r) return br_error_set(err, BR_ENOMEM, "out of memory");
    r->resp_limit = o->max_manifest > 0 && o->max_manifest < BR_XFER_MAX_MANIFEST_BYTES
                        ? (size_t)o->max_manifest
                        : BR_XFER_MAX_MANIFEST_BYTES;
    r->done = manifest_done;
    br_xfer__engine_submit(&p->eng, r);
  }
  if ((rc = br_xfer__engine_run(&p->eng, err))) return rc;
  if ((rc = check_overlaps(p, err))) return rc;

  br_xfer__engine_phase(&p->eng, "check");
  for (size_t j = 0; j < p->njobs; j++) {
    ljob *jb = &p->jobs[j];
    if ((rc = br_xfer__mkdirs(jb->dir, err))) return rc;
    jb->rootfd = open(jb->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (jb->rootfd < 0) return br_error_set(err, BR_EIO, "open %s: %s", jb->dir, strerror(errno));
    if ((rc = lock_destination(p, j, err))) return rc;
    jb->files = calloc(jb->m->nentries ? jb->m->nentries : 1, sizeof *jb->files);
    if (!jb->files) return br_error_set(err, BR_ENOMEM, "out of memory");
    for (size_t i = 0; i < jb->m->nentries; i++) {
      br_xfer_entry *e = &jb->m->entries[i];
      jb->files[i].job = jb;
      jb->files[i].e = e;
      jb->files[i].fd = -1;
      if (e->type == BR_XFER_FILE) {
        p->eng.prog.files_total++;
        p->eng.prog.bytes_total += e->size;
      }
    }
  }
  dirlist dl;
  memset(&dl, 0, sizeof dl);
  for (size_t j = 0; j < p->njobs; j++) {
    ljob *jb = &p->jobs[j];
    for (size_t i = 0; i < jb->m->nentries; i++) {
      br_xfer_entry *e = &jb->m->entries[i];
      if (e->type == BR_XFER_DIR) {
        if ((rc = make_dir(jb, e, err))) {
          dirlist_clear(&dl);
          return rc;
        }
      } else if (e->type == BR_XFER_FILE && ((jb->dup && jb->dup[i]) || e->same_as)) {
        /* written by an earlier snapshot of this pull, or a hard link of a
         * file of this one (linked to it at the end) */
        jb->files[i].link = e->same_as != NULL;
        p->res->chunks_skipped += (int64_t)e->nchunks;
        p->eng.prog.bytes_done += e->size;
        jb->files[i].done = true;
        p->files_skipped++;
      } else if (e->type == BR_XFER_FILE) {
        if ((rc = prepare_file(p, &jb->files[i], &dl, err))) {
          dirlist_clear(&dl);
          return rc;
        }
      }
      br_xfer__engine_progress(&p->eng, false);
      if (br_xfer__cancelled(&p->eng)) {
        dirlist_clear(&dl);
        return br_error_set(err, BR_ECANCEL, "cancelled");
      }
    }
  }
  dirlist_clear(&dl);

  br_xfer__engine_phase(&p->eng, "fetch");
  /* Enough bundles to keep every connection busy: small trees get smaller
   * bundles (but not tiny ones). */
  int64_t small_bytes = 0;
  for (size_t j = 0; j < p->njobs; j++)
    for (size_t i = 0; i < p->jobs[j].m->nentries; i++) {
      lfile *x = &p->jobs[j].files[i];
      if (x->e->type == BR_XFER_FILE && !x->done && x->e->size <= o->small_file)
        small_bytes += x->e->size;
    }
  for (size_t j = 0; j < p->njobs; j++)
    for (size_t i = 0; i < p->jobs[j].m->nentries; i++)
      if (p->jobs[j].m->entries[i].type == BR_XFER_FILE && !p->jobs[j].files[i].done)
        p->res->files_moved++;
  for (size_t j = 0; j < p->njobs; j++)
    for (size_t i = 0; i < p->jobs[j].m->nentries; i++) {
      lfile *x = &p->jobs[j].files[i];
      if (x->e->type != BR_XFER_FILE || !x->done || x->link || jb_dup(&p->jobs[j], i)) continue;
      for (size_t c = 0; c < x->e->nchunks; c++)
        if (!cmap_find(p, &x->e->chunks[c]) && cmap_put(p, x, c))
          return br_error_set(err, BR_ENOMEM, "out of memory");
    }
  /* a small file with the bytes of another (in place, or fetched before it
   * in this pull) is not asked for again: copied once the fetches are done */
  for (size_t j = 0; j < p->njobs; j++)
    for (size_t i = 0; i < p->jobs[j].m->nentries; i++) {
      lfile *x = &p->jobs[j].files[i];
      if (x->e->type != BR_XFER_FILE || x->done || x->e->size == 0 ||
          x->e->size > o->small_file || x->e->nchunks != 1 || x->ok[0])
        continue;
      const csrc *s = cmap_find(p, &x->e->chunks[0]);
      if (s ? add_copy(p, s, x, 0) : cmap_put(p, x, 0))
        return br_error_set(err, BR_ENOMEM, "out of memory");
      x->copy = s != NULL;
    }
  int64_t bundle = br_xfer__engine_bundle_bytes(&p->eng, small_bytes);
  /* The first wave smaller, so writing starts after a short round trip
   * rather than after a whole large bundle. */
  int nbundles = 0;
  int64_t first = bundle / 8 > 256 * 1024 ? bundle / 8 : 256 * 1024;
  for (size_t j = 0; j < p->njobs; j++) {
    ljob *jb = &p->jobs[j];
    size_t n = jb->m->nentries;
    for (size_t i = 0; i < n;) {
      lfile *lf = &jb->files[i];
      if (lf->e->type != BR_XFER_FILE || lf->done || lf->copy) {
        i++;
        continue;
      }
      if (lf->e->size <= o->small_file && lf->e->nchunks == 1) {
        size_t k = i, count = 0;
        int64_t bytes = 0, limit = nbundles++ < p->eng.max_running ? first : bundle;
        while (k < n && count < MAX_BUNDLE_ENTRIES) {
          lfile *x = &jb->files[k];
          if (x->e->type == BR_XFER_FILE && !x->done && !x->copy) {
            if (x->e->size > o->small_file || x->e->nchunks != 1) break;
            if (count && BR_XFER__BUNDLE_BODY(count + 1, bytes + x->e->size) >
                             BR_XFER__BUNDLE_ROOM(limit))
              break;
            bytes += x->e->size;
            count++;
          }
          k++;
        }
        br_xfer__req *r = new_bundle(p, jb, count, bytes, limit);
        if (!r) return br_error_set(err, BR_ENOMEM, "out of memory");
        fetch *f = r->ctx;
        for (size_t x = i; x < k; x++)
          if (jb->files[x].e->type == BR_XFER_FILE && !jb->files[x].done && !jb->files[x].copy)
            f->files[f->nfiles++] = &jb->files[x];
        br_xfer__engine_submit(&p->eng, r);
        i = k;
        continue;
      }
      for (size_t c = 0; c < lf->e->nchunks; c++) {
        if (!lf->ok[c] && zero_chunk(p, lf, c)) {
          if ((rc = zero_hole(p, lf, c, err))) return rc;
          continue;
        }
        /* in the partial already (a resume), fetched here, or a copy */
        const csrc *s = cmap_find(p, &lf->e->chunks[c]);
        if (lf->ok[c] || !s) {
          if (!s && cmap_put(p, lf, c)) return br_error_set(err, BR_ENOMEM, "out of memory");
          if (!lf->ok[c] && (rc = submit_chunk(p, jb, lf, c, err))) return rc;
        } else if (add_copy(p, s, lf, c)) {
          return br_error_set(err, BR_ENOMEM, "out of memory");
        }
      }
      i++;
    }
  }
  /* A file the writers found corrupt after the last request ended is
   * fetched in one more run. */
  size_t again; /* copies whose source changed: fetched in one more round */
  do {
    do {
      if ((rc = br_xfer__engine_run(&p->eng, err))) return rc;
      if ((rc = installer_drain(&p->inst, err))) return rc;
    } while (refetch_corrupt(p));
    again = 0;
    if (p->ncopies && (rc = copy_chunks(p, &again, err))) return rc;
    if ((rc = installer_drain(&p->inst, err))) return rc;
  } while (again);
  for (size_t j = 0; j < p->njobs; j++) {
    ljob *jb = &p->jobs[j];
    for (size_t i = 0; i < jb->m->nentries; i++) {
      const br_xfer_entry *e = &jb->m->entries[i];
      if (jb_dup(jb, i)) continue;
      if ((e->type == BR_XFER_SYMLINK && (rc = make_symlink(jb, e, err))) ||
          (jb->files[i].link && (rc = make_hardlink(jb, e, err))))
        return rc;
    }
  }
  /* folders last, deepest first: a manifest lists a folder before what it
   * holds */
  for (size_t j = p->njobs; j-- > 0;) {
    ljob *jb = &p->jobs[j];
    for (size_t i = jb->m->nentries; i-- > 0;)
      if (jb->m->entries[i].type == BR_XFER_DIR && (rc = dir_meta(jb, &jb->m->entries[i], err)))
        return rc;
  }
  /* one sync for the last renames, the links and the folders' metadata */
  int se = installer_sync(&p->inst);
  if (se) return br_error_set(err, BR_EIO, "sync %s: %s", p->jobs[0].dir, strerror(se));
  installer_tick(&p->eng, p);
  return BR_OK;
}

/* A pull that failed after bytes failed verification: asks each depot
 * whether its own copies of those chunks are sound. One that is not was
 * taken out of the depot by that asking: the failure is then no network's
 * and will not pass by itself (BR_EIO), and err says what to do. */
static int ask_depots(pull *p, int rc, br_error *err) {
  installer *in = &p->inst;
  if (rc == BR_OK || rc == BR_ECANCEL || !in->ncorrupt) return rc;
  const char *damaged = NULL;
  char hex[BR_XFER_HEX_LEN + 1];
  for (size_t i = 0; i < in->ncorrupt && !damaged; i++) {
    bool seen = false;
    for (size_t k = 0; k < i; k++) seen = seen || in->corrupt[k].base == in->corrupt[i].base;
    if (seen) continue;
    br_xfer_digest ds[8];
    size_t n = 0;
    for (size_t k = i; k < in->ncorrupt; k++)
      if (in->corrupt[k].base == in->corrupt[i].base) ds[n++] = in->corrupt[k].d;
    bool bad[8] = {false};
    br_error e;
    br_error_clear(&e);
    if (br_xfer__depot_verify(in->corrupt[i].base, p->o, ds, n, bad, &e)) continue;
    for (size_t k = 0; k < n && !damaged; k++)
      if (bad[k]) {
        br_xfer_digest_hex(&ds[k], hex);
        damaged = in->corrupt[i].base;
      }
  }
  if (!damaged) return rc;
  char was[sizeof err->msg];
  snprintf(was, sizeof was, "%s", err->msg);
  return br_error_set(err, BR_EIO,
                      "%s; the depot at %s read its copy of chunk %s back, found it damaged and "
                      "took it out: push the tree that holds it again (its admin's `braid depot "
                      "fsck` checks the rest)",
                      was, damaged, hex);
}

int br_xfer_pull_many(const char *const *sources, const char *const *dirs, size_t n,
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
  if (n == 0) return br_error_set(err, BR_EINVAL, "nothing to pull");
  pull p;
  memset(&p, 0, sizeof p);
  p.o = opts;
  p.res = res;
  p.njobs = n;
  atomic_init(&p.buffered, !opts->direct_io);
  /* unnamed partials are linked in by their fd, or through /proc/self/fd
   * where the kernel refuses that (br_xfer__link_fd): without /proc, named
   * partials, as the refusal is only known at the first link */
  atomic_init(&p.named, access("/proc/self/fd", X_OK) != 0);
  p.umask = read_umask();
  double t0 = br_xfer__now();
  int64_t per = opts->bundle_bytes > BR_XFER_CHUNK_SIZE ? opts->bundle_bytes : BR_XFER_CHUNK_SIZE;
  int rc = br_xfer__engine_init(&p.eng, opts, per * 2, BR_XFER_PULL_PARALLEL, err);
  p.jobs = rc ? NULL : calloc(n, sizeof *p.jobs);
  if (!rc && !p.jobs) rc = br_error_set(err, BR_ENOMEM, "out of memory");
  for (size_t j = 0; p.jobs && j < n; j++) p.jobs[j].rootfd = -1;
  if (!rc)
    rc = br_xfer__hcache_open(opts->cache_path, &p.hc, res->warning, sizeof res->warning, err);
  /* A content cache that cannot be made is done without, and said, as the
   * hash cache is: the pull itself does not need it. */
  br_xfer_opts without;
  br_error cerr;
  br_error_clear(&cerr);
  if (!rc && opts->content_cache && *opts->content_cache &&
      br_xfer__mkdirs(opts->content_cache, &cerr) != BR_OK) {
    size_t w = strlen(res->warning);
    snprintf(res->warning + w, sizeof res->warning - w, "%scontent cache: %s; pulled without it",
             w ? "; " : "", cerr.msg);
    without = *opts;
    without.content_cache = NULL;
    p.o = &without;
  }
  if (!rc && installer_start(&p.inst)) rc = br_error_set(err, BR_ENOMEM, "no installer threads");
  p.eng.tick = installer_tick;
  p.eng.tick_ud = &p;
  if (!rc) rc = run_pull(&p, sources, dirs, err);
  installer_stop(&p.inst); /* every file handed over is installed or failed */
  rc = ask_depots(&p, rc, err);
  p.eng.prog.phase = rc ? "failed" : "done";
  res->retries = p.eng.prog.retries;
  res->bytes_moved = p.eng.prog.bytes_moved;
  res->seconds = br_xfer__now() - t0;
  br_xfer__engine_progress(&p.eng, true);
  br_xfer__engine_free(&p.eng); /* before the files its requests point at */
  for (size_t j = 0; p.jobs && j < n; j++) {
    ljob *jb = &p.jobs[j];
    if (j == 0) res->version = jb->version;
    if (pairs) pairs[j] = (br_xfer_pair){jb->version, 0};
    for (size_t i = 0; jb->m && jb->files && i < jb->m->nentries; i++) {
      lfile *lf = &jb->files[i];
      if (lf->e->type == BR_XFER_FILE) {
        res->files++;
        res->bytes += lf->e->size;
      }
      if (lf->fd >= 0) {
        fsync(lf->fd); /* keep verified chunks of the partial for a resume */
        close(lf->fd);
      }
      free(lf->ok);
    }
    free(jb->files);
    free(jb->dup);
    if (jb->rootfd >= 0) close(jb->rootfd);
    br_xfer_manifest_free(jb->m);
    free(jb->dir);
    br_xfer_ref_free(&jb->ref);
  }
  free(p.jobs);
  free(p.cmap);
  free(p.copies);
  for (size_t k = 0; k < p.nzat; k++) EVP_MD_CTX_free(p.zat[k]);
  free(p.zat);
  br_xfer__hcache_close(p.hc);
  return rc;
}

int br_xfer_pull(const char *source, const char *dir, const br_xfer_opts *opts,
                 br_xfer_result *res, br_error *err) {
  return br_xfer_pull_many(&source, &dir, 1, opts, NULL, res, err);
}
