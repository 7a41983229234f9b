/* The engine (see include/braid/engine.h).
 *
 * Data structures, all owned by the engine's thread:
 * - every unfinished task is a br_task in a hash by id (uthash), and in an
 *   intrusive list per (graph, node, state), which gives counts and queries
 *   without scanning;
 * - tasks in state waiting are also in a binary heap ordered by priority,
 *   then submission, then id (older submissions drain first, which keeps the
 *   number of tasks in memory bounded by the work in flight);
 * - tasks held by a waiter node sit in a wait group keyed by (node, key). A
 *   key is a task id or a split id (one id sequence serves both, so keys never
 *   collide). A group is re-examined (its node's release()) only when a task
 *   joins it or when a task whose parent or split is its key dies;
 * - splits in use are cached in a hash with a reference count.
 *
 * Durability: every change marks the task (or split) dirty. A batch of work
 * ends with one store transaction that writes each dirty row once (group
 * commit); only then are finished tasks dropped from memory and invocations
 * handed to executors. A crash loses at most the uncommitted batch, which the
 * next engine redoes from the last commit. */
#include <braid/engine.h>
#include <braid/exec.h>
#include <braid/node.h>
#include <braid/script.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <pthread.h>
#include <uthash.h>

#include "fs.h"
#include "graph_internal.h"

#define ENGINE_ASSERT(c)                                                          \
  do {                                                                            \
    if (!(c)) {                                                                   \
      fprintf(stderr, "braid: engine invariant failed: %s (%s:%d)\n", #c, __FILE__, \
              __LINE__);                                                          \
      abort();                                                                    \
    }                                                                             \
  } while (0)

/* F_NEW: no row yet (insert at commit); F_LISTED: in a node/state list;
 * F_RERUN: its node's job may have run before (recovered after a stop or a
 * crash, or retried by hand), so the children it spawns may exist already. */
enum { F_NEW = 1, F_DIRTY = 2, F_ATTRS = 4, F_LISTED = 8, F_RERUN = 16 };

typedef struct gslot gslot;
typedef struct wgroup wgroup;
typedef struct msplit msplit;

struct br_task {
  int64_t id;
  gslot *gs;
  int32_t node, port;
  uint8_t state, paused;
  uint16_t flags;
  int32_t priority;
  json_t *attrs;
  char *name;
  int64_t parent, split_id, group_id, wait_key;
  int32_t split_elem, split_count, live_children, attempts;
  int64_t created_ms, updated_ms;
  char *error;
  msplit *split; /* cached record of split_id (a counted reference) */
  UT_hash_handle hh;
  br_task *ls_prev, *ls_next; /* node/state list */
  int32_t hidx[2];            /* index in the ready / queued heap; -1: not in it */
  struct inv_rec *inv;        /* the current invocation (queued .. post) */
  int64_t held;               /* queued, its invocation held by a scheduling executor */
  br_task *post_next;
  double progress;
  br_task *dirty_next;
  wgroup *wg;
  uint32_t steps;            /* nodes passed since its last job or wait */
  struct loop_trace *trace;  /* past the bound on steps: the nodes it goes round */
};

/* The nodes a task visits once it passed the bound on steps, until one
 * comes again: the loop it is caught in, for its error message. */
#define TRACE_MAX 32
typedef struct loop_trace {
  int n;
  int32_t nodes[TRACE_MAX];
} loop_trace;

/* Steps a task may take through nodes that neither run a job nor wait,
 * when br_engine_opts.max_steps is 0: far more than any sane chain of
 * instant nodes or bounded loop, few enough to stop in about a second. */
#define DEFAULT_MAX_STEPS 100000

enum { HEAP_READY = 0, HEAP_QUEUED = 1 };

typedef struct theap {
  br_task **v;
  size_t n, cap;
  int which;
} theap;

typedef struct nstate {
  br_task *lists[BR_TASK_NSTATES];
  int64_t counts[BR_TASK_NSTATES]; /* tasks held in each state (done/dead: since open) */
} nstate;

struct gslot {
  int64_t id;
  br_graph *g;
  nstate *ns;
  gslot *next;
};

struct wgroup {
  int64_t key;
  gslot *gs;
  int node;
  br_task **v;
  size_t n, cap;
  int pending;
  wgroup *pend_next;
  wgroup *key_next; /* other groups (other nodes) with the same key */
  UT_hash_handle hh;
};

struct msplit {
  br_split rec;
  int32_t refs;
  int dirty;
  msplit *dirty_next;
  UT_hash_handle hh;
};

typedef struct counter_delta {
  int64_t id;
  int delta;
} counter_delta;

struct br_engine {
  br_store *store;
  br_engine_opts opts;
  uv_loop_t *loop;
  int own_loop;
  gslot *graphs;
  br_task *tasks; /* hash by id */
  theap ready, queued;
  wgroup *groups; /* hash by key: heads of key chains */
  wgroup *pend_head, *pend_tail;
  msplit *splits;
  msplit *split_dirty;
  br_task *dirty;
  counter_delta *deltas;
  size_t n_deltas, cap_deltas;
  int64_t next_id;
  int64_t now_ms;
  int batch_count; /* transitions since last commit */
  br_engine_stats st;
  int failed;      /* the store failed: stop */
  size_t abandoned; /* a stop gave up a batch this large: nothing more is committed */
  /* invocations */
  const br_executor_ops *exops;
  br_executor *ex;
  br_task *post_head, *post_tail; /* tasks whose invocation finished */
  br_inv_info *inv_rows;          /* invocation rows to write at the next commit */
  size_t n_inv_rows, cap_inv_rows;
  int stopping, stop_hard;
  int serving; /* br_engine_serve: keep running when idle */
  void (*observer)(void *ud, const br_task_info *t);
  void *observer_ud;
  char *log_dir;
  char *last_log_dir; /* the log folder made last (saves a mkdir per job) */
  int64_t *starting;  /* tasks moved to running, handed to the executor after the commit */
  size_t n_starting, cap_starting;
  int64_t *orphans;   /* tasks loaded running: adopted by the executor, or run again */
  size_t n_orphans;
  struct on_commit *on_commit_head, *on_commit_tail; /* br_engine_on_commit */
  /* work handed over by other threads (br_engine_post) */
  uv_async_t async;
  pthread_mutex_t post_mu;
  struct posted *posted_head, *posted_tail;
  int async_ready;
  br_error store_err;
};

struct br_node_ctx {
  br_engine *e;
  gslot *gs;
  br_node *node;
  br_task *task;  /* process/postprocess */
  wgroup *group;  /* release */
  enum { ACT_ROUTE, ACT_BLOCK, ACT_KILL, ACT_FAIL, ACT_INVOKE } action;
  int port;
  int64_t key;
  char *error;
  size_t split_n;
  json_t **split_attrs;
  struct spawn {
    char *name;
    json_t *attrs;
  } *spawns;
  size_t n_spawns, cap_spawns;
  int released_any;
  int failed; /* sticky: a later route() does not undo a failure */
  struct inv_rec *inv; /* from br_ctx_invoke */
  const br_inv_result *result; /* in postprocess */
  json_t **evaluated; /* parameter values evaluated for this callback */
  size_t n_evaluated, cap_evaluated;
};

/* ---- small helpers ---- */

static int64_t clock_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void *xrealloc(void *p, size_t n) {
  void *q = realloc(p, n);
  ENGINE_ASSERT(q != NULL || n == 0);
  return q;
}

static char *xstrdup(const char *s) {
  if (!s) return NULL;
  char *d = strdup(s);
  ENGINE_ASSERT(d != NULL);
  return d;
}

static br_node *task_node(const br_task *t) { return t->gs->g->nodes[t->node]; }

/* ---- priority heaps: ready (waiting tasks) and queued (invocations) ---- */

static int heap_before(const br_task *a, const br_task *b) {
  if (a->priority != b->priority) return a->priority > b->priority;
  if (a->group_id != b->group_id) return a->group_id < b->group_id;
  return a->id < b->id;
}

static void heap_set(theap *h, size_t i, br_task *t) {
  h->v[i] = t;
  t->hidx[h->which] = (int32_t)i;
}

static void heap_up(theap *h, size_t i) {
  br_task *t = h->v[i];
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (!heap_before(t, h->v[p])) break;
    heap_set(h, i, h->v[p]);
    i = p;
  }
  heap_set(h, i, t);
}

static void heap_down(theap *h, size_t i) {
  br_task *t = h->v[i];
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, m = i;
    br_task *best = t;
    if (l < h->n && heap_before(h->v[l], best)) {
      m = l;
      best = h->v[l];
    }
    if (r < h->n && heap_before(h->v[r], best)) m = r;
    if (m == i) break;
    heap_set(h, i, h->v[m]);
    i = m;
  }
  heap_set(h, i, t);
}

static void heap_push(theap *h, br_task *t) {
  if (t->hidx[h->which] >= 0) return;
  if (h->n == h->cap) {
    h->cap = h->cap ? h->cap * 2 : 1024;
    h->v = xrealloc(h->v, h->cap * sizeof *h->v);
  }
  h->v[h->n] = t;
  t->hidx[h->which] = (int32_t)h->n;
  h->n++;
  heap_up(h, h->n - 1);
}

static void heap_remove(theap *h, br_task *t) {
  if (t->hidx[h->which] < 0) return;
  size_t i = (size_t)t->hidx[h->which];
  t->hidx[h->which] = -1;
  h->n--;
  if (i == h->n) return;
  br_task *x = h->v[h->n];
  heap_set(h, i, x);
  heap_up(h, i);
  if ((size_t)x->hidx[h->which] == i) heap_down(h, i);
}

static br_task *heap_pop(theap *h) {
  if (!h->n) return NULL;
  br_task *t = h->v[0];
  heap_remove(h, t);
  return t;
}

/* ---- node/state lists ---- */

static void list_add(br_task *t) {
  nstate *ns = &t->gs->ns[t->node];
  ENGINE_ASSERT(!(t->flags & F_LISTED));
  t->flags |= F_LISTED;
  t->ls_prev = NULL;
  t->ls_next = ns->lists[t->state];
  if (t->ls_next) t->ls_next->ls_prev = t;
  ns->lists[t->state] = t;
  ns->counts[t->state]++;
}

static void list_del(br_task *t) {
  if (!(t->flags & F_LISTED)) return;
  t->flags &= (uint16_t)~F_LISTED;
  nstate *ns = &t->gs->ns[t->node];
  if (t->ls_prev) t->ls_prev->ls_next = t->ls_next;
  else ns->lists[t->state] = t->ls_next;
  if (t->ls_next) t->ls_next->ls_prev = t->ls_prev;
  t->ls_prev = t->ls_next = NULL;
  ns->counts[t->state]--;
}

/* ---- dirty tracking ---- */

static void mark_dirty(br_engine *e, br_task *t) {
  t->updated_ms = e->now_ms;
  if (t->flags & F_DIRTY) return;
  t->flags |= F_DIRTY;
  t->dirty_next = e->dirty;
  e->dirty = t;
}

static void split_dirty(br_engine *e, msplit *s) {
  if (s->dirty) return;
  s->dirty = 1;
  s->dirty_next = e->split_dirty;
  e->split_dirty = s;
}

/* ---- splits ---- */

static void split_free_if_unused(br_engine *e, msplit *s) {
  if (s->refs > 0 || s->dirty) return;
  HASH_DEL(e->splits, s);
  free(s);
}

static msplit *split_ref(br_engine *e, int64_t id) {
  if (!id) return NULL;
  msplit *s = NULL;
  HASH_FIND(hh, e->splits, &id, sizeof id, s);
  if (!s) {
    s = calloc(1, sizeof *s);
    ENGINE_ASSERT(s);
    br_error err = {0};
    if (e->store->ops->split_get(e->store, id, &s->rec, &err) != BR_OK) {
      /* unknown split: behave as a split of one, so nothing waits forever */
      s->rec.id = id;
      s->rec.count = s->rec.live = 1;
    }
    HASH_ADD(hh, e->splits, rec.id, sizeof s->rec.id, s);
  }
  s->refs++;
  return s;
}

static void split_unref(br_engine *e, msplit *s) {
  if (!s) return;
  s->refs--;
  split_free_if_unused(e, s);
}

