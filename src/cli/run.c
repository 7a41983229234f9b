/* braid validate / braid run: check a graph file; run a graph on this
 * machine in one process (the embedded default: SQLite store, local slots). */
#include <braid/engine.h>
#include <braid/exec.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>

#include "common.h"

static double mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}


int br_cli_validate(int argc, char **argv) {
  if (br_cli_wants_help(argc, argv) || argc < 2) {
    fprintf(argc < 2 && !br_cli_wants_help(argc, argv) ? stderr : stdout,
            "usage: braid validate GRAPH...\n\n"
            "Checks graph files: JSON syntax, node types, parameters and wires.\n"
            "Errors are printed as FILE:LINE:COLUMN: message, and what is valid but looks\n"
            "like a mistake as FILE:LINE:COLUMN: warning: message. Exit 0 when all are\n"
            "valid, warnings or not.\n");
    return br_cli_wants_help(argc, argv) ? BR_EXIT_OK : BR_EXIT_USAGE;
  }
  int dashes = 0; /* where "--" is: the files after it may start with '-' */
  for (int i = 1; i < argc && !dashes; i++) { /* no options: one is a mistake, not a file */
    if (!strcmp(argv[i], "--")) dashes = i;
    else if (argv[i][0] == '-' && argv[i][1]) {
      br_cli_errorf("validate takes no option '%s' (usage: braid validate GRAPH...; a file "
                    "named so goes after '--')", argv[i]);
      return BR_EXIT_USAGE;
    }
  }
  int bad = 0;
  for (int i = 1; i < argc; i++) {
    if (i == dashes) continue;
    br_graph *g = br_cli_load_graph(argv[i]);
    if (!g) {
      bad++;
      continue;
    }
    printf("%s: ok (graph '%s', %zu nodes)\n", argv[i], br_graph_name(g), br_graph_node_count(g));
    br_graph_free(g);
  }
  return bad ? BR_EXIT_USAGE : BR_EXIT_OK;
}

/* ---- the live display and Ctrl-C ---- */

typedef struct runview {
  br_engine *e;
  int64_t gid;
  int tty;
  int interrupts;
  double t0, last_line;
  int lines_drawn;
  uv_signal_t stop[2]; /* SIGINT, SIGTERM */
  uv_timer_t timer;
} runview;

static void on_signal(uv_signal_t *h, int signum) {
  runview *v = h->data;
  v->interrupts++;
  if (v->interrupts == 1) {
    fprintf(stderr, "\nbraid: %s: stopping; running jobs get SIGTERM, then SIGKILL (again to kill now)\n",
            signum == SIGINT ? "interrupted" : "terminated");
    br_engine_stop(v->e, false);
  } else {
    fprintf(stderr, "braid: killing every job now\n");
    br_engine_stop(v->e, true);
  }
}

static void draw(runview *v, int final) {
  const br_graph *g = br_engine_graph(v->e, v->gid);
  if (!g) return;
  int64_t tot[BR_TASK_NSTATES] = {0};
  double now = mono();
  if (v->tty) {
    if (v->lines_drawn) fprintf(stderr, "\x1b[%dA", v->lines_drawn);
    fprintf(stderr, "\x1b[J%-20s %7s %7s %7s %7s %7s %7s\n", "node", "waiting", "blocked",
            "queued", "running", "done", "error"); /* 76 columns */
    v->lines_drawn = 1;
  }
  for (size_t i = 0; i < br_graph_node_count(g); i++) {
    const char *name = br_node_name(br_graph_node(g, i));
    int64_t c[BR_TASK_NSTATES];
    br_engine_count_live(v->e, v->gid, name, c);
    for (int k = 0; k < BR_TASK_NSTATES; k++) tot[k] += c[k];
    if (v->tty) {
      char cut[32];
      fprintf(stderr, "%-20s %7lld %7lld %7lld %7lld %7lld %7lld\n",
              br_cli_fit(name, 20, cut, sizeof cut),
              (long long)c[BR_TASK_WAITING], (long long)c[BR_TASK_BLOCKED],
              (long long)c[BR_TASK_QUEUED], (long long)c[BR_TASK_RUNNING],
              (long long)(c[BR_TASK_DONE] + c[BR_TASK_DEAD]), (long long)c[BR_TASK_ERROR]);
      v->lines_drawn++;
    }
  }
  br_engine_stats st;
  br_engine_get_stats(v->e, &st);
  double el = now - v->t0;
  /* a cancelled job did not get done: it runs again on resume */
  uint64_t jobs_done = st.invocations_done - st.invocations_cancelled,
           jobs_all = jobs_done + (uint64_t)tot[BR_TASK_RUNNING] + (uint64_t)tot[BR_TASK_QUEUED];
  double frac = jobs_all ? (double)jobs_done / (double)jobs_all : 0;
  double eta = jobs_done && frac < 1 ? el / frac - el : 0;
  if (v->tty) {
    int width = 30, fill = (int)(frac * width);
    fprintf(stderr, "[");
    for (int i = 0; i < width; i++) fputc(i < fill ? '#' : '.', stderr);
    fprintf(stderr, "] %3.0f%%  jobs %llu/%llu  %.0fs elapsed", frac * 100,
            (unsigned long long)jobs_done, (unsigned long long)jobs_all, el);
    if (st.invocations_cancelled)
      fprintf(stderr, "  %llu cancelled", (unsigned long long)st.invocations_cancelled);
    if (eta > 0) fprintf(stderr, "  ETA %.0fs", eta);
    fprintf(stderr, "\n");
    v->lines_drawn++;
  } else if (final || now - v->last_line >= 10) {
    char cancelled[48] = "";
    if (st.invocations_cancelled)
      snprintf(cancelled, sizeof cancelled, ", %llu cancelled",
               (unsigned long long)st.invocations_cancelled);
    fprintf(stderr, "braid: %.0fs: jobs %llu done%s, %lld running, %lld queued; tasks %lld "
            "waiting, %lld blocked, %lld error\n",
            el, (unsigned long long)jobs_done, cancelled, (long long)tot[BR_TASK_RUNNING],
            (long long)tot[BR_TASK_QUEUED], (long long)tot[BR_TASK_WAITING],
            (long long)tot[BR_TASK_BLOCKED], (long long)tot[BR_TASK_ERROR]);
    v->last_line = now;
  }
}

