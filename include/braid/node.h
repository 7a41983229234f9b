/* Node types. A node type is one file in src/nodes/ with one br_node_type
 * ops table and one line in the registry (src/nodes/registry.c).
 *
 * A node type never sees the store or the executor: the engine hands it a
 * br_node_ctx, through which it reads the task (or, for waiters, the group of
 * tasks held under one key) and fills in what should happen:
 *
 *   process(ctx)      a task arrived in state waiting. Leave it with
 *                     br_ctx_route (the default: output 0), br_ctx_block,
 *                     br_ctx_kill, br_ctx_fail or br_ctx_invoke; optionally
 *                     br_ctx_split it or br_ctx_spawn children.
 *   postprocess(ctx)  its invocation finished (br_ctx_inv_result).
 *   release(ctx)      waiters only: the group of tasks blocked under one key
 *                     changed (a task arrived, a child or split element
 *                     died). Release some with br_ctx_release / kill others.
 *
 * Returning non-zero from a callback (with br_ctx_fail) puts the task in
 * error; the engine keeps running. */
#ifndef BRAID_NODE_H
#define BRAID_NODE_H

#include <braid/error.h>
#include <braid/graph.h>
#include <braid/task.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct br_node br_node;
typedef struct br_node_ctx br_node_ctx;
typedef struct br_task br_task; /* the engine's live task (opaque) */
struct br_inv_result;
struct br_invocation;

typedef enum br_param_type {
  BR_PARAM_ANY = 0,
  BR_PARAM_BOOL,
  BR_PARAM_INT,
  BR_PARAM_FLOAT, /* accepts integers */
  BR_PARAM_STRING,
  BR_PARAM_LIST,
  BR_PARAM_OBJECT,
} br_param_type;

const char *br_param_type_name(br_param_type t);

typedef struct br_param_spec {
  const char *name;
  br_param_type type;
  /* JSON text of the default value; NULL means the parameter is required
   * unless `optional` is set (then it is simply absent). */
  const char *default_json;
  bool optional;
  const char *help;
} br_param_spec;

/* children_port value: the node's last output (for types whose outputs
 * come from their parameters). */
#define BR_CHILDREN_LAST (-2)

typedef struct br_node_type {
  const char *name;
  const char *help;
  const char *const *inputs;  /* NULL-terminated; NULL means {"in"} */
  const char *const *outputs; /* NULL-terminated; NULL means {"out"} */
  int children_port;          /* output index children leave by; -1: none;
                                 BR_CHILDREN_LAST: the last output */
  /* Parameters that are never expressions (their "${" is literal), e.g. a
   * script's source; NULL-terminated, may be NULL. */
  const char *const *literal_params;
  const br_param_spec *params; /* terminated by an entry with name NULL */
  /* Optional: output names computed from the parameters (switch). Appends
   * strings to `names` (a JSON array); replaces `outputs` when set. */
  int (*outputs_from_params)(const json_t *params, json_t *names, br_error *err);
  /* Optional: checks beyond the parameter types, and a compiled state
   * (for example a Lua chunk) kept for the node's life; freed by fini. */
  int (*init)(br_node *node, void **state, br_error *err);
  void (*fini)(void *state);
  int (*process)(br_node_ctx *ctx);
  int (*postprocess)(br_node_ctx *ctx);
  int (*release)(br_node_ctx *ctx);
} br_node_type;

/* The registry of compiled-in node types. */
const br_node_type *br_node_type_find(const char *name);
const br_node_type *const *br_node_types(void); /* NULL-terminated */

/* For init(): positions err at a parameter of the node in its graph file
 * (line and column), or at a path inside it (sub, e.g. "0/values"; may be
 * NULL). Only meaningful while the graph loads. */
void br_node_error_at_param(const br_node *node, br_error *err, const char *param,
                            const char *sub);
/* For init(): fills err with a printf-style message placed at the parameter
 * (br_node_error_at_param after br_error_set, which clears where); returns
 * BR_EINVAL, so init() can `return br_node_fail_at_param(...)`. */
