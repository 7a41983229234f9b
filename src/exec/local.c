/* The local executor: runs invocations as child processes of this braid in
 * N slots, on the engine's libuv loop.
 *
 * Design notes:
 * - Processes are started with posix_spawn (glibc: clone(CLONE_VFORK), cheaper
 *   than fork) in a new session (POSIX_SPAWN_SETSID), so each job is its own
 *   process group and cancel/timeout signal the whole group: kill(-pgid).
 *   We spawn and reap ourselves rather than through uv_spawn because libuv
 *   reaps with waitpid() and drops the rusage; we want the peak memory. On
 *   SIGCHLD (a uv_signal_t on the loop) each running job is checked with
 *   waitid(WNOWAIT): while the exited leader is still a zombie its pid cannot
 *   be reused, so the group is SIGKILLed safely (a job's leftover background
 *   processes die with it), then wait4() reaps it and gives ru_maxrss: the
 *   peak RSS of the job's process and of the descendants it waited for.
 *   Only our own pids are waited for, so uv_spawn users on the loop still work.
 * - Output: stdout and stderr share one pipe (their order is kept) that braid
 *   reads on the loop: it appends to the log file, runs the progress regex,
 *   and keeps the tail in memory when there is no log. The log file is
 *   created at the first output, so a silent job costs no file (creating a
 *   file is the largest per-job cost for short jobs); its folder is checked
 *   before the start. The tail is read back from the part of the log this
 *   invocation wrote.
 * - Jobs die with braid: a reaper process, forked when the executor is made,
 *   is told each job's process group as it starts and ends (a socket), and
 *   when braid goes away however it ends (SIGKILL, a crash) the socket
 *   closes and the reaper sends those groups SIGTERM, then SIGKILL after the
 *   grace period. Its name and command line are "br-reaper", so that
 *   `pkill -9 braid` (or -f) spares it. A clean shutdown tells it to quit
 *   first. (posix_spawn has no hook
 *   for PR_SET_PDEATHSIG, which would reach only the group's leader anyway.)
 * - Slots: an invocation takes `cores` slots (at most all of them); the queue
 *   is strict FIFO.
 * - Events are never called from inside submit/cancel: on_start and on_done
 *   are queued and delivered by an idle handle on the next loop turn.
 * - The runtime channel (src/runtime.c) serves the control socket on the same
 *   loop; the attributes file is written only when the task has attributes
 *   (otherwise BRAID_ATTRS_FILE names one shared "{}" file).
 * Nothing here sleeps or polls; no thread per job. */
#include <braid/exec.h>
#include <braid/runtime.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <regex.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include "../fs.h"

extern char **environ;

#define TAIL_LINES 20
#define TAIL_BYTES 16384
#define DRAIN_MS 2000    /* after exit, wait this long for the output pipe's end */
#define DEFAULT_GRACE 10.0
#define MAX_LINE 65536   /* progress: longer lines are cut */

typedef enum { J_QUEUED, J_RUNNING, J_EXITED, J_DONE } job_state;
typedef enum { T_NONE, T_TIMEOUT, T_GRACE, T_DRAIN } timer_role;

typedef struct job {
  struct job *next, *prev; /* in the queue or the running list */
  struct job *start_next, *done_next;
  br_executor *ex;
  int64_t id, task_id;
  char *node;
  char **argv;
  char **env; /* the invocation's extra entries */
  char *cwd, *log_path;
  char *attrs_text;  /* the attributes as JSON; NULL when there are none */
  char **attr_env;   /* BRAID_ATTR_*=value, NULL-terminated */
  double timeout;
  int *good, n_good, *retry, n_retry;
  regex_t re;
  bool has_re;
  int cores;
  job_state state;
  pid_t pid;
  uint64_t submit_ns, start_ns, end_ns;
  int log_fd;       /* opened at the first output: a silent job makes no file */
  bool log_failed;
  off_t log_start;
  uv_pipe_t out;
  bool out_open; /* pipe handle initialised and not closed */
  uv_timer_t timer;
  bool timer_init;
  timer_role role;
  int handles; /* handles whose close callback is pending or not closed yet */
  bool released;
  bool registered;
  bool cancelled, timed_out, lost;
  int wstatus;
  struct rusage ru;
  char *error;
  char *attrs_path; /* our own file (removed at the end), or NULL */
  char *line;       /* progress: the current partial line */
  size_t line_len;
  char *ring;       /* no log file: the last TAIL_BYTES of output */
  size_t ring_len;
  bool ring_cut;    /* older output was dropped: the ring starts mid-line */
  double last_progress;
  br_inv_result res;
} job;

struct br_executor {
  uv_loop_t *loop;
  br_exec_events ev;
  int slots, used;
  int active; /* submitted, on_done not yet called */
  int running_count;
  int queued_cores;
  job *q_head, *q_tail;
  job *running;
  job *starts_head, *starts_tail, *dones_head, *dones_tail;
  uv_signal_t sigchld;
  uv_idle_t idle;
  bool idle_on;
  int handles;
  bool destroyed;
  br_runtime *rt;
  char *runtime_dir;
  bool own_runtime_dir;
  char *empty_attrs;  /* path of the shared "{}" file */
  char *log_dir;      /* the last log folder made */
  char *path_env;     /* "PATH=..." for jobs: ours plus braid's folder */
  char *braid_env;    /* "BRAID_EXE=..." or NULL */
  char **base_env;    /* a copy of our environment without PATH and braid's variables */
  int n_base_env;
  double grace;
  posix_spawnattr_t sattr;
  int reaper_fd;    /* our end of the reaper's socket, or -1 */
  pid_t reaper_pid;
  char readbuf[64 * 1024];
};

static void idle_cb(uv_idle_t *h);
static void maybe_complete(job *j);
static int open_log_file(const char *path);
static int open_log(job *j);

/* ---- small helpers ---- */

static char *xstrdup(const char *s) { return s ? strdup(s) : NULL; }

static void free_strv(char **v) {
  if (!v) return;
  for (char **p = v; *p; p++) free(*p);
  free(v);
}

static char **dup_strv(char *const *v) {
  size_t n = 0;
  if (!v) return NULL;
  while (v[n]) n++;
  char **out = calloc(n + 1, sizeof *out);
  if (!out) return NULL;
  for (size_t i = 0; i < n; i++)
    if (!(out[i] = strdup(v[i]))) {
      free_strv(out);
      return NULL;
    }
  return out;
}

/* Length of the name part of "NAME=value". */
static size_t env_name_len(const char *e) {
  const char *eq = strchr(e, '=');
  return eq ? (size_t)(eq - e) : strlen(e);
}

static bool env_same_name(const char *a, const char *b) {
  size_t n = env_name_len(a);
  return n == env_name_len(b) && memcmp(a, b, n) == 0;
}

