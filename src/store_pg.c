/* The PostgreSQL store (libpq), behind the same ops as SQLite: for a farm
 * whose state many clients read at once. URI: postgres://... or
 * postgresql://... (libpq's own connection strings).
 *
 * Group commit without per-task round trips: between begin() and commit()
 * every write is queued in libpq's pipeline mode (sent, not waited for), and
 * commit() sends COMMIT with one sync and then reads every result: one round
 * trip per batch. Statements are prepared once per connection. The schema is
 * versioned in braid_meta and migrated forward under an advisory lock, so two
 * servers starting at once do not race.
 *
 * One engine per store: a read-write open holds a session advisory lock
 * (keyed by the schema, so farms in other schemas of one database do not
 * meet) for as long as its connection lives, and writes who it is in
 * braid_meta ("owner"); a second braid run or server on the same store is
 * refused at once, naming the holder (two engines would both dispatch the
 * same invocations). PostgreSQL drops the lock when the holder's session
 * ends, a crash included. Read-only opens take no lock.
 *
 * Another session's lock (an admin's open transaction, a LOCK TABLE) must
 * not stop the farm in silence. The read-write session has a lock_timeout
 * (10s unless the URI sets one); a statement that waits longer than a second
 * is told through the store's log, naming the sessions that block it (read
 * on a second connection), and one that gives up waiting is run again after
 * a pause that grows to 30s. For a batch that is the whole transaction: it
 * rolled back, so its writes, kept until the commit, are sent again and
 * nothing is lost. The engine's thread waits meanwhile, as it did before,
 * but not in silence, and without holding its own locks the whole time. */
#include <braid/store.h>

#include <errno.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fs.h"

/* A write queued in a batch, kept to be sent again if the batch has to be.
 * Its parameters are copied into the store's arena, one after the other
 * (no allocation per write once the arena has grown): param offsets
 * first .. first + n - 1 say where each starts (NO_PARAM: NULL). */
typedef struct kept {
  const char *name; /* the prepared statement's (static) */
  int n;
  size_t first;
} kept;

#define NO_PARAM SIZE_MAX

typedef struct pg_store {
  br_store base;
  PGconn *conn;
  PGconn *watch;   /* a second connection: who blocks conn (opened when needed) */
  int readonly;
  int in_batch;
  int queued;      /* results to read at commit */
  int tx_direct;   /* statements run in this batch outside the pipeline (not kept) */
  kept *batch;     /* the batch's queued writes */
  size_t nbatch, capbatch;
  char *arena;     /* their parameters' bytes (see kept) */
  size_t arena_len, arena_cap;
  size_t *param;   /* where each parameter starts in the arena */
  size_t nparam, capparam;
  int lock_timeout_ms;
  int report_ms;   /* a wait this long is told */
  char sqlstate[6]; /* of the last failure ("" when it had none) */
  char msg[1024];  /* res_msg's */
  bool stopped;    /* a wait was given up for a stop (br_store_set_stop) */
} pg_store;

#define DEFAULT_LOCK_TIMEOUT "10s"
#define RETRY_MAX_MS 30000

static const char *const migrations[] = {
    /* 1: the first schema (the same rows as SQLite's) */
    "CREATE TABLE graphs(id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL, version INTEGER NOT NULL,"
    "  json TEXT NOT NULL, created BIGINT NOT NULL, UNIQUE(name, version));"
    "CREATE TABLE tasks(id BIGINT PRIMARY KEY, graph_id BIGINT NOT NULL, name TEXT,"
    "  node TEXT NOT NULL, port INTEGER NOT NULL, state INTEGER NOT NULL,"
    "  paused INTEGER NOT NULL DEFAULT 0, attrs TEXT NOT NULL, parent BIGINT,"
    "  split_id BIGINT, split_elem INTEGER, split_count INTEGER,"
    "  priority INTEGER NOT NULL DEFAULT 0, group_id BIGINT, wait_key BIGINT,"
    "  live_children INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,"
    "  created BIGINT NOT NULL, updated BIGINT NOT NULL, error TEXT);"
    "CREATE INDEX tasks_active ON tasks(state) WHERE state NOT IN (5, 8);"
    "CREATE INDEX tasks_node_state ON tasks(node, state);"
    "CREATE INDEX tasks_parent ON tasks(parent) WHERE parent IS NOT NULL;"
    "CREATE TABLE splits(id BIGINT PRIMARY KEY, count INTEGER NOT NULL, live INTEGER NOT NULL,"
    "  orig_task BIGINT NOT NULL, prev_split BIGINT, prev_elem INTEGER, prev_count INTEGER);",
    /* 2: invocations */
    "CREATE TABLE invocations(id BIGINT PRIMARY KEY, task_id BIGINT NOT NULL, node TEXT,"
    "  attempt INTEGER NOT NULL, status TEXT NOT NULL, exit_code INTEGER, term_signal INTEGER,"
    "  runtime DOUBLE PRECISION, peak_rss_kb BIGINT, log_path TEXT, log_tail TEXT, error TEXT,"
    "  worker TEXT, started BIGINT, ended BIGINT);"
    "CREATE INDEX invocations_task ON invocations(task_id);",
};
#define SCHEMA_VERSION ((int)(sizeof migrations / sizeof migrations[0]))

#define TASK_COLS                                                                      \
  "id, graph_id, name, node, port, state, paused, attrs, parent, split_id, split_elem, " \
  "split_count, priority, group_id, wait_key, live_children, attempts, created, updated, error"

/* What went wrong with r: its message, else the connection's (a lost
 * connection leaves the result's empty), without the last newline. */
static const char *res_msg(pg_store *s, const PGresult *r) {
  const char *m = r ? PQresultErrorMessage(r) : "";
  if (s->stopped)
    m = "the process was asked to stop while this waited for another session's lock (see "
        "above): rolled back, nothing committed is lost, and the next start does it again";
  if (!m || !*m) m = PQerrorMessage(s->conn);
  if (!m || !*m) m = "libpq gave no message";
  snprintf(s->msg, sizeof s->msg, "%s", m);
  size_t n = strlen(s->msg);
  while (n && (s->msg[n - 1] == '\n' || s->msg[n - 1] == ' ')) s->msg[--n] = 0;
  return s->msg;
}

