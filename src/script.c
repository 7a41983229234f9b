/* The script module's core: one sandboxed Lua state per node, the limits,
 * the views expressions see (attr, task, param) and parameter expressions.
 *
 * Design, for speed: the state is built once; everything an evaluation sees
 * is reached through one environment table E (empty, __index = the sandbox
 * globals) that every compiled function has as _ENV. `attr`, `task` and
 * `param` are userdata whose __index converts only the looked-up field from
 * the current json_t, so an evaluation costs a pointer update, a hook reset
 * and one protected call. An interpolated string compiles to a single
 * concatenation ("a" .. (x) .. "b"), which Lua does in one instruction.
 *
 * Safety: every Lua API call that can raise runs inside lua_pcall (state
 * setup and compilation go through protected C functions), so a memory
 * error never reaches the panic handler. The allocator enforces the memory
 * limit; a count hook enforces the instruction limit and, once fired, fires on
 * every instruction so that user pcall() cannot swallow it. */
#include "script_int.h"

#include <ctype.h>
#include <limits.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char br__script_env_key = 'E'; /* registry: the environment table E */
static const char next_key = 'n';     /* registry: the original next() */

struct br_script_expr {
  enum { EXPR_LITERAL, EXPR_CODE, EXPR_LIST, EXPR_OBJECT } kind;
  br_param_type type;
  json_t *literal;        /* LITERAL */
  int ref;                /* CODE: the compiled function in the registry */
  char *source;           /* CODE: what the user wrote */
  br_script_expr **items; /* LIST, OBJECT */
  char **keys;            /* OBJECT */
  size_t n;
};

struct br_script_chunk {
  int ref;
};

/* ---- allocator and hook ---- */

static void *l_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  br_script_env *env = ud;
  size_t old = ptr ? osize : 0;
  if (nsize == 0) {
    free(ptr);
    env->mem_used -= old;
    return NULL;
  }
  if (nsize > old && env->mem_used - old + nsize > env->mem_limit) {
    env->mem_exceeded = true;
    return NULL;
  }
  void *p = realloc(ptr, nsize);
  if (!p) {
    env->mem_exceeded = true;
    return NULL;
  }
  env->mem_used = env->mem_used - old + nsize;
  return p;
}

static void count_hook(lua_State *L, lua_Debug *ar) {
  br_script_env *env = br__script_env_of(L);
  if (!env->tripped) {
    env->tripped = true;
    int line = -1;
    if (lua_getinfo(L, "Sl", ar)) line = ar->currentline;
    if (line > 0)
      snprintf(env->limit_msg, sizeof env->limit_msg,
               "%s:%d: instruction limit exceeded (%llu instructions)", ar->short_src, line,
               (unsigned long long)env->instr_limit);
    else
      snprintf(env->limit_msg, sizeof env->limit_msg,
               "instruction limit exceeded (%llu instructions)",
               (unsigned long long)env->instr_limit);
    lua_sethook(L, count_hook, LUA_MASKCOUNT, 1);
  }
  luaL_error(L, "%s", env->limit_msg);
}

static void arm_hook(br_script_env *env) {
  uint64_t n = env->instr_limit > INT_MAX ? INT_MAX : env->instr_limit;
  lua_sethook(env->L, count_hook, LUA_MASKCOUNT, (int)n);
}

/* Globals an evaluation set (in E) do not outlive it. Never raises:
 * clearing existing fields allocates nothing. */
static void clear_globals(lua_State *L) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &br__script_env_key);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    lua_pop(L, 1);
    lua_pushvalue(L, -1);
    lua_pushnil(L);
    lua_rawset(L, -4);
  }
  lua_pop(L, 1);
}

int br__script_call(br_script_env *env, const br_script_task *task, br_error *err) {
  lua_State *L = env->L;
  env->task = task;
  env->attrs = task && task->attrs && json_is_object(task->attrs) ? task->attrs : env->empty;
  env->tripped = false;
  env->mem_exceeded = false;
  arm_hook(env);
  int rc = lua_pcall(L, 0, 1, 0);
  env->task = NULL;
  env->attrs = env->empty;
  clear_globals(L);
  if (rc == LUA_OK) return BR_OK;
  /* A refused allocation may have been retried after an emergency
   * collection; it is the limit only if the error says so. */
  const char *m = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
  if (env->tripped) {
    br_error_set(err, BR_ESCRIPT, "%s", env->limit_msg);
  } else if (rc == LUA_ERRMEM || (env->mem_exceeded && m && strstr(m, "not enough memory"))) {
    if (env->mem_limit % (1 << 20) == 0)
      br_error_set(err, BR_ESCRIPT, "memory limit exceeded (%zu MiB)", env->mem_limit >> 20);
    else
      br_error_set(err, BR_ESCRIPT, "memory limit exceeded (%zu bytes)", env->mem_limit);
  } else if (m) {
    br_error_set(err, BR_ESCRIPT, "%s", m);
  } else {
    br_error_set(err, BR_ESCRIPT, "(error object is a %s value)", luaL_typename(L, -1));
  }
  lua_pop(L, 1);
  if (env->mem_exceeded || rc == LUA_ERRMEM) lua_gc(L, LUA_GCCOLLECT);
  arm_hook(env);
  return BR_ESCRIPT;
}

