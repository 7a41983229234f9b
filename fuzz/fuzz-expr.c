/* Parameter expressions ("${...}" interpolation and {"expr": ...}), as a
 * node compiles and evaluates them for a task, inside tight limits: any
 * text compiles or is refused with a message, and evaluates to a value or
 * an error, never a crash or a runaway. */
#include "fuzz.h"

#include <braid/script.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  /* first byte: a string parameter, or {"expr": text}; then the text */
  json_t *text = json_stringn((const char *)data + 1, size - 1);
  if (!text) return 0; /* not UTF-8: a graph file could not hold it */
  json_t *value = data[0] & 1 ? json_pack("{so}", "expr", text) : text;
  static const br_script_limits lim = {.memory = 8 << 20, .instructions = 20000};
  br_error err;
  br_error_clear(&err);
  br_script_env *env = br_script_env_new(&lim, &err);
  FUZZ_CHECK(env != NULL);
  br_script_expr *e = NULL;
  if (br_script_expr_compile(env, value, BR_PARAM_ANY, &e, &err) == BR_OK) {
    json_t *attrs = json_pack("{sisss[ii]}", "frame", 7, "wedge", "a", "res", 4, 2);
    br_script_task task = {.id = 3, .name = "t", .attrs = attrs};
    json_t *out = NULL;
    br_error_clear(&err);
    if (br_script_expr_eval(env, e, &task, &out, &err) == BR_OK) FUZZ_CHECK(out != NULL);
    else FUZZ_CHECK(err.msg[0] != 0);
    json_decref(out);
    json_decref(attrs);
  } else {
    FUZZ_CHECK(err.msg[0] != 0);
  }
  br_script_env_free(env);
  json_decref(value);
  return 0;
}
