/* The engine: the scheduler core. One thread owns it, its store's write
 * connection and all live task state. It is event driven: tasks ready for
 * their node wait in an in-memory priority queue, tasks held by waiters sit
 * in per-(node, key) groups that are re-examined only when something changes
 * them (an arrival, a death), and finished tasks leave memory once their last
 * transition is committed. Transitions are committed in batches (group
 * commit); nothing outside the engine sees a transition before its commit.
 *
 * The same engine serves `braid run` (embedded) and `braid server` (farm). */
#ifndef BRAID_ENGINE_H
#define BRAID_ENGINE_H

#include <braid/error.h>
#include <braid/graph.h>
#include <braid/store.h>
#include <braid/task.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct br_engine br_engine;

typedef struct br_engine_opts {
  int batch_max;    /* transitions per commit at most (0: 4096) */
  int batch_ms;     /* a busy engine commits at least this often (0: 50 ms) */
  /* Nodes a task may pass without running a job or waiting in between; past
   * it the task is in error as an endless loop, its message naming the nodes
   * it goes round (0: 100000). Bounded loops of instant nodes fit below. */
  int64_t max_steps;
  uv_loop_t *loop;  /* NULL: the engine makes its own */
  /* Test hook, called at named points ("commit-before", "commit-after") with
   * a running count; crash tests kill the process from it. */
  void (*hook)(void *ud, const char *point, int64_t n);
  void *hook_ud;
} br_engine_opts;

typedef struct br_submit_opts {
  const char *name;     /* task name; NULL: the graph's name */
  int32_t priority;     /* higher runs first */
  const char *port;     /* input port name; NULL: the first */
  int64_t group_id;     /* 0: a new group (a submission) */
} br_submit_opts;

typedef struct br_engine_stats {
  uint64_t transitions;   /* task state changes, since open */
  uint64_t commits;       /* store transactions */
  uint64_t rows_written;  /* task and split rows written */
  size_t tasks_in_memory;
  size_t peak_tasks_in_memory;
  size_t groups;          /* waiter groups held */
  uint64_t invocations_started, invocations_done; /* done: every ended one, cancelled too */
  uint64_t invocations_cancelled;                  /* of those done, ended by a cancel */
} br_engine_stats;

/* Opens an engine on a store: reloads the graphs and every unfinished task,
 * so it continues exactly where the last one stopped. The store stays the
 * caller's (close it after br_engine_free). */
br_engine *br_engine_open(br_store *store, const br_engine_opts *opts, br_error *err);
void br_engine_free(br_engine *e);

/* Registers a graph (the engine takes ownership of g). When the store's
 * latest version of that name has the same content, it is reused; otherwise
 * a new version is stored. Tasks keep the version they were submitted to. */
int br_engine_add_graph(br_engine *e, br_graph *g, int64_t *graph_id, br_error *err);
/* The graph of an id (loaded from the store if needed), or NULL. */
const br_graph *br_engine_graph(br_engine *e, int64_t graph_id);

/* Submits one task with these attributes (borrowed; copied) to a node. */
int br_engine_submit(br_engine *e, int64_t graph_id, const char *node, json_t *attrs,
                     const br_submit_opts *opts, int64_t *task_id, br_error *err);

/* Runs until nothing can move: no task ready, no invocation running.
 * Returns BR_OK, or an error when the store fails (the engine then stops;
 * reopen it to continue from the last commit). */
int br_engine_run(br_engine *e, br_error *err);

/* Gives the engine an executor (made from ops with cfg; cfg->loop is the
 * engine's). Without one, nodes that run jobs put their tasks in error. */
struct br_executor_ops;
struct br_exec_config;
int br_engine_set_executor(br_engine *e, const struct br_executor_ops *ops,
                           const struct br_exec_config *cfg, br_error *err);
/* Where invocation logs go: DIR/TASK/INVOCATION.log (default ./braid-logs). */
void br_engine_set_log_dir(br_engine *e, const char *dir);
/* Stops: no more dispatching or processing; running jobs are cancelled
 * (SIGTERM, then SIGKILL after the grace period; hard: SIGKILL now) and
 * recorded as cancelled; their tasks run again when the store is reopened.
 * br_engine_run then returns BR_ECANCEL. Safe to call from a callback on the
 * engine's loop (a signal handler made with uv_signal_t). */
