/* One test (or more) per node type, on a real engine and SQLite store. */
#include "engine_util.h"

#define S(x) #x

TEST(null_passes_and_parks) {
  tenv t;
  tenv_open(&t, "null");
  tenv_graph(&t, "{\"nodes\": [{\"name\": \"a\", \"type\": \"null\"}, {\"name\": \"b\", \"type\": \"null\"}],"
                 " \"wires\": [[\"a\", \"b\"]]}");
  tenv_submit(&t, "a", "{\"x\": 1}");
  tenv_run(&t);
  /* no outgoing wire: parked at b as done */
  CHECK_EQ_INT(tenv_count(&t, "b", BR_TASK_DONE), 1);
  CHECK_EQ_INT(tenv_count(&t, NULL, -1), 1);
  char *x = tenv_attr(&t, "b", BR_TASK_DONE, "x");
  CHECK_EQ_STR(x, "1");
  free(x);
  br_engine_stats st;
  br_engine_get_stats(t.eng, &st);
  CHECK_EQ_INT(st.tasks_in_memory, 0);
  tenv_close(&t);
}

TEST(set_attr_set_delete_rename) {
  tenv t;
  tenv_open(&t, "set_attr");
  tenv_graph(&t, "{\"nodes\": [{\"name\": \"s\", \"type\": \"set_attr\", \"params\": {"
                 "\"set\": {\"a\": [1, 2], \"b\": \"x\"}, \"delete\": [\"gone\"], \"rename\": {\"old\": \"new\"}}}]}");
  tenv_submit(&t, "s", "{\"gone\": 1, \"old\": 5, \"b\": 0}");
  tenv_run(&t);
  tlist l = tenv_tasks(&t, "s", BR_TASK_DONE);
  CHECK_EQ_INT(l.n, 1);
  char *s = json_dumps(l.v[0].attrs, JSON_COMPACT | JSON_SORT_KEYS);
  CHECK_EQ_STR(s, "{\"a\":[1,2],\"b\":\"x\",\"new\":5}");
  free(s);
  tlist_free(&l);
  tenv_close(&t);
}

TEST(kill_consumes) {
  tenv t;
  tenv_open(&t, "kill");
  tenv_graph(&t, "{\"nodes\": [{\"name\": \"k\", \"type\": \"kill\"}]}");
  tenv_submit(&t, "k", NULL);
  tenv_run(&t);
  CHECK_EQ_INT(tenv_count(&t, "k", BR_TASK_DEAD), 1);
  tenv_close(&t);
}

TEST(switch_routes_by_value) {
  tenv t;
  tenv_open(&t, "switch");
  tenv_graph(&t, "{\"nodes\": [{\"name\": \"sw\", \"type\": \"switch\", \"params\": {\"attr\": \"k\", \"cases\": [\"hero\", 2]}},"
                 " {\"name\": \"hero\", \"type\": \"null\"}, {\"name\": \"two\", \"type\": \"null\"}, {\"name\": \"other\", \"type\": \"null\"}],"
                 " \"wires\": [[\"sw.hero\", \"hero\"], [\"sw.2\", \"two\"], [\"sw.default\", \"other\"]]}");
  tenv_submit(&t, "sw", "{\"k\": \"hero\"}");
  tenv_submit(&t, "sw", "{\"k\": 2.0}");
  tenv_submit(&t, "sw", "{\"k\": \"bg\"}");
  tenv_submit(&t, "sw", "{}");
  tenv_run(&t);
  CHECK_EQ_INT(tenv_count(&t, "hero", BR_TASK_DONE), 1);
  CHECK_EQ_INT(tenv_count(&t, "two", BR_TASK_DONE), 1);
  CHECK_EQ_INT(tenv_count(&t, "other", BR_TASK_DONE), 2);
  tenv_close(&t);
}

