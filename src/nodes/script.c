/* script: Lua code run per task inside braid (sandboxed; see
 * include/braid/script.h). The chunk is compiled once per node, in the
 * node's own Lua state. It can read and set attributes, spawn children,
 * split the task, choose the output (by name or number), fail it, or keep it
 * waiting under a key with wait(key).
 *
 * A waiting task is re-examined (the chunk runs again for it) whenever the
 * group under its key changes: another task waits under the same key, or a
 * child or split element whose parent or split id is the key dies. Calling
 * wait() again keeps it; anything else lets it go. Outputs are named by the
 * "outputs" parameter; children leave by the last output, "children". */
#include <braid/node.h>
#include <braid/script.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int init(br_node *node, void **state, br_error *err) {
  br_script_env *env = br_node_script_env(node, err);
  if (!env) return err ? err->code : BR_ESCRIPT;
  br_script_chunk *chunk = NULL;
  char name[160];
  snprintf(name, sizeof name, "%s", br_node_name(node));
  json_t *src = json_object_get(br_node_params(node), "source");
  int rc = br_script_compile(env, json_string_value(src), name, &chunk, err);
  if (rc) {
    br_node_error_at_param(node, err, "source", NULL);
    return rc;
  }
  *state = chunk; /* owned by the env, freed with it */
  return BR_OK;
}

static int outputs_from_params(const json_t *params, json_t *names, br_error *err) {
  json_t *outs = json_object_get(params, "outputs");
  for (size_t i = 0; i < json_array_size(outs); i++) {
    const char *n = json_string_value(json_array_get(outs, i));
    if (!n || !*n || strchr(n, '.') || strcmp(n, "children") == 0)
      return br_error_set(err, BR_EINVAL,
                          "outputs must be names without '.' (and not \"children\")");
    json_array_append_new(names, json_string(n));
  }
  json_array_append_new(names, json_string("children"));
  return BR_OK;
}

/* One run's decisions, collected from the script ops. */
typedef struct run {
  br_node_ctx *ctx;
  br_task *task;
  int routed, port, waited, failed;
  int64_t key;
  char *msg;
} run;

static int op_set(void *ud, const char *k, json_t *v, br_error *err) {
  run *r = ud;
  (void)err;
  json_object_set_new(br_ctx_attrs(r->ctx, r->task), k, v);
  return 0;
}

static int op_del(void *ud, const char *k, br_error *err) {
  run *r = ud;
  (void)err;
  if (json_object_get(br_task_attrs(r->task), k)) json_object_del(br_ctx_attrs(r->ctx, r->task), k);
  return 0;
}

static int op_spawn(void *ud, const char *name, json_t *attrs, br_error *err) {
  run *r = ud;
  if (!br_ctx_task(r->ctx)) {
    json_decref(attrs);
    return br_error_set(err, BR_ESCRIPT, "spawn() is not possible while the task waits");
  }
  return br_ctx_spawn(r->ctx, name, attrs);
}

static int op_split(void *ud, size_t n, json_t **attrs, br_error *err) {
  run *r = ud;
  if (!br_ctx_task(r->ctx)) {
    for (size_t i = 0; i < n; i++) json_decref(attrs[i]);
    return br_error_set(err, BR_ESCRIPT, "split() is not possible while the task waits");
  }
  return br_ctx_split(r->ctx, n, attrs);
}

static int op_route(void *ud, int port, br_error *err) {
  run *r = ud;
  br_node *n = br_ctx_node(r->ctx);
  /* the last output is "children" */
  int nout = 0;
  while (br_node_output_index(n, "children") != nout) nout++;
  if (port < 0 || port >= nout)
    return br_error_set(err, BR_ESCRIPT, "route(%d): the node has %d outputs", port + 1, nout);
  r->routed = 1;
  r->waited = 0;
  r->port = port;
  return 0;
}

static int op_wait(void *ud, int64_t key, br_error *err) {
  run *r = ud;
  (void)err;
  r->waited = 1;
  r->routed = 0;
  r->key = key;
  return 0;
}

static void op_fail(void *ud, const char *msg) {
  run *r = ud;
  r->failed = 1;
  free(r->msg);
  r->msg = strdup(msg ? msg : "failed");
}

static int op_output_index(void *ud, const char *name) {
  run *r = ud;
  if (strcmp(name, "children") == 0) return -1;
  return br_node_output_index(br_ctx_node(r->ctx), name);
}

static int run_chunk(br_node_ctx *ctx, br_task *t, run *r) {
  memset(r, 0, sizeof *r);
  r->ctx = ctx;
  r->task = t;
  br_script_ops ops = {.ud = r,
                       .set_attr = op_set,
                       .del_attr = op_del,
                       .spawn = op_spawn,
                       .split = op_split,
                       .route = op_route,
                       .wait = op_wait,
                       .fail = op_fail,
                       .output_index = op_output_index};
  br_script_task st = br_script_task_of(t);
  br_error err = {0};
  br_error_clear(&err);
  int rc = br_script_run(br_node_script_env(br_ctx_node(ctx), NULL), br_ctx_node_state(ctx), &st,
                         &ops, &err);
  if (rc) {
    r->failed = 1;
    free(r->msg);
    r->msg = strdup(err.msg);
  }
  return rc;
}

static int process(br_node_ctx *ctx) {
  run r;
  run_chunk(ctx, br_ctx_task(ctx), &r);
  int rc = 0;
  if (r.failed) rc = br_ctx_fail(ctx, "%s", r.msg ? r.msg : "script failed");
  else if (r.waited) br_ctx_block(ctx, r.key);
  else br_ctx_route(ctx, r.routed ? r.port : 0);
  free(r.msg);
  return rc;
}

static int release(br_node_ctx *ctx) {
  size_t n = br_ctx_group_size(ctx);
  br_task **members = calloc(n + 1, sizeof *members);
  if (!members) return br_ctx_fail(ctx, "out of memory");
  for (size_t i = 0; i < n; i++) members[i] = br_ctx_group_task(ctx, i);
  int rc = 0;
  for (size_t i = 0; i < n && !rc; i++) {
    run r;
    run_chunk(ctx, members[i], &r);
    if (r.failed) rc = br_ctx_fail(ctx, "task %lld: %s", (long long)br_task_id(members[i]),
                                   r.msg ? r.msg : "script failed");
    else if (!r.waited) /* wait() again, under any key: it stays here */
      br_ctx_release(ctx, members[i], r.routed ? r.port : 0);
    free(r.msg);
  }
  free(members);
  return rc;
}

static const char *const literal[] = {"source", "outputs", NULL};

static const br_param_spec params[] = {
    {"source", BR_PARAM_STRING, NULL, false, "the Lua chunk run for each task"},
    {"outputs", BR_PARAM_LIST, "[\"out\"]", false, "names of the outputs (children is added last)"},
    {NULL, 0, NULL, false, NULL},
};

const br_node_type br_node_script = {
    .name = "script",
    .help = "run Lua code per task: set attributes, spawn, split, route, wait",
    .children_port = BR_CHILDREN_LAST,
    .literal_params = literal,
    .params = params,
    .outputs_from_params = outputs_from_params,
    .init = init,
    .process = process,
    .release = release,
};
