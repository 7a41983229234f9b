/* The small library expressions get on top of string/math/table: path
 * helpers (POSIX paths, as a pipeline writes them), pad() for frame numbers
 * and fmt() (string.format under a short name). Written in C because they run
 * per task in hot path expressions. */
#include "script_int.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* path.join(a, b, ...): "/" between parts; an absolute part restarts the
 * path; empty parts are skipped. */
static int l_path_join(lua_State *L) {
  int n = lua_gettop(L);
  int start = 1;
  for (int i = 1; i <= n; i++) {
    const char *s = luaL_checkstring(L, i);
    if (s[0] == '/') start = i;
  }
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  char last = 0;
  bool any = false;
  for (int i = start; i <= n; i++) {
    size_t len;
    const char *s = lua_tolstring(L, i, &len);
    if (len == 0) continue;
    if (any && last != '/') luaL_addchar(&b, '/');
    luaL_addlstring(&b, s, len);
    if (len) last = s[len - 1];
    any = true;
  }
  luaL_pushresult(&b);
  return 1;
}

/* Length of p without trailing slashes (but keeping a lone "/"). */
static size_t strip_slashes(const char *p, size_t len) {
  while (len > 1 && p[len - 1] == '/') len--;
  return len;
}

static int l_path_dirname(lua_State *L) {
  size_t len;
  const char *p = luaL_checklstring(L, 1, &len);
  len = strip_slashes(p, len);
  size_t i = len;
  while (i > 0 && p[i - 1] != '/') i--;
  if (i == 0) {
    lua_pushstring(L, len && p[0] == '/' ? "/" : ".");
    return 1;
  }
  i = strip_slashes(p, i); /* "a//b" -> "a"; "/b" -> "/" */
  if (i > 1 && p[i - 1] == '/') i--;
  lua_pushlstring(L, p, i);
  return 1;
}

/* The last component of p (start and length), POSIX basename style. */
static void base_of(const char *p, size_t len, size_t *start, size_t *blen) {
  len = strip_slashes(p, len);
  if (len == 1 && p[0] == '/') {
    *start = 0;
    *blen = 1;
    return;
  }
  size_t i = len;
  while (i > 0 && p[i - 1] != '/') i--;
  *start = i;
  *blen = len - i;
}

static int l_path_basename(lua_State *L) {
  size_t len, s, bl;
  const char *p = luaL_checklstring(L, 1, &len);
  base_of(p, len, &s, &bl);
  lua_pushlstring(L, p + s, bl);
  return 1;
}

/* Index of the extension's dot in the base name, or bl when none (a leading
 * dot, as in ".bashrc", is not an extension). */
static size_t ext_dot(const char *b, size_t bl) {
  for (size_t i = bl; i > 1; i--)
    if (b[i - 1] == '.') return i - 1;
  return bl;
}

static int l_path_ext(lua_State *L) {
  size_t len, s, bl;
  const char *p = luaL_checklstring(L, 1, &len);
  base_of(p, len, &s, &bl);
  size_t d = ext_dot(p + s, bl);
  lua_pushlstring(L, p + s + d, bl - d);
  return 1;
}

static int l_path_stem(lua_State *L) {
  size_t len, s, bl;
  const char *p = luaL_checklstring(L, 1, &len);
  base_of(p, len, &s, &bl);
  lua_pushlstring(L, p + s, ext_dot(p + s, bl));
  return 1;
}

/* pad(n, width): n as a decimal integer zero-padded to width ("%0*d"). */
static int l_pad(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  lua_Integer w = luaL_optinteger(L, 2, 4);
  luaL_argcheck(L, w >= 0 && w <= 64, 2, "width must be 0..64");
  char buf[96];
  int len = snprintf(buf, sizeof buf, "%0*lld", (int)w, (long long)n);
  lua_pushlstring(L, buf, (size_t)len);
  return 1;
}

/* Lua's pattern matcher backtracks in C, where the instruction limit does
 * not reach: string.find(string.rep('a', 1e6), '.-b') would take an hour.
 * So the pattern functions refuse a subject too long for the pattern: with
 * k = repetition items (* + - %b), plus one when unanchored (every start
 * position is tried), the worst case is about n^k / k! steps, kept under
 * PATTERN_BUDGET (about two seconds). Patterns with one repetition on short
 * strings, the common case, are never affected. */
#define PATTERN_BUDGET 5e8

static int pattern_repetitions(const char *p, size_t len) {
  int q = 0;
  for (size_t i = 0; i < len; i++) {
    char c = p[i];
    if (c == '%') {
      if (i + 1 < len && p[i + 1] == 'b') {
        q++;
        i += 3;
      } else {
        i++;
      }
    } else if (c == '[') {
      i++;
      if (i < len && p[i] == '^') i++;
      if (i < len && p[i] == ']') i++;
      while (i < len && p[i] != ']') {
        if (p[i] == '%') i++;
        i++;
      }
    } else if (c == '*' || c == '+' || c == '-') {
      q++;
    }
  }
  return q;
}

static int l_guarded_pattern(lua_State *L) {
  size_t n, plen;
  luaL_checklstring(L, 1, &n);
  const char *p = luaL_checklstring(L, 2, &plen);
  const char *name = lua_tostring(L, lua_upvalueindex(2));
  bool plain = strcmp(name, "find") == 0 && lua_toboolean(L, 4);
  if (!plain) {
    int k = pattern_repetitions(p, plen) + (plen && p[0] == '^' ? 0 : 1);
    double cost = 1;
    for (int i = 1; i <= k && cost <= PATTERN_BUDGET; i++) cost = cost * (double)n / i;
    if (k >= 2 && cost > PATTERN_BUDGET)
      return luaL_error(L, "string.%s: pattern '%s' is too costly on a string of %d bytes",
                        name, plen > 40 ? "(long pattern)" : p, (int)(n > INT32_MAX ? INT32_MAX : n));
  }
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
  return lua_gettop(L);
}

void br__script_open_lib(lua_State *L) {
  static const char *const pattern_fns[] = {"find", "match", "gmatch", "gsub", NULL};
  lua_getfield(L, -1, "string");
  for (int i = 0; pattern_fns[i]; i++) {
    lua_getfield(L, -1, pattern_fns[i]);
    lua_pushstring(L, pattern_fns[i]);
    lua_pushcclosure(L, l_guarded_pattern, 2);
    lua_setfield(L, -2, pattern_fns[i]);
  }
  lua_pop(L, 1);

  static const luaL_Reg path[] = {
      {"join", l_path_join},   {"dirname", l_path_dirname}, {"basename", l_path_basename},
      {"ext", l_path_ext},     {"stem", l_path_stem},       {NULL, NULL},
  };
  luaL_newlib(L, path);
  lua_setfield(L, -2, "path");
  lua_pushcfunction(L, l_pad);
  lua_setfield(L, -2, "pad");
  lua_getfield(L, -1, "string");
  lua_getfield(L, -1, "format");
  lua_setfield(L, -3, "fmt");
  lua_pop(L, 1);
}
