/* Tests for the script module: expressions and their conversions, the
 * sandbox, the limits and the script node's actions. */
#include "harness.h"

#include <braid/script.h>

/* ---- helpers ---- */

static br_script_env *env_new(void) {
  br_error err;
  br_error_clear(&err);
  br_script_env *env = br_script_env_new(NULL, &err);
  if (!env) br_test_fail(__FILE__, __LINE__, "env: %s", err.msg);
  return env;
}

static json_t *parse(const char *text) {
  json_error_t je;
  json_t *j = json_loads(text, JSON_DECODE_ANY, &je);
  if (!j) br_test_fail(__FILE__, __LINE__, "bad JSON in test: %s: %s", text, je.text);
  return j;
}

static const char *default_attrs =
    "{\"frame\": 7, \"wedge\": \"w2\", \"scale\": 0.5, \"name\": \"abc\", \"on\": true,"
    " \"list\": [1, 2, 3], \"obj\": {\"a\": 1, \"b\": [\"x\"]}, \"elist\": [], \"eobj\": {},"
    " \"numstr\": \"12\", \"fstr\": \"2.5\"}";

/* Compiles value_json as type and evaluates it with default_attrs. Returns the
 * result as compact JSON text (static buffer) or NULL with err filled. */
static char result_buf[4096];
static const char *eval_in(br_script_env *env, const char *value_json, br_param_type type,
                           br_error *err) {
  json_t *v = parse(value_json);
  json_t *attrs = parse(default_attrs);
  br_script_task t = {.id = 42, .name = "shot010", .parent = 41, .split_id = 9,
                      .split_elem = 2, .split_count = 4, .attrs = attrs};
  br_script_expr *e;
  br_error_clear(err);
  int rc = br_script_expr_compile(env, v, type, &e, err);
  json_decref(v);
  const char *res = NULL;
  if (rc == BR_OK) {
    json_t *out = NULL;
    rc = br_script_expr_eval(env, e, &t, &out, err);
    if (rc == BR_OK) {
      char *s = json_dumps(out, JSON_ENCODE_ANY | JSON_COMPACT | JSON_SORT_KEYS);
      snprintf(result_buf, sizeof result_buf, "%s", s);
      free(s);
      json_decref(out);
      res = result_buf;
    }
  }
  if (rc != BR_OK) CHECK_EQ_INT(err->code, rc);
  json_decref(attrs);
  return res;
}

static const char *eval1(const char *value_json, br_param_type type, br_error *err) {
  br_script_env *env = env_new();
  const char *r = eval_in(env, value_json, type, err);
  br_script_env_free(env);
  return r;
}

#define CHECK_EVAL(value_json, type, expect)                                   \
  do {                                                                         \
    br_error e_;                                                               \
    const char *r_ = eval1(value_json, type, &e_);                             \
    if (!r_) br_test_fail(__FILE__, __LINE__, "%s: error %s", value_json, e_.msg); \
    CHECK_EQ_STR(r_, expect);                                                  \
  } while (0)

#define CHECK_EVAL_ERR(value_json, type, needle)                               \
  do {                                                                         \
    br_error e_;                                                               \
    const char *r_ = eval1(value_json, type, &e_);                             \
    if (r_) br_test_fail(__FILE__, __LINE__, "%s: expected an error, got %s", value_json, r_); \
    CHECK_EQ_INT(e_.code, BR_ESCRIPT);                                         \
    CHECK_CONTAINS(e_.msg, needle);                                            \
  } while (0)

/* An expression {"expr": src} as JSON text. */
static const char *ex(const char *src) {
  static char buf[4][2048];
  static int i;
  json_t *o = json_pack("{s:s}", "expr", src);
  char *s = json_dumps(o, JSON_COMPACT);
  char *b = buf[i++ % 4];
  snprintf(b, sizeof buf[0], "%s", s);
  free(s);
  json_decref(o);
  return b;
}

/* A JSON string literal for s. */
static const char *js(const char *s) {
  static char buf[4][2048];
  static int i;
  json_t *o = json_string(s);
  char *d = json_dumps(o, JSON_ENCODE_ANY);
  char *b = buf[i++ % 4];
  snprintf(b, sizeof buf[0], "%s", d);
  free(d);
  json_decref(o);
  return b;
}

/* ---- expression forms ---- */

TEST(expr_literal_values_pass_through) {
  CHECK_EVAL("5", BR_PARAM_INT, "5");
  CHECK_EVAL("\"/plain/path.png\"", BR_PARAM_STRING, "\"/plain/path.png\"");
  CHECK_EVAL("[1, \"a\"]", BR_PARAM_LIST, "[1,\"a\"]");
  CHECK_EVAL("{\"a\": 1, \"b\": 2}", BR_PARAM_OBJECT, "{\"a\":1,\"b\":2}");
  json_t *j = parse("\"no interpolation\"");
  CHECK(!br_script_is_expr(j));
  json_decref(j);
  j = parse("[\"a\", {\"x\": \"${attr.frame}\"}]");
  CHECK(br_script_is_expr(j));
  json_decref(j);
}

TEST(expr_object_form) {
  CHECK_EVAL(ex("attr.frame * 2"), BR_PARAM_INT, "14");
  CHECK_EVAL(ex("attr.wedge .. '_' .. attr.frame"), BR_PARAM_STRING, "\"w2_7\"");
  CHECK_EVAL(ex("attr.frame > 5 and 'late' or 'early'"), BR_PARAM_STRING, "\"late\"");
  CHECK_EVAL(ex("math.max(attr.frame, 10)"), BR_PARAM_INT, "10");
  CHECK_EVAL(ex("#attr.list"), BR_PARAM_INT, "3");
  CHECK_EVAL(ex("attr.obj.b[1]"), BR_PARAM_STRING, "\"x\"");
}

TEST(expr_block_with_return) {
  CHECK_EVAL(ex("local n = 0\nfor _, v in ipairs(attr.list) do n = n + v end\nreturn n"),
             BR_PARAM_INT, "6");
}

TEST(interp_path) {
  CHECK_EVAL(js("/out/${attr.wedge}/img.${pad(attr.frame, 4)}.png"), BR_PARAM_STRING,
             "\"/out/w2/img.0007.png\"");
  CHECK_EVAL(js("${attr.wedge}${attr.frame}"), BR_PARAM_STRING, "\"w27\"");
  CHECK_EVAL(js("f=${attr.scale}"), BR_PARAM_STRING, "\"f=0.5\"");
  CHECK_EVAL(js("a \"quoted\" \\ ${attr.name}\n"), BR_PARAM_STRING,
             "\"a \\\"quoted\\\" \\\\ abc\\n\"");
}

