/* bench-farm: one braid server against N simulated agents on loopback (1,000
 * by default). Each simulated agent registers, long-polls for one job at a
 * time and finishes it at once: its result rides on its next poll. So the
 * numbers are the server's: HTTP, scheduling, the engine and its commits.
 *
 *   bench-farm [--agents N] [--tasks N] [--rate R] [--seconds S] [--braid PATH]
 *
 * Two phases:
 * 1. throughput: one submission of --tasks jobs (default 30,000), more than
 *    the agents can take at once; dispatches per second from the first to
 *    the last job handed out.
 * 2. latency: submissions arrive at --rate jobs per second (default 2,000,
 *    in submissions of 50) for --seconds (default 5) while agents wait idle;
 *    the latency from a job being ready (queued on the server) to an agent
 *    holding it, median and p99.
 * For each phase: the server's CPU time (user + system, and per dispatch)
 * and its resident memory (now and peak).
 * Targets on the 2-core reference machine: >= 5,000 dispatches/s, p99 < 20 ms
 * with 1,000 agents. The simulated agents run in this process (one thread,
 * libcurl multi) on the same machine, so they compete with the server. */
#include <curl/curl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct sim {
  int i;
  char id[32], session[64];
  CURL *easy;
  struct curl_slist *hdrs;
  char *req;
  char *resp;
  size_t n, cap;
  int kind; /* 0 register, 1 poll, 2 submission */
  json_t *events;
  long long seq;
  int busy;
} sim;

static char url[256], agent_tok[128], admin_tok[128];
static CURLM *multi;
static long long dispatched, want;
static double first_ms, last_ms;
static double *lat;
static size_t nlat, caplat;
static int measuring_latency;

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static size_t on_write(char *d, size_t size, size_t n, void *ud) {
  sim *s = ud;
  size_t len = size * n;
  if (s->n + len + 1 > s->cap) {
    s->cap = (s->n + len + 1) * 2;
    s->resp = realloc(s->resp, s->cap);
  }
  memcpy(s->resp + s->n, d, len);
  s->n += len;
  s->resp[s->n] = 0;
  return len;
}

static void start(sim *s, const char *path, json_t *body /* stolen */) {
  char u[512];
  snprintf(u, sizeof u, "%s%s", url, path);
  free(s->req);
  s->req = json_dumps(body, JSON_COMPACT);
  json_decref(body);
  s->n = 0;
  curl_easy_setopt(s->easy, CURLOPT_URL, u);
  curl_easy_setopt(s->easy, CURLOPT_POSTFIELDS, s->req);
  curl_easy_setopt(s->easy, CURLOPT_POSTFIELDSIZE, (long)strlen(s->req));
  curl_multi_add_handle(multi, s->easy);
  s->busy = 1;
}

