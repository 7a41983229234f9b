/* The web UI in a real browser: Debian's chromium, headless, driven by its
 * chromedriver through the W3C WebDriver protocol (JSON over HTTP, spoken
 * here with libcurl and jansson), against a real `braid server`. A user
 * logs in with a token, opens a graph, submits tasks (and bad attributes,
 * which must send nothing), sets a priority and cancels through the page's
 * buttons, and uploads graphs (a file, a new version, a graph the server
 * refuses, text that is not JSON), with the page logging no JavaScript
 * error; and the header and the task table fit a narrow and a wide window.
 *
 * chromedriver and every process it starts (the browser, its helpers, the
 * crash handlers that leave their parent) run under a keeper process, a
 * child subreaper: when the test ends, passing or not (a failed CHECK
 * exits at once), the keeper's pipe closes and it ends them all. Without
 * chromium the test fails and says to run scripts/deps.sh. */
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "farm-util.h"

#define ELEMENT_KEY "element-6066-11e4-a52e-4f735466cecf"
#define WAIT_S 15.0

/* ---- chromedriver, kept ---- */

typedef struct wd {
  farm *f;
  pid_t keeper;
  int hold; /* the write end of the keeper's pipe: closed, it ends everything */
  char *dir;
  char driver[256], log[1024];
  char root[128];     /* http://127.0.0.1:PORT */
  char session[256];  /* root/session/ID */
  CURL *curl;
} wd;

/* The program name in PATH, or false. */
static bool find_program(const char *name, char *out, size_t cap) {
  const char *path = getenv("PATH");
  char dirs[4096];
  snprintf(dirs, sizeof dirs, "%s", path && *path ? path : "/usr/local/bin:/usr/bin:/bin");
  for (char *save = NULL, *d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
    snprintf(out, cap, "%s/%s", d, name);
    if (access(out, X_OK) == 0) return true;
  }
  return false;
}

/* A loopback port nothing listens on now. */
static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof sa;
  CHECK(bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
  CHECK(getsockname(fd, (struct sockaddr *)&sa, &len) == 0);
  close(fd);
  return ntohs(sa.sin_port);
}

/* Calls each(ud, pid, text) for every process, text the start of its
 * /proc/PID/FILE (NULs turned to spaces), until each returns false. */
static void each_process(const char *file, bool (*each)(void *ud, int pid, const char *text),
                         void *ud) {
  DIR *d = opendir("/proc");
  if (!d) return;
  for (struct dirent *e; (e = readdir(d));) {
    if (e->d_name[0] < '1' || e->d_name[0] > '9') continue;
    char path[300], text[8192];
    snprintf(path, sizeof path, "/proc/%s/%s", e->d_name, file);
    FILE *fp = fopen(path, "r");
    if (!fp) continue;
    size_t got = fread(text, 1, sizeof text - 1, fp);
    fclose(fp);
    for (size_t i = 0; i < got; i++)
      if (!text[i]) text[i] = ' ';
    text[got] = 0;
    if (!each(ud, atoi(e->d_name), text)) break;
  }
  closedir(d);
}

typedef struct child_list {
  pid_t ppid, *out;
  int n, cap;
} child_list;

static bool add_child(void *ud, int pid, const char *stat) {
  child_list *k = ud;
  const char *rp = strrchr(stat, ')'); /* the name may hold spaces and parentheses */
  char state;
  int parent;
  if (rp && sscanf(rp + 1, " %c %d", &state, &parent) == 2 && parent == k->ppid)
    k->out[k->n++] = pid;
  return k->n < k->cap;
}

/* The pids whose parent is ppid. */
static int children_of(pid_t ppid, pid_t *out, int cap) {
  child_list k = {ppid, out, 0, cap};
  if (cap > 0) each_process("stat", add_child, &k);
  return k.n;
}

typedef struct naming {
  const char *text;
  int n;
} naming;

static bool count_naming(void *ud, int pid, const char *cmdline) {
  naming *m = ud;
  (void)pid;
  if (strstr(cmdline, m->text)) m->n++;
  return true;
}

/* How many processes name text in their command line (the browser's
 * profile folder: anything of this test's browser). */
static int processes_naming(const char *text) {
  naming m = {text, 0};
  each_process("cmdline", count_naming, &m);
  return m.n;
}

/* The keeper: starts chromedriver, waits for its pipe to close, then ends
 * every process below it (orphans come to it, as a subreaper): SIGTERM
 * for up to 2 s, then SIGKILL, until it has no child left. chromedriver
 * stays in the test's process group, so a Ctrl-C or a kill of the group
 * reaches it and the browser; the keeper itself outlives them to end what
 * left the group (the crash handlers) once the test is gone. */