static const char *env_lookup(char *const *env, const char *name) {
  size_t n = strlen(name);
  if (!env) return NULL;
  for (char *const *p = env; *p; p++)
    if (strncmp(*p, name, n) == 0 && (*p)[n] == '=') return *p + n + 1;
  return NULL;
}

static bool in_codes(const int *codes, int n, int code) {
  for (int i = 0; i < n; i++)
    if (codes[i] == code) return true;
  return false;
}

/* ---- the reaper: jobs do not outlive braid ---- */

enum { REAP_ADD = 1, REAP_DEL = 2, REAP_QUIT = 3 };

typedef struct reap_msg {
  int32_t op;
  int32_t pgid;
} reap_msg;

/* The reaper's life (a forked child: only system calls here, no malloc,
 * since another thread may have held a lock at the fork). groups has room
 * for max entries, allocated before the fork. */
static void reaper_main(int fd, pid_t *groups, int max, double grace) {
  int n = 0;
  for (;;) {
    reap_msg m;
    ssize_t got = recv(fd, &m, sizeof m, 0);
    if (got < 0 && errno == EINTR) continue;
    if (got == (ssize_t)sizeof m && m.op == REAP_QUIT) _exit(0);
    if (got == (ssize_t)sizeof m && m.op == REAP_ADD && n < max) {
      groups[n++] = m.pgid;
    } else if (got == (ssize_t)sizeof m && m.op == REAP_DEL) {
      for (int i = 0; i < n; i++)
        if (groups[i] == m.pgid) groups[i] = groups[--n];
    } else if (got <= 0) {
      break; /* braid is gone */
    }
  }
  for (int i = 0; i < n; i++) kill(-groups[i], SIGTERM);
  struct timespec tick = {0, 50 * 1000 * 1000};
  for (double waited = 0; waited < grace; waited += 0.05) {
    bool alive = false;
    for (int i = 0; i < n && !alive; i++) alive = kill(-groups[i], 0) == 0;
    if (!alive) _exit(0);
    nanosleep(&tick, NULL);
  }
  for (int i = 0; i < n; i++) kill(-groups[i], SIGKILL);
  _exit(0);
}

/* The reaper's command line becomes "br-reaper" too, for `pkill -9 -f
 * braid`: its argument strings (a copy of braid's, this child's own) are
 * overwritten where the kernel reads them, at /proc/self/stat's arg_start
 * and arg_end (fields 48 and 49). System calls only, as in reaper_main. */
static void reaper_rename_cmdline(void) {
  char st[2048];
  int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  ssize_t got = read(fd, st, sizeof st - 1);
  close(fd);
  if (got <= 0) return;
  st[got] = '\0';
  char *p = strrchr(st, ')'); /* the name before it may hold spaces */
  unsigned long long v[50] = {0};
  int field = 2; /* p is at the end of field 2 */
  while (p && *p && field < 49) {
    while (*p && *p != ' ') p++;
    while (*p == ' ') p++;
    if (!*p) break;
    field++;
    unsigned long long x = 0;
    for (; *p >= '0' && *p <= '9'; p++) x = x * 10 + (unsigned long long)(*p - '0');
    v[field] = x;
  }
  if (field < 49 || v[49] <= v[48]) return;
  char *start = (char *)(uintptr_t)v[48];
  size_t len = (size_t)(v[49] - v[48]);
  static const char name[] = "br-reaper";
  memset(start, 0, len);
  memcpy(start, name, len < sizeof name ? len - 1 : sizeof name - 1);
}

/* Forks the reaper; ex->reaper_fd stays -1 when it cannot be made (jobs
 * then only die with braid when they write: SIGPIPE). */
static void reaper_start(br_executor *ex) {
  int sv[2];
  ex->reaper_fd = -1;
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) return;
  int max = 2 * ex->slots + 16; /* running jobs take a slot each, at least */
  pid_t *groups = calloc((size_t)max, sizeof *groups);
  /* signals wait until the child has its own handlers (the defaults) */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pid_t pid = groups ? fork() : -1;
  if (pid != 0) pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (pid == 0) {
    /* its own session: a terminal's Ctrl-C or hangup is braid's to handle;
     * no descriptor of braid's (locks, the store) stays open in it */
    setsid();
    /* a name and a command line without "braid" in them: `pkill -9 braid`,
     * `pkill -9 -f braid` or `killall -9 braid` end braid and leave the
     * reaper to end its jobs */
    prctl(PR_SET_NAME, "br-reaper", 0, 0, 0);
    reaper_rename_cmdline();
    /* braid's handlers (libuv's, writing to a pipe closed below) would
     * keep SIGTERM from ending the reaper; signals are blocked till then */
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; sig++) sigaction(sig, &dfl, NULL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    int fd = sv[1]; /* > 2: 0, 1 and 2 are open */
    /* stdout and stderr too: a shell reading braid's output would wait for
     * the reaper */
    if (syscall(SYS_close_range, 0u, (unsigned)fd - 1, 0u) != 0 ||
        syscall(SYS_close_range, (unsigned)fd + 1, ~0u, 0u) != 0) {
      for (int i = 0; i < 65536; i++) /* a kernel before 5.9 */
        if (i != fd) close(i);
    }
    reaper_main(fd, groups, max, ex->grace);
  }
  free(groups);
  close(sv[1]);
  if (pid < 0) {
    close(sv[0]);
    return;
  }
  ex->reaper_fd = sv[0];
  ex->reaper_pid = pid;
}

static void reaper_tell(br_executor *ex, int op, pid_t pgid) {
  if (ex->reaper_fd < 0) return;
  reap_msg m = {.op = op, .pgid = pgid};
  while (send(ex->reaper_fd, &m, sizeof m, MSG_NOSIGNAL) < 0 && errno == EINTR) {}
}

static void reaper_stop(br_executor *ex) {
  if (ex->reaper_fd < 0) return;
  reaper_tell(ex, REAP_QUIT, 0);
  close(ex->reaper_fd);
  ex->reaper_fd = -1;
  while (waitpid(ex->reaper_pid, NULL, 0) < 0 && errno == EINTR) {}
}

/* ---- lists and event delivery ---- */

static void list_remove(job **head, job **tail, job *j) {
  if (j->prev) j->prev->next = j->next; else *head = j->next;
  if (j->next) j->next->prev = j->prev;
  else if (tail) *tail = j->prev;
  j->next = j->prev = NULL;
}

static void list_push(job **head, job *j) {
  j->prev = NULL;
  j->next = *head;
  if (*head) (*head)->prev = j;
  *head = j;
}

static void wake(br_executor *ex) {
  if (!ex->idle_on) {
    ex->idle_on = true;
    uv_idle_start(&ex->idle, idle_cb);
  }
}

static void push_start(job *j) {
  br_executor *ex = j->ex;
  j->start_next = NULL;
  if (ex->starts_tail) ex->starts_tail->start_next = j; else ex->starts_head = j;
  ex->starts_tail = j;
  wake(ex);
}

