/* Graph files: load, validate, save (see include/braid/graph.h).
 *
 * Loading is all or nothing: the JSON is parsed by jansson, positions of
 * values are recorded by jsonpos, then every node, parameter and wire is
 * checked; the first problem is reported with file, line and column and
 * nothing is returned. Node types take part through their ops table: the
 * declared parameters are type-checked here, and init() checks the rest. */
#include <braid/script.h>

#include "graph_internal.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

const char *br_param_type_name(br_param_type t) {
  switch (t) {
  case BR_PARAM_ANY: return "any";
  case BR_PARAM_BOOL: return "bool";
  case BR_PARAM_INT: return "int";
  case BR_PARAM_FLOAT: return "float";
  case BR_PARAM_STRING: return "string";
  case BR_PARAM_LIST: return "list";
  case BR_PARAM_OBJECT: return "object";
  }
  return "?";
}

static const char *json_kind(const json_t *v) {
  switch (json_typeof(v)) {
  case JSON_OBJECT: return "object";
  case JSON_ARRAY: return "list";
  case JSON_STRING: return "string";
  case JSON_INTEGER: return "int";
  case JSON_REAL: return "float";
  case JSON_TRUE:
  case JSON_FALSE: return "bool";
  case JSON_NULL: return "null";
  }
  return "?";
}

static int type_matches(br_param_type t, const json_t *v) {
  switch (t) {
  case BR_PARAM_ANY: return 1;
  case BR_PARAM_BOOL: return json_is_boolean(v);
  case BR_PARAM_INT: return json_is_integer(v);
  case BR_PARAM_FLOAT: return json_is_number(v);
  case BR_PARAM_STRING: return json_is_string(v);
  case BR_PARAM_LIST: return json_is_array(v);
  case BR_PARAM_OBJECT: return json_is_object(v);
  }
  return 0;
}

/* ---- errors with positions ---- */

static int fail_at(br_graph *g, br_error *err, const char *pointer, int key, const char *fmt,
                   ...) __attribute__((format(printf, 5, 6)));

static int fail_at(br_graph *g, br_error *err, const char *pointer, int key, const char *fmt,
                   ...) {
  if (!err) return BR_EINVAL;
  err->code = BR_EINVAL;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err->msg, sizeof err->msg, fmt, ap);
  va_end(ap);
  int line = 0, col = 0;
  if (key) br_jpos_key(g->jpos, pointer, &line, &col);
  if (!line) br_jpos_value(g->jpos, pointer, &line, &col);
  br_error_at(err, g->origin, line, col);
  return BR_EINVAL;
}

void br_node_error_at_param(const br_node *node, br_error *err, const char *param,
                            const char *sub) {
  if (!err || !node || !node->graph) return;
  char ptr[512];
  int line = 0, col = 0;
  snprintf(ptr, sizeof ptr, "/nodes/%zu/params/%s%s%s", node->index, param, sub ? "/" : "",
           sub ? sub : "");
  br_jpos_value(node->graph->jpos, ptr, &line, &col);
  if (!line) {
    snprintf(ptr, sizeof ptr, "/nodes/%zu/params/%s", node->index, param);
    br_jpos_value(node->graph->jpos, ptr, &line, &col);
  }
  if (!line) {
    line = node->line;
    col = node->column;
  }
  br_error_at(err, node->graph->origin, line, col);
}

int br_node_fail_at_param(const br_node *node, br_error *err, const char *param, const char *sub,
                          const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  br_error_set(err, BR_EINVAL, "%s", msg);
  br_node_error_at_param(node, err, param, sub);
  return BR_EINVAL;
}

void br_node_warn_at_param(const br_node *node, const char *param, const char *sub,
                           const char *fmt, ...) {
  if (!node || !node->graph) return;
  br_graph *g = node->graph;
  br_error where = {0};
  br_node_error_at_param(node, &where, param, sub);
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  char *line = NULL;
  if (asprintf(&line, "%s:%d:%d: warning: node '%s' (%s): %s", g->origin, where.line,
               where.column, node->name, node->type->name, msg) < 0)
    return;
  if (!g->warnings) g->warnings = json_array();
  json_array_append_new(g->warnings, json_string(line));
  free(line);
}

