/* The slurm executor: every invocation becomes a Slurm job, and the
 * invocations that are ready together and ask for the same resources go as
 * one job array (one sbatch call). Each job runs `braid agent --once`, pinned
 * by a tag to its invocation: the agent takes that one job from a farm that
 * lives inside this executor (the agent executor of farm mode, reached over
 * this executor's own HTTP endpoint), runs it with the local executor on the
 * Slurm node and reports back exactly as a farm agent does: output,
 * progress, attributes and children set through the runtime channel, the
 * result. So the runtime channel, logs and crash behaviour are the farm's.
 *
 * Slurm keeps the machines; braid asks it, in batches, what became of its
 * jobs: one squeue call (and one sacct call, when accounting is enabled, for
 * jobs squeue no longer lists) per round for all of them, every `reconcile`
 * seconds, and at once when an agent reports its job lost or killed. A job
 * that ended without its agent reporting (node failure, preemption, scancel
 * from outside, time limit) is recorded with Slurm's state and reason: past
 * its time limit it is timed out; lost ones run again within the node's
 * retries. Cancelling an invocation scancels its job. A job pending for a
 * reason that waiting does not cure (PartitionConfig: more cores than a node
 * has, and the like) is scancelled and fails as one that cannot start.
 * slurmctld away (sbatch, squeue, scancel cannot reach it) is waited for:
 * the work stays queued, up to AWAY_MAX_MS. Every job's comment names this
 * braid (braid:KEY:RUN), so a restarted braid scancels the jobs the one
 * before left that hold no started invocation (they are sent again); a
 * braid run that ends scancels its arrays, so no agent outlives it.
 *
 * Options (br_exec_config.options), all optional:
 *   listen      where the agents' endpoint listens ("0.0.0.0:0": every
 *               interface, a free port; "127.0.0.1:0" for a one-node cluster)
 *   url         how jobs reach it (default http://HOSTNAME:PORT)
 *   partition, account, qos, time, args   defaults for every job (a node's
 *               "slurm" parameter overrides them; args are added)
 *   braid       the braid program on the compute nodes (default: this one)
 *   max_array   elements per job array (default 1000)
 *   batch_wait  seconds ready work waits for more of its kind before its
 *               sbatch, so a stream of small batches becomes few arrays
 *               (default 0.5)
 *   max_jobs    invocations held at once (default 100000)
 *   reconcile   seconds between squeue rounds (default 10)
 *   output      Slurm's output file for the agents' own messages
 *               (default /dev/null; e.g. "/shared/logs/braid-%A_%a.out")
 *   cancel_on_stop  stopping cancels the jobs (default true; a server
 *               sets false: its jobs go on and report to the next server)
 *   idle_exit   seconds a job's agent waits for its work, and for a server
 *               that does not answer (its --give-up), before and after its
 *               job: a braid restarted within it still gets the result
 *               (default 300)
 *   state_dir   where the jobs' token is kept (mode 0700), so that jobs
 *               still running when braid restarts report to the next one
 *               (default: a private folder, a new token each run)
 *   sbatch, squeue, scancel, sacct   the programs (default: from PATH)
 *   poll_wait, lost_after, recover   the inner farm's (see farm.h) */
#include <braid/exec.h>
#include <braid/farm.h>
#include <braid/http.h>

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uthash.h>

#include "../fs.h"

extern char **environ;

#define TAG_PREFIX "braid-inv-"
#define HOLD_MAX_MS 60000   /* how long a lost result waits for Slurm's word */
#define FINAL_GRACE_MS 3000 /* a job Slurm says ended: time for its last report */
#define MAX_PROCS 4         /* Slurm commands at once */
#define AWAY_MAX_MS 600000  /* how long sbatch may fail for want of slurmctld */
#define RETRY_MAX_MS 10000  /* the longest wait between two tries meanwhile */

typedef enum { SJ_QUEUED, SJ_SUBMITTING, SJ_SUBMITTED } sj_state;

typedef struct batch batch;

typedef struct sjob {
  int64_t id, task_id;
  sj_state state;
  char jobid[48]; /* "JOB_INDEX" once sbatch answered */
  bool cancel;    /* braid cancelled it */
  bool ending;    /* ended by us through br_farm_end: its on_done passes */
  br_inv_result *held; /* a lost or killed result, waiting for Slurm's word */
  int64_t held_ms, final_ms;
  char sq_state[24], sq_reason[96]; /* what the last squeue said of it (why) */
  int64_t sq_ms;                    /* when (0: not yet) */
  batch *b;       /* while queued or submitting */
  UT_hash_handle hh; /* by id */
  UT_hash_handle hj; /* by jobid, once submitted */
} sjob;

struct batch {
  char *key;   /* the shape (sbatch options), also the hash key */
  char **opts; /* sbatch options */
  char *name;  /* job name */
  int cores, gpus;
  int64_t memory_mb;
  int64_t *ids;
  size_t n, cap;
  size_t sealed; /* ids[0..sealed) are committed: they may go */
  int attempts;
  int64_t not_before_ms; /* a retry after a transient sbatch error */
  int64_t away_since_ms; /* its first transient error */
  char last_err[256];    /* that error's first line (why) */
  batch *next;           /* in the send list */
  UT_hash_handle hh;     /* queued, by shape */
};

typedef struct proc proc;
typedef void (*proc_done)(br_executor *ex, proc *p, int64_t status, const char *out, const char *err);

struct proc {
  br_executor *ex;
  uv_process_t h;
  uv_pipe_t out, err;
  char *obuf, *ebuf;
  size_t olen, elen;
  int open_handles;
  int64_t status;
  bool exited;
  proc_done done;
  batch *b; /* sbatch */
  json_t *ids; /* scancel: the job ids, for another try */
  proc *next;
};

typedef struct hreq { /* an agent's request, handed to the loop */
  br_http_req *rq;
  int kind; /* 0 register, 1 poll, 2 report */
  char *agent;
  json_t *body;
  struct hreq *next;
} hreq;

struct br_executor {
  uv_loop_t *loop;
  br_exec_events ev;
  br_executor *farm;
  json_t *opts;
  char *braid, *url, *token, *output, *listen, *dir;
  bool own_dir;
  const char *sbatch, *squeue, *scancel, *sacct;
  int max_array;
  int64_t max_jobs;
  double reconcile_s, idle_exit;
  bool cancel_on_stop, stopping, sacct_off;
  sjob *jobs, *by_jobid;
  int64_t njobs;
  batch *batches; /* queued, by shape, until the next commit */
  batch *send_head, *send_tail; /* waiting for sbatch (a few run at once) */
  json_t *to_cancel; /* job ids to scancel */
  proc *procs;
  int nprocs;
  bool reconciling, reconcile_soon;
  double batch_wait; /* seconds committed work waits for more of its shape */
  uv_timer_t timer, soon, gather;
  br_auth *auth;
  br_http_server *http;
  uv_async_t async;
  pthread_mutex_t mu;
  hreq *q_head, *q_tail;
  bool http_dead;
  int closing;
  json_t *missing;    /* job ids sacct is asked about */
  /* every job's comment is braid:KEY:RUN: KEY (from the token) names the
   * state_dir's braid, RUN this executor, so the next one finds the jobs
   * this one leaves behind; pin tags carry RUN too */
  char key[16], run[12];
  bool swept, sweeping; /* the earlier braid's jobs were looked for */
  bool sbatch_away, squeue_away; /* said once, until they work again */
  json_t *arrays; /* with cancel_on_stop: every array sent or adopted (a set of ids),
                   * scancelled at the end */
};

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static char *xstrdup(const char *s) {
  char *d = strdup(s ? s : "");
  if (!d) abort();
  return d;
}

static const char *opt_str(const json_t *o, const char *k, const char *dflt) {
  const char *v = json_string_value(json_object_get(o, k));
  return v && *v ? v : dflt;
}

static double opt_num(const json_t *o, const char *k, double dflt) {
  json_t *v = json_object_get(o, k);
  return json_is_number(v) ? json_number_value(v) : dflt;
}

/* ---- strings for the shell ---- */

/* 'single quoted' for sh */
static void sq(char **buf, size_t *len, size_t *cap, const char *s) {
  for (const char *p = "'"; ; p = NULL) {
    const char *src = p ? p : s;
    for (; *src; src++) {
      const char *piece = *src == '\'' && !p ? "'\\''" : NULL;
      size_t n = piece ? strlen(piece) : 1;
      if (*len + n + 2 > *cap) {
        *cap = (*cap + n + 2) * 2;
        *buf = realloc(*buf, *cap);
        if (!*buf) abort();
      }
      if (piece) memcpy(*buf + *len, piece, n);
      else (*buf)[*len] = *src;
      *len += n;
    }
    if (!p) break;
  }
  (*buf)[(*len)++] = '\'';
  (*buf)[*len] = '\0';
}

