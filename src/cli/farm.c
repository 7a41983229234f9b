/* The command line over a braid server's API: braid submit, ls, cancel,
 * retry, pause, resume, workers, and show and log when a server is named.
 * Each is a thin client of the HTTP API (docs/openapi.json). */
#include <braid/graph.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "remote.h"

/* Options every remote command takes. */
enum { OPT_SERVER = 1000, OPT_TOKEN, OPT_JSON, OPT_HELP };
#define REMOTE_OPTIONS                                                                     \
  {"server", required_argument, NULL, OPT_SERVER}, {"token", required_argument, NULL, OPT_TOKEN}, \
      {"json", no_argument, NULL, OPT_JSON}, {"help", no_argument, NULL, OPT_HELP}

typedef struct ropts {
  const char *server, *token;
  int json;
} ropts;

/* Handles the shared options; returns 1 when c was one, -1 for help. */
static int common_opt(int c, ropts *r) {
  switch (c) {
  case OPT_SERVER: r->server = optarg; return 1;
  case OPT_TOKEN: r->token = optarg; return 1;
  case OPT_JSON: r->json = 1; return 1;
  case OPT_HELP: case 'h': return -1;
  default: return 0;
  }
}

static const char *str_or(const char *s, const char *dflt) { return s ? s : dflt; }

static int parse_task_id(const char *s, long long *id) {
  return br_cli_parse_id(s, "a task id", id);
}

/* The id of group g: g itself when it is a number, else the name a
 * submission was given (the server's GET /api/v1/groups). 0 after saying
 * why not. */
static long long group_id_of(br_remote *rm, const char *g) {
  char *end;
  long long id = strtoll(g, &end, 10);
  if (*g && !*end && id > 0) return id;
  json_t *ans = NULL;
  if (br_remote_call(rm, "GET", "/api/v1/groups", NULL, &ans)) return 0;
  json_t *v = json_object_get(json_object_get(ans, "groups"), g);
  id = json_is_integer(v) ? (long long)json_integer_value(v) : 0;
  json_decref(ans);
  if (!id)
    br_cli_errorf("no group '%s' on %s: give a group id, or a name given with braid submit "
                  "--group", g, rm->server);
  return id;
}

/* A negative number among the arguments ("-1"), which getopt would take
 * for an option ("invalid option -- '1'"): said to be a bad id instead.
 * Values of the options in opts are skipped. Returns 0, or -1 (error
 * printed). */
static int negative_ids(int argc, char **argv, const struct option *opts) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--") == 0) break;
    if (strncmp(a, "--", 2) == 0 && !strchr(a, '=')) {
      for (const struct option *o = opts; o->name; o++)
        if (strcmp(a + 2, o->name) == 0 && o->has_arg == required_argument) i++;
      continue;
    }
    long long id;
    if (a[0] == '-' && a[1] >= '0' && a[1] <= '9') return parse_task_id(a, &id);
  }
  return 0;
}

/* ---- submit ---- */

static const char *submit_usage =
    "usage: braid submit GRAPH [--set NAME=VALUE]... [--priority P] [--node NODE]\n"
    "                    [--name NAME] [--group NAME] [--server URL] [--token TOKEN] [--json]\n\n"
    "Submits one task of a graph file to a braid server: the graph is uploaded (a new\n"
    "version when it changed) and a task starts at its start node with the graph's\n"
    "start attributes, --set on top, and graph_dir (the graph file's folder).\n\n"
    "  --set NAME=VALUE  an attribute (VALUE is JSON when it parses, else a string;\n"
    "                    NAME:=VALUE wants JSON, as braid ctl)\n"
    "  --priority P      higher runs first (default 0); equal priorities share the farm\n"
    "  --node NODE       where the task starts (default: the graph's start node)\n"
    "  --name NAME       the task's name (default: the graph's)\n"
    "  --group NAME      submissions of one group share the farm as one (fair share)\n" BR_REMOTE_HELP
    "\nPrints the task id. Exit status: 0 submitted, 1 server error, 2 usage or graph error.\n";

