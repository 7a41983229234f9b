/* The braid agent (see include/braid/agent.h).
 *
 * Three threads share one lock:
 * - the loop thread (br_agent_run) owns the local executor: it starts the
 *   work the poll thread received, and turns the executor's events (start,
 *   output, progress, spawn, done) into report events;
 * - the poll thread registers, then long-polls the server for work. It
 *   reserves the resources of the work it receives at once, so its next
 *   poll never offers them again; the loop thread frees them when a job
 *   ends;
 * - the report thread sends queued events in batches, in order, each with
 *   a sequence number, and drops them once the server acknowledges them
 *   (after they are durable there). A job is forgotten once its result is
 *   acknowledged; until then it is "held", and a new registration (after
 *   a server restart) lists it, so the server adopts it instead of running
 *   it again.
 * Output is forwarded with its byte offset (the server writes it in place,
 * so a chunk sent twice is harmless), as valid UTF-8: bytes that are not
 * become '?', one for one, so offsets stay true.
 * Nothing waits on a timer except the back-off after a failed request.
 *
 * Each agent process has an instance id (random), sent when it registers:
 * the server refuses another live process with the same agent id (see
 * src/exec/agent.c). One agent at a time has a work folder (a lock in it,
 * agent.lock, which also keeps the instance that holds it): a second agent
 * with the same id on one machine is refused at once, and a restart sends
 * the instance it follows ("previous"), so the server takes it at once
 * even when the dead one was between two polls. A refused registration or
 * token (401, 403: revoked) stops the agent with an error; asking again
 * would not help; so does, for a --once agent only, a server that has not
 * answered for give_up seconds while no job runs (see give_up_maybe). A
 * stopping agent reports its killed jobs, then leaves
 * (the server gives it nothing more and runs what it did not report
 * elsewhere at once). */
#include <braid/agent.h>
#include <braid/exec.h>
#include <braid/http.h>

#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/sysinfo.h>
#include <time.h>
#include <unistd.h>
#include <uthash.h>
#include "../fs.h"

#define BATCH_EVENTS 1000
#define BATCH_BYTES (4 << 20)  /* output per report: well under the server's 32 MiB */
#define CHUNK_BYTES (1 << 20)  /* output per event */
#define MAX_QUEUED_OUTPUT (64 << 20)
#define FINAL_FLUSH_MS 5000

typedef struct ajob {
  int64_t id, task_id;
  json_t *work;
  int cores, gpus;
  int64_t memory_mb;
  int gpu_idx[BR_AGENT_MAX_GPUS];
  int spawned;
  int64_t out_off;
  char hold[4];
  int nhold;
  bool submitted, done, cancel_asked;
  bool output_dropped; /* the server's log lacks some: keep ours */
  int64_t unsent;      /* output bytes left out since the last note of it in the log */
  /* Output past what the agent holds in memory goes later from the job's
   * log file (see forward_output): */
  int64_t raw_len;    /* bytes the job printed, all in its log file from log_base */
  int64_t spill_from; /* -1, or the next byte of them to read from the file */
  int64_t log_base;   /* where the job's output starts in its log file */
  int log_rd;         /* the log file, open for that (-1: not yet) */
  json_t *done_ev;    /* its done event, held until the output before it went */
  int64_t done_seq;
  UT_hash_handle hh;
} ajob;

typedef struct event {
  int64_t seq;
  json_t *j;
  bool in_flight;
  int64_t inv;
  bool output;
  struct event *next;
} event;

struct br_agent {
  char *id, *host, *server, *token, *ca, *work_dir, *log_dir, *run_dir, *braid_exe;
  char instance[17]; /* this process's (see the top of the file) */
  char previous[17]; /* the instance that had the work folder before, or "" */
  int lock_fd;       /* the work folder's lock, held while we run, or -1 */
  br_warn_fn *log;   /* told when the server cannot be reached, and when it can again */
  void *log_ud;
  int reach;         /* the poll thread's: 0 not tried yet, 1 reached, -1 cannot reach */
  int64_t unreached_ms;  /* the poll thread's: since when the server does not answer, or 0 */
  char unreached_why[600]; /* the poll thread's: the last failed request's outcome */
  int cores, slots, gpus;
  int64_t memory_mb;
  json_t *tags;
  double grace;
  bool once, got_work;   /* one-shot: one job, then stop */
  double idle_exit;
  double give_up;        /* once: stop when the server is away this long, idle (0: never) */
  int64_t start_ms;
  int64_t idle_ms;       /* since when no job runs here (its start, or its last job's end) */
  uv_loop_t loop;
  uv_async_t async;
  const br_executor_ops *lops;
  br_executor *lex;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  ajob *jobs;
  int used_slots, used_cores, used_gpus;
  int64_t used_memory;
  bool gpu_busy[BR_AGENT_MAX_GPUS];
  json_t *inbox_work, *inbox_cancel;
  event *ev_head, *ev_tail;
  int64_t next_seq;
  int64_t released_seq; /* the last done event whose job's resources are free again */
  size_t queued_output;
  int n_spill; /* jobs whose output is still to go from their log files */
  char session[64];
  bool need_register;
  double poll_wait;
  volatile int stop;        /* stop polling */
  volatile int report_stop; /* stop reporting (after the final flush) */
  bool stopping, finished, final;
  bool announced; /* the server knows it stops (a report said "leaving") */
  pthread_t poll_th, report_th;
  bool threads;
  char fatal[768]; /* why it stopped by itself (a refused registration or token, or a
                      --once agent gave up on its server), or "" */
  int fatal_code;
};

void br_agent_stop(br_agent *a);

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits up to ms on the condition (lock held); a stop wakes it early. */
static void nap(br_agent *a, int ms) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_sec += ms / 1000;
  ts.tv_nsec += (long)(ms % 1000) * 1000000L;
  if (ts.tv_nsec >= 1000000000L) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000L;
  }
  pthread_cond_timedwait(&a->cv, &a->mu, &ts);
}

/* ---- detection ---- */

void br_agent_detect(int *cores, int64_t *memory_mb, int *gpus) {
  if (cores) *cores = (int)uv_available_parallelism();
  if (memory_mb) {
    struct sysinfo si;
    *memory_mb = sysinfo(&si) == 0 ? (int64_t)si.totalram * si.mem_unit / (1024 * 1024) : 0;
  }
  if (gpus) {
    *gpus = 0;
    /* only when nvidia-smi is there: no error noise on machines without it */
    const char *path = getenv("PATH");
    bool found = false;
    while (path && *path && !found) {
      const char *colon = strchr(path, ':');
      size_t n = colon ? (size_t)(colon - path) : strlen(path);
      char cand[4096];
      snprintf(cand, sizeof cand, "%.*s/nvidia-smi", (int)n, path);
      found = access(cand, X_OK) == 0;
      path = colon ? colon + 1 : NULL;
    }
    if (found) {
      FILE *p = popen("nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null", "r");
      char line[256];
      while (p && fgets(line, sizeof line, p))
        if (line[0] >= '0' && line[0] <= '9') (*gpus)++;
      if (p) pclose(p);
    }
  }
}

