/* The farm server (see include/braid/server.h): the engine in serve mode,
 * the agent executor, and the HTTP API over them.
 *
 * Which thread does what:
 * - Reads (graphs, task lists, task details, logs) run on the HTTP threads
 *   with read-only store connections from a small pool: queries never wait
 *   for the engine. The web UI's files (web/, built in) need no token.
 * - Changes (uploads, submissions, task operations, worker settings, the
 *   agents' endpoints, metrics) are handed to the engine thread with
 *   br_engine_post and answered after the engine's next commit
 *   (br_engine_on_commit), so a client that reads right after a change sees
 *   it. The request waits suspended meanwhile.
 * - The engine's commit observer and the executor's news feed the event
 *   stream (server-sent events): each event goes to every subscriber's
 *   buffer, and the last few thousand are kept so a client that reconnects
 *   with Last-Event-ID misses nothing recent.
 * - Shutdown: a read-write lock guards the hand-over; once closing is set
 *   nothing more is posted, and work already posted sees `dead` and answers
 *   503 without touching the engine. */
#include <braid/farm.h>
#include <braid/http.h>
#include <braid/runtime.h>
#include <braid/server.h>
#include <braid/store.h>
#include <braid/xfer.h>

#include "http/web.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define RING 4096
#define LOG_CHUNK (1 << 20)
#define TIMER_MS 250

typedef struct sub {
  br_http_stream *stream;
  struct sub *next;
} sub;

typedef struct logwait {
  br_http_req *rq;
  int64_t task_id, inv_id, offset, deadline_ms;
  char *path;
  struct logwait *next;
} logwait;

struct br_server {
  br_depot *depot; /* mounted under /v1/ when the server keeps one */
  br_store *store;
  br_engine *e;
  br_executor *ex;
  br_auth *auth;
  br_http_server *http;
  char *store_uri, *settings_file;
  json_t *settings; /* engine thread */
  json_t *cli_limits;
  pthread_rwlock_t life;
  bool closing;
  atomic_bool dead;
  int64_t started_ms;
  /* read-only stores */
  pthread_mutex_t pool_mu;
  br_store **pool;
  size_t npool;
  /* events */
  pthread_mutex_t ev_mu;
  sub *subs;
  atomic_int nsubs;
  atomic_llong last_sub_ms; /* when a subscriber was last there */
  /* event ids: this life's start above every earlier life's (from the
   * clock, in ms * 1024), so a client back from before a restart is known */
  uint64_t ev_seq, ev_base;
  char *ring[RING];
  uint64_t ring_seq[RING];
  /* log followers */
  pthread_mutex_t lw_mu;
  logwait *waiters;
  atomic_int nwaiters;
  uv_timer_t timer;
  int64_t last_ping_ms;
};

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- read-only stores ---- */

static br_store *ro_take(br_server *s, br_error *err) {
  pthread_mutex_lock(&s->pool_mu);
  br_store *st = s->npool ? s->pool[--s->npool] : NULL;
  pthread_mutex_unlock(&s->pool_mu);
  if (st) return st;
  if (br_store_open(s->store_uri, BR_STORE_READONLY, &st, err) != BR_OK) return NULL;
  return st;
}

static void ro_give(br_server *s, br_store *st) {
  if (!st) return;
  if (br_store_lost(st)) {
    /* the database restarted: the others in the pool are from before it
     * too; the next read connects again (this one failed: 500) */
    br_store_close(st);
    pthread_mutex_lock(&s->pool_mu);
    size_t n = s->npool;
    br_store **old = s->pool;
    s->pool = NULL;
    s->npool = 0;
    pthread_mutex_unlock(&s->pool_mu);
    for (size_t i = 0; i < n; i++) br_store_close(old[i]);
    free(old);
    return;
  }
  pthread_mutex_lock(&s->pool_mu);
  br_store **grown = realloc(s->pool, (s->npool + 1) * sizeof *s->pool);
  if (grown) {
    s->pool = grown;
    s->pool[s->npool++] = st;
    st = NULL;
  }
  pthread_mutex_unlock(&s->pool_mu);
  if (st) br_store_close(st);
}

/* ---- handing over to the engine thread ---- */

typedef struct op op;
typedef void (*op_fn)(br_server *s, op *o);

struct op {
  br_server *s;
  br_http_req *rq;
  op_fn fn;
  int64_t id;
  json_t *body;
  char *name;
  br_graph *graph;
  unsigned status;  /* the answer, sent after the commit */
  json_t *answer;
};

static void op_free(op *o) {
  json_decref(o->body);
  json_decref(o->answer);
  free(o->name);
  if (o->graph) br_graph_free(o->graph);
  free(o);
}

static void op_run(br_engine *e, void *ud) {
  op *o = ud;
  (void)e;
  if (atomic_load(&o->s->dead)) {
    br_http_reply_error(o->rq, 503, "the server is stopping");
    op_free(o);
    return;
  }
  o->fn(o->s, o);
}

/* Runs fn on the engine thread, with o->answer set (stolen: may be NULL)
 * for fn to finish; the request is answered from there. */
static void hand_over_answer(br_server *s, br_http_req *rq, op_fn fn, int64_t id,
                             const char *name, json_t *answer) {
  op *o = calloc(1, sizeof *o);
  if (!o) {
    json_decref(answer);
    br_http_reply_error(rq, 503, "out of memory");
    return;
  }
  o->answer = answer;
  o->s = s;
  o->rq = rq;
  o->fn = fn;
  o->id = id;
  o->name = name ? strdup(name) : NULL;
  json_t *b = br_http_req_json(rq);
  o->body = b ? json_incref(b) : NULL;
  pthread_rwlock_rdlock(&s->life);
  bool ok = !s->closing && br_engine_post(s->e, op_run, o) == BR_OK;
  pthread_rwlock_unlock(&s->life);
  if (!ok) {
    br_http_reply_error(rq, 503, "the server is stopping");
    op_free(o);
  }
}

static void hand_over(br_server *s, br_http_req *rq, op_fn fn, int64_t id, const char *name) {
  hand_over_answer(s, rq, fn, id, name, NULL);
}

static void answer_committed(br_engine *e, void *ud, bool committed) {
  op *o = ud;
  (void)e;
  if (committed) {
    br_http_reply_json(o->rq, o->status, o->answer);
    o->answer = NULL;
  } else { /* a 503: clients send it again, to the server that comes next */
    br_http_reply_error(o->rq, 503,
                        "the server stopped before this change was stored: it was not made; "
                        "send it again");
  }
  op_free(o);
}

/* Answers once the change is committed (engine thread). */
static void answer_after_commit(op *o, unsigned status, json_t *body) {
  o->status = status;
  o->answer = body;
  if (br_engine_on_commit(o->s->e, answer_committed, o) != BR_OK) {
    br_http_reply_error(o->rq, 500, "out of memory: the change may or may not be stored");
    op_free(o);
  }
}

static void answer_error(op *o, const br_error *err) {
  br_http_reply_error(o->rq, br_http_status_of(err->code), "%s", err->msg);
  op_free(o);
}

static bool parse_id(const char *s, int64_t *out) {
  char *end;
  errno = 0;
  long long v = s ? strtoll(s, &end, 10) : 0;
  if (!s || errno || *end || v <= 0) return false;
  *out = v;
  return true;
}

/* ---- settings kept across restarts ---- */

/* The limits kept are those set through the API (settings "limits", kept
 * up to date by op_limit_set), not the ones in force: a --limit given to
 * one run of the server is for that run, and what the next start finds
 * does not depend on whether something else was saved meanwhile. */
static void settings_save(br_server *s) {
  if (!s->settings_file) return;
  json_object_set_new(s->settings, "workers", br_farm_worker_settings(s->ex));
  char *text = json_dumps(s->settings, JSON_INDENT(2) | JSON_SORT_KEYS);
  br_error err;
  if (text) br_runtime_write_file(s->settings_file, text, strlen(text), &err);
  free(text);
}

/* ---- events ---- */

static void publish(br_server *s, const char *type, json_t *data /* stolen */) {
  if (!data) return;
  char *text = json_dumps(data, JSON_COMPACT);
  json_decref(data);
  if (!text) return;
  pthread_mutex_lock(&s->ev_mu);
  uint64_t seq = ++s->ev_seq;
  char *line = NULL;
  int n = asprintf(&line, "id: %llu\nevent: %s\ndata: %s\n\n", (unsigned long long)seq, type, text);
  free(text);
  if (n < 0) {
    pthread_mutex_unlock(&s->ev_mu);
    return;
  }
  size_t slot = seq % RING;
  free(s->ring[slot]);
  s->ring[slot] = line;
  s->ring_seq[slot] = seq;
  for (sub **pp = &s->subs; *pp;) {
    sub *x = *pp;
    if (br_http_stream_write(x->stream, line, (size_t)n) != 0) {
      *pp = x->next;
      br_http_stream_release(x->stream);
      free(x);
      atomic_fetch_sub(&s->nsubs, 1);
      atomic_store(&s->last_sub_ms, now_ms());
    } else {
      pp = &x->next;
    }
  }
  pthread_mutex_unlock(&s->ev_mu);
}

static void wake_waiters(br_server *s, int64_t task_id, int64_t inv_id, bool all);

/* Events are written out (and kept for replay) while someone listens, and
 * for a while after the last one left, so a client that reconnects gets
 * what it missed. Otherwise they are only numbered: a client that comes
 * back later learns from the missing numbers that it lost some (a gap). */
