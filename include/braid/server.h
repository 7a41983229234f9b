/* The farm server: the engine in serve mode behind the HTTP API (graphs,
 * submissions, tasks, workers, limits, tokens, the agents' endpoints, an
 * event stream, health and metrics; docs/openapi.yaml describes it).
 *
 * Threads: br_server_run runs the engine on the calling thread; requests
 * are parsed on the HTTP threads, which read the store through their own
 * read-only connections and hand every change to the engine thread
 * (br_engine_post). A change is answered once it is committed. */
#ifndef BRAID_SERVER_H
#define BRAID_SERVER_H

#include <braid/engine.h>
#include <braid/error.h>
#include <jansson.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct br_server br_server;

typedef struct br_server_opts {
  const char *store;       /* store URI (SQLite path, options after '?') */
  const char *listen;      /* "HOST:PORT" (default 127.0.0.1:7870) */
  const char *tls_cert;    /* PEM files: serve HTTPS */
  const char *tls_key;
  int threads;             /* HTTP threads (0: 2) */
  const char *token_file;  /* the tokens (see br_auth) */
  const char *log_dir;     /* invocation logs */
  const char *settings_file; /* worker settings, limits, group names: kept across restarts */
  json_t *farm;            /* options of the executor (borrowed; see farm.h, and
                              src/exec/slurm.c for slurm's) */
  const char *executor;    /* "agent" (default: braid agents) or "slurm" (Slurm jobs) */
  const char *braid_exe;   /* this program (the slurm executor's jobs run it) */
  const char *depot_root;  /* also serve a transfer depot kept there (NULL: none),
                            * under the same port and tokens: any role may pull,
                            * user and admin tokens may push */
  int64_t depot_cache;     /* its pack cache (br_depot_opts.cache): 0 default,
                            * negative none */
  int batch_ms;            /* engine group commit interval (0: default) */
  br_warn_fn *warn;        /* told of what the operator should fix (a token
                            * file's line skipped, at each read); may be NULL */
  void *warn_ud;
  br_warn_fn *depot_log;   /* the depot's changes (br_depot_opts.log); may be NULL */
  void *depot_log_ud;
} br_server_opts;

int br_server_open(const br_server_opts *opts, br_server **out, br_error *err);
/* The port it listens on. */
int br_server_port(const br_server *s);
br_engine *br_server_engine(br_server *s);
/* Serves until br_server_stop. */
int br_server_run(br_server *s, br_error *err);
/* Stops serving (thread safe; agents keep running their jobs). */
void br_server_stop(br_server *s);
void br_server_close(br_server *s);

#ifdef __cplusplus
}
#endif
#endif
