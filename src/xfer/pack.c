/* Packs: small chunks stored many to a file. One file per small chunk would
 * cost an inode, an fsync and a rename each; a bundle of them is written as
 * one pack file under packs/ (synced, its directory synced), then indexed in
 * one SQLite transaction (index.db: digest -> pack, offset, length). Until
 * that commit the pack is unreferenced, so a crash leaves at most an unused
 * file, never an index entry without its bytes. Large chunks stay loose
 * files under objects/ (store.c).
 *
 * A chunk that came compressed is kept as it came: its index entry says
 * how long its raw bytes are (raw > 0; len is then the zstd frame's). A
 * fetch that asks for zstd sends those bytes as they are, so a farm
 * pulling one snapshot costs the depot no compression per machine, and
 * the disk holds the smaller form. raw = 0: the bytes are the chunk;
 * raw < 0: they are too, and its sender found it does not compress, so
 * fetches send it as it is without trying zstd (a braid that knows only
 * raw >= 0 reads it as 0). */
#include "xfer_int.h"
#include "../fs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* A pack waiting for its index commit (see index_add). */
typedef struct pending_pack {
  const char *name;
  const br_xfer__packed *objs;
  size_t n;
  bool move;
  bool done;   /* committed or failed: rc, msg */
  int rc;      /* SQLite's */
  char msg[160];
  struct pending_pack *next;
} pending_pack;

/* Two connections to index.db: db writes (and scans), rdb looks up. In
 * WAL mode a lookup reads the last commit while a commit is being written
 * and synced, so the "missing" questions and fetches of other clients do
 * not wait for an upload's commit. */
struct br_xfer__index {
  sqlite3 *db, *rdb;
  sqlite3_stmt *has, *find;                 /* rdb */
  sqlite3_stmt *add_pack, *add_obj, *mv_obj; /* db */
  pthread_mutex_t mu;                       /* db */
  pthread_mutex_t rmu;                      /* rdb; recursive: batches */
  /* group commit: packs waiting, and whether a thread is committing */
  pthread_mutex_t qmu;
  pthread_cond_t qcv;
  pending_pack *queue, **tail;
  bool committing;
};

/* The index's format (PRAGMA user_version): 1 has the raw column. A braid
 * refuses an index of a format it does not know. */
#define INDEX_FORMAT 1
#define STR_(x) #x
#define STR(x) STR_(x)

static int index_format(sqlite3 *db) {
  sqlite3_stmt *q = NULL;
  int v = 0;
  if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &q, NULL) == SQLITE_OK &&
      sqlite3_step(q) == SQLITE_ROW)
    v = sqlite3_column_int(q, 0);
  sqlite3_finalize(q);
  return v;
}

/* Brings an index of format 0 (a braid before compressed objects: every
 * entry raw) to this format, in one transaction: a depot and a gc may open
 * the same root at once, so what format read before it is read again. */
static int upgrade_index(sqlite3 *db, int format) {
  if (format >= INDEX_FORMAT) return SQLITE_OK;
  int rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
  if (rc != SQLITE_OK) return rc;
  sqlite3_stmt *q = NULL;
  rc = sqlite3_prepare_v2(
      db, "SELECT count(*) FROM pragma_table_info('objects') WHERE name = 'raw'", -1, &q, NULL);
  bool has = rc == SQLITE_OK && sqlite3_step(q) == SQLITE_ROW && sqlite3_column_int(q, 0) > 0;
  sqlite3_finalize(q);
  if (rc == SQLITE_OK && !has)
    rc = sqlite3_exec(db, "ALTER TABLE objects ADD COLUMN raw INTEGER NOT NULL DEFAULT 0", NULL,
                      NULL, NULL);
  if (rc == SQLITE_OK && index_format(db) < INDEX_FORMAT)
    rc = sqlite3_exec(db, "PRAGMA user_version = " STR(INDEX_FORMAT), NULL, NULL, NULL);
  if (rc == SQLITE_OK) rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
  if (rc != SQLITE_OK) sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
  return rc;
}