/* ---- views: attr, task, param ---- */

static int attr_index(lua_State *L) {
  br_script_env *env = br__script_env_of(L);
  if (lua_type(L, 2) != LUA_TSTRING) return 0;
  const char *k = lua_tostring(L, 2);
  if (env->in_script) {
    json_t *v = json_object_get(env->ov_set, k);
    if (v) {
      br__script_push_json(L, v);
      return 1;
    }
    if (json_object_get(env->ov_del, k)) return 0;
  }
  br__script_push_json(L, json_object_get(env->attrs, k));
  return 1;
}

static int attr_newindex(lua_State *L) {
  br_script_env *env = br__script_env_of(L);
  if (!env->in_script)
    return luaL_error(L, "attributes are read-only in an expression");
  return br__script_attr_set(L, 2, 3);
}

/* pairs(attr): a snapshot of the current view. */
static int attr_pairs(lua_State *L) {
  br_script_env *env = br__script_env_of(L);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &next_key);
  lua_newtable(L);
  const char *k;
  json_t *v;
  json_object_foreach((json_t *)env->attrs, k, v) {
    if (env->in_script && (json_object_get(env->ov_del, k) || json_object_get(env->ov_set, k)))
      continue;
    if (json_is_null(v)) continue;
    br__script_push_json(L, v);
    lua_setfield(L, -2, k);
  }
  if (env->in_script) {
    json_object_foreach(env->ov_set, k, v) {
      if (json_is_null(v)) continue;
      br__script_push_json(L, v);
      lua_setfield(L, -2, k);
    }
  }
  lua_pushnil(L);
  return 3;
}

static int task_index(lua_State *L) {
  br_script_env *env = br__script_env_of(L);
  if (lua_type(L, 2) != LUA_TSTRING) return 0;
  const char *k = lua_tostring(L, 2);
  const br_script_task *t = env->task;
  if (strcmp(k, "attr") == 0) {
    lua_pushvalue(L, lua_upvalueindex(1));
    return 1;
  }
  if (!t) return br__script_task_method(L, k);
  if (strcmp(k, "id") == 0) lua_pushinteger(L, t->id);
  else if (strcmp(k, "name") == 0) t->name ? (void)lua_pushstring(L, t->name) : lua_pushnil(L);
  else if (strcmp(k, "parent") == 0) t->parent ? lua_pushinteger(L, t->parent) : lua_pushnil(L);
  else if (strcmp(k, "split_id") == 0) t->split_id ? lua_pushinteger(L, t->split_id) : lua_pushnil(L);
  else if (strcmp(k, "split_elem") == 0) lua_pushinteger(L, t->split_elem);
  else if (strcmp(k, "split_count") == 0) lua_pushinteger(L, t->split_count > 0 ? t->split_count : 1);
  else return br__script_task_method(L, k);
  return 1;
}

static int task_newindex(lua_State *L) {
  return luaL_error(L, "task fields are read-only (set attributes with task.attr.k = v)");
}

static br_script_expr *find_param(const br_script_env *env, const char *name);

static int param_index(lua_State *L) {
  br_script_env *env = br__script_env_of(L);
  if (lua_type(L, 2) != LUA_TSTRING || !env->params) return 0;
  const char *k = lua_tostring(L, 2);
  json_t *v = json_object_get(env->params, k);
  if (v && (env->params_compiled ? find_param(env, k) != NULL : br_script_is_expr(v)))
    return luaL_error(L, "param.%s is an expression; only literal parameters can be read", k);
  br__script_push_json(L, v);
  return 1;
}

static int param_newindex(lua_State *L) {
  return luaL_error(L, "parameters are read-only");
}

/* A userdata view named `name` with the given metamethods, stored as a
 * field of the table below the `nup` upvalues at the top of the stack. */
