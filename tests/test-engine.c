/* The engine: the stand-in reference scenario, waiter corner cases, fan-out,
 * cycles, parking, restarts, and crash safety under SIGKILL. */
#include "engine_util.h"

static char *expected_frames(void) {
  char *buf = malloc(8192), *p = buf;
  p += sprintf(p, "[");
  for (int w = 0; w < 4; w++) {
    p += sprintf(p, "%s[", w ? "," : "");
    for (int f = 1; f <= 100; f++) p += sprintf(p, "%s%d", f > 1 ? "," : "", f);
    p += sprintf(p, "]");
  }
  sprintf(p, "]");
  return buf;
}

/* Checks the store holds exactly the stand-in's finished result. */
static void check_standin_result(tenv *t, int64_t root) {
  tlist end = tenv_tasks(t, "end", BR_TASK_DONE);
  CHECK_EQ_INT(end.n, 1);
  CHECK_EQ_INT(end.v[0].id, root);
  char *frames = json_dumps(json_object_get(end.v[0].attrs, "frames"), JSON_COMPACT);
  char *want = expected_frames();
  CHECK_EQ_STR(frames, want);
  char *seeds = json_dumps(json_object_get(end.v[0].attrs, "seeds"), JSON_COMPACT);
  CHECK_EQ_STR(seeds, "[1,1,2,2]");
  free(frames);
  free(want);
  free(seeds);
  tlist_free(&end);
  /* the stages created 4, 80 and 400 (+400 render) tasks, and nothing else */
  CHECK_EQ_INT(tenv_count(t, "gather_wedges", BR_TASK_DEAD), 3);
  CHECK_EQ_INT(tenv_count(t, "gather_chunks", BR_TASK_DEAD), 76);
  CHECK_EQ_INT(tenv_count(t, "wait_frames", BR_TASK_DONE), 400);
  CHECK_EQ_INT(tenv_count(t, "wait_render", BR_TASK_DONE), 400);
  CHECK_EQ_INT(tenv_count(t, NULL, -1), 1 + 3 + 76 + 400 + 400);
  int64_t counts[BR_TASK_NSTATES];
  br_error err;
  br_task_filter f = BR_TASK_FILTER_ALL;
  CHECK(br_store_task_count(t->store, &f, counts, &err) == BR_OK);
  CHECK_EQ_INT(counts[BR_TASK_DONE], 801);
  CHECK_EQ_INT(counts[BR_TASK_DEAD], 79);
}

TEST(standin_scenario) {
  tenv t;
  tenv_open(&t, "standin");
  char *text = standin_text();
  tenv_graph(&t, text);
  free(text);
  int64_t root = tenv_submit(&t, "start", "{\"frame_start\": 1, \"frame_end\": 100}");
  tenv_run(&t);
  check_standin_result(&t, root);
  br_engine_stats st;
  br_engine_get_stats(t.eng, &st);
  CHECK_EQ_INT(st.tasks_in_memory, 0); /* finished tasks leave memory */
  CHECK_EQ_INT(st.groups, 0);
  CHECK(st.peak_tasks_in_memory <= 881);
  tenv_close(&t);
}

TEST(children_reach_waiter_before_parent) {
  /* The parent is held at a gather until its split sibling (created after the
   * children) arrives, so the children block at the waiter first. */
  tenv t;
  tenv_open(&t, "kids_first");
  tenv_graph(&t, "{\"nodes\": [{\"name\": \"s\", \"type\": \"spawn\", \"params\": {\"count\": 3}},"
                 "{\"name\": \"split\", \"type\": \"wedge\", \"params\": {\"wedges\": [{\"attr\": \"x\", \"values\": [0, 1]}]}},"
                 "{\"name\": \"slow1\", \"type\": \"null\"}, {\"name\": \"slow2\", \"type\": \"null\"},"
                 "{\"name\": \"g\", \"type\": \"gather_split\"},"
                 "{\"name\": \"w\", \"type\": \"wait_children\", \"params\": {\"promote\": {\"kids\": {\"rule\": \"append\", \"from\": \"index\"}}}},"
                 "{\"name\": \"done\", \"type\": \"null\"}],"
                 "\"wires\": [[\"s.children\", \"w.children\"], [\"s.out\", \"split\"],"
                 "[\"split\", \"g\"], [\"g\", \"w.parents\"], [\"w.parents\", \"done\"]]}");
  tenv_submit(&t, "s", "{}");
  tenv_run(&t);
  CHECK_EQ_INT(tenv_count(&t, "done", BR_TASK_DONE), 1);
  char *kids = tenv_attr(&t, "done", BR_TASK_DONE, "kids");
  CHECK_EQ_STR(kids, "[0,1,2]");
  free(kids);
  CHECK_EQ_INT(tenv_count(&t, "w", BR_TASK_DONE), 3);
  tenv_close(&t);
}