TEST(wedge_product_values_and_ranges) {
  tenv t;
  tenv_open(&t, "wedge");
  tenv_graph(&t, "{\"nodes\": [{\"name\": \"w\", \"type\": \"wedge\", \"params\": {\"wedges\": ["
                 "{\"attr\": \"seed\", \"values\": [7, 8]}, {\"attr\": \"amp\", \"count\": 3, \"start\": 0.5, \"step\": 0.25}]}},"
                 "{\"name\": \"g\", \"type\": \"gather_split\", \"params\": {\"promote\": {"
                 "\"seeds\": {\"rule\": \"append\", \"from\": \"seed\"}, \"amps\": {\"rule\": \"append\", \"from\": \"amp\"},"
                 "\"idx\": {\"rule\": \"append\", \"from\": \"wedge\"}}}}],"
                 " \"wires\": [[\"w\", \"g\"]]}");
  int64_t id = tenv_submit(&t, "w", "{}");
  tenv_run(&t);
  CHECK_EQ_INT(tenv_count(&t, "g", BR_TASK_DEAD), 5);
  tlist l = tenv_tasks(&t, "g", BR_TASK_DONE);
  CHECK_EQ_INT(l.n, 1);
  CHECK_EQ_INT(l.v[0].id, id); /* element 0 is the original task */
  CHECK_EQ_INT(l.v[0].split_id, 0); /* back out of the split */
  char *s = json_dumps(l.v[0].attrs, JSON_COMPACT | JSON_SORT_KEYS);
  CHECK_CONTAINS(s, "\"seeds\":[7,7,7,8,8,8]");
  CHECK_CONTAINS(s, "\"amps\":[0.5,0.75,1.0,0.5,0.75,1.0]");
  CHECK_CONTAINS(s, "\"idx\":[0,1,2,3,4,5]");
  free(s);
  tlist_free(&l);
  tenv_close(&t);
}

TEST(split_range_chunks) {
  tenv t;
  tenv_open(&t, "split_range");
  tenv_graph(&t, "{\"nodes\": [{\"name\": \"c\", \"type\": \"split_range\", \"params\": {\"chunk\": 4}}, {\"name\": \"end\", \"type\": \"null\"}],"
                 "\"wires\": [[\"c\", \"end\"]]}");
  tenv_submit(&t, "c", "{\"frame_start\": 1, \"frame_end\": 10}");
  tenv_submit(&t, "c", "{\"frame_start\": 0, \"frame_end\": 20, \"frame_step\": 5}");
  tenv_submit(&t, "c", "{\"frame_start\": \"x\"}");
  tenv_run(&t);
  tlist l = tenv_tasks(&t, "end", BR_TASK_DONE);
  CHECK_EQ_INT(l.n, 5);
  const char *want[] = {"1-4", "5-8", "9-10", "0-15", "20-20"};
  for (size_t i = 0; i < l.n; i++) {
    char got[64];
    snprintf(got, sizeof got, "%lld-%lld",
             (long long)json_integer_value(json_object_get(l.v[i].attrs, "frame_start")),
             (long long)json_integer_value(json_object_get(l.v[i].attrs, "frame_end")));
    /* ids: originals come first; order the expectations the same way */
    (void)want;
    CHECK(strstr("1-4 5-8 9-10 0-15 20-20", got) != NULL);
  }
  tlist_free(&l);
  tlist e = tenv_tasks(&t, "c", BR_TASK_ERROR);
  CHECK_EQ_INT(e.n, 1);
  CHECK_CONTAINS(e.v[0].error, "split_range needs an integer attribute 'frame_start'");
  tlist_free(&e);
  tenv_close(&t);
}

TEST(split_list_chunks) {
  tenv t;
  tenv_open(&t, "split_list");
  tenv_graph(&t, "{\"nodes\": [{\"name\": \"s\", \"type\": \"split_list\", \"params\": {\"attr\": \"files\", \"chunk\": 2, \"into\": \"part\"}},"
                 "{\"name\": \"g\", \"type\": \"gather_split\", \"params\": {\"promote\": {\"parts\": {\"rule\": \"append\", \"from\": \"part\"}, \"all\": {\"rule\": \"extend\", \"from\": \"part\"}}}}],"
                 "\"wires\": [[\"s\", \"g\"]]}");
  tenv_submit(&t, "s", "{\"files\": [\"a\", \"b\", \"c\", \"d\", \"e\"]}");
  tenv_run(&t);
  char *parts = tenv_attr(&t, "g", BR_TASK_DONE, "parts");
  CHECK_EQ_STR(parts, "[[\"a\",\"b\"],[\"c\",\"d\"],[\"e\"]]");
  char *all = tenv_attr(&t, "g", BR_TASK_DONE, "all");
  CHECK_EQ_STR(all, "[\"a\",\"b\",\"c\",\"d\",\"e\"]");
  free(parts);
  free(all);
  tenv_close(&t);
}