int br_xfer__index_open(br_xfer__store *s, br_error *err) {
  char path[4200];
  snprintf(path, sizeof path, "%s/packs", s->root);
  if (mkdir(path, 0755) != 0 && errno != EEXIST)
    return br_error_set(err, BR_EIO, "mkdir %s: %s", path, strerror(errno));
  br_xfer__index *x = calloc(1, sizeof *x);
  if (!x) return br_error_set(err, BR_ENOMEM, "out of memory");
  /* Recursive: a batch of lookups holds it around single lookups. */
  pthread_mutexattr_t ma;
  pthread_mutexattr_init(&ma);
  pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE);
  pthread_mutex_init(&x->rmu, &ma);
  pthread_mutexattr_destroy(&ma);
  pthread_mutex_init(&x->mu, NULL);
  pthread_mutex_init(&x->qmu, NULL);
  pthread_cond_init(&x->qcv, NULL);
  x->tail = &x->queue;
  snprintf(path, sizeof path, "%s/index.db", s->root);
  int rc = sqlite3_open_v2(path, &x->db,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                           NULL);
  if (rc == SQLITE_OK) {
    sqlite3_busy_timeout(x->db, 30000);
    rc = sqlite3_exec(x->db,
                      "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                      /* each pack's savepoint journals the index pages
                       * it changes: in memory, not in files in /var/tmp */
                      "PRAGMA temp_store=MEMORY;"
                      "CREATE TABLE IF NOT EXISTS packs (id INTEGER PRIMARY KEY, name TEXT "
                      " NOT NULL UNIQUE);"
                      "CREATE TABLE IF NOT EXISTS objects (digest BLOB PRIMARY KEY, pack "
                      " INTEGER NOT NULL, off INTEGER NOT NULL, len INTEGER NOT NULL, "
                      " raw INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;",
                      NULL, NULL, NULL);
  }
  int format = rc == SQLITE_OK ? index_format(x->db) : 0;
  if (rc == SQLITE_OK && format > INDEX_FORMAT) {
    br_error_set(err, BR_EIO,
                 "depot index %s is of format %d, made by a newer braid (this one reads up to "
                 "%d)",
                 path, format, INDEX_FORMAT);
    s->index = x;
    br_xfer__index_close(s);
    return BR_EIO;
  }
  if (rc == SQLITE_OK) rc = upgrade_index(x->db, format);
  /* the lookups' connection, once the tables are there */
  if (rc == SQLITE_OK)
    rc = sqlite3_open_v2(path, &x->rdb, SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX, NULL);
  if (rc == SQLITE_OK) sqlite3_busy_timeout(x->rdb, 30000);
  if (rc == SQLITE_OK)
    rc = sqlite3_prepare_v2(x->rdb, "SELECT 1 FROM objects WHERE digest=?", -1, &x->has, NULL);
  if (rc == SQLITE_OK)
    rc = sqlite3_prepare_v2(x->rdb,
                            "SELECT p.name, o.off, o.len, o.raw FROM objects o JOIN packs p ON "
                            "p.id = o.pack WHERE o.digest=?",
                            -1, &x->find, NULL);
  if (rc == SQLITE_OK)
    rc = sqlite3_prepare_v2(x->db, "INSERT INTO packs (name) VALUES (?)", -1, &x->add_pack,
                            NULL);
  if (rc == SQLITE_OK)
    rc = sqlite3_prepare_v2(x->db,
                            "INSERT OR IGNORE INTO objects (digest, pack, off, len, raw) "
                            "VALUES (?,?,?,?,?)",
                            -1,
                            &x->add_obj, NULL);
  if (rc == SQLITE_OK) /* gc's repack: the objects now live in the new pack */
    rc = sqlite3_prepare_v2(x->db,
                            "INSERT OR REPLACE INTO objects (digest, pack, off, len, raw) "
                            "VALUES (?,?,?,?,?)",
                            -1, &x->mv_obj, NULL);
  if (rc != SQLITE_OK) {
    br_error_set(err, BR_EIO, "depot index %s: %s", path,
                 sqlite3_errmsg(x->rdb && sqlite3_errcode(x->rdb) != SQLITE_OK ? x->rdb : x->db));
    s->index = x;
    br_xfer__index_close(s);
    return BR_EIO;
  }
  s->index = x;
  return BR_OK;
}

