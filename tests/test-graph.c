/* Graph files: loading, saving, and one test per kind of error, each
 * checking the message and the position. */
#include <braid/graph.h>

#include "harness.h"

static void expect_error(const char *text, int line, int col, const char *needle) {
  br_error err;
  br_graph *g = br_graph_load_string(text, "g.json", &err);
  if (g) br_test_fail(__FILE__, __LINE__, "graph loaded but should fail with '%s'", needle);
  char buf[2048];
  br_error_format(&err, buf, sizeof buf);
  CHECK_CONTAINS(buf, needle);
  CHECK_EQ_STR(err.file, "g.json");
  if (err.line != line || err.column != col)
    br_test_fail(__FILE__, __LINE__, "'%s' at %d:%d, expected %d:%d", buf, err.line, err.column,
                 line, col);
}

TEST(loads_and_saves) {
  const char *text =
      "{\"name\": \"demo\", \"nodes\": [\n"
      "  {\"name\": \"a\", \"type\": \"null\"},\n"
      "  {\"name\": \"s\", \"type\": \"spawn\", \"params\": {\"count\": 3}},\n"
      "  {\"name\": \"w\", \"type\": \"wait_children\"}],\n"
      " \"wires\": [[\"a\", \"s\"], {\"from\": \"s.out\", \"to\": \"w.parents\"},\n"
      "            {\"from\": \"s.children\", \"to\": \"w.children\"}]}";
  br_error err;
  br_graph *g = br_graph_load_string(text, "demo.json", &err);
  CHECK(g != NULL);
  CHECK_EQ_STR(br_graph_name(g), "demo");
  CHECK_EQ_INT(br_graph_node_count(g), 3);
  br_node *s = br_graph_find_node(g, "s");
  CHECK_EQ_INT(json_integer_value(json_object_get(br_node_params(s), "count")), 3);
  CHECK(json_is_false(json_object_get(br_node_params(s), "per_frame"))); /* default */
  CHECK_EQ_INT(br_node_output_index(s, "children"), 1);
  char *dump = br_graph_dumps(g);
  br_graph *g2 = br_graph_load_string(dump, "dump", &err);
  CHECK(g2 != NULL);
  char *dump2 = br_graph_dumps(g2);
  CHECK_EQ_STR(dump, dump2);
  CHECK_CONTAINS(dump, "\"from\": \"s.children\"");
  char *dir = br_test_tmpdir("graph-save");
  char path[600];
  snprintf(path, sizeof path, "%s/g.json", dir);
  CHECK(br_graph_save_file(g2, path, &err) == BR_OK);
  br_graph *g3 = br_graph_load_file(path, &err);
  CHECK(g3 != NULL);
  free(dump);
  free(dump2);
  br_graph_free(g);
  br_graph_free(g2);
  br_graph_free(g3);
  free(dir);
}

TEST(malformed_json) {
  expect_error("{\"nodes\": [\n  {\"name\": \"a\", \"type\": \"null\",}\n]}", 2, 32,
               "malformed JSON");
}

TEST(unknown_node_type) {
  expect_error("{\"nodes\": [\n  {\"name\": \"a\",\n   \"type\": \"nul\"}]}", 3, 12,
               "node 'a': unknown node type 'nul' (known types: null,");
}

TEST(unknown_parameter) {
  expect_error("{\"nodes\": [{\"name\": \"c\", \"type\": \"split_range\",\n"
               "  \"params\": {\"chunks\": 5}}]}",
               2, 14, "node 'c' (split_range): unknown parameter 'chunks' (parameters: chunk,");
}

TEST(mistyped_parameter) {
  expect_error("{\"nodes\": [{\"name\": \"c\", \"type\": \"split_range\",\n"
               "  \"params\": {\"chunk\": \"5\"}}]}",
               2, 23, "node 'c' (split_range): parameter 'chunk' must be int, got string");
}

TEST(missing_parameter) {
  expect_error("{\"nodes\": [\n  {\"name\": \"sw\", \"type\": \"switch\", \"params\": {\"attr\": \"x\"}}]}",
               2, 3, "node 'sw' (switch): missing required parameter 'cases'");
}