static void app(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void app(char **buf, size_t *len, size_t *cap, const char *fmt, ...) {
  va_list ap;
  for (;;) {
    va_start(ap, fmt);
    int n = vsnprintf(*buf + *len, *cap - *len, fmt, ap);
    va_end(ap);
    if (n < 0) abort();
    if (*len + (size_t)n < *cap) {
      *len += (size_t)n;
      return;
    }
    *cap = (*len + (size_t)n + 1) * 2;
    *buf = realloc(*buf, *cap);
    if (!*buf) abort();
  }
}

/* ---- child processes (sbatch, squeue, sacct, scancel) ---- */

static void kick(br_executor *ex);
static void batch_free(batch *b);

static void proc_closed(uv_handle_t *h) {
  proc *p = h->data;
  if (--p->open_handles > 0) return;
  br_executor *ex = p->ex; /* NULL: the executor went away meanwhile */
  if (ex) {
    for (proc **pp = &ex->procs; *pp; pp = &(*pp)->next)
      if (*pp == p) {
        *pp = p->next;
        break;
      }
    ex->nprocs--;
    if (p->done) {
      const char *o = p->obuf ? p->obuf : "", *e = p->ebuf ? p->ebuf : "";
      p->done(ex, p, p->status, o, e);
    }
    if (ex->reconcile_soon && !ex->reconciling) kick(ex);
  } else if (p->b) {
    batch_free(p->b);
  }
  json_decref(p->ids);
  free(p->obuf);
  free(p->ebuf);
  free(p);
}

static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  (void)h;
  (void)hint;
  static char scratch[65536];
  buf->base = scratch;
  buf->len = sizeof scratch;
}

static void read_into(uv_stream_t *s, ssize_t n, const uv_buf_t *buf, char **dst, size_t *len) {
  if (n > 0) {
    if (*len < (16u << 20)) { /* bounded */
      char *m = realloc(*dst, *len + (size_t)n + 1);
      if (!m) abort();
      memcpy(m + *len, buf->base, (size_t)n);
      *len += (size_t)n;
      m[*len] = '\0';
      *dst = m;
    }
  } else if (n < 0) {
    uv_close((uv_handle_t *)s, proc_closed);
  }
}

static void out_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  proc *p = s->data;
  read_into(s, n, buf, &p->obuf, &p->olen);
}

static void err_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  proc *p = s->data;
  read_into(s, n, buf, &p->ebuf, &p->elen);
}

static void on_exit_cb(uv_process_t *h, int64_t status, int sig) {
  proc *p = h->data;
  p->status = sig ? 128 + sig : status;
  p->exited = true;
  uv_close((uv_handle_t *)h, proc_closed);
}

/* input in an anonymous file, read from its start: the child's stdin. Not a
 * pipe: a child that exits without reading it (a site's sbatch wrapper, a
 * wrong program) would SIGPIPE braid as libuv writes. -1 and errno. */
static int input_fd(const char *input) {
  int fd = memfd_create("braid-slurm-input", MFD_CLOEXEC);
  if (fd < 0) return -1;
  size_t n = strlen(input), off = 0;
  while (off < n) {
    ssize_t k = write(fd, input + off, n - off);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) break;
    off += (size_t)k;
  }
  if (off < n || lseek(fd, 0, SEEK_SET) < 0) {
    int e = errno ? errno : EIO;
    close(fd);
    errno = e;
    return -1;
  }
  return fd;
}

/* Runs argv with input on its stdin; done gets the exit status and output. */
static int proc_run(br_executor *ex, char **argv, const char *input, proc_done done, batch *b,
                    char *errmsg, size_t errsize) {
  int in = input ? input_fd(input) : -1;
  if (input && in < 0) {
    snprintf(errmsg, errsize, "cannot run %s: its input: %s", argv[0], strerror(errno));
    return -1;
  }
  proc *p = calloc(1, sizeof *p);
  if (!p) abort();
  p->ex = ex;
  p->done = done;
  p->b = b;
  uv_pipe_init(ex->loop, &p->out, 0);
  uv_pipe_init(ex->loop, &p->err, 0);
  p->out.data = p->err.data = p->h.data = p;
  uv_stdio_container_t io[3] = {
      {.flags = in >= 0 ? UV_INHERIT_FD : UV_IGNORE, .data.fd = in},
      {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&p->out},
      {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&p->err},
  };
  uv_process_options_t po = {.exit_cb = on_exit_cb, .file = argv[0], .args = argv,
                             .stdio_count = 3, .stdio = io};
  p->open_handles = 3;
  p->next = ex->procs;
  ex->procs = p;
  ex->nprocs++;
  int rc = uv_spawn(ex->loop, &p->h, &po);
  if (in >= 0) close(in); /* the child has its own */
  if (rc) {
    snprintf(errmsg, errsize, "cannot run %s: %s", argv[0], uv_strerror(rc));
    p->done = NULL;
    p->status = 127;
    uv_close((uv_handle_t *)&p->h, proc_closed);
    uv_close((uv_handle_t *)&p->out, proc_closed);
    uv_close((uv_handle_t *)&p->err, proc_closed);
    return -1;
  }
  uv_read_start((uv_stream_t *)&p->out, alloc_cb, out_read);
  uv_read_start((uv_stream_t *)&p->err, alloc_cb, err_read);
  return 0;
}

/* Runs a command to its end, blocking (only at stop: scancel). */
static int run_wait(char **argv) {
  pid_t pid;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  int rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc) return -1;
  int st;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* First line of a command's error output, for messages. */
static void first_line(const char *s, char *out, size_t size) {
  while (*s == ' ' || *s == '\n') s++;
  size_t n = strcspn(s, "\n");
  if (n >= size) n = size - 1;
  memcpy(out, s, n);
  out[n] = '\0';
  if (!*out) snprintf(out, size, "no message");
}

/* ---- events ---- */

static sjob *sjob_find(br_executor *ex, int64_t id) {
  sjob *s = NULL;
  HASH_FIND(hh, ex->jobs, &id, sizeof id, s);
  return s;
}

static void result_free(br_inv_result *r) {
  if (!r) return;
  free(r->log_tail);
  free(r->error);
  json_decref(r->set_attrs);
  free(r);
}

static sjob *sjob_new(br_executor *ex, const br_invocation *inv, sj_state state) {
  sjob *s = calloc(1, sizeof *s);
  if (!s) abort();
  s->id = inv->id;
  s->task_id = inv->task_id;
  s->state = state;
  HASH_ADD(hh, ex->jobs, id, sizeof s->id, s);
  ex->njobs++;
  return s;
}

static void sjob_free(br_executor *ex, sjob *s) {
  HASH_DELETE(hh, ex->jobs, s);
  if (s->jobid[0]) HASH_DELETE(hj, ex->by_jobid, s);
  ex->njobs--;
  result_free(s->held);
  free(s);
}

static void batch_drop(batch *b, int64_t id) {
  for (size_t i = 0; i < b->n; i++)
    if (b->ids[i] == id) {
      memmove(b->ids + i, b->ids + i + 1, (b->n - i - 1) * sizeof *b->ids);
      b->n--;
      if (i < b->sealed) b->sealed--;
      return;
    }
}

static void schedule_reconcile(br_executor *ex, uint64_t ms);

static void deliver(br_executor *ex, sjob *s, const br_inv_result *r) {
  br_inv_result copy = *r;
  sjob_free(ex, s);
  if (ex->ev.on_done) ex->ev.on_done(ex->ev.ud, &copy);
}

static void ev_spawn(void *ud, int64_t inv, int64_t task, const char *name, json_t *attrs) {
  br_executor *ex = ud;
  if (ex->ev.on_spawn) ex->ev.on_spawn(ex->ev.ud, inv, task, name, attrs);
  else json_decref(attrs);
}
static void ev_progress(void *ud, int64_t inv, int64_t task, double v) {
  br_executor *ex = ud;
  if (ex->ev.on_progress) ex->ev.on_progress(ex->ev.ud, inv, task, v);
}
static void ev_start(void *ud, int64_t inv, int64_t task) {
  br_executor *ex = ud;
  if (ex->ev.on_start) ex->ev.on_start(ex->ev.ud, inv, task);
}
static bool ev_assign(void *ud, int64_t inv, int64_t task, const char *worker) {
  br_executor *ex = ud;
  return ex->ev.on_assign ? ex->ev.on_assign(ex->ev.ud, inv, task, worker) : true;
}
static void ev_output(void *ud, int64_t inv, int64_t task, const char *data, size_t len) {
  br_executor *ex = ud;
  if (ex->ev.on_output) ex->ev.on_output(ex->ev.ud, inv, task, data, len);
}

/* A result from the farm: passed on, unless the agent says its job was lost
 * or killed: then Slurm is asked why first (time limit, node failure,
 * preemption, scancel from outside). */
static void ev_done(void *ud, const br_inv_result *r) {
  br_executor *ex = ud;
  sjob *s = sjob_find(ex, r->invocation_id);
  if (!s) {
    if (ex->ev.on_done) ex->ev.on_done(ex->ev.ud, r);
    return;
  }
  bool killed = r->status == BR_INV_LOST || (r->status == BR_INV_FAILED && r->term_signal) ||
                (r->status == BR_INV_CANCELLED && !s->cancel);
  if (s->cancel && r->status != BR_INV_CANCELLED) { /* braid cancelled it, however it ended */
    br_inv_result c = *r;
    c.status = BR_INV_CANCELLED;
    deliver(ex, s, &c);
    return;
  }
  if (!killed || s->ending || s->cancel || !s->jobid[0] || ex->stopping || s->held) {
    deliver(ex, s, r);
    return;
  }
  br_inv_result *h = calloc(1, sizeof *h);
  if (!h) abort();
  *h = *r;
  h->log_tail = r->log_tail ? xstrdup(r->log_tail) : NULL;
  h->error = r->error ? xstrdup(r->error) : NULL;
  h->set_attrs = r->set_attrs ? json_incref(r->set_attrs) : NULL;
  s->held = h;
  s->held_ms = now_ms();
  schedule_reconcile(ex, 200);
}

