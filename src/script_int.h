/* Internals shared by the script module's files (script.c: the state, the
 * sandbox and expressions; script_json.c: JSON <-> Lua; script_lib.c: path
 * helpers and pad; script_run.c: the script node). */
#ifndef BRAID_SCRIPT_INT_H
#define BRAID_SCRIPT_INT_H

#include <braid/script.h>
#include <lauxlib.h>
#include <lua.h>

/* One action a script made, delivered after the chunk succeeds. */
typedef enum br__script_act_kind {
  BR__ACT_SET,
  BR__ACT_DEL,
  BR__ACT_SPAWN,
  BR__ACT_SPLIT,
} br__script_act_kind;

typedef struct br__script_action {
  br__script_act_kind kind;
  char *key;      /* SET, DEL: attribute; SPAWN: name or NULL */
  json_t *value;  /* SET: value; SPAWN: attrs */
  json_t **elems; /* SPLIT: n entries, each may be NULL */
  size_t n;
} br__script_action;

struct br_script_env {
  lua_State *L;
  size_t mem_used, mem_limit;
  bool mem_exceeded;       /* an allocation was refused in this evaluation */
  uint64_t instr_limit;
  bool tripped;            /* the instruction limit fired in this evaluation */
  char limit_msg[160];

  /* the current evaluation */
  const br_script_task *task;
  const json_t *attrs;     /* base attributes (never NULL during an evaluation) */
  json_t *empty;           /* an empty object for tasks without attributes */
  json_t *params;          /* `param`, owned reference or NULL */
  bool params_compiled;    /* by compile_params: pexprs says which are expressions */

  /* the script node's run (in_script) */
  bool in_script;
  const br_script_ops *ops;
  json_t *ov_set;          /* attributes set by the script so far */
  json_t *ov_del;          /* attributes deleted (keys -> true) */
  br__script_action *acts;
  size_t nacts, capacts;
  int decision;            /* 0 none, 1 route, 2 wait */
  int route_port;
  int64_t wait_key;
  bool failed;
  char *fail_msg;

  /* everything compiled here, freed with the env */
  br_script_expr **exprs;
  size_t nexprs, capexprs;
  br_script_chunk **chunks;
  size_t nchunks, capchunks;
  struct br__script_param {
    char *name;
    br_script_expr *expr; /* NULL: a literal */
  } *pexprs;
  size_t npexprs;
};

static inline br_script_env *br__script_env_of(lua_State *L) {
  return *(br_script_env **)lua_getextraspace(L);
}

/* Registry keys (addresses used with lua_rawgetp). */
extern const char br__script_objmt_key;
extern const char br__script_arrmt_key;
extern const char br__script_env_key; /* E, what compiled code sees as _ENV */

/* Pushes v (borrowed) as a Lua value; may raise a Lua error (memory). */
void br__script_push_json(lua_State *L, const json_t *v);
/* Converts the value at idx into a new JSON reference without raising a Lua
 * error. `hint` decides what an empty table becomes (OBJECT: {}, else []).
 * On failure returns -1 with a message in msg. */
int br__script_to_json(lua_State *L, int idx, br_param_type hint, json_t **out, char *msg,
                       size_t msgsize);
/* Converts the value at idx to the declared type (as above, never raises). */
int br__script_convert(lua_State *L, int idx, br_param_type type, json_t **out, char *msg,
                       size_t msgsize);
/* Describes the value at idx for error messages: "string 'abc'", "float 4.5". */
void br__script_describe(lua_State *L, int idx, char *buf, size_t size);
const char *br__script_type_name(br_param_type t);

/* Installs path, pad and fmt into the table at the top of the stack. */
void br__script_open_lib(lua_State *L);
/* Installs the script node's globals (spawn, split, ...) into the table at
 * the top of the stack, and returns nothing. */
void br__script_open_node(lua_State *L);
/* __index of the task userdata for the script node's methods; pushes the
 * method named k and returns 1, or returns 0. */
int br__script_task_method(lua_State *L, const char *k);
/* Records `attr[k] = v` (nil deletes) made by a script; raises on error. */
int br__script_attr_set(lua_State *L, int kidx, int vidx);
int br__script_chunk_ref(const br_script_chunk *c);
/* Frees the collected actions and overlays after a run. */
void br__script_reset_run(br_script_env *env);

/* Runs the function at the top of the stack under the limits with `task`;
 * leaves one result on the stack on success (BR_OK), nothing on error. */
int br__script_call(br_script_env *env, const br_script_task *task, br_error *err);

#endif
