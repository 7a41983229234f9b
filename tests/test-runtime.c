/* The job runtime channel: `braid ctl` from real shell jobs run by the local
 * executor, the message handler on its own, and bad input. */
#include "exec-fixture.h"

#include <sys/socket.h>
#include <sys/un.h>

static fx F;

static void need_braid(void) {
  const char *b = getenv("BRAID_BIN");
  if (!b || !*b) br_test_fail(__FILE__, __LINE__, "BRAID_BIN is not set");
}

TEST(runtime_ctl_set) {
  need_braid();
  fx_init(&F, "rt-set", 2, 1);
  fx_inv x;
  /* `braid` is found through PATH: the executor appends braid's folder. */
  fx_sh(&F, &x, 1,
        "braid ctl set a=1 b=hello c:=[1,2] 'd={\"x\":1}' e=007 f=1.5 g=true 'h=\"42\"' && "
        "\"$BRAID_EXE\" ctl set a=2");
  fx_submit(&F, &x.inv);
  fx_run(&F);
  fx_rec *r = fx_result(&F, 1);
  if (r->status != BR_INV_OK) br_test_fail(__FILE__, __LINE__, "job failed: %s", r->log_tail);
  json_t *want = json_pack("{s:i, s:s, s:[i,i], s:{s:i}, s:s, s:f, s:b, s:s}", "a", 2, "b",
                           "hello", "c", 1, 2, "d", "x", 1, "e", "007", "f", 1.5, "g", 1, "h",
                           "42");
  char *got = json_dumps(r->set_attrs, JSON_SORT_KEYS);
  if (!json_equal(r->set_attrs, want)) br_test_fail(__FILE__, __LINE__, "set_attrs %s", got);
  free(got);
  json_decref(want);
  fx_inv_free(&x);
  fx_fini(&F);
}

TEST(runtime_ctl_spawn_and_progress) {
  need_braid();
  fx_init(&F, "rt-spawn", 2, 1);
  fx_inv x;
  fx_sh(&F, &x, 5,
        "braid ctl spawn --name kid frame=3 && braid ctl spawn && "
        "braid ctl progress 0.42 && braid ctl progress 50% && "
        "test -e go || sleep 0.3; echo finished");
  fx_submit(&F, &x.inv);
  fx_run(&F);
  fx_rec *r = fx_result(&F, 5);
  if (r->status != BR_INV_OK) br_test_fail(__FILE__, __LINE__, "job failed: %s", r->log_tail);
  CHECK_EQ_INT(json_array_size(F.spawns), 2);
  CHECK_EQ_INT(r->spawns_before, 2); /* reported while the job ran, before on_done */
  json_t *s0 = json_array_get(F.spawns, 0), *s1 = json_array_get(F.spawns, 1);
  CHECK_EQ_INT(json_integer_value(json_object_get(s0, "inv")), 5);
  CHECK_EQ_INT(json_integer_value(json_object_get(s0, "task")), 1005);
  CHECK_EQ_STR(json_string_value(json_object_get(s0, "name")), "kid");
  CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(s0, "attrs"), "frame")), 3);
  CHECK(json_is_null(json_object_get(s1, "name")));
  CHECK_EQ_INT(json_object_size(json_object_get(s1, "attrs")), 0);
  CHECK_EQ_INT(F.n_prog, 2);
  CHECK(F.prog[0] == 0.42);
  CHECK(F.prog[1] == 0.5);
  CHECK_EQ_INT(json_object_size(r->set_attrs), 0);
  fx_inv_free(&x);
  fx_fini(&F);
}