typedef struct order_probe {
  tenv *t;
  int children_waited_alone; /* children blocked at w while the parent was at g */
} order_probe;

static void probe_hook(void *ud, const char *point, int64_t n) {
  order_probe *p = ud;
  (void)n;
  if (strcmp(point, "commit-after") != 0 || !p->t->graph_id) return;
  int64_t w[BR_TASK_NSTATES], g[BR_TASK_NSTATES];
  br_engine_count_live(p->t->eng, p->t->graph_id, "w", w);
  br_engine_count_live(p->t->eng, p->t->graph_id, "g", g);
  if (w[BR_TASK_BLOCKED] >= 1 && g[BR_TASK_BLOCKED] >= 1) p->children_waited_alone = 1;
}

TEST(children_first_order_is_real) {
  /* Same graph, committing after every transition: a probe sees the
   * children blocked at w while the parent still waits at g. */
  tenv t;
  memset(&t, 0, sizeof t);
  t.dir = br_test_tmpdir("kids_first_order");
  snprintf(t.store_path, sizeof t.store_path, "%s/braid.db", t.dir);
  br_error err;
  CHECK(br_store_open(t.store_path, 0, &t.store, &err) == BR_OK);
  order_probe probe = {.t = &t};
  br_engine_opts o = {.batch_max = 1, .hook = probe_hook, .hook_ud = &probe};
  t.eng = br_engine_open(t.store, &o, &err);
  tenv_graph(&t, "{\"nodes\": [{\"name\": \"s\", \"type\": \"spawn\", \"params\": {\"count\": 3}},"
                 "{\"name\": \"split\", \"type\": \"wedge\", \"params\": {\"wedges\": [{\"attr\": \"x\", \"values\": [0, 1]}]}},"
                 "{\"name\": \"g\", \"type\": \"gather_split\"},"
                 "{\"name\": \"w\", \"type\": \"wait_children\"}, {\"name\": \"done\", \"type\": \"null\"}],"
                 "\"wires\": [[\"s.children\", \"w.children\"], [\"s.out\", \"split\"],"
                 "[\"split\", \"g\"], [\"g\", \"w.parents\"], [\"w.parents\", \"done\"]]}");
  int64_t p = tenv_submit(&t, "s", "{}");
  tenv_run(&t);
  CHECK(probe.children_waited_alone);
  tlist par = tenv_tasks(&t, "done", BR_TASK_DONE);
  CHECK_EQ_INT(par.n, 1);
  CHECK_EQ_INT(par.v[0].id, p);
  tlist_free(&par);
  CHECK_EQ_INT(tenv_count(&t, "w", BR_TASK_DONE), 3);
  tenv_close(&t);
}

TEST(dead_child_does_not_hold_parent) {
  tenv t;
  tenv_open(&t, "dead_child");
  tenv_graph(&t, "{\"nodes\": [{\"name\": \"s\", \"type\": \"spawn\", \"params\": {\"count\": 3}},"
                 "{\"name\": \"sw\", \"type\": \"switch\", \"params\": {\"attr\": \"index\", \"cases\": [1]}},"
                 "{\"name\": \"k\", \"type\": \"kill\"},"
                 "{\"name\": \"w\", \"type\": \"wait_children\", \"params\": {\"promote\": {\"kids\": {\"rule\": \"append\", \"from\": \"index\"}}}},"
                 "{\"name\": \"done\", \"type\": \"null\"}],"
                 "\"wires\": [[\"s.children\", \"sw\"], [\"sw.1\", \"k\"], [\"sw.default\", \"w.children\"],"
                 "[\"s.out\", \"w.parents\"], [\"w.parents\", \"done\"]]}");
  tenv_submit(&t, "s", "{}");
  tenv_run(&t);
  char *kids = tenv_attr(&t, "done", BR_TASK_DONE, "kids");
  CHECK_EQ_STR(kids, "[0,2]");
  free(kids);
  tlist p = tenv_tasks(&t, "done", BR_TASK_DONE);
  CHECK_EQ_INT(p.v[0].live_children, 2);
  tlist_free(&p);
  CHECK_EQ_INT(tenv_count(&t, "k", BR_TASK_DEAD), 1);
  tenv_close(&t);
}

