/* Attribute promotion rules (see promote.h). */
#include "promote.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { R_APPEND, R_EXTEND, R_FIRST, R_LAST, R_SUM, R_MIN, R_MAX, R_COUNT } rule_kind;

static const char *const rule_names[] = {"append", "extend", "first", "last",
                                         "sum",    "min",    "max",   "count"};

typedef struct rule {
  char *target, *from, *sort;
  rule_kind kind;
} rule;

struct br_promote {
  rule *rules;
  size_t n;
};

void br_promote_free(br_promote *p) {
  if (!p) return;
  for (size_t i = 0; i < p->n; i++) {
    free(p->rules[i].target);
    free(p->rules[i].from);
    free(p->rules[i].sort);
  }
  free(p->rules);
  free(p);
}

static int parse_kind(const char *s, rule_kind *k) {
  for (size_t i = 0; i < sizeof rule_names / sizeof rule_names[0]; i++)
    if (strcmp(s, rule_names[i]) == 0) {
      *k = (rule_kind)i;
      return 0;
    }
  return -1;
}

int br_promote_parse(const json_t *spec, br_promote **out, const char **bad_key, br_error *err) {
  *out = NULL;
  br_promote *p = calloc(1, sizeof *p);
  if (!p) return br_error_set(err, BR_ENOMEM, "out of memory");
  size_t n = spec ? json_object_size(spec) : 0;
  p->rules = calloc(n + 1, sizeof *p->rules);
  if (!p->rules) {
    free(p);
    return br_error_set(err, BR_ENOMEM, "out of memory");
  }
  const char *key;
  json_t *v;
  if (spec) json_object_foreach((json_t *)spec, key, v) {
    rule *r = &p->rules[p->n];
    const char *kind = NULL, *from = key, *sort = NULL;
    if (json_is_string(v)) {
      kind = json_string_value(v);
    } else if (json_is_object(v)) {
      const char *k2;
      json_t *v2;
      json_object_foreach(v, k2, v2) {
        if (strcmp(k2, "rule") && strcmp(k2, "from") && strcmp(k2, "sort")) {
          *bad_key = key;
          br_promote_free(p);
          return br_error_set(err, BR_EINVAL,
                              "promote '%s': unknown key '%s' (expected rule, from, sort)", key, k2);
        }
        if (!json_is_string(v2)) {
          *bad_key = key;
          br_promote_free(p);
          return br_error_set(err, BR_EINVAL, "promote '%s': '%s' must be a string", key, k2);
        }
      }
      kind = json_string_value(json_object_get(v, "rule"));
      if (json_object_get(v, "from")) from = json_string_value(json_object_get(v, "from"));
      sort = json_string_value(json_object_get(v, "sort"));
    }
    if (!kind || parse_kind(kind, &r->kind)) {
      *bad_key = key;
      br_promote_free(p);
      return br_error_set(err, BR_EINVAL,
                          "promote '%s': the rule must be one of append, extend, first, last, "
                          "sum, min, max, count%s%s%s",
                          key, kind ? " (got '" : "", kind ? kind : "", kind ? "')" : "");
    }
    r->target = strdup(key);
    r->from = strdup(from);
    r->sort = sort ? strdup(sort) : NULL;
    p->n++;
    if (!r->target || !r->from || (sort && !r->sort)) {
      br_promote_free(p);
      return br_error_set(err, BR_ENOMEM, "out of memory");
    }
  }
  *out = p;
  return BR_OK;
}

/* Ranks values for "sort": numbers, strings, the others (equal among
 * themselves), missing. */
static int value_rank(const json_t *v) {
  return !v ? 3 : json_is_number(v) ? 0 : json_is_string(v) ? 1 : 2;
}

/* Orders JSON values for "sort" by rank, then numbers by value and strings
 * by strcmp. A total order: qsort needs one (comparing across kinds by
 * "number or not" alone made "c" come after true, and true before "a"). */
