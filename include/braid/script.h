/* Scripting: Lua 5.4 expressions in node parameters and the script node.
 *
 * One br_script_env is one sandboxed Lua state. Give each node its own (never
 * share one between nodes); it holds the node's compiled expressions and
 * script chunk, which are compiled once and evaluated per task. An env is not
 * thread safe: use it from the engine thread only.
 *
 * Sandbox: the state has only the base library (without dofile, loadfile,
 * print, collectgarbage; `load` is text-only and sees the sandbox), string
 * (without dump; the string metatable is hidden), math, table, utf8, and a
 * safe `os` (time, clock, date, difftime). No io, require/package, debug,
 * coroutine. Every evaluation runs under an instruction-count limit and the
 * whole state under a memory limit; exceeding either is a BR_ESCRIPT error
 * and the state stays usable for the next evaluation.
 *
 * What an expression sees (all read-only):
 *   attr         the task's attributes (looked up on demand; containers come
 *                as Lua tables; JSON null is nil)
 *   task         id, name, parent, split_id, split_elem (0-based), split_count
 *   param        the node's literal parameters (an expression parameter there
 *                is an error, to keep evaluation order out of the picture)
 *   string math table utf8 os.{time,clock,date,difftime}
 *   path.join(a, b, ...)  path.dirname(p)  path.basename(p)
 *   path.ext(p) (".png", "" if none)  path.stem(p) ("img.0001")
 *   pad(n, width)  ("%0<width>d")      fmt(format, ...) (string.format)
 *
 * Expression forms in a parameter value:
 *   {"expr": "attr.frame * 2"}   a Lua expression, or a block with `return`
 *   "/out/${attr.wedge}/img.${pad(attr.frame, 4)}.png"
 *                                 interpolation; "$${" is a literal "${"; a
 *                                 string that is only "${x}" yields x's type
 *   lists and objects            elements that are expressions are evaluated
 */
#ifndef BRAID_SCRIPT_H
#define BRAID_SCRIPT_H

#include <braid/error.h>
#include <braid/node.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct br_script_env br_script_env;
typedef struct br_script_expr br_script_expr;   /* owned by its env */
typedef struct br_script_chunk br_script_chunk; /* owned by its env */

#define BR_SCRIPT_DEFAULT_MEMORY ((size_t)64 << 20)          /* bytes, whole state */
#define BR_SCRIPT_DEFAULT_INSTRUCTIONS ((uint64_t)10000000) /* per evaluation */

typedef struct br_script_limits {
  size_t memory;         /* bytes for the whole Lua state; 0 = default */
  uint64_t instructions; /* VM instructions per evaluation or run; 0 = default */
} br_script_limits;

/* The task an evaluation runs for. All borrowed for the call. */
typedef struct br_script_task {
  int64_t id;
  const char *name;     /* may be NULL */
  int64_t parent;       /* 0 = none */
  int64_t split_id;     /* 0 = not split */
  int32_t split_elem;   /* 0-based */
  int32_t split_count;
  const json_t *attrs;  /* an object; NULL = empty */
} br_script_task;

/* The script view of an engine task (for node glue; the attributes are the
 * read-only ones, borrowed). */
static inline br_script_task br_script_task_of(const br_task *t) {
  br_script_task st = {.id = br_task_id(t), .name = br_task_name(t),
                       .parent = br_task_parent(t), .attrs = br_task_attrs(t)};
  br_task_split(t, &st.split_id, &st.split_elem, &st.split_count);
  return st;
}

/* A new sandboxed state; limits may be NULL (defaults). NULL on error. */
br_script_env *br_script_env_new(const br_script_limits *limits, br_error *err);
/* Frees the state and every expression and chunk compiled in it. */
void br_script_env_free(br_script_env *env);
/* The node's parameters, seen by expressions and scripts as `param`
 * (a reference is taken; NULL clears). */
void br_script_env_set_params(br_script_env *env, const json_t *params);
/* Bytes the Lua state uses now. */
size_t br_script_env_memory(const br_script_env *env);

/* ---- expressions ---- */

/* True if value is, or contains (in a list or object), an expression. */
bool br_script_is_expr(const json_t *value);
/* In a string of len bytes with "${" at s[i]: the index of the "}" that
 * closes it (nested braces and quoted strings inside skipped), or 0. */
size_t br_script_interp_end(const char *s, size_t len, size_t i);

/* Compiles a parameter value whose result is converted to `type`. Literal
 * values are accepted too (evaluation returns them, type-checked). Syntax
 * errors are BR_ESCRIPT with the Lua line in the message
 * ("expr:1: unexpected symbol near ')'"); the caller adds file, node and
 * parameter. */
int br_script_expr_compile(br_script_env *env, const json_t *value, br_param_type type,
                           br_script_expr **out, br_error *err);

/* Evaluates for one task. *out is a new reference (the caller decrefs);
 * literal parts of it may be shared with the compiled value, so copy before
 * modifying. Errors are BR_ESCRIPT: the Lua message with its line, a limit,
 * or a conversion ("expected int, got string 'abc'"). */
int br_script_expr_eval(br_script_env *env, const br_script_expr *e, const br_script_task *task,
                        json_t **out, br_error *err);

