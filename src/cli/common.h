/* Helpers shared by the subcommands. */
#ifndef BR_CLI_COMMON_H
#define BR_CLI_COMMON_H

#include <braid/graph.h>
#include <braid/store.h>
#include <jansson.h>
#include <signal.h>
#include <uv.h>

#include "cli.h"

/* "12" -> 12, "[1,2]" -> list, "abc" -> "abc" (JSON when it parses, else a string). */
json_t *br_cli_parse_value(const char *v);
/* Parses NAME=VALUE (br_cli_parse_value) or NAME:=JSON (JSON or an error), as
 * braid ctl does, into obj; prints an error and returns -1 when malformed. */
int br_cli_set_kv(json_t *obj, const char *kv);
/* Creates the parent folders of path. */
int br_cli_mkdirs_for(const char *path);
/* The store to read: --store, $BRAID_STORE, or the only *.braid.db here.
 * Prints an error and returns NULL when none; caller frees. */
char *br_cli_find_store(const char *given);
/* Refuses (printing why, -1) a SQLite store path that is no file ("",
 * ":memory:") and unknown options: only PATH?sync=off|normal|full. 0 when
 * fine, and for postgresql:// URIs. */
int br_cli_check_store(const char *path);
/* s as one shell word: as it is when it is plain, else in '...' (caller
 * frees). For the commands braid suggests. */
char *br_cli_shell_quote(const char *s);
/* Opens a store (a path with its ?options, or a URI), printing any error;
 * then *exit_code is BR_EXIT_USAGE when path names no store (not there, a
 * folder, a file that is not a store), else BR_EXIT_FAILED. */
br_store *br_cli_open_store(const char *path, int flags, int *exit_code);
/* Growable NULL-terminated argv (also used by node types). */
void br_argv_push(char ***argv, size_t *n, char *arg);
void br_argv_free(char **argv);
json_t *br_cli_task_json(const br_task_info *t);
/* A file beside a store: "x/farm.braid.db?sync=normal" + ".tokens" ->
 * "x/farm.braid.tokens" (caller frees). */
char *br_cli_store_side(const char *store, const char *suffix);
/* The farm server's default store. */
#define BR_CLI_SERVER_STORE "farm.braid.db"
void br_cli_print_json(json_t *j);
/* Loads a graph file, printing its error (FILE:LINE:COLUMN: ...) or its
 * warnings on stderr; NULL on error. */
br_graph *br_cli_load_graph(const char *path);
/* The host clients use for a server listening on listen ("HOST:PORT"):
 * HOST, or 127.0.0.1 for 0.0.0.0 or none. */
void br_cli_client_host(const char *listen, char *host, size_t size);
/* A whole number in lo..hi, all of s ("12", "-3"; not "12x", "", "1e3"):
 * 0 and *out, or -1. */
int br_cli_parse_int(const char *s, long long lo, long long hi, long long *out);
/* A task (or invocation, group, graph) id: a whole number from 1 to
 * INT64_MAX, all of s; else an error naming what ("a task id") and -1. */
int br_cli_parse_id(const char *s, const char *what, long long *id);
/* "90", "90s", "1.5m", "24h", "7d": seconds, or -1 if bad. */
double br_cli_parse_duration(const char *s);
/* An option's time above 0 (br_cli_parse_duration), or -1 after saying
 * "OPT: 'V' is not a time of more than 0 (...)". */
double br_cli_time_option(const char *opt, const char *v);
/* An option's listen address, HOST:PORT (a port from 0 to 65535, an IPv6
 * host in [ ]): 0, or -1 after saying "OPT: 'V' is not HOST:PORT: why".
 * A host that does not resolve is for the listener to tell. */
int br_cli_listen_option(const char *opt, const char *v);
/* "10M", "200k", "1.5G", "0" (bytes, powers of 1024). -1 if bad. */
int64_t br_cli_parse_size(const char *s);
/* The depot's pack cache size (--cache, --depot-cache): a size, "0" for none,
 * which is br_depot_opts.cache's -1. -1 if bad. */
int br_cli_parse_cache_size(const char *s, int64_t *out);

/* The --slurm-... options of `braid run` and `braid server` (getopt values
 * from BR_CLI_SLURM_BASE): they fill the slurm executor's options. */
#define BR_CLI_SLURM_BASE 1000
#define BR_CLI_SLURM_OPTIONS                                                                      \
  {"slurm-listen", required_argument, NULL, 1000}, {"slurm-url", required_argument, NULL, 1001},  \
  {"slurm-partition", required_argument, NULL, 1002},                                            \
  {"slurm-account", required_argument, NULL, 1003}, {"slurm-qos", required_argument, NULL, 1004}, \
  {"slurm-time", required_argument, NULL, 1005}, {"slurm-arg", required_argument, NULL, 1006},    \
  {"slurm-opt", required_argument, NULL, 1007}
/* Handles one of them: 1 done, 0 not one of them, -1 bad (error printed). */
int br_cli_slurm_option(int c, const char *arg, json_t *opts);
/* Their --help text. */
extern const char br_cli_slurm_help[];

/* Ctrl-C and SIGTERM call cb on loop (stop[0] SIGINT, stop[1] SIGTERM, each
 * with data); the handles keep nothing alive (uv_unref). They also reach
 * store (may be NULL) at once: a write waiting there for a lock that may
 * stay does not hold the stop up (br_store_set_stop). */
void br_cli_catch_stop(uv_loop_t *loop, uv_signal_t stop[2], uv_signal_cb cb, void *data,
                       br_store *store);
/* Closes them (they end on the loop's next turn). */
void br_cli_release_stop(uv_signal_t stop[2]);
/* Set (to 1) by SIGINT or SIGTERM once br_cli_catch_stop caught them, at
 * the signal itself: for code that waits outside the loop and must not wait
 * on. */
extern volatile sig_atomic_t br_cli_stopping;

#endif