/* The connection's last error (res_msg without a result). */
static int pgerr(pg_store *s, br_error *err, const char *what) {
  return br_error_set(err, BR_ESTORE, "postgres store: %s: %s", what, res_msg(s, NULL));
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void say(pg_store *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(pg_store *s, const char *fmt, ...) {
  if (!s->base.log) return;
  char line[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  s->base.log(s->base.log_ud, line);
}

/* ---- waiting for another session's lock ---- */

/* The connection, named "braid" in pg_stat_activity unless the URI names it. */
static PGconn *connect_as(const char *conninfo, const char *app) {
  const char *keys[] = {"dbname", "fallback_application_name", NULL};
  const char *vals[] = {conninfo, app, NULL};
  return PQconnectdbParams(keys, vals, 1);
}

/* Who holds what conn waits for: pid, application, user, state, age of
 * its transaction and its last statement, one line. */
#define BLOCKERS_SQL                                                                         \
  "SELECT a.pid, coalesce(nullif(a.application_name, ''), '?'), coalesce(a.usename::text, '?'),"\
  " coalesce(a.state, '?'), coalesce(extract(epoch FROM now() - a.xact_start)::bigint, 0),"    \
  " left(regexp_replace(coalesce(a.query, ''), '\\s+', ' ', 'g'), 160)"                          \
  " FROM pg_stat_activity a WHERE a.pid = ANY(pg_blocking_pids($1)) ORDER BY a.pid"

/* Tells who blocks the store's connection, read on the watch connection
 * (the waiting one cannot ask). Nothing when nobody does: the statement was
 * merely slow. */
static void tell_blockers(pg_store *s, int64_t waited_ms) {
  if (!s->base.log || !s->base.uri) return; /* both set once the store is open */
  if (s->watch && PQstatus(s->watch) != CONNECTION_OK) {
    PQfinish(s->watch);
    s->watch = NULL;
  }
  if (!s->watch) s->watch = connect_as(s->base.uri, "braid (lock watch)");
  char pid[16];
  snprintf(pid, sizeof pid, "%d", PQbackendPID(s->conn));
  const char *v[] = {pid};
  PGresult *r = PQstatus(s->watch) == CONNECTION_OK
                    ? PQexecParams(s->watch, BLOCKERS_SQL, 1, NULL, v, NULL, NULL, 0)
                    : NULL;
  if (PQresultStatus(r) != PGRES_TUPLES_OK) {
    say(s, "postgres store: a statement has waited %.1fs (cannot see for what: %s)",
        (double)waited_ms / 1000, PQerrorMessage(s->watch));
    PQclear(r);
    return;
  }
  char who[1500] = "";
  size_t len = 0;
  for (int i = 0; i < PQntuples(r) && len < sizeof who; i++)
    len += (size_t)snprintf(who + len, sizeof who - len,
                            "%spid %s (%s, user %s, %s, transaction open %ss: %s)",
                            i ? "; " : "", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1),
                            PQgetvalue(r, i, 2), PQgetvalue(r, i, 3), PQgetvalue(r, i, 4),
                            PQgetvalue(r, i, 5));
  if (PQntuples(r) > 0)
    say(s, "postgres store: braid's session (pid %s) has waited %.1fs for a lock held by %s; "
           "after lock_timeout (%dms) it rolls back and tries again",
        pid, (double)waited_ms / 1000, who, s->lock_timeout_ms);
  PQclear(r);
}

/* A stop was asked for (br_store_set_stop). */
static bool stopping(const pg_store *s) { return s->base.stop && *s->base.stop; }

#define STOP_AFTER_MS 1000 /* a wait this long gives way to a stop */
#define STOP_POLL_MS 100   /* how often a wait looks for one */

/* Waits until a result can be read without blocking; a wait past
 * report_ms is told (once per statement or batch: *told). A wait of
 * STOP_AFTER_MS or more when a stop is asked for cancels the statement:
 * its result, an error, comes next (a quicker one is let finish). */
static void await(pg_store *s, int64_t since, bool *told) {
  bool cancelled = false;
  while (PQisBusy(s->conn)) {
    int wait = -1;
    if (!*told && s->base.log) {
      int64_t left = since + s->report_ms - mono_ms();
      if (left <= 0) {
        tell_blockers(s, mono_ms() - since);
        *told = true;
        continue;
      }
      wait = (int)left;
    }
    if (s->base.stop && !cancelled) {
      if (*s->base.stop && mono_ms() - since >= STOP_AFTER_MS) {
        s->stopped = cancelled = true;
        PGcancel *c = PQgetCancel(s->conn);
        char ebuf[256];
        if (c) PQcancel(c, ebuf, sizeof ebuf);
        PQfreeCancel(c);
        continue;
      }
      if (wait < 0 || wait > STOP_POLL_MS) wait = STOP_POLL_MS;
    }
    struct pollfd p = {.fd = PQsocket(s->conn), .events = POLLIN};
    if (poll(&p, 1, wait) < 0 && errno != EINTR) return;
    if (!PQconsumeInput(s->conn)) return; /* broken: PQgetResult says so */
  }
}

/* Whether a failure (its SQLSTATE in s->sqlstate) lost nothing and may be
 * tried again: the statement gave up waiting for a lock, or lost a deadlock
 * or a serialization conflict, and the connection is still there. */
static bool retryable(pg_store *s) {
  return PQstatus(s->conn) == CONNECTION_OK &&
         (!strcmp(s->sqlstate, "55P03") || !strcmp(s->sqlstate, "40P01") ||
          !strcmp(s->sqlstate, "40001"));
}

static void keep_state(pg_store *s, const PGresult *r) {
  const char *st = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
  snprintf(s->sqlstate, sizeof s->sqlstate, "%s", st ? st : "");
}

/* The pause before attempt number `attempt` (0: the first retry), told;
 * true when a stop was asked for (before or during it): no retry then. */
static bool pause_before_retry(pg_store *s, int attempt, const char *what) {
  int64_t ms = 500LL << (attempt < 6 ? attempt : 6);
  if (ms > RETRY_MAX_MS) ms = RETRY_MAX_MS;
  if (!stopping(s))
    say(s, "postgres store: %s: %s; rolled back, nothing lost; trying again in %.1fs (retry %d)",
        what, s->msg, (double)ms / 1000, attempt + 1);
  for (int64_t end = mono_ms() + ms; !stopping(s);) {
    int64_t left = end - mono_ms();
    if (left <= 0) return false;
    if (left > STOP_POLL_MS) left = STOP_POLL_MS;
    struct timespec ts = {.tv_sec = 0, .tv_nsec = left * 1000000};
    nanosleep(&ts, NULL);
  }
  s->stopped = true;
  return true;
}

/* Runs SQL (no parameters) outside a batch. */
static int run(pg_store *s, const char *sql, br_error *err) {
  PGresult *r = PQexec(s->conn, sql);
  int st = PQresultStatus(r);
  int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
  if (!ok) {
    br_error_set(err, BR_ESTORE, "postgres store: %s", res_msg(s, r));
    PQclear(r);
    return BR_ESTORE;
  }
  PQclear(r);
  return BR_OK;
}

/* Runs one statement, prepared (name) or not (sql), with n parameters, and
 * returns its result (the caller clears it; NULL when it could not be
 * sent). A wait for a lock is told; a statement that gave up waiting is run
 * again after a pause when that loses nothing: outside a batch, or as the
 * batch's first statement (its transaction is begun again). */
static PGresult *exec(pg_store *s, const char *name, const char *sql, int n,
                      const char *const *v) {
  for (int attempt = 0;; attempt++) {
    int sent = name ? PQsendQueryPrepared(s->conn, name, n, v, NULL, NULL, 0)
                    : PQsendQueryParams(s->conn, sql, n, NULL, v, NULL, NULL, 0);
    if (!sent) return NULL;
    bool told = false;
    await(s, mono_ms(), &told);
    PGresult *r = PQgetResult(s->conn), *more;
    while ((more = PQgetResult(s->conn)) != NULL) PQclear(more);
    int st = PQresultStatus(r);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
      if (s->in_batch) s->tx_direct++;
      return r;
    }
    keep_state(s, r);
    if (s->readonly || !retryable(s) || (s->in_batch && s->tx_direct))
      return r; /* a reader's request answers the error rather than wait unseen */
    res_msg(s, r);
    PQclear(r);
    if (s->in_batch && (run(s, "ROLLBACK", NULL) || run(s, "BEGIN", NULL))) return NULL;
    if (pause_before_retry(s, attempt, "a statement")) return NULL; /* res_msg says why */
  }
}

/* The store's schema version (0: none yet), refused when it is newer than
 * this braid's. */
static int read_version(pg_store *s, int *version, br_error *err) {
  PGresult *r = PQexec(s->conn, "SELECT value FROM braid_meta WHERE key = 'schema_version'");
  if (PQresultStatus(r) != PGRES_TUPLES_OK) {
    br_error_set(err, BR_ESTORE, "postgres store: reading the schema version: %s", res_msg(s, r));
    PQclear(r);
    return BR_ESTORE;
  }
  *version = PQntuples(r) == 1 ? atoi(PQgetvalue(r, 0, 0)) : 0;
  PQclear(r);
  if (*version > SCHEMA_VERSION)
    return br_error_set(err, BR_EVERSION,
                        "store has schema version %d; this braid knows up to %d (upgrade braid)",
                        *version, SCHEMA_VERSION);
  return BR_OK;
}

/* Whether braid's tables (braid_meta) are in the connection's schema, and
 * that schema's name (for messages). */
static int find_meta(pg_store *s, bool *there, char schema[128], br_error *err) {
  PGresult *r = PQexec(s->conn, "SELECT to_regclass('braid_meta') IS NOT NULL,"
                                " coalesce(current_schema(), '(none)')");
  if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
    br_error_set(err, BR_ESTORE, "postgres store: reading the schema: %s", res_msg(s, r));
    PQclear(r);
    return BR_ESTORE;
  }
  *there = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
  snprintf(schema, 128, "%s", PQgetvalue(r, 0, 1));
  PQclear(r);
  return BR_OK;
}

