/* Store registry and the generic wrappers (see include/braid/store.h). */
#include <braid/store.h>

#include <stdlib.h>
#include <string.h>

extern const br_store_ops br_store_sqlite, br_store_postgres;

static const br_store_ops *const stores[] = {&br_store_sqlite, &br_store_postgres, NULL};

int br_store_open(const char *uri, int flags, br_store **out, br_error *err) {
  *out = NULL;
  br_error_clear(err); /* callers format it whole: no position left from before */
  if (!uri || !*uri) return br_error_set(err, BR_EINVAL, "no store given");
  const br_store_ops *ops = stores[0]; /* a plain path is SQLite */
  if (strncmp(uri, "postgres://", 11) == 0 || strncmp(uri, "postgresql://", 13) == 0) {
    ops = NULL;
    for (const br_store_ops *const *s = stores; *s; s++)
      if (strcmp((*s)->name, "postgres") == 0) ops = *s;
    if (!ops) return br_error_set(err, BR_EINVAL, "this braid has no PostgreSQL store");
  } else if (strncmp(uri, "sqlite:", 7) == 0) {
    uri += 7;
  }
  int rc = ops->open(uri, flags, out, err);
  if (rc == BR_OK && !(*out)->uri) (*out)->uri = strdup(uri);
  return rc;
}

bool br_store_lost(br_store *s) { return s && s->ops->lost && s->ops->lost(s); }

void br_store_set_log(br_store *s, br_warn_fn *fn, void *ud) {
  s->log = fn;
  s->log_ud = ud;
}

void br_store_set_stop(br_store *s, volatile sig_atomic_t *flag) { s->stop = flag; }

void br_store_close(br_store *s) {
  if (!s) return;
  char *uri = s->uri;
  s->ops->close(s);
  free(uri);
}

void br_graph_row_free(br_graph_row *g) {
  if (!g) return;
  free(g->name);
  free(g->json);
  memset(g, 0, sizeof *g);
}

int br_store_task_get(br_store *s, int64_t id, br_task_info *out, br_error *err) {
  return s->ops->task_get(s, id, out, err);
}

int br_store_task_query(br_store *s, const br_task_filter *f, br_task_cb cb, void *ud,
                        br_error *err) {
  return s->ops->task_query(s, f, cb, ud, err);
}

int br_store_task_count(br_store *s, const br_task_filter *f, int64_t counts[BR_TASK_NSTATES],
                        br_error *err) {
  return s->ops->task_count(s, f, counts, err);
}

int br_store_task_count_nodes(br_store *s, int64_t graph_id,
                              int (*cb)(void *ud, const char *node, const int64_t *counts),
                              void *ud, br_error *err) {
  return s->ops->task_count_nodes(s, graph_id, cb, ud, err);
}

int br_store_inv_query(br_store *s, int64_t task_id, int (*cb)(void *ud, br_inv_info *i),
                       void *ud, br_error *err) {
  return s->ops->inv_query(s, task_id, cb, ud, err);
}

void br_inv_info_free(br_inv_info *i) {
  if (!i) return;
  for (size_t k = 0; k < sizeof i->buf / sizeof i->buf[0]; k++) free(i->buf[k]);
  memset(i, 0, sizeof *i);
}

json_t *br_inv_row_json(const br_inv_row *r) {
  json_t *j = json_pack("{sIsIsssisssisisfsIsIsI}", "id", (json_int_t)r->id, "task",
                        (json_int_t)r->task_id, "node", r->node ? r->node : "", "attempt",
                        r->attempt, "status", r->status ? r->status : "", "exit_code", r->exit_code,
                        "signal", r->term_signal, "runtime", r->runtime, "peak_rss_kb",
                        (json_int_t)r->peak_rss_kb, "started_ms", (json_int_t)r->started_ms,
                        "ended_ms", (json_int_t)r->ended_ms);
  if (!j) return NULL;
  if (r->worker && *r->worker) json_object_set_new(j, "worker", json_string(r->worker));
  if (r->log_path && *r->log_path) json_object_set_new(j, "log", json_string(r->log_path));
  if (r->error && *r->error) json_object_set_new(j, "error", json_string(r->error));
  if (r->log_tail && *r->log_tail) {
    json_t *t = json_string(r->log_tail); /* NULL when the tail is not UTF-8 */
    if (t) json_object_set_new(j, "log_tail", t);
  }
  return j;
}
