/* What the nodes that run jobs (command, ffmpeg, push, pull) share: the invocation
 * parameters (environment, folder, resources, timeout, exit codes, retries,
 * progress) and {attr} substitution in arguments. */
#ifndef BR_NODES_INVOKE_H
#define BR_NODES_INVOKE_H

#include <braid/exec.h>
#include <braid/node.h>

#define BR_INVOKE_PARAMS \
  BR_INVOKE_PARAMS_HEAD, \
  {"retry_codes", BR_PARAM_LIST, "[]", false, "exit codes that mean: run it again"}, \
  {"retries", BR_PARAM_INT, "2", false, \
   "how many times a failed job runs again (not for timeouts or missing programs)"}, \
  BR_INVOKE_PARAMS_TAIL

/* The same without retry_codes and retries, for node types that choose
 * their own defaults (push and pull retry only what may pass). */
#define BR_INVOKE_PARAMS_BASE BR_INVOKE_PARAMS_HEAD, BR_INVOKE_PARAMS_TAIL

#define BR_INVOKE_PARAMS_HEAD \
  {"env", BR_PARAM_OBJECT, "{}", false, "extra environment: {NAME: value} ({attr} substituted)"}, \
  {"cwd", BR_PARAM_STRING, "\"\"", false, "working folder (default: braid's)"}, \
  {"cores", BR_PARAM_INT, "1", false, "slots the job takes"}, \
  {"memory_mb", BR_PARAM_INT, "0", false, "memory the job needs (for scheduling)"}, \
  {"timeout", BR_PARAM_FLOAT, "0", false, "seconds before the job is killed (0: never)"}, \
  {"good_codes", BR_PARAM_LIST, "[0]", false, "exit codes that mean success"}

#define BR_INVOKE_PARAMS_TAIL \
  {"progress", BR_PARAM_STRING, "\"\"", false, \
   "regex over stdout whose first group is the progress (0-1, or 0-100 with %)"}, \
  {"gpus", BR_PARAM_INT, "0", false, "GPUs the job needs (farm)"}, \
  {"tags", BR_PARAM_LIST, "[]", false, "worker tags the job needs, all of them (farm)"}, \
  {"limits", BR_PARAM_LIST, "[]", false, \
   "named farm-wide limits the job takes one token of, e.g. [\"houdini\"] (farm)"}, \
  {"max_running", BR_PARAM_INT, "0", false, \
   "at most this many of this node's jobs at once across the farm (0: no limit)"}, \
  {"slurm", BR_PARAM_OBJECT, "{}", false, \
   "Slurm settings: partition, account, qos, time (minutes or D-HH:MM:SS), args (list)"}

/* Substitutes {name} with the task's attribute (strings as they are, other
 * values as JSON; lists joined by spaces); "{{" and "}}" are literal braces.
 * Returns a new string, or NULL with a message in err (a missing attribute). */
char *br_invoke_subst(const json_t *attrs, const char *s, char *err, size_t errsize);

/* Fills inv from the node's invocation parameters and argv (NULL-terminated,
 * borrowed until the call returns), then br_ctx_invoke(). Returns 0 or -1
 * (the task is failed with a message). */
int br_invoke_run(br_node_ctx *ctx, char **argv);
/* The same with extra "NAME=value" entries (NULL-terminated, borrowed) after
 * the node's own environment; for what must not be on a command line. */
int br_invoke_run_env(br_node_ctx *ctx, char **argv, char *const *extra_env);

/* For a node type's init(): checks the invocation parameters the graph
 * gives as they are (expressions are checked per task): timeout, cores,
 * retries, resources, exit codes (0-255), env names, the progress regex.
 * Fills err at the parameter's position. */
int br_invoke_check(const br_node *node, br_error *err);

/* Warns (br_node_warn_at_param) about what {attr} substitution would do
 * to s against its writer's likely meaning: a {...} that is not an
 * attribute name (shell or awk braces), a '{' never closed, a ${NAME} meant
 * for the shell. br_invoke_check lints env and cwd; node types lint their
 * own substituted parameters with br_invoke_lint_params (NULL-terminated
 * names: strings, lists or objects of strings). */
void br_invoke_lint(const br_node *node, const char *param, const char *sub, const char *s);
void br_invoke_lint_params(const br_node *node, const char *const *params);

/* Appends to a growable NULL-terminated argv. */
void br_argv_push(char ***argv, size_t *n, char *arg /* owned */);
void br_argv_free(char **argv);

#endif
