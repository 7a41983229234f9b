/* The braid command line: one function per subcommand (git style). Each is a
 * thin client of the public API in include/braid/. */
#ifndef BR_CLI_H
#define BR_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct br_cli_command {
  const char *name;
  int (*fn)(int argc, char **argv); /* argv[0] is the subcommand name */
  const char *summary;
} br_cli_command;

/* Exit statuses shared by the subcommands. */
enum { BR_EXIT_OK = 0, BR_EXIT_FAILED = 1, BR_EXIT_USAGE = 2, BR_EXIT_CANCELLED = 130 };

/* True when argv asks for help (-h or --help anywhere). */
int br_cli_wants_help(int argc, char **argv);
/* Prints "braid: <message>" to stderr; while br_cli_json_usage is on, also
 * an {"event":"error","kind":"usage",...} line on stdout (a --json command
 * still parsing its arguments: its errors are usage errors). */
void br_cli_errorf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void br_cli_json_usage(bool on);
/* Prints "braid: warning: <msg>" to stderr: the library's br_warn_fn. */
void br_cli_warn(void *ud, const char *msg);
/* A depot's change (br_depot_opts.log): a line on stderr with the time. */
void br_cli_depot_log(void *ud, const char *msg);
/* t as local "YYYY-MM-DD HH:MM:SS" in buf (20 bytes or more). */
void br_cli_local_time(int64_t t, char *buf, size_t size);
/* s for a column of width bytes: s itself when it fits, else its start and
 * its end in buf (at least width + 1 bytes) with '~' between, cut on UTF-8
 * boundaries: a cut name shows that it was cut, and names that differ at
 * their end still differ. */
const char *br_cli_fit(const char *s, size_t width, char *buf, size_t size);

int br_cli_validate(int argc, char **argv);
int br_cli_run(int argc, char **argv);
int br_cli_status(int argc, char **argv);
int br_cli_movie(int argc, char **argv);
int br_cli_tasks(int argc, char **argv);
int br_cli_show(int argc, char **argv);
int br_cli_log(int argc, char **argv);
int br_cli_depot(int argc, char **argv);
int br_cli_push(int argc, char **argv);
int br_cli_pull(int argc, char **argv);
int br_cli_ctl(int argc, char **argv);
int br_cli_token(int argc, char **argv);
int br_cli_server(int argc, char **argv);
int br_cli_agent(int argc, char **argv);
int br_cli_submit(int argc, char **argv);
int br_cli_ls(int argc, char **argv);
int br_cli_cancel(int argc, char **argv);
int br_cli_retry(int argc, char **argv);
int br_cli_pause(int argc, char **argv);
int br_cli_resume(int argc, char **argv);
int br_cli_workers(int argc, char **argv);
/* show and log on a server (farm.c): when --server is given, or
 * $BRAID_SERVER is set and --store is not. */
int br_cli_wants_remote(int argc, char **argv);
int br_cli_show_remote(int argc, char **argv);
int br_cli_log_remote(int argc, char **argv);

#endif
