/* The server's HTTP API under damaged input: every endpoint that takes a
 * body gets seeded mutations of a valid body (values of other types, out
 * of range or odd, members dropped or added, arrays repeated, deep
 * nesting, and byte-level damage to the text), sent by the roles allowed
 * to call it. A real `braid server` (the test build's: ASan and UBSan
 * watch it) must answer every one with a success or a client error, never
 * a 5xx or a dropped connection, keep working, and exit cleanly. The seed
 * of the mutations is printed, and BRAID_FUZZ_SEED repeats a run. */
#include "farm-util.h"
#include "json-mutate.h"

static farm F;

typedef struct seed {
  const char *method;
  char path[256];
  const char *token;
  json_t *body;
  int expect; /* the seed's own status: it must be accepted */
} seed;

/* Mutations of one seed; a 5xx or a dropped connection fails the test
 * with the seed, the request and the answer. */
static void storm(const seed *s, int count, int *by_class) {
  jm_answer a;
  size_t len = 0;
  char *text = json_dumps(s->body, JSON_COMPACT);
  long st = jm_call(F.url, s->token, s->method, s->path, text, strlen(text), "application/json",
                    NULL, &a);
  if (st != s->expect)
    fprintf(stderr, "seed %s %s: %ld %s (body %.300s)\n", s->method, s->path, st, a.buf, text);
  CHECK_EQ_INT(st, s->expect);
  free(text);
  for (int i = 0; i < count; i++) {
    text = jm_mutated_text(s->body, &len);
    st = jm_call(F.url, s->token, s->method, s->path, text, len, "application/json", NULL, &a);
    jm_check(st, s->method, s->path, text, len, &a, by_class);
    free(text);
    if (i % 50 == 49) CHECK_EQ_INT(farm_call(&F, F.agent, "GET", "/health", NULL, NULL), 200);
  }
}

TEST(server_api_survives_mutated_bodies) {
  jm_start(0x5eed0f00dULL);
  farm_start(&F, "server-fuzz", "--poll-wait 1 --lost-after 30 --limit lic=2");
  curl_global_init(CURL_GLOBAL_DEFAULT);
  json_t *g = farm_graph("tests/farm/one-job.json"), *a = NULL;
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
  for (size_t i = 0; i < sizeof seeds / sizeof *seeds; i++) storm(&seeds[i], per_seed, by_class);
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