void br_graph_warnings(const br_graph *g, br_warn_fn *fn, void *ud) {
  size_t i;
  json_t *w;
  json_array_foreach(g->warnings, i, w) fn(ud, json_string_value(w));
}

/* ---- accessors ---- */

const char *br_graph_name(const br_graph *g) { return g->name; }
size_t br_graph_node_count(const br_graph *g) { return g->n_nodes; }
br_node *br_graph_node(const br_graph *g, size_t i) { return i < g->n_nodes ? g->nodes[i] : NULL; }

br_node *br_graph_find_node(const br_graph *g, const char *name) {
  br_node *n = NULL;
  HASH_FIND_STR(g->by_name, name, n);
  return n;
}

const char *br_node_name(const br_node *n) { return n->name; }
const char *br_node_type_name(const br_node *n) { return n->type->name; }
json_t *br_node_params(const br_node *n) { return n->params; }
size_t br_node_index(const br_node *n) { return n->index; }

int br_node_input_index(const br_node *n, const char *port) {
  for (int i = 0; i < n->n_inputs; i++)
    if (strcmp(n->inputs[i], port) == 0) return i;
  return -1;
}

int br_node_output_index(const br_node *n, const char *port) {
  for (int i = 0; i < n->n_outputs; i++)
    if (strcmp(n->outputs[i], port) == 0) return i;
  return -1;
}

/* ---- freeing ---- */

static void free_strv(char **v, int n) {
  for (int i = 0; i < n; i++) free(v[i]);
  free(v);
}

static void node_free(br_node *n) {
  if (!n) return;
  if (n->state && n->type && n->type->fini) n->type->fini(n->state);
  br_script_env_free(n->script);
  free(n->name);
  json_decref(n->params);
  json_decref(n->src_params);
  free_strv(n->inputs, n->n_inputs);
  free_strv(n->outputs, n->n_outputs);
  for (int i = 0; i < n->n_outputs; i++) free(n->outs ? n->outs[i].wires : NULL);
  free(n->outs);
  free(n);
}

void br_graph_free(br_graph *g) {
  if (!g) return;
  HASH_CLEAR(hh, g->by_name);
  for (size_t i = 0; i < g->n_nodes; i++) node_free(g->nodes[i]);
  free(g->nodes);
  free(g->name);
  free(g->origin);
  json_decref(g->wires_src);
  json_decref(g->start);
  json_decref(g->warnings);
  free(g);
}

/* ---- validation ---- */

static int set_ports(char ***out, int *n, const char *const *names, const char *dflt) {
  static const char *const none[] = {NULL};
  const char *const single[] = {dflt, NULL};
  if (!names) names = dflt ? single : none;
  int count = 0;
  while (names[count]) count++;
  *out = calloc((size_t)count + 1, sizeof **out);
  if (!*out) return BR_ENOMEM;
  for (int i = 0; i < count; i++)
    if (!((*out)[i] = strdup(names[i]))) return BR_ENOMEM;
  *n = count;
  return BR_OK;
}

static void join_names(char *buf, size_t size, char *const *v, int n) {
  size_t used = 0;
  buf[0] = '\0';
  for (int i = 0; i < n && used < size; i++)
    used += (size_t)snprintf(buf + used, size - used, "%s%s", i ? ", " : "", v[i]);
}

