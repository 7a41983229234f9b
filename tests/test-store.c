/* The store test suite, run against both stores (SQLite and PostgreSQL), and
 * the engine's stand-in scenario and SIGKILL crash loop on PostgreSQL. */
#include <braid/engine.h>
#include <libpq-fe.h>
#include <signal.h>
#include <sys/wait.h>

#include "engine_util.h"
#include "pg_fixture.h"

static br_task_info mk(int64_t id, const char *node, br_task_state st) {
  br_task_info t;
  memset(&t, 0, sizeof t);
  t.id = id;
  t.graph_id = 1;
  t.name = (char *)"t";
  t.node = (char *)node;
  t.state = st;
  t.attrs = json_pack("{sisss[ii]}", "frame", (int)id, "shot", "sh010", "list", 1, 2);
  t.parent = id > 1 ? 1 : 0;
  t.created_ms = t.updated_ms = 1000 + id;
  return t;
}

static int count_cb(void *ud, br_task_info *t) {
  (*(int *)ud)++;
  br_task_info_free(t);
  free(t);
  return 0;
}

static int node_cb(void *ud, const char *node, const int64_t *counts) {
  char *buf = ud;
  char part[128];
  snprintf(part, sizeof part, "%s:%lld/%lld ", node, (long long)counts[BR_TASK_WAITING],
           (long long)counts[BR_TASK_DONE]);
  strcat(buf, part);
  return 0;
}

static int inv_cb(void *ud, br_inv_info *i) {
  br_inv_info *last = ud;
  br_inv_info_free(last);
  *last = *i;
  free(i);
  return 0;
}

static int graph_cb(void *ud, br_graph_row *g) {
  (*(int *)ud)++;
  br_graph_row_free(g);
  return 0;
}