TEST(spawn_children_per_frame_and_count) {
  tenv t;
  tenv_open(&t, "spawn");
  tenv_graph(&t, "{\"nodes\": [{\"name\": \"s\", \"type\": \"spawn\", \"params\": {\"per_frame\": true, \"attrs\": {\"kind\": \"frame\"}}},"
                 "{\"name\": \"n\", \"type\": \"spawn\", \"params\": {\"count\": 2, \"inherit\": false}},"
                 "{\"name\": \"kids\", \"type\": \"null\"}, {\"name\": \"kids2\", \"type\": \"null\"}],"
                 "\"wires\": [[\"s.children\", \"kids\"], [\"n.children\", \"kids2\"]]}");
  int64_t p = tenv_submit(&t, "s", "{\"frame_start\": 3, \"frame_end\": 7, \"frame_step\": 2, \"shot\": \"a\"}");
  tenv_submit(&t, "n", "{\"shot\": \"b\"}");
  tenv_run(&t);
  tlist l = tenv_tasks(&t, "kids", BR_TASK_DONE);
  CHECK_EQ_INT(l.n, 3);
  for (size_t i = 0; i < l.n; i++) {
    CHECK_EQ_INT(l.v[i].parent, p);
    CHECK_EQ_INT(json_integer_value(json_object_get(l.v[i].attrs, "frame")), 3 + 2 * (int)i);
    CHECK_EQ_STR(json_string_value(json_object_get(l.v[i].attrs, "shot")), "a");
    CHECK_EQ_STR(json_string_value(json_object_get(l.v[i].attrs, "kind")), "frame");
  }
  tlist_free(&l);
  tlist l2 = tenv_tasks(&t, "kids2", BR_TASK_DONE);
  CHECK_EQ_INT(l2.n, 2);
  CHECK(json_object_get(l2.v[0].attrs, "shot") == NULL);
  CHECK_EQ_INT(json_integer_value(json_object_get(l2.v[1].attrs, "index")), 1);
  tlist_free(&l2);
  tlist parent = tenv_tasks(&t, "s", BR_TASK_DONE);
  CHECK_EQ_INT(parent.n, 1);
  CHECK_EQ_INT(parent.v[0].live_children, 3);
  tlist_free(&parent);
  tenv_close(&t);
}

TEST(wait_children_promotes_all_rules) {
  tenv t;
  tenv_open(&t, "wait_children");
  tenv_graph(&t, "{\"nodes\": [{\"name\": \"s\", \"type\": \"spawn\", \"params\": {\"count\": 4}},"
                 "{\"name\": \"w\", \"type\": \"wait_children\", \"params\": {\"promote\": {"
                 "\"idx\": {\"rule\": \"append\", \"from\": \"index\"},"
                 "\"rev\": {\"rule\": \"append\", \"from\": \"index\", \"sort\": \"neg\"},"
                 "\"sum\": {\"rule\": \"sum\", \"from\": \"index\"}, \"min\": {\"rule\": \"min\", \"from\": \"index\"},"
                 "\"max\": {\"rule\": \"max\", \"from\": \"index\"}, \"n\": {\"rule\": \"count\", \"from\": \"index\"},"
                 "\"first\": {\"rule\": \"first\", \"from\": \"index\"}, \"last\": {\"rule\": \"last\", \"from\": \"index\"}}}},"
                 "{\"name\": \"neg\", \"type\": \"null\"}, {\"name\": \"p\", \"type\": \"null\"}, {\"name\": \"c\", \"type\": \"null\"}],"
                 "\"wires\": [[\"s.out\", \"w.parents\"], [\"s.children\", \"w.children\"], [\"w.parents\", \"p\"], [\"w.children\", \"c\"]]}");
  tenv_submit(&t, "s", "{}");
  tenv_run(&t);
  /* neg: sort by a missing attribute keeps creation order */
  tlist l = tenv_tasks(&t, "p", BR_TASK_DONE);
  CHECK_EQ_INT(l.n, 1);
  char *s = json_dumps(l.v[0].attrs, JSON_COMPACT | JSON_SORT_KEYS);
  CHECK_EQ_STR(s, "{\"first\":0,\"idx\":[0,1,2,3],\"last\":3,\"max\":3,\"min\":0,\"n\":4,\"rev\":[0,1,2,3],\"sum\":6}");
  free(s);
  tlist_free(&l);
  CHECK_EQ_INT(tenv_count(&t, "c", BR_TASK_DONE), 4);
  tenv_close(&t);
}