/* The same for every parameter of a node at once: compiles each parameter
 * value that is an expression with the type from `specs` (ANY if not listed),
 * except those named in `literal` (NULL-terminated, may be NULL: for example
 * the script node's source, whose "${" is Lua), and sets `param` to params.
 * Errors name the parameter: "parameter 'out': expr:1: ...". */
int br_script_env_compile_params(br_script_env *env, const json_t *params,
                                 const br_param_spec *specs, const char *const *literal,
                                 br_error *err);
/* The value of parameter `name` for a task: evaluated if it is an
 * expression, the literal otherwise. *out is a new reference, or NULL when
 * the parameter is absent (returns BR_OK then). */
int br_script_env_param(br_script_env *env, const char *name, const br_script_task *task,
                        json_t **out, br_error *err);
/* Whether the parameter compiled as an expression. */
bool br_script_env_param_is_expr(const br_script_env *env, const char *name);

/* ---- the script node ----
 *
 * A chunk runs once per task with, besides the expression environment:
 *   task.attr.x            read; `task.attr.x = v` sets (nil deletes); `attr`
 *                          is the same view. A list or object read from it is
 *                          a copy: to change one, set it whole
 *   task:get(k) task:set(k, v) task:delete(k)
 *   spawn(attrs [, name])  a child task (attrs: a table)
 *   split(list | n)        split into #list elements; list[i] (a table, may
 *                          be empty) is merged into element i-1; element 0 is
 *                          the task itself
 *   route(name | number)   leave by this output (numbers count from 1)
 *   wait(key)              stay blocked under key (integer, or a string,
 *                          hashed) until an event
 *   fail(msg)              the task goes to error with msg; ends the run
 * (also as methods: task:spawn(...), task:route(...), ...).
 *
 * Actions are transactional: they are collected while the chunk runs and
 * delivered through br_script_ops, in the order they were made, only when
 * the chunk finishes without error (a runtime error delivers none). route
 * and wait are one decision (the last call wins), delivered last. fail()
 * delivers only ops->fail. Global variables a chunk sets do not survive to
 * the next task.
 *
 * The node glue (src/nodes/script.c) is meant to be this thin:
 *
 *   init:    env = br_script_env_new(NULL, err);
 *            br_script_env_compile_params(env, params, specs, (const char *[]){"source", NULL}, err);
 *            br_script_compile(env, source, node_name, &chunk, err);
 *   process: br_script_task t = br_script_task_of(br_ctx_task(ctx));
 *            if (br_script_run(env, chunk, &t, &ops_with_ud_ctx, &err) < 0)
 *              return br_ctx_fail(ctx, "%s", err.msg);
 *   ops:     set_attr -> json_object_set_new(br_ctx_attrs(ctx, task), k, v)
 *            del_attr -> json_object_del(br_ctx_attrs(ctx, task), k)
 *            spawn -> br_ctx_spawn, split -> br_ctx_split, route -> br_ctx_route,
 *            wait -> br_ctx_block, fail -> br_ctx_fail (remember it, return -1),
 *            output_index -> br_node_output_index(br_ctx_node(ctx), name)
 *   fini:    br_script_env_free(env)
 *
 * and br_ctx_param(ctx, name) for any node: br_script_env_param(env, name,
 * &t, &value, &err), the env made at init only when br_script_is_expr() is
 * true for some parameter. */
typedef struct br_script_ops {
  void *ud;
  /* Each may be NULL: using the action from Lua is then an error. Returning
   * < 0 (with err filled) stops the delivery; br_script_run returns that. */
  int (*set_attr)(void *ud, const char *key, json_t *value /* stolen */, br_error *err);
  int (*del_attr)(void *ud, const char *key, br_error *err);
  int (*spawn)(void *ud, const char *name /* may be NULL */, json_t *attrs /* stolen */,
               br_error *err);
  /* attrs[i] may be NULL; the references are stolen, the array is not. */
  int (*split)(void *ud, size_t n, json_t **attrs, br_error *err);
  int (*route)(void *ud, int port /* 0-based */, br_error *err);
  int (*wait)(void *ud, int64_t key, br_error *err);
  void (*fail)(void *ud, const char *msg);
  /* Output port index by name, or -1: checked while the chunk runs so that
   * route("nope") is an error at its line. NULL: only numbers route. */
  int (*output_index)(void *ud, const char *name);
} br_script_ops;

/* Compiles a script chunk (text only). `name` names it in messages
 * ("script:3: ..."); NULL = "script". Syntax errors as for expressions. */
int br_script_compile(br_script_env *env, const char *source, const char *name,
                      br_script_chunk **out, br_error *err);

/* Runs the chunk for a task and delivers its actions through ops. Returns
 * BR_OK when the chunk finished, including by fail() (delivered as
 * ops->fail); BR_ESCRIPT on a runtime error or limit (nothing delivered);
 * or a callback's error. */
int br_script_run(br_script_env *env, const br_script_chunk *chunk, const br_script_task *task,
                  const br_script_ops *ops, br_error *err);

#ifdef __cplusplus
}
#endif
#endif