static int no_store(pg_store *s, int code, const char *schema, br_error *err) {
  return br_error_set(err, code,
                      "postgres store %s@%s/%s holds no braid store (no table braid_meta in "
                      "schema '%s'): is the URI right (database, search_path)? braid run or "
                      "braid server --init makes one",
                      PQuser(s->conn), PQhost(s->conn), PQdb(s->conn), schema);
}

/* existing: a database without braid's tables is not made one
 * (BR_STORE_EXISTING). */
static int migrate(pg_store *s, bool existing, br_error *err) {
  int rc = run(s, "SELECT pg_advisory_lock(7870)", err);
  if (rc) return rc;
  bool there = true;
  char schema[128];
  if (existing && !(rc = find_meta(s, &there, schema, err)) && !there)
    rc = no_store(s, BR_ENOTFOUND, schema, err);
  if (!rc)
    rc = run(s, "CREATE TABLE IF NOT EXISTS braid_meta(key TEXT PRIMARY KEY, value TEXT)", err);
  int version = 0;
  if (!rc) rc = read_version(s, &version, err);
  if (!rc && version < SCHEMA_VERSION) {
    rc = run(s, "BEGIN", err);
    for (int v = version; !rc && v < SCHEMA_VERSION; v++) rc = run(s, migrations[v], err);
    if (!rc) {
      char sql[160];
      snprintf(sql, sizeof sql,
               "INSERT INTO braid_meta(key, value) VALUES ('schema_version', '%d') "
               "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
               SCHEMA_VERSION);
      rc = run(s, sql, err);
    }
    if (!rc) rc = run(s, "COMMIT", err);
    else run(s, "ROLLBACK", NULL);
  }
  run(s, "SELECT pg_advisory_unlock(7870)", NULL);
  return rc;
}

/* A reader changes nothing: it neither makes nor migrates the schema (it
 * would make braid's tables in whatever database a mistyped URI names, and
 * a role that may only read has no right to). The store must be there, at
 * this braid's version; when it is not, existing makes that BR_ENOTFOUND. */
static int check_schema(pg_store *s, bool existing, br_error *err) {
  bool there;
  char schema[128];
  int rc = find_meta(s, &there, schema, err);
  if (rc) return rc;
  if (!there) return no_store(s, existing ? BR_ENOTFOUND : BR_ESTORE, schema, err);
  int version;
  rc = read_version(s, &version, err);
  if (rc) return rc;
  if (version < SCHEMA_VERSION)
    return br_error_set(err, BR_ESTORE,
                        "postgres store %s@%s/%s needs a schema upgrade (version %d, this braid "
                        "has %d); open it read-write once (braid run or braid server)",
                        PQuser(s->conn), PQhost(s->conn), PQdb(s->conn), version, SCHEMA_VERSION);
  return BR_OK;
}

/* The schema's owner lock (see the top of the file): 7870 as the class, a
 * hash of the schema's name as the object. */
#define OWNER_KEY "7870, ('x' || left(md5(current_schema()), 8))::bit(32)::int"