TEST(runtime_ctl_spawn_100_loses_none) {
  need_braid();
  fx_init(&F, "rt-spawn100", 2, 1);
  fx_inv a, b;
  /* one after the other, then 100 at once in the background */
  fx_sh(&F, &a, 1, "for i in $(seq 1 100); do braid ctl spawn i=$i || exit 1; done");
  fx_sh(&F, &b, 2,
        "for i in $(seq 101 200); do braid ctl spawn i=$i & done; wait");
  fx_submit(&F, &a.inv);
  fx_submit(&F, &b.inv);
  fx_run(&F);
  CHECK_EQ_INT(fx_result(&F, 1)->status, BR_INV_OK);
  CHECK_EQ_INT(fx_result(&F, 2)->status, BR_INV_OK);
  CHECK_EQ_INT(json_array_size(F.spawns), 200);
  char seen[201] = {0};
  size_t k;
  json_t *s;
  json_array_foreach(F.spawns, k, s) {
    json_int_t i = json_integer_value(json_object_get(json_object_get(s, "attrs"), "i"));
    json_int_t inv = json_integer_value(json_object_get(s, "inv"));
    CHECK(i >= 1 && i <= 200);
    CHECK_EQ_INT(inv, i <= 100 ? 1 : 2);
    CHECK(!seen[i]);
    seen[i] = 1;
  }
  /* the sequential ones arrive in order */
  int expect = 1;
  json_array_foreach(F.spawns, k, s) {
    if (json_integer_value(json_object_get(s, "inv")) != 1) continue;
    CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(s, "attrs"), "i")), expect);
    expect++;
  }
  fx_inv_free(&a);
  fx_inv_free(&b);
  fx_fini(&F);
}

