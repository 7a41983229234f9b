/* braid status / tasks / show: read a store, finished or still running. The
 * store is opened read-only (WAL lets readers run beside the engine). */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdint.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

typedef struct qopts {
  const char *store;
  const char *node;
  int state;
  int json;
  int limit;
  int64_t parent;
} qopts;

/* Parses the options every reader shares (the filters --node, --state,
 * --parent and --limit only when `filters`), and wants `npos` positional
 * arguments; returns the index of the first, -1 after a usage error, -2
 * after showing help. */
static int parse(int argc, char **argv, qopts *q, const char *usage, bool filters, int npos) {
  static const struct option opts[] = {
      {"store", required_argument, NULL, 'S'}, {"node", required_argument, NULL, 'n'},
      {"state", required_argument, NULL, 's'}, {"json", no_argument, NULL, 'j'},
      {"limit", required_argument, NULL, 'l'}, {"parent", required_argument, NULL, 'p'},
      {"help", no_argument, NULL, 'h'},        {NULL, 0, NULL, 0},
  };
  memset(q, 0, sizeof *q);
  q->state = -1;
  int c;
  long long v;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    if (!filters && (c == 'n' || c == 's' || c == 'l' || c == 'p')) {
      const char *name = c == 'n' ? "--node" : c == 's' ? "--state" : c == 'l' ? "--limit"
                                                                           : "--parent";
      br_cli_errorf("%s does not take %s (braid tasks does)", argv[0], name);
      return -1;
    }
    switch (c) {
    case 'S': q->store = optarg; break;
    case 'n': q->node = optarg; break;
    case 's':
      q->state = br_task_state_parse(optarg);
      if (q->state < 0) {
        br_cli_errorf("unknown state '%s' (waiting, blocked, queued, running, post, done, error, "
                      "cancelled, dead)", optarg);
        return -1;
      }
      break;
    case 'j': q->json = 1; break;
    case 'l':
      if (br_cli_parse_int(optarg, 1, INT_MAX, &v)) {
        br_cli_errorf("--limit: '%s' is not a whole number of at least 1", optarg);
        return -1;
      }
      q->limit = (int)v;
      break;
    case 'p':
      if (br_cli_parse_id(optarg, "a task id (--parent)", &v)) return -1;
      q->parent = v;
      break;
    case 'h': fputs(usage, stdout); return -2;
    default: fputs(usage, stderr); return -1;
    }
  }
  if (q->store && br_cli_check_store(q->store)) return -1;
  if (argc - optind != npos) {
    if (argc - optind > npos) br_cli_errorf("unexpected argument '%s'", argv[optind + npos]);
    fputs(usage, stderr);
    return -1;
  }
  return optind;
}

/* The store to read, or NULL after saying why, with the exit status in
 * *rc (usage when there is none, or not one, at the path). */
static br_store *open_for_reading(const qopts *q, char **path, int *rc) {
  *path = br_cli_find_store(q->store);
  *rc = BR_EXIT_USAGE;
  return *path ? br_cli_open_store(*path, BR_STORE_READONLY, rc) : NULL;
}

static int fail_err(br_error *err) {
  char buf[1200];
  br_cli_errorf("%s", br_error_format(err, buf, sizeof buf));
  return BR_EXIT_FAILED;
}

static int add_node(void *ud, const char *node, const int64_t *counts) {
  json_t *o = json_object();
  for (int k = 0; k < BR_TASK_NSTATES; k++)
    if (counts[k]) json_object_set_new(o, br_task_state_name((br_task_state)k), json_integer(counts[k]));
  json_object_set_new(ud, node, o);
  return 0;
}

static const char *status_usage =
    "usage: braid status [--store PATH] [--json]\n\n"
    "Counts of tasks by node and state. The store is --store, $BRAID_STORE, or\n"
    "the only *.braid.db in this folder.\n";