TEST(interp_single_part_keeps_type) {
  CHECK_EVAL(js("${attr.frame}"), BR_PARAM_ANY, "7");
  CHECK_EVAL(js("${attr.frame + 1}"), BR_PARAM_INT, "8");
  CHECK_EVAL(js("${attr.list}"), BR_PARAM_ANY, "[1,2,3]");
  CHECK_EVAL(js("${attr.on}"), BR_PARAM_BOOL, "true");
  CHECK_EVAL(js(" ${attr.frame}"), BR_PARAM_ANY, "\" 7\"");
}

TEST(interp_escape_and_braces) {
  CHECK_EVAL(js("$${HOME}/x"), BR_PARAM_STRING, "\"${HOME}/x\"");
  CHECK_EVAL(js("$${HOME}/${attr.frame}"), BR_PARAM_STRING, "\"${HOME}/7\"");
  CHECK_EVAL(js("${({a = '}'}).a}"), BR_PARAM_STRING, "\"}\"");
  CHECK_EVAL(js("${fmt(\"%s{\", attr.name)}"), BR_PARAM_STRING, "\"abc{\"");
  CHECK_EVAL(js("${attr.frame -- a comment\n}"), BR_PARAM_INT, "7");
}

TEST(interp_errors) {
  CHECK_EVAL_ERR(js("/out/${attr.missing}/x"), BR_PARAM_STRING, "nil");
  CHECK_EVAL_ERR(js("/out/${attr.missing}/x"), BR_PARAM_STRING, "missing");
  CHECK_EVAL_ERR(js("/out/${attr.frame"), BR_PARAM_STRING, "unterminated ${");
  CHECK_EVAL_ERR(js("/out/${ }"), BR_PARAM_STRING, "empty ${}");
  CHECK_EVAL_ERR(js("/out/${attr.frame +}"), BR_PARAM_STRING, "in ${attr.frame +}: expr:1:");
  CHECK_EVAL_ERR(js("/out/${attr.on}"), BR_PARAM_STRING, "concatenate a boolean");
}

TEST(expr_inside_list_and_object) {
  CHECK_EVAL("[\"render\", \"-o\", \"/r/${pad(attr.frame, 3)}.exr\", {\"expr\": \"attr.frame\"}]",
             BR_PARAM_LIST, "[\"render\",\"-o\",\"/r/007.exr\",7]");
  CHECK_EVAL("{\"path\": \"${attr.wedge}\", \"n\": 1}", BR_PARAM_OBJECT,
             "{\"n\":1,\"path\":\"w2\"}");
  CHECK_EVAL_ERR("[\"${attr.wedge}\"]", BR_PARAM_OBJECT, "expected object, got list");
}

TEST(expr_task_fields) {
  CHECK_EVAL(js("${task.id}/${task.name}/${task.parent}/${task.split_id}/${task.split_elem}/"
                "${task.split_count}"),
             BR_PARAM_STRING, "\"42/shot010/41/9/2/4\"");
  /* a task with no parent and no split */
  br_script_env *env = env_new();
  json_t *v = parse(ex("{task.parent == nil, task.split_id == nil, task.split_count}"));
  br_script_expr *e;
  br_error err;
  CHECK_EQ_INT(br_script_expr_compile(env, v, BR_PARAM_LIST, &e, &err), BR_OK);
  br_script_task t = {.id = 1};
  json_t *out;
  CHECK_EQ_INT(br_script_expr_eval(env, e, &t, &out, &err), BR_OK);
  char *s = json_dumps(out, JSON_COMPACT);
  CHECK_EQ_STR(s, "[true,true,1]");
  free(s);
  json_decref(out);
  json_decref(v);
  /* no task at all: attr is empty */
  v = parse(ex("attr.frame == nil"));
  CHECK_EQ_INT(br_script_expr_compile(env, v, BR_PARAM_BOOL, &e, &err), BR_OK);
  CHECK_EQ_INT(br_script_expr_eval(env, e, NULL, &out, &err), BR_OK);
  CHECK(json_is_true(out));
  json_decref(out);
  json_decref(v);
  br_script_env_free(env);
}

TEST(expr_attr_is_read_only) {
  CHECK_EVAL_ERR(ex("(function() attr.frame = 1 end)()"), BR_PARAM_ANY, "read-only");
  CHECK_EVAL_ERR(ex("(function() task.id = 1 end)()"), BR_PARAM_ANY, "read-only");
  CHECK_EVAL_ERR(ex("(function() param.x = 1 end)()"), BR_PARAM_ANY, "read-only");
  CHECK_EVAL(ex("(function() local n = 0 for k in pairs(attr) do n = n + 1 end return n end)()"),
             BR_PARAM_INT, "11");
}

TEST(expr_params_view) {
  br_script_env *env = env_new();
  json_t *params = parse("{\"chunk\": 5, \"out\": \"/o/${param.chunk * 2}.png\","
                         " \"bad\": {\"expr\": \"param.out\"}, \"list\": [\"${attr.x}\"]}");
  static const br_param_spec specs[] = {
      {"chunk", BR_PARAM_INT, "1", false, NULL},
      {"out", BR_PARAM_STRING, NULL, false, NULL},
      {NULL, 0, NULL, false, NULL},
  };
  br_error err;
  static const char *const literal[] = {"src", NULL};
  json_object_set_new(params, "src", json_string("x = '${not an expression}'"));
  CHECK_EQ_INT(br_script_env_compile_params(env, params, specs, literal, &err), BR_OK);
  CHECK(!br_script_env_param_is_expr(env, "src"));
  br_error e2;
  CHECK_EQ_STR(eval_in(env, ex("param.src"), BR_PARAM_STRING, &e2), "\"x = '${not an expression}'\"");
  CHECK(!br_script_env_param_is_expr(env, "chunk"));
  CHECK(br_script_env_param_is_expr(env, "out"));
  CHECK(br_script_env_param_is_expr(env, "list"));
  json_t *out;
  CHECK_EQ_INT(br_script_env_param(env, "chunk", NULL, &out, &err), BR_OK);
  CHECK_EQ_INT(json_integer_value(out), 5);
  json_decref(out);
  CHECK_EQ_INT(br_script_env_param(env, "out", NULL, &out, &err), BR_OK);
  CHECK_EQ_STR(json_string_value(out), "/o/10.png");
  json_decref(out);
  CHECK_EQ_INT(br_script_env_param(env, "absent", NULL, &out, &err), BR_OK);
  CHECK(out == NULL);
  CHECK_EQ_INT(br_script_env_param(env, "bad", NULL, &out, &err), BR_ESCRIPT);
  CHECK_CONTAINS(err.msg, "parameter 'bad'");
  CHECK_CONTAINS(err.msg, "param.out is an expression");
  json_decref(params);
  br_script_env_free(env);

  /* a syntax error names the parameter and the Lua line */
  env = env_new();
  params = parse("{\"x\": {\"expr\": \"attr.frame +\"}}");
  CHECK_EQ_INT(br_script_env_compile_params(env, params, NULL, NULL, &err), BR_ESCRIPT);
  CHECK_CONTAINS(err.msg, "parameter 'x': expr:1:");
  json_decref(params);
  br_script_env_free(env);
}