static int check_params(br_graph *g, br_node *node, json_t *params, const char *base,
                        br_error *err) {
  const br_param_spec *spec = node->type->params;
  const char *key;
  json_t *v;
  char ptr[512];
  node->params = json_object();
  if (!node->params) return BR_ENOMEM;
  json_object_foreach(params, key, v) {
    const br_param_spec *s = NULL;
    for (const br_param_spec *p = spec; p && p->name; p++)
      if (strcmp(p->name, key) == 0) s = p;
    snprintf(ptr, sizeof ptr, "%s/%s", base, key);
    if (!s) {
      char known[512] = "";
      size_t used = 0;
      for (const br_param_spec *p = spec; p && p->name && used < sizeof known; p++)
        used += (size_t)snprintf(known + used, sizeof known - used, "%s%s",
                                 p == spec ? "" : ", ", p->name);
      return fail_at(g, err, ptr, 1, "node '%s' (%s): unknown parameter '%s' (parameters: %s)",
                     node->name, node->type->name, key, known[0] ? known : "none");
    }
    if (!type_matches(s->type, v) && !br_script_is_expr(v))
      return fail_at(g, err, ptr, 0, "node '%s' (%s): parameter '%s' must be %s, got %s",
                     node->name, node->type->name, key, br_param_type_name(s->type),
                     json_kind(v));
    json_object_set(node->params, key, v);
  }
  for (const br_param_spec *p = spec; p && p->name; p++) {
    if (json_object_get(node->params, p->name)) continue;
    if (p->default_json) {
      json_error_t jerr;
      json_t *d = json_loads(p->default_json, JSON_DECODE_ANY, &jerr);
      if (!d) return br_error_set(err, BR_EINVAL, "node type %s: bad default for '%s'",
                                  node->type->name, p->name);
      json_object_set_new(node->params, p->name, d);
    } else if (!p->optional) {
      snprintf(ptr, sizeof ptr, "/nodes/%zu", node->index);
      return fail_at(g, err, ptr, 0, "node '%s' (%s): missing required parameter '%s'",
                     node->name, node->type->name, p->name);
    }
  }
  return BR_OK;
}

br_script_env *br_node_script_env(br_node *node, br_error *err) {
  if (!node->script) node->script = br_script_env_new(NULL, err);
  return node->script;
}

/* Parameters that are expressions are compiled once, here, into the node's
 * Lua state; a syntax error is a graph error at the parameter's position. */
static int compile_expressions(br_graph *g, br_node *node, br_error *err) {
  const char *key;
  json_t *v;
  int any = 0;
  json_object_foreach(node->params, key, v) {
    int literal = 0;
    for (const char *const *l = node->type->literal_params; l && *l; l++)
      if (strcmp(*l, key) == 0) literal = 1;
    if (!literal && br_script_is_expr(v)) any = 1;
  }
  if (!any) return BR_OK;
  if (!br_node_script_env(node, err)) return err ? err->code : BR_ESCRIPT;
  int rc = br_script_env_compile_params(node->script, node->params, node->type->params,
                                        node->type->literal_params, err);
  if (rc && err) {
    /* the message starts "parameter 'NAME': " */
    char name[128] = "";
    if (sscanf(err->msg, "parameter '%127[^']'", name) == 1) {
      char ptr[300];
      int line = 0, col = 0;
      snprintf(ptr, sizeof ptr, "/nodes/%zu/params/%s", node->index, name);
      br_jpos_value(g->jpos, ptr, &line, &col);
      br_error_at(err, g->origin, line ? line : node->line, line ? col : node->column);
    } else {
      br_error_at(err, g->origin, node->line, node->column);
    }
    char msg[sizeof err->msg + 256];
    snprintf(msg, sizeof msg, "node '%s' (%s): %s", node->name, node->type->name, err->msg);
    snprintf(err->msg, sizeof err->msg, "%.1000s", msg);
  }
  return rc;
}

