/* The agent executor: the server side of a farm of braid agents (see
 * include/braid/farm.h for the protocol).
 *
 * Design notes:
 * - It is a scheduling executor: the engine hands over every queued
 *   invocation (capacity is large); they wait here until an agent asks for
 *   work. Pending jobs sit in FIFO queues keyed by "shape" (their needs:
 *   cores, memory, GPUs, tags, limits, node), per submission group, per
 *   priority level. An agent's poll is filled level by level from the
 *   highest priority; within a level the group with the fewest running jobs
 *   goes first (fair share), and within a group the oldest job whose shape
 *   fits the agent. So one look at each shape's head decides, whatever the
 *   queue lengths.
 * - Durability before effect: an assignment goes through on_assign (the
 *   engine marks the task running); the poll is answered only after the
 *   engine's next commit (the `committed` op). Reports are acknowledged the
 *   same way, so an agent re-sends whatever was not acknowledged and the
 *   server keeps it at most once (sequence numbers per agent session; the
 *   engine ignores results of invocations that are not current).
 * - Agents are the authority on their own free resources: each poll says
 *   what is free; the server counts what it assigns in reply. Named limits,
 *   per-node limits and fair-share counts are kept here.
 * - Losing an agent: no poll or report for lost_after seconds (a waiting
 *   poll counts as presence while its connection is open: the timer looks
 *   at the connections of the waiting polls, see br_farm_set_gone_check,
 *   so a killed agent's count starts when its kernel closes them). Its
 *   invocations are reported lost (the engine runs them again within their
 *   retry bound), or cancelled when a cancel was asked for. An agent that
 *   comes back must register again; it is told to kill what is no longer
 *   its own. An agent that stops says so (leave): its jobs go at once.
 * - A poll whose connection has gone gets nothing: it is dropped before
 *   work is given to it, and looked at again once the assignment is
 *   committed, just before its answer goes; work whose answer could not be
 *   sent in full (br_farm_undelivered) is put back at once, as lost (the
 *   agent never had it), instead of waiting lost_after for an agent that
 *   will not run it.
 * - One id, one agent: agents send a random instance id (one per process)
 *   when they register. Another instance with the id of an agent that is
 *   alive (its poll waits on an open connection, or it was heard from
 *   within lost_after and its connection did not close) is refused with
 *   409, naming the other's host and address: two machines with one id
 *   (clones with one host name) would take each other's jobs away, each
 *   registration ending the other's as "came back without this job". A
 *   restart after a crash or kill -9 is a new instance too, but its old
 *   connection is closed, or (killed between two polls) it names the dead
 *   one as its "previous" instance (which it can only know by holding the
 *   lock of the agent's work folder that the dead one held): it is taken
 *   at once. (That lock alone would catch only two agents on one machine;
 *   the instance check catches clones of a machine too.) Registrations
 *   without an instance (older agents) keep the old rule: another host
 *   name with that id, alive, is refused.
 * - Restart: the engine adopts invocations that were running; they stay
 *   unconfirmed until their agent registers again listing them. Nothing
 *   new is dispatched for a recovery period, so limits are counted with
 *   the adopted work before new work starts.
 * - A periodic timer (200 ms) expires polls and finds lost agents; nothing
 *   else polls. */
#include <braid/farm.h>

#include <errno.h>
#include <fcntl.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uthash.h>

#define TICK_MS 200
#define GONE_LOOK_MS 1000
#define MAX_ID_LEN 128

const double br_farm_latency_buckets[12] = {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000, -1};

typedef struct agent agent;
typedef struct job job;
typedef struct shape shape;
typedef struct glevel glevel;
typedef struct level level;

typedef struct counter {
  char *name;
  int max; /* -1: no limit */
  int used;
  UT_hash_handle hh;
} counter;

typedef struct group {
  int64_t id;
  int running;
  struct fails {
    char *agent;
    int n;
    UT_hash_handle hh;
  } *fails;
  UT_hash_handle hh;
} group;

typedef struct resources {
  int slots, cores, gpus;
  int64_t memory_mb;
} resources;

typedef struct poll {
  agent *a;
  br_farm_reply fn;
  void *ud;
  json_t *work, *cancel;
  resources free;
  /* free counts the ends of the agent's jobs whose done events have seq up
   * to this (sent by the agent; 0: unknown, every done event adds) */
  int64_t released_seq;
  int64_t deadline_ms;
  bool with_events; /* it carried events: answered (with "ack") only after a commit */
  bool gone;        /* its connection closed: found when work was to go to it */
  struct poll *prev, *next;
} poll;

typedef struct deferred {
  br_farm_reply fn;
  void *ud;
  json_t *body;
  bool work; /* a poll's answer: looked at before it goes (its asker may have gone) */
  struct deferred *next;
} deferred;

enum { A_ONLINE, A_LOST, A_OFFLINE };

struct agent {
  char *id;
  char *host, *version;
  int state;
  int cores, slots, gpus;
  int64_t memory_mb;
  json_t *tags;      /* as registered */
  json_t *tags_set;  /* set by a user (overrides), or NULL */
  bool drain;
  char session[33];
  char instance[40]; /* the agent process's (see the top of the file), or "" */
  char address[64];  /* where it registered from */
  bool conn_gone;    /* its poll's connection closed: gone, unless it polls again */
  bool leaving;      /* it said it stops: nothing new goes to it */
  int64_t last_seen_ms;
  int64_t last_seq;
  poll *poll;        /* its waiting poll */
  json_t *cancels;   /* invocation ids to kill, sent with the next poll answer */
  job *jobs;         /* assigned to it */
  int n_jobs;
  resources free;    /* as its last poll said */
  UT_hash_handle hh;
};

enum { J_PENDING, J_ASSIGNED };

/* What an agent needs to run a job, kept compact while it waits (a backlog
 * can be large) and made into JSON when it is handed out. */
typedef struct spec {
  char **argv, **env;
  char *cwd, *progress, *task_name, *node;
  double timeout;
  int *codes; /* good codes, then retry codes */
  int n_good, n_retry;
  json_t *attrs; /* the task's attributes when it was queued (shared, read only) */
} spec;

struct job {
  int64_t id, task_id;
  int state;
  spec *spec; /* while pending */
  int cores, gpus;
  int64_t memory_mb;
  json_t *tags, *limits; /* arrays of names */
  char *node_key;
  int node_limit;
  int32_t priority;
  int64_t group_id;
  int64_t seq, ready_ms;
  char *log_path;
  int log_fd;
  bool counted;     /* its limits, node and group counts are taken */
  bool unconfirmed; /* adopted: its agent has not said it holds it yet */
  bool had;         /* its agent got it: it reported on it, or listed it */
  bool cancel_asked;
  agent *a;
  job *a_prev, *a_next; /* the agent's jobs */
  shape *sh;
  job *q_next;           /* the shape's queue */
  UT_hash_handle hh;
};

struct shape {
  char *key;
  glevel *gl;
  job *head, *tail;
  shape *next;
  UT_hash_handle hh;
};

struct glevel { /* one group at one priority */
  group *g;
  level *lv;
  shape *shapes; /* hash by key, also listed */
  int n;
  bool skip;
  glevel *next;
};

struct level {
  int32_t priority;
  glevel *groups;
  level *next; /* by priority, highest first */
};

struct br_executor {
  uv_loop_t *loop;
  br_exec_events ev;
  void (*notify)(void *ud, const char *kind, json_t *news);
  void *notify_ud;
  double poll_wait, lost_after, recover;
  int avoid_after;
  int64_t max_pending;
  int64_t recover_until_ms;
  job *jobs;
  agent *agents;
  group *groups;
  counter *limits, *nodes;
  level *levels;
  struct setting {
    char *id;
    int drain; /* -1: not set */
    json_t *tags;
    UT_hash_handle hh;
  } *settings;
  deferred *def_head, *def_tail;
  poll *waiting_head, *waiting_tail;
  br_farm_gone gone; /* has a poll's asker gone? (NULL: never asked) */
  int64_t gone_looked_ms;
  uv_timer_t timer;
  int64_t pending, running, seq;
  int64_t unconfirmed; /* adopted jobs whose agent has not come back yet */
  bool want_match, stopping;
  br_farm_stats st;
};

/* ---- helpers ---- */

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void *xcalloc(size_t n, size_t size) {
  void *p = calloc(n, size);
  if (!p) abort();
  return p;
}

static char *xstrdup(const char *s) {
  char *d = strdup(s ? s : "");
  if (!d) abort();
  return d;
}

static json_t *strv_json(char **v) {
  json_t *a = json_array();
  for (size_t i = 0; v && v[i]; i++) json_array_append_new(a, json_string(v[i]));
  return a;
}

static json_t *ints_json(const int *v, int n) {
  json_t *a = json_array();
  for (int i = 0; i < n; i++) json_array_append_new(a, json_integer(v[i]));
  return a;
}

static bool valid_id(const char *s) {
  if (!s || !*s || strlen(s) > MAX_ID_LEN) return false;
  for (const char *p = s; *p; p++)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
          *p == '-' || *p == '_' || *p == '.' || *p == ':'))
      return false;
  return true;
}