TEST(lib_path_helpers) {
  CHECK_EVAL(ex("path.join('/a', 'b', 'c.png')"), BR_PARAM_STRING, "\"/a/b/c.png\"");
  CHECK_EVAL(ex("path.join('/a/', 'b/', '', 'c')"), BR_PARAM_STRING, "\"/a/b/c\"");
  CHECK_EVAL(ex("path.join('a', '/abs', 'c')"), BR_PARAM_STRING, "\"/abs/c\"");
  CHECK_EVAL(ex("path.join('rel', 'x')"), BR_PARAM_STRING, "\"rel/x\"");
  CHECK_EVAL(ex("path.dirname('/a/b/c.png')"), BR_PARAM_STRING, "\"/a/b\"");
  CHECK_EVAL(ex("path.dirname('/a/b/')"), BR_PARAM_STRING, "\"/a\"");
  CHECK_EVAL(ex("path.dirname('/c')"), BR_PARAM_STRING, "\"/\"");
  CHECK_EVAL(ex("path.dirname('c.png')"), BR_PARAM_STRING, "\".\"");
  CHECK_EVAL(ex("path.dirname('a//b')"), BR_PARAM_STRING, "\"a\"");
  CHECK_EVAL(ex("path.basename('/a/b/c.png')"), BR_PARAM_STRING, "\"c.png\"");
  CHECK_EVAL(ex("path.basename('/a/b/')"), BR_PARAM_STRING, "\"b\"");
  CHECK_EVAL(ex("path.basename('/')"), BR_PARAM_STRING, "\"/\"");
  CHECK_EVAL(ex("path.ext('/a/b/img.0001.exr')"), BR_PARAM_STRING, "\".exr\"");
  CHECK_EVAL(ex("path.ext('/a/b.d/noext')"), BR_PARAM_STRING, "\"\"");
  CHECK_EVAL(ex("path.ext('/a/.bashrc')"), BR_PARAM_STRING, "\"\"");
  CHECK_EVAL(ex("path.stem('/a/b/img.0001.exr')"), BR_PARAM_STRING, "\"img.0001\"");
  CHECK_EVAL(ex("path.stem('/a/.bashrc')"), BR_PARAM_STRING, "\".bashrc\"");
  CHECK_EVAL_ERR(ex("path.join('a', {})"), BR_PARAM_STRING, "bad argument #2 to 'join'");
}

TEST(lib_pad_and_fmt) {
  CHECK_EVAL(ex("pad(7, 4)"), BR_PARAM_STRING, "\"0007\"");
  CHECK_EVAL(ex("pad(-5, 4)"), BR_PARAM_STRING, "\"-005\"");
  CHECK_EVAL(ex("pad(12345, 4)"), BR_PARAM_STRING, "\"12345\"");
  CHECK_EVAL(ex("pad(3.0, 2)"), BR_PARAM_STRING, "\"03\"");
  CHECK_EVAL(ex("pad('12', 3)"), BR_PARAM_STRING, "\"012\"");
  CHECK_EVAL(ex("fmt('%04d', 12)"), BR_PARAM_STRING, "\"0012\"");
  CHECK_EVAL(ex("fmt('%s_%.2f', 'a', 0.5)"), BR_PARAM_STRING, "\"a_0.50\"");
  CHECK_EVAL_ERR(ex("pad(2.5, 4)"), BR_PARAM_STRING, "number has no integer representation");
  CHECK_EVAL_ERR(ex("pad(1, 99)"), BR_PARAM_STRING, "width must be 0..64");
  CHECK_EVAL(ex("string.upper(attr.name) .. math.floor(2.7) .. table.concat({1, 2}, ',')"),
             BR_PARAM_STRING, "\"ABC21,2\"");
  CHECK_EVAL(ex("attr.name:upper()"), BR_PARAM_STRING, "\"ABC\"");
  CHECK_EVAL(ex("type(os.time()) == 'number' and type(os.clock()) == 'number' and "
                "#os.date('%Y') == 4"),
             BR_PARAM_BOOL, "true");
}

/* ---- conversions ---- */

TEST(convert_bool) {
  CHECK_EVAL(ex("attr.frame > 3"), BR_PARAM_BOOL, "true");
  CHECK_EVAL(ex("false"), BR_PARAM_BOOL, "false");
  CHECK_EVAL_ERR(ex("'yes'"), BR_PARAM_BOOL, "expected bool, got string 'yes'");
  CHECK_EVAL_ERR(ex("1"), BR_PARAM_BOOL, "expected bool, got int 1");
  CHECK_EVAL_ERR(ex("nil"), BR_PARAM_BOOL, "expected bool, got nil");
}

TEST(convert_int) {
  CHECK_EVAL(ex("attr.frame"), BR_PARAM_INT, "7");
  CHECK_EVAL(ex("attr.frame / 7 * 4"), BR_PARAM_INT, "4"); /* 4.0 is an int */
  CHECK_EVAL(ex("attr.numstr"), BR_PARAM_INT, "12");
  CHECK_EVAL(ex("-3"), BR_PARAM_INT, "-3");
  CHECK_EVAL_ERR(ex("'abc'"), BR_PARAM_INT, "expected int, got string 'abc'");
  CHECK_EVAL_ERR(ex("4.5"), BR_PARAM_INT, "expected int, got float 4.5");
  CHECK_EVAL_ERR(ex("{}"), BR_PARAM_INT, "expected int, got table");
  CHECK_EVAL_ERR(ex("true"), BR_PARAM_INT, "expected int, got bool true");
  CHECK_EVAL_ERR(ex("1e300"), BR_PARAM_INT, "expected int, got float 1e+300");
}

TEST(convert_float) {
  CHECK_EVAL(ex("attr.scale * 3"), BR_PARAM_FLOAT, "1.5");
  CHECK_EVAL(ex("2"), BR_PARAM_FLOAT, "2.0");
  CHECK_EVAL(ex("attr.fstr"), BR_PARAM_FLOAT, "2.5");
  CHECK_EVAL_ERR(ex("'2.5x'"), BR_PARAM_FLOAT, "expected float, got string '2.5x'");
  CHECK_EVAL_ERR(ex("1/0"), BR_PARAM_FLOAT, "expected float, got float inf");
}