static void push_done(job *j) {
  br_executor *ex = j->ex;
  j->done_next = NULL;
  if (ex->dones_tail) ex->dones_tail->done_next = j; else ex->dones_head = j;
  ex->dones_tail = j;
  wake(ex);
}

static void job_free(job *j) {
  free(j->node);
  free_strv(j->argv);
  free_strv(j->env);
  free(j->cwd);
  free(j->log_path);
  free(j->attrs_text);
  free_strv(j->attr_env);
  free(j->good);
  free(j->retry);
  if (j->has_re) regfree(&j->re);
  free(j->error);
  free(j->attrs_path);
  free(j->line);
  free(j->ring);
  free(j->res.log_tail);
  json_decref(j->res.set_attrs);
  free(j);
}

static void job_handle_closed(uv_handle_t *h) {
  job *j = h->data;
  if (--j->handles == 0 && j->released) job_free(j);
}

/* The job is finished with: close its handles, free it once they are closed. */
static void job_release(job *j) {
  j->released = true;
  if (j->timer_init && !uv_is_closing((uv_handle_t *)&j->timer))
    uv_close((uv_handle_t *)&j->timer, job_handle_closed);
  if (j->out_open) {
    j->out_open = false;
    uv_close((uv_handle_t *)&j->out, job_handle_closed);
  }
  if (j->handles == 0) job_free(j);
}

static void dispatch(br_executor *ex);

static void idle_cb(uv_idle_t *h) {
  br_executor *ex = h->data;
  while (ex->starts_head || ex->dones_head) {
    if (ex->starts_head) {
      job *j = ex->starts_head;
      ex->starts_head = j->start_next;
      if (!ex->starts_head) ex->starts_tail = NULL;
      if (ex->ev.on_start) ex->ev.on_start(ex->ev.ud, j->id, j->task_id);
      if (ex->destroyed) return;
      continue;
    }
    job *j = ex->dones_head;
    ex->dones_head = j->done_next;
    if (!ex->dones_head) ex->dones_tail = NULL;
    ex->active--;
    if (ex->ev.on_done) ex->ev.on_done(ex->ev.ud, &j->res);
    job_release(j);
    if (ex->destroyed) return;
  }
  ex->idle_on = false;
  uv_idle_stop(&ex->idle);
}

/* ---- results ---- */

/* The last TAIL_LINES lines of buf (without a final newline). */
static char *tail_lines(const char *buf, size_t len, bool cut_first) {
  size_t start = 0;
  if (cut_first) { /* buf starts in the middle of a line: drop that part */
    const char *nl = memchr(buf, '\n', len);
    start = nl ? (size_t)(nl - buf) + 1 : 0;
  }
  while (len > start && (buf[len - 1] == '\n' || buf[len - 1] == '\r')) len--;
  size_t pos = len;
  int lines = 0;
  while (pos > start) {
    if (buf[pos - 1] == '\n' && ++lines == TAIL_LINES) break;
    pos--;
  }
  /* a C string: a NUL byte of the output is written \x00, or it would cut
   * the tail there */
  size_t nuls = 0;
  for (size_t i = pos; i < len; i++) nuls += buf[i] == '\0';
  char *t = malloc(len - pos + 3 * nuls + 1), *o = t;
  if (!t) return NULL;
  for (size_t i = pos; i < len; i++) {
    if (buf[i]) {
      *o++ = buf[i];
    } else {
      memcpy(o, "\\x00", 4);
      o += 4;
    }
  }
  *o = '\0';
  return t;
}

static char *read_tail(job *j) {
  if (j->log_fd >= 0) {
    struct stat st;
    if (fstat(j->log_fd, &st) != 0 || st.st_size <= j->log_start) return strdup("");
    off_t from = st.st_size - TAIL_BYTES > j->log_start ? st.st_size - TAIL_BYTES : j->log_start;
    size_t n = (size_t)(st.st_size - from);
    char *buf = malloc(n);
    if (!buf) return NULL;
    ssize_t got = pread(j->log_fd, buf, n, from);
    char *t = tail_lines(buf, got > 0 ? (size_t)got : 0, from > j->log_start);
    free(buf);
    return t;
  }
  return tail_lines(j->ring ? j->ring : "", j->ring_len, j->ring_cut);
}