int br_cli_submit(int argc, char **argv) {
  static const struct option opts[] = {
      {"set", required_argument, NULL, 's'},  {"priority", required_argument, NULL, 'p'},
      {"node", required_argument, NULL, 'n'}, {"name", required_argument, NULL, 'N'},
      {"group", required_argument, NULL, 'g'}, REMOTE_OPTIONS, {NULL, 0, NULL, 0},
  };
  ropts r = {0};
  json_t *sets = json_object();
  const char *node = NULL, *name = NULL, *group = NULL;
  long long prio = 0;
  int c, rc = BR_EXIT_USAGE;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    int k = common_opt(c, &r);
    if (k < 0) {
      fputs(submit_usage, stdout);
      json_decref(sets);
      return BR_EXIT_OK;
    }
    if (k) continue;
    switch (c) {
    case 's':
      if (br_cli_set_kv(sets, optarg)) goto out;
      break;
    case 'p':
      if (br_cli_parse_int(optarg, INT32_MIN, INT32_MAX, &prio)) {
        br_cli_errorf("--priority needs a whole number (%d to %d), got '%s'", INT32_MIN,
                      INT32_MAX, optarg);
        goto out;
      }
      break;
    case 'n': node = optarg; break;
    case 'N': name = optarg; break;
    case 'g': group = optarg; break;
    default: fputs(submit_usage, stderr); goto out;
    }
  }
  if (optind != argc - 1) {
    fputs(submit_usage, stderr);
    goto out;
  }
  const char *path = argv[optind];
  br_graph *g = br_cli_load_graph(path); /* errors with their position, and warnings, here */
  if (!g) goto out;
  br_graph_free(g);
  json_error_t jerr;
  json_t *graph = json_load_file(path, 0, &jerr);
  if (!graph) {
    br_cli_errorf("%s:%d:%d: %s", path, jerr.line, jerr.column, jerr.text);
    goto out;
  }
  if (!json_object_get(sets, "graph_dir")) { /* jobs find files beside the graph */
    char *abs = realpath(path, NULL);
    char *slash = abs ? strrchr(abs, '/') : NULL;
    if (slash) {
      *slash = 0;
      json_object_set_new(sets, "graph_dir", json_string(abs));
    }
    free(abs);
  }
  json_t *body = json_pack("{sosOsI}", "graph", graph, "attrs", sets, "priority", (json_int_t)prio);
  if (node) json_object_set_new(body, "node", json_string(node));
  if (name) json_object_set_new(body, "name", json_string(name));
  if (group) json_object_set_new(body, "group", json_string(group));
  br_remote rm;
  if (br_remote_open(&rm, r.server, r.token)) {
    json_decref(body);
    goto out;
  }
  json_t *ans = NULL;
  rc = br_remote_call(&rm, "POST", "/api/v1/submissions", body, &ans);
  json_decref(body);
  br_remote_close(&rm);
  if (!rc) {
    if (r.json) br_cli_print_json(ans);
    else
      printf("%lld\n", (long long)json_integer_value(json_object_get(ans, "task")));
    if (!r.json)
      fprintf(stderr, "braid: task %lld submitted to '%s' of graph '%s' (group %lld)\n",
              (long long)json_integer_value(json_object_get(ans, "task")),
              json_string_value(json_object_get(ans, "node")),
              json_string_value(json_object_get(ans, "graph")),
              (long long)json_integer_value(json_object_get(ans, "group")));
    size_t i;
    json_t *w;
    json_array_foreach(json_object_get(ans, "warnings"), i, w)
        fprintf(stderr, "braid: warning: %s\n", json_string_value(w));
  }
  json_decref(ans);
out:
  json_decref(sets);
  return rc;
}

/* ---- ls ---- */

static const char *ls_usage =
    "usage: braid ls [--state STATE] [--node NODE] [--group G] [--parent ID] [--graph ID]\n"
    "                [--limit N] [--after ID] [--all] [--server URL] [--token TOKEN] [--json]\n\n"
    "Lists a server's tasks, oldest first: id, state, node, name, error. A page at a\n"
    "time (--limit, default 100; --after ID for the next one), or --all of them;\n"
    "when there are more, stderr says how to get them (with --json too). --group G:\n"
    "a submission's tasks (G: the group id braid submit printed, or the name given\n"
    "with --group).\n" BR_REMOTE_HELP;