static int take_owner_lock(pg_store *s, br_error *err) {
  PGresult *r = PQexec(s->conn, "SELECT pg_try_advisory_lock(" OWNER_KEY ")");
  if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
    br_error_set(err, BR_ESTORE, "postgres store: taking the store's lock: %s",
                 res_msg(s, r));
    PQclear(r);
    return BR_ESTORE;
  }
  bool got = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
  PQclear(r);
  if (!got) {
    r = PQexec(s->conn, "SELECT value FROM braid_meta WHERE key = 'owner'");
    char who[300] = "another braid (it has not said which)";
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
      snprintf(who, sizeof who, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    return br_error_set(err, BR_ESTORE,
                        "postgres store %s@%s/%s is in use by %s: one braid server or run at a "
                        "time owns a store (two would run its jobs twice); stop that one first",
                        PQuser(s->conn), PQhost(s->conn), PQdb(s->conn), who);
  }
  char val[512];
  br__holder(val, sizeof val);
  const char *params[] = {val};
  r = PQexecParams(s->conn,
                   "INSERT INTO braid_meta(key, value) VALUES ('owner', $1) "
                   "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                   1, NULL, params, NULL, NULL, 0);
  PQclear(r); /* best effort: the lock is what counts, the row only names its holder */
  return BR_OK;
}

static const struct {
  const char *name, *sql;
} statements[] = {
    {"ins_task", "INSERT INTO tasks(" TASK_COLS ") VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,"
                 "$12,$13,$14,$15,$16,$17,$18,$19,$20)"},
    /* every parameter must appear for PostgreSQL to type it: graph_id and
     * created never change, and $8 is the (absent) attrs of upd_task_na */
    {"upd_task", "UPDATE tasks SET name=$3, node=$4, port=$5, state=$6, paused=$7, attrs=$8,"
                 " parent=$9, split_id=$10, split_elem=$11, split_count=$12, priority=$13,"
                 " group_id=$14, wait_key=$15, live_children=$16, attempts=$17, updated=$19,"
                 " error=$20 WHERE id=$1 AND graph_id=$2 AND created=$18"},
    {"upd_task_na", "UPDATE tasks SET name=$3, node=$4, port=$5, state=$6, paused=$7,"
                    " parent=$9, split_id=$10, split_elem=$11, split_count=$12, priority=$13,"
                    " group_id=$14, wait_key=$15, live_children=$16, attempts=$17, updated=$19,"
                    " error=$20 WHERE id=$1 AND graph_id=$2 AND created=$18 AND $8::text IS NULL"},
    {"add_live", "UPDATE tasks SET live_children = live_children + $2 WHERE id = $1"},
    {"put_split", "INSERT INTO splits(id, count, live, orig_task, prev_split, prev_elem, prev_count)"
                  " VALUES ($1,$2,$3,$4,$5,$6,$7) ON CONFLICT (id) DO UPDATE SET count=$2, live=$3,"
                  " orig_task=$4, prev_split=$5, prev_elem=$6, prev_count=$7"},
    {"put_inv", "INSERT INTO invocations(id, task_id, node, attempt, status, exit_code, term_signal,"
                " runtime, peak_rss_kb, log_path, log_tail, error, worker, started, ended)"
                " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15) ON CONFLICT (id) DO"
                " UPDATE SET task_id=$2, node=$3, attempt=$4, status=$5, exit_code=$6,"
                " term_signal=$7, runtime=$8, peak_rss_kb=$9, log_path=$10, log_tail=$11,"
                " error=$12, worker=$13, started=$14, ended=$15"},
};

/* Forgets the batch's kept writes. */
static void forget(pg_store *s) { s->nbatch = s->arena_len = s->nparam = 0; }

static void pg_close(br_store *bs) {
  pg_store *s = (pg_store *)bs;
  PQfinish(s->conn);
  if (s->watch) PQfinish(s->watch);
  free(s->batch);
  free(s->arena);
  free(s->param);
  free(s);
}

/* The session's lock_timeout in ms (0: none, or unknown). */
static int read_lock_timeout(pg_store *s) {
  PGresult *r = PQexec(s->conn, "SELECT setting::int FROM pg_settings WHERE name = 'lock_timeout'");
  int ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
  int ms = ok ? atoi(PQgetvalue(r, 0, 0)) : 0;
  PQclear(r);
  return ms;
}

/* The read-write session's lock_timeout: the URI's (options=-c
 * lock_timeout=...), else DEFAULT_LOCK_TIMEOUT; a wait is told after a
 * second, or half the timeout when that is shorter. */
static int set_lock_timeout(pg_store *s, br_error *err) {
  int ms = read_lock_timeout(s);
  if (ms <= 0) {
    int rc = run(s, "SET lock_timeout = '" DEFAULT_LOCK_TIMEOUT "'", err);
    if (rc) return rc;
    ms = read_lock_timeout(s);
  }
  s->lock_timeout_ms = ms;
  s->report_ms = ms / 2 < 1000 ? ms / 2 : 1000;
  return BR_OK;
}

static void notice_quiet(void *arg, const char *message) {
  (void)arg;
  (void)message; /* the library never prints; NOTICEs are not errors */
}

static int pg_open(const char *uri, int flags, br_store **out, br_error *err) {
  pg_store *s = calloc(1, sizeof *s);
  if (!s) return br_error_set(err, BR_ENOMEM, "out of memory");
  extern const br_store_ops br_store_postgres;
  s->base.ops = &br_store_postgres;
  s->readonly = (flags & BR_STORE_READONLY) != 0;
  s->conn = connect_as(uri, "braid");
  if (PQstatus(s->conn) != CONNECTION_OK) {
    pgerr(s, err, "cannot connect");
    pg_close(&s->base);
    return BR_ESTORE;
  }
  PQsetNoticeProcessor(s->conn, notice_quiet, NULL);
  int rc = run(s, "SET client_min_messages = warning", err);
  bool existing = (flags & BR_STORE_EXISTING) != 0;
  if (!rc) rc = s->readonly ? check_schema(s, existing, err) : migrate(s, existing, err);
  if (!rc && !s->readonly) rc = take_owner_lock(s, err);
  if (!rc && !s->readonly) rc = set_lock_timeout(s, err); /* after the migration's wait */
  if (!rc && s->readonly) rc = run(s, "SET default_transaction_read_only = on", err);
  for (size_t i = 0; !rc && !s->readonly && i < sizeof statements / sizeof statements[0]; i++) {
    PGresult *r = PQprepare(s->conn, statements[i].name, statements[i].sql, 0, NULL);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
      rc = br_error_set(err, BR_ESTORE, "postgres store: preparing %s: %s", statements[i].name,
                        res_msg(s, r));
    PQclear(r);
  }
  if (rc) {
    pg_close(&s->base);
    return rc;
  }
  *out = &s->base;
  return BR_OK;
}

/* ---- batches ---- */

/* A batch is a transaction; its queued writes go through pipeline mode,
 * entered at the first one (so a batch may also run a statement that needs
 * its answer at once, such as storing a graph, before queuing writes). The
 * queued writes are kept until the commit, to be sent again if the
 * transaction has to be (see the top of the file). */
static int pg_begin(br_store *bs, br_error *err) {
  pg_store *s = (pg_store *)bs;
  if (s->in_batch) return br_error_set(err, BR_ESTATE, "postgres store: nested batch");
  int rc = run(s, "BEGIN", err);
  if (rc) return rc;
  s->in_batch = 1;
  s->queued = 0;
  s->tx_direct = 0;
  forget(s);
  return BR_OK;
}

/* Keeps a copy of a queued write. */
static int keep(pg_store *s, const char *name, int n, const char *const *values) {
  if (s->nbatch == s->capbatch) {
    size_t cap = s->capbatch ? s->capbatch * 2 : 256;
    kept *b = realloc(s->batch, cap * sizeof *b);
    if (!b) return -1;
    s->batch = b;
    s->capbatch = cap;
  }
  if (s->nparam + (size_t)n > s->capparam) {
    size_t cap = s->capparam ? s->capparam * 2 : 1024;
    while (cap < s->nparam + (size_t)n) cap *= 2;
    size_t *p = realloc(s->param, cap * sizeof *p);
    if (!p) return -1;
    s->param = p;
    s->capparam = cap;
  }
  size_t first = s->nparam; /* the write counts once all of it is kept */
  for (int k = 0; k < n; k++) {
    size_t len = values[k] ? strlen(values[k]) + 1 : 0;
    if (s->arena_len + len > s->arena_cap) {
      size_t cap = s->arena_cap ? s->arena_cap * 2 : 65536;
      while (cap < s->arena_len + len) cap *= 2;
      char *a = realloc(s->arena, cap);
      if (!a) return -1;
      s->arena = a;
      s->arena_cap = cap;
    }
    s->param[s->nparam++] = values[k] ? s->arena_len : NO_PARAM;
    if (len) memcpy(s->arena + s->arena_len, values[k], len);
    s->arena_len += len;
  }
  s->batch[s->nbatch++] = (kept){name, n, first};
  return 0;
}

static int queue(pg_store *s, const char *name, int n, const char *const *values, br_error *err) {
  if (PQpipelineStatus(s->conn) == PQ_PIPELINE_OFF && !PQenterPipelineMode(s->conn))
    return pgerr(s, err, "entering pipeline mode");
  if (!PQsendQueryPrepared(s->conn, name, n, values, NULL, NULL, 0)) return pgerr(s, err, name);
  s->queued++;
  return BR_OK;
}

static int send_prepared(pg_store *s, const char *name, int n, const char *const *values,
                         br_error *err) {
  if (!s->in_batch) {
    PGresult *r = exec(s, name, NULL, n, values);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok) br_error_set(err, BR_ESTORE, "postgres store: %s: %s", name, res_msg(s, r));
    PQclear(r);
    return ok ? BR_OK : BR_ESTORE;
  }
  if (keep(s, name, n, values)) return br_error_set(err, BR_ENOMEM, "out of memory");
  return queue(s, name, n, values, err);
}