/* ---- submitting ---- */

static const char *slurm_param(const br_invocation *inv, const json_t *opts, const char *k) {
  const char *v = json_string_value(json_object_get(inv->slurm, k));
  return v && *v ? v : opt_str(opts, k, NULL);
}

/* sbatch options of an invocation, or -1 with a message. */
static int shape_of(br_executor *ex, const br_invocation *inv, batch *b, br_error *err) {
  char **o = calloc(32 + json_array_size(json_object_get(ex->opts, "args")) +
                        json_array_size(json_object_get(inv->slurm, "args")),
                    sizeof *o);
  if (!o) abort();
  size_t n = 0;
  const char *k;
  json_t *v;
  json_object_foreach(inv->slurm, k, v) {
    bool known = !strcmp(k, "partition") || !strcmp(k, "account") || !strcmp(k, "qos") ||
                 !strcmp(k, "time") || !strcmp(k, "args");
    bool ok = !strcmp(k, "args") ? json_is_array(v)
              : !strcmp(k, "time") ? (json_is_string(v) || json_is_integer(v))
                                   : json_is_string(v);
    if (!known || !ok) {
      for (size_t i = 0; i < n; i++) free(o[i]);
      free(o);
      return br_error_set(err, BR_EINVAL,
                          !known ? "node '%s': unknown slurm setting '%s' (partition, account, qos, "
                                   "time, args)"
                                 : "node '%s': slurm setting '%s' has the wrong type",
                          inv->node ? inv->node : "", k);
    }
  }
  b->cores = inv->cores > 0 ? inv->cores : 1;
  b->memory_mb = inv->memory_mb;
  b->gpus = inv->gpus;
  if (asprintf(&o[n++], "--cpus-per-task=%d", b->cores) < 0) abort();
  if (inv->memory_mb > 0 && asprintf(&o[n++], "--mem=%lldM", (long long)inv->memory_mb) < 0) abort();
  if (inv->gpus > 0 && asprintf(&o[n++], "--gres=gpu:%d", inv->gpus) < 0) abort();
  const char *p = slurm_param(inv, ex->opts, "partition");
  if (p && asprintf(&o[n++], "--partition=%s", p) < 0) abort();
  if ((p = slurm_param(inv, ex->opts, "account")) && asprintf(&o[n++], "--account=%s", p) < 0) abort();
  if ((p = slurm_param(inv, ex->opts, "qos")) && asprintf(&o[n++], "--qos=%s", p) < 0) abort();
  json_t *t = json_object_get(inv->slurm, "time");
  if (!t) t = json_object_get(ex->opts, "time");
  if (json_is_integer(t)) {
    if (asprintf(&o[n++], "--time=%lld", (long long)json_integer_value(t)) < 0) abort();
  } else if (json_is_string(t) && *json_string_value(t)) {
    if (asprintf(&o[n++], "--time=%s", json_string_value(t)) < 0) abort();
  } else if (inv->timeout > 0) { /* braid's timeout kills first; Slurm's limit is a backstop */
    if (asprintf(&o[n++], "--time=%lld", (long long)ceil((inv->timeout + 90) / 60)) < 0) abort();
  }
  for (int src = 0; src < 2; src++) {
    size_t i;
    json_array_foreach(json_object_get(src ? inv->slurm : ex->opts, "args"), i, v) {
      if (!json_is_string(v)) continue;
      o[n++] = xstrdup(json_string_value(v));
    }
  }
  /* the job name shows the node in squeue */
  char name[128];
  snprintf(name, sizeof name, "braid:%s", inv->node ? inv->node : "job");
  for (char *c = name; *c; c++)
    if (*c == ' ' || *c == '\'' || *c == '"') *c = '_';
  b->name = xstrdup(name);
  if (asprintf(&o[n++], "--job-name=%s", name) < 0) abort();
  b->opts = o;
  size_t klen = 0, kcap = 64;
  char *key = malloc(kcap);
  if (!key) abort();
  key[0] = '\0';
  for (size_t i = 0; i < n; i++) app(&key, &klen, &kcap, "%s\x1f", o[i]);
  b->key = key;
  return BR_OK;
}

static void batch_free(batch *b) {
  for (size_t i = 0; b->opts && b->opts[i]; i++) free(b->opts[i]);
  free(b->opts);
  free(b->key);
  free(b->name);
  free(b->ids);
  free(b);
}

/* The script each array element runs: picks its invocation by index and
 * runs a one-shot agent pinned to it. */
static char *script_of(br_executor *ex, batch *b) {
  size_t len = 0, cap = 4096;
  char *s = malloc(cap);
  if (!s) abort();
  s[0] = '\0';
  app(&s, &len, &cap, "#!/bin/sh\n# braid: %zu invocation(s) of node %s\nset --", b->n, b->name + 6);
  for (size_t i = 0; i < b->n; i++) app(&s, &len, &cap, " %lld", (long long)b->ids[i]);
  app(&s, &len, &cap, "\nshift \"${SLURM_ARRAY_TASK_ID:-0}\"\nBRAID_TOKEN=");
  sq(&s, &len, &cap, ex->token);
  /* the work dir goes at any end, a scancel's SIGTERM too (the shell runs
   * the trap once the agent, signalled with it, has stopped) */
  app(&s, &len, &cap,
      "\nexport BRAID_TOKEN\nw=\"${TMPDIR:-/tmp}/braid-slurm-${SLURM_JOB_ID:-$$}\"\n"
      "trap 'rm -rf \"$w\"' EXIT\ntrap 'exit 143' TERM\ntrap 'exit 130' INT\ntrap 'exit 129' HUP\n");
  sq(&s, &len, &cap, ex->braid);
  app(&s, &len, &cap, " agent --once --idle-exit %g --give-up %g --server ", ex->idle_exit,
      ex->idle_exit);
  sq(&s, &len, &cap, ex->url);
  app(&s, &len, &cap,
      " --id \"slurm-${SLURM_ARRAY_JOB_ID:-$SLURM_JOB_ID}_${SLURM_ARRAY_TASK_ID:-0}\""
      " --tag \"" TAG_PREFIX "%s-$1\" --slots 1 --cores %d --gpus %d",
      ex->run, b->cores, b->gpus);
  if (b->memory_mb > 0) app(&s, &len, &cap, " --memory %lld", (long long)b->memory_mb);
  app(&s, &len, &cap, " --work-dir \"$w\"\n");
  return s;
}

static void fail_batch(br_executor *ex, batch *b, const char *msg) {
  for (size_t i = 0; i < b->n; i++) {
    sjob *s = sjob_find(ex, b->ids[i]);
    if (!s) continue;
    s->b = NULL;
    if (s->cancel) {
      sjob_free(ex, s);
      continue;
    }
    s->ending = true;
    if (br_farm_end(ex->farm, s->id, BR_INV_SPAWN_ERROR, msg) != BR_OK) sjob_free(ex, s);
  }
  batch_free(b);
}

static bool transient(const char *err) {
  return strstr(err, "Socket timed out") || strstr(err, "Unable to contact") ||
         strstr(err, "try again") || strstr(err, "emporarily");
}

static void send_push(br_executor *ex, batch *b) {
  b->next = NULL;
  if (ex->send_tail) ex->send_tail->next = b;
  else ex->send_head = b;
  ex->send_tail = b;
}

/* With cancel_on_stop: the array of a job ("123" of "123_4") is scancelled
 * when this executor ends. */
static void keep_array(br_executor *ex, const char *jobid) {
  if (!ex->cancel_on_stop) return;
  char arr[48];
  snprintf(arr, sizeof arr, "%.*s", (int)strcspn(jobid, "_"), jobid);
  json_object_set_new(ex->arrays, arr, json_true());
}

