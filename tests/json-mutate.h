/* Seeded mutations of JSON bodies, for tests that throw damaged input at a
 * server (test-server-fuzz, test-xfer-depot-fuzz): values of other types,
 * out of range or odd, members dropped, added or repeated, deep nesting,
 * and byte-level damage to the text. jm_rng is the state: set it to a
 * run's seed (not 0) first. */
#ifndef BR_TEST_JSON_MUTATE_H
#define BR_TEST_JSON_MUTATE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifndef JM_UNUSED
#define JM_UNUSED __attribute__((unused))
#endif

JM_UNUSED static uint64_t jm_rng;

JM_UNUSED static uint64_t jm_next(void) {
  jm_rng ^= jm_rng << 13;
  jm_rng ^= jm_rng >> 7;
  jm_rng ^= jm_rng << 17;
  return jm_rng;
}

JM_UNUSED static size_t jm_pick(size_t n) { return n ? (size_t)(jm_next() % n) : 0; }

/* ---- mutations ---- */

JM_UNUSED static json_t *jm_deep(int levels, bool arrays) {
  json_t *v = json_integer(1);
  for (int i = 0; i < levels; i++) {
    json_t *o = arrays ? json_array() : json_object();
    if (arrays) json_array_append_new(o, v);
    else json_object_set_new(o, "a", v);
    v = o;
  }
  return v;
}

/* A value a careless handler would trip on. */
JM_UNUSED static json_t *jm_odd_value(void) {
  static const char *const strs[] = {
      "", "x", "../../../etc/passwd", "/abs", "C:\\con", "{n}", "%s%s%n",
      "\xc3\xa9\xe2\x80\xa8", "start", "one-job", "user", "admin", "done", "failed",
      "9223372036854775807", "-1", "null",
      "0000000000000000000000000000000000000000000000000000000000000000",
      "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"};
  switch (jm_pick(17)) {
  case 0: return json_null();
  case 1: return json_true();
  case 2: return json_false();
  case 3: return json_integer(0);
  case 4: return json_integer(-1);
  case 5: return json_integer(INT64_MAX);
  case 6: return json_integer(INT64_MIN);
  case 7: return json_integer((json_int_t)1 << 31);
  case 8: return json_real(1e300);
  case 9: return json_real(-0.5);
  case 10: {
    size_t n = 1 + jm_pick(3) * 20000;
    char *s = malloc(n + 1);
    memset(s, 'a' + (int)jm_pick(26), n);
    s[n] = 0;
    json_t *v = json_string(s);
    free(s);
    return v;
  }
  case 11: return json_array();
  case 12: return json_object();
  case 13: return jm_deep(20 + (int)jm_pick(200), true);
  case 14: return jm_deep(20 + (int)jm_pick(200), false);
  case 15: return json_pack("[iii]", 1, 2, 3);
  default: return json_string(strs[jm_pick(sizeof strs / sizeof *strs)]);
  }
}

/* Member names the endpoints read (and two odd ones). */
JM_UNUSED static const char *const jm_keys[] = {
    "id",      "session", "events",   "priority", "attrs",  "node",      "graph",
    "version", "seq",     "inv",      "type",     "task",   "status",    "slots",
    "free",    "wait_ms", "tags",     "max",      "role",   "name",      "drain",
    "held",    "cores",   "memory_mb", "gpus",    "offset", "data",      "exit_code",
    "set_attrs", "runtime", "group",  "nodes",    "params", "chunks",    "zstd",
    "files",   "path",    "size",     "mode",     "mtime_ns", "digest",  "chunk_size",
    "versions", "grace_s", "dry_run", "",         "\xc3\xa9"};

/* Every container and value in v, depth first (v itself first). */
JM_UNUSED static void jm_collect(json_t *v, json_t ***all, size_t *n, size_t *cap) {
  if (*n == *cap) {
    *cap = *cap ? *cap * 2 : 64;
    *all = realloc(*all, *cap * sizeof **all);
  }
  (*all)[(*n)++] = v;
  size_t i;
  json_t *x;
  const char *k;
  if (json_is_object(v)) json_object_foreach(v, k, x) jm_collect(x, all, n, cap);
  if (json_is_array(v)) json_array_foreach(v, i, x) jm_collect(x, all, n, cap);
}

/* One structural change somewhere in root (which stays a valid JSON
 * value): a member or element replaced, dropped, added or repeated. */
JM_UNUSED static void jm_mutate_once(json_t *root) {
  json_t **all = NULL;
  size_t n = 0, cap = 0;
  jm_collect(root, &all, &n, &cap);
  /* a container to change one of its members or elements */
  json_t *c = NULL;
  for (int tries = 0; tries < 8 && !c; tries++) {
    json_t *v = all[jm_pick(n)];
    if (json_is_object(v) || json_is_array(v)) c = v;
  }
  if (!c) c = root;
  size_t size = json_is_object(c) ? json_object_size(c) : json_array_size(c);
  int op = (int)jm_pick(4);
  if (json_is_object(c)) {
    const char *victim = NULL;
    size_t at = jm_pick(size), i = 0;
    const char *k;
    json_t *x;
    json_object_foreach(c, k, x) if (i++ == at) victim = k;
    char key[64];
    snprintf(key, sizeof key, "%s", victim ? victim : jm_keys[jm_pick(sizeof jm_keys / sizeof *jm_keys)]);
    if (op == 0 || !victim) json_object_set_new(c, jm_keys[jm_pick(sizeof jm_keys / sizeof *jm_keys)], jm_odd_value());
    else if (op == 1) json_object_del(c, key);
    else json_object_set_new(c, key, jm_odd_value());
  } else if (json_is_array(c)) {
    if (op == 0 || size == 0) json_array_append_new(c, jm_odd_value());
    else if (op == 1) json_array_remove(c, jm_pick(size));
    else if (op == 2) json_array_set_new(c, jm_pick(size), jm_odd_value());
    else {
      json_t *x = json_array_get(c, jm_pick(size));
      size_t times = 1 + jm_pick(300);
      for (size_t t = 0; t < times; t++) json_array_append(c, x);
    }
  }
  free(all);
}

/* The text to send: a mutated copy of seed, sometimes damaged byte-wise
 * (the parser's errors), sometimes not JSON's top-level object at all. */
JM_UNUSED static char *jm_mutated_text(const json_t *seed, size_t *len) {
  json_t *v = json_deep_copy(seed);
  int rounds = 1 + (int)jm_pick(3);
  for (int i = 0; i < rounds; i++) jm_mutate_once(v);
  if (jm_pick(20) == 0) { /* another top-level value */
    json_decref(v);
    v = jm_odd_value();
  }
  char *t = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
  json_decref(v);
  *len = strlen(t);
  if (jm_pick(4) == 0 && *len > 0) {
    switch (jm_pick(4)) {
    case 0: /* cut */
      *len = jm_pick(*len);
      break;
    case 1: /* flipped bytes */
      for (int i = 0; i < 1 + (int)jm_pick(4); i++) t[jm_pick(*len)] ^= (char)(1 << jm_pick(8));
      break;
    case 2: /* a byte the JSON grammar never takes there */
      t[jm_pick(*len)] = "\0\x01\x7f\xff\"\\{}[],:"[jm_pick(12)];
      break;
    default: /* doubled */
      t = realloc(t, 2 * *len + 1);
      memcpy(t + *len, t, *len);
      *len *= 2;
      t[*len] = 0;
      break;
    }
  }
  return t;
}

#endif
