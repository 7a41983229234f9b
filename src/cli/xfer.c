/* braid depot / push / pull: thin command-line clients of include/braid/xfer.h.
 * Progress goes to stderr: a rewritten line on a terminal, plain lines
 * otherwise, JSON lines on stdout with --json. Inside a braid job (the push
 * and pull nodes run these), push can report the version it committed to
 * the job's task through the runtime channel (--set-attr). */
#include "fs.h"
#include "cli.h"
#include "common.h"

#include <braid/runtime.h>
#include <braid/xfer.h>

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A failure that may pass (the depot unreachable or busy past the retries):
 * running the command again later may succeed. EX_TEMPFAIL of sysexits.h. */
#define EXIT_TRANSIENT 75

static volatile sig_atomic_t cancel_flag;

/* The exit status of a failed library call: transient or not. */
static int exit_of(int rc) { return rc == BR_ENET ? EXIT_TRANSIENT : BR_EXIT_FAILED; }

/* Inside a braid job: BRAID_CTL and BRAID_CTL_TOKEN name the channel. */
static int in_job(void) {
  const char *p = getenv("BRAID_CTL"), *t = getenv("BRAID_CTL_TOKEN");
  return p && *p && t && *t;
}

static void on_signal(int sig) {
  (void)sig;
  cancel_flag = 1;
}

static void catch_signals(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
}

static int read_token_file(const char *path, char *buf, size_t size) {
  FILE *f = fopen(path, "r");
  if (!f) {
    br_cli_errorf("token file %s: %s", path, strerror(errno));
    return -1;
  }
  buf[0] = 0;
  if (!fgets(buf, (int)size, f)) buf[0] = 0;
  fclose(f);
  size_t n = strlen(buf);
  while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ')) buf[--n] = 0;
  if (!n) {
    br_cli_errorf("token file %s is empty", path);
    return -1;
  }
  return 0;
}

/* The depot token and CA options push, pull and the remote depot commands
 * share. argv[*i] is an option: 1 when it was one of these (its value
 * taken, *i moved on), 0 when not, -1 on error (said). */
static int token_option(int argc, char **argv, int *i, char *token, size_t size,
                        const char **ca) {
  const char *a = argv[*i], *v = *i + 1 < argc ? argv[*i + 1] : NULL;
  if (strcmp(a, "--token-file") != 0 && strcmp(a, "--token") != 0 &&
      strcmp(a, "--token-env") != 0 && strcmp(a, "--ca") != 0)
    return 0;
  if (!v) {
    br_cli_errorf("%s needs a value", a);
    return -1;
  }
  (*i)++;
  if (strcmp(a, "--token-file") == 0) return read_token_file(v, token, size) ? -1 : 1;
  if (strcmp(a, "--ca") == 0) {
    *ca = v;
    return 1;
  }
  if (strcmp(a, "--token-env") == 0) {
    v = getenv(v);
    if (!v || !*v) {
      br_cli_errorf("--token-env: the environment variable %s is not set", argv[*i]);
      return -1;
    }
  }
  snprintf(token, size, "%s", v);
  return 1;
}

/* What the options left open comes from BRAID_TOKEN (or BRAID_TOKEN_FILE)
 * and BRAID_CA. */
static int token_from_env(char *token, size_t size, const char **ca) {
  if (!*ca) *ca = getenv("BRAID_CA");
  if (token[0]) return 0;
  const char *env = getenv("BRAID_TOKEN"), *tf = getenv("BRAID_TOKEN_FILE");
  if (env && *env) snprintf(token, size, "%s", env);
  else if (tf && *tf && read_token_file(tf, token, size)) return -1;
  return 0;
}

static void human(double v, char *buf, size_t size) {
  const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int i = 0;
  while (v >= 1024 && i < 4) v /= 1024, i++;
  snprintf(buf, size, i ? "%.1f %s" : "%.0f %s", v, u[i]);
}

typedef struct progress_state {
  int mode; /* 0 quiet, 1 terminal, 2 plain lines, 3 json */
  const char *verb;
  int drawn;
  int report; /* also to the job's task, through the runtime channel */
  double last_report;
  /* recent rates (bytes/s, averaged over about RATE_WINDOW seconds) of the
   * bytes moved and of the bytes done, and the sample they last took */
  double moved_rate, done_rate, last_t;
  int64_t last_moved, last_done;
} progress_state;

#define RATE_WINDOW 5.0

/* Folds a progress report into the recent rates. */
static void update_rates(progress_state *s, const br_xfer_progress *p) {
  double dt = p->elapsed - s->last_t;
  if (dt <= 0) return;
  double a = 1 - exp(-dt / RATE_WINDOW), mr = (double)(p->bytes_moved - s->last_moved) / dt,
         dr = (double)(p->bytes_done - s->last_done) / dt;
  bool first = s->last_t == 0;
  s->moved_rate = first ? mr : a * mr + (1 - a) * s->moved_rate;
  s->done_rate = first ? dr : a * dr + (1 - a) * s->done_rate;
  s->last_t = p->elapsed;
  s->last_moved = p->bytes_moved;
  s->last_done = p->bytes_done;
}

/* The fraction of bytes done, as the job's progress (at most every 2 s). */
static void report_progress(progress_state *s, const br_xfer_progress *p) {
  if (p->elapsed - s->last_report < 2.0 && strcmp(p->phase, "done") != 0) return;
  s->last_report = p->elapsed;
  double f = p->bytes_total > 0 ? (double)p->bytes_done / (double)p->bytes_total : 0;
  if (f > 1) f = 1;
  if (f < 0) f = 0;
  json_t *req = json_pack("{ss ss sf}", "op", "progress", "token", getenv("BRAID_CTL_TOKEN"),
                          "value", f);
  json_t *resp = NULL;
  if (req && br_runtime_call(getenv("BRAID_CTL"), req, &resp, NULL) == BR_OK) json_decref(resp);
  json_decref(req);
}

static void on_progress(const br_xfer_progress *p, void *ud) {
  progress_state *s = ud;
  if (s->report) report_progress(s, p);
  double rate = p->elapsed > 0 ? (double)p->bytes_moved / p->elapsed : 0;
  if (s->mode == 3) {
    printf("{\"event\":\"progress\",\"phase\":\"%s\",\"files_done\":%lld,\"files_total\":%lld,"
           "\"bytes_done\":%lld,\"bytes_total\":%lld,\"bytes_moved\":%lld,"
           "\"elapsed\":%.3f,\"rate\":%.0f,\"retries\":%d}\n",
           p->phase, (long long)p->files_done, (long long)p->files_total,
           (long long)p->bytes_done, (long long)p->bytes_total, (long long)p->bytes_moved,
           p->elapsed, rate, p->retries);
    fflush(stdout);
    return;
  }
  if (s->mode == 0) return;
  update_rates(s, p);
  char done[32], total[32], r[32], eta[32] = "";
  human((double)p->bytes_done, done, sizeof done);
  human((double)p->bytes_total, total, sizeof total);
  human(s->moved_rate, r, sizeof r);
  /* What is left goes at the recent rate: of the bytes done, or of those
   * moved when done trails them (a pull's chunks are done once verified). */
  double erate = s->done_rate > s->moved_rate ? s->done_rate : s->moved_rate;
  if (erate > 0 && p->bytes_total > p->bytes_done && p->elapsed >= 1)
    snprintf(eta, sizeof eta, " ETA %.0fs", (double)(p->bytes_total - p->bytes_done) / erate);
  char line[256];
  bool ended = strcmp(p->phase, "done") == 0 || strcmp(p->phase, "failed") == 0;
  snprintf(line, sizeof line, "%s %-8s %lld/%lld file%s  %s/%s  %s/s%s%s", s->verb, p->phase,
           (long long)p->files_done, (long long)p->files_total, p->files_total == 1 ? "" : "s",
           done, total, r, ended ? "" : eta, p->retries && !ended ? "  (retrying)" : "");
  if (s->mode == 1) {
    fprintf(stderr, "\r%-79s", line);
    s->drawn = 1;
  } else {
    fprintf(stderr, "%s\n", line);
  }
  fflush(stderr);
}