static int load_node(br_graph *g, size_t i, json_t *jn, br_error *err) {
  char ptr[256];
  snprintf(ptr, sizeof ptr, "/nodes/%zu", i);
  if (!json_is_object(jn))
    return fail_at(g, err, ptr, 0, "a node must be an object with \"name\" and \"type\", got %s",
                   json_kind(jn));
  br_node *node = calloc(1, sizeof *node);
  if (!node) return BR_ENOMEM;
  g->nodes[i] = node;
  node->index = i;
  node->graph = g;
  br_jpos_value(g->jpos, ptr, &node->line, &node->column);

  const char *key;
  json_t *v;
  char p2[300];
  json_object_foreach(jn, key, v) {
    if (strcmp(key, "name") && strcmp(key, "type") && strcmp(key, "params") &&
        strcmp(key, "description") && strcmp(key, "ui")) {
      snprintf(p2, sizeof p2, "%s/%s", ptr, key);
      return fail_at(g, err, p2, 1,
                     "unknown key '%s' in a node (expected name, type, params, description, ui)",
                     key);
    }
  }
  json_t *jname = json_object_get(jn, "name");
  snprintf(p2, sizeof p2, "%s/name", ptr);
  if (!jname) return fail_at(g, err, ptr, 0, "node without a \"name\"");
  const char *name = json_string_value(jname);
  if (!name || !*name || strchr(name, '.') || strlen(name) > 100)
    return fail_at(g, err, p2, 0,
                   "a node name must be a non-empty string of at most 100 characters without '.'");
  node->name = strdup(name);
  if (!node->name) return BR_ENOMEM;
  br_node *first = br_graph_find_node(g, name);
  if (first)
    return fail_at(g, err, p2, 0, "duplicate node name '%s' (first defined at line %d, column %d)",
                   name, first->line, first->column);
  HASH_ADD_KEYPTR(hh, g->by_name, node->name, strlen(node->name), node);
  json_t *jtype = json_object_get(jn, "type");
  snprintf(p2, sizeof p2, "%s/type", ptr);
  if (!jtype) return fail_at(g, err, ptr, 0, "node '%s' has no \"type\"", name);
  if (!json_is_string(jtype))
    return fail_at(g, err, p2, 0, "node '%s': \"type\" must be a string", name);
  node->type = br_node_type_find(json_string_value(jtype));
  if (!node->type) {
    char known[1024] = "";
    size_t used = 0;
    for (const br_node_type *const *t = br_node_types(); *t && used < sizeof known; t++)
      used += (size_t)snprintf(known + used, sizeof known - used, "%s%s",
                               t == br_node_types() ? "" : ", ", (*t)->name);
    return fail_at(g, err, p2, 0, "node '%s': unknown node type '%s' (known types: %s)", name,
                   json_string_value(jtype), known);
  }
  json_t *params = json_object_get(jn, "params");
  snprintf(p2, sizeof p2, "%s/params", ptr);
  if (params && !json_is_object(params))
    return fail_at(g, err, p2, 0, "node '%s': \"params\" must be an object", name);
  node->src_params = params ? json_incref(params) : json_object();
  int rc = check_params(g, node, node->src_params, p2, err);
  if (rc) return rc;

  if ((rc = set_ports(&node->inputs, &node->n_inputs, node->type->inputs, "in"))) return rc;
  if (node->type->outputs_from_params) {
    json_t *names = json_array();
    if (!names) return BR_ENOMEM;
    rc = node->type->outputs_from_params(node->params, names, err);
    if (rc) {
      json_decref(names);
      int line = 0, col = 0;
      br_jpos_value(g->jpos, p2, &line, &col);
      br_error_at(err, g->origin, line ? line : node->line, line ? col : node->column);
      return rc;
    }
    size_t n = json_array_size(names);
    node->outputs = calloc(n + 1, sizeof *node->outputs);
    if (!node->outputs) {
      json_decref(names);
      return BR_ENOMEM;
    }
    for (size_t k = 0; k < n; k++) node->outputs[k] = strdup(json_string_value(json_array_get(names, k)));
    node->n_outputs = (int)n;
    json_decref(names);
  } else if ((rc = set_ports(&node->outputs, &node->n_outputs, node->type->outputs, "out"))) {
    return rc;
  }
  node->outs = calloc((size_t)node->n_outputs + 1, sizeof *node->outs);
  if (!node->outs) return BR_ENOMEM;
  if ((rc = compile_expressions(g, node, err))) return rc;
  if (node->type->init) {
    br_error_clear(err);
    rc = node->type->init(node, &node->state, err);
    if (rc) {
      if (err && !err->line) br_error_at(err, g->origin, node->line, node->column);
      if (err) {
        char msg[sizeof err->msg + 256];
        snprintf(msg, sizeof msg, "node '%s' (%s): %s", node->name, node->type->name, err->msg);
        snprintf(err->msg, sizeof err->msg, "%.1000s", msg);
      }
      return rc;
    }
  }
  return BR_OK;
}

