/* The dynamic graph under stress: splits nested in splits and gathered back,
 * children spawned and waited for inside splits, tasks operated on while
 * their siblings gather, and a seeded generator of nested split/gather
 * graphs whose final attributes are known in advance, run whole and killed
 * (SIGKILL) at many points. */
#include "engine_util.h"

#include <braid/task.h>

#include <stdarg.h>

/* ---- tasks that were consumed stay consumed ---- */

/* A dead split element was gathered into its survivor: retrying or moving
 * it would bring it back as a split of its own (the split counts it no
 * more), so it was gathered a second time and its survivor went on twice. */
TEST(a_dead_element_cannot_be_retried_or_moved) {
  tenv t;
  tenv_open(&t, "dead_retry");
  tenv_graph(&t, "{\"nodes\": [{\"name\": \"s\", \"type\": \"split_list\","
                 "\"params\": {\"attr\": \"v\"}},"
                 "{\"name\": \"g\", \"type\": \"gather_split\", \"params\": {\"promote\": {"
                 "\"all\": {\"rule\": \"extend\", \"from\": \"v\"}}}},"
                 "{\"name\": \"end\", \"type\": \"null\"}],"
                 "\"wires\": [[\"s\", \"g\"], [\"g\", \"end\"]]}");
  tenv_submit(&t, "s", "{\"v\": [1, 2, 3]}");
  tenv_run(&t);
  tlist dead = tenv_tasks(&t, "g", BR_TASK_DEAD);
  CHECK_EQ_INT(dead.n, 2);
  br_error err;
  CHECK_EQ_INT(br_engine_task_retry(t.eng, dead.v[0].id, &err), BR_ESTATE);
  CHECK_CONTAINSF(err.msg, "task %lld is dead", (long long)dead.v[0].id);
  CHECK_EQ_INT(br_engine_task_move(t.eng, dead.v[1].id, "end", &err), BR_ESTATE);
  CHECK_CONTAINSF(err.msg, "task %lld is dead", (long long)dead.v[1].id);
  tlist_free(&dead);
  tenv_run(&t);
  br_engine_stats st;
  br_engine_get_stats(t.eng, &st);
  CHECK_EQ_INT(st.tasks_in_memory, 0); /* loaded to be looked at, and let go */
  CHECK_EQ_INT(tenv_count(&t, "end", BR_TASK_DONE), 1);
  CHECK_EQ_INT(tenv_count(&t, "g", BR_TASK_DEAD), 2);
  char *all = tenv_attr(&t, "end", BR_TASK_DONE, "all");
  CHECK_EQ_STR(all, "[1,2,3]");
  free(all);
  tenv_close(&t);
}

/* ---- splits whose elements all die ---- */

/* When every element of a split dies, the element of the split around it
 * that it was made from is gone too: the outer gather goes on without it.
 * Before, the outer split still counted it and its gather waited for ever
 * (and braid run ended "finished", the survivor blocked). Here the inner
 * splits of a == 1 are killed whole, two and three levels down. */