typedef struct common {
  br_xfer_opts o;
  char token[600];
  int json, quiet;
  char **pos;
  int npos;
  const char *set_attr, *set_version_attr; /* push, inside a job */
  int report_progress;
} common;

/* An option of push or pull alone, given to the other: refused. */
static int not_for(const char *verb, const char *a, const char *owner) {
  if (strcmp(verb, owner) == 0) return 0;
  br_cli_errorf("%s is a %s option; %s does not take it", a, owner, verb);
  return -1;
}

/* Parses the options of push or pull (verb); positional arguments to c->pos. */
static int parse_common(int argc, char **argv, const char *verb, common *c) {
  br_xfer_opts_init(&c->o);
  c->pos = calloc((size_t)argc, sizeof *c->pos);
  int dashdash = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (dashdash || strcmp(a, "-") == 0 || a[0] != '-') {
      c->pos[c->npos++] = argv[i];
      continue;
    }
    if (strcmp(a, "--") == 0) {
      dashdash = 1;
      continue;
    }
    int t = token_option(argc, argv, &i, c->token, sizeof c->token, &c->o.ca_file);
    if (t < 0) return -1;
    if (t) continue;
#define NEED_VALUE()                                     \
  do {                                                   \
    if (!v) {                                            \
      br_cli_errorf("%s needs a value", a);              \
      return -1;                                         \
    }                                                    \
    i++;                                                 \
  } while (0)
    long long n = 0;
    if (strcmp(a, "--report-progress") == 0) {
      c->report_progress = 1;
    } else if (strcmp(a, "--set-attr") == 0) {
      if (not_for(verb, a, "push")) return -1;
      NEED_VALUE();
      c->set_attr = v;
    } else if (strcmp(a, "--set-version-attr") == 0) {
      if (not_for(verb, a, "push")) return -1;
      NEED_VALUE();
      c->set_version_attr = v;
    } else if (strcmp(a, "--parallel") == 0 || strcmp(a, "-j") == 0) {
      NEED_VALUE();
      if (br_cli_parse_int(v, 1, 256, &n)) {
        br_cli_errorf("%s wants a number of requests, 1 to 256, not '%s'", a, v);
        return -1;
      }
      c->o.parallel = (int)n;
    } else if (strcmp(a, "--bwlimit") == 0) {
      NEED_VALUE();
      c->o.bwlimit = br_cli_parse_size(v);
      if (c->o.bwlimit < 0) {
        br_cli_errorf("--bwlimit wants a rate like 20M (bytes per second)");
        return -1;
      }
    } else if (strcmp(a, "--max-memory") == 0) {
      NEED_VALUE();
      c->o.max_memory = br_cli_parse_size(v);
      if (c->o.max_memory <= 0) {
        br_cli_errorf("--max-memory wants a size like 256M");
        return -1;
      }
    } else if (strcmp(a, "--chunk-size") == 0) {
      if (not_for(verb, a, "push")) return -1;
      NEED_VALUE();
      c->o.chunk_size = br_cli_parse_size(v);
      if (c->o.chunk_size < 65536 || c->o.chunk_size > 64 * 1024 * 1024) {
        br_cli_errorf("--chunk-size wants 64K..64M");
        return -1;
      }
    } else if (strcmp(a, "--retries") == 0) {
      NEED_VALUE();
      if (br_cli_parse_int(v, 0, 100, &n)) {
        br_cli_errorf("--retries wants a number of attempts, 0 to 100, not '%s'", v);
        return -1;
      }
      c->o.retries = (int)n;
    } else if (strcmp(a, "--timeout") == 0) {
      NEED_VALUE();
      double s = br_cli_parse_duration(v);
      if (s < 1 || s > 86400) {
        br_cli_errorf("--timeout wants a time from 1s to 24h, like 30, 90s or 2m, not '%s'", v);
        return -1;
      }
      c->o.timeout_s = (int)s;
    } else if (strcmp(a, "--no-compress") == 0) {
      c->o.compress = 0;
    } else if (strcmp(a, "--no-direct") == 0) {
      if (not_for(verb, a, "pull")) return -1;
      c->o.direct_io = 0;
    } else if (strcmp(a, "--sync") == 0) {
      if (not_for(verb, a, "pull")) return -1;
      NEED_VALUE();
      if (strcmp(v, "files") == 0) {
        c->o.sync_files = 1;
      } else if (strcmp(v, "fs") == 0) {
        c->o.sync_files = 0;
      } else {
        br_cli_errorf("--sync takes 'fs' (one syncfs per batch, the default) or 'files' "
                      "(an fsync per file), not '%s'", v);
        return -1;
      }
    } else if (strcmp(a, "--cache") == 0) {
      NEED_VALUE();
      c->o.cache_path = v;
    } else if (strcmp(a, "--content-cache") == 0) {
      if (not_for(verb, a, "pull")) return -1;
      NEED_VALUE();
      c->o.content_cache = v;
    } else if (strcmp(a, "--no-cache") == 0) {
      c->o.cache_path = "";
    } else if (strcmp(a, "--json") == 0) {
      c->json = 1;
    } else if (strcmp(a, "--quiet") == 0 || strcmp(a, "-q") == 0) {
      c->quiet = 1;
    } else if (a[0] == '-' && a[1]) {
      br_cli_errorf("unknown option '%s'", a);
      return -1;
    } else {
      c->pos[c->npos++] = argv[i];
    }
#undef NEED_VALUE
  }
  if (token_from_env(c->token, sizeof c->token, &c->o.ca_file)) return -1;
  if (c->token[0]) c->o.token = c->token;
  return 0;
}