TEST(dead_child_after_parent_arrived) {
  /* The parent waits first; a child dies later: the death itself must
   * release the parent (an event, not a poll). */
  tenv t;
  tenv_open(&t, "dead_later");
  tenv_graph(&t, "{\"nodes\": [{\"name\": \"s\", \"type\": \"spawn\", \"params\": {\"count\": 2}},"
                 "{\"name\": \"sw\", \"type\": \"switch\", \"params\": {\"attr\": \"index\", \"cases\": [1]}},"
                 "{\"name\": \"a\", \"type\": \"null\"}, {\"name\": \"b\", \"type\": \"null\"}, {\"name\": \"k\", \"type\": \"kill\"},"
                 "{\"name\": \"w\", \"type\": \"wait_children\"}, {\"name\": \"done\", \"type\": \"null\"}],"
                 "\"wires\": [[\"s.children\", \"sw\"], [\"sw.1\", \"a\"], [\"a\", \"b\"], [\"b\", \"k\"], [\"sw.default\", \"w.children\"],"
                 "[\"s.out\", \"w.parents\"], [\"w.parents\", \"done\"]]}");
  tenv_submit(&t, "s", "{}");
  tenv_run(&t);
  CHECK_EQ_INT(tenv_count(&t, "done", BR_TASK_DONE), 1);
  CHECK_EQ_INT(tenv_count(&t, "w", BR_TASK_DONE), 1);
  tenv_close(&t);
}

TEST(fan_out_is_an_implicit_split) {
  tenv t;
  tenv_open(&t, "fanout");
  tenv_graph(&t, "{\"nodes\": [{\"name\": \"start\", \"type\": \"null\"},"
                 "{\"name\": \"a\", \"type\": \"set_attr\", \"params\": {\"set\": {\"x\": \"A\"}}},"
                 "{\"name\": \"b\", \"type\": \"set_attr\", \"params\": {\"set\": {\"x\": \"B\"}}},"
                 "{\"name\": \"c\", \"type\": \"set_attr\", \"params\": {\"set\": {\"x\": \"C\"}}},"
                 "{\"name\": \"g\", \"type\": \"gather_split\", \"params\": {\"promote\": {\"xs\": {\"rule\": \"append\", \"from\": \"x\"}}}}],"
                 "\"wires\": [[\"start\", \"a\"], [\"start\", \"b\"], [\"start\", \"c\"], [\"a\", \"g\"], [\"b\", \"g\"], [\"c\", \"g\"]]}");
  tenv_submit(&t, "start", "{\"shared\": [1, 2]}");
  tenv_run(&t);
  char *xs = tenv_attr(&t, "g", BR_TASK_DONE, "xs");
  CHECK_EQ_STR(xs, "[\"A\",\"B\",\"C\"]");
  free(xs);
  CHECK_EQ_INT(tenv_count(&t, "g", BR_TASK_DEAD), 2);
  tenv_close(&t);
}

TEST(cycle_retry_loop) {
  tenv t;
  tenv_open(&t, "cycle");
  tenv_graph(&t, "{\"nodes\": [{\"name\": \"sw\", \"type\": \"switch\", \"params\": {\"attr\": \"state\", \"cases\": [\"b\", \"c\"]}},"
                 "{\"name\": \"to_b\", \"type\": \"set_attr\", \"params\": {\"set\": {\"state\": \"b\"}}},"
                 "{\"name\": \"to_c\", \"type\": \"set_attr\", \"params\": {\"set\": {\"state\": \"c\"}}},"
                 "{\"name\": \"end\", \"type\": \"null\"}],"
                 "\"wires\": [[\"sw.default\", \"to_b\"], [\"to_b\", \"sw\"], [\"sw.b\", \"to_c\"], [\"to_c\", \"sw\"], [\"sw.c\", \"end\"]]}");
  tenv_submit(&t, "sw", "{}");
  tenv_run(&t);
  char *s = tenv_attr(&t, "end", BR_TASK_DONE, "state");
  CHECK_EQ_STR(s, "\"c\"");
  free(s);
  br_engine_stats st;
  br_engine_get_stats(t.eng, &st);
  CHECK_EQ_INT(st.transitions, 7); /* submit, sw, to_b, sw, to_c, sw, parked at end */
  tenv_close(&t);
}

