/* Helpers for tests that run graphs on a real SQLite store. */
#ifndef BR_TEST_ENGINE_UTIL_H
#define BR_TEST_ENGINE_UTIL_H

#include <braid/engine.h>
#include <braid/graph.h>
#include <braid/store.h>

#include "harness.h"

typedef struct tenv {
  char *dir;
  char store_path[512];
  br_store *store;
  br_engine *eng;
  int64_t graph_id;
} tenv;

static inline void tenv_open(tenv *t, const char *name) {
  memset(t, 0, sizeof *t);
  t->dir = br_test_tmpdir(name);
  snprintf(t->store_path, sizeof t->store_path, "%s/braid.db", t->dir);
  br_error err;
  CHECK(br_store_open(t->store_path, 0, &t->store, &err) == BR_OK);
  t->eng = br_engine_open(t->store, NULL, &err);
  CHECK(t->eng != NULL);
}

static inline void tenv_reopen(tenv *t) {
  br_error err;
  br_engine_free(t->eng);
  br_store_close(t->store);
  CHECK(br_store_open(t->store_path, 0, &t->store, &err) == BR_OK);
  t->eng = br_engine_open(t->store, NULL, &err);
  CHECK(t->eng != NULL);
}

static inline void tenv_graph(tenv *t, const char *json) {
  br_error err;
  br_graph *g = br_graph_load_string(json, "<test>", &err);
  if (!g) {
    char buf[2048];
    br_test_fail(__FILE__, __LINE__, "graph: %s", br_error_format(&err, buf, sizeof buf));
  }
  CHECK(br_engine_add_graph(t->eng, g, &t->graph_id, &err) == BR_OK);
}

static inline int64_t tenv_submit(tenv *t, const char *node, const char *attrs_json) {
  br_error err;
  json_error_t jerr;
  json_t *a = attrs_json ? json_loads(attrs_json, 0, &jerr) : NULL;
  int64_t id = 0;
  CHECK(br_engine_submit(t->eng, t->graph_id, node, a, NULL, &id, &err) == BR_OK);
  json_decref(a);
  return id;
}

static inline void tenv_run(tenv *t) {
  br_error err;
  int rc = br_engine_run(t->eng, &err);
  if (rc) {
    char buf[2048];
    br_test_fail(__FILE__, __LINE__, "run: %s", br_error_format(&err, buf, sizeof buf));
  }
}

/* An engine on the store at path, made elsewhere (a crashed child's, run
 * to its end): run again, it finds nothing left to do. */
static inline void tenv_settled_at(tenv *t, const char *path) {
  memset(t, 0, sizeof *t);
  snprintf(t->store_path, sizeof t->store_path, "%s", path);
  br_error err;
  CHECK(br_store_open(path, 0, &t->store, &err) == BR_OK);
  t->eng = br_engine_open(t->store, NULL, &err);
  CHECK(t->eng != NULL);
  tenv_run(t);
  br_engine_stats st;
  br_engine_get_stats(t->eng, &st);
  CHECK_EQ_INT(st.transitions, 0);
}

static inline void tenv_close(tenv *t) {
  br_engine_free(t->eng);
  br_store_close(t->store);
  free(t->dir); /* the harness removes it */
}

typedef struct tlist {
  br_task_info *v;
  size_t n, cap;
} tlist;

static inline int tlist_cb(void *ud, br_task_info *ti) {
  tlist *l = ud;
  if (l->n == l->cap) {
    l->cap = l->cap ? l->cap * 2 : 16;
    l->v = realloc(l->v, l->cap * sizeof *l->v);
  }
  l->v[l->n++] = *ti;
  free(ti);
  return 0;
}

/* Tasks at `node` (NULL: any) in `state` (-1: any), by id. */
static inline tlist tenv_tasks(tenv *t, const char *node, int state) {
  tlist l = {0};
  br_error err;
  br_engine_flush(t->eng, &err);
  br_task_filter f = BR_TASK_FILTER_ALL;
  f.node = node;
  f.state = state;
  CHECK(br_store_task_query(t->store, &f, tlist_cb, &l, &err) == BR_OK);
  return l;
}