static const char *common_help =
    "options:\n"
    "  --token-file FILE   the depot token (or BRAID_TOKEN, BRAID_TOKEN_FILE)\n"
    "  --token TOKEN       the depot token itself\n"
    "  --token-env NAME    the depot token is in the environment variable NAME\n"
    "  --ca FILE           HTTPS (depots://): a private CA's certificate (or BRAID_CA)\n"
    "  -j, --parallel N    requests in flight (default: push 16, pull 4; fewer when\n"
    "                      --max-memory does not hold that many)\n"
    "  --bwlimit RATE      bytes per second over all transfers, e.g. 20M\n"
    "  --max-memory SIZE   bound on buffered data (default 256M)\n"
    "  --retries N         attempts after the first for transient errors (default 6)\n"
    "  --timeout TIME      a request that moves nothing this long fails (default 30s;\n"
    "                      90s, 2m)\n"
    "  --no-compress       no zstd per chunk\n"
    "  --cache PATH        hash cache (default ~/.cache/braid/hashcache.db)\n"
    "  --no-cache          no hash cache\n"
    "  --json              JSON lines on stdout: progress events, one \"snapshot\" event\n"
    "                      per pair (ref, name, version, dir; same_as for a push\n"
    "                      that changed nothing), then \"done\" or \"error\"\n"
    "  -q, --quiet         no progress\n"
    "  --report-progress   inside a braid job: the job's progress is the bytes done\n\n"
    "Exit status: 0 done, 1 failed (a bad token, a missing snapshot, a path or\n"
    "disk problem: the same command fails the same way), 2 usage, 75 the depot\n"
    "was unreachable or busy past the retries (try again later), 130 cancelled.\n";

/* Prints e as one compact JSON line on stdout (the --json events) and
 * lets go of it; nothing when e is NULL. */
static void json_line(json_t *e) {
  char *t = e ? json_dumps(e, JSON_COMPACT) : NULL;
  if (t) printf("%s\n", t);
  free(t);
  json_decref(e);
}

static int finish(common *c, const char *verb, int rc, const br_error *err,
                  const br_xfer_result *res, progress_state *ps) {
  if (ps->drawn) fputc('\n', stderr);
  char buf[1400];
  if (res->warning[0]) {
    if (c->json) {
      json_line(json_pack("{ssss}", "event", "warning", "message", res->warning));
    } else {
      br_cli_errorf("%s: warning: %s", verb, res->warning);
    }
  }
  if (c->json) {
    if (rc) {
      /* code: braid's (include/braid/error.h), kind: its words, exit: the status */
      json_line(json_pack("{ss si ss ss si}", "event", "error", "code", rc, "kind",
                          br_strerror(rc), "message", br_error_format(err, buf, sizeof buf),
                          "exit", rc == BR_ECANCEL ? BR_EXIT_CANCELLED : exit_of(rc)));
    } else
      printf("{\"event\":\"done\",\"version\":%lld,\"files\":%lld,\"bytes\":%lld,"
             "\"files_moved\":%lld,\"bytes_moved\":%lld,\"chunks_moved\":%lld,"
             "\"chunks_skipped\":%lld,\"files_reused\":%lld,\"hashed_bytes\":%lld,"
             "\"files_read_ahead\":%lld,\"retries\":%d,\"seconds\":%.3f}\n",
             (long long)res->version, (long long)res->files, (long long)res->bytes,
             (long long)res->files_moved, (long long)res->bytes_moved,
             (long long)res->chunks_moved, (long long)res->chunks_skipped,
             (long long)res->files_reused, (long long)res->hashed_bytes,
             (long long)res->files_read_ahead, res->retries, res->seconds);
    fflush(stdout);
  }
  free(c->pos);
  if (rc == BR_ECANCEL) {
    br_cli_errorf("%s cancelled (run it again to resume)", verb);
    return BR_EXIT_CANCELLED;
  }
  if (rc) {
    br_cli_errorf("%s failed: %s", verb, br_error_format(err, buf, sizeof buf));
    return exit_of(rc);
  }
  if (!c->json && !c->quiet) {
    char moved[32];
    human((double)res->bytes_moved, moved, sizeof moved);
    fprintf(stderr, "%s: %lld file%s, %lld %s (%s over the network), %lld chunk%s %s, %.2fs\n",
            verb, (long long)res->files, res->files == 1 ? "" : "s",
            (long long)res->files_moved, strcmp(verb, "push") == 0 ? "sent" : "fetched", moved,
            (long long)res->chunks_skipped, res->chunks_skipped == 1 ? "" : "s",
            strcmp(verb, "push") == 0 ? "already in the depot" : "already here", res->seconds);
    if (res->files_reused)
      fprintf(stderr, "%s: %lld files from the content cache\n", verb,
              (long long)res->files_reused);
  }
  return BR_EXIT_OK;
}

/* Each path a push refuses, on its own line (or a --json event). */
static void on_refused(void *ud, const char *msg) {
  common *c = ud;
  if (c->json)
    json_line(json_pack("{ssss}", "event", "refused", "message", msg));
  else
    br_cli_errorf("push: refused: %s", msg);
}

static void setup_progress(common *c, progress_state *ps, const char *verb) {
  memset(ps, 0, sizeof *ps);
  ps->verb = verb;
  ps->mode = c->json ? 3 : c->quiet ? 0 : isatty(2) ? 1 : 2;
  ps->report = c->report_progress && in_job();
  c->o.progress = on_progress;
  c->o.progress_ud = ps;
  c->o.refused = on_refused;
  c->o.refused_ud = c;
  c->o.progress_interval = ps->mode == 1 ? 0.25 : ps->mode == 2 ? 2.0 : 1.0;
  c->o.cancel = &cancel_flag;
}

/* Whether --json is among the arguments (before "--"). */
static bool wants_json(int argc, char **argv) {
  for (int i = 1; i < argc && strcmp(argv[i], "--"); i++)
    if (strcmp(argv[i], "--json") == 0) return true;
  return false;
}

/* Each DEPOT/NAME[@vN] of a push or pull, checked before anything moves:
 * 0, or BR_EXIT_USAGE with the error said. A push makes the next version,
 * so it takes no @. */
static int check_refs(const char *const *refs, size_t n, const char *verb) {
  for (size_t i = 0; i < n; i++) {
    br_xfer_ref ref;
    br_error err;
    br_error_clear(&err);
    if (br_xfer_ref_parse(refs[i], &ref, &err) != BR_OK) {
      br_cli_errorf("%s: %s", verb, err.msg);
      return BR_EXIT_USAGE;
    }
    br_xfer_ref_free(&ref);
    if (strcmp(verb, "push") == 0 && strchr(refs[i], '@')) { /* hosts have none */
      br_cli_errorf("push: '%s': a push makes the next version; give DEPOT/NAME without @",
                    refs[i]);
      return BR_EXIT_USAGE;
    }
  }
  return 0;
}

/* refs[i] (DEPOT/NAME[@...]) as DEPOT/NAME@vN (malloc'd). */
static char *versioned(const char *ref, int64_t version) {
  const char *slash = strchr(ref, '/');
  slash = slash ? strchr(slash + 2, '/') : NULL; /* past the scheme's // */
  const char *at = slash ? strchr(slash, '@') : NULL;
  char *out = NULL;
  if (asprintf(&out, "%.*s@v%lld", (int)(at ? (size_t)(at - ref) : strlen(ref)), ref,
               (long long)version) < 0)
    abort();
  return out;
}

