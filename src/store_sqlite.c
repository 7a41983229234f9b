/* The SQLite store: the embedded default. One file, WAL journal, a versioned
 * schema (PRAGMA user_version) migrated forward on open. Writes are batched by
 * the engine in one transaction (group commit); statements are prepared once.
 * Durability: synchronous=FULL by default (a commit survives power loss);
 * "?sync=normal" after the path trades that for speed (a commit still
 * survives a crash of braid).
 *
 * One engine per store: a read-write open takes an exclusive flock on
 * PATH-lock (a file of its own: a flock on the database could clash with
 * SQLite's POSIX locks, on NFS where flock is emulated by them) and writes
 * who holds it there, so a second braid run or server on the same store is
 * refused at once, naming the holder (two engines would both dispatch the
 * same invocations). The kernel drops the lock when its holder dies.
 * Read-only opens (status, show, the server's readers) take no lock. */
#include <braid/store.h>

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fs.h"

typedef struct sqlite_store {
  br_store base;
  sqlite3 *db;
  int readonly;
  int lock_fd; /* PATH-lock, held while open read-write; -1 otherwise */
  bool lock_made; /* this open created PATH-lock: a failed open removes it */
  sqlite3_stmt *ins_task, *upd_task, *upd_task_noattrs, *add_live, *put_split, *get_split,
      *get_task, *put_inv;
} sqlite_store;

static const char *const migrations[] = {
    /* 1: the first schema */
    "CREATE TABLE graphs(id INTEGER PRIMARY KEY, name TEXT NOT NULL, version INTEGER NOT NULL,"
    "  json TEXT NOT NULL, created INTEGER NOT NULL, UNIQUE(name, version));"
    "CREATE TABLE tasks(id INTEGER PRIMARY KEY, graph_id INTEGER NOT NULL, name TEXT,"
    "  node TEXT NOT NULL, port INTEGER NOT NULL, state INTEGER NOT NULL,"
    "  paused INTEGER NOT NULL DEFAULT 0, attrs TEXT NOT NULL, parent INTEGER,"
    "  split_id INTEGER, split_elem INTEGER, split_count INTEGER,"
    "  priority INTEGER NOT NULL DEFAULT 0, group_id INTEGER, wait_key INTEGER,"
    "  live_children INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,"
    "  created INTEGER NOT NULL, updated INTEGER NOT NULL, error TEXT);"
    "CREATE INDEX tasks_active ON tasks(state) WHERE state NOT IN (5, 8);"
    "CREATE INDEX tasks_node_state ON tasks(node, state);"
    "CREATE INDEX tasks_parent ON tasks(parent) WHERE parent IS NOT NULL;"
    "CREATE TABLE splits(id INTEGER PRIMARY KEY, count INTEGER NOT NULL, live INTEGER NOT NULL,"
    "  orig_task INTEGER NOT NULL, prev_split INTEGER, prev_elem INTEGER, prev_count INTEGER);"
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT);",
    /* 2: invocations */
    "CREATE TABLE invocations(id INTEGER PRIMARY KEY, task_id INTEGER NOT NULL,"
    "  node TEXT, attempt INTEGER NOT NULL, status TEXT NOT NULL, exit_code INTEGER,"
    "  term_signal INTEGER, runtime REAL, peak_rss_kb INTEGER, log_path TEXT, log_tail TEXT,"
    "  error TEXT, worker TEXT, started INTEGER, ended INTEGER);"
    "CREATE INDEX invocations_task ON invocations(task_id);",
};
#define SCHEMA_VERSION ((int)(sizeof migrations / sizeof migrations[0]))

#define TASK_COLS                                                                      \
  "id, graph_id, name, node, port, state, paused, attrs, parent, split_id, split_elem, " \
  "split_count, priority, group_id, wait_key, live_children, attempts, created, updated, error"

static char *col_strdup(sqlite3_stmt *st, int i);

static int dberr(sqlite_store *s, br_error *err, const char *what) {
  return br_error_set(err, BR_ESTORE, "sqlite store %s: %s: %s", s->base.uri ? s->base.uri : "",
                      what, sqlite3_errmsg(s->db));
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int exec_sql(sqlite_store *s, const char *sql, br_error *err) {
  char *msg = NULL;
  if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
    br_error_set(err, BR_ESTORE, "sqlite store %s: %s", s->base.uri ? s->base.uri : "",
                 msg ? msg : "error");
    sqlite3_free(msg);
    return BR_ESTORE;
  }
  return BR_OK;
}