static bool recording(br_server *s) {
  if (atomic_load(&s->nsubs)) return true;
  return now_ms() - atomic_load(&s->last_sub_ms) < 300000;
}

static void skip_event(br_server *s) {
  pthread_mutex_lock(&s->ev_mu);
  s->ev_seq++;
  pthread_mutex_unlock(&s->ev_mu);
}

static void observe(void *ud, const br_task_info *t) {
  br_server *s = ud;
  wake_waiters(s, t->id, 0, false);
  if (!recording(s)) return skip_event(s);
  json_t *j = br_task_info_json(t, false);
  if (j) publish(s, "task", j);
}

static void executor_news(void *ud, const char *kind, json_t *news) {
  br_server *s = ud;
  if (strcmp(kind, "output") == 0) {
    wake_waiters(s, json_integer_value(json_object_get(news, "task")),
                 json_integer_value(json_object_get(news, "inv")), false);
    return;
  }
  if (!recording(s)) return skip_event(s);
  publish(s, kind, json_incref(news));
}

static void h_events(void *ud, br_http_req *rq) {
  br_server *s = ud;
  const char *last = br_http_req_header(rq, "Last-Event-ID");
  if (!last) last = br_http_req_query(rq, "since");
  unsigned long long since = last ? strtoull(last, NULL, 10) : 0;
  br_http_stream *st = br_http_reply_stream(rq, "text/event-stream");
  if (!st) {
    br_http_reply_error(rq, 503, "cannot open a stream");
    return;
  }
  sub *x = calloc(1, sizeof *x);
  if (!x) {
    br_http_stream_end(st);
    br_http_stream_release(st);
    return;
  }
  x->stream = st;
  pthread_mutex_lock(&s->ev_mu);
  br_http_stream_write(st, ": braid events\n\n", 16);
  if (last) { /* replay what it missed, as far as it is kept */
    uint64_t from = since + 1, oldest = s->ev_seq >= RING ? s->ev_seq - RING + 1 : 1;
    if (oldest <= s->ev_base) oldest = s->ev_base + 1;
    /* an id of an earlier life of the server (or of another one): what
     * happened in between is not known, so everything must be read again */
    bool restarted = since && (since < s->ev_base || since > s->ev_seq);
    if (!since || restarted) from = s->ev_base + 1;
    uint64_t lost = 0; /* events it missed that are not kept */
    if (from < oldest) {
      lost = oldest - from;
      from = oldest;
    }
    for (uint64_t q = from; q <= s->ev_seq; q++)
      if (!s->ring[q % RING] || s->ring_seq[q % RING] != q) lost++;
    if (lost || restarted) {
      char note[200];
      int n = snprintf(note, sizeof note, "event: gap\ndata: {\"since\":%llu,\"lost\":%llu%s}\n\n",
                       since, (unsigned long long)lost, restarted ? ",\"restarted\":true" : "");
      br_http_stream_write(st, note, (size_t)n);
    }
    for (uint64_t q = from; q <= s->ev_seq; q++) {
      const char *l = s->ring[q % RING];
      if (l && s->ring_seq[q % RING] == q) br_http_stream_write(st, l, strlen(l));
    }
  }
  x->next = s->subs;
  s->subs = x;
  atomic_fetch_add(&s->nsubs, 1);
  pthread_mutex_unlock(&s->ev_mu);
}

/* ---- health and metrics ---- */

static void h_health(void *ud, br_http_req *rq) {
  br_server *s = ud;
  br_http_reply_json(rq, 200, json_pack("{sbsssI}", "ok", 1, "version", "0.1.0", "uptime_s",
                                        (json_int_t)((now_ms() - s->started_ms) / 1000)));
}

typedef struct mbuf {
  char *p;
  size_t n, cap;
} mbuf;