TEST(an_inner_split_killed_whole_does_not_hold_the_outer_gather) {
  for (int depth = 2; depth <= 3; depth++) {
    tenv t;
    tenv_open(&t, "killed_whole");
    char g[4096];
    snprintf(g, sizeof g,
             "{\"nodes\": ["
             "{\"name\": \"w1\", \"type\": \"wedge\", \"params\": {\"index_attr\": \"\","
             " \"wedges\": [{\"attr\": \"a\", \"count\": 3}]}},"
             "{\"name\": \"w2\", \"type\": \"wedge\", \"params\": {\"index_attr\": \"\","
             " \"wedges\": [{\"attr\": \"b\", \"count\": 2}]}},"
             "{\"name\": \"w3\", \"type\": \"wedge\", \"params\": {\"index_attr\": \"\","
             " \"wedges\": [{\"attr\": \"c\", \"values\": [\"x\", \"y\"]}]}},"
             "{\"name\": \"sw\", \"type\": \"switch\","
             " \"params\": {\"attr\": \"a\", \"cases\": [1]}},"
             "{\"name\": \"k\", \"type\": \"kill\"},"
             "{\"name\": \"g3\", \"type\": \"gather_split\", \"params\": {\"promote\": {"
             " \"c\": \"append\"}}},"
             "{\"name\": \"g2\", \"type\": \"gather_split\", \"params\": {\"promote\": {"
             " \"b\": \"append\", \"c\": \"append\"}}},"
             "{\"name\": \"g1\", \"type\": \"gather_split\", \"params\": {\"promote\": {"
             " \"a\": \"append\", \"b\": \"append\", \"c\": \"append\"}}},"
             "{\"name\": \"end\", \"type\": \"null\"}],"
             "\"wires\": [[\"w1\", \"w2\"], %s [\"sw.1\", \"k\"], [\"sw.default\", \"%s\"],"
             " %s [\"g2\", \"g1\"], [\"g1\", \"end\"]]}",
             depth == 3 ? "[\"w2\", \"w3\"], [\"w3\", \"sw\"]," : "[\"w2\", \"sw\"],",
             depth == 3 ? "g3" : "g2", depth == 3 ? "[\"g3\", \"g2\"]," : "");
    tenv_graph(&t, g);
    tenv_submit(&t, "w1", "{\"c\": \"-\"}");
    tenv_run(&t);
    CHECK_EQ_INT(tenv_count(&t, NULL, BR_TASK_BLOCKED), 0);
    tlist l = tenv_tasks(&t, "end", BR_TASK_DONE);
    CHECK_EQ_INT(l.n, 1);
    char *s = json_dumps(l.v[0].attrs, JSON_COMPACT | JSON_SORT_KEYS);
    const char *xy = "[\"x\",\"y\"]";
    char want[512];
    snprintf(want, sizeof want, "{\"a\":[0,2],\"b\":[[0,1],[0,1]],\"c\":[[%s,%s],[%s,%s]]}",
             depth == 3 ? xy : "\"-\"", depth == 3 ? xy : "\"-\"", depth == 3 ? xy : "\"-\"",
             depth == 3 ? xy : "\"-\"");
    CHECK_EQ_STR(s, want);
    free(s);
    tlist_free(&l);
    CHECK_EQ_INT(tenv_count(&t, "k", BR_TASK_DEAD), depth == 3 ? 4 : 2);
    br_engine_stats st;
    br_engine_get_stats(t.eng, &st);
    CHECK_EQ_INT(st.tasks_in_memory, 0);
    CHECK_EQ_INT(st.groups, 0);
    tenv_close(&t);
  }
}

/* ---- a seeded generator of nested split/gather graphs ---- */

/* xorshift64*: the same graphs on every machine for a seed */
static uint64_t rnd_next(uint64_t *s) {
  *s ^= *s >> 12;
  *s ^= *s << 25;
  *s ^= *s >> 27;
  return *s * 2685821657736338717ULL;
}

static int rnd(uint64_t *s, int lo, int hi) {
  return lo + (int)(rnd_next(s) % (uint64_t)(hi - lo + 1));
}

enum { K_WEDGE, K_RANGE, K_LIST, K_FANOUT, K_KINDS };

/* One generated graph: levels of splits, each gathered back in turn, and
 * at the innermost level a kill of some elements, a detour for others (so
 * elements reach the gather at different times) and children spawned and
 * waited for. */
typedef struct gen {
  int depth;
  int kind[4], n[4];      /* the split of each level and its element count */
  int chunk[4], items[4]; /* range and list splits: chunk size, items or frames */
  int kids;               /* children per innermost element (0: none) */
  int kill_mod, kill_rem; /* elements whose weighted path % mod == rem die */
  char *json;
} gen;