static void sim_init(sim *s, int i, const char *token) {
  memset(s, 0, sizeof *s);
  s->i = i;
  snprintf(s->id, sizeof s->id, "sim%04d", i);
  s->easy = curl_easy_init();
  char auth[256];
  snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
  s->hdrs = curl_slist_append(NULL, auth);
  s->hdrs = curl_slist_append(s->hdrs, "Content-Type: application/json");
  s->hdrs = curl_slist_append(s->hdrs, "Expect:");
  curl_easy_setopt(s->easy, CURLOPT_HTTPHEADER, s->hdrs);
  curl_easy_setopt(s->easy, CURLOPT_WRITEFUNCTION, on_write);
  curl_easy_setopt(s->easy, CURLOPT_WRITEDATA, s);
  curl_easy_setopt(s->easy, CURLOPT_PRIVATE, s);
  curl_easy_setopt(s->easy, CURLOPT_TCP_NODELAY, 1L);
  curl_easy_setopt(s->easy, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(s->easy, CURLOPT_TIMEOUT, 60L);
  s->events = json_array();
}

static void poll_again(sim *s) {
  char path[128];
  snprintf(path, sizeof path, "/api/v1/agents/%s/poll", s->id);
  json_t *ev = s->events;
  s->events = json_array();
  start(s, path, json_pack("{sss{si}siso}", "session", s->session, "free", "slots", 1, "wait_ms", 10000,
                           "events", ev));
}

static void done(sim *s, long status) {
  json_t *a = s->n ? json_loads(s->resp, 0, NULL) : NULL;
  if (s->kind == 2) {
    if (status != 201) fprintf(stderr, "bench-farm: submission: HTTP %ld %s\n", status, s->resp ? s->resp : "");
    json_decref(a);
    return;
  }
  if (status != 200) {
    fprintf(stderr, "bench-farm: %s: HTTP %ld %s\n", s->id, status, s->n ? s->resp : "");
    exit(1);
  }
  if (s->kind == 0) {
    snprintf(s->session, sizeof s->session, "%s", json_string_value(json_object_get(a, "session")));
    s->kind = 1;
  } else {
    double t = now_ms();
    size_t i;
    json_t *w;
    json_array_foreach(json_object_get(a, "work"), i, w) {
      dispatched++;
      if (!first_ms) first_ms = t;
      last_ms = t;
      if (measuring_latency) {
        if (nlat == caplat) {
          caplat = caplat ? caplat * 2 : 65536;
          lat = realloc(lat, caplat * sizeof *lat);
        }
        lat[nlat++] = t - (double)json_integer_value(json_object_get(w, "ready_ms"));
      }
      json_array_append_new(s->events, json_pack("{sIsIsIsssssisf}", "seq", ++s->seq, "inv",
                                                 json_integer_value(json_object_get(w, "id")), "task",
                                                 json_integer_value(json_object_get(w, "task")), "type",
                                                 "done", "status", "ok", "exit_code", 0, "runtime", 0.0));
    }
  }
  json_decref(a);
  poll_again(s);
}

static void pump(int timeout_ms) {
  int running;
  curl_multi_poll(multi, NULL, 0, timeout_ms, NULL);
  curl_multi_perform(multi, &running);
  CURLMsg *m;
  int left;
  while ((m = curl_multi_info_read(multi, &left))) {
    if (m->msg != CURLMSG_DONE) continue;
    sim *s;
    curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&s);
    long status = 0;
    curl_easy_getinfo(m->easy_handle, CURLINFO_RESPONSE_CODE, &status);
    curl_multi_remove_handle(multi, m->easy_handle);
    s->busy = 0;
    if (m->data.result != CURLE_OK) {
      fprintf(stderr, "bench-farm: %s: %s\n", s->id, curl_easy_strerror(m->data.result));
      exit(1);
    }
    done(s, status);
  }
}

static char *slurp_line(const char *path) {
  static char buf[512];
  FILE *f = fopen(path, "r");
  buf[0] = 0;
  if (f) {
    if (!fgets(buf, sizeof buf, f)) buf[0] = 0;
    fclose(f);
  }
  size_t n = strlen(buf);
  while (n && (buf[n - 1] == '\n' || buf[n - 1] == ' ')) buf[--n] = 0;
  return buf;
}

typedef struct proc {
  double cpu_s;
  long rss_kb, hwm_kb;
} proc;

