/* Expressions in node parameters and the script node, through the engine. */
#include "engine_util.h"

static void expect_graph_error(const char *text, const char *needle, int line) {
  br_error err;
  br_graph *g = br_graph_load_string(text, "x.json", &err);
  CHECK(g == NULL);
  char buf[2048];
  br_error_format(&err, buf, sizeof buf);
  CHECK_CONTAINS(buf, needle);
  if (line) CHECK_EQ_INT(err.line, line);
}

TEST(path_expression_in_parameter) {
  tenv t;
  tenv_open(&t, "expr_path");
  tenv_graph(&t, "{\"nodes\": [{\"name\": \"s\", \"type\": \"set_attr\", \"params\": {\"set\": {"
                 "\"out\": \"/shots/${attr.shot}/w${attr.wedge}/img.${pad(attr.frame, 4)}.png\","
                 "\"half\": {\"expr\": \"attr.frame // 2\"}, \"dir\": \"${path.dirname(attr.src)}\"}}}]}");
  tenv_submit(&t, "s", "{\"shot\": \"sh010\", \"wedge\": 2, \"frame\": 7, \"src\": \"/a/b/c.exr\"}");
  tenv_run(&t);
  char *out = tenv_attr(&t, "s", BR_TASK_DONE, "out");
  CHECK_EQ_STR(out, "\"/shots/sh010/w2/img.0007.png\"");
  char *half = tenv_attr(&t, "s", BR_TASK_DONE, "half");
  CHECK_EQ_STR(half, "3");
  char *dir = tenv_attr(&t, "s", BR_TASK_DONE, "dir");
  CHECK_EQ_STR(dir, "\"/a/b\"");
  free(out);
  free(half);
  free(dir);
  tenv_close(&t);
}

TEST(expression_typed_parameter) {
  tenv t;
  tenv_open(&t, "expr_int");
  tenv_graph(&t, "{\"nodes\": [{\"name\": \"c\", \"type\": \"split_range\", \"params\": {\"chunk\": {\"expr\": \"attr.len // 4\"}}},"
                 "{\"name\": \"e\", \"type\": \"null\"}], \"wires\": [[\"c\", \"e\"]]}");
  tenv_submit(&t, "c", "{\"frame_start\": 1, \"frame_end\": 20, \"len\": 20}");
  tenv_submit(&t, "c", "{\"frame_start\": 1, \"frame_end\": 20, \"len\": \"x\"}");
  tenv_run(&t);
  CHECK_EQ_INT(tenv_count(&t, "e", BR_TASK_DONE), 4);
  tlist l = tenv_tasks(&t, "c", BR_TASK_ERROR);
  CHECK_EQ_INT(l.n, 1);
  CHECK_CONTAINS(l.v[0].error, "parameter 'chunk'");
  tlist_free(&l);
  tenv_close(&t);
}

TEST(expression_syntax_error_is_a_graph_error) {
  expect_graph_error("{\"nodes\": [\n{\"name\": \"s\", \"type\": \"set_attr\",\n \"params\": {\"set\": {\"x\": {\"expr\": \"1 +\"}}}}]}",
                     "x.json:3:", 3);
  expect_graph_error("{\"nodes\": [\n{\"name\": \"s\", \"type\": \"set_attr\",\n \"params\": {\"set\": {\"x\": {\"expr\": \"1 +\"}}}}]}",
                     "node 's' (set_attr): parameter 'set'", 3);
  expect_graph_error("{\"nodes\": [{\"name\": \"sc\", \"type\": \"script\", \"params\": {\"source\":\n  \"x = = 1\"}}]}",
                     "x.json:2:3: node 'sc' (script): sc:1:", 2);
}