static void set_error(job *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_error(job *j, const char *fmt, ...) {
  free(j->error);
  j->error = NULL;
  va_list ap;
  va_start(ap, fmt);
  if (vasprintf(&j->error, fmt, ap) < 0) j->error = NULL;
  va_end(ap);
}

/* Fills j->res and queues on_done; the process is reaped (or never ran) and
 * its output is drained. */
static void complete(job *j) {
  br_executor *ex = j->ex;
  br_inv_result *r = &j->res;
  r->invocation_id = j->id;
  r->task_id = j->task_id;
  r->exit_code = -1;
  r->term_signal = 0;
  if (j->start_ns) {
    r->runtime = (double)(j->end_ns - j->start_ns) / 1e9;
    r->queued = (double)(j->start_ns - j->submit_ns) / 1e9;
    r->peak_rss_kb = j->ru.ru_maxrss;
  }
  if (j->error && j->pid <= 0) {
    r->status = j->cancelled ? BR_INV_CANCELLED : BR_INV_SPAWN_ERROR;
  } else if (j->lost) {
    r->status = BR_INV_LOST;
  } else {
    if (WIFEXITED(j->wstatus)) {
      r->exit_code = WEXITSTATUS(j->wstatus);
    } else if (WIFSIGNALED(j->wstatus)) {
      r->term_signal = WTERMSIG(j->wstatus);
    }
    if (j->cancelled) {
      r->status = BR_INV_CANCELLED;
      set_error(j, "cancelled");
    } else if (j->timed_out) {
      r->status = BR_INV_TIMEOUT;
      set_error(j, "timed out after %g s", j->timeout);
    } else if (r->term_signal) {
      r->status = BR_INV_FAILED;
      set_error(j, "killed by signal %d (%s)", r->term_signal, strsignal(r->term_signal));
    } else if (j->n_good ? in_codes(j->good, j->n_good, r->exit_code) : r->exit_code == 0) {
      r->status = BR_INV_OK;
    } else if (in_codes(j->retry, j->n_retry, r->exit_code)) {
      r->status = BR_INV_RETRY;
    } else {
      r->status = BR_INV_FAILED;
    }
  }
  r->error = j->error;
  if (j->pid > 0) {
    r->log_tail = read_tail(j);
  } else if (r->status == BR_INV_SPAWN_ERROR && j->error) {
    /* Say in the log why nothing ran: `braid log` shows it to the user. */
    if (asprintf(&r->log_tail, "braid: %s", j->error) < 0) r->log_tail = NULL;
    int fd = j->log_fd;
    if (fd < 0 && j->log_path && (fd = open_log_file(j->log_path)) >= 0) j->log_fd = fd;
    if (fd >= 0 && r->log_tail && write(fd, r->log_tail, strlen(r->log_tail)) >= 0 &&
        write(fd, "\n", 1) < 0) {
      /* best effort */
    }
  }
  if (!r->log_tail) r->log_tail = strdup("");
  if (j->registered) {
    r->set_attrs = br_runtime_unregister(ex->rt, j->id);
    j->registered = false;
  }
  if (!r->set_attrs) r->set_attrs = json_object();
  if (j->attrs_path) unlink(j->attrs_path);
  if (j->log_fd >= 0) close(j->log_fd);
  j->log_fd = -1;
  j->state = J_DONE;
  list_remove(&ex->running, NULL, j);
  push_done(j);
}

/* ---- progress and output ---- */

static void progress_line(job *j, const char *line, size_t len) {
  regmatch_t m[2];
  char *s = strndup(line, len);
  if (!s) return;
  if (regexec(&j->re, s, 2, m, 0) == 0 && m[1].rm_so >= 0) {
    char *end = NULL;
    double v = strtod(s + m[1].rm_so, &end);
    if (end != s + m[1].rm_so) {
      while (*end == ' ') end++;
      if (*end == '%') v /= 100.0;
      if (v < 0) v = 0;
      if (v > 1) v = 1;
      if (v != j->last_progress && j->ex->ev.on_progress) {
        j->last_progress = v;
        j->ex->ev.on_progress(j->ex->ev.ud, j->id, j->task_id, v);
      }
    }
  }
  free(s);
}

static void feed_progress(job *j, const char *p, size_t n) {
  while (n) {
    size_t k = 0;
    while (k < n && p[k] != '\n' && p[k] != '\r') k++;
    if (k < n) { /* a line ends */
      if (j->line_len) {
        size_t take = j->line_len + k > MAX_LINE ? MAX_LINE - j->line_len : k;
        memcpy(j->line + j->line_len, p, take);
        progress_line(j, j->line, j->line_len + take);
        j->line_len = 0;
      } else {
        progress_line(j, p, k < MAX_LINE ? k : MAX_LINE);
      }
      p += k + 1;
      n -= k + 1;
      continue;
    }
    if (!j->line) {
      j->line = malloc(MAX_LINE);
      if (!j->line) return;
    }
    size_t take = j->line_len + n > MAX_LINE ? MAX_LINE - j->line_len : n;
    memcpy(j->line + j->line_len, p, take);
    j->line_len += take;
    return;
  }
}

static void feed_ring(job *j, const char *p, size_t n) {
  if (!j->ring && !(j->ring = malloc(TAIL_BYTES))) return;
  if (n >= TAIL_BYTES) {
    j->ring_cut = n > TAIL_BYTES || j->ring_len > 0;
    memcpy(j->ring, p + n - TAIL_BYTES, TAIL_BYTES);
    j->ring_len = TAIL_BYTES;
    return;
  }
  if (j->ring_len + n > TAIL_BYTES) {
    j->ring_cut = true;
    size_t drop = j->ring_len + n - TAIL_BYTES;
    memmove(j->ring, j->ring + drop, j->ring_len - drop);
    j->ring_len -= drop;
  }
  memcpy(j->ring + j->ring_len, p, n);
  j->ring_len += n;
}

static void out_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  job *j = h->data;
  buf->base = j->ex->readbuf;
  buf->len = sizeof j->ex->readbuf;
}

static void out_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  job *j = s->data;
  if (nread > 0) {
    size_t n = (size_t)nread;
    if (j->log_fd < 0 && j->log_path && !j->log_failed && open_log(j) != 0)
      j->log_failed = true; /* the job goes on; its output is kept in memory */
    if (j->log_fd >= 0) {
      size_t off = 0;
      while (off < n) {
        ssize_t w = write(j->log_fd, buf->base + off, n - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break; /* a full disk loses log text, not the job */
        off += (size_t)w;
      }
    } else {
      feed_ring(j, buf->base, n);
    }
    if (j->has_re) feed_progress(j, buf->base, n);
    if (j->ex->ev.on_output) j->ex->ev.on_output(j->ex->ev.ud, j->id, j->task_id, buf->base, n);
    return;
  }
  if (nread == 0) return;
  /* end of output (or a read error): the pipe is done */
  if (j->has_re && j->line_len) {
    progress_line(j, j->line, j->line_len);
    j->line_len = 0;
  }
  j->out_open = false;
  uv_close((uv_handle_t *)&j->out, job_handle_closed);
  maybe_complete(j);
}

/* ---- signals and timers ---- */

static void signal_group(job *j, int sig) {
  if (j->pid > 0 && j->state == J_RUNNING) kill(-j->pid, sig);
}

static void timer_cb(uv_timer_t *t);

static void timer_start(job *j, timer_role role, double seconds) {
  if (!j->timer_init) {
    uv_timer_init(j->ex->loop, &j->timer);
    j->timer.data = j;
    j->timer_init = true;
    j->handles++;
  }
  j->role = role;
  uv_update_time(j->ex->loop); /* the loop's clock may be stale: time from now */
  uint64_t ms = seconds <= 0 ? 0 : (uint64_t)(seconds * 1000.0 + 0.5);
  uv_timer_start(&j->timer, timer_cb, ms, 0);
}

static void terminate(job *j, bool hard) {
  if (j->state != J_RUNNING) return;
  if (hard) {
    signal_group(j, SIGKILL);
    if (j->timer_init) uv_timer_stop(&j->timer);
    return;
  }
  if (j->role == T_GRACE) return; /* SIGTERM already sent, SIGKILL is scheduled */
  signal_group(j, SIGTERM);
  timer_start(j, T_GRACE, j->ex->grace);
}

static void timer_cb(uv_timer_t *t) {
  job *j = t->data;
  switch (j->role) {
  case T_TIMEOUT:
    j->timed_out = true;
    terminate(j, false);
    break;
  case T_GRACE:
    j->role = T_NONE;
    terminate(j, true);
    break;
  case T_DRAIN: /* a process that left the group still holds the pipe: stop reading */
    j->role = T_NONE;
    if (j->out_open) {
      j->out_open = false;
      uv_close((uv_handle_t *)&j->out, job_handle_closed);
    }
    maybe_complete(j);
    break;
  case T_NONE: break;
  }
}

static void maybe_complete(job *j) {
  if (j->state != J_EXITED || j->out_open) return;
  if (j->timer_init) uv_timer_stop(&j->timer);
  complete(j);
}

static void update_ref(br_executor *ex) {
  /* SIGCHLD keeps the loop alive only while processes run. */
  if (ex->running_count > 0) uv_ref((uv_handle_t *)&ex->sigchld);
  else uv_unref((uv_handle_t *)&ex->sigchld);
}

static void on_exited(job *j) {
  br_executor *ex = j->ex;
  j->end_ns = uv_hrtime();
  j->state = J_EXITED;
  ex->used -= j->cores;
  ex->running_count--;
  if (j->timer_init) uv_timer_stop(&j->timer);
  if (j->out_open) timer_start(j, T_DRAIN, DRAIN_MS / 1000.0);
  maybe_complete(j);
}

