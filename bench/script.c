/* bench-script: the per-task cost of a typical path expression and of a
 * 20-line script node, each against the same logic written in C, in the
 * same run, printed as ratios, plus evaluations per second.
 *
 *   bench-script [N]     N evaluations per measurement (default 1000000)
 *
 * Targets (issue 4): the expression within 10x of C, and at least 500,000
 * evaluations per second. Exits 1 when a target is missed. */
#include <braid/script.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NTASKS 1024 /* distinct attribute objects, cycled */

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void die(const char *what, const br_error *err) {
  fprintf(stderr, "bench-script: %s: %s\n", what, err->msg);
  exit(2);
}

/* ---- the expression and its C twin ---- */

static const char *expr_src = "/out/${attr.wedge}/img.${pad(attr.frame, 4)}.png";

static json_t *c_expr(const br_script_task *t) {
  const json_t *w = json_object_get(t->attrs, "wedge");
  const json_t *f = json_object_get(t->attrs, "frame");
  if (!json_is_string(w) || !json_is_integer(f)) return NULL;
  char buf[512];
  snprintf(buf, sizeof buf, "/out/%s/img.%04lld.png", json_string_value(w),
           (long long)json_integer_value(f));
  return json_string(buf);
}

/* ---- the script and its C twin ---- */

static const char *script_src =
    "local frame = task.attr.frame\n"
    "local wedge = task.attr.wedge\n"
    "local first, last = task.attr.first or 1, task.attr.last or 100\n"
    "local shot = task.attr.shot\n"
    "local root = path.join('/show', shot, 'render', wedge)\n"
    "local out = path.join(root, fmt('img.%04d.exr', frame))\n"
    "task.attr.out = out\n"
    "task.attr.cache = root .. '/cache/' .. pad(frame, 4) .. '.bgeo'\n"
    "local n = last - first + 1\n"
    "local chunk = math.max(1, n // 10)\n"
    "task.attr.chunk = chunk\n"
    "if frame == first then\n"
    "  task.attr.role = 'first'\n"
    "elseif frame == last then\n"
    "  task.attr.role = 'last'\n"
    "else\n"
    "  task.attr.role = 'middle'\n"
    "end\n"
    "if frame % chunk == 0 then route('out') else route(2) end\n"
    "task.attr.done = true\n";

static int nop_set(void *ud, const char *k, json_t *v, br_error *err) {
  (*(long *)ud)++;
  json_decref(v);
  return 0;
}
static int nop_route(void *ud, int port, br_error *err) {
  (*(long *)ud) += port;
  return 0;
}
static int nop_output(void *ud, const char *name) { return strcmp(name, "out") == 0 ? 0 : -1; }

static int path_join(char *dst, size_t size, const char *a, const char *b) {
  size_t la = strlen(a);
  int n = snprintf(dst, size, "%s%s%s", a, la && a[la - 1] == '/' ? "" : "/", b);
  return n < 0 || (size_t)n >= size ? -1 : 0;
}

static int c_script(const br_script_task *t, const br_script_ops *ops) {
  br_error err;
  const json_t *a = t->attrs;
  long long frame = json_integer_value(json_object_get(a, "frame"));
  const char *wedge = json_string_value(json_object_get(a, "wedge"));
  const json_t *jf = json_object_get(a, "first"), *jl = json_object_get(a, "last");
  long long first = jf ? json_integer_value(jf) : 1, last = jl ? json_integer_value(jl) : 100;
  const char *shot = json_string_value(json_object_get(a, "shot"));
  if (!wedge || !shot) return -1;
  char root[512], out[600], file[64], cache[700];
  if (path_join(root, sizeof root, "/show", shot) < 0 ||
      path_join(root, sizeof root, strcpy(out, root), "render") < 0 ||
      path_join(root, sizeof root, strcpy(out, root), wedge) < 0)
    return -1;
  snprintf(file, sizeof file, "img.%04lld.exr", frame);
  if (path_join(out, sizeof out, root, file) < 0) return -1;
  ops->set_attr(ops->ud, "out", json_string(out), &err);
  if (snprintf(cache, sizeof cache, "%s/cache/%04lld.bgeo", root, frame) >= (int)sizeof cache)
    return -1;
  ops->set_attr(ops->ud, "cache", json_string(cache), &err);
  long long n = last - first + 1, chunk = n / 10 > 1 ? n / 10 : 1;
  ops->set_attr(ops->ud, "chunk", json_integer(chunk), &err);
  const char *role = frame == first ? "first" : frame == last ? "last" : "middle";
  ops->set_attr(ops->ud, "role", json_string(role), &err);
  ops->set_attr(ops->ud, "done", json_true(), &err);
  return ops->route(ops->ud, frame % chunk == 0 ? ops->output_index(ops->ud, "out") : 1, &err);
}