/* An engine on t's store with a bound on instant steps. */
static void tenv_max_steps(tenv *t, int64_t max_steps) {
  br_error err;
  br_engine_free(t->eng);
  br_engine_opts o = {.max_steps = max_steps};
  t->eng = br_engine_open(t->store, &o, &err);
  CHECK(t->eng != NULL);
}

TEST(endless_loop_of_instant_nodes_fails_naming_them) {
  tenv t;
  tenv_open(&t, "endless");
  tenv_graph(&t, "{\"nodes\": [{\"name\": \"s\", \"type\": \"null\"},"
                 "{\"name\": \"a\", \"type\": \"null\"}, {\"name\": \"b\", \"type\": \"null\"}],"
                 "\"wires\": [[\"s\", \"a\"], [\"a\", \"b\"], [\"b\", \"a\"]]}");
  int64_t id = tenv_submit(&t, "s", "{}");
  tenv_run(&t); /* returns: before, it went round for ever */
  br_task_info ti;
  br_error err;
  CHECK(br_store_task_get(t.store, id, &ti, &err) == BR_OK);
  CHECK_EQ_INT(ti.state, BR_TASK_ERROR);
  CHECK_CONTAINS(ti.error, "for 100000 steps without running a job or waiting: an endless loop?");
  if (!strstr(ti.error, "went round 'a' -> 'b' -> 'a'") &&
      !strstr(ti.error, "went round 'b' -> 'a' -> 'b'"))
    br_test_fail(__FILE__, __LINE__, "error '%s' does not name the loop", ti.error);
  br_task_info_free(&ti);
  tenv_close(&t);
}

/* A counter that goes round `rounds` times, through a waiter each round
 * when `wait` is set. */
static const char *counter_graph(int rounds, int wait, char *buf, size_t size) {
  snprintf(buf, size,
           "{\"nodes\": [{\"name\": \"count\", \"type\": \"script\", \"params\": "
           "{\"outputs\": [\"again\", \"out\"], \"source\": "
           "\"task.attr.i = (attr.i or 0) + 1 if attr.i < %d then route('again') "
           "else route('out') end\"}},"
           "{\"name\": \"back\", \"type\": \"%s\"}, {\"name\": \"end\", \"type\": \"null\"}],"
           "\"wires\": [[\"count.again\", \"back%s\"], [\"back%s\", \"count\"], "
           "[\"count.out\", \"end\"]]}",
           rounds, wait ? "wait_children" : "null", wait ? ".parents" : "",
           wait ? ".parents" : "");
  return buf;
}

TEST(bounded_loops_run_and_a_wait_starts_the_count_again) {
  char g[2048];
  tenv t;
  tenv_open(&t, "bounded");
  tenv_max_steps(&t, 100);
  tenv_graph(&t, counter_graph(40, 0, g, sizeof g)); /* 80 steps, and end */
  tenv_submit(&t, "count", "{}");
  tenv_run(&t);
  char *i = tenv_attr(&t, "end", BR_TASK_DONE, "i");
  CHECK_EQ_STR(i, "40");
  free(i);
  tenv_graph(&t, counter_graph(60, 0, g, sizeof g)); /* 120 steps: past the bound */
  tenv_submit(&t, "count", "{}");
  tenv_run(&t);
  tlist l = tenv_tasks(&t, NULL, BR_TASK_ERROR);
  CHECK_EQ_INT(l.n, 1);
  CHECK_CONTAINS(l.v[0].error, "for 100 steps");
  tlist_free(&l);
  /* 1000 rounds, each through a waiter: never 100 steps in a row */
  tenv_graph(&t, counter_graph(1000, 1, g, sizeof g));
  tenv_submit(&t, "count", "{}");
  tenv_run(&t);
  CHECK_EQ_INT(tenv_count(&t, NULL, BR_TASK_ERROR), 1);
  l = tenv_tasks(&t, "end", BR_TASK_DONE);
  CHECK_EQ_INT(l.n, 2);
  CHECK_EQ_INT(json_integer_value(json_object_get(l.v[1].attrs, "i")), 1000);
  tlist_free(&l);
  tenv_close(&t);
}