static proc proc_of(pid_t pid) {
  proc p = {0};
  char path[64], buf[4096];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  FILE *f = fopen(path, "r");
  if (f) {
    if (fgets(buf, sizeof buf, f)) {
      char *c = strrchr(buf, ')');
      unsigned long ut = 0, st = 0;
      if (c && sscanf(c + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) == 2)
        p.cpu_s = (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
    }
    fclose(f);
  }
  snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
  f = fopen(path, "r");
  while (f && fgets(buf, sizeof buf, f)) {
    sscanf(buf, "VmRSS: %ld", &p.rss_kb);
    sscanf(buf, "VmHWM: %ld", &p.hwm_kb);
  }
  if (f) fclose(f);
  return p;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static json_t *jobs_graph(const char *name, int count) {
  char text[1024];
  snprintf(text, sizeof text,
           "{\"name\":\"%s\",\"start\":{\"node\":\"start\",\"attrs\":{}},\"nodes\":["
           "{\"name\":\"start\",\"type\":\"spawn\",\"params\":{\"count\":%d}},"
           "{\"name\":\"job\",\"type\":\"command\",\"params\":{\"argv\":[\"true\"]}}],"
           "\"wires\":[[\"start.children\",\"job\"]]}",
           name, count);
  return json_loads(text, 0, NULL);
}

static void submit(sim *s, int count, const char *name) {
  s->kind = 2;
  start(s, "/api/v1/submissions", json_pack("{so}", "graph", jobs_graph(name, count)));
}

int main(int argc, char **argv) {
  int agents = 1000, tasks = 30000, rate = 2000, seconds = 5;
  const char *braid = NULL;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--agents") == 0 && i + 1 < argc) agents = atoi(argv[++i]);
    else if (strcmp(argv[i], "--tasks") == 0 && i + 1 < argc) tasks = atoi(argv[++i]);
    else if (strcmp(argv[i], "--rate") == 0 && i + 1 < argc) rate = atoi(argv[++i]);
    else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) seconds = atoi(argv[++i]);
    else if (strcmp(argv[i], "--braid") == 0 && i + 1 < argc) braid = argv[++i];
    else {
      fprintf(stderr, "usage: bench-farm [--agents N] [--tasks N] [--rate JOBS_PER_S] [--seconds S] "
                      "[--braid PATH]\n");
      return strcmp(argv[i], "--help") == 0 ? 0 : 2;
    }
  }
  if (agents < 1 || tasks < 1 || rate < 50 || seconds < 1) {
    fprintf(stderr, "bench-farm: --agents, --tasks >= 1, --rate >= 50, --seconds >= 1\n");
    return 2;
  }
  char exe[4096];
  if (!braid) { /* the braid beside this binary */
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[n > 0 ? n : 0] = 0;
    char *slash = strrchr(exe, '/');
    if (slash) snprintf(slash + 1, sizeof exe - (size_t)(slash + 1 - exe), "braid");
    braid = exe;
  }
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = rl.rlim_max; /* a connection per agent, here and in the server */
  setrlimit(RLIMIT_NOFILE, &rl);
  if ((long)rl.rlim_cur < agents * 2 + 100) {
    fprintf(stderr, "bench-farm: %d agents need %d open files; the limit is %ld\n", agents,
            agents * 2 + 100, (long)rl.rlim_cur);
    return 1;
  }
  signal(SIGPIPE, SIG_IGN);
  char dir[] = "/tmp/bench-farm-XXXXXX";
  if (!mkdtemp(dir)) return 1;
  char cmd[8192];
  pid_t server = fork();
  if (server == 0) {
    if (chdir(dir) != 0) _exit(99);
    execl(braid, braid, "server", "--init", "--listen", "127.0.0.1:0", "--url-file", "url",
          "--quiet", "--poll-wait", "10", "--lost-after", "60", (char *)NULL);
    _exit(98);
  }
  char path[4200];
  snprintf(path, sizeof path, "%s/url", dir);
  for (int i = 0; i < 1000 && access(path, R_OK) != 0; i++) usleep(10000);
  snprintf(url, sizeof url, "%s", slurp_line(path));
  snprintf(path, sizeof path, "%s/farm.braid.admin-token", dir);
  snprintf(admin_tok, sizeof admin_tok, "%s", slurp_line(path));
  snprintf(cmd, sizeof cmd, "'%s' token create --role agent --store '%s/farm.braid.db' > '%s/agent.tok' 2>/dev/null",
           braid, dir, dir);
  if (!*url || system(cmd) != 0) {
    fprintf(stderr, "bench-farm: the server did not start (%s)\n", braid);
    kill(server, SIGKILL);
    return 1;
  }
  snprintf(path, sizeof path, "%s/agent.tok", dir);
  snprintf(agent_tok, sizeof agent_tok, "%s", slurp_line(path));
  curl_global_init(CURL_GLOBAL_DEFAULT);
  multi = curl_multi_init();
  curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, (long)(agents * 2 + 16));
  sim *sims = calloc((size_t)agents, sizeof *sims);
  for (int i = 0; i < agents; i++) {
    sim_init(&sims[i], i, agent_tok);
    start(&sims[i], "/api/v1/agents/register",
          json_pack("{sssisi}", "id", sims[i].id, "cores", 1, "slots", 1));
  }
  sim sub;
  sim_init(&sub, -1, admin_tok);
  snprintf(sub.id, sizeof sub.id, "submitter");
  double t0 = now_ms();
  int ready = 0;
  while (ready < agents) { /* every agent polls */
    pump(100);
    ready = 0;
    for (int i = 0; i < agents; i++) ready += sims[i].kind == 1 && sims[i].busy;
    if (now_ms() - t0 > 60000) {
      fprintf(stderr, "bench-farm: only %d of %d agents registered\n", ready, agents);
      return 1;
    }
  }
  printf("bench-farm: %d simulated agents registered in %.2f s (server %s)\n", agents,
         (now_ms() - t0) / 1000, url);

  /* phase 1: throughput with a backlog */
  proc p0 = proc_of(server);
  want = tasks;
  dispatched = 0;
  first_ms = last_ms = 0;
  submit(&sub, tasks, "bench-backlog");
  double tsub = now_ms();
  while (dispatched < want) {
    pump(100);
    if (now_ms() - tsub > 300000) {
      fprintf(stderr, "bench-farm: only %lld of %lld dispatched\n", dispatched, want);
      break;
    }
  }
  for (int k = 0; k < 20; k++) pump(10); /* the last results go back */
  proc p1 = proc_of(server);
  double span = (last_ms - first_ms) / 1000;
  printf("throughput: %lld jobs through %d agents: %.0f dispatches/s (first to last dispatch %.2f s; "
         "%.2f s from the submission)\n",
         dispatched, agents, span > 0 ? (double)dispatched / span : 0, span, (last_ms - tsub) / 1000);
  printf("  server CPU %.2f s (%.0f us per dispatch), memory %.1f MB now, %.1f MB peak\n",
         p1.cpu_s - p0.cpu_s, dispatched ? (p1.cpu_s - p0.cpu_s) * 1e6 / (double)dispatched : 0,
         (double)p1.rss_kb / 1024, (double)p1.hwm_kb / 1024);

  /* phase 2: latency with agents waiting */
  measuring_latency = 1;
  dispatched = 0;
  int batch = 50, nsub = rate * seconds / batch;
  double every = 1000.0 * batch / rate;
  proc p2 = proc_of(server);
  double start_ms = now_ms();
  int sent = 0;
  sim *subs = calloc((size_t)nsub, sizeof *subs);
  while (sent < nsub || dispatched < (long long)nsub * batch) {
    double t = now_ms();
    while (sent < nsub && t >= start_ms + sent * every) {
      sim_init(&subs[sent], -1, admin_tok);
      snprintf(subs[sent].id, sizeof subs[sent].id, "submitter");
      char name[32];
      snprintf(name, sizeof name, "bench-wave");
      submit(&subs[sent], batch, name);
      sent++;
    }
    pump(2);
    if (t - start_ms > (seconds + 60) * 1000.0) {
      fprintf(stderr, "bench-farm: only %lld of %d dispatched\n", dispatched, nsub * batch);
      break;
    }
  }
  double took = (now_ms() - start_ms) / 1000;
  for (int k = 0; k < 20; k++) pump(10);
  proc p3 = proc_of(server);
  qsort(lat, nlat, sizeof *lat, cmp);
  double med = nlat ? lat[nlat / 2] : 0, p99 = nlat ? lat[(size_t)((double)nlat * 0.99)] : 0,
         mx = nlat ? lat[nlat - 1] : 0;
  printf("latency: %zu jobs at %d/s for %d s (%.2f s): ready -> held by an agent: median %.2f ms, "
         "p99 %.2f ms, max %.2f ms\n",
         nlat, rate, seconds, took, med, p99, mx);
  printf("  server CPU %.2f s (%.0f%% of one core), memory %.1f MB now, %.1f MB peak\n", p3.cpu_s - p2.cpu_s,
         100 * (p3.cpu_s - p2.cpu_s) / took, (double)p3.rss_kb / 1024, (double)p3.hwm_kb / 1024);
  printf("targets: >= 5000 dispatches/s: %s; p99 < 20 ms: %s\n",
         span > 0 && (double)tasks / span >= 5000 ? "met" : "NOT met", p99 < 20 ? "met" : "NOT met");
  kill(server, SIGTERM);
  waitpid(server, NULL, 0);
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) fprintf(stderr, "bench-farm: could not remove %s\n", dir);
  for (int i = 0; i < agents; i++) {
    curl_easy_cleanup(sims[i].easy);
    curl_slist_free_all(sims[i].hdrs);
    free(sims[i].req);
    free(sims[i].resp);
    json_decref(sims[i].events);
  }
  free(sims);
  free(lat);
  curl_multi_cleanup(multi);
  return 0;
}
