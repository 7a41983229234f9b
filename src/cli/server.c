/* braid server: the engine as a daemon behind the HTTP API, for a farm of
 * braid agents (see include/braid/server.h). */
#include <braid/server.h>
#include <braid/http.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

static void server_usage(FILE *out) {
  fprintf(out,
          "usage: braid server [--listen HOST:PORT] [--store PATH] [--init]\n"
          "                    [--limit NAME=N]... [--tls-cert FILE --tls-key FILE] [options]\n\n"
          "Runs the farm server: the engine and its store, the HTTP API (docs/openapi.json)\n"
          "for the command line, the web UI (open http://HOST:PORT/ in a browser), and\n"
          "the endpoint braid agents take work from. It listens on loopback unless told\n"
          "otherwise.\n\n"
          "  --listen HOST:PORT  where to listen (default 127.0.0.1:7870; 0.0.0.0:7870 for\n"
          "                      every interface; port 0 picks a free one)\n"
          "  --store PATH        the store (default " BR_CLI_SERVER_STORE
          " in this folder); beside\n"
          "                      it, named after it without .db: .tokens, .admin-token\n"
          "                      (made when .tokens holds no admin token: on first start),\n"
          "                      .logs/ (job logs), .farm.json (worker settings, limits,\n"
          "                      group names); for a database URI they are here, named\n"
          "                      farm.braid.*\n"
          "  --init              make the store if it is not there: a new farm (harmless\n"
          "                      when it is). Without it a store that is not there (no\n"
          "                      file, a database without braid's tables) is an error, so\n"
          "                      a mistyped --store never starts an empty farm\n"
          "  --token-file FILE   the token file (default beside the store)\n"
          "  --limit NAME=N      a farm-wide limit: at most N invocations that take NAME at\n"
          "                      once (a node's \"limits\": [\"NAME\"]), e.g. houdini=5; for\n"
          "                      this run (PUT /api/v1/limits/NAME sets one that is kept)\n"
          "  --tls-cert FILE     serve HTTPS with this certificate (PEM) ...\n"
          "  --tls-key FILE      ... and key (PEM)\n"
          "  --threads N         HTTP threads (default 2)\n"
          "  --poll-wait TIME    how long an agent's poll waits for work (default 15; 30s, 2m)\n"
          "  --lost-after TIME   an agent not heard from this long is lost and its jobs run\n"
          "                      elsewhere (default 30): from its last poll or report, the\n"
          "                      end of its waiting poll, or when that poll's connection\n"
          "                      closed (a killed agent: TIME after its death)\n"
          "  --avoid-after N     a submission's jobs failing N times on one agent avoid it\n"
          "                      (default 3)\n"
          "  --url-file FILE     write the server's URL there once it listens\n"
          "  --depot-root DIR    also serve a transfer depot kept in DIR, on the same port\n"
          "                      and tokens (braid push/pull depot://HOST:PORT/NAME): any\n"
          "                      token may pull, user and admin tokens may push\n"
          "  --depot-cache SIZE  packs of small files the depot keeps in memory for\n"
          "                      pulls (default 512M; 0 turns it off)\n"
          "  --quiet             print nothing but errors\n"
          "  --executor NAME     agent (default: braid agents take the work) or slurm\n"
          "                      (every job a Slurm job; see docs/slurm.md); with slurm:\n"
          "%s\n"
          "Tokens: every request needs one (braid token create --role agent|user|admin).\n"
          "SIGINT or SIGTERM stops the server; agents keep running their jobs and report\n"
          "them when it comes back.\n",
          br_cli_slurm_help);
}

static uv_signal_t stop_signals[2];
static br_server *the_server;

static void on_signal(uv_signal_t *h, int signum) {
  (void)h;
  (void)signum;
  br_server_stop(the_server);
}

/* The first line of msg (libpq's run on over several), in buf. */
static const char *first_line(const char *msg, char *buf, size_t size) {
  snprintf(buf, size, "%s", msg);
  buf[strcspn(buf, "\n")] = '\0';
  return buf;
}

static bool has_admin(br_auth *auth) {
  json_t *all = br_auth_list(auth), *t;
  size_t i;
  bool found = false;
  json_array_foreach(all, i, t) {
    const char *role = json_string_value(json_object_get(t, "role"));
    found = found || (role && strcmp(role, "admin") == 0);
  }
  json_decref(all);
  return found;
}

/* First start: someone must be able to get in. So must an admin when the
 * token file holds no admin token (agent tokens made before the first
 * start, or every admin token revoked): a farm nobody can manage. Made
 * once the server is open, so that one refused (its store is in use) makes
 * no token and says nothing of one; the server reads its token file again
 * when it changes. */