static void sbatch_done(br_executor *ex, proc *p, int64_t status, const char *out, const char *err) {
  batch *b = p->b;
  char line[512];
  if (status != 0 || !*out) {
    first_line(*err ? err : out, line, sizeof line);
    /* slurmctld away (restarted, failing over, the network): the work
     * stays queued and goes once it is back, unless it stays away long */
    int64_t now = now_ms();
    if (transient(err) && !b->away_since_ms) b->away_since_ms = now;
    if (transient(err) && now - b->away_since_ms < AWAY_MAX_MS && !ex->stopping) {
      snprintf(b->last_err, sizeof b->last_err, "%.255s", line);
      int64_t wait = (int64_t)500 << (b->attempts < 5 ? b->attempts : 5);
      if (wait > RETRY_MAX_MS) wait = RETRY_MAX_MS;
      b->not_before_ms = now + wait;
      send_push(ex, b);
      if (!ex->sbatch_away)
        fprintf(stderr, "braid: slurm: sbatch failed (%s); trying again for up to %d minutes\n",
                line, AWAY_MAX_MS / 60000);
      ex->sbatch_away = true;
      schedule_reconcile(ex, (uint64_t)wait);
      return;
    }
    char msg[768];
    if (b->away_since_ms)
      snprintf(msg, sizeof msg, "sbatch failed for %lld s (exit %lld): %s",
               (long long)((now - b->away_since_ms) / 1000), (long long)status, line);
    else
      snprintf(msg, sizeof msg, "sbatch failed (exit %lld): %s", (long long)status, line);
    fail_batch(ex, b, msg);
    return;
  }
  if (ex->sbatch_away) fprintf(stderr, "braid: slurm: sbatch works again\n");
  ex->sbatch_away = false;
  long long jid = strtoll(out, NULL, 10);
  char arr[32];
  snprintf(arr, sizeof arr, "%lld", jid);
  keep_array(ex, arr);
  for (size_t i = 0; i < b->n; i++) {
    sjob *s = sjob_find(ex, b->ids[i]);
    if (!s) continue;
    s->b = NULL;
    snprintf(s->jobid, sizeof s->jobid, "%lld_%zu", jid, i);
    if (s->cancel || ex->stopping) /* cancelled while sbatch ran */
      json_array_append_new(ex->to_cancel, json_string(s->jobid));
    if (s->cancel) {
      s->jobid[0] = '\0';
      sjob_free(ex, s);
      continue;
    }
    s->state = SJ_SUBMITTED;
    HASH_ADD(hj, ex->by_jobid, jobid, strlen(s->jobid), s);
  }
  batch_free(b);
  kick(ex);
}

static void send_one(br_executor *ex, batch *b) {
  char arr[64], err[512], comment[64];
  snprintf(arr, sizeof arr, "--array=0-%zu", b->n - 1);
  snprintf(comment, sizeof comment, "--comment=braid:%s:%s", ex->key, ex->run);
  size_t no = 0;
  while (b->opts[no]) no++;
  char **argv = calloc(no + 8, sizeof *argv);
  if (!argv) abort();
  size_t k = 0;
  char outopt[4200];
  snprintf(outopt, sizeof outopt, "--output=%s", ex->output);
  argv[k++] = (char *)ex->sbatch;
  argv[k++] = "--parsable";
  argv[k++] = arr;
  argv[k++] = outopt;
  for (size_t i = 0; i < no; i++) argv[k++] = b->opts[i];
  argv[k++] = comment; /* last: a node's own --comment in args does not hide it */
  argv[k] = NULL;
  b->attempts++;
  for (size_t i = 0; i < b->n; i++) {
    sjob *s = sjob_find(ex, b->ids[i]);
    if (s) s->state = SJ_SUBMITTING;
  }
  char *script = script_of(ex, b);
  if (proc_run(ex, argv, script, sbatch_done, b, err, sizeof err)) fail_batch(ex, b, err);
  free(script);
  free(argv);
}

static void send_batches(br_executor *ex) {
  int64_t now = now_ms();
  batch **pp = &ex->send_head, *prev = NULL;
  while (*pp && ex->nprocs < MAX_PROCS) {
    batch *b = *pp;
    if (b->not_before_ms > now) {
      prev = b;
      pp = &b->next;
      continue;
    }
    *pp = b->next;
    if (ex->send_tail == b) ex->send_tail = prev;
    if (b->n == 0) batch_free(b);
    else send_one(ex, b);
  }
}

/* A copy of b's shape with its first k ids (which leave b). */
static batch *batch_take(batch *b, size_t k) {
  batch *c = calloc(1, sizeof *c);
  if (!c) abort();
  size_t no = 0;
  while (b->opts[no]) no++;
  c->opts = calloc(no + 1, sizeof *c->opts);
  if (!c->opts) abort();
  for (size_t i = 0; i < no; i++) c->opts[i] = xstrdup(b->opts[i]);
  c->key = xstrdup(b->key);
  c->name = xstrdup(b->name);
  c->cores = b->cores;
  c->gpus = b->gpus;
  c->memory_mb = b->memory_mb;
  c->cap = c->n = c->sealed = k;
  c->ids = malloc((k ? k : 1) * sizeof *c->ids);
  if (!c->ids) abort();
  memcpy(c->ids, b->ids, k * sizeof *c->ids);
  memmove(b->ids, b->ids + k, (b->n - k) * sizeof *b->ids);
  b->n -= k;
  b->sealed -= k;
  return c;
}

/* Committed work goes out: whole batches, or their committed part. */
static void flush_batches(br_executor *ex) {
  batch *b, *tmp;
  HASH_ITER(hh, ex->batches, b, tmp) {
    if (!b->sealed) continue;
    if (b->sealed == b->n) {
      HASH_DEL(ex->batches, b);
      send_push(ex, b);
    } else {
      batch *c = batch_take(b, b->sealed);
      for (size_t i = 0; i < c->n; i++) {
        sjob *s = sjob_find(ex, c->ids[i]);
        if (s) s->b = c;
      }
      send_push(ex, c);
    }
  }
  send_batches(ex);
}

static void on_gather(uv_timer_t *t) {
  br_executor *ex = t->data;
  if (!ex->closing) flush_batches(ex);
}

/* ---- reconciling with Slurm ---- */

static bool active_state(const char *st) {
  static const char *const act[] = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED",
                                    "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING",
                                    "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD", NULL};
  for (int i = 0; act[i]; i++)
    if (strcmp(st, act[i]) == 0) return true;
  return false;
}

/* What Slurm's final state means for braid. */
static br_inv_status explain(const sjob *s, const char *state, const char *reason, bool assigned,
                             const char *braid, const char *url, char *msg, size_t size) {
  char why[160] = "";
  if (reason && *reason && strcmp(reason, "None") != 0) snprintf(why, sizeof why, ", %s", reason);
  if (!strcmp(state, "TIMEOUT") || !strcmp(state, "DEADLINE")) {
    snprintf(msg, size, "Slurm job %s reached its time limit (%s%s)", s->jobid, state, why);
    return BR_INV_TIMEOUT;
  }
  if (!strcmp(state, "CANCELLED")) {
    snprintf(msg, size, "Slurm job %s was cancelled outside braid (%s%s)", s->jobid, state, why);
    return BR_INV_LOST;
  }
  if (!strcmp(state, "NODE_FAIL") || !strcmp(state, "BOOT_FAIL")) {
    snprintf(msg, size, "Slurm job %s: its node failed (%s%s)", s->jobid, state, why);
    return BR_INV_LOST;
  }
  if (!strcmp(state, "PREEMPTED")) {
    snprintf(msg, size, "Slurm job %s was preempted (%s%s)", s->jobid, state, why);
    return BR_INV_LOST;
  }
  if (!strcmp(state, "OUT_OF_MEMORY")) {
    snprintf(msg, size, "Slurm job %s ran out of memory (%s%s)", s->jobid, state, why);
    return BR_INV_FAILED;
  }
  if (!assigned) {
    snprintf(msg, size,
             "Slurm job %s ended (%s%s) before its agent took the work: is %s there on the node "
             "(--slurm-opt braid=PATH otherwise), and is %s reachable from it?",
             s->jobid, state, why, braid, url);
    return BR_INV_SPAWN_ERROR;
  }
  snprintf(msg, size, "Slurm job %s ended (%s%s) without reporting its result", s->jobid, state, why);
  return BR_INV_LOST;
}

/* Slurm says the job is over (state, reason). */
static void job_over(br_executor *ex, sjob *s, const char *state, const char *reason) {
  char msg[768];
  bool assigned = br_farm_assigned(ex->farm, s->id) || s->held;
  br_inv_status st = explain(s, state, reason, assigned, ex->braid, ex->url, msg, sizeof msg);
  if (s->held) {
    br_inv_result *h = s->held;
    s->held = NULL;
    bool knows = strcmp(state, "COMPLETED") && strcmp(state, "FAILED") && strcmp(state, "VANISHED");
    if (knows) { /* Slurm knows better why it ended */
      h->status = st;
      free(h->error);
      h->error = xstrdup(msg);
    }
    deliver(ex, s, h);
    result_free(h);
    return;
  }
  if (s->cancel) st = BR_INV_CANCELLED;
  int64_t now = now_ms();
  if (!s->cancel && !s->final_ms) { /* its agent may still be sending its last report */
    s->final_ms = now;
    schedule_reconcile(ex, FINAL_GRACE_MS);
    return;
  }
  if (!s->cancel && now - s->final_ms < FINAL_GRACE_MS) return;
  s->ending = true;
  if (br_farm_end(ex->farm, s->id, st, msg) != BR_OK) sjob_free(ex, s);
}

static void still_active(br_executor *ex, sjob *s) {
  if (s->held && now_ms() - s->held_ms > HOLD_MAX_MS) { /* Slurm says nothing: as the agent said */
    br_inv_result *h = s->held;
    s->held = NULL;
    json_array_append_new(ex->to_cancel, json_string(s->jobid)); /* it must not run on */
    deliver(ex, s, h);
    result_free(h);
  } else if (s->held) {
    schedule_reconcile(ex, 1000);
  }
}

static void vanished(br_executor *ex) {
  size_t i;
  json_t *v;
  json_array_foreach(ex->missing, i, v) {
    sjob *m = NULL;
    const char *id = json_string_value(v);
    HASH_FIND(hj, ex->by_jobid, id, strlen(id), m);
    if (m) job_over(ex, m, "VANISHED", "squeue no longer lists it");
  }
  json_array_clear(ex->missing);
}