/* Resolves "node.port" (or "node": the first port) against inputs or outputs. */
static int resolve_port(br_graph *g, const char *ref, int output, const char *ptr, int *node_out,
                        int *port_out, br_error *err) {
  const char *dot = strrchr(ref, '.');
  size_t nlen = dot ? (size_t)(dot - ref) : strlen(ref);
  br_node *node = NULL;
  HASH_FIND(hh, g->by_name, ref, nlen, node);
  const char *dir = output ? "from" : "to";
  if (!node) return fail_at(g, err, ptr, 0, "wire %s '%s': no node named '%.*s'", dir, ref, (int)nlen, ref);
  char **ports = output ? node->outputs : node->inputs;
  int n = output ? node->n_outputs : node->n_inputs;
  int port = -1;
  if (!dot) {
    port = n > 0 ? 0 : -1;
  } else {
    for (int i = 0; i < n; i++)
      if (strcmp(ports[i], dot + 1) == 0) port = i;
    if (port < 0) {
      /* a number names a port by its index */
      char *end;
      long idx = strtol(dot + 1, &end, 10);
      if (*end == '\0' && dot[1] && idx >= 0 && idx < n) port = (int)idx;
    }
  }
  if (port < 0) {
    char names[512];
    join_names(names, sizeof names, ports, n);
    return fail_at(g, err, ptr, 0, "wire %s '%s': node '%s' (%s) has no %s port '%s' (%s: %s)",
                   dir, ref, node->name, node->type->name, output ? "output" : "input",
                   dot ? dot + 1 : "", output ? "outputs" : "inputs", n ? names : "none");
  }
  *node_out = (int)node->index;
  *port_out = port;
  return BR_OK;
}

static int load_wire(br_graph *g, size_t i, json_t *jw, br_error *err) {
  char ptr[128], pf[160], pt[160];
  snprintf(ptr, sizeof ptr, "/wires/%zu", i);
  json_t *from = NULL, *to = NULL;
  if (json_is_array(jw) && json_array_size(jw) == 2) {
    from = json_array_get(jw, 0);
    to = json_array_get(jw, 1);
    snprintf(pf, sizeof pf, "%s/0", ptr);
    snprintf(pt, sizeof pt, "%s/1", ptr);
  } else if (json_is_object(jw)) {
    from = json_object_get(jw, "from");
    to = json_object_get(jw, "to");
    snprintf(pf, sizeof pf, "%s/from", ptr);
    snprintf(pt, sizeof pt, "%s/to", ptr);
    const char *key;
    json_t *v;
    json_object_foreach(jw, key, v) {
      if (strcmp(key, "from") && strcmp(key, "to")) {
        char pk[300];
        snprintf(pk, sizeof pk, "%s/%s", ptr, key);
        return fail_at(g, err, pk, 1, "unknown key '%s' in a wire (expected from, to)", key);
      }
    }
  }
  if (!json_is_string(from) || !json_is_string(to))
    return fail_at(g, err, ptr, 0,
                   "a wire is {\"from\": \"node.port\", \"to\": \"node.port\"} or "
                   "[\"node.port\", \"node.port\"]");
  int fn, fp, tn, tp, rc;
  if ((rc = resolve_port(g, json_string_value(from), 1, pf, &fn, &fp, err))) return rc;
  if ((rc = resolve_port(g, json_string_value(to), 0, pt, &tn, &tp, err))) return rc;
  br_outport *op = &g->nodes[fn]->outs[fp];
  for (int k = 0; k < op->n; k++)
    if (op->wires[k].node == tn && op->wires[k].port == tp)
      return fail_at(g, err, ptr, 0, "duplicate wire from '%s' to '%s'", json_string_value(from),
                     json_string_value(to));
  br_wire *w = realloc(op->wires, (size_t)(op->n + 1) * sizeof *w);
  if (!w) return BR_ENOMEM;
  op->wires = w;
  op->wires[op->n].node = tn;
  op->wires[op->n].port = tp;
  op->n++;
  /* canonical form, for saving */
  char fbuf[300], tbuf[300];
  snprintf(fbuf, sizeof fbuf, "%s.%s", g->nodes[fn]->name, g->nodes[fn]->outputs[fp]);
  snprintf(tbuf, sizeof tbuf, "%s.%s", g->nodes[tn]->name, g->nodes[tn]->inputs[tp]);
  json_array_append_new(g->wires_src, json_pack("{ssss}", "from", fbuf, "to", tbuf));
  return BR_OK;
}

