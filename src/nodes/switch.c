/* switch: sends a task to one of several outputs by an attribute's value.
 * Outputs are named after the cases ("hero", "1", ...) plus "default". */
#include <braid/node.h>

#include <stdlib.h>
#include <string.h>

static int outputs_from_params(const json_t *params, json_t *names, br_error *err) {
  json_t *cases = json_object_get(params, "cases");
  for (size_t i = 0; i < json_array_size(cases); i++) {
    json_t *c = json_array_get(cases, i);
    if (!json_is_string(c) && !json_is_integer(c) && !json_is_boolean(c))
      return br_error_set(err, BR_EINVAL, "switch cases must be strings, integers or booleans");
    char *name = json_is_string(c) ? strdup(json_string_value(c)) : json_dumps(c, JSON_ENCODE_ANY);
    if (!name) return BR_ENOMEM;
    if (!*name || strchr(name, '.')) {
      free(name);
      return br_error_set(err, BR_EINVAL, "switch case names must be non-empty and without '.'");
    }
    for (size_t j = 0; j < json_array_size(names); j++)
      if (strcmp(json_string_value(json_array_get(names, j)), name) == 0) {
        br_error_set(err, BR_EINVAL, "switch case '%s' is listed twice", name);
        free(name);
        return BR_EINVAL;
      }
    json_array_append_new(names, json_string(name));
    free(name);
  }
  json_array_append_new(names, json_string("default"));
  return BR_OK;
}

static int same(const json_t *a, const json_t *b) {
  if (json_is_number(a) && json_is_number(b)) return json_number_value(a) == json_number_value(b);
  return json_equal(a, b);
}

static int process(br_node_ctx *ctx) {
  json_t *cases = br_ctx_param(ctx, "cases");
  const char *attr = br_ctx_param_str(ctx, "attr", "");
  json_t *v = json_object_get(br_task_attrs(br_ctx_task(ctx)), attr);
  size_t n = json_array_size(cases), port = n; /* default */
  for (size_t i = 0; v && i < n; i++)
    if (same(v, json_array_get(cases, i))) {
      port = i;
      break;
    }
  br_ctx_route(ctx, (int)port);
  return 0;
}

static const char *const literal[] = {"cases", NULL};

static const br_param_spec params[] = {
    {"attr", BR_PARAM_STRING, NULL, false, "the attribute whose value chooses the output"},
    {"cases", BR_PARAM_LIST, NULL, false, "values, one output each (plus 'default')"},
    {NULL, 0, NULL, false, NULL},
};

const br_node_type br_node_switch = {
    .name = "switch",
    .help = "route tasks by an attribute's value",
    .children_port = -1,
    .literal_params = literal,
    .params = params,
    .outputs_from_params = outputs_from_params,
    .process = process,
};
