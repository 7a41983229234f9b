/* The depot mounted inside `braid server --depot-root`: a real server on
 * loopback serves the API and the depot on one port with its own tokens
 * (any role pulls, user and admin push, only admin removes versions and
 * collects garbage), and a farm agent runs push and pull nodes against it. */
#include "farm-util.h"
#include "xfer-util.h"

static farm F;

static void opts(br_xfer_opts *o, const char *tmp, const char *token) {
  xu_opts(o, tmp);
  o->token = token;
  o->retries = 1;
}

static char *ref(const char *name) {
  char *r = NULL;
  if (asprintf(&r, "depot://%s/%s", F.url + strlen("http://"), name) < 0) abort();
  return r;
}

TEST(server_serves_the_depot_with_its_tokens) {
  farm_start(&F, "xfer-server", "--depot-root depot");
  char *src = xu_path(F.dir, "src"), *dst = xu_path(F.dir, "dst");
  xu_make_file(src, "a/one.0001.bgeo", 5000, 1);
  xu_make_file(src, "a/two.0001.vdb", 900000, 2);
  char *r = ref("sh/cloth");
  br_xfer_opts o;
  br_xfer_result res;
  br_error err;
  /* user pushes, agent pulls */
  opts(&o, F.dir, F.user);
  xu_push_ok(src, r, &o, &res);
  CHECK_EQ_INT(res.version, 1);
  opts(&o, F.dir, F.agent);
  xu_pull_ok(r, dst, &o, &res);
  CHECK_EQ_INT(xu_tree_diff(src, dst), 0);
  /* an agent token may not store; an unknown token gets nothing */
  xu_make_file(src, "a/three.0001.bgeo", 100, 3);
  CHECK_EQ_INT(br_xfer_push(src, r, &o, &res, &err), BR_EAUTH);
  CHECK_CONTAINS(err.msg, "403");
  CHECK_CONTAINS(err.msg, "only read");
  opts(&o, F.dir, "brt_not_a_token");
  CHECK_EQ_INT(br_xfer_pull(r, dst, &o, &res, &err), BR_EAUTH);
  CHECK_CONTAINS(err.msg, "401");
  /* admin pushes too; the API is still there beside the depot */
  opts(&o, F.dir, F.admin);
  xu_push_ok(src, r, &o, &res);
  CHECK_EQ_INT(res.version, 2);
  json_t *out = NULL;
  CHECK_EQ_INT(farm_call(&F, F.agent, "GET", "/health", NULL, &out), 200);
  json_decref(out);
  CHECK_EQ_INT(farm_call(&F, F.user, "GET", "/v1/nothing", NULL, NULL), 404);
  /* what the server keeps checks out */
  char *root = xu_path(F.dir, "depot");
  int64_t n = 0;
  CHECK_EQ_INT(br_depot_fsck(root, &n, &err), BR_OK);
  CHECK(n >= 3);
  /* any role may list the depot's versions */
  opts(&o, F.dir, F.agent);
  br_depot_entry *v = NULL;
  size_t nv = 0;
  CHECK_EQ_INT(br_xfer_depot_list(F.url, "sh", true, &o, &v, &nv, &err), BR_OK);
  CHECK_EQ_INT(nv, 2);
  if (nv == 2) {
    CHECK_EQ_STR(v[1].name, "sh/cloth");
    CHECK_EQ_INT(v[1].version, 2);
    CHECK_EQ_INT(v[1].files, 3);
  }
  br_depot_list_free(v, nv);
  /* the server's log has the depot's commits */
  char *lp = xu_path(F.dir, "server.log"), *log = br__read_file(lp, NULL);
  CHECK_CONTAINS(log, " sh/cloth@v1 committed: 2 files, 905000 bytes (from 127.0.0.1)\n");
  CHECK_CONTAINS(log, " sh/cloth@v2 committed: 3 files, 905100 bytes (from 127.0.0.1)\n");
  free(log);
  free(lp);
  free(root);
  free(r);
  free(src);
  free(dst);
  farm_stop(&F);
}

/* `braid depot rm|gc DEPOT` with a token of the given role; the exit status
 * and the output in *out. */