static void keeper(wd *w, int rd, int port) {
  prctl(PR_SET_CHILD_SUBREAPER, 1);
  pid_t cd = fork();
  if (cd == 0) {
    close(rd);
    int fd = open(w->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    int null = open("/dev/null", O_RDONLY);
    dup2(null, 0);
    dup2(fd, 1);
    dup2(fd, 2);
    /* the browser's own files go under the test's folder too (its
     * org.chromium.* folders in TMPDIR were left in /tmp by every run) */
    setenv("HOME", w->dir, 1);
    setenv("TMPDIR", w->dir, 1);
    char cfg[1100], cache[1100], arg[32];
    snprintf(cfg, sizeof cfg, "%s/config", w->dir);
    snprintf(cache, sizeof cache, "%s/cache", w->dir);
    setenv("XDG_CONFIG_HOME", cfg, 1);
    setenv("XDG_CACHE_HOME", cache, 1);
    snprintf(arg, sizeof arg, "--port=%d", port);
    execl(w->driver, w->driver, arg, (char *)NULL);
    _exit(127);
  }
  signal(SIGINT, SIG_IGN);
  signal(SIGTERM, SIG_IGN);
  signal(SIGHUP, SIG_IGN);
  char c;
  ssize_t n;
  do n = read(rd, &c, 1);
  while (n > 0 || (n < 0 && errno == EINTR));
  double kill_at = farm_now() + 2;
  for (;;) {
    while (waitpid(-1, NULL, WNOHANG) > 0) {}
    pid_t kids[512];
    int nk = children_of(getpid(), kids, 512);
    if (!nk && waitpid(-1, NULL, WNOHANG) < 0 && errno == ECHILD) break;
    int sig = farm_now() < kill_at ? SIGTERM : SIGKILL;
    for (int i = 0; i < nk; i++) kill(kids[i], sig);
    usleep(20000);
  }
  _exit(0);
}

typedef struct answer {
  char *p;
  size_t n;
} answer;

static size_t on_data(char *d, size_t size, size_t nmemb, void *ud) {
  answer *a = ud;
  size_t n = size * nmemb;
  char *grown = realloc(a->p, a->n + n + 1);
  if (!grown) return 0;
  memcpy(grown + a->n, d, n);
  a->n += n;
  grown[a->n] = 0;
  a->p = grown;
  return n;
}

/* One HTTP request on c: the answer parsed as JSON (a new reference; NULL
 * when it is not JSON) and its status (0: no answer). auth: a header line
 * or NULL; body: what a POST sends (NULL: nothing). */
static json_t *http_json(CURL *c, const char *method, const char *url, const char *auth,
                         const char *body, long *status) {
  answer a = {NULL, 0};
  struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
  if (auth) h = curl_slist_append(h, auth);
  curl_easy_reset(c);
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &a);
  curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
  curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
  if (body) curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
  *status = 0;
  if (curl_easy_perform(c) == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
  curl_slist_free_all(h);
  json_error_t jerr;
  json_t *doc = a.p ? json_loads(a.p, 0, &jerr) : NULL;
  free(a.p);
  return doc;
}

/* One WebDriver request: the answer's "value" (a new reference; NULL when
 * the answer is not JSON) and its HTTP status (0: no answer). body is
 * stolen; a POST without one sends {}. */
static json_t *wd_request(wd *w, const char *method, const char *url, json_t *body,
                          long *status) {
  char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
  json_decref(body);
  bool post = strcmp(method, "POST") == 0;
  json_t *doc = http_json(w->curl, method, url, NULL, post ? (text ? text : "{}") : NULL, status);
  free(text);
  json_t *v = json_incref(json_object_get(doc, "value"));
  json_decref(doc);
  return v;
}

/* The error of a failed command, as WebDriver words it. */
static const char *wd_error(json_t *v) {
  const char *m = json_string_value(json_object_get(v, "message"));
  return m ? m : "(no message)";
}

/* A command of the session (path after /session/ID); fails the test
 * unless it succeeds. Returns its value (a new reference). */
static json_t *cmd(wd *w, const char *method, const char *path, json_t *body) {
  char url[512];
  snprintf(url, sizeof url, "%s%s", w->session, path);
  long st;
  json_t *v = wd_request(w, method, url, body, &st);
  if (st != 200) {
    br_test_fail(__FILE__, __LINE__, "WebDriver %s %s: HTTP %ld: %.300s", method, path, st,
                 wd_error(v));
  }
  return v;
}

static void wd_do(wd *w, const char *method, const char *path, json_t *body) {
  json_decref(cmd(w, method, path, body));
}

/* Starts chromedriver (under its keeper) and a headless browser session;
 * fails with what to do when chromium is not installed. */
static void wd_start(wd *w, farm *f) {
  memset(w, 0, sizeof *w);
  w->f = f;
  char browser[256];
  if (!find_program("chromedriver", w->driver, sizeof w->driver) ||
      !find_program("chromium", browser, sizeof browser))
    br_test_fail(__FILE__, __LINE__,
                 "chromium and chromedriver are not installed: the web UI's browser test "
                 "needs them; run scripts/deps.sh (as root) to install Debian's chromium and "
                 "chromium-driver");
  w->dir = br_test_tmpdir("web-browser-chromium");
  snprintf(w->log, sizeof w->log, "%s/chromedriver.log", w->dir);
  int port = free_port();
  int p[2];
  CHECK(pipe2(p, O_CLOEXEC) == 0);
  fflush(NULL);
  w->keeper = fork();
  CHECK(w->keeper >= 0);
  if (w->keeper == 0) {
    close(p[1]);
    keeper(w, p[0], port);
  }
  close(p[0]);
  w->hold = p[1];
  w->curl = curl_easy_init();
  CHECK(w->curl != NULL);
  snprintf(w->root, sizeof w->root, "http://127.0.0.1:%d", port);
  char url[256];
  snprintf(url, sizeof url, "%s/status", w->root);
  bool up = false;
  for (double end = farm_now() + 20; !up && farm_now() < end;) {
    long st;
    json_t *v = wd_request(w, "GET", url, NULL, &st);
    up = st == 200 && json_is_true(json_object_get(v, "ready"));
    json_decref(v);
    if (!up) usleep(50000);
  }
  if (!up) {
    char *log = br_test_slurp(w->log);
    br_test_fail(__FILE__, __LINE__, "chromedriver did not start on port %d: %.2000s", port,
                 log);
  }
  char profile[1100];
  snprintf(profile, sizeof profile, "--user-data-dir=%s/profile", w->dir);
  json_t *caps = json_pack(
      "{s{s{sss{ss}sss{s[sssssss]}}}}", "capabilities", "alwaysMatch", "browserName",
      "chrome", "goog:loggingPrefs", "browser", "ALL", "unhandledPromptBehavior", "ignore",
      "goog:chromeOptions", "args", "--headless=new", "--no-sandbox", "--disable-gpu",
      "--disable-dev-shm-usage", profile, "--window-size=1280,900", "--no-first-run");
  snprintf(url, sizeof url, "%s/session", w->root);
  long st;
  json_t *v = wd_request(w, "POST", url, caps, &st);
  const char *id = json_string_value(json_object_get(v, "sessionId"));
  if (st != 200 || !id) {
    char *log = br_test_slurp(w->log);
    br_test_fail(__FILE__, __LINE__, "no browser session (HTTP %ld): %.500s\n%.2000s", st,
                 wd_error(v), log);
  }
  snprintf(w->session, sizeof w->session, "%s/session/%s", w->root, id);
  json_decref(v);
}

/* Ends the session, then chromedriver and everything left of the browser:
 * none of its processes may remain. */
static void wd_stop(wd *w) {
  long st;
  json_decref(wd_request(w, "DELETE", w->session, NULL, &st));
  curl_easy_cleanup(w->curl);
  close(w->hold);
  CHECK_EQ_INT(farm_wait(w->keeper), 0);
  char profile[1100];
  snprintf(profile, sizeof profile, "%s/profile", w->dir);
  CHECK_EQ_INT(processes_naming(profile), 0);
  free(w->dir);
}

/* ---- the page ---- */

/* Runs a script in the page (arguments: a JSON array text, or NULL); its
 * result (a new reference). */
static json_t *js(wd *w, const char *script, const char *args) {
  json_error_t jerr;
  json_t *a = args ? json_loads(args, 0, &jerr) : json_array();
  CHECK(a != NULL);
  return cmd(w, "POST", "/execute/sync", json_pack("{ssso}", "script", script, "args", a));
}

/* A script's result as a string the caller frees ("" when not a string). */
static char *js_text(wd *w, const char *script, const char *args) {
  json_t *v = js(w, script, args);
  char *s = strdup(json_is_string(v) ? json_string_value(v) : "");
  json_decref(v);
  return s;
}

/* What the page shows: the flash and the start of main, for failures. */
static char *page_state(wd *w) {
  return js_text(w,
                 "const f = document.getElementById('flash');"
                 "return location.hash + ' | flash: ' + (f.hidden ? '' : f.textContent) +"
                 " ' | main: ' + document.getElementById('main').textContent.slice(0, 400);",
                 NULL);
}

/* Waits until script (a function body) returns true. */
#define UNTIL(w, script, args) until(w, script, args, __LINE__)
static void until(wd *w, const char *script, const char *args, int line) {
  double end = farm_now() + WAIT_S;
  for (;;) {
    json_t *v = js(w, script, args);
    bool ok = json_is_true(v);
    json_decref(v);
    if (ok) return;
    if (farm_now() > end) {
      char *state = page_state(w);
      br_test_fail(__FILE__, line, "waited %.0f s for: %s (args %s)\n  page: %s", WAIT_S,
                   script, args ? args : "none", state);
    }
    usleep(100000);
  }
}

/* The first element that matches css (its WebDriver id, freed by the
 * caller), waiting for it to exist. */
static char *find(wd *w, const char *css) {
  double end = farm_now() + WAIT_S;
  for (;;) {
    json_t *v = cmd(w, "POST", "/elements", json_pack("{ssss}", "using", "css selector",
                                                      "value", css));
    const char *id = json_string_value(json_object_get(json_array_get(v, 0), ELEMENT_KEY));
    char *out = id ? strdup(id) : NULL;
    json_decref(v);
    if (out) return out;
    if (farm_now() > end) {
      char *state = page_state(w);
      br_test_fail(__FILE__, __LINE__, "no element %s after %.0f s\n  page: %s", css, WAIT_S,
                   state);
    }
    usleep(100000);
  }
}

static void click(wd *w, const char *css) {
  char *id = find(w, css), path[256];
  snprintf(path, sizeof path, "/element/%s/click", id);
  wd_do(w, "POST", path, NULL);
  free(id);
}

/* Empties a field and types text into it, key by key. */
static void type(wd *w, const char *css, const char *text) {
  char *id = find(w, css), path[256];
  snprintf(path, sizeof path, "/element/%s/clear", id);
  wd_do(w, "POST", path, NULL);
  snprintf(path, sizeof path, "/element/%s/value", id);
  wd_do(w, "POST", path, json_pack("{ss}", "text", text));
  free(id);
}

static void go(wd *w, const char *where) {
  char url[512];
  snprintf(url, sizeof url, "%s/%s", w->f->url, where);
  wd_do(w, "POST", "/url", json_pack("{ss}", "url", url));
}

/* The browser's log since the last call: fails on any JavaScript error
 * (an uncaught exception or rejection, console.error). A refused request
 * (401 before the login, the 400 of a refused submission) is logged as a
 * network error, which the page expects and shows itself. */
static void no_js_errors(wd *w) {
  json_t *log = cmd(w, "POST", "/se/log", json_pack("{ss}", "type", "browser"));
  CHECK(json_is_array(log));
  size_t i;
  json_t *e;
  char bad[4096] = "";
  json_array_foreach(log, i, e) {
    const char *level = json_string_value(json_object_get(e, "level"));
    const char *source = json_string_value(json_object_get(e, "source"));
    const char *msg = json_string_value(json_object_get(e, "message"));
    if (!level || strcmp(level, "SEVERE") != 0 || (source && strcmp(source, "network") == 0))
      continue;
    size_t n = strlen(bad);
    snprintf(bad + n, sizeof bad - n, "\n  %s %s: %s", level, source ? source : "?",
             msg ? msg : "");
  }
  json_decref(log);
  if (*bad) br_test_fail(__FILE__, __LINE__, "the page logged JavaScript errors:%s", bad);
}

/* Saves what the window shows as dir/name (PNG), for a look when a check
 * of the layout fails (a passing test's folder is removed). */
static void screenshot(wd *w, const char *dir, const char *name) {
  json_t *v = cmd(w, "GET", "/screenshot", NULL);
  const char *b64 = json_string_value(v);
  CHECK(b64 != NULL);
  size_t n = strlen(b64), len = 0;
  unsigned char *png = malloc(n / 4 * 3 + 3);
  unsigned bits = 0;
  int have = 0;
  for (size_t i = 0; i < n; i++) {
    const char *digits = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const char *d = b64[i] ? strchr(digits, b64[i]) : NULL;
    if (!d) continue; /* '=' */
    bits = (bits << 6) | (unsigned)(d - digits);
    if ((have += 6) >= 8) {
      have -= 8;
      png[len++] = (unsigned char)(bits >> have);
    }
  }
  char path[1100];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *fp = fopen(path, "wb");
  CHECK(fp != NULL);
  CHECK(fwrite(png, 1, len, fp) == len);
  CHECK(fclose(fp) == 0);
  free(png);
  json_decref(v);
}

/* Opens the page and logs in with the user token, as a user would. */
/* Waits until the flash message is text, an error's (bad) or not. */
static void flash_says(wd *w, const char *text, bool bad) {
  json_t *args = json_pack("[sb]", text, bad);
  char *a = json_dumps(args, JSON_COMPACT);
  json_decref(args);
  UNTIL(w, "const f = document.getElementById('flash');"
           "return !f.hidden && f.classList.contains('bad') === arguments[1] &&"
           " f.textContent === arguments[0];",
        a);
  free(a);
}

/* Waits for the page's confirm() dialog, checks it says want, and
 * answers OK. */
static void accept_confirm(wd *w, const char *want) {
  json_t *alert = NULL;
  long st = 0;
  char url[512];
  snprintf(url, sizeof url, "%s/alert/text", w->session);
  for (double end = farm_now() + WAIT_S; farm_now() < end; usleep(50000)) {
    json_decref(alert);
    alert = wd_request(w, "GET", url, NULL, &st);
    if (st == 200) break;
  }
  CHECK_EQ_INT(st, 200);
  CHECK_CONTAINS(json_string_value(alert), want);
  json_decref(alert);
  wd_do(w, "POST", "/alert/accept", NULL);
}

/* Gives the page a token: the first (the page asks: its login form is
 * shown), or another one (through the Token button); a page without a
 * login form is loaded first. The page is not loaded again when its form
 * is shown: that would undo what a test set up in it (before, it was, and
 * the group test's hold on the event stream went with the reload: the
 * stream came up on its own a second later). */
static void log_in_as(wd *w, const char *token) {
  json_t *login = js(w, "const l = document.getElementById('login');"
                        " return l ? (l.hidden ? 'hidden' : 'shown') : 'none';", NULL);
  const char *at = json_string_value(login);
  if (at && strcmp(at, "hidden") == 0) click(w, "#token-button");
  else if (!at || strcmp(at, "shown") != 0) go(w, "");
  json_decref(login);
  UNTIL(w, "return !document.getElementById('login').hidden;", NULL);
  type(w, "#token-input", token);
  click(w, "#login-form button[type=submit]");
  UNTIL(w, "return document.getElementById('login').hidden;", NULL);
}

static void log_in(wd *w) { log_in_as(w, w->f->user); }

/* ---- the server's side ---- */

static const char GRAPH[] =
    "{\"name\": \"shots\", \"start\": {\"node\": \"start\", \"attrs\": {\"shot\": \"sh010\"}},"
    " \"nodes\": [{\"name\": \"start\", \"type\": \"null\"},"
    " {\"name\": \"render\", \"type\": \"command\", \"params\": {\"shell\": \"exit 0\"}}],"
    " \"wires\": [[\"start\", \"render\"]]}";

static void put_graph(farm *f) {
  json_error_t jerr;
  json_t *g = json_loads(GRAPH, 0, &jerr);
  CHECK(g != NULL);
  CHECK_EQ_INT(farm_call(f, f->user, "POST", "/api/v1/graphs", g, NULL), 201);
  json_decref(g);
}

static json_t *task_of(farm *f, int64_t id) {
  char path[128];
  snprintf(path, sizeof path, "/api/v1/tasks/%lld", (long long)id);
  json_t *t = NULL;
  CHECK_EQ_INT(farm_call(f, f->user, "GET", path, NULL, &t), 200);
  return t;
}

/* Waits for the task's field to be the integer want (or, want_text set,
 * that string). */
static void task_becomes(farm *f, int64_t id, const char *field, long long want,
                         const char *want_text) {
  json_t *t = NULL;
  for (double end = farm_now() + WAIT_S; farm_now() < end; usleep(50000)) {
    json_decref(t);
    t = task_of(f, id);
    json_t *v = json_object_get(t, field);
    if (want_text ? json_is_string(v) && strcmp(json_string_value(v), want_text) == 0
                  : json_is_integer(v) && json_integer_value(v) == want)
      break;
  }
  char *text = json_dumps(json_object_get(t, field), JSON_ENCODE_ANY);
  if (want_text) CHECK_EQ_STR(json_string_value(json_object_get(t, field)), want_text);
  else if (json_integer_value(json_object_get(t, field)) != want)
    br_test_fail(__FILE__, __LINE__, "task %lld: %s is %s, not %lld", (long long)id, field,
                 text, want);
  free(text);
  json_decref(t);
}

/* POSTs text as it is (a JSON body, its lines kept) to the server's path:
 * the status, and the answer's "error" in err (cap bytes; "" when none). */
static long post_text(wd *w, const char *path, const char *text, char *err, size_t cap) {
  char url[512], auth[300];
  snprintf(url, sizeof url, "%s%s", w->f->url, path);
  snprintf(auth, sizeof auth, "Authorization: Bearer %s", w->f->user);
  long st = 0;
  json_t *doc = http_json(w->curl, "POST", url, auth, text, &st);
  const char *e = json_string_value(json_object_get(doc, "error"));
  snprintf(err, cap, "%s", e ? e : "");
  json_decref(doc);
  return st;
}

/* The graph name's versions on the server (0: no such graph). */
static int versions_of(farm *f, const char *name) {
  char path[256];
  snprintf(path, sizeof path, "/api/v1/graphs/%s/versions", name);
  json_t *v = NULL;
  int st = farm_call(f, f->user, "GET", path, NULL, &v);
  int n = st == 200 ? (int)json_array_size(json_object_get(v, "versions")) : 0;
  if (st != 200 && st != 404) br_test_fail(__FILE__, __LINE__, "GET %s: HTTP %d", path, st);
  json_decref(v);
  return n;
}

/* ---- the tests ---- */

TEST(web_ui_logs_in_submits_sets_priority_and_cancels_in_a_browser) {
  double t0 = farm_now();
  farm F;
  farm_start(&F, "web-browser", "--poll-wait 1");
  put_graph(&F);
  wd W;
  wd_start(&W, &F);

  /* the login form takes the token, and the graph list appears */
  log_in(&W);
  UNTIL(&W, "return !!document.querySelector('main a[href=\"#/graph/shots\"]');", NULL);
  char *h1 = js_text(&W, "return document.querySelector('main h1').textContent;", NULL);
  CHECK_EQ_STR(h1, "Graphs");
  free(h1);
  no_js_errors(&W);

  /* a graph's page draws its diagram: a box per node, a wire between */
  click(&W, "main a[href=\"#/graph/shots\"]");
  UNTIL(&W, "return document.querySelectorAll('svg.diagram .node').length === 2;", NULL);
  char *names = js_text(&W,
                        "return [...document.querySelectorAll('svg.diagram text.name')]"
                        ".map((t) => t.textContent).sort().join(',');",
                        NULL);
  CHECK_EQ_STR(names, "render,start");
  free(names);
  UNTIL(&W, "return document.querySelectorAll('svg.diagram .wire path').length === 1;", NULL);
  UNTIL(&W, "const r = document.querySelector('svg.diagram').getBoundingClientRect();"
            "return r.width > 100 && r.height > 50;", NULL);
  /* its toolbar's button leads to the form, which starts from the graph's
   * start attributes */
  click(&W, "main .toolbar button");
  UNTIL(&W, "return document.activeElement === document.getElementById('submit-attrs');", NULL);
  char *start = js_text(&W, "return document.getElementById('submit-attrs').value;", NULL);
  CHECK_CONTAINS(start, "\"shot\": \"sh010\"");
  free(start);

  /* attributes that are not JSON: the browser's message beside the field,
   * with its position, and nothing sent */
  type(&W, "#submit-attrs", "{\"shot\": \"sh020\",}");
  click(&W, "#submit-form button[type=submit]");
  UNTIL(&W, "return document.getElementById('submit-attrs-error').textContent"
            ".startsWith('Not JSON: ');", NULL);
  char *err = js_text(&W, "return document.getElementById('submit-attrs-error').textContent;",
                      NULL);
  char *want = js_text(&W, "try { JSON.parse(arguments[0]); } catch (e) { return e.message; }",
                       "[\"{\\\"shot\\\": \\\"sh020\\\",}\"]");
  CHECK_CONTAINS(want, "position 17"); /* where the browser says it went wrong */
  CHECK(strcmp(err + strlen("Not JSON: "), want) == 0);
  free(want);
  free(err);
  json_t *caret = js(&W, "return document.getElementById('submit-attrs').selectionStart;", NULL);
  CHECK_EQ_INT(json_integer_value(caret), 17); /* the cursor is put there */
  json_decref(caret);
  char *invalid = js_text(&W, "return document.getElementById('submit-attrs')"
                              ".getAttribute('aria-invalid');", NULL);
  CHECK_EQ_STR(invalid, "true");
  free(invalid);
  /* JSON, but not an object */
  type(&W, "#submit-attrs", "[\"sh020\"]");
  UNTIL(&W, "return document.getElementById('submit-attrs-error').textContent === '';", NULL);
  click(&W, "#submit-form button[type=submit]");
  UNTIL(&W, "return document.getElementById('submit-attrs-error').textContent"
            ".includes('must be a JSON object');", NULL);
  usleep(500000); /* a request sent anyway would be in by now */
  CHECK_EQ_INT(farm_count(&F, NULL), 0);

  /* the server's refusal (a priority past 32 bits) is the flash message,
   * with the words the API gives */
  json_t *refused = NULL;
  json_t *big = json_pack("{sssI}", "graph", "shots", "priority", (json_int_t)99999999999);
  CHECK_EQ_INT(farm_call(&F, F.user, "POST", "/api/v1/submissions", big, &refused), 400);
  json_decref(big);
  const char *said = json_string_value(json_object_get(refused, "error"));
  CHECK(said && *said);
  char flashed[512];
  snprintf(flashed, sizeof flashed, "submission refused: %s", said);
  json_decref(refused);
  type(&W, "#submit-attrs", "{\"shot\": \"sh020\"}");
  type(&W, "#submit-priority", "99999999999");
  click(&W, "#submit-form button[type=submit]");
  flash_says(&W, flashed, true);
  CHECK_EQ_INT(farm_count(&F, NULL), 0);

  /* a good submission: the task it made, linked */
  type(&W, "#submit-attrs", "{\"shot\": \"sh020\",\n\"frames\": [1, 24]}");
  type(&W, "#submit-name", "from-the-browser");
  type(&W, "#submit-priority", "5");
  click(&W, "#submit-form button[type=submit]");
  UNTIL(&W, "return !!document.querySelector('#submitted a[href^=\"#/task/\"]');", NULL);
  char *made = js_text(&W, "return document.querySelector('#submitted a').textContent;", NULL);
  long long id = 0;
  CHECK(sscanf(made, "task %lld", &id) == 1 && id > 0);
  free(made);
  CHECK_EQ_INT(farm_count(&F, NULL), 1);
  json_t *t = task_of(&F, id);
  CHECK_EQ_STR(json_string_value(json_object_get(t, "name")), "from-the-browser");
  CHECK_EQ_INT(json_integer_value(json_object_get(t, "priority")), 5);
  json_t *attrs = json_object_get(t, "attrs");
  CHECK_EQ_STR(json_string_value(json_object_get(attrs, "shot")), "sh020");
  CHECK_EQ_INT(json_integer_value(json_array_get(json_object_get(attrs, "frames"), 1)), 24);
  json_decref(t);
  no_js_errors(&W);

  /* the Tasks view lists it; one submitted elsewhere comes by the event
   * stream, with no reload */
  click(&W, "#nav-tasks");
  char arg[64];
  snprintf(arg, sizeof arg, "[%lld]", id);
  UNTIL(&W, "return !!document.querySelector('main table a[href=\"#/task/' + arguments[0] +"
            " '\"]');", arg);
  UNTIL(&W, "return document.getElementById('live').textContent === 'live';", NULL);
  json_t *body = json_pack("{sssss{ss}}", "graph", "shots", "name", "from-the-api", "attrs",
                           "shot", "sh030");
  json_t *out = NULL;
  CHECK_EQ_INT(farm_call(&F, F.user, "POST", "/api/v1/submissions", body, &out), 201);
  json_decref(body);
  snprintf(arg, sizeof arg, "[%lld]", (long long)json_integer_value(json_object_get(out, "task")));
  json_decref(out);
  UNTIL(&W, "return !!document.querySelector('main table a[href=\"#/task/' + arguments[0] +"
            " '\"]');", arg);

  /* its priority, set in its view */
  snprintf(arg, sizeof arg, "#/task/%lld", id);
  char css[128];
  snprintf(css, sizeof css, "main table a[href=\"%s\"]", arg);
  click(&W, css);
  UNTIL(&W, "return document.getElementById('priority-input') !== null &&"
            " document.getElementById('priority-input').value === '5';", NULL);
  type(&W, "#priority-input", "1.5");
  click(&W, "#priority-form button[type=submit]");
  UNTIL(&W, "return document.getElementById('priority-error').textContent"
            ".startsWith('a whole number');", NULL);
  type(&W, "#priority-input", "42");
  click(&W, "#priority-form button[type=submit]");
  task_becomes(&F, id, "priority", 42, NULL);
  UNTIL(&W, "return document.querySelector('main h1').textContent.startsWith('Task ') &&"
            " document.getElementById('priority-input').value === '42' &&"
            " document.getElementById('priority-error').textContent === '';", NULL);

  /* cancel, through its button and the confirm() dialog */
  click(&W, "main .toolbar button.danger");
  char asked[64];
  snprintf(asked, sizeof asked, "Cancel task %lld?", id);
  accept_confirm(&W, asked);
  task_becomes(&F, id, "state", 0, "cancelled");
  UNTIL(&W, "return !!document.querySelector('main .kv .state.st-cancelled');", NULL);
  no_js_errors(&W);

  wd_stop(&W);
  farm_stop(&F);
  printf("  (%.1f s)\n", farm_now() - t0);
}

/* The Tasks view of one group (a submission) acts on it as a whole, as
 * `braid pause|resume|cancel|retry --group` do: pause, resume, cancel
 * (after a confirm()) and retry, each saying how many tasks it changed;
 * another submission is left be. Before, the web UI had no group action:
 * a submission was cancelled one task page at a time. */
TEST(web_ui_acts_on_a_whole_submission) {
  farm F;
  farm_start(&F, "web-group", "--poll-wait 1");
  put_graph(&F);
  int64_t gid = 0;
  for (int i = 0; i < 3; i++) {
    json_t *body = json_pack("{ssss}", "graph", "shots", "group", i < 2 ? "shotA" : "shotB");
    json_t *out = NULL;
    CHECK_EQ_INT(farm_call(&F, F.user, "POST", "/api/v1/submissions", body, &out), 201);
    if (!gid) gid = json_integer_value(json_object_get(out, "group"));
    json_decref(out);
    json_decref(body);
  }
  char q[128];
  snprintf(q, sizeof q, "group=%lld&node=render", (long long)gid);
  CHECK(farm_wait_count(&F, q, 2)); /* at the command node, where they wait for an agent */
  wd W;
  wd_start(&W, &F);
  /* the event stream is held back until the page has drawn the group: what
   * changes before it connects is sent to nobody, so the page draws its
   * view again once it is connected (before, it went on showing what it
   * had drawn until some later event) */
  go(&W, "");
  UNTIL(&W, "return !document.getElementById('login').hidden;", NULL);
  json_decref(js(&W, "const f0 = window.fetch; window.fetch = async (u, o) => {"
                     " if (String(u).startsWith('/api/v1/events'))"
                     " while (!window.eventsGo) await new Promise((r) => setTimeout(r, 50));"
                     " return f0(u, o); };", NULL));
  log_in(&W);
  json_t *held = js(&W, "return String(window.fetch).includes('eventsGo');", NULL);
  CHECK(json_is_true(held)); /* the login kept the page, and the hold with it */
  json_decref(held);
  char where[64], text[256];
  snprintf(where, sizeof where, "#/tasks?group=%lld", (long long)gid);
  go(&W, where);
  UNTIL(&W, "return document.querySelectorAll('main table tbody tr').length === 2 &&"
            " !!document.getElementById('group-actions');", NULL);
  snprintf(q, sizeof q, "/api/v1/tasks?group=%lld&limit=1", (long long)gid);
  json_t *got = NULL;
  CHECK_EQ_INT(farm_call(&F, F.user, "GET", q, NULL, &got), 200);
  json_int_t first = json_integer_value(json_object_get(json_array_get(json_object_get(got,
                                        "tasks"), 0), "id"));
  json_decref(got);
  snprintf(q, sizeof q, "/api/v1/tasks/%lld/priority", (long long)first);
  json_t *prio = json_pack("{si}", "priority", 5);
  CHECK_EQ_INT(farm_call(&F, F.user, "PUT", q, prio, NULL), 200);
  json_decref(prio);
  usleep(300000);
  json_t *stale = js(&W, "return document.getElementById('live').textContent === 'offline' &&"
                         " ![...document.querySelectorAll('main table tbody tr td.num')]"
                         ".some((td) => td.textContent === '5');", NULL);
  CHECK(json_is_true(stale));
  json_decref(stale);
  json_decref(js(&W, "window.eventsGo = true;", NULL));
  UNTIL(&W, "return document.getElementById('live').textContent === 'live' &&"
            " [...document.querySelectorAll('main table tbody tr td.num')]"
            ".some((td) => td.textContent === '5');", NULL);
  /* called by the name it was given */
  snprintf(text, sizeof text, "return document.getElementById('group-actions')"
           ".textContent.startsWith('Group shotA (%lld):');", (long long)gid);
  UNTIL(&W, text, NULL);
  /* a redraw (here on a task's event) puts what it draws into the elements
   * already there: a button found before it is the one after it, so a click
   * that lands as the page is drawn again is not lost on a button taken
   * away (before, every redraw made main anew and such a click failed:
   * "stale element reference") */
  char *pause = find(&W, "#group-actions button:nth-of-type(2)");
  json_decref(js(&W, "document.querySelector('main table tbody tr').mark = 1;"
                     " document.getElementById('group-actions').mark = 1;", NULL));
  prio = json_pack("{si}", "priority", 7);
  CHECK_EQ_INT(farm_call(&F, F.user, "PUT", q, prio, NULL), 200);
  json_decref(prio);
  UNTIL(&W, "return [...document.querySelectorAll('main table tbody tr td.num')]"
            ".some((td) => td.textContent === '7');", NULL);
  json_t *kept = js(&W, "return document.querySelector('main table tbody tr').mark === 1 &&"
                       " document.getElementById('group-actions').mark === 1;", NULL);
  CHECK(json_is_true(kept));
  json_decref(kept);
  char path[256];
  snprintf(path, sizeof path, "/element/%s/click", pause);
  wd_do(&W, "POST", path, NULL); /* Pause, found before the redraw */
  free(pause);
  snprintf(text, sizeof text, "group shotA (%lld): pause, 2 tasks", (long long)gid);
  flash_says(&W, text, false);
  UNTIL(&W, "return [...document.querySelectorAll('main table tbody tr')]"
            ".every((r) => r.textContent.includes('paused'));", NULL);
  click(&W, "#group-actions button:nth-of-type(3)"); /* Resume */
  snprintf(text, sizeof text, "group shotA (%lld): resume, 2 tasks", (long long)gid);
  flash_says(&W, text, false);
  click(&W, "#group-actions button.danger");
  snprintf(text, sizeof text, "Cancel every unfinished task of group shotA (%lld)?",
           (long long)gid);
  accept_confirm(&W, text);
  snprintf(text, sizeof text, "group shotA (%lld): cancel, 2 tasks", (long long)gid);
  flash_says(&W, text, false);
  snprintf(q, sizeof q, "group=%lld&state=cancelled", (long long)gid);
  CHECK(farm_wait_count(&F, q, 2));
  CHECK(farm_wait_count(&F, "state=cancelled", 2)); /* shotB's task is not */
  UNTIL(&W, "return document.querySelectorAll('main table .st-cancelled').length === 2;", NULL);
  click(&W, "#group-actions button:nth-of-type(1)"); /* Retry */
  snprintf(text, sizeof text, "group shotA (%lld): retry, 2 tasks", (long long)gid);
  flash_says(&W, text, false);
  CHECK(farm_wait_count(&F, "state=cancelled", 0));
  /* a task's page names its group too */
  json_t *out = NULL;
  snprintf(q, sizeof q, "/api/v1/tasks?group=%lld&limit=1", (long long)gid);
  CHECK_EQ_INT(farm_call(&F, F.user, "GET", q, NULL, &out), 200);
  json_int_t tid = json_integer_value(json_object_get(json_array_get(json_object_get(out,
                                      "tasks"), 0), "id"));
  json_decref(out);
  snprintf(where, sizeof where, "#/task/%lld", (long long)tid);
  go(&W, where);
  snprintf(text, sizeof text, "return [...document.querySelectorAll('main a')]"
           ".some((a) => a.textContent === 'shotA (%lld)' &&"
           " a.getAttribute('href') === '#/tasks?group=%lld');", (long long)gid, (long long)gid);
  UNTIL(&W, text, NULL);
  no_js_errors(&W);
  wd_stop(&W);
  farm_stop(&F);
}

/* A farm limit's maximum, as the server has it (-1: no such limit). */
static json_int_t limit_max(farm *f, const char *name) {
  json_t *out = NULL;
  CHECK_EQ_INT(farm_call(f, f->user, "GET", "/api/v1/limits", NULL, &out), 200);
  json_t *l = json_object_get(json_object_get(out, "limits"), name);
  json_int_t m = l ? json_integer_value(json_object_get(l, "max")) : -1;
  json_decref(out);
  return m;
}

/* The Workers page sets and removes a farm limit, and the Tokens page
 * makes and revokes tokens, with an admin token; a user token is told it
 * may not, and a bad limit is named before anything is sent. Before, the
 * web UI only showed limits, and tokens were made on the server. */
TEST(web_ui_sets_limits_and_manages_tokens) {
  farm F;
  farm_start(&F, "web-admin", "--poll-wait 1");
  wd W;
  wd_start(&W, &F);
  log_in(&W);
  go(&W, "#/tokens");
  UNTIL(&W, "return !!document.getElementById('tokens-admin-only');", NULL);
  go(&W, "#/workers");
  type(&W, "#limit-name", "houdini");
  type(&W, "#limit-max", "3");
  click(&W, "#limit-form button[type=submit]");
  flash_says(&W, "limit houdini: setting limits needs an admin token", true);
  CHECK_EQ_INT(limit_max(&F, "houdini"), -1);

  log_in_as(&W, F.admin);
  go(&W, "#/workers");
  type(&W, "#limit-name", "bad name");
  click(&W, "#limit-form button[type=submit]");
  UNTIL(&W, "return document.getElementById('limit-error').textContent ==="
            " 'a name of letters, digits, - _ . :';", NULL);
  type(&W, "#limit-name", "houdini");
  type(&W, "#limit-max", "3");
  click(&W, "#limit-form button[type=submit]");
  flash_says(&W, "limit houdini: at most 3", false);
  CHECK_EQ_INT(limit_max(&F, "houdini"), 3);
  UNTIL(&W, "return [...document.querySelectorAll('main table tbody tr')]"
            ".some((r) => r.textContent === 'houdini03');", NULL);
  /* a row fills the form in; Remove takes the limit away */
  click(&W, "main table tbody tr");
  UNTIL(&W, "return document.getElementById('limit-name').value === 'houdini' &&"
            " document.getElementById('limit-max').value === '3';", NULL);
  click(&W, "#limit-form button.danger");
  flash_says(&W, "limit houdini removed", false);
  CHECK_EQ_INT(limit_max(&F, "houdini"), -1);

  go(&W, "#/tokens");
  type(&W, "#new-token-name", "artist-7");
  click(&W, "#token-form button[type=submit]");
  UNTIL(&W, "return (document.getElementById('new-token-text') || {}).textContent > '';", NULL);
  char *tok = js_text(&W, "return document.getElementById('new-token-text').textContent;", NULL);
  CHECK_EQ_INT(farm_call(&F, tok, "GET", "/api/v1/tasks", NULL, NULL), 200);
  char *id = js_text(&W, "return [...document.querySelectorAll('main table tbody tr')]"
                         ".find((r) => r.children[2].textContent === 'artist-7')"
                         ".children[0].textContent;", NULL);
  CHECK(strlen(id) > 0);
  json_decref(js(&W, "[...document.querySelectorAll('main table tbody tr')]"
                     ".find((r) => r.children[2].textContent === 'artist-7')"
                     ".querySelector('button').click(); return true;", NULL));
  char text[256];
  snprintf(text, sizeof text, "Revoke token %s (artist-7)? What uses it is refused from now on.",
           id);
  accept_confirm(&W, text);
  snprintf(text, sizeof text, "token %s revoked", id);
  flash_says(&W, text, false);
  CHECK_EQ_INT(farm_call(&F, tok, "GET", "/api/v1/tasks", NULL, NULL), 401);
  UNTIL(&W, "return ![...document.querySelectorAll('main table tbody tr')]"
            ".some((r) => r.children[2].textContent === 'artist-7');", NULL);
  free(tok);
  free(id);
  no_js_errors(&W);
  wd_stop(&W);
  farm_stop(&F);
}

/* The graphs page's Upload form: a graph file read into its text field and
 * uploaded (the server has it, the page lists and links it), text that is
 * not JSON (the browser's message and position, nothing sent), a graph the
 * server refuses (its own words with their line and column, nothing made),
 * a new version of the first graph, the same text again (no new version),
 * and a graph page's Edit (its text in the form, changed and uploaded). */
TEST(web_ui_uploads_graphs_in_a_browser) {
  farm F;
  farm_start(&F, "web-upload", "--poll-wait 1");
  wd W;
  wd_start(&W, &F);
  log_in(&W);
  UNTIL(&W, "return document.querySelector('main h1') !== null &&"
            " !!document.getElementById('upload-form');", NULL);

  /* a file, chosen in the file field: its text comes into the form */
  static const char V1[] =
      "{\"name\": \"uploaded\", \"start\": {\"node\": \"start\"},\n"
      " \"nodes\": [{\"name\": \"start\", \"type\": \"null\"},\n"
      "  {\"name\": \"render\", \"type\": \"command\", \"params\": {\"shell\": \"exit 0\"}}],\n"
      " \"wires\": [[\"start\", \"render\"]]}\n";
  br_test_put(F.dir, "uploaded.json", V1);
  char file[1100];
  snprintf(file, sizeof file, "%s/uploaded.json", F.dir);
  char *id = find(&W, "#upload-file"), path[256];
  snprintf(path, sizeof path, "/element/%s/value", id);
  wd_do(&W, "POST", path, json_pack("{ss}", "text", file));
  free(id);
  json_t *args = json_pack("[s]", V1);
  char *v1 = json_dumps(args, JSON_COMPACT);
  json_decref(args);
  UNTIL(&W, "return document.getElementById('upload-text').value === arguments[0];", v1);
  free(v1);
  CHECK_EQ_INT(versions_of(&F, "uploaded"), 0);
  click(&W, "#upload-form button[type=submit]");
  UNTIL(&W, "return !!document.querySelector('#uploaded a[href=\"#/graph/uploaded?version=1\"]');",
        NULL);
  char *said = js_text(&W, "return document.querySelector('#uploaded li').textContent;", NULL);
  CHECK_CONTAINS(said, "uploaded version 1");
  free(said);
  CHECK_EQ_INT(versions_of(&F, "uploaded"), 1);
  json_t *g = NULL;
  CHECK_EQ_INT(farm_call(&F, F.user, "GET", "/api/v1/graphs/uploaded", NULL, &g), 200);
  CHECK_EQ_INT(json_array_size(json_object_get(json_object_get(g, "graph"), "nodes")), 2);
  json_decref(g);
  /* the list above the form has it, with no reload */
  UNTIL(&W, "const a = document.querySelector('main table a[href=\"#/graph/uploaded\"]');"
            "return !!a && a.closest('tr').children[1].textContent === '1';", NULL);
  no_js_errors(&W);

  /* text that is not JSON: the browser's message with its position, the
   * cursor there, and nothing sent */
  type(&W, "#upload-text", "{\"name\": \"broken\",}");
  click(&W, "#upload-form button[type=submit]");
  UNTIL(&W, "return document.getElementById('upload-error').textContent"
            ".startsWith('Not JSON: ');", NULL);
  char *err = js_text(&W, "return document.getElementById('upload-error').textContent;", NULL);
  char *want = js_text(&W, "try { JSON.parse(arguments[0]); } catch (e) { return e.message; }",
                       "[\"{\\\"name\\\": \\\"broken\\\",}\"]");
  CHECK_CONTAINS(want, "position 18");
  CHECK(strcmp(err + strlen("Not JSON: "), want) == 0);
  free(want);
  free(err);
  json_t *caret = js(&W, "return document.getElementById('upload-text').selectionStart;", NULL);
  CHECK_EQ_INT(json_integer_value(caret), 18);
  json_decref(caret);
  usleep(500000); /* a request sent anyway would be in by now */
  CHECK_EQ_INT(versions_of(&F, "broken"), 0);

  /* a graph the server refuses: its message as it comes (the same words
   * the API gives for the same text, with line and column), the cursor at
   * that line and column, and no graph made */
  static const char BAD[] =
      "{\"name\": \"broken\",\n"
      " \"nodes\": [{\"name\": \"a\", \"type\": \"null\"},\n"
      "  {\"name\": \"b\", \"type\": \"nope\"}]}";
  char refused[2048];
  CHECK_EQ_INT(post_text(&W, "/api/v1/graphs", BAD, refused, sizeof refused), 400);
  CHECK_CONTAINS(refused, "graph:3:");
  CHECK_CONTAINS(refused, "'nope'");
  CHECK_EQ_INT(versions_of(&F, "broken"), 0);
  type(&W, "#upload-text", BAD);
  UNTIL(&W, "return document.getElementById('upload-error').textContent === '';", NULL);
  click(&W, "#upload-form button[type=submit]");
  args = json_pack("[s]", refused);
  char *words = json_dumps(args, JSON_COMPACT);
  json_decref(args);
  UNTIL(&W, "return document.getElementById('upload-error').textContent === arguments[0];",
        words);
  free(words);
  char *wrap = js_text(&W, "return getComputedStyle(document.getElementById('upload-error'))"
                           ".whiteSpace;", NULL);
  CHECK_EQ_STR(wrap, "pre-wrap"); /* its line breaks, if any, are kept */
  free(wrap);
  int line = 0, column = 0;
  CHECK(sscanf(refused, "graph:%d:%d:", &line, &column) == 2 && line == 3);
  const char *at = BAD;
  for (int i = 1; i < line; i++) at = strchr(at, '\n') + 1;
  caret = js(&W, "return document.getElementById('upload-text').selectionStart;", NULL);
  CHECK_EQ_INT(json_integer_value(caret), (at - BAD) + column - 1);
  json_decref(caret);
  CHECK_EQ_INT(versions_of(&F, "broken"), 0);
  json_t *n = js(&W, "return document.querySelectorAll('#uploaded li').length;", NULL);
  CHECK_EQ_INT(json_integer_value(n), 1); /* only the first upload */
  json_decref(n);

  /* a new version of the first graph, pasted: version 2, listed and linked */
  static const char V2[] =
      "{\"name\": \"uploaded\", \"start\": {\"node\": \"start\"},\n"
      " \"nodes\": [{\"name\": \"start\", \"type\": \"null\"},\n"
      "  {\"name\": \"render\", \"type\": \"command\", \"params\": {\"shell\": \"exit 0\"}},\n"
      "  {\"name\": \"comp\", \"type\": \"null\"}],\n"
      " \"wires\": [[\"start\", \"render\"], [\"render\", \"comp\"]]}\n";
  type(&W, "#upload-text", V2);
  click(&W, "#upload-form button[type=submit]");
  UNTIL(&W, "return !!document.querySelector('#uploaded a[href=\"#/graph/uploaded?version=2\"]');",
        NULL);
  CHECK_EQ_INT(versions_of(&F, "uploaded"), 2);
  UNTIL(&W, "const a = document.querySelector('main table a[href=\"#/graph/uploaded\"]');"
            "const r = a && a.closest('tr').children;"
            "return !!r && r[1].textContent === '2' && r[2].textContent === '2';", NULL);
  err = js_text(&W, "return document.getElementById('upload-error').textContent;", NULL);
  CHECK_EQ_STR(err, "");
  free(err);

  /* the same text again: the server keeps version 2, and the page says so */
  click(&W, "#upload-form button[type=submit]");
  UNTIL(&W, "return document.querySelectorAll('#uploaded li').length === 3;", NULL);
  said = js_text(&W, "return document.querySelector('#uploaded li').textContent;", NULL);
  CHECK_CONTAINS(said, "uploaded version 2");
  CHECK_CONTAINS(said, "unchanged");
  free(said);
  CHECK_EQ_INT(versions_of(&F, "uploaded"), 2);

  /* its link opens version 2's page: three boxes */
  click(&W, "#uploaded a[href=\"#/graph/uploaded?version=2\"]");
  UNTIL(&W, "return document.querySelectorAll('svg.diagram .node').length === 3;", NULL);

  /* its Edit: the graph's text in the upload form, changed there and
   * uploaded as version 3 */
  click(&W, "#edit-graph");
  UNTIL(&W, "const t = document.getElementById('upload-text');"
            "return !!t && t.value.includes('\"exit 0\"') &&"
            " JSON.parse(t.value).name === 'uploaded' &&"
            " document.activeElement === t;", NULL);
  said = js_text(&W, "return document.querySelector('#upload-form .muted').textContent;", NULL);
  CHECK_EQ_STR(said, "version 2 of uploaded: change it and Upload, for a new version");
  free(said);
  json_decref(js(&W, "const t = document.getElementById('upload-text');"
                     "t.value = t.value.replace('\"exit 0\"', '\"exit 3\"');"
                     "t.dispatchEvent(new Event('input')); return true;", NULL));
  click(&W, "#upload-form button[type=submit]");
  UNTIL(&W, "return !!document.querySelector('#uploaded a[href=\"#/graph/uploaded?version=3\"]');",
        NULL);
  CHECK_EQ_INT(versions_of(&F, "uploaded"), 3);
  CHECK_EQ_INT(farm_call(&F, F.user, "GET", "/api/v1/graphs/uploaded", NULL, &g), 200);
  json_t *shell = json_object_get(json_object_get(json_array_get(json_object_get(
      json_object_get(g, "graph"), "nodes"), 1), "params"), "shell");
  CHECK_EQ_STR(json_string_value(shell), "exit 3");
  json_decref(g);
  no_js_errors(&W);
  wd_stop(&W);
  farm_stop(&F);
}

/* Checks that the page at hash (drawn when the script ready returns true)
 * fits a window width wide: the page does not scroll sideways, no element of
 * box (a CSS selector, or NULL) is wider inside than it shows, and every
 * element of parts (a JSON array of selectors) shows, within the window.
 * A screenshot is kept as dir/NAME-WIDTH.png for a look when this fails. */
static void check_fits(wd *w, const char *dir, const char *name, int width, const char *hash,
                       const char *ready, const char *box, const char *parts) {
  go(w, hash);
  UNTIL(w, ready, NULL);
  char args[1024], shot[128];
  snprintf(args, sizeof args, "[%s, \"%s\"]", parts, box ? box : "");
  json_t *m = js(w,
                 "const [parts, box] = arguments, de = document.documentElement;"
                 "const boxes = box ? [...document.querySelectorAll(box)] : [];"
                 "return { view: de.clientWidth, scroll: de.scrollWidth,"
                 " boxes: boxes.map((b) => [b.scrollWidth, b.clientWidth]),"
                 " parts: parts.map((s) => { const e = document.querySelector(s);"
                 " const b = e ? e.getBoundingClientRect() : {};"
                 " return [s, b.left, b.right, b.width, b.height]; }) };",
                 args);
  snprintf(shot, sizeof shot, "%s-%d.png", name, width);
  screenshot(w, dir, shot);
  char *text = json_dumps(m, JSON_COMPACT);
  int view = (int)json_integer_value(json_object_get(m, "view"));
  if (view < width - 40 || view > width) /* less a scroll bar, if any */
    br_test_fail(__FILE__, __LINE__, "the window is not %d wide: %s", width, text);
  if (json_integer_value(json_object_get(m, "scroll")) > view)
    br_test_fail(__FILE__, __LINE__, "%s scrolls sideways at %d: %s", hash, width, text);
  size_t k;
  json_t *p;
  json_array_foreach(json_object_get(m, "boxes"), k, p) {
    if (json_integer_value(json_array_get(p, 0)) > json_integer_value(json_array_get(p, 1)))
      br_test_fail(__FILE__, __LINE__, "%s of %s overflows at %d: %s", box, hash, width, text);
  }
  if (box && !json_array_size(json_object_get(m, "boxes")))
    br_test_fail(__FILE__, __LINE__, "no %s in %s", box, hash);
  json_array_foreach(json_object_get(m, "parts"), k, p) {
    double left = json_number_value(json_array_get(p, 1));
    double right = json_number_value(json_array_get(p, 2));
    double wide = json_number_value(json_array_get(p, 3));
    double high = json_number_value(json_array_get(p, 4));
    if (left < 0 || right > view + 0.5 || wide < 1 || high < 1)
      br_test_fail(__FILE__, __LINE__, "%s of %s is not within the window at %d: %s",
                   json_string_value(json_array_get(p, 0)), hash, width, text);
  }
  free(text);
  json_decref(m);
}

/* The header and the task table within the window, narrow and wide, with
 * nothing to scroll sideways; and the graphs page, a graph's page, a
 * task's page, the workers and the tokens do not scroll sideways either,
 * their forms in sight. */
TEST(web_ui_layout_fits_a_narrow_and_a_wide_window) {
  farm F;
  farm_start(&F, "web-layout", "--poll-wait 1");
  put_graph(&F);
  int64_t first = 0, gid = 0;
  for (int i = 0; i < 3; i++) {
    json_t *body = json_pack("{sssssss{ss}}", "graph", "shots", "name",
                             "sh010-lighting-comp-wedge-variant-long-name", "group",
                             "a-long-group-name-for-the-layout", "attrs", "shot", "sh010");
    json_t *out = NULL;
    CHECK_EQ_INT(farm_call(&F, F.user, "POST", "/api/v1/submissions", body, &out), 201);
    if (!first) first = json_integer_value(json_object_get(out, "task"));
    if (!gid) gid = json_integer_value(json_object_get(out, "group"));
    json_decref(out);
    json_decref(body);
  }
  json_t *lim = json_pack("{si}", "max", 12);
  CHECK_EQ_INT(farm_call(&F, F.admin, "PUT", "/api/v1/limits/houdini-licences", lim, NULL), 200);
  json_decref(lim);
  wd W;
  wd_start(&W, &F);
  log_in(&W);
  char task[64], group[64];
  snprintf(task, sizeof task, "#/task/%lld", (long long)first);
  snprintf(group, sizeof group, "#/tasks?group=%lld", (long long)gid);
  static const int widths[] = {600, 1280};
  for (size_t i = 0; i < 2; i++) {
    wd_do(&W, "POST", "/window/rect", json_pack("{sisi}", "width", widths[i], "height", 900));
    check_fits(&W, F.dir, "tasks", widths[i], "#/tasks",
               "return document.querySelectorAll('main table tbody tr').length === 3;",
               "main .table-box",
               "[\"header\", \"header .brand\", \"#nav-tasks\", \"#live\", \"#token-button\","
               " \"main table\", \"main table tbody tr:last-child td:last-child\"]");
    check_fits(&W, F.dir, "group", widths[i], group,
               "return document.querySelectorAll('main table tbody tr').length === 3 &&"
               " !!document.getElementById('group-actions');",
               "main .table-box",
               "[\"header\", \"#group-actions\", \"#group-actions button.danger\","
               " \"main table\"]");
    check_fits(&W, F.dir, "graphs", widths[i], "#/",
               "return document.querySelectorAll('main table tbody tr').length === 1 &&"
               " !!document.getElementById('upload-form');",
               "main .table-box",
               "[\"header\", \"main h1\", \"#upload-file\", \"#upload-text\","
               " \"#upload-form button[type=submit]\"]");
    check_fits(&W, F.dir, "graph", widths[i], "#/graph/shots",
               "return document.querySelectorAll('svg.diagram .node').length === 2 &&"
               " !!document.getElementById('submit-form');",
               NULL,
               "[\"header\", \"#token-button\", \"main h1\", \"#edit-graph\", \"#submit-attrs\","
               " \"#submit-form button[type=submit]\"]");
    check_fits(&W, F.dir, "task", widths[i], task,
               "return !!document.getElementById('priority-form');", NULL,
               "[\"header\", \"#token-button\", \"#priority-input\","
               " \"#priority-form button\", \"main .toolbar button.danger\"]");
    check_fits(&W, F.dir, "workers", widths[i], "#/workers",
               "return document.querySelectorAll('main table tbody tr').length === 1 &&"
               " !!document.getElementById('limit-form');",
               "main .table-box",
               "[\"header\", \"#limit-name\", \"#limit-max\", \"#limit-form button.danger\"]");
  }
  /* the tokens an admin sees, with the form that makes one */
  log_in_as(&W, F.admin);
  for (size_t i = 0; i < 2; i++) {
    wd_do(&W, "POST", "/window/rect", json_pack("{sisi}", "width", widths[i], "height", 900));
    check_fits(&W, F.dir, "tokens", widths[i], "#/tokens",
               "return document.querySelectorAll('main table tbody tr').length >= 2 &&"
               " !!document.getElementById('token-form');",
               "main .table-box",
               "[\"header\", \"#nav-tokens\", \"main table tbody tr td:last-child button\","
               " \"#new-token-role\", \"#new-token-name\", \"#token-form button\"]");
  }
  no_js_errors(&W);
  wd_stop(&W);
  farm_stop(&F);
}
