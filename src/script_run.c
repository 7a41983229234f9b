/* The script node's side of the module: the actions a chunk can take (set,
 * delete, spawn, split, route, wait, fail), collected while it runs and
 * delivered through br_script_ops only when it finishes, so that a runtime
 * error or a limit leaves the task as it was.
 *
 * Every action converts its Lua arguments to JSON first (which never raises)
 * and raises only after freeing what it built, so nothing leaks on the
 * longjmp of a Lua error. */
#include "script_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char fail_sentinel = 'F';

static br_script_env *need(lua_State *L, const char *what, bool have) {
  br_script_env *env = br__script_env_of(L);
  if (!env->in_script) luaL_error(L, "%s is only available in a script node", what);
  if (!have) luaL_error(L, "%s is not supported here", what);
  return env;
}

static void act_free(br__script_action *a) {
  free(a->key);
  json_decref(a->value);
  for (size_t i = 0; a->elems && i < a->n; i++) json_decref(a->elems[i]);
  free(a->elems);
}

/* Appends a (taking its contents); on failure frees them and raises. */
static void push_act(lua_State *L, br_script_env *env, br__script_action a) {
  if (env->nacts == env->capacts) {
    size_t cap = env->capacts ? env->capacts * 2 : 16;
    br__script_action *p = realloc(env->acts, cap * sizeof *p);
    if (!p) {
      act_free(&a);
      luaL_error(L, "out of memory");
    }
    env->acts = p;
    env->capacts = cap;
  }
  env->acts[env->nacts++] = a;
}

int br__script_attr_set(lua_State *L, int kidx, int vidx) {
  br_script_env *env = br__script_env_of(L);
  bool del = lua_isnoneornil(L, vidx);
  need(L, del ? "deleting attributes" : "setting attributes",
       env->ops && (del ? env->ops->del_attr != NULL : env->ops->set_attr != NULL));
  if (lua_type(L, kidx) != LUA_TSTRING)
    return luaL_error(L, "attribute names must be strings, got %s", luaL_typename(L, kidx));
  size_t klen;
  const char *k = lua_tolstring(L, kidx, &klen);
  if (klen == 0 || strlen(k) != klen) return luaL_error(L, "bad attribute name");
  char *key = strdup(k);
  if (!key) return luaL_error(L, "out of memory");
  if (del) {
    json_object_del(env->ov_set, k);
    if (json_object_set_new(env->ov_del, k, json_true()) != 0) {
      free(key);
      return luaL_error(L, "bad attribute name '%s' (not valid UTF-8)", k);
    }
    push_act(L, env, (br__script_action){.kind = BR__ACT_DEL, .key = key});
    return 0;
  }
  char msg[256];
  json_t *v;
  if (br__script_to_json(L, vidx, BR_PARAM_ANY, &v, msg, sizeof msg) < 0) {
    free(key);
    return luaL_error(L, "cannot set attribute '%s': %s", k, msg);
  }
  if (json_object_set(env->ov_set, k, v) != 0) {
    free(key);
    json_decref(v);
    return luaL_error(L, "bad attribute name '%s' (not valid UTF-8)", k);
  }
  json_object_del(env->ov_del, k);
  push_act(L, env, (br__script_action){.kind = BR__ACT_SET, .key = key, .value = v});
  return 0;
}

static int l_spawn(lua_State *L) {
  br_script_env *env = br__script_env_of(L);
  need(L, "spawn()", env->ops && env->ops->spawn);
  const char *name = luaL_optstring(L, 2, NULL);
  char *n = NULL;
  if (name && !(n = strdup(name))) return luaL_error(L, "out of memory");
  lua_settop(L, 1);
  json_t *a;
  if (lua_isnoneornil(L, 1) || lua_type(L, 1) == LUA_TTABLE) {
    char msg[256];
    if (lua_isnoneornil(L, 1)) {
      a = json_object();
    } else if (br__script_to_json(L, 1, BR_PARAM_OBJECT, &a, msg, sizeof msg) < 0) {
      free(n);
      return luaL_error(L, "spawn: %s", msg);
    }
    if (a && !json_is_object(a)) {
      json_decref(a);
      free(n);
      return luaL_error(L, "spawn: attributes must be a table with string keys, not a list");
    }
  } else {
    free(n);
    return luaL_error(L, "spawn: expected a table of attributes, got %s", luaL_typename(L, 1));
  }
  if (!a) {
    free(n);
    return luaL_error(L, "out of memory");
  }
  push_act(L, env, (br__script_action){.kind = BR__ACT_SPAWN, .key = n, .value = a});
  return 0;
}