static int migrate(sqlite_store *s, br_error *err) {
  sqlite3_stmt *st;
  int version = 0;
  if (sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK)
    return dberr(s, err, "reading schema version");
  if (sqlite3_step(st) == SQLITE_ROW) version = sqlite3_column_int(st, 0);
  sqlite3_finalize(st);
  if (version > SCHEMA_VERSION)
    return br_error_set(err, BR_EVERSION,
                        "store %s has schema version %d; this braid knows up to %d (upgrade braid)",
                        s->base.uri, version, SCHEMA_VERSION);
  if (version == SCHEMA_VERSION) return BR_OK;
  if (s->readonly)
    return br_error_set(err, BR_ESTORE, "store %s needs a schema upgrade; open it read-write once",
                        s->base.uri);
  int rc = exec_sql(s, "BEGIN IMMEDIATE", err);
  if (rc) return rc;
  for (int v = version; v < SCHEMA_VERSION; v++) {
    if ((rc = exec_sql(s, migrations[v], err))) {
      exec_sql(s, "ROLLBACK", NULL);
      return rc;
    }
  }
  char sql[64];
  snprintf(sql, sizeof sql, "PRAGMA user_version = %d", SCHEMA_VERSION);
  if ((rc = exec_sql(s, sql, err)) || (rc = exec_sql(s, "COMMIT", err))) {
    exec_sql(s, "ROLLBACK", NULL);
    return rc;
  }
  return BR_OK;
}

static int prep(sqlite_store *s, sqlite3_stmt **st, const char *sql, br_error *err) {
  if (sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL) != SQLITE_OK)
    return dberr(s, err, "preparing a statement");
  return BR_OK;
}

static void sq_close(br_store *bs) {
  sqlite_store *s = (sqlite_store *)bs;
  sqlite3_stmt *all[] = {s->ins_task, s->upd_task, s->upd_task_noattrs, s->add_live,
                         s->put_split, s->get_split, s->get_task, s->put_inv};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) sqlite3_finalize(all[i]);
  sqlite3_close(s->db);
  if (s->lock_fd >= 0) close(s->lock_fd); /* lets go of the lock */
  free(s);
}

/* Takes the store's lock (see the top of the file) and says who holds it;
 * when another does, the error names it from what it wrote. */
static int take_lock(sqlite_store *s, const char *path, br_error *err) {
  char lock[4200];
  snprintf(lock, sizeof lock, "%s-lock", path);
  int fd = open(lock, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
  s->lock_made = fd >= 0;
  if (fd < 0 && errno == EEXIST) fd = open(lock, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0)
    return br_error_set(err, BR_ESTORE, "cannot open the lock of store %s (%s): %s", path, lock,
                        strerror(errno));
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int e = errno;
    close(fd);
    if (e != EWOULDBLOCK)
      return br_error_set(err, BR_ESTORE, "cannot lock store %s (%s): %s", path, lock,
                          strerror(e));
    char *who = br__read_file(lock, NULL);
    size_t n = who ? strlen(who) : 0;
    while (n && (who[n - 1] == '\n' || who[n - 1] == ' ')) who[--n] = '\0';
    br_error_set(err, BR_ESTORE,
                 "store %s is in use by %s: one braid server or run at a time owns a store "
                 "(two would run its jobs twice); stop that one first",
                 path, n ? who : "another braid (it has not said which yet)");
    free(who);
    return BR_ESTORE;
  }
  char line[512];
  br__holder(line, sizeof line - 1);
  size_t n = strlen(line);
  line[n++] = '\n';
  /* best effort: the lock is what counts, the text only names its holder */
  bool named = ftruncate(fd, 0) == 0 && br__write_all(fd, line, n) == 0;
  (void)named;
  s->lock_fd = fd;
  return BR_OK;
}

/* A file that is there and cannot be a store (a folder, a CSV file) is
 * refused before anything is written beside it (SQLite says "disk I/O
 * error" or "file is not a database", and a read-only open found no schema
 * and asked for an upgrade). Absent and empty files are new stores. */
static int check_file(const char *path, br_error *err) {
  struct stat st;
  if (stat(path, &st) != 0) return BR_OK; /* absent: made; or SQLite says why not */
  const char *why = NULL;
  char head[16] = {0};
  if (S_ISDIR(st.st_mode)) {
    why = "it is a folder";
  } else if (!S_ISREG(st.st_mode)) {
    why = "it is not a regular file";
  } else if (st.st_size > 0) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, head, sizeof head) : -1;
    if (fd >= 0) close(fd);
    if (n >= 0 && (n < (ssize_t)sizeof head || memcmp(head, "SQLite format 3", 16) != 0))
      why = "it is not a SQLite database";
  }
  if (!why) return BR_OK;
  return br_error_set(err, BR_EINVAL, "%s is not a braid store: %s", path, why);
}

/* A SQLite database that braid did not make (schema version 0 with tables
 * of its own) is not migrated into; nor is a broken file read as one. Run
 * before anything is written to it. existing: an empty database is no
 * store (BR_STORE_EXISTING). */