static void new_view(lua_State *L, const char *name, lua_CFunction index, int nup,
                     lua_CFunction newindex, lua_CFunction pairs) {
  lua_pushcclosure(L, index, nup); /* G, f */
  lua_createtable(L, 0, 5);        /* G, f, mt */
  lua_insert(L, -2);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, newindex);
  lua_setfield(L, -2, "__newindex");
  if (pairs) {
    lua_pushcfunction(L, pairs);
    lua_setfield(L, -2, "__pairs");
  }
  lua_pushstring(L, name);
  lua_setfield(L, -2, "__name");
  lua_pushboolean(L, 0);
  lua_setfield(L, -2, "__metatable");
  lua_newuserdatauv(L, 0, 0); /* G, mt, ud */
  lua_insert(L, -2);
  lua_setmetatable(L, -2);
  lua_setfield(L, -2, name);
}

/* ---- the sandbox ---- */

/* load(): text only, and the sandbox's environment by default. */
static int l_load(lua_State *L) {
  size_t len;
  if (lua_type(L, 1) != LUA_TSTRING)
    return luaL_error(L, "load: only a string can be loaded here");
  const char *s = lua_tolstring(L, 1, &len);
  const char *name = luaL_optstring(L, 2, "=(load)");
  if (luaL_loadbufferx(L, s, len, name, "t") != LUA_OK) {
    lua_pushnil(L);
    lua_insert(L, -2);
    return 2;
  }
  if (!lua_isnone(L, 4)) lua_pushvalue(L, 4);
  else lua_rawgetp(L, LUA_REGISTRYINDEX, &br__script_env_key);
  if (!lua_setupvalue(L, -2, 1)) lua_pop(L, 1);
  return 1;
}

/* setmetatable() without __gc: finalizers would run outside evaluations. */
static int l_setmetatable(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  if (lua_type(L, 2) == LUA_TTABLE) {
    lua_pushliteral(L, "__gc");
    if (lua_rawget(L, 2) != LUA_TNIL) return luaL_error(L, "setmetatable: __gc is not allowed");
    lua_pop(L, 1);
  }
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, 1);
  return 1;
}

static void open_lib(lua_State *L, const char *name, lua_CFunction f) {
  luaL_requiref(L, name, f, 1);
  lua_pop(L, 1);
}

static int p_setup(lua_State *L) {
  open_lib(L, LUA_GNAME, luaopen_base);
  open_lib(L, LUA_STRLIBNAME, luaopen_string);
  open_lib(L, LUA_TABLIBNAME, luaopen_table);
  open_lib(L, LUA_MATHLIBNAME, luaopen_math);
  open_lib(L, LUA_UTF8LIBNAME, luaopen_utf8);

  lua_pushglobaltable(L); /* G */
  static const char *const removed[] = {"dofile", "loadfile", "print", "collectgarbage",
                                        "warn", "require", NULL};
  for (int i = 0; removed[i]; i++) {
    lua_pushnil(L);
    lua_setfield(L, -2, removed[i]);
  }
  lua_pushcfunction(L, l_load);
  lua_setfield(L, -2, "load");
  lua_getfield(L, -1, "setmetatable");
  lua_pushcclosure(L, l_setmetatable, 1);
  lua_setfield(L, -2, "setmetatable");

  /* string: no dump; its metatable hidden from getmetatable("") */
  lua_getfield(L, -1, "string");
  lua_pushnil(L);
  lua_setfield(L, -2, "dump");
  lua_pop(L, 1);
  lua_pushliteral(L, "");
  lua_getmetatable(L, -1);
  lua_pushboolean(L, 0);
  lua_setfield(L, -2, "__metatable");
  lua_pop(L, 2);

  /* os: only the clock and calendar */
  luaL_requiref(L, LUA_OSLIBNAME, luaopen_os, 0);
  lua_createtable(L, 0, 4);
  static const char *const os_kept[] = {"time", "clock", "date", "difftime", NULL};
  for (int i = 0; os_kept[i]; i++) {
    lua_getfield(L, -2, os_kept[i]);
    lua_setfield(L, -2, os_kept[i]);
  }
  lua_setfield(L, -3, "os");
  lua_pop(L, 1);
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_pushnil(L);
  lua_setfield(L, -2, LUA_OSLIBNAME);
  lua_pop(L, 1);

  /* marker metatables for tables made from JSON lists and objects, hidden
   * so that one task cannot change what the next one's tables do */
  const char *const markers[] = {"object", "list"};
  const char *const marker_keys[] = {&br__script_objmt_key, &br__script_arrmt_key};
  for (int i = 0; i < 2; i++) {
    lua_createtable(L, 0, 2);
    lua_pushstring(L, markers[i]);
    lua_setfield(L, -2, "__name");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_rawsetp(L, LUA_REGISTRYINDEX, marker_keys[i]);
  }
  lua_getfield(L, -1, "next");
  lua_rawsetp(L, LUA_REGISTRYINDEX, &next_key);

  br__script_open_lib(L);
  br__script_open_node(L);

  /* views; task's __index has the attr view as upvalue */
  new_view(L, "attr", attr_index, 0, attr_newindex, attr_pairs);
  lua_getfield(L, -1, "attr");
  new_view(L, "task", task_index, 1, task_newindex, NULL);
  new_view(L, "param", param_index, 0, param_newindex, NULL);

  /* E: what compiled code sees as _ENV */
  lua_newtable(L);
  lua_createtable(L, 0, 2);
  lua_pushvalue(L, -3);
  lua_setfield(L, -2, "__index");
  lua_pushboolean(L, 0); /* setmetatable(_ENV, ...) would cut off the library */
  lua_setfield(L, -2, "__metatable");
  lua_setmetatable(L, -2);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &br__script_env_key);
  lua_pop(L, 1);
  return 0;
}