TEST(bad_parameter_value) {
  expect_error("{\"nodes\": [{\"name\": \"w\", \"type\": \"wedge\", \"params\": {\"wedges\": [\n"
               "  {\"attr\": \"a\", \"values\": [1]},\n  {\"attr\": \"b\", \"count\": 0}]}}]}",
               3, 3, "node 'w' (wedge): wedges[1]: give \"values\", or a positive integer");
  expect_error("{\"nodes\": [{\"name\": \"g\", \"type\": \"gather_split\",\n"
               "  \"params\": {\"promote\": {\"x\": \"appendd\"}}}]}",
               2, 31, "promote 'x': the rule must be one of append");
}

TEST(wire_to_missing_port) {
  expect_error("{\"nodes\": [{\"name\": \"a\", \"type\": \"null\"},\n"
               "            {\"name\": \"w\", \"type\": \"wait_children\"}],\n"
               " \"wires\": [{\"from\": \"a.out\",\n            \"to\": \"w.kids\"}]}",
               4, 19,
               "wire to 'w.kids': node 'w' (wait_children) has no input port 'kids' (inputs: "
               "parents, children)");
  expect_error("{\"nodes\": [{\"name\": \"a\", \"type\": \"null\"}],\n"
               " \"wires\": [[\"a.out\", \"b.in\"]]}",
               2, 22, "wire to 'b.in': no node named 'b'");
  expect_error("{\"nodes\": [{\"name\": \"a\", \"type\": \"kill\"}, {\"name\": \"b\", \"type\": \"null\"}],\n"
               " \"wires\": [[\"a.out\", \"b.in\"]]}",
               2, 13, "wire from 'a.out': node 'a' (kill) has no output port 'out' (outputs: none)");
}

TEST(duplicate_node_name) {
  expect_error("{\"nodes\": [\n  {\"name\": \"a\", \"type\": \"null\"},\n"
               "  {\"name\": \"a\", \"type\": \"kill\"}]}",
               3, 12, "duplicate node name 'a' (first defined at line 2, column 3)");
}

TEST(not_an_object_and_unknown_keys) {
  expect_error("[1, 2]", 1, 1, "a graph file must hold a JSON object, got list");
  expect_error("{\"nodes\": [], \"wire\": []}", 1, 15, "unknown key 'wire' at the top");
  expect_error("{\"nodes\": []}", 1, 11, "the graph's \"nodes\" list is empty");
  expect_error("{\"nodes\": [{\"name\": \"a.b\", \"type\": \"null\"}]}", 1, 21,
               "a node name must be a non-empty string");
}

TEST(file_errors) {
  br_error err;
  CHECK(br_graph_load_file("/nonexistent/g.json", &err) == NULL);
  char buf[1024];
  CHECK_CONTAINS(br_error_format(&err, buf, sizeof buf), "/nonexistent/g.json: cannot open graph file");
}

TEST(unicode_columns) {
  /* columns count characters, not bytes */
  expect_error("{\"nodes\": [{\"name\": \"\xc3\xa9t\xc3\xa9\", \"type\": \"nope\"}]}", 1, 36,
               "unknown node type 'nope'");
}

TEST(error_set_leaves_no_stale_location) {
  /* an error struct used before, or never cleared: a new error must not
   * print an old file, task or node */
  br_error err;
  memset(&err, 'x', sizeof err);
  br_error_set(&err, BR_ENOTFOUND, "no task %d", 999);
  char buf[2048];
  CHECK_EQ_STR(br_error_format(&err, buf, sizeof buf), "no task 999");
  br_error_set(&err, BR_EINVAL, "bad");
  br_error_at(&err, "g.json", 3, 4);
  err.task_id = 7;
  snprintf(err.node, sizeof err.node, "n");
  br_error_set(&err, BR_EIO, "again");
  CHECK_EQ_STR(br_error_format(&err, buf, sizeof buf), "again");
  CHECK_EQ_INT(err.line, 0);
  CHECK_EQ_INT(err.column, 0);
  CHECK_EQ_INT(err.task_id, 0);
}

