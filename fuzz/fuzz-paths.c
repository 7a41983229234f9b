/* Path checks for what a manifest names: "PATH\0TARGET". A path taken is
 * relative, has no '.', '..' or empty component and no control character;
 * a link target taken never leads above the tree, walked name by name. */
#include "fuzz.h"
#include "xfer/xfer_int.h"

#include <string.h>

static void check_path(const char *p) {
  br_error err;
  br_error_clear(&err);
  if (br_xfer_path_check(p, &err) != BR_OK) {
    FUZZ_CHECK(err.msg[0] != 0);
    return;
  }
  FUZZ_CHECK(p[0] != 0 && p[0] != '/');
  for (const char *c = p;;) {
    const char *slash = strchr(c, '/');
    size_t len = slash ? (size_t)(slash - c) : strlen(c);
    FUZZ_CHECK(len > 0);
    FUZZ_CHECK(!(len == 1 && c[0] == '.') && !(len == 2 && c[0] == '.' && c[1] == '.'));
    for (size_t i = 0; i < len; i++) FUZZ_CHECK((unsigned char)c[i] >= 0x20 && c[i] != '\\');
    if (!slash) break;
    c = slash + 1;
  }
}

/* Where target leads from the link's folder, one name at a time: below
 * the root (-1) or not. */
static int escapes(const char *path, const char *target) {
  if (target[0] == '/') return 1;
  long depth = 0;
  for (const char *p = path; *p; p++) depth += *p == '/';
  for (const char *c = target;;) {
    const char *slash = strchr(c, '/');
    size_t len = slash ? (size_t)(slash - c) : strlen(c);
    if (len == 2 && c[0] == '.' && c[1] == '.') {
      if (--depth < 0) return 1;
    } else if (!(len == 0 || (len == 1 && c[0] == '.'))) {
      depth++;
    }
    if (!slash) break;
    c = slash + 1;
  }
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *s = malloc(size + 2);
  if (!s) return 0;
  memcpy(s, data, size);
  s[size] = s[size + 1] = 0;
  /* no NUL in the input: the target is the empty string at s[size + 1] */
  const char *path = s, *target = s + strlen(s) + 1;
  check_path(path);
  br_error err;
  br_error_clear(&err);
  int rc = br_xfer_link_check(path, target, &err);
  if (rc == BR_OK) FUZZ_CHECK(target[0] && !escapes(path, target));
  else FUZZ_CHECK(err.msg[0] != 0);
  rc = br_xfer_name_check(path, &err);
  if (rc == BR_OK) FUZZ_CHECK(path[0] != '.' && !strstr(path, "/.") && !strstr(path, "//"));
  br_xfer_ref ref;
  if (br_xfer_ref_parse(path, &ref, &err) == BR_OK) br_xfer_ref_free(&ref);
  free(s);
  return 0;
}