TEST(convert_string) {
  CHECK_EVAL(ex("attr.name"), BR_PARAM_STRING, "\"abc\"");
  CHECK_EVAL(ex("attr.frame"), BR_PARAM_STRING, "\"7\"");
  CHECK_EVAL(ex("2.0"), BR_PARAM_STRING, "\"2.0\"");
  CHECK_EVAL(ex("0.25"), BR_PARAM_STRING, "\"0.25\"");
  CHECK_EVAL_ERR(ex("true"), BR_PARAM_STRING, "expected string, got bool true");
  CHECK_EVAL_ERR(ex("{1}"), BR_PARAM_STRING, "expected string, got table");
  CHECK_EVAL_ERR(ex("'\\xff'"), BR_PARAM_STRING, "not valid UTF-8");
  /* a NUL is refused, as in graph files: the stores read such attributes
   * back as none at all */
  CHECK_EVAL_ERR(ex("'a\\0b'"), BR_PARAM_STRING,
                 "expected string, got a string that holds \\0 (a NUL character), which braid "
                 "does not take");
  CHECK_EVAL_ERR(ex("{'a', 'b\\0'}"), BR_PARAM_LIST, "a string holds \\0 (a NUL character)");
  CHECK_EVAL_ERR(ex("{['k\\0'] = 1}"), BR_PARAM_ANY, "a key holds \\0 (a NUL character)");
}

TEST(convert_list) {
  CHECK_EVAL(ex("{1, 2.5, 'x', true, {3}}"), BR_PARAM_LIST, "[1,2.5,\"x\",true,[3]]");
  CHECK_EVAL(ex("{}"), BR_PARAM_LIST, "[]");
  CHECK_EVAL(ex("attr.elist"), BR_PARAM_LIST, "[]");
  CHECK_EVAL(ex("attr.list"), BR_PARAM_LIST, "[1,2,3]");
  CHECK_EVAL_ERR(ex("{a = 1}"), BR_PARAM_LIST, "expected list, got a table with non-sequence keys");
  CHECK_EVAL_ERR(ex("attr.eobj"), BR_PARAM_LIST, "expected list");
  CHECK_EVAL_ERR(ex("'a,b'"), BR_PARAM_LIST, "expected list, got string 'a,b'");
}

TEST(convert_object) {
  CHECK_EVAL(ex("{a = 1, b = {c = 'x'}}"), BR_PARAM_OBJECT, "{\"a\":1,\"b\":{\"c\":\"x\"}}");
  CHECK_EVAL(ex("{}"), BR_PARAM_OBJECT, "{}");
  CHECK_EVAL(ex("attr.eobj"), BR_PARAM_OBJECT, "{}");
  CHECK_EVAL(ex("{[1] = 'a', [3] = 'c'}"), BR_PARAM_OBJECT, "{\"1\":\"a\",\"3\":\"c\"}");
  CHECK_EVAL_ERR(ex("{1, 2}"), BR_PARAM_OBJECT, "expected object, got a list");
  CHECK_EVAL_ERR(ex("5"), BR_PARAM_OBJECT, "expected object, got int 5");
}

TEST(convert_any) {
  CHECK_EVAL(ex("attr.obj"), BR_PARAM_ANY, "{\"a\":1,\"b\":[\"x\"]}");
  CHECK_EVAL(ex("attr.eobj"), BR_PARAM_ANY, "{}");
  CHECK_EVAL(ex("attr.elist"), BR_PARAM_ANY, "[]");
  CHECK_EVAL(ex("{}"), BR_PARAM_ANY, "[]");
  CHECK_EVAL(ex("nil"), BR_PARAM_ANY, "null");
  CHECK_EVAL(ex("3"), BR_PARAM_ANY, "3");
  CHECK_EVAL(ex("3.0"), BR_PARAM_ANY, "3.0");
  CHECK_EVAL(ex("{x = {1, {y = 2}}, [2] = 'two'}"), BR_PARAM_ANY,
             "{\"2\":\"two\",\"x\":[1,{\"y\":2}]}");
  CHECK_EVAL_ERR(ex("print or type"), BR_PARAM_ANY, "cannot convert a function value to JSON");
  CHECK_EVAL_ERR(ex("{f = type}"), BR_PARAM_ANY, "cannot convert a function value to JSON");
  CHECK_EVAL_ERR(ex("attr"), BR_PARAM_ANY, "cannot convert a userdata value to JSON");
  CHECK_EVAL_ERR(ex("{[true] = 1}"), BR_PARAM_ANY, "table with a boolean key");
  CHECK_EVAL_ERR(ex("0/0"), BR_PARAM_ANY, "cannot convert nan");
  CHECK_EVAL_ERR(ex("(function() local t = {} t.t = t return t end)()"), BR_PARAM_ANY,
                 "nested too deep");
}

/* ---- errors ---- */

TEST(syntax_error_has_line) {
  CHECK_EVAL_ERR(ex("attr.frame +"), BR_PARAM_ANY, "expr:1:");
  CHECK_EVAL_ERR(ex("local a = 1\nlocal b = = 2\nreturn a"), BR_PARAM_ANY, "expr:2:");
  br_script_env *env = env_new();
  br_script_chunk *c;
  br_error err;
  CHECK_EQ_INT(br_script_compile(env, "local a = 1\nlocal b = 2\nif a then\n", "script", &c, &err),
               BR_ESCRIPT);
  CHECK_CONTAINS(err.msg, "script:4:");
  CHECK_CONTAINS(err.msg, "'end' expected");
  CHECK_EQ_INT(br_script_compile(env, "x = = 1", "mynode", &c, &err), BR_ESCRIPT);
  CHECK_CONTAINS(err.msg, "mynode:1:");
  br_script_env_free(env);
}

TEST(empty_expression_is_an_error) {
  CHECK_EVAL_ERR(ex(""), BR_PARAM_ANY, "empty expression");
  CHECK_EVAL_ERR(ex("  \n"), BR_PARAM_ANY, "empty expression");
}

TEST(runtime_error_has_line) {
  CHECK_EVAL_ERR(ex("local a = 1\nreturn a + {}"), BR_PARAM_ANY, "expr:2: attempt to perform arithmetic");
  CHECK_EVAL_ERR(ex("error('boom')"), BR_PARAM_ANY, "expr:1: boom");
  CHECK_EVAL_ERR(ex("error({})"), BR_PARAM_ANY, "error object is a table value");
}

/* ---- the sandbox ---- */

#define CHECK_DENIED(src, needle) CHECK_EVAL_ERR(ex(src), BR_PARAM_ANY, needle)