/* What each pair became. Push: NAME@vN on stdout (scripts read it), and on
 * stderr when the tree was the same as the version before. With --json,
 * one "snapshot" event per pair: {"ref","name","version","dir"} and, for
 * a push of an unchanged tree, "same_as". */
static void print_pairs(const common *c, const char *const *refs, const br_xfer_pair *pairs,
                        size_t n, const char *verb) {
  bool push = strcmp(verb, "push") == 0;
  for (size_t i = 0; i < n; i++) {
    br_xfer_ref ref;
    if (br_xfer_ref_parse(refs[i], &ref, NULL) != BR_OK) continue;
    if (c->json) {
      char *v = versioned(refs[i], pairs[i].version);
      json_t *e = json_pack("{ss ss ss sI ss}", "event", "snapshot", "ref", v, "name", ref.name,
                            "version", (json_int_t)pairs[i].version, "dir",
                            c->pos[2 * i + (push ? 0 : 1)]);
      if (e && pairs[i].same_as)
        json_object_set_new(e, "same_as", json_integer(pairs[i].same_as));
      json_line(e);
      free(v);
    } else if (push) {
      printf("%s@v%lld\n", ref.name, (long long)pairs[i].version);
      if (pairs[i].same_as && !c->quiet)
        fprintf(stderr, "push: %s@v%lld holds the same files as v%lld: nothing changed\n",
                ref.name, (long long)pairs[i].version, (long long)pairs[i].same_as);
    }
    br_xfer_ref_free(&ref);
  }
  fflush(stdout);
}

/* Sets the job's task attributes to what was committed: set_attr gets
 * "DEPOT/NAME@vN" (a list for several pairs), set_version_attr gets N. */
static int report_versions(const common *c, const char *const *targets, const br_xfer_pair *pairs,
                           size_t n) {
  json_t *refs = json_array(), *vers = json_array(), *attrs = json_object();
  for (size_t i = 0; i < n; i++) {
    char *ref = versioned(targets[i], pairs[i].version);
    json_array_append_new(refs, json_string(ref));
    json_array_append_new(vers, json_integer(pairs[i].version));
    free(ref);
  }
  if (c->set_attr)
    json_object_set(attrs, c->set_attr, n == 1 ? json_array_get(refs, 0) : refs);
  if (c->set_version_attr)
    json_object_set(attrs, c->set_version_attr, n == 1 ? json_array_get(vers, 0) : vers);
  json_decref(refs);
  json_decref(vers);
  json_t *req = json_pack("{ss ss so}", "op", "set", "token", getenv("BRAID_CTL_TOKEN"), "attrs",
                          attrs);
  json_t *resp = NULL;
  br_error err;
  br_error_clear(&err);
  int rc = br_runtime_call(getenv("BRAID_CTL"), req, &resp, &err);
  json_decref(req);
  if (rc != BR_OK) {
    br_cli_errorf("push: committed, but telling braid failed: %s", err.msg);
    return -1;
  }
  if (!json_is_true(json_object_get(resp, "ok"))) {
    const char *m = json_string_value(json_object_get(resp, "error"));
    br_cli_errorf("push: committed, but braid refused the attributes: %s", m ? m : "no reason");
    json_decref(resp);
    return -1;
  }
  json_decref(resp);
  return 0;
}

int br_cli_push(int argc, char **argv) {
  if (br_cli_wants_help(argc, argv)) {
    printf("usage: braid push [options] DIR DEPOT/NAME [DIR DEPOT/NAME ...]\n\n"
           "Checks DIR in as a new version of the snapshot NAME, sending only the\n"
           "chunks the depot lacks. DEPOT is depot://HOST:PORT (port 7871 when not\n"
           "given; depots:// for HTTPS, or http://, https://). NAME is letters, digits,\n"
           ".-_ in /-separated parts. Prints the version committed, e.g.\n"
           "shot010/cloth@v3, and says so when the tree is the same as the version\n"
           "before (nothing changed; the version is made all the same).\n\n"
           "A tree that pushes pulls on Linux, macOS and Windows: a push refuses, and\n"
           "names, files and folders whose names hold a control character or one of\n"
           "\\ : < > \" | ? *, end with a dot or a space, are a Windows device name\n"
           "(CON, PRN, AUX, NUL, COM1-9, LPT1-9) or are not UTF-8; two names in one\n"
           "folder that differ only in case (ASCII letters); symlinks that point out\n"
           "of DIR; and devices, fifos and sockets. Files that are hard links of one\n"
           "another in DIR are recorded so, and pull back as hard links.\n\n"
           "  --chunk-size SIZE   chunk size of files (default 8M)\n\n"
           "Inside a braid job (the push node):\n"
           "  --set-attr KEY          set the task's attribute KEY to DEPOT/NAME@vN\n"
           "  --set-version-attr KEY  set the task's attribute KEY to N\n\n%s",
           common_help);
    return BR_EXIT_OK;
  }
  common c;
  memset(&c, 0, sizeof c);
  br_cli_json_usage(wants_json(argc, argv));
  if (parse_common(argc, argv, "push", &c)) {
    free(c.pos);
    return BR_EXIT_USAGE;
  }
  if (c.npos < 2 || c.npos % 2) {
    br_cli_errorf("push wants DIR DEPOT/NAME pairs (see `braid push --help`)");
    free(c.pos);
    return BR_EXIT_USAGE;
  }
  if ((c.set_attr || c.set_version_attr) && !in_job()) {
    br_cli_errorf("--set-attr and --set-version-attr work inside a braid job only "
                  "(BRAID_CTL is not set)");
    free(c.pos);
    return BR_EXIT_USAGE;
  }
  size_t n = (size_t)c.npos / 2;
  const char **dirs = calloc(n, sizeof *dirs), **targets = calloc(n, sizeof *targets);
  br_xfer_pair *pairs = calloc(n, sizeof *pairs);
  for (size_t i = 0; i < n; i++) dirs[i] = c.pos[2 * i], targets[i] = c.pos[2 * i + 1];
  int rc = check_refs(targets, n, "push");
  if (rc) {
    free(dirs);
    free(targets);
    free(pairs);
    free(c.pos);
    return rc;
  }
  br_cli_json_usage(false); /* arguments read: later errors are the push's own */
  progress_state ps;
  setup_progress(&c, &ps, "push");
  catch_signals();
  br_error err;
  br_error_clear(&err);
  br_xfer_result res;
  rc = br_xfer_push_many(dirs, targets, n, &c.o, pairs, &res, &err);
  if (ps.drawn) {
    fputc('\n', stderr); /* end the progress line before the result */
    ps.drawn = 0;
  }
  if (rc == BR_OK && (c.set_attr || c.set_version_attr) &&
      report_versions(&c, targets, pairs, n)) {
    free(dirs);
    free(targets);
    free(pairs);
    free(c.pos);
    return BR_EXIT_FAILED;
  }
  if (rc == BR_OK) print_pairs(&c, targets, pairs, n, "push");
  free(dirs);
  free(targets);
  free(pairs);
  return finish(&c, "push", rc, &err, &res, &ps);
}