static json_t *names_of(const json_t *v) {
  json_t *a = json_array();
  size_t i;
  json_t *x;
  json_array_foreach(v, i, x) if (json_is_string(x)) json_array_append(a, x);
  return a;
}

static void notify(br_executor *ex, const char *kind, json_t *news) {
  if (ex->notify) ex->notify(ex->notify_ud, kind, news);
  json_decref(news);
}

static json_t *agent_json(br_executor *ex, agent *a);

static void notify_agent(br_executor *ex, agent *a) {
  if (ex->notify) notify(ex, "worker", agent_json(ex, a));
}

/* ---- answers ---- */

static void reply_now(br_farm_reply fn, void *ud, unsigned status, json_t *body) {
  fn(ud, status, body);
}

/* Answers after the engine's next commit. */
static void reply_later(br_executor *ex, br_farm_reply fn, void *ud, json_t *body) {
  deferred *d = xcalloc(1, sizeof *d);
  d->fn = fn;
  d->ud = ud;
  d->body = body;
  d->work = json_array_size(json_object_get(body, "work")) > 0;
  if (ex->def_tail) ex->def_tail->next = d;
  else ex->def_head = d;
  ex->def_tail = d;
}

static json_t *error_body(const char *msg) { return json_pack("{ss}", "error", msg); }

static void put_back(br_executor *ex, const json_t *work);

/* Gives the answers that waited for a commit. durable: the commit that
 * just ended holds what they say. Otherwise (stopping: made after the last
 * commit, or its commit failed; the engine's last commit, when it succeeds,
 * flushes them durable: agent_committed) what they say (a report taken,
 * work handed out) is not in the store: a 503 instead, and the agent sends
 * its report again, and asks for work, at the next server. */
static void answer_deferred(br_executor *ex, bool durable) {
  deferred *d = ex->def_head;
  ex->def_head = ex->def_tail = NULL;
  while (d) {
    deferred *n = d->next;
    if (!durable) {
      json_decref(d->body);
      d->fn(d->ud, 503, error_body("the server stopped before this was durable"));
    } else if (d->work && ex->gone && ex->gone(d->ud)) {
      /* its asker went while the assignment was being committed */
      d->fn(d->ud, 410, error_body("the connection closed before the answer"));
      put_back(ex, json_object_get(d->body, "work"));
      json_decref(d->body);
    } else {
      d->fn(d->ud, 200, d->body);
    }
    free(d);
    d = n;
  }
}

/* ---- counters: limits, nodes, groups ---- */

static counter *counter_get(counter **h, const char *name, bool create) {
  counter *c = NULL;
  HASH_FIND_STR(*h, name, c);
  if (!c && create) {
    c = xcalloc(1, sizeof *c);
    c->name = xstrdup(name);
    c->max = -1;
    HASH_ADD_KEYPTR(hh, *h, c->name, strlen(c->name), c);
  }
  return c;
}

static group *group_get(br_executor *ex, int64_t id) {
  group *g = NULL;
  HASH_FIND(hh, ex->groups, &id, sizeof id, g);
  if (!g) {
    g = xcalloc(1, sizeof *g);
    g->id = id;
    HASH_ADD(hh, ex->groups, id, sizeof g->id, g);
  }
  return g;
}

static int fails_of(group *g, const char *agent_id) {
  struct fails *f = NULL;
  HASH_FIND_STR(g->fails, agent_id, f);
  return f ? f->n : 0;
}

static void count_job(br_executor *ex, job *j, int d) {
  if ((d > 0) == j->counted) return;
  j->counted = d > 0;
  size_t i;
  json_t *x;
  json_array_foreach(j->limits, i, x) counter_get(&ex->limits, json_string_value(x), true)->used += d;
  if (j->node_key) {
    counter *c = counter_get(&ex->nodes, j->node_key, true);
    c->used += d;
    if (j->node_limit > 0) c->max = j->node_limit;
  }
  group_get(ex, j->group_id)->running += d;
}

/* ---- the pending queues ---- */

static level *level_get(br_executor *ex, int32_t prio) {
  level **pp = &ex->levels;
  while (*pp && (*pp)->priority > prio) pp = &(*pp)->next;
  if (*pp && (*pp)->priority == prio) return *pp;
  level *lv = xcalloc(1, sizeof *lv);
  lv->priority = prio;
  lv->next = *pp;
  *pp = lv;
  return lv;
}

static glevel *glevel_get(br_executor *ex, level *lv, int64_t gid) {
  glevel **pp = &lv->groups;
  while (*pp && (*pp)->g->id < gid) pp = &(*pp)->next;
  if (*pp && (*pp)->g->id == gid) return *pp;
  glevel *gl = xcalloc(1, sizeof *gl);
  gl->g = group_get(ex, gid);
  gl->lv = lv;
  gl->next = *pp;
  *pp = gl;
  return gl;
}

static char *shape_key(const job *j) {
  char *tags = json_dumps(j->tags, JSON_COMPACT), *lims = json_dumps(j->limits, JSON_COMPACT);
  char *k = NULL;
  if (asprintf(&k, "%d|%lld|%d|%s|%s|%s|%d", j->cores, (long long)j->memory_mb, j->gpus,
               tags ? tags : "", lims ? lims : "", j->node_key ? j->node_key : "",
               j->node_limit) < 0)
    abort();
  free(tags);
  free(lims);
  return k;
}

static void enqueue(br_executor *ex, job *j) {
  level *lv = level_get(ex, j->priority);
  glevel *gl = glevel_get(ex, lv, j->group_id);
  char *key = shape_key(j);
  shape *sh = NULL;
  HASH_FIND_STR(gl->shapes, key, sh);
  if (!sh) {
    sh = xcalloc(1, sizeof *sh);
    sh->key = key;
    sh->gl = gl;
    HASH_ADD_KEYPTR(hh, gl->shapes, sh->key, strlen(sh->key), sh);
  } else {
    free(key);
  }
  j->sh = sh;
  j->q_next = NULL;
  if (sh->tail) sh->tail->q_next = j;
  else sh->head = j;
  sh->tail = j;
  gl->n++;
  ex->pending++;
}

/* Takes j (the head of its shape, or anywhere: cancel) out of its queue. */
static void dequeue(br_executor *ex, job *j) {
  shape *sh = j->sh;
  if (!sh) return;
  job **pp = &sh->head, *prev = NULL;
  while (*pp && *pp != j) {
    prev = *pp;
    pp = &(*pp)->q_next;
  }
  if (*pp) {
    *pp = j->q_next;
    if (sh->tail == j) sh->tail = prev;
  }
  j->sh = NULL;
  j->q_next = NULL;
  glevel *gl = sh->gl;
  gl->n--;
  ex->pending--;
  if (!sh->head) {
    HASH_DEL(gl->shapes, sh);
    free(sh->key);
    free(sh);
  }
  if (gl->n == 0) {
    level *lv = gl->lv;
    glevel **pp2 = &lv->groups;
    while (*pp2 != gl) pp2 = &(*pp2)->next;
    *pp2 = gl->next;
    free(gl);
    if (!lv->groups) {
      level **pl = &ex->levels;
      while (*pl != lv) pl = &(*pl)->next;
      *pl = lv->next;
      free(lv);
    }
  }
}

/* ---- jobs ---- */

static job *job_find(br_executor *ex, int64_t id) {
  job *j = NULL;
  HASH_FIND(hh, ex->jobs, &id, sizeof id, j);
  return j;
}

static void agent_take(agent *a, job *j) {
  j->a = a;
  j->a_prev = NULL;
  j->a_next = a->jobs;
  if (a->jobs) a->jobs->a_prev = j;
  a->jobs = j;
  a->n_jobs++;
}

static void agent_drop(job *j) {
  agent *a = j->a;
  if (!a) return;
  if (j->a_prev) j->a_prev->a_next = j->a_next;
  else a->jobs = j->a_next;
  if (j->a_next) j->a_next->a_prev = j->a_prev;
  j->a_prev = j->a_next = NULL;
  j->a = NULL;
  a->n_jobs--;
}

static void strv_free(char **v) {
  for (size_t i = 0; v && v[i]; i++) free(v[i]);
  free(v);
}

static char **strv_dup(char *const *v) {
  if (!v) return NULL;
  size_t n = 0;
  while (v[n]) n++;
  char **d = xcalloc(n + 1, sizeof *d);
  for (size_t i = 0; i < n; i++) d[i] = xstrdup(v[i]);
  return d;
}

static void spec_free(spec *sp) {
  if (!sp) return;
  strv_free(sp->argv);
  strv_free(sp->env);
  free(sp->cwd);
  free(sp->progress);
  free(sp->task_name);
  free(sp->node);
  free(sp->codes);
  json_decref(sp->attrs);
  free(sp);
}

