/* braid: the command. Dispatches to one subcommand per file (git style);
 * add a command by adding one line to the table below. */
#include "cli.h"

#include <braid/error.h>

#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static int cmd_version(int argc, char **argv);
static int cmd_help(int argc, char **argv);

static const br_cli_command commands[] = {
    {"run", br_cli_run, "run a graph on this machine (embedded: SQLite, local slots)"},
    {"validate", br_cli_validate, "check graph files"},
    {"status", br_cli_status, "counts of tasks by node and state in a store"},
    {"tasks", br_cli_tasks, "list tasks (filter by node, state, parent)"},
    {"show", br_cli_show, "everything about one task (a store's, or a server's)"},
    {"log", br_cli_log, "the log of a task's job (-f follows it on a server)"},
    {"movie", br_cli_movie, "make a movie or an N-up mosaic from image sequences (ffmpeg)"},
    {"help", cmd_help, "show the commands, or `braid help COMMAND [SUBCOMMAND]`"},
    {"version", cmd_version, "print braid's version"},
    {"depot", br_cli_depot, "serve content-addressed snapshots (push/pull target)"},
    {"push", br_cli_push, "check a directory in to a depot as a new snapshot version"},
    {"pull", br_cli_pull, "check a snapshot out of a depot into a directory"},
    {"submit", br_cli_submit, "submit a graph to a braid server"},
    {"ls", br_cli_ls, "list a server's tasks (filters, pages)"},
    {"cancel", br_cli_cancel, "cancel tasks on a server"},
    {"retry", br_cli_retry, "run tasks on a server again"},
    {"pause", br_cli_pause, "pause tasks on a server"},
    {"resume", br_cli_resume, "resume paused tasks on a server"},
    {"workers", br_cli_workers, "a server's agents; drain, undrain, tags"},
    {"server", br_cli_server, "run the farm server: the engine behind the HTTP API, for agents"},
    {"agent", br_cli_agent, "run work from a braid server on this machine (a farm agent)"},
    {"token", br_cli_token, "make, list and revoke the tokens of a braid server"},
    {"ctl", br_cli_ctl, "from inside a job: set attributes, spawn children, report progress"},
    {NULL, NULL, NULL},
};

int br_cli_wants_help(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--") == 0) break;
    if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) return 1;
  }
  return 0;
}

static bool json_usage; /* br_cli_json_usage */

void br_cli_json_usage(bool on) { json_usage = on; }

void br_cli_errorf(const char *fmt, ...) {
  char msg[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  fprintf(stderr, "braid: %s\n", msg);
  if (!json_usage) return;
  json_t *e = json_pack("{ss si ss ss si}", "event", "error", "code", BR_EINVAL, "kind",
                        "usage", "message", msg, "exit", BR_EXIT_USAGE);
  char *t = e ? json_dumps(e, JSON_COMPACT) : NULL;
  if (t) printf("%s\n", t), fflush(stdout);
  free(t);
  json_decref(e);
}

void br_cli_warn(void *ud, const char *msg) {
  (void)ud;
  fprintf(stderr, "braid: warning: %s\n", msg);
}

void br_cli_local_time(int64_t t, char *buf, size_t size) {
  time_t tt = (time_t)t;
  struct tm tm;
  strftime(buf, size, "%Y-%m-%d %H:%M:%S", localtime_r(&tt, &tm));
}

const char *br_cli_fit(const char *s, size_t width, char *buf, size_t size) {
  if (!s) return "";
  size_t n = strlen(s);
  if (n <= width || width < 3 || size < width + 1) return s;
  /* the start and the end, which is where names of a shot's many nodes or
   * tasks differ (render_shot010 ... render_shot020) */
  size_t head = (width - 1) / 2, tail = width - 1 - head;
  while (head > 0 && ((unsigned char)s[head] & 0xC0) == 0x80) head--; /* not inside a character */
  const char *end = s + n - tail;
  while (*end && ((unsigned char)*end & 0xC0) == 0x80) end++, tail--;
  memcpy(buf, s, head);
  buf[head] = '~';
  memcpy(buf + head + 1, end, tail + 1);
  return buf;
}

void br_cli_depot_log(void *ud, const char *msg) {
  (void)ud;
  char when[32];
  br_cli_local_time((int64_t)time(NULL), when, sizeof when);
  fprintf(stderr, "braid: depot: %s %s\n", when, msg);
}

static int cmd_version(int argc, char **argv) {
  if (br_cli_wants_help(argc, argv)) {
    printf("usage: braid version\n\nPrints braid's version.\n");
    return BR_EXIT_OK;
  }
  if (argc > 1) {
    br_cli_errorf("version: unexpected argument '%s'", argv[1]);
    return BR_EXIT_USAGE;
  }
  printf("braid 0.1.0\n");
  return BR_EXIT_OK;
}

static void usage(FILE *out) {
  fprintf(out,
          "usage: braid COMMAND [ARGS...]\n\n"
          "braid is a task-flow farm manager: tasks flow through a graph of nodes\n"
          "and run as jobs here, on a farm of agents, or through Slurm.\n\n"
          "commands:\n");
  for (const br_cli_command *c = commands; c->name; c++)
    fprintf(out, "  %-10s %s\n", c->name, c->summary);
  fprintf(out, "\n`braid COMMAND --help` describes one command.\n");
}

static const br_cli_command *find(const char *name) {
  for (const br_cli_command *c = commands; c->name; c++)
    if (strcmp(c->name, name) == 0) return c;
  return NULL;
}

/* braid help COMMAND [SUBCOMMAND...]: as COMMAND [SUBCOMMAND...] --help. */
static int cmd_help(int argc, char **argv) {
  if (argc > 1 && !br_cli_wants_help(argc, argv)) {
    const br_cli_command *c = find(argv[1]);
    if (!c) {
      br_cli_errorf("unknown command '%s'", argv[1]);
      return BR_EXIT_USAGE;
    }
    char *hargv[16];
    int n = 0;
    hargv[n++] = (char *)c->name;
    for (int i = 2; i < argc && n < 14; i++) hargv[n++] = argv[i];
    hargv[n++] = (char *)"--help";
    hargv[n] = NULL;
    return c->fn(n, hargv);
  }
  usage(stdout);
  return BR_EXIT_OK;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return BR_EXIT_USAGE;
  }
  if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
    usage(stdout);
    return BR_EXIT_OK;
  }
  if (strcmp(argv[1], "--version") == 0) return cmd_version(argc - 1, argv + 1);
  const br_cli_command *c = find(argv[1]);
  if (!c) {
    br_cli_errorf("unknown command '%s' (see `braid --help`)", argv[1]);
    return BR_EXIT_USAGE;
  }
  return c->fn(argc - 1, argv + 1);
}