TEST(expression_runtime_error_is_a_task_error) {
  tenv t;
  tenv_open(&t, "expr_rt");
  tenv_graph(&t, "{\"nodes\": [{\"name\": \"s\", \"type\": \"set_attr\", \"params\": {\"set\": {\"x\": {\"expr\": \"attr.missing.field\"}}}}]}");
  int64_t id = tenv_submit(&t, "s", "{}");
  tenv_run(&t);
  tlist l = tenv_tasks(&t, "s", BR_TASK_ERROR);
  CHECK_EQ_INT(l.n, 1);
  CHECK_EQ_INT(l.v[0].id, id);
  CHECK_CONTAINS(l.v[0].error, "parameter 'set'");
  CHECK_CONTAINS(l.v[0].error, ":1:");
  tlist_free(&l);
  tenv_close(&t);
}

/* A job's needs from an expression are held to what the graph's checks
 * hold literal values to: a negative one is the task's error, never sent
 * to a worker (whose free count it would raise). */
TEST(expression_resource_out_of_range_is_a_task_error) {
  tenv t;
  tenv_open(&t, "expr_need");
  tenv_graph(&t, "{\"nodes\": [{\"name\": \"c\", \"type\": \"command\", \"params\": {"
                 "\"argv\": [\"true\"], \"gpus\": {\"expr\": \"attr.g\"},"
                 " \"memory_mb\": {\"expr\": \"attr.m\"}}}]}");
  tenv_submit(&t, "c", "{\"g\": -1, \"m\": 10}");
  tenv_submit(&t, "c", "{\"g\": 0, \"m\": -1000}");
  tenv_run(&t);
  tlist l = tenv_tasks(&t, "c", BR_TASK_ERROR);
  CHECK_EQ_INT(l.n, 2);
  CHECK_CONTAINS(l.v[0].error, "parameter 'gpus' is -1: it must be 0 or more");
  CHECK_CONTAINS(l.v[1].error, "parameter 'memory_mb' is -1000");
  tlist_free(&l);
  tenv_close(&t);
}

TEST(endless_loop_and_huge_allocation_leave_braid_running) {
  tenv t;
  tenv_open(&t, "expr_limits");
  tenv_graph(&t, "{\"nodes\": [{\"name\": \"loop\", \"type\": \"script\", \"params\": {\"source\": \"while true do end\"}},"
                 "{\"name\": \"big\", \"type\": \"script\", \"params\": {\"source\": \"local t = {} for i = 1, 1e9 do t[i] = string.rep('x', 1000) .. i end\"}},"
                 "{\"name\": \"ok\", \"type\": \"script\", \"params\": {\"source\": \"task.attr.fine = true\"}}]}");
  tenv_submit(&t, "loop", "{}");
  tenv_submit(&t, "big", "{}");
  tenv_submit(&t, "ok", "{}");
  tenv_run(&t);
  tlist l = tenv_tasks(&t, "loop", BR_TASK_ERROR);
  CHECK_EQ_INT(l.n, 1);
  CHECK_CONTAINS(l.v[0].error, "instruction");
  tlist_free(&l);
  tlist b = tenv_tasks(&t, "big", BR_TASK_ERROR);
  CHECK_EQ_INT(b.n, 1);
  CHECK_CONTAINS(b.v[0].error, "memory");
  tlist_free(&b);
  char *fine = tenv_attr(&t, "ok", BR_TASK_DONE, "fine");
  CHECK_EQ_STR(fine, "true");
  free(fine);
  tenv_close(&t);
}

