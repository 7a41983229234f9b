/* Helpers shared by the subcommands: k=v parsing, store discovery, printing. */
#include "common.h"

#include <braid/runtime.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

json_t *br_cli_parse_value(const char *v) {
  json_error_t jerr;
  json_t *j = json_loads(v, JSON_DECODE_ANY, &jerr);
  return j ? j : json_string(v);
}

int br_cli_set_kv(json_t *obj, const char *kv) {
  /* as braid ctl reads them: NAME:=JSON is JSON or an error (it made an
   * attribute named "NAME:") */
  char *name = NULL;
  json_t *value = NULL;
  br_error err = {0};
  if (br_runtime_parse_assign(kv, &name, &value, &err) != BR_OK) {
    br_cli_errorf("--set: %s (NAME=VALUE, or NAME:=JSON)", err.msg);
    return -1;
  }
  json_object_set_new(obj, name, value);
  free(name);
  return 0;
}

int br_cli_mkdirs_for(const char *path) {
  char buf[4096];
  snprintf(buf, sizeof buf, "%s", path);
  for (char *p = buf + 1; *p; p++) {
    if (*p != '/') continue;
    *p = '\0';
    if (mkdir(buf, 0755) != 0 && errno != EEXIST) return -1;
    *p = '/';
  }
  return 0;
}

char *br_cli_find_store(const char *given) {
  if (given) return strdup(given);
  const char *env = getenv("BRAID_STORE");
  if (env && *env) return strdup(env);
  DIR *d = opendir(".");
  char *found = NULL;
  int n = 0;
  struct dirent *de;
  while (d && (de = readdir(d))) {
    size_t len = strlen(de->d_name);
    if (len > 9 && strcmp(de->d_name + len - 9, ".braid.db") == 0) {
      n++;
      free(found);
      found = strdup(de->d_name);
    }
  }
  if (d) closedir(d);
  if (n == 1) return found;
  free(found);
  if (n == 0) br_cli_errorf("no store: give --store PATH or set BRAID_STORE (no *.braid.db here)");
  else br_cli_errorf("several *.braid.db here: say which with --store PATH");
  return NULL;
}

int br_cli_check_store(const char *path) {
  if (strstr(path, "://")) return 0; /* a database server's URI is its client's to read */
  /* SQLite takes "" and ":memory:" for private databases that vanish when
   * braid ends: a run would redo all of its work every time */
  size_t file = strcspn(path, "?");
  if (file == 0 || (file == 8 && strncmp(path, ":memory:", 8) == 0)) {
    br_cli_errorf("--store '%s': a store is a file, where a run's work is kept to be resumed "
                  "and read (%s is not one); give a path", path,
                  file ? "SQLite's in-memory database" : "an empty path");
    return -1;
  }
  const char *q = strchr(path, '?');
  if (!q) return 0;
  /* the options of a SQLite store: PATH?sync=off|normal|full */
  for (const char *o = q + 1; *o;) {
    size_t n = strcspn(o, "&");
    if (!(n == 8 && strncmp(o, "sync=off", 8) == 0) &&
        !(n == 11 && strncmp(o, "sync=normal", 11) == 0) &&
        !(n == 9 && strncmp(o, "sync=full", 9) == 0)) {
      br_cli_errorf("store %s: unknown option '%.*s' (a store is PATH, or "
                    "PATH?sync=off|normal|full)", path, (int)n, o);
      return -1;
    }
    o += n + (o[n] == '&');
  }
  return 0;
}

char *br_cli_shell_quote(const char *s) {
  bool plain = *s != '\0';
  for (const char *p = s; *p && plain; p++)
    plain = isalnum((unsigned char)*p) || strchr("_./:@%+=,-", *p);
  if (plain) return strdup(s);
  size_t n = 2;
  for (const char *p = s; *p; p++) n += *p == '\'' ? 4 : 1;
  char *out = malloc(n + 1), *o = out;
  if (!out) return NULL;
  *o++ = '\'';
  for (const char *p = s; *p; p++) {
    if (*p == '\'') {
      memcpy(o, "'\\''", 4);
      o += 4;
    } else {
      *o++ = *p;
    }
  }
  *o++ = '\'';
  *o = '\0';
  return out;
}