int br_cli_ls(int argc, char **argv) {
  static const struct option opts[] = {
      {"state", required_argument, NULL, 's'},  {"node", required_argument, NULL, 'n'},
      {"group", required_argument, NULL, 'g'},  {"parent", required_argument, NULL, 'p'},
      {"graph", required_argument, NULL, 'G'},  {"limit", required_argument, NULL, 'l'},
      {"after", required_argument, NULL, 'a'},  {"all", no_argument, NULL, 'A'},
      REMOTE_OPTIONS, {NULL, 0, NULL, 0},
  };
  ropts r = {0};
  char query[2048] = "";
  size_t qn = 0;
  long long after = 0, limit = 100;
  int all = 0, c;
  const char *group = NULL;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    int k = common_opt(c, &r);
    if (k < 0) {
      fputs(ls_usage, stdout);
      return BR_EXIT_OK;
    }
    if (k) continue;
    const char *key = NULL;
    long long v;
    switch (c) {
    case 's':
      if (br_task_state_parse(optarg) < 0) {
        br_cli_errorf("unknown state '%s' (waiting, blocked, queued, running, post, done, error, "
                      "cancelled, dead)", optarg);
        return BR_EXIT_USAGE;
      }
      key = "state";
      break;
    case 'n': key = "node"; break;
    case 'g': group = optarg; break; /* an id or a name: asked once the server is known */
    case 'p':
    case 'G': /* ids: checked here, not by a server that answers 400 later */
      key = c == 'p' ? "parent" : "graph";
      if (br_cli_parse_id(optarg, c == 'p' ? "a task id" : "a graph id", &v)) return BR_EXIT_USAGE;
      break;
    case 'l':
      if (br_cli_parse_int(optarg, 1, 10000, &limit)) {
        br_cli_errorf("--limit needs a whole number from 1 to 10000, got '%s'", optarg);
        return BR_EXIT_USAGE;
      }
      break;
    case 'a':
      if (br_cli_parse_int(optarg, 0, INT64_MAX, &after)) {
        br_cli_errorf("--after needs a task id (a whole number), got '%s'", optarg);
        return BR_EXIT_USAGE;
      }
      break;
    case 'A': all = 1; break;
    default: fputs(ls_usage, stderr); return BR_EXIT_USAGE;
    }
    if (key) {
      char *e = br_remote_escape(optarg);
      qn += (size_t)snprintf(query + qn, sizeof query - qn, "&%s=%s", key, e);
      free(e);
      if (qn >= sizeof query) return BR_EXIT_USAGE;
    }
  }
  if (optind != argc) {
    fputs(ls_usage, stderr);
    return BR_EXIT_USAGE;
  }
  br_remote rm;
  if (br_remote_open(&rm, r.server, r.token)) return BR_EXIT_USAGE;
  if (group) {
    long long gid = group_id_of(&rm, group);
    if (!gid) {
      br_remote_close(&rm);
      return BR_EXIT_USAGE;
    }
    qn += (size_t)snprintf(query + qn, sizeof query - qn, "&group=%lld", gid);
    if (qn >= sizeof query) return BR_EXIT_USAGE;
  }
  json_t *collected = json_array();
  int rc = 0;
  bool header = false; /* printed with the first answer: nothing on stdout when it fails */
  for (;;) {
    char path[4096];
    snprintf(path, sizeof path, "/api/v1/tasks?limit=%lld%s", all ? 1000 : limit, query);
    if (after) snprintf(path + strlen(path), sizeof path - strlen(path), "&after=%lld", after);
    json_t *ans = NULL;
    if ((rc = br_remote_call(&rm, "GET", path, NULL, &ans))) break;
    if (!r.json && !header) {
      printf("%8s  %-9s %-20s %-24s %s\n", "id", "state", "node", "name", "error");
      header = true;
    }
    size_t i;
    json_t *t;
    json_array_foreach(json_object_get(ans, "tasks"), i, t) {
      if (r.json) {
        json_array_append(collected, t);
      } else {
        const char *e = json_string_value(json_object_get(t, "error"));
        char node[32], name[32];
        printf("%8lld  %-9s %-20s %-24s %s%s\n",
               (long long)json_integer_value(json_object_get(t, "id")),
               json_string_value(json_object_get(t, "state")),
               br_cli_fit(json_string_value(json_object_get(t, "node")), 20, node, sizeof node),
               br_cli_fit(json_string_value(json_object_get(t, "name")), 24, name, sizeof name),
               e ? e : "",
               json_is_true(json_object_get(t, "paused")) ? " (paused)" : "");
      }
    }
    json_t *next = json_object_get(ans, "next");
    bool more = json_is_integer(next);
    if (more) after = json_integer_value(next);
    json_decref(ans);
    if (!all || !more) {
      if (!all && more) /* with --json too: stdout stays the list */
        fprintf(stderr, "braid: more: braid ls --after %lld ... (or --all)\n", after);
      break;
    }
  }
  if (!rc && r.json) br_cli_print_json(collected);
  json_decref(collected);
  br_remote_close(&rm);
  return rc;
}

/* ---- cancel / retry / pause / resume ---- */