static void on_timer(uv_timer_t *h) { draw(h->data, 0); }

static void close_cb(uv_handle_t *h) { (void)h; }

static void view_start(runview *v, br_engine *e, int64_t gid, int quiet) {
  memset(v, 0, sizeof *v);
  v->e = e;
  v->gid = gid;
  v->tty = !quiet && isatty(2);
  v->t0 = v->last_line = mono();
  uv_loop_t *loop = br_engine_loop(e);
  br_cli_catch_stop(loop, v->stop, on_signal, v, br_engine_store(e));
  uv_timer_init(loop, &v->timer);
  v->timer.data = v;
  if (!quiet) uv_timer_start(&v->timer, on_timer, v->tty ? 250 : 1000, v->tty ? 250 : 1000);
  uv_unref((uv_handle_t *)&v->timer); /* the display never keeps braid alive */
}

static void view_stop(runview *v, int quiet) {
  if (!quiet) draw(v, 1);
  uv_timer_stop(&v->timer);
  uv_close((uv_handle_t *)&v->timer, close_cb);
  br_cli_release_stop(v->stop);
}

/* Whether a process listens on the socket base/dir/name: a run's own
 * answer, whichever PID namespace it runs in (refused: nobody does). */
static bool listening(const char *base, const char *dir, const char *name) {
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  if ((size_t)snprintf(a.sun_path, sizeof a.sun_path, "%s/%s/%s", base, dir, name) >=
      sizeof a.sun_path)
    return true; /* cannot ask: leave it */
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return true;
  int rc = connect(fd, (struct sockaddr *)&a, sizeof a);
  int e = errno;
  close(fd);
  return rc == 0 || (e != ECONNREFUSED && e != ENOENT);
}

/* A run holds a lock on RUN_LOCK in its runtime folder for its life (an
 * flock, let go when the process ends however it ends). It is put in
 * under a temporary name, locked, so a folder's RUN_LOCK is always held
 * while its run lives. Every executor has it: a control socket is only
 * the local executor's. */
#define RUN_LOCK "run.lock"

static int hold_run_lock(const char *dir) {
  char tmp[128], lock[128];
  snprintf(tmp, sizeof tmp, "%s/." RUN_LOCK ".new", dir);
  snprintf(lock, sizeof lock, "%s/" RUN_LOCK, dir);
  int fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return -1;
  if (flock(fd, LOCK_EX | LOCK_NB) != 0 || rename(tmp, lock) != 0) {
    int e = errno;
    unlink(tmp);
    close(fd);
    errno = e;
    return -1;
  }
  return fd;
}

