/* The web UI as `braid server` serves it: its files (built in from web/)
 * without a token and with headers that keep the page to its own files,
 * the same bytes as in the source tree, and no way past the token for
 * anything else. The script is checked by `node --check` where Node.js is
 * installed (it is not a build dependency). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "farm-util.h"

/* GET path over a raw connection (HTTP/1.0: the server closes after the
 * answer), with an extra header line (or ""): the whole answer. */
static char *raw_get(farm *f, const char *path, const char *header) {
  int port = atoi(strrchr(f->url, ':') + 1);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
  CHECK(connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
  char req[1024];
  snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: x\r\n%s\r\n", path, header);
  CHECK(send(fd, req, strlen(req), MSG_NOSIGNAL) == (ssize_t)strlen(req));
  size_t cap = 1 << 16, n = 0;
  char *buf = malloc(cap);
  for (;;) {
    if (n + 4096 > cap) buf = realloc(buf, cap *= 2);
    ssize_t got = recv(fd, buf + n, cap - n - 1, 0);
    if (got <= 0) break;
    n += (size_t)got;
  }
  close(fd);
  buf[n] = 0;
  return buf;
}

static int status_of(const char *answer) {
  return strncmp(answer, "HTTP/1.", 7) == 0 ? atoi(answer + 9) : 0;
}

static const char *body_of(const char *answer) {
  const char *b = strstr(answer, "\r\n\r\n");
  return b ? b + 4 : "";
}

TEST(web_ui_files_need_no_token_and_match_the_source) {
  farm F;
  farm_start(&F, "web-files", "--poll-wait 1");
  static const struct {
    const char *path, *file, *type;
  } files[] = {
      {"/", "index.html", "text/html; charset=utf-8"},
      {"/ui/app.js", "app.js", "text/javascript; charset=utf-8"},
      {"/ui/style.css", "style.css", "text/css; charset=utf-8"},
      {"/ui/icon.svg", "icon.svg", "image/svg+xml; charset=utf-8"},
  };
  for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
    char *a = raw_get(&F, files[i].path, "");
    CHECK_EQ_INT(status_of(a), 200);
    CHECK_CONTAINSF(a, "Content-Type: %s\r\n", files[i].type);
    /* its own files only, never in a frame, never sniffed as another type */
    CHECK_CONTAINS(a, "Content-Security-Policy: default-src 'self'; ");
    CHECK_CONTAINS(a, "frame-ancestors 'none'");
    CHECK_CONTAINS(a, "X-Content-Type-Options: nosniff\r\n");
    char path[1024];
    snprintf(path, sizeof path, "%s/web/%s", farm_src(), files[i].file);
    char *want = br_test_slurp(path);
    CHECK(strcmp(body_of(a), want) == 0); /* the built-in copy is the source's */
    free(want);
    free(a);
  }
  char *a = raw_get(&F, "/", "");
  CHECK_CONTAINS(a, "<script src=\"/ui/app.js\" defer></script>");
  free(a);
  /* a stale token in the browser does not keep the page away */
  a = raw_get(&F, "/", "Authorization: Bearer not-a-token\r\n");
  CHECK_EQ_INT(status_of(a), 200);
  free(a);
  a = raw_get(&F, "/ui/nope.js", "");
  CHECK_EQ_INT(status_of(a), 404);
  CHECK_CONTAINS(a, "no such file of the web UI");
  free(a);
  /* the public paths open nothing else */
  static const char *const closed[] = {"/api/v1/tasks", "/api/v1/summary", "/health",
                                       "/ui", "/ui/", "/index.html", "/nowhere"};
  for (size_t i = 0; i < sizeof closed / sizeof closed[0]; i++) {
    a = raw_get(&F, closed[i], "");
    if (status_of(a) != 401)
      br_test_fail(__FILE__, __LINE__, "GET %s without a token: %.40s", closed[i], a);
    free(a);
  }
  farm_stop(&F);
}

TEST(web_ui_summary_counts_tasks_by_node_and_state) {
  farm F;
  farm_start(&F, "web-summary", "--poll-wait 1");
  json_t *g = farm_jobs_graph("jobs", 3, "{\"shell\": \"exit 0\"}");
  int64_t t = farm_submit_graph(&F, g, NULL, 0, NULL); /* takes g */
  CHECK(t > 0);
  json_t *a = NULL;
  for (int i = 0; i < 200; i++) { /* no agent: the jobs wait queued */
    json_decref(a);
    a = NULL;
    CHECK_EQ_INT(farm_call(&F, F.user, "GET", "/api/v1/summary", NULL, &a), 200);
    if (json_integer_value(json_object_get(json_object_get(a, "total"), "queued")) == 3) break;
    usleep(20000);
  }
  json_t *total = json_object_get(a, "total");
  CHECK_EQ_INT(json_integer_value(json_object_get(total, "queued")), 3);
  CHECK_EQ_INT(json_object_size(total), BR_TASK_NSTATES); /* every state, 0 or not */
  json_decref(a);
  farm_agent(&F, "w1", "--slots 3");
  CHECK(farm_settle(&F, 60));
  CHECK_EQ_INT(farm_call(&F, F.user, "GET", "/api/v1/summary", NULL, &a), 200);
  total = json_object_get(a, "total");
  CHECK_EQ_INT(json_integer_value(json_object_get(total, "queued")), 0);
  int64_t sum = 0;
  size_t i;
  json_t *n;
  json_array_foreach(json_object_get(a, "nodes"), i, n)
    sum += json_integer_value(json_object_get(json_object_get(n, "counts"), "done"));
  CHECK_EQ_INT(sum, json_integer_value(json_object_get(total, "done")));
  CHECK(sum >= 3);
  json_decref(a);
  farm_stop(&F);
}

TEST(web_ui_script_parses) {
  if (system("command -v node >/dev/null 2>&1") != 0) {
    printf("  (no Node.js here: the script's syntax is not checked)\n");
    return;
  }
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "node --check '%s/web/app.js'", farm_src());
  CHECK_EQ_INT(system(cmd), 0);
}