/* "a,b,c" of a list of strings (malloc'd). */
static char *join_ids(const json_t *list) {
  size_t len = 0, cap = 256, i;
  char *ids = malloc(cap);
  if (!ids) abort();
  ids[0] = '\0';
  json_t *v;
  json_array_foreach(list, i, v) app(&ids, &len, &cap, "%s%s", i ? "," : "", json_string_value(v));
  return ids;
}

/* scancel [--quiet] and the job ids of ex->to_cancel (NULL-terminated; the
 * strings are borrowed from the list). */
static char **scancel_argv(br_executor *ex, bool quiet) {
  size_t n = json_array_size(ex->to_cancel), k = 0;
  char **argv = calloc(n + 3, sizeof *argv);
  if (!argv) abort();
  argv[k++] = (char *)ex->scancel;
  if (quiet) argv[k++] = "--quiet";
  for (size_t i = 0; i < n; i++)
    argv[k++] = (char *)json_string_value(json_array_get(ex->to_cancel, i));
  return argv;
}

static void sacct_done(br_executor *ex, proc *p, int64_t status, const char *out, const char *err) {
  (void)p;
  ex->reconciling = false;
  if (status != 0) {
    if (!strstr(err, "disabled")) {
      char line[512];
      first_line(err, line, sizeof line);
      fprintf(stderr, "braid: slurm: sacct failed (exit %lld): %s; not asking it again\n",
              (long long)status, line);
    }
    ex->sacct_off = true;
  } else { /* "JOB_INDEX|STATE[ by UID]" per line */
    char *copy = xstrdup(out), *save = NULL;
    for (char *l = strtok_r(copy, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
      char *bar = strchr(l, '|');
      if (!bar) continue;
      *bar = '\0';
      char *st = bar + 1, *sp = strchr(st, ' ');
      if (sp) *sp++ = '\0';
      sjob *m = NULL;
      HASH_FIND(hj, ex->by_jobid, l, strlen(l), m);
      if (!m) continue;
      for (size_t i = 0; i < json_array_size(ex->missing); i++)
        if (!strcmp(json_string_value(json_array_get(ex->missing, i)), l)) {
          json_array_remove(ex->missing, i);
          break;
        }
      if (active_state(st)) still_active(ex, m);
      else job_over(ex, m, st, sp ? sp : "");
    }
    free(copy);
  }
  vanished(ex); /* what accounting does not know either */
}

/* Pending reasons that do not pass by waiting: the job asks for more than
 * the partition allows or its nodes have, or for an account or QOS that is
 * not there. Slurm keeps such a job pending for ever. */
static bool never_starts(const char *reason) {
  static const char *const never[] = {"PartitionConfig",    "BadConstraints", "PartitionNodeLimit",
                                      "PartitionTimeLimit", "InvalidAccount", "InvalidQOS",
                                      NULL};
  for (int i = 0; reason && never[i]; i++)
    if (strcmp(reason, never[i]) == 0) return true;
  return false;
}

/* A job Slurm will never start: scancelled (at the end of the round), and
 * its invocation fails as one that cannot start (not retried: it would wait
 * the same way). */
static void never_started(br_executor *ex, sjob *s, const char *reason) {
  char msg[768];
  snprintf(msg, sizeof msg,
           "Slurm will not start job %s: it is pending for '%s' (it asks for more than the "
           "partition allows or its nodes have: cores, memory, GPUs, time; or for an account or "
           "QOS that is not there); see the node's cores, memory, gpus and \"slurm\" settings",
           s->jobid, reason);
  json_array_append_new(ex->to_cancel, json_string(s->jobid));
  s->ending = true;
  if (br_farm_end(ex->farm, s->id, BR_INV_SPAWN_ERROR, msg) != BR_OK) sjob_free(ex, s);
}

/* squeue failed (slurmctld away, most often): said once, until it works. */
static void squeue_failed(br_executor *ex, int64_t status, const char *err) {
  char line[512];
  first_line(err, line, sizeof line);
  if (!ex->squeue_away)
    fprintf(stderr, "braid: slurm: squeue failed (exit %lld): %s; trying again\n",
            (long long)status, line);
  ex->squeue_away = true;
}

static void squeue_done(br_executor *ex, proc *p, int64_t status, const char *out, const char *err) {
  (void)p;
  ex->reconciling = false;
  if (status != 0) {
    squeue_failed(ex, status, err);
    schedule_reconcile(ex, 2000);
    return;
  }
  if (ex->squeue_away) fprintf(stderr, "braid: slurm: squeue works again\n");
  ex->squeue_away = false;
  /* "JOB_INDEX|STATE|REASON" per line */
  json_t *found = json_object();
  char *copy = xstrdup(out), *save = NULL;
  for (char *l = strtok_r(copy, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
    char *b1 = strchr(l, '|'), *b2 = b1 ? strchr(b1 + 1, '|') : NULL;
    if (!b2) continue;
    *b1 = *b2 = '\0';
    json_object_set_new(found, l, json_pack("[ss]", b1 + 1, b2 + 1));
  }
  free(copy);
  json_array_clear(ex->missing);
  bool never = false;
  sjob *s, *tmp;
  HASH_ITER(hh, ex->jobs, s, tmp) {
    if (s->state != SJ_SUBMITTED) continue;
    json_t *f = json_object_get(found, s->jobid);
    if (!f) {
      json_array_append_new(ex->missing, json_string(s->jobid));
      continue;
    }
    const char *st = json_string_value(json_array_get(f, 0));
    const char *why = json_string_value(json_array_get(f, 1));
    snprintf(s->sq_state, sizeof s->sq_state, "%s", st);
    snprintf(s->sq_reason, sizeof s->sq_reason, "%s", why);
    s->sq_ms = now_ms();
    if (!strcmp(st, "PENDING") && !s->held && never_starts(why)) {
      never_started(ex, s, why);
      never = true;
    } else if (active_state(st)) {
      still_active(ex, s);
    } else {
      job_over(ex, s, st, why);
    }
  }
  json_decref(found);
  if (never) { /* now, and waited for: the run may end with this round */
    char **argv = scancel_argv(ex, false);
    if (run_wait(argv) != 0) fprintf(stderr, "braid: slurm: scancel failed\n");
    free(argv);
    json_array_clear(ex->to_cancel);
  }
  if (!json_array_size(ex->missing)) return;
  if (ex->sacct_off) return vanished(ex);
  /* gone from squeue (MinJobAge): accounting may know */
  char *ids = join_ids(ex->missing), err2[256];
  char *argv[] = {(char *)ex->sacct, "-n", "-P", "-X", "-j", ids, "-o", "JobID,State", NULL};
  ex->reconciling = true;
  if (proc_run(ex, argv, NULL, sacct_done, NULL, err2, sizeof err2)) {
    ex->reconciling = false;
    ex->sacct_off = true;
    vanished(ex);
  }
  free(ids);
}

/* One squeue call for every job braid has in Slurm. */
static void reconcile(br_executor *ex) {
  if (ex->reconciling) {
    ex->reconcile_soon = true;
    return;
  }
  ex->reconcile_soon = false;
  json_t *seen = json_object(), *arrays = json_array();
  sjob *s, *tmp;
  HASH_ITER(hh, ex->jobs, s, tmp) if (s->state == SJ_SUBMITTED) {
    char arr[48];
    snprintf(arr, sizeof arr, "%s", s->jobid);
    char *us = strchr(arr, '_');
    if (us) *us = '\0';
    if (!json_object_get(seen, arr)) {
      json_object_set_new(seen, arr, json_true());
      json_array_append_new(arrays, json_string(arr));
    }
  }
  json_decref(seen);
  if (json_array_size(arrays)) {
    char *ids = join_ids(arrays), err[256];
    char *argv[] = {(char *)ex->squeue, "-h", "-r", "-t", "all", "-j", ids, "-o", "%i|%T|%r", NULL};
    ex->reconciling = true;
    if (proc_run(ex, argv, NULL, squeue_done, NULL, err, sizeof err)) {
      ex->reconciling = false;
      fprintf(stderr, "braid: slurm: %s\n", err);
    }
    free(ids);
  }
  json_decref(arrays);
}

static void scancel_done(br_executor *ex, proc *p, int64_t status, const char *out, const char *err) {
  (void)out;
  if (status != 0 && transient(err) && !ex->stopping) { /* again once slurmctld is back */
    json_array_extend(ex->to_cancel, p->ids);
    schedule_reconcile(ex, 2000);
    return;
  }
  if (status != 0 && !strstr(err, "already completing") && !strstr(err, "Invalid job id")) {
    char line[512];
    first_line(err, line, sizeof line);
    fprintf(stderr, "braid: slurm: scancel: %s\n", line);
  }
}

/* Sends the scancels asked for, in one call. */
static void flush_cancels(br_executor *ex) {
  if (!json_array_size(ex->to_cancel)) return;
  char **argv = scancel_argv(ex, false), err[256];
  json_t *ids = json_copy(ex->to_cancel);
  if (proc_run(ex, argv, NULL, scancel_done, NULL, err, sizeof err)) {
    fprintf(stderr, "braid: slurm: %s\n", err);
    json_decref(ids);
  } else {
    ex->procs->ids = ids; /* proc_run put it first */
  }
  free(argv);
  json_array_clear(ex->to_cancel);
}

/* ---- the jobs an earlier braid left ---- */

/* Jobs an earlier braid of this state_dir sent (their comment has its key and
 * another run) that this one did not adopt: their invocations never started
 * in the store (still pending in Slurm, or their agent waiting for the work),
 * so they are submitted again, under new ids. Left alone they would take
 * their slots until idle_exit, and an old job pinned to an id used again
 * could run another invocation with the wrong resources (the run in the pin
 * tag stops that). One squeue for all, one scancel. */
static void sweep_done(br_executor *ex, proc *p, int64_t status, const char *out, const char *err) {
  (void)p;
  ex->sweeping = false;
  if (status != 0) { /* the next round tries again */
    squeue_failed(ex, status, err);
    return;
  }
  ex->swept = true;
  char mine[64];
  int ml = snprintf(mine, sizeof mine, "braid:%s:", ex->key);
  size_t n = 0;
  char *copy = xstrdup(out), *save = NULL;
  for (char *l = strtok_r(copy, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
    char *bar = strchr(l, '|'); /* "JOB_INDEX|COMMENT" */
    if (!bar) continue;
    *bar = '\0';
    const char *c = bar + 1;
    if (strncmp(c, mine, (size_t)ml) != 0 || strcmp(c + ml, ex->run) == 0) continue;
    sjob *s = NULL;
    HASH_FIND(hj, ex->by_jobid, l, strlen(l), s);
    if (s) continue; /* adopted */
    json_array_append_new(ex->to_cancel, json_string(l));
    n++;
  }
  free(copy);
  if (n)
    fprintf(stderr, "braid: slurm: cancelling %zu job(s) an earlier braid sent and no invocation "
            "holds (they are sent again)\n", n);
  flush_cancels(ex);
}

static void sweep(br_executor *ex) {
  char err[256];
  char *argv[] = {(char *)ex->squeue, "--me", "-h", "-r", "-o", "%i|%k", NULL};
  ex->sweeping = true;
  if (proc_run(ex, argv, NULL, sweep_done, NULL, err, sizeof err)) {
    ex->sweeping = false;
    fprintf(stderr, "braid: slurm: %s\n", err);
  }
}

/* At a stop that cancels: every invocation ends as cancelled. */
static void end_all(br_executor *ex) {
  sjob *s, *tmp;
  HASH_ITER(hh, ex->jobs, s, tmp) {
    if (s->state == SJ_SUBMITTING) continue; /* when sbatch answers */
    if (s->state == SJ_QUEUED && s->b) batch_drop(s->b, s->id);
    s->cancel = true;
    s->ending = true;
    if (br_farm_end(ex->farm, s->id, BR_INV_CANCELLED, "cancelled: braid stopped") != BR_OK) {
      br_inv_result r = {.invocation_id = s->id, .task_id = s->task_id, .status = BR_INV_CANCELLED,
                         .exit_code = -1, .error = "cancelled: braid stopped"};
      deliver(ex, s, &r);
    }
  }
}

static void on_soon(uv_timer_t *t) {
  br_executor *ex = t->data;
  if (ex->closing) return;
  if (ex->stopping && ex->cancel_on_stop) end_all(ex);
  if (!ex->swept && !ex->sweeping && !ex->stopping) sweep(ex);
  flush_cancels(ex);
  send_batches(ex);
  if (ex->reconcile_soon) reconcile(ex);
  if (ex->send_head) { /* a retry waits */
    int64_t wait = ex->send_head->not_before_ms - now_ms();
    uv_timer_start(&ex->soon, on_soon, wait > 0 ? (uint64_t)wait : 50, 0);
  }
}

static void kick(br_executor *ex) {
  if (!ex->closing) uv_timer_start(&ex->soon, on_soon, 0, 0);
}

static void schedule_reconcile(br_executor *ex, uint64_t ms) {
  if (ex->closing) return;
  ex->reconcile_soon = true;
  if (!uv_is_active((uv_handle_t *)&ex->soon) || uv_timer_get_due_in(&ex->soon) > ms)
    uv_timer_start(&ex->soon, on_soon, ms, 0);
}

static void on_tick(uv_timer_t *t) {
  br_executor *ex = t->data;
  if (ex->closing) return;
  ex->reconcile_soon = true;
  on_soon(&ex->soon);
}

/* ---- the agents' endpoint ---- */

static void farm_reply(void *ud, unsigned status, json_t *body) { br_http_reply_json(ud, status, body); }

static void on_async(uv_async_t *a) {
  br_executor *ex = a->data;
  pthread_mutex_lock(&ex->mu);
  hreq *h = ex->q_head;
  ex->q_head = ex->q_tail = NULL;
  pthread_mutex_unlock(&ex->mu);
  while (h) {
    hreq *next = h->next;
    if (ex->closing) br_http_reply_error(h->rq, 503, "braid is stopping");
    else if (h->kind == 0) br_farm_register(ex->farm, h->body, farm_reply, h->rq);
    else if (h->kind == 1) br_farm_poll(ex->farm, h->agent, h->body, farm_reply, h->rq);
    else br_farm_report(ex->farm, h->agent, h->body, farm_reply, h->rq);
    json_decref(h->body);
    free(h->agent);
    free(h);
    h = next;
  }
}

static void hand_over(br_executor *ex, br_http_req *rq, int kind) {
  json_t *b = br_http_req_json(rq);
  if (!json_is_object(b)) return br_http_reply_error(rq, 400, "the body must be a JSON object");
  hreq *h = calloc(1, sizeof *h);
  if (!h) return br_http_reply_error(rq, 503, "out of memory");
  h->rq = rq;
  h->kind = kind;
  h->agent = kind ? xstrdup(br_http_req_arg(rq, 0)) : NULL;
  h->body = json_incref(b);
  pthread_mutex_lock(&ex->mu);
  bool dead = ex->http_dead;
  if (!dead) {
    if (ex->q_tail) ex->q_tail->next = h;
    else ex->q_head = h;
    ex->q_tail = h;
  }
  pthread_mutex_unlock(&ex->mu);
  if (dead) {
    br_http_reply_error(rq, 503, "braid is stopping");
    json_decref(h->body);
    free(h->agent);
    free(h);
    return;
  }
  uv_async_send(&ex->async);
}

static void h_register(void *ud, br_http_req *rq) { hand_over(ud, rq, 0); }
static void h_poll(void *ud, br_http_req *rq) { hand_over(ud, rq, 1); }
static void h_report(void *ud, br_http_req *rq) { hand_over(ud, rq, 2); }
static void h_health(void *ud, br_http_req *rq) {
  (void)ud;
  br_http_reply_json(rq, 200, json_pack("{ss}", "status", "ok"));
}

static const br_http_route routes[] = {
    {"GET", "/health", BR_ROLES_ANY, h_health, 0, false},
    {"POST", "/api/v1/agents/register", BR_ROLES_AGENT, h_register, 1u << 20, false},
    {"POST", "/api/v1/agents/{}/poll", BR_ROLES_AGENT, h_poll, 1u << 20, false},
    {"POST", "/api/v1/agents/{}/report", BR_ROLES_AGENT, h_report, 32u << 20, false},
    {NULL, NULL, 0, NULL, 0, false},
};

/* ---- the ops ---- */

static void free_ex(br_executor *ex) {
  json_decref(ex->opts);
  json_decref(ex->to_cancel);
  json_decref(ex->missing);
  json_decref(ex->arrays);
  free(ex->braid);
  free(ex->url);
  free(ex->token);
  free(ex->output);
  free(ex->listen);
  free(ex->dir);
  pthread_mutex_destroy(&ex->mu);
  free(ex);
}

static void handle_closed(uv_handle_t *h) {
  br_executor *ex = h->data;
  if (--ex->closing == 1) free_ex(ex); /* closing counts from 1 + handles */
}

static int slurm_create(const br_exec_config *cfg, const br_exec_events *ev, br_executor **out,
                        br_error *err) {
  if (!cfg || !cfg->loop) return br_error_set(err, BR_EINVAL, "slurm executor: no loop");
  br_executor *ex = calloc(1, sizeof *ex);
  if (!ex) return br_error_set(err, BR_ENOMEM, "out of memory");
  ex->loop = cfg->loop;
  if (ev) ex->ev = *ev;
  ex->opts = cfg->options ? json_deep_copy(cfg->options) : json_object();
  const json_t *o = ex->opts;
  ex->to_cancel = json_array();
  ex->missing = json_array();
  ex->arrays = json_object();
  pthread_mutex_init(&ex->mu, NULL);
  ex->sbatch = opt_str(o, "sbatch", "sbatch");
  ex->squeue = opt_str(o, "squeue", "squeue");
  ex->scancel = opt_str(o, "scancel", "scancel");
  ex->sacct = opt_str(o, "sacct", "sacct");
  ex->max_array = (int)opt_num(o, "max_array", 1000);
  ex->max_jobs = (int64_t)opt_num(o, "max_jobs", 100000);
  ex->reconcile_s = opt_num(o, "reconcile", 10);
  ex->idle_exit = opt_num(o, "idle_exit", 300);
  ex->batch_wait = opt_num(o, "batch_wait", 0.5);
  json_t *cos = json_object_get(o, "cancel_on_stop");
  ex->cancel_on_stop = cos ? json_is_true(cos) : true;
  ex->output = xstrdup(opt_str(o, "output", "/dev/null"));
  ex->braid = xstrdup(opt_str(o, "braid", cfg->braid_exe && *cfg->braid_exe ? cfg->braid_exe : "braid"));
  ex->listen = xstrdup(opt_str(o, "listen", "0.0.0.0:0"));
  if (ex->max_array < 1 || ex->max_jobs < 1 || ex->reconcile_s <= 0 || ex->idle_exit <= 0) {
    free_ex(ex);
    return br_error_set(err, BR_EINVAL,
                        "slurm executor: max_array, max_jobs, reconcile and idle_exit must be positive");
  }
  /* the jobs' agents' token: kept in state_dir (beside the store) when
   * given, so that jobs still running when braid restarts can report to the
   * next braid; else private to this run */
  const char *state = opt_str(o, "state_dir", NULL);
  const char *base = cfg->runtime_dir;
  if (state) {
    ex->dir = xstrdup(state);
  } else if (base && *base) {
    if (asprintf(&ex->dir, "%s/slurm", base) < 0) abort();
  } else {
    const char *tmp = getenv("TMPDIR");
    if (asprintf(&ex->dir, "%s/braid-slurm-XXXXXX", tmp && *tmp ? tmp : "/tmp") < 0) abort();
    if (!mkdtemp(ex->dir)) {
      int rc = br_error_set(err, BR_EIO, "slurm executor: cannot make %s: %s", ex->dir, strerror(errno));
      free_ex(ex);
      return rc;
    }
    ex->own_dir = true;
  }
  char tokfile[4200], rawfile[4200];
  snprintf(tokfile, sizeof tokfile, "%s/tokens", ex->dir);
  snprintf(rawfile, sizeof rawfile, "%s/token", ex->dir);
  int rc = br__mkdirs(ex->dir, 0700) ? br_error_set(err, BR_EIO, "slurm executor: cannot make %s: %s",
                                                     ex->dir, strerror(errno))
                                     : BR_OK;
  if (!rc && state) { /* the token of the previous run, if it is still good */
    FILE *f = fopen(rawfile, "r");
    char tok[256] = "";
    if (f) {
      if (!fgets(tok, sizeof tok, f)) tok[0] = '\0';
      fclose(f);
      tok[strcspn(tok, "\n")] = '\0';
    }
    if (tok[0] && br_auth_open(tokfile, &ex->auth, err) == BR_OK) {
      if (br_auth_check(ex->auth, tok) == BR_ROLE_AGENT) ex->token = xstrdup(tok);
      else br_auth_close(ex->auth), ex->auth = NULL;
    }
  }
  if (!rc && !ex->token) {
    unlink(tokfile); /* a fresh token */
    rc = br_auth_open(tokfile, &ex->auth, err);
    if (!rc) rc = br_auth_create(ex->auth, BR_ROLE_AGENT, "slurm jobs", &ex->token, NULL, err);
    if (!rc && state) {
      int fd = open(rawfile, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
      if (fd < 0 || dprintf(fd, "%s\n", ex->token) < 0 || fsync(fd) != 0)
        rc = br_error_set(err, BR_EIO, "slurm executor: cannot write %s: %s", rawfile, strerror(errno));
      if (fd >= 0) close(fd);
    }
  }
  if (!rc) { /* the mark on this executor's jobs (see key, run) */
    unsigned char md[32], raw[4];
    unsigned int mdlen = 0;
    EVP_Digest(ex->token, strlen(ex->token), md, &mdlen, EVP_sha256(), NULL);
    if (RAND_bytes(raw, sizeof raw) != 1) abort();
    for (int i = 0; i < 6; i++) snprintf(ex->key + 2 * i, 3, "%02x", md[i]);
    for (int i = 0; i < 4; i++) snprintf(ex->run + 2 * i, 3, "%02x", raw[i]);
    ex->swept = !state; /* a private token: no earlier braid's jobs can be ours */
  }
  /* the farm the jobs' agents work for */
  json_t *fo = json_object();
  json_object_set_new(fo, "poll_wait", json_real(opt_num(o, "poll_wait", 15)));
  json_object_set_new(fo, "lost_after", json_real(opt_num(o, "lost_after", 30)));
  if (json_object_get(o, "recover")) json_object_set(fo, "recover", json_object_get(o, "recover"));
  br_exec_config fc = {.loop = cfg->loop, .options = fo, .notify = cfg->notify, .notify_ud = cfg->notify_ud,
                       .braid_exe = cfg->braid_exe, .grace = cfg->grace};
  br_exec_events fe = {.ud = ex, .on_spawn = ev_spawn, .on_progress = ev_progress, .on_start = ev_start,
                       .on_done = ev_done, .on_assign = ev_assign, .on_output = ev_output};
  if (!rc) rc = br_exec_agent.create(&fc, &fe, &ex->farm, err);
  json_decref(fo);
  if (rc) {
    if (ex->auth) br_auth_close(ex->auth);
    free_ex(ex);
    return rc;
  }
  br_http_opts ho = {.listen = ex->listen, .auth = ex->auth, .routes = routes, .ud = ex};
  rc = br_http_start(&ho, &ex->http, err);
  if (rc) {
    br_exec_agent.destroy(ex->farm);
    br_auth_close(ex->auth);
    free_ex(ex);
    return rc;
  }
  const char *url = opt_str(o, "url", NULL);
  if (url) {
    ex->url = xstrdup(url);
  } else {
    char host[256] = "localhost";
    const char *colon = strrchr(ex->listen, ':');
    size_t hl = colon ? (size_t)(colon - ex->listen) : 0;
    if (hl && hl < sizeof host && strncmp(ex->listen, "0.0.0.0", hl) && strncmp(ex->listen, "[::]", hl)) {
      memcpy(host, ex->listen, hl);
      host[hl] = '\0';
    } else {
      gethostname(host, sizeof host - 1);
    }
    if (asprintf(&ex->url, "http://%s:%d", host, br_http_port(ex->http)) < 0) abort();
  }
  uv_timer_init(ex->loop, &ex->timer);
  uv_timer_init(ex->loop, &ex->soon);
  uv_timer_init(ex->loop, &ex->gather);
  ex->gather.data = ex;
  uv_unref((uv_handle_t *)&ex->gather);
  uv_async_init(ex->loop, &ex->async, on_async);
  ex->timer.data = ex->soon.data = ex->async.data = ex;
  uint64_t every = (uint64_t)(ex->reconcile_s * 1000);
  uv_timer_start(&ex->timer, on_tick, every, every);
  uv_unref((uv_handle_t *)&ex->timer);
  uv_unref((uv_handle_t *)&ex->soon);
  uv_unref((uv_handle_t *)&ex->async);
  if (!ex->swept) kick(ex);
  *out = ex;
  return BR_OK;
}

static int slurm_submit(br_executor *ex, const br_invocation *inv, br_error *err) {
  if (ex->stopping) return br_error_set(err, BR_ESTATE, "the slurm executor is stopping");
  if (sjob_find(ex, inv->id)) return br_error_set(err, BR_ESTATE, "invocation %lld is here already", (long long)inv->id);
  batch *nb = calloc(1, sizeof *nb);
  if (!nb) abort();
  int rc = shape_of(ex, inv, nb, err);
  if (rc) {
    batch_free(nb);
    return rc;
  }
  /* pinned: only the agent of its own Slurm job takes it */
  size_t nt = 0;
  while (inv->tags && inv->tags[nt]) nt++;
  char **tags = calloc(nt + 2, sizeof *tags), pin[64];
  if (!tags) abort();
  for (size_t i = 0; i < nt; i++) tags[i] = inv->tags[i];
  snprintf(pin, sizeof pin, TAG_PREFIX "%s-%lld", ex->run, (long long)inv->id);
  tags[nt] = pin;
  br_invocation copy = *inv;
  copy.tags = tags;
  rc = br_exec_agent.submit(ex->farm, &copy, err);
  free(tags);
  if (rc) {
    batch_free(nb);
    return rc;
  }
  batch *b = NULL;
  HASH_FIND(hh, ex->batches, nb->key, strlen(nb->key), b);
  if (b) {
    batch_free(nb);
  } else {
    b = nb;
    HASH_ADD_KEYPTR(hh, ex->batches, b->key, strlen(b->key), b);
  }
  if (b->n == b->cap) {
    b->cap = b->cap ? b->cap * 2 : 16;
    b->ids = realloc(b->ids, b->cap * sizeof *b->ids);
    if (!b->ids) abort();
  }
  b->ids[b->n++] = inv->id;
  sjob *s = sjob_new(ex, inv, SJ_QUEUED);
  s->b = b;
  if ((int)b->n >= ex->max_array) { /* full: a new one fills; this one goes after the commit */
    HASH_DEL(ex->batches, b);
    char *k = b->key; /* keep the shape, under a key no later batch has */
    if (asprintf(&b->key, "%s#%lld", k, (long long)inv->id) < 0) abort();
    free(k);
    HASH_ADD_KEYPTR(hh, ex->batches, b->key, strlen(b->key), b);
  }
  return BR_OK;
}

static int slurm_cancel(br_executor *ex, int64_t id) {
  sjob *s = sjob_find(ex, id);
  if (!s) return br_exec_agent.cancel(ex->farm, id);
  if (s->cancel) return BR_OK;
  s->cancel = true;
  bool assigned = br_farm_assigned(ex->farm, id);
  br_exec_agent.cancel(ex->farm, id);
  switch (s->state) {
  case SJ_QUEUED:
    if (s->b) batch_drop(s->b, id);
    sjob_free(ex, s);
    break;
  case SJ_SUBMITTING: /* scancelled once sbatch answers */
    break;
  case SJ_SUBMITTED:
    json_array_append_new(ex->to_cancel, json_string(s->jobid));
    kick(ex);
    if (!assigned) sjob_free(ex, s); /* the farm forgot it: no result comes */
    break;
  }
  return BR_OK;
}

/* Scancels what to_cancel holds now, waiting for it (braid is stopping);
 * quiet: of jobs that may have ended already. */
static void cancel_now(br_executor *ex, bool quiet) {
  if (!json_array_size(ex->to_cancel)) return;
  char **argv = scancel_argv(ex, quiet);
  if (run_wait(argv) != 0) fprintf(stderr, "braid: slurm: scancel did not succeed for all jobs\n");
  free(argv);
  json_array_clear(ex->to_cancel);
}

static void slurm_cancel_all(br_executor *ex, bool hard) {
  ex->stopping = true;
  if (ex->cancel_on_stop) {
    /* the jobs go at once, before braid exits */
    sjob *s, *tmp;
    HASH_ITER(hh, ex->jobs, s, tmp) if (s->state == SJ_SUBMITTED)
      json_array_append_new(ex->to_cancel, json_string(s->jobid));
    cancel_now(ex, false);
    kick(ex); /* reports them cancelled (not from inside this call) */
  } else {
    /* the jobs that run go on and report to the next braid, which adopts
     * them; those whose agent took no work yet are not in the store and
     * will be sent again: they must not wait in the queue meanwhile */
    sjob *s, *tmp;
    HASH_ITER(hh, ex->jobs, s, tmp) {
      if (s->state != SJ_SUBMITTED || br_farm_assigned(ex->farm, s->id)) continue;
      json_array_append_new(ex->to_cancel, json_string(s->jobid));
      sjob_free(ex, s); /* Slurm's word on it means nothing now */
    }
    cancel_now(ex, false);
  }
  br_exec_agent.cancel_all(ex->farm, hard);
}

static int slurm_active(br_executor *ex) {
  if (ex->stopping && !ex->cancel_on_stop) return 0;
  return (int)ex->njobs;
}

static int slurm_capacity(br_executor *ex) {
  int64_t c = ex->max_jobs - ex->njobs;
  return c > 0 ? (c > 1 << 20 ? 1 << 20 : (int)c) : 0;
}

static int slurm_adopt(br_executor *ex, const br_invocation *inv, const char *worker, int64_t started_ms,
                       br_error *err) {
  int rc = br_exec_agent.adopt(ex->farm, inv, worker, started_ms, err);
  if (rc || !worker || strncmp(worker, "slurm-", 6) || sjob_find(ex, inv->id)) return rc;
  sjob *s = sjob_new(ex, inv, SJ_SUBMITTED);
  snprintf(s->jobid, sizeof s->jobid, "%s", worker + 6);
  HASH_ADD(hj, ex->by_jobid, jobid, strlen(s->jobid), s);
  keep_array(ex, s->jobid);
  schedule_reconcile(ex, 1000);
  return BR_OK;
}

static void slurm_committed(br_executor *ex) {
  br_exec_agent.committed(ex->farm);
  /* what was submitted is durable now; it goes once more of its shape had
   * a moment to join it (fewer, bigger arrays), or at once when full */
  bool some = false, full = false;
  batch *b, *tmp;
  HASH_ITER(hh, ex->batches, b, tmp) {
    b->sealed = b->n;
    some |= b->n > 0;
    full |= (int)b->n >= ex->max_array;
  }
  if (full || (some && ex->batch_wait <= 0)) flush_batches(ex);
  else if (some && !uv_is_active((uv_handle_t *)&ex->gather))
    uv_timer_start(&ex->gather, on_gather, (uint64_t)(ex->batch_wait * 1000), 0);
}

static void slurm_schedule(br_executor *ex) { br_exec_agent.schedule(ex->farm); }

static void slurm_destroy(br_executor *ex) {
  ex->closing = 1;
  pthread_mutex_lock(&ex->mu);
  ex->http_dead = true;
  hreq *h = ex->q_head;
  ex->q_head = ex->q_tail = NULL;
  pthread_mutex_unlock(&ex->mu);
  while (h) {
    hreq *next = h->next;
    br_http_reply_error(h->rq, 503, "braid is stopping");
    json_decref(h->body);
    free(h->agent);
    free(h);
    h = next;
  }
  br_exec_agent.destroy(ex->farm); /* answers the agents that wait */
  ex->farm = NULL;
  br_http_stop(ex->http);
  if (ex->cancel_on_stop) {
    /* no job outlives this braid: an agent whose result went in but whose
     * answer was cut by the stop would try for ever to report to a braid
     * that is gone, in its Slurm slot (scancel --quiet: most have ended) */
    const char *arr;
    json_t *v;
    json_object_foreach(ex->arrays, arr, v) json_array_append_new(ex->to_cancel, json_string(arr));
    cancel_now(ex, true);
  }
  br_auth_close(ex->auth);
  for (proc *p = ex->procs, *next; p; p = next) { /* they close by themselves */
    next = p->next;
    if (!p->exited) uv_process_kill(&p->h, SIGKILL);
    p->ex = NULL;
  }
  ex->procs = NULL;
  sjob *s, *tmp;
  HASH_ITER(hh, ex->jobs, s, tmp) sjob_free(ex, s);
  batch *b, *bt;
  HASH_ITER(hh, ex->batches, b, bt) {
    HASH_DEL(ex->batches, b);
    batch_free(b);
  }
  while (ex->send_head) {
    b = ex->send_head;
    ex->send_head = b->next;
    batch_free(b);
  }
  if (ex->own_dir) {
    char tokfile[4200];
    snprintf(tokfile, sizeof tokfile, "%s/tokens", ex->dir);
    unlink(tokfile);
    rmdir(ex->dir);
  }
  ex->closing = 5; /* four handles, then free_ex */
  uv_close((uv_handle_t *)&ex->gather, handle_closed);
  uv_close((uv_handle_t *)&ex->timer, handle_closed);
  uv_close((uv_handle_t *)&ex->soon, handle_closed);
  uv_close((uv_handle_t *)&ex->async, handle_closed);
}

br_executor *br_farm_of(const br_executor_ops *ops, br_executor *ex) {
  if (ops == &br_exec_agent) return ex;
  if (ops == &br_exec_slurm) return ex->farm;
  return NULL;
}

/* Why a job braid gave Slurm does not run yet: where it is on its way
 * (queued for sbatch, sbatch failing), and once in Slurm, its state and
 * pending reason as the last squeue gave them. */
static size_t slurm_why(br_executor *ex, int64_t id, char *buf, size_t size) {
  sjob *s = sjob_find(ex, id);
  if (!s || !size) return 0;
  int64_t now = now_ms();
  int n = 0;
  if (s->state == SJ_QUEUED && s->b && s->b->not_before_ms > now && s->b->last_err[0])
    n = snprintf(buf, size, "sbatch failed (%s): trying again in %.0f s", s->b->last_err,
                 (double)(s->b->not_before_ms - now) / 1000.0);
  else if (s->state == SJ_QUEUED)
    n = snprintf(buf, size, "on its way to Slurm: it goes with the next sbatch of its kind (%zu "
                 "job%s of the same sbatch options)", s->b ? s->b->n : 1,
                 s->b && s->b->n != 1 ? "s" : "");
  else if (s->state == SJ_SUBMITTING)
    n = snprintf(buf, size, "being submitted to Slurm (sbatch runs)");
  else if (!s->sq_ms)
    n = snprintf(buf, size, "Slurm job %s: squeue has not been asked about it yet", s->jobid);
  else {
    bool reason = s->sq_reason[0] && strcmp(s->sq_reason, "None") != 0;
    n = snprintf(buf, size, "Slurm job %s is %s%s%s%s (squeue %.0f s ago)%s%s", s->jobid,
                 s->sq_state, reason ? " (reason: " : "", reason ? s->sq_reason : "",
                 reason ? ")" : "", (double)(now - s->sq_ms) / 1000.0,
                 strcmp(s->sq_state, "PENDING") ? "; its braid agent has not asked for the work yet"
                                                : "",
                 ex->squeue_away ? "; squeue fails now, so this may be old" : "");
  }
  return n < 0 ? 0 : (size_t)n < size ? (size_t)n : size - 1;
}

const br_executor_ops br_exec_slurm = {
    .name = "slurm",
    .create = slurm_create,
    .submit = slurm_submit,
    .cancel = slurm_cancel,
    .cancel_all = slurm_cancel_all,
    .active = slurm_active,
    .capacity = slurm_capacity,
    .destroy = slurm_destroy,
    .schedules = true,
    .adopt = slurm_adopt,
    .committed = slurm_committed,
    .schedule = slurm_schedule,
    .why = slurm_why,
};