static void buf_add(char **b, size_t *len, size_t *cap, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void buf_add(char **b, size_t *len, size_t *cap, const char *fmt, ...) {
  va_list ap;
  for (;;) {
    va_start(ap, fmt);
    int k = vsnprintf(*b + *len, *cap - *len, fmt, ap);
    va_end(ap);
    if ((size_t)k < *cap - *len) {
      *len += (size_t)k;
      return;
    }
    *cap = *cap * 2 + (size_t)k;
    *b = realloc(*b, *cap);
    CHECK(*b);
  }
}

#define ADD(...) buf_add(&b, &len, &cap, __VA_ARGS__)

static void gen_make(gen *g, uint64_t seed) {
  uint64_t s = seed * 0x9E3779B97F4A7C15ULL + 1;
  memset(g, 0, sizeof *g);
  g->depth = rnd(&s, 1, 4);
  for (int i = 0; i < g->depth; i++) {
    g->kind[i] = rnd(&s, 0, K_KINDS - 1);
    switch (g->kind[i]) {
    case K_WEDGE: g->n[i] = rnd(&s, 1, 4); break;
    case K_FANOUT: g->n[i] = rnd(&s, 2, 3); break;
    case K_RANGE:
      g->chunk[i] = rnd(&s, 1, 3);
      g->items[i] = rnd(&s, 1, 9); /* frames */
      g->n[i] = (g->items[i] + g->chunk[i] - 1) / g->chunk[i];
      break;
    default:
      g->chunk[i] = rnd(&s, 1, 3);
      g->items[i] = rnd(&s, 0, 7); /* an empty list is a split of one */
      g->n[i] = g->items[i] ? (g->items[i] + g->chunk[i] - 1) / g->chunk[i] : 1;
      break;
    }
  }
  g->kids = rnd(&s, 0, 3);
  g->kill_mod = rnd(&s, 0, 1) ? rnd(&s, 2, 5) : 0;
  g->kill_rem = g->kill_mod ? rnd(&s, 0, g->kill_mod - 1) : 0;
  char *b = malloc(256);
  size_t len = 0, cap = 256;
  b[0] = '\0';
  ADD("{\"name\": \"gen%llu\", \"nodes\": [\n", (unsigned long long)seed);
  /* the weighted path, as Lua and as C compute it */
  char path_lua[256] = "0", leaf_lua[256] = "''";
  for (int i = 0; i < g->depth; i++) {
    size_t pl = strlen(path_lua), ll = strlen(leaf_lua);
    snprintf(path_lua + pl, sizeof path_lua - pl, " + attr.l%d * %d", i, i + 2);
    snprintf(leaf_lua + ll, sizeof leaf_lua - ll, " .. '%s' .. attr.l%d", i ? "." : "", i);
  }
  for (int i = 0; i < g->depth; i++) {
    switch (g->kind[i]) {
    case K_WEDGE:
      ADD("{\"name\": \"s%d\", \"type\": \"wedge\", \"params\": {\"index_attr\": \"\", \"wedges\":"
          " [{\"attr\": \"w%d\", \"count\": %d}]}},\n", i, i, g->n[i]);
      break;
    case K_RANGE:
      ADD("{\"name\": \"p%d\", \"type\": \"set_attr\", \"params\": {\"set\": {\"fs%d\": 1,"
          " \"fe%d\": %d}}},\n", i, i, i, g->items[i]);
      ADD("{\"name\": \"s%d\", \"type\": \"split_range\", \"params\": {\"chunk\": %d,"
          " \"start_attr\": \"fs%d\", \"end_attr\": \"fe%d\"}},\n", i, g->chunk[i], i, i);
      break;
    case K_LIST:
      ADD("{\"name\": \"p%d\", \"type\": \"set_attr\", \"params\": {\"set\": {\"ls%d\": [", i, i);
      for (int k = 0; k < g->items[i]; k++) ADD("%s%d", k ? ", " : "", k);
      ADD("]}}},\n");
      ADD("{\"name\": \"s%d\", \"type\": \"split_list\", \"params\": {\"chunk\": %d,"
          " \"attr\": \"ls%d\"}},\n", i, g->chunk[i], i);
      break;
    default:
      ADD("{\"name\": \"s%d\", \"type\": \"null\"},\n", i);
      for (int k = 0; k < g->n[i]; k++)
        ADD("{\"name\": \"f%d_%d\", \"type\": \"set_attr\","
            " \"params\": {\"set\": {\"fb%d\": %d}}},\n", i, k, i, k);
      break;
    }
    ADD("{\"name\": \"e%d\", \"type\": \"set_attr\", \"params\": {\"set\": {\"l%d\":"
        " {\"expr\": \"task.split_elem\"}}}},\n", i, i);
    ADD("{\"name\": \"g%d\", \"type\": \"gather_split\", \"params\": {\"promote\": {", i);
    if (i == g->depth - 1)
      ADD("\"r\": {\"rule\": \"append\", \"from\": \"v\"},"
          " \"n\": {\"rule\": \"count\", \"from\": \"v\"}, \"kids\": \"extend\"");
    else
      ADD("\"r\": \"append\", \"n\": \"sum\", \"kids\": \"extend\"");
    ADD("}}},\n");
  }
  ADD("{\"name\": \"dk\", \"type\": \"set_attr\", \"params\": {\"set\": {"
      "\"dead\": {\"expr\": \"%d > 0 and (%s) %% %d == %d\"},"
      " \"slow\": {\"expr\": \"(%s) %% 2 == 1\"},"
      " \"v\": {\"expr\": \"%s\"}}}},\n",
      g->kill_mod, path_lua, g->kill_mod ? g->kill_mod : 1, g->kill_rem, path_lua, leaf_lua);
  ADD("{\"name\": \"kill_sw\", \"type\": \"switch\","
      " \"params\": {\"attr\": \"dead\", \"cases\": [true]}},\n"
      "{\"name\": \"k\", \"type\": \"kill\"},\n"
      "{\"name\": \"slow_sw\", \"type\": \"switch\","
      " \"params\": {\"attr\": \"slow\", \"cases\": [true]}},\n"
      "{\"name\": \"d1\", \"type\": \"null\"}, {\"name\": \"d2\", \"type\": \"null\"},"
      " {\"name\": \"d3\", \"type\": \"null\"},\n"
      "{\"name\": \"sp\", \"type\": \"spawn\","
      " \"params\": {\"count\": %d, \"index_attr\": \"ci\"}},\n"
      "{\"name\": \"cl\", \"type\": \"set_attr\","
      " \"params\": {\"set\": {\"cv\": {\"expr\": \"attr.ci * 10\"}}}},\n"
      "{\"name\": \"wc\", \"type\": \"wait_children\", \"params\": {\"promote\": {"
      "\"kids\": {\"rule\": \"append\", \"from\": \"cv\"}}}},\n"
      "{\"name\": \"gnone\", \"type\": \"gather_split\","
      " \"params\": {\"promote\": {\"r\": \"append\"}}},\n"
      "{\"name\": \"end\", \"type\": \"null\"}\n], \"wires\": [\n",
      g->kids);
  for (int i = 0; i < g->depth; i++) {
    const char *next = "dk";
    char nb[16];
    if (i + 1 < g->depth) {
      int pre = g->kind[i + 1] == K_RANGE || g->kind[i + 1] == K_LIST;
      snprintf(nb, sizeof nb, "%s%d", pre ? "p" : "s", i + 1);
      next = nb;
    }
    if (g->kind[i] == K_RANGE || g->kind[i] == K_LIST) ADD("[\"p%d\", \"s%d\"], ", i, i);
    if (g->kind[i] == K_FANOUT)
      for (int k = 0; k < g->n[i]; k++)
        ADD("[\"s%d\", \"f%d_%d\"], [\"f%d_%d\", \"e%d\"], ", i, i, k, i, k, i);
    else
      ADD("[\"s%d\", \"e%d\"], ", i, i);
    ADD("[\"e%d\", \"%s\"],\n", i, next);
    ADD("[\"g%d\", \"%s\"],\n", i, i ? (snprintf(nb, sizeof nb, "g%d", i - 1), nb) : "gnone");
  }
  ADD("[\"dk\", \"kill_sw\"], [\"kill_sw.true\", \"k\"], [\"kill_sw.default\", \"slow_sw\"],\n"
      "[\"slow_sw.true\", \"d1\"], [\"d1\", \"d2\"], [\"d2\", \"d3\"], [\"d3\", \"sp\"],"
      " [\"slow_sw.default\", \"sp\"],\n"
      "[\"sp.children\", \"cl\"], [\"cl\", \"wc.children\"], [\"sp.out\", \"wc.parents\"],\n"
      "[\"wc.parents\", \"g%d\"], [\"gnone\", \"end\"]\n]}\n", g->depth - 1);
  g->json = b;
}

/* What the task at "end" holds: r (lists nested depth deep of the leaves'
 * paths), n (leaves alive), kids (every leaf's children's values, in
 * order). Returns NULL for a level whose elements all died. */
static json_t *gen_expect(const gen *g, int level, int *path) {
  if (level == g->depth) {
    int w = 0;
    char leaf[64] = "";
    for (int i = 0; i < g->depth; i++) {
      w += path[i] * (i + 2);
      size_t l = strlen(leaf);
      snprintf(leaf + l, sizeof leaf - l, "%s%d", i ? "." : "", path[i]);
    }
    if (g->kill_mod && w % g->kill_mod == g->kill_rem) return NULL;
    json_t *kids = json_array();
    for (int c = 0; c < g->kids; c++) json_array_append_new(kids, json_integer(c * 10));
    return json_pack("{sssiso}", "r", leaf, "n", 1, "kids", kids);
  }
  json_t *r = json_array(), *kids = json_array();
  int n = 0;
  for (int e = 0; e < g->n[level]; e++) {
    path[level] = e;
    json_t *sub = gen_expect(g, level + 1, path);
    if (!sub) continue;
    json_array_append(r, json_object_get(sub, "r"));
    json_array_extend(kids, json_object_get(sub, "kids"));
    n += (int)json_integer_value(json_object_get(sub, "n"));
    json_decref(sub);
  }
  if (!json_array_size(r)) {
    json_decref(r);
    json_decref(kids);
    return NULL;
  }
  return json_pack("{sosiso}", "r", r, "n", n, "kids", kids);
}

/* Compares what reached "end" with gen_expect; returns a message or NULL. */
static char *gen_check(const gen *g, tenv *t) {
  int path[4] = {0};
  json_t *want = gen_expect(g, 0, path);
  tlist l = tenv_tasks(t, "end", BR_TASK_DONE);
  char *msg = NULL;
  size_t stuck = tenv_count(t, NULL, BR_TASK_BLOCKED) + tenv_count(t, NULL, BR_TASK_ERROR) +
                 tenv_count(t, NULL, BR_TASK_WAITING);
  if (stuck) {
    if (asprintf(&msg, "%zu tasks blocked, in error or waiting", stuck) < 0) abort();
  } else if (l.n != (want ? 1u : 0u)) {
    if (asprintf(&msg, "%zu tasks at end, expected %d", l.n, want ? 1 : 0) < 0) abort();
  } else if (want) {
    json_t *got = json_pack("{sOsOsO}", "r", json_object_get(l.v[0].attrs, "r"), "n",
                            json_object_get(l.v[0].attrs, "n"), "kids",
                            json_object_get(l.v[0].attrs, "kids"));
    if (!got || !json_equal(got, want)) {
      char *a = got ? json_dumps(got, JSON_COMPACT | JSON_SORT_KEYS) : strdup("(incomplete)");
      char *b = json_dumps(want, JSON_COMPACT | JSON_SORT_KEYS);
      if (asprintf(&msg, "got %s, expected %s", a, b) < 0) abort();
      free(a);
      free(b);
    }
    json_decref(got);
  }
  tlist_free(&l);
  json_decref(want);
  return msg;
}

static void gen_fail(const gen *g, uint64_t seed, const char *what, char *msg) {
  br_test_fail(__FILE__, __LINE__, "seed %llu (%s): %s\ngraph: %s", (unsigned long long)seed,
               what, msg, g->json);
}

/* The first node: a range or list split starts at the node that sets its
 * attributes. */
static const char *gen_start(const gen *g) {
  return g->kind[0] == K_RANGE || g->kind[0] == K_LIST ? "p0" : "s0";
}

static uint64_t gen_seed0(void) {
  const char *s = getenv("BRAID_GEN_SEED");
  return s ? strtoull(s, NULL, 10) : 1;
}

TEST(generated_nested_graphs_end_as_computed) {
  uint64_t seed0 = gen_seed0();
  for (uint64_t seed = seed0; seed < seed0 + 150; seed++) {
    gen g;
    gen_make(&g, seed);
    tenv t;
    tenv_open(&t, "gen");
    tenv_graph(&t, g.json);
    tenv_submit(&t, gen_start(&g), "{}");
    tenv_run(&t);
    char *msg = gen_check(&g, &t);
    if (msg) gen_fail(&g, seed, "one run", msg);
    br_engine_stats st;
    br_engine_get_stats(t.eng, &st);
    CHECK_EQ_INT(st.tasks_in_memory, 0);
    CHECK_EQ_INT(st.groups, 0);
    tenv_close(&t);
    free(g.json);
  }
}

/* Runs g on the store at path in a child process that kills itself at hook
 * `point` number `at` ("none": never); with submit, it first submits the
 * task. Returns the exit status, or -SIGNAL. */
static int gen_crash_run(const char *path, const gen *g, int submit, const char *point,
                         int64_t at) {
  return crash_run_graph(path, g->json, gen_start(g), NULL, point, at, submit, 3);
}

/* Each graph killed (SIGKILL) at a commit, before or after it, restarted and
 * killed twice more, then run to the end: the same result as one run, no
 * element lost or gathered twice, nothing left behind. */
TEST(generated_nested_graphs_killed_and_resumed_end_the_same) {
  uint64_t seed0 = gen_seed0();
  char *dir = br_test_tmpdir("gen_crash");
  int killed = 0;
  for (uint64_t seed = seed0; seed < seed0 + 40; seed++) {
    gen g;
    gen_make(&g, seed);
    for (int64_t at = 1; at <= 13; at += 6) {
      char path[480];
      snprintf(path, sizeof path, "%.400s/gen-%llu-%lld.db", dir, (unsigned long long)seed,
               (long long)at);
      const char *point = seed % 2 ? "commit-before" : "commit-after";
      int rc = gen_crash_run(path, &g, 1, point, at);
      killed += rc == -SIGKILL;
      for (int k = 0; k < 2 && rc == -SIGKILL; k++)
        rc = gen_crash_run(path, &g, 0, k ? "commit-after" : "commit-before", 1 + (at + k) % 3);
      if (rc == -SIGKILL) rc = gen_crash_run(path, &g, 0, "none", 0);
      if (rc != 0) {
        char msg[64];
        snprintf(msg, sizeof msg, "child exit %d", rc);
        gen_fail(&g, seed, "killed", msg);
      }
      tenv t;
      tenv_settled_at(&t, path);
      char *msg = gen_check(&g, &t);
      if (msg) {
        char what[64];
        snprintf(what, sizeof what, "killed at %s %lld", point, (long long)at);
        gen_fail(&g, seed, what, msg);
      }
      br_engine_free(t.eng);
      br_store_close(t.store);
    }
    free(g.json);
  }
  CHECK(killed >= 40); /* the kills happened: most graphs commit more than once */
  char cmd[700];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  CHECK(system(cmd) == 0);
  free(dir);
}

/* ---- wide ---- */

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A parent of 100,000 children: wait_children looked through its whole
 * group each time a child arrived (100,000^2 / 2 steps, about a minute
 * here); it decides from the parent and the group's size now. A split of
 * 10,000 gathered back beside it. */
TEST(a_parent_of_100000_children_and_a_split_of_10000) {
  tenv t;
  tenv_open(&t, "wide");
  tenv_graph(&t, "{\"nodes\": ["
                 "{\"name\": \"sp\", \"type\": \"spawn\", \"params\": {\"count\": 100000,"
                 " \"inherit\": false}},"
                 "{\"name\": \"wc\", \"type\": \"wait_children\", \"params\": {\"promote\": {"
                 " \"s\": {\"rule\": \"sum\", \"from\": \"index\"}, \"n\": \"count\"}}},"
                 "{\"name\": \"w\", \"type\": \"wedge\", \"params\": {\"wedges\": ["
                 " {\"attr\": \"i\", \"count\": 10000}]}},"
                 "{\"name\": \"g\", \"type\": \"gather_split\", \"params\": {\"promote\": {"
                 " \"si\": {\"rule\": \"sum\", \"from\": \"i\"}, \"is\": {\"rule\": \"append\","
                 " \"from\": \"i\"}}}},"
                 "{\"name\": \"end\", \"type\": \"null\"}],"
                 "\"wires\": [[\"sp.out\", \"wc.parents\"], [\"sp.children\", \"wc.children\"],"
                 " [\"wc.parents\", \"w\"], [\"w\", \"g\"], [\"g\", \"end\"]]}");
  tenv_submit(&t, "sp", "{\"n\": 1}");
  double t0 = now_s();
  tenv_run(&t);
  double secs = now_s() - t0;
  tlist l = tenv_tasks(&t, "end", BR_TASK_DONE);
  CHECK_EQ_INT(l.n, 1);
  CHECK_EQ_INT(json_integer_value(json_object_get(l.v[0].attrs, "s")), 4999950000LL);
  CHECK_EQ_INT(json_integer_value(json_object_get(l.v[0].attrs, "n")), 0); /* no child has n */
  CHECK_EQ_INT(json_integer_value(json_object_get(l.v[0].attrs, "si")), 49995000);
  CHECK_EQ_INT(json_array_size(json_object_get(l.v[0].attrs, "is")), 10000);
  tlist_free(&l);
  CHECK_EQ_INT(tenv_count(&t, "wc", BR_TASK_DONE), 100000);
  CHECK_EQ_INT(tenv_count(&t, "g", BR_TASK_DEAD), 9999);
  if (secs > 30) br_test_fail(__FILE__, __LINE__, "took %.1f s (a few without ASan)", secs);
  tenv_close(&t);
}

/* ---- why a task waits ---- */

/* A gather whose elements will not all come says which ones hold it and
 * why; so does a parent waiting for its children. Before, a blocked task
 * said nothing, and one element cancelled left the others blocked with no
 * word of it. */
TEST(a_blocked_task_says_what_it_waits_for) {
  tenv t;
  tenv_open(&t, "why_blocked");
  /* element 2 fails at 'bad' (no frame range), element 3 waits at 'w' for
   * ever and is cancelled there, element 4 is paused on its way */
  tenv_graph(&t, "{\"nodes\": [{\"name\": \"s\", \"type\": \"wedge\","
                 "\"params\": {\"wedges\": [{\"attr\": \"v\", \"values\": [1, 2, 3, 4]}]}},"
                 "{\"name\": \"sw\", \"type\": \"switch\","
                 " \"params\": {\"attr\": \"v\", \"cases\": [2, 3, 4]}},"
                 "{\"name\": \"bad\", \"type\": \"split_range\"},"
                 "{\"name\": \"w\", \"type\": \"script\", \"params\": {\"source\": \"wait(7)\"}},"
                 "{\"name\": \"late\", \"type\": \"null\"},"
                 "{\"name\": \"g\", \"type\": \"gather_split\"},"
                 "{\"name\": \"kids\", \"type\": \"spawn\", \"params\": {\"count\": 3}},"
                 "{\"name\": \"sw2\", \"type\": \"switch\","
                 " \"params\": {\"attr\": \"index\", \"cases\": [0]}},"
                 "{\"name\": \"bad2\", \"type\": \"split_range\"},"
                 "{\"name\": \"wc\", \"type\": \"wait_children\"}],"
                 "\"wires\": [[\"s\", \"sw\"], [\"sw.default\", \"g\"], [\"sw.2\", \"bad\"],"
                 " [\"sw.3\", \"w\"], [\"sw.4\", \"late\"], [\"late\", \"g\"],"
                 " [\"kids\", \"wc.parents\"], [\"kids.children\", \"sw2\"],"
                 " [\"sw2.0\", \"bad2\"], [\"sw2.default\", \"wc.children\"]]}");
  tenv_submit(&t, "s", "{}");
  tenv_run(&t);
  tlist w = tenv_tasks(&t, "w", BR_TASK_BLOCKED);
  CHECK_EQ_INT(w.n, 1);
  br_error err;
  char *why = br_engine_task_waiting(t.eng, w.v[0].id);
  CHECK_CONTAINS(why, "held at 'w' (script) with 0 other tasks under key 7");
  free(why);
  CHECK(br_engine_task_cancel(t.eng, w.v[0].id, &err) == BR_OK);
  tenv_run(&t);
  tlist bad = tenv_tasks(&t, "bad", BR_TASK_ERROR);
  tlist g = tenv_tasks(&t, "g", BR_TASK_BLOCKED);
  CHECK_EQ_INT(bad.n, 1);
  CHECK_EQ_INT(g.n, 2); /* 1 and 4 */
  why = br_engine_task_waiting(t.eng, g.v[0].id);
  CHECK_CONTAINSF(why, "waiting at 'g' for the elements of split %lld: 2 of 4 here",
                  (long long)g.v[0].split_id);
  CHECK_CONTAINSF(why, "these will not come unless retried: task %lld (error at 'bad'), "
                  "task %lld (cancelled at 'w')", (long long)bad.v[0].id, (long long)w.v[0].id);
  CHECK(strstr(why, "on their way") == NULL);
  free(why);
  /* a paused one on its way is counted as such, and says it is paused */
  CHECK(br_engine_task_retry(t.eng, w.v[0].id, &err) == BR_OK);
  CHECK(br_engine_task_pause(t.eng, w.v[0].id, true, &err) == BR_OK);
  why = br_engine_task_waiting(t.eng, w.v[0].id);
  CHECK_EQ_STR(why, "paused: it goes on at 'w' once resumed");
  free(why);
  why = br_engine_task_waiting(t.eng, g.v[1].id);
  CHECK_CONTAINS(why, "2 of 4 here; these will not come unless retried: task");
  CHECK_CONTAINS(why, "(error at 'bad'); 1 on their way");
  free(why);
  /* not waiting: nothing to say */
  CHECK(br_engine_task_waiting(t.eng, bad.v[0].id) == NULL);
  CHECK(br_engine_task_waiting(t.eng, 999999) == NULL);
  /* a parent waiting for children, one of which failed on its way */
  int64_t parent = tenv_submit(&t, "kids", "{}");
  tenv_run(&t);
  tlist bad2 = tenv_tasks(&t, "bad2", BR_TASK_ERROR);
  CHECK_EQ_INT(bad2.n, 1);
  why = br_engine_task_waiting(t.eng, parent);
  CHECK_CONTAINSF(why, "waiting at 'wc' for the children of task %lld: 2 of 3 here; these "
                  "will not come unless retried: task %lld (error at 'bad2')", (long long)parent,
                  (long long)bad2.v[0].id);
  CHECK(strstr(why, "on their way") == NULL);
  free(why);
  tlist_free(&w);
  tlist_free(&bad);
  tlist_free(&g);
  tlist_free(&bad2);
  tenv_close(&t);
}