/* `--group G`: the action on every task of a submission, in one request
 * (the server knows G as an id or as a name). */
static int group_action(const ropts *r, const char *group, const char *action) {
  br_remote rm;
  if (br_remote_open(&rm, r->server, r->token)) return BR_EXIT_USAGE;
  char *g = br_remote_escape(group), path[512];
  snprintf(path, sizeof path, "/api/v1/groups/%s/%s", g, action);
  free(g);
  json_t *ans = NULL;
  int rc = br_remote_call(&rm, "POST", path, NULL, &ans);
  br_remote_close(&rm);
  if (!rc && r->json) br_cli_print_json(ans);
  else if (!rc)
    printf("group %lld: %s, %lld task%s\n",
           (long long)json_integer_value(json_object_get(ans, "group")), action,
           (long long)json_integer_value(json_object_get(ans, "tasks")),
           json_integer_value(json_object_get(ans, "tasks")) == 1 ? "" : "s");
  json_decref(ans);
  return rc;
}

static int task_action(int argc, char **argv, const char *action, const char *what,
                       const char *group_what) {
  static const struct option opts[] = {{"group", required_argument, NULL, 'g'}, REMOTE_OPTIONS,
                                       {NULL, 0, NULL, 0}};
  ropts r = {0};
  int c;
  const char *group = NULL;
  char usage[1400];
  snprintf(usage, sizeof usage,
           "usage: braid %s TASK... [--server URL] [--token TOKEN] [--json]\n"
           "       braid %s --group ID|NAME [--server URL] [--token TOKEN] [--json]\n\n%s\n"
           "  --group G         every task of a submission: %s (G: the group id braid\n"
           "                    submit printed, or the name given with --group)\n" BR_REMOTE_HELP
           "\nExit status: 0 done for all, 1 a server error, 2 a task or group that does not\n"
           "exist, or a task in a state that does not allow it.\n",
           action, action, what, group_what);
  if (!br_cli_wants_help(argc, argv) && negative_ids(argc, argv, opts)) return BR_EXIT_USAGE;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    if (c == 'g') {
      group = optarg;
      continue;
    }
    int k = common_opt(c, &r);
    if (k < 0) {
      fputs(usage, stdout);
      return BR_EXIT_OK;
    }
    if (!k) {
      fputs(usage, stderr);
      return BR_EXIT_USAGE;
    }
  }
  if (group && (optind < argc || !*group)) {
    br_cli_errorf(*group ? "give tasks or --group, not both" : "--group wants an id or a name");
    return BR_EXIT_USAGE;
  }
  if (group) return group_action(&r, group, action);
  if (optind >= argc) {
    fputs(usage, stderr);
    return BR_EXIT_USAGE;
  }
  for (int i = optind; i < argc; i++) {
    long long id;
    if (parse_task_id(argv[i], &id)) return BR_EXIT_USAGE;
  }
  br_remote rm;
  if (br_remote_open(&rm, r.server, r.token)) return BR_EXIT_USAGE;
  int rc = 0;
  json_t *all = json_array();
  for (int i = optind; i < argc; i++) {
    char path[128];
    long long id;
    parse_task_id(argv[i], &id); /* checked above */
    snprintf(path, sizeof path, "/api/v1/tasks/%lld/%s", id, action);
    json_t *ans = NULL;
    int one = br_remote_call(&rm, "POST", path, NULL, &ans);
    if (one) {
      if (!rc || one == BR_EXIT_FAILED) rc = one;
      continue;
    }
    if (r.json) json_array_append(all, ans);
    else printf("%s: %s\n", argv[i], action);
    json_decref(ans);
  }
  if (r.json) br_cli_print_json(all);
  json_decref(all);
  br_remote_close(&rm);
  return rc;
}

int br_cli_cancel(int argc, char **argv) {
  return task_action(argc, argv, "cancel", "Cancels tasks on a braid server; a running job is killed.",
                     "those not finished (in error too) are cancelled");
}
int br_cli_retry(int argc, char **argv) {
  return task_action(argc, argv, "retry",
                     "Runs tasks again at their node (finished, failed or cancelled ones).",
                     "those in error or cancelled run again");
}
int br_cli_pause(int argc, char **argv) {
  return task_action(argc, argv, "pause",
                     "Pauses tasks: they are not dispatched (a running job goes on).",
                     "those not finished are paused");
}
int br_cli_resume(int argc, char **argv) {
  return task_action(argc, argv, "resume", "Resumes paused tasks.", "paused ones resume");
}

/* ---- workers ---- */