static void set_membership(br_engine *e, br_task *t, int64_t split_id, int32_t elem,
                           int32_t count) {
  msplit *old = t->split;
  t->split_id = split_id;
  t->split_elem = elem;
  t->split_count = count;
  t->split = split_ref(e, split_id);
  split_unref(e, old);
}

/* ---- tasks ---- */

static br_task *task_alloc(br_engine *e) {
  br_task *t = calloc(1, sizeof *t);
  ENGINE_ASSERT(t);
  t->hidx[0] = t->hidx[1] = -1;
  (void)e;
  return t;
}

static void inv_free(struct inv_rec *r);
static struct inv_rec *inv_copy(const br_invocation *in);

static void task_free(br_engine *e, br_task *t) {
  inv_free(t->inv);
  free(t->trace);
  split_unref(e, t->split);
  json_decref(t->attrs);
  free(t->name);
  free(t->error);
  free(t);
}

static void count_memory(br_engine *e) {
  size_t n = HASH_COUNT(e->tasks);
  e->st.tasks_in_memory = n;
  if (n > e->st.peak_tasks_in_memory) e->st.peak_tasks_in_memory = n;
}

/* Moves t to state s, keeping the indexes right. Final tasks leave the
 * node/state lists at once and memory at the next commit. */
static void set_state(br_engine *e, br_task *t, br_task_state s) {
  list_del(t);
  heap_remove(&e->ready, t);
  heap_remove(&e->queued, t);
  t->state = (uint8_t)s;
  if (!br_task_state_is_final(s)) list_add(t);
  else t->gs->ns[t->node].counts[s]++;
  if (s == BR_TASK_WAITING && !t->paused) heap_push(&e->ready, t);
  mark_dirty(e, t);
  e->st.transitions++;
  e->batch_count++;
}

static br_task *task_find(br_engine *e, int64_t id) {
  br_task *t = NULL;
  HASH_FIND(hh, e->tasks, &id, sizeof id, t);
  return t;
}

/* A live task from its stored row (at node index `node` of gs), added to the
 * id hash but to no list or queue. Takes r's attributes, name and error. */
static br_task *task_from_row(br_engine *e, gslot *gs, int node, br_task_info *r) {
  br_task *t = task_alloc(e);
  t->id = r->id;
  t->gs = gs;
  t->node = node;
  t->port = r->port;
  t->state = (uint8_t)r->state;
  t->paused = r->paused;
  t->priority = r->priority;
  t->attrs = r->attrs;
  r->attrs = NULL;
  t->name = r->name;
  r->name = NULL;
  t->error = r->error;
  r->error = NULL;
  t->parent = r->parent;
  t->group_id = r->group_id;
  t->wait_key = r->wait_key;
  t->live_children = r->live_children;
  t->attempts = r->attempts;
  t->created_ms = r->created_ms;
  t->updated_ms = r->updated_ms;
  t->split_id = r->split_id;
  t->split_elem = r->split_elem;
  t->split_count = r->split_count;
  t->split = split_ref(e, t->split_id);
  HASH_ADD(hh, e->tasks, id, sizeof t->id, t);
  return t;
}

/* The output index a node's children leave by, or -1. */
static int children_port(const br_node *n) {
  return n->type->children_port == BR_CHILDREN_LAST ? n->n_outputs - 1 : n->type->children_port;
}

/* A new task at node `node` in state `state` (not yet in any list). */
static br_task *task_new(br_engine *e, gslot *gs, int node, json_t *attrs /* stolen */,
                         const char *name, int64_t parent, int32_t priority, int64_t group) {
  br_task *t = task_alloc(e);
  t->id = ++e->next_id;
  t->gs = gs;
  t->node = node;
  t->attrs = attrs ? attrs : json_object();
  t->name = xstrdup(name);
  t->parent = parent;
  t->priority = priority;
  t->group_id = group ? group : t->id;
  t->created_ms = t->updated_ms = e->now_ms;
  t->flags = F_NEW | F_ATTRS;
  t->state = BR_TASK_DONE; /* "nowhere" until set_state places it */
  HASH_ADD(hh, e->tasks, id, sizeof t->id, t);
  count_memory(e);
  return t;
}

static void adjust_live(br_engine *e, int64_t parent, int delta);
static void notify_key(br_engine *e, int64_t key);

/* A live element of split s is gone. When it was the last, the split is
 * gone whole, and with it the element of the split it was made in (its
 * prev_split), which no task stands for any more: that one loses an
 * element too, and so on outwards (iteratively: splits may nest deep). */
static void split_lose(br_engine *e, msplit *s) {
  msplit *ref = NULL; /* the outer split loaded here, held while used */
  while (s) {
    s->rec.live--;
    split_dirty(e, s);
    notify_key(e, s->rec.id);
    msplit *up = s->rec.live == 0 && s->rec.prev_split ? split_ref(e, s->rec.prev_split) : NULL;
    split_unref(e, ref);
    ref = s = up;
  }
}

/* The task is consumed: children and splits that wait on it learn so. */
static void kill_task(br_engine *e, br_task *t) {
  set_state(e, t, BR_TASK_DEAD);
  if (t->parent) {
    adjust_live(e, t->parent, -1);
    notify_key(e, t->parent);
  }
  if (t->split) split_lose(e, t->split);
}

static void fail_task(br_engine *e, br_task *t, const char *msg) {
  free(t->error);
  t->error = xstrdup(msg ? msg : "failed");
  set_state(e, t, BR_TASK_ERROR);
}

static void adjust_live(br_engine *e, int64_t parent, int delta) {
  br_task *p = task_find(e, parent);
  if (p) {
    p->live_children += delta;
    mark_dirty(e, p);
    return;
  }
  /* the parent has finished and left memory: update its row at commit */
  if (e->n_deltas == e->cap_deltas) {
    e->cap_deltas = e->cap_deltas ? e->cap_deltas * 2 : 64;
    e->deltas = xrealloc(e->deltas, e->cap_deltas * sizeof *e->deltas);
  }
  e->deltas[e->n_deltas].id = parent;
  e->deltas[e->n_deltas].delta = delta;
  e->n_deltas++;
}

/* A copy of t (a new split element or fan-out branch), sharing its attributes
 * until one of them writes (copy on write). */
static br_task *task_clone(br_engine *e, br_task *t) {
  br_task *c = task_new(e, t->gs, t->node, json_incref(t->attrs), t->name, t->parent, t->priority,
                        t->group_id);
  c->port = t->port;
  c->steps = t->steps; /* a loop that splits is still a loop */
  if (t->parent) adjust_live(e, t->parent, +1);
  return c;
}

/* A stop asked for: here (br_engine_stop), or at the signal itself (the
 * store's flag, br_store_set_stop), before the loop has seen the signal. */
static bool stop_asked(const br_engine *e) {
  return e->stopping || (e->store->stop && *e->store->stop);
}

/* A batch this large takes a while to make and write (a split of a million
 * elements takes seconds): a stop asked for meanwhile gives it up, as a
 * kill would. Nothing of it is in the store, so the next run makes it
 * again; every later commit is given up too, since memory holds the batch
 * (a split given up half made, say). */
#define ABANDON_CHECK 16384 /* rows or elements between two looks at the stop */

/* Gives up the batch in memory (see ABANDON_CHECK) when a stop is asked
 * for: true then. */
static bool abandon_for_stop(br_engine *e, size_t rows) {
  if (!stop_asked(e)) return false;
  if (!e->abandoned) e->abandoned = rows;
  br_engine_stop(e, false); /* jobs end as on any stop */
  return true;
}

/* Creates a split of n around t: t becomes element 0; returns the elements
 * (out[0] == t), or false when a stop gave the batch up half way. */
static bool make_split(br_engine *e, br_task *t, size_t n, br_task **out) {
  msplit *s = calloc(1, sizeof *s);
  ENGINE_ASSERT(s);
  s->rec.id = ++e->next_id;
  s->rec.count = (int32_t)n;
  s->rec.live = (int32_t)n;
  s->rec.orig_task = t->id;
  s->rec.prev_split = t->split_id;
  s->rec.prev_elem = t->split_elem;
  s->rec.prev_count = t->split_count;
  HASH_ADD(hh, e->splits, rec.id, sizeof s->rec.id, s);
  split_dirty(e, s);
  out[0] = t;
  for (size_t i = 1; i < n; i++) {
    if (i % ABANDON_CHECK == 0 && abandon_for_stop(e, n)) return false;
    out[i] = task_clone(e, t);
  }
  for (size_t i = 0; i < n; i++) {
    set_membership(e, out[i], s->rec.id, (int32_t)i, (int32_t)n);
    out[i]->flags |= F_ATTRS;
    mark_dirty(e, out[i]);
  }
  return true;
}

/* Writable attributes for t: copy first when shared. */
static json_t *attrs_mut(br_engine *e, br_task *t) {
  if (t->attrs->refcount > 1) {
    json_t *c = json_copy(t->attrs);
    ENGINE_ASSERT(c);
    json_decref(t->attrs);
    t->attrs = c;
  }
  t->flags |= F_ATTRS;
  mark_dirty(e, t);
  return t->attrs;
}

/* Moves t along one wire into the next node, ready to be processed. */
static void move_to(br_engine *e, br_task *t, const br_wire *w) {
  list_del(t); /* under the current node, before the node changes */
  heap_remove(&e->ready, t);
  heap_remove(&e->queued, t);
  t->node = w->node;
  t->port = w->port;
  t->attempts = 0; /* attempts count per node */
  t->flags &= (uint16_t)~F_RERUN;
  t->state = BR_TASK_WAITING;
  t->wait_key = 0;
  list_add(t);
  if (!t->paused) heap_push(&e->ready, t);
  mark_dirty(e, t);
  e->st.transitions++;
  e->batch_count++;
}

/* Done at its node: follow the wires of output `port`. One wire moves it;
 * several split it (an implicit split, one element per wire); none parks it
 * there as finished. cancelled: it (or each element) arrives cancelled. */
static void route_as(br_engine *e, br_task *t, int port, bool cancelled) {
  br_node *n = task_node(t);
  if (port < 0 || port >= n->n_outputs) {
    char msg[256];
    snprintf(msg, sizeof msg, "node '%s' sent the task to output %d, which does not exist",
             n->name, port);
    fail_task(e, t, msg);
    return;
  }
  br_outport *op = &n->outs[port];
  if (op->n == 0) {
    set_state(e, t, BR_TASK_DONE);
    return;
  }
  if (op->n == 1) {
    move_to(e, t, &op->wires[0]);
    if (cancelled) set_state(e, t, BR_TASK_CANCELLED);
    return;
  }
  br_task *stack_el[16];
  br_task **el = op->n <= 16 ? stack_el : calloc((size_t)op->n, sizeof *el);
  ENGINE_ASSERT(el);
  make_split(e, t, (size_t)op->n, el);
  for (int i = 0; i < op->n; i++) {
    move_to(e, el[i], &op->wires[i]);
    if (cancelled) set_state(e, el[i], BR_TASK_CANCELLED);
  }
  if (el != stack_el) free(el);
}

static void route(br_engine *e, br_task *t, int port) { route_as(e, t, port, false); }

/* ---- wait groups ---- */

static wgroup *group_find(br_engine *e, gslot *gs, int node, int64_t key, int create) {
  wgroup *head = NULL, *g;
  HASH_FIND(hh, e->groups, &key, sizeof key, head);
  for (g = head; g; g = g->key_next)
    if (g->gs == gs && g->node == node) return g;
  if (!create) return NULL;
  g = calloc(1, sizeof *g);
  ENGINE_ASSERT(g);
  g->key = key;
  g->gs = gs;
  g->node = node;
  if (head) {
    g->key_next = head->key_next;
    head->key_next = g;
  } else {
    HASH_ADD(hh, e->groups, key, sizeof g->key, g);
  }
  e->st.groups++;
  return g;
}

static void group_free(br_engine *e, wgroup *g) {
  wgroup *head = NULL;
  HASH_FIND(hh, e->groups, &g->key, sizeof g->key, head);
  if (head == g) {
    HASH_DEL(e->groups, g);
    if (g->key_next) HASH_ADD(hh, e->groups, key, sizeof g->key_next->key, g->key_next);
  } else {
    for (wgroup *p = head; p; p = p->key_next)
      if (p->key_next == g) {
        p->key_next = g->key_next;
        break;
      }
  }
  e->st.groups--;
  free(g->v);
  free(g);
}