#define MAX_SPLIT 1000000

static int l_split(lua_State *L) {
  br_script_env *env = br__script_env_of(L);
  need(L, "split()", env->ops && env->ops->split);
  lua_Integer n;
  bool list = lua_type(L, 1) == LUA_TTABLE;
  if (list) n = (lua_Integer)lua_rawlen(L, 1);
  else if (lua_isinteger(L, 1)) n = lua_tointeger(L, 1);
  else return luaL_error(L, "split: expected a list of attribute tables or a count, got %s",
                         luaL_typename(L, 1));
  if (n < 1 || n > MAX_SPLIT)
    return luaL_error(L, "split: the count must be 1..%d, got %I", MAX_SPLIT, (LUAI_UACINT)n);
  json_t **elems = calloc((size_t)n, sizeof *elems);
  if (!elems) return luaL_error(L, "out of memory");
  for (lua_Integer i = 0; list && i < n; i++) {
    char msg[256] = "";
    int t = lua_rawgeti(L, 1, i + 1);
    if (t == LUA_TTABLE) {
      if (br__script_to_json(L, -1, BR_PARAM_OBJECT, &elems[i], msg, sizeof msg) == 0 &&
          !json_is_object(elems[i]))
        snprintf(msg, sizeof msg, "attributes must be a table with string keys, not a list");
    } else if (t != LUA_TNIL) {
      snprintf(msg, sizeof msg, "expected a table of attributes, got %s", lua_typename(L, t));
    }
    lua_pop(L, 1);
    if (msg[0]) {
      for (lua_Integer j = 0; j <= i; j++) json_decref(elems[j]);
      free(elems);
      return luaL_error(L, "split: element %I: %s", (LUAI_UACINT)(i + 1), msg);
    }
  }
  push_act(L, env, (br__script_action){.kind = BR__ACT_SPLIT, .elems = elems, .n = (size_t)n});
  return 0;
}

static int l_route(lua_State *L) {
  br_script_env *env = br__script_env_of(L);
  need(L, "route()", env->ops && env->ops->route);
  int port;
  if (lua_type(L, 1) == LUA_TNUMBER) {
    lua_Integer i = luaL_checkinteger(L, 1);
    if (i < 1 || i > 100000)
      return luaL_error(L, "route: outputs are numbered from 1, got %I", (LUAI_UACINT)i);
    port = (int)i - 1;
  } else if (lua_type(L, 1) == LUA_TSTRING) {
    const char *name = lua_tostring(L, 1);
    if (!env->ops->output_index)
      return luaL_error(L, "route: outputs can only be chosen by number here");
    port = env->ops->output_index(env->ops->ud, name);
    if (port < 0) return luaL_error(L, "route: no output named '%s'", name);
  } else {
    return luaL_error(L, "route: expected an output name or number, got %s", luaL_typename(L, 1));
  }
  env->decision = 1;
  env->route_port = port;
  return 0;
}

static int l_wait(lua_State *L) {
  br_script_env *env = br__script_env_of(L);
  need(L, "wait()", env->ops && env->ops->wait);
  int64_t key;
  if (lua_isinteger(L, 1)) {
    key = (int64_t)lua_tointeger(L, 1);
  } else if (lua_type(L, 1) == LUA_TSTRING) {
    size_t len;
    const unsigned char *s = (const unsigned char *)lua_tolstring(L, 1, &len);
    uint64_t h = 14695981039346656037ull; /* FNV-1a */
    for (size_t i = 0; i < len; i++) h = (h ^ s[i]) * 1099511628211ull;
    key = (int64_t)(h >> 1);
  } else {
    return luaL_error(L, "wait: expected an integer or string key, got %s", luaL_typename(L, 1));
  }
  env->decision = 2;
  env->wait_key = key;
  return 0;
}

static int l_fail(lua_State *L) {
  br_script_env *env = need(L, "fail()", true);
  const char *msg = luaL_optstring(L, 1, "failed by the script");
  if (!env->failed) {
    env->fail_msg = strdup(msg);
    if (!env->fail_msg) return luaL_error(L, "out of memory");
    env->failed = true;
  }
  lua_pushlightuserdata(L, (void *)&fail_sentinel);
  return lua_error(L);
}

