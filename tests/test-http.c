/* The HTTP layer on real loopback sockets: routing, tokens and roles,
 * body limits, malformed input, deferred answers from other threads, event
 * streams, and the token file. */
#include <braid/http.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fs.h"
#include "harness.h"

static void h_echo(void *ud, br_http_req *rq) {
  (void)ud;
  json_t *b = br_http_req_json(rq);
  const char *q = br_http_req_query(rq, "q");
  br_http_reply_json(rq, 200, json_pack("{sOssssssss?}", "body", b ? b : json_null(), "role",
                                        br_role_name(br_http_req_role(rq)), "method",
                                        br_http_req_method(rq), "arg",
                                        br_http_req_arg(rq, 0) ? br_http_req_arg(rq, 0) : "", "q", q));
}

static void *later(void *p) {
  usleep(20000);
  br_http_reply_json(p, 202, json_pack("{sb}", "deferred", 1));
  return NULL;
}

static void h_defer(void *ud, br_http_req *rq) {
  (void)ud;
  pthread_t t;
  pthread_create(&t, NULL, later, rq);
  pthread_detach(t);
}

static br_http_stream *g_stream;
static void h_stream(void *ud, br_http_req *rq) {
  (void)ud;
  __atomic_store_n(&g_stream, br_http_reply_stream(rq, "text/event-stream"), __ATOMIC_RELEASE);
}

/* /hold keeps its request unanswered (the test answers it), and notes
 * where it came from. */
static br_http_req *g_held;
static char g_peer[80];
static void h_hold(void *ud, br_http_req *rq) {
  (void)ud;
  br_http_req_peer(rq, g_peer, sizeof g_peer);
  __atomic_store_n(&g_held, rq, __ATOMIC_RELEASE);
}

static const br_http_route routes[] = {
    {"GET", "/any/{}", BR_ROLES_ANY, h_echo, 0, false},
    {"POST", "/user/{}", BR_ROLES_USER, h_echo, 64, false},
    {"POST", "/big", BR_ROLES_USER, h_echo, 1 << 20, false},
    {"GET", "/defer", BR_ROLES_ANY, h_defer, 0, false},
    {"GET", "/stream", BR_ROLES_ANY, h_stream, 0, false},
    {"GET", "/hold", BR_ROLES_ANY, h_hold, 0, false},
    {NULL, NULL, 0, NULL, 0, false},
};

typedef struct fixture {
  char *dir;
  br_auth *auth;
  br_http_server *srv;
  char url[64];
  char *admin, *user, *agent;
} fixture;

static void setup(fixture *f, const char *name) {
  memset(f, 0, sizeof *f);
  f->dir = br_test_tmpdir(name);
  char path[1024];
  snprintf(path, sizeof path, "%s/tokens", f->dir);
  br_error err;
  CHECK(br_auth_open(path, &f->auth, &err) == BR_OK);
  CHECK(br_auth_create(f->auth, BR_ROLE_ADMIN, "a", &f->admin, NULL, &err) == BR_OK);
  CHECK(br_auth_create(f->auth, BR_ROLE_USER, "u", &f->user, NULL, &err) == BR_OK);
  CHECK(br_auth_create(f->auth, BR_ROLE_AGENT, "g", &f->agent, NULL, &err) == BR_OK);
  br_http_opts o = {.listen = "127.0.0.1:0", .auth = f->auth, .routes = routes, .threads = 2};
  CHECK(br_http_start(&o, &f->srv, &err) == BR_OK);
  snprintf(f->url, sizeof f->url, "http://127.0.0.1:%d", br_http_port(f->srv));
}

static void teardown(fixture *f) {
  br_http_stop(f->srv);
  br_auth_close(f->auth);
  free(f->admin);
  free(f->user);
  free(f->agent);
  free(f->dir);
}

static int call(fixture *f, const char *token, const char *method, const char *path,
                const json_t *body, json_t **out) {
  br_http_client *c;
  br_error err;
  CHECK(br_http_client_open(f->url, token, &c, &err) == BR_OK);
  int st = br_http_client_call(c, method, path, body, out, &err);
  br_http_client_close(c);
  return st;
}