br_script_env *br_script_env_new(const br_script_limits *limits, br_error *err) {
  br_script_env *env = calloc(1, sizeof *env);
  if (!env) {
    br_error_set(err, BR_ENOMEM, "out of memory");
    return NULL;
  }
  env->mem_limit = limits && limits->memory ? limits->memory : BR_SCRIPT_DEFAULT_MEMORY;
  env->instr_limit =
      limits && limits->instructions ? limits->instructions : BR_SCRIPT_DEFAULT_INSTRUCTIONS;
  env->empty = json_object();
  env->ov_set = json_object();
  env->ov_del = json_object();
  env->attrs = env->empty;
  if (env->empty && env->ov_set && env->ov_del) env->L = lua_newstate(l_alloc, env);
  if (!env->L) {
    br_script_env_free(env);
    br_error_set(err, BR_ENOMEM, "cannot create a Lua state (out of memory)");
    return NULL;
  }
  *(br_script_env **)lua_getextraspace(env->L) = env;
  lua_pushcfunction(env->L, p_setup);
  if (lua_pcall(env->L, 0, 0, 0) != LUA_OK) {
    br_error_set(err, BR_ESCRIPT, "cannot set up the Lua sandbox: %s",
                 lua_tostring(env->L, -1) ? lua_tostring(env->L, -1) : "?");
    br_script_env_free(env);
    return NULL;
  }
  arm_hook(env);
  return env;
}

/* Frees e; L (may be NULL when the state is closing) to drop its code. */
static void expr_free(lua_State *L, br_script_expr *e) {
  if (!e) return;
  if (L && e->ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, e->ref);
  json_decref(e->literal);
  free(e->source);
  for (size_t i = 0; i < e->n; i++) {
    expr_free(L, e->items[i]);
    if (e->keys) free(e->keys[i]);
  }
  free(e->items);
  free(e->keys);
  free(e);
}

void br_script_env_free(br_script_env *env) {
  if (!env) return;
  br__script_reset_run(env);
  if (env->L) lua_close(env->L);
  for (size_t i = 0; i < env->nexprs; i++) expr_free(NULL, env->exprs[i]);
  free(env->exprs);
  for (size_t i = 0; i < env->nchunks; i++) free(env->chunks[i]);
  free(env->chunks);
  for (size_t i = 0; i < env->npexprs; i++) free(env->pexprs[i].name);
  free(env->pexprs);
  free(env->acts);
  json_decref(env->params);
  json_decref(env->empty);
  json_decref(env->ov_set);
  json_decref(env->ov_del);
  free(env);
}

void br_script_env_set_params(br_script_env *env, const json_t *params) {
  json_t *old = env->params;
  env->params = params ? json_incref((json_t *)params) : NULL;
  json_decref(old);
}

size_t br_script_env_memory(const br_script_env *env) { return env->mem_used; }

/* ---- compiling ---- */

typedef struct {
  char *s;
  size_t len, cap;
  bool oom;
} sbuf;

static void sb_add(sbuf *b, const char *s, size_t n) {
  if (b->oom) return;
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 128;
    while (cap < b->len + n + 1) cap *= 2;
    char *p = realloc(b->s, cap);
    if (!p) {
      b->oom = true;
      return;
    }
    b->s = p;
    b->cap = cap;
  }
  memcpy(b->s + b->len, s, n);
  b->len += n;
  b->s[b->len] = 0;
}

