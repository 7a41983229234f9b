/* The command line over a real server (braid submit, ls, show, log -f,
 * cancel, retry, pause, resume, workers, token; --json; the server and token
 * from flags, the environment or a config file), and the server's security:
 * no token, a wrong token, an agent token on user or admin endpoints get
 * 401 or 403 and change nothing; oversized and malformed requests get 4xx
 * and the server stays up. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "farm-util.h"
#include "pg_fixture.h"

static farm F;

/* Runs braid with ARGS against the farm (env server and token); returns the
 * exit status, output in *out (caller frees). */
static int braid(char **out, const char *token, const char *fmt, ...) {
  char args[4096], cmd[16384], path[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(args, sizeof args, fmt, ap);
  va_end(ap);
  snprintf(path, sizeof path, "%s/cli.out", F.dir);
  snprintf(cmd, sizeof cmd, "cd '%s' && BRAID_SERVER='%s' BRAID_TOKEN='%s' '%s' %s > '%s' 2> '%s.err'; st=$?; "
           "cat '%s.err' >> '%s'; exit $st", F.dir, F.url, token ? token : "", farm_bin(), args, path, path,
           path, path);
  int st = system(cmd);
  if (out) *out = br_test_slurp(path);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static json_t *braid_json(const char *fmt, const char *arg) {
  char *out;
  char args[1024];
  snprintf(args, sizeof args, fmt, arg);
  int st = braid(&out, F.user, "%s", args);
  if (st != 0) br_test_fail(__FILE__, __LINE__, "braid %s: exit %d: %s", args, st, out);
  json_t *j = json_loads(out, 0, NULL);
  if (!j) br_test_fail(__FILE__, __LINE__, "braid %s: not JSON: %s", args, out);
  free(out);
  return j;
}

TEST(farm_command_line) {
  farm_start(&F, "farm-cli", "--poll-wait 1 --lost-after 10");
  br_test_put(F.dir, "g.json",
              "{\"name\":\"cli\",\"start\":{\"node\":\"start\",\"attrs\":{\"n\":3}},\n"
              " \"nodes\":[{\"name\":\"start\",\"type\":\"null\"},\n"
              "  {\"name\":\"job\",\"type\":\"command\",\"params\":{\"shell\":"
              "\"for i in $(seq {n}); do echo line $i of {n} from {who}; sleep 0.3; done\"}}],\n"
              " \"wires\":[[\"start\",\"job\"]]}\n");
  char *out;
  /* no agent yet: the task waits queued */
  CHECK_EQ_INT(braid(&out, F.user, "submit g.json --set who=cli --priority 2"), 0);
  long long t = atoll(out);
  CHECK(t > 0);
  free(out);
  json_t *j = braid_json("show %s --json", "1");
  CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(j, "attrs"), "who")), "cli");
  CHECK_EQ_INT(json_integer_value(json_object_get(j, "priority")), 2);
  CHECK(json_object_get(json_object_get(j, "attrs"), "graph_dir") != NULL);
  json_decref(j);
  for (int i = 0; i < 100; i++) { /* the engine queues it */
    j = braid_json("ls --state %s --json", "queued");
    size_t n = json_array_size(j);
    json_decref(j);
    if (n == 1) break;
    usleep(30000);
  }
  char ts[32];
  snprintf(ts, sizeof ts, "%lld", t);
  CHECK_EQ_INT(braid(&out, F.user, "pause %s", ts), 0);
  free(out);
  j = braid_json("show %s --json", ts);
  CHECK(json_is_true(json_object_get(j, "paused")));
  json_decref(j);
  CHECK_EQ_INT(braid(&out, F.user, "resume %s --json", ts), 0);
  free(out);
  /* an agent comes: the job runs; follow its log to the end */
  farm_agent(&F, "cli-agent", "--slots 1");
  CHECK_EQ_INT(braid(&out, F.user, "log -f %s", ts), 0);
  CHECK_CONTAINS(out, "line 1 of 3 from cli\nline 2 of 3 from cli\nline 3 of 3 from cli\n");
  free(out);
  CHECK(farm_settle(&F, 30));
  CHECK_EQ_INT(braid(&out, F.user, "ls"), 0);
  CHECK_CONTAINS(out, "done");
  free(out);
  CHECK_EQ_INT(braid(&out, F.user, "show %s", ts), 0);
  CHECK_CONTAINS(out, "on cli-agent");
  free(out);
  CHECK_EQ_INT(braid(&out, F.user, "log %s", ts), 0);
  CHECK_CONTAINS(out, "line 3 of 3");
  free(out);
  /* retry, then cancel it while it runs */
  CHECK_EQ_INT(braid(&out, F.user, "retry %s", ts), 0);
  free(out);
  for (int i = 0; i < 200; i++) {
    j = braid_json("show %s --json", ts);
    bool running = strcmp(json_string_value(json_object_get(j, "state")), "running") == 0;
    json_decref(j);
    if (running) break;
    usleep(20000);
  }
  CHECK_EQ_INT(braid(&out, F.user, "cancel %s", ts), 0);
  free(out);
  for (int i = 0; i < 200; i++) {
    j = braid_json("show %s --json", ts);
    bool c = strcmp(json_string_value(json_object_get(j, "state")), "cancelled") == 0;
    json_decref(j);
    if (c) break;
    usleep(20000);
  }
  j = braid_json("show %s --json", ts);
  CHECK_EQ_STR(json_string_value(json_object_get(j, "state")), "cancelled");
  json_t *invs = json_object_get(j, "invocations");
  CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(invs, json_array_size(invs) - 1), "status")),
               "cancelled");
  json_decref(j);
  /* workers */
  j = braid_json("workers %s", "--json");
  CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(j, 0), "id")), "cli-agent");
  json_decref(j);
  CHECK_EQ_INT(braid(&out, F.user, "workers drain cli-agent"), 0);
  free(out);
  CHECK_EQ_INT(braid(&out, F.user, "workers tags cli-agent gpu nuke"), 0);
  free(out);
  CHECK_EQ_INT(braid(&out, F.user, "workers"), 0);
  CHECK_CONTAINS(out, "draining");
  CHECK_CONTAINS(out, "gpu,nuke");
  free(out);
  /* errors: exit 2 and a message */
  CHECK_EQ_INT(braid(&out, F.user, "cancel 999999"), 2);
  CHECK_CONTAINS(out, "999999");
  free(out);
  CHECK_EQ_INT(braid(&out, F.user, "cancel abc"), 2);
  free(out);
  CHECK_EQ_INT(braid(&out, F.user, "submit /nonexistent.json"), 2);
  free(out);
  CHECK_EQ_INT(braid(&out, F.agent, "ls"), 1); /* an agent token may not */
  CHECK_CONTAINS(out, "403");
  free(out);
  CHECK_EQ_INT(braid(&out, "brt_wrong", "ls"), 1);
  CHECK_CONTAINS(out, "401");
  free(out);
  CHECK_EQ_INT(braid(&out, NULL, "ls --server http://127.0.0.1:1"), 1); /* nobody there */
  free(out);
  /* every command has --help */
  const char *cmds[] = {"submit", "ls", "show", "log", "cancel", "retry", "pause", "resume",
                        "workers", "server", "agent", "token"};
  for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++) {
    CHECK_EQ_INT(braid(&out, F.user, "%s --help", cmds[i]), 0);
    CHECK_CONTAINS(out, "usage: braid");
    free(out);
  }
  /* the config file, and tokens made over the API */
  CHECK_EQ_INT(braid(&out, F.admin, "token create --role user --name cfg --json"), 0);
  json_t *tok = json_loads(out, 0, NULL);
  free(out);
  CHECK(tok != NULL);
  char cfg[1024], cmd[4096];
  snprintf(cfg, sizeof cfg, "%s/config.json", F.dir);
  FILE *cf = fopen(cfg, "w");
  fprintf(cf, "{\"server\": \"%s\", \"token\": \"%s\"}\n", F.url, json_string_value(json_object_get(tok, "token")));
  fclose(cf);
  snprintf(cmd, sizeof cmd, "env -u BRAID_SERVER -u BRAID_TOKEN BRAID_CONFIG='%s' '%s' ls --json > '%s/cfg.out' 2>&1",
           cfg, farm_bin(), F.dir);
  CHECK_EQ_INT(system(cmd), 0);
  snprintf(cmd, sizeof cmd, "%s/cfg.out", F.dir);
  out = br_test_slurp(cmd);
  json_t *ls = json_loads(out, 0, NULL);
  CHECK(json_is_array(ls));
  json_decref(ls);
  free(out);
  CHECK_EQ_INT(braid(&out, F.admin, "token revoke %s", json_string_value(json_object_get(tok, "id"))), 0);
  free(out);
  snprintf(cmd, sizeof cmd, "env -u BRAID_SERVER -u BRAID_TOKEN BRAID_CONFIG='%s' '%s' ls > /dev/null 2>&1", cfg,
           farm_bin());
  CHECK_EQ_INT(WEXITSTATUS(system(cmd)), 1); /* revoked */
  json_decref(tok);
  /* a token file edited by hand: the typo is told with where, the rest counts */
  char tf[1024];
  snprintf(tf, sizeof tf, "%s/hand.tokens", F.dir);
  FILE *hf = fopen(tf, "w");
  fprintf(hf, "{\"id\":\"h1\",\"sha256\":\"%064d\",\"role\":\"usr\"}\n"
              "{\"id\":\"h2\",\"sha256\":\"%064d\",\"role\":\"user\",\"name\":\"kept\"}\n", 1, 2);
  fclose(hf);
  CHECK_EQ_INT(braid(&out, NULL, "token list --token-file '%s'", tf), 0);
  CHECK_CONTAINSF(out,
                  "braid: warning: token file %s:1: unknown role \"usr\" (roles: agent, user, admin); "
                  "line skipped",
                  tf);
  CHECK_CONTAINS(out, "h2");
  CHECK_CONTAINS(out, "kept");
  free(out);
  farm_stop(&F);
}