/* Reads every queued query's results (each ends with a NULL), then the
 * sync's own result. The first error wins (its SQLSTATE kept); after it,
 * the server answers the rest of the batch with PGRES_PIPELINE_ABORTED. */
static int drain(pg_store *s, br_error *err) {
  int rc = BR_OK;
  int64_t since = mono_ms();
  bool told = false;
  s->sqlstate[0] = 0;
  for (int q = 0; q < s->queued; q++) {
    PGresult *r;
    for (;;) {
      await(s, since, &told);
      if ((r = PQgetResult(s->conn)) == NULL) break;
      int st = PQresultStatus(r);
      if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && st != PGRES_PIPELINE_ABORTED &&
          !rc) {
        keep_state(s, r);
        rc = br_error_set(err, BR_ESTORE, "postgres store: commit: %s", res_msg(s, r));
      }
      PQclear(r);
    }
  }
  await(s, since, &told);
  PGresult *r = PQgetResult(s->conn);
  if (!r || PQresultStatus(r) != PGRES_PIPELINE_SYNC) {
    if (!rc) rc = pgerr(s, err, "commit: the batch did not end as expected");
  }
  PQclear(r);
  s->queued = 0;
  return rc;
}

/* Sends COMMIT after the queued writes and reads every answer; a failed
 * batch is rolled back. */
static int finish(pg_store *s, br_error *err) {
  int rc = BR_OK;
  if (!PQsendQueryParams(s->conn, "COMMIT", 0, NULL, NULL, NULL, NULL, 0))
    rc = pgerr(s, err, "COMMIT");
  else s->queued++;
  if (!PQpipelineSync(s->conn) && !rc) rc = pgerr(s, err, "sync");
  int drc = drain(s, err);
  if (!rc) rc = drc;
  PQexitPipelineMode(s->conn);
  if (rc) run(s, "ROLLBACK", NULL); /* a failed statement leaves the transaction aborted */
  return rc;
}

/* Sends the kept writes again in a new transaction. */
static int resend(pg_store *s, br_error *err) {
  int rc = run(s, "BEGIN", err);
  for (size_t i = 0; !rc && i < s->nbatch; i++) {
    const kept *w = &s->batch[i];
    const char **v = calloc(w->n ? (size_t)w->n : 1, sizeof *v);
    if (!v) return br_error_set(err, BR_ENOMEM, "out of memory");
    for (int k = 0; k < w->n; k++) {
      size_t at = s->param[w->first + (size_t)k];
      v[k] = at == NO_PARAM ? NULL : s->arena + at;
    }
    rc = queue(s, w->name, w->n, v, err);
    free(v);
  }
  return rc;
}

/* A batch that gave up waiting for a lock (or lost a deadlock) rolled back
 * whole: it is sent again, after a pause, until it commits or fails
 * otherwise. Not when it also ran statements that were not kept (a graph
 * stored: its id was already read). The engine's thread waits meanwhile; it
 * would only stop otherwise, and a new engine would wait for the same lock. */
static int pg_commit(br_store *bs, br_error *err) {
  pg_store *s = (pg_store *)bs;
  if (!s->in_batch) return br_error_set(err, BR_ESTATE, "postgres store: commit without begin");
  s->in_batch = 0;
  int rc;
  if (PQpipelineStatus(s->conn) == PQ_PIPELINE_OFF) {
    rc = run(s, "COMMIT", err);
  } else {
    rc = finish(s, err);
    for (int attempt = 0; rc && retryable(s) && !s->tx_direct; attempt++) {
      if (pause_before_retry(s, attempt, "a batch of writes")) {
        br_error_set(err, BR_ESTORE, "postgres store: commit: %s", res_msg(s, NULL));
        break;
      }
      if ((rc = resend(s, err)) != BR_OK) break; /* the engine's rollback() cleans up */
      rc = finish(s, err);
    }
  }
  forget(s);
  return rc;
}

static void pg_rollback(br_store *bs) {
  pg_store *s = (pg_store *)bs;
  if (PQpipelineStatus(s->conn) != PQ_PIPELINE_OFF) {
    br_error ignore;
    PQpipelineSync(s->conn);
    drain(s, &ignore);
    PQexitPipelineMode(s->conn);
  }
  s->in_batch = 0;
  forget(s);
  run(s, "ROLLBACK", NULL);
}

/* ---- writes ---- */

typedef struct params {
  char buf[24][32];
  const char *v[24];
  char *owned; /* attrs text */
} params;

static void p_i64(params *p, int i, int64_t v) {
  snprintf(p->buf[i], sizeof p->buf[i], "%lld", (long long)v);
  p->v[i] = p->buf[i];
}

static void p_opt(params *p, int i, int64_t v) {
  if (v) p_i64(p, i, v);
  else p->v[i] = NULL;
}

static void p_dbl(params *p, int i, double v) {
  snprintf(p->buf[i], sizeof p->buf[i], "%.17g", v);
  p->v[i] = p->buf[i];
}