int br_node_fail_at_param(const br_node *node, br_error *err, const char *param, const char *sub,
                          const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* For init(): a warning about a parameter (or a path inside it: sub), kept
 * with the graph at its position (br_graph_warnings). The graph still
 * loads. */
void br_node_warn_at_param(const br_node *node, const char *param, const char *sub,
                           const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* The node's sandboxed Lua state, created on first use (one per node, never
 * shared). For init() of node types that run scripts. NULL on error. */
struct br_script_env *br_node_script_env(br_node *node, br_error *err);

/* ---- what a callback can read ---- */

br_node *br_ctx_node(br_node_ctx *ctx);
void *br_ctx_node_state(br_node_ctx *ctx);
/* The task being processed (NULL inside release()). */
br_task *br_ctx_task(br_node_ctx *ctx);

/* A parameter's value for the current task: expressions evaluated and the
 * result converted to the declared type. Borrowed until the callback returns.
 * NULL when absent, or on an evaluation error (then the task goes to error and
 * the callback should return -1). */
json_t *br_ctx_param(br_node_ctx *ctx, const char *name);
int64_t br_ctx_param_int(br_node_ctx *ctx, const char *name, int64_t dflt);
double br_ctx_param_float(br_node_ctx *ctx, const char *name, double dflt);
const char *br_ctx_param_str(br_node_ctx *ctx, const char *name, const char *dflt);
bool br_ctx_param_bool(br_node_ctx *ctx, const char *name, bool dflt);

int64_t br_task_id(const br_task *t);
const char *br_task_name(const br_task *t);
int br_task_port(const br_task *t);
int64_t br_task_parent(const br_task *t);
int32_t br_task_live_children(const br_task *t);
/* Invocations started for the task at its current node (in postprocess():
 * counting the one that just finished). */
int32_t br_task_attempts(const br_task *t);
void br_task_split(const br_task *t, int64_t *split_id, int32_t *elem, int32_t *count);
/* Read-only view of the attributes (borrowed). */
const json_t *br_task_attrs(const br_task *t);
/* Writable attributes: copies them first when shared (copy on write).
 * Only valid inside a callback, for the task or a member of the group. */
json_t *br_ctx_attrs(br_node_ctx *ctx, br_task *t);

/* ---- what process()/postprocess() can do ---- */

/* Done: leave by output `port` (default 0 if nothing else is said). */
void br_ctx_route(br_node_ctx *ctx, int port);
/* Hold the task at this node under `key`; release() is called for the group. */
void br_ctx_block(br_node_ctx *ctx, int64_t key);
/* The task is consumed. */
void br_ctx_kill(br_node_ctx *ctx);
/* The task goes to error with this message. Returns -1. */
int br_ctx_fail(br_node_ctx *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Split the task into n elements; element 0 is the task itself. attrs[i]
 * (may be NULL) is merged into element i's attributes; references are
 * stolen. All elements then leave the way the task leaves. */
int br_ctx_split(br_node_ctx *ctx, size_t n, json_t **attrs);
/* A child of the task, with these attributes (reference stolen), leaving by
 * the node type's children port. Name may be NULL. */
int br_ctx_spawn(br_node_ctx *ctx, const char *name, json_t *attrs);
/* Run an invocation; the engine copies `inv`. postprocess() runs after. */
int br_ctx_invoke(br_node_ctx *ctx, const struct br_invocation *inv);
/* In postprocess(): the result of the invocation. */
const struct br_inv_result *br_ctx_inv_result(br_node_ctx *ctx);

/* ---- release() ---- */

int64_t br_ctx_group_key(br_node_ctx *ctx);
size_t br_ctx_group_size(br_node_ctx *ctx);
br_task *br_ctx_group_task(br_node_ctx *ctx, size_t i); /* arrival order */
/* The member of the group with this task id, or NULL (at once, not by
 * going through the group: release() runs each time a task arrives). */
br_task *br_ctx_group_member(br_node_ctx *ctx, int64_t task_id);
/* A split's record (live: elements not dead); false when unknown. */
bool br_ctx_split_info(br_node_ctx *ctx, int64_t split_id, br_split *out);
/* Release a member of the group by an output port. */
void br_ctx_release(br_node_ctx *ctx, br_task *t, int port);
/* A member of the group is consumed. */
void br_ctx_release_kill(br_node_ctx *ctx, br_task *t);
/* Leave the task's innermost split: its membership becomes the one it had
 * before the split (used by gather_split on the surviving element). */
void br_ctx_unsplit(br_node_ctx *ctx, br_task *t);

#ifdef __cplusplus
}
#endif
#endif