TEST(runtime_ctl_bad_input) {
  need_braid();
  fx_init(&F, "rt-bad", 2, 1);
  fx_inv x;
  fx_sh(&F, &x, 1,
        "braid ctl frobnicate 2> e1; echo $? > s1; "
        "BRAID_CTL_TOKEN=0123456789abcdef0123456789abcdef braid ctl set a=1 2> e2; echo $? > s2; "
        "braid ctl send '{\"op\":\"zap\"}' 2> e3; echo $? > s3; "
        "env -u BRAID_CTL braid ctl set a=1 2> e4; echo $? > s4; "
        "braid ctl set a:=[1, 2> e5; echo $? > s5; "
        "braid ctl progress 1.5 2> e6; echo $? > s6; "
        "braid ctl set noequals 2> e7; echo $? > s7; "
        "BRAID_CTL=/nonexistent/ctl.sock braid ctl set a=1 2> e8; echo $? > s8; "
        "braid ctl send '{\"op\":\"progress\",\"value\":\"x\"}' 2> e9; echo $? > s9; "
        "braid ctl set ok=1");
  fx_submit(&F, &x.inv);
  fx_run(&F);
  fx_rec *r = fx_result(&F, 1);
  CHECK_EQ_INT(r->status, BR_INV_OK);
  struct {
    const char *status, *err, *want;
  } cases[] = {
      {"2", "e1", "unknown operation 'frobnicate'"},
      {"1", "e2", "bad token"},
      {"1", "e3", "unknown op 'zap'"},
      {"2", "e4", "not inside a braid job (BRAID_CTL is not set)"},
      {"2", "e5", "the value is not JSON"},
      {"2", "e6", "not between 0 and 1"},
      {"2", "e7", "not an assignment KEY=VALUE"},
      {"1", "e8", "cannot reach braid at '/nonexistent/ctl.sock'"},
      {"1", "e9", "\"value\" must be a number"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char name[8];
    snprintf(name, sizeof name, "s%zu", i + 1);
    char *p = fx_path(&F, name);
    char *st = fx_read(p);
    free(p);
    p = fx_path(&F, cases[i].err);
    char *msg = fx_read(p);
    free(p);
    st[strcspn(st, "\n")] = 0;
    if (strcmp(st, cases[i].status) != 0)
      br_test_fail(__FILE__, __LINE__, "case %zu: exit %s, expected %s (%s)", i + 1, st,
                   cases[i].status, msg);
    CHECK_CONTAINS(msg, cases[i].want);
    CHECK_CONTAINS(msg, "braid: ctl");
    free(st);
    free(msg);
  }
  /* only the good request counted */
  json_t *want = json_pack("{s:i}", "ok", 1);
  CHECK(json_equal(r->set_attrs, want));
  json_decref(want);
  fx_inv_free(&x);
  fx_fini(&F);
}

/* ---- the socket, spoken to directly ---- */

static char *raw_exchange(const char *sock, const char *data) {
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un sun = {.sun_family = AF_UNIX};
  snprintf(sun.sun_path, sizeof sun.sun_path, "%s", sock);
  CHECK_EQ_INT(connect(fd, (struct sockaddr *)&sun, sizeof sun), 0);
  size_t off = 0, len = strlen(data);
  while (off < len) { /* the server may stop reading a too long request */
    ssize_t n = send(fd, data + off, len - off, MSG_NOSIGNAL);
    if (n <= 0) break;
    off += (size_t)n;
  }
  shutdown(fd, SHUT_WR);
  char *buf = calloc(1, 65536);
  size_t n = 0;
  ssize_t got;
  while ((got = read(fd, buf + n, 65535 - n)) > 0) n += (size_t)got;
  close(fd);
  return buf;
}

typedef struct {
  uv_loop_t *loop;
  const char *sock;
  const char *data;
  char *answer;
} raw_arg;

static void raw_thread(void *p) {
  raw_arg *a = p;
  __atomic_store_n(&a->answer, raw_exchange(a->sock, a->data), __ATOMIC_RELEASE);
}

static int n_spawned;
static void count_spawn(void *ud, int64_t inv, int64_t task, const char *name, json_t *attrs) {
  n_spawned++;
  json_decref(attrs);
}

static void noop_timer(uv_timer_t *t) { (void)t; }

/* Runs the loop while a thread talks to the socket. (The listening socket
 * does not keep a loop alive by itself: a timer does here, running jobs do
 * in the executor.) */
static char *talk(uv_loop_t *loop, br_runtime *rt, const char *data) {
  raw_arg a = {loop, br_runtime_socket_path(rt), data, NULL};
  uv_timer_t keep;
  uv_timer_init(loop, &keep);
  uv_timer_start(&keep, noop_timer, 1, 1);
  uv_thread_t t;
  CHECK_EQ_INT(uv_thread_create(&t, raw_thread, &a), 0);
  while (!__atomic_load_n(&a.answer, __ATOMIC_ACQUIRE)) uv_run(loop, UV_RUN_ONCE);
  uv_thread_join(&t);
  uv_close((uv_handle_t *)&keep, NULL);
  uv_run(loop, UV_RUN_NOWAIT);
  return a.answer;
}

TEST(runtime_socket_protocol) {
  alarm(60);
  uv_loop_t loop;
  uv_loop_init(&loop);
  char *dir = br_test_tmpdir("rt-socket");
  br_exec_events ev = {.on_spawn = count_spawn};
  br_runtime *rt = NULL;
  br_error err;
  CHECK_EQ_INT(br_runtime_create(&ev, &rt, &err), BR_OK);
  CHECK_EQ_INT(br_runtime_listen(rt, &loop, dir, &err), BR_OK);
  CHECK_CONTAINS(br_runtime_socket_path(rt), dir);
  char tok[BR_RUNTIME_TOKEN_LEN + 1];
  CHECK_EQ_INT(br_runtime_register(rt, 9, 90, tok, &err), BR_OK);
  CHECK_EQ_INT(strlen(tok), BR_RUNTIME_TOKEN_LEN);

  char *req = NULL;
  CHECK(asprintf(&req,
                 "{bad json\n"
                 "{\"op\":\"spawn\",\"token\":\"%s\",\"id\":1}\r\n"
                 "\n"
                 "[1,2]\n"
                 "{\"op\":\"spawn\",\"token\":\"%s\",\"id\":2,\"attrs\":{\"f\":2}}",
                 tok, tok) > 0);
  char *ans = talk(&loop, rt, req);
  /* one answer per request line, in order; the last line has no newline */
  char *l1 = ans, *l2 = strchr(l1, '\n') + 1, *l3 = strchr(l2, '\n') + 1,
       *l4 = strchr(l3, '\n') + 1;
  CHECK(strncmp(l1, "{\"ok\":false,\"error\":\"malformed JSON request", 42) == 0);
  CHECK(strncmp(l2, "{\"ok\":true,\"id\":1}\n", 19) == 0);
  CHECK_CONTAINS(l3, "a request must be a JSON object");
  CHECK(strncmp(l4, "{\"ok\":true,\"id\":2}\n", 19) == 0);
  CHECK_EQ_INT(n_spawned, 2);
  free(ans);
  free(req);

  /* a client that leaves before its answer does not hurt braid (no SIGPIPE) */
  for (int i = 0; i < 20; i++) {
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    snprintf(sun.sun_path, sizeof sun.sun_path, "%s", br_runtime_socket_path(rt));
    CHECK_EQ_INT(connect(fd, (struct sockaddr *)&sun, sizeof sun), 0);
    char line[200];
    int len = snprintf(line, sizeof line, "{\"op\":\"spawn\",\"token\":\"%s\"}\n", tok);
    CHECK_EQ_INT(send(fd, line, (size_t)len, MSG_NOSIGNAL), len);
    close(fd);
  }
  ans = talk(&loop, rt, "{\"op\":\"x\"}\n");
  CHECK_CONTAINS(ans, "no \\\"token\\\"");
  free(ans);

  /* a long request is refused */
  size_t big = 5 * 1024 * 1024;
  char *huge = malloc(big + 1);
  memset(huge, 'x', big);
  huge[big] = 0;
  ans = talk(&loop, rt, huge);
  CHECK_CONTAINS(ans, "request line longer than");
  free(ans);
  free(huge);

  json_t *attrs = br_runtime_unregister(rt, 9);
  CHECK_EQ_INT(json_object_size(attrs), 0);
  json_decref(attrs);
  CHECK(br_runtime_unregister(rt, 9) == NULL);
  CHECK(n_spawned >= 2);
  br_runtime_destroy(rt);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(uv_loop_close(&loop), 0);
  char *cmd = NULL;
  CHECK(asprintf(&cmd, "rm -rf '%s'", dir) > 0);
  CHECK_EQ_INT(system(cmd), 0);
  free(cmd);
  free(dir);
}

/* ---- the handler without a transport ---- */

static double last_progress = -1;
static void note_progress(void *ud, int64_t inv, int64_t task, double p) {
  last_progress = p;
  CHECK_EQ_INT(inv, 2);
  CHECK_EQ_INT(task, 20);
}

static const char *handle_error(br_runtime *rt, const char *json) {
  static char buf[512];
  json_t *req = json_loads(json, JSON_DECODE_ANY, NULL);
  CHECK(req != NULL);
  json_t *resp = br_runtime_handle(rt, req);
  json_decref(req);
  CHECK(resp != NULL);
  if (json_is_true(json_object_get(resp, "ok")))
    snprintf(buf, sizeof buf, "ok");
  else
    snprintf(buf, sizeof buf, "%s", json_string_value(json_object_get(resp, "error")));
  json_decref(resp);
  return buf;
}

TEST(runtime_handle_messages) {
  br_exec_events ev = {.on_progress = note_progress};
  br_runtime *rt = NULL;
  br_error err;
  CHECK_EQ_INT(br_runtime_create(&ev, &rt, &err), BR_OK);
  char t1[BR_RUNTIME_TOKEN_LEN + 1], t2[BR_RUNTIME_TOKEN_LEN + 1];
  CHECK_EQ_INT(br_runtime_register(rt, 1, 10, t1, &err), BR_OK);
  CHECK_EQ_INT(br_runtime_register(rt, 2, 20, t2, &err), BR_OK);
  CHECK(strcmp(t1, t2) != 0);
  char req[512];
  CHECK_CONTAINS(handle_error(rt, "{\"token\":\"x\"}"), "no \"op\"");
  CHECK_CONTAINS(handle_error(rt, "{\"op\":\"set\"}"), "no \"token\"");
  CHECK_CONTAINS(handle_error(rt, "{\"op\":\"set\",\"token\":\"nope\"}"), "bad token");
  CHECK_CONTAINS(handle_error(rt, "42"), "must be a JSON object");
  snprintf(req, sizeof req, "{\"op\":\"set\",\"token\":\"%s\",\"attrs\":[1]}", t1);
  CHECK_CONTAINS(handle_error(rt, req), "\"attrs\" must be an object");
  snprintf(req, sizeof req, "{\"op\":\"spawn\",\"token\":\"%s\",\"name\":3}", t1);
  CHECK_CONTAINS(handle_error(rt, req), "\"name\" must be a string");
  snprintf(req, sizeof req, "{\"op\":\"progress\",\"token\":\"%s\",\"value\":1.01}", t2);
  CHECK_CONTAINS(handle_error(rt, req), "not between 0 and 1");
  snprintf(req, sizeof req, "{\"op\":\"progress\",\"token\":\"%s\",\"value\":0.5}", t2);
  CHECK_EQ_STR(handle_error(rt, req), "ok");
  CHECK(last_progress == 0.5);
  snprintf(req, sizeof req, "{\"op\":\"spawn\",\"token\":\"%s\"}", t1);
  CHECK_EQ_STR(handle_error(rt, req), "ok"); /* no on_spawn: accepted and dropped */
  snprintf(req, sizeof req, "{\"op\":\"bake\",\"token\":\"%s\"}", t1);
  CHECK_CONTAINS(handle_error(rt, req), "unknown op 'bake'");
  /* a token acts for its own invocation only */
  snprintf(req, sizeof req, "{\"op\":\"set\",\"token\":\"%s\",\"attrs\":{\"a\":1}}", t1);
  CHECK_EQ_STR(handle_error(rt, req), "ok");
  snprintf(req, sizeof req, "{\"op\":\"set\",\"token\":\"%s\",\"attrs\":{\"b\":2}}", t1);
  CHECK_EQ_STR(handle_error(rt, req), "ok");
  json_t *a2 = br_runtime_unregister(rt, 2);
  json_t *a1 = br_runtime_unregister(rt, 1);
  CHECK_EQ_INT(json_object_size(a2), 0);
  CHECK_EQ_INT(json_object_size(a1), 2);
  json_decref(a1);
  json_decref(a2);
  /* after unregistering, the token is dead */
  CHECK_CONTAINS(handle_error(rt, req), "bad token");
  br_runtime_destroy(rt);
}

TEST(runtime_parse_assign) {
  struct {
    const char *arg, *key, *json;
  } ok[] = {
      {"a=1", "a", "1"},
      {"a=-2.5", "a", "-2.5"},
      {"a=hello", "a", "\"hello\""},
      {"a=007", "a", "\"007\""},
      {"a=", "a", "\"\""},
      {"a=true", "a", "true"},
      {"a=null", "a", "null"},
      {"a=[1,\"x\"]", "a", "[1,\"x\"]"},
      {"a={\"b\":1}", "a", "{\"b\":1}"},
      {"a=\"42\"", "a", "\"42\""},
      {"a=x=y", "a", "\"x=y\""},
      {"path=/shots/a b.exr", "path", "\"/shots/a b.exr\""},
      {"a:=[1]", "a", "[1]"},
      {"a:b=1", "a:b", "1"},
  };
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
    char *key = NULL;
    json_t *v = NULL;
    br_error err;
    br_error_clear(&err);
    if (br_runtime_parse_assign(ok[i].arg, &key, &v, &err) != BR_OK)
      br_test_fail(__FILE__, __LINE__, "%s: %s", ok[i].arg, err.msg);
    CHECK_EQ_STR(key, ok[i].key);
    char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    CHECK_EQ_STR(text, ok[i].json);
    free(text);
    free(key);
    json_decref(v);
  }
  const char *bad[] = {"a", "=1", ":=1", "a:=007", "a:=hello"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char *key = NULL;
    json_t *v = NULL;
    br_error err;
    CHECK_EQ_INT(br_runtime_parse_assign(bad[i], &key, &v, &err), BR_EINVAL);
  }
  /* jansson's flag names stay out of the message */
  char *key = NULL;
  json_t *v = NULL;
  br_error err;
  CHECK_EQ_INT(br_runtime_parse_assign("a:=\"x\\u0000\"", &key, &v, &err), BR_EINVAL);
  CHECK_CONTAINS(err.msg, "the value is not JSON: a string holds \\u0000 (a NUL character)");
  CHECK(!strstr(err.msg, "JSON_ALLOW_NUL"));
}