void br_xfer__index_close(br_xfer__store *s) {
  br_xfer__index *x = s->index;
  if (!x) return;
  sqlite3_finalize(x->has);
  sqlite3_finalize(x->find);
  sqlite3_finalize(x->add_pack);
  sqlite3_finalize(x->add_obj);
  sqlite3_finalize(x->mv_obj);
  sqlite3_close(x->rdb);
  sqlite3_close(x->db);
  pthread_mutex_destroy(&x->mu);
  pthread_mutex_destroy(&x->rmu);
  pthread_mutex_destroy(&x->qmu);
  pthread_cond_destroy(&x->qcv);
  free(x);
  s->index = NULL;
}

void br_xfer__index_batch_begin(br_xfer__store *s) {
  br_xfer__index *x = s->index;
  pthread_mutex_lock(&x->rmu);
  sqlite3_exec(x->rdb, "BEGIN", NULL, NULL, NULL);
}

void br_xfer__index_batch_end(br_xfer__store *s) {
  br_xfer__index *x = s->index;
  sqlite3_exec(x->rdb, "COMMIT", NULL, NULL, NULL);
  pthread_mutex_unlock(&x->rmu);
}

bool br_xfer__index_has(br_xfer__store *s, const br_xfer_digest *d) {
  br_xfer__index *x = s->index;
  pthread_mutex_lock(&x->rmu);
  sqlite3_reset(x->has);
  sqlite3_bind_blob(x->has, 1, d->b, BR_XFER_DIGEST_LEN, SQLITE_STATIC);
  bool found = sqlite3_step(x->has) == SQLITE_ROW;
  sqlite3_reset(x->has);
  pthread_mutex_unlock(&x->rmu);
  return found;
}

int br_xfer__index_locate(br_xfer__store *s, const br_xfer_digest *d, char *rel, size_t size,
                          int64_t *off, int64_t *len, int64_t *raw) {
  br_xfer__index *x = s->index;
  rel[0] = 0;
  pthread_mutex_lock(&x->rmu);
  sqlite3_reset(x->find);
  sqlite3_bind_blob(x->find, 1, d->b, BR_XFER_DIGEST_LEN, SQLITE_STATIC);
  if (sqlite3_step(x->find) == SQLITE_ROW) {
    snprintf(rel, size, "packs/%s", (const char *)sqlite3_column_text(x->find, 0));
    *off = sqlite3_column_int64(x->find, 1);
    *len = sqlite3_column_int64(x->find, 2);
    *raw = sqlite3_column_int64(x->find, 3);
  }
  sqlite3_reset(x->find);
  pthread_mutex_unlock(&x->rmu);
  return rel[0] ? BR_OK : BR_ENOTFOUND;
}

int br_xfer__index_open_object(br_xfer__store *s, const br_xfer_digest *d, int *fd,
                               int64_t *off, int64_t *len, int64_t *raw) {
  char rel[128];
  /* twice: a gc may have moved the object to a new pack in between */
  for (int attempt = 0; attempt < 2; attempt++) {
    if (br_xfer__index_locate(s, d, rel, sizeof rel, off, len, raw)) return BR_ENOTFOUND;
    *fd = openat(s->rootfd, rel, O_RDONLY | O_CLOEXEC);
    if (*fd >= 0) return BR_OK;
    if (errno != ENOENT) return BR_EIO;
  }
  return BR_ENOTFOUND;
}