static void sigchld_cb(uv_signal_t *h, int signum) {
  br_executor *ex = h->data;
  bool any = false;
  for (job *j = ex->running, *next; j; j = next) {
    next = j->next;
    if (j->state != J_RUNNING) continue;
    siginfo_t si;
    memset(&si, 0, sizeof si);
    if (waitid(P_PID, (id_t)j->pid, &si, WEXITED | WNOHANG | WNOWAIT) != 0) {
      if (errno != ECHILD) continue;
      /* Someone else reaped it (a waitpid(-1) elsewhere in the process). */
      j->lost = true;
      set_error(j, "the process's exit status was taken by someone else");
      on_exited(j);
      any = true;
      continue;
    }
    if (si.si_pid == 0) continue; /* still running */
    /* The leader is a zombie: its pid (the group id) cannot be reused yet. */
    kill(-j->pid, SIGKILL);
    reaper_tell(ex, REAP_DEL, j->pid);
    while (wait4(j->pid, &j->wstatus, 0, &j->ru) < 0 && errno == EINTR) {}
    on_exited(j);
    any = true;
  }
  if (any) {
    update_ref(ex);
    dispatch(ex);
  }
}

/* ---- starting a job ---- */

/* Finds the program to run; fills *out (malloc'd) or an error on j. */
static int resolve_program(job *j, const char *path, char **out) {
  const char *prog = j->argv[0];
  if (strchr(prog, '/')) {
    char *check = NULL;
    if (prog[0] != '/' && j->cwd) {
      if (asprintf(&check, "%s/%s", j->cwd, prog) < 0) return -1;
    }
    const char *c = check ? check : prog;
    struct stat st;
    int rc = 0;
    if (stat(c, &st) != 0) {
      if (prog[0] != '/' && j->cwd)
        set_error(j, "no such program '%s' (in '%s')", prog, j->cwd);
      else
        set_error(j, "no such program '%s'", prog);
      rc = -1;
    } else if (S_ISDIR(st.st_mode) || access(c, X_OK) != 0) {
      set_error(j, "program '%s' is not executable", prog);
      rc = -1;
    }
    free(check);
    if (rc == 0 && !(*out = strdup(prog))) rc = -1;
    return rc;
  }
  if (!*prog) {
    set_error(j, "empty program name");
    return -1;
  }
  const char *p = path ? path : "";
  bool seen_noexec = false;
  while (1) {
    const char *colon = strchr(p, ':');
    size_t dl = colon ? (size_t)(colon - p) : strlen(p);
    char *cand = NULL, *check = NULL;
    int n = dl ? asprintf(&cand, "%.*s/%s", (int)dl, p, prog) : asprintf(&cand, "%s", prog);
    if (n < 0) return -1;
    if (cand[0] != '/' && j->cwd && asprintf(&check, "%s/%s", j->cwd, cand) < 0) check = NULL;
    const char *c = check ? check : cand;
    struct stat st;
    if (stat(c, &st) == 0 && S_ISREG(st.st_mode)) {
      if (access(c, X_OK) == 0) {
        free(check);
        *out = cand;
        return 0;
      }
      seen_noexec = true;
    }
    free(check);
    free(cand);
    if (!colon) break;
    p = colon + 1;
  }
  if (seen_noexec)
    set_error(j, "program '%s' is not executable (PATH=%s)", prog, path ? path : "");
  else
    set_error(j, "no such program '%s' (PATH=%s)", prog, path ? path : "");
  return -1;
}

/* Opens (appending) a log file, creating its folders. Read-write: braid
 * reads the tail back through the same descriptor. */
static int open_log_file(const char *path) {
  int fd = open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0 && errno == ENOENT) {
    char *dir = strdup(path);
    char *slash = dir ? strrchr(dir, '/') : NULL;
    if (slash && slash != dir) {
      *slash = 0;
      br__mkdirs(dir, 0755);
    }
    free(dir);
    fd = open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  }
  return fd;
}

static int open_log(job *j) {
  j->log_fd = open_log_file(j->log_path);
  if (j->log_fd < 0) {
    set_error(j, "cannot write log file '%s': %s", j->log_path, strerror(errno));
    return -1;
  }
  j->log_start = lseek(j->log_fd, 0, SEEK_END);
  if (j->log_start < 0) j->log_start = 0;
  return 0;
}

/* Makes sure the log file's folder exists before the job starts, so a bad
 * log path is a clear spawn error; the file itself is created at the first
 * output. The last folder made is remembered (jobs share a few folders). */
static int log_folder(job *j) {
  br_executor *ex = j->ex;
  const char *slash = strrchr(j->log_path, '/');
  if (!slash || slash == j->log_path) return 0;
  size_t n = (size_t)(slash - j->log_path);
  if (ex->log_dir && strlen(ex->log_dir) == n && memcmp(ex->log_dir, j->log_path, n) == 0)
    return 0;
  char *dir = strndup(j->log_path, n);
  if (!dir) return -1;
  struct stat st;
  errno = 0;
  if (br__mkdirs(dir, 0755) != 0 || stat(dir, &st) != 0 || !S_ISDIR(st.st_mode) ||
      access(dir, W_OK) != 0) {
    set_error(j, "cannot write log file '%s': %s", j->log_path,
              errno ? strerror(errno) : "not a folder");
    free(dir);
    return -1;
  }
  free(ex->log_dir);
  ex->log_dir = dir;
  return 0;
}

/* The job's environment: braid's variables > the invocation's env > PATH >
 * the attributes > braid's own environment. The strings belong to the
 * caller, the job and the executor; only the array is new. */
static char **build_env(job *j, char *const *core, int n_core) {
  br_executor *ex = j->ex;
  size_t n_env = 0, n_attr = 0;
  if (j->env) while (j->env[n_env]) n_env++;
  if (j->attr_env) while (j->attr_env[n_attr]) n_attr++;
  size_t total = (size_t)n_core + n_env + 1 + n_attr + (size_t)ex->n_base_env + 1;
  char **envp = malloc(total * sizeof *envp);
  if (!envp) return NULL;
  size_t n = 0;
  for (int i = 0; i < n_core; i++) envp[n++] = core[i];
  size_t high = n;
  for (size_t i = 0; i < n_env; i++) {
    bool dup = false;
    for (size_t k = 0; k < n && !dup; k++) dup = env_same_name(envp[k], j->env[i]);
    if (!dup) envp[n++] = j->env[i];
  }
  if (ex->path_env && !env_lookup(j->env, "PATH")) envp[n++] = ex->path_env;
  for (size_t i = 0; i < n_attr; i++) {
    bool dup = false;
    for (size_t k = 0; k < n && !dup; k++) dup = env_same_name(envp[k], j->attr_env[i]);
    if (!dup) envp[n++] = j->attr_env[i];
  }
  high = n;
  for (int i = 0; i < ex->n_base_env; i++) {
    bool dup = false;
    for (size_t k = 0; k < high && !dup; k++) dup = env_same_name(envp[k], ex->base_env[i]);
    if (!dup) envp[n++] = ex->base_env[i];
  }
  envp[n] = NULL;
  return envp;
}