static void group_pend(br_engine *e, wgroup *g) {
  if (g->pending) return;
  g->pending = 1;
  g->pend_next = NULL;
  if (e->pend_tail) e->pend_tail->pend_next = g;
  else e->pend_head = g;
  e->pend_tail = g;
}

static void notify_key(br_engine *e, int64_t key) {
  wgroup *head = NULL;
  HASH_FIND(hh, e->groups, &key, sizeof key, head);
  for (wgroup *g = head; g; g = g->key_next) group_pend(e, g);
}

static void group_add(br_engine *e, wgroup *g, br_task *t) {
  if (g->n == g->cap) {
    g->cap = g->cap ? g->cap * 2 : 8;
    g->v = xrealloc(g->v, g->cap * sizeof *g->v);
  }
  g->v[g->n++] = t;
  t->wg = g;
  group_pend(e, g);
}

/* The task waits or runs a job: its count of instant steps starts again. */
static void steps_reset(br_task *t) {
  t->steps = 0;
  free(t->trace);
  t->trace = NULL;
}

static void block_task(br_engine *e, br_task *t, int64_t key) {
  steps_reset(t);
  t->wait_key = key;
  set_state(e, t, BR_TASK_BLOCKED);
  group_add(e, group_find(e, t->gs, t->node, key, 1), t);
}

/* ---- the node context ---- */

static void ctx_init(br_node_ctx *c, br_engine *e, gslot *gs, br_node *node) {
  memset(c, 0, sizeof *c);
  c->e = e;
  c->gs = gs;
  c->node = node;
  c->action = ACT_ROUTE;
}

static void ctx_done(br_node_ctx *c) {
  free(c->error);
  for (size_t i = 0; i < c->split_n; i++) json_decref(c->split_attrs[i]);
  free(c->split_attrs);
  for (size_t i = 0; i < c->n_spawns; i++) {
    free(c->spawns[i].name);
    json_decref(c->spawns[i].attrs);
  }
  free(c->spawns);
  for (size_t i = 0; i < c->n_evaluated; i++) json_decref(c->evaluated[i]);
  free(c->evaluated);
  inv_free(c->inv);
}

br_node *br_ctx_node(br_node_ctx *c) { return c->node; }
void *br_ctx_node_state(br_node_ctx *c) { return c->node->state; }
br_task *br_ctx_task(br_node_ctx *c) { return c->task; }

json_t *br_ctx_param(br_node_ctx *c, const char *name) {
  br_script_env *env = c->node->script;
  if (!env || !br_script_env_param_is_expr(env, name))
    return json_object_get(c->node->params, name);
  if (!c->task) {
    br_ctx_fail(c, "parameter '%s' is an expression, but there is no task to evaluate it for",
                name);
    return NULL;
  }
  br_script_task st = br_script_task_of(c->task);
  json_t *v = NULL;
  br_error err = {0};
  if (br_script_env_param(env, name, &st, &v, &err) != BR_OK) {
    br_ctx_fail(c, "%s", err.msg);
    return NULL;
  }
  if (!v) return NULL;
  if (c->n_evaluated == c->cap_evaluated) {
    c->cap_evaluated = c->cap_evaluated ? c->cap_evaluated * 2 : 8;
    c->evaluated = xrealloc(c->evaluated, c->cap_evaluated * sizeof *c->evaluated);
  }
  c->evaluated[c->n_evaluated++] = v; /* borrowed by the caller until ctx_done */
  return v;
}

int64_t br_ctx_param_int(br_node_ctx *c, const char *name, int64_t dflt) {
  json_t *v = br_ctx_param(c, name);
  if (json_is_integer(v)) return json_integer_value(v);
  if (json_is_real(v)) return (int64_t)json_real_value(v);
  return dflt;
}

double br_ctx_param_float(br_node_ctx *c, const char *name, double dflt) {
  json_t *v = br_ctx_param(c, name);
  return json_is_number(v) ? json_number_value(v) : dflt;
}

const char *br_ctx_param_str(br_node_ctx *c, const char *name, const char *dflt) {
  json_t *v = br_ctx_param(c, name);
  return json_is_string(v) ? json_string_value(v) : dflt;
}

bool br_ctx_param_bool(br_node_ctx *c, const char *name, bool dflt) {
  json_t *v = br_ctx_param(c, name);
  return json_is_boolean(v) ? json_is_true(v) : dflt;
}

int64_t br_task_id(const br_task *t) { return t->id; }
const char *br_task_name(const br_task *t) { return t->name; }
int br_task_port(const br_task *t) { return t->port; }
int64_t br_task_parent(const br_task *t) { return t->parent; }
int32_t br_task_live_children(const br_task *t) { return t->live_children; }
int32_t br_task_attempts(const br_task *t) { return t->attempts; }
const json_t *br_task_attrs(const br_task *t) { return t->attrs; }

void br_task_split(const br_task *t, int64_t *split_id, int32_t *elem, int32_t *count) {
  if (split_id) *split_id = t->split_id;
  if (elem) *elem = t->split_elem;
  if (count) *count = t->split_count;
}

json_t *br_ctx_attrs(br_node_ctx *c, br_task *t) { return attrs_mut(c->e, t); }

void br_ctx_route(br_node_ctx *c, int port) {
  c->action = ACT_ROUTE;
  c->port = port;
}

void br_ctx_block(br_node_ctx *c, int64_t key) {
  c->action = ACT_BLOCK;
  c->key = key;
}

void br_ctx_kill(br_node_ctx *c) { c->action = ACT_KILL; }

int br_ctx_fail(br_node_ctx *c, const char *fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (!c->failed) { /* the first failure is the one worth reporting */
    free(c->error);
    c->error = xstrdup(buf);
  }
  c->action = ACT_FAIL;
  c->failed = 1;
  return -1;
}

int br_ctx_split(br_node_ctx *c, size_t n, json_t **attrs) {
  for (size_t i = 0; i < c->split_n; i++) json_decref(c->split_attrs[i]);
  free(c->split_attrs);
  c->split_attrs = calloc(n ? n : 1, sizeof *c->split_attrs);
  ENGINE_ASSERT(c->split_attrs);
  c->split_n = n;
  for (size_t i = 0; i < n; i++) c->split_attrs[i] = attrs ? attrs[i] : NULL;
  return BR_OK;
}

int br_ctx_spawn(br_node_ctx *c, const char *name, json_t *attrs) {
  if (c->n_spawns == c->cap_spawns) {
    c->cap_spawns = c->cap_spawns ? c->cap_spawns * 2 : 16;
    c->spawns = xrealloc(c->spawns, c->cap_spawns * sizeof *c->spawns);
  }
  c->spawns[c->n_spawns].name = xstrdup(name);
  c->spawns[c->n_spawns].attrs = attrs ? attrs : json_object();
  c->n_spawns++;
  return BR_OK;
}

int br_ctx_invoke(br_node_ctx *c, const struct br_invocation *inv) {
  if (!c->e->ex)
    return br_ctx_fail(c, "node '%s' runs jobs, and this engine has no executor", c->node->name);
  if (!inv->argv || !inv->argv[0]) return br_ctx_fail(c, "an invocation needs a command");
  inv_free(c->inv);
  c->inv = inv_copy(inv);
  c->action = ACT_INVOKE;
  return BR_OK;
}

const struct br_inv_result *br_ctx_inv_result(br_node_ctx *c) { return c->result; }

int64_t br_ctx_group_key(br_node_ctx *c) { return c->group ? c->group->key : 0; }
size_t br_ctx_group_size(br_node_ctx *c) { return c->group ? c->group->n : 0; }

br_task *br_ctx_group_task(br_node_ctx *c, size_t i) {
  return c->group && i < c->group->n ? c->group->v[i] : NULL;
}

br_task *br_ctx_group_member(br_node_ctx *c, int64_t task_id) {
  br_task *t = c->group ? task_find(c->e, task_id) : NULL;
  return t && t->wg == c->group ? t : NULL;
}

bool br_ctx_split_info(br_node_ctx *c, int64_t split_id, br_split *out) {
  msplit *s = NULL;
  HASH_FIND(hh, c->e->splits, &split_id, sizeof split_id, s);
  if (!s) return false;
  *out = s->rec;
  return true;
}

/* Inside release(), members leave the group lazily (marked, then compacted
 * once when release() returns) so releasing a large group stays linear. */
static void ctx_take_member(br_node_ctx *c, br_task *t) {
  ENGINE_ASSERT(t->wg == c->group);
  t->wg = NULL;
  t->wait_key = 0;
  c->released_any = 1;
}

void br_ctx_release(br_node_ctx *c, br_task *t, int port) {
  if (!c->group || t->wg != c->group) return;
  ctx_take_member(c, t);
  route(c->e, t, port);
}

void br_ctx_release_kill(br_node_ctx *c, br_task *t) {
  if (!c->group || t->wg != c->group) return;
  ctx_take_member(c, t);
  kill_task(c->e, t);
}

void br_ctx_unsplit(br_node_ctx *c, br_task *t) {
  if (!t->split) return;
  br_split rec = t->split->rec;
  set_membership(c->e, t, rec.prev_split, rec.prev_elem, rec.prev_count);
  mark_dirty(c->e, t);
}

static int commit(br_engine *e, br_error *err);
void br_engine__inv_done(void *ud, const br_inv_result *res);
static void apply_result(br_engine *e, br_node_ctx *c, br_task *t);

/* ---- invocations ---- */

/* An invocation the engine owns: a deep copy of what the node asked for,
 * and the result once it finished. */
typedef struct name_entry {
  char *name;
  int64_t id; /* the child's task */
  UT_hash_handle hh;
} name_entry;

typedef struct inv_rec {
  br_invocation inv;
  name_entry *known_children; /* names of children an earlier attempt made */
  int n_spawned;              /* spawns in this attempt (for default names) */
  char **argv_own, **env_own;
  char *strs[4]; /* node, cwd, progress_regex, log_path */
  int *codes;    /* good codes then retry codes */
  char **tags_own, **limits_own;
  json_t *slurm_own;
  char *worker;  /* where it runs (scheduling executors); NULL: the executor's name */
  br_inv_result res;
  int done;
  int assigned;  /* it runs (or ran): it counts as an attempt */
  int adopted;   /* taken over from a previous engine: no command to run again */
  int own_log;   /* the engine named its log file: each attempt gets its own */
  int cancel_asked; /* cancelled while it runs: what it spawns from now on is cancelled */
  int64_t started_ms;
} inv_rec;

static char **strv_dup(char *const *v) {
  if (!v) return NULL;
  size_t n = 0;
  while (v[n]) n++;
  char **d = calloc(n + 1, sizeof *d);
  ENGINE_ASSERT(d);
  for (size_t i = 0; i < n; i++) d[i] = xstrdup(v[i]);
  return d;
}

static void strv_free(char **v) {
  for (size_t i = 0; v && v[i]; i++) free(v[i]);
  free(v);
}

static void inv_result_clear(br_inv_result *r) {
  free(r->log_tail);
  free(r->error);
  json_decref(r->set_attrs);
  memset(r, 0, sizeof *r);
}

static void names_free(name_entry **set) {
  name_entry *n, *tmp;
  HASH_ITER(hh, *set, n, tmp) {
    HASH_DEL(*set, n);
    free(n->name);
    free(n);
  }
}

static int collect_child_name(void *ud, br_task_info *t) {
  name_entry **set = ud, *n = NULL;
  if (t->name) HASH_FIND_STR(*set, t->name, n);
  if (t->name && !n) {
    n = calloc(1, sizeof *n);
    ENGINE_ASSERT(n);
    n->name = t->name;
    n->id = t->id;
    t->name = NULL;
    HASH_ADD_KEYPTR(hh, *set, n->name, strlen(n->name), n);
  }
  br_task_info_free(t);
  free(t);
  return 0;
}

