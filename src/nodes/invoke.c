/* Shared parts of the job-running node types (see invoke.h). */
#include "invoke.h"

#include <braid/script.h>
#include <ctype.h>
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct sbuf {
  char *p;
  size_t n, cap;
} sbuf;

static void sb_add(sbuf *b, const char *s, size_t n) {
  if (b->n + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 64;
    while (cap < b->n + n + 1) cap *= 2;
    b->p = realloc(b->p, cap);
    if (!b->p) abort();
    b->cap = cap;
  }
  memcpy(b->p + b->n, s, n);
  b->n += n;
  b->p[b->n] = '\0';
}

static void sb_value(sbuf *b, const json_t *v) {
  if (json_is_string(v)) {
    sb_add(b, json_string_value(v), json_string_length(v));
  } else if (json_is_array(v)) {
    for (size_t i = 0; i < json_array_size(v); i++) {
      if (i) sb_add(b, " ", 1);
      sb_value(b, json_array_get(v, i));
    }
  } else {
    char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    if (s) sb_add(b, s, strlen(s));
    free(s);
  }
}

char *br_invoke_subst(const json_t *attrs, const char *s, char *err, size_t errsize) {
  sbuf b = {0};
  sb_add(&b, "", 0);
  for (const char *p = s; *p;) {
    if ((p[0] == '{' && p[1] == '{') || (p[0] == '}' && p[1] == '}')) {
      sb_add(&b, p, 1);
      p += 2;
    } else if (*p == '{') {
      const char *end = strchr(p, '}');
      if (!end) {
        snprintf(err, errsize, "unclosed '{' in '%s'", s);
        free(b.p);
        return NULL;
      }
      char name[256];
      snprintf(name, sizeof name, "%.*s", (int)(end - p - 1), p + 1);
      json_t *v = json_object_get(attrs, name);
      if (!v) {
        snprintf(err, errsize, "'%s' names the attribute '%s', which the task does not have", s,
                 name);
        free(b.p);
        return NULL;
      }
      sb_value(&b, v);
      p = end + 1;
    } else {
      sb_add(&b, p, 1);
      p++;
    }
  }
  return b.p;
}

void br_argv_push(char ***argv, size_t *n, char *arg) {
  *argv = realloc(*argv, (*n + 2) * sizeof **argv);
  if (!*argv) abort();
  (*argv)[(*n)++] = arg;
  (*argv)[*n] = NULL;
}

void br_argv_free(char **argv) {
  for (size_t i = 0; argv && argv[i]; i++) free(argv[i]);
  free(argv);
}

/* A parameter that lists names (tags, limits) as a NULL-terminated argv. */
static int names(br_node_ctx *ctx, const char *name, char ***out) {
  json_t *v = br_ctx_param(ctx, name);
  size_t n = 0;
  *out = NULL;
  for (size_t i = 0; i < json_array_size(v); i++) {
    json_t *s = json_array_get(v, i);
    if (!json_is_string(s) || !*json_string_value(s))
      return br_ctx_fail(ctx, "parameter '%s' must list names", name);
    br_argv_push(out, &n, strdup(json_string_value(s)));
  }
  return 0;
}

static int codes(br_node_ctx *ctx, const char *name, int **out, int *n) {
  json_t *v = br_ctx_param(ctx, name);
  *n = 0;
  *out = calloc(json_array_size(v) + 1, sizeof **out);
  for (size_t i = 0; i < json_array_size(v); i++) {
    json_t *c = json_array_get(v, i);
    if (!json_is_integer(c)) return br_ctx_fail(ctx, "parameter '%s' must list integers", name);
    (*out)[(*n)++] = (int)json_integer_value(c);
  }
  return 0;
}

int br_invoke_run(br_node_ctx *ctx, char **argv) { return br_invoke_run_env(ctx, argv, NULL); }

/* The numeric parameters' bounds: checked when the graph loads for a
 * literal value (check_number); the least, at run time, for the needs an
 * expression gave. */
typedef struct num_param {
  const char *name;
  double lo, hi;
  bool whole;
  const char *what;
} num_param;

enum { NP_TIMEOUT, NP_CORES, NP_RETRIES, NP_MEMORY, NP_GPUS, NP_MAX_RUNNING };
static const num_param NUM_PARAMS[] = {
    [NP_TIMEOUT] = {"timeout", 0, 1e12, false, "0 (none) or more seconds"},
    [NP_CORES] = {"cores", 1, 1e6, true, "a whole number of at least 1"},
    [NP_RETRIES] = {"retries", 0, 1e6, true, "0 or more"},
    [NP_MEMORY] = {"memory_mb", 0, 1e12, true, "0 or more"},
    [NP_GPUS] = {"gpus", 0, 1e6, true, "0 or more"},
    [NP_MAX_RUNNING] = {"max_running", 0, 1e9, true, "0 (no limit) or more"},
};