/* Writes text to a graph file in dir; the path is in path. */
static void write_graph(const char *dir, const char *text, char *path, size_t size) {
  snprintf(path, size, "%s/g.json", dir);
  FILE *f = fopen(path, "w");
  CHECK(f != NULL);
  fputs(text, f);
  fclose(f);
}

TEST(a_graph_files_name_must_fit_a_file_name) {
  /* braid run names its store NAME.braid.db: "../evil" made ../evil.braid.db */
  char *dir = br_test_tmpdir("graph-names");
  /* as written in JSON */
  static const char *const bad[] = {"../evil", "has space/and:colon", ".hidden", "", "a/b",
                                    "tab\\there"};
  char text[512], path[1024], buf[2048];
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    snprintf(text, sizeof text,
             "{\n  \"name\": \"%s\",\n  \"nodes\": [{\"name\": \"a\", \"type\": \"null\"}]}",
             bad[i]);
    write_graph(dir, text, path, sizeof path);
    br_error err;
    CHECK(br_graph_load_file(path, &err) == NULL);
    br_error_format(&err, buf, sizeof buf);
    CHECK_CONTAINSF(buf, "%s:2:11: the graph's \"name\" '", path);
    CHECK_CONTAINS(buf, "names its store file: use letters, digits, '.', '_' and '-'");
    /* a string (the farm's API, the store) may carry any name */
    br_graph *g = br_graph_load_string(text, "<api>", &err);
    CHECK(g != NULL);
    br_graph_free(g);
  }
  write_graph(dir, "{\"name\": \"shot_010.comp-v2\", \"nodes\": [{\"name\": \"a\", \"type\": "
                   "\"null\"}]}", path, sizeof path);
  br_error err;
  br_graph *g = br_graph_load_file(path, &err);
  CHECK(g != NULL);
  CHECK_EQ_STR(br_graph_name(g), "shot_010.comp-v2");
  br_graph_free(g);
  free(dir);
}

TEST(graph_file_errors_say_why) {
  char *dir = br_test_tmpdir("graph-file-errors");
  char path[1024], buf[2048];
  br_error err;
  /* empty was "1:0: malformed JSON: '[' or '{' expected near end of file" */
  write_graph(dir, "", path, sizeof path);
  CHECK(br_graph_load_file(path, &err) == NULL);
  CHECK_CONTAINSF(br_error_format(&err, buf, sizeof buf), "%s:1:1: the file is empty", path);
  write_graph(dir, "  \n\n", path, sizeof path);
  CHECK(br_graph_load_file(path, &err) == NULL);
  CHECK_CONTAINSF(br_error_format(&err, buf, sizeof buf), "%s:1:1: the file is empty", path);
  /* jansson's own flag names stay out of messages */
  write_graph(dir, "{\"nodes\": [{\"name\": \"a\\u0000b\", \"type\": \"null\"}]}", path,
              sizeof path);
  CHECK(br_graph_load_file(path, &err) == NULL);
  br_error_format(&err, buf, sizeof buf);
  CHECK_CONTAINS(buf, "malformed JSON: a string holds \\u0000 (a NUL character), which braid "
                      "does not take");
  CHECK(!strstr(buf, "JSON_ALLOW_NUL"));
  /* a folder: "cannot read graph file" said nothing more */
  CHECK(br_graph_load_file(dir, &err) == NULL);
  CHECK_CONTAINSF(br_error_format(&err, buf, sizeof buf),
                  "%s: cannot read graph file: it is a folder", dir);
  /* a column past the end of a line is the line's end, never 0 */
  write_graph(dir, "{\"nodes\": [\n", path, sizeof path);
  CHECK(br_graph_load_file(path, &err) == NULL);
  CHECK(err.line >= 1 && err.column >= 1);
  free(dir);
}

/* A generated graph of n null nodes in a chain n0 -> n1 -> ... with one wire back
 * from the last to n1, and `extra` (a node object, or "") after them (caller frees). */