static void inv_free(inv_rec *r) {
  if (!r) return;
  names_free(&r->known_children);
  strv_free(r->argv_own);
  strv_free(r->env_own);
  strv_free(r->tags_own);
  strv_free(r->limits_own);
  json_decref(r->slurm_own);
  free(r->worker);
  for (size_t i = 0; i < 4; i++) free(r->strs[i]);
  free(r->codes);
  inv_result_clear(&r->res);
  free(r);
}

static inv_rec *inv_copy(const br_invocation *in) {
  inv_rec *r = calloc(1, sizeof *r);
  ENGINE_ASSERT(r);
  r->inv = *in;
  r->inv.attrs = NULL; /* set at dispatch: the task's attributes then */
  r->inv.argv = r->argv_own = strv_dup(in->argv);
  r->inv.env = r->env_own = strv_dup(in->env);
  r->inv.tags = r->tags_own = strv_dup(in->tags);
  r->inv.limits = r->limits_own = strv_dup(in->limits);
  r->inv.slurm = r->slurm_own = json_object_size(in->slurm) ? json_deep_copy(in->slurm) : NULL;
  r->inv.task_name = NULL; /* set at dispatch, like attrs */
  r->inv.node = r->strs[0] = xstrdup(in->node);
  r->inv.cwd = r->strs[1] = xstrdup(in->cwd);
  r->inv.progress_regex = r->strs[2] = xstrdup(in->progress_regex);
  r->inv.log_path = r->strs[3] = xstrdup(in->log_path);
  int n = (in->n_good > 0 ? in->n_good : 0) + (in->n_retry > 0 ? in->n_retry : 0);
  r->codes = calloc((size_t)n + 1, sizeof *r->codes);
  ENGINE_ASSERT(r->codes);
  for (int i = 0; i < in->n_good; i++) r->codes[i] = in->good_codes[i];
  for (int i = 0; i < in->n_retry; i++) r->codes[in->n_good + i] = in->retry_codes[i];
  r->inv.good_codes = r->codes;
  r->inv.retry_codes = r->codes + (in->n_good > 0 ? in->n_good : 0);
  return r;
}

/* A cleared slot for an invocation row the next commit writes. */
static br_inv_info *inv_row_slot(br_engine *e) {
  if (e->n_inv_rows == e->cap_inv_rows) {
    e->cap_inv_rows = e->cap_inv_rows ? e->cap_inv_rows * 2 : 64;
    e->inv_rows = xrealloc(e->inv_rows, e->cap_inv_rows * sizeof *e->inv_rows);
  }
  br_inv_info *i = &e->inv_rows[e->n_inv_rows++];
  memset(i, 0, sizeof *i);
  return i;
}

/* Queues an owned copy of an invocation row for the next commit. */
static void inv_row_add(br_engine *e, br_task *t, const char *status) {
  inv_rec *r = t->inv;
  br_inv_info *i = inv_row_slot(e);
  i->row.id = r->inv.id;
  i->row.task_id = t->id;
  i->row.node = i->buf[BR_INV_NODE] = xstrdup(task_node(t)->name);
  i->row.attempt = t->attempts;
  i->row.status = i->buf[BR_INV_STATUS] = xstrdup(status);
  i->row.log_path = i->buf[BR_INV_LOG_PATH] = xstrdup(r->inv.log_path);
  i->row.worker = i->buf[BR_INV_WORKER] =
      xstrdup(r->worker ? r->worker : e->exops ? e->exops->name : "");
  i->row.started_ms = r->started_ms;
  if (r->done) {
    i->row.exit_code = r->res.exit_code;
    i->row.term_signal = r->res.term_signal;
    i->row.runtime = r->res.runtime;
    /* a lost job's agent never said: from its start to when it was given
     * up, as the server saw it (not 0 s, which read as never run) */
    if (r->res.status == BR_INV_LOST && r->res.runtime <= 0 && r->started_ms > 0 &&
        e->now_ms > r->started_ms)
      i->row.runtime = (double)(e->now_ms - r->started_ms) / 1000.0;
    i->row.peak_rss_kb = r->res.peak_rss_kb;
    i->row.log_tail = i->buf[BR_INV_LOG_TAIL] = xstrdup(r->res.log_tail);
    i->row.error = i->buf[BR_INV_ERROR] = xstrdup(r->res.error);
    i->row.ended_ms = e->now_ms;
  }
}

static int node_max_attempts(const br_node *n) {
  json_t *r = json_object_get(n->params, "retries");
  return json_is_integer(r) && json_integer_value(r) >= 0 ? (int)json_integer_value(r) + 1 : 3;
}

static void queue_invocation(br_engine *e, br_task *t) {
  steps_reset(t);
  t->inv->inv.ready_ms = e->now_ms;
  set_state(e, t, BR_TASK_QUEUED);
  if (!t->paused) heap_push(&e->queued, t);
}

/* Dispatch happens in two halves around a commit: prepare_dispatch() moves
 * as many queued tasks as the executor has room for to running (and queues
 * their invocation rows), the caller commits (together with whatever else the
 * batch changed: one commit per turn), and submit_started() hands them to the
 * executor. So nothing outside sees a job before its start is durable. */
static void prepare_dispatch(br_engine *e) {
  if (!e->ex || e->stopping || !e->queued.n) return;
  int cap = e->exops->capacity(e->ex) - (int)e->n_starting;
  while (cap-- > 0 && e->queued.n) {
    br_task *t = heap_pop(&e->queued);
    inv_rec *r = t->inv;
    r->inv.id = ++e->next_id;
    r->inv.task_id = t->id;
    r->done = 0;
    inv_result_clear(&r->res);
    if (!r->inv.log_path || r->own_log) {
      /* one file per invocation (a retry's output is its own), one folder
       * per thousand tasks: few folders, none too large */
      char path[4096];
      snprintf(path, sizeof path, "%s/%lld/%lld.%lld.log", e->log_dir ? e->log_dir : "braid-logs",
               (long long)(t->id / 1000), (long long)t->id, (long long)r->inv.id);
      free(r->strs[3]);
      r->inv.log_path = r->strs[3] = xstrdup(path);
      r->own_log = 1;
    }
    if (e->exops->schedules) {
      /* the executor chooses the worker: the task stays queued until then */
      t->held = r->inv.id;
      r->assigned = 0;
    } else {
      r->started_ms = e->now_ms;
      r->assigned = 1;
      t->attempts++;
      t->progress = 0;
      e->st.invocations_started++;
      set_state(e, t, BR_TASK_RUNNING);
      inv_row_add(e, t, "running");
    }
    if (e->n_starting == e->cap_starting) {
      e->cap_starting = e->cap_starting ? e->cap_starting * 2 : 16;
      e->starting = xrealloc(e->starting, e->cap_starting * sizeof *e->starting);
    }
    e->starting[e->n_starting++] = t->id;
  }
}

static void submit_started(br_engine *e) {
  size_t n = e->n_starting;
  e->n_starting = 0;
  for (size_t i = 0; i < n; i++) {
    br_task *t = task_find(e, e->starting[i]);
    if (!t || !t->inv) continue;
    if (e->exops->schedules ? t->state != BR_TASK_QUEUED || t->held != t->inv->inv.id
                            : t->state != BR_TASK_RUNNING)
      continue;
    inv_rec *r = t->inv;
    r->inv.attrs = t->attrs;
    r->inv.task_name = t->name;
    r->inv.priority = t->priority;
    r->inv.group_id = t->group_id;
    r->inv.graph_id = t->gs->id;
    r->n_spawned = 0;
    names_free(&r->known_children);
    if (t->attempts > 1 || (t->flags & F_RERUN)) {
      /* a job run again (a retry, or after a crash) spawns what it spawned
       * before: remember those children so they are not made twice (also
       * those that are dead: consumed, they are not to be made again) */
      br_task_filter f = BR_TASK_FILTER_ALL;
      f.parent = t->id;
      br_error qerr = {0};
      e->store->ops->task_query(e->store, &f, collect_child_name, &r->known_children, &qerr);
    }
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", r->inv.log_path);
    char *slash = strrchr(dir, '/');
    if (slash) {
      *slash = '\0';
      if (!e->last_log_dir || strcmp(e->last_log_dir, dir) != 0) {
        br__mkdirs(dir, 0755);
        free(e->last_log_dir);
        e->last_log_dir = xstrdup(dir);
      }
    }
    br_error serr = {0};
    br_error_clear(&serr);
    if (e->exops->submit(e->ex, &r->inv, &serr) != BR_OK) {
      br_inv_result res = {.invocation_id = r->inv.id, .task_id = t->id,
                           .status = BR_INV_SPAWN_ERROR, .exit_code = -1,
                           .error = serr.msg[0] ? serr.msg : (char *)"could not start"};
      br_engine__inv_done(e, &res);
    }
  }
}

/* The task whose current invocation this is (running, or held by a
 * scheduling executor), or NULL for a stale or repeated report. */
static br_task *running_task(br_engine *e, int64_t inv_id, int64_t task_id) {
  br_task *t = task_find(e, task_id);
  if (!t || !t->inv || t->inv->inv.id != inv_id) return NULL;
  if (t->state == BR_TASK_RUNNING) return t;
  if (t->state == BR_TASK_QUEUED && t->held == inv_id) return t;
  return NULL;
}

/* A scheduling executor chose a worker: the task runs from now on (the
 * executor tells the worker after this is committed). */
static bool ev_assign(void *ud, int64_t inv_id, int64_t task_id, const char *worker) {
  br_engine *e = ud;
  br_task *t = task_find(e, task_id);
  if (!t || !t->inv || t->state != BR_TASK_QUEUED || t->held != inv_id || t->inv->inv.id != inv_id)
    return false;
  inv_rec *r = t->inv;
  e->now_ms = clock_ms();
  t->held = 0;
  free(r->worker);
  r->worker = xstrdup(worker);
  r->started_ms = e->now_ms;
  r->assigned = 1;
  t->attempts++;
  t->progress = 0;
  e->st.invocations_started++;
  set_state(e, t, BR_TASK_RUNNING);
  inv_row_add(e, t, "running");
  return true;
}

/* Takes a held invocation back from a scheduling executor (its task was
 * cancelled, paused, moved or given another priority). */
static void withdraw(br_engine *e, br_task *t) {
  if (!t->held) return;
  int64_t id = t->held;
  t->held = 0;
  if (e->ex) e->exops->cancel(e->ex, id);
}

static void ev_spawn(void *ud, int64_t inv_id, int64_t task_id, const char *name, json_t *attrs) {
  br_engine *e = ud;
  br_task *t = running_task(e, inv_id, task_id);
  if (!t) {
    json_decref(attrs);
    return;
  }
  br_node *n = task_node(t);
  int port = children_port(n);
  e->now_ms = clock_ms();
  char nbuf[256];
  int k = t->inv->n_spawned++;
  if (!name) { /* the k-th spawn of the attempt: the same name when run again */
    snprintf(nbuf, sizeof nbuf, "%s/%d", t->name ? t->name : "task", k);
    name = nbuf;
  }
  name_entry *known = NULL;
  HASH_FIND_STR(t->inv->known_children, name, known);
  if (known) { /* made by an earlier attempt: already on its way */
    json_decref(attrs);
    /* unless it was cancelled (it came after a cancel of that attempt, or
     * was cancelled itself): this attempt runs, so what it spawns runs */
    br_task *c = t->inv->cancel_asked ? NULL : task_find(e, known->id);
    if (c && c->state == BR_TASK_CANCELLED) br_engine_task_retry(e, c->id, NULL);
    return;
  }
  /* a child starts with its parent's attributes, and what the job gave */
  json_t *ca = json_copy(t->attrs);
  ENGINE_ASSERT(ca);
  if (attrs) json_object_update(ca, attrs);
  json_decref(attrs);
  br_task *ch = task_new(e, t->gs, t->node, ca, name, t->id, t->priority, t->group_id);
  t->live_children++;
  mark_dirty(e, t);
  if (port < 0) {
    fail_task(e, ch, "this node type cannot create children");
    return;
  }
  /* spawns that come after a cancel (a farm job's report on its way) make
   * children that are cancelled where they arrive: they can be retried */
  route_as(e, ch, port, t->inv->cancel_asked);
}

static void ev_progress(void *ud, int64_t inv_id, int64_t task_id, double progress) {
  br_task *t = running_task(ud, inv_id, task_id);
  if (t) t->progress = progress;
}