static int task_params(params *p, const br_task_info *t, bool with_attrs) {
  memset(p, 0, sizeof *p);
  p_i64(p, 0, t->id);
  p_i64(p, 1, t->graph_id);
  p->v[2] = t->name;
  p->v[3] = t->node ? t->node : "";
  p_i64(p, 4, t->port);
  p_i64(p, 5, t->state);
  p_i64(p, 6, t->paused);
  if (with_attrs) {
    p->owned = json_dumps(t->attrs ? t->attrs : json_object(), JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!p->owned) return -1;
  }
  p->v[7] = p->owned;
  p_opt(p, 8, t->parent);
  p_opt(p, 9, t->split_id);
  p_i64(p, 10, t->split_elem);
  p_i64(p, 11, t->split_count);
  p_i64(p, 12, t->priority);
  p_opt(p, 13, t->group_id);
  p_opt(p, 14, t->wait_key);
  p_i64(p, 15, t->live_children);
  p_i64(p, 16, t->attempts);
  p_i64(p, 17, t->created_ms);
  p_i64(p, 18, t->updated_ms);
  p->v[19] = t->error;
  return 0;
}

static int pg_task_insert(br_store *bs, const br_task_info *t, br_error *err) {
  params p;
  if (task_params(&p, t, true)) return br_error_set(err, BR_ENOMEM, "out of memory");
  int rc = send_prepared((pg_store *)bs, "ins_task", 20, p.v, err);
  free(p.owned);
  return rc;
}

static int pg_task_update(br_store *bs, const br_task_info *t, bool with_attrs, br_error *err) {
  params p;
  if (task_params(&p, t, with_attrs)) return br_error_set(err, BR_ENOMEM, "out of memory");
  int rc = send_prepared((pg_store *)bs, with_attrs ? "upd_task" : "upd_task_na", 20, p.v, err);
  free(p.owned);
  return rc;
}

static int pg_add_live(br_store *bs, int64_t id, int delta, br_error *err) {
  params p;
  memset(&p, 0, sizeof p);
  p_i64(&p, 0, id);
  p_i64(&p, 1, delta);
  return send_prepared((pg_store *)bs, "add_live", 2, p.v, err);
}

static int pg_split_put(br_store *bs, const br_split *sp, br_error *err) {
  params p;
  memset(&p, 0, sizeof p);
  p_i64(&p, 0, sp->id);
  p_i64(&p, 1, sp->count);
  p_i64(&p, 2, sp->live);
  p_i64(&p, 3, sp->orig_task);
  p_opt(&p, 4, sp->prev_split);
  p_i64(&p, 5, sp->prev_elem);
  p_i64(&p, 6, sp->prev_count);
  return send_prepared((pg_store *)bs, "put_split", 7, p.v, err);
}

static int pg_inv_put(br_store *bs, const br_inv_row *r, br_error *err) {
  params p;
  memset(&p, 0, sizeof p);
  p_i64(&p, 0, r->id);
  p_i64(&p, 1, r->task_id);
  p.v[2] = r->node;
  p_i64(&p, 3, r->attempt);
  p.v[4] = r->status ? r->status : "running";
  p_i64(&p, 5, r->exit_code);
  p_i64(&p, 6, r->term_signal);
  p_dbl(&p, 7, r->runtime);
  p_i64(&p, 8, r->peak_rss_kb);
  p.v[9] = r->log_path;
  p.v[10] = r->log_tail;
  p.v[11] = r->error;
  p.v[12] = r->worker;
  p_i64(&p, 13, r->started_ms);
  p_i64(&p, 14, r->ended_ms);
  return send_prepared((pg_store *)bs, "put_inv", 15, p.v, err);
}

static int pg_graph_put(br_store *bs, const char *name, const char *json, int64_t *id,
                        br_error *err) {
  pg_store *s = (pg_store *)bs;
  char created[32];
  snprintf(created, sizeof created, "%lld", (long long)now_ms());
  const char *v[] = {name, json, created};
  PGresult *r = exec(s, NULL,
                     "INSERT INTO graphs(name, version, json, created) VALUES ($1,"
                     " (SELECT coalesce(max(version), 0) + 1 FROM graphs WHERE name=$1),"
                     " $2, $3) RETURNING id",
                     3, v);
  int ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
  if (ok) *id = atoll(PQgetvalue(r, 0, 0));
  else br_error_set(err, BR_ESTORE, "postgres store: storing a graph: %s", res_msg(s, r));
  PQclear(r);
  return ok ? BR_OK : BR_ESTORE;
}

/* ---- reads ---- */

static char *col_dup(PGresult *r, int row, int col) {
  return PQgetisnull(r, row, col) ? NULL : strdup(PQgetvalue(r, row, col));
}

static int64_t col_i64(PGresult *r, int row, int col) {
  return PQgetisnull(r, row, col) ? 0 : atoll(PQgetvalue(r, row, col));
}

static void row_to_task(PGresult *r, int i, br_task_info *t) {
  memset(t, 0, sizeof *t);
  t->id = col_i64(r, i, 0);
  t->graph_id = col_i64(r, i, 1);
  t->name = col_dup(r, i, 2);
  t->node = col_dup(r, i, 3);
  t->port = (int)col_i64(r, i, 4);
  t->state = (br_task_state)col_i64(r, i, 5);
  t->paused = col_i64(r, i, 6) != 0;
  json_error_t jerr;
  t->attrs = PQgetisnull(r, i, 7) ? NULL : json_loads(PQgetvalue(r, i, 7), 0, &jerr);
  if (!t->attrs) t->attrs = json_object();
  t->parent = col_i64(r, i, 8);
  t->split_id = col_i64(r, i, 9);
  t->split_elem = (int32_t)col_i64(r, i, 10);
  t->split_count = (int32_t)col_i64(r, i, 11);
  t->priority = (int32_t)col_i64(r, i, 12);
  t->group_id = col_i64(r, i, 13);
  t->wait_key = col_i64(r, i, 14);
  t->live_children = (int32_t)col_i64(r, i, 15);
  t->attempts = (int32_t)col_i64(r, i, 16);
  t->created_ms = col_i64(r, i, 17);
  t->updated_ms = col_i64(r, i, 18);
  t->error = col_dup(r, i, 19);
}

static int query_tasks(pg_store *s, const char *sql, int n, const char *const *v, br_task_cb cb,
                       void *ud, br_error *err) {
  PGresult *r = exec(s, NULL, sql, n, v);
  if (PQresultStatus(r) != PGRES_TUPLES_OK) {
    br_error_set(err, BR_ESTORE, "postgres store: reading tasks: %s", res_msg(s, r));
    PQclear(r);
    return BR_ESTORE;
  }
  int rows = PQntuples(r);
  for (int i = 0; i < rows; i++) {
    br_task_info *t = malloc(sizeof *t);
    if (!t) break;
    row_to_task(r, i, t);
    if (t->state >= BR_TASK_NSTATES || !t->node) {
      br_task_info_free(t);
      free(t);
      PQclear(r);
      return br_error_set(err, BR_ESTORE, "postgres store: a task row is damaged");
    }
    if (cb(ud, t)) break;
  }
  PQclear(r);
  return BR_OK;
}