static int value_cmp(const json_t *a, const json_t *b) {
  int ra = value_rank(a), rb = value_rank(b);
  if (ra != rb) return ra < rb ? -1 : 1;
  if (ra == 0) {
    double x = json_number_value(a), y = json_number_value(b);
    return x < y ? -1 : x > y ? 1 : 0;
  }
  return ra == 1 ? strcmp(json_string_value(a), json_string_value(b)) : 0;
}

typedef struct sortitem {
  const json_t *key;
  size_t index;
} sortitem;

static int item_cmp(const void *pa, const void *pb) {
  const sortitem *a = pa, *b = pb;
  int c = value_cmp(a->key, b->key);
  if (c) return c;
  return a->index < b->index ? -1 : a->index > b->index;
}

int br_promote_apply(const br_promote *p, br_task *const *tasks, size_t n, json_t *target,
                     char *errbuf, size_t errsize) {
  if (!p || !p->n) return 0;
  sortitem *items = calloc(n + 1, sizeof *items);
  if (!items) {
    snprintf(errbuf, errsize, "out of memory");
    return -1;
  }
  int rc = 0;
  for (size_t r = 0; r < p->n && !rc; r++) {
    const rule *ru = &p->rules[r];
    for (size_t i = 0; i < n; i++) {
      items[i].index = i;
      items[i].key = ru->sort ? json_object_get(br_task_attrs(tasks[i]), ru->sort) : NULL;
    }
    if (ru->sort) qsort(items, n, sizeof *items, item_cmp);
    json_t *result = NULL;
    int all_int = 1, seen = 0;
    double dsum = 0;
    json_int_t isum = 0;
    for (size_t k = 0; k < n && !rc; k++) {
      const br_task *t = tasks[items[k].index];
      json_t *v = json_object_get(br_task_attrs(t), ru->from);
      if (!v) continue;
      switch (ru->kind) {
      case R_APPEND:
        if (!result) result = json_array();
        json_array_append(result, v);
        break;
      case R_EXTEND:
        if (!result) result = json_array();
        if (json_is_array(v)) json_array_extend(result, v);
        else json_array_append(result, v);
        break;
      case R_FIRST:
        if (!result) result = json_incref(v);
        break;
      case R_LAST:
        json_decref(result);
        result = json_incref(v);
        break;
      case R_COUNT: seen++; break;
      case R_SUM:
      case R_MIN:
      case R_MAX:
        if (!json_is_number(v)) {
          snprintf(errbuf, errsize,
                   "promote '%s' (%s): attribute '%s' of task %lld is not a number",
                   ru->target, rule_names[ru->kind], ru->from, (long long)br_task_id(t));
          rc = -1;
          break;
        }
        if (!json_is_integer(v)) all_int = 0;
        if (ru->kind == R_SUM) {
          dsum += json_number_value(v);
          /* past int64 the sum is a float, as with a float among the values */
          if (json_is_integer(v) && __builtin_add_overflow(isum, json_integer_value(v), &isum))
            all_int = 0;
          seen++;
        } else if (!result || (ru->kind == R_MIN ? value_cmp(v, result) < 0
                                                 : value_cmp(v, result) > 0)) {
          json_decref(result);
          result = json_incref(v);
        }
        break;
      }
    }
    if (rc) {
      json_decref(result);
      break;
    }
    if (ru->kind == R_COUNT) result = json_integer(seen);
    if (ru->kind == R_SUM) result = all_int ? json_integer(isum) : json_real(dsum);
    if ((ru->kind == R_APPEND || ru->kind == R_EXTEND) && !result) result = json_array();
    if (result) json_object_set_new(target, ru->target, result);
  }
  free(items);
  return rc;
}

int br_promote_node_init(br_node *node, void **state, br_error *err) {
  const char *bad = NULL;
  br_promote *p = NULL;
  int rc = br_promote_parse(json_object_get(br_node_params(node), "promote"), &p, &bad, err);
  if (rc) {
    br_node_error_at_param(node, err, "promote", bad);
    return rc;
  }
  *state = p;
  return BR_OK;
}

void br_promote_node_fini(void *state) { br_promote_free(state); }