br_store *br_cli_open_store(const char *path, int flags, int *exit_code) {
  br_error err = {0};
  br_store *s = NULL;
  struct stat sb;
  *exit_code = BR_EXIT_USAGE; /* a store that is not there, or no store: the wrong path */
  if (br_cli_check_store(path)) return NULL;
  if ((flags & BR_STORE_READONLY) && !strstr(path, "://")) {
    /* the file is the path without its options */
    char file[4096];
    snprintf(file, sizeof file, "%.*s", (int)strcspn(path, "?"), path);
    if (stat(file, &sb) != 0) {
      br_cli_errorf("no store at %s", file);
      return NULL;
    }
  }
  int rc = br_store_open(path, flags, &s, &err);
  if (rc != BR_OK) {
    char buf[1200];
    br_cli_errorf("%s", br_error_format(&err, buf, sizeof buf));
    if (rc != BR_EINVAL) *exit_code = BR_EXIT_FAILED; /* in use, I/O, a server down */
    return NULL;
  }
  *exit_code = BR_EXIT_OK;
  return s;
}

json_t *br_cli_task_json(const br_task_info *t) { return br_task_info_json(t, true); }

void br_cli_print_json(json_t *j) {
  char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
  if (s) puts(s);
  free(s);
}

void br_cli_client_host(const char *listen, char *host, size_t size) {
  snprintf(host, size, "%s", listen);
  char *colon = strrchr(host, ':');
  if (colon) *colon = 0;
  if (strcmp(host, "0.0.0.0") == 0 || !*host) snprintf(host, size, "127.0.0.1");
}

char *br_cli_store_side(const char *store, const char *suffix) {
  char base[4096];
  snprintf(base, sizeof base, "%s", store);
  char *q = strchr(base, '?'); /* options of the store URI */
  if (q) *q = '\0';
  size_t len = strlen(base);
  if (len > 3 && strcmp(base + len - 3, ".db") == 0) base[len - 3] = '\0';
  char *out = NULL;
  if (asprintf(&out, "%s%s", base, suffix) < 0) return NULL;
  return out;
}

const char br_cli_slurm_help[] =
    "  --slurm-listen HOST:PORT  where the Slurm jobs report back (default 0.0.0.0:0:\n"
    "                    every interface, a free port; a fixed port lets running jobs\n"
    "                    report to braid after it restarts)\n"
    "  --slurm-url URL   how the compute nodes reach it (default http://HOSTNAME:PORT)\n"
    "  --slurm-partition P, --slurm-account A, --slurm-qos Q, --slurm-time T\n"
    "                    defaults for every job (a node's \"slurm\" parameter wins)\n"
    "  --slurm-arg ARG   an extra sbatch option for every job, repeatable\n"
    "  --slurm-opt K=V   any other slurm executor option (reconcile=S, max_array=N,\n"
    "                    output=PATTERN, lost_after=S, braid=PATH; see docs/slurm.md)\n";

/* The slurm executor's options a --slurm-opt may set (src/exec/slurm.c) and
 * what each takes: 't' text, 'T' a time above 0, 'z' a time of 0 or more,
 * 'n' a whole number of at least 1, 'b' true or false. */
static const struct {
  const char *name;
  char kind;
} slurm_opts[] = {
    {"listen", 't'},     {"url", 't'},       {"partition", 't'},  {"account", 't'},
    {"qos", 't'},        {"time", 't'},      {"braid", 't'},      {"output", 't'},
    {"state_dir", 't'},  {"sbatch", 't'},    {"squeue", 't'},     {"scancel", 't'},
    {"sacct", 't'},      {"reconcile", 'T'}, {"idle_exit", 'T'},  {"poll_wait", 'T'},
    {"lost_after", 'T'}, {"batch_wait", 'z'}, {"recover", 'z'},   {"max_array", 'n'},
    {"max_jobs", 'n'},   {"cancel_on_stop", 'b'},
};

/* --slurm-opt K=V: an option the executor has, with a value it takes
 * (unknown ones and 'reconcile=abc' were ignored without a word). */