/* ---- events ---- */

/* Queues an event (lock held); returns its sequence number. */
static int64_t push_event(br_agent *a, json_t *j, int64_t inv, bool output) {
  event *e = calloc(1, sizeof *e);
  if (!e) {
    json_decref(j);
    return 0;
  }
  e->seq = ++a->next_seq;
  json_object_set_new(j, "seq", json_integer(e->seq));
  json_object_set_new(j, "inv", json_integer(inv));
  e->j = j;
  e->inv = inv;
  e->output = output;
  if (a->ev_tail) a->ev_tail->next = e;
  else a->ev_head = e;
  a->ev_tail = e;
  pthread_cond_broadcast(&a->cv);
  return e->seq;
}

static void job_event(br_agent *a, ajob *j, json_t *ev) {
  if (!ev) return; /* out of memory */
  pthread_mutex_lock(&a->mu);
  json_object_set_new(ev, "task", json_integer(j->task_id));
  push_event(a, ev, j->id, false);
  pthread_mutex_unlock(&a->mu);
}

/* Length of the valid UTF-8 sequence at p (n bytes left): >0 valid, 0
 * incomplete at the end, -1 invalid. */
static int utf8_seq(const unsigned char *p, size_t n) {
  unsigned c = p[0];
  int len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : -1;
  if (len < 0 || (len == 2 && c < 0xC2) || (len == 4 && c > 0xF4)) return -1;
  for (int i = 1; i < len; i++) {
    if ((size_t)i >= n) return 0;
    if ((p[i] & 0xC0) != 0x80) return -1;
  }
  if (len == 3 && ((c == 0xE0 && p[1] < 0xA0) || (c == 0xED && p[1] > 0x9F))) return -1;
  if (len == 4 && ((c == 0xF0 && p[1] < 0x90) || (c == 0xF4 && p[1] > 0x8F))) return -1;
  return len;
}

/* Copies data as valid UTF-8 into out (same length): a byte that is not,
 * and a NUL (which the server's JSON refuses), becomes '?'; an incomplete
 * sequence at the end goes to hold (unless final). Returns bytes written.
 * The agent's own log of the job keeps the bytes as they came. */
static size_t sanitize(const char *data, size_t n, char *out, char *hold, int *nhold, bool final) {
  const unsigned char *p = (const unsigned char *)data;
  size_t i = 0, o = 0;
  while (i < n) {
    int len = p[i] ? utf8_seq(p + i, n - i) : -1;
    if (len > 0) {
      memcpy(out + o, p + i, (size_t)len);
      o += (size_t)len;
      i += (size_t)len;
    } else if (len == 0 && !final) {
      *nhold = (int)(n - i);
      memcpy(hold, p + i, n - i);
      return o;
    } else {
      out[o++] = '?';
      i++;
    }
  }
  *nhold = 0;
  return o;
}

static void log_path_of(const br_agent *a, const ajob *j, char *buf, size_t size) {
  snprintf(buf, size, "%s/%lld/%lld.%lld.log", a->log_dir, (long long)(j->task_id / 1000),
           (long long)j->task_id, (long long)j->id);
}

/* The line the server's log gets where output was left out, into buf: its
 * length (0 when it does not fit). Said, the count starts again. */
static size_t unsent_note(const br_agent *a, ajob *j, char *buf, size_t size) {
  char path[4096];
  log_path_of(a, j, path, sizeof path);
  int k = snprintf(buf, size,
                   "\n[braid: %lld bytes of output were left out here: they came faster than the "
                   "server took them; the whole log is on %s in %s]\n",
                   (long long)j->unsent, a->host, path);
  j->unsent = 0;
  return k > 0 && (size_t)k < size ? (size_t)k : 0;
}

/* What is still to go of a job's output from its log file is left out,
 * to be said in the server's log (lock held). */
static void leave_out_rest(ajob *j) {
  j->unsent += j->raw_len - j->spill_from + j->nhold;
  j->nhold = 0;
  j->output_dropped = true;
}

/* Queues o bytes of a job's sanitized output, at its next offset (lock
 * held): appended to its last chunk if that is not sent yet. */
static void queue_output(br_agent *a, ajob *j, const char *out, size_t o) {
  if (!o) return;
  event *t = a->ev_tail;
  json_t *d;
  if (t && t->output && t->inv == j->id && !t->in_flight &&
      json_string_length(d = json_object_get(t->j, "data")) + o <= CHUNK_BYTES &&
      json_integer_value(json_object_get(t->j, "offset")) + (int64_t)json_string_length(d) ==
          j->out_off) { /* append to the last chunk not yet sent */
    size_t old = json_string_length(d);
    char *joined = malloc(old + o);
    if (!joined) return;
    memcpy(joined, json_string_value(d), old);
    memcpy(joined + old, out, o);
    json_object_set_new(t->j, "data", json_stringn_nocheck(joined, old + o));
    free(joined);
  } else {
    json_t *ev = json_pack("{sssIsI}", "type", "output", "task", (json_int_t)j->task_id, "offset",
                           (json_int_t)j->out_off);
    json_object_set_new(ev, "data", json_stringn_nocheck(out, o));
    push_event(a, ev, j->id, true);
  }
  a->queued_output += o;
  j->out_off += (int64_t)o;
}

/* The job's output from its last n bytes on (those held back and those
 * just come) goes later, read from its log file, where the local executor
 * wrote it before telling us (lock held). False when that file cannot be
 * read (no file: the output was kept in memory). */
static bool spill_start(br_agent *a, ajob *j, size_t n) {
  if (j->log_rd < 0) {
    char path[4096];
    log_path_of(a, j, path, sizeof path);
    j->log_rd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat st;
    if (j->log_rd >= 0 && (fstat(j->log_rd, &st) != 0 || st.st_size < j->raw_len)) {
      close(j->log_rd);
      j->log_rd = -1;
    }
    if (j->log_rd < 0) return false;
    j->log_base = st.st_size - j->raw_len; /* a run before this one may have written there */
  }
  j->spill_from = j->raw_len - (int64_t)n; /* a byte of the file, not of the server's log */
  j->nhold = 0;
  a->n_spill++;
  return true;
}

static void job_done_now(br_agent *a, ajob *j, json_t *ev);

/* Output of jobs that passed MAX_QUEUED_OUTPUT, from their log files, as
 * far as there is room again (report thread, lock held); a job whose
 * output has all gone then has its done event queued. A log file that
 * turns out shorter than what was printed (a full disk) ends it: the rest
 * is said to be left out. */