static int check_schema(sqlite_store *s, const char *path, bool existing, br_error *err) {
  sqlite3_stmt *st = NULL;
  int version = -1, tables = 0;
  int rc = sqlite3_prepare_v2(s->db,
                              "SELECT (SELECT user_version FROM pragma_user_version),"
                              " (SELECT count(*) FROM sqlite_master)", -1, &st, NULL);
  if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    version = sqlite3_column_int(st, 0);
    tables = sqlite3_column_int(st, 1);
    rc = SQLITE_OK;
  }
  sqlite3_finalize(st);
  int code = sqlite3_extended_errcode(s->db) & 0xff;
  if (rc != SQLITE_OK && (code == SQLITE_NOTADB || code == SQLITE_CORRUPT))
    return br_error_set(err, BR_EINVAL, "%s is not a braid store: %s", path,
                        sqlite3_errmsg(s->db));
  if (rc != SQLITE_OK) return dberr(s, err, "reading its schema");
  if (version == 0 && tables > 0)
    return br_error_set(err, BR_EINVAL,
                        "%s is not a braid store: a SQLite database without braid's tables",
                        path);
  if (version == 0 && existing)
    return br_error_set(err, BR_ENOTFOUND, "no store at %s: an empty SQLite database", path);
  if (version == 0 && s->readonly)
    return br_error_set(err, BR_EINVAL,
                        "%s is not a braid store: an empty database (no run has used it)", path);
  return BR_OK;
}