TEST(sandbox_no_os_execute) {
  CHECK_DENIED("os.execute('touch /tmp/braid-pwned')", "attempt to call a nil value (field 'execute')");
  CHECK_DENIED("os.exit(1)", "field 'exit'");
  CHECK_DENIED("os.getenv('HOME')", "field 'getenv'");
  CHECK_DENIED("os.remove('/tmp/x')", "field 'remove'");
  CHECK_DENIED("os.rename('/tmp/x', '/tmp/y')", "field 'rename'");
  CHECK_DENIED("os.tmpname()", "field 'tmpname'");
}

TEST(sandbox_no_io) {
  CHECK_DENIED("io.open('/etc/passwd')", "attempt to index a nil value (global 'io')");
  CHECK_DENIED("io.popen('ls')", "global 'io'");
}

TEST(sandbox_no_require_or_files) {
  CHECK_DENIED("require('os')", "attempt to call a nil value (global 'require')");
  CHECK_DENIED("package.loaded", "global 'package'");
  CHECK_DENIED("dofile('/etc/passwd')", "global 'dofile'");
  CHECK_DENIED("loadfile('/etc/passwd')", "global 'loadfile'");
  CHECK_DENIED("print('x')", "global 'print'");
}

TEST(sandbox_no_binary_chunks) {
  CHECK_DENIED("assert(load('\\27LuaT\\0\\25\\147\\r\\n\\26\\n'))", "attempt to load a binary chunk");
  CHECK_DENIED("assert(load(function() return nil end))", "only a string can be loaded");
  /* text chunks load, into the sandbox */
  CHECK_EVAL(ex("load('return 1 + 1')()"), BR_PARAM_INT, "2");
  CHECK_EVAL(ex("load('return io == nil and os.execute == nil')()"), BR_PARAM_BOOL, "true");
}

TEST(sandbox_no_debug) {
  CHECK_DENIED("debug.getregistry()", "global 'debug'");
  CHECK_DENIED("debug.sethook()", "global 'debug'");
}

TEST(sandbox_no_string_dump) {
  CHECK_DENIED("string.dump(function() end)", "field 'dump'");
  CHECK_DENIED("('x'):dump()", "method 'dump'");
}

TEST(sandbox_string_metatable_hidden) {
  CHECK_DENIED("getmetatable('').__index", "attempt to index a boolean value");
  CHECK_EVAL(ex("getmetatable('')"), BR_PARAM_ANY, "false");
  CHECK_EVAL(ex("getmetatable(attr)"), BR_PARAM_ANY, "false");
  CHECK_DENIED("setmetatable(attr, {})", "bad argument #1 to 'setmetatable' (table expected");
  /* the environment and the JSON tables' metatables cannot be changed */
  CHECK_DENIED("setmetatable(_ENV, {})", "cannot change a protected metatable");
  CHECK_EVAL(ex("getmetatable(_ENV)"), BR_PARAM_ANY, "false");
  CHECK_EVAL(ex("getmetatable(attr.obj)"), BR_PARAM_ANY, "false");
  CHECK_DENIED("setmetatable(attr.list, {__index = function() return 1 end})",
               "cannot change a protected metatable");
  /* but plain tables can have metatables */
  CHECK_EVAL(ex("setmetatable({}, {__index = function() return 5 end}).x"), BR_PARAM_INT, "5");
}

TEST(sandbox_no_collectgarbage_or_gc_hooks) {
  CHECK_DENIED("collectgarbage('stop')", "global 'collectgarbage'");
  CHECK_DENIED("setmetatable({}, {__gc = function() while true do end end})", "__gc is not allowed");
  CHECK_DENIED("coroutine.create(print)", "global 'coroutine'");
}

TEST(sandbox_no_shared_state_between_envs) {
  br_script_env *a = env_new(), *b = env_new();
  br_error err;
  const char *r = eval_in(a, ex("(function() _G.leak = 'secret'; string.evil = 1 return 1 end)()"),
                          BR_PARAM_ANY, &err);
  CHECK(r != NULL);
  r = eval_in(a, ex("leak"), BR_PARAM_ANY, &err);
  CHECK_EQ_STR(r, "\"secret\""); /* same node, through _G: visible */
  r = eval_in(a, ex("(function() mine = 1 return 1 end)()"), BR_PARAM_ANY, &err);
  r = eval_in(a, ex("mine == nil"), BR_PARAM_ANY, &err);
  CHECK_EQ_STR(r, "true"); /* plain globals do not outlive an evaluation */
  r = eval_in(b, ex("{leak == nil, string.evil == nil}"), BR_PARAM_ANY, &err);
  CHECK_EQ_STR(r, "[true,true]"); /* other node: not */
  br_script_env_free(a);
  br_script_env_free(b);
}

TEST(sandbox_pattern_backtracking_is_bounded) {
  /* C-side backtracking escapes the instruction limit: refused up front */
  CHECK_DENIED("string.find(string.rep('a', 1000000), '.-b')",
               "string.find: pattern '.-b' is too costly on a string of 1000000 bytes");
  CHECK_DENIED("(string.rep('a', 5000)):match('(.-)(.-)(.-)b')", "string.match: pattern");
  CHECK_DENIED("string.gsub(string.rep('a', 100000), '.-.-b', '')", "string.gsub: pattern");
  /* ordinary uses work */
  CHECK_EVAL(ex("string.match('/show/sh010/render/w2/img.0007.exr', '/(%w+)/(%w+)/render/(%w+)/')"),
             BR_PARAM_STRING, "\"show\"");
  CHECK_EVAL(ex("select(2, ('/a/b/c.exr'):gsub('/', '/'))"), BR_PARAM_INT, "3");
  CHECK_EVAL(ex("(function() local n = 0 for w in string.gmatch(string.rep('ab ', 10000), '%a+') do n = n + 1 end return n end)()"),
             BR_PARAM_INT, "10000");
  CHECK_EVAL(ex("string.find(string.rep('a', 1000000) .. '.-b', '.-b', 1, true)"), BR_PARAM_INT, "1000001");
  CHECK_EVAL(ex("string.find('img.0007.exr', '%.(%d+)%.')"), BR_PARAM_INT, "4");
}

/* ---- limits ---- */

static br_script_env *small_env(void) {
  br_script_limits lim = {.memory = 8 << 20, .instructions = 100000};
  br_error err;
  br_script_env *env = br_script_env_new(&lim, &err);
  CHECK(env != NULL);
  return env;
}