/* Whether the run of a runtime folder (its fd) holds its lock. */
static bool lock_held(int dirfd) {
  int fd = openat(dirfd, RUN_LOCK, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return true; /* cannot ask: leave it */
  bool held = flock(fd, LOCK_SH | LOCK_NB) != 0;
  close(fd); /* lets go of the shared lock taken, if any */
  return held;
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *f) {
  (void)st, (void)f;
  if (type == FTW_DP) rmdir(path);
  else unlink(path);
  return 0; /* best effort: go on */
}

/* Removes the tree at path (a runtime folder: slurm/ holds the jobs'
 * tokens); true when it is gone. */
static bool remove_tree(const char *path) {
  nftw(path, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
  return access(path, F_OK) != 0;
}

/* A run killed outright (SIGKILL, a crash) leaves its runtime folder in
 * base: attribute files, its lock, and (local executor) its control
 * socket, ctl-<pid>.sock. Folders of this user whose lock nobody holds
 * and whose socket nobody listens on are removed when a run starts. One
 * with neither (a run starting now, or one of a braid before run.lock) is
 * left while anything in it changed in the last OWNERLESS_KEEP seconds;
 * after that it is taken for the leftover of a dead run (base is often
 * /dev/shm, memory). Best effort. */
#define OWNERLESS_KEEP (7 * 24 * 3600)
static void sweep_runtime_dirs(const char *base) {
  DIR *d = opendir(base);
  if (!d) return;
  struct dirent *de;
  while ((de = readdir(d))) {
    if (strncmp(de->d_name, "braid-run-", 10) != 0) continue;
    int fd = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    struct stat st;
    if (fd < 0) continue;
    if (fstat(fd, &st) != 0 || st.st_uid != geteuid()) {
      close(fd);
      continue;
    }
    DIR *sub = fdopendir(fd);
    if (!sub) {
      close(fd);
      continue;
    }
    bool owner_seen = false, alive = false;
    time_t newest = st.st_mtime;
    struct dirent *fe;
    while ((fe = readdir(sub))) {
      struct stat est;
      if (strcmp(fe->d_name, "..") != 0 &&
          fstatat(dirfd(sub), fe->d_name, &est, AT_SYMLINK_NOFOLLOW) == 0 &&
          est.st_mtime > newest)
        newest = est.st_mtime;
      int pid;
      char end;
      if (sscanf(fe->d_name, "ctl-%d.soc%c", &pid, &end) == 2 && end == 'k' && pid > 0) {
        owner_seen = true;
        alive = alive || listening(base, de->d_name, fe->d_name);
      } else if (strcmp(fe->d_name, RUN_LOCK) == 0) {
        owner_seen = true;
        alive = alive || lock_held(dirfd(sub));
      }
    }
    if (owner_seen ? !alive : time(NULL) - newest > OWNERLESS_KEEP) {
      char path[PATH_MAX];
      if ((size_t)snprintf(path, sizeof path, "%s/%s", base, de->d_name) < sizeof path)
        remove_tree(path);
    }
    closedir(sub);
  }
  closedir(d);
}

static void run_usage(FILE *out) {
  fprintf(out,
          "usage: braid run GRAPH [--set NAME=VALUE]... [--store PATH] [--node NODE]\n"
          "                 [--slots N] [--grace TIME] [--max-steps N] [--new]\n"
          "                 [--stored-graph] [--quiet] [--json]\n"
          "                 [--executor local|slurm] [--slurm-... OPTIONS]\n\n"
          "Runs a graph on this machine, in one process, until nothing can move.\n"
          "The first run submits one task (to the graph's \"start\" node, with its\n"
          "\"start\" attributes and --set on top); running it again on the same store\n"
          "resumes the unfinished work instead. When GRAPH differs from the graph the\n"
          "unfinished tasks started with, braid asks for --stored-graph or --new.\n\n"
          "  --set NAME=VALUE  an attribute of the starting task (VALUE is JSON when it\n"
          "                    parses: 12, [1,2], true; otherwise a string; NAME:=VALUE\n"
          "                    wants JSON, as braid ctl). graph_dir (the graph file's\n"
          "                    folder) is set unless given. Only a new run's task takes\n"
          "                    them: a resumed one keeps its attributes (--new for a new run)\n"
          "  --store PATH      the store (default: ./GRAPHNAME.braid.db); every commit\n"
          "                    survives a crash of braid; PATH?sync=full also syncs each\n"
          "                    one to disk (safe against power cuts, slower)\n"
          "  --node NODE       where the task starts (default: the graph's start node)\n"
          "  --slots N         jobs at once on this machine (default: the number of cores)\n"
          "  --grace TIME      on Ctrl-C, time between SIGTERM and SIGKILL: seconds, or\n"
          "                    30s, 2m (default 10)\n"
          "  --max-steps N     nodes a task may pass without running a job or waiting\n"
          "                    before it is in error as an endless loop (default 100000)\n"
          "  --quiet           no progress display\n"
          "  --new             submit a new task even if the store has a finished run;\n"
          "                    unfinished tasks of another version of the graph are\n"
          "                    cancelled\n"
          "  --stored-graph    finish the unfinished tasks with the graph they started\n"
          "                    with, when GRAPH was changed since\n"
          "  --json            print the summary as JSON\n"
          "  --executor NAME   where jobs run: local (default: this machine's slots) or\n"
          "                    slurm (each job a Slurm job, many as job arrays; see\n"
          "                    docs/slurm.md); with slurm:\n"
          "%s\n"
          "Job logs go to STORE.logs/ (braid log TASK shows them).\n"
          "Ctrl-C stops: running jobs get SIGTERM, then SIGKILL after the grace period,\n"
          "and are recorded as cancelled; run again to resume. A second Ctrl-C kills at once.\n\n"
          "exit status: 0 all finished, 1 some failed or blocked for good, 2 usage or graph\n"
          "error (or --store is not a store), 130 cancelled\n",
          br_cli_slurm_help);
}

/* --slots at most: far more than any machine's cores, and a bound the
 * executor's tables can take. */
#define MAX_SLOTS 10000

typedef struct err_list {
  int shown;
  br_store *store;
  const char *store_arg; /* the store as a shell word */
  json_t *json;          /* with --json: the failed tasks go here */
} err_list;

static int last_inv(void *ud, br_inv_info *i) {
  br_inv_info *last = ud;
  br_inv_info_free(last);
  *last = *i;
  free(i);
  return 0;
}

/* Prints n bytes of a job's output with control bytes as \xNN (tabs
 * stay): a job's log must not drive the terminal. */
static void put_escaped(const char *p, size_t n) {
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)p[i];
    if ((c < 0x20 && c != '\t') || c == 0x7f) fprintf(stderr, "\\x%02x", c);
    else fputc(c, stderr);
  }
}