static int sq_open(const char *uri, int flags, br_store **out, br_error *err) {
  sqlite_store *s = calloc(1, sizeof *s);
  if (!s) return br_error_set(err, BR_ENOMEM, "out of memory");
  extern const br_store_ops br_store_sqlite;
  s->base.ops = &br_store_sqlite;
  char path[4096];
  const char *sync = "FULL";
  snprintf(path, sizeof path, "%s", uri);
  char *q = strchr(path, '?');
  if (q) {
    *q++ = '\0';
    if (strstr(q, "sync=normal")) sync = "NORMAL";
    else if (strstr(q, "sync=off")) sync = "OFF";
  }
  if (!*path || strcmp(path, ":memory:") == 0) {
    /* SQLite's private databases: gone when the store closes */
    free(s);
    return br_error_set(err, BR_EINVAL, "a store is a file: '%s' is %s, lost when it is closed",
                        path, *path ? "SQLite's in-memory database" : "a temporary database");
  }
  struct stat st;
  if ((flags & BR_STORE_EXISTING) &&
      (stat(path, &st) != 0 ? errno == ENOENT : S_ISREG(st.st_mode) && st.st_size == 0)) {
    free(s);
    return br_error_set(err, BR_ENOTFOUND, "no store at %s", path);
  }
  if (check_file(path, err)) {
    free(s);
    return BR_EINVAL;
  }
  s->base.uri = strdup(path);
  s->readonly = (flags & BR_STORE_READONLY) != 0;
  s->lock_fd = -1;
  if (!s->readonly) {
    int lrc = take_lock(s, path, err);
    if (lrc) {
      free(s->base.uri);
      free(s);
      return lrc;
    }
  }
  int oflags = s->readonly ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  oflags |= SQLITE_OPEN_NOMUTEX;
  if (sqlite3_open_v2(path, &s->db, oflags, NULL) != SQLITE_OK) {
    br_error_set(err, BR_ESTORE, "cannot open store %s: %s", path,
                 s->db ? sqlite3_errmsg(s->db) : "out of memory");
    char lock[4200];
    snprintf(lock, sizeof lock, "%s-lock", path);
    if (s->lock_made) unlink(lock);
    free(s->base.uri);
    sqlite3_close(s->db);
    if (s->lock_fd >= 0) close(s->lock_fd);
    free(s);
    return BR_ESTORE;
  }
  sqlite3_busy_timeout(s->db, 10000);
  char pragmas[256];
  snprintf(pragmas, sizeof pragmas,
           "PRAGMA journal_mode=WAL; PRAGMA synchronous=%s; PRAGMA cache_size=-32768;"
           "PRAGMA temp_store=MEMORY;",
           sync);
  int rc = check_schema(s, path, (flags & BR_STORE_EXISTING) != 0, err);
  if (!rc && !s->readonly) rc = exec_sql(s, pragmas, err);
  if (!rc) rc = migrate(s, err);
  if (!rc && !s->readonly) {
    rc = prep(s, &s->ins_task,
              "INSERT INTO tasks(" TASK_COLS ") VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
              err);
    if (!rc)
      rc = prep(s, &s->upd_task,
                "UPDATE tasks SET name=?3, node=?4, port=?5, state=?6, paused=?7, attrs=?8,"
                " parent=?9, split_id=?10, split_elem=?11, split_count=?12, priority=?13,"
                " group_id=?14, wait_key=?15, live_children=?16, attempts=?17, updated=?19,"
                " error=?20 WHERE id=?1",
                err);
    if (!rc)
      rc = prep(s, &s->upd_task_noattrs,
                "UPDATE tasks SET name=?3, node=?4, port=?5, state=?6, paused=?7,"
                " parent=?9, split_id=?10, split_elem=?11, split_count=?12, priority=?13,"
                " group_id=?14, wait_key=?15, live_children=?16, attempts=?17, updated=?19,"
                " error=?20 WHERE id=?1",
                err);
    if (!rc)
      rc = prep(s, &s->add_live, "UPDATE tasks SET live_children=live_children+?2 WHERE id=?1",
                err);
    if (!rc)
      rc = prep(s, &s->put_inv,
                "INSERT OR REPLACE INTO invocations(id, task_id, node, attempt, status, exit_code,"
                " term_signal, runtime, peak_rss_kb, log_path, log_tail, error, worker, started, ended)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                err);
    if (!rc)
      rc = prep(s, &s->put_split,
                "INSERT OR REPLACE INTO splits(id, count, live, orig_task, prev_split, prev_elem,"
                " prev_count) VALUES (?,?,?,?,?,?,?)",
                err);
  }
  if (!rc) rc = prep(s, &s->get_split, "SELECT id, count, live, orig_task, prev_split, prev_elem,"
                     " prev_count FROM splits WHERE id=?", err);
  if (!rc) rc = prep(s, &s->get_task, "SELECT " TASK_COLS " FROM tasks WHERE id=?", err);
  if (rc) {
    char lock[4200];
    snprintf(lock, sizeof lock, "%s-lock", path);
    if (s->lock_made) unlink(lock); /* leave nothing behind */
    free(s->base.uri);
    s->base.uri = NULL;
    sq_close(&s->base);
    return rc;
  }
  *out = &s->base;
  return BR_OK;
}

static int sq_begin(br_store *bs, br_error *err) {
  return exec_sql((sqlite_store *)bs, "BEGIN IMMEDIATE", err);
}

static int sq_commit(br_store *bs, br_error *err) {
  return exec_sql((sqlite_store *)bs, "COMMIT", err);
}

static void sq_rollback(br_store *bs) { exec_sql((sqlite_store *)bs, "ROLLBACK", NULL); }

static void bind_opt_i64(sqlite3_stmt *st, int i, int64_t v) {
  if (v) sqlite3_bind_int64(st, i, v);
  else sqlite3_bind_null(st, i);
}

static int bind_task(sqlite3_stmt *st, const br_task_info *t, bool with_attrs) {
  sqlite3_bind_int64(st, 1, t->id);
  sqlite3_bind_int64(st, 2, t->graph_id);
  if (t->name) sqlite3_bind_text(st, 3, t->name, -1, SQLITE_STATIC);
  else sqlite3_bind_null(st, 3);
  sqlite3_bind_text(st, 4, t->node ? t->node : "", -1, SQLITE_STATIC);
  sqlite3_bind_int(st, 5, t->port);
  sqlite3_bind_int(st, 6, (int)t->state);
  sqlite3_bind_int(st, 7, t->paused);
  if (with_attrs) {
    char *a = json_dumps(t->attrs ? t->attrs : json_object(), JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!a) return -1;
    sqlite3_bind_text(st, 8, a, -1, free);
  }
  bind_opt_i64(st, 9, t->parent);
  bind_opt_i64(st, 10, t->split_id);
  sqlite3_bind_int(st, 11, t->split_elem);
  sqlite3_bind_int(st, 12, t->split_count);
  sqlite3_bind_int(st, 13, t->priority);
  bind_opt_i64(st, 14, t->group_id);
  bind_opt_i64(st, 15, t->wait_key);
  sqlite3_bind_int(st, 16, t->live_children);
  sqlite3_bind_int(st, 17, t->attempts);
  sqlite3_bind_int64(st, 18, t->created_ms);
  sqlite3_bind_int64(st, 19, t->updated_ms);
  if (t->error) sqlite3_bind_text(st, 20, t->error, -1, SQLITE_STATIC);
  else sqlite3_bind_null(st, 20);
  return 0;
}

static int step_done(sqlite_store *s, sqlite3_stmt *st, br_error *err, const char *what) {
  int rc = sqlite3_step(st);
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  if (rc != SQLITE_DONE) return dberr(s, err, what);
  return BR_OK;
}

static int sq_task_insert(br_store *bs, const br_task_info *t, br_error *err) {
  sqlite_store *s = (sqlite_store *)bs;
  if (bind_task(s->ins_task, t, true)) return br_error_set(err, BR_ENOMEM, "out of memory");
  return step_done(s, s->ins_task, err, "inserting a task");
}

static int sq_task_update(br_store *bs, const br_task_info *t, bool with_attrs, br_error *err) {
  sqlite_store *s = (sqlite_store *)bs;
  sqlite3_stmt *st = with_attrs ? s->upd_task : s->upd_task_noattrs;
  if (bind_task(st, t, with_attrs)) return br_error_set(err, BR_ENOMEM, "out of memory");
  return step_done(s, st, err, "updating a task");
}

static int sq_task_add_live_children(br_store *bs, int64_t id, int delta, br_error *err) {
  sqlite_store *s = (sqlite_store *)bs;
  sqlite3_bind_int64(s->add_live, 1, id);
  sqlite3_bind_int(s->add_live, 2, delta);
  return step_done(s, s->add_live, err, "updating a task's children");
}

static int sq_split_put(br_store *bs, const br_split *sp, br_error *err) {
  sqlite_store *s = (sqlite_store *)bs;
  sqlite3_stmt *st = s->put_split;
  sqlite3_bind_int64(st, 1, sp->id);
  sqlite3_bind_int(st, 2, sp->count);
  sqlite3_bind_int(st, 3, sp->live);
  sqlite3_bind_int64(st, 4, sp->orig_task);
  bind_opt_i64(st, 5, sp->prev_split);
  sqlite3_bind_int(st, 6, sp->prev_elem);
  sqlite3_bind_int(st, 7, sp->prev_count);
  return step_done(s, st, err, "writing a split");
}

static void bind_text_or_null(sqlite3_stmt *st, int i, const char *v) {
  if (v) sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC);
  else sqlite3_bind_null(st, i);
}