/* The same checks for every store. */
static void store_suite(const char *uri) {
  br_store *s;
  br_error err;
  CHECK(br_store_open(uri, 0, &s, &err) == BR_OK);
  const br_store_ops *o = s->ops;
  int64_t gid;
  CHECK(o->graph_put(s, "g", "{\"nodes\": []}", &gid, &err) == BR_OK);
  int64_t gid2;
  CHECK(o->graph_put(s, "g", "{\"nodes\": [1]}", &gid2, &err) == BR_OK);
  br_graph_row row;
  CHECK(o->graph_get(s, 0, "g", &row, &err) == BR_OK);
  CHECK_EQ_INT(row.version, 2);
  CHECK_EQ_INT(row.id, gid2);
  br_graph_row_free(&row);
  CHECK(o->graph_get(s, 0, "nope", &row, &err) == BR_ENOTFOUND);
  int ngraphs = 0;
  CHECK(o->graph_list(s, graph_cb, &ngraphs, &err) == BR_OK);
  CHECK_EQ_INT(ngraphs, 2);
  /* a batch of writes */
  CHECK(o->begin(s, &err) == BR_OK);
  for (int i = 1; i <= 50; i++) {
    br_task_info t = mk(i, i % 2 ? "a" : "b", BR_TASK_WAITING);
    CHECK(o->task_insert(s, &t, &err) == BR_OK);
    json_decref(t.attrs);
  }
  br_split sp = {.id = 100, .count = 3, .live = 3, .orig_task = 1, .prev_split = 0};
  CHECK(o->split_put(s, &sp, &err) == BR_OK);
  br_inv_row ir = {.id = 200, .task_id = 2, .node = "b", .attempt = 1, .status = "running",
                   .log_path = "/tmp/x.log", .started_ms = 5};
  CHECK(o->inv_put(s, &ir, &err) == BR_OK);
  CHECK(o->commit(s, &err) == BR_OK);
  /* updates with and without attributes, a counter, an invocation's end */
  CHECK(o->begin(s, &err) == BR_OK);
  br_task_info t2 = mk(2, "b", BR_TASK_DONE);
  json_object_set_new(t2.attrs, "image", json_string("/r/img.0002.png"));
  CHECK(o->task_update(s, &t2, true, &err) == BR_OK);
  br_task_info t3 = mk(3, "a", BR_TASK_DEAD);
  json_object_set_new(t3.attrs, "ignored", json_true());
  CHECK(o->task_update(s, &t3, false, &err) == BR_OK);
  CHECK(o->task_add_live_children(s, 1, 5, &err) == BR_OK);
  sp.live = 2;
  CHECK(o->split_put(s, &sp, &err) == BR_OK);
  ir.status = "ok";
  ir.exit_code = 0;
  ir.runtime = 1.5;
  ir.log_tail = "done\n";
  CHECK(o->inv_put(s, &ir, &err) == BR_OK);
  CHECK(o->commit(s, &err) == BR_OK);
  json_decref(t2.attrs);
  json_decref(t3.attrs);
  /* reads */
  br_task_info got;
  CHECK(o->task_get(s, 2, &got, &err) == BR_OK);
  CHECK_EQ_INT(got.state, BR_TASK_DONE);
  CHECK_EQ_STR(json_string_value(json_object_get(got.attrs, "image")), "/r/img.0002.png");
  CHECK_EQ_INT(json_array_size(json_object_get(got.attrs, "list")), 2);
  br_task_info_free(&got);
  CHECK(o->task_get(s, 3, &got, &err) == BR_OK);
  CHECK(json_object_get(got.attrs, "ignored") == NULL); /* attrs not written */
  CHECK_EQ_INT(got.state, BR_TASK_DEAD);
  br_task_info_free(&got);
  CHECK(o->task_get(s, 1, &got, &err) == BR_OK);
  CHECK_EQ_INT(got.live_children, 5);
  br_task_info_free(&got);
  CHECK(o->task_get(s, 999, &got, &err) == BR_ENOTFOUND);
  int n = 0;
  CHECK(o->load_active(s, count_cb, &n, &err) == BR_OK);
  CHECK_EQ_INT(n, 48);
  br_task_filter f = BR_TASK_FILTER_ALL;
  f.node = "b";
  f.state = BR_TASK_WAITING;
  n = 0;
  CHECK(o->task_query(s, &f, count_cb, &n, &err) == BR_OK);
  CHECK_EQ_INT(n, 24);
  f = (br_task_filter)BR_TASK_FILTER_ALL;
  f.after_id = 40;
  f.limit = 5;
  n = 0;
  CHECK(o->task_query(s, &f, count_cb, &n, &err) == BR_OK);
  CHECK_EQ_INT(n, 5);
  f = (br_task_filter)BR_TASK_FILTER_ALL;
  f.parent = 1;
  n = 0;
  CHECK(o->task_query(s, &f, count_cb, &n, &err) == BR_OK);
  CHECK_EQ_INT(n, 49);
  int64_t counts[BR_TASK_NSTATES];
  f = (br_task_filter)BR_TASK_FILTER_ALL;
  CHECK(o->task_count(s, &f, counts, &err) == BR_OK);
  CHECK_EQ_INT(counts[BR_TASK_WAITING], 48);
  CHECK_EQ_INT(counts[BR_TASK_DONE], 1);
  CHECK_EQ_INT(counts[BR_TASK_DEAD], 1);
  char nodes[256] = "";
  CHECK(o->task_count_nodes(s, 0, node_cb, nodes, &err) == BR_OK);
  CHECK_EQ_STR(nodes, "a:24/0 b:24/1 ");
  br_split sg;
  CHECK(o->split_get(s, 100, &sg, &err) == BR_OK);
  CHECK_EQ_INT(sg.live, 2);
  CHECK_EQ_INT(sg.orig_task, 1);
  CHECK(o->split_get(s, 101, &sg, &err) == BR_ENOTFOUND);
  br_inv_info last = {0};
  CHECK(o->inv_query(s, 2, inv_cb, &last, &err) == BR_OK);
  CHECK_EQ_STR(last.row.status, "ok");
  CHECK_EQ_STR(last.row.log_tail, "done\n");
  CHECK(last.row.runtime > 1.4 && last.row.runtime < 1.6);
  br_inv_info_free(&last);
  int64_t max;
  CHECK(o->max_id(s, &max, &err) == BR_OK);
  CHECK_EQ_INT(max, 200);
  /* a batch that fails is all or nothing */
  CHECK(o->begin(s, &err) == BR_OK);
  br_task_info t51 = mk(51, "a", BR_TASK_WAITING);
  CHECK(o->task_insert(s, &t51, &err) == BR_OK);
  br_task_info dup = mk(5, "a", BR_TASK_WAITING); /* already there */
  int rc = o->task_insert(s, &dup, &err);
  if (rc == BR_OK) rc = o->commit(s, &err);
  else o->rollback(s);
  CHECK(rc != BR_OK);
  json_decref(t51.attrs);
  json_decref(dup.attrs);
  CHECK(o->task_get(s, 51, &got, &err) == BR_ENOTFOUND);
  br_store_close(s);
  /* reopening migrates nothing and finds everything */
  CHECK(br_store_open(uri, 0, &s, &err) == BR_OK);
  n = 0;
  CHECK(s->ops->load_active(s, count_cb, &n, &err) == BR_OK);
  CHECK_EQ_INT(n, 48);
  /* one engine per store: a second read-write open is refused, naming the
   * holder; readers go on; once the first is closed the store is free */
  br_store *second = NULL, *reader = NULL;
  CHECK(br_store_open(uri, 0, &second, &err) == BR_ESTORE);
  CHECK(second == NULL);
  CHECK_CONTAINS(err.msg, "is in use by pid ");
  char me[32];
  snprintf(me, sizeof me, "pid %ld on host ", (long)getpid());
  CHECK_CONTAINS(err.msg, me);
  CHECK(br_store_open(uri, BR_STORE_READONLY, &reader, &err) == BR_OK);
  CHECK(reader->ops->task_get(reader, 2, &got, &err) == BR_OK);
  br_task_info_free(&got);
  br_store_close(reader);
  br_store_close(s);
  CHECK(br_store_open(uri, 0, &second, &err) == BR_OK);
  br_store_close(second);
}

