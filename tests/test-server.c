/* The server's HTTP API against its description, docs/openapi.json: a real
 * `braid server` on loopback is driven through every documented path and
 * method (the test plays the agent too); every answer must have a
 * documented status and match the documented JSON schema, and every
 * documented status must be seen. Also: the agent protocol's idempotence
 * (a report sent twice changes nothing). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "farm-util.h"

/* ---- a small JSON Schema check (the parts the description uses) ---- */

static json_t *spec;

static const json_t *deref(const json_t *s) {
  const char *r = json_string_value(json_object_get(s, "$ref"));
  if (!r) return s;
  CHECK(strncmp(r, "#/components/", 13) == 0);
  char buf[256];
  snprintf(buf, sizeof buf, "%s", r + 13);
  char *slash = strchr(buf, '/');
  CHECK(slash != NULL);
  *slash = 0;
  const json_t *v = json_object_get(json_object_get(json_object_get(spec, "components"), buf), slash + 1);
  CHECK(v != NULL);
  return deref(v);
}

static bool type_ok(const json_t *v, const char *t) {
  if (strcmp(t, "object") == 0) return json_is_object(v);
  if (strcmp(t, "array") == 0) return json_is_array(v);
  if (strcmp(t, "string") == 0) return json_is_string(v);
  if (strcmp(t, "integer") == 0) return json_is_integer(v);
  if (strcmp(t, "number") == 0) return json_is_number(v);
  if (strcmp(t, "boolean") == 0) return json_is_boolean(v);
  if (strcmp(t, "null") == 0) return json_is_null(v);
  return false;
}

/* Returns NULL when v matches schema s, else a message (static). */
static const char *validate(const json_t *v, const json_t *s, const char *where) {
  static char msg[512];
  s = deref(s);
  json_t *all = json_object_get(s, "allOf");
  size_t i;
  json_t *x;
  json_array_foreach(all, i, x) {
    const char *m = validate(v, x, where);
    if (m) return m;
  }
  json_t *one = json_object_get(s, "oneOf");
  if (one) {
    int ok = 0;
    json_array_foreach(one, i, x) ok += validate(v, x, where) == NULL;
    if (ok != 1) {
      snprintf(msg, sizeof msg, "%s: matches %d of oneOf", where, ok);
      return msg;
    }
  }
  json_t *t = json_object_get(s, "type");
  if (t) {
    bool ok = false;
    if (json_is_string(t)) ok = type_ok(v, json_string_value(t));
    json_array_foreach(t, i, x) ok |= type_ok(v, json_string_value(x));
    if (!ok) {
      char *d = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
      snprintf(msg, sizeof msg, "%s: %.200s is not of the documented type", where, d ? d : "?");
      free(d);
      return msg;
    }
  }
  json_t *en = json_object_get(s, "enum");
  if (en) {
    bool ok = false;
    json_array_foreach(en, i, x) ok |= json_equal(x, v);
    if (!ok) {
      snprintf(msg, sizeof msg, "%s: %s is not one of the documented values", where,
               json_is_string(v) ? json_string_value(v) : "value");
      return msg;
    }
  }
  if (json_is_object(v)) {
    json_array_foreach(json_object_get(s, "required"), i, x) if (!json_object_get(v, json_string_value(x))) {
      snprintf(msg, sizeof msg, "%s: '%s' is missing", where, json_string_value(x));
      return msg;
    }
    json_t *props = json_object_get(s, "properties"), *addl = json_object_get(s, "additionalProperties");
    const char *k;
    json_t *pv;
    json_object_foreach((json_t *)v, k, pv) {
      json_t *ps = json_object_get(props, k);
      char w[256];
      snprintf(w, sizeof w, "%s.%s", where, k);
      if (!ps && json_is_object(addl)) ps = addl;
      if (!ps && props && json_is_string(json_object_get(s, "type")) && strcmp(json_string_value(json_object_get(s, "type")), "object") == 0 &&
          !addl) {
        snprintf(msg, sizeof msg, "%s: undocumented member", w);
        return msg;
      }
      if (ps) {
        const char *m = validate(pv, ps, w);
        if (m) return m;
      }
    }
  }
  json_t *items = json_object_get(s, "items");
  if (items && json_is_array(v)) json_array_foreach((json_t *)v, i, x) {
      char w[256];
      snprintf(w, sizeof w, "%s[%zu]", where, i);
      const char *m = validate(x, items, w);
      if (m) return m;
    }
  return NULL;
}

/* ---- calls, checked against the description ---- */

static json_t *seen; /* "METHOD PATH STATUS" -> true */
static farm F;