static int raw(const char *data, size_t len) {
  int port = atoi(strrchr(F.url, ':') + 1);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    close(fd);
    return -1;
  }
  size_t off = 0;
  while (off < len) {
    ssize_t n = send(fd, data + off, len - off, MSG_NOSIGNAL);
    if (n <= 0) break;
    off += (size_t)n;
  }
  shutdown(fd, SHUT_WR);
  char buf[2048];
  ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
  close(fd);
  if (n < 12) return 0;
  buf[n] = 0;
  return atoi(buf + 9);
}

static void snapshot(json_t **tasks, json_t **graphs, json_t **workers) {
  CHECK_EQ_INT(farm_call(&F, F.admin, "GET", "/api/v1/tasks?attrs=1&limit=1000", NULL, tasks), 200);
  CHECK_EQ_INT(farm_call(&F, F.admin, "GET", "/api/v1/graphs", NULL, graphs), 200);
  CHECK_EQ_INT(farm_call(&F, F.admin, "GET", "/api/v1/workers", NULL, workers), 200);
  /* what changes by itself */
  size_t i;
  json_t *w;
  json_array_foreach(json_object_get(*workers, "workers"), i, w) json_object_del(w, "last_seen_ms");
}

TEST(farm_security) {
  farm_start(&F, "farm-security", "--poll-wait 1 --lost-after 30 --limit lic=1");
  char *other = farm_token(&F, "agent");
  json_t *g = farm_jobs_graph("sec", 2, "{\"shell\":\"true\"}");
  farm_submit_graph(&F, json_incref(g), NULL, 0, NULL);
  /* processed: queued, waiting for an agent that never comes */
  CHECK(farm_wait_count(&F, "node=job&state=queued", 2));
  json_t *t0, *g0, *w0;
  snapshot(&t0, &g0, &w0);
  json_t *task = json_array_get(json_object_get(t0, "tasks"), 1);
  char id[32];
  snprintf(id, sizeof id, "%lld", (long long)json_integer_value(json_object_get(task, "id")));
  struct {
    const char *method, *path;
    json_t *body;
  } changes[] = {
      {"POST", "/api/v1/submissions", json_pack("{sO}", "graph", g)},
      {"POST", "/api/v1/graphs", json_incref(g)},
      {"POST", "/api/v1/tasks/ID/cancel", NULL},
      {"POST", "/api/v1/tasks/ID/retry", NULL},
      {"POST", "/api/v1/tasks/ID/pause", NULL},
      {"PUT", "/api/v1/tasks/ID/priority", json_pack("{si}", "priority", 9)},
      {"POST", "/api/v1/tasks/ID/attrs", json_pack("{s{si}}", "attrs", "x", 1)},
      {"POST", "/api/v1/tasks/ID/move", json_pack("{ss}", "node", "start")},
      {"POST", "/api/v1/workers/w1/drain", NULL},
      {"PUT", "/api/v1/workers/w1/tags", json_pack("{s[s]}", "tags", "x")},
      {"PUT", "/api/v1/limits/lic", json_pack("{si}", "max", 9)},
      {"POST", "/api/v1/tokens", json_pack("{ss}", "role", "admin")},
      {"GET", "/api/v1/tasks", NULL},
      {"GET", "/api/v1/events", NULL},
      {"GET", "/metrics", NULL},
  };
  for (size_t i = 0; i < sizeof changes / sizeof *changes; i++) {
    char path[256];
    const char *p = changes[i].path, *at = strstr(p, "ID");
    if (at) snprintf(path, sizeof path, "%.*s%s%s", (int)(at - p), p, id, at + 2);
    else snprintf(path, sizeof path, "%s", p);
    /* no token, a wrong one, an agent's */
    CHECK_EQ_INT(farm_call(&F, NULL, changes[i].method, path, changes[i].body, NULL), 401);
    CHECK_EQ_INT(farm_call(&F, "brt_0000000000000000000000000000000000000000000000000000000000000000",
                           changes[i].method, path, changes[i].body, NULL), 401);
    CHECK_EQ_INT(farm_call(&F, F.agent, changes[i].method, path, changes[i].body, NULL), 403);
    if (strstr(path, "limits") || strstr(path, "tokens")) /* admin only */
      CHECK_EQ_INT(farm_call(&F, F.user, changes[i].method, path, changes[i].body, NULL), 403);
    json_decref(changes[i].body);
  }
  /* agents' endpoints: not for users */
  json_t *reg = json_pack("{ss}", "id", "intruder");
  CHECK_EQ_INT(farm_call(&F, F.user, "POST", "/api/v1/agents/register", reg, NULL), 403);
  CHECK_EQ_INT(farm_call(&F, NULL, "POST", "/api/v1/agents/register", reg, NULL), 401);
  json_decref(reg);
  /* malformed and oversized: 4xx, and the server stays up */
  char req[2048];
  int n = snprintf(req, sizeof req,
                   "POST /api/v1/submissions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                   "Content-Length: 9\r\n\r\n{\"graph\":", F.user);
  CHECK_EQ_INT(raw(req, (size_t)n), 400);
  n = snprintf(req, sizeof req,
               "POST /api/v1/agents/x/report HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
               "Content-Length: 999999999999\r\n\r\n", other);
  CHECK_EQ_INT(raw(req, (size_t)n), 413);
  size_t big = 17u << 20;
  char *huge = malloc(big + 1024);
  n = snprintf(huge, 1024,
               "POST /api/v1/submissions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
               "Transfer-Encoding: chunked\r\n\r\n", F.user);
  size_t off = (size_t)n;
  for (int k = 0; k < 17; k++) { /* 17 chunks of 1 MiB: past the 16 MiB limit */
    off += (size_t)sprintf(huge + off, "100000\r\n");
    memset(huge + off, ' ', 1 << 20);
    off += 1 << 20;
    off += (size_t)sprintf(huge + off, "\r\n");
  }
  off += (size_t)sprintf(huge + off, "0\r\n\r\n");
  int st = raw(huge, off);
  CHECK(st == 413 || st == 0); /* answered 413, or cut off */
  free(huge);
  const char *junk[] = {"GARBAGE\r\n\r\n", "GET /health HTTP/1.1\r\nAuthorization: Bearer\r\n\r\n",
                        "\xff\xfe\r\n\r\n", "POST /api/v1/tasks/1/attrs HTTP/1.1\r\n\r\n{{{{"};
  for (size_t i = 0; i < sizeof junk / sizeof *junk; i++) {
    st = raw(junk[i], strlen(junk[i]));
    CHECK(st == 0 || (st >= 400 && st < 500));
  }
  json_t *bad[] = {json_pack("[i]", 1), json_pack("{s[]}", "graph"), json_pack("{sss{ss}}", "graph", "sec", "attrs", "a", "b"),
                   json_pack("{sssi}", "graph", "sec", "priority", 1) /* fine: a control */};
  int want[] = {400, 400, 201, 201};
  for (size_t i = 0; i < 4; i++) {
    CHECK_EQ_INT(farm_call(&F, F.user, "POST", "/api/v1/submissions", bad[i], NULL), want[i]);
    json_decref(bad[i]);
  }
  json_t *h = NULL;
  CHECK_EQ_INT(farm_call(&F, F.agent, "GET", "/health", NULL, &h), 200);
  CHECK(json_is_true(json_object_get(h, "ok")));
  json_decref(h);
  /* nothing changed by the refused requests (the two good submissions aside) */
  json_t *t1, *g1, *w1;
  snapshot(&t1, &g1, &w1);
  CHECK(json_equal(g0, g1));
  CHECK(json_equal(w0, w1));
  json_t *a0 = json_object_get(t0, "tasks"), *a1 = json_object_get(t1, "tasks");
  for (size_t i = 0; i < json_array_size(a0); i++) {
    json_t *x = json_array_get(a0, i), *y = json_array_get(a1, i);
    json_object_del(x, "updated_ms");
    json_object_del(y, "updated_ms");
    CHECK(json_equal(x, y));
  }
  json_t *l = NULL;
  CHECK_EQ_INT(farm_call(&F, F.user, "GET", "/api/v1/limits", NULL, &l), 200);
  CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(json_object_get(l, "limits"), "lic"), "max")), 1);
  json_decref(l);
  json_t *toks = NULL;
  CHECK_EQ_INT(farm_call(&F, F.admin, "GET", "/api/v1/tokens", NULL, &toks), 200);
  CHECK_EQ_INT(json_array_size(json_object_get(toks, "tokens")), 4); /* admin, user, two agents */
  json_decref(toks);
  /* every route, odd bodies, as admin (allowed everywhere): never a 5xx, never a crash */
  json_t *reg2 = json_pack("{sss[{ss}]}", "id", "fuzz", "held", "id", "abc");
  json_t *ra = NULL;
  CHECK_EQ_INT(farm_call(&F, F.admin, "POST", "/api/v1/agents/register", reg2, &ra), 200);
  char sess[64];
  snprintf(sess, sizeof sess, "%s", json_string_value(json_object_get(ra, "session")));
  json_decref(ra);
  json_decref(reg2);
  const char *bodies[] = {"{}", "[]", "\"x\"", "1", "null", "{\"graph\":[]}", "{\"graph\":{\"nodes\":7}}",
                          "{\"attrs\":[],\"priority\":\"x\",\"node\":null,\"tags\":{}}",
                          "{\"id\":[],\"held\":7,\"tags\":[1,2]}",
                          "{\"session\":\"SESS\",\"events\":[1,\"x\",{\"type\":5},{\"seq\":\"a\",\"inv\":{}}],"
                          "\"free\":[],\"wait_ms\":-5}",
                          "{\"session\":\"SESS\",\"events\":{},\"free\":{\"slots\":\"many\"},\"wait_ms\":0}",
                          "{\"max\":\"x\",\"drain\":\"yes\",\"role\":7,\"node\":7}"};
  const char *routes[][2] = {
      {"POST", "/api/v1/graphs"}, {"POST", "/api/v1/submissions"}, {"POST", "/api/v1/tasks/1/cancel"},
      {"PUT", "/api/v1/tasks/1/priority"}, {"POST", "/api/v1/tasks/1/attrs"}, {"POST", "/api/v1/tasks/1/move"},
      {"POST", "/api/v1/workers/fuzz/drain"}, {"PUT", "/api/v1/workers/fuzz/tags"}, {"PUT", "/api/v1/limits/x"},
      {"POST", "/api/v1/tokens"}, {"POST", "/api/v1/agents/register"}, {"POST", "/api/v1/agents/fuzz/poll"},
      {"POST", "/api/v1/agents/fuzz/report"}, {"GET", "/api/v1/tasks?state=x&limit=-1&after=q&graph=z"},
      {"GET", "/api/v1/tasks/0/log?offset=-1&wait=99&invocation=x"}, {"GET", "/api/v1/graphs/%00?version=-1"},
      {"POST", "/api/v1/tasks/99999999999999999999999/retry"}, {"DELETE", "/api/v1/tokens/..%2F..%2Fetc"}};
  for (size_t r = 0; r < sizeof routes / sizeof *routes; r++)
    for (size_t b = 0; b < sizeof bodies / sizeof *bodies; b++) {
      char text[1024];
      snprintf(text, sizeof text, "%s", bodies[b]);
      char *at = strstr(text, "SESS");
      if (at) { /* the real session, so the body is looked at */
        char rest[1024];
        snprintf(rest, sizeof rest, "%s", at + 4);
        snprintf(at, sizeof text - (size_t)(at - text), "%s%s", sess, rest);
      }
      json_t *body = json_loads(text, JSON_DECODE_ANY, NULL);
      CHECK(body != NULL);
      int fst = farm_call(&F, F.admin, routes[r][0], routes[r][1], strcmp(routes[r][0], "GET") ? body : NULL, NULL);
      if (fst < 200 || fst >= 500)
        br_test_fail(__FILE__, __LINE__, "%s %s %s: %d", routes[r][0], routes[r][1], text, fst);
      json_decref(body);
    }
  CHECK_EQ_INT(farm_call(&F, F.agent, "GET", "/health", NULL, NULL), 200); /* still up */
  json_decref(t0);
  json_decref(g0);
  json_decref(w0);
  json_decref(t1);
  json_decref(g1);
  json_decref(w1);
  json_decref(g);
  free(other);
  farm_stop(&F);
}