static int pg_load_active(br_store *bs, br_task_cb cb, void *ud, br_error *err) {
  return query_tasks((pg_store *)bs,
                     "SELECT " TASK_COLS " FROM tasks WHERE state NOT IN (5, 8) ORDER BY id", 0,
                     NULL, cb, ud, err);
}

typedef struct one_task {
  br_task_info *out;
  int found;
} one_task;

static int take_one(void *ud, br_task_info *t) {
  one_task *o = ud;
  *o->out = *t;
  free(t);
  o->found = 1;
  return 1;
}

static int pg_task_get(br_store *bs, int64_t id, br_task_info *out, br_error *err) {
  params p;
  memset(&p, 0, sizeof p);
  p_i64(&p, 0, id);
  one_task o = {.out = out};
  int rc = query_tasks((pg_store *)bs, "SELECT " TASK_COLS " FROM tasks WHERE id = $1", 1, p.v,
                       take_one, &o, err);
  if (!rc && !o.found) return br_error_set(err, BR_ENOTFOUND, "no task %lld", (long long)id);
  return rc;
}

/* WHERE clause and parameters for a filter. */
static void filter_sql(const br_task_filter *f, int with_state, char *sql, size_t size, params *p,
                       int *n) {
  size_t len = (size_t)snprintf(sql, size, " WHERE true");
  *n = 0;
  memset(p, 0, sizeof *p);
#define ADD(cond, setter)                                                          \
  do {                                                                             \
    setter;                                                                        \
    (*n)++;                                                                        \
    len += (size_t)snprintf(sql + len, size - len, " AND " cond "$%d", *n);        \
  } while (0)
  if (f->graph_id) ADD("graph_id = ", p_i64(p, *n, f->graph_id));
  if (f->node) ADD("node = ", p->v[*n] = f->node);
  if (with_state && f->state >= 0) ADD("state = ", p_i64(p, *n, f->state));
  if (f->parent) ADD("parent = ", p_i64(p, *n, f->parent));
  if (f->group_id) ADD("group_id = ", p_i64(p, *n, f->group_id));
  if (f->after_id) ADD("id > ", p_i64(p, *n, f->after_id));
#undef ADD
}

static int pg_task_query(br_store *bs, const br_task_filter *f, br_task_cb cb, void *ud,
                         br_error *err) {
  char where[512], sql[1024];
  params p;
  int n;
  filter_sql(f, 1, where, sizeof where, &p, &n);
  snprintf(sql, sizeof sql, "SELECT " TASK_COLS " FROM tasks%s ORDER BY id", where);
  if (f->limit > 0) {
    size_t len = strlen(sql);
    snprintf(sql + len, sizeof sql - len, " LIMIT %d", f->limit);
  }
  return query_tasks((pg_store *)bs, sql, n, p.v, cb, ud, err);
}

static int pg_task_count(br_store *bs, const br_task_filter *f, int64_t counts[BR_TASK_NSTATES],
                         br_error *err) {
  pg_store *s = (pg_store *)bs;
  char where[512], sql[1024];
  params p;
  int n;
  filter_sql(f, 0, where, sizeof where, &p, &n);
  snprintf(sql, sizeof sql, "SELECT state, count(*) FROM tasks%s GROUP BY state", where);
  PGresult *r = exec(s, NULL, sql, n, p.v);
  memset(counts, 0, sizeof(int64_t) * BR_TASK_NSTATES);
  if (PQresultStatus(r) != PGRES_TUPLES_OK) {
    br_error_set(err, BR_ESTORE, "postgres store: counting tasks: %s", res_msg(s, r));
    PQclear(r);
    return BR_ESTORE;
  }
  for (int i = 0; i < PQntuples(r); i++) {
    int64_t st = col_i64(r, i, 0);
    if (st >= 0 && st < BR_TASK_NSTATES) counts[st] = col_i64(r, i, 1);
  }
  PQclear(r);
  return BR_OK;
}

static int pg_task_count_nodes(br_store *bs, int64_t graph_id,
                               int (*cb)(void *ud, const char *node, const int64_t *counts),
                               void *ud, br_error *err) {
  pg_store *s = (pg_store *)bs;
  params p;
  memset(&p, 0, sizeof p);
  p_i64(&p, 0, graph_id);
  PGresult *r = exec(
      s, NULL,
      graph_id ? "SELECT node, state, count(*) FROM tasks WHERE graph_id = $1 GROUP BY node, state ORDER BY node"
               : "SELECT node, state, count(*) FROM tasks GROUP BY node, state ORDER BY node",
      graph_id ? 1 : 0, p.v);
  if (PQresultStatus(r) != PGRES_TUPLES_OK) {
    br_error_set(err, BR_ESTORE, "postgres store: counting tasks: %s", res_msg(s, r));
    PQclear(r);
    return BR_ESTORE;
  }
  int64_t counts[BR_TASK_NSTATES];
  int rows = PQntuples(r), stop = 0;
  for (int i = 0; i < rows && !stop;) {
    const char *node = PQgetvalue(r, i, 0);
    memset(counts, 0, sizeof counts);
    int k = i;
    for (; k < rows && strcmp(PQgetvalue(r, k, 0), node) == 0; k++) {
      int64_t st = col_i64(r, k, 1);
      if (st >= 0 && st < BR_TASK_NSTATES) counts[st] = col_i64(r, k, 2);
    }
    stop = cb(ud, node, counts);
    i = k;
  }
  PQclear(r);
  return BR_OK;
}

static int pg_split_get(br_store *bs, int64_t id, br_split *out, br_error *err) {
  pg_store *s = (pg_store *)bs;
  params p;
  memset(&p, 0, sizeof p);
  p_i64(&p, 0, id);
  PGresult *r = exec(s, NULL,
                     "SELECT id, count, live, orig_task, prev_split, prev_elem, prev_count"
                     " FROM splits WHERE id = $1",
                     1, p.v);
  int rc = BR_OK;
  if (PQresultStatus(r) != PGRES_TUPLES_OK)
    rc = br_error_set(err, BR_ESTORE, "postgres store: reading a split: %s", res_msg(s, r));
  else if (PQntuples(r) != 1)
    rc = br_error_set(err, BR_ENOTFOUND, "no split %lld", (long long)id);
  else {
    out->id = col_i64(r, 0, 0);
    out->count = (int32_t)col_i64(r, 0, 1);
    out->live = (int32_t)col_i64(r, 0, 2);
    out->orig_task = col_i64(r, 0, 3);
    out->prev_split = col_i64(r, 0, 4);
    out->prev_elem = (int32_t)col_i64(r, 0, 5);
    out->prev_count = (int32_t)col_i64(r, 0, 6);
  }
  PQclear(r);
  return rc;
}