static int spawn_job(job *j) {
  br_executor *ex = j->ex;
  char *prog = NULL, *core_block[8] = {0}, **envp = NULL;
  int n_core = 0, outfd = -1, pipefd[2] = {-1, -1}, rc = -1;
  bool fa_init = false;
  posix_spawn_file_actions_t fa;

  if (j->cwd) {
    struct stat st;
    if (stat(j->cwd, &st) != 0) {
      set_error(j, "cannot change to directory '%s': %s", j->cwd, strerror(errno));
      goto out;
    }
    if (!S_ISDIR(st.st_mode)) {
      set_error(j, "cannot change to directory '%s': not a directory", j->cwd);
      goto out;
    }
  }
  const char *path = env_lookup(j->env, "PATH");
  if (!path) path = ex->path_env ? ex->path_env + 5 : getenv("PATH");
  if (resolve_program(j, path, &prog) != 0) goto out;
  if (j->log_path && log_folder(j) != 0) goto out;

  char token[BR_RUNTIME_TOKEN_LEN + 1] = "";
  br_error err = {0};
  if (br_runtime_register(ex->rt, j->id, j->task_id, token, &err) != BR_OK) {
    set_error(j, "%s", err.msg);
    goto out;
  }
  j->registered = true;
  const char *attrs_file = ex->empty_attrs;
  if (j->attrs_text) {
    if (asprintf(&j->attrs_path, "%s/inv-%lld.json", ex->runtime_dir, (long long)j->id) < 0) {
      j->attrs_path = NULL;
      goto out;
    }
    if (br_runtime_write_file(j->attrs_path, j->attrs_text, strlen(j->attrs_text), &err)) {
      set_error(j, "%s", err.msg);
      free(j->attrs_path);
      j->attrs_path = NULL;
      goto out;
    }
    attrs_file = j->attrs_path;
  }
  const char *sock = br_runtime_socket_path(ex->rt);
  if (asprintf(&core_block[n_core++], "BRAID_TASK_ID=%lld", (long long)j->task_id) < 0 ||
      asprintf(&core_block[n_core++], "BRAID_INVOCATION_ID=%lld", (long long)j->id) < 0 ||
      asprintf(&core_block[n_core++], "BRAID_NODE=%s", j->node ? j->node : "") < 0 ||
      asprintf(&core_block[n_core++], "BRAID_CTL=%s", sock ? sock : "") < 0 ||
      asprintf(&core_block[n_core++], "BRAID_CTL_TOKEN=%s", token) < 0 ||
      asprintf(&core_block[n_core++], "BRAID_ATTRS_FILE=%s", attrs_file) < 0 ||
      asprintf(&core_block[n_core++], "BRAID_CORES=%d", j->cores) < 0) {
    core_block[n_core - 1] = NULL;
    set_error(j, "out of memory");
    goto out;
  }
  char *core[10];
  int nc = 0;
  for (int i = 0; i < n_core; i++) core[nc++] = core_block[i];
  if (ex->braid_env) core[nc++] = ex->braid_env;
  envp = build_env(j, core, nc);
  if (!envp) {
    set_error(j, "out of memory");
    goto out;
  }

  /* stdout and stderr: one pipe, so their order is kept in the log. */
  if (pipe2(pipefd, O_CLOEXEC) != 0) {
    set_error(j, "cannot create a pipe: %s", strerror(errno));
    goto out;
  }
  outfd = pipefd[1];
  posix_spawn_file_actions_init(&fa);
  fa_init = true;
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, outfd, 1);
  posix_spawn_file_actions_adddup2(&fa, outfd, 2);
  if (j->cwd) posix_spawn_file_actions_addchdir_np(&fa, j->cwd);
  posix_spawn_file_actions_addclosefrom_np(&fa, 3);

  pid_t pid = 0;
  int e = posix_spawn(&pid, prog, &fa, &ex->sattr, j->argv, envp);
  if (e != 0) {
    if (e == ENOENT)
      set_error(j, "cannot run '%s': %s (a script whose interpreter is missing?)", prog,
                strerror(e));
    else
      set_error(j, "cannot run '%s': %s", prog, strerror(e));
    goto out;
  }
  j->pid = pid;
  reaper_tell(ex, REAP_ADD, pid);
  j->start_ns = uv_hrtime(); /* the process exists (it has exec'd: vfork semantics) */
  close(pipefd[1]);
  pipefd[1] = -1;
  uv_pipe_init(ex->loop, &j->out, 0);
  j->out.data = j;
  j->handles++;
  j->out_open = true;
  if (uv_pipe_open(&j->out, pipefd[0]) == 0) {
    pipefd[0] = -1;
    uv_read_start((uv_stream_t *)&j->out, out_alloc, out_read);
  } else {
    j->out_open = false;
    uv_close((uv_handle_t *)&j->out, job_handle_closed);
  }
  if (j->timeout > 0) timer_start(j, T_TIMEOUT, j->timeout);
  rc = 0;
out:
  if (fa_init) posix_spawn_file_actions_destroy(&fa);
  if (pipefd[0] >= 0) close(pipefd[0]);
  if (pipefd[1] >= 0) close(pipefd[1]);
  for (int i = 0; i < n_core; i++) free(core_block[i]);
  free(envp);
  free(prog);
  if (rc != 0 && !j->error) set_error(j, "cannot start the job");
  return rc;
}

static void start_job(job *j) {
  br_executor *ex = j->ex;
  list_push(&ex->running, j);
  j->state = J_RUNNING;
  if (spawn_job(j) != 0) {
    j->state = J_EXITED;
    complete(j);
    return;
  }
  ex->used += j->cores;
  ex->running_count++;
  update_ref(ex);
  push_start(j);
}

static void dispatch(br_executor *ex) {
  while (ex->q_head && ex->used + ex->q_head->cores <= ex->slots) {
    job *j = ex->q_head;
    list_remove(&ex->q_head, &ex->q_tail, j);
    ex->queued_cores -= j->cores;
    start_job(j);
  }
}

/* ---- the ops ---- */

