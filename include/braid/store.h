/* The store: where tasks, splits and graphs are durable. An ops table per
 * backend (SQLite now, PostgreSQL later), chosen by the URI:
 * "postgres://..." or a file path (SQLite). The store knows rows, not node
 * semantics. Writes happen inside begin()/commit() so that the engine can
 * commit many transitions at once (group commit). */
#ifndef BRAID_STORE_H
#define BRAID_STORE_H

#include <braid/error.h>
#include <braid/task.h>
#include <jansson.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct br_store br_store;

/* br_store_open's flags. BR_STORE_EXISTING: the store must be there
 * already; one that is not (no file, an empty one, a database without
 * braid's tables) is BR_ENOTFOUND and nothing is made, where a read-write
 * open would make it (and a read-only one refuses it with another code). */
enum { BR_STORE_READONLY = 1, BR_STORE_EXISTING = 2 };

/* Which tasks a query returns. Zero/NULL fields match everything. */
typedef struct br_task_filter {
  int64_t graph_id;
  const char *node;
  int state;        /* -1 = any */
  int64_t parent;
  int64_t group_id;
  int64_t after_id; /* paging: ids greater than this */
  int limit;        /* 0 = no limit */
} br_task_filter;

#define BR_TASK_FILTER_ALL ((br_task_filter){.state = -1})

/* Called once per row; takes ownership of *t (free with br_task_info_free).
 * Return non-zero to stop. */
typedef int (*br_task_cb)(void *ud, br_task_info *t);

/* One attempt at running a task's work (an invocation), as stored. */
typedef struct br_inv_row {
  int64_t id;
  int64_t task_id;
  const char *node;
  int32_t attempt;
  const char *status;   /* running, ok, failed, retry, timeout, cancelled, lost, spawn_error */
  int exit_code;
  int term_signal;
  double runtime;
  int64_t peak_rss_kb;
  const char *log_path;
  const char *log_tail;
  const char *error;
  const char *worker;   /* where it ran ("local", an agent's host id) */
  int64_t started_ms, ended_ms;
} br_inv_row;

/* Owned copy of an invocation row, from queries (free with br_inv_row_free).
 * Each of row's strings is owned by its own slot of buf, named below: code
 * that replaces one frees that slot and fills it again. */
enum {
  BR_INV_NODE,
  BR_INV_STATUS,
  BR_INV_LOG_PATH,
  BR_INV_LOG_TAIL,
  BR_INV_ERROR,
  BR_INV_WORKER,
  BR_INV_NSTR
};
typedef struct br_inv_info {
  br_inv_row row;
  char *buf[BR_INV_NSTR]; /* owned strings behind row's pointers */
} br_inv_info;
void br_inv_info_free(br_inv_info *i);
/* An invocation row as JSON (new reference). */
json_t *br_inv_row_json(const br_inv_row *r);

typedef struct br_graph_row {
  int64_t id;
  char *name;
  int version;
  char *json;
  int64_t created_ms;
} br_graph_row;