static int first_admin(const char *tokens, const char *admin, const char *store) {
  br_error err;
  br_auth *auth = NULL;
  if (br_auth_open(tokens, &auth, &err)) {
    br_cli_errorf("%s", err.msg);
    return -1;
  }
  int rc = 0;
  char *tok, id[17];
  size_t others = br_auth_count(auth);
  if (has_admin(auth)) {
    /* not the first start */
  } else if (br_auth_create(auth, BR_ROLE_ADMIN, "first admin", &tok, id, &err)) {
    br_cli_errorf("%s", err.msg);
    rc = -1;
  } else {
    int fd = open(admin, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int ok = fd >= 0 && dprintf(fd, "%s\n", tok) > 0 && fsync(fd) == 0;
    if (fd >= 0) close(fd);
    free(tok);
    if (!ok) {
      br_cli_errorf("cannot write the admin token to %s: %s", admin, strerror(errno));
      rc = -1;
    } else {
      if (others)
        fprintf(stderr, "braid: the token file %s holds no admin token: ", tokens);
      else
        fprintf(stderr, "braid: first start: ");
      fprintf(stderr, "an admin token is in %s (mode 0600); make others with\n"
                      "       braid token create --role agent|user|admin --store %s\n", admin,
              store);
    }
  }
  br_auth_close(auth);
  return rc;
}

/* Whether the store is there, or, without --init, the error that says it
 * is not (a mistyped --store, or the default store looked for in another
 * folder, made a new empty farm). Other errors are the server's to tell. */
static bool store_there(const char *store, bool is_uri) {
  br_store *st = NULL;
  br_error err;
  int rc = br_store_open(store, BR_STORE_READONLY | BR_STORE_EXISTING, &st, &err);
  br_store_close(st);
  if (rc != BR_ENOTFOUND) return true;
  char cwd[PATH_MAX] = "";
  bool rel = !is_uri && store[0] != '/' && getcwd(cwd, sizeof cwd); /* the default is */
  if (is_uri) /* the store's words: the URI may hold a password */
    br_cli_errorf("no farm store: %s; to start a new farm there, give --init (or --store "
                  "the URI of your farm)", err.msg);
  else
    br_cli_errorf("no farm store at %.*s%s%s%s: to start a new farm there, give --init (or "
                  "--store the path of your farm)", (int)strcspn(store, "?"), store,
                  rel ? " (in " : "", cwd, rel ? ")" : "");
  return false;
}

/* One life of the server: opens it, serves until it is stopped or its
 * store is lost, closes it. *lost: the connection to the database went
 * (it restarted, the network broke), so the engine stopped as it would for
 * a restart; *port is where it listened. */
static int serve(br_server_opts *so, const char *store, const char *admin, const char *url_file,
                 int quiet, bool again, int *port, bool *lost) {
  br_server *s;
  br_error err;
  char buf[1400];
  if (br_server_open(so, &s, &err)) {
    br_cli_errorf("%s", br_error_format(&err, buf, sizeof buf));
    return BR_EXIT_FAILED;
  }
  if (!again && first_admin(so->token_file, admin, store)) { /* before the URL file is written */
    br_server_close(s);
    return BR_EXIT_FAILED;
  }
  the_server = s;
  signal(SIGPIPE, SIG_IGN);
  uv_loop_t *loop = br_engine_loop(br_server_engine(s));
  br_cli_catch_stop(loop, stop_signals, on_signal, NULL, br_engine_store(br_server_engine(s)));
  char url[512], host[300];
  br_cli_client_host(so->listen, host, sizeof host);
  *port = br_server_port(s);
  snprintf(url, sizeof url, "%s://%s:%d", so->tls_cert ? "https" : "http", host, *port);
  if (url_file) {
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", url_file);
    FILE *f = fopen(tmp, "w");
    if (!f || fprintf(f, "%s\n", url) < 0 || fclose(f) != 0 || rename(tmp, url_file) != 0)
      br_cli_errorf("cannot write %s", url_file);
  }
  if (!quiet)
    fprintf(stderr, "braid: serving %s%s on %s (the web UI: %s/)\n", again ? "again " : "", store,
            url, url);
  if (!quiet && so->depot_root)
    fprintf(stderr, "braid: and the depot %s: braid push DIR %s%s/NAME\n", so->depot_root,
            so->tls_cert ? "depots:" : "depot:", strchr(url, ':') + 1);
  int rc = br_server_run(s, &err) ? BR_EXIT_FAILED : BR_EXIT_OK;
  *lost = rc && br_store_lost(br_engine_store(br_server_engine(s)));
  if (*lost)
    fprintf(stderr,
            "braid: lost the connection to the store (%s): stopping as a restart would (agents "
            "keep their jobs, nothing committed is lost), then waiting for the database\n",
            first_line(err.msg, buf, sizeof buf));
  else if (rc && br_cli_stopping) /* a write waiting for a lock gave way to the stop */
    fprintf(stderr, "braid: %s\n", first_line(err.msg, buf, sizeof buf));
  else if (rc)
    br_cli_errorf("%s", br_error_format(&err, buf, sizeof buf));
  br_cli_release_stop(stop_signals);
  br_server_close(s);
  if (!quiet) fprintf(stderr, "braid: server stopped\n");
  return rc && br_cli_stopping && !*lost ? BR_EXIT_OK : rc;
}

static void on_stop_signal(int signum) {
  (void)signum;
  br_cli_stopping = 1;
}

/* Waits for the database to take braid's connections again: tries at once,
 * then after a pause of 1s doubling to 30s, a line each. False when SIGINT
 * or SIGTERM stopped the wait (the server is closed: nothing to undo). */
static bool wait_for_store(const char *uri) {
  struct sigaction sa, old_int, old_term;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_stop_signal; /* no SA_RESTART: the signal ends the nap */
  sigemptyset(&sa.sa_mask);
  br_cli_stopping = 0;
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);
  bool back = false;
  for (int ms = 1000; !br_cli_stopping; ms = ms < 15000 ? ms * 2 : 30000) {
    br_store *st;
    br_error err;
    if (br_store_open(uri, BR_STORE_READONLY, &st, &err) == BR_OK) {
      br_store_close(st);
      back = true;
      break;
    }
    char line[1100];
    fprintf(stderr, "braid: the store is not back (%s); trying again in %ds\n",
            first_line(err.msg, line, sizeof line), ms / 1000);
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = 0};
    nanosleep(&ts, NULL);
  }
  sigaction(SIGINT, &old_int, NULL);
  sigaction(SIGTERM, &old_term, NULL);
  if (back) fprintf(stderr, "braid: the store is back: starting again from it\n");
  return back;
}

