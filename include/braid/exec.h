/* Executors run invocations and report results; they never touch the store.
 * An executor is an ops table (local, agent, slurm) listed in one registry.
 *
 * Threading: an executor lives on the engine's libuv loop (cfg->loop). All
 * event callbacks are called on that loop's thread. submit() copies what it
 * needs from the invocation. */
#ifndef BRAID_EXEC_H
#define BRAID_EXEC_H

#include <braid/error.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One attempt at running a node's work for a task. */
typedef struct br_invocation {
  int64_t id;       /* unique per attempt */
  int64_t task_id;
  const char *node; /* node name, for logs and errors */
  char **argv;      /* NULL-terminated; argv[0] looked up in PATH */
  char **env;       /* extra "NAME=value" entries, NULL-terminated; may be NULL */
  const char *cwd;  /* NULL: inherit */
  json_t *attrs;    /* the task's attributes (borrowed): BRAID_ATTR_* and the attrs file */
  double timeout;   /* seconds; 0 = none */
  const int *good_codes; int n_good;   /* exit codes meaning success; none = {0} */
  const int *retry_codes; int n_retry; /* exit codes meaning "try again" */
  const char *progress_regex; /* POSIX extended regex; first group is a number
                                 (0-1, or 0-100 when followed by %) ; may be NULL */
  int cores;        /* resources, for slot accounting; 0 = 1 */
  int64_t memory_mb;
  const char *log_path; /* stdout and stderr go here (appended; local creates the file at
                           the first output, so a silent job leaves none); may be NULL */
  /* Farm scheduling (executors that place work on workers; local ignores them). */
  int gpus;            /* GPUs the job needs */
  char **tags;         /* worker tags it needs (all of them), NULL-terminated; may be NULL */
  char **limits;       /* named farm-wide limits it takes one token of; may be NULL */
  int node_limit;      /* at most this many of its node's invocations at once; 0 = none */
  json_t *slurm;       /* the node's "slurm" settings (partition, account, qos, time,
                          args), borrowed; NULL or {} when none (other executors ignore it) */
  /* Set by the engine when it hands the invocation over. */
  const char *task_name; /* children a job spawns without a name are named TASK_NAME/K */
  int32_t priority;    /* the task's */
  int64_t group_id;    /* its submission: fair share happens between these */
  int64_t graph_id;
  int64_t ready_ms;    /* when it became ready to run (ms since the epoch) */
} br_invocation;

typedef enum br_inv_status {
  BR_INV_OK = 0,       /* exit code in the good codes */
  BR_INV_FAILED,       /* any other exit code or a signal */
  BR_INV_RETRY,        /* exit code in the retry codes */
  BR_INV_TIMEOUT,      /* killed after its timeout */
  BR_INV_CANCELLED,    /* killed by cancel */
  BR_INV_LOST,         /* the worker went away */
  BR_INV_SPAWN_ERROR,  /* could not start (no such program, bad cwd, ...) */
} br_inv_status;

const char *br_inv_status_name(br_inv_status s);

typedef struct br_inv_result {
  int64_t invocation_id;
  int64_t task_id;
  br_inv_status status;
  int exit_code;       /* -1 when killed by a signal */
  int term_signal;
  double runtime;      /* seconds */
  int64_t peak_rss_kb; /* peak resident memory of the job's process tree (what it waited for) */
  double queued;       /* seconds from submit to the process's start */
  char *log_tail;      /* last lines of the log (owned by the executor during the callback) */
  json_t *set_attrs;   /* attributes the job set through the runtime channel (an object,
                          borrowed: json_incref to keep it) */
  char *error;         /* for SPAWN_ERROR and LOST: a message (local also explains a
                          timeout, a cancel or a signal); NULL otherwise */
} br_inv_result;

/* Events an executor reports (on the loop thread). They are never called from
 * inside an executor call (submit, cancel, ...), only from the loop, and for
 * one invocation on_start comes before any progress or spawn, and on_done last.
 * An invocation that never started (spawn error, cancelled while queued) gets
 * on_done only. */
