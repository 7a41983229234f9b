/* Shared parts of the push and pull node types (see xfer_node.h). */
#include "xfer_node.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *br_xfer_node_str(br_node_ctx *ctx, const char *param) {
  const char *raw = br_ctx_param_str(ctx, param, "");
  char msg[1024];
  char *s = br_invoke_subst(br_task_attrs(br_ctx_task(ctx)), raw, msg, sizeof msg);
  if (!s) {
    br_ctx_fail(ctx, "%s: %s", param, msg);
    return NULL;
  }
  if (!*s) {
    free(s);
    br_ctx_fail(ctx, "parameter '%s' is empty", param);
    return NULL;
  }
  return s;
}

char *br_xfer_node_ref(const char *depot, const char *name) {
  char *ref = NULL;
  if (strstr(name, "://")) return strdup(name);
  size_t dl = strlen(depot);
  while (dl && depot[dl - 1] == '/') dl--;
  while (*name == '/') name++;
  if (asprintf(&ref, "%.*s/%s", (int)dl, depot, name) < 0) abort();
  return ref;
}

int br_xfer_node_begin(br_node_ctx *ctx, const char *verb, char ***argv, size_t *n, char ***env) {
  const json_t *attrs = br_task_attrs(br_ctx_task(ctx));
  size_t nenv = 0;
  char msg[1024];
  br_argv_push(argv, n, strdup(br_ctx_param_str(ctx, "braid", "braid")));
  br_argv_push(argv, n, strdup(verb));
  /* Progress goes to the task through the runtime channel; plain lines
   * in the log. */
  br_argv_push(argv, n, strdup("--report-progress"));
  const char *token = br_ctx_param_str(ctx, "token", "");
  const char *file = br_ctx_param_str(ctx, "token_file", "");
  const char *var = br_ctx_param_str(ctx, "token_env", "");
  if ((*token != 0) + (*file != 0) + (*var != 0) > 1)
    return br_ctx_fail(ctx, "give one of token, token_file and token_env");
  if (*token) {
    char *kv = NULL;
    if (asprintf(&kv, "BRAID_TOKEN=%s", token) < 0) abort();
    br_argv_push(env, &nenv, kv);
  } else if (*file) {
    char *f = br_xfer_node_str(ctx, "token_file");
    if (!f) return -1;
    br_argv_push(argv, n, strdup("--token-file"));
    br_argv_push(argv, n, f);
  } else if (*var) {
    br_argv_push(argv, n, strdup("--token-env"));
    br_argv_push(argv, n, strdup(var));
  }
  json_t *args = br_ctx_param(ctx, "args");
  for (size_t i = 0; i < json_array_size(args); i++) {
    json_t *a = json_array_get(args, i);
    char *s = json_is_string(a) ? br_invoke_subst(attrs, json_string_value(a), msg, sizeof msg)
              : json_is_number(a) ? json_dumps(a, JSON_ENCODE_ANY)
                                  : NULL;
    if (!s)
      return br_ctx_fail(ctx, "args[%zu]: %s", i,
                         json_is_string(a) ? msg : "must be a string or a number");
    br_argv_push(argv, n, s);
  }
  return 0;
}

/* The last line braid wrote as "braid: ..." (its error), else the last
 * non-empty line of the log tail, into out. */
static void last_error(const char *tail, char *out, size_t size) {
  out[0] = 0;
  if (!tail) return;
  const char *best = NULL, *last = NULL;
  size_t best_len = 0, last_len = 0;
  for (const char *p = tail; *p;) {
    const char *end = strchr(p, '\n');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    while (len && (p[len - 1] == '\r' || p[len - 1] == ' ')) len--;
    if (len >= 7 && strncmp(p, "braid: ", 7) == 0) best = p + 7, best_len = len - 7;
    if (len) last = p, last_len = len;
    if (!end) break;
    p = end + 1;
  }
  if (best) snprintf(out, size, "%.*s", (int)best_len, best);
  else if (last) snprintf(out, size, "%.*s", (int)last_len, last);
}

int br_xfer_node_post(br_node_ctx *ctx, const char *verb, int (*again)(br_node_ctx *ctx)) {
  const br_inv_result *r = br_ctx_inv_result(ctx);
  if (r->status == BR_INV_OK) {
    br_ctx_route(ctx, 0);
    return 0;
  }
  int32_t attempts = br_task_attempts(br_ctx_task(ctx));
  int64_t retries = br_ctx_param_int(ctx, "retries", 2);
  if ((r->status == BR_INV_RETRY || r->status == BR_INV_LOST) && attempts <= retries)
    return again(ctx);
  char msg[700];
  last_error(r->log_tail, msg, sizeof msg);
  const char *why = r->error ? r->error : msg;
  switch (r->status) {
  case BR_INV_TIMEOUT:
  case BR_INV_SPAWN_ERROR:
  case BR_INV_LOST:
    return br_ctx_fail(ctx, "%s: %s", verb, r->error ? r->error : "the job did not finish");
  default:
    if (r->term_signal)
      return br_ctx_fail(ctx, "%s: killed by signal %d", verb, r->term_signal);
    if (r->status == BR_INV_RETRY)
      return br_ctx_fail(ctx, "%s (exit code %d after %d attempt%s)", *why ? why : "failed",
                         r->exit_code, (int)attempts, attempts == 1 ? "" : "s");
    return br_ctx_fail(ctx, "%s", *why ? why : "failed");
  }
}

int br_xfer_node_init(br_node *node, void **state, br_error *err) {
  (void)state;
  static const char *const substituted[] = {"src", "name", "dest", "depot", "snapshots", "args",
                                            NULL};
  br_invoke_lint_params(node, substituted); /* those a node type lacks are not there */
  return br_invoke_check(node, err);
}