int br_cli_server(int argc, char **argv) {
  static const struct option opts[] = {
      {"listen", required_argument, NULL, 'l'},     {"store", required_argument, NULL, 'S'},
      {"token-file", required_argument, NULL, 'T'}, {"limit", required_argument, NULL, 'L'},
      {"tls-cert", required_argument, NULL, 'c'},   {"tls-key", required_argument, NULL, 'k'},
      {"threads", required_argument, NULL, 't'},    {"poll-wait", required_argument, NULL, 'p'},
      {"lost-after", required_argument, NULL, 'o'}, {"avoid-after", required_argument, NULL, 'a'},
      {"url-file", required_argument, NULL, 'u'},   {"quiet", no_argument, NULL, 'q'},
      {"depot-root", required_argument, NULL, 'D'}, {"depot-cache", required_argument, NULL, 'C'},
      {"help", no_argument, NULL, 'h'},             {"executor", required_argument, NULL, 'E'},
      {"init", no_argument, NULL, 'i'},             BR_CLI_SLURM_OPTIONS,
      {NULL, 0, NULL, 0},
  };
  const char *executor = "agent";
  const char *listen = "127.0.0.1:7870", *store = BR_CLI_SERVER_STORE, *token_file = NULL,
             *cert = NULL, *key = NULL, *url_file = NULL, *depot_root = NULL;
  int threads = 0, quiet = 0, init = 0, c, sr, slurm_given = 0;
  int64_t depot_cache = 0;
  json_t *farm = json_object(), *limits = json_object();
  json_object_set(farm, "limits", limits);
  int rc = BR_EXIT_USAGE;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    double d;
    switch (c) {
    case 'l':
      if (br_cli_listen_option("--listen", optarg)) goto out;
      listen = optarg;
      break;
    case 'S': store = optarg; break;
    case 'T': token_file = optarg; break;
    case 'c': cert = optarg; break;
    case 'k': key = optarg; break;
    case 'u': url_file = optarg; break;
    case 'D': depot_root = optarg; break;
    case 'C':
      if (br_cli_parse_cache_size(optarg, &depot_cache)) {
        br_cli_errorf("--depot-cache wants a size like 512M (0: none)");
        goto out;
      }
      break;
    case 'q': quiet = 1; break;
    case 'i': init = 1; break;
    case 't':
      threads = atoi(optarg);
      if (threads < 1 || threads > 64) {
        br_cli_errorf("--threads needs 1-64");
        goto out;
      }
      break;
    case 'p':
    case 'o':
      if ((d = br_cli_time_option(c == 'p' ? "--poll-wait" : "--lost-after", optarg)) < 0) goto out;
      json_object_set_new(farm, c == 'p' ? "poll_wait" : "lost_after", json_real(d));
      break;
    case 'a': {
      char *end;
      long n = strtol(optarg, &end, 10);
      if (*end || n < 0) {
        br_cli_errorf("--avoid-after needs a number (0: never avoid)");
        goto out;
      }
      json_object_set_new(farm, "avoid_after", json_integer(n));
      break;
    }
    case 'L': {
      const char *eq = strchr(optarg, '=');
      char *end = NULL;
      long n = eq ? strtol(eq + 1, &end, 10) : -1;
      if (!eq || eq == optarg || !eq[1] || *end || n < 0) {
        br_cli_errorf("--limit wants NAME=N (N >= 0), got '%s'", optarg);
        goto out;
      }
      char *name = strndup(optarg, (size_t)(eq - optarg));
      json_object_set_new(limits, name, json_integer(n));
      free(name);
      break;
    }
    case 'h':
      server_usage(stdout);
      rc = BR_EXIT_OK;
      goto out;
    case 'E': executor = optarg; break;
    default:
      if ((sr = br_cli_slurm_option(c, optarg, farm)) > 0) {
        slurm_given = 1;
        break;
      }
      if (sr == 0) server_usage(stderr); /* else the option's error says it all */
      goto out;
    }
  }
  if (strcmp(executor, "agent") && strcmp(executor, "slurm")) {
    br_cli_errorf("--executor: '%s' is not one of agent, slurm", executor);
    goto out;
  }
  if (slurm_given && strcmp(executor, "slurm")) { /* they were ignored */
    br_cli_errorf("--slurm-... options need --executor slurm");
    goto out;
  }
  if (optind != argc) {
    server_usage(stderr);
    goto out;
  }
  if ((cert == NULL) != (key == NULL)) {
    br_cli_errorf("--tls-cert and --tls-key go together");
    goto out;
  }
  rc = BR_EXIT_FAILED;
  /* a file store has its companions beside it; a database server's (a URI)
   * are here, named farm.braid.* */
  int is_uri = strstr(store, "://") != NULL;
  const char *side = is_uri ? BR_CLI_SERVER_STORE : store;
  if (!init && !store_there(store, is_uri)) goto out;
  if (!is_uri && br_cli_mkdirs_for(store)) {
    br_cli_errorf("cannot create the folder for %s", store);
    goto out;
  }
  char *tokens = token_file ? strdup(token_file) : br_cli_store_side(side, ".tokens");
  char *admin = br_cli_store_side(side, ".admin-token");
  char *logs = br_cli_store_side(side, ".logs");
  char *settings = br_cli_store_side(side, ".farm.json");
  char uri[4200];
  snprintf(uri, sizeof uri, "%s%s", store, is_uri || strchr(store, '?') ? "" : "?sync=normal");
  char exe[PATH_MAX] = "";
  ssize_t en = readlink("/proc/self/exe", exe, sizeof exe - 1);
  exe[en > 0 ? en : 0] = '\0';
  char *slurm_state = br_cli_store_side(side, ".slurm");
  if (strcmp(executor, "slurm") == 0 && !json_object_get(farm, "state_dir"))
    json_object_set_new(farm, "state_dir", json_string(slurm_state));
  free(slurm_state);
  br_server_opts so = {.store = uri, .listen = listen, .tls_cert = cert, .tls_key = key,
                       .threads = threads, .token_file = tokens, .log_dir = logs,
                       .settings_file = settings, .farm = farm, .executor = executor,
                       .braid_exe = exe, .depot_root = depot_root,
                       .depot_cache = depot_cache, .warn = br_cli_warn,
                       .depot_log = br_cli_depot_log};
  char again_listen[400];
  for (int round = 0;; round++) {
    bool lost = false;
    int port = 0;
    rc = serve(&so, store, admin, url_file, quiet, round > 0, &port, &lost);
    if (!lost) break;
    if (!wait_for_store(uri)) { /* stopped while waiting: as asked */
      rc = BR_EXIT_OK;
      break;
    }
    /* the same address, so that agents and clients find it again */
    char host[300];
    snprintf(host, sizeof host, "%s", listen);
    char *colon = strrchr(host, ':');
    if (colon) *colon = '\0';
    snprintf(again_listen, sizeof again_listen, "%s:%d", host, port);
    so.listen = again_listen;
  }
  free(tokens);
  free(admin);
  free(logs);
  free(settings);
out:
  json_decref(limits);
  json_decref(farm);
  return rc;
}
