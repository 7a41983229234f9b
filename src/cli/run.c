/* braid validate / braid run: check a graph file; run a graph on this
 * machine in one process (the embedded default: SQLite store, local slots). */
#include <braid/engine.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common.h"

static double mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static br_graph *load_graph(const char *path) {
  br_error err;
  br_graph *g = br_graph_load_file(path, &err);
  if (!g) {
    char buf[2048];
    fprintf(stderr, "%s\n", br_error_format(&err, buf, sizeof buf));
  }
  return g;
}

int br_cli_validate(int argc, char **argv) {
  if (br_cli_wants_help(argc, argv) || argc < 2) {
    fprintf(argc < 2 && !br_cli_wants_help(argc, argv) ? stderr : stdout,
            "usage: braid validate GRAPH...\n\n"
            "Checks graph files: JSON syntax, node types, parameters and wires.\n"
            "Errors are printed as FILE:LINE:COLUMN: message. Exit 0 when all are valid.\n");
    return br_cli_wants_help(argc, argv) ? BR_EXIT_OK : BR_EXIT_USAGE;
  }
  int bad = 0;
  for (int i = 1; i < argc; i++) {
    br_graph *g = load_graph(argv[i]);
    if (!g) {
      bad++;
      continue;
    }
    printf("%s: ok (graph '%s', %zu nodes)\n", argv[i], br_graph_name(g), br_graph_node_count(g));
    br_graph_free(g);
  }
  return bad ? BR_EXIT_USAGE : BR_EXIT_OK;
}

static void run_usage(FILE *out) {
  fprintf(out,
          "usage: braid run GRAPH [--set NAME=VALUE]... [--store PATH] [--node NODE]\n"
          "                 [--new] [--json]\n\n"
          "Runs a graph on this machine, in one process, until nothing can move.\n"
          "The first run submits one task (to the graph's \"start\" node, with its\n"
          "\"start\" attributes and --set on top); running it again on the same store\n"
          "resumes the unfinished work instead.\n\n"
          "  --set NAME=VALUE  an attribute of the starting task (VALUE is JSON when it\n"
          "                    parses: 12, [1,2], true; otherwise a string). graph_dir\n"
          "                    (the graph file's folder) is set unless given\n"
          "  --store PATH      the store (default: ./GRAPHNAME.braid.db)\n"
          "  --node NODE       where the task starts (default: the graph's start node)\n"
          "  --new             submit a new task even if the store has a finished run\n"
          "  --json            print the summary as JSON\n\n"
          "exit status: 0 all finished, 1 some failed, 2 usage or graph error, 130 cancelled\n");
}

typedef struct err_list {
  int shown;
} err_list;

static int print_error_task(void *ud, br_task_info *t) {
  err_list *l = ud;
  if (l->shown++ < 20)
    fprintf(stderr, "  task %lld (%s) at node '%s': %s\n", (long long)t->id, t->name ? t->name : "",
            t->node, t->error ? t->error : "failed");
  br_task_info_free(t);
  free(t);
  return 0;
}

