/* Helpers for the farm tests: a real `braid server` and real `braid agent`
 * processes on loopback, tokens, and JSON calls. */
#ifndef BR_TEST_FARM_UTIL_H
#define BR_TEST_FARM_UTIL_H

#include "fs.h"

#include <braid/http.h>
#include <braid/store.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

static inline const char *farm_bin(void) {
  const char *b = getenv("BRAID_BIN");
  return b ? b : "braid";
}

static inline const char *farm_src(void) {
  const char *s = getenv("BRAID_SOURCE_DIR");
  return s ? s : "..";
}

static inline double farm_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Runs `sh -c cmd` in dir with output appended to dir/log; returns the pid. */
static inline pid_t farm_spawn(const char *dir, const char *log, const char *cmd) {
  pid_t pid = fork();
  if (pid == 0) {
    if (chdir(dir) != 0) _exit(99);
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    int null = open("/dev/null", O_RDONLY);
    dup2(null, 0);
    dup2(fd, 1);
    dup2(fd, 2);
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* a failed test leaves nothing running */
    execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
    _exit(98);
  }
  return pid;
}

static inline int farm_wait(pid_t pid) {
  int st;
  if (waitpid(pid, &st, 0) != pid) return -1;
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static inline char *farm_capture(const char *cmd) {
  FILE *p = popen(cmd, "r");
  char *buf = calloc(1, 65536);
  size_t n = p ? fread(buf, 1, 65535, p) : 0;
  buf[n] = 0;
  if (p) pclose(p);
  while (n && (buf[n - 1] == '\n' || buf[n - 1] == ' ')) buf[--n] = 0;
  return buf;
}

typedef struct farm {
  char *dir;
  char url[128];
  char *admin, *user, *agent;
  pid_t server;
  char server_args[1024];
  pid_t agents[8];
  int nagents;
} farm;

/* Starts a server in a fresh directory (store dir/farm.braid.db, made
 * the first time: --init), or again on its store. */
static inline void farm_server_start(farm *f) {
  char cmd[4096], path[1024];
  snprintf(path, sizeof path, "%s/url", f->dir);
  unlink(path);
  snprintf(cmd, sizeof cmd,
           "exec '%s' server --init --listen 127.0.0.1:0 --url-file url --store farm.braid.db %s",
           farm_bin(), f->server_args);
  f->server = farm_spawn(f->dir, "server.log", cmd);
  for (int i = 0; i < 1000; i++) {
    if (access(path, R_OK) == 0) break;
    usleep(10000);
  }
  char *u = br_test_slurp(path);
  size_t n = strlen(u);
  while (n && u[n - 1] == '\n') u[--n] = 0;
  CHECK(n > 0);
  snprintf(f->url, sizeof f->url, "%s", u);
  free(u);
}

static inline char *farm_token(farm *f, const char *role) {
  char cmd[2048];
  snprintf(cmd, sizeof cmd, "'%s' token create --role %s --store '%s/farm.braid.db' 2>/dev/null",
           farm_bin(), role, f->dir);
  return farm_capture(cmd);
}

static inline void farm_start(farm *f, const char *name, const char *server_args) {
  memset(f, 0, sizeof *f);
  f->dir = br_test_tmpdir(name);
  snprintf(f->server_args, sizeof f->server_args, "%s", server_args ? server_args : "");
  farm_server_start(f);
  char path[1024];
  snprintf(path, sizeof path, "%s/farm.braid.admin-token", f->dir);
  f->admin = br_test_slurp(path);
  size_t n = strlen(f->admin);
  while (n && f->admin[n - 1] == '\n') f->admin[--n] = 0;
  f->user = farm_token(f, "user");
  f->agent = farm_token(f, "agent");
  CHECK(strlen(f->admin) > 10 && strlen(f->user) > 10 && strlen(f->agent) > 10);
}

/* Starts `braid agent --id ID ARGS` with its work dir under the farm's. */
/* `braid agent --id ID` with its own work dir and log (NAME), a token and
 * a server of its own choosing (NULL: the farm's). */
static inline pid_t farm_agent_as(farm *f, const char *id, const char *name, const char *token,
                                  const char *url, const char *args) {
  char cmd[4096], log[256];
  snprintf(cmd, sizeof cmd,
           "exec env BRAID_SERVER='%s' BRAID_TOKEN='%s' '%s' agent --id %s "
           "--work-dir '%s/agent-%s' %s",
           url ? url : f->url, token ? token : f->agent, farm_bin(), id, f->dir, name,
           args ? args : "");
  snprintf(log, sizeof log, "agent-%s.log", name);
  pid_t p = farm_spawn(f->dir, log, cmd);
  if (f->nagents < 8) f->agents[f->nagents++] = p;
  return p;
}

static inline pid_t farm_agent(farm *f, const char *id, const char *args) {
  return farm_agent_as(f, id, id, NULL, NULL, args);
}

static inline void farm_stop(farm *f) {
  for (int i = 0; i < f->nagents; i++)
    if (f->agents[i] > 0) {
      kill(f->agents[i], SIGTERM);
      farm_wait(f->agents[i]);
    }
  if (f->server > 0) {
    kill(f->server, SIGTERM);
    CHECK_EQ_INT(farm_wait(f->server), 0);
  }
  free(f->admin);
  free(f->user);
  free(f->agent);
  free(f->dir);
}

/* A JSON call; returns the status, *out gets the answer (may be NULL). */
static inline int farm_call(farm *f, const char *token, const char *method, const char *path,
                            json_t *body, json_t **out) {
  br_http_client *c;
  br_error err;
  CHECK(br_http_client_open(f->url, token, &c, &err) == BR_OK);
  int st = br_http_client_call(c, method, path, body, out, &err);
  br_http_client_close(c);
  return st;
}

/* A test's reader of the event stream, in a thread of its own: what came,
 * until every string of until has, or the stream's time runs out (or, with
 * none, its end: farm_events_take reads a job's log so too). */
typedef struct farm_events {
  char buf[1 << 16];
  size_t n;
  const char *until[4]; /* NULL ends it */
  atomic_bool up;       /* the server's first line came: what happens now is sent */
  farm *f;
  char path[256];
  double timeout;
  pthread_t th;
} farm_events;

static inline int farm_events_take(void *ud, const char *d, size_t len) {
  farm_events *e = ud;
  if (e->n + len < sizeof e->buf) {
    memcpy(e->buf + e->n, d, len);
    e->n += len;
    e->buf[e->n] = 0;
  }
  if (strstr(e->buf, ": braid events\n")) atomic_store(&e->up, true);
  if (!e->until[0]) return 0; /* to the stream's end */
  for (int i = 0; i < 4 && e->until[i]; i++)
    if (!strstr(e->buf, e->until[i])) return 0;
  return 1;
}

static inline void *farm_events_main(void *ud) {
  farm_events *e = ud;
  br_http_client *c;
  br_error err;
  if (br_http_client_open(e->f->url, e->f->user, &c, &err)) return NULL;
  br_http_client_set_timeout(c, e->timeout);
  br_http_client_get_stream(c, e->path, farm_events_take, e, &err);
  br_http_client_close(c);
  return NULL;
}

/* Reads f's stream at path (with its query) for timeout seconds at most,
 * until each of the strings after timeout (three at most, NULL after the
 * last) is read;
 * returns once the server has taken it in: what happens from then on
 * comes in it. (Before, tests slept 0.3 s for that, and on a loaded
 * machine the first event went to nobody.) farm_events_end waits for it. */
static inline void farm_events_start(farm_events *e, farm *f, const char *path, double timeout,
                                     ...) {
  memset(e, 0, sizeof *e);
  e->f = f;
  snprintf(e->path, sizeof e->path, "%s", path);
  e->timeout = timeout;
  va_list ap;
  va_start(ap, timeout);
  int i = 0;
  while (i < 3 && (e->until[i] = va_arg(ap, const char *))) i++;
  if (i == 3) CHECK(va_arg(ap, const char *) == NULL); /* until[3] stays NULL */
  va_end(ap);
  CHECK(pthread_create(&e->th, NULL, farm_events_main, e) == 0);
  for (double end = farm_now() + 15; farm_now() < end && !atomic_load(&e->up);) usleep(20000);
  CHECK(atomic_load(&e->up));
}

static inline void farm_events_end(farm_events *e) { pthread_join(e->th, NULL); }

/* The graph file at rel (relative to the source tree), read. */
static inline json_t *farm_graph(const char *rel) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", farm_src(), rel);
  json_error_t jerr;
  json_t *g = json_load_file(path, 0, &jerr);
  CHECK(g != NULL);
  return g;
}