static int sq_inv_put(br_store *bs, const br_inv_row *r, br_error *err) {
  sqlite_store *s = (sqlite_store *)bs;
  sqlite3_stmt *st = s->put_inv;
  sqlite3_bind_int64(st, 1, r->id);
  sqlite3_bind_int64(st, 2, r->task_id);
  bind_text_or_null(st, 3, r->node);
  sqlite3_bind_int(st, 4, r->attempt);
  sqlite3_bind_text(st, 5, r->status ? r->status : "running", -1, SQLITE_STATIC);
  sqlite3_bind_int(st, 6, r->exit_code);
  sqlite3_bind_int(st, 7, r->term_signal);
  sqlite3_bind_double(st, 8, r->runtime);
  sqlite3_bind_int64(st, 9, r->peak_rss_kb);
  bind_text_or_null(st, 10, r->log_path);
  bind_text_or_null(st, 11, r->log_tail);
  bind_text_or_null(st, 12, r->error);
  bind_text_or_null(st, 13, r->worker);
  sqlite3_bind_int64(st, 14, r->started_ms);
  sqlite3_bind_int64(st, 15, r->ended_ms);
  return step_done(s, st, err, "writing an invocation");
}

static int sq_inv_query(br_store *bs, int64_t task_id, int (*cb)(void *ud, br_inv_info *i),
                        void *ud, br_error *err) {
  sqlite_store *s = (sqlite_store *)bs;
  sqlite3_stmt *st;
  const char *sql = task_id ? "SELECT id, task_id, node, attempt, status, exit_code, term_signal,"
                              " runtime, peak_rss_kb, log_path, log_tail, error, worker, started,"
                              " ended FROM invocations WHERE task_id=? ORDER BY id"
                            : "SELECT id, task_id, node, attempt, status, exit_code, term_signal,"
                              " runtime, peak_rss_kb, log_path, log_tail, error, worker, started,"
                              " ended FROM invocations ORDER BY id";
  if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK)
    return dberr(s, err, "reading invocations");
  if (task_id) sqlite3_bind_int64(st, 1, task_id);
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    br_inv_info *i = calloc(1, sizeof *i);
    if (!i) break;
    i->row.id = sqlite3_column_int64(st, 0);
    i->row.task_id = sqlite3_column_int64(st, 1);
    i->row.node = i->buf[BR_INV_NODE] = col_strdup(st, 2);
    i->row.attempt = sqlite3_column_int(st, 3);
    i->row.status = i->buf[BR_INV_STATUS] = col_strdup(st, 4);
    i->row.exit_code = sqlite3_column_int(st, 5);
    i->row.term_signal = sqlite3_column_int(st, 6);
    i->row.runtime = sqlite3_column_double(st, 7);
    i->row.peak_rss_kb = sqlite3_column_int64(st, 8);
    i->row.log_path = i->buf[BR_INV_LOG_PATH] = col_strdup(st, 9);
    i->row.log_tail = i->buf[BR_INV_LOG_TAIL] = col_strdup(st, 10);
    i->row.error = i->buf[BR_INV_ERROR] = col_strdup(st, 11);
    i->row.worker = i->buf[BR_INV_WORKER] = col_strdup(st, 12);
    i->row.started_ms = sqlite3_column_int64(st, 13);
    i->row.ended_ms = sqlite3_column_int64(st, 14);
    if (cb(ud, i)) {
      rc = SQLITE_DONE;
      break;
    }
  }
  sqlite3_finalize(st);
  return (rc == SQLITE_DONE || rc == SQLITE_ROW) ? BR_OK : dberr(s, err, "reading invocations");
}