static void sb_str(sbuf *b, const char *s) { sb_add(b, s, strlen(s)); }

/* A Lua string literal for s. */
static void sb_quote(sbuf *b, const char *s, size_t n) {
  sb_add(b, "\"", 1);
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') {
      char e[2] = {'\\', (char)c};
      sb_add(b, e, 2);
    } else if (c < 32 || c == 127) {
      char e[8];
      snprintf(e, sizeof e, "\\%03u", c);
      sb_add(b, e, 4);
    } else {
      sb_add(b, (const char *)&c, 1);
    }
  }
  sb_add(b, "\"", 1);
}

/* Protected compilation: loads code, gives it E as _ENV, refs it. */
typedef struct {
  const char *code;
  size_t len;
  const char *chunkname;
  int ref;
  char msg[512];
  bool syntax; /* a syntax error (msg filled) rather than a raised error */
} compile_args;

static int p_compile(lua_State *L) {
  compile_args *a = lua_touserdata(L, 1);
  int rc = luaL_loadbufferx(L, a->code, a->len, a->chunkname, "t");
  if (rc != LUA_OK) {
    if (rc == LUA_ERRMEM) snprintf(a->msg, sizeof a->msg, "memory limit exceeded while compiling");
    else snprintf(a->msg, sizeof a->msg, "%s", lua_tostring(L, -1));
    a->syntax = true;
    return 0;
  }
  lua_rawgetp(L, LUA_REGISTRYINDEX, &br__script_env_key);
  lua_setupvalue(L, -2, 1);
  a->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 0;
}

static int compile_code(br_script_env *env, const char *code, size_t len, const char *chunkname,
                        int *ref, br_error *err) {
  compile_args a = {.code = code, .len = len, .chunkname = chunkname, .ref = LUA_NOREF};
  lua_State *L = env->L;
  lua_pushcfunction(L, p_compile);
  lua_pushlightuserdata(L, &a);
  env->mem_exceeded = false;
  int rc = lua_pcall(L, 1, 0, 0);
  if (rc != LUA_OK) {
    lua_pop(L, 1);
    lua_gc(L, LUA_GCCOLLECT);
    return br_error_set(err, BR_ESCRIPT, "cannot compile: %s",
                        rc == LUA_ERRMEM ? "memory limit exceeded" : "Lua error");
  }
  if (env->mem_exceeded) lua_gc(L, LUA_GCCOLLECT);
  if (a.syntax) return br_error_set(err, BR_ESCRIPT, "%s", a.msg);
  *ref = a.ref;
  return BR_OK;
}

static bool has_interp(const char *s) { return strstr(s, "${") != NULL; }

bool br_script_is_expr(const json_t *v) {
  if (json_is_string(v)) return has_interp(json_string_value(v));
  if (json_is_object(v)) {
    if (json_object_size(v) == 1 && json_is_string(json_object_get(v, "expr"))) return true;
    const char *k;
    json_t *x;
    json_object_foreach((json_t *)v, k, x) if (br_script_is_expr(x)) return true;
    return false;
  }
  if (json_is_array(v)) {
    size_t i;
    json_t *x;
    json_array_foreach(v, i, x) if (br_script_is_expr(x)) return true;
  }
  return false;
}

static br_script_expr *expr_new(int kind, br_param_type type) {
  br_script_expr *e = calloc(1, sizeof *e);
  if (e) {
    e->kind = kind;
    e->type = type;
    e->ref = LUA_NOREF;
  }
  return e;
}

size_t br_script_interp_end(const char *s, size_t len, size_t i) {
  int depth = 0;
  for (size_t j = i + 2; j < len; j++) {
    char c = s[j];
    if (c == '"' || c == '\'') {
      for (j++; j < len && s[j] != c; j++)
        if (s[j] == '\\') j++;
    } else if (c == '{') {
      depth++;
    } else if (c == '}') {
      if (depth == 0) return j;
      depth--;
    }
  }
  return 0;
}

/* "a${x}b" -> code "return "a" .. (x) .. "b"". A string that is only "${x}"
 * -> "return (x)". No code parts -> *literal. */