static const char *workers_usage =
    "usage: braid workers [--server URL] [--token TOKEN] [--json]\n"
    "       braid workers drain|undrain ID\n"
    "       braid workers tags ID [TAG...]\n\n"
    "Lists a server's agents (state, running jobs, free slots, resources, tags), or\n"
    "drains one (it takes no new work), undrains it, or sets its tags (replacing\n"
    "what it registered with). Settings are kept across server restarts; an id no\n"
    "agent has registered with yet is warned about, and its setting waits for it.\n"
    "Options go anywhere; a tag that starts with '-' goes after '--'.\n" BR_REMOTE_HELP;

int br_cli_workers(int argc, char **argv) {
  static const struct option opts[] = {REMOTE_OPTIONS, {NULL, 0, NULL, 0}};
  ropts r = {0};
  int c;
  /* options anywhere, as the other commands take them: getopt moves the
   * verb, the id and the tags after them */
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    int k = common_opt(c, &r);
    if (k < 0) {
      fputs(workers_usage, stdout);
      return BR_EXIT_OK;
    }
    if (!k) {
      fputs(workers_usage, stderr);
      return BR_EXIT_USAGE;
    }
  }
  const char *verb = optind < argc ? argv[optind] : NULL;
  int drain = verb && strcmp(verb, "drain") == 0, undrain = verb && strcmp(verb, "undrain") == 0,
      tags = verb && strcmp(verb, "tags") == 0;
  if (verb && !drain && !undrain && !tags) {
    br_cli_errorf("workers: '%s' is not one of drain, undrain, tags (braid workers --help)", verb);
    return BR_EXIT_USAGE;
  }
  if (((drain || undrain) && optind + 2 != argc) || (tags && optind + 2 > argc)) {
    fputs(workers_usage, stderr);
    return BR_EXIT_USAGE;
  }
  br_remote rm;
  if (br_remote_open(&rm, r.server, r.token)) return BR_EXIT_USAGE;
  json_t *ans = NULL;
  int rc;
  if (verb) {
    char *id = br_remote_escape(argv[optind + 1]), path[512];
    json_t *body;
    if (tags) {
      body = json_pack("{s[]}", "tags");
      for (int i = optind + 2; i < argc; i++)
        json_array_append_new(json_object_get(body, "tags"), json_string(argv[i]));
      snprintf(path, sizeof path, "/api/v1/workers/%s/tags", id);
    } else {
      body = json_pack("{sb}", "drain", drain);
      snprintf(path, sizeof path, "/api/v1/workers/%s/drain", id);
    }
    free(id);
    rc = br_remote_call(&rm, tags ? "PUT" : "POST", path, body, &ans);
    json_decref(body);
    if (!rc && json_is_false(json_object_get(ans, "known")))
      fprintf(stderr,
              "braid: warning: no agent '%s' has registered with the server: the setting is "
              "kept for when one does (braid workers lists the known ones)\n",
              argv[optind + 1]);
    if (!rc) {
      if (r.json) br_cli_print_json(ans);
      else printf("%s: %s\n", argv[optind + 1], tags ? "tags set" : drain ? "draining" : "undrained");
    }
  } else {
    rc = br_remote_call(&rm, "GET", "/api/v1/workers", NULL, &ans);
    if (!rc && r.json) {
      br_cli_print_json(json_object_get(ans, "workers"));
    } else if (!rc) {
      printf("%-20s %-9s %7s %5s %9s %4s  %s\n", "id", "state", "running", "free", "memory", "gpus", "tags");
      size_t i;
      json_t *w;
      json_array_foreach(json_object_get(ans, "workers"), i, w) {
        char tagbuf[512] = "";
        size_t k, n = 0;
        json_t *t;
        json_array_foreach(json_object_get(w, "tags"), k, t)
          n += (size_t)snprintf(tagbuf + n, n < sizeof tagbuf ? sizeof tagbuf - n : 0, "%s%s", k ? "," : "",
                                json_string_value(t));
        char id[32];
        printf("%-20s %-9s %7zu %2lld/%-2lld %7lldMB %4lld  %s\n",
               br_cli_fit(json_string_value(json_object_get(w, "id")), 20, id, sizeof id),
               json_string_value(json_object_get(w, "state")), json_array_size(json_object_get(w, "running")),
               (long long)json_integer_value(json_object_get(json_object_get(w, "free"), "slots")),
               (long long)json_integer_value(json_object_get(w, "slots")),
               (long long)json_integer_value(json_object_get(w, "memory_mb")),
               (long long)json_integer_value(json_object_get(w, "gpus")), tagbuf);
      }
    }
  }
  json_decref(ans);
  br_remote_close(&rm);
  return rc;
}