static int slurm_opt(const char *kv, json_t *opts) {
  const char *eq = strchr(kv, '=');
  size_t i, n = sizeof slurm_opts / sizeof slurm_opts[0];
  for (i = 0; eq && i < n; i++)
    if (strlen(slurm_opts[i].name) == (size_t)(eq - kv) &&
        strncmp(kv, slurm_opts[i].name, (size_t)(eq - kv)) == 0)
      break;
  if (!eq || i == n) {
    char names[512] = "";
    for (size_t j = 0; j < n; j++)
      snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", j ? ", " : "",
               slurm_opts[j].name);
    br_cli_errorf("--slurm-opt: %s '%.*s' (K=V, K one of %s)",
                  eq ? "no option" : "expected K=V, got", eq ? (int)(eq - kv) : (int)strlen(kv),
                  kv, names);
    return -1;
  }
  const char *name = slurm_opts[i].name, *v = eq + 1;
  json_t *value = NULL;
  long long whole;
  double secs;
  switch (slurm_opts[i].kind) {
  case 't':
    if (strcmp(name, "listen") == 0 && br_cli_listen_option("--slurm-opt listen", v)) return -1;
    if (*v) value = json_string(v);
    break;
  case 'T':
  case 'z':
    secs = br_cli_parse_duration(v);
    if (secs > 0 || (secs == 0 && slurm_opts[i].kind == 'z')) value = json_real(secs);
    break;
  case 'n':
    if (br_cli_parse_int(v, 1, INT32_MAX, &whole) == 0) value = json_integer(whole);
    break;
  case 'b':
    if (strcmp(v, "true") == 0 || strcmp(v, "false") == 0) value = json_boolean(*v == 't');
    break;
  }
  if (!value) {
    static const char *const wants[] = {"text", "a time above 0 (10, 30s, 2m)",
                                        "a time (0, 10, 30s, 2m)", "a whole number of at least 1",
                                        "true or false"};
    br_cli_errorf("--slurm-opt %s: '%s' is not %s", name, v,
                  wants[strchr("tTznb", slurm_opts[i].kind) - "tTznb"]);
    return -1;
  }
  json_object_set_new(opts, name, value);
  return 0;
}

int br_cli_slurm_option(int c, const char *arg, json_t *opts) {
  static const char *const keys[] = {"listen", "url", "partition", "account", "qos", "time"};
  if (c < BR_CLI_SLURM_BASE || c > BR_CLI_SLURM_BASE + 7) return 0;
  int k = c - BR_CLI_SLURM_BASE;
  if (k == 0 && br_cli_listen_option("--slurm-listen", arg)) return -1;
  if (k < 6) {
    json_object_set_new(opts, keys[k], json_string(arg));
  } else if (k == 6) {
    if (!json_object_get(opts, "args")) json_object_set_new(opts, "args", json_array());
    json_array_append_new(json_object_get(opts, "args"), json_string(arg));
  } else if (slurm_opt(arg, opts)) {
    return -1;
  }
  return 1;
}

static void print_line(void *ud, const char *line) {
  (void)ud;
  fprintf(stderr, "%s\n", line);
}

br_graph *br_cli_load_graph(const char *path) {
  br_error err = {0};
  br_graph *g = br_graph_load_file(path, &err);
  if (!g) {
    char buf[2048];
    fprintf(stderr, "%s\n", br_error_format(&err, buf, sizeof buf));
  } else {
    br_graph_warnings(g, print_line, NULL);
  }
  return g;
}

int br_cli_parse_int(const char *s, long long lo, long long hi, long long *out) {
  char *end;
  errno = 0;
  long long v = s ? strtoll(s, &end, 10) : 0;
  if (!s || errno || end == s || *end || isspace((unsigned char)*s) || v < lo || v > hi) return -1;
  *out = v;
  return 0;
}

int br_cli_parse_id(const char *s, const char *what, long long *id) {
  if (br_cli_parse_int(s, 1, INT64_MAX, id) == 0) return 0;
  long long v;
  if (br_cli_parse_int(s, INT64_MIN, 0, &v) == 0)
    br_cli_errorf("'%s' is not %s: ids are positive (1 and up)", s, what);
  else
    br_cli_errorf("'%s' is not %s: ids are whole numbers from 1 to %lld", s, what,
                  (long long)INT64_MAX);
  return -1;
}