static int compile_interp(br_script_env *env, const char *s, sbuf *code, char **literal,
                          br_error *err) {
  size_t len = strlen(s);
  sbuf lit = {0};
  int nparts = 0, ncode = 0;
  sb_str(code, "return ");
  for (size_t i = 0; i < len;) {
    if (s[i] == '$' && i + 2 < len && s[i + 1] == '$' && s[i + 2] == '{') {
      sb_add(&lit, "${", 2);
      i += 3;
      continue;
    }
    if (!(s[i] == '$' && i + 1 < len && s[i + 1] == '{')) {
      sb_add(&lit, s + i, 1);
      i++;
      continue;
    }
    size_t end = br_script_interp_end(s, len, i);
    if (!end) {
      free(lit.s);
      return br_error_set(err, BR_ESCRIPT, "unterminated ${ at character %zu of \"%s\"", i + 1, s);
    }
    const char *part = s + i + 2;
    size_t plen = end - i - 2;
    if (strspn(part, " \t\r\n") >= plen) {
      free(lit.s);
      return br_error_set(err, BR_ESCRIPT, "empty ${} at character %zu of \"%s\"", i + 1, s);
    }
    /* each part on its own, for an error message that names it */
    sbuf one = {0};
    /* a newline before ')' only when a comment could swallow it, so that
     * messages say line 1 */
    const char *close = memmem(part, plen, "--", 2) ? "\n)" : ")";
    sb_str(&one, "return (");
    sb_add(&one, part, plen);
    sb_str(&one, close);
    int ref = LUA_NOREF;
    int rc = one.oom ? br_error_set(err, BR_ENOMEM, "out of memory")
                     : compile_code(env, one.s, one.len, "=expr", &ref, err);
    free(one.s);
    if (rc < 0) {
      free(lit.s);
      if (rc == BR_ESCRIPT) {
        char m[sizeof err->msg];
        snprintf(m, sizeof m, "%s", err->msg);
        br_error_set(err, BR_ESCRIPT, "in ${%.*s}: %s", (int)(plen > 200 ? 200 : plen), part, m);
      }
      return rc;
    }
    luaL_unref(env->L, LUA_REGISTRYINDEX, ref);
    if (lit.len) {
      if (nparts++) sb_str(code, " .. ");
      sb_quote(code, lit.s, lit.len);
      lit.len = 0;
    }
    if (nparts++) sb_str(code, " .. ");
    sb_str(code, "(");
    sb_add(code, part, plen);
    sb_str(code, close);
    ncode++;
    i = end + 1;
  }
  if (ncode == 0) {
    *literal = lit.s ? lit.s : strdup("");
    return *literal ? BR_OK : br_error_set(err, BR_ENOMEM, "out of memory");
  }
  if (lit.len) {
    sb_str(code, " .. ");
    sb_quote(code, lit.s, lit.len);
  }
  free(lit.s);
  if (code->oom) return br_error_set(err, BR_ENOMEM, "out of memory");
  return BR_OK;
}

static bool ident_char(char c) { return c == '_' || isalnum((unsigned char)c); }

/* Whether s has the word "return" (then a failed block is what to report). */
static bool mentions_return(const char *s) {
  for (const char *p = strstr(s, "return"); p; p = strstr(p + 1, "return"))
    if ((p == s || !ident_char(p[-1])) && !ident_char(p[6])) return true;
  return false;
}