static void drain_spills(br_agent *a) {
  ajob *j, *tmp;
  HASH_ITER(hh, a->jobs, j, tmp) {
    if (!a->n_spill) return;
    if (j->spill_from < 0) continue;
    bool lost = false;
    while (j->spill_from < j->raw_len) {
      size_t room = MAX_QUEUED_OUTPUT - a->queued_output;
      int64_t left = j->raw_len - j->spill_from;
      size_t n = left < CHUNK_BYTES ? (size_t)left : CHUNK_BYTES;
      if (a->queued_output >= MAX_QUEUED_OUTPUT || room < n) break; /* more room first */
      char *in = malloc((size_t)j->nhold + n), *out = malloc((size_t)j->nhold + n);
      ssize_t got = in && out ? pread(j->log_rd, in + j->nhold, n, j->log_base + j->spill_from)
                              : 0;
      if (in && out && got <= 0) lost = true;
      if (got > 0) {
        memcpy(in, j->hold, (size_t)j->nhold);
        size_t o = sanitize(in, (size_t)j->nhold + (size_t)got, out, j->hold, &j->nhold, false);
        j->spill_from += got;
        queue_output(a, j, out, o);
      }
      free(in);
      free(out);
      if (got <= 0) break;
    }
    if (lost) leave_out_rest(j); /* the file ends before it should */
    else if (j->spill_from < j->raw_len) continue; /* the rest when there is room */
    j->spill_from = -1;
    a->n_spill--;
    if (j->done_ev) { /* the end of its output, then its result */
      char out[2048 + 8];
      size_t o = j->unsent ? unsent_note(a, j, out, sizeof out - 8) : 0;
      o += sanitize(j->hold, (size_t)j->nhold, out + o, j->hold, &j->nhold, true);
      queue_output(a, j, out, o);
      json_t *ev = j->done_ev;
      j->done_ev = NULL;
      job_done_now(a, j, ev);
    }
  }
}

/* Queues a job's output for the server. Past MAX_QUEUED_OUTPUT (the
 * server away, or slower than the job), output is not held in memory: it
 * is read again from the job's log file as the server takes what went
 * before (drain_spills), and the job's result waits behind it. Where that
 * file cannot be read, output is left out instead: the server's log then
 * says so, where it happened. Offsets are those of the server's log. */
static void forward_output(br_agent *a, ajob *j, const char *data, size_t len, bool final) {
  pthread_mutex_lock(&a->mu);
  j->raw_len += (int64_t)len;
  size_t n = (size_t)j->nhold + len;
  if (j->spill_from >= 0 || (!n && !(final && j->unsent))) { /* in the file: it goes from there */
    pthread_mutex_unlock(&a->mu);
    return;
  }
  char note[2048];
  size_t nn = 0;
  bool room = a->queued_output + n <= MAX_QUEUED_OUTPUT;
  if (!room && spill_start(a, j, n)) {
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
    return;
  }
  char *in = malloc(n + 1), *out = malloc(n + sizeof note);
  if (!in || !out) {
    pthread_mutex_unlock(&a->mu);
    free(in);
    free(out);
    return;
  }
  memcpy(in, j->hold, (size_t)j->nhold);
  if (len) memcpy(in + j->nhold, data, len);
  if (j->unsent && (room || final)) { /* the note first, then what comes now */
    nn = unsent_note(a, j, note, sizeof note);
    memcpy(out, note, nn);
  }
  size_t o = room ? sanitize(in, n, out + nn, j->hold, &j->nhold, final) : 0;
  free(in);
  if (!room) {
    j->unsent += (int64_t)n; /* the bytes held back from before too */
    j->nhold = 0;
    j->output_dropped = true;
  }
  queue_output(a, j, out, o + nn);
  pthread_mutex_unlock(&a->mu);
  free(out);
}

/* ---- executor events (loop thread) ---- */

static ajob *job_of(br_agent *a, int64_t id) {
  ajob *j = NULL;
  pthread_mutex_lock(&a->mu);
  HASH_FIND(hh, a->jobs, &id, sizeof id, j);
  pthread_mutex_unlock(&a->mu);
  return j;
}

static void ev_start(void *ud, int64_t inv, int64_t task) {
  br_agent *a = ud;
  ajob *j = job_of(a, inv);
  (void)task;
  if (j) job_event(a, j, json_pack("{ss}", "type", "start"));
}

static void ev_progress(void *ud, int64_t inv, int64_t task, double v) {
  br_agent *a = ud;
  ajob *j = job_of(a, inv);
  (void)task;
  if (j) job_event(a, j, json_pack("{sssf}", "type", "progress", "value", v));
}

static void ev_spawn(void *ud, int64_t inv, int64_t task, const char *name, json_t *attrs) {
  br_agent *a = ud;
  ajob *j = job_of(a, inv);
  (void)task;
  if (!j) {
    json_decref(attrs);
    return;
  }
  /* named here, as the server's engine would: the same name when a job
   * runs again, so the server makes each child once */
  char buf[512];
  int k = j->spawned++;
  if (!name) {
    const char *tn = json_string_value(json_object_get(j->work, "task_name"));
    snprintf(buf, sizeof buf, "%s/%d", tn && *tn ? tn : "task", k);
    name = buf;
  }
  /* the event takes the attributes: one owner, freed on the report thread */
  job_event(a, j, json_pack("{ssssso}", "type", "spawn", "name", name, "attrs", attrs ? attrs : json_object()));
}

static void ev_output(void *ud, int64_t inv, int64_t task, const char *data, size_t len) {
  br_agent *a = ud;
  ajob *j = job_of(a, inv);
  (void)task;
  if (j) forward_output(a, j, data, len, false);
}

static void release(br_agent *a, ajob *j) { /* lock held */
  a->used_slots--;
  a->used_cores -= j->cores;
  a->used_memory -= j->memory_mb;
  a->used_gpus -= j->gpus;
  for (int i = 0; i < j->gpus; i++)
    if (j->gpu_idx[i] >= 0 && j->gpu_idx[i] < BR_AGENT_MAX_GPUS)
      a->gpu_busy[j->gpu_idx[i]] = false;
}

static void check_finish(br_agent *a);

static void ev_done(void *ud, const br_inv_result *r) {
  br_agent *a = ud;
  ajob *j = job_of(a, r->invocation_id);
  if (!j) return;
  forward_output(a, j, NULL, 0, true);
  br_inv_status st = r->status;
  const char *error = r->error;
  if (st == BR_INV_CANCELLED && a->stopping && !j->cancel_asked) {
    st = BR_INV_LOST; /* killed because this agent stops: run it elsewhere */
    error = "the agent stopped";
  }
  json_t *ev = json_pack("{sssssisisfsIsf}", "type", "done", "status", br_inv_status_name(st), "exit_code",
                         r->exit_code, "signal", r->term_signal, "runtime", r->runtime, "peak_rss_kb",
                         (json_int_t)r->peak_rss_kb, "queued", r->queued);
  if (r->log_tail) {
    size_t n = strlen(r->log_tail);
    char *clean = malloc(n + 1), hold[4];
    int nh = 0;
    if (clean) {
      size_t o = sanitize(r->log_tail, n, clean, hold, &nh, true);
      json_object_set_new(ev, "log_tail", json_stringn_nocheck(clean, o));
      free(clean);
    }
  }
  if (error) {
    json_t *e = json_string(error);
    if (e) json_object_set_new(ev, "error", e);
  }
  if (r->set_attrs && json_object_size(r->set_attrs)) json_object_set(ev, "set_attrs", r->set_attrs);
  json_object_set_new(ev, "task", json_integer(j->task_id));
  pthread_mutex_lock(&a->mu);
  j->done = true;
  if (j->spill_from >= 0) /* output still to go first; it holds its slot till then */
    j->done_ev = ev;
  else
    job_done_now(a, j, ev);
  pthread_mutex_unlock(&a->mu);
  check_finish(a);
}

