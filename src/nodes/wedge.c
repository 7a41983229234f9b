/* wedge: the Cartesian product of several parameters, as a split. Each
 * parameter is {"attr": name, "values": [...]} or {"attr": name, "count": N,
 * "start": x, "step": dx}. The first parameter varies slowest. Element 0 is
 * the original task; every element also gets its index in `index_attr`.
 * An attribute is one entry's only (nor index_attr): see check_wedges. */
#include <braid/node.h>
#include <braid/script.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ELEMENTS 1000000

/* Checks a "wedges" value and index_attr (NULL when not known yet); on
 * error fills msg and returns -1 with the index of the bad entry in *bad
 * (or 0), or -2 when index_attr is what is wrong.
 * Two entries may not set one attribute: each element would keep the
 * later entry's value, so the earlier entry's values vanish and every
 * variant comes several times. Nor may index_attr, whose index would
 * replace the entry's values. */
static int check_wedges(const json_t *wedges, const char *index_attr, char *msg, size_t size,
                        size_t *bad) {
  size_t total = 1;
  *bad = 0;
  if (!json_is_array(wedges) || json_array_size(wedges) == 0) {
    snprintf(msg, size, "parameter 'wedges' needs at least one entry");
    return -1;
  }
  for (size_t i = 0; i < json_array_size(wedges); i++) {
    json_t *w = json_array_get(wedges, i);
    const char *k;
    json_t *v;
    *bad = i;
    if (!json_is_object(w) || !json_is_string(json_object_get(w, "attr"))) {
      snprintf(msg, size, "wedges[%zu] must be an object with a string \"attr\"", i);
      return -1;
    }
    const char *attr = json_string_value(json_object_get(w, "attr"));
    for (size_t j = 0; j < i; j++) {
      if (strcmp(attr, json_string_value(json_object_get(json_array_get(wedges, j), "attr"))))
        continue;
      snprintf(msg, size,
               "wedges[%zu]: attribute '%s' is also wedges[%zu]'s: every element would get "
               "the last entry's value, repeating variants and losing the others (give all "
               "of its values in one entry)", i, attr, j);
      return -1;
    }
    if (index_attr && *index_attr && strcmp(attr, index_attr) == 0) {
      snprintf(msg, size,
               "index_attr '%s' is also the attribute of wedges[%zu]: the element's index "
               "would replace its values (set another index_attr, or \"\" for none)", attr, i);
      return -2;
    }
    json_object_foreach(w, k, v) {
      if (strcmp(k, "attr") && strcmp(k, "values") && strcmp(k, "count") && strcmp(k, "start") &&
          strcmp(k, "step")) {
        snprintf(msg, size, "wedges[%zu]: unknown key '%s' (expected attr, values or count, start, step)",
                 i, k);
        return -1;
      }
    }
    json_t *values = json_object_get(w, "values"), *count = json_object_get(w, "count");
    size_t n;
    if (values) {
      if (!json_is_array(values) || json_array_size(values) == 0 || count) {
        snprintf(msg, size, "wedges[%zu]: \"values\" must be a non-empty list (and no \"count\")", i);
        return -1;
      }
      n = json_array_size(values);
    } else {
      json_t *start = json_object_get(w, "start"), *step = json_object_get(w, "step");
      if (!json_is_integer(count) || json_integer_value(count) < 1 ||
          (start && !json_is_number(start)) || (step && !json_is_number(step))) {
        snprintf(msg, size,
                 "wedges[%zu]: give \"values\", or a positive integer \"count\" with numeric "
                 "\"start\" and \"step\"", i);
        return -1;
      }
      n = (size_t)json_integer_value(count);
      /* whole numbers stay whole (axis_value): the last one must fit in int64 */
      json_int_t last;
      if ((!start || json_is_integer(start)) && (!step || json_is_integer(step)) &&
          (__builtin_mul_overflow(json_integer_value(count) - 1,
                                  step ? json_integer_value(step) : 1, &last) ||
           __builtin_add_overflow(last, start ? json_integer_value(start) : 0, &last))) {
        snprintf(msg, size, "wedges[%zu]: start + step * (count - 1) is past a 64-bit integer",
                 i);
        return -1;
      }
    }
    if (n > MAX_ELEMENTS || (total *= n) > MAX_ELEMENTS) {
      snprintf(msg, size, "the wedge has more than %d combinations", MAX_ELEMENTS);
      return -1;
    }
  }
  return 0;
}