/* ---- show and log on a server ---- */

/* True when show/log should ask a server: --server given, or $BRAID_SERVER
 * set and no --store given. */
int br_cli_wants_remote(int argc, char **argv) {
  const char *server = NULL;
  int store = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--") == 0) break;
    if (strcmp(argv[i], "--server") == 0 && i + 1 < argc) server = argv[i + 1];
    if (strncmp(argv[i], "--server=", 9) == 0) server = argv[i] + 9;
    if (strcmp(argv[i], "--store") == 0 || strncmp(argv[i], "--store=", 8) == 0) store = 1;
  }
  if (server) return 1;
  const char *env = getenv("BRAID_SERVER");
  return env && *env && !store;
}

int br_cli_show_remote(int argc, char **argv) {
  static const struct option opts[] = {REMOTE_OPTIONS, {NULL, 0, NULL, 0}};
  ropts r = {0};
  int c;
  const char *usage = "usage: braid show TASK [--server URL] [--token TOKEN] [--json]\n\n"
                      "Everything about one task on a braid server, with its invocations.\n" BR_REMOTE_HELP;
  if (!br_cli_wants_help(argc, argv) && negative_ids(argc, argv, opts)) return BR_EXIT_USAGE;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    int k = common_opt(c, &r);
    if (k <= 0) {
      fputs(usage, k < 0 ? stdout : stderr);
      return k < 0 ? BR_EXIT_OK : BR_EXIT_USAGE;
    }
  }
  long long id;
  if (optind != argc - 1) {
    fputs(usage, stderr);
    return BR_EXIT_USAGE;
  }
  if (parse_task_id(argv[optind], &id)) return BR_EXIT_USAGE;
  br_remote rm;
  if (br_remote_open(&rm, r.server, r.token)) return BR_EXIT_USAGE;
  char path[128];
  snprintf(path, sizeof path, "/api/v1/tasks/%lld", id);
  json_t *t = NULL;
  int rc = br_remote_call(&rm, "GET", path, NULL, &t);
  br_remote_close(&rm);
  if (rc) return rc;
  if (r.json) {
    br_cli_print_json(t);
    json_decref(t);
    return 0;
  }
  const char *err = json_string_value(json_object_get(t, "error"));
  printf("task %lld  %s\n", id, json_string_value(json_object_get(t, "name")));
  printf("  state     %s%s\n", json_string_value(json_object_get(t, "state")),
         json_is_true(json_object_get(t, "paused")) ? " (paused)" : "");
  printf("  node      %s (input %lld)\n", json_string_value(json_object_get(t, "node")),
         (long long)json_integer_value(json_object_get(t, "port")));
  const char *waiting = json_string_value(json_object_get(t, "waiting"));
  if (waiting) printf("  waiting   %s\n", waiting);
  if (json_object_get(t, "parent"))
    printf("  parent    %lld\n", (long long)json_integer_value(json_object_get(t, "parent")));
  json_t *sp = json_object_get(t, "split");
  if (sp)
    printf("  split     %lld, element %lld of %lld\n", (long long)json_integer_value(json_object_get(sp, "id")),
           (long long)json_integer_value(json_object_get(sp, "element")),
           (long long)json_integer_value(json_object_get(sp, "count")));
  printf("  children  %lld live\n", (long long)json_integer_value(json_object_get(t, "live_children")));
  printf("  priority  %lld, group %lld, attempts %lld\n", (long long)json_integer_value(json_object_get(t, "priority")),
         (long long)json_integer_value(json_object_get(t, "group")),
         (long long)json_integer_value(json_object_get(t, "attempts")));
  if (err) printf("  error     %s\n", err);
  char *a = json_dumps(json_object_get(t, "attrs"), JSON_INDENT(2) | JSON_PRESERVE_ORDER);
  printf("  attrs     %s\n", a ? a : "{}");
  free(a);
  size_t i;
  json_t *inv;
  json_array_foreach(json_object_get(t, "invocations"), i, inv) {
    if (!i) printf("  invocations\n");
    const char *st = json_string_value(json_object_get(inv, "status"));
    const char *w = json_string_value(json_object_get(inv, "worker"));
    printf("    %lld  attempt %lld  %-11s on %-12s", (long long)json_integer_value(json_object_get(inv, "id")),
           (long long)json_integer_value(json_object_get(inv, "attempt")), st ? st : "?",
           w ? w : "?");
    if (st && strcmp(st, "running") != 0)
      printf(" exit %lld, %.2f s", (long long)json_integer_value(json_object_get(inv, "exit_code")),
             json_number_value(json_object_get(inv, "runtime")));
    const char *e = json_string_value(json_object_get(inv, "error"));
    printf("%s%s\n", e ? "  " : "", e ? e : "");
  }
  json_decref(t);
  return 0;
}

