/* Seeded mutations of JSON bodies, for tests that throw damaged input at a
 * server (test-server-fuzz, test-xfer-depot-fuzz): values of other types,
 * out of range or odd, members dropped, added or repeated, deep nesting,
 * and byte-level damage to the text; and the raw HTTP call that sends
 * them, with the rule every answer is held to. jm_start seeds a run. */
#ifndef BR_TEST_JSON_MUTATE_H
#define BR_TEST_JSON_MUTATE_H

#include <curl/curl.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifndef JM_UNUSED
#define JM_UNUSED __attribute__((unused))
#endif

#include "harness.h"

JM_UNUSED static uint64_t jm_rng, jm_seed;

/* Seeds the mutations: BRAID_FUZZ_SEED when set (to repeat a run), else
 * the test's own seed; printed either way. */
JM_UNUSED static void jm_start(uint64_t seed) {
  const char *env = getenv("BRAID_FUZZ_SEED");
  jm_seed = env && *env ? strtoull(env, NULL, 10) : seed;
  jm_rng = jm_seed ? jm_seed : 1;
  printf("mutations seeded with BRAID_FUZZ_SEED=%llu\n", (unsigned long long)jm_seed);
}

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

/* ---- sending them ---- */

/* An answer's first bytes, NUL-terminated (or why none came). */
typedef struct jm_answer {
  char buf[4096];
  size_t n;
} jm_answer;

JM_UNUSED static size_t jm_on_body(char *p, size_t s, size_t n, void *ud) {
  jm_answer *a = ud;
  size_t len = s * n, room = sizeof a->buf - 1 - a->n;
  size_t take = len < room ? len : room;
  memcpy(a->buf + a->n, p, take);
  a->n += take;
  a->buf[a->n] = 0;
  return len;
}

/* One request to base+path with a bearer token: method (NULL: GET without
 * a body, POST with one), body of len bytes (NULL: none) of content type
 * type (NULL: curl's), a Range header (NULL: none). The status; 0 when no
 * answer came (a dropped connection), a->buf then says curl's reason. */
JM_UNUSED static long jm_call(const char *base, const char *token, const char *method,
                              const char *path, const void *body, size_t len, const char *type,
                              const char *range, jm_answer *a) {
  a->n = 0;
  a->buf[0] = 0;
  CURL *c = curl_easy_init();
  char url[1024], hdr[512];
  snprintf(url, sizeof url, "%s%s", base, path);
  snprintf(hdr, sizeof hdr, "Authorization: Bearer %s", token);
  struct curl_slist *h = curl_slist_append(NULL, hdr);
  if (type) {
    snprintf(hdr, sizeof hdr, "Content-Type: %s", type);
    h = curl_slist_append(h, hdr);
  }
  if (range) {
    snprintf(hdr, sizeof hdr, "Range: %s", range);
    h = curl_slist_append(h, hdr);
  }
  curl_easy_setopt(c, CURLOPT_URL, url);
  if (method) curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
  if (body) {
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, (const char *)body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
  }
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, jm_on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, a);
  curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
  long status = 0;
  CURLcode cc = curl_easy_perform(c);
  if (cc == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  else snprintf(a->buf, sizeof a->buf, "curl: %s", curl_easy_strerror(cc));
  curl_slist_free_all(h);
  curl_easy_cleanup(c);
  return status;
}

/* The rule for every answer to damaged input: a success or a client error
 * (counted in by_class[status / 100]), never a 5xx or a dropped
 * connection; a failure says how to repeat the run and what was sent. */
JM_UNUSED static void jm_check(long st, const char *method, const char *path, const void *body,
                               size_t len, const jm_answer *a, int by_class[6]) {
  if (st >= 200 && st < 500) {
    by_class[st / 100]++;
    return;
  }
  fprintf(stderr, "BRAID_FUZZ_SEED=%llu: %s %s answered %ld (%s) to a %zu-byte body: %.*s\n",
          (unsigned long long)jm_seed, method, path, st, a->buf, len,
          (int)(len < 600 ? len : 600), body ? (const char *)body : "");
  CHECK(st >= 200 && st < 500);
}

#endif