/* The work item an agent gets (see farm.h). */
static json_t *work_item(const job *j, int cores) {
  const spec *sp = j->spec;
  json_t *w = json_pack("{sIsIsssss[]sfsososisIsisOsOsIsisisIsI}", "id", (json_int_t)j->id, "task",
                        (json_int_t)j->task_id, "task_name", sp->task_name ? sp->task_name : "", "node",
                        sp->node ? sp->node : "", "argv", "timeout", sp->timeout, "good_codes",
                        ints_json(sp->codes, sp->n_good), "retry_codes",
                        ints_json(sp->codes + sp->n_good, sp->n_retry), "cores", cores, "memory_mb",
                        (json_int_t)j->memory_mb, "gpus", j->gpus, "tags", j->tags, "limits", j->limits,
                        "group", (json_int_t)j->group_id, "priority", (int)j->priority, "node_limit",
                        j->node_limit, "ready_ms", (json_int_t)j->ready_ms, "assigned_ms",
                        (json_int_t)now_ms());
  if (!w) return NULL;
  json_t *argv = json_object_get(w, "argv");
  for (size_t i = 0; sp->argv && sp->argv[i]; i++) json_array_append_new(argv, json_string(sp->argv[i]));
  json_object_set(w, "attrs", sp->attrs ? sp->attrs : json_object());
  if (sp->env && sp->env[0]) json_object_set_new(w, "env", strv_json(sp->env));
  if (sp->cwd) json_object_set_new(w, "cwd", json_string(sp->cwd));
  if (sp->progress) json_object_set_new(w, "progress", json_string(sp->progress));
  if (j->node_key) json_object_set_new(w, "node_key", json_string(j->node_key));
  return w;
}

static void job_free(br_executor *ex, job *j) {
  if (j->unconfirmed) ex->unconfirmed--;
  if (j->sh) dequeue(ex, j);
  if (j->a) {
    agent_drop(j);
    ex->running--;
  }
  count_job(ex, j, -1);
  HASH_DEL(ex->jobs, j);
  if (j->log_fd >= 0) close(j->log_fd);
  spec_free(j->spec);
  json_decref(j->tags);
  json_decref(j->limits);
  free(j->node_key);
  free(j->log_path);
  free(j);
}

static job *job_new(br_executor *ex, int64_t id, int64_t task_id) {
  job *j = xcalloc(1, sizeof *j);
  j->id = id;
  j->task_id = task_id;
  j->log_fd = -1;
  j->tags = json_array();
  j->limits = json_array();
  HASH_ADD(hh, ex->jobs, id, sizeof j->id, j);
  return j;
}

/* Reports j finished without its agent (lost, or cancelled while lost) and
 * forgets it. */
static void job_end(br_executor *ex, job *j, br_inv_status status, const char *msg) {
  br_inv_result res = {.invocation_id = j->id, .task_id = j->task_id,
                       .status = j->cancel_asked ? BR_INV_CANCELLED : status,
                       .exit_code = -1, .error = (char *)msg};
  job_free(ex, j);
  if (res.status == BR_INV_LOST) ex->st.lost_invocations++;
  ex->want_match = true;
  if (ex->ev.on_done) ex->ev.on_done(ex->ev.ud, &res);
}

/* ---- matching ---- */

static json_t *agent_tags(agent *a) { return a->tags_set ? a->tags_set : a->tags; }

static bool has_tags(agent *a, json_t *need) {
  json_t *have = agent_tags(a);
  size_t i, k;
  json_t *x, *y;
  json_array_foreach(need, i, x) {
    bool found = false;
    json_array_foreach(have, k, y) if (json_equal(x, y)) {
      found = true;
      break;
    }
    if (!found) return false;
  }
  return true;
}

static int cores_on(const job *j, const agent *a) {
  (void)a;
  return j->cores > 0 ? j->cores : 1;
}

static bool eligible(const agent *a) { return a->state == A_ONLINE && !a->drain && !a->leaving; }

/* Is the agent avoided for this group, and is there another agent to go to? */
static bool avoided(br_executor *ex, group *g, agent *a) {
  if (ex->avoid_after <= 0 || fails_of(g, a->id) < ex->avoid_after) return false;
  agent *o, *tmp;
  HASH_ITER(hh, ex->agents, o, tmp)
  if (o != a && eligible(o) && fails_of(g, o->id) < ex->avoid_after) return true;
  return false; /* every agent failed it: better than waiting forever */
}

/* Whether what a has free now (fr) takes j. */
static bool free_for(const job *j, const agent *a, const resources *fr) {
  return fr->slots >= 1 && fr->cores >= cores_on(j, a) && fr->memory_mb >= j->memory_mb &&
         fr->gpus >= j->gpus;
}

/* Needs are hard: a job waits for a machine big enough. */
static bool too_small(const job *j, const agent *a) {
  return j->cores > a->cores || (j->memory_mb > a->memory_mb && a->memory_mb > 0) ||
         j->gpus > a->gpus;
}

/* A limit set on the farm with all its tokens taken (c: NULL for a name
 * the farm does not set, which limits nothing). */
static bool limit_full(const counter *c) { return c && c->max >= 0 && c->used >= c->max; }

/* j's node's counter when it runs its max_running already, else NULL. */
static counter *node_full(br_executor *ex, const job *j) {
  if (!j->node_key || j->node_limit <= 0) return NULL;
  counter *c = counter_get(&ex->nodes, j->node_key, false);
  return c && c->used >= j->node_limit ? c : NULL;
}

static bool fits(br_executor *ex, job *j, agent *a, const resources *fr) {
  if (!free_for(j, a, fr) || too_small(j, a) || !has_tags(a, j->tags)) return false;
  size_t i;
  json_t *x;
  json_array_foreach(j->limits, i, x) {
    if (limit_full(counter_get(&ex->limits, json_string_value(x), false))) return false;
  }
  return !node_full(ex, j);
}

static job *first_fit(br_executor *ex, glevel *gl, agent *a, const resources *fr) {
  if (avoided(ex, gl->g, a)) return NULL;
  job *best = NULL;
  for (shape *sh = gl->shapes; sh; sh = sh->hh.next)
    if (sh->head && (!best || sh->head->seq < best->seq) && fits(ex, sh->head, a, fr))
      best = sh->head;
  return best;
}

static void record_latency(br_executor *ex, int64_t ms) {
  if (ms < 0) ms = 0;
  ex->st.lat_count++;
  ex->st.lat_sum_ms += (double)ms;
  int b = 0;
  while (b < 11 && (double)ms > br_farm_latency_buckets[b]) b++;
  ex->st.lat_buckets[b]++;
}

/* Gives j to a (the poll p answers). Returns false when the task no longer
 * wants it (then it is forgotten). */
static bool assign(br_executor *ex, job *j, agent *a, poll *p) {
  dequeue(ex, j);
  if (!ex->ev.on_assign || !ex->ev.on_assign(ex->ev.ud, j->id, j->task_id, a->id)) {
    job_free(ex, j);
    return false;
  }
  j->state = J_ASSIGNED;
  agent_take(a, j);
  ex->running++;
  count_job(ex, j, +1);
  int c = cores_on(j, a);
  p->free.slots--;
  p->free.cores -= c;
  p->free.memory_mb -= j->memory_mb;
  p->free.gpus -= j->gpus;
  json_t *w = work_item(j, c);
  if (w) json_array_append_new(p->work, w);
  spec_free(j->spec); /* the agent has it now */
  j->spec = NULL;
  record_latency(ex, now_ms() - j->ready_ms);
  ex->st.dispatched++;
  return true;
}

static level *level_find(br_executor *ex, int32_t prio) {
  for (level *lv = ex->levels; lv; lv = lv->next)
    if (lv->priority == prio) return lv;
  return NULL;
}

/* Fills the poll from one priority level: the group with the fewest running
 * jobs first (fair share), its oldest job that fits. */
static int fill_level(br_executor *ex, int32_t prio, agent *a, poll *p) {
  int got = 0;
  level *lv = level_find(ex, prio);
  if (!lv) return 0;
  for (glevel *gl = lv->groups; gl; gl = gl->next) gl->skip = false;
  while (p->free.slots > 0 && (lv = level_find(ex, prio))) {
    glevel *best = NULL;
    for (glevel *gl = lv->groups; gl; gl = gl->next)
      if (!gl->skip && gl->n > 0 &&
          (!best || gl->g->running < best->g->running ||
           (gl->g->running == best->g->running && gl->g->id < best->g->id)))
        best = gl;
    if (!best) break;
    job *j = first_fit(ex, best, a, &p->free);
    if (!j) {
      best->skip = true;
      continue;
    }
    /* the first work for this poll: is anyone still there to take it? (a
     * long poll's agent may have died meanwhile; asked only now, so an
     * idle farm makes no system calls for it) */
    if (!json_array_size(p->work) && ex->gone && ex->gone(p->ud)) {
      p->gone = true;
      break;
    }
    if (assign(ex, j, a, p)) got++;
  }
  return got;
}