int br_cli_pull(int argc, char **argv) {
  if (br_cli_wants_help(argc, argv)) {
    printf("usage: braid pull [options] DEPOT/NAME[@vN] DIR [DEPOT/NAME[@vN] DIR ...]\n\n"
           "Checks out a snapshot (the latest version unless @vN) into DIR. Each file\n"
           "is written to a hidden temporary, verified, synced and renamed, so no\n"
           "partial or corrupt file ever appears under its name; an interrupted pull\n"
           "resumes where it stopped. Files in DIR that are not in the snapshot are\n"
           "left alone; files already there with the snapshot's content are kept,\n"
           "and take its mode and time; a chunk the snapshot names twice is fetched\n"
           "once, and one a file in place holds is copied from it, not fetched.\n"
           "Files pushed as hard links of one another come back as hard links.\n"
           "DEPOT is as for push. Several snapshots may go to one DIR: a path two\n"
           "of them name is written once if its contents agree, and the pull is\n"
           "refused before it writes anything if they differ.\n\n"
           "  --no-direct         write through the page cache (default: direct I/O\n"
           "                      where the file system allows; keeps pulled files out of\n"
           "                      the cache, and the sync has nothing left to write)\n"
           "  --sync fs|files     how files are made durable before their rename:\n"
           "                      fs (default) one syncfs per batch, fastest for many\n"
           "                      files, but it also writes back other programs' unsaved\n"
           "                      data on that disk; files: an fsync per file and folder\n"
           "  --content-cache DIR reuse files other pulls fetched and add to DIR: a\n"
           "                      hard link when mode and time match, else a copy;\n"
           "                      treat pulled files as read-only\n\n%s",
           common_help);
    return BR_EXIT_OK;
  }
  common c;
  memset(&c, 0, sizeof c);
  br_cli_json_usage(wants_json(argc, argv));
  if (parse_common(argc, argv, "pull", &c)) {
    free(c.pos);
    return BR_EXIT_USAGE;
  }
  if (c.npos < 2 || c.npos % 2) {
    br_cli_errorf("pull wants DEPOT/NAME DIR pairs (see `braid pull --help`)");
    free(c.pos);
    return BR_EXIT_USAGE;
  }
  size_t n = (size_t)c.npos / 2;
  const char **srcs = calloc(n, sizeof *srcs), **dirs = calloc(n, sizeof *dirs);
  br_xfer_pair *pairs = calloc(n, sizeof *pairs);
  for (size_t i = 0; i < n; i++) srcs[i] = c.pos[2 * i], dirs[i] = c.pos[2 * i + 1];
  int rc = check_refs(srcs, n, "pull");
  if (rc) {
    free(srcs);
    free(dirs);
    free(pairs);
    free(c.pos);
    return rc;
  }
  br_cli_json_usage(false); /* arguments read: later errors are the pull's own */
  progress_state ps;
  setup_progress(&c, &ps, "pull");
  catch_signals();
  br_error err;
  br_error_clear(&err);
  br_xfer_result res;
  rc = br_xfer_pull_many(srcs, dirs, n, &c.o, pairs, &res, &err);
  if (ps.drawn) {
    fputc('\n', stderr);
    ps.drawn = 0;
  }
  if (rc == BR_OK) print_pairs(&c, srcs, pairs, n, "pull");
  free(srcs);
  free(dirs);
  free(pairs);
  return finish(&c, "pull", rc, &err, &res, &ps);
}

/* How rm, gc and ls name the depot they ask. */
#define DEPOT_TARGET_HELP                                                                        \
  "DEPOT is a running depot, depot://HOST:PORT (depots://, http://, https://; a\n"                \
  "braid server with --depot-root too), asked with a token: --token-file FILE,\n"                \
  "--token TOKEN, --token-env NAME, BRAID_TOKEN or BRAID_TOKEN_FILE (--ca FILE or\n"              \
  "BRAID_CA for HTTPS); or --root DIR, the depot's own folder, on its machine.\n"                 \
  "Exit status: 0 done, 1 failed, 2 usage, 75 the depot was unreachable.\n"

/* `braid depot SUB --help`: SUB's own text, or NULL for the depot's. */
static const char *depot_sub_help(const char *sub) {
  static const struct {
    const char *sub, *text;
  } helps[] = {
      {"token",
       "usage: braid depot token --token-file FILE\n\n"
       "Makes a token: appends its hash (a \"sha256:<hex>\" line) to FILE, the\n"
       "depot's --token-file (or its --admin-token-file, for a token that may also\n"
       "rm and gc), and prints the token once, for clients (BRAID_TOKEN, or a file\n"
       "given to --token-file). A running depot sees the new line at once.\n"},
      {"fsck",
       "usage: braid depot fsck --root DIR [--repair]\n\n"
       "Reads every object of the depot kept in DIR back and checks its digest,\n"
       "naming each that does not match or cannot be read; works beside a running\n"
       "depot. --repair takes the damaged ones out of the depot (a loose object is\n"
       "moved to DIR/damaged/): the depot then says it lacks them, so a pull of a\n"
       "snapshot that names one fails at once with a clear error, and the next push\n"
       "of a tree that holds one sends it again. A pull that keeps receiving bytes\n"
       "that fail verification asks the depot to check them, which does the same.\n"
       "Exit status: 0 all match, 1 some are damaged (with --repair too: their\n"
       "snapshots lack them until pushed again).\n"},
      {"rm",
       "usage: braid depot rm DEPOT NAME@vN... [token options]\n\n"
       "Removes versions (their numbers are never given again). The chunks only\n"
       "they named go at the next `braid depot gc`. Over HTTP it needs an admin\n"
       "token: one of the depot's --admin-token-file, or a braid server's admin\n"
       "token. DEPOT may also be given as depot://HOST:PORT/NAME@vN.\n\n" DEPOT_TARGET_HELP},
      {"gc",
       "usage: braid depot gc DEPOT [--grace 24h] [--dry-run] [token options]\n\n"
       "Removes the chunks no remaining version names, once older than the grace\n"
       "period (a push still uploading keeps its chunks), and says what it freed.\n"
       "Over HTTP it needs an admin token, as rm does.\n\n"
       "  --grace TIME   how old an unnamed chunk must be to go (default 24h; 90m, 3600)\n"
       "  -n, --dry-run  count what would go, remove nothing\n\n" DEPOT_TARGET_HELP},
      {"ls",
       "usage: braid depot ls DEPOT [NAME] [-l] [--json] [token options]\n\n"
       "Lists the versions of NAME and of the names below it (NAME/...), or of all,\n"
       "with the time each was committed. Any token that may pull may list.\n"
       "DEPOT may also be given as depot://HOST:PORT/NAME.\n\n"
       "  -l       also their files and bytes (reads every manifest listed)\n"
       "  --json   one JSON object per version: name, version, time (and files,\n"
       "           bytes with -l)\n\n" DEPOT_TARGET_HELP},
  };
  for (size_t i = 0; i < sizeof helps / sizeof helps[0]; i++)
    if (strcmp(sub, helps[i].sub) == 0) return helps[i].text;
  return NULL;
}