int br_invoke_run_env(br_node_ctx *ctx, char **argv, char *const *extra_env) {
  br_task *t = br_ctx_task(ctx);
  const json_t *attrs = br_task_attrs(t);
  char msg[1024];
  char **env = NULL;
  size_t nenv = 0;
  char **tags = NULL, **limits = NULL;
  int *good = NULL, *retry = NULL, ngood = 0, nretry = 0, rc = 0;
  const char *k;
  json_t *v;
  /* once: json_object_foreach evaluates its object on every step, and an
   * expression's value is a new object each time */
  json_t *envp = br_ctx_param(ctx, "env");
  json_object_foreach(envp, k, v) {
    if (json_is_null(v)) {
      rc = br_ctx_fail(ctx, "env %s: the value is null (an expression that gave nil: does the "
                       "task have the attribute?)", k);
      goto out;
    }
    char *val = json_is_string(v) ? br_invoke_subst(attrs, json_string_value(v), msg, sizeof msg)
                                  : json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    if (!val) {
      rc = br_ctx_fail(ctx, "env %s: %s", k, msg);
      goto out;
    }
    char *kv = NULL;
    if (asprintf(&kv, "%s=%s", k, val) < 0) abort();
    free(val);
    br_argv_push(&env, &nenv, kv);
  }
  for (size_t i = 0; extra_env && extra_env[i]; i++) br_argv_push(&env, &nenv, strdup(extra_env[i]));
  if (codes(ctx, "good_codes", &good, &ngood) || codes(ctx, "retry_codes", &retry, &nretry) ||
      names(ctx, "tags", &tags) || names(ctx, "limits", &limits)) {
    rc = -1;
    goto out;
  }
  char *cwd = NULL;
  const char *cwdp = br_ctx_param_str(ctx, "cwd", "");
  if (*cwdp && !(cwd = br_invoke_subst(attrs, cwdp, msg, sizeof msg))) {
    rc = br_ctx_fail(ctx, "cwd: %s", msg);
    goto out;
  }
  const char *progress = br_ctx_param_str(ctx, "progress", "");
  br_invocation inv = {
      .task_id = br_task_id(t),
      .node = br_node_name(br_ctx_node(ctx)),
      .argv = argv,
      .env = env,
      .cwd = cwd,
      .timeout = br_ctx_param_float(ctx, "timeout", 0),
      .good_codes = good,
      .n_good = ngood,
      .retry_codes = retry,
      .n_retry = nretry,
      .progress_regex = *progress ? progress : NULL,
      .cores = (int)br_ctx_param_int(ctx, "cores", 1),
      .memory_mb = br_ctx_param_int(ctx, "memory_mb", 0),
      .gpus = (int)br_ctx_param_int(ctx, "gpus", 0),
      .tags = tags,
      .limits = limits,
      .node_limit = (int)br_ctx_param_int(ctx, "max_running", 0),
      .slurm = br_ctx_param(ctx, "slurm"),
  };
  /* the least the graph's checks hold literal values to (NUM_PARAMS), for
   * the values an expression gave */
  const struct {
    const num_param *np;
    long long got;
  } need[] = {{&NUM_PARAMS[NP_CORES], inv.cores},
              {&NUM_PARAMS[NP_MEMORY], (long long)inv.memory_mb},
              {&NUM_PARAMS[NP_GPUS], inv.gpus},
              {&NUM_PARAMS[NP_MAX_RUNNING], inv.node_limit}};
  for (size_t i = 0; i < sizeof need / sizeof need[0]; i++)
    if (need[i].got < need[i].np->lo) {
      rc = br_ctx_fail(ctx, "parameter '%s' is %lld: it must be %s", need[i].np->name,
                       need[i].got, need[i].np->what);
      free(cwd);
      goto out;
    }
  rc = br_ctx_invoke(ctx, &inv) ? -1 : 0;
  free(cwd);
out:
  br_argv_free(env);
  br_argv_free(tags);
  br_argv_free(limits);
  free(good);
  free(retry);
  return rc;
}

/* ---- checks when the graph loads ---- */