static char *chain_graph(int n, const char *extra) {
  size_t size = (size_t)n * 100 + strlen(extra) + 200, used = 0;
  char *text = malloc(size);
  CHECK(text != NULL);
  used += (size_t)snprintf(text + used, size - used, "{\"name\": \"big\", \"nodes\": [\n");
  for (int i = 0; i < n; i++)
    used += (size_t)snprintf(text + used, size - used, "%s{\"name\": \"n%d\", \"type\": \"null\"}",
                             i ? ",\n" : "", i);
  used += (size_t)snprintf(text + used, size - used, "%s%s],\n \"wires\": [", *extra ? ",\n" : "",
                           extra);
  for (int i = 0; i + 1 < n; i++)
    used += (size_t)snprintf(text + used, size - used, "[\"n%d\", \"n%d.in\"], ", i, i + 1);
  snprintf(text + used, size - used, "[\"n%d.0\", \"n1\"]]}", n - 1);
  return text;
}

TEST(large_generated_graph_loads) {
  /* each wire end looked at every node: 100,000 nodes took over a minute */
  int n = 10000;
  char *text = chain_graph(n, "");
  br_error err;
  br_graph *g = br_graph_load_string(text, "big.json", &err);
  if (!g) {
    char buf[2048];
    br_test_fail(__FILE__, __LINE__, "%s", br_error_format(&err, buf, sizeof buf));
  }
  CHECK_EQ_INT(br_graph_node_count(g), n);
  CHECK_EQ_STR(br_graph_start_node(g), "n0"); /* the only node no wire leads into */
  br_node *last = br_graph_find_node(g, "n9999");
  CHECK(last != NULL);
  CHECK_EQ_INT(br_node_index(last), n - 1);
  CHECK(br_graph_find_node(g, "n10000") == NULL);
  CHECK(br_graph_find_node(g, "n1999") == br_graph_node(g, 1999));
  char *dump = br_graph_dumps(g);
  /* CHECK, not CHECK_CONTAINS: a failure would print all of it */
  CHECK(strstr(dump, "\"from\": \"n9998.out\",\n      \"to\": \"n9999.in\"") != NULL);
  CHECK(strstr(dump, "\"from\": \"n9999.out\",\n      \"to\": \"n1.in\"") != NULL);
  CHECK_EQ_INT(br_test_count(dump, "\"from\""), n);
  free(dump);
  br_graph_free(g);
  free(text);
  /* a name given twice is still found, naming the first */
  text = chain_graph(n, "{\"name\": \"n1234\", \"type\": \"null\"}");
  g = br_graph_load_string(text, "big.json", &err);
  CHECK(g == NULL);
  CHECK_CONTAINS(err.msg, "duplicate node name 'n1234' (first defined at line 1236, column 1)");
  CHECK_EQ_INT(err.line, n + 2);
  free(text);
  /* and a wire to a node that is not there */
  text = chain_graph(n, "");
  char *w = strstr(text, "\"n777.in\"");
  memcpy(w, "\"n7x7", 5);
  g = br_graph_load_string(text, "big.json", &err);
  CHECK(g == NULL);
  CHECK_CONTAINS(err.msg, "wire to 'n7x7.in': no node named 'n7x7'");
  free(text);
}

TEST(a_byte_order_mark_is_skipped) {
  /* "'[' or '{' expected near '<invisible char>'" for a file an editor saved with one */
  br_error err;
  br_graph *g = br_graph_load_string("\xEF\xBB\xBF{\"name\": \"bom\", \"nodes\": "
                                     "[{\"name\": \"a\", \"type\": \"null\"}]}", "g.json", &err);
  CHECK(g != NULL);
  CHECK_EQ_STR(br_graph_name(g), "bom");
  br_graph_free(g);
  expect_error("\xEF\xBB\xBF{\"nodes\": [{\"name\": \"a\", \"type\": \"nul\"}]}", 1, 34,
               "node 'a': unknown node type 'nul'");
}