void br_engine_stop(br_engine *e, bool hard);

/* Runs fn(e, ud) on the engine's thread, soon (wakes the loop). The only
 * engine call that is safe from any thread: HTTP handlers and other threads
 * hand work to the engine this way and never touch its state. */
int br_engine_post(br_engine *e, void (*fn)(br_engine *e, void *ud), void *ud);

/* Like br_engine_run, but keeps running when idle, waiting for posted work
 * and executor events, until br_engine_stop. For `braid server`. */
int br_engine_serve(br_engine *e, br_error *err);

/* Operations on one task, on the engine's thread (use br_engine_post from
 * others). They take effect at once in memory and are committed with the
 * next batch. retry, set_attrs and move also reach finished tasks (loaded
 * from the store). Attributes set to null are deleted. */
int br_engine_task_cancel(br_engine *e, int64_t id, br_error *err);
int br_engine_task_retry(br_engine *e, int64_t id, br_error *err);
int br_engine_task_pause(br_engine *e, int64_t id, bool paused, br_error *err);
int br_engine_task_set_priority(br_engine *e, int64_t id, int32_t priority, br_error *err);
int br_engine_task_set_attrs(br_engine *e, int64_t id, json_t *attrs, br_error *err);
int br_engine_task_move(br_engine *e, int64_t id, const char *node, br_error *err);

/* Why a task in memory that is queued or blocked has not gone on yet: a
 * sentence for people (caller frees), or NULL when it is not waiting (or
 * not in memory). A queued one's executor says what holds it (see
 * br_executor_ops.why); a blocked one says what its waiter node waits for,
 * naming the tasks it waits on that will not come by themselves (cancelled
 * or in error). On the engine's thread. */
char *br_engine_task_waiting(br_engine *e, int64_t id);

/* One operation on every task of a submission (group) that is in memory,
 * which is every task not finished: cancel (a running job is killed; tasks
 * in error too), pause, resume, or retry (those in error or cancelled).
 * Returns how many tasks it changed. */
typedef enum br_group_op {
  BR_GROUP_CANCEL,
  BR_GROUP_PAUSE,
  BR_GROUP_RESUME,
  BR_GROUP_RETRY,
} br_group_op;
size_t br_engine_group_op(br_engine *e, int64_t group_id, br_group_op op);

/* Puts every task in error back to waiting at its node; returns how many. */
size_t br_engine_retry_failed(br_engine *e);

/* Called on the engine thread after each commit, once per task written in
 * it (the snapshot is borrowed for the call). For event streams. */
void br_engine_set_observer(br_engine *e, void (*fn)(void *ud, const br_task_info *t), void *ud);

/* Runs fn(e, ud, committed) once, on the engine thread, after the next
 * commit (at once when nothing is pending): answers that must not go out
 * before the change they report is durable. committed is false when the
 * engine stopped before a commit took the change (the commit failed, or the
 * engine ended first): the change was not made. Engine thread only. */
int br_engine_on_commit(br_engine *e, void (*fn)(br_engine *e, void *ud, bool committed),
                        void *ud);

/* Commits whatever is pending. */
int br_engine_flush(br_engine *e, br_error *err);

void br_engine_get_stats(const br_engine *e, br_engine_stats *out);
br_store *br_engine_store(br_engine *e);
/* The executor and its ops (NULL without one). */
struct br_executor *br_engine_executor(br_engine *e, const struct br_executor_ops **ops);
uv_loop_t *br_engine_loop(br_engine *e);

/* Counts of live (in-memory) tasks at a node by state; for done and dead,
 * the tasks that finished there since the engine opened. */
int br_engine_count_live(br_engine *e, int64_t graph_id, const char *node,
                         int64_t counts[BR_TASK_NSTATES]);

#ifdef __cplusplus
}
#endif
#endif