TEST(script_set_route_spawn_split_fail) {
  tenv t;
  tenv_open(&t, "script_actions");
  tenv_graph(&t,
      "{\"nodes\": [{\"name\": \"sc\", \"type\": \"script\", \"params\": {\"outputs\": [\"hero\", \"bg\"], \"source\": "
      "\"task.attr.seen = true\\n"
      "if attr.kind == 'hero' then route('hero')\\n"
      "elseif attr.kind == 'bad' then fail('bad kind ' .. attr.kind)\\n"
      "elseif attr.kind == 'many' then spawn({n = 1}, 'c1'); spawn({n = 2}); route(2)\\n"
      "elseif attr.kind == 'split' then split({{part = 'a'}, {part = 'b'}, {part = 'c'}}); route('bg')\\n"
      "else route('bg') end\"}},"
      "{\"name\": \"hero\", \"type\": \"null\"}, {\"name\": \"bg\", \"type\": \"null\"}, {\"name\": \"kids\", \"type\": \"null\"},"
      "{\"name\": \"g\", \"type\": \"gather_split\", \"params\": {\"promote\": {\"parts\": {\"rule\": \"append\", \"from\": \"part\"}}}}],"
      "\"wires\": [[\"sc.hero\", \"hero\"], [\"sc.bg\", \"bg\"], [\"sc.children\", \"kids\"], [\"bg\", \"g\"]]}");
  tenv_submit(&t, "sc", "{\"kind\": \"hero\"}");
  tenv_submit(&t, "sc", "{\"kind\": \"bad\"}");
  tenv_submit(&t, "sc", "{\"kind\": \"many\"}");
  tenv_submit(&t, "sc", "{\"kind\": \"split\"}");
  tenv_run(&t);
  char *seen = tenv_attr(&t, "hero", BR_TASK_DONE, "seen");
  CHECK_EQ_STR(seen, "true");
  free(seen);
  tlist e = tenv_tasks(&t, "sc", BR_TASK_ERROR);
  CHECK_EQ_INT(e.n, 1);
  CHECK_CONTAINS(e.v[0].error, "bad kind bad");
  tlist_free(&e);
  tlist k = tenv_tasks(&t, "kids", BR_TASK_DONE);
  CHECK_EQ_INT(k.n, 2);
  CHECK_EQ_STR(k.v[0].name, "c1");
  CHECK_EQ_INT(json_integer_value(json_object_get(k.v[1].attrs, "n")), 2);
  tlist_free(&k);
  /* "many" left by output 2 (bg) and passed the gather (no split); "split" was
   * split in 3 and gathered back */
  tlist g = tenv_tasks(&t, "g", BR_TASK_DONE);
  CHECK_EQ_INT(g.n, 2);
  int found = 0;
  for (size_t i = 0; i < g.n; i++) {
    json_t *parts = json_object_get(g.v[i].attrs, "parts");
    if (parts) {
      char *s = json_dumps(parts, JSON_COMPACT);
      CHECK_EQ_STR(s, "[\"a\",\"b\",\"c\"]");
      free(s);
      found = 1;
    }
  }
  CHECK(found);
  tlist_free(&g);
  tenv_close(&t);
}

TEST(script_wait_until_an_event) {
  /* A parent waits under its own id; the death of one of its children is the
   * event that re-runs its script, which then lets it go. */
  tenv t;
  tenv_open(&t, "script_wait");
  tenv_graph(&t,
      "{\"nodes\": [{\"name\": \"sc\", \"type\": \"script\", \"params\": {\"source\": "
      "\"if not attr.spawned then spawn({}); task.attr.spawned = true; wait(task.id)\\n"
      "else task.attr.released = true end\"}},"
      "{\"name\": \"slow\", \"type\": \"null\"}, {\"name\": \"k\", \"type\": \"kill\"}, {\"name\": \"after\", \"type\": \"null\"}],"
      "\"wires\": [[\"sc.children\", \"slow\"], [\"slow\", \"k\"], [\"sc.out\", \"after\"]]}");
  tenv_submit(&t, "sc", "{}");
  tenv_run(&t);
  char *r = tenv_attr(&t, "after", BR_TASK_DONE, "released");
  CHECK_EQ_STR(r, "true");
  free(r);
  CHECK_EQ_INT(tenv_count(&t, "k", BR_TASK_DEAD), 1);
  tenv_close(&t);
}

TEST(script_route_to_missing_output_is_an_error) {
  tenv t;
  tenv_open(&t, "script_route_err");
  tenv_graph(&t, "{\"nodes\": [{\"name\": \"sc\", \"type\": \"script\", \"params\": {\"source\": \"\\n\\nroute('nope')\"}}]}");
  tenv_submit(&t, "sc", "{}");
  tenv_run(&t);
  tlist e = tenv_tasks(&t, "sc", BR_TASK_ERROR);
  CHECK_EQ_INT(e.n, 1);
  CHECK_CONTAINS(e.v[0].error, "sc:3:");
  tlist_free(&e);
  tenv_close(&t);
}