/* "start": {"node": "name", "attrs": {...}}: where `braid run` submits its
 * task, and with which attributes. Optional; the default is the first node
 * that no wire leads into. */
static int load_start(br_graph *g, json_t *start, br_error *err) {
  if (!start) return BR_OK;
  if (!json_is_object(start))
    return fail_at(g, err, "/start", 0, "\"start\" must be an object {\"node\": ..., \"attrs\": {...}}");
  const char *key;
  json_t *v;
  json_object_foreach(start, key, v) {
    char ptr[300];
    snprintf(ptr, sizeof ptr, "/start/%s", key);
    if (strcmp(key, "node") && strcmp(key, "attrs"))
      return fail_at(g, err, ptr, 1, "unknown key '%s' in \"start\" (expected node, attrs)", key);
  }
  json_t *node = json_object_get(start, "node"), *attrs = json_object_get(start, "attrs");
  if (node && (!json_is_string(node) || !br_graph_find_node(g, json_string_value(node))))
    return fail_at(g, err, "/start/node", 0, "\"start\": no node named %s%s%s",
                   json_is_string(node) ? "'" : "", json_is_string(node) ? json_string_value(node) : "(not a string)",
                   json_is_string(node) ? "'" : "");
  if (attrs && !json_is_object(attrs))
    return fail_at(g, err, "/start/attrs", 0, "\"start\": \"attrs\" must be an object");
  g->start = json_incref(start);
  return BR_OK;
}

const char *br_graph_start_node(const br_graph *g) {
  json_t *n = g->start ? json_object_get(g->start, "node") : NULL;
  if (n) return json_string_value(n);
  /* the first node no wire leads into: one pass over the wires */
  char *fed = calloc(g->n_nodes + 1, 1);
  if (!fed) return g->n_nodes ? g->nodes[0]->name : NULL;
  for (size_t j = 0; j < g->n_nodes; j++)
    for (int p = 0; p < g->nodes[j]->n_outputs; p++)
      for (int w = 0; w < g->nodes[j]->outs[p].n; w++) fed[g->nodes[j]->outs[p].wires[w].node] = 1;
  size_t i = 0;
  while (i < g->n_nodes && fed[i]) i++;
  free(fed);
  return g->n_nodes ? g->nodes[i < g->n_nodes ? i : 0]->name : NULL;
}

json_t *br_graph_start_attrs(const br_graph *g) {
  return g->start ? json_object_get(g->start, "attrs") : NULL;
}

/* A graph file's name names files (`braid run`'s store NAME.braid.db and
 * its logs): letters, digits, '.', '_' and '-', not starting with '.'. */
bool br_graph_name_ok(const char *name) {
  size_t n = strlen(name);
  if (n == 0 || n > 100 || name[0] == '.') return false;
  for (const char *p = name; *p; p++)
    if (!isalnum((unsigned char)*p) && *p != '.' && *p != '_' && *p != '-') return false;
  return true;
}