TEST(gather_split_not_in_split_passes) {
  tenv t;
  tenv_open(&t, "gather_pass");
  tenv_graph(&t, "{\"nodes\": [{\"name\": \"g\", \"type\": \"gather_split\"}, {\"name\": \"e\", \"type\": \"null\"}], \"wires\": [[\"g\", \"e\"]]}");
  tenv_submit(&t, "g", "{}");
  tenv_run(&t);
  CHECK_EQ_INT(tenv_count(&t, "e", BR_TASK_DONE), 1);
  tenv_close(&t);
}

TEST(promote_sum_of_non_number_is_an_error) {
  tenv t;
  tenv_open(&t, "promote_err");
  tenv_graph(&t, "{\"nodes\": [{\"name\": \"s\", \"type\": \"split_list\", \"params\": {\"attr\": \"v\"}},"
                 "{\"name\": \"g\", \"type\": \"gather_split\", \"params\": {\"promote\": {\"t\": {\"rule\": \"sum\", \"from\": \"v\"}}}}],"
                 "\"wires\": [[\"s\", \"g\"]]}");
  tenv_submit(&t, "s", "{\"v\": [1, \"x\"]}");
  tenv_run(&t);
  tlist l = tenv_tasks(&t, "g", BR_TASK_ERROR);
  CHECK_EQ_INT(l.n, 2);
  CHECK_CONTAINS(l.v[0].error, "is not a number");
  tlist_free(&l);
  tenv_close(&t);
}

/* "sort" orders numbers, then strings, then other values (in their own
 * order), then tasks without the attribute; strings among booleans and lists
 * are still in order (the comparison was not transitive: "c" came after true). */
TEST(promote_sort_over_values_of_mixed_types) {
  tenv t;
  tenv_open(&t, "promote_sort_mixed");
  tenv_graph(&t, "{\"nodes\": [{\"name\": \"w\", \"type\": \"wedge\", \"params\": {\"wedges\": ["
                 "{\"attr\": \"k\", \"values\": [\"b\", true, \"a\", [1], \"c\", 2, false, "
                 "\"a\", 1, null, {\"o\": 1}, 1.5]}]}},"
                 "{\"name\": \"d\", \"type\": \"set_attr\", \"params\": {\"delete\": [\"k\"]}},"
                 "{\"name\": \"sw\", \"type\": \"switch\", "
                 "\"params\": {\"attr\": \"wedge\", \"cases\": [4]}},"
                 "{\"name\": \"g\", \"type\": \"gather_split\", \"params\": {\"promote\": {"
                 "\"ks\": {\"rule\": \"append\", \"from\": \"k\", \"sort\": \"k\"},"
                 "\"idx\": {\"rule\": \"append\", \"from\": \"wedge\", \"sort\": \"k\"}}}},"
                 "{\"name\": \"e\", \"type\": \"null\"}],"
                 "\"wires\": [[\"w\", \"sw\"], [\"sw.4\", \"d\"], [\"d\", \"g\"],"
                 "[\"sw.default\", \"g\"], [\"g\", \"e\"]]}");
  tenv_submit(&t, "w", "{}");
  tenv_run(&t);
  char *ks = tenv_attr(&t, "e", BR_TASK_DONE, "ks");
  CHECK_EQ_STR(ks, "[1,1.5,2,\"a\",\"a\",\"b\",true,[1],false,null,{\"o\":1}]");
  free(ks);
  /* element 4 ("c") lost its k: it comes last */
  char *idx = tenv_attr(&t, "e", BR_TASK_DONE, "idx");
  CHECK_EQ_STR(idx, "[8,11,5,2,7,0,1,3,6,9,10,4]");
  free(idx);
  tenv_close(&t);
}

/* Loads a one-node graph of `type` with these params (JSON text, the node
 * on line 2) and expects it refused with `says` on line 2 at the column
 * where the text `at` starts in params. */
