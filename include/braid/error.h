/* Errors: every fallible braid call returns BR_OK (0) or a negative BR_E*
 * code and fills a br_error with the message and where it happened: a graph
 * file position, or the task and node a runtime error concerns. The library
 * never prints; callers decide how to show br_error_format()'s text. */
#ifndef BRAID_ERROR_H
#define BRAID_ERROR_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
  BR_OK = 0,
  BR_EINVAL = -1,    /* bad argument or input (graph file, attribute, ...) */
  BR_ENOMEM = -2,
  BR_EIO = -3,       /* file or database input/output */
  BR_ENOTFOUND = -4, /* no such task, node, graph, port ... */
  BR_ESTORE = -5,    /* the store refused an operation */
  BR_ESTATE = -6,    /* operation not valid in the object's current state */
  BR_ESCRIPT = -7,   /* expression or script failure */
  BR_EEXEC = -8,     /* could not run an invocation */
  BR_ECANCEL = -9,   /* cancelled */
  BR_ENET = -10,     /* network or protocol failure */
  BR_EAUTH = -11,    /* missing or wrong credentials */
  BR_EVERSION = -12, /* store schema newer than this braid */
};

typedef struct br_error {
  int code;
  char msg[1024];
  /* Where: a file position (graph files: line and column are 1-based; 0 = unknown) */
  char file[512];
  int line;
  int column;
  /* ... or the runtime objects concerned (0 / "" when not applicable). */
  int64_t task_id;
  char node[128];
} br_error;

/* What the user should know that did not stop a call (a line of a file
 * skipped, say), told to whoever gave the callback: the library never
 * prints. msg is one line without its end; it may come from any thread. */
typedef void br_warn_fn(void *ud, const char *msg);

/* Clears err (may be NULL). */
void br_error_clear(br_error *err);

/* Fills err (may be NULL) with code and a printf-style message, and clears
 * where (file, line, column, task, node): set those after it, with
 * br_error_at. Returns code so callers can write
 * `return br_error_set(err, BR_EINVAL, "...")`. */
int br_error_set(br_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Sets the position fields; file may be NULL to keep the current one. */
void br_error_at(br_error *err, const char *file, int line, int column);

/* Writes "file:line:column: message" or "task 12 at node 'x': message" into
 * buf. Returns buf. */
const char *br_error_format(const br_error *err, char *buf, size_t size);

const char *br_strerror(int code);

#ifdef __cplusplus
}
#endif
#endif