static int depot_admin(const char *token, const char *args, char **out) {
  char cmd[4096];
  snprintf(cmd, sizeof cmd, "BRAID_TOKEN='%s' '%s' depot %s depot://%s 2>&1; echo \"exit=$?\"",
           token, farm_bin(), args, F.url + strlen("http://"));
  *out = farm_capture(cmd);
  const char *e = strstr(*out, "exit=");
  return e ? atoi(e + 5) : -1;
}

TEST(server_depot_rm_and_gc_need_an_admin_token) {
  farm_start(&F, "xfer-server-admin", "--depot-root depot");
  char *src = xu_path(F.dir, "src"), *dst = xu_path(F.dir, "dst");
  xu_make_file(src, "a/one.0001.bgeo", 5000, 1);
  char *r = ref("sh/gc");
  br_xfer_opts o;
  br_xfer_result res;
  br_error err;
  opts(&o, F.dir, F.user);
  xu_push_ok(src, r, &o, &res);
  xu_make_file(src, "a/one.0001.bgeo", 7000, 2); /* v2 no longer names v1's chunk */
  xu_push_ok(src, r, &o, &res);
  CHECK_EQ_INT(res.version, 2);
  char *out = NULL;
  /* user and agent tokens: 403, nothing removed */
  const char *refused[] = {F.user, F.agent};
  for (int i = 0; i < 2; i++) {
    CHECK_EQ_INT(depot_admin(refused[i], "gc --grace 0", &out), 1);
    CHECK_CONTAINS(out, "HTTP 403");
    CHECK_CONTAINS(out, "admin token");
    free(out);
    CHECK_EQ_INT(depot_admin(refused[i], "rm sh/gc@v1", &out), 1);
    CHECK_CONTAINS(out, "HTTP 403");
    free(out);
  }
  CHECK_EQ_INT(depot_admin("brt_not_a_token", "gc", &out), 1);
  CHECK_CONTAINS(out, "HTTP 401");
  free(out);
  /* the admin token removes v1 and collects its chunk */
  CHECK_EQ_INT(depot_admin(F.admin, "rm sh/gc@v1", &out), 0);
  CHECK_CONTAINS(out, "removed sh/gc@v1");
  free(out);
  CHECK_EQ_INT(depot_admin(F.admin, "rm sh/gc@v1", &out), 1);
  CHECK_CONTAINS(out, "no version 1 of 'sh/gc'");
  free(out);
  CHECK_EQ_INT(depot_admin(F.admin, "gc --grace 0", &out), 0);
  CHECK_CONTAINS(out, "1 snapshots name 1 chunks; removed 1 chunks");
  free(out);
  opts(&o, F.dir, F.agent);
  xu_pull_ok(r, dst, &o, &res);
  CHECK_EQ_INT(xu_tree_diff(src, dst), 0);
  /* bad input is refused before any work */
  json_t *body = json_pack("{sI}", "grace_s", (json_int_t)-1), *ans = NULL;
  CHECK_EQ_INT(farm_call(&F, F.admin, "POST", "/v1/admin/gc", body, &ans), 400);
  CHECK_CONTAINS(json_string_value(json_object_get(ans, "error")), "grace_s");
  json_decref(ans);
  json_decref(body);
  char *root = xu_path(F.dir, "depot");
  int64_t n = 0;
  CHECK_EQ_INT(br_depot_fsck(root, &n, &err), BR_OK);
  CHECK_EQ_INT(n, 1);
  free(root);
  free(r);
  free(src);
  free(dst);
  farm_stop(&F);
}