static int depot_token(int argc, char **argv) {
  const char *file = NULL;
  for (int i = 1; i < argc; i++)
    if (strcmp(argv[i], "--token-file") == 0 && i + 1 < argc) file = argv[++i];
    else {
      br_cli_errorf("depot token: unexpected '%s'", argv[i]);
      return BR_EXIT_USAGE;
    }
  if (!file) {
    br_cli_errorf("depot token needs --token-file FILE");
    return BR_EXIT_USAGE;
  }
  char tok[80], hash[80];
  br_error err;
  br_error_clear(&err);
  if (br_xfer_token_new(tok, sizeof tok, &err)) {
    br_cli_errorf("%s", err.msg);
    return BR_EXIT_FAILED;
  }
  br_xfer_token_hash(tok, hash, sizeof hash);
  if (br__append_line(file, hash, strlen(hash), 0600) != 0) {
    br_cli_errorf("%s: %s", file, strerror(errno));
    return BR_EXIT_FAILED;
  }
  printf("%s\n", tok);
  return BR_EXIT_OK;
}

static void print_damaged(void *ud, const char *what) {
  (void)ud;
  printf("damaged: %s\n", what);
  fflush(stdout);
}

static int depot_fsck(int argc, char **argv) {
  const char *root = NULL;
  bool repair = false;
  for (int i = 1; i < argc; i++)
    if (strcmp(argv[i], "--root") == 0 && i + 1 < argc) root = argv[++i];
    else if (strcmp(argv[i], "--repair") == 0) repair = true;
    else {
      br_cli_errorf("depot fsck: unexpected '%s'", argv[i]);
      return BR_EXIT_USAGE;
    }
  if (!root) {
    br_cli_errorf("depot fsck needs --root DIR");
    return BR_EXIT_USAGE;
  }
  br_error err;
  br_error_clear(&err);
  int64_t n = 0, bad = 0;
  int rc = br_depot_fsck_ex(root, repair, print_damaged, NULL, &n, &bad, &err);
  if (rc && !bad) {
    br_cli_errorf("depot fsck: %s (after %lld good objects)", err.msg, (long long)n);
    return BR_EXIT_FAILED;
  }
  if (!bad) {
    printf("%lld objects, all match their digests\n", (long long)n);
    return BR_EXIT_OK;
  }
  printf("%lld objects match their digests, %lld damaged%s\n", (long long)n, (long long)bad,
         repair ? ", taken out of the depot: push the trees that hold them again"
                : "; --repair takes them out, so the next push of their trees sends them again");
  return BR_EXIT_FAILED;
}

/* A depot for the admin commands: --root DIR (on this machine) or a URL
 * (depot://HOST:PORT, depots://, http://, https://) with a token. */
typedef struct depot_target {
  const char *root;
  char *base;  /* "http[s]://HOST:PORT", malloc'd */
  char *owned; /* the NAME of a depot://HOST:PORT/NAME argument, malloc'd */
  char token[600];
  const char *ca;
} depot_target;

/* Parses the options of `depot rm` and `depot gc`: the target, and the
 * other arguments in pos (the caller frees it). `extra` takes the
 * command's own options (1: taken, 0: not one, -1: error said). */
static int parse_target(int argc, char **argv, const char *verb, depot_target *t, char ***pos,
                        int *npos, int (*extra)(int argc, char **argv, int *i, void *ud),
                        void *ud) {
  memset(t, 0, sizeof *t);
  *npos = 0;
  *pos = calloc((size_t)argc + 1, sizeof **pos);
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--root") == 0) {
      if (i + 1 >= argc) {
        br_cli_errorf("--root needs a value");
        return -1;
      }
      t->root = argv[++i];
      continue;
    }
    int r = token_option(argc, argv, &i, t->token, sizeof t->token, &t->ca);
    if (!r && extra) r = extra(argc, argv, &i, ud);
    if (r < 0) return -1;
    if (r) continue;
    if (a[0] == '-') {
      br_cli_errorf("depot %s: unexpected '%s'", verb, a);
      return -1;
    }
    if (!t->base && strstr(a, "://")) {
      t->base = br_xfer_depot_base(a);
      if (t->base) continue;
      /* depot://HOST:PORT/REST: the depot, and REST as the first argument
       * (ls NAME, rm NAME@vN), as push and pull write it */
      br_xfer_ref ref;
      br_error err;
      br_error_clear(&err);
      const char *slash = strchr(strstr(a, "://") + 3, '/');
      char *rest = slash ? strdup(slash + 1) : NULL;
      if (br_xfer_ref_parse(a, &ref, &err) != BR_OK || !rest) {
        br_cli_errorf("depot %s: '%s' is not a depot's address (want depot://HOST:PORT): %s",
                      verb, a, err.msg[0] ? err.msg : "no host");
        free(rest);
        return -1;
      }
      t->base = ref.base;
      ref.base = NULL;
      br_xfer_ref_free(&ref);
      (*pos)[(*npos)++] = rest;
      t->owned = rest;
      continue;
    }
    (*pos)[(*npos)++] = argv[i];
  }
  if (t->root && t->base) {
    br_cli_errorf("depot %s: give a depot's address or --root DIR, not both", verb);
    return -1;
  }
  if (!t->root && !t->base) {
    br_cli_errorf("depot %s needs a depot: depot://HOST:PORT, or --root DIR on its machine",
                  verb);
    return -1;
  }
  if (t->base && token_from_env(t->token, sizeof t->token, &t->ca)) return -1;
  return 0;
}

/* Lets go of what parse_target made. */
static void target_free(depot_target *t, char **pos) {
  free(pos);
  free(t->base);
  free(t->owned);
  t->base = t->owned = NULL;
}

/* The options br_xfer_depot_rm and br_xfer_depot_gc take from a target. */
static void target_opts(const depot_target *t, br_xfer_opts *o) {
  br_xfer_opts_init(o);
  o->token = t->token[0] ? t->token : NULL;
  o->ca_file = t->ca;
}

/* NAME@vN (or NAME@N) into a fresh name and N; -1 if it is not one. */
static int parse_version(const char *s, char **name, int64_t *version) {
  char *n = strdup(s), *at = n ? strrchr(n, '@') : NULL;
  char *end = NULL;
  long long v = at ? strtoll(at + 1 + (at[1] == 'v'), &end, 10) : 0;
  if (!at || !end || *end || v <= 0) {
    br_cli_errorf("depot rm: '%s' is not NAME@vN", s);
    free(n);
    return -1;
  }
  *at = 0;
  *name = n;
  *version = v;
  return 0;
}

typedef struct ls_args {
  bool detail, json;
} ls_args;

static int ls_option(int argc, char **argv, int *i, void *ud) {
  (void)argc;
  ls_args *l = ud;
  const char *a = argv[*i];
  if (strcmp(a, "-l") == 0 || strcmp(a, "--long") == 0) return l->detail = true, 1;
  if (strcmp(a, "--json") == 0) return l->json = true, 1;
  return 0;
}