static void expect_bad_params(const char *type, const char *params, const char *at,
                              const char *says) {
  char text[2048], buf[2048];
  int n = snprintf(text, sizeof text,
                   "{\"nodes\": [\n{\"name\": \"job\", \"type\": \"%s\", \"params\": ", type);
  int col = n - (int)strlen("{\"nodes\": [\n") + 1 + (int)(strstr(params, at) - params);
  snprintf(text + n, sizeof text - (size_t)n, "%s}]}", params);
  br_error err;
  br_graph *g = br_graph_load_string(text, "v.json", &err);
  if (g) br_test_fail(__FILE__, __LINE__, "%s loaded; expected '%s'", params, says);
  br_error_format(&err, buf, sizeof buf);
  char want[1024];
  snprintf(want, sizeof want, "v.json:2:%d: node 'job' (%s): %s", col, type, says);
  if (!strstr(buf, want))
    br_test_fail(__FILE__, __LINE__, "%s: '%s', expected '%s'", params, buf, want);
}

TEST(job_parameters_are_checked_when_the_graph_loads) {
  /* each of these passed validate and then misbehaved or failed per task */
  expect_bad_params("command", "{\"shell\": \"true\", \"timeout\": -5}", "-5",
                    "parameter 'timeout': must be 0 (none) or more seconds, got -5");
  expect_bad_params("command", "{\"shell\": \"true\", \"cores\": -4}", "-4",
                    "parameter 'cores': must be a whole number of at least 1, got -4");
  expect_bad_params("command", "{\"shell\": \"true\", \"cores\": 0}", "0}",
                    "parameter 'cores': must be a whole number of at least 1, got 0");
  expect_bad_params("command", "{\"shell\": \"true\", \"retries\": -4}", "-4",
                    "parameter 'retries': must be 0 or more, got -4");
  expect_bad_params("command", "{\"shell\": \"true\", \"good_codes\": [0, 999, -1]}", "999",
                    "parameter 'good_codes': exit codes are whole numbers from 0 to 255, and "
                    "item 1 is not");
  expect_bad_params("command", "{\"shell\": \"true\", \"retry_codes\": [-1]}", "-1",
                    "parameter 'retry_codes': exit codes");
  expect_bad_params("command", "{\"shell\": \"true\", \"env\": {\"A=B\": \"x\"}}", "\"x\"",
                    "parameter 'env': 'A=B' is not a variable name (not empty, no '=')");
  expect_bad_params("command", "{\"shell\": \"true\", \"env\": {\"\": \"x\"}}", "{\"\"",
                    "parameter 'env': '' is not a variable name");
  expect_bad_params("command", "{\"shell\": \"true\", \"progress\": \"((\"}", "\"((",
                    "parameter 'progress': '((' is not a regex");
  expect_bad_params("command", "{\"shell\": \"true\", \"progress\": \"done\"}", "\"done",
                    "parameter 'progress': 'done' has no group: put the number in ( )");
  expect_bad_params("command", "{\"argv\": [\"echo\", true]}", "true",
                    "parameter 'argv': argv[1] must be a string or a number");
  expect_bad_params("command", "{\"shell\": \"true\", \"tags\": [\"gpu\", \"\"]}", "\"\"]",
                    "parameter 'tags': item 1 is not a name");
  expect_bad_params("ffmpeg", "{\"output\": \"m.mp4\", \"crf\": 999}", "999",
                    "parameter 'crf': x264 quality is from 0 to 51");
  expect_bad_params("ffmpeg", "{\"output\": \"m.mp4\", \"tile\": \"abc\"}", "\"abc",
                    "parameter 'tile': the grid is COLSxROWS");
  expect_bad_params("push", "{\"src\": \"d\", \"name\": \"n\", \"cores\": 0}", "0}",
                    "parameter 'cores'");
  expect_bad_params("pull", "{\"snapshots\": \"n\", \"dest\": \"d\", \"timeout\": -1}", "-1",
                    "parameter 'timeout'");
  /* what is fine stays fine: 0 is no timeout, expressions are for each task */
  br_error err;
  br_graph *g = br_graph_load_string(
      "{\"nodes\": [{\"name\": \"job\", \"type\": \"command\", \"params\": {\"argv\": [\"x\", 2, "
      "{\"expr\": \"attr.a\"}], \"timeout\": 0, \"cores\": \"${attr.cores}\", \"retries\": 0, "
      "\"good_codes\": [0, 255], \"env\": {\"A_B\": 1}, \"progress\": \"([0-9]+)%\"}}]}",
      "ok.json", &err);
  if (!g) {
    char buf[2048];
    br_test_fail(__FILE__, __LINE__, "%s", br_error_format(&err, buf, sizeof buf));
  }
  br_graph_free(g);
}