TEST(store_suite_sqlite) {
  char *dir = br_test_tmpdir("store-sqlite");
  char uri[600];
  snprintf(uri, sizeof uri, "%s/s.db", dir);
  store_suite(uri);
  free(dir);
}

TEST(store_suite_postgres) {
  pg_fixture pg;
  pg_start(&pg, "store-pg");
  store_suite(pg.uri);
  br_store *s;
  br_error err;
  CHECK(br_store_open("postgresql://braid@/nodb?host=/nonexistent", 0, &s, &err) == BR_ESTORE);
  CHECK_CONTAINS(err.msg, "postgres store: cannot connect");
  pg_stop(&pg);
}

/* A reader (braid status, tasks, show, log) on a PostgreSQL URI changes
 * nothing: it made braid's tables in whatever database the URI named (a
 * mistyped one gave an empty store and exit 0), and a role that may only
 * read could not read ('permission denied for schema public' from the
 * CREATE TABLE IF NOT EXISTS every open ran). */
TEST(postgres_readers_change_nothing) {
  pg_fixture pg;
  pg_start(&pg, "ro-pg");
  br_store *s = NULL;
  br_error err;
  CHECK(br_store_open(pg.uri, BR_STORE_READONLY, &s, &err) == BR_ESTORE);
  CHECK(s == NULL);
  CHECK_CONTAINS(err.msg, "holds no braid store (no table braid_meta in schema 'public')");
  PGconn *c = PQconnectdb(pg.uri);
  CHECK(PQstatus(c) == CONNECTION_OK);
  PGresult *r = PQexec(c, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'");
  CHECK(PQresultStatus(r) == PGRES_TUPLES_OK);
  CHECK_EQ_STR(PQgetvalue(r, 0, 0), "0"); /* nothing made */
  PQclear(r);
  /* an old schema is not migrated by a reader */
  r = PQexec(c, "CREATE TABLE braid_meta(key TEXT PRIMARY KEY, value TEXT);"
                "INSERT INTO braid_meta VALUES ('schema_version', '1')");
  CHECK(PQresultStatus(r) == PGRES_COMMAND_OK);
  PQclear(r);
  CHECK(br_store_open(pg.uri, BR_STORE_READONLY, &s, &err) == BR_ESTORE);
  CHECK_CONTAINS(err.msg, "needs a schema upgrade (version 1, this braid has ");
  r = PQexec(c, "DROP TABLE braid_meta");
  PQclear(r);
  /* made by a read-write open; then a role that may only read reads it */
  CHECK(br_store_open(pg.uri, 0, &s, &err) == BR_OK);
  br_store_close(s);
  r = PQexec(c, "CREATE ROLE reader LOGIN; GRANT SELECT ON ALL TABLES IN SCHEMA public TO reader;"
                "REVOKE CREATE ON SCHEMA public FROM PUBLIC");
  CHECK(PQresultStatus(r) == PGRES_COMMAND_OK);
  PQclear(r);
  PQfinish(c);
  char uri[1100];
  snprintf(uri, sizeof uri, "postgresql://reader@/postgres?host=%s", pg.dir);
  CHECK(br_store_open(uri, BR_STORE_READONLY, &s, &err) == BR_OK);
  int64_t counts[BR_TASK_NSTATES];
  br_task_filter f = BR_TASK_FILTER_ALL;
  CHECK(br_store_task_count(s, &f, counts, &err) == BR_OK);
  br_store_close(s);
  pg_stop(&pg);
}

TEST(engine_stops_when_postgres_restarts) {
  /* a braid server on PostgreSQL went on after the database restarted,
   * answering every request with an empty 'postgres store: ' (HTTP 500)
   * for ever, its owner lock gone with the connection */
  pg_fixture pg;
  pg_start(&pg, "lost-pg");
  br_store *s;
  br_error err;
  CHECK(br_store_open(pg.uri, 0, &s, &err) == BR_OK);
  br_engine *e = br_engine_open(s, NULL, &err);
  CHECK(e != NULL);
  br_graph *g = br_graph_load_string(
      "{\"name\":\"l\",\"nodes\":[{\"name\":\"a\",\"type\":\"null\"}]}", "<test>", &err);
  int64_t gid = 0, id = 0;
  CHECK(g && br_engine_add_graph(e, g, &gid, &err) == BR_OK);
  CHECK(br_engine_submit(e, gid, "a", NULL, NULL, &id, &err) == BR_OK);
  CHECK_EQ_INT(br_engine_run(e, &err), BR_OK);
  CHECK(!br_store_lost(s));
  char cmd[2048];
  snprintf(cmd, sizeof cmd, "'%s/pg_ctl' -D '%s/data' -m fast -w restart", pg.bin, pg.dir);
  CHECK_EQ_INT(pg_sh(&pg, cmd), 0);
  /* the next read finds the connection gone, and says so */
  br_task_info ti;
  CHECK_EQ_INT(br_store_task_get(s, id, &ti, &err), BR_ESTORE);
  CHECK_CONTAINS(err.msg, "postgres store: ");
  CHECK(strlen(err.msg) > strlen("postgres store: reading tasks: ") + 10);
  CHECK(br_store_lost(s));
  /* a serving engine stops instead of answering errors for ever */
  CHECK_EQ_INT(br_engine_serve(e, &err), BR_ESTORE);
  CHECK_CONTAINS(err.msg, "lost the connection to the store (postgres): stopping; start braid "
                          "again");
  br_engine_free(e);
  br_store_close(s);
  /* a new one goes on from what was committed */
  CHECK(br_store_open(pg.uri, 0, &s, &err) == BR_OK);
  CHECK_EQ_INT(br_store_task_get(s, id, &ti, &err), BR_OK);
  CHECK_EQ_INT(ti.state, BR_TASK_DONE);
  br_task_info_free(&ti);
  br_store_close(s);
  pg_stop(&pg);
}

static void check_result(const char *uri) {
  br_store *s;
  br_error err;
  CHECK(br_store_open(uri, 0, &s, &err) == BR_OK);
  br_task_filter f = BR_TASK_FILTER_ALL;
  int64_t counts[BR_TASK_NSTATES];
  CHECK(br_store_task_count(s, &f, counts, &err) == BR_OK);
  CHECK_EQ_INT(counts[BR_TASK_DONE], 801);
  CHECK_EQ_INT(counts[BR_TASK_DEAD], 79);
  CHECK_EQ_INT(counts[BR_TASK_WAITING] + counts[BR_TASK_BLOCKED] + counts[BR_TASK_ERROR], 0);
  f.node = "end";
  tlist l = {0};
  CHECK(br_store_task_query(s, &f, tlist_cb, &l, &err) == BR_OK);
  CHECK_EQ_INT(l.n, 1);
  json_t *frames = json_object_get(l.v[0].attrs, "frames");
  CHECK_EQ_INT(json_array_size(frames), 4);
  for (size_t w = 0; w < 4; w++) {
    json_t *seq = json_array_get(frames, w);
    CHECK_EQ_INT(json_array_size(seq), 100);
    for (size_t k = 0; k < 100; k++) CHECK_EQ_INT(json_integer_value(json_array_get(seq, k)), (int)k + 1);
  }
  tlist_free(&l);
  br_store_close(s);
}

TEST(engine_standin_and_crashes_on_postgres) {
  pg_fixture pg;
  pg_start(&pg, "engine-pg");
  char cmd[2048];
  /* one database per round, in the same cluster */
  for (int round = 0; round < 6; round++) {
    snprintf(cmd, sizeof cmd, "'%s/createdb' -h '%s' -U braid r%d", pg.bin, pg.dir, round);
    CHECK(system(cmd) == 0);
    char uri[1200];
    snprintf(uri, sizeof uri, "postgresql://braid@/r%d?host=%s", round, pg.dir);
    int rc = crash_run(uri, round % 2 ? "commit-before" : "commit-after", round ? 1 + round * 3 : 0,
                       1, 64);
    for (int k = 0; k < 2 && rc == -SIGKILL; k++)
      rc = crash_run(uri, k ? "commit-after" : "commit-before", 2 + (round + k) % 4, 0, 64);
    if (rc == -SIGKILL) rc = crash_run(uri, "none", 0, 0, 64);
    CHECK_EQ_INT(rc, 0);
    check_result(uri);
  }
  pg_stop(&pg);
}

/* The command line on PostgreSQL: braid run, then the readers, with
 * nothing made in the working folder but the logs. */
TEST(braid_run_and_readers_on_postgres) {
  pg_fixture pg;
  pg_start(&pg, "run-pg");
  char *dir = br_test_tmpdir("run-pg-cwd");
  const char *bin = getenv("BRAID_BIN") ? getenv("BRAID_BIN") : "braid";
  const char *src = getenv("BRAID_SOURCE_DIR") ? getenv("BRAID_SOURCE_DIR") : "..";
  char cmd[4096];
  snprintf(cmd, sizeof cmd, "cd '%s' && '%s' run '%s/bench/exec-true.json' --set n=20 --quiet --store '%s' 2>&1",
           dir, bin, src, pg.uri);
  CHECK_EQ_INT(system(cmd), 0);
  snprintf(cmd, sizeof cmd, "cd '%s' && '%s' tasks --state done --json --store '%s' | grep -c '\"state\": \"done\"'",
           dir, bin, pg.uri);
  FILE *p = popen(cmd, "r");
  char out[64] = "";
  CHECK(p && fgets(out, sizeof out, p));
  pclose(p);
  CHECK_EQ_INT(atoi(out), 21);
  snprintf(cmd, sizeof cmd, "cd '%s' && '%s' status --store '%s' >/dev/null", dir, bin, pg.uri);
  CHECK_EQ_INT(system(cmd), 0);
  snprintf(cmd, sizeof cmd, "%s/postgresql:", dir);
  CHECK(access(cmd, F_OK) != 0); /* no folder named after the URI */
  free(dir);
  pg_stop(&pg);
}