TEST(farm_tls) {
  /* a private CA's certificate for 127.0.0.1; the server serves HTTPS */
  char *dir = br_test_tmpdir("farm-tls-cert");
  char cmd[4096];
  snprintf(cmd, sizeof cmd,
           "cd '%s' && openssl req -x509 -newkey rsa:2048 -nodes -keyout key.pem -out cert.pem -days 2 "
           "-subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 > openssl.log 2>&1",
           dir);
  CHECK_EQ_INT(system(cmd), 0);
  char args[2048];
  snprintf(args, sizeof args, "--poll-wait 1 --tls-cert '%s/cert.pem' --tls-key '%s/key.pem'", dir, dir);
  farm_start(&F, "farm-tls", args);
  CHECK(strncmp(F.url, "https://", 8) == 0);
  char ca[1024];
  snprintf(ca, sizeof ca, "%s/cert.pem", dir);
  setenv("BRAID_CA", ca, 1); /* for the agent and the command line */
  farm_agent(&F, "tls-agent", "--slots 1");
  br_test_put(F.dir, "g.json",
              "{\"name\":\"tls\",\"start\":{\"node\":\"start\",\"attrs\":{}},\"nodes\":["
              "{\"name\":\"start\",\"type\":\"null\"},{\"name\":\"job\",\"type\":\"command\","
              "\"params\":{\"shell\":\"echo over tls\"}}],\"wires\":[[\"start\",\"job\"]]}\n");
  char *out;
  CHECK_EQ_INT(braid(&out, F.user, "submit g.json"), 0);
  long long t = atoll(out);
  free(out);
  CHECK(farm_settle(&F, 30));
  char ts[32];
  snprintf(ts, sizeof ts, "%lld", t);
  CHECK_EQ_INT(braid(&out, F.user, "log %s", ts), 0);
  CHECK_CONTAINS(out, "over tls");
  free(out);
  unsetenv("BRAID_CA"); /* without the CA the certificate is refused */
  CHECK_EQ_INT(braid(&out, F.user, "ls"), 1);
  free(out);
  /* a config file's relative "ca" is beside it, not in the working folder */
  snprintf(cmd, sizeof cmd, "{\"server\": \"%s\", \"token\": \"%s\", \"ca\": \"cert.pem\"}",
           F.url, F.user);
  br_test_put(dir, "config.json", cmd);
  snprintf(cmd, sizeof cmd,
           "cd '%s' && env -u BRAID_SERVER -u BRAID_TOKEN BRAID_CONFIG='%s/config.json' '%s' ls "
           "> ca.out 2>&1",
           F.dir, dir, farm_bin());
  CHECK_EQ_INT(system(cmd), 0);
  free(dir);
  farm_stop(&F);
}