double br_cli_parse_duration(const char *s) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || !(v >= 0) || isspace((unsigned char)*s)) return -1; /* also NaN */
  double mul = 1;
  if (*end == 's') end++;
  else if (*end == 'm') mul = 60, end++;
  else if (*end == 'h') mul = 3600, end++;
  else if (*end == 'd') mul = 86400, end++;
  return *end || !(v * mul < 1e15) ? -1 : v * mul;
}

double br_cli_time_option(const char *opt, const char *v) {
  double d = br_cli_parse_duration(v);
  if (d > 0) return d;
  br_cli_errorf("%s: '%s' is not a time of more than 0 (10, 2.5, 30s, 2m)", opt, v);
  return -1;
}

int br_cli_listen_option(const char *opt, const char *v) {
  const char *colon = strrchr(v, ':');
  size_t hl = colon ? (size_t)(colon - v) : 0;
  long long port;
  const char *why = NULL;
  if (!colon)
    why = "no :PORT";
  else if (br_cli_parse_int(colon + 1, 0, 65535, &port) || !isdigit((unsigned char)colon[1]))
    why = "the port is not a number from 0 to 65535";
  else if (memchr(v, ':', hl) && !(v[0] == '[' && hl >= 2 && v[hl - 1] == ']'))
    why = "an IPv6 address goes in [ ]";
  if (!why) return 0;
  br_cli_errorf("%s: '%s' is not HOST:PORT: %s (127.0.0.1:7870; 0.0.0.0:7870 for every "
                "interface; [::1]:7870; port 0 picks a free one)", opt, v, why);
  return -1;
}

int64_t br_cli_parse_size(const char *s) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || !(v >= 0)) return -1; /* also NaN */
  double mul = 1;
  if (*end == 'k' || *end == 'K') mul = 1024, end++;
  else if (*end == 'm' || *end == 'M') mul = 1024.0 * 1024, end++;
  else if (*end == 'g' || *end == 'G') mul = 1024.0 * 1024 * 1024, end++;
  if (*end == 'B' || *end == 'b') end++;
  if (*end || !(v * mul < 9e18)) return -1; /* also inf: no int64_t holds it */
  return (int64_t)(v * mul);
}

int br_cli_parse_cache_size(const char *s, int64_t *out) {
  int64_t v = br_cli_parse_size(s);
  if (v < 0) return -1;
  *out = v ? v : -1; /* 0 on the command line is none: br_depot_opts.cache's -1 */
  return 0;
}

volatile sig_atomic_t br_cli_stopping;

/* libuv's own handlers, which ours call after setting br_cli_stopping:
 * libuv tells the loop through a pipe, and a loop busy waiting elsewhere
 * (a store's commit waiting for a lock) reads it only when that ends. */
static struct sigaction uv_handler[2];

static void stop_handler(int signum, siginfo_t *si, void *uc) {
  br_cli_stopping = 1;
  const struct sigaction *h = &uv_handler[signum == SIGINT ? 0 : 1];
  if (h->sa_flags & SA_SIGINFO) h->sa_sigaction(signum, si, uc);
  else if (h->sa_handler != SIG_DFL && h->sa_handler != SIG_IGN) h->sa_handler(signum);
}

void br_cli_catch_stop(uv_loop_t *loop, uv_signal_t stop[2], uv_signal_cb cb, void *data,
                       br_store *store) {
  static const int signums[2] = {SIGINT, SIGTERM};
  br_cli_stopping = 0;
  if (store) br_store_set_stop(store, &br_cli_stopping);
  for (int i = 0; i < 2; i++) {
    uv_signal_init(loop, &stop[i]);
    stop[i].data = data;
    uv_signal_start(&stop[i], cb, signums[i]);
    uv_unref((uv_handle_t *)&stop[i]);
    struct sigaction cur;
    if (sigaction(signums[i], NULL, &cur) != 0 ||
        ((cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == stop_handler))
      continue; /* ours already, in front of libuv's */
    uv_handler[i] = cur;
    struct sigaction ours = cur;
    ours.sa_flags |= SA_SIGINFO;
    ours.sa_sigaction = stop_handler;
    sigaction(signums[i], &ours, NULL);
  }
}

static void stop_closed(uv_handle_t *h) { (void)h; }

void br_cli_release_stop(uv_signal_t stop[2]) {
  uv_close((uv_handle_t *)&stop[0], stop_closed);
  uv_close((uv_handle_t *)&stop[1], stop_closed);
}