static int depot_ls(int argc, char **argv) {
  depot_target t;
  char **pos = NULL;
  int n = 0;
  ls_args l = {0};
  int rc = parse_target(argc, argv, "ls", &t, &pos, &n, ls_option, &l);
  if (rc == 0 && n > 1) br_cli_errorf("depot ls: unexpected '%s' (one NAME at most)", pos[1]);
  const char *name = rc == 0 && n == 1 ? pos[0] : NULL;
  if (name && strchr(name, '@')) {
    br_cli_errorf("depot ls: '%s': give a NAME without @, and ls lists its versions", name);
    rc = BR_EXIT_USAGE;
  }
  if (rc || n > 1) {
    target_free(&t, pos);
    return BR_EXIT_USAGE;
  }
  br_depot_entry *v = NULL;
  size_t nv = 0;
  br_error err;
  br_error_clear(&err);
  if (t.root) {
    rc = br_depot_list(t.root, name, l.detail, &v, &nv, &err);
  } else {
    br_xfer_opts o;
    target_opts(&t, &o);
    rc = br_xfer_depot_list(t.base, name, l.detail, &o, &v, &nv, &err);
  }
  bool none = !rc && !nv && !l.json;
  if (none) /* said before name goes */
    fprintf(stderr, "braid: depot ls: no versions%s%s\n", name ? " of " : "", name ? name : "");
  target_free(&t, pos);
  if (rc) {
    br_cli_errorf("depot ls: %s", err.msg);
    return exit_of(rc);
  }
  for (size_t i = 0; i < nv; i++) {
    if (l.json) {
      json_t *e = json_pack("{ss sI sI}", "name", v[i].name, "version", (json_int_t)v[i].version,
                            "time", (json_int_t)v[i].time);
      if (e && l.detail) {
        json_object_set_new(e, "files", json_integer(v[i].files));
        json_object_set_new(e, "bytes", json_integer(v[i].bytes));
      }
      json_line(e);
      continue;
    }
    char when[32], ref[1100];
    br_cli_local_time(v[i].time, when, sizeof when);
    snprintf(ref, sizeof ref, "%s@v%lld", v[i].name, (long long)v[i].version);
    if (l.detail) {
      char size[32];
      human((double)v[i].bytes, size, sizeof size);
      printf("%-40s  %s  %8lld files  %10s\n", ref, when, (long long)v[i].files, size);
    } else {
      printf("%-40s  %s\n", ref, when);
    }
  }
  br_depot_list_free(v, nv);
  return BR_EXIT_OK;
}

static int depot_rm(int argc, char **argv) {
  depot_target t;
  char **pos = NULL;
  int n = 0, rc = BR_EXIT_OK;
  if (parse_target(argc, argv, "rm", &t, &pos, &n, NULL, NULL)) {
    target_free(&t, pos);
    return BR_EXIT_USAGE;
  }
  if (!n) {
    br_cli_errorf("depot rm: name the versions to remove (NAME@vN...)");
    target_free(&t, pos);
    return BR_EXIT_USAGE;
  }
  char **names = calloc((size_t)n, sizeof *names);
  br_xfer_version *vs = calloc((size_t)n, sizeof *vs);
  bool *removed = calloc((size_t)n, sizeof *removed);
  if (!names || !vs || !removed) abort();
  for (int i = 0; i < n && rc == BR_EXIT_OK; i++) {
    if (parse_version(pos[i], &names[i], &vs[i].version)) rc = BR_EXIT_USAGE;
    vs[i].name = names[i];
  }
  for (int i = 0; t.root && rc == BR_EXIT_OK && i < n; i++) {
    br_error err;
    br_error_clear(&err);
    if (br_depot_rm(t.root, vs[i].name, vs[i].version, &err)) {
      br_cli_errorf("depot rm: %s", err.msg);
      rc = BR_EXIT_FAILED; /* the others are still removed */
    } else {
      printf("removed %s@v%lld\n", vs[i].name, (long long)vs[i].version);
    }
  }
  if (t.base && rc == BR_EXIT_OK) {
    br_xfer_opts o;
    target_opts(&t, &o);
    br_error err;
    br_error_clear(&err);
    int r = br_xfer_depot_rm(t.base, vs, (size_t)n, &o, removed, &err);
    if (r) {
      br_cli_errorf("depot rm: %s", err.msg);
      rc = exit_of(r);
    }
    for (int i = 0; i < n; i++) /* on failure too: the depot went past it */
      if (removed[i]) printf("removed %s@v%lld\n", vs[i].name, (long long)vs[i].version);
  }
  for (int i = 0; i < n; i++) free(names[i]);
  free(names);
  free(vs);
  free(removed);
  target_free(&t, pos);
  return rc;
}

typedef struct gc_args {
  int64_t grace;
  bool dry;
} gc_args;

static int gc_option(int argc, char **argv, int *i, void *ud) {
  gc_args *g = ud;
  const char *a = argv[*i];
  if (strcmp(a, "--dry-run") == 0 || strcmp(a, "-n") == 0) {
    g->dry = true;
    return 1;
  }
  if (strcmp(a, "--grace") != 0) return 0;
  if (*i + 1 >= argc) {
    br_cli_errorf("--grace needs a value");
    return -1;
  }
  g->grace = (int64_t)br_cli_parse_duration(argv[++*i]);
  if (g->grace < 0) {
    br_cli_errorf("--grace wants a duration like 24h, 90m or 3600");
    return -1;
  }
  return 1;
}

static int depot_gc(int argc, char **argv) {
  depot_target t;
  char **pos = NULL;
  int n = 0;
  gc_args g = {.grace = 86400};
  int rc = parse_target(argc, argv, "gc", &t, &pos, &n, gc_option, &g);
  if (rc == 0 && n)
    br_cli_errorf("depot gc: unexpected '%s' (gc works on the whole depot: depot://HOST:PORT)",
                  pos[0]);
  if (rc || n) {
    target_free(&t, pos);
    return BR_EXIT_USAGE;
  }
  br_depot_gc_result r;
  br_error err;
  br_error_clear(&err);
  if (t.root) {
    rc = br_depot_gc(t.root, g.grace, g.dry, &r, &err);
  } else {
    br_xfer_opts o;
    target_opts(&t, &o);
    rc = br_xfer_depot_gc(t.base, g.grace, g.dry, &o, &r, &err);
  }
  target_free(&t, pos);
  if (rc) {
    br_cli_errorf("depot gc: %s", err.msg);
    return exit_of(rc);
  }
  char freed[32];
  human((double)r.bytes_freed, freed, sizeof freed);
  printf("%s%lld snapshots name %lld chunks; %s %lld chunks (%s), %lld pack files (%lld "
         "rewritten); kept %lld unnamed chunks younger than the grace period\n",
         g.dry ? "dry run: " : "", (long long)r.snapshots, (long long)r.live_chunks,
         g.dry ? "would remove" : "removed", (long long)r.objects_removed, freed,
         (long long)r.packs_removed, (long long)r.packs_rewritten, (long long)r.kept_young);
  return BR_EXIT_OK;
}