TEST(limit_instructions) {
  br_script_env *env = small_env();
  br_error err;
  CHECK(!eval_in(env, ex("(function() while true do end end)()"), BR_PARAM_ANY, &err));
  CHECK_EQ_INT(err.code, BR_ESCRIPT);
  CHECK_CONTAINS(err.msg, "expr:1: instruction limit exceeded (100000 instructions)");
  /* the state stays usable */
  CHECK_EQ_STR(eval_in(env, ex("attr.frame + 1"), BR_PARAM_INT, &err), "8");
  /* pcall cannot swallow the limit */
  CHECK(!eval_in(env,
                 ex("(function() while true do pcall(function() while true do end end) end end)()"),
                 BR_PARAM_ANY, &err));
  CHECK_CONTAINS(err.msg, "instruction limit exceeded");
  CHECK(!eval_in(env, ex("(function() local function f() return f() end return f() end)()"),
                 BR_PARAM_ANY, &err));
  CHECK_CONTAINS(err.msg, "instruction limit exceeded");
  /* deep recursion ends in a stack overflow or a limit, and the state lives on */
  CHECK(!eval_in(env, ex("(function() local function f(n) return 1 + f(n + 1) end return f(1) end)()"),
                 BR_PARAM_ANY, &err));
  CHECK(strstr(err.msg, "stack overflow") || strstr(err.msg, "limit exceeded"));
  CHECK_EQ_STR(eval_in(env, ex("attr.frame"), BR_PARAM_INT, &err), "7");
  /* the count is per evaluation: many short ones never add up */
  for (int i = 0; i < 200; i++)
    CHECK_EQ_STR(eval_in(env, ex("(function() local n = 0 for i = 1, 1000 do n = n + i end return n end)()"),
                         BR_PARAM_INT, &err),
                 "500500");
  br_script_env_free(env);
}

TEST(limit_memory) {
  br_script_env *env = small_env();
  br_error err;
  CHECK(!eval_in(env, ex("string.rep('x', 100 * 1024 * 1024)"), BR_PARAM_ANY, &err));
  CHECK_EQ_INT(err.code, BR_ESCRIPT);
  CHECK_CONTAINS(err.msg, "memory limit exceeded (8 MiB)");
  CHECK_EQ_STR(eval_in(env, js("${attr.wedge}/${pad(attr.frame, 4)}"), BR_PARAM_STRING, &err),
               "\"w2/0007\"");
  CHECK(!eval_in(env, ex("(function() local t = {} for i = 1, 1e8 do t[i] = {i} end end)()"),
                 BR_PARAM_ANY, &err));
  CHECK(strstr(err.msg, "memory limit exceeded") || strstr(err.msg, "instruction limit exceeded"));
  CHECK(br_script_env_memory(env) < (4u << 20)); /* the garbage was collected */
  CHECK(!eval_in(env,
                 ex("(function() local s = 'x' while true do s = s .. s end end)()"),
                 BR_PARAM_ANY, &err));
  CHECK_CONTAINS(err.msg, "memory limit exceeded");
  CHECK_EQ_STR(eval_in(env, ex("#string.rep('ab', 1000)"), BR_PARAM_INT, &err), "2000");
  br_script_env_free(env);
}

TEST(limit_memory_in_conversions_and_setup) {
  /* a huge attribute does not fit in a small state: an error, not a crash */
  br_script_limits lim = {.memory = 1 << 20};
  br_error err;
  br_script_env *env = br_script_env_new(&lim, &err);
  CHECK(env != NULL);
  json_t *big = json_array();
  for (int i = 0; i < 50000; i++) json_array_append_new(big, json_sprintf("/cache/frame.%06d.bgeo", i));
  json_t *attrs = json_pack("{s:o,s:i}", "files", big, "frame", 3);
  json_t *v = parse(ex("#attr.files"));
  br_script_expr *e;
  CHECK_EQ_INT(br_script_expr_compile(env, v, BR_PARAM_INT, &e, &err), BR_OK);
  br_script_task t = {.id = 1, .attrs = attrs};
  json_t *out = NULL;
  CHECK_EQ_INT(br_script_expr_eval(env, e, &t, &out, &err), BR_ESCRIPT);
  CHECK_CONTAINS(err.msg, "memory limit exceeded (1 MiB)");
  json_decref(v);
  v = parse(ex("attr.frame"));
  CHECK_EQ_INT(br_script_expr_compile(env, v, BR_PARAM_INT, &e, &err), BR_OK);
  CHECK_EQ_INT(br_script_expr_eval(env, e, &t, &out, &err), BR_OK);
  CHECK_EQ_INT(json_integer_value(out), 3);
  json_decref(out);
  json_decref(v);
  /* compiling something too big for the state */
  char *src = malloc(2 << 20);
  size_t n = 0;
  n += (size_t)sprintf(src + n, "return {");
  while (n < (2u << 20) - 64) n += (size_t)sprintf(src + n, "'%06zu',", n);
  sprintf(src + n, "}");
  br_script_chunk *c;
  CHECK_EQ_INT(br_script_compile(env, src, NULL, &c, &err), BR_ESCRIPT);
  CHECK_CONTAINS(err.msg, "memory limit exceeded");
  free(src);
  br_script_env_free(env);
  json_decref(attrs);
  /* a state too small to set up */
  lim.memory = 512; /* not even the state */
  CHECK(br_script_env_new(&lim, &err) == NULL);
  CHECK_EQ_INT(err.code, BR_ENOMEM);
  CHECK_CONTAINS(err.msg, "cannot create a Lua state");
  lim.memory = 8192; /* the state, not the libraries */
  CHECK(br_script_env_new(&lim, &err) == NULL);
  CHECK_EQ_INT(err.code, BR_ESCRIPT);
  CHECK_CONTAINS(err.msg, "cannot set up the Lua sandbox");
}

/* ---- the script node ---- */

/* Records every delivered action as JSON. */
typedef struct {
  json_t *log;
  int fail_at; /* make the n-th callback fail (0: never) */
  int calls;
} rec;

static int rec_add(rec *r, json_t *entry, br_error *err) {
  json_array_append_new(r->log, entry);
  if (++r->calls == r->fail_at) return br_error_set(err, BR_ESTATE, "refused by the engine");
  return 0;
}
static int r_set(void *ud, const char *k, json_t *v, br_error *err) {
  return rec_add(ud, json_pack("[s,s,o]", "set", k, v), err);
}
static int r_del(void *ud, const char *k, br_error *err) {
  return rec_add(ud, json_pack("[s,s]", "delete", k), err);
}
static int r_spawn(void *ud, const char *name, json_t *a, br_error *err) {
  return rec_add(ud, json_pack("[s,s?,o]", "spawn", name, a), err);
}
static int r_split(void *ud, size_t n, json_t **a, br_error *err) {
  json_t *l = json_array();
  for (size_t i = 0; i < n; i++) json_array_append_new(l, a[i] ? a[i] : json_null());
  return rec_add(ud, json_pack("[s,o]", "split", l), err);
}
static int r_route(void *ud, int port, br_error *err) {
  return rec_add(ud, json_pack("[s,i]", "route", port), err);
}
static int r_wait(void *ud, int64_t key, br_error *err) {
  return rec_add(ud, json_pack("[s,I]", "wait", (json_int_t)key), err);
}
static void r_fail(void *ud, const char *msg) {
  rec_add(ud, json_pack("[s,s]", "fail", msg), NULL);
}
static int r_output(void *ud, const char *name) {
  if (strcmp(name, "out") == 0) return 0;
  if (strcmp(name, "retry") == 0) return 1;
  return -1;
}

