/* Push: scan a tree, hash what the hash cache does not know (in parallel),
 * ask the depot which chunks it lacks (batched), send only those (small
 * chunks bundled many to a request, large ones one per request, several
 * requests in flight), then commit each manifest as a new version. A file
 * that changes while it is pushed is caught (its chunk no longer matches the
 * digest) and reported, never committed. */
#include "client_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MISSING_BATCH 20000
#define MAX_BUNDLE_ENTRIES 4096

typedef struct pfile {
  char *rel;
  int type;
  struct stat st;
  char *target;
  br_xfer_digest digest;
  br_xfer_digest *chunks;
  size_t nchunks;
  int zstate; /* zstd for this file: 0 undecided, 1 yes, -1 no */
  int pending; /* chunks of this file still to upload */
  char *abs;   /* while waiting to be hashed: its path */
  bool hashed;
} pfile;

typedef struct pjob {
  br_xfer_ref ref;
  char *dir;
  pfile *files;
  size_t n, cap;
  int64_t version;
  bool conflict; /* its commit was refused: chunks went missing */
} pjob;

typedef struct cref {
  br_xfer_digest d;
  uint32_t job, file, chunk;
  bool need;
} cref;

typedef struct push {
  br_xfer__engine eng;
  const br_xfer_opts *o;
  pjob *jobs;
  size_t njobs;
  cref *refs; /* every chunk of every file */
  size_t nrefs;
  cref **uniq; /* one per distinct digest, sorted by digest */
  size_t nuniq;
  br_xfer__hcache *hc;
  br_xfer_result *res;
  int64_t chunk_size;
  /* hashing threads */
  pfile **todo;
  size_t ntodo;
  atomic_size_t next;
  pthread_mutex_t mu;
  int hash_rc;
  br_error hash_err;
  atomic_llong hashed_bytes;
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
      rc = br_error_set(err, BR_EINVAL, "refusing to push '%s': the name is not valid UTF-8",
                        cabs);
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
      rc = br_error_set(err, BR_EINVAL, "refusing to push '%s': not a regular file, "
                        "directory or symlink (device, fifo or socket)", cabs);
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

/* ---- hashing ---- */

static void *hash_worker(void *arg) {
  push *p = arg;
  for (;;) {
    size_t i = atomic_fetch_add(&p->next, 1);
    if (i >= p->ntodo || br_xfer__cancelled(&p->eng)) break;
    pthread_mutex_lock(&p->mu);
    bool stop = p->hash_rc != 0;
    pthread_mutex_unlock(&p->mu);
    if (stop) break;
    pfile *f = p->todo[i];
    br_error err;
    br_error_clear(&err);
    int rc = BR_OK;
    int fd = -1;
    const char *abs = f->abs;
    fd = open(abs, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat before, after;
    if (fd < 0) {
      rc = br_error_set(&err, BR_EIO, "open %s: %s", abs, strerror(errno));
    } else if (fstat(fd, &before) != 0) {
      rc = br_error_set(&err, BR_EIO, "stat %s: %s", abs, strerror(errno));
    } else {
      rc = br_xfer__hash_fd(fd, before.st_size, p->chunk_size, &f->digest, &f->chunks,
                            &f->nchunks, &err);
      if (rc == BR_OK && (fstat(fd, &after) != 0 || after.st_size != before.st_size ||
                          br_xfer__mtime_ns(&after) != br_xfer__mtime_ns(&before)))
        rc = br_error_set(&err, BR_EIO, "%s changed while it was hashed", abs);
      if (rc == BR_OK) {
        f->st = before;
        f->hashed = true;
        atomic_fetch_add(&p->hashed_bytes, (long long)before.st_size);
      } else if (err.msg[0] && !strstr(err.msg, abs)) {
        char m[1024];
        snprintf(m, sizeof m, "%s: %.900s", abs, err.msg);
        snprintf(err.msg, sizeof err.msg, "%s", m);
      }
    }
    if (fd >= 0) close(fd);
    if (rc) {
      pthread_mutex_lock(&p->mu);
      if (!p->hash_rc) {
        p->hash_rc = rc;
        p->hash_err = err;
      }
      pthread_mutex_unlock(&p->mu);
    }
  }
  return NULL;
}

static int hash_all(push *p, br_error *err) {
  size_t total = 0;
  for (size_t j = 0; j < p->njobs; j++) total += p->jobs[j].n;
  p->todo = calloc(total ? total : 1, sizeof *p->todo);
  if (!p->todo) return br_error_set(err, BR_ENOMEM, "out of memory");
  p->eng.prog.phase = "hash";
  br_xfer__hcache_begin(p->hc); /* one read transaction for all lookups */
  for (size_t j = 0; j < p->njobs; j++)
    for (size_t i = 0; i < p->jobs[j].n; i++) {
      pfile *f = &p->jobs[j].files[i];
      if (f->type != BR_XFER_FILE) continue;
      if (br_xfer__hcache_get(p->hc, &f->st, p->chunk_size, &f->digest, &f->chunks,
                              &f->nchunks))
        continue;
      if (asprintf(&f->abs, "%s/%s", p->jobs[j].dir, f->rel) < 0) {
        f->abs = NULL;
        br_xfer__hcache_commit(p->hc);
        return br_error_set(err, BR_ENOMEM, "out of memory");
      }
      p->todo[p->ntodo++] = f;
    }
  br_xfer__hcache_commit(p->hc);
  int nt = p->o->hash_threads > 0 ? p->o->hash_threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
  if (nt < 1) nt = 1;
  if (nt > 16) nt = 16;
  if ((size_t)nt > p->ntodo) nt = (int)p->ntodo;
  pthread_t th[16];
  int started = 0;
  for (int i = 0; i < nt; i++)
    if (pthread_create(&th[i], NULL, hash_worker, p) == 0) started++;
  if (p->ntodo && !started) hash_worker(p);
  for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
  for (size_t i = 0; i < p->ntodo; i++) {
    free(p->todo[i]->abs);
    p->todo[i]->abs = NULL;
  }
  p->res->hashed_bytes = atomic_load(&p->hashed_bytes);
  if (br_xfer__cancelled(&p->eng)) return br_error_set(err, BR_ECANCEL, "cancelled");
  if (p->hash_rc) {
    *err = p->hash_err;
    return p->hash_rc;
  }
  br_xfer__hcache_begin(p->hc);
  for (size_t i = 0; i < p->ntodo; i++) {
    pfile *f = p->todo[i];
    br_xfer__hcache_put(p->hc, &f->st, p->chunk_size, &f->digest, f->chunks, f->nchunks);
  }
  br_xfer__hcache_commit(p->hc);
  return BR_OK;
}

/* ---- which chunks the depot lacks ---- */

static int cmp_cref_digest(const void *a, const void *b) {
  return br_xfer__digest_cmp(&(*(cref *const *)a)->d, &(*(cref *const *)b)->d);
}

typedef struct batch {
  push *p;
  size_t from, to; /* range of p->uniq */
  cref **refs;     /* upload: the chunks of this request */
  size_t nrefs;
  size_t job;      /* commit: the job */
} batch;

static void batch_destroy(br_xfer__req *r) { free(((batch *)r->ctx)->refs), free(r->ctx); }

static int missing_build(br_xfer__req *r, br_xfer__buf *body, br_error *err) {
  batch *b = r->ctx;
  char hex[BR_XFER_HEX_LEN + 1];
  if (br_xfer__buf_append(body, "{\"chunks\":[", 11)) goto oom;
  for (size_t i = b->from; i < b->to; i++) {
    br_xfer_digest_hex(&b->p->uniq[i]->d, hex);
    if (br_xfer__buf_append(body, i > b->from ? ",\"" : "\"", i > b->from ? 2 : 1) ||
        br_xfer__buf_append(body, hex, BR_XFER_HEX_LEN) || br_xfer__buf_append(body, "\"", 1))
      goto oom;
  }
  if (br_xfer__buf_append(body, "]}", 2)) goto oom;
  return BR_OK;
oom:
  return br_error_set(err, BR_ENOMEM, "out of memory");
}

static int missing_done(br_xfer__req *r, br_error *err) {
  batch *b = r->ctx;
  json_t *o = json_loadb((const char *)r->resp.data, r->resp.len, 0, NULL);
  json_t *list = o ? json_object_get(o, "missing") : NULL;
  if (!json_is_array(list)) {
    json_decref(o);
    br_error_set(err, BR_ENET, "depot: malformed answer to 'missing'");
    return BR_XFER__RETRY;
  }
  for (size_t i = 0; i < json_array_size(list); i++) {
    cref key;
    cref *kp = &key;
    if (br_xfer_digest_parse(json_string_value(json_array_get(list, i)), &key.d)) continue;
    cref **hit = bsearch(&kp, b->p->uniq + b->from, b->to - b->from, sizeof *b->p->uniq,
                         cmp_cref_digest);
    if (hit) (*hit)->need = true;
  }
  json_decref(o);
  return BR_OK;
}

/* ---- sending ---- */

static int64_t chunk_len(const pfile *f, uint32_t c, int64_t cs) {
  int64_t off = (int64_t)c * cs;
  return f->st.st_size - off < cs ? f->st.st_size - off : cs;
}

static int upload_build(br_xfer__req *r, br_xfer__buf *body, br_error *err) {
  batch *b = r->ctx;
  push *p = b->p;
  br_xfer__bundle_begin(body);
  int fd = -1;
  const pfile *open_f = NULL;
  uint8_t *buf = NULL;
  size_t cap = 0;
  int rc = BR_OK;
  for (size_t i = 0; i < b->nrefs && rc == BR_OK; i++) {
    cref *c = b->refs[i];
    pjob *j = &p->jobs[c->job];
    pfile *f = &j->files[c->file];
    if (f != open_f) {
      if (fd >= 0) close(fd);
      char *abs = NULL;
      if (asprintf(&abs, "%s/%s", j->dir, f->rel) < 0) {
        rc = br_error_set(err, BR_ENOMEM, "out of memory");
        break;
      }
      fd = open(abs, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
      struct stat st;
      if (fd < 0) {
        rc = br_error_set(err, BR_EIO, "open %s: %s", abs, strerror(errno));
      } else if (fstat(fd, &st) != 0 || st.st_size != f->st.st_size ||
                 br_xfer__mtime_ns(&st) != br_xfer__mtime_ns(&f->st) ||
                 br_xfer__ctime_ns(&st) != br_xfer__ctime_ns(&f->st) ||
                 st.st_ino != f->st.st_ino) {
        /* The same identity the hash cache trusts: unchanged since hashed. */
        rc = br_error_set(err, BR_EIO, "%s changed while it was pushed; push again", abs);
      }
      free(abs);
      open_f = f;
      if (rc) break;
    }
    size_t len = (size_t)chunk_len(f, c->chunk, p->chunk_size);
    if (len > cap) {
      free(buf);
      cap = len;
      buf = malloc(cap);
      if (!buf) {
        rc = br_error_set(err, BR_ENOMEM, "out of memory");
        break;
      }
    }
    int e = br_xfer__pread_all(fd, buf, len, (int64_t)c->chunk * p->chunk_size);
    if (e) {
      rc = br_error_set(err, BR_EIO, "%s/%s: read failed or file shrank (%s); push again",
                        j->dir, f->rel, strerror(-e));
      break;
    }
    bool try_z = p->o->compress && f->zstate >= 0;
    bool saved = false;
    if (br_xfer__bundle_add(body, &c->d, buf, len, try_z, &saved)) {
      rc = br_error_set(err, BR_ENOMEM, "out of memory");
      break;
    }
    /* The first chunk decides: a file that does not compress is sent raw. */
    if (try_z && f->zstate == 0 && c->chunk == 0) f->zstate = saved ? 1 : -1;
  }
  if (fd >= 0) close(fd);
  free(buf);
  return rc;
}

static int upload_done(br_xfer__req *r, br_error *err) {
  batch *b = r->ctx;
  push *p = b->p;
  for (size_t i = 0; i < b->nrefs; i++) {
    cref *c = b->refs[i];
    pfile *f = &p->jobs[c->job].files[c->file];
    int64_t len = chunk_len(f, c->chunk, p->chunk_size);
    p->res->chunks_moved++;
    p->eng.prog.bytes_done += len;
    if (--f->pending == 0) p->eng.prog.files_done++;
  }
  return BR_OK;
}

static int cmp_cref_order(const void *a, const void *b) {
  const cref *x = *(cref *const *)a, *y = *(cref *const *)b;
  if (x->job != y->job) return x->job < y->job ? -1 : 1;
  if (x->file != y->file) return x->file < y->file ? -1 : 1;
  return x->chunk < y->chunk ? -1 : x->chunk > y->chunk;
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
    if (f->type == BR_XFER_FILE) {
      e.size = f->st.st_size;
      e.mtime_ns = br_xfer__mtime_ns(&f->st);
      e.digest = f->digest;
      e.chunks = f->chunks;
      e.nchunks = f->nchunks;
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
  json_decref(o);
  return BR_OK;
}

/* ---- the whole push ---- */

static int send_missing(push *p, br_error *err);
static int commit_jobs(push *p, bool again, br_error *err);

static br_xfer__req *new_req(push *p, const char *base, const char *path, batch **bout) {
  br_xfer__req *r = br_xfer__req_new(base, path);
  batch *b = calloc(1, sizeof *b);
  if (!r || !b) {
    free(b);
    if (r) free(r->url);
    free(r);
    return NULL;
  }
  b->p = p;
  r->ctx = b;
  r->destroy = batch_destroy;
  r->post = true;
  *bout = b;
  return r;
}

static int run_push(push *p, const char *const *dirs, const char *const *targets,
                    br_error *err) {
  int rc;
  p->eng.prog.phase = "scan";
  br_xfer__engine_progress(&p->eng, true);
  for (size_t j = 0; j < p->njobs; j++) {
    pjob *jb = &p->jobs[j];
    if ((rc = br_xfer_ref_parse(targets[j], &jb->ref, err))) return rc;
    /* One push talks to one depot (its chunk questions and uploads are shared). */
    if (j > 0 && strcmp(jb->ref.base, p->jobs[0].ref.base) != 0)
      return br_error_set(err, BR_EINVAL,
                          "one push goes to one depot: %s and %s differ; push to each "
                          "separately", p->jobs[0].ref.base, jb->ref.base);
    struct stat st;
    if (stat(dirs[j], &st) != 0 || !S_ISDIR(st.st_mode))
      return br_error_set(err, BR_EINVAL, "%s is not a directory", dirs[j]);
    jb->dir = strdup(dirs[j]);
    if (!jb->dir) return br_error_set(err, BR_ENOMEM, "out of memory");
    size_t dl = strlen(jb->dir);
    while (dl > 1 && jb->dir[dl - 1] == '/') jb->dir[--dl] = 0;
    if ((rc = scan(jb, "", err))) return rc;
    if (jb->n) qsort(jb->files, jb->n, sizeof *jb->files, cmp_pfile);
    for (size_t i = 0; i < jb->n; i++)
      if (jb->files[i].type == BR_XFER_FILE) {
        p->eng.prog.files_total++;
        p->eng.prog.bytes_total += jb->files[i].st.st_size;
      }
  }
  if ((rc = hash_all(p, err))) return rc;

  /* Every chunk, then one representative per digest. */
  size_t total = 0;
  for (size_t j = 0; j < p->njobs; j++)
    for (size_t i = 0; i < p->jobs[j].n; i++) total += p->jobs[j].files[i].nchunks;
  p->refs = calloc(total ? total : 1, sizeof *p->refs);
  p->uniq = calloc(total ? total : 1, sizeof *p->uniq);
  if (!p->refs || !p->uniq) return br_error_set(err, BR_ENOMEM, "out of memory");
  for (size_t j = 0; j < p->njobs; j++)
    for (size_t i = 0; i < p->jobs[j].n; i++) {
      pfile *f = &p->jobs[j].files[i];
      for (size_t c = 0; c < f->nchunks; c++) {
        cref *r = &p->refs[p->nrefs++];
        r->d = f->chunks[c];
        r->job = (uint32_t)j;
        r->file = (uint32_t)i;
        r->chunk = (uint32_t)c;
        p->uniq[p->nuniq++] = r;
      }
    }
  qsort(p->uniq, p->nuniq, sizeof *p->uniq, cmp_cref_digest);
  size_t u = 0;
  for (size_t i = 0; i < p->nuniq; i++)
    if (u == 0 || br_xfer__digest_cmp(&p->uniq[u - 1]->d, &p->uniq[i]->d) != 0)
      p->uniq[u++] = p->uniq[i];
  p->nuniq = u;
  if ((rc = send_missing(p, err))) return rc;
  /* A commit refused for chunks the depot no longer has (a gc ran since it
   * said it had them): ask and send again, then commit those again. */
  for (int round = 0;; round++) {
    if ((rc = commit_jobs(p, round > 0, err))) return rc;
    bool again = false;
    for (size_t j = 0; j < p->njobs; j++) again = again || p->jobs[j].conflict;
    if (!again) return BR_OK;
    if (round == 3)
      return br_error_set(err, BR_ENET, "the depot kept losing chunks of this push before its "
                          "commit (is a depot gc running with a short grace period?)");
    for (size_t i = 0; i < p->nuniq; i++) p->uniq[i]->need = false;
    p->res->chunks_skipped = p->res->files_moved = 0; /* counted again */
    p->eng.prog.files_done = p->eng.prog.bytes_done = 0;
    for (size_t j = 0; j < p->njobs; j++)
      for (size_t i = 0; i < p->jobs[j].n; i++) p->jobs[j].files[i].pending = 0;
    if ((rc = send_missing(p, err))) return rc;
  }
}

/* Asks which chunks the depot lacks and sends them. */
static int send_missing(push *p, br_error *err) {
  const br_xfer_opts *o = p->o;
  int rc;
  p->eng.prog.phase = "compare";
  const char *base = p->jobs[0].ref.base;
  for (size_t from = 0; from < p->nuniq; from += MISSING_BATCH) {
    batch *b;
    br_xfer__req *r = new_req(p, base, "/v1/missing", &b);
    if (!r) return br_error_set(err, BR_ENOMEM, "out of memory");
    b->from = from;
    b->to = from + MISSING_BATCH < p->nuniq ? from + MISSING_BATCH : p->nuniq;
    r->content_type = "application/json";
    r->build = missing_build;
    r->done = missing_done;
    br_xfer__engine_submit(&p->eng, r);
  }
  if ((rc = br_xfer__engine_run(&p->eng, err))) return rc;

  /* Send what is missing, in file order; small chunks share a request. */
  p->eng.prog.phase = "send";
  cref **send = calloc(p->nuniq ? p->nuniq : 1, sizeof *send);
  if (!send) return br_error_set(err, BR_ENOMEM, "out of memory");
  size_t nsend = 0;
  for (size_t i = 0; i < p->nuniq; i++)
    if (p->uniq[i]->need) send[nsend++] = p->uniq[i];
    else p->res->chunks_skipped++;
  qsort(send, nsend, sizeof *send, cmp_cref_order);
  for (size_t i = 0; i < nsend; i++) p->jobs[send[i]->job].files[send[i]->file].pending++;
  for (size_t j = 0; j < p->njobs; j++)
    for (size_t i = 0; i < p->jobs[j].n; i++) {
      pfile *f = &p->jobs[j].files[i];
      if (f->type != BR_XFER_FILE) continue;
      if (f->pending) p->res->files_moved++;
      else p->eng.prog.files_done++, p->eng.prog.bytes_done += f->st.st_size;
    }
  int64_t bundle = o->bundle_bytes > 0 ? o->bundle_bytes : 8 * 1024 * 1024;
  /* Enough bundles to keep every connection busy. */
  int64_t small_bytes = 0;
  for (size_t i = 0; i < nsend; i++) {
    int64_t l = chunk_len(&p->jobs[send[i]->job].files[send[i]->file], send[i]->chunk,
                          p->chunk_size);
    if (l <= o->small_file) small_bytes += l;
  }
  int64_t spread = small_bytes / (2 * (int64_t)p->eng.max_running);
  if (spread < bundle) bundle = spread > 256 * 1024 ? spread : 256 * 1024;
  for (size_t i = 0; i < nsend;) {
    size_t k = i;
    int64_t bytes = 0;
    int64_t first = chunk_len(&p->jobs[send[i]->job].files[send[i]->file], send[i]->chunk,
                              p->chunk_size);
    if (first > o->small_file) {
      k = i + 1; /* a large chunk goes alone */
    } else {
      while (k < nsend && k - i < MAX_BUNDLE_ENTRIES) {
        int64_t l = chunk_len(&p->jobs[send[k]->job].files[send[k]->file], send[k]->chunk,
                              p->chunk_size);
        if (l > o->small_file || (k > i && bytes + l > bundle)) break;
        bytes += l;
        k++;
      }
    }
    batch *b;
    br_xfer__req *r = new_req(p, base, "/v1/chunks", &b);
    if (r) b->refs = malloc((k - i) * sizeof *b->refs);
    if (!r || !b->refs) {
      if (r) br_xfer__engine_submit(&p->eng, r); /* freed by the engine */
      free(send);
      return br_error_set(err, BR_ENOMEM, "out of memory");
    }
    memcpy(b->refs, send + i, (k - i) * sizeof *b->refs);
    b->nrefs = k - i;
    r->content_type = "application/octet-stream";
    r->build = upload_build;
    r->done = upload_done;
    br_xfer__engine_submit(&p->eng, r);
    i = k;
  }
  free(send);
  return br_xfer__engine_run(&p->eng, err);
}

/* Commits every job (again: only those whose commit was refused). */
static int commit_jobs(push *p, bool again, br_error *err) {
  p->eng.prog.phase = "commit";
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
                      const br_xfer_opts *opts, int64_t *versions, br_xfer_result *res,
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
  double t0 = br_xfer__now();
  int64_t per = opts->bundle_bytes > p.chunk_size ? opts->bundle_bytes : p.chunk_size;
  int rc = br_xfer__engine_init(&p.eng, opts, per * 2, err);
  p.jobs = rc ? NULL : calloc(n, sizeof *p.jobs);
  if (!rc && !p.jobs) rc = br_error_set(err, BR_ENOMEM, "out of memory");
  if (!rc) rc = br_xfer__hcache_open(opts->cache_path, &p.hc, err);
  if (!rc) rc = run_push(&p, dirs, targets, err);
  p.eng.prog.phase = rc ? "failed" : "done";
  res->retries = p.eng.prog.retries;
  res->bytes_moved = p.eng.prog.bytes_moved;
  res->seconds = br_xfer__now() - t0;
  br_xfer__engine_progress(&p.eng, true);
  for (size_t j = 0; p.jobs && j < n; j++) {
    pjob *jb = &p.jobs[j];
    if (versions) versions[j] = jb->version;
    if (j == 0) res->version = jb->version;
    for (size_t i = 0; i < jb->n; i++) {
      pfile *f = &jb->files[i];
      if (f->type == BR_XFER_FILE) res->files++, res->bytes += f->st.st_size;
      free(f->rel);
      free(f->abs);
      free(f->target);
      free(f->chunks);
    }
    free(jb->files);
    free(jb->dir);
    br_xfer_ref_free(&jb->ref);
  }
  free(p.jobs);
  free(p.refs);
  free(p.uniq);
  free(p.todo);
  br_xfer__hcache_close(p.hc);
  br_xfer__engine_free(&p.eng);
  pthread_mutex_destroy(&p.mu);
  return rc;
}

int br_xfer_push(const char *dir, const char *target, const br_xfer_opts *opts,
                 br_xfer_result *res, br_error *err) {
  return br_xfer_push_many(&dir, &target, 1, opts, NULL, res, err);
}