/* Sends raw bytes and returns the status code of the answer (0: none). */
static int raw(fixture *f, const char *data, size_t len) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)br_http_port(f->srv))};
  inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
  CHECK(connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
  size_t off = 0;
  while (off < len) {
    ssize_t n = send(fd, data + off, len - off, MSG_NOSIGNAL);
    if (n <= 0) break;
    off += (size_t)n;
  }
  shutdown(fd, SHUT_WR);
  char buf[4096];
  ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
  close(fd);
  if (n < 12) return 0;
  buf[n] = 0;
  return atoi(buf + 9);
}

/* A second server on a port in use fails (no SO_REUSEPORT: the kernel would
 * split connections between two servers with different stores). */
TEST(http_port_in_use_is_refused) {
  fixture f;
  setup(&f, "http-port-in-use");
  char listen[64];
  snprintf(listen, sizeof listen, "127.0.0.1:%d", br_http_port(f.srv));
  br_http_opts o = {.listen = listen, .auth = f.auth, .routes = routes, .threads = 1};
  br_http_server *second = NULL;
  br_error err;
  br_error_clear(&err);
  CHECK(br_http_start(&o, &second, &err) != BR_OK);
  CHECK(second == NULL);
  CHECK(strstr(err.msg, "Address already in use") != NULL);
  teardown(&f);
}

TEST(http_tokens_and_roles) {
  fixture f;
  setup(&f, "http-roles");
  json_t *out = NULL;
  CHECK_EQ_INT(call(&f, NULL, "GET", "/any/x", NULL, &out), 401);
  CHECK_CONTAINS(json_string_value(json_object_get(out, "error")), "token");
  json_decref(out);
  CHECK_EQ_INT(call(&f, "brt_wrong", "GET", "/any/x", NULL, NULL), 401);
  CHECK_EQ_INT(call(&f, f.agent, "GET", "/any/x?q=1", NULL, &out), 200);
  CHECK_EQ_STR(json_string_value(json_object_get(out, "role")), "agent");
  CHECK_EQ_STR(json_string_value(json_object_get(out, "arg")), "x");
  CHECK_EQ_STR(json_string_value(json_object_get(out, "q")), "1");
  json_decref(out);
  json_t *body = json_pack("{si}", "a", 1);
  CHECK_EQ_INT(call(&f, f.agent, "POST", "/user/y", body, NULL), 403);
  CHECK_EQ_INT(call(&f, f.user, "POST", "/user/y", body, &out), 200);
  CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(out, "body"), "a")), 1);
  json_decref(out);
  CHECK_EQ_INT(call(&f, f.admin, "POST", "/user/y", body, NULL), 200);
  json_decref(body);
  /* unknown paths and methods: after the token, so nothing leaks without one */
  CHECK_EQ_INT(call(&f, NULL, "GET", "/nothing", NULL, NULL), 401);
  CHECK_EQ_INT(call(&f, f.user, "GET", "/nothing", NULL, NULL), 404);
  CHECK_EQ_INT(call(&f, f.user, "DELETE", "/any/x", NULL, NULL), 405);
  CHECK_EQ_INT(call(&f, f.user, "GET", "/any/x/y", NULL, NULL), 404);
  teardown(&f);
}