/* Queues a job's done event and frees what it took (lock held). */
static void job_done_now(br_agent *a, ajob *j, json_t *ev) {
  j->done_seq = push_event(a, ev, j->id, false);
  release(a, j);
  a->idle_ms = now_ms();
  a->released_seq = j->done_seq; /* polls say so: their free counts it already */
}

/* ---- starting work (loop thread) ---- */

static char **strv_of(const json_t *arr, size_t extra) {
  size_t n = json_array_size(arr);
  char **v = calloc(n + extra + 1, sizeof *v);
  if (!v) return NULL;
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    const char *s = json_string_value(json_array_get(arr, i));
    if (s) v[k++] = strdup(s);
  }
  return v;
}

static void strv_free(char **v) {
  for (size_t i = 0; v && v[i]; i++) free(v[i]);
  free(v);
}

static int *ints_of(const json_t *arr, int *n) {
  *n = (int)json_array_size(arr);
  int *v = calloc((size_t)*n + 1, sizeof *v);
  for (int i = 0; v && i < *n; i++) v[i] = (int)json_integer_value(json_array_get(arr, (size_t)i));
  return v;
}

static void fail_start(br_agent *a, ajob *j, const char *msg) {
  br_inv_result r = {.invocation_id = j->id, .task_id = j->task_id, .status = BR_INV_SPAWN_ERROR,
                     .exit_code = -1, .error = (char *)msg};
  ev_done(a, &r);
}

/* Work that came as the agent stopped: never started, it runs elsewhere
 * (lost, not a failure of the job). */
static void not_started(br_agent *a, ajob *j) {
  br_inv_result r = {.invocation_id = j->id, .task_id = j->task_id, .status = BR_INV_LOST,
                     .exit_code = -1, .error = (char *)"the agent stopped"};
  ev_done(a, &r);
}

static void start_job(br_agent *a, ajob *j) {
  json_t *w = j->work;
  char **argv = strv_of(json_object_get(w, "argv"), 0);
  char **env = strv_of(json_object_get(w, "env"), 2);
  if (!argv || !env || !argv[0]) {
    strv_free(argv);
    strv_free(env);
    return fail_start(a, j, "the work item has no command");
  }
  size_t ne = 0;
  while (env[ne]) ne++;
  if (asprintf(&env[ne], "BRAID_WORKER=%s", a->id) >= 0) ne++;
  else env[ne] = NULL;
  if (j->gpus > 0) { /* which GPUs: the first free ones */
    char list[512] = "";
    size_t off = 0;
    pthread_mutex_lock(&a->mu);
    int got = 0;
    for (int g = 0; g < a->gpus && g < BR_AGENT_MAX_GPUS && got < j->gpus; g++)
      if (!a->gpu_busy[g]) {
        a->gpu_busy[g] = true;
        j->gpu_idx[got++] = g;
        off += (size_t)snprintf(list + off, sizeof list - off, "%s%d", got > 1 ? "," : "", g);
      }
    pthread_mutex_unlock(&a->mu);
    if (asprintf(&env[ne], "CUDA_VISIBLE_DEVICES=%s", list) >= 0) ne++;
    else env[ne] = NULL;
  }
  int ngood, nretry;
  int *good = ints_of(json_object_get(w, "good_codes"), &ngood);
  int *retry = ints_of(json_object_get(w, "retry_codes"), &nretry);
  char log_path[4096];
  snprintf(log_path, sizeof log_path, "%s/%lld/%lld.%lld.log", a->log_dir,
           (long long)(j->task_id / 1000), (long long)j->task_id, (long long)j->id);
  json_t *progress = json_object_get(w, "progress");
  json_t *cwd = json_object_get(w, "cwd");
  br_invocation inv = {
      .id = j->id,
      .task_id = j->task_id,
      .node = json_string_value(json_object_get(w, "node")),
      .argv = argv,
      .env = env,
      .cwd = json_string_value(cwd),
      .attrs = json_object_get(w, "attrs"),
      .timeout = json_number_value(json_object_get(w, "timeout")),
      .good_codes = good,
      .n_good = ngood,
      .retry_codes = retry,
      .n_retry = nretry,
      .progress_regex = json_string_value(progress),
      .cores = j->cores,
      .memory_mb = j->memory_mb,
      .log_path = log_path,
  };
  br_error err;
  br_error_clear(&err);
  int rc = a->lops->submit(a->lex, &inv, &err);
  strv_free(argv);
  strv_free(env);
  free(good);
  free(retry);
  if (rc) return fail_start(a, j, err.msg[0] ? err.msg : "could not start");
  j->submitted = true;
}

static void check_finish(br_agent *a) {
  if (!a->stopping || a->finished || a->lops->active(a->lex) > 0) return;
  a->finished = true;
  uv_close((uv_handle_t *)&a->async, NULL);
  a->lops->destroy(a->lex);
  a->lex = NULL;
}

static void on_async(uv_async_t *h) {
  br_agent *a = h->data;
  if (a->finished) return;
  pthread_mutex_lock(&a->mu);
  json_t *work = a->inbox_work, *cancel = a->inbox_cancel;
  a->inbox_work = json_array();
  a->inbox_cancel = json_array();
  bool stop = a->stop;
  pthread_mutex_unlock(&a->mu);
  size_t i;
  json_t *x;
  json_array_foreach(work, i, x) {
    ajob *j = job_of(a, json_integer_value(x));
    if (j && !j->submitted && !j->done) {
      if (a->stopping) not_started(a, j);
      else start_job(a, j);
    }
  }
  json_array_foreach(cancel, i, x) {
    int64_t id = json_integer_value(x);
    ajob *j = NULL;
    pthread_mutex_lock(&a->mu); /* a finished job may go away meanwhile (acknowledged) */
    HASH_FIND(hh, a->jobs, &id, sizeof id, j);
    bool kill_it = j && !j->done && j->submitted;
    if (j && !j->done) j->cancel_asked = true;
    pthread_mutex_unlock(&a->mu);
    if (kill_it) a->lops->cancel(a->lex, id);
  }
  json_decref(work);
  json_decref(cancel);
  if (stop && !a->stopping) {
    a->stopping = true;
    a->lops->cancel_all(a->lex, false);
    check_finish(a);
  }
}

/* ---- the poll thread ---- */