/* Indexes one pack's objects inside the open transaction. */
static int add_one(br_xfer__index *x, const pending_pack *p) {
  sqlite3_reset(x->add_pack);
  sqlite3_bind_text(x->add_pack, 1, p->name, -1, SQLITE_STATIC);
  int rc = sqlite3_step(x->add_pack) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
  sqlite3_reset(x->add_pack);
  sqlite3_int64 id = sqlite3_last_insert_rowid(x->db);
  sqlite3_stmt *add = p->move ? x->mv_obj : x->add_obj;
  for (size_t i = 0; i < p->n && rc == SQLITE_OK; i++) {
    sqlite3_reset(add);
    sqlite3_bind_blob(add, 1, p->objs[i].d.b, BR_XFER_DIGEST_LEN, SQLITE_STATIC);
    sqlite3_bind_int64(add, 2, id);
    sqlite3_bind_int64(add, 3, p->objs[i].off);
    sqlite3_bind_int64(add, 4, p->objs[i].len);
    sqlite3_bind_int64(add, 5, p->objs[i].raw);
    rc = sqlite3_step(add) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
    sqlite3_reset(add);
  }
  return rc;
}

/* One transaction for the packs of list, each in a savepoint of its own
 * (one that fails takes only itself back); rc and msg of each are set. */