static int sq_split_get(br_store *bs, int64_t id, br_split *out, br_error *err) {
  sqlite_store *s = (sqlite_store *)bs;
  sqlite3_stmt *st = s->get_split;
  sqlite3_bind_int64(st, 1, id);
  int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    out->id = sqlite3_column_int64(st, 0);
    out->count = sqlite3_column_int(st, 1);
    out->live = sqlite3_column_int(st, 2);
    out->orig_task = sqlite3_column_int64(st, 3);
    out->prev_split = sqlite3_column_int64(st, 4);
    out->prev_elem = sqlite3_column_int(st, 5);
    out->prev_count = sqlite3_column_int(st, 6);
  }
  sqlite3_reset(st);
  if (rc == SQLITE_ROW) return BR_OK;
  if (rc == SQLITE_DONE) return br_error_set(err, BR_ENOTFOUND, "no split %lld", (long long)id);
  return dberr(s, err, "reading a split");
}

static char *col_strdup(sqlite3_stmt *st, int i) {
  const unsigned char *v = sqlite3_column_text(st, i);
  return v ? strdup((const char *)v) : NULL;
}

static int row_to_task(sqlite3_stmt *st, br_task_info *t) {
  memset(t, 0, sizeof *t);
  t->id = sqlite3_column_int64(st, 0);
  t->graph_id = sqlite3_column_int64(st, 1);
  t->name = col_strdup(st, 2);
  t->node = col_strdup(st, 3);
  t->port = sqlite3_column_int(st, 4);
  t->state = (br_task_state)sqlite3_column_int(st, 5);
  t->paused = sqlite3_column_int(st, 6) != 0;
  const char *a = (const char *)sqlite3_column_text(st, 7);
  json_error_t jerr;
  t->attrs = a ? json_loads(a, 0, &jerr) : json_object();
  if (!t->attrs) t->attrs = json_object();
  t->parent = sqlite3_column_int64(st, 8);
  t->split_id = sqlite3_column_int64(st, 9);
  t->split_elem = sqlite3_column_int(st, 10);
  t->split_count = sqlite3_column_int(st, 11);
  t->priority = sqlite3_column_int(st, 12);
  t->group_id = sqlite3_column_int64(st, 13);
  t->wait_key = sqlite3_column_int64(st, 14);
  t->live_children = sqlite3_column_int(st, 15);
  t->attempts = sqlite3_column_int(st, 16);
  t->created_ms = sqlite3_column_int64(st, 17);
  t->updated_ms = sqlite3_column_int64(st, 18);
  t->error = col_strdup(st, 19);
  if ((t->state >= BR_TASK_NSTATES) || !t->node) return -1;
  return 0;
}

static int run_task_query(sqlite_store *s, sqlite3_stmt *st, br_task_cb cb, void *ud,
                          br_error *err) {
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    br_task_info *t = malloc(sizeof *t);
    if (!t) {
      sqlite3_finalize(st);
      return br_error_set(err, BR_ENOMEM, "out of memory");
    }
    if (row_to_task(st, t)) {
      br_task_info_free(t);
      free(t);
      sqlite3_finalize(st);
      return br_error_set(err, BR_ESTORE, "store %s: a task row is damaged", s->base.uri);
    }
    if (cb(ud, t)) break;
  }
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
    int e = dberr(s, err, "reading tasks");
    sqlite3_finalize(st);
    return e;
  }
  sqlite3_finalize(st);
  return BR_OK;
}

static int sq_load_active(br_store *bs, br_task_cb cb, void *ud, br_error *err) {
  sqlite_store *s = (sqlite_store *)bs;
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(s->db,
                         "SELECT " TASK_COLS " FROM tasks WHERE state NOT IN (5, 8) ORDER BY id",
                         -1, &st, NULL) != SQLITE_OK)
    return dberr(s, err, "loading tasks");
  return run_task_query(s, st, cb, ud, err);
}