static json_t *held_list(br_agent *a) { /* lock held */
  json_t *held = json_array();
  ajob *j, *tmp;
  HASH_ITER(hh, a->jobs, j, tmp) {
    json_t *w = j->work;
    json_array_append_new(held, json_pack("{sIsIsOsOsisO}", "id", (json_int_t)j->id, "task",
                                          (json_int_t)j->task_id, "group",
                                          json_object_get(w, "group") ? json_object_get(w, "group") : json_null(),
                                          "limits", json_object_get(w, "limits") ? json_object_get(w, "limits") : json_null(),
                                          "node_limit", (int)json_integer_value(json_object_get(w, "node_limit")),
                                          "node_key", json_object_get(w, "node_key") ? json_object_get(w, "node_key") : json_null()));
  }
  return held;
}

/* Stops the agent for good: the server refused it (lock not held). */
static void refused(br_agent *a, const char *what, int st, const json_t *ans) {
  pthread_mutex_lock(&a->mu);
  if (!a->fatal[0]) {
    a->fatal_code = BR_EAUTH;
    if (st == 401) /* no such token (any longer) */
      snprintf(a->fatal, sizeof a->fatal,
               "the server refused the agent's token (revoked?): HTTP %d on %s: %s", st, what,
               br_http_error_message(ans, st));
    else if (st == 403) /* a token, but not one an agent may use */
      snprintf(a->fatal, sizeof a->fatal,
               "the server refused the agent's token: HTTP 403 on %s: %s (an agent needs a "
               "token of role agent: braid token create --role agent)",
               what, br_http_error_message(ans, st));
    else
      snprintf(a->fatal, sizeof a->fatal, "the server refused the %s (HTTP %d): %s", what, st,
               br_http_error_message(ans, st));
  }
  pthread_mutex_unlock(&a->mu);
  br_agent_stop(a);
}

/* Tells whoever asked (opts.log) when the server stops answering and when
 * it answers again: one line each way, not one per try. st is a request's
 * outcome (an HTTP status, or negative when nothing came back). */
static void reached(br_agent *a, int st, const br_error *err, const json_t *ans) {
  if (st == BR_ECANCEL) return;
  bool ok = st > 0 && st < 500;
  if (ok) {
    a->unreached_ms = 0;
  } else {
    if (!a->unreached_ms) a->unreached_ms = now_ms();
    if (st < 0) snprintf(a->unreached_why, sizeof a->unreached_why, "%.500s", err->msg);
    else
      snprintf(a->unreached_why, sizeof a->unreached_why, "HTTP %d: %.500s", st,
               br_http_error_message(ans, st));
  }
  if (!a->log) return;
  char msg[1200], until[96] = "";
  if (a->once && a->give_up > 0)
    snprintf(until, sizeof until, ", for %g s at most (--give-up)", a->give_up);
  if (!ok && a->reach >= 0) {
    if (st < 0)
      snprintf(msg, sizeof msg, "cannot reach the server at %s: %s; trying again every 2 s%s",
               a->server, err->msg, until);
    else
      snprintf(msg, sizeof msg, "the server at %s answers HTTP %d: %s; trying again every 2 s%s",
               a->server, st, br_http_error_message(ans, st), until);
    a->log(a->log_ud, msg);
  } else if (ok && a->reach < 0) {
    snprintf(msg, sizeof msg, "reached the server at %s", a->server);
    a->log(a->log_ud, msg);
  }
  a->reach = ok ? 1 : -1;
}

/* A --once agent (a batch system's job) does not hold its slot for ever for
 * a server that is not there or went away: once the server has not answered
 * for give_up seconds while no job runs here, it stops with an error (a plain
 * agent waits: a farm machine waits for its server). A running job is let
 * end (the server may be back by then), and its result then has the whole
 * bound to be reported. Poll thread; true when it gave up. */
static bool give_up_maybe(br_agent *a) {
  if (!a->once || a->give_up <= 0 || !a->unreached_ms) return false;
  pthread_mutex_lock(&a->mu);
  bool busy = false;
  ajob *j, *tmp;
  HASH_ITER(hh, a->jobs, j, tmp) busy |= !j->done;
  int64_t since = a->unreached_ms > a->idle_ms ? a->unreached_ms : a->idle_ms;
  bool give = !busy && now_ms() - since >= (int64_t)(a->give_up * 1000);
  if (give && !a->fatal[0]) {
    a->fatal_code = BR_ENET;
    snprintf(a->fatal, sizeof a->fatal,
             "gave up: the server at %.200s could not be reached for %g s (--give-up): %.400s",
             a->server, a->give_up, a->unreached_why);
  }
  pthread_mutex_unlock(&a->mu);
  if (give) br_agent_stop(a);
  return give;
}

static bool do_register(br_agent *a, br_http_client *c) {
  pthread_mutex_lock(&a->mu);
  json_t *body = json_pack("{sssssisisIsisOssssso}", "id", a->id, "host", a->host, "cores",
                           a->cores, "slots", a->slots, "memory_mb", (json_int_t)a->memory_mb,
                           "gpus", a->gpus, "tags", a->tags, "version", "0.1.0", "instance",
                           a->instance, "held", held_list(a));
  if (body && a->previous[0]) json_object_set_new(body, "previous", json_string(a->previous));
  pthread_mutex_unlock(&a->mu);
  json_t *ans = NULL;
  br_error err;
  char path[512];
  snprintf(path, sizeof path, "/api/v1/agents/register");
  int st = br_http_client_call(c, "POST", path, body, &ans, &err);
  json_decref(body);
  reached(a, st, &err, ans);
  if (st == 401 || st == 403 || st == 409 || st == 400) { /* asking again will not help */
    refused(a, "registration", st, ans);
    json_decref(ans);
    return false;
  }
  const char *session = json_string_value(json_object_get(ans, "session"));
  bool ok = st == 200 && session;
  if (ok) {
    pthread_mutex_lock(&a->mu);
    snprintf(a->session, sizeof a->session, "%s", session);
    a->need_register = false;
    double pw = json_number_value(json_object_get(ans, "poll_wait_s"));
    if (pw > 0) a->poll_wait = pw;
    json_array_extend(a->inbox_cancel, json_object_get(ans, "cancel"));
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
    uv_async_send(&a->async);
  }
  json_decref(ans);
  return ok;
}