static void commit_group(br_xfer__index *x, pending_pack *list) {
  pthread_mutex_lock(&x->mu);
  int rc = sqlite3_exec(x->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
  for (pending_pack *p = list; p; p = p->next) {
    p->rc = rc;
    if (rc != SQLITE_OK) {
      snprintf(p->msg, sizeof p->msg, "%s", sqlite3_errmsg(x->db));
      continue;
    }
    p->rc = sqlite3_exec(x->db, "SAVEPOINT pack", NULL, NULL, NULL);
    if (p->rc == SQLITE_OK) p->rc = add_one(x, p);
    if (p->rc != SQLITE_OK) {
      snprintf(p->msg, sizeof p->msg, "%s", sqlite3_errmsg(x->db));
      /* An I/O error or a full disk may have rolled back the whole
       * transaction: then every pack of the group fails. */
      if (sqlite3_get_autocommit(x->db)) {
        rc = p->rc;
        continue;
      }
      sqlite3_exec(x->db, "ROLLBACK TO pack", NULL, NULL, NULL);
    }
    sqlite3_exec(x->db, "RELEASE pack", NULL, NULL, NULL);
  }
  if (rc == SQLITE_OK) rc = sqlite3_exec(x->db, "COMMIT", NULL, NULL, NULL);
  if (rc != SQLITE_OK) {
    char msg[160];
    snprintf(msg, sizeof msg, "%s", sqlite3_errmsg(x->db));
    sqlite3_exec(x->db, "ROLLBACK", NULL, NULL, NULL);
    for (pending_pack *p = list; p; p = p->next)
      if (p->rc == SQLITE_OK) p->rc = rc, snprintf(p->msg, sizeof p->msg, "%s", msg);
  }
  pthread_mutex_unlock(&x->mu);
}

/* Group commit: each upload's pack waits in a queue; a thread that finds
 * no commit running takes the whole queue and commits it as one
 * transaction (one WAL write and sync), while the packs that come
 * meanwhile wait for the next one. Under load a sync serves many uploads,
 * instead of each waiting in turn for its own. */
static int index_add(br_xfer__index *x, pending_pack *me) {
  pthread_mutex_lock(&x->qmu);
  me->next = NULL;
  *x->tail = me;
  x->tail = &me->next;
  while (!me->done) {
    if (x->committing) {
      pthread_cond_wait(&x->qcv, &x->qmu);
      continue;
    }
    pending_pack *list = x->queue;
    x->queue = NULL;
    x->tail = &x->queue;
    x->committing = true;
    pthread_mutex_unlock(&x->qmu);
    commit_group(x, list);
    pthread_mutex_lock(&x->qmu);
    for (pending_pack *p = list; p; p = p->next) p->done = true;
    x->committing = false;
    pthread_cond_broadcast(&x->qcv);
  }
  pthread_mutex_unlock(&x->qmu);
  return me->rc;
}

int br_xfer__pack_write(br_xfer__store *s, const br_xfer__buf *pack,
                        const br_xfer__packed *objs, size_t n, char rel[64], br_error *err) {
  return br_xfer__pack_write_ex(s, pack, objs, n, false, rel, err);
}

int br_xfer__pack_write_ex(br_xfer__store *s, const br_xfer__buf *pack,
                           const br_xfer__packed *objs, size_t n, bool move, char rel_out[64],
                           br_error *err) {
  if (rel_out) rel_out[0] = 0;
  if (n == 0) return BR_OK;
  br_xfer__index *x = s->index;
  /* A fresh name: letters from a digest of time, pid and this call. */
  char name[40], rel[64];
  br_xfer_digest r;
  char seed[96];
  snprintf(seed, sizeof seed, "%d-%p-%f", (int)getpid(), (const void *)objs, br_xfer__now());
  br_xfer_sha256(seed, strlen(seed), &r);
  for (int i = 0; i < 20; i++) name[i] = (char)('a' + r.b[i] % 26);
  snprintf(name + 20, sizeof name - 20, ".pack");
  snprintf(rel, sizeof rel, "packs/%s", name);
  /* Direct I/O: no page cache to fill, and the sync has nothing left to
   * write; the bytes are read back when a pull asks for them. */
  bool direct;
  int fd = br_xfer__open_new(s->rootfd, rel, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644,
                             &direct);
  if (fd < 0) return br_error_set(err, BR_EIO, "create %s/%s: %s", s->root, rel, strerror(errno));
  int w = br_xfer__write_whole_buf(fd, direct, pack->data, pack->len, pack->cap);
  close(fd);
  /* the pack and its name on disk, in a sync shared with the uploads
   * running at the same time */
  if (w == 0) w = br_xfer__store_sync(s);
  if (w) {
    unlinkat(s->rootfd, rel, 0);
    return br_error_set(err, BR_EIO, "write %s/%s: %s", s->root, rel, strerror(-w));
  }
  /* The pack is durable; now make it reachable, all at once. */
  pending_pack me = {.name = name, .objs = objs, .n = n, .move = move};
  int rc = index_add(x, &me);
  if (rc != SQLITE_OK) {
    br_error_set(err, BR_EIO, "depot index: %s", me.msg);
    unlinkat(s->rootfd, rel, 0);
    return BR_EIO;
  }
  if (rel_out) snprintf(rel_out, 64, "%s", rel);
  return BR_OK;
}

int br_xfer__packed_check(int fd, int64_t off, int64_t len, int64_t raw,
                          const br_xfer_digest *want, br_xfer__check_buf *b) {
  if (fd < 0 || len < 0 || len > BR_XFER__MAX_CHUNK) return 1;
  if ((size_t)len > b->cap) {
    uint8_t *g = realloc(b->buf, (size_t)len);
    if (!g) return 1;
    b->buf = g;
    b->cap = (size_t)len;
  }
  if (br_xfer__pread_all(fd, b->buf, (size_t)len, off) != 0) return 1;
  return br_xfer__stored_matches(b->buf, (size_t)len, raw, want, &b->scratch, &b->scap) ? 0 : 2;
}

void br_xfer__check_buf_free(br_xfer__check_buf *b) {
  free(b->buf);
  br_xfer__mem_put(b->scratch, b->scap);
  memset(b, 0, sizeof *b);
}

/* fsck's reading of every packed object, as an index scan goes. */
typedef struct fsck_state {
  br_xfer__store *s;
  int64_t *checked;
  br_xfer__fsck_fn each;
  void *ud;
  br_xfer_digest *bad; /* the damaged, for the caller to set aside */
  size_t nbad, badcap;
  br_xfer__check_buf b;
} fsck_state;

static int fsck_one(void *ud, int64_t pack, const char *name, const br_xfer_digest *want,
                    int64_t off, int64_t len, int64_t raw) {
  (void)pack;
  fsck_state *f = ud;
  char rel[128];
  snprintf(rel, sizeof rel, "packs/%s", name);
  int fd = openat(f->s->rootfd, rel, O_RDONLY | O_CLOEXEC);
  int c = br_xfer__packed_check(fd, off, len, raw, want, &f->b);
  if (fd >= 0) close(fd);
  char what[300];
  what[0] = 0;
  if (c)
    snprintf(what, sizeof what, "%s at %lld: %s", rel, (long long)off,
             c == 1 ? "cannot be read" : "bytes do not match their digest");
  else
    (*f->checked)++;
  if (!what[0]) return BR_OK;
  if (f->nbad == f->badcap) {
    size_t cap = f->badcap ? f->badcap * 2 : 16;
    br_xfer_digest *g = realloc(f->bad, cap * sizeof *g);
    if (!g) return BR_ENOMEM;
    f->bad = g;
    f->badcap = cap;
  }
  f->bad[f->nbad++] = *want;
  if (f->each) f->each(f->ud, what);
  return BR_OK;
}

int br_xfer__index_fsck(br_xfer__store *s, br_xfer__fsck_fn each, void *ud, int64_t *checked,
                        br_xfer_digest **bad, size_t *nbad, br_error *err) {
  fsck_state f = {s, checked, each, ud, NULL, 0, 0, {NULL, NULL, 0, 0}};
  int rc = br_xfer__index_scan(s, fsck_one, &f, err);
  if (rc == BR_ENOMEM) rc = br_error_set(err, BR_ENOMEM, "out of memory");
  br_xfer__check_buf_free(&f.b);
  *bad = f.bad;
  *nbad = f.nbad;
  return rc;
}

int br_xfer__index_forget(br_xfer__store *s, const br_xfer_digest *d, const char *rel,
                          int64_t off, br_error *err) {
  br_xfer__index *x = s->index;
  const char *name = strncmp(rel, "packs/", 6) == 0 ? rel + 6 : rel;
  sqlite3_stmt *q = NULL;
  pthread_mutex_lock(&x->mu);
  /* only where it was found damaged: a gc may have moved it since */
  int rc = sqlite3_prepare_v2(x->db,
                              "DELETE FROM objects WHERE digest=? AND off=? AND pack=(SELECT id "
                              "FROM packs WHERE name=?)",
                              -1, &q, NULL);
  if (rc == SQLITE_OK) {
    sqlite3_bind_blob(q, 1, d->b, BR_XFER_DIGEST_LEN, SQLITE_STATIC);
    sqlite3_bind_int64(q, 2, off);
    sqlite3_bind_text(q, 3, name, -1, SQLITE_STATIC);
    rc = sqlite3_step(q) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
  }
  if (rc != SQLITE_OK) br_error_set(err, BR_EIO, "depot index: %s", sqlite3_errmsg(x->db));
  sqlite3_finalize(q);
  pthread_mutex_unlock(&x->mu);
  return rc == SQLITE_OK ? BR_OK : BR_EIO;
}

int64_t br_xfer__pack_clean(br_xfer__store *s, bool dry_run, int64_t *bytes) {
  /* A pack that no index entry names and that is older than an hour was cut
   * off by a crash between its sync and its index commit. */
  br_xfer__index *x = s->index;
  int64_t removed = 0;
  if (bytes) *bytes = 0;
  int fd = openat(s->rootfd, "packs", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
  if (!dir) {
    if (fd >= 0) close(fd);
    return 0;
  }
  sqlite3_stmt *q = NULL;
  pthread_mutex_lock(&x->mu);
  sqlite3_prepare_v2(x->db, "SELECT 1 FROM packs WHERE name=?", -1, &q, NULL);
  time_t now = time(NULL);
  struct dirent *de;
  while (q && (de = readdir(dir))) {
    struct stat st;
    if (de->d_name[0] == '.' || fstatat(fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
        !S_ISREG(st.st_mode) || now - st.st_mtime < 3600)
      continue;
    sqlite3_reset(q);
    sqlite3_bind_text(q, 1, de->d_name, -1, SQLITE_TRANSIENT);
    if (sqlite3_step(q) == SQLITE_DONE && (dry_run || unlinkat(fd, de->d_name, 0) == 0)) {
      removed++;
      if (bytes) *bytes += st.st_size;
    }
  }
  sqlite3_finalize(q);
  pthread_mutex_unlock(&x->mu);
  if (removed && !dry_run) br__fsync_dirfd(fd);
  closedir(dir);
  return removed;
}

int br_xfer__index_scan(br_xfer__store *s,
                        int (*cb)(void *ud, int64_t pack, const char *name,
                                  const br_xfer_digest *d, int64_t off, int64_t len,
                                  int64_t raw),
                        void *ud, br_error *err) {
  br_xfer__index *x = s->index;
  sqlite3_stmt *q = NULL;
  pthread_mutex_lock(&x->mu);
  int rc = sqlite3_prepare_v2(x->db,
                              "SELECT p.id, p.name, o.digest, o.off, o.len, o.raw FROM objects o "
                              "JOIN packs p ON p.id = o.pack ORDER BY p.id, o.off",
                              -1, &q, NULL);
  int out = rc == SQLITE_OK ? BR_OK : br_error_set(err, BR_EIO, "depot index unreadable");
  while (out == BR_OK && (rc = sqlite3_step(q)) == SQLITE_ROW) {
    br_xfer_digest d;
    if (sqlite3_column_bytes(q, 2) != BR_XFER_DIGEST_LEN) continue;
    memcpy(d.b, sqlite3_column_blob(q, 2), BR_XFER_DIGEST_LEN);
    out = cb(ud, sqlite3_column_int64(q, 0), (const char *)sqlite3_column_text(q, 1), &d,
             sqlite3_column_int64(q, 3), sqlite3_column_int64(q, 4), sqlite3_column_int64(q, 5));
  }
  if (out == BR_OK && rc != SQLITE_DONE)
    out = br_error_set(err, BR_EIO, "depot index: %s", sqlite3_errmsg(x->db));
  sqlite3_finalize(q);
  pthread_mutex_unlock(&x->mu);
  return out;
}

int br_xfer__index_drop_packs(br_xfer__store *s, const int64_t *ids, size_t n, br_error *err) {
  if (!n) return BR_OK;
  br_xfer__index *x = s->index;
  pthread_mutex_lock(&x->mu);
  int rc = sqlite3_exec(x->db,
                        "BEGIN IMMEDIATE; CREATE TEMP TABLE IF NOT EXISTS dead (id INTEGER "
                        "PRIMARY KEY); DELETE FROM dead;",
                        NULL, NULL, NULL);
  sqlite3_stmt *ins = NULL;
  if (rc == SQLITE_OK)
    rc = sqlite3_prepare_v2(x->db, "INSERT OR IGNORE INTO dead VALUES (?)", -1, &ins, NULL);
  for (size_t i = 0; i < n && rc == SQLITE_OK; i++) {
    sqlite3_reset(ins);
    sqlite3_bind_int64(ins, 1, ids[i]);
    rc = sqlite3_step(ins) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
  }
  sqlite3_finalize(ins);
  /* the rows still pointing at them: moved objects point elsewhere now */
  if (rc == SQLITE_OK)
    rc = sqlite3_exec(x->db,
                      "DELETE FROM objects WHERE pack IN (SELECT id FROM dead);"
                      "DELETE FROM packs WHERE id IN (SELECT id FROM dead); COMMIT;",
                      NULL, NULL, NULL);
  if (rc != SQLITE_OK) {
    br_error_set(err, BR_EIO, "depot index: %s", sqlite3_errmsg(x->db));
    sqlite3_exec(x->db, "ROLLBACK", NULL, NULL, NULL);
  }
  pthread_mutex_unlock(&x->mu);
  return rc == SQLITE_OK ? BR_OK : BR_EIO;
}
