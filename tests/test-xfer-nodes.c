/* The push and pull node types through the engine: graphs run by the real
 * `braid run` (local slots), whose jobs run the real `braid push` and
 * `braid pull` against a real depot on loopback. A tree pushed by one task
 * and pulled by another compares equal; two tasks on one host pulling the
 * same snapshot share the content cache (same inodes); a bad token, a
 * missing depot, a missing snapshot and path problems end their tasks in
 * error with braid's own message, permanent ones without a retry. */
#include "xfer-util.h"

#include <braid/graph.h>
#include <braid/store.h>
#include <sys/wait.h>

typedef struct env {
  char *tmp;
  xu_depot d;
  char *tok; /* the client token's file */
} env;

static void env_open(env *e, const char *name) {
  e->tmp = br_test_tmpdir(name);
  setenv("BRAID_CACHE_DIR", e->tmp, 1); /* the jobs' hash cache: not in $HOME */
  unsetenv("BRAID_TOKEN");
  unsetenv("BRAID_TOKEN_FILE");
  xu_depot_start(&e->d, e->tmp);
  e->tok = xu_path(e->tmp, "client-token");
  xu_write_file(e->tok, XU_TOKEN "\n", strlen(XU_TOKEN) + 1);
}

static void env_close(env *e) {
  xu_depot_stop(&e->d);
  free(e->tok);
  xu_done(e->tmp);
}

/* Writes the graph and runs `braid run` on it in e->tmp; its exit status,
 * its output in *out (may be NULL). */