static void take_work(br_agent *a, json_t *ans) {
  pthread_mutex_lock(&a->mu);
  size_t i;
  json_t *w;
  json_array_foreach(json_object_get(ans, "work"), i, w) {
    int64_t id = json_integer_value(json_object_get(w, "id"));
    ajob *j = NULL;
    HASH_FIND(hh, a->jobs, &id, sizeof id, j);
    if (j || !id) continue; /* had it already */
    j = calloc(1, sizeof *j);
    if (!j) continue;
    j->id = id;
    j->task_id = json_integer_value(json_object_get(w, "task"));
    j->work = json_incref(w);
    j->cores = (int)json_integer_value(json_object_get(w, "cores"));
    if (j->cores < 1) j->cores = 1;
    j->memory_mb = json_integer_value(json_object_get(w, "memory_mb"));
    j->gpus = (int)json_integer_value(json_object_get(w, "gpus"));
    for (int g = 0; g < BR_AGENT_MAX_GPUS; g++) j->gpu_idx[g] = -1;
    j->spill_from = -1;
    j->log_rd = -1;
    HASH_ADD(hh, a->jobs, id, sizeof j->id, j);
    a->used_slots++; /* reserved now: the next poll must not offer it again */
    a->used_cores += j->cores;
    a->used_memory += j->memory_mb;
    a->used_gpus += j->gpus;
    json_array_append_new(a->inbox_work, json_integer(id));
    a->got_work = true;
  }
  json_array_extend(a->inbox_cancel, json_object_get(ans, "cancel"));
  pthread_mutex_unlock(&a->mu);
  uv_async_send(&a->async);
}

/* A client of the agent's server, with its token and CA; NULL when it
 * cannot be made. */
static br_http_client *server_client(br_agent *a) {
  br_http_client *c;
  br_error err;
  if (br_http_client_open(a->server, a->token, &c, &err)) return NULL;
  if (a->ca) br_http_client_set_ca(c, a->ca);
  return c;
}

static void *poll_main(void *ud) {
  br_agent *a = ud;
  br_error err;
  br_http_client *c = server_client(a);
  if (!c) return NULL;
  br_http_client_set_abort(c, &a->stop);
  int backoff = 100;
  char path[512];
  snprintf(path, sizeof path, "/api/v1/agents/%s/poll", a->id);
  while (!__atomic_load_n(&a->stop, __ATOMIC_ACQUIRE)) {
    pthread_mutex_lock(&a->mu);
    bool reg = a->need_register || !a->session[0];
    pthread_mutex_unlock(&a->mu);
    if (reg) {
      br_http_client_set_timeout(c, 30);
      if (do_register(a, c)) {
        backoff = 100;
      } else if (give_up_maybe(a)) {
        break;
      } else {
        pthread_mutex_lock(&a->mu);
        if (!a->stop) nap(a, backoff);
        pthread_mutex_unlock(&a->mu);
        backoff = backoff < 2000 ? backoff * 2 : 2000;
      }
      continue;
    }
    pthread_mutex_lock(&a->mu);
    int wait_ms = (int)(a->poll_wait * 1000);
    int free_slots = a->slots - a->used_slots;
    bool heartbeat = a->once && a->got_work;
    if (heartbeat) { /* its one job came: polls are only heartbeats now, and a stop must not
                        wait for a long poll to end */
      free_slots = 0;
      wait_ms = 0;
    }
    if (a->once && !a->got_work && a->idle_exit > 0 && now_ms() - a->start_ms > a->idle_exit * 1000) {
      pthread_mutex_unlock(&a->mu);
      fprintf(stderr, "braid: agent: no work came in %.0f s: stopping\n", a->idle_exit);
      br_agent_stop(a);
      break;
    }
    json_t *body = json_pack("{sss{sisisIsi}sisI}", "session", a->session, "free", "slots",
                             free_slots > 0 ? free_slots : 0, "cores", a->cores - a->used_cores,
                             "memory_mb", (json_int_t)(a->memory_mb - a->used_memory), "gpus",
                             a->gpus - a->used_gpus, "wait_ms", wait_ms, "released_seq",
                             (json_int_t)a->released_seq);
    pthread_mutex_unlock(&a->mu);
    br_http_client_set_timeout(c, wait_ms / 1000.0 + 30);
    json_t *ans = NULL;
    int st = br_http_client_call(c, "POST", path, body, &ans, &err);
    json_decref(body);
    reached(a, st, &err, ans);
    if (st == 401 || st == 403) {
      refused(a, "poll", st, ans);
    } else if (st == 200) {
      backoff = 100;
      take_work(a, ans);
      if (heartbeat) { /* the next one in a while; a stop wakes it at once */
        pthread_mutex_lock(&a->mu);
        if (!a->stop) nap(a, (int)(a->poll_wait * 500));
        pthread_mutex_unlock(&a->mu);
      }
    } else if (st == 409) {
      pthread_mutex_lock(&a->mu);
      a->need_register = true;
      pthread_mutex_unlock(&a->mu);
    } else if (give_up_maybe(a)) {
      json_decref(ans);
      break;
    } else if (!__atomic_load_n(&a->stop, __ATOMIC_ACQUIRE)) { /* the server is away: again soon */
      pthread_mutex_lock(&a->mu);
      nap(a, backoff);
      pthread_mutex_unlock(&a->mu);
      backoff = backoff < 2000 ? backoff * 2 : 2000;
    }
    json_decref(ans);
  }
  br_http_client_close(c);
  return NULL;
}

/* ---- the report thread ---- */

static void job_free(ajob *j) {
  if (j->log_rd >= 0) close(j->log_rd);
  json_decref(j->done_ev);
  json_decref(j->work);
  free(j);
}

/* The agent stops and the server did not take a job's output in time:
 * what is left goes as left out, and the job's result after it (lock
 * held). */
static void give_up_spills(br_agent *a) {
  ajob *j, *tmp;
  HASH_ITER(hh, a->jobs, j, tmp) if (j->spill_from >= 0) {
    leave_out_rest(j);
    j->spill_from = j->raw_len; /* drain_spills then queues the notes and results */
  }
  drain_spills(a);
}

static void acked(br_agent *a, int64_t upto) { /* lock held */
  while (a->ev_head && a->ev_head->seq <= upto) {
    event *e = a->ev_head;
    a->ev_head = e->next;
    if (!a->ev_head) a->ev_tail = NULL;
    if (e->output) a->queued_output -= json_string_length(json_object_get(e->j, "data"));
    json_decref(e->j);
    free(e);
  }
  ajob *j, *tmp;
  HASH_ITER(hh, a->jobs, j, tmp) if (j->done && j->done_seq && j->done_seq <= upto) {
    /* its result and log are safe on the server: forget it, and its local log */
    char log_path[4096];
    log_path_of(a, j, log_path, sizeof log_path);
    if (!j->output_dropped) unlink(log_path);
    HASH_DEL(a->jobs, j);
    job_free(j);
  }
}

/* Says (opts.log, else stderr) that the server refused a report: why, and
 * the event dropped for it (NULL: none yet, its events go one by one). */
static void refused_report(br_agent *a, const char *why, const event *dropped) {
  char msg[1000];
  if (!dropped)
    snprintf(msg, sizeof msg, "the server refused a report (HTTP 400: %.500s): sending its "
             "events one at a time", why);
  else {
    const char *type = json_string_value(json_object_get(dropped->j, "type"));
    snprintf(msg, sizeof msg, "the server refused a report event (HTTP 400: %.500s): the %s "
             "event of task %lld is dropped", why, type ? type : "?",
             (long long)json_integer_value(json_object_get(dropped->j, "task")));
  }
  if (a->log) a->log(a->log_ud, msg);
  else fprintf(stderr, "braid: agent: %s\n", msg);
}