TEST(no_outgoing_wire_parks_task) {
  tenv t;
  tenv_open(&t, "park");
  tenv_graph(&t, "{\"nodes\": [{\"name\": \"a\", \"type\": \"set_attr\", \"params\": {\"set\": {\"v\": 1}}}]}");
  int64_t id = tenv_submit(&t, "a", "{}");
  tenv_run(&t);
  br_task_info ti;
  br_error err;
  CHECK(br_store_task_get(t.store, id, &ti, &err) == BR_OK);
  CHECK_EQ_INT(ti.state, BR_TASK_DONE);
  CHECK_EQ_STR(ti.node, "a");
  br_task_info_free(&ti);
  tenv_close(&t);
}

TEST(graph_versions_reused) {
  tenv t;
  tenv_open(&t, "versions");
  const char *g1 = "{\"name\": \"v\", \"nodes\": [{\"name\": \"a\", \"type\": \"null\"}]}";
  tenv_graph(&t, g1);
  int64_t first = t.graph_id;
  tenv_graph(&t, g1);
  CHECK_EQ_INT(t.graph_id, first); /* same content: same version */
  tenv_graph(&t, "{\"name\": \"v\", \"nodes\": [{\"name\": \"a\", \"type\": \"kill\"}]}");
  CHECK(t.graph_id != first);
  tenv_close(&t);
}

TEST(submit_errors) {
  tenv t;
  tenv_open(&t, "submit_err");
  tenv_graph(&t, "{\"nodes\": [{\"name\": \"a\", \"type\": \"null\"}]}");
  br_error err;
  int64_t id;
  CHECK(br_engine_submit(t.eng, t.graph_id, "nope", NULL, NULL, &id, &err) == BR_ENOTFOUND);
  CHECK_CONTAINS(err.msg, "has no node 'nope'");
  br_submit_opts o = {.port = "inn"};
  CHECK(br_engine_submit(t.eng, t.graph_id, "a", NULL, &o, &id, &err) == BR_ENOTFOUND);
  json_t *arr = json_array();
  CHECK(br_engine_submit(t.eng, t.graph_id, "a", arr, NULL, &id, &err) == BR_EINVAL);
  json_decref(arr);
  tenv_close(&t);
}

/* ---- restart and crash safety ---- */

TEST(restart_continues_where_it_stopped) {
  tenv t;
  tenv_open(&t, "restart");
  char *text = standin_text();
  tenv_graph(&t, text);
  free(text);
  int64_t root = tenv_submit(&t, "start", "{\"frame_start\": 1, \"frame_end\": 100}");
  br_error err;
  CHECK(br_engine_flush(t.eng, &err) == BR_OK);
  /* an engine that stops at a clean point: reopen several times mid-run */
  for (int i = 0; i < 3; i++) {
    tenv_reopen(&t);
    br_engine_stats st;
    br_engine_get_stats(t.eng, &st);
    CHECK(st.tasks_in_memory >= 1);
  }
  tenv_run(&t);
  check_standin_result(&t, root);
  tenv_close(&t);
}

