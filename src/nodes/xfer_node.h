/* What the push and pull nodes share. Both are thin: their invocation runs
 * `braid push` or `braid pull` on the worker that has or needs the files
 * (local slots, an agent or Slurm alike), and the command line does the
 * transfer. Shared here: the token (never on a command line: the job gets
 * it in its environment, or reads it on the worker from a file or a
 * variable there), extra arguments, and the postprocess that makes braid's
 * own error line the task's error and runs again only what may pass. */
#ifndef BR_NODES_XFER_NODE_H
#define BR_NODES_XFER_NODE_H

#include "invoke.h"

/* `braid push` and `braid pull` exit with this when the depot was
 * unreachable or busy past their own retries. */
#define BR_XFER_NODE_TRANSIENT 75

#define BR_XFER_NODE_PARAMS                                                                   \
  {"token", BR_PARAM_STRING, "\"\"", false,                                                   \
   "the depot token, handed to the job in its environment (token_file or token_env keep it "  \
   "out of the graph)"},                                                                      \
  {"token_file", BR_PARAM_STRING, "\"\"", false, "a file on the worker that holds the token"}, \
  {"token_env", BR_PARAM_STRING, "\"\"", false,                                               \
   "an environment variable on the worker that holds the token (default: the job's "         \
   "BRAID_TOKEN or BRAID_TOKEN_FILE)"},                                                       \
  {"args", BR_PARAM_LIST, "[]", false,                                                        \
   "more arguments for the command, e.g. [\"--bwlimit\", \"20M\"] ({attr} substituted)"},    \
  {"braid", BR_PARAM_STRING, "\"braid\"", false, "the braid program on the worker"},         \
  {"retry_codes", BR_PARAM_LIST, "[75]", false,                                               \
   "exit codes that mean: run it again (75: the depot was unreachable or busy)"},             \
  {"retries", BR_PARAM_INT, "2", false,                                                       \
   "how many times a job that failed for a passing reason runs again; a bad token, a "       \
   "missing snapshot or a path problem fails the task at once"},                              \
  BR_INVOKE_PARAMS_BASE

/* Starts the command: braid VERB, the token options and the `args`
 * parameter. *env (NULL-terminated) gets BRAID_TOKEN=... when the token is
 * a parameter. Returns 0, or -1 with the task failed. */
int br_xfer_node_begin(br_node_ctx *ctx, const char *verb, char ***argv, size_t *n, char ***env);

/* A string parameter with {attr} substituted (malloc'd); NULL with the
 * task failed when it is missing, empty or names a missing attribute. */
char *br_xfer_node_str(br_node_ctx *ctx, const char *param);

/* The node types' init(): the invocation parameters (br_invoke_check). */
int br_xfer_node_init(br_node *node, void **state, br_error *err);

/* DEPOT/NAME: a name that has a scheme (depot://...) stands alone. */
char *br_xfer_node_ref(const char *depot, const char *name);

/* The postprocess: success routes by output 0; a transient failure (a
 * retry code, a lost worker) runs `again` within the retries; anything else
 * fails the task with braid's own message from the log. */
int br_xfer_node_post(br_node_ctx *ctx, const char *verb, int (*again)(br_node_ctx *ctx));

#endif