/* Submits graph file path (relative to the source tree) with extra attrs. */
static inline int64_t farm_submit(farm *f, const char *graph, json_t *attrs, int priority,
                                  const char *group) {
  json_t *g = farm_graph(graph);
  json_t *body = json_pack("{sosiso}", "graph", g, "priority", priority, "attrs",
                           attrs ? attrs : json_object());
  if (group) json_object_set_new(body, "group", json_string(group));
  json_t *out = NULL;
  int st = farm_call(f, f->user, "POST", "/api/v1/submissions", body, &out);
  json_decref(body);
  CHECK_EQ_INT(st, 201);
  int64_t id = json_integer_value(json_object_get(out, "task"));
  json_decref(out);
  return id;
}

/* Counts of tasks by state, read from the store (read-only). */
static inline void farm_counts(farm *f, int64_t counts[BR_TASK_NSTATES]) {
  char path[1024];
  snprintf(path, sizeof path, "%s/farm.braid.db", f->dir);
  br_store *s;
  br_error err;
  memset(counts, 0, sizeof(int64_t) * BR_TASK_NSTATES);
  if (br_store_open(path, BR_STORE_READONLY, &s, &err) != BR_OK) return;
  br_task_filter fl = BR_TASK_FILTER_ALL;
  br_store_task_count(s, &fl, counts, &err);
  br_store_close(s);
}