static int compile_value(br_script_env *env, const json_t *v, br_param_type type,
                         br_script_expr **out, br_error *err) {
  br_script_expr *e = NULL;
  int rc = BR_OK;
  *out = NULL;
  if (json_is_object(v) && json_object_size(v) == 1 &&
      json_is_string(json_object_get(v, "expr"))) {
    const char *src = json_string_value(json_object_get(v, "expr"));
    if (src[strspn(src, " \t\r\n")] == 0) return br_error_set(err, BR_ESCRIPT, "empty expression");
    e = expr_new(EXPR_CODE, type);
    if (!e || !(e->source = strdup(src))) goto oom;
    sbuf code = {0};
    sb_str(&code, "return ");
    sb_str(&code, src);
    if (code.oom) {
      free(code.s);
      goto oom;
    }
    rc = compile_code(env, code.s, code.len, "=expr", &e->ref, err);
    free(code.s);
    if (rc == BR_ESCRIPT) {
      /* not an expression: maybe a block with its own return */
      br_error block_err = {0};
      br_error_clear(&block_err);
      int rc2 = compile_code(env, src, strlen(src), "=expr", &e->ref, &block_err);
      if (rc2 == BR_OK) rc = BR_OK;
      else if (mentions_return(src) && err) *err = block_err;
    }
  } else if (json_is_string(v) && has_interp(json_string_value(v))) {
    const char *src = json_string_value(v);
    sbuf code = {0};
    char *literal = NULL;
    rc = compile_interp(env, src, &code, &literal, err);
    if (rc == BR_OK && literal) {
      e = expr_new(EXPR_LITERAL, type);
      if (!e || !(e->literal = json_string(literal))) rc = br_error_set(err, BR_ESCRIPT, "string is not valid UTF-8");
      free(literal);
    } else if (rc == BR_OK) {
      e = expr_new(EXPR_CODE, type);
      if (!e || !(e->source = strdup(src))) {
        free(code.s);
        goto oom;
      }
      rc = compile_code(env, code.s, code.len, "=expr", &e->ref, err);
    }
    free(code.s);
  } else if (json_is_array(v) && br_script_is_expr(v)) {
    e = expr_new(EXPR_LIST, type);
    size_t n = json_array_size(v);
    if (!e || !(e->items = calloc(n ? n : 1, sizeof *e->items))) goto oom;
    for (size_t i = 0; i < n && rc == BR_OK; i++, e->n++)
      rc = compile_value(env, json_array_get(v, i), BR_PARAM_ANY, &e->items[i], err);
  } else if (json_is_object(v) && br_script_is_expr(v)) {
    e = expr_new(EXPR_OBJECT, type);
    size_t n = json_object_size(v);
    if (!e || !(e->items = calloc(n ? n : 1, sizeof *e->items)) ||
        !(e->keys = calloc(n ? n : 1, sizeof *e->keys)))
      goto oom;
    const char *k;
    json_t *x;
    json_object_foreach((json_t *)v, k, x) {
      if (rc != BR_OK) break;
      if (!(e->keys[e->n] = strdup(k))) goto oom;
      rc = compile_value(env, x, BR_PARAM_ANY, &e->items[e->n], err);
      e->n++;
    }
  } else {
    e = expr_new(EXPR_LITERAL, type);
    if (!e) goto oom;
    e->literal = json_incref((json_t *)v);
  }
  if (rc != BR_OK) {
    expr_free(env->L, e);
    return rc;
  }
  *out = e;
  return BR_OK;
oom:
  expr_free(env->L, e);
  return br_error_set(err, BR_ENOMEM, "out of memory");
}

int br_script_expr_compile(br_script_env *env, const json_t *value, br_param_type type,
                           br_script_expr **out, br_error *err) {
  *out = NULL;
  if (!value) return br_error_set(err, BR_EINVAL, "no value to compile");
  if (env->nexprs == env->capexprs) {
    size_t cap = env->capexprs ? env->capexprs * 2 : 8;
    br_script_expr **p = realloc(env->exprs, cap * sizeof *p);
    if (!p) return br_error_set(err, BR_ENOMEM, "out of memory");
    env->exprs = p;
    env->capexprs = cap;
  }
  br_script_expr *e;
  int rc = compile_value(env, value, type, &e, err);
  if (rc < 0) return rc;
  env->exprs[env->nexprs++] = e;
  *out = e;
  return BR_OK;
}

/* ---- evaluating ---- */

static int check_type(const json_t *v, br_param_type type, br_error *err) {
  bool ok = true;
  switch (type) {
  case BR_PARAM_ANY: break;
  case BR_PARAM_BOOL: ok = json_is_boolean(v); break;
  case BR_PARAM_INT: ok = json_is_integer(v); break;
  case BR_PARAM_FLOAT: ok = json_is_number(v); break;
  case BR_PARAM_STRING: ok = json_is_string(v); break;
  case BR_PARAM_LIST: ok = json_is_array(v); break;
  case BR_PARAM_OBJECT: ok = json_is_object(v); break;
  }
  if (ok) return BR_OK;
  static const char *const names[] = {"object", "list", "string", "int", "float",
                                      "bool",   "bool", "null"};
  return br_error_set(err, BR_ESCRIPT, "expected %s, got %s", br__script_type_name(type),
                      names[json_typeof(v)]);
}

static int eval(br_script_env *env, const br_script_expr *e, const br_script_task *task,
                json_t **out, br_error *err) {
  *out = NULL;
  switch (e->kind) {
  case EXPR_LITERAL:
    *out = json_incref(e->literal);
    return BR_OK;
  case EXPR_CODE: {
    lua_State *L = env->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, e->ref);
    int rc = br__script_call(env, task, err);
    if (rc < 0) return rc;
    char msg[256];
    rc = br__script_convert(L, -1, e->type, out, msg, sizeof msg);
    lua_pop(L, 1);
    if (rc < 0) return br_error_set(err, BR_ESCRIPT, "%s", msg);
    return BR_OK;
  }
  case EXPR_LIST:
  case EXPR_OBJECT: {
    json_t *c = e->kind == EXPR_LIST ? json_array() : json_object();
    if (!c) return br_error_set(err, BR_ENOMEM, "out of memory");
    for (size_t i = 0; i < e->n; i++) {
      json_t *x;
      int rc = eval(env, e->items[i], task, &x, err);
      if (rc < 0) {
        json_decref(c);
        return rc;
      }
      rc = e->kind == EXPR_LIST ? json_array_append_new(c, x) : json_object_set_new(c, e->keys[i], x);
      if (rc) {
        json_decref(c);
        return br_error_set(err, BR_ENOMEM, "out of memory");
      }
    }
    int rc = check_type(c, e->type, err);
    if (rc < 0) {
      json_decref(c);
      return rc;
    }
    *out = c;
    return BR_OK;
  }
  }
  return br_error_set(err, BR_EINVAL, "bad expression");
}