/* Methods: task:spawn(...) is spawn(...) without self. */
static int m_spawn(lua_State *L) { lua_remove(L, 1); return l_spawn(L); }
static int m_split(lua_State *L) { lua_remove(L, 1); return l_split(L); }
static int m_route(lua_State *L) { lua_remove(L, 1); return l_route(L); }
static int m_wait(lua_State *L) { lua_remove(L, 1); return l_wait(L); }
static int m_fail(lua_State *L) { lua_remove(L, 1); return l_fail(L); }
static int m_set(lua_State *L) {
  lua_settop(L, 3);
  return br__script_attr_set(L, 2, 3);
}
static int m_delete(lua_State *L) {
  lua_settop(L, 2);
  lua_pushnil(L);
  return br__script_attr_set(L, 2, 3);
}
static int m_get(lua_State *L) {
  lua_settop(L, 2);
  lua_getfield(L, 1, "attr");
  lua_insert(L, 2);
  lua_gettable(L, 2);
  return 1;
}

int br__script_task_method(lua_State *L, const char *k) {
  static const luaL_Reg methods[] = {
      {"get", m_get},     {"set", m_set},     {"delete", m_delete}, {"spawn", m_spawn},
      {"split", m_split}, {"route", m_route}, {"wait", m_wait},     {"fail", m_fail},
      {NULL, NULL},
  };
  for (const luaL_Reg *m = methods; m->name; m++) {
    if (strcmp(m->name, k) == 0) {
      lua_pushcfunction(L, m->func);
      return 1;
    }
  }
  return 0;
}

void br__script_open_node(lua_State *L) {
  static const luaL_Reg fns[] = {
      {"spawn", l_spawn}, {"split", l_split}, {"route", l_route},
      {"wait", l_wait},   {"fail", l_fail},   {NULL, NULL},
  };
  luaL_setfuncs(L, fns, 0);
}

void br__script_reset_run(br_script_env *env) {
  for (size_t i = 0; i < env->nacts; i++) act_free(&env->acts[i]);
  env->nacts = 0;
  if (env->ov_set) json_object_clear(env->ov_set);
  if (env->ov_del) json_object_clear(env->ov_del);
  env->decision = 0;
  env->failed = false;
  free(env->fail_msg);
  env->fail_msg = NULL;
  env->in_script = false;
  env->ops = NULL;
}

static int deliver(br_script_env *env, const br_script_ops *ops, br_error *err) {
  for (size_t i = 0; i < env->nacts; i++) {
    br__script_action *a = &env->acts[i];
    json_t *v = a->value;
    a->value = NULL;
    int rc = 0;
    switch (a->kind) {
    case BR__ACT_SET: rc = ops->set_attr(ops->ud, a->key, v, err); break;
    case BR__ACT_DEL: rc = ops->del_attr(ops->ud, a->key, err); break;
    case BR__ACT_SPAWN: rc = ops->spawn(ops->ud, a->key, v, err); break;
    case BR__ACT_SPLIT:
      rc = ops->split(ops->ud, a->n, a->elems, err);
      for (size_t j = 0; j < a->n; j++) a->elems[j] = NULL;
      break;
    }
    if (rc < 0) return err && err->code ? err->code : rc;
  }
  int rc = 0;
  if (env->decision == 1) rc = ops->route(ops->ud, env->route_port, err);
  else if (env->decision == 2) rc = ops->wait(ops->ud, env->wait_key, err);
  if (rc < 0) return err && err->code ? err->code : rc;
  return BR_OK;
}

int br_script_run(br_script_env *env, const br_script_chunk *chunk, const br_script_task *task,
                  const br_script_ops *ops, br_error *err) {
  static const br_script_ops none = {0};
  lua_State *L = env->L;
  br__script_reset_run(env);
  if (!ops) ops = &none;
  env->in_script = true;
  env->ops = ops;
  lua_rawgeti(L, LUA_REGISTRYINDEX, br__script_chunk_ref(chunk));
  int rc = br__script_call(env, task, err);
  if (rc == BR_OK) lua_pop(L, 1);
  env->in_script = false;
  if (env->failed && !env->tripped) {
    if (err) br_error_clear(err);
    if (ops->fail) ops->fail(ops->ud, env->fail_msg);
    else rc = br_error_set(err, BR_ESCRIPT, "%s", env->fail_msg);
    if (ops->fail) rc = BR_OK;
  } else if (rc == BR_OK) {
    rc = deliver(env, ops, err);
  }
  br__script_reset_run(env);
  return rc;
}