static int sq_task_get(br_store *bs, int64_t id, br_task_info *out, br_error *err) {
  sqlite_store *s = (sqlite_store *)bs;
  sqlite3_stmt *st = s->get_task;
  sqlite3_bind_int64(st, 1, id);
  int rc = sqlite3_step(st);
  int ret = BR_OK;
  if (rc == SQLITE_ROW) {
    if (row_to_task(st, out)) ret = br_error_set(err, BR_ESTORE, "task %lld: damaged row", (long long)id);
  } else if (rc == SQLITE_DONE) {
    ret = br_error_set(err, BR_ENOTFOUND, "no task %lld", (long long)id);
  } else {
    ret = dberr(s, err, "reading a task");
  }
  sqlite3_reset(st);
  return ret;
}

/* Builds "WHERE ..." for a filter; binds in the same order. */
static int filter_sql(const br_task_filter *f, char *buf, size_t size, int with_state) {
  size_t n = (size_t)snprintf(buf, size, " WHERE 1");
  if (f->graph_id) n += (size_t)snprintf(buf + n, size - n, " AND graph_id=?");
  if (f->node) n += (size_t)snprintf(buf + n, size - n, " AND node=?");
  if (with_state && f->state >= 0) n += (size_t)snprintf(buf + n, size - n, " AND state=?");
  if (f->parent) n += (size_t)snprintf(buf + n, size - n, " AND parent=?");
  if (f->group_id) n += (size_t)snprintf(buf + n, size - n, " AND group_id=?");
  if (f->after_id) n += (size_t)snprintf(buf + n, size - n, " AND id>?");
  return n < size ? 0 : -1;
}

static void filter_bind(sqlite3_stmt *st, const br_task_filter *f, int with_state) {
  int i = 1;
  if (f->graph_id) sqlite3_bind_int64(st, i++, f->graph_id);
  if (f->node) sqlite3_bind_text(st, i++, f->node, -1, SQLITE_TRANSIENT);
  if (with_state && f->state >= 0) sqlite3_bind_int(st, i++, f->state);
  if (f->parent) sqlite3_bind_int64(st, i++, f->parent);
  if (f->group_id) sqlite3_bind_int64(st, i++, f->group_id);
  if (f->after_id) sqlite3_bind_int64(st, i++, f->after_id);
}

static int sq_task_query(br_store *bs, const br_task_filter *f, br_task_cb cb, void *ud,
                         br_error *err) {
  sqlite_store *s = (sqlite_store *)bs;
  char where[512], sql[1024];
  filter_sql(f, where, sizeof where, 1);
  snprintf(sql, sizeof sql, "SELECT " TASK_COLS " FROM tasks%s ORDER BY id%s", where,
           f->limit > 0 ? " LIMIT ?" : "");
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) return dberr(s, err, "querying tasks");
  filter_bind(st, f, 1);
  if (f->limit > 0) sqlite3_bind_int(st, sqlite3_bind_parameter_count(st), f->limit);
  return run_task_query(s, st, cb, ud, err);
}

static int sq_task_count(br_store *bs, const br_task_filter *f, int64_t counts[BR_TASK_NSTATES],
                         br_error *err) {
  sqlite_store *s = (sqlite_store *)bs;
  char where[512], sql[1024];
  filter_sql(f, where, sizeof where, 0);
  snprintf(sql, sizeof sql, "SELECT state, count(*) FROM tasks%s GROUP BY state", where);
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) return dberr(s, err, "counting tasks");
  filter_bind(st, f, 0);
  memset(counts, 0, sizeof(int64_t) * BR_TASK_NSTATES);
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    int state = sqlite3_column_int(st, 0);
    if (state >= 0 && state < BR_TASK_NSTATES) counts[state] = sqlite3_column_int64(st, 1);
  }
  sqlite3_finalize(st);
  return rc == SQLITE_DONE ? BR_OK : dberr(s, err, "counting tasks");
}

static int sq_task_count_nodes(br_store *bs, int64_t graph_id,
                               int (*cb)(void *ud, const char *node, const int64_t *counts),
                               void *ud, br_error *err) {
  sqlite_store *s = (sqlite_store *)bs;
  sqlite3_stmt *st;
  const char *sql = graph_id ? "SELECT node, state, count(*) FROM tasks WHERE graph_id=? "
                               "GROUP BY node, state ORDER BY node"
                             : "SELECT node, state, count(*) FROM tasks GROUP BY node, state "
                               "ORDER BY node";
  if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) return dberr(s, err, "counting tasks");
  if (graph_id) sqlite3_bind_int64(st, 1, graph_id);
  int64_t counts[BR_TASK_NSTATES];
  char node[256] = "";
  int have = 0, rc, stop = 0;
  while (!stop && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    const char *n = (const char *)sqlite3_column_text(st, 0);
    if (!n) n = "";
    if (have && strcmp(n, node) != 0) {
      stop = cb(ud, node, counts);
      have = 0;
    }
    if (!have) {
      memset(counts, 0, sizeof counts);
      snprintf(node, sizeof node, "%s", n);
      have = 1;
    }
    int state = sqlite3_column_int(st, 1);
    if (state >= 0 && state < BR_TASK_NSTATES) counts[state] = sqlite3_column_int64(st, 2);
  }
  if (have && !stop) cb(ud, node, counts);
  sqlite3_finalize(st);
  return BR_OK;
}