/* The nodes where tasks are blocked, and how many (into a JSON array). */
static int blocked_node(void *ud, const char *node, const int64_t *counts) {
  if (counts[BR_TASK_BLOCKED])
    json_array_append_new(ud, json_pack("{sssI}", "node", node, "tasks",
                                        (json_int_t)counts[BR_TASK_BLOCKED]));
  return 0;
}

/* A log line in the summary at most this long: a job whose output ends in
 * one long line (a progress bar redrawn with \r) is shown by its end. */
#define SUMMARY_LINE 300

/* A failed task in the run's summary: its error, the last lines of its
 * log and the command that shows all of it (text on stderr, or an object
 * in l->json). */
static int print_error_task(void *ud, br_task_info *t) {
  err_list *l = ud;
  if (l->json || l->shown++ < 20) {
    br_inv_info last = {0};
    br_error err = {0};
    br_store_inv_query(l->store, t->id, last_inv, &last, &err);
    char cmd[2048] = "";
    if (last.row.id)
      snprintf(cmd, sizeof cmd, "braid log %lld --store %s", (long long)t->id, l->store_arg);
    if (l->json) {
      json_t *o = json_pack("{sIssssssss*}", "id", (json_int_t)t->id, "name",
                            t->name ? t->name : "", "node", t->node, "error",
                            t->error ? t->error : "failed", "last_lines",
                            last.row.log_tail && *last.row.log_tail ? last.row.log_tail : NULL);
      if (o && *cmd) json_object_set_new(o, "log_command", json_string(cmd));
      json_array_append_new(l->json, o);
    } else {
      fprintf(stderr, "  task %lld (%s) at node '%s': %s\n", (long long)t->id,
              t->name ? t->name : "", t->node, t->error ? t->error : "failed");
      if (last.row.log_tail && *last.row.log_tail) {
        fprintf(stderr, "    last lines of its log:\n");
        const char *p = last.row.log_tail;
        while (*p) {
          const char *nl = strchr(p, '\n');
          size_t len = nl ? (size_t)(nl - p) : strlen(p);
          fprintf(stderr, "      | ");
          size_t skip = 0;
          if (len > SUMMARY_LINE) { /* its end, from a character's start */
            skip = len - SUMMARY_LINE;
            while (skip < len && ((unsigned char)p[skip] & 0xC0) == 0x80) skip++;
            fprintf(stderr, "(%zu bytes before) ...", skip);
          }
          put_escaped(p + skip, len - skip);
          fputc('\n', stderr);
          p += len + (nl ? 1 : 0);
        }
      }
      if (*cmd) fprintf(stderr, "    whole log: %s\n", cmd);
    }
    br_inv_info_free(&last);
  }
  br_task_info_free(t);
  free(t);
  return 0;
}

/* States of tasks a run goes on with (errors are retried). */
static bool unfinished(int state) {
  return state != BR_TASK_DONE && state != BR_TASK_DEAD && state != BR_TASK_CANCELLED;
}

typedef struct other_tasks {
  int64_t gid;       /* the graph file's version */
  int64_t *ids;      /* unfinished tasks of other versions */
  size_t n;
  int64_t other_gid; /* the version of the first of them */
} other_tasks;

static int collect_other(void *ud, br_task_info *t) {
  other_tasks *o = ud;
  if (t->graph_id != o->gid && unfinished(t->state)) {
    int64_t *v = realloc(o->ids, (o->n + 1) * sizeof *v);
    if (v) {
      o->ids = v;
      o->ids[o->n++] = t->id;
    }
    if (!o->other_gid) o->other_gid = t->graph_id;
  }
  br_task_info_free(t);
  free(t);
  return 0;
}

/* The store's unfinished tasks that belong to another version of the graph
 * than gid (the file's): an edited file, or another file of the same name. */