static void ev_start(void *ud, int64_t inv_id, int64_t task_id) {
  (void)ud;
  (void)inv_id;
  (void)task_id;
}

void br_engine__inv_done(void *ud, const br_inv_result *res);
void br_engine__inv_done(void *ud, const br_inv_result *res) {
  br_engine *e = ud;
  br_task *t = running_task(e, res->invocation_id, res->task_id);
  if (!t) return; /* a stale or repeated report: changes nothing */
  t->held = 0;
  inv_rec *r = t->inv;
  inv_result_clear(&r->res);
  r->res = *res;
  r->res.log_tail = xstrdup(res->log_tail);
  r->res.error = xstrdup(res->error);
  r->res.set_attrs = res->set_attrs ? json_incref(res->set_attrs) : NULL;
  r->done = 1;
  e->now_ms = clock_ms();
  inv_row_add(e, t, br_inv_status_name(res->status));
  e->st.invocations_done++;
  if (res->status == BR_INV_CANCELLED) e->st.invocations_cancelled++;
  set_state(e, t, BR_TASK_POST);
  t->post_next = NULL;
  if (e->post_tail) e->post_tail->post_next = t;
  else e->post_head = t;
  e->post_tail = t;
}

static int last_running_inv(void *ud, br_inv_info *i) {
  br_inv_info *last = ud;
  br_inv_info_free(last);
  *last = *i;
  free(i);
  return 0;
}

/* Hands a task loaded running to an executor that can adopt it: its worker
 * may still run the job and report it. Returns 1 when adopted. */
static int adopt_one(br_engine *e, br_task *t) {
  br_inv_info last;
  memset(&last, 0, sizeof last);
  br_error err = {0};
  if (e->store->ops->inv_query(e->store, t->id, last_running_inv, &last, &err) != BR_OK ||
      !last.row.id || !last.row.status || strcmp(last.row.status, "running") != 0 ||
      !last.row.worker || !*last.row.worker) {
    br_inv_info_free(&last);
    return 0;
  }
  inv_rec *r = calloc(1, sizeof *r);
  ENGINE_ASSERT(r);
  r->inv.id = last.row.id;
  r->inv.task_id = t->id;
  r->inv.node = r->strs[0] = xstrdup(task_node(t)->name);
  r->inv.log_path = r->strs[3] = xstrdup(last.row.log_path);
  r->inv.attrs = t->attrs;
  r->inv.task_name = t->name;
  r->inv.priority = t->priority;
  r->inv.group_id = t->group_id;
  r->inv.graph_id = t->gs->id;
  r->worker = xstrdup(last.row.worker);
  r->started_ms = last.row.started_ms;
  r->assigned = r->adopted = 1;
  br_inv_info_free(&last);
  /* children it spawned before are not made twice when it reports them again */
  br_task_filter f = BR_TASK_FILTER_ALL;
  f.parent = t->id;
  e->store->ops->task_query(e->store, &f, collect_child_name, &r->known_children, &err);
  if (e->exops->adopt(e->ex, &r->inv, r->worker, r->started_ms, &err) != BR_OK) {
    inv_free(r);
    return 0;
  }
  inv_free(t->inv);
  t->inv = r;
  return 1;
}

/* An invocation row left "running" by an engine that stopped before its
 * job ended: no report of it will come, so it is closed as lost (when it
 * ended is not known: ended is when this engine found it). */
static int close_cut_inv(void *ud, br_inv_info *i) {
  br_engine *e = ud;
  if (i->row.status && strcmp(i->row.status, "running") == 0) {
    free(i->buf[BR_INV_STATUS]);
    i->row.status = i->buf[BR_INV_STATUS] = xstrdup("lost");
    free(i->buf[BR_INV_ERROR]);
    i->row.error = i->buf[BR_INV_ERROR] =
        xstrdup("the braid run or server in charge of it stopped (killed or crashed) before it "
                "ended");
    i->row.exit_code = -1;
    i->row.ended_ms = e->now_ms;
    *inv_row_slot(e) = *i; /* the slot owns its strings now */
  } else {
    br_inv_info_free(i);
  }
  free(i);
  return 0;
}

/* Tasks loaded running: adopted, or processed again. The rows of their cut
 * attempts are closed in the commit that sends them round again, so the
 * store never shows one without the other. */
static void orphans_resolve(br_engine *e) {
  size_t n = e->n_orphans;
  int64_t *v = e->orphans;
  e->orphans = NULL;
  e->n_orphans = 0;
  e->now_ms = clock_ms();
  for (size_t i = 0; i < n; i++) {
    br_task *t = task_find(e, v[i]);
    if (!t || t->state != BR_TASK_RUNNING || t->inv) continue;
    if (e->ex && e->exops->adopt && adopt_one(e, t)) continue;
    br_error err = {0};
    e->store->ops->inv_query(e->store, t->id, close_cut_inv, e, &err);
    t->flags |= F_RERUN;
    set_state(e, t, BR_TASK_WAITING);
  }
  free(v);
}

int br_engine_set_executor(br_engine *e, const br_executor_ops *ops, const br_exec_config *cfg,
                           br_error *err) {
  if (e->ex) return br_error_set(err, BR_ESTATE, "the engine already has an executor");
  br_exec_config c = *cfg;
  c.loop = e->loop;
  br_exec_events ev = {.ud = e,
                       .on_spawn = ev_spawn,
                       .on_progress = ev_progress,
                       .on_start = ev_start,
                       .on_done = br_engine__inv_done,
                       .on_assign = ev_assign};
  int rc = ops->create(&c, &ev, &e->ex, err);
  if (rc) return rc;
  e->exops = ops;
  orphans_resolve(e);
  return BR_OK;
}

void br_engine_set_log_dir(br_engine *e, const char *dir) {
  free(e->log_dir);
  e->log_dir = xstrdup(dir);
}

void br_engine_stop(br_engine *e, bool hard) {
  if (!e->stopping || (hard && !e->stop_hard)) {
    e->stopping = 1;
    e->stop_hard = hard;
    if (e->ex) e->exops->cancel_all(e->ex, hard);
  }
}

static void fail_invocation(br_engine *e, br_task *t, const br_inv_result *res) {
  char msg[1024];
  switch (res->status) {
  case BR_INV_TIMEOUT: snprintf(msg, sizeof msg, "timed out after %.1f s", res->runtime); break;
  case BR_INV_SPAWN_ERROR:
  case BR_INV_LOST: snprintf(msg, sizeof msg, "%s", res->error ? res->error : "lost"); break;
  default:
    if (res->term_signal)
      snprintf(msg, sizeof msg, "killed by signal %d after %d attempt%s", res->term_signal,
               t->attempts, t->attempts == 1 ? "" : "s");
    else
      snprintf(msg, sizeof msg, "exit code %d after %d attempt%s", res->exit_code, t->attempts,
               t->attempts == 1 ? "" : "s");
  }
  fail_task(e, t, msg);
}

/* An invocation finished: apply what the job set (on success), then let the
 * node decide (postprocess), or apply the default: success routes by output
 * 0; failures, retry codes and lost workers run again within the node's
 * bound (retries); timeouts and spawn errors fail at once. */
static void post_task(br_engine *e, br_task *t) {
  inv_rec *r = t->inv;
  const br_inv_result *res = &r->res;
  br_node *n = task_node(t);
  if (res->status == BR_INV_CANCELLED) {
    if (e->stopping) { /* interrupted: the next run does it again */
      set_state(e, t, BR_TASK_QUEUED);
      if (r->assigned) t->attempts--;
    } else {
      set_state(e, t, BR_TASK_CANCELLED);
    }
    return;
  }
  if (res->status == BR_INV_OK && json_object_size(res->set_attrs))
    json_object_update(attrs_mut(e, t), res->set_attrs);
  if (n->type->postprocess) {
    br_node_ctx c;
    ctx_init(&c, e, t->gs, n);
    c.task = t;
    c.result = res;
    int rc = n->type->postprocess(&c);
    if (rc && !c.failed) br_ctx_fail(&c, "node '%s' (%s) failed", n->name, n->type->name);
    if (c.failed) fail_task(e, t, c.error);
    else if (c.action == ACT_INVOKE) { /* run again with a new invocation */
      inv_free(t->inv);
      t->inv = c.inv;
      c.inv = NULL;
      queue_invocation(e, t);
    } else {
      apply_result(e, &c, t);
    }
    ctx_done(&c);
    return;
  }
  switch (res->status) {
  case BR_INV_OK: route(e, t, 0); break;
  case BR_INV_RETRY:
  case BR_INV_LOST:
  case BR_INV_FAILED: /* run again within the node's bound */
    if (t->attempts >= node_max_attempts(n)) fail_invocation(e, t, res);
    else if (r->adopted) set_state(e, t, BR_TASK_WAITING); /* its command is made again */
    else queue_invocation(e, t);
    break;
  default: /* timeouts and programs that cannot start fail the same way again */
    fail_invocation(e, t, res);
    break;
  }
}

/* ---- processing ---- */

static void apply_result(br_engine *e, br_node_ctx *c, br_task *t) {
  br_node *n = c->node;
  if (c->failed) {
    fail_task(e, t, c->error);
    return;
  }
  /* children first: they exist before their parent moves on */
  int cport = children_port(n);
  for (size_t i = 0; i < c->n_spawns; i++) {
    if (cport < 0) {
      fail_task(e, t, "this node type cannot create children");
      return;
    }
    char nbuf[256];
    const char *name = c->spawns[i].name;
    if (!name) {
      snprintf(nbuf, sizeof nbuf, "%s/%zu", t->name ? t->name : "task", i);
      name = nbuf;
    }
    br_task *ch = task_new(e, t->gs, t->node, c->spawns[i].attrs, name, t->id, t->priority,
                           t->group_id);
    ch->steps = t->steps; /* children made without a job carry on its count */
    c->spawns[i].attrs = NULL;
    t->live_children++;
    mark_dirty(e, t);
    route(e, ch, cport);
  }
  size_t ne = c->split_n >= 1 ? c->split_n : 1;
  br_task *stack_el[16];
  br_task **el = ne <= 16 ? stack_el : calloc(ne, sizeof *el);
  ENGINE_ASSERT(el);
  bool made = c->split_n < 1 || make_split(e, t, c->split_n, el);
  if (c->split_n < 1) el[0] = t;
  for (size_t i = 0; made && i < c->split_n; i++) {
    json_t *a = c->split_attrs[i];
    if (i % ABANDON_CHECK == ABANDON_CHECK - 1 && abandon_for_stop(e, c->split_n)) made = false;
    else if (a && json_object_size(a)) json_object_update(attrs_mut(e, el[i]), a);
  }
  if (!made) { /* given up: left as it is, never committed */
    if (el != stack_el) free(el);
    return;
  }
  for (size_t i = 0; i < ne; i++) {
    switch (c->action) {
    case ACT_ROUTE: route(e, el[i], c->port); break;
    case ACT_BLOCK: block_task(e, el[i], c->key); break;
    case ACT_KILL: kill_task(e, el[i]); break;
    case ACT_INVOKE:
      if (ne > 1) {
        fail_task(e, el[i], "a node cannot both split a task and run a job for it");
        break;
      }
      inv_free(el[i]->inv);
      el[i]->inv = c->inv;
      c->inv = NULL;
      queue_invocation(e, el[i]);
      break;
    default: fail_task(e, el[i], "internal: unknown node action"); break;
    }
  }
  if (el != stack_el) free(el);
}

/* Counts a step of t through a node; past the bound (nodes passed without
 * a job or a wait in between: a loop of instant nodes that never ends), it
 * records the nodes until one comes again, then fails the task naming them.
 * Returns 1 when t failed. */