/* log -f outlives a server restart: no answer, or a 5xx (it is stopping,
 * or a proxy says it is away), is waited out with a growing pause (up to
 * 5 s), said once on stderr (*away counts the tries). Returns true to ask
 * again; false when st is an answer to act on. */
static bool server_away(const br_remote *rm, int st, const char *why, int *away) {
  if (st > 0 && st < 500) {
    if (*away) fprintf(stderr, "braid: the server is back: following again\n");
    *away = 0;
    return false;
  }
  if (!*away)
    fprintf(stderr, "braid: lost the server at %s (%s): trying again until it is back "
                    "(Ctrl-C stops)\n", rm->server, why);
  int ms = *away < 4 ? 500 << *away : 5000;
  (*away)++;
  usleep((useconds_t)ms * 1000);
  return true;
}

/* A JSON GET that, when following, waits for a server that is away
 * (server_away). Returns 0 (*out gets the answer) or the exit status, the
 * error printed as br_remote_call prints it. */
static int get_following(br_remote *rm, bool follow, const char *path, json_t **out) {
  int away = 0;
  for (;;) {
    json_t *ans = NULL;
    br_error err;
    int st = br_http_client_call(rm->c, "GET", path, NULL, &ans, &err);
    if (follow && server_away(rm, st, st < 0 ? err.msg : br_http_error_message(ans, st), &away)) {
      json_decref(ans);
      continue;
    }
    if (st >= 200 && st < 300) {
      *out = ans;
      return 0;
    }
    if (st < 0) br_cli_errorf("%s", err.msg);
    else br_cli_errorf("%s (HTTP %d)", br_http_error_message(ans, st), st);
    json_decref(ans);
    return st == 400 || st == 404 || st == 409 ? BR_EXIT_USAGE : BR_EXIT_FAILED;
  }
}