int br_cli_depot(int argc, char **argv) {
  const char *sub_help = argc > 1 ? depot_sub_help(argv[1]) : NULL;
  if (sub_help && br_cli_wants_help(argc - 1, argv + 1)) {
    fputs(sub_help, stdout);
    return BR_EXIT_OK;
  }
  if (br_cli_wants_help(argc, argv)) {
    printf("usage: braid depot --root DIR --token-file FILE [--admin-token-file FILE]\n"
           "                   [--listen HOST:PORT]\n"
           "       braid depot token --token-file FILE\n"
           "       braid depot fsck --root DIR [--repair]\n"
           "       braid depot rm DEPOT NAME@vN...\n"
           "       braid depot gc DEPOT [--grace 24h] [--dry-run]\n"
           "       braid depot ls DEPOT [NAME] [-l] [--json]\n\n"
           "Serves content-addressed snapshots over HTTP until interrupted. The token\n"
           "file holds one \"sha256:<hex>\" line per accepted token (a plain token line\n"
           "is accepted too), or is the braid server's token file; it is read again\n"
           "when it changes. `braid depot token` makes a token, appends its hash to\n"
           "FILE and prints the token for clients (BRAID_TOKEN or --token-file).\n"
           "`braid depot fsck` reads every object back and checks its digest.\n"
           "`braid depot rm` removes versions (their numbers are never given again);\n"
           "`braid depot gc` then removes the chunks no remaining version names, if they\n"
           "are older than the grace period (default 24h: a push still uploading keeps\n"
           "its chunks). Both work beside a running depot on the same root.\n"
           "`braid depot ls` lists the versions there are, of NAME and the names\n"
           "below it (NAME/...) or of all, with the time each was committed; -l adds\n"
           "their files and bytes (it reads every manifest listed).\n"
           "`braid depot SUBCOMMAND --help` tells more of each.\n\n"
           "DEPOT, for rm, gc and ls, is a running depot, depot://HOST:PORT (depots://,\n"
           "http://, https://; a braid server with --depot-root too), asked with an\n"
           "admin token (ls: any token that may pull): one of the depot's\n"
           "--admin-token-file, or a braid server's admin token (--token-file FILE,\n"
           "--token TOKEN, --token-env NAME,\n"
           "BRAID_TOKEN or BRAID_TOKEN_FILE; --ca FILE or BRAID_CA for HTTPS). Or\n"
           "--root DIR, on the depot's machine. Exit status: 0 done, 1 failed, 2 usage,\n"
           "75 the depot was unreachable.\n\n"
           "options:\n"
           "  --root DIR          where objects and snapshots are kept (created)\n"
           "  --listen HOST:PORT  default 127.0.0.1:7871; port 0 picks a free one\n"
           "  --token-file FILE   accepted tokens (required)\n"
           "  --admin-token-file FILE\n"
           "                      tokens that may also remove versions and collect\n"
           "                      garbage remotely (braid depot rm/gc DEPOT)\n"
           "  --max-request SIZE  largest request body (default 65M)\n"
           "  --max-memory SIZE   bodies held at once (default 1G); past it, 503 and\n"
           "                      clients retry\n"
           "  --cache SIZE        packs of small files kept in memory for pulls: those\n"
           "                      just pushed, and those pulls read whole (default\n"
           "                      512M; 0 turns it off)\n");
    return BR_EXIT_OK;
  }
  if (argc > 1 && strcmp(argv[1], "token") == 0) return depot_token(argc - 1, argv + 1);
  if (argc > 1 && strcmp(argv[1], "fsck") == 0) return depot_fsck(argc - 1, argv + 1);
  if (argc > 1 && strcmp(argv[1], "rm") == 0) return depot_rm(argc - 1, argv + 1);
  if (argc > 1 && strcmp(argv[1], "gc") == 0) return depot_gc(argc - 1, argv + 1);
  if (argc > 1 && strcmp(argv[1], "ls") == 0) return depot_ls(argc - 1, argv + 1);
  br_depot_opts o;
  memset(&o, 0, sizeof o);
  o.warn = br_cli_warn;
  o.log = br_cli_depot_log;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (a[0] != '-') {
      br_cli_errorf("depot: unknown subcommand '%s' (token, fsck, rm, gc, ls; or options to "
                    "serve: see braid depot --help)", a);
      return BR_EXIT_USAGE;
    }
    if (!v) {
      br_cli_errorf("%s needs a value", a);
      return BR_EXIT_USAGE;
    }
    if (strcmp(a, "--root") == 0) o.root = v;
    else if (strcmp(a, "--listen") == 0) o.listen = v;
    else if (strcmp(a, "--token-file") == 0) o.token_file = v;
    else if (strcmp(a, "--admin-token-file") == 0) o.admin_token_file = v;
    else if (strcmp(a, "--max-memory") == 0) {
      o.max_memory = br_cli_parse_size(v);
      if (o.max_memory <= 0) {
        br_cli_errorf("--max-memory wants a size like 1G");
        return BR_EXIT_USAGE;
      }
    } else if (strcmp(a, "--cache") == 0) {
      if (br_cli_parse_cache_size(v, &o.cache)) {
        br_cli_errorf("--cache wants a size like 512M (0: none)");
        return BR_EXIT_USAGE;
      }
    } else if (strcmp(a, "--max-request") == 0) {
      o.max_request = br_cli_parse_size(v);
      if (o.max_request <= 0) {
        br_cli_errorf("--max-request wants a size like 64M");
        return BR_EXIT_USAGE;
      }
    } else {
      br_cli_errorf("unknown option '%s' (see `braid depot --help`)", a);
      return BR_EXIT_USAGE;
    }
    i++;
  }
  if (!o.root || !o.token_file) {
    br_cli_errorf("depot needs --root DIR and --token-file FILE");
    return BR_EXIT_USAGE;
  }
  /* Block the signals before the server's threads exist, then wait for one. */
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  signal(SIGPIPE, SIG_IGN);
  br_error err;
  br_error_clear(&err);
  br_depot *d = NULL;
  if (br_depot_start(&o, &d, &err)) {
    char buf[1200];
    br_cli_errorf("%s", br_error_format(&err, buf, sizeof buf));
    return BR_EXIT_FAILED;
  }
  char host[300];
  br_cli_client_host(o.listen ? o.listen : "127.0.0.1:7871", host, sizeof host);
  printf("depot listening on http://%s:%d root %s (clients: braid push DIR depot://%s:%d/NAME)\n",
         host, br_depot_port(d), o.root, host, br_depot_port(d));
  fflush(stdout);
  int sig = 0;
  sigwait(&set, &sig);
  br_depot_cache_stats cs;
  br_depot_cache_stats_get(d, &cs);
  if (cs.max > 0)
    fprintf(stderr,
            "braid: depot pack cache: %lld hits (%lld waited for a read), %lld misses; "
            "%lld packs kept as written, %lld read whole, %lld dropped; %lld MiB of %lld held\n",
            (long long)cs.hits, (long long)cs.waited, (long long)cs.misses, (long long)cs.kept,
            (long long)cs.loaded, (long long)cs.evicted, (long long)(cs.bytes >> 20),
            (long long)(cs.max >> 20));
  br_depot_stop(d);
  return BR_EXIT_OK;
}