static int sq_graph_put(br_store *bs, const char *name, const char *json, int64_t *id,
                        br_error *err) {
  sqlite_store *s = (sqlite_store *)bs;
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(s->db,
                         "INSERT INTO graphs(name, version, json, created) VALUES (?1, "
                         "(SELECT coalesce(max(version), 0) + 1 FROM graphs WHERE name=?1), ?2, ?3)",
                         -1, &st, NULL) != SQLITE_OK)
    return dberr(s, err, "storing a graph");
  sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, json, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 3, now_ms());
  int rc = sqlite3_step(st);
  sqlite3_finalize(st);
  if (rc != SQLITE_DONE) return dberr(s, err, "storing a graph");
  *id = sqlite3_last_insert_rowid(s->db);
  return BR_OK;
}

static void row_to_graph(sqlite3_stmt *st, br_graph_row *g) {
  g->id = sqlite3_column_int64(st, 0);
  g->name = col_strdup(st, 1);
  g->version = sqlite3_column_int(st, 2);
  g->json = col_strdup(st, 3);
  g->created_ms = sqlite3_column_int64(st, 4);
}

static int sq_graph_get(br_store *bs, int64_t id, const char *name, br_graph_row *out,
                        br_error *err) {
  sqlite_store *s = (sqlite_store *)bs;
  sqlite3_stmt *st;
  const char *sql = name ? "SELECT id, name, version, json, created FROM graphs WHERE name=? "
                           "ORDER BY version DESC LIMIT 1"
                         : "SELECT id, name, version, json, created FROM graphs WHERE id=?";
  if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) return dberr(s, err, "reading a graph");
  if (name) sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
  else sqlite3_bind_int64(st, 1, id);
  int rc = sqlite3_step(st);
  memset(out, 0, sizeof *out);
  if (rc == SQLITE_ROW) row_to_graph(st, out);
  sqlite3_finalize(st);
  if (rc == SQLITE_ROW) return BR_OK;
  if (rc == SQLITE_DONE)
    return name ? br_error_set(err, BR_ENOTFOUND, "no graph named '%s'", name)
                : br_error_set(err, BR_ENOTFOUND, "no graph %lld", (long long)id);
  return dberr(s, err, "reading a graph");
}

static int sq_graph_list(br_store *bs, int (*cb)(void *ud, br_graph_row *g), void *ud,
                         br_error *err) {
  sqlite_store *s = (sqlite_store *)bs;
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(s->db, "SELECT id, name, version, json, created FROM graphs ORDER BY id",
                         -1, &st, NULL) != SQLITE_OK)
    return dberr(s, err, "listing graphs");
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    br_graph_row g;
    row_to_graph(st, &g);
    if (cb(ud, &g)) break;
  }
  sqlite3_finalize(st);
  return (rc == SQLITE_ROW || rc == SQLITE_DONE) ? BR_OK : dberr(s, err, "listing graphs");
}

static int sq_max_id(br_store *bs, int64_t *out, br_error *err) {
  sqlite_store *s = (sqlite_store *)bs;
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(s->db,
                         "SELECT max(coalesce((SELECT max(id) FROM tasks), 0),"
                         " coalesce((SELECT max(id) FROM splits), 0),"
                         " coalesce((SELECT max(id) FROM invocations), 0))",
                         -1, &st, NULL) != SQLITE_OK)
    return dberr(s, err, "reading ids");
  int rc = sqlite3_step(st);
  *out = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
  sqlite3_finalize(st);
  return rc == SQLITE_ROW ? BR_OK : dberr(s, err, "reading ids");
}

const br_store_ops br_store_sqlite = {
    .name = "sqlite",
    .open = sq_open,
    .close = sq_close,
    .begin = sq_begin,
    .commit = sq_commit,
    .rollback = sq_rollback,
    .task_insert = sq_task_insert,
    .task_update = sq_task_update,
    .task_add_live_children = sq_task_add_live_children,
    .split_put = sq_split_put,
    .graph_put = sq_graph_put,
    .inv_put = sq_inv_put,
    .inv_query = sq_inv_query,
    .load_active = sq_load_active,
    .task_get = sq_task_get,
    .task_query = sq_task_query,
    .task_count = sq_task_count,
    .task_count_nodes = sq_task_count_nodes,
    .split_get = sq_split_get,
    .graph_get = sq_graph_get,
    .graph_list = sq_graph_list,
    .max_id = sq_max_id,
};
