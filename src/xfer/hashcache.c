/* The hash cache: a local SQLite table from a file's identity (device,
 * inode, size, mtime, ctime, all in nanoseconds) to its digests, so a push
 * of an unchanged tree hashes nothing. ctime catches a rewrite that restored
 * the mtime. A missing or broken cache only costs hashing, never a wrong
 * answer: any mismatch of the key is a miss. A damaged file is put aside
 * and started again; one that cannot be used at all is done without. Both
 * are said in the transfer's warning. */
#include "xfer_int.h"

#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct br_xfer__hcache {
  sqlite3 *db;
  sqlite3_stmt *get, *put;
  pthread_mutex_t mu;
};

static void close_db(br_xfer__hcache *c) {
  sqlite3_finalize(c->get);
  sqlite3_finalize(c->put);
  sqlite3_close(c->db);
  c->get = c->put = NULL;
  c->db = NULL;
}

/* Opens (or makes) the cache at path: a SQLite result code. */
static int open_db(br_xfer__hcache *c, const char *path) {
  int rc = sqlite3_open_v2(path, &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                                             SQLITE_OPEN_FULLMUTEX, NULL);
  if (rc == SQLITE_OK) {
    sqlite3_busy_timeout(c->db, 10000);
    rc = sqlite3_exec(c->db,
                      "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                      "CREATE TABLE IF NOT EXISTS files (dev INTEGER, ino INTEGER,"
                      " size INTEGER, mtime INTEGER, ctime INTEGER, chunk_size INTEGER,"
                      " digest BLOB, chunks BLOB, PRIMARY KEY (dev, ino))",
                      NULL, NULL, NULL);
  }
  if (rc == SQLITE_OK)
    rc = sqlite3_prepare_v2(c->db,
                            "SELECT digest, chunks FROM files WHERE dev=? AND ino=? AND "
                            "size=? AND mtime=? AND ctime=? AND chunk_size=?",
                            -1, &c->get, NULL);
  if (rc == SQLITE_OK)
    rc = sqlite3_prepare_v2(c->db, "INSERT OR REPLACE INTO files VALUES (?,?,?,?,?,?,?,?)",
                            -1, &c->put, NULL);
  return rc == SQLITE_OK ? rc : sqlite3_errcode(c->db) & 0xff;
}

int br_xfer__hcache_open(const char *path, br_xfer__hcache **out, char *warn, size_t warn_size,
                         br_error *err) {
  *out = NULL;
  if (path && !*path) return BR_OK;
  char *def = NULL;
  if (!path) {
    const char *dir = getenv("BRAID_CACHE_DIR");
    char *d = NULL;
    if (dir && *dir) {
      d = strdup(dir);
    } else {
      const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
      if (xdg && *xdg) {
        if (asprintf(&d, "%s/braid", xdg) < 0) d = NULL;
      } else if (home && *home) {
        if (asprintf(&d, "%s/.cache/braid", home) < 0) d = NULL;
      }
    }
    if (!d) return BR_OK; /* nowhere to keep a cache: run without */
    if (br_xfer__mkdirs(d, NULL) != BR_OK) {
      free(d);
      return BR_OK;
    }
    if (asprintf(&def, "%s/hashcache.db", d) < 0) def = NULL;
    free(d);
    if (!def) return br_error_set(err, BR_ENOMEM, "out of memory");
    path = def;
  }
  br_xfer__hcache *c = calloc(1, sizeof *c);
  if (!c) {
    free(def);
    return br_error_set(err, BR_ENOMEM, "out of memory");
  }
  pthread_mutex_init(&c->mu, NULL);
  int rc = open_db(c, path);
  char why[400] = "";
  if (rc == SQLITE_NOTADB || rc == SQLITE_CORRUPT) {
    /* A damaged cache (a disk that filled up, a crash on a file system
     * that lost the order of writes): put aside where it can be looked
     * at, and start a new one. Only hashing is lost. */
    char *aside = NULL;
    snprintf(why, sizeof why, "%s", sqlite3_errmsg(c->db));
    close_db(c);
    if (asprintf(&aside, "%s.damaged", path) < 0) aside = NULL;
    if (aside && rename(path, aside) == 0) {
      for (int i = 0; i < 2; i++) {
        char *side = NULL;
        if (asprintf(&side, "%s%s", path, i ? "-shm" : "-wal") >= 0) unlink(side);
        free(side);
      }
      rc = open_db(c, path);
      if (rc == SQLITE_OK && warn)
        snprintf(warn, warn_size, "hash cache %s was damaged (%s): moved to %s, a new one started",
                 path, why, aside);
    } else {
      size_t l = strlen(why);
      snprintf(why + l, sizeof why - l, ", and it could not be moved aside (%s)",
               strerror(errno));
    }
    free(aside);
  }
  if (rc != SQLITE_OK) {
    /* Unusable (a folder that cannot be written, a damaged file that
     * cannot be moved): the transfer goes on without it, and says so. */
    if (c->db) snprintf(why, sizeof why, "%s", sqlite3_errmsg(c->db));
    if (warn)
      snprintf(warn, warn_size, "hash cache %s: %s; going on without it (every file is hashed)",
               path, why);
    br_xfer__hcache_close(c);
    c = NULL;
  }
  free(def);
  *out = c;
  return BR_OK;
}

void br_xfer__hcache_close(br_xfer__hcache *c) {
  if (!c) return;
  close_db(c);
  pthread_mutex_destroy(&c->mu);
  free(c);
}

static void bind_key(sqlite3_stmt *s, const struct stat *st, int64_t chunk_size) {
  sqlite3_bind_int64(s, 1, (sqlite3_int64)st->st_dev);
  sqlite3_bind_int64(s, 2, (sqlite3_int64)st->st_ino);
  sqlite3_bind_int64(s, 3, (sqlite3_int64)st->st_size);
  sqlite3_bind_int64(s, 4, br_xfer__mtime_ns(st));
  sqlite3_bind_int64(s, 5, br_xfer__ctime_ns(st));
  sqlite3_bind_int64(s, 6, chunk_size);
}

int br_xfer__hcache_get(br_xfer__hcache *c, const struct stat *st, int64_t chunk_size,
                        br_xfer_digest *file, br_xfer_digest **chunks, size_t *nchunks) {
  *chunks = NULL;
  *nchunks = 0;
  if (!c) return 0;
  int found = 0;
  pthread_mutex_lock(&c->mu);
  sqlite3_reset(c->get);
  bind_key(c->get, st, chunk_size);
  if (sqlite3_step(c->get) == SQLITE_ROW) {
    const void *d = sqlite3_column_blob(c->get, 0);
    int dl = sqlite3_column_bytes(c->get, 0);
    const void *cs = sqlite3_column_blob(c->get, 1);
    int cl = sqlite3_column_bytes(c->get, 1);
    size_t want = (size_t)((st->st_size + chunk_size - 1) / chunk_size);
    if (d && dl == BR_XFER_DIGEST_LEN && (size_t)cl == want * BR_XFER_DIGEST_LEN) {
      memcpy(file->b, d, BR_XFER_DIGEST_LEN);
      if (want) {
        *chunks = malloc((size_t)cl);
        if (*chunks) {
          memcpy(*chunks, cs, (size_t)cl);
          *nchunks = want;
          found = 1;
        }
      } else {
        found = 1;
      }
    }
  }
  sqlite3_reset(c->get);
  pthread_mutex_unlock(&c->mu);
  return found;
}

int br_xfer__hcache_put(br_xfer__hcache *c, const struct stat *st, int64_t chunk_size,
                        const br_xfer_digest *file, const br_xfer_digest *chunks,
                        size_t nchunks) {
  if (!c) return BR_OK;
  pthread_mutex_lock(&c->mu);
  sqlite3_reset(c->put);
  bind_key(c->put, st, chunk_size);
  sqlite3_bind_blob(c->put, 7, file->b, BR_XFER_DIGEST_LEN, SQLITE_TRANSIENT);
  sqlite3_bind_blob(c->put, 8, nchunks ? (const void *)chunks : "",
                    (int)(nchunks * BR_XFER_DIGEST_LEN), SQLITE_TRANSIENT);
  int rc = sqlite3_step(c->put);
  sqlite3_reset(c->put);
  pthread_mutex_unlock(&c->mu);
  return rc == SQLITE_DONE ? BR_OK : BR_EIO;
}

int br_xfer__hcache_begin(br_xfer__hcache *c) {
  if (!c) return BR_OK;
  pthread_mutex_lock(&c->mu);
  int rc = sqlite3_exec(c->db, "BEGIN", NULL, NULL, NULL);
  pthread_mutex_unlock(&c->mu);
  return rc == SQLITE_OK ? BR_OK : BR_EIO;
}

int br_xfer__hcache_commit(br_xfer__hcache *c) {
  if (!c) return BR_OK;
  pthread_mutex_lock(&c->mu);
  int rc = sqlite3_exec(c->db, "COMMIT", NULL, NULL, NULL);
  pthread_mutex_unlock(&c->mu);
  return rc == SQLITE_OK ? BR_OK : BR_EIO;
}