int br_script_expr_eval(br_script_env *env, const br_script_expr *e, const br_script_task *task,
                        json_t **out, br_error *err) {
  return eval(env, e, task, out, err);
}

/* ---- a node's parameters ---- */

static bool listed(const char *const *names, const char *k) {
  for (; names && *names; names++)
    if (strcmp(*names, k) == 0) return true;
  return false;
}

int br_script_env_compile_params(br_script_env *env, const json_t *params,
                                 const br_param_spec *specs, const char *const *literal,
                                 br_error *err) {
  if (!json_is_object(params)) return br_error_set(err, BR_EINVAL, "parameters are not an object");
  br_script_env_set_params(env, params);
  env->params_compiled = true;
  const char *k;
  json_t *v;
  json_object_foreach((json_t *)params, k, v) {
    if (!br_script_is_expr(v) || listed(literal, k)) continue;
    br_param_type type = BR_PARAM_ANY;
    for (const br_param_spec *s = specs; s && s->name; s++)
      if (strcmp(s->name, k) == 0) type = s->type;
    br_script_expr *e;
    int rc = br_script_expr_compile(env, v, type, &e, err);
    if (rc < 0) {
      if (err) {
        char m[sizeof err->msg];
        snprintf(m, sizeof m, "%s", err->msg);
        br_error_set(err, rc, "parameter '%s': %s", k, m);
      }
      return rc;
    }
    struct br__script_param *p = realloc(env->pexprs, (env->npexprs + 1) * sizeof *p);
    if (!p) return br_error_set(err, BR_ENOMEM, "out of memory");
    env->pexprs = p;
    if (!(p[env->npexprs].name = strdup(k))) return br_error_set(err, BR_ENOMEM, "out of memory");
    p[env->npexprs++].expr = e;
  }
  return BR_OK;
}

static br_script_expr *find_param(const br_script_env *env, const char *name) {
  for (size_t i = 0; i < env->npexprs; i++)
    if (strcmp(env->pexprs[i].name, name) == 0) return env->pexprs[i].expr;
  return NULL;
}

bool br_script_env_param_is_expr(const br_script_env *env, const char *name) {
  return find_param(env, name) != NULL;
}

int br_script_env_param(br_script_env *env, const char *name, const br_script_task *task,
                        json_t **out, br_error *err) {
  br_script_expr *e = find_param(env, name);
  if (e) {
    int rc = br_script_expr_eval(env, e, task, out, err);
    if (rc < 0 && err) {
      char m[sizeof err->msg];
      snprintf(m, sizeof m, "%s", err->msg);
      br_error_set(err, rc, "parameter '%s': %s", name, m);
    }
    return rc;
  }
  json_t *v = env->params ? json_object_get(env->params, name) : NULL;
  *out = v ? json_incref(v) : NULL;
  return BR_OK;
}

/* ---- script chunks ---- */

int br_script_compile(br_script_env *env, const char *source, const char *name,
                      br_script_chunk **out, br_error *err) {
  *out = NULL;
  if (!source) return br_error_set(err, BR_EINVAL, "no script source");
  char chunkname[128];
  snprintf(chunkname, sizeof chunkname, "=%s", name ? name : "script");
  br_script_chunk *c = calloc(1, sizeof *c);
  br_script_chunk **p = realloc(env->chunks, (env->nchunks + 1) * sizeof *p);
  if (!c || !p) {
    free(c);
    if (p) env->chunks = p;
    return br_error_set(err, BR_ENOMEM, "out of memory");
  }
  env->chunks = p;
  int rc = compile_code(env, source, strlen(source), chunkname, &c->ref, err);
  if (rc < 0) {
    free(c);
    return rc;
  }
  env->chunks[env->nchunks++] = c;
  *out = c;
  return BR_OK;
}

int br__script_chunk_ref(const br_script_chunk *c) { return c->ref; }