int br_cli_status(int argc, char **argv) {
  qopts q;
  int i = parse(argc, argv, &q, status_usage, false, 0);
  if (i < 0) return i == -2 ? BR_EXIT_OK : BR_EXIT_USAGE;
  char *path;
  int orc;
  br_store *s = open_for_reading(&q, &path, &orc);
  if (!s) {
    free(path);
    return orc;
  }
  br_error err = {0};
  json_t *nodes = json_object();
  int rc = br_store_task_count_nodes(s, 0, add_node, nodes, &err);
  if (rc) {
    rc = fail_err(&err);
  } else if (q.json) {
    json_t *j = json_pack("{sssO}", "store", path, "nodes", nodes);
    br_cli_print_json(j);
    json_decref(j);
  } else {
    int64_t total[BR_TASK_NSTATES] = {0};
    printf("%-24s", "node");
    for (int k = 0; k < BR_TASK_NSTATES; k++) printf(" %9s", br_task_state_name((br_task_state)k));
    printf("\n");
    const char *name;
    json_t *v;
    json_object_foreach(nodes, name, v) {
      char cut[32];
      printf("%-24s", br_cli_fit(name, 24, cut, sizeof cut));
      for (int k = 0; k < BR_TASK_NSTATES; k++) {
        json_int_t n = json_integer_value(json_object_get(v, br_task_state_name((br_task_state)k)));
        total[k] += n;
        printf(" %9lld", (long long)n);
      }
      printf("\n");
    }
    printf("%-24s", "total");
    for (int k = 0; k < BR_TASK_NSTATES; k++) printf(" %9lld", (long long)total[k]);
    printf("\n");
  }
  json_decref(nodes);
  br_store_close(s);
  free(path);
  return rc ? BR_EXIT_FAILED : BR_EXIT_OK;
}

typedef struct lister {
  int json;
  json_t *arr;
  int64_t n; /* tasks listed */
} lister;

static int list_one(void *ud, br_task_info *t) {
  lister *l = ud;
  l->n++;
  if (l->json) {
    json_array_append_new(l->arr, br_cli_task_json(t));
  } else {
    char node[32], name[32];
    printf("%8lld  %-9s %-20s %-24s %s\n", (long long)t->id, br_task_state_name(t->state),
           br_cli_fit(t->node, 20, node, sizeof node), br_cli_fit(t->name, 24, name, sizeof name),
           t->error ? t->error : "");
  }
  br_task_info_free(t);
  free(t);
  return 0;
}

/* No task at the node asked for: a typo, or a node all its tasks left.
 * Says which nodes hold tasks (on stderr: the list itself stays empty). */
static void hint_nodes(br_store *s, const char *node) {
  json_t *nodes = json_object();
  br_error err = {0};
  if (br_store_task_count_nodes(s, 0, add_node, nodes, &err) == BR_OK &&
      !json_object_get(nodes, node)) {
    char list[1024] = "";
    size_t n = 0;
    const char *name;
    json_t *v;
    json_object_foreach(nodes, name, v) {
      if (n < sizeof list)
        n += (size_t)snprintf(list + n, sizeof list - n, "%s%s", n ? ", " : "", name);
    }
    br_cli_errorf("no task is at node '%s'; nodes with tasks: %s", node,
                  *list ? list : "none");
  }
  json_decref(nodes);
}

static const char *tasks_usage =
    "usage: braid tasks [--node NODE] [--state STATE] [--parent ID] [--limit N]\n"
    "                   [--store PATH] [--json]\n\n"
    "Lists tasks (id, state, node, name, error), oldest first.\n";

int br_cli_tasks(int argc, char **argv) {
  qopts q;
  int i = parse(argc, argv, &q, tasks_usage, true, 0);
  if (i < 0) return i == -2 ? BR_EXIT_OK : BR_EXIT_USAGE;
  char *path;
  int orc;
  br_store *s = open_for_reading(&q, &path, &orc);
  if (!s) {
    free(path);
    return orc;
  }
  br_task_filter f = BR_TASK_FILTER_ALL;
  f.node = q.node;
  f.state = q.state;
  f.parent = q.parent;
  f.limit = q.limit;
  lister l = {.json = q.json, .arr = json_array()};
  br_error err = {0};
  if (!q.json) printf("%8s  %-9s %-20s %-24s %s\n", "id", "state", "node", "name", "error");
  int rc = br_store_task_query(s, &f, list_one, &l, &err);
  if (rc) rc = fail_err(&err);
  else if (q.json) br_cli_print_json(l.arr);
  json_decref(l.arr);
  if (!rc && !l.n && q.node) hint_nodes(s, q.node);
  br_store_close(s);
  free(path);
  return rc ? BR_EXIT_FAILED : BR_EXIT_OK;
}

/* The common start of commands on one task (show, log): options, the task
 * id, the store. Returns -1 when the command should go on, else an exit code. */