static int endless_loop(br_engine *e, br_task *t) {
  int64_t m = e->opts.max_steps > 0 ? e->opts.max_steps : DEFAULT_MAX_STEPS;
  uint32_t max = m < UINT32_MAX - 1 ? (uint32_t)m : UINT32_MAX - 1;
  if (t->steps < UINT32_MAX) t->steps++;
  if (t->steps <= max) return 0;
  if (!t->trace) {
    t->trace = calloc(1, sizeof *t->trace);
    ENGINE_ASSERT(t->trace);
  }
  loop_trace *tr = t->trace;
  int from = -1;
  for (int i = 0; i < tr->n && from < 0; i++)
    if (tr->nodes[i] == t->node) from = i;
  if (from < 0 && tr->n < TRACE_MAX) {
    tr->nodes[tr->n++] = t->node;
    return 0;
  }
  char path[768];
  size_t used = 0;
  path[0] = '\0';
  for (int i = from < 0 ? 0 : from; i < tr->n && used < sizeof path; i++)
    used += (size_t)snprintf(path + used, sizeof path - used, "'%s' -> ",
                             t->gs->g->nodes[tr->nodes[i]]->name);
  if (used < sizeof path)
    snprintf(path + used, sizeof path - used, from < 0 ? "..." : "'%s'",
             t->gs->g->nodes[t->node]->name);
  char msg[1024];
  snprintf(msg, sizeof msg,
           "went round %s for %u steps without running a job or waiting: an endless loop?",
           path, max);
  steps_reset(t);
  fail_task(e, t, msg);
  return 1;
}

static void process_task(br_engine *e, br_task *t) {
  if (endless_loop(e, t)) return;
  br_node *n = task_node(t);
  br_node_ctx c;
  ctx_init(&c, e, t->gs, n);
  c.task = t;
  int rc = n->type->process ? n->type->process(&c) : 0;
  if (rc && !c.failed)
    br_ctx_fail(&c, "node '%s' (%s) failed", n->name, n->type->name);
  apply_result(e, &c, t);
  ctx_done(&c);
}

static void release_group(br_engine *e, wgroup *g) {
  g->pending = 0;
  br_node *n = g->gs->g->nodes[g->node];
  if (g->n && n->type->release) {
    br_node_ctx c;
    ctx_init(&c, e, g->gs, n);
    c.group = g;
    int rc = n->type->release(&c);
    if (c.released_any) {
      size_t k = 0;
      for (size_t i = 0; i < g->n; i++)
        if (g->v[i]->wg == g) g->v[k++] = g->v[i];
      g->n = k;
    }
    if (rc || c.failed) {
      /* a waiter failed: put every member in error rather than hold them */
      for (size_t i = 0; i < g->n; i++) {
        g->v[i]->wg = NULL;
        fail_task(e, g->v[i], c.error ? c.error : "waiter failed");
      }
      g->n = 0;
    }
    ctx_done(&c);
  }
  if (g->n == 0 && !g->pending) group_free(e, g);
}

/* ---- commit ---- */

static void task_row(const br_task *t, br_task_info *r) {
  memset(r, 0, sizeof *r);
  r->id = t->id;
  r->graph_id = t->gs->id;
  r->name = t->name;
  r->node = t->gs->g->nodes[t->node]->name;
  r->port = t->port;
  r->state = (br_task_state)t->state;
  r->paused = t->paused;
  r->attrs = t->attrs;
  r->parent = t->parent;
  r->split_id = t->split_id;
  r->split_elem = t->split_elem;
  r->split_count = t->split_count;
  r->priority = t->priority;
  r->group_id = t->group_id;
  r->wait_key = t->wait_key;
  r->live_children = t->live_children;
  r->attempts = t->attempts;
  r->created_ms = t->created_ms;
  r->updated_ms = t->updated_ms;
  r->error = t->error;
}

static void hook(br_engine *e, const char *point, int64_t n) {
  if (e->opts.hook) e->opts.hook(e->opts.hook_ud, point, n);
}

static int commit(br_engine *e, br_error *err) {
  if (!e->dirty && !e->split_dirty && !e->n_deltas && !e->n_inv_rows) return BR_OK;
  if (e->abandoned) return br_error_set(err, BR_ECANCEL, "cancelled");
  br_store *s = e->store;
  int rc = s->ops->begin(s, err);
  size_t rows = 0;
  for (br_task *t = e->dirty; !rc && t; t = t->dirty_next) {
    if (++rows % ABANDON_CHECK == 0 && stop_asked(e)) {
      size_t n = rows;
      for (br_task *r = t; r; r = r->dirty_next) n++;
      abandon_for_stop(e, n);
      rc = br_error_set(err, BR_ECANCEL, "cancelled");
      break;
    }
    br_task_info row;
    task_row(t, &row);
    if (t->flags & F_NEW) rc = s->ops->task_insert(s, &row, err);
    else rc = s->ops->task_update(s, &row, (t->flags & F_ATTRS) != 0, err);
    e->st.rows_written++;
  }
  for (msplit *sp = e->split_dirty; !rc && sp; sp = sp->dirty_next) {
    rc = s->ops->split_put(s, &sp->rec, err);
    e->st.rows_written++;
  }
  for (size_t i = 0; !rc && i < e->n_deltas; i++)
    rc = s->ops->task_add_live_children(s, e->deltas[i].id, e->deltas[i].delta, err);
  for (size_t i = 0; !rc && i < e->n_inv_rows; i++) rc = s->ops->inv_put(s, &e->inv_rows[i].row, err);
  hook(e, "commit-before", (int64_t)e->st.commits);
  if (!rc) rc = s->ops->commit(s, err);
  if (rc) {
    s->ops->rollback(s);
    if (!e->abandoned) e->failed = 1;
    return rc;
  }
  e->st.commits++;
  hook(e, "commit-after", (int64_t)e->st.commits);
  /* durable: clear the marks and let finished tasks go */
  br_task *t = e->dirty, *next;
  e->dirty = NULL;
  for (; t; t = next) {
    next = t->dirty_next;
    t->dirty_next = NULL;
    if (e->observer) {
      br_task_info row;
      task_row(t, &row);
      e->observer(e->observer_ud, &row);
    }
    t->flags &= (uint16_t) ~(F_NEW | F_DIRTY | F_ATTRS);
    if (br_task_state_is_final(t->state)) {
      HASH_DEL(e->tasks, t);
      task_free(e, t);
    }
  }
  msplit *sp = e->split_dirty, *snext;
  e->split_dirty = NULL;
  for (; sp; sp = snext) {
    snext = sp->dirty_next;
    sp->dirty = 0;
    sp->dirty_next = NULL;
    split_free_if_unused(e, sp);
  }
  e->n_deltas = 0;
  for (size_t i = 0; i < e->n_inv_rows; i++) br_inv_info_free(&e->inv_rows[i]);
  e->n_inv_rows = 0;
  e->batch_count = 0;
  e->st.tasks_in_memory = HASH_COUNT(e->tasks);
  return BR_OK;
}

int br_engine_flush(br_engine *e, br_error *err) { return commit(e, err); }

/* ---- running ---- */

typedef struct posted {
  void (*fn)(br_engine *e, void *ud);
  void *ud;
  struct posted *next;
} posted;

typedef struct on_commit {
  void (*fn)(br_engine *e, void *ud, bool committed);
  void *ud;
  struct on_commit *next;
} on_commit;

int br_engine_post(br_engine *e, void (*fn)(br_engine *e, void *ud), void *ud) {
  posted *p = malloc(sizeof *p);
  if (!p) return BR_ENOMEM;
  p->fn = fn;
  p->ud = ud;
  p->next = NULL;
  pthread_mutex_lock(&e->post_mu);
  if (e->posted_tail) e->posted_tail->next = p;
  else e->posted_head = p;
  e->posted_tail = p;
  pthread_mutex_unlock(&e->post_mu);
  uv_async_send(&e->async);
  return BR_OK;
}

/* Runs what other threads handed over, on the engine thread. */
static void run_posted(br_engine *e) {
  pthread_mutex_lock(&e->post_mu);
  posted *p = e->posted_head;
  e->posted_head = e->posted_tail = NULL;
  pthread_mutex_unlock(&e->post_mu);
  e->now_ms = clock_ms();
  while (p) {
    posted *next = p->next;
    p->fn(e, p->ud);
    free(p);
    p = next;
  }
}

static void on_async(uv_async_t *h) { run_posted(h->data); }

static int has_work(br_engine *e) {
  /* uncommitted changes too: an executor's callbacks (a farm assignment)
   * wait for the commit before anything goes out */
  return e->pend_head || e->post_head || (!e->stopping && e->ready.n) || e->dirty ||
         e->n_inv_rows || e->on_commit_head;
}

int br_engine_on_commit(br_engine *e, void (*fn)(br_engine *e, void *ud, bool committed),
                        void *ud) {
  on_commit *p = malloc(sizeof *p);
  if (!p) return BR_ENOMEM;
  p->fn = fn;
  p->ud = ud;
  p->next = NULL;
  if (e->on_commit_tail) e->on_commit_tail->next = p;
  else e->on_commit_head = p;
  e->on_commit_tail = p;
  return BR_OK;
}

/* Runs what waited for the commit that just ended (committed: it took
 * their changes; false: the engine stops without them). */
static void run_on_commit(br_engine *e, bool committed) {
  on_commit *p = e->on_commit_head;
  e->on_commit_head = e->on_commit_tail = NULL;
  while (p) {
    on_commit *next = p->next;
    p->fn(e, p->ud, committed);
    free(p);
    p = next;
  }
}

/* Does in-memory work (released groups first, then finished invocations,
 * then ready tasks) until none is left or the batch is full. */
static void work(br_engine *e, int batch_max, int batch_ms) {
  int64_t start = mono_ms();
  for (unsigned tick = 1;; tick++) {
    if ((tick & 63) == 0) e->now_ms = clock_ms();
    if (e->pend_head) {
      wgroup *g = e->pend_head;
      e->pend_head = g->pend_next;
      if (!e->pend_head) e->pend_tail = NULL;
      release_group(e, g);
    } else if (e->post_head) {
      br_task *t = e->post_head;
      e->post_head = t->post_next;
      if (!e->post_head) e->post_tail = NULL;
      t->post_next = NULL;
      post_task(e, t);
    } else if (!e->stopping && e->ready.n) {
      process_task(e, heap_pop(&e->ready));
    } else {
      return;
    }
    if (e->batch_count >= batch_max || ((tick & 255) == 0 && mono_ms() - start >= batch_ms))
      return;
  }
}

int br_engine_serve(br_engine *e, br_error *err) {
  e->serving = 1;
  int rc = br_engine_run(e, err);
  e->serving = 0;
  return rc;
}

int br_engine_run(br_engine *e, br_error *err) {
  br_error_clear(err);
  if (e->n_orphans) orphans_resolve(e);
  uv_ref((uv_handle_t *)&e->async);
  int batch_max = e->opts.batch_max > 0 ? e->opts.batch_max : 4096;
  int batch_ms = e->opts.batch_ms > 0 ? e->opts.batch_ms : 50;
  while (!e->failed) {
    if (br_store_lost(e->store)) { /* nothing more can be committed: stop */
      e->failed = 1;
      br_error_set(&e->store_err, BR_ESTORE,
                   "lost the connection to the store (%s): stopping; start braid again to go "
                   "on from what was committed (nothing committed is lost)",
                   e->store->ops->name);
      break;
    }
    e->now_ms = clock_ms();
    work(e, batch_max, batch_ms);
    e->now_ms = clock_ms();
    prepare_dispatch(e);
    int schedules = e->ex && e->exops->schedules;
    if (schedules) { /* held, not run: they may be assigned in this very commit */
      submit_started(e);
      if (e->exops->schedule) e->exops->schedule(e->ex);
    }
    if (commit(e, &e->store_err)) {
      if (!e->abandoned) break;
      /* nothing was committed, so nothing goes out: wait for the jobs the
       * stop ends, then go */
      e->n_starting = 0;
      run_on_commit(e, false);
      if (!e->ex || !e->exops->active(e->ex)) break;
      uv_run(e->loop, UV_RUN_ONCE);
      continue;
    }
    if (!schedules) submit_started(e);
    if (e->ex && e->exops->committed) e->exops->committed(e->ex);
    run_on_commit(e, true);
    int active = e->ex ? e->exops->active(e->ex) : 0;
    if (has_work(e)) {
      /* also without jobs: a signal (Ctrl-C) or a timer is seen between
       * batches however long the work goes on */
      uv_run(e->loop, UV_RUN_NOWAIT);
    } else if (active || (e->serving && !e->stopping)) {
      uv_run(e->loop, UV_RUN_ONCE); /* sleep until a job or another thread reports */
    } else {
      break;
    }
  }
  bool last = !e->failed && commit(e, &e->store_err) == BR_OK;
  if (last && e->ex && e->exops->committed) e->exops->committed(e->ex);
  run_on_commit(e, last); /* the last ones, committed or not */
  uv_unref((uv_handle_t *)&e->async);
  if (e->failed) {
    if (err) *err = e->store_err;
    return e->store_err.code ? e->store_err.code : BR_ESTORE;
  }
  if (e->abandoned)
    return br_error_set(err, BR_ECANCEL,
                        "cancelled while a batch of %zu task changes was written: it was left "
                        "out, and the next run makes it again", e->abandoned);
  if (e->stopping) return br_error_set(err, BR_ECANCEL, "cancelled");
  return BR_OK;
}