static int load(br_graph *g, json_t *root, bool from_file, br_error *err) {
  if (!json_is_object(root))
    return fail_at(g, err, "", 0, "a graph file must hold a JSON object, got %s", json_kind(root));
  const char *key;
  json_t *v;
  json_object_foreach(root, key, v) {
    if (strcmp(key, "name") && strcmp(key, "nodes") && strcmp(key, "wires") &&
        strcmp(key, "description") && strcmp(key, "start")) {
      char ptr[300];
      snprintf(ptr, sizeof ptr, "/%s", key);
      return fail_at(g, err, ptr, 1,
                     "unknown key '%s' at the top of the graph (expected name, description, "
                     "nodes, wires, start)",
                     key);
    }
  }
  json_t *jname = json_object_get(root, "name");
  if (jname && !json_is_string(jname))
    return fail_at(g, err, "/name", 0, "the graph's \"name\" must be a string");
  const char *name = jname ? json_string_value(jname) : NULL;
  if (name && from_file && !br_graph_name_ok(name))
    return fail_at(g, err, "/name", 0,
                   "the graph's \"name\" '%s' names its store file: " BR_GRAPH_NAME_RULE,
                   name);
  if (!name) {
    const char *base = strrchr(g->origin, '/');
    name = base ? base + 1 : g->origin;
  }
  g->name = strdup(name);
  json_t *nodes = json_object_get(root, "nodes");
  if (!json_is_array(nodes))
    return fail_at(g, err, nodes ? "/nodes" : "", 0, "the graph needs a \"nodes\" list");
  if (json_array_size(nodes) == 0) /* nowhere to start: run failed with "no node ''" */
    return fail_at(g, err, "/nodes", 0, "the graph's \"nodes\" list is empty");
  g->n_nodes = json_array_size(nodes);
  g->nodes = calloc(g->n_nodes + 1, sizeof *g->nodes);
  g->wires_src = json_array();
  if (!g->name || !g->nodes || !g->wires_src) return BR_ENOMEM;
  int rc;
  for (size_t i = 0; i < g->n_nodes; i++)
    if ((rc = load_node(g, i, json_array_get(nodes, i), err))) return rc;
  json_t *wires = json_object_get(root, "wires");
  if (wires && !json_is_array(wires))
    return fail_at(g, err, "/wires", 0, "\"wires\" must be a list");
  for (size_t i = 0; i < json_array_size(wires); i++)
    if ((rc = load_wire(g, i, json_array_get(wires, i), err))) return rc;
  return load_start(g, json_object_get(root, "start"), err);
}

static br_graph *load_text(const char *text, const char *origin, bool from_file,
                           br_error *err) {
  br_error_clear(err);
  /* a UTF-8 byte order mark (some Windows editors write one) is no part of
   * the JSON: skipped, positions count from after it as an editor shows them */
  if (strncmp(text, "\xEF\xBB\xBF", 3) == 0) text += 3;
  json_error_t jerr;
  json_t *root = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
  if (!root) {
    char why[256];
    if (!text[strspn(text, " \t\r\n")]) {
      br_error_set(err, BR_EINVAL, "the file is empty: a graph is a JSON object, "
                                   "{\"nodes\": [...], \"wires\": [...]}");
      br_error_at(err, origin, 1, 1);
    } else {
      br_error_set(err, BR_EINVAL, "malformed JSON: %s",
                   br__json_error_text(&jerr, why, sizeof why));
      /* jansson says column 0 at the end of a line */
      br_error_at(err, origin, jerr.line > 0 ? jerr.line : 1, jerr.column > 0 ? jerr.column : 1);
    }
    return NULL;
  }
  br_graph *g = calloc(1, sizeof *g);
  br_jpos *jpos = br_jpos_scan(text);
  if (!g || !jpos || !(g->origin = strdup(origin ? origin : "<graph>"))) {
    br_jpos_free(jpos);
    br_graph_free(g);
    json_decref(root);
    br_error_set(err, BR_ENOMEM, "out of memory");
    return NULL;
  }
  g->jpos = jpos;
  int rc = load(g, root, from_file, err);
  g->jpos = NULL;
  br_jpos_free(jpos);
  json_decref(root);
  if (rc) {
    if (rc == BR_ENOMEM) br_error_set(err, BR_ENOMEM, "out of memory");
    br_graph_free(g);
    return NULL;
  }
  return g;
}