static int bad_param(const br_node *node, br_error *err, const char *param, const char *sub,
                     const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static int bad_param(const br_node *node, br_error *err, const char *param, const char *sub,
                     const char *fmt, ...) {
  char msg[900];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return br_node_fail_at_param(node, err, param, sub, "parameter '%s': %s", param, msg);
}

/* A number parameter written as it is (not an expression): it must be in
 * lo..hi (whole when `whole`). */
static int check_number(const br_node *node, br_error *err, const num_param *np) {
  json_t *v = json_object_get(br_node_params(node), np->name);
  if (!v || br_script_is_expr(v) || !json_is_number(v)) return BR_OK;
  double d = json_number_value(v);
  if (d < np->lo || d > np->hi || (np->whole && !json_is_integer(v))) {
    char *got = json_dumps(v, JSON_ENCODE_ANY);
    int rc = bad_param(node, err, np->name, NULL, "must be %s, got %s", np->what, got ? got : "?");
    free(got);
    return rc;
  }
  return BR_OK;
}

static int check_codes(const br_node *node, br_error *err, const char *param) {
  json_t *v = json_object_get(br_node_params(node), param);
  if (br_script_is_expr(v)) return BR_OK;
  for (size_t i = 0; i < json_array_size(v); i++) {
    json_t *c = json_array_get(v, i);
    char sub[32];
    snprintf(sub, sizeof sub, "%zu", i);
    if (br_script_is_expr(c)) continue;
    if (!json_is_integer(c) || json_integer_value(c) < 0 || json_integer_value(c) > 255)
      return bad_param(node, err, param, sub, "exit codes are whole numbers from 0 to 255, "
                       "and item %zu is not", i);
  }
  return BR_OK;
}

static int check_names(const br_node *node, br_error *err, const char *param) {
  json_t *v = json_object_get(br_node_params(node), param);
  if (br_script_is_expr(v)) return BR_OK;
  for (size_t i = 0; i < json_array_size(v); i++) {
    json_t *s = json_array_get(v, i);
    char sub[32];
    snprintf(sub, sizeof sub, "%zu", i);
    if (!br_script_is_expr(s) && (!json_is_string(s) || !*json_string_value(s)))
      return bad_param(node, err, param, sub, "item %zu is not a name", i);
  }
  return BR_OK;
}

/* The "slurm" settings as the slurm executor takes them (they were checked
 * only when a job was sent, so a typo passed validate and failed each task). */
static int check_slurm(const br_node *node, br_error *err) {
  json_t *v = json_object_get(br_node_params(node), "slurm");
  const char *k;
  json_t *x;
  if (br_script_is_expr(v)) return BR_OK;
  json_object_foreach(v, k, x) {
    if (br_script_is_expr(x)) continue;
    if (strcmp(k, "partition") && strcmp(k, "account") && strcmp(k, "qos") && strcmp(k, "time") &&
        strcmp(k, "args"))
      return bad_param(node, err, "slurm", k,
                       "unknown slurm setting '%s' (partition, account, qos, time, args)", k);
    if (strcmp(k, "args") == 0) {
      for (size_t i = 0; i < json_array_size(x); i++)
        if (!json_is_string(json_array_get(x, i)) && !br_script_is_expr(json_array_get(x, i)))
          return bad_param(node, err, "slurm", k, "args: item %zu is not a string", i);
      if (!json_is_array(x))
        return bad_param(node, err, "slurm", k, "args is a list of sbatch options");
    } else if (!json_is_string(x) && !(strcmp(k, "time") == 0 && json_is_integer(x))) {
      return bad_param(node, err, "slurm", k, "%s is %s", k,
                       strcmp(k, "time") ? "a name" : "Slurm's time (30, \"2:00:00\", \"1-0\")");
    }
  }
  return BR_OK;
}

/* Whether s[0..n) is a name {attr} can stand for: what attributes are
 * called in practice (letters, digits, '_', '.', '-'). */
static bool attr_name(const char *s, size_t n) {
  if (!n) return false;
  for (size_t i = 0; i < n; i++)
    if (!isalnum((unsigned char)s[i]) && !strchr("_.-", s[i])) return false;
  return true;
}

/* An uppercase word, as shell variables are named: HOME, PATH, SHOT_DIR. */
static bool shell_var_name(const char *s, size_t n) {
  if (!n || !isupper((unsigned char)s[0])) return false;
  for (size_t i = 0; i < n; i++)
    if (!isupper((unsigned char)s[i]) && !isdigit((unsigned char)s[i]) && s[i] != '_')
      return false;
  return true;
}

void br_invoke_lint(const br_node *node, const char *param, const char *sub, const char *s) {
  /* first what braid's expressions leave: "$${" is a literal "${", and
   * "${...}" becomes a value (here \x01, which holds no brace) */
  size_t len = strlen(s);
  char *t = malloc(len + 1), *o = t;
  if (!t) return;
  bool expr = strstr(s, "${") != NULL;
  for (size_t i = 0; i < len;) {
    if (expr && s[i] == '$' && s[i + 1] == '$' && s[i + 2] == '{') {
      *o++ = '$';
      *o++ = '{';
      i += 3;
    } else if (expr && s[i] == '$' && s[i + 1] == '{') {
      size_t end = br_script_interp_end(s, len, i);
      if (!end) break; /* a graph error already */
      const char *in = s + i + 2;
      size_t n = end - i - 2;
      if (shell_var_name(in, n))
        br_node_warn_at_param(node, param, sub,
                              "\"%s\": ${%.*s} is a braid expression, and %.*s is not defined "
                              "there (a shell variable? write $%.*s, or $${{%.*s}} for ${%.*s})",
                              s, (int)n, in, (int)n, in, (int)n, in, (int)n, in, (int)n, in);
      *o++ = '\x01';
      i = end + 1;
    } else {
      *o++ = s[i++];
    }
  }
  *o = '\0';
  /* then what {attr} substitution does with the rest */
  for (const char *p = t; *p;) {
    if ((p[0] == '{' && p[1] == '{') || (p[0] == '}' && p[1] == '}')) {
      p += 2;
    } else if (*p == '{') {
      const char *end = strchr(p, '}');
      if (!end) {
        br_node_warn_at_param(node, param, sub,
                              "\"%s\": a '{' that no '}' closes fails every task (write {{ for "
                              "a literal brace)",
                              s);
        break;
      }
      size_t n = (size_t)(end - p - 1);
      if (!memchr(p + 1, '\x01', n) && !attr_name(p + 1, n))
        br_node_warn_at_param(node, param, sub,
                              "\"%s\": {%.*s} stands for the task's attribute '%.*s' (write "
                              "{{ and }} for literal braces, e.g. awk '{{print $1}}')",
                              s, (int)n, p + 1, (int)n, p + 1);
      p = end + 1;
    } else {
      p++;
    }
  }
  free(t);
}

/* Lints a parameter's string, or the strings of a list or an object. */
static void lint_param(const br_node *node, const char *param) {
  json_t *v = json_object_get(br_node_params(node), param);
  if (json_is_string(v)) {
    br_invoke_lint(node, param, NULL, json_string_value(v));
    return;
  }
  char sub[300];
  size_t i;
  json_t *x;
  const char *k;
  if (json_is_array(v)) {
    json_array_foreach(v, i, x) {
      snprintf(sub, sizeof sub, "%zu", i);
      if (json_is_string(x)) br_invoke_lint(node, param, sub, json_string_value(x));
    }
  } else if (json_is_object(v) && !br_script_is_expr(v)) {
    json_object_foreach(v, k, x) {
      snprintf(sub, sizeof sub, "%s", k);
      if (json_is_string(x)) br_invoke_lint(node, param, sub, json_string_value(x));
    }
  }
}

int br_invoke_check(const br_node *node, br_error *err) {
  json_t *p = br_node_params(node);
  int rc;
  for (size_t i = 0; i < sizeof NUM_PARAMS / sizeof NUM_PARAMS[0]; i++)
    if ((rc = check_number(node, err, &NUM_PARAMS[i]))) return rc;
  if ((rc = check_codes(node, err, "good_codes")) || (rc = check_codes(node, err, "retry_codes")) ||
      (rc = check_names(node, err, "tags")) || (rc = check_names(node, err, "limits")) ||
      (rc = check_slurm(node, err)))
    return rc;
  json_t *env = json_object_get(p, "env");
  const char *k;
  json_t *v;
  if (!br_script_is_expr(env)) {
    json_object_foreach(env, k, v) {
      if (!*k || strchr(k, '='))
        return bad_param(node, err, "env", k[0] ? k : NULL,
                         "'%s' is not a variable name (not empty, no '=')", k);
      if (json_is_object(v) && !br_script_is_expr(v))
        return bad_param(node, err, "env", k, "the value of %s is an object", k);
      if (json_is_null(v)) return bad_param(node, err, "env", k, "the value of %s is null", k);
    }
  }
  json_t *re = json_object_get(p, "progress");
  if (json_is_string(re) && *json_string_value(re) && !br_script_is_expr(re)) {
    regex_t r;
    int e = regcomp(&r, json_string_value(re), REG_EXTENDED);
    if (e) {
      char msg[256];
      regerror(e, &r, msg, sizeof msg);
      return bad_param(node, err, "progress", NULL, "'%s' is not a regex: %s",
                       json_string_value(re), msg);
    }
    size_t groups = r.re_nsub;
    regfree(&r);
    if (groups < 1)
      return bad_param(node, err, "progress", NULL,
                       "'%s' has no group: put the number in ( )", json_string_value(re));
  }
  lint_param(node, "env");
  lint_param(node, "cwd");
  return BR_OK;
}

void br_invoke_lint_params(const br_node *node, const char *const *params) {
  for (const char *const *p = params; *p; p++) lint_param(node, *p);
}
