/* JSON <-> Lua for the script module.
 *
 * JSON to Lua pushes plain values; lists and objects become tables that carry
 * a marker metatable (list or object) so that an empty one converts back to
 * what it was. Lua to JSON never raises a Lua error (it uses only API calls
 * that cannot fail), so a partly built json_t is never lost to a longjmp: on
 * failure it is freed here and a message is returned. A table is a list when
 * its keys are exactly 1..n (an empty unmarked table is a list unless an
 * object is expected), an object otherwise (integer keys become strings). */
#include "script_int.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char br__script_objmt_key = 'o';
const char br__script_arrmt_key = 'a';

#define MAX_DEPTH 64

const char *br__script_type_name(br_param_type t) {
  switch (t) {
  case BR_PARAM_ANY: return "any";
  case BR_PARAM_BOOL: return "bool";
  case BR_PARAM_INT: return "int";
  case BR_PARAM_FLOAT: return "float";
  case BR_PARAM_STRING: return "string";
  case BR_PARAM_LIST: return "list";
  case BR_PARAM_OBJECT: return "object";
  }
  return "?";
}

static void push_json(lua_State *L, const json_t *v, int depth) {
  switch (json_typeof(v)) {
  case JSON_NULL: lua_pushnil(L); return;
  case JSON_TRUE: lua_pushboolean(L, 1); return;
  case JSON_FALSE: lua_pushboolean(L, 0); return;
  case JSON_INTEGER: lua_pushinteger(L, (lua_Integer)json_integer_value(v)); return;
  case JSON_REAL: lua_pushnumber(L, json_real_value(v)); return;
  case JSON_STRING: lua_pushlstring(L, json_string_value(v), json_string_length(v)); return;
  case JSON_ARRAY: {
    if (depth > MAX_DEPTH) luaL_error(L, "attribute nested too deep");
    luaL_checkstack(L, 3, "attribute nested too deep");
    size_t n = json_array_size(v);
    lua_createtable(L, n > INT32_MAX ? 0 : (int)n, 0);
    for (size_t i = 0; i < n; i++) {
      push_json(L, json_array_get(v, i), depth + 1);
      lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_rawgetp(L, LUA_REGISTRYINDEX, &br__script_arrmt_key);
    lua_setmetatable(L, -2);
    return;
  }
  case JSON_OBJECT: {
    if (depth > MAX_DEPTH) luaL_error(L, "attribute nested too deep");
    luaL_checkstack(L, 3, "attribute nested too deep");
    size_t n = json_object_size(v);
    lua_createtable(L, 0, n > INT32_MAX ? 0 : (int)n);
    const char *k;
    size_t klen;
    json_t *val;
    json_object_keylen_foreach((json_t *)v, k, klen, val) {
      if (json_is_null(val)) continue;
      lua_pushlstring(L, k, klen);
      push_json(L, val, depth + 1);
      lua_rawset(L, -3);
    }
    lua_rawgetp(L, LUA_REGISTRYINDEX, &br__script_objmt_key);
    lua_setmetatable(L, -2);
    return;
  }
  }
  lua_pushnil(L);
}

void br__script_push_json(lua_State *L, const json_t *v) {
  if (!v) lua_pushnil(L);
  else push_json(L, v, 0);
}

void br__script_describe(lua_State *L, int idx, char *buf, size_t size) {
  switch (lua_type(L, idx)) {
  case LUA_TNIL: snprintf(buf, size, "nil"); return;
  case LUA_TBOOLEAN: snprintf(buf, size, "bool %s", lua_toboolean(L, idx) ? "true" : "false"); return;
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx))
      snprintf(buf, size, "int %lld", (long long)lua_tointeger(L, idx));
    else
      snprintf(buf, size, "float %.14g", (double)lua_tonumber(L, idx));
    return;
  case LUA_TSTRING: {
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    if (len > 40) snprintf(buf, size, "string '%.37s...'", s);
    else snprintf(buf, size, "string '%s'", s);
    return;
  }
  default: snprintf(buf, size, "%s", lua_typename(L, lua_type(L, idx))); return;
  }
}

static json_t *fail_msg(char *msg, size_t size, const char *fmt, const char *a) {
  snprintf(msg, size, fmt, a);
  return NULL;
}

/* braid refuses a NUL in strings, as in graph files and `braid ctl set`:
 * the stores would read such attributes back as none at all. */
#define NUL_REFUSED "holds \\0 (a NUL character), which braid does not take"

static json_t *to_json(lua_State *L, int idx, br_param_type hint, int depth, char *msg,
                       size_t size);