static other_tasks other_versions(br_store *store, int64_t gid) {
  other_tasks o = {.gid = gid};
  int64_t all[BR_TASK_NSTATES], mine[BR_TASK_NSTATES];
  br_error err = {0};
  br_task_filter f = BR_TASK_FILTER_ALL;
  if (br_store_task_count(store, &f, all, &err)) return o;
  f.graph_id = gid;
  if (br_store_task_count(store, &f, mine, &err)) return o;
  int64_t others = 0;
  for (int i = 0; i < BR_TASK_NSTATES; i++)
    if (unfinished(i)) others += all[i] - mine[i];
  for (int i = 0; others > 0 && i < BR_TASK_NSTATES; i++) {
    if (!unfinished(i) || all[i] == mine[i]) continue;
    br_task_filter q = BR_TASK_FILTER_ALL;
    q.state = i;
    br_store_task_query(store, &q, collect_other, &o, &err);
  }
  return o;
}

typedef struct newest_other {
  int64_t gid, found;
} newest_other;

static int newest_other_graph(void *ud, br_graph_row *g) {
  newest_other *n = ud;
  if (g->id != n->gid && g->id > n->found) n->found = g->id;
  br_graph_row_free(g);
  return 0;
}

/* Names the graph other_gid for messages: "another version of graph 'g'
 * (version 2)", or "graph 'h'" when it is another graph (a store shared by
 * two graph files). other_gid 0: the newest graph in the store but gid
 * (then without a version). */
static void other_graph_words(br_store *store, int64_t other_gid, int64_t gid,
                              const char *graph_name, char *buf, size_t size) {
  br_error err = {0};
  bool asked = other_gid != 0;
  if (!other_gid) {
    newest_other n = {.gid = gid};
    store->ops->graph_list(store, newest_other_graph, &n, &err);
    other_gid = n.found;
  }
  br_graph_row row = {0};
  if (!other_gid || store->ops->graph_get(store, other_gid, NULL, &row, &err) != BR_OK)
    snprintf(buf, size, "another version of graph '%s'", graph_name);
  else if (strcmp(row.name, graph_name) != 0)
    snprintf(buf, size, "graph '%s'", row.name);
  else if (!asked) /* the newest of its versions need not be the run's */
    snprintf(buf, size, "another version of graph '%s'", graph_name);
  else
    snprintf(buf, size, "another version of graph '%s' (version %d)", graph_name, row.version);
  br_graph_row_free(&row);
}