/* The tasks GET /api/v1/tasks?QUERY lists (query NULL: all; at most
 * 1000). */
static inline int64_t farm_count(farm *f, const char *query) {
  char path[1024];
  snprintf(path, sizeof path, "/api/v1/tasks?limit=1000%s%s", query ? "&" : "",
           query ? query : "");
  json_t *out = NULL;
  CHECK_EQ_INT(farm_call(f, f->user, "GET", path, NULL, &out), 200);
  int64_t n = (int64_t)json_array_size(json_object_get(out, "tasks"));
  json_decref(out);
  return n;
}

/* Waits (15 s at most) until farm_count(f, query) is want. */
static inline bool farm_wait_count(farm *f, const char *query, int64_t want) {
  for (int i = 0; i < 300; i++) {
    if (farm_count(f, query) == want) return true;
    usleep(50000);
  }
  return false;
}

/* Waits until no task is waiting, queued, running or in post (or timeout). */
static inline bool farm_settle(farm *f, double timeout) {
  double end = farm_now() + timeout;
  while (farm_now() < end) {
    int64_t c[BR_TASK_NSTATES];
    farm_counts(f, c);
    int64_t total = 0;
    for (int i = 0; i < BR_TASK_NSTATES; i++) total += c[i];
    if (total && !c[BR_TASK_WAITING] && !c[BR_TASK_QUEUED] && !c[BR_TASK_RUNNING] &&
        !c[BR_TASK_POST] && !c[BR_TASK_BLOCKED])
      return true;
    usleep(100000);
  }
  return false;
}


/* A graph: a "start" task spawns count children (attribute index 0..N-1)
 * that run the command node "job" with these params (JSON text). */
static inline json_t *farm_jobs_graph(const char *name, int count, const char *job_params) {
  char text[8192];
  snprintf(text, sizeof text,
           "{\"name\":\"%s\",\"start\":{\"node\":\"start\",\"attrs\":{}},"
           "\"nodes\":[{\"name\":\"start\",\"type\":\"spawn\",\"params\":{\"count\":%d}},"
           "{\"name\":\"job\",\"type\":\"command\",\"params\":%s}],"
           "\"wires\":[[\"start.children\",\"job\"]]}",
           name, count, job_params);
  json_error_t jerr;
  json_t *g = json_loads(text, 0, &jerr);
  if (!g) br_test_fail(__FILE__, __LINE__, "test graph: %s", jerr.text);
  return g;
}

