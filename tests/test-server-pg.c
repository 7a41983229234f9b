/* braid server on PostgreSQL, as a farm runs it: a real server process on a
 * private cluster (pg_fixture.h), with what a database does to it under
 * way: another session's lock. */
#include <braid/store.h>
#include <libpq-fe.h>
#include <pthread.h>

#include "farm-util.h"
#include "pg_fixture.h"

/* A server on the cluster's database, its files in a fresh folder; uri_opts
 * are added to the store URI (libpq's, e.g. "&options=..."). */
static void pg_farm_start(farm *f, pg_fixture *pg, const char *name, const char *uri_opts) {
  char args[1024];
  int n = snprintf(args, sizeof args, "--store '%s%s' --poll-wait 1", pg->uri, uri_opts);
  if (n < 0 || (size_t)n >= sizeof args)
    br_test_fail(__FILE__, __LINE__, "store URI too long: %s", pg->uri);
  farm_start(f, name, args);
}

/* Task counts by state, read from the database. */
static void pg_counts(pg_fixture *pg, int64_t counts[BR_TASK_NSTATES]) {
  br_store *s;
  br_error err;
  CHECK(br_store_open(pg->uri, BR_STORE_READONLY, &s, &err) == BR_OK);
  br_task_filter all = BR_TASK_FILTER_ALL;
  CHECK(br_store_task_count(s, &all, counts, &err) == BR_OK);
  br_store_close(s);
}

/* Waits up to secs for text in the farm's server log. */
static bool log_has(farm *f, const char *text, double secs) {
  char path[1024];
  snprintf(path, sizeof path, "%s/server.log", f->dir);
  for (double end = farm_now() + secs;; usleep(50000)) {
    char *log = br_test_slurp(path);
    bool found = strstr(log, text) != NULL;
    free(log);
    if (found || farm_now() >= end) return found;
  }
}

/* A graph the server does alone (no agent): start spawns count children
 * that pass a null node. */
static json_t *engine_only_graph(const char *name, int count) {
  char text[1024];
  snprintf(text, sizeof text,
           "{\"name\":\"%s\",\"start\":{\"node\":\"start\",\"attrs\":{}},"
           "\"nodes\":[{\"name\":\"start\",\"type\":\"spawn\",\"params\":{\"count\":%d}},"
           "{\"name\":\"pass\",\"type\":\"null\"}],"
           "\"wires\":[[\"start.children\",\"pass\"]]}",
           name, count);
  json_error_t jerr;
  json_t *g = json_loads(text, 0, &jerr);
  CHECK(g != NULL);
  return g;
}

typedef struct submission {
  farm *f;
  json_t *graph; /* stolen */
  int status;
} submission;

static void *submit_main(void *arg) {
  submission *s = arg;
  json_t *body = json_pack("{sosiso}", "graph", s->graph, "priority", 0, "attrs", json_object());
  s->status = farm_call(s->f, s->f->user, "POST", "/api/v1/submissions", body, NULL);
  json_decref(body);
  return NULL;
}

/* A session of app (its application_name) that holds braid's tasks table
 * locked in an open transaction, as an admin's console may. */
static PGconn *lock_tasks(pg_fixture *pg, const char *app) {
  PGconn *holder = PQconnectdb(pg->uri);
  CHECK(PQstatus(holder) == CONNECTION_OK);
  char sql[256];
  snprintf(sql, sizeof sql,
           "SET application_name = '%s'; BEGIN; LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE", app);
  PGresult *r = PQexec(holder, sql);
  CHECK(PQresultStatus(r) == PGRES_COMMAND_OK);
  PQclear(r);
  return holder;
}