TEST(runtime_attr_env) {
  char *n = br_runtime_attr_env_name("shot.name-2");
  CHECK_EQ_STR(n, "BRAID_ATTR_SHOT_NAME_2");
  free(n);
  n = br_runtime_attr_env_name("Frame");
  CHECK_EQ_STR(n, "BRAID_ATTR_FRAME");
  free(n);
  struct {
    json_t *v;
    const char *want;
  } cases[] = {
      {json_string("a b"), "a b"}, {json_integer(-12), "-12"}, {json_real(0.1), "0.1"},
      {json_real(1.0 / 3.0), "0.3333333333333333"}, {json_real(2.0), "2"},
      {json_true(), "true"}, {json_false(), "false"}, {json_null(), ""},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char *s = br_runtime_attr_env_value(cases[i].v);
    CHECK_EQ_STR(s, cases[i].want);
    free(s);
    json_decref(cases[i].v);
  }
  json_t *l = json_array();
  CHECK(br_runtime_attr_env_value(l) == NULL);
  json_decref(l);
}

TEST(runtime_long_socket_dir) {
  /* a socket address holds ~108 bytes: a deep runtime folder falls back to
   * a private folder under $TMPDIR */
  uv_loop_t loop;
  uv_loop_init(&loop);
  char *dir = br_test_tmpdir("rt-long");
  char *deep = NULL;
  CHECK(asprintf(&deep, "%s/%s/%s", dir,
                 "a-rather-long-folder-name-for-a-show-sequence-and-shot-0123456789",
                 "and-another-one-for-the-runtime-files-of-braid-0123456789") > 0);
  br_runtime *rt = NULL;
  br_error err;
  CHECK_EQ_INT(br_runtime_create(NULL, &rt, &err), BR_OK);
  if (br_runtime_listen(rt, &loop, deep, &err) != BR_OK)
    br_test_fail(__FILE__, __LINE__, "listen: %s", err.msg);
  const char *sock = br_runtime_socket_path(rt);
  CHECK(strlen(sock) < 108);
  CHECK(strstr(sock, "braid-ctl-") != NULL);
  CHECK(fx_exists(sock));
  char *copy = strdup(sock);
  br_runtime_destroy(rt);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(uv_loop_close(&loop), 0);
  CHECK(!fx_exists(copy)); /* socket and its folder removed */
  *strrchr(copy, '/') = 0;
  CHECK(!fx_exists(copy));
  free(copy);
  free(deep);
  char *cmd = NULL;
  CHECK(asprintf(&cmd, "rm -rf '%s'", dir) > 0);
  CHECK_EQ_INT(system(cmd), 0);
  free(cmd);
  free(dir);
}