int br_cli_log_remote(int argc, char **argv) {
  static const struct option opts[] = {
      {"follow", no_argument, NULL, 'f'}, {"all", no_argument, NULL, 'a'},
      {"invocation", required_argument, NULL, 'i'}, REMOTE_OPTIONS, {NULL, 0, NULL, 0},
  };
  ropts r = {0};
  int follow = 0, all = 0, c;
  long long want = 0;
  const char *usage =
      "usage: braid log TASK [-f] [--all] [--invocation ID] [--server URL] [--token TOKEN] [--json]\n\n"
      "Prints the log of a task's job on a braid server (its last invocation, or\n"
      "--invocation ID, or --all of them). -f follows it while the job runs.\n"
      "--json lists the invocations instead.\n" BR_REMOTE_HELP;
  if (!br_cli_wants_help(argc, argv) && negative_ids(argc, argv, opts)) return BR_EXIT_USAGE;
  while ((c = getopt_long(argc, argv, "hf", opts, NULL)) != -1) {
    int k = common_opt(c, &r);
    if (k < 0) {
      fputs(usage, stdout);
      return BR_EXIT_OK;
    }
    if (k) continue;
    switch (c) {
    case 'f': follow = 1; break;
    case 'a': all = 1; break;
    case 'i':
      if (br_cli_parse_id(optarg, "an invocation id", &want)) return BR_EXIT_USAGE;
      break;
    default: fputs(usage, stderr); return BR_EXIT_USAGE;
    }
  }
  long long id;
  if (optind != argc - 1) {
    fputs(usage, stderr);
    return BR_EXIT_USAGE;
  }
  if (parse_task_id(argv[optind], &id)) return BR_EXIT_USAGE;
  br_remote rm;
  if (br_remote_open(&rm, r.server, r.token)) return BR_EXIT_USAGE;
  char path[256];
  snprintf(path, sizeof path, "/api/v1/tasks/%lld/invocations", id);
  json_t *invs = NULL;
  int rc = get_following(&rm, follow, path, &invs), away = 0;
  if (rc || r.json) {
    if (!rc) br_cli_print_json(json_object_get(invs, "invocations"));
    json_decref(invs);
    br_remote_close(&rm);
    return rc;
  }
  json_t *list = json_object_get(invs, "invocations");
  size_t n = json_array_size(list);
  if (!n && !follow) {
    br_cli_errorf("task %lld has run no job", id);
    json_decref(invs);
    br_remote_close(&rm);
    return BR_EXIT_FAILED;
  }
  /* which: every one, one, or the last */
  size_t first = all ? 0 : n ? n - 1 : 0, end = n;
  long long cur = 0;
  if (want) {
    size_t i = 0;
    while (i < n && json_integer_value(json_object_get(json_array_get(list, i), "id")) != want)
      i++;
    if (i == n) {
      char ids[256] = "";
      for (size_t k = 0, at = 0; k < n && at < sizeof ids - 24; k++)
        at += (size_t)snprintf(ids + at, sizeof ids - at, "%s%lld", k ? ", " : "",
                               (long long)json_integer_value(
                                   json_object_get(json_array_get(list, k), "id")));
      if (n) br_cli_errorf("task %lld has no invocation %lld (its invocations: %s)", id, want, ids);
      else br_cli_errorf("task %lld has no invocation %lld: it has run no job yet", id, want);
      json_decref(invs);
      br_remote_close(&rm);
      return BR_EXIT_FAILED;
    }
    first = i;
    end = i + 1;
  }
  for (size_t i = first; i < end || (i == first && follow); i++) {
    json_t *inv = json_array_get(list, i);
    cur = inv ? json_integer_value(json_object_get(inv, "id")) : 0;
    if (inv)
      printf("== task %lld, invocation %lld, attempt %lld on %s: %s\n", id, cur,
             (long long)json_integer_value(json_object_get(inv, "attempt")),
             str_or(json_string_value(json_object_get(inv, "worker")), "?"),
             str_or(json_string_value(json_object_get(inv, "status")), "?"));
    long long off = 0;
    for (;;) {
      char lp[256];
      if (cur)
        snprintf(lp, sizeof lp, "/api/v1/tasks/%lld/log?invocation=%lld&offset=%lld%s", id, cur, off,
                 follow ? "&wait=20" : "");
      else /* following a task that has run nothing yet */
        snprintf(lp, sizeof lp, "/api/v1/tasks/%lld/log?offset=0&wait=20", id);
      char *body = NULL;
      size_t len = 0;
      json_t *h = NULL;
      br_error err;
      int st = br_http_client_get_text(rm.c, lp, &body, &len, &h, &err);
      char why[64];
      snprintf(why, sizeof why, "HTTP %d", st);
      if (follow && server_away(&rm, st, st < 0 ? err.msg : why, &away)) {
        free(body); /* the same request again: the log is kept on the server */
        json_decref(h);
        continue;
      }
      if (st == 404 && !cur) { /* no job yet: ask again in a moment */
        free(body);
        json_decref(h);
        sleep(1);
        continue;
      }
      if (st != 200) {
        json_t *ej = body ? json_loads(body, 0, NULL) : NULL;
        br_cli_errorf("%s", st < 0 ? err.msg : br_http_error_message(ej, st));
        json_decref(ej);
        free(body);
        json_decref(h);
        rc = BR_EXIT_FAILED;
        break;
      }
      if (!cur) {
        cur = atoll(str_or(json_string_value(json_object_get(h, "x-braid-invocation")), "0"));
        printf("== task %lld, invocation %lld\n", id, cur);
      }
      fwrite(body, 1, len, stdout);
      fflush(stdout);
      off = atoll(str_or(json_string_value(json_object_get(h, "x-braid-next-offset")), "0"));
      bool finished = strcmp(str_or(json_string_value(json_object_get(h, "x-braid-finished")), "0"), "1") == 0;
      free(body);
      json_decref(h);
      if (finished || (!follow && len == 0)) break;
    }
    if (rc) break;
  }
  if (follow && !rc && !want) { /* did it run again? follow the new attempt too */
    json_decref(invs);
    invs = NULL;
    if (!get_following(&rm, true, path, &invs)) {
      json_t *l2 = json_object_get(invs, "invocations");
      json_t *last = json_array_get(l2, json_array_size(l2) - 1);
      const char *st = json_string_value(json_object_get(last, "status"));
      if (last && json_integer_value(json_object_get(last, "id")) != cur && st)
        fprintf(stderr, "braid: the task ran again (invocation %lld, %s): braid log -f %lld\n",
                (long long)json_integer_value(json_object_get(last, "id")), st, id);
    }
  }
  json_decref(invs);
  br_remote_close(&rm);
  return rc;
}