/* Submits a graph object (stolen) with attributes (stolen, may be NULL). */
static inline int64_t farm_submit_graph(farm *f, json_t *g, json_t *attrs, int priority,
                                        const char *group) {
  json_t *body = json_pack("{sosiso}", "graph", g, "priority", priority, "attrs",
                           attrs ? attrs : json_object());
  if (group) json_object_set_new(body, "group", json_string(group));
  json_t *out = NULL;
  int st = farm_call(f, f->user, "POST", "/api/v1/submissions", body, &out);
  json_decref(body);
  if (st != 201) br_test_fail(__FILE__, __LINE__, "submission: HTTP %d", st);
  int64_t id = json_integer_value(json_object_get(out, "task"));
  json_decref(out);
  return id;
}

/* Job records: each job of the test graphs writes "WORKER START_NS END_NS"
 * into DIR/KIND-INDEX.rec. */
typedef struct farm_rec {
  char worker[64];
  long long start, end;
  int index;
} farm_rec;

static inline int farm_recs(const char *dir, const char *kind, farm_rec *out, int max) {
  int n = 0;
  for (int i = 0; i < 1000 && n < max; i++) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s-%d.rec", dir, kind, i);
    FILE *fp = fopen(path, "r");
    if (!fp) continue;
    if (fscanf(fp, "%63s %lld %lld", out[n].worker, &out[n].start, &out[n].end) == 3) {
      out[n].index = i;
      n++;
    }
    fclose(fp);
  }
  return n;
}

/* The most records whose [start, end] overlap at one moment. */
static inline int farm_max_overlap(const farm_rec *r, int n) {
  int best = 0;
  for (int i = 0; i < n; i++) {
    int c = 0;
    for (int k = 0; k < n; k++)
      if (r[k].start <= r[i].start && r[k].end > r[i].start) c++;
    if (c > best) best = c;
  }
  return best;
}

/* The overlap of r's intervals, printed with the intervals (and the
 * invocations' counts, see farm_invocations) when it passes max: a failed
 * overlap check then tells what ran when. */
static inline int farm_overlap_at_most(const farm_rec *r, int n, int max, const char *kind) {
  int o = farm_max_overlap(r, n);
  if (o > max) {
    fprintf(stderr, "%s: %d at once (at most %d wanted); worker, start, end (ns, wall clock):\n",
            kind, o, max);
    for (int i = 0; i < n; i++)
      fprintf(stderr, "  %s-%d %s %lld %lld\n", kind, r[i].index, r[i].worker, r[i].start,
              r[i].end);
  }
  return o;
}

/* The shell of a test job: records itself, sleeps. */
#define FARM_REC_SHELL(kind, secs)                                                          \
  "s=$(date +%s%N); sleep " secs "; echo \\\"$BRAID_WORKER $s $(date +%s%N)\\\" > {out}/" kind \
  "-{index}.rec"

typedef struct farm_invs {
  int total, ok, lost, failed, running;
  int dup_ok; /* a (task, node) with two ok invocations */
  char workers[512];
} farm_invs;

/* Counts invocations by status (all tasks); dup_ok: tasks with two ok. */
static inline farm_invs farm_invocations(farm *f) {
  farm_invs c;
  memset(&c, 0, sizeof c);
  char path[1024];
  snprintf(path, sizeof path, "%s/farm.braid.db", f->dir);
  char cmd[2048];
  snprintf(cmd, sizeof cmd,
           "sqlite3 '%s' \"select count(*), sum(status='ok'), sum(status='lost'), "
           "sum(status in ('failed','retry','timeout','spawn_error')), sum(status='running') from invocations; "
           "select count(*) from (select task_id, node from invocations where status='ok' "
           "group by task_id, node having count(*) > 1); "
           "select group_concat(w) from (select distinct worker w from invocations order by w)\"",
           path);
  char *out = farm_capture(cmd);
  sscanf(out, "%d|%d|%d|%d|%d\n%d", &c.total, &c.ok, &c.lost, &c.failed, &c.running, &c.dup_ok);
  char *last = strrchr(out, '\n');
  snprintf(c.workers, sizeof c.workers, "%s", last ? last + 1 : "");
  free(out);
  return c;
}

#endif