static int fill(br_executor *ex, agent *a, poll *p) {
  if (ex->stopping || !eligible(a) || now_ms() < ex->recover_until_ms) return 0;
  int got = 0;
  level *lv = ex->levels;
  while (lv && p->free.slots > 0 && !p->gone) {
    int32_t prio = lv->priority;
    got += fill_level(ex, prio, a, p);
    lv = ex->levels; /* levels may have gone: find the next lower one afresh */
    while (lv && lv->priority >= prio) lv = lv->next;
  }
  return got;
}

/* ---- polls ---- */

static void waiting_remove(br_executor *ex, poll *p) {
  if (p->prev) p->prev->next = p->next;
  else if (ex->waiting_head == p) ex->waiting_head = p->next;
  if (p->next) p->next->prev = p->prev;
  else if (ex->waiting_tail == p) ex->waiting_tail = p->prev;
  p->prev = p->next = NULL;
  if (p->a && p->a->poll == p) p->a->poll = NULL;
}

static json_t *poll_body(poll *p) {
  json_t *b = json_pack("{sOsO}", "work", p->work, "cancel", p->cancel);
  if (p->with_events) json_object_set_new(b, "ack", json_integer(p->a->last_seq));
  return b;
}

static void poll_free(poll *p) {
  json_decref(p->work);
  json_decref(p->cancel);
  free(p);
}

/* Answers a waiting poll now, or after the next commit when it carried
 * events (their acknowledgement must not come before they are durable). */
static void poll_answer_now(br_executor *ex, poll *p, unsigned status, json_t *body) {
  waiting_remove(ex, p);
  if (p->with_events && status == 200 && !body) reply_later(ex, p->fn, p->ud, poll_body(p));
  else reply_now(p->fn, p->ud, status, body ? body : poll_body(p));
  poll_free(p);
}

static void poll_answer_later(br_executor *ex, poll *p) {
  waiting_remove(ex, p);
  reply_later(ex, p->fn, p->ud, poll_body(p));
  poll_free(p);
}

/* Drops a poll whose asker has gone (p->gone): its agent is taken as gone
 * from now on (lost after lost_after unless it polls again), and what the
 * poll was to carry (cancels) waits for the next one. */
static void drop_gone(br_executor *ex, poll *p) {
  agent *a = p->a;
  a->conn_gone = true;
  a->last_seen_ms = now_ms(); /* it was there until now */
  json_array_extend(a->cancels, p->cancel);
  json_array_clear(p->cancel);
  poll_answer_now(ex, p, 410, error_body("the connection closed"));
}

static void match_waiting(br_executor *ex) {
  ex->want_match = false;
  if (ex->stopping || !ex->levels) return;
  for (poll *p = ex->waiting_head, *next; p && ex->levels; p = next) {
    next = p->next;
    int got = fill(ex, p->a, p);
    if (p->gone) drop_gone(ex, p);
    else if (got > 0) poll_answer_later(ex, p);
  }
}

/* ---- agents ---- */

static agent *agent_find(br_executor *ex, const char *id) {
  agent *a = NULL;
  if (id) HASH_FIND_STR(ex->agents, id, a);
  return a;
}

static agent *agent_new(br_executor *ex, const char *id) {
  agent *a = xcalloc(1, sizeof *a);
  a->id = xstrdup(id);
  a->host = xstrdup(id);
  a->version = xstrdup("");
  a->tags = json_array();
  a->cancels = json_array();
  a->state = A_OFFLINE;
  a->last_seen_ms = now_ms();
  struct setting *s = NULL;
  HASH_FIND_STR(ex->settings, id, s);
  if (s) {
    a->drain = s->drain > 0;
    if (s->tags) a->tags_set = json_incref(s->tags);
  }
  HASH_ADD_KEYPTR(hh, ex->agents, a->id, strlen(a->id), a);
  return a;
}

static const char *state_name(const agent *a) {
  switch (a->state) {
  case A_ONLINE: return a->drain ? "draining" : a->n_jobs ? "busy" : "idle";
  case A_LOST: return "lost";
  default: return "offline";
  }
}

static json_t *agent_json(br_executor *ex, agent *a) {
  (void)ex;
  json_t *running = json_array();
  for (job *j = a->jobs; j; j = j->a_next)
    json_array_append_new(running, json_pack("{sIsI}", "id", (json_int_t)j->id, "task",
                                             (json_int_t)j->task_id));
  json_t *j = json_pack("{sssssssisisIsisOsbsos{sisisIsi}sIss}", "id", a->id, "host", a->host,
                        "state", state_name(a), "cores", a->cores, "slots", a->slots, "memory_mb",
                        (json_int_t)a->memory_mb, "gpus", a->gpus, "tags", agent_tags(a),
                        "drain", a->drain, "running", running, "free", "slots", a->free.slots,
                        "cores", a->free.cores, "memory_mb", (json_int_t)a->free.memory_mb,
                        "gpus", a->free.gpus, "last_seen_ms", (json_int_t)a->last_seen_ms,
                        "version", a->version);
  if (j && a->address[0]) json_object_set_new(j, "address", json_string(a->address));
  return j;
}

static void lose_agent(br_executor *ex, agent *a, const char *why) {
  char msg[512];
  snprintf(msg, sizeof msg, "agent %s lost: %s", a->id, why);
  a->state = A_LOST;
  if (a->poll) poll_answer_now(ex, a->poll, 409, error_body("this agent was declared lost: register again"));
  while (a->jobs) job_end(ex, a->jobs, BR_INV_LOST, msg);
  json_array_clear(a->cancels);
  notify_agent(ex, a);
}

static bool session_ok(agent *a, const json_t *req) {
  const char *s = json_string_value(json_object_get(req, "session"));
  return a && a->state == A_ONLINE && s && strcmp(s, a->session) == 0;
}

static int64_t jint(const json_t *o, const char *k, int64_t dflt) {
  json_t *v = json_object_get(o, k);
  return json_is_integer(v) ? json_integer_value(v) : json_is_real(v) ? (int64_t)json_real_value(v) : dflt;
}

/* Is a's id in use by another live agent than the one registering? (see
 * the top of the file) */
static bool id_in_use(br_executor *ex, agent *a, const json_t *req) {
  if (a->state != A_ONLINE) return false;
  const char *inst = json_string_value(json_object_get(req, "instance"));
  const char *host = json_string_value(json_object_get(req, "host"));
  bool recent = now_ms() - a->last_seen_ms < (int64_t)(ex->lost_after * 1000);
  if (!inst || !*inst || !a->instance[0]) /* an older agent: by host name only */
    return host && strcmp(a->host, host) != 0 && recent;
  if (strcmp(inst, a->instance) == 0) return false; /* the same process, again */
  const char *prev = json_string_value(json_object_get(req, "previous"));
  if (prev && strcmp(prev, a->instance) == 0) return false; /* its restart: it is gone */
  if (a->poll) { /* the other waits: alive while its connection is open */
    if (!ex->gone || !ex->gone(a->poll->ud)) return true;
    drop_gone(ex, a->poll);
    return false;
  }
  return recent && !a->conn_gone;
}