/* Which marker metatable the table at idx has: 1 object, 2 list, 0 none. */
static int table_marker(lua_State *L, int idx) {
  if (!lua_getmetatable(L, idx)) return 0;
  int kind = 0;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &br__script_objmt_key);
  if (lua_rawequal(L, -1, -2)) kind = 1;
  lua_pop(L, 1);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &br__script_arrmt_key);
  if (lua_rawequal(L, -1, -2)) kind = 2;
  lua_pop(L, 2);
  return kind;
}

static json_t *table_to_json(lua_State *L, int idx, br_param_type hint, int depth, char *msg,
                             size_t size) {
  if (depth > MAX_DEPTH) return fail_msg(msg, size, "tables nested too deep%s", " (a cycle?)");
  if (!lua_checkstack(L, 6)) return fail_msg(msg, size, "tables nested too deep%s", "");
  int marker = table_marker(L, idx);
  size_t n = 0;
  lua_Integer max = 0;
  bool all_int = true;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    n++;
    int kt = lua_type(L, -2);
    if (kt == LUA_TNUMBER && lua_isinteger(L, -2)) {
      lua_Integer k = lua_tointeger(L, -2);
      if (k < 1) all_int = false;
      else if (k > max) max = k;
    } else if (kt == LUA_TNUMBER || kt == LUA_TSTRING) {
      all_int = false;
    } else {
      lua_pop(L, 2);
      return fail_msg(msg, size, "cannot convert a table with a %s key to JSON",
                      lua_typename(L, kt));
    }
    lua_pop(L, 1);
  }
  bool is_list;
  if (n == 0) is_list = marker == 2 || (marker == 0 && hint != BR_PARAM_OBJECT);
  else is_list = marker != 1 && all_int && (size_t)max == n;

  if (is_list) {
    json_t *arr = json_array();
    if (!arr) return fail_msg(msg, size, "out of memory%s", "");
    for (size_t i = 1; i <= n; i++) {
      lua_rawgeti(L, idx, (lua_Integer)i);
      json_t *el = to_json(L, lua_gettop(L), BR_PARAM_ANY, depth + 1, msg, size);
      lua_pop(L, 1);
      if (!el || json_array_append_new(arr, el) != 0) {
        json_decref(arr);
        if (el) return fail_msg(msg, size, "out of memory%s", "");
        return NULL;
      }
    }
    return arr;
  }

  json_t *obj = json_object();
  if (!obj) return fail_msg(msg, size, "out of memory%s", "");
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    char numkey[64];
    const char *k;
    size_t klen;
    if (lua_type(L, -2) == LUA_TSTRING) {
      k = lua_tolstring(L, -2, &klen); /* a string: no conversion, safe for lua_next */
      if (memchr(k, 0, klen)) {
        lua_pop(L, 2);
        json_decref(obj);
        return fail_msg(msg, size, "a key %s", NUL_REFUSED);
      }
    } else if (lua_isinteger(L, -2)) {
      klen = (size_t)snprintf(numkey, sizeof numkey, "%lld", (long long)lua_tointeger(L, -2));
      k = numkey;
    } else {
      klen = (size_t)snprintf(numkey, sizeof numkey, "%.14g", (double)lua_tonumber(L, -2));
      k = numkey;
    }
    json_t *el = to_json(L, lua_gettop(L), BR_PARAM_ANY, depth + 1, msg, size);
    if (!el) {
      lua_pop(L, 2);
      json_decref(obj);
      return NULL;
    }
    if (json_object_setn_new(obj, k, klen, el) != 0) {
      lua_pop(L, 2);
      json_decref(obj);
      return fail_msg(msg, size, "cannot use key '%s' (not valid UTF-8?)", k);
    }
    lua_pop(L, 1);
  }
  return obj;
}

static json_t *to_json(lua_State *L, int idx, br_param_type hint, int depth, char *msg,
                       size_t size) {
  switch (lua_type(L, idx)) {
  case LUA_TNIL: return json_null();
  case LUA_TBOOLEAN: return json_boolean(lua_toboolean(L, idx));
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx)) return json_integer((json_int_t)lua_tointeger(L, idx));
    else {
      double d = (double)lua_tonumber(L, idx);
      if (!isfinite(d)) return fail_msg(msg, size, "cannot convert %s to JSON", d != d ? "nan" : "inf");
      return json_real(d);
    }
  case LUA_TSTRING: {
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    if (memchr(s, 0, len)) return fail_msg(msg, size, "a string %s", NUL_REFUSED);
    json_t *j = json_stringn(s, len);
    if (!j) return fail_msg(msg, size, "string is not valid UTF-8%s", "");
    return j;
  }
  case LUA_TTABLE: return table_to_json(L, idx, hint, depth, msg, size);
  default:
    return fail_msg(msg, size, "cannot convert a %s value to JSON",
                    lua_typename(L, lua_type(L, idx)));
  }
}