int br_cli_run(int argc, char **argv) {
  static const struct option opts[] = {
      {"set", required_argument, NULL, 's'},  {"store", required_argument, NULL, 'S'},
      {"node", required_argument, NULL, 'n'}, {"new", no_argument, NULL, 'N'},
      {"json", no_argument, NULL, 'j'},       {"help", no_argument, NULL, 'h'},
      {"slots", required_argument, NULL, 'l'}, {NULL, 0, NULL, 0},
  };
  json_t *sets = json_object();
  const char *store_path = NULL, *node = NULL;
  int fresh = 0, as_json = 0, c;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    switch (c) {
    case 's':
      if (br_cli_set_kv(sets, optarg)) {
        json_decref(sets);
        return BR_EXIT_USAGE;
      }
      break;
    case 'S': store_path = optarg; break;
    case 'n': node = optarg; break;
    case 'N': fresh = 1; break;
    case 'j': as_json = 1; break;
    case 'l': break; /* slots: used by executors */
    case 'h':
      run_usage(stdout);
      json_decref(sets);
      return BR_EXIT_OK;
    default:
      run_usage(stderr);
      json_decref(sets);
      return BR_EXIT_USAGE;
    }
  }
  if (optind != argc - 1) {
    run_usage(stderr);
    json_decref(sets);
    return BR_EXIT_USAGE;
  }
  const char *graph_path = argv[optind];
  br_graph *g = load_graph(graph_path);
  if (!g) {
    json_decref(sets);
    return BR_EXIT_USAGE;
  }
  char default_store[1024];
  if (!store_path) {
    snprintf(default_store, sizeof default_store, "%s.braid.db", br_graph_name(g));
    store_path = default_store;
  }
  if (br_cli_mkdirs_for(store_path)) {
    br_cli_errorf("cannot create the folder for %s", store_path);
    br_graph_free(g);
    json_decref(sets);
    return BR_EXIT_FAILED;
  }
  const char *start = node ? node : br_graph_start_node(g);
  if (!start || !br_graph_find_node(g, start)) {
    br_cli_errorf("%s: no node '%s' to start at", graph_path, start ? start : "");
    br_graph_free(g);
    json_decref(sets);
    return BR_EXIT_USAGE;
  }
  char *start_name = strdup(start);
  json_t *attrs = json_object();
  json_object_update(attrs, br_graph_start_attrs(g));
  json_object_update(attrs, sets);
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

  br_store *store = br_cli_open_store(store_path, 0);
  br_error err;
  br_engine *e = store ? br_engine_open(store, NULL, &err) : NULL;
  int64_t gid = 0;
  int rc = BR_EXIT_OK;
  char buf[2048];
  if (store && !e) {
    br_cli_errorf("%s", br_error_format(&err, buf, sizeof buf));
    rc = BR_EXIT_FAILED;
  } else if (e && br_engine_add_graph(e, g, &gid, &err)) {
    br_cli_errorf("%s", br_error_format(&err, buf, sizeof buf));
    rc = BR_EXIT_FAILED;
  } else if (!store) {
    rc = BR_EXIT_FAILED;
    br_graph_free(g);
  }
  g = NULL; /* the engine owns it */
  double t0 = mono();
  if (rc == BR_EXIT_OK) {
    br_engine_stats st;
    br_engine_get_stats(e, &st);
    int64_t counts[BR_TASK_NSTATES];
    br_task_filter f = BR_TASK_FILTER_ALL;
    br_store_task_count(store, &f, counts, &err);
    int64_t total = 0;
    for (int i = 0; i < BR_TASK_NSTATES; i++) total += counts[i];
    if (st.tasks_in_memory > 0 && !fresh) {
      if (!as_json)
        fprintf(stderr, "braid: resuming %zu unfinished tasks in %s\n", st.tasks_in_memory, store_path);
    } else if (total > 0 && !fresh) {
      if (!as_json)
        fprintf(stderr, "braid: %s already holds a finished run (use --new to run again)\n", store_path);
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
  if (rc == BR_EXIT_OK && br_engine_run(e, &err)) {
    br_cli_errorf("%s", br_error_format(&err, buf, sizeof buf));
    rc = BR_EXIT_FAILED;
  }
  if (rc == BR_EXIT_OK) {
    double secs = mono() - t0;
    int64_t counts[BR_TASK_NSTATES];
    br_task_filter f = BR_TASK_FILTER_ALL;
    br_store_task_count(store, &f, counts, &err);
    int64_t total = 0;
    for (int i = 0; i < BR_TASK_NSTATES; i++) total += counts[i];
    if (as_json) {
      json_t *j = json_object(), *by = json_object();
      for (int i = 0; i < BR_TASK_NSTATES; i++)
        json_object_set_new(by, br_task_state_name((br_task_state)i), json_integer(counts[i]));
      json_object_set_new(j, "store", json_string(store_path));
      json_object_set_new(j, "seconds", json_real(secs));
      json_object_set_new(j, "tasks", json_integer(total));
      json_object_set_new(j, "states", by);
      br_cli_print_json(j);
      json_decref(j);
    } else {
      fprintf(stderr, "braid: finished in %.2f s: %lld tasks:", secs, (long long)total);
      for (int i = 0; i < BR_TASK_NSTATES; i++)
        if (counts[i]) fprintf(stderr, " %s %lld", br_task_state_name((br_task_state)i), (long long)counts[i]);
      fputc('\n', stderr);
    }
    if (counts[BR_TASK_ERROR]) {
      err_list l = {0};
      f.state = BR_TASK_ERROR;
      fprintf(stderr, "braid: %lld tasks failed:\n", (long long)counts[BR_TASK_ERROR]);
      br_store_task_query(store, &f, print_error_task, &l, &err);
      fprintf(stderr, "  (braid tasks --state error --store %s lists them all)\n", store_path);
      rc = BR_EXIT_FAILED;
    }
  }
  free(start_name);
  json_decref(attrs);
  br_engine_free(e);
  br_store_close(store);
  return rc;
}