TEST(a_stop_gives_up_a_batch_too_large_to_wait_for) {
  /* a stop asked for (at the signal: the store's flag) while the engine made
   * and wrote a split of many elements waited for all of it: seconds for a
   * million, with Ctrl-C ignored meanwhile. Now the batch is left out, as a
   * kill would leave it, and the next run makes it again. */
  tenv t;
  tenv_open(&t, "stop_large_batch");
  const char *graph =
      "{\"nodes\": [{\"name\": \"s\", \"type\": \"split_range\", \"params\": {\"chunk\": 1}},"
      "{\"name\": \"g\", \"type\": \"gather_split\", \"params\": {\"promote\": "
      "{\"n\": {\"rule\": \"sum\", \"from\": \"frame_start\"}}}},"
      "{\"name\": \"end\", \"type\": \"null\"}], \"wires\": [[\"s\", \"g\"]]}";
  tenv_graph(&t, graph);
  tenv_submit(&t, "s", "{\"frame_start\": 1, \"frame_end\": 50000}");
  br_error err;
  CHECK_EQ_INT(br_engine_flush(t.eng, &err), BR_OK);
  volatile sig_atomic_t stop = 1;
  br_store_set_stop(t.store, &stop);
  CHECK_EQ_INT(br_engine_run(t.eng, &err), BR_ECANCEL);
  CHECK_CONTAINS(err.msg, "cancelled while a batch of 50000 task changes was written: it was "
                          "left out, and the next run makes it again");
  tenv_reopen(&t); /* frees the half-made split: ASan sees it */
  CHECK_EQ_INT(tenv_count(&t, "s", BR_TASK_WAITING), 1); /* as it was before */
  CHECK_EQ_INT(tenv_count(&t, NULL, -1), 1);
  tenv_run(&t);
  char *sum = tenv_attr(&t, "g", BR_TASK_DONE, "n");
  CHECK_EQ_STR(sum, "1250025000");
  free(sum);
  /* a batch that is only long to write (many tasks, no split) */
  tenv_graph(&t, graph);
  for (int i = 0; i < 20000; i++) tenv_submit(&t, "end", NULL);
  stop = 1;
  br_store_set_stop(t.store, &stop);
  CHECK_EQ_INT(br_engine_run(t.eng, &err), BR_ECANCEL);
  CHECK_CONTAINS(err.msg, "cancelled while a batch of 200"); /* 20000 and more */
  tenv_reopen(&t);
  CHECK_EQ_INT(tenv_count(&t, NULL, -1), 50000); /* the gathered run's, and none of these */
  /* a stop asked with a small batch: written as always */
  for (int i = 0; i < 100; i++) tenv_submit(&t, "end", NULL);
  br_store_set_stop(t.store, &stop);
  CHECK_EQ_INT(br_engine_run(t.eng, &err), BR_OK);
  CHECK_EQ_INT(tenv_count(&t, "end", BR_TASK_DONE), 100);
  tenv_close(&t);
}

TEST(sigkill_at_many_points) {
  /* Kill the engine process at many commits (before and after the commit
   * itself), restart it on the same store each time, and check the final
   * result is identical, with no task lost or duplicated. */
  char *dir = br_test_tmpdir("crash");
  int rounds = 0;
  for (int64_t at = 1; at <= 40; at += 3) {
    for (int before = 0; before <= 1; before++) {
      char path[480];
      snprintf(path, sizeof path, "%.400s/crash-%lld-%d.db", dir, (long long)at, before);
      const char *point = before ? "commit-before" : "commit-after";
      int rc = crash_run(path, point, at, 1, 16);
      /* restart; kill it twice more at other points, then let it finish */
      for (int k = 0; k < 2 && rc == -SIGKILL; k++)
        rc = crash_run(path, k ? "commit-after" : "commit-before", 2 + (at + k) % 5, 0, 16);
      if (rc == -SIGKILL) rc = crash_run(path, "none", 0, 0, 16);
      if (rc != 0) br_test_fail(__FILE__, __LINE__, "child exit %d at %lld", rc, (long long)at);
      tenv t;
      tenv_settled_at(&t, path);
      tlist end = tenv_tasks(&t, "end", BR_TASK_DONE);
      CHECK_EQ_INT(end.n, 1);
      int64_t root = end.v[0].id;
      tlist_free(&end);
      check_standin_result(&t, root);
      br_engine_free(t.eng);
      br_store_close(t.store);
      rounds++;
    }
  }
  CHECK(rounds >= 20);
  char cmd[700];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  CHECK(system(cmd) == 0);
  free(dir);
}

/* ---- other threads hand work to the engine ---- */

#include <pthread.h>

typedef struct poster {
  tenv *t;
  int submitted;
} poster;

static void do_submit(br_engine *e, void *ud) {
  poster *p = ud;
  br_error err;
  int64_t id;
  json_t *a = json_pack("{si}", "n", 1);
  if (br_engine_submit(e, p->t->graph_id, "a", a, NULL, &id, &err) == BR_OK) p->submitted++;
  json_decref(a);
}