static void row_to_graph(PGresult *r, int i, br_graph_row *g) {
  g->id = col_i64(r, i, 0);
  g->name = col_dup(r, i, 1);
  g->version = (int)col_i64(r, i, 2);
  g->json = col_dup(r, i, 3);
  g->created_ms = col_i64(r, i, 4);
}

static int pg_graph_get(br_store *bs, int64_t id, const char *name, br_graph_row *out,
                        br_error *err) {
  pg_store *s = (pg_store *)bs;
  params p;
  memset(&p, 0, sizeof p);
  if (name) p.v[0] = name;
  else p_i64(&p, 0, id);
  PGresult *r = exec(
      s, NULL,
      name ? "SELECT id, name, version, json, created FROM graphs WHERE name = $1 ORDER BY version DESC LIMIT 1"
           : "SELECT id, name, version, json, created FROM graphs WHERE id = $1",
      1, p.v);
  memset(out, 0, sizeof *out);
  int rc = BR_OK;
  if (PQresultStatus(r) != PGRES_TUPLES_OK)
    rc = br_error_set(err, BR_ESTORE, "postgres store: reading a graph: %s", res_msg(s, r));
  else if (PQntuples(r) != 1)
    rc = name ? br_error_set(err, BR_ENOTFOUND, "no graph named '%s'", name)
              : br_error_set(err, BR_ENOTFOUND, "no graph %lld", (long long)id);
  else row_to_graph(r, 0, out);
  PQclear(r);
  return rc;
}

static int pg_graph_list(br_store *bs, int (*cb)(void *ud, br_graph_row *g), void *ud,
                         br_error *err) {
  pg_store *s = (pg_store *)bs;
  PGresult *r =
      exec(s, NULL, "SELECT id, name, version, json, created FROM graphs ORDER BY id", 0, NULL);
  if (PQresultStatus(r) != PGRES_TUPLES_OK) {
    br_error_set(err, BR_ESTORE, "postgres store: listing graphs: %s", res_msg(s, r));
    PQclear(r);
    return BR_ESTORE;
  }
  for (int i = 0; i < PQntuples(r); i++) {
    br_graph_row g;
    row_to_graph(r, i, &g);
    if (cb(ud, &g)) break;
  }
  PQclear(r);
  return BR_OK;
}

static int pg_inv_query(br_store *bs, int64_t task_id, int (*cb)(void *ud, br_inv_info *i),
                        void *ud, br_error *err) {
  pg_store *s = (pg_store *)bs;
  params p;
  memset(&p, 0, sizeof p);
  p_i64(&p, 0, task_id);
  PGresult *r = exec(
      s, NULL,
      task_id ? "SELECT id, task_id, node, attempt, status, exit_code, term_signal, runtime,"
                " peak_rss_kb, log_path, log_tail, error, worker, started, ended FROM invocations"
                " WHERE task_id = $1 ORDER BY id"
              : "SELECT id, task_id, node, attempt, status, exit_code, term_signal, runtime,"
                " peak_rss_kb, log_path, log_tail, error, worker, started, ended FROM invocations"
                " ORDER BY id",
      task_id ? 1 : 0, p.v);
  if (PQresultStatus(r) != PGRES_TUPLES_OK) {
    br_error_set(err, BR_ESTORE, "postgres store: reading invocations: %s", res_msg(s, r));
    PQclear(r);
    return BR_ESTORE;
  }
  for (int k = 0; k < PQntuples(r); k++) {
    br_inv_info *i = calloc(1, sizeof *i);
    if (!i) break;
    i->row.id = col_i64(r, k, 0);
    i->row.task_id = col_i64(r, k, 1);
    i->row.node = i->buf[BR_INV_NODE] = col_dup(r, k, 2);
    i->row.attempt = (int32_t)col_i64(r, k, 3);
    i->row.status = i->buf[BR_INV_STATUS] = col_dup(r, k, 4);
    i->row.exit_code = (int)col_i64(r, k, 5);
    i->row.term_signal = (int)col_i64(r, k, 6);
    i->row.runtime = PQgetisnull(r, k, 7) ? 0 : atof(PQgetvalue(r, k, 7));
    i->row.peak_rss_kb = col_i64(r, k, 8);
    i->row.log_path = i->buf[BR_INV_LOG_PATH] = col_dup(r, k, 9);
    i->row.log_tail = i->buf[BR_INV_LOG_TAIL] = col_dup(r, k, 10);
    i->row.error = i->buf[BR_INV_ERROR] = col_dup(r, k, 11);
    i->row.worker = i->buf[BR_INV_WORKER] = col_dup(r, k, 12);
    i->row.started_ms = col_i64(r, k, 13);
    i->row.ended_ms = col_i64(r, k, 14);
    if (cb(ud, i)) break;
  }
  PQclear(r);
  return BR_OK;
}

static int pg_max_id(br_store *bs, int64_t *out, br_error *err) {
  pg_store *s = (pg_store *)bs;
  PGresult *r = exec(s, NULL,
                     "SELECT greatest(coalesce((SELECT max(id) FROM tasks), 0),"
                     " coalesce((SELECT max(id) FROM splits), 0),"
                     " coalesce((SELECT max(id) FROM invocations), 0))",
                     0, NULL);
  int ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
  if (ok) *out = col_i64(r, 0, 0);
  else br_error_set(err, BR_ESTORE, "postgres store: reading ids: %s", res_msg(s, r));
  PQclear(r);
  return ok ? BR_OK : BR_ESTORE;
}

/* The connection broke (the database restarted, the network went): the
 * owner lock went with it, so another braid may own the store now, and a
 * batch that failed is not in the store. The engine stops (see
 * br_store_ops.lost); a new process takes the lock and picks up from what
 * was committed. */
static bool pg_lost(br_store *bs) { return PQstatus(((pg_store *)bs)->conn) == CONNECTION_BAD; }

const br_store_ops br_store_postgres = {
    .name = "postgres",
    .open = pg_open,
    .close = pg_close,
    .begin = pg_begin,
    .commit = pg_commit,
    .rollback = pg_rollback,
    .task_insert = pg_task_insert,
    .task_update = pg_task_update,
    .task_add_live_children = pg_add_live,
    .split_put = pg_split_put,
    .graph_put = pg_graph_put,
    .inv_put = pg_inv_put,
    .inv_query = pg_inv_query,
    .load_active = pg_load_active,
    .task_get = pg_task_get,
    .task_query = pg_task_query,
    .task_count = pg_task_count,
    .task_count_nodes = pg_task_count_nodes,
    .split_get = pg_split_get,
    .graph_get = pg_graph_get,
    .graph_list = pg_graph_list,
    .max_id = pg_max_id,
    .lost = pg_lost,
};