/* METHOD on the documented path tmpl (its {x} filled from args, in order). */
static int api(const char *token, const char *method, const char *tmpl, json_t *body, json_t **out,
               int expect, ...) {
  char path[1024] = "";
  const char *p = tmpl;
  va_list ap;
  va_start(ap, expect);
  size_t n = 0;
  while (*p) {
    if (*p == '{') {
      const char *arg = va_arg(ap, const char *);
      n += (size_t)snprintf(path + n, sizeof path - n, "%s", arg);
      p = strchr(p, '}') + 1;
    } else {
      path[n++] = *p++;
      path[n] = 0;
    }
  }
  const char *q = va_arg(ap, const char *); /* a query string, or NULL */
  va_end(ap);
  if (q) snprintf(path + n, sizeof path - n, "?%s", q);
  json_t *ans = NULL;
  int st = farm_call(&F, token, method, path, body, &ans);
  if (st != expect) {
    char *d = ans ? json_dumps(ans, JSON_COMPACT) : NULL;
    br_test_fail(__FILE__, __LINE__, "%s %s: %d, expected %d (%s)", method, path, st, expect, d ? d : "");
  }
  char lm[8];
  snprintf(lm, sizeof lm, "%s", method);
  for (char *c = lm; *c; c++) *c = (char)(*c - 'A' + 'a');
  json_t *opd = json_object_get(json_object_get(json_object_get(spec, "paths"), tmpl), lm);
  if (!opd) br_test_fail(__FILE__, __LINE__, "%s %s is not documented", method, tmpl);
  char code[8];
  snprintf(code, sizeof code, "%d", st);
  json_t *r = json_object_get(json_object_get(opd, "responses"), code);
  if (!r) br_test_fail(__FILE__, __LINE__, "%s %s answered %d, which is not documented", method, tmpl, st);
  r = (json_t *)deref(r);
  json_t *schema = json_object_get(json_object_get(json_object_get(r, "content"), "application/json"), "schema");
  if (schema) {
    if (!ans) br_test_fail(__FILE__, __LINE__, "%s %s: %d without a JSON body", method, path, st);
    const char *m = validate(ans, schema, "body");
    if (m) br_test_fail(__FILE__, __LINE__, "%s %s (%d): %s", method, path, st, m);
  }
  char key[512];
  snprintf(key, sizeof key, "%s %s %d", method, tmpl, st);
  json_object_set_new(seen, key, json_true());
  if (out) *out = ans;
  else json_decref(ans);
  return st;
}

#define Q(x) x
#define NOQ NULL