TEST(farm_event_stream) {
  farm_start(&F, "farm-events", "--poll-wait 1");
  farm_events *e = malloc(sizeof *e);
  farm_events_start(e, &F, "/api/v1/events", 30, "event: progress", "event: worker",
                    "\"state\":\"done\"", NULL);
  farm_agent(&F, "ev-agent", "--slots 1"); /* a worker event */
  farm_submit_graph(&F, farm_jobs_graph("ev", 1, "{\"shell\":\"braid ctl progress 0.5; sleep 0.3\"}"), NULL, 0,
                    NULL);
  farm_events_end(e);
  CHECK_CONTAINS(e->buf, "event: worker\ndata: {\"id\":\"ev-agent\"");
  CHECK_CONTAINS(e->buf, "event: progress\ndata: {\"task\":");
  CHECK_CONTAINS(e->buf, "\"value\":0.5");
  CHECK_CONTAINS(e->buf, "event: task");
  CHECK_CONTAINS(e->buf, "\"state\":\"running\"");
  /* reconnecting with the last id seen gets what came since, and no gap */
  const char *first = strstr(e->buf, "id: ");
  CHECK(first != NULL);
  long long first_id = atoll(first + 4);
  farm_submit_graph(&F, farm_jobs_graph("ev2", 1, "{\"shell\":\"true\"}"), NULL, 0, NULL);
  CHECK(farm_settle(&F, 20));
  char path[128];
  snprintf(path, sizeof path, "/api/v1/events?since=%lld", first_id - 1);
  farm_events *e2 = malloc(sizeof *e2);
  farm_events_start(e2, &F, path, 10, "\"name\":\"ev2\"", NULL);
  farm_events_end(e2);
  CHECK(strstr(e2->buf, "event: gap") == NULL);
  char want[64];
  snprintf(want, sizeof want, "id: %lld\n", first_id);
  CHECK_CONTAINS(e2->buf, want);
  CHECK_CONTAINS(e2->buf, "\"name\":\"ev2\"");
  free(e2);
  free(e);
  farm_stop(&F);
}

/* Runs `sh -c cmd` in the farm's folder; stdout and stderr apart (callers
 * free them); returns the exit status. */