void br_farm_register(br_executor *ex, const json_t *req, br_farm_reply fn, void *ud) {
  const char *id = json_string_value(json_object_get(req, "id"));
  if (!valid_id(id))
    return reply_now(fn, ud, 400, error_body("register: \"id\" must be 1-128 letters, digits or -_.:"));
  json_t *held = json_object_get(req, "held");
  if (held && !json_is_array(held))
    return reply_now(fn, ud, 400, error_body("register: \"held\" must be a list"));
  json_t *tags = json_object_get(req, "tags");
  if (tags && !json_is_array(tags))
    return reply_now(fn, ud, 400, error_body("register: \"tags\" must be a list of names"));
  if (ex->stopping) return reply_now(fn, ud, 503, error_body("the server is stopping"));
  agent *a = agent_find(ex, id);
  if (a && id_in_use(ex, a, req)) { /* see the top of the file */
    char msg[768], ago[64] = "";
    snprintf(ago, sizeof ago, ", heard from %.0f s ago",
             (double)(now_ms() - a->last_seen_ms) / 1000);
    snprintf(msg, sizeof msg,
             "agent id '%s' is in use by another agent (host '%s'%s%s%s): two agents with one "
             "id take each other's jobs; give this one another --id",
             id, a->host, a->address[0] ? ", at " : "", a->address, a->poll ? ", polling" : ago);
    return reply_now(fn, ud, 409, error_body(msg));
  }
  if (!a) a = agent_new(ex, id);
  if (a->poll) poll_answer_now(ex, a->poll, 409, error_body("superseded by a new registration"));
  free(a->host);
  free(a->version);
  const char *host = json_string_value(json_object_get(req, "host"));
  const char *version = json_string_value(json_object_get(req, "version"));
  a->host = xstrdup(host ? host : id);
  a->version = xstrdup(version ? version : "");
  const char *instance = json_string_value(json_object_get(req, "instance"));
  const char *address = json_string_value(json_object_get(req, "address"));
  snprintf(a->instance, sizeof a->instance, "%s", instance ? instance : "");
  snprintf(a->address, sizeof a->address, "%s", address ? address : "");
  a->conn_gone = false;
  a->leaving = false;
  a->cores = (int)jint(req, "cores", 1);
  if (a->cores < 1) a->cores = 1;
  a->slots = (int)jint(req, "slots", a->cores);
  if (a->slots < 1) a->slots = 1;
  a->memory_mb = jint(req, "memory_mb", 0);
  a->gpus = (int)jint(req, "gpus", 0);
  json_decref(a->tags);
  a->tags = names_of(tags);
  a->free = (resources){.slots = a->slots, .cores = a->cores, .memory_mb = a->memory_mb, .gpus = a->gpus};
  /* what it holds against what we think it holds */
  json_t *cancel = json_array();
  size_t i;
  json_t *h;
  json_array_foreach(held, i, h) {
    int64_t inv = jint(h, "id", 0);
    job *j = job_find(ex, inv);
    if (!j || j->a != a || j->state != J_ASSIGNED) {
      json_array_append_new(cancel, json_integer(inv));
      continue;
    }
    j->had = true;
    if (j->unconfirmed) { /* adopted after a restart: count it as it was */
      j->unconfirmed = false;
      ex->unconfirmed--;
      count_job(ex, j, -1);
      json_decref(j->limits);
      j->limits = names_of(json_object_get(h, "limits"));
      const char *nk = json_string_value(json_object_get(h, "node_key"));
      free(j->node_key);
      j->node_key = nk ? xstrdup(nk) : NULL;
      j->node_limit = (int)jint(h, "node_limit", 0);
      count_job(ex, j, +1);
    }
  }
  for (job *j = a->jobs, *next; j; j = next) {
    next = j->a_next;
    bool listed = false;
    json_array_foreach(held, i, h) if (jint(h, "id", 0) == j->id) listed = true;
    if (!listed) job_end(ex, j, BR_INV_LOST, "the agent came back without this job");
  }
  json_array_clear(a->cancels);
  for (job *j = a->jobs; j; j = j->a_next)
    if (j->cancel_asked) json_array_append_new(a->cancels, json_integer(j->id));
  if (ex->recover_until_ms && ex->unconfirmed == 0) ex->recover_until_ms = 0; /* all are back */
  unsigned char raw[16];
  RAND_bytes(raw, sizeof raw);
  for (int k = 0; k < 16; k++) snprintf(a->session + 2 * k, 3, "%02x", raw[k]);
  a->state = A_ONLINE;
  a->last_seen_ms = now_ms();
  a->last_seq = 0;
  ex->want_match = true;
  notify_agent(ex, a);
  reply_now(fn, ud, 200,
            json_pack("{sssfsfso}", "session", a->session, "poll_wait_s", ex->poll_wait,
                      "lost_after_s", ex->lost_after, "cancel", cancel));
}

static void read_free(const json_t *req, agent *a, resources *r) {
  json_t *f = json_object_get(req, "free");
  r->slots = (int)jint(f, "slots", a->slots);
  r->cores = (int)jint(f, "cores", a->cores);
  r->memory_mb = jint(f, "memory_mb", a->memory_mb);
  r->gpus = (int)jint(f, "gpus", a->gpus);
}

static void apply_events(br_executor *ex, agent *a, const json_t *events);

void br_farm_poll(br_executor *ex, const char *agent_id, const json_t *req, br_farm_reply fn,
                  void *ud) {
  agent *a = agent_find(ex, agent_id);
  if (!session_ok(a, req))
    return reply_now(fn, ud, 409, error_body("unknown agent or session: register again"));
  if (ex->stopping) return reply_now(fn, ud, 503, error_body("the server is stopping"));
  json_t *events = json_object_get(req, "events");
  if (events && !json_is_array(events))
    return reply_now(fn, ud, 400, error_body("poll: \"events\" must be a list"));
  a->last_seen_ms = now_ms();
  a->conn_gone = false;
  if (a->poll) poll_answer_now(ex, a->poll, 200, NULL); /* superseded: the agent gave up on it */
  /* what happened since (a result, say) comes with the request for more:
   * one request instead of two; the answer then waits for the commit */
  if (events) apply_events(ex, a, events);
  poll *p = xcalloc(1, sizeof *p);
  p->a = a;
  p->fn = fn;
  p->ud = ud;
  p->work = json_array();
  p->with_events = events != NULL;
  p->cancel = a->cancels;
  a->cancels = json_array();
  read_free(req, a, &p->free);
  p->released_seq = jint(req, "released_seq", 0);
  a->free = p->free;
  int64_t wait = jint(req, "wait_ms", (int64_t)(ex->poll_wait * 1000));
  int64_t cap = (int64_t)(ex->poll_wait * 1000);
  if (wait > cap) wait = cap;
  if (wait < 0) wait = 0;
  p->deadline_ms = a->last_seen_ms + wait;
  /* listed first: fill() may answer it */
  a->poll = p;
  p->prev = ex->waiting_tail;
  if (ex->waiting_tail) ex->waiting_tail->next = p;
  else ex->waiting_head = p;
  ex->waiting_tail = p;
  int got = fill(ex, a, p);
  if (p->gone) drop_gone(ex, p);
  else if (got > 0) poll_answer_later(ex, p);
  else if (json_array_size(p->cancel) || wait == 0) poll_answer_now(ex, p, 200, NULL);
}

static void write_output(br_executor *ex, job *j, int64_t off, const char *data, size_t len) {
  if (!j->log_path || off < 0) return;
  if (j->log_fd < 0) j->log_fd = open(j->log_path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (j->log_fd < 0) return;
  size_t done = 0;
  while (done < len) { /* at an offset: a chunk sent twice lands in the same place */
    ssize_t w = pwrite(j->log_fd, data + done, len - done, (off_t)(off + (int64_t)done));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) break;
    done += (size_t)w;
  }
  if (ex->notify) /* log followers wait for this */
    notify(ex, "output", json_pack("{sIsIsI}", "inv", (json_int_t)j->id, "task", (json_int_t)j->task_id,
                                   "size", (json_int_t)(off + (int64_t)done)));
}

static br_inv_status parse_status(const char *s) {
  static const br_inv_status all[] = {BR_INV_OK, BR_INV_FAILED, BR_INV_RETRY, BR_INV_TIMEOUT,
                                      BR_INV_CANCELLED, BR_INV_LOST, BR_INV_SPAWN_ERROR};
  for (size_t i = 0; s && i < sizeof all / sizeof *all; i++)
    if (strcmp(s, br_inv_status_name(all[i])) == 0) return all[i];
  return BR_INV_FAILED;
}

static void done_event(br_executor *ex, agent *a, job *j, const json_t *e, int64_t seq) {
  json_t *set = json_object_get(e, "set_attrs");
  br_inv_result res = {
      .invocation_id = j->id,
      .task_id = j->task_id,
      .status = parse_status(json_string_value(json_object_get(e, "status"))),
      .exit_code = (int)jint(e, "exit_code", -1),
      .term_signal = (int)jint(e, "signal", 0),
      .runtime = json_number_value(json_object_get(e, "runtime")),
      .peak_rss_kb = jint(e, "peak_rss_kb", 0),
      .queued = json_number_value(json_object_get(e, "queued")),
      .log_tail = (char *)json_string_value(json_object_get(e, "log_tail")),
      .set_attrs = json_is_object(set) ? set : NULL,
      .error = (char *)json_string_value(json_object_get(e, "error")),
  };
  if (res.status == BR_INV_FAILED || res.status == BR_INV_RETRY || res.status == BR_INV_TIMEOUT ||
      res.status == BR_INV_SPAWN_ERROR) {
    group *g = group_get(ex, j->group_id);
    struct fails *f = NULL;
    HASH_FIND_STR(g->fails, a->id, f);
    if (!f) {
      f = xcalloc(1, sizeof *f);
      f->agent = xstrdup(a->id);
      HASH_ADD_KEYPTR(hh, g->fails, f->agent, strlen(f->agent), f);
    }
    f->n++;
  }
  ex->st.reported++;
  ex->want_match = true;
  /* The agent waits with what was free when it asked: this is free now
   * too, unless the job had ended when it asked (its report went on
   * another connection and came after the poll): counted already. */
  if (a->poll && !(seq > 0 && seq <= a->poll->released_seq)) {
    poll *p = a->poll;
    int c = cores_on(j, a);
    p->free.slots++;
    p->free.cores += c;
    p->free.memory_mb += j->memory_mb;
    p->free.gpus += j->gpus;
    a->free = p->free;
  }
  json_t *keep = json_incref((json_t *)e); /* res borrows from it */
  job_free(ex, j);
  if (ex->ev.on_done) ex->ev.on_done(ex->ev.ud, &res);
  json_decref(keep);
}

/* Applies an agent's events in order; those at or below its last sequence
 * number were applied already. */