TEST(server_tells_who_holds_a_lock_and_goes_on_after_it) {
  /* a session holding a lock on braid's tables (an admin's open
   * transaction) made the server wait for ever, silently: its writes hung
   * and nothing was logged */
  pg_fixture pg;
  pg_start(&pg, "lock-pg");
  farm f;
  pg_farm_start(&f, &pg, "lock-farm", "&options=-c%20lock_timeout%3D1500");
  PGconn *holder = lock_tasks(&pg, "dba-console");
  submission sub = {.f = &f, .graph = engine_only_graph("locked", 20)};
  pthread_t th;
  CHECK(pthread_create(&th, NULL, submit_main, &sub) == 0);
  /* told within a bounded time, naming the holder */
  char want[128];
  snprintf(want, sizeof want, "for a lock held by pid %d (dba-console, user braid, idle in "
                              "transaction, transaction open ", PQbackendPID(holder));
  CHECK(log_has(&f, want, 5));
  CHECK(log_has(&f, "LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE); after lock_timeout (1500ms)", 0));
  /* it gave up waiting after lock_timeout, rolled back and tries again */
  CHECK(log_has(&f, "postgres store: a batch of writes: ERROR:  canceling "
                    "statement due to lock timeout; rolled back, nothing lost; trying again in ",
                10));
  CHECK(log_has(&f, "(retry 2)", 10)); /* and again, while the lock is held */
  PGresult *r = PQexec(holder, "COMMIT");
  PQclear(r);
  PQfinish(holder);
  pthread_join(th, NULL);
  CHECK_EQ_INT(sub.status, 201);
  int64_t c[BR_TASK_NSTATES];
  for (double end = farm_now() + 10; farm_now() < end; usleep(100000)) {
    pg_counts(&pg, c);
    if (c[BR_TASK_DONE] == 21) break;
  }
  CHECK_EQ_INT(c[BR_TASK_DONE], 21); /* the start task and its 20 children: nothing lost */
  int64_t total = 0;
  for (int i = 0; i < BR_TASK_NSTATES; i++) total += c[i];
  CHECK_EQ_INT(total, 21); /* nor made twice */
  farm_stop(&f);
  pg_stop(&pg);
}

TEST(server_stops_while_a_write_waits_for_a_lock) {
  /* SIGTERM while the engine's commit waited for another session's lock
   * did nothing until the lock was let go (never, for a forgotten
   * transaction): the stop waited in the engine's thread */
  pg_fixture pg;
  pg_start(&pg, "stoplock-pg");
  farm f;
  pg_farm_start(&f, &pg, "stoplock-farm", ""); /* lock_timeout 10 s */
  PGconn *holder = lock_tasks(&pg, "");
  submission sub = {.f = &f, .graph = engine_only_graph("stopped", 5)};
  pthread_t th;
  CHECK(pthread_create(&th, NULL, submit_main, &sub) == 0);
  char want[64];
  snprintf(want, sizeof want, "for a lock held by pid %d", PQbackendPID(holder));
  CHECK(log_has(&f, want, 5));
  kill(f.server, SIGTERM);
  /* it ends while the lock is still held: the write is cancelled */
  int st = -1;
  for (double end = farm_now() + 30; farm_now() < end; usleep(50000))
    if (waitpid(f.server, &st, WNOHANG) == f.server) break;
  CHECK(st != -1);
  CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0); /* a stop asked for */
  f.server = 0;
  CHECK(log_has(&f, "asked to stop while this waited for another session's lock", 0));
  CHECK(log_has(&f, "server stopped", 0));
  PGresult *r = PQexec(holder, "COMMIT");
  PQclear(r);
  PQfinish(holder);
  pthread_join(th, NULL);
  CHECK_EQ_INT(sub.status, 503); /* not made: its submitter is told to send it again */
  /* rolled back whole: a new server finds nothing of it, and works */
  int64_t c[BR_TASK_NSTATES], total = 0;
  pg_counts(&pg, c);
  for (int i = 0; i < BR_TASK_NSTATES; i++) total += c[i];
  CHECK_EQ_INT(total, 0);
  farm_server_start(&f);
  sub = (submission){.f = &f, .graph = engine_only_graph("after", 5)};
  submit_main(&sub);
  CHECK_EQ_INT(sub.status, 201);
  for (double end = farm_now() + 10; farm_now() < end; usleep(100000)) {
    pg_counts(&pg, c);
    if (c[BR_TASK_DONE] == 6) break;
  }
  CHECK_EQ_INT(c[BR_TASK_DONE], 6);
  farm_stop(&f);
  pg_stop(&pg);
}