TEST(braces_meant_for_the_shell_are_warned_about) {
  /* "awk '{print $1}'" passed validate and failed every task: "names the
   * attribute 'print $1'"; "${HOME}" was a Lua nil */
  const char *text =
      "{\"nodes\": [\n"
      "{\"name\": \"a\", \"type\": \"command\", \"params\": {\"shell\": "
      "\"echo a b | awk '{print $1}'\"}},\n"
      "{\"name\": \"b\", \"type\": \"command\", \"params\": {\"shell\": \"echo ${HOME}\"}},\n"
      "{\"name\": \"c\", \"type\": \"command\", \"params\": {\"argv\": [\"echo\", \"{oops\"],\n"
      "  \"env\": {\"X\": \"{a b}\"}}},\n"
      "{\"name\": \"ok\", \"type\": \"command\", \"params\": {\"shell\": \"awk '{{print $1}}' "
      "$${{HOME}} $HOME {frame} {shot.name} ${attr.x} ${fmt('%d', 1)}\"}}]}";
  br_error err;
  br_graph *g = br_graph_load_string(text, "w.json", &err);
  CHECK(g != NULL);
  br_test_warnings w = {0};
  br_graph_warnings(g, br_test_warn, &w);
  char *got = br_test_warnings_take(&w);
  CHECK_EQ_INT(br_test_count(got, "\n"), 4); /* nothing about node 'ok' */
  CHECK_CONTAINS(got, "w.json:2:54: warning: node 'a' (command): \"echo a b | awk '{print $1}'\": "
                      "{print $1} stands for the task's attribute 'print $1' (write {{ and }} "
                      "for literal braces");
  CHECK_CONTAINS(got, "w.json:3:54: warning: node 'b' (command): \"echo ${HOME}\": ${HOME} is a "
                      "braid expression, and HOME is not defined there (a shell variable? write "
                      "$HOME, or $${{HOME}} for ${HOME})");
  CHECK_CONTAINS(got, "w.json:4:62: warning: node 'c' (command): \"{oops\": a '{' that no '}' "
                      "closes fails every task");
  CHECK_CONTAINS(got, "w.json:5:16: warning: node 'c' (command): \"{a b}\": {a b} stands for");
  free(got);
  br_graph_free(g);
}