br_graph *br_graph_load_string(const char *text, const char *origin, br_error *err) {
  return load_text(text, origin, false, err);
}

br_graph *br_graph_load_file(const char *path, br_error *err) {
  br_error_clear(err);
  FILE *f = fopen(path, "rb");
  struct stat st;
  if (f && fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
    fclose(f);
    br_error_set(err, BR_EIO, "cannot read graph file: it is a folder");
    br_error_at(err, path, 0, 0);
    return NULL;
  }
  if (!f) {
    br_error_set(err, BR_EIO, "cannot open graph file: %s", strerror(errno));
    br_error_at(err, path, 0, 0);
    return NULL;
  }
  size_t cap = 1 << 16, len = 0;
  char *buf = malloc(cap);
  size_t n;
  while (buf && (n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
    len += n;
    if (len + 1 >= cap) {
      if (cap > (64u << 20)) {
        free(buf);
        fclose(f);
        br_error_set(err, BR_EINVAL, "graph file larger than 64 MiB");
        br_error_at(err, path, 0, 0);
        return NULL;
      }
      char *nb = realloc(buf, cap * 2);
      if (!nb) {
        free(buf);
        buf = NULL;
        break;
      }
      buf = nb;
      cap *= 2;
    }
  }
  int ioerr = ferror(f) ? errno : 0;
  fclose(f);
  if (!buf || ioerr) {
    free(buf);
    br_error_set(err, BR_EIO, "cannot read graph file: %s", strerror(buf ? ioerr : ENOMEM));
    br_error_at(err, path, 0, 0);
    return NULL;
  }
  buf[len] = '\0';
  if (memchr(buf, '\0', len)) {
    free(buf);
    br_error_set(err, BR_EINVAL, "graph file contains a NUL byte");
    br_error_at(err, path, 0, 0);
    return NULL;
  }
  br_graph *g = load_text(buf, path, true, err);
  free(buf);
  return g;
}

static json_t *to_json(const br_graph *g) {
  json_t *nodes = json_array();
  for (size_t i = 0; i < g->n_nodes; i++) {
    br_node *n = g->nodes[i];
    json_t *jn = json_pack("{ssss}", "name", n->name, "type", n->type->name);
    if (json_object_size(n->src_params)) json_object_set(jn, "params", n->src_params);
    json_array_append_new(nodes, jn);
  }
  json_t *j = json_pack("{sssosO}", "name", g->name, "nodes", nodes, "wires", g->wires_src);
  if (g->start) json_object_set(j, "start", g->start);
  return j;
}

char *br_graph_dumps(const br_graph *g) {
  json_t *j = to_json(g);
  char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
  json_decref(j);
  return s;
}

int br_graph_save_file(const br_graph *g, const char *path, br_error *err) {
  char *s = br_graph_dumps(g);
  if (!s) return br_error_set(err, BR_ENOMEM, "out of memory");
  char tmp[4096];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *f = fopen(tmp, "wb");
  int ok = f && fputs(s, f) >= 0 && fputc('\n', f) != EOF;
  if (f && fclose(f) != 0) ok = 0;
  free(s);
  if (!ok || rename(tmp, path) != 0) {
    remove(tmp);
    br_error_set(err, BR_EIO, "cannot write graph file: %s", strerror(errno));
    br_error_at(err, path, 0, 0);
    return BR_EIO;
  }
  return BR_OK;
}