/* Lines in the file at path (0 when it is not there). */
static int lines_in(const char *path) {
  char *t = br_test_slurp(path);
  int n = br_test_count(t, "\n");
  free(t);
  return n;
}

TEST(server_comes_back_by_itself_when_postgres_restarts) {
  /* the server exited (status 1) when the database restarted under it,
   * and the farm stood still until someone started it again */
  pg_fixture pg;
  pg_start(&pg, "restart-pg");
  farm f;
  pg_farm_start(&f, &pg, "restart-farm", "");
  farm_agent(&f, "a1", "--slots 2");
  int n = 12;
  const char *job = "{\"shell\":\"sleep 0.4; echo x >> {out}/r-{index}.ran\"}";
  farm_submit_graph(&f, farm_jobs_graph("r", n, job), json_pack("{ss}", "out", f.dir), 0, NULL);
  int64_t c[BR_TASK_NSTATES];
  for (double end = farm_now() + 20; farm_now() < end; usleep(50000)) {
    pg_counts(&pg, c);
    if (c[BR_TASK_DONE] >= 3) break;
  }
  CHECK(c[BR_TASK_DONE] >= 3 && c[BR_TASK_DONE] < n + 1); /* under way */
  char cmd[2048];
  snprintf(cmd, sizeof cmd, "'%s/pg_ctl' -D '%s/data' -m fast -w restart", pg.bin, pg.dir);
  CHECK_EQ_INT(pg_sh(&pg, cmd), 0);
  CHECK(log_has(&f, "braid: lost the connection to the store", 10));
  for (double end = farm_now() + 60; farm_now() < end; usleep(100000)) {
    pg_counts(&pg, c);
    if (c[BR_TASK_DONE] == n + 1) break;
  }
  CHECK_EQ_INT(c[BR_TASK_DONE], n + 1);
  CHECK(kill(f.server, 0) == 0); /* the same process */
  CHECK(log_has(&f, "braid: serving again ", 0));
  /* every job ran once: the stopping server acknowledged the reports, and
   * handed out the work, of the batch that failed (the executor's last
   * answers went out as 200 though nothing was committed), so a job ran
   * twice ("the agent came back without this job") or a job the new
   * engine numbered the same as a forgotten one was cancelled */
  for (int i = 0; i < n; i++) {
    char p[1024];
    snprintf(p, sizeof p, "%s/r-%d.ran", f.dir, i);
    CHECK_EQ_INT(lines_in(p), 1);
  }
  farm_stop(&f);
  pg_stop(&pg);
}

TEST(second_server_on_a_database_is_refused_before_any_token) {
  /* a second server on a database in use, started in another folder,
   * printed "first start: an admin token is in ..." (and made one) before
   * its refusal */
  pg_fixture pg;
  pg_start(&pg, "two-pg");
  farm f;
  pg_farm_start(&f, &pg, "two-farm", "");
  char *other = br_test_tmpdir("two-other");
  char cmd[4096];
  snprintf(cmd, sizeof cmd,
           "cd '%s' && timeout 20 '%s' server --listen 127.0.0.1:0 --store '%s' 2>&1; echo exit=$?",
           other, farm_bin(), pg.uri);
  char *out = farm_capture(cmd);
  char want[64];
  snprintf(want, sizeof want, "is in use by pid %d on host ", (int)f.server);
  CHECK(strncmp(out, "braid: ", 7) == 0);
  CHECK_CONTAINS(out, want);
  CHECK(strstr(out, "admin token") == NULL);
  CHECK(strstr(out, "serving") == NULL);
  CHECK_CONTAINS(out, "exit=1");
  free(out);
  snprintf(cmd, sizeof cmd, "%s/farm.braid.admin-token", other);
  CHECK(access(cmd, F_OK) != 0); /* none made */
  free(other);
  farm_stop(&f);
  pg_stop(&pg);
}