static int open_task_command(int argc, char **argv, const char *usage, qopts *q, long long *id,
                             br_store **s, char **path) {
  int i = parse(argc, argv, q, usage, false, 1);
  if (i < 0) return i == -2 ? BR_EXIT_OK : BR_EXIT_USAGE;
  if (br_cli_parse_id(argv[i], "a task id", id)) return BR_EXIT_USAGE;
  int orc;
  *s = open_for_reading(q, path, &orc);
  if (!*s) {
    free(*path);
    return orc;
  }
  return -1;
}

static const char *show_usage =
    "usage: braid show TASK [--store PATH] [--json]\n"
    "       braid show TASK --server URL [--token TOKEN] [--json]\n\n"
    "Everything about one task: state, node, attributes, parent, split, error.\n"
    "With --server (or $BRAID_SERVER and no --store), a braid server's task and its\n"
    "invocations (braid show --server URL --help).\n";

int br_cli_show(int argc, char **argv) {
  if (br_cli_wants_remote(argc, argv)) return br_cli_show_remote(argc, argv);
  qopts q;
  long long id;
  char *path;
  br_store *s;
  int rc0 = open_task_command(argc, argv, show_usage, &q, &id, &s, &path);
  if (rc0 >= 0) return rc0;
  br_task_info t;
  br_error err = {0};
  int rc = br_store_task_get(s, id, &t, &err);
  if (rc) {
    rc = fail_err(&err);
  } else {
    json_t *j = br_cli_task_json(&t);
    if (q.json) {
      br_cli_print_json(j);
    } else {
      printf("task %lld  %s\n", id, t.name ? t.name : "");
      printf("  state     %s%s\n", br_task_state_name(t.state), t.paused ? " (paused)" : "");
      printf("  node      %s (input %d)\n", t.node, t.port);
      if (t.parent) printf("  parent    %lld\n", (long long)t.parent);
      if (t.split_id)
        printf("  split     %lld, element %d of %d\n", (long long)t.split_id, t.split_elem,
               t.split_count);
      printf("  children  %d live\n", t.live_children);
      printf("  priority  %d, group %lld, attempts %d\n", t.priority, (long long)t.group_id,
             t.attempts);
      if (t.error) printf("  error     %s\n", t.error);
      char *a = json_dumps(t.attrs, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
      printf("  attrs     %s\n", a ? a : "{}");
      free(a);
    }
    json_decref(j);
    br_task_info_free(&t);
  }
  br_store_close(s);
  free(path);
  return rc ? BR_EXIT_FAILED : BR_EXIT_OK;
}

typedef struct inv_list {
  br_inv_info *v;
  size_t n;
} inv_list;

static int collect_inv(void *ud, br_inv_info *i) {
  inv_list *l = ud;
  l->v = realloc(l->v, (l->n + 1) * sizeof *l->v);
  l->v[l->n++] = *i;
  free(i);
  return 0;
}

/* Where an invocation's log is: its recorded path, or the same file in the
 * logs folder beside the store (STORE.logs/K/TASK.INV.log), for paths an
 * older braid recorded relative to where `run` started and for a store
 * moved with its logs. NULL when neither exists; caller frees. */
static char *find_log(const char *recorded, const char *store) {
  struct stat st;
  if (recorded[0] == '/' && stat(recorded, &st) == 0) return strdup(recorded);
  const char *name = strrchr(recorded, '/');
  const char *k = name;
  while (k && k > recorded && k[-1] != '/') k--; /* the K/ folder before the name */
  char *logs = strstr(store, "://") ? NULL : br_cli_store_side(store, ".logs");
  char *beside = NULL;
  if (logs && name && asprintf(&beside, "%s/%s", logs, k) < 0) beside = NULL;
  free(logs);
  if (beside && stat(beside, &st) == 0) return beside;
  free(beside);
  if (recorded[0] != '/' && stat(recorded, &st) == 0) return strdup(recorded);
  return NULL;
}

static const char *log_usage =
    "usage: braid log TASK [--all] [--store PATH] [--json]\n"
    "       braid log TASK [-f] --server URL [--token TOKEN]\n\n"
    "Prints the log of the task's last invocation (stdout and stderr of its job);\n"
    "--all prints every attempt's. --json lists the invocations instead.\n"
    "With --server (or $BRAID_SERVER and no --store), a braid server's log; -f\n"
    "follows it while the job runs (braid log --server URL --help).\n";

int br_cli_log(int argc, char **argv) {
  if (br_cli_wants_remote(argc, argv)) return br_cli_log_remote(argc, argv);
  int all = 0;
  for (int k = 1; k < argc; k++)
    if (strcmp(argv[k], "--all") == 0) {
      all = 1;
      memmove(&argv[k], &argv[k + 1], (size_t)(argc - k) * sizeof *argv);
      argc--;
      break;
    }
  qopts q;
  long long id;
  char *path;
  br_store *s;
  int rc0 = open_task_command(argc, argv, log_usage, &q, &id, &s, &path);
  if (rc0 >= 0) return rc0;
  inv_list l = {0};
  br_error err = {0};
  br_task_info t;
  int rc = br_store_task_get(s, id, &t, &err);
  if (!rc) {
    br_task_info_free(&t);
    rc = br_store_inv_query(s, id, collect_inv, &l, &err);
  }
  if (rc) {
    rc = fail_err(&err);
  } else if (q.json) {
    json_t *arr = json_array();
    for (size_t k = 0; k < l.n; k++) {
      br_inv_row *r = &l.v[k].row;
      json_array_append_new(arr, json_pack("{sIsIsisssisisfsIssss*}", "id", (json_int_t)r->id, "task",
                                           (json_int_t)r->task_id, "attempt", r->attempt, "status",
                                           r->status ? r->status : "", "exit_code", r->exit_code,
                                           "signal", r->term_signal, "runtime", r->runtime,
                                           "peak_rss_kb", (json_int_t)r->peak_rss_kb, "log",
                                           r->log_path ? r->log_path : "", "error", r->error));
    }
    br_cli_print_json(arr);
    json_decref(arr);
  } else if (!l.n) {
    br_cli_errorf("task %lld has run no job", id);
    rc = BR_EXIT_FAILED;
  } else {
    for (size_t k = all ? 0 : l.n - 1; k < l.n; k++) {
      br_inv_row *r = &l.v[k].row;
      printf("== task %lld, invocation %lld, attempt %d: %s", id, (long long)r->id, r->attempt,
             r->status ? r->status : "?");
      /* how it ended: a timeout or a signal has no exit code to show */
      if (r->status && strcmp(r->status, "timeout") == 0)
        printf(" (timed out after %.2f s, %lld MB peak)", r->runtime,
               (long long)(r->peak_rss_kb / 1024));
      else if (r->status && strcmp(r->status, "spawn_error") == 0)
        printf(" (it did not start: %s)", r->error ? r->error : "?");
      else if (r->status && strcmp(r->status, "lost") == 0) /* no exit code either */
        printf(" (%s)", r->error ? r->error : "no report of how it ended");
      else if (r->status && strcmp(r->status, "running") != 0 && r->term_signal)
        printf(" (killed by signal %d (%s) after %.2f s, %lld MB peak)", r->term_signal,
               strsignal(r->term_signal), r->runtime, (long long)(r->peak_rss_kb / 1024));
      else if (r->status && strcmp(r->status, "running") != 0)
        printf(" (exit %d, %.2f s, %lld MB peak)", r->exit_code, r->runtime,
               (long long)(r->peak_rss_kb / 1024));
      printf("\n");
      char *file = r->log_path && *r->log_path ? find_log(r->log_path, path) : NULL;
      FILE *f = file ? fopen(file, "r") : NULL;
      bool said = r->log_tail && *r->log_tail; /* the job wrote something */
      if (!f && (file || said)) {
        /* its file is gone or unreadable: say so, and show what the store
         * kept of it */
        fflush(stdout);
        if (file) br_cli_errorf("cannot read log file %s: %s", file, strerror(errno));
        else br_cli_errorf("log file %s is missing", r->log_path);
        if (said) printf("(the last lines the store kept)\n%s\n", r->log_tail);
        rc = BR_EXIT_FAILED;
      } else if (!f) { /* a silent job makes no log file */
        printf("(no output)\n");
      } else {
        char buf[65536];
        size_t n;
        while ((n = fread(buf, 1, sizeof buf, f)) > 0) fwrite(buf, 1, n, stdout);
        fclose(f);
      }
      free(file);
    }
  }
  for (size_t k = 0; k < l.n; k++) br_inv_info_free(&l.v[k]);
  free(l.v);
  br_store_close(s);
  free(path);
  return rc ? BR_EXIT_FAILED : BR_EXIT_OK;
}