static int local_create(const br_exec_config *cfg, const br_exec_events *ev, br_executor **out,
                        br_error *err) {
  if (!cfg || !cfg->loop) return br_error_set(err, BR_EINVAL, "local executor: no loop");
  br_executor *ex = calloc(1, sizeof *ex);
  if (!ex) return br_error_set(err, BR_ENOMEM, "out of memory");
  ex->loop = cfg->loop;
  if (ev) ex->ev = *ev;
  ex->slots = cfg->slots > 0 ? cfg->slots : (int)uv_available_parallelism();
  if (ex->slots < 1) ex->slots = 1;
  ex->grace = cfg->grace > 0 ? cfg->grace : DEFAULT_GRACE;
  int rc = BR_OK;

  if (cfg->runtime_dir && *cfg->runtime_dir) {
    ex->runtime_dir = strdup(cfg->runtime_dir);
  } else {
    const char *tmp = getenv("TMPDIR");
    if (!tmp || !*tmp) tmp = "/tmp";
    if (asprintf(&ex->runtime_dir, "%s/braid-run-XXXXXX", tmp) < 0) ex->runtime_dir = NULL;
    else if (!mkdtemp(ex->runtime_dir)) {
      rc = br_error_set(err, BR_EIO, "cannot create a runtime folder in '%s': %s", tmp,
                        strerror(errno));
      free(ex->runtime_dir);
      free(ex);
      return rc;
    }
    ex->own_runtime_dir = true;
  }
  if (!ex->runtime_dir) {
    free(ex);
    return br_error_set(err, BR_ENOMEM, "out of memory");
  }

  /* Our environment, once: jobs inherit it minus PATH (set below) and braid's
   * own variables (a braid job running braid must not leak its channel). */
  size_t n = 0;
  while (environ && environ[n]) n++;
  ex->base_env = calloc(n + 1, sizeof *ex->base_env);
  const char *path = getenv("PATH");
  if (!path) path = "/usr/local/bin:/usr/bin:/bin";
  if (cfg->braid_exe && *cfg->braid_exe) {
    if (asprintf(&ex->braid_env, "BRAID_EXE=%s", cfg->braid_exe) < 0) ex->braid_env = NULL;
    /* `braid ctl` must work in a job: append braid's folder to PATH when no
     * braid is found there already. */
    char *dir = strdup(cfg->braid_exe);
    char *slash = dir ? strrchr(dir, '/') : NULL;
    bool found = false;
    if (slash) {
      *slash = 0;
      const char *p = path;
      while (p && !found) {
        const char *colon = strchr(p, ':');
        size_t dl = colon ? (size_t)(colon - p) : strlen(p);
        char *cand = NULL;
        if (asprintf(&cand, "%.*s/braid", (int)dl, p) >= 0) {
          found = access(cand, X_OK) == 0;
          free(cand);
        }
        p = colon ? colon + 1 : NULL;
      }
      if (!found && asprintf(&ex->path_env, "PATH=%s:%s", path, dir) < 0) ex->path_env = NULL;
    }
    free(dir);
  }
  if (!ex->base_env || (cfg->braid_exe && !ex->braid_env)) {
    rc = br_error_set(err, BR_ENOMEM, "out of memory");
    goto fail;
  }
  static const char *const ours[] = {"BRAID_TASK_ID=", "BRAID_INVOCATION_ID=", "BRAID_NODE=",
                                      "BRAID_CTL=", "BRAID_CTL_TOKEN=", "BRAID_ATTRS_FILE=",
                                      "BRAID_EXE=", "BRAID_CORES=", "BRAID_ATTR_", NULL};
  for (size_t i = 0; i < n; i++) {
    const char *e = environ[i];
    bool skip = false;
    for (const char *const *o = ours; *o && !skip; o++) skip = strncmp(e, *o, strlen(*o)) == 0;
    if (skip) continue;
    if (ex->path_env && strncmp(e, "PATH=", 5) == 0) continue;
    if (!(ex->base_env[ex->n_base_env] = strdup(e))) {
      rc = br_error_set(err, BR_ENOMEM, "out of memory");
      goto fail;
    }
    ex->n_base_env++;
  }

  if (br__mkdirs(ex->runtime_dir, 0755) != 0) {
    rc = br_error_set(err, BR_EIO, "cannot create runtime folder '%s': %s", ex->runtime_dir,
                      strerror(errno));
    goto fail;
  }
  /* Jobs run in other folders: the paths they are given must be absolute. */
  char *abs = realpath(ex->runtime_dir, NULL);
  if (!abs) {
    rc = br_error_set(err, BR_EIO, "runtime folder '%s': %s", ex->runtime_dir, strerror(errno));
    goto fail;
  }
  free(ex->runtime_dir);
  ex->runtime_dir = abs;
  if (asprintf(&ex->empty_attrs, "%s/attrs-empty-%d.json", ex->runtime_dir, (int)getpid()) < 0) {
    ex->empty_attrs = NULL;
    rc = br_error_set(err, BR_ENOMEM, "out of memory");
    goto fail;
  }
  if ((rc = br_runtime_write_file(ex->empty_attrs, "{}\n", 3, err)) != BR_OK) goto fail;
  if ((rc = br_runtime_create(&ex->ev, &ex->rt, err)) != BR_OK) goto fail;
  if ((rc = br_runtime_listen(ex->rt, ex->loop, ex->runtime_dir, err)) != BR_OK) goto fail;

  posix_spawnattr_init(&ex->sattr);
  sigset_t all, none;
  sigfillset(&all);
  sigemptyset(&none);
  posix_spawnattr_setsigdefault(&ex->sattr, &all);
  posix_spawnattr_setsigmask(&ex->sattr, &none);
  posix_spawnattr_setflags(&ex->sattr,
                           POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);

  reaper_start(ex);
  uv_signal_init(ex->loop, &ex->sigchld);
  ex->sigchld.data = ex;
  uv_signal_start(&ex->sigchld, sigchld_cb, SIGCHLD);
  uv_unref((uv_handle_t *)&ex->sigchld);
  uv_idle_init(ex->loop, &ex->idle);
  ex->idle.data = ex;
  ex->handles = 2;
  *out = ex;
  return BR_OK;

fail:
  if (ex->rt) br_runtime_destroy(ex->rt);
  if (ex->empty_attrs) unlink(ex->empty_attrs);
  if (ex->own_runtime_dir) rmdir(ex->runtime_dir);
  free(ex->empty_attrs);
  free(ex->runtime_dir);
  free(ex->path_env);
  free(ex->braid_env);
  free_strv(ex->base_env);
  free(ex);
  return rc;
}