static int run_split(const char *cmd, char **out, char **err) {
  char full[8192], po[1024], pe[1024];
  snprintf(po, sizeof po, "%s/split.out", F.dir);
  snprintf(pe, sizeof pe, "%s/split.err", F.dir);
  snprintf(full, sizeof full, "cd '%s' && (%s) > '%s' 2> '%s'", F.dir, cmd, po, pe);
  int st = system(full);
  *out = br_test_slurp(po);
  *err = br_test_slurp(pe);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

TEST(farm_command_line_arguments) {
  farm_start(&F, "farm-cli-args", "--poll-wait 1 --lost-after 10");
  farm_agent(&F, "agA", "--slots 1");
  char *out, *err, cmd[4096], path[1024];
  for (int i = 0; i < 200; i++) { /* registered */
    braid(&out, F.user, "workers");
    bool there = strstr(out, "agA") != NULL;
    free(out);
    if (there) break;
    usleep(50000);
  }
  /* workers: options anywhere, as elsewhere; $BRAID_SERVER (nowhere here)
   * loses to --server, and "--server URL" are not tags */
  snprintf(cmd, sizeof cmd,
           "BRAID_SERVER=http://127.0.0.1:1 BRAID_TOKEN='%s' '%s' workers tags agA gpu --server %s "
           "--json",
           F.user, farm_bin(), F.url);
  CHECK_EQ_INT(run_split(cmd, &out, &err), 0);
  json_t *j = json_loads(out, 0, NULL);
  CHECK(j != NULL);
  CHECK_EQ_INT(json_array_size(json_object_get(j, "tags")), 1);
  CHECK_EQ_STR(json_string_value(json_array_get(json_object_get(j, "tags"), 0)), "gpu");
  json_decref(j);
  free(out);
  free(err);
  CHECK_EQ_INT(braid(&out, F.user, "workers drain agA --json"), 0);
  j = json_loads(out, JSON_DISABLE_EOF_CHECK, NULL);
  CHECK(json_is_true(json_object_get(j, "drain")));
  json_decref(j);
  free(out);
  CHECK_EQ_INT(braid(&out, F.user, "workers drain --help"), 0);
  CHECK_CONTAINS(out, "usage: braid workers");
  free(out);
  CHECK_EQ_INT(braid(&out, F.user, "workers drian agA"), 2);
  CHECK_CONTAINS(out, "braid: workers: 'drian' is not one of drain, undrain, tags");
  free(out);
  CHECK_EQ_INT(braid(&out, F.user, "workers undrain nosuch"), 0); /* kept for when it comes */
  CHECK_CONTAINS(out, "braid: warning: no agent 'nosuch' has registered with the server");
  free(out);
  CHECK_EQ_INT(braid(&out, F.user, "workers undrain agA"), 0);
  CHECK(strstr(out, "warning") == NULL);
  free(out);
  /* ids: strict, one rule for every command */
  CHECK_EQ_INT(braid(&out, F.user, "show 99999999999999999999"), 2);
  CHECK_CONTAINS(out, "braid: '99999999999999999999' is not a task id: ids are whole numbers "
                      "from 1 to 9223372036854775807");
  free(out);
  CHECK_EQ_INT(braid(&out, F.user, "show -1"), 2);
  CHECK_CONTAINS(out, "braid: '-1' is not a task id: ids are positive");
  free(out);
  const char *bad[] = {"cancel 5x", "retry -- -3", "pause 0", "resume 1 2.5", "log -f -7",
                       "log --invocation 0 1", "ls --parent abc", "ls --group -2",
                       "ls --limit 10k", "submit g.json --priority 1e3"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    int st = braid(&out, F.user, "%s", bad[i]);
    if (st != 2 || !strstr(out, "braid: "))
      br_test_fail(__FILE__, __LINE__, "braid %s: exit %d: %s", bad[i], st, out);
    free(out);
  }
  /* ls prints its header only with an answer: nothing on stdout when it fails */
  const char *fails[] = {"ls --token brt_wrong", "ls --server http://127.0.0.1:1",
                         "ls --parent abc", "ls --state nope"};
  for (size_t i = 0; i < sizeof fails / sizeof *fails; i++) {
    snprintf(cmd, sizeof cmd, "BRAID_SERVER='%s' BRAID_TOKEN='%s' '%s' %s", F.url, F.user,
             farm_bin(), fails[i]);
    CHECK(run_split(cmd, &out, &err) != 0);
    if (*out) br_test_fail(__FILE__, __LINE__, "braid %s printed: %s", fails[i], out);
    CHECK(*err);
    free(out);
    free(err);
  }
  CHECK_EQ_INT(braid(&out, F.user, "ls"), 0);
  CHECK_CONTAINS(out, "      id  state");
  free(out);
  /* submit warns about braces meant for the shell, as validate and run do */
  br_test_put(F.dir, "w.json",
              "{\"name\":\"w\",\"nodes\":[\n"
              "{\"name\":\"a\",\"type\":\"command\",\"params\":"
              "{\"shell\":\"awk '{print $1}' f\"}}]}");
  CHECK_EQ_INT(braid(&out, F.user, "submit w.json"), 0);
  CHECK_CONTAINS(out, "w.json:2:48: warning: node 'a' (command)");
  free(out);
  /* a config file that cannot be used is an error with where, not ignored */
  const char *cfgs[][2] = {
      {"{\"server\": ", "braid: config file c.json:1:11: "},
      {"{\"server\": 5}", "braid: config file c.json: \"server\" must be a string"},
      {"[]", "braid: config file c.json: not a JSON object"},
      {"{\"server\": \"http://127.0.0.1:1\", \"tokn\": \"x\"}", /* a typo did nothing */
       "braid: config file c.json: unknown key \"tokn\" (known: server, token, token_file, ca)"},
  };
  for (size_t i = 0; i < sizeof cfgs / sizeof *cfgs; i++) {
    br_test_put(F.dir, "c.json", cfgs[i][0]);
    snprintf(cmd, sizeof cmd, "env -u BRAID_SERVER -u BRAID_TOKEN BRAID_CONFIG=c.json '%s' ls",
             farm_bin());
    CHECK_EQ_INT(run_split(cmd, &out, &err), 2);
    CHECK_CONTAINS(err, cfgs[i][1]);
    free(out);
    free(err);
  }
  snprintf(cmd, sizeof cmd, "env -u BRAID_TOKEN BRAID_SERVER='%s' BRAID_CONFIG=nope.json '%s' ls",
           F.url, farm_bin());
  CHECK_EQ_INT(run_split(cmd, &out, &err), 2);
  CHECK_CONTAINS(err, "braid: config file nope.json (BRAID_CONFIG): No such file or directory");
  free(out);
  free(err);
  /* a relative token_file is beside the config file, wherever braid runs */
  char cfgdir[1024];
  snprintf(cfgdir, sizeof cfgdir, "%s/cfg", F.dir);
  CHECK(mkdir(cfgdir, 0755) == 0);
  br_test_put(cfgdir, "user.token", F.user);
  snprintf(cmd, sizeof cmd, "{\"server\": \"%s\", \"token_file\": \"user.token\"}", F.url);
  br_test_put(cfgdir, "config.json", cmd);
  snprintf(cmd, sizeof cmd,
           "env -u BRAID_SERVER -u BRAID_TOKEN BRAID_CONFIG=cfg/config.json '%s' ls --json",
           farm_bin());
  int st = run_split(cmd, &out, &err);
  if (st != 0) br_test_fail(__FILE__, __LINE__, "ls with cfg/config.json: exit %d: %s", st, err);
  free(out);
  free(err);
  /* a malformed address is a usage error naming its option, before anything
   * is made (--listen nope made the store, then exit 1; an agent given a
   * URL with a bad port tried it for ever) */
  const char *addrs[][2] = {
      {"server --listen nope --store new.db", "braid: --listen: 'nope' is not HOST:PORT: no :PORT"},
      {"server --listen 127.0.0.1:99999 --store new.db",
       "braid: --listen: '127.0.0.1:99999' is not HOST:PORT: the port is not a number from 0 "
       "to 65535"},
      {"server --executor slurm --slurm-listen 0.0.0.0 --store new.db",
       "braid: --slurm-listen: '0.0.0.0' is not HOST:PORT"},
      {"agent --server http://127.0.0.1:abc --work-dir agent-x",
       "braid: --server: 'http://127.0.0.1:abc' is not a server URL: the port is not a number "
       "from 1 to 65535 (http://HOST:PORT, https://HOST:PORT)"},
      {"agent --server http://:7870 --work-dir agent-x",
       "braid: --server: 'http://:7870' is not a server URL: no host"},
  };
  for (size_t i = 0; i < sizeof addrs / sizeof *addrs; i++) {
    snprintf(cmd, sizeof cmd, "BRAID_TOKEN='%s' timeout 10 '%s' %s", F.agent, farm_bin(),
             addrs[i][0]);
    st = run_split(cmd, &out, &err);
    if (st != 2 || !strstr(err, addrs[i][1]))
      br_test_fail(__FILE__, __LINE__, "braid %s: exit %d: %s", addrs[i][0], st, err);
    free(out);
    free(err);
  }
  snprintf(path, sizeof path, "%s/new.tokens", F.dir);
  CHECK(access(path, F_OK) != 0);
  /* an agent's offer: what it is given, never changed without a word (a
   * --gpus past 64 was cut to 64; more than nvidia-smi lists is the user's
   * word), and said when it starts */
  const char *agents[][2] = {
      {"agent --gpus 99", "braid: --gpus: 99 is more than an agent offers (at most 64)"},
      {"agent --id 'r 07'", "braid: --id: 'r 07' is not an id (letters, digits, - _ . : only)"},
      {"agent --idle-exit 5", /* ignored without --once */
       "braid: --idle-exit is for --once agents: a plain agent waits for work for ever"},
  };
  for (size_t i = 0; i < sizeof agents / sizeof *agents; i++) {
    snprintf(cmd, sizeof cmd, "BRAID_SERVER='%s' BRAID_TOKEN='%s' timeout 10 '%s' %s", F.url,
             F.agent, farm_bin(), agents[i][0]);
    st = run_split(cmd, &out, &err);
    if (st != 2 || !strstr(err, agents[i][1]))
      br_test_fail(__FILE__, __LINE__, "braid %s: exit %d: %s", agents[i][0], st, err);
    free(out);
    free(err);
  }
  farm_agent(&F, "agB", "--slots 2 --cores 3 --memory 1000 --gpus 9 --tag gpu --tag nuke");
  json_t *w = NULL;
  for (int i = 0; i < 200 && !w; i++) {
    json_t *all = NULL;
    CHECK_EQ_INT(farm_call(&F, F.user, "GET", "/api/v1/workers", NULL, &all), 200);
    size_t k;
    json_t *one;
    json_array_foreach(json_object_get(all, "workers"), k, one) if (strcmp(
        json_string_value(json_object_get(one, "id")), "agB") == 0) w = json_incref(one);
    json_decref(all);
    if (!w) usleep(50000);
  }
  CHECK(w != NULL);
  CHECK_EQ_INT(json_integer_value(json_object_get(w, "gpus")), 9);
  json_decref(w);
  snprintf(path, sizeof path, "%s/agent-agB.log", F.dir);
  out = br_test_slurp(path);
  CHECK_CONTAINSF(out,
                  "braid: agent agB working for %s: 2 slots, 3 cores, 1000 MB of memory, 9 GPUs, "
                  "tags gpu,nuke\n",
                  F.url);
  free(out);
  snprintf(path, sizeof path, "%s/agent-agA.log", F.dir);
  out = br_test_slurp(path);
  CHECK_CONTAINSF(out, "braid: agent agA working for %s: 1 slots, ", F.url);
  CHECK_CONTAINS(out, " GPUs, tags none\n");
  free(out);
  snprintf(cmd, sizeof cmd, "BRAID_SERVER=http://127.0.0.1:x '%s' ls", farm_bin());
  CHECK_EQ_INT(run_split(cmd, &out, &err), 2);
  CHECK_CONTAINS(err, "braid: BRAID_SERVER: 'http://127.0.0.1:x' is not a server URL");
  free(out);
  free(err);
  farm_stop(&F);
}

/* braid log -f goes on through a server restart, as the agents do. */
TEST(farm_log_follow_survives_a_server_restart) {
  farm_start(&F, "farm-cli-follow", "--poll-wait 1 --lost-after 10");
  farm_agent(&F, "fa", "--slots 1");
  int64_t t = farm_submit_graph(&F, farm_jobs_graph("lines", 1,
                                                    "{\"shell\":\"for i in $(seq 12); do echo line "
                                                    "$i; sleep 0.5; done\"}"),
                                NULL, 0, NULL);
  t += 1; /* the job is the start task's child */
  char cmd[4096];
  snprintf(cmd, sizeof cmd, "exec env BRAID_SERVER='%s' BRAID_TOKEN='%s' '%s' log -f %lld", F.url,
           F.user, farm_bin(), (long long)t);
  pid_t follower = farm_spawn(F.dir, "follow.log", cmd);
  char path[1024];
  snprintf(path, sizeof path, "%s/follow.log", F.dir);
  for (int i = 0; i < 300; i++) { /* it follows */
    char *text = br_test_slurp(path);
    bool started = strstr(text, "line 2\n") != NULL;
    free(text);
    if (started) break;
    usleep(50000);
  }
  const char *port = strrchr(F.url, ':') + 1;
  kill(F.server, SIGKILL);
  farm_wait(F.server);
  usleep(1500000);
  snprintf(cmd, sizeof cmd,
           "exec '%s' server --listen 127.0.0.1:%s --store farm.braid.db --poll-wait 1 "
           "--lost-after 10",
           farm_bin(), port);
  F.server = farm_spawn(F.dir, "server.log", cmd);
  int st = -1;
  for (int i = 0; i < 600; i++) {
    int ws;
    if (waitpid(follower, &ws, WNOHANG) == follower) {
      st = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
      break;
    }
    usleep(50000);
  }
  if (st < 0) {
    kill(follower, SIGKILL);
    farm_wait(follower);
  }
  char *text = br_test_slurp(path);
  CHECK_EQ_INT(st, 0);
  CHECK_CONTAINS(text, "braid: lost the server at ");
  CHECK_CONTAINS(text, "braid: the server is back: following again\n");
  for (int i = 1; i <= 12; i++) {
    char want[32];
    snprintf(want, sizeof want, "line %d\n", i);
    CHECK_CONTAINS(text, want);
    CHECK(strstr(strstr(text, want) + 1, want) == NULL); /* once */
  }
  free(text);
  farm_stop(&F);
}

/* A job whose output holds a NUL byte and bytes that are not UTF-8: its
 * log reaches the server (those bytes as '?', in place), it finishes, and
 * so do the jobs after it on that agent. Before, the server refused the
 * report with the NUL for good and the agent's results stopped there. */
TEST(farm_job_output_with_a_nul_byte) {
  farm_start(&F, "farm-cli-nul", "--poll-wait 1");
  farm_agent(&F, "n1", "--slots 1");
  const char *job = "{\"shell\":\"printf 'a\\\\000b\\\\377c\\\\n'; echo job {index}\"}";
  int64_t t = farm_submit_graph(&F, farm_jobs_graph("nul", 3, job), NULL, 0, NULL);
  CHECK(farm_settle(&F, 30));
  int64_t c[BR_TASK_NSTATES];
  farm_counts(&F, c);
  CHECK_EQ_INT(c[BR_TASK_DONE], 4);
  char cmd[4096];
  snprintf(cmd, sizeof cmd, "env BRAID_SERVER='%s' BRAID_TOKEN='%s' '%s' log %lld", F.url, F.user,
           farm_bin(), (long long)(t + 1));
  char *text = farm_capture(cmd);
  CHECK_CONTAINS(text, "a?b?c\n");
  CHECK_CONTAINS(text, "job ");
  free(text);
  farm_stop(&F);
}

/* braid log --invocation ID prints that invocation only; an id the task
 * does not have is an error that names the ones it has. */
TEST(farm_log_of_one_invocation) {
  farm_start(&F, "farm-cli-loginv", "--poll-wait 1");
  farm_agent(&F, "li", "--slots 1");
  const char *job = "{\"shell\":\"echo attempt $BRAID_INVOCATION_ID; exit 3\",\"retries\":1}";
  int64_t t = farm_submit_graph(&F, farm_jobs_graph("twice", 1, job), NULL, 0, NULL) + 1;
  CHECK(farm_settle(&F, 30));
  char ts[32], *out;
  snprintf(ts, sizeof ts, "%lld", (long long)t);
  json_t *invs = braid_json("log %s --json", ts);
  CHECK_EQ_INT(json_array_size(invs), 2);
  long long i1 = json_integer_value(json_object_get(json_array_get(invs, 0), "id"));
  long long i2 = json_integer_value(json_object_get(json_array_get(invs, 1), "id"));
  json_decref(invs);
  CHECK_EQ_INT(braid(&out, F.user, "log %s --invocation %lld", ts, i1), 0);
  char want[64];
  snprintf(want, sizeof want, "attempt %lld\n", i1);
  CHECK_CONTAINS(out, want);
  snprintf(want, sizeof want, "attempt %lld\n", i2);
  CHECK(strstr(out, want) == NULL);
  free(out);
  CHECK_EQ_INT(braid(&out, F.user, "log %s --invocation 999999", ts), 1);
  snprintf(want, sizeof want, "no invocation 999999 (its invocations: %lld, %lld)", i1, i2);
  CHECK_CONTAINS(out, want);
  free(out);
  farm_stop(&F);
}

/* braid ls --json prints a page as a list, and says on stderr that there
 * is more, as the table does. */
TEST(farm_ls_json_says_when_there_is_more) {
  farm_start(&F, "farm-cli-lsmore", "--poll-wait 1");
  farm_submit_graph(&F, farm_jobs_graph("one", 1, "{\"shell\":\"true\"}"), NULL, 0, NULL);
  farm_submit_graph(&F, farm_jobs_graph("two", 1, "{\"shell\":\"true\"}"), NULL, 0, NULL);
  char *out;
  CHECK_EQ_INT(braid(&out, F.user, "ls --json --limit 1"), 0);
  CHECK(out[0] == '[');
  CHECK_CONTAINS(out, "]\nbraid: more: braid ls --after ");
  free(out);
  CHECK_EQ_INT(braid(&out, F.user, "ls --json --all"), 0);
  CHECK(strstr(out, "braid: more") == NULL);
  free(out);
  farm_stop(&F);
}

/* The limit `braid server --limit` gives is for that run; one set through
 * the API is kept across restarts. What a start finds does not depend on
 * whether something else (a drain) saved the settings meanwhile. */
static void restart_with(const char *args) {
  kill(F.server, SIGTERM);
  CHECK_EQ_INT(farm_wait(F.server), 0);
  snprintf(F.server_args, sizeof F.server_args, "%s", args);
  farm_server_start(&F);
}

static json_t *houdini_max(void) {
  json_t *out = NULL;
  CHECK_EQ_INT(farm_call(&F, F.admin, "GET", "/api/v1/limits", NULL, &out), 200);
  json_t *h = json_object_get(json_object_get(out, "limits"), "houdini");
  json_t *m = json_incref(json_object_get(h, "max"));
  json_decref(out);
  return m;
}

TEST(farm_limit_flag_is_for_its_run) {
  farm_start(&F, "farm-cli-limits", "--limit houdini=2");
  json_t *m = houdini_max();
  CHECK_EQ_INT(json_integer_value(m), 2);
  json_decref(m);
  char *out;
  CHECK_EQ_INT(braid(&out, F.admin, "workers drain somebox"), 0); /* saves the settings */
  free(out);
  restart_with("");
  m = houdini_max();
  CHECK(m == NULL || json_is_null(m));
  json_decref(m);
  json_t *body = json_pack("{si}", "max", 4);
  CHECK_EQ_INT(farm_call(&F, F.admin, "PUT", "/api/v1/limits/houdini", body, NULL), 200);
  json_decref(body);
  restart_with("--limit houdini=7");
  m = houdini_max();
  CHECK_EQ_INT(json_integer_value(m), 7);
  json_decref(m);
  CHECK_EQ_INT(braid(&out, F.admin, "workers undrain somebox"), 0);
  free(out);
  restart_with("");
  m = houdini_max();
  CHECK_EQ_INT(json_integer_value(m), 4);
  json_decref(m);
  farm_stop(&F);
}

/* A job that prints more than the agent holds (80 MB) while the server
 * does not answer (stopped): what passes what the agent holds in memory
 * goes later from its log file, and the job's result after it, so the
 * server's log is the whole output, byte for byte, and the agent's copy
 * is removed once it is. */
TEST(farm_job_output_more_than_the_agent_holds) {
  farm_start(&F, "farm-cli-flood", "--poll-wait 1");
  farm_agent(&F, "fl", "--slots 1");
  const char *job = "{\"shell\":\"echo go; sleep 3; seq 1 10000000; echo THE-END\"}";
  int64_t t = farm_submit_graph(&F, farm_jobs_graph("flood", 1, job), NULL, 0, NULL) + 1;
  double end = farm_now() + 30;
  while (farm_invocations(&F).running < 1 && farm_now() < end) usleep(50000);
  kill(F.server, SIGSTOP);
  sleep(6); /* the job prints it all meanwhile */
  kill(F.server, SIGCONT);
  CHECK(farm_settle(&F, 120));
  char cmd[4096], path[1024];
  snprintf(path, sizeof path, "%s/flood.log", F.dir);
  snprintf(cmd, sizeof cmd, "env BRAID_SERVER='%s' BRAID_TOKEN='%s' '%s' log %lld > '%s'", F.url,
           F.user, farm_bin(), (long long)t, path);
  CHECK_EQ_INT(system(cmd), 0);
  size_t len = 0;
  char *text = br__read_file(path, &len), *log = text ? strchr(text, '\n') : NULL;
  CHECK(log != NULL); /* after the "== task ..." line */
  len -= (size_t)(++log - text);
  const size_t whole = 3 + 78888897 + 8; /* go, seq 1 10000000, THE-END */
  CHECK_EQ_INT(len, whole);
  CHECK(memcmp(log, "go\n1\n2\n", 7) == 0);
  CHECK(memcmp(log + len - 17, "10000000\nTHE-END\n", 17) == 0);
  /* every line in its place: line k (after "go") is k */
  for (size_t at = 3, k = 1; at < len - 8; k++) {
    char want[16];
    int w = snprintf(want, sizeof want, "%zu\n", k);
    if (memcmp(log + at, want, (size_t)w) != 0) {
      br_test_fail(__FILE__, __LINE__, "line %zu of the log is not %zu", k + 1,
                   k);
      break;
    }
    at += (size_t)w;
  }
  free(text);
  /* its result came after its output: the agent's copy was not kept */
  snprintf(cmd, sizeof cmd,
           "test -d '%s/agent-fl/logs' && ! find '%s/agent-fl/logs' -name "
           "'*.log' | grep -q .",
           F.dir, F.dir);
  farm_stop(&F);
  CHECK_EQ_INT(system(cmd), 0);
}

/* `braid server ARGS` in dir: its exit status and output when it stops by
 * itself within 20 s; when it serves instead (its URL file is written), it
 * is stopped (SIGTERM) and the status is 0 if it then stops cleanly. */
static int server_in(const char *dir, const char *args, char **out) {
  char cmd[4096], path[1024];
  snprintf(path, sizeof path, "%s/url", dir);
  unlink(path);
  snprintf(path, sizeof path, "%s/server.log", dir);
  unlink(path);
  snprintf(cmd, sizeof cmd, "exec '%s' server --listen 127.0.0.1:0 --url-file url %s", farm_bin(),
           args);
  pid_t pid = farm_spawn(dir, "server.log", cmd);
  int st = -1;
  for (int i = 0; i < 2000 && st < 0; i++) {
    int ws;
    char url[1024];
    snprintf(url, sizeof url, "%s/url", dir);
    if (waitpid(pid, &ws, WNOHANG) == pid) st = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128;
    else if (access(url, R_OK) == 0) {
      kill(pid, SIGTERM);
      st = farm_wait(pid);
    } else
      usleep(10000);
  }
  if (st < 0) {
    kill(pid, SIGKILL);
    farm_wait(pid);
  }
  *out = br_test_slurp(path);
  return st;
}

/* A mistyped --store, or the default store looked for from another folder,
 * made a new empty farm without a word: a store that is not there is
 * refused unless --init asks for a new farm, and nothing is made for it. */
TEST(farm_server_makes_a_new_store_only_with_init) {
  char *dir = br_test_tmpdir("farm-cli-init"), *out, path[1024];
  CHECK_EQ_INT(server_in(dir, "", &out), 1); /* the default store, not here */
  CHECK_CONTAINSF(out,
                  "braid: no farm store at farm.braid.db (in %s): to start a new farm there, "
                  "give --init (or --store the path of your farm)\n",
                  dir);
  free(out);
  CHECK_EQ_INT(server_in(dir, "--store shows/typo.db", &out), 1);
  CHECK_CONTAINS(out, "braid: no farm store at shows/typo.db (in ");
  free(out);
  br_test_put(dir, "empty.db", ""); /* a file that holds nothing is no farm either */
  CHECK_EQ_INT(server_in(dir, "--store empty.db?sync=full", &out), 1);
  CHECK_CONTAINS(out, "braid: no farm store at empty.db (in ");
  free(out);
  const char *none[] = {"farm.braid.db", "farm.braid.tokens", "farm.braid.admin-token", "shows",
                        "empty.tokens"};
  for (size_t i = 0; i < sizeof none / sizeof *none; i++) {
    snprintf(path, sizeof path, "%s/%s", dir, none[i]);
    if (access(path, F_OK) == 0) br_test_fail(__FILE__, __LINE__, "%s was made", none[i]);
  }
  /* --init makes it; then it is there, with or without --init */
  CHECK_EQ_INT(server_in(dir, "--store shows/farm.db --init", &out), 0);
  CHECK_CONTAINS(out, "braid: first start: an admin token is in shows/farm.admin-token");
  free(out);
  snprintf(path, sizeof path, "%s/shows/farm.admin-token", dir);
  char *admin = br_test_slurp(path);
  CHECK(strlen(admin) > 10);
  CHECK_EQ_INT(server_in(dir, "--store shows/farm.db", &out), 0);
  CHECK_CONTAINS(out, "braid: serving shows/farm.db on ");
  free(out);
  CHECK_EQ_INT(server_in(dir, "--store shows/farm.db --init", &out), 0);
  CHECK(strstr(out, "first start") == NULL);
  free(out);
  char *again = br_test_slurp(path);
  CHECK_EQ_STR(again, admin); /* the same farm */
  free(again);
  free(admin);
  /* PostgreSQL: a database without braid's tables is no farm; none are made */
  pg_fixture pg;
  pg_start(&pg, "farm-cli-init-pg");
  char args[1200];
  snprintf(args, sizeof args, "--store '%s'", pg.uri);
  CHECK_EQ_INT(server_in(dir, args, &out), 1);
  CHECK_CONTAINS(out, "braid: no farm store: postgres store braid@");
  CHECK_CONTAINS(out, "holds no braid store (no table braid_meta in schema 'public')");
  CHECK_CONTAINS(out, "; to start a new farm there, give --init (or --store the URI of your farm)");
  CHECK(strstr(out, "postgresql://") == NULL); /* the store says where, not the URI */
  free(out);
  CHECK_EQ_INT(server_in(dir, args, &out), 1); /* still none: the refusal made nothing */
  free(out);
  snprintf(args, sizeof args, "--store '%s' --init", pg.uri);
  CHECK_EQ_INT(server_in(dir, args, &out), 0);
  free(out);
  snprintf(args, sizeof args, "--store '%s'", pg.uri);
  CHECK_EQ_INT(server_in(dir, args, &out), 0);
  free(out);
  pg_stop(&pg);
  free(dir);
}

/* A token file made before the first start (agent tokens for the render
 * machines) held tokens, so no admin token was made: a farm nobody could
 * manage. One is made whenever the file holds none, and only then. */
TEST(farm_server_makes_an_admin_token_when_the_file_has_none) {
  char *dir = br_test_tmpdir("farm-cli-admin"), *out, cmd[2048], path[1024];
  snprintf(cmd, sizeof cmd, "cd '%s' && '%s' token create --role agent --store farm.braid.db",
           dir, farm_bin());
  char *agent = farm_capture(cmd);
  CHECK(strlen(agent) > 10);
  CHECK_EQ_INT(server_in(dir, "--init", &out), 0);
  CHECK_CONTAINS(out, "braid: the token file farm.braid.tokens holds no admin token: an admin "
                      "token is in farm.braid.admin-token (mode 0600)");
  free(out);
  snprintf(path, sizeof path, "%s/farm.braid.admin-token", dir);
  char *admin = br_test_slurp(path);
  size_t n = strlen(admin);
  while (n && admin[n - 1] == '\n') admin[--n] = 0;
  snprintf(path, sizeof path, "%s/farm.braid.tokens", dir);
  br_auth *auth;
  br_error err;
  CHECK(br_auth_open(path, &auth, &err) == BR_OK);
  CHECK_EQ_INT(br_auth_check(auth, admin), BR_ROLE_ADMIN);
  CHECK_EQ_INT(br_auth_check(auth, agent), BR_ROLE_AGENT); /* kept */
  CHECK_EQ_INT(br_auth_count(auth), 2);
  br_auth_close(auth);
  CHECK_EQ_INT(server_in(dir, "", &out), 0); /* there is one now: none made */
  CHECK(strstr(out, "admin token") == NULL);
  free(out);
  free(admin);
  free(agent);
  free(dir);
}

/* The whole answer to a raw request (caller frees). */
static char *raw_answer(const char *req) {
  int port = atoi(strrchr(F.url, ':') + 1);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
  char *buf = calloc(1, 1 << 16);
  size_t len = 0;
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
      send(fd, req, strlen(req), MSG_NOSIGNAL) == (ssize_t)strlen(req)) {
    ssize_t n;
    while (len < (1 << 16) - 1 && (n = recv(fd, buf + len, (1 << 16) - 1 - len, 0)) > 0)
      len += (size_t)n;
  }
  close(fd);
  return buf;
}