TEST(ranges_and_sums_at_the_ends_of_int64) {
  /* each overflowed int64 (a UBSan report; without it, spawn stepped past
   * the end and wrapped round, spawning for ever) */
  tenv t;
  tenv_open(&t, "int64_ends");
  tenv_graph(&t, "{\"nodes\": [{\"name\": \"c\", \"type\": \"split_range\", \"params\": "
                 "{\"chunk\": 9223372036854775807}}, {\"name\": \"e\", \"type\": \"null\"},"
                 "{\"name\": \"s\", \"type\": \"spawn\", \"params\": {\"per_frame\": true}},"
                 "{\"name\": \"kids\", \"type\": \"null\"},"
                 "{\"name\": \"l\", \"type\": \"wedge\", \"params\": {\"wedges\": [{\"attr\": "
                 "\"v\", \"values\": [9223372036854775807, 9223372036854775807]}]}},"
                 "{\"name\": \"g\", \"type\": \"gather_split\", \"params\": {\"promote\": "
                 "{\"t\": {\"rule\": \"sum\", \"from\": \"v\"}}}}],"
                 "\"wires\": [[\"c\", \"e\"], [\"s.children\", \"kids\"], [\"l\", \"g\"]]}");
  tenv_submit(&t, "c", "{\"frame_start\": 1, \"frame_end\": 100}");
  tenv_submit(&t, "c", "{\"frame_start\": -9223372036854775807, "
                       "\"frame_end\": 9223372036854775807}");
  tenv_submit(&t, "c", "{\"frame_start\": -9223372036854775808, "
                       "\"frame_end\": 9223372036854775807, \"frame_step\": 1}");
  tenv_submit(&t, "c", "{\"frame_start\": 1e300, \"frame_end\": 1e301}");
  tenv_submit(&t, "s", "{\"frame_start\": 9223372036854775806, "
                       "\"frame_end\": 9223372036854775807}");
  tenv_submit(&t, "s", "{\"frame_start\": -9223372036854775808, "
                       "\"frame_end\": 9223372036854775807}");
  tenv_submit(&t, "l", "{}");
  tenv_run(&t);
  tlist l = tenv_tasks(&t, "e", BR_TASK_DONE);
  char got[512] = "";
  for (size_t i = 0; i < l.n; i++) {
    size_t len = strlen(got);
    snprintf(got + len, sizeof got - len, "%s%lld..%lld", i ? " " : "",
             (long long)json_integer_value(json_object_get(l.v[i].attrs, "frame_start")),
             (long long)json_integer_value(json_object_get(l.v[i].attrs, "frame_end")));
  }
  /* by id: the three originals, then the other elements of the two splits */
  CHECK_EQ_STR(got, "1..100 -9223372036854775807..-1 -9223372036854775808..-2 "
                    "0..9223372036854775806 9223372036854775807..9223372036854775807 "
                    "-1..9223372036854775805 9223372036854775806..9223372036854775807");
  tlist_free(&l);
  tlist c = tenv_tasks(&t, "c", BR_TASK_ERROR);
  CHECK_EQ_INT(c.n, 1);
  CHECK_CONTAINS(c.v[0].error, "split_range needs an integer attribute 'frame_start'");
  tlist_free(&c);
  tlist k = tenv_tasks(&t, "kids", BR_TASK_DONE);
  CHECK_EQ_INT(k.n, 2);
  CHECK_EQ_INT(json_integer_value(json_object_get(k.v[1].attrs, "frame")), INT64_MAX);
  tlist_free(&k);
  tlist s = tenv_tasks(&t, "s", BR_TASK_ERROR);
  CHECK_EQ_INT(s.n, 1);
  CHECK_CONTAINS(s.v[0].error, "more than 1000000 children");
  tlist_free(&s);
  /* past int64 a sum is a float, as with a float among the values */
  char *sum = tenv_attr(&t, "g", BR_TASK_DONE, "t");
  CHECK_EQ_STR(sum, "1.8446744073709552e19");
  free(sum);
  tenv_close(&t);
  /* literal values are checked when the graph loads */
  expect_bad_params("spawn", "{\"count\": -5}", "-5",
                    "parameter 'count' must be from 0 to 1000000");
  expect_bad_params("wedge", "{\"wedges\": [{\"attr\": \"a\", \"count\": 3, "
                    "\"start\": 9223372036854775807}]}", "{\"attr",
                    "wedges[0]: start + step * (count - 1) is past a 64-bit integer");
}

TEST(wedge_entries_on_one_attribute_are_refused) {
  /* two entries on one attribute made a product whose elements all took the
   * last entry's value: a = 1,1,2,2 for [1, 2] x [3, 4], and validate said ok */
  expect_bad_params("wedge", "{\"wedges\": [{\"attr\": \"a\", \"values\": [1, 2]}, "
                    "{\"attr\": \"a\", \"values\": [3, 4]}]}", "{\"attr\": \"a\", \"values\": [3",
                    "wedges[1]: attribute 'a' is also wedges[0]'s: every element would get the "
                    "last entry's value");
  expect_bad_params("wedge", "{\"index_attr\": \"b\", \"wedges\": [{\"attr\": \"a\", "
                    "\"count\": 2}, {\"attr\": \"b\", \"count\": 2}]}", "\"b\", \"wedges",
                    "index_attr 'b' is also the attribute of wedges[1]: the element's index would "
                    "replace its values");
  /* names known per task: the task fails, saying so */
  tenv t;
  tenv_open(&t, "wedge_same_attr");
  tenv_graph(&t, "{\"nodes\": [{\"name\": \"w\", \"type\": \"wedge\", \"params\": "
                 "{\"wedges\": [{\"attr\": \"${attr.p}\", \"values\": [1, 2]}, "
                 "{\"attr\": \"${attr.q}\", \"values\": [3, 4]}]}},"
                 "{\"name\": \"end\", \"type\": \"null\"}], \"wires\": [[\"w\", \"end\"]]}");
  tenv_submit(&t, "w", "{\"p\": \"a\", \"q\": \"a\"}");
  tenv_submit(&t, "w", "{\"p\": \"a\", \"q\": \"b\"}");
  tenv_run(&t);
  tlist e = tenv_tasks(&t, "w", BR_TASK_ERROR);
  CHECK_EQ_INT(e.n, 1);
  CHECK_CONTAINS(e.v[0].error, "wedges[1]: attribute 'a' is also wedges[0]'s");
  tlist_free(&e);
  CHECK_EQ_INT(tenv_count(&t, "end", BR_TASK_DONE), 4);
  tenv_close(&t);
}

