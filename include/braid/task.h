/* Tasks: the records that flow through a graph. A task sits at one node and
 * input port in one state, carries a JSON object of attributes (jansson's own
 * value type), and knows its parent (the task that created it) and its
 * innermost split membership. Outer split memberships are kept on the split
 * records (br_split.prev_*), so nesting costs nothing per task. */
#ifndef BRAID_TASK_H
#define BRAID_TASK_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum br_task_state {
  BR_TASK_WAITING = 0, /* ready for its node's process() */
  BR_TASK_BLOCKED,     /* held by a waiter node until an event releases it */
  BR_TASK_QUEUED,      /* its invocation waits for a free slot */
  BR_TASK_RUNNING,     /* its invocation runs */
  BR_TASK_POST,        /* invocation finished; waits for postprocess() */
  BR_TASK_DONE,        /* finished: parked at a node with no outgoing wire */
  BR_TASK_ERROR,       /* failed past its retries; can be retried by hand */
  BR_TASK_CANCELLED,   /* cancelled by a user */
  BR_TASK_DEAD,        /* consumed (gathered into another task, or killed) */
  BR_TASK_NSTATES
} br_task_state;

/* "waiting", "blocked", ... ; NULL for an out of range value. */
const char *br_task_state_name(br_task_state s);
/* Parses a state name; returns -1 when unknown. */
int br_task_state_parse(const char *name);
/* States a task leaves only through a user's action: kept out of memory. */
bool br_task_state_is_final(br_task_state s);

/* A task as the store and the query API see it (a snapshot, owned by the
 * caller after a query: free with br_task_info_free). */
typedef struct br_task_info {
  int64_t id;
  int64_t graph_id;
  char *name;
  char *node;     /* node name */
  int port;       /* input port index */
  br_task_state state;
  bool paused;
  json_t *attrs;  /* owned reference */
  int64_t parent; /* 0 = none */
  int64_t split_id;
  int32_t split_elem, split_count;
  int32_t priority;
  int64_t group_id;
  int64_t wait_key;
  int32_t live_children;
  int32_t attempts;
  int64_t created_ms, updated_ms;
  char *error;    /* last error message, or NULL */
} br_task_info;

void br_task_info_free(br_task_info *t);
/* The snapshot as JSON (new reference): id, graph_id, name, node, port,
 * state, paused, attrs (when asked), parent, split, priority, group,
 * live_children, attempts, created_ms, updated_ms, error. */
json_t *br_task_info_json(const br_task_info *t, bool with_attrs);

/* A split: N peers created from one task. Element 0 is the original task.
 * prev_* is the membership the original had before, restored when the split
 * is gathered. */
typedef struct br_split {
  int64_t id;
  int32_t count;
  int32_t live;        /* elements not dead */
  int64_t orig_task;
  int64_t prev_split;
  int32_t prev_elem, prev_count;
} br_split;

#ifdef __cplusplus
}
#endif
#endif