int br_cli_run(int argc, char **argv) {
  static const struct option opts[] = {
      {"set", required_argument, NULL, 's'},  {"store", required_argument, NULL, 'S'},
      {"node", required_argument, NULL, 'n'}, {"new", no_argument, NULL, 'N'},
      {"json", no_argument, NULL, 'j'},       {"help", no_argument, NULL, 'h'},
      {"slots", required_argument, NULL, 'l'}, {"grace", required_argument, NULL, 'g'},
      {"quiet", no_argument, NULL, 'q'},      {"executor", required_argument, NULL, 'E'},
      {"max-steps", required_argument, NULL, 'M'}, {"stored-graph", no_argument, NULL, 'G'},
      BR_CLI_SLURM_OPTIONS,                   {NULL, 0, NULL, 0},
  };
  const char *executor = "local";
  json_t *xopts = json_object();
  int slots = 0, quiet = 0;
  long long max_steps = 0;
  double grace = 10;
  json_t *sets = json_object();
  const char *store_path = NULL, *node = NULL;
  int fresh = 0, as_json = 0, stored_graph = 0, c, so;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    switch (c) {
    case 's':
      if (br_cli_set_kv(sets, optarg)) {
        json_decref(sets);
        json_decref(xopts);
        return BR_EXIT_USAGE;
      }
      break;
    case 'S': store_path = optarg; break;
    case 'n': node = optarg; break;
    case 'N': fresh = 1; break;
    case 'G': stored_graph = 1; break;
    case 'j': as_json = 1; break;
    case 'l': {
      long long v;
      if (br_cli_parse_int(optarg, 1, MAX_SLOTS, &v)) {
        br_cli_errorf("--slots: '%s' is not a whole number from 1 to %d", optarg, MAX_SLOTS);
        json_decref(sets);
        json_decref(xopts);
        return BR_EXIT_USAGE;
      }
      slots = (int)v;
      break;
    }
    case 'g':
      if ((grace = br_cli_time_option("--grace", optarg)) < 0) {
        json_decref(sets);
        json_decref(xopts);
        return BR_EXIT_USAGE;
      }
      break;
    case 'q': quiet = 1; break;
    case 'M':
      if (br_cli_parse_int(optarg, 1, LLONG_MAX, &max_steps)) {
        br_cli_errorf("--max-steps: '%s' is not a whole number of at least 1", optarg);
        json_decref(sets);
        json_decref(xopts);
        return BR_EXIT_USAGE;
      }
      break;
    case 'E': executor = optarg; break;
    case 'h':
      run_usage(stdout);
      json_decref(xopts);
      json_decref(sets);
      return BR_EXIT_OK;
    default:
      if ((so = br_cli_slurm_option(c, optarg, xopts)) > 0) break;
      if (so == 0) run_usage(stderr); /* else the option's error says it all */
      json_decref(xopts);
      json_decref(sets);
      return BR_EXIT_USAGE;
    }
  }
  const br_executor_ops *xops = br_executor_find(executor);
  if (optind != argc - 1 || !xops || (strcmp(executor, "local") && strcmp(executor, "slurm"))) {
    if (optind == argc - 1) {
      br_cli_errorf("--executor: '%s' is not one of local, slurm", executor);
    } else {
      if (argc - optind > 1) br_cli_errorf("unexpected argument '%s'", argv[optind + 1]);
      else br_cli_errorf("run: which graph? (braid run GRAPH)");
      run_usage(stderr);
    }
    json_decref(xopts);
    json_decref(sets);
    return BR_EXIT_USAGE;
  }
  if (json_object_size(xopts) && strcmp(executor, "slurm")) {
    br_cli_errorf("--slurm-... options need --executor slurm");
    json_decref(xopts);
    json_decref(sets);
    return BR_EXIT_USAGE;
  }
  const char *graph_path = argv[optind];
  br_graph *g = br_cli_load_graph(graph_path);
  if (!g) {
    json_decref(sets);
    json_decref(xopts);
    return BR_EXIT_USAGE;
  }
  char default_store[1024];
  if (!store_path) {
    snprintf(default_store, sizeof default_store, "%s.braid.db", br_graph_name(g));
    store_path = default_store;
  }
  char graph_name[256];
  snprintf(graph_name, sizeof graph_name, "%s", br_graph_name(g));
  if (br_cli_check_store(store_path)) {
    br_graph_free(g);
    json_decref(sets);
    json_decref(xopts);
    return BR_EXIT_USAGE;
  }
  if (!strstr(store_path, "://") && br_cli_mkdirs_for(store_path)) {
    br_cli_errorf("cannot create the folder for %s", store_path);
    br_graph_free(g);
    json_decref(sets);
    json_decref(xopts);
    return BR_EXIT_FAILED;
  }
  const char *start = node ? node : br_graph_start_node(g);
  if (!start || !br_graph_find_node(g, start)) {
    br_cli_errorf("%s: no node '%s' to start at", graph_path, start ? start : "");
    br_graph_free(g);
    json_decref(sets);
    json_decref(xopts);
    return BR_EXIT_USAGE;
  }
  char *start_name = strdup(start);
  json_t *attrs = json_object();
  json_object_update(attrs, br_graph_start_attrs(g));
  json_object_update(attrs, sets);
  size_t n_sets = json_object_size(sets);
  json_decref(sets);
  if (!json_object_get(attrs, "graph_dir")) { /* jobs find files beside the graph */
    char *abs = realpath(graph_path, NULL);
    if (abs) {
      char *slash = strrchr(abs, '/');
      if (slash) *slash = '\0';
      json_object_set_new(attrs, "graph_dir", json_string(abs));
      free(abs);
    }
  }

  /* WAL with synchronous=NORMAL unless the path says otherwise: a commit
   * survives any crash or kill of braid; only a power cut may lose the last
   * ones (never consistency). "PATH?sync=full" syncs every commit. */
  char store_uri[1100];
  bool db_server = strstr(store_path, "://") != NULL; /* postgres://...: no file here */
  snprintf(store_uri, sizeof store_uri, "%s%s", store_path,
           db_server || strchr(store_path, '?') ? "" : "?sync=normal");
  int rc;
  br_store *store = br_cli_open_store(store_uri, 0, &rc);
  br_error err = {0};
  br_engine_opts eopts = {.max_steps = max_steps};
  br_engine *e = store ? br_engine_open(store, &eopts, &err) : NULL;
  int64_t gid = 0;
  char buf[2048];
  if (store && !e) {
    br_cli_errorf("%s", br_error_format(&err, buf, sizeof buf));
    rc = BR_EXIT_FAILED;
  } else if (e && br_engine_add_graph(e, g, &gid, &err)) {
    br_cli_errorf("%s", br_error_format(&err, buf, sizeof buf));
    rc = BR_EXIT_FAILED;
  } else if (!store) {
    br_graph_free(g); /* rc says why */
  }
  g = NULL; /* the engine owns it */
  char runtime_dir[64] = "", exe[PATH_MAX] = "", log_dir[PATH_MAX + 16] = "";
  int run_lock = -1; /* held while the run lives (hold_run_lock) */
  if (rc == BR_EXIT_OK) {
    /* jobs run through the local executor: logs beside the store, the control
     * socket in a short private folder (socket paths are limited in length) */
    /* a database server's run keeps its files here, named after the graph */
    char here[300];
    snprintf(here, sizeof here, "%s.braid.db", graph_name);
    const char *side = db_server ? here : store_path;
    char *logs = br_cli_store_side(side, ".logs");
    /* absolute: the store records each log's path, and `braid log` may run
     * from another folder */
    char cwd[PATH_MAX];
    if (logs && logs[0] != '/' && getcwd(cwd, sizeof cwd))
      snprintf(log_dir, sizeof log_dir, "%s/%s", strcmp(cwd, "/") ? cwd : "", logs);
    else
      snprintf(log_dir, sizeof log_dir, "%s", logs ? logs : "braid.logs");
    free(logs);
    br_engine_set_log_dir(e, log_dir);
    /* attribute files and the control socket: on tmpfs when there is one
     * (creating files there is cheap), else in /tmp */
    const char *rbase = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    sweep_runtime_dirs(rbase);
    snprintf(runtime_dir, sizeof runtime_dir, "%s/braid-run-XXXXXX", rbase);
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[n > 0 ? n : 0] = '\0';
    if (strcmp(executor, "slurm") == 0 && !json_object_get(xopts, "state_dir")) {
      /* the Slurm jobs' token, beside the store: jobs still running when
       * this run is killed report to the resumed one */
      char *sd = br_cli_store_side(side, ".slurm");
      if (sd) json_object_set_new(xopts, "state_dir", json_string(sd));
      free(sd);
    }
    br_exec_config cfg = {.slots = slots, .runtime_dir = mkdtemp(runtime_dir), .braid_exe = exe,
                          .grace = grace, .options = xopts};
    run_lock = cfg.runtime_dir ? hold_run_lock(cfg.runtime_dir) : -1;
    if (run_lock < 0) {
      br_cli_errorf("cannot start the %s executor: no runtime folder in %s: %s", executor, rbase,
                    strerror(errno));
      rc = BR_EXIT_FAILED;
    } else if (br_engine_set_executor(e, xops, &cfg, &err)) {
      br_cli_errorf("cannot start the %s executor: %s", executor,
                    br_error_format(&err, buf, sizeof buf));
      rc = BR_EXIT_FAILED;
    }
  }
  if (rc == BR_EXIT_OK && fresh && stored_graph) {
    br_cli_errorf("--new and --stored-graph: choose one");
    rc = BR_EXIT_USAGE;
  }
  int64_t view_gid = gid;
  if (rc == BR_EXIT_OK) {
    /* Unfinished tasks of another version of this graph would run their old
     * nodes, silently: the file was edited since, or another file has the
     * same name. Go on only when told how. */
    other_tasks o = other_versions(store, gid);
    char other[400] = "";
    if (o.n) other_graph_words(store, o.other_gid, gid, graph_name, other, sizeof other);
    if (o.n && stored_graph) {
      view_gid = o.other_gid;
      if (!as_json)
        fprintf(stderr, "braid: %s: %zu unfinished tasks go on with the graph they started with, "
                "not %s\n", store_path, o.n, graph_path);
    } else if (o.n && fresh) {
      size_t n = 0;
      for (size_t i = 0; i < o.n; i++) n += br_engine_task_cancel(e, o.ids[i], &err) == BR_OK;
      if (!as_json)
        fprintf(stderr, "braid: %s: cancelled %zu unfinished tasks of %s (--new)\n", store_path,
                n, other);
    } else if (o.n) {
      br_cli_errorf("%s holds %zu unfinished tasks of %s, not of %s (%s); run again with\n"
                    "  --stored-graph  to finish them with the graph they started with, or\n"
                    "  --new           to cancel them and start again with %s\n"
                    "  (or give another --store)",
                    store_path, o.n, other, graph_path,
                    strncmp(other, "graph '", 7) == 0
                        ? "another graph file uses this store"
                        : "the file was changed since, or another has the same graph name",
                    graph_path);
      rc = BR_EXIT_USAGE;
    }
    free(o.ids);
  }
  double t0 = mono();
  if (rc == BR_EXIT_OK) {
    int64_t counts[BR_TASK_NSTATES];
    br_task_filter f = BR_TASK_FILTER_ALL;
    br_store_task_count(store, &f, counts, &err);
    int64_t total = 0, active = 0; /* cancelled tasks stay so: not work to resume */
    for (int i = 0; i < BR_TASK_NSTATES; i++) {
      total += counts[i];
      if (unfinished(i)) active += counts[i];
    }
    if (n_sets && total > 0 && !fresh) /* said even with --json: what was asked is not done */
      fprintf(stderr, "braid: warning: --set is not applied: it sets the attributes of a new "
              "run's task, and %s holds a%s run (--new starts a new one with them)\n",
              store_path, active > 0 ? "n unfinished" : " finished");
    if (active > 0 && !fresh) {
      size_t retried = br_engine_retry_failed(e);
      if (!as_json)
        fprintf(stderr, "braid: resuming %lld unfinished tasks in %s (%zu failed ones retried)\n",
                (long long)active, store_path, retried);
    } else if (total > 0 && !fresh) {
      int64_t mine[BR_TASK_NSTATES], n_mine = 0;
      f.graph_id = gid;
      if (br_store_task_count(store, &f, mine, &err) == BR_OK)
        for (int i = 0; i < BR_TASK_NSTATES; i++) n_mine += mine[i];
      char words[400], other[420] = "";
      if (!n_mine) {
        other_graph_words(store, 0, gid, graph_name, words, sizeof words);
        snprintf(other, sizeof other, " of %s", words);
      }
      if (!as_json)
        fprintf(stderr, "braid: %s already holds a finished run%s (use --new to run %s)\n",
                store_path, other, n_mine ? "again" : "this one");
    } else {
      int64_t id;
      if (br_engine_submit(e, gid, start_name, attrs, NULL, &id, &err)) {
        br_cli_errorf("%s", br_error_format(&err, buf, sizeof buf));
        rc = BR_EXIT_FAILED;
      } else if (!as_json) {
        fprintf(stderr, "braid: task %lld submitted to '%s' (store %s)\n", (long long)id, start_name,
                store_path);
      }
    }
  }
  int cancelled = 0;
  runview view;
  if (rc == BR_EXIT_OK) {
    view_start(&view, e, view_gid, quiet || as_json);
    int erc = br_engine_run(e, &err);
    view_stop(&view, quiet || as_json);
    uv_run(br_engine_loop(e), UV_RUN_NOWAIT); /* finish closing the display's handles */
    if (erc == BR_ECANCEL) {
      cancelled = 1;
      if (strcmp(err.msg, "cancelled") != 0) br_cli_errorf("%s", err.msg);
    } else if (erc) {
      br_cli_errorf("%s", br_error_format(&err, buf, sizeof buf));
      rc = BR_EXIT_FAILED;
    }
  }
  if (rc == BR_EXIT_OK) {
    double secs = mono() - t0;
    int64_t counts[BR_TASK_NSTATES];
    br_task_filter f = BR_TASK_FILTER_ALL;
    br_store_task_count(store, &f, counts, &err);
    int64_t total = 0;
    for (int i = 0; i < BR_TASK_NSTATES; i++) total += counts[i];
    char *store_arg = br_cli_shell_quote(store_path);
    err_list l = {.store = store, .store_arg = store_arg ? store_arg : store_path};
    /* Blocked at the end: a wait or a gather for tasks that will not come
     * (an element parked at an unwired output or sent to another gather, a
     * child that never reaches its wait): the run did not finish. */
    json_t *blocked = json_array();
    if (counts[BR_TASK_BLOCKED] && !cancelled)
      br_store_task_count_nodes(store, 0, blocked_node, blocked, &err);
    if (as_json) {
      json_t *j = json_object(), *by = json_object();
      for (int i = 0; i < BR_TASK_NSTATES; i++)
        json_object_set_new(by, br_task_state_name((br_task_state)i), json_integer(counts[i]));
      json_object_set_new(j, "store", json_string(store_path));
      json_object_set_new(j, "seconds", json_real(secs));
      json_object_set_new(j, "tasks", json_integer(total));
      json_object_set_new(j, "states", by);
      l.json = json_array(); /* every failed task, as the text lists the first 20 */
      f.state = BR_TASK_ERROR;
      if (counts[BR_TASK_ERROR]) br_store_task_query(store, &f, print_error_task, &l, &err);
      json_object_set_new(j, "failed", l.json);
      json_object_set_new(j, "blocked", json_incref(blocked));
      br_cli_print_json(j);
      json_decref(j);
    } else {
      fprintf(stderr, "braid: finished in %.2f s: %lld tasks:", secs, (long long)total);
      for (int i = 0; i < BR_TASK_NSTATES; i++)
        if (counts[i]) fprintf(stderr, " %s %lld", br_task_state_name((br_task_state)i), (long long)counts[i]);
      fputc('\n', stderr);
      if (counts[BR_TASK_ERROR]) {
        f.state = BR_TASK_ERROR;
        fprintf(stderr, "braid: %lld tasks failed:\n", (long long)counts[BR_TASK_ERROR]);
        br_store_task_query(store, &f, print_error_task, &l, &err);
        fprintf(stderr, "  (braid tasks --state error --store %s lists them all)\n", l.store_arg);
      }
      if (json_array_size(blocked)) {
        fprintf(stderr, "braid: %lld tasks are blocked for good: they wait for tasks that will not "
                        "come (nothing is left to run)\n", (long long)counts[BR_TASK_BLOCKED]);
        size_t k;
        json_t *b;
        json_array_foreach(blocked, k, b)
          fprintf(stderr, "  node '%s': %lld\n", json_string_value(json_object_get(b, "node")),
                  (long long)json_integer_value(json_object_get(b, "tasks")));
        fprintf(stderr, "  (braid tasks --state blocked --store %s lists them)\n", l.store_arg);
      }
    }
    free(store_arg);
    if (counts[BR_TASK_ERROR] || json_array_size(blocked)) rc = BR_EXIT_FAILED;
    json_decref(blocked);
    if (cancelled) {
      fprintf(stderr, "braid: cancelled; run the same command again to resume\n");
      rc = BR_EXIT_CANCELLED;
    }
  }
  free(start_name);
  json_decref(attrs);
  br_engine_free(e);
  json_decref(xopts);
  br_store_close(store);
  if (runtime_dir[0] && !strstr(runtime_dir, "XXXXXX") && !remove_tree(runtime_dir))
    br_cli_errorf("could not remove %s", runtime_dir);
  if (run_lock >= 0) close(run_lock);
  return rc;
}