typedef struct br_exec_events {
  void *ud;
  /* The job asked for a child; attrs reference is stolen by the callee. */
  void (*on_spawn)(void *ud, int64_t invocation_id, int64_t task_id, const char *name,
                   json_t *attrs);
  void (*on_progress)(void *ud, int64_t invocation_id, int64_t task_id, double progress);
  /* Started (the process exists). */
  void (*on_start)(void *ud, int64_t invocation_id, int64_t task_id);
  /* Finished, in any way. The result is only valid during the call. */
  void (*on_done)(void *ud, const br_inv_result *result);
  /* Scheduling executors only: the executor chose a worker for an
   * invocation it holds. Returns false when the task no longer wants it
   * (cancelled, paused, moved meanwhile): the executor drops it then. The
   * worker may be told only after the next `committed` call, so that the
   * start is durable before anything runs. */
  bool (*on_assign)(void *ud, int64_t invocation_id, int64_t task_id, const char *worker);
  /* Optional: output of the job (stdout and stderr) as it comes, for
   * forwarding (an agent streams it to its server). */
  void (*on_output)(void *ud, int64_t invocation_id, int64_t task_id, const char *data,
                    size_t len);
} br_exec_events;

typedef struct br_exec_config {
  uv_loop_t *loop;
  int slots;               /* concurrent invocations; 0 = number of cores */
  const char *runtime_dir; /* for the control socket and attribute files; NULL = a
                              private folder under $TMPDIR, removed by destroy */
  const char *braid_exe;   /* path of the braid binary (for `braid ctl`) */
  double grace;            /* seconds between SIGTERM and SIGKILL on cancel or timeout;
                              0 = 10 s */
  json_t *options;         /* executor-specific settings (borrowed), may be NULL */
  /* News for event streams (the farm's worker changes): kind and an object
   * (borrowed for the call). On the loop thread. May be NULL. */
  void (*notify)(void *ud, const char *kind, json_t *news);
  void *notify_ud;
} br_exec_config;

typedef struct br_executor br_executor;

typedef struct br_executor_ops {
  const char *name;
  int (*create)(const br_exec_config *cfg, const br_exec_events *ev, br_executor **out,
                br_error *err);
  /* Starts or queues the invocation. */
  int (*submit)(br_executor *ex, const br_invocation *inv, br_error *err);
  /* Cancels one invocation (SIGTERM to its process group, SIGKILL after the
   * grace period); on_done follows with BR_INV_CANCELLED. */
  int (*cancel)(br_executor *ex, int64_t invocation_id);
  /* Cancels everything; hard = SIGKILL at once. */
  void (*cancel_all)(br_executor *ex, bool hard);
  /* Invocations submitted and not yet reported done. */
  int (*active)(br_executor *ex);
  /* Free capacity (slots); the engine submits at most this many. */
  int (*capacity)(br_executor *ex);
  /* SIGKILLs what still runs and frees the executor; no callback follows.
   * Handles are closed asynchronously: run the loop afterwards (uv_run
   * returns once they are closed) before uv_loop_close. */
  void (*destroy)(br_executor *ex);

  /* Scheduling executors (the farm) choose where and when each invocation
   * runs: the engine hands them every queued invocation (up to capacity)
   * before its commit (nothing runs before an assignment is committed), the
   * task stays queued until on_assign, and the engine withdraws one with
   * cancel() when its task changes (a later on_done for it is ignored).
   * Optional members below may be NULL. */
  bool schedules;
  /* An invocation that was running on `worker` when the previous engine
   * stopped: the executor waits for that worker to report it, or reports it
   * lost. inv carries ids, node, log path and task name only. */
  int (*adopt)(br_executor *ex, const br_invocation *inv, const char *worker, int64_t started_ms,
               br_error *err);
  /* Called after each commit of the engine: what waited for durability
   * may go out now. */
  void (*committed)(br_executor *ex);
  /* Scheduling executors: called before each commit, after the turn's
   * queued invocations were submitted, so assignments made here (on_assign)
   * are committed with the turn that made the work ready: one commit from
   * ready to running. May call on_assign. */
  void (*schedule)(br_executor *ex);
  /* Why an invocation it holds has not started (a scheduling executor's
   * pending one): a sentence in buf, its length; 0 when it does not hold
   * it, or has nothing to say. */
  size_t (*why)(br_executor *ex, int64_t invocation_id, char *buf, size_t size);
} br_executor_ops;

const br_executor_ops *br_executor_find(const char *name);

/* The executors compiled in (also found by name through br_executor_find). */
extern const br_executor_ops br_exec_local; /* "local": child processes of this braid */
extern const br_executor_ops br_exec_agent; /* "agent": remote braid agents (see farm.h) */
extern const br_executor_ops br_exec_slurm; /* "slurm": Slurm jobs running one-shot agents */

#ifdef __cplusplus
}
#endif
#endif