static void *report_main(void *ud) {
  br_agent *a = ud;
  br_error err;
  br_http_client *c = server_client(a);
  if (!c) return NULL;
  br_http_client_set_abort(c, &a->report_stop);
  br_http_client_set_timeout(c, 60);
  char path[512];
  snprintf(path, sizeof path, "/api/v1/agents/%s/report", a->id);
  int backoff = 100;
  int64_t final_deadline = 0;
  int64_t single_until = 0; /* events up to this one go a report each */
  pthread_mutex_lock(&a->mu);
  for (;;) {
    if (a->final && !final_deadline) final_deadline = now_ms() + FINAL_FLUSH_MS;
    if (a->final && a->n_spill && now_ms() > final_deadline) {
      give_up_spills(a); /* their results at least, in a last report */
      final_deadline = now_ms() + FINAL_FLUSH_MS / 5;
    }
    if (a->final && ((!a->ev_head && !a->n_spill) || now_ms() > final_deadline)) break;
    drain_spills(a);
    /* stopping: say so at once, events or not (see br_farm_report) */
    bool announce = a->stop && !a->announced && !a->need_register && a->session[0];
    if (!announce && (!a->ev_head || a->need_register || !a->session[0])) {
      nap(a, a->final ? 100 : 1000);
      continue;
    }
    json_t *events = json_array();
    event *last = NULL;
    int n = 0, most = a->ev_head && a->ev_head->seq <= single_until ? 1 : BATCH_EVENTS;
    size_t bytes = 0;
    for (event *e = a->ev_head; e && n < most; e = e->next, n++) {
      if (e->output) {
        bytes += json_string_length(json_object_get(e->j, "data"));
        if (n && bytes > BATCH_BYTES) break; /* the rest in the next report */
      }
      e->in_flight = true;
      json_array_append(events, e->j);
      last = e;
    }
    json_t *body = json_pack("{ssso}", "session", a->session, "events", events);
    bool leaving = a->stop;
    if (leaving) json_object_set_new(body, "leaving", json_true());
    pthread_mutex_unlock(&a->mu);
    json_t *ans = NULL;
    int st = br_http_client_call(c, "POST", path, body, &ans, &err);
    json_decref(body);
    if (st == 401 || st == 403) refused(a, "report", st, ans); /* nothing sent will be taken */
    char why[600] = "";
    if (st == 400) snprintf(why, sizeof why, "%.500s", br_http_error_message(ans, st));
    json_decref(ans);
    pthread_mutex_lock(&a->mu);
    for (event *e = a->ev_head; e; e = e->next) {
      e->in_flight = false;
      if (e == last) break;
    }
    if (st == 200) {
      backoff = 100;
      if (leaving) a->announced = true;
      if (last) acked(a, last->seq);
      if (a->once && a->got_work && !a->jobs && !a->stop) { /* its job is reported: done */
        __atomic_store_n(&a->stop, 1, __ATOMIC_SEQ_CST);
        pthread_cond_broadcast(&a->cv);
        uv_async_send(&a->async);
      }
    } else if (st == 400 && last && n > 1) {
      /* The server cannot take something in this report: asking again
       * will not help, and waiting would hold back every later result.
       * Its events go one at a time, so only what is refused is lost. */
      single_until = last->seq;
      refused_report(a, why, NULL);
    } else if (st == 400 && last) {
      refused_report(a, why, last);
      acked(a, last->seq); /* dropped */
    } else if (st == 409) {
      a->need_register = true; /* the poll thread registers; then we go on */
      nap(a, 200);
    } else if (st == BR_ECANCEL) {
      break;
    } else if (st == 401 || st == 403) {
      break;
    } else {
      nap(a, backoff);
      backoff = backoff < 2000 ? backoff * 2 : 2000;
    }
  }
  pthread_mutex_unlock(&a->mu);
  br_http_client_close(c);
  return NULL;
}

/* ---- open / run / close ---- */

/* What the jobs of an agent that had the work folder before left in its
 * run folder (an agent killed outright leaves its jobs' attribute files):
 * their jobs are gone with it and run again elsewhere, so these are of no
 * use. Called with the folder's lock held. */
static void clear_run_dir(br_agent *a) {
  DIR *d = opendir(a->run_dir);
  if (!d) return;
  struct dirent *de;
  while ((de = readdir(d))) {
    size_t n = strlen(de->d_name);
    if (strncmp(de->d_name, "inv-", 4) == 0 && n > 9 && strcmp(de->d_name + n - 5, ".json") == 0)
      unlinkat(dirfd(d), de->d_name, 0);
  }
  closedir(d);
}

static char *dup_or(const char *s, const char *dflt) { return strdup(s && *s ? s : dflt); }

/* Takes the work folder's lock (see the top of the file) and reads the
 * instance that held it last. */
static int claim_work_dir(br_agent *a, br_error *err) {
  char path[4096];
  snprintf(path, sizeof path, "%s/agent.lock", a->work_dir);
  a->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (a->lock_fd < 0)
    return br_error_set(err, BR_EIO, "agent: cannot open %s: %s", path, strerror(errno));
  char old[64] = "";
  ssize_t n = pread(a->lock_fd, old, sizeof old - 1, 0);
  old[n > 0 ? n : 0] = 0;
  long pid = 0;
  char inst[17] = "";
  if (sscanf(old, "%ld %16[0-9a-f]", &pid, inst) < 1) pid = 0;
  if (flock(a->lock_fd, LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK)
      return br_error_set(err, BR_EIO, "agent: cannot lock %s: %s", path, strerror(errno));
    char who[48] = "";
    if (pid > 0) snprintf(who, sizeof who, " (pid %ld)", pid);
    return br_error_set(err, BR_ESTATE,
                        "agent: another agent%s has the work folder %s: one agent per id "
                        "on a machine; give this one another --id (or --work-dir)",
                        who, a->work_dir);
  }
  if (strlen(inst) == 16) snprintf(a->previous, sizeof a->previous, "%s", inst);
  char mine[64];
  int len = snprintf(mine, sizeof mine, "%ld %s\n", (long)getpid(), a->instance);
  if (ftruncate(a->lock_fd, 0) != 0 || pwrite(a->lock_fd, mine, (size_t)len, 0) != len)
    return br_error_set(err, BR_EIO, "agent: cannot write %s: %s", path, strerror(errno));
  return BR_OK;
}

