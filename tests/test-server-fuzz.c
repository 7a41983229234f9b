/* The server's HTTP API under damaged input: every endpoint that takes a
 * body gets seeded mutations of a valid body (values of other types, out
 * of range or odd, members dropped or added, arrays repeated, deep
 * nesting, and byte-level damage to the text), sent by the roles allowed
 * to call it. A real `braid server` (the test build's: ASan and UBSan
 * watch it) must answer every one with a success or a client error, never
 * a 5xx or a dropped connection, keep working, and exit cleanly. The seed
 * of the mutations is printed, and BRAID_FUZZ_SEED repeats a run. */
#include <curl/curl.h>

#include "farm-util.h"

static farm F;
static uint64_t rng;

static uint64_t next(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

static size_t pick(size_t n) { return n ? (size_t)(next() % n) : 0; }

/* ---- mutations ---- */

static json_t *deep(int levels, bool arrays) {
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
static json_t *odd_value(void) {
  static const char *strs[] = {"", "x", "../../../etc/passwd", "/abs", "C:\\con", "{n}",
                               "%s%s%n", "\xc3\xa9\xe2\x80\xa8", "start", "one-job", "user",
                               "admin", "done", "failed", "9223372036854775807", "-1", "null"};
  switch (pick(17)) {
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
    size_t n = 1 + pick(3) * 20000;
    char *s = malloc(n + 1);
    memset(s, 'a' + (int)pick(26), n);
    s[n] = 0;
    json_t *v = json_string(s);
    free(s);
    return v;
  }
  case 11: return json_array();
  case 12: return json_object();
  case 13: return deep(20 + (int)pick(200), true);
  case 14: return deep(20 + (int)pick(200), false);
  case 15: return json_pack("[iii]", 1, 2, 3);
  default: return json_string(strs[pick(sizeof strs / sizeof *strs)]);
  }
}

static const char *keys[] = {"id",     "session", "events",  "priority", "attrs", "node",
                             "graph",  "version", "seq",     "inv",      "type",  "task",
                             "status", "slots",   "free",    "wait_ms",  "tags",  "max",
                             "role",   "name",    "drain",   "held",     "cores", "memory_mb",
                             "gpus",   "offset",  "data",    "exit_code", "set_attrs", "runtime",
                             "group",  "nodes",   "params", "",         "\xc3\xa9"};

/* Every container and value in v, depth first (v itself first). */
static void collect(json_t *v, json_t ***all, size_t *n, size_t *cap) {
  if (*n == *cap) {
    *cap = *cap ? *cap * 2 : 64;
    *all = realloc(*all, *cap * sizeof **all);
  }
  (*all)[(*n)++] = v;
  size_t i;
  json_t *x;
  const char *k;
  if (json_is_object(v)) json_object_foreach(v, k, x) collect(x, all, n, cap);
  if (json_is_array(v)) json_array_foreach(v, i, x) collect(x, all, n, cap);
}

/* One structural change somewhere in root (which stays a valid JSON
 * value): a member or element replaced, dropped, added or repeated. */
static void mutate_once(json_t *root) {
  json_t **all = NULL;
  size_t n = 0, cap = 0;
  collect(root, &all, &n, &cap);
  /* a container to change one of its members or elements */
  json_t *c = NULL;
  for (int tries = 0; tries < 8 && !c; tries++) {
    json_t *v = all[pick(n)];
    if (json_is_object(v) || json_is_array(v)) c = v;
  }
  if (!c) c = root;
  size_t size = json_is_object(c) ? json_object_size(c) : json_array_size(c);
  int op = (int)pick(4);
  if (json_is_object(c)) {
    const char *victim = NULL;
    size_t at = pick(size), i = 0;
    const char *k;
    json_t *x;
    json_object_foreach(c, k, x) if (i++ == at) victim = k;
    char key[64];
    snprintf(key, sizeof key, "%s", victim ? victim : keys[pick(sizeof keys / sizeof *keys)]);
    if (op == 0 || !victim) json_object_set_new(c, keys[pick(sizeof keys / sizeof *keys)], odd_value());
    else if (op == 1) json_object_del(c, key);
    else json_object_set_new(c, key, odd_value());
  } else if (json_is_array(c)) {
    if (op == 0 || size == 0) json_array_append_new(c, odd_value());
    else if (op == 1) json_array_remove(c, pick(size));
    else if (op == 2) json_array_set_new(c, pick(size), odd_value());
    else {
      json_t *x = json_array_get(c, pick(size));
      size_t times = 1 + pick(300);
      for (size_t t = 0; t < times; t++) json_array_append(c, x);
    }
  }
  free(all);
}

/* The text to send: a mutated copy of seed, sometimes damaged byte-wise
 * (the parser's errors), sometimes not JSON's top-level object at all. */
static char *mutated_text(const json_t *seed, size_t *len) {
  json_t *v = json_deep_copy(seed);
  int rounds = 1 + (int)pick(3);
  for (int i = 0; i < rounds; i++) mutate_once(v);
  if (pick(20) == 0) { /* another top-level value */
    json_decref(v);
    v = odd_value();
  }
  char *t = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
  json_decref(v);
  *len = strlen(t);
  if (pick(4) == 0 && *len > 0) {
    switch (pick(4)) {
    case 0: /* cut */
      *len = pick(*len);
      break;
    case 1: /* flipped bytes */
      for (int i = 0; i < 1 + (int)pick(4); i++) t[pick(*len)] ^= (char)(1 << pick(8));
      break;
    case 2: /* a byte the JSON grammar never takes there */
      t[pick(*len)] = "\0\x01\x7f\xff\"\\{}[],:"[pick(12)];
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

/* ---- raw calls: any body, any method ---- */

typedef struct answer {
  char buf[2048];
  size_t n;
} answer;

static size_t on_body(char *p, size_t s, size_t n, void *ud) {
  answer *a = ud;
  size_t len = s * n, room = sizeof a->buf - 1 - a->n;
  size_t take = len < room ? len : room;
  memcpy(a->buf + a->n, p, take);
  a->n += take;
  a->buf[a->n] = 0;
  return len;
}

/* The status (0: no answer at all, the connection dropped). */
static long send_raw(const char *token, const char *method, const char *path, const char *body,
                     size_t len, answer *a) {
  a->n = 0;
  a->buf[0] = 0;
  CURL *c = curl_easy_init();
  char url[512], auth[256];
  snprintf(url, sizeof url, "%s%s", F.url, path);
  snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
  struct curl_slist *h = curl_slist_append(NULL, auth);
  h = curl_slist_append(h, "Content-Type: application/json");
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, body ? body : "");
  curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(body ? len : 0));
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, a);
  curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
  long status = 0;
  if (curl_easy_perform(c) == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  curl_slist_free_all(h);
  curl_easy_cleanup(c);
  return status;
}

typedef struct seed {
  const char *method;
  char path[256];
  const char *token;
  json_t *body;
  int expect; /* the seed's own status: it must be accepted */
} seed;

static json_t *graph_file(const char *name) {
  char path[1024];
  snprintf(path, sizeof path, "%s/tests/farm/%s", farm_src(), name);
  json_error_t jerr;
  json_t *g = json_load_file(path, 0, &jerr);
  CHECK(g != NULL);
  return g;
}

/* Mutations of one seed; a 5xx or a dropped connection fails the test
 * with the seed, the request and the answer. */
static void storm(const seed *s, int count, uint64_t run_seed, int *by_class) {
  answer a;
  size_t len = 0;
  char *text = json_dumps(s->body, JSON_COMPACT);
  long st = send_raw(s->token, s->method, s->path, text, strlen(text), &a);
  if (st != s->expect)
    fprintf(stderr, "seed %s %s: %ld %s (body %.300s)\n", s->method, s->path, st, a.buf, text);
  CHECK_EQ_INT(st, s->expect);
  free(text);
  for (int i = 0; i < count; i++) {
    text = mutated_text(s->body, &len);
    st = send_raw(s->token, s->method, s->path, text, len, &a);
    if (st < 200 || st >= 500) {
      fprintf(stderr,
              "BRAID_FUZZ_SEED=%llu: %s %s answered %ld (%s) to a %zu-byte body: %.600s\n",
              (unsigned long long)run_seed, s->method, s->path, st, a.buf, len, text);
      CHECK(st >= 200 && st < 500);
    }
    by_class[st / 100]++;
    free(text);
    if (i % 50 == 49) CHECK_EQ_INT(farm_call(&F, F.agent, "GET", "/health", NULL, NULL), 200);
  }
}

TEST(server_api_survives_mutated_bodies) {
  uint64_t run_seed = 0x5eed0f00dULL;
  const char *env = getenv("BRAID_FUZZ_SEED");
  if (env && *env) run_seed = strtoull(env, NULL, 10);
  rng = run_seed ? run_seed : 1;
  printf("mutations seeded with BRAID_FUZZ_SEED=%llu\n", (unsigned long long)run_seed);
  farm_start(&F, "server-fuzz", "--poll-wait 1 --lost-after 30 --limit lic=2");
  curl_global_init(CURL_GLOBAL_DEFAULT);
  json_t *g = graph_file("one-job.json"), *a = NULL;
  CHECK_EQ_INT(farm_call(&F, F.user, "POST", "/api/v1/graphs", g, NULL), 201);
  json_t *sub = json_pack("{sssisss{si}}", "graph", "one-job", "priority", 5, "group", "fz",
                          "attrs", "n", 1);
  CHECK_EQ_INT(farm_call(&F, F.user, "POST", "/api/v1/submissions", sub, &a), 201);
  int64_t task = json_integer_value(json_object_get(a, "task"));
  json_decref(a);
  json_t *reg = json_pack("{sssssisisIs[s]s[]}", "id", "fz", "host", "fuzz-host", "cores", 4,
                          "slots", 2, "memory_mb", (json_int_t)8000, "tags", "gpu", "held");
  CHECK_EQ_INT(farm_call(&F, F.agent, "POST", "/api/v1/agents/register", reg, &a), 200);
  char session[64];
  snprintf(session, sizeof session, "%s", json_string_value(json_object_get(a, "session")));
  json_decref(a);
  /* the agent takes the task: reports then name a real invocation */
  json_t *poll = json_pack("{sss{si}si}", "session", session, "free", "slots", 2, "wait_ms", 0);
  CHECK_EQ_INT(farm_call(&F, F.agent, "POST", "/api/v1/agents/fz/poll", poll, &a), 200);
  json_int_t inv = json_integer_value(json_object_get(json_array_get(json_object_get(a, "work"), 0), "id"));
  json_decref(a);
  CHECK(inv > 0);
  json_t *events = json_pack(
      "[{sIsIsssI}{sIsIsssIsIss}{sIsIsssIsssisfs{si}}]", "seq", (json_int_t)1, "inv", inv, "type",
      "start", "task", (json_int_t)task, "seq", (json_int_t)2, "inv", inv, "type", "output",
      "task", (json_int_t)task, "offset", (json_int_t)0, "data", "frame 1 of 1\n", "seq",
      (json_int_t)3, "inv", inv, "type", "done", "task", (json_int_t)task, "status", "ok",
      "exit_code", 0, "runtime", 0.5, "set_attrs", "rendered", 1);
  char tp[64];
  snprintf(tp, sizeof tp, "/api/v1/tasks/%lld", (long long)task);
  seed seeds[] = {
      {"POST", "/api/v1/graphs", F.user, g, 201},
      {"POST", "/api/v1/submissions", F.user, sub, 201},
      /* the task's paths are filled in below */
      {"PUT", "", F.user, json_pack("{si}", "priority", 7), 200},
      {"POST", "", F.user, json_pack("{s{ss}}", "attrs", "note", "x"), 200},
      {"POST", "", F.user, json_pack("{ss}", "node", "start"), 409}, /* running: refused */
      {"POST", "/api/v1/workers/fz/drain", F.admin, json_pack("{sb}", "drain", 0), 200},
      {"PUT", "/api/v1/workers/fz/tags", F.admin, json_pack("{s[ss]}", "tags", "gpu", "big"), 200},
      {"PUT", "/api/v1/limits/lic", F.admin, json_pack("{si}", "max", 3), 200},
      {"POST", "/api/v1/tokens", F.admin, json_pack("{ssss}", "role", "user", "name", "fz"), 201},
      {"POST", "/api/v1/agents/fz/poll", F.agent,
       json_pack("{sss{si}si}", "session", session, "free", "slots", 0, "wait_ms", 0), 200},
      {"POST", "/api/v1/agents/fz/report", F.agent,
       json_pack("{sssO}", "session", session, "events", events), 200},
      /* last: a mutated registration may take the agent's session */
      {"POST", "/api/v1/agents/register", F.agent, reg, 200},
  };
  snprintf(seeds[2].path, sizeof seeds[2].path, "%s/priority", tp);
  snprintf(seeds[3].path, sizeof seeds[3].path, "%s/attrs", tp);
  snprintf(seeds[4].path, sizeof seeds[4].path, "%s/move", tp);
  int by_class[6] = {0};
  int per_seed = 150;
  for (size_t i = 0; i < sizeof seeds / sizeof *seeds; i++) storm(&seeds[i], per_seed, run_seed, by_class);
  printf("%d mutated bodies: %d answered 2xx, %d 4xx\n", by_class[2] + by_class[4], by_class[2],
         by_class[4]);
  CHECK(by_class[4] > 0 && by_class[2] > 0); /* both kinds of answer were reached */
  /* still whole: a valid submission goes through and is listed */
  CHECK_EQ_INT(farm_call(&F, F.user, "POST", "/api/v1/submissions", sub, &a), 201);
  int64_t last = json_integer_value(json_object_get(a, "task"));
  json_decref(a);
  char path[128];
  snprintf(path, sizeof path, "/api/v1/tasks/%lld", (long long)last);
  CHECK_EQ_INT(farm_call(&F, F.user, "GET", path, NULL, NULL), 200);
  for (size_t i = 0; i < sizeof seeds / sizeof *seeds; i++)
    if (seeds[i].body != g && seeds[i].body != sub && seeds[i].body != reg)
      json_decref(seeds[i].body);
  json_decref(g);
  json_decref(sub);
  json_decref(reg);
  json_decref(poll);
  json_decref(events);
  curl_global_cleanup();
  farm_stop(&F); /* the server exits 0: under ASan, with no leak */
}