static int local_submit(br_executor *ex, const br_invocation *inv, br_error *err) {
  if (ex->destroyed) return br_error_set(err, BR_ESTATE, "the executor is shut down");
  if (!inv || !inv->argv || !inv->argv[0])
    return br_error_set(err, BR_EINVAL, "invocation %lld has no command",
                        inv ? (long long)inv->id : 0LL);
  job *j = calloc(1, sizeof *j);
  if (!j) return br_error_set(err, BR_ENOMEM, "out of memory");
  j->ex = ex;
  j->id = inv->id;
  j->task_id = inv->task_id;
  j->log_fd = -1;
  j->last_progress = -1;
  j->timeout = inv->timeout;
  j->cores = inv->cores > 0 ? inv->cores : 1;
  if (j->cores > ex->slots) j->cores = ex->slots;
  j->node = xstrdup(inv->node);
  j->argv = dup_strv(inv->argv);
  j->env = dup_strv(inv->env);
  j->cwd = inv->cwd && *inv->cwd ? strdup(inv->cwd) : NULL;
  j->log_path = inv->log_path && *inv->log_path ? strdup(inv->log_path) : NULL;
  bool oom = !j->argv || (inv->node && !j->node) || (inv->env && !j->env) ||
             (inv->cwd && *inv->cwd && !j->cwd) ||
             (inv->log_path && *inv->log_path && !j->log_path);
  if (inv->n_good > 0 && inv->good_codes) {
    j->good = malloc((size_t)inv->n_good * sizeof(int));
    if (j->good) memcpy(j->good, inv->good_codes, (size_t)inv->n_good * sizeof(int));
    j->n_good = inv->n_good;
    oom |= !j->good;
  }
  if (inv->n_retry > 0 && inv->retry_codes) {
    j->retry = malloc((size_t)inv->n_retry * sizeof(int));
    if (j->retry) memcpy(j->retry, inv->retry_codes, (size_t)inv->n_retry * sizeof(int));
    j->n_retry = inv->n_retry;
    oom |= !j->retry;
  }
  /* The attributes as they are now: the environment and the file. */
  if (json_is_object(inv->attrs) && json_object_size(inv->attrs) > 0) {
    j->attrs_text = json_dumps(inv->attrs, JSON_COMPACT);
    j->attr_env = calloc(json_object_size(inv->attrs) + 1, sizeof(char *));
    oom |= !j->attrs_text || !j->attr_env;
    const char *k;
    json_t *v;
    size_t n = 0;
    json_object_foreach(inv->attrs, k, v) {
      if (oom) break;
      char *val = br_runtime_attr_env_value(v);
      if (!val) continue; /* lists and objects: only in the file */
      char *name = br_runtime_attr_env_name(k);
      if (!name || asprintf(&j->attr_env[n], "%s=%s", name, val) < 0) {
        j->attr_env[n] = NULL;
        oom = true;
      } else {
        n++;
      }
      free(name);
      free(val);
    }
  }
  if (oom) {
    job_free(j);
    return br_error_set(err, BR_ENOMEM, "out of memory");
  }
  if (inv->progress_regex && *inv->progress_regex) {
    int rc = regcomp(&j->re, inv->progress_regex, REG_EXTENDED);
    if (rc != 0) {
      char msg[256];
      regerror(rc, &j->re, msg, sizeof msg);
      job_free(j);
      return br_error_set(err, BR_EINVAL, "bad progress regex '%s': %s", inv->progress_regex,
                          msg);
    }
    j->has_re = true;
    if (j->re.re_nsub < 1) {
      job_free(j);
      return br_error_set(err, BR_EINVAL,
                          "progress regex '%s' has no group: put the number in ( )",
                          inv->progress_regex);
    }
  }
  j->submit_ns = uv_hrtime();
  j->state = J_QUEUED;
  j->prev = ex->q_tail;
  if (ex->q_tail) ex->q_tail->next = j; else ex->q_head = j;
  ex->q_tail = j;
  ex->queued_cores += j->cores;
  ex->active++;
  dispatch(ex);
  return BR_OK;
}

static int local_cancel(br_executor *ex, int64_t invocation_id) {
  for (job *j = ex->q_head; j; j = j->next) {
    if (j->id != invocation_id) continue;
    list_remove(&ex->q_head, &ex->q_tail, j);
    ex->queued_cores -= j->cores;
    j->cancelled = true;
    set_error(j, "cancelled before it started");
    j->state = J_EXITED;
    list_push(&ex->running, j); /* complete() takes it off this list */
    complete(j);
    return BR_OK;
  }
  for (job *j = ex->running; j; j = j->next) {
    if (j->id != invocation_id) continue;
    if (j->state != J_RUNNING) return BR_ESTATE; /* already finished */
    j->cancelled = true;
    terminate(j, false);
    return BR_OK;
  }
  return BR_ENOTFOUND;
}

static void local_cancel_all(br_executor *ex, bool hard) {
  while (ex->q_head) local_cancel(ex, ex->q_head->id);
  for (job *j = ex->running; j; j = j->next) {
    if (j->state != J_RUNNING) continue;
    j->cancelled = true;
    terminate(j, hard);
  }
}

static int local_active(br_executor *ex) { return ex->active; }

static int local_capacity(br_executor *ex) {
  int free_slots = ex->slots - ex->used - ex->queued_cores;
  return free_slots > 0 ? free_slots : 0;
}

static void ex_handle_closed(uv_handle_t *h) {
  br_executor *ex = h->data;
  if (--ex->handles == 0) {
    posix_spawnattr_destroy(&ex->sattr);
    free(ex);
  }
}

static void local_destroy(br_executor *ex) {
  if (!ex || ex->destroyed) return;
  ex->destroyed = true;
  while (ex->q_head) {
    job *j = ex->q_head;
    list_remove(&ex->q_head, &ex->q_tail, j);
    job_release(j);
  }
  /* Jobs waiting for delivery are on the running list (started) or were
   * taken off it by complete(): release those from the done queue. */
  for (job *j = ex->dones_head, *next; j; j = next) {
    next = j->done_next;
    job_release(j);
  }
  ex->dones_head = ex->dones_tail = ex->starts_head = ex->starts_tail = NULL;
  while (ex->running) {
    job *j = ex->running;
    list_remove(&ex->running, NULL, j);
    if (j->state == J_RUNNING && j->pid > 0) {
      kill(-j->pid, SIGKILL);
      reaper_tell(ex, REAP_DEL, j->pid);
      while (wait4(j->pid, &j->wstatus, 0, NULL) < 0 && errno == EINTR) {}
    }
    if (j->registered) json_decref(br_runtime_unregister(ex->rt, j->id));
    if (j->attrs_path) unlink(j->attrs_path);
    if (j->log_fd >= 0) close(j->log_fd);
    job_release(j);
  }
  reaper_stop(ex);
  br_runtime_destroy(ex->rt);
  unlink(ex->empty_attrs);
  if (ex->own_runtime_dir) rmdir(ex->runtime_dir);
  free(ex->empty_attrs);
  free(ex->runtime_dir);
  free(ex->path_env);
  free(ex->braid_env);
  free(ex->log_dir);
  free_strv(ex->base_env);
  uv_close((uv_handle_t *)&ex->sigchld, ex_handle_closed);
  uv_close((uv_handle_t *)&ex->idle, ex_handle_closed);
}

const br_executor_ops br_exec_local = {
    .name = "local",
    .create = local_create,
    .submit = local_submit,
    .cancel = local_cancel,
    .cancel_all = local_cancel_all,
    .active = local_active,
    .capacity = local_capacity,
    .destroy = local_destroy,
};