int main(int argc, char **argv) {
  long n = argc > 1 ? atol(argv[1]) : 1000000;
  if (n < 1000) n = 1000;
  br_error err;
  br_error_clear(&err);

  json_t *attrs[NTASKS];
  br_script_task tasks[NTASKS];
  static const char *wedges[] = {"w0", "w1", "w2", "w3"};
  for (int i = 0; i < NTASKS; i++) {
    attrs[i] = json_pack("{s:i,s:s,s:s,s:i,s:i,s:f}", "frame", 1 + i % 100, "wedge",
                         wedges[i % 4], "shot", "sh010", "first", 1, "last", 100, "scale", 0.5);
    tasks[i] = (br_script_task){.id = i + 1, .name = "t", .attrs = attrs[i]};
  }

  br_script_env *env = br_script_env_new(NULL, &err);
  if (!env) die("env", &err);

  /* expression */
  json_t *v = json_string(expr_src);
  br_script_expr *e;
  if (br_script_expr_compile(env, v, BR_PARAM_STRING, &e, &err) < 0) die("compile", &err);
  json_decref(v);
  size_t check = 0;
  for (int i = 0; i < NTASKS; i++) { /* same answers, and warm up */
    json_t *a, *b = c_expr(&tasks[i]);
    if (br_script_expr_eval(env, e, &tasks[i], &a, &err) < 0) die("eval", &err);
    if (!json_equal(a, b)) {
      fprintf(stderr, "bench-script: Lua and C disagree: %s vs %s\n", json_string_value(a),
              json_string_value(b));
      return 2;
    }
    json_decref(a);
    json_decref(b);
  }
  double t0 = now();
  for (long i = 0; i < n; i++) {
    json_t *a;
    if (br_script_expr_eval(env, e, &tasks[i % NTASKS], &a, &err) < 0) die("eval", &err);
    check += json_string_length(a);
    json_decref(a);
  }
  double t_lua = now() - t0;
  t0 = now();
  for (long i = 0; i < n; i++) {
    json_t *a = c_expr(&tasks[i % NTASKS]);
    check += json_string_length(a);
    json_decref(a);
  }
  double t_c = now() - t0;

  /* script */
  long sink = 0;
  br_script_ops ops = {.ud = &sink, .set_attr = nop_set, .route = nop_route,
                       .output_index = nop_output};
  br_script_chunk *chunk;
  if (br_script_compile(env, script_src, "bench", &chunk, &err) < 0) die("compile script", &err);
  long ns = n / 4;
  for (int i = 0; i < NTASKS; i++)
    if (br_script_run(env, chunk, &tasks[i], &ops, &err) < 0) die("run", &err);
  t0 = now();
  for (long i = 0; i < ns; i++)
    if (br_script_run(env, chunk, &tasks[i % NTASKS], &ops, &err) < 0) die("run", &err);
  double s_lua = now() - t0;
  t0 = now();
  for (long i = 0; i < ns; i++) c_script(&tasks[i % NTASKS], &ops);
  double s_c = now() - t0;

  double expr_ns = t_lua / (double)n * 1e9, expr_c_ns = t_c / (double)n * 1e9;
  double scr_ns = s_lua / (double)ns * 1e9, scr_c_ns = s_c / (double)ns * 1e9;
  double eps = (double)n / t_lua, ratio = expr_ns / expr_c_ns;
  printf("expression %s\n", expr_src);
  printf("  lua %8.0f ns/eval   %10.0f evals/s   (%ld evaluations)\n", expr_ns, eps, n);
  printf("  C   %8.0f ns/eval   %10.0f evals/s\n", expr_c_ns, 1e9 / expr_c_ns);
  printf("  ratio lua/C %.2fx\n", ratio);
  printf("script node (20 lines, 5 sets and a route per task)\n");
  printf("  lua %8.0f ns/task   %10.0f tasks/s   (%ld runs)\n", scr_ns, 1e9 / scr_ns, ns);
  printf("  C   %8.0f ns/task   %10.0f tasks/s\n", scr_c_ns, 1e9 / scr_c_ns);
  printf("  ratio lua/C %.2fx\n", scr_ns / scr_c_ns);
  printf("lua state memory: %zu KiB\n", br_script_env_memory(env) / 1024);
  bool ok_ratio = ratio <= 10.0, ok_rate = eps >= 500000.0;
  printf("target expression within 10x of C: %s (%.2fx)\n", ok_ratio ? "met" : "MISSED", ratio);
  printf("target >= 500000 evaluations/s: %s (%.0f)\n", ok_rate ? "met" : "MISSED", eps);
  if (check == 0 || sink == 0) printf("(sink)\n");

  br_script_env_free(env);
  for (int i = 0; i < NTASKS; i++) json_decref(attrs[i]);
  return ok_ratio && ok_rate ? 0 : 1;
}
