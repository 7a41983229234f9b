/* A fixture for executor tests: a real libuv loop, the local executor, and a
 * record of every event it reported. Header-only (static inline) so each
 * test executable includes what it uses. */
#ifndef BR_TEST_EXEC_FIXTURE_H
#define BR_TEST_EXEC_FIXTURE_H

#include "harness.h"

#include <braid/exec.h>
#include <braid/runtime.h>
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define FX_MAX 1024

typedef struct fx_rec {
  int64_t id, task_id;
  br_inv_status status;
  int exit_code, term_signal;
  double runtime, queued;
  int64_t peak_rss_kb;
  char *log_tail;
  char *error;
  json_t *set_attrs;
  double at; /* seconds since fx_init */
  int spawns_before; /* spawns reported for any invocation before this on_done */
} fx_rec;

typedef struct fx {
  uv_loop_t loop;
  const br_executor_ops *ops;
  br_executor *ex;
  char *dir;
  int n_done;
  fx_rec done[FX_MAX];
  int n_start;
  int64_t starts[FX_MAX];
  double start_at[FX_MAX];
  json_t *spawns; /* [{"inv":..,"task":..,"name":..,"attrs":..}] */
  int n_prog;
  double prog[FX_MAX];
  uint64_t t0;
  uv_timer_t tick;
  void (*on_tick)(struct fx *f);
  void *user;
} fx;

static inline double fx_now(fx *f) { return (double)(uv_hrtime() - f->t0) / 1e9; }

static inline void fx_on_spawn(void *ud, int64_t inv, int64_t task, const char *name,
                               json_t *attrs) {
  fx *f = ud;
  json_array_append_new(f->spawns, json_pack("{s:I, s:I, s:s?, s:o}", "inv", (json_int_t)inv,
                                             "task", (json_int_t)task, "name", name, "attrs",
                                             attrs));
}

static inline void fx_on_progress(void *ud, int64_t inv, int64_t task, double p) {
  fx *f = ud;
  if (f->n_prog < FX_MAX) f->prog[f->n_prog++] = p;
}

static inline void fx_on_start(void *ud, int64_t inv, int64_t task) {
  fx *f = ud;
  if (f->n_start < FX_MAX) {
    f->start_at[f->n_start] = fx_now(f);
    f->starts[f->n_start++] = inv;
  }
}

static inline void fx_on_done(void *ud, const br_inv_result *r) {
  fx *f = ud;
  if (f->n_done >= FX_MAX) return;
  fx_rec *d = &f->done[f->n_done++];
  d->id = r->invocation_id;
  d->task_id = r->task_id;
  d->status = r->status;
  d->exit_code = r->exit_code;
  d->term_signal = r->term_signal;
  d->runtime = r->runtime;
  d->queued = r->queued;
  d->peak_rss_kb = r->peak_rss_kb;
  d->log_tail = r->log_tail ? strdup(r->log_tail) : NULL;
  d->error = r->error ? strdup(r->error) : NULL;
  d->set_attrs = json_incref(r->set_attrs);
  d->at = fx_now(f);
  d->spawns_before = (int)json_array_size(f->spawns);
}

static inline void fx_tick_cb(uv_timer_t *t) {
  fx *f = t->data;
  if (f->on_tick) f->on_tick(f);
}

/* slots, grace: as in br_exec_config. Each test gets 60 s at most. */
static inline void fx_init(fx *f, const char *name, int slots, double grace) {
  memset(f, 0, sizeof *f);
  alarm(90);
  f->t0 = uv_hrtime();
  CHECK_EQ_INT(uv_loop_init(&f->loop), 0);
  f->dir = br_test_tmpdir(name);
  f->spawns = json_array();
  f->ops = br_executor_find("local");
  CHECK(f->ops != NULL);
  char *rt = NULL;
  CHECK(asprintf(&rt, "%s/runtime", f->dir) > 0);
  br_exec_config cfg = {.loop = &f->loop, .slots = slots, .runtime_dir = rt,
                        .braid_exe = getenv("BRAID_BIN"), .grace = grace};
  br_exec_events ev = {.ud = f, .on_spawn = fx_on_spawn, .on_progress = fx_on_progress,
                       .on_start = fx_on_start, .on_done = fx_on_done};
  br_error err;
  br_error_clear(&err);
  int rc = f->ops->create(&cfg, &ev, &f->ex, &err);
  if (rc != BR_OK) br_test_fail(__FILE__, __LINE__, "create: %s", err.msg);
  free(rt);
  uv_timer_init(&f->loop, &f->tick);
  f->tick.data = f;
}

/* Calls fn every 20 ms while the loop runs (the test polls; braid does not). */
static inline void fx_every(fx *f, void (*fn)(fx *f)) {
  f->on_tick = fn;
  uv_timer_start(&f->tick, fx_tick_cb, 20, 20);
  uv_unref((uv_handle_t *)&f->tick);
}

static inline void fx_run(fx *f) { uv_run(&f->loop, UV_RUN_DEFAULT); }

static inline void fx_submit(fx *f, const br_invocation *inv) {
  br_error err;
  br_error_clear(&err);
  int rc = f->ops->submit(f->ex, inv, &err);
  if (rc != BR_OK) br_test_fail(__FILE__, __LINE__, "submit: %s", err.msg);
}

/* sh -c SCRIPT as invocation id (task id = id + 1000), its log under dir. */
typedef struct fx_inv {
  br_invocation inv;
  char *argv[4];
  char *log;
} fx_inv;

static inline void fx_sh(fx *f, fx_inv *x, int64_t id, const char *script) {
  memset(x, 0, sizeof *x);
  x->argv[0] = (char *)"sh";
  x->argv[1] = (char *)"-c";
  x->argv[2] = (char *)script;
  CHECK(asprintf(&x->log, "%s/logs/%lld.log", f->dir, (long long)id) > 0);
  x->inv.id = id;
  x->inv.task_id = id + 1000;
  x->inv.node = "test";
  x->inv.argv = x->argv;
  x->inv.cwd = f->dir;
  x->inv.log_path = x->log;
}

static inline fx_rec *fx_result(fx *f, int64_t id) {
  for (int i = 0; i < f->n_done; i++)
    if (f->done[i].id == id) return &f->done[i];
  br_test_fail(__FILE__, __LINE__, "no result for invocation %lld", (long long)id);
}

static inline char *fx_path(fx *f, const char *name) {
  char *p = NULL;
  if (asprintf(&p, "%s/%s", f->dir, name) < 0) abort();
  return p;
}

/* The whole file as a string (caller frees), or NULL. */
static inline char *fx_read(const char *path) {
  FILE *fp = fopen(path, "rb");
  if (!fp) return NULL;
  size_t cap = 4096, n = 0;
  char *buf = malloc(cap);
  size_t got;
  while ((got = fread(buf + n, 1, cap - n - 1, fp)) > 0) {
    n += got;
    if (cap - n < 2) buf = realloc(buf, cap *= 2);
  }
  buf[n] = 0;
  fclose(fp);
  return buf;
}

static inline bool fx_exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

static inline void fx_fini(fx *f) {
  f->ops->destroy(f->ex);
  uv_close((uv_handle_t *)&f->tick, NULL);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(uv_loop_close(&f->loop), 0);
  for (int i = 0; i < f->n_done; i++) {
    free(f->done[i].log_tail);
    free(f->done[i].error);
    json_decref(f->done[i].set_attrs);
  }
  json_decref(f->spawns);
  free(f->dir); /* the harness removes it */
}

static inline void fx_inv_free(fx_inv *x) { free(x->log); }

#endif