/* ---- operations on one task (engine thread only) ---- */

static gslot *gslot_load(br_engine *e, int64_t id, br_error *err);

/* The live task, loading a finished one from the store when `load` is set. */
static br_task *task_get_live(br_engine *e, int64_t id, int load, br_error *err) {
  br_task *t = task_find(e, id);
  if (t || !load) {
    if (!t) br_error_set(err, BR_ENOTFOUND, "task %lld is finished or does not exist", (long long)id);
    return t;
  }
  br_task_info r;
  if (e->store->ops->task_get(e->store, id, &r, err)) return NULL;
  gslot *gs = gslot_load(e, r.graph_id, err);
  br_node *n = gs ? br_graph_find_node(gs->g, r.node) : NULL;
  if (!n) {
    br_error_set(err, BR_ENOTFOUND, "task %lld: node '%s' no longer exists", (long long)id, r.node);
    br_task_info_free(&r);
    return NULL;
  }
  t = task_from_row(e, gs, (int)n->index, &r);
  br_task_info_free(&r);
  count_memory(e);
  return t;
}

static void group_remove(br_engine *e, br_task *t) {
  wgroup *g = t->wg;
  if (!g) return;
  for (size_t i = 0; i < g->n; i++)
    if (g->v[i] == t) {
      memmove(&g->v[i], &g->v[i + 1], (g->n - i - 1) * sizeof *g->v);
      g->n--;
      break;
    }
  t->wg = NULL;
  t->wait_key = 0;
  if (g->n == 0 && !g->pending) group_free(e, g);
  else group_pend(e, g); /* the others may now be free to go */
}

int br_engine_task_cancel(br_engine *e, int64_t id, br_error *err) {
  br_task *t = task_get_live(e, id, 0, err);
  if (!t) return BR_ENOTFOUND;
  e->now_ms = clock_ms();
  switch (t->state) {
  case BR_TASK_RUNNING:
    /* the executor reports it cancelled; post_task records it */
    t->inv->cancel_asked = 1;
    if (e->ex) e->exops->cancel(e->ex, t->inv->inv.id);
    return BR_OK;
  case BR_TASK_BLOCKED: group_remove(e, t); /* fall through */
  case BR_TASK_QUEUED: withdraw(e, t); /* fall through */
  case BR_TASK_WAITING:
  case BR_TASK_POST:
  case BR_TASK_ERROR: set_state(e, t, BR_TASK_CANCELLED); return BR_OK;
  default:
    return br_error_set(err, BR_ESTATE, "task %lld is %s: nothing to cancel", (long long)id,
                        br_task_state_name((br_task_state)t->state));
  }
}

/* ---- why a task waits ---- */

/* The tasks of t's graph in error or cancelled that its waiter group (key)
 * waits for: elements of the split (by_split) or children of the parent
 * key. They will not arrive unless someone retries them. Goes through
 * those two states' lists only, which are short on a farm that runs. */
static int why_stuck(br_task *t, int64_t key, bool by_split, FILE *f) {
  static const br_task_state stuck[] = {BR_TASK_CANCELLED, BR_TASK_ERROR};
  int n = 0;
  for (size_t i = 0; i < t->gs->g->n_nodes; i++)
    for (size_t k = 0; k < sizeof stuck / sizeof *stuck; k++)
      for (br_task *x = t->gs->ns[i].lists[stuck[k]]; x; x = x->ls_next) {
        if ((by_split ? x->split_id : x->parent) != key) continue;
        if (n < 3)
          fprintf(f, "%s task %lld (%s at '%s')", n ? "," : "; these will not come unless retried:",
                  (long long)x->id, br_task_state_name(stuck[k]), t->gs->g->nodes[i]->name);
        n++;
      }
  if (n > 3) fprintf(f, " and %d more", n - 3);
  return n;
}

static void why_blocked(br_engine *e, br_task *t, FILE *f) {
  br_node *n = task_node(t);
  wgroup *g = t->wg;
  if (!g) {
    fprintf(f, "held at '%s'", n->name);
    return;
  }
  int64_t key = g->key;
  msplit *sp = NULL;
  br_task *parent = NULL;
  if (strcmp(n->type->name, "gather_split") == 0) HASH_FIND(hh, e->splits, &key, sizeof key, sp);
  else if (strcmp(n->type->name, "wait_children") == 0) parent = task_find(e, key);
  long long here = (long long)g->n, expect;
  if (sp) {
    expect = sp->rec.live;
    fprintf(f, "waiting at '%s' for the elements of split %lld: %lld of %lld here", n->name,
            (long long)key, here, expect);
  } else if (parent && parent->wg == g) {
    here--; /* the parent waits among them */
    expect = parent->live_children;
    fprintf(f, "waiting at '%s' for the children of task %lld: %lld of %lld here", n->name,
            (long long)key, here, expect);
  } else if (parent) {
    fprintf(f, "waiting at '%s' for its parent, task %lld, now %s at '%s'", n->name,
            (long long)key, br_task_state_name((br_task_state)parent->state),
            task_node(parent)->name);
    return;
  } else {
    fprintf(f, "held at '%s' (%s) with %lld other task%s under key %lld", n->name,
            n->type->name, here - 1, here == 2 ? "" : "s", (long long)key);
    return;
  }
  long long stuck = why_stuck(t, key, sp != NULL, f);
  if (expect - here - stuck > 0) fprintf(f, "; %lld on their way", expect - here - stuck);
}

static void why_queued(br_engine *e, br_task *t, FILE *f) {
  if (t->paused) {
    fprintf(f, "paused: it is queued again once resumed");
  } else if (t->held) {
    char buf[1024];
    size_t len = e->exops->why ? e->exops->why(e->ex, t->held, buf, sizeof buf) : 0;
    if (len) fprintf(f, "%s", buf);
    else fprintf(f, "waiting for the %s executor to start it", e->exops->name);
  } else {
    fprintf(f, "waiting for a free slot: the %s executor runs %d invocation%s, all it takes",
            e->exops ? e->exops->name : "(no)", e->ex ? e->exops->active(e->ex) : 0,
            e->ex && e->exops->active(e->ex) == 1 ? "" : "s");
  }
}

char *br_engine_task_waiting(br_engine *e, int64_t id) {
  br_task *t = task_find(e, id);
  if (!t || (t->state != BR_TASK_QUEUED && t->state != BR_TASK_BLOCKED &&
             !(t->state == BR_TASK_WAITING && t->paused)))
    return NULL;
  char *out = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&out, &len);
  if (!f) return NULL;
  if (t->state == BR_TASK_BLOCKED) why_blocked(e, t, f);
  else if (t->state == BR_TASK_QUEUED) why_queued(e, t, f);
  else fprintf(f, "paused: it goes on at '%s' once resumed", task_node(t)->name);
  if (fclose(f) != 0) {
    free(out);
    return NULL;
  }
  return out;
}

/* A dead task was consumed (gathered into its survivor, or by a kill): its
 * split and its parent count it no more, so brought back it would be
 * gathered, or waited for, a second time. One loaded from the store for
 * this call (not dirty: nothing to commit) leaves memory again. */
static int refuse_dead(br_engine *e, br_task *t, const char *what, br_error *err) {
  int rc = br_error_set(err, BR_ESTATE,
                        "task %lld is dead (consumed at node '%s'): it cannot be %s",
                        (long long)t->id, task_node(t)->name, what);
  if (!(t->flags & F_DIRTY)) {
    HASH_DEL(e->tasks, t);
    task_free(e, t);
    count_memory(e);
  }
  return rc;
}

int br_engine_task_retry(br_engine *e, int64_t id, br_error *err) {
  br_task *t = task_get_live(e, id, 1, err);
  if (!t) return err && err->code ? err->code : BR_ENOTFOUND;
  if (t->state == BR_TASK_DEAD) return refuse_dead(e, t, "retried", err);
  if (t->state == BR_TASK_RUNNING || t->state == BR_TASK_QUEUED || t->state == BR_TASK_BLOCKED)
    return br_error_set(err, BR_ESTATE, "task %lld is %s: it is not finished",
                        (long long)id, br_task_state_name((br_task_state)t->state));
  e->now_ms = clock_ms();
  free(t->error);
  t->error = NULL;
  t->attempts = 0;
  t->flags |= F_RERUN;
  set_state(e, t, BR_TASK_WAITING); /* processed again at its node */
  return BR_OK;
}

int br_engine_task_pause(br_engine *e, int64_t id, bool paused, br_error *err) {
  br_task *t = task_get_live(e, id, 0, err);
  if (!t) return BR_ENOTFOUND;
  e->now_ms = clock_ms();
  t->paused = paused;
  if (paused) {
    heap_remove(&e->ready, t);
    heap_remove(&e->queued, t);
    withdraw(e, t);
  } else if (t->state == BR_TASK_WAITING) {
    heap_push(&e->ready, t);
  } else if (t->state == BR_TASK_QUEUED && !t->held) {
    heap_push(&e->queued, t);
  }
  mark_dirty(e, t);
  return BR_OK;
}

int br_engine_task_set_priority(br_engine *e, int64_t id, int32_t priority, br_error *err) {
  br_task *t = task_get_live(e, id, 0, err);
  if (!t) return BR_ENOTFOUND;
  e->now_ms = clock_ms();
  int in_ready = t->hidx[HEAP_READY] >= 0, in_queued = t->hidx[HEAP_QUEUED] >= 0;
  if (t->held) { /* the executor ranks it by the old priority: take it back */
    withdraw(e, t);
    in_queued = !t->paused;
  }
  heap_remove(&e->ready, t);
  heap_remove(&e->queued, t);
  t->priority = priority;
  if (in_ready) heap_push(&e->ready, t);
  if (in_queued) heap_push(&e->queued, t);
  mark_dirty(e, t);
  return BR_OK;
}

int br_engine_task_set_attrs(br_engine *e, int64_t id, json_t *attrs, br_error *err) {
  if (!json_is_object(attrs)) return br_error_set(err, BR_EINVAL, "attributes must be an object");
  br_task *t = task_get_live(e, id, 1, err);
  if (!t) return err && err->code ? err->code : BR_ENOTFOUND;
  e->now_ms = clock_ms();
  json_t *a = attrs_mut(e, t);
  const char *k;
  json_t *v;
  json_object_foreach(attrs, k, v) {
    if (json_is_null(v)) json_object_del(a, k);
    else json_object_set(a, k, v);
  }
  return BR_OK;
}

int br_engine_task_move(br_engine *e, int64_t id, const char *node, br_error *err) {
  br_task *t = task_get_live(e, id, 1, err);
  if (!t) return err && err->code ? err->code : BR_ENOTFOUND;
  if (t->state == BR_TASK_DEAD) return refuse_dead(e, t, "moved", err);
  if (t->state == BR_TASK_RUNNING || t->state == BR_TASK_POST)
    return br_error_set(err, BR_ESTATE, "task %lld is running: cancel it first", (long long)id);
  br_node *n = br_graph_find_node(t->gs->g, node);
  if (!n) return br_error_set(err, BR_ENOTFOUND, "graph '%s' has no node '%s'", t->gs->g->name, node);
  e->now_ms = clock_ms();
  group_remove(e, t);
  withdraw(e, t);
  free(t->error);
  t->error = NULL;
  t->attempts = 0;
  br_wire w = {.node = (int)n->index, .port = 0};
  move_to(e, t, &w);
  return BR_OK;
}

/* Goes through the tasks in memory (all that are not finished): a user's
 * action on a whole submission, not a path any scheduling takes. */