static int init(br_node *node, void **state, br_error *err) {
  json_t *wedges = json_object_get(br_node_params(node), "wedges");
  char msg[512], sub[32];
  size_t bad;
  (void)state;
  if (br_script_is_expr(wedges)) return BR_OK; /* checked per task */
  json_t *index = json_object_get(br_node_params(node), "index_attr");
  const char *index_attr = !index ? "wedge" /* its default */
                           : json_is_string(index) && !br_script_is_expr(index)
                               ? json_string_value(index)
                               : NULL; /* known per task */
  int rc = check_wedges(wedges, index_attr, msg, sizeof msg, &bad);
  if (rc == -2) return br_node_fail_at_param(node, err, "index_attr", NULL, "%s", msg);
  if (rc) {
    snprintf(sub, sizeof sub, "%zu", bad);
    return br_node_fail_at_param(node, err, "wedges", json_array_size(wedges) ? sub : NULL, "%s",
                                 msg);
  }
  return BR_OK;
}

static size_t axis_size(const json_t *w) {
  json_t *values = json_object_get(w, "values");
  return values ? json_array_size(values) : (size_t)json_integer_value(json_object_get(w, "count"));
}

static json_t *axis_value(const json_t *w, size_t i) {
  json_t *values = json_object_get(w, "values");
  if (values) return json_incref(json_array_get(values, i));
  json_t *start = json_object_get(w, "start"), *step = json_object_get(w, "step");
  if ((!start || json_is_integer(start)) && (!step || json_is_integer(step)))
    return json_integer((start ? json_integer_value(start) : 0) +
                        (json_int_t)i * (step ? json_integer_value(step) : 1));
  double s = start ? json_number_value(start) : 0, d = step ? json_number_value(step) : 1;
  return json_real(s + (double)i * d);
}

static int process(br_node_ctx *ctx) {
  json_t *wedges = br_ctx_param(ctx, "wedges");
  char msg[512];
  size_t bad;
  if (!wedges) return -1;
  const char *index_attr = br_ctx_param_str(ctx, "index_attr", "");
  if (check_wedges(wedges, index_attr, msg, sizeof msg, &bad))
    return br_ctx_fail(ctx, "%s", msg);
  size_t naxes = json_array_size(wedges), total = 1;
  for (size_t a = 0; a < naxes; a++) total *= axis_size(json_array_get(wedges, a));
  json_t **attrs = calloc(total, sizeof *attrs);
  if (!attrs) return br_ctx_fail(ctx, "out of memory");
  for (size_t e = 0; e < total; e++) {
    attrs[e] = json_object();
    size_t rest = e;
    /* the last axis varies fastest */
    for (size_t a = naxes; a-- > 0;) {
      json_t *w = json_array_get(wedges, a);
      size_t n = axis_size(w);
      json_object_set_new(attrs[e], json_string_value(json_object_get(w, "attr")),
                          axis_value(w, rest % n));
      rest /= n;
    }
    if (*index_attr) json_object_set_new(attrs[e], index_attr, json_integer((json_int_t)e));
  }
  br_ctx_split(ctx, total, attrs);
  free(attrs);
  br_ctx_route(ctx, 0);
  return 0;
}

static const br_param_spec params[] = {
    {"wedges", BR_PARAM_LIST, NULL, false,
     "[{attr, values: [...]} or {attr, count, start, step}, ...]; the first varies slowest; "
     "one entry per attribute"},
    {"index_attr", BR_PARAM_STRING, "\"wedge\"", false,
     "attribute that receives the element's index (\"\" for none)"},
    {NULL, 0, NULL, false, NULL},
};

const br_node_type br_node_wedge = {
    .name = "wedge",
    .help = "split a task into the Cartesian product of parameter values",
    .children_port = -1,
    .params = params,
    .init = init,
    .process = process,
};