TEST(push_and_pull_nodes_on_an_agent_against_the_server) {
  farm_start(&F, "xfer-server-nodes", "--depot-root depot");
  setenv("BRAID_CACHE_DIR", F.dir, 1); /* the agent's jobs inherit it */
  farm_agent(&F, "a1", "--slots 2");
  char *src = xu_path(F.dir, "src");
  xu_make_file(src, "cache/cloth.0001.bgeo", 3000, 1);
  xu_make_file(src, "cache/cloth.0002.bgeo", 300000, 2);
  char *utok = xu_path(F.dir, "user-token"), *atok = xu_path(F.dir, "agent-token");
  xu_write_file(utok, F.user, strlen(F.user));
  xu_write_file(atok, F.agent, strlen(F.agent));
  char *depot = NULL;
  if (asprintf(&depot, "depot://%s", F.url + strlen("http://")) < 0) abort();
  char text[8192];
  snprintf(text, sizeof text,
           "{\"name\": \"xs\", \"start\": {\"node\": \"push\"},"
           " \"nodes\": ["
           "  {\"name\": \"push\", \"type\": \"push\", \"params\": {\"src\": \"%s\", \"depot\": \"%s\","
           "   \"name\": \"sh/fx\", \"token_file\": \"%s\"}},"
           "  {\"name\": \"pull\", \"type\": \"pull\", \"params\": {\"snapshots\": \"{snapshot}\","
           "   \"dest\": \"%s/out\", \"token_file\": \"%s\"}},"
           "  {\"name\": \"refused\", \"type\": \"push\", \"params\": {\"src\": \"%s\", \"depot\": \"%s\","
           "   \"name\": \"sh/fx\", \"token_file\": \"%s\"}}],"
           " \"wires\": [[\"push\", \"pull\"], [\"push\", \"refused\"]]}",
           src, depot, utok, F.dir, atok, src, depot, atok);
  json_error_t jerr;
  json_t *g = json_loads(text, 0, &jerr);
  if (!g) br_test_fail(__FILE__, __LINE__, "graph: %s", jerr.text);
  farm_submit_graph(&F, g, NULL, 0, NULL);
  CHECK(farm_settle(&F, 60));
  int64_t c[BR_TASK_NSTATES];
  farm_counts(&F, c);
  CHECK_EQ_INT(c[BR_TASK_DONE], 1);  /* pushed, then pulled */
  CHECK_EQ_INT(c[BR_TASK_ERROR], 1); /* an agent token cannot push */
  char *out = xu_path(F.dir, "out");
  CHECK_EQ_INT(xu_tree_diff(src, out), 0);
  char cmd[2048];
  snprintf(cmd, sizeof cmd, "sqlite3 '%s/farm.braid.db' \"select error from tasks where node='refused'\"",
           F.dir);
  char *msg = farm_capture(cmd);
  CHECK_CONTAINS(msg, "push failed: the depot forbids this (HTTP 403");
  free(msg);
  farm_invs inv = farm_invocations(&F);
  CHECK_EQ_INT(inv.total, 3); /* the refused push ran once */
  CHECK_CONTAINS(inv.workers, "a1");
  free(out);
  free(depot);
  free(utok);
  free(atok);
  free(src);
  farm_stop(&F);
}

/* Starts F, a server with a depot over HTTPS whose self-signed certificate
 * (its own private CA) is made in *dir (name-cert; xu_done removes it).
 * Returns the CA file's path (the caller frees it). */
static char *tls_farm_start(const char *name, char **dir) {
  char certdir[256];
  snprintf(certdir, sizeof certdir, "%s-cert", name);
  *dir = br_test_tmpdir(certdir);
  char cmd[4096];
  snprintf(cmd, sizeof cmd,
           "cd '%s' && openssl req -x509 -newkey rsa:2048 -nodes -keyout key.pem -out cert.pem -days 2 "
           "-subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 > openssl.log 2>&1",
           *dir);
  CHECK_EQ_INT(system(cmd), 0);
  char args[2048];
  snprintf(args, sizeof args, "--depot-root depot --tls-cert '%s/cert.pem' --tls-key '%s/key.pem'",
           *dir, *dir);
  farm_start(&F, name, args);
  CHECK(strncmp(F.url, "https://", 8) == 0);
  return xu_path(*dir, "cert.pem");
}

/* Stops F and removes the certificate's directory; frees ca and dir. */
static void tls_farm_stop(char *ca, char *dir) {
  free(ca);
  farm_stop(&F);
  xu_done(dir);
}

TEST(depot_in_a_server_over_https) {
  char *dir = NULL;
  char *ca = tls_farm_start("xfer-server-tls", &dir);
  char *src = xu_path(F.dir, "src"), *dst = xu_path(F.dir, "dst");
  xu_make_file(src, "a/one.0001.bgeo", 5000, 1);
  xu_make_file(src, "a/two.0001.vdb", 600000, 2);
  char *r = NULL;
  if (asprintf(&r, "depots://%s/sh/tls", F.url + strlen("https://")) < 0) abort();
  br_xfer_opts o;
  br_xfer_result res;
  br_error err;
  opts(&o, F.dir, F.user);
  /* without the CA: refused at once, with what to do */
  CHECK_EQ_INT(br_xfer_push(src, r, &o, &res, &err), BR_EINVAL);
  CHECK_CONTAINS(err.msg, "certificate");
  CHECK_CONTAINS(err.msg, "--ca");
  o.ca_file = ca;
  xu_push_ok(src, r, &o, &res);
  o.token = F.agent;
  xu_pull_ok(r, dst, &o, &res);
  CHECK_EQ_INT(xu_tree_diff(src, dst), 0);
  free(r);
  free(src);
  free(dst);
  tls_farm_stop(ca, dir);
}