size_t br_engine_group_op(br_engine *e, int64_t group_id, br_group_op op) {
  size_t n = 0;
  br_task *t, *tmp;
  HASH_ITER(hh, e->tasks, t, tmp) {
    if (t->group_id != group_id || br_task_state_is_final((br_task_state)t->state)) continue;
    bool stopped = t->state == BR_TASK_ERROR || t->state == BR_TASK_CANCELLED;
    int rc = BR_ESTATE;
    switch (op) {
    case BR_GROUP_CANCEL:
      if (t->state != BR_TASK_CANCELLED) rc = br_engine_task_cancel(e, t->id, NULL);
      break;
    case BR_GROUP_PAUSE:
    case BR_GROUP_RESUME:
      if (!stopped && t->paused != (op == BR_GROUP_PAUSE))
        rc = br_engine_task_pause(e, t->id, op == BR_GROUP_PAUSE, NULL);
      break;
    case BR_GROUP_RETRY:
      if (stopped) rc = br_engine_task_retry(e, t->id, NULL);
      break;
    }
    n += rc == BR_OK;
  }
  return n;
}

size_t br_engine_retry_failed(br_engine *e) {
  size_t n = 0;
  e->now_ms = clock_ms();
  for (gslot *gs = e->graphs; gs; gs = gs->next)
    for (size_t i = 0; i < gs->g->n_nodes; i++)
      while (gs->ns[i].lists[BR_TASK_ERROR]) {
        br_task *t = gs->ns[i].lists[BR_TASK_ERROR];
        free(t->error);
        t->error = NULL;
        t->attempts = 0;
        t->flags |= F_RERUN;
        set_state(e, t, BR_TASK_WAITING);
        n++;
      }
  return n;
}

void br_engine_set_observer(br_engine *e, void (*fn)(void *ud, const br_task_info *t), void *ud) {
  e->observer = fn;
  e->observer_ud = ud;
}

/* ---- graphs ---- */

static gslot *gslot_find(br_engine *e, int64_t id) {
  for (gslot *s = e->graphs; s; s = s->next)
    if (s->id == id) return s;
  return NULL;
}

static gslot *gslot_add(br_engine *e, int64_t id, br_graph *g) {
  gslot *s = calloc(1, sizeof *s);
  ENGINE_ASSERT(s);
  s->id = id;
  s->g = g;
  s->ns = calloc(g->n_nodes + 1, sizeof *s->ns);
  ENGINE_ASSERT(s->ns);
  s->next = e->graphs;
  e->graphs = s;
  return s;
}

static gslot *gslot_load(br_engine *e, int64_t id, br_error *err) {
  gslot *s = gslot_find(e, id);
  if (s) return s;
  br_graph_row row;
  if (e->store->ops->graph_get(e->store, id, NULL, &row, err)) return NULL;
  char origin[64];
  snprintf(origin, sizeof origin, "<store graph %lld>", (long long)id);
  br_graph *g = br_graph_load_string(row.json, origin, err);
  br_graph_row_free(&row);
  return g ? gslot_add(e, id, g) : NULL;
}

int br_engine_add_graph(br_engine *e, br_graph *g, int64_t *graph_id, br_error *err) {
  char *json = br_graph_dumps(g);
  if (!json) {
    br_graph_free(g);
    return br_error_set(err, BR_ENOMEM, "out of memory");
  }
  br_graph_row row;
  br_error ignore = {0};
  int64_t id = 0;
  if (e->store->ops->graph_get(e->store, 0, g->name, &row, &ignore) == BR_OK) {
    if (strcmp(row.json, json) == 0) id = row.id;
    br_graph_row_free(&row);
  }
  int rc = BR_OK;
  if (!id) {
    rc = e->store->ops->begin(e->store, err);
    if (!rc) rc = e->store->ops->graph_put(e->store, g->name, json, &id, err);
    if (!rc) rc = e->store->ops->commit(e->store, err);
    else e->store->ops->rollback(e->store);
  }
  free(json);
  if (rc) {
    br_graph_free(g);
    return rc;
  }
  gslot *s = gslot_find(e, id);
  if (s) br_graph_free(g);
  else gslot_add(e, id, g);
  *graph_id = id;
  return BR_OK;
}

const br_graph *br_engine_graph(br_engine *e, int64_t graph_id) {
  br_error err = {0};
  gslot *s = gslot_load(e, graph_id, &err);
  return s ? s->g : NULL;
}

int br_engine_submit(br_engine *e, int64_t graph_id, const char *node, json_t *attrs,
                     const br_submit_opts *o, int64_t *task_id, br_error *err) {
  br_error_clear(err);
  gslot *gs = gslot_load(e, graph_id, err);
  if (!gs) return err && err->code ? err->code : BR_ENOTFOUND;
  br_node *n = br_graph_find_node(gs->g, node);
  if (!n) return br_error_set(err, BR_ENOTFOUND, "graph '%s' has no node '%s'", gs->g->name, node);
  int port = 0;
  if (o && o->port) {
    port = br_node_input_index(n, o->port);
    if (port < 0)
      return br_error_set(err, BR_ENOTFOUND, "node '%s' has no input port '%s'", node, o->port);
  }
  if (attrs && !json_is_object(attrs))
    return br_error_set(err, BR_EINVAL, "task attributes must be a JSON object");
  e->now_ms = clock_ms();
  json_t *a = attrs ? json_deep_copy(attrs) : json_object();
  br_task *t = task_new(e, gs, (int)n->index, a, o && o->name ? o->name : gs->g->name, 0,
                        o ? o->priority : 0, o ? o->group_id : 0);
  br_wire w = {.node = (int)n->index, .port = port};
  move_to(e, t, &w);
  if (task_id) *task_id = t->id;
  return BR_OK;
}

/* ---- open / close ---- */

typedef struct load_ctx {
  br_engine *e;
  br_error *err;
  int rc;
} load_ctx;

static int load_one(void *ud, br_task_info *r) {
  load_ctx *lc = ud;
  br_engine *e = lc->e;
  gslot *gs = gslot_load(e, r->graph_id, lc->err);
  if (!gs) {
    lc->rc = lc->err->code ? lc->err->code : BR_ESTORE;
    br_task_info_free(r);
    free(r);
    return 1;
  }
  br_node *n = br_graph_find_node(gs->g, r->node);
  br_task *t = task_from_row(e, gs, n ? (int)n->index : 0, r);
  if (!n) {
    char msg[512];
    snprintf(msg, sizeof msg, "node '%s' no longer exists in graph %lld", r->node,
             (long long)r->graph_id);
    t->state = BR_TASK_ERROR;
    list_add(t);
    free(t->error);
    t->error = xstrdup(msg);
    mark_dirty(e, t);
  } else {
    switch (t->state) {
    case BR_TASK_BLOCKED:
      list_add(t);
      group_add(e, group_find(e, gs, t->node, t->wait_key, 1), t);
      break;
    case BR_TASK_RUNNING:
      /* its job may still run on a farm worker: the executor adopts it
       * (br_engine_set_executor), or it is processed again (br_engine_run) */
      list_add(t);
      e->orphans = xrealloc(e->orphans, (e->n_orphans + 1) * sizeof *e->orphans);
      e->orphans[e->n_orphans++] = t->id;
      break;
    case BR_TASK_QUEUED:
    case BR_TASK_POST:
      /* the invocation was lost with the previous engine: process again */
      t->state = BR_TASK_WAITING;
      t->flags |= F_RERUN;
      list_add(t);
      if (!t->paused) heap_push(&e->ready, t);
      mark_dirty(e, t);
      break;
    case BR_TASK_WAITING:
      list_add(t);
      if (!t->paused) heap_push(&e->ready, t);
      break;
    default:
      list_add(t);
      break;
    }
  }
  br_task_info_free(r);
  free(r);
  return 0;
}

br_engine *br_engine_open(br_store *store, const br_engine_opts *opts, br_error *err) {
  br_error local = {0};
  if (!err) err = &local;
  br_error_clear(err);
  br_engine *e = calloc(1, sizeof *e);
  if (!e) {
    br_error_set(err, BR_ENOMEM, "out of memory");
    return NULL;
  }
  e->store = store;
  e->ready.which = HEAP_READY;
  e->queued.which = HEAP_QUEUED;
  if (opts) e->opts = *opts;
  e->loop = e->opts.loop;
  if (!e->loop) {
    e->loop = malloc(sizeof *e->loop);
    if (!e->loop || uv_loop_init(e->loop) != 0) {
      free(e->loop);
      free(e);
      br_error_set(err, BR_ENOMEM, "cannot create an event loop");
      return NULL;
    }
    e->own_loop = 1;
  }
  pthread_mutex_init(&e->post_mu, NULL);
  uv_async_init(e->loop, &e->async, on_async);
  e->async.data = e;
  uv_unref((uv_handle_t *)&e->async); /* only br_engine_run keeps the loop alive for it */
  e->async_ready = 1;
  e->now_ms = clock_ms();
  int rc = store->ops->max_id(store, &e->next_id, err);
  load_ctx lc = {.e = e, .err = err, .rc = 0};
  if (!rc) rc = store->ops->load_active(store, load_one, &lc, err);
  if (!rc) rc = lc.rc;
  if (rc) {
    br_engine_free(e);
    return NULL;
  }
  count_memory(e);
  return e;
}

void br_engine_free(br_engine *e) {
  if (!e) return;
  br_task *t, *tmp;
  HASH_ITER(hh, e->tasks, t, tmp) {
    HASH_DEL(e->tasks, t);
    t->split = NULL; /* splits are freed below, all at once */
    inv_free(t->inv);
    free(t->trace);
    json_decref(t->attrs);
    free(t->name);
    free(t->error);
    free(t);
  }
  msplit *s, *stmp;
  HASH_ITER(hh, e->splits, s, stmp) {
    HASH_DEL(e->splits, s);
    free(s);
  }
  wgroup *g, *gtmp;
  HASH_ITER(hh, e->groups, g, gtmp) {
    HASH_DEL(e->groups, g);
    for (wgroup *k = g; k;) {
      wgroup *kn = k->key_next;
      free(k->v);
      free(k);
      k = kn;
    }
  }
  for (gslot *gs = e->graphs; gs;) {
    gslot *n = gs->next;
    br_graph_free(gs->g);
    free(gs->ns);
    free(gs);
    gs = n;
  }
  if (e->ex) e->exops->destroy(e->ex);
  if (e->async_ready) {
    run_posted(e); /* nothing handed over is lost silently */
    uv_close((uv_handle_t *)&e->async, NULL);
    uv_run(e->loop, UV_RUN_DEFAULT); /* let closing handles finish */
    pthread_mutex_destroy(&e->post_mu);
  }
  run_on_commit(e, false); /* no commit comes after the engine's end */
  for (size_t i = 0; i < e->n_inv_rows; i++) br_inv_info_free(&e->inv_rows[i]);
  free(e->inv_rows);
  free(e->log_dir);
  free(e->last_log_dir);
  free(e->starting);
  free(e->orphans);
  free(e->ready.v);
  free(e->queued.v);
  free(e->deltas);
  if (e->own_loop) {
    uv_loop_close(e->loop);
    free(e->loop);
  }
  free(e);
}

void br_engine_get_stats(const br_engine *e, br_engine_stats *out) { *out = e->st; }
br_store *br_engine_store(br_engine *e) { return e->store; }
br_executor *br_engine_executor(br_engine *e, const br_executor_ops **ops) {
  if (ops) *ops = e->exops;
  return e->ex;
}
uv_loop_t *br_engine_loop(br_engine *e) { return e->loop; }

int br_engine_count_live(br_engine *e, int64_t graph_id, const char *node,
                         int64_t counts[BR_TASK_NSTATES]) {
  memset(counts, 0, sizeof(int64_t) * BR_TASK_NSTATES);
  gslot *gs = gslot_find(e, graph_id);
  if (!gs) return BR_ENOTFOUND;
  br_node *n = br_graph_find_node(gs->g, node);
  if (!n) return BR_ENOTFOUND;
  memcpy(counts, gs->ns[n->index].counts, sizeof(int64_t) * BR_TASK_NSTATES);
  return BR_OK;
}