static void do_stop(br_engine *e, void *ud) {
  (void)ud;
  br_engine_stop(e, false);
}

static void *poster_main(void *ud) {
  poster *p = ud;
  for (int i = 0; i < 100; i++) br_engine_post(p->t->eng, do_submit, p);
  usleep(100 * 1000);
  br_engine_post(p->t->eng, do_stop, p);
  return NULL;
}

TEST(posted_work_from_another_thread) {
  tenv t;
  tenv_open(&t, "post");
  tenv_graph(&t, "{\"nodes\": [{\"name\": \"a\", \"type\": \"null\"}, {\"name\": \"b\", \"type\": \"null\"}],"
                 " \"wires\": [[\"a\", \"b\"]]}");
  poster p = {.t = &t};
  pthread_t th;
  pthread_create(&th, NULL, poster_main, &p);
  br_error err;
  int rc = br_engine_serve(t.eng, &err); /* runs until the posted stop */
  pthread_join(th, NULL);
  CHECK_EQ_INT(rc, BR_ECANCEL);
  CHECK_EQ_INT(p.submitted, 100);
  CHECK_EQ_INT(tenv_count(&t, "b", BR_TASK_DONE), 100);
  tenv_close(&t);
}

TEST(task_operations) {
  tenv t;
  tenv_open(&t, "ops");
  tenv_graph(&t, "{\"nodes\": [{\"name\": \"sw\", \"type\": \"switch\", \"params\": {\"attr\": \"ok\", \"cases\": [true]}},"
                 "{\"name\": \"good\", \"type\": \"null\"}, {\"name\": \"c\", \"type\": \"split_range\"},"
                 "{\"name\": \"w\", \"type\": \"script\", \"params\": {\"source\": \"wait(7)\"}}, {\"name\": \"other\", \"type\": \"null\"}],"
                 "\"wires\": [[\"sw.true\", \"good\"]]}");
  br_error err;
  /* an error task, retried after its attributes are fixed */
  int64_t bad = tenv_submit(&t, "c", "{}");
  tenv_run(&t);
  CHECK_EQ_INT(tenv_count(&t, "c", BR_TASK_ERROR), 1);
  json_t *fix = json_pack("{sisi}", "frame_start", 1, "frame_end", 3);
  CHECK(br_engine_task_set_attrs(t.eng, bad, fix, &err) == BR_OK);
  json_decref(fix);
  CHECK(br_engine_task_retry(t.eng, bad, &err) == BR_OK);
  tenv_run(&t);
  CHECK_EQ_INT(tenv_count(&t, "c", BR_TASK_DONE), 1);
  /* a blocked task cancelled; a finished one moved and re-run elsewhere */
  int64_t blocked = tenv_submit(&t, "w", "{}");
  tenv_run(&t);
  CHECK(br_engine_task_cancel(t.eng, blocked, &err) == BR_OK);
  tenv_run(&t);
  CHECK_EQ_INT(tenv_count(&t, "w", BR_TASK_CANCELLED), 1);
  br_engine_stats st;
  br_engine_get_stats(t.eng, &st);
  CHECK_EQ_INT(st.groups, 0);
  CHECK(br_engine_task_move(t.eng, bad, "other", &err) == BR_OK);
  tenv_run(&t);
  CHECK_EQ_INT(tenv_count(&t, "other", BR_TASK_DONE), 1);
  /* paused tasks do not move until resumed */
  int64_t p = tenv_submit(&t, "sw", "{\"ok\": true}");
  CHECK(br_engine_task_pause(t.eng, p, true, &err) == BR_OK);
  CHECK(br_engine_task_set_priority(t.eng, p, 5, &err) == BR_OK);
  tenv_run(&t);
  CHECK_EQ_INT(tenv_count(&t, "sw", BR_TASK_WAITING), 1);
  CHECK(br_engine_task_pause(t.eng, p, false, &err) == BR_OK);
  tenv_run(&t);
  CHECK_EQ_INT(tenv_count(&t, "good", BR_TASK_DONE), 1);
  /* errors */
  CHECK(br_engine_task_cancel(t.eng, 99999, &err) == BR_ENOTFOUND);
  CHECK(br_engine_task_move(t.eng, p, "nope", &err) == BR_ENOTFOUND);
  tenv_close(&t);
}