static const br_script_ops rec_ops = {NULL, r_set, r_del, r_spawn, r_split,
                                      r_route, r_wait, r_fail, r_output};

/* Runs src for a task with default_attrs; returns the log as JSON text
 * (static), or NULL with err filled. */
static char log_buf[8192];
static const char *run_in(br_script_env *env, const char *src, int fail_at, br_error *err) {
  br_script_chunk *c;
  br_error_clear(err);
  int rc = br_script_compile(env, src, "script", &c, err);
  if (rc < 0) return NULL;
  json_t *attrs = parse(default_attrs);
  br_script_task t = {.id = 42, .name = "t", .attrs = attrs};
  rec r = {.log = json_array(), .fail_at = fail_at};
  br_script_ops ops = rec_ops;
  ops.ud = &r;
  rc = br_script_run(env, c, &t, &ops, err);
  char *s = json_dumps(r.log, JSON_COMPACT | JSON_SORT_KEYS);
  snprintf(log_buf, sizeof log_buf, "%s", s);
  free(s);
  json_decref(r.log);
  json_decref(attrs);
  return rc == BR_OK ? log_buf : NULL;
}

static const char *run1(const char *src, br_error *err) {
  br_script_env *env = env_new();
  const char *r = run_in(env, src, 0, err);
  br_script_env_free(env);
  return r;
}

#define CHECK_RUN(src, expect)                                                 \
  do {                                                                         \
    br_error e_;                                                               \
    const char *r_ = run1(src, &e_);                                           \
    if (!r_) br_test_fail(__FILE__, __LINE__, "script failed: %s", e_.msg);   \
    CHECK_EQ_STR(r_, expect);                                                  \
  } while (0)

#define CHECK_RUN_ERR(src, needle)                                             \
  do {                                                                         \
    br_error e_;                                                               \
    const char *r_ = run1(src, &e_);                                           \
    if (r_) br_test_fail(__FILE__, __LINE__, "expected an error, got %s", r_); \
    CHECK_CONTAINS(e_.msg, needle);                                            \
  } while (0)

TEST(script_set_and_delete) {
  CHECK_RUN("task.attr.out = '/o/' .. pad(task.attr.frame, 4) .. '.exr'\n"
            "task:set('n', task.attr.frame * 2)\n"
            "attr.flag = true\n"
            "task:delete('wedge')\n"
            "task.attr.scale = nil\n",
            "[[\"set\",\"out\",\"/o/0007.exr\"],[\"set\",\"n\",14],[\"set\",\"flag\",true],"
            "[\"delete\",\"wedge\"],[\"delete\",\"scale\"]]");
  /* reads see the script's own writes */
  CHECK_RUN("task.attr.frame = 100\n"
            "task:delete('name')\n"
            "task:set('copy', {f = task.attr.frame, n = task.attr.name, g = task:get('frame')})\n",
            "[[\"set\",\"frame\",100],[\"delete\",\"name\"],"
            "[\"set\",\"copy\",{\"f\":100,\"g\":100}]]");
  /* nested values, integers and floats, empty list and object kept */
  CHECK_RUN("task:set('v', {1, 2.5, {a = {}}, task.attr.eobj, task.attr.elist})",
            "[[\"set\",\"v\",[1,2.5,{\"a\":[]},{},[]]]]");
  /* pairs sees the view */
  CHECK_RUN("task.attr.zz = 1\ntask:delete('frame')\nlocal n = 0\n"
            "for k, v in pairs(task.attr) do n = n + 1 end\ntask:set('n', n)",
            "[[\"set\",\"zz\",1],[\"delete\",\"frame\"],[\"set\",\"n\",11]]");
}

TEST(script_set_rejects_functions_and_userdata) {
  CHECK_RUN_ERR("task:set('f', function() end)",
                "script:1: cannot set attribute 'f': cannot convert a function value to JSON");
  CHECK_RUN_ERR("task.attr.u = task", "cannot convert a userdata value");
  CHECK_RUN_ERR("task:set('t', {1, {f = print or type}})", "cannot convert a function value");
  CHECK_RUN_ERR("task:set(5, 1)", "attribute names must be strings");
  CHECK_RUN_ERR("task.attr.s = 'a\\0b'",
                "cannot set attribute 's': a string holds \\0 (a NUL character)");
}

TEST(script_spawn) {
  CHECK_RUN("for i = 1, 3 do spawn({frame = i}) end\n"
            "task:spawn({}, 'named')\n"
            "spawn()",
            "[[\"spawn\",null,{\"frame\":1}],[\"spawn\",null,{\"frame\":2}],"
            "[\"spawn\",null,{\"frame\":3}],[\"spawn\",\"named\",{}],[\"spawn\",null,{}]]");
  CHECK_RUN_ERR("spawn({1, 2})", "spawn: attributes must be a table with string keys");
  CHECK_RUN_ERR("spawn('x')", "spawn: expected a table of attributes, got string");
}

TEST(script_split) {
  CHECK_RUN("local els = {}\n"
            "for i, w in ipairs({'a', 'b', 'c'}) do els[i] = {wedge = w, index = i - 1} end\n"
            "split(els)",
            "[[\"split\",[{\"index\":0,\"wedge\":\"a\"},{\"index\":1,\"wedge\":\"b\"},"
            "{\"index\":2,\"wedge\":\"c\"}]]]");
  CHECK_RUN("task:split(3)", "[[\"split\",[null,null,null]]]");
  CHECK_RUN("split({{}, {x = 1}})", "[[\"split\",[{},{\"x\":1}]]]");
  CHECK_RUN_ERR("split(0)", "split: the count must be 1..");
  CHECK_RUN_ERR("split({{x = 1}, 5})", "split: element 2: expected a table of attributes");
  CHECK_RUN_ERR("split('x')", "split: expected a list of attribute tables or a count");
}

