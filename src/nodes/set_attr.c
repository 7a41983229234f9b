/* set_attr: renames, then deletes, then sets attributes with literal values. */
#include <braid/node.h>
#include <braid/script.h>

#include <stdio.h>
#include <string.h>

static int init(br_node *node, void **state, br_error *err) {
  json_t *params = br_node_params(node);
  json_t *del = json_object_get(params, "delete");
  if (br_script_is_expr(del)) del = NULL; /* checked when evaluated */
  for (size_t i = 0; i < json_array_size(del); i++) {
    if (!json_is_string(json_array_get(del, i))) {
      char sub[32];
      snprintf(sub, sizeof sub, "%zu", i);
      return br_node_fail_at_param(node, err, "delete", sub,
                                   "parameter 'delete' must list attribute names");
    }
  }
  const char *k;
  json_t *v;
  json_object_foreach(json_object_get(params, "rename"), k, v) {
    if (!json_is_string(v) || !*json_string_value(v))
      return br_node_fail_at_param(node, err, "rename", k,
                                   "parameter 'rename': '%s' must map to a new name", k);
  }
  (void)state;
  return BR_OK;
}

static int process(br_node_ctx *ctx) {
  br_task *t = br_ctx_task(ctx);
  json_t *rename = br_ctx_param(ctx, "rename"), *del = br_ctx_param(ctx, "delete"),
         *set = br_ctx_param(ctx, "set");
  const char *k;
  json_t *v;
  /* what expressions gave: a new name that is not one would drop the attribute */
  json_object_foreach(rename, k, v) {
    if (json_is_null(v))
      return br_ctx_fail(ctx, "rename '%s': the new name is null (an expression that gave nil: "
                         "does the task have the attribute?)", k);
    if (!json_is_string(v) || !*json_string_value(v))
      return br_ctx_fail(ctx, "rename '%s': the new name must be a non-empty string", k);
  }
  for (size_t i = 0; i < json_array_size(del); i++)
    if (!json_is_string(json_array_get(del, i)))
      return br_ctx_fail(ctx, "delete: item %zu is not an attribute name", i);
  if (json_object_size(rename) || json_array_size(del) || json_object_size(set)) {
    json_t *a = br_ctx_attrs(ctx, t);
    json_object_foreach(rename, k, v) {
      json_t *old = json_object_get(a, k);
      if (!old) continue;
      json_incref(old);
      json_object_del(a, k);
      json_object_set_new(a, json_string_value(v), old);
    }
    for (size_t i = 0; i < json_array_size(del); i++)
      json_object_del(a, json_string_value(json_array_get(del, i)));
    json_object_update(a, set);
  }
  br_ctx_route(ctx, 0);
  return 0;
}

static const br_param_spec params[] = {
    {"set", BR_PARAM_OBJECT, "{}", false, "attributes to set, with their values"},
    {"delete", BR_PARAM_LIST, "[]", false, "names of attributes to delete"},
    {"rename", BR_PARAM_OBJECT, "{}", false, "{old: new} attribute names"},
    {NULL, 0, NULL, false, NULL},
};

const br_node_type br_node_set_attr = {
    .name = "set_attr",
    .help = "set, delete and rename attributes",
    .children_port = -1,
    .params = params,
    .init = init,
    .process = process,
};