typedef struct br_store_ops {
  const char *name;
  int (*open)(const char *uri, int flags, br_store **out, br_error *err);
  void (*close)(br_store *s);

  int (*begin)(br_store *s, br_error *err);
  int (*commit)(br_store *s, br_error *err);
  void (*rollback)(br_store *s);

  /* Writes (inside begin/commit). */
  int (*task_insert)(br_store *s, const br_task_info *t, br_error *err);
  /* Updates every column; attrs only when with_attrs. */
  int (*task_update)(br_store *s, const br_task_info *t, bool with_attrs, br_error *err);
  int (*task_add_live_children)(br_store *s, int64_t id, int delta, br_error *err);
  int (*split_put)(br_store *s, const br_split *sp, br_error *err);
  /* Stores a graph as a new version of its name; *id is set. */
  int (*graph_put)(br_store *s, const char *name, const char *json, int64_t *id, br_error *err);
  /* Inserts or replaces an invocation row. */
  int (*inv_put)(br_store *s, const br_inv_row *r, br_error *err);
  /* Invocations of a task, oldest first (task_id 0: all). cb takes ownership. */
  int (*inv_query)(br_store *s, int64_t task_id, int (*cb)(void *ud, br_inv_info *i), void *ud,
                   br_error *err);

  /* Reads. */
  int (*load_active)(br_store *s, br_task_cb cb, void *ud, br_error *err);
  int (*task_get)(br_store *s, int64_t id, br_task_info *out, br_error *err);
  int (*task_query)(br_store *s, const br_task_filter *f, br_task_cb cb, void *ud, br_error *err);
  /* counts[state] of tasks matching f (f->state ignored). */
  int (*task_count)(br_store *s, const br_task_filter *f, int64_t counts[BR_TASK_NSTATES],
                    br_error *err);
  /* Counts by node and state, one callback per node (uses the node/state
   * index; no row is read). */
  int (*task_count_nodes)(br_store *s, int64_t graph_id,
                          int (*cb)(void *ud, const char *node, const int64_t *counts), void *ud,
                          br_error *err);
  int (*split_get)(br_store *s, int64_t id, br_split *out, br_error *err);
  /* Graph by id (name NULL) or latest version of a name (id 0). */
  int (*graph_get)(br_store *s, int64_t id, const char *name, br_graph_row *out, br_error *err);
  int (*graph_list)(br_store *s, int (*cb)(void *ud, br_graph_row *g), void *ud, br_error *err);
  /* The largest id used by tasks and splits (they share one sequence). */
  int (*max_id)(br_store *s, int64_t *out, br_error *err);
  /* The store cannot be used by this process any more (PostgreSQL: its
   * connection, and with it the owner lock, was lost): the engine stops so
   * that a new process picks up from what was committed. May be NULL. */
  bool (*lost)(br_store *s);
} br_store_ops;

struct br_store {
  const br_store_ops *ops;
  char *uri;
  br_warn_fn *log; /* see br_store_set_log */
  void *log_ud;
  volatile sig_atomic_t *stop; /* see br_store_set_stop */
};

/* Opens the store named by uri (a path for SQLite, postgres://... ). */
int br_store_open(const char *uri, int flags, br_store **out, br_error *err);
void br_store_close(br_store *s);
/* See br_store_ops.lost; false when the back end has no such state. */
bool br_store_lost(br_store *s);
/* Where the store tells what an operator should know while it goes on by
 * itself (PostgreSQL: a statement waiting for another session's lock, who
 * holds it, and each retry after giving up waiting). fn may be NULL. */
void br_store_set_log(br_store *s, br_warn_fn *fn, void *ud);
/* A flag that a signal handler sets when the process is asked to stop.
 * A write that has waited for another session's lock for a second or more
 * then gives up (PostgreSQL: the statement is cancelled and the batch rolled
 * back), and so does a pause before a retry, so that a stop is not held up
 * by a lock that may never be let go. flag may be NULL (never). */
void br_store_set_stop(br_store *s, volatile sig_atomic_t *flag);
void br_graph_row_free(br_graph_row *g);

/* Thin wrappers over the ops, for tools. */
int br_store_task_get(br_store *s, int64_t id, br_task_info *out, br_error *err);
int br_store_task_query(br_store *s, const br_task_filter *f, br_task_cb cb, void *ud,
                        br_error *err);
int br_store_task_count(br_store *s, const br_task_filter *f, int64_t counts[BR_TASK_NSTATES],
                        br_error *err);

int br_store_inv_query(br_store *s, int64_t task_id, int (*cb)(void *ud, br_inv_info *i),
                       void *ud, br_error *err);
int br_store_task_count_nodes(br_store *s, int64_t graph_id,
                              int (*cb)(void *ud, const char *node, const int64_t *counts),
                              void *ud, br_error *err);

#ifdef __cplusplus
}
#endif
#endif