TEST(script_route) {
  CHECK_RUN("route('retry')", "[[\"route\",1]]");
  CHECK_RUN("route(1)", "[[\"route\",0]]");
  CHECK_RUN("task:route(2)", "[[\"route\",1]]");
  CHECK_RUN("if task.attr.frame > 5 then route('retry') else route('out') end",
            "[[\"route\",1]]");
  CHECK_RUN("route('out')\nroute('retry')", "[[\"route\",1]]"); /* the last wins */
  CHECK_RUN_ERR("route('nope')", "script:1: route: no output named 'nope'");
  CHECK_RUN_ERR("\nroute(0)", "script:2: route: outputs are numbered from 1");
  /* route is delivered after the other actions */
  CHECK_RUN("route('retry')\ntask.attr.x = 1", "[[\"set\",\"x\",1],[\"route\",1]]");
}

TEST(script_wait) {
  CHECK_RUN("wait(77)", "[[\"wait\",77]]");
  CHECK_RUN("task:wait(task.id)", "[[\"wait\",42]]");
  br_error err;
  const char *a = run1("wait('cache-ready')", &err);
  CHECK(a != NULL);
  char first[256];
  snprintf(first, sizeof first, "%s", a);
  CHECK_EQ_STR(run1("wait('cache-ready')", &err), first); /* stable hash */
  CHECK(strcmp(run1("wait('other')", &err), first) != 0);
  CHECK_RUN_ERR("wait({})", "wait: expected an integer or string key");
}

TEST(script_fail) {
  CHECK_RUN("task.attr.x = 1\nspawn({})\nfail('frame ' .. task.attr.frame .. ' is bad')\n"
            "task.attr.y = 2",
            "[[\"fail\",\"frame 7 is bad\"]]");
  /* pcall cannot undo a fail */
  CHECK_RUN("pcall(fail, 'no way')\nroute(1)", "[[\"fail\",\"no way\"]]");
  /* without ops->fail, fail is returned as the error */
  br_script_env *env = env_new();
  br_script_chunk *c;
  br_error err;
  CHECK_EQ_INT(br_script_compile(env, "fail('bad input')", NULL, &c, &err), BR_OK);
  br_script_ops ops = {0};
  CHECK_EQ_INT(br_script_run(env, c, NULL, &ops, &err), BR_ESCRIPT);
  CHECK_EQ_STR(err.msg, "bad input");
  br_script_env_free(env);
}

TEST(script_runtime_error_is_transactional) {
  br_error err;
  CHECK(!run1("task.attr.x = 1\nspawn({})\nsplit(2)\nroute(1)\nlocal y = nil + 1", &err));
  CHECK_EQ_INT(err.code, BR_ESCRIPT);
  CHECK_CONTAINS(err.msg, "script:5: attempt to perform arithmetic on a nil value");
  CHECK_EQ_STR(log_buf, "[]");
}

TEST(script_callback_error_stops_delivery) {
  br_script_env *env = env_new();
  br_error err;
  CHECK(!run_in(env, "task.attr.a = 1\ntask.attr.b = 2\ntask.attr.c = 3", 2, &err));
  CHECK_EQ_INT(err.code, BR_ESTATE);
  CHECK_EQ_STR(err.msg, "refused by the engine");
  CHECK_EQ_STR(log_buf, "[[\"set\",\"a\",1],[\"set\",\"b\",2]]");
  br_script_env_free(env);
}

TEST(script_missing_ops_are_errors) {
  br_script_env *env = env_new();
  br_script_chunk *c;
  br_error err;
  br_script_ops ops = {0};
  CHECK_EQ_INT(br_script_compile(env, "spawn({})", NULL, &c, &err), BR_OK);
  CHECK_EQ_INT(br_script_run(env, c, NULL, &ops, &err), BR_ESCRIPT);
  CHECK_CONTAINS(err.msg, "spawn() is not supported here");
  ops.route = r_route;
  CHECK_EQ_INT(br_script_compile(env, "route('out')", NULL, &c, &err), BR_OK);
  CHECK_EQ_INT(br_script_run(env, c, NULL, &ops, &err), BR_ESCRIPT);
  CHECK_CONTAINS(err.msg, "outputs can only be chosen by number here");
  br_script_env_free(env);
  /* and actions are not available to expressions */
  CHECK_EVAL_ERR(ex("spawn({})"), BR_PARAM_ANY, "spawn() is only available in a script node");
  CHECK_EVAL_ERR(ex("task:route(1)"), BR_PARAM_ANY, "route() is only available in a script node");
}

TEST(script_globals_do_not_survive_tasks) {
  br_script_env *env = env_new();
  br_error err;
  const char *src = "task:set('seen', seen == nil)\nseen = true";
  CHECK_EQ_STR(run_in(env, src, 0, &err), "[[\"set\",\"seen\",true]]");
  CHECK_EQ_STR(run_in(env, src, 0, &err), "[[\"set\",\"seen\",true]]");
  br_script_env_free(env);
}

TEST(script_limits_leave_state_usable) {
  br_script_env *env = small_env();
  br_error err;
  CHECK(!run_in(env, "task.attr.x = 1\nwhile true do end", 0, &err));
  CHECK_CONTAINS(err.msg, "script:2: instruction limit exceeded");
  CHECK_EQ_STR(log_buf, "[]");
  CHECK(!run_in(env, "local t = {}\nfor i = 1, 1e7 do t[i] = string.rep('x', 100) .. i end", 0, &err));
  CHECK_CONTAINS(err.msg, "limit exceeded");
  CHECK_EQ_STR(run_in(env, "task.attr.ok = true", 0, &err), "[[\"set\",\"ok\",true]]");
  br_script_env_free(env);
}

TEST(script_many_tasks_one_state) {
  br_script_env *env = env_new();
  br_script_chunk *c;
  br_error err;
  CHECK_EQ_INT(br_script_compile(env, "task.attr.out = fmt('/r/%s.%04d.exr', task.attr.wedge, task.attr.frame)\n"
                                      "if task.attr.frame % 2 == 0 then route(1) else route(2) end",
                                 NULL, &c, &err),
               BR_OK);
  size_t mem0 = 0;
  for (int i = 0; i < 5000; i++) {
    json_t *attrs = json_pack("{s:i,s:s}", "frame", i, "wedge", "a");
    br_script_task t = {.id = i, .attrs = attrs};
    rec r = {.log = json_array()};
    br_script_ops ops = rec_ops;
    ops.ud = &r;
    CHECK_EQ_INT(br_script_run(env, c, &t, &ops, &err), BR_OK);
    CHECK_EQ_INT(json_integer_value(json_array_get(json_array_get(r.log, 1), 1)), i % 2 ? 1 : 0);
    json_decref(r.log);
    json_decref(attrs);
    if (i == 100) mem0 = br_script_env_memory(env);
  }
  CHECK(br_script_env_memory(env) < mem0 + (1u << 20)); /* no growth per task */
  br_script_env_free(env);
}
