/* split_range: splits a frame range (start, end, step attributes) into
 * chunks of `chunk` frames; each element gets its own sub-range in the same
 * attributes. Element 0 is the original task, with the first chunk. */
#include <braid/node.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#define MAX_ELEMENTS 1000000

static int init(br_node *node, void **state, br_error *err) {
  json_t *chunk = json_object_get(br_node_params(node), "chunk");
  if (json_is_integer(chunk) && json_integer_value(chunk) < 1)
    return br_node_fail_at_param(node, err, "chunk", NULL, "parameter 'chunk' must be at least 1");
  (void)state;
  return BR_OK;
}

static int get_int(br_node_ctx *ctx, const char *attr, json_int_t *out, int required) {
  json_t *v = json_object_get(br_task_attrs(br_ctx_task(ctx)), attr);
  if (!v && !required) return 0;
  if (json_is_integer(v)) {
    *out = json_integer_value(v);
    return 0;
  }
  /* a whole float in int64's range (2^63 is not: casting it would be undefined) */
  double d = json_is_real(v) ? json_real_value(v) : NAN;
  if (d == floor(d) && d >= -0x1p63 && d < 0x1p63) {
    *out = (json_int_t)d;
    return 0;
  }
  return br_ctx_fail(ctx, "split_range needs an integer attribute '%s'%s", attr,
                     v ? "" : " (the task has none)");
}

static int process(br_node_ctx *ctx) {
  const char *sa = br_ctx_param_str(ctx, "start_attr", "frame_start");
  const char *ea = br_ctx_param_str(ctx, "end_attr", "frame_end");
  const char *pa = br_ctx_param_str(ctx, "step_attr", "frame_step");
  json_int_t chunk = br_ctx_param_int(ctx, "chunk", 10), start, end, step = 1;
  if (get_int(ctx, sa, &start, 1) || get_int(ctx, ea, &end, 1) || get_int(ctx, pa, &step, 0))
    return -1;
  if (step < 1) return br_ctx_fail(ctx, "attribute '%s' must be at least 1", pa);
  if (chunk < 1) return br_ctx_fail(ctx, "parameter 'chunk' must be at least 1");
  if (end < start) return br_ctx_fail(ctx, "empty frame range %lld-%lld", (long long)start, (long long)end);
  /* In unsigned arithmetic, as offsets from start: a range may span all of
   * int64 and a chunk may be as large as it, and no offset below exceeds
   * end - start. */
  uint64_t last = ((uint64_t)end - (uint64_t)start) / (uint64_t)step; /* frames - 1 */
  if (last / (uint64_t)chunk >= MAX_ELEMENTS)
    return br_ctx_fail(ctx, "the range makes more than %d chunks", MAX_ELEMENTS);
  uint64_t n = last / (uint64_t)chunk + 1;
  json_t **attrs = calloc((size_t)n, sizeof *attrs);
  if (!attrs) return br_ctx_fail(ctx, "out of memory");
  for (uint64_t i = 0; i < n; i++) {
    uint64_t first = i * (uint64_t)chunk, rest = last - first;
    uint64_t end_i = first + (rest < (uint64_t)chunk - 1 ? rest : (uint64_t)chunk - 1);
    json_int_t s = (json_int_t)((uint64_t)start + first * (uint64_t)step);
    json_int_t e = (json_int_t)((uint64_t)start + end_i * (uint64_t)step);
    attrs[i] = json_pack("{sIsI}", sa, s, ea, e);
  }
  br_ctx_split(ctx, (size_t)n, attrs);
  free(attrs);
  br_ctx_route(ctx, 0);
  return 0;
}

static const br_param_spec params[] = {
    {"chunk", BR_PARAM_INT, "10", false, "frames per chunk"},
    {"start_attr", BR_PARAM_STRING, "\"frame_start\"", false, "attribute holding the first frame"},
    {"end_attr", BR_PARAM_STRING, "\"frame_end\"", false, "attribute holding the last frame"},
    {"step_attr", BR_PARAM_STRING, "\"frame_step\"", false, "attribute holding the step (default 1)"},
    {NULL, 0, NULL, false, NULL},
};

const br_node_type br_node_split_range = {
    .name = "split_range",
    .help = "split a frame range into chunks",
    .children_port = -1,
    .params = params,
    .init = init,
    .process = process,
};
