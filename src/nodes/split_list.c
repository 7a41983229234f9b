/* split_list: splits a list attribute into chunks of `chunk` items; each
 * element gets its chunk (as a list) in `into` (default: the same attribute). */
#include <braid/node.h>

#include <stdlib.h>

static int init(br_node *node, void **state, br_error *err) {
  json_t *chunk = json_object_get(br_node_params(node), "chunk");
  if (json_is_integer(chunk) && json_integer_value(chunk) < 1)
    return br_node_fail_at_param(node, err, "chunk", NULL, "parameter 'chunk' must be at least 1");
  (void)state;
  return BR_OK;
}

static int process(br_node_ctx *ctx) {
  const char *attr = br_ctx_param_str(ctx, "attr", "");
  const char *into = br_ctx_param_str(ctx, "into", "");
  json_int_t chunk = br_ctx_param_int(ctx, "chunk", 1);
  if (!*into) into = attr;
  json_t *list = json_object_get(br_task_attrs(br_ctx_task(ctx)), attr);
  if (!json_is_array(list))
    return br_ctx_fail(ctx, "split_list needs a list attribute '%s'%s", attr,
                       list ? "" : " (the task has none)");
  if (chunk < 1) return br_ctx_fail(ctx, "parameter 'chunk' must be at least 1");
  size_t len = json_array_size(list);
  size_t n = len ? (len + (size_t)chunk - 1) / (size_t)chunk : 1;
  json_t **attrs = calloc(n, sizeof *attrs);
  if (!attrs) return br_ctx_fail(ctx, "out of memory");
  for (size_t i = 0; i < n; i++) {
    json_t *part = json_array();
    for (size_t k = i * (size_t)chunk; k < len && k < (i + 1) * (size_t)chunk; k++)
      json_array_append(part, json_array_get(list, k));
    attrs[i] = json_object();
    json_object_set_new(attrs[i], into, part);
  }
  br_ctx_split(ctx, n, attrs);
  free(attrs);
  br_ctx_route(ctx, 0);
  return 0;
}

static const br_param_spec params[] = {
    {"attr", BR_PARAM_STRING, NULL, false, "the list attribute to split"},
    {"chunk", BR_PARAM_INT, "1", false, "items per element"},
    {"into", BR_PARAM_STRING, "\"\"", false, "attribute for each chunk (default: attr)"},
    {NULL, 0, NULL, false, NULL},
};

const br_node_type br_node_split_list = {
    .name = "split_list",
    .help = "split a list attribute into chunks",
    .children_port = -1,
    .params = params,
    .init = init,
    .process = process,
};