static int run_graph(env *e, const char *graph, const char *extra, char **out) {
  char *gp = xu_path(e->tmp, "graph.json"), *log = xu_path(e->tmp, "run.log");
  xu_write_file(gp, graph, strlen(graph));
  const char *bin = getenv("BRAID_BIN");
  CHECK(bin != NULL);
  char *cmd = NULL;
  if (asprintf(&cmd, "cd '%s' && '%s' run graph.json --store braid.db %s > run.log 2>&1", e->tmp,
               bin, extra ? extra : "") < 0)
    abort();
  int st = system(cmd);
  free(cmd);
  char *text = br__read_file(log, NULL);
  if (out) *out = text;
  else free(text);
  free(gp);
  free(log);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

typedef struct tasks {
  br_task_info v[16];
  int n;
} tasks;

static int take_task(void *ud, br_task_info *t) {
  tasks *l = ud;
  if (l->n < 16) l->v[l->n++] = *t;
  else br_task_info_free(t);
  free(t);
  return 0;
}

/* The tasks at node (NULL: all), by id. */
static tasks tasks_at(env *e, const char *node) {
  tasks l;
  memset(&l, 0, sizeof l);
  char *db = xu_path(e->tmp, "braid.db");
  br_store *s;
  br_error err;
  CHECK_EQ_INT(br_store_open(db, BR_STORE_READONLY, &s, &err), BR_OK);
  br_task_filter f = BR_TASK_FILTER_ALL;
  f.node = node;
  CHECK_EQ_INT(br_store_task_query(s, &f, take_task, &l, &err), BR_OK);
  br_store_close(s);
  free(db);
  return l;
}

static void tasks_free(tasks *l) {
  for (int i = 0; i < l->n; i++) br_task_info_free(&l->v[i]);
}

static int count_inv(void *ud, br_inv_info *i) {
  (*(int *)ud)++;
  br_inv_info_free(i);
  free(i);
  return 0;
}

static int invocations(env *e, int64_t task) {
  char *db = xu_path(e->tmp, "braid.db");
  br_store *s;
  br_error err;
  int n = 0;
  CHECK_EQ_INT(br_store_open(db, BR_STORE_READONLY, &s, &err), BR_OK);
  CHECK_EQ_INT(br_store_inv_query(s, task, count_inv, &n, &err), BR_OK);
  br_store_close(s);
  free(db);
  return n;
}

static void make_tree(const char *dir) {
  xu_make_file(dir, "cloth/cloth.0001.bgeo", 1000, 1);
  xu_make_file(dir, "cloth/cloth.0002.bgeo", 70000, 2);
  xu_make_file(dir, "cloth/sub/big.0001.vdb", 700000, 3); /* several chunks */
  xu_make_file(dir, "empty.txt", 0, 4);
}

TEST(push_then_pull_in_another_task) {
  env e;
  env_open(&e, "xfer-nodes-rt");
  char *src = xu_path(e.tmp, "src");
  make_tree(src);
  /* push sets snapshot and snapshot_version on the task; the pull takes
   * the snapshot attribute as it is, into a folder named by the version.
   * The pull runs in a child of the task: another task. */
  char *graph = NULL;
  if (asprintf(&graph,
               "{\"name\": \"rt\", \"start\": {\"node\": \"push\", \"attrs\": {\"shot\": \"sh010\"}},\n"
               " \"nodes\": [\n"
               "  {\"name\": \"push\", \"type\": \"push\", \"params\": {\"src\": \"%s\", \"depot\": \"%s\",\n"
               "   \"name\": \"${attr.shot}/cloth\", \"token_file\": \"%s\", \"args\": [\"--chunk-size\", \"256K\"]}},\n"
               "  {\"name\": \"kids\", \"type\": \"spawn\", \"params\": {\"count\": 1}},\n"
               "  {\"name\": \"pull\", \"type\": \"pull\", \"params\": {\"snapshots\": \"{snapshot}\",\n"
               "   \"dest\": \"%s/dst/v{snapshot_version}\", \"token_file\": \"%s\"}}],\n"
               " \"wires\": [[\"push\", \"kids\"], [\"kids.children\", \"pull\"]]}\n",
               src, e.d.url, e.tok, e.tmp, e.tok) < 0)
    abort();
  char *out = NULL;
  int rc = run_graph(&e, graph, "--slots 2", &out);
  if (rc != 0) br_test_fail(__FILE__, __LINE__, "braid run exited %d:\n%s", rc, out);
  free(out);
  char *dst = xu_path(e.tmp, "dst/v1");
  CHECK_EQ_INT(xu_tree_diff(src, dst), 0);
  CHECK_EQ_INT(xu_count_prefix(dst, ".braid-partial-"), 0);
  tasks p = tasks_at(&e, "pull");
  CHECK_EQ_INT(p.n, 1);
  CHECK_EQ_INT(p.v[0].state, BR_TASK_DONE);
  CHECK(p.v[0].parent != 0); /* a child: not the task that pushed */
  char want[256];
  snprintf(want, sizeof want, "%s/sh010/cloth@v1", e.d.url);
  CHECK_EQ_STR(json_string_value(json_object_get(p.v[0].attrs, "snapshot")), want);
  CHECK_EQ_INT(json_integer_value(json_object_get(p.v[0].attrs, "snapshot_version")), 1);
  tasks_free(&p);
  free(dst);
  /* Run again on a new store: a second version, pulled into its own folder. */
  char *db = NULL;
  if (asprintf(&db, "rm -f '%s'/braid.db*", e.tmp) < 0) abort();
  CHECK_EQ_INT(system(db), 0);
  free(db);
  xu_make_file(src, "cloth/cloth.0003.bgeo", 5000, 5);
  CHECK_EQ_INT(run_graph(&e, graph, NULL, NULL), 0);
  dst = xu_path(e.tmp, "dst/v2");
  CHECK_EQ_INT(xu_tree_diff(src, dst), 0);
  free(dst);
  free(graph);
  free(src);
  env_close(&e);
}

static ino_t inode(const char *dir, const char *rel) {
  char *p = xu_path(dir, rel);
  struct stat st;
  CHECK_EQ_INT(stat(p, &st), 0);
  free(p);
  return st.st_ino;
}

TEST(two_pulls_on_one_host_share_the_content_cache) {
  env e;
  env_open(&e, "xfer-nodes-cache");
  char *src = xu_path(e.tmp, "src");
  make_tree(src);
  br_xfer_opts o;
  xu_opts(&o, e.tmp);
  char *ref = xu_ref(e.d.url, "assets/tree");
  xu_push_ok(src, ref, &o, NULL);
  /* Two tasks (children of the start task), one slot: the second pull
   * finds every file of the first in the cache. */
  char *graph = NULL;
  if (asprintf(&graph,
               "{\"name\": \"cache\", \"start\": {\"node\": \"kids\"},\n"
               " \"nodes\": [{\"name\": \"kids\", \"type\": \"spawn\", \"params\": {\"count\": 2}},\n"
               "  {\"name\": \"pull\", \"type\": \"pull\", \"params\": {\"snapshots\": [\"assets/tree@v1\"],\n"
               "   \"depot\": \"%s\", \"layout\": \"merge\", \"dest\": \"%s/dst/{prefix}${attr.index}\",\n"
               "   \"cache\": \"%s/content\", \"token_env\": \"XFER_NODE_TOKEN\"}}],\n"
               " \"wires\": [[\"kids.children\", \"pull\"]]}\n",
               e.d.url, e.tmp, e.tmp) < 0)
    abort();
  setenv("XFER_NODE_TOKEN", XU_TOKEN, 1);
  char *out = NULL;
  int rc = run_graph(&e, graph, "--slots 1 --set prefix=t", &out);
  if (rc != 0) br_test_fail(__FILE__, __LINE__, "braid run exited %d:\n%s", rc, out);
  free(out);
  unsetenv("XFER_NODE_TOKEN");
  tasks p = tasks_at(&e, "pull");
  CHECK_EQ_INT(p.n, 2);
  for (int i = 0; i < 2; i++) CHECK_EQ_INT(p.v[i].state, BR_TASK_DONE);
  tasks_free(&p);
  char *d0 = xu_path(e.tmp, "dst/t0"), *d1 = xu_path(e.tmp, "dst/t1");
  CHECK_EQ_INT(xu_tree_diff(src, d0), 0);
  CHECK_EQ_INT(xu_tree_diff(src, d1), 0);
  /* One copy on disk: the same inode in both folders. */
  CHECK(inode(d0, "cloth/sub/big.0001.vdb") == inode(d1, "cloth/sub/big.0001.vdb"));
  CHECK(inode(d0, "cloth/cloth.0002.bgeo") == inode(d1, "cloth/cloth.0002.bgeo"));
  /* And the second job said so in its log. */
  char *cmd = NULL;
  if (asprintf(&cmd, "cat '%s'/braid.logs/*/*.log | grep -c 'files from the content cache'",
               e.tmp) < 0)
    abort();
  FILE *f = popen(cmd, "r");
  char buf[64] = "";
  CHECK(fgets(buf, sizeof buf, f) != NULL);
  pclose(f);
  CHECK_EQ_INT(atoi(buf), 1);
  free(cmd);
  free(d0);
  free(d1);
  free(graph);
  free(ref);
  free(src);
  env_close(&e);
}

TEST(failures_end_the_task_in_error_with_a_clear_message) {
  env e;
  env_open(&e, "xfer-nodes-fail");
  char *src = xu_path(e.tmp, "src");
  make_tree(src);
  char *afile = xu_path(e.tmp, "afile");
  xu_write_file(afile, "x", 1);
  br_xfer_opts o;
  xu_opts(&o, e.tmp);
  char *ref = xu_ref(e.d.url, "assets/tree");
  xu_push_ok(src, ref, &o, NULL);
  char *graph = NULL;
  if (asprintf(&graph,
               "{\"name\": \"fail\", \"start\": {\"node\": \"start\"},\n"
               " \"nodes\": [{\"name\": \"start\", \"type\": \"null\"},\n"
               "  {\"name\": \"badtoken\", \"type\": \"pull\", \"params\": {\"snapshots\": \"assets/tree\",\n"
               "   \"depot\": \"%s\", \"dest\": \"%s/d1\", \"token\": \"not-the-token\"}},\n"
               "  {\"name\": \"nodepot\", \"type\": \"pull\", \"params\": {\"snapshots\": \"assets/tree\",\n"
               "   \"depot\": \"depot://127.0.0.1:1\", \"dest\": \"%s/d2\", \"token_file\": \"%s\",\n"
               "   \"retries\": 1, \"args\": [\"--retries\", \"0\"]}},\n"
               "  {\"name\": \"nosnapshot\", \"type\": \"pull\", \"params\": {\"snapshots\": \"assets/none@v3\",\n"
               "   \"depot\": \"%s\", \"dest\": \"%s/d3\", \"token_file\": \"%s\"}},\n"
               "  {\"name\": \"nosrc\", \"type\": \"push\", \"params\": {\"src\": \"%s/nowhere\",\n"
               "   \"depot\": \"%s\", \"name\": \"x/y\", \"token_file\": \"%s\"}},\n"
               "  {\"name\": \"destfile\", \"type\": \"pull\", \"params\": {\"snapshots\": \"assets/tree\",\n"
               "   \"depot\": \"%s\", \"dest\": \"%s/sub\", \"token_file\": \"%s\"}},\n"
               "  {\"name\": \"noattr\", \"type\": \"pull\", \"params\": {\"snapshots\": \"{missing}\",\n"
               "   \"depot\": \"%s\", \"dest\": \"%s/d4\", \"token_file\": \"%s\"}}],\n"
               " \"wires\": [[\"start\", \"badtoken\"], [\"start\", \"nodepot\"], [\"start\", \"nosnapshot\"],\n"
               "   [\"start\", \"nosrc\"], [\"start\", \"destfile\"], [\"start\", \"noattr\"]]}\n",
               e.d.url, e.tmp, e.tmp, e.tok, e.d.url, e.tmp, e.tok, e.tmp, e.d.url, e.tok,
               e.d.url, afile, e.tok, e.d.url, e.tmp, e.tok) < 0)
    abort();
  char *out = NULL;
  CHECK_EQ_INT(run_graph(&e, graph, "--slots 2", &out), 1);
  static const struct {
    const char *node, *msg;
    int invocations;
  } want[] = {
      {"badtoken", "pull failed: the depot refused the token (HTTP 401", 1},
      {"nodepot", "cannot reach the depot at http://127.0.0.1:1", 2}, /* transient: retried */
      {"nosnapshot", "no snapshot named 'assets/none'", 1},
      {"nosrc", "push failed: ", 1},
      {"destfile", "pull failed: ", 1},
      {"noattr", "the attribute 'missing'", 0},
  };
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
    tasks t = tasks_at(&e, want[i].node);
    CHECK_EQ_INT(t.n, 1);
    if (t.v[0].state != BR_TASK_ERROR || !t.v[0].error || !strstr(t.v[0].error, want[i].msg))
      br_test_fail(__FILE__, __LINE__, "node %s: state %d, error '%s', wanted '%s'\n%s",
                   want[i].node, t.v[0].state, t.v[0].error ? t.v[0].error : "", want[i].msg,
                   out);
    CHECK_EQ_INT(invocations(&e, t.v[0].id), want[i].invocations);
    tasks_free(&t);
  }
  /* The summary shows each failure with the tail of its job's log. */
  CHECK_CONTAINS(out, "| braid: pull failed: the depot refused the token");
  CHECK_CONTAINS(out, "nowhere: does not exist");
  /* Nothing of the refused pulls reached a final path. */
  char *d1 = xu_path(e.tmp, "d1/cloth/cloth.0001.bgeo");
  struct stat st;
  CHECK(stat(d1, &st) != 0);
  free(d1);
  free(out);
  free(graph);
  free(ref);
  free(afile);
  free(src);
  env_close(&e);
}

TEST(graph_errors_name_the_parameter) {
  br_error err;
  br_graph *g = br_graph_load_string(
      "{\"nodes\": [{\"name\": \"p\", \"type\": \"pull\", \"params\": {\"dest\": \"/x\"}}]}",
      "g.json", &err);
  CHECK(g == NULL);
  CHECK_CONTAINS(err.msg, "missing required parameter 'snapshots'");
  g = br_graph_load_string(
      "{\"nodes\": [{\"name\": \"p\", \"type\": \"push\", \"params\": {\"src\": \"/x\", \"nam\": \"y\"}}]}",
      "g.json", &err);
  CHECK(g == NULL);
  CHECK_CONTAINS(err.msg, "unknown parameter 'nam'");
}