TEST(http_bad_input) {
  fixture f;
  setup(&f, "http-bad");
  json_t *big = json_pack("{ss}", "s", "0123456789012345678901234567890123456789012345678901234567890123456789");
  CHECK_EQ_INT(call(&f, f.user, "POST", "/user/x", big, NULL), 413);
  json_decref(big);
  /* malformed JSON through a raw request */
  char req[1024];
  int n = snprintf(req, sizeof req,
                   "POST /user/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                   "Content-Length: 7\r\n\r\n{\"a\":,}",
                   f.user);
  CHECK_EQ_INT(raw(&f, req, (size_t)n), 400);
  /* a body larger than announced limit, sent chunked (no Content-Length) */
  char *chunked = malloc(300000);
  n = snprintf(chunked, 300000,
               "POST /user/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
               "Transfer-Encoding: chunked\r\n\r\n100\r\n",
               f.user);
  memset(chunked + n, 'x', 256);
  n += 256;
  n += snprintf(chunked + n, 300000 - (size_t)n, "\r\n0\r\n\r\n");
  CHECK_EQ_INT(raw(&f, chunked, (size_t)n), 413);
  /* a huge announced body is refused before it is read */
  n = snprintf(req, sizeof req,
               "POST /big HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
               "Content-Length: 99999999999\r\n\r\n",
               f.user);
  CHECK_EQ_INT(raw(&f, req, (size_t)n), 413);
  /* garbage: the server answers 400 or closes, and stays up */
  const char *junk[] = {"GARBAGE\r\n\r\n", "GET\r\n\r\n", "\x01\x02\x03\x04\r\n\r\n",
                        "GET /any/x HTTP/9.9\r\n\r\n"};
  for (size_t i = 0; i < sizeof junk / sizeof *junk; i++) {
    int st = raw(&f, junk[i], strlen(junk[i]));
    CHECK(st == 0 || (st >= 400 && st < 500) || st == 505);
  }
  /* enormous header */
  char *hdr = malloc(200000);
  n = snprintf(hdr, 200000, "GET /any/x HTTP/1.1\r\nHost: x\r\nX-Big: ");
  memset(hdr + n, 'a', 150000);
  n += 150000;
  n += snprintf(hdr + n, 200000 - (size_t)n, "\r\n\r\n");
  int st = raw(&f, hdr, (size_t)n);
  CHECK(st == 0 || (st >= 400 && st < 500));
  free(hdr);
  free(chunked);
  json_t *out = NULL;
  CHECK_EQ_INT(call(&f, f.user, "GET", "/any/still-up", NULL, &out), 200);
  json_decref(out);
  teardown(&f);
}

typedef struct par {
  fixture *f;
  int ok;
} par;

static void *many(void *p) {
  par *a = p;
  br_http_client *c;
  br_error err;
  if (br_http_client_open(a->f->url, a->f->user, &c, &err)) return NULL;
  for (int i = 0; i < 20; i++)
    if (br_http_client_call(c, "GET", "/defer", NULL, NULL, &err) == 202) a->ok++;
  br_http_client_close(c);
  return NULL;
}

TEST(http_deferred_answers) {
  fixture f;
  setup(&f, "http-defer");
  pthread_t t[16];
  par a[16];
  for (int i = 0; i < 16; i++) {
    a[i].f = &f;
    a[i].ok = 0;
    pthread_create(&t[i], NULL, many, &a[i]);
  }
  int ok = 0;
  for (int i = 0; i < 16; i++) {
    pthread_join(t[i], NULL);
    ok += a[i].ok;
  }
  CHECK_EQ_INT(ok, 320);
  uint64_t reqs, pending;
  br_http_counts(f.srv, &reqs, &pending);
  CHECK(reqs >= 320);
  CHECK_EQ_INT(pending, 0);
  teardown(&f);
}

typedef struct collect {
  char buf[4096];
  size_t n;
} collect;

static int on_data(void *ud, const char *d, size_t len) {
  collect *c = ud;
  if (c->n + len < sizeof c->buf) {
    memcpy(c->buf + c->n, d, len);
    c->n += len;
    c->buf[c->n] = 0;
  }
  return strstr(c->buf, "data: 3") != NULL;
}

static void *reader(void *p) {
  fixture *f = p;
  br_http_client *c;
  br_error err;
  collect *col = calloc(1, sizeof *col);
  br_http_client_open(f->url, f->user, &c, &err);
  br_http_client_get_stream(c, "/stream", on_data, col, &err);
  br_http_client_close(c);
  return col;
}

TEST(http_event_stream) {
  fixture f;
  setup(&f, "http-stream");
  g_stream = NULL;
  pthread_t t;
  pthread_create(&t, NULL, reader, &f);
  for (int i = 0; i < 500 && !__atomic_load_n(&g_stream, __ATOMIC_SEQ_CST); i++) usleep(10000);
  CHECK(g_stream != NULL);
  for (int i = 1; i <= 3; i++) {
    usleep(20000); /* the reader is parked (suspended) between events */
    char ev[64];
    int n = snprintf(ev, sizeof ev, "data: %d\n\n", i);
    CHECK(br_http_stream_write(g_stream, ev, (size_t)n) == 0);
  }
  collect *col;
  pthread_join(t, (void **)&col);
  CHECK_CONTAINS(col->buf, "data: 1\n\ndata: 2\n\ndata: 3");
  free(col);
  /* the client went away: writes fail soon after */
  int failed = 0;
  for (int i = 0; i < 200 && !failed; i++) {
    failed = br_http_stream_write(g_stream, "data: x\n\n", 9) != 0;
    usleep(5000);
  }
  CHECK(failed);
  br_http_stream_release(g_stream);
  teardown(&f);
}

TEST(http_token_file) {
  char *dir = br_test_tmpdir("http-tokens");
  char path[1024];
  snprintf(path, sizeof path, "%s/tokens", dir);
  br_auth *a, *b;
  br_error err;
  CHECK(br_auth_open(path, &a, &err) == BR_OK);
  CHECK(br_auth_open(path, &b, &err) == BR_OK);
  struct stat st;
  CHECK(stat(path, &st) == 0);
  CHECK_EQ_INT(st.st_mode & 0777, 0600);
  char *tok, id[17];
  CHECK(br_auth_create(a, BR_ROLE_AGENT, "render01", &tok, id, &err) == BR_OK);
  CHECK_EQ_INT(br_auth_check(a, tok), BR_ROLE_AGENT);
  CHECK_EQ_INT(br_auth_check(b, tok), BR_ROLE_AGENT); /* b reads the changed file */
  CHECK_EQ_INT(br_auth_check(b, "brt_nope"), BR_ROLE_NONE);
  /* only the hash is stored */
  FILE *fp = fopen(path, "r");
  char text[4096] = {0};
  size_t n = fread(text, 1, sizeof text - 1, fp);
  text[n] = 0;
  fclose(fp);
  CHECK(strstr(text, tok + 4) == NULL);
  CHECK_CONTAINS(text, "sha256");
  json_t *l = br_auth_list(b);
  CHECK_EQ_INT(json_array_size(l), 1);
  CHECK(json_object_get(json_array_get(l, 0), "sha256") == NULL);
  json_decref(l);
  CHECK(br_auth_revoke(b, id, &err) == BR_OK);
  CHECK_EQ_INT(br_auth_check(a, tok), BR_ROLE_NONE);
  CHECK(br_auth_revoke(b, id, &err) == BR_ENOTFOUND);
  free(tok);
  br_auth_close(a);
  br_auth_close(b);
  free(dir);
}

/* The SHA-256 of token in hex, as the token file holds it. */
static void token_hash(const char *token, char out[65]) {
  unsigned char h[32];
  unsigned len = sizeof h;
  CHECK(EVP_Digest(token, strlen(token), h, &len, EVP_sha256(), NULL) == 1);
  for (int i = 0; i < 32; i++) snprintf(out + 2 * i, 3, "%02x", h[i]);
}

/* A token file edited by hand: each line that cannot be used is told with
 * its file and line (and column where JSON does not parse),
 * once per read, and the other lines still count. */
TEST(http_token_file_bad_lines_told) {
  char *dir = br_test_tmpdir("http-tokens-bad");
  char path[1024];
  snprintf(path, sizeof path, "%s/tokens", dir);
  const char *tok[] = {"brt_admin", "brt_typo", "brt_comma", "brt_noid", "brt_short", "brt_agent"};
  char h[6][65];
  for (int i = 0; i < 6; i++) token_hash(tok[i], h[i]);
  char content[2048];
  int n = snprintf(content, sizeof content,
                   "{\"id\":\"a1\",\"sha256\":\"%s\",\"role\":\"admin\",\"name\":\"x\"}\r\n" /* CRLF */
                   "{\"id\":\"a2\",\"sha256\":\"%s\",\"role\":\"admn\"}\n"
                   "{\"id\":\"a3\",\"sha256\":\"%s\",\"role\":\"user\",}\n"
                   "{\"sha256\":\"%s\",\"role\":\"user\"}\n"
                   "{\"id\":\"a5\",\"sha256\":\"%.63s\",\"role\":\"user\"}\n"
                   "{\"id\":\"a6\",\"role\":\"user\"}\n"
                   "{\"id\":\"a7\",%c\"sha256\":\"%s\",\"role\":\"user\"}\n"
                   "\n"
                   "{\"id\":\"a9\",\"sha256\":\"%s\",\"role\":\"agent\"}", /* no newline */
                   h[0], h[1], h[2], h[3], h[4], 0, h[2], h[5]);
  FILE *fp = fopen(path, "w");
  CHECK(fp && fwrite(content, 1, (size_t)n, fp) == (size_t)n);
  fclose(fp);
  br_auth *a = NULL;
  br_error err;
  br_test_warnings c = {NULL, 0};
  int rc = br_auth_open_warn(path, br_test_warn, &c, &a, &err);
  char *text = br_test_warnings_take(&c);
  CHECK_EQ_INT(rc, BR_OK);
  CHECK_EQ_INT(br_auth_count(a), 2);
  char id[17];
  CHECK_EQ_INT(br_auth_check_id(a, "brt_admin", id), BR_ROLE_ADMIN);
  CHECK_EQ_STR(id, "a1");
  CHECK_EQ_INT(br_auth_check_id(a, "brt_agent", id), BR_ROLE_AGENT);
  CHECK_EQ_STR(id, "a9");
  for (int i = 1; i < 5; i++) CHECK_EQ_INT(br_auth_check(a, tok[i]), BR_ROLE_NONE);
  CHECK_CONTAINSF(text,
                  "token file %s:2: unknown role \"admn\" (roles: agent, user, admin); line skipped\n",
                  path);
  char want[1200];
  snprintf(want, sizeof want, "token file %s:3:", path);
  CHECK_CONTAINS(text, want);
  const char *col = strstr(text, want) + strlen(want);
  CHECK(*col >= '1' && *col <= '9'); /* jansson's column */
  CHECK_CONTAINS(col, ": not JSON: ");
  CHECK_CONTAINSF(text, "token file %s:4: no \"id\" string; line skipped\n", path);
  CHECK_CONTAINSF(text,
                  "token file %s:5: sha256 is not 64 hex digits (63 of them); line skipped\n",
                  path);
  CHECK_CONTAINSF(text, "token file %s:6: no \"sha256\" string; line skipped\n", path);
  CHECK_CONTAINSF(text, "token file %s:7:12: holds a NUL byte; line skipped\n", path);
  CHECK_EQ_INT(br_test_count(text, "line skipped\n"), 6);
  CHECK_EQ_INT(br_test_count(text, "\n"), 6);
  free(text);
  /* looks at an unchanged file tell nothing; a changed one is told once */
  br_role r1 = br_auth_check(a, "brt_admin");
  size_t n1 = br_auth_count(a);
  text = br_test_warnings_take(&c);
  CHECK_EQ_INT(r1, BR_ROLE_ADMIN);
  CHECK_EQ_INT(n1, 2);
  CHECK_EQ_STR(text, "");
  free(text);
  fp = fopen(path, "a");
  CHECK(fp != NULL);
  fprintf(fp, "\n{\"id\":\"b1\",\"sha256\":\"%s\",\"role\":\"root\"}\n", h[1]);
  fprintf(fp, "{\"id\":\"0123456789abcdef0\",\"sha256\":\"%s\",\"role\":\"user\"}\n", h[1]);
  fclose(fp);
  r1 = br_auth_check(a, "brt_typo");
  n1 = br_auth_count(a);
  text = br_test_warnings_take(&c);
  CHECK_EQ_INT(r1, BR_ROLE_NONE);
  CHECK_EQ_INT(n1, 2);
  CHECK_CONTAINSF(text,
                  "token file %s:10: unknown role \"root\" (roles: agent, user, admin); line skipped\n",
                  path);
  CHECK_CONTAINSF(text,
                  "token file %s:11: an \"id\" longer than 16 characters; line skipped\n",
                  path);
  CHECK_EQ_INT(br_test_count(text, "line skipped\n"), 8);
  free(text);
  /* a name too long for a line of the file is refused, not written to be skipped */
  char *name = malloc(70000);
  CHECK(name != NULL);
  memset(name, 'n', 69999);
  name[69999] = 0;
  char *made = NULL;
  CHECK_EQ_INT(br_auth_create(a, BR_ROLE_USER, name, &made, NULL, &err), BR_EINVAL);
  CHECK(made == NULL);
  free(name);
  /* so is one that would break the table of `braid token list` */
  CHECK_EQ_INT(br_auth_create(a, BR_ROLE_USER, "render\nfarm", &made, NULL, &err), BR_EINVAL);
  CHECK(made == NULL);
  CHECK_CONTAINS(err.msg, "control character (byte 0x0a at 6)");
  /* a revoke takes out its line and changes no other byte: comments, the
   * lines a hand made wrong (a NUL in one), CRLF and the order stay */
  size_t before_len, after_len;
  char *before = br__read_file(path, &before_len);
  CHECK(before != NULL);
  size_t first = (size_t)(strchr(before, '\n') - before) + 1; /* a1's line, CRLF */
  CHECK_EQ_INT(br_auth_revoke(a, "a1", &err), BR_OK);
  text = br_test_warnings_take(&c); /* read again: the bad lines are told again */
  CHECK_EQ_INT(br_test_count(text, "line skipped\n"), 8);
  free(text);
  char *after = br__read_file(path, &after_len);
  CHECK(after != NULL);
  CHECK_EQ_INT(after_len, before_len - first);
  CHECK(memcmp(after, before + first, after_len) == 0);
  CHECK_EQ_INT(br_auth_check(a, "brt_admin"), BR_ROLE_NONE);
  CHECK_EQ_INT(br_auth_check(a, "brt_agent"), BR_ROLE_AGENT);
  CHECK_EQ_INT(br_auth_revoke(a, "a1", &err), BR_ENOTFOUND);
  free(after);
  after = br__read_file(path, &after_len); /* nothing found: nothing changed */
  CHECK(after != NULL);
  CHECK_EQ_INT(after_len, before_len - first);
  free(before);
  free(after);
  br_auth_close(a);
  /* a token made after a last line without its newline is not glued to it */
  fp = fopen(path, "w");
  CHECK(fp != NULL);
  fprintf(fp, "# kept\n{\"id\":\"a9\",\"sha256\":\"%s\",\"role\":\"agent\"}", h[5]);
  fclose(fp);
  CHECK_EQ_INT(br_auth_open(path, &a, &err), BR_OK);
  char made_id[17];
  CHECK_EQ_INT(br_auth_create(a, BR_ROLE_USER, "new", &made, made_id, &err), BR_OK);
  CHECK_EQ_INT(br_auth_count(a), 2);
  CHECK_EQ_INT(br_auth_check(a, "brt_agent"), BR_ROLE_AGENT);
  CHECK_EQ_INT(br_auth_check(a, made), BR_ROLE_USER);
  before = br__read_file(path, &before_len);
  CHECK(before != NULL);
  CHECK(strncmp(before, "# kept\n{\"id\":\"a9\"", 17) == 0);
  CHECK_EQ_INT(br_test_count(before, "\n"), 3);
  free(before);
  free(made);
  br_auth_close(a);
  char cmd[1100];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  CHECK(system(cmd) == 0);
  free(dir);
}

static int g_ended = -1; /* on_end's delivered, or -1 before it runs */
static void on_end(void *ud, bool delivered) {
  (void)ud;
  __atomic_store_n(&g_ended, delivered ? 1 : 0, __ATOMIC_RELEASE);
}

/* Sends GET /hold on a new connection; returns the socket once the
 * request is held, its local port in *port. */
static int hold(fixture *f, int *port) {
  __atomic_store_n(&g_held, NULL, __ATOMIC_RELEASE);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET};
  sa.sin_port = htons((uint16_t)br_http_port(f->srv));
  inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
  CHECK(connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
  struct sockaddr_in me;
  socklen_t ml = sizeof me;
  getsockname(fd, (struct sockaddr *)&me, &ml);
  *port = ntohs(me.sin_port);
  char req[512];
  int n = snprintf(req, sizeof req,
                   "GET /hold HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", f->user);
  CHECK(send(fd, req, (size_t)n, MSG_NOSIGNAL) == n);
  for (int i = 0; i < 500 && !__atomic_load_n(&g_held, __ATOMIC_ACQUIRE); i++) usleep(10000);
  CHECK(__atomic_load_n(&g_held, __ATOMIC_ACQUIRE) != NULL);
  usleep(100000); /* suspended by now */
  return fd;
}

/* A long poll's client may die while its request waits: the holder can
 * ask whether it has gone (br_http_req_gone) before giving it anything,
 * and learns whether an answer went out in full (on_end). */
TEST(http_gone_clients_and_undelivered_answers) {
  fixture f;
  setup(&f, "http-gone");
  int port;
  /* a client that stays: not gone, its answer is delivered */
  int fd = hold(&f, &port);
  char want[32];
  snprintf(want, sizeof want, "127.0.0.1:%d", port);
  CHECK_EQ_STR(g_peer, want);
  br_http_req *rq = g_held;
  CHECK(!br_http_req_gone(rq));
  __atomic_store_n(&g_ended, -1, __ATOMIC_RELEASE);
  br_http_req_on_end(rq, on_end, NULL);
  br_http_reply_json(rq, 200, json_pack("{si}", "work", 1));
  char buf[1024];
  CHECK(recv(fd, buf, sizeof buf, 0) > 12);
  for (int i = 0; i < 500 && __atomic_load_n(&g_ended, __ATOMIC_ACQUIRE) < 0; i++) usleep(10000);
  CHECK_EQ_INT(__atomic_load_n(&g_ended, __ATOMIC_ACQUIRE), 1);
  close(fd);
  /* a client that closes (its process killed: the kernel closes it) */
  fd = hold(&f, &port);
  rq = g_held;
  CHECK(!br_http_req_gone(rq));
  close(fd);
  bool gone = false;
  for (int i = 0; i < 500 && !(gone = br_http_req_gone(rq)); i++) usleep(10000);
  CHECK(gone);
  br_http_reply_error(rq, 410, "gone"); /* it must still be answered, to be freed */
  /* a connection reset (RST) before the answer: not delivered */
  fd = hold(&f, &port);
  rq = g_held;
  struct linger lg = {.l_onoff = 1, .l_linger = 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  close(fd);
  for (int i = 0; i < 500 && !br_http_req_gone(rq); i++) usleep(10000);
  __atomic_store_n(&g_ended, -1, __ATOMIC_RELEASE);
  br_http_req_on_end(rq, on_end, NULL);
  br_http_reply_json(rq, 200, json_pack("{si}", "work", 1));
  for (int i = 0; i < 500 && __atomic_load_n(&g_ended, __ATOMIC_ACQUIRE) < 0; i++) usleep(10000);
  CHECK_EQ_INT(__atomic_load_n(&g_ended, __ATOMIC_ACQUIRE), 0);
  uint64_t reqs, pending;
  br_http_counts(f.srv, &reqs, &pending);
  CHECK_EQ_INT(pending, 0);
  teardown(&f);
}