static inline void tlist_free(tlist *l) {
  for (size_t i = 0; i < l->n; i++) br_task_info_free(&l->v[i]);
  free(l->v);
}

static inline size_t tenv_count(tenv *t, const char *node, int state) {
  tlist l = tenv_tasks(t, node, state);
  size_t n = l.n;
  tlist_free(&l);
  return n;
}

/* The attribute `name` of the only task at node in state, as compact JSON
 * (caller frees). */
static inline char *tenv_attr(tenv *t, const char *node, int state, const char *name) {
  tlist l = tenv_tasks(t, node, state);
  CHECK_EQ_INT(l.n, 1);
  json_t *v = json_object_get(l.v[0].attrs, name);
  char *s = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : strdup("(none)");
  tlist_free(&l);
  return s;
}

/* ---- the stand-in scenario and crash runs, shared by the engine and store
 * tests ---- */

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static inline char *read_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) br_test_fail(__FILE__, __LINE__, "cannot open %s", path);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = calloc(1, (size_t)n + 1);
  if (fread(buf, 1, (size_t)n, f) != (size_t)n) abort();
  fclose(f);
  return buf;
}

/* examples/standin.json (caller frees). */
static inline char *standin_text(void) {
  const char *src = getenv("BRAID_SOURCE_DIR");
  char path[1024];
  snprintf(path, sizeof path, "%s/examples/standin.json", src ? src : "..");
  return read_file(path);
}

typedef struct crash_plan {
  const char *point;
  int64_t at;
} crash_plan;

static inline void crash_hook(void *ud, const char *point, int64_t n) {
  crash_plan *p = ud;
  if (strcmp(point, p->point) == 0 && n == p->at) kill(getpid(), SIGKILL);
}

/* Runs the graph (JSON text) on the store at uri (a path or a postgres
 * URI) in a child process that kills itself at hook `point` number `at`;
 * with submit, it first submits a task at node start with attrs (JSON
 * text, or NULL). Returns the exit status, or -SIGNAL. */
static inline int crash_run_graph(const char *uri, const char *graph, const char *start,
                                  const char *attrs, const char *point, int64_t at, int submit,
                                  int batch) {
  pid_t pid = fork();
  if (pid == 0) {
    br_error err;
    br_store *s;
    if (br_store_open(uri, 0, &s, &err)) _exit(3);
    crash_plan plan = {point, at};
    br_engine_opts o = {.batch_max = batch, .hook = crash_hook, .hook_ud = &plan};
    br_engine *e = br_engine_open(s, &o, &err);
    if (!e) _exit(4);
    br_graph *g = br_graph_load_string(graph, "crash-run", &err);
    int64_t gid;
    if (!g || br_engine_add_graph(e, g, &gid, &err)) _exit(5);
    if (submit) {
      json_t *a = attrs ? json_loads(attrs, 0, NULL) : NULL;
      int64_t id;
      if (br_engine_submit(e, gid, start, a, NULL, &id, &err)) _exit(6);
      json_decref(a);
    }
    if (br_engine_run(e, &err)) _exit(7);
    br_engine_free(e);
    br_store_close(s);
    _exit(0);
  }
  int st;
  waitpid(pid, &st, 0);
  return WIFSIGNALED(st) ? -WTERMSIG(st) : WEXITSTATUS(st);
}

/* crash_run_graph with the stand-in, its root task frames 1-100. */
static inline int crash_run(const char *uri, const char *point, int64_t at, int submit, int batch) {
  char *text = standin_text();
  int rc = crash_run_graph(uri, text, "start", "{\"frame_start\": 1, \"frame_end\": 100}", point,
                           at, submit, batch);
  free(text);
  return rc;
}

#endif