static void apply_events(br_executor *ex, agent *a, const json_t *events) {
  size_t i;
  json_t *e;
  json_array_foreach(events, i, e) {
    int64_t seq = jint(e, "seq", 0);
    if (seq && seq <= a->last_seq) continue; /* sent again: done already */
    if (seq) a->last_seq = seq;
    job *j = job_find(ex, jint(e, "inv", 0));
    if (!j || j->a != a) continue; /* not (or no longer) this agent's */
    j->had = true;
    const char *type = json_string_value(json_object_get(e, "type"));
    if (!type) continue;
    if (strcmp(type, "start") == 0) {
      if (ex->ev.on_start) ex->ev.on_start(ex->ev.ud, j->id, j->task_id);
    } else if (strcmp(type, "progress") == 0) {
      double v = json_number_value(json_object_get(e, "value"));
      if (ex->ev.on_progress) ex->ev.on_progress(ex->ev.ud, j->id, j->task_id, v);
      if (ex->notify) /* for event streams: progress is not stored */
        notify(ex, "progress", json_pack("{sIsIsf}", "task", (json_int_t)j->task_id, "invocation",
                                         (json_int_t)j->id, "value", v));
    } else if (strcmp(type, "output") == 0) {
      json_t *d = json_object_get(e, "data");
      if (json_is_string(d)) write_output(ex, j, jint(e, "offset", -1), json_string_value(d), json_string_length(d));
    } else if (strcmp(type, "spawn") == 0) {
      json_t *attrs = json_object_get(e, "attrs");
      if (ex->ev.on_spawn)
        ex->ev.on_spawn(ex->ev.ud, j->id, j->task_id, json_string_value(json_object_get(e, "name")),
                        json_is_object(attrs) ? json_deep_copy(attrs) : json_object());
    } else if (strcmp(type, "done") == 0) {
      done_event(ex, a, j, e, seq);
    }
  }
}

void br_farm_report(br_executor *ex, const char *agent_id, const json_t *req, br_farm_reply fn,
                    void *ud) {
  agent *a = agent_find(ex, agent_id);
  if (!session_ok(a, req))
    return reply_now(fn, ud, 409, error_body("unknown agent or session: register again"));
  json_t *events = json_object_get(req, "events");
  if (!json_is_array(events)) return reply_now(fn, ud, 400, error_body("report: \"events\" must be a list"));
  a->last_seen_ms = now_ms();
  a->conn_gone = false;
  if (json_is_true(json_object_get(req, "leaving")) && !a->leaving) {
    /* it stops: before its killed jobs (in these events) are run again,
     * so none of them, and nothing else, is given to it meanwhile */
    a->leaving = true;
    if (a->poll) poll_answer_now(ex, a->poll, 200, NULL);
    notify_agent(ex, a);
  }
  apply_events(ex, a, events);
  reply_later(ex, fn, ud, json_pack("{sI}", "ack", (json_int_t)a->last_seq));
}

void br_farm_leave(br_executor *ex, const char *agent_id, const json_t *req, br_farm_reply fn,
                   void *ud) {
  agent *a = agent_find(ex, agent_id);
  if (!session_ok(a, req))
    return reply_now(fn, ud, 409, error_body("unknown agent or session: nothing to leave"));
  if (a->poll) poll_answer_now(ex, a->poll, 200, NULL);
  char msg[300];
  snprintf(msg, sizeof msg, "agent %s stopped", a->id);
  /* what it did not report (its reports go first, so normally nothing) runs elsewhere */
  while (a->jobs) job_end(ex, a->jobs, BR_INV_LOST, msg);
  json_array_clear(a->cancels);
  a->state = A_OFFLINE;
  a->session[0] = 0;
  a->last_seen_ms = now_ms();
  notify_agent(ex, a);
  reply_later(ex, fn, ud, json_pack("{ss}", "left", a->id));
}

/* Ends the jobs of an answer's work list that their agent never had (the
 * answer did not reach it): lost now, so they run again at once. */
static void put_back(br_executor *ex, const json_t *work) {
  size_t i;
  json_t *x;
  json_array_foreach(work, i, x) {
    job *j = job_find(ex, json_integer_value(json_object_get(x, "id")));
    if (!j || j->state != J_ASSIGNED || !j->a || j->had) continue;
    agent *a = j->a;
    a->conn_gone = true; /* its connection broke: gone unless it polls again */
    char msg[300];
    snprintf(msg, sizeof msg, "agent %s's connection closed before it got this job", a->id);
    job_end(ex, j, BR_INV_LOST, msg);
  }
}

void br_farm_undelivered(br_executor *ex, const json_t *work) { put_back(ex, work); }

void br_farm_set_gone_check(br_executor *ex, br_farm_gone gone) { ex->gone = gone; }

/* ---- the timer: poll deadlines, lost agents ---- */

static void tick(uv_timer_t *t) {
  br_executor *ex = t->data;
  int64_t now = now_ms();
  /* once a second, whether the waiting polls' agents are still there */
  bool look = ex->gone && now - ex->gone_looked_ms >= GONE_LOOK_MS;
  if (look) ex->gone_looked_ms = now;
  for (poll *p = ex->waiting_head, *next; p; p = next) {
    next = p->next;
    if (look && ex->gone(p->ud)) {
      drop_gone(ex, p);
    } else if (p->deadline_ms <= now) {
      p->a->last_seen_ms = now; /* it was there all along */
      poll_answer_now(ex, p, 200, NULL);
    }
  }
  int64_t lost_ms = (int64_t)(ex->lost_after * 1000);
  agent *a, *tmp;
  HASH_ITER(hh, ex->agents, a, tmp) {
    /* an agent that left (or was never here) has nothing to lose */
    if (a->state == A_LOST || a->poll || (a->state == A_OFFLINE && !a->jobs)) continue;
    if (now - a->last_seen_ms > lost_ms) {
      char why[160];
      double s = (double)(now - a->last_seen_ms) / 1000;
      if (a->conn_gone)
        snprintf(why, sizeof why, "its connection closed %.0f s ago and it has not come back", s);
      else
        snprintf(why, sizeof why, "no poll or report for %.0f s", s);
      lose_agent(ex, a, why);
    }
  }
  /* recovery ends when every adopted job is accounted for, or at its end */
  if (ex->recover_until_ms && (now >= ex->recover_until_ms || ex->unconfirmed == 0)) {
    ex->recover_until_ms = 0;
    ex->want_match = true;
  }
  if (ex->want_match) match_waiting(ex);
}

/* ---- the ops ---- */

static double opt_num(const json_t *o, const char *k, double dflt) {
  json_t *v = json_object_get(o, k);
  return json_is_number(v) ? json_number_value(v) : dflt;
}

static int agent_create(const br_exec_config *cfg, const br_exec_events *ev, br_executor **out,
                        br_error *err) {
  if (!cfg || !cfg->loop) return br_error_set(err, BR_EINVAL, "agent executor: no loop");
  br_executor *ex = xcalloc(1, sizeof *ex);
  ex->loop = cfg->loop;
  if (ev) ex->ev = *ev;
  ex->notify = cfg->notify;
  ex->notify_ud = cfg->notify_ud;
  const json_t *o = cfg->options;
  ex->poll_wait = opt_num(o, "poll_wait", 15);
  ex->lost_after = opt_num(o, "lost_after", 30);
  ex->recover = opt_num(o, "recover", ex->lost_after);
  ex->avoid_after = (int)opt_num(o, "avoid_after", 3);
  ex->max_pending = (int64_t)opt_num(o, "max_pending", 1000000);
  if (ex->poll_wait <= 0 || ex->lost_after <= 0) {
    free(ex);
    return br_error_set(err, BR_EINVAL, "agent executor: poll_wait and lost_after must be positive");
  }
  const char *name;
  json_t *v;
  json_object_foreach(json_object_get(o, "limits"), name, v) {
    if (!json_is_integer(v) || json_integer_value(v) < 0) {
      counter *c, *tmp;
      HASH_ITER(hh, ex->limits, c, tmp) {
        HASH_DEL(ex->limits, c);
        free(c->name);
        free(c);
      }
      free(ex);
      return br_error_set(err, BR_EINVAL, "limit '%s' must be a number of at least 0", name);
    }
    counter_get(&ex->limits, name, true)->max = (int)json_integer_value(v);
  }
  uv_timer_init(ex->loop, &ex->timer);
  ex->timer.data = ex;
  uv_timer_start(&ex->timer, tick, TICK_MS, TICK_MS);
  uv_unref((uv_handle_t *)&ex->timer);
  *out = ex;
  return BR_OK;
}