int br_agent_open(const br_agent_opts *o, br_agent **out, br_error *err) {
  *out = NULL;
  if (!o->server || !*o->server) return br_error_set(err, BR_EINVAL, "agent: no server URL");
  br_agent *a = calloc(1, sizeof *a);
  if (!a) return br_error_set(err, BR_ENOMEM, "out of memory");
  char host[256] = "localhost";
  gethostname(host, sizeof host - 1);
  a->host = strdup(host);
  a->id = dup_or(o->id, host);
  a->log = o->log;
  a->log_ud = o->log_ud;
  a->lock_fd = -1;
  unsigned char rnd[8] = {0};
  if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) { /* unlikely: still unique enough */
    uint64_t x = (uint64_t)now_ms() ^ ((uint64_t)getpid() << 40);
    memcpy(rnd, &x, sizeof rnd);
  }
  for (int k = 0; k < 8; k++) snprintf(a->instance + 2 * k, 3, "%02x", rnd[k]);
  for (char *p = a->id; *p; p++)
    if (!br_agent_id_char(*p)) *p = '-';
  a->server = strdup(o->server);
  a->token = o->token ? strdup(o->token) : NULL;
  a->ca = o->ca_file ? strdup(o->ca_file) : NULL;
  a->braid_exe = o->braid_exe ? strdup(o->braid_exe) : NULL;
  int cores;
  int64_t mem;
  int gpus;
  br_agent_detect(&cores, &mem, o->gpus < 0 ? &gpus : NULL);
  a->cores = o->cores > 0 ? o->cores : cores;
  a->slots = o->slots > 0 ? o->slots : a->cores;
  a->memory_mb = o->memory_mb > 0 ? o->memory_mb : mem;
  a->gpus = o->gpus < 0 ? gpus : o->gpus;
  if (a->gpus > BR_AGENT_MAX_GPUS) a->gpus = BR_AGENT_MAX_GPUS;
  a->grace = o->grace;
  a->once = o->once;
  a->idle_exit = o->idle_exit;
  a->give_up = o->give_up;
  a->start_ms = a->idle_ms = now_ms();
  a->tags = json_array();
  for (size_t i = 0; o->tags && o->tags[i]; i++) json_array_append_new(a->tags, json_string(o->tags[i]));
  if (o->work_dir && *o->work_dir) {
    a->work_dir = strdup(o->work_dir);
  } else {
    const char *tmp = getenv("TMPDIR");
    if (asprintf(&a->work_dir, "%s/braid-agent-%s", tmp && *tmp ? tmp : "/tmp", a->id) < 0) a->work_dir = NULL;
  }
  if (!a->work_dir || asprintf(&a->log_dir, "%s/logs", a->work_dir) < 0 ||
      asprintf(&a->run_dir, "%s/run", a->work_dir) < 0 || br__mkdirs(a->log_dir, 0755) || br__mkdirs(a->run_dir, 0755)) {
    int rc = br_error_set(err, BR_EIO, "agent: cannot make its folder %s: %s",
                          a->work_dir ? a->work_dir : "", strerror(errno));
    br_agent_close(a);
    return rc;
  }
  int lrc = claim_work_dir(a, err);
  if (lrc) {
    br_agent_close(a);
    return lrc;
  }
  clear_run_dir(a);
  a->poll_wait = 15;
  a->inbox_work = json_array();
  a->inbox_cancel = json_array();
  pthread_mutex_init(&a->mu, NULL);
  pthread_cond_init(&a->cv, NULL);
  uv_loop_init(&a->loop);
  uv_async_init(&a->loop, &a->async, on_async);
  a->async.data = a;
  a->lops = &br_exec_local;
  br_exec_config cfg = {.loop = &a->loop, .slots = a->cores, .runtime_dir = a->run_dir,
                        .braid_exe = a->braid_exe, .grace = a->grace};
  br_exec_events ev = {.ud = a, .on_spawn = ev_spawn, .on_progress = ev_progress,
                       .on_start = ev_start, .on_done = ev_done, .on_output = ev_output};
  int rc = a->lops->create(&cfg, &ev, &a->lex, err);
  if (rc) {
    uv_close((uv_handle_t *)&a->async, NULL);
    uv_run(&a->loop, UV_RUN_DEFAULT);
    a->finished = true;
    br_agent_close(a);
    return rc;
  }
  *out = a;
  return BR_OK;
}

uv_loop_t *br_agent_loop(br_agent *a) { return &a->loop; }

/* Tells the server this agent goes (after its last reports): it gives it
 * nothing more, and what it did not hear about runs elsewhere at once,
 * instead of waiting lost_after for an agent that is not coming back. */
static void leave(br_agent *a) {
  if (!a->session[0] || a->need_register) return; /* not known there: nothing to say */
  br_error err;
  br_http_client *c = server_client(a);
  if (!c) return;
  br_http_client_set_timeout(c, 5);
  char path[512];
  snprintf(path, sizeof path, "/api/v1/agents/%s/leave", a->id);
  json_t *body = json_pack("{ss}", "session", a->session), *ans = NULL;
  br_http_client_call(c, "POST", path, body, &ans, &err); /* best effort: else it is lost later */
  json_decref(body);
  json_decref(ans);
  br_http_client_close(c);
}

int br_agent_run(br_agent *a, br_error *err) {
  a->threads = true;
  pthread_create(&a->poll_th, NULL, poll_main, a);
  pthread_create(&a->report_th, NULL, report_main, a);
  uv_run(&a->loop, UV_RUN_DEFAULT);
  pthread_join(a->poll_th, NULL);
  pthread_mutex_lock(&a->mu);
  a->final = true; /* send what is left, for a while */
  pthread_cond_broadcast(&a->cv);
  pthread_mutex_unlock(&a->mu);
  pthread_join(a->report_th, NULL);
  a->threads = false;
  if (a->fatal[0]) return br_error_set(err, a->fatal_code, "%s", a->fatal);
  leave(a);
  return BR_OK;
}

void br_agent_stop(br_agent *a) {
  pthread_mutex_lock(&a->mu);
  __atomic_store_n(&a->stop, 1, __ATOMIC_SEQ_CST); /* read by curl callbacks without the lock */
  pthread_cond_broadcast(&a->cv);
  pthread_mutex_unlock(&a->mu);
  uv_async_send(&a->async);
}

void br_agent_close(br_agent *a) {
  if (!a) return;
  if (a->inbox_work) { /* opened: the loop and its handles exist */
    if (!a->finished) {
      a->finished = true;
      uv_close((uv_handle_t *)&a->async, NULL);
      if (a->lex) a->lops->destroy(a->lex);
    }
    uv_run(&a->loop, UV_RUN_DEFAULT);
    uv_loop_close(&a->loop);
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->cv);
  }
  while (a->ev_head) {
    event *e = a->ev_head;
    a->ev_head = e->next;
    json_decref(e->j);
    free(e);
  }
  ajob *j, *tmp;
  HASH_ITER(hh, a->jobs, j, tmp) {
    HASH_DEL(a->jobs, j);
    job_free(j);
  }
  json_decref(a->inbox_work);
  json_decref(a->inbox_cancel);
  json_decref(a->tags);
  if (a->lock_fd >= 0) close(a->lock_fd);
  free(a->id);
  free(a->host);
  free(a->server);
  free(a->token);
  free(a->ca);
  free(a->braid_exe);
  free(a->work_dir);
  free(a->log_dir);
  free(a->run_dir);
  free(a);
}