/* `braid depot ARGS` against the server's depot over HTTPS, with its CA and
 * the admin token; the exit status and the output in *out. */
static int depot_admin_tls(const char *ca, const char *args, char **out) {
  char cmd[4096];
  snprintf(cmd, sizeof cmd, "'%s' depot %s depots://%s --ca '%s' --token '%s' 2>&1; echo \"exit=$?\"",
           farm_bin(), args, F.url + strlen("https://"), ca, F.admin);
  *out = farm_capture(cmd);
  const char *e = strstr(*out, "exit=");
  return e ? atoi(e + 5) : -1;
}

TEST(depot_rm_and_gc_over_https) {
  char *dir = NULL;
  char *ca = tls_farm_start("xfer-server-tls-admin", &dir);
  char *src = xu_path(F.dir, "src"), *dst = xu_path(F.dir, "dst");
  char *depot = NULL, *r = NULL;
  if (asprintf(&depot, "depots://%s", F.url + strlen("https://")) < 0 ||
      asprintf(&r, "%s/sh/tlsgc", depot) < 0)
    abort();
  br_xfer_opts o;
  br_xfer_result res;
  br_error err;
  opts(&o, F.dir, F.user);
  o.ca_file = ca;
  /* each version names a chunk of its own */
  for (int v = 1; v <= 3; v++) {
    xu_make_file(src, "a/one.0001.bgeo", 5000 + (size_t)v, (uint64_t)v);
    xu_push_ok(src, r, &o, &res);
    CHECK_EQ_INT(res.version, v);
  }
  /* the command line, with --ca and the admin token */
  char *out = NULL;
  CHECK_EQ_INT(depot_admin_tls(ca, "rm sh/tlsgc@v1", &out), 0);
  CHECK_CONTAINS(out, "removed sh/tlsgc@v1");
  free(out);
  CHECK_EQ_INT(depot_admin_tls(ca, "gc --grace 0", &out), 0);
  CHECK_CONTAINS(out, "2 snapshots name 2 chunks; removed 1 chunks");
  free(out);
  /* the library, with the CA */
  o.token = F.admin;
  br_xfer_version v2[] = {{"sh/tlsgc", 2}};
  bool removed = false;
  CHECK_EQ_INT(br_xfer_depot_rm(depot, v2, 1, &o, &removed, &err), BR_OK);
  CHECK(removed);
  br_depot_gc_result g;
  CHECK_EQ_INT(br_xfer_depot_gc(depot, 0, true, &o, &g, &err), BR_OK);
  CHECK_EQ_INT(g.snapshots, 1);
  CHECK_EQ_INT(g.objects_removed, 1);
  CHECK_EQ_INT(br_xfer_depot_gc(depot, 0, false, &o, &g, &err), BR_OK);
  CHECK_EQ_INT(g.objects_removed, 1);
  /* without the CA the depot's certificate is refused */
  o.ca_file = NULL;
  CHECK_EQ_INT(br_xfer_depot_gc(depot, 0, true, &o, &g, &err), BR_EINVAL); /* not "try later" */
  CHECK_CONTAINS(err.msg, "certificate");
  CHECK_CONTAINS(err.msg, "--ca");
  o.ca_file = ca;
  /* v3 alone is left, whole */
  CHECK_EQ_INT(br_xfer_depot_gc(depot, 0, true, &o, &g, &err), BR_OK);
  CHECK_EQ_INT(g.live_chunks, 1);
  CHECK_EQ_INT(g.objects_removed, 0);
  xu_pull_ok(r, dst, &o, &res);
  CHECK_EQ_INT(xu_tree_diff(src, dst), 0);
  free(r);
  free(depot);
  free(src);
  free(dst);
  tls_farm_stop(ca, dir);
}