TEST(set_attr_rename_to_what_an_expression_gave) {
  /* a new name that was nil (a missing attribute) dropped the attribute */
  tenv t;
  tenv_open(&t, "set_attr_rename_expr");
  tenv_graph(&t, "{\"nodes\": [{\"name\": \"s\", \"type\": \"set_attr\", \"params\": {"
                 "\"rename\": {\"a\": \"${attr.to}\"}, \"delete\": [\"${attr.gone}\"]}}]}");
  tenv_submit(&t, "s", "{\"a\": 5, \"to\": \"b\", \"gone\": \"to\"}");
  tenv_submit(&t, "s", "{\"a\": 5}");
  tenv_submit(&t, "s", "{\"a\": 5, \"to\": \"b\"}");
  tenv_run(&t);
  char *b = tenv_attr(&t, "s", BR_TASK_DONE, "b");
  CHECK_EQ_STR(b, "5");
  free(b);
  tlist l = tenv_tasks(&t, "s", BR_TASK_ERROR);
  CHECK_EQ_INT(l.n, 2);
  CHECK_EQ_STR(l.v[0].error, "rename 'a': the new name is null (an expression that gave nil: "
                             "does the task have the attribute?)");
  CHECK_EQ_STR(l.v[1].error, "delete: item 0 is not an attribute name");
  CHECK_EQ_INT(json_integer_value(json_object_get(l.v[0].attrs, "a")), 5);
  tlist_free(&l);
  tenv_close(&t);
}

TEST(slurm_settings_are_checked_when_the_graph_loads) {
  /* they passed validate and failed every task when its job was sent */
  expect_bad_params("command", "{\"shell\": \"true\", \"slurm\": {\"partiton\": \"gpu\"}}",
                    "\"gpu\"", "parameter 'slurm': unknown slurm setting 'partiton' (partition, "
                    "account, qos, time, args)");
  expect_bad_params("command", "{\"shell\": \"true\", \"slurm\": {\"args\": [\"--x\", 5]}}",
                    "[\"--x\"", "parameter 'slurm': args: item 1 is not a string");
  expect_bad_params("command", "{\"shell\": \"true\", \"slurm\": {\"args\": \"--x\"}}",
                    "\"--x\"", "parameter 'slurm': args is a list of sbatch options");
  expect_bad_params("ffmpeg", "{\"output\": \"m.mp4\", \"slurm\": {\"time\": 2.5}}", "2.5",
                    "parameter 'slurm': time is Slurm's time (30, \"2:00:00\", \"1-0\")");
  expect_bad_params("push", "{\"src\": \"d\", \"name\": \"n\", \"slurm\": {\"qos\": 1}}", "1}",
                    "parameter 'slurm': qos is a name");
  br_error err;
  br_graph *g = br_graph_load_string(
      "{\"nodes\": [{\"name\": \"job\", \"type\": \"command\", \"params\": {\"shell\": \"x\", "
      "\"slurm\": {\"time\": 30, \"partition\": \"${attr.p}\", \"account\": \"show\", "
      "\"args\": [\"--exclusive\", {\"expr\": \"attr.a\"}]}}}]}",
      "ok.json", &err);
  if (!g) {
    char buf[2048];
    br_test_fail(__FILE__, __LINE__, "%s", br_error_format(&err, buf, sizeof buf));
  }
  br_graph_free(g);
}