static int agent_submit(br_executor *ex, const br_invocation *inv, br_error *err) {
  if (ex->stopping) return br_error_set(err, BR_ESTATE, "the farm is stopping");
  if (!inv->argv || !inv->argv[0])
    return br_error_set(err, BR_EINVAL, "invocation %lld has no command", (long long)inv->id);
  if (job_find(ex, inv->id)) return br_error_set(err, BR_ESTATE, "invocation %lld is here already", (long long)inv->id);
  job *j = job_new(ex, inv->id, inv->task_id);
  j->cores = inv->cores > 0 ? inv->cores : 1;
  j->memory_mb = inv->memory_mb;
  j->gpus = inv->gpus;
  json_decref(j->tags);
  json_decref(j->limits);
  j->tags = strv_json(inv->tags);
  j->limits = strv_json(inv->limits);
  if (inv->node) {
    if (asprintf(&j->node_key, "%lld/%s", (long long)inv->graph_id, inv->node) < 0) abort();
  }
  j->node_limit = inv->node_limit;
  j->priority = inv->priority;
  j->group_id = inv->group_id;
  j->ready_ms = inv->ready_ms ? inv->ready_ms : now_ms();
  j->seq = ++ex->seq;
  j->log_path = inv->log_path ? xstrdup(inv->log_path) : NULL;
  spec *sp = xcalloc(1, sizeof *sp);
  sp->argv = strv_dup(inv->argv);
  sp->env = strv_dup(inv->env);
  sp->cwd = inv->cwd && *inv->cwd ? xstrdup(inv->cwd) : NULL;
  sp->progress = inv->progress_regex && *inv->progress_regex ? xstrdup(inv->progress_regex) : NULL;
  sp->task_name = xstrdup(inv->task_name);
  sp->node = xstrdup(inv->node);
  sp->timeout = inv->timeout;
  sp->n_good = inv->n_good > 0 ? inv->n_good : 0;
  sp->n_retry = inv->n_retry > 0 ? inv->n_retry : 0;
  sp->codes = xcalloc((size_t)(sp->n_good + sp->n_retry) + 1, sizeof *sp->codes);
  for (int i = 0; i < sp->n_good; i++) sp->codes[i] = inv->good_codes[i];
  for (int i = 0; i < sp->n_retry; i++) sp->codes[sp->n_good + i] = inv->retry_codes[i];
  /* the attributes as they are now (the engine copies before it writes) */
  sp->attrs = inv->attrs ? json_incref(inv->attrs) : NULL;
  j->spec = sp;
  j->state = J_PENDING;
  enqueue(ex, j);
  ex->want_match = true;
  return BR_OK;
}

static int agent_cancel(br_executor *ex, int64_t id) {
  job *j = job_find(ex, id);
  if (!j) return BR_ENOTFOUND;
  if (j->state == J_PENDING) { /* withdrawn by the engine: forget it */
    job_free(ex, j);
    return BR_OK;
  }
  if (j->cancel_asked) return BR_OK;
  j->cancel_asked = true;
  agent *a = j->a;
  if (a && a->state == A_ONLINE) {
    json_array_append_new(a->cancels, json_integer(id));
    if (a->poll) { /* it waits: tell it now */
      json_array_extend(a->poll->cancel, a->cancels);
      json_array_clear(a->cancels);
      poll_answer_now(ex, a->poll, 200, NULL);
    }
  }
  return BR_OK;
}

static void agent_cancel_all(br_executor *ex, bool hard) {
  (void)hard;
  /* The server stops, the farm does not: agents keep running their jobs and
   * report them to the next server. Nothing more is handed out. */
  ex->stopping = true;
  while (ex->waiting_head)
    poll_answer_now(ex, ex->waiting_head, 503, error_body("the server is stopping"));
}

static int agent_active(br_executor *ex) {
  return ex->stopping ? 0 : (int)(ex->pending + ex->running);
}

static int agent_capacity(br_executor *ex) {
  int64_t c = ex->max_pending - ex->pending;
  return c > 0 ? (c > 1 << 20 ? 1 << 20 : (int)c) : 0;
}

static int agent_adopt(br_executor *ex, const br_invocation *inv, const char *worker,
                       int64_t started_ms, br_error *err) {
  if (!valid_id(worker)) return br_error_set(err, BR_EINVAL, "'%s' is not an agent", worker ? worker : "");
  if (job_find(ex, inv->id)) return br_error_set(err, BR_ESTATE, "invocation %lld is here already", (long long)inv->id);
  agent *a = agent_find(ex, worker);
  if (!a) a = agent_new(ex, worker);
  job *j = job_new(ex, inv->id, inv->task_id);
  j->group_id = inv->group_id;
  j->priority = inv->priority;
  j->log_path = inv->log_path ? xstrdup(inv->log_path) : NULL;
  j->ready_ms = started_ms;
  j->state = J_ASSIGNED;
  j->unconfirmed = true;
  ex->unconfirmed++;
  agent_take(a, j);
  ex->running++;
  count_job(ex, j, +1); /* its group only, until its agent says what else it holds */
  ex->recover_until_ms = now_ms() + (int64_t)(ex->recover * 1000);
  return BR_OK;
}

int br_farm_end(br_executor *ex, int64_t id, br_inv_status status, const char *msg) {
  job *j = job_find(ex, id);
  if (!j) return BR_ENOTFOUND;
  agent *a = j->a;
  if (a && a->state == A_ONLINE) { /* if it still runs there, it goes */
    json_array_append_new(a->cancels, json_integer(id));
    if (a->poll) {
      json_array_extend(a->poll->cancel, a->cancels);
      json_array_clear(a->cancels);
      poll_answer_now(ex, a->poll, 200, NULL);
    }
  }
  job_end(ex, j, status, msg);
  return BR_OK;
}

bool br_farm_assigned(br_executor *ex, int64_t id) {
  job *j = job_find(ex, id);
  return j && j->a;
}

static void agent_committed(br_executor *ex) {
  answer_deferred(ex, true); /* made before the commit that just ended: durable now */
  if (ex->want_match) match_waiting(ex);
}

static void agent_schedule(br_executor *ex) {
  if (ex->want_match) match_waiting(ex); /* assignments join the coming commit */
}

static void timer_closed(uv_handle_t *h) { free(h->data); }

static void agent_destroy(br_executor *ex) {
  if (!ex) return;
  ex->stopping = true;
  answer_deferred(ex, false);
  while (ex->waiting_head)
    poll_answer_now(ex, ex->waiting_head, 503, error_body("the server is stopping"));
  job *j, *jt;
  HASH_ITER(hh, ex->jobs, j, jt) {
    j->sh = NULL; /* the queues go below, all at once */
    j->a = NULL;
    j->counted = false;
    HASH_DEL(ex->jobs, j);
    if (j->log_fd >= 0) close(j->log_fd);
    spec_free(j->spec);
    json_decref(j->tags);
    json_decref(j->limits);
    free(j->node_key);
    free(j->log_path);
    free(j);
  }
  for (level *lv = ex->levels; lv;) {
    level *nl = lv->next;
    for (glevel *gl = lv->groups; gl;) {
      glevel *ng = gl->next;
      shape *sh, *st;
      HASH_ITER(hh, gl->shapes, sh, st) {
        HASH_DEL(gl->shapes, sh);
        free(sh->key);
        free(sh);
      }
      free(gl);
      gl = ng;
    }
    free(lv);
    lv = nl;
  }
  agent *a, *at;
  HASH_ITER(hh, ex->agents, a, at) {
    HASH_DEL(ex->agents, a);
    free(a->id);
    free(a->host);
    free(a->version);
    json_decref(a->tags);
    json_decref(a->tags_set);
    json_decref(a->cancels);
    free(a);
  }
  group *g, *gt;
  HASH_ITER(hh, ex->groups, g, gt) {
    HASH_DEL(ex->groups, g);
    struct fails *f, *ft;
    HASH_ITER(hh, g->fails, f, ft) {
      HASH_DEL(g->fails, f);
      free(f->agent);
      free(f);
    }
    free(g);
  }
  counter **tabs[] = {&ex->limits, &ex->nodes};
  for (size_t k = 0; k < 2; k++) {
    counter *c, *ct;
    HASH_ITER(hh, *tabs[k], c, ct) {
      HASH_DEL(*tabs[k], c);
      free(c->name);
      free(c);
    }
  }
  struct setting *s, *stmp;
  HASH_ITER(hh, ex->settings, s, stmp) {
    HASH_DEL(ex->settings, s);
    free(s->id);
    json_decref(s->tags);
    free(s);
  }
  uv_timer_stop(&ex->timer);
  ex->timer.data = ex;
  uv_close((uv_handle_t *)&ex->timer, timer_closed);
}

/* ---- why a job waits ---- */

typedef struct why_count {
  int lack_tags, small, avoided, busy, ready;
  int cores, gpus; /* the largest eligible agent's */
  int64_t memory_mb;
} why_count;

static void why_agents(br_executor *ex, job *j, why_count *w) {
  group *g = group_get(ex, j->group_id);
  agent *a, *tmp;
  HASH_ITER(hh, ex->agents, a, tmp) {
    if (!eligible(a)) continue;
    if (a->cores > w->cores) w->cores = a->cores;
    if (a->gpus > w->gpus) w->gpus = a->gpus;
    if (a->memory_mb > w->memory_mb) w->memory_mb = a->memory_mb;
    const resources *fr = a->poll ? &a->poll->free : &a->free;
    if (!has_tags(a, j->tags)) w->lack_tags++;
    else if (too_small(j, a)) w->small++;
    else if (avoided(ex, g, a)) w->avoided++;
    else if (!free_for(j, a, fr)) w->busy++;
    else w->ready++;
  }
}