int br__script_to_json(lua_State *L, int idx, br_param_type hint, json_t **out, char *msg,
                       size_t msgsize) {
  *out = to_json(L, lua_absindex(L, idx), hint, 0, msg, msgsize);
  return *out ? 0 : -1;
}

static int expected(lua_State *L, int idx, br_param_type type, char *msg, size_t size) {
  char what[96];
  br__script_describe(L, idx, what, sizeof what);
  snprintf(msg, size, "expected %s, got %s", br__script_type_name(type), what);
  return -1;
}

/* A whole string as a number (surrounding blanks allowed). */
static bool parse_int(const char *s, long long *v) {
  char *end;
  errno = 0;
  *v = strtoll(s, &end, 10);
  if (end == s || errno) return false;
  while (*end == ' ' || *end == '\t') end++;
  return *end == 0;
}

static bool parse_float(const char *s, double *v) {
  char *end;
  errno = 0;
  *v = strtod(s, &end);
  if (end == s || errno || !isfinite(*v)) return false;
  while (*end == ' ' || *end == '\t') end++;
  return *end == 0;
}

int br__script_convert(lua_State *L, int idx, br_param_type type, json_t **out, char *msg,
                       size_t size) {
  idx = lua_absindex(L, idx);
  int t = lua_type(L, idx);
  *out = NULL;
  switch (type) {
  case BR_PARAM_ANY: return br__script_to_json(L, idx, BR_PARAM_ANY, out, msg, size);
  case BR_PARAM_BOOL:
    if (t != LUA_TBOOLEAN) return expected(L, idx, type, msg, size);
    *out = json_boolean(lua_toboolean(L, idx));
    break;
  case BR_PARAM_INT:
    if (t == LUA_TNUMBER) {
      lua_Integer i;
      if (lua_isinteger(L, idx)) {
        i = lua_tointeger(L, idx);
      } else {
        double d = (double)lua_tonumber(L, idx);
        if (d != floor(d) || d < -9.2e18 || d > 9.2e18) return expected(L, idx, type, msg, size);
        i = (lua_Integer)d;
      }
      *out = json_integer((json_int_t)i);
    } else if (t == LUA_TSTRING) {
      long long v;
      if (!parse_int(lua_tostring(L, idx), &v)) return expected(L, idx, type, msg, size);
      *out = json_integer((json_int_t)v);
    } else {
      return expected(L, idx, type, msg, size);
    }
    break;
  case BR_PARAM_FLOAT:
    if (t == LUA_TNUMBER) {
      double d = (double)lua_tonumber(L, idx);
      if (!isfinite(d)) return expected(L, idx, type, msg, size);
      *out = json_real(d);
    } else if (t == LUA_TSTRING) {
      double d;
      if (!parse_float(lua_tostring(L, idx), &d)) return expected(L, idx, type, msg, size);
      *out = json_real(d);
    } else {
      return expected(L, idx, type, msg, size);
    }
    break;
  case BR_PARAM_STRING:
    if (t == LUA_TSTRING) {
      size_t len;
      const char *s = lua_tolstring(L, idx, &len);
      if (memchr(s, 0, len)) {
        snprintf(msg, size, "expected string, got a string that " NUL_REFUSED);
        return -1;
      }
      *out = json_stringn(s, len);
      if (!*out) {
        snprintf(msg, size, "expected string, got a string that is not valid UTF-8");
        return -1;
      }
      return 0;
    } else if (t == LUA_TNUMBER) {
      /* as Lua's tostring would write it, without calling it (it can raise) */
      char buf[64];
      if (lua_isinteger(L, idx)) {
        snprintf(buf, sizeof buf, "%lld", (long long)lua_tointeger(L, idx));
      } else {
        snprintf(buf, sizeof buf, "%.14g", (double)lua_tonumber(L, idx));
        if (strspn(buf, "-0123456789") == strlen(buf)) strcat(buf, ".0");
      }
      *out = json_string(buf);
    } else {
      return expected(L, idx, type, msg, size);
    }
    break;
  case BR_PARAM_LIST:
  case BR_PARAM_OBJECT: {
    if (t != LUA_TTABLE) return expected(L, idx, type, msg, size);
    if (br__script_to_json(L, idx, type, out, msg, size) < 0) return -1;
    bool ok = type == BR_PARAM_LIST ? json_is_array(*out) : json_is_object(*out);
    if (!ok) {
      json_decref(*out);
      *out = NULL;
      snprintf(msg, size, "expected %s, got %s", br__script_type_name(type),
               type == BR_PARAM_LIST ? "a table with non-sequence keys (an object)"
                                     : "a list");
      return -1;
    }
    return 0;
  }
  }
  if (!*out) {
    snprintf(msg, size, "out of memory");
    return -1;
  }
  return 0;
}