/* A header's value in an answer ("" when it has none), in buf. */
static const char *header_of(const char *answer, const char *name, char *buf, size_t size) {
  char key[128];
  snprintf(key, sizeof key, "\r\n%s: ", name);
  const char *at = strcasestr(answer, key);
  snprintf(buf, size, "%.*s", at ? (int)strcspn(at + strlen(key), "\r") : 0,
           at ? at + strlen(key) : "");
  return buf;
}

/* HEAD on the web UI's files answered 401 where GET served them: it is
 * GET's answer without the body wherever GET needs no token. */
TEST(farm_web_ui_answers_head_as_get) {
  farm_start(&F, "farm-cli-head", "--poll-wait 1");
  const char *files[] = {"/", "/ui/app.js", "/ui/style.css"};
  for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
    char req[512], a[512], b[512];
    snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
             files[i]);
    char *get = raw_answer(req);
    snprintf(req, sizeof req, "HEAD %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
             files[i]);
    char *head = raw_answer(req);
    if (strncmp(head, "HTTP/1.1 200 ", 13) != 0)
      br_test_fail(__FILE__, __LINE__, "HEAD %s: %.40s", files[i], head);
    CHECK(strncmp(get, "HTTP/1.1 200 ", 13) == 0);
    const char *names[] = {"Content-Type", "Content-Length", "Content-Security-Policy",
                           "Cache-Control"};
    for (size_t k = 0; k < sizeof names / sizeof *names; k++) {
      CHECK(*header_of(get, names[k], a, sizeof a));
      CHECK_EQ_STR(header_of(head, names[k], b, sizeof b), a);
    }
    const char *end = strstr(head, "\r\n\r\n");
    CHECK(end != NULL && end[4] == '\0'); /* no body */
    free(get);
    free(head);
  }
  /* the API still needs a token; HEAD is not GET there */
  char *ans = raw_answer("HEAD /api/v1/tasks HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  CHECK(strncmp(ans, "HTTP/1.1 401 ", 13) == 0);
  free(ans);
  char req[512];
  snprintf(req, sizeof req,
           "HEAD /api/v1/tasks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
           "Connection: close\r\n\r\n",
           F.user);
  ans = raw_answer(req);
  CHECK(strncmp(ans, "HTTP/1.1 405 ", 13) == 0);
  free(ans);
  farm_stop(&F);
}
