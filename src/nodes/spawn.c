/* spawn: creates children of the task. With per_frame, one child per frame
 * of the task's range (the frame in `frame_attr`); otherwise `count`
 * children (their index in `index_attr`). Children inherit the parent's
 * attributes unless `inherit` is false, get `attrs` on top, and leave by the
 * "children" output; the parent leaves by "out". */
#include <braid/node.h>

#include <stdint.h>
#include <stdio.h>

#define MAX_CHILDREN 1000000

static int init(br_node *node, void **state, br_error *err) {
  json_t *count = json_object_get(br_node_params(node), "count");
  (void)state;
  if (json_is_integer(count) &&
      (json_integer_value(count) < 0 || json_integer_value(count) > MAX_CHILDREN))
    return br_node_fail_at_param(node, err, "count", NULL,
                                 "parameter 'count' must be from 0 to %d", MAX_CHILDREN);
  return BR_OK;
}

static int process(br_node_ctx *ctx) {
  br_task *t = br_ctx_task(ctx);
  const json_t *pattrs = br_task_attrs(t);
  bool inherit = br_ctx_param_bool(ctx, "inherit", true);
  json_t *extra = br_ctx_param(ctx, "attrs");
  const char *prefix = br_ctx_param_str(ctx, "name", "");
  json_int_t start = 0, end, step = 1;
  const char *attr;
  if (br_ctx_param_bool(ctx, "per_frame", false)) {
    const char *sa = br_ctx_param_str(ctx, "start_attr", "frame_start");
    const char *ea = br_ctx_param_str(ctx, "end_attr", "frame_end");
    const char *pa = br_ctx_param_str(ctx, "step_attr", "frame_step");
    json_t *s = json_object_get(pattrs, sa), *e = json_object_get(pattrs, ea),
           *p = json_object_get(pattrs, pa);
    if (!json_is_integer(s) || !json_is_integer(e))
      return br_ctx_fail(ctx, "spawn per_frame needs integer attributes '%s' and '%s'", sa, ea);
    if (p && (!json_is_integer(p) || json_integer_value(p) < 1))
      return br_ctx_fail(ctx, "attribute '%s' must be a positive integer", pa);
    start = json_integer_value(s);
    end = json_integer_value(e);
    if (p) step = json_integer_value(p);
    attr = br_ctx_param_str(ctx, "frame_attr", "frame");
  } else {
    json_int_t count = br_ctx_param_int(ctx, "count", 1);
    if (count < 0) return br_ctx_fail(ctx, "parameter 'count' must not be negative");
    end = count - 1;
    attr = br_ctx_param_str(ctx, "index_attr", "index");
  }
  /* counted in unsigned offsets from start: the range may reach either end
   * of int64, where stepping past end would overflow */
  uint64_t last = end < start ? 0 : ((uint64_t)end - (uint64_t)start) / (uint64_t)step;
  if (last >= MAX_CHILDREN) return br_ctx_fail(ctx, "more than %d children", MAX_CHILDREN);
  uint64_t n = end < start ? 0 : last + 1;
  for (uint64_t i = 0; i < n; i++) {
    json_int_t v = (json_int_t)((uint64_t)start + i * (uint64_t)step);
    json_t *a = inherit ? json_copy((json_t *)pattrs) : json_object();
    json_object_update(a, extra);
    if (*attr) json_object_set_new(a, attr, json_integer(v));
    char name[256];
    snprintf(name, sizeof name, "%s%s%lld", *prefix ? prefix : (br_task_name(t) ? br_task_name(t) : "task"),
             *prefix ? "" : ".", (long long)v);
    br_ctx_spawn(ctx, name, a);
  }
  br_ctx_route(ctx, 0);
  return 0;
}

static const char *const outputs[] = {"out", "children", NULL};

static const br_param_spec params[] = {
    {"per_frame", BR_PARAM_BOOL, "false", false, "one child per frame of the task's range"},
    {"count", BR_PARAM_INT, "1", false, "number of children (without per_frame)"},
    {"start_attr", BR_PARAM_STRING, "\"frame_start\"", false, "first frame attribute"},
    {"end_attr", BR_PARAM_STRING, "\"frame_end\"", false, "last frame attribute"},
    {"step_attr", BR_PARAM_STRING, "\"frame_step\"", false, "frame step attribute"},
    {"frame_attr", BR_PARAM_STRING, "\"frame\"", false, "children's frame attribute"},
    {"index_attr", BR_PARAM_STRING, "\"index\"", false, "children's index attribute"},
    {"inherit", BR_PARAM_BOOL, "true", false, "children copy the parent's attributes"},
    {"attrs", BR_PARAM_OBJECT, "{}", false, "attributes set on every child"},
    {"name", BR_PARAM_STRING, "\"\"", false, "children's name prefix"},
    {NULL, 0, NULL, false, NULL},
};

const br_node_type br_node_spawn = {
    .name = "spawn",
    .help = "create child tasks (one per frame, or N)",
    .outputs = outputs,
    .children_port = 1,
    .params = params,
    .init = init,
    .process = process,
};