/* Why no agent can have it: the kinds of agent it does not fit. */
static void why_none_fits(br_executor *ex, job *j, const why_count *w, FILE *f) {
  const char *sep = "no online agent can run it: ";
  if (w->lack_tags) {
    char *tags = json_dumps(j->tags, JSON_COMPACT);
    fprintf(f, "%s%d lack%s its tags %s", sep, w->lack_tags, w->lack_tags == 1 ? "s" : "",
            tags ? tags : "");
    free(tags);
    sep = ", ";
  }
  if (w->small) {
    fprintf(f, "%s%d %s too small (it needs %d cores, %lld MB, %d GPUs; the largest has %d "
               "cores, %lld MB, %d GPUs)",
            sep, w->small, w->small == 1 ? "is" : "are", j->cores, (long long)j->memory_mb,
            j->gpus, w->cores, (long long)w->memory_mb, w->gpus);
    sep = ", ";
  }
  if (w->avoided)
    fprintf(f, "%s%d %s avoided by its submission (its jobs failed %d times there; braid "
               "retry clears it)",
            sep, w->avoided, w->avoided == 1 ? "is" : "are", ex->avoid_after);
}

/* The farm-wide hindrances: limits (and names that are no limit: a typo
 * limits nothing) and the node's own max_running. */
static void why_limits(br_executor *ex, job *j, FILE *f, const char **sep) {
  size_t i;
  json_t *x;
  json_array_foreach(j->limits, i, x) {
    const char *name = json_string_value(x);
    counter *c = counter_get(&ex->limits, name, false);
    if (limit_full(c)) {
      fprintf(f, "%slimit '%s' is full (%d of %d in use)", *sep, name, c->used, c->max);
      *sep = "; ";
    } else if (!c || c->max < 0) {
      char *set = br_farm_limits_set_names(ex);
      fprintf(f, "%slimit '%s' is not set on this farm, so it holds nothing back (set: %s)", *sep,
              name, set ? set : "?");
      free(set);
      *sep = "; ";
    }
  }
  counter *c = node_full(ex, j);
  if (c) {
    const char *slash = strchr(j->node_key, '/');
    fprintf(f, "%snode '%s' runs at most %d at once, and %d run", *sep,
            slash ? slash + 1 : j->node_key, j->node_limit, c->used);
    *sep = "; ";
  }
}

static size_t agent_why(br_executor *ex, int64_t id, char *buf, size_t size) {
  job *j = job_find(ex, id);
  if (!j || j->state != J_PENDING || !size) return 0;
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  if (!f) return 0;
  const char *sep = "";
  int64_t now = now_ms();
  if (ex->stopping) {
    fprintf(f, "the server is stopping");
    sep = "; ";
  } else if (now < ex->recover_until_ms) {
    fprintf(f, "the server started a moment ago: nothing goes out for %.0f s more, while "
               "agents that held work come back",
            (double)(ex->recover_until_ms - now) / 1000.0);
    sep = "; ";
  }
  why_limits(ex, j, f, &sep);
  int online = 0, total = 0;
  agent *a, *tmp;
  HASH_ITER(hh, ex->agents, a, tmp) {
    total++;
    online += a->state == A_ONLINE;
  }
  why_count w = {0};
  why_agents(ex, j, &w);
  int ahead = 0;
  for (job *q = j->sh ? j->sh->head : NULL; q && q != j; q = q->q_next) ahead++;
  fputs(sep, f);
  if (!total) fprintf(f, "no agent has registered with this server");
  else if (!online) fprintf(f, "no agent is online (%d lost or offline)", total);
  else if (!w.lack_tags && !w.small && !w.avoided && !w.busy && !w.ready)
    fprintf(f, "every online agent is draining or stopping (%d)", online);
  else if (w.ready || w.busy) {
    if (w.ready)
      fprintf(f, "%d agent%s can run it now: it goes at the next one's poll", w.ready,
              w.ready == 1 ? "" : "s");
    else
      fprintf(f, "the %d agent%s that can run it %s busy", w.busy, w.busy == 1 ? "" : "s",
              w.busy == 1 ? "is" : "are");
    if (ahead)
      fprintf(f, "; %d job%s of its submission, with the same needs, %s ahead of it", ahead,
              ahead == 1 ? "" : "s", ahead == 1 ? "is" : "are");
  } else {
    why_none_fits(ex, j, &w, f);
  }
  if (fclose(f) != 0) {
    free(text);
    return 0;
  }
  snprintf(buf, size, "%s", text);
  free(text);
  return strlen(buf);
}

const br_executor_ops br_exec_agent = {
    .name = "agent",
    .create = agent_create,
    .submit = agent_submit,
    .cancel = agent_cancel,
    .cancel_all = agent_cancel_all,
    .active = agent_active,
    .capacity = agent_capacity,
    .destroy = agent_destroy,
    .schedules = true,
    .adopt = agent_adopt,
    .committed = agent_committed,
    .schedule = agent_schedule,
    .why = agent_why,
};

bool br_farm_is(const br_executor_ops *ops) { return ops == &br_exec_agent; }

/* ---- workers and limits ---- */

json_t *br_farm_workers(br_executor *ex) {
  json_t *arr = json_array();
  agent *a, *tmp;
  HASH_ITER(hh, ex->agents, a, tmp) json_array_append_new(arr, agent_json(ex, a));
  return arr;
}

int br_farm_worker_set(br_executor *ex, const char *id, int drain, const json_t *tags,
                       br_error *err) {
  if (!valid_id(id)) return br_error_set(err, BR_EINVAL, "'%s' is not a worker id", id ? id : "");
  if (tags) {
    if (!json_is_array(tags)) return br_error_set(err, BR_EINVAL, "tags must be a list of names");
    size_t i;
    json_t *x;
    json_array_foreach(tags, i, x) if (!json_is_string(x) || !*json_string_value(x))
      return br_error_set(err, BR_EINVAL, "tags must be a list of names");
  }
  struct setting *s = NULL;
  HASH_FIND_STR(ex->settings, id, s);
  if (!s) {
    s = xcalloc(1, sizeof *s);
    s->id = xstrdup(id);
    s->drain = -1;
    HASH_ADD_KEYPTR(hh, ex->settings, s->id, strlen(s->id), s);
  }
  if (drain >= 0) s->drain = drain;
  if (tags) {
    json_decref(s->tags);
    s->tags = json_deep_copy(tags);
  }
  agent *a = agent_find(ex, id);
  if (a) {
    if (drain >= 0) a->drain = drain > 0;
    if (tags) {
      json_decref(a->tags_set);
      a->tags_set = json_incref(s->tags);
    }
    notify_agent(ex, a);
  }
  ex->want_match = true;
  return BR_OK;
}

json_t *br_farm_worker_settings(br_executor *ex) {
  json_t *o = json_object();
  struct setting *s, *tmp;
  HASH_ITER(hh, ex->settings, s, tmp) {
    json_t *v = json_object();
    if (s->drain >= 0) json_object_set_new(v, "drain", json_boolean(s->drain));
    if (s->tags) json_object_set(v, "tags", s->tags);
    json_object_set_new(o, s->id, v);
  }
  return o;
}

json_t *br_farm_limits(br_executor *ex) {
  json_t *o = json_object();
  counter *c, *tmp;
  HASH_ITER(hh, ex->limits, c, tmp)
  json_object_set_new(o, c->name, json_pack("{sosi}", "max", c->max >= 0 ? json_integer(c->max) : json_null(),
                                            "used", c->used));
  return o;
}

char *br_farm_limits_set_names(br_executor *ex) {
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  if (!f) return NULL;
  int n = 0;
  for (counter *k = ex->limits; k; k = k->hh.next)
    if (k->max >= 0) fprintf(f, "%s%s", n++ ? ", " : "", k->name);
  if (!n) fputs("none", f);
  if (fclose(f) != 0) {
    free(text);
    return NULL;
  }
  return text;
}

int br_farm_limit_set(br_executor *ex, const char *name, int max, br_error *err) {
  if (!valid_id(name)) return br_error_set(err, BR_EINVAL, "'%s' is not a limit name", name ? name : "");
  counter *c = counter_get(&ex->limits, name, true);
  c->max = max < 0 ? -1 : max;
  if (c->max < 0 && c->used == 0) {
    HASH_DEL(ex->limits, c);
    free(c->name);
    free(c);
  }
  ex->want_match = true;
  return BR_OK;
}

void br_farm_get_stats(br_executor *ex, br_farm_stats *out) {
  *out = ex->st;
  out->agents_online = out->agents_lost = out->agents_draining = 0;
  agent *a, *tmp;
  HASH_ITER(hh, ex->agents, a, tmp) {
    if (a->state == A_ONLINE) out->agents_online++;
    if (a->state == A_LOST) out->agents_lost++;
    if (a->state == A_ONLINE && a->drain) out->agents_draining++;
  }
  out->pending = ex->pending;
  out->running = ex->running;
}