static int raw_status(const char *req) {
  int port = atoi(strrchr(F.url, ':') + 1);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
  CHECK(connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
  CHECK(send(fd, req, strlen(req), MSG_NOSIGNAL) == (ssize_t)strlen(req));
  char buf[2048];
  ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
  close(fd);
  if (n < 12) return 0;
  buf[n] = 0;
  return atoi(buf + 9);
}

TEST(server_api_matches_openapi) {
  char path[1024];
  snprintf(path, sizeof path, "%s/docs/openapi.json", farm_src());
  json_error_t jerr;
  spec = json_load_file(path, 0, &jerr);
  CHECK(spec != NULL);
  seen = json_object();
  farm_start(&F, "server-api", "--poll-wait 1 --lost-after 30 --limit lic=2");
  json_t *a = NULL, *b;

  /* server */
  api(F.agent, "GET", "/health", NULL, NULL, 200, NOQ);
  api(NULL, "GET", "/health", NULL, NULL, 401, NOQ);
  api(F.user, "GET", "/metrics", NULL, NULL, 200, NOQ);
  api(F.agent, "GET", "/metrics", NULL, NULL, 403, NOQ);
  api(NULL, "GET", "/metrics", NULL, NULL, 401, NOQ);

  /* graphs */
  json_t *g = farm_graph("tests/farm/one-job.json");
  api(F.user, "POST", "/api/v1/graphs", g, &a, 201, NOQ);
  CHECK_EQ_STR(json_string_value(json_object_get(a, "name")), "one-job");
  json_decref(a);
  api(F.user, "POST", "/api/v1/graphs", g, &a, 201, NOQ); /* the same content: the same version */
  CHECK_EQ_INT(json_integer_value(json_object_get(a, "version")), 1);
  json_decref(a);
  json_object_set_new(json_object_get(json_array_get(json_object_get(g, "nodes"), 1), "params"), "shell",
                      json_string("echo job {n} again"));
  api(F.user, "POST", "/api/v1/graphs", g, &a, 201, NOQ);
  CHECK_EQ_INT(json_integer_value(json_object_get(a, "version")), 2);
  json_decref(a);
  b = json_pack("{ss}", "name", "broken");
  api(F.user, "POST", "/api/v1/graphs", b, &a, 400, NOQ);
  json_decref(b);
  json_decref(a);
  /* a name it could not be found by (in /api/v1/graphs/NAME), as validate refuses it */
  static const char *const unnamable[] = {"shot010/fx", "", "..", ".hidden", "a b"};
  for (size_t k = 0; k < sizeof unnamable / sizeof unnamable[0]; k++) {
    b = json_deep_copy(g);
    json_object_set_new(b, "name", json_string(unnamable[k]));
    api(F.user, "POST", "/api/v1/graphs", b, &a, 400, NOQ);
    const char *why = json_string_value(json_object_get(a, "error"));
    CHECK_CONTAINS(why, "is not a name a graph can have");
    json_decref(b);
    json_decref(a);
  }
  api(F.agent, "POST", "/api/v1/graphs", g, NULL, 403, NOQ);
  api(NULL, "POST", "/api/v1/graphs", g, NULL, 401, NOQ);
  char big[512];
  snprintf(big, sizeof big,
           "POST /api/v1/graphs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
           "Content-Length: 20000000\r\n\r\n", F.user);
  CHECK_EQ_INT(raw_status(big), 413);
  json_object_set_new(seen, "POST /api/v1/graphs 413", json_true());
  api(F.user, "GET", "/api/v1/graphs", NULL, &a, 200, NOQ);
  CHECK_EQ_INT(json_array_size(json_object_get(a, "graphs")), 1);
  json_decref(a);
  api(NULL, "GET", "/api/v1/graphs", NULL, NULL, 401, NOQ);
  api(F.agent, "GET", "/api/v1/graphs", NULL, NULL, 403, NOQ);
  api(F.user, "GET", "/api/v1/graphs/{name}", NULL, &a, 200, "one-job", NOQ);
  CHECK_EQ_INT(json_integer_value(json_object_get(a, "version")), 2);
  json_decref(a);
  api(F.user, "GET", "/api/v1/graphs/{name}", NULL, &a, 200, "one-job", Q("version=1"));
  CHECK_EQ_INT(json_integer_value(json_object_get(a, "version")), 1);
  json_decref(a);
  api(F.user, "GET", "/api/v1/graphs/{name}", NULL, NULL, 400, "one-job", Q("version=x"));
  api(F.user, "GET", "/api/v1/graphs/{name}", NULL, NULL, 404, "nope", NOQ);
  api(NULL, "GET", "/api/v1/graphs/{name}", NULL, NULL, 401, "one-job", NOQ);
  api(F.agent, "GET", "/api/v1/graphs/{name}", NULL, NULL, 403, "one-job", NOQ);
  api(F.user, "GET", "/api/v1/graphs/{name}/versions", NULL, &a, 200, "one-job", NOQ);
  CHECK_EQ_INT(json_array_size(json_object_get(a, "versions")), 2);
  json_decref(a);
  api(F.user, "GET", "/api/v1/graphs/{name}/versions", NULL, NULL, 404, "nope", NOQ);
  api(NULL, "GET", "/api/v1/graphs/{name}/versions", NULL, NULL, 401, "one-job", NOQ);
  api(F.agent, "GET", "/api/v1/graphs/{name}/versions", NULL, NULL, 403, "one-job", NOQ);

  /* submissions: no agent yet, so they wait queued */
  b = json_pack("{sssisss{si}}", "graph", "one-job", "priority", 5, "group", "shot010", "attrs", "n", 1);
  api(F.user, "POST", "/api/v1/submissions", b, &a, 201, NOQ);
  json_decref(b);
  int64_t t1 = json_integer_value(json_object_get(a, "task"));
  CHECK_EQ_STR(json_string_value(json_object_get(a, "group_name")), "shot010");
  json_decref(a);
  b = json_pack("{sOs{si}}", "graph", g, "attrs", "n", 2);
  api(F.user, "POST", "/api/v1/submissions", b, &a, 201, NOQ);
  json_decref(b);
  int64_t t2 = json_integer_value(json_object_get(a, "task"));
  json_decref(a);
  b = json_pack("{sssi}", "graph", "one-job", "version", 9);
  api(F.user, "POST", "/api/v1/submissions", b, NULL, 404, NOQ);
  json_decref(b);
  b = json_pack("{ssss}", "graph", "one-job", "node", "nowhere");
  api(F.user, "POST", "/api/v1/submissions", b, NULL, 404, NOQ);
  json_decref(b);
  b = json_pack("{si}", "priority", 1);
  api(F.user, "POST", "/api/v1/submissions", b, NULL, 400, NOQ);
  api(NULL, "POST", "/api/v1/submissions", b, NULL, 401, NOQ);
  api(F.agent, "POST", "/api/v1/submissions", b, NULL, 403, NOQ);
  json_decref(b);

  /* tasks: reads */
  char id1[32], id2[32];
  snprintf(id1, sizeof id1, "%lld", (long long)t1);
  snprintf(id2, sizeof id2, "%lld", (long long)t2);
  for (int i = 0; i < 100; i++) { /* processed by the engine: queued for an agent */
    api(F.user, "GET", "/api/v1/tasks", NULL, &a, 200, Q("state=queued"));
    bool q = json_array_size(json_object_get(a, "tasks")) == 2;
    json_decref(a);
    if (q) break;
    usleep(20000);
  }
  api(F.user, "GET", "/api/v1/tasks", NULL, &a, 200, Q("limit=1"));
  CHECK_EQ_INT(json_array_size(json_object_get(a, "tasks")), 1);
  char after[64];
  snprintf(after, sizeof after, "limit=1&after=%lld", (long long)json_integer_value(json_object_get(a, "next")));
  json_decref(a);
  api(F.user, "GET", "/api/v1/tasks", NULL, &a, 200, Q(after));
  CHECK_EQ_INT(json_integer_value(json_object_get(json_array_get(json_object_get(a, "tasks"), 0), "id")), t2);
  json_decref(a);
  api(F.user, "GET", "/api/v1/tasks", NULL, &a, 200, Q("state=queued&attrs=1"));
  CHECK_EQ_INT(json_array_size(json_object_get(a, "tasks")), 2);
  json_decref(a);
  api(F.user, "GET", "/api/v1/tasks", NULL, NULL, 400, Q("state=bogus"));
  /* the summary: one count per node and state */
  api(F.user, "GET", "/api/v1/summary", NULL, &a, 200, NOQ);
  CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(a, "total"), "queued")), 2);
  CHECK(json_is_null(json_object_get(a, "graph")));
  json_decref(a);
  api(F.user, "GET", "/api/v1/tasks/{id}", NULL, &a, 200, id1, NOQ);
  char gq[64];
  snprintf(gq, sizeof gq, "graph=%lld", (long long)json_integer_value(json_object_get(a, "graph_id")));
  json_decref(a);
  api(F.user, "GET", "/api/v1/summary", NULL, &a, 200, Q(gq)); /* both tasks: the same version */
  CHECK_EQ_INT(json_array_size(json_object_get(a, "nodes")), 1);
  json_t *job = json_array_get(json_object_get(a, "nodes"), 0);
  CHECK_EQ_STR(json_string_value(json_object_get(job, "node")), "job");
  CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(job, "counts"), "queued")), 2);
  json_decref(a);
  api(F.user, "GET", "/api/v1/summary", NULL, &a, 404, Q("graph=999")); /* not an empty graph */
  CHECK_CONTAINS(json_string_value(json_object_get(a, "error")), "no graph 999");
  json_decref(a);
  api(F.user, "GET", "/api/v1/summary", NULL, NULL, 400, Q("graph=x"));
  api(NULL, "GET", "/api/v1/summary", NULL, NULL, 401, NOQ);
  api(F.agent, "GET", "/api/v1/summary", NULL, NULL, 403, NOQ);
  /* the web UI's files need no token */
  api(NULL, "GET", "/", NULL, NULL, 200, NOQ);
  api(NULL, "GET", "/ui/{file}", NULL, NULL, 200, "app.js", NOQ);
  api(NULL, "GET", "/ui/{file}", NULL, NULL, 404, "nope.js", NOQ);
  api(NULL, "GET", "/api/v1/tasks", NULL, NULL, 401, NOQ);
  api(F.agent, "GET", "/api/v1/tasks", NULL, NULL, 403, NOQ);
  api(F.user, "GET", "/api/v1/tasks/{id}", NULL, NULL, 400, "x1", NOQ);
  api(F.user, "GET", "/api/v1/tasks/{id}", NULL, NULL, 404, "999999", NOQ);
  api(NULL, "GET", "/api/v1/tasks/{id}", NULL, NULL, 401, id1, NOQ);
  api(F.agent, "GET", "/api/v1/tasks/{id}", NULL, NULL, 403, id1, NOQ);

  /* tasks: changes, while queued */
  b = json_pack("{si}", "priority", 7);
  api(F.user, "PUT", "/api/v1/tasks/{id}/priority", b, NULL, 200, id2, NOQ);
  api(F.user, "PUT", "/api/v1/tasks/{id}/priority", b, NULL, 404, "999999", NOQ);
  api(NULL, "PUT", "/api/v1/tasks/{id}/priority", b, NULL, 401, id2, NOQ);
  api(F.agent, "PUT", "/api/v1/tasks/{id}/priority", b, NULL, 403, id2, NOQ);
  json_decref(b);
  b = json_pack("{ss}", "priority", "high");
  api(F.user, "PUT", "/api/v1/tasks/{id}/priority", b, NULL, 400, id2, NOQ);
  json_decref(b);
  /* a whole number past 32 bits: refused, and the answer says the range */
  b = json_pack("{sI}", "priority", (json_int_t)1 << 40);
  json_t *e = NULL;
  api(F.user, "PUT", "/api/v1/tasks/{id}/priority", b, &e, 400, id2, NOQ);
  CHECK_CONTAINS(json_string_value(json_object_get(e, "error")), "from -2147483648 to 2147483647");
  json_decref(e);
  json_decref(b);
  b = json_pack("{s{ss}}", "attrs", "note", "x");
  api(F.user, "POST", "/api/v1/tasks/{id}/attrs", b, NULL, 200, id2, NOQ);
  api(F.user, "POST", "/api/v1/tasks/{id}/attrs", b, NULL, 404, "999999", NOQ);
  api(NULL, "POST", "/api/v1/tasks/{id}/attrs", b, NULL, 401, id2, NOQ);
  api(F.agent, "POST", "/api/v1/tasks/{id}/attrs", b, NULL, 403, id2, NOQ);
  json_decref(b);
  b = json_pack("{si}", "attrs", 1);
  api(F.user, "POST", "/api/v1/tasks/{id}/attrs", b, NULL, 400, id2, NOQ);
  json_decref(b);
  api(F.user, "GET", "/api/v1/tasks/{id}", NULL, &a, 200, id2, NOQ);
  CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(a, "attrs"), "note")), "x");
  CHECK_EQ_INT(json_integer_value(json_object_get(a, "priority")), 7);
  json_decref(a);
  api(F.user, "POST", "/api/v1/tasks/{id}/pause", NULL, NULL, 200, id2, NOQ);
  api(F.user, "POST", "/api/v1/tasks/{id}/pause", NULL, NULL, 404, "999999", NOQ);
  api(NULL, "POST", "/api/v1/tasks/{id}/pause", NULL, NULL, 401, id2, NOQ);
  api(F.agent, "POST", "/api/v1/tasks/{id}/pause", NULL, NULL, 403, id2, NOQ);
  api(F.user, "POST", "/api/v1/tasks/{id}/retry", NULL, NULL, 409, id1, NOQ); /* queued */
  api(F.user, "POST", "/api/v1/tasks/{id}/retry", NULL, NULL, 404, "999999", NOQ);
  api(NULL, "POST", "/api/v1/tasks/{id}/retry", NULL, NULL, 401, id1, NOQ);
  api(F.agent, "POST", "/api/v1/tasks/{id}/retry", NULL, NULL, 403, id1, NOQ);

  /* the agent's side: register, poll (gets t1: t2 is paused), report */
  b = json_pack("{sssisisIs[s]s[]}", "id", "t1", "cores", 4, "slots", 2, "memory_mb", (json_int_t)8000,
                "tags", "gpu", "held");
  api(F.agent, "POST", "/api/v1/agents/register", b, &a, 200, NOQ);
  char session[64];
  snprintf(session, sizeof session, "%s", json_string_value(json_object_get(a, "session")));
  json_decref(a);
  api(F.user, "POST", "/api/v1/agents/register", b, NULL, 403, NOQ);
  api(NULL, "POST", "/api/v1/agents/register", b, NULL, 401, NOQ);
  json_decref(b);
  b = json_pack("{ss}", "host", "no-id");
  api(F.agent, "POST", "/api/v1/agents/register", b, NULL, 400, NOQ);
  json_decref(b);
  b = json_pack("{ssss}", "id", "t1", "host", "another-machine"); /* t1 is alive elsewhere */
  api(F.agent, "POST", "/api/v1/agents/register", b, &a, 409, NOQ);
  CHECK_CONTAINS(json_string_value(json_object_get(a, "error")), "in use");
  json_decref(a);
  json_decref(b);
  b = json_pack("{sss{si}si}", "session", session, "free", "slots", 2, "wait_ms", 2000);
  api(F.agent, "POST", "/api/v1/agents/{id}/poll", b, &a, 200, "t1", NOQ);
  json_t *work = json_object_get(a, "work");
  CHECK_EQ_INT(json_array_size(work), 1);
  json_t *item = json_array_get(work, 0);
  CHECK_EQ_INT(json_integer_value(json_object_get(item, "task")), t1);
  json_int_t inv = json_integer_value(json_object_get(item, "id"));
  json_decref(a);
  api(F.user, "POST", "/api/v1/agents/{id}/poll", b, NULL, 403, "t1", NOQ);
  api(NULL, "POST", "/api/v1/agents/{id}/poll", b, NULL, 401, "t1", NOQ);
  json_decref(b);
  b = json_pack("{sss{si}}", "session", "wrong", "free", "slots", 1);
  api(F.agent, "POST", "/api/v1/agents/{id}/poll", b, NULL, 409, "t1", NOQ);
  json_decref(b);
  b = json_pack("[]");
  api(F.agent, "POST", "/api/v1/agents/{id}/poll", b, NULL, 400, "t1", NOQ);
  api(F.agent, "POST", "/api/v1/agents/{id}/report", b, NULL, 400, "t1", NOQ);
  json_decref(b);
  /* running: move is refused; the log follows the output */
  b = json_pack("{ss}", "node", "start");
  api(F.user, "POST", "/api/v1/tasks/{id}/move", b, NULL, 409, id1, NOQ);
  api(F.user, "POST", "/api/v1/tasks/{id}/move", b, NULL, 404, "999999", NOQ);
  api(NULL, "POST", "/api/v1/tasks/{id}/move", b, NULL, 401, id1, NOQ);
  api(F.agent, "POST", "/api/v1/tasks/{id}/move", b, NULL, 403, id1, NOQ);
  json_decref(b);
  b = json_pack("{si}", "node", 3);
  api(F.user, "POST", "/api/v1/tasks/{id}/move", b, NULL, 400, id1, NOQ);
  json_decref(b);
  json_t *events = json_pack("[{sIsIsssI}{sIsIsssIsIss}]", "seq", (json_int_t)1, "inv", inv, "type",
                             "start", "task", (json_int_t)t1, "seq", (json_int_t)2, "inv", inv, "type",
                             "output", "task", (json_int_t)t1, "offset", (json_int_t)0, "data",
                             "frame 1 of 1\n");
  b = json_pack("{sssO}", "session", session, "events", events);
  api(F.agent, "POST", "/api/v1/agents/{id}/report", b, &a, 200, "t1", NOQ);
  CHECK_EQ_INT(json_integer_value(json_object_get(a, "ack")), 2);
  json_decref(a);
  api(F.user, "POST", "/api/v1/agents/{id}/report", b, NULL, 403, "t1", NOQ);
  api(NULL, "POST", "/api/v1/agents/{id}/report", b, NULL, 401, "t1", NOQ);
  json_decref(b);
  b = json_pack("{sssO}", "session", "wrong", "events", events);
  api(F.agent, "POST", "/api/v1/agents/{id}/report", b, NULL, 409, "t1", NOQ);
  json_decref(b);
  json_decref(events);
  br_http_client *c;
  br_error err;
  CHECK(br_http_client_open(F.url, F.user, &c, &err) == BR_OK);
  char lp[128];
  snprintf(lp, sizeof lp, "/api/v1/tasks/%s/log", id1);
  farm_events lg = {0};
  CHECK_EQ_INT(br_http_client_get_stream(c, lp, farm_events_take, &lg, &err), 200);
  CHECK_EQ_STR(lg.buf, "frame 1 of 1\n");
  br_http_client_close(c);
  api(F.user, "GET", "/api/v1/tasks/{id}/log", NULL, NULL, 200, id1, NOQ);
  api(F.user, "GET", "/api/v1/tasks/{id}/log", NULL, NULL, 404, id2, NOQ); /* no job yet */
  api(NULL, "GET", "/api/v1/tasks/{id}/log", NULL, NULL, 401, id1, NOQ);
  api(F.agent, "GET", "/api/v1/tasks/{id}/log", NULL, NULL, 403, id1, NOQ);
  /* the result, twice: the second changes nothing */
  events = json_pack("[{sIsIsssIsssisfs{si}}]", "seq", (json_int_t)3, "inv", inv, "type", "done", "task",
                     (json_int_t)t1, "status", "ok", "exit_code", 0, "runtime", 0.5, "set_attrs", "rendered", 1);
  b = json_pack("{sssO}", "session", session, "events", events);
  api(F.agent, "POST", "/api/v1/agents/{id}/report", b, &a, 200, "t1", NOQ);
  json_decref(a);
  json_decref(b);
  json_object_set_new(json_array_get(events, 0), "seq", json_integer(4)); /* even as a new event */
  b = json_pack("{sssO}", "session", session, "events", events);
  api(F.agent, "POST", "/api/v1/agents/{id}/report", b, &a, 200, "t1", NOQ);
  json_decref(a);
  json_decref(b);
  json_decref(events);
  api(F.user, "GET", "/api/v1/tasks/{id}", NULL, &a, 200, id1, NOQ);
  CHECK_EQ_STR(json_string_value(json_object_get(a, "state")), "done");
  CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(a, "attrs"), "rendered")), 1);
  CHECK_EQ_INT(json_array_size(json_object_get(a, "invocations")), 1);
  CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(json_object_get(a, "invocations"), 0), "worker")), "t1");
  json_decref(a);
  api(F.user, "GET", "/api/v1/tasks/{id}/invocations", NULL, &a, 200, id1, NOQ);
  CHECK_EQ_INT(json_array_size(json_object_get(a, "invocations")), 1);
  json_decref(a);
  api(F.user, "GET", "/api/v1/tasks/{id}/invocations", NULL, NULL, 404, "999999", NOQ);
  api(NULL, "GET", "/api/v1/tasks/{id}/invocations", NULL, NULL, 401, id1, NOQ);
  api(F.agent, "GET", "/api/v1/tasks/{id}/invocations", NULL, NULL, 403, id1, NOQ);
  api(F.user, "POST", "/api/v1/tasks/{id}/retry", NULL, NULL, 200, id1, NOQ); /* done: again */

  /* resume t2, cancel it, cancel again (409) */
  api(F.user, "POST", "/api/v1/tasks/{id}/resume", NULL, NULL, 200, id2, NOQ);
  api(F.user, "POST", "/api/v1/tasks/{id}/resume", NULL, NULL, 404, "999999", NOQ);
  api(NULL, "POST", "/api/v1/tasks/{id}/resume", NULL, NULL, 401, id2, NOQ);
  api(F.agent, "POST", "/api/v1/tasks/{id}/resume", NULL, NULL, 403, id2, NOQ);
  api(F.user, "POST", "/api/v1/tasks/{id}/cancel", NULL, NULL, 200, id2, NOQ);
  api(F.user, "POST", "/api/v1/tasks/{id}/cancel", NULL, NULL, 409, id2, NOQ);
  api(F.user, "POST", "/api/v1/tasks/{id}/cancel", NULL, NULL, 404, "999999", NOQ);
  api(NULL, "POST", "/api/v1/tasks/{id}/cancel", NULL, NULL, 401, id2, NOQ);
  api(F.agent, "POST", "/api/v1/tasks/{id}/cancel", NULL, NULL, 403, id2, NOQ);
  b = json_pack("{ss}", "node", "start");
  api(F.user, "POST", "/api/v1/tasks/{id}/move", b, NULL, 200, id2, NOQ);
  json_decref(b);

  /* a submission as a whole: t2's, by its id */
  api(F.user, "GET", "/api/v1/tasks/{id}", NULL, &a, 200, id2, NOQ);
  char gid[32];
  snprintf(gid, sizeof gid, "%lld", (long long)json_integer_value(json_object_get(a, "group")));
  json_decref(a);
  api(F.user, "GET", "/api/v1/groups", NULL, &a, 200, NOQ);
  json_decref(a);
  api(NULL, "GET", "/api/v1/groups", NULL, NULL, 401, NOQ);
  api(F.agent, "GET", "/api/v1/groups", NULL, NULL, 403, NOQ);
  static const char *const gops[] = {"/api/v1/groups/{group}/pause", "/api/v1/groups/{group}/resume",
                                     "/api/v1/groups/{group}/cancel", "/api/v1/groups/{group}/retry"};
  for (size_t k = 0; k < 4; k++) {
    api(F.user, "POST", gops[k], NULL, &a, 200, gid, NOQ);
    CHECK_EQ_INT(json_integer_value(json_object_get(a, "tasks")), 1); /* t2, moved to start */
    json_decref(a);
    api(F.user, "POST", gops[k], NULL, NULL, 404, "no-such-name", NOQ);
    api(NULL, "POST", gops[k], NULL, NULL, 401, gid, NOQ);
    api(F.agent, "POST", gops[k], NULL, NULL, 403, gid, NOQ);
  }

  /* workers */
  api(F.user, "GET", "/api/v1/workers", NULL, &a, 200, NOQ);
  CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(json_object_get(a, "workers"), 0), "id")), "t1");
  json_decref(a);
  api(NULL, "GET", "/api/v1/workers", NULL, NULL, 401, NOQ);
  api(F.agent, "GET", "/api/v1/workers", NULL, NULL, 403, NOQ);
  api(F.user, "POST", "/api/v1/workers/{id}/drain", NULL, &a, 200, "t1", NOQ);
  CHECK(json_is_true(json_object_get(a, "drain")));
  json_decref(a);
  b = json_pack("{sb}", "drain", 0);
  api(F.user, "POST", "/api/v1/workers/{id}/drain", b, NULL, 200, "t1", NOQ);
  json_decref(b);
  b = json_pack("{si}", "drain", 3);
  api(F.user, "POST", "/api/v1/workers/{id}/drain", b, NULL, 400, "t1", NOQ);
  json_decref(b);
  api(NULL, "POST", "/api/v1/workers/{id}/drain", NULL, NULL, 401, "t1", NOQ);
  api(F.agent, "POST", "/api/v1/workers/{id}/drain", NULL, NULL, 403, "t1", NOQ);
  b = json_pack("{s[ss]}", "tags", "gpu", "houdini");
  api(F.user, "PUT", "/api/v1/workers/{id}/tags", b, &a, 200, "t1", NOQ);
  CHECK_EQ_INT(json_array_size(json_object_get(a, "tags")), 2);
  json_decref(a);
  api(NULL, "PUT", "/api/v1/workers/{id}/tags", b, NULL, 401, "t1", NOQ);
  api(F.agent, "PUT", "/api/v1/workers/{id}/tags", b, NULL, 403, "t1", NOQ);
  json_decref(b);
  b = json_pack("{s[i]}", "tags", 1);
  api(F.user, "PUT", "/api/v1/workers/{id}/tags", b, NULL, 400, "t1", NOQ);
  json_decref(b);

  /* limits */
  api(F.user, "GET", "/api/v1/limits", NULL, &a, 200, NOQ);
  CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(json_object_get(a, "limits"), "lic"), "max")), 2);
  json_decref(a);
  api(NULL, "GET", "/api/v1/limits", NULL, NULL, 401, NOQ);
  api(F.agent, "GET", "/api/v1/limits", NULL, NULL, 403, NOQ);
  b = json_pack("{si}", "max", 5);
  api(F.admin, "PUT", "/api/v1/limits/{name}", b, &a, 200, "houdini", NOQ);
  CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(a, "limit"), "max")), 5);
  json_decref(a);
  api(F.user, "PUT", "/api/v1/limits/{name}", b, NULL, 403, "houdini", NOQ);
  api(NULL, "PUT", "/api/v1/limits/{name}", b, NULL, 401, "houdini", NOQ);
  json_decref(b);
  b = json_pack("{si}", "max", -1);
  api(F.admin, "PUT", "/api/v1/limits/{name}", b, NULL, 400, "houdini", NOQ);
  json_decref(b);

  /* events: a change shows up on the stream */
  farm_events *ev = malloc(sizeof *ev);
  farm_events_start(ev, &F, "/api/v1/events", 10, "event: task", NULL); /* one is enough */
  b = json_pack("{s{si}}", "attrs", "poke", 1);
  api(F.user, "POST", "/api/v1/tasks/{id}/attrs", b, NULL, 200, id2, NOQ);
  json_decref(b);
  farm_events_end(ev);
  CHECK_CONTAINS(ev->buf, "event: task");
  free(ev);
  json_object_set_new(seen, "GET /api/v1/events 200", json_true());
  api(NULL, "GET", "/api/v1/events", NULL, NULL, 401, NOQ);
  api(F.agent, "GET", "/api/v1/events", NULL, NULL, 403, NOQ);

  /* tokens */
  api(F.admin, "GET", "/api/v1/tokens", NULL, &a, 200, NOQ);
  CHECK(json_array_size(json_object_get(a, "tokens")) >= 3);
  json_decref(a);
  api(F.user, "GET", "/api/v1/tokens", NULL, NULL, 403, NOQ);
  api(NULL, "GET", "/api/v1/tokens", NULL, NULL, 401, NOQ);
  b = json_pack("{ssss}", "role", "user", "name", "wrangler");
  api(F.admin, "POST", "/api/v1/tokens", b, &a, 201, NOQ);
  char tid[32];
  snprintf(tid, sizeof tid, "%s", json_string_value(json_object_get(a, "id")));
  char *newtok = strdup(json_string_value(json_object_get(a, "token")));
  json_decref(a);
  api(F.user, "POST", "/api/v1/tokens", b, NULL, 403, NOQ);
  api(NULL, "POST", "/api/v1/tokens", b, NULL, 401, NOQ);
  json_decref(b);
  b = json_pack("{ss}", "role", "king");
  api(F.admin, "POST", "/api/v1/tokens", b, NULL, 400, NOQ);
  json_decref(b);
  api(newtok, "GET", "/api/v1/workers", NULL, NULL, 200, NOQ);
  api(F.admin, "DELETE", "/api/v1/tokens/{id}", NULL, NULL, 200, tid, NOQ);
  api(newtok, "GET", "/api/v1/workers", NULL, NULL, 401, NOQ); /* revoked at once */
  api(F.admin, "DELETE", "/api/v1/tokens/{id}", NULL, NULL, 404, tid, NOQ);
  api(F.user, "DELETE", "/api/v1/tokens/{id}", NULL, NULL, 403, tid, NOQ);
  api(NULL, "DELETE", "/api/v1/tokens/{id}", NULL, NULL, 401, tid, NOQ);
  free(newtok);
  /* a name too long for the token file: the caller's fault, 400 (was 500) */
  char *longname = malloc(100001);
  memset(longname, 'n', 100000);
  longname[100000] = 0;
  b = json_pack("{ssss}", "role", "user", "name", longname);
  api(F.admin, "POST", "/api/v1/tokens", b, &a, 400, NOQ);
  CHECK_CONTAINS(json_string_value(json_object_get(a, "error")), "the name is too long");
  json_decref(a);
  json_decref(b);
  free(longname);

  /* an agent leaves: offline, not lost later */
  b = json_pack("{sssss[]}", "id", "t9", "instance", "i9", "held");
  api(F.agent, "POST", "/api/v1/agents/register", b, &a, 200, NOQ);
  json_decref(b);
  b = json_pack("{ss}", "session", json_string_value(json_object_get(a, "session")));
  json_decref(a);
  json_t *wrong = json_pack("{ss}", "session", "wrong"), *arr = json_array();
  api(F.agent, "POST", "/api/v1/agents/{id}/leave", wrong, NULL, 409, "t9", NOQ);
  api(F.agent, "POST", "/api/v1/agents/{id}/leave", arr, NULL, 400, "t9", NOQ);
  api(F.user, "POST", "/api/v1/agents/{id}/leave", b, NULL, 403, "t9", NOQ);
  api(NULL, "POST", "/api/v1/agents/{id}/leave", b, NULL, 401, "t9", NOQ);
  api(F.agent, "POST", "/api/v1/agents/{id}/leave", b, &a, 200, "t9", NOQ);
  CHECK_EQ_STR(json_string_value(json_object_get(a, "left")), "t9");
  json_decref(a);
  api(F.agent, "POST", "/api/v1/agents/{id}/leave", b, NULL, 409, "t9", NOQ); /* gone already */
  json_decref(b);
  json_decref(wrong);
  json_decref(arr);
  api(F.user, "GET", "/api/v1/workers", NULL, &a, 200, NOQ);
  size_t wi;
  json_t *wk;
  json_array_foreach(json_object_get(a, "workers"), wi, wk)
    if (strcmp(json_string_value(json_object_get(wk, "id")), "t9") == 0)
      CHECK_EQ_STR(json_string_value(json_object_get(wk, "state")), "offline");
  json_decref(a);

  /* every documented answer was seen */
  char missing[4096] = "";
  const char *p;
  json_t *ops;
  json_object_foreach(json_object_get(spec, "paths"), p, ops) {
    const char *m;
    json_t *o;
    json_object_foreach(ops, m, o) {
      const char *code;
      json_t *r;
      json_object_foreach(json_object_get(o, "responses"), code, r) {
        char key[512], um[8];
        snprintf(um, sizeof um, "%s", m);
        for (char *x = um; *x; x++) *x = (char)(*x - 'a' + 'A');
        snprintf(key, sizeof key, "%s %s %s", um, p, code);
        if (!json_object_get(seen, key) && strlen(missing) + strlen(key) + 3 < sizeof missing) {
          strcat(missing, key);
          strcat(missing, "; ");
        }
      }
    }
  }
  if (*missing) br_test_fail(__FILE__, __LINE__, "documented, never seen: %s", missing);
  json_decref(g);
  json_decref(seen);
  json_decref(spec);
  farm_stop(&F);
}