static void mprintf(mbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void mprintf(mbuf *b, const char *fmt, ...) {
  va_list ap;
  for (;;) {
    va_start(ap, fmt);
    int n = vsnprintf(b->p ? b->p + b->n : NULL, b->p ? b->cap - b->n : 0, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if (b->p && b->n + (size_t)n < b->cap) {
      b->n += (size_t)n;
      return;
    }
    size_t cap = b->cap ? b->cap * 2 : 8192;
    while (cap < b->n + (size_t)n + 1) cap *= 2;
    char *q = realloc(b->p, cap);
    if (!q) return;
    b->p = q;
    b->cap = cap;
  }
}

static int sum_nodes(void *ud, const char *node, const int64_t *counts) {
  int64_t *tot = ud;
  (void)node;
  for (int k = 0; k < BR_TASK_NSTATES; k++) tot[k] += counts[k];
  return 0;
}

static void op_metrics(br_server *s, op *o) {
  mbuf b = {0};
  br_engine_stats es;
  br_engine_get_stats(s->e, &es);
  br_farm_stats fs;
  br_farm_get_stats(s->ex, &fs);
  int64_t tot[BR_TASK_NSTATES] = {0};
  br_error err;
  br_store_task_count_nodes(s->store, 0, sum_nodes, tot, &err);
  mprintf(&b, "# HELP braid_tasks Tasks in the store by state.\n# TYPE braid_tasks gauge\n");
  for (int k = 0; k < BR_TASK_NSTATES; k++)
    mprintf(&b, "braid_tasks{state=\"%s\"} %lld\n", br_task_state_name((br_task_state)k), (long long)tot[k]);
  mprintf(&b, "# TYPE braid_engine_transitions_total counter\nbraid_engine_transitions_total %llu\n",
          (unsigned long long)es.transitions);
  mprintf(&b, "# TYPE braid_engine_commits_total counter\nbraid_engine_commits_total %llu\n",
          (unsigned long long)es.commits);
  mprintf(&b, "# TYPE braid_engine_tasks_in_memory gauge\nbraid_engine_tasks_in_memory %zu\n",
          es.tasks_in_memory);
  mprintf(&b, "# TYPE braid_invocations_started_total counter\nbraid_invocations_started_total %llu\n",
          (unsigned long long)es.invocations_started);
  mprintf(&b, "# TYPE braid_invocations_done_total counter\nbraid_invocations_done_total %llu\n",
          (unsigned long long)es.invocations_done);
  mprintf(&b, "# HELP braid_agents Agents by state.\n# TYPE braid_agents gauge\n");
  mprintf(&b, "braid_agents{state=\"online\"} %d\nbraid_agents{state=\"lost\"} %d\n"
              "braid_agents{state=\"draining\"} %d\n",
          fs.agents_online, fs.agents_lost, fs.agents_draining);
  mprintf(&b, "# TYPE braid_farm_pending gauge\nbraid_farm_pending %lld\n", (long long)fs.pending);
  mprintf(&b, "# TYPE braid_farm_running gauge\nbraid_farm_running %lld\n", (long long)fs.running);
  mprintf(&b, "# TYPE braid_farm_dispatched_total counter\nbraid_farm_dispatched_total %llu\n",
          (unsigned long long)fs.dispatched);
  mprintf(&b, "# TYPE braid_farm_lost_invocations_total counter\nbraid_farm_lost_invocations_total %llu\n",
          (unsigned long long)fs.lost_invocations);
  mprintf(&b, "# HELP braid_farm_dispatch_latency_ms From ready to assigned to an agent.\n"
              "# TYPE braid_farm_dispatch_latency_ms histogram\n");
  uint64_t cum = 0;
  for (int i = 0; i < 12; i++) {
    cum += fs.lat_buckets[i];
    if (br_farm_latency_buckets[i] < 0)
      mprintf(&b, "braid_farm_dispatch_latency_ms_bucket{le=\"+Inf\"} %llu\n", (unsigned long long)cum);
    else
      mprintf(&b, "braid_farm_dispatch_latency_ms_bucket{le=\"%g\"} %llu\n", br_farm_latency_buckets[i],
              (unsigned long long)cum);
  }
  mprintf(&b, "braid_farm_dispatch_latency_ms_sum %.3f\nbraid_farm_dispatch_latency_ms_count %llu\n",
          fs.lat_sum_ms, (unsigned long long)fs.lat_count);
  uint64_t reqs, waiting;
  br_http_counts(s->http, &reqs, &waiting);
  mprintf(&b, "# TYPE braid_http_requests_total counter\nbraid_http_requests_total %llu\n",
          (unsigned long long)reqs);
  mprintf(&b, "# TYPE braid_http_waiting gauge\nbraid_http_waiting %llu\n", (unsigned long long)waiting);
  mprintf(&b, "# TYPE braid_event_subscribers gauge\nbraid_event_subscribers %d\n", atomic_load(&s->nsubs));
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
               (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
  long rss_pages = 0;
  FILE *f = fopen("/proc/self/statm", "r");
  if (f) {
    long size;
    if (fscanf(f, "%ld %ld", &size, &rss_pages) != 2) rss_pages = 0;
    fclose(f);
  }
  mprintf(&b, "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total %.3f\n", cpu);
  mprintf(&b, "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes %lld\n",
          (long long)rss_pages * sysconf(_SC_PAGESIZE));
  br_http_reply_data(o->rq, 200, "text/plain; version=0.0.4", b.p, b.n);
  op_free(o);
}

static void h_metrics(void *ud, br_http_req *rq) { hand_over(ud, rq, op_metrics, 0, NULL); }

/* ---- graphs ---- */

typedef struct glist {
  json_t *by_name; /* name -> summary */
  const char *only;
  json_t *versions;
} glist;

static int graph_row(void *ud, br_graph_row *g) {
  glist *l = ud;
  if (l->only) {
    if (strcmp(g->name, l->only) == 0)
      json_array_append_new(l->versions, json_pack("{sIsisI}", "id", (json_int_t)g->id, "version",
                                                   g->version, "created_ms", (json_int_t)g->created_ms));
  } else {
    json_t *cur = json_object_get(l->by_name, g->name);
    if (!cur || json_integer_value(json_object_get(cur, "version")) < g->version)
      json_object_set_new(l->by_name, g->name,
                          json_pack("{sssIsisIsi}", "name", g->name, "id", (json_int_t)g->id, "version",
                                    g->version, "created_ms", (json_int_t)g->created_ms, "versions",
                                    cur ? (int)json_integer_value(json_object_get(cur, "versions")) + 1 : 1));
    else
      json_object_set_new(cur, "versions",
                          json_integer(json_integer_value(json_object_get(cur, "versions")) + 1));
  }
  br_graph_row_free(g);
  return 0;
}

static void h_graphs(void *ud, br_http_req *rq) {
  br_server *s = ud;
  br_error err;
  br_store *st = ro_take(s, &err);
  if (!st) return br_http_reply_error(rq, 503, "%s", err.msg);
  glist l = {.by_name = json_object()};
  int rc = st->ops->graph_list(st, graph_row, &l, &err);
  ro_give(s, st);
  if (rc) {
    json_decref(l.by_name);
    return br_http_reply_error(rq, 500, "%s", err.msg);
  }
  json_t *arr = json_array();
  const char *k;
  json_t *v;
  json_object_foreach(l.by_name, k, v) json_array_append(arr, v);
  json_decref(l.by_name);
  br_http_reply_json(rq, 200, json_pack("{so}", "graphs", arr));
}

static void h_graph_versions(void *ud, br_http_req *rq) {
  br_server *s = ud;
  br_error err;
  br_store *st = ro_take(s, &err);
  if (!st) return br_http_reply_error(rq, 503, "%s", err.msg);
  glist l = {.only = br_http_req_arg(rq, 0), .versions = json_array()};
  int rc = st->ops->graph_list(st, graph_row, &l, &err);
  ro_give(s, st);
  if (rc) {
    json_decref(l.versions);
    return br_http_reply_error(rq, 500, "%s", err.msg);
  }
  if (!json_array_size(l.versions)) {
    json_decref(l.versions);
    return br_http_reply_error(rq, 404, "no graph named '%s'", l.only);
  }
  br_http_reply_json(rq, 200, json_pack("{sssO}", "name", l.only, "versions", l.versions));
  json_decref(l.versions);
}

/* The id of graph NAME at version (0: the latest), via st. */
static int graph_lookup(br_store *st, const char *name, int version, br_graph_row *out, br_error *err) {
  if (!version) return st->ops->graph_get(st, 0, name, out, err);
  glist l = {.only = name, .versions = json_array()};
  int rc = st->ops->graph_list(st, graph_row, &l, err);
  int64_t id = 0;
  size_t i;
  json_t *v;
  json_array_foreach(l.versions, i, v) if (json_integer_value(json_object_get(v, "version")) == version)
    id = json_integer_value(json_object_get(v, "id"));
  json_decref(l.versions);
  if (rc) return rc;
  if (!id) return br_error_set(err, BR_ENOTFOUND, "graph '%s' has no version %d", name, version);
  return st->ops->graph_get(st, id, NULL, out, err);
}

static void h_graph_get(void *ud, br_http_req *rq) {
  br_server *s = ud;
  const char *name = br_http_req_arg(rq, 0);
  const char *vs = br_http_req_query(rq, "version");
  int version = vs ? atoi(vs) : 0;
  if (vs && version <= 0) return br_http_reply_error(rq, 400, "bad version '%s'", vs);
  br_error err;
  br_store *st = ro_take(s, &err);
  if (!st) return br_http_reply_error(rq, 503, "%s", err.msg);
  br_graph_row g;
  int rc = graph_lookup(st, name, version, &g, &err);
  ro_give(s, st);
  if (rc) return br_http_reply_error(rq, rc == BR_ENOTFOUND ? 404 : 500, "%s", rc == BR_ENOTFOUND && !version ? "no such graph" : err.msg);
  json_t *graph = json_loads(g.json, 0, NULL);
  br_http_reply_json(rq, 200, json_pack("{sIsssisIso}", "id", (json_int_t)g.id, "name", g.name,
                                        "version", g.version, "created_ms", (json_int_t)g.created_ms,
                                        "graph", graph ? graph : json_null()));
  br_graph_row_free(&g);
}

static int graph_version_of(br_store *st, int64_t id) {
  br_graph_row g;
  br_error err;
  if (st->ops->graph_get(st, id, NULL, &g, &err)) return 0;
  int v = g.version;
  br_graph_row_free(&g);
  return v;
}

static void op_graph_put(br_server *s, op *o) {
  br_error err;
  br_graph *g = o->graph;
  o->graph = NULL;
  char *name = strdup(br_graph_name(g));
  int64_t id;
  if (br_engine_add_graph(s->e, g, &id, &err)) { /* the engine frees g */
    free(name);
    return answer_error(o, &err);
  }
  json_t *ans = json_pack("{sIsssi}", "id", (json_int_t)id, "name", name, "version",
                          graph_version_of(s->store, id));
  free(name);
  answer_after_commit(o, 201, ans);
}

/* Parses a graph on the HTTP thread (errors name line and column). */
static br_graph *parse_graph(br_http_req *rq, const char *text) {
  br_error err;
  br_graph *g = br_graph_load_string(text, "graph", &err);
  if (!g) {
    char buf[1400];
    br_http_reply_error(rq, 400, "%s", br_error_format(&err, buf, sizeof buf));
  } else if (!br_graph_name_ok(br_graph_name(g))) { /* it could not be found by it */
    br_http_reply_error(rq, 400,
                        "graph: the graph's \"name\" '%.200s' is not a name a graph can "
                        "have: " BR_GRAPH_NAME_RULE,
                        br_graph_name(g));
    br_graph_free(g);
    g = NULL;
  }
  return g;
}

static void h_graph_put(void *ud, br_http_req *rq) {
  br_server *s = ud;
  size_t len;
  const char *text = br_http_req_body(rq, &len);
  if (!len) return br_http_reply_error(rq, 400, "the body must be a graph (JSON)");
  br_graph *g = parse_graph(rq, text);
  if (!g) return;
  op *o = calloc(1, sizeof *o);
  if (!o) {
    br_graph_free(g);
    return br_http_reply_error(rq, 503, "out of memory");
  }
  o->s = s;
  o->rq = rq;
  o->fn = op_graph_put;
  o->graph = g;
  pthread_rwlock_rdlock(&s->life);
  bool ok = !s->closing && br_engine_post(s->e, op_run, o) == BR_OK;
  pthread_rwlock_unlock(&s->life);
  if (!ok) {
    br_http_reply_error(rq, 503, "the server is stopping");
    op_free(o);
  }
}

/* ---- submissions ---- */

/* The limits g's nodes take (literal lists) that the farm does not set: a
 * typo there limits nothing, so the submitter is told at once. NULL when
 * there are none. (A limit given by an expression is known only when its
 * task runs; `braid show` says it then.) */
static json_t *unset_limits(br_server *s, const br_graph *g) {
  if (!s->ex) return NULL;
  json_t *set = br_farm_limits(s->ex), *out = NULL;
  char *names = NULL; /* those set, for the message */
  for (size_t i = 0; i < br_graph_node_count(g); i++) {
    const br_node *n = br_graph_node(g, i);
    size_t k;
    json_t *x;
    json_array_foreach(json_object_get(br_node_params(n), "limits"), k, x) {
      const char *name = json_string_value(x);
      json_t *l = name ? json_object_get(set, name) : NULL;
      if (!name || (l && json_is_integer(json_object_get(l, "max")))) continue;
      if (!names) names = br_farm_limits_set_names(s->ex);
      if (!out) out = json_array();
      json_array_append_new(out, json_sprintf("node '%s' takes limit '%s', which this farm does "
                                              "not set, so it limits nothing (set: %s)",
                                              br_node_name(n), name, names ? names : "?"));
    }
  }
  free(names);
  json_decref(set);
  return out;
}

static void op_submit(br_server *s, op *o) {
  json_t *b = o->body;
  br_error err;
  br_error_clear(&err);
  int64_t gid = 0;
  if (o->graph) { /* given inline: register it (a new version when it changed) */
    br_graph *g = o->graph;
    o->graph = NULL;
    if (br_engine_add_graph(s->e, g, &gid, &err)) return answer_error(o, &err);
  } else {
    json_t *gv = json_object_get(b, "graph");
    if (json_is_integer(gv)) {
      gid = json_integer_value(gv);
    } else {
      br_graph_row row;
      if (graph_lookup(s->store, json_string_value(gv), (int)json_integer_value(json_object_get(b, "version")),
                       &row, &err))
        return answer_error(o, &err);
      gid = row.id;
      br_graph_row_free(&row);
    }
  }
  const br_graph *g = br_engine_graph(s->e, gid);
  if (!g) {
    br_error_set(&err, BR_ENOTFOUND, "no graph %lld", (long long)gid);
    return answer_error(o, &err);
  }
  const char *node = json_string_value(json_object_get(b, "node"));
  if (!node) node = br_graph_start_node(g);
  if (!node) {
    br_error_set(&err, BR_EINVAL, "graph '%s' names no start node: give \"node\"", br_graph_name(g));
    return answer_error(o, &err);
  }
  json_t *attrs = json_object();
  json_object_update(attrs, br_graph_start_attrs(g));
  json_object_update(attrs, json_object_get(b, "attrs"));
  const char *gname = json_string_value(json_object_get(b, "group"));
  json_t *groups = json_object_get(s->settings, "groups");
  br_submit_opts so = {
      .name = json_string_value(json_object_get(b, "name")),
      .priority = (int32_t)json_integer_value(json_object_get(b, "priority")),
      .group_id = gname ? json_integer_value(json_object_get(groups, gname)) : 0,
  };
  int64_t tid;
  int rc = br_engine_submit(s->e, gid, node, attrs, &so, &tid, &err);
  json_decref(attrs);
  if (rc) return answer_error(o, &err);
  int64_t group = so.group_id ? so.group_id : tid;
  if (gname && !so.group_id) {
    json_object_set_new(groups, gname, json_integer(group));
    settings_save(s);
  }
  json_t *ans = json_pack("{sIsIsIssssss*}", "task", (json_int_t)tid, "group", (json_int_t)group,
                          "graph_id", (json_int_t)gid, "graph", br_graph_name(g), "node", node,
                          "group_name", gname);
  json_t *warnings = unset_limits(s, g);
  if (warnings) json_object_set_new(ans, "warnings", warnings);
  answer_after_commit(o, 201, ans);
}

/* A task's priority: a whole number that fits the store's 32 bits. */
static bool priority_ok(const json_t *v) {
  return json_is_integer(v) && json_integer_value(v) >= INT32_MIN &&
         json_integer_value(v) <= INT32_MAX;
}
#define PRIORITY_RANGE "a whole number from -2147483648 to 2147483647"

static void h_submit(void *ud, br_http_req *rq) {
  br_server *s = ud;
  json_t *b = br_http_req_json(rq);
  if (!json_is_object(b)) return br_http_reply_error(rq, 400, "the body must be a JSON object");
  json_t *gv = json_object_get(b, "graph");
  if (!json_is_string(gv) && !json_is_integer(gv) && !json_is_object(gv))
    return br_http_reply_error(rq, 400, "\"graph\" must be a graph name, id or object");
  json_t *attrs = json_object_get(b, "attrs");
  if (attrs && !json_is_object(attrs)) return br_http_reply_error(rq, 400, "\"attrs\" must be an object");
  json_t *prio = json_object_get(b, "priority");
  if (prio && !priority_ok(prio))
    return br_http_reply_error(rq, 400, "\"priority\" must be " PRIORITY_RANGE);
  json_t *ver = json_object_get(b, "version");
  if (ver && (!json_is_integer(ver) || json_integer_value(ver) <= 0))
    return br_http_reply_error(rq, 400, "\"version\" must be a positive integer");
  static const char *const strs[] = {"node", "name", "group"};
  for (size_t i = 0; i < 3; i++) {
    json_t *v = json_object_get(b, strs[i]);
    if (v && (!json_is_string(v) || !*json_string_value(v)))
      return br_http_reply_error(rq, 400, "\"%s\" must be a non-empty string", strs[i]);
  }
  br_graph *g = NULL;
  if (json_is_object(gv)) {
    char *text = json_dumps(gv, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
    g = text ? parse_graph(rq, text) : NULL;
    free(text);
    if (!g) return;
  }
  op *o = calloc(1, sizeof *o);
  if (!o) {
    if (g) br_graph_free(g);
    return br_http_reply_error(rq, 503, "out of memory");
  }
  o->s = s;
  o->rq = rq;
  o->fn = op_submit;
  o->graph = g;
  o->body = json_incref(b);
  pthread_rwlock_rdlock(&s->life);
  bool ok = !s->closing && br_engine_post(s->e, op_run, o) == BR_OK;
  pthread_rwlock_unlock(&s->life);
  if (!ok) {
    br_http_reply_error(rq, 503, "the server is stopping");
    op_free(o);
  }
}

/* ---- tasks: reads ---- */

typedef struct tlist {
  json_t *arr;
  bool attrs;
  int64_t last;
} tlist;

static int task_row(void *ud, br_task_info *t) {
  tlist *l = ud;
  json_array_append_new(l->arr, br_task_info_json(t, l->attrs));
  l->last = t->id;
  br_task_info_free(t);
  free(t);
  return 0;
}

static bool query_id(br_http_req *rq, const char *name, int64_t *out) {
  const char *v = br_http_req_query(rq, name);
  *out = 0;
  if (!v) return true;
  if (!parse_id(v, out)) {
    br_http_reply_error(rq, 400, "'%s' must be a positive integer, got '%s'", name, v);
    return false;
  }
  return true;
}

static void h_tasks(void *ud, br_http_req *rq) {
  br_server *s = ud;
  br_task_filter f = BR_TASK_FILTER_ALL;
  const char *state = br_http_req_query(rq, "state");
  if (state && (f.state = br_task_state_parse(state)) < 0)
    return br_http_reply_error(rq, 400, "unknown state '%s'", state);
  f.node = br_http_req_query(rq, "node");
  if (!query_id(rq, "graph", &f.graph_id) || !query_id(rq, "parent", &f.parent) ||
      !query_id(rq, "group", &f.group_id) || !query_id(rq, "after", &f.after_id))
    return;
  int64_t limit = 100;
  const char *ls = br_http_req_query(rq, "limit");
  if (ls && (!parse_id(ls, &limit) || limit > 10000))
    return br_http_reply_error(rq, 400, "'limit' must be 1-10000");
  f.limit = (int)limit;
  const char *a = br_http_req_query(rq, "attrs");
  tlist l = {.arr = json_array(), .attrs = a && strcmp(a, "0") != 0 && strcmp(a, "false") != 0};
  br_error err;
  br_store *st = ro_take(s, &err);
  if (!st) {
    json_decref(l.arr);
    return br_http_reply_error(rq, 503, "%s", err.msg);
  }
  int rc = br_store_task_query(st, &f, task_row, &l, &err);
  ro_give(s, st);
  if (rc) {
    json_decref(l.arr);
    return br_http_reply_error(rq, 500, "%s", err.msg);
  }
  json_t *next = (int64_t)json_array_size(l.arr) == limit ? json_integer(l.last) : json_null();
  br_http_reply_json(rq, 200, json_pack("{soso}", "tasks", l.arr, "next", next));
}

/* ---- the summary: tasks by node and state ---- */

typedef struct summary {
  json_t *nodes;
  int64_t total[BR_TASK_NSTATES];
} summary;

static json_t *state_counts(const int64_t *counts) {
  json_t *o = json_object();
  for (int k = 0; k < BR_TASK_NSTATES; k++)
    json_object_set_new(o, br_task_state_name((br_task_state)k), json_integer(counts[k]));
  return o;
}

static int summary_row(void *ud, const char *node, const int64_t *counts) {
  summary *m = ud;
  json_array_append_new(m->nodes, json_pack("{ssso}", "node", node, "counts", state_counts(counts)));
  for (int k = 0; k < BR_TASK_NSTATES; k++) m->total[k] += counts[k];
  return 0;
}

/* One grouped count in the store (no task is read): what the web UI shows
 * per node, or for the whole store. */
static void h_summary(void *ud, br_http_req *rq) {
  br_server *s = ud;
  int64_t graph;
  if (!query_id(rq, "graph", &graph)) return;
  summary m = {.nodes = json_array()};
  br_error err;
  br_store *st = ro_take(s, &err);
  if (!st) {
    json_decref(m.nodes);
    return br_http_reply_error(rq, 503, "%s", err.msg);
  }
  int rc = br_store_task_count_nodes(st, graph, summary_row, &m, &err);
  if (!rc && graph && !json_array_size(m.nodes)) { /* no tasks: is there such a graph? */
    br_graph_row row;
    rc = st->ops->graph_get(st, graph, NULL, &row, &err);
    if (rc == BR_OK) br_graph_row_free(&row);
  }
  ro_give(s, st);
  if (rc == BR_ENOTFOUND) {
    json_decref(m.nodes);
    return br_http_reply_error(rq, 404, "no graph %lld", (long long)graph);
  }
  if (rc) {
    json_decref(m.nodes);
    return br_http_reply_error(rq, 500, "%s", err.msg);
  }
  br_http_reply_json(rq, 200, json_pack("{sososo}", "graph", graph ? json_integer(graph) : json_null(),
                                        "nodes", m.nodes, "total", state_counts(m.total)));
}

/* ---- the web UI ---- */

static void h_web(void *ud, br_http_req *rq) {
  (void)ud;
  const char *name = br_http_req_arg(rq, 0);
  char path[256];
  snprintf(path, sizeof path, "/%s%s", name ? "ui/" : "", name ? name : "");
  for (const br_web_asset *a = br_web_assets; a->path; a++) {
    if (strcmp(a->path, path) != 0) continue;
    char *copy = malloc(a->len);
    if (!copy) return br_http_reply_error(rq, 503, "out of memory");
    memcpy(copy, a->data, a->len);
    /* its own files only: no inline script, no frames, no sniffing */
    static const char *const headers[] = {
        "Cache-Control", "no-cache",
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'",
        "X-Content-Type-Options", "nosniff",
        "Referrer-Policy", "no-referrer",
        NULL};
    return br_http_reply_data_headers(rq, 200, a->type, copy, a->len, headers);
  }
  br_http_reply_error(rq, 404, "no such file of the web UI");
}

static int inv_row(void *ud, br_inv_info *i) {
  json_array_append_new(ud, br_inv_row_json(&i->row));
  br_inv_info_free(i);
  free(i);
  return 0;
}

/* A task that waits: why, from the engine (it knows what holds it). */
static void op_task_waiting(br_server *s, op *o) {
  char *why = br_engine_task_waiting(s->e, o->id);
  json_t *w = why ? json_string(why) : NULL;
  if (w) json_object_set_new(o->answer, "waiting", w);
  free(why);
  br_http_reply_json(o->rq, 200, o->answer);
  o->answer = NULL;
  op_free(o);
}

static void h_task(void *ud, br_http_req *rq) {
  br_server *s = ud;
  int64_t id;
  if (!parse_id(br_http_req_arg(rq, 0), &id)) return br_http_reply_error(rq, 400, "bad task id");
  br_error err;
  br_store *st = ro_take(s, &err);
  if (!st) return br_http_reply_error(rq, 503, "%s", err.msg);
  br_task_info t;
  int rc = br_store_task_get(st, id, &t, &err);
  json_t *invs = json_array();
  if (!rc) rc = br_store_inv_query(st, id, inv_row, invs, &err);
  ro_give(s, st);
  if (rc) {
    json_decref(invs);
    return br_http_reply_error(rq, rc == BR_ENOTFOUND ? 404 : 500, "%s", err.msg);
  }
  json_t *j = br_task_info_json(&t, true);
  bool waits = t.state == BR_TASK_QUEUED || t.state == BR_TASK_BLOCKED ||
               (t.state == BR_TASK_WAITING && t.paused);
  br_task_info_free(&t);
  json_object_set_new(j, "invocations", invs);
  if (waits) return hand_over_answer(s, rq, op_task_waiting, id, NULL, j);
  br_http_reply_json(rq, 200, j);
}

static void h_task_invocations(void *ud, br_http_req *rq) {
  br_server *s = ud;
  int64_t id;
  if (!parse_id(br_http_req_arg(rq, 0), &id)) return br_http_reply_error(rq, 400, "bad task id");
  br_error err;
  br_store *st = ro_take(s, &err);
  if (!st) return br_http_reply_error(rq, 503, "%s", err.msg);
  br_task_info t;
  int rc = br_store_task_get(st, id, &t, &err);
  json_t *invs = json_array();
  if (!rc) {
    br_task_info_free(&t);
    rc = br_store_inv_query(st, id, inv_row, invs, &err);
  }
  ro_give(s, st);
  if (rc) {
    json_decref(invs);
    return br_http_reply_error(rq, rc == BR_ENOTFOUND ? 404 : 500, "%s", err.msg);
  }
  br_http_reply_json(rq, 200, json_pack("{so}", "invocations", invs));
}

/* ---- logs ---- */

/* Answers with the log from offset: text, and where it stands in headers. */
static void send_log(br_http_req *rq, const char *path, int64_t inv, const char *status,
                     int64_t offset, bool finished) {
  char *buf = NULL;
  size_t n = 0;
  int64_t size = 0;
  int fd = path ? open(path, O_RDONLY | O_CLOEXEC) : -1;
  if (fd >= 0) {
    struct stat st;
    if (fstat(fd, &st) == 0) size = st.st_size;
    if (offset < size) {
      size_t want = (size_t)(size - offset) > LOG_CHUNK ? LOG_CHUNK : (size_t)(size - offset);
      buf = malloc(want);
      ssize_t r = buf ? pread(fd, buf, want, offset) : -1;
      n = r > 0 ? (size_t)r : 0;
    }
    close(fd);
  }
  char invs[32], next[32], sz[32];
  snprintf(invs, sizeof invs, "%lld", (long long)inv);
  snprintf(next, sizeof next, "%lld", (long long)(offset + (int64_t)n));
  snprintf(sz, sizeof sz, "%lld", (long long)size);
  const char *h[] = {"X-Braid-Invocation", invs, "X-Braid-Status", status ? status : "",
                     "X-Braid-Next-Offset", next, "X-Braid-Log-Size", sz,
                     "X-Braid-Finished", finished && offset + (int64_t)n >= size ? "1" : "0", NULL};
  br_http_reply_data_headers(rq, 200, "text/plain; charset=utf-8", buf, n, h);
}

typedef struct invpick {
  int64_t want;
  br_inv_info got;
} invpick;

static int pick_inv(void *ud, br_inv_info *i) {
  invpick *p = ud;
  if (!p->want || p->want == i->row.id) {
    br_inv_info_free(&p->got);
    p->got = *i;
  } else {
    br_inv_info_free(i);
  }
  free(i);
  return 0;
}

static void h_task_log(void *ud, br_http_req *rq) {
  br_server *s = ud;
  int64_t id, offset = 0, wait = 0;
  if (!parse_id(br_http_req_arg(rq, 0), &id)) return br_http_reply_error(rq, 400, "bad task id");
  invpick p = {0};
  if (!query_id(rq, "invocation", &p.want)) return;
  const char *os = br_http_req_query(rq, "offset"), *ws = br_http_req_query(rq, "wait");
  if (os && (offset = strtoll(os, NULL, 10)) < 0) return br_http_reply_error(rq, 400, "bad offset");
  if (ws && ((wait = strtoll(ws, NULL, 10)) < 0 || wait > 60))
    return br_http_reply_error(rq, 400, "'wait' is 0-60 seconds");
  br_error err;
  br_store *st = ro_take(s, &err);
  if (!st) return br_http_reply_error(rq, 503, "%s", err.msg);
  br_task_info t;
  int rc = br_store_task_get(st, id, &t, &err);
  if (!rc) {
    br_task_info_free(&t);
    rc = br_store_inv_query(st, id, pick_inv, &p, &err);
  }
  ro_give(s, st);
  if (rc) return br_http_reply_error(rq, rc == BR_ENOTFOUND ? 404 : 500, "%s", err.msg);
  if (!p.got.row.id) {
    if (p.want) return br_http_reply_error(rq, 404, "task %lld has no invocation %lld", (long long)id, (long long)p.want);
    return br_http_reply_error(rq, 404, "task %lld has run no job", (long long)id);
  }
  const char *status = p.got.row.status;
  bool running = status && strcmp(status, "running") == 0;
  struct stat sb;
  int64_t size = p.got.row.log_path && stat(p.got.row.log_path, &sb) == 0 ? sb.st_size : 0;
  if (running && wait > 0 && offset >= size) { /* follow: wait for output or the end */
    logwait *w = calloc(1, sizeof *w);
    if (w) {
      w->rq = rq;
      w->task_id = id;
      w->inv_id = p.got.row.id;
      w->offset = offset;
      w->deadline_ms = now_ms() + wait * 1000;
      w->path = p.got.row.log_path ? strdup(p.got.row.log_path) : NULL;
      pthread_mutex_lock(&s->lw_mu);
      /* output may have come since the stat above: look again under the lock */
      bool more = p.got.row.log_path && stat(p.got.row.log_path, &sb) == 0 && sb.st_size > offset;
      if (!more) {
        w->next = s->waiters;
        s->waiters = w;
        atomic_fetch_add(&s->nwaiters, 1);
      }
      pthread_mutex_unlock(&s->lw_mu);
      if (!more) {
        br_inv_info_free(&p.got);
        return;
      }
      free(w->path);
      free(w);
    }
  }
  send_log(rq, p.got.row.log_path, p.got.row.id, status, offset, !running);
  br_inv_info_free(&p.got);
}

/* Answers followers: of one task (its state changed), one invocation (new
 * output), or all whose time is up (all). */
static void wake_waiters(br_server *s, int64_t task_id, int64_t inv_id, bool expired_only) {
  if (!atomic_load(&s->nwaiters)) return; /* a new waiter checks the file under the lock */
  int64_t now = now_ms();
  logwait *go = NULL;
  pthread_mutex_lock(&s->lw_mu);
  for (logwait **pp = &s->waiters; *pp;) {
    logwait *w = *pp;
    bool hit = expired_only ? w->deadline_ms <= now
                            : (inv_id ? w->inv_id == inv_id : w->task_id == task_id);
    if (hit) {
      *pp = w->next;
      w->next = go;
      go = w;
      atomic_fetch_sub(&s->nwaiters, 1);
    } else {
      pp = &w->next;
    }
  }
  pthread_mutex_unlock(&s->lw_mu);
  while (go) {
    logwait *n = go->next;
    send_log(go->rq, go->path, go->inv_id, "running", go->offset, false);
    free(go->path);
    free(go);
    go = n;
  }
}

/* ---- tasks: changes ---- */

static void task_done(op *o, int rc, br_error *err, const char *what) {
  if (rc) return answer_error(o, err);
  answer_after_commit(o, 200, json_pack("{sIss}", "id", (json_int_t)o->id, "done", what));
}

static void op_cancel(br_server *s, op *o) {
  br_error err;
  task_done(o, br_engine_task_cancel(s->e, o->id, &err), &err, "cancel");
}
static void op_retry(br_server *s, op *o) {
  br_error err;
  task_done(o, br_engine_task_retry(s->e, o->id, &err), &err, "retry");
}
static void op_pause(br_server *s, op *o) {
  br_error err;
  task_done(o, br_engine_task_pause(s->e, o->id, true, &err), &err, "pause");
}
static void op_resume(br_server *s, op *o) {
  br_error err;
  task_done(o, br_engine_task_pause(s->e, o->id, false, &err), &err, "resume");
}
static void op_priority(br_server *s, op *o) {
  br_error err;
  int32_t p = (int32_t)json_integer_value(json_object_get(o->body, "priority"));
  task_done(o, br_engine_task_set_priority(s->e, o->id, p, &err), &err, "priority");
}
static void op_attrs(br_server *s, op *o) {
  br_error err;
  task_done(o, br_engine_task_set_attrs(s->e, o->id, json_object_get(o->body, "attrs"), &err), &err,
            "attrs");
}
static void op_move(br_server *s, op *o) {
  br_error err;
  task_done(o, br_engine_task_move(s->e, o->id, json_string_value(json_object_get(o->body, "node")), &err),
            &err, "move");
}

static void task_op(void *ud, br_http_req *rq, op_fn fn) {
  int64_t id;
  if (!parse_id(br_http_req_arg(rq, 0), &id)) return br_http_reply_error(rq, 400, "bad task id");
  hand_over(ud, rq, fn, id, NULL);
}

static void h_cancel(void *ud, br_http_req *rq) { task_op(ud, rq, op_cancel); }
static void h_retry(void *ud, br_http_req *rq) { task_op(ud, rq, op_retry); }
static void h_pause(void *ud, br_http_req *rq) { task_op(ud, rq, op_pause); }
static void h_resume(void *ud, br_http_req *rq) { task_op(ud, rq, op_resume); }

static void h_priority(void *ud, br_http_req *rq) {
  json_t *p = json_object_get(br_http_req_json(rq), "priority");
  if (!priority_ok(p))
    return br_http_reply_error(rq, 400,
                               "the body must be {\"priority\": N}, N " PRIORITY_RANGE);
  task_op(ud, rq, op_priority);
}

static void h_attrs(void *ud, br_http_req *rq) {
  if (!json_is_object(json_object_get(br_http_req_json(rq), "attrs")))
    return br_http_reply_error(rq, 400, "the body must be {\"attrs\": {...}}");
  task_op(ud, rq, op_attrs);
}

static void h_move(void *ud, br_http_req *rq) {
  json_t *n = json_object_get(br_http_req_json(rq), "node");
  if (!json_is_string(n) || !*json_string_value(n))
    return br_http_reply_error(rq, 400, "the body must be {\"node\": NAME}");
  task_op(ud, rq, op_move);
}

/* ---- submissions (groups) as a whole ---- */

/* The group o->name names: an id, or a name given at submission. */
static bool group_of(br_server *s, op *o, int64_t *id) {
  if (parse_id(o->name, id)) return true;
  json_t *v = json_object_get(json_object_get(s->settings, "groups"), o->name);
  if (json_is_integer(v)) {
    *id = json_integer_value(v);
    return true;
  }
  br_error err;
  br_error_set(&err, BR_ENOTFOUND, "no group '%s': give a group id, or a name a submission was "
               "given (braid submit --group NAME)", o->name);
  answer_error(o, &err);
  return false;
}

static void group_op(br_server *s, op *o, br_group_op what, const char *done) {
  int64_t id;
  if (!group_of(s, o, &id)) return;
  size_t n = br_engine_group_op(s->e, id, what);
  answer_after_commit(o, 200, json_pack("{sIsssI}", "group", (json_int_t)id, "done", done,
                                        "tasks", (json_int_t)n));
}
static void op_group_cancel(br_server *s, op *o) { group_op(s, o, BR_GROUP_CANCEL, "cancel"); }
static void op_group_pause(br_server *s, op *o) { group_op(s, o, BR_GROUP_PAUSE, "pause"); }
static void op_group_resume(br_server *s, op *o) { group_op(s, o, BR_GROUP_RESUME, "resume"); }
static void op_group_retry(br_server *s, op *o) { group_op(s, o, BR_GROUP_RETRY, "retry"); }
static void h_group_cancel(void *ud, br_http_req *rq) {
  hand_over(ud, rq, op_group_cancel, 0, br_http_req_arg(rq, 0));
}
static void h_group_pause(void *ud, br_http_req *rq) {
  hand_over(ud, rq, op_group_pause, 0, br_http_req_arg(rq, 0));
}
static void h_group_resume(void *ud, br_http_req *rq) {
  hand_over(ud, rq, op_group_resume, 0, br_http_req_arg(rq, 0));
}
static void h_group_retry(void *ud, br_http_req *rq) {
  hand_over(ud, rq, op_group_retry, 0, br_http_req_arg(rq, 0));
}

/* The names submissions were given, with their group ids. */
static void op_groups(br_server *s, op *o) {
  json_t *g = json_object_get(s->settings, "groups");
  br_http_reply_json(o->rq, 200, json_pack("{sO}", "groups", g ? g : json_object()));
  op_free(o);
}
static void h_groups(void *ud, br_http_req *rq) { hand_over(ud, rq, op_groups, 0, NULL); }

/* ---- workers and limits ---- */

static void op_workers(br_server *s, op *o) {
  br_http_reply_json(o->rq, 200, json_pack("{so}", "workers", br_farm_workers(s->ex)));
  op_free(o);
}
static void h_workers(void *ud, br_http_req *rq) { hand_over(ud, rq, op_workers, 0, NULL); }

static void op_worker_set(br_server *s, op *o) {
  br_error err;
  json_t *d = json_object_get(o->body, "drain");
  int drain = o->id == 1 ? (d ? json_is_true(d) : 1) : -1;
  json_t *tags = o->id == 2 ? json_object_get(o->body, "tags") : NULL;
  if (br_farm_worker_set(s->ex, o->name, drain, tags, &err)) return answer_error(o, &err);
  settings_save(s);
  json_t *ws = br_farm_workers(s->ex), *found = NULL;
  size_t i;
  json_t *w;
  json_array_foreach(ws, i, w) if (strcmp(json_string_value(json_object_get(w, "id")), o->name) == 0)
    found = json_incref(w);
  json_decref(ws);
  if (!found) { /* kept for when it comes; "known" tells the caller it is not here */
    found = json_pack("{sssssbsb}", "id", o->name, "state", "offline", "drain", drain > 0,
                      "known", 0);
    if (tags) json_object_set(found, "tags", tags);
  }
  br_http_reply_json(o->rq, 200, found);
  op_free(o);
}

static void h_drain(void *ud, br_http_req *rq) {
  json_t *b = br_http_req_json(rq), *d = json_object_get(b, "drain");
  if ((b && !json_is_object(b)) || (d && !json_is_boolean(d)))
    return br_http_reply_error(rq, 400, "the body must be {\"drain\": true|false} (or empty)");
  hand_over(ud, rq, op_worker_set, 1, br_http_req_arg(rq, 0));
}

static void h_tags(void *ud, br_http_req *rq) {
  if (!json_is_array(json_object_get(br_http_req_json(rq), "tags")))
    return br_http_reply_error(rq, 400, "the body must be {\"tags\": [NAME...]}");
  hand_over(ud, rq, op_worker_set, 2, br_http_req_arg(rq, 0));
}

static void op_limits(br_server *s, op *o) {
  br_http_reply_json(o->rq, 200, json_pack("{so}", "limits", br_farm_limits(s->ex)));
  op_free(o);
}
static void h_limits(void *ud, br_http_req *rq) { hand_over(ud, rq, op_limits, 0, NULL); }

static void op_limit_set(br_server *s, op *o) {
  br_error err;
  json_t *m = json_object_get(o->body, "max");
  if (br_farm_limit_set(s->ex, o->name, json_is_integer(m) ? (int)json_integer_value(m) : -1, &err))
    return answer_error(o, &err);
  json_t *kept = json_object_get(s->settings, "limits");
  if (json_is_integer(m)) json_object_set(kept, o->name, m);
  else json_object_del(kept, o->name);
  settings_save(s);
  json_t *all = br_farm_limits(s->ex), *l = json_object_get(all, o->name);
  br_http_reply_json(o->rq, 200, json_pack("{sssO}", "name", o->name, "limit", l ? l : json_null()));
  json_decref(all);
  op_free(o);
}

static void h_limit_set(void *ud, br_http_req *rq) {
  json_t *m = json_object_get(br_http_req_json(rq), "max");
  if (!m || !(json_is_null(m) || (json_is_integer(m) && json_integer_value(m) >= 0 &&
                                  json_integer_value(m) <= 1000000)))
    return br_http_reply_error(rq, 400, "the body must be {\"max\": N} (N >= 0, or null to remove it)");
  hand_over(ud, rq, op_limit_set, 0, br_http_req_arg(rq, 0));
}

/* ---- tokens ---- */

static void h_tokens(void *ud, br_http_req *rq) {
  br_server *s = ud;
  br_http_reply_json(rq, 200, json_pack("{so}", "tokens", br_auth_list(s->auth)));
}

static void h_token_create(void *ud, br_http_req *rq) {
  br_server *s = ud;
  json_t *b = br_http_req_json(rq);
  br_role role = br_role_parse(json_string_value(json_object_get(b, "role")));
  json_t *name = json_object_get(b, "name");
  if (role == BR_ROLE_NONE || (name && !json_is_string(name)))
    return br_http_reply_error(rq, 400, "the body must be {\"role\": \"agent\"|\"user\"|\"admin\", \"name\": TEXT}");
  char *tok, id[17];
  br_error err;
  /* a name too long for the token file is the caller's fault: 400 */
  if (br_auth_create(s->auth, role, json_string_value(name), &tok, id, &err))
    return br_http_reply_error(rq, br_http_status_of(err.code), "%s", err.msg);
  br_http_reply_json(rq, 201, json_pack("{ssssssss}", "id", id, "role", br_role_name(role), "name",
                                        name ? json_string_value(name) : "", "token", tok));
  free(tok);
}

static void h_token_revoke(void *ud, br_http_req *rq) {
  br_server *s = ud;
  br_error err;
  if (br_auth_revoke(s->auth, br_http_req_arg(rq, 0), &err))
    return br_http_reply_error(rq, br_http_status_of(err.code), "%s", err.msg);
  br_http_reply_json(rq, 200, json_pack("{ss}", "revoked", br_http_req_arg(rq, 0)));
}

/* ---- agents ---- */

/* The farm's answers go to this (its reply ud), one per request. */
typedef struct farm_req {
  br_server *s;
  br_http_req *rq;
} farm_req;

/* The work sent to an agent, until its answer has gone out in full. */
typedef struct sent_work {
  br_server *s;
  json_t *work; /* the answer's "work" list */
} sent_work;

static void op_undelivered(br_engine *e, void *ud) {
  sent_work *w = ud;
  (void)e;
  if (!atomic_load(&w->s->dead)) br_farm_undelivered(w->s->ex, w->work);
  json_decref(w->work);
  free(w);
}

/* libmicrohttpd's thread: the answer carrying work ended. When it did not
 * go out in full, the agent cannot have it: the farm puts it back. */
static void work_sent(void *ud, bool delivered) {
  sent_work *w = ud;
  br_server *s = w->s;
  bool posted = false;
  if (!delivered) {
    pthread_rwlock_rdlock(&s->life);
    posted = !s->closing && br_engine_post(s->e, op_undelivered, w) == BR_OK;
    pthread_rwlock_unlock(&s->life);
  }
  if (!posted) {
    json_decref(w->work);
    free(w);
  }
}

static void farm_answer(void *ud, unsigned status, json_t *body) {
  farm_req *fr = ud;
  json_t *work = json_object_get(body, "work");
  sent_work *w = json_array_size(work) ? calloc(1, sizeof *w) : NULL;
  if (w) {
    w->s = fr->s;
    w->work = json_incref(work);
    br_http_req_on_end(fr->rq, work_sent, w);
  }
  br_http_reply_json(fr->rq, status, body);
  free(fr);
}

static bool farm_req_gone(void *ud) { return br_http_req_gone(((farm_req *)ud)->rq); }

static farm_req *farm_req_new(op *o) {
  farm_req *fr = calloc(1, sizeof *fr);
  if (!fr) {
    br_http_reply_error(o->rq, 503, "out of memory");
    op_free(o);
    return NULL;
  }
  fr->s = o->s;
  fr->rq = o->rq;
  return fr;
}

static void op_register(br_server *s, op *o) {
  farm_req *fr = farm_req_new(o);
  if (!fr) return;
  /* where it came from, for the workers list and for telling two agents
   * with one id apart (the agent's own "address", if any, is not kept) */
  json_t *req = json_copy(o->body);
  json_object_set_new(req, "address", json_string(o->name ? o->name : ""));
  br_farm_register(s->ex, req, farm_answer, fr);
  json_decref(req);
  op_free(o);
}
static void op_poll(br_server *s, op *o) {
  farm_req *fr = farm_req_new(o);
  if (!fr) return;
  br_farm_poll(s->ex, o->name, o->body, farm_answer, fr);
  op_free(o);
}
static void op_report(br_server *s, op *o) {
  farm_req *fr = farm_req_new(o);
  if (!fr) return;
  br_farm_report(s->ex, o->name, o->body, farm_answer, fr);
  op_free(o);
}
static void op_leave(br_server *s, op *o) {
  farm_req *fr = farm_req_new(o);
  if (!fr) return;
  br_farm_leave(s->ex, o->name, o->body, farm_answer, fr);
  op_free(o);
}

static bool object_body(br_http_req *rq) {
  if (json_is_object(br_http_req_json(rq))) return true;
  br_http_reply_error(rq, 400, "the body must be a JSON object");
  return false;
}

static void h_register(void *ud, br_http_req *rq) {
  char peer[80];
  if (object_body(rq)) hand_over(ud, rq, op_register, 0, br_http_req_peer(rq, peer, sizeof peer));
}
static void h_poll(void *ud, br_http_req *rq) {
  if (object_body(rq)) hand_over(ud, rq, op_poll, 0, br_http_req_arg(rq, 0));
}
static void h_report(void *ud, br_http_req *rq) {
  if (object_body(rq)) hand_over(ud, rq, op_report, 0, br_http_req_arg(rq, 0));
}
static void h_leave(void *ud, br_http_req *rq) {
  if (object_body(rq)) hand_over(ud, rq, op_leave, 0, br_http_req_arg(rq, 0));
}

/* ---- the routes ---- */

#define MB (1u << 20)

static const br_http_route routes[] = {
    {"GET", "/", BR_ROLES_PUBLIC, h_web, 0, false},
    {"GET", "/ui/{}", BR_ROLES_PUBLIC, h_web, 0, false},
    {"GET", "/health", BR_ROLES_ANY, h_health, 0, false},
    {"GET", "/api/v1/summary", BR_ROLES_USER, h_summary, 0, false},
    {"GET", "/metrics", BR_ROLES_USER, h_metrics, 0, false},
    {"GET", "/api/v1/graphs", BR_ROLES_USER, h_graphs, 0, false},
    {"POST", "/api/v1/graphs", BR_ROLES_USER, h_graph_put, 16 * MB, true},
    {"GET", "/api/v1/graphs/{}", BR_ROLES_USER, h_graph_get, 0, false},
    {"GET", "/api/v1/graphs/{}/versions", BR_ROLES_USER, h_graph_versions, 0, false},
    {"POST", "/api/v1/submissions", BR_ROLES_USER, h_submit, 16 * MB, false},
    {"GET", "/api/v1/tasks", BR_ROLES_USER, h_tasks, 0, false},
    {"GET", "/api/v1/tasks/{}", BR_ROLES_USER, h_task, 0, false},
    {"GET", "/api/v1/tasks/{}/invocations", BR_ROLES_USER, h_task_invocations, 0, false},
    {"GET", "/api/v1/tasks/{}/log", BR_ROLES_USER, h_task_log, 0, false},
    {"GET", "/api/v1/groups", BR_ROLES_USER, h_groups, 0, false},
    {"POST", "/api/v1/groups/{}/cancel", BR_ROLES_USER, h_group_cancel, 0, false},
    {"POST", "/api/v1/groups/{}/pause", BR_ROLES_USER, h_group_pause, 0, false},
    {"POST", "/api/v1/groups/{}/resume", BR_ROLES_USER, h_group_resume, 0, false},
    {"POST", "/api/v1/groups/{}/retry", BR_ROLES_USER, h_group_retry, 0, false},
    {"POST", "/api/v1/tasks/{}/cancel", BR_ROLES_USER, h_cancel, 0, false},
    {"POST", "/api/v1/tasks/{}/retry", BR_ROLES_USER, h_retry, 0, false},
    {"POST", "/api/v1/tasks/{}/pause", BR_ROLES_USER, h_pause, 0, false},
    {"POST", "/api/v1/tasks/{}/resume", BR_ROLES_USER, h_resume, 0, false},
    {"PUT", "/api/v1/tasks/{}/priority", BR_ROLES_USER, h_priority, 0, false},
    {"POST", "/api/v1/tasks/{}/attrs", BR_ROLES_USER, h_attrs, 4 * MB, false},
    {"POST", "/api/v1/tasks/{}/move", BR_ROLES_USER, h_move, 0, false},
    {"GET", "/api/v1/workers", BR_ROLES_USER, h_workers, 0, false},
    {"POST", "/api/v1/workers/{}/drain", BR_ROLES_USER, h_drain, 0, false},
    {"PUT", "/api/v1/workers/{}/tags", BR_ROLES_USER, h_tags, 0, false},
    {"GET", "/api/v1/limits", BR_ROLES_USER, h_limits, 0, false},
    {"PUT", "/api/v1/limits/{}", BR_ROLES_ADMIN, h_limit_set, 0, false},
    {"GET", "/api/v1/events", BR_ROLES_USER, h_events, 0, false},
    {"GET", "/api/v1/tokens", BR_ROLES_ADMIN, h_tokens, 0, false},
    {"POST", "/api/v1/tokens", BR_ROLES_ADMIN, h_token_create, 0, false},
    {"DELETE", "/api/v1/tokens/{}", BR_ROLES_ADMIN, h_token_revoke, 0, false},
    {"POST", "/api/v1/agents/register", BR_ROLES_AGENT, h_register, MB, false},
    {"POST", "/api/v1/agents/{}/poll", BR_ROLES_AGENT, h_poll, MB, false},
    {"POST", "/api/v1/agents/{}/report", BR_ROLES_AGENT, h_report, 32 * MB, false},
    {"POST", "/api/v1/agents/{}/leave", BR_ROLES_AGENT, h_leave, 0, false},
    {NULL, NULL, 0, NULL, 0, false},
};

/* ---- the server ---- */

static void on_timer(uv_timer_t *t) {
  br_server *s = t->data;
  wake_waiters(s, 0, 0, true);
  int64_t now = now_ms();
  if (atomic_load(&s->nsubs) && now - s->last_ping_ms > 15000) {
    s->last_ping_ms = now;
    pthread_mutex_lock(&s->ev_mu); /* a comment line: finds readers that went away */
    for (sub **pp = &s->subs; *pp;) {
      sub *x = *pp;
      if (br_http_stream_write(x->stream, ": ping\n\n", 8) != 0) {
        *pp = x->next;
        br_http_stream_release(x->stream);
        free(x);
        atomic_fetch_sub(&s->nsubs, 1);
        atomic_store(&s->last_sub_ms, now_ms());
      } else {
        pp = &x->next;
      }
    }
    pthread_mutex_unlock(&s->ev_mu);
  }
}

/* The mounted depot's token rule: the server's tokens, by role. Any role
 * may read (pull); storing (push) takes a user or an admin token, so a
 * farm agent's token cannot change what the studio has checked in;
 * removing versions and gc take an admin token. */
static int depot_authorize(void *ud, const char *token, br_depot_access access) {
  br_server *s = ud;
  br_role r = token ? br_auth_check(s->auth, token) : BR_ROLE_NONE;
  if (r == BR_ROLE_NONE) return 401;
  if (access == BR_DEPOT_WRITE && r != BR_ROLE_USER && r != BR_ROLE_ADMIN) return 403;
  if (access == BR_DEPOT_ADMIN && r != BR_ROLE_ADMIN) return 403;
  return 0;
}

static int depot_handle(void *ud, struct MHD_Connection *c, const char *url, const char *method,
                        const char *upload_data, size_t *upload_data_size, void **con_cls) {
  return br_depot_handle(ud, c, url, method, upload_data, upload_data_size, con_cls);
}

static const br_http_mount depot_mount = {
    .owns = br_depot_owns_url,
    .handle = depot_handle,
    .done = br_depot_request_done,
};

int br_server_open(const br_server_opts *o, br_server **out, br_error *err) {
  *out = NULL;
  if (!o->store || !o->token_file) return br_error_set(err, BR_EINVAL, "server: a store and a token file are needed");
  br_server *s = calloc(1, sizeof *s);
  if (!s) return br_error_set(err, BR_ENOMEM, "out of memory");
  pthread_rwlock_init(&s->life, NULL);
  pthread_mutex_init(&s->pool_mu, NULL);
  pthread_mutex_init(&s->ev_mu, NULL);
  pthread_mutex_init(&s->lw_mu, NULL);
  s->started_ms = now_ms();
  s->ev_seq = s->ev_base = (uint64_t)s->started_ms * 1024;
  s->store_uri = strdup(o->store);
  s->settings_file = o->settings_file ? strdup(o->settings_file) : NULL;
  s->settings = s->settings_file ? json_load_file(s->settings_file, 0, NULL) : NULL;
  if (!json_is_object(s->settings)) {
    json_decref(s->settings);
    s->settings = json_object();
  }
  if (!json_is_object(json_object_get(s->settings, "groups")))
    json_object_set_new(s->settings, "groups", json_object());
  if (!json_is_object(json_object_get(s->settings, "limits")))
    json_object_set_new(s->settings, "limits", json_object());
  int rc = br_auth_open_warn(o->token_file, o->warn, o->warn_ud, &s->auth, err);
  if (!rc) rc = br_store_open(o->store, 0, &s->store, err);
  if (!rc) br_store_set_log(s->store, o->warn, o->warn_ud); /* a wait for a lock, told */
  br_engine_opts eo = {.batch_ms = o->batch_ms};
  if (!rc && !(s->e = br_engine_open(s->store, &eo, err))) rc = err->code ? err->code : BR_ESTORE;
  if (rc) {
    br_server_close(s);
    return rc;
  }
  if (o->log_dir) br_engine_set_log_dir(s->e, o->log_dir);
  const br_executor_ops *xops = br_executor_find(o->executor ? o->executor : "agent");
  if (!xops || (xops != &br_exec_agent && xops != &br_exec_slurm)) {
    br_server_close(s);
    return br_error_set(err, BR_EINVAL, "server: executor '%s' is not one of agent, slurm", o->executor);
  }
  json_t *xo = o->farm ? json_deep_copy(o->farm) : json_object();
  if (xops == &br_exec_slurm && !json_object_get(xo, "cancel_on_stop")) /* jobs outlive a restart */
    json_object_set_new(xo, "cancel_on_stop", json_false());
  br_exec_config cfg = {.options = xo, .notify = executor_news, .notify_ud = s, .braid_exe = o->braid_exe};
  rc = br_engine_set_executor(s->e, xops, &cfg, err);
  json_decref(xo);
  if (rc) {
    br_server_close(s);
    return rc;
  }
  s->ex = br_farm_of(xops, br_engine_executor(s->e, NULL));
  br_farm_set_gone_check(s->ex, farm_req_gone);
  /* settings kept from before, then limits given now */
  const char *k;
  json_t *v;
  json_object_foreach(json_object_get(s->settings, "workers"), k, v) {
    json_t *d = json_object_get(v, "drain");
    br_farm_worker_set(s->ex, k, d ? json_is_true(d) : -1, json_object_get(v, "tags"), err);
  }
  json_object_foreach(json_object_get(s->settings, "limits"), k, v)
    if (json_is_integer(v)) br_farm_limit_set(s->ex, k, (int)json_integer_value(v), err);
  json_object_foreach(json_object_get(o->farm, "limits"), k, v)
    if (json_is_integer(v)) br_farm_limit_set(s->ex, k, (int)json_integer_value(v), err);
  br_engine_set_observer(s->e, observe, s);
  uv_timer_init(br_engine_loop(s->e), &s->timer);
  s->timer.data = s;
  uv_timer_start(&s->timer, on_timer, TIMER_MS, TIMER_MS);
  uv_unref((uv_handle_t *)&s->timer);
  br_http_opts ho = {.listen = o->listen, .tls_cert = o->tls_cert, .tls_key = o->tls_key,
                     .threads = o->threads, .auth = s->auth, .routes = routes, .ud = s};
  br_http_mount mount = depot_mount;
  if (o->depot_root) {
    br_depot_opts dopt = {.root = o->depot_root, .authorize = depot_authorize, .authorize_ud = s,
                          .cache = o->depot_cache, .log = o->depot_log,
                          .log_ud = o->depot_log_ud};
    rc = br_depot_open(&dopt, &s->depot, err);
    if (rc) {
      br_server_close(s);
      return rc;
    }
    mount.ud = s->depot;
    ho.mount = &mount;
    /* a depot request may wait on the disk (a sync): more threads, so
     * agents and the command line do not wait behind it */
    if (!o->threads) ho.threads = 4;
  }
  rc = br_http_start(&ho, &s->http, err);
  if (rc) {
    br_server_close(s);
    return rc;
  }
  *out = s;
  return BR_OK;
}

int br_server_port(const br_server *s) { return s->http ? br_http_port(s->http) : 0; }
br_engine *br_server_engine(br_server *s) { return s->e; }

int br_server_run(br_server *s, br_error *err) {
  int rc = br_engine_serve(s->e, err);
  return rc == BR_ECANCEL ? BR_OK : rc;
}

static void stop_fn(br_engine *e, void *ud) {
  (void)ud;
  br_engine_stop(e, false);
}

void br_server_stop(br_server *s) {
  pthread_rwlock_rdlock(&s->life);
  if (!s->closing) br_engine_post(s->e, stop_fn, s);
  pthread_rwlock_unlock(&s->life);
}

static void timer_closed(uv_handle_t *h) { (void)h; }

void br_server_close(br_server *s) {
  if (!s) return;
  pthread_rwlock_wrlock(&s->life);
  s->closing = true; /* nothing more is handed to the engine */
  pthread_rwlock_unlock(&s->life);
  atomic_store(&s->dead, true); /* what was handed over answers 503 */
  if (s->e) {
    if (s->timer.data) uv_close((uv_handle_t *)&s->timer, timer_closed);
    br_engine_free(s->e); /* runs posted work, answers the agents' waiting polls */
  }
  br_http_stop(s->http); /* answers whatever still waits (log followers) */
  br_depot_stop(s->depot); /* after the threads that call it */
  for (logwait *w = s->waiters; w;) {
    logwait *n = w->next;
    free(w->path);
    free(w);
    w = n;
  }
  for (sub *x = s->subs; x;) {
    sub *n = x->next;
    br_http_stream_release(x->stream);
    free(x);
    x = n;
  }
  for (size_t i = 0; i < RING; i++) free(s->ring[i]);
  for (size_t i = 0; i < s->npool; i++) br_store_close(s->pool[i]);
  free(s->pool);
  br_store_close(s->store);
  br_auth_close(s->auth);
  json_decref(s->settings);
  json_decref(s->cli_limits);
  free(s->store_uri);
  free(s->settings_file);
  pthread_rwlock_destroy(&s->life);
  pthread_mutex_destroy(&s->pool_mu);
  pthread_mutex_destroy(&s->ev_mu);
  pthread_mutex_destroy(&s->lw_mu);
  free(s);
}
