/* command: runs a program for each task, as a job on a worker. `argv` is a
 * list of arguments in which {attr} is replaced by the task's attribute (an
 * argument that is exactly "{list}" expands to one argument per item); or
 * `shell` is a /bin/sh command line. Jobs report back through the runtime
 * channel (`braid ctl set/spawn/progress`); children leave by "children". */
#include <braid/script.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "invoke.h"

static int init(br_node *node, void **state, br_error *err) {
  json_t *p = br_node_params(node);
  int has_argv = json_array_size(json_object_get(p, "argv")) > 0 ||
                 (json_object_get(p, "argv") && !json_is_array(json_object_get(p, "argv")));
  int has_shell = json_is_string(json_object_get(p, "shell")) ? *json_string_value(json_object_get(p, "shell")) != 0
                                                              : json_object_get(p, "shell") != NULL;
  (void)state;
  if (has_argv == has_shell) {
    return br_node_fail_at_param(node, err, has_argv ? "shell" : "argv", NULL,
                                 "give either \"argv\" (a list) or \"shell\" (a command line)");
  }
  json_t *argv = json_object_get(p, "argv");
  for (size_t i = 0; json_is_array(argv) && i < json_array_size(argv); i++) {
    json_t *a = json_array_get(argv, i);
    if (json_is_string(a) || json_is_number(a) || br_script_is_expr(a)) continue;
    char sub[32];
    snprintf(sub, sizeof sub, "%zu", i);
    return br_node_fail_at_param(node, err, "argv", sub,
                                 "parameter 'argv': argv[%zu] must be a string or a number", i);
  }
  static const char *const substituted[] = {"argv", "shell", NULL};
  br_invoke_lint_params(node, substituted);
  return br_invoke_check(node, err);
}

static int process(br_node_ctx *ctx) {
  const json_t *attrs = br_task_attrs(br_ctx_task(ctx));
  char **argv = NULL, msg[1024];
  size_t n = 0;
  json_t *list = br_ctx_param(ctx, "argv");
  const char *shell = br_ctx_param_str(ctx, "shell", "");
  if (*shell) {
    char *cmd = br_invoke_subst(attrs, shell, msg, sizeof msg);
    if (!cmd) return br_ctx_fail(ctx, "shell: %s", msg);
    br_argv_push(&argv, &n, strdup("/bin/sh"));
    br_argv_push(&argv, &n, strdup("-c"));
    br_argv_push(&argv, &n, cmd);
  } else {
    if (!json_is_array(list)) return br_ctx_fail(ctx, "parameter 'argv' must be a list");
    for (size_t i = 0; i < json_array_size(list); i++) {
      json_t *a = json_array_get(list, i);
      if (json_is_string(a)) {
        const char *s = json_string_value(a);
        size_t len = strlen(s);
        /* "{files}" alone: one argument per item of a list attribute */
        if (len > 2 && s[0] == '{' && s[len - 1] == '}' && s[1] != '{' && !strchr(s + 1, '{')) {
          char name[256];
          snprintf(name, sizeof name, "%.*s", (int)(len - 2), s + 1);
          json_t *v = json_object_get(attrs, name);
          if (json_is_array(v)) {
            for (size_t k = 0; k < json_array_size(v); k++) {
              json_t *item = json_array_get(v, k);
              br_argv_push(&argv, &n, json_is_string(item) ? strdup(json_string_value(item))
                                                           : json_dumps(item, JSON_ENCODE_ANY | JSON_COMPACT));
            }
            continue;
          }
        }
        char *arg = br_invoke_subst(attrs, s, msg, sizeof msg);
        if (!arg) {
          br_argv_free(argv);
          return br_ctx_fail(ctx, "argv[%zu]: %s", i, msg);
        }
        br_argv_push(&argv, &n, arg);
      } else if (json_is_number(a)) {
        br_argv_push(&argv, &n, json_dumps(a, JSON_ENCODE_ANY));
      } else {
        br_argv_free(argv);
        if (json_is_null(a))
          return br_ctx_fail(ctx, "argv[%zu] is null (an expression that gave nil: does the "
                             "task have the attribute?)", i);
        return br_ctx_fail(ctx, "argv[%zu] must be a string or a number", i);
      }
    }
  }
  if (!n) {
    br_argv_free(argv);
    return br_ctx_fail(ctx, "the command is empty");
  }
  int rc = br_invoke_run(ctx, argv);
  br_argv_free(argv);
  return rc;
}

static const char *const outputs[] = {"out", "children", NULL};

static const br_param_spec params[] = {
    {"argv", BR_PARAM_LIST, "[]", false, "the program and its arguments ({attr} substituted)"},
    {"shell", BR_PARAM_STRING, "\"\"", false, "a /bin/sh command line, instead of argv"},
    BR_INVOKE_PARAMS,
    {NULL, 0, NULL, false, NULL},
};

const br_node_type br_node_command = {
    .name = "command",
    .help = "run a program for each task",
    .outputs = outputs,
    .children_port = 1,
    .params = params,
    .init = init,
    .process = process,
};
